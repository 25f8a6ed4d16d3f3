/*
 * Expiry and read limits. Rules this file keeps (the store is untrusted,
 * see README "Security model"):
 *  - a limit belongs to one version: the secrets row's flags (under its
 *    tag) say the version has a record, the record in secret_attrs (under
 *    its own tag) names that version. A record removed, or replayed from
 *    another version, fails closed (expired); a record edited fails its
 *    tag (EIO); a row without the flag put back is an older row of the
 *    version before, which the instance's state refuses;
 *  - a counted read makes a new version (same value, not kept in the
 *    history) with its record, in the transaction that decides the read:
 *    an older record or row put back names an older version, refused as
 *    above, so a count can't be wound back on its own;
 *  - only what reads a value is limited: the mount's opens for reading
 *    and `vaultfs get`; writers may always replace it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../crypto/seal.h"
#include "../db/db_attrs.h"
#include "audit.h"
#include "expiry.h"
#include "log.h"
#include "meta.h"
#include "vault_int.h"

#define RECORD "expiry"
#define RECORD_MAX 128

/* -- parsing ------------------------------------------------------------ */

static int parse_u(const char **p, const char *end, unsigned digits, int *out)
{
	int v = 0;

	for (unsigned i = 0; i < digits; i++, (*p)++) {
		if (*p >= end || **p < '0' || **p > '9')
			return -EINVAL;
		v = v * 10 + (**p - '0');
	}
	*out = v;
	return 0;
}

static int parse_date(const char *s, const char *end, int64_t *out)
{
	struct tm tm = { 0 };
	const char *p = s;
	int mday;
	time_t t;

	if (parse_u(&p, end, 4, &tm.tm_year) || p >= end || *p++ != '-' ||
	    parse_u(&p, end, 2, &tm.tm_mon) || p >= end || *p++ != '-' ||
	    parse_u(&p, end, 2, &tm.tm_mday))
		return -EINVAL;
	if (p < end) {
		if (*p++ != 'T' || parse_u(&p, end, 2, &tm.tm_hour) || p >= end || *p++ != ':' ||
		    parse_u(&p, end, 2, &tm.tm_min))
			return -EINVAL;
		if (p < end && *p == ':' && (p++, parse_u(&p, end, 2, &tm.tm_sec)))
			return -EINVAL;
		if (p >= end || *p++ != 'Z' || p != end)
			return -EINVAL;
	}
	if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
	    tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60 || tm.tm_year < 1970)
		return -EINVAL;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	mday = tm.tm_mday;
	t = timegm(&tm);
	if (t == (time_t)-1 || tm.tm_mday != mday)
		return -EINVAL;		/* February 31st became March 3rd */
	*out = (int64_t)t * 1000000000;
	return 0;
}

static int parse_number(const char **p, const char *end, int64_t max, int64_t *out)
{
	int64_t v = 0;

	if (*p >= end || **p < '0' || **p > '9')
		return -EINVAL;
	for (; *p < end && **p >= '0' && **p <= '9'; (*p)++) {
		v = v * 10 + (**p - '0');
		if (v > max)
			return -ERANGE;
	}
	*out = v;
	return 0;
}

/* "1d12h": at most 100 years. */
static int parse_duration(const char *s, const char *end, int64_t *out)
{
	static const char units[] = "smhdw";
	static const int64_t secs[] = { 1, 60, 3600, 86400, 7 * 86400 };
	const int64_t max = (int64_t)100 * 366 * 86400;
	const char *p = s, *u;
	int64_t total = 0, n;

	while (p < end) {
		if (parse_number(&p, end, max, &n) || p >= end || !(u = strchr(units, *p)) || !*p)
			return -EINVAL;
		total += n * secs[u - units];
		if (total > max)
			return -ERANGE;
		p++;
	}
	if (total == 0)
		return -EINVAL;
	*out = total;
	return 0;
}

int expiry_parse(const char *s, size_t len, int64_t now_ns, int64_t *out)
{
	const char *end = s + len, *p = s + 1;
	int64_t secs;

	if (len == 0 || len > 32)
		return -EINVAL;
	if (s[0] == '@') {
		if (parse_number(&p, end, INT64_MAX / 1000000000, &secs) || p != end)
			return -EINVAL;
		*out = secs * 1000000000;
		return 0;
	}
	if (len >= 10 && s[4] == '-')
		return parse_date(s, end, out);
	if (parse_duration(s, end, &secs) < 0)
		return -EINVAL;
	*out = now_ns + secs * 1000000000;
	return 0;
}

/* -- the record --------------------------------------------------------- */

