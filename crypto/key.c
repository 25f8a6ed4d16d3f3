/*
 * The master key. Rules this file keeps:
 *  - the key is read with read(2) straight into locked memory, never stdio;
 *  - key files are opened with O_NOFOLLOW and checked with fstat; one that
 *    group or others may read or write, or that someone other than root or
 *    the reader owns, is refused;
 *  - $VAULTFS_KEY is wiped in place and removed from the environment once
 *    read, so /proc/PID/environ and children don't see it;
 *  - hex is decoded with libsodium's constant-time decoder;
 *  - error messages name files and reasons, never key material.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "key.h"

#define KEY_READ_MAX 256

static bool is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int key_parse(struct secbuf *out, const unsigned char *in, size_t len)
{
	size_t bin_len = 0;
	int r;

	if (len == KEY_LEN)
		return secbuf_set(out, in, len);
	while (len && is_space(in[len - 1]))
		len--;
	while (len && is_space(in[0])) {
		in++;
		len--;
	}
	if (len != KEY_HEX_LEN)
		return -EINVAL;
	r = secbuf_reserve(out, KEY_LEN);
	if (r < 0)
		return r;
	if (sodium_hex2bin(out->data, KEY_LEN, (const char *)in, len, NULL, &bin_len, NULL) != 0 ||
	    bin_len != KEY_LEN) {
		sodium_memzero(out->data, out->cap);
		out->len = 0;
		return -EINVAL;
	}
	out->len = KEY_LEN;
	return 0;
}

/* Reads a whole small file into a locked buffer. */
static int read_key_fd(int fd, struct secbuf *raw)
{
	ssize_t n;

	raw->len = 0;
	for (;;) {
		n = read(fd, raw->data + raw->len, raw->cap - raw->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		raw->len += (size_t)n;
		if (raw->len == raw->cap)
			return -EFBIG;
	}
}

static int load_file(struct secbuf *key, const char *path, const char *what,
		     char *err, size_t errlen, char *warn, size_t warnlen)
{
	struct secbuf *raw = NULL;
	struct stat st;
	int fd, r;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "%s %s: %s", what, path, strerror(-r));
		return r;
	}
	r = -EINVAL;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s %s: not a regular file", what, path);
		goto out;
	}
	/* Whoever reads the key reads every secret; whoever writes it decides
	 * which key seals new ones. */
	if (st.st_mode & 077) {
		snprintf(err, errlen, "%s %s is readable or writable by group or others "
			 "(mode %04o): refusing it; run: chmod 600 %s", what, path,
			 (unsigned)(st.st_mode & 07777), path);
		r = -EPERM;
		goto out;
	}
	if (st.st_uid != 0 && st.st_uid != geteuid()) {
		snprintf(err, errlen, "%s %s is owned by uid %u, not by root or uid %u that "
			 "reads it: refusing it; run: chown %u %s", what, path,
			 (unsigned)st.st_uid, (unsigned)geteuid(), (unsigned)geteuid(), path);
		r = -EPERM;
		goto out;
	}
	r = secbuf_new(&raw, KEY_READ_MAX);
	if (r < 0) {
		snprintf(err, errlen, "cannot lock memory for the master key");
		goto out;
	}
	r = read_key_fd(fd, raw);
	if (r < 0 && r != -EFBIG) {
		snprintf(err, errlen, "%s %s: %s", what, path, strerror(-r));
		goto out;
	}
	if (r == -EFBIG || key_parse(key, raw->data, raw->len) < 0) {
		r = -EINVAL;
		snprintf(err, errlen, "%s %s: not a master key (want 32 raw bytes "
			 "or 64 hex characters)", what, path);
		goto out;
	}
	r = 0;
out:
	secbuf_free(raw);
	close(fd);
	return r;
}

static int load_env(struct secbuf *key, char *env, char *err, size_t errlen)
{
	/* Only hex: 32 raw bytes can't travel in an environment string. */
	int r = strlen(env) == KEY_LEN ? -EINVAL :
		key_parse(key, (const unsigned char *)env, strlen(env));

	sodium_memzero(env, strlen(env));
	unsetenv(KEY_ENV);
	if (r < 0)
		snprintf(err, errlen, "%s: not a master key (want 64 hex characters)", KEY_ENV);
	return r;
}

int key_load(struct secbuf **out, const struct key_source *src,
	     char *err, size_t errlen, char *warn, size_t warnlen)
{
	struct secbuf *key;
	const char *dir;
	char *env, path[4096];
	int r;

	*out = NULL;
	err[0] = warn[0] = '\0';
	r = secbuf_new(&key, KEY_LEN);
	if (r < 0) {
		snprintf(err, errlen, "cannot lock memory for the master key");
		return r;
	}
	env = getenv(KEY_ENV);
	dir = secure_getenv("CREDENTIALS_DIRECTORY");
	if (src && src->file && src->file[0]) {
		r = load_file(key, src->file, "key file", err, errlen, warn, warnlen);
		if (env) {	/* not used, but don't leave it to children */
			sodium_memzero(env, strlen(env));
			unsetenv(KEY_ENV);
		}
	} else if (env) {
		r = load_env(key, env, err, errlen);
	} else if (dir && dir[0]) {
		snprintf(path, sizeof(path), "%s/%s", dir, KEY_CREDENTIAL);
		r = load_file(key, path, "credential", err, errlen, warn, warnlen);
	} else {
		r = -ENOKEY;
		snprintf(err, errlen, "no master key: give --key-file, set %s, or pass the "
			 "systemd credential %s", KEY_ENV, KEY_CREDENTIAL);
	}
	if (r < 0) {
		secbuf_free(key);
		return r;
	}
	*out = key;
	return 0;
}

bool key_equal(const struct secbuf *a, const struct secbuf *b)
{
	return a->len == KEY_LEN && b->len == KEY_LEN &&
	       sodium_memcmp(a->data, b->data, KEY_LEN) == 0;
}

int key_hex(const struct secbuf *key, struct secbuf **out)
{
	int r = secbuf_new(out, KEY_HEX_LEN + 1);

	if (r < 0)
		return r;
	sodium_bin2hex((char *)(*out)->data, KEY_HEX_LEN + 1, key->data, KEY_LEN);
	(*out)->len = KEY_HEX_LEN;
	return 0;
}

int key_generate_hex(struct secbuf **out)
{
	struct secbuf *bin = NULL;
	int r;

	*out = NULL;
	r = secbuf_new(&bin, KEY_LEN);
	if (r < 0)
		return r;
	randombytes_buf(bin->data, KEY_LEN);
	bin->len = KEY_LEN;
	r = key_hex(bin, out);
	secbuf_free(bin);
	return r;
}

int key_write_file(const char *path, const struct secbuf *hex)
{
	int fd, r;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	r = fchmod(fd, 0600) < 0 ? -errno : 0;
	if (r == 0)
		r = secmem_write_all(fd, hex->data, hex->len);
	if (r == 0)
		r = secmem_write_all(fd, "\n", 1);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0)
		unlink(path);
	return r;
}
