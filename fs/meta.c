/* Description and type of a secret: validation and storage. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include "../db/db_attrs.h"
#include "meta.h"
#include "vault_int.h"

static const struct {
	const char *name;
	size_t max;
} attrs[META_COUNT] = {
	[META_DESCRIPTION] = { "description", META_DESCRIPTION_MAX },
	[META_TYPE] = { "type", META_TYPE_MAX },
};

const char *meta_attr_name(enum meta_attr a)
{
	return attrs[a].name;
}

/* Length of the UTF-8 sequence at p (at most n bytes) that encodes a
 * printable character: no C0 or C1 control, no DEL, no surrogate, no
 * overlong form. 0 if there is none. */
static size_t utf8_printable(const unsigned char *p, size_t n)
{
	uint32_t c;
	size_t len;

	if (p[0] < 0x80)
		return p[0] >= 0x20 && p[0] != 0x7f ? 1 : 0;
	if ((p[0] & 0xe0) == 0xc0) {
		len = 2;
		c = p[0] & 0x1f;
	} else if ((p[0] & 0xf0) == 0xe0) {
		len = 3;
		c = p[0] & 0x0f;
	} else if ((p[0] & 0xf8) == 0xf0) {
		len = 4;
		c = p[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3f);
	}
	if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
	    c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff) || (c >= 0x80 && c <= 0x9f))
		return 0;
	return len;
}

static bool type_char_ok(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-' || c == '/' || c == '+';
}

int meta_check(enum meta_attr a, const void *value, size_t len)
{
	const unsigned char *p = value;

	if ((unsigned)a >= META_COUNT)
		return -EINVAL;
	if (len > attrs[a].max)
		return -E2BIG;
	if (a == META_TYPE) {
		for (size_t i = 0; i < len; i++)
			if (!type_char_ok(p[i]))
				return -EINVAL;
		return 0;
	}
	for (size_t i = 0, n; i < len; i += n) {
		n = p[i] == '\t' ? 1 : utf8_printable(p + i, len - i);
		if (n == 0)
			return -EINVAL;
	}
	return 0;
}

int vault_meta_set(struct vault *v, int64_t secret_id, enum meta_attr a, const void *value,
		   size_t len)
{
	struct db_secret s;
	int r = meta_check(a, value, len);

	if (r < 0)
		return r;
	r = db_begin(v->db);
	if (r < 0)
		return r;
	r = db_secret_get(v->db, secret_id, &s);
	if (r == 0)
		r = db_attr_set(v->db, secret_id, attrs[a].name, value, len);
	if (r == 0)
		r = db_secret_set_attr(v->db, secret_id, s.uid, s.gid, s.mode, db_now_ns());
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	return r;
}

int vault_meta_get(struct vault *v, int64_t secret_id, enum meta_attr a, char *buf,
		   size_t size, size_t *len)
{
	if ((unsigned)a >= META_COUNT)
		return -EINVAL;
	return db_attr_get(v->db, secret_id, attrs[a].name, buf, size, len);
}

void meta_format_time(int64_t ns, char buf[static META_TIME_LEN])
{
	time_t t = (time_t)(ns / 1000000000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(buf, META_TIME_LEN, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, META_TIME_LEN, "?");
}
