/*
 * The PostgreSQL store's trash: deleted secrets kept for undelete, their
 * restore and their purge. Rules this file keeps:
 *  - every row moved is read in the transaction, its tag checked here, and
 *    the copy tagged here for its new table (pg_tag.c), since the server
 *    can't; blobs are copied by the server, row to row;
 *  - a delete or a restore changes which secrets are live: it runs in a
 *    transaction that remakes the instance's state at commit
 *    (pgh_touch_secret);
 *  - a purge deletes the rows; what the server keeps of them afterwards
 *    (dead tuples until vacuum, WAL, base backups) is the operator's to
 *    expire, as the README's "Many hosts" says.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pg_int.h"

static struct pgs *P(struct db *db)
{
	return (struct pgs *)db;
}

static int trash_tag(const struct db_auth *auth, const struct db_trash *t,
		     unsigned char out[DB_MAC_LEN])
{
	struct pg_tagf f[] = { TI(t->secret_id), TI(t->instance_id), TT(t->name), TI(t->uid),
			       TI(t->gid), TI(t->mode) };

	return pg_tag_make(auth, "trash", f, 6, out);
}

static int trash_put_now(struct pgs *s, int64_t id, int64_t now_ns, uid_t by)
{
	unsigned char mac[DB_MAC_LEN];
	struct db_secret m;
	struct db_trash t = { 0 };
	struct pgq q = { 0 };
	int r = pgr_secret_locked(s, id, false, &m);

	if (r < 0)
		return r;
	t.secret_id = m.id;
	t.instance_id = m.instance_id;
	memcpy(t.name, m.name, sizeof(t.name));
	t.uid = m.uid;
	t.gid = m.gid;
	t.mode = m.mode;
	r = trash_tag(pg_write_auth(s), &t, mac);
	pgq_int(&q, id);
	pgq_int(&q, now_ns);
	pgq_int(&q, by);
	pgq_blob(&q, mac, sizeof(mac));
	if (r == 0)
		r = pg_change(s, "INSERT INTO trash (secret_id, instance_id, name, uid, gid, mode, "
			      "ctime, deleted, deleted_by, mac) SELECT id, instance_id, name, uid, "
			      "gid, mode, ctime, $2, $3, $4 FROM secrets WHERE id = $1", &q, 1);
	if (r == 0) {
		q.n = 1;
		r = pg_change(s, "DELETE FROM secrets WHERE id = $1", &q, 1);
	}
	return r;
}

int pgt_trash_put(struct db *db, const struct db_secret *m, int64_t now_ns, uid_t by)
{
	struct pgs *s = P(db);
	int r = pgs_own_begin(s);

	if (r < 0)
		return r;
	r = pgh_touch_secret(s, m->id, false);
	if (r == 0)
		r = trash_put_now(s, m->id, now_ns, by);
	return pgs_own_end(s, r);
}

#define TRASH_COLS "t.secret_id, t.instance_id, t.name, t.uid, t.gid, t.mode, t.ctime, " \
		   "t.deleted, t.deleted_by, " \
		   "coalesce((SELECT max(version) FROM versions v WHERE v.secret_id = t.secret_id), 0), " \
		   "coalesce((SELECT size FROM versions v WHERE v.secret_id = t.secret_id " \
		   "ORDER BY version DESC LIMIT 1), 0), t.mac"

static int row_trash(struct pgs *s, const PGresult *res, int row, struct db_trash *t)
{
	char what[48];

	t->secret_id = pg_int(res, row, 0);
	t->instance_id = pg_int(res, row, 1);
	pg_name(res, row, 2, t->name);
	t->uid = (uid_t)pg_int(res, row, 3);
	t->gid = (gid_t)pg_int(res, row, 4);
	t->mode = (mode_t)pg_int(res, row, 5) & 07777;
	t->ctime_ns = pg_int(res, row, 6);
	t->deleted_ns = pg_int(res, row, 7);
	t->deleted_by = (uid_t)pg_int(res, row, 8);
	t->version = (uint64_t)pg_int(res, row, 9);
	t->size = (uint64_t)pg_int(res, row, 10);
	snprintf(what, sizeof(what), "trash row %lld", (long long)t->secret_id);
	struct pg_tagf f[] = { TI(t->secret_id), TI(t->instance_id), TT(t->name),
			       TI(pg_int(res, row, 3)), TI(pg_int(res, row, 4)),
			       TI(pg_int(res, row, 5)) };

	return pg_tag_check(s, "trash", f, 6, res, row, 11, what);
}

int pgt_trash_find(struct db *db, int64_t instance_id, const char *name,
			  int64_t since_ns, struct db_trash *out)
{
	struct pgs *s = P(db);
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	pgq_int(&q, instance_id);
	pgq_text(&q, name);
	pgq_int(&q, since_ns);
	r = pg_run(s, "SELECT " TRASH_COLS " FROM trash t WHERE t.instance_id = $1 AND "
		   "t.name = $2 AND t.deleted >= $3 ORDER BY t.deleted DESC, t.secret_id DESC "
		   "LIMIT 1", &q, &res);
	if (r < 0)
		return r;
	r = PQntuples(res) ? row_trash(s, res, 0, out) : -ENOENT;
	PQclear(res);
	return r;
}

PG_EACH_ROW(visit_trash, struct db_trash, row_trash)

int pgt_trash_each(struct db *db, int64_t instance_id,
			  int (*fn)(void *, const struct db_trash *), void *ctx)
{
	struct pg_each e = { (void *)fn, ctx };
	struct pgq q = { 0 };

	pgq_int(&q, instance_id);
	return pg_each(P(db), "SELECT " TRASH_COLS " FROM trash t WHERE $1 = 0 OR "
		       "t.instance_id = $1 ORDER BY t.deleted DESC, t.secret_id DESC", &q,
		       visit_trash, &e);
}

/* The trash row and its newest old version, both checked, become the
 * live row again under the same id. */
