/*
 * many_libs: a process with many mappings, for a tracer to attach to.  It
 * dlopens --libs N shared libraries lib000.so, lib001.so, ... from the
 * directory its own executable is in (copies of one small library, each a
 * file of its own, so each is loaded and mapped on its own), then prints
 * "ready" and waits for a line on stdin.
 *
 *   many_libs [--libs 100] [--wait]
 *
 * Last line: {"benchmark":"many_libs","seconds":S,"operations":N,"mappings":M}
 * where S is the time the dlopen calls took and M the lines of
 * /proc/self/maps once they were done.
 */
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>

#include "bench.h"

static unsigned long count_mappings(void)
{
	FILE *maps = fopen("/proc/self/maps", "r");
	if (maps == NULL)
		bench_fail("fopen /proc/self/maps");
	unsigned long lines = 0;
	int c;
	while ((c = fgetc(maps)) != EOF)
		lines += c == '\n';
	fclose(maps);
	return lines;
}

int main(int argc, char **argv)
{
	unsigned long libs = 100;
	bool wait = false;
	const struct bench_option options[] = {
		{"--libs", &libs, NULL},
		{"--wait", NULL, &wait},
	};
	bench_parse(argc, argv, options, sizeof(options) / sizeof(options[0]));
	if (libs > 1000)
		bench_usage(argv[0], options, sizeof(options) / sizeof(options[0]));

	char exe[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (len < 0)
		bench_fail("readlink /proc/self/exe");
	exe[len] = '\0';
	const char *dir = dirname(exe);

	double start = bench_now();
	for (unsigned long i = 0; i < libs; i++) {
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/lib%03lu.so", dir, i);
		if (dlopen(path, RTLD_NOW | RTLD_LOCAL) == NULL) {
			fprintf(stderr, "dlopen failed: %s\n", dlerror());
			exit(3);
		}
	}
	double seconds = bench_now() - start;
	unsigned long mappings = count_mappings();
	if (wait)
		bench_wait_for_go();

	printf("{\"benchmark\":\"many_libs\",\"seconds\":%.9f,\"operations\":%lu,\"mappings\":%lu}\n",
	       seconds, libs, mappings);
	return 0;
}
