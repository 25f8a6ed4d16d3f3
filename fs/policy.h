/* The settings' defaults and the per-instance lookup (the settings
 * themselves: vault_conf.h). */
#ifndef VAULTFS_POLICY_H
#define VAULTFS_POLICY_H

#include "vault_conf.h"

void policy_defaults(struct vault_conf *c);
const struct instance_conf *policy_instance(const struct vault_conf *c,
					    const char *name);
void policy_free(struct vault_conf *c);

#endif
