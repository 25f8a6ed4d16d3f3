/*
 * Row tags, instance states and the audit floor for the PostgreSQL store.
 * Rules this file keeps:
 *  - the encoding every store shares (rowtag.c): the table's name first,
 *    each field typed and sized, so a vault moves between the two
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
#include "rowtag.h"

static void encode(struct rowtag *m, const char *table, const struct pg_tagf *f, int n)
{
	rowtag_init(m, table);
	for (int i = 0; i < n; i++) {
		if (f[i].type == 'i')
			rowtag_int(m, f[i].i);
		else if (f[i].type == 't')
			rowtag_text(m, f[i].p, f[i].len);
		else
			rowtag_blob(m, f[i].p, f[i].len);
	}
}

int pg_tag_make(const struct db_auth *auth, const char *table, const struct pg_tagf *f,
		int n, unsigned char out[DB_MAC_LEN])
{
	struct rowtag m;
	int r;

	if (!auth) {
		pg_set_error("rows can't be tagged without the vault's key");
		return -EACCES;
	}
	encode(&m, table, f, n);
	r = rowtag_make(auth, &m, out);
	if (r < 0)
		pg_set_error("row too large to tag");
	return r;
}

static void report(struct pgs *s, const char *what)
{
	rowtag_failed(s->auth, what, pg_in_own_txn(s));
}

void pg_tag_flush(struct pgs *s)
{
	rowtag_flush();
}

static bool tag_ok(const struct db_auth *auth, const char *table, const struct pg_tagf *f,
		   int n, const void *stored, size_t len)
{
	struct rowtag m;

	encode(&m, table, f, n);
	return rowtag_ok(auth, &m, stored, len);
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

static const char sql_state_scan[] =
	"SELECT i.seq, i.state, s.id, s.version FROM instances i LEFT JOIN secrets s "
	"ON s.instance_id = i.id WHERE i.id = $1 ORDER BY s.id";

/* One statement, one snapshot: seq (+ delta), the stored state and the
 * live set; out gets the state made of them. */
static int state_calc(struct pgs *s, int64_t inst, const struct db_auth *auth,
		      int64_t *seq, int64_t delta, unsigned char out[DB_MAC_LEN],
		      bool *matches, int (*fn)(void *, int64_t, uint64_t), void *ctx)
{
	struct rowtag_state c;
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
	rowtag_state_begin(&c, auth, inst, *seq);
	for (int i = 0; r == 0 && i < PQntuples(res); i++) {
		if (pg_null(res, i, 2))
			continue;
		rowtag_state_add(&c, pg_int(res, i, 2), pg_int(res, i, 3));
		if (fn)
			r = fn(ctx, pg_int(res, i, 2), (uint64_t)pg_int(res, i, 3));
	}
	if (r == 0) {
		rowtag_state_end(&c, out);
		*matches = rowtag_equal(out, PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1));
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

	pgq_text(&q, ROWTAG_FLOOR_KEY);
	r = pg_run(s, "SELECT value FROM meta WHERE key = $1", &q, &res);
	if (r < 0)
		return r;
	r = PQntuples(res) ? pg_blob(res, 0, 0, b) : -ENOENT;
	PQclear(res);
	return r;
}

int pg_floor_read(struct pgs *s, int64_t *floor, bool missing_ok)
{
	struct db_blob b = { 0 };
	int64_t any = 1;
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
	r = rowtag_floor_decode(s->auth, &b, floor);
	db_blob_free(&b);
	if (r < 0)
		report(s, "meta row audit_floor");
	return r;
}

int pg_floor_update(struct pgs *s, const struct db_auth *auth)
{
	unsigned char b[ROWTAG_FLOOR_LEN];
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
	rowtag_floor_encode(auth, floor, b);
	pgq_text(&q, ROWTAG_FLOOR_KEY);
	pgq_blob(&q, b, sizeof(b));
	return pg_change(s, "INSERT INTO meta (key, value) VALUES ($1, $2) "
			 "ON CONFLICT (key) DO UPDATE SET value = excluded.value", &q, -1);
}
