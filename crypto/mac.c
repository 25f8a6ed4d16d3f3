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
