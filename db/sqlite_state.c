/*
 * Verified instance states, kept by the SQLite store's writing connection
 * (sqlite_auth.c has what a state is). Without them every write read the whole instance
 * three times: to check its state before the change, to make it afresh at
 * the commit, and again in the next open to learn the new versions; at
 * 10,000 keys a 40-byte write took 10 ms. Rules this file keeps:
 *  - a set is trusted only while its instance row's (seq, state) is byte
 *    for byte the one it records, checked inside the write transaction
 *    (or the reader's snapshot); any other writer's commit moves seq, so a
 *    set is never used for rows it did not see;
 *  - a commit's new set is the trusted one with the rows the transaction
 *    touched read again, never the table's other rows: a row put back from
 *    an older copy meanwhile still disagrees with the state, and is
 *    refused as before;
 *  - a transaction's new sets are pending until its COMMIT succeeds, and
 *    are kept as changes to the set they were made from (its new sums and
 *    the rows touched), applied to it in place then: a write costs the
 *    rows it touched, not a copy of its instance's set;
 *  - anything unexpected falls back to the full scan.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rowtag.h"
#include "sqlite_int.h"

struct state_set {
	struct state_set *next;
	int64_t inst, seq;
	unsigned char state[DB_MAC_LEN];
	struct rowtag_sums sums;	/* of the set (rowtag.h) */
	bool partial;			/* the sums alone, no ids (DB_BRIEF) */
	uint64_t cache_dirty;		/* buckets whose sums_cache row may be stale */
	size_t n, cap;
	int64_t *ids;			/* ascending */
	uint64_t *vers;
};

struct touched {
	int64_t inst, id;
	bool old_present;		/* the row before the transaction */
	uint64_t old_version;
	bool now_present;		/* and at its commit */
	uint64_t now_version;
};

/* An instance's set as a commit will leave it: the set trusted when the
 * commit was prepared (base; none: an empty one) with these changes. */
struct change {
	int64_t id;
	uint64_t version;
	bool present;
};
struct pending {
	struct pending *next;
	int64_t inst, seq;
	unsigned char state[DB_MAC_LEN];
	struct rowtag_sums sums;
	bool partial;
	bool from_empty;		/* no base: the instance is new */
	int64_t base_seq;
	unsigned char base_state[DB_MAC_LEN];
	size_t n, cap;
	struct change *ch;
};

struct sq_states {
	pthread_mutex_t lock;		/* sets: readers look them up too */
	struct state_set *sets;
	struct pending *pending;	/* made by the open transaction */
	struct touched *t;		/* rows it changed (writer only) */
	size_t nt, tcap;
	int64_t last_commit_ns;		/* of a commit that changed a set */
	bool primed;			/* every instance's set was made once */
};

static void set_free(struct state_set *s)
{
	if (!s)
		return;
	free(s->ids);
	free(s->vers);
	free(s);
}

static void pending_free(struct pending *p)
{
	struct pending *next;

	for (; p; p = next) {
		next = p->next;
		free(p->ch);
		free(p);
	}
}

static void list_free(struct state_set *s)
{
	struct state_set *next;

	for (; s; s = next) {
		next = s->next;
		set_free(s);
	}
}

struct sq_states *sq_states_new(void)
{
	struct sq_states *c = calloc(1, sizeof(*c));

	if (c)
		pthread_mutex_init(&c->lock, NULL);
	return c;
}

