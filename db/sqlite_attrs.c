/* Descriptive attributes of secrets, a row per (secret, name). They follow
 * the secret id, so they survive delete and undelete and go with a purge. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "sqlite_int.h"

/* Each row is tagged over (secret id, name, value) (sqlite_auth.c): a value
 * is checked before it is returned, and a row moved to another secret or
 * edited fails. */
static const char sql_get[] =
	"SELECT secret_id, name, value, mac FROM secret_attrs WHERE secret_id = ?1 AND name = ?2";
static const char sql_set[] =
	"INSERT INTO secret_attrs (secret_id, name, value, mac) VALUES (?1, ?2, ?3, "
	"dba_mac('secret_attrs', ?1, ?2, ?3)) "
	"ON CONFLICT (secret_id, name) DO UPDATE SET value = excluded.value, mac = excluded.mac";
static const char sql_remove[] = "DELETE FROM secret_attrs WHERE secret_id = ?1 AND name = ?2";
static const int attr_tagged[] = { 0, 1, 2 };

struct attr_out {
	void *buf;
	size_t size, *len;
};

static int row_attr(struct sq *db, sqlite3_stmt *st, void *ctx)
{
	struct attr_out *o = ctx;
	char what[DB_NAME_MAX + 16];
	int r;

	snprintf(what, sizeof(what), " (%.255s)", (const char *)sqlite3_column_text(st, 1));
	r = sq_row_verify(db, st, "secret_attrs", attr_tagged, 3, 3, what,
			  sqlite3_column_int64(st, 0));
	if (r < 0)
		return r;
	*o->len = (size_t)sqlite3_column_bytes(st, 2);
	if (*o->len > o->size)
		return -ERANGE;
	if (*o->len)
		memcpy(o->buf, sqlite3_column_blob(st, 2), *o->len);
	return 0;
}

int sq_attr_get(struct db *h, int64_t secret_id, const char *name, void *buf, size_t size,
		size_t *len)
{
	struct attr_out o = { buf, size, len };

	*len = 0;
	return sq_query(sq_of(h), SQ_ONE | SQ_READ, sql_get, row_attr, &o,
			SQ_ARGS(SQ_I(secret_id), SQ_T(name)));
}

int sq_attr_set(struct db *h, int64_t secret_id, const char *name, const void *value,
		size_t len)
{
	struct db_blob b = { (unsigned char *)value, len };

	if (len == 0)
		return sq_change(sq_of(h), sql_remove, -1, SQ_ARGS(SQ_I(secret_id), SQ_T(name)),
				 NULL, NULL);
	return sq_change(sq_of(h), sql_set, 1, SQ_ARGS(SQ_I(secret_id), SQ_T(name), SQ_B(&b)),
			 NULL, NULL);
}
