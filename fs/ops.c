/*
 * vaultfs: the FUSE low-level filesystem.
 *
 *   /                 instances (directories), inode 1
 *   /<instance>/      secrets (regular files)
 *
 * Rules this file keeps:
 *  - plaintext lives only in an open handle's locked buffer, wiped at
 *    release; write payloads are copied there and wiped from libfuse's
 *    request buffer at once;
 *  - every secret file is opened direct_io, so no plaintext enters the page
 *    cache and every open and read reaches us;
 *  - a handle's changes are committed whole, at flush or fsync, in one
 *    transaction, and the result is what close() returns; a handle on which
 *    a write failed never commits;
 *  - handlers reply -errno and never exit.
 *
 * Inode numbers come from row ids: an instance is 2*id, a secret 2*id+1;
 * ids are never reused (AUTOINCREMENT), so a stale inode can't alias.
 *
 * A single-instance mount (vaultfs mount --instance NAME) shows that
 * instance's directory as the root: the kernel's inode 1 stands for the
 * instance's inode, and no other instance is reachable.
 */
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

#include <fuse_lowlevel.h>
#include <sodium.h>

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
#include "vault.h"
#include "watch.h"
#include "xattr.h"

#define ROOT_INO FUSE_ROOT_ID
/* Read connections beside the writer's: reads by concurrent requests run in
 * parallel instead of queueing on the writer's lock. */
#define FS_READERS 8

struct fs {
	struct vault *v;
	struct db *db;
	const struct vault_conf *conf;
	double timeout;
	int64_t mount_ns;
	pthread_mutex_t handles_lock;
	struct handle *handles;	/* open, for the wipe at unmount */
	unsigned creating;	/* handles with ->creating set, under handles_lock */
	unsigned limbo;		/* and with ->limbo set */
	pthread_cond_t limbo_cond;	/* a handle left limbo */
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
};

/* Handles as the kernel names them, across workers (see below). */
static struct handle *handle_get(struct fs *fs, fuse_ino_t ino, struct fuse_file_info *fi);
static uint64_t fh_assign(struct handle *h);
static void fh_release(struct handle *h);
static void handle_record(struct fs *fs, struct handle *h);

enum kind { K_ROOT, K_INSTANCE, K_SECRET };

/* The instance shown as the root, 0 for the whole vault. One mount per
 * process: set once in fs_run() before any request is served. */
static fuse_ino_t top_ino;

/* A key made through the mount appears to other processes' reads with its
 * first value: until its creator's first commit (or close, for a key left
 * empty on purpose), their read-only opens find no such key, instead of an
 * empty value. Writers open it (FUSE doesn't say whether their open had
 * O_CREAT, and two writers creating one key at once must both succeed). */
static void creating_set(struct fs *fs, struct handle *h, bool on)
{
	pthread_mutex_lock(&fs->handles_lock);
	if (h->creating != on)
		fs->creating += on ? 1 : -1;
	h->creating = on;
	pthread_mutex_unlock(&fs->handles_lock);
}

/* An O_TRUNC handle whose writer closed it once without writing is in
 * limbo: it is a shell's redirection whose command has yet to write, or a
 * program that emptied the key on purpose and is about to be released
 * (FUSE sends RELEASE after close() returned). A reader opening the key
 * meanwhile waits a moment for the next step, so that it reads the empty
 * value of a release that came first, and otherwise the old value. */
#define LIMBO_WAIT_NS 50000000L

static void limbo_set(struct fs *fs, struct handle *h, bool on)
{
	pthread_mutex_lock(&fs->handles_lock);
	if (h->limbo != on) {
		fs->limbo += on ? 1 : -1;
		if (!on)
			pthread_cond_broadcast(&fs->limbo_cond);
	}
	h->limbo = on;
	pthread_mutex_unlock(&fs->handles_lock);
}

/* Under h->lock: h was written to or resized. */
static void trunc_done(struct fs *fs, struct handle *h)
{
	h->trunc_pending = false;
	if (h->limbo)
		limbo_set(fs, h, false);
}

static void limbo_wait(struct fs *fs, int64_t id)
{
	struct timespec until;
	bool in = true;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_nsec += LIMBO_WAIT_NS;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&fs->handles_lock);
	while (in) {
		in = false;
		for (struct handle *h = fs->limbo ? fs->handles : NULL; h && !in; h = h->next)
			in = h->limbo && h->id == id;
		if (in && pthread_cond_timedwait(&fs->limbo_cond, &fs->handles_lock, &until))
			break;
	}
	pthread_mutex_unlock(&fs->handles_lock);
}

static bool created_by_other(struct fs *fs, int64_t id, pid_t pid)
{
	bool hidden = false;

	pthread_mutex_lock(&fs->handles_lock);
	for (struct handle *h = fs->creating ? fs->handles : NULL; h && !hidden; h = h->next)
		hidden = h->creating && h->id == id && h->opener != pid;
	pthread_mutex_unlock(&fs->handles_lock);
	return hidden;
}

static fuse_ino_t ino_in(fuse_ino_t ino)
{
	return ino == ROOT_INO && top_ino ? top_ino : ino;
}

static fuse_ino_t ino_out(fuse_ino_t ino)
{
	return top_ino && ino == top_ino ? ROOT_INO : ino;
}

static enum kind ino_kind(fuse_ino_t ino)
{
	ino = ino_in(ino);
	if (ino == ROOT_INO)
		return K_ROOT;
	return ino & 1 ? K_SECRET : K_INSTANCE;
}

static int64_t ino_id(fuse_ino_t ino)
{
	return (int64_t)(ino_in(ino) >> 1);
}

static fuse_ino_t instance_ino(int64_t id)
{
	return (fuse_ino_t)id << 1;
}

static fuse_ino_t secret_ino(int64_t id)
{
	return ((fuse_ino_t)id << 1) | 1;
}

static struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void ns_to_ts(int64_t ns, struct timespec *ts)
{
	ts->tv_sec = (time_t)(ns / 1000000000);
	ts->tv_nsec = (long)(ns % 1000000000);
}

static void stat_root(struct fs *fs, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ROOT_INO;
	st->st_mode = S_IFDIR | 0755;
	st->st_nlink = 2;
	st->st_blksize = 4096;
	ns_to_ts(fs->mount_ns, &st->st_mtim);
	st->st_atim = st->st_ctim = st->st_mtim;
}

static void stat_instance(const struct db_instance *in, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino_out(instance_ino(in->id));
	st->st_mode = S_IFDIR | (in->mode & 07777);
	st->st_nlink = 2;
	st->st_uid = in->uid;
	st->st_gid = in->gid;
	st->st_blksize = 4096;
	ns_to_ts(in->mtime_ns, &st->st_mtim);
	st->st_atim = st->st_ctim = st->st_mtim;
}

static void stat_secret(const struct db_secret *s, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = secret_ino(s->id);
	st->st_mode = S_IFREG | (s->mode & 0777);
	st->st_nlink = 1;
	st->st_uid = s->uid;
	st->st_gid = s->gid;
	st->st_size = (off_t)s->size;
	st->st_blocks = (blkcnt_t)((s->size + 511) / 512);
	st->st_blksize = 4096;
	ns_to_ts(s->mtime_ns, &st->st_mtim);
	ns_to_ts(s->chtime_ns, &st->st_ctim);
	st->st_atim = st->st_mtim;
}

