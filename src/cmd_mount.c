/* vaultfs mount. In the background by default: the parent forks before any
 * key is loaded (memory locks are not inherited across fork), and returns
 * only when the child reports the mount usable, or with the child's error. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../crypto/secmem.h"
#include "../fs/fs.h"
#include "../fs/log.h"
#include "../fs/audit.h"
#include "../fs/name.h"
#include "../fs/vault.h"
#include "cli.h"
#include "holder.h"
#include "commands.h"
#include "notify.h"
#include "privdrop.h"

#define FUSE_SUPER_MAGIC 0x65735546

struct mount_opts {
	bool foreground;
	bool debug;
	const char *fuse_opts;
	const char *instance;
	const char *mountpoint;
	int ready_fd;
	int worker_fd;			/* --worker: the holder's control socket */
	unsigned test_hold_open_ms;	/* --test-hold-open MS (hidden, tests) */
	unsigned test_hold_reply_ms;	/* --test-hold-reply MS (hidden, tests) */
	bool fd_store;			/* --fd-store */
	const struct vault_conf *conf;
};

static int mount_opt(int opt, const char *arg, void *ctx)
{
	struct mount_opts *mo = ctx;

	switch (opt) {
	case 'f':
		mo->foreground = true;
		return 0;
	case 'd':
		mo->foreground = mo->debug = true;
		return 0;
	case 'o':
		mo->fuse_opts = arg;
		return 0;
	case OPT_INSTANCE:
		mo->instance = arg;
		return 0;
	case OPT_FD_STORE:
		mo->fd_store = true;
		return 0;
	case OPT_TEST_HOLD:
		mo->test_hold_open_ms = (unsigned)atoi(arg);
		return 0;
	case OPT_TEST_HOLD_REPLY:
		mo->test_hold_reply_ms = (unsigned)atoi(arg);
		return 0;
	case OPT_WORKER:
		mo->worker_fd = atoi(arg);
		return mo->worker_fd >= 3 ? 0 : -1;
	default:
		return -1;
	}
}

static int mount_ready_detach(struct mount_opts *mo)
{
	int fd;

	log_to_syslog(true);
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	if (mo->ready_fd < 0)
		return 0;
	if (write(mo->ready_fd, "1", 1) != 1)
		return -1;
	close(mo->ready_fd);
	mo->ready_fd = -1;
	return 0;
}

/* The mount is in place: tell a service manager (Type=notify), and in the
 * background child, tell the parent and let go of the terminal. */
