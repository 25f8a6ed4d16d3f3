/*
 * The audit log's table in the SQLite store (db_audit.c builds the log on
 * these). Rules this file keeps:
 *  - rows are written and read as given: it neither computes nor checks
 *    the chain (fs/audit.c does, with the key);
 *  - on the store's connection, or one of the log's own (SQ_LOG:
 *    synchronous=FULL, no schema work), whose transactions are sqlite_txn.c's;
 *  - its statements run through sq_query and sq_change like the store's.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sqlite_int.h"

#define ROW_COLS "seq, time, uid, gid, pid, comm, instance, key, op, result, detail, mac, " \
		 "count, first_time"

static const char sql_insert[] =
	"INSERT INTO audit (" ROW_COLS ") VALUES "
	"(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
static const char sql_last[] = "SELECT " ROW_COLS " FROM audit ORDER BY seq DESC LIMIT 1";
static const char sql_last_before[] =
	"SELECT " ROW_COLS " FROM audit WHERE seq = "
	"(SELECT max(seq) FROM audit WHERE time < ?1)";
static const char sql_delete_upto[] = "DELETE FROM audit WHERE seq <= ?1";
static const char sql_each[] =
	"SELECT " ROW_COLS " FROM audit WHERE (?1 IS NULL OR instance = ?1) "
	"AND (?2 IS NULL OR key = ?2) AND time >= ?3 ORDER BY seq";
static const char sql_meta_add[] =
	"INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING";
static const char sql_read_begin[] = "BEGIN DEFERRED";
static const char sql_read_end[] = "COMMIT";

/* A read transaction on the handle's own connection, holding its lock. */
int sq_snapshot_begin(struct db *h)
{
	struct sq *db = sq_of(h);
	int r;

	sq_lock(db);
	r = sq_change(db, sql_read_begin, -1, SQ_NOARGS, NULL, NULL);
	if (r < 0)
		sq_unlock(db);
	return r;
}

void sq_snapshot_end(struct db *h)
{
	struct sq *db = sq_of(h);

	if (!sqlite3_get_autocommit(db->conn) &&
	    sq_change(db, sql_read_end, -1, SQ_NOARGS, NULL, NULL) < 0)
		sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
	sq_unlock(db);
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

static int row_read(struct sq *db, sqlite3_stmt *st, void *out)
{
	struct db_audit_row *r = out;
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
	return 0;
}

int sq_audit_insert(struct db *h, const struct db_audit_row *row)
{
	struct db_blob mac = { (unsigned char *)row->mac, DB_AUDIT_MAC_LEN };

	return sq_change(sq_of(h), sql_insert, -1,
			 SQ_ARGS(SQ_I(row->seq), SQ_I(row->time_ns), SQ_I(row->uid),
				 SQ_I(row->gid), SQ_I(row->pid), SQ_T(row->comm),
				 SQ_T(row->instance), SQ_T(row->key), SQ_T(row->op),
				 SQ_I(row->result), SQ_T(row->detail), SQ_B(&mac),
				 SQ_I(row->count), row->first_ns != row->time_ns ?
				 SQ_I(row->first_ns) : SQ_T(NULL)), NULL, NULL);
}

int sq_audit_last(struct db *h, int64_t before_ns, struct db_audit_row *out)
{
	struct sq *db = sq_of(h);

	if (before_ns == INT64_MAX)
		return sq_query(db, SQ_ONE, sql_last, row_read, out, SQ_NOARGS);
	return sq_query(db, SQ_ONE, sql_last_before, row_read, out, SQ_ARGS(SQ_I(before_ns)));
}

int sq_audit_delete_upto(struct db *h, int64_t seq)
{
	return sq_change(sq_of(h), sql_delete_upto, -1, SQ_ARGS(SQ_I(seq)), NULL, NULL);
}

struct each_ctx {
	int (*fn)(void *, const struct db_audit_row *);
	void *ctx;
};

static int row_each(struct sq *db, sqlite3_stmt *st, void *arg)
{
	struct each_ctx *e = arg;
	struct db_audit_row row;

	row_read(db, st, &row);
	return e->fn(e->ctx, &row);
}

int sq_audit_each(struct db *h, const struct db_audit_filter *f,
		  int (*fn)(void *, const struct db_audit_row *), void *ctx)
{
	struct each_ctx e = { fn, ctx };

	return sq_query(sq_of(h), 0, sql_each, row_each, &e,
			SQ_ARGS(SQ_T(f ? f->instance : NULL), SQ_T(f ? f->key : NULL),
				SQ_I(f ? f->since_ns : INT64_MIN)));
}

static bool wal_over_limit(struct sq *db)
{
	char path[SQ_WAL_PATH_MAX];
	struct statx sx;

	/* Its size alone: asking for its times costs the next commit an
	 * inode write (db/sqlite.c, path_id). */
	sq_wal_path(db, path);
	return statx(AT_FDCWD, path, 0, STATX_SIZE, &sx) == 0 && (sx.stx_mask & STATX_SIZE) &&
	       sx.stx_size > SQ_WAL_LIMIT;
}

int sq_audit_tidy(struct db *h)
{
	struct sq *db = sq_of(h);
	int rc;

	sq_lock(db);
	sqlite3_busy_timeout(db->conn, 0);
	/* A WAL within journal_size_limit keeps its length: the commits after
	 * overwrite it in place, and fdatasync then writes the pages alone,
	 * where extending the file also writes its size and block map (about
	 * 100 us more per commit on this project's test machines). A longer
	 * one, which a flood or a big import leaves, is cut to nothing. */
	rc = sqlite3_wal_checkpoint_v2(db->conn, NULL, wal_over_limit(db) ?
				       SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_RESTART,
				       NULL, NULL);
	sqlite3_busy_timeout(db->conn, SQ_BUSY_TIMEOUT_MS);
	sq_unlock(db);
	return rc == SQLITE_OK ? 0 : sq_errno(db, rc);
}

int sq_meta_add(struct db *h, const char *key, const unsigned char *v, size_t len)
{
	struct db_blob b = { (unsigned char *)v, len };
	int64_t n = 0;
	int r = sq_change(sq_of(h), sql_meta_add, -1, SQ_ARGS(SQ_T(key), SQ_B(&b)), NULL, &n);

	return r == 0 && n == 0 ? -EEXIST : r;
}
