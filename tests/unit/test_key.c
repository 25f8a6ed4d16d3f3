/* The master key (crypto/key.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixture.h"

#include "../../crypto/key.h"
#include "../../crypto/secmem.h"

extern char **environ;

#define HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define HEX_FF "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define HEX_UPPER "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"

static const unsigned char key_bytes[KEY_LEN] = {
	0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
	0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b,
	0x1c, 0x1d, 0x1e, 0x1f,
};

struct fx {
	struct tmpdir tmp;
	char path[128];
	char err[512];
	char warn[512];
};

static int group_setup(void **state)
{
	return secmem_init();
}

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	if (tmpdir_make(&fx->tmp, "key") < 0) {
		free(fx);
		return -1;
	}
	snprintf(fx->path, sizeof(fx->path), "%s/master.key", fx->tmp.path);
	unsetenv(KEY_ENV);
	unsetenv("CREDENTIALS_DIRECTORY");
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	unsetenv(KEY_ENV);
	unsetenv("CREDENTIALS_DIRECTORY");
	tmpdir_remove(&fx->tmp);
	free(fx);
	return 0;
}

static void file_write(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(close(fd), 0);
}

static int load(struct fx *fx, const char *file, struct secbuf **key)
{
	struct key_source src = { .file = file };

	*key = (struct secbuf *)key;
	memset(fx->err, 'E', sizeof(fx->err) - 1);
	fx->err[sizeof(fx->err) - 1] = '\0';
	memset(fx->warn, 'W', sizeof(fx->warn) - 1);
	fx->warn[sizeof(fx->warn) - 1] = '\0';
	return key_load(key, &src, fx->err, sizeof(fx->err), fx->warn, sizeof(fx->warn));
}

static bool env_has_key(void)
{
	for (char **e = environ; e && *e; e++)
		if (!strncmp(*e, KEY_ENV "=", strlen(KEY_ENV) + 1))
			return true;
	return getenv(KEY_ENV) != NULL;
}

static void parse_ok(const char *in, size_t len)
{
	struct secbuf *k = NULL;

	assert_int_equal(secbuf_new(&k, KEY_LEN), 0);
	if (key_parse(k, (const unsigned char *)in, len) != 0)
		fail_msg("key of %zu bytes should parse", len);
	assert_int_equal(k->len, KEY_LEN);
	assert_memory_equal(k->data, key_bytes, KEY_LEN);
	secbuf_free(k);
}

static void parse_bad(const char *in, size_t len)
{
	struct secbuf *k = NULL;

	assert_int_equal(secbuf_new(&k, KEY_LEN), 0);
	if (key_parse(k, (const unsigned char *)in, len) != -EINVAL)
		fail_msg("'%.*s' (%zu bytes) should be refused", (int)len, in, len);
	secbuf_free(k);
}

static void test_parse(void **state)
{
	char raw[KEY_LEN + 1];

	parse_ok(HEX, 64);
	parse_ok(HEX "\n", 65);
	parse_ok(HEX "\r\n", 66);
	parse_ok("  " HEX " \n", 68);
	parse_ok(HEX_UPPER "\n", 65);
	memcpy(raw, key_bytes, KEY_LEN);
	parse_ok(raw, KEY_LEN);

	parse_bad("", 0);
	parse_bad(HEX, 63);
	parse_bad(HEX "0", 65);
	parse_bad(HEX HEX, 128);
	parse_bad("0g0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 64);
	parse_bad(HEX "\n", 62);
	parse_bad("00 0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 65);
	parse_bad("0x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 64);
	parse_bad("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1-", 64);
	parse_bad(raw, KEY_LEN - 1);
	memcpy(raw, key_bytes, KEY_LEN);
	raw[KEY_LEN] = 'x';
	parse_bad(raw, KEY_LEN + 1);
}

/* rotate-key and restore refuse a "new" key that is the one in use. */
static void test_equal(void **state)
{
	struct secbuf *a = NULL, *b = NULL, *c = NULL;

	assert_int_equal(secmem_init(), 0);
	assert_int_equal(secbuf_new(&a, KEY_LEN), 0);
	assert_int_equal(secbuf_new(&b, KEY_LEN), 0);
	assert_int_equal(secbuf_new(&c, KEY_LEN), 0);
	assert_int_equal(key_parse(a, (const unsigned char *)HEX, 64), 0);
	assert_int_equal(key_parse(b, (const unsigned char *)HEX_UPPER "\n", 65), 0);
	assert_int_equal(key_parse(c, (const unsigned char *)HEX_FF, 64), 0);
	assert_true(key_equal(a, b));
	assert_false(key_equal(a, c));
	c->len = 0;
	assert_false(key_equal(a, c));
	secbuf_free(a);
	secbuf_free(b);
	secbuf_free(c);
}

