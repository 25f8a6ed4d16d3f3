/* Templates as text: the syntax, the filters, and expansion with a lookup
 * the caller gives (template.c reads the values from the vault). Pure: no
 * store, no vault, no log. The rules it keeps are in template.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template.h"
#include "vault_int.h"

enum filter { F_ENV, F_DOCKER, F_JSON, F_BASE64, F_SH };

static const char *const filter_names[] = {
	[F_ENV] = "env", [F_DOCKER] = "docker", [F_JSON] = "json",
	[F_BASE64] = "base64", [F_SH] = "sh",
};
#define N_FILTERS (sizeof(filter_names) / sizeof(filter_names[0]))

struct tag {
	size_t start, end;		/* the tag's bytes, {{ to }} */
	char key[NAME_MAX_LEN + 1];	/* "": a literal, {{ "text" }} */
	size_t lit, lit_len;		/* the literal's bytes in the source */
	unsigned nf;
	enum filter f[TEMPLATE_MAX_FILTERS];
};

/* --- parsing --- */

struct cursor {
	const unsigned char *s;
	size_t len, i;
	unsigned line;
	size_t line_start;
};

static void pos_of(const struct cursor *c, size_t at, struct template_error *e)
{
	unsigned line = 1;
	size_t ls = 0;

	for (size_t k = 0; k < at && k < c->len; k++)
		if (c->s[k] == '\n') {
			line++;
			ls = k + 1;
		}
	e->line = line;
	e->col = (unsigned)(at - ls + 1);
}

static int syntax(const struct cursor *c, size_t at, struct template_error *e,
		  const char *msg)
{
	if (e) {
		pos_of(c, at, e);
		snprintf(e->msg, sizeof(e->msg), "%s", msg);
	}
	return -EINVAL;
}

static bool name_char(unsigned char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '.' || ch == '_' || ch == '-';
}

static void skip_blank(struct cursor *c)
{
	while (c->i < c->len && (c->s[c->i] == ' ' || c->s[c->i] == '\t'))
		c->i++;
}

static size_t word(struct cursor *c)
{
	size_t from = c->i;

	while (c->i < c->len && name_char(c->s[c->i]))
		c->i++;
	return c->i - from;
}

static int parse_filter(struct cursor *c, struct tag *t, struct template_error *e)
{
	size_t from, n;

	skip_blank(c);
	from = c->i;
	n = word(c);
	if (!n)
		return syntax(c, from, e, "expected a filter name after '|'");
	for (size_t k = 0; k < N_FILTERS; k++)
		if (strlen(filter_names[k]) == n && !memcmp(filter_names[k], c->s + from, n)) {
			if (t->nf == TEMPLATE_MAX_FILTERS)
				return syntax(c, from, e, "too many filters in one tag");
			t->f[t->nf++] = (enum filter)k;
			return 0;
		}
	return syntax(c, from, e, "unknown filter (want env, docker, json, base64 or sh)");
}

/* The tag that starts at c->i ("{{"), into *t; c->i after its "}}". */
/* {{ "text" }}: text as it is (no escapes, no '"', one line), for a
 * literal {{ in a file. c->i is at the opening quote. */
static int parse_literal(struct cursor *c, struct tag *t, struct template_error *e)
{
	size_t from = ++c->i;

	while (c->i < c->len && c->s[c->i] != '"' && c->s[c->i] != '\n')
		c->i++;
	if (c->i >= c->len || c->s[c->i] != '"')
		return syntax(c, from - 1, e, "unclosed \" (a literal ends on its line)");
	t->lit = from;
	t->lit_len = c->i - from;
	c->i++;
	return 0;
}

static int parse_key(struct cursor *c, struct tag *t, size_t open, struct template_error *e)
{
	size_t from = c->i, n = word(c);

	if (!n)
		return syntax(c, c->i < c->len && c->s[c->i] != '\n' ? c->i : open, e,
			      c->i < c->len && c->s[c->i] != '\n' ?
			      "expected a key name (A-Z a-z 0-9 . _ -) or a \"literal\"" :
			      "unclosed {{");
	if (n > NAME_MAX_LEN || !name_valid_len((const char *)c->s + from, n))
		return syntax(c, from, e, "invalid key name");
	memcpy(t->key, c->s + from, n);
	t->key[n] = '\0';
	return 0;
}

