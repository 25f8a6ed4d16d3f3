/*
 * minifs: the smallest FUSE filesystem that does what vaultfs does for a
 * reader, as the benchmark's measure of what FUSE itself costs. It uses the
 * low-level API, opens every file direct_io, serves the same bytes from
 * memory, and has no crypto and no database.
 *
 *   minifs [-f] [-t SECONDS] [-n COUNT] [-v VALUE] MOUNTPOINT
 *
 * The root directory holds COUNT files named K000000, K000001, ..., each
 * holding VALUE. Entries and attributes are cached for SECONDS (vaultfs's
 * attr_timeout), and the session loop is configured as vaultfs's is, so
 * the two differ only in what happens inside each request.
 */
#define FUSE_USE_VERSION 314

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "../fs/fuse_lib.h"

#include "../fs/loop.h"

#define ROOT_INO FUSE_ROOT_ID
#define NAME_DIGITS 6

static double timeout = 1.0;
static long nfiles = 1;
static const char *value = "0123456789abcdef0123456789abcdef01234567";
static size_t value_len;

/* "K000042" -> 42, or -1 if the name is not one of ours. */
static long name_index(const char *name)
{
	long idx = 0;

	if (name[0] != 'K' || strlen(name) != NAME_DIGITS + 1)
		return -1;
	for (int i = 1; i <= NAME_DIGITS; i++) {
		if (name[i] < '0' || name[i] > '9')
			return -1;
		idx = idx * 10 + (name[i] - '0');
	}
	return idx < nfiles ? idx : -1;
}

static void file_stat(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == ROOT_INO) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)value_len;
	}
}

static void mini_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	long idx = parent == ROOT_INO ? name_index(name) : -1;

	if (idx < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = (fuse_ino_t)idx + 2;
	e.generation = 1;
	e.attr_timeout = timeout;
	e.entry_timeout = timeout;
	file_stat(e.ino, &e.attr);
	fuse_reply_entry(req, &e);
}

static void mini_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	file_stat(ino, &st);
	fuse_reply_attr(req, &st, timeout);
}

static void mini_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino == ROOT_INO) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EACCES);
		return;
	}
	fi->direct_io = 1;
	fuse_reply_open(req, fi);
}

static void mini_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	if (off < 0 || (size_t)off >= value_len)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, value + off, value_len - (size_t)off < size ?
			       value_len - (size_t)off : size);
}

static void mini_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops mini_ops = {
	.lookup = mini_lookup,
	.getattr = mini_getattr,
	.open = mini_open,
	.read = mini_read,
	.release = mini_release,
};

static void usage(void)
{
	fprintf(stderr, "usage: minifs [-f] [-t SECONDS] [-n COUNT] [-v VALUE] MOUNTPOINT\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se;
	int foreground = 0, opt, r = 1;

	while ((opt = getopt(argc, argv, "ft:n:v:")) != -1) {
		switch (opt) {
		case 'f': foreground = 1; break;
		case 't': timeout = atof(optarg); break;
		case 'n': nfiles = atol(optarg); break;
		case 'v': value = optarg; break;
		default: usage();
		}
	}
	if (optind != argc - 1)
		usage();
	value_len = strlen(value);
	/* fs/loop.c calls libfuse through vaultfs's table. */
	if (fuse_lib_load() < 0) {
		fprintf(stderr, "minifs: %s\n", fuse_lib_error());
		return 1;
	}
	if (fuse_opt_add_arg(&args, "minifs") || fuse_opt_add_arg(&args, "-o") ||
	    fuse_opt_add_arg(&args, "fsname=minifs,subtype=minifs,default_permissions"))
		return 1;
	se = fuse_session_new(&args, &mini_ops, sizeof(mini_ops), NULL);
	if (!se)
		return 1;
	if (fuse_set_signal_handlers(se) != 0)
		goto out;
	if (fuse_session_mount(se, argv[optind]) != 0)
		goto out_signals;
	if (fuse_daemonize(foreground) != 0)
		goto out_unmount;
	r = fs_loop(se) < 0 ? 1 : 0;
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out:
	fuse_session_destroy(se);
	fuse_opt_free_args(&args);
	return r;
}
