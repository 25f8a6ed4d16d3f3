/*
 * The audit log's table in the PostgreSQL store: one chain for the fleet.
 * Rules this file keeps:
 *  - rows are written and read as given (fs/audit.c chains them);
 *  - appends run in a write transaction, which holds the store's fleet-wide
 *    write lock (pg_store.c): the chain's tip is read and extended by one
 *    host at a time, so entries from every host form one unbroken chain
 *    and `vaultfs audit --verify` proves the whole fleet's log;
 *  - on the store's handle an entry commits with the change it records;
 *    the audit writer's handle (DB_LOG) is a connection of its own.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

#define ROW_COLS "seq, time, uid, gid, pid, comm, instance, key, op, result, detail, mac, " \
		 "count, first_time"

static struct pgs *P(struct db *db)
{
	return (struct pgs *)db;
}

int pga_snapshot_begin(struct db *db)
{
	pg_snapshot_begin(P(db));
	return 0;
}

void pga_snapshot_end(struct db *db)
{
	pg_snapshot_end(P(db));
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

int pga_insert(struct db *db, const struct db_audit_row *row)
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
	return pg_change(P(db), "INSERT INTO audit (" ROW_COLS ") VALUES ($1, $2, $3, $4, $5, "
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

int pga_last(struct db *db, int64_t before_ns, struct db_audit_row *out)
{
	struct pgq q = { 0 };

	if (before_ns == INT64_MAX)
		return one_row(P(db), "SELECT " ROW_COLS " FROM audit ORDER BY seq DESC LIMIT 1",
			       NULL, out);
	pgq_int(&q, before_ns);
	return one_row(P(db), "SELECT " ROW_COLS " FROM audit WHERE seq = "
		       "(SELECT max(seq) FROM audit WHERE time < $1)", &q, out);
}

int pga_delete_upto(struct db *db, int64_t seq)
{
	struct pgq q = { 0 };

	pgq_int(&q, seq);
	return pg_change(P(db), "DELETE FROM audit WHERE seq <= $1", &q, -1);
}

int pga_each(struct db *db, const struct db_audit_filter *f,
	     int (*fn)(void *, const struct db_audit_row *), void *ctx)
{
	struct db_audit_row row;
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	pgq_text(&q, f ? f->instance : NULL);
	pgq_text(&q, f ? f->key : NULL);
	pgq_int(&q, f ? f->since_ns : INT64_MIN);
	r = pg_run(P(db), "SELECT " ROW_COLS " FROM audit WHERE ($1::text IS NULL OR "
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
int pga_tidy(struct db *db)
{
	return 0;
}

int pga_meta_add(struct db *db, const char *key, const unsigned char *v, size_t len)
{
	struct pgq q = { 0 };
	int r;

	pgq_text(&q, key);
	pgq_blob(&q, v, len);
	r = pg_run(P(db), "INSERT INTO meta (key, value) VALUES ($1, $2) "
		   "ON CONFLICT (key) DO NOTHING", &q, NULL);
	return r < 0 ? r : r == 0 ? -EEXIST : 0;
}
