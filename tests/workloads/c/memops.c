/*
 * memops: runs a script of memory operations given on the command line, so an
 * integration test can compose exactly the memory behaviour it wants to trace.
 *
 *   memops map A 64M \; touch A 0 64M \; free A 0 32M \; hold 5
 *
 * Operations are separated by a lone ";" argument.  The whole script is
 * checked (syntax, region names, ranges) before the first operation runs, so a
 * typo never leaves a half-run script behind.  See tests/workloads/README.md
 * for the full syntax and output format.
 *
 * Every operation runs in its own noinline op_* function and the program is
 * built with frame pointers and without sibling-call optimisation, so a stack
 * trace taken at any syscall or page fault names the operation that caused it.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdnoreturn.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define noinline __attribute__((noinline))

/* Every touch is one access per base page; x86_64 base pages are 4 KiB. */
#define PAGE_SIZE ((size_t)4096)
#define HUGE_PAGE_SIZE ((size_t)2 << 20)
#define MAX_REGIONS 64
/* Advice numbers accepted by `advise`; the kernel's highest is 103. */
#define ADVICE_LIMIT 256
#define EXTRA_LEN 128
/*
 * The kernel's "this process" pidfd (PIDFD_SELF_PROCESS) as of Linux 6.17;
 * 6.14 to 6.16 used -20000.
 */
#define PIDFD_SELF_PROCESS_6_17 (-10001)

enum map_kind { MAP_KIND_ANON, MAP_KIND_SHARED, MAP_KIND_FILE };

/* Which pidfd process_madvise names the process by. */
enum pidfd_kind {
	PIDFD_CLOSED,	/* pidfd_open, closed right after the call (default) */
	PIDFD_KEPT,	/* pidfd_open, kept open until the process exits */
	PIDFD_SELF_FD,	/* the kernel's PIDFD_SELF_PROCESS sentinel */
};

/* A named memory range created by `map` or `malloc`. */
struct region {
	const char *name;
	char *addr;
	size_t len;
	/* Parse-time bookkeeping: the script's own view of the region. */
	size_t planned_len;
	bool from_malloc;
	bool freed;
};

struct op;

/* What an operation did, printed as its `op ...` line. */
struct result {
	const void *addr;
	size_t len;
	long ret;
	char extra[EXTRA_LEN]; /* " key=value" pairs specific to the operation */
};

typedef void (*op_fn)(const struct op *op, struct result *res);

/* One parsed operation of the script. */
struct op {
	int index;
	const char *word; /* the script's word for the operation, e.g. "free" */
	op_fn run;
	int region; /* index into regions[], or -1 */
	size_t off;
	size_t len;
	int advice; /* for advise / process_madvise */
	enum map_kind map_kind;
	const char *path; /* map ... file PATH */
	bool populate;
	bool nonblock;
	bool locked;
	bool huge;
	bool read;	    /* touch ... read */
	bool move;	    /* remap ... move */
	enum pidfd_kind pidfd; /* process_madvise ... [keep|self] */
	long long delta;    /* brk */
	double seconds;	    /* hold, fork_touch's child */
	char *const *argv;  /* exec PATH ARGS... */
};

/* Bytes requested per madvise advice; reported in order of first use. */
struct advice_totals {
	unsigned long long bytes[ADVICE_LIMIT];
	bool used[ADVICE_LIMIT];
	int order[ADVICE_LIMIT];
	int count;
};

static struct region regions[MAX_REGIONS];
static int region_count;

/* Running totals printed by `report`; see README.md for their meaning. */
static struct {
	unsigned long long mapped;
	unsigned long long unmapped;
	unsigned long long touched_pages;
	unsigned long long touched_bytes;
	struct advice_totals madvise;
	struct advice_totals process_madvise;
} totals;

/* Read accesses load into this so the compiler cannot drop them. */
static volatile unsigned char read_sink;

