/* The dotenv parser. It reads bytes and writes values only into secbufs;
 * what it reports is a line number and a reason, never a byte of input. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dotenv.h"

struct parser {
	const unsigned char *p, *end;
	unsigned line;
	struct dotenv *out;
	void (*report)(void *, unsigned, const char *);
	void *ctx;
	unsigned flags;
	int problems;
};

static void problem(struct parser *ps, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void problem(struct parser *ps, unsigned line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ps->problems++;
	ps->report(ps->ctx, line, msg);
}

static bool at_eol(const struct parser *ps)
{
	return ps->p == ps->end || *ps->p == '\n' ||
	       (*ps->p == '\r' && (ps->p + 1 == ps->end || ps->p[1] == '\n'));
}

static void skip_blanks(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t'))
		ps->p++;
}

static void skip_line(struct parser *ps)
{
	while (ps->p < ps->end && *ps->p != '\n')
		ps->p++;
	if (ps->p < ps->end) {
		ps->p++;
		ps->line++;
	}
}

/* After a value: blanks, maybe a comment, then the end of the line. */
static bool end_of_entry(struct parser *ps, unsigned line)
{
	skip_blanks(ps);
	if (ps->p < ps->end && *ps->p == '#') {
		skip_line(ps);
		return true;
	}
	if (!at_eol(ps)) {
		problem(ps, line, "unexpected text after the closing quote");
		skip_line(ps);
		return false;
	}
	skip_line(ps);
	return true;
}

static int put(struct secbuf *v, unsigned char c)
{
	int r = secbuf_reserve(v, v->len + 1);

	if (r == 0)
		v->data[v->len++] = c;
	return r;
}

/* A quoted value, from just after the opening quote; 1 if unterminated. */
static int quoted(struct parser *ps, unsigned char q, struct secbuf *v)
{
	int r = 0;

	while (r == 0 && ps->p < ps->end && *ps->p != q) {
		unsigned char c = *ps->p++;

		if (c == '\r' && ps->p < ps->end && *ps->p == '\n')
			continue;	/* CRLF line ends count as LF */
		if (c == '\n')
			ps->line++;
		if (c == '\\' && q == '"' && ps->p < ps->end) {
			unsigned char e = *ps->p++;

			switch (e) {
			case 'n': c = '\n'; break;
			case 'r': c = '\r'; break;
			case 't': c = '\t'; break;
			case '\\': case '"': case '$': c = e; break;
			default:
				r = put(v, '\\');
				c = e;
				if (e == '\n')
					ps->line++;
			}
		}
		if (r == 0)
			r = put(v, c);
	}
	if (r < 0)
		return r;
	if (ps->p == ps->end)
		return 1;
	ps->p++;
	return 0;
}

/* An unquoted value: to the end of the line or a " #" comment, trimmed. */
static int unquoted(struct parser *ps, struct secbuf *v)
{
	const unsigned char *start = ps->p;
	size_t len;

	/* start follows the '=', so ps->p[-1] is always inside the text. */
	while (!at_eol(ps) && !(*ps->p == '#' && (ps->p[-1] == ' ' || ps->p[-1] == '\t')))
		ps->p++;
	len = (size_t)(ps->p - start);
	while (len && (start[len - 1] == ' ' || start[len - 1] == '\t'))
		len--;
	skip_line(ps);
	return secbuf_set(v, start, len);
}

static const struct dotenv_entry *find(const struct dotenv *d, const char *name)
{
	for (size_t i = 0; i < d->n; i++)
		if (!strcmp(d->e[i].name, name))
			return &d->e[i];
	return NULL;
}

static int add(struct dotenv *d, const char *name, unsigned line, struct secbuf *v)
{
	struct dotenv_entry *e;

	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 32;

		e = realloc(d->e, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		d->e = e;
		d->cap = cap;
	}
	e = &d->e[d->n++];
	memcpy(e->name, name, strlen(name) + 1);
	e->line = line;
	e->value = v;
	return 0;
}

static bool is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* A part of a name that a tokenizer, not a person, made. */
static bool part_random(const char *p, size_t n)
{
	size_t upper = 0, lower = 0, digit = 0;

	for (size_t i = 0; i < n; i++) {
		upper += p[i] >= 'A' && p[i] <= 'Z';
		lower += p[i] >= 'a' && p[i] <= 'z';
		digit += is_digit((unsigned char)p[i]);
	}
	return (n >= 10 && upper && lower && digit) || (n >= 16 && digit >= 3);
}

