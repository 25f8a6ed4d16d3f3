/*
 * The SQLite store's meta, instances and secrets. Rules this file keeps:
 *  - every row read has its tag checked before any field leaves here, and
 *    every write checks the tag of the row it replaces (dba_check in the
 *    statement) and tags what it writes (dba_mac): sqlite_auth.c;
 *  - a change to which version of which secret is live runs in a
 *    transaction of its own (a savepoint inside the caller's) whose
 *    outermost commit remakes the instance's state;
 *  - ids come from AUTOINCREMENT, so they are never handed out again.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "sqlite_int.h"

/* Each ends with the row's tag: SEC_MAC is its column. */
#define SEC_COLS "id, instance_id, name, uid, gid, mode, version, size, flags, ctime, " \
		 "mtime, chtime, updated_by, mac"
#define SEC_MAC 13
#define CHECK_INST "dba_check(mac, " DBA_INSTANCES ")"
#define CHECK_SEC "dba_check(mac, " DBA_SECRETS ")"

static const char sql_meta_get[] = "SELECT value FROM meta WHERE key = ?1";
static const char sql_meta_set[] =
	"INSERT INTO meta (key, value) VALUES (?1, ?2) "
	"ON CONFLICT (key) DO UPDATE SET value = excluded.value";
static const char sql_inst_create[] =
	"INSERT INTO instances (name, uid, gid, mode, ctime, mtime, generation, wrapped_key) "
	"VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7)";
static const char sql_inst_get[] = "SELECT " SQ_INST_COLS " FROM instances WHERE id = ?1";
static const char sql_inst_find[] = "SELECT " SQ_INST_COLS " FROM instances WHERE name = ?1";
static const char sql_inst_set_key[] =
	"UPDATE instances SET generation = ?2, wrapped_key = ?3, "
	"mac = dba_mac('instances', id, name, uid, gid, mode, ?2) "
	"WHERE id = ?1 AND " CHECK_INST;
static const char sql_inst_set_attr[] =
	"UPDATE instances SET uid = ?2, gid = ?3, mode = ?4, mtime = ?5, "
	"mac = dba_mac('instances', id, name, ?2, ?3, ?4, generation) "
	"WHERE id = ?1 AND " CHECK_INST;
static const char sql_inst_delete[] = "DELETE FROM instances WHERE id = ?1";
static const char sql_inst_each[] =
	"SELECT " SQ_INST_COLS " FROM instances WHERE id > ?1 ORDER BY id";
static const char sql_inst_count[] = "SELECT count(*) FROM instances";
static const char sql_inst_has_secrets[] =
	"SELECT 1 FROM secrets WHERE instance_id = ?1 LIMIT 1";
static const char sql_sec_get[] = "SELECT " SEC_COLS " FROM secrets WHERE id = ?1";
static const char sql_sec_find[] =
	"SELECT " SEC_COLS " FROM secrets WHERE instance_id = ?1 AND name = ?2";
static const char sql_sec_blob[] = "SELECT " SEC_COLS ", blob FROM secrets WHERE id = ?1";
static const char sql_sec_each[] =
	"SELECT " SEC_COLS " FROM secrets WHERE instance_id = ?1 AND id > ?2 ORDER BY id";
static const char sql_sec_count[] = "SELECT count(*) FROM secrets WHERE instance_id = ?1";
static const char sql_sec_insert[] =
	"INSERT INTO secrets (instance_id, name, uid, gid, mode, version, size, flags, ctime, "
	"mtime, chtime, updated_by, blob) "
	"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
static const char sql_sec_insert_as[] =
	"INSERT INTO secrets (instance_id, name, uid, gid, mode, version, size, flags, ctime, "
	"mtime, chtime, updated_by, blob, id) "
	"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
/* The highest secret id ever handed out: AUTOINCREMENT's counter, or a
 * row's (live, or deleted and kept for undelete) if the counter was set
 * back. */
