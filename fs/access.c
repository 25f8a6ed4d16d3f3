/*
 * Access rules of the daemon, applied after the kernel has checked the mode
 * bits. Rules this file keeps:
 *  - it only ever narrows: a rule can deny what the mode bits allow, never
 *    allow what they deny;
 *  - it fails closed: a caller whose groups or unit can't be read does not
 *    match a group or unit rule;
 *  - root is exempt from user, group and unit lists (it could change the
 *    config), but root_read = no keeps it from reading through the mount,
 *    and max_mode binds root too: it guards against accidents.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "access.h"
#include "policy.h"

static const struct access_conf *rules(const struct vault_conf *c, const char *instance)
{
	const struct instance_conf *ic = policy_instance(c, instance);

	return ic ? &ic->access : NULL;
}

static bool root_may_read(const struct vault_conf *c, const struct access_conf *a)
{
	return a && a->has_root_read ? a->root_read : c->access.root_read;
}

mode_t access_max_mode(const struct vault_conf *c, const char *instance)
{
	const struct access_conf *a = rules(c, instance);

	if (a && a->has_max_mode)
		return a->max_mode;
	return c->access.has_max_mode ? c->access.max_mode : 0777;
}

static bool in_list(const struct id_list *l, uint32_t id)
{
	for (unsigned i = 0; i < l->n; i++)
		if (l->id[i] == id)
			return true;
	return false;
}

static bool in_groups(const struct id_list *l, const struct access_who *w)
{
	if (in_list(l, w->gid))
		return true;
	for (int i = 0; i < w->ngroups; i++)
		if (in_list(l, w->groups[i]))
			return true;
	return false;
}

/* Does the caller match users or groups? True when both lists are empty. */
static bool matches(const struct id_list *users, const struct id_list *groups,
		    const struct access_who *w)
{
	if (!users->n && !groups->n)
		return true;
	return in_list(users, w->uid) || in_groups(groups, w);
}

int access_read_needs(const struct vault_conf *c, const char *instance)
{
	const struct access_conf *a = rules(c, instance);
	int needs = 0;

	if (a && a->read_groups.n)
		needs |= ACCESS_NEED_GROUPS;
	if (a && a->n_units)
		needs |= ACCESS_NEED_UNIT;
	return needs;
}

int access_create_needs(const struct vault_conf *c, const char *instance)
{
	const struct access_conf *a = rules(c, instance);

	return a && a->create_groups.n ? ACCESS_NEED_GROUPS : 0;
}

static bool unit_listed(const struct access_conf *a, const char *unit)
{
	if (!unit)
		return false;
	for (unsigned i = 0; i < a->n_units; i++)
		if (!strcmp(a->units[i], unit))
			return true;
	return false;
}

int access_may_read(const struct vault_conf *c, const char *instance,
		    const struct access_who *w, const char **why)
{
	const struct access_conf *a = rules(c, instance);

	*why = "";
	if (w->uid == 0) {
		if (root_may_read(c, a))
			return 0;
		*why = "root_read = no";
		return -EACCES;
	}
	if (!a)
		return 0;
	if (!matches(&a->read_users, &a->read_groups, w)) {
		*why = "not in read_users or read_groups";
		return -EACCES;
	}
	if (a->n_units && !unit_listed(a, w->unit)) {
		*why = "not in read_units";
		return -EACCES;
	}
	return 0;
}

int access_may_create(const struct vault_conf *c, const char *instance,
		      const struct access_who *w, const char **why)
{
	const struct access_conf *a = rules(c, instance);

	*why = "";
	if (w->uid == 0 || !a || matches(&a->create_users, &a->create_groups, w))
		return 0;
	*why = "not in create_users or create_groups";
	return -EACCES;
}

int access_mode_allowed(const struct vault_conf *c, const char *instance, mode_t mode,
			const char **why)
{
	*why = "";
	if (mode & 07777 & ~access_max_mode(c, instance)) {
		*why = "beyond max_mode";
		return -EPERM;
	}
	return 0;
}

static bool has_suffix(const char *s, size_t len, const char *suffix)
{
	size_t n = strlen(suffix);

	return len > n && !memcmp(s + len - n, suffix, n);
}

/* The unit in one cgroup path: skip "x.slice" components, take the next. */
static int unit_in_path(const char *path, char *unit, size_t len)
{
	const char *p = path;
	size_t n;

	while (*p) {
		p += strspn(p, "/");
		n = strcspn(p, "/");
		if (!n)
			break;
		if (!has_suffix(p, n, ".slice")) {
			if (!has_suffix(p, n, ".service") && !has_suffix(p, n, ".scope"))
				return -ENOENT;
			if (n >= len)
				return -ENAMETOOLONG;
			memcpy(unit, p, n);
			unit[n] = '\0';
			return 0;
		}
		p += n;
	}
	return -ENOENT;
}

int access_unit_from_cgroup(const char *text, char *unit, size_t len)
{
	char line[1024];
	const char *p = text, *path;
	size_t n;
	int r = -ENOENT;

	/* Two passes: the unified hierarchy first, then name=systemd (v1). */
	for (int pass = 0; pass < 2 && r == -ENOENT; pass++) {
		for (p = text; *p; p += n + (p[n] == '\n')) {
			n = strcspn(p, "\n");
			if (n >= sizeof(line))
				continue;
			memcpy(line, p, n);
			line[n] = '\0';
			if (pass == 0 && !strncmp(line, "0::", 3))
				path = line + 3;
			else if (pass == 1 && (path = strstr(line, ":name=systemd:")))
				path += strlen(":name=systemd:");
			else
				continue;
			r = unit_in_path(path, unit, len);
			if (r != -ENOENT)
				return r;
		}
	}
	return r;
}

int access_unit_of(pid_t pid, char *unit, size_t len)
{
	char path[64], text[4096];
	ssize_t n;
	int fd;

	if (pid <= 0)
		return -ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n < 0)
		return -errno;
	text[n] = '\0';
	return access_unit_from_cgroup(text, unit, len);
}

static bool is_member(const struct access_who *w, gid_t group)
{
	if (w->gid == group)
		return true;
	for (int i = 0; i < w->ngroups; i++)
		if (w->groups[i] == group)
			return true;
	return false;
}

bool access_mode_permits(const struct access_who *w, uid_t owner, gid_t group, mode_t mode,
			 int want)
{
	mode_t bits;

	want &= R_OK | W_OK | X_OK;
	if (w->uid == 0)
		return true;
	if (w->uid == owner)
		bits = mode >> 6;
	else if (is_member(w, group))
		bits = mode >> 3;
	else
		bits = mode;
	return (bits & (mode_t)want) == (mode_t)want;
}

bool access_mode_needs_groups(const struct access_who *w, uid_t owner, gid_t group,
			      mode_t mode, int want)
{
	want &= R_OK | W_OK | X_OK;
	return w->uid != 0 && w->uid != owner && w->gid != group &&
	       ((mode >> 3) & (mode_t)want) != (mode & (mode_t)want);
}
