/* Inside db/ only, for every store: the bytes a row's tag covers, the
 * bucket sums of an instance's live set, the audit floor's encoding, and the
 * reporting of rows that fail. Every store must tag alike, so that a
 * backup (a SQLite file) verifies whichever store wrote it. */
#ifndef VAULTFS_ROWTAG_H
#define VAULTFS_ROWTAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"

#define ROWTAG_MSG_MAX 4096	/* a 1024-byte description, two names and more */
#define ROWTAG_WHAT_MAX 96	/* "secrets row 12": what a failure names */

/* A row's encoding: "vaultfs/row/1", the table's name, then each field
 * typed (integer, text, blob, null) with its length, so a tag made for one
 * table, one row or one field list never fits another. */
struct rowtag {
	unsigned char buf[ROWTAG_MSG_MAX];
	size_t len;
	bool overflow;		/* too long, or a field no tag covers: fails */
};

void rowtag_init(struct rowtag *m, const char *table);
void rowtag_int(struct rowtag *m, int64_t v);
void rowtag_text(struct rowtag *m, const void *p, size_t n);
void rowtag_blob(struct rowtag *m, const void *p, size_t n);
void rowtag_null(struct rowtag *m);
void rowtag_u64(struct rowtag *m, uint64_t v);	/* untyped: chains and the floor */
void rowtag_bytes(struct rowtag *m, const void *p, size_t n);
/* 0, or -EMSGSIZE when the encoding overflowed. */
int rowtag_make(const struct db_auth *auth, const struct rowtag *m,
		unsigned char out[static DB_MAC_LEN]);
/* Whether tag (taglen bytes, from the store: the attacker's) is m's. */
bool rowtag_ok(const struct db_auth *auth, const struct rowtag *m, const void *tag,
	       size_t taglen);
/* Constant time. */
bool rowtag_equal(const unsigned char *a, const void *b, size_t blen);

/* An instance's state: a tag over (instance id, seq, sums). The live
 * secrets fall into ROWTAG_BUCKETS buckets by id; a bucket's sum is the
 * sum modulo 2^128 of a keyed PRF of each of its (id, version). Sums, not
 * a chain, so that a writer who trusts the old sums makes the new state
 * from the rows it changed alone: O(1), not O(n). Buckets, so that one
 * secret is checked by its bucket's rows alone when the store keeps the
 * sums beside the state (the tag covers them): O(n / 64). Without the key
 * no one finds another set with the same sums. */
#define ROWTAG_BUCKETS 64
#define ROWTAG_SUMS_LEN (ROWTAG_BUCKETS * 16)
struct rowtag_sum {
	uint64_t lo, hi;
};
struct rowtag_sums {
	struct rowtag_sum b[ROWTAG_BUCKETS];
};
static inline unsigned rowtag_bucket(int64_t id)
{
	return (unsigned)((uint64_t)id % ROWTAG_BUCKETS);
}
struct rowtag_state {
	const struct db_auth *auth;
	int64_t inst, seq;
	struct rowtag_sums sums;
};
void rowtag_state_begin(struct rowtag_state *c, const struct db_auth *auth, int64_t inst,
			int64_t seq);
void rowtag_state_add(struct rowtag_state *c, int64_t id, int64_t version);
void rowtag_state_end(struct rowtag_state *c, unsigned char out[static DB_MAC_LEN]);
/* sum with (id, version) added, or taken out (remove). */
void rowtag_sum_put(const struct db_auth *auth, struct rowtag_sum *sum, int64_t id,
		    uint64_t version, bool remove);
/* The same in id's bucket of sums. */
void rowtag_sums_put(const struct db_auth *auth, struct rowtag_sums *sums, int64_t id,
		     uint64_t version, bool remove);
/* The sums of a whole set. */
void rowtag_sums_of(const struct db_auth *auth, const int64_t *ids, const uint64_t *vers,
		    size_t n, struct rowtag_sums *out);
