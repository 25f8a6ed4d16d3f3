/*
 * The holder. Rules this file keeps:
 *  - it never loads the master key, opens the database or sees plaintext:
 *    workers do; what it keeps of open writers is sealed by them;
 *  - it mounts (so the mount records its real uid, root's when root started
 *    it, and only root can unmount it) and keeps /dev/fuse open, so requests
 *    wait in the kernel while no worker serves instead of failing;
 *  - one worker serves at a time; the next is told to go only once the
 *    previous one is gone, so no request is answered twice;
 *  - a worker that dies before it serves is started again after a growing
 *    pause; the first one's failure is the mount's failure.
 *
 * Signals: SIGTERM, SIGINT stop and unmount; SIGHUP is passed to the worker
 * (master key reload); SIGUSR2 starts the binary at the same path as a new
 * worker and retires the old one (vaultfs reload --upgrade sends it).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../fs/log.h"
#include "../fs/session.h"
#include "holder.h"
#include "notify.h"
#include "status.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

struct worker {
	pid_t pid;
	int ctl;
	bool waiting;		/* said W, not yet told to go */
	bool going;		/* told to go */
	bool serving;		/* said R */
};

struct record {
	uint64_t fh;
	size_t len;
	struct record *next;
	unsigned char data[];
};

static struct {
	const struct holder_conf *hc;
	char exe[4096];
	int cwd;
	int sfd;
	int dev;
	struct fuse_session *se;
	sigset_t old_mask;
	struct worker cur, next;
	unsigned char *init;
	size_t init_len;
	struct record *records;
	uint32_t epoch;
	unsigned restarts, fails;
	bool served, stopping, gone;
	bool adopted;		/* the connection came from the fd store */
	uint64_t mnt_dev;	/* st_dev of the mount: which connection it shows */
	int64_t spawn_at_ms;	/* > 0: start a worker then */
	bool records_came;	/* the last drain of the worker read records */
	int status;
	struct mount_status st;
} H = { .cwd = -1, .sfd = -1, .dev = -1, .cur = { .ctl = -1 }, .next = { .ctl = -1 } };

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void record_put(uint64_t fh, const unsigned char *data, size_t len)
{
	struct record **p = &H.records, *r;

	while (*p && (*p)->fh != fh)
		p = &(*p)->next;
	r = malloc(sizeof(*r) + len);
	if (!r) {
		log_err("out of memory keeping an open writer's record");
		return;
	}
	r->fh = fh;
	r->len = len;
	memcpy(r->data, data, len);
	if (*p) {
		r->next = (*p)->next;
		free(*p);
	} else {
		r->next = NULL;
	}
	*p = r;
}

static void record_drop(uint64_t fh)
{
	struct record **p = &H.records, *r;

	while (*p && (*p)->fh != fh)
		p = &(*p)->next;
	if ((r = *p)) {
		*p = r->next;
		free(r);
	}
}

static pid_t spawn(struct worker *w)
{
	char *const *src = H.hc->worker_argv;
	int sv[2], n = 0;
	char **argv;
	pid_t pid;

	while (src[n])
		n++;
	argv = calloc((size_t)n + 1, sizeof(*argv));
	if (!argv || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		free(argv);
		return -1;
	}
	for (int i = 0; i < n; i++)
		argv[i] = src[i];
	argv[0] = H.exe;
	pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		sigprocmask(SIG_SETMASK, &H.old_mask, NULL);
		if ((H.cwd >= 0 && fchdir(H.cwd) < 0) ||
		    (sv[1] == 3 ? fcntl(3, F_SETFD, 0) : dup2(sv[1], 3)) < 0)
			_exit(127);
		execv(H.exe, argv);
		_exit(127);
	}
	free(argv);
	close(sv[1]);
	if (pid < 0) {
		close(sv[0]);
		return -1;
	}
	*w = (struct worker){ .pid = pid, .ctl = sv[0] };
	log_debug("started worker %d", (int)pid);
	return pid;
}

