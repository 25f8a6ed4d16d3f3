/* The FUSE filesystem. */
#ifndef VAULTFS_FS_H
#define VAULTFS_FS_H

#include <stdbool.h>
#include <stdint.h>

struct vault;

struct fs_mount {
	const char *mountpoint;
	const char *fuse_opts;		/* extra -o options, or NULL */
	bool debug;
	int64_t instance_id;		/* > 0: the root shows this instance only */
	/* Called once the mount is in place and about to serve; nonzero
	 * aborts. */
	int (*ready)(void *ctx);
	void *ready_ctx;
	/* > 0: a worker under a holder (src/holder.c): the connection comes
	 * over this control socket instead of being mounted. */
	int ctl_fd;
	/* Tests only (hidden option): hold each OPEN this long before serving
	 * it, so a test can kill a worker with a request inside. */
	unsigned test_hold_open_ms;
	/* Tests only (hidden option): hold the reply to each CREATE, OPEN,
	 * WRITE and FLUSH this long after it was handled, so a test can kill a worker between
	 * the two. */
	unsigned test_hold_reply_ms;
};

/* Mounts and serves until unmounted or signalled. 0 on a clean exit. */
int fs_run(struct vault *v, const struct fs_mount *m);

struct fuse_session;
/* The holder's side: mounts with the options fs_run would use and returns
 * the /dev/fuse descriptor (owned by *se), or -1. */
int fs_hold(const struct fs_mount *m, struct fuse_session **se);
/* Unmounts and closes what fs_hold made. */
void fs_unhold(struct fuse_session *se);

#endif
