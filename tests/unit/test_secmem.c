/* Locked memory for keys and plaintext (crypto/secmem.h). */
#include <errno.h>
#include <linux/capability.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../crypto/secmem.h"

static size_t page;

static int group_setup(void **state)
{
	page = (size_t)sysconf(_SC_PAGESIZE);
	return secmem_init();
}

static int reset(void **state)
{
	secmem_set_budget(0);
	secmem_set_shared_limit(0);
	secmem_use(NULL);
	secmem_allow_unlocked(false);
	return 0;
}

static void test_new_set_free(void **state)
{
	size_t before = secmem_locked_bytes();
	struct secbuf *b = NULL;

	assert_int_equal(secbuf_new(&b, 64), 0);
	assert_non_null(b);
	assert_non_null(b->data);
	assert_int_equal(b->len, 0);
	assert_true(b->cap >= 64);
	assert_true(secmem_locked_bytes() > before);

	assert_int_equal(secbuf_set(b, "sk-test-123", 11), 0);
	assert_int_equal(b->len, 11);
	assert_memory_equal(b->data, "sk-test-123", 11);

	/* A shorter value leaves nothing of the longer one behind. */
	assert_int_equal(secbuf_set(b, "ab", 2), 0);
	assert_int_equal(b->len, 2);
	assert_memory_equal(b->data, "ab", 2);
	for (size_t i = 2; i < 11; i++)
		assert_int_equal(b->data[i], 0);

	assert_int_equal(secbuf_set(b, NULL, 0), 0);
	assert_int_equal(b->len, 0);
	assert_int_equal(b->data[0], 0);
	assert_int_equal(b->data[1], 0);

	secbuf_free(b);
	assert_int_equal(secmem_locked_bytes(), before);
	secbuf_free(NULL);
}

static void test_zero_cap(void **state)
{
	size_t before = secmem_locked_bytes();
	struct secbuf *b = NULL;

	assert_int_equal(secbuf_new(&b, 0), 0);
	assert_non_null(b);
	assert_non_null(b->data);
	assert_int_equal(b->len, 0);
	assert_int_equal(secbuf_set(b, "x", 1), 0);
	assert_memory_equal(b->data, "x", 1);
	secbuf_free(b);
	assert_int_equal(secmem_locked_bytes(), before);
}

static void test_reserve_grows_and_keeps(void **state)
{
	size_t before = secmem_locked_bytes();
	struct secbuf *b = NULL;
	unsigned char big[3 * 4096 + 17];

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 7 + 1);
	assert_int_equal(secbuf_new(&b, 16), 0);
	assert_int_equal(secbuf_set(b, "0123456789", 10), 0);
	assert_int_equal(secbuf_reserve(b, 8), 0);
	assert_int_equal(b->len, 10);
	assert_int_equal(secbuf_reserve(b, 10000), 0);
	assert_true(b->cap >= 10000);
	assert_int_equal(b->len, 10);
	assert_memory_equal(b->data, "0123456789", 10);
	/* The whole capacity is usable (guard pages would trap otherwise). */
	memset(b->data, 0xa5, b->cap);

	assert_int_equal(secbuf_set(b, big, sizeof(big)), 0);
	assert_true(b->cap >= sizeof(big));
	assert_int_equal(b->len, sizeof(big));
	assert_memory_equal(b->data, big, sizeof(big));
	secbuf_free(b);
	assert_int_equal(secmem_locked_bytes(), before);
}

static void test_budget(void **state)
{
	size_t before = secmem_locked_bytes();
	struct secbuf *a = NULL, *b = NULL, *c = NULL;
	size_t with_a;

	secmem_set_budget(before + 2 * page);
	assert_int_equal(secbuf_new(&a, page), 0);
	with_a = secmem_locked_bytes();
	assert_true(with_a >= before + page);
	assert_true(with_a <= before + 2 * page);

	/* Over the budget: refused, and nothing stays charged. */
	b = (struct secbuf *)&b;
	assert_int_equal(secbuf_new(&b, 2 * page), -ENOMEM);
	assert_null(b);
	assert_int_equal(secbuf_new(&b, 64 * page), -ENOMEM);
	assert_null(b);
	assert_int_equal(secmem_locked_bytes(), with_a);

	/* Growing past it fails too, and keeps the buffer as it was. */
	assert_int_equal(secbuf_set(a, "keep", 4), 0);
	assert_int_equal(secbuf_reserve(a, 8 * page), -ENOMEM);
	assert_int_equal(a->len, 4);
	assert_true(a->cap < 8 * page);
	assert_memory_equal(a->data, "keep", 4);
	assert_int_equal(secmem_locked_bytes(), with_a);

	/* What remains of the budget can still be used. */
	assert_int_equal(secbuf_new(&c, page), 0);
	assert_non_null(c);
	assert_int_equal(secbuf_new(&b, 1), -ENOMEM);

	secbuf_free(a);
	assert_int_equal(secbuf_new(&b, 1), 0);
	secbuf_free(b);
	secbuf_free(c);
	assert_int_equal(secmem_locked_bytes(), before);

	secmem_set_budget(0);
	assert_int_equal(secbuf_new(&a, 64 * page), 0);
	secbuf_free(a);
	assert_int_equal(secmem_locked_bytes(), before);
}

/* Accounts: each has its limit; those without reserve share a part of the
 * budget; a buffer stays charged to the account it was made under, also
 * when it grows or is freed with another account current. */
