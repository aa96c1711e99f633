/*
 * nofp_chains: three call chains through one allocating function and one
 * function that gives memory back, in code without frame pointers (built
 * -O2 -fomit-frame-pointer, with symbols but no debug info):
 *
 *   main -> serve -> load_cache -> make_buffer    24 MiB faulted in
 *   main -> serve -> warm_index -> make_buffer    16 MiB
 *   main -> rebuild -> make_buffer                 8 MiB
 *
 * make_buffer maps its memory and fills it with glibc's memset, so every
 * page fault happens inside memset, in a libc built without frame pointers.
 * Then each chain gives the end of its buffer back through give_back
 * (madvise MADV_DONTNEED, through glibc's wrapper):
 *
 *   main -> serve -> load_cache -> give_back      4 MiB
 *   main -> serve -> warm_index -> give_back      2 MiB
 *   main -> rebuild -> give_back                  1 MiB
 *
 *   nofp_chains [--wait] [--hold SECS]     (see stacks.h)
 *
 * Prints, in bytes per chain (named by the function only that chain has):
 *
 *   {"pid":P,"load_cache":{"faulted":F,"released":R,"resident":F-R},"warm_index":{...},"rebuild":{...}}
 */
#include "stacks.h"

struct chain {
	size_t faulted, released;
};

static struct chain cache_chain, index_chain, rebuild_chain;

/* Volatile so the stores that follow the calls stay, keeping their frames. */
static char *volatile cache, *volatile index_pages, *volatile rebuilt;

frame char *make_buffer(struct chain *chain, size_t len)
{
	char *p = stacks_map(len);
	memset(p, 0x5a, len);
	keep_frame();
	chain->faulted += len;
	return p;
}

frame void give_back(struct chain *chain, char *buffer, size_t len, size_t keep)
{
	if (madvise(buffer + keep, len - keep, MADV_DONTNEED) != 0) {
		fprintf(stderr, "madvise failed: %s\n", strerror(errno));
		exit(3);
	}
	keep_frame();
	chain->released += len - keep;
}

frame void load_cache(void)
{
	char *p = make_buffer(&cache_chain, 24 * MIB);
	give_back(&cache_chain, p, 24 * MIB, 20 * MIB);
	cache = p;
}

frame void warm_index(void)
{
	char *p = make_buffer(&index_chain, 16 * MIB);
	give_back(&index_chain, p, 16 * MIB, 14 * MIB);
	index_pages = p;
}

frame void serve(void)
{
	load_cache();
	warm_index();
	keep_frame();
}

frame void rebuild(void)
{
	char *p = make_buffer(&rebuild_chain, 8 * MIB);
	give_back(&rebuild_chain, p, 8 * MIB, 7 * MIB);
	rebuilt = p;
}

static void print_chain(const char *name, const struct chain *chain, const char *after)
{
	printf("\"%s\":{\"faulted\":%zu,\"released\":%zu,\"resident\":%zu}%s", name,
	       chain->faulted, chain->released, chain->faulted - chain->released, after);
}

int main(int argc, char **argv)
{
	struct stacks_options options = stacks_parse(argc, argv, 0);
	stacks_wait(&options);

	serve();
	rebuild();

	printf("{\"pid\":%d,", (int)getpid());
	print_chain("load_cache", &cache_chain, ",");
	print_chain("warm_index", &index_chain, ",");
	print_chain("rebuild", &rebuild_chain, "}\n");
	stacks_hold(&options);
	return 0;
}
