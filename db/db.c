/*
 * The SQLite store. Rules this file keeps:
 *  - it stores and returns sealed blobs and metadata, never plaintext;
 *  - every commit is durable: WAL with synchronous=FULL;
 *  - the file and its -wal/-shm are created mode 0600 (SQLite gives the
 *    journal files the database file's mode);
 *  - one connection, used by one thread at a time under a recursive mutex; a
 *    write transaction holds the mutex from db_begin to commit or rollback;
 *  - with db_set_readers, reads while no write transaction is open go to
 *    separate read-only connections (WAL lets them run side by side); while
 *    one is open they wait for it on the writer's connection, as before, so
 *    a value committed by an earlier request is what a later one reads;
 *  - SQLite's result codes become -errno here and go no further.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "db.h"
#include "db_int.h"

#define APPLICATION_ID 0x76666c74	/* "vflt" */
#define BUSY_TIMEOUT_MS 10000
#define WAL_PATH_MAX (PATH_MAX + 8)
#define DB_READER 0x100		/* internal: a connection for db_set_readers */
#define READER_CACHE_KIB 512	/* each reader's page cache */
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

enum stmt_id {
	ST_META_GET, ST_META_SET,
	ST_INST_CREATE, ST_INST_GET, ST_INST_FIND, ST_INST_KEY, ST_INST_SET_KEY,
	ST_INST_SET_ATTR, ST_INST_DELETE, ST_INST_EACH, ST_INST_COUNT, ST_INST_HAS_SECRETS,
	ST_SEC_GET, ST_SEC_FIND, ST_SEC_BLOB, ST_SEC_EACH, ST_SEC_COUNT, ST_SEC_INSERT,
	ST_SEC_SET_VALUE, ST_SEC_SET_ATTR, ST_SEC_RENAME, ST_SEC_DELETE,
	ST_INST_TAG, ST_SEC_TAG, ST_SCHEMA_VERSION,
	ST_COUNT
};

/* Each ends with the row's tag: INST_MAC and SEC_MAC are its column. */
#define INST_COLS "id, name, uid, gid, mode, ctime, mtime, generation, mac"
#define INST_MAC 8
#define SEC_COLS "id, instance_id, name, uid, gid, mode, version, size, flags, ctime, " \
		 "mtime, chtime, updated_by, mac"
#define SEC_MAC 13
#define CHECK_INST "dba_check(mac, " DBA_INSTANCES ")"
#define CHECK_SEC "dba_check(mac, " DBA_SECRETS ")"

