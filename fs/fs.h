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
};

/* Mounts and serves until unmounted or signalled. 0 on a clean exit. */
int fs_run(struct vault *v, const struct fs_mount *m);

#endif
