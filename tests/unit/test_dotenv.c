/* The dotenv parser (src/dotenv.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../crypto/secmem.h"
#include "../../src/dotenv.h"

struct problems {
	char text[4096];
	int n;
};

static void collect(void *ctx, unsigned line, const char *msg)
{
	struct problems *p = ctx;
	size_t used = strlen(p->text);

	snprintf(p->text + used, sizeof(p->text) - used, "%u: %s\n", line, msg);
	p->n++;
}

static int parse(const char *text, struct dotenv *d, struct problems *p)
{
	memset(p, 0, sizeof(*p));
	return dotenv_parse((const unsigned char *)text, strlen(text), d, collect, p);
}

static void assert_entry(const struct dotenv *d, size_t i, const char *name, unsigned line,
			 const char *value, size_t len)
{
	assert_true(i < d->n);
	assert_string_equal(d->e[i].name, name);
	assert_int_equal(d->e[i].line, line);
	assert_int_equal(d->e[i].value->len, len);
	assert_memory_equal(d->e[i].value->data, value, len);
}

static void test_forms(void **state)
{
	static const char text[] =
		"\xEF\xBB\xBF# comment\n"					/* 1 */
		"\n"
		"   \t\n"
		"export A=plain  \n"
		"B = spaced out # comment\n"					/* 5 */
		"C=x#not-a-comment\n"
		"D='single \\n $X \" # kept'  # comment\n"
		"E=\"dq \\n\\t\\\\\\\"\\$ \\q\"\n"
		"F=\n"
		"G=\"multi\n"							/* 10 */
		"line\"\n"
		"H='a\r\nb'\r\n"
		"I=a=b\n"
		"exportJ=1\n"							/* 15 */
		"K = 'x'";
	struct problems p;
	struct dotenv d;

	(void)state;
	assert_int_equal(parse(text, &d, &p), 0);
	assert_string_equal(p.text, "");
	assert_int_equal(d.n, 11);
	assert_entry(&d, 0, "A", 4, "plain", 5);
	assert_entry(&d, 1, "B", 5, "spaced out", 10);
	assert_entry(&d, 2, "C", 6, "x#not-a-comment", 15);
	assert_entry(&d, 3, "D", 7, "single \\n $X \" # kept", 21);
	assert_entry(&d, 4, "E", 8, "dq \n\t\\\"$ \\q", 11);
	assert_entry(&d, 5, "F", 9, "", 0);
	assert_entry(&d, 6, "G", 10, "multi\nline", 10);
	assert_entry(&d, 7, "H", 12, "a\nb", 3);
	assert_entry(&d, 8, "I", 14, "a=b", 3);
	assert_entry(&d, 9, "exportJ", 15, "1", 1);
	assert_entry(&d, 10, "K", 16, "x", 1);
	dotenv_free(&d);
	assert_int_equal(d.n, 0);
}

static void test_problems(void **state)
{
	static const char text[] =
		"GOOD=1\n"			/* 1 */
		"no equals here\n"
		"bad name=2\n"
		"GOOD=again\n"
		"=empty name\n"			/* 5 */
		"Q=\"x\" tail\n"
		"R='open\n"
		"S=never read\n";
	struct problems p;
	struct dotenv d;

	(void)state;
	assert_int_equal(parse(text, &d, &p), 6);
	assert_string_equal(p.text,
		"2: no '=' (want NAME=VALUE)\n"
		"3: invalid key name 'bad name' (want 1-255 of A-Z a-z 0-9 . _ -)\n"
		"4: GOOD is set again (first on line 1)\n"
		"5: invalid key name '' (want 1-255 of A-Z a-z 0-9 . _ -)\n"
		"6: unexpected text after the closing quote\n"
		"7: R: unterminated ' quote (the rest of the file is not read)\n");
	/* What was good is there for the caller, who imports nothing anyway. */
	assert_int_equal(d.n, 1);
	assert_entry(&d, 0, "GOOD", 1, "1", 1);
	dotenv_free(&d);
}

/* No value ever reaches a message. */
static void test_problems_never_carry_values(void **state)
{
	static const char text[] = "sk-live-SECRET\nA=\"sk-live-SECRET\" x\nB='sk-live-SECRET";
	struct problems p;
	struct dotenv d;

	(void)state;
	assert_int_equal(parse(text, &d, &p), 3);
	assert_null(strstr(p.text, "SECRET"));
	dotenv_free(&d);
}

static void test_empty_and_comments_only(void **state)
{
	struct problems p;
	struct dotenv d;

	(void)state;
	assert_int_equal(parse("", &d, &p), 0);
	assert_int_equal(d.n, 0);
	dotenv_free(&d);
	assert_int_equal(parse("# only\n\n  # this\n", &d, &p), 0);
	assert_int_equal(d.n, 0);
	dotenv_free(&d);
}

static void test_long_name(void **state)
{
	char text[600];
	struct problems p;
	struct dotenv d;

	(void)state;
	memset(text, 'N', 255);
	snprintf(text + 255, sizeof(text) - 255, "=ok\n");
	assert_int_equal(parse(text, &d, &p), 0);
	assert_int_equal(strlen(d.e[0].name), 255);
	dotenv_free(&d);
	memset(text, 'N', 256);
	snprintf(text + 256, sizeof(text) - 256, "=no\n");
	assert_int_equal(parse(text, &d, &p), 1);
	assert_int_equal(d.n, 0);
	dotenv_free(&d);
}

static int setup(void **state)
{
	(void)state;
	return secmem_init();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_forms),
		cmocka_unit_test(test_problems),
		cmocka_unit_test(test_problems_never_carry_values),
		cmocka_unit_test(test_empty_and_comments_only),
		cmocka_unit_test(test_long_name),
	};

	return cmocka_run_group_tests_name("dotenv", tests, setup, NULL);
}
