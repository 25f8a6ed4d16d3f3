/*
 * The SQLite store's transactions and read connections. Rules this file
 * keeps:
 *  - a write transaction holds the connection's lock from begin to commit
 *    or rollback, so it is the calling thread's; a begin nested in it is a
 *    savepoint; a lazy one syncs nothing until the next synced commit;
 *  - with db_set_readers, reads while no write transaction is open go to
 *    read-only connections of their own (WAL lets them run side by side);
 *    while one is open they wait for it on the writer's connection, so a
 *    value committed by an earlier request is what a later one reads;
 *  - db_read_begin pins one reader, in one read transaction, to the thread;
 *    without read connections (a command's one connection) it is a read
 *    transaction on the writer's, under its lock, which a write begun by
 *    the same thread ends first (its reads then see the latest);
 *  - the outermost commit remakes the state of each instance whose live
 *    secrets changed, and after a purge empties the write-ahead log.
 */
#include <errno.h>
#include <stdlib.h>

#include "rowtag.h"
#include "sqlite_int.h"

/* Reads outside a write transaction run on a connection of their own,
 * opened on first need, up to max (0: none; reads share the writer's). */
void sq_set_readers(struct db *h, unsigned max)
{
	struct sq *db = sq_of(h);

	pthread_mutex_lock(&db->readers_lock);
	db->readers_max = max;
	pthread_mutex_unlock(&db->readers_lock);
}

static bool txn_open(struct sq *db)
{
	return atomic_load(&db->owner) != (pthread_t)0;
}

bool sq_in_own_txn(struct sq *db)
{
	return pthread_equal(atomic_load(&db->owner), pthread_self());
}

/* The db whose reads db_read_begin pinned to this thread, and the read
 * connection its first query took, in a transaction (NULL before that
 * query: reads sq_cache answers take none). */
static __thread struct sq *pinned_db, *pinned_rd;

static const char sql_pin_begin[] = "BEGIN";
static const char sql_pin_end[] = "COMMIT";

/* A db_read_begin on the writer's connection (no read connections): the
 * db, and whether its read transaction is still open. */
static __thread struct sq *pinned_writer;
static __thread bool pinned_writer_open;

static void pin_close(struct sq *db)
{
	if (sq_change(db, sql_pin_end, -1, SQ_NOARGS, NULL, NULL) < 0)
		sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
}

/* A write begun inside the pinned read ends its transaction (lock held). */
static void pin_yield(struct sq *db)
{
	if (pinned_writer == db && pinned_writer_open && !db->depth) {
		pin_close(db);
		pinned_writer_open = false;
	}
}

static void pin_writer(struct sq *db)
{
	sq_lock(db);
	if (db->depth || sq_change(db, sql_pin_begin, -1, SQ_NOARGS, NULL, NULL) < 0) {
		sq_unlock(db);	/* its own write transaction: its reads see that */
		return;
	}
	pinned_db = pinned_writer = db;
	pinned_writer_open = true;
}

static struct sq *reader_idle(struct sq *db);

/* The pinned read's connection, its transaction begun at its first query. */
static struct sq *pinned_reader(struct sq *db)
{
	struct sq *rd;

	if (sq_in_own_txn(db))
		return NULL;
	if (pinned_rd)
		return pinned_rd;
	rd = reader_idle(db);
	if (rd && sq_change(rd, sql_pin_begin, -1, SQ_NOARGS, NULL, NULL) < 0) {
		sq_reader_give(db, rd);
		rd = NULL;
	}
	pinned_rd = rd;
	return rd;
}

/* A read connection for the calling thread, or NULL: then the writer's
 * connection serves the read. It does while a write transaction is open:
 * its own thread must see its changes, and the others wait for the commit,
 * since FUSE sends RELEASE (which may commit) without waiting for it, and
 * the open that follows a close must see what the close committed. */
struct sq *sq_reader_take(struct sq *db)
{
	if (!db->readers_max)
		return NULL;
	if (pinned_db == db)
		return pinned_reader(db);
	if (txn_open(db))
		return NULL;
	return reader_idle(db);
}