static int send_go(struct worker *w)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct sess_go go = { .epoch = ++H.epoch, .resend = H.served || H.adopted };
	unsigned char t = SESS_GO;
	struct iovec iov[3] = { { &t, 1 }, { &go, sizeof(go) }, { H.init, H.init_len } };
	struct msghdr mh = {
		.msg_iov = iov, .msg_iovlen = 3,
		.msg_control = cbuf.b, .msg_controllen = sizeof(cbuf.b),
	};
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

	for (struct record *r = H.records; r; r = r->next) {
		unsigned char tr = SESS_HANDLE;
		struct iovec riov[3] = { { &tr, 1 }, { &r->fh, sizeof(r->fh) },
					 { r->data, r->len } };
		struct msghdr rmh = { .msg_iov = riov, .msg_iovlen = 3 };

		if (sendmsg(w->ctl, &rmh, MSG_NOSIGNAL) < 0)
			return -errno;
	}
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &H.dev, sizeof(int));
	if (sendmsg(w->ctl, &mh, MSG_NOSIGNAL) < 0)
		return -errno;
	w->waiting = false;
	w->going = true;
	return 0;
}

static void fail_first(int status)
{
	H.status = status ? status : 1;
	H.gone = true;
}

/* The device of the mount on mnt, from /proc/self/mountinfo: a stat() of
 * the mount point would be a FUSE request that nobody serves yet. 0 if it
 * is not a mount point. */
static uint64_t mount_dev(const char *mnt)
{
	char line[PATH_MAX * 2 + 256], path[PATH_MAX + 1];
	unsigned maj, min;
	uint64_t dev = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*d %*d %u:%u", &maj, &min) != 2)
			continue;
		if (status_mountinfo_point(line, path) && !strcmp(path, mnt))
			dev = makedev(maj, min);	/* the last one is on top */
	}
	if (f)
		fclose(f);
	return dev;
}

/* The first worker is ready: only now is anything mounted. */
static void mount_and_go(struct worker *w)
{
	if (H.dev < 0) {
		H.dev = fs_hold(H.hc->mount, &H.se);
		if (H.dev < 0) {
			log_err("cannot mount on %s (see the messages above)", H.hc->mount->mountpoint);
			kill(w->pid, SIGTERM);
			fail_first(1);
			return;
		}
		H.mnt_dev = mount_dev(H.hc->mount->mountpoint);
		if (H.hc->fd_store && notify_store_fd(H.dev, HOLDER_FD_NAME) < 0)
			log_warn("cannot keep the connection in the service's file "
				 "descriptor store (FileDescriptorStoreMax=?)");
	}
	if (send_go(w) < 0)
		log_warn("worker %d: cannot hand the connection over", (int)w->pid);
}

/* The INIT goes into the fd store beside the connection: the holder that
 * adopts the connection after this one died feeds it to its workers. */
static void store_init(void)
{
	int fd;

	if (!H.hc->fd_store)
		return;
	fd = memfd_create("vaultfs-init", MFD_CLOEXEC);
	if (fd < 0 || write(fd, &H.mnt_dev, sizeof(H.mnt_dev)) != (ssize_t)sizeof(H.mnt_dev) ||
	    write(fd, H.init, H.init_len) != (ssize_t)H.init_len ||
	    notify_store_fd(fd, HOLDER_FD_NAME "-init") < 0)
		log_warn("cannot keep FUSE_INIT in the file descriptor store");
	if (fd >= 0)
		close(fd);
}

