/*
 * Copies between the PostgreSQL store and a SQLite vault file, the
 * backend-neutral form of a vault. Rules this file keeps:
 *  - a backup reads one REPEATABLE READ snapshot and writes a new file made
 *    by the SQLite store itself (its schema, mode 0600), rows copied as
 *    stored, tags included, then switched to a rollback journal and synced:
 *    the same kind of file a SQLite vault's backup is;
 *  - a restore replaces the vault's rows in one write transaction (the
 *    fleet's write lock): every host sees the old vault or the restored
 *    one; every copied row's tag is checked in that transaction before it
 *    commits, so a doctored file changes nothing; ids keep their values and
 *    the sequences move past them, so no id is handed out again; instance
 *    seqs only grow, so a daemon takes the restored state for a newer one.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "pg_int.h"

/* Parents first; a restore replaces the first five, a backup copies all. */
static const struct {
	const char *table, *cols;
} tables[] = {
	{ "instances", "id, name, uid, gid, mode, ctime, mtime, generation, wrapped_key, mac, "
		       "seq, state" },
	{ "secrets", "id, instance_id, name, uid, gid, mode, version, size, flags, ctime, mtime, "
		     "chtime, updated_by, blob, mac" },
	{ "trash", "secret_id, instance_id, name, uid, gid, mode, ctime, deleted, deleted_by, "
		   "mac" },
	{ "versions", "secret_id, version, size, flags, mtime, updated_by, blob, mac" },
	{ "secret_attrs", "secret_id, name, value, mac" },
	{ "meta", "key, value" },
	{ "audit", "seq, time, uid, gid, pid, comm, instance, key, op, result, detail, mac, "
		   "count, first_time" },
};
#define N_TABLES (sizeof(tables) / sizeof(tables[0]))
#define N_RESTORED 5

static int ncols(const char *cols)
{
	int n = 1;

	for (; *cols; cols++)
		n += *cols == ',';
	return n;
}

/* "$1, $2, ..." or "?1, ?2, ...". */
static void placeholders(char *out, size_t size, int n, char mark)
{
	size_t len = 0;

	out[0] = '\0';
	for (int i = 1; i <= n && len < size; i++)
		len += (size_t)snprintf(out + len, size - len, "%s%c%d", i > 1 ? ", " : "", mark, i);
}

static int sq_fail(sqlite3 *c, const char *what)
{
	pg_set_error("%s: %s", what, c ? sqlite3_errmsg(c) : "out of memory");
	return -EIO;
}

/* -- backup ------------------------------------------------------------------------- */

static int bind_pg_value(sqlite3_stmt *st, const PGresult *res, int row, int col)
{
	const char *v = PQgetvalue(res, row, col);
	int len = PQgetlength(res, row, col);

	if (PQgetisnull(res, row, col))
		return sqlite3_bind_null(st, col + 1);
	switch (PQftype(res, col)) {
	case 20:	/* int8 */
		return sqlite3_bind_int64(st, col + 1, pg_int(res, row, col));
	case 25:	/* text */
		return sqlite3_bind_text(st, col + 1, v, len, SQLITE_STATIC);
	default:	/* bytea */
		return sqlite3_bind_blob(st, col + 1, len ? v : "", len, SQLITE_STATIC);
	}
}

static int copy_out(struct pgs *s, sqlite3 *dst, size_t t)
{
	char sql[512], marks[128];
	sqlite3_stmt *st = NULL;
	PGresult *res;
	int n = ncols(tables[t].cols), r;

	snprintf(sql, sizeof(sql), "SELECT %s FROM %s", tables[t].cols, tables[t].table);
	r = pg_run(s, sql, NULL, &res);
	if (r < 0)
		return r;
	placeholders(marks, sizeof(marks), n, '?');
	snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO %s (%s) VALUES (%s)", tables[t].table,
		 tables[t].cols, marks);
	if (sqlite3_prepare_v2(dst, sql, -1, &st, NULL) != SQLITE_OK)
		r = sq_fail(dst, "backup file");
	for (int i = 0; r == 0 && i < PQntuples(res); i++) {
		for (int c = 0; r == 0 && c < n; c++)
			if (bind_pg_value(st, res, i, c) != SQLITE_OK)
				r = sq_fail(dst, "backup file");
		if (r == 0 && sqlite3_step(st) != SQLITE_DONE)
			r = sq_fail(dst, "backup file");
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	PQclear(res);
	return r;
}

/* The file, made by the SQLite store (schema, mode 0600, refusing one that
 * exists), then filled from one snapshot of ours. */
