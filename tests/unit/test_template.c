/* The template renderer and its filters (fs/template.h), without a vault. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../crypto/secmem.h"
#include "../../fs/template.h"

/* Keys for the tests: NAME=value pairs; a NULL value is missing. */
struct table {
	const char *name[8];
	const char *value[8];
	size_t len[8];		/* 0: strlen */
	struct secbuf *buf[8];
	unsigned lookups;
};

static int lookup(void *ctx, const char *key, const struct secbuf **out)
{
	struct table *t = ctx;

	t->lookups++;
	for (int i = 0; i < 8 && t->name[i]; i++) {
		if (strcmp(t->name[i], key))
			continue;
		if (!t->value[i])
			return -ENOKEY;
		if (!t->buf[i]) {
			size_t n = t->len[i] ? t->len[i] : strlen(t->value[i]);

			if (secbuf_new(&t->buf[i], n + 1) < 0 ||
			    secbuf_set(t->buf[i], t->value[i], n) < 0)
				return -ENOMEM;
		}
		*out = t->buf[i];
		return 0;
	}
	return -ENOKEY;
}

static void table_free(struct table *t)
{
	for (int i = 0; i < 8; i++)
		secbuf_free(t->buf[i]);
}

/* Renders src with t: 0 and the text in out (NUL-terminated), or -errno. */
static int render(const char *src, struct table *t, char *out, size_t outlen,
		  struct template_fail *why)
{
	struct secbuf *b = NULL;
	int r = template_expand((const unsigned char *)src, strlen(src), lookup, t, 0, &b, why);

	if (r == 0) {
		assert_true(b->len < outlen);
		memcpy(out, b->data, b->len);
		out[b->len] = '\0';
		secbuf_free(b);
	} else {
		assert_null(b);
	}
	return r;
}

static const char *one(const char *src, const char *value)
{
	static char out[4096];
	struct table t = { .name = { "K" }, .value = { value } };
	struct template_fail why;
	int r = render(src, &t, out, sizeof(out), &why);

	table_free(&t);
	return r == 0 ? out : NULL;
}

static void test_plain_and_spacing(void **state)
{
	char out[256];
	struct table t = { .name = { "A", "b.c-d_e" }, .value = { "1", "two" } };
	struct template_fail why;

	assert_int_equal(render("x={{A}} y={{  b.c-d_e\t}} {A} }} {", &t, out, sizeof(out),
				&why), 0);
	assert_string_equal(out, "x=1 y=two {A} }} {");
	assert_int_equal(render("", &t, out, sizeof(out), &why), 0);
	assert_string_equal(out, "");
	assert_int_equal(render("{{A}}{{A}}", &t, out, sizeof(out), &why), 0);
	assert_string_equal(out, "11");
	table_free(&t);
}

static void test_literals(void **state)
{
	char out[256];
	struct table t = { .name = { "A" }, .value = { "1" } };
	struct template_fail why;

	assert_int_equal(render("{{ \"{{\" }} A {{ \"}}\" }}={{A}} {{\"\"}}.", &t, out,
				sizeof(out), &why), 0);
	assert_string_equal(out, "{{ A }}=1 .");
	assert_int_equal(t.lookups, 1);
	table_free(&t);
}

static void test_missing_key_fails_whole(void **state)
{
	char out[256];
	struct table t = { .name = { "A" }, .value = { "1" } };
	struct template_fail why;

	assert_int_equal(render("a={{ A }}\nb={{ GONE | env }}\n", &t, out, sizeof(out), &why),
			 -ENOKEY);
	assert_string_equal(why.key, "GONE");
	table_free(&t);
}

static void test_env(void **state)
{
	assert_string_equal(one("{{K|env}}", "plain-value_1.2:3/x@y%z+w=v,u"),
			    "plain-value_1.2:3/x@y%z+w=v,u");
	assert_string_equal(one("{{K|env}}", ""), "");
	assert_string_equal(one("{{K|env}}", "a b"), "\"a b\"");
	assert_string_equal(one("{{K|env}}", "q\"uo'te $HOME ${X} `c` #h"),
			    "\"q\\\"uo'te $HOME ${X} `c` #h\"");
	assert_string_equal(one("{{K|env}}", "back\\slash\\n"), "\"back\\\\slash\\\\n\"");
	assert_string_equal(one("{{K|env}}", "line1\nline2\n "), "\"line1\nline2\n \"");
	/* Refused: what no dotenv reader gets back. */
	assert_null(one("{{K|env}}", "ends\\"));
	assert_null(one("{{K|env}}", "cr\r\n"));
	assert_null(one("{{K|env}}", "\xff\xfe"));
	assert_null(one("{{K|env}}", "\xc0\x80"));		/* overlong NUL */
	assert_null(one("{{K|env}}", "\xed\xa0\x80"));	/* a surrogate */
	assert_string_equal(one("{{K|env}}", "caf\xc3\xa9 \xf0\x9f\x94\x91"),
			    "\"caf\xc3\xa9 \xf0\x9f\x94\x91\"");
}

static void test_env_nul_refused_names_filter(void **state)
{
	char out[64];
	struct table t = { .name = { "K" }, .value = { "S3CR3T\0b" }, .len = { 8 } };
	struct template_fail why;

	assert_int_equal(render("X={{ K | env }}", &t, out, sizeof(out), &why), -EINVAL);
	assert_string_equal(why.key, "K");
	assert_string_equal(why.filter, "env");
	assert_non_null(why.reason);
	assert_null(strstr(why.reason, "S3CR3T"));
	table_free(&t);
}

