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
	return dotenv_parse((const unsigned char *)text, strlen(text), 0, d, collect, p);
}

static int parse_any(const char *text, struct dotenv *d, struct problems *p)
{
	memset(p, 0, sizeof(*p));
	return dotenv_parse((const unsigned char *)text, strlen(text), DOTENV_ANY_NAME, d,
			    collect, p);
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
		"3: not a variable name (want a letter or _, then letters, digits, _ . -; "
		"at most 128)\n"
		"4: the name is set again (first on line 1)\n"
		"5: not a variable name (want a letter or _, then letters, digits, _ . -; "
		"at most 128)\n"
		"6: unexpected text after the closing quote\n"
		"7: unterminated ' quote (the rest of the file is not read)\n");
	/* What was good is there for the caller, who imports nothing anyway. */
	assert_int_equal(d.n, 1);
	assert_entry(&d, 0, "GOOD", 1, "1", 1);
	dotenv_free(&d);
}

/* No byte of the input ever reaches a message: a wrong name may be a value
 * (a token pasted without NAME=, a line of a PEM body), and so may a right
 * one. */
static void test_problems_never_carry_input(void **state)
{
	static const char text[] =
		"sk-live-SECRET\n"				/* no '=' */
		"A=\"sk-live-SECRET\" x\n"			/* text after the quote */
		"sk_live_51H8xYz/AbCdEf+GhIjKl=SECRET\n"	/* not a name */
		"sk-live-abcdEFGH12345=SECRET\n"		/* looks like a token */
		"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC=\n"		/* a PEM body line */
		"SECRETNAME=1\nSECRETNAME=2\n"			/* set again */
		"SECRETQ='sk-live-SECRET";			/* unterminated */
	struct problems p;
	struct dotenv d;

	(void)state;
	assert_int_equal(parse(text, &d, &p), 7);
	assert_null(strstr(p.text, "SECRET"));
	assert_null(strstr(p.text, "sk"));
	assert_null(strstr(p.text, "MIIE"));
	assert_null(strstr(p.text, "abcd"));
	assert_string_equal(strstr(p.text, "4: "),
		"4: the name looks like secret material, not a variable name (--any-name "
		"takes it)\n"
		"5: the name looks like secret material, not a variable name (--any-name "
		"takes it)\n"
		"7: the name is set again (first on line 6)\n"
		"8: unterminated ' quote (the rest of the file is not read)\n");
	assert_int_equal(d.n, 1);
	assert_entry(&d, 0, "SECRETNAME", 6, "1", 1);
	dotenv_free(&d);
}

static void test_plausible_names(void **state)
{
	static const char *const ok[] = {
		"A", "_", "_x", "PATH", "OPENAI_API_KEY", "db.password", "api-key", "OAuth2_TOKEN",
		"S3Bucket", "AWS_SECRET_ACCESS_KEY", "spring.datasource.url", "HTTP2", "x1",
		"DATABASE_URL_2024", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "tls.crt", "Sha256Sum",
	};
	static const char *const bad[] = {
		"", "1A", "-a", ".a", "a b", "a/b", "a+b", "a=b", "a:b", "\xc3\x9c" "BER",
		"sk-live-abcdEFGH12345", "sk_live_51H8xYzAbCdEfGh", "ghp_1a2B3c4D5e6F7g8H9i0J",
		"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "key_a3f9c2e1b4d5e6f7", "AKIAI44QH8DHBEXAMPLE",
		"token-0123456789abcdef",
	};
	char longname[DOTENV_NAME_MAX + 2];

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (!dotenv_name_plausible(ok[i], strlen(ok[i])))
			fail_msg("'%s' should be a plausible name", ok[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (dotenv_name_plausible(bad[i], strlen(bad[i])))
			fail_msg("'%s' should be refused", bad[i]);
	memset(longname, 'N', sizeof(longname));
	assert_true(dotenv_name_plausible(longname, DOTENV_NAME_MAX));
	assert_false(dotenv_name_plausible(longname, DOTENV_NAME_MAX + 1));
}

/* --any-name takes what vaultfs can name, and no more. */
static void test_any_name(void **state)
{
	struct problems p;
	struct dotenv d;

	(void)state;
	assert_int_equal(parse_any("sk-live-abcdEFGH12345=v\n1A=w\na/b=x\n", &d, &p), 1);
	assert_string_equal(p.text, "3: invalid key name (want 1-255 of A-Z a-z 0-9 . _ -)\n");
	assert_int_equal(d.n, 2);
	assert_entry(&d, 0, "sk-live-abcdEFGH12345", 1, "v", 1);
	assert_entry(&d, 1, "1A", 2, "w", 1);
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
	memset(text, 'N', 128);
	snprintf(text + 128, sizeof(text) - 128, "=ok\n");
	assert_int_equal(parse(text, &d, &p), 0);
	assert_int_equal(strlen(d.e[0].name), 128);
	dotenv_free(&d);
	memset(text, 'N', 129);
	snprintf(text + 129, sizeof(text) - 129, "=no\n");
	assert_int_equal(parse(text, &d, &p), 1);
	assert_int_equal(d.n, 0);
	dotenv_free(&d);
	/* With --any-name, up to what a key name may be. */
	memset(text, 'N', 255);
	snprintf(text + 255, sizeof(text) - 255, "=ok\n");
	assert_int_equal(parse_any(text, &d, &p), 0);
	assert_int_equal(strlen(d.e[0].name), 255);
	dotenv_free(&d);
	memset(text, 'N', 256);
	snprintf(text + 256, sizeof(text) - 256, "=no\n");
	assert_int_equal(parse_any(text, &d, &p), 1);
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
		cmocka_unit_test(test_problems_never_carry_input),
		cmocka_unit_test(test_plausible_names),
		cmocka_unit_test(test_any_name),
		cmocka_unit_test(test_empty_and_comments_only),
		cmocka_unit_test(test_long_name),
	};

	return cmocka_run_group_tests_name("dotenv", tests, setup, NULL);
}
