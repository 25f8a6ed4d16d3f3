/* Small buffers from slabs (crypto/secmem.c): a slot comes back wiped,
 * accounting returns to where it was, each slot sits between guard pages,
 * freed slabs are unmapped, and a forked child never gets a slot locked
 * only in its parent. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../crypto/secmem.h"

static int group_setup(void **state)
{
	return secmem_init();
}

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void test_reuse_is_wiped(void **state)
{
	size_t before = secmem_locked_bytes();
	struct secbuf *a = NULL, *b = NULL;
	unsigned char *first;
	size_t cap;

	assert_int_equal(secbuf_new(&a, 40), 0);
	assert_int_equal(secbuf_set(a, "sk-live-0123456789", 18), 0);
	memset(a->data, 0x5a, a->cap);		/* the whole capacity is ours */
	first = a->data;
	cap = a->cap;
	secbuf_free(a);
	assert_int_equal(secmem_locked_bytes(), before);

	assert_int_equal(secbuf_new(&b, 12), 0);
	assert_ptr_equal(b->data, first);	/* the same region, reused... */
	assert_int_equal(b->cap, cap);
	assert_true(all_zero(b->data, b->cap));	/* ...with nothing left in it */
	assert_int_equal(b->len, 0);
	secbuf_free(b);
	assert_int_equal(secmem_locked_bytes(), before);
}

/* Many at once, then all freed: accounting is exact and every buffer
 * holds its own bytes. */
static void test_many_small(void **state)
{
	size_t before = secmem_locked_bytes();
	struct secbuf *b[100];

	for (int round = 0; round < 3; round++) {
		for (size_t i = 0; i < 100; i++) {
			assert_int_equal(secbuf_new(&b[i], 40), 0);
			assert_int_equal(secbuf_set(b[i], &i, sizeof(i)), 0);
		}
		for (size_t i = 0; i < 100; i++) {
			assert_memory_equal(b[i]->data, &i, sizeof(i));
			secbuf_free(b[i]);
		}
		assert_int_equal(secmem_locked_bytes(), before);
	}
}

/* Growing out of a pooled region keeps the bytes and returns the region. */
static void test_grow_from_small(void **state)
{
	struct secbuf *b = NULL;
	unsigned char big[10000];

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 13 + 7);
	assert_int_equal(secbuf_new(&b, 0), 0);
	assert_int_equal(secbuf_set(b, big, 100), 0);
	assert_int_equal(secbuf_set(b, big, sizeof(big)), 0);
	assert_memory_equal(b->data, big, sizeof(big));
	secbuf_free(b);
}

/* Bytes of this process's memory that are locked (VmLck), or -1. */
static long locked_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "re");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmLck: %ld kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}

/* Memory locks are not inherited: the parent's pooled regions are unlocked
 * copies in the child, so the child must lock a region of its own. */
static void test_fork_drops_pool(void **state)
{
	struct secbuf *b = NULL;
	int status;
	pid_t pid;

#ifdef __SANITIZE_ADDRESS__
	skip();		/* ASan's mlock() does nothing */
#endif
	assert_int_equal(secbuf_new(&b, 40), 0);
	secbuf_free(b);			/* now pooled in the parent */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		long before = locked_kib();

		if (secbuf_new(&b, 40))
			_exit(2);
		if (before < 0 || locked_kib() <= before)
			_exit(3);	/* handed an unlocked region */
		secbuf_free(b);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* How a child that touches one byte at p ends: its signal, or 0. */
static int touch_in_child(volatile unsigned char *p)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGSEGV, SIG_DFL);
		*p = 1;
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

/* One byte past a small buffer's capacity, or before its page, is a guard
 * page: an overrun faults instead of reaching the next secret. */
static void test_slots_are_guarded(void **state)
{
	struct secbuf *a = NULL, *b = NULL;
	long page = sysconf(_SC_PAGESIZE);

	assert_int_equal(secbuf_new(&a, 40), 0);
	assert_int_equal(secbuf_new(&b, 40), 0);
	assert_int_equal(touch_in_child(a->data), 0);
	assert_int_equal(touch_in_child(a->data + a->cap - 1), 0);
	assert_int_equal(touch_in_child(a->data + a->cap), SIGSEGV);
	assert_int_equal(touch_in_child(b->data + b->cap), SIGSEGV);
	/* Before the buffer: the rest of its page, then a guard page. */
	assert_int_equal((uintptr_t)(a->data + a->cap) % (uintptr_t)page, 0);
	assert_int_equal(touch_in_child(a->data + a->cap - page - 1), SIGSEGV);
	/* Two buffers never share a page. */
	assert_true((uintptr_t)a->data / (uintptr_t)page != (uintptr_t)b->data / (uintptr_t)page);
	secbuf_free(a);
	secbuf_free(b);
}

/* After a burst, the slabs whose slots all came back are unmapped: what
 * stays locked is a few slabs' worth, not the burst's. */
static void test_burst_is_given_back(void **state)
{
	struct secbuf *b[200];
	long before, during, after;

#ifdef __SANITIZE_ADDRESS__
	skip();		/* ASan's mlock() does nothing */
#endif
	before = locked_kib();
	for (size_t i = 0; i < 200; i++)
		assert_int_equal(secbuf_new(&b[i], 40), 0);
	during = locked_kib();
	for (size_t i = 0; i < 200; i++)
		secbuf_free(b[i]);
	after = locked_kib();
	assert_true(before >= 0);
	assert_true(during >= 200 * 4);		/* each slot in use is locked */
	assert_true(after - before <= 32 * 4);		/* 16 kept, and a slab's rounding */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reuse_is_wiped),
		cmocka_unit_test(test_many_small),
		cmocka_unit_test(test_grow_from_small),
		cmocka_unit_test(test_fork_drops_pool),
		cmocka_unit_test(test_slots_are_guarded),
		cmocka_unit_test(test_burst_is_given_back),
	};

	return cmocka_run_group_tests(tests, group_setup, NULL);
}
