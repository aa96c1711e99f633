/*
 * nofp_threads: threads that allocate, in code without frame pointers
 * (built -O2 -fomit-frame-pointer -pthread, no debug info). Each thread's
 * stack starts in glibc's start_thread (called from clone3), not in main:
 *
 *   start_thread -> reader_main -> fill_arena     2 threads, 4 MiB each
 *   start_thread -> writer_main -> fill_arena     2 threads, 6 MiB each
 *
 * fill_arena maps its memory and fills it with glibc's memset, so the page
 * faults happen inside memset. The threads run one after another (each is
 * joined before the next starts), so the totals are exact.
 *
 *   nofp_threads [--wait] [--hold SECS]     (see stacks.h)
 *
 * Prints {"pid":P,"reader_main":B,"writer_main":B}, the bytes each thread
 * function faulted in, all of them still held.
 */
#include <pthread.h>

#include "stacks.h"

#define THREADS_PER_KIND 2

static size_t reader_bytes, writer_bytes;
static char *volatile arenas[2 * THREADS_PER_KIND];
static int next_arena;

frame char *fill_arena(size_t len)
{
	char *p = stacks_map(len);
	memset(p, 0x3c, len);
	keep_frame();
	arenas[next_arena++] = p;
	return p;
}

frame void *reader_main(void *arg)
{
	(void)arg;
	fill_arena(4 * MIB);
	keep_frame();
	reader_bytes += 4 * MIB;
	return NULL;
}

frame void *writer_main(void *arg)
{
	(void)arg;
	fill_arena(6 * MIB);
	keep_frame();
	writer_bytes += 6 * MIB;
	return NULL;
}

static void run_thread(void *(*body)(void *))
{
	pthread_t thread;
	int error = pthread_create(&thread, NULL, body, NULL);
	if (error == 0)
		error = pthread_join(thread, NULL);
	if (error != 0) {
		fprintf(stderr, "thread failed: %s\n", strerror(error));
		exit(3);
	}
}

int main(int argc, char **argv)
{
	struct stacks_options options = stacks_parse(argc, argv, 0);
	stacks_wait(&options);

	for (int i = 0; i < THREADS_PER_KIND; i++) {
		run_thread(reader_main);
		run_thread(writer_main);
	}

	printf("{\"pid\":%d,\"reader_main\":%zu,\"writer_main\":%zu}\n", (int)getpid(),
	       reader_bytes, writer_bytes);
	stacks_hold(&options);
	return 0;
}
