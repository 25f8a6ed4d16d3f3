/* What the files of the FUSE operations share (fs/ops*.c, fs/handle.c):
 * the mount's state, open-file handles, inode numbering. Not for other
 * modules: fs.h is the filesystem's interface. */
#ifndef VAULTFS_OPS_INT_H
#define VAULTFS_OPS_INT_H

#define FUSE_USE_VERSION 314

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "fuse_lib.h"

#include "fs.h"
#include "guard.h"
#include "inval.h"
#include "penalty.h"
#include "log.h"
#include "loop.h"
#include "name.h"
#include "../crypto/seal.h"
#include "quota.h"
#include "reload.h"
#include "session.h"
#include "template.h"
#include "vault.h"
#include "watch.h"
#include "xattr.h"

#define ROOT_INO FUSE_ROOT_ID

struct fs {
	struct vault *v;
	struct db *db;
	const struct vault_conf *conf;
	double timeout;
	int64_t mount_ns;
	pthread_mutex_t handles_lock;
	struct handle *handles;	/* open, for the wipe at unmount */
	unsigned creating;	/* handles with ->creating set, under handles_lock */
	unsigned pending;	/* and with ->pending set */
	unsigned limbo;		/* and with ->limbo set */
	pthread_cond_t limbo_cond;	/* a handle left limbo */
};

/* A request that changed a writer's handle, and its answer (0 or -errno).
 * The kernel sends a request again to the next worker when the worker that
 * read it dies before answering (FUSE_NOTIFY_RESEND), which may be after it
 * changed the handle and recorded that with the holder: such a request is
 * answered as before, never applied twice (a redirect's first close counted
 * twice commits the empty value; an append, twice, doubles it). WRITEs to a
 * file come one at a time (the kernel holds its inode lock over a direct
 * I/O write) and a FLUSH changes a handle only at its writer's close, so
 * few are ever unanswered at once: the last HANDLE_DONE are kept. */
#define HANDLE_DONE 4

struct handle_done {
	uint64_t unique;	/* without the kernel's resend mark */
	int32_t result;
	uint32_t pad;
};

/* What a key created through the mount will be stored as (handle_settle);
 * its name is the handle's ref.key, its owner the handle's uid. */
struct handle_pending {
	int64_t instance_id;
	int64_t ctime_ns;
	uint32_t gid;
	uint32_t mode;
};

struct handle {
	pthread_mutex_t lock;
	int64_t id;
	struct secbuf *buf;
	bool append;
	bool readonly;		/* opened O_RDONLY: buf never changes */
	bool dirty;		/* differs from the store */
	bool committed;		/* this handle has stored a value */
	int error;		/* a write failed: never commit, report this */
	bool closed;		/* flushed by its writer since the last change */
	bool trunc_pending;	/* O_TRUNC, and nothing written since */
	bool creating;		/* made the key, which others can't open yet */
	bool pending;		/* made it, and its row is not stored yet: id is
				 * reserved for it (handle_settle) */
	struct handle_pending pend;	/* while pending */
	unsigned pins;		/* threads settling it, under handles_lock:
				 * handle_free waits for them */
	bool freeing;		/* handle_free has begun: settled by nobody */
	bool limbo;		/* trunc_pending, and its writer closed once */
	bool have_st;		/* a reader: st is the key as it was opened */
	struct stat st;
	unsigned trunc_flushes;	/* its writer's closes while trunc_pending */
	uint64_t owner;		/* lock owner of the last write(), 0: unknown */
	pid_t opener;		/* thread that opened it, 0: unknown */
	uid_t uid;		/* who opened it: the writer of record */
	struct secbuf *orig;	/* O_TRUNC: the value found at open */
	uint64_t version;	/* made by this handle's last commit: amended */
	struct guard_ref ref;	/* and the names, for the audit log */
	struct quota_user *qu;	/* the opener's share, charged for buf and orig */
	bool paged;		/* read into the page cache (mmap): drop it at release */
	struct handle *prev, *next;
	uint64_t fh;		/* as the kernel knows it (handle.c) */
	uint64_t read_version;	/* a reader's: the version it holds */
	bool recorded;		/* the holder keeps a record of it */
	uint32_t slot;		/* in the table of handles, 0: none */
	struct handle_done done[HANDLE_DONE];	/* kept with the record */
	uint32_t done_next;
	uint64_t opened_by;	/* the OPEN or CREATE that made it, 0: unknown */
	uint64_t attrs_mark;	/* ops_attrs_mark() before the reply to the writer's
				 * open or last write, 0: none */
};

/* Handles as the kernel names them, across workers (see below). */
struct handle *handle_get(struct fs *fs, fuse_ino_t ino, struct fuse_file_info *fi);

void handle_record(struct fs *fs, struct handle *h);
/* Under h->lock: whether this request was sent again after the previous
 * worker applied it (*result: its answer then), and noting one applied. */
bool handle_done_find(const struct handle *h, int *result);
void handle_done_add(struct handle *h, int result);

