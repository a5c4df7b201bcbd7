/* The price of one dma-buf's life: allocate one page from the system heap, name it, close it; timed by the
 * calling thread's own CPU clock (the kernel's work in the ioctls and in the close's final release is this
 * thread's). Several rounds; the minimum is the figure. benchmarks/churn_cost.py runs it with the lifecycle
 * probe attached and not; under `dmabuf-top vm --icount` the figures are guest instructions per buffer.
 *
 *   cc -O2 -o churn_cost benchmarks/churn_cost.c && ./churn_cost [rounds [buffers]]
 */
#include <fcntl.h>
#include <linux/dma-buf.h>
#include <linux/dma-heap.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cpu_clock.h"

static void churn_loop(long buffers, void *heap_fd)
{
	int heap = *(int *)heap_fd;

	for (long i = 0; i < buffers; i++) {
		struct dma_heap_allocation_data data = {.len = 4096, .fd_flags = O_RDWR | O_CLOEXEC};

		if (ioctl(heap, DMA_HEAP_IOCTL_ALLOC, &data) < 0 || ioctl(data.fd, DMA_BUF_SET_NAME, "churn") < 0) {
			perror("churn_cost");
			exit(1);
		}
		close(data.fd);
	}
}

int main(int argc, char **argv)
{
	long rounds = argc > 1 ? atol(argv[1]) : 5;
	long buffers = argc > 2 ? atol(argv[2]) : 2000;
	int heap = open("/dev/dma_heap/system", O_RDWR | O_CLOEXEC);

	if (rounds < 1 || buffers < 1 || heap < 0) {
		fprintf(stderr, "usage: %s [rounds >= 1 [buffers >= 1]] (needs /dev/dma_heap/system)\n", argv[0]);
		return 2;
	}
	print_min_of_rounds(rounds, buffers, "buffer", 0, churn_loop, &heap);
	return 0;
}