static const char *const stmt_sql[ST_COUNT] = {
	[ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
	[ST_META_SET] = "INSERT INTO meta (key, value) VALUES (?1, ?2) "
			"ON CONFLICT (key) DO UPDATE SET value = excluded.value",
	[ST_INST_CREATE] = "INSERT INTO instances (name, uid, gid, mode, ctime, mtime, "
			   "generation, wrapped_key) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7)",
	[ST_INST_GET] = "SELECT " INST_COLS " FROM instances WHERE id = ?1",
	[ST_INST_FIND] = "SELECT " INST_COLS " FROM instances WHERE name = ?1",
	[ST_INST_KEY] = "SELECT wrapped_key FROM instances WHERE id = ?1",
	[ST_INST_SET_KEY] = "UPDATE instances SET generation = ?2, wrapped_key = ?3, "
			    "mac = dba_mac('instances', id, name, uid, gid, mode, ?2) "
			    "WHERE id = ?1 AND " CHECK_INST,
	[ST_INST_SET_ATTR] = "UPDATE instances SET uid = ?2, gid = ?3, mode = ?4, mtime = ?5, "
			     "mac = dba_mac('instances', id, name, ?2, ?3, ?4, generation) "
			     "WHERE id = ?1 AND " CHECK_INST,
	[ST_INST_DELETE] = "DELETE FROM instances WHERE id = ?1",
	[ST_INST_EACH] = "SELECT " INST_COLS " FROM instances WHERE id > ?1 ORDER BY id",
	[ST_INST_COUNT] = "SELECT count(*) FROM instances",
	[ST_INST_HAS_SECRETS] = "SELECT 1 FROM secrets WHERE instance_id = ?1 LIMIT 1",
	[ST_SEC_GET] = "SELECT " SEC_COLS " FROM secrets WHERE id = ?1",
	[ST_SEC_FIND] = "SELECT " SEC_COLS " FROM secrets WHERE instance_id = ?1 AND name = ?2",
	[ST_SEC_BLOB] = "SELECT " SEC_COLS ", blob FROM secrets WHERE id = ?1",
	[ST_SEC_EACH] = "SELECT " SEC_COLS " FROM secrets WHERE instance_id = ?1 AND id > ?2 "
			"ORDER BY id",
	[ST_SEC_COUNT] = "SELECT count(*) FROM secrets WHERE instance_id = ?1",
	[ST_SEC_INSERT] = "INSERT INTO secrets (instance_id, name, uid, gid, mode, version, "
			  "size, flags, ctime, mtime, chtime, updated_by, blob) "
			  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
	[ST_SEC_SET_VALUE] = "UPDATE secrets SET version = ?2, size = ?3, flags = ?4, "
			     "mtime = ?5, chtime = ?6, updated_by = ?7, blob = ?8, "
			     "mac = dba_mac('secrets', id, instance_id, name, uid, gid, mode, "
			     "?2, ?3, ?4) WHERE id = ?1 AND " CHECK_SEC,
	[ST_SEC_SET_ATTR] = "UPDATE secrets SET uid = ?2, gid = ?3, mode = ?4, chtime = ?5, "
			    "mac = dba_mac('secrets', id, instance_id, name, ?2, ?3, ?4, "
			    "version, size, flags) WHERE id = ?1 AND " CHECK_SEC,
	[ST_SEC_RENAME] = "UPDATE secrets SET name = ?2, version = ?3, chtime = ?4, blob = ?5, "
			  "mac = dba_mac('secrets', id, instance_id, ?2, uid, gid, mode, ?3, "
			  "size, flags) WHERE id = ?1 AND " CHECK_SEC,
	[ST_SEC_DELETE] = "DELETE FROM secrets WHERE id = ?1",
	/* A row this transaction just inserted, untagged: its id is known only
	 * now. */
	[ST_INST_TAG] = "UPDATE instances SET mac = dba_mac(" DBA_INSTANCES ") "
			"WHERE id = ?1 AND mac = x''",
	[ST_SEC_TAG] = "UPDATE secrets SET mac = dba_mac(" DBA_SECRETS ") "
		       "WHERE id = ?1 AND mac = x''",
	[ST_SCHEMA_VERSION] = "PRAGMA schema_version",
};

/* Schema versions; migrations[i] takes a database from version i to i+1. */
static const char *const migrations[] = {
	"CREATE TABLE meta ("
	"  key TEXT PRIMARY KEY,"
	"  value BLOB NOT NULL"
	") WITHOUT ROWID;"
	"CREATE TABLE instances ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  name TEXT NOT NULL UNIQUE,"
	"  uid INTEGER NOT NULL, gid INTEGER NOT NULL, mode INTEGER NOT NULL,"
	"  ctime INTEGER NOT NULL, mtime INTEGER NOT NULL,"
	"  generation INTEGER NOT NULL,"
	"  wrapped_key BLOB NOT NULL"
	");"
	"CREATE TABLE secrets ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  instance_id INTEGER NOT NULL REFERENCES instances (id),"
	"  name TEXT NOT NULL,"
	"  uid INTEGER NOT NULL, gid INTEGER NOT NULL, mode INTEGER NOT NULL,"
	"  version INTEGER NOT NULL, size INTEGER NOT NULL, flags INTEGER NOT NULL,"
	"  ctime INTEGER NOT NULL, mtime INTEGER NOT NULL, chtime INTEGER NOT NULL,"
	"  updated_by INTEGER NOT NULL,"
	"  blob BLOB NOT NULL,"
	"  UNIQUE (instance_id, name)"
	");",
	/* Old values (the current one stays in secrets), deleted secrets kept
	 * for undelete, and descriptive attributes: see db_versions.c. */
	"CREATE TABLE versions ("
	"  secret_id INTEGER NOT NULL,"
	"  version INTEGER NOT NULL,"
	"  size INTEGER NOT NULL, flags INTEGER NOT NULL,"
	"  mtime INTEGER NOT NULL, updated_by INTEGER NOT NULL,"
	"  blob BLOB NOT NULL,"
	"  PRIMARY KEY (secret_id, version)"
	");"
	"CREATE TABLE trash ("
	"  secret_id INTEGER PRIMARY KEY,"
	"  instance_id INTEGER NOT NULL REFERENCES instances (id),"
	"  name TEXT NOT NULL,"
	"  uid INTEGER NOT NULL, gid INTEGER NOT NULL, mode INTEGER NOT NULL,"
	"  ctime INTEGER NOT NULL,"
	"  deleted INTEGER NOT NULL, deleted_by INTEGER NOT NULL"
	");"
	"CREATE INDEX trash_by_name ON trash (instance_id, name, deleted);"
	"CREATE TABLE secret_attrs ("
	"  secret_id INTEGER NOT NULL,"
	"  name TEXT NOT NULL,"
	"  value BLOB NOT NULL,"
	"  PRIMARY KEY (secret_id, name)"
	") WITHOUT ROWID;",
	/* The audit log (db/db_audit.c): a hash chain; mac covers the row and
	 * the mac of the row before it. No index on time: it would cost every
	 * read a fifth more work, for a prune every ten minutes. */
	"CREATE TABLE audit ("
	"  seq INTEGER PRIMARY KEY,"
	"  time INTEGER NOT NULL,"
	"  uid INTEGER NOT NULL, gid INTEGER NOT NULL, pid INTEGER NOT NULL,"
	"  comm TEXT NOT NULL, instance TEXT NOT NULL, key TEXT NOT NULL,"
	"  op TEXT NOT NULL, result INTEGER NOT NULL, detail TEXT NOT NULL,"
	"  mac BLOB NOT NULL"
	");",
	/* Directory listings page through an instance in id order: without
	 * this index each page scanned and sorted the whole instance. */
	"CREATE INDEX secrets_by_instance ON secrets (instance_id);",
	/* Row tags (db_auth.c): the vault computes them under its master key
	 * when it first opens the upgraded file. */
	"ALTER TABLE instances ADD COLUMN mac BLOB NOT NULL DEFAULT x'';"
	"ALTER TABLE secrets ADD COLUMN mac BLOB NOT NULL DEFAULT x'';"
	"ALTER TABLE versions ADD COLUMN mac BLOB NOT NULL DEFAULT x'';"
	"ALTER TABLE trash ADD COLUMN mac BLOB NOT NULL DEFAULT x'';"
	"ALTER TABLE secret_attrs ADD COLUMN mac BLOB NOT NULL DEFAULT x'';"
	"ALTER TABLE instances ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE instances ADD COLUMN state BLOB NOT NULL DEFAULT x'';",
	/* Folded audit entries: count events of one kind from first_time to
	 * time (NULL: the one event at time). */
	("ALTER TABLE audit ADD COLUMN count INTEGER NOT NULL DEFAULT 1;"
	 "ALTER TABLE audit ADD COLUMN first_time INTEGER;"),
};
#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

struct db {
	sqlite3 *conn;
	pthread_mutex_t lock;
	char *path;
	sqlite3_stmt *stmt[ST_COUNT];
	struct {
		const char *sql;
		sqlite3_stmt *st;
	} xstmt[DBI_XSTMT_MAX];		/* for the other db/ files */
	bool wal_known;		/* the -wal file we opened, to notice it replaced */
	dev_t wal_dev;
	ino_t wal_ino;
	unsigned depth;		/* db_begin nesting of the thread holding lock */
	bool resync;		/* synchronous = FULL still to be restored */
	bool lazy;		/* the next db_begin is db_begin_lazy's */
	_Atomic pthread_t owner;	/* the thread in a write transaction, or 0 */
	pthread_mutex_t readers_lock;
	struct db *readers;	/* idle read connections */
	struct db *next_reader;
	unsigned readers_max, readers_open;
	sqlite3_stmt *pin_begin, *pin_end;	/* a reader's BEGIN and COMMIT */
	const struct db_auth *auth, *auth_next;	/* row tags: db_auth.c */
	int64_t *dirty;		/* instances whose state this transaction remakes */
	size_t ndirty, dirty_cap;
	struct dbi_states *states;	/* the writer's verified states: db_state.c */
	int64_t schema_cookie;	/* schema_version when its objects were checked */
	int64_t change_dv;	/* data_version at the last db_change_seq */
	char change_fp[160];	/* and the fingerprint of the metadata then */
	uint64_t change_seq;
};

static __thread char last_error[512];

const char *db_errmsg(struct db *db)
{
	(void)db;
	return last_error;
}

const char *db_path(struct db *db)
{
	return db->path;
}

int64_t db_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The errno of the last failed call on one of the connection's files. */
static int file_errno(struct db *db, bool wal)
{
	sqlite3_file *f = NULL;
	int e = 0;

	if (!wal) {
		sqlite3_file_control(db->conn, "main", SQLITE_FCNTL_LAST_ERRNO, &e);
		return e;
	}
	if (sqlite3_file_control(db->conn, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f) ==
	    SQLITE_OK && f && f->pMethods && f->pMethods->xFileControl)
		f->pMethods->xFileControl(f, SQLITE_FCNTL_LAST_ERRNO, &e);
	return e;
}

static int errno_class(int e)
{
	switch (e) {
	case ENOSPC: case EDQUOT:
		return -ENOSPC;
	case EROFS: case EPERM: case EACCES:
		return -EROFS;
	default:
		return 0;
	}
}

/* A failed read or write says more than "I/O error" when the system said
 * why: a full disk, or files that may no longer be written. SQLite's own
 * sqlite3_system_errno() is read after its rollback has made other calls,
 * so the files' own last errno is asked too. */
static int io_errno(struct db *db)
{
	int r;

	if (!db || !db->conn)
		return -EIO;
	r = errno_class(sqlite3_system_errno(db->conn));
	if (!r)
		r = errno_class(file_errno(db, true));
	if (!r)
		r = errno_class(file_errno(db, false));
	return r ? r : -EIO;
}

static int map_rc(struct db *db, int rc)
{
	int prim = rc & 0xff;

	if (rc == SQLITE_CONSTRAINT_COMMITHOOK) {
		snprintf(last_error, sizeof(last_error), "%s or its -wal was removed or "
			 "replaced while open: writes refused until it is back", db->path);
		return -EROFS;
	}
	snprintf(last_error, sizeof(last_error), "%s", db && db->conn ?
		 sqlite3_errmsg(db->conn) : sqlite3_errstr(rc));
	if (dbi_auth_sql_failed())
		return -EIO;
	switch (prim) {
	case SQLITE_OK: case SQLITE_ROW: case SQLITE_DONE:
		return 0;
	case SQLITE_CONSTRAINT:
		return rc == SQLITE_CONSTRAINT_FOREIGNKEY ? -ENOENT : -EEXIST;
	case SQLITE_BUSY: case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_NOTADB: case SQLITE_CORRUPT: case SQLITE_FORMAT:
		return -EPROTO;
	case SQLITE_PERM: case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_CANTOPEN:
		return db && db->conn && sqlite3_system_errno(db->conn) ?
		       -sqlite3_system_errno(db->conn) : -EIO;
	case SQLITE_TOOBIG:
		return -EFBIG;
	case SQLITE_IOERR:
		return io_errno(db);
	default:
		return -EIO;
	}
}

static void db_lock(struct db *db)
{
	pthread_mutex_lock(&db->lock);
}

static void db_unlock(struct db *db)
{
	pthread_mutex_unlock(&db->lock);
}

static sqlite3_stmt *stmt_get(struct db *db, enum stmt_id id, int *err)
{
	int rc;

	if (!db->stmt[id]) {
		rc = sqlite3_prepare_v3(db->conn, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
					&db->stmt[id], NULL);
		if (rc != SQLITE_OK) {
			*err = map_rc(db, rc);
			return NULL;
		}
	}
	return db->stmt[id];
}

static void stmt_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

static int exec_sql(struct db *db, const char *sql)
{
	int rc = sqlite3_exec(db->conn, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : map_rc(db, rc);
}

static int pragma_int(struct db *db, const char *sql, int64_t *out)
{
	sqlite3_stmt *st;
	int rc, r;

	rc = sqlite3_prepare_v2(db->conn, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return map_rc(db, rc);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(st, 0);
		r = 0;
	} else {
		r = rc == SQLITE_DONE ? -EPROTO : map_rc(db, rc);
	}
	sqlite3_finalize(st);
	return r;
}

/* A step that fails for want of space or permission says so; one whose SQL
 * fails (a table it creates is there already) means the version number in
 * the header does not match the tables: a damaged file. */
static int migrate_failed(struct db *db, int64_t version, int r)
{
	char why[sizeof(last_error)];

	snprintf(why, sizeof(why), "%s", last_error);
	snprintf(last_error, sizeof(last_error), "cannot upgrade the schema from version "
		 "%lld: %.400s", (long long)version, why);
	return r == -EIO ? -EPROTO : r;
}

static int migrate(struct db *db, bool created)
{
	int64_t app_id = 0, version = 0;
	char sql[64];
	int r;

	r = pragma_int(db, "PRAGMA application_id", &app_id);
	if (r == 0)
		r = pragma_int(db, "PRAGMA user_version", &version);
	if (r < 0)
		return r;
	if (!created && app_id != APPLICATION_ID) {
		snprintf(last_error, sizeof(last_error), "not a vaultfs database");
		return -EPROTO;
	}
	if (version < 0) {	/* it indexes migrations[] below */
		snprintf(last_error, sizeof(last_error), "schema version %lld was never "
			 "written by vaultfs", (long long)version);
		return -EPROTO;
	}
	if (version > SCHEMA_VERSION) {
		snprintf(last_error, sizeof(last_error), "schema version %lld is newer than "
			 "this vaultfs understands (%d)", (long long)version, SCHEMA_VERSION);
		return -EPROTONOSUPPORT;
	}
	for (; version < SCHEMA_VERSION; version++) {
		r = exec_sql(db, "BEGIN IMMEDIATE");
		if (r < 0)
			return r;
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %lld", (long long)version + 1);
		r = exec_sql(db, migrations[version]);
		if (r == 0)
			r = exec_sql(db, sql);
		if (r == 0 && created)
			r = exec_sql(db, "PRAGMA application_id = " "1986423924");
		if (r == 0)
			r = exec_sql(db, "COMMIT");
		if (r < 0) {
			sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
			return migrate_failed(db, version, r);
		}
	}
	return 0;
}

_Static_assert(APPLICATION_ID == 1986423924, "application_id literal in migrate()");

/* The schema objects vaultfs makes, as sqlite_master holds them in a fresh
 * database built by the same migrations (ALTER TABLE rewrites a table's
 * text, so it is not the CREATE statement's). schema_expected.h keeps them:
 * `make schema-expected` writes it from dbi_schema_fresh, and test_db
 * fails while it differs. Building them at each open was two thirds of a
 * `vaultfs get`. */
#define SCHEMA_SQL "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master " \
		   "ORDER BY type, name"
#include "schema_expected.h"
#define N_EXPECTED ((int)(sizeof(schema_expected) / sizeof(schema_expected[0])))
static const int n_expected = N_EXPECTED;

int dbi_schema_fresh(void (*each)(void *ctx, const char *type, const char *name,
				  const char *tbl, const char *sql), void *ctx)
{
	sqlite3 *mem = NULL;
	sqlite3_stmt *st = NULL;
	int rc, r = -ENOMEM;

	if (sqlite3_open_v2(":memory:", &mem, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
		goto out;
	r = -EPROTO;
	for (int v = 0; v < SCHEMA_VERSION; v++)
		if (sqlite3_exec(mem, migrations[v], NULL, NULL, NULL) != SQLITE_OK)
			goto out;
	if (sqlite3_prepare_v2(mem, SCHEMA_SQL, -1, &st, NULL) != SQLITE_OK)
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		each(ctx, (const char *)sqlite3_column_text(st, 0),
		     (const char *)sqlite3_column_text(st, 1),
		     (const char *)sqlite3_column_text(st, 2),
		     (const char *)sqlite3_column_text(st, 3));
	if (rc == SQLITE_DONE)
		r = 0;
out:
	sqlite3_finalize(st);
	sqlite3_close(mem);
	return r;
}

/* 0: the same as schema_expected[i]; <0 / >0 as the file's object sorts before /
 * after it. */
static int schema_cmp(sqlite3_stmt *st, int i)
{
	int c;

	if (i >= n_expected)
		return -1;
	c = strcmp((const char *)sqlite3_column_text(st, 0), schema_expected[i].type);
	if (c == 0)
		c = strcmp((const char *)sqlite3_column_text(st, 1), schema_expected[i].name);
	return c;
}

static int schema_refuse(struct db *db, const char *type, const char *name, const char *why)
{
	bool extra = strcmp(why, "did not create") == 0;
	char fix[256] = "";

	if (extra)
		snprintf(fix, sizeof(fix), " (or, once you know, drop it: sqlite3 %.100s "
			 "'DROP %s \"%.64s\"')", db->path, type, name);
	snprintf(last_error, sizeof(last_error), "%s holds %s %s %.64s that vaultfs %s; "
		 "refusing to use it. Find out who changed it, then restore the vault from "
		 "a backup%s", db->path, strchr("aeiou", type[0]) ? "an" : "a", type, name, why,
		 fix);
	return -EUCLEAN;
}

/* Triggers, views, tables or indexes that vaultfs did not make (a trigger
 * could undo root's chmod, a view stand in for a table) or changed ones
 * are refused: the file's sqlite_master must be exactly ours. */
static int schema_check(struct db *db)
{
	sqlite3_stmt *st = NULL;
	int i = 0, c, rc, r = 0;

	rc = sqlite3_prepare_v2(db->conn, SCHEMA_SQL, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return map_rc(db, rc);
	while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		c = schema_cmp(st, i);
		if (c < 0)
			r = schema_refuse(db, (const char *)sqlite3_column_text(st, 0),
					  (const char *)sqlite3_column_text(st, 1),
					  "did not create");
		else if (c > 0)
			r = schema_refuse(db, "no", schema_expected[i].name, "needs (damaged)");
		else if (strcmp((const char *)sqlite3_column_text(st, 3), schema_expected[i].sql) ||
			 strcmp((const char *)sqlite3_column_text(st, 2), schema_expected[i].tbl))
			r = schema_refuse(db, schema_expected[i].type, schema_expected[i].name,
					  "made differently (altered)");
		i++;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = map_rc(db, rc);
	if (r == 0 && i < n_expected)
		r = schema_refuse(db, "no", schema_expected[i].name, "needs (damaged)");
	sqlite3_finalize(st);
	if (r == 0)
		r = pragma_int(db, "PRAGMA schema_version", &db->schema_cookie);
	return r;
}

static int step_row(struct db *db, sqlite3_stmt *st);

/* At each write transaction: the schema was changed since it was checked
 * (a trigger added while we run) only if its cookie moved. */
static int schema_recheck(struct db *db)
{
	sqlite3_stmt *st;
	int64_t cookie = -1;
	int r = 0;

	st = stmt_get(db, ST_SCHEMA_VERSION, &r);
	if (!st)
		return r;
	if (step_row(db, st) == 1)
		cookie = sqlite3_column_int64(st, 0);
	stmt_done(st);
	return cookie == db->schema_cookie ? 0 : schema_check(db);
}

static int create_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);

	if (fd < 0)
		return -errno;
	if (fchmod(fd, 0600) < 0) {
		int r = -errno;

		close(fd);
		unlink(path);
		return r;
	}
	close(fd);
	return 0;
}

static void wal_path(struct db *db, char out[static WAL_PATH_MAX])
{
	snprintf(out, WAL_PATH_MAX, "%s-wal", db->path);
}

static void wal_remember(struct db *db)
{
	char path[WAL_PATH_MAX];
	struct stat st;

	wal_path(db, path);
	if (stat(path, &st) == 0) {
		db->wal_known = true;
		db->wal_dev = st.st_dev;
		db->wal_ino = st.st_ino;
	}
}

/* SQLite goes on writing to a database file, or a -wal, that was unlinked
 * or replaced under it, and what it writes there is gone with the process:
 * such a commit must fail instead of being acknowledged. */
static bool files_moved(struct db *db)
{
	char path[WAL_PATH_MAX];
	struct stat st;
	int moved = 0;

	if (sqlite3_file_control(db->conn, "main", SQLITE_FCNTL_HAS_MOVED, &moved) ==
	    SQLITE_OK && moved)
		return true;
	if (!db->wal_known)
		return false;
	wal_path(db, path);
	return stat(path, &st) < 0 || st.st_dev != db->wal_dev || st.st_ino != db->wal_ino;
}

/* Nonzero turns the commit into a rollback (SQLITE_CONSTRAINT_COMMITHOOK). */
static int commit_hook(void *ctx)
{
	return files_moved(ctx);
}

static int configure(struct db *db, int flags)
{
	int r;

	sqlite3_busy_timeout(db->conn, BUSY_TIMEOUT_MS);
	sqlite3_extended_result_codes(db->conn, 1);
	if (flags & DB_READER)
		return exec_sql(db, "PRAGMA query_only = ON; PRAGMA cache_size = -"
				    STRINGIFY(READER_CACHE_KIB));
	r = exec_sql(db, "PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;");
	if (r == 0 && !(flags & DB_READONLY))
		r = exec_sql(db, "PRAGMA journal_mode = WAL");
	/* After a burst of writes, a WAL that starts over is cut back to this. */
	if (r == 0 && !(flags & DB_READONLY))
		r = exec_sql(db, "PRAGMA journal_size_limit = 4194304");
	if (r == 0)
		r = exec_sql(db, "PRAGMA synchronous = FULL");
	return r;
}

/* Before SQLite initializes: without memory statistics its allocator takes
 * no global mutex, which every connection's queries otherwise contend on
 * (Debian's build has no lookaside, so each query mallocs). */
static void sqlite_setup(void)
{
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

int db_open(struct db **out, const char *path, int flags)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct db *db;
	struct stat st;
	int oflags, rc, r;
	mode_t old_umask;

	*out = NULL;
	last_error[0] = '\0';
	pthread_once(&once, sqlite_setup);
	db = calloc(1, sizeof(*db));
	if (!db || !(db->path = strdup(path))) {
		free(db);
		return -ENOMEM;
	}
	pthread_mutexattr_t attr;
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&db->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	pthread_mutex_init(&db->readers_lock, NULL);
	if (!(flags & (DB_READER | DB_READONLY)) && !(db->states = dbi_states_new())) {
		r = -ENOMEM;
		goto fail;
	}

	if (flags & DB_CREATE) {
		r = create_file(path);
		if (r < 0) {
			snprintf(last_error, sizeof(last_error), "%s", strerror(-r));
			goto fail;
		}
	} else if (stat(path, &st) < 0) {
		r = -errno;
		snprintf(last_error, sizeof(last_error), "%s", strerror(-r));
		goto fail;
	}
	oflags = (flags & DB_READONLY ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) |
		 SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW;
	old_umask = umask(077);
	rc = sqlite3_open_v2(path, &db->conn, oflags, NULL);
	umask(old_umask);
	if (rc != SQLITE_OK) {
		r = map_rc(db, rc);
		goto fail_created;
	}
	r = configure(db, flags);
	if (r == 0 && !(flags & DB_READER))
		r = migrate(db, flags & DB_CREATE);
	if (r == 0 && !(flags & DB_READER))
		r = schema_check(db);
	if (r < 0)
		goto fail_created;
	wal_remember(db);
	sqlite3_commit_hook(db->conn, commit_hook, db);
	*out = db;
	return 0;
fail_created:
	if (flags & DB_CREATE) {
		sqlite3_close_v2(db->conn);
		db->conn = NULL;
		unlink(path);
	}
fail:
	db_close(db);
	return r;
}

void db_close(struct db *db)
{
	struct db *rd;

	if (!db)
		return;
	while ((rd = db->readers)) {
		db->readers = rd->next_reader;
		db_close(rd);
	}
	pthread_mutex_destroy(&db->readers_lock);
	sqlite3_finalize(db->pin_begin);
	sqlite3_finalize(db->pin_end);
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(db->stmt[i]);
	for (int i = 0; i < DBI_XSTMT_MAX; i++)
		sqlite3_finalize(db->xstmt[i].st);
	if (db->conn)
		sqlite3_close_v2(db->conn);
	pthread_mutex_destroy(&db->lock);
	free(db->dirty);
	dbi_states_free(db->states);
	free(db->path);
	free(db);
}

/* quick_check's report, as one line without its "*** in database main ***". */
static void one_line(char *dst, size_t size, const char *msg)
{
	static const char banner[] = "*** in database main ***\n";
	size_t i;

	if (strncmp(msg, banner, sizeof(banner) - 1) == 0)
		msg += sizeof(banner) - 1;
	snprintf(dst, size, "%s", msg);
	for (i = 0; dst[i]; i++)
		if (dst[i] == '\n' || dst[i] == '\r')
			dst[i] = ' ';
}

/* SQLite reads a cut-off last page as if the rest were zeros, and checks
 * nothing that would notice; but it only ever writes whole pages. */
static int check_size(struct db *db)
{
	int64_t page = 0;
	struct stat st;
	int r;

	r = pragma_int(db, "PRAGMA page_size", &page);
	if (r < 0)
		return r;
	if (stat(db->path, &st) < 0)
		return -errno;
	if (page > 0 && st.st_size % page) {
		snprintf(last_error, sizeof(last_error), "its size, %lld bytes, is not a whole "
			 "number of %lld-byte pages: the file was cut short",
			 (long long)st.st_size, (long long)page);
		return -EPROTO;
	}
	return 0;
}

int db_check(struct db *db)
{
	const unsigned char *msg;
	sqlite3_stmt *st;
	int rc, r;

	db_lock(db);
	r = check_size(db);
	if (r < 0)
		goto out;
	rc = sqlite3_prepare_v2(db->conn, "PRAGMA quick_check(1)", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		r = map_rc(db, rc);
		goto out;
	}
	rc = sqlite3_step(st);
	msg = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
	if (msg && strcmp((const char *)msg, "ok") == 0) {
		r = 0;
	} else if (msg) {
		one_line(last_error, sizeof(last_error), (const char *)msg);
		r = -EPROTO;
	} else {
		r = rc == SQLITE_DONE ? -EPROTO : map_rc(db, rc);
	}
	sqlite3_finalize(st);
out:
	db_unlock(db);
	return r;
}

/* Reads outside a write transaction run on a connection of their own,
 * opened on first need, up to max (0: none; reads share the writer's). */
void db_set_readers(struct db *db, unsigned max)
{
	pthread_mutex_lock(&db->readers_lock);
	db->readers_max = max;
	pthread_mutex_unlock(&db->readers_lock);
}

static bool txn_open(struct db *db)
{
	return atomic_load(&db->owner) != (pthread_t)0;
}

static bool in_own_txn(struct db *db)
{
	return pthread_equal(atomic_load(&db->owner), pthread_self());
}

/* The read connection db_read_begin pinned to this thread, and its db. */
static __thread struct db *pinned_db, *pinned_rd;

/* A read connection for the calling thread, or NULL: then the writer's
 * connection serves the read. It does while a write transaction is open:
 * its own thread must see its changes, and the others wait for the commit,
 * since FUSE sends RELEASE (which may commit) without waiting for it, and
 * the open that follows a close must see what the close committed. */
static struct db *reader_take(struct db *db)
{
	struct db *rd = NULL;
	bool open_one = false;

	if (!db->readers_max)
		return NULL;
	if (pinned_db == db)
		return in_own_txn(db) ? NULL : pinned_rd;
	if (txn_open(db))
		return NULL;
	pthread_mutex_lock(&db->readers_lock);
	if (db->readers) {
		rd = db->readers;
		db->readers = rd->next_reader;
	} else if (db->readers_open < db->readers_max) {
		db->readers_open++;
		open_one = true;
	}
	pthread_mutex_unlock(&db->readers_lock);
	if (open_one && db_open(&rd, db->path, DB_READER) < 0) {
		pthread_mutex_lock(&db->readers_lock);
		db->readers_open--;
		pthread_mutex_unlock(&db->readers_lock);
		rd = NULL;
	}
	if (rd)
		rd->auth = db->auth;
	return rd;
}

/* Returns rd to the idle list (unless pinned); passes r through. */
static int reader_give(struct db *db, struct db *rd, int r)
{
	if (rd == pinned_rd)
		return r;
	pthread_mutex_lock(&db->readers_lock);
	rd->next_reader = db->readers;
	db->readers = rd;
	pthread_mutex_unlock(&db->readers_lock);
	return r;
}

static int step_stmt(struct db *rd, sqlite3_stmt **st, const char *sql)
{
	int rc = SQLITE_OK;

	if (!*st)
		rc = sqlite3_prepare_v3(rd->conn, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(*st);
		sqlite3_reset(*st);
	}
	return rc == SQLITE_DONE || rc == SQLITE_OK ? 0 : map_rc(rd, rc);
}

void db_read_begin(struct db *db)
{
	struct db *rd;

	if (pinned_db || !(rd = reader_take(db)))
		return;
	if (step_stmt(rd, &rd->pin_begin, "BEGIN") < 0) {
		reader_give(db, rd, 0);
		return;
	}
	pinned_db = db;
	pinned_rd = rd;
}

bool db_read_pinned(struct db *db)
{
	return pinned_db == db;
}

struct db *dbi_reader_take(struct db *db)
{
	return reader_take(db);
}

int dbi_reader_give(struct db *db, struct db *rd, int r)
{
	return reader_give(db, rd, r);
}

void db_read_end(struct db *db)
{
	struct db *rd = pinned_rd;

	if (pinned_db != db)
		return;
	if (step_stmt(rd, &rd->pin_end, "COMMIT") < 0)
		sqlite3_exec(rd->conn, "ROLLBACK", NULL, NULL, NULL);
	pinned_db = pinned_rd = NULL;
	reader_give(db, rd, 0);
}

static void txn_leave(struct db *db)
{
	if (--db->depth == 0)
		atomic_store(&db->owner, (pthread_t)0);
}

/* Back to synced commits after a db_begin_lazy transaction (lock held). */
static int resync(struct db *db)
{
	if (db->resync && sqlite3_get_autocommit(db->conn) &&
	    exec_sql(db, "PRAGMA synchronous = FULL") == 0)
		db->resync = false;
	return db->resync ? -EIO : 0;
}

/* A db_begin on the thread that already holds the transaction is a
 * savepoint inside it, so a batch can wrap calls that begin their own. */
int db_begin(struct db *db)
{
	int r;

	db_lock(db);
	r = 0;
	if (!db->depth && !db->lazy)
		r = resync(db);
	db->lazy = false;
	if (r == 0)
		r = exec_sql(db, db->depth ? "SAVEPOINT nested" : "BEGIN IMMEDIATE");
	if (r < 0) {
		db_unlock(db);
		return r;
	}
	if (db->depth++ == 0) {
		atomic_store(&db->owner, pthread_self());
		r = schema_recheck(db);
		if (r < 0) {
			db_rollback(db);
			return r;
		}
	}
	return 0;
}

/* SQLite takes a change of synchronous only outside a transaction: set
 * here, and put back (under the same lock) when the transaction ends. */
int db_begin_lazy(struct db *db)
{
	int r;

	db_lock(db);
	if (db->depth)
		r = -EBUSY;
	else
		r = exec_sql(db, "PRAGMA synchronous = NORMAL");
	if (r == 0) {
		db->resync = db->lazy = true;
		r = db_begin(db);
	}
	if (r < 0)
		(void)resync(db);
	db_unlock(db);
	return r;
}

static int release_nested(struct db *db)
{
	int r = exec_sql(db, "RELEASE nested");

	if (r < 0)
		sqlite3_exec(db->conn, "ROLLBACK TO nested; RELEASE nested", NULL, NULL, NULL);
	return r;
}

/* At the outermost commit: the state of each instance whose live secrets
 * changed, made afresh. */
static int states_update(struct db *db)
{
	int r = 0;

	for (size_t i = 0; r == 0 && i < db->ndirty; i++)
		r = dbi_states_commit(db, db->dirty[i]);
	if (r == 0 && db->ndirty)
		r = dbi_floor_update(db, db->auth);
	db->ndirty = 0;
	return r;
}

int dbi_state_touch(struct db *db, int64_t inst, bool fresh)
{
	int64_t *p;
	int r;

	if (!in_own_txn(db)) {
		snprintf(last_error, sizeof(last_error), "internal: a change to live secrets "
			 "outside a transaction");
		return -EINVAL;
	}
	if (fresh && (r = dbi_states_note(db, inst, DBI_STATES_FRESH)) < 0)
		return r;
	for (size_t i = 0; i < db->ndirty; i++)
		if (db->dirty[i] == inst)
			return 0;
	if (!fresh && (r = dbi_states_verify(db, inst)) < 0)
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

int db_commit(struct db *db)
{
	bool last = db->depth == 1;
	int r;

	if (db->depth > 1) {
		r = release_nested(db);
	} else if ((r = states_update(db)) < 0) {
		sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
		dbi_states_end(db, false);
		(void)resync(db);
	} else {
		r = exec_sql(db, "COMMIT");
		if (r < 0 && sqlite3_get_autocommit(db->conn) == 0)
			sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
		dbi_states_end(db, r == 0);
		(void)resync(db);
	}
	txn_leave(db);
	db_unlock(db);
	if (last)
		dbi_auth_flush(db);
	return r;
}

void db_rollback(struct db *db)
{
	bool last = db->depth == 1;

	if (last) {
		db->ndirty = 0;
		dbi_states_end(db, false);
	}
	if (db->depth > 1)
		sqlite3_exec(db->conn, "ROLLBACK TO nested; RELEASE nested", NULL, NULL, NULL);
	else if (sqlite3_get_autocommit(db->conn) == 0)
		sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
	if (db->depth == 1)
		(void)resync(db);
	txn_leave(db);
	db_unlock(db);
	if (last)
		dbi_auth_flush(db);
}

void db_blob_free(struct db_blob *b)
{
	if (!b)
		return;
	free(b->data);
	b->data = NULL;
	b->len = 0;
}

static int column_blob(sqlite3_stmt *st, int col, struct db_blob *out)
{
	const void *p = sqlite3_column_blob(st, col);
	size_t n = (size_t)sqlite3_column_bytes(st, col);

	out->data = malloc(n ? n : 1);
	if (!out->data)
		return -ENOMEM;
	if (n)
		memcpy(out->data, p, n);
	out->len = n;
	return 0;
}

static void column_name(sqlite3_stmt *st, int col, char name[static DB_NAME_MAX + 1])
{
	const unsigned char *s = sqlite3_column_text(st, col);
	size_t n = s ? (size_t)sqlite3_column_bytes(st, col) : 0;

	/* Every row read has one: a plain copy, not snprintf's machinery. */
	if (n > DB_NAME_MAX)
		n = DB_NAME_MAX;
	memcpy(name, s ? (const void *)s : "", n);
	name[n] = '\0';
}

static const int inst_tagged[] = { 0, 1, 2, 3, 4, 7 };
static const int sec_tagged[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8 };
#define NCOLS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int row_instance(struct db *db, sqlite3_stmt *st, struct db_instance *in)
{
	int r = dbi_row_verify(db, st, "instances", inst_tagged, NCOLS(inst_tagged), INST_MAC,
			       NULL, sqlite3_column_int64(st, 0));

	if (r < 0)
		return r;
	in->id = sqlite3_column_int64(st, 0);
	column_name(st, 1, in->name);
	in->uid = (uid_t)sqlite3_column_int64(st, 2);
	in->gid = (gid_t)sqlite3_column_int64(st, 3);
	in->mode = (mode_t)sqlite3_column_int64(st, 4) & 07777;
	in->ctime_ns = sqlite3_column_int64(st, 5);
	in->mtime_ns = sqlite3_column_int64(st, 6);
	in->generation = (uint64_t)sqlite3_column_int64(st, 7);
	return 0;
}

static int row_secret(struct db *db, sqlite3_stmt *st, struct db_secret *s)
{
	int r = dbi_row_verify(db, st, "secrets", sec_tagged, NCOLS(sec_tagged), SEC_MAC,
			       NULL, sqlite3_column_int64(st, 0));

	if (r < 0)
		return r;
	s->id = sqlite3_column_int64(st, 0);
	s->instance_id = sqlite3_column_int64(st, 1);
	column_name(st, 2, s->name);
	s->uid = (uid_t)sqlite3_column_int64(st, 3);
	s->gid = (gid_t)sqlite3_column_int64(st, 4);
	s->mode = (mode_t)sqlite3_column_int64(st, 5) & 07777;
	s->version = (uint64_t)sqlite3_column_int64(st, 6);
	s->size = (uint64_t)sqlite3_column_int64(st, 7);
	s->flags = (uint32_t)sqlite3_column_int64(st, 8);
	s->ctime_ns = sqlite3_column_int64(st, 9);
	s->mtime_ns = sqlite3_column_int64(st, 10);
	s->chtime_ns = sqlite3_column_int64(st, 11);
	s->updated_by = (uid_t)sqlite3_column_int64(st, 12);
	return 0;
}

static int bind_blob(sqlite3_stmt *st, int i, const struct db_blob *b)
{
	return sqlite3_bind_blob64(st, i, b->data ? (const void *)b->data : (const void *)"",
				   b->len, SQLITE_STATIC);
}

/* Runs a statement that returns no row and must change exactly `want` rows
 * (or any number if want < 0). */
static int step_change(struct db *db, sqlite3_stmt *st, int want)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE)
		return map_rc(db, rc);
	if (want >= 0 && sqlite3_changes(db->conn) != want)
		return -ENOENT;
	return 0;
}

/* Runs a statement expected to return at most one row. */
static int step_row(struct db *db, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return map_rc(db, rc);
}

static int delete_row(struct db *db, enum stmt_id id, int64_t rowid);

/* An insert and its tag are one change: outside a caller's transaction,
 * the row is removed again if it can't be tagged. */
static int tag_new_row(struct db *db, enum stmt_id id, int64_t rowid)
{
	sqlite3_stmt *st;
	int r = 0;

	st = stmt_get(db, id, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, rowid);
		r = step_change(db, st, 1);
		stmt_done(st);
	}
	if (r < 0 && !in_own_txn(db))
		(void)delete_row(db, id == ST_INST_TAG ? ST_INST_DELETE : ST_SEC_DELETE, rowid);
	return r;
}

int db_meta_get(struct db *db, const char *key, struct db_blob *out)
{
	struct db *rd;
	sqlite3_stmt *st;
	int r = 0;

	if ((rd = reader_take(db)))
		return reader_give(db, rd, db_meta_get(rd, key, out));
	out->data = NULL;
	out->len = 0;
	db_lock(db);
	st = stmt_get(db, ST_META_GET, &r);
	if (!st)
		goto out;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	r = step_row(db, st);
	if (r == 1)
		r = column_blob(st, 0, out);
	else if (r == 0)
		r = -ENOENT;
	stmt_done(st);
out:
	db_unlock(db);
	return r;
}

int db_meta_set(struct db *db, const char *key, const unsigned char *v, size_t len)
{
	struct db_blob b = { (unsigned char *)v, len };
	sqlite3_stmt *st;
	int r = 0;

	db_lock(db);
	st = stmt_get(db, ST_META_SET, &r);
	if (st) {
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
		bind_blob(st, 2, &b);
		r = step_change(db, st, -1);
		stmt_done(st);
	}
	db_unlock(db);
	return r;
}

static int db_instance_create_now(struct db *db, struct db_instance *in, const struct db_blob *wrapped_key)
{
	sqlite3_stmt *st;
	int r = 0;

	db_lock(db);
	st = stmt_get(db, ST_INST_CREATE, &r);
	if (st) {
		in->ctime_ns = in->mtime_ns = db_now_ns();
		sqlite3_bind_text(st, 1, in->name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, in->uid);
		sqlite3_bind_int64(st, 3, in->gid);
		sqlite3_bind_int64(st, 4, in->mode & 07777);
		sqlite3_bind_int64(st, 5, in->ctime_ns);
		sqlite3_bind_int64(st, 6, (sqlite3_int64)in->generation);
		bind_blob(st, 7, wrapped_key);
		r = step_change(db, st, 1);
		if (r == 0)
			in->id = sqlite3_last_insert_rowid(db->conn);
		stmt_done(st);
	}
	if (r == 0)
		r = tag_new_row(db, ST_INST_TAG, in->id);
	db_unlock(db);
	return r;
}

static int instance_query(struct db *db, enum stmt_id id, int64_t rowid, const char *name,
			  struct db_instance *out)
{
	struct db *rd;
	sqlite3_stmt *st;
	int r = 0;

	if ((rd = reader_take(db)))
		return reader_give(db, rd, instance_query(rd, id, rowid, name, out));
	db_lock(db);
	st = stmt_get(db, id, &r);
	if (st) {
		if (name)
			sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
		else
			sqlite3_bind_int64(st, 1, rowid);
		r = step_row(db, st);
		if (r == 1) {
			r = row_instance(db, st, out);
		} else if (r == 0) {
			r = -ENOENT;
		}
		stmt_done(st);
	}
	db_unlock(db);
	return r;
}

int db_instance_get(struct db *db, int64_t id, struct db_instance *out)
{
	return instance_query(db, ST_INST_GET, id, NULL, out);
}

int db_instance_find(struct db *db, const char *name, struct db_instance *out)
{
	return instance_query(db, ST_INST_FIND, 0, name, out);
}

int db_instance_wrapped_key(struct db *db, int64_t id, struct db_blob *out)
{
	struct db *rd;
	sqlite3_stmt *st;
	int r = 0;

	if ((rd = reader_take(db)))
		return reader_give(db, rd, db_instance_wrapped_key(rd, id, out));
	out->data = NULL;
	out->len = 0;
	db_lock(db);
	st = stmt_get(db, ST_INST_KEY, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, id);
		r = step_row(db, st);
		if (r == 1)
			r = column_blob(st, 0, out);
		else if (r == 0)
			r = -ENOENT;
		stmt_done(st);
	}
	db_unlock(db);
	return r;
}

