/*
 * libFuzzer target: parsing a master key (crypto/key.c key_parse), the
 * bytes of a key file or $VAULTFS_KEY. Accepted are 32 raw bytes, or 64
 * hex digits with white space around them; the result must be exactly
 * that key, and anything else must be refused with the buffer left empty.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../crypto/key.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (secmem_init() < 0)
		abort();
	secmem_allow_unlocked(true);
	return 0;
}

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int is_space(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* 1 and the key in out when the input is a key, else 0. */
static int reference(const uint8_t *in, size_t n, uint8_t out[static KEY_LEN])
{
	if (n == KEY_LEN) {
		memcpy(out, in, KEY_LEN);
		return 1;
	}
	while (n && is_space(in[n - 1]))
		n--;
	while (n && is_space(in[0])) {
		in++;
		n--;
	}
	if (n != KEY_HEX_LEN)
		return 0;
	for (size_t i = 0; i < KEY_LEN; i++) {
		int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return 0;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t want[KEY_LEN];
	struct secbuf *b = NULL;
	int ok, r;

	if (secbuf_new(&b, KEY_LEN) < 0)
		abort();
	ok = reference(data, size, want);
	r = key_parse(b, data, size);
	if (ok && (r != 0 || b->len != KEY_LEN || memcmp(b->data, want, KEY_LEN)))
		abort();
	if (!ok && (r != -EINVAL || b->len != 0))
		abort();
	secbuf_free(b);
	return 0;
}
