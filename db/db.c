/*
 * The store's public functions (db.h and its companions): each passes the
 * call on to the store behind the handle (store.h), so nothing above db/
 * knows which store it has. Also what every store shares: the last error's
 * words, blobs, the clock.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "store.h"

static __thread char last_error[512];

void db_set_error(const char *fmt, ...)
{
	char msg[sizeof(last_error)];
	va_list ap;

	/* Through a copy: a message may quote the one it replaces. */
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	memcpy(last_error, msg, sizeof(msg));
}

const char *db_errmsg(struct db *db)
{
	(void)db;
	return last_error;
}

int64_t db_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void db_blob_free(struct db_blob *b)
{
	if (!b)
		return;
	free(b->data);
	b->data = NULL;
	b->len = 0;
}

const struct db_store_ops *db_store_for(const char *spec)
{
	if (strncasecmp(spec, "postgresql://", 13) == 0 ||
	    strncasecmp(spec, "postgres://", 11) == 0)
		return &db_pg_ops;
	return &db_sqlite_ops;
}

int db_open(struct db **out, const char *spec, int flags)
{
	*out = NULL;
	return db_store_for(spec)->open(out, spec, flags);
}

void db_close(struct db *db)
{
	if (db)
		db->ops->close(db);
}

int db_files(const char *spec, int (*fn)(void *, const char *path, bool main), void *ctx)
{
	return db_store_for(spec)->files(spec, fn, ctx);
}

int db_begin(struct db *db)
{
	return db->ops->begin(db, false);
}

int db_begin_lazy(struct db *db)
{
	return db->ops->begin(db, true);
}

int db_instance_seq(struct db *db, int64_t instance_id, int64_t *seq)
{
	return db->ops->instance_seq(db, instance_id, false, seq);
}

int db_instance_seq_latest(struct db *db, int64_t instance_id, int64_t *seq)
{
	return db->ops->instance_seq(db, instance_id, true, seq);
}

int db_instance_set_wrapped_key(struct db *db, int64_t id, uint64_t generation,
				const struct db_blob *wrapped)
{
	return db->ops->instance_set_key(db, id, generation, wrapped);
}

/* The rest pass their arguments on as they are. */

const char *db_path(struct db *db)
{
	return db->ops->path(db);
}

int db_check_integrity(struct db *db)
{
	return db->ops->check_integrity(db);
}

void db_set_readers(struct db *db, unsigned max)
{
	db->ops->set_readers(db, max);
}

void db_read_begin(struct db *db)
{
	db->ops->read_begin(db);
}

void db_read_end(struct db *db)
{
	db->ops->read_end(db);
}

bool db_read_pinned(struct db *db)
{
	return db->ops->read_pinned(db);
}

int db_commit(struct db *db)
{
	return db->ops->commit(db);
}

void db_rollback(struct db *db)
{
	db->ops->rollback(db);
}

int db_change_seq(struct db *db, uint64_t *out)
{
	return db->ops->change_seq(db, out);
}

int db_tidy_caches(struct db *db, bool idle)
{
	return db->ops->tidy_caches ? db->ops->tidy_caches(db, idle) : 0;
}

int db_meta_get(struct db *db, const char *key, struct db_blob *out)
{
	return db->ops->meta_get(db, key, out);
}

int db_meta_set(struct db *db, const char *key, const unsigned char *v, size_t len)
{
	return db->ops->meta_set(db, key, v, len);
}

int db_instance_create(struct db *db, struct db_instance *in,
		       const struct db_blob *wrapped_key)
{
	return db->ops->instance_create(db, in, wrapped_key);
}

int db_instance_get(struct db *db, int64_t id, struct db_instance *out)
{
	return db->ops->instance_get(db, id, out);
}

int db_instance_find(struct db *db, const char *name, struct db_instance *out)
{
	return db->ops->instance_find(db, name, out);
}

int db_instance_key(struct db *db, int64_t id, struct db_instance *in,
		    struct db_blob *wrapped)
{
	return db->ops->instance_key(db, id, in, wrapped);
}

int db_instance_set_attr(struct db *db, int64_t id, uid_t uid, gid_t gid, mode_t mode,
			 int64_t now_ns)
{
	return db->ops->instance_set_attr(db, id, uid, gid, mode, now_ns);
}

int db_instance_delete(struct db *db, int64_t id)
{
	return db->ops->instance_delete(db, id);
}

int db_instance_each(struct db *db, int64_t after_id,
		     int (*fn)(void *, const struct db_instance *), void *ctx)
{
	return db->ops->instance_each(db, after_id, fn, ctx);
}

int64_t db_instance_count(struct db *db)
{
	return db->ops->instance_count(db);
}

int db_instance_secret_ids(struct db *db, int64_t instance_id,
			   int (*fn)(void *, int64_t id, const char *name, bool live),
			   void *ctx)
{
	return db->ops->instance_secret_ids(db, instance_id, fn, ctx);
}

int db_secret_get(struct db *db, int64_t id, struct db_secret *out)
{
	return db->ops->secret_get(db, id, out);
}

int db_secret_find(struct db *db, int64_t instance_id, const char *name,
		   struct db_secret *out)
{
	return db->ops->secret_find(db, instance_id, name, out);
}

int db_secret_blob(struct db *db, int64_t id, struct db_secret *meta, struct db_blob *out)
{
	return db->ops->secret_blob(db, id, meta, out);
}