/* A raw key is taken as it is, even when it ends in a byte that looks like white space. */
static void test_parse_raw_space(void **state)
{
	unsigned char raw[KEY_LEN];
	struct secbuf *k = NULL;

	memset(raw, ' ', sizeof(raw));
	raw[KEY_LEN - 1] = '\n';
	assert_int_equal(secbuf_new(&k, KEY_LEN), 0);
	assert_int_equal(key_parse(k, raw, sizeof(raw)), 0);
	assert_int_equal(k->len, KEY_LEN);
	assert_memory_equal(k->data, raw, KEY_LEN);
	secbuf_free(k);
}

static bool all_hex(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static void test_generate(void **state)
{
	struct secbuf *a = NULL, *b = NULL, *k = NULL;

	assert_int_equal(key_generate_hex(&a), 0);
	assert_int_equal(key_generate_hex(&b), 0);
	assert_int_equal(a->len, KEY_HEX_LEN);
	assert_int_equal(b->len, KEY_HEX_LEN);
	assert_true(a->cap > KEY_HEX_LEN);
	assert_int_equal(a->data[KEY_HEX_LEN], '\0');
	assert_int_equal(strlen((const char *)a->data), KEY_HEX_LEN);
	assert_true(all_hex(a->data, a->len));
	assert_true(all_hex(b->data, b->len));
	assert_memory_not_equal(a->data, b->data, KEY_HEX_LEN);
	assert_int_equal(secbuf_new(&k, KEY_LEN), 0);
	assert_int_equal(key_parse(k, a->data, a->len), 0);
	assert_int_equal(k->len, KEY_LEN);
	secbuf_free(k);
	secbuf_free(a);
	secbuf_free(b);
}

static void test_write_file(void **state)
{
	struct fx *fx = *state;
	struct secbuf *hex = NULL, *key = NULL, *k2 = NULL;
	char buf[128];
	struct stat st;
	mode_t old;
	int fd;

	assert_int_equal(key_generate_hex(&hex), 0);
	old = umask(0);
	assert_int_equal(key_write_file(fx->path, hex), 0);
	umask(old);
	assert_int_equal(lstat(fx->path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_uid, geteuid());
	fd = open(fx->path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, sizeof(buf)), KEY_HEX_LEN + 1);
	close(fd);
	assert_memory_equal(buf, hex->data, KEY_HEX_LEN);
	assert_int_equal(buf[KEY_HEX_LEN], '\n');

	/* What was written loads back as the same key. */
	assert_int_equal(load(fx, fx->path, &key), 0);
	assert_string_equal(fx->warn, "");
	assert_int_equal(secbuf_new(&k2, KEY_LEN), 0);
	assert_int_equal(key_parse(k2, hex->data, hex->len), 0);
	assert_int_equal(key->len, KEY_LEN);
	assert_memory_equal(key->data, k2->data, KEY_LEN);
	secbuf_free(key);
	secbuf_free(k2);

	/* An existing file is never overwritten. */
	assert_int_equal(key_write_file(fx->path, hex), -EEXIST);
	file_write(fx->path, "old", 3, 0600);
	assert_int_equal(key_write_file(fx->path, hex), -EEXIST);
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_size, 3);

	/* Nor is a file reached through a symlink, dangling or not. */
	snprintf(buf, sizeof(buf), "%s/link.key", fx->tmp.path);
	assert_int_equal(symlink(fx->path, buf), 0);
	assert_int_equal(key_write_file(buf, hex), -EEXIST);
	assert_int_equal(unlink(fx->path), 0);
	assert_int_equal(key_write_file(buf, hex), -EEXIST);
	assert_int_equal(access(fx->path, F_OK), -1);

	snprintf(buf, sizeof(buf), "%s/nosuch/master.key", fx->tmp.path);
	assert_int_equal(key_write_file(buf, hex), -ENOENT);
	secbuf_free(hex);
}