static void on_message(struct worker *w, const unsigned char *m, size_t n)
{
	uint64_t fh;

	switch (m[0]) {
	case SESS_WAITING:
		w->waiting = true;
		if (w == &H.cur)
			mount_and_go(w);
		else if (H.cur.pid > 0)	/* an upgrade: retire the old one */
			(void)send(H.cur.ctl, &(char){ SESS_RETIRE }, 1, MSG_NOSIGNAL);
		break;
	case SESS_INIT:
		if (!H.init && n > 1 && (H.init = malloc(n - 1))) {
			memcpy(H.init, m + 1, n - 1);
			H.init_len = n - 1;
			store_init();
		}
		break;
	case SESS_SERVING:
		w->serving = true;
		H.fails = 0;
		H.st.worker = w->pid;
		H.st.serving_since = time(NULL);
		H.st.restarts = H.restarts;
		status_write(&H.st);
		if (!H.served) {
			H.served = true;
			if (H.hc->ready)
				H.hc->ready(H.hc->ready_ctx);
		}
		log_info("worker %d serves %s", (int)w->pid, H.hc->mount->mountpoint);
		break;
	case SESS_HANDLE:
		H.records_came = true;
		if (n > 1 + sizeof(fh)) {
			memcpy(&fh, m + 1, sizeof(fh));
			record_put(fh, m + 1 + sizeof(fh), n - 1 - sizeof(fh));
		}
		break;
	case SESS_DROP:
		H.records_came = true;
		if (n >= 1 + sizeof(fh)) {
			memcpy(&fh, m + 1, sizeof(fh));
			record_drop(fh);
		}
		break;
	}
}

/* Reads what the worker sent; all of it once it is dead. */
static void drain(struct worker *w, bool all)
{
	static unsigned char buf[SESS_MSG_MAX + 64];
	ssize_t n;

	while (w->ctl >= 0) {
		n = recv(w->ctl, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		on_message(w, buf, (size_t)n);
		if (!all)
			break;
	}
}

static void worker_gone(struct worker *w)
{
	drain(w, true);
	if (w->ctl >= 0)
		close(w->ctl);
	*w = (struct worker){ .ctl = -1 };
}

static bool connection_gone(void)
{
	struct pollfd p = { .fd = H.dev, .events = 0 };

	return H.dev >= 0 && poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP));
}

static void reaped(pid_t pid, int status)
{
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
	bool was_serving;

	if (pid == H.next.pid) {
		log_warn("the new worker %d died before it took over (status %d)", (int)pid, code);
		worker_gone(&H.next);
		return;
	}
	if (pid != H.cur.pid)
		return;
	drain(&H.cur, true);	/* its last messages, "serving" among them */
	was_serving = H.cur.serving;
	worker_gone(&H.cur);
	if (WIFSIGNALED(status))
		log_warn("worker %d was killed by signal %d", (int)pid, WTERMSIG(status));
	if (H.stopping || connection_gone()) {
		H.stopping = true;
		return;
	}
	if (!H.served) {
		fail_first(code);
		return;
	}
	H.restarts++;
	if (H.next.pid > 0) {
		H.cur = H.next;
		H.next = (struct worker){ .ctl = -1 };
		if (H.cur.waiting)
			mount_and_go(&H.cur);
		return;
	}
	if (was_serving) {
		H.spawn_at_ms = now_ms();
	} else {
		int64_t d = (int64_t)BACKOFF_MIN_MS << (H.fails < 6 ? H.fails : 6);

		H.fails++;
		H.spawn_at_ms = now_ms() + (d < BACKOFF_MAX_MS ? d : BACKOFF_MAX_MS);
		log_warn("worker %d died before serving (status %d): next try in %lld ms",
			 (int)pid, code, (long long)(H.spawn_at_ms - now_ms()));
	}
}

/* $VAULTFS_KEY went to the first worker; the holder keeps no key, so a
 * later worker needs the key file or the credential. */
static void forget_env_key(void)
{
	char *env = getenv("VAULTFS_KEY");

	if (!env)
		return;
	explicit_bzero(env, strlen(env));
	unsetenv("VAULTFS_KEY");
	log_warn("the master key came from $VAULTFS_KEY, which only the first worker "
		 "gets: a restart or an upgrade needs key_file or a systemd credential");
}

/* Started by root, the holder keeps what it needs to unmount and signal
 * a worker that runs as another user, and what its
 * workers need to read a root-only key, become the `user =` account and
 * lock memory; every other capability leaves the bounding set, for it and
 * every worker. No setuid program is needed as root: no_new_privs too. */