static int record_parse(const char *buf, size_t len, struct expiry *e)
{
	char s[RECORD_MAX + 1];
	unsigned long long v, m, r;
	long long x;
	int n = 0;

	if (len > RECORD_MAX)
		return -EINVAL;
	memcpy(s, buf, len);
	s[len] = '\0';
	if (sscanf(s, "v=%llu e=%lld m=%llu r=%llu%n", &v, &x, &m, &r, &n) != 4 ||
	    (size_t)n != len || x < 0)
		return -EINVAL;
	*e = (struct expiry){ .version = v, .expires_ns = x, .max_reads = m, .reads = r };
	return 0;
}

static int record_store(struct vault *v, int64_t secret_id, const struct expiry *e)
{
	char s[RECORD_MAX + 1];
	int n = snprintf(s, sizeof(s), "v=%" PRIu64 " e=%" PRId64 " m=%" PRIu64 " r=%" PRIu64,
			 e->version, e->expires_ns, e->max_reads, e->reads);

	return db_attr_set(v->db, secret_id, RECORD, s, (size_t)n);
}

int expiry_get(struct vault *v, const struct db_secret *s, struct expiry *e)
{
	char buf[RECORD_MAX];
	size_t len;
	int r;

	if (!(s->flags & EXPIRY_FLAG))
		return -ENOENT;
	r = db_attr_get(v->db, s->id, RECORD, buf, sizeof(buf), &len);
	if (r == 0 && (record_parse(buf, len, e) < 0 || e->version != s->version))
		r = -ENOENT;
	if (r == -ENOENT || r == -ERANGE) {
		log_warn("secrets row %lld (version %llu) is marked as limited but its limit "
			 "is missing or another version's: treated as expired", (long long)s->id,
			 (unsigned long long)s->version);
		r = -EKEYEXPIRED;
	}
	return r;
}

bool expiry_spent(const struct expiry *e, int64_t now_ns)
{
	return (e->expires_ns && now_ns >= e->expires_ns) ||
	       (e->max_reads && e->reads >= e->max_reads);
}

void expiry_describe(const struct expiry *e, char *buf, size_t size)
{
	char when[META_TIME_LEN];
	int n = 0;

	buf[0] = '\0';
	if (e->expires_ns) {
		meta_format_time(e->expires_ns, when);
		n = snprintf(buf, size, "expires %s", when);
	}
	if (e->max_reads && n >= 0 && (size_t)n < size)
		snprintf(buf + n, size - (size_t)n, "%s%" PRIu64 " of %" PRIu64 " reads",
			 n ? ", " : "", e->reads, e->max_reads);
}

/* -- writing ------------------------------------------------------------ */

/* Inside a transaction: s (current, just written) gets the flag, the same
 * blob and version, and e's record. */
static int mark(struct vault *v, struct db_secret *s, struct expiry *e)
{
	struct db_blob blob = { 0 };
	struct db_secret m;
	int r = db_secret_blob(v->db, s->id, &m, &blob);

	if (r == 0 && m.version != s->version)
		r = -ESTALE;
	if (r == 0) {
		m.flags |= EXPIRY_FLAG;
		r = db_secret_set_value(v->db, &m, &blob);
	}
	e->version = m.version;
	if (r == 0)
		r = record_store(v, s->id, e);
	if (r == 0)
		*s = m;
	db_blob_free(&blob);
	return r;
}

int expiry_put(struct vault *v, int64_t instance_id, const char *name,
	       const unsigned char *pt, size_t len, uid_t uid, gid_t gid, int64_t if_version,
	       const struct expiry *e, struct db_secret *out,
	       const struct audit_entry *audit)
{
	struct expiry rec = *e;
	int r = db_begin(v->db);

	if (r < 0)
		return r;
	rec.reads = 0;
	r = vault_put_if(v, instance_id, name, pt, len, uid, gid, if_version, out, NULL);
	if (r == 0)
		r = mark(v, out, &rec);
	if (r == 0)
		r = audit_record_txn(v->audit, v->db, audit);
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	return r;
}

/* Inside a transaction: the value of s sealed again as version + 1, the
 * old one not kept (it is the same value), with flags. */
static int reseal_next(struct vault *v, struct db_secret *s, const struct secbuf *pt,
		       uint32_t flags)
{
	struct db_blob blob = { 0 };
	struct inst_key *k = NULL;
	struct seal_ad ad;
	int r = vault_key_current(v, s->instance_id, &k);

	if (r < 0)
		return r;
	s->version++;
	s->flags = flags;
	seal_ad_value(&ad, k->name, s->name, s->version);
	r = vault_seal_blob(&blob, k->key, &ad, pt->data, pt->len);
	if (r == 0)
		r = db_secret_set_value(v->db, s, &blob);
	db_blob_free(&blob);
	vault_key_put(v, k);
	return r;
}

