/* The vault's read path: a value opened with its instance's data key,
 * and only if it is the version the instance's tagged state says is
 * current. The rules of vault.c hold here: a blob that fails to
 * authenticate is logged by name and yields -EIO, never bytes. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../crypto/mac.h"
#include "../crypto/seal.h"
#include "../db/db_versions.h"
#include "array.h"
#include "audit.h"
#include "log.h"
#include "name.h"
#include "vault_int.h"

struct inst_state {
	int64_t id, seq;		/* the set below is seq's; -1: none */
	int64_t seen;			/* the highest seq seen (>= seq) */
	bool partial;			/* only pairs the store's trusted set vouched
					 * for at seq: one not listed is asked for */
	size_t n, cap;
	int64_t *ids;
	uint64_t *vers;
	struct inst_state *next;
};

static void state_free(struct inst_state *st)
{
	if (!st)
		return;
	free(st->ids);
	free(st->vers);
	free(st);
}


/* Which version of each live secret an instance's tagged state says is
 * current, checked once per seq; each read then compares its row's
 * version, so a row put back from an older copy, from versions or from
 * another secret is refused. seq never goes down. */
static int state_add(void *ctx, int64_t id, uint64_t version)
{
	struct inst_state *st = ctx;

	size_t cap = st->cap;
	int64_t *ids = array_room(st->ids, st->n, &cap, sizeof(*ids));
	uint64_t *vers;

	if (!ids)
		return -ENOMEM;
	st->ids = ids;
	vers = array_room(st->vers, st->n, &st->cap, sizeof(*vers));
	if (!vers)
		return -ENOMEM;
	st->vers = vers;
	st->ids[st->n] = id;
	st->vers[st->n++] = version;
	return 0;
}

