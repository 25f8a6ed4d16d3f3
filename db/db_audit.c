/*
 * The audit log's table. Rules this file keeps:
 *  - rows are written and read as given: it neither computes nor checks
 *    the chain (fs/audit.c does, with the key);
 *  - its own SQLite connection with synchronous=FULL, used by one thread at
 *    a time under a recursive mutex held from begin to commit; or, attached
 *    (db_audit_attach), the store's own connection and lock, so entries
 *    commit in the transaction of the change they record;
 *  - SQLite's result codes become -errno here.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "db_audit.h"
#include "db_int.h"

#define BUSY_TIMEOUT_MS 10000
#define WAL_LIMIT "4194304"	/* bytes a reset WAL is cut back to */
#define ROW_COLS "seq, time, uid, gid, pid, comm, instance, key, op, result, detail, mac, " \
		 "count, first_time"

enum audit_stmt {
	AS_INSERT, AS_LAST, AS_LAST_BEFORE, AS_DELETE_UPTO, AS_EACH, AS_META_GET,
	AS_META_SET, AS_META_ADD, AS_COUNT
};

static const char *const audit_sql[AS_COUNT] = {
	[AS_INSERT] = "INSERT INTO audit (" ROW_COLS ") VALUES "
		      "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
	[AS_LAST] = "SELECT " ROW_COLS " FROM audit ORDER BY seq DESC LIMIT 1",
	[AS_LAST_BEFORE] = "SELECT " ROW_COLS " FROM audit WHERE seq = "
			   "(SELECT max(seq) FROM audit WHERE time < ?1)",
	[AS_DELETE_UPTO] = "DELETE FROM audit WHERE seq <= ?1",
	[AS_EACH] = "SELECT " ROW_COLS " FROM audit WHERE (?1 IS NULL OR instance = ?1) "
		    "AND (?2 IS NULL OR key = ?2) AND time >= ?3 ORDER BY seq",
	[AS_META_GET] = "SELECT value FROM meta WHERE key = ?1",
	[AS_META_SET] = "INSERT INTO meta (key, value) VALUES (?1, ?2) "
			"ON CONFLICT (key) DO UPDATE SET value = excluded.value",
	[AS_META_ADD] = "INSERT INTO meta (key, value) VALUES (?1, ?2) "
			"ON CONFLICT (key) DO NOTHING",
};

struct db_audit {
	struct db *db;		/* attached: the store's connection, else NULL */
	sqlite3 *conn;
	pthread_mutex_t lock;
	sqlite3_stmt *stmt[AS_COUNT];
};

static int audit_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK: case SQLITE_ROW: case SQLITE_DONE:
		return 0;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_BUSY: case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_NOTADB: case SQLITE_CORRUPT: case SQLITE_FORMAT: case SQLITE_ERROR:
		return -EPROTO;
	case SQLITE_PERM: case SQLITE_AUTH: case SQLITE_CANTOPEN:
		return -EACCES;
	default:
		return -EIO;
	}
}

static void a_lock(struct db_audit *a)
{
	if (a->db)
		dbi_lock(a->db);
	else
		pthread_mutex_lock(&a->lock);
}

static void a_unlock(struct db_audit *a)
{
	if (a->db)
		dbi_unlock(a->db);
	else
		pthread_mutex_unlock(&a->lock);
}

static sqlite3_stmt *stmt_get(struct db_audit *a, enum audit_stmt id, int *err)
{
	int rc;

	if (a->db)
		return dbi_stmt(a->db, audit_sql[id], err);
	if (!a->stmt[id]) {
		rc = sqlite3_prepare_v3(a->conn, audit_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
					&a->stmt[id], NULL);
		if (rc != SQLITE_OK) {
			*err = audit_errno(rc);
			return NULL;
		}
	}
	return a->stmt[id];
}

static void stmt_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

static int exec_sql(struct db_audit *a, const char *sql)
{
	return audit_errno(sqlite3_exec(a->conn, sql, NULL, NULL, NULL));
}

int db_audit_open(struct db_audit **out, const char *path, bool readonly)
{
	struct db_audit *a;
	pthread_mutexattr_t attr;
	int flags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) |
		    SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW;
	int r;

	*out = NULL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&a->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	r = audit_errno(sqlite3_open_v2(path, &a->conn, flags, NULL));
	if (r == 0) {
		sqlite3_busy_timeout(a->conn, BUSY_TIMEOUT_MS);
		sqlite3_extended_result_codes(a->conn, 1);
		r = exec_sql(a, "PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; "
			     "PRAGMA journal_size_limit = " WAL_LIMIT ";");
	}
	/* The table comes with the schema (db.c's migrations); check it is there. */
	if (r == 0)
		r = exec_sql(a, "SELECT count, first_time FROM audit LIMIT 0");
	if (r < 0) {
		db_audit_close(a);
		return r;
	}
	*out = a;
	return 0;
}