static void entry_init(struct fs *fs, struct fuse_entry_param *e, const struct stat *st)
{
	memset(e, 0, sizeof(*e));
	e->ino = st->st_ino;
	e->generation = 1;
	e->attr = *st;
	e->attr_timeout = fs->timeout;
	e->entry_timeout = fs->timeout;
}

static int getattr_ino(struct fs *fs, fuse_ino_t ino, struct stat *st)
{
	struct db_instance in;
	struct db_secret s;
	int r;

	switch (ino_kind(ino)) {
	case K_ROOT:
		stat_root(fs, st);
		return 0;
	case K_INSTANCE:
		r = db_instance_get(fs->db, ino_id(ino), &in);
		if (r == 0)
			stat_instance(&in, st);
		return r;
	default:
		r = db_secret_get(fs->db, ino_id(ino), &s);
		if (r == 0)
			stat_secret(&s, st);
		return r;
	}
}

/* Store errors a caller can act on pass through; the rest become EIO. */
static int user_errno(int r)
{
	switch (r) {
	case -ENOENT: case -EEXIST: case -ENOTEMPTY: case -ENOSPC: case -EROFS:
	case -EFBIG: case -EINVAL: case -ENOMEM: case -EACCES: case -EPERM:
	case -EBUSY: case -EIO: case -EXDEV: case -ENOTDIR: case -EISDIR: case -ESTALE:
	case -EMFILE:
		return -r;
	default:
		return EIO;
	}
}

/* 0 for a good name; FUSE passes names of up to 1024 bytes. */
static int name_errno(const char *name)
{
	if (strnlen(name, NAME_MAX_LEN + 1) > NAME_MAX_LEN)
		return ENAMETOOLONG;
	return name_valid(name) ? 0 : EINVAL;
}

static void reply_err(fuse_req_t req, int r)
{
	fuse_reply_err(req, r < 0 ? user_errno(r) : r);
}

/* A refusal by the access rules: a user who keeps asking is answered late
 * (penalty.c), so a flood of them doesn't crowd out everyone else. */
static void reply_denied(fuse_req_t req, int r)
{
	if (r == -EACCES || r == -EPERM)
		penalty_reply(req, fuse_req_ctx(req)->uid, -r);
	else
		reply_err(req, r);
}

static void vfs_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~(FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_WRITEBACK_CACHE |
			FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
}

static void vfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct db_instance in;
	struct db_secret s;
	struct stat st;
	int r;

	if (name_errno(name)) {
		fuse_reply_err(req, name_errno(name) == ENAMETOOLONG ? ENAMETOOLONG : ENOENT);
		return;
	}
	switch (ino_kind(parent)) {
	case K_ROOT:
		r = db_instance_find(fs->db, name, &in);
		if (r == 0)
			stat_instance(&in, &st);
		break;
	case K_INSTANCE:
		r = db_secret_find(fs->db, ino_id(parent), name, &s);
		if (r == 0)
			stat_secret(&s, &st);
		break;
	default:
		r = -ENOTDIR;
	}
	if (r < 0) {
		reply_err(req, r);
		return;
	}
	entry_init(fs, &e, &st);
	fuse_reply_entry(req, &e);
}

/* A key renamed over or removed while a reader has it open still has the
 * attributes it was opened with, as an unlinked file does: the reader's
 * fstat() (which FUSE sends without the handle) must not fail. */
static bool getattr_open(struct fs *fs, fuse_ino_t ino, struct stat *st)
{
	bool found = false;

	pthread_mutex_lock(&fs->handles_lock);
	for (struct handle *h = fs->handles; h && !found; h = h->next) {
		found = h->have_st && h->st.st_ino == ino;
		if (found)
			*st = h->st;
	}
	pthread_mutex_unlock(&fs->handles_lock);
	return found;
}

static void vfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct stat st;
	int r = getattr_ino(fs, ino, &st);

	(void)fi;
	if (r == -ENOENT && ino_kind(ino) == K_SECRET && getattr_open(fs, ino, &st))
		fuse_reply_attr(req, &st, 0);
	else if (r == -ENOENT && ino_kind(ino) == K_SECRET)
		reply_err(req, -ESTALE);	/* the path walk looks the name up again */
	else if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_attr(req, &st, fs->timeout);
}

/* Grows or shrinks a value in locked memory; new bytes are zero. */
static int buf_resize(struct fs *fs, struct secbuf *b, size_t len)
{
	int r;

	if (len > fs->conf->max_value_size)
		return -EFBIG;
	if (len > b->len) {
		r = secbuf_reserve(b, len);
		if (r < 0)
			return r;
		memset(b->data + b->len, 0, len - b->len);
	} else {
		sodium_memzero(b->data + len, b->len - len);
	}
	b->len = len;
	return 0;
}

static int truncate_secret(struct fs *fs, int64_t id, off_t size, uid_t by)
{
	struct secbuf *b = NULL;
	int r;

	if (size < 0)
		return -EINVAL;
	if ((uint64_t)size > fs->conf->max_value_size)
		return -EFBIG;
	r = vault_read(fs->v, id, &b, NULL);
	if (r == 0)
		r = buf_resize(fs, b, (size_t)size);
	if (r == 0)
		r = vault_update(fs->v, id, b->data, b->len, by, NULL);
	secbuf_free(b);
	return r;
}

static void vfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			struct fuse_file_info *fi)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fs *fs = fs_of(req);
	struct handle *h = fi ? handle_get(fs_of(req), ino, fi) : NULL;
	/* Resizing an open handle is part of a write, audited at commit. */
	int audited = to_set & ~(h ? FUSE_SET_ATTR_SIZE : 0);
	struct guard_ref ref;
	struct stat st;
	int r;

	if (ino_kind(ino) == K_ROOT) {
		fuse_reply_err(req, EPERM);
		return;
	}
	r = guard_setattr(req, fs->v, ino_kind(ino) == K_INSTANCE ? ino_id(ino) : 0,
			  ino_kind(ino) == K_SECRET ? ino_id(ino) : 0, attr, audited, &ref);
	if (r == -EPERM) {
		fuse_reply_err(req, EPERM);
		return;
	}
	r = getattr_ino(fs, ino, &st);
	if (r == 0 && (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
		uid_t uid = to_set & FUSE_SET_ATTR_UID ? attr->st_uid : st.st_uid;
		gid_t gid = to_set & FUSE_SET_ATTR_GID ? attr->st_gid : st.st_gid;
		/* An instance keeps its sticky bit; a secret has only rwx bits. */
		mode_t bits = ino_kind(ino) == K_INSTANCE ? 01777 : 0777;
		mode_t mode = (to_set & FUSE_SET_ATTR_MODE ? attr->st_mode : st.st_mode) & bits;

		if (ino_kind(ino) == K_INSTANCE)
			r = db_instance_set_attr(fs->db, ino_id(ino), uid, gid, mode, db_now_ns());
		else
			r = db_secret_set_attr(fs->db, ino_id(ino), uid, gid, mode, db_now_ns());
	}
	if (r == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
		if (ino_kind(ino) != K_SECRET) {
			r = -EISDIR;
		} else if (h) {
			pthread_mutex_lock(&h->lock);
			r = buf_resize(fs, h->buf, attr->st_size < 0 ? SIZE_MAX :
				       (size_t)attr->st_size);
			if (r == 0) {
				h->dirty = true;
				h->closed = false;
				trunc_done(fs, h);
				handle_record(fs, h);
			}
			pthread_mutex_unlock(&h->lock);
		} else {
			r = truncate_secret(fs, ino_id(ino), attr->st_size, ctx->uid);
		}
	}
	guard_setattr_done(fs->v, &ref, attr, audited, r);
	/* Times are the store's to keep: utimens succeeds and changes nothing. */
	if (r == 0)
		r = getattr_ino(fs, ino, &st);
	if (r == 0 && h && (to_set & FUSE_SET_ATTR_SIZE))
		st.st_size = (off_t)h->buf->len;
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_attr(req, &st, fs->timeout);
}

