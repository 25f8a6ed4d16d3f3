/* Inside db/ only: how a store plugs in behind db.h. Each store (SQLite in
 * sqlite*.c, PostgreSQL in pg*.c) fills a struct db_store_ops and makes
 * its own handle start with a struct db, whose ops it sets at open; the
 * functions of db.h, in db.c, pass each call on to db->ops. Every op keeps
 * the rules written in db.h and its companions (db_versions.h, db_attrs.h,
 * db_audit.h, db_backup.h) for the public function of the same name. */
#ifndef VAULTFS_STORE_H
#define VAULTFS_STORE_H

#include "db.h"
#include "db_attrs.h"
#include "db_audit.h"
#include "db_backup.h"
#include "db_versions.h"

/* The first member of each store's handle. */
struct db {
	const struct db_store_ops *ops;
};

/* An open flag for stores only: a handle for the audit log alone (its own
 * connection, for a writer that must not wait behind the filesystem's
 * queries): no schema work beyond checking the log's table is there. */
#define DB_LOG 0x1000

struct db_store_ops {
	const char *name;	/* "sqlite", "postgresql": for messages */

	/* Handle. open gets the spec as configured (a path, a URI). */
	int (*open)(struct db **out, const char *spec, int flags);
	void (*close)(struct db *db);
	const char *(*path)(struct db *db);
	int (*check_integrity)(struct db *db);
	/* No handle: the files the store keeps at spec (db_files). */
	int (*files)(const char *spec, int (*fn)(void *, const char *path, bool main),
		     void *ctx);

	/* Concurrency and transactions. */
	void (*set_readers)(struct db *db, unsigned max);
	void (*read_begin)(struct db *db);
	void (*read_end)(struct db *db);
	bool (*read_pinned)(struct db *db);
	int (*begin)(struct db *db, bool lazy);
	int (*commit)(struct db *db);
	void (*rollback)(struct db *db);
	int (*change_seq)(struct db *db, uint64_t *out);
	int (*tidy_caches)(struct db *db, bool idle);	/* NULL: keeps none */

	int (*meta_get)(struct db *db, const char *key, struct db_blob *out);
	int (*meta_set)(struct db *db, const char *key, const unsigned char *v, size_t len);

	/* Instances. */
	int (*instance_create)(struct db *db, struct db_instance *in,
			       const struct db_blob *wrapped_key);
	int (*instance_get)(struct db *db, int64_t id, struct db_instance *out);
	int (*instance_find)(struct db *db, const char *name, struct db_instance *out);
	int (*instance_key)(struct db *db, int64_t id, struct db_instance *in,
			    struct db_blob *wrapped);
	int (*instance_set_key)(struct db *db, int64_t id, uint64_t generation,
				const struct db_blob *wrapped);
	int (*instance_set_attr)(struct db *db, int64_t id, uid_t uid, gid_t gid,
				 mode_t mode, int64_t now_ns);
	int (*instance_delete)(struct db *db, int64_t id);
	int (*instance_each)(struct db *db, int64_t after_id,
			     int (*fn)(void *, const struct db_instance *), void *ctx);
	int64_t (*instance_count)(struct db *db);
	int (*instance_secret_ids)(struct db *db, int64_t instance_id,
				   int (*fn)(void *, int64_t id, const char *name, bool live),
				   void *ctx);

	/* Secrets. */
	int (*secret_get)(struct db *db, int64_t id, struct db_secret *out);
	int (*secret_find)(struct db *db, int64_t instance_id, const char *name,
			   struct db_secret *out);
	int (*secret_blob)(struct db *db, int64_t id, struct db_secret *meta,
			   struct db_blob *out);
	int (*secret_each)(struct db *db, int64_t instance_id, int64_t after_id,
			   int (*fn)(void *, const struct db_secret *), void *ctx);
	int64_t (*secret_count)(struct db *db, int64_t instance_id);
	/* as_id: with the reserved id s->id (db_secret_insert_as). */
	int (*secret_insert)(struct db *db, struct db_secret *s, const struct db_blob *blob,
			     bool as_id);
	int (*secret_id_reserve)(struct db *db, int64_t *id);
	int (*secret_set_value)(struct db *db, const struct db_secret *s,
				const struct db_blob *blob);
	int (*secret_set_attr)(struct db *db, int64_t id, uid_t uid, gid_t gid, mode_t mode,
			       int64_t now_ns);
	int (*secret_rename)(struct db *db, const struct db_secret *s,
			     const struct db_blob *blob);
	int (*secret_delete)(struct db *db, int64_t id);
	int (*secret_adopt)(struct db *db, int64_t id, int64_t from_id);