void db_audit_close(struct db_audit *a)
{
	if (!a)
		return;
	if (a->db) {		/* the statements are the store's */
		free(a);
		return;
	}
	for (int i = 0; i < AS_COUNT; i++)
		sqlite3_finalize(a->stmt[i]);
	sqlite3_close_v2(a->conn);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

int db_audit_attach(struct db_audit **out, struct db *db)
{
	struct db_audit *a = calloc(1, sizeof(*a));

	*out = a;
	if (!a)
		return -ENOMEM;
	a->db = db;
	a->conn = dbi_conn(db);
	return 0;
}

int db_audit_begin(struct db_audit *a)
{
	int r;

	if (a->db)
		return db_begin(a->db);
	pthread_mutex_lock(&a->lock);
	r = exec_sql(a, "BEGIN IMMEDIATE");
	if (r < 0)
		pthread_mutex_unlock(&a->lock);
	return r;
}

int db_audit_begin_lazy(struct db_audit *a)
{
	int r = a->db ? db_begin_lazy(a->db) : -EBUSY;

	return r == -EBUSY ? db_audit_begin(a) : r;
}

int db_audit_commit(struct db_audit *a)
{
	int r;

	if (a->db)
		return db_commit(a->db);
	r = exec_sql(a, "COMMIT");

	if (r < 0 && !sqlite3_get_autocommit(a->conn))
		sqlite3_exec(a->conn, "ROLLBACK", NULL, NULL, NULL);
	pthread_mutex_unlock(&a->lock);
	return r;
}

int db_audit_read_begin(struct db_audit *a)
{
	int r;

	a_lock(a);
	r = exec_sql(a, "BEGIN DEFERRED");
	if (r < 0)
		a_unlock(a);
	return r;
}

void db_audit_read_end(struct db_audit *a)
{
	if (!sqlite3_get_autocommit(a->conn) && exec_sql(a, "COMMIT") < 0)
		sqlite3_exec(a->conn, "ROLLBACK", NULL, NULL, NULL);
	a_unlock(a);
}

void db_audit_rollback(struct db_audit *a)
{
	if (a->db) {
		db_rollback(a->db);
		return;
	}
	if (!sqlite3_get_autocommit(a->conn))
		sqlite3_exec(a->conn, "ROLLBACK", NULL, NULL, NULL);
	pthread_mutex_unlock(&a->lock);
}

static void column_text(sqlite3_stmt *st, int col, char *dst, size_t size)
{
	const unsigned char *s = sqlite3_column_text(st, col);
	size_t n = (size_t)sqlite3_column_bytes(st, col);

	if (!s)
		n = 0;
	if (n >= size)
		n = size - 1;
	if (n)
		memcpy(dst, s, n);
	dst[n] = '\0';
}

static void row_read(sqlite3_stmt *st, struct db_audit_row *r)
{
	const void *mac = sqlite3_column_blob(st, 11);
	size_t n = (size_t)sqlite3_column_bytes(st, 11);

	memset(r, 0, sizeof(*r));
	r->seq = sqlite3_column_int64(st, 0);
	r->time_ns = sqlite3_column_int64(st, 1);
	r->uid = (uint32_t)sqlite3_column_int64(st, 2);
	r->gid = (uint32_t)sqlite3_column_int64(st, 3);
	r->pid = (int32_t)sqlite3_column_int64(st, 4);
	column_text(st, 5, r->comm, sizeof(r->comm));
	column_text(st, 6, r->instance, sizeof(r->instance));
	column_text(st, 7, r->key, sizeof(r->key));
	column_text(st, 8, r->op, sizeof(r->op));
	r->result = (int32_t)sqlite3_column_int64(st, 9);
	column_text(st, 10, r->detail, sizeof(r->detail));
	/* A mac of the wrong length stays zero: it will not verify. */
	if (mac && n == DB_AUDIT_MAC_LEN)
		memcpy(r->mac, mac, n);
	r->count = sqlite3_column_int64(st, 12);
	r->first_ns = sqlite3_column_type(st, 13) == SQLITE_NULL ? r->time_ns :
		      sqlite3_column_int64(st, 13);
}

int db_audit_insert(struct db_audit *a, const struct db_audit_row *row)
{
	sqlite3_stmt *st;
	int r = 0;

	a_lock(a);
	st = stmt_get(a, AS_INSERT, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, row->seq);
		sqlite3_bind_int64(st, 2, row->time_ns);
		sqlite3_bind_int64(st, 3, row->uid);
		sqlite3_bind_int64(st, 4, row->gid);
		sqlite3_bind_int64(st, 5, row->pid);
		sqlite3_bind_text(st, 6, row->comm, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 7, row->instance, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 8, row->key, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 9, row->op, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 10, row->result);
		sqlite3_bind_text(st, 11, row->detail, -1, SQLITE_STATIC);
		sqlite3_bind_blob(st, 12, row->mac, DB_AUDIT_MAC_LEN, SQLITE_STATIC);
		sqlite3_bind_int64(st, 13, row->count);
		if (row->first_ns != row->time_ns)
			sqlite3_bind_int64(st, 14, row->first_ns);
		r = audit_errno(sqlite3_step(st));
		stmt_done(st);
	}
	a_unlock(a);
	return r;
}

