/* Descriptive attributes of a secret (description, type): plain metadata,
 * never secret, never sealed. */
#ifndef VAULTFS_DB_ATTRS_H
#define VAULTFS_DB_ATTRS_H

#include "db.h"

/* Copies the value into buf (not NUL-terminated) and its length into *len;
 * -ENOENT if unset, -ERANGE if size is too small (then *len is what it
 * needs). */
int db_attr_get(struct db *db, int64_t secret_id, const char *name, void *buf, size_t size,
		size_t *len) WUR;
/* Sets; a length of 0 removes it (0 whether or not it was set). */
int db_attr_set(struct db *db, int64_t secret_id, const char *name, const void *value,
		size_t len) WUR;

#endif
