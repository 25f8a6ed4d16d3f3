/* The notifier threads. A commit through the mount changes a file's size
 * and times after the kernel has cached them (it caches them for
 * attr_timeout); the handler queues the inode and waits until a thread of
 * ours has told the kernel. Attribute-only invalidation (offset -1)
 * touches no page cache and takes no inode lock, so the waiting request
 * can't block it.
 *
 * Page invalidation takes page locks, which a read into the page cache in
 * flight holds until a request thread answers it: it has a thread of its
 * own, so that no request ever waits behind it. Names are never
 * invalidated: that takes the directory's lock, which a request waiting
 * for our answer may hold. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "log.h"
#include "inval.h"
#include "thread.h"

#define QUEUE_MAX 64

struct notifier {
	const char *name;
	off_t offset;			/* -1: attributes; 0: pages too */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool running, stop;
	fuse_ino_t queue[QUEUE_MAX];
	fuse_ino_t batch[QUEUE_MAX];
	size_t n;
	uint64_t posted, done;
};

static struct fuse_session *session;
static struct notifier attrs = {
	.name = "vaultfs-inval", .offset = -1,
	.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
};
static struct notifier pages = {
	.name = "vaultfs-pages", .offset = 0,
	.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
};

static void *inval_thread(void *arg)
{
	struct notifier *nt = arg;
	uint64_t upto;
	size_t n;
	int r;

	pthread_mutex_lock(&nt->lock);
	for (;;) {
		while (!nt->n && !nt->stop)
			pthread_cond_wait(&nt->cond, &nt->lock);
		if (nt->stop)
			break;
		n = nt->n;
		memcpy(nt->batch, nt->queue, n * sizeof(nt->batch[0]));
		nt->n = 0;
		upto = nt->posted;
		pthread_mutex_unlock(&nt->lock);
		for (size_t i = 0; i < n; i++) {
			r = fuse_lowlevel_notify_inval_inode(session, nt->batch[i], nt->offset, 0);
			if (r < 0 && r != -ENOENT)
				log_debug("inode %llu: invalidation failed: %s",
					  (unsigned long long)nt->batch[i], strerror(-r));
		}
		pthread_mutex_lock(&nt->lock);
		nt->done = upto;
		pthread_cond_broadcast(&nt->cond);
	}
	pthread_cond_broadcast(&nt->cond);
	pthread_mutex_unlock(&nt->lock);
	return NULL;
}

static int notifier_start(struct notifier *nt)
{
	int r;

	nt->stop = false;
	nt->n = 0;
	r = thread_start(&nt->thread, nt->name, inval_thread, nt);
	if (r == 0)
		nt->running = true;
	return r;
}

static void notifier_stop(struct notifier *nt)
{
	if (!nt->running)
		return;
	pthread_mutex_lock(&nt->lock);
	nt->stop = true;
	pthread_cond_broadcast(&nt->cond);
	pthread_mutex_unlock(&nt->lock);
	pthread_join(nt->thread, NULL);
	nt->running = false;
}

int inval_start(struct fuse_session *se)
{
	int r;

	session = se;
	r = notifier_start(&attrs);
	if (r == 0 && notifier_start(&pages) != 0)
		log_warn("cannot start the page notifier: a private mmap's pages stay cached "
			 "until the next open");
	return r;
}

void inval_stop(void)
{
	notifier_stop(&pages);
	notifier_stop(&attrs);
}

/* Queues ino; with wait, returns once the kernel has been told. The page
 * queue never makes a request wait: when it is full, that is dropped (the
 * kernel drops those pages at the next open anyway). */
static void post(struct notifier *nt, fuse_ino_t ino, bool wait)
{
	uint64_t mine;

	pthread_mutex_lock(&nt->lock);
	if (!nt->running || nt->stop || (nt == &pages && nt->n == QUEUE_MAX)) {
		pthread_mutex_unlock(&nt->lock);
		return;
	}
	while (nt->n == QUEUE_MAX && !nt->stop)
		pthread_cond_wait(&nt->cond, &nt->lock);
	if (!nt->stop) {
		nt->queue[nt->n++] = ino;
		mine = ++nt->posted;
		pthread_cond_broadcast(&nt->cond);
		while (wait && nt->done < mine && !nt->stop)
			pthread_cond_wait(&nt->cond, &nt->lock);
	}
	pthread_mutex_unlock(&nt->lock);
}

void inval_attr(fuse_ino_t ino)
{
	post(&attrs, ino, true);
}

void inval_attr_later(fuse_ino_t ino)
{
	post(&attrs, ino, false);
}

void inval_data(fuse_ino_t ino)
{
	post(&pages, ino, false);
}