/* An idle read connection, or a new one (up to readers_max), or NULL. */
static struct sq *reader_idle(struct sq *db)
{
	struct sq *rd = NULL;
	bool open_one = false;

	pthread_mutex_lock(&db->readers_lock);
	if (db->readers) {
		rd = db->readers;
		db->readers = rd->next_reader;
	} else if (db->readers_open < db->readers_max) {
		db->readers_open++;
		open_one = true;
	}
	pthread_mutex_unlock(&db->readers_lock);
	if (open_one && sq_open(&rd, db->path, SQ_READER) < 0) {
		pthread_mutex_lock(&db->readers_lock);
		db->readers_open--;
		pthread_mutex_unlock(&db->readers_lock);
		rd = NULL;
	}
	if (rd)
		rd->auth = db->auth;
	return rd;
}

/* Returns rd to the idle list (unless pinned). */
void sq_reader_give(struct sq *db, struct sq *rd)
{
	if (rd == pinned_rd)
		return;
	pthread_mutex_lock(&db->readers_lock);
	rd->next_reader = db->readers;
	db->readers = rd;
	pthread_mutex_unlock(&db->readers_lock);
}

/* A write transaction's ends: cached statements, not parsed at each write. */
static const char sql_begin[] = "BEGIN IMMEDIATE";
static const char sql_nested[] = "SAVEPOINT nested";
static const char sql_commit[] = "COMMIT";
static const char sql_release[] = "RELEASE nested";
/* Never a cached PRAGMA synchronous: SQLite applies it when it is
 * prepared, not when it runs. */

void sq_read_begin(struct db *h)
{
	struct sq *db = sq_of(h);

	if (pinned_db)
		return;
	if (!db->readers_max) {
		pin_writer(db);
		return;
	}
	if (txn_open(db))
		return;
	pinned_db = db;
	pinned_rd = NULL;
}

/* Whether this thread's reads of db run in a transaction already begun
 * (db_read_begin, then a query): they see its snapshot, not the latest. */
bool sq_read_in_snapshot(struct sq *db)
{
	return pinned_db == db && pinned_rd;
}

bool sq_read_pinned(struct db *h)
{
	return pinned_db == sq_of(h);
}

void sq_read_end(struct db *h)
{
	struct sq *db = sq_of(h), *rd = pinned_rd;

	if (pinned_db != db)
		return;
	pinned_db = pinned_rd = NULL;
	if (pinned_writer == db) {
		if (pinned_writer_open)
			pin_close(db);
		pinned_writer = NULL;
		pinned_writer_open = false;
		sq_unlock(db);
		return;
	}
	if (!rd)
		return;
	if (sq_change(rd, sql_pin_end, -1, SQ_NOARGS, NULL, NULL) < 0)
		sqlite3_exec(rd->conn, "ROLLBACK", NULL, NULL, NULL);
	sq_reader_give(db, rd);
}

static void txn_leave(struct sq *db)
{
	if (--db->depth == 0)
		atomic_store(&db->owner, (pthread_t)0);
}

/* Back to synced commits after a lazy transaction (lock held). */
static int resync(struct sq *db)
{
	if (db->resync && sqlite3_get_autocommit(db->conn) &&
	    sq_exec(db, "PRAGMA synchronous = FULL") == 0)
		db->resync = false;
	return db->resync ? -EIO : 0;
}

/* A begin on the thread that already holds the transaction is a savepoint
 * inside it, so a batch can wrap calls that begin their own. */
static int begin_now(struct sq *db)
{
	int r;

	sq_lock(db);
	pin_yield(db);
	r = 0;
	if (!db->depth && !db->lazy)
		r = resync(db);
	db->lazy = false;
	if (r == 0)
		r = sq_change(db, db->depth ? sql_nested : sql_begin, -1, SQ_NOARGS, NULL, NULL);
	if (r < 0) {
		sq_unlock(db);
		return r;
	}
	if (db->depth++ == 0) {
		atomic_store(&db->owner, pthread_self());
		r = db->flags & SQ_LOG ? 0 : sq_schema_recheck(db);
		if (r < 0) {
			sq_rollback(db);
			return r;
		}
	}
	return 0;
}