void sq_states_free(struct sq_states *c)
{
	if (!c)
		return;
	list_free(c->sets);
	pending_free(c->pending);
	free(c->t);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static struct state_set **slot(struct state_set **head, int64_t inst)
{
	struct state_set **pp;

	for (pp = head; *pp; pp = &(*pp)->next)
		if ((*pp)->inst == inst)
			break;
	return pp;
}

/* Index of id in s, or where it would go. */
static size_t find(const struct state_set *s, int64_t id)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->ids[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int grow(struct state_set *s)
{
	size_t cap = s->cap ? s->cap * 2 : 64;
	int64_t *ids;
	uint64_t *vers;

	if (s->n < s->cap)
		return 0;
	ids = realloc(s->ids, cap * sizeof(*ids));
	if (!ids)
		return -ENOMEM;
	s->ids = ids;
	vers = realloc(s->vers, cap * sizeof(*vers));
	if (!vers)
		return -ENOMEM;
	s->vers = vers;
	s->cap = cap;
	return 0;
}

/* Sets id's version (present) or takes id out (!present); the sums are
 * the caller's. */
static int set_apply(struct state_set *s, int64_t id, uint64_t version, bool present)
{
	size_t i = find(s, id);
	bool there = i < s->n && s->ids[i] == id;

	if (there && present) {
		s->vers[i] = version;
	} else if (there) {
		memmove(s->ids + i, s->ids + i + 1, (s->n - i - 1) * sizeof(*s->ids));
		memmove(s->vers + i, s->vers + i + 1, (s->n - i - 1) * sizeof(*s->vers));
		s->n--;
	} else if (present) {
		if (grow(s) < 0)
			return -ENOMEM;
		memmove(s->ids + i + 1, s->ids + i, (s->n - i) * sizeof(*s->ids));
		memmove(s->vers + i + 1, s->vers + i, (s->n - i) * sizeof(*s->vers));
		s->ids[i] = id;
		s->vers[i] = version;
		s->n++;
	}
	return 0;
}

/* db_state_check's callback: the rows come in id order. */
static int collect(void *ctx, int64_t id, uint64_t version)
{
	struct state_set *s = ctx;

	if (grow(s) < 0)
		return -ENOMEM;
	s->ids[s->n] = id;
	s->vers[s->n++] = version;
	return 0;
}

static struct state_set *set_copy(const struct state_set *from, int64_t inst)
{
	struct state_set *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->inst = inst;
	if (from && from->n) {
		s->cap = from->n;
		s->ids = malloc(s->cap * sizeof(*s->ids));
		s->vers = malloc(s->cap * sizeof(*s->vers));
		if (!s->ids || !s->vers) {
			set_free(s);
			return NULL;
		}
		memcpy(s->ids, from->ids, from->n * sizeof(*s->ids));
		memcpy(s->vers, from->vers, from->n * sizeof(*s->vers));
		s->n = from->n;
	}
	if (from) {
		s->sums = from->sums;
		s->partial = from->partial;
	}
	return s;
}

/* Replaces inst's trusted set with s (NULL: forgets it). Lock held. */
static void trust(struct sq_states *c, int64_t inst, struct state_set *s)
{
	struct state_set **pp = slot(&c->sets, inst), *old = *pp;

	if (old)
		*pp = old->next;
	set_free(old);
	if (s) {
		s->next = c->sets;
		c->sets = s;
	}
}

/* DB_BRIEF: the instance row's sums, if the state tags them, trusted
 * without their set (each row changed is then checked by its bucket).
 * -ENOENT: none to trust (a store that keeps no sums). */
static int partial_set(struct sq *db, int64_t inst, int64_t seq,
		       const unsigned char state[DB_MAC_LEN])
{
	struct sq_states *c = db->states;
	unsigned char tag[DB_MAC_LEN];
	struct state_set *s = set_copy(NULL, inst);
	int r;

	if (!s)
		return -ENOMEM;
	r = sq_state_sums(db, inst, &s->sums);
	if (r == 0) {
		rowtag_state_tag(db->auth, inst, seq, &s->sums, tag);
		r = rowtag_equal(tag, state, DB_MAC_LEN) ? 0 : -ENOENT;
	}
	if (r < 0) {
		set_free(s);
		return r;
	}
	s->seq = seq;
	s->partial = true;
	memcpy(s->state, state, DB_MAC_LEN);
	pthread_mutex_lock(&c->lock);
	trust(c, inst, s);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

/* Inside the write transaction, before its first change to inst: 0 if the
 * state is one this connection trusts, else the full check, whose set is
 * then trusted (or, DB_BRIEF, the tagged sums alone). */
int sq_states_verify(struct sq *db, int64_t inst)
{
	struct sq_states *c = db->states;
	unsigned char state[DB_MAC_LEN];
	struct state_set *s, *known;
	int64_t seq;
	bool hit;
	int r;

	if (!c)
		return sq_state_verify(db, inst);
	r = sq_state_row(db, inst, &seq, state);
	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	known = *slot(&c->sets, inst);
	hit = known && known->seq == seq && !memcmp(known->state, state, DB_MAC_LEN);
	pthread_mutex_unlock(&c->lock);
	if (hit)
		return 0;
	if ((db->flags & DB_BRIEF) && db->auth) {
		r = partial_set(db, inst, seq, state);
		if (r != -ENOENT)
			return r;
	}
	s = set_copy(NULL, inst);
	if (!s)
		return -ENOMEM;
	r = sq_state_check(&db->base, inst, &s->seq, collect, s);
	if (r == 0 && s->seq != seq)
		r = -EAGAIN;	/* not in one transaction: never trust it */
	if (r < 0) {
		set_free(s);
		return r == -EAGAIN ? 0 : r;
	}
	memcpy(s->state, state, DB_MAC_LEN);
	rowtag_sums_of(db->auth, s->ids, s->vers, s->n, &s->sums);
	s->cache_dirty = ~(uint64_t)0;	/* what is stored is looked at once */
	pthread_mutex_lock(&c->lock);
	trust(c, inst, s);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

/* The trusted sums of inst (partial), or NULL. */
static bool partial_sums(struct sq_states *c, int64_t inst, struct rowtag_sums *out)
{
	struct state_set *s;
	bool ok;

	pthread_mutex_lock(&c->lock);
	s = *slot(&c->sets, inst);
	ok = s && s->partial;
	if (ok)
		*out = s->sums;
	pthread_mutex_unlock(&c->lock);
	return ok;
}

static bool sum_eq(const struct rowtag_sum *a, const struct rowtag_sum *b)
{
	return a->lo == b->lo && a->hi == b->hi;
}

/* The sum of id's group (its bucket, mod 64, or its sub-bucket, mod 4096:
 * the ids equal to it modulo mod) as it was when the transaction began:
 * its rows now, with the ones the transaction changed put back as they
 * were. */
static int group_before(struct sq *db, struct sq_states *c, int64_t inst, int64_t id,
			unsigned mod, struct rowtag_sum *sum)
{
	unsigned group = (unsigned)((uint64_t)id % mod);
	uint64_t version;
	int r = mod == ROWTAG_BUCKETS ? sq_bucket_sum(db, inst, group, sum) :
					sq_sub_sum(db, inst, group, sum);

	for (size_t i = 0; r >= 0 && i < c->nt; i++) {
		const struct touched *t = &c->t[i];

		if (t->inst != inst || t->id == SQ_STATES_FRESH || (uint64_t)t->id % mod != group)
			continue;
		r = sq_secret_version(db, inst, t->id, &version);
		if (r == 1)
			rowtag_sum_put(db->auth, sum, t->id, version, true);
		if (r >= 0 && t->old_present)
			rowtag_sum_put(db->auth, sum, t->id, t->old_version, false);
	}
	return r < 0 ? r : 0;
}

/* Whether id's sub-bucket vouches for its row, by the cached sub-sums of
 * its bucket, which must add up to want (db/rowtag.h). */
static int sub_agrees(struct sq *db, struct sq_states *c, int64_t inst, int64_t id,
		      const struct rowtag_sum *want)
{
	struct rowtag_sums subs;
	struct rowtag_sum total, sum;
	int r = sq_cache_subs(db, inst, rowtag_bucket(id), &subs);

	if (r < 0)
		return r == -ENOENT ? 0 : r;
	rowtag_subs_total(&subs, &total);
	if (!sum_eq(&total, want))
		return 0;
	r = group_before(db, c, inst, id, ROWTAG_BUCKETS * ROWTAG_SUBS, &sum);
	return r < 0 ? r : sum_eq(&sum, &subs.b[rowtag_sub(id)]);
}

/* DB_BRIEF: id's row as stored now (present at version, or not) is the
 * state's if its sub-bucket (cached sub-sums) or its bucket adds up to the
 * tagged sum; then it is noted with what it was. Else the full check,
 * which reports, decides. */
static int check_bucket(struct sq *db, struct sq_states *c, int64_t inst, int64_t id,
			bool present, uint64_t version)
{
	struct rowtag_sums sums;
	struct rowtag_sum sum = { 0 };
	const struct rowtag_sum *want;
	int r;

	if (!partial_sums(c, inst, &sums))
		return sq_state_verify(db, inst);
	want = &sums.b[rowtag_bucket(id)];
	r = sub_agrees(db, c, inst, id, want);
	if (r == 0) {
		r = group_before(db, c, inst, id, ROWTAG_BUCKETS, &sum);
		r = r < 0 ? r : sum_eq(&sum, want);
	}
	if (r < 0)
		return r;
	if (!r) {
		pthread_mutex_lock(&c->lock);
		trust(c, inst, NULL);
		pthread_mutex_unlock(&c->lock);
		return sq_state_verify(db, inst);
	}
	r = sq_states_note(db, inst, id);
	if (r == 0) {
		c->t[c->nt - 1].old_present = present;
		c->t[c->nt - 1].old_version = version;
	}
	return r;
}

/* Before the transaction changes secret id of inst: its row as stored now
 * must be what the trusted set says (live at that version, or not live).
 * Else it was put back or removed behind our back: the full check, which
 * reports it, decides. */
int sq_states_check_row(struct sq *db, int64_t inst, int64_t id)
{
	struct sq_states *c = db->states;
	struct state_set *s;
	uint64_t version = 0;
	bool agree = false, partial, known;
	int r;

	if (!c)
		return 0;
	for (size_t i = 0; i < c->nt; i++)
		if (c->t[i].inst == inst && (c->t[i].id == id || c->t[i].id == SQ_STATES_FRESH))
			return 0;	/* this transaction changed it already */
	r = sq_secret_version(db, inst, id, &version);
	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	s = *slot(&c->sets, inst);
	known = s != NULL;
	partial = s && s->partial;
	if (s && !partial) {
		size_t i = find(s, id);
		bool in_set = i < s->n && s->ids[i] == id;

		agree = in_set == (r == 1) && (!in_set || s->vers[i] == version);
		if (!agree)
			trust(c, inst, NULL);	/* frees s */
	}
	pthread_mutex_unlock(&c->lock);
	if (partial)
		return check_bucket(db, c, inst, id, r == 1, version);
	return agree || !known ? 0 : sq_state_verify(db, inst);
}

int sq_states_note(struct sq *db, int64_t inst, int64_t id)
{
	struct sq_states *c = db->states;
	struct touched *t;

	if (!c)
		return 0;
	for (size_t i = 0; i < c->nt; i++)
		if (c->t[i].inst == inst && c->t[i].id == id)
			return 0;
	if (c->nt == c->tcap) {
		size_t cap = c->tcap ? c->tcap * 2 : 16;

		t = realloc(c->t, cap * sizeof(*t));
		if (!t)
			return -ENOMEM;
		c->t = t;
		c->tcap = cap;
	}
	c->t[c->nt++] = (struct touched){ .inst = inst, .id = id };
	return 0;
}

static int pending_add(struct pending *p, int64_t id, uint64_t version, bool present)
{
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 8;
		struct change *ch = realloc(p->ch, cap * sizeof(*ch));

		if (!ch)
			return -ENOMEM;
		p->ch = ch;
		p->cap = cap;
	}
	p->ch[p->n++] = (struct change){ id, version, present };
	return 0;
}

/* p's sums and changes once t's row is (version, present): known, the set
 * p is made from (lock held), says what it was, or (partial) t does. */
static int pending_put(const struct db_auth *auth, struct pending *p,
		       const struct state_set *known, const struct touched *t,
		       uint64_t version, bool present)
{
	bool there = t->old_present;
	uint64_t old = t->old_version;

	if (!p->partial) {
		size_t i = known ? find(known, t->id) : 0;

		there = known && i < known->n && known->ids[i] == t->id;
		old = there ? known->vers[i] : 0;
	}
	if (there && present && old == version)
		return 0;
	if (there)
		rowtag_sums_put(auth, &p->sums, t->id, old, true);
	if (present)
		rowtag_sums_put(auth, &p->sums, t->id, version, false);
	return p->partial ? 0 : pending_add(p, t->id, version, present);
}

/* The new set of inst: the trusted one (or none, for an instance made in
 * this transaction) with the touched rows as they are now, as changes to
 * it. NULL: make it by the full scan. */
static struct pending *next_set(struct sq *db, struct sq_states *c, int64_t inst, int *err)
{
	unsigned char state[DB_MAC_LEN];
	const struct state_set *known;
	struct pending *p;
	bool fresh = false;
	uint64_t *vers;
	int64_t seq;
	int r;

	*err = 0;
	for (size_t i = 0; i < c->nt; i++)
		fresh |= c->t[i].inst == inst && c->t[i].id == SQ_STATES_FRESH;
	r = sq_state_row(db, inst, &seq, state);
	if (r < 0)
		return NULL;
	p = calloc(1, sizeof(*p));
	vers = calloc(c->nt ? c->nt : 1, sizeof(*vers));
	if (!p || !vers) {
		free(p);
		free(vers);
		*err = -ENOMEM;
		return NULL;
	}
	p->inst = inst;
	p->seq = seq;
	/* The rows as they are now, read before the lock is taken. */
	for (size_t i = 0; r >= 0 && i < c->nt; i++) {
		if (c->t[i].inst != inst || c->t[i].id == SQ_STATES_FRESH)
			continue;
		r = sq_secret_version(db, inst, c->t[i].id, &vers[i]);
		c->t[i].now_present = r == 1;
		c->t[i].now_version = vers[i];
	}
	pthread_mutex_lock(&c->lock);
	known = *slot(&c->sets, inst);
	if (known && (known->seq != seq || memcmp(known->state, state, DB_MAC_LEN)))
		known = NULL;
	if (r < 0 || (!known && !fresh)) {
		pthread_mutex_unlock(&c->lock);
		pending_free(p);
		free(vers);
		*err = r == -ENOMEM ? r : 0;
		return NULL;
	}
	p->from_empty = !known;
	if (known) {
		p->sums = known->sums;
		p->partial = known->partial;
		p->base_seq = known->seq;
		memcpy(p->base_state, known->state, DB_MAC_LEN);
	}
	for (size_t i = 0; r >= 0 && i < c->nt; i++)
		if (c->t[i].inst == inst && c->t[i].id != SQ_STATES_FRESH)
			r = pending_put(db->auth, p, known, &c->t[i], vers[i],
					c->t[i].now_present);
	pthread_mutex_unlock(&c->lock);
	free(vers);
	if (r < 0) {
		pending_free(p);
		*err = r;
		return NULL;
	}
	return p;
}

static int cache_touched(struct sq *db, const struct sq_states *c, const struct pending *p);

/* At the outermost commit, for each instance it changed: the state of its
 * new set at seq + 1, stored in the instance row and pending. */
int sq_states_commit(struct sq *db, int64_t inst)
{
	struct sq_states *c = db->states;
	const struct db_auth *auth = db->auth;
	struct pending *p;
	int r;

	if (!c || !auth)
		return sq_state_update(db, inst, auth, true);
	p = next_set(db, c, inst, &r);
	if (!p)
		return r < 0 ? r : sq_state_update(db, inst, auth, true);
	p->seq++;
	rowtag_state_tag(auth, inst, p->seq, &p->sums, p->state);
	r = sq_state_store(db, inst, p->seq, p->state, &p->sums);
	if (r < 0) {
		pending_free(p);
		return r == -ENOENT ? 0 : r;	/* the instance went in this transaction */
	}
	/* A command has no daemon's leisure: it brings the sub-sums of the
	 * buckets it changed up to date in its own transaction. */
	if (db->flags & DB_BRIEF)
		r = cache_touched(db, c, p);
	if (r < 0) {
		pending_free(p);
		return r;
	}
	p->next = c->pending;
	c->pending = p;
	return 0;
}

/* p applied to the set it was made from, in place. Lock held. */
static void pending_apply(struct sq_states *c, struct pending *p)
{
	struct state_set **pp = slot(&c->sets, p->inst), *s = *pp;
	bool base = p->from_empty ? !s : s && s->seq == p->base_seq &&
		    !memcmp(s->state, p->base_state, DB_MAC_LEN);
	int r = 0;

	if (!base) {
		trust(c, p->inst, NULL);
		return;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return;
		s->inst = p->inst;
		s->partial = p->partial;
		trust(c, p->inst, s);
	}
	for (size_t i = 0; r == 0 && i < p->n; i++) {
		r = set_apply(s, p->ch[i].id, p->ch[i].version, p->ch[i].present);
		s->cache_dirty |= (uint64_t)1 << rowtag_bucket(p->ch[i].id);
	}
	if (r < 0) {
		trust(c, p->inst, NULL);
		return;
	}
	s->seq = p->seq;
	memcpy(s->state, p->state, DB_MAC_LEN);
	s->sums = p->sums;
}

/* After the outermost commit (committed) or rollback: pending sets become
 * trusted, or are dropped. */
void sq_states_end(struct sq *db, bool committed)
{
	struct sq_states *c = db->states;
	struct pending *p;

	if (!c)
		return;
	c->nt = 0;
	pthread_mutex_lock(&c->lock);
	if (committed && c->pending)
		c->last_commit_ns = db_now_ns();
	for (p = c->pending; p; p = p->next) {
		if (committed)
			pending_apply(c, p);
		else
			trust(c, p->inst, NULL);
	}
	pthread_mutex_unlock(&c->lock);
	pending_free(c->pending);
	c->pending = NULL;
}

/* inst's trusted (full) set if it is the state (seq, state): NULL if not.
 * Lock held. */
static const struct state_set *trusted_at(struct sq_states *c, int64_t inst, int64_t seq,
					  const unsigned char state[DB_MAC_LEN])
{
	const struct state_set *s = *slot(&c->sets, inst);

	return s && !s->partial && s->seq == seq && !memcmp(s->state, state, DB_MAC_LEN) ?
	       s : NULL;
}

/* For a reader whose snapshot shows (seq, state): fn for each (id,
 * version) of the trusted set, 0; or -ENOENT when there is none. */
int sq_states_each(struct sq *db, int64_t inst, int64_t seq,
		    const unsigned char state[DB_MAC_LEN],
		    int (*fn)(void *, int64_t id, uint64_t version), void *ctx)
{
	struct sq_states *c = db->states;
	const struct state_set *s;
	int r = -ENOENT;

	if (!c)
		return r;
	pthread_mutex_lock(&c->lock);
	s = trusted_at(c, inst, seq, state);
	if (s) {
		r = 0;
		for (size_t i = 0; r == 0 && fn && i < s->n; i++)
			r = fn(ctx, s->ids[i], s->vers[i]);
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* Whether a whole trusted set of inst is kept: without one there is no
 * state row to read for sq_states_find (a command keeps none until it
 * writes). */
bool sq_states_holds(struct sq *db, int64_t inst)
{
	struct sq_states *c = db->states;
	const struct state_set *s;
	bool held;

	if (!c)
		return false;
	pthread_mutex_lock(&c->lock);
	s = *slot(&c->sets, inst);
	held = s && !s->partial;
	pthread_mutex_unlock(&c->lock);
	return held;
}

/* For a reader whose snapshot shows (seq, state): 1 and id's version if
 * the trusted set lists id, 0 if it does not; -ENOENT when there is no
 * such set. */
int sq_states_find(struct sq *db, int64_t inst, int64_t seq,
		   const unsigned char state[DB_MAC_LEN], int64_t id, uint64_t *version)
{
	struct sq_states *c = db->states;
	const struct state_set *s;
	int r = -ENOENT;

	if (!c)
		return r;
	pthread_mutex_lock(&c->lock);
	s = trusted_at(c, inst, seq, state);
	if (s) {
		size_t i = find(s, id);

		r = i < s->n && s->ids[i] == id;
		if (r)
			*version = s->vers[i];
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* -- the sub-sums kept for cold readers (sums_cache, rowtag.h) ---------- */

/* Writes settle for this long before the cache follows them: a burst of
 * writes pays nothing, a quiet vault is up to date a moment later. */
#define CACHE_QUIET_NS 100000000

static const char sql_cache_put[] =
	"INSERT OR REPLACE INTO sums_cache (id, sums, mac) VALUES (?1, ?2, ?3)";

/* One bucket's row, unless it already holds these sub-sums. */
static int cache_store(struct sq *db, int64_t inst, unsigned bucket,
		       const struct rowtag_sums *subs)
{
	struct rowtag_sums now;
	struct db_blob enc, tag;
	unsigned char e[ROWTAG_SUMS_LEN], t[DB_MAC_LEN];
	int r = sq_cache_subs(db, inst, bucket, &now);

	if (r != -ENOENT && (r < 0 || !memcmp(&now, subs, sizeof(now))))
		return r;
	rowtag_sums_encode(subs, e);
	rowtag_subs_tag(db->auth, inst, bucket, subs, t);
	enc = (struct db_blob){ e, sizeof(e) };
	tag = (struct db_blob){ t, sizeof(t) };
	return sq_change(db, sql_cache_put, 1,
			 SQ_ARGS(SQ_I(inst * ROWTAG_BUCKETS + bucket), SQ_B(&enc), SQ_B(&tag)),
			 NULL, NULL);
}

static int row_inst(struct sq *db, sqlite3_stmt *st, void *arg)
{
	int64_t **p = arg;

	**p = sqlite3_column_int64(st, 0);
	(*p)++;
	return 0;
}

/* 1 if every bucket of inst has sub-sums whose tag holds and that add up
 * to the sums the instance row's state tags; 0 if not. */
static int cache_holds(struct sq *db, int64_t inst)
{
	unsigned char state[DB_MAC_LEN], tag[DB_MAC_LEN];
	struct rowtag_sums sums, subs;
	struct rowtag_sum total;
	int64_t seq;
	int r = sq_state_row(db, inst, &seq, state);

	if (r == 0)
		r = sq_state_sums(db, inst, &sums);
	if (r < 0)
		return r == -ENOENT ? 0 : r;
	rowtag_state_tag(db->auth, inst, seq, &sums, tag);
	if (!rowtag_equal(tag, state, DB_MAC_LEN))
		return 0;
	for (unsigned b = 0; b < ROWTAG_BUCKETS; b++) {
		r = sq_cache_subs(db, inst, b, &subs);
		if (r < 0)
			return r == -ENOENT ? 0 : r;
		rowtag_subs_total(&subs, &total);
		if (!sum_eq(&total, &sums.b[b]))
			return 0;
	}
	return 1;
}

/* Once, for a vault only read so far: every instance's set, checked, so
 * that its sub-sums can be kept (the first read would scan it anyway). */
static int prime(struct sq *db)
{
	static const char sql_count[] = "SELECT count(*) FROM instances";
	static const char sql_ids[] = "SELECT id FROM instances ORDER BY id";
	int64_t n = 0, *ids, *end;
	int r = sq_query(db, SQ_ONE, sql_count, sq_row_int, &n, SQ_NOARGS);

	if (r < 0 || n <= 0)
		return r;
	ids = calloc((size_t)n + 1, sizeof(*ids));
	if (!ids)
		return -ENOMEM;
	end = ids;
	r = sq_query(db, 0, sql_ids, row_inst, &end, SQ_NOARGS);
	/* One transaction each: writers wait for one instance's scan at most.
	 * One that fails its check is reported, and refused when read. An
	 * instance whose sub-sums all hold needs no scan. */
	for (int64_t *p = ids; r == 0 && p < end && p < ids + n; p++) {
		r = cache_holds(db, *p);
		if (r != 0) {
			r = r > 0 ? 0 : r;
			continue;
		}
		r = sq_begin(db, true);
		if (r == 0)
			r = sq_end(db, sq_states_verify(db, *p));
		if (r == -EIO)
			r = 0;
	}
	free(ids);
	return r;
}

/* The stale buckets of one instance whose set is trusted, made from that
 * set (in memory, no scan) and written in an unsynced transaction that
 * first checks the instance is still at that state. One instance a call. */
int sq_tidy_caches(struct db *h, bool idle)
{
	struct sq *db = sq_of(h);
	struct sq_states *c = db->states;
	unsigned char state[DB_MAC_LEN], now_state[DB_MAC_LEN];
	struct rowtag_sums *subs = NULL;
	struct change *pairs = NULL;
	const struct state_set *s;
	int64_t inst = 0, seq = 0, now_seq;
	uint64_t mask = 0;
	size_t npairs = 0;
	int r;

	if (!c || !db->auth || (db->flags & DB_READONLY))
		return 0;
	pthread_mutex_lock(&c->lock);
	if (db_now_ns() - c->last_commit_ns < CACHE_QUIET_NS) {
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	if (!c->primed && idle) {
		c->primed = true;
		pthread_mutex_unlock(&c->lock);
		return prime(db);
	}
	for (s = c->sets; s && (s->partial || !s->cache_dirty); s = s->next)
		;
	/* The dirty buckets' pairs are copied under the lock, which readers
	 * take, and summed after it. */
	if (s && (subs = calloc(ROWTAG_BUCKETS, sizeof(*subs))) &&
	    (pairs = malloc((s->n ? s->n : 1) * sizeof(*pairs)))) {
		inst = s->inst;
		seq = s->seq;
		mask = s->cache_dirty;
		memcpy(state, s->state, DB_MAC_LEN);
		for (size_t i = 0; i < s->n; i++)
			if (mask & ((uint64_t)1 << rowtag_bucket(s->ids[i])))
				pairs[npairs++] = (struct change){ s->ids[i], s->vers[i], true };
	}
	pthread_mutex_unlock(&c->lock);
	if (!pairs) {
		free(subs);
		return s ? -ENOMEM : 0;
	}
	for (size_t i = 0; i < npairs; i++)
		rowtag_subs_put(db->auth, &subs[rowtag_bucket(pairs[i].id)], pairs[i].id,
				pairs[i].version, false);
	free(pairs);
	r = sq_begin(db, true);
	if (r < 0) {
		free(subs);
		return r;
	}
	r = sq_state_row(db, inst, &now_seq, now_state);
	if (r == 0 && (now_seq != seq || memcmp(now_state, state, DB_MAC_LEN)))
		r = -ESTALE;	/* moved on: the set is made again, and marked */
	for (unsigned b = 0; r == 0 && b < ROWTAG_BUCKETS; b++)
		if (mask & ((uint64_t)1 << b))
			r = cache_store(db, inst, b, &subs[b]);
	r = sq_end(db, r);
	free(subs);
	pthread_mutex_lock(&c->lock);
	s = *slot(&c->sets, inst);
	if (s && s->seq == seq && (r == 0 || r == -ESTALE || r == -ENOENT))
		((struct state_set *)s)->cache_dirty &= r == 0 ? ~mask : 0;
	pthread_mutex_unlock(&c->lock);
	return r == -ESTALE || r == -ENOENT ? 0 : r;
}

/* The buckets of p's instance that this transaction changed, made from
 * their rows as they now stand, if they add up to the new state's sums
 * (else the check that comes next, in a reader, decides). */
static int cache_touched(struct sq *db, const struct sq_states *c, const struct pending *p)
{
	struct rowtag_sums subs;
	struct rowtag_sum total;
	uint64_t done = 0, bit;
	unsigned b;
	int r = 0;

	for (size_t i = 0; r == 0 && i < c->nt; i++) {
		if (c->t[i].inst != p->inst || c->t[i].id == SQ_STATES_FRESH)
			continue;
		b = rowtag_bucket(c->t[i].id);
		bit = (uint64_t)1 << b;
		if (done & bit)
			continue;
		done |= bit;
		/* From the cached sub-sums and the rows changed, where those hold;
		 * else from the bucket's rows. */
		r = p->partial ? sq_cache_subs(db, p->inst, b, &subs) : -ENOENT;
		for (size_t j = 0; r == 0 && j < c->nt; j++) {
			const struct touched *t = &c->t[j];

			if (t->inst != p->inst || t->id == SQ_STATES_FRESH ||
			    rowtag_bucket(t->id) != b)
				continue;
			if (t->old_present)
				rowtag_subs_put(db->auth, &subs, t->id, t->old_version, true);
			if (t->now_present)
				rowtag_subs_put(db->auth, &subs, t->id, t->now_version, false);
		}
		rowtag_subs_total(&subs, &total);
		if (r == -ENOENT || (r == 0 && !sum_eq(&total, &p->sums.b[b])))
			r = sq_bucket_subs(db, p->inst, b, &subs);
		if (r < 0)
			break;
		rowtag_subs_total(&subs, &total);
		if (total.lo == p->sums.b[b].lo && total.hi == p->sums.b[b].hi)
			r = cache_store(db, p->inst, b, &subs);
	}
	return r;
}