static int mount_ready(void *ctx)
{
	struct mount_opts *mo = ctx;
	char err[1024];

	if (priv_drop(mo->conf, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return -1;
	}
	if (mo->worker_fd >= 0 && mo->foreground)
		return 0;
	if (mo->worker_fd < 0)
		notify_ready(mo->mountpoint);
	if (mo->ready_fd < 0 && mo->worker_fd < 0)
		return 0;
	return mount_ready_detach(mo);
}

static void holder_ready(void *ctx)
{
	struct mount_opts *mo = ctx;

	notify_ready(mo->mountpoint);
	if (mo->ready_fd >= 0 && mount_ready_detach(mo) < 0)
		log_warn("cannot tell the caller the mount is ready");
}

/* The parent: waits for "ready" or for the child to fail. */
static int wait_child(pid_t pid, int fd)
{
	char c;
	ssize_t n;
	int status;

	do {
		n = read(fd, &c, 1);
	} while (n < 0 && errno == EINTR);
	close(fd);
	if (n == 1)
		return 0;
	if (waitpid(pid, &status, 0) < 0)
		return 1;
	if (WIFEXITED(status))
		return WEXITSTATUS(status) ? WEXITSTATUS(status) : 1;
	cli_error("the mount process died (signal %d)", WTERMSIG(status));
	return 1;
}

/* A daemon that died (kill -9, OOM) leaves its mount behind, answering
 * ENOTCONN; detaching it lets a restart (systemd Restart=) recover. */
static int detach_stale(const char *path)
{
	if (geteuid() == 0)
		return umount2(path, MNT_DETACH);
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-z", "--", path, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0)
		return -1;
	return 0;
}

static int check_mountpoint(const char *path)
{
	struct statfs sfs;
	struct stat st;

	/* statfs always reaches the daemon; stat may answer from the cache. */
	if (statfs(path, &sfs) < 0 && errno == ENOTCONN) {
		if (detach_stale(path) < 0) {
			cli_error("mount point %s: a previous mount died and could not be "
				  "detached; run: fusermount3 -u -z %s", path, path);
			return -1;
		}
		cli_error("warning: detached the dead mount left on %s", path);
	}
	if (stat(path, &st) < 0) {
		cli_error("mount point %s: %s", path, strerror(errno));
		return -1;
	}
	if (statfs(path, &sfs) == 0 && sfs.f_type == FUSE_SUPER_MAGIC) {
		cli_error("mount point %s: already a FUSE mount (unmount it first: "
			  "fusermount3 -u %s)", path, path);
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		cli_error("mount point %s: not a directory", path);
		return -1;
	}
	return 0;
}

/* --instance: the instance must exist (made by its [instance] section or
 * by mkdir on a whole-vault mount) before it can be the root. */
static int find_instance(struct cli *c, const char *name, int64_t *id)
{
	struct db_instance in;
	int r = vault_instance_find(c->vault, name, &in);

	if (r == -ENOENT) {
		cli_error("instance %s does not exist (add an [instance %s] section to the "
			  "config, or mkdir it on a whole-vault mount)", name, name);
		return -1;
	}
	if (r < 0) {
		cli_error("instance %s: %s", name, strerror(-r));
		return -1;
	}
	*id = in.id;
	return 0;
}

/* Before a worker serves: the daemon's user can be taken, the vault opens
 * with an undamaged file, the config's instances exist, the audit log
 * runs. 0, or -1 with the reason printed. */
static int serve_prepare(struct cli *c, struct mount_opts *mo, struct fs_mount *m)
{
	char err[1024];
	int r;

	log_syslog_socket(c->conf.daemon.syslog_socket);
	if (priv_check(&c->conf, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return -1;
	}
	if (cli_open_vault(c, 0) < 0)
		return -1;
	/* A damaged file is refused here, not found out by a reader later. */
	r = vault_store_check(c->vault, err, sizeof(err));
	if (r < 0) {
		cli_error("%s: damaged database, refusing to mount (%s); restore it from a "
			  "backup", c->conf.db, err);
		return -1;
	}
	if (vault_apply_config(c->vault, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return -1;
	}
	if (mo->instance && find_instance(c, mo->instance, &m->instance_id) < 0)
		return -1;
	r = vault_audit(c->vault) ? audit_start(vault_audit(c->vault)) : 0;
	if (r < 0) {
		cli_error("cannot start the audit log: %s", strerror(-r));
		return -1;
	}
	/* Under a holder the holder mounts, as the user that started it. */
	if (mo->worker_fd < 0 && priv_prepare(&c->conf, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		return -1;
	}
	return 0;
}

static int serve(struct cli *c, struct mount_opts *mo, const char *mountpoint)
{
	struct fs_mount m = {
		.mountpoint = mountpoint, .fuse_opts = mo->fuse_opts, .debug = mo->debug,
		.ready = mount_ready, .ready_ctx = mo, .ctl_fd = mo->worker_fd,
		.test_hold_open_ms = mo->test_hold_open_ms,
		.test_hold_reply_ms = mo->test_hold_reply_ms,
	};
	int r;

	mo->mountpoint = mountpoint;
	mo->conf = &c->conf;
	if (serve_prepare(c, mo, &m) < 0)
		return 1;
	log_set_verbose(mo->debug);
	r = fs_run(c->vault, &m);
	if (mo->worker_fd < 0)
		notify_stopping();
	if (r != 0) {
		if (mo->ready_fd >= 0)
			cli_error("cannot mount on %s (see the messages above)", mountpoint);
		else
			log_err("stopped with an error (%d)", r);
		return 1;
	}
	if (mo->worker_fd < 0)
		log_info("unmounted %s", mountpoint);
	return 0;
}

/* The holder's part: workers are this command again, with --worker. */
static int hold(struct cli *c, struct mount_opts *mo, const char *mountpoint, int argc,
		char **argv)
{
	struct fs_mount m = {
		.mountpoint = mountpoint, .fuse_opts = mo->fuse_opts, .debug = mo->debug,
		.ctl_fd = -1,
	};
	struct holder_conf hc = {
		.mount = &m, .ready = holder_ready, .ready_ctx = mo, .fd_store = mo->fd_store,
	};
	char **wargv = calloc((size_t)argc + 3, sizeof(*wargv));
	int ret;

	if (!wargv)
		return 1;
	mo->mountpoint = mountpoint;
	mo->conf = &c->conf;
	wargv[0] = argv[0];
	wargv[1] = "mount";
	wargv[2] = "--worker=3";
	for (int i = 1; i < argc; i++)
		wargv[i + 2] = argv[i];
	hc.worker_argv = wargv;
	hc.db = c->conf.db;
	cli_harden();
	log_set_verbose(mo->debug);
	ret = holder_run(&hc);
	if (ret == 0) {
		notify_stopping();
		log_info("unmounted %s", mountpoint);
	}
	free(wargv);
	return ret;
}

/* Where to mount: the path resolved, unless nobody serves it yet (a
 * worker's mount point, or one whose connection systemd kept for us):
 * resolving it would be a request to it, answered by no one. */
static int mountpoint_of(const struct mount_opts *mo, const char *mp, char out[PATH_MAX],
			 bool *adopting)
{
	*adopting = mo->fd_store && mp[0] == '/' && notify_stored_fd(HOLDER_FD_NAME) >= 0;
	if (mo->worker_fd >= 0 || *adopting) {
		snprintf(out, PATH_MAX, "%s", mp);
		return 0;
	}
	if (realpath(mp, out))
		return 0;
	cli_error("mount point %s: %s", mp, strerror(errno));
	return -1;
}

/* In the background: the parent returns once the mount is usable, or not. */
static int hold_detached(struct cli *c, struct mount_opts *mo, const char *mountpoint,
			 int argc, char **argv)
{
	int fds[2];
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0) {
		cli_error("pipe: %s", strerror(errno));
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		cli_error("fork: %s", strerror(errno));
		return 1;
	}
	if (pid > 0) {
		close(fds[1]);
		return wait_child(pid, fds[0]);
	}
	close(fds[0]);
	mo->ready_fd = fds[1];
	setsid();
	if (chdir("/") < 0)
		return 1;
	return hold(c, mo, mountpoint, argc, argv);
}

int mount_main(int argc, char **argv)
{
	static const struct option extra[] = {
		{ "foreground", no_argument, NULL, 'f' },
		{ "debug", no_argument, NULL, 'd' },
		{ "options", required_argument, NULL, 'o' },
		{ "instance", required_argument, NULL, OPT_INSTANCE },
		{ "worker", required_argument, NULL, OPT_WORKER },
		{ "test-hold-open", required_argument, NULL, OPT_TEST_HOLD },
		{ "test-hold-reply", required_argument, NULL, OPT_TEST_HOLD_REPLY },
		{ "fd-store", no_argument, NULL, OPT_FD_STORE },
		{ 0 },
	};
	struct cli c = {
		.cmd = "mount", .usage = "[OPTIONS] [-f] [-o FUSE_OPTIONS] [--instance NAME] [MOUNTPOINT]",
		.min_args = 0, .max_args = 1, .want = "too many arguments",
		.help = "Mounts the vault on MOUNTPOINT (default: mountpoint in the config, else\n"
			"/run/vault) and serves it: in the background, returning once the mount\n"
			"is usable, or in the foreground with -f. Stop it with fusermount3 -u,\n"
			"umount, SIGTERM or SIGINT. As root the mount uses allow_other and\n"
			"default_permissions, so the kernel enforces each secret's mode.\n\n"
			"  -f, --foreground     stay in the foreground, log to standard error\n"
			"  -d, --debug          foreground, with FUSE's request trace\n"
			"  -o, --options OPTS   extra FUSE mount options\n"
			"      --instance NAME  show only this instance: its directory is the\n"
			"                       root of the mount (one mount per container)\n"
			"      --fd-store       under systemd (FileDescriptorStoreMax=): keep the\n"
			"                       connection in the service's file descriptor store,\n"
			"                       so a restart after the holder died adopts it\n",
	};
	struct mount_opts mo = { .ready_fd = -1, .worker_fd = -1 };
	char mountpoint[PATH_MAX];
	bool adopting;
	int i, ret = 1;

	i = cli_parse(&c, argc, argv, "fdo:", extra, mount_opt, &mo);
	if (mo.instance && !name_valid(mo.instance))
		cli_usage_error(&c, "--instance %s: not an instance name (1-255 bytes of "
				"A-Z a-z 0-9 . _ -)", mo.instance);
	if (cli_start(&c, CLI_CONFIG_ONLY, NULL) < 0 ||
	    mountpoint_of(&mo, i < argc ? argv[i] : c.conf.mountpoint, mountpoint, &adopting) < 0)
		goto out;
	if (mo.worker_fd >= 0) {
		unsetenv("NOTIFY_SOCKET");	/* the holder speaks to systemd */
		ret = serve(&c, &mo, mountpoint);
	} else if (!adopting && check_mountpoint(mountpoint) < 0) {
		/* A connection kept for us by systemd may be mounted there
		 * already: the holder adopts it if it still is, else mounts. */
		ret = 1;
	} else if (mo.foreground) {
		ret = hold(&c, &mo, mountpoint, argc, argv);
	} else {
		ret = hold_detached(&c, &mo, mountpoint, argc, argv);
	}
out:
	cli_close(&c);
	return ret;
}
