/*
 * syscall_storm: a syscall-bound process that maps nothing, the neighbour a
 * tracer attached to another process should not slow down.  Each operation
 * reads one byte from /dev/zero and writes it to /dev/null, as
 * `dd if=/dev/zero of=/dev/null bs=1` does: two syscalls, neither of them
 * one a memory tracer records.
 *
 *   syscall_storm [--ops 3000000] [--warmup 100000] [--wait]
 *
 * Last line: {"benchmark":"syscall_storm","seconds":S,"operations":CALLS,"cpu_seconds":C}
 * where operations counts the read and write calls of the measured part and
 * C is the CPU time the process spent in it: what a tracer elsewhere costs
 * it (its programs run in this process's syscalls), without the time it
 * waited for a CPU that other programs had.
 */
#include <fcntl.h>

#include "bench.h"

static void run_ops(int zero, int null, unsigned long ops)
{
	char byte;
	for (unsigned long i = 0; i < ops; i++) {
		if (read(zero, &byte, 1) != 1)
			bench_fail("read");
		if (write(null, &byte, 1) != 1)
			bench_fail("write");
	}
}

/* This process's CPU time, user and system, in seconds. */
static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int open_device(const char *path, int flags)
{
	int fd = open(path, flags);
	if (fd < 0)
		bench_fail(path);
	return fd;
}

int main(int argc, char **argv)
{
	unsigned long ops = 3000000, warmup = 100000;
	bool wait = false;
	const struct bench_option options[] = {
		{"--ops", &ops, NULL},
		{"--warmup", &warmup, NULL},
		{"--wait", NULL, &wait},
	};
	bench_parse(argc, argv, options, sizeof(options) / sizeof(options[0]));

	int zero = open_device("/dev/zero", O_RDONLY);
	int null = open_device("/dev/null", O_WRONLY);
	run_ops(zero, null, warmup);
	if (wait)
		bench_wait_for_go();

	double start = bench_now(), cpu_start = cpu_now();
	run_ops(zero, null, ops);
	double seconds = bench_now() - start, cpu_seconds = cpu_now() - cpu_start;

	printf("{\"benchmark\":\"syscall_storm\",\"seconds\":%.9f,\"operations\":%lu,"
	       "\"cpu_seconds\":%.9f}\n",
	       seconds, 2 * ops, cpu_seconds);
	return 0;
}
