/*
 * mmap_churn: mmap/munmap throughput.  Each operation maps --kib KiB of
 * anonymous memory, writes its first page and unmaps it.
 *
 *   mmap_churn [--ops 200000] [--kib 64] [--warmup 10000] [--wait]
 *
 * Last line: {"benchmark":"mmap_churn","seconds":S,"operations":OPS,...}
 * where operations counts measured map-touch-unmap cycles.
 */
#include "bench.h"

static void run_op(size_t len)
{
	char *p = bench_map(len);
	((volatile char *)p)[0] = 1;
	bench_unmap(p, len);
}

int main(int argc, char **argv)
{
	unsigned long ops = 200000, kib = 64, warmup = 10000;
	bool wait = false;
	const struct bench_option options[] = {
		{"--ops", &ops, NULL},
		{"--kib", &kib, NULL},
		{"--warmup", &warmup, NULL},
		{"--wait", NULL, &wait},
	};
	bench_parse(argc, argv, options, sizeof(options) / sizeof(options[0]));
	if (kib == 0)
		bench_usage(argv[0], options, sizeof(options) / sizeof(options[0]));

	size_t len = (size_t)kib << 10;
	for (unsigned long i = 0; i < warmup; i++)
		run_op(len);
	if (wait)
		bench_wait_for_go();

	double start = bench_now();
	for (unsigned long i = 0; i < ops; i++)
		run_op(len);
	double seconds = bench_now() - start;

	printf("{\"benchmark\":\"mmap_churn\",\"seconds\":%.9f,\"operations\":%lu,\"kib\":%lu}\n",
	       seconds, ops, kib);
	return 0;
}