static const char sql_sec_id_top[] =
	"SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'secrets'), 0), "
	"coalesce((SELECT max(id) FROM secrets), 0), "
	"coalesce((SELECT max(secret_id) FROM trash), 0))";
static const char sql_sec_id_set[] =
	"UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'secrets'";
static const char sql_sec_id_first[] =
	"INSERT INTO sqlite_sequence (name, seq) VALUES ('secrets', ?1)";
static const char sql_sec_set_value[] =
	"UPDATE secrets SET version = ?2, size = ?3, flags = ?4, mtime = ?5, chtime = ?6, "
	"updated_by = ?7, blob = ?8, mac = dba_mac('secrets', id, instance_id, name, uid, "
	"gid, mode, ?2, ?3, ?4) WHERE id = ?1 AND " CHECK_SEC;
static const char sql_sec_set_attr[] =
	"UPDATE secrets SET uid = ?2, gid = ?3, mode = ?4, chtime = ?5, "
	"mac = dba_mac('secrets', id, instance_id, name, ?2, ?3, ?4, version, size, flags) "
	"WHERE id = ?1 AND " CHECK_SEC;
static const char sql_sec_delete[] = "DELETE FROM secrets WHERE id = ?1";
static const char sql_sec_rename[] =
	"UPDATE secrets SET name = ?2, version = ?3, chtime = ?4, blob = ?5, "
	"mac = dba_mac('secrets', id, instance_id, ?2, uid, gid, mode, ?3, size, flags) "
	"WHERE id = ?1 AND " CHECK_SEC;
/* A row this transaction just inserted, untagged: its id is known only
 * now. */
static const char sql_inst_tag[] =
	"UPDATE instances SET mac = dba_mac(" DBA_INSTANCES ") WHERE id = ?1 AND mac = x''";
static const char sql_sec_tag[] =
	"UPDATE secrets SET mac = dba_mac(" DBA_SECRETS ") WHERE id = ?1 AND mac = x''";

static int row_blob(struct sq *db, sqlite3_stmt *st, void *out)
{
	return sq_column_blob(st, 0, out);
}

int sq_meta_get(struct db *h, const char *key, struct db_blob *out)
{
	out->data = NULL;
	out->len = 0;
	return sq_query(sq_of(h), SQ_READ | SQ_ONE, sql_meta_get, row_blob, out,
			SQ_ARGS(SQ_T(key)));
}

int sq_meta_set(struct db *h, const char *key, const unsigned char *v, size_t len)
{
	struct db_blob b = { (unsigned char *)v, len };

	return sq_change(sq_of(h), sql_meta_set, -1, SQ_ARGS(SQ_T(key), SQ_B(&b)), NULL, NULL);
}

int sq_instance_create(struct db *h, struct db_instance *in, const struct db_blob *wrapped)
{
	struct sq *db = sq_of(h);
	int r = sq_begin(db, false);

	if (r < 0)
		return r;
	in->ctime_ns = in->mtime_ns = db_now_ns();
	r = sq_change(db, sql_inst_create, 1,
		      SQ_ARGS(SQ_T(in->name), SQ_I(in->uid), SQ_I(in->gid),
			      SQ_I(in->mode & 07777), SQ_I(in->ctime_ns), SQ_I(in->generation),
			      SQ_B(wrapped)), &in->id, NULL);
	if (r == 0)
		r = sq_change(db, sql_inst_tag, 1, SQ_ARGS(SQ_I(in->id)), NULL, NULL);
	if (r == 0)
		r = sq_state_touch(db, in->id, true);
	return sq_end(db, r);
}

static int row_instance(struct sq *db, sqlite3_stmt *st, void *out)
{
	return sq_row_instance(db, st, out);
}

int sq_instance_get(struct db *h, int64_t id, struct db_instance *out)
{
	return sq_query(sq_of(h), SQ_READ | SQ_ONE, sql_inst_get, row_instance, out,
			SQ_ARGS(SQ_I(id)));
}

