/* The holder: the process that mounts and keeps the FUSE connection while
 * serving processes (workers) come and go. */
#ifndef VAULTFS_HOLDER_H
#define VAULTFS_HOLDER_H

#include "../fs/fs.h"

struct holder_conf {
	const struct fs_mount *mount;	/* mount point and options */
	char *const *worker_argv;	/* argv[0] is replaced by the binary's path */
	const char *db;			/* for vaultfs status */
	/* Keep the connection in systemd's file descriptor store, and adopt
	 * the one stored there by a holder that died (--fd-store). */
	bool fd_store;
	/* Called once, when the first worker serves. */
	void (*ready)(void *ctx);
	void *ready_ctx;
};

/* The name of the connection in systemd's file descriptor store. */
#define HOLDER_FD_NAME "vaultfs-fuse"

/* Mounts, serves through workers until stopped or unmounted. Returns the
 * exit status: 0 after a clean stop, else the first worker's. */
int holder_run(const struct holder_conf *hc);

#endif