	/* History: old versions and the trash (db_versions.h). */
	int (*version_archive)(struct db *db, int64_t secret_id, bool with_v0, unsigned keep);
	int (*version_get)(struct db *db, int64_t secret_id, uint64_t version,
			   struct db_version *out, struct db_blob *blob);
	int (*version_each)(struct db *db, int64_t secret_id,
			    int (*fn)(void *, const struct db_version *), void *ctx);
	int (*version_set_blob)(struct db *db, int64_t secret_id, uint64_t version,
				const struct db_blob *blob);
	int (*trash_put)(struct db *db, const struct db_secret *s, int64_t now_ns, uid_t by);
	int (*trash_find)(struct db *db, int64_t instance_id, const char *name,
			  int64_t since_ns, struct db_trash *out);
	int (*trash_restore)(struct db *db, int64_t secret_id, int64_t now_ns);
	int (*trash_each)(struct db *db, int64_t instance_id,
			  int (*fn)(void *, const struct db_trash *), void *ctx);
	int (*trash_purge)(struct db *db, int64_t instance_id, const char *name,
			   int64_t before_ns, int64_t *count);
	int (*scrub)(struct db *db);

	/* Descriptive attributes (db_attrs.h); len 0 removes. */
	int (*attr_get)(struct db *db, int64_t secret_id, const char *name, void *buf,
			size_t size, size_t *len);
	int (*attr_set)(struct db *db, int64_t secret_id, const char *name,
			const void *value, size_t len);

	/* Row tags and instance state. */
	void (*set_auth)(struct db *db, const struct db_auth *auth);
	int (*auth_upgrade)(struct db *db);
	int (*auth_rekey)(struct db *db, const struct db_auth *next);
	int (*auth_check_all)(struct db *db, void (*fn)(void *, const char *what), void *ctx);
	int (*instance_seq)(struct db *db, int64_t instance_id, bool latest, int64_t *seq);
	int (*state_check)(struct db *db, int64_t instance_id, int64_t *seq,
			   int (*fn)(void *, int64_t id, uint64_t version), void *ctx);
	/* May be NULL: a store that never kept states another way. */
	int (*states_convert)(struct db *db, bool readonly);
	/* May be NULL: then db_state_version is always -ENOENT. */
	int (*state_version)(struct db *db, int64_t instance_id, int64_t id, int64_t *seq,
			     uint64_t *version);
	int (*audit_floor)(struct db *db, int64_t *floor);
	int (*audit_entry_mac)(struct db *db, int64_t seq, unsigned char *out, size_t len);

	/* Copies (db_backup.h): the file is always a SQLite vault. */
	int (*backup)(struct db *db, const char *file);
	int (*restore)(struct db *db, const char *file);

	/* The audit log (db_audit.h, whose functions db_audit.c builds on
	 * these): its rows, on the store's handle or on one opened with
	 * DB_LOG. Its transactions are begin, commit and rollback; its meta
	 * is meta_get, meta_set and meta_add. */
	int (*audit_insert)(struct db *db, const struct db_audit_row *row);
	/* The last row older than before_ns (INT64_MAX: the last). */
	int (*audit_last)(struct db *db, int64_t before_ns, struct db_audit_row *out);
	int (*audit_delete_upto)(struct db *db, int64_t seq);
	int (*audit_each)(struct db *db, const struct db_audit_filter *f,
			  int (*fn)(void *, const struct db_audit_row *), void *ctx);
	int (*audit_tidy)(struct db *db);
	/* A meta value unless the key exists: -EEXIST then. */
	int (*meta_add)(struct db *db, const char *key, const unsigned char *v, size_t len);
	/* A read transaction on the handle's own connection for the calling
	 * thread (others wait until its end): every read until snapshot_end
	 * sees one committed state. For the audit log's verification. */
	int (*snapshot_begin)(struct db *db);
	void (*snapshot_end)(struct db *db);
};

extern const struct db_store_ops db_sqlite_ops;	/* sqlite.c */
extern const struct db_store_ops db_pg_ops;	/* pg.c */

/* The store that serves spec: PostgreSQL for a postgresql:// or
 * postgres:// URI, SQLite for anything else (a path). */
const struct db_store_ops *db_store_for(const char *spec);

/* The calling thread's last error, which db_errmsg() returns: every store
 * writes it here (printf-style). */
void db_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
