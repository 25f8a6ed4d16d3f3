/*
 * libFuzzer target: sealed blobs (crypto/seal.c).
 *
 * The first byte picks a mode:
 *  - open: the rest is a blob from the database; seal_open() under a fixed
 *    key must refuse it cleanly (-EINVAL, -EBADMSG) or, for a blob that
 *    really was sealed under that key (the seeds), return its plaintext;
 *  - round trip: the rest gives names, a version and a plaintext; what is
 *    sealed opens to the same bytes, and not under other associated data,
 *    nor with any one byte of the blob changed.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../crypto/seal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned char key[SEAL_KEY_LEN];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (secmem_init() < 0)
		abort();
	secmem_allow_unlocked(true);
	memset(key, 0x42, sizeof(key));
	return 0;
}

static void open_blob(const uint8_t *blob, size_t n)
{
	struct secbuf *pt = NULL;
	struct seal_ad ad;
	int r;

	seal_ad_value(&ad, "app", "K", 1);
	r = seal_open(&pt, key, &ad, blob, n);
	if (r == 0 && (!pt || pt->len != n - SEAL_OVERHEAD))
		abort();
	if (r != 0 && (pt || (r != -EINVAL && r != -EBADMSG)))
		abort();
	secbuf_free(pt);
}

/* A C string of at most 255 bytes from the input: names in the AD. */
static size_t take_name(const uint8_t **p, size_t *n, char out[static 256])
{
	size_t len = *n ? (size_t)(**p % 64) : 0, i;

	if (*n)
		(*p)++, (*n)--;
	if (len > *n)
		len = *n;
	for (i = 0; i < len; i++)
		out[i] = (*p)[i] ? (char)(*p)[i] : 'x';
	out[len] = '\0';
	*p += len;
	*n -= len;
	return len;
}

static void round_trip(const uint8_t *p, size_t n)
{
	char inst[256], name[256];
	struct secbuf *pt = NULL;
	unsigned char *blob = NULL;
	struct seal_ad ad, other;
	uint64_t version = 0;
	size_t bloblen, flip;
	int r;

	take_name(&p, &n, inst);
	take_name(&p, &n, name);
	for (int i = 0; i < 8 && n; i++, p++, n--)
		version = version << 8 | *p;
	seal_ad_value(&ad, inst, name, version);
	if (seal_seal(&blob, &bloblen, key, &ad, p, n) != 0)
		abort();
	if (bloblen != n + SEAL_OVERHEAD)
		abort();
	r = seal_open(&pt, key, &ad, blob, bloblen);
	if (r != 0 || pt->len != n || (n && memcmp(pt->data, p, n)))
		abort();
	secbuf_free(pt);
	pt = NULL;
	seal_ad_value(&other, inst, name, version + 1);
	if (seal_open(&pt, key, &other, blob, bloblen) != -EBADMSG || pt)
		abort();
	flip = (n * 7919 + version) % bloblen;
	blob[flip] ^= 0x01;
	r = seal_open(&pt, key, &ad, blob, bloblen);
	if (r != (flip == 0 ? -EINVAL : -EBADMSG) || pt)
		abort();
	free(blob);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1)
		round_trip(data + 1, size - 1);
	else
		open_blob(data + 1, size - 1);
	return 0;
}
