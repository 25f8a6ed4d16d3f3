/* The vault: the store plus the keys that open it. Used by the filesystem
 * and by the CLI, so both read and write values the same way. */
#ifndef VAULTFS_VAULT_H
#define VAULTFS_VAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../crypto/secmem.h"
#include "../db/db.h"
#include "policy.h"

struct vault;
struct audit;

enum {
	VAULT_READONLY = 0x1,
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
/* A new, empty secret: -EEXIST if the name is taken. */
int vault_create(struct vault *v, int64_t instance_id, const char *name, uid_t uid,
		 gid_t gid, mode_t mode, struct db_secret *out) WUR;
/* Seals and stores a new version of a secret in one transaction, applying the
 * newline policy; -EFBIG over the size limit, -ENOENT if it is gone. */
int vault_update(struct vault *v, int64_t secret_id, const unsigned char *pt,
		 size_t len, uid_t by, struct db_secret *out) WUR;
/* Update or create by name (the CLI's set). */
int vault_put(struct vault *v, int64_t instance_id, const char *name,
	      const unsigned char *pt, size_t len, uid_t uid, gid_t gid,
	      struct db_secret *out) WUR;
/* Renames within the instance, atomically replacing `newname` if it exists
 * (unless noreplace: -EEXIST). */
int vault_rename(struct vault *v, int64_t secret_id, const char *newname,
		 bool noreplace, int64_t *replaced_id) WUR;
int vault_delete(struct vault *v, int64_t secret_id) WUR;

#endif
