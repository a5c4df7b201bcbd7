/*
 * The creator of tests/vm/test_leaks.py's live buffers: system-heap dma-bufs kept alive the ways leak reports
 * describe, made while `dmabuf-top leaks` watches. Built in the guest with frame pointers, so the allocation
 * stack's user frames name the function that made each buffer (make_mapped_leak, make_child_leak).
 *
 *   leak_creator     a 1 MiB buffer "leak2-mapped" mapped, its fd closed (the mapping keeps it alive);
 *                    a child makes a 2 MiB buffer "leak2-orphan", passes its fd over a unix socket and exits.
 *                    Prints "mapped INODE", "orphan INODE", "parent PID", "child PID", then "ready", and
 *                    holds both until its stdin closes.
 */
#include <fcntl.h>
#include <linux/dma-buf.h>
#include <linux/dma-heap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1UL << 20)

static void die(const char *what)
{
	perror(what);
	exit(2);
}

__attribute__((noinline)) static int heap_alloc(size_t size, const char *name)
{
	struct dma_heap_allocation_data data = {.len = size, .fd_flags = O_RDWR | O_CLOEXEC};
	int heap = open("/dev/dma_heap/system", O_RDWR | O_CLOEXEC);

	if (heap < 0 || ioctl(heap, DMA_HEAP_IOCTL_ALLOC, &data) < 0)
		die("allocating from the system heap");
	close(heap);
	if (ioctl(data.fd, DMA_BUF_SET_NAME, name) < 0)
		die("DMA_BUF_SET_NAME");
	return data.fd;
}

static unsigned long inode_of(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		die("fstat");
	return st.st_ino;
}

/* The mapping outlives the fd: only the mapping holds the buffer. */
__attribute__((noinline)) unsigned long make_mapped_leak(void)
{
	int buffer = heap_alloc(MIB, "leak2-mapped");
	unsigned long inode = inode_of(buffer);

	if (mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_SHARED, buffer, 0) == MAP_FAILED)
		die("mmap");
	close(buffer);
	return inode;
}

__attribute__((noinline)) int make_child_leak(void)
{
	return heap_alloc(2 * MIB, "leak2-orphan");
}

static void send_fd(int sock, int fd)
{
	char byte = 'x', control[CMSG_SPACE(sizeof(int))] = {0};
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
			     .msg_controllen = sizeof(control)};
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);

	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
	if (sendmsg(sock, &msg, 0) != 1)
		die("sendmsg");
}

static int recv_fd(int sock)
{
	char byte, control[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
			     .msg_controllen = sizeof(control)};
	int fd;

	if (recvmsg(sock, &msg, 0) != 1 || !CMSG_FIRSTHDR(&msg))
		die("recvmsg");
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
	return fd;
}

int main(void)
{
	int ends[2], orphan;
	char byte;
	pid_t child;
	unsigned long mapped = make_mapped_leak();

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, ends) < 0)
		die("socketpair");
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		send_fd(ends[1], make_child_leak());
		_exit(0);
	}
	orphan = recv_fd(ends[0]);
	if (waitpid(child, NULL, 0) != child)
		die("waitpid");
	printf("mapped %lu\norphan %lu\nparent %d\nchild %d\nready\n", mapped, inode_of(orphan), getpid(), child);
	fflush(stdout);
	while (read(0, &byte, 1) > 0)
		;
	return 0;
}