/* Under states_lock: true if the state lists (id, version). */
static bool state_has(const struct inst_state *st, int64_t id, uint64_t version)
{
	size_t lo = 0, hi = st->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (st->ids[mid] == id)
			return st->vers[mid] == version;
		if (st->ids[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

static struct inst_state **state_slot(struct vault *v, int64_t id)
{
	struct inst_state **pp;

	for (pp = &v->states; *pp; pp = &(*pp)->next)
		if ((*pp)->id == id)
			break;
	return pp;
}

/* The state in this snapshot (not cached: an older one than the cache). */
static int version_in_snapshot(struct vault *v, const struct db_secret *m)
{
	struct inst_state tmp = { .id = m->instance_id };
	int r = db_state_check(v->db, m->instance_id, &tmp.seq, state_add, &tmp);

	if (r == 0)
		r = state_has(&tmp, m->id, m->version) ? 0 : -ESTALE;
	free(tmp.ids);
	free(tmp.vers);
	return r;
}

/* This snapshot is older than the cache's, or the state went back, which
 * the last commit shows (reported: -EIO). */
static int version_in_older_snapshot(struct vault *v, const struct db_secret *m,
				     int64_t cached)
{
	int64_t latest;
	char what[96];
	int r = db_instance_seq_latest(v->db, m->instance_id, &latest);

	if (r == 0 && latest < cached) {
		snprintf(what, sizeof(what), "instances row %lld state went back from seq %lld "
			 "to %lld", (long long)m->instance_id, (long long)cached,
			 (long long)latest);
		log_err("%s: %s (rows put back from an older copy?)", db_path(v->db), what);
		audit_authfail_row(v->audit, what);
		return -EIO;
	}
	return r < 0 ? r : version_in_snapshot(v, m);
}

/* Pairs a partial state keeps; past them, the whole set is copied once
 * (from the store's trusted set: no scan), so that a partial state stays
 * small and an instance read widely at one seq asks the store once. */
#define VOUCHED_MAX 256

/* Keeps (id, version), vouched for at seq, in st (a partial set of seq,
 * made afresh when seq is newer than what st holds). Under states_lock. */
static void state_vouched(struct inst_state *st, int64_t seq, int64_t id, uint64_t version)
{
	size_t cap, i;
	int64_t *ids;
	uint64_t *vers;

	if (seq > st->seq) {
		st->seq = seq;
		st->n = 0;
		st->partial = true;
	}
	if (seq != st->seq || !st->partial || st->n >= VOUCHED_MAX ||
	    state_has(st, id, version))
		return;
	cap = st->cap;
	ids = array_room(st->ids, st->n, &cap, sizeof(*ids));
	if (!ids)
		return;
	st->ids = ids;
	vers = array_room(st->vers, st->n, &st->cap, sizeof(*vers));
	if (!vers)
		return;
	st->vers = vers;
	for (i = st->n; i > 0 && st->ids[i - 1] >= id; i--)
		if (st->ids[i - 1] == id) {	/* what the set says now */
			st->vers[i - 1] = version;
			return;
		}
	memmove(st->ids + i + 1, st->ids + i, (st->n - i) * sizeof(*st->ids));
	memmove(st->vers + i + 1, st->vers + i, (st->n - i) * sizeof(*st->vers));
	st->ids[i] = id;
	st->vers[i] = version;
	st->n++;
}

/* The store's own trusted set answers for m's snapshot (seq) without a
 * copy: 0 or -ESTALE; -ENOENT if it has none. seq is then the highest
 * seen, so that a state that goes back is still seen going back; a pair
 * it vouched for is kept, so that the next open of it at seq asks nothing. */
static int version_trusted(struct vault *v, const struct db_secret *m, int64_t seq)
{
	struct inst_state **pp;
	uint64_t version = 0;
	int64_t at = -1;
	int r = db_state_version(v->db, m->instance_id, m->id, &at, &version);

	if (r < 0 || at != seq)
		return r < 0 ? r : -ENOENT;
	r = r == 1 && version == m->version ? 0 : -ESTALE;
	pthread_mutex_lock(&v->states_lock);
	pp = state_slot(v, m->instance_id);
	if (!*pp && (*pp = calloc(1, sizeof(**pp)))) {
		(*pp)->id = m->instance_id;
		(*pp)->seq = -1;
	}
	if (*pp && (*pp)->seen < seq)
		(*pp)->seen = seq;
	if (*pp && r == 0)
		state_vouched(*pp, seq, m->id, m->version);
	pthread_mutex_unlock(&v->states_lock);
	return r;
}

/* 0: m's version is the current one; -ESTALE: it is not, as this snapshot
 * shows (read again before believing it); -EIO: the instance's state does
 * not match its rows, or went back (reported). m, the seq and the state
 * are read in the caller's snapshot (db_read_begin). */
static int version_current(struct vault *v, const struct db_secret *m)
{
	struct inst_state *fresh, **pp;
	int64_t seq, cached = -1, seen = -1;
	bool has = false, partial = false, full = false;
	int r = db_instance_seq(v->db, m->instance_id, &seq);

	if (r < 0)
		return r;
	pthread_mutex_lock(&v->states_lock);
	pp = state_slot(v, m->instance_id);
	if (*pp) {
		cached = (*pp)->seq;
		seen = (*pp)->seen;
		has = state_has(*pp, m->id, m->version);
		partial = (*pp)->partial;
		full = partial && (*pp)->n >= VOUCHED_MAX;
	}
	pthread_mutex_unlock(&v->states_lock);
	if (seq == cached && (has || !partial))
		return has ? 0 : -ESTALE;
	if (seq < seen)
		return version_in_older_snapshot(v, m, seen);
	r = seq == cached && full ? -ENOENT : version_trusted(v, m, seq);
	if (r != -ENOENT)
		return r;
	fresh = calloc(1, sizeof(*fresh));
	if (!fresh)
		return -ENOMEM;
	fresh->id = m->instance_id;
	r = db_state_check(v->db, m->instance_id, &fresh->seq, state_add, fresh);
	if (r < 0) {
		state_free(fresh);
		return r;
	}
	r = state_has(fresh, m->id, m->version) ? 0 : -ESTALE;
	fresh->seen = fresh->seq;
	pthread_mutex_lock(&v->states_lock);
	pp = state_slot(v, m->instance_id);
	if (!*pp || (*pp)->seen <= fresh->seq) {
		fresh->next = *pp ? (*pp)->next : NULL;
		state_free(*pp);
		*pp = fresh;
		fresh = NULL;
	}
	pthread_mutex_unlock(&v->states_lock);
	state_free(fresh);
	return r;
}

static void version_refused(struct vault *v, const char *inst, const struct db_secret *m)
{
	char what[2 * DB_NAME_MAX + 96];

	log_err("%s/%s: its stored row (version %llu) is not the current version the "
		"instance's state records (a row put back from an older copy?); refusing "
		"to serve it", inst, m->name, (unsigned long long)m->version);
	snprintf(what, sizeof(what), "secrets row %lld not current (version %llu)",
		 (long long)m->id, (unsigned long long)m->version);
	audit_authfail_row(v->audit, what);
}

/* Which value to open: the current one, or an old version. */
struct value_ref {
	int64_t secret_id;
	bool old;
	uint64_t version;
};

static int open_once(struct vault *v, const struct value_ref *ref, struct secbuf **out,
		     struct db_secret *m, struct db_version *ver, char inst[DB_NAME_MAX + 1],
		     bool *failed)
{
	struct db_blob blob = { 0 };
	struct inst_key *k;
	struct seal_ad ad;
	int r;

	*failed = false;
	if (ref->old) {
		r = db_secret_get(v->db, ref->secret_id, m);
		if (r == 0)
			r = db_version_get(v->db, ref->secret_id, ref->version, ver, &blob);
	} else {
		r = db_secret_blob(v->db, ref->secret_id, m, &blob);
	}
	if (r < 0)
		goto out;
	r = vault_key_get(v, m->instance_id, &k);
	if (r < 0)
		goto out;
	memcpy(inst, k->name, DB_NAME_MAX + 1);
	seal_ad_value(&ad, k->name, m->name, ref->old ? ref->version : m->version);
	r = seal_open(out, k->key->data, &ad, blob.data, blob.len);
	if (r == -EBADMSG || r == -EINVAL) {
		*failed = true;
		vault_key_stale(v, k);
	}
	vault_key_put(v, k);
out:
	db_blob_free(&blob);
	return r;
}

/* A rotation or a rename may re-seal a value between our reading it and
 * its key, and a commit may change the row between our reading it and its
 * instance's state: all is read again, a few times. */
#define OPEN_TRIES 8

static int open_value(struct vault *v, const struct value_ref *ref, struct secbuf **out,
		      struct db_secret *m, struct db_version *ver)
{
	char inst[DB_NAME_MAX + 1];
	bool failed, pinned;
	int r;

	*out = NULL;
	/* The row, the instance's seq and its state: one snapshot. */
	pinned = db_read_pinned(v->db);
	if (!pinned)
		db_read_begin(v->db);
	r = open_once(v, ref, out, m, ver, inst, &failed);
	if (r == 0 && !ref->old && (r = version_current(v, m)) == -ESTALE) {
		secbuf_free(*out);
		*out = NULL;
		failed = false;
		r = -ESTALE;
	}
	/* Each retry follows a commit that raced with our reads (a snapshot
	 * can't be held while a write transaction is open); a row that really
	 * is not current fails every time. */
	for (int tries = 0; tries < OPEN_TRIES && (failed || r == -ESTALE); tries++) {
		db_read_end(v->db);	/* the retry must see what was committed since */
		db_read_begin(v->db);
		pinned = false;
		r = open_once(v, ref, out, m, ver, inst, &failed);
		if (r == 0 && !ref->old && (r = version_current(v, m)) == -ESTALE) {
			secbuf_free(*out);
			*out = NULL;
		}
	}
	if (r == -ESTALE) {
		version_refused(v, inst, m);
		r = -EIO;
	}
	if (failed) {
		log_err("%s/%s: stored value (version %llu) fails authentication (tampered or "
			"damaged); refusing to return it", inst, m->name, (unsigned long long)
			(ref->old ? ref->version : m->version));
		audit_authfail(v->audit, inst, m->name);
		r = -EIO;
	}
	if (!pinned)
		db_read_end(v->db);
	return r;
}

int vault_read(struct vault *v, int64_t secret_id, struct secbuf **out, struct db_secret *meta)
{
	struct value_ref ref = { .secret_id = secret_id };
	struct db_secret m;
	int r = open_value(v, &ref, out, &m, NULL);

	if (r == 0 && meta)
		*meta = m;
	return r;
}

int vault_read_fetched(struct vault *v, const struct db_secret *m, const struct db_blob *blob,
		       struct secbuf **out)
{
	struct secbuf *fetched = NULL;
	struct inst_key *k;
	struct seal_ad ad;
	int r;

	*out = NULL;
	r = vault_key_get(v, m->instance_id, &k);
	if (r < 0)
		return r;
	seal_ad_value(&ad, k->name, m->name, m->version);
	r = seal_open(out, k->key->data, &ad, blob->data, blob->len);
	vault_key_put(v, k);
	if (r == 0 && (r = version_current(v, m)) == -ESTALE) {
		fetched = *out;
		*out = NULL;
		r = -EBADMSG;	/* read both again below */
	}
	if (r != -EBADMSG && r != -EINVAL)
		return r;
	/* A rotation or a rename may have re-sealed it since, or a commit
	 * changed it between our reads (which then were not one snapshot):
	 * read all again, which also reports a value that really fails. A
	 * row a commit replaced or deleted since (a rename onto it) serves
	 * the value it held, as a read that came first would have. */
	db_read_end(v->db);
	r = vault_read(v, m->id, out, NULL);
	if (r == -ENOENT && fetched) {
		*out = fetched;
		return 0;
	}
	secbuf_free(fetched);
	return r;
}

int vault_read_version(struct vault *v, int64_t secret_id, uint64_t version,
		       struct secbuf **out, struct db_version *meta)
{
	struct value_ref ref = { .secret_id = secret_id, .old = true, .version = version };
	struct db_version ver;
	struct db_secret m;
	int r;

	*out = NULL;
	r = db_secret_get(v->db, secret_id, &m);
	if (r == 0 && m.version == version) {
		ref.old = false;
		r = open_value(v, &ref, out, &m, NULL);
		ver = (struct db_version){
			.secret_id = m.id, .version = m.version, .size = m.size,
			.flags = m.flags, .mtime_ns = m.mtime_ns, .updated_by = m.updated_by,
		};
	} else if (r == 0) {
		r = open_value(v, &ref, out, &m, &ver);
	}
	if (r == 0 && meta)
		*meta = ver;
	return r;
}


void vault_states_free(struct vault *v)
{
	while (v->states) {
		struct inst_state *st = v->states;

		v->states = st->next;
		state_free(st);
	}
}