static noreturn void script_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("memops: malformed script: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

/* Reports a failed system call (errno is still set) and exits with status 3. */
static noreturn void syscall_failed(const struct op *op, const char *call)
{
	fprintf(stderr, "memops: op %d %s: %s failed: %s\n", op->index, op->word, call,
		strerror(errno));
	exit(3);
}

static const char *advice_name(int advice)
{
	/* Names from the kernel's include/uapi/asm-generic/mman-common.h. */
	static const struct {
		int advice;
		const char *name;
	} names[] = {
		{0, "MADV_NORMAL"},		{1, "MADV_RANDOM"},
		{2, "MADV_SEQUENTIAL"},		{3, "MADV_WILLNEED"},
		{4, "MADV_DONTNEED"},		{8, "MADV_FREE"},
		{9, "MADV_REMOVE"},		{10, "MADV_DONTFORK"},
		{11, "MADV_DOFORK"},		{12, "MADV_MERGEABLE"},
		{13, "MADV_UNMERGEABLE"},	{14, "MADV_HUGEPAGE"},
		{15, "MADV_NOHUGEPAGE"},	{16, "MADV_DONTDUMP"},
		{17, "MADV_DODUMP"},		{18, "MADV_WIPEONFORK"},
		{19, "MADV_KEEPONFORK"},	{20, "MADV_COLD"},
		{21, "MADV_PAGEOUT"},		{22, "MADV_POPULATE_READ"},
		{23, "MADV_POPULATE_WRITE"},	{24, "MADV_DONTNEED_LOCKED"},
		{25, "MADV_COLLAPSE"},		{100, "MADV_HWPOISON"},
		{101, "MADV_SOFT_OFFLINE"},	{102, "MADV_GUARD_INSTALL"},
		{103, "MADV_GUARD_REMOVE"},
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].advice == advice)
			return names[i].name;
	return NULL;
}

static void add_advice(struct advice_totals *t, int advice, size_t bytes)
{
	if (!t->used[advice]) {
		t->used[advice] = true;
		t->order[t->count++] = advice;
	}
	t->bytes[advice] += bytes;
}

static void print_advice_totals(const struct advice_totals *t)
{
	putchar('{');
	for (int i = 0; i < t->count; i++) {
		int advice = t->order[i];
		const char *name = advice_name(advice);
		if (name)
			printf("%s\"%s\":%llu", i ? "," : "", name, t->bytes[advice]);
		else
			printf("%s\"MADV_%d\":%llu", i ? "," : "", advice, t->bytes[advice]);
	}
	putchar('}');
}

/*
 * Accesses one byte in every 4 KiB page overlapping [start, end); returns the page count.
 * Always inlined: the faults must happen in the op_* function that asked for them, since gcc
 * gives a leaf like this no frame pointer and a stack walk from it would skip its caller.
 */
static inline __attribute__((always_inline)) size_t touch_range(char *start, char *end, bool read)
{
	size_t pages = 0;
	for (char *p = start; p < end;
	     p = (char *)(((uintptr_t)p & ~(PAGE_SIZE - 1)) + PAGE_SIZE)) {
		if (read)
			read_sink += *(volatile unsigned char *)p;
		else
			*(volatile unsigned char *)p = 1;
		pages++;
	}
	return pages;
}

static void count_touch(size_t pages, size_t bytes)
{
	totals.touched_pages += pages;
	totals.touched_bytes += bytes;
}

static char *range_start(const struct op *op)
{
	return regions[op->region].addr + op->off;
}

/* glibc prints a null %p as "(nil)"; addresses are always printed as 0x... */
static unsigned long addr_value(const void *addr)
{
	return (unsigned long)(uintptr_t)addr;
}

static void print_op_line(const struct op *op, const struct result *res)
{
	printf("op %d %s %s addr=0x%lx len=%zu ret=%ld%s\n", op->index, op->word,
	       op->region >= 0 ? regions[op->region].name : "-", addr_value(res->addr), res->len,
	       res->ret, res->extra);
}

/* ---- operations ---------------------------------------------------------- */

static void do_madvise(const struct op *op, struct result *res, char *addr, size_t len, int advice)
{
	if (madvise(addr, len, advice) != 0)
		syscall_failed(op, "madvise");
	add_advice(&totals.madvise, advice, len);
	res->addr = addr;
	res->len = len;
}

