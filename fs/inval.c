/* The notifier thread. A commit through the mount changes a file's size
 * and times after the kernel has cached them (it caches them for
 * attr_timeout); the handler queues the inode and waits until the thread
 * has told the kernel. Attribute-only invalidation (offset -1) touches no
 * page cache and takes no inode lock, so the waiting request can't block
 * it. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "log.h"
#include "inval.h"
#include "thread.h"

#define QUEUE_MAX 64

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct fuse_session *se;
	pthread_t thread;
	bool running, stop;
	fuse_ino_t queue[QUEUE_MAX];
	size_t n;
	uint64_t posted, done;
} nt = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static void *inval_thread(void *arg)
{
	fuse_ino_t batch[QUEUE_MAX];
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
			r = fuse_lowlevel_notify_inval_inode(nt.se, batch[i], -1, 0);
			if (r < 0 && r != -ENOENT)
				log_debug("inode %llu: attribute invalidation failed: %s",
					  (unsigned long long)batch[i], strerror(-r));
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

void inval_attr(fuse_ino_t ino)
{
	uint64_t mine;

	pthread_mutex_lock(&nt.lock);
	if (!nt.running || nt.stop) {
		pthread_mutex_unlock(&nt.lock);
		return;
	}
	while (nt.n == QUEUE_MAX && !nt.stop)
		pthread_cond_wait(&nt.cond, &nt.lock);
	if (!nt.stop) {
		nt.queue[nt.n++] = ino;
		mine = ++nt.posted;
		pthread_cond_broadcast(&nt.cond);
		while (nt.done < mine && !nt.stop)
			pthread_cond_wait(&nt.cond, &nt.lock);
	}
	pthread_mutex_unlock(&nt.lock);
}
