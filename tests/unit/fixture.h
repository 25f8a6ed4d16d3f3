/* What the unit tests share: a private temporary directory for each test's
 * files, removed with everything in it; config files written there and
 * loaded. Header-only, so each test program stays one file; include it
 * after <cmocka.h>. */
#ifndef VAULTFS_TEST_FIXTURE_H
#define VAULTFS_TEST_FIXTURE_H

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../fs/policy.h"
#include "../../src/config.h"

struct tmpdir {
	char path[64];
};

/* A new directory /tmp/vaultfs-test-TAG-XXXXXX, mode 0700: 0 or -1. */
static inline int tmpdir_make(struct tmpdir *t, const char *tag)
{
	snprintf(t->path, sizeof(t->path), "/tmp/vaultfs-test-%s-XXXXXX", tag);
	if (!mkdtemp(t->path) || chmod(t->path, 0700) < 0)
		return -1;
	return 0;
}

/* dst = the path of name inside t. */
static inline void tmpdir_file(const struct tmpdir *t, const char *name, char *dst,
			       size_t size)
{
	snprintf(dst, size, "%s/%s", t->path, name);
}

/* Removes the directory, its files and its empty subdirectories (the tests
 * make no deeper trees). */
static inline void tmpdir_remove(struct tmpdir *t)
{
	char p[PATH_MAX];
	struct dirent *de;
	DIR *d = opendir(t->path);

	while (d && (de = readdir(d))) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			tmpdir_file(t, de->d_name, p, sizeof(p));
			if (unlink(p))
				rmdir(p);
		}
	}
	if (d)
		closedir(d);
	rmdir(t->path);
}

/* A test's config files, in a directory of its own, each loaded into fresh
 * defaults (test_config, test_access). The cmocka setup and teardown. */
struct conf_fx {
	struct tmpdir tmp;
	char path[128];			/* the file conf_write wrote last */
	char err[8192];
	struct vault_conf c;
};

static inline int conf_fx_setup(void **state, const char *tag)
{
	struct conf_fx *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	if (tmpdir_make(&fx->tmp, tag) < 0) {
		free(fx);
		return -1;
	}
	policy_defaults(&fx->c);
	*state = fx;
	return 0;
}

static inline int conf_fx_teardown(void **state)
{
	struct conf_fx *fx = *state;

	policy_free(&fx->c);
	tmpdir_remove(&fx->tmp);
	free(fx);
	return 0;
}

/* Writes a new config file of len bytes with the given mode; its path. */
static inline const char *conf_write_len(struct conf_fx *fx, const char *text, size_t len,
					 mode_t mode)
{
	int fd;

	snprintf(fx->path, sizeof(fx->path), "%s/vaultfs-XXXXXX", fx->tmp.path);
	fd = mkstemp(fx->path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(close(fd), 0);
	return fx->path;
}

static inline const char *conf_write(struct conf_fx *fx, const char *text)
{
	return conf_write_len(fx, text, strlen(text), 0600);
}

/* Loads path into fresh defaults; err is filled with 'X' first, so a
 * message that is not terminated shows. */
static inline int conf_load(struct conf_fx *fx, const char *path)
{
	policy_free(&fx->c);
	policy_defaults(&fx->c);
	memset(fx->err, 'X', sizeof(fx->err) - 1);
	fx->err[sizeof(fx->err) - 1] = '\0';
	return config_load(&fx->c, path, fx->err, sizeof(fx->err));
}

static inline int conf_load_text(struct conf_fx *fx, const char *text)
{
	return conf_load(fx, conf_write(fx, text));
}

#endif
