/* Row authentication tags: keyed BLAKE2b over the encoding of a row's
 * access and identity fields (db/ encodes; it never holds the key). */
#ifndef VAULTFS_MAC_H
#define VAULTFS_MAC_H

#include <stdbool.h>
#include <stddef.h>

#define MAC_LEN 32
#define MAC_KEY_LEN 32

void mac_compute(unsigned char out[static MAC_LEN], const unsigned char key[static MAC_KEY_LEN],
		 const unsigned char *msg, size_t len);
/* true if tag (tag_len bytes) is msg's tag under key; constant time. */
bool mac_verify(const unsigned char *tag, size_t tag_len,
		const unsigned char key[static MAC_KEY_LEN], const unsigned char *msg,
		size_t len);

#endif