static noinline void op_map(const struct op *op, struct result *res)
{
	struct region *r = &regions[op->region];
	int flags = MAP_PRIVATE | MAP_ANONYMOUS;
	int fd = -1;

	if (op->map_kind == MAP_KIND_SHARED) {
		flags = MAP_SHARED | MAP_ANONYMOUS;
	} else if (op->map_kind == MAP_KIND_FILE) {
		flags = MAP_PRIVATE;
		fd = open(op->path, O_RDWR | O_CREAT, 0600);
		if (fd < 0)
			syscall_failed(op, "open");
		if (ftruncate(fd, (off_t)op->len) != 0)
			syscall_failed(op, "ftruncate");
	}
	/*
	 * A huge region is populated only after MADV_HUGEPAGE: MAP_POPULATE
	 * would fault it in as base pages before the advice could apply.
	 */
	if (op->populate && !op->huge)
		flags |= MAP_POPULATE;
	if (op->nonblock)
		flags |= MAP_NONBLOCK;
	if (op->locked)
		flags |= MAP_LOCKED;

	/* Huge regions over-map by 2 MiB so a 2 MiB aligned start fits inside. */
	size_t map_len = op->huge ? op->len + HUGE_PAGE_SIZE : op->len;
	char *p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (p == MAP_FAILED)
		syscall_failed(op, "mmap");
	if (fd >= 0)
		close(fd); /* the mapping keeps its own reference to the file */

	r->addr = p;
	r->len = op->len;
	if (op->huge) {
		char *aligned = (char *)(((uintptr_t)p + HUGE_PAGE_SIZE - 1) & ~(HUGE_PAGE_SIZE - 1));
		char *region_end = aligned + ((op->len + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1));
		char *map_end = p + map_len;
		/* munmap rejects a zero length, and either end may need no trim. */
		if (aligned > p && munmap(p, (size_t)(aligned - p)) != 0)
			syscall_failed(op, "munmap");
		if (map_end > region_end && munmap(region_end, (size_t)(map_end - region_end)) != 0)
			syscall_failed(op, "munmap");
		r->addr = aligned;
		if (madvise(aligned, op->len, MADV_HUGEPAGE) != 0)
			syscall_failed(op, "madvise");
		add_advice(&totals.madvise, MADV_HUGEPAGE, op->len);
		if (op->populate) {
			if (madvise(aligned, op->len, MADV_POPULATE_WRITE) != 0)
				syscall_failed(op, "madvise");
			add_advice(&totals.madvise, MADV_POPULATE_WRITE, op->len);
		}
		snprintf(res->extra, sizeof(res->extra), " reserved=0x%lx reserved_len=%zu",
			 addr_value(p), map_len);
	}
	totals.mapped += op->len;
	res->addr = r->addr;
	res->len = r->len;
}

static noinline void op_touch(const struct op *op, struct result *res)
{
	char *start = range_start(op);
	size_t pages = touch_range(start, start + op->len, op->read);
	count_touch(pages, op->len);
	res->addr = start;
	res->len = op->len;
	res->ret = (long)pages;
}

/* One function per madvise word, so stack traces tell them apart. */
static noinline void op_free(const struct op *op, struct result *res)
{
	do_madvise(op, res, range_start(op), op->len, MADV_FREE);
}

static noinline void op_dontneed(const struct op *op, struct result *res)
{
	do_madvise(op, res, range_start(op), op->len, MADV_DONTNEED);
}

static noinline void op_remove(const struct op *op, struct result *res)
{
	do_madvise(op, res, range_start(op), op->len, MADV_REMOVE);
}

static noinline void op_pageout(const struct op *op, struct result *res)
{
	do_madvise(op, res, range_start(op), op->len, MADV_PAGEOUT);
}

static noinline void op_cold(const struct op *op, struct result *res)
{
	do_madvise(op, res, range_start(op), op->len, MADV_COLD);
}

static noinline void op_willneed(const struct op *op, struct result *res)
{
	do_madvise(op, res, range_start(op), op->len, MADV_WILLNEED);
}

static noinline void op_populate_read(const struct op *op, struct result *res)
{
	do_madvise(op, res, range_start(op), op->len, MADV_POPULATE_READ);
}

