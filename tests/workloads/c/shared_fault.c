/*
 * shared_fault: one faulting function that is not a leaf, called from three
 * functions at the same stack depth, in code without frame pointers (built
 * -O2 -fomit-frame-pointer, no debug info; also built stripped):
 *
 *   main -> from_parser -> touch_page     pages 0, 3, 6, ...
 *   main -> from_loader -> touch_page     pages 1, 4, 7, ...
 *   main -> from_cache  -> touch_page     pages 2, 5, 8, ...
 *
 * of N pages (--pages N, default 12288: 48 MiB), touched as fast as the
 * kernel faults them in.
 *
 * The three callers have the same frame size, so every fault happens at the
 * same instruction with the same stack pointer, and only the return address
 * on the stack tells the callers apart. A stack taken at one fault and
 * reused for the next one would credit the wrong caller: tests check that
 * each caller gets exactly its own faults.
 *
 *   shared_fault [--wait] [--hold SECS] [--pages N]     (see stacks.h)
 *
 * Prints {"pid":P,"pages":N,"from_parser":A,"from_loader":B,"from_cache":C},
 * the pages each caller faulted in.
 */
#include "stacks.h"

#define DEFAULT_PAGES 12288

/* touch_page calls this after its store, so touch_page is not a leaf. */
frame void after_touch(void)
{
	keep_frame();
}

frame void touch_page(char *page)
{
	*(volatile char *)page = 1;
	after_touch();
	keep_frame();
}

frame void from_parser(char *page)
{
	touch_page(page);
	keep_frame();
}

frame void from_loader(char *page)
{
	touch_page(page);
	keep_frame();
}

frame void from_cache(char *page)
{
	touch_page(page);
	keep_frame();
}

int main(int argc, char **argv)
{
	struct stacks_options options = stacks_parse(argc, argv, DEFAULT_PAGES);
	stacks_wait(&options);

	long pages = options.pages;
	char *region = stacks_map((size_t)pages * PAGE_SIZE);
	long counts[3] = {0, 0, 0};
	for (long i = 0; i < pages; i++) {
		char *page = region + i * PAGE_SIZE;
		switch (i % 3) {
		case 0:
			from_parser(page);
			break;
		case 1:
			from_loader(page);
			break;
		default:
			from_cache(page);
			break;
		}
		counts[i % 3]++;
	}

	printf("{\"pid\":%d,\"pages\":%ld,\"from_parser\":%ld,\"from_loader\":%ld,\"from_cache\":%ld}\n",
	       (int)getpid(), pages, counts[0], counts[1], counts[2]);
	stacks_hold(&options);
	return 0;
}
