/* Key and instance names (fs/name.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../fs/name.h"

static void test_valid(void **state)
{
	static const char *const ok[] = {
		"a", "Z", "0", "_", "-", "OPENAI_API_KEY", "db.password", "a-b_c.d",
		"...", ".a", "a.", "..a", "-rf", "0123456789",
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-",
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		if (!name_valid(ok[i]))
			fail_msg("'%s' should be valid", ok[i]);
		assert_true(name_valid_len(ok[i], strlen(ok[i])));
	}
}

static void test_invalid(void **state)
{
	static const char *const bad[] = {
		"", ".", "..", "a b", " a", "a ", "a/b", "/", "a:b", "a\tb", "a\nb", "a\rb",
		"\x01", "a\x1f", "a\x7f", "caf\xc3\xa9", "\x80", "\xff", "a*", "a?", "$HOME",
		"a\\b", "'a'", "\"a\"", "a;b", "a=b", "a,b", "a@b", "~a",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (name_valid(bad[i]))
			fail_msg("bad name #%zu should be refused", i);
		assert_false(name_valid_len(bad[i], strlen(bad[i])));
	}
	assert_false(name_valid(NULL));
}

static void test_every_byte(void **state)
{
	char s[2] = { 0, 0 };

	for (int c = 1; c < 256; c++) {
		bool want = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			    (c >= '0' && c <= '9') || c == '_' || c == '-';

		s[0] = (char)c;
		if (name_valid(s) != want)
			fail_msg("byte 0x%02x: want %d", c, want);
		s[0] = 'x';
		s[1] = (char)c;
		if (name_valid_len(s, 2) != (want || c == '.'))
			fail_msg("byte 0x%02x after x: want %d", c, want || c == '.');
		s[1] = 0;
	}
}

static void test_length(void **state)
{
	char s[NAME_MAX_LEN + 2];

	memset(s, 'k', sizeof(s));
	s[NAME_MAX_LEN] = '\0';
	assert_int_equal(strlen(s), 255);
	assert_true(name_valid(s));
	assert_true(name_valid_len(s, 255));
	assert_true(name_valid_len(s, 1));
	s[NAME_MAX_LEN] = 'k';
	s[NAME_MAX_LEN + 1] = '\0';
	assert_false(name_valid(s));
	assert_false(name_valid_len(s, 256));
	assert_false(name_valid_len(s, 0));
	assert_false(name_valid_len("a", 0));
}

static void test_embedded_nul(void **state)
{
	assert_false(name_valid_len("a\0b", 3));
	assert_false(name_valid_len("\0", 1));
	assert_false(name_valid_len("ab\0", 3));
	/* Only the given length counts. */
	assert_true(name_valid_len("a\0b", 1));
	assert_true(name_valid_len("ab/", 2));
	assert_false(name_valid_len("ab/", 3));
	assert_false(name_valid_len("..x", 2));
	assert_true(name_valid_len("..x", 3));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_every_byte),
		cmocka_unit_test(test_length),
		cmocka_unit_test(test_embedded_nul),
	};

	return cmocka_run_group_tests_name("name", tests, NULL, NULL);
}
