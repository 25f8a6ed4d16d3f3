/* Inside db/ only: the SQLite store's shared parts (sqlite*.c). SQLite types
 * are fine here; this header never leaves db/. */
#ifndef VAULTFS_SQLITE_INT_H
#define VAULTFS_SQLITE_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>

#include <sqlite3.h>

#include "store.h"

#define SQ_STMT_MAX 256	/* statements cached per connection (about 85 today) */
#define SQ_BUSY_TIMEOUT_MS 10000
/* Bytes a WAL that starts over is cut back to (journal_size_limit); a
 * quiet spell cuts a longer one to nothing (sq_audit_tidy). */
#define SQ_WAL_LIMIT 4194304
#define SQ_WAL_PATH_MAX (PATH_MAX + 8)
#define SQ_READER 0x100		/* open flag: a connection for db_set_readers */
#define SQ_LOG 0x200		/* open flag: the audit log's own connection */

/* A connection: the store's handle (base.ops is db_sqlite_ops), one of its
 * readers, or an audit log's own. */
struct sq {
	struct db base;
	sqlite3 *conn;
	pthread_mutex_t lock;	/* recursive: around every use of a statement */
	char *path;
	int flags;		/* db_open's, with SQ_READER or SQ_LOG */
	struct {
		const char *sql;	/* by address: a string that lives forever */
		sqlite3_stmt *st;
	} stmt[SQ_STMT_MAX];
	bool wal_known;		/* the -wal file we opened, to notice it replaced */
	dev_t wal_dev;
	ino_t wal_ino;
	unsigned depth;		/* db_begin nesting of the thread holding lock */
	bool resync;		/* synchronous = FULL still to be restored */
	bool lazy;		/* the next begin is a lazy one */
	_Atomic pthread_t owner;	/* the thread in a write transaction, or 0 */
	pthread_mutex_t readers_lock;
	struct sq *readers;	/* idle read connections */
	struct sq *next_reader;
	unsigned readers_max, readers_open;
	const struct db_auth *auth, *auth_next;	/* row tags: sqlite_auth.c */
	int64_t *dirty;		/* instances whose state this transaction remakes */
	size_t ndirty, dirty_cap;
	struct sq_states *states;	/* the writer's verified states: sqlite_state.c */
	int64_t schema_cookie;	/* schema_version when its objects were checked */
	int64_t change_dv;	/* data_version at the last db_change_seq */
	char change_fp[160];	/* and the fingerprint of the metadata then */
	uint64_t change_seq;
	const volatile unsigned char *shm;	/* the WAL-index header: sqlite_cache.c */
	_Atomic int shm_state;		/* 0: not looked at, 1: mapped, -1: none */
	_Atomic uint64_t commits;	/* this handle's commits: sqlite_cache.c */
	int64_t lease_next, lease_end;	/* secret ids reserved: [next, end) */
};

static inline struct sq *sq_of(struct db *db)
{
	return (struct sq *)db;
}

/* Every connection to a file someone else may have written: its schema
 * (views, triggers, CHECK, DEFAULT, index expressions) may call only the
 * functions SQLite marks innocuous. */
