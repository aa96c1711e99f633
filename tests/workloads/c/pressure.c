/*
 * pressure: a process that runs into its container's memory limit, for
 * checking what memtrace says about reclaim and the OOM kill that ends it.
 *
 *   main -> fill_working_set     --fill-mib MiB, every page written
 *   main -> give_back_lazily     MADV_FREE of the first --free-mib of it
 *   main -> grow_until_killed    --step-mib MiB more every --every-ms, forever
 *
 *   pressure [--fill-mib 48] [--free-mib 32] [--step-mib 4] [--every-ms 100]
 *            [--max-mib 1024] [--wait]
 *
 * With --wait it first prints "waiting" and blocks until a line arrives on
 * stdin (a tracer attaches meanwhile). It prints
 * {"pid":P,"filled":B,"lazily_freed":B} once the working set is filled and
 * partly given back, then {"grown":B,"lazyfree":B} after every step: the
 * bytes grown so far and the kernel's LazyFree for the process
 * (/proc/self/smaps_rollup). Under a memory limit the kernel reclaims the
 * lazily freed pages first (LazyFree falls to 0, no swap needed), then the
 * OOM killer ends the process. --max-mib is a guard for runs without a
 * limit: past it the program exits 4 instead of taking the host's memory.
 * Bad options exit 2, failed system calls 3.
 *
 * The three functions are noipa and fault their pages themselves, so each
 * is the innermost frame of its own faults.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)
#define PAGE_SIZE ((size_t)4096)

#define site __attribute__((noipa))

struct options {
	size_t fill_mib, free_mib, step_mib, max_mib;
	long every_ms;
	bool wait;
};

static void fail(const char *what)
{
	fprintf(stderr, "pressure: %s failed: %s\n", what, strerror(errno));
	exit(3);
}

static void usage(void)
{
	fprintf(stderr, "usage: pressure [--fill-mib N] [--free-mib N] [--step-mib N] "
			"[--every-ms N] [--max-mib N] [--wait]\n");
	exit(2);
}

static long parse_count(const char *text)
{
	char *end;
	errno = 0;
	long value = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || value < 0)
		usage();
	return value;
}

static struct options parse(int argc, char **argv)
{
	struct options options = {48, 32, 4, 1024, 100, false};
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0) {
			options.wait = true;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		long value = parse_count(argv[i + 1]);
		if (strcmp(argv[i], "--fill-mib") == 0)
			options.fill_mib = (size_t)value;
		else if (strcmp(argv[i], "--free-mib") == 0)
			options.free_mib = (size_t)value;
		else if (strcmp(argv[i], "--step-mib") == 0)
			options.step_mib = (size_t)value;
		else if (strcmp(argv[i], "--every-ms") == 0)
			options.every_ms = value;
		else if (strcmp(argv[i], "--max-mib") == 0)
			options.max_mib = (size_t)value;
		else
			usage();
		i++;
	}
	if (options.free_mib > options.fill_mib || options.fill_mib == 0 || options.step_mib == 0)
		usage();
	return options;
}

/* Maps len bytes and writes every page: the caller's frame faults them. */
static inline __attribute__((always_inline)) char *map_and_fill(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		fail("mmap");
	for (size_t off = 0; off < len; off += PAGE_SIZE)
		p[off] = 1;
	return p;
}

/* The kernel's LazyFree for this process, in bytes. */
static size_t lazyfree_bytes(void)
{
	FILE *rollup = fopen("/proc/self/smaps_rollup", "r");
	if (!rollup)
		fail("opening /proc/self/smaps_rollup");
	char line[256];
	size_t kib = 0;
	while (fgets(line, sizeof line, rollup))
		if (sscanf(line, "LazyFree: %zu kB", &kib) == 1)
			break;
	fclose(rollup);
	return kib * 1024;
}

site char *fill_working_set(size_t len)
{
	return map_and_fill(len);
}

site void give_back_lazily(char *start, size_t len)
{
	if (len > 0 && madvise(start, len, MADV_FREE) != 0)
		fail("madvise(MADV_FREE)");
}

site void grow_until_killed(const struct options *options)
{
	size_t step = options->step_mib * MIB;
	struct timespec pause = {
		.tv_sec = options->every_ms / 1000,
		.tv_nsec = options->every_ms % 1000 * 1000000,
	};
	for (size_t grown = step; grown <= options->max_mib * MIB; grown += step) {
		map_and_fill(step);
		printf("{\"grown\":%zu,\"lazyfree\":%zu}\n", grown, lazyfree_bytes());
		nanosleep(&pause, NULL);
	}
	fprintf(stderr, "pressure: grew %zu MiB and nothing stopped it\n", options->max_mib);
	exit(4);
}

int main(int argc, char **argv)
{
	struct options options = parse(argc, argv);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (options.wait) {
		printf("waiting\n");
		char line[64];
		/* EOF continues too, as memops' wait does. */
		if (!fgets(line, sizeof line, stdin) && ferror(stdin))
			fail("reading stdin");
	}
	char *working_set = fill_working_set(options.fill_mib * MIB);
	give_back_lazily(working_set, options.free_mib * MIB);
	printf("{\"pid\":%d,\"filled\":%zu,\"lazily_freed\":%zu}\n", getpid(),
	       options.fill_mib * MIB, options.free_mib * MIB);
	grow_until_killed(&options);
}
