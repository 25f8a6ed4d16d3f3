/*
 * The PostgreSQL store's handle, transactions, instances and secrets.
 * Rules this file keeps:
 *  - one connection per handle, used under a recursive mutex; a write
 *    transaction holds it from begin to commit, as the SQLite store does;
 *  - every write transaction first takes one advisory lock, the same on
 *    every host: writes are serialised fleet-wide as they are on one host
 *    with SQLite, so a read inside the transaction (READ COMMITTED, after
 *    the lock) sees every earlier commit and check-and-set (--if-version)
 *    is exact across hosts;
 *  - a change to a tagged row reads it FOR UPDATE in the transaction,
 *    checks its tag, and writes the new tag with it (pg_tag.c);
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

#define INST_COLS "id, name, uid, gid, mode, ctime, mtime, generation, mac"
#define SEC_COLS "id, instance_id, name, uid, gid, mode, version, size, flags, ctime, " \
		 "mtime, chtime, updated_by, mac"
#define SEC_MAC 13

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
static int own_begin(struct pgs *s)
{
	return pgs_begin(&s->base, false);
}

static int own_end(struct pgs *s, int r)
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

/* -- instances ------------------------------------------------------------------------ */

static int inst_tag(const struct db_auth *auth, const struct db_instance *in,
		    unsigned char out[DB_MAC_LEN])
{
	struct pg_tagf f[] = { TI(in->id), TT(in->name), TI(in->uid), TI(in->gid),
			       TI(in->mode), TI(in->generation) };

	return pg_tag_make(auth, "instances", f, 6, out);
}

int pgs_row_instance(struct pgs *s, const PGresult *res, int row, struct db_instance *in)
{
	char what[64];

	in->id = pg_int(res, row, 0);
	pg_name(res, row, 1, in->name);
	in->uid = (uid_t)pg_int(res, row, 2);
	in->gid = (gid_t)pg_int(res, row, 3);
	in->mode = (mode_t)pg_int(res, row, 4);
	in->ctime_ns = pg_int(res, row, 5);
	in->mtime_ns = pg_int(res, row, 6);
	in->generation = (uint64_t)pg_int(res, row, 7);
	snprintf(what, sizeof(what), "instances row %lld", (long long)in->id);
	struct pg_tagf f[] = { TI(in->id), TT(in->name), TI(in->uid), TI(in->gid),
			       TI(in->mode), TI(in->generation) };

	return pg_tag_check(s, "instances", f, 6, res, row, 8, what);
}

/* PQexecParams asked for binary results: nextval's int8 comes as 8 bytes. */
static int next_id_bin(struct pgs *s, const char *table, int64_t *id)
{
	char sql[128];
	PGresult *res;
	int r;

	snprintf(sql, sizeof(sql), "SELECT nextval(pg_get_serial_sequence('%s', 'id'))", table);
	r = pg_run(s, sql, NULL, &res);
	if (r == 0) {
		*id = pg_int(res, 0, 0);
		PQclear(res);
	}
	return r;
}

static int instance_create_now(struct pgs *s, struct db_instance *in,
			       const struct db_blob *key)
{
	unsigned char mac[DB_MAC_LEN];
	struct pgq q = { 0 };
	int r = next_id_bin(s, "instances", &in->id);

	in->mode &= 07777;
	in->ctime_ns = in->mtime_ns = db_now_ns();
	if (r == 0)
		r = inst_tag(s->auth, in, mac);
	if (r < 0)
		return r;
	pgq_int(&q, in->id);
	pgq_text(&q, in->name);
	pgq_int(&q, in->uid);
	pgq_int(&q, in->gid);
	pgq_int(&q, in->mode);
	pgq_int(&q, in->ctime_ns);
	pgq_int(&q, (int64_t)in->generation);
	pgq_blob(&q, key->data, key->len);
	pgq_blob(&q, mac, sizeof(mac));
	return pg_change(s, "INSERT INTO instances (id, name, uid, gid, mode, ctime, mtime, "
			 "generation, wrapped_key, mac) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, "
			 "$8, $9)", &q, 1);
}

static int pgs_instance_create(struct db *db, struct db_instance *in,
			       const struct db_blob *key)
{
	struct pgs *s = P(db);
	int r = own_begin(s);

	if (r < 0)
		return r;
	r = instance_create_now(s, in, key);
	if (r == 0)
		r = pg_state_touch(s, in->id, true);
	return own_end(s, r);
}

