/* A secret's life in the store: its old versions, its time in the trash
 * after a delete, and the rows that rotation re-seals. Sealed blobs only. */
#ifndef VAULTFS_DB_VERSIONS_H
#define VAULTFS_DB_VERSIONS_H

#include <stdbool.h>

#include "db.h"

/* An old value of a secret (the current one is the secret's own row). */
struct db_version {
	int64_t secret_id;
	uint64_t version;
	uint64_t size;
	uint32_t flags;
	int64_t mtime_ns;
	uid_t updated_by;
};

/* A deleted secret: its row left `secrets`, its last value is its newest
 * old version. */
struct db_trash {
	int64_t secret_id;
	int64_t instance_id;
	char name[DB_NAME_MAX + 1];
	uid_t uid;
	gid_t gid;
	mode_t mode;
	int64_t ctime_ns;
	int64_t deleted_ns;
	uid_t deleted_by;
	uint64_t version;	/* of its last value, 0 if it had none */
	uint64_t size;
};

/* The functions that change more than one row expect the caller's
 * transaction (db_begin), so that all of it happens or none. */

/* Copies the secret's current value into its old versions (not an empty
 * version 0 unless with_v0), then keeps only its `keep` newest. */
int db_version_archive(struct db *db, int64_t secret_id, bool with_v0, unsigned keep) WUR;
/* -ENOENT if there is no such old version. blob may be NULL. */
int db_version_get(struct db *db, int64_t secret_id, uint64_t version,
		   struct db_version *out, struct db_blob *blob) WUR;
/* Old versions of a secret, newest first; fn returns nonzero to stop. */
int db_version_each(struct db *db, int64_t secret_id,
		    int (*fn)(void *, const struct db_version *), void *ctx) WUR;
int db_version_set_blob(struct db *db, int64_t secret_id, uint64_t version,
			const struct db_blob *blob) WUR;
/* Secret `id` takes over the history, attributes and creation time of
 * `from_id` (its own old versions are dropped), and from_id's row goes: a
 * rename onto an existing key continues that key's history. */
int db_secret_adopt(struct db *db, int64_t id, int64_t from_id) WUR;

/* Moves a secret's row into the trash (archive its value first). */
int db_trash_put(struct db *db, const struct db_secret *s, int64_t now_ns, uid_t by) WUR;
/* The most recently deleted secret of that name deleted at or after
 * since_ns: -ENOENT if none. */
int db_trash_find(struct db *db, int64_t instance_id, const char *name, int64_t since_ns,
		  struct db_trash *out) WUR;
/* Puts a trashed secret back, its newest old version becoming its value:
 * -EEXIST if a secret of that name exists. */
int db_trash_restore(struct db *db, int64_t secret_id, int64_t now_ns) WUR;
/* Deleted secrets of an instance (all instances if 0), newest first. */
int db_trash_each(struct db *db, int64_t instance_id,
		  int (*fn)(void *, const struct db_trash *), void *ctx) WUR;
/* Erases trashed secrets, their old versions and attributes for good:
 * those of an instance (0: any), with a name (NULL: any), deleted before
 * before_ns. *count (may be NULL) is how many went. Their rows are
 * overwritten where the store can (SQLite: secure_delete); db_scrub, once
 * committed, removes the copies it keeps besides. */
int db_trash_purge(struct db *db, int64_t instance_id, const char *name, int64_t before_ns,
		   int64_t *count) WUR;

/* After a purge committed: removes the copies of deleted rows the store
 * still keeps where it can (SQLite: the older pages in its write-ahead
 * log). -EBUSY while a reader still holds an older snapshot: they go at a
 * later checkpoint then. Slow (a sync): for an explicit purge, not for
 * every delete. */
int db_scrub(struct db *db) WUR;

/* Every secret id of an instance, live (in id order) then trashed, with
 * the name its blobs are sealed for: what re-sealing an instance visits. */
int db_instance_secret_ids(struct db *db, int64_t instance_id,
			   int (*fn)(void *, int64_t id, const char *name, bool live),
			   void *ctx) WUR;
#endif
