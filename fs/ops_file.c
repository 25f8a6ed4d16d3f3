/* File operations: create, open, read, write and the commit at close. */
#include "expiry.h"
#include "ops_int.h"

/* The dead worker made the key and its handle: the same file, again. */
static void create_again(fuse_req_t req, struct fs *fs, struct handle *h,
			 struct fuse_file_info *fi)
{
	struct fuse_entry_param e;
	struct db_secret s;
	struct stat st;
	int r = 0;

	pthread_mutex_lock(&h->lock);
	if (h->pending)
		handle_pending_row(h, &s);
	else
		r = db_secret_get(fs->db, h->id, &s);
	pthread_mutex_unlock(&h->lock);
	if (r < 0) {
		handle_free(fs, h);
		ops_reply_err(req, r);
		return;
	}
	ops_stat_secret(&s, &st);
	ops_entry_init(fs, &e, &st);
	handle_open_reply_again(fi, h);
	if (fuse_reply_create(req, &e, fi) != 0)
		handle_free(fs, h);
}

void vfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		struct fuse_file_info *fi)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct handle *h = NULL;
	struct db_instance in;
	struct db_secret s;
	struct stat st;
	int64_t id = 0;
	mode_t smode = 0;
	int r;

	if (ino_kind(parent) != K_INSTANCE) {
		fuse_reply_err(req, ino_kind(parent) == K_ROOT ? EPERM : ENOTDIR);
		return;
	}
	if (ops_name_errno(name)) {
		fuse_reply_err(req, ops_name_errno(name));
		return;
	}
	if (!S_ISREG(mode)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	h = handle_resent_open(fs);
	if (h) {
		create_again(req, fs, h, fi);
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
			ops_reply_denied(req, r);
			return;
		}
	}
	if (r == 0)
		r = secbuf_new(&h->buf, 0);
	handle_charged();
	/* The name is free (the kernel's entry for it may be older than a
	 * key another process made since): the row is stored later, and a
	 * clash then would lose what the creator wrote. */
	if (r == 0) {
		handle_settle_name(fs, in.id, name);
		r = db_secret_find(fs->db, in.id, name, &s);
		r = r == 0 ? -EEXIST : r == -ENOENT ? 0 : r;
	}
	if (r == 0)
		r = vault_create_reserve(fs->v, &id);
	if (h && r < 0)
		guard_done(fs->v, &h->ref, AUDIT_CREATE, r, NULL);
	if (r < 0) {
		if (r == -ENOMEM)
			log_err("%s/%s: cannot lock memory for a new value; create refused",
				in.name, name);
		handle_free(fs, h);
		ops_reply_err(req, r);
		return;
	}
	h->id = id;
	h->pend = (struct handle_pending){
		.instance_id = in.id, .ctime_ns = db_now_ns(), .gid = in.gid, .mode = smode & 07777,
	};
	h->append = fi->flags & O_APPEND;
	h->trunc_pending = fi->flags & O_TRUNC;
	handle_creating_set(fs, h, true);
	handle_pending_row(h, &s);
	ops_stat_secret(&s, &st);
	ops_entry_init(fs, &e, &st);
	handle_open_reply(fi, h);
	/* From here on another request may settle it (handle_settle): under
	 * its lock, as every change of a shared handle is. */
	pthread_mutex_lock(&h->lock);
	handle_pending_set(fs, h, true);
	handle_record(fs, h);
	pthread_mutex_unlock(&h->lock);
	if (fuse_reply_create(req, &e, fi) != 0)
		handle_free(fs, h);
}

/* The value as its writer wrote it: a single trailing newline that the
 * store dropped is put back, so a writer continues the file (`echo a > k;
 * echo b >> k` gives two lines) and a put-back value is stored as before. */
