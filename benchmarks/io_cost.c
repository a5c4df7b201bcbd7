/* The price of one call of an I/O workload, timed by the calling thread's own CPU clock.
 *
 * The sibling of syscall_cost.c for benchmarks/overhead.py --exact: each workload runs in its own
 * process, which sets up only what the workload needs (a process that reads into anonymous memory
 * maps no dma-buf and no memfd), then times ROUNDS rounds of CALLS calls and prints the minimum.
 * Under the lab's instruction-counting clock (`dmabuf-top vm --icount`) one guest nanosecond is one
 * guest instruction, so the figures are instructions per call and repeat across boots.
 *
 *   getppid          a syscall that moves no data
 *   pread-anon       4 KiB pread of a cached ordinary FILE into anonymous memory
 *   pread-memfd      4 KiB pread of FILE into a memfd mapping (MAP_SHARED)
 *   pread-dmabuf     4 KiB pread of FILE into a dma-buf mapping (the system heap)
 *   read1m-dmabuf    1 MiB pread of FILE into a dma-buf mapping
 *   dread1m-anon     1 MiB O_DIRECT pread of FILE into anonymous memory (the device writes there: block I/O)
 *   copy4k-file      4 KiB copy_file_range from FILE to FILE.copy (as copy1m-file)
 *   copy1m-file      1 MiB copy_file_range from FILE to FILE.copy (ordinary files: the CI host's paired workload;
 *                    FILE.copy is kept for the next run: the caller removes it)
 *
 *   cc -O2 -o io_cost benchmarks/io_cost.c && ./io_cost WORKLOAD ROUNDS CALLS [FILE]
 *
 * FILE must hold at least 1 MiB (4 MiB for read1m-dmabuf) and be cached: the first round is a warm-up
 * like any other, and only the minimum counts.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/dma-heap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cpu_clock.h"

#define SMALL 4096L
#define LARGE (1L << 20)
#define SMALL_SPAN (256 * SMALL) /* pread offsets cycle over the file's first MiB */
#define LARGE_SPAN (4 * LARGE)

struct workload {
	int fd; /* -1: getppid */
	int copy_to; /* >= 0: copy_file_range from fd to this fd, at the same offset */
	void *buffer;
	long size, span;
};

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void *map_fd(int fd, long size)
{
	void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (memory == MAP_FAILED)
		die("mmap");
	memset(memory, 1, size); /* fault every page in before timing */
	return memory;
}

static void *memfd_buffer(long size)
{
	int fd = memfd_create("io_cost", MFD_CLOEXEC);

	if (fd < 0)
		die("memfd_create");
	if (ftruncate(fd, size))
		die("ftruncate");
	return map_fd(fd, size);
}

static void *dmabuf_buffer(long size)
{
	struct dma_heap_allocation_data request = {.len = size, .fd_flags = O_RDWR | O_CLOEXEC};
	int heap = open("/dev/dma_heap/system", O_RDWR | O_CLOEXEC);

	if (heap < 0)
		die("open /dev/dma_heap/system");
	if (ioctl(heap, DMA_HEAP_IOCTL_ALLOC, &request))
		die("DMA_HEAP_IOCTL_ALLOC");
	close(heap);
	return map_fd(request.fd, size);
}

static void *anonymous_buffer(long size)
{
	void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (memory == MAP_FAILED)
		die("mmap anonymous");
	memset(memory, 1, size);
	return memory;
}

/*
 * FILE.copy, span bytes long, kept between runs (the caller removes it): every mode's run then overwrites the
 * same cached folios. A fresh file per run got its folios anew each time, in sizes that differ from run to run
 * (large folios), and the copies' cost moved by ~200 instructions between runs of one mode.
 */
static int copy_destination(const char *file, long span)
{
	char path[4096];
	struct stat st;
	int fd;

	if (snprintf(path, sizeof(path), "%s.copy", file) >= (int)sizeof(path))
		die("FILE's name is too long");
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		die(path);
	if (fstat(fd, &st))
		die("fstat FILE.copy");
	if (st.st_size < span && ftruncate(fd, span))
		die("ftruncate FILE.copy");
	return fd;
}

static void workload_loop(long calls, void *context)
{
	const struct workload *w = context;

	if (w->fd < 0) {
		for (long i = 0; i < calls; i++)
			getppid();
	} else if (w->copy_to >= 0) {
		for (long i = 0; i < calls; i++) {
			loff_t from = (i * w->size) % w->span, to = from;

			if (copy_file_range(w->fd, &from, w->copy_to, &to, w->size, 0) != w->size)
				die("copy_file_range (is FILE large enough?)");
		}
	} else {
		for (long i = 0; i < calls; i++)
			if (pread(w->fd, w->buffer, w->size, (i * w->size) % w->span) != w->size)
				die("pread (is FILE large enough?)");
	}
}

int main(int argc, char **argv)
{
	const char *workload = argc > 1 ? argv[1] : "";
	long rounds = argc > 3 ? atol(argv[2]) : 0;
	long calls = argc > 3 ? atol(argv[3]) : 0;
	long size = SMALL, span = SMALL_SPAN;
	void *buffer = NULL;
	int fd = -1, copy_to = -1;

	if (rounds < 1 || calls < 1) {
		fprintf(stderr, "usage: %s getppid|pread-anon|pread-memfd|pread-dmabuf|read1m-dmabuf|dread1m-anon|copy4k-file|copy1m-file ROUNDS CALLS [FILE]\n",
			argv[0]);
		return 2;
	}
	if (strcmp(workload, "getppid") != 0) {
		if (argc < 5)
			die("FILE is needed for a read workload");
		fd = open(argv[4], O_RDONLY | O_CLOEXEC | (strcmp(workload, "dread1m-anon") == 0 ? O_DIRECT : 0));
		if (fd < 0)
			die(argv[4]);
		if (strcmp(workload, "pread-anon") == 0) {
			buffer = anonymous_buffer(size);
		} else if (strcmp(workload, "pread-memfd") == 0) {
			buffer = memfd_buffer(size);
		} else if (strcmp(workload, "pread-dmabuf") == 0) {
			buffer = dmabuf_buffer(size);
		} else if (strcmp(workload, "dread1m-anon") == 0) {
			size = LARGE;
			span = LARGE_SPAN;
			buffer = anonymous_buffer(size); /* page-aligned, as O_DIRECT needs */
		} else if (strcmp(workload, "read1m-dmabuf") == 0) {
			size = LARGE;
			span = LARGE_SPAN;
			buffer = dmabuf_buffer(size);
		} else if (strcmp(workload, "copy4k-file") == 0) {
			copy_to = copy_destination(argv[4], span);
		} else if (strcmp(workload, "copy1m-file") == 0) {
			size = LARGE;
			span = LARGE_SPAN;
			copy_to = copy_destination(argv[4], span);
		} else {
			fprintf(stderr, "unknown workload %s\n", workload);
			return 2;
		}
	}
	struct workload timed = {.fd = fd, .copy_to = copy_to, .buffer = buffer, .size = size, .span = span};

	print_min_of_rounds(rounds, calls, "call", 1, workload_loop, &timed);
	return 0;
}
