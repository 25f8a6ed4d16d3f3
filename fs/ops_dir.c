/* Directory operations: names, listings, instances (mkdir, rmdir), unlink
 * and rename. */
#include "ops_int.h"
#include "policy.h"

void vfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct db_instance in;
	struct db_secret s;
	struct stat st;
	int r;

	if (ops_name_errno(name)) {
		fuse_reply_err(req, ops_name_errno(name) == ENAMETOOLONG ? ENAMETOOLONG : ENOENT);
		return;
	}
	switch (ino_kind(parent)) {
	case K_ROOT:
		r = db_instance_find(fs->db, name, &in);
		if (r == 0)
			ops_stat_instance(&in, &st);
		break;
	case K_INSTANCE:
		handle_settle_name(fs, ino_id(parent), name);
		r = db_secret_find(fs->db, ino_id(parent), name, &s);
		if (r == 0)
			ops_stat_secret(&s, &st);
		break;
	default:
		r = -ENOTDIR;
	}
	if (r < 0) {
		ops_reply_err(req, r);
		return;
	}
	ops_entry_init(fs, &e, &st);
	fuse_reply_entry(req, &e);
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
		ops_entry_init(d->fs, &e, st);
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

	ops_stat_instance(in, &st);
	return dir_add(d, in->name, &st, (off_t)in->id + 2) ? 0 : 1;
}

static int dir_secret_cb(void *ctx, const struct db_secret *s)
{
	struct dir_fill *d = ctx;
	struct stat st;

	ops_stat_secret(s, &st);
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
	r = ops_getattr_ino(d.fs, ino, &st);
	if (r == 0 && off < 1 && !dir_add(&d, ".", &st, 1))
		goto reply;
	if (r == 0 && off < 2 && !dir_add(&d, "..", &st, 2))
		goto reply;
	if (r == 0 && ino_kind(ino) == K_ROOT) {
		r = db_instance_each(d.fs->db, off > 2 ? off - 2 : 0, dir_instance_cb, &d);
	} else if (r == 0) {
		handle_settle_instance(d.fs, ino_id(ino));
		r = db_secret_each(d.fs->db, ino_id(ino), off > 2 ? off - 2 : 0,
				   dir_secret_cb, &d);
	}
reply:
	if (r < 0 && d.used == 0)
		ops_reply_err(req, r);
	else
		fuse_reply_buf(req, d.buf, d.used);
	free(d.buf);
}

void vfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		 struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, false);
}

void vfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, true);
}

void vfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
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
	if (ops_name_errno(name)) {
		fuse_reply_err(req, ops_name_errno(name));
		return;
	}
	ic = policy_instance(fs->conf, name);
	r = vault_instance_create(fs->v, name, ic && ic->has_owner ? ic->owner : ctx->uid,
				  ic && ic->has_group ? ic->group : ctx->gid,
				  ic && ic->has_mode ? ic->mode : mode & ~ctx->umask & 0700, &in);
	guard_ref_init(req, fs->v, &ref, name, NULL);
	guard_done(fs->v, &ref, AUDIT_MKDIR, r, NULL);
	if (r < 0) {
		ops_reply_err(req, r);
		return;
	}
	log_info("instance %s created by uid %u", name, (unsigned)ctx->uid);
	ops_stat_instance(&in, &st);
	ops_entry_init(fs, &e, &st);
	fuse_reply_entry(req, &e);
}

void vfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
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
	if (r == 0) {
		handle_settle_instance(fs, in.id);	/* then it is not empty */
		r = vault_instance_delete(fs->v, in.id);
	}
	if (r == 0)
		log_info("instance %s removed by uid %u", name, (unsigned)fuse_req_ctx(req)->uid);
	if (r != -ENOENT) {
		guard_ref_init(req, fs->v, &ref, name, NULL);
		guard_done(fs->v, &ref, AUDIT_RMDIR, r, NULL);
	}
	ops_reply_err(req, r);
}

void vfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
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
	handle_settle_name(fs, ino_id(parent), name);
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
	ops_reply_err(req, r);
}

/* Secrets are regular files made by open(O_CREAT): no device, fifo, socket
 * or symlink can be made, and saying so beats ENOSYS ("Function not
 * implemented"), which is what users would otherwise get. */
void vfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)parent;
	(void)name;
	(void)mode;
	(void)rdev;
	fuse_reply_err(req, EPERM);
}

void vfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	(void)link;
	(void)parent;
	(void)name;
	fuse_reply_err(req, EPERM);
}

void vfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		const char *newname, unsigned int flags)
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
	if (ops_name_errno(newname)) {
		fuse_reply_err(req, ops_name_errno(newname));
		return;
	}
	snprintf(detail, sizeof(detail), "to %s", newname);
	handle_settle_name(fs, ino_id(parent), name);
	handle_settle_name(fs, ino_id(parent), newname);
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
	ops_reply_err(req, r);
}
