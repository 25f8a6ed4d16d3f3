/* dotenv files, as docker compose and most tools write them:
 *
 *   # a comment
 *   export NAME=value            unquoted: to the end of the line, trimmed;
 *   NAME = value # comment       " #" starts a comment
 *   NAME='literal $ \ text'      single quotes: every byte as written
 *   NAME="a\nb \"c\""            double quotes: \n \r \t \\ \" \$ escapes
 *   PEM="-----BEGIN...           quoted values may span lines
 *   ...-----END..."
 *
 * No ${VAR} expansion: values are taken as written. Values are parsed into
 * locked memory; error messages carry line numbers and names, never values. */
#ifndef VAULTFS_DOTENV_H
#define VAULTFS_DOTENV_H

#include <stddef.h>

#include "../crypto/secmem.h"
#include "../fs/name.h"

struct dotenv_entry {
	char name[NAME_MAX_LEN + 1];
	unsigned line;
	struct secbuf *value;
};

struct dotenv {
	struct dotenv_entry *e;
	size_t n, cap;
};

/* Parses all of text, calling report for each problem (bad name, missing
 * '=', duplicate key, unterminated quote...). Returns the number of
 * problems, or -errno (-ENOMEM). */
int dotenv_parse(const unsigned char *text, size_t len, struct dotenv *out,
		 void (*report)(void *ctx, unsigned line, const char *msg), void *ctx);
void dotenv_free(struct dotenv *d);

#endif
