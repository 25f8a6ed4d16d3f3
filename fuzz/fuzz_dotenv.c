/*
 * libFuzzer target: the dotenv parser behind `vaultfs import` (src/dotenv.c).
 *
 * Beyond not crashing, leaking or hitting undefined behaviour: every entry
 * has a valid (and, unless the first byte is odd, plausible), unique name
 * and a value; every problem is reported with a
 * line that exists; and the entries, written back out as double-quoted
 * dotenv, parse again to exactly the same names and values.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/dotenv.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct reports {
	unsigned max_line;
	int n;
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (secmem_init() < 0)
		abort();
	secmem_allow_unlocked(true);
	return 0;
}

static void report(void *ctx, unsigned line, const char *msg)
{
	struct reports *rp = ctx;

	if (line < 1 || line > rp->max_line || !msg[0])
		abort();
	rp->n++;
}

static void emit(unsigned char **buf, size_t *len, size_t *cap, const void *p, size_t n)
{
	if (*len + n > *cap) {
		*cap = (*len + n) * 2;
		*buf = realloc(*buf, *cap);
		if (!*buf)
			abort();
	}
	memcpy(*buf + *len, p, n);
	*len += n;
}

/* NAME="value" lines, escaping what double quotes would change. */
static unsigned char *serialize(const struct dotenv *d, size_t *out_len)
{
	unsigned char *buf = NULL;
	size_t len = 0, cap = 0;

	for (size_t i = 0; i < d->n; i++) {
		const struct secbuf *v = d->e[i].value;

		emit(&buf, &len, &cap, d->e[i].name, strlen(d->e[i].name));
		emit(&buf, &len, &cap, "=\"", 2);
		for (size_t j = 0; j < v->len; j++) {
			unsigned char c = v->data[j];

			switch (c) {
			case '\n': emit(&buf, &len, &cap, "\\n", 2); break;
			case '\r': emit(&buf, &len, &cap, "\\r", 2); break;
			case '\\': emit(&buf, &len, &cap, "\\\\", 2); break;
			case '"': emit(&buf, &len, &cap, "\\\"", 2); break;
			case '$': emit(&buf, &len, &cap, "\\$", 2); break;
			default: emit(&buf, &len, &cap, &c, 1);
			}
		}
		emit(&buf, &len, &cap, "\"\n", 2);
	}
	*out_len = len;
	return buf;
}

static void check_entries(const struct dotenv *d, unsigned flags)
{
	for (size_t i = 0; i < d->n; i++) {
		const char *name = d->e[i].name;

		if (!name_valid(name) || !d->e[i].value)
			abort();
		if (!(flags & DOTENV_ANY_NAME) && !dotenv_name_plausible(name, strlen(name)))
			abort();
		for (size_t j = 0; j < i; j++)
			if (!strcmp(d->e[i].name, d->e[j].name))
				abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reports rp = { .max_line = 1 };
	struct dotenv d, again;
	unsigned flags = size && (data[0] & 1) ? DOTENV_ANY_NAME : 0;
	unsigned char *text;
	size_t len;
	int r;

	for (size_t i = 0; i < size; i++)
		rp.max_line += data[i] == '\n';
	r = dotenv_parse(data, size, flags, &d, report, &rp);
	if (r == -ENOMEM)
		return 0;
	if (r < 0 || r != rp.n)
		abort();	/* the count returned is the problems reported */
	check_entries(&d, flags);
	text = serialize(&d, &len);
	rp.max_line = 1;
	for (size_t i = 0; i < len; i++)
		rp.max_line += text[i] == '\n';
	rp.n = 0;
	r = dotenv_parse(text ? text : (const unsigned char *)"", len, flags, &again, report,
			 &rp);
	if (r != 0 || again.n != d.n)
		abort();
	for (size_t i = 0; i < d.n; i++) {
		const struct secbuf *a = d.e[i].value, *b = again.e[i].value;

		if (strcmp(d.e[i].name, again.e[i].name) || a->len != b->len ||
		    (a->len && memcmp(a->data, b->data, a->len)))
			abort();
	}
	free(text);
	dotenv_free(&again);
	dotenv_free(&d);
	return 0;
}
