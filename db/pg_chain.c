/*
 * Instance states chained by the previous vaultfs (schema 1 of this
 * store), checked and made again as bucket sums (rowtag.h), as
 * sqlite_chain.c does for SQLite: schema 2's migration marks a store whose
 * instances had states; the first open that may write checks every chain
 * and, only if all match, makes the new states and drops the mark, in one
 * transaction under the fleet's write lock.
 */
#include <errno.h>
#include <stdio.h>

#include "pg_int.h"
#include "rowtag.h"

static const char sql_chain_scan[] =
	"SELECT i.seq, i.state, s.id, s.version FROM instances i LEFT JOIN secrets s "
	"ON s.instance_id = i.id WHERE i.id = $1 ORDER BY s.id";

/* 0 if inst's chained state is its rows', -EIO (reported) if not. */
static int chain_check(struct pgs *s, int64_t inst)
{
	struct rowtag_chain c;
	struct pgq q = { 0 };
	PGresult *res;
	char what[128];
	int r;

	pgq_int(&q, inst);
	r = pg_run(s, sql_chain_scan, &q, &res);
	if (r < 0)
		return r;
	if (PQntuples(res) > 0) {
		rowtag_chain_begin(&c, s->auth, inst, pg_int(res, 0, 0));
		for (int i = 0; i < PQntuples(res); i++)
			if (!pg_null(res, i, 2))
				rowtag_chain_add(&c, pg_int(res, i, 2), pg_int(res, i, 3));
		if (!rowtag_chain_ok(&c, PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1))) {
			snprintf(what, sizeof(what), "instances row %lld state (its live secrets' "
				 "versions, as the previous vaultfs chained them)", (long long)inst);
			rowtag_failed(s->auth, what, true);
			r = -EIO;
		}
	}
	PQclear(res);
	return r;
}

static int convert(struct pgs *s)
{
	PGresult *res = NULL;
	int r = pg_run(s, "SELECT id FROM instances ORDER BY id", NULL, &res);

	for (int i = 0; r == 0 && i < PQntuples(res); i++)
		r = chain_check(s, pg_int(res, i, 0));
	for (int i = 0; r == 0 && i < PQntuples(res); i++)
		r = pg_state_update(s, pg_int(res, i, 0), s->auth, false);
	if (res)
		PQclear(res);
	if (r == 0)
		r = pg_change(s, "DELETE FROM meta WHERE key = '" ROWTAG_CHAIN_KEY "'", NULL, -1);
	return r;
}

int pg_states_convert(struct db *db, bool readonly)
{
	struct pgs *s = (struct pgs *)db;
	PGresult *res;
	bool marked;
	int r = pg_run(s, "SELECT 1 FROM meta WHERE key = '" ROWTAG_CHAIN_KEY "'", NULL, &res);

	if (r < 0)
		return r;
	marked = PQntuples(res) > 0;
	PQclear(res);
	if (!marked)
		return 0;
	if (readonly) {
		pg_set_error("its instance states were made by an earlier vaultfs: open it once "
			     "for writing (any command that may write, or the mount) to check "
			     "and convert them");
		return -EROFS;
	}
	if (!s->auth)
		return -EACCES;
	r = db_pg_ops.begin(db, false);
	if (r < 0)
		return r;
	r = convert(s);
	if (r == 0)
		return db_pg_ops.commit(db);
	db_pg_ops.rollback(db);
	return r;
}