static int instance_query(struct pgs *s, const char *where, struct pgq *q, bool lock,
			  struct db_instance *out, struct db_blob *key)
{
	char sql[256];
	PGresult *res;
	int r;

	snprintf(sql, sizeof(sql), "SELECT " INST_COLS ", wrapped_key FROM instances WHERE %s%s",
		 where, lock ? " FOR UPDATE" : "");
	r = pg_run(s, sql, q, &res);
	if (r < 0)
		return r;
	if (PQntuples(res) == 0) {
		pg_set_error("no such instance");
		r = -ENOENT;
	} else {
		r = pgs_row_instance(s, res, 0, out);
		if (r == 0 && key)
			r = pg_blob(res, 0, 9, key);
	}
	PQclear(res);
	return r;
}

static int pgs_instance_get(struct db *db, int64_t id, struct db_instance *out)
{
	struct pgq q = { 0 };

	pgq_int(&q, id);
	return instance_query(P(db), "id = $1", &q, false, out, NULL);
}

static int pgs_instance_find(struct db *db, const char *name, struct db_instance *out)
{
	struct pgq q = { 0 };

	pgq_text(&q, name);
	return instance_query(P(db), "name = $1", &q, false, out, NULL);
}

static int pgs_instance_key(struct db *db, int64_t id, struct db_instance *in,
			    struct db_blob *wrapped)
{
	struct pgq q = { 0 };

	wrapped->data = NULL;
	wrapped->len = 0;
	pgq_int(&q, id);
	return instance_query(P(db), "id = $1", &q, false, in, wrapped);
}

/* Reads the row FOR UPDATE, checks it, writes what change() made of it. */
static int instance_update(struct pgs *s, int64_t id, const char *sql,
			   void (*change)(struct db_instance *, struct pgq *, void *), void *ctx)
{
	unsigned char mac[DB_MAC_LEN];
	struct db_instance in;
	struct db_blob key = { 0 };
	struct pgq q = { 0 };
	int r = own_begin(s);

	if (r < 0)
		return r;
	pgq_int(&q, id);
	r = instance_query(s, "id = $1", &q, true, &in, &key);
	db_blob_free(&key);
	if (r == 0) {
		q.n = 1;
		change(&in, &q, ctx);
		r = inst_tag(s->auth_next ? s->auth_next : s->auth, &in, mac);
	}
	if (r == 0) {
		pgq_blob(&q, mac, sizeof(mac));
		r = pg_change(s, sql, &q, 1);
	}
	return own_end(s, r);
}

struct inst_key_change {
	uint64_t generation;
	const struct db_blob *wrapped;
};

static void set_key(struct db_instance *in, struct pgq *q, void *ctx)
{
	const struct inst_key_change *c = ctx;

	in->generation = c->generation;
	pgq_int(q, (int64_t)c->generation);
	pgq_blob(q, c->wrapped->data, c->wrapped->len);
}

static int pgs_instance_set_key(struct db *db, int64_t id, uint64_t generation,
				const struct db_blob *wrapped)
{
	struct inst_key_change c = { generation, wrapped };

	return instance_update(P(db), id, "UPDATE instances SET generation = $2, "
			       "wrapped_key = $3, mac = $4 WHERE id = $1", set_key, &c);
}

struct attr_change {
	uid_t uid;
	gid_t gid;
	mode_t mode;
	int64_t now_ns;
};

static void set_inst_attr(struct db_instance *in, struct pgq *q, void *ctx)
{
	const struct attr_change *c = ctx;

	in->uid = c->uid;
	in->gid = c->gid;
	in->mode = c->mode & 07777;
	pgq_int(q, in->uid);
	pgq_int(q, in->gid);
	pgq_int(q, in->mode);
	pgq_int(q, c->now_ns);
}

static int pgs_instance_set_attr(struct db *db, int64_t id, uid_t uid, gid_t gid,
				 mode_t mode, int64_t now_ns)
{
	struct attr_change c = { uid, gid, mode, now_ns };

	return instance_update(P(db), id, "UPDATE instances SET uid = $2, gid = $3, mode = $4, "
			       "mtime = $5, mac = $6 WHERE id = $1", set_inst_attr, &c);
}

