/*
 * many_threads [--threads N] [--mib M]
 *
 * Starts N threads that sleep, then forks a child that maps M MiB, writes
 * every page, prints {"child":PID,"touched":BYTES} and exits; the parent
 * waits for it, prints {"pid":P,"threads":N} first and "done" last.
 *
 * For checking that a process's threads never take the places of the
 * processes it forks in memtrace's map of traced processes.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t finished = PTHREAD_COND_INITIALIZER;
static int done;

static void *sleeper(void *unused)
{
	(void)unused;
	pthread_mutex_lock(&lock);
	while (!done)
		pthread_cond_wait(&finished, &lock);
	pthread_mutex_unlock(&lock);
	return NULL;
}

int main(int argc, char **argv)
{
	long threads = 1100, mib = 32;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--threads") == 0)
			threads = atol(argv[i + 1]);
		else if (strcmp(argv[i], "--mib") == 0)
			mib = atol(argv[i + 1]);
		else {
			fprintf(stderr, "usage: many_threads [--threads N] [--mib M]\n");
			return 2;
		}
	}
	printf("{\"pid\":%d,\"threads\":%ld}\n", getpid(), threads);
	fflush(stdout);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	pthread_t *ids = calloc(threads, sizeof(*ids));
	for (long i = 0; i < threads; i++) {
		if (pthread_create(&ids[i], &attr, sleeper, NULL) != 0) {
			perror("pthread_create");
			return 3;
		}
	}
	pid_t child = fork();
	if (child == 0) {
		size_t len = (size_t)mib << 20;
		char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			_exit(3);
		for (size_t off = 0; off < len; off += PAGE)
			p[off] = 1;
		printf("{\"child\":%d,\"touched\":%zu}\n", getpid(), len);
		fflush(stdout);
		usleep(800 * 1000);
		_exit(0);
	}
	int status;
	waitpid(child, &status, 0);
	pthread_mutex_lock(&lock);
	done = 1;
	pthread_cond_broadcast(&finished);
	pthread_mutex_unlock(&lock);
	for (long i = 0; i < threads; i++)
		pthread_join(ids[i], NULL);
	printf("done\n");
	return WIFEXITED(status) ? WEXITSTATUS(status) : 4;
}