static noinline void op_populate_write(const struct op *op, struct result *res)
{
	do_madvise(op, res, range_start(op), op->len, MADV_POPULATE_WRITE);
}

static noinline void op_hugepage(const struct op *op, struct result *res)
{
	do_madvise(op, res, range_start(op), op->len, MADV_HUGEPAGE);
}

static noinline void op_nohugepage(const struct op *op, struct result *res)
{
	do_madvise(op, res, range_start(op), op->len, MADV_NOHUGEPAGE);
}

static noinline void op_advise(const struct op *op, struct result *res)
{
	do_madvise(op, res, range_start(op), op->len, op->advice);
}

static noinline void op_process_madvise(const struct op *op, struct result *res)
{
	struct iovec iov = {.iov_base = range_start(op), .iov_len = op->len};
	long pidfd = PIDFD_SELF_PROCESS_6_17;
	if (op->pidfd != PIDFD_SELF_FD) {
		pidfd = syscall(SYS_pidfd_open, getpid(), 0);
		if (pidfd < 0)
			syscall_failed(op, "pidfd_open");
	}
	long advised = syscall(SYS_process_madvise, pidfd, &iov, 1, op->advice, 0);
	if (advised < 0)
		syscall_failed(op, "process_madvise");
	if (op->pidfd == PIDFD_CLOSED)
		close((int)pidfd);
	add_advice(&totals.process_madvise, op->advice, op->len);
	res->addr = iov.iov_base;
	res->len = op->len;
	res->ret = advised; /* the kernel returns the number of bytes advised */
}

static noinline void op_unmap(const struct op *op, struct result *res)
{
	char *start = range_start(op);
	if (munmap(start, op->len) != 0)
		syscall_failed(op, "munmap");
	totals.unmapped += op->len;
	res->addr = start;
	res->len = op->len;
}