/* SQLite takes a change of synchronous only outside a transaction: set
 * here, and put back (under the same lock) when the transaction ends. */
static int begin_lazy(struct sq *db)
{
	int r;

	sq_lock(db);
	pin_yield(db);
	if (db->depth)
		r = -EBUSY;
	else
		r = sq_exec(db, "PRAGMA synchronous = NORMAL");
	if (r == 0) {
		db->resync = db->lazy = true;
		r = begin_now(db);
	}
	if (r < 0)
		(void)resync(db);
	sq_unlock(db);
	return r;
}

int sq_begin(struct sq *db, bool lazy)
{
	return lazy ? begin_lazy(db) : begin_now(db);
}

static int release_nested(struct sq *db)
{
	int r = sq_change(db, sql_release, -1, SQ_NOARGS, NULL, NULL);

	if (r < 0)
		sqlite3_exec(db->conn, "ROLLBACK TO nested; RELEASE nested", NULL, NULL, NULL);
	return r;
}

static int commit_outer(struct sq *db)
{
	int r = sq_states_update(db);

	if (r < 0) {
		sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
		sq_states_end(db, false);
	} else {
		r = sq_change(db, sql_commit, -1, SQ_NOARGS, NULL, NULL);
		sq_cache_committed(db);
		if (r < 0 && sqlite3_get_autocommit(db->conn) == 0)
			sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
		sq_states_end(db, r == 0);
	}
	(void)resync(db);
	return r;
}

int sq_commit(struct sq *db)
{
	bool last = db->depth == 1;
	int r = last ? commit_outer(db) : release_nested(db);

	txn_leave(db);
	sq_unlock(db);
	if (last)
		rowtag_flush();
	return r;
}

void sq_rollback(struct sq *db)
{
	bool last = db->depth == 1;

	if (last) {
		db->ndirty = 0;
		sq_states_end(db, false);
	}
	if (db->depth > 1)
		sqlite3_exec(db->conn, "ROLLBACK TO nested; RELEASE nested", NULL, NULL, NULL);
	else if (sqlite3_get_autocommit(db->conn) == 0)
		sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
	if (last)
		(void)resync(db);
	txn_leave(db);
	sq_unlock(db);
	if (last)
		rowtag_flush();
}

int sq_end(struct sq *db, int r)
{
	if (r == 0)
		return sq_commit(db);
	sq_rollback(db);
	return r;
}

int sq_state_touch(struct sq *db, int64_t inst, bool fresh)
{
	int64_t *p;
	int r;

	if (!sq_in_own_txn(db)) {
		db_set_error("internal: a change to live secrets outside a transaction");
		return -EINVAL;
	}
	if (fresh && (r = sq_states_note(db, inst, SQ_STATES_FRESH)) < 0)
		return r;
	for (size_t i = 0; i < db->ndirty; i++)
		if (db->dirty[i] == inst)
			return 0;
	if (!fresh && (r = sq_states_verify(db, inst)) < 0)
		return r;
	if (db->ndirty == db->dirty_cap) {
		p = realloc(db->dirty, (db->dirty_cap ? db->dirty_cap * 2 : 8) * sizeof(*p));
		if (!p)
			return -ENOMEM;
		db->dirty = p;
		db->dirty_cap = db->dirty_cap ? db->dirty_cap * 2 : 8;
	}
	db->dirty[db->ndirty++] = inst;
	return 0;
}

int sq_begin_op(struct db *h, bool lazy)
{
	return sq_begin(sq_of(h), lazy);
}

int sq_commit_op(struct db *h)
{
	return sq_commit(sq_of(h));
}

void sq_rollback_op(struct db *h)
{
	sq_rollback(sq_of(h));
}
