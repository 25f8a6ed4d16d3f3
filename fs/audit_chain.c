/*
 * The audit log's MAC chain: the chain key, each entry's MAC, the head and
 * anchor marks, appending, pruning and verification. The rules are listed
 * at the top of audit.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../crypto/mac.h"
#include "../crypto/seal.h"
#include "../db/db_audit.h"
#include "audit_int.h"
#include "log.h"

#define META_HEAD "audit_head"
#define META_ANCHOR "audit_anchor"
#define MARK_LEN (8 + DB_AUDIT_MAC_LEN + DB_AUDIT_MAC_LEN)	/* seq, mac, tag */
#define AUDIT_KEY_BLOB_LEN (SEAL_KEY_LEN + SEAL_OVERHEAD)

/* -- the chain key ----------------------------------------------------- */

/* The chain is keyed by a random key of its own, kept in meta sealed under
 * the master key's audit subkey: rotating the master key re-seals this one
 * key (audit_reseal_key), and every entry still verifies. */

static void chain_key_ad(struct seal_ad *ad)
{
	static const char domain[] = "vaultfs/audit-key/1";

	memcpy(ad->buf, domain, sizeof(domain) - 1);
	ad->len = sizeof(domain) - 1;
}

static int chain_key_open(struct audit *a, const struct secbuf *wrap)
{
	unsigned char blob[AUDIT_KEY_BLOB_LEN];
	struct seal_ad ad;
	int r;

	r = db_audit_meta_get(a->store, AUDIT_META_KEY, blob, sizeof(blob));
	if (r == -EPROTO)
		return -EKEYREJECTED;
	if (r < 0)
		return r;
	chain_key_ad(&ad);
	r = seal_open(&a->key, wrap->data, &ad, blob, sizeof(blob));
	if (r == -EBADMSG || r == -EINVAL)
		return -EKEYREJECTED;
	if (r == 0 && a->key->len != SEAL_KEY_LEN)
		r = -EKEYREJECTED;
	return r;
}

/* Seals a fresh chain key for a log that has none; of two processes doing
 * this at once, the first one stored wins and both use it. */
static int chain_key_create(struct audit *a, const struct secbuf *wrap)
{
	struct secbuf *k = NULL;
	unsigned char *blob = NULL;
	size_t len = 0;
	struct seal_ad ad;
	int r;

	r = seal_keygen(&k);
	if (r == 0) {
		chain_key_ad(&ad);
		r = seal_seal(&blob, &len, wrap->data, &ad, k->data, k->len);
	}
	if (r == 0)
		r = db_audit_meta_add(a->store, AUDIT_META_KEY, blob, len);
	free(blob);
	secbuf_free(k);
	return r == -EEXIST ? 0 : r;
}

int audit_chain_key_load(struct audit *a, const struct secbuf *wrap)
{
	int r = chain_key_open(a, wrap);

	if (r != -ENOENT)
		return r;
	r = chain_key_create(a, wrap);
	return r < 0 ? r : chain_key_open(a, wrap);
}

int audit_reseal_key(struct audit *a, const struct secbuf *new_wrap, unsigned char **blob,
		     size_t *len)
{
	struct seal_ad ad;

	chain_key_ad(&ad);
	return seal_seal(blob, len, new_wrap->data, &ad, a->key->data, a->key->len);
}

int audit_rotate_master(struct db *db, const struct secbuf *old_wrap,
			const struct secbuf *new_master)
{
	struct secbuf *k = NULL, *new_wrap = NULL;
	struct db_blob blob = { 0 };
	unsigned char *sealed = NULL;
	struct seal_ad ad;
	size_t len = 0;
	int r;

	r = db_meta_get(db, AUDIT_META_KEY, &blob);
	if (r == -ENOENT)
		return 0;	/* no log yet: its key will be made under the new one */
	if (r < 0)
		return r;
	chain_key_ad(&ad);
	r = seal_open(&k, old_wrap->data, &ad, blob.data, blob.len);
	if (r == -EBADMSG || r == -EINVAL)
		r = -EKEYREJECTED;
	if (r == 0)
		r = seal_derive(&new_wrap, new_master->data, SEAL_SUBKEY_AUDIT);
	if (r == 0)
		r = seal_seal(&sealed, &len, new_wrap->data, &ad, k->data, k->len);
	if (r == 0)
		r = db_meta_set(db, AUDIT_META_KEY, sealed, len);
	free(sealed);
	secbuf_free(new_wrap);
	secbuf_free(k);
	db_blob_free(&blob);
	return r;
}

