/*
 * syscall_storm: a syscall-bound process that maps nothing, the neighbour a
 * tracer attached to another process should not slow down.  Each operation
 * reads one byte from /dev/zero and writes it to /dev/null, as
 * `dd if=/dev/zero of=/dev/null bs=1` does: two syscalls, neither of them
 * one a memory tracer records.
 *
 *   syscall_storm [--ops 3000000] [--warmup 100000] [--wait]
 *
 * Last line: {"benchmark":"syscall_storm","seconds":S,"operations":CALLS}
 * where operations counts the read and write calls of the measured part.
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

	double start = bench_now();
	run_ops(zero, null, ops);
	double seconds = bench_now() - start;

	printf("{\"benchmark\":\"syscall_storm\",\"seconds\":%.9f,\"operations\":%lu}\n", seconds,
	       2 * ops);
	return 0;
}
