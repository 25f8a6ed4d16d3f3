/* Each setting of the configuration file: one function per key of [vault]
 * and of an instance's section, and the two tables config.c looks keys up
 * in. A setter parses its value, stores it in the vault_conf, and reports
 * a bad one through cfg_fail() with the key and the value. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../fs/name.h"
#include "config_int.h"

static int cfg_path(struct cfg_state *st, const char *key, const char *v, char *dst,
		    size_t size)
{
	if (v[0] != '/')
		return cfg_fail(st, -EINVAL, "bad path '%s' for %s (want an absolute path)",
				v, key);
	if (strlen(v) >= size)
		return cfg_fail(st, -EINVAL, "path too long for %s", key);
	memcpy(dst, v, strlen(v) + 1);
	return 0;
}

static int cfg_mode(struct cfg_state *st, const char *key, const char *v, mode_t *out)
{
	if (config_parse_mode(v, out))
		return cfg_fail(st, -EINVAL, "bad mode '%s' for %s (want octal like 0640)",
				v, key);
	return 0;
}

static int cfg_newline(struct cfg_state *st, const char *key, const char *v,
		       enum nl_policy *out)
{
	if (cfg_parse_newline(v, out))
		return cfg_fail(st, -EINVAL, "bad value '%s' for %s (want strip or keep)",
				v, key);
	return 0;
}

static int cfg_vault_db(struct cfg_state *st, const char *key, const char *v)
{
	return cfg_path(st, key, v, st->c->db, sizeof(st->c->db));
}

static int cfg_vault_key_file(struct cfg_state *st, const char *key, const char *v)
{
	return cfg_path(st, key, v, st->c->key_file, sizeof(st->c->key_file));
}

static int cfg_vault_mountpoint(struct cfg_state *st, const char *key, const char *v)
{
	return cfg_path(st, key, v, st->c->mountpoint, sizeof(st->c->mountpoint));
}

static int cfg_vault_max_value_size(struct cfg_state *st, const char *key, const char *v)
{
	size_t n;

	if (config_parse_size(v, &n) || n < 1 || n > POLICY_MAX_VALUE_LIMIT)
		return cfg_fail(st, -EINVAL, "bad size '%s' for %s (want 1 to %dM bytes, "
				"with an optional K, M or G)", v, key,
				POLICY_MAX_VALUE_LIMIT >> 20);
	st->c->max_value_size = n;
	return 0;
}

static int cfg_vault_newline(struct cfg_state *st, const char *key, const char *v)
{
	return cfg_newline(st, key, v, &st->c->newline);
}

static int cfg_vault_secret_mode(struct cfg_state *st, const char *key, const char *v)
{
	return cfg_mode(st, key, v, &st->c->secret_mode);
}

static int cfg_vault_unlocked(struct cfg_state *st, const char *key, const char *v)
{
	if (cfg_parse_bool(v, &st->c->allow_unlocked_memory))
		return cfg_fail(st, -EINVAL, "bad value '%s' for %s (want yes or no)", v, key);
	return 0;
}

static int cfg_vault_memlock_budget(struct cfg_state *st, const char *key, const char *v)
{
	if (config_parse_size(v, &st->c->memlock_budget))
		return cfg_fail(st, -EINVAL, "bad size '%s' for %s (want bytes, with an "
				"optional K, M or G)", v, key);
	return 0;
}

static int cfg_vault_memlock_reserve(struct cfg_state *st, const char *key, const char *v)
{
	if (config_parse_size(v, &st->c->memlock_reserve))
		return cfg_fail(st, -EINVAL, "bad size '%s' for %s (want bytes, with an "
				"optional K, M or G)", v, key);
	st->c->has_memlock_reserve = true;
	return 0;
}

static int cfg_vault_user_memlock(struct cfg_state *st, const char *key, const char *v)
{
	if (config_parse_size(v, &st->c->user_memlock))
		return cfg_fail(st, -EINVAL, "bad size '%s' for %s (want bytes, with an "
				"optional K, M or G; 0 for no limit)", v, key);
	return 0;
}

static int cfg_vault_user_handles(struct cfg_state *st, const char *key, const char *v)
{
	uint64_t n;

	if (cfg_parse_u64(v, &n) || n > 1000000)
		return cfg_fail(st, -EINVAL, "bad value '%s' for %s (want 0 to 1000000 open "
				"files per user; 0 for no limit)", v, key);
	st->c->user_handles = (unsigned)n;
	return 0;
}

static int cfg_vault_attr_timeout(struct cfg_state *st, const char *key, const char *v)
{
	if (cfg_parse_seconds(v, &st->c->attr_timeout))
		return cfg_fail(st, -EINVAL, "bad value '%s' for %s (want seconds from 0 "
				"to %.0f)", v, key, CFG_MAX_TIMEOUT);
	return 0;
}

/* A user or a group by name or number (below (uid_t)-1): -ENOENT for an
 * unknown name, -ERANGE for a number out of range. */
