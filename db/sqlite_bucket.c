/*
 * The instance state's buckets (rowtag.h), in the SQLite store: the sums
 * kept beside the state, one bucket's sum and sub-sums, and one secret
 * checked by its sub-bucket (the cached sub-sums) or by its bucket alone.
 * Rules this file keeps:
 *  - stored sums count only if the state tags them; a bucket only if its
 *    rows add up to its sum: anything else is -ENOENT, and the caller's
 *    full check decides and reports;
 *  - the bucket and the instance row are read in one statement: one
 *    snapshot.
 */
#include <errno.h>
#include <string.h>

#include "rowtag.h"
#include "sqlite_int.h"

/* One bucket of the set with the instance row, in one statement (one
 * snapshot); secrets_by_sub (id % 4096) finds the bucket's rows. */
_Static_assert(ROWTAG_BUCKETS == 64 && ROWTAG_SUBS == 64, "the SQL and the index say so");
static const char sql_state_bucket[] =
	"SELECT i.seq, i.state, i.sums, s.id, s.version FROM instances i LEFT JOIN secrets s "
	"ON s.instance_id = i.id AND " SQ_IN_BUCKET("s.id") " WHERE i.id = ?1";

struct bucket {
	const struct db_auth *auth;
	int64_t id, *seq;
	uint64_t *version;
	struct rowtag_sum sum;		/* of the bucket's rows */
	struct rowtag_sums sums;	/* as stored */
	unsigned char state[DB_MAC_LEN];
	bool first, stored_ok, found;
};

static int row_bucket(struct sq *db, sqlite3_stmt *st, void *arg)
{
	struct bucket *b = arg;
	int64_t id;

	if (b->first) {
		const void *state = sqlite3_column_blob(st, 1), *sums = sqlite3_column_blob(st, 2);

		b->first = false;
		*b->seq = sqlite3_column_int64(st, 0);
		b->stored_ok = state && sqlite3_column_bytes(st, 1) == DB_MAC_LEN && sums &&
			       sqlite3_column_bytes(st, 2) == ROWTAG_SUMS_LEN;
		if (b->stored_ok) {
			memcpy(b->state, state, DB_MAC_LEN);
			rowtag_sums_decode(sums, &b->sums);
		}
	}
	if (sqlite3_column_type(st, 3) == SQLITE_NULL)
		return 0;
	id = sqlite3_column_int64(st, 3);
	rowtag_sum_put(b->auth, &b->sum, id, (uint64_t)sqlite3_column_int64(st, 4), false);
	if (id == b->id) {
		b->found = true;
		*b->version = (uint64_t)sqlite3_column_int64(st, 4);
	}
	return 0;
}

/* One secret checked by its bucket alone: the stored sums must be the ones
 * the state tags, and its bucket's rows must add up to its sum. Anything
 * else is -ENOENT: the full check then decides, and reports. */
static int version_bucket(struct sq *conn, const struct db_auth *auth, int64_t inst, int64_t id,
			  int64_t *seq, uint64_t *version)
{
	struct bucket b = { .auth = auth, .id = id, .seq = seq, .version = version,
			    .first = true };
	const struct rowtag_sum *want = &b.sums.b[rowtag_bucket(id)];
	unsigned char tag[DB_MAC_LEN];
	int r = sq_query(conn, 0, sql_state_bucket, row_bucket, &b,
			 SQ_ARGS(SQ_I(inst), SQ_I(rowtag_bucket(id))));

	if (r < 0 || b.first || !b.stored_ok)
		return r < 0 ? r : -ENOENT;
	rowtag_state_tag(auth, inst, *seq, &b.sums, tag);
	if (!rowtag_equal(tag, b.state, DB_MAC_LEN) || b.sum.lo != want->lo ||
	    b.sum.hi != want->hi)
		return -ENOENT;
	return b.found;
}

/* The instance row with one bucket's cached sub-sums, then one sub-bucket's
 * rows, which secrets_by_sub finds. */
static const char sql_state_subs[] =
	"SELECT i.seq, i.state, i.sums, c.sums, c.mac FROM instances i "
	"LEFT JOIN sums_cache c ON c.id = i.id * 64 + ?2 WHERE i.id = ?1";
static const char sql_sub_rows[] =
	"SELECT id, version FROM secrets WHERE instance_id = ?1 AND id % 4096 = ?2";

struct subs {
	int64_t *seq;
	unsigned char state[DB_MAC_LEN], tag[DB_MAC_LEN];
	struct rowtag_sums sums, subs;
	bool stored_ok, cached;
};

