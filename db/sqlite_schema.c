/*
 * The SQLite store's schema: the migrations that build it, the check that
 * a file holds exactly what they made and nothing more, and the check of
 * the file's own structure. Rules this file keeps:
 *  - a file whose header names a schema this build does not know, or whose
 *    objects differ from what the migrations make, is refused, not used;
 *  - each migration is one transaction: a file is at one version or the
 *    next, never between.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sqlite_int.h"

#define APPLICATION_ID 0x76666c74	/* "vflt" */

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
	/* Row tags (sqlite_auth.c): the vault computes them under its master key
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
	/* Instance states by bucket (db/rowtag.h): the sums the state tags,
	 * and the index that finds one bucket's rows, so that one secret is
	 * checked without reading its whole instance. States made before are
	 * chains: marked, and converted at the first open that may write
	 * (sqlite_chain.c). */
	("ALTER TABLE instances ADD COLUMN sums BLOB NOT NULL DEFAULT x'';"
	 "CREATE INDEX secrets_by_bucket ON secrets (instance_id, id % 64);"
	 "INSERT INTO meta (key, value) SELECT 'state_chain', x'01' "
	 "WHERE EXISTS (SELECT 1 FROM instances WHERE length(state) > 0);"),
	/* Each bucket's sum split by sub-bucket (db/rowtag.h), row id
	 * instance_id * 64 + bucket: a cache the daemon fills once its writes
	 * settle, so that vaultfs get checks one secret by a 64th of its
	 * bucket. Tagged, and believed only when it adds up to the state's
	 * sum: a missing, stale or doctored row costs the bucket's scan. */
	/* The index then finds a sub-bucket's rows (id % 4096) as well as a
	 * bucket's (its 64 sub-buckets). */
	("CREATE TABLE sums_cache (id INTEGER PRIMARY KEY, sums BLOB NOT NULL, mac BLOB NOT NULL);"
	 "DROP INDEX secrets_by_bucket;"
	 "CREATE INDEX secrets_by_sub ON secrets (instance_id, id % 4096);"
	 /* Old values in a table that is its own index on (secret_id,
	  * version): archiving one writes one b-tree, not a table and its
	  * index. */
	 "CREATE TABLE versions_by_key ("
	 "  secret_id INTEGER NOT NULL,"
	 "  version INTEGER NOT NULL,"
	 "  size INTEGER NOT NULL, flags INTEGER NOT NULL,"
	 "  mtime INTEGER NOT NULL, updated_by INTEGER NOT NULL,"
	 "  blob BLOB NOT NULL,"
	 "  mac BLOB NOT NULL DEFAULT x'',"
	 "  PRIMARY KEY (secret_id, version)"
	 ") WITHOUT ROWID;"
	 "INSERT INTO versions_by_key SELECT secret_id, version, size, flags, mtime, updated_by, "
	 "blob, mac FROM versions;"
	 "DROP TABLE versions;"
	 "ALTER TABLE versions_by_key RENAME TO versions;"),
};
#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* A step that fails for want of space or permission says so; one whose SQL
 * fails (a table it creates is there already) means the version number in
 * the header does not match the tables: a damaged file. */
static int migrate_failed(struct sq *db, int64_t version, int r)
{
	char why[512];

	snprintf(why, sizeof(why), "%s", db_errmsg(NULL));
	db_set_error("cannot upgrade the schema from version "
		 "%lld: %.400s", (long long)version, why);
	return r == -EIO ? -EPROTO : r;
}

