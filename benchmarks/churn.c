// SPDX-License-Identifier: GPL-2.0
/* The soak's workload: allocate, name, map, pass (SCM_RIGHTS), read into and free dma-bufs as fast as
 * the kernel allows, in C because Python under the lab's emulated CPU manages a few dozen a second.
 *
 *   churn KIND SECONDS KEEP SOURCE_FILE
 *
 * KIND is heap (the system heap) or udmabuf (over a sealed memfd). Each cycle: allocate one page, name it
 * "churn-<pid>-<n>", mmap it, pread one page of SOURCE_FILE into the mapping, send the fd to itself over
 * a unix socket and close the received copy, unmap, close. After SECONDS, allocates KEEP buffers named
 * "keep-<pid>-<n>" and leaves them open, prints one line "cycles N failures F kept INODE,INODE,...",
 * and waits for stdin to close before exiting.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/dma-buf.h>
#include <linux/dma-heap.h>
#include <linux/udmabuf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static int heap_fd = -1, udmabuf_dev = -1;

static int alloc_heap(void)
{
	struct dma_heap_allocation_data data = {.len = PAGE, .fd_flags = O_RDWR | O_CLOEXEC};

	if (ioctl(heap_fd, DMA_HEAP_IOCTL_ALLOC, &data) < 0)
		return -1;
	return data.fd;
}

static int alloc_udmabuf(void)
{
	struct udmabuf_create create = {.flags = UDMABUF_FLAGS_CLOEXEC, .size = PAGE};
	int memfd = memfd_create("churn", MFD_ALLOW_SEALING | MFD_CLOEXEC), fd;

	if (memfd < 0)
		return -1;
	if (ftruncate(memfd, PAGE) < 0 || fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK) < 0) {
		close(memfd);
		return -1;
	}
	create.memfd = memfd;
	fd = ioctl(udmabuf_dev, UDMABUF_CREATE, &create);
	close(memfd); /* the udmabuf holds the memfd's pages */
	return fd;
}

static int pass_to_self(int sockets[2], int fd)
{
	char byte = 'x', control[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
			     .msg_controllen = sizeof(control)};
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
	int received;

	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
	if (sendmsg(sockets[0], &msg, 0) != 1)
		return -1;
	memset(control, 0, sizeof(control));
	msg.msg_controllen = sizeof(control);
	if (recvmsg(sockets[1], &msg, MSG_CMSG_CLOEXEC) != 1 || !(cmsg = CMSG_FIRSTHDR(&msg)))
		return -1;
	memcpy(&received, CMSG_DATA(cmsg), sizeof(int));
	return close(received);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	int udmabuf, keep, source, sockets[2];
	long cycles = 0, failures = 0;
	double deadline;
	char name[32];

	if (argc != 5) {
		fprintf(stderr, "usage: churn heap|udmabuf SECONDS KEEP SOURCE_FILE\n");
		return 2;
	}
	udmabuf = !strcmp(argv[1], "udmabuf");
	deadline = now() + atof(argv[2]);
	keep = atoi(argv[3]);
	source = open(argv[4], O_RDONLY | O_CLOEXEC);
	if (udmabuf)
		udmabuf_dev = open("/dev/udmabuf", O_RDWR | O_CLOEXEC);
	else
		heap_fd = open("/dev/dma_heap/system", O_RDONLY | O_CLOEXEC);
	if (source < 0 || (udmabuf ? udmabuf_dev : heap_fd) < 0 ||
	    socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sockets) < 0) {
		perror("churn: setup");
		return 1;
	}
	while (now() < deadline) {
		int fd = udmabuf ? alloc_udmabuf() : alloc_heap();
		void *map;

		if (fd < 0) {
			failures++;
			continue;
		}
		snprintf(name, sizeof(name), "churn-%d-%ld", getpid(), cycles);
		map = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (ioctl(fd, DMA_BUF_SET_NAME_B, name) < 0 || map == MAP_FAILED ||
		    pread(source, map, PAGE, 0) != PAGE || pass_to_self(sockets, fd) < 0)
			failures++;
		if (map != MAP_FAILED)
			munmap(map, PAGE);
		close(fd);
		cycles++;
	}
	printf("cycles %ld failures %ld kept ", cycles, failures);
	for (int i = 0; i < keep; i++) {
		int fd = udmabuf ? alloc_udmabuf() : alloc_heap();
		struct stat st;

		snprintf(name, sizeof(name), "keep-%d-%d", getpid(), i);
		if (fd < 0 || ioctl(fd, DMA_BUF_SET_NAME_B, name) < 0 || fstat(fd, &st) < 0) {
			printf("%sFAILED", i ? "," : "");
			continue;
		}
		printf("%s%lu", i ? "," : "", (unsigned long)st.st_ino);
	}
	printf("\n");
	fflush(stdout);
	while (getchar() != EOF)
		;
	return 0;
}