/* The state for (inst, seq) of a set whose sums are sums. */
void rowtag_state_tag(const struct db_auth *auth, int64_t inst, int64_t seq,
		      const struct rowtag_sums *sums, unsigned char out[static DB_MAC_LEN]);
/* The sums as a store keeps them (little-endian), and back. */
void rowtag_sums_encode(const struct rowtag_sums *sums, unsigned char out[static ROWTAG_SUMS_LEN]);
void rowtag_sums_decode(const unsigned char in[static ROWTAG_SUMS_LEN], struct rowtag_sums *sums);

/* A bucket's sum split in ROWTAG_SUBS sub-sums by (id / 64) % 64, that is
 * by id % 4096: kept beside the state by the SQLite store for readers that
 * start cold (vaultfs get), as a cache. Its tag covers (instance, bucket,
 * sub-sums); it counts only while its sub-sums add up to the bucket's sum
 * that the state tags. An honest writer's sub-sums are a function of the
 * bucket's set, so sub-sums that add up are that set's (without the key
 * no one makes another set with the same sum): one secret is then checked
 * by the rows of its sub-bucket alone, O(n / 4096). */
#define ROWTAG_SUBS 64
static inline unsigned rowtag_sub(int64_t id)
{
	return (unsigned)((uint64_t)id / ROWTAG_BUCKETS % ROWTAG_SUBS);
}
_Static_assert(ROWTAG_SUBS == ROWTAG_BUCKETS, "sub-sums are kept as rowtag_sums");
/* The sub-sums of one bucket (in rowtag_sums' shape), and their total. */
void rowtag_subs_put(const struct db_auth *auth, struct rowtag_sums *subs, int64_t id,
		     uint64_t version, bool remove);
void rowtag_subs_total(const struct rowtag_sums *subs, struct rowtag_sum *out);
void rowtag_subs_tag(const struct db_auth *auth, int64_t inst, unsigned bucket,
		     const struct rowtag_sums *subs, unsigned char out[static DB_MAC_LEN]);

/* The state as the previous vaultfs made it (schema 6 of the SQLite
 * store, 1 of PostgreSQL's): a keyed chain over (instance id, seq) and
 * every live (id, version) in id order. Only to check it, once, before
 * the states are made again as sums. */
struct rowtag_chain {
	const struct db_auth *auth;
	struct rowtag m;
};
void rowtag_chain_begin(struct rowtag_chain *c, const struct db_auth *auth, int64_t inst,
			int64_t seq);
void rowtag_chain_add(struct rowtag_chain *c, int64_t id, int64_t version);
/* Whether stored (len bytes) is the chain's state. */
bool rowtag_chain_ok(struct rowtag_chain *c, const void *stored, size_t len);
/* The meta row that marks a store whose states are still chains. */
#define ROWTAG_CHAIN_KEY "state_chain"

/* The audit floor as stored in meta: 8 bytes big-endian, then its tag. */
#define ROWTAG_FLOOR_KEY "audit_floor"
#define ROWTAG_FLOOR_LEN (8 + DB_MAC_LEN)
void rowtag_floor_encode(const struct db_auth *auth, int64_t floor,
			 unsigned char out[static ROWTAG_FLOOR_LEN]);
/* 0 and *floor, or -EIO if b is not a floor tagged under auth. */
int rowtag_floor_decode(const struct db_auth *auth, const struct db_blob *b, int64_t *floor);

/* A row that fails: names it in db_errmsg, and hands it to auth->failed
 * now, or, inside the caller's write transaction (in_txn), once
 * rowtag_flush runs after its end: auth->failed may write to the audit log,
 * which must not wait for that transaction. */
void rowtag_failed(const struct db_auth *auth, const char *what, bool in_txn);
/* After the outermost commit or rollback of the calling thread. */
void rowtag_flush(void);

#endif
