/* Key derivation and sealing (crypto/seal.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../crypto/seal.h"
#include "../../crypto/secmem.h"

static const unsigned char master[SEAL_KEY_LEN] = {
	0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
	0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b,
	0x1c, 0x1d, 0x1e, 0x1f,
};
static const unsigned char value[] = "sk-live-0123456789abcdefghijklmnopqrstuvwxyz";
#define VALUE_LEN (sizeof(value) - 1)
#define NAME_MAX_TEST 255

struct sealed {
	unsigned char *blob;
	size_t len;
};

static int group_setup(void **state)
{
	return secmem_init();
}

static void seal_value(struct sealed *s, const unsigned char *key, const char *instance,
		       const char *name, uint64_t version, const void *pt, size_t len)
{
	struct seal_ad ad;

	seal_ad_value(&ad, instance, name, version);
	s->blob = NULL;
	s->len = 0;
	assert_int_equal(seal_seal(&s->blob, &s->len, key, &ad, pt, len), 0);
	assert_non_null(s->blob);
	assert_int_equal(s->len, len + SEAL_OVERHEAD);
}

/* Opening must fail with want (or -EINVAL/-EBADMSG if want is 0), giving nothing. */
static void open_fails(const unsigned char *key, const struct seal_ad *ad,
		       const unsigned char *blob, size_t len, int want)
{
	struct secbuf *out = (struct secbuf *)&out;
	int r = seal_open(&out, key, ad, blob, len);

	if (want)
		assert_int_equal(r, want);
	else if (r != -EINVAL && r != -EBADMSG)
		fail_msg("blob of %zu bytes: got %d, want -EINVAL or -EBADMSG", len, r);
	assert_null(out);
}

static void test_derive(void **state)
{
	struct secbuf *w1 = NULL, *w2 = NULL, *a = NULL, *o = NULL;
	unsigned char other[SEAL_KEY_LEN];

	memcpy(other, master, sizeof(other));
	other[31] ^= 1;
	assert_int_equal(seal_derive(&w1, master, SEAL_SUBKEY_WRAP), 0);
	assert_int_equal(seal_derive(&w2, master, SEAL_SUBKEY_WRAP), 0);
	assert_int_equal(seal_derive(&a, master, SEAL_SUBKEY_AUDIT), 0);
	assert_int_equal(seal_derive(&o, other, SEAL_SUBKEY_WRAP), 0);
	assert_int_equal(w1->len, SEAL_KEY_LEN);
	assert_int_equal(a->len, SEAL_KEY_LEN);
	assert_memory_equal(w1->data, w2->data, SEAL_KEY_LEN);
	assert_memory_not_equal(w1->data, a->data, SEAL_KEY_LEN);
	assert_memory_not_equal(w1->data, o->data, SEAL_KEY_LEN);
	assert_memory_not_equal(w1->data, master, SEAL_KEY_LEN);
	assert_memory_not_equal(a->data, master, SEAL_KEY_LEN);
	secbuf_free(w1);
	secbuf_free(w2);
	secbuf_free(a);
	secbuf_free(o);
}

/* A subkey in a context of its own (the worker's handle records): the
 * vault's context gives the vault's subkeys, another context others. */
static void test_derive_in(void **state)
{
	struct secbuf *w = NULL, *same = NULL, *h = NULL;

	assert_int_equal(seal_derive(&w, master, SEAL_SUBKEY_WRAP), 0);
	assert_int_equal(seal_derive_in(&same, master, SEAL_SUBKEY_WRAP, "vaultfs1"), 0);
	assert_int_equal(seal_derive_in(&h, master, SEAL_SUBKEY_WRAP, "vfshandl"), 0);
	assert_memory_equal(w->data, same->data, SEAL_KEY_LEN);
	assert_memory_not_equal(w->data, h->data, SEAL_KEY_LEN);
	secbuf_free(w);
	secbuf_free(same);
	secbuf_free(h);
}

/* A digest as associated data binds both parts, in their order. */
static void test_ad_digest(void **state)
{
	struct seal_ad x, y, z;
	const char ab[] = "ab";

	seal_ad_digest(&x, "a", 1, "b", 1);
	seal_ad_digest(&y, ab, 1, ab + 1, 1);
	seal_ad_digest(&z, "b", 1, "a", 1);
	assert_int_equal(x.len, 32);
	assert_memory_equal(x.buf, y.buf, 32);
	assert_memory_not_equal(x.buf, z.buf, 32);
}