static int cfg_lookup_id(const char *s, bool group, uint32_t *out)
{
	struct passwd *pw;
	struct group *gr;
	uint64_t id;
	int r = cfg_parse_u64(s, &id);

	if (r == 0 && id < (uid_t)-1)
		*out = (uint32_t)id;
	else if (r != -EINVAL)
		return -ERANGE;
	else if (group && (gr = getgrnam(s)))
		*out = gr->gr_gid;
	else if (!group && (pw = getpwnam(s)))
		*out = pw->pw_uid;
	else
		return -ENOENT;
	return 0;
}

/* The same for a setting ("for KEY") or an item of a list ("in KEY"): a
 * name that does not resolve, or a bad number, is the setting's error. */
static int cfg_id(struct cfg_state *st, const char *key, const char *s, bool group,
		  const char *where, uint32_t *out)
{
	int r = cfg_lookup_id(s, group, out);

	if (r == -ENOENT)
		return cfg_fail(st, -EINVAL, "unknown %s '%s' %s %s", group ? "group" : "user",
				s, where, key);
	if (r < 0)
		return cfg_fail(st, -EINVAL, "bad %s '%s' %s %s", group ? "gid" : "uid", s,
				where, key);
	return 0;
}

static int cfg_inst_owner(struct cfg_state *st, const char *key, const char *v)
{
	uint32_t id;
	int r = cfg_id(st, key, v, false, "for", &id);

	if (r == 0) {
		st->inst->owner = (uid_t)id;
		st->inst->has_owner = true;
	}
	return r;
}

static int cfg_inst_group(struct cfg_state *st, const char *key, const char *v)
{
	uint32_t id;
	int r = cfg_id(st, key, v, true, "for", &id);

	if (r == 0) {
		st->inst->group = (gid_t)id;
		st->inst->has_group = true;
	}
	return r;
}

/* An instance's mode may also have the sticky bit: 1770, 1777. */
static int cfg_inst_mode(struct cfg_state *st, const char *key, const char *v)
{
	bool sticky = strlen(v) == 4 && v[0] == '1';

	if (config_parse_mode(sticky ? v + 1 : v, &st->inst->mode))
		return cfg_fail(st, -EINVAL, "bad mode '%s' for %s (want octal like 0750, "
				"or 1770 with the sticky bit)", v, key);
	if (sticky)
		st->inst->mode |= S_ISVTX;
	st->inst->has_mode = true;
	return 0;
}

static int cfg_inst_secret_mode(struct cfg_state *st, const char *key, const char *v)
{
	if (cfg_mode(st, key, v, &st->inst->secret_mode))
		return st->ret;
	st->inst->has_secret_mode = true;
	return 0;
}

static int cfg_inst_newline(struct cfg_state *st, const char *key, const char *v)
{
	if (cfg_newline(st, key, v, &st->inst->newline))
		return st->ret;
	st->inst->has_newline = true;
	return 0;
}

