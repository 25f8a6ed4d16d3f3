/*
 * Row tags, instance states and the audit floor for the PostgreSQL store.
 * Rules this file keeps:
 *  - the same encoding as the SQLite store (db_auth.c): the table's name
 *    first, each field typed and sized, so a vault moves between the two
 *    stores with its tags, states and floor intact;
 *  - the server can't compute a tag (it never holds the key): a write
 *    reads the row it replaces under FOR UPDATE, checks its tag here,
 *    makes the new one here, and writes both in the same transaction;
 *  - a row that fails is -EIO, never its content, reported to auth->failed
 *    once the writer holds no transaction.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

#define MSG_MAX 4096
#define STATE_CHUNK (MSG_MAX - 64)
#define FLOOR_KEY "audit_floor"

struct msg {
	unsigned char buf[MSG_MAX];
	size_t len;
	bool overflow;
};

static void put(struct msg *m, const void *p, size_t n)
{
	if (m->overflow || n > sizeof(m->buf) - m->len) {
		m->overflow = true;
		return;
	}
	if (n)
		memcpy(m->buf + m->len, p, n);
	m->len += n;
}

static void put_u64(struct msg *m, uint64_t v)
{
	unsigned char b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (56 - 8 * i));
	put(m, b, sizeof(b));
}

static void put_bytes(struct msg *m, char type, const void *p, size_t n)
{
	put(m, &type, 1);
	put_u64(m, n);
	put(m, p, n);
}

static void msg_init(struct msg *m, const char *tag)
{
	m->len = 0;
	m->overflow = false;
	put_bytes(m, 's', "vaultfs/row/1", 13);
	put_bytes(m, 's', tag, strlen(tag));
}

static void put_field(struct msg *m, const struct pg_tagf *f)
{
	if (f->type == 'i') {
		put(m, "i", 1);
		put_u64(m, (uint64_t)f->i);
	} else {
		put_bytes(m, f->type, f->p, f->len);
	}
}

static bool same_tag(const unsigned char *a, const void *b, size_t blen)
{
	const unsigned char *p = b;
	unsigned char d = 0;

	if (!p || blen != DB_MAC_LEN)
		return false;
	for (size_t i = 0; i < DB_MAC_LEN; i++)
		d |= a[i] ^ p[i];
	return d == 0;
}

int pg_tag_make(const struct db_auth *auth, const char *table, const struct pg_tagf *f,
		int n, unsigned char out[DB_MAC_LEN])
{
	struct msg m;

	if (!auth) {
		pg_set_error("rows can't be tagged without the vault's key");
		return -EACCES;
	}
	msg_init(&m, table);
	for (int i = 0; i < n; i++)
		put_field(&m, &f[i]);
	if (m.overflow) {
		pg_set_error("row too large to tag");
		return -EOVERFLOW;
	}
	auth->mac(auth->ctx, m.buf, m.len, out);
	return 0;
}

#define PENDING_MAX 8
#define WHAT_MAX 96

static __thread char pending[PENDING_MAX][WHAT_MAX];
static __thread unsigned npending;

/* Inside the thread's transaction, told when it ends: the audit log that
 * auth->failed writes to waits for the same connection. */
static void report(struct pgs *s, const char *what)
{
	pg_set_error("%s fails authentication (tampered or damaged database)", what);
	if (pg_in_own_txn(s)) {
		if (npending < PENDING_MAX)
			snprintf(pending[npending++], WHAT_MAX, "%s", what);
		return;
	}
	if (s->auth && s->auth->failed)
		s->auth->failed(s->auth->ctx, what);
}

void pg_tag_flush(struct pgs *s)
{
	unsigned n = npending;

	npending = 0;
	for (unsigned i = 0; i < n; i++)
		if (s->auth && s->auth->failed)
			s->auth->failed(s->auth->ctx, pending[i]);
}

static bool tag_ok(const struct db_auth *auth, const char *table, const struct pg_tagf *f,
		   int n, const void *stored, size_t len)
{
	unsigned char want[DB_MAC_LEN];

	return pg_tag_make(auth, table, f, n, want) == 0 && same_tag(want, stored, len);
}

bool pg_tag_ok(const struct db_auth *auth, const char *table, const struct pg_tagf *f, int n,
	       const PGresult *res, int row, int col)
{
	return auth && tag_ok(auth, table, f, n, PQgetvalue(res, row, col),
			      (size_t)PQgetlength(res, row, col));
}

