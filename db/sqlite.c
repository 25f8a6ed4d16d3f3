/*
 * The SQLite store: its connections and how a statement runs. Rules this
 * file keeps:
 *  - it stores and returns sealed blobs and metadata, never plaintext;
 *  - every commit is durable: WAL with synchronous=FULL;
 *  - the file and its -wal/-shm are created mode 0600 (SQLite gives the
 *    journal files the database file's mode);
 *  - one connection, used by one thread at a time under a recursive mutex
 *    (transactions and read connections: sqlite_txn.c);
 *  - every statement runs through sq_query or sq_change, and SQLite's
 *    result codes become -errno in sq_errno and go no further.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "sqlite_int.h"

#define READER_CACHE_KIB 512	/* each reader's page cache */
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

/* The errno of the last failed call on one of the connection's files. */
static int file_errno(sqlite3 *conn, bool wal)
{
	sqlite3_file *f = NULL;
	int e = 0;

	if (!wal) {
		sqlite3_file_control(conn, "main", SQLITE_FCNTL_LAST_ERRNO, &e);
		return e;
	}
	if (sqlite3_file_control(conn, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f) ==
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
static int io_errno(sqlite3 *conn)
{
	int r;

	if (!conn)
		return -EIO;
	r = errno_class(sqlite3_system_errno(conn));
	if (!r)
		r = errno_class(file_errno(conn, true));
	if (!r)
		r = errno_class(file_errno(conn, false));
	return r ? r : -EIO;
}

/* SQLITE_ERROR ("SQL error or missing database") is -EIO: a statement that
 * failed, which only its caller can tell apart from damage; the callers
 * that can (a migration, the audit log's check of its table) say -EPROTO
 * themselves. -EPROTO from here means what SQLite found in the file. */
int sq_errno(struct sq *db, int rc)
{
	return sq_errno_conn(db ? db->conn : NULL, db ? db->path : "", rc);
}

int sq_errno_conn(sqlite3 *conn, const char *path, int rc)
{
	if (rc == SQLITE_CONSTRAINT_COMMITHOOK) {
		db_set_error("%s or its -wal was removed or replaced while open: writes "
			     "refused until it is back", path);
		return -EROFS;
	}
	db_set_error("%s", conn ? sqlite3_errmsg(conn) : sqlite3_errstr(rc));
	if (sq_auth_sql_failed())
		return -EIO;
	switch (rc & 0xff) {
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
		return conn && sqlite3_system_errno(conn) ? -sqlite3_system_errno(conn) : -EIO;
	case SQLITE_TOOBIG:
		return -EFBIG;
	case SQLITE_IOERR:
		return io_errno(conn);
	default:
		return -EIO;
	}
}

void sq_lock(struct sq *db)
{
	pthread_mutex_lock(&db->lock);
}

void sq_unlock(struct sq *db)
{
	pthread_mutex_unlock(&db->lock);
}

int sq_exec(struct sq *db, const char *sql)
{
	int rc = sqlite3_exec(db->conn, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : sq_errno(db, rc);
}

int sq_int(struct sq *db, const char *sql, int64_t *out)
{
	sqlite3_stmt *st;
	int rc, r;

	rc = sqlite3_prepare_v2(db->conn, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return sq_errno(db, rc);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(st, 0);
		r = 0;
	} else {
		r = rc == SQLITE_DONE ? -EPROTO : sq_errno(db, rc);
	}
	sqlite3_finalize(st);
	return r;
}

/* The connection's statement for sql, prepared once: the one cache, keyed
 * by the SQL's address (a hash of it, then the next free slot). */
static sqlite3_stmt *stmt_get(struct sq *db, const char *sql, int *err)
{
	size_t i = ((uintptr_t)sql >> 4) % SQ_STMT_MAX;
	int rc;

	for (size_t n = 0; n < SQ_STMT_MAX; n++, i = (i + 1) % SQ_STMT_MAX) {
		if (db->stmt[i].sql == sql)
			return db->stmt[i].st;
		if (!db->stmt[i].sql)
			break;
	}
	if (db->stmt[i].sql) {
		db_set_error("statement cache full");
		*err = -ENOMEM;
		return NULL;
	}
	rc = sqlite3_prepare_v3(db->conn, sql, -1, SQLITE_PREPARE_PERSISTENT,
				&db->stmt[i].st, NULL);
	if (rc != SQLITE_OK) {
		*err = sq_errno(db, rc);
		return NULL;
	}
	db->stmt[i].sql = sql;
	return db->stmt[i].st;
}

static void bind_args(sqlite3_stmt *st, const struct sq_arg *args, int nargs)
{
	for (int i = 0; i < nargs; i++) {
		const struct sq_arg *a = &args[i];

		if (a->type == SQ_INT)
			sqlite3_bind_int64(st, i + 1, a->i);
		else if (a->type == SQ_TEXT && a->p)
			sqlite3_bind_text(st, i + 1, a->p, -1, SQLITE_STATIC);
		else if (a->type == SQ_BLOB)	/* never NULL, even when empty */
			sqlite3_bind_blob64(st, i + 1, a->p ? a->p : "", a->len, SQLITE_STATIC);
		else
			sqlite3_bind_null(st, i + 1);
	}
}

static void stmt_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* 1 for a row, 0 at the end, or -errno. */
static int step_row(struct sq *db, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return sq_errno(db, rc);
}

static int run_rows(struct sq *db, unsigned flags, const char *sql, sq_row_fn fn, void *ctx,
		    const struct sq_arg *args, int nargs)
{
	sqlite3_stmt *st;
	bool any = false;
	int r = 0;

	sq_lock(db);
	st = stmt_get(db, sql, &r);
	if (st) {
		bind_args(st, args, nargs);
		while ((r = step_row(db, st)) == 1) {
			any = true;
			r = fn ? fn(db, st, ctx) : 0;
			if (r || (flags & SQ_ONE))
				break;
		}
		if (r == 0 && !any && (flags & SQ_ONE))
			r = -ENOENT;
		stmt_done(st);
	}
	sq_unlock(db);
	return r;
}

int sq_query(struct sq *db, unsigned flags, const char *sql, sq_row_fn fn, void *ctx,
	     const struct sq_arg *args, int nargs)
{
	struct sq *rd = flags & SQ_READ ? sq_reader_take(db) : NULL;
	int r;

	if (!rd)
		return run_rows(db, flags, sql, fn, ctx, args, nargs);
	r = run_rows(rd, flags, sql, fn, ctx, args, nargs);
	sq_reader_give(db, rd);
	return r;
}

int sq_change(struct sq *db, const char *sql, int want, const struct sq_arg *args,
	      int nargs, int64_t *rowid, int64_t *changed)
{
	sqlite3_stmt *st;
	int rc, r = 0;

	sq_lock(db);
	st = stmt_get(db, sql, &r);
	if (st) {
		bind_args(st, args, nargs);
		rc = sqlite3_step(st);
		if (rc != SQLITE_DONE)
			r = sq_errno(db, rc);
		else if (want >= 0 && sqlite3_changes(db->conn) != want)
			r = -ENOENT;
		if (r == 0 && rowid)
			*rowid = sqlite3_last_insert_rowid(db->conn);
		if (r == 0 && changed)
			*changed = sqlite3_changes(db->conn);
		stmt_done(st);
	}
	sq_unlock(db);
	return r;
}

int sq_row_int(struct sq *db, sqlite3_stmt *st, void *out)
{
	*(int64_t *)out = sqlite3_column_int64(st, 0);
	return 0;
}

int sq_column_blob(sqlite3_stmt *st, int col, struct db_blob *out)
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

void sq_column_name(sqlite3_stmt *st, int col, char name[static DB_NAME_MAX + 1])
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
#define INST_MAC 8

int sq_row_instance(struct sq *db, sqlite3_stmt *st, struct db_instance *in)
{
	int r = sq_row_verify(db, st, "instances", inst_tagged, 6, INST_MAC, NULL,
			      sqlite3_column_int64(st, 0));

	if (r < 0)
		return r;
	in->id = sqlite3_column_int64(st, 0);
	sq_column_name(st, 1, in->name);
	in->uid = (uid_t)sqlite3_column_int64(st, 2);
	in->gid = (gid_t)sqlite3_column_int64(st, 3);
	in->mode = (mode_t)sqlite3_column_int64(st, 4) & 07777;
	in->ctime_ns = sqlite3_column_int64(st, 5);
	in->mtime_ns = sqlite3_column_int64(st, 6);
	in->generation = (uint64_t)sqlite3_column_int64(st, 7);
	return 0;
}

int sq_create_file(const char *path)
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

void sq_wal_path(struct sq *db, char out[static SQ_WAL_PATH_MAX])
{
	snprintf(out, SQ_WAL_PATH_MAX, "%s-wal", db->path);
}

/* Which file path names, asking for nothing else: a stat() that fetches
 * the -wal's times makes the kernel (multigrain timestamps, Linux 6.13)
 * give its next write a fine-grained mtime, that is an inode change to
 * write out at every commit's fdatasync (40 us of the 100 here). */
static int path_id(const char *path, dev_t *dev, ino_t *ino)
{
	struct statx sx;
	struct stat st;

	if (statx(AT_FDCWD, path, 0, STATX_INO, &sx) == 0) {
		*dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
		*ino = (ino_t)sx.stx_ino;
		return 0;
	}
	if (errno != ENOSYS || stat(path, &st) < 0)
		return -1;
	*dev = st.st_dev;
	*ino = st.st_ino;
	return 0;
}

static void wal_remember(struct sq *db)
{
	char path[SQ_WAL_PATH_MAX];

	sq_wal_path(db, path);
	if (path_id(path, &db->wal_dev, &db->wal_ino) == 0)
		db->wal_known = true;
}

/* SQLite goes on writing to a database file, or a -wal, that was unlinked
 * or replaced under it, and what it writes there is gone with the process:
 * such a commit must fail instead of being acknowledged. */
static bool files_moved(struct sq *db)
{
	char path[SQ_WAL_PATH_MAX];
	int moved = 0;
	dev_t dev;
	ino_t ino;

	if (sqlite3_file_control(db->conn, "main", SQLITE_FCNTL_HAS_MOVED, &moved) ==
	    SQLITE_OK && moved)
		return true;
	if (!db->wal_known)
		return false;
	sq_wal_path(db, path);
	return path_id(path, &dev, &ino) < 0 || dev != db->wal_dev || ino != db->wal_ino;
}

/* Nonzero turns the commit into a rollback (SQLITE_CONSTRAINT_COMMITHOOK). */
static int commit_hook(void *ctx)
{
	return files_moved(ctx);
}

static int configure(struct sq *db, int flags)
{
	int r;

	sqlite3_busy_timeout(db->conn, SQ_BUSY_TIMEOUT_MS);
	sqlite3_extended_result_codes(db->conn, 1);
	sq_untrusted_schema(db->conn);
	if (flags & SQ_READER)
		return sq_exec(db, "PRAGMA query_only = ON; PRAGMA cache_size = -"
				   STRINGIFY(READER_CACHE_KIB));
	if (flags & SQ_LOG)
		return sq_exec(db, "PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; "
				   "PRAGMA journal_size_limit = " STRINGIFY(SQ_WAL_LIMIT) ";");
	r = sq_exec(db, "PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;");
	if (r == 0 && !(flags & DB_READONLY))
		r = sq_exec(db, "PRAGMA journal_mode = WAL");
	/* After a burst of writes, a WAL that starts over is cut back to this. */
	if (r == 0 && !(flags & DB_READONLY))
		r = sq_exec(db, "PRAGMA journal_size_limit = " STRINGIFY(SQ_WAL_LIMIT));
	if (r == 0)
		r = sq_exec(db, "PRAGMA synchronous = FULL");
	return r;
}

/* Before SQLite initializes:
 *  - without memory statistics its allocator takes no global mutex, which
 *    every connection's queries otherwise contend on (Debian's build has no
 *    lookaside, so each query mallocs);
 *  - no page cache memory set aside ahead of use: by default each
 *    connection's first read allocates and touches room for 20 pages at
 *    once, about 30 us of page faults for a command that reads a handful. */
static void sqlite_setup(void)
{
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	sqlite3_config(SQLITE_CONFIG_PAGECACHE, NULL, 0, 0);
}

static struct sq *sq_new(const char *path, int flags)
{
	pthread_mutexattr_t attr;
	struct sq *db = calloc(1, sizeof(*db));

	if (!db || !(db->path = strdup(path))) {
		free(db);
		return NULL;
	}
	db->base.ops = &db_sqlite_ops;
	db->flags = flags;
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&db->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	pthread_mutex_init(&db->readers_lock, NULL);
	return db;
}

/* The store's file: created empty (mode 0600), or there already. */
static int file_ready(const char *path, int flags)
{
	struct stat st;
	int r = 0;

	if (flags & DB_CREATE)
		r = sq_create_file(path);
	else if (stat(path, &st) < 0)
		r = -errno;
	if (r < 0)
		db_set_error("%s", strerror(-r));
	return r;
}

/* A reader or the audit log's connection takes the file as it is; the
 * store's own brings its schema up to date and checks it. */
static int conn_ready(struct sq *db, int flags)
{
	int r = configure(db, flags);

	if (r == 0 && (flags & SQ_LOG)) {
		/* The table comes with the schema (the migrations). */
		r = sq_exec(db, "SELECT count, first_time FROM audit LIMIT 0");
		if (r == -EIO)
			r = -EPROTO;
	} else if (r == 0 && !(flags & SQ_READER)) {
		/* The version, the schema and its cookie in one snapshot (a
		 * migration ends it), and one read transaction for all. */
		r = sq_exec(db, "BEGIN");
		if (r == 0)
			r = sq_migrate(db, flags & DB_CREATE);
		if (r == 0)
			r = sq_schema_check(db);
		if (!sqlite3_get_autocommit(db->conn))
			sqlite3_exec(db->conn, r == 0 ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL);
	}
	return r;
}

int sq_open(struct sq **out, const char *path, int flags)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct sq *db;
	int oflags, rc, r;
	mode_t old_umask;

	*out = NULL;
	db_set_error("%s", "");
	pthread_once(&once, sqlite_setup);
	db = sq_new(path, flags);
	if (!db)
		return -ENOMEM;
	if (!(flags & (SQ_READER | SQ_LOG | DB_READONLY)) && !(db->states = sq_states_new())) {
		r = -ENOMEM;
		goto fail;
	}
	r = file_ready(path, flags);
	if (r < 0)
		goto fail;
	oflags = (flags & DB_READONLY ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) |
		 SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW;
	old_umask = umask(077);
	rc = sqlite3_open_v2(path, &db->conn, oflags, NULL);
	umask(old_umask);
	r = rc == SQLITE_OK ? conn_ready(db, flags) : sq_errno(db, rc);
	if (r < 0)
		goto fail_created;
	if (!(flags & SQ_LOG)) {
		wal_remember(db);
		sqlite3_commit_hook(db->conn, commit_hook, db);
	}
	*out = db;
	return 0;
fail_created:
	if (flags & DB_CREATE) {
		sqlite3_close_v2(db->conn);
		db->conn = NULL;
		unlink(path);
	}
fail:
	sq_close(db);
	return r;
}

void sq_close(struct sq *db)
{
	struct sq *rd;

	if (!db)
		return;
	while ((rd = db->readers)) {
		db->readers = rd->next_reader;
		sq_close(rd);
	}
	pthread_mutex_destroy(&db->readers_lock);
	for (int i = 0; i < SQ_STMT_MAX; i++)
		sqlite3_finalize(db->stmt[i].st);
	if (db->conn)
		sqlite3_close_v2(db->conn);
	pthread_mutex_destroy(&db->lock);
	free(db->dirty);
	sq_cache_close(db);
	sq_states_free(db->states);
	free(db->path);
	free(db);
}

static int op_open(struct db **out, const char *spec, int flags)
{
	struct sq *db;
	int r = sq_open(&db, spec, (flags & (DB_CREATE | DB_READONLY | DB_BRIEF)) |
			(flags & DB_LOG ? SQ_LOG : 0));

	*out = r == 0 ? &db->base : NULL;
	return r;
}

static void op_close(struct db *h)
{
	sq_close(sq_of(h));
}

static const char *op_path(struct db *h)
{
	return sq_of(h)->path;
}

static int op_files(const char *spec, int (*fn)(void *, const char *path, bool main),
		    void *ctx)
{
	static const char *const suffix[] = { "", "-wal", "-shm" };
	char path[PATH_MAX + 8];
	int r = 0;

	for (size_t i = 0; r == 0 && i < 3; i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s%s", spec, suffix[i]) >=
		    sizeof(path))
			return -ENAMETOOLONG;
		r = fn(ctx, path, i == 0);
	}
	return r;
}

const struct db_store_ops db_sqlite_ops = {
	.name = "sqlite",
	.open = op_open,
	.close = op_close,
	.path = op_path,
	.check_integrity = sq_check_integrity,
	.files = op_files,
	.set_readers = sq_set_readers,
	.read_begin = sq_read_begin,
	.read_end = sq_read_end,
	.read_pinned = sq_read_pinned,
	.begin = sq_begin_op,
	.commit = sq_commit_op,
	.rollback = sq_rollback_op,
	.change_seq = sq_change_seq,
	.tidy_caches = sq_tidy_caches,
	.meta_get = sq_meta_get,
	.meta_set = sq_meta_set,
	.instance_create = sq_instance_create,
	.instance_get = sq_instance_get,
	.instance_find = sq_instance_find,
	.instance_key = sq_instance_key,
	.instance_set_key = sq_instance_set_key,
	.instance_set_attr = sq_instance_set_attr,
	.instance_delete = sq_instance_delete,
	.instance_each = sq_instance_each,
	.instance_count = sq_instance_count,
	.instance_secret_ids = sq_instance_secret_ids,
	.secret_get = sq_secret_get,
	.secret_find = sq_secret_find,
	.secret_blob = sq_secret_blob,
	.secret_each = sq_secret_each,
	.secret_count = sq_secret_count,
	.secret_insert = sq_secret_insert,
	.secret_id_reserve = sq_secret_id_reserve,
	.secret_set_value = sq_secret_set_value,
	.secret_set_attr = sq_secret_set_attr,
	.secret_rename = sq_secret_rename,
	.secret_delete = sq_secret_delete,
	.secret_adopt = sq_secret_adopt,
	.version_archive = sq_version_archive,
	.version_get = sq_version_get,
	.version_each = sq_version_each,
	.version_set_blob = sq_version_set_blob,
	.trash_put = sq_trash_put,
	.trash_find = sq_trash_find,
	.trash_restore = sq_trash_restore,
	.trash_each = sq_trash_each,
	.trash_purge = sq_trash_purge,
	.scrub = sq_scrub,
	.attr_get = sq_attr_get,
	.attr_set = sq_attr_set,
	.set_auth = sq_set_auth,
	.auth_upgrade = sq_auth_upgrade,
	.auth_rekey = sq_auth_rekey,
	.auth_check_all = sq_auth_check_all,
	.instance_seq = sq_instance_seq,
	.state_check = sq_state_check,
	.state_version = sq_state_version,
	.states_convert = sq_states_convert,
	.audit_floor = sq_audit_floor,
	.audit_entry_mac = sq_audit_entry_mac,
	.backup = sq_backup,
	.restore = sq_restore,
	.audit_insert = sq_audit_insert,
	.audit_last = sq_audit_last,
	.audit_delete_upto = sq_audit_delete_upto,
	.audit_each = sq_audit_each,
	.audit_tidy = sq_audit_tidy,
	.meta_add = sq_meta_add,
	.snapshot_begin = sq_snapshot_begin,
	.snapshot_end = sq_snapshot_end,
};
