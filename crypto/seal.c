/*
 * Sealing values and keys. Rules this file keeps:
 *  - XChaCha20-Poly1305 with a fresh random 192-bit nonce for every seal;
 *  - the associated data names what a blob belongs to (instance, key,
 *    version; or the instance a data key wraps), so a blob moved to another
 *    row fails to open;
 *  - opened plaintext goes only into locked memory, and a blob that does
 *    not authenticate yields nothing but -EBADMSG.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "seal.h"

#define SEAL_FORMAT 1
#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define KDF_CONTEXT "vaultfs1"

_Static_assert(SEAL_OVERHEAD == 1 + NONCE_LEN + crypto_aead_xchacha20poly1305_ietf_ABYTES,
	       "blob layout");
_Static_assert(SEAL_KEY_LEN == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "key size");

static void ad_put(struct seal_ad *ad, const void *p, size_t n)
{
	if (ad->len + n > sizeof(ad->buf))
		abort();	/* names are capped at 255 bytes: cannot happen */
	memcpy(ad->buf + ad->len, p, n);
	ad->len += n;
}

static void ad_put_str(struct seal_ad *ad, const char *s)
{
	size_t n = strlen(s);
	unsigned char len[2] = { (unsigned char)(n >> 8), (unsigned char)n };

	ad_put(ad, len, sizeof(len));
	ad_put(ad, s, n);
}

static void ad_put_u64(struct seal_ad *ad, uint64_t v)
{
	unsigned char b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (56 - 8 * i));
	ad_put(ad, b, sizeof(b));
}

void seal_ad_value(struct seal_ad *ad, const char *instance, const char *key,
		   uint64_t version)
{
	ad->len = 0;
	ad_put_str(ad, "vaultfs/value/1");
	ad_put_str(ad, instance);
	ad_put_str(ad, key);
	ad_put_u64(ad, version);
}

void seal_ad_wrap(struct seal_ad *ad, const char *instance, uint64_t generation)
{
	ad->len = 0;
	ad_put_str(ad, "vaultfs/wrap/1");
	ad_put_str(ad, instance);
	ad_put_u64(ad, generation);
}

/* The check value of a vault whose rows carry tags is sealed for era 2: a
 * store can't be passed off as one from before row tags (whose tags would
 * then be computed afresh over whatever the rows hold) without an older
 * copy of its check value. */
void seal_ad_check(struct seal_ad *ad, int era)
{
	ad->len = 0;
	ad_put_str(ad, era >= 2 ? "vaultfs/check/2" : "vaultfs/check/1");
}

void seal_ad_row_key(struct seal_ad *ad)
{
	ad->len = 0;
	ad_put_str(ad, "vaultfs/row-key/1");
}

void seal_ad_digest(struct seal_ad *ad, const void *a, size_t alen, const void *b,
		    size_t blen)
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, a, alen);
	crypto_generichash_update(&st, b, blen);
	crypto_generichash_final(&st, ad->buf, 32);
	ad->len = 32;
}

int seal_derive_in(struct secbuf **out, const unsigned char key[static SEAL_KEY_LEN],
		   uint64_t id, const char context[static 8])
{
	int r = secbuf_new(out, SEAL_KEY_LEN);

	if (r < 0)
		return r;
	(*out)->len = SEAL_KEY_LEN;
	if (crypto_kdf_derive_from_key((*out)->data, SEAL_KEY_LEN, id, context, key) != 0)
		r = -EINVAL;
	return r;
}

int seal_derive(struct secbuf **out, const unsigned char master[static SEAL_KEY_LEN],
		enum seal_subkey id)
{
	return seal_derive_in(out, master, (uint64_t)id, KDF_CONTEXT);
}

int seal_keygen(struct secbuf **out)
{
	int r = secbuf_new(out, SEAL_KEY_LEN);

	if (r < 0)
		return r;
	crypto_aead_xchacha20poly1305_ietf_keygen((*out)->data);
	(*out)->len = SEAL_KEY_LEN;
	return 0;
}

int seal_seal(unsigned char **blob, size_t *bloblen, const unsigned char key[static SEAL_KEY_LEN],
	      const struct seal_ad *ad, const unsigned char *pt, size_t ptlen)
{
	unsigned char *b;
	unsigned long long clen;

	*blob = NULL;
	*bloblen = 0;
	if (ptlen > SIZE_MAX - SEAL_OVERHEAD)
		return -EFBIG;
	b = malloc(ptlen + SEAL_OVERHEAD);
	if (!b)
		return -ENOMEM;
	b[0] = SEAL_FORMAT;
	randombytes_buf(b + 1, NONCE_LEN);
	crypto_aead_xchacha20poly1305_ietf_encrypt(b + 1 + NONCE_LEN, &clen, pt, ptlen,
						   ad->buf, ad->len, NULL, b + 1, key);
	*blob = b;
	*bloblen = 1 + NONCE_LEN + (size_t)clen;
	return 0;
}

int seal_open(struct secbuf **out, const unsigned char key[static SEAL_KEY_LEN],
	      const struct seal_ad *ad, const unsigned char *blob, size_t bloblen)
{
	struct secbuf *b;
	unsigned long long plen;
	size_t ptlen;
	int r;

	*out = NULL;
	if (!blob || bloblen < SEAL_OVERHEAD || blob[0] != SEAL_FORMAT)
		return -EINVAL;
	ptlen = bloblen - SEAL_OVERHEAD;
	r = secbuf_new(&b, ptlen);
	if (r < 0)
		return r;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(b->data, &plen, NULL,
						       blob + 1 + NONCE_LEN,
						       bloblen - 1 - NONCE_LEN,
						       ad->buf, ad->len, blob + 1, key) != 0) {
		secbuf_free(b);
		return -EBADMSG;
	}
	b->len = (size_t)plen;
	*out = b;
	return 0;
}
