/* Row authentication tags: keyed BLAKE2b over the encoding of a row's
 * access and identity fields (db/ encodes; it never holds the key). */
#ifndef VAULTFS_MAC_H
#define VAULTFS_MAC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAC_LEN 32
#define MAC_KEY_LEN 32

void mac_compute(unsigned char out[static MAC_LEN], const unsigned char key[static MAC_KEY_LEN],
		 const unsigned char *msg, size_t len);
/* true if tag (tag_len bytes) is msg's tag under key; constant time. */
bool mac_verify(const unsigned char *tag, size_t tag_len,
		const unsigned char key[static MAC_KEY_LEN], const unsigned char *msg,
		size_t len);

/* A keyed BLAKE2b over fields given one at a time (the audit chain):
 * integers as 8 bytes big-endian, strings as their length then their
 * bytes, so that no two sequences of fields hash alike. */
struct mac_stream {
	_Alignas(64) unsigned char state[384];
};

void mac_stream_init(struct mac_stream *m, const unsigned char *key, size_t keylen,
		     size_t outlen, const char *domain);
void mac_stream_bytes(struct mac_stream *m, const unsigned char *p, size_t n);
void mac_stream_u64(struct mac_stream *m, uint64_t v);
void mac_stream_str(struct mac_stream *m, const char *s);
/* Writes the tag and wipes the state. */
void mac_stream_final(struct mac_stream *m, unsigned char *out, size_t outlen);

/* A short keyed PRF for many small inputs (SipHash-2-4, 128-bit output):
 * the elements of an instance's state, summed (db/rowtag.c). */
#define MAC_SHORT_LEN 16
#define MAC_SHORT_KEY_LEN 16
void mac_short(unsigned char out[static MAC_SHORT_LEN],
	       const unsigned char key[static MAC_SHORT_KEY_LEN], const unsigned char *msg,
	       size_t len);
/* A subkey of key for one purpose (label), outlen <= MAC_LEN bytes. */
void mac_derive(unsigned char *out, size_t outlen, const unsigned char key[static MAC_KEY_LEN],
		const char *label);

/* Whether two tags of n bytes are equal, in constant time. */
bool mac_equal(const unsigned char *a, const unsigned char *b, size_t n);

#endif