static void test_keygen(void **state)
{
	struct secbuf *k1 = NULL, *k2 = NULL;
	static const unsigned char zero[SEAL_KEY_LEN];

	assert_int_equal(seal_keygen(&k1), 0);
	assert_int_equal(seal_keygen(&k2), 0);
	assert_int_equal(k1->len, SEAL_KEY_LEN);
	assert_int_equal(k2->len, SEAL_KEY_LEN);
	assert_memory_not_equal(k1->data, k2->data, SEAL_KEY_LEN);
	assert_memory_not_equal(k1->data, zero, SEAL_KEY_LEN);
	secbuf_free(k1);
	secbuf_free(k2);
}

static void test_round_trip(void **state)
{
	struct secbuf *out = NULL;
	struct sealed s;
	struct seal_ad ad;
	size_t before = secmem_locked_bytes();

	seal_value(&s, master, "billing", "OPENAI_API_KEY", 3, value, VALUE_LEN);
	assert_null(memmem(s.blob, s.len, "sk-live", 7));
	seal_ad_value(&ad, "billing", "OPENAI_API_KEY", 3);
	assert_int_equal(seal_open(&out, master, &ad, s.blob, s.len), 0);
	assert_non_null(out);
	assert_int_equal(out->len, VALUE_LEN);
	assert_memory_equal(out->data, value, VALUE_LEN);
	/* The plaintext is in locked memory. */
	assert_true(secmem_locked_bytes() > before);
	secbuf_free(out);
	assert_int_equal(secmem_locked_bytes(), before);
	free(s.blob);
}

static void test_round_trip_sizes(void **state)
{
	static const size_t sizes[] = { 0, 1, 15, 16, 17, 4095, 4096, 4097, 1 << 20 };
	unsigned char *pt = malloc(1 << 20);
	struct secbuf *out = NULL;
	struct seal_ad ad;
	struct sealed s;

	assert_non_null(pt);
	for (size_t i = 0; i < (size_t)1 << 20; i++)
		pt[i] = (unsigned char)(i * 31 + (i >> 8));
	seal_ad_value(&ad, "i", "k", 1);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		seal_value(&s, master, "i", "k", 1, pt, sizes[i]);
		assert_int_equal(seal_open(&out, master, &ad, s.blob, s.len), 0);
		assert_int_equal(out->len, sizes[i]);
		if (sizes[i])
			assert_memory_equal(out->data, pt, sizes[i]);
		secbuf_free(out);
		free(s.blob);
	}
	free(pt);
}

static void test_random_nonce(void **state)
{
	struct sealed a, b;

	seal_value(&a, master, "billing", "K", 1, value, VALUE_LEN);
	seal_value(&b, master, "billing", "K", 1, value, VALUE_LEN);
	assert_int_equal(a.len, b.len);
	assert_memory_not_equal(a.blob, b.blob, a.len);
	/* The nonce itself differs, not just the tag. */
	assert_memory_not_equal(a.blob + 1, b.blob + 1, 24);
	free(a.blob);
	free(b.blob);
}

static void test_ad_mismatch(void **state)
{
	struct seal_ad ad;
	struct sealed s;

	seal_value(&s, master, "billing", "OPENAI_API_KEY", 7, value, VALUE_LEN);
	seal_ad_value(&ad, "support", "OPENAI_API_KEY", 7);
	open_fails(master, &ad, s.blob, s.len, -EBADMSG);
	seal_ad_value(&ad, "billing", "STRIPE_API_KEY", 7);
	open_fails(master, &ad, s.blob, s.len, -EBADMSG);
	seal_ad_value(&ad, "billing", "OPENAI_API_KEY", 6);
	open_fails(master, &ad, s.blob, s.len, -EBADMSG);
	seal_ad_value(&ad, "billing", "OPENAI_API_KEY", 8);
	open_fails(master, &ad, s.blob, s.len, -EBADMSG);
	seal_ad_value(&ad, "billing", "OPENAI_API_KEY", 7 + ((uint64_t)1 << 32));
	open_fails(master, &ad, s.blob, s.len, -EBADMSG);
	seal_ad_wrap(&ad, "billing", 7);
	open_fails(master, &ad, s.blob, s.len, -EBADMSG);
	seal_ad_check(&ad, 2);
	open_fails(master, &ad, s.blob, s.len, -EBADMSG);
	free(s.blob);

	/* Where one name ends and the next begins is part of the binding. */
	seal_value(&s, master, "ab", "c", 1, value, VALUE_LEN);
	seal_ad_value(&ad, "a", "bc", 1);
	open_fails(master, &ad, s.blob, s.len, -EBADMSG);
	free(s.blob);
}

