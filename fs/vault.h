/* The vault: the store plus the keys that open it. Used by the filesystem
 * and by the CLI, so both read and write values the same way. */
#ifndef VAULTFS_VAULT_H
#define VAULTFS_VAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../crypto/secmem.h"
#include "../db/db.h"
#include "vault_conf.h"

struct vault;
struct audit;
struct audit_entry;

enum {
	VAULT_READONLY = 0x1,
	VAULT_BRIEF = 0x2,	/* a command that reads or writes a few secrets: DB_BRIEF */
};

/* Creates a new vault file; refuses one that exists. */
int vault_init(const char *db_path, const struct secbuf *master,
	       char *err, size_t errlen) WUR;
/* Opens and checks the master key: -EKEYREJECTED when it is the wrong one.
 * The vault keeps its own copy of the derived keys, not the master key. */
int vault_open(struct vault **out, const struct vault_conf *conf,
	       const struct secbuf *master, int flags, char *err, size_t errlen) WUR;
void vault_close(struct vault *v);
struct db *vault_db(struct vault *v);
const struct vault_conf *vault_conf(struct vault *v);
/* The audit log's key, derived from the master key at open. */
const struct secbuf *vault_audit_key(struct vault *v);
/* The audit log that records authentication failures (NULL: none). */
void vault_set_audit(struct vault *v, struct audit *a);
struct audit *vault_audit(struct vault *v);
/* An instance's name without a query, from the cache of unwrapped data
 * keys (names never change); false if its key is not cached. */
bool vault_instance_name_cached(struct vault *v, int64_t id, char name[static DB_NAME_MAX + 1]);

/* Creates the instances named in the config and applies their owner, group
 * and mode. */
int vault_apply_config(struct vault *v, char *err, size_t errlen) WUR;
int vault_instance_create(struct vault *v, const char *name, uid_t uid, gid_t gid,
			  mode_t mode, struct db_instance *out) WUR;
int vault_instance_delete(struct vault *v, int64_t id) WUR;
/* Mode for a new secret in an instance, given the mode asked for. */
mode_t vault_secret_mode(struct vault *v, const char *instance, mode_t asked);

/* Decrypts the current value. -EIO when it fails to authenticate (logged,
 * without the value). meta may be NULL. */
int vault_read(struct vault *v, int64_t secret_id, struct secbuf **out,
	       struct db_secret *meta) WUR;
/* vault_read for a value already fetched with db_secret_blob (meta m). */
int vault_read_fetched(struct vault *v, const struct db_secret *m, const struct db_blob *blob,
		       struct secbuf **out) WUR;
/* Decrypts a version, current or old: -ENOENT if it is not kept. */
struct db_version;
int vault_read_version(struct vault *v, int64_t secret_id, uint64_t version,
		       struct secbuf **out, struct db_version *meta) WUR;
/* The calls below that take an audit_entry store it (see
 * audit_record_txn) in the change's own transaction: NULL for none. */

/* An id for a secret vault_create_as makes later (a file created through
 * the mount is its creator's alone until its first commit). */
int vault_create_reserve(struct vault *v, int64_t *id) WUR;
/* Makes the secret s names (instance_id, name, uid, gid, mode; ctime, 0:
 * now; id from vault_create_reserve, 0: a new one), in one transaction with
 * the audit entries of its creation and of its first value: empty at
 * version 0 (which no history keeps) when pt is NULL, not synced unless
 * sync; else pt's len bytes under the newline policy as version 1, synced.
 * -EEXIST if the name or the id is taken, -EFBIG over the size limit. *s
 * is then the row as stored. */
int vault_create_as(struct vault *v, struct db_secret *s, const unsigned char *pt, size_t len,
		    uid_t by, bool sync, const struct audit_entry *created,
		    const struct audit_entry *wrote) WUR;
/* Seals and stores a new version of a secret in one transaction, applying the
 * newline policy and keeping the value it replaces as an old version (the
 * config's `versions` says how many); -EFBIG over the size limit, -ENOENT if
 * it is gone. */
int vault_update(struct vault *v, int64_t secret_id, const unsigned char *pt,
		 size_t len, uid_t by, struct db_secret *out) WUR;
/* The same for successive commits of one open file: *version is the
 * version its last commit made (0: none yet); while that is still the
 * current one, it is replaced instead of kept in the history. Updated to
 * the version this commit made. */
int vault_update_amend(struct vault *v, int64_t secret_id, const unsigned char *pt,
		       size_t len, uid_t by, uint64_t *version,
		       const struct audit_entry *audit) WUR;
/* Update or create by name (the CLI's set). */
int vault_put(struct vault *v, int64_t instance_id, const char *name,
	      const unsigned char *pt, size_t len, uid_t uid, gid_t gid,
	      struct db_secret *out) WUR;
/* The same, only if the current version is if_version (a missing key counts
 * as version 0; -1: any): -ESTALE otherwise, with out->version the current
 * one. */
int vault_put_if(struct vault *v, int64_t instance_id, const char *name,
		 const unsigned char *pt, size_t len, uid_t uid, gid_t gid,
		 int64_t if_version, struct db_secret *out,
		 const struct audit_entry *audit) WUR;
/* Puts n values in one transaction: all or none. On failure *at (may be
 * NULL) is the index of the value that failed (n: the commit did). */
int vault_put_many(struct vault *v, int64_t instance_id, size_t n, const char *const *names,
		   struct secbuf *const *values, uid_t uid, gid_t gid, size_t *at) WUR;