static int pgs_instance_delete(struct db *db, int64_t id)
{
	struct pgs *s = P(db);
	struct pgq q = { 0 };
	PGresult *res;
	int r = own_begin(s);

	if (r < 0)
		return r;
	pgq_int(&q, id);
	r = pg_run(s, "SELECT 1 FROM secrets WHERE instance_id = $1 UNION ALL "
		   "SELECT 1 FROM trash WHERE instance_id = $1 LIMIT 1", &q, &res);
	if (r == 0) {
		r = PQntuples(res) ? -ENOTEMPTY : 0;
		PQclear(res);
	}
	if (r == 0)
		r = pg_change(s, "DELETE FROM instances WHERE id = $1", &q, 1);
	return own_end(s, r);
}

static int pgs_instance_each(struct db *db, int64_t after_id,
			     int (*fn)(void *, const struct db_instance *), void *ctx)
{
	struct pgs *s = P(db);
	struct db_instance in;
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	pgq_int(&q, after_id);
	r = pg_run(s, "SELECT " INST_COLS " FROM instances WHERE id > $1 ORDER BY id", &q, &res);
	for (int i = 0; r == 0 && i < PQntuples(res); i++) {
		r = pgs_row_instance(s, res, i, &in);
		if (r == 0)
			r = fn(ctx, &in);
	}
	PQclear(res);
	return r;
}

static int64_t count(struct pgs *s, const char *sql, const struct pgq *q)
{
	PGresult *res;
	int64_t n = -1;

	if (pg_run(s, sql, q, &res) == 0) {
		n = pg_int(res, 0, 0);
		PQclear(res);
	}
	return n;
}

static int64_t pgs_instance_count(struct db *db)
{
	return count(P(db), "SELECT count(*) FROM instances", NULL);
}

/* -- secrets ------------------------------------------------------------------------- */

static int sec_tag(const struct db_auth *auth, const struct db_secret *m,
		   unsigned char out[DB_MAC_LEN])
{
	struct pg_tagf f[] = { TI(m->id), TI(m->instance_id), TT(m->name), TI(m->uid),
			       TI(m->gid), TI(m->mode), TI(m->version), TI(m->size),
			       TI(m->flags) };

	return pg_tag_make(auth, "secrets", f, 9, out);
}

int pgs_row_secret(struct pgs *s, const PGresult *res, int row, struct db_secret *m)
{
	char what[64];

	m->id = pg_int(res, row, 0);
	m->instance_id = pg_int(res, row, 1);
	pg_name(res, row, 2, m->name);
	m->uid = (uid_t)pg_int(res, row, 3);
	m->gid = (gid_t)pg_int(res, row, 4);
	m->mode = (mode_t)pg_int(res, row, 5);
	m->version = (uint64_t)pg_int(res, row, 6);
	m->size = (uint64_t)pg_int(res, row, 7);
	m->flags = (uint32_t)pg_int(res, row, 8);
	m->ctime_ns = pg_int(res, row, 9);
	m->mtime_ns = pg_int(res, row, 10);
	m->chtime_ns = pg_int(res, row, 11);
	m->updated_by = (uid_t)pg_int(res, row, 12);
	snprintf(what, sizeof(what), "secrets row %lld", (long long)m->id);
	struct pg_tagf f[] = { TI(m->id), TI(m->instance_id), TT(m->name), TI(m->uid),
			       TI(m->gid), TI(m->mode), TI(m->version), TI(m->size),
			       TI(m->flags) };

	return pg_tag_check(s, "secrets", f, 9, res, row, SEC_MAC, what);
}

static int secret_query(struct pgs *s, const char *where, const struct pgq *q, bool lock,
			struct db_secret *out, struct db_blob *blob)
{
	char sql[256];
	PGresult *res;
	int r;

	snprintf(sql, sizeof(sql), "SELECT " SEC_COLS ", blob FROM secrets WHERE %s%s", where,
		 lock ? " FOR UPDATE" : "");
	r = pg_run(s, sql, q, &res);
	if (r < 0)
		return r;
	if (PQntuples(res) == 0) {
		pg_set_error("no such secret");
		r = -ENOENT;
	} else {
		r = pgs_row_secret(s, res, 0, out);
		if (r == 0 && blob)
			r = pg_blob(res, 0, SEC_MAC + 1, blob);
	}
	PQclear(res);
	return r;
}

static int pgs_secret_get(struct db *db, int64_t id, struct db_secret *out)
{
	struct pgq q = { 0 };

	pgq_int(&q, id);
	return secret_query(P(db), "id = $1", &q, false, out, NULL);
}

static int pgs_secret_find(struct db *db, int64_t instance_id, const char *name,
			   struct db_secret *out)
{
	struct pgq q = { 0 };

