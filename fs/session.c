/*
 * The worker's side of an adopted FUSE connection. Rules this file keeps:
 *  - the kernel sends FUSE_INIT once per connection: the first worker
 *    passes the request up to the holder as read; every later worker is fed
 *    that same request first, and libfuse's reply to it (matched by unique)
 *    never reaches the kernel, which negotiated long ago;
 *  - until that INIT is processed no other request is read, since libfuse
 *    refuses every request before INIT;
 *  - a later worker asks the kernel (FUSE_NOTIFY_RESEND, Linux 6.9) to queue
 *    again what the previous worker read and never answered; the holder
 *    starts it only once the previous one is gone, so nothing runs twice;
 *  - a request sent again keeps its unique with the kernel's resend mark;
 *    the previous worker may have carried it out before it died, so what
 *    a request changes is recorded with its unique (fs/handle.c) and the
 *    thread that read a request keeps the unique while it handles it;
 *  - retiring, the worker stops reading, lets the requests it holds finish,
 *    and exits; the next worker adopts the open handles.
 */
#define FUSE_USE_VERSION 314

#include <errno.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "fuse_lib.h"

#include "log.h"
#include "session.h"
#include "thread.h"

/* Debian 12's linux/fuse.h predates them. */
#define SESS_NOTIFY_RESEND 7
#define SESS_UNIQUE_RESEND (1ULL << 63)	/* marks a request sent again */
/* Threads that may block in read(2) of the device at once. */
#define READERS_MAX 64
/* Interrupts a read(2) of the device when retiring (no SA_RESTART). */
#define SIG_RETIRE SIGUSR1

static struct {
	int ctl;
	int dev;
	uint32_t epoch;
	bool resend;
	unsigned char *init;	/* the INIT to feed, NULL once fed or if none */
	size_t init_len;
	uint64_t init_unique;
	bool init_fed, init_done, init_sent;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_mutex_t send_lock;
	atomic_bool retiring;
	atomic_int busy;
	pthread_t reading[READERS_MAX];	/* threads inside read(2), under lock */
	bool in_read[READERS_MAX];
	int n_reading;
	void (*on_retire)(void *);
	void *retire_ctx;
	pthread_t thread;
} S = {
	.ctl = -1, .dev = -1,
	.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
	.send_lock = PTHREAD_MUTEX_INITIALIZER,
};

static __thread bool tls_busy;
/* The request this thread serves: libfuse handles a request in the thread
 * that read it, and answers it there too (vaultfs replies synchronously). */
static __thread uint64_t tls_unique;
static __thread uint32_t tls_opcode;
static unsigned test_hold_open_ms, test_hold_reply_ms;

void session_test_hold(unsigned open_ms, unsigned reply_ms)
{
	test_hold_open_ms = open_ms;
	test_hold_reply_ms = reply_ms;
}

static int send_msg(int type, const void *a, size_t alen, const void *b, size_t blen)
{
	unsigned char t = (unsigned char)type;
	struct iovec iov[3] = {
		{ &t, 1 }, { (void *)a, alen }, { (void *)b, blen },
	};
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 3 };
	ssize_t n;
	int r = 0;

	if (S.ctl < 0)
		return 0;
	pthread_mutex_lock(&S.send_lock);
	do {
		n = sendmsg(S.ctl, &mh, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		r = -errno;
	pthread_mutex_unlock(&S.send_lock);
	return r;
}

static int recv_msg(int fd, unsigned char *buf, size_t size, int *passed_fd)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct iovec iov = { buf, size };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf.b, .msg_controllen = sizeof(cbuf.b),
	};
	struct cmsghdr *c;
	ssize_t n;

	do {
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && passed_fd)
			memcpy(passed_fd, CMSG_DATA(c), sizeof(int));
	if (n == 0)
		return -ECONNRESET;
	if (mh.msg_flags & MSG_TRUNC)
		return -EMSGSIZE;
	return (int)n;
}

int session_wait_go(int ctl_fd, sess_record_fn fn, void *ctx, int *dev_fd)
{
	unsigned char *buf = malloc(SESS_MSG_MAX + 64);
	struct sess_go go;
	uint64_t fh;
	int n, fd = -1, r;

	*dev_fd = -1;
	S.ctl = ctl_fd;
	if (!buf)
		return -ENOMEM;
	r = send_msg(SESS_WAITING, NULL, 0, NULL, 0);
	while (r == 0) {
		n = recv_msg(ctl_fd, buf, SESS_MSG_MAX + 64, &fd);
		if (n < 0) {
			r = n;
		} else if (buf[0] == SESS_HANDLE && (size_t)n > 1 + sizeof(fh)) {
			memcpy(&fh, buf + 1, sizeof(fh));
			fn(ctx, fh, buf + 1 + sizeof(fh), (size_t)n - 1 - sizeof(fh));
		} else if (buf[0] == SESS_GO && (size_t)n >= 1 + sizeof(go) && fd >= 0) {
			memcpy(&go, buf + 1, sizeof(go));
			S.epoch = go.epoch;
			S.resend = go.resend;
			S.init_len = (size_t)n - 1 - sizeof(go);
			if (S.init_len) {
				S.init = malloc(S.init_len);
				if (!S.init)
					r = -ENOMEM;
				else
					memcpy(S.init, buf + 1 + sizeof(go), S.init_len);
			}
			break;
		}
	}
	free(buf);
	if (r < 0 && fd >= 0)
		close(fd);
	if (r == 0)
		*dev_fd = fd;
	return r;
}

