/* Growing arrays (fs/array.h): what the history and rotation walks fill. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "../../fs/array.h"

static void test_grows_and_keeps(void **state)
{
	uint64_t *v = NULL, *p;
	size_t n = 0, cap = 0;

	for (uint64_t i = 0; i < 1000; i++) {
		p = array_room(v, n, &cap, sizeof(*v));
		assert_non_null(p);
		v = p;
		v[n++] = i * 3;
		assert_true(n <= cap);
	}
	for (size_t i = 0; i < n; i++)
		assert_int_equal(v[i], i * 3);
	assert_int_equal(cap, 1024);
	free(v);
}

/* Out of memory (here: a size that overflows): NULL, the array untouched. */
static void test_overflow_leaves_array(void **state)
{
	size_t cap = 0, n = 0;
	char *v = array_room(NULL, n, &cap, 1);

	assert_non_null(v);
	v[n++] = 'x';
	cap = n;
	assert_null(array_room(v, n, &cap, SIZE_MAX / 2 + 1));
	assert_int_equal(cap, 1);
	assert_int_equal(v[0], 'x');
	free(v);
}

static void test_i64_list(void **state)
{
	struct array_i64 a = { 0 };

	for (int64_t i = 0; i < 100; i++)
		assert_int_equal(array_i64_add(&a, INT64_MAX - i), 0);
	assert_int_equal(a.n, 100);
	assert_true(a.v[0] == INT64_MAX && a.v[99] == INT64_MAX - 99);
	free(a.v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_grows_and_keeps),
		cmocka_unit_test(test_overflow_leaves_array),
		cmocka_unit_test(test_i64_list),
	};

	return cmocka_run_group_tests_name("array", tests, NULL, NULL);
}