	pgq_int(&q, instance_id);
	pgq_text(&q, name);
	return secret_query(P(db), "instance_id = $1 AND name = $2", &q, false, out, NULL);
}

static int pgs_secret_blob(struct db *db, int64_t id, struct db_secret *meta,
			   struct db_blob *out)
{
	struct db_secret tmp;
	struct pgq q = { 0 };

	out->data = NULL;
	out->len = 0;
	pgq_int(&q, id);
	return secret_query(P(db), "id = $1", &q, false, meta ? meta : &tmp, out);
}

static int pgs_secret_each(struct db *db, int64_t instance_id, int64_t after_id,
			   int (*fn)(void *, const struct db_secret *), void *ctx)
{
	struct pgs *s = P(db);
	struct db_secret m;
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	pgq_int(&q, instance_id);
	pgq_int(&q, after_id);
	r = pg_run(s, "SELECT " SEC_COLS " FROM secrets WHERE instance_id = $1 AND id > $2 "
		   "ORDER BY id", &q, &res);
	for (int i = 0; r == 0 && i < PQntuples(res); i++) {
		r = pgs_row_secret(s, res, i, &m);
		if (r == 0)
			r = fn(ctx, &m);
	}
	PQclear(res);
	return r;
}

static int64_t pgs_secret_count(struct db *db, int64_t instance_id)
{
	struct pgq q = { 0 };

	pgq_int(&q, instance_id);
	return count(P(db), "SELECT count(*) FROM secrets WHERE instance_id = $1", &q);
}

static int secret_insert_now(struct pgs *s, struct db_secret *m, const struct db_blob *blob)
{
	unsigned char mac[DB_MAC_LEN];
	struct pgq q = { 0 };
	int r = next_id_bin(s, "secrets", &m->id);

	m->mode &= 07777;
	if (r == 0)
		r = sec_tag(s->auth, m, mac);
	if (r < 0)
		return r;
	pgq_int(&q, m->id);
	pgq_int(&q, m->instance_id);
	pgq_text(&q, m->name);
	pgq_int(&q, m->uid);
	pgq_int(&q, m->gid);
	pgq_int(&q, m->mode);
	pgq_int(&q, (int64_t)m->version);
	pgq_int(&q, (int64_t)m->size);
	pgq_int(&q, m->flags);
	pgq_int(&q, m->ctime_ns);
	pgq_int(&q, m->mtime_ns);
	pgq_int(&q, m->chtime_ns);
	pgq_int(&q, m->updated_by);
	pgq_blob(&q, blob->data, blob->len);
	pgq_blob(&q, mac, sizeof(mac));
	return pg_change(s, "INSERT INTO secrets (id, instance_id, name, uid, gid, mode, version, "
			 "size, flags, ctime, mtime, chtime, updated_by, blob, mac) VALUES ($1, $2, "
			 "$3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)", &q, 1);
}

static int pgs_secret_insert(struct db *db, struct db_secret *m, const struct db_blob *blob)
{
	struct pgs *s = P(db);
	int r = own_begin(s);

	if (r < 0)
		return r;
	r = pg_state_touch(s, m->instance_id, false);
	if (r == 0)
		r = secret_insert_now(s, m, blob);
	return own_end(s, r);
}

/* Reads the live row FOR UPDATE and checks it (and its instance's state,
 * when the change touches the live set). */
static int secret_locked(struct pgs *s, int64_t id, bool live, struct db_secret *m)
{
	struct pgq q = { 0 };
	int r;

	pgq_int(&q, id);
	r = secret_query(s, "id = $1", &q, true, m, NULL);
	if (r == 0 && live)
		r = pg_state_touch(s, m->instance_id, false);
	return r;
}

static int secret_write(struct pgs *s, const struct db_secret *m, const char *sql,
			struct pgq *q)
{
	unsigned char mac[DB_MAC_LEN];
	int r = sec_tag(s->auth_next ? s->auth_next : s->auth, m, mac);

	if (r < 0)
		return r;
	pgq_blob(q, mac, sizeof(mac));
	return pg_change(s, sql, q, 1);
}

