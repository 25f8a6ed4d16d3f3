/*
 * Denials answered late. Rules this file keeps:
 *  - the first PENALTY_FREE denials of a uid in each second are answered at
 *    once: a user who mistypes or retries a few times sees no difference;
 *  - after those, each denial is answered PENALTY_DELAY_MS later by the
 *    penalty thread, so a flooding thread gets at most 1000 / DELAY
 *    answers a second, and no worker thread of the daemon waits for it;
 *  - the answer is always the denial itself, never a different error; a
 *    full queue, or no thread, answers at once;
 *  - at stop every waiting request is answered.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "penalty.h"
#include "thread.h"

#define PENALTY_FREE 16
#define PENALTY_DELAY_MS 20
#define PENALTY_QUEUE 4096
#define UID_SLOTS 64
#define SECOND_NS 1000000000LL

struct late {
	fuse_req_t req;
	int err;
	int64_t due_ns;
};

struct uid_count {
	uid_t uid;
	int64_t since_ns;	/* the second being counted */
	unsigned n;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool running, stop;
	struct late queue[PENALTY_QUEUE];
	unsigned head, n;
	struct uid_count uids[UID_SLOTS];
} pt = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * SECOND_NS + ts.tv_nsec;
}

/* Counts a denial of uid (lock held): true if it is beyond the free ones. */
static bool over_limit(uid_t uid, int64_t now)
{
	struct uid_count *c = &pt.uids[uid % UID_SLOTS];

	if (c->uid != uid || now - c->since_ns >= SECOND_NS) {
		c->uid = uid;
		c->since_ns = now;
		c->n = 0;
	}
	return ++c->n > PENALTY_FREE;
}

void penalty_reply(fuse_req_t req, uid_t uid, int err)
{
	int64_t now = mono_ns();
	bool later;

	pthread_mutex_lock(&pt.lock);
	later = pt.running && !pt.stop && pt.n < PENALTY_QUEUE && over_limit(uid, now);
	if (later) {
		pt.queue[(pt.head + pt.n) % PENALTY_QUEUE] = (struct late){
			.req = req, .err = err, .due_ns = now + PENALTY_DELAY_MS * 1000000LL };
		if (pt.n++ == 0)
			pthread_cond_signal(&pt.cond);
	}
	pthread_mutex_unlock(&pt.lock);
	if (!later)
		fuse_reply_err(req, err);
}

/* Waits (lock held) until the oldest request is due, or stop. */
static void wait_due(void)
{
	struct timespec ts;
	int64_t due = pt.queue[pt.head].due_ns;

	ts.tv_sec = (time_t)(due / SECOND_NS);
	ts.tv_nsec = (long)(due % SECOND_NS);
	pthread_cond_timedwait(&pt.cond, &pt.lock, &ts);
}

static void *penalty_thread(void *arg)
{
	struct late l;

	(void)arg;
	pthread_mutex_lock(&pt.lock);
	for (;;) {
		while (!pt.n && !pt.stop)
			pthread_cond_wait(&pt.cond, &pt.lock);
		if (!pt.n)
			break;
		if (!pt.stop && mono_ns() < pt.queue[pt.head].due_ns) {
			wait_due();
			continue;
		}
		l = pt.queue[pt.head];
		pt.head = (pt.head + 1) % PENALTY_QUEUE;
		pt.n--;
		pthread_mutex_unlock(&pt.lock);
		fuse_reply_err(l.req, l.err);
		pthread_mutex_lock(&pt.lock);
	}
	pthread_mutex_unlock(&pt.lock);
	return NULL;
}

int penalty_start(void)
{
	pthread_condattr_t attr;
	int r;

	/* Due times are monotonic: so are the waits. */
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_destroy(&pt.cond);
	pthread_cond_init(&pt.cond, &attr);
	pthread_condattr_destroy(&attr);
	pt.stop = false;
	r = thread_start(&pt.thread, "vaultfs-penalty", penalty_thread, NULL);
	pthread_mutex_lock(&pt.lock);
	pt.running = r == 0;
	pthread_mutex_unlock(&pt.lock);
	return r;
}

void penalty_stop(void)
{
	pthread_mutex_lock(&pt.lock);
	if (!pt.running) {
		pthread_mutex_unlock(&pt.lock);
		return;
	}
	pt.stop = true;
	pthread_cond_signal(&pt.cond);
	pthread_mutex_unlock(&pt.lock);
	pthread_join(pt.thread, NULL);
	pthread_mutex_lock(&pt.lock);
	pt.running = false;
	pthread_mutex_unlock(&pt.lock);
}