static int restore_now(struct pgs *s, int64_t id, int64_t now_ns)
{
	unsigned char mac[DB_MAC_LEN];
	struct db_trash t;
	struct db_version v;
	struct db_secret m = { 0 };
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	pgq_int(&q, id);
	r = pg_run(s, "SELECT " TRASH_COLS " FROM trash t WHERE t.secret_id = $1 FOR UPDATE",
		   &q, &res);
	if (r < 0)
		return r;
	r = PQntuples(res) ? row_trash(s, res, 0, &t) : -ENOENT;
	PQclear(res);
	if (r == 0) {
		q.n = 0;
		pgq_int(&q, t.instance_id);
		pgq_text(&q, t.name);
		r = pg_run(s, "SELECT 1 FROM secrets WHERE instance_id = $1 AND name = $2", &q,
			   &res);
		if (r == 0) {
			r = PQntuples(res) ? -EEXIST : 0;
			PQclear(res);
		}
	}
	if (r == 0)
		r = t.version ? pgh_version_get(&s->base, id, t.version, &v, NULL) : -ENOENT;
	if (r < 0)
		return r;
	m = (struct db_secret){ .id = id, .instance_id = t.instance_id, .uid = t.uid,
				.gid = t.gid, .mode = t.mode, .version = v.version,
				.size = v.size, .flags = v.flags };
	memcpy(m.name, t.name, sizeof(m.name));
	r = pg_tag_make(pg_write_auth(s), "secrets", (struct pg_tagf[]){ TI(m.id), TI(m.instance_id),
			TT(m.name), TI(m.uid), TI(m.gid), TI(m.mode), TI(m.version), TI(m.size),
			TI(m.flags) }, 9, mac);
	q.n = 0;
	pgq_int(&q, id);
	pgq_int(&q, (int64_t)v.version);
	pgq_int(&q, now_ns);
	pgq_blob(&q, mac, sizeof(mac));
	if (r == 0)
		r = pg_change(s, "INSERT INTO secrets (id, instance_id, name, uid, gid, mode, "
			      "version, size, flags, ctime, mtime, chtime, updated_by, blob, mac) "
			      "SELECT t.secret_id, t.instance_id, t.name, t.uid, t.gid, t.mode, "
			      "v.version, v.size, v.flags, t.ctime, v.mtime, $3, v.updated_by, "
			      "v.blob, $4 FROM trash t JOIN versions v ON v.secret_id = t.secret_id "
			      "WHERE t.secret_id = $1 AND v.version = $2", &q, 1);
	q.n = 2;
	if (r == 0)
		r = pg_change(s, "DELETE FROM versions WHERE secret_id = $1 AND version = $2", &q, 1);
	q.n = 1;
	if (r == 0)
		r = pg_change(s, "DELETE FROM trash WHERE secret_id = $1", &q, 1);
	return r;
}

