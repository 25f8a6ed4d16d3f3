/* Settings that shape the vault and the filesystem; filled by src/config.c
 * from the INI file and the command line. Plain data only. */
#ifndef VAULTFS_POLICY_H
#define VAULTFS_POLICY_H

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

enum nl_policy {
	NL_STRIP_SINGLE_LINE = 0,	/* "v\n" is stored as "v"; multi-line kept */
	NL_KEEP,			/* every byte as written */
};

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
	double attr_timeout;		/* seconds */
	unsigned versions;		/* values kept per secret, the current one included */
	int64_t undelete_window;	/* seconds a deleted secret can be restored; 0: none */
	struct instance_conf *instances;
};

void policy_defaults(struct vault_conf *c);
const struct instance_conf *policy_instance(const struct vault_conf *c,
					    const char *name);
void policy_free(struct vault_conf *c);

#endif