struct dir_fill {
	struct fs *fs;
	fuse_req_t req;
	char *buf;
	size_t size;
	size_t used;
	bool plus;
	bool full;
};

static bool dir_add(struct dir_fill *d, const char *name, const struct stat *st, off_t next)
{
	struct fuse_entry_param e;
	size_t n;

	if (d->plus) {
		entry_init(d->fs, &e, st);
		n = fuse_add_direntry_plus(d->req, d->buf + d->used, d->size - d->used, name,
					   &e, next);
	} else {
		n = fuse_add_direntry(d->req, d->buf + d->used, d->size - d->used, name, st,
				      next);
	}
	if (n > d->size - d->used) {
		d->full = true;
		return false;
	}
	d->used += n;
	return true;
}

/* Directory offsets: 1 after ".", 2 after "..", then 2 + the row id of the
 * entry just returned; rows come in id order. */
static int dir_instance_cb(void *ctx, const struct db_instance *in)
{
	struct dir_fill *d = ctx;
	struct stat st;

	stat_instance(in, &st);
	return dir_add(d, in->name, &st, (off_t)in->id + 2) ? 0 : 1;
}

static int dir_secret_cb(void *ctx, const struct db_secret *s)
{
	struct dir_fill *d = ctx;
	struct stat st;

	stat_secret(s, &st);
	return dir_add(d, s->name, &st, (off_t)s->id + 2) ? 0 : 1;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct dir_fill d = { .fs = fs_of(req), .req = req, .size = size, .plus = plus };
	struct stat st;
	int r = 0;

	if (ino_kind(ino) == K_SECRET) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	d.buf = calloc(1, size);
	if (!d.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = getattr_ino(d.fs, ino, &st);
	if (r == 0 && off < 1 && !dir_add(&d, ".", &st, 1))
		goto reply;
	if (r == 0 && off < 2 && !dir_add(&d, "..", &st, 2))
		goto reply;
	if (r == 0 && ino_kind(ino) == K_ROOT)
		r = db_instance_each(d.fs->db, off > 2 ? off - 2 : 0, dir_instance_cb, &d);
	else if (r == 0)
		r = db_secret_each(d.fs->db, ino_id(ino), off > 2 ? off - 2 : 0,
				   dir_secret_cb, &d);
reply:
	if (r < 0 && d.used == 0)
		reply_err(req, r);
	else
		fuse_reply_buf(req, d.buf, d.used);
	free(d.buf);
}

static void vfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, false);
}

static void vfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			    struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, true);
}

static void vfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fs *fs = fs_of(req);
	const struct instance_conf *ic;
	struct fuse_entry_param e;
	struct guard_ref ref;
	struct db_instance in;
	struct stat st;
	int r;

	if (ino_kind(parent) != K_ROOT) {
		fuse_reply_err(req, ino_kind(parent) == K_INSTANCE ? EPERM : ENOTDIR);
		return;
	}
	if (name_errno(name)) {
		fuse_reply_err(req, name_errno(name));
		return;
	}
	ic = policy_instance(fs->conf, name);
	r = vault_instance_create(fs->v, name, ic && ic->has_owner ? ic->owner : ctx->uid,
				  ic && ic->has_group ? ic->group : ctx->gid,
				  ic && ic->has_mode ? ic->mode : mode & ~ctx->umask & 0700, &in);
	guard_ref_init(req, fs->v, &ref, name, NULL);
	guard_done(fs->v, &ref, AUDIT_MKDIR, r, NULL);
	if (r < 0) {
		reply_err(req, r);
		return;
	}
	log_info("instance %s created by uid %u", name, (unsigned)ctx->uid);
	stat_instance(&in, &st);
	entry_init(fs, &e, &st);
	fuse_reply_entry(req, &e);
}

static void vfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct guard_ref ref;
	struct db_instance in;
	int r;

	if (ino_kind(parent) != K_ROOT) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	r = db_instance_find(fs->db, name, &in);
	if (r == 0)
		r = vault_instance_delete(fs->v, in.id);
	if (r == 0)
		log_info("instance %s removed by uid %u", name, (unsigned)fuse_req_ctx(req)->uid);
	if (r != -ENOENT) {
		guard_ref_init(req, fs->v, &ref, name, NULL);
		guard_done(fs->v, &ref, AUDIT_RMDIR, r, NULL);
	}
	reply_err(req, r);
}

static void vfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct audit_entry ae;
	struct guard_ref ref;
	struct db_secret s;
	int r;

	if (ino_kind(parent) != K_INSTANCE) {
		fuse_reply_err(req, ino_kind(parent) == K_ROOT ? EISDIR : ENOTDIR);
		return;
	}
	r = db_secret_find(fs->db, ino_id(parent), name, &s);
	if (r == 0)
		r = guard_change(req, fs->v, ino_id(parent), name, AUDIT_DELETE, NULL, &ref);
	if (r == 0)
		r = guard_sticky(fs->v, ino_id(parent), s.uid, &ref, AUDIT_DELETE);
	if (r == 0) {
		guard_entry(&ref, AUDIT_DELETE, NULL, &ae);
		r = vault_delete(fs->v, s.id, fuse_req_ctx(req)->uid, &ae);
		audit_set_caller(NULL);
		if (r < 0)
			guard_done(fs->v, &ref, AUDIT_DELETE, r, NULL);
	}
	reply_err(req, r);
}

/* Secrets are regular files made by open(O_CREAT): no device, fifo, socket
 * or symlink can be made, and saying so beats ENOSYS ("Function not
 * implemented"), which is what users would otherwise get. */
static void vfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      dev_t rdev)
{
	(void)parent;
	(void)name;
	(void)mode;
	(void)rdev;
	fuse_reply_err(req, EPERM);
}

static void vfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	(void)link;
	(void)parent;
	(void)name;
	fuse_reply_err(req, EPERM);
}

static void vfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		       fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	struct fs *fs = fs_of(req);
	char detail[DB_NAME_MAX + 8];
	struct guard_ref ref;
	struct db_secret s, t;
	int r;

	if (flags & RENAME_EXCHANGE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* Across instances, mv falls back to copy and unlink, which re-seals
	 * every value under its new instance's key. */
	if (ino_kind(parent) != K_INSTANCE || parent != newparent) {
		fuse_reply_err(req, EXDEV);
		return;
	}
	if (name_errno(newname)) {
		fuse_reply_err(req, name_errno(newname));
		return;
	}
	snprintf(detail, sizeof(detail), "to %s", newname);
	r = db_secret_find(fs->db, ino_id(parent), name, &s);
	if (r == 0)
		r = guard_change(req, fs->v, ino_id(parent), name, AUDIT_RENAME, detail, &ref);
	/* Sticky: the secret moved, and the one it would replace. */
	if (r == 0)
		r = guard_sticky(fs->v, ino_id(parent), s.uid, &ref, AUDIT_RENAME);
	if (r == 0 && db_secret_find(fs->db, ino_id(parent), newname, &t) == 0 && t.id != s.id)
		r = guard_sticky(fs->v, ino_id(parent), t.uid, &ref, AUDIT_RENAME);
	if (r == 0) {
		r = vault_rename(fs->v, s.id, newname, flags & RENAME_NOREPLACE,
				 fuse_req_ctx(req)->uid, NULL);
		guard_done(fs->v, &ref, AUDIT_RENAME, r, detail);
	}
	reply_err(req, r);
}

