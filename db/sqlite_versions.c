/*
 * Old versions, the trash, and the rows rotation visits. Rules this file
 * keeps:
 *  - blobs are copied from row to row inside SQLite; sealed bytes pass
 *    through here only on their way to the vault;
 *  - a purge deletes the rows (secure_delete is on, so the pages are
 *    zeroed), and ids are never reused, so a secret created again after a
 *    purge has a history of its own;
 *  - what changes several rows runs inside the caller's transaction.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite_int.h"

#define VERSION_COLS "secret_id, version, size, flags, mtime, updated_by"

/* Every copy checks the tag of the row it copies (dba_check) and tags the
 * copy for its new table (dba_mac): sqlite_auth.c. */
static const char sql_archive[] =
	"INSERT OR REPLACE INTO versions (secret_id, version, size, flags, mtime, updated_by, "
	"blob, mac) SELECT id, version, size, flags, mtime, updated_by, blob, "
	"dba_mac('versions', id, version, size, flags) FROM secrets "
	"WHERE id = ?1 AND (version > 0 OR ?2) AND dba_check(mac, " DBA_SECRETS ")";
/* All but the newest ?2: those at or below the (?2 + 1)th newest, a seek
 * down the key (a NOT IN of the newest made a temporary b-tree each time). */
static const char sql_prune[] =
	"DELETE FROM versions WHERE secret_id = ?1 AND version <= "
	"(SELECT version FROM versions WHERE secret_id = ?1 ORDER BY version DESC "
	"LIMIT 1 OFFSET ?2)";
#define VERSION_MAC 6
static const char sql_version_get[] =
	"SELECT " VERSION_COLS ", mac, blob FROM versions WHERE secret_id = ?1 AND version = ?2";
static const char sql_version_each[] =
	"SELECT " VERSION_COLS ", mac FROM versions WHERE secret_id = ?1 ORDER BY version DESC";
static const char sql_version_set_blob[] =
	"UPDATE versions SET blob = ?3 WHERE secret_id = ?1 AND version = ?2";

static const char sql_adopt_drop[] = "DELETE FROM versions WHERE secret_id = ?1";
static const char sql_adopt_versions[] =
	"UPDATE versions SET secret_id = ?1, mac = dba_mac('versions', ?1, version, size, flags) "
	"WHERE secret_id = ?2 AND dba_check(mac, " DBA_VERSIONS ")";
static const char sql_adopt_attrs[] =
	"UPDATE OR IGNORE secret_attrs SET secret_id = ?1, mac = dba_mac('secret_attrs', ?1, "
	"name, value) WHERE secret_id = ?2 AND dba_check(mac, " DBA_ATTRS ")";
static const char sql_adopt_attrs_rest[] = "DELETE FROM secret_attrs WHERE secret_id = ?2";
static const char sql_adopt_ctime[] =
	"UPDATE secrets SET ctime = (SELECT ctime FROM secrets WHERE id = ?2) WHERE id = ?1";
static const char sql_adopt_delete[] = "DELETE FROM secrets WHERE id = ?2";

static const char sql_trash_put[] =
	"INSERT INTO trash (secret_id, instance_id, name, uid, gid, mode, ctime, deleted, "
	"deleted_by, mac) SELECT id, instance_id, name, uid, gid, mode, ctime, ?2, ?3, "
	"dba_mac('trash', id, instance_id, name, uid, gid, mode) FROM secrets "
	"WHERE id = ?1 AND dba_check(mac, " DBA_SECRETS ")";
static const char sql_trash_unlink[] = "DELETE FROM secrets WHERE id = ?1";

#define TRASH_COLS "t.secret_id, t.instance_id, t.name, t.uid, t.gid, t.mode, t.ctime, " \
		   "t.deleted, t.deleted_by, " \
		   "coalesce((SELECT max(version) FROM versions v WHERE v.secret_id = t.secret_id), 0), " \
		   "coalesce((SELECT size FROM versions v WHERE v.secret_id = t.secret_id " \
		   "ORDER BY version DESC LIMIT 1), 0), t.mac"