/* The counted read: decision, count and value in one transaction. */
static int count_read(struct vault *v, struct db_secret *m, struct secbuf **buf)
{
	struct secbuf *pt = NULL;
	struct db_secret s;
	struct expiry e;
	int r = db_begin(v->db);

	if (r < 0)
		return r;
	r = db_secret_get(v->db, m->id, &s);
	if (r == 0)
		r = expiry_get(v, &s, &e);
	if (r == 0 && expiry_spent(&e, db_now_ns()))
		r = -EKEYEXPIRED;
	if (r == 0)
		r = vault_read(v, s.id, &pt, &s);
	if (r == 0)
		r = reseal_next(v, &s, pt, s.flags);
	if (r == 0) {
		e.version = s.version;
		e.reads++;
		r = record_store(v, s.id, &e);
	}
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	if (r == 0) {
		secbuf_free(*buf);
		*buf = pt;
		*m = s;
	} else {
		secbuf_free(pt);
	}
	return r;
}

/* The row and its record, from one snapshot. */
static int limits_now(struct vault *v, int64_t id, struct db_secret *s, struct expiry *e)
{
	int r;

	db_read_begin(v->db);
	r = db_secret_get(v->db, id, s);
	if (r == 0)
		r = expiry_get(v, s, e);
	db_read_end(v->db);
	return r;
}

int expiry_open(struct vault *v, struct db_secret *m, struct secbuf **buf)
{
	struct db_secret s;
	struct expiry e;
	int r;

	if (!(m->flags & EXPIRY_FLAG))
		return 0;
	/* m was read in an earlier snapshot: a counted read may have made a
	 * new version since, with its own record. */
	r = limits_now(v, m->id, &s, &e);
	if (r == -ENOENT)
		r = -ESTALE;	/* the name is looked up again */
	if (r == 0 && expiry_spent(&e, db_now_ns()))
		r = -EKEYEXPIRED;
	if (r == 0 && e.max_reads)
		r = count_read(v, m, buf);
	return r;
}

int expiry_open_rw(struct vault *v, int64_t secret_id)
{
	struct db_secret s;
	struct expiry e;
	int r = db_secret_get(v->db, secret_id, &s);

	if (r < 0 || !(s.flags & EXPIRY_FLAG))
		return r;
	r = expiry_get(v, &s, &e);
	if (r == 0 && expiry_spent(&e, db_now_ns()))
		r = -EKEYEXPIRED;
	if (r == 0 && e.max_reads)
		r = -EACCES;
	return r;
}

/* -- the xattr ---------------------------------------------------------- */

int expiry_xattr_get(struct vault *v, int64_t secret_id, char *buf, size_t size)
{
	char when[META_TIME_LEN];
	struct db_secret s;
	struct expiry e;
	int r = db_secret_get(v->db, secret_id, &s);

	if (r == 0)
		r = expiry_get(v, &s, &e);
	if (r == -ENOENT || (r == 0 && !e.expires_ns))
		return -ENODATA;
	if (r < 0)
		return r;
	meta_format_time(e.expires_ns, when);
	return snprintf(buf, size, "%s", when);
}

/* A new version of the same value, with or without a time limit (a read
 * limit stays as it was). */
static int restamp(struct vault *v, int64_t secret_id, int64_t expires_ns, uid_t by)
{
	struct secbuf *pt = NULL;
	struct db_secret s;
	struct expiry e = { 0 };
	int r = db_begin(v->db);

	if (r < 0)
		return r;
	r = db_secret_get(v->db, secret_id, &s);
	if (r == 0 && (s.flags & EXPIRY_FLAG))
		r = expiry_get(v, &s, &e);
	if (r == 0)
		r = vault_read(v, secret_id, &pt, &s);
	e.expires_ns = expires_ns;
	if (r == 0) {
		s.updated_by = by;
		s.mtime_ns = s.chtime_ns = db_now_ns();
		r = reseal_next(v, &s, pt, e.expires_ns || e.max_reads ?
			       s.flags | EXPIRY_FLAG : s.flags & ~(uint32_t)EXPIRY_FLAG);
	}
	e.version = s.version;
	if (r == 0 && (e.expires_ns || e.max_reads))
		r = record_store(v, secret_id, &e);
	else if (r == 0)
		r = db_attr_set(v->db, secret_id, RECORD, "", 0);
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	secbuf_free(pt);
	return r;
}

int expiry_xattr_set(struct vault *v, int64_t secret_id, const char *value, size_t len,
		     uid_t by)
{
	int64_t when;

	if (expiry_parse(value, len, db_now_ns(), &when) < 0)
		return -EINVAL;
	return restamp(v, secret_id, when, by);
}

int expiry_xattr_remove(struct vault *v, int64_t secret_id, uid_t by)
{
	char buf[META_TIME_LEN];
	int r = expiry_xattr_get(v, secret_id, buf, sizeof(buf));

	return r < 0 ? r : restamp(v, secret_id, 0, by);
}
