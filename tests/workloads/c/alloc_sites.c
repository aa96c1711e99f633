/*
 * alloc_sites: a process whose memory comes from a few well-known call
 * sites, for checking that memtrace attributes RSS to the right stacks and
 * names them with or without symbols and frame pointers.
 *
 *   main -> startup -> load_catalog     24 MiB
 *   main -> startup -> build_index      16 MiB
 *   main -> serve   -> handle_request    1 MiB per call, 8 calls
 *
 * Each site mmaps its memory and writes every 4 KiB page; nothing is freed.
 *
 *   alloc_sites [--hold SECS]
 *
 * Prints {"pid":P,"load_catalog":B,"build_index":B,"handle_request":B,"total":B}
 * (bytes per function), then "ready", then pauses until killed or, with
 * --hold, sleeps SECS seconds and exits 0.
 *
 * The sites are noipa (no inlining, cloning or interprocedural changes) and
 * their results are stored, so no call is a tail call: the frames above
 * stay on the stack even in the -O2 build.  The mmap call itself goes
 * through glibc's mmap wrapper, one frame below the site.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)
#define PAGE_SIZE ((size_t)4096)
#define REQUESTS 8

#define site __attribute__((noipa))

/*
 * Volatile so the compiler cannot drop the stores as dead, which would turn
 * the calls that produce them into tail calls.
 */
static char *volatile catalog;
static char *volatile index_pages;
static char *volatile request_buffers[REQUESTS];

static size_t catalog_bytes, index_bytes, request_bytes;

/*
 * Always inlined, so page faults happen with the site function itself as the
 * innermost frame: that frame stays correct even where unwinding fails.
 */
static inline __attribute__((always_inline)) char *map_and_fill(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "mmap failed: %s\n", strerror(errno));
		exit(3);
	}
	for (size_t off = 0; off < len; off += PAGE_SIZE)
		p[off] = 1;
	return p;
}

site char *load_catalog(void)
{
	size_t len = 24 * MIB;
	catalog_bytes += len;
	return map_and_fill(len);
}

site char *build_index(void)
{
	size_t len = 16 * MIB;
	index_bytes += len;
	return map_and_fill(len);
}

site char *handle_request(void)
{
	size_t len = 1 * MIB;
	request_bytes += len;
	return map_and_fill(len);
}

site void startup(void)
{
	catalog = load_catalog();
	index_pages = build_index();
}

site void serve(void)
{
	for (int i = 0; i < REQUESTS; i++)
		request_buffers[i] = handle_request();
}

int main(int argc, char **argv)
{
	double hold = -1; /* negative: pause until killed */
	if (argc == 3 && strcmp(argv[1], "--hold") == 0) {
		char *end;
		hold = strtod(argv[2], &end);
		if (end == argv[2] || *end != '\0' || !(hold >= 0)) {
			fprintf(stderr, "usage: %s [--hold SECS]\n", argv[0]);
			return 2;
		}
	} else if (argc != 1) {
		fprintf(stderr, "usage: %s [--hold SECS]\n", argv[0]);
		return 2;
	}

	startup();
	serve();

	printf("{\"pid\":%d,\"load_catalog\":%zu,\"build_index\":%zu,\"handle_request\":%zu,"
	       "\"total\":%zu}\nready\n",
	       (int)getpid(), catalog_bytes, index_bytes, request_bytes,
	       catalog_bytes + index_bytes + request_bytes);
	fflush(stdout);

	if (hold < 0) {
		pause();
	} else {
		struct timespec left = {.tv_sec = (time_t)hold};
		left.tv_nsec = (long)((hold - (double)left.tv_sec) * 1e9);
		while (nanosleep(&left, &left) != 0 && errno == EINTR)
			;
	}
	return 0;
}