/* -- the chain --------------------------------------------------------- */

static void hash_init(const struct audit *a, struct mac_stream *h, const char *domain)
{
	mac_stream_init(h, a->key->data, a->key->len, DB_AUDIT_MAC_LEN, domain);
}

static bool folded(const struct db_audit_row *r)
{
	return r->count != 1 || r->first_ns != r->time_ns;
}

/* A folded entry's MAC covers its count and first time too, under a
 * domain of its own; a single event's is as it always was. */
static void entry_mac(const struct audit *a, const unsigned char prev[DB_AUDIT_MAC_LEN],
		      const struct db_audit_row *r, unsigned char out[DB_AUDIT_MAC_LEN])
{
	struct mac_stream h;

	hash_init(a, &h, folded(r) ? "vaultfs/audit/entry/2" : "vaultfs/audit/entry/1");
	mac_stream_bytes(&h, prev, DB_AUDIT_MAC_LEN);
	if (folded(r)) {
		mac_stream_u64(&h, (uint64_t)r->count);
		mac_stream_u64(&h, (uint64_t)r->first_ns);
	}
	mac_stream_u64(&h, (uint64_t)r->seq);
	mac_stream_u64(&h, (uint64_t)r->time_ns);
	mac_stream_u64(&h, r->uid);
	mac_stream_u64(&h, r->gid);
	mac_stream_u64(&h, (uint64_t)(int64_t)r->pid);
	mac_stream_u64(&h, (uint64_t)(int64_t)r->result);
	mac_stream_str(&h, r->comm);
	mac_stream_str(&h, r->instance);
	mac_stream_str(&h, r->key);
	mac_stream_str(&h, r->op);
	mac_stream_str(&h, r->detail);
	mac_stream_final(&h, out, DB_AUDIT_MAC_LEN);
}

/* A mark (the head or the anchor): seq and mac, tagged with the key. */
struct mark {
	int64_t seq;
	unsigned char mac[DB_AUDIT_MAC_LEN];
};

static void mark_tag(const struct audit *a, const char *which, const struct mark *m,
		     unsigned char out[DB_AUDIT_MAC_LEN])
{
	struct mac_stream h;

	hash_init(a, &h, which);
	mac_stream_u64(&h, (uint64_t)m->seq);
	mac_stream_bytes(&h, m->mac, DB_AUDIT_MAC_LEN);
	mac_stream_final(&h, out, DB_AUDIT_MAC_LEN);
}

static int mark_store_in(struct audit *a, struct db_audit *store, const char *which,
			 const struct mark *m)
{
	unsigned char b[MARK_LEN];

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)m->seq >> (56 - 8 * i));
	memcpy(b + 8, m->mac, DB_AUDIT_MAC_LEN);
	mark_tag(a, which, m, b + 8 + DB_AUDIT_MAC_LEN);
	return db_audit_meta_set(store, which, b, sizeof(b));
}

static int mark_store(struct audit *a, const char *which, const struct mark *m)
{
	return mark_store_in(a, a->store, which, m);
}

/* 0, -ENOENT if absent, -EBADMSG if its tag does not verify. */
static int mark_load_in(struct audit *a, struct db_audit *store, const char *which,
			struct mark *m)
{
	unsigned char b[MARK_LEN], tag[DB_AUDIT_MAC_LEN];
	uint64_t seq = 0;
	int r;

