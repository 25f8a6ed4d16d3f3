/* The on_change settings of an instance section (see fs/hooks.c). */
#ifndef VAULTFS_CONFIG_HOOKS_H
#define VAULTFS_CONFIG_HOOKS_H

#include <stddef.h>

#include "../fs/vault_conf.h"

/* 1 if key is not a hook setting; 0 when set; -errno with the reason
 * (without file and line) in msg. */
int config_hook_set(struct instance_conf *in, const char *key, const char *value, char *msg,
		    size_t len) WUR;

#endif
