/* Settings that shape the vault: defaults and the per-instance list. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

void policy_defaults(struct vault_conf *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->db, sizeof(c->db), "%s", "/var/lib/vaultfs/vault.db");
	snprintf(c->mountpoint, sizeof(c->mountpoint), "%s", "/run/vault");
	c->max_value_size = POLICY_MAX_VALUE_DEFAULT;
	c->newline = NL_STRIP_SINGLE_LINE;
	c->secret_mode = 0600;
	c->allow_unlocked_memory = false;
	c->memlock_budget = 0;
	c->user_memlock = POLICY_USER_MEMLOCK_DEFAULT;
	c->user_handles = POLICY_USER_HANDLES_DEFAULT;
	c->attr_timeout = 1.0;
	c->versions = POLICY_VERSIONS_DEFAULT;
	c->undelete_window = POLICY_UNDELETE_DEFAULT;
	c->instances = NULL;
	c->access.max_mode = 0777;
	c->access.root_read = true;
	c->daemon.audit = true;
	c->daemon.audit_syslog = true;
	c->daemon.audit_fold = 2;
	snprintf(c->daemon.syslog_socket, sizeof(c->daemon.syslog_socket), "%s", "/dev/log");
}

const struct instance_conf *policy_instance(const struct vault_conf *c, const char *name)
{
	const struct instance_conf *i;

	if (!name)
		return NULL;
	for (i = c->instances; i; i = i->next)
		if (!strcmp(i->name, name))
			return i;
	return NULL;
}

void policy_free(struct vault_conf *c)
{
	struct instance_conf *i, *next;

	for (i = c->instances; i; i = next) {
		next = i->next;
		free(i->expect);
		for (struct hook_conf *h = i->hooks, *hn; h; h = hn) {
			hn = h->next;
			free(h->command);
			free(h);
		}
		free(i);
	}
	c->instances = NULL;
}
