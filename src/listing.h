/* What an instance holds, for ls, check and export: its secrets with their
 * metadata, in name order, merged with the keys the config expects. Never
 * values. */
#ifndef VAULTFS_LISTING_H
#define VAULTFS_LISTING_H

#include <stdbool.h>
#include <stdio.h>

#include "../db/db.h"
#include "../fs/expiry.h"
#include "../fs/meta.h"

struct cli;

struct listing_entry {
	char name[DB_NAME_MAX + 1];
	bool exists;
	bool expected;
	struct db_secret s;			/* if it exists */
	char description[META_DESCRIPTION_MAX + 1];
	char type[META_TYPE_MAX + 1];
	bool limited, expired;			/* an expiry or read limit (fs/expiry.h) */
	struct expiry limit;
};

struct listing {
	struct listing_entry *e;
	size_t n, cap;
};

/* in may be NULL: an instance the config names but the vault doesn't have
 * (its expected keys are all missing). */
int listing_load(struct cli *c, const char *instance, const struct db_instance *in,
		 struct listing *out);
void listing_free(struct listing *l);

/* "configured", "empty" (exists without a value: touched, or set to
 * nothing) or "missing". */
const char *listing_entry_state(const struct listing_entry *e);
bool listing_entry_ok(const struct listing_entry *e);

/* "-rw-r-----" */
void listing_mode_string(mode_t mode, bool dir, char out[static 11]);
/* A user or group name, or the number. */
void listing_user_name(uid_t uid, char *buf, size_t size);
void listing_group_name(gid_t gid, char *buf, size_t size);

#endif