#define TRASH_MAC 11
static const char sql_trash_find[] =
	"SELECT " TRASH_COLS " FROM trash t WHERE t.instance_id = ?1 AND t.name = ?2 "
	"AND t.deleted >= ?3 ORDER BY t.deleted DESC, t.secret_id DESC LIMIT 1";
static const char sql_trash_each[] =
	"SELECT " TRASH_COLS " FROM trash t WHERE ?1 = 0 OR t.instance_id = ?1 "
	"ORDER BY t.deleted DESC, t.secret_id DESC";
static const char sql_trash_restore[] =
	"INSERT INTO secrets (id, instance_id, name, uid, gid, mode, version, size, flags, "
	"ctime, mtime, chtime, updated_by, blob, mac) "
	"SELECT t.secret_id, t.instance_id, t.name, t.uid, t.gid, t.mode, v.version, v.size, "
	"v.flags, t.ctime, v.mtime, ?2, v.updated_by, v.blob, dba_mac('secrets', t.secret_id, "
	"t.instance_id, t.name, t.uid, t.gid, t.mode, v.version, v.size, v.flags) "
	"FROM trash t JOIN versions v ON v.secret_id = t.secret_id WHERE t.secret_id = ?1 "
	"AND dba_check(t.mac, 'trash', t.secret_id, t.instance_id, t.name, t.uid, t.gid, "
	"t.mode) AND dba_check(v.mac, 'versions', v.secret_id, v.version, v.size, v.flags) "
	"ORDER BY v.version DESC LIMIT 1";
static const char sql_trash_taken[] =
	"SELECT 1 FROM secrets s JOIN trash t ON s.instance_id = t.instance_id "
	"AND s.name = t.name WHERE t.secret_id = ?1";
static const char sql_trash_restored[] =
	"DELETE FROM versions WHERE secret_id = ?1 AND version = "
	"(SELECT version FROM secrets WHERE id = ?1)";
static const char sql_trash_drop[] = "DELETE FROM trash WHERE secret_id = ?1";

#define PURGE_WHERE "(?1 = 0 OR instance_id = ?1) AND (?2 IS NULL OR name = ?2) AND deleted < ?3"
static const char sql_purge_versions[] =
	"DELETE FROM versions WHERE secret_id IN (SELECT secret_id FROM trash WHERE "
	PURGE_WHERE ")";
static const char sql_purge_attrs[] =
	"DELETE FROM secret_attrs WHERE secret_id IN (SELECT secret_id FROM trash WHERE "
	PURGE_WHERE ")";
static const char sql_purge_trash[] = "DELETE FROM trash WHERE " PURGE_WHERE;

static const char sql_ids_live[] =
	"SELECT id, name FROM secrets WHERE instance_id = ?1 ORDER BY id";
static const char sql_ids_trash[] =
	"SELECT secret_id, name FROM trash WHERE instance_id = ?1 ORDER BY secret_id";
static const char sql_instance_key[] =
	"SELECT id, name, uid, gid, mode, ctime, mtime, generation, mac, wrapped_key "
	"FROM instances WHERE id = ?1";

/* Runs sql with ?1 = a, ?2 = b: the common shape here. */
static int exec_ids(struct sq *db, const char *sql, int64_t a, int64_t b, int want)
{
	return sq_change(db, sql, want, SQ_ARGS(SQ_I(a), SQ_I(b)), NULL, NULL);
}

int sq_version_archive(struct db *h, int64_t secret_id, bool with_v0, unsigned keep)
{
	int r = exec_ids(sq_of(h), sql_archive, secret_id, with_v0, -1);

	if (r == 0)
		r = exec_ids(sq_of(h), sql_prune, secret_id, keep, -1);
	return r;
}