int sq_migrate(struct sq *db, bool created)
{
	int64_t app_id = 0, version = 0;
	char sql[64];
	int r;

	r = sq_int(db, "PRAGMA application_id", &app_id);
	if (r == 0)
		r = sq_int(db, "PRAGMA user_version", &version);
	if (r < 0)
		return r;
	if (!created && app_id != APPLICATION_ID) {
		db_set_error("not a vaultfs database");
		return -EPROTO;
	}
	if (version < 0) {	/* it indexes migrations[] below */
		db_set_error("schema version %lld was never "
			 "written by vaultfs", (long long)version);
		return -EPROTO;
	}
	if (version > SCHEMA_VERSION) {
		db_set_error("schema version %lld is newer than "
			 "this vaultfs understands (%d)", (long long)version, SCHEMA_VERSION);
		return -EPROTONOSUPPORT;
	}
	/* The caller's read transaction ends before a migration writes. */
	if (version < SCHEMA_VERSION && !sqlite3_get_autocommit(db->conn) &&
	    (r = sq_exec(db, "COMMIT")) < 0)
		return r;
	for (; version < SCHEMA_VERSION; version++) {
		r = sq_exec(db, "BEGIN IMMEDIATE");
		if (r < 0)
			return r;
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %lld", (long long)version + 1);
		r = sq_exec(db, migrations[version]);
		if (r == 0)
			r = sq_exec(db, sql);
		if (r == 0 && created)
			r = sq_exec(db, "PRAGMA application_id = " "1986423924");
		if (r == 0)
			r = sq_exec(db, "COMMIT");
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
 * `make schema-expected` writes it from sq_schema_fresh, and test_db
 * fails while it differs. Building them at each open was two thirds of a
 * `vaultfs get`. */
#define SCHEMA_SQL "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master " \
		   "ORDER BY type, name"
#include "schema_expected.h"
#define N_EXPECTED ((int)(sizeof(schema_expected) / sizeof(schema_expected[0])))
static const int n_expected = N_EXPECTED;

int sq_schema_fresh(void (*each)(void *ctx, const char *type, const char *name,
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

/* 0: the same as schema_expected[i]; <0 / >0 as the file's object sorts
 * before / after it. */
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

static int schema_refuse(struct sq *db, const char *type, const char *name, const char *why)
{
	bool extra = strcmp(why, "did not create") == 0;
	char fix[256] = "";

	if (extra)
		snprintf(fix, sizeof(fix), " (or, once you know, drop it: sqlite3 %.100s "
			 "'DROP %s \"%.64s\"')", db->path, type, name);
	db_set_error("%s holds %s %s %.64s that vaultfs %s; "
		 "refusing to use it. Find out who changed it, then restore the vault from "
		 "a backup%s", db->path, strchr("aeiou", type[0]) ? "an" : "a", type, name, why,
		 fix);
	return -EUCLEAN;
}

/* Triggers, views, tables or indexes that vaultfs did not make (a trigger
 * could undo root's chmod, a view stand in for a table) or changed ones
 * are refused: the file's sqlite_master must be exactly ours. */
int sq_schema_check(struct sq *db)
{
	sqlite3_stmt *st = NULL;
	int i = 0, c, rc, r = 0;

	rc = sqlite3_prepare_v2(db->conn, SCHEMA_SQL, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return sq_errno(db, rc);
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
		r = sq_errno(db, rc);
	if (r == 0 && i < n_expected)
		r = schema_refuse(db, "no", schema_expected[i].name, "needs (damaged)");
	sqlite3_finalize(st);
	if (r == 0)
		r = sq_int(db, "PRAGMA schema_version", &db->schema_cookie);
	return r;
}


/* At each write transaction: the schema was changed since it was checked
 * (a trigger added while we run) only if its cookie moved. */
int sq_schema_recheck(struct sq *db)
{
	static const char sql[] = "PRAGMA schema_version";
	int64_t cookie = -1;
	int r = sq_query(db, SQ_ONE, sql, sq_row_int, &cookie, SQ_NOARGS);

	if (r < 0)
		return r;
	return cookie == db->schema_cookie ? 0 : sq_schema_check(db);
}

/* quick_check's report, as one line without its "*** in database main ***". */
static void one_line(const char *msg)
{
	static const char banner[] = "*** in database main ***\n";
	char line[512];

	if (strncmp(msg, banner, sizeof(banner) - 1) == 0)
		msg += sizeof(banner) - 1;
	snprintf(line, sizeof(line), "%s", msg);
	for (size_t i = 0; line[i]; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	db_set_error("%s", line);
}

/* SQLite reads a cut-off last page as if the rest were zeros, and checks
 * nothing that would notice; but it only ever writes whole pages. */
static int check_size(struct sq *db)
{
	int64_t page = 0;
	struct stat st;
	int r;

	r = sq_int(db, "PRAGMA page_size", &page);
	if (r < 0)
		return r;
	if (stat(db->path, &st) < 0)
		return -errno;
	if (page > 0 && st.st_size % page) {
		db_set_error("its size, %lld bytes, is not a whole "
			 "number of %lld-byte pages: the file was cut short",
			 (long long)st.st_size, (long long)page);
		return -EPROTO;
	}
	return 0;
}

/* SQLite's quick_check: every page's structure, without the slower
 * cross-checks of every index against its table. */
int sq_check_integrity(struct db *h)
{
	struct sq *db = sq_of(h);
	const unsigned char *msg;
	sqlite3_stmt *st;
	int rc, r;

	sq_lock(db);
	r = check_size(db);
	if (r < 0)
		goto out;
	rc = sqlite3_prepare_v2(db->conn, "PRAGMA quick_check(1)", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		r = sq_errno(db, rc);
		goto out;
	}
	rc = sqlite3_step(st);
	msg = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
	if (msg && strcmp((const char *)msg, "ok") == 0) {
		r = 0;
	} else if (msg) {
		one_line((const char *)msg);
		r = -EPROTO;
	} else {
		r = rc == SQLITE_DONE ? -EPROTO : sq_errno(db, rc);
	}
	sqlite3_finalize(st);
out:
	sq_unlock(db);
	return r;
}