/* The tag that starts at c->i ("{{"), into *t; c->i after its "}}". */
static int parse_tag(struct cursor *c, struct tag *t, struct template_error *e)
{
	size_t open = c->i;
	bool literal;
	int r;

	memset(t, 0, sizeof(*t));
	t->start = open;
	c->i += 2;
	skip_blank(c);
	literal = c->i < c->len && c->s[c->i] == '"';
	r = literal ? parse_literal(c, t, e) : parse_key(c, t, open, e);
	for (; r == 0;) {
		skip_blank(c);
		if (c->i + 1 < c->len && c->s[c->i] == '}' && c->s[c->i + 1] == '}')
			break;
		if (c->i >= c->len || c->s[c->i] == '\n')
			return syntax(c, open, e, "unclosed {{ (a tag ends with }} on its line)");
		if (c->s[c->i] != '|' || literal)
			return syntax(c, c->i, e, literal ? "expected '}}' after a literal" :
				      "expected '|' or '}}'");
		c->i++;
		r = parse_filter(c, t, e);
	}
	if (r < 0)
		return r;
	c->i += 2;
	t->end = c->i;
	return 0;
}

/* Calls fn for each tag of src, in order. */
static int walk(const unsigned char *src, size_t len, int (*fn)(void *, const struct tag *),
		void *ctx, struct template_error *e)
{
	struct cursor c = { .s = src, .len = len };
	struct tag t;
	unsigned tags = 0;
	int r = 0;

	while (r == 0 && c.i + 1 < len) {
		if (src[c.i] != '{' || src[c.i + 1] != '{') {
			c.i++;
			continue;
		}
		if (++tags > TEMPLATE_MAX_TAGS)
			return syntax(&c, c.i, e, "too many tags (at most 1024)");
		r = parse_tag(&c, &t, e);
		if (r == 0 && fn)
			r = fn(ctx, &t);
	}
	return r;
}

int template_check(const unsigned char *src, size_t len, struct template_error *e)
{
	if (memchr(src, '\0', len)) {
		struct cursor c = { .s = src, .len = len };

		return syntax(&c, (size_t)((const unsigned char *)memchr(src, '\0', len) - src), e,
			      "a NUL byte (a template is text)");
	}
	return walk(src, len, NULL, NULL, e);
}

struct keys_ctx {
	int (*fn)(void *, const char *);
	void *ctx;
	char (*seen)[NAME_MAX_LEN + 1];
	size_t n, cap;
};

static int keys_tag(void *ctx, const struct tag *t)
{
	struct keys_ctx *k = ctx;

	if (!t->key[0])
		return 0;
	for (size_t i = 0; i < k->n; i++)
		if (!strcmp(k->seen[i], t->key))
			return 0;
	if (k->n == k->cap) {
		size_t cap = k->cap ? k->cap * 2 : 8;
		char (*seen)[NAME_MAX_LEN + 1] = realloc(k->seen, cap * sizeof(*seen));

		if (!seen)
			return -ENOMEM;
		k->seen = seen;
		k->cap = cap;
	}
	memcpy(k->seen[k->n++], t->key, sizeof(t->key));
	return k->fn(k->ctx, t->key);
}

int template_keys(const unsigned char *src, size_t len,
		  int (*fn)(void *ctx, const char *key), void *ctx)
{
	struct keys_ctx k = { .fn = fn, .ctx = ctx };
	int r;

	r = walk(src, len, keys_tag, &k, NULL);
	free(k.seen);
	return r;
}

/* --- the filters --- */

