/*
 * split_user: allocates through libsplit (splitlib.c), whose debug
 * information lives in a separate file, from one call chain:
 *
 *   main -> load_tiles -> split_fill (in libsplit.so)    32 MiB
 *
 * Built -O2 -fomit-frame-pointer without debug info, linked against
 * libsplit.so next to it (rpath $ORIGIN).
 *
 *   split_user [--wait] [--hold SECS]     (see stacks.h)
 *
 * Prints {"pid":P,"split_fill":B}, the bytes split_fill faulted in.
 */
#include "stacks.h"

char *split_fill(size_t len);

static char *volatile tiles;

frame void load_tiles(void)
{
	tiles = split_fill(32 * MIB);
}

int main(int argc, char **argv)
{
	struct stacks_options options = stacks_parse(argc, argv, 0);
	stacks_wait(&options);

	load_tiles();

	printf("{\"pid\":%d,\"split_fill\":%zu}\n", (int)getpid(), 32 * MIB);
	stacks_hold(&options);
	return 0;
}