static void test_ad_wrap_and_check(void **state)
{
	struct secbuf *dk = NULL, *out = NULL;
	unsigned char *blob = NULL;
	struct seal_ad ad;
	size_t len = 0;

	assert_int_equal(seal_keygen(&dk), 0);
	seal_ad_wrap(&ad, "billing", 2);
	assert_int_equal(seal_seal(&blob, &len, master, &ad, dk->data, dk->len), 0);
	assert_int_equal(seal_open(&out, master, &ad, blob, len), 0);
	assert_int_equal(out->len, SEAL_KEY_LEN);
	assert_memory_equal(out->data, dk->data, SEAL_KEY_LEN);
	secbuf_free(out);
	seal_ad_wrap(&ad, "billing", 3);
	open_fails(master, &ad, blob, len, -EBADMSG);
	seal_ad_wrap(&ad, "billing2", 2);
	open_fails(master, &ad, blob, len, -EBADMSG);
	seal_ad_value(&ad, "billing", "", 2);
	open_fails(master, &ad, blob, len, -EBADMSG);
	free(blob);

	seal_ad_check(&ad, 2);
	assert_int_equal(seal_seal(&blob, &len, master, &ad, (const unsigned char *)"ok", 2), 0);
	assert_int_equal(seal_open(&out, master, &ad, blob, len), 0);
	assert_memory_equal(out->data, "ok", 2);
	secbuf_free(out);
	seal_ad_wrap(&ad, "", 0);
	open_fails(master, &ad, blob, len, -EBADMSG);
	free(blob);
	secbuf_free(dk);
}

static void test_long_names_fit(void **state)
{
	char name[NAME_MAX_TEST + 1];
	struct secbuf *out = NULL;
	struct seal_ad ad, ad2;
	struct sealed s;

	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	seal_ad_value(&ad, name, name, UINT64_MAX);
	assert_true(ad.len > 2 * 255);
	assert_true(ad.len <= sizeof(ad.buf));
	seal_value(&s, master, name, name, UINT64_MAX, value, VALUE_LEN);
	assert_int_equal(seal_open(&out, master, &ad, s.blob, s.len), 0);
	secbuf_free(out);
	name[254] = '\0';
	seal_ad_value(&ad2, name, name, UINT64_MAX);
	open_fails(master, &ad2, s.blob, s.len, -EBADMSG);
	free(s.blob);
}

static void test_wrong_key(void **state)
{
	unsigned char other[SEAL_KEY_LEN];
	struct seal_ad ad;
	struct sealed s;

	memcpy(other, master, sizeof(other));
	other[0] ^= 0x80;
	seal_value(&s, master, "i", "k", 1, value, VALUE_LEN);
	seal_ad_value(&ad, "i", "k", 1);
	open_fails(other, &ad, s.blob, s.len, -EBADMSG);
	free(s.blob);
}

static void test_tamper(void **state)
{
	struct secbuf *out = NULL;
	struct seal_ad ad;
	struct sealed s;

	seal_value(&s, master, "i", "k", 1, value, VALUE_LEN);
	seal_ad_value(&ad, "i", "k", 1);
	for (size_t i = 0; i < s.len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			s.blob[i] ^= (unsigned char)(1 << bit);
			/* Byte 0 is the format: another one is "not a blob". */
			open_fails(master, &ad, s.blob, s.len, i ? -EBADMSG : 0);
			s.blob[i] ^= (unsigned char)(1 << bit);
		}
	}
	assert_int_equal(seal_open(&out, master, &ad, s.blob, s.len), 0);
	assert_memory_equal(out->data, value, VALUE_LEN);
	secbuf_free(out);
	free(s.blob);
}

static void test_truncated(void **state)
{
	unsigned char *longer;
	struct seal_ad ad;
	struct sealed s;

	seal_value(&s, master, "i", "k", 1, value, VALUE_LEN);
	seal_ad_value(&ad, "i", "k", 1);
	for (size_t n = 0; n < s.len; n++)
		open_fails(master, &ad, s.blob, n, 0);
	for (size_t n = 0; n < SEAL_OVERHEAD; n++)
		open_fails(master, &ad, s.blob, n, -EINVAL);
	open_fails(master, &ad, NULL, 0, -EINVAL);

	longer = malloc(s.len + 1);
	assert_non_null(longer);
	memcpy(longer, s.blob, s.len);
	longer[s.len] = 0;
	open_fails(master, &ad, longer, s.len + 1, 0);
	free(longer);
	free(s.blob);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_derive),
		cmocka_unit_test(test_derive_in),
		cmocka_unit_test(test_ad_digest),
		cmocka_unit_test(test_keygen),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_round_trip_sizes),
		cmocka_unit_test(test_random_nonce),
		cmocka_unit_test(test_ad_mismatch),
		cmocka_unit_test(test_ad_wrap_and_check),
		cmocka_unit_test(test_long_names_fit),
		cmocka_unit_test(test_wrong_key),
		cmocka_unit_test(test_tamper),
		cmocka_unit_test(test_truncated),
	};

	return cmocka_run_group_tests_name("seal", tests, group_setup, NULL);
}
