/* Attributes: stat, chmod, chown, truncate, statfs and extended attributes. */
#include "ops_int.h"

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

/* Attributes the kernel keeps for the mount's timeout, counted. */
static void reply_attr(fuse_req_t req, const struct stat *st)
{
	ops_attrs_out();
	fuse_reply_attr(req, st, fs_of(req)->timeout);
}

void vfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct stat st;
	int r;

	(void)fi;
	/* A key still being created here: as it will be stored, empty. */
	if (handle_pending_stat(fs, ino, &st)) {
		fuse_reply_attr(req, &st, 0);	/* not cached: not counted */
		return;
	}
	r = ops_getattr_ino(fs, ino, &st);
	if (r == -ENOENT && ino_kind(ino) == K_SECRET && getattr_open(fs, ino, &st))
		fuse_reply_attr(req, &st, 0);	/* not cached: not counted */
	else if (r == -ENOENT && ino_kind(ino) == K_SECRET)
		ops_reply_err(req, -ESTALE);	/* the path walk looks the name up again */
	else if (r < 0)
		ops_reply_err(req, r);
	else
		reply_attr(req, &st);
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
		r = handle_buf_resize(fs, b, (size_t)size);
	if (r == 0)
		r = vault_update(fs->v, id, b->data, b->len, by, NULL);
	secbuf_free(b);
	return r;
}

void vfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
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
	handle_settle(fs, ino);
	r = guard_setattr(req, fs->v, ino_kind(ino) == K_INSTANCE ? ino_id(ino) : 0,
			  ino_kind(ino) == K_SECRET ? ino_id(ino) : 0, attr, audited, &ref);
	if (r == -EPERM) {
		fuse_reply_err(req, EPERM);
		return;
	}
	r = ops_getattr_ino(fs, ino, &st);
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
		} else if (template_is(fs->v, ino_id(ino))) {
			r = -EACCES;	/* rendered, never written */
		} else if (h) {
			pthread_mutex_lock(&h->lock);
			r = handle_buf_resize(fs, h->buf, attr->st_size < 0 ? SIZE_MAX :
					      (size_t)attr->st_size);
			if (r == 0) {
				h->dirty = true;
				h->closed = false;
				handle_trunc_done(fs, h);
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
		r = ops_getattr_ino(fs, ino, &st);
	if (r == 0 && h && (to_set & FUSE_SET_ATTR_SIZE))
		st.st_size = (off_t)h->buf->len;
	if (r < 0)
		ops_reply_err(req, r);
	else
		reply_attr(req, &st);
}

void vfs_statfs(fuse_req_t req, fuse_ino_t ino)
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
		return r < 0 ? ops_user_errno(r) : 0;
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

void vfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	char buf[XATTR_BUF_MAX];

	if (xattr_namespace_ours(name))
		handle_settle(fs_of(req), ino);
	reply_xattr(req, !xattr_namespace_ours(name) ? -ENOTSUP : ino_kind(ino) == K_SECRET ?
		    xattr_get(fs_of(req)->v, ino_id(ino), name, buf) : -ENODATA, buf, size);
}

void vfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char buf[XATTR_BUF_MAX];

	handle_settle(fs_of(req), ino);
	reply_xattr(req, ino_kind(ino) == K_SECRET ?
		    xattr_list(fs_of(req)->v, ino_id(ino), buf) : 0, buf, size);
}

void vfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		  size_t size, int flags)
{
	int r;

	handle_settle(fs_of(req), ino);
	r = ino_kind(ino) != K_SECRET ? -ENOTSUP :
		xattr_set(fs_of(req)->v, ino_id(ino), name, value, size, flags,
			  fuse_req_ctx(req)->uid);

	fuse_reply_err(req, xattr_errno(r));
}

void vfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	int r;

	handle_settle(fs_of(req), ino);
	r = ino_kind(ino) != K_SECRET ? -ENODATA :
		xattr_remove(fs_of(req)->v, ino_id(ino), name, fuse_req_ctx(req)->uid);

	fuse_reply_err(req, xattr_errno(r));
}
