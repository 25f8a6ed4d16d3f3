/* Key derivation and authenticated encryption of values and data keys. */
#ifndef VAULTFS_SEAL_H
#define VAULTFS_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "secmem.h"

#define SEAL_KEY_LEN 32
/* format byte + 24-byte nonce + 16-byte tag */
#define SEAL_OVERHEAD (1 + 24 + 16)

enum seal_subkey {
	SEAL_SUBKEY_WRAP = 1,	/* wraps instance data keys and the check value */
	SEAL_SUBKEY_AUDIT = 2,	/* keys the audit hash chain */
};

/* Associated data: what a sealed blob is bound to. */
struct seal_ad {
	unsigned char buf[2 * 256 + 64];
	size_t len;
};

void seal_ad_value(struct seal_ad *ad, const char *instance, const char *key,
		   uint64_t version);
void seal_ad_wrap(struct seal_ad *ad, const char *instance, uint64_t generation);
/* era 1: before rows were authenticated; era 2: since. */
void seal_ad_check(struct seal_ad *ad, int era);
/* The key of the rows' tags, sealed under the wrapping key. */
void seal_ad_row_key(struct seal_ad *ad);

/* Derives subkey `id` of the master key into a locked buffer. */
int seal_derive(struct secbuf **out, const unsigned char master[static SEAL_KEY_LEN],
		enum seal_subkey id) WUR;
/* The same from any key, in a context of 8 characters of its own. */
int seal_derive_in(struct secbuf **out, const unsigned char key[static SEAL_KEY_LEN],
		   uint64_t id, const char context[static 8]) WUR;
/* Associated data that is a digest (BLAKE2b-256, unkeyed) of a then b. */
void seal_ad_digest(struct seal_ad *ad, const void *a, size_t alen, const void *b,
		    size_t blen);
/* A fresh random key in locked memory. */
int seal_keygen(struct secbuf **out) WUR;

/* Seals pt into a malloc'd blob of ptlen + SEAL_OVERHEAD bytes. */
int seal_seal(unsigned char **blob, size_t *bloblen, const unsigned char key[static SEAL_KEY_LEN],
	      const struct seal_ad *ad, const unsigned char *pt, size_t ptlen) WUR;
/* Opens a blob into a locked buffer. -EBADMSG if it does not authenticate,
 * -EINVAL if it is not a blob. */
int seal_open(struct secbuf **out, const unsigned char key[static SEAL_KEY_LEN],
	      const struct seal_ad *ad, const unsigned char *blob, size_t bloblen) WUR;

#endif