static int put(struct secbuf *b, const void *p, size_t n)
{
	size_t cap;
	int r;

	if (n > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
	if (b->len + n > b->cap) {
		cap = b->cap * 2 > b->len + n ? b->cap * 2 : b->len + n;
		r = secbuf_reserve(b, cap < 256 ? 256 : cap);
		if (r < 0)
			return r;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

static int putc_(struct secbuf *b, unsigned char ch)
{
	return put(b, &ch, 1);
}

/* Well-formed UTF-8: no overlong forms, surrogates or code points beyond
 * U+10FFFF. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		size_t k;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			k = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			k = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			k = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i <= k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + j] & 0x3f);
		}
		if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

/* Bytes every parser reads the same unquoted: docker, systemd, python-dotenv. */
static bool env_plain(const unsigned char *s, size_t n)
{
	static const char ok[] = "_@%+=:,./-";

	if (!n)
		return true;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || (s[i] && strchr(ok, s[i]))))
			return false;
	return true;
}

/* A dotenv value for systemd's EnvironmentFile= and python-dotenv (and
 * docker --env-file when it needs no quotes): plain as it is, else in
 * double quotes with \ and " escaped; both read a newline, $, ', #, `
 * and spaces inside double quotes as themselves. */
static int f_env(const unsigned char *s, size_t n, struct secbuf *o, const char **why)
{
	int r;

	if (memchr(s, '\0', n))
		*why = "holds a NUL byte, which no environment variable can";
	else if (memchr(s, '\r', n))
		*why = "holds a carriage return, which python-dotenv reads as a newline";
	else if (!utf8_valid(s, n))
		*why = "is not valid UTF-8, which systemd and docker refuse (use | base64)";
	else if (n && s[n - 1] == '\\')
		*why = "ends with a backslash, which python-dotenv can't read back quoted";
	if (*why)
		return -EINVAL;
	if (env_plain(s, n))
		return put(o, s, n);
	r = putc_(o, '"');
	for (size_t i = 0; r == 0 && i < n; i++) {
		if (s[i] == '\\' || s[i] == '"')
			r = putc_(o, '\\');
		if (r == 0)
			r = putc_(o, s[i]);
	}
	return r ? r : putc_(o, '"');
}

/* docker run --env-file takes the rest of the line after the first '='
 * as it is: no quotes, no escapes, one line, valid UTF-8 (it refuses the
 * file otherwise), and its line reader drops a final \r and stops at 64
 * KiB. */
#define DOCKER_LINE_MAX 60000

static int f_docker(const unsigned char *s, size_t n, struct secbuf *o, const char **why)
{
	if (memchr(s, '\0', n))
		*why = "holds a NUL byte, which no environment variable can";
	else if (memchr(s, '\n', n) || memchr(s, '\r', n))
		*why = "holds a line break, which docker's --env-file can't carry (use | env "
		       "with systemd or python-dotenv, or | base64)";
	else if (!utf8_valid(s, n))
		*why = "is not valid UTF-8, which docker refuses (use | base64)";
	else if (n > DOCKER_LINE_MAX)
		*why = "is longer than docker's --env-file reads in one line";
	return *why ? -EINVAL : put(o, s, n);
}

static int f_json(const unsigned char *s, size_t n, struct secbuf *o, const char **why)
{
	static const char hex[] = "0123456789abcdef";
	char esc[8];
	int r;

	if (!utf8_valid(s, n)) {
		*why = "is not valid UTF-8, which a JSON string must be (use | base64)";
		return -EINVAL;
	}
	r = putc_(o, '"');
	for (size_t i = 0; r == 0 && i < n; i++) {
		unsigned char c = s[i];

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			r = put(o, esc, 2);
		} else if (c == '\n') {
			r = put(o, "\\n", 2);
		} else if (c == '\t') {
			r = put(o, "\\t", 2);
		} else if (c == '\r') {
			r = put(o, "\\r", 2);
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			r = put(o, esc, 6);
		} else {
			r = putc_(o, c);
		}
	}
	return r ? r : putc_(o, '"');
}

/* RFC 4648 base64 with padding, in the output buffer only. */
static int f_base64(const unsigned char *s, size_t n, struct secbuf *o, const char **why)
{
	static const char abc[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t need = (n + 2) / 3 * 4;
	unsigned char *p;
	int r = secbuf_reserve(o, o->len + need + 1);

	if (r < 0)
		return r;
	p = o->data + o->len;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t w = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) |
			     (i + 2 < n ? s[i + 2] : 0);

		*p++ = (unsigned char)abc[w >> 18 & 63];
		*p++ = (unsigned char)abc[w >> 12 & 63];
		*p++ = i + 1 < n ? (unsigned char)abc[w >> 6 & 63] : '=';
		*p++ = i + 2 < n ? (unsigned char)abc[w & 63] : '=';
	}
	o->len += need;
	return 0;
}