/* Runs a statement that returns at most one row into out. */
static int one_row(struct db_audit *a, enum audit_stmt id, const int64_t *arg,
		   struct db_audit_row *out)
{
	sqlite3_stmt *st;
	int r = 0, rc;

	a_lock(a);
	st = stmt_get(a, id, &r);
	if (st) {
		if (arg)
			sqlite3_bind_int64(st, 1, *arg);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			row_read(st, out);
		r = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : audit_errno(rc);
		stmt_done(st);
	}
	a_unlock(a);
	return r;
}

int db_audit_last(struct db_audit *a, struct db_audit_row *out)
{
	return one_row(a, AS_LAST, NULL, out);
}

int db_audit_last_before(struct db_audit *a, int64_t before_ns, struct db_audit_row *out)
{
	return one_row(a, AS_LAST_BEFORE, &before_ns, out);
}

int db_audit_delete_upto(struct db_audit *a, int64_t seq)
{
	sqlite3_stmt *st;
	int r = 0;

	a_lock(a);
	st = stmt_get(a, AS_DELETE_UPTO, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, seq);
		r = audit_errno(sqlite3_step(st));
		stmt_done(st);
	}
	a_unlock(a);
	return r;
}

int db_audit_each(struct db_audit *a, const struct db_audit_filter *f,
		  int (*fn)(void *, const struct db_audit_row *), void *ctx)
{
	struct db_audit_row row;
	sqlite3_stmt *st;
	int r = 0, rc;

	a_lock(a);
	st = stmt_get(a, AS_EACH, &r);
	if (st) {
		if (f && f->instance)
			sqlite3_bind_text(st, 1, f->instance, -1, SQLITE_STATIC);
		if (f && f->key)
			sqlite3_bind_text(st, 2, f->key, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, f ? f->since_ns : INT64_MIN);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			row_read(st, &row);
			r = fn(ctx, &row);
			if (r)
				break;
		}
		if (!r && rc != SQLITE_DONE)
			r = audit_errno(rc);
		stmt_done(st);
	}
	a_unlock(a);
	return r;
}

int db_audit_checkpoint(struct db_audit *a)
{
	int rc;

	a_lock(a);
	sqlite3_busy_timeout(a->conn, 0);
	rc = sqlite3_wal_checkpoint_v2(a->conn, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	sqlite3_busy_timeout(a->conn, BUSY_TIMEOUT_MS);
	a_unlock(a);
	return audit_errno(rc);
}

int db_audit_meta_get(struct db_audit *a, const char *key, unsigned char *buf, size_t len)
{
	sqlite3_stmt *st;
	int r = 0, rc;

	a_lock(a);
	st = stmt_get(a, AS_META_GET, &r);
	if (st) {
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			if ((size_t)sqlite3_column_bytes(st, 0) != len)
				r = -EPROTO;
			else
				memcpy(buf, sqlite3_column_blob(st, 0), len);
		} else {
			r = rc == SQLITE_DONE ? -ENOENT : audit_errno(rc);
		}
		stmt_done(st);
	}
	a_unlock(a);
	return r;
}

static int meta_write(struct db_audit *a, enum audit_stmt id, const char *key,
		      const unsigned char *buf, size_t len)
{
	sqlite3_stmt *st;
	int r = 0;

	a_lock(a);
	st = stmt_get(a, id, &r);
	if (st) {
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
		sqlite3_bind_blob(st, 2, buf, (int)len, SQLITE_STATIC);
		r = audit_errno(sqlite3_step(st));
		if (r == 0 && !sqlite3_changes(a->conn))
			r = -EEXIST;
		stmt_done(st);
	}
	a_unlock(a);
	return r;
}

int db_audit_meta_set(struct db_audit *a, const char *key, const unsigned char *buf,
		      size_t len)
{
	return meta_write(a, AS_META_SET, key, buf, len);
}

int db_audit_meta_add(struct db_audit *a, const char *key, const unsigned char *buf,
		      size_t len)
{
	return meta_write(a, AS_META_ADD, key, buf, len);
}