static int cfg_vault_versions(struct cfg_state *st, const char *key, const char *v)
{
	uint64_t n;

	if (cfg_parse_u64(v, &n) || n < 1 || n > POLICY_VERSIONS_MAX)
		return cfg_fail(st, -EINVAL, "bad value '%s' for %s (want 1 to %d: how many "
				"values of a secret are kept, the current one included)", v, key,
				POLICY_VERSIONS_MAX);
	st->c->versions = (unsigned)n;
	return 0;
}

static int cfg_vault_undelete_window(struct cfg_state *st, const char *key, const char *v)
{
	if (config_parse_duration(v, &st->c->undelete_window))
		return cfg_fail(st, -EINVAL, "bad duration '%s' for %s (want seconds, or a "
				"number with s, m, h or d, like 7d; 0 makes deletes final)",
				v, key);
	return 0;
}

/* Access rules, the daemon's user and its audit log. A list is names or
 * numbers separated by commas or spaces; every name must resolve now, so a
 * typo is an error at load time, never a rule that silently matches no
 * one. */

/* Calls fn for each item of a comma or space separated list. */
static int cfg_each_item(struct cfg_state *st, const char *key, const char *v,
			 int (*fn)(struct cfg_state *, const char *, const char *, void *),
			 void *ctx)
{
	char item[POLICY_UNIT_LEN + 1];
	unsigned n = 0;
	size_t len;

	for (const char *p = v; *p;) {
		p += strspn(p, ", \t");
		len = strcspn(p, ", \t");
		if (!len)
			break;
		if (len >= sizeof(item))
			return cfg_fail(st, -EINVAL, "item too long in %s", key);
		memcpy(item, p, len);
		item[len] = '\0';
		if (fn(st, key, item, ctx))
			return st->ret;
		p += len;
		n++;
	}
	if (!n)
		return cfg_fail(st, -EINVAL, "empty list for %s (leave the setting out "
				"for no rule)", key);
	return 0;
}

static int cfg_id_add(struct cfg_state *st, const char *key, struct id_list *l,
		      uint32_t id)
{
	for (unsigned i = 0; i < l->n; i++)
		if (l->id[i] == id)
			return 0;
	if (l->n == POLICY_MAX_IDS)
		return cfg_fail(st, -EINVAL, "too many entries in %s (limit %d)", key,
				POLICY_MAX_IDS);
	l->id[l->n++] = id;
	return 0;
}

static int cfg_user_item(struct cfg_state *st, const char *key, const char *item, void *ctx)
{
	uint32_t id;

	if (cfg_id(st, key, item, false, "in", &id))
		return st->ret;
	return cfg_id_add(st, key, ctx, id);
}

static int cfg_group_item(struct cfg_state *st, const char *key, const char *item, void *ctx)
{
	uint32_t id;

	if (cfg_id(st, key, item, true, "in", &id))
		return st->ret;
	return cfg_id_add(st, key, ctx, id);
}

static bool cfg_unit_valid(const char *s)
{
	static const char *const kinds[] = { ".service", ".scope" };
	size_t len = strlen(s);

	if (strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		      "0123456789:_.@\\-") != len)
		return false;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		size_t k = strlen(kinds[i]);

		if (len > k && !strcmp(s + len - k, kinds[i]))
			return true;
	}
	return false;
}

static int cfg_unit_item(struct cfg_state *st, const char *key, const char *item, void *ctx)
{
	struct access_conf *a = ctx;

	if (!cfg_unit_valid(item))
		return cfg_fail(st, -EINVAL, "bad unit name '%s' in %s (want NAME.service or "
				"NAME.scope)", item, key);
	if (a->n_units == POLICY_MAX_UNITS)
		return cfg_fail(st, -EINVAL, "too many entries in %s (limit %d)", key,
				POLICY_MAX_UNITS);
	memcpy(a->units[a->n_units++], item, strlen(item) + 1);
	return 0;
}

static int cfg_max_mode(struct cfg_state *st, const char *key, const char *v,
			struct access_conf *a)
{
	if (cfg_mode(st, key, v, &a->max_mode))
		return st->ret;
	a->has_max_mode = true;
	return 0;
}