int db_instance_set_wrapped_key(struct db *db, int64_t id, uint64_t generation,
				const struct db_blob *wrapped)
{
	sqlite3_stmt *st;
	int r = 0;

	db_lock(db);
	st = stmt_get(db, ST_INST_SET_KEY, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)generation);
		bind_blob(st, 3, wrapped);
		r = step_change(db, st, 1);
		stmt_done(st);
	}
	db_unlock(db);
	return r;
}

static int set_attr(struct db *db, enum stmt_id id, int64_t rowid, uid_t uid, gid_t gid,
		    mode_t mode, int64_t now_ns)
{
	sqlite3_stmt *st;
	int r = 0;

	db_lock(db);
	st = stmt_get(db, id, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, rowid);
		sqlite3_bind_int64(st, 2, uid);
		sqlite3_bind_int64(st, 3, gid);
		sqlite3_bind_int64(st, 4, mode & 07777);
		sqlite3_bind_int64(st, 5, now_ns);
		r = step_change(db, st, 1);
		stmt_done(st);
	}
	db_unlock(db);
	return r;
}

int db_instance_set_attr(struct db *db, int64_t id, uid_t uid, gid_t gid, mode_t mode,
			 int64_t now_ns)
{
	return set_attr(db, ST_INST_SET_ATTR, id, uid, gid, mode, now_ns);
}