int pgt_trash_restore(struct db *db, int64_t secret_id, int64_t now_ns)
{
	struct pgs *s = P(db);
	int r = pgs_own_begin(s);

	if (r < 0)
		return r;
	r = pgh_touch_secret(s, secret_id, true);
	if (r == 0)
		r = restore_now(s, secret_id, now_ns);
	return pgs_own_end(s, r);
}

#define PURGE_WHERE "($1 = 0 OR instance_id = $1) AND ($2::text IS NULL OR name = $2) " \
		    "AND deleted < $3"

int pgt_trash_purge(struct db *db, int64_t instance_id, const char *name,
			   int64_t before_ns, int64_t *count)
{
	struct pgs *s = P(db);
	struct pgq q = { 0 };
	int r, n = 0;

	pgq_int(&q, instance_id);
	pgq_text(&q, name);
	pgq_int(&q, before_ns);
	r = pgs_own_begin(s);
	if (r < 0)
		return r;
	r = pg_change(s, "DELETE FROM versions WHERE secret_id IN (SELECT secret_id FROM trash "
		      "WHERE " PURGE_WHERE ")", &q, -1);
	if (r == 0)
		r = pg_change(s, "DELETE FROM secret_attrs WHERE secret_id IN (SELECT secret_id "
			      "FROM trash WHERE " PURGE_WHERE ")", &q, -1);
	if (r == 0)
		r = n = pg_run(s, "DELETE FROM trash WHERE " PURGE_WHERE, &q, NULL);
	if (r > 0)
		r = 0;
	r = pgs_own_end(s, r);
	if (r == 0 && count)
		*count = n;
	return r;
}

/* The dead row versions a purge left in the tables' pages: VACUUM, for a
 * role that owns them (others are skipped with the server's warning).
 * The server's WAL and its archive and base backups keep what they keep:
 * the README says so. */
int pgt_scrub(struct db *db)
{
	struct pgs *s = P(db);

	if (pg_in_own_txn(s))
		return -EBUSY;
	return pg_change(s, "VACUUM versions, trash, secret_attrs, secrets", NULL, -1);
}

int pgt_instance_secret_ids(struct db *db, int64_t instance_id,
				   int (*fn)(void *, int64_t, const char *, bool), void *ctx)
{
	struct pgs *s = P(db);
	char name[DB_NAME_MAX + 1];
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	/* Listed first and visited after, so fn may change these rows. */
	pgq_int(&q, instance_id);
	r = pg_run(s, "SELECT id, name, true FROM secrets WHERE instance_id = $1 UNION ALL "
		   "SELECT secret_id, name, false FROM trash WHERE instance_id = $1 "
		   "ORDER BY 3 DESC, 1", &q, &res);
	for (int i = 0; r == 0 && i < PQntuples(res); i++) {
		pg_name(res, i, 1, name);
		r = fn(ctx, pg_int(res, i, 0), name, *PQgetvalue(res, i, 2) != 0);
	}
	PQclear(res);
	return r;
}