static int row_subs(struct sq *db, sqlite3_stmt *st, void *arg)
{
	struct subs *c = arg;
	const void *state = sqlite3_column_blob(st, 1), *sums = sqlite3_column_blob(st, 2);
	const void *subs = sqlite3_column_blob(st, 3), *tag = sqlite3_column_blob(st, 4);

	*c->seq = sqlite3_column_int64(st, 0);
	c->stored_ok = state && sqlite3_column_bytes(st, 1) == DB_MAC_LEN && sums &&
		       sqlite3_column_bytes(st, 2) == ROWTAG_SUMS_LEN;
	c->cached = subs && sqlite3_column_bytes(st, 3) == ROWTAG_SUMS_LEN && tag &&
		    sqlite3_column_bytes(st, 4) == DB_MAC_LEN;
	if (c->stored_ok) {
		memcpy(c->state, state, DB_MAC_LEN);
		rowtag_sums_decode(sums, &c->sums);
	}
	if (c->cached) {
		rowtag_sums_decode(subs, &c->subs);
		memcpy(c->tag, tag, DB_MAC_LEN);
	}
	return 0;
}

static int row_sub(struct sq *db, sqlite3_stmt *st, void *arg)
{
	struct bucket *b = arg;
	int64_t id = sqlite3_column_int64(st, 0);

	rowtag_sum_put(b->auth, &b->sum, id, (uint64_t)sqlite3_column_int64(st, 1), false);
	if (id == b->id) {
		b->found = true;
		*b->version = (uint64_t)sqlite3_column_int64(st, 1);
	}
	return 0;
}

/* One secret checked by its sub-bucket alone: the state tags the stored
 * sums, the cached sub-sums of its bucket are tagged and add up to the
 * bucket's sum, and its sub-bucket's rows add up to their sub-sum. Anything
 * else is -ENOENT: the bucket's check then decides. Two statements, maybe
 * two snapshots: a commit between them makes the sums disagree, never
 * agree on rows the state does not hold. */
static int version_sub(struct sq *conn, const struct db_auth *auth, int64_t inst, int64_t id,
		       int64_t *seq, uint64_t *version)
{
	struct subs c = { .seq = seq };
	struct bucket b = { .auth = auth, .id = id, .version = version };
	unsigned bucket = rowtag_bucket(id), sub = rowtag_sub(id);
	unsigned char tag[DB_MAC_LEN];
	struct rowtag_sum total;
	int r = sq_query(conn, SQ_ONE, sql_state_subs, row_subs, &c,
			 SQ_ARGS(SQ_I(inst), SQ_I(bucket)));

	if (r < 0 || !c.stored_ok || !c.cached)
		return r < 0 && r != -ENOENT ? r : -ENOENT;
	rowtag_state_tag(auth, inst, *seq, &c.sums, tag);
	if (!rowtag_equal(tag, c.state, DB_MAC_LEN))
		return -ENOENT;
	rowtag_subs_tag(auth, inst, bucket, &c.subs, tag);
	rowtag_subs_total(&c.subs, &total);
	if (!rowtag_equal(tag, c.tag, DB_MAC_LEN) || total.lo != c.sums.b[bucket].lo ||
	    total.hi != c.sums.b[bucket].hi)
		return -ENOENT;
	r = sq_query(conn, 0, sql_sub_rows, row_sub, &b,
		     SQ_ARGS(SQ_I(inst), SQ_I(bucket + ROWTAG_BUCKETS * sub)));
	if (r < 0)
		return r;
	if (b.sum.lo != c.subs.b[sub].lo || b.sum.hi != c.subs.b[sub].hi)
		return -ENOENT;
	return b.found;
}

static int version_known(struct sq *db, struct sq *conn, int64_t inst, int64_t id,
			 int64_t *seq, uint64_t *version)
{
	unsigned char state[DB_MAC_LEN];
	int r;

	if (!db->auth)
		return -ENOENT;
	r = sq_states_holds(db, inst) ? sq_state_row(conn, inst, seq, state) : -ENOENT;
	if (r == 0)
		r = sq_states_find(db, inst, *seq, state, id, version);
	/* A long-running process checks the whole set once per seq and keeps
	 * it (fs/vault_read.c), cheaper than a bucket at every open. */
	if (r == -ENOENT && (db->flags & DB_BRIEF))
		r = version_sub(conn, db->auth, inst, id, seq, version);
	if (r == -ENOENT && (db->flags & DB_BRIEF))
		r = version_bucket(conn, db->auth, inst, id, seq, version);
	return r;
}

/* One id, on the same connection state_check would use: from the trusted
 * set, else (DB_BRIEF) by its bucket; never the full scan (-ENOENT). */
