/* The notifier thread. A commit through the mount changes a file's size
 * and times after the kernel has cached them (it caches them for
 * attr_timeout); the handler queues the inode and waits until the thread
 * has told the kernel. Attribute-only invalidation (offset -1) touches no
 * page cache and takes no inode lock, so the waiting request can't block
 * it. Page invalidations are queued without waiting, and only for a file
 * nobody has open (no read into its pages can be in flight); names are
 * never invalidated from here, since that takes the directory's lock,
 * which a request waiting for our answer may hold. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "log.h"
#include "inval.h"
#include "thread.h"

#define QUEUE_MAX 64

enum inval_kind { INVAL_ATTR, INVAL_DATA };

struct inval_item {
	enum inval_kind kind;
	fuse_ino_t ino;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct fuse_session *se;
	pthread_t thread;
	bool running, stop;
	struct inval_item queue[QUEUE_MAX];
	size_t n;
	uint64_t posted, done;
} nt = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static int inval_send(const struct inval_item *it)
{
	return fuse_lowlevel_notify_inval_inode(nt.se, it->ino,
						it->kind == INVAL_DATA ? 0 : -1, 0);
}

static void *inval_thread(void *arg)
{
	static struct inval_item batch[QUEUE_MAX];
	uint64_t upto;
	size_t n;
	int r;

	(void)arg;
	pthread_mutex_lock(&nt.lock);
	for (;;) {
		while (!nt.n && !nt.stop)
			pthread_cond_wait(&nt.cond, &nt.lock);
		if (nt.stop)
			break;
		n = nt.n;
		memcpy(batch, nt.queue, n * sizeof(batch[0]));
		nt.n = 0;
		upto = nt.posted;
		pthread_mutex_unlock(&nt.lock);
		for (size_t i = 0; i < n; i++) {
			r = inval_send(&batch[i]);
			if (r < 0 && r != -ENOENT)
				log_debug("inode %llu: invalidation failed: %s",
					  (unsigned long long)batch[i].ino, strerror(-r));
		}
		pthread_mutex_lock(&nt.lock);
		nt.done = upto;
		pthread_cond_broadcast(&nt.cond);
	}
	pthread_cond_broadcast(&nt.cond);
	pthread_mutex_unlock(&nt.lock);
	return NULL;
}

int inval_start(struct fuse_session *se)
{
	int r;

	nt.se = se;
	nt.stop = false;
	nt.n = 0;
	r = thread_start(&nt.thread, "vaultfs-inval", inval_thread, NULL);
	if (r)
		return r;
	nt.running = true;
	return 0;
}

void inval_stop(void)
{
	if (!nt.running)
		return;
	pthread_mutex_lock(&nt.lock);
	nt.stop = true;
	pthread_cond_broadcast(&nt.cond);
	pthread_mutex_unlock(&nt.lock);
	pthread_join(nt.thread, NULL);
	nt.running = false;
}

/* Queues it; with wait, returns once the kernel has been told. */
static void post(enum inval_kind kind, fuse_ino_t ino, bool wait)
{
	struct inval_item *it;
	uint64_t mine;

	pthread_mutex_lock(&nt.lock);
	if (!nt.running || nt.stop) {
		pthread_mutex_unlock(&nt.lock);
		return;
	}
	while (nt.n == QUEUE_MAX && !nt.stop)
		pthread_cond_wait(&nt.cond, &nt.lock);
	if (!nt.stop) {
		it = &nt.queue[nt.n++];
		it->kind = kind;
		it->ino = ino;
		mine = ++nt.posted;
		pthread_cond_broadcast(&nt.cond);
		while (wait && nt.done < mine && !nt.stop)
			pthread_cond_wait(&nt.cond, &nt.lock);
	}
	pthread_mutex_unlock(&nt.lock);
}

void inval_attr(fuse_ino_t ino)
{
	post(INVAL_ATTR, ino, true);
}

void inval_attr_later(fuse_ino_t ino)
{
	post(INVAL_ATTR, ino, false);
}

void inval_data(fuse_ino_t ino)
{
	post(INVAL_DATA, ino, false);
}
