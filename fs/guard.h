/* Where FUSE requests meet the access rules (access.h) and the audit log
 * (audit.h): ops.c calls these before and after the work. */
#ifndef VAULTFS_GUARD_H
#define VAULTFS_GUARD_H

#define FUSE_USE_VERSION 314

#include <stdint.h>
#include <sys/types.h>

#include "fuse_lib.h"

#include "../db/db.h"
#include "audit.h"

struct vault;

/* Who asked, and about what: kept on an open handle for its commit. */
struct guard_ref {
	struct audit_who who;
	char instance[DB_NAME_MAX + 1];
	char key[DB_NAME_MAX + 1];
};

/* Before an open: looks up the names, checks the stored mode bits of the
 * secret and its instance (the kernel checked cached ones), and applies the
 * read rules to an open that reads. 0, or -errno (a denial is recorded).
 * Hands back the row and its sealed value (for vault_read_fetched), so an
 * open queries the store once; blob must be freed whatever the result. */
int guard_open_fetch(fuse_req_t req, struct vault *v, int64_t secret_id, int flags,
		     struct guard_ref *ref, struct db_secret *s, struct db_blob *blob);
/* After it: records a reading open's outcome. */
void guard_opened(struct vault *v, const struct guard_ref *ref, int flags, int result);

/* Before a create: the instance's stored mode bits, the create rules and
 * max_mode for the new secret's mode. 0 or -errno (recorded). */
int guard_create(fuse_req_t req, struct vault *v, const struct db_instance *in,
		 const char *name, mode_t mode, struct guard_ref *ref);
/* Before unlink or rename: the instance's stored mode bits, the create
 * rules. */
int guard_change(fuse_req_t req, struct vault *v, int64_t instance_id, const char *name,
		 enum audit_op op, const char *detail, struct guard_ref *ref);
/* After guard_change, for each secret an unlink or rename removes or
 * replaces: in a sticky instance (mode 01000) only the secret's owner, the
 * instance's owner or root may. 0 or -EPERM (recorded). */
int guard_sticky(struct vault *v, int64_t instance_id, uid_t secret_owner,
		 const struct guard_ref *ref, enum audit_op op);
/* Before chmod, chown or truncate of an instance (secret_id 0) or a secret:
 * max_mode for a secret's new mode. */
int guard_setattr(fuse_req_t req, struct vault *v, int64_t instance_id, int64_t secret_id,
		  const struct stat *attr, int to_set, struct guard_ref *ref);
void guard_setattr_done(struct vault *v, const struct guard_ref *ref,
			const struct stat *attr, int to_set, int result);
/* For requests with nothing to decide (mkdir, rmdir). */
void guard_ref_init(fuse_req_t req, struct vault *v, struct guard_ref *ref,
		    const char *instance, const char *key);

/* The entry for a change on ref, to store with the change itself (see
 * audit_record_txn); the change's own success is its outcome. */
void guard_entry(const struct guard_ref *ref, enum audit_op op, const char *detail,
		 struct audit_entry *out);

/* Records the outcome of an operation on ref. */
void guard_done(struct vault *v, const struct guard_ref *ref, enum audit_op op, int result,
		const char *detail);

#endif