static int read_as_written(struct fs *fs, const struct db_secret *meta,
			   const struct db_blob *sealed, struct secbuf **out)
{
	int r = vault_read_fetched(fs->v, meta, sealed, out);

	if (r == 0 && (meta->flags & DB_SECRET_NL_STRIPPED)) {
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

/* An open refused before any handle is made: the errno, or 0. */
static int open_refused(struct fs *fs, fuse_req_t req, fuse_ino_t ino, int flags)
{
	int acc = flags & O_ACCMODE;

	if (ino_kind(ino) != K_SECRET)
		return EISDIR;
	/* Linux filesystems empty the file; a reader's open never destroys a
	 * secret here. (The kernel let only a caller who may write this far.) */
	if (acc == O_RDONLY && (flags & O_TRUNC))
		return EINVAL;
	if (acc == O_RDONLY && handle_created_by_other(fs, ino_id(ino), fuse_req_ctx(req)->pid))
		return ENOENT;
	return 0;
}

/* The handle's buffer, in the open's snapshot: empty (O_TRUNC, the value
 * kept to put back), the value as written (a writer), or the value (a
 * reader: meta and sealed, fetched with the access check; a template is
 * rendered). */
static int open_fill(struct fs *fs, struct handle *h, int flags, const struct db_secret *meta,
		     const struct db_blob *sealed)
{
	int acc = flags & O_ACCMODE, r;

	if (acc != O_RDONLY && (flags & O_TRUNC)) {
		r = secbuf_new(&h->buf, 0);
		h->dirty = true;
		h->trunc_pending = true;
		/* Kept to put back if a write fails. A value that no longer
		 * authenticates can still be overwritten: that's how it is fixed. */
		if (r == 0 && read_as_written(fs, meta, sealed, &h->orig) == -ENOMEM)
			r = -ENOMEM;
		return r;
	}
	if (acc != O_RDONLY)
		return read_as_written(fs, meta, sealed, &h->buf);
	r = vault_read_fetched(fs->v, meta, sealed, &h->buf);
	if (r == 0 && (meta->flags & TEMPLATE_FLAG))
		r = template_open(fs->v, meta, &h->ref.who, &h->buf);
	if (r == 0) {
		ops_stat_secret(meta, &h->st);
		h->st.st_size = (off_t)h->buf->len;
		h->have_st = true;
	}
	return r;
}

void vfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct db_blob sealed = { 0 };
	struct fs *fs = fs_of(req);
	struct handle *h = NULL;
	struct db_secret meta;
	int acc = fi->flags & O_ACCMODE;
	int r;

	r = open_refused(fs, req, ino, fi->flags);
	if (r) {
		fuse_reply_err(req, r);
		return;
	}
	handle_settle(fs, ino);
	/* A writer the dead worker opened: the same file, again. */
	h = acc != O_RDONLY ? handle_resent_open(fs) : NULL;
	if (h) {
		handle_open_reply_again(fi, h);
		if (fuse_reply_open(req, fi) != 0)
			handle_free(fs, h);
		return;
	}
	handle_limbo_wait(fs, ino_id(ino));
	r = handle_new(fs, &h, ino_id(ino), fuse_req_ctx(req)->uid, fuse_req_ctx(req)->pid);
	/* The names for the access rules and the value: one snapshot, one
	 * query. */
	db_read_begin(fs->db);
	if (r == 0)
		r = guard_open_fetch(req, fs->v, h->id, fi->flags, &h->ref, &meta, &sealed);
	/* A template is rendered, never written. */
	if (r == 0 && acc != O_RDONLY && (meta.flags & TEMPLATE_FLAG))
		r = -EACCES;
	if (r < 0) {
		handle_charged();
		db_blob_free(&sealed);
		db_read_end(fs->db);
		handle_free(fs, h);
		/* Renamed over or removed since the caller's lookup: the kernel
		 * looks the name up again, so a reader racing an editor's
		 * rename-over opens the new key instead of failing. */
		ops_reply_denied(req, r == -ENOENT ? -ESTALE : r);
		return;
	}
	r = open_fill(fs, h, fi->flags, &meta, &sealed);
	handle_charged();
	db_blob_free(&sealed);
	db_read_end(fs->db);
	/* After the snapshot: a read limit counts in a write transaction. */
	if (r == 0 && acc == O_RDONLY)
		r = expiry_open(fs->v, &meta, &h->buf);
	else if (r == 0 && acc == O_RDWR && !(fi->flags & O_TRUNC))
		r = expiry_open_rw(fs->v, h->id);
	guard_opened(fs->v, &h->ref, fi->flags, r);
	if (r < 0) {
		handle_free(fs, h);
		ops_reply_err(req, r);
		return;
	}
	h->append = fi->flags & O_APPEND;
	h->readonly = acc == O_RDONLY;
	h->read_version = h->readonly ? meta.version : 0;
	/* No version to read again after a worker crash: that reader gets EIO
	 * rather than a rendering of other values mid-file. */
	if (h->readonly && (meta.flags & TEMPLATE_FLAG))
		h->read_version = UINT64_MAX;
	handle_open_reply(fi, h);
	if (!h->readonly) {
		h->attrs_mark = ops_attrs_mark();
		handle_record(fs, h);
	}
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

void vfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
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

void vfs_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
	       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct handle *h = handle_get(fs, ino, fi);
	size_t pos, end;
	int r = 0;

	if (!h) {
		secmem_wipe((void *)data, size);
		fuse_reply_err(req, EIO);
		return;
	}
	pthread_mutex_lock(&h->lock);
	if (handle_done_find(h, &r))
		goto answer;
	pos = h->append ? h->buf->len : (size_t)off;
	if (off < 0 || h->error)
		r = h->error ? -h->error : -EINVAL;
	else if (pos > fs->conf->max_value_size || size > fs->conf->max_value_size - pos)
		r = -EFBIG;
	end = pos + size;
	if (r == 0 && end > h->buf->len)
		r = handle_buf_resize(fs, h->buf, end);
	if (r == 0) {
		memcpy(h->buf->data + pos, data, size);
		h->dirty = true;
		h->closed = false;
		handle_trunc_done(fs, h);
		h->owner = fi->lock_owner;
	} else if (!h->error) {
		h->error = -r;
		log_warn("secret inode %llu: write refused (%s); the stored value is kept",
			 (unsigned long long)ino, strerror(-r));
	}
	/* A refused write is recorded too: the next worker must not commit
	 * what came before it. */
	handle_done_add(h, r);
	handle_record(fs, h);
	/* A write the kernel sees succeed makes it forget size and times. */
	if (r == 0)
		h->attrs_mark = ops_attrs_mark();
answer:
	pthread_mutex_unlock(&h->lock);
	/* libfuse's request buffer is not locked memory: leave nothing there. */
	secmem_wipe((void *)data, size);
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
 * nothing at its writer's first close and is in limbo (see handle_limbo_wait).
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

int handle_commit(struct fs *fs, struct handle *h, bool closing, const struct closer *c)
{
	struct audit_entry ae;
	bool stored = false, tell;
	int r = 0;

	pthread_mutex_lock(&h->lock);
	if (!closer_is_writer(h, c))
		goto out;
	if (c && handle_done_find(h, &r))
		goto out;
	if (c && h->trunc_pending && !h->error && h->trunc_flushes++ == 0) {
		/* a redirection's first close, or the only one */
		handle_limbo_set(fs, h, true);
		goto done;
	}
	if (closing)
		h->closed = true;
	/* A key created here: its row, with the value if there is one. */
	if (h->pending) {
		r = handle_settle_locked(fs, h, h->dirty, !closing);
		stored = r == 0 && h->committed;
	}
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
			handle_trunc_done(fs, h);
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
		handle_creating_set(fs, h, false);
done:
	if (c)
		handle_done_add(h, r);
out:
	/* A release that stored nothing needs no record: it is forgotten next,
	 * and the one the holder has already tells a later worker as much. */
	if (c || !closing || stored || h->error)
		handle_record(fs, h);
	tell = stored && ops_attrs_mark() != h->attrs_mark;
	pthread_mutex_unlock(&h->lock);
	/* The caller's next stat must see what was just stored. The kernel
	 * forgot the size and times when it sent the writer's O_TRUNC open and
	 * each write; it need be told again only if attributes went out since
	 * (a stat while the value was being written, a chmod, a create's
	 * entry): a commit then waits for the notifier, and the next open asks
	 * for every attribute again. */
	if (tell)
		inval_attr(secret_ino(h->id));
	return r;
}

void vfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = handle_get(fs_of(req), ino, fi);
	struct closer c = { .owner = fi->lock_owner, .pid = fuse_req_ctx(req)->pid };

	if (!h) {
		fuse_reply_err(req, EIO);
		return;
	}
	ops_reply_err(req, handle_commit(fs_of(req), h, true, &c));
}

void vfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct handle *h = handle_get(fs_of(req), ino, fi);

	(void)datasync;
	if (!h) {
		fuse_reply_err(req, EIO);
		return;
	}
	ops_reply_err(req, handle_commit(fs_of(req), h, false, NULL));
}

void vfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
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