static int cfg_root_read(struct cfg_state *st, const char *key, const char *v,
			 struct access_conf *a)
{
	if (cfg_parse_bool(v, &a->root_read))
		return cfg_fail(st, -EINVAL, "bad value '%s' for %s (want yes or no)", v, key);
	a->has_root_read = true;
	return 0;
}

static int cfg_inst_max_mode(struct cfg_state *st, const char *key, const char *v)
{
	return cfg_max_mode(st, key, v, &st->inst->access);
}

static int cfg_inst_root_read(struct cfg_state *st, const char *key, const char *v)
{
	return cfg_root_read(st, key, v, &st->inst->access);
}

static int cfg_inst_read_users(struct cfg_state *st, const char *key, const char *v)
{
	return cfg_each_item(st, key, v, cfg_user_item, &st->inst->access.read_users);
}

static int cfg_inst_read_groups(struct cfg_state *st, const char *key, const char *v)
{
	return cfg_each_item(st, key, v, cfg_group_item, &st->inst->access.read_groups);
}

static int cfg_inst_create_users(struct cfg_state *st, const char *key, const char *v)
{
	return cfg_each_item(st, key, v, cfg_user_item, &st->inst->access.create_users);
}

static int cfg_inst_create_groups(struct cfg_state *st, const char *key, const char *v)
{
	return cfg_each_item(st, key, v, cfg_group_item, &st->inst->access.create_groups);
}

static int cfg_inst_read_units(struct cfg_state *st, const char *key, const char *v)
{
	return cfg_each_item(st, key, v, cfg_unit_item, &st->inst->access);
}

static int cfg_vault_max_mode(struct cfg_state *st, const char *key, const char *v)
{
	return cfg_max_mode(st, key, v, &st->c->access);
}

static int cfg_vault_root_read(struct cfg_state *st, const char *key, const char *v)
{
	return cfg_root_read(st, key, v, &st->c->access);
}

static int cfg_vault_user(struct cfg_state *st, const char *key, const char *v)
{
	struct daemon_conf *d = &st->c->daemon;
	struct passwd *pw;
	uint32_t uid;
	int r = cfg_lookup_id(v, false, &uid);

	if (r == -ENOENT)
		return cfg_fail(st, -EINVAL, "unknown user '%s' for %s", v, key);
	if (r || !(pw = getpwuid(uid)))
		return cfg_fail(st, -EINVAL, "bad user '%s' for %s (want a user name or a uid "
				"with a passwd entry)", v, key);
	if (strlen(pw->pw_name) >= sizeof(d->user))
		return cfg_fail(st, -EINVAL, "user name too long for %s", key);
	memcpy(d->user, pw->pw_name, strlen(pw->pw_name) + 1);
	d->uid = pw->pw_uid;
	d->gid = pw->pw_gid;
	d->has_user = true;
	return 0;
}

static int cfg_vault_audit(struct cfg_state *st, const char *key, const char *v)
{
	if (cfg_parse_bool(v, &st->c->daemon.audit))
		return cfg_fail(st, -EINVAL, "bad value '%s' for %s (want yes or no)", v, key);
	return 0;
}

static int cfg_vault_audit_syslog(struct cfg_state *st, const char *key, const char *v)
{
	if (cfg_parse_bool(v, &st->c->daemon.audit_syslog))
		return cfg_fail(st, -EINVAL, "bad value '%s' for %s (want yes or no)", v, key);
	return 0;
}

static int cfg_vault_syslog_socket(struct cfg_state *st, const char *key, const char *v)
{
	char *dst = st->c->daemon.syslog_socket;

	if (v[0] != '/' || strlen(v) >= sizeof(st->c->daemon.syslog_socket))
		return cfg_fail(st, -EINVAL, "bad path '%s' for %s (want an absolute path of at "
				"most %zu bytes)", v, key, sizeof(st->c->daemon.syslog_socket) - 1);
	memcpy(dst, v, strlen(v) + 1);
	return 0;
}

static int cfg_vault_audit_retention(struct cfg_state *st, const char *key, const char *v)
{
	if (config_parse_duration(v, &st->c->daemon.audit_retention))
		return cfg_fail(st, -EINVAL, "bad duration '%s' for %s (want a number with s, "
				"m, h or d, like 90d; 0 keeps every entry)", v, key);
	return 0;
}

