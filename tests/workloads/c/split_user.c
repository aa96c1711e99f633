/*
 * split_user: allocates through libsplit (splitlib.c), whose debug
 * information lives in a separate file, from one call chain:
 *
 *   main -> load_tiles -> split_fill (in libsplit.so)    N pages
 *
 * of N pages (--pages N, default 8192: 32 MiB). Built -O2
 * -fomit-frame-pointer without debug info, linked against libsplit.so next
 * to it (rpath $ORIGIN).
 *
 *   split_user [--wait] [--hold SECS] [--pages N]     (see stacks.h)
 *
 * Prints {"pid":P,"split_fill":B}, the bytes split_fill faulted in.
 */
#include "stacks.h"

char *split_fill(size_t len);

static char *volatile tiles;

frame void load_tiles(size_t len)
{
	tiles = split_fill(len);
}

int main(int argc, char **argv)
{
	struct stacks_options options = stacks_parse(argc, argv, 32 * MIB / PAGE_SIZE);
	size_t len = (size_t)options.pages * PAGE_SIZE;
	stacks_wait(&options);

	load_tiles(len);

	printf("{\"pid\":%d,\"split_fill\":%zu}\n", (int)getpid(), len);
	stacks_hold(&options);
	return 0;
}