int pgb_backup(struct db *db, const char *file)
{
	struct pgs *s = (struct pgs *)db;
	struct db *made;
	sqlite3 *dst = NULL;
	int r;

	r = db_sqlite_ops.open(&made, file, DB_CREATE);
	if (r < 0)
		return r;
	db_sqlite_ops.close(made);
	if (sqlite3_open_v2(file, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL) !=
	    SQLITE_OK || sqlite3_exec(dst, "PRAGMA journal_mode = DELETE; PRAGMA synchronous = "
				      "FULL; BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		r = sq_fail(dst, file);
		goto out;
	}
	pg_snapshot_begin(s);
	for (size_t t = 0; r == 0 && t < N_TABLES; t++)
		r = copy_out(s, dst, t);
	pg_snapshot_end(s);
	if (r == 0 && sqlite3_exec(dst, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		r = sq_fail(dst, file);
out:
	if (dst && sqlite3_close(dst) != SQLITE_OK && r == 0)
		r = -EIO;
	if (r < 0)
		unlink(file);
	return r;
}

/* -- restore --------------------------------------------------------------------------- */

static int bind_sq_value(struct pgq *q, sqlite3_stmt *st, int col)
{
	switch (sqlite3_column_type(st, col)) {
	case SQLITE_INTEGER:
		pgq_int(q, sqlite3_column_int64(st, col));
		return 0;
	case SQLITE_TEXT:
		pgq_text(q, (const char *)sqlite3_column_text(st, col));
		return 0;
	case SQLITE_BLOB:
		pgq_blob(q, sqlite3_column_blob(st, col), (size_t)sqlite3_column_bytes(st, col));
		return 0;
	case SQLITE_NULL:
		q->v[q->n] = NULL;
		q->len[q->n] = 0;
		q->fmt[q->n] = 1;
		q->type[q->n++] = 20;
		return 0;
	default:
		pg_set_error("the backup holds a value of a type no vault writes");
		return -EPROTO;
	}
}

static int copy_in(struct pgs *s, sqlite3 *src, size_t t)
{
	char sql[512], marks[128];
	sqlite3_stmt *st = NULL;
	int n = ncols(tables[t].cols), r = 0, rc;

	snprintf(sql, sizeof(sql), "SELECT %s FROM %s", tables[t].cols, tables[t].table);
	if (sqlite3_prepare_v2(src, sql, -1, &st, NULL) != SQLITE_OK) {
		sqlite3_finalize(st);
		return sq_fail(src, "the backup");
	}
	placeholders(marks, sizeof(marks), n, '$');
	snprintf(sql, sizeof(sql), "INSERT INTO %s (%s) VALUES (%s)", tables[t].table,
		 tables[t].cols, marks);
	while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct pgq q = { 0 };

		for (int c = 0; r == 0 && c < n; c++)
			r = bind_sq_value(&q, st, c);
		if (r == 0)
			r = pg_change(s, sql, &q, 1);
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = sq_fail(src, "the backup");
	sqlite3_finalize(st);
	return r;
}

static int one_int(struct pgs *s, const char *sql, int64_t *out)
{
	PGresult *res;
	int r = pg_run(s, sql, NULL, &res);

	if (r == 0) {
		*out = pg_int(res, 0, 0);
		PQclear(res);
	}
	return r;
}

/* Ids go on past the largest ever used, here or in the backup. */
static int sequences_past(struct pgs *s)
{
	static const char *const sql[] = {
		"SELECT setval(pg_get_serial_sequence('instances', 'id'), greatest("
		"(SELECT last_value FROM instances_id_seq), "
		"(SELECT coalesce(max(id), 1) FROM instances)))",
		"SELECT setval(pg_get_serial_sequence('secrets', 'id'), greatest("
		"(SELECT last_value FROM secrets_id_seq), "
		"(SELECT coalesce(max(id), 1) FROM secrets), "
		"(SELECT coalesce(max(secret_id), 1) FROM trash)))",
	};
	int r = 0;

	for (size_t i = 0; r == 0 && i < sizeof(sql) / sizeof(sql[0]); i++)
		r = pg_run(s, sql[i], NULL, NULL);
	return r;
}

static int replace_rows(struct pgs *s, sqlite3 *src)
{
	char sql[128];
	int64_t base = 0;
	int r = one_int(s, "SELECT coalesce(max(seq), 0)::int8 FROM instances", &base);

	for (size_t t = N_RESTORED; r == 0 && t-- > 0;) {
		snprintf(sql, sizeof(sql), "DELETE FROM %s", tables[t].table);
		r = pg_change(s, sql, NULL, -1);
	}
	for (size_t t = 0; r == 0 && t < N_RESTORED; t++)
		r = copy_in(s, src, t);
	if (r == 0) {
		snprintf(sql, sizeof(sql), "UPDATE instances SET seq = seq + %lld + 1",
			 (long long)base);
		r = pg_change(s, sql, NULL, -1);
	}
	if (r == 0)
		r = sequences_past(s);
	return r;
}

static int remake_states(struct pgs *s)
{
	PGresult *res;
	int r = pg_run(s, "SELECT id FROM instances ORDER BY id", NULL, &res);

	for (int i = 0; r == 0 && i < PQntuples(res); i++)
		r = pg_state_update(s, pg_int(res, i, 0), s->auth, false);
	PQclear(res);
	return r;
}

int pgb_restore(struct db *db, const char *file)
{
	struct pgs *s = (struct pgs *)db;
	sqlite3 *src = NULL;
	int r;

	if (sqlite3_open_v2(file, &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW, NULL) !=
	    SQLITE_OK) {
		r = sq_fail(src, file);
		sqlite3_close(src);
		return r;
	}
	/* A backup is anyone's file: its schema calls no unsafe function. */
	(void)sqlite3_db_config(src, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
	r = db_pg_ops.begin(db, false);
	if (r == 0) {
		r = replace_rows(s, src);
		/* Every row as copied, checked before anything commits. */
		if (r == 0)
			r = pgh_auth_check_all(db, NULL, NULL);
		if (r == 0)
			r = remake_states(s);
		if (r == 0)
			r = db_pg_ops.commit(db);
		else
			db_pg_ops.rollback(db);
	}
	sqlite3_close(src);
	return r;
}