/* One word for a POSIX shell: in single quotes, each ' as '\''. */
static int f_sh(const unsigned char *s, size_t n, struct secbuf *o, const char **why)
{
	int r;

	if (memchr(s, '\0', n)) {
		*why = "holds a NUL byte, which no shell word can";
		return -EINVAL;
	}
	r = putc_(o, '\'');
	for (size_t i = 0; r == 0 && i < n; i++)
		r = s[i] == '\'' ? put(o, "'\\''", 4) : putc_(o, s[i]);
	return r ? r : putc_(o, '\'');
}

static int filter_apply(enum filter f, const unsigned char *s, size_t n, struct secbuf *o,
			const char **why)
{
	switch (f) {
	case F_ENV:
		return f_env(s, n, o, why);
	case F_DOCKER:
		return f_docker(s, n, o, why);
	case F_JSON:
		return f_json(s, n, o, why);
	case F_BASE64:
		return f_base64(s, n, o, why);
	case F_SH:
		return f_sh(s, n, o, why);
	}
	return -EINVAL;
}

/* --- expansion --- */

struct expand_ctx {
	const unsigned char *src;
	size_t done;			/* src bytes copied so far */
	template_lookup_fn lookup;
	void *ctx;
	struct secbuf *out;
	size_t max;			/* of out, 0: no limit */
	struct template_fail *why;
};

/* The value of t's key through its filters, onto x->out. */
static int expand_value(struct expand_ctx *x, const struct tag *t, const struct secbuf *v)
{
	struct secbuf *stage[2] = { NULL, NULL };
	const unsigned char *cur = v->data;
	size_t n = v->len;
	const char *why = NULL;
	int r = 0;

	for (unsigned i = 0; r == 0 && i < t->nf; i++) {
		struct secbuf *dst;
		bool last = i + 1 == t->nf;

		if (last) {
			dst = x->out;
		} else {
			secbuf_free(stage[i & 1]);
			stage[i & 1] = NULL;
			r = secbuf_new(&stage[i & 1], n + 16);
			dst = stage[i & 1];
		}
		if (r == 0)
			r = filter_apply(t->f[i], cur, n, dst, &why);
		if (r == -EINVAL && x->why)
			x->why->filter = filter_names[t->f[i]];
		if (r == 0 && !last) {
			cur = dst->data;
			n = dst->len;
		}
	}
	if (r == 0 && t->nf == 0)
		r = put(x->out, cur, n);
	if (r < 0 && x->why)
		x->why->reason = why;
	secbuf_free(stage[0]);
	secbuf_free(stage[1]);
	return r;
}

static int expand_tag(void *ctx, const struct tag *t)
{
	struct expand_ctx *x = ctx;
	const struct secbuf *v = NULL;
	int r = put(x->out, x->src + x->done, t->start - x->done);

	if (r == 0 && !t->key[0])
		r = put(x->out, x->src + t->lit, t->lit_len);
	else if (r == 0)
		r = x->lookup(x->ctx, t->key, &v);
	if (r == 0 && t->key[0])
		r = expand_value(x, t, v);
	if (r == 0 && x->max && x->out->len > x->max)
		r = -EFBIG;
	if (r < 0 && x->why) {
		x->why->err = r;
		snprintf(x->why->key, sizeof(x->why->key), "%s", t->key);
	}
	x->done = t->end;
	return r;
}

int template_expand(const unsigned char *src, size_t len, template_lookup_fn lookup,
		    void *ctx, size_t max, struct secbuf **out, struct template_fail *why)
{
	struct expand_ctx x = { .src = src, .lookup = lookup, .ctx = ctx, .max = max,
				.why = why };
	int r;

	*out = NULL;
	if (why)
		memset(why, 0, sizeof(*why));
	r = secbuf_new(&x.out, len + 64);
	if (r == 0)
		r = walk(src, len, expand_tag, &x, NULL);
	if (r == 0)
		r = put(x.out, src + x.done, len - x.done);
	if (r == 0 && max && x.out->len > max)
		r = -EFBIG;
	if (r < 0) {
		if (why && !why->err)
			why->err = r;
		secbuf_free(x.out);
		return r;
	}
	*out = x.out;
	return 0;
}