int sq_instance_find(struct db *h, const char *name, struct db_instance *out)
{
	return sq_query(sq_of(h), SQ_READ | SQ_ONE, sql_inst_find, row_instance, out,
			SQ_ARGS(SQ_T(name)));
}

int sq_instance_set_key(struct db *h, int64_t id, uint64_t generation,
			const struct db_blob *wrapped)
{
	return sq_change(sq_of(h), sql_inst_set_key, 1,
			 SQ_ARGS(SQ_I(id), SQ_I(generation), SQ_B(wrapped)), NULL, NULL);
}

int sq_instance_set_attr(struct db *h, int64_t id, uid_t uid, gid_t gid, mode_t mode,
			 int64_t now_ns)
{
	return sq_change(sq_of(h), sql_inst_set_attr, 1,
			 SQ_ARGS(SQ_I(id), SQ_I(uid), SQ_I(gid), SQ_I(mode & 07777),
				 SQ_I(now_ns)), NULL, NULL);
}

int sq_instance_delete(struct db *h, int64_t id)
{
	struct sq *db = sq_of(h);
	int r;

	sq_lock(db);
	r = sq_query(db, SQ_ONE, sql_inst_has_secrets, NULL, NULL, SQ_ARGS(SQ_I(id)));
	if (r == 0)
		r = -ENOTEMPTY;
	else if (r == -ENOENT)
		r = sq_change(db, sql_inst_delete, 1, SQ_ARGS(SQ_I(id)), NULL, NULL);
	sq_unlock(db);
	return r;
}

SQ_EACH_ROW(row_instance_each, struct db_instance, sq_row_instance)

int sq_instance_each(struct db *h, int64_t after_id,
		     int (*fn)(void *, const struct db_instance *), void *ctx)
{
	struct sq_each e = { (void *)fn, ctx };

	return sq_query(sq_of(h), SQ_READ, sql_inst_each, row_instance_each, &e,
			SQ_ARGS(SQ_I(after_id)));
}

int64_t sq_instance_count(struct db *h)
{
	int64_t n = -1;

	return sq_query(sq_of(h), SQ_READ | SQ_ONE, sql_inst_count, sq_row_int, &n,
			SQ_NOARGS) < 0 ? -1 : n;
}

int64_t sq_secret_count(struct db *h, int64_t instance_id)
{
	int64_t n = -1;

	return sq_query(sq_of(h), SQ_READ | SQ_ONE, sql_sec_count, sq_row_int, &n,
			SQ_ARGS(SQ_I(instance_id))) < 0 ? -1 : n;
}

static const int sec_tagged[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8 };

