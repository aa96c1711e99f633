/*
 * libsplit: a shared library whose debug information is split off into a
 * separate file (see tests/workloads/README.md), for checking that memtrace
 * names its frames with file and line from that file. Built -O2 -g
 * -fomit-frame-pointer -fPIC.
 *
 * split_fill maps LEN bytes and writes every 4 KiB page itself, on the line
 * marked "fault line" below: the tests find that line's number in this file.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#define PAGE_SIZE ((size_t)4096)

char *split_fill(size_t len);

__attribute__((noipa)) char *split_fill(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("split_fill: mmap");
		exit(3);
	}
	for (size_t off = 0; off < len; off += PAGE_SIZE)
		((volatile char *)p)[off] = 1; /* fault line */
	return p;
}