bool dotenv_name_plausible(const char *name, size_t len)
{
	size_t start = 0;

	if (len == 0 || len > DOTENV_NAME_MAX)
		return false;
	if (!is_alpha((unsigned char)name[0]) && name[0] != '_')
		return false;
	for (size_t i = 0; i <= len; i++) {
		unsigned char c = i < len ? (unsigned char)name[i] : '_';

		if (c == '_' || c == '.' || c == '-') {
			if (part_random(name + start, i - start))
				return false;
			start = i + 1;
		} else if (!is_alpha(c) && !is_digit(c)) {
			return false;
		}
	}
	return true;
}

/* Why a name may not be taken, or NULL. */
static const char *name_problem(const struct parser *ps, const char *name, size_t len)
{
	if (ps->flags & DOTENV_ANY_NAME)
		return name_valid_len(name, len) ? NULL :
		       "invalid key name (want 1-255 of A-Z a-z 0-9 . _ -)";
	if (dotenv_name_plausible(name, len))
		return NULL;
	if (!name_valid_len(name, len) || len > DOTENV_NAME_MAX ||
	    (!is_alpha((unsigned char)name[0]) && name[0] != '_'))
		return "not a variable name (want a letter or _, then letters, digits, "
		       "_ . -; at most 128)";
	return "the name looks like secret material, not a variable name (--any-name "
	       "takes it)";
}

/* The name of an entry, up to '='; false (reported) if there is none. */
static bool entry_name(struct parser *ps, char name[static NAME_MAX_LEN + 1])
{
	const unsigned char *start = ps->p;
	const char *why;
	size_t len;

	while (!at_eol(ps) && *ps->p != '=')
		ps->p++;
	if (at_eol(ps)) {
		problem(ps, ps->line, "no '=' (want NAME=VALUE)");
		skip_line(ps);
		return false;
	}
	len = (size_t)(ps->p - start);
	while (len && (start[len - 1] == ' ' || start[len - 1] == '\t'))
		len--;
	why = name_problem(ps, (const char *)start, len);
	if (why) {
		problem(ps, ps->line, "%s", why);
		skip_line(ps);
		return false;
	}
	memcpy(name, start, len);
	name[len] = '\0';
	ps->p++;	/* '=' */
	return true;
}

/* One NAME=VALUE entry, from its first byte. */
static int entry(struct parser *ps)
{
	const struct dotenv_entry *dup;
	char name[NAME_MAX_LEN + 1];
	unsigned line = ps->line;
	struct secbuf *v = NULL;
	int r, open;

	if (ps->end - ps->p > 7 && !memcmp(ps->p, "export", 6) &&
	    (ps->p[6] == ' ' || ps->p[6] == '\t')) {
		ps->p += 6;
		skip_blanks(ps);
	}
	if (!entry_name(ps, name))
		return 0;
	skip_blanks(ps);
	r = secbuf_new(&v, 64);
	if (r < 0)
		return r;
	if (ps->p < ps->end && (*ps->p == '\'' || *ps->p == '"')) {
		unsigned char q = *ps->p++;

		open = quoted(ps, q, v);
		if (open > 0) {
			problem(ps, line, "unterminated %c quote (the rest of the file is "
				"not read)", q);
			secbuf_free(v);
			ps->p = ps->end;
			return 0;
		}
		r = open < 0 ? open : 0;
		if (r == 0 && !end_of_entry(ps, ps->line)) {
			secbuf_free(v);
			return 0;
		}
	} else {
		r = unquoted(ps, v);
	}
	dup = r == 0 ? find(ps->out, name) : NULL;
	if (dup)
		problem(ps, line, "the name is set again (first on line %u)", dup->line);
	if (r == 0 && !dup)
		r = add(ps->out, name, line, v);
	if (r < 0 || dup)
		secbuf_free(v);
	return r;
}

int dotenv_parse(const unsigned char *text, size_t len, unsigned flags, struct dotenv *out,
		 void (*report)(void *ctx, unsigned line, const char *msg), void *ctx)
{
	struct parser ps = { .p = text, .end = text + len, .line = 1, .out = out,
			     .report = report, .ctx = ctx, .flags = flags };
	int r = 0;

	memset(out, 0, sizeof(*out));
	if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3))
		ps.p += 3;
	while (r == 0 && ps.p < ps.end) {
		skip_blanks(&ps);
		if (at_eol(&ps) || *ps.p == '#')
			skip_line(&ps);
		else
			r = entry(&ps);
	}
	if (r < 0) {
		dotenv_free(out);
		return r;
	}
	return ps.problems;
}

void dotenv_free(struct dotenv *d)
{
	for (size_t i = 0; i < d->n; i++)
		secbuf_free(d->e[i].value);
	free(d->e);
	memset(d, 0, sizeof(*d));
}
