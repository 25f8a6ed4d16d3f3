/* The FUSE session loop, configured in one place so that the benchmark's
 * minimal filesystem runs exactly the loop vaultfs runs. */
#ifndef VAULTFS_LOOP_H
#define VAULTFS_LOOP_H

struct fuse_session;

/* Serves requests until the session ends: 0 on a clean stop (unmount or
 * signal), -1 on error. */
int fs_loop(struct fuse_session *se);

#endif
