/* The times --expires and user.vaultfs.expires take (fs/expiry.h), and how
 * a limit is told. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../fs/expiry.h"

#define S 1000000000LL
#define NOW (1764460800LL * S)	/* 2025-11-30T00:00:00Z */

static int64_t parse(const char *s)
{
	int64_t out = -1;

	if (expiry_parse(s, strlen(s), NOW, &out) < 0)
		fail_msg("'%s' should parse", s);
	return out;
}

static void test_forms(void **state)
{
	assert_int_equal(parse("2026-12-31"), 1798675200LL * S);
	assert_int_equal(parse("2026-12-31T23:59:59Z"), 1798761599LL * S);
	assert_int_equal(parse("2026-12-31T23:59Z"), 1798761540LL * S);
	assert_int_equal(parse("@1000"), 1000 * S);
	assert_int_equal(parse("2028-02-29"), 1835395200LL * S);
	assert_int_equal(parse("90m"), NOW + 5400 * S);
	assert_int_equal(parse("12h"), NOW + 12 * 3600 * S);
	assert_int_equal(parse("7d"), NOW + 7 * 86400 * S);
	assert_int_equal(parse("2w"), NOW + 14 * 86400 * S);
	assert_int_equal(parse("1d12h"), NOW + 36 * 3600 * S);
	assert_int_equal(parse("30s"), NOW + 30 * S);
}

static void test_refused(void **state)
{
	static const char *const bad[] = {
		"", "tomorrow", "-5d", "5", "5x", "d", "0d", "1d-2h", "2026-13-01", "2026-00-10",
		"2026-01-32", "2026-02-31", "2026-04-31", "2026-1-01", "2026-01-01T25:00Z", "2026-01-01T10:00",
		"2026-01-01 10:00Z", "2026-01-01T10:00Z ", "1969-12-31", "@", "@-1", "@1e3",
		"99999999999999999999d", "200000w", "12H", " 7d",
	};
	int64_t out;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (expiry_parse(bad[i], strlen(bad[i]), NOW, &out) == 0)
			fail_msg("'%s' should be refused", bad[i]);
}

static void test_spent_and_told(void **state)
{
	struct expiry e = { .version = 3, .expires_ns = NOW + S, .max_reads = 3, .reads = 1 };
	char buf[96];

	assert_false(expiry_spent(&e, NOW));
	assert_true(expiry_spent(&e, NOW + S));
	e.reads = 3;
	assert_true(expiry_spent(&e, NOW));
	expiry_describe(&e, buf, sizeof(buf));
	assert_string_equal(buf, "expires 2025-11-30T00:00:01Z, 3 of 3 reads");
	e = (struct expiry){ .max_reads = 1 };
	assert_false(expiry_spent(&e, NOW));
	expiry_describe(&e, buf, sizeof(buf));
	assert_string_equal(buf, "0 of 1 reads");
	e = (struct expiry){ 0 };
	assert_false(expiry_spent(&e, INT64_MAX));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_forms),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_spent_and_told),
	};

	return cmocka_run_group_tests_name("expiry", tests, NULL, NULL);
}
