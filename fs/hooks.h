/* on_change hooks: commands the mount runs after committed changes. */
#ifndef VAULTFS_HOOKS_H
#define VAULTFS_HOOKS_H

#include <stdint.h>

struct vault;

/* Starts following the store for the instances of the config that have
 * hooks (nothing to do without one). Only a mount of the whole vault runs
 * them (only_instance 0): the one-instance mounts beside it for
 * containers would run each hook again. 0 or -errno (logged). */
int hooks_start(struct vault *v, int64_t only_instance) WUR;
/* Stops: a hook still running is left to finish within its timeout, in
 * its own process group, and is not waited for. */
void hooks_stop(void);

#endif
