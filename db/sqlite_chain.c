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
#include <stdlib.h>
#include <string.h>

#include "rowtag.h"
#include "sqlite_int.h"

static const char sql_chain_scan[] =
	"SELECT i.seq, i.state, s.id, s.version FROM instances i LEFT JOIN secrets s "
	"ON s.instance_id = i.id WHERE i.id = ?1 ORDER BY s.id";
static const char sql_chain_done[] = "DELETE FROM meta WHERE key = '" ROWTAG_CHAIN_KEY "'";

struct chain {
	struct rowtag_chain c;
	int64_t inst;
	bool first, ok;
	struct db_blob stored;
};

static int row_chain(struct sq *db, sqlite3_stmt *st, void *arg)
{
	struct chain *c = arg;

	if (c->first) {
		c->first = false;
		rowtag_chain_begin(&c->c, db->auth, c->inst, sqlite3_column_int64(st, 0));
		c->stored.len = (size_t)sqlite3_column_bytes(st, 1);
		c->stored.data = malloc(c->stored.len + 1);
		if (!c->stored.data)
			return -ENOMEM;
		memcpy(c->stored.data, sqlite3_column_blob(st, 1), c->stored.len);
	}
	if (sqlite3_column_type(st, 2) != SQLITE_NULL)
		rowtag_chain_add(&c->c, sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3));
	return 0;
}

/* 0 if inst's chained state is its rows', -EIO (reported) if not. */
static int chain_check(struct sq *db, int64_t inst, void *ctx)
{
	struct chain c = { .inst = inst, .first = true };
	char what[128];
	int r = sq_query(db, 0, sql_chain_scan, row_chain, &c, SQ_ARGS(SQ_I(inst)));

	if (r == 0 && !c.first && !rowtag_chain_ok(&c.c, c.stored.data, c.stored.len)) {
		snprintf(what, sizeof(what), "instances row %lld state (its live secrets' "
			 "versions, as the previous vaultfs chained them)", (long long)inst);
		rowtag_failed(db->auth, what, true);
		r = -EIO;
	}
	free(c.stored.data);
	return r;
}

static int chain_remake(struct sq *db, int64_t inst, void *ctx)
{
	return sq_state_update(db, inst, db->auth, false);
}

int sq_states_convert(struct db *h, bool readonly)
{
	struct sq *db = sq_of(h);
	struct db_blob mark = { 0 };
	int r = sq_meta_get(h, ROWTAG_CHAIN_KEY, &mark);

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