int pg_tag_check(struct pgs *s, const char *table, const struct pg_tagf *f, int n,
		 const PGresult *res, int row, int col, const char *what)
{
	const void *stored = PQgetvalue(res, row, col);
	size_t len = (size_t)PQgetlength(res, row, col);
	const struct db_auth *auth = s->auth;

	if (!auth) {
		pg_set_error("the store was opened without the vault's key: rows can't be "
			     "checked");
		return -EACCES;
	}
	if (tag_ok(auth, table, f, n, stored, len))
		return 0;
	if (auth->renew && auth->renew(auth->ctx) && tag_ok(auth, table, f, n, stored, len))
		return 0;
	report(s, what);
	return -EIO;
}

/* -- instance state ------------------------------------------------------------- */

struct state_calc {
	const struct db_auth *auth;
	struct msg m;
};

static void state_begin(struct state_calc *c, const struct db_auth *auth, int64_t inst,
			int64_t seq)
{
	c->auth = auth;
	msg_init(&c->m, "state");
	put_u64(&c->m, (uint64_t)inst);
	put_u64(&c->m, (uint64_t)seq);
}

static void state_add(struct state_calc *c, int64_t id, int64_t version)
{
	unsigned char h[DB_MAC_LEN];

	if (c->m.len > STATE_CHUNK) {
		c->auth->mac(c->auth->ctx, c->m.buf, c->m.len, h);
		msg_init(&c->m, "state+");
		put(&c->m, h, sizeof(h));
	}
	put_u64(&c->m, (uint64_t)id);
	put_u64(&c->m, (uint64_t)version);
}

static const char sql_state_scan[] =
	"SELECT i.seq, i.state, s.id, s.version FROM instances i LEFT JOIN secrets s "
	"ON s.instance_id = i.id WHERE i.id = $1 ORDER BY s.id";

/* One statement, one snapshot: seq (+ delta), the stored state and the
 * live set; out gets the state made of them. */
static int state_calc(struct pgs *s, int64_t inst, const struct db_auth *auth,
		      int64_t *seq, int64_t delta, unsigned char out[DB_MAC_LEN],
		      bool *matches, int (*fn)(void *, int64_t, uint64_t), void *ctx)
{
	struct state_calc c;
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	pgq_int(&q, inst);
	r = pg_run(s, sql_state_scan, &q, &res);
	if (r < 0)
		return r;
	if (PQntuples(res) == 0) {
		PQclear(res);
		pg_set_error("no such instance");
		return -ENOENT;
	}
	*seq = pg_int(res, 0, 0) + delta;
	state_begin(&c, auth, inst, *seq);
	for (int i = 0; r == 0 && i < PQntuples(res); i++) {
		if (pg_null(res, i, 2))
			continue;
		state_add(&c, pg_int(res, i, 2), pg_int(res, i, 3));
		if (fn)
			r = fn(ctx, pg_int(res, i, 2), (uint64_t)pg_int(res, i, 3));
	}
	if (r == 0) {
		auth->mac(auth->ctx, c.m.buf, c.m.len, out);
		*matches = same_tag(out, PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1));
	}
	PQclear(res);
	return r;
}

int pg_state_scan(struct pgs *s, int64_t inst, int64_t *seq, bool check,
		  int (*fn)(void *, int64_t, uint64_t), void *ctx)
{
	unsigned char out[DB_MAC_LEN];
	char what[96];
	bool ok = false;
	int r;

	if (!s->auth)
		return -EACCES;
	r = state_calc(s, inst, s->auth, seq, 0, out, &ok, fn, ctx);
	if (r == 0 && check && !ok) {
		snprintf(what, sizeof(what), "instances row %lld state (its live secrets' "
			 "versions)", (long long)inst);
		report(s, what);
		r = -EIO;
	}
	return r;
}

int pg_state_update(struct pgs *s, int64_t inst, const struct db_auth *auth, bool bump)
{
	unsigned char out[DB_MAC_LEN];
	struct pgq q = { 0 };
	int64_t seq = 0;
	bool ok;
	int r;

	if (!auth)
		return -EACCES;
	r = state_calc(s, inst, auth, &seq, bump, out, &ok, NULL, NULL);
	if (r == -ENOENT)
		return 0;	/* the instance went in this transaction */
	if (r < 0)
		return r;
	pgq_int(&q, inst);
	pgq_int(&q, seq);
	pgq_blob(&q, out, sizeof(out));
	return pg_change(s, "UPDATE instances SET seq = $2, state = $3 WHERE id = $1", &q, 1);
}