uint64_t session_request(bool *resent)
{
	*resent = tls_unique & SESS_UNIQUE_RESEND;
	return tls_unique & ~SESS_UNIQUE_RESEND;
}

static const char *held_name(uint32_t opcode);

const char *session_request_name(void)
{
	const char *name = held_name(tls_opcode);

	return name ? name : "request";
}

uint32_t session_epoch(void)
{
	return S.epoch;
}

int session_record(uint64_t fh, const void *rec, size_t len)
{
	if (1 + sizeof(fh) + len > SESS_MSG_MAX)
		return -EMSGSIZE;
	return send_msg(SESS_HANDLE, &fh, sizeof(fh), rec, len);
}

void session_forget(uint64_t fh)
{
	(void)send_msg(SESS_DROP, &fh, sizeof(fh), NULL, 0);
}

static void request_done(void)
{
	if (!tls_busy)
		return;
	tls_busy = false;
	if (atomic_fetch_sub(&S.busy, 1) == 1 && atomic_load(&S.retiring)) {
		pthread_mutex_lock(&S.lock);
		pthread_cond_broadcast(&S.cond);
		pthread_mutex_unlock(&S.lock);
	}
}

static void request_taken(void)
{
	tls_busy = true;
	atomic_fetch_add(&S.busy, 1);
}

static void send_resend(int fd)
{
	struct fuse_out_header oh = {
		.len = sizeof(oh), .error = SESS_NOTIFY_RESEND, .unique = 0,
	};

	if (write(fd, &oh, sizeof(oh)) != (ssize_t)sizeof(oh))
		log_warn("the kernel cannot resend the requests the previous worker held "
			 "(FUSE_NOTIFY_RESEND needs Linux 6.9): %s; those requests wait "
			 "until the mount goes", strerror(errno));
	else
		log_debug("asked the kernel to resend unanswered requests");
}

/* Only the INIT fed to a later worker is held back; others wait for it. */
static ssize_t feed_init(void *buf, size_t len)
{
	struct fuse_in_header *ih = (struct fuse_in_header *)S.init;
	ssize_t n = -1;

	pthread_mutex_lock(&S.lock);
	if (S.init && !S.init_fed) {
		if (len < S.init_len) {
			errno = EINVAL;
		} else {
			memcpy(buf, S.init, S.init_len);
			S.init_unique = ih->unique;
			S.init_fed = true;
			n = (ssize_t)S.init_len;
		}
	} else {
		while (S.init && !S.init_done)
			pthread_cond_wait(&S.cond, &S.lock);
		n = 0;
	}
	pthread_mutex_unlock(&S.lock);
	return n;
}

static void park(void)
{
	for (;;)
		pause();	/* the retiring thread exits the process */
}

/* Marks this thread as inside read(2) (slot >= 0), unless retiring. */
static int reading_enter(void)
{
	int slot = -1;

	pthread_mutex_lock(&S.lock);
	if (!atomic_load(&S.retiring)) {
		for (int i = 0; i < READERS_MAX && slot < 0; i++)
			if (!S.in_read[i])
				slot = i;
		if (slot >= 0) {
			S.in_read[slot] = true;
			S.reading[slot] = pthread_self();
			S.n_reading++;
		}
	}
	pthread_mutex_unlock(&S.lock);
	return slot;
}

/* Out of read(2): a request read is counted before the retiring thread
 * can see this thread gone from the readers. */