int sq_state_version(struct db *h, int64_t inst, int64_t id, int64_t *seq, uint64_t *version)
{
	struct sq *db = sq_of(h);
	struct sq *rd = sq_reader_take(db);
	int r;

	if (rd) {
		r = version_known(db, rd, inst, id, seq, version);
		sq_reader_give(db, rd);
		return r;
	}
	if (sq_in_own_txn(db))
		return -ENOENT;
	return version_known(db, db, inst, id, seq, version);
}

static int row_sums(struct sq *db, sqlite3_stmt *st, void *arg)
{
	const void *p = sqlite3_column_blob(st, 0);

	if (!p || sqlite3_column_bytes(st, 0) != ROWTAG_SUMS_LEN)
		return -ENOENT;
	rowtag_sums_decode(p, arg);
	return 0;
}

int sq_state_sums(struct sq *db, int64_t inst, struct rowtag_sums *sums)
{
	static const char sql[] = "SELECT sums FROM instances WHERE id = ?1";

	return sq_query(db, SQ_ONE, sql, row_sums, sums, SQ_ARGS(SQ_I(inst)));
}

/* A group's rows (a bucket, or a sub-bucket) summed into sum, or into
 * subs by sub-bucket. */
struct group_sum {
	const struct db_auth *auth;
	struct rowtag_sum *sum;
	struct rowtag_sums *subs;
};

static int row_group_sum(struct sq *db, sqlite3_stmt *st, void *arg)
{
	struct group_sum *g = arg;
	int64_t id = sqlite3_column_int64(st, 0);
	uint64_t version = (uint64_t)sqlite3_column_int64(st, 1);

	if (g->sum)
		rowtag_sum_put(g->auth, g->sum, id, version, false);
	else
		rowtag_subs_put(g->auth, g->subs, id, version, false);
	return 0;
}

static const char sql_bucket_rows[] =
	"SELECT id, version FROM secrets WHERE instance_id = ?1 AND " SQ_IN_BUCKET("id");

int sq_bucket_sum(struct sq *db, int64_t inst, unsigned bucket, struct rowtag_sum *sum)
{
	struct group_sum g = { db->auth, sum, NULL };

	*sum = (struct rowtag_sum){ 0 };
	return sq_query(db, 0, sql_bucket_rows, row_group_sum, &g,
			SQ_ARGS(SQ_I(inst), SQ_I(bucket)));
}

int sq_bucket_subs(struct sq *db, int64_t inst, unsigned bucket, struct rowtag_sums *subs)
{
	struct group_sum g = { db->auth, NULL, subs };

	*subs = (struct rowtag_sums){ 0 };
	return sq_query(db, 0, sql_bucket_rows, row_group_sum, &g,
			SQ_ARGS(SQ_I(inst), SQ_I(bucket)));
}

int sq_sub_sum(struct sq *db, int64_t inst, unsigned sub, struct rowtag_sum *sum)
{
	struct group_sum g = { db->auth, sum, NULL };

	*sum = (struct rowtag_sum){ 0 };
	return sq_query(db, 0, sql_sub_rows, row_group_sum, &g, SQ_ARGS(SQ_I(inst), SQ_I(sub)));
}

struct cached {
	struct rowtag_sums *subs;
	unsigned char tag[DB_MAC_LEN];
	bool there;
};

static int row_cached(struct sq *db, sqlite3_stmt *st, void *arg)
{
	struct cached *c = arg;

	c->there = sqlite3_column_bytes(st, 0) == ROWTAG_SUMS_LEN &&
		   sqlite3_column_bytes(st, 1) == DB_MAC_LEN;
	if (c->there) {
		rowtag_sums_decode(sqlite3_column_blob(st, 0), c->subs);
		memcpy(c->tag, sqlite3_column_blob(st, 1), DB_MAC_LEN);
	}
	return 0;
}

int sq_cache_subs(struct sq *db, int64_t inst, unsigned bucket, struct rowtag_sums *subs)
{
	static const char sql[] = "SELECT sums, mac FROM sums_cache WHERE id = ?1";
	struct cached c = { .subs = subs };
	unsigned char tag[DB_MAC_LEN];
	int r = sq_query(db, 0, sql, row_cached, &c,
			 SQ_ARGS(SQ_I(inst * ROWTAG_BUCKETS + bucket)));

	if (r < 0 || !c.there)
		return r < 0 ? r : -ENOENT;
	rowtag_subs_tag(db->auth, inst, bucket, subs, tag);
	return rowtag_equal(tag, c.tag, DB_MAC_LEN) ? 0 : -ENOENT;
}
