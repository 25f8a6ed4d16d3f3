/* on_change = COMMAND, on_change.KEY = COMMAND, on_change_user = USER and
 * on_change_timeout = SECONDS in an instance's section. The config file is
 * root's (or the daemon user's: config.c refuses any other), so whoever
 * may write it may already decide who reads what; a hook runs as
 * on_change_user, nobody unless set (a daemon that gave up root: its own
 * user), never root unless named. */
#include <errno.h>
#include <math.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fs/name.h"
#include "config_hooks.h"

#define HOOK_PREFIX "on_change"
#define HOOK_TIMEOUT_MAX 3600.0

static int hook_add(struct instance_conf *in, const char *key, const char *cmd, char *msg,
		    size_t len)
{
	struct hook_conf *h, **tail = &in->hooks;

	if (!*cmd) {
		snprintf(msg, len, "empty command for %s%s%s", HOOK_PREFIX, *key ? "." : "", key);
		return -EINVAL;
	}
	for (h = in->hooks; h; h = h->next, tail = &(*tail)->next)
		if (!strcmp(h->key, key)) {
			snprintf(msg, len, "a second %s%s%s in [%s]", HOOK_PREFIX,
				 *key ? "." : "", key, in->name);
			return -EINVAL;
		}
	h = calloc(1, sizeof(*h));
	if (!h || !(h->command = strdup(cmd))) {
		free(h);
		snprintf(msg, len, "out of memory");
		return -ENOMEM;
	}
	snprintf(h->key, sizeof(h->key), "%s", key);
	*tail = h;
	return 0;
}

static int hook_user(struct instance_conf *in, const char *v, char *msg, size_t len)
{
	struct passwd *pw = getpwnam(v);

	if (in->has_hook_user) {
		snprintf(msg, len, "a second on_change_user in [%s]", in->name);
		return -EINVAL;
	}
	if (!pw) {
		snprintf(msg, len, "unknown user '%s' for on_change_user", v);
		return -EINVAL;
	}
	in->has_hook_user = true;
	in->hook_uid = pw->pw_uid;
	in->hook_gid = pw->pw_gid;
	return 0;
}

static int hook_timeout(struct instance_conf *in, const char *v, char *msg, size_t len)
{
	char *end;
	double t = strtod(v, &end);

	if (in->hook_timeout > 0) {
		snprintf(msg, len, "a second on_change_timeout in [%s]", in->name);
		return -EINVAL;
	}
	if (!*v || *end || !isfinite(t) || t < 0.1 || t > HOOK_TIMEOUT_MAX) {
		snprintf(msg, len, "bad value '%s' for on_change_timeout (want seconds from "
			 "0.1 to %.0f)", v, HOOK_TIMEOUT_MAX);
		return -EINVAL;
	}
	in->hook_timeout = t;
	return 0;
}

int config_hook_set(struct instance_conf *in, const char *key, const char *value, char *msg,
		    size_t len)
{
	const char *k;

	if (strncmp(key, HOOK_PREFIX, strlen(HOOK_PREFIX)))
		return 1;
	k = key + strlen(HOOK_PREFIX);
	if (!*k)
		return hook_add(in, "", value, msg, len);
	if (!strcmp(k, "_user"))
		return hook_user(in, value, msg, len);
	if (!strcmp(k, "_timeout"))
		return hook_timeout(in, value, msg, len);
	if (*k != '.')
		return 1;
	k++;
	if (!*k || strlen(k) > NAME_MAX_LEN || !name_valid_len(k, strlen(k))) {
		snprintf(msg, len, "bad key name '%s' in %s (want %s.KEY, KEY of A-Z a-z 0-9 "
			 ". _ -)", k, key, HOOK_PREFIX);
		return -EINVAL;
	}
	return hook_add(in, k, value, msg, len);
}