static int pgs_secret_set_value(struct db *db, const struct db_secret *in,
				const struct db_blob *blob)
{
	struct pgs *s = P(db);
	struct db_secret m;
	struct pgq q = { 0 };
	int r = own_begin(s);

	if (r < 0)
		return r;
	r = secret_locked(s, in->id, true, &m);
	if (r == 0) {
		m.version = in->version;
		m.size = in->size;
		m.flags = in->flags;
		pgq_int(&q, m.id);
		pgq_int(&q, (int64_t)m.version);
		pgq_int(&q, (int64_t)m.size);
		pgq_int(&q, m.flags);
		pgq_int(&q, in->mtime_ns);
		pgq_int(&q, in->chtime_ns);
		pgq_int(&q, in->updated_by);
		pgq_blob(&q, blob->data, blob->len);
		r = secret_write(s, &m, "UPDATE secrets SET version = $2, size = $3, flags = $4, "
				 "mtime = $5, chtime = $6, updated_by = $7, blob = $8, mac = $9 "
				 "WHERE id = $1", &q);
	}
	return own_end(s, r);
}

static int pgs_secret_set_attr(struct db *db, int64_t id, uid_t uid, gid_t gid, mode_t mode,
			       int64_t now_ns)
{
	struct pgs *s = P(db);
	struct db_secret m;
	struct pgq q = { 0 };
	int r = own_begin(s);

	if (r < 0)
		return r;
	r = secret_locked(s, id, false, &m);
	if (r == 0) {
		m.uid = uid;
		m.gid = gid;
		m.mode = mode & 07777;
		pgq_int(&q, id);
		pgq_int(&q, m.uid);
		pgq_int(&q, m.gid);
		pgq_int(&q, m.mode);
		pgq_int(&q, now_ns);
		r = secret_write(s, &m, "UPDATE secrets SET uid = $2, gid = $3, mode = $4, "
				 "chtime = $5, mac = $6 WHERE id = $1", &q);
	}
	return own_end(s, r);
}

static int pgs_secret_rename(struct db *db, const struct db_secret *in,
			     const struct db_blob *blob)
{
	struct pgs *s = P(db);
	struct db_secret m;
	struct pgq q = { 0 };
	int r = own_begin(s);

	if (r < 0)
		return r;
	r = secret_locked(s, in->id, true, &m);
	if (r == 0) {
		memcpy(m.name, in->name, sizeof(m.name));
		m.version = in->version;
		pgq_int(&q, m.id);
		pgq_text(&q, m.name);
		pgq_int(&q, (int64_t)m.version);
		pgq_int(&q, in->chtime_ns);
		pgq_blob(&q, blob->data, blob->len);
		r = secret_write(s, &m, "UPDATE secrets SET name = $2, version = $3, chtime = $4, "
				 "blob = $5, mac = $6 WHERE id = $1", &q);
	}
	return own_end(s, r);
}

static int pgs_secret_delete(struct db *db, int64_t id)
{
	struct pgs *s = P(db);
	struct db_secret m;
	struct pgq q = { 0 };
	int r = own_begin(s);

	if (r < 0)
		return r;
	r = secret_locked(s, id, true, &m);
	pgq_int(&q, id);
	if (r == 0)
		r = pg_change(s, "DELETE FROM secrets WHERE id = $1", &q, 1);
	return own_end(s, r);
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
	.instance_create = pgs_instance_create,
	.instance_get = pgs_instance_get,
	.instance_find = pgs_instance_find,
	.instance_key = pgs_instance_key,
	.instance_set_key = pgs_instance_set_key,
	.instance_set_attr = pgs_instance_set_attr,
	.instance_delete = pgs_instance_delete,
	.instance_each = pgs_instance_each,
	.instance_count = pgs_instance_count,
	.instance_secret_ids = pgh_instance_secret_ids,
	.secret_get = pgs_secret_get,
	.secret_find = pgs_secret_find,
	.secret_blob = pgs_secret_blob,
	.secret_each = pgs_secret_each,
	.secret_count = pgs_secret_count,
	.secret_insert = pgs_secret_insert,
	.secret_set_value = pgs_secret_set_value,
	.secret_set_attr = pgs_secret_set_attr,
	.secret_rename = pgs_secret_rename,
	.secret_delete = pgs_secret_delete,
	.secret_adopt = pgh_secret_adopt,
	.version_archive = pgh_version_archive,
	.version_get = pgh_version_get,
	.version_each = pgh_version_each,
	.version_set_blob = pgh_version_set_blob,
	.trash_put = pgh_trash_put,
	.trash_find = pgh_trash_find,
	.trash_restore = pgh_trash_restore,
	.trash_each = pgh_trash_each,
	.trash_purge = pgh_trash_purge,
	.scrub = pgh_scrub,
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
