/* JSON output for --json: one writer, one rule for every command. */
#ifndef VAULTFS_JSON_H
#define VAULTFS_JSON_H

#include <stddef.h>
#include <stdio.h>

/* s[0..len) as a JSON string: quotes, backslashes and control characters
 * escaped, valid UTF-8 passed through as it is, and each byte that is not
 * part of valid UTF-8 written as U+FFFD, so the output is always valid
 * UTF-8 JSON. */
void json_string(FILE *f, const char *s, size_t len);
/* "name":"s" for a NUL-terminated s. */
void json_field(FILE *f, const char *name, const char *s);

#endif