static void handle_free(struct fs *fs, struct handle *h)
{
	if (!h)
		return;
	fh_release(h);
	pthread_mutex_lock(&fs->handles_lock);
	if (h->creating)
		fs->creating--;
	if (h->limbo) {
		fs->limbo--;
		pthread_cond_broadcast(&fs->limbo_cond);
	}
	if (h->prev)
		h->prev->next = h->next;
	else if (fs->handles == h)
		fs->handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&fs->handles_lock);
	/* read() replies while holding the lock, and the kernel may send
	 * RELEASE as soon as that reply is out: let that thread unlock first. */
	pthread_mutex_lock(&h->lock);
	pthread_mutex_unlock(&h->lock);
	secbuf_free(h->buf);
	secbuf_free(h->orig);
	quota_close(h->qu);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

/* A handle for uid, counted in its share (-EMFILE at its limit). Until
 * handle_charged(), buffers this thread makes are charged to that share. */
static int handle_new(struct fs *fs, struct handle **out, int64_t id, uid_t uid, pid_t opener)
{
	struct handle *h = calloc(1, sizeof(*h));
	int r;

	*out = NULL;
	if (!h)
		return -ENOMEM;
	r = quota_open(uid, &h->qu);
	if (r < 0) {
		free(h);
		return r;
	}
	secmem_use(quota_account(h->qu));
	pthread_mutex_init(&h->lock, NULL);
	h->id = id;
	h->uid = uid;
	h->opener = opener;
	pthread_mutex_lock(&fs->handles_lock);
	h->next = fs->handles;
	if (h->next)
		h->next->prev = h;
	fs->handles = h;
	pthread_mutex_unlock(&fs->handles_lock);
	*out = h;
	return 0;
}

/* The handle's buffers are made: nothing more of this thread's is the
 * opener's. */
static void handle_charged(void)
{
	secmem_use(NULL);
}

static void open_reply_fi(struct fuse_file_info *fi, struct handle *h)
{
	fi->fh = fh_assign(h);
	fi->direct_io = 1;
	fi->keep_cache = 0;
}

/*
 * Handles across serving processes. The kernel keeps an open file's fh
 * while workers come and go (src/holder.c), so an fh names the worker that
 * made it (its epoch) and a slot in that worker's table; a reader's fh
 * also carries the version it read, so the next worker rebuilds it exactly.
 * A writer's state, its buffer sealed under a key derived from the master
 * key, is recorded with the holder at every change before the change is
 * acknowledged, and the next worker adopts it. A writer whose record is
 * missing (its value too large to record) fails with EIO, never silently.
 *
 *   bits 63..48 epoch, 47 reader, 46..20 version + 1 (0: unknown), 19..0 slot
 */
#define FH_EPOCH_SHIFT 48
#define FH_READER (1ULL << 47)
#define FH_VER_SHIFT 20
#define FH_VER_MASK ((1ULL << 27) - 1)
#define FH_SLOTS (1UL << 20)

static struct {
	pthread_mutex_t lock;
	struct handle **slot;	/* [0] unused */
	size_t n, next;
	struct secbuf *key;	/* seals writers' records */
} ht = { .lock = PTHREAD_MUTEX_INITIALIZER };

struct handle_rec {
	int64_t id;
	uint64_t version;
	uint64_t owner;
	int32_t opener;
	uint32_t uid;
	int32_t error;
	uint32_t trunc_flushes;
	uint8_t append, dirty, committed, closed, trunc_pending, creating;
	struct guard_ref ref;
};

static uint64_t fh_epoch(void)
{
	return (uint64_t)(session_epoch() & 0xffff) << FH_EPOCH_SHIFT;
}

/* Puts h in a free slot; 0 or -ENOMEM. Called with ht.lock held. */
static int slot_put(struct handle *h)
{
	struct handle **grown;
	size_t i, n;

	for (i = 1; i < ht.n; i++) {
		size_t s = 1 + (ht.next + i - 1) % (ht.n - 1);

		if (!ht.slot[s]) {
			ht.slot[s] = h;
			h->slot = (uint32_t)s;
			ht.next = s;
			return 0;
		}
	}
	n = ht.n ? ht.n * 2 : 64;
	if (n > FH_SLOTS)
		return -ENOMEM;
	grown = realloc(ht.slot, n * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	memset(grown + ht.n, 0, (n - ht.n) * sizeof(*grown));
	i = ht.n ? ht.n : 1;
	ht.slot = grown;
	ht.n = n;
	grown[i] = h;
	h->slot = (uint32_t)i;
	return 0;
}

static uint64_t fh_assign(struct handle *h)
{
	uint64_t ver = h->read_version + 1;

	pthread_mutex_lock(&ht.lock);
	if (slot_put(h) == 0) {
		h->fh = fh_epoch() | h->slot;
		if (h->readonly)
			h->fh |= FH_READER | ((ver <= FH_VER_MASK ? ver : 0) << FH_VER_SHIFT);
	}
	pthread_mutex_unlock(&ht.lock);
	/* No slot: fh 0 is never found again, the file fails with EIO. */
	return h->fh;
}

static void fh_release(struct handle *h)
{
	pthread_mutex_lock(&ht.lock);
	if (h->slot && h->slot < ht.n && ht.slot[h->slot] == h)
		ht.slot[h->slot] = NULL;
	h->slot = 0;
	pthread_mutex_unlock(&ht.lock);
	if (h->recorded)
		session_forget(h->fh);
}

/* Called with ht.lock held. */
static struct handle *fh_find(uint64_t fh)
{
	size_t s = fh & (FH_SLOTS - 1);

	if ((fh & ~(FH_READER | (FH_VER_MASK << FH_VER_SHIFT) | (FH_SLOTS - 1))) == fh_epoch())
		return s < ht.n && ht.slot[s] && ht.slot[s]->fh == fh ? ht.slot[s] : NULL;
	for (s = 1; s < ht.n; s++)
		if (ht.slot[s] && ht.slot[s]->fh == fh)
			return ht.slot[s];
	return NULL;
}

/* A reader opened by an earlier worker: the version it read, again. */
static struct handle *reader_rebuild(struct fs *fs, fuse_ino_t ino, uint64_t fh)
{
	uint64_t ver = (fh >> FH_VER_SHIFT) & FH_VER_MASK;
	struct handle *h = NULL, *found;
	int r;

	if (!ver || ino_kind(ino) != K_SECRET || handle_new(fs, &h, ino_id(ino), 0, 0) < 0)
		return NULL;
	h->readonly = true;
	h->read_version = ver - 1;
	r = ver == 1 ? secbuf_new(&h->buf, 0) :
		vault_read_version(fs->v, h->id, ver - 1, &h->buf, NULL);
	if (r < 0) {
		log_warn("secret %lld: cannot reopen version %llu for a reader of the "
			 "previous worker: %s", (long long)h->id,
			 (unsigned long long)(ver - 1), strerror(-r));
		handle_free(fs, h);
		return NULL;
	}
	if (getattr_ino(fs, ino, &h->st) == 0) {
		h->st.st_size = (off_t)h->buf->len;
		h->have_st = true;
	}
	h->fh = fh;
	pthread_mutex_lock(&ht.lock);
	found = fh_find(fh);
	if (!found && slot_put(h) == 0)
		found = h;
	pthread_mutex_unlock(&ht.lock);
	if (found != h) {
		h->fh = 0;
		handle_free(fs, h);
	}
	return found;
}

/* The handle fi names, if this worker has it: made or adopted here, or
 * rebuilt since. */
static struct handle *handle_find(const struct fuse_file_info *fi)
{
	struct handle *h;

	pthread_mutex_lock(&ht.lock);
	h = fi->fh ? fh_find(fi->fh) : NULL;
	pthread_mutex_unlock(&ht.lock);
	return h;
}

static struct handle *handle_get(struct fs *fs, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = handle_find(fi);

	if (!h && (fi->fh & FH_READER))
		h = reader_rebuild(fs, ino, fi->fh);
	if (!h)
		log_warn("inode %llu: unknown file handle %#llx (a writer of a previous "
			 "worker whose state was not recorded): EIO",
			 (unsigned long long)ino, (unsigned long long)fi->fh);
	return h;
}

static void rec_ad(struct seal_ad *ad, uint64_t fh, const struct handle_rec *hr)
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const unsigned char *)&fh, sizeof(fh));
	crypto_generichash_update(&st, (const unsigned char *)hr, sizeof(*hr));
	crypto_generichash_final(&st, ad->buf, 32);
	ad->len = 32;
}

