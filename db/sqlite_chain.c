/*
 * Instance states as schema 6 made them: a keyed chain over (instance,
 * seq) and every live (id, version) in id order. Schema 7 tags bucket
 * sums instead (rowtag.h); its migration marks a file whose instances had
 * chained states (meta row "state_chain"), and the first open with the
 * key that may write checks every chain and makes the sums' state in one
 * transaction. Rules this file keeps:
 *  - nothing is remade unless every instance's chain checks: a row put
 *    back before the upgrade is reported (EIO), never laundered into a
 *    new state, and the file stays as it was;
 *  - a read-only open of a marked file is refused with what to do.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "rowtag.h"
#include "sqlite_int.h"

#define CHAIN_KEY "state_chain"
#define CHAIN_CHUNK (ROWTAG_MSG_MAX - 64)

static const char sql_chain_scan[] =
	"SELECT i.seq, i.state, s.id, s.version FROM instances i LEFT JOIN secrets s "
	"ON s.instance_id = i.id WHERE i.id = ?1 ORDER BY s.id";
static const char sql_chain_done[] = "DELETE FROM meta WHERE key = '" CHAIN_KEY "'";

struct chain {
	const struct db_auth *auth;
	struct rowtag m;
	unsigned char stored[DB_MAC_LEN];
	bool first, stored_ok;
};

/* Before each pair, as schema 6 did: a long chain goes on from the tag
 * of what it holds so far. */
static void chain_pair(struct chain *c, uint64_t id, uint64_t version)
{
	unsigned char h[DB_MAC_LEN];

	if (c->m.len > CHAIN_CHUNK) {
		c->auth->mac(c->auth->ctx, c->m.buf, c->m.len, h);
		rowtag_init(&c->m, "state+");
		rowtag_bytes(&c->m, h, sizeof(h));
	}
	rowtag_u64(&c->m, id);
	rowtag_u64(&c->m, version);
}

static int row_chain(struct sq *db, sqlite3_stmt *st, void *arg)
{
	struct chain *c = arg;
	const void *p;

	if (c->first) {
		c->first = false;
		p = sqlite3_column_blob(st, 1);
		c->stored_ok = p && sqlite3_column_bytes(st, 1) == DB_MAC_LEN;
		if (c->stored_ok)
			memcpy(c->stored, p, DB_MAC_LEN);
		rowtag_u64(&c->m, (uint64_t)sqlite3_column_int64(st, 0));
	}
	if (sqlite3_column_type(st, 2) == SQLITE_NULL)
		return 0;
	chain_pair(c, (uint64_t)sqlite3_column_int64(st, 2),
		   (uint64_t)sqlite3_column_int64(st, 3));
	return 0;
}

/* 0 if inst's chained state is its rows', -EIO (reported) if not. */
static int chain_check(struct sq *db, int64_t inst, void *ctx)
{
	struct chain c = { .auth = db->auth, .first = true };
	unsigned char out[DB_MAC_LEN];
	char what[96];
	int r;

	rowtag_init(&c.m, "state");
	rowtag_u64(&c.m, (uint64_t)inst);
	r = sq_query(db, 0, sql_chain_scan, row_chain, &c, SQ_ARGS(SQ_I(inst)));
	if (r < 0 || c.first)
		return r < 0 ? r : 0;
	if (c.stored_ok) {
		db->auth->mac(db->auth->ctx, c.m.buf, c.m.len, out);
		if (!c.m.overflow && rowtag_equal(out, c.stored, DB_MAC_LEN))
			return 0;
	}
	snprintf(what, sizeof(what), "instances row %lld state (its live secrets' versions, "
		 "as the previous vaultfs chained them)", (long long)inst);
	rowtag_failed(db->auth, what, true);
	return -EIO;
}

static int chain_remake(struct sq *db, int64_t inst, void *ctx)
{
	return sq_state_update(db, inst, db->auth, false);
}

int sq_states_convert(struct db *h, bool readonly)
{
	struct sq *db = sq_of(h);
	struct db_blob mark = { 0 };
	int r = sq_meta_get(h, CHAIN_KEY, &mark);

	db_blob_free(&mark);
	if (r < 0)
		return r == -ENOENT ? 0 : r;
	if (readonly) {
		db_set_error("its instance states were made by an earlier vaultfs: open it once "
			     "for writing (any command that may write, or the mount) to check "
			     "and convert them");
		return -EROFS;
	}
	if (!db->auth)
		return -EACCES;
	r = sq_begin(db, false);
	if (r < 0)
		return r;
	r = sq_each_instance(db, chain_check, NULL);
	if (r == 0)
		r = sq_each_instance(db, chain_remake, NULL);
	if (r == 0)
		r = sq_change(db, sql_chain_done, -1, SQ_NOARGS, NULL, NULL);
	return sq_end(db, r);
}
