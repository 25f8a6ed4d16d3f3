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
 * locked memory; a problem is reported as a line number and a reason, never
 * with any byte of the line: a name that is wrong may well be a value (a
 * line of a PEM body, a token pasted without its NAME=).
 *
 * Names must be plausible variable names (dotenv_name_plausible) unless
 * DOTENV_ANY_NAME: then any key name (fs/name.h) is taken. */
#ifndef VAULTFS_DOTENV_H
#define VAULTFS_DOTENV_H

#include <stdbool.h>
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

enum { DOTENV_ANY_NAME = 1 };

#define DOTENV_NAME_MAX 128

/* A letter or '_', then letters, digits, '_', '.', '-'; at most
 * DOTENV_NAME_MAX; and no part (between '_', '.' and '-') that looks like
 * secret material: 10 or more characters mixing upper case, lower case and
 * digits, or 16 or more with 3 digits or more (hex, base32). */
bool dotenv_name_plausible(const char *name, size_t len);

/* Parses all of text, calling report for each problem (bad name, missing
 * '=', duplicate key, unterminated quote...). Returns the number of
 * problems, or -errno (-ENOMEM). */
int dotenv_parse(const unsigned char *text, size_t len, unsigned flags, struct dotenv *out,
		 void (*report)(void *ctx, unsigned line, const char *msg), void *ctx);
void dotenv_free(struct dotenv *d);

#endif
