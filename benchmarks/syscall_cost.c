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
#include <time.h>
#include <unistd.h>

static double thread_cpu_ns(void)
{
	struct timespec now;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
	return now.tv_sec * 1e9 + now.tv_nsec;
}

int main(int argc, char **argv)
{
	long rounds = argc > 1 ? atol(argv[1]) : 7;
	long calls = argc > 2 ? atol(argv[2]) : 100000;
	double best = 0;

	if (rounds < 1 || calls < 1) {
		fprintf(stderr, "usage: %s [rounds >= 1 [calls >= 1]]\n", argv[0]);
		return 2;
	}
	for (long round = 0; round < rounds; round++) {
		double started = thread_cpu_ns();

		for (long i = 0; i < calls; i++)
			getppid();
		double per_call = (thread_cpu_ns() - started) / calls;

		printf("round %ld: %.1f ns per getppid\n", round + 1, per_call);
		if (round == 0 || per_call < best)
			best = per_call;
	}
	printf("min %.1f ns per getppid\n", best);
	return 0;
}