int db_secret_each(struct db *db, int64_t instance_id, int64_t after_id,
		   int (*fn)(void *, const struct db_secret *), void *ctx)
{
	return db->ops->secret_each(db, instance_id, after_id, fn, ctx);
}

int64_t db_secret_count(struct db *db, int64_t instance_id)
{
	return db->ops->secret_count(db, instance_id);
}

int db_secret_insert(struct db *db, struct db_secret *s, const struct db_blob *blob)
{
	return db->ops->secret_insert(db, s, blob, false);
}

int db_secret_id_reserve(struct db *db, int64_t *id)
{
	return db->ops->secret_id_reserve(db, id);
}

int db_secret_insert_as(struct db *db, struct db_secret *s, const struct db_blob *blob)
{
	return s->id > 0 ? db->ops->secret_insert(db, s, blob, true) : -EINVAL;
}

int db_secret_set_value(struct db *db, const struct db_secret *s,
			const struct db_blob *blob)
{
	return db->ops->secret_set_value(db, s, blob);
}

int db_secret_set_attr(struct db *db, int64_t id, uid_t uid, gid_t gid, mode_t mode,
		       int64_t now_ns)
{
	return db->ops->secret_set_attr(db, id, uid, gid, mode, now_ns);
}

int db_secret_rename(struct db *db, const struct db_secret *s, const struct db_blob *blob)
{
	return db->ops->secret_rename(db, s, blob);
}

int db_secret_delete(struct db *db, int64_t id)
{
	return db->ops->secret_delete(db, id);
}

int db_secret_adopt(struct db *db, int64_t id, int64_t from_id)
{
	return db->ops->secret_adopt(db, id, from_id);
}

int db_version_archive(struct db *db, int64_t secret_id, bool with_v0, unsigned keep)
{
	return db->ops->version_archive(db, secret_id, with_v0, keep);
}

int db_version_get(struct db *db, int64_t secret_id, uint64_t version,
		   struct db_version *out, struct db_blob *blob)
{
	return db->ops->version_get(db, secret_id, version, out, blob);
}

int db_version_each(struct db *db, int64_t secret_id,
		    int (*fn)(void *, const struct db_version *), void *ctx)
{
	return db->ops->version_each(db, secret_id, fn, ctx);
}

int db_version_set_blob(struct db *db, int64_t secret_id, uint64_t version,
			const struct db_blob *blob)
{
	return db->ops->version_set_blob(db, secret_id, version, blob);
}

int db_trash_put(struct db *db, const struct db_secret *s, int64_t now_ns, uid_t by)
{
	return db->ops->trash_put(db, s, now_ns, by);
}

int db_trash_find(struct db *db, int64_t instance_id, const char *name,
		  int64_t since_ns, struct db_trash *out)
{
	return db->ops->trash_find(db, instance_id, name, since_ns, out);
}

int db_trash_restore(struct db *db, int64_t secret_id, int64_t now_ns)
{
	return db->ops->trash_restore(db, secret_id, now_ns);
}

int db_trash_each(struct db *db, int64_t instance_id,
		  int (*fn)(void *, const struct db_trash *), void *ctx)
{
	return db->ops->trash_each(db, instance_id, fn, ctx);
}

int db_trash_purge(struct db *db, int64_t instance_id, const char *name,
		   int64_t before_ns, int64_t *count)
{
	return db->ops->trash_purge(db, instance_id, name, before_ns, count);
}

int db_scrub(struct db *db)
{
	return db->ops->scrub(db);
}

int db_attr_get(struct db *db, int64_t secret_id, const char *name, void *buf,
		size_t size, size_t *len)
{
	return db->ops->attr_get(db, secret_id, name, buf, size, len);
}

int db_attr_set(struct db *db, int64_t secret_id, const char *name, const void *value,
		size_t len)
{
	return db->ops->attr_set(db, secret_id, name, value, len);
}

void db_set_auth(struct db *db, const struct db_auth *auth)
{
	db->ops->set_auth(db, auth);
}

int db_auth_upgrade(struct db *db)
{
	return db->ops->auth_upgrade(db);
}

int db_auth_rekey(struct db *db, const struct db_auth *next)
{
	return db->ops->auth_rekey(db, next);
}

int db_auth_check_all(struct db *db, void (*fn)(void *, const char *what), void *ctx)
{
	return db->ops->auth_check_all(db, fn, ctx);
}

int db_state_check(struct db *db, int64_t instance_id, int64_t *seq,
		   int (*fn)(void *, int64_t id, uint64_t version), void *ctx)
{
	return db->ops->state_check(db, instance_id, seq, fn, ctx);
}

int db_state_version(struct db *db, int64_t instance_id, int64_t id, int64_t *seq,
		     uint64_t *version)
{
	if (!db->ops->state_version)
		return -ENOENT;
	return db->ops->state_version(db, instance_id, id, seq, version);
}

int db_states_convert(struct db *db, bool readonly)
{
	return db->ops->states_convert ? db->ops->states_convert(db, readonly) : 0;
}

int db_audit_floor(struct db *db, int64_t *floor)
{
	return db->ops->audit_floor(db, floor);
}

int db_audit_entry_mac(struct db *db, int64_t seq, unsigned char *out, size_t len)
{
	return db->ops->audit_entry_mac(db, seq, out, len);
}

int db_backup(struct db *db, const char *path)
{
	return db->ops->backup(db, path);
}

int db_restore(struct db *db, const char *path)
{
	return db->ops->restore(db, path);
}