static void test_load_file(void **state)
{
	struct fx *fx = *state;
	struct secbuf *key = NULL;

	file_write(fx->path, HEX "\n", 65, 0600);
	assert_int_equal(load(fx, fx->path, &key), 0);
	assert_non_null(key);
	assert_int_equal(key->len, KEY_LEN);
	assert_memory_equal(key->data, key_bytes, KEY_LEN);
	assert_string_equal(fx->warn, "");
	secbuf_free(key);

	file_write(fx->path, key_bytes, KEY_LEN, 0400);
	assert_int_equal(load(fx, fx->path, &key), 0);
	assert_memory_equal(key->data, key_bytes, KEY_LEN);
	assert_string_equal(fx->warn, "");
	secbuf_free(key);
}

/* A key file others may read or write, or that another user owns, is
 * refused with the fix in the message, and no key comes back. */
static void test_load_file_refuses_shared(void **state)
{
	static const mode_t modes[] = { 0644, 0640, 0604, 0660, 0620, 0602 };
	struct fx *fx = *state;
	struct secbuf *key = NULL;

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		file_write(fx->path, HEX "\n", 65, modes[i]);
		assert_int_equal(load(fx, fx->path, &key), -EPERM);
		assert_null(key);
		assert_non_null(strstr(fx->err, "chmod 600"));
		assert_non_null(strstr(fx->err, fx->path));
		assert_null(strstr(fx->err, HEX));
	}
	if (geteuid() != 0)
		return;
	file_write(fx->path, HEX "\n", 65, 0600);
	assert_int_equal(chown(fx->path, 12345, 0), 0);
	assert_int_equal(load(fx, fx->path, &key), -EPERM);
	assert_null(key);
	assert_non_null(strstr(fx->err, "owned by uid 12345"));
	assert_non_null(strstr(fx->err, "chown"));
}

static void test_load_file_bad(void **state)
{
	static const char *const bad[] = {
		"", "\n", HEX "0\n", "not a key\n", HEX "\n" HEX "\n",
	};
	struct fx *fx = *state;
	struct secbuf *key = NULL;
	char big[4096], p[PATH_MAX];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		file_write(fx->path, bad[i], strlen(bad[i]), 0600);
		if (load(fx, fx->path, &key) >= 0)
			fail_msg("key file #%zu should be refused", i);
		assert_null(key);
		assert_true(fx->err[0] && fx->err[0] != 'E');
		assert_non_null(strstr(fx->err, fx->path));
	}
	/* Key material stays out of messages. */
	file_write(fx->path, HEX "ff\n", 67, 0600);
	assert_true(load(fx, fx->path, &key) < 0);
	assert_null(strstr(fx->err, "0102030405"));

	memset(big, 'a', sizeof(big));
	file_write(fx->path, big, sizeof(big), 0600);
	assert_true(load(fx, fx->path, &key) < 0);
	assert_null(key);

	snprintf(p, sizeof(p), "%s/nosuch.key", fx->tmp.path);
	assert_int_equal(load(fx, p, &key), -ENOENT);
	assert_null(key);
	assert_non_null(strstr(fx->err, p));

	snprintf(p, sizeof(p), "%s/sub", fx->tmp.path);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_true(load(fx, p, &key) < 0);
	assert_null(key);
	assert_non_null(strstr(fx->err, p));

	file_write(fx->path, HEX "\n", 65, 0600);
	snprintf(p, sizeof(p), "%s/link.key", fx->tmp.path);
	assert_int_equal(symlink(fx->path, p), 0);
	assert_true(load(fx, p, &key) < 0);
	assert_null(key);
}