	r = db_audit_meta_get(store, which, b, sizeof(b));
	if (r == -EPROTO)
		return -EBADMSG;
	if (r < 0)
		return r;
	for (int i = 0; i < 8; i++)
		seq = seq << 8 | b[i];
	m->seq = (int64_t)seq;
	memcpy(m->mac, b + 8, DB_AUDIT_MAC_LEN);
	mark_tag(a, which, m, tag);
	return mac_equal(tag, b + 8 + DB_AUDIT_MAC_LEN, sizeof(tag)) ? 0 : -EBADMSG;
}

static int mark_load(struct audit *a, const char *which, struct mark *m)
{
	return mark_load_in(a, a->store, which, m);
}

/* Where the next entry goes: after the head, else after the last row, else
 * after the anchor, else at 1. A damaged head still gives its position:
 * verification reports it. */
static int chain_tip(struct audit *a, struct db_audit *store, struct mark *tip,
		     struct db_audit_row *tmp)
{
	int r = mark_load_in(a, store, META_HEAD, tip);

	if (r == 0 || r == -EBADMSG)
		return 0;
	if (r != -ENOENT)
		return r;
	r = db_audit_last(store, tmp);
	if (r == 0) {
		tip->seq = tmp->seq;
		memcpy(tip->mac, tmp->mac, DB_AUDIT_MAC_LEN);
		return 0;
	}
	if (r != -ENOENT)
		return r;
	r = mark_load_in(a, store, META_ANCHOR, tip);
	if (r == -ENOENT) {
		memset(tip, 0, sizeof(*tip));
		r = 0;
	}
	return r == -EBADMSG ? 0 : r;
}

int audit_chain_append(struct audit *a, struct db_audit *store,
		       struct db_audit_row *const *rows, size_t n, bool lazy)
{
	struct db_audit_row tmp;
	struct mark tip;
	int r;

	r = lazy ? db_audit_begin_lazy(store) : db_audit_begin(store);
	if (r < 0)
		return r;
	r = chain_tip(a, store, &tip, &tmp);
	for (size_t i = 0; r == 0 && i < n; i++) {
		rows[i]->seq = ++tip.seq;
		entry_mac(a, tip.mac, rows[i], rows[i]->mac);
		memcpy(tip.mac, rows[i]->mac, DB_AUDIT_MAC_LEN);
		r = db_audit_insert(store, rows[i]);
	}
	if (r == 0)
		r = mark_store_in(a, store, META_HEAD, &tip);
	if (r == 0)
		return db_audit_commit(store);
	db_audit_rollback(store);
	return r;
}


/* -- pruning and verification ------------------------------------------ */

int audit_prune(struct audit *a, int64_t now_ns, int64_t *pruned)
{
	struct db_audit_row last;
	struct mark anchor;
	int r;

	*pruned = 0;
	if (!a->retention_ns)
		return 0;
	r = db_audit_begin(a->store);
	if (r < 0)
		return r;
	r = db_audit_last_before(a->store, now_ns - a->retention_ns, &last);
	if (r == -ENOENT) {
		db_audit_rollback(a->store);
		return 0;
	}
	if (r == 0)
		r = db_audit_delete_upto(a->store, last.seq);
	if (r == 0) {
		anchor.seq = last.seq;
		memcpy(anchor.mac, last.mac, DB_AUDIT_MAC_LEN);
		r = mark_store(a, META_ANCHOR, &anchor);
	}
	if (r < 0) {
		db_audit_rollback(a->store);
		return r;
	}
	r = db_audit_commit(a->store);
	if (r == 0) {
		*pruned = last.seq;
		log_info("audit: entries up to %lld are past the retention and were removed",
			 (long long)last.seq);
	}
	return r;
}

struct walk {
	struct audit *a;
	struct audit_verdict *v;
	struct mark prev;
};

