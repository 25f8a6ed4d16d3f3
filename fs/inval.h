/* Telling the kernel that what it cached about an inode is stale. */
#ifndef VAULTFS_INVAL_H
#define VAULTFS_INVAL_H

#define FUSE_USE_VERSION 314
#include "fuse_lib.h"

int inval_start(struct fuse_session *se);
void inval_stop(void);
/* Drops the kernel's cached attributes of ino (size, times) and returns
 * once that is done, so that the caller's reply is followed by a fresh
 * stat. The notification is sent by a thread of our own, never from the
 * request's own path. A no-op when not started. */
void inval_attr(fuse_ino_t ino);
/* The same without waiting. */
void inval_attr_later(fuse_ino_t ino);
/* Drops the kernel's cached pages of ino (and its attributes), without
 * waiting, from a thread of its own: what a private mmap read into the
 * page cache. */
void inval_data(fuse_ino_t ino);

#endif
