/* on_change hooks: commands the mount runs after committed changes. */
#ifndef VAULTFS_HOOKS_H
#define VAULTFS_HOOKS_H

struct vault;

/* Starts following the store for the instances of the config that have
 * hooks (nothing to do without one). 0 or -errno (logged). */
int hooks_start(struct vault *v) __attribute__((warn_unused_result));
/* Stops: a hook still running is left to finish within its timeout, in
 * its own process group, and is not waited for. */
void hooks_stop(void);

#endif
