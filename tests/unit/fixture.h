/* What the unit tests share: a private temporary directory for each test's
 * files, removed with everything in it. Header-only, so each test program
 * stays one file. */
#ifndef VAULTFS_TEST_FIXTURE_H
#define VAULTFS_TEST_FIXTURE_H

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

#endif
