/*
 * Changes that others make to the store, told to the kernel. Rules this
 * file keeps:
 *  - one source: the store's change feed (db_change_seq), polled every
 *    WATCH_PERIOD_MS; whatever moved it (another mount, the command line,
 *    a restore, later another host) is found by comparing what the mount
 *    can see now with what it saw before, so no writer has to say what it
 *    changed;
 *  - what changed or went away loses its cached attributes, through the
 *    notifier thread (inval.h), never a name: that would wait for a
 *    directory lock that a request in flight may hold;
 *  - it only ever drops caches: access is decided at each open from the
 *    stored row (guard.c), so a late or missed notice delays what `stat`
 *    shows, never a revoke.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../db/db.h"
#include "inval.h"
#include "log.h"
#include "thread.h"
#include "watch.h"

#define WATCH_PERIOD_MS 20

/* What the kernel may have cached about an instance or a secret. */
struct item {
	bool secret;
	int64_t id;
	int64_t parent;			/* a secret's instance */
	char *name;
	uid_t uid;
	gid_t gid;
	mode_t mode;
	uint64_t version, size;
	int64_t mtime_ns, chtime_ns;
};

struct snapshot {
	struct item *v;
	size_t n, cap;
};

static struct {
	struct db *db;
	int64_t only;			/* the instance of an --instance mount, or 0 */
	pthread_t thread;
	bool running;
	_Atomic bool stop;
	uint64_t seq;
	struct snapshot seen;
} w;

static void snap_free(struct snapshot *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i].name);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

static int snap_add(struct snapshot *s, const struct item *it, const char *name)
{
	struct item *nv;

	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;

		nv = realloc(s->v, cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		s->v = nv;
		s->cap = cap;
	}
	s->v[s->n] = *it;
	s->v[s->n].name = strdup(name);
	if (!s->v[s->n].name)
		return -ENOMEM;
	s->n++;
	return 0;
}

static int add_secret(void *ctx, const struct db_secret *s)
{
	struct item it = {
		.secret = true, .id = s->id, .parent = s->instance_id, .uid = s->uid,
		.gid = s->gid, .mode = s->mode, .version = s->version, .size = s->size,
		.mtime_ns = s->mtime_ns, .chtime_ns = s->chtime_ns,
	};

	return snap_add(ctx, &it, s->name);
}

static int add_instance(void *ctx, const struct db_instance *in)
{
	struct item it = {
		.id = in->id, .uid = in->uid, .gid = in->gid, .mode = in->mode,
		.version = in->generation, .mtime_ns = in->mtime_ns,
	};

	return snap_add(ctx, &it, in->name);
}

static int cmp_item(const void *a, const void *b)
{
	const struct item *x = a, *y = b;

	if (x->secret != y->secret)
		return x->secret ? 1 : -1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* Everything the mount shows, in one read snapshot, sorted. */
static int scan(struct snapshot *s)
{
	struct db_instance in;
	size_t n_inst;
	int r;

	memset(s, 0, sizeof(*s));
	db_read_begin(w.db);
	if (w.only) {
		r = db_instance_get(w.db, w.only, &in);
		if (r == 0)
			r = add_instance(s, &in);
	} else {
		r = db_instance_each(w.db, 0, add_instance, s);
	}
	n_inst = s->n;
	for (size_t i = 0; r == 0 && i < n_inst; i++)
		r = db_secret_each(w.db, s->v[i].id, 0, add_secret, s);
	db_read_end(w.db);
	if (r == -ENOENT && w.only)
		r = 0;		/* the instance was removed: it shows nothing */
	if (r < 0)
		snap_free(s);
	else if (s->n)
		qsort(s->v, s->n, sizeof(s->v[0]), cmp_item);
	return r;
}

static fuse_ino_t item_ino(const struct item *it)
{
	fuse_ino_t ino = ((fuse_ino_t)it->id << 1) | (it->secret ? 1 : 0);

	return !it->secret && it->id == w.only ? FUSE_ROOT_ID : ino;
}

static bool same(const struct item *a, const struct item *b)
{
	return a->uid == b->uid && a->gid == b->gid && a->mode == b->mode &&
	       a->version == b->version && a->size == b->size && a->mtime_ns == b->mtime_ns &&
	       a->chtime_ns == b->chtime_ns && !strcmp(a->name, b->name);
}

/* Tells the kernel what differs between the old and the new snapshot. */
static unsigned tell(const struct snapshot *old, const struct snapshot *now)
{
	size_t i = 0, j = 0;
	unsigned told = 0;

	while ((i < old->n || j < now->n) && !w.stop) {
		const struct item *a = i < old->n ? &old->v[i] : NULL;
		const struct item *b = j < now->n ? &now->v[j] : NULL;
		int c = !a ? 1 : !b ? -1 : cmp_item(a, b);

		/* Attributes only, even for what went away or was renamed: a
		 * name's invalidation waits for its directory's lock, which a
		 * request in flight may hold until we answer it. Stale names
		 * are harmless: a removed key's getattr says ESTALE and the
		 * kernel looks the name up again, and every open is decided
		 * from the stored row. */
		if (c <= 0 && (c < 0 || !same(a, b))) {
			inval_attr_later(item_ino(a));
			told++;
		}
		i += c <= 0;
		j += c >= 0;
	}
	return told;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)ms * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void *watch_thread(void *arg)
{
	struct snapshot now, none = { 0 };
	uint64_t seq;
	bool failed = false, blind = false;
	int r;

	(void)arg;
	while (!w.stop) {
		sleep_ms(WATCH_PERIOD_MS);
		r = w.stop ? 0 : db_change_seq(w.db, &seq);
		/* No feed (a store on a server lost its change feed): nothing
		 * cached may outlive it, so the kernel asks, and is refused. */
		if (r < 0 && !blind)
			(void)tell(&w.seen, &none);
		blind = r < 0;
		if (w.stop || r < 0 || seq == w.seq || w.stop)
			continue;
		if (scan(&now) < 0) {
			if (!failed)
				log_warn("cannot read the store to follow others' changes: %s",
					 db_errmsg(w.db));
			failed = true;
			continue;
		}
		failed = false;
		w.seq = seq;
		(void)tell(&w.seen, &now);
		snap_free(&w.seen);
		w.seen = now;
	}
	return NULL;
}

int watch_start(struct db *db, int64_t only_instance)
{
	int r;

	w.db = db;
	w.only = only_instance;
	w.stop = false;
	r = db_change_seq(db, &w.seq);
	if (r == 0)
		r = scan(&w.seen);
	if (r == 0)
		r = thread_start(&w.thread, "vaultfs-watch", watch_thread, NULL);
	if (r < 0) {
		snap_free(&w.seen);
		return r;
	}
	w.running = true;
	return 0;
}

void watch_stop(void)
{
	if (!w.running)
		return;
	w.stop = true;
	pthread_join(w.thread, NULL);
	snap_free(&w.seen);
	w.running = false;
}
