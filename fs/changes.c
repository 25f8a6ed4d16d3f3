/*
 * What changed in the store, found by comparing two looks at its metadata
 * (see changes.h). Nobody has to say what they changed, so every path that
 * commits is seen alike: the mount, the command line, import, rollback,
 * undelete, restore, rotation, another host.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../db/db.h"
#include "changes.h"

void changes_free(struct changes_snap *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i].name);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

static int snap_add(struct changes_snap *s, const struct changes_item *it, const char *name)
{
	struct changes_item *nv;

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
	struct changes_item it = {
		.secret = true, .id = s->id, .parent = s->instance_id, .uid = s->uid,
		.gid = s->gid, .mode = s->mode, .version = s->version, .size = s->size,
		.mtime_ns = s->mtime_ns, .chtime_ns = s->chtime_ns, .by = s->updated_by,
	};

	return snap_add(ctx, &it, s->name);
}

struct scan_ctx {
	struct changes_snap *s;
	changes_want_fn want;
	void *ctx;
};

static int add_instance(void *ctx, const struct db_instance *in)
{
	struct scan_ctx *sc = ctx;
	struct changes_item it = {
		.id = in->id, .uid = in->uid, .gid = in->gid, .mode = in->mode,
		.version = in->generation, .mtime_ns = in->mtime_ns,
	};

	if (sc->want && !sc->want(sc->ctx, in))
		return 0;
	return snap_add(sc->s, &it, in->name);
}

static int cmp_item(const void *a, const void *b)
{
	const struct changes_item *x = a, *y = b;

	if (x->secret != y->secret)
		return x->secret ? 1 : -1;
	return x->id < y->id ? -1 : x->id > y->id;
}

int changes_scan(struct db *db, int64_t only, changes_want_fn want, void *ctx,
		 struct changes_snap *s)
{
	struct scan_ctx sc = { .s = s, .want = want, .ctx = ctx };
	struct db_instance in;
	size_t n_inst;
	int r;

	memset(s, 0, sizeof(*s));
	db_read_begin(db);
	if (only) {
		r = db_instance_get(db, only, &in);
		if (r == 0)
			r = add_instance(&sc, &in);
	} else {
		r = db_instance_each(db, 0, add_instance, &sc);
	}
	n_inst = s->n;
	for (size_t i = 0; r == 0 && i < n_inst; i++)
		r = db_secret_each(db, s->v[i].id, 0, add_secret, s);
	db_read_end(db);
	if (r == -ENOENT && only)
		r = 0;		/* the instance was removed: it shows nothing */
	if (r < 0)
		changes_free(s);
	else if (s->n)
		qsort(s->v, s->n, sizeof(s->v[0]), cmp_item);
	return r;
}

static bool same(const struct changes_item *a, const struct changes_item *b)
{
	return a->uid == b->uid && a->gid == b->gid && a->mode == b->mode &&
	       a->version == b->version && a->size == b->size && a->mtime_ns == b->mtime_ns &&
	       a->chtime_ns == b->chtime_ns && !strcmp(a->name, b->name);
}

unsigned changes_diff(const struct changes_snap *old, const struct changes_snap *now,
		      void (*fn)(void *ctx, const struct changes_item *before,
				 const struct changes_item *after),
		      void *ctx, const _Atomic bool *stop)
{
	size_t i = 0, j = 0;
	unsigned n = 0;

	while ((i < old->n || j < now->n) && !(stop && *stop)) {
		const struct changes_item *a = i < old->n ? &old->v[i] : NULL;
		const struct changes_item *b = j < now->n ? &now->v[j] : NULL;
		int c = !a ? 1 : !b ? -1 : cmp_item(a, b);

		if (c != 0 || !same(a, b)) {
			fn(ctx, c <= 0 ? a : NULL, c >= 0 ? b : NULL);
			n++;
		}
		i += c <= 0;
		j += c >= 0;
	}
	return n;
}

/* An instance's name: instance items come first, in id order. */
static const char *instance_name(const struct changes_snap *s, int64_t id)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct changes_item *it = &s->v[mid];

		if (it->secret || it->id > id)
			hi = mid;
		else if (it->id < id)
			lo = mid + 1;
		else
			return it->name;
	}
	return NULL;
}

static const char *secret_what(const struct changes_item *a, const struct changes_item *b)
{
	if (!a)
		return "created";
	if (!b)
		return "deleted";
	if (strcmp(a->name, b->name))
		return "renamed";
	/* A read limit's count makes a version with the same value and
	 * times (fs/expiry.c). */
	if (a->version != b->version && a->mtime_ns == b->mtime_ns && a->size == b->size)
		return "counted";
	if (a->version != b->version)
		return "written";
	return "attr";
}

static const char *instance_what(const struct changes_item *a, const struct changes_item *b)
{
	if (!a)
		return "created";
	if (!b)
		return "deleted";
	if (a->version != b->version)
		return "rotated";
	return "attr";
}

bool changes_event(const struct changes_snap *old, const struct changes_snap *now,
		   const struct changes_item *before, const struct changes_item *after,
		   struct change_event *e)
{
	const struct changes_item *it = after ? after : before;

	memset(e, 0, sizeof(*e));
	if (!it->secret) {
		e->instance = it->name;
		e->what = instance_what(before, after);
		return true;
	}
	e->instance = instance_name(now, it->parent);
	if (!e->instance)
		e->instance = instance_name(old, it->parent);
	if (!e->instance)
		return false;
	e->key = it->name;
	e->what = secret_what(before, after);
	if (before && after && strcmp(before->name, after->name))
		e->old_key = before->name;
	e->version = it->version;
	if (after && (!before || before->version != after->version)) {
		e->has_by = true;
		e->by = after->by;
	}
	return true;
}
