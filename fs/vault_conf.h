/* The settings that shape the vault and the filesystem (struct vault_conf
 * and its parts), filled by src/config.c from the INI file and the command
 * line; defaults and lookups in policy.h. Plain data only. */
#ifndef VAULTFS_VAULT_CONF_H
#define VAULTFS_VAULT_CONF_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define POLICY_MAX_VALUE_DEFAULT (1024 * 1024)
#define POLICY_MAX_VALUE_LIMIT (64 * 1024 * 1024)
#define POLICY_VERSIONS_DEFAULT 10
#define POLICY_VERSIONS_MAX 1000
#define POLICY_UNDELETE_DEFAULT (7 * 24 * 3600)
#define POLICY_USER_HANDLES_DEFAULT 1024
#define POLICY_USER_MEMLOCK_DEFAULT (16 * 1024 * 1024)

enum nl_policy {
	NL_STRIP_SINGLE_LINE = 0,	/* "v\n" is stored as "v"; multi-line kept */
	NL_KEEP,			/* every byte as written */
};

#define POLICY_MAX_IDS 32
#define POLICY_MAX_UNITS 8
#define POLICY_UNIT_LEN 256

struct id_list {
	unsigned n;
	uint32_t id[POLICY_MAX_IDS];
};

/* The daemon's own access rules, decided in fs/access.c on top of the mode
 * bits. An empty list means "no rule"; has_* say what was set. */
struct access_conf {
	bool has_max_mode, has_root_read;
	mode_t max_mode;		/* chmod or create beyond it: EPERM */
	bool root_read;			/* may uid 0 read through the mount */
	struct id_list read_users, read_groups;		/* who may read at all */
	struct id_list create_users, create_groups;	/* create, delete, rename */
	unsigned n_units;		/* systemd units that may read (best-effort) */
	char units[POLICY_MAX_UNITS][POLICY_UNIT_LEN];
};

/* The daemon itself: who it runs as, and its audit log. */
struct daemon_conf {
	bool has_user;
	char user[64];
	uid_t uid;			/* of user, resolved when the config is read */
	gid_t gid;
	bool audit;			/* keep the audit log (default yes) */
	bool audit_syslog;		/* and send each entry to syslog (default yes) */
	char syslog_socket[108];	/* syslog's datagram socket (default /dev/log) */
	int64_t audit_retention;	/* seconds, 0: keep every entry */
	int64_t audit_fold;		/* seconds repeats are counted into one entry, 0: never */
};

/* on_change hooks (fs/hooks.c): key "" for the instance's own. */
struct hook_conf {
	char key[256];
	char *command;			/* run with /bin/sh -c */
	struct hook_conf *next;
};

#define POLICY_HOOK_TIMEOUT_DEFAULT 30.0

struct instance_conf {
	char name[256];
	unsigned line;			/* where its section starts */
	bool has_owner, has_group, has_mode, has_secret_mode, has_newline;
	uid_t owner;
	gid_t group;
	mode_t mode;			/* of the instance directory */
	mode_t secret_mode;		/* mask for new secrets */
	enum nl_policy newline;
	char (*expect)[256];		/* keys that should exist */
	size_t n_expect;
	struct access_conf access;
	struct hook_conf *hooks;	/* on_change, on_change.KEY */
	bool has_hook_user;		/* on_change_user; else nobody */
	uid_t hook_uid;
	gid_t hook_gid;
	double hook_timeout;		/* on_change_timeout, seconds; 0: default */
	struct instance_conf *next;
};

struct vault_conf {
	char path[PATH_MAX];		/* the config file, "" if none */
	char db[PATH_MAX];
	char key_file[PATH_MAX];
	char mountpoint[PATH_MAX];
	size_t max_value_size;
	enum nl_policy newline;
	mode_t secret_mode;		/* default mask for new secrets */
	bool allow_unlocked_memory;
	size_t memlock_budget;		/* bytes, 0: none of our own */
	bool has_memlock_reserve;
	size_t memlock_reserve;		/* for root and trusted readers only */
	size_t user_memlock;		/* locked bytes per uid, 0: no limit */
	unsigned user_handles;		/* open files per uid, 0: no limit */
	double attr_timeout;		/* seconds */
	unsigned versions;		/* values kept per secret, the current one included */
	int64_t undelete_window;	/* seconds a deleted secret can be restored; 0: none */
	struct instance_conf *instances;
	struct access_conf access;	/* max_mode, root_read: for every instance */
	struct daemon_conf daemon;
};

#endif
