/*
 * reservation: a process that reserves a huge range of address space the way
 * ASan, V8, the JVM and CUDA do (PROT_NONE with MAP_NORESERVE), makes part of
 * it writable and churns that part, so a test can check that memtrace's own
 * memory and its answers do not grow with the size of a process's mappings.
 *
 *   reservation [--reserve-gib 4096] [--use-mib 256] [--rounds 6] [--hold 3] [--wait]
 *
 * Reserves RESERVE-GIB and mprotects its first USE-MIB read-write; with
 * --wait prints "ready" and waits for a line on stdin. Then ROUNDS times
 * writes every page of that part and gives it back with MADV_DONTNEED, and
 * writes it once more. Then it prints
 *
 *   {"pid":P,"reserved":BYTES,"used":BYTES}
 *
 * and "holding", sleeps HOLD seconds, and exits 0.
 */
#include "bench.h"

int main(int argc, char **argv)
{
	unsigned long reserve_gib = 4096, use_mib = 256, rounds = 6, hold = 3;
	bool wait = false;
	const struct bench_option options[] = {
		{"--reserve-gib", &reserve_gib, NULL},
		{"--use-mib", &use_mib, NULL},
		{"--rounds", &rounds, NULL},
		{"--hold", &hold, NULL},
		{"--wait", NULL, &wait},
	};
	bench_parse(argc, argv, options, sizeof(options) / sizeof(options[0]));
	size_t reserved = (size_t)reserve_gib << 30, used = (size_t)use_mib << 20;
	if (used == 0 || used > reserved) {
		fprintf(stderr, "--use-mib must be positive and within the reservation\n");
		return 2;
	}

	char *p = mmap(NULL, reserved, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
		       0);
	if (p == MAP_FAILED)
		bench_fail("mmap");
	if (mprotect(p, used, PROT_READ | PROT_WRITE) != 0)
		bench_fail("mprotect");
	if (wait)
		bench_wait_for_go();
	for (unsigned long round = 0; round < rounds; round++) {
		bench_touch(p, used);
		if (madvise(p, used, MADV_DONTNEED) != 0)
			bench_fail("madvise");
	}
	bench_touch(p, used);

	printf("{\"pid\":%d,\"reserved\":%zu,\"used\":%zu}\n", (int)getpid(), reserved, used);
	puts("holding");
	fflush(stdout);
	sleep((unsigned)hold);
	return 0;
}
