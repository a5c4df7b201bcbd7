/*
 * The fast exit's sibling-thread case (tests/host/test_fast_exit_host.py): thread B, pinned to CPU 1, spins
 * reading an ordinary file (its CPU's flag says "no interest") and watching a shared slot; thread A, pinned to
 * CPU 0, creates a memfd and puts its number in the slot; B writes into it with write() at once, without a
 * context switch in between (it never blocks). Started before the tracer; "go" on stdin starts the run.
 *
 *     fast_exit_threads FILE WRITES  ->  prints "INODE READS_BEFORE" (B's reads before it saw the fd)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

static atomic_int slot = -1;
static atomic_int go;
static int plain, writes;
static long reads_before;

static void pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set))
		exit(3);
}

static void *spinner(void *unused)
{
	char buffer[4096];
	int fd;

	pin(1);
	while (!atomic_load(&go))
		usleep(1000); /* sleeps: switched in again once the tracer runs, so its CPU's flag is computed */
	while ((fd = atomic_load_explicit(&slot, memory_order_acquire)) < 0) {
		if (pread(plain, buffer, sizeof(buffer), 0) != sizeof(buffer))
			exit(4);
		reads_before++;
	}
	memset(buffer, 0x5a, sizeof(buffer));
	for (int i = 0; i < writes; i++)
		if (write(fd, buffer, sizeof(buffer)) != sizeof(buffer))
			exit(5);
	return NULL;
}

int main(int argc, char **argv)
{
	struct timespec spin = {0, 50 * 1000 * 1000};
	pthread_t thread;
	char line[16];
	struct stat st;
	int memfd;

	if (argc != 3)
		return 2;
	plain = open(argv[1], O_RDONLY);
	writes = atoi(argv[2]);
	pin(0);
	if (plain < 0 || pthread_create(&thread, NULL, spinner, NULL))
		return 2;
	if (!fgets(line, sizeof(line), stdin))
		return 2;
	atomic_store(&go, 1);
	nanosleep(&spin, NULL); /* B spins on CPU 1 meanwhile */
	memfd = memfd_create("fast-exit-threads", 0);
	if (memfd < 0 || fstat(memfd, &st))
		return 6;
	atomic_store_explicit(&slot, memfd, memory_order_release);
	pthread_join(thread, NULL);
	printf("%lu %ld\n", (unsigned long)st.st_ino, reads_before);
	return 0;
}