static int delete_row(struct db *db, enum stmt_id id, int64_t rowid)
{
	sqlite3_stmt *st;
	int r = 0;

	db_lock(db);
	st = stmt_get(db, id, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, rowid);
		r = step_change(db, st, 1);
		stmt_done(st);
	}
	db_unlock(db);
	return r;
}

int db_instance_delete(struct db *db, int64_t id)
{
	sqlite3_stmt *st;
	int r = 0;

	db_lock(db);
	st = stmt_get(db, ST_INST_HAS_SECRETS, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, id);
		r = step_row(db, st);
		stmt_done(st);
		if (r == 1)
			r = -ENOTEMPTY;
		else if (r == 0)
			r = delete_row(db, ST_INST_DELETE, id);
	}
	db_unlock(db);
	return r;
}

int db_instance_each(struct db *db, int64_t after_id,
		     int (*fn)(void *, const struct db_instance *), void *ctx)
{
	struct db *rd;
	struct db_instance in;
	sqlite3_stmt *st;
	int r = 0;

	if ((rd = reader_take(db)))
		return reader_give(db, rd, db_instance_each(rd, after_id, fn, ctx));
	db_lock(db);
	st = stmt_get(db, ST_INST_EACH, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, after_id);
		while ((r = step_row(db, st)) == 1) {
			r = row_instance(db, st, &in);
			if (r == 0)
				r = fn(ctx, &in);
			if (r)
				break;
		}
		stmt_done(st);
	}
	db_unlock(db);
	return r;
}