static void test_docker(void **state)
{
	assert_string_equal(one("{{K|docker}}", " sp \"q\" 'q' $X ${Y} #c \\ "),
			    " sp \"q\" 'q' $X ${Y} #c \\ ");
	assert_null(one("{{K|docker}}", "two\nlines"));
	assert_null(one("{{K|docker}}", "cr\r"));
	assert_null(one("{{K|docker}}", "\x80"));
}

static void test_json(void **state)
{
	assert_string_equal(one("{{K|json}}", "a\"b\\c\nd\te\x01\x7f/"),
			    "\"a\\\"b\\\\c\\nd\\te\\u0001\\u007f/\"");
	assert_string_equal(one("{{K|json}}", ""), "\"\"");
	assert_string_equal(one("{{K|json}}", "\xc3\xa9"), "\"\xc3\xa9\"");
	assert_null(one("{{K|json}}", "\xc3"));
}

static void test_base64(void **state)
{
	assert_string_equal(one("{{K|base64}}", ""), "");
	assert_string_equal(one("{{K|base64}}", "f"), "Zg==");
	assert_string_equal(one("{{K|base64}}", "foobar"), "Zm9vYmFy");
	assert_string_equal(one("{{K|base64}}", "\xff\xfe\n"), "//4K");
}

static void test_sh(void **state)
{
	assert_string_equal(one("{{K|sh}}", "it's $HOME `x`\n"), "'it'\\''s $HOME `x`\n'");
	assert_string_equal(one("{{K|sh}}", ""), "''");
}

static void test_chained_filters(void **state)
{
	assert_string_equal(one("{{ K | base64 | json }}", "hi"), "\"aGk=\"");
	assert_string_equal(one("{{ K | json | sh }}", "a'b"), "'\"a'\\''b\"'");
	/* A filter's refusal names the filter that refused. */
	assert_null(one("{{ K | sh | docker }}", "a\nb"));
}

struct syntax_case {
	const char *src;
	unsigned line, col;
	const char *msg;
};

static void test_syntax_errors(void **state)
{
	static const struct syntax_case cases[] = {
		{ "ok\n{{ A", 2, 1, "unclosed {{" },
		{ "{{ A\n}}", 1, 1, "unclosed {{" },
		{ "ab {{ }}", 1, 7, "expected a key name" },
		{ "{{ A | }}", 1, 8, "expected a filter name" },
		{ "x\ny\n  {{ A | yaml }}", 3, 10, "unknown filter" },
		{ "{{ A B }}", 1, 6, "expected '|' or '}}'" },
		{ "{{ $A }}", 1, 4, "expected a key name" },
		{ "x {{ \"ab }}", 1, 6, "unclosed \"" },
		{ "{{ \"a\" | env }}", 1, 8, "expected '}}' after a literal" },
		{ "{{ .. }}", 1, 4, "invalid key name" },
		{ "{{ A |env|env|env|env|env|env|env|env|env }}", 1, 39, "too many filters" },
		{ "a\0b", 1, 2, "a NUL byte" },
	};
	const size_t nul_case = 11;
	struct template_error e;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = i == nul_case ? 3 : strlen(cases[i].src);

		memset(&e, 0, sizeof(e));
		assert_int_equal(template_check((const unsigned char *)cases[i].src, len, &e),
				 -EINVAL);
		if (e.line != cases[i].line || e.col != cases[i].col ||
		    !strstr(e.msg, cases[i].msg))
			fail_msg("case %zu: got %u:%u %s", i, e.line, e.col, e.msg);
	}
	assert_int_equal(template_check((const unsigned char *)"a {{ B | json }} c", 18, &e),
			 0);
}

static int count_key(void *ctx, const char *key)
{
	char *seen = ctx;

	strcat(seen, key);
	strcat(seen, ",");
	return 0;
}

static void test_keys_once_each(void **state)
{
	char seen[128] = "";
	const char *src = "{{B}}{{ A | env }}{{B|json}}{{C}}";

	assert_int_equal(template_keys((const unsigned char *)src, strlen(src), count_key, seen),
			 0);
	assert_string_equal(seen, "B,A,C,");
}

static void test_too_many_tags(void **state)
{
	static char src[8 * (TEMPLATE_MAX_TAGS + 2)];
	struct template_error e;
	size_t n = 0;

	for (int i = 0; i < TEMPLATE_MAX_TAGS + 1; i++)
		n += (size_t)snprintf(src + n, sizeof(src) - n, "{{ A }}");
	assert_int_equal(template_check((const unsigned char *)src, n, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "too many tags"));
}

static void test_output_limit(void **state)
{
	struct table t = { .name = { "A" }, .value = { "12345" } };
	struct template_fail why;
	struct secbuf *b = NULL;
	const char *src = "{{A}}{{A}}";

	assert_int_equal(template_expand((const unsigned char *)src, strlen(src), lookup, &t, 8,
					 &b, &why), -EFBIG);
	assert_null(b);
	assert_int_equal(template_expand((const unsigned char *)src, strlen(src), lookup, &t, 10,
					 &b, &why), 0);
	assert_int_equal(b->len, 10);
	secbuf_free(b);
	/* Literal text counts too. */
	assert_int_equal(template_expand((const unsigned char *)"0123456789x", 11, lookup, &t,
					 10, &b, &why), -EFBIG);
	table_free(&t);
}

static int setup(void **state)
{
	(void)state;
	return secmem_init();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_and_spacing),
		cmocka_unit_test(test_literals),
		cmocka_unit_test(test_missing_key_fails_whole),
		cmocka_unit_test(test_env),
		cmocka_unit_test(test_env_nul_refused_names_filter),
		cmocka_unit_test(test_docker),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_sh),
		cmocka_unit_test(test_chained_filters),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_keys_once_each),
		cmocka_unit_test(test_too_many_tags),
		cmocka_unit_test(test_output_limit),
	};

	return cmocka_run_group_tests_name("template", tests, setup, NULL);
}