static void reading_leave(int slot, ssize_t n)
{
	pthread_mutex_lock(&S.lock);
	if (n > 0)
		request_taken();
	S.in_read[slot] = false;
	S.n_reading--;
	pthread_cond_broadcast(&S.cond);
	pthread_mutex_unlock(&S.lock);
}

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	struct fuse_in_header *ih = buf;
	ssize_t n;
	int slot;

	(void)userdata;
	request_done();
	tls_unique = 0;
	tls_opcode = 0;
	if (atomic_load(&S.retiring))
		park();
	n = 0;
	if (S.init && !__atomic_load_n(&S.init_done, __ATOMIC_ACQUIRE))
		n = feed_init(buf, len);
	if (n != 0) {
		if (n > 0)
			request_taken();
		return n;
	}
	slot = reading_enter();
	if (slot < 0) {
		if (atomic_load(&S.retiring))
			park();
		errno = EINTR;		/* more readers than slots: libfuse asks again */
		return -1;
	}
	n = read(fd, buf, len);
	tls_unique = n >= (ssize_t)sizeof(*ih) ? ih->unique : 0;
	tls_opcode = n >= (ssize_t)sizeof(*ih) ? ih->opcode : 0;
	/* The kernel ends a connection unmounted while requests were still on
	 * their way (hundreds of RELEASEs after a mass close) with
	 * ECONNABORTED; libfuse knows only ENODEV as the end of a mount, and
	 * would log the other as a failure. */
	if (n < 0 && errno == ECONNABORTED)
		errno = ENODEV;
	reading_leave(slot, n);
	if (n < 0 && errno == EINTR && atomic_load(&S.retiring))
		park();
	if (n >= (ssize_t)sizeof(*ih) && ih->opcode == FUSE_OPEN && test_hold_open_ms) {
		log_info("test: holding an OPEN request for %u ms", test_hold_open_ms);
		usleep(test_hold_open_ms * 1000);
	}
	if (n > 0) {
		if (n >= (ssize_t)sizeof(*ih) && ih->opcode == FUSE_INIT && !S.init_sent) {
			S.init_sent = true;
			if (send_msg(SESS_INIT, buf, (size_t)n, NULL, 0) < 0)
				log_warn("cannot pass FUSE_INIT to the holder: a restarted "
					 "worker could not serve");
		}
	}
	return n;
}

/* The requests whose replies --test-hold-reply holds. */
static const char *held_name(uint32_t opcode)
{
	switch (opcode) {
	case FUSE_CREATE:
		return "CREATE";
	case FUSE_OPEN:
		return "OPEN";
	case FUSE_WRITE:
		return "WRITE";
	case FUSE_FLUSH:
		return "FLUSH";
	default:
		return NULL;
	}
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	const struct fuse_out_header *oh = iov[0].iov_base;
	ssize_t total = 0;

	(void)userdata;
	if (S.init && S.init_fed && !S.init_done && iov[0].iov_len >= sizeof(*oh) &&
	    oh->unique == S.init_unique) {
		for (int i = 0; i < count; i++)
			total += (ssize_t)iov[i].iov_len;
		if (S.resend)
			send_resend(fd);
		pthread_mutex_lock(&S.lock);
		__atomic_store_n(&S.init_done, true, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&S.cond);
		pthread_mutex_unlock(&S.lock);
		return total;
	}
	if (test_hold_reply_ms && iov[0].iov_len >= sizeof(*oh) && oh->unique == tls_unique &&
	    held_name(tls_opcode)) {
		log_info("test: holding the reply to %s for %u ms", held_name(tls_opcode),
			 test_hold_reply_ms);
		usleep(test_hold_reply_ms * 1000);
	}
	return writev(fd, iov, count);
}

int session_adopt(struct fuse_session *se, int dev_fd)
{
	static const struct fuse_custom_io io = { .read = io_read, .writev = io_writev };
	int r;

	S.dev = dev_fd;
	r = fuse_session_custom_io(se, &io, dev_fd);
	/* The first worker after a crash that took INIT with it: resend too. */
	if (r == 0 && !S.init && S.resend)
		send_resend(dev_fd);
	return r;
}

static void *retire_thread(void *arg)
{
	unsigned char buf[64];
	struct timespec ts;
	int n;

	(void)arg;
	do {
		n = recv_msg(S.ctl, buf, sizeof(buf), NULL);
	} while (n > 0 && buf[0] != SESS_RETIRE);
	if (n < 0 && n != -ECONNRESET)
		return NULL;
	/* Told to retire, or the holder is gone: stop taking requests (the
	 * threads blocked in read(2) are interrupted), let the ones in hand
	 * finish, then leave the connection to the next worker. */
	pthread_mutex_lock(&S.lock);
	atomic_store(&S.retiring, true);
	log_info("retiring: finishing the requests in hand");
	while (S.n_reading > 0 || atomic_load(&S.busy) > 0) {
		for (int i = 0; i < READERS_MAX; i++)
			if (S.in_read[i])
				pthread_kill(S.reading[i], SIG_RETIRE);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&S.cond, &S.lock, &ts);
	}
	pthread_mutex_unlock(&S.lock);
	if (S.on_retire)
		S.on_retire(S.retire_ctx);
	_exit(0);
}

static void on_retire_signal(int sig)
{
	(void)sig;
}

int session_serving(void (*on_retire)(void *), void *ctx)
{
	struct sigaction sa = { .sa_handler = on_retire_signal };
	int r;

	sigemptyset(&sa.sa_mask);
	sigaction(SIG_RETIRE, &sa, NULL);	/* no SA_RESTART: read(2) returns */

	S.on_retire = on_retire;
	S.retire_ctx = ctx;
	r = thread_start(&S.thread, "vaultfs-retire", retire_thread, NULL);
	if (r == 0)
		pthread_detach(S.thread);
	if (r == 0)
		r = send_msg(SESS_SERVING, NULL, 0, NULL, 0);
	return r;
}
