/* The INI configuration file, read with inih.
 *
 * The file decides who may read which secret, so:
 * - it is opened without following a symlink and refused unless it is a
 *   regular file owned by root or by us and not writable by group or others;
 * - every problem is an error naming file, line, setting and value: nothing
 *   unknown, repeated, truncated or out of range is silently ignored;
 * - the first error stops the parse.
 *
 * inih sees each line through cfg_read_line(), which counts lines (the
 * handler is not told the line), refuses lines that inih would split, and
 * handles "[section]" lines itself, because inih cuts section names at 49
 * bytes and does not report empty or repeated sections.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ini.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../fs/name.h"
#include "config.h"
#include "config_hooks.h"

/* Long enough for "key = " and a PATH_MAX path, or a 255-byte instance name. */
#define CFG_MAX_LINE (PATH_MAX + 256)
#define CFG_MAX_KEYS 32
#define CFG_MAX_TIMEOUT 3600.0
#define CFG_MAX_DURATION ((int64_t)100 * 366 * 86400)

enum cfg_section {
	SECT_NONE,
	SECT_VAULT,
	SECT_INSTANCE,
};

struct cfg_state {
	struct vault_conf *c;
	const char *path;
	FILE *f;
	unsigned line;
	enum cfg_section sect;
	char sect_raw[CFG_MAX_LINE];	/* between the brackets, as written */
	struct instance_conf *inst;
	unsigned vault_line;		/* of the [vault] header, 0: none yet */
	unsigned seen[CFG_MAX_KEYS];	/* line each key of this section was set on */
	int ret;
	char *err;
	size_t errlen;
};

struct cfg_key {
	const char *name;
	int (*set)(struct cfg_state *st, const char *key, const char *value);
};

