/* The daemon's own access decisions, made on top of the kernel's check of
 * the mode bits (default_permissions): rules the mode bits can't say. */
#ifndef VAULTFS_ACCESS_H
#define VAULTFS_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "vault_conf.h"

struct access_who {
	uid_t uid;
	gid_t gid;
	const gid_t *groups;	/* supplementary groups */
	int ngroups;		/* -1: they could not be read */
	const char *unit;	/* systemd unit, NULL if unknown */
};

enum {
	ACCESS_NEED_GROUPS = 0x1,
	ACCESS_NEED_UNIT = 0x2,
};

/* What the read or create rules of an instance need to know of a caller
 * beyond uid and gid: ACCESS_NEED_* bits. */
int access_read_needs(const struct vault_conf *c, const char *instance);
int access_create_needs(const struct vault_conf *c, const char *instance);

/* 0, or -EACCES with *why set to a short reason. Root is exempt from the
 * user, group and unit lists; root_read = no keeps it from reading. */
int access_may_read(const struct vault_conf *c, const char *instance,
		    const struct access_who *w, const char **why);
/* Create, delete and rename of keys. */
int access_may_create(const struct vault_conf *c, const char *instance,
		      const struct access_who *w, const char **why);
/* 0, or -EPERM when mode has a bit beyond the instance's max_mode. */
int access_mode_allowed(const struct vault_conf *c, const char *instance, mode_t mode,
			const char **why);
mode_t access_max_mode(const struct vault_conf *c, const char *instance);

/* The mode bits' answer, as the kernel gives it, for w wanting `want`
 * (R_OK, W_OK, X_OK) of a file with this owner, group and mode: root may
 * do anything; otherwise the owner's bits for the owner, the group's for a
 * member, the others' for the rest. The daemon asks at each open, from the
 * stored row, because the kernel asks with attributes it may have cached
 * before someone else's chmod. */
bool access_mode_permits(const struct access_who *w, uid_t owner, gid_t group, mode_t mode,
			 int want);
/* Whether that answer depends on w's supplementary groups (to load them
 * only then). */
bool access_mode_needs_groups(const struct access_who *w, uid_t owner, gid_t group,
			      mode_t mode, int want);

/* The systemd unit in a /proc/PID/cgroup text (the unified hierarchy, else
 * name=systemd): the first path component after the slices. -ENOENT if
 * none. */
int access_unit_from_cgroup(const char *text, char *unit, size_t len);
/* The same for a running process; best-effort: a pid can be reused. */
int access_unit_of(pid_t pid, char *unit, size_t len);

#endif