static int row_secret(struct sq *db, sqlite3_stmt *st, void *out)
{
	struct db_secret *s = out;
	int r = sq_row_verify(db, st, "secrets", sec_tagged, 9, SEC_MAC, NULL,
			      sqlite3_column_int64(st, 0));

	if (r < 0)
		return r;
	s->id = sqlite3_column_int64(st, 0);
	s->instance_id = sqlite3_column_int64(st, 1);
	sq_column_name(st, 2, s->name);
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

int sq_secret_get(struct db *h, int64_t id, struct db_secret *out)
{
	return sq_query(sq_of(h), SQ_READ | SQ_ONE, sql_sec_get, row_secret, out,
			SQ_ARGS(SQ_I(id)));
}

int sq_secret_find(struct db *h, int64_t instance_id, const char *name,
		   struct db_secret *out)
{
	return sq_query(sq_of(h), SQ_READ | SQ_ONE, sql_sec_find, row_secret, out,
			SQ_ARGS(SQ_I(instance_id), SQ_T(name)));
}

struct secret_blob {
	struct db_secret *meta;
	struct db_blob *blob;
};

static int row_secret_blob(struct sq *db, sqlite3_stmt *st, void *ctx)
{
	struct secret_blob *sb = ctx;
	int r = row_secret(db, st, sb->meta);

	return r ? r : sq_column_blob(st, SEC_MAC + 1, sb->blob);
}

int sq_secret_blob(struct db *h, int64_t id, struct db_secret *meta, struct db_blob *out)
{
	struct sq *db = sq_of(h);
	struct db_secret tmp;
	struct secret_blob sb = { meta ? meta : &tmp, out };
	struct sq_cache_mark mark;
	int r;

	out->data = NULL;
	out->len = 0;
	if (sq_cache_secret(db, id, sb.meta, out))
		return 0;
	(void)sq_cache_mark(db, &mark);
	r = sq_query(db, SQ_READ | SQ_ONE, sql_sec_blob, row_secret_blob, &sb, SQ_ARGS(SQ_I(id)));
	if (r == 0)
		sq_cache_secret_put(db, &mark, sb.meta, out);
	return r;
}

SQ_EACH_ROW(row_secret_each, struct db_secret, row_secret)

int sq_secret_each(struct db *h, int64_t instance_id, int64_t after_id,
		   int (*fn)(void *, const struct db_secret *), void *ctx)
{
	struct sq_each e = { (void *)fn, ctx };

	return sq_query(sq_of(h), SQ_READ, sql_sec_each, row_secret_each, &e,
			SQ_ARGS(SQ_I(instance_id), SQ_I(after_id)));
}

int sq_secret_insert(struct db *h, struct db_secret *s, const struct db_blob *blob, bool as_id)
{
	struct sq *db = sq_of(h);
	const struct sq_arg args[] = {
		SQ_I(s->instance_id), SQ_T(s->name), SQ_I(s->uid), SQ_I(s->gid),
		SQ_I(s->mode & 07777), SQ_I(s->version), SQ_I(s->size), SQ_I(s->flags),
		SQ_I(s->ctime_ns), SQ_I(s->mtime_ns), SQ_I(s->chtime_ns), SQ_I(s->updated_by),
		SQ_B(blob), SQ_I(s->id),
	};
	int nargs = (int)(sizeof(args) / sizeof(args[0])) - (as_id ? 0 : 1);
	int r = sq_begin(db, false);

	if (r < 0)
		return r;
	r = sq_state_touch(db, s->instance_id, false);
	if (r == 0)
		r = sq_change(db, as_id ? sql_sec_insert_as : sql_sec_insert, 1, args, nargs,
			      &s->id, NULL);
	/* The id is taken after all (the file was replaced, or its counter
	 * set back): the rest of the lease may be too. */
	if (r == -EEXIST && as_id)
		db->lease_end = 0;
	if (r == 0)
		r = sq_change(db, sql_sec_tag, 1, SQ_ARGS(SQ_I(s->id)), NULL, NULL);
	if (r == 0)
		r = sq_states_note(db, s->instance_id, s->id);
	return sq_end(db, r);
}

/* Ids are taken from AUTOINCREMENT's counter a lease at a time, moved on
 * in a transaction of their own (not synced: it reaches the disk with the
 * next synced commit, before any row that uses one of its ids can). Inserts
 * by anyone else then get ids above the lease; a lease a process leaves
 * unused is a gap, as a rolled-back insert leaves. */
#define SQ_ID_LEASE 64

int sq_secret_id_reserve(struct db *h, int64_t *id)
{
	struct sq *db = sq_of(h);
	int64_t top = 0, changed = 0;
	int r = 0;

	sq_lock(db);
	if (db->lease_next <= 0 || db->lease_next >= db->lease_end) {
		r = sq_begin(db, true);
		if (r < 0)
			goto out;
		r = sq_query(db, SQ_ONE, sql_sec_id_top, sq_row_int, &top, SQ_NOARGS);
		if (r == 0 && top > INT64_MAX - SQ_ID_LEASE - 1)
			r = -EOVERFLOW;
		if (r == 0)
			r = sq_change(db, sql_sec_id_set, -1, SQ_ARGS(SQ_I(top + SQ_ID_LEASE)),
				      NULL, &changed);
		if (r == 0 && !changed)
			r = sq_change(db, sql_sec_id_first, 1, SQ_ARGS(SQ_I(top + SQ_ID_LEASE)),
				      NULL, NULL);
		r = sq_end(db, r);
		if (r < 0)
			goto out;
		db->lease_next = top + 1;
		db->lease_end = top + SQ_ID_LEASE + 1;
	}
	*id = db->lease_next++;
out:
	sq_unlock(db);
	return r;
}

int sq_secret_set_value(struct db *h, const struct db_secret *s, const struct db_blob *blob)
{
	struct sq *db = sq_of(h);
	int r = sq_begin(db, false);

	if (r < 0)
		return r;
	r = sq_state_touch_secret(db, s->id, false);
	if (r == 0)
		r = sq_change(db, sql_sec_set_value, 1,
			      SQ_ARGS(SQ_I(s->id), SQ_I(s->version), SQ_I(s->size),
				      SQ_I(s->flags), SQ_I(s->mtime_ns), SQ_I(s->chtime_ns),
				      SQ_I(s->updated_by), SQ_B(blob)), NULL, NULL);
	return sq_end(db, r);
}

int sq_secret_set_attr(struct db *h, int64_t id, uid_t uid, gid_t gid, mode_t mode,
		       int64_t now_ns)
{
	return sq_change(sq_of(h), sql_sec_set_attr, 1,
			 SQ_ARGS(SQ_I(id), SQ_I(uid), SQ_I(gid), SQ_I(mode & 07777),
				 SQ_I(now_ns)), NULL, NULL);
}

int sq_secret_rename(struct db *h, const struct db_secret *s, const struct db_blob *blob)
{
	struct sq *db = sq_of(h);
	int r = sq_begin(db, false);

	if (r < 0)
		return r;
	r = sq_state_touch_secret(db, s->id, false);
	if (r == 0)
		r = sq_change(db, sql_sec_rename, 1,
			      SQ_ARGS(SQ_I(s->id), SQ_T(s->name), SQ_I(s->version),
				      SQ_I(s->chtime_ns), SQ_B(blob)), NULL, NULL);
	return sq_end(db, r);
}

int sq_secret_delete(struct db *h, int64_t id)
{
	struct sq *db = sq_of(h);
	int r = sq_begin(db, false);

	if (r < 0)
		return r;
	r = sq_state_touch_secret(db, id, false);
	if (r == 0)
		r = sq_change(db, sql_sec_delete, 1, SQ_ARGS(SQ_I(id)), NULL, NULL);
	return sq_end(db, r);
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
static const char sql_data_version[] = "PRAGMA data_version";

static int row_fingerprint(struct sq *db, sqlite3_stmt *st, void *out)
{
	const unsigned char *fp = sqlite3_column_text(st, 0);

	snprintf(out, sizeof(db->change_fp), "%s", fp ? (const char *)fp : "");
	return 0;
}

/* SQLite's data_version moves when another connection commits, and only
 * then: asked on the writing connection, our own commits don't count. The
 * audit log's connection commits too, without changing what mounts show:
 * the fingerprint of the tables tells the two apart, read on a read
 * connection where there is one, so the writer's stays free for commits.
 * One thread polls (the change_* fields are its own). */
int sq_change_seq(struct db *h, uint64_t *out)
{
	struct sq *db = sq_of(h);
	char fp[sizeof(db->change_fp)];
	int64_t dv = 0;
	int r;

	r = sq_query(db, SQ_ONE, sql_data_version, sq_row_int, &dv, SQ_NOARGS);
	if (r == 0 && (dv != db->change_dv || !db->change_fp[0])) {
		r = sq_query(db, SQ_READ | SQ_ONE, sql_change_fp, row_fingerprint, fp,
			     SQ_NOARGS);
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