/* Called with h->lock held, or before the handle is shared. */
static void handle_record(struct fs *fs, struct handle *h)
{
	struct handle_rec hr = {
		.id = h->id, .version = h->version, .owner = h->owner, .opener = h->opener,
		.uid = h->uid, .error = h->error, .append = h->append, .dirty = h->dirty,
		.committed = h->committed, .closed = h->closed, .ref = h->ref,
		.trunc_pending = h->trunc_pending, .trunc_flushes = h->trunc_flushes,
		.creating = h->creating,
	};
	unsigned char *blob = NULL, *rec = NULL;
	struct seal_ad ad;
	size_t len = 0;
	int r = -EINVAL;

	(void)fs;
	if (!session_epoch() || !ht.key || h->readonly || !h->fh)
		return;
	rec_ad(&ad, h->fh, &hr);
	if (h->buf)
		r = seal_seal(&blob, &len, ht.key->data, &ad, h->buf->data, h->buf->len);
	rec = r == 0 ? malloc(sizeof(hr) + len) : NULL;
	if (rec) {
		memcpy(rec, &hr, sizeof(hr));
		memcpy(rec + sizeof(hr), blob, len);
		r = session_record(h->fh, rec, sizeof(hr) + len);
	}
	if (r < 0 || !rec) {
		if (h->recorded)
			session_forget(h->fh);
		h->recorded = false;
		log_debug("secret %lld: open writer not recorded with the holder: %s",
			  (long long)h->id, strerror(r < 0 ? -r : ENOMEM));
	} else {
		h->recorded = true;
	}
	free(rec);
	free(blob);
}

/* A writer recorded by an earlier worker, before this one serves. */
static void handle_adopt(void *ctx, uint64_t fh, const void *rec, size_t len)
{
	struct fs *fs = ctx;
	struct handle_rec hr;
	struct handle *h = NULL;
	struct seal_ad ad;
	int r = -EINVAL;

	if (len < sizeof(hr) || !ht.key)
		goto out;
	memcpy(&hr, rec, sizeof(hr));
	rec_ad(&ad, fh, &hr);
	r = handle_new(fs, &h, hr.id, hr.uid, hr.opener);
	if (r == 0)
		r = seal_open(&h->buf, ht.key->data, &ad, (const unsigned char *)rec + sizeof(hr),
			      len - sizeof(hr));
	if (r == 0) {
		h->version = hr.version;
		h->owner = hr.owner;
		h->error = hr.error;
		h->append = hr.append;
		h->dirty = hr.dirty;
		h->committed = hr.committed;
		h->closed = hr.closed;
		h->trunc_pending = hr.trunc_pending;
		h->trunc_flushes = hr.trunc_flushes;
		h->ref = hr.ref;
		h->fh = fh;
		h->recorded = true;
		pthread_mutex_lock(&ht.lock);
		r = slot_put(h);
		pthread_mutex_unlock(&ht.lock);
	}
	if (r == 0 && hr.creating)
		creating_set(fs, h, true);
	if (r == 0 && hr.trunc_pending && hr.trunc_flushes)
		limbo_set(fs, h, true);
out:
	if (r < 0) {
		log_warn("cannot adopt an open writer of the previous worker: %s", strerror(-r));
		if (h)
			h->recorded = false;
		handle_free(fs, h);
	}
}

static int handle_keys(struct vault *v)
{
	const struct secbuf *base = vault_audit_key(v);
	int r;

	if (!base || base->len < crypto_kdf_KEYBYTES)
		return -EINVAL;
	r = secbuf_new(&ht.key, SEAL_KEY_LEN);
	if (r == 0) {
		ht.key->len = SEAL_KEY_LEN;
		if (crypto_kdf_derive_from_key(ht.key->data, SEAL_KEY_LEN, 1, "vfshandl",
					       base->data) != 0)
			r = -EINVAL;
	}
	return r;
}

/* A retiring worker: its handles live on in the holder's records and in
 * readers' fh; only its copies of the plaintext go. */
static void handles_wipe(void *ctx)
{
	struct fs *fs = ctx;

	pthread_mutex_lock(&fs->handles_lock);
	for (struct handle *h = fs->handles; h; h = h->next) {
		secbuf_free(h->buf);
		secbuf_free(h->orig);
		h->buf = h->orig = NULL;
	}
	pthread_mutex_unlock(&fs->handles_lock);
	secbuf_free(ht.key);
	ht.key = NULL;
}

static void vfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		       struct fuse_file_info *fi)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct audit_entry ae;
	struct handle *h = NULL;
	struct db_instance in;
	struct db_secret s;
	struct stat st;
	mode_t smode;
	int r;

	if (ino_kind(parent) != K_INSTANCE) {
		fuse_reply_err(req, ino_kind(parent) == K_ROOT ? EPERM : ENOTDIR);
		return;
	}
	if (name_errno(name)) {
		fuse_reply_err(req, name_errno(name));
		return;
	}
	if (!S_ISREG(mode)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	r = db_instance_get(fs->db, ino_id(parent), &in);
	if (r == 0)
		r = handle_new(fs, &h, 0, ctx->uid, ctx->pid);
	if (r == 0) {
		smode = vault_secret_mode(fs->v, in.name, mode & ~ctx->umask);
		r = guard_create(req, fs->v, &in, name, smode, &h->ref);
		if (r < 0) {
			handle_charged();
			handle_free(fs, h);
			reply_denied(req, r);
			return;
		}
	}
	if (r == 0)
		r = secbuf_new(&h->buf, 0);
	handle_charged();
	if (r == 0) {
		guard_entry(&h->ref, AUDIT_CREATE, NULL, &ae);
		r = vault_create(fs->v, in.id, name, ctx->uid, in.gid, smode, &s, &ae);
	}
	if (h && r < 0)
		guard_done(fs->v, &h->ref, AUDIT_CREATE, r, NULL);
	if (r < 0) {
		if (r == -ENOMEM)
			log_err("%s/%s: cannot lock memory for a new value; create refused",
				in.name, name);
		handle_free(fs, h);
		reply_err(req, r);
		return;
	}
	h->id = s.id;
	h->append = fi->flags & O_APPEND;
	h->trunc_pending = fi->flags & O_TRUNC;
	creating_set(fs, h, true);
	stat_secret(&s, &st);
	entry_init(fs, &e, &st);
	open_reply_fi(fi, h);
	handle_record(fs, h);
	if (fuse_reply_create(req, &e, fi) != 0)
		handle_free(fs, h);
}

