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
#include <stdatomic.h>

#include "hooks.h"
#include "ops_int.h"

/* The instance shown as the root, 0 for the whole vault. */
fuse_ino_t fs_top_ino;

/* Read connections beside the writer's: reads by concurrent requests run in
 * parallel instead of queueing on the writer's lock. */
#define FS_READERS 8

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

void ops_stat_instance(const struct db_instance *in, struct stat *st)
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

void ops_stat_secret(const struct db_secret *s, struct stat *st)
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
	/* Rendered, never written; at most this long (template.h). */
	if (s->flags & TEMPLATE_FLAG) {
		st->st_mode &= ~(mode_t)0222;
		st->st_size = (off_t)template_stat_size();
		st->st_blocks = 0;
	}
	ns_to_ts(s->mtime_ns, &st->st_mtim);
	ns_to_ts(s->chtime_ns, &st->st_ctim);
	st->st_atim = st->st_mtim;
}

/* Replies that carry attributes, counted. The kernel forgets a file's size
 * and times itself when it sends its writer's O_TRUNC open or write, so a
 * commit needs to tell it to forget them again only if a reply carried
 * some after that (see handle_commit). Starts at 1: 0 is no mark. */
static _Atomic uint64_t attrs_sent = 1;

void ops_attrs_out(void)
{
	atomic_fetch_add(&attrs_sent, 1);
}

uint64_t ops_attrs_mark(void)
{
	return atomic_load(&attrs_sent);
}

/* Every caller replies with e: its attributes are counted here. */
void ops_entry_init(struct fs *fs, struct fuse_entry_param *e, const struct stat *st)
{
	ops_attrs_out();
	memset(e, 0, sizeof(*e));
	e->ino = st->st_ino;
	e->generation = 1;
	e->attr = *st;
	e->attr_timeout = fs->timeout;
	e->entry_timeout = fs->timeout;
}

int ops_getattr_ino(struct fs *fs, fuse_ino_t ino, struct stat *st)
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
			ops_stat_instance(&in, st);
		return r;
	default:
		r = db_secret_get(fs->db, ino_id(ino), &s);
		if (r == 0)
			ops_stat_secret(&s, st);
		return r;
	}
}

/* Store errors a caller can act on pass through; the rest become EIO. */
int ops_user_errno(int r)
{
	switch (r) {
	case -ENOENT: case -EEXIST: case -ENOTEMPTY: case -ENOSPC: case -EROFS:
	case -EFBIG: case -EINVAL: case -ENOMEM: case -EACCES: case -EPERM:
	case -EBUSY: case -EIO: case -EXDEV: case -ENOTDIR: case -EISDIR: case -ESTALE:
	case -EMFILE:
	case -ENOKEY:	/* a key a template names is missing */
	case -EKEYEXPIRED:
		return -r;
	default:
		return EIO;
	}
}

/* 0 for a good name; FUSE passes names of up to 1024 bytes. */
int ops_name_errno(const char *name)
{
	if (strnlen(name, NAME_MAX_LEN + 1) > NAME_MAX_LEN)
		return ENAMETOOLONG;
	return name_valid(name) ? 0 : EINVAL;
}

void ops_reply_err(fuse_req_t req, int r)
{
	fuse_reply_err(req, r < 0 ? ops_user_errno(r) : r);
}

/* A refusal by the access rules: a user who keeps asking is answered late
 * (penalty.c), so a flood of them doesn't crowd out everyone else. */
void ops_reply_denied(fuse_req_t req, int r)
{
	if (r == -EACCES || r == -EPERM)
		penalty_reply(req, fuse_req_ctx(req)->uid, -r);
	else
		ops_reply_err(req, r);
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

static int fuse_loaded(void)
{
	if (fuse_lib_load() == 0)
		return 0;
	log_err("cannot load libfuse (packages fuse3, libfuse3-3): %s", fuse_lib_error());
	return -1;
}

int fs_hold(const struct fs_mount *m, struct fuse_session **out)
{
	static const struct fuse_lowlevel_ops none;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se = NULL;
	int r = -1;

	*out = NULL;
	if (fuse_loaded() < 0)
		return -1;
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

	session_test_hold(m->test_hold_open_ms, m->test_hold_reply_ms);
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

	if (fuse_loaded() < 0)
		return -1;
	fs_top_ino = m->instance_id > 0 ? instance_ino(m->instance_id) : 0;
	quota_init(fs.conf);
	template_set_stat_size(fs.conf->max_value_size);

	if (m->ctl_fd <= 0 && !other_users_allowed())
		log_warn("not root and no user_allow_other in /etc/fuse.conf: only this user "
			 "can use the mount");
	if (fs_args(m, &args) < 0)
		goto out;
	db_set_readers(fs.db, FS_READERS);
	if (handle_limbo_init(&fs) != 0)
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
	    (m->ctl_fd > 0 && session_serving(handle_wipe_all, &fs) != 0)) {
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
	if (hooks_start(v, m->instance_id) < 0)
		log_warn("on_change hooks are off: see the error above");
	if (penalty_start() < 0)
		log_warn("cannot start the penalty thread: repeated denials are answered at once");
	r = fs_loop(se);
	penalty_stop();
	hooks_stop();
	watch_stop();
	inval_stop();
	reload_stop();
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
out:
	if (se)
		fuse_session_destroy(se);
	fuse_opt_free_args(&args);
	handle_keys_free();
	return r;
}
