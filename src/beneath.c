/* Opening files beneath a directory descriptor (beneath.h has the rules). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "beneath.h"

#define WALK_MAX_DEPTH 64

/* The remaining path of a walk, consumed from the front. */
struct walk {
	char rest[PATH_MAX];
	int fds[WALK_MAX_DEPTH + 1];	/* fds[0] is the caller's, never closed */
	int depth;
	int links;
};

/* Moves the next component of w->rest into comp; false at the end. */
static bool walk_next(struct walk *w, char comp[static NAME_MAX + 1], int *err)
{
	char *p = w->rest, *end;
	size_t n;

	while (*p == '/')
		p++;
	if (!*p)
		return false;
	end = strchrnul(p, '/');
	n = (size_t)(end - p);
	if (n > NAME_MAX) {
		*err = -ENAMETOOLONG;
		return false;
	}
	memcpy(comp, p, n);
	comp[n] = '\0';
	memmove(w->rest, end, strlen(end) + 1);
	return true;
}

static bool walk_at_end(const struct walk *w)
{
	return w->rest[strspn(w->rest, "/")] == '\0';
}

/* Replaces the link just met by its target in front of the rest. */
static int walk_follow(struct walk *w, int lfd)
{
	char target[PATH_MAX];
	size_t rlen = strlen(w->rest);
	ssize_t n;

	if (++w->links > BENEATH_MAX_LINKS)
		return -ELOOP;
	n = readlinkat(lfd, "", target, sizeof(target));
	if (n < 0)
		return -errno;
	if (n == 0 || (size_t)n >= sizeof(target))
		return n ? -ENAMETOOLONG : -ENOENT;
	if (target[0] == '/')
		return -EXDEV;
	if ((size_t)n + 1 + rlen >= sizeof(w->rest))
		return -ENAMETOOLONG;
	memmove(w->rest + n + 1, w->rest, rlen + 1);
	memcpy(w->rest, target, (size_t)n);
	w->rest[n] = '/';
	return 0;
}

/* One component: "." stays, ".." climbs (never above fds[0]), a link is
 * expanded, a directory is entered, the last component is the result. */
static int walk_step(struct walk *w, const char *comp, int *out)
{
	struct stat st;
	int fd, r = 0;

	if (!strcmp(comp, "."))
		return 0;
	if (!strcmp(comp, "..")) {
		if (w->depth == 0)
			return -EXDEV;
		close(w->fds[w->depth--]);
		return 0;
	}
	fd = openat(w->fds[w->depth], comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		r = -errno;
	else if (S_ISLNK(st.st_mode))
		r = walk_follow(w, fd);
	else if (walk_at_end(w)) {
		*out = fd;
		return 0;
	} else if (!S_ISDIR(st.st_mode))
		r = -ENOTDIR;
	else if (w->depth == WALK_MAX_DEPTH)
		r = -ELOOP;
	else {
		w->fds[++w->depth] = fd;
		return 0;
	}
	close(fd);
	return r;
}

int beneath_walk(int dfd, const char *path)
{
	struct walk w = { .fds = { dfd } };
	char comp[NAME_MAX + 1];
	int out = -1, r = 0;

	if (path[0] == '/')
		return -EXDEV;
	if (strlen(path) >= sizeof(w.rest))
		return -ENAMETOOLONG;
	strcpy(w.rest, path);
	while (r == 0 && out < 0 && walk_next(&w, comp, &r))
		r = walk_step(&w, comp, &out);
	/* A path that ends on "." or "..": the directory reached. */
	if (r == 0 && out < 0) {
		out = openat(w.fds[w.depth], ".", O_PATH | O_CLOEXEC);
		r = out < 0 ? -errno : 0;
	}
	while (w.depth > 0)
		close(w.fds[w.depth--]);
	return r < 0 ? r : out;
}

int beneath_open_path(int dfd, const char *path)
{
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	long fd;
	int tries = 0;

	/* EAGAIN: a rename raced with the lookup; the kernel asks to retry. */
	do
		fd = syscall(SYS_openat2, dfd, path, &how, sizeof(how));
	while (fd < 0 && errno == EAGAIN && ++tries < 100);
	if (fd < 0 && (errno == ENOSYS || errno == EPERM))
		return beneath_walk(dfd, path);	/* old kernel, or a seccomp filter */
	return fd < 0 ? -errno : (int)fd;
}

int beneath_reopen(int pathfd)
{
	char proc[64];
	int fd;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pathfd);
	fd = open(proc, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}
