/*
 * Helpers shared by the benchmark workloads (fault_storm, madvise_storm,
 * mmap_churn): option parsing, timing, the --wait handshake and mmap.
 *
 * Every benchmark runs its warm-up, then (with --wait) prints "ready" and
 * blocks until a line (or EOF) arrives on stdin so a tracer can attach, then
 * times only the measured part with CLOCK_MONOTONIC and prints one JSON
 * object as its last line.
 */
#ifndef MEMTRACE_BENCH_H
#define MEMTRACE_BENCH_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdnoreturn.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define BENCH_PAGE_SIZE ((size_t)4096)

/* A command-line option: a number (value) or, when value is NULL, a flag. */
struct bench_option {
	const char *name;
	unsigned long *value;
	bool *flag;
};

static inline noreturn void bench_usage(const char *program, const struct bench_option *options,
			       size_t count)
{
	fprintf(stderr, "usage: %s", program);
	for (size_t i = 0; i < count; i++)
		fprintf(stderr, options[i].value ? " [%s N]" : " [%s]", options[i].name);
	fputc('\n', stderr);
	exit(2);
}

/* Parses "--name N" and "--flag" arguments; exits with status 2 on anything else. */
static inline void bench_parse(int argc, char **argv, const struct bench_option *options,
			       size_t count)
{
	for (int i = 1; i < argc; i++) {
		const struct bench_option *option = NULL;
		for (size_t j = 0; j < count; j++)
			if (strcmp(argv[i], options[j].name) == 0)
				option = &options[j];
		if (option == NULL)
			bench_usage(argv[0], options, count);
		if (option->flag) {
			*option->flag = true;
			continue;
		}
		if (i + 1 == argc)
			bench_usage(argv[0], options, count);
		char *end;
		errno = 0;
		unsigned long value = strtoul(argv[++i], &end, 10);
		if (errno != 0 || end == argv[i] || *end != '\0' || argv[i][0] == '-')
			bench_usage(argv[0], options, count);
		*option->value = value;
	}
}

static inline double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Prints "ready" and blocks until stdin yields a line or EOF. */
static inline void bench_wait_for_go(void)
{
	puts("ready");
	fflush(stdout);
	int c;
	while ((c = getchar()) != EOF && c != '\n')
		;
}

static inline noreturn void bench_fail(const char *call)
{
	fprintf(stderr, "%s failed: %s\n", call, strerror(errno));
	exit(3);
}

static inline char *bench_map(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		bench_fail("mmap");
	return p;
}

static inline void bench_unmap(char *p, size_t len)
{
	if (munmap(p, len) != 0)
		bench_fail("munmap");
}

/* Writes one byte in each page of [p, p + len), one page fault per page when fresh. */
static inline void bench_touch(char *p, size_t len)
{
	for (size_t off = 0; off < len; off += BENCH_PAGE_SIZE)
		((volatile char *)p)[off] = 1;
}

#endif
