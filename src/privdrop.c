/*
 * Dropping privileges after the mount. Rules this file keeps:
 *  - only root mounts with allow_other and reads a root-only key file, so
 *    the daemon starts as root and changes user once the mount is in place
 *    and the keys are in locked memory; it never reads the key file again;
 *  - the change is all or nothing: supplementary groups, then gid, then uid
 *    (real, effective and saved), then a check that uid 0 can't be had
 *    back; a failure stops the daemon before it serves anything;
 *  - a non-root uid leaves no capability (the kernel clears them when all
 *    uids leave 0);
 *  - no_new_privs is not set: on SIGTERM, libfuse unmounts through the
 *    set-uid fusermount3, which no_new_privs would disarm;
 *  - the process stays non-dumpable and without core dumps after the
 *    change (the kernel resets dumpability when credentials change).
 */
#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../db/db.h"
#include "cli.h"
#include "privdrop.h"

/* Room beyond the budget: libsodium locks a canary and rounds each buffer
 * up to whole pages. */
#define MEMLOCK_SLACK (1024 * 1024)

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static int check_owned(const struct daemon_conf *d, const char *path, bool must_exist,
		       char *err, size_t errlen)
{
	struct stat st;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT && !must_exist)
			return 0;
		return fail(err, errlen, "%s: %s", path, strerror(errno));
	}
	if (st.st_uid != d->uid)
		return fail(err, errlen, "%s is owned by uid %u; with user = %s it must "
			    "belong to that user (chown %s %s*)", path, (unsigned)st.st_uid,
			    d->user, d->user, path);
	return 0;
}

/* As the user, mlock counts against RLIMIT_MEMLOCK: make room for the
 * budget while root may still raise it. */
static int raise_memlock(size_t budget, char *err, size_t errlen)
{
	rlim_t want = (rlim_t)budget * 2 + MEMLOCK_SLACK;
	struct rlimit rl;

	if (!budget)
		return 0;
	if (getrlimit(RLIMIT_MEMLOCK, &rl) < 0)
		return fail(err, errlen, "RLIMIT_MEMLOCK: %s", strerror(errno));
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
		return 0;
	rl.rlim_cur = want;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
		rl.rlim_max = want;
	if (setrlimit(RLIMIT_MEMLOCK, &rl) < 0)
		return fail(err, errlen, "cannot raise RLIMIT_MEMLOCK to %llu bytes for "
			    "memlock_budget: %s", (unsigned long long)want, strerror(errno));
	return 0;
}

struct owned {
	const struct daemon_conf *d;
	char *err;
	size_t errlen;
};

static int file_owned(void *ctx, const char *path, bool main)
{
	struct owned *o = ctx;

	return check_owned(o->d, path, main, o->err, o->errlen) < 0 ? -1 : 0;
}

int priv_check(const struct vault_conf *c, char *err, size_t errlen)
{
	const struct daemon_conf *d = &c->daemon;
	struct owned o = { d, err, errlen };

	if (!d->has_user)
		return 0;
	if (geteuid() != 0) {
		if (geteuid() == d->uid && getuid() == d->uid)
			return 0;
		return fail(err, errlen, "user = %s in %s: vaultfs mount must start as root "
			    "to become that user", d->user, c->path[0] ? c->path : "the config");
	}
	/* The store's files here, if it keeps any: all must be the user's. */
	if (db_files(c->db, file_owned, &o) != 0)
		return -1;
	return raise_memlock(c->memlock_budget, err, errlen);
}

int priv_prepare(const struct vault_conf *c, char *err, size_t errlen)
{
	const struct daemon_conf *d = &c->daemon;

	if (!d->has_user || geteuid() != 0)
		return 0;
	/* Effective ids stay 0 for mount(2); libfuse records the real ones. */
	if (setresgid(d->gid, (gid_t)-1, (gid_t)-1) < 0 ||
	    setresuid(d->uid, (uid_t)-1, (uid_t)-1) < 0)
		return fail(err, errlen, "cannot set the real uid to %s: %s", d->user,
			    strerror(errno));
	return 0;
}

int priv_drop(const struct vault_conf *c, char *err, size_t errlen)
{
	const struct daemon_conf *d = &c->daemon;
	uid_t ru, eu, su;
	gid_t rg, eg, sg;

	if (!d->has_user || geteuid() != 0)
		return 0;
	if (setgroups(0, NULL) < 0 || setresgid(d->gid, d->gid, d->gid) < 0 ||
	    setresuid(d->uid, d->uid, d->uid) < 0)
		return fail(err, errlen, "cannot become user %s: %s", d->user, strerror(errno));
	if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 ||
	    ru != d->uid || eu != d->uid || su != d->uid ||
	    rg != d->gid || eg != d->gid || sg != d->gid)
		return fail(err, errlen, "cannot become user %s: ids did not change", d->user);
	if (d->uid != 0 && (setuid(0) == 0 || seteuid(0) == 0))
		return fail(err, errlen, "dropped to %s but root could be regained", d->user);
	cli_harden();
	return 0;
}
