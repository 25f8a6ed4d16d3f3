/*
 * Row tags, for every store. Rules this file keeps:
 *  - the store never holds the key: it encodes a row's fields here and asks
 *    auth->mac for the tag;
 *  - the encoding types every field with its length and starts with the
 *    table's name, so no tag fits another table, row or field list;
 *  - tags from the store are compared in constant time;
 *  - failures are reported outside the caller's write transaction.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "rowtag.h"
#include "store.h"

#define PENDING_MAX 8

static __thread char pending[PENDING_MAX][ROWTAG_WHAT_MAX];
static __thread const struct db_auth *pending_auth;
static __thread unsigned npending;

void rowtag_bytes(struct rowtag *m, const void *p, size_t n)
{
	if (m->overflow || n > sizeof(m->buf) - m->len) {
		m->overflow = true;
		return;
	}
	if (n)
		memcpy(m->buf + m->len, p, n);
	m->len += n;
}

void rowtag_u64(struct rowtag *m, uint64_t v)
{
	unsigned char b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (56 - 8 * i));
	rowtag_bytes(m, b, sizeof(b));
}

static void put_typed(struct rowtag *m, char type, const void *p, size_t n)
{
	rowtag_bytes(m, &type, 1);
	rowtag_u64(m, n);
	rowtag_bytes(m, p, n);
}

void rowtag_int(struct rowtag *m, int64_t v)
{
	rowtag_bytes(m, "i", 1);
	rowtag_u64(m, (uint64_t)v);
}

void rowtag_text(struct rowtag *m, const void *p, size_t n)
{
	put_typed(m, 't', p, n);
}

void rowtag_blob(struct rowtag *m, const void *p, size_t n)
{
	put_typed(m, 'b', p, n);
}

void rowtag_null(struct rowtag *m)
{
	rowtag_bytes(m, "n", 1);
}

void rowtag_init(struct rowtag *m, const char *table)
{
	m->len = 0;
	m->overflow = false;
	put_typed(m, 's', "vaultfs/row/1", 13);
	put_typed(m, 's', table, strlen(table));
}

bool rowtag_equal(const unsigned char *a, const void *b, size_t blen)
{
	const unsigned char *p = b;
	unsigned char d = 0;

	if (!p || blen != DB_MAC_LEN)
		return false;
	for (size_t i = 0; i < DB_MAC_LEN; i++)
		d |= a[i] ^ p[i];
	return d == 0;
}

int rowtag_make(const struct db_auth *auth, const struct rowtag *m,
		unsigned char out[static DB_MAC_LEN])
{
	if (m->overflow)
		return -EMSGSIZE;
	auth->mac(auth->ctx, m->buf, m->len, out);
	return 0;
}

bool rowtag_ok(const struct db_auth *auth, const struct rowtag *m, const void *tag,
	       size_t taglen)
{
	unsigned char want[DB_MAC_LEN];

	return rowtag_make(auth, m, want) == 0 && rowtag_equal(want, tag, taglen);
}

void rowtag_sum_put(const struct db_auth *auth, struct rowtag_sum *sum, int64_t id,
		    uint64_t version, bool remove)
{
	unsigned char msg[16], h[DB_ELEM_LEN];
	uint64_t lo = 0, hi = 0, old;

	for (int i = 0; i < 8; i++) {
		msg[i] = (unsigned char)((uint64_t)id >> (56 - 8 * i));
		msg[8 + i] = (unsigned char)(version >> (56 - 8 * i));
	}
	auth->elem(auth->ctx, msg, h);
	for (int i = 0; i < 8; i++) {
		lo |= (uint64_t)h[i] << (8 * i);
		hi |= (uint64_t)h[8 + i] << (8 * i);
	}
	old = sum->lo;
	if (remove) {
		sum->lo -= lo;
		sum->hi -= hi + (sum->lo > old);
	} else {
		sum->lo += lo;
		sum->hi += hi + (sum->lo < old);
	}
}

void rowtag_sums_put(const struct db_auth *auth, struct rowtag_sums *sums, int64_t id,
		     uint64_t version, bool remove)
{
	rowtag_sum_put(auth, &sums->b[rowtag_bucket(id)], id, version, remove);
}

void rowtag_sums_of(const struct db_auth *auth, const int64_t *ids, const uint64_t *vers,
		    size_t n, struct rowtag_sums *out)
{
	*out = (struct rowtag_sums){ 0 };
	for (size_t i = 0; i < n; i++)
		rowtag_sums_put(auth, out, ids[i], vers[i], false);
}

void rowtag_state_tag(const struct db_auth *auth, int64_t inst, int64_t seq,
		      const struct rowtag_sums *sums, unsigned char out[static DB_MAC_LEN])
{
	struct rowtag m;

	rowtag_init(&m, "state/2");
	rowtag_u64(&m, (uint64_t)inst);
	rowtag_u64(&m, (uint64_t)seq);
	for (unsigned i = 0; i < ROWTAG_BUCKETS; i++) {
		rowtag_u64(&m, sums->b[i].lo);
		rowtag_u64(&m, sums->b[i].hi);
	}
	auth->mac(auth->ctx, m.buf, m.len, out);
}

void rowtag_subs_put(const struct db_auth *auth, struct rowtag_sums *subs, int64_t id,
		     uint64_t version, bool remove)
{
	rowtag_sum_put(auth, &subs->b[rowtag_sub(id)], id, version, remove);
}

void rowtag_subs_total(const struct rowtag_sums *subs, struct rowtag_sum *out)
{
	uint64_t old;

	*out = (struct rowtag_sum){ 0 };
	for (unsigned i = 0; i < ROWTAG_SUBS; i++) {
		old = out->lo;
		out->lo += subs->b[i].lo;
		out->hi += subs->b[i].hi + (out->lo < old);
	}
}

void rowtag_subs_tag(const struct db_auth *auth, int64_t inst, unsigned bucket,
		     const struct rowtag_sums *subs, unsigned char out[static DB_MAC_LEN])
{
	struct rowtag m;

	rowtag_init(&m, "sums_cache/1");
	rowtag_u64(&m, (uint64_t)inst);
	rowtag_u64(&m, bucket);
	for (unsigned i = 0; i < ROWTAG_SUBS; i++) {
		rowtag_u64(&m, subs->b[i].lo);
		rowtag_u64(&m, subs->b[i].hi);
	}
	auth->mac(auth->ctx, m.buf, m.len, out);
}

static void le64_put(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t le64_get(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

void rowtag_sums_encode(const struct rowtag_sums *sums, unsigned char out[static ROWTAG_SUMS_LEN])
{
	for (unsigned i = 0; i < ROWTAG_BUCKETS; i++) {
		le64_put(out + 16 * i, sums->b[i].lo);
		le64_put(out + 16 * i + 8, sums->b[i].hi);
	}
}

void rowtag_sums_decode(const unsigned char in[static ROWTAG_SUMS_LEN], struct rowtag_sums *sums)
{
	for (unsigned i = 0; i < ROWTAG_BUCKETS; i++) {
		sums->b[i].lo = le64_get(in + 16 * i);
		sums->b[i].hi = le64_get(in + 16 * i + 8);
	}
}

void rowtag_state_begin(struct rowtag_state *c, const struct db_auth *auth, int64_t inst,
			int64_t seq)
{
	c->auth = auth;
	c->inst = inst;
	c->seq = seq;
	memset(&c->sums, 0, sizeof(c->sums));
}

void rowtag_state_add(struct rowtag_state *c, int64_t id, int64_t version)
{
	rowtag_sums_put(c->auth, &c->sums, id, (uint64_t)version, false);
}

void rowtag_state_end(struct rowtag_state *c, unsigned char out[static DB_MAC_LEN])
{
	rowtag_state_tag(c->auth, c->inst, c->seq, &c->sums, out);
}

#define CHAIN_CHUNK (ROWTAG_MSG_MAX - 64)

void rowtag_chain_begin(struct rowtag_chain *c, const struct db_auth *auth, int64_t inst,
			int64_t seq)
{
	c->auth = auth;
	rowtag_init(&c->m, "state");
	rowtag_u64(&c->m, (uint64_t)inst);
	rowtag_u64(&c->m, (uint64_t)seq);
}

/* Before each pair: a long chain goes on from the tag of what it holds. */
void rowtag_chain_add(struct rowtag_chain *c, int64_t id, int64_t version)
{
	unsigned char h[DB_MAC_LEN];

	if (c->m.len > CHAIN_CHUNK) {
		c->auth->mac(c->auth->ctx, c->m.buf, c->m.len, h);
		rowtag_init(&c->m, "state+");
		rowtag_bytes(&c->m, h, sizeof(h));
	}
	rowtag_u64(&c->m, (uint64_t)id);
	rowtag_u64(&c->m, (uint64_t)version);
}