static void limit_privileges(void)
{
	static const int keep[] = {
		CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID, CAP_SYS_RESOURCE, CAP_IPC_LOCK,
		CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_CHOWN, CAP_KILL,
	};

	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2] = { 0 }, now[2];
	uint32_t want[2] = { 0 };

	if (geteuid() != 0 || syscall(SYS_capget, &hdr, now) < 0)
		return;
	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
		want[keep[i] / 32] |= 1U << (keep[i] % 32);
	for (int i = 0; i < 2; i++) {
		data[i].permitted = now[i].permitted & want[i];
		data[i].effective = now[i].effective & want[i];
	}
	for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++) {
		bool kept = false;

		for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
			kept |= keep[i] == cap;
		if (!kept && prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1 &&
		    prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
			log_debug("cannot drop capability %d: %s", cap, strerror(errno));
	}
	if (syscall(SYS_capset, &hdr, data) < 0)
		log_debug("cannot limit capabilities: %s", strerror(errno));
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		log_debug("cannot set no_new_privs: %s", strerror(errno));
}

static void upgrade(void)
{
	if (H.stopping || H.next.pid > 0 || H.cur.pid <= 0 || !H.cur.going) {
		log_warn("upgrade: not now (a worker is starting or the mount is stopping)");
		return;
	}
	log_info("upgrade: starting %s as the new worker", H.exe);
	if (spawn(&H.next) < 0)
		log_err("upgrade: cannot start %s: %s", H.exe, strerror(errno));
}

static void on_signal(void)
{
	struct signalfd_siginfo si;
	int status;
	pid_t pid;

	while (read(H.sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
				reaped(pid, status);
			break;
		case SIGTERM:
		case SIGINT:
			H.stopping = true;
			if (H.cur.pid > 0)
				kill(H.cur.pid, SIGTERM);
			if (H.next.pid > 0)
				kill(H.next.pid, SIGTERM);
			break;
		case SIGHUP:
			if (H.cur.pid > 0)
				kill(H.cur.pid, SIGHUP);
			break;
		case SIGUSR2:
			upgrade();
			break;
		}
	}
}

static void loop(void)
{
	while (!H.gone && !(H.stopping && H.cur.pid <= 0 && H.next.pid <= 0)) {
		struct pollfd p[4] = {
			{ .fd = H.sfd, .events = POLLIN },
			{ .fd = H.cur.ctl, .events = POLLIN },
			{ .fd = H.next.ctl, .events = POLLIN },
			/* Only while no worker runs: the device wakes its
			 * pollers at every request, which cost each read three
			 * context switches of this process; a worker's exit
			 * after an unmount is seen by reaped(). */
			{ .fd = H.stopping || H.cur.pid > 0 ? -1 : H.dev, .events = 0 },
		};
		int timeout = -1;

		if (H.spawn_at_ms > 0)
			timeout = H.spawn_at_ms > now_ms() ? (int)(H.spawn_at_ms - now_ms()) : 0;
		/* Records are read in batches: after some came, the serving
		 * worker's socket is left for a millisecond, so that its
		 * sends in between wake nobody (each wakeup cost a write
		 * about 30 us). Nothing waits for them: they are read, all
		 * of them, before a worker's death or retirement is acted
		 * on. Signals and the next worker are still heard at once. */
		if (H.records_came) {
			H.records_came = false;
			p[1].fd = -1;
			if (timeout < 0 || timeout > 1)
				timeout = 1;
		}
		if (poll(p, 4, timeout) < 0 && errno != EINTR)
			break;
		if (p[0].revents)
			on_signal();
		if (p[1].revents & POLLIN && H.cur.ctl == p[1].fd)
			drain(&H.cur, true);
		if (p[2].revents & POLLIN && H.next.ctl == p[2].fd)
			drain(&H.next, false);
		if (p[3].revents & (POLLERR | POLLHUP))
			H.stopping = true;	/* unmounted: the worker ends by itself */
		if (H.spawn_at_ms > 0 && now_ms() >= H.spawn_at_ms && !H.stopping) {
			H.spawn_at_ms = 0;
			if (spawn(&H.cur) < 0) {
				log_err("cannot start a worker: %s", strerror(errno));
				H.spawn_at_ms = now_ms() + BACKOFF_MAX_MS;
			}
		}
	}
}

