/* A daemon is a process named vaultfs, started as `vaultfs mount`, with the
 * database among its open files. No pid files: nothing goes stale, and a
 * daemon started by hand or by systemd is found the same way. */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemons.h"

static ssize_t read_small(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n >= 0)
		buf[n] = '\0';
	return n;
}

static bool is_mount_daemon(const char *pid)
{
	char path[300], buf[256];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%s/comm", pid);
	if (read_small(path, buf, sizeof(buf)) < 0 || strcmp(buf, "vaultfs\n"))
		return false;
	snprintf(path, sizeof(path), "/proc/%s/cmdline", pid);
	n = read_small(path, buf, sizeof(buf));
	/* argv[0] NUL "mount" NUL ... */
	return n > 0 && (size_t)n > strlen(buf) + 1 && !strcmp(buf + strlen(buf) + 1, "mount");
}

static bool has_open(const char *pid, const struct stat *db)
{
	char path[300], fd_path[600];
	struct dirent *de;
	struct stat st;
	bool found = false;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%s/fd", pid);
	d = opendir(path);
	while (d && !found && (de = readdir(d))) {
		snprintf(fd_path, sizeof(fd_path), "%s/%s", path, de->d_name);
		found = stat(fd_path, &st) == 0 && st.st_dev == db->st_dev &&
			st.st_ino == db->st_ino;
	}
	if (d)
		closedir(d);
	return found;
}

static int daemons_find(const char *db_path, pid_t *pids, int max)
{
	struct dirent *de;
	struct stat db;
	int n = 0;
	DIR *d;

	if (stat(db_path, &db) < 0)
		return 0;
	d = opendir("/proc");
	if (!d)
		return 0;
	while (n < max && (de = readdir(d))) {
		if (!isdigit((unsigned char)de->d_name[0]) || atoi(de->d_name) == getpid())
			continue;
		if (is_mount_daemon(de->d_name) && has_open(de->d_name, &db))
			pids[n++] = (pid_t)atoi(de->d_name);
	}
	closedir(d);
	return n;
}

int daemons_signal(const char *db_path, int sig)
{
	pid_t pids[64];
	int n = daemons_find(db_path, pids, 64), sent = 0;

	for (int i = 0; i < n; i++)
		sent += kill(pids[i], sig) == 0;
	return sent;
}
