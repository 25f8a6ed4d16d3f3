/*
 * The PostgreSQL store's handle, transactions, meta and instance states,
 * and its table of ops (the rows are in pg_rows.c, history in pg_hist.c,
 * the trash in pg_trash.c). Rules this file keeps:
 *  - one connection per handle, used under a recursive mutex; a write
 *    transaction holds it from begin to commit, as the SQLite store does;
 *  - every write transaction first takes one advisory lock, the same on
 *    every host: writes are serialised fleet-wide as they are on one host
 *    with SQLite, so a read inside the transaction (READ COMMITTED, after
 *    the lock) sees every earlier commit and check-and-set (--if-version)
 *    is exact across hosts;
 *  - reads go to the primary only (pg.c), and are refused while the change
 *    feed is lost beyond the bound (pg_listen.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"
#include "store.h"

#define WRITE_LOCK "7382350474143589170"	/* pg_advisory_xact_lock key */

static __thread struct pgs *pinned;	/* the db_read_begin snapshot's store */

static struct pgs *P(struct db *db)
{
	return (struct pgs *)db;
}

/* -- handle ------------------------------------------------------------------------ */

static int pgs_open(struct db **out, const char *spec, int flags)
{
	pthread_mutexattr_t a;
	struct pgs *s;
	int r;

	*out = NULL;
	r = pg_lib_load();
	if (r < 0)
		return r;
	if (strlen(spec) >= PG_URI_MAX) {
		pg_set_error("database URI too long");
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base.ops = &db_pg_ops;
	memcpy(s->uri, spec, strlen(spec) + 1);
	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&s->lock, &a);
	pthread_mutexattr_destroy(&a);
	pthread_mutex_init(&s->rlock, NULL);
	if (flags & DB_CREATE)
		pg_database_ensure(s->uri);
	s->readonly = flags & DB_READONLY;
	r = pg_connect(s->uri, false, &s->conn);
	if (r == 0)
		r = flags & DB_CREATE ? pg_schema_create(s->conn) :
		    pg_schema_check(s->conn, !(flags & (DB_READONLY | DB_LOG)));
	if (r == 0)
		r = pg_session(s, s->conn);
	if (r < 0) {
		pgs_close_handle(s);
		return r;
	}
	*out = &s->base;
	return 0;
}

void pgs_close_handle(struct pgs *s)
{
	pg_listen_stop(s);
	pg_readers_close(s);
	if (s->conn)
		PQfinish(s->conn);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->rlock);
	free(s->dirty);
	free(s);
}

static void pgs_close(struct db *db)
{
	if (db)
		pgs_close_handle(P(db));
}

static const char *pgs_path(struct db *db)
{
	return P(db)->uri;
}

/* amcheck is not for the vault's role: the server checks its own pages
 * (data checksums); here, every row is read back whole. */
static int pgs_check_integrity(struct db *db)
{
	static const char sql[] = "SELECT (SELECT count(*) FROM instances) + "
				  "(SELECT count(*) FROM secrets) + (SELECT count(*) FROM versions)";
	PGresult *res;
	int r = pg_run(P(db), sql, NULL, &res);

	if (r == 0)
		PQclear(res);
	return r == -EIO ? -EPROTO : r;
}

static int pgs_files(const char *spec, int (*fn)(void *, const char *, bool), void *ctx)
{
	return 0;	/* none on this machine */
}

/* -- transactions ------------------------------------------------------------------ */

/* Connections for reads outside transactions, opened when first needed:
 * a server's threads read side by side. */
static void pgs_set_readers(struct db *db, unsigned max)
{
	struct pgs *s = P(db);

	pthread_mutex_lock(&s->rlock);
	if (max > s->nreaders)
		s->nreaders = max < PG_READERS_MAX ? max : PG_READERS_MAX;
	pthread_mutex_unlock(&s->rlock);
}

/* A REPEATABLE READ transaction holding the connection: one snapshot, for
 * a backup or the audit log's verification. Other threads wait meanwhile,
 * so a holder must not wait for them. */
