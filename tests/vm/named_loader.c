/*
 * The loader of tests/vm/test_record_buffers.py: dma-bufs from the system heap, named, read into and closed,
 * some within milliseconds. Built in the guest with frame pointers, so the allocation stack's user frames
 * name load_named_buffer (heap_alloc, whose frame the libc ioctl wrapper does not set up, may be skipped).
 *
 *   named_loader short FILE    fill a 16 MiB buffer "weights-16m" from FILE, then make a 64 KiB buffer
 *                              "scratch-64k", read 4 KiB into it and close it, timing its life from the allocation ("ms N")
 *   named_loader rename FILE   a 1 MiB buffer named "before", read into, renamed "after", closed
 *   named_loader child FILE    a child makes a 1 MiB buffer "from-child", reads into it and exits at once
 *   named_loader udmabuf FILE  after 2 s, a 64 KiB udmabuf over a memfd, 4 KiB of FILE read into the memfd's
 *                              mapping, closed within milliseconds ("inode N": the udmabuf's; "ms N": its life)
 *
 * Prints "pid PID" for each process that made a buffer, and "ms N" for the short buffer's lifetime.
 */
#define _GNU_SOURCE /* memfd_create, F_ADD_SEALS */
#include <fcntl.h>
#include <linux/dma-buf.h>
#include <linux/dma-heap.h>
#include <linux/udmabuf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB (1UL << 20)
#define SCRATCH_SIZE (64UL << 10)
#define SCRATCH_READ (4UL << 10)

static void die(const char *what)
{
	perror(what);
	exit(2);
}

__attribute__((noinline)) static int heap_alloc(size_t size)
{
	struct dma_heap_allocation_data data = {.len = size, .fd_flags = O_RDWR | O_CLOEXEC};
	int heap = open("/dev/dma_heap/system", O_RDWR | O_CLOEXEC);

	if (heap < 0 || ioctl(heap, DMA_HEAP_IOCTL_ALLOC, &data) < 0)
		die("allocating from the system heap");
	close(heap);
	return data.fd;
}

__attribute__((noinline)) static void set_name(int buffer, const char *name)
{
	if (ioctl(buffer, DMA_BUF_SET_NAME, name) < 0)
		die("DMA_BUF_SET_NAME");
}

/* Read count bytes of file (from its start) into the mapping of the buffer's (or memfd's) first size bytes. */
__attribute__((noinline)) static void read_into(int buffer, const char *file, size_t size, size_t count)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, buffer, 0);
	size_t done = 0;

	if (fd < 0 || map == MAP_FAILED)
		die("mapping the buffer");
	while (done < count) {
		ssize_t got = pread(fd, map + done, count - done, done);

		if (got <= 0)
			die("reading the file");
		done += got;
	}
	munmap(map, size);
	close(fd);
}

static double now_ms(void);
/* When the last buffer came to exist (its allocation returned): its lifetime counts from here, as the kernel's
 * export-to-release does, without the heap's open and page allocation before it. */
static double allocated_at_ms;

/* The function the allocation stacks must name. */
__attribute__((noinline)) int load_named_buffer(const char *name, const char *file, size_t size, size_t count)
{
	int buffer = heap_alloc(size);

	allocated_at_ms = now_ms();

	set_name(buffer, name);
	read_into(buffer, file, size, count);
	return buffer;
}

/*
 * A udmabuf over a memfd, file read into the memfd's mapping (I/O that names the memfd, not the udmabuf), closed
 * at once: the iterator never sees it, so only the lifecycle probe's backing record ties the memfd to the udmabuf.
 */
static void short_udmabuf(const char *file)
{
	int memfd = memfd_create("udmabuf-backing", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	int device = open("/dev/udmabuf", O_RDWR | O_CLOEXEC);
	struct udmabuf_create create = {.flags = UDMABUF_FLAGS_CLOEXEC, .offset = 0, .size = SCRATCH_SIZE};
	struct stat st;
	int buffer;

	sleep(2); /* the recorder's first iterator pass, as the command starts, is over: the next is minutes away */
	if (memfd < 0 || device < 0 || ftruncate(memfd, SCRATCH_SIZE) < 0 ||
	    fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK) < 0) /* udmabuf takes only a memfd that cannot shrink */
		die("a memfd for the udmabuf");
	create.memfd = memfd;
	buffer = ioctl(device, UDMABUF_CREATE, &create);
	if (buffer < 0 || fstat(buffer, &st) < 0)
		die("UDMABUF_CREATE");
	allocated_at_ms = now_ms();
	close(device);
	read_into(memfd, file, SCRATCH_SIZE, SCRATCH_READ);
	close(buffer);
	printf("ms %.3f\ninode %lu\n", now_ms() - allocated_at_ms, (unsigned long)st.st_ino);
	close(memfd);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	printf("pid %d\n", getpid());
	if (!strcmp(argv[1], "short")) {
		int weights = load_named_buffer("weights-16m", argv[2], 16 * MIB, 16 * MIB);
		/* Small and read little (its pages are in the page cache now), so it lives under 10 ms in the lab. */
		int scratch = load_named_buffer("scratch-64k", argv[2], SCRATCH_SIZE, SCRATCH_READ);

		close(scratch);
		printf("ms %.3f\n", now_ms() - allocated_at_ms);
		close(weights);
	} else if (!strcmp(argv[1], "rename")) {
		int buffer = load_named_buffer("before", argv[2], MIB, MIB);

		set_name(buffer, "after");
		close(buffer);
	} else if (!strcmp(argv[1], "child")) {
		pid_t child;
		int status;

		fflush(stdout);
		child = fork();
		if (child == 0) {
			printf("pid %d\n", getpid());
			fflush(stdout);
			load_named_buffer("from-child", argv[2], MIB, MIB);
			_exit(0);
		}
		if (child < 0 || waitpid(child, &status, 0) != child || status != 0)
			return 1;
	} else if (!strcmp(argv[1], "udmabuf")) {
		short_udmabuf(argv[2]);
	} else {
		return 2;
	}
	return 0;
}
