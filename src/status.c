/* The status files of holders. Written whole to a temporary name and
 * renamed, so a reader never sees half of one; a file whose holder is gone
 * (kill -9) is skipped and removed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "status.h"

static int status_dir(char *out, size_t size, bool create)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");

	if (geteuid() == 0)
		snprintf(out, size, "/run/vaultfs-status");
	else if (xdg && *xdg == '/')
		snprintf(out, size, "%s/vaultfs-status", xdg);
	else
		return -1;
	if (create && mkdir(out, 0755) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

void status_write(const struct mount_status *s)
{
	char dir[PATH_MAX], path[PATH_MAX + 32], tmp[PATH_MAX + 40];
	FILE *f;

	if (status_dir(dir, sizeof(dir), true) < 0)
		return;
	snprintf(path, sizeof(path), "%s/%d", dir, (int)s->holder);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "we");
	if (!f)
		return;
	fprintf(f, "mountpoint=%s\ndb=%s\nholder=%d\nworker=%d\nstarted=%lld\n"
		"serving_since=%lld\nrestarts=%u\n", s->mountpoint, s->db, (int)s->holder,
		(int)s->worker, (long long)s->started, (long long)s->serving_since, s->restarts);
	if (fclose(f) != 0 || rename(tmp, path) < 0)
		unlink(tmp);
}

void status_remove(void)
{
	char dir[PATH_MAX], path[PATH_MAX + 32];

	if (status_dir(dir, sizeof(dir), false) < 0)
		return;
	snprintf(path, sizeof(path), "%s/%d", dir, (int)getpid());
	unlink(path);
}

static bool holder_alive(pid_t pid)
{
	char path[64], comm[32] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	if (!fgets(comm, sizeof(comm), f))
		comm[0] = '\0';
	fclose(f);
	return !strcmp(comm, "vaultfs\n");
}

static void copy(char *dst, size_t size, const char *src)
{
	size_t n = strnlen(src, size - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

static int status_read(const char *path, struct mount_status *s)
{
	char line[PATH_MAX + 32];
	long long v;
	FILE *f = fopen(path, "re");

	if (!f)
		return -1;
	memset(s, 0, sizeof(*s));
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (!strncmp(line, "mountpoint=", 11))
			copy(s->mountpoint, sizeof(s->mountpoint), line + 11);
		else if (!strncmp(line, "db=", 3))
			copy(s->db, sizeof(s->db), line + 3);
		else if (sscanf(line, "holder=%lld", &v) == 1)
			s->holder = (pid_t)v;
		else if (sscanf(line, "worker=%lld", &v) == 1)
			s->worker = (pid_t)v;
		else if (sscanf(line, "started=%lld", &v) == 1)
			s->started = (time_t)v;
		else if (sscanf(line, "serving_since=%lld", &v) == 1)
			s->serving_since = (time_t)v;
		else if (sscanf(line, "restarts=%lld", &v) == 1)
			s->restarts = (unsigned)v;
	}
	fclose(f);
	return s->holder > 0 ? 0 : -1;
}

int status_each(void (*fn)(const struct mount_status *s, void *ctx), void *ctx)
{
	char dir[PATH_MAX], path[PATH_MAX + 300];
	struct mount_status s;
	struct dirent *de;
	int n = 0;
	DIR *d;

	if (status_dir(dir, sizeof(dir), false) < 0 || !(d = opendir(dir)))
		return 0;
	while ((de = readdir(d))) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9' || strchr(de->d_name, '.'))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (status_read(path, &s) < 0 || atoi(de->d_name) != (int)s.holder)
			continue;
		if (!holder_alive(s.holder)) {
			unlink(path);
			continue;
		}
		fn(&s, ctx);
		n++;
	}
	closedir(d);
	return n;
}

struct serving {
	struct stat db;
	struct mount_status *out;
	int max, n;
};

static void serving_add(const struct mount_status *s, void *ctx)
{
	struct serving *sv = ctx;
	struct stat st;

	if (sv->n < sv->max && stat(s->db, &st) == 0 && st.st_dev == sv->db.st_dev &&
	    st.st_ino == sv->db.st_ino)
		sv->out[sv->n++] = *s;
}

int status_serving(const char *db_path, struct mount_status *out, int max)
{
	struct serving sv = { .out = out, .max = max };

	if (stat(db_path, &sv.db) < 0)
		return 0;
	status_each(serving_add, &sv);
	return sv.n;
}

bool status_mountinfo_point(const char *line, char out[static PATH_MAX + 1])
{
	const char *p = line, *q;
	size_t j;

	for (int k = 0; k < 4 && p; k++)	/* to the mount point field */
		p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
	for (j = 0, q = p; q && *q && *q != ' ' && j < PATH_MAX; j++) {
		if (q[0] == '\\' && q[1] >= '0' && q[1] <= '3' && q[2] && q[3]) {
			out[j] = (char)((q[1] - '0') * 64 + (q[2] - '0') * 8 + (q[3] - '0'));
			q += 4;
		} else {
			out[j] = *q++;
		}
	}
	out[j] = '\0';
	return p != NULL;
}
