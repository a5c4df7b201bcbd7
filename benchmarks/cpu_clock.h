/* What the benchmarks' C loops share: a loop timed by the calling thread's own CPU clock, several rounds, the
 * minimum the figure (the first rounds after a boot can be disturbed by other guest work). Under the lab's
 * instruction-counting clock (`dmabuf-top vm --icount`) one guest nanosecond is one guest instruction, so the
 * figures are instructions per call and repeat across boots.
 */
#include <stdio.h>
#include <time.h>

static double thread_cpu_ns(void)
{
	struct timespec now;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
	return now.tv_sec * 1e9 + now.tv_nsec;
}

/* Runs `loop(calls, context)` `rounds` times and prints "min X ns per UNIT", X the least of the rounds' CPU
 * time per call; with `each_round`, "round N: X ns per UNIT" after each round as well. */
static void print_min_of_rounds(long rounds, long calls, const char *unit, int each_round,
				void (*loop)(long calls, void *context), void *context)
{
	double best = 0;

	for (long round = 0; round < rounds; round++) {
		double started = thread_cpu_ns();

		loop(calls, context);
		double per_call = (thread_cpu_ns() - started) / calls;

		if (each_round)
			printf("round %ld: %.1f ns per %s\n", round + 1, per_call, unit);
		if (round == 0 || per_call < best)
			best = per_call;
	}
	printf("min %.1f ns per %s\n", best, unit);
}