static int cfg_vault_audit_fold(struct cfg_state *st, const char *key, const char *v)
{
	if (config_parse_duration(v, &st->c->daemon.audit_fold) ||
	    st->c->daemon.audit_fold > 3600)
		return cfg_fail(st, -EINVAL, "bad duration '%s' for %s (want at most 1h, like "
				"2s; 0 stores every event on its own)", v, key);
	return 0;
}

const struct cfg_key cfg_vault_keys[] = {
	{ "db", cfg_vault_db },
	{ "key_file", cfg_vault_key_file },
	{ "mountpoint", cfg_vault_mountpoint },
	{ "max_value_size", cfg_vault_max_value_size },
	{ "newline", cfg_vault_newline },
	{ "secret_mode", cfg_vault_secret_mode },
	{ "allow_unlocked_memory", cfg_vault_unlocked },
	{ "memlock_budget", cfg_vault_memlock_budget },
	{ "memlock_reserve", cfg_vault_memlock_reserve },
	{ "user_memlock", cfg_vault_user_memlock },
	{ "user_handles", cfg_vault_user_handles },
	{ "attr_timeout", cfg_vault_attr_timeout },
	{ "versions", cfg_vault_versions },
	{ "undelete_window", cfg_vault_undelete_window },
	{ "user", cfg_vault_user },
	{ "max_mode", cfg_vault_max_mode },
	{ "root_read", cfg_vault_root_read },
	{ "audit", cfg_vault_audit },
	{ "audit_syslog", cfg_vault_audit_syslog },
	{ "syslog_socket", cfg_vault_syslog_socket },
	{ "audit_retention", cfg_vault_audit_retention },
	{ "audit_fold", cfg_vault_audit_fold },
	{ NULL, NULL },
};

/* "A, B, C": key names, each once. */
static int cfg_inst_expect(struct cfg_state *st, const char *key, const char *v)
{
	struct instance_conf *in = st->inst;
	const char *p = v;
	size_t n = 1, len;

	for (const char *q = v; *q; q++)
		n += *q == ',';
	in->expect = calloc(n, sizeof(*in->expect));
	if (!in->expect)
		return cfg_fail(st, -ENOMEM, "out of memory");
	for (in->n_expect = 0; in->n_expect < n; in->n_expect++) {
		char *name = in->expect[in->n_expect];

		while (cfg_is_space(*p))
			p++;
		len = strcspn(p, ",");
		while (len && cfg_is_space(p[len - 1]))
			len--;
		if (len == 0 || len > NAME_MAX_LEN || !name_valid_len(p, len))
			return cfg_fail(st, -EINVAL, "bad key name '%.*s' in %s (want a list "
					"like A, B of 1 to %d of A-Z a-z 0-9 . _ -)", (int)len, p,
					key, NAME_MAX_LEN);
		memcpy(name, p, len);
		name[len] = '\0';
		for (size_t i = 0; i < in->n_expect; i++)
			if (!strcmp(in->expect[i], name))
				return cfg_fail(st, -EINVAL, "key %s is listed twice in %s",
						name, key);
		p += strcspn(p, ",");
		if (*p)
			p++;
	}
	return 0;
}

const struct cfg_key cfg_instance_keys[] = {
	{ "owner", cfg_inst_owner },
	{ "group", cfg_inst_group },
	{ "mode", cfg_inst_mode },
	{ "secret_mode", cfg_inst_secret_mode },
	{ "newline", cfg_inst_newline },
	{ "expect", cfg_inst_expect },
	{ "max_mode", cfg_inst_max_mode },
	{ "root_read", cfg_inst_root_read },
	{ "read_users", cfg_inst_read_users },
	{ "read_groups", cfg_inst_read_groups },
	{ "read_units", cfg_inst_read_units },
	{ "create_users", cfg_inst_create_users },
	{ "create_groups", cfg_inst_create_groups },
	{ NULL, NULL },
};