static int cfg_fail(struct cfg_state *st, int ret, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int cfg_fail(struct cfg_state *st, int ret, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (st->ret)
		return st->ret;
	st->ret = ret;
	if (!st->errlen)
		return ret;
	n = snprintf(st->err, st->errlen, "%s:%u: ", st->path, st->line);
	if (n < 0 || (size_t)n >= st->errlen)
		return ret;
	va_start(ap, fmt);
	vsnprintf(st->err + n, st->errlen - n, fmt, ap);
	va_end(ap);
	return ret;
}

static int cfg_parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	const char *p;

	if (!s || !*s)
		return -EINVAL;
	for (p = s; *p; p++) {
		unsigned d = (unsigned)(*p - '0');

		if (*p < '0' || *p > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int config_parse_mode(const char *s, mode_t *out)
{
	size_t len = s ? strlen(s) : 0;
	mode_t m = 0;

	if (len < 3 || len > 4)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '7')
			return -EINVAL;
		m = m * 8 + (mode_t)(s[i] - '0');
	}
	if (m & ~(mode_t)0777)
		return -EINVAL;
	*out = m;
	return 0;
}

int config_parse_size(const char *s, size_t *out)
{
	size_t v = 0, mult = 1;
	const char *p = s;

	if (!s || *p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		size_t d = (size_t)(*p - '0');

		if (v > (SIZE_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	switch (*p) {
	case '\0':
		break;
	case 'K': case 'k':
		mult = (size_t)1 << 10;
		p++;
		break;
	case 'M': case 'm':
		mult = (size_t)1 << 20;
		p++;
		break;
	case 'G': case 'g':
		mult = (size_t)1 << 30;
		p++;
		break;
	default:
		return -EINVAL;
	}
	if (*p)
		return -EINVAL;
	if (v > SIZE_MAX / mult)
		return -ERANGE;
	*out = v * mult;
	return 0;
}

int config_parse_duration(const char *s, int64_t *out)
{
	static const struct { char suffix; int64_t secs; } units[] = {
		{ 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 },
	};
	int64_t mult = 1;
	uint64_t v = 0;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	if (*end) {
		size_t i;

		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (*end == units[i].suffix)
				break;
		if (i == sizeof(units) / sizeof(units[0]) || end[1])
			return -EINVAL;
		mult = units[i].secs;
	}
	if (v > (uint64_t)CFG_MAX_DURATION / (uint64_t)mult)
		return -ERANGE;
	*out = (int64_t)v * mult;
	return 0;
}

/* Seconds as digits with at most one '.', no sign, exponent or hex. */
static int cfg_parse_seconds(const char *s, double *out)
{
	bool dot = false, digit = false;
	char *end;
	double v;

	for (const char *p = s; *p; p++) {
		if (*p == '.' && !dot)
			dot = true;
		else if (*p >= '0' && *p <= '9')
			digit = true;
		else
			return -EINVAL;
	}
	if (!digit)
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end)
		return -EINVAL;
	if (v > CFG_MAX_TIMEOUT)
		return -ERANGE;
	*out = v;
	return 0;
}

static int cfg_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "yes", "true", "1" };
	static const char *const no[] = { "no", "false", "0" };

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!strcasecmp(s, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

static int cfg_parse_newline(const char *s, enum nl_policy *out)
{
	if (!strcmp(s, "strip"))
		*out = NL_STRIP_SINGLE_LINE;
	else if (!strcmp(s, "keep"))
		*out = NL_KEEP;
	else
		return -EINVAL;
	return 0;
}

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

static int cfg_inst_owner(struct cfg_state *st, const char *key, const char *v)
{
	struct passwd *pw;
	uint64_t id;
	int r;

	r = cfg_parse_u64(v, &id);
	if (!r && id < (uid_t)-1) {
		st->inst->owner = (uid_t)id;
	} else if (r == -EINVAL && (pw = getpwnam(v))) {
		st->inst->owner = pw->pw_uid;
	} else if (r == -EINVAL) {
		return cfg_fail(st, -EINVAL, "unknown user '%s' for %s", v, key);
	} else {
		return cfg_fail(st, -EINVAL, "bad uid '%s' for %s", v, key);
	}
	st->inst->has_owner = true;
	return 0;
}

static int cfg_inst_group(struct cfg_state *st, const char *key, const char *v)
{
	struct group *gr;
	uint64_t id;
	int r;

	r = cfg_parse_u64(v, &id);
	if (!r && id < (gid_t)-1) {
		st->inst->group = (gid_t)id;
	} else if (r == -EINVAL && (gr = getgrnam(v))) {
		st->inst->group = gr->gr_gid;
	} else if (r == -EINVAL) {
		return cfg_fail(st, -EINVAL, "unknown group '%s' for %s", v, key);
	} else {
		return cfg_fail(st, -EINVAL, "bad gid '%s' for %s", v, key);
	}
	st->inst->has_group = true;
	return 0;
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

static int cfg_lookup_user(const char *s, uint32_t *out)
{
	struct passwd *pw;
	uint64_t id;
	int r = cfg_parse_u64(s, &id);

	if (r == 0 && id < (uid_t)-1) {
		*out = (uint32_t)id;
		return 0;
	}
	if (r == -EINVAL && (pw = getpwnam(s))) {
		*out = pw->pw_uid;
		return 0;
	}
	return r == -EINVAL ? -ENOENT : -ERANGE;
}

static int cfg_lookup_group(const char *s, uint32_t *out)
{
	struct group *gr;
	uint64_t id;
	int r = cfg_parse_u64(s, &id);

	if (r == 0 && id < (gid_t)-1) {
		*out = (uint32_t)id;
		return 0;
	}
	if (r == -EINVAL && (gr = getgrnam(s))) {
		*out = gr->gr_gid;
		return 0;
	}
	return r == -EINVAL ? -ENOENT : -ERANGE;
}

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
	int r = cfg_lookup_user(item, &id);

	if (r == -ENOENT)
		return cfg_fail(st, -EINVAL, "unknown user '%s' in %s", item, key);
	if (r)
		return cfg_fail(st, -EINVAL, "bad uid '%s' in %s", item, key);
	return cfg_id_add(st, key, ctx, id);
}

static int cfg_group_item(struct cfg_state *st, const char *key, const char *item, void *ctx)
{
	uint32_t id;
	int r = cfg_lookup_group(item, &id);

	if (r == -ENOENT)
		return cfg_fail(st, -EINVAL, "unknown group '%s' in %s", item, key);
	if (r)
		return cfg_fail(st, -EINVAL, "bad gid '%s' in %s", item, key);
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
	int r = cfg_lookup_user(v, &uid);

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

static const struct cfg_key cfg_vault_keys[] = {
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

static bool cfg_is_space(char ch);

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

static const struct cfg_key cfg_instance_keys[] = {
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

static int cfg_set(struct cfg_state *st, const struct cfg_key *keys, const char *key,
		   const char *value)
{
	for (size_t i = 0; keys[i].name; i++) {
		if (strcmp(keys[i].name, key))
			continue;
		if (st->seen[i])
			return cfg_fail(st, -EINVAL, "duplicate setting '%s' in [%s] (first on "
					"line %u)", key, st->sect_raw, st->seen[i]);
		st->seen[i] = st->line;
		return keys[i].set(st, key, value);
	}
	return cfg_fail(st, -EINVAL, "unknown setting '%s' in [%s]", key, st->sect_raw);
}

/* on_change settings (config_hooks.c): 1 if key is none of them. */
static int cfg_hook(struct cfg_state *st, const char *key, const char *value)
{
	char msg[512];
	int r = config_hook_set(st->inst, key, value, msg, sizeof(msg));

	if (r < 0)
		cfg_fail(st, r, "%s", msg);
	return r;
}

static int cfg_handler(void *user, const char *section, const char *key, const char *value)
{
	struct cfg_state *st = user;

	if (st->ret)
		return 0;
	/* inih keeps its own, shortened copy of the section name. */
	if (strncmp(section, st->sect_raw, strlen(section)))
		return !cfg_fail(st, -EINVAL, "internal error: section [%s] out of step",
				 section);
	switch (st->sect) {
	case SECT_VAULT:
		return !cfg_set(st, cfg_vault_keys, key, value);
	case SECT_INSTANCE:
		if (cfg_hook(st, key, value) <= 0)
			return !st->ret;
		return !cfg_set(st, cfg_instance_keys, key, value);
	case SECT_NONE:
		break;
	}
	return !cfg_fail(st, -EINVAL, "setting '%s' outside any section", key);
}

static int cfg_instance_add(struct cfg_state *st, const char *name)
{
	const struct instance_conf *old = policy_instance(st->c, name);
	struct instance_conf *in, **tail;

	if (!name_valid(name))
		return cfg_fail(st, -EINVAL, "bad instance name '%s' (want 1 to %d of "
				"A-Z a-z 0-9 . _ -)", name, NAME_MAX_LEN);
	if (old)
		return cfg_fail(st, -EINVAL, "duplicate section [%s] (first on line %u)",
				st->sect_raw, old->line);
	in = calloc(1, sizeof(*in));
	if (!in)
		return cfg_fail(st, -ENOMEM, "out of memory");
	memcpy(in->name, name, strlen(name) + 1);
	in->line = st->line;
	for (tail = &st->c->instances; *tail; tail = &(*tail)->next)
		;
	*tail = in;
	st->inst = in;
	st->sect = SECT_INSTANCE;
	return 0;
}

static bool cfg_is_space(char ch)
{
	return ch == ' ' || (ch >= '\t' && ch <= '\r');
}

/* Where inih ends a section name: at ']' or at a ';' comment after a space. */
static const char *cfg_section_end(const char *s)
{
	bool was_space = false;

	for (; *s && *s != ']'; s++) {
		if (was_space && *s == ';')
			break;
		was_space = cfg_is_space(*s);
	}
	return s;
}

/* s: just after the '['. */
static int cfg_section(struct cfg_state *st, const char *s)
{
	const char *end = cfg_section_end(s), *p;
	size_t len = (size_t)(end - s);

	if (*end != ']')
		return cfg_fail(st, -EINVAL, "bad section header: no closing ']'");
	for (p = end + 1; cfg_is_space(*p); p++)
		;
	if (*p && *p != ';' && *p != '#')
		return cfg_fail(st, -EINVAL, "unexpected text '%s' after section header", p);
	memcpy(st->sect_raw, s, len);
	st->sect_raw[len] = '\0';
	memset(st->seen, 0, sizeof(st->seen));
	st->inst = NULL;
	st->sect = SECT_NONE;

	if (!strcmp(st->sect_raw, "vault")) {
		if (st->vault_line)
			return cfg_fail(st, -EINVAL, "duplicate section [vault] (first on "
					"line %u)", st->vault_line);
		st->vault_line = st->line;
		st->sect = SECT_VAULT;
		return 0;
	}
	if (!strncmp(st->sect_raw, "instance", 8) &&
	    (st->sect_raw[8] == '\0' || cfg_is_space(st->sect_raw[8]))) {
		for (p = st->sect_raw + 8; cfg_is_space(*p); p++)
			;
		if (!*p)
			return cfg_fail(st, -EINVAL, "missing name in [%s] (want [instance "
					"NAME])", st->sect_raw);
		return cfg_instance_add(st, p);
	}
	return cfg_fail(st, -EINVAL, "unknown section [%s]", st->sect_raw);
}

/* An ini_reader: one line into buf (at most num - 1 bytes, the newline
 * dropped), noting its number and acting on section headers. */
static char *cfg_read_line(char *buf, int num, void *stream)
{
	struct cfg_state *st = stream;
	size_t n = 0;
	const char *p;
	int ch;

	if (st->ret || num < 2)
		return NULL;
	ch = getc(st->f);
	if (ch == EOF) {
		if (ferror(st->f))
			cfg_fail(st, -EIO, "read error: %s", strerror(errno));
		return NULL;
	}
	st->line++;
	for (; ch != EOF && ch != '\n'; ch = getc(st->f)) {
		if (ch == '\0') {
			cfg_fail(st, -EINVAL, "NUL byte in line");
			return NULL;
		}
		if (n >= (size_t)num - 1) {
			cfg_fail(st, -EINVAL, "line too long (limit %d bytes)", num - 1);
			return NULL;
		}
		buf[n++] = (char)ch;
	}
	if (ferror(st->f)) {
		cfg_fail(st, -EIO, "read error: %s", strerror(errno));
		return NULL;
	}
	buf[n] = '\0';

	p = buf;
	if (st->line == 1 && !strncmp(p, "\xEF\xBB\xBF", 3))
		p += 3;
	while (cfg_is_space(*p))
		p++;
	if (*p == '[' && cfg_section(st, p + 1))
		return NULL;
	return buf;
}

static int cfg_parse(struct cfg_state *st)
{
	int saved_max_line = ini_max_line;
	bool saved_stop = ini_stop_on_first_error;
	bool saved_multiline = ini_allow_multiline;
	int line;

	/* Debian's inih takes these at run time (so config_load is not
	 * thread-safe). An indented line continuing a value would hide a
	 * mistake, and a line longer than ini_max_line would be cut in pieces. */
	ini_max_line = CFG_MAX_LINE;
	ini_stop_on_first_error = true;
	ini_allow_multiline = false;
	line = ini_parse_stream(cfg_read_line, st, cfg_handler, st);
	ini_max_line = saved_max_line;
	ini_stop_on_first_error = saved_stop;
	ini_allow_multiline = saved_multiline;

	if (st->ret)
		return st->ret;
	if (line < 0)
		return cfg_fail(st, -ENOMEM, "out of memory");
	if (line > 0) {
		st->line = (unsigned)line;
		return cfg_fail(st, -EINVAL, "syntax error (want 'key = value' or "
				"'[section]')");
	}
	return 0;
}

static int cfg_check_file(int fd, const char *path, char *err, size_t errlen)
{
	struct stat sb;

	if (fstat(fd, &sb)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	if (!S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		return -EINVAL;
	}
	if (sb.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen, "%s: must not be writable by group or others", path);
		return -EPERM;
	}
	if (sb.st_uid != 0 && sb.st_uid != geteuid()) {
		snprintf(err, errlen, "%s: owned by uid %u, must be owned by root or uid %u",
			 path, (unsigned)sb.st_uid, (unsigned)geteuid());
		return -EPERM;
	}
	return 0;
}

static int cfg_open(const char *path, char *err, size_t errlen)
{
	int fd, ret;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		ret = -errno;
		if (errno == ELOOP)
			snprintf(err, errlen, "%s: must not be a symbolic link", path);
		else
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return ret;
	}
	ret = cfg_check_file(fd, path, err, errlen);
	if (ret) {
		close(fd);
		return ret;
	}
	return fd;
}

int config_load(struct vault_conf *c, const char *path, char *err, size_t errlen)
{
	struct cfg_state *st = NULL;
	FILE *f = NULL;
	int fd = -1, ret;

	if (errlen)
		err[0] = '\0';
	else
		err = NULL;
	if (strlen(path) >= sizeof(c->path)) {
		snprintf(err, errlen, "%s: %s", path, strerror(ENAMETOOLONG));
		return -ENAMETOOLONG;
	}
	fd = cfg_open(path, err, errlen);
	if (fd < 0)
		return fd;
	f = fdopen(fd, "r");
	st = calloc(1, sizeof(*st));
	if (!f || !st) {
		ret = -ENOMEM;
		snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
		goto out;
	}
	fd = -1;
	memcpy(c->path, path, strlen(path) + 1);
	st->c = c;
	st->path = path;
	st->f = f;
	st->err = err;
	st->errlen = errlen;
	ret = cfg_parse(st);
out:
	free(st);
	if (f)
		fclose(f);
	else if (fd >= 0)
		close(fd);
	return ret;
}