enum kind { K_ROOT, K_INSTANCE, K_SECRET };

/* The instance shown as the root, 0 for the whole vault. One mount per
 * process: set once in fs_run() before any request is served. */
extern fuse_ino_t fs_top_ino;

static inline fuse_ino_t ino_in(fuse_ino_t ino)
{
	return ino == ROOT_INO && fs_top_ino ? fs_top_ino : ino;
}

static inline fuse_ino_t ino_out(fuse_ino_t ino)
{
	return fs_top_ino && ino == fs_top_ino ? ROOT_INO : ino;
}

static inline enum kind ino_kind(fuse_ino_t ino)
{
	ino = ino_in(ino);
	if (ino == ROOT_INO)
		return K_ROOT;
	return ino & 1 ? K_SECRET : K_INSTANCE;
}

static inline int64_t ino_id(fuse_ino_t ino)
{
	return (int64_t)(ino_in(ino) >> 1);
}

static inline fuse_ino_t instance_ino(int64_t id)
{
	return (fuse_ino_t)id << 1;
}

static inline fuse_ino_t secret_ino(int64_t id)
{
	return ((fuse_ino_t)id << 1) | 1;
}

static inline struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

struct closer;

/* ops.c: attributes, errors, the session */
void ops_attrs_out(void);
uint64_t ops_attrs_mark(void);
void ops_entry_init(struct fs *fs, struct fuse_entry_param *e, const struct stat *st);
int ops_getattr_ino(struct fs *fs, fuse_ino_t ino, struct stat *st);
int ops_name_errno(const char *name);
void ops_reply_denied(fuse_req_t req, int r);
void ops_reply_err(fuse_req_t req, int r);
void ops_stat_instance(const struct db_instance *in, struct stat *st);
void ops_stat_secret(const struct db_secret *s, struct stat *st);
int ops_user_errno(int r);

/* handle.c: open files, their table and records */
void handle_adopt(void *ctx, uint64_t fh, const void *rec, size_t len);
int handle_buf_resize(struct fs *fs, struct secbuf *b, size_t len);
void handle_charged(void);
bool handle_created_by_other(struct fs *fs, int64_t id, pid_t pid);
void handle_creating_set(struct fs *fs, struct handle *h, bool on);
void handle_pending_set(struct fs *fs, struct handle *h, bool on);
/* A pending key's row as it will be stored (empty, version 0). */
void handle_pending_row(const struct handle *h, struct db_secret *s);
/* Under h->lock: stores a pending key's row, with the handle's value
 * (value) or empty, and its audit entries; 0 or -errno (then h->error). */
int handle_settle_locked(struct fs *fs, struct handle *h, bool value, bool sync);
/* Before an operation that needs the row of a key another request may still
 * hold pending: stores it, empty, now. By inode, by name, or every one of
 * an instance. Not while holding a handle's lock or a transaction. */
void handle_settle(struct fs *fs, fuse_ino_t ino);
void handle_settle_name(struct fs *fs, int64_t instance_id, const char *name);
void handle_settle_instance(struct fs *fs, int64_t instance_id);
/* Whether ino is a key still pending here: then *st is its row's stat. */
bool handle_pending_stat(struct fs *fs, fuse_ino_t ino, struct stat *st);
struct handle *handle_find(const struct fuse_file_info *fi);
void handle_free(struct fs *fs, struct handle *h);
int handle_keys(struct vault *v);
/* Wipes the key handle_keys derived. */
void handle_keys_free(void);
int handle_limbo_init(struct fs *fs);
void handle_limbo_set(struct fs *fs, struct handle *h, bool on);
void handle_limbo_wait(struct fs *fs, int64_t id);
int handle_new(struct fs *fs, struct handle **out, int64_t id, uid_t uid, pid_t opener);
void handle_open_reply(struct fuse_file_info *fi, struct handle *h);
void handle_open_reply_again(struct fuse_file_info *fi, const struct handle *h);
/* A writer's OPEN or CREATE sent again after the previous worker made its
 * handle (adopted from the record): that handle, to answer with, or NULL. */
struct handle *handle_resent_open(struct fs *fs);
void handle_trunc_done(struct fs *fs, struct handle *h);
void handle_wipe_all(void *ctx);

/* ops_file.c */
int handle_commit(struct fs *fs, struct handle *h, bool closing, const struct closer *c);
void vfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		struct fuse_file_info *fi);
void vfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void vfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void vfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void vfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	      struct fuse_file_info *fi);
void vfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void vfs_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
	       struct fuse_file_info *fi);

/* ops_dir.c */
void vfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void vfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void vfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void vfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		 struct fuse_file_info *fi);
void vfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi);
void vfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		const char *newname, unsigned int flags);
void vfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void vfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void vfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);

/* ops_attr.c */
void vfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void vfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void vfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void vfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);
void vfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		 struct fuse_file_info *fi);
void vfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		  size_t size, int flags);
void vfs_statfs(fuse_req_t req, fuse_ino_t ino);

#endif