static void verdict_bad(struct audit_verdict *v, int64_t seq, const struct db_audit_row *row,
			const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void verdict_bad(struct audit_verdict *v, int64_t seq, const struct db_audit_row *row,
			const char *fmt, ...)
{
	va_list ap;

	v->ok = false;
	v->bad_seq = seq;
	va_start(ap, fmt);
	vsnprintf(v->reason, sizeof(v->reason), fmt, ap);
	va_end(ap);
	if (row && v->bad_row) {
		*v->bad_row = *row;
		v->has_row = true;
	}
}

static int walk_row(void *ctx, const struct db_audit_row *row)
{
	struct walk *w = ctx;
	unsigned char mac[DB_AUDIT_MAC_LEN];
	int64_t want = w->prev.seq + 1;

	if (row->seq != want) {
		verdict_bad(w->v, want, NULL, "entry %lld is missing (the log goes from "
			    "entry %lld to entry %lld)", (long long)want,
			    (long long)w->prev.seq, (long long)row->seq);
		return 1;
	}
	entry_mac(w->a, w->prev.mac, row, mac);
	if (!mac_equal(mac, row->mac, sizeof(mac))) {
		verdict_bad(w->v, row->seq, row, "entry %lld was altered, replaced or moved "
			    "(its MAC does not match)", (long long)row->seq);
		return 1;
	}
	if (!w->v->entries)
		w->v->first_seq = row->seq;
	w->v->entries++;
	w->v->events += row->count;
	w->v->last_seq = row->seq;
	w->prev.seq = row->seq;
	memcpy(w->prev.mac, row->mac, DB_AUDIT_MAC_LEN);
	return 0;
}

static void check_head(struct walk *w)
{
	struct mark head;
	int r = mark_load(w->a, META_HEAD, &head);

	if (r == -ENOENT && w->prev.seq == 0)
		return;		/* nothing was ever logged */
	if (r == -ENOENT)
		verdict_bad(w->v, w->prev.seq, NULL, "the head record (last entry and its MAC) "
			    "is missing");
	else if (r < 0)
		verdict_bad(w->v, w->prev.seq, NULL, "the head record was altered");
	else if (head.seq > w->prev.seq)
		verdict_bad(w->v, w->prev.seq + 1, NULL, "entry %lld is missing (entries %lld "
			    "to %lld were cut off the end)", (long long)w->prev.seq + 1,
			    (long long)w->prev.seq + 1, (long long)head.seq);
	else if (head.seq < w->prev.seq ||
		 !mac_equal(head.mac, w->prev.mac, DB_AUDIT_MAC_LEN))
		verdict_bad(w->v, head.seq, NULL, "the head record does not match entry %lld",
			    (long long)w->prev.seq);
}

/* Anchor, entries and head come from one read snapshot: entries committed
 * while the walk runs are neither half seen nor taken for a cut tail. */
static int verify_snapshot(struct walk *w)
{
	int r = mark_load(w->a, META_ANCHOR, &w->prev);

	if (r == -ENOENT) {
		memset(&w->prev, 0, sizeof(w->prev));
	} else if (r == -EBADMSG) {
		verdict_bad(w->v, 1, NULL, "the anchor (the last pruned entry's MAC) was altered");
		return 0;
	} else if (r < 0) {
		return r;
	}
	r = db_audit_each(w->a->store, NULL, walk_row, w);
	if (r < 0)
		return r;
	if (w->v->ok)
		check_head(w);
	return 0;
}

int audit_verify(struct audit *a, struct audit_verdict *v)
{
	struct walk w = { .a = a, .v = v };
	int r;

	memset(v, 0, sizeof(*v));
	v->ok = true;
	v->bad_row = calloc(1, sizeof(*v->bad_row));
	if (!v->bad_row)
		return -ENOMEM;
	r = db_audit_read_begin(a->store);
	if (r < 0)
		return r;
	r = verify_snapshot(&w);
	db_audit_read_end(a->store);
	return r;
}

void audit_verdict_free(struct audit_verdict *v)
{
	free(v->bad_row);
	v->bad_row = NULL;
}

int audit_each(struct audit *a, const struct db_audit_filter *f,
	       int (*fn)(void *, const struct db_audit_row *), void *ctx)
{
	return db_audit_each(a->store, f, fn, ctx);
}