static const int version_tagged[] = { 0, 1, 2, 3 };
static const int trash_tagged[] = { 0, 1, 2, 3, 4, 5 };

static int row_version(struct sq *db, sqlite3_stmt *st, struct db_version *v)
{
	char what[48];
	int r;

	snprintf(what, sizeof(what), " (version %lld)", (long long)sqlite3_column_int64(st, 1));
	r = sq_row_verify(db, st, "versions", version_tagged, 4, VERSION_MAC, what,
			  sqlite3_column_int64(st, 0));
	if (r < 0)
		return r;
	v->secret_id = sqlite3_column_int64(st, 0);
	v->version = (uint64_t)sqlite3_column_int64(st, 1);
	v->size = (uint64_t)sqlite3_column_int64(st, 2);
	v->flags = (uint32_t)sqlite3_column_int64(st, 3);
	v->mtime_ns = sqlite3_column_int64(st, 4);
	v->updated_by = (uid_t)sqlite3_column_int64(st, 5);
	return 0;
}

struct version_out {
	struct db_version *v;
	struct db_blob *blob;
};

static int row_version_blob(struct sq *db, sqlite3_stmt *st, void *ctx)
{
	struct version_out *o = ctx;
	int r = row_version(db, st, o->v);

	return r == 0 && o->blob ? sq_column_blob(st, VERSION_MAC + 1, o->blob) : r;
}

int sq_version_get(struct db *h, int64_t secret_id, uint64_t version,
		   struct db_version *out, struct db_blob *blob)
{
	struct version_out o = { out, blob };

	if (blob) {
		blob->data = NULL;
		blob->len = 0;
	}
	return sq_query(sq_of(h), SQ_ONE, sql_version_get, row_version_blob, &o,
			SQ_ARGS(SQ_I(secret_id), SQ_I(version)));
}

SQ_EACH_ROW(row_version_each, struct db_version, row_version)

int sq_version_each(struct db *h, int64_t secret_id,
		    int (*fn)(void *, const struct db_version *), void *ctx)
{
	struct sq_each e = { (void *)fn, ctx };

	return sq_query(sq_of(h), 0, sql_version_each, row_version_each, &e,
			SQ_ARGS(SQ_I(secret_id)));
}

int sq_version_set_blob(struct db *h, int64_t secret_id, uint64_t version,
			const struct db_blob *blob)
{
	return sq_change(sq_of(h), sql_version_set_blob, 1,
			 SQ_ARGS(SQ_I(secret_id), SQ_I(version), SQ_B(blob)), NULL, NULL);
}

static int adopt_now(struct sq *db, int64_t id, int64_t from_id)
{
	static const char *const steps[] = {
		sql_adopt_drop, sql_adopt_versions, sql_adopt_attrs, sql_adopt_attrs_rest,
		sql_adopt_ctime,
	};
	int r = 0;

	if (id == from_id)
		return -EINVAL;
	for (size_t i = 0; r == 0 && i < sizeof(steps) / sizeof(steps[0]); i++)
		r = exec_ids(db, steps[i], id, from_id, -1);
	if (r == 0)
		r = exec_ids(db, sql_adopt_delete, id, from_id, 1);
	return r;
}

static int trash_put_now(struct sq *db, const struct db_secret *s, int64_t now_ns, uid_t by)
{
	int r = sq_change(db, sql_trash_put, 1, SQ_ARGS(SQ_I(s->id), SQ_I(now_ns), SQ_I(by)),
			  NULL, NULL);

	return r ? r : exec_ids(db, sql_trash_unlink, s->id, 0, 1);
}