bool rowtag_chain_ok(struct rowtag_chain *c, const void *stored, size_t len)
{
	unsigned char out[DB_MAC_LEN];

	if (c->m.overflow)
		return false;
	c->auth->mac(c->auth->ctx, c->m.buf, c->m.len, out);
	return rowtag_equal(out, stored, len);
}

static void floor_tag(const struct db_auth *auth, int64_t floor,
		      unsigned char out[static DB_MAC_LEN])
{
	struct rowtag m;

	rowtag_init(&m, ROWTAG_FLOOR_KEY);
	rowtag_u64(&m, (uint64_t)floor);
	auth->mac(auth->ctx, m.buf, m.len, out);
}

void rowtag_floor_encode(const struct db_auth *auth, int64_t floor,
			 unsigned char out[static ROWTAG_FLOOR_LEN])
{
	for (int i = 0; i < 8; i++)
		out[i] = (unsigned char)((uint64_t)floor >> (56 - 8 * i));
	floor_tag(auth, floor, out + 8);
}

int rowtag_floor_decode(const struct db_auth *auth, const struct db_blob *b, int64_t *floor)
{
	unsigned char want[DB_MAC_LEN];
	uint64_t v = 0;

	if (b->len != ROWTAG_FLOOR_LEN)
		return -EIO;
	for (int i = 0; i < 8; i++)
		v = v << 8 | b->data[i];
	floor_tag(auth, (int64_t)v, want);
	if (!rowtag_equal(want, b->data + 8, DB_MAC_LEN))
		return -EIO;
	*floor = (int64_t)v;
	return 0;
}

static void report_now(const struct db_auth *auth, const char *what)
{
	if (auth && auth->failed)
		auth->failed(auth->ctx, what);
}

void rowtag_failed(const struct db_auth *auth, const char *what, bool in_txn)
{
	db_set_error("%s fails authentication (tampered or damaged database)", what);
	if (!in_txn) {
		report_now(auth, what);
		return;
	}
	if (npending < PENDING_MAX) {
		snprintf(pending[npending++], ROWTAG_WHAT_MAX, "%s", what);
		pending_auth = auth;
	}
}

void rowtag_flush(void)
{
	unsigned n = npending;

	npending = 0;
	for (unsigned i = 0; i < n; i++)
		report_now(pending_auth, pending[i]);
}