/* The value as its writer wrote it: a single trailing newline that the
 * store dropped is put back, so a writer continues the file (`echo a > k;
 * echo b >> k` gives two lines) and a put-back value is stored as before. */
static int read_as_written(struct fs *fs, int64_t id, struct secbuf **out)
{
	struct db_secret meta;
	int r = vault_read(fs->v, id, out, &meta);

	if (r == 0 && (meta.flags & DB_SECRET_NL_STRIPPED)) {
		r = secbuf_reserve(*out, (*out)->len + 1);
		if (r == 0)
			(*out)->data[(*out)->len++] = '\n';
	}
	if (r < 0) {
		secbuf_free(*out);
		*out = NULL;
	}
	return r;
}

static void vfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct db_blob sealed = { 0 };
	struct fs *fs = fs_of(req);
	struct handle *h = NULL;
	struct db_secret meta;
	int acc = fi->flags & O_ACCMODE;
	int r;

	if (ino_kind(ino) != K_SECRET) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	/* Linux filesystems empty the file; a reader's open never destroys a
	 * secret here. (The kernel let only a caller who may write this far.) */
	if (acc == O_RDONLY && (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (acc == O_RDONLY && created_by_other(fs, ino_id(ino), fuse_req_ctx(req)->pid)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	limbo_wait(fs, ino_id(ino));
	r = handle_new(fs, &h, ino_id(ino), fuse_req_ctx(req)->uid, fuse_req_ctx(req)->pid);
	/* The names for the access rules and the value: one snapshot, and for
	 * a reader one query. */
	db_read_begin(fs->db);
	if (r == 0 && acc == O_RDONLY)
		r = guard_open_fetch(req, fs->v, h->id, fi->flags, &h->ref, &meta, &sealed);
	else if (r == 0)
		r = guard_open(req, fs->v, h->id, fi->flags, &h->ref);
	if (r < 0) {
		handle_charged();
		db_blob_free(&sealed);
		db_read_end(fs->db);
		handle_free(fs, h);
		/* Renamed over or removed since the caller's lookup: the kernel
		 * looks the name up again, so a reader racing an editor's
		 * rename-over opens the new key instead of failing. */
		reply_denied(req, r == -ENOENT ? -ESTALE : r);
		return;
	}
	if (acc != O_RDONLY && (fi->flags & O_TRUNC)) {
		r = secbuf_new(&h->buf, 0);
		h->dirty = true;
		h->trunc_pending = true;
		/* Kept to put back if a write fails. A value that no longer
		 * authenticates can still be overwritten: that's how it is fixed. */
		if (r == 0 && read_as_written(fs, h->id, &h->orig) == -ENOMEM)
			r = -ENOMEM;
	} else if (r == 0 && acc != O_RDONLY) {
		r = read_as_written(fs, h->id, &h->buf);
	} else if (r == 0) {
		r = vault_read_fetched(fs->v, &meta, &sealed, &h->buf);
		if (r == 0) {
			stat_secret(&meta, &h->st);
			h->st.st_size = (off_t)h->buf->len;
			h->have_st = true;
		}
	}
	handle_charged();
	db_blob_free(&sealed);
	db_read_end(fs->db);
	guard_opened(fs->v, &h->ref, fi->flags, r);
	if (r < 0) {
		handle_free(fs, h);
		reply_err(req, r);
		return;
	}
	h->append = fi->flags & O_APPEND;
	h->readonly = acc == O_RDONLY;
	h->read_version = h->readonly ? meta.version : 0;
	open_reply_fi(fi, h);
	if (!h->readonly)
		handle_record(fs, h);
	/* Nothing to commit on a reader's close: spare it the FLUSH round trip. */
	fi->noflush = acc == O_RDONLY;
	if (fuse_reply_open(req, fi) != 0)
		handle_free(fs, h);
}

static void reply_read(fuse_req_t req, const struct secbuf *b, size_t size, off_t off)
{
	if (off < 0 || (size_t)off >= b->len) {
		fuse_reply_buf(req, NULL, 0);
	} else {
		size_t n = b->len - (size_t)off;

		fuse_reply_buf(req, (const char *)b->data + off, n < size ? n : size);
	}
}

static void vfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct handle *h = handle_get(fs_of(req), ino, fi);

	if (!h) {
		fuse_reply_err(req, EIO);
		return;
	}
	/* A read(2) names its caller's descriptor table (lock_owner); a read
	 * into the page cache, for a private mmap or readahead, names none. */
	if (!fi->lock_owner)
		__atomic_store_n(&h->paged, true, __ATOMIC_RELAXED);
	/* A reader's buffer never changes: no lock, so RELEASE, which may
	 * come the moment the reply is out, never waits for this thread. */
	if (h->readonly) {
		reply_read(req, h->buf, size, off);
		return;
	}
	pthread_mutex_lock(&h->lock);
	reply_read(req, h->buf, size, off);
	pthread_mutex_unlock(&h->lock);
}

static void vfs_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size,
		      off_t off, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct handle *h = handle_get(fs, ino, fi);
	size_t pos, end;
	int r = 0;

	if (!h) {
		sodium_memzero((void *)data, size);
		fuse_reply_err(req, EIO);
		return;
	}
	pthread_mutex_lock(&h->lock);
	pos = h->append ? h->buf->len : (size_t)off;
	if (off < 0 || h->error)
		r = h->error ? -h->error : -EINVAL;
	else if (pos > fs->conf->max_value_size || size > fs->conf->max_value_size - pos)
		r = -EFBIG;
	end = pos + size;
	if (r == 0 && end > h->buf->len)
		r = buf_resize(fs, h->buf, end);
	if (r == 0) {
		memcpy(h->buf->data + pos, data, size);
		h->dirty = true;
		h->closed = false;
		trunc_done(fs, h);
		h->owner = fi->lock_owner;
		handle_record(fs, h);
	} else if (!h->error) {
		h->error = -r;
		log_warn("secret inode %llu: write refused (%s); the stored value is kept",
			 (unsigned long long)ino, strerror(-r));
	}
	pthread_mutex_unlock(&h->lock);
	/* libfuse's request buffer is not locked memory: leave nothing there. */
	sodium_memzero((void *)data, size);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_write(req, size);
}

static bool store_error(int r)
{
	return r == -EROFS || r == -ENOSPC || r == -EIO || r == -EBUSY || r == -EPROTO;
}