static int row_trash(struct sq *db, sqlite3_stmt *st, void *out)
{
	struct db_trash *t = out;
	int r = sq_row_verify(db, st, "trash", trash_tagged, 6, TRASH_MAC, NULL,
			      sqlite3_column_int64(st, 0));

	if (r < 0)
		return r;
	t->secret_id = sqlite3_column_int64(st, 0);
	t->instance_id = sqlite3_column_int64(st, 1);
	sq_column_name(st, 2, t->name);
	t->uid = (uid_t)sqlite3_column_int64(st, 3);
	t->gid = (gid_t)sqlite3_column_int64(st, 4);
	t->mode = (mode_t)sqlite3_column_int64(st, 5) & 07777;
	t->ctime_ns = sqlite3_column_int64(st, 6);
	t->deleted_ns = sqlite3_column_int64(st, 7);
	t->deleted_by = (uid_t)sqlite3_column_int64(st, 8);
	t->version = (uint64_t)sqlite3_column_int64(st, 9);
	t->size = (uint64_t)sqlite3_column_int64(st, 10);
	return 0;
}

int sq_trash_find(struct db *h, int64_t instance_id, const char *name, int64_t since_ns,
		  struct db_trash *out)
{
	return sq_query(sq_of(h), SQ_ONE, sql_trash_find, row_trash, out,
			SQ_ARGS(SQ_I(instance_id), SQ_T(name), SQ_I(since_ns)));
}

static int trash_restore_now(struct sq *db, int64_t secret_id, int64_t now_ns)
{
	int r = sq_query(db, SQ_ONE, sql_trash_taken, NULL, NULL, SQ_ARGS(SQ_I(secret_id)));

	if (r == 0)
		return -EEXIST;
	if (r != -ENOENT)
		return r;
	r = exec_ids(db, sql_trash_restore, secret_id, now_ns, 1);
	if (r == 0)
		r = exec_ids(db, sql_trash_restored, secret_id, 0, 1);
	if (r == 0)
		r = exec_ids(db, sql_trash_drop, secret_id, 0, 1);
	return r;
}

SQ_EACH_ROW(row_trash_each, struct db_trash, row_trash)

int sq_trash_each(struct db *h, int64_t instance_id,
		  int (*fn)(void *, const struct db_trash *), void *ctx)
{
	struct sq_each e = { (void *)fn, ctx };

	return sq_query(sq_of(h), 0, sql_trash_each, row_trash_each, &e,
			SQ_ARGS(SQ_I(instance_id)));
}

static int purge_step(struct sq *db, const char *sql, int64_t instance_id, const char *name,
		      int64_t before_ns, int64_t *count)
{
	return sq_change(db, sql, -1, SQ_ARGS(SQ_I(instance_id), SQ_T(name), SQ_I(before_ns)),
			 NULL, count);
}

/* In a transaction of its own (a savepoint in the caller's). */
int sq_trash_purge(struct db *h, int64_t instance_id, const char *name, int64_t before_ns,
		   int64_t *count)
{
	struct sq *db = sq_of(h);
	int64_t n = 0;
	int r = sq_begin(db, false);

	if (r < 0)
		return r;
	r = purge_step(db, sql_purge_versions, instance_id, name, before_ns, NULL);
	if (r == 0)
		r = purge_step(db, sql_purge_attrs, instance_id, name, before_ns, NULL);
	if (r == 0)
		r = purge_step(db, sql_purge_trash, instance_id, name, before_ns, &n);
	if (r == 0 && count)
		*count = n;
	return sq_end(db, r);
}

/* Copies the write-ahead log into the database and empties it, so that
 * pages a purge zeroed (secure_delete) leave no older copy in the log. */
int sq_scrub(struct db *h)
{
	struct sq *db = sq_of(h);
	int r;

	sq_lock(db);
	r = sq_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
	sq_unlock(db);
	return r;
}

struct id_list {
	int64_t *ids;
	char (*names)[DB_NAME_MAX + 1];
	bool *live;
	size_t n, cap;
	bool adding_live;
};

