/* Descriptive attributes of secrets, a row per (secret, name). They follow
 * the secret id, so they survive delete and undelete and go with a purge. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "db_attrs.h"
#include "db_int.h"

/* Each row is tagged over (secret id, name, value) (db_auth.c): a value
 * is checked before it is returned, and a row moved to another secret or
 * edited fails. */
static const char sql_get[] =
	"SELECT secret_id, name, value, mac FROM secret_attrs WHERE secret_id = ?1 AND name = ?2";
static const char sql_set[] =
	"INSERT INTO secret_attrs (secret_id, name, value, mac) VALUES (?1, ?2, ?3, "
	"dba_mac('secret_attrs', ?1, ?2, ?3)) "
	"ON CONFLICT (secret_id, name) DO UPDATE SET value = excluded.value, mac = excluded.mac";
static const char sql_remove[] = "DELETE FROM secret_attrs WHERE secret_id = ?1 AND name = ?2";
static const char sql_each[] =
	"SELECT secret_id, name, value, mac FROM secret_attrs WHERE secret_id = ?1 ORDER BY name";
static const int attr_tagged[] = { 0, 1, 2 };

static int row_attr(struct db *db, sqlite3_stmt *st)
{
	char what[DB_NAME_MAX + 16];

	snprintf(what, sizeof(what), " (%.255s)", (const char *)sqlite3_column_text(st, 1));
	return dbi_row_verify(db, st, "secret_attrs", attr_tagged, 3, 3, what,
			      sqlite3_column_int64(st, 0));
}

int db_attr_get(struct db *db, int64_t secret_id, const char *name, void *buf, size_t size,
		size_t *len)
{
	sqlite3_stmt *st;
	struct db *rd;
	int r = 0;

	/* On a reader where there is one: a row that fails its tag is
	 * reported to the audit log at once, which waits for the writer's
	 * lock; holding it here was a deadlock. */
	if ((rd = dbi_reader_take(db)))
		return dbi_reader_give(db, rd, db_attr_get(rd, secret_id, name, buf, size, len));
	*len = 0;
	dbi_lock(db);
	st = dbi_stmt(db, sql_get, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, secret_id);
		sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
		r = dbi_step_row(db, st);
		if (r == 1 && (r = row_attr(db, st)) == 0) {
			const void *p = sqlite3_column_blob(st, 2);

			*len = (size_t)sqlite3_column_bytes(st, 2);
			r = *len > size ? -ERANGE : 0;
			if (r == 0 && *len)
				memcpy(buf, p, *len);
		} else if (r == 0) {
			r = -ENOENT;
		}
		dbi_done(st);
	}
	dbi_unlock(db);
	return r;
}

int db_attr_remove(struct db *db, int64_t secret_id, const char *name)
{
	sqlite3_stmt *st;
	int r = 0;

	dbi_lock(db);
	st = dbi_stmt(db, sql_remove, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, secret_id);
		sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
		r = dbi_step_change(db, st, 1);
		dbi_done(st);
	}
	dbi_unlock(db);
	return r;
}

int db_attr_set(struct db *db, int64_t secret_id, const char *name, const void *value,
		size_t len)
{
	struct db_blob b = { (unsigned char *)value, len };
	sqlite3_stmt *st;
	int r = 0;

	if (len == 0) {
		r = db_attr_remove(db, secret_id, name);
		return r == -ENOENT ? 0 : r;
	}
	dbi_lock(db);
	st = dbi_stmt(db, sql_set, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, secret_id);
		sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
		dbi_bind_blob(st, 3, &b);
		r = dbi_step_change(db, st, 1);
		dbi_done(st);
	}
	dbi_unlock(db);
	return r;
}

int db_attr_each(struct db *db, int64_t secret_id,
		 int (*fn)(void *, const char *name, const void *value, size_t len), void *ctx)
{
	char name[DB_NAME_MAX + 1];
	sqlite3_stmt *st;
	int r = 0;

	dbi_lock(db);
	st = dbi_stmt(db, sql_each, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, secret_id);
		while ((r = dbi_step_row(db, st)) == 1) {
			r = row_attr(db, st);
			if (r < 0)
				break;
			dbi_column_name(st, 1, name);
			r = fn(ctx, name, sqlite3_column_blob(st, 2),
			       (size_t)sqlite3_column_bytes(st, 2));
			if (r)
				break;
		}
		dbi_done(st);
	}
	dbi_unlock(db);
	return r;
}