static int64_t count_rows(struct db *db, enum stmt_id id, int64_t rowid)
{
	struct db *rd;
	sqlite3_stmt *st;
	int64_t n = -1;
	int r = 0;

	if ((rd = reader_take(db))) {
		n = count_rows(rd, id, rowid);
		reader_give(db, rd, 0);
		return n;
	}
	db_lock(db);
	st = stmt_get(db, id, &r);
	if (st) {
		if (id == ST_SEC_COUNT)
			sqlite3_bind_int64(st, 1, rowid);
		if (step_row(db, st) == 1)
			n = sqlite3_column_int64(st, 0);
		stmt_done(st);
	}
	db_unlock(db);
	return n;
}

int64_t db_instance_count(struct db *db)
{
	return count_rows(db, ST_INST_COUNT, 0);
}

int64_t db_secret_count(struct db *db, int64_t instance_id)
{
	return count_rows(db, ST_SEC_COUNT, instance_id);
}

int db_secret_get(struct db *db, int64_t id, struct db_secret *out)
{
	struct db *rd;
	sqlite3_stmt *st;
	int r = 0;

	if ((rd = reader_take(db)))
		return reader_give(db, rd, db_secret_get(rd, id, out));
	db_lock(db);
	st = stmt_get(db, ST_SEC_GET, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, id);
		r = step_row(db, st);
		if (r == 1) {
			r = row_secret(db, st, out);
		} else if (r == 0) {
			r = -ENOENT;
		}
		stmt_done(st);
	}
	db_unlock(db);
	return r;
}

