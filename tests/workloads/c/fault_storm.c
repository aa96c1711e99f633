/*
 * fault_storm: page-fault throughput.  Each round maps --mib MiB of anonymous
 * memory, writes one byte per 4 KiB page (one minor fault each) and unmaps it.
 *
 *   fault_storm [--mib 64] [--rounds 16] [--warmup 4] [--wait]
 *
 * Last line: {"benchmark":"fault_storm","seconds":S,"operations":FAULTS,...}
 * where operations counts the pages written (= page faults) in measured rounds.
 */
#include "bench.h"

static void run_round(size_t len)
{
	char *p = bench_map(len);
	bench_touch(p, len);
	bench_unmap(p, len);
}

int main(int argc, char **argv)
{
	unsigned long mib = 64, rounds = 16, warmup = 4;
	bool wait = false;
	const struct bench_option options[] = {
		{"--mib", &mib, NULL},
		{"--rounds", &rounds, NULL},
		{"--warmup", &warmup, NULL},
		{"--wait", NULL, &wait},
	};
	bench_parse(argc, argv, options, sizeof(options) / sizeof(options[0]));
	if (mib == 0)
		bench_usage(argv[0], options, sizeof(options) / sizeof(options[0]));

	size_t len = (size_t)mib << 20;
	for (unsigned long i = 0; i < warmup; i++)
		run_round(len);
	if (wait)
		bench_wait_for_go();

	double start = bench_now();
	for (unsigned long i = 0; i < rounds; i++)
		run_round(len);
	double seconds = bench_now() - start;

	unsigned long pages_per_round = len / BENCH_PAGE_SIZE;
	printf("{\"benchmark\":\"fault_storm\",\"seconds\":%.9f,\"operations\":%lu,"
	       "\"rounds\":%lu,\"mib\":%lu,\"pages_per_round\":%lu}\n",
	       seconds, rounds * pages_per_round, rounds, mib, pages_per_round);
	return 0;
}