/* Commits a dirty handle: at every flush (close) by its writer, at fsync
 * and at release.
 *
 * Others see a value change only to one its writer finished. A shell's
 * `cmd > key` opens with O_TRUNC, dup2()s and closes the first descriptor
 * before cmd writes anything: had that close committed the empty value,
 * every reader opening before cmd's output arrived would read nothing. So
 * an O_TRUNC handle that nothing was written to (nor resized) commits
 * nothing at its writer's first close and is in limbo (see limbo_wait).
 * Its empty value is committed at the writer's next close (a shell's
 * `: > key` closes twice), at fsync, or at release (a program that opens,
 * writes nothing and closes once).
 *
 * A handle whose writes failed (EFBIG, ENOMEM) or whose commit did (ENOSPC)
 * never commits later, behind the back of a caller told it failed; if it
 * had committed before (fsync, or a compound `{ a; b; } > key` whose first
 * command closed), its flush puts back the value found at open, so a failed
 * redirect loses nothing.
 *
 * Only the writer's own close commits: every process that inherited the
 * descriptor flushes when it closes its copy, and a child that a writing
 * thread's neighbour forks and execs does so with the value half written
 * (or, before the first write, truncated to nothing). FUSE names the
 * descriptor table of each writer and closer (lock_owner); before any write
 * the opening thread stands for the writer. Where either side is unknown
 * (0, as across pid namespaces), the close commits. */
struct closer {
	uint64_t owner;
	pid_t pid;
};

static bool closer_is_writer(const struct handle *h, const struct closer *c)
{
	if (!c)			/* fsync, release */
		return true;
	if (h->owner)
		return !c->owner || c->owner == h->owner;
	return !c->pid || !h->opener || c->pid == h->opener;
}

static int handle_commit(struct fs *fs, struct handle *h, bool closing, const struct closer *c)
{
	struct audit_entry ae;
	bool stored = false;
	int r = 0;

	pthread_mutex_lock(&h->lock);
	if (!closer_is_writer(h, c))
		goto out;
	if (c && h->trunc_pending && !h->error && h->trunc_flushes++ == 0) {
		limbo_set(fs, h, true);	/* a redirection's first close, or the only one */
		goto out;
	}
	if (closing)
		h->closed = true;
	if (!h->error && h->dirty) {
		guard_entry(&h->ref, AUDIT_WRITE, NULL, &ae);
		r = vault_update_amend(fs->v, h->id, h->buf->data, h->buf->len, h->uid,
				       &h->version, &ae);
		stored = r == 0;
		if (r < 0 && r != -ENOENT)
			guard_done(fs->v, &h->ref, AUDIT_WRITE, r, NULL);
		if (r == -ENOENT)	/* removed while open: like an unlinked file */
			r = 0;
		if (r == 0) {
			h->dirty = false;
			h->committed = true;
			trunc_done(fs, h);
		} else {
			h->error = -r;
			log_err("secret %lld: commit failed: %s%s%s%s", (long long)h->id,
				strerror(-r), store_error(r) ? " (" : "",
				store_error(r) ? db_errmsg(fs->db) : "", store_error(r) ? ")" : "");
		}
	}
	if (h->error) {
		if (h->committed && h->orig) {
			guard_entry(&h->ref, AUDIT_WRITE, "old value put back after a failed write",
				    &ae);
			r = vault_update_amend(fs->v, h->id, h->orig->data, h->orig->len,
					       h->uid, &h->version, &ae);
			stored = r == 0;
			if (r < 0 && r != -ENOENT)
				guard_done(fs->v, &h->ref, AUDIT_WRITE, r,
					   "old value put back after a failed write");
			if (r == 0 || r == -ENOENT)
				h->committed = false;
			else
				log_err("secret %lld: cannot put back the value after a failed "
					"write: %s", (long long)h->id, strerror(-r));
		}
		r = -h->error;
	}
	if (h->creating)	/* after the commit: others see the value at once */
		creating_set(fs, h, false);
out:
	handle_record(fs, h);
	pthread_mutex_unlock(&h->lock);
	/* The kernel cached the size and times from before: the caller's next
	 * stat must see what was just stored. */
	if (stored)
		inval_attr(secret_ino(h->id));
	return r;
}

static void vfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = handle_get(fs_of(req), ino, fi);
	struct closer c = { .owner = fi->lock_owner, .pid = fuse_req_ctx(req)->pid };

	if (!h) {
		fuse_reply_err(req, EIO);
		return;
	}
	reply_err(req, handle_commit(fs_of(req), h, true, &c));
}

static void vfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct handle *h = handle_get(fs_of(req), ino, fi);

	(void)datasync;
	if (!h) {
		fuse_reply_err(req, EIO);
		return;
	}
	reply_err(req, handle_commit(fs_of(req), h, false, NULL));
}

static void vfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	/* A reader of an earlier worker that this one never served: nothing
	 * to rebuild just to let it go. */
	struct handle *h = handle_find(fi);
	/* Whether an earlier worker's reader read into the page cache is not
	 * known here: drop its pages as if it had. */
	bool paged = !h || __atomic_load_n(&h->paged, __ATOMIC_RELAXED);

	if (h) {
		(void)handle_commit(fs_of(req), h, true, NULL);
		handle_free(fs_of(req), h);
	}
	fuse_reply_err(req, 0);
	/* The last mapping went with this file: no plaintext page may stay
	 * cached until the next open. */
	if (paged)
		inval_data(ino);
}

/* The session is over with handles still open: a signal or a lazy unmount
 * came before their RELEASE. One its writer has closed since its last change
 * is finished as release would finish it; one still being written is not
 * committed (its owner was never told it succeeded). Every buffer is wiped. */
static void vfs_destroy(void *userdata)
{
	struct fs *fs = userdata;
	struct handle *h;

	while ((h = fs->handles)) {
		if (h->closed)
			(void)handle_commit(fs, h, true, NULL);
		handle_free(fs, h);
	}
}

static void vfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	struct statvfs sv;

	(void)ino;
	if (statvfs(db_path(fs->db), &sv) < 0)
		memset(&sv, 0, sizeof(sv));
	sv.f_namemax = NAME_MAX_LEN;
	sv.f_fsid = 0;
	fuse_reply_statfs(req, &sv);
}

/* Extended attributes: secrets only; the rules are in xattr.c, whose
 * errors mean what they say. */
static int xattr_errno(int r)
{
	switch (r) {
	case -ENODATA: case -ERANGE: case -ENOTSUP: case -EPERM: case -E2BIG:
	case -EINVAL: case -EEXIST:
		return -r;
	default:
		return r < 0 ? user_errno(r) : 0;
	}
}

static void reply_xattr(fuse_req_t req, int n, const char *buf, size_t size)
{
	if (n < 0)
		fuse_reply_err(req, xattr_errno(n));
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else if ((size_t)n > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, (size_t)n);
}

/* Only user.* names exist here. ENOTSUP rather than ENODATA for the others
 * says so, and ls -l, which asks every file for security.selinux and
 * system.posix_acl_access, then stops asking for the rest of the listing:
 * two FUSE round trips fewer per file listed. */
static bool xattr_namespace_ours(const char *name)
{
	return strncmp(name, "user.", 5) == 0;
}

static void vfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	char buf[XATTR_BUF_MAX];

	reply_xattr(req, !xattr_namespace_ours(name) ? -ENOTSUP : ino_kind(ino) == K_SECRET ?
		    xattr_get(fs_of(req)->v, ino_id(ino), name, buf) : -ENODATA, buf, size);
}