int db_secret_find(struct db *db, int64_t instance_id, const char *name, struct db_secret *out)
{
	struct db *rd;
	sqlite3_stmt *st;
	int r = 0;

	if ((rd = reader_take(db)))
		return reader_give(db, rd, db_secret_find(rd, instance_id, name, out));
	db_lock(db);
	st = stmt_get(db, ST_SEC_FIND, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, instance_id);
		sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
		r = step_row(db, st);
		if (r == 1) {
			r = row_secret(db, st, out);
		} else if (r == 0) {
			r = -ENOENT;
		}
		stmt_done(st);
	}
	db_unlock(db);
	return r;
}

int db_secret_blob(struct db *db, int64_t id, struct db_secret *meta, struct db_blob *out)
{
	struct db *rd;
	struct db_secret tmp;
	sqlite3_stmt *st;
	int r = 0;

	if ((rd = reader_take(db)))
		return reader_give(db, rd, db_secret_blob(rd, id, meta, out));
	out->data = NULL;
	out->len = 0;
	db_lock(db);
	st = stmt_get(db, ST_SEC_BLOB, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, id);
		r = step_row(db, st);
		if (r == 1) {
			r = row_secret(db, st, meta ? meta : &tmp);
			if (r == 0)
				r = column_blob(st, SEC_MAC + 1, out);
		} else if (r == 0) {
			r = -ENOENT;
		}
		stmt_done(st);
	}
	db_unlock(db);
	return r;
}