void pg_snapshot_begin(struct pgs *s)
{
	if (pinned || pg_in_own_txn(s))
		return;
	pg_lock(s);
	if (pg_ready(s) < 0 ||
	    pg_run(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", NULL, NULL) < 0) {
		pg_unlock(s);
		return;
	}
	s->reading = true;
	pinned = s;
}

void pg_snapshot_end(struct pgs *s)
{
	if (pinned != s)
		return;
	pinned = NULL;
	if (s->reading) {
		(void)pg_run(s, "COMMIT", NULL, NULL);
		s->reading = false;
	}
	pg_unlock(s);
}

/* db_read_begin: nothing. A server's thread inside one may wait for
 * another (the audit log's writer), which must still reach the writer's
 * connection; so each read sees the latest committed state. */
static void pgs_read_begin(struct db *db)
{
}

static void pgs_read_end(struct db *db)
{
}

static bool pgs_read_pinned(struct db *db)
{
	return false;
}

static int begin_outer(struct pgs *s, bool lazy)
{
	int r;

	if (s->reading) {	/* the thread's snapshot ends where its write begins */
		(void)pg_run(s, "COMMIT", NULL, NULL);
		s->reading = false;
	}
	/* A connection found lost at BEGIN (the server restarted or failed
	 * over since its last use; reads went to readers) is made anew: BEGIN
	 * changed nothing yet. */
	r = pg_run(s, "BEGIN ISOLATION LEVEL READ COMMITTED", NULL, NULL);
	if (r == -EIO && s->conn && PQstatus(s->conn) != CONNECTION_OK)
		r = pg_run(s, "BEGIN ISOLATION LEVEL READ COMMITTED", NULL, NULL);
	if (r < 0)
		return r;
	s->depth = 1;
	s->broken = false;
	atomic_store(&s->owner, pthread_self());
	if (lazy)
		r = pg_run(s, "SET LOCAL synchronous_commit = off", NULL, NULL);
	if (r >= 0)
		r = pg_run(s, "SELECT pg_advisory_xact_lock(" WRITE_LOCK ")", NULL, NULL);
	return r < 0 ? r : 0;
}

static void txn_end(struct pgs *s)
{
	if (--s->depth == 0) {
		atomic_store(&s->owner, (pthread_t)0);
		s->ndirty = 0;
		s->broken = false;
	}
}

static int pgs_begin(struct db *db, bool lazy)
{
	struct pgs *s = P(db);
	int r;

	pg_lock(s);
	if (s->depth) {
		r = lazy ? -EBUSY : pg_run(s, "SAVEPOINT nested", NULL, NULL);
		if (r < 0) {
			pg_unlock(s);
			return r;
		}
		s->depth++;
		return 0;
	}
	r = begin_outer(s, lazy);
	if (r < 0) {
		if (s->depth) {
			(void)pg_run(s, "ROLLBACK", NULL, NULL);
			txn_end(s);
		}
		pg_unlock(s);
	}
	return r;
}

/* At the outermost commit: each changed instance's state, and the floor. */
static int states_update(struct pgs *s)
{
	int r = 0;

	for (size_t i = 0; r == 0 && i < s->ndirty; i++)
		r = pg_state_update(s, s->dirty[i], s->auth, true);
	if (r == 0 && s->ndirty)
		r = pg_floor_update(s, s->auth);
	return r;
}

static int commit_outer(struct pgs *s)
{
	int r = s->broken ? -EIO : states_update(s);

	if (r < 0) {
		(void)pg_run(s, "ROLLBACK", NULL, NULL);
		return r;
	}
	r = pg_commit_sql(s);
	if (r < 0 && PQstatus(s->conn) != CONNECTION_OK)
		pg_set_error("the database connection was lost during COMMIT (a failover?): "
			     "the change is reported as failed; it may or may not be stored");
	else if (r < 0)
		(void)pg_run(s, "ROLLBACK", NULL, NULL);
	return r < 0 ? r : 0;
}

static void undo_nested(struct pgs *s)
{
	(void)pg_run(s, "ROLLBACK TO nested", NULL, NULL);
	(void)pg_run(s, "RELEASE nested", NULL, NULL);
}

static int pgs_commit(struct db *db)
{
	struct pgs *s = P(db);
	bool last = s->depth == 1;
	int r;

	if (s->depth > 1) {
		r = s->broken ? -EIO : pg_run(s, "RELEASE nested", NULL, NULL);
		if (r < 0 && !s->broken)
			undo_nested(s);
	} else {
		r = commit_outer(s);
	}
	txn_end(s);
	pg_unlock(s);
	if (last)
		pg_tag_flush(s);
	return r < 0 ? r : 0;
}

static void pgs_rollback(struct db *db)
{
	struct pgs *s = P(db);
	bool last = s->depth == 1;

	if (!s->broken && s->depth > 1)
		undo_nested(s);
	else if (!s->broken)
		(void)pg_run(s, "ROLLBACK", NULL, NULL);
	txn_end(s);
	pg_unlock(s);
	if (last)
		pg_tag_flush(s);
}

/* Wraps one change in its own transaction unless the caller holds one. */
int pgs_own_begin(struct pgs *s)
{
	return pgs_begin(&s->base, false);
}

int pgs_own_end(struct pgs *s, int r)
{
	if (r == 0)
		return pgs_commit(&s->base);
	pgs_rollback(&s->base);
	return r;
}

static int pgs_change_seq(struct db *db, uint64_t *out)
{
	return pg_listen_seq(P(db), out);
}

/* -- meta ---------------------------------------------------------------------------- */

static int pgs_meta_get(struct db *db, const char *key, struct db_blob *out)
{
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	out->data = NULL;
	out->len = 0;
	pgq_text(&q, key);
	r = pg_run(P(db), "SELECT value FROM meta WHERE key = $1", &q, &res);
	if (r < 0)
		return r;
	r = PQntuples(res) ? pg_blob(res, 0, 0, out) : -ENOENT;
	PQclear(res);
	return r;
}

static int pgs_meta_set(struct db *db, const char *key, const unsigned char *v, size_t len)
{
	struct pgq q = { 0 };

	pgq_text(&q, key);
	pgq_blob(&q, v, len);
	return pg_change(P(db), "INSERT INTO meta (key, value) VALUES ($1, $2) "
			 "ON CONFLICT (key) DO UPDATE SET value = excluded.value", &q, -1);
}

/* -- state, floor ---------------------------------------------------------------------- */

static void pgs_set_auth(struct db *db, const struct db_auth *auth)
{
	P(db)->auth = auth;
}

static int pgs_instance_seq(struct db *db, int64_t inst, bool latest, int64_t *seq)
{
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	pgq_int(&q, inst);
	r = pg_run(P(db), "SELECT seq FROM instances WHERE id = $1", &q, &res);
	if (r < 0)
		return r;
	r = PQntuples(res) ? 0 : -ENOENT;
	if (r == 0)
		*seq = pg_int(res, 0, 0);
	PQclear(res);
	return r;
}

static int pgs_state_check(struct db *db, int64_t inst, int64_t *seq,
			   int (*fn)(void *, int64_t, uint64_t), void *ctx)
{
	return pg_state_scan(P(db), inst, seq, true, fn, ctx);
}

static int pgs_audit_floor(struct db *db, int64_t *floor)
{
	return pg_floor_read(P(db), floor, false);
}

static int pgs_audit_entry_mac(struct db *db, int64_t seq, unsigned char *out, size_t len)
{
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	pgq_int(&q, seq);
	r = pg_run(P(db), "SELECT mac FROM audit WHERE seq = $1", &q, &res);
	if (r < 0)
		return r;
	r = PQntuples(res) ? 0 : -ENOENT;
	if (r == 0 && (size_t)PQgetlength(res, 0, 0) >= len)
		memcpy(out, PQgetvalue(res, 0, 0), len);
	PQclear(res);
	return r;
}

const struct db_store_ops db_pg_ops = {
	.name = "postgresql",
	.open = pgs_open,
	.close = pgs_close,
	.path = pgs_path,
	.check_integrity = pgs_check_integrity,
	.files = pgs_files,
	.set_readers = pgs_set_readers,
	.read_begin = pgs_read_begin,
	.read_end = pgs_read_end,
	.read_pinned = pgs_read_pinned,
	.begin = pgs_begin,
	.commit = pgs_commit,
	.rollback = pgs_rollback,
	.change_seq = pgs_change_seq,
	.meta_get = pgs_meta_get,
	.meta_set = pgs_meta_set,
	.instance_create = pgr_instance_create,
	.instance_get = pgr_instance_get,
	.instance_find = pgr_instance_find,
	.instance_key = pgr_instance_key,
	.instance_set_key = pgr_instance_set_key,
	.instance_set_attr = pgr_instance_set_attr,
	.instance_delete = pgr_instance_delete,
	.instance_each = pgr_instance_each,
	.instance_count = pgr_instance_count,
	.instance_secret_ids = pgt_instance_secret_ids,
	.secret_get = pgr_secret_get,
	.secret_find = pgr_secret_find,
	.secret_blob = pgr_secret_blob,
	.secret_each = pgr_secret_each,
	.secret_count = pgr_secret_count,
	.secret_insert = pgr_secret_insert,
	.secret_id_reserve = pgr_secret_id_reserve,
	.secret_set_value = pgr_secret_set_value,
	.secret_set_attr = pgr_secret_set_attr,
	.secret_rename = pgr_secret_rename,
	.secret_delete = pgr_secret_delete,
	.secret_adopt = pgh_secret_adopt,
	.version_archive = pgh_version_archive,
	.version_get = pgh_version_get,
	.version_each = pgh_version_each,
	.version_set_blob = pgh_version_set_blob,
	.trash_put = pgt_trash_put,
	.trash_find = pgt_trash_find,
	.trash_restore = pgt_trash_restore,
	.trash_each = pgt_trash_each,
	.trash_purge = pgt_trash_purge,
	.scrub = pgt_scrub,
	.attr_get = pgh_attr_get,
	.attr_set = pgh_attr_set,
	.set_auth = pgs_set_auth,
	.auth_upgrade = pgh_auth_upgrade,
	.auth_rekey = pgh_auth_rekey,
	.auth_check_all = pgh_auth_check_all,
	.instance_seq = pgs_instance_seq,
	.state_check = pgs_state_check,
	.states_convert = pg_states_convert,
	.audit_floor = pgs_audit_floor,
	.audit_entry_mac = pgs_audit_entry_mac,
	.backup = pgb_backup,
	.restore = pgb_restore,
	.audit_insert = pga_insert,
	.audit_last = pga_last,
	.audit_delete_upto = pga_delete_upto,
	.audit_each = pga_each,
	.audit_tidy = pga_tidy,
	.meta_add = pga_meta_add,
	.snapshot_begin = pga_snapshot_begin,
	.snapshot_end = pga_snapshot_end,
};
