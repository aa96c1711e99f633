/*
 * same_place: one program built twice under two names for its fault site
 * (same_place_first, same_place_second). Both are position-dependent, so
 * their code lands at the same addresses; one execs the other, and a tracer
 * must then not name the second program's code after the first's.
 *
 *   same_place SECS [PATH ARGS...]
 *
 * Maps 8 MiB and writes every page from SITE (the build's -DSITE=name),
 * prints "touched by NAME", sleeps SECS seconds, then execs PATH ARGS... if
 * given, or exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef SITE
#error "build with -DSITE=<function name>"
#endif

#define STRINGIFY(x) #x
#define NAME(x) STRINGIFY(x)
#define REGION ((size_t)8 << 20)
#define PAGE_SIZE ((size_t)4096)

static void fail(const char *call)
{
	fprintf(stderr, "same_place: %s failed: %s\n", call, strerror(errno));
	exit(3);
}

/* Writes every page of p, so every fault has this function innermost. */
static __attribute__((noipa)) void SITE(volatile char *p)
{
	for (size_t off = 0; off < REGION; off += PAGE_SIZE)
		p[off] = 1;
}

int main(int argc, char **argv)
{
	char *end;
	double seconds = argc > 1 ? strtod(argv[1], &end) : -1;
	if (argc < 2 || end == argv[1] || *end != '\0' || !(seconds >= 0)) {
		fprintf(stderr, "usage: same_place SECS [PATH ARGS...]\n");
		return 2;
	}
	char *p = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		fail("mmap");
	SITE(p);
	printf("touched by %s\n", NAME(SITE));
	fflush(stdout);
	struct timespec left = {.tv_sec = (time_t)seconds,
				.tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9)};
	while (nanosleep(&left, &left) != 0)
		if (errno != EINTR)
			fail("nanosleep");
	if (argc > 2) {
		execv(argv[2], &argv[2]);
		fail("execv");
	}
	return 0;
}
