/* Reuse of small locked regions (crypto/secmem.c): a region comes back
 * wiped, accounting returns to where it was, and a forked child never gets
 * a region locked only in its parent. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reuse_is_wiped),
		cmocka_unit_test(test_many_small),
		cmocka_unit_test(test_grow_from_small),
		cmocka_unit_test(test_fork_drops_pool),
	};

	return cmocka_run_group_tests(tests, group_setup, NULL);
}
