/*
 * The audit log's table in the PostgreSQL store: one chain for the fleet.
 * Rules this file keeps:
 *  - rows are written and read as given (fs/audit.c chains them);
 *  - appends run in a write transaction, which holds the store's fleet-wide
 *    write lock (pg_store.c): the chain's tip is read and extended by one
 *    host at a time, so entries from every host form one unbroken chain
 *    and `vaultfs audit --verify` proves the whole fleet's log;
 *  - attached, the log uses the store's connection, so an entry commits
 *    with the change it records; opened, a connection of its own.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

#define ROW_COLS "seq, time, uid, gid, pid, comm, instance, key, op, result, detail, mac, " \
		 "count, first_time"

struct pg_audit {
	struct db_audit base;
	struct pgs *s;
	bool own;
};

static struct pg_audit *A(struct db_audit *a)
{
	return (struct pg_audit *)a;
}

static int wrap(struct db_audit **out, struct pgs *s, bool own)
{
	struct pg_audit *a = calloc(1, sizeof(*a));

	*out = NULL;
	if (!a)
		return -ENOMEM;
	a->base.ops = &db_pg_ops;
	a->s = s;
	a->own = own;
	*out = &a->base;
	return 0;
}

int pga_open(struct db_audit **out, const char *spec, bool readonly)
{
	struct db *db;
	int r = db_pg_ops.open(&db, spec, 0);

	if (r < 0)
		return r;
	r = wrap(out, (struct pgs *)db, true);
	if (r < 0)
		db_pg_ops.close(db);
	return r;
}

int pga_attach(struct db_audit **out, struct db *db)
{
	return wrap(out, (struct pgs *)db, false);
}

void pga_close(struct db_audit *h)
{
	struct pg_audit *a = A(h);

	if (!a)
		return;
	if (a->own)
		db_pg_ops.close(&a->s->base);
	free(a);
}

int pga_begin(struct db_audit *h, bool lazy)
{
	return db_pg_ops.begin(&A(h)->s->base, lazy && !A(h)->own);
}

int pga_commit(struct db_audit *h)
{
	return db_pg_ops.commit(&A(h)->s->base);
}

void pga_rollback(struct db_audit *h)
{
	db_pg_ops.rollback(&A(h)->s->base);
}

int pga_read_begin(struct db_audit *h)
{
	pg_snapshot_begin(A(h)->s);
	return 0;
}

void pga_read_end(struct db_audit *h)
{
	pg_snapshot_end(A(h)->s);
}

static void text_bounded(const char *src, char *dst, size_t size)
{
	size_t n = strnlen(src, size - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

static void row_read(const PGresult *res, int i, struct db_audit_row *r)
{
	memset(r, 0, sizeof(*r));
	r->seq = pg_int(res, i, 0);
	r->time_ns = pg_int(res, i, 1);
	r->uid = (uint32_t)pg_int(res, i, 2);
	r->gid = (uint32_t)pg_int(res, i, 3);
	r->pid = (int32_t)pg_int(res, i, 4);
	text_bounded(PQgetvalue(res, i, 5), r->comm, sizeof(r->comm));
	text_bounded(PQgetvalue(res, i, 6), r->instance, sizeof(r->instance));
	text_bounded(PQgetvalue(res, i, 7), r->key, sizeof(r->key));
	text_bounded(PQgetvalue(res, i, 8), r->op, sizeof(r->op));
	r->result = (int32_t)pg_int(res, i, 9);
	text_bounded(PQgetvalue(res, i, 10), r->detail, sizeof(r->detail));
	/* A mac of the wrong length stays zero: it will not verify. */
	if (PQgetlength(res, i, 11) == DB_AUDIT_MAC_LEN)
		memcpy(r->mac, PQgetvalue(res, i, 11), DB_AUDIT_MAC_LEN);
	r->count = pg_int(res, i, 12);
	r->first_ns = pg_null(res, i, 13) ? r->time_ns : pg_int(res, i, 13);
}

