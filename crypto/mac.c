/*
 * Row authentication tags. Rules this file keeps:
 *  - the key is a subkey of the master key (SEAL_SUBKEY_ROWMAC), never the
 *    master key itself, and lives in locked memory owned by the caller;
 *  - keyed BLAKE2b (crypto_generichash) with a full 32-byte tag;
 *  - tags are compared in constant time and the expected tag is wiped.
 */
#include <string.h>

#include <sodium.h>

#include "mac.h"

_Static_assert(MAC_LEN >= crypto_generichash_BYTES_MIN &&
	       MAC_LEN <= crypto_generichash_BYTES_MAX, "tag size");
_Static_assert(MAC_KEY_LEN >= crypto_generichash_KEYBYTES_MIN &&
	       MAC_KEY_LEN <= crypto_generichash_KEYBYTES_MAX, "key size");

void mac_compute(unsigned char out[static MAC_LEN], const unsigned char key[static MAC_KEY_LEN],
		 const unsigned char *msg, size_t len)
{
	crypto_generichash(out, MAC_LEN, msg, len, key, MAC_KEY_LEN);
}

_Static_assert(MAC_SHORT_LEN == crypto_shorthash_siphashx24_BYTES &&
	       MAC_SHORT_KEY_LEN == crypto_shorthash_siphashx24_KEYBYTES, "SipHash-2-4-128");

void mac_short(unsigned char out[static MAC_SHORT_LEN],
	       const unsigned char key[static MAC_SHORT_KEY_LEN], const unsigned char *msg,
	       size_t len)
{
	crypto_shorthash_siphashx24(out, msg, len, key);
}

void mac_derive(unsigned char *out, size_t outlen, const unsigned char key[static MAC_KEY_LEN],
		const char *label)
{
	crypto_generichash(out, outlen, (const unsigned char *)label, strlen(label), key,
			   MAC_KEY_LEN);
}

bool mac_verify(const unsigned char *tag, size_t tag_len,
		const unsigned char key[static MAC_KEY_LEN], const unsigned char *msg, size_t len)
{
	unsigned char want[MAC_LEN];
	bool ok;

	if (!tag || tag_len != MAC_LEN)
		return false;
	mac_compute(want, key, msg, len);
	ok = sodium_memcmp(want, tag, MAC_LEN) == 0;
	sodium_memzero(want, sizeof(want));
	return ok;
}

_Static_assert(sizeof(crypto_generichash_state) <= sizeof(((struct mac_stream *)0)->state),
	       "mac_stream holds a BLAKE2b state");

static crypto_generichash_state *stream_state(struct mac_stream *m)
{
	return (crypto_generichash_state *)(void *)m->state;
}

void mac_stream_init(struct mac_stream *m, const unsigned char *key, size_t keylen,
		     size_t outlen, const char *domain)
{
	crypto_generichash_init(stream_state(m), key, keylen, outlen);
	mac_stream_str(m, domain);
}

void mac_stream_bytes(struct mac_stream *m, const unsigned char *p, size_t n)
{
	crypto_generichash_update(stream_state(m), p, n);
}

void mac_stream_u64(struct mac_stream *m, uint64_t v)
{
	unsigned char b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (56 - 8 * i));
	mac_stream_bytes(m, b, sizeof(b));
}

void mac_stream_str(struct mac_stream *m, const char *s)
{
	size_t n = strlen(s);

	mac_stream_u64(m, n);
	mac_stream_bytes(m, (const unsigned char *)s, n);
}

void mac_stream_final(struct mac_stream *m, unsigned char *out, size_t outlen)
{
	crypto_generichash_final(stream_state(m), out, outlen);
	sodium_memzero(m->state, sizeof(m->state));
}

bool mac_equal(const unsigned char *a, const unsigned char *b, size_t n)
{
	return sodium_memcmp(a, b, n) == 0;
}
