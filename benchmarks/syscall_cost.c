/* The price of one getppid() call, timed by the calling thread's own CPU clock.
 *
 * getppid moves no data and does next to nothing in the kernel, so its price is the syscall path's:
 * what any program attached to every syscall adds shows up here in full. Several rounds; the minimum
 * is the figure (the first rounds after a boot can be disturbed by other guest work).
 *
 * Under the lab's instruction-counting clock (`dmabuf-top vm --icount`) one guest nanosecond is one
 * guest instruction, so the figure is instructions per call and repeats across boots.
 *
 *   cc -O2 -o syscall_cost benchmarks/syscall_cost.c && ./syscall_cost [rounds [calls]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cpu_clock.h"

static void getppid_loop(long calls, void *unused)
{
	(void)unused;
	for (long i = 0; i < calls; i++)
		getppid();
}

int main(int argc, char **argv)
{
	long rounds = argc > 1 ? atol(argv[1]) : 7;
	long calls = argc > 2 ? atol(argv[2]) : 100000;

	if (rounds < 1 || calls < 1) {
		fprintf(stderr, "usage: %s [rounds >= 1 [calls >= 1]]\n", argv[0]);
		return 2;
	}
	print_min_of_rounds(rounds, calls, "getppid", 1, getppid_loop, NULL);
	return 0;
}