/* Renames within the instance, atomically replacing `newname` if it exists
 * (unless noreplace: -EEXIST). The history goes with the name; replacing
 * an existing key continues its history if `by` owns it or is root, else
 * the replaced key goes to the trash with its history. */
int vault_rename(struct vault *v, int64_t secret_id, const char *newname,
		 bool noreplace, uid_t by, int64_t *replaced_id) WUR;
/* Moves a secret to the trash (undelete_window), or erases it if there is
 * no window; `by` is who deleted it. */
int vault_delete(struct vault *v, int64_t secret_id, uid_t by,
		 const struct audit_entry *audit) WUR;

/* Makes an old version current again, as a new version: -EALREADY if it
 * is the current one, -ENOENT if it is not kept. */
int vault_rollback(struct vault *v, int64_t secret_id, uint64_t version, uid_t by,
		   struct db_secret *out) WUR;
/* Brings back the most recently deleted secret of that name, if it was
 * deleted within the undelete window: -ENOENT if none, -EEXIST if a
 * secret of that name exists. */
int vault_undelete(struct vault *v, int64_t instance_id, const char *name,
		   struct db_secret *out) WUR;
/* Erases deleted secrets of that name (NULL: every deleted secret of the
 * instance; instance 0: of every instance) with their history, for good. */
int vault_purge(struct vault *v, int64_t instance_id, const char *name, int64_t *count) WUR;

/* Re-reads the master key from its source (the key file, or the systemd
 * credential) and, if it opens the vault, uses it from now on; the cached
 * data keys are dropped either way while the key in use still opens the
 * vault. -EKEYREJECTED if the source holds a key that does not open it. */
int vault_reload_key(struct vault *v, char *err, size_t errlen) WUR;
/* Called with each instance (and, for an instance rotation, each secret)
 * done, inside the transaction. */
typedef void (*vault_progress_fn)(void *ctx, const char *instance, const char *key);
/* Re-wraps every data key and the check value for a new master key, in one
 * transaction; afterwards the old key opens nothing. */
int vault_rotate_master(struct vault *v, const struct secbuf *new_master,
			vault_progress_fn progress, void *ctx, char *err, size_t errlen) WUR;
/* A new data key for one instance (generation + 1): every value, old
 * version and deleted secret is re-sealed with it, in one transaction. */
int vault_rotate_instance(struct vault *v, int64_t instance_id, vault_progress_fn progress,
			  void *ctx, char *err, size_t errlen) WUR;
/* Inside a transaction of src: checks every row of src under its tag key
 * and tags it with dst's (a restore of src into dst). */
int vault_retag_for(struct vault *src, struct vault *dst) WUR;
/* Checks every row's tag, then opens every data key and value, current
 * and old: 0, or -EIO with the first failure named in err. */
int vault_verify(struct vault *v, char *err, size_t errlen) WUR;

/* The store as the commands see it (vault_store.c); nothing here opens a
 * value. Look-ups: -ENOENT if there is none. Listings call fn in id order
 * (versions and the trash: newest first); fn returns nonzero to stop. */
int vault_instance_find(struct vault *v, const char *name, struct db_instance *out) WUR;
int vault_instance_each(struct vault *v, int (*fn)(void *, const struct db_instance *),
			void *ctx) WUR;
int vault_secret_find(struct vault *v, int64_t instance_id, const char *name,
		      struct db_secret *out) WUR;
int vault_secret_each(struct vault *v, int64_t instance_id,
		      int (*fn)(void *, const struct db_secret *), void *ctx) WUR;
int64_t vault_secret_count(struct vault *v, int64_t instance_id);
struct db_trash;
int vault_version_each(struct vault *v, int64_t secret_id,
		       int (*fn)(void *, const struct db_version *), void *ctx) WUR;
/* Deleted secrets of an instance (0: of every instance). */
int vault_trash_each(struct vault *v, int64_t instance_id,
		     int (*fn)(void *, const struct db_trash *), void *ctx) WUR;
/* The audit log on the vault's own connection, so a change and its entry
 * are one transaction (audit_record_txn). */
struct daemon_conf;
int vault_audit_open(struct vault *v, const struct daemon_conf *conf, struct audit **out) WUR;
/* How far the log had reached at the vault's last write (tagged). */
int vault_audit_floor(struct vault *v, int64_t *floor) WUR;
/* The stored MAC of audit entry seq (its first len bytes). */
int vault_audit_entry_mac(struct vault *v, int64_t seq, unsigned char *out, size_t len) WUR;
/* The store's own check of its file: 0, or the problem in err. */
int vault_store_check(struct vault *v, char *err, size_t errlen) WUR;
/* Calls bad with each row whose tag fails: 0, or -EIO if any did. */
int vault_rows_check(struct vault *v, void (*bad)(void *, const char *what), void *ctx) WUR;
/* -EIO if an instance's live secrets are not the versions its state records. */
int vault_instance_state_check(struct vault *v, int64_t instance_id) WUR;
/* vault_retag_for in a transaction of its own: err has the store's words. */
int vault_retag_into(struct vault *v, struct vault *into, char *err, size_t errlen) WUR;
/* A consistent copy of the vault's file at path; the vault's file
 * replaced by the one at path (see db_backup.h). */
int vault_backup(struct vault *v, const char *path) WUR;
int vault_restore(struct vault *v, const char *path) WUR;

#endif