int pg_state_touch(struct pgs *s, int64_t inst, bool fresh)
{
	int64_t *p, seq;
	int r;

	if (!pg_in_own_txn(s)) {
		pg_set_error("internal: a change to live secrets outside a transaction");
		return -EINVAL;
	}
	for (size_t i = 0; i < s->ndirty; i++)
		if (s->dirty[i] == inst)
			return 0;
	if (!fresh && (r = pg_state_scan(s, inst, &seq, true, NULL, NULL)) < 0)
		return r;
	if (s->ndirty == s->dirty_cap) {
		size_t cap = s->dirty_cap ? s->dirty_cap * 2 : 8;

		p = realloc(s->dirty, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		s->dirty = p;
		s->dirty_cap = cap;
	}
	s->dirty[s->ndirty++] = inst;
	return 0;
}

/* -- the audit floor --------------------------------------------------------------- */

static void floor_tag(const struct db_auth *auth, int64_t floor, unsigned char out[DB_MAC_LEN])
{
	struct msg m;

	msg_init(&m, FLOOR_KEY);
	put_u64(&m, (uint64_t)floor);
	auth->mac(auth->ctx, m.buf, m.len, out);
}

static int one_int(struct pgs *s, const char *sql, int64_t *out)
{
	PGresult *res;
	int r = pg_run(s, sql, NULL, &res);

	if (r == 0) {
		*out = PQntuples(res) ? pg_int(res, 0, 0) : 0;
		PQclear(res);
	}
	return r;
}

static int meta_floor(struct pgs *s, struct db_blob *b)
{
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	pgq_text(&q, FLOOR_KEY);
	r = pg_run(s, "SELECT value FROM meta WHERE key = $1", &q, &res);
	if (r < 0)
		return r;
	r = PQntuples(res) ? pg_blob(res, 0, 0, b) : -ENOENT;
	PQclear(res);
	return r;
}

int pg_floor_read(struct pgs *s, int64_t *floor, bool missing_ok)
{
	unsigned char want[DB_MAC_LEN];
	struct db_blob b = { 0 };
	int64_t any = 1;
	uint64_t v = 0;
	int r;

	if (!s->auth)
		return -EACCES;
	r = meta_floor(s, &b);
	if (r == -ENOENT && !missing_ok &&
	    (one_int(s, "SELECT coalesce(max(seq), 0)::int8 FROM instances", &any) < 0 ||
	     any > 0)) {
		report(s, "meta row audit_floor (missing)");
		return -EIO;
	}
	if (r < 0)
		return r;
	if (b.len == 8 + DB_MAC_LEN) {
		for (int i = 0; i < 8; i++)
			v = v << 8 | b.data[i];
		floor_tag(s->auth, (int64_t)v, want);
	}
	r = b.len == 8 + DB_MAC_LEN && same_tag(want, b.data + 8, DB_MAC_LEN) ? 0 : -EIO;
	db_blob_free(&b);
	if (r < 0) {
		report(s, "meta row audit_floor");
		return r;
	}
	*floor = (int64_t)v;
	return 0;
}

int pg_floor_update(struct pgs *s, const struct db_auth *auth)
{
	unsigned char b[8 + DB_MAC_LEN];
	int64_t floor = 0, top = 0;
	struct pgq q = { 0 };
	int r;

	if (!auth)
		return -EACCES;
	r = pg_floor_read(s, &floor, true);
	if (r == -ENOENT)
		r = 0;
	if (r == 0)
		r = one_int(s, "SELECT coalesce(max(seq), 0)::int8 FROM audit", &top);
	if (r < 0)
		return r;
	if (top > floor)
		floor = top;
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)floor >> (56 - 8 * i));
	floor_tag(auth, floor, b + 8);
	pgq_text(&q, FLOOR_KEY);
	pgq_blob(&q, b, sizeof(b));
	return pg_change(s, "INSERT INTO meta (key, value) VALUES ($1, $2) "
			 "ON CONFLICT (key) DO UPDATE SET value = excluded.value", &q, -1);
}
