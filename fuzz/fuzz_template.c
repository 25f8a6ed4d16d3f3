/*
 * libFuzzer target: templates (fs/template_text.c), the parser and the filters.
 *
 * The first byte picks a mode. Even: the rest is a template source; a
 * source template_check accepts renders with every key set to "v" (which
 * every filter takes), and one it refuses names a line and a column inside
 * the input. Odd: the rest is a value; when `| env` writes it, import's
 * dotenv parser (src/dotenv.c) reads back exactly that value, and when
 * `| sh` or `| json` refuse it, they said why.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../fs/template.h"
#include "../src/dotenv.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct secbuf *fixed;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (secmem_init() < 0)
		abort();
	secmem_allow_unlocked(true);
	if (secbuf_new(&fixed, 1) < 0 || secbuf_set(fixed, "v", 1) < 0)
		abort();
	return 0;
}

static int lookup_v(void *ctx, const char *key, const struct secbuf **out)
{
	(void)ctx;
	(void)key;
	*out = fixed;
	return 0;
}

static int lookup_value(void *ctx, const char *key, const struct secbuf **out)
{
	*out = ctx;
	return strcmp(key, "K") ? -ENOKEY : 0;
}

static void source(const uint8_t *s, size_t n)
{
	struct template_error e = { 0 };
	struct template_fail why;
	struct secbuf *out = NULL;
	unsigned lines = 1;

	for (size_t i = 0; i < n; i++)
		lines += s[i] == '\n';
	if (template_check(s, n, &e) < 0) {
		if (e.line < 1 || e.line > lines || e.col < 1 || e.col > n + 1 || !e.msg[0])
			abort();
		return;
	}
	if (template_expand(s, n, lookup_v, NULL, 0, &out, &why) < 0)
		abort();
	secbuf_free(out);
}

static void ignore(void *ctx, unsigned line, const char *msg)
{
	(void)line;
	(void)msg;
	++*(int *)ctx;
}

static void value(const uint8_t *s, size_t n)
{
	static const unsigned char src[] = "K={{ K | env }}\n";
	struct template_fail why;
	struct secbuf *v = NULL, *out = NULL;
	struct dotenv d = { 0 };
	int problems = 0;

	if (secbuf_new(&v, n + 1) < 0 || secbuf_set(v, s, n) < 0)
		abort();
	if (template_expand(src, sizeof(src) - 1, lookup_value, v, 0, &out, &why) == 0) {
		if (dotenv_parse(out->data, out->len, 0, &d, ignore, &problems) != 0 ||
		    d.n != 1 || strcmp(d.e[0].name, "K") || d.e[0].value->len != n ||
		    (n && memcmp(d.e[0].value->data, s, n)))
			abort();
	} else if (why.err != -EINVAL || !why.reason || strcmp(why.filter, "env")) {
		abort();
	}
	dotenv_free(&d);
	secbuf_free(out);
	secbuf_free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1)
		value(data + 1, size - 1);
	else
		source(data + 1, size - 1);
	return 0;
}
