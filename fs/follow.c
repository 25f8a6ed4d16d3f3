/* `vaultfs watch`'s loop: as fs/watch.c follows the store for the kernel,
 * this follows it for a person or a program. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../db/db_versions.h"
#include "follow.h"
#include "vault_int.h"

#define FOLLOW_PERIOD_MS 20

struct diff {
	struct vault *v;
	const struct follow_fns *f;
	void *ctx;
	const struct changes_snap *old, *now;
};

/* Who deleted it, from its trash row (none without an undelete window). */
static void deleted_by(struct vault *v, const struct changes_item *it, struct change_event *e)
{
	struct db_trash t;

	if (db_trash_find(v->db, it->parent, it->name, 0, &t) == 0 && t.secret_id == it->id) {
		e->has_by = true;
		e->by = t.deleted_by;
	}
}

static void on_diff(void *ctx, const struct changes_item *before, const struct changes_item *after)
{
	struct diff *d = ctx;
	struct change_event e;

	if (!changes_event(d->old, d->now, before, after, &e))
		return;
	if (before && !after && before->secret)
		deleted_by(d->v, before, &e);
	d->f->tell(d->ctx, &e);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)ms * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int follow_vault(struct vault *v, const struct follow_fns *f, void *ctx, char *err,
		 size_t errlen)
{
	struct diff d = { .v = v, .f = f, .ctx = ctx };
	struct changes_snap seen, now;
	uint64_t seq, last;
	int r = db_change_seq(v->db, &last);

	if (r == 0)
		r = changes_scan(v->db, 0, f->want, ctx, &seen);
	if (r < 0) {
		snprintf(err, errlen, "%s", db_errmsg(v->db));
		return r;
	}
	f->ready(ctx);
	while (f->go_on(ctx)) {
		sleep_ms(FOLLOW_PERIOD_MS);
		if (db_change_seq(v->db, &seq) < 0 || seq == last)
			continue;
		if (changes_scan(v->db, 0, f->want, ctx, &now) < 0)
			continue;	/* tried again at the next poll */
		last = seq;
		d.old = &seen;
		d.now = &now;
		(void)changes_diff(&seen, &now, on_diff, &d, NULL);
		changes_free(&seen);
		seen = now;
	}
	changes_free(&seen);
	return 0;
}
