/* What a secret is for: a description and a type, set by its owner, read
 * by anyone who may look at it. Plain metadata: never secret, never sealed
 * with the value. The filesystem shows it as extended attributes (xattr.c),
 * the CLI as columns and JSON. */
#ifndef VAULTFS_META_H
#define VAULTFS_META_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../crypto/secmem.h"

#define META_DESCRIPTION_MAX 1024
#define META_TYPE_MAX 64
#define META_TIME_LEN 21		/* "2024-11-22T12:00:00Z" and a NUL */

struct vault;

enum meta_attr {
	META_DESCRIPTION,
	META_TYPE,
	META_COUNT,
};

/* "description", "type". */
const char *meta_attr_name(enum meta_attr a);
/* 0 if value may be stored as a; -E2BIG if it is too long, -EINVAL if it
 * holds what the attribute may not (a description: UTF-8 text without
 * control characters; a type: 1-64 of A-Z a-z 0-9 . _ - / +). */
int meta_check(enum meta_attr a, const void *value, size_t len);
/* Sets a (a length of 0 removes it) and marks the secret changed. */
int vault_meta_set(struct vault *v, int64_t secret_id, enum meta_attr a, const void *value,
		   size_t len) WUR;
/* Copies a's value into buf (size at least its maximum): its length, or
 * -ENOENT if unset. */
int vault_meta_get(struct vault *v, int64_t secret_id, enum meta_attr a, char *buf,
		   size_t size, size_t *len) WUR;
/* UTC, to the second. */
void meta_format_time(int64_t ns, char buf[static META_TIME_LEN]);

#endif
