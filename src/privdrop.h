/* Running the daemon as `user = NAME`: it mounts as root, then becomes that
 * user for good. */
#ifndef VAULTFS_PRIVDROP_H
#define VAULTFS_PRIVDROP_H

#include <stddef.h>

#include "../fs/vault_conf.h"

/* Before the vault is opened, as root: checks the database belongs to the
 * user, and raises RLIMIT_MEMLOCK to cover memlock_budget. 0, or -1 with a
 * message in err. Nothing to do without `user`. */
int priv_check(const struct vault_conf *c, char *err, size_t errlen);
/* Just before mounting: makes the user the real uid and gid, so the mount
 * records it as owner and fusermount3 lets it unmount on SIGTERM. */
int priv_prepare(const struct vault_conf *c, char *err, size_t errlen);
/* Once mounted: drops groups, gid and uid for good (no capability is left)
 * and checks root can't be regained. */
int priv_drop(const struct vault_conf *c, char *err, size_t errlen);

#endif
