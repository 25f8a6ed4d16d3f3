/* The daemon's own access decisions, made on top of the kernel's check of
 * the mode bits (default_permissions): rules the mode bits can't say. */
#ifndef VAULTFS_ACCESS_H
#define VAULTFS_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "policy.h"

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

/* The systemd unit in a /proc/PID/cgroup text (the unified hierarchy, else
 * name=systemd): the first path component after the slices. -ENOENT if
 * none. */
int access_unit_from_cgroup(const char *text, char *unit, size_t len);
/* The same for a running process; best-effort: a pid can be reused. */
int access_unit_of(pid_t pid, char *unit, size_t len);

#endif