/* A connection a dead holder of this service left in the fd store, still
 * alive and still the one mounted on the mount point (same device), with
 * its INIT: adopted instead of mounting again. A dead one is detached. */
static void adopt_stored(void)
{
	const char *mnt = H.hc->mount->mountpoint;
	int fd = notify_stored_fd(HOLDER_FD_NAME);
	int ifd = notify_stored_fd(HOLDER_FD_NAME "-init");
	uint64_t dev = 0;
	struct stat st;
	size_t len = 0;
	bool dead;

	if (fd < 0)
		return;
	H.dev = fd;
	dead = connection_gone();
	H.dev = -1;
	if (ifd >= 0 && fstat(ifd, &st) == 0 && st.st_size > (off_t)sizeof(dev) &&
	    pread(ifd, &dev, sizeof(dev), 0) == (ssize_t)sizeof(dev))
		len = (size_t)st.st_size - sizeof(dev);
	if (!dead && len && dev && mount_dev(mnt) == dev && (H.init = malloc(len)) &&
	    pread(ifd, H.init, len, sizeof(dev)) == (ssize_t)len) {
		H.init_len = len;
		H.dev = fd;
		H.mnt_dev = dev;
		H.adopted = true;
		log_info("adopted the connection on %s that the previous holder left", mnt);
		return;
	}
	free(H.init);
	H.init = NULL;
	log_info("the connection a previous holder left is gone or unmounted: mounting anew");
	notify_remove_fd(HOLDER_FD_NAME);
	notify_remove_fd(HOLDER_FD_NAME "-init");
	close(fd);
	if (ifd >= 0)
		close(ifd);
	/* Its mount, dead, would answer ENOTCONN under the new one. */
	if (dead && dev && mount_dev(mnt) == dev && umount2(mnt, MNT_DETACH) == 0)
		log_warn("detached the dead mount left on %s", mnt);
}

/* The holder that adopted a connection has no libfuse session to unmount
 * it with. */
static void unmount_adopted(void)
{
	const char *mnt = H.hc->mount->mountpoint;
	pid_t pid;

	if (!H.adopted || connection_gone())
		return;
	if (geteuid() == 0) {
		if (umount2(mnt, MNT_DETACH) < 0)
			log_warn("cannot unmount %s: %s", mnt, strerror(errno));
		return;
	}
	pid = fork();
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-z", "--", mnt, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

int holder_run(const struct holder_conf *hc)
{
	sigset_t set;
	ssize_t n;

	H.hc = hc;
	n = readlink("/proc/self/exe", H.exe, sizeof(H.exe) - 1);
	if (n <= 0) {
		log_err("cannot find this program's path: %s", strerror(errno));
		return 1;
	}
	H.exe[n] = '\0';
	/* Replaced by an upgrade, the old file shows as "PATH (deleted)". */
	if (n > 10 && !strcmp(H.exe + n - 10, " (deleted)"))
		H.exe[n - 10] = '\0';
	H.cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (hc->fd_store)
		adopt_stored();
	limit_privileges();
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &set, &H.old_mask);
	H.sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (H.sfd < 0 || spawn(&H.cur) < 0) {
		log_err("cannot start the serving process: %s", strerror(errno));
		return 1;
	}
	forget_env_key();
	H.st.holder = getpid();
	H.st.started = time(NULL);
	snprintf(H.st.mountpoint, sizeof(H.st.mountpoint), "%s", hc->mount->mountpoint);
	snprintf(H.st.db, sizeof(H.st.db), "%s", hc->db ? hc->db : "");
	loop();
	status_remove();
	if (H.cur.pid > 0)
		kill(H.cur.pid, SIGTERM);
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
	fs_unhold(H.se);
	unmount_adopted();
	return H.status;
}
