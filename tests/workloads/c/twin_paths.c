/*
 * twin_paths [--pages N] [--hold SECS]
 *
 * Two call chains that reach the same faulting instruction with the same
 * frame pointer and the same immediate caller, and differ only further out:
 *
 *     main -> via_left  -> step -> fill
 *     main -> via_right -> step -> fill
 *
 * Pages are touched alternately through each. This is the one case where
 * memtrace's sampled stacks can take one stack for the other (it recognises
 * a fault site by instruction, frame pointer and caller), so tests use it to
 * check the stated bound, and that --stacks=all is exact.
 *
 * Prints {"pid":P,"pages":N,"left":L,"right":R} after touching, then holds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define noinline __attribute__((noinline))
#define PAGE 4096

static noinline void after_fill(void)
{
	__asm__ volatile("" ::: "memory");
}

/* Not a leaf (gcc gives leaves no frame pointer): the fault happens with
 * fill's own frame, whose caller is step on both paths. */
static noinline void fill(char *page)
{
	*(volatile char *)page = 1;
	after_fill();
}

static noinline void step(char *page)
{
	fill(page);
	__asm__ volatile("" ::: "memory");
}

static noinline void via_left(char *page)
{
	step(page);
	__asm__ volatile("" ::: "memory");
}

static noinline void via_right(char *page)
{
	step(page);
	__asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
	long pages = 16384;
	long run = 1;
	double hold = 1.0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--pages") && i + 1 < argc)
			pages = atol(argv[++i]);
		else if (!strcmp(argv[i], "--run") && i + 1 < argc)
			run = atol(argv[++i]);
		else if (!strcmp(argv[i], "--hold") && i + 1 < argc)
			hold = atof(argv[++i]);
		else {
			fprintf(stderr, "usage: twin_paths [--pages N] [--run N] [--hold SECS]\n");
			return 2;
		}
	}
	if (pages <= 0 || run <= 0) {
		fprintf(stderr, "twin_paths: --pages and --run must be positive\n");
		return 2;
	}
	char *region = mmap(NULL, (size_t)pages * PAGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED) {
		perror("twin_paths: mmap");
		return 3;
	}
	long left = 0, right = 0;
	for (long i = 0; i < pages; i++) {
		/* `run` pages through one path, then as many through the other. */
		if ((i / run) % 2 == 0) {
			via_left(region + i * PAGE);
			left++;
		} else {
			via_right(region + i * PAGE);
			right++;
		}
	}
	printf("{\"pid\":%d,\"pages\":%ld,\"left\":%ld,\"right\":%ld}\n", getpid(), pages, left, right);
	fflush(stdout);
	usleep((useconds_t)(hold * 1e6));
	return 0;
}
