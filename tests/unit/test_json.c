/* The one JSON string writer of every --json output (src/json.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/json.h"

static void expect(const char *in, size_t len, const char *want)
{
	char *out = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&out, &n);

	assert_non_null(f);
	json_string(f, in, len);
	fclose(f);
	assert_string_equal(out, want);
	free(out);
}

#define EXPECT(in, want) expect(in, sizeof(in) - 1, want)

static void test_plain_and_escapes(void **state)
{
	(void)state;
	EXPECT("API_KEY", "\"API_KEY\"");
	EXPECT("a\"b\\c", "\"a\\\"b\\\\c\"");
	EXPECT("tab\there\nnl\x7f", "\"tab\\u0009here\\u000anl\\u007f\"");
	EXPECT("", "\"\"");
}

/* A UTF-8 process name or description comes out as itself, not as one
 * escape per byte. */
static void test_utf8_passes_through(void **state)
{
	(void)state;
	EXPECT("caf\xc3\xa9", "\"caf\xc3\xa9\"");
	EXPECT("\xe2\x82\xac 5", "\"\xe2\x82\xac 5\"");
	EXPECT("\xf0\x9f\x94\x91", "\"\xf0\x9f\x94\x91\"");
}

/* Bytes that are not UTF-8 still give valid JSON: one U+FFFD each. */
static void test_invalid_bytes_replaced(void **state)
{
	(void)state;
	EXPECT("a\xff" "b", "\"a\\ufffdb\"");
	EXPECT("\xc3", "\"\\ufffd\"");			/* cut short */
	EXPECT("\xc0\xaf", "\"\\ufffd\\ufffd\"");	/* overlong */
	EXPECT("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");	/* a surrogate */
	EXPECT("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");	/* past U+10FFFF */
}

static void test_embedded_nul(void **state)
{
	(void)state;
	expect("a\0b", 3, "\"a\\u0000b\"");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_and_escapes),
		cmocka_unit_test(test_utf8_passes_through),
		cmocka_unit_test(test_invalid_bytes_replaced),
		cmocka_unit_test(test_embedded_nul),
	};

	return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
