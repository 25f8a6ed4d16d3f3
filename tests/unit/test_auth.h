/* For unit tests that open the store directly: row tags under a fixed
 * test key, as the vault sets them (fs/vault.c). Include after db.h. */
#ifndef VAULTFS_TEST_AUTH_H
#define VAULTFS_TEST_AUTH_H

#include "../../crypto/mac.h"
#include "../../db/db.h"

static const unsigned char test_row_key[MAC_KEY_LEN] = "vaultfs unit-test row tag key!!";
static unsigned test_row_failures;

static void test_row_mac(void *ctx, const unsigned char *msg, size_t len,
			 unsigned char out[DB_MAC_LEN])
{
	mac_compute(out, ctx, msg, len);
}

static void test_row_elem(void *ctx, const unsigned char msg[16], unsigned char out[DB_ELEM_LEN])
{
	unsigned char k[MAC_SHORT_KEY_LEN];

	mac_derive(k, sizeof(k), ctx, "vaultfs/state-sum/1");
	mac_short(out, k, msg, 16);
}

static void test_row_failed(void *ctx, const char *what)
{
	test_row_failures++;
}

static const struct db_auth test_auth = {
	.mac = test_row_mac, .elem = test_row_elem, .failed = test_row_failed, .ctx = (void *)test_row_key,
};

static inline int test_db_open(struct db **out, const char *path, int flags)
{
	int r = db_open(out, path, flags);

	if (r == 0)
		db_set_auth(*out, &test_auth);
	return r;
}
#define db_open(out, path, flags) test_db_open(out, path, flags)

#endif
