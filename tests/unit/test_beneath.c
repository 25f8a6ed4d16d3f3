/* Opening beneath a directory (src/beneath.h): openat2 and the walk used
 * without it must agree on every case. */
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

#include "../../src/beneath.h"

static char top[PATH_MAX];
static int dfd = -1;

/* top/ holds d/ (the directory), with a Kubernetes layout and traps. */
static int setup(void **state)
{
	char p[PATH_MAX + 32];
	int fd, bad = 0;

	strcpy(top, "/tmp/vaultfs-beneath-XXXXXX");
	if (!mkdtemp(top))
		return -1;
	snprintf(p, sizeof(p), "%s/outside", top);
	fd = open(p, O_WRONLY | O_CREAT, 0600);
	close(fd);
	snprintf(p, sizeof(p), "%s/d", top);
	mkdir(p, 0700);
	dfd = open(p, O_RDONLY | O_DIRECTORY);
	mkdirat(dfd, "..2024_01_01", 0700);
	fd = openat(dfd, "..2024_01_01/key", O_WRONLY | O_CREAT, 0600);
	close(fd);
	fd = openat(dfd, "plain", O_WRONLY | O_CREAT, 0600);
	close(fd);
	mkdirat(dfd, "sub", 0700);
	bad |= symlinkat("..2024_01_01", dfd, "..data");
	bad |= symlinkat("..data/key", dfd, "key");
	bad |= symlinkat("sub/../plain", dfd, "dotdot_inside");
	bad |= symlinkat("../outside", dfd, "up");
	bad |= symlinkat("sub/../../outside", dfd, "up_via_sub");
	bad |= symlinkat("/etc/passwd", dfd, "absolute");
	snprintf(p, sizeof(p), "%s/d/plain", top);
	bad |= symlinkat(p, dfd, "absolute_inside");
	bad |= symlinkat("loop_b", dfd, "loop_a");
	bad |= symlinkat("loop_a", dfd, "loop_b");
	bad |= symlinkat("plain/x", dfd, "through_file");
	bad |= symlinkat("nowhere", dfd, "dangling");
	bad |= symlinkat("up", dfd, "chain_up");
	return dfd < 0 || bad ? -1 : 0;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	close(dfd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", top);
	return system(cmd) == 0 ? 0 : -1;
}

/* The inode path names beneath dfd, or -errno, by both ways. */
static void expect(const char *path, int want_err, const char *same_as)
{
	int (*const way[2])(int, const char *) = { beneath_open_path, beneath_walk };

	for (int i = 0; i < 2; i++) {
		int fd = way[i](dfd, path);
		struct stat a, b;

		if (want_err) {
			if (fd != want_err)
				fail_msg("%s: way %d gave %d, want %d", path, i, fd, want_err);
			continue;
		}
		if (fd < 0)
			fail_msg("%s: way %d gave %d", path, i, fd);
		assert_int_equal(fstat(fd, &a), 0);
		assert_int_equal(fstatat(dfd, same_as, &b, 0), 0);
		assert_true(a.st_ino == b.st_ino && a.st_dev == b.st_dev);
		close(fd);
	}
}

static void test_inside(void **state)
{
	expect("plain", 0, "plain");
	expect("key", 0, "..2024_01_01/key");	/* key -> ..data/key, ..data -> ..2024 */
	expect("dotdot_inside", 0, "plain");
	expect("sub", 0, "sub");
	expect(".", 0, ".");
}

static void test_outside(void **state)
{
	expect("up", -EXDEV, NULL);
	expect("up_via_sub", -EXDEV, NULL);
	expect("chain_up", -EXDEV, NULL);
	expect("absolute", -EXDEV, NULL);
	expect("absolute_inside", -EXDEV, NULL);	/* absolute: refused even inside */
	expect("..", -EXDEV, NULL);
	expect("../d/plain", -EXDEV, NULL);
}

static void test_broken(void **state)
{
	expect("loop_a", -ELOOP, NULL);
	expect("dangling", -ENOENT, NULL);
	expect("through_file", -ENOTDIR, NULL);
	expect("nope", -ENOENT, NULL);
}

static void test_reopen_reads_the_checked_inode(void **state)
{
	int pfd = beneath_open_path(dfd, "plain"), fd;
	struct stat a, b;

	assert_true(pfd >= 0);
	/* The name now leads elsewhere: the descriptor still means the file. */
	assert_int_equal(renameat(dfd, "plain", dfd, "plain.moved"), 0);
	assert_int_equal(symlinkat("../outside", dfd, "plain"), 0);
	fd = beneath_reopen(pfd);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &a), 0);
	assert_int_equal(fstatat(dfd, "plain.moved", &b, 0), 0);
	assert_true(a.st_ino == b.st_ino);
	assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
	close(fd);
	close(pfd);
	assert_int_equal(unlinkat(dfd, "plain", 0), 0);
	assert_int_equal(renameat(dfd, "plain.moved", dfd, "plain"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_inside),
		cmocka_unit_test(test_outside),
		cmocka_unit_test(test_broken),
		cmocka_unit_test(test_reopen_reads_the_checked_inode),
	};

	return cmocka_run_group_tests_name("beneath", tests, setup, teardown);
}
