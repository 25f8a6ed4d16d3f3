/* Extended attributes of secret files: user.description and user.type
 * (set by the owner), user.vaultfs.version, .created, .updated and
 * .updated_by (read-only). */
#ifndef VAULTFS_XATTR_H
#define VAULTFS_XATTR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "meta.h"

/* Large enough for any value and for the list of names. */
#define XATTR_BUF_MAX (META_DESCRIPTION_MAX + 1)

struct vault;

/* The value's length in buf, or -errno: -ENODATA when unset or unknown. */
int xattr_get(struct vault *v, int64_t secret_id, const char *name,
	      char buf[static XATTR_BUF_MAX]);
/* The NUL-separated names, their total length. */
int xattr_list(struct vault *v, int64_t secret_id, char buf[static XATTR_BUF_MAX]);
/* As caller: only the secret's owner or root may; -EPERM for read-only
 * names and others' secrets, -ENOTSUP for names we don't keep, -E2BIG or
 * -EINVAL for a value that doesn't pass, -EEXIST/-ENODATA for
 * XATTR_CREATE/XATTR_REPLACE. */
int xattr_set(struct vault *v, int64_t secret_id, const char *name, const void *value,
	      size_t len, int flags, uid_t caller);
int xattr_remove(struct vault *v, int64_t secret_id, const char *name, uid_t caller);

#endif
