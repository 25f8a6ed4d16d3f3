/*
 * Changes that others make to the store, told to the kernel. Rules this
 * file keeps:
 *  - one source: the store's change feed (db_change_seq), polled every
 *    WATCH_PERIOD_MS; whatever moved it (another mount, the command line,
 *    a restore, later another host) is found by comparing what the mount
 *    can see now with what it saw before (changes.c, shared with hooks and
 *    `vaultfs watch`), so no writer has to say what it changed;
 *  - what changed or went away loses its cached attributes, through the
 *    notifier thread (inval.h), never a name: that would wait for a
 *    directory lock that a request in flight may hold;
 *  - it only ever drops caches: access is decided at each open from the
 *    stored row (guard.c), so a late or missed notice delays what `stat`
 *    shows, never a revoke.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "../db/db.h"
#include "changes.h"
#include "inval.h"
#include "log.h"
#include "thread.h"
#include "watch.h"

#define WATCH_PERIOD_MS 20
/* Finding what moved reads every row (changes.c): under a steady stream of
 * writes to a big vault, every mount spent most of a core on it (10,000
 * keys: 250 us of CPU per write made elsewhere). The wait after a look is
 * stretched so that looking takes at most 1/WATCH_SHARE of this thread's
 * time, up to WATCH_MAX_MS: stat shows a change later, access is decided
 * at open anyway (see above). */
#define WATCH_SHARE 20
#define WATCH_MAX_MS 2000

static struct {
	struct db *db;
	int64_t only;			/* the instance of an --instance mount, or 0 */
	pthread_t thread;
	bool running;
	_Atomic bool stop;
	uint64_t seq;
	struct changes_snap seen;
	pthread_mutex_t lock;		/* and wake: the waits between looks */
	pthread_cond_t wake;
} w = { .lock = PTHREAD_MUTEX_INITIALIZER };

static fuse_ino_t item_ino(const struct changes_item *it)
{
	fuse_ino_t ino = ((fuse_ino_t)it->id << 1) | (it->secret ? 1 : 0);

	return !it->secret && it->id == w.only ? FUSE_ROOT_ID : ino;
}

/* Attributes only, even for what went away or was renamed: a name's
 * invalidation waits for its directory's lock, which a request in flight
 * may hold until we answer it. Stale names are harmless: a removed key's
 * getattr says ESTALE and the kernel looks the name up again, and every
 * open is decided from the stored row. What only appeared was never
 * cached. */
static void tell(void *ctx, const struct changes_item *before, const struct changes_item *after)
{
	(void)ctx;
	(void)after;
	if (before)
		inval_attr_later(item_ino(before));
}

/* Waits ms, or until watch_stop (the wait can be long). */
static void sleep_ms(unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&w.lock);
	while (!w.stop && pthread_cond_timedwait(&w.wake, &w.lock, &ts) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&w.lock);
}

/* This thread's CPU time, in ms. */
static double cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Whether the whole process used less than 1/WATCH_SHARE of a core since
 * the last call: then work that may scan an instance does not compete with
 * requests. */
static bool quiet(void)
{
	static double last_cpu, last_wall;
	struct timespec ts;
	double cpu, wall;
	bool idle;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	cpu = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	wall = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
	idle = last_wall > 0 && (cpu - last_cpu) * WATCH_SHARE < wall - last_wall;
	last_cpu = cpu;
	last_wall = wall;
	return idle;
}

static unsigned next_period(double spent_ms)
{
	double ms = spent_ms * WATCH_SHARE;

	if (ms < WATCH_PERIOD_MS)
		return WATCH_PERIOD_MS;
	return ms > WATCH_MAX_MS ? WATCH_MAX_MS : (unsigned)ms;
}

/* One look at the feed; what moved loses its cached attributes. */
static void look(bool *failed, bool *blind)
{
	struct changes_snap now, none = { 0 };
	uint64_t seq;
	int r = db_change_seq(w.db, &seq);

	/* No feed (a store on a server lost its change feed): nothing
	 * cached may outlive it, so the kernel asks, and is refused. */
	if (r < 0 && !*blind)
		(void)changes_diff(&w.seen, &none, tell, NULL, &w.stop);
	*blind = r < 0;
	if (w.stop || r < 0 || seq == w.seq)
		return;
	if (changes_scan(w.db, w.only, NULL, NULL, &now) < 0) {
		if (!*failed)
			log_warn("cannot read the store to follow others' changes: %s",
				 db_errmsg(w.db));
		*failed = true;
		return;
	}
	*failed = false;
	w.seq = seq;
	(void)changes_diff(&w.seen, &now, tell, NULL, &w.stop);
	changes_free(&w.seen);
	w.seen = now;
}

static void *watch_thread(void *arg)
{
	unsigned period = WATCH_PERIOD_MS;
	bool failed = false, blind = false, tidy_failed = false;
	double cpu0;

	(void)arg;
	while (!w.stop) {
		sleep_ms(period);
		if (w.stop)
			break;
		cpu0 = cpu_ms();
		look(&failed, &blind);
		period = next_period(cpu_ms() - cpu0);
		/* Not counted in the wait: the feed's pace is the looks' alone. */
		if (!w.stop && db_tidy_caches(w.db, quiet()) < 0 && !tidy_failed) {
			log_warn("cannot keep the sums cache for `vaultfs get`: %s",
				 db_errmsg(w.db));
			tidy_failed = true;
		}
	}
	return NULL;
}

int watch_start(struct db *db, int64_t only_instance)
{
	int r;

	pthread_condattr_t ca;

	w.db = db;
	w.only = only_instance;
	w.stop = false;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w.wake, &ca);
	pthread_condattr_destroy(&ca);
	r = db_change_seq(db, &w.seq);
	if (r == 0)
		r = changes_scan(db, only_instance, NULL, NULL, &w.seen);
	if (r == 0)
		r = thread_start(&w.thread, "vaultfs-watch", watch_thread, NULL);
	if (r < 0) {
		changes_free(&w.seen);
		return r;
	}
	w.running = true;
	return 0;
}

void watch_stop(void)
{
	if (!w.running)
		return;
	pthread_mutex_lock(&w.lock);
	w.stop = true;
	pthread_cond_broadcast(&w.wake);
	pthread_mutex_unlock(&w.lock);
	pthread_join(w.thread, NULL);
	changes_free(&w.seen);
	w.running = false;
}
