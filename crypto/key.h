/* Master key: generation and loading from a file, the environment or a
 * systemd credential. */
#ifndef VAULTFS_KEY_H
#define VAULTFS_KEY_H

#include <stddef.h>

#include "secmem.h"

#define KEY_LEN 32
#define KEY_HEX_LEN 64
#define KEY_ENV "VAULTFS_KEY"
#define KEY_CREDENTIAL "vaultfs.key"

struct key_source {
	const char *file;	/* --key-file, or NULL */
};

/* Loads the master key: the file if given, else $VAULTFS_KEY (wiped and
 * removed from the environment), else $CREDENTIALS_DIRECTORY/vaultfs.key.
 * On failure writes a one-line reason into err. A warning (for example a
 * key file readable by others) is written into warn, which is "" if none. */
int key_load(struct secbuf **out, const struct key_source *src,
	     char *err, size_t errlen, char *warn, size_t warnlen) WUR;

/* Parses 32 raw bytes or 64 hex characters (surrounding white space allowed). */
int key_parse(struct secbuf *out, const unsigned char *in, size_t len) WUR;

/* Two master keys are the same (in constant time). */
bool key_equal(const struct secbuf *a, const struct secbuf *b);

/* The 64 hex characters of a key's 32 bytes, in locked memory. */
int key_hex(const struct secbuf *key, struct secbuf **out) WUR;
/* 64 hex characters and a NUL, in locked memory. */
int key_generate_hex(struct secbuf **out) WUR;

/* Writes a new key file with O_EXCL and mode 0600. */
int key_write_file(const char *path, const struct secbuf *hex) WUR;

#endif