static void vfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char buf[XATTR_BUF_MAX];

	reply_xattr(req, ino_kind(ino) == K_SECRET ?
		    xattr_list(fs_of(req)->v, ino_id(ino), buf) : 0, buf, size);
}

static void vfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			 size_t size, int flags)
{
	int r = ino_kind(ino) != K_SECRET ? -ENOTSUP :
		xattr_set(fs_of(req)->v, ino_id(ino), name, value, size, flags,
			  fuse_req_ctx(req)->uid);

	fuse_reply_err(req, xattr_errno(r));
}

static void vfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	int r = ino_kind(ino) != K_SECRET ? -ENODATA :
		xattr_remove(fs_of(req)->v, ino_id(ino), name, fuse_req_ctx(req)->uid);

	fuse_reply_err(req, xattr_errno(r));
}

static const struct fuse_lowlevel_ops vfs_ops = {
	.init = vfs_init,
	.destroy = vfs_destroy,
	.lookup = vfs_lookup,
	.getattr = vfs_getattr,
	.setattr = vfs_setattr,
	.readdir = vfs_readdir,
	.readdirplus = vfs_readdirplus,
	.mkdir = vfs_mkdir,
	.mknod = vfs_mknod,
	.symlink = vfs_symlink,
	.rmdir = vfs_rmdir,
	.unlink = vfs_unlink,
	.rename = vfs_rename,
	.create = vfs_create,
	.open = vfs_open,
	.read = vfs_read,
	.write = vfs_write,
	.flush = vfs_flush,
	.fsync = vfs_fsync,
	.release = vfs_release,
	.statfs = vfs_statfs,
	.getxattr = vfs_getxattr,
	.listxattr = vfs_listxattr,
	.setxattr = vfs_setxattr,
	.removexattr = vfs_removexattr,
};

static void fuse_log_to_ours(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	if (n && line[n - 1] == '\n')
		line[n - 1] = '\0';
	log_msg((int)level, "fuse: %s", line);
}

static bool other_users_allowed(void)
{
	char line[256];
	FILE *f;
	bool ok = false;

	if (geteuid() == 0)
		return true;
	f = fopen("/etc/fuse.conf", "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "user_allow_other", 16) == 0)
			ok = true;
	fclose(f);
	return ok;
}

static int fs_args(const struct fs_mount *m, struct fuse_args *args)
{
	char opts[512];

	snprintf(opts, sizeof(opts), "fsname=vaultfs,subtype=vaultfs,default_permissions%s",
		 other_users_allowed() ? ",allow_other" : "");
	fuse_set_log_func(fuse_log_to_ours);
	if (fuse_opt_add_arg(args, "vaultfs") || fuse_opt_add_arg(args, "-o") ||
	    fuse_opt_add_arg(args, opts) ||
	    (m->fuse_opts && (fuse_opt_add_arg(args, "-o") ||
			      fuse_opt_add_arg(args, m->fuse_opts))) ||
	    (m->debug && fuse_opt_add_arg(args, "-d")))
		return -1;
	return 0;
}

int fs_hold(const struct fs_mount *m, struct fuse_session **out)
{
	static const struct fuse_lowlevel_ops none;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se = NULL;
	int r = -1;

	*out = NULL;
	if (!other_users_allowed())
		log_warn("not root and no user_allow_other in /etc/fuse.conf: only this user "
			 "can use the mount");
	if (fs_args(m, &args) == 0)
		se = fuse_session_new(&args, &none, sizeof(none), NULL);
	if (se && fuse_session_mount(se, m->mountpoint) == 0) {
		*out = se;
		se = NULL;
		r = fuse_session_fd(*out);
	}
	if (se)
		fuse_session_destroy(se);
	fuse_opt_free_args(&args);
	return r;
}

void fs_unhold(struct fuse_session *se)
{
	if (!se)
		return;
	fuse_session_unmount(se);
	fuse_session_destroy(se);
}

/* A worker under a holder: the connection is handed over, not mounted. */
static int fs_adopt(struct fs *fs, struct fuse_session *se, const struct fs_mount *m)
{
	int dev = -1, r;

	session_test_hold_open(m->test_hold_open_ms);
	r = handle_keys(fs->v);
	if (r < 0)
		log_warn("cannot derive the key for open writers' records: a restart loses "
			 "writes in progress (%s)", strerror(-r));
	r = session_wait_go(m->ctl_fd, handle_adopt, fs, &dev);
	if (r < 0) {
		log_err("the holder did not hand over the connection: %s", strerror(-r));
		return -1;
	}
	r = session_adopt(se, dev);
	if (r < 0) {
		close(dev);
		log_err("cannot serve the adopted connection: %s", strerror(-r));
		return -1;
	}
	return 0;
}

static int limbo_init(struct fs *fs)
{
	pthread_condattr_t attr;
	int r;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	r = pthread_cond_init(&fs->limbo_cond, &attr);
	pthread_condattr_destroy(&attr);
	return r;
}

int fs_run(struct vault *v, const struct fs_mount *m)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se = NULL;
	struct fs fs = {
		.v = v, .db = vault_db(v), .conf = vault_conf(v),
		.timeout = vault_conf(v)->attr_timeout, .mount_ns = db_now_ns(),
		.handles_lock = PTHREAD_MUTEX_INITIALIZER,
	};
	int r = -1;

	top_ino = m->instance_id > 0 ? instance_ino(m->instance_id) : 0;
	quota_init(fs.conf);

	if (m->ctl_fd <= 0 && !other_users_allowed())
		log_warn("not root and no user_allow_other in /etc/fuse.conf: only this user "
			 "can use the mount");
	if (fs_args(m, &args) < 0)
		goto out;
	db_set_readers(fs.db, FS_READERS);
	if (limbo_init(&fs) != 0)
		goto out;
	se = fuse_session_new(&args, &vfs_ops, sizeof(vfs_ops), &fs);
	if (!se)
		goto out;
	if (fuse_set_signal_handlers(se) != 0)
		goto out;
	if (m->ctl_fd > 0 ? fs_adopt(&fs, se, m) != 0 :
	    fuse_session_mount(se, m->mountpoint) != 0) {
		fuse_remove_signal_handlers(se);
		goto out;
	}
	if ((m->ready && m->ready(m->ready_ctx) != 0) ||
	    (m->ctl_fd > 0 && session_serving(handles_wipe, &fs) != 0)) {
		fuse_session_unmount(se);
		fuse_remove_signal_handlers(se);
		goto out;
	}
	if (reload_start(v) < 0)
		log_warn("cannot set up SIGHUP: the master key can't be reloaded");
	if (inval_start(se) < 0)
		log_warn("cannot start the notifier: sizes written through the mount may "
			 "show late, within attr_timeout");
	else if (watch_start(fs.db, m->instance_id) < 0)
		log_warn("cannot follow the store's changes: others' changes show within "
			 "attr_timeout");
	if (penalty_start() < 0)
		log_warn("cannot start the penalty thread: repeated denials are answered at once");
	r = fs_loop(se);
	penalty_stop();
	watch_stop();
	inval_stop();
	reload_stop();
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
out:
	if (se)
		fuse_session_destroy(se);
	fuse_opt_free_args(&args);
	secbuf_free(ht.key);
	ht.key = NULL;
	return r;
}