int pga_insert(struct db_audit *h, const struct db_audit_row *row)
{
	struct pgq q = { 0 };

	pgq_int(&q, row->seq);
	pgq_int(&q, row->time_ns);
	pgq_int(&q, row->uid);
	pgq_int(&q, row->gid);
	pgq_int(&q, row->pid);
	pgq_text(&q, row->comm);
	pgq_text(&q, row->instance);
	pgq_text(&q, row->key);
	pgq_text(&q, row->op);
	pgq_int(&q, row->result);
	pgq_text(&q, row->detail);
	pgq_blob(&q, row->mac, DB_AUDIT_MAC_LEN);
	pgq_int(&q, row->count);
	pgq_int(&q, row->first_ns);
	return pg_change(A(h)->s, "INSERT INTO audit (" ROW_COLS ") VALUES ($1, $2, $3, $4, $5, "
			 "$6, $7, $8, $9, $10, $11, $12, $13, $14)", &q, 1);
}

static int one_row(struct pgs *s, const char *sql, const struct pgq *q,
		   struct db_audit_row *out)
{
	PGresult *res;
	int r = pg_run(s, sql, q, &res);

	if (r < 0)
		return r;
	r = PQntuples(res) ? 0 : -ENOENT;
	if (r == 0)
		row_read(res, 0, out);
	PQclear(res);
	return r;
}

int pga_last(struct db_audit *h, int64_t before_ns, struct db_audit_row *out)
{
	struct pgq q = { 0 };

	if (before_ns == INT64_MAX)
		return one_row(A(h)->s, "SELECT " ROW_COLS " FROM audit ORDER BY seq DESC LIMIT 1",
			       NULL, out);
	pgq_int(&q, before_ns);
	return one_row(A(h)->s, "SELECT " ROW_COLS " FROM audit WHERE seq = "
		       "(SELECT max(seq) FROM audit WHERE time < $1)", &q, out);
}

int pga_delete_upto(struct db_audit *h, int64_t seq)
{
	struct pgq q = { 0 };

	pgq_int(&q, seq);
	return pg_change(A(h)->s, "DELETE FROM audit WHERE seq <= $1", &q, -1);
}

static void pgq_opt_text(struct pgq *q, const char *s)
{
	if (s) {
		pgq_text(q, s);
		return;
	}
	q->v[q->n] = NULL;
	q->len[q->n] = 0;
	q->fmt[q->n] = 1;
	q->type[q->n++] = 25;
}

int pga_each(struct db_audit *h, const struct db_audit_filter *f,
	     int (*fn)(void *, const struct db_audit_row *), void *ctx)
{
	struct db_audit_row row;
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	pgq_opt_text(&q, f ? f->instance : NULL);
	pgq_opt_text(&q, f ? f->key : NULL);
	pgq_int(&q, f ? f->since_ns : INT64_MIN);
	r = pg_run(A(h)->s, "SELECT " ROW_COLS " FROM audit WHERE ($1::text IS NULL OR "
		   "instance = $1) AND ($2::text IS NULL OR key = $2) AND time >= $3 "
		   "ORDER BY seq", &q, &res);
	for (int i = 0; r == 0 && i < PQntuples(res); i++) {
		row_read(res, i, &row);
		r = fn(ctx, &row);
	}
	PQclear(res);
	return r;
}

/* Nothing to tidy: the server recycles its own write-ahead log. */
int pga_tidy(struct db_audit *h)
{
	return 0;
}

int pga_meta_get(struct db_audit *h, const char *key, unsigned char *buf, size_t len)
{
	struct db_blob b = { 0 };
	int r = db_pg_ops.meta_get(&A(h)->s->base, key, &b);

	if (r == 0 && b.len != len)
		r = -EPROTO;
	if (r == 0)
		memcpy(buf, b.data, len);
	db_blob_free(&b);
	return r;
}

int pga_meta_put(struct db_audit *h, const char *key, const unsigned char *buf, size_t len,
		 bool add)
{
	struct pgq q = { 0 };
	int r;

	pgq_text(&q, key);
	pgq_blob(&q, buf, len);
	if (!add)
		return db_pg_ops.meta_set(&A(h)->s->base, key, buf, len);
	r = pg_run(A(h)->s, "INSERT INTO meta (key, value) VALUES ($1, $2) "
		   "ON CONFLICT (key) DO NOTHING", &q, NULL);
	return r < 0 ? r : r == 0 ? -EEXIST : 0;
}