static int id_list_grow(struct id_list *l)
{
	size_t cap = l->cap ? l->cap * 2 : 64;
	int64_t *ids = realloc(l->ids, cap * sizeof(*ids));
	char (*names)[DB_NAME_MAX + 1];
	bool *lv;

	if (!ids)
		return -ENOMEM;
	l->ids = ids;
	names = realloc(l->names, cap * sizeof(*names));
	if (!names)
		return -ENOMEM;
	l->names = names;
	lv = realloc(l->live, cap * sizeof(*lv));
	if (!lv)
		return -ENOMEM;
	l->live = lv;
	l->cap = cap;
	return 0;
}

static int row_id(struct sq *db, sqlite3_stmt *st, void *ctx)
{
	struct id_list *l = ctx;

	if (l->n == l->cap && id_list_grow(l) < 0)
		return -ENOMEM;
	l->ids[l->n] = sqlite3_column_int64(st, 0);
	sq_column_name(st, 1, l->names[l->n]);
	l->live[l->n++] = l->adding_live;
	return 0;
}

static int collect_ids(struct sq *db, const char *sql, int64_t instance_id, bool live,
		       struct id_list *l)
{
	l->adding_live = live;
	return sq_query(db, 0, sql, row_id, l, SQ_ARGS(SQ_I(instance_id)));
}

int sq_instance_secret_ids(struct db *h, int64_t instance_id,
			   int (*fn)(void *, int64_t id, const char *name, bool live),
			   void *ctx)
{
	struct sq *db = sq_of(h);
	struct id_list l = { 0 };
	int r;

	/* Listed first and visited after, so fn may change these rows. */
	sq_lock(db);
	r = collect_ids(db, sql_ids_live, instance_id, true, &l);
	if (r == 0)
		r = collect_ids(db, sql_ids_trash, instance_id, false, &l);
	for (size_t i = 0; r == 0 && i < l.n; i++)
		r = fn(ctx, l.ids[i], l.names[i], l.live[i]);
	sq_unlock(db);
	free(l.ids);
	free(l.names);
	free(l.live);
	return r;
}

struct instance_out {
	struct db_instance *in;
	struct db_blob *wrapped;
};

static int row_instance_key(struct sq *db, sqlite3_stmt *st, void *ctx)
{
	struct instance_out *o = ctx;
	int r = sq_row_instance(db, st, o->in);

	return r ? r : sq_column_blob(st, 9, o->wrapped);
}

int sq_instance_key(struct db *h, int64_t id, struct db_instance *in, struct db_blob *wrapped)
{
	struct instance_out o = { in, wrapped };

	wrapped->data = NULL;
	wrapped->len = 0;
	return sq_query(sq_of(h), SQ_ONE, sql_instance_key, row_instance_key, &o,
			SQ_ARGS(SQ_I(id)));
}

/* Each changes which secrets are live: in a transaction that remakes the
 * instance's state (sqlite_auth.c). */
int sq_secret_adopt(struct db *h, int64_t id, int64_t from_id)
{
	struct sq *db = sq_of(h);
	int r = sq_begin(db, false);

	if (r < 0)
		return r;
	r = sq_state_touch_secret(db, id, false);
	if (r == 0)
		r = sq_state_touch_secret(db, from_id, false);
	if (r == 0)
		r = adopt_now(db, id, from_id);
	return sq_end(db, r);
}

int sq_trash_put(struct db *h, const struct db_secret *s, int64_t now_ns, uid_t by)
{
	struct sq *db = sq_of(h);
	int r = sq_begin(db, false);

	if (r < 0)
		return r;
	r = sq_state_touch_secret(db, s->id, false);
	if (r == 0)
		r = trash_put_now(db, s, now_ns, by);
	return sq_end(db, r);
}

int sq_trash_restore(struct db *h, int64_t secret_id, int64_t now_ns)
{
	struct sq *db = sq_of(h);
	int r = sq_begin(db, false);

	if (r < 0)
		return r;
	r = sq_state_touch_secret(db, secret_id, true);
	if (r == 0)
		r = trash_restore_now(db, secret_id, now_ns);
	return sq_end(db, r);
}