static noinline void op_remap(const struct op *op, struct result *res)
{
	struct region *r = &regions[op->region];
	char *p;

	if (op->move) {
		/*
		 * Reserve a fresh range and mremap onto it: MREMAP_FIXED replaces
		 * the reservation, so the region is guaranteed to move.
		 */
		char *dst = mmap(NULL, op->len, PROT_NONE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (dst == MAP_FAILED)
			syscall_failed(op, "mmap");
		p = mremap(r->addr, r->len, op->len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	} else {
		p = mremap(r->addr, r->len, op->len, MREMAP_MAYMOVE);
	}
	if (p == MAP_FAILED)
		syscall_failed(op, "mremap");
	snprintf(res->extra, sizeof(res->extra), " from=0x%lx from_len=%zu",
		 addr_value(r->addr), r->len);
	r->addr = p;
	r->len = op->len;
	res->addr = p;
	res->len = op->len;
}

static noinline void op_brk(const struct op *op, struct result *res)
{
	char *old_break = sbrk((intptr_t)op->delta);
	if (old_break == (char *)-1)
		syscall_failed(op, "sbrk");
	if (op->delta >= 0) {
		size_t len = (size_t)op->delta;
		count_touch(touch_range(old_break, old_break + len, false), len);
		res->addr = old_break;
		res->len = len;
	} else {
		res->len = (size_t)-op->delta;
		res->addr = old_break - res->len;
	}
}

static noinline void op_malloc(const struct op *op, struct result *res)
{
	struct region *r = &regions[op->region];
	r->addr = malloc(op->len);
	if (r->addr == NULL)
		syscall_failed(op, "malloc");
	r->len = op->len;
	count_touch(touch_range(r->addr, r->addr + r->len, false), r->len);
	res->addr = r->addr;
	res->len = r->len;
}

static noinline void op_mfree(const struct op *op, struct result *res)
{
	struct region *r = &regions[op->region];
	free(r->addr);
	res->addr = r->addr;
	res->len = r->len;
}

static noinline void op_fork_touch(const struct op *op, struct result *res)
{
	char *start = range_start(op);
	pid_t child = fork();
	if (child < 0)
		syscall_failed(op, "fork");
	if (child == 0) {
		touch_range(start, start + op->len, false);
		struct timespec left = {.tv_sec = (time_t)op->seconds,
					.tv_nsec = (long)((op->seconds - (double)(time_t)op->seconds) * 1e9)};
		while (nanosleep(&left, &left) != 0 && errno == EINTR)
			;
		_exit(0);
	}
	int status;
	if (waitpid(child, &status, 0) < 0)
		syscall_failed(op, "waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "memops: op %d %s: child %d failed (wait status %d)\n", op->index,
			op->word, (int)child, status);
		exit(3);
	}
	snprintf(res->extra, sizeof(res->extra), " child=%d", (int)child);
	res->addr = start;
	res->len = op->len;
}

static sigjmp_buf probe_jump;

static void probe_fault(int sig)
{
	(void)sig;
	siglongjmp(probe_jump, 1);
}

/* Reads every page of the range, surviving SIGSEGV; returns the pages that faulted. */
static noinline void op_probe(const struct op *op, struct result *res)
{
	struct sigaction catch = {.sa_handler = probe_fault}, old;
	sigemptyset(&catch.sa_mask);
	if (sigaction(SIGSEGV, &catch, &old) != 0)
		syscall_failed(op, "sigaction");
	char *start = range_start(op);
	volatile long faulted = 0;
	for (volatile size_t off = 0; off < op->len; off += PAGE_SIZE) {
		if (sigsetjmp(probe_jump, 1) == 0)
			read_sink += *(volatile unsigned char *)(start + off);
		else
			faulted++;
	}
	if (sigaction(SIGSEGV, &old, NULL) != 0)
		syscall_failed(op, "sigaction");
	res->addr = start;
	res->len = op->len;
	res->ret = faulted;
}

static noinline void op_hold(const struct op *op, struct result *res)
{
	(void)res;
	time_t whole = (time_t)op->seconds;
	struct timespec left = {.tv_sec = whole, .tv_nsec = (long)((op->seconds - (double)whole) * 1e9)};
	while (nanosleep(&left, &left) != 0) {
		if (errno != EINTR)
			syscall_failed(op, "nanosleep");
	}
}

static noinline void op_wait(const struct op *op, struct result *res)
{
	/*
	 * Read byte by byte rather than through stdio: buffered input would
	 * swallow lines meant for later waits, including those after an exec.
	 */
	char c;
	ssize_t n;
	while ((n = read(STDIN_FILENO, &c, 1)) != 0) {
		if (n < 0 && errno != EINTR)
			syscall_failed(op, "read");
		if (n == 1 && c == '\n')
			return;
	}
	res->ret = 1; /* stdin is at EOF */
}

static noinline void op_hold_forever(const struct op *op, struct result *res)
{
	(void)op;
	(void)res;
	pause(); /* no handlers are installed, so only a fatal signal ends this */
}

static noinline void op_exec(const struct op *op, struct result *res)
{
	/* A successful exec never returns to the caller, so print the line first. */
	print_op_line(op, res);
	execv(op->argv[0], op->argv);
	syscall_failed(op, "execv");
}

static noinline void op_report(const struct op *op, struct result *res)
{
	(void)op;
	(void)res;
	printf("{\"mapped\":%llu,\"touched_pages\":%llu,\"touched_bytes\":%llu,\"madvise\":",
	       totals.mapped, totals.touched_pages, totals.touched_bytes);
	print_advice_totals(&totals.madvise);
	fputs(",\"process_madvise\":", stdout);
	print_advice_totals(&totals.process_madvise);
	printf(",\"unmapped\":%llu}\n", totals.unmapped);
}

/* ---- parsing ------------------------------------------------------------- */

/* How the arguments after an operation's word are laid out. */
enum syntax {
	SYN_MAP,	 /* NAME SIZE [anon|shared|file PATH] [populate] [huge] */
	SYN_TOUCH,	 /* NAME OFF LEN [read|write] */
	SYN_RANGE,	 /* NAME OFF LEN */
	SYN_RANGE_ADVICE, /* NAME OFF LEN ADVICE_NUMBER */
	SYN_PROCESS_MADVISE, /* NAME OFF LEN ADVICE_NUMBER [keep|self] */
	SYN_FORK_TOUCH,	 /* NAME OFF LEN [SECS] */
	SYN_REMAP,	 /* NAME NEWSIZE [move] */
	SYN_BRK,	 /* DELTA */
	SYN_MALLOC,	 /* NAME SIZE */
	SYN_MFREE,	 /* NAME */
	SYN_SECONDS,	 /* SECS */
	SYN_NONE,
	SYN_EXEC, /* PATH ARGS... (takes the rest of the command line) */
};

static const struct {
	const char *word;
	enum syntax syntax;
	op_fn run;
} op_defs[] = {
	{"map", SYN_MAP, op_map},
	{"touch", SYN_TOUCH, op_touch},
	{"free", SYN_RANGE, op_free},
	{"dontneed", SYN_RANGE, op_dontneed},
	{"remove", SYN_RANGE, op_remove},
	{"pageout", SYN_RANGE, op_pageout},
	{"cold", SYN_RANGE, op_cold},
	{"willneed", SYN_RANGE, op_willneed},
	{"populate_read", SYN_RANGE, op_populate_read},
	{"populate_write", SYN_RANGE, op_populate_write},
	{"hugepage", SYN_RANGE, op_hugepage},
	{"nohugepage", SYN_RANGE, op_nohugepage},
	{"advise", SYN_RANGE_ADVICE, op_advise},
	{"process_madvise", SYN_PROCESS_MADVISE, op_process_madvise},
	{"unmap", SYN_RANGE, op_unmap},
	{"remap", SYN_REMAP, op_remap},
	{"brk", SYN_BRK, op_brk},
	{"malloc", SYN_MALLOC, op_malloc},
	{"mfree", SYN_MFREE, op_mfree},
	{"fork_touch", SYN_FORK_TOUCH, op_fork_touch},
	{"probe", SYN_RANGE, op_probe},
	{"hold", SYN_SECONDS, op_hold},
	{"wait", SYN_NONE, op_wait},
	{"hold_forever", SYN_NONE, op_hold_forever},
	{"exec", SYN_EXEC, op_exec},
	{"report", SYN_NONE, op_report},
};

/* Parses a byte count: decimal digits with an optional K, M or G (1024-based) suffix. */
static bool parse_size(const char *s, size_t *out)
{
	if (!isdigit((unsigned char)*s))
		return false;
	char *end;
	errno = 0;
	unsigned long long value = strtoull(s, &end, 10);
	if (errno != 0)
		return false;
	unsigned shift = 0;
	switch (*end) {
	case 'K': case 'k': shift = 10; end++; break;
	case 'M': case 'm': shift = 20; end++; break;
	case 'G': case 'g': shift = 30; end++; break;
	}
	if (*end != '\0' || value > (SIZE_MAX >> shift))
		return false;
	*out = (size_t)value << shift;
	return true;
}

static size_t expect_size(const struct op *op, const char *what, const char *arg)
{
	size_t value;
	if (!parse_size(arg, &value))
		script_error("op %d %s: bad %s '%s' (want bytes with optional K, M or G suffix)",
			     op->index, op->word, what, arg);
	return value;
}

static int find_region(const char *name)
{
	for (int i = 0; i < region_count; i++)
		if (strcmp(regions[i].name, name) == 0)
			return i;
	return -1;
}

/* Resolves NAME of an existing, usable region. */
static int expect_region(const struct op *op, const char *name)
{
	int i = find_region(name);
	if (i < 0)
		script_error("op %d %s: no region named '%s'", op->index, op->word, name);
	if (regions[i].freed)
		script_error("op %d %s: region '%s' was already freed with mfree", op->index,
			     op->word, name);
	return i;
}

static int define_region(const struct op *op, const char *name, size_t len, bool from_malloc)
{
	if (find_region(name) >= 0)
		script_error("op %d %s: region '%s' already exists", op->index, op->word, name);
	if (region_count == MAX_REGIONS)
		script_error("op %d %s: more than %d regions", op->index, op->word, MAX_REGIONS);
	if (len == 0)
		script_error("op %d %s: size must not be zero", op->index, op->word);
	regions[region_count] = (struct region){
		.name = name, .planned_len = len, .from_malloc = from_malloc};
	return region_count++;
}

/* Parses "NAME OFF LEN" and checks the range lies inside the region. */
static void parse_range(struct op *op, char **args)
{
	op->region = expect_region(op, args[0]);
	op->off = expect_size(op, "offset", args[1]);
	op->len = expect_size(op, "length", args[2]);
	size_t region_len = regions[op->region].planned_len;
	if (op->off > region_len || op->len > region_len - op->off)
		script_error("op %d %s: range %zu+%zu exceeds region '%s' of %zu bytes", op->index,
			     op->word, op->off, op->len, args[0], region_len);
}

static void expect_argc(const struct op *op, int argc, int min, int max)
{
	if (argc < min || argc > max)
		script_error("op %d %s: wrong number of arguments (%d)", op->index, op->word, argc);
}

static void parse_map_options(struct op *op, int argc, char **args)
{
	bool kind_given = false;
	for (int i = 0; i < argc; i++) {
		enum map_kind kind;
		if (strcmp(args[i], "populate") == 0) {
			op->populate = true;
			continue;
		} else if (strcmp(args[i], "nonblock") == 0) {
			op->nonblock = true;
			continue;
		} else if (strcmp(args[i], "locked") == 0) {
			op->locked = true;
			continue;
		} else if (strcmp(args[i], "huge") == 0) {
			op->huge = true;
			continue;
		} else if (strcmp(args[i], "anon") == 0) {
			kind = MAP_KIND_ANON;
		} else if (strcmp(args[i], "shared") == 0) {
			kind = MAP_KIND_SHARED;
		} else if (strcmp(args[i], "file") == 0) {
			if (i + 1 == argc)
				script_error("op %d map: 'file' needs a PATH", op->index);
			kind = MAP_KIND_FILE;
			op->path = args[++i];
		} else {
			script_error("op %d map: unknown option '%s'", op->index, args[i]);
		}
		if (kind_given)
			script_error("op %d map: more than one of anon, shared, file", op->index);
		kind_given = true;
		op->map_kind = kind;
	}
	/* Writable private file mappings cannot get transparent huge pages. */
	if (op->huge && op->map_kind == MAP_KIND_FILE)
		script_error("op %d map: 'huge' works only with anon and shared mappings", op->index);
}

static void parse_advice(struct op *op, const char *arg)
{
	char *end;
	errno = 0;
	long advice = strtol(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || advice < 0 || advice >= ADVICE_LIMIT)
		script_error("op %d %s: bad advice number '%s' (want 0 to %d)", op->index,
			     op->word, arg, ADVICE_LIMIT - 1);
	op->advice = (int)advice;
}

static void parse_seconds(struct op *op, const char *arg)
{
	char *end;
	op->seconds = strtod(arg, &end);
	if (end == arg || *end != '\0' || !(op->seconds >= 0) || op->seconds > 1e9)
		script_error("op %d %s: bad seconds '%s'", op->index, op->word, arg);
}

/* Parses one operation: args[0] is its word, argc counts the word too. */
static void parse_op(struct op *op, int argc, char **args)
{
	int def = -1;
	for (size_t i = 0; i < sizeof(op_defs) / sizeof(op_defs[0]); i++)
		if (strcmp(op_defs[i].word, args[0]) == 0)
			def = (int)i;
	if (def < 0)
		script_error("op %d: unknown operation '%s'", op->index, args[0]);
	op->word = op_defs[def].word;
	op->run = op_defs[def].run;
	op->region = -1;
	argc--;
	args++;

	switch (op_defs[def].syntax) {
	case SYN_MAP:
		if (argc < 2)
			script_error("op %d map: needs NAME and SIZE", op->index);
		op->len = expect_size(op, "size", args[1]);
		parse_map_options(op, argc - 2, args + 2);
		op->region = define_region(op, args[0], op->len, false);
		break;
	case SYN_TOUCH:
		expect_argc(op, argc, 3, 4);
		parse_range(op, args);
		if (argc == 4) {
			if (strcmp(args[3], "read") != 0 && strcmp(args[3], "write") != 0)
				script_error("op %d touch: mode must be read or write, not '%s'",
					     op->index, args[3]);
			op->read = strcmp(args[3], "read") == 0;
		}
		break;
	case SYN_RANGE:
		expect_argc(op, argc, 3, 3);
		parse_range(op, args);
		break;
	case SYN_RANGE_ADVICE:
		expect_argc(op, argc, 4, 4);
		parse_range(op, args);
		parse_advice(op, args[3]);
		break;
	case SYN_PROCESS_MADVISE:
		expect_argc(op, argc, 4, 5);
		parse_range(op, args);
		parse_advice(op, args[3]);
		if (argc == 5) {
			if (strcmp(args[4], "keep") == 0)
				op->pidfd = PIDFD_KEPT;
			else if (strcmp(args[4], "self") == 0)
				op->pidfd = PIDFD_SELF_FD;
			else
				script_error("op %d process_madvise: pidfd must be keep or self, not '%s'",
					     op->index, args[4]);
		}
		break;
	case SYN_FORK_TOUCH:
		expect_argc(op, argc, 3, 4);
		parse_range(op, args);
		if (argc == 4)
			parse_seconds(op, args[3]);
		break;
	case SYN_REMAP:
		expect_argc(op, argc, 2, 3);
		op->region = expect_region(op, args[0]);
		op->len = expect_size(op, "size", args[1]);
		if (op->len == 0)
			script_error("op %d remap: size must not be zero", op->index);
		if (argc == 3 && strcmp(args[2], "move") != 0)
			script_error("op %d remap: unknown option '%s'", op->index, args[2]);
		op->move = argc == 3;
		regions[op->region].planned_len = op->len;
		break;
	case SYN_BRK: {
		expect_argc(op, argc, 1, 1);
		const char *digits = args[0];
		bool shrink = *digits == '-';
		if (*digits == '-' || *digits == '+')
			digits++;
		size_t len = expect_size(op, "delta", digits);
		if (len > INTPTR_MAX)
			script_error("op %d brk: delta '%s' too large", op->index, args[0]);
		op->delta = shrink ? -(long long)len : (long long)len;
		break;
	}
	case SYN_MALLOC:
		expect_argc(op, argc, 2, 2);
		op->len = expect_size(op, "size", args[1]);
		op->region = define_region(op, args[0], op->len, true);
		break;
	case SYN_MFREE:
		expect_argc(op, argc, 1, 1);
		op->region = expect_region(op, args[0]);
		if (!regions[op->region].from_malloc)
			script_error("op %d mfree: '%s' did not come from malloc", op->index, args[0]);
		regions[op->region].freed = true;
		break;
	case SYN_SECONDS:
		expect_argc(op, argc, 1, 1);
		parse_seconds(op, args[0]);
		break;
	case SYN_NONE:
		expect_argc(op, argc, 0, 0);
		break;
	case SYN_EXEC:
		if (argc < 1)
			script_error("op %d exec: needs a PATH", op->index);
		op->argv = args;
		break;
	}
}

/*
 * Splits argv at lone ";" arguments and parses every operation.  Empty
 * operations (as from a trailing ";") are skipped.  `exec` takes all
 * remaining arguments, separators included, as the new program's arguments.
 */
static int parse_script(int argc, char **argv, struct op *ops)
{
	int count = 0;
	int i = 1;
	while (i < argc) {
		int end = i;
		while (end < argc && strcmp(argv[end], ";") != 0)
			end++;
		if (end > i) {
			struct op *op = &ops[count];
			op->index = count;
			if (strcmp(argv[i], "exec") == 0)
				end = argc;
			parse_op(op, end - i, &argv[i]);
			count++;
		}
		i = end + 1;
	}
	return count;
}

int main(int argc, char **argv)
{
	/* Tests read the op lines while the script runs, so never hold output back. */
	setvbuf(stdout, NULL, _IOLBF, 0);

	/* A script has at most one operation per argument. */
	struct op *ops = calloc((size_t)argc, sizeof(*ops));
	if (ops == NULL) {
		perror("memops: calloc");
		return 3;
	}
	int count = parse_script(argc, argv, ops);

	printf("pid %d\n", (int)getpid());
	for (int i = 0; i < count; i++) {
		struct result res = {0};
		ops[i].run(&ops[i], &res);
		print_op_line(&ops[i], &res);
	}
	return 0;
}