static inline void sq_untrusted_schema(sqlite3 *conn)
{
	(void)sqlite3_db_config(conn, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
}

/* sqlite.c: connections, errors, statements; transactions in sqlite_txn.c. */
int sq_open(struct sq **out, const char *path, int flags);
void sq_close(struct sq *db);
void sq_wal_path(struct sq *db, char out[static SQ_WAL_PATH_MAX]);

/* sqlite_cache.c: rows kept while the database has not moved. A mark is
 * taken before the query whose row is then put. */
struct sq_cache_mark {
	bool valid;
	uint64_t commits;
	unsigned char hdr[48];
};
bool sq_read_in_snapshot(struct sq *db);
bool sq_cache_mark(struct sq *db, struct sq_cache_mark *m);
bool sq_cache_secret(struct sq *db, int64_t id, struct db_secret *meta, struct db_blob *out);
void sq_cache_secret_put(struct sq *db, const struct sq_cache_mark *m,
			 const struct db_secret *meta, const struct db_blob *blob);
bool sq_cache_seq(struct sq *db, int64_t inst, int64_t *seq);
void sq_cache_seq_put(struct sq *db, const struct sq_cache_mark *m, int64_t inst, int64_t seq);
void sq_cache_committed(struct sq *db);
void sq_cache_close(struct sq *db);
void sq_lock(struct sq *db);
void sq_unlock(struct sq *db);
/* A SQLite result code as -errno (the one map for every file here),
 * remembering SQLite's message for db_errmsg. db may be NULL. */
int sq_errno(struct sq *db, int rc);
/* The same for a connection of no store's (a backup file's). */
int sq_errno_conn(sqlite3 *conn, const char *path, int rc);
int sq_exec(struct sq *db, const char *sql);
/* An integer from a statement's first row (not cached: a pragma, once). */
int sq_int(struct sq *db, const char *sql, int64_t *out);
bool sq_in_own_txn(struct sq *db);
int sq_begin(struct sq *db, bool lazy);
int sq_commit(struct sq *db);
void sq_rollback(struct sq *db);
/* Ends a change that began with sq_begin: commits if r is 0, else rolls
 * back; returns r or the commit's error. */
int sq_end(struct sq *db, int r);

/* A parameter of a statement: SQ_I(x), SQ_T(s) (NULL binds NULL), SQ_B(b). */
struct sq_arg {
	enum { SQ_INT, SQ_TEXT, SQ_BLOB } type;
	int64_t i;
	const void *p;
	size_t len;
};
#define SQ_I(x) ((struct sq_arg){ .type = SQ_INT, .i = (int64_t)(x) })
#define SQ_T(s) ((struct sq_arg){ .type = SQ_TEXT, .p = (s) })
#define SQ_B(b) ((struct sq_arg){ .type = SQ_BLOB, .p = (b)->data, .len = (b)->len })
#define SQ_ARGS(...) (const struct sq_arg[]){ __VA_ARGS__ }, \
	(int)(sizeof((struct sq_arg[]){ __VA_ARGS__ }) / sizeof(struct sq_arg))
#define SQ_NOARGS NULL, 0

enum {
	SQ_READ = 0x1,	/* a reader connection may serve it (db_set_readers) */
	SQ_ONE = 0x2,	/* one row expected: none is -ENOENT */
};
/* Called for each row; nonzero stops the query and is its result. */
typedef int (*sq_row_fn)(struct sq *db, sqlite3_stmt *st, void *ctx);

/* The one way a statement runs here: takes a reader (SQ_READ) or the lock,
 * the statement from the connection's cache (sql is a string that lives
 * forever: cached by its address), binds args, steps, hands each row to fn
 * (NULL: rows are ignored), and resets. */
int sq_query(struct sq *db, unsigned flags, const char *sql, sq_row_fn fn, void *ctx,
	     const struct sq_arg *args, int nargs);
/* Runs sql, which returns no row and must change exactly want rows (any
 * number if want < 0): -ENOENT otherwise. *changed (may be NULL) gets how
 * many it did change; *rowid (may be NULL) the row it inserted. */
int sq_change(struct sq *db, const char *sql, int want, const struct sq_arg *args,
	      int nargs, int64_t *rowid, int64_t *changed);

/* Row readers for sq_query, shared by the files here. */
int sq_row_int(struct sq *db, sqlite3_stmt *st, void *out);	/* int64_t column 0 */
int sq_column_blob(sqlite3_stmt *st, int col, struct db_blob *out);
void sq_column_name(sqlite3_stmt *st, int col, char name[static DB_NAME_MAX + 1]);
/* The columns of SQ_INST_COLS, from column 0: 0 or -EIO (its tag). */
#define SQ_INST_COLS "id, name, uid, gid, mode, ctime, mtime, generation, mac"
int sq_row_instance(struct sq *db, sqlite3_stmt *st, struct db_instance *in);

/* What an *_each op hands sq_query: the caller's callback and its ctx. */
struct sq_each {
	void *fn;
	void *ctx;
};
/* Defines NAME, sq_query's row callback for an *_each op: reads the row
 * with ROW into a TYPE and hands it to the caller's callback, an
 * int (*)(void *, const TYPE *) in the struct sq_each. */
#define SQ_EACH_ROW(NAME, TYPE, ROW)						\
	static int NAME(struct sq *db, sqlite3_stmt *st, void *ctx)		\
	{									\
		struct sq_each *e = ctx;					\
		int (*fn)(void *, const TYPE *) = e->fn;			\
		TYPE item;							\
		int r = ROW(db, st, &item);					\
										\
		return r ? r : fn(e->ctx, &item);				\
	}

/* sqlite_txn.c: the ops of transactions and read connections. */
void sq_set_readers(struct db *h, unsigned max);
void sq_read_begin(struct db *h);
void sq_read_end(struct db *h);
bool sq_read_pinned(struct db *h);
int sq_begin_op(struct db *h, bool lazy);
int sq_commit_op(struct db *h);
void sq_rollback_op(struct db *h);
/* A read connection for the calling thread (its pinned one, if any), or
 * NULL: then db itself serves the read. Give it back with sq_reader_give. */
struct sq *sq_reader_take(struct sq *db);
void sq_reader_give(struct sq *db, struct sq *rd);

/* sqlite_schema.c */
/* Calls each for every object of sqlite_master in a fresh database built
 * by the migrations, sorted by type and name: what schema_expected.h must
 * hold (test_db checks, `make schema-expected` writes it). 0 or -errno. */
int sq_schema_fresh(void (*each)(void *ctx, const char *type, const char *name,
				 const char *tbl, const char *sql), void *ctx);
int sq_migrate(struct sq *db, bool created);
int sq_schema_check(struct sq *db);
/* At each write transaction: refuses a schema changed under us. */
int sq_schema_recheck(struct sq *db);
int sq_check_integrity(struct db *h);
/* A new, empty file of mode 0600: -EEXIST if there is one. */
int sq_create_file(const char *path);

/* Row tags (sqlite_auth.c): what each table's tag covers, as SQL over the
 * row's own columns, the table's name first. A tag binds the row's id, so
 * rows can't be swapped, and the table, so a row can't move to another. */
#define DBA_INSTANCES "'instances', id, name, uid, gid, mode, generation"
#define DBA_SECRETS "'secrets', id, instance_id, name, uid, gid, mode, version, size, flags"
#define DBA_VERSIONS "'versions', secret_id, version, size, flags"
#define DBA_TRASH "'trash', secret_id, instance_id, name, uid, gid, mode"
#define DBA_ATTRS "'secret_attrs', secret_id, name, value"
/* Registers dba_mac() and dba_check() on the connection. */
int sq_auth_register(struct sq *db);
/* Checks the tag in column maccol of st's row over tag and columns cols:
 * 0, or -EIO (reported) or -EACCES (no auth). what names the row. */
int sq_row_verify(struct sq *db, sqlite3_stmt *st, const char *tag, const int *cols,
		  int ncols, int maccol, const char *what, int64_t id);
/* Checks every row of the attached database `schema` (dba_check): 0, or
 * -EIO naming the first row that fails. */
int sq_auth_check_attached(struct sq *db, const char *schema);
/* A tag failure inside SQL (dba_check): the -errno to return, 0 if none. */
int sq_auth_sql_failed(void);
void sq_set_auth(struct db *h, const struct db_auth *auth);
int sq_auth_upgrade(struct db *h);
int sq_auth_rekey(struct db *h, const struct db_auth *next);
int sq_auth_check_all(struct db *h, void (*fn)(void *, const char *what), void *ctx);

/* Instance state (sqlite_auth.c). */
int sq_state_verify(struct sq *db, int64_t inst);
int sq_state_update(struct sq *db, int64_t inst, const struct db_auth *auth, bool bump);
/* Inside a write transaction, before a change to the live secrets of an
 * instance (fresh: one created in it): checks its state the first time,
 * and has it made afresh at the outermost commit. */
int sq_state_touch(struct sq *db, int64_t inst, bool fresh);
/* The same for the instance of a live (or, with trash, deleted) secret. */
int sq_state_touch_secret(struct sq *db, int64_t secret_id, bool trash);
/* At the outermost commit: the states of the instances touched. */
int sq_states_update(struct sq *db);
/* Raises the audit floor to the log's last entry. */
int sq_floor_update(struct sq *db, const struct db_auth *auth);
/* Every instance's state made afresh (after a restore). */
int sq_state_remake_all(struct sq *db);
/* Calls fn for every instance id, listed first. */
int sq_each_instance(struct sq *db, int (*fn)(struct sq *, int64_t, void *), void *ctx);
int sq_instance_seq(struct db *h, int64_t inst, bool latest, int64_t *seq);
int sq_state_check(struct db *h, int64_t inst, int64_t *seq,
		   int (*fn)(void *, int64_t id, uint64_t version), void *ctx);
int sq_audit_floor(struct db *h, int64_t *floor);
int sq_audit_entry_mac(struct db *h, int64_t seq, unsigned char *out, size_t len);

/* The writing connection's verified instance states (sqlite_state.c):
 * NULL for a read connection. */
struct sq_states;
struct sq_states *sq_states_new(void);
void sq_states_free(struct sq_states *c);
/* Before a transaction's first change to inst: its state checked, by the
 * trusted set if the row still shows it, else in full. 0 or -errno. */
int sq_states_verify(struct sq *db, int64_t inst);
/* Before changing secret id of inst: its stored row agrees with the
 * trusted set, or the full check decides (-EIO: reported). */
int sq_states_check_row(struct sq *db, int64_t inst, int64_t id);
/* The transaction changed secret id of inst (SQ_STATES_FRESH: made inst). */
#define SQ_STATES_FRESH (-1)
int sq_states_note(struct sq *db, int64_t inst, int64_t id);
/* db_tidy_caches: the sub-sums of buckets whose trusted set moved. */
int sq_tidy_caches(struct db *h, bool idle);
/* At the outermost commit: inst's state made and stored (sq_state_update
 * when the trusted set can't be used). */
int sq_states_commit(struct sq *db, int64_t inst);
/* After the outermost COMMIT (committed) or rollback. */
void sq_states_end(struct sq *db, bool committed);
/* fn for each (id, version) of inst's trusted set if it is the state
 * (seq, state); -ENOENT if not known. */
int sq_states_each(struct sq *db, int64_t inst, int64_t seq,
		   const unsigned char state[DB_MAC_LEN],
		   int (*fn)(void *, int64_t id, uint64_t version), void *ctx);
/* The same for one id: 1 (*version set) if the set lists it, 0 if not. */
int sq_states_find(struct sq *db, int64_t inst, int64_t seq,
		   const unsigned char state[DB_MAC_LEN], int64_t id, uint64_t *version);
/* Whether a whole trusted set of inst is kept. */
bool sq_states_holds(struct sq *db, int64_t inst);
int sq_state_version(struct db *h, int64_t inst, int64_t id, int64_t *seq, uint64_t *version);
/* States chained by schema 6, checked and made again as sums (sqlite_chain.c). */
int sq_states_convert(struct db *h, bool readonly);
/* Instance state pieces (sqlite_auth.c): the row's seq and state (zeros
 * when it has none yet), storing one. */
int sq_state_row(struct sq *db, int64_t inst, int64_t *seq, unsigned char state[DB_MAC_LEN]);
struct rowtag_sums;
struct rowtag_sum;
/* The sums stored beside inst's state (-ENOENT: none), and the sum of one
 * bucket's rows as they are now (both in the caller's transaction). */
int sq_state_sums(struct sq *db, int64_t inst, struct rowtag_sums *sums);
/* SQL: the row with id is in bucket ?2 (id % 64, rowtag.h), as its 64
 * sub-buckets, so that the index on (instance_id, id % 4096) finds a
 * bucket's rows as it finds a sub-bucket's. */
#define SQ_IN_BUCKET(id) id " % 4096 IN (" \
	"?2, ?2 + 64, ?2 + 128, ?2 + 192, ?2 + 256, ?2 + 320, ?2 + 384, " \
	"?2 + 448, ?2 + 512, ?2 + 576, ?2 + 640, ?2 + 704, ?2 + 768, " \
	"?2 + 832, ?2 + 896, ?2 + 960, ?2 + 1024, ?2 + 1088, ?2 + 1152, " \
	"?2 + 1216, ?2 + 1280, ?2 + 1344, ?2 + 1408, ?2 + 1472, ?2 + 1536, " \
	"?2 + 1600, ?2 + 1664, ?2 + 1728, ?2 + 1792, ?2 + 1856, ?2 + 1920, " \
	"?2 + 1984, ?2 + 2048, ?2 + 2112, ?2 + 2176, ?2 + 2240, ?2 + 2304, " \
	"?2 + 2368, ?2 + 2432, ?2 + 2496, ?2 + 2560, ?2 + 2624, ?2 + 2688, " \
	"?2 + 2752, ?2 + 2816, ?2 + 2880, ?2 + 2944, ?2 + 3008, ?2 + 3072, " \
	"?2 + 3136, ?2 + 3200, ?2 + 3264, ?2 + 3328, ?2 + 3392, ?2 + 3456, " \
	"?2 + 3520, ?2 + 3584, ?2 + 3648, ?2 + 3712, ?2 + 3776, ?2 + 3840, " \
	"?2 + 3904, ?2 + 3968, ?2 + 4032" ")"
int sq_bucket_sum(struct sq *db, int64_t inst, unsigned bucket, struct rowtag_sum *sum);
/* The same rows' sub-sums (rowtag.h); one sub-bucket's sum (id % 4096). */
int sq_bucket_subs(struct sq *db, int64_t inst, unsigned bucket, struct rowtag_sums *subs);
int sq_sub_sum(struct sq *db, int64_t inst, unsigned sub, struct rowtag_sum *sum);
/* A bucket's cached sub-sums if their tag holds (-ENOENT if not): whether
 * they add up to the bucket's sum is the caller's to check. */
int sq_cache_subs(struct sq *db, int64_t inst, unsigned bucket, struct rowtag_sums *subs);
int sq_state_store(struct sq *db, int64_t inst, int64_t seq,
		   const unsigned char state[DB_MAC_LEN], const struct rowtag_sums *sums);
/* 1 and *version if secret id is live in inst, 0 if not, or -errno. */
int sq_secret_version(struct sq *db, int64_t inst, int64_t id, uint64_t *version);

/* sqlite_rows.c: meta, instances, secrets, the change feed. */
int sq_meta_get(struct db *h, const char *key, struct db_blob *out);
int sq_meta_set(struct db *h, const char *key, const unsigned char *v, size_t len);
int sq_instance_create(struct db *h, struct db_instance *in, const struct db_blob *wrapped);
int sq_instance_get(struct db *h, int64_t id, struct db_instance *out);
int sq_instance_find(struct db *h, const char *name, struct db_instance *out);
int sq_instance_set_key(struct db *h, int64_t id, uint64_t generation,
			const struct db_blob *wrapped);
int sq_instance_set_attr(struct db *h, int64_t id, uid_t uid, gid_t gid, mode_t mode,
			 int64_t now_ns);
int sq_instance_delete(struct db *h, int64_t id);
int sq_instance_each(struct db *h, int64_t after_id,
		     int (*fn)(void *, const struct db_instance *), void *ctx);
int64_t sq_instance_count(struct db *h);
int sq_secret_get(struct db *h, int64_t id, struct db_secret *out);
int sq_secret_find(struct db *h, int64_t instance_id, const char *name,
		   struct db_secret *out);
int sq_secret_blob(struct db *h, int64_t id, struct db_secret *meta, struct db_blob *out);
int sq_secret_each(struct db *h, int64_t instance_id, int64_t after_id,
		   int (*fn)(void *, const struct db_secret *), void *ctx);
int64_t sq_secret_count(struct db *h, int64_t instance_id);
int sq_secret_insert(struct db *h, struct db_secret *s, const struct db_blob *blob, bool as_id);
int sq_secret_id_reserve(struct db *h, int64_t *id);
int sq_secret_set_value(struct db *h, const struct db_secret *s, const struct db_blob *blob);
int sq_secret_set_attr(struct db *h, int64_t id, uid_t uid, gid_t gid, mode_t mode,
		       int64_t now_ns);
int sq_secret_rename(struct db *h, const struct db_secret *s, const struct db_blob *blob);
int sq_secret_delete(struct db *h, int64_t id);
int sq_change_seq(struct db *h, uint64_t *out);

/* sqlite_versions.c */
int sq_version_archive(struct db *h, int64_t secret_id, bool with_v0, unsigned keep);
int sq_version_get(struct db *h, int64_t secret_id, uint64_t version,
		   struct db_version *out, struct db_blob *blob);
int sq_version_each(struct db *h, int64_t secret_id,
		    int (*fn)(void *, const struct db_version *), void *ctx);
int sq_version_set_blob(struct db *h, int64_t secret_id, uint64_t version,
			const struct db_blob *blob);
int sq_secret_adopt(struct db *h, int64_t id, int64_t from_id);
int sq_trash_put(struct db *h, const struct db_secret *s, int64_t now_ns, uid_t by);
int sq_trash_find(struct db *h, int64_t instance_id, const char *name, int64_t since_ns,
		  struct db_trash *out);
int sq_trash_restore(struct db *h, int64_t secret_id, int64_t now_ns);
int sq_trash_each(struct db *h, int64_t instance_id,
		  int (*fn)(void *, const struct db_trash *), void *ctx);
int sq_trash_purge(struct db *h, int64_t instance_id, const char *name, int64_t before_ns,
		   int64_t *count);
int sq_scrub(struct db *h);
int sq_instance_secret_ids(struct db *h, int64_t instance_id,
			   int (*fn)(void *, int64_t id, const char *name, bool live),
			   void *ctx);
int sq_instance_key(struct db *h, int64_t id, struct db_instance *in, struct db_blob *wrapped);

/* sqlite_attrs.c */
int sq_attr_get(struct db *h, int64_t secret_id, const char *name, void *buf, size_t size,
		size_t *len);
int sq_attr_set(struct db *h, int64_t secret_id, const char *name, const void *value,
		size_t len);

/* sqlite_backup.c */
int sq_backup(struct db *h, const char *path);
int sq_restore(struct db *h, const char *path);

/* sqlite_audit.c */
int sq_audit_insert(struct db *h, const struct db_audit_row *row);
int sq_audit_last(struct db *h, int64_t before_ns, struct db_audit_row *out);
int sq_audit_delete_upto(struct db *h, int64_t seq);
int sq_audit_each(struct db *h, const struct db_audit_filter *f,
		  int (*fn)(void *, const struct db_audit_row *), void *ctx);
int sq_audit_tidy(struct db *h);
int sq_meta_add(struct db *h, const char *key, const unsigned char *v, size_t len);
int sq_snapshot_begin(struct db *h);
void sq_snapshot_end(struct db *h);

#endif