static void test_load_env(void **state)
{
	struct fx *fx = *state;
	struct secbuf *key = NULL;

	assert_int_equal(setenv(KEY_ENV, HEX, 1), 0);
	assert_int_equal(load(fx, NULL, &key), 0);
	assert_non_null(key);
	assert_int_equal(key->len, KEY_LEN);
	assert_memory_equal(key->data, key_bytes, KEY_LEN);
	assert_false(env_has_key());
	secbuf_free(key);

	/* An empty file name means "no file". */
	assert_int_equal(setenv(KEY_ENV, HEX "\n", 1), 0);
	assert_int_equal(load(fx, "", &key), 0);
	assert_memory_equal(key->data, key_bytes, KEY_LEN);
	assert_false(env_has_key());
	secbuf_free(key);
}

static void test_load_env_bad(void **state)
{
	static const char *const bad[] = {
		"", "xyz", HEX "0",
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1g",
	};
	struct fx *fx = *state;
	struct secbuf *key = NULL;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(setenv(KEY_ENV, bad[i], 1), 0);
		if (load(fx, NULL, &key) >= 0)
			fail_msg("VAULTFS_KEY #%zu should be refused", i);
		assert_null(key);
		assert_non_null(strstr(fx->err, KEY_ENV));
		assert_false(env_has_key());
	}
}

/* The environment takes 64 hex only: a 32-character password is not a key. */
static void test_load_env_not_raw(void **state)
{
	struct fx *fx = *state;
	struct secbuf *key = NULL;
	int r;

	assert_int_equal(setenv(KEY_ENV, "correct-horse-battery-staple-123", 1), 0);
	assert_int_equal(strlen(getenv(KEY_ENV)), KEY_LEN);
	r = load(fx, NULL, &key);
	if (r == 0)
		secbuf_free(key);
	assert_true(r < 0);
	assert_null(key);
	assert_false(env_has_key());
}

static void test_file_beats_env(void **state)
{
	struct fx *fx = *state;
	struct secbuf *key = NULL;

	file_write(fx->path, HEX "\n", 65, 0600);
	assert_int_equal(setenv(KEY_ENV, HEX_FF, 1), 0);
	assert_int_equal(load(fx, fx->path, &key), 0);
	assert_memory_equal(key->data, key_bytes, KEY_LEN);
	assert_false(env_has_key());
	secbuf_free(key);
}

static void test_load_credential(void **state)
{
	struct fx *fx = *state;
	struct secbuf *key = NULL;
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s/%s", fx->tmp.path, KEY_CREDENTIAL);
	file_write(p, HEX, 64, 0400);
	assert_int_equal(setenv("CREDENTIALS_DIRECTORY", fx->tmp.path, 1), 0);
	assert_int_equal(load(fx, NULL, &key), 0);
	assert_non_null(key);
	assert_memory_equal(key->data, key_bytes, KEY_LEN);
	assert_string_equal(fx->warn, "");
	secbuf_free(key);

	/* The environment comes before the credential. */
	assert_int_equal(setenv(KEY_ENV, HEX_FF, 1), 0);
	assert_int_equal(load(fx, NULL, &key), 0);
	assert_int_equal(key->data[0], 0xff);
	secbuf_free(key);

	assert_int_equal(unlink(p), 0);
	assert_true(load(fx, NULL, &key) < 0);
	assert_null(key);
	assert_non_null(strstr(fx->err, p));
}

static void test_no_source(void **state)
{
	struct fx *fx = *state;
	struct secbuf *key = NULL;

	assert_true(load(fx, NULL, &key) < 0);
	assert_null(key);
	assert_true(fx->err[0] && fx->err[0] != 'E');
	assert_int_equal(setenv("CREDENTIALS_DIRECTORY", "", 1), 0);
	assert_true(load(fx, NULL, &key) < 0);
	assert_null(key);
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_parse_raw_space),
		cmocka_unit_test(test_equal),
		cmocka_unit_test(test_generate),
		FX_TEST(test_write_file),
		FX_TEST(test_load_file),
		FX_TEST(test_load_file_refuses_shared),
		FX_TEST(test_load_file_bad),
		FX_TEST(test_load_env),
		FX_TEST(test_load_env_bad),
		FX_TEST(test_load_env_not_raw),
		FX_TEST(test_file_beats_env),
		FX_TEST(test_load_credential),
		FX_TEST(test_no_source),
	};

	return cmocka_run_group_tests_name("key", tests, group_setup, NULL);
}