static void test_accounts(void **state)
{
	struct secmem_account alice = { .limit = 2 * page }, bob = { 0 };
	struct secmem_account root = { .reserve = true };
	struct secbuf *a1 = NULL, *a2 = NULL, *b1 = NULL, *b2 = NULL, *r1 = NULL, *k = NULL;
	size_t before = secmem_locked_bytes();

	secmem_set_budget(before + 5 * page);
	secmem_set_shared_limit(3 * page);

	assert_null(secmem_use(&alice));
	assert_int_equal(secbuf_new(&a1, 1), 0);
	assert_int_equal(secbuf_new(&a2, 1), 0);
	assert_int_equal(secbuf_reserve(a2, 2 * page), -ENOMEM);	/* her limit */
	assert_int_equal(secbuf_new(&k, 1), -ENOMEM);
	assert_int_equal(atomic_load(&alice.bytes), 2 * page);

	assert_ptr_equal(secmem_use(&bob), &alice);
	assert_int_equal(secbuf_new(&b1, 1), 0);
	assert_int_equal(secbuf_new(&b2, 1), -ENOMEM);		/* shared part full */
	assert_int_equal(atomic_load(&bob.bytes), page);

	secmem_use(&root);
	assert_int_equal(secbuf_new(&r1, 1), 0);		/* the reserve */
	secmem_use(NULL);
	assert_int_equal(secbuf_new(&k, 1), 0);			/* nobody's */
	assert_int_equal(secbuf_new(&b2, 1), -ENOMEM);		/* the budget */

	/* Freed under bob, alice's buffer gives back to alice. */
	secmem_use(&bob);
	secbuf_free(a1);
	assert_int_equal(atomic_load(&alice.bytes), page);
	assert_int_equal(atomic_load(&bob.bytes), page);
	assert_int_equal(secbuf_new(&b2, 1), 0);
	secmem_use(NULL);
	secbuf_free(a2);
	secbuf_free(b1);
	secbuf_free(b2);
	secbuf_free(r1);
	secbuf_free(k);
	assert_int_equal(atomic_load(&alice.bytes), 0);
	assert_int_equal(atomic_load(&bob.bytes), 0);
	assert_int_equal(atomic_load(&root.bytes), 0);
	assert_int_equal(secmem_locked_bytes(), before);
}

static void test_many(void **state)
{
	size_t before = secmem_locked_bytes();
	struct secbuf *b[64];

	for (size_t i = 0; i < 64; i++) {
		assert_int_equal(secbuf_new(&b[i], 100 + i), 0);
		assert_int_equal(secbuf_set(b[i], &i, sizeof(i)), 0);
	}
	for (size_t i = 0; i < 64; i++) {
		assert_memory_equal(b[i]->data, &i, sizeof(i));
		secbuf_free(b[i]);
	}
	assert_int_equal(secmem_locked_bytes(), before);
}

/* Runs fn in a child that must exit 0 within 5 seconds. */
static void in_child(void (*fn)(void))
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(5);
		fn();
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status))
		fail_msg("child killed by signal %d", WTERMSIG(status));
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void huge_reserve(void)
{
	struct secbuf *b = NULL;

	if (secbuf_new(&b, 16))
		_exit(2);
	if (secbuf_reserve(b, SIZE_MAX) != -ENOMEM)
		_exit(3);
	if (secbuf_reserve(b, SIZE_MAX / 2 + 2) != -ENOMEM)
		_exit(4);
	secbuf_free(b);
	if (secbuf_new(&b, SIZE_MAX) != -ENOMEM || b)
		_exit(5);
}

/* An impossible size fails cleanly instead of looping or crashing. */
static void test_huge(void **state)
{
	in_child(huge_reserve);
}

static int drop_ipc_lock(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &h, d))
		return -1;
	d[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
	d[CAP_IPC_LOCK / 32].permitted &= ~(1u << (CAP_IPC_LOCK % 32));
	return (int)syscall(SYS_capset, &h, d);
}

static void unlockable(void)
{
	struct rlimit rl = { 0, 0 };
	struct secbuf *b = NULL;

	if (drop_ipc_lock() || setrlimit(RLIMIT_MEMLOCK, &rl))
		_exit(2);
	/* Memory that could not be locked is refused... */
	if (secbuf_new(&b, 64) != -ENOMEM || b)
		_exit(3);
	if (secmem_locked_bytes() != 0)
		_exit(4);
	/* ...unless the configuration allows it. */
	secmem_allow_unlocked(true);
	if (secbuf_new(&b, 64) || !b || secbuf_set(b, "v", 1))
		_exit(5);
	secbuf_free(b);
	secmem_allow_unlocked(false);
	if (secbuf_new(&b, 64) != -ENOMEM)
		_exit(6);
}

/* sodium_malloc quietly hands out unlocked memory when mlock fails. */
static void test_lock_failure(void **state)
{
#ifdef __SANITIZE_ADDRESS__
	skip();		/* ASan's mlock() does nothing and reports success */
#endif
	if (secmem_locked_bytes() != 0)
		skip();
	in_child(unlockable);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_new_set_free, reset),
		cmocka_unit_test_setup(test_zero_cap, reset),
		cmocka_unit_test_setup(test_reserve_grows_and_keeps, reset),
		cmocka_unit_test_setup(test_budget, reset),
		cmocka_unit_test_setup(test_accounts, reset),
		cmocka_unit_test_setup(test_many, reset),
		cmocka_unit_test_setup(test_huge, reset),
		cmocka_unit_test_setup(test_lock_failure, reset),
	};

	return cmocka_run_group_tests_name("secmem", tests, group_setup, NULL);
}
