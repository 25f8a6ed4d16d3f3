/* Telling the kernel that what it cached about an inode is stale. */
#ifndef VAULTFS_NOTIFY_H
#define VAULTFS_NOTIFY_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

int notify_start(struct fuse_session *se);
void notify_stop(void);
/* Drops the kernel's cached attributes of ino (size, times) and returns
 * once that is done, so that the caller's reply is followed by a fresh
 * stat. The notification is sent by a thread of our own, never from the
 * request's own path. A no-op when not started. */
void notify_inval_attr(fuse_ino_t ino);

#endif
