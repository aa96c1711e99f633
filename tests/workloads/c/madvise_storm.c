/*
 * madvise_storm: madvise throughput with many small calls.  Maps --mib MiB
 * once; each round writes every page, then walks the region in
 * --chunk-kib pieces, alternating MADV_FREE and MADV_DONTNEED per piece.
 *
 *   madvise_storm [--mib 64] [--rounds 16] [--chunk-kib 64] [--warmup 2] [--wait]
 *
 * Last line: {"benchmark":"madvise_storm","seconds":S,"operations":CALLS,...}
 * where operations counts the madvise calls in measured rounds.
 */
#include "bench.h"

/* Returns the number of madvise calls made. */
static unsigned long run_round(char *p, size_t len, size_t chunk)
{
	unsigned long calls = 0;
	bench_touch(p, len);
	for (size_t off = 0; off < len; off += chunk) {
		size_t piece = len - off < chunk ? len - off : chunk;
		int advice = calls % 2 == 0 ? MADV_FREE : MADV_DONTNEED;
		if (madvise(p + off, piece, advice) != 0)
			bench_fail("madvise");
		calls++;
	}
	return calls;
}

int main(int argc, char **argv)
{
	unsigned long mib = 64, rounds = 16, chunk_kib = 64, warmup = 2;
	bool wait = false;
	const struct bench_option options[] = {
		{"--mib", &mib, NULL},
		{"--rounds", &rounds, NULL},
		{"--chunk-kib", &chunk_kib, NULL},
		{"--warmup", &warmup, NULL},
		{"--wait", NULL, &wait},
	};
	const size_t option_count = sizeof(options) / sizeof(options[0]);
	bench_parse(argc, argv, options, option_count);
	/* madvise needs page-aligned starts, so chunks are whole pages. */
	if (mib == 0 || chunk_kib == 0 || chunk_kib % 4 != 0)
		bench_usage(argv[0], options, option_count);

	size_t len = (size_t)mib << 20;
	size_t chunk = (size_t)chunk_kib << 10;
	char *p = bench_map(len);
	for (unsigned long i = 0; i < warmup; i++)
		run_round(p, len, chunk);
	if (wait)
		bench_wait_for_go();

	unsigned long calls = 0;
	double start = bench_now();
	for (unsigned long i = 0; i < rounds; i++)
		calls += run_round(p, len, chunk);
	double seconds = bench_now() - start;

	bench_unmap(p, len);
	printf("{\"benchmark\":\"madvise_storm\",\"seconds\":%.9f,\"operations\":%lu,"
	       "\"rounds\":%lu,\"mib\":%lu,\"chunk_kib\":%lu}\n",
	       seconds, calls, rounds, mib, chunk_kib);
	return 0;
}