int db_secret_each(struct db *db, int64_t instance_id, int64_t after_id,
		   int (*fn)(void *, const struct db_secret *), void *ctx)
{
	struct db *rd;
	struct db_secret s;
	sqlite3_stmt *st;
	int r = 0;

	if ((rd = reader_take(db)))
		return reader_give(db, rd, db_secret_each(rd, instance_id, after_id, fn, ctx));
	db_lock(db);
	st = stmt_get(db, ST_SEC_EACH, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, instance_id);
		sqlite3_bind_int64(st, 2, after_id);
		while ((r = step_row(db, st)) == 1) {
			r = row_secret(db, st, &s);
			if (r == 0)
				r = fn(ctx, &s);
			if (r)
				break;
		}
		stmt_done(st);
	}
	db_unlock(db);
	return r;
}

static int db_secret_insert_now(struct db *db, struct db_secret *s, const struct db_blob *blob)
{
	sqlite3_stmt *st;
	int r = 0;

	db_lock(db);
	st = stmt_get(db, ST_SEC_INSERT, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, s->instance_id);
		sqlite3_bind_text(st, 2, s->name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, s->uid);
		sqlite3_bind_int64(st, 4, s->gid);
		sqlite3_bind_int64(st, 5, s->mode & 07777);
		sqlite3_bind_int64(st, 6, (sqlite3_int64)s->version);
		sqlite3_bind_int64(st, 7, (sqlite3_int64)s->size);
		sqlite3_bind_int64(st, 8, s->flags);
		sqlite3_bind_int64(st, 9, s->ctime_ns);
		sqlite3_bind_int64(st, 10, s->mtime_ns);
		sqlite3_bind_int64(st, 11, s->chtime_ns);
		sqlite3_bind_int64(st, 12, s->updated_by);
		bind_blob(st, 13, blob);
		r = step_change(db, st, 1);
		if (r == 0)
			s->id = sqlite3_last_insert_rowid(db->conn);
		stmt_done(st);
	}
	if (r == 0)
		r = tag_new_row(db, ST_SEC_TAG, s->id);
	db_unlock(db);
	return r;
}

static int db_secret_set_value_now(struct db *db, const struct db_secret *s, const struct db_blob *blob)
{
	sqlite3_stmt *st;
	int r = 0;

	db_lock(db);
	st = stmt_get(db, ST_SEC_SET_VALUE, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, s->id);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)s->version);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)s->size);
		sqlite3_bind_int64(st, 4, s->flags);
		sqlite3_bind_int64(st, 5, s->mtime_ns);
		sqlite3_bind_int64(st, 6, s->chtime_ns);
		sqlite3_bind_int64(st, 7, s->updated_by);
		bind_blob(st, 8, blob);
		r = step_change(db, st, 1);
		stmt_done(st);
	}
	db_unlock(db);
	return r;
}

int db_secret_set_attr(struct db *db, int64_t id, uid_t uid, gid_t gid, mode_t mode,
		       int64_t now_ns)
{
	return set_attr(db, ST_SEC_SET_ATTR, id, uid, gid, mode, now_ns);
}

static int db_secret_rename_now(struct db *db, const struct db_secret *s, const struct db_blob *blob)
{
	sqlite3_stmt *st;
	int r = 0;

	db_lock(db);
	st = stmt_get(db, ST_SEC_RENAME, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, s->id);
		sqlite3_bind_text(st, 2, s->name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)s->version);
		sqlite3_bind_int64(st, 4, s->chtime_ns);
		bind_blob(st, 5, blob);
		r = step_change(db, st, 1);
		stmt_done(st);
	}
	db_unlock(db);
	return r;
}

static int db_secret_delete_now(struct db *db, int64_t id)
{
	return delete_row(db, ST_SEC_DELETE, id);
}

/* What the mounts show of every row: any change to names, owners, modes,
 * values, times or keys changes it (times in ns, low 32 bits summed: no
 * overflow, and two changes of one row have different times). */
static const char sql_change_fp[] =
	"SELECT (SELECT count(*) || ':' || ifnull(max(id), 0) || ':' || "
	"ifnull(sum(chtime & 4294967295), 0) || ':' || ifnull(sum(version), 0) || ':' || "
	"ifnull(sum(uid), 0) || ':' || ifnull(sum(gid), 0) || ':' || ifnull(sum(mode), 0) "
	"FROM secrets) || '/' || (SELECT count(*) || ':' || ifnull(max(id), 0) || ':' || "
	"ifnull(sum(mtime & 4294967295), 0) || ':' || ifnull(sum(generation), 0) || ':' || "
	"ifnull(sum(uid), 0) || ':' || ifnull(sum(gid), 0) || ':' || ifnull(sum(mode), 0) "
	"FROM instances)";

static int change_fingerprint(struct db *db, char *out, size_t size)
{
	sqlite3_stmt *st = NULL;
	int rc, r;

	rc = sqlite3_prepare_v2(db->conn, sql_change_fp, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return map_rc(db, rc);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		snprintf(out, size, "%s", (const char *)sqlite3_column_text(st, 0));
		r = 0;
	} else {
		r = map_rc(db, rc);
	}
	sqlite3_finalize(st);
	return r;
}

