/*
 * Helpers shared by the whole-stack workloads (nofp_chains, nofp_threads,
 * split_user, shared_fault): their options, the attach handshake, and a hold
 * at the end so a tracer sees what they keep.
 *
 *   PROGRAM [--wait] [--hold SECS] [--pages N]
 *
 * With --wait the program prints "waiting" and blocks until a line (or EOF)
 * arrives on stdin before it allocates, so a tracer can attach first
 * (`memtrace -p`). After its work it prints one JSON line and "ready", then
 * sleeps SECS seconds and exits 0, or without --hold pauses until killed.
 * --pages is for programs whose work is a number of pages (shared_fault).
 *
 * The functions that make the stacks are marked `frame` (noipa: no inlining,
 * cloning or interprocedural changes), and every call that must keep its
 * frame is followed by `keep_frame()`, so -O2 turns no call into a tail
 * call: the stacks are exactly the call chains the sources show.
 */
#ifndef MEMTRACE_STACKS_H
#define MEMTRACE_STACKS_H

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

#define frame __attribute__((noipa))

/* An empty statement the compiler must keep after a call. */
#define keep_frame() __asm__ volatile("" ::: "memory")

struct stacks_options {
	bool wait;
	/* Negative: pause until killed. */
	double hold;
	/* 0 for programs that take no --pages. */
	long pages;
};

static inline void stacks_usage(const char *program, long pages)
{
	fprintf(stderr, "usage: %s [--wait] [--hold SECS]%s\n", program,
		pages ? " [--pages N]" : "");
	exit(2);
}

/* Parses the options; `pages` is the default of --pages, 0 to refuse it. */
static inline struct stacks_options stacks_parse(int argc, char **argv, long pages)
{
	struct stacks_options options = {.wait = false, .hold = -1, .pages = pages};
	for (int i = 1; i < argc; i++) {
		char *end;
		if (strcmp(argv[i], "--wait") == 0) {
			options.wait = true;
		} else if (strcmp(argv[i], "--hold") == 0 && i + 1 < argc) {
			options.hold = strtod(argv[++i], &end);
			if (end == argv[i] || *end != '\0' || !(options.hold >= 0))
				stacks_usage(argv[0], pages);
		} else if (pages && strcmp(argv[i], "--pages") == 0 && i + 1 < argc) {
			options.pages = strtol(argv[++i], &end, 10);
			if (end == argv[i] || *end != '\0' || options.pages <= 0)
				stacks_usage(argv[0], pages);
		} else {
			stacks_usage(argv[0], pages);
		}
	}
	return options;
}

/* With --wait: says so, then blocks until a line or EOF arrives on stdin. */
static inline void stacks_wait(const struct stacks_options *options)
{
	if (!options->wait)
		return;
	printf("waiting\n");
	fflush(stdout);
	int c;
	while ((c = getchar()) != EOF && c != '\n')
		;
}

/* Prints "ready" after the program's JSON line, then holds. */
static inline void stacks_hold(const struct stacks_options *options)
{
	printf("ready\n");
	fflush(stdout);
	if (options->hold < 0) {
		pause();
		return;
	}
	struct timespec left = {.tv_sec = (time_t)options->hold};
	left.tv_nsec = (long)((options->hold - (double)left.tv_sec) * 1e9);
	while (nanosleep(&left, &left) != 0 && errno == EINTR)
		;
}

/* An anonymous private mapping of `len` bytes; exits 3 when mmap fails. */
static inline char *stacks_map(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "mmap failed: %s\n", strerror(errno));
		exit(3);
	}
	return p;
}

#endif
