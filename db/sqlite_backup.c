/*
 * Backups and restores. Rules this file keeps:
 *  - a backup is one read transaction on the source, so it is a snapshot
 *    of committed state, taken while the daemon keeps serving;
 *  - backup files are created new, mode 0600, and are self-contained
 *    (rollback journal, not WAL) and synced before we report success;
 *  - a restore replaces the vault's rows in one transaction: readers see
 *    the old vault or the restored one; every row of the backup has its
 *    tag checked first, in that transaction, so a doctored one changes
 *    nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "db_backup.h"
#include "sqlite_int.h"

/* Tables a restore replaces, parents first. */
static const char *const restored_tables[] = {
	"instances", "secrets", "trash", "versions", "secret_attrs",
};
#define N_RESTORED (sizeof(restored_tables) / sizeof(restored_tables[0]))

static int copy_into(sqlite3 *src, const char *dst_path)
{
	sqlite3_backup *b;
	sqlite3 *dst = NULL;
	int rc, r;

	r = sq_create_file(dst_path);
	if (r < 0)
		return r;
	rc = sqlite3_open_v2(dst_path, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL);
	if (rc != SQLITE_OK)
		goto fail;
	sq_untrusted_schema(dst);
	b = sqlite3_backup_init(dst, "main", src, "main");
	if (!b) {
		rc = sqlite3_errcode(dst);
		goto fail;
	}
	rc = sqlite3_backup_step(b, -1);
	sqlite3_backup_finish(b);
	if (rc != SQLITE_DONE) {
		rc = rc == SQLITE_OK ? SQLITE_ERROR : rc;
		goto fail;
	}
	rc = sqlite3_exec(dst, "PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL;"
			  "BEGIN IMMEDIATE; COMMIT;", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto fail;
	rc = sqlite3_close(dst);
	dst = NULL;
	if (rc != SQLITE_OK)
		goto fail;
	return 0;
fail:
	r = sq_errno_conn(dst, dst_path, rc);
	sqlite3_close(dst);
	unlink(dst_path);
	return r;
}

/* SQLite's online backup API reads the source in one read transaction. */
int sq_backup(struct db *h, const char *path)
{
	struct sq *db = sq_of(h);
	int r;

	sq_lock(db);
	r = copy_into(db->conn, path);
	sq_unlock(db);
	return r;
}

int db_copy_file(const char *src, const char *dst)
{
	sqlite3 *conn = NULL;
	int rc, r;

	rc = sqlite3_open_v2(src, &conn, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW, NULL);
	if (rc != SQLITE_OK) {
		r = sq_errno_conn(conn, src, rc);
		sqlite3_close(conn);
		return r;
	}
	sqlite3_busy_timeout(conn, SQ_BUSY_TIMEOUT_MS);
	sq_untrusted_schema(conn);
	r = copy_into(conn, dst);
	sqlite3_close(conn);
	return r;
}

static int same_schema(struct sq *db)
{
	int64_t mine = 0, theirs = -1, app = 0, their_app = -1;
	int r;

	r = sq_int(db, "PRAGMA main.user_version", &mine);
	if (r == 0)
		r = sq_int(db, "PRAGMA bak.user_version", &theirs);
	if (r == 0)
		r = sq_int(db, "PRAGMA main.application_id", &app);
	if (r == 0)
		r = sq_int(db, "PRAGMA bak.application_id", &their_app);
	if (r == 0 && (mine != theirs || app != their_app)) {
		db_set_error("%s", "the backup's schema differs from the vault's");
		r = -EPROTO;
	}
	return r;
}

static int bump_seq(struct sq *db, int64_t base)
{
	char sql[128];

	snprintf(sql, sizeof(sql), "UPDATE main.instances SET seq = seq + %lld + 1",
		 (long long)base);
	return sq_exec(db, sql);
}

static int replace_rows(struct sq *db, int64_t *seq_base)
{
	char sql[128];
	int r;

	r = sq_int(db, "SELECT coalesce(max(seq), 0) FROM main.instances", seq_base);
	/* Sub-sums of the sets being replaced: never believed for the new ones
	 * (they don't add up), dropped rather than kept. */
	if (r == 0)
		r = sq_exec(db, "DELETE FROM main.sums_cache");

	for (size_t i = N_RESTORED; r == 0 && i-- > 0;) {
		snprintf(sql, sizeof(sql), "DELETE FROM main.%s", restored_tables[i]);
		r = sq_exec(db, sql);
	}
	for (size_t i = 0; r == 0 && i < N_RESTORED; i++) {
		snprintf(sql, sizeof(sql), "INSERT INTO main.%s SELECT * FROM bak.%s",
			 restored_tables[i], restored_tables[i]);
		r = sq_exec(db, sql);
	}
	return r;
}

int sq_restore(struct db *h, const char *path)
{
	struct sq *db = sq_of(h);
	static const char sql_attach[] = "ATTACH DATABASE ?1 AS bak";
	int64_t seq_base = 0;
	int r;

	sq_lock(db);
	r = sq_change(db, sql_attach, -1, SQ_ARGS(SQ_T(path)), NULL, NULL);
	if (r < 0)
		goto out;
	r = same_schema(db);
	if (r == 0)
		r = sq_exec(db, "BEGIN IMMEDIATE");
	/* Every row of the backup is checked before anything is replaced. */
	if (r == 0) {
		r = sq_auth_check_attached(db, "bak");
		if (r == 0)
			r = replace_rows(db, &seq_base);
		/* seq only grows: a daemon that saw the vault before takes the
		 * restored state for a newer one, not for a rollback. */
		if (r == 0)
			r = bump_seq(db, seq_base);
		if (r == 0)
			r = sq_state_remake_all(db);
		if (r == 0)
			r = sq_exec(db, "COMMIT");
		if (r < 0)
			sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
	}
	sqlite3_exec(db->conn, "DETACH DATABASE bak", NULL, NULL, NULL);
out:
	sq_unlock(db);
	return r;
}