/* SQLite's data_version moves when another connection commits, and only
 * then: asked on the writing connection, our own commits don't count. The
 * audit log's connection commits too, without changing what mounts show:
 * the fingerprint of the tables tells the two apart. One thread polls
 * (the change_* fields are its own). */
int db_change_seq(struct db *db, uint64_t *out)
{
	char fp[sizeof(db->change_fp)];
	int64_t dv = 0;
	int r;

	struct db *rd;

	db_lock(db);
	r = pragma_int(db, "PRAGMA data_version", &dv);
	db_unlock(db);
	if (r == 0 && (dv != db->change_dv || !db->change_fp[0])) {
		/* On a read connection where there is one: the writer's stays
		 * free for commits meanwhile. */
		rd = reader_take(db);
		if (rd) {
			r = reader_give(db, rd, change_fingerprint(rd, fp, sizeof(fp)));
		} else {
			db_lock(db);
			r = change_fingerprint(db, fp, sizeof(fp));
			db_unlock(db);
		}
		if (r == 0 && strcmp(fp, db->change_fp)) {
			memcpy(db->change_fp, fp, sizeof(fp));
			db->change_seq++;
		}
		if (r == 0)
			db->change_dv = dv;
	}
	*out = db->change_seq;
	return r;
}

/* The helpers above, for the other files of db/ (db_int.h). */

void dbi_lock(struct db *db)
{
	db_lock(db);
}

void dbi_unlock(struct db *db)
{
	db_unlock(db);
}

sqlite3 *dbi_conn(struct db *db)
{
	return db->conn;
}

int dbi_rc(struct db *db, int rc)
{
	return map_rc(db, rc);
}

int dbi_exec(struct db *db, const char *sql)
{
	return exec_sql(db, sql);
}

sqlite3_stmt *dbi_stmt(struct db *db, const char *sql, int *err)
{
	int i, rc;

	for (i = 0; i < DBI_XSTMT_MAX && db->xstmt[i].sql; i++)
		if (db->xstmt[i].sql == sql)
			return db->xstmt[i].st;
	if (i == DBI_XSTMT_MAX) {
		*err = -ENOMEM;
		snprintf(last_error, sizeof(last_error), "statement cache full");
		return NULL;
	}
	rc = sqlite3_prepare_v3(db->conn, sql, -1, SQLITE_PREPARE_PERSISTENT,
				&db->xstmt[i].st, NULL);
	if (rc != SQLITE_OK) {
		*err = map_rc(db, rc);
		return NULL;
	}
	db->xstmt[i].sql = sql;
	return db->xstmt[i].st;
}

void dbi_done(sqlite3_stmt *st)
{
	stmt_done(st);
}

int dbi_step_row(struct db *db, sqlite3_stmt *st)
{
	return step_row(db, st);
}

int dbi_step_change(struct db *db, sqlite3_stmt *st, int want)
{
	return step_change(db, st, want);
}

int dbi_column_blob(sqlite3_stmt *st, int col, struct db_blob *out)
{
	return column_blob(st, col, out);
}

void dbi_column_name(sqlite3_stmt *st, int col, char name[static DB_NAME_MAX + 1])
{
	column_name(st, col, name);
}

int dbi_bind_blob(sqlite3_stmt *st, int i, const struct db_blob *b)
{
	return bind_blob(st, i, b);
}

int dbi_row_instance(struct db *db, sqlite3_stmt *st, struct db_instance *in)
{
	return row_instance(db, st, in);
}

struct dbi_states *dbi_states(struct db *db)
{
	return db->states;
}

const struct db_auth *dbi_auth(struct db *db)
{
	return db->auth;
}

const struct db_auth *dbi_auth_next(struct db *db)
{
	return db->auth_next;
}

void dbi_set_auth_next(struct db *db, const struct db_auth *next)
{
	db->auth_next = next;
}

bool dbi_in_own_txn(struct db *db)
{
	return in_own_txn(db);
}

void db_set_auth(struct db *db, const struct db_auth *auth)
{
	struct db *rd;

	db_lock(db);
	db->auth = auth;
	if (dbi_auth_register(db) < 0)
		db->auth = NULL;	/* fails closed: rows are refused */
	pthread_mutex_lock(&db->readers_lock);
	for (rd = db->readers; rd; rd = rd->next_reader)
		rd->auth = db->auth;
	pthread_mutex_unlock(&db->readers_lock);
	db_unlock(db);
}

int dbi_create_file(const char *path)
{
	return create_file(path);
}

void dbi_set_error(const char *msg)
{
	snprintf(last_error, sizeof(last_error), "%s", msg);
}

/* Changes to which version of which secret is live run in a transaction
 * of their own (a savepoint inside the caller's), whose outermost commit
 * remakes the instance's state. */
static int live_end(struct db *db, int r)
{
	if (r == 0)
		return db_commit(db);
	db_rollback(db);
	return r;
}

int db_instance_create(struct db *db, struct db_instance *in, const struct db_blob *wrapped_key)
{
	int r = db_begin(db);

	if (r < 0)
		return r;
	r = db_instance_create_now(db, in, wrapped_key);
	if (r == 0)
		r = dbi_state_touch(db, in->id, true);
	return live_end(db, r);
}

int db_secret_insert(struct db *db, struct db_secret *s, const struct db_blob *blob)
{
	int r = db_begin(db);

	if (r < 0)
		return r;
	r = dbi_state_touch(db, s->instance_id, false);
	if (r == 0)
		r = db_secret_insert_now(db, s, blob);
	if (r == 0)
		r = dbi_states_note(db, s->instance_id, s->id);
	return live_end(db, r);
}

int db_secret_set_value(struct db *db, const struct db_secret *s, const struct db_blob *blob)
{
	int r = db_begin(db);

	if (r < 0)
		return r;
	r = dbi_state_touch_secret(db, s->id, false);
	if (r == 0)
		r = db_secret_set_value_now(db, s, blob);
	return live_end(db, r);
}

int db_secret_rename(struct db *db, const struct db_secret *s, const struct db_blob *blob)
{
	int r = db_begin(db);

	if (r < 0)
		return r;
	r = dbi_state_touch_secret(db, s->id, false);
	if (r == 0)
		r = db_secret_rename_now(db, s, blob);
	return live_end(db, r);
}

int db_secret_delete(struct db *db, int64_t id)
{
	int r = db_begin(db);

	if (r < 0)
		return r;
	r = dbi_state_touch_secret(db, id, false);
	if (r == 0)
		r = db_secret_delete_now(db, id);
	return live_end(db, r);
}

int dbi_state_touch_secret(struct db *db, int64_t secret_id, bool trash)
{
	static const char live_sql[] = "SELECT instance_id FROM secrets WHERE id = ?1";
	static const char trash_sql[] = "SELECT instance_id FROM trash WHERE secret_id = ?1";
	sqlite3_stmt *st;
	int64_t inst = 0;
	int r = 0;

	db_lock(db);
	st = dbi_stmt(db, trash ? trash_sql : live_sql, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, secret_id);
		r = step_row(db, st);
		if (r == 1)
			inst = sqlite3_column_int64(st, 0);
		r = r == 1 ? 0 : r == 0 ? -ENOENT : r;
		stmt_done(st);
	}
	db_unlock(db);
	if (r == 0)
		r = dbi_state_touch(db, inst, false);
	if (r == 0)
		r = dbi_states_check_row(db, inst, secret_id);
	return r < 0 ? r : dbi_states_note(db, inst, secret_id);
}

int dbi_each_instance(struct db *db, int (*fn)(struct db *, int64_t, void *), void *ctx)
{
	static const char sql[] = "SELECT id FROM instances ORDER BY id";
	int64_t *ids = NULL, *p;
	size_t n = 0, cap = 0;
	sqlite3_stmt *st;
	int r = 0;

	db_lock(db);
	st = dbi_stmt(db, sql, &r);
	while (st && (r = step_row(db, st)) == 1) {
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			p = realloc(ids, cap * sizeof(*p));
			if (!p) {
				r = -ENOMEM;
				break;
			}
			ids = p;
		}
		ids[n++] = sqlite3_column_int64(st, 0);
	}
	if (st)
		stmt_done(st);
	for (size_t i = 0; r == 0 && i < n; i++)
		r = fn(db, ids[i], ctx);
	db_unlock(db);
	free(ids);
	return r;
}
