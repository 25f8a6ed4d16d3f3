/* Descriptive attributes of secrets, a row per (secret, name). They follow
 * the secret id, so they survive delete and undelete and go with a purge. */
#include <errno.h>
#include <string.h>

#include "db_attrs.h"
#include "db_int.h"

static const char sql_get[] =
	"SELECT value FROM secret_attrs WHERE secret_id = ?1 AND name = ?2";
static const char sql_set[] =
	"INSERT INTO secret_attrs (secret_id, name, value) VALUES (?1, ?2, ?3) "
	"ON CONFLICT (secret_id, name) DO UPDATE SET value = excluded.value";
static const char sql_remove[] = "DELETE FROM secret_attrs WHERE secret_id = ?1 AND name = ?2";
static const char sql_each[] =
	"SELECT name, value FROM secret_attrs WHERE secret_id = ?1 ORDER BY name";

int db_attr_get(struct db *db, int64_t secret_id, const char *name, void *buf, size_t size,
		size_t *len)
{
	sqlite3_stmt *st;
	int r = 0;

	*len = 0;
	dbi_lock(db);
	st = dbi_stmt(db, sql_get, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, secret_id);
		sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
		r = dbi_step_row(db, st);
		if (r == 1) {
			const void *p = sqlite3_column_blob(st, 0);

			*len = (size_t)sqlite3_column_bytes(st, 0);
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
			dbi_column_name(st, 0, name);
			r = fn(ctx, name, sqlite3_column_blob(st, 1),
			       (size_t)sqlite3_column_bytes(st, 1));
			if (r)
				break;
		}
		dbi_done(st);
	}
	dbi_unlock(db);
	return r;
}
