/*
 * Row tags in the SQLite store (the encoding, for every store: rowtag.c).
 * Rules this file keeps:
 *  - the store never holds the key: dba_mac() and dba_check() encode a
 *    row's fields as SQL values and ask auth->mac for the tag, and only
 *    our own statements can call them (SQLITE_DIRECTONLY), never the
 *    file's schema;
 *  - a tag is checked before its row is used and before a write replaces
 *    or copies it (dba_check in the statement itself), so a write never
 *    launders a doctored row into a freshly tagged one;
 *  - a row that fails is -EIO, never its content; the failure is reported
 *    once the thread holds no write transaction, so the audit log, which
 *    writes through another connection, never waits for us.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rowtag.h"
#include "sqlite_int.h"

#define WHAT_MAX ROWTAG_WHAT_MAX

static __thread int sql_failed;

static void put_value(struct rowtag *m, sqlite3_value *v)
{
	switch (sqlite3_value_type(v)) {
	case SQLITE_INTEGER:
		rowtag_int(m, sqlite3_value_int64(v));
		break;
	case SQLITE_TEXT:
		rowtag_text(m, sqlite3_value_text(v), (size_t)sqlite3_value_bytes(v));
		break;
	case SQLITE_BLOB:
		rowtag_blob(m, sqlite3_value_blob(v), (size_t)sqlite3_value_bytes(v));
		break;
	case SQLITE_FLOAT:
		/* No tagged column holds a real: never equal to anything tagged. */
		m->overflow = true;
		break;
	default:
		rowtag_null(m);
		break;
	}
}

static void auth_fail(struct sq *db, const char *what)
{
	rowtag_failed(db->auth, what, sq_in_own_txn(db));
}

int sq_auth_sql_failed(void)
{
	int r = sql_failed;

	sql_failed = 0;
	return r;
}

/* "secrets row 12", "versions row 12/3": what a failure names. */
static void describe(char *out, size_t size, const char *tag, sqlite3_value **f, int n)
{
	const unsigned char *a = n > 0 ? sqlite3_value_text(f[0]) : NULL;
	const unsigned char *b = n > 1 ? sqlite3_value_text(f[1]) : NULL;
	bool two = strcmp(tag, "versions") == 0 || strcmp(tag, "secret_attrs") == 0;

	snprintf(out, size, "%s row %.20s%s%.40s", tag, a ? (const char *)a : "?",
		 two ? "/" : "", two && b ? (const char *)b : "");
}

/* dba_mac(tag, field...): the tag of a row about to be written. */
static void sql_mac(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	struct sq *db = sqlite3_user_data(ctx);
	const struct db_auth *auth = db->auth_next ? db->auth_next : db->auth;
	unsigned char tag[DB_MAC_LEN];
	struct rowtag m;

	if (!auth || argc < 1 || sqlite3_value_type(argv[0]) != SQLITE_TEXT) {
		sqlite3_result_error(ctx, "rows can't be tagged without the vault's key", -1);
		return;
	}
	rowtag_init(&m, (const char *)sqlite3_value_text(argv[0]));
	for (int i = 1; i < argc; i++)
		put_value(&m, argv[i]);
	if (m.overflow) {
		sqlite3_result_error(ctx, "row too large to tag", -1);
		return;
	}
	auth->mac(auth->ctx, m.buf, m.len, tag);
	sqlite3_result_blob(ctx, tag, sizeof(tag), SQLITE_TRANSIENT);
}

/* dba_check(mac, tag, field...): 1, or the statement fails. */
static void sql_check(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	struct sq *db = sqlite3_user_data(ctx);
	const struct db_auth *auth = db->auth;
	char what[WHAT_MAX];
	const char *tag;
	struct rowtag m;

	if (argc < 2 || !auth) {
		sqlite3_result_error(ctx, "rows can't be checked without the vault's key", -1);
		return;
	}
	tag = (const char *)sqlite3_value_text(argv[1]);
	rowtag_init(&m, tag ? tag : "");
	for (int i = 2; i < argc; i++)
		put_value(&m, argv[i]);
	if (rowtag_ok(auth, &m, sqlite3_value_blob(argv[0]), (size_t)sqlite3_value_bytes(argv[0]))) {
		sqlite3_result_int(ctx, 1);
		return;
	}
	describe(what, sizeof(what), tag ? tag : "?", argv + 2, argc - 2);
	auth_fail(db, what);
	sql_failed = -EIO;
	sqlite3_result_error(ctx, what, -1);
}

/* Direct only: a trigger, view, index expression, CHECK or DEFAULT (the
 * schema, which whoever writes the file controls) can't call them, so the
 * file can't use the connection as an oracle for tags. sq_schema_check
 * refuses such objects too; this holds even for one it would miss. */
int sq_auth_register(struct sq *db)
{
	int rc = sqlite3_create_function(db->conn, "dba_mac", -1,
					 SQLITE_UTF8 | SQLITE_DIRECTONLY, db, sql_mac, NULL, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_create_function(db->conn, "dba_check", -1,
					     SQLITE_UTF8 | SQLITE_DIRECTONLY, db, sql_check, NULL,
					     NULL);
	return rc == SQLITE_OK ? 0 : sq_errno(db, rc);
}

static bool row_ok(const struct db_auth *auth, sqlite3_stmt *st, const char *tag,
		   const int *cols, int ncols, int maccol)
{
	struct rowtag m;

	rowtag_init(&m, tag);
	for (int i = 0; i < ncols; i++)
		put_value(&m, sqlite3_column_value(st, cols[i]));
	return rowtag_ok(auth, &m, sqlite3_column_blob(st, maccol),
		      (size_t)sqlite3_column_bytes(st, maccol));
}

int sq_row_verify(struct sq *db, sqlite3_stmt *st, const char *tag, const int *cols,
		   int ncols, int maccol, const char *what, int64_t id)
{
	const struct db_auth *auth = db->auth;
	char desc[WHAT_MAX];

	if (!auth) {
		db_set_error("%s", "the store was opened without the vault's key: rows can't be "
			      "checked");
		return -EACCES;
	}
	if (row_ok(auth, st, tag, cols, ncols, maccol))
		return 0;
	if (auth->renew && auth->renew(auth->ctx) && row_ok(auth, st, tag, cols, ncols, maccol))
		return 0;
	snprintf(desc, sizeof(desc), "%s row %lld%s", tag, (long long)id, what ? what : "");
	auth_fail(db, desc);
	return -EIO;
}

/* What each table's tag covers, in order (as SQL over the row's columns). */
#define TAGGED(table, fields) { table, fields, "SELECT " fields ", mac FROM " table }
static const struct {
	const char *table, *fields, *scan;
} tagged[] = {
	TAGGED("instances", DBA_INSTANCES),
	TAGGED("secrets", DBA_SECRETS),
	TAGGED("versions", DBA_VERSIONS),
	TAGGED("trash", DBA_TRASH),
	TAGGED("secret_attrs", DBA_ATTRS),
};
#define N_TAGGED (sizeof(tagged) / sizeof(tagged[0]))

static int each_table(struct sq *db, const char *fmt)
{
	char sql[512];
	int r = 0;

	sq_lock(db);
	for (size_t i = 0; r == 0 && i < N_TAGGED; i++) {
		snprintf(sql, sizeof(sql), fmt, tagged[i].table, tagged[i].fields,
			 tagged[i].fields);
		r = sq_exec(db, sql);
	}
	sq_unlock(db);
	return r;
}

int sq_auth_check_attached(struct sq *db, const char *schema)
{
	char sql[512];
	int r = 0;

	if (!db->auth)
		return -EACCES;
	for (size_t i = 0; r == 0 && i < N_TAGGED; i++) {
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s.%s WHERE NOT dba_check(mac, %s)",
			 schema, tagged[i].table, tagged[i].fields);
		r = sq_exec(db, sql);
	}
	return r;
}

static int state_make(struct sq *db, int64_t inst, void *ctx)
{
	return sq_state_update(db, inst, ctx, false);
}

static int state_remake(struct sq *db, int64_t inst, void *ctx)
{
	int r = sq_state_verify(db, inst);

	return r < 0 ? r : sq_state_update(db, inst, ctx, false);
}

int sq_auth_upgrade(struct db *h)
{
	struct sq *db = sq_of(h);
	int r;

	if (!db->auth)
		return -EACCES;
	r = each_table(db, "UPDATE %s SET mac = dba_mac(%s)%.0s");
	if (r == 0)
		r = sq_state_remake_all(db);
	return r;
}

int sq_state_remake_all(struct sq *db)
{
	int r = sq_each_instance(db, state_make, (void *)db->auth);

	return r < 0 ? r : sq_floor_update(db, db->auth);
}

int sq_auth_rekey(struct db *h, const struct db_auth *next)
{
	struct sq *db = sq_of(h);
	int r;

	if (!db->auth)
		return -EACCES;
	sq_lock(db);
	r = sq_each_instance(db, state_remake, (void *)next);
	db->auth_next = next;
	if (r == 0)
		r = each_table(db, "UPDATE %s SET mac = dba_mac(%s) WHERE dba_check(mac, %s)");
	db->auth_next = NULL;
	sq_unlock(db);
	return r;
}

struct check_ctx {
	size_t t;
	int cols[16], ncols;
	bool bad;
	void (*fn)(void *, const char *);
	void *ctx;
};

static int row_check(struct sq *db, sqlite3_stmt *st, void *arg)
{
	struct check_ctx *c = arg;
	char what[WHAT_MAX];
	bool two = c->t == 2 || c->t == 4;

	if (row_ok(db->auth, st, tagged[c->t].table, c->cols, c->ncols, c->ncols + 1))
		return 0;
	c->bad = true;
	snprintf(what, sizeof(what), "%s row %s%s%s", tagged[c->t].table,
		 (const char *)sqlite3_column_text(st, 1), two ? "/" : "",
		 two ? (const char *)sqlite3_column_text(st, 2) : "");
	if (c->fn)
		c->fn(c->ctx, what);
	return 0;
}

/* Columns 1 .. n-1 of each scan are the tagged fields (column 0 is the
 * table's name, which msg_init puts first), column n the tag. */
static int field_count(const char *fields)
{
	int n = 0;

	for (; *fields; fields++)
		n += *fields == ',';
	return n;
}

int sq_auth_check_all(struct db *h, void (*fn)(void *, const char *what), void *ctx)
{
	struct sq *db = sq_of(h);
	struct check_ctx c = { .fn = fn, .ctx = ctx };
	int r = 0;

	if (!db->auth)
		return -EACCES;
	sq_lock(db);
	for (c.t = 0; r == 0 && c.t < N_TAGGED; c.t++) {
		c.ncols = field_count(tagged[c.t].fields);
		for (int i = 0; i < c.ncols && i < 16; i++)
			c.cols[i] = i + 1;
		r = sq_query(db, 0, tagged[c.t].scan, row_check, &c, SQ_NOARGS);
	}
	sq_unlock(db);
	return r < 0 ? r : c.bad ? -EIO : 0;
}

/*
 * Instance state: which version of each live secret is current. Rules:
 *  - an instance row holds seq, bumped by every transaction that changes
 *    the (id, version) set of its live secrets, state, a tag over
 *    (instance id, seq) and that set's bucket sums (rowtag.h), and the
 *    sums themselves;
 *  - the state is checked before a transaction changes the set (in full,
 *    or for DB_BRIEF the sums' tag and then each changed row's bucket) and
 *    brought up to date at its commit, so a write never launders a row put
 *    back from an older copy, from versions or from another secret;
 *  - readers compare a row's version with the set, or with its bucket
 *    (fs/vault_read.c).
 */
static const char sql_state_scan[] =
	"SELECT i.seq, i.state, s.id, s.version FROM instances i LEFT JOIN secrets s "
	"ON s.instance_id = i.id WHERE i.id = ?1 ORDER BY s.id";
static const char sql_state_set[] =
	"UPDATE instances SET seq = ?2, state = ?3, sums = ?4 WHERE id = ?1";
static const char sql_instance_seq[] = "SELECT seq FROM instances WHERE id = ?1";

struct scan {
	const struct db_auth *auth;
	int64_t inst, delta, *seq;
	struct rowtag_state c;
	unsigned char stored[DB_MAC_LEN];
	bool first, stored_ok;
	int (*fn)(void *, int64_t, uint64_t);
	void *ctx;
};

static int row_scan(struct sq *db, sqlite3_stmt *st, void *arg)
{
	struct scan *s = arg;
	const void *p;

	if (s->first) {
		*s->seq = sqlite3_column_int64(st, 0) + s->delta;
		p = sqlite3_column_blob(st, 1);
		s->stored_ok = p && sqlite3_column_bytes(st, 1) == DB_MAC_LEN;
		if (s->stored_ok)
			memcpy(s->stored, p, DB_MAC_LEN);
		rowtag_state_begin(&s->c, s->auth, s->inst, *s->seq);
		s->first = false;
	}
	if (sqlite3_column_type(st, 2) == SQLITE_NULL)
		return 0;
	rowtag_state_add(&s->c, sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3));
	return s->fn ? s->fn(s->ctx, sqlite3_column_int64(st, 2),
			     (uint64_t)sqlite3_column_int64(st, 3)) : 0;
}

/* One statement, so one snapshot: seq (plus delta), state and the set;
 * with check, compares the state made with the stored one (-EBADMSG); fn
 * gets each (id, version). */
static int state_scan(struct sq *db, unsigned flags, int64_t inst, const struct db_auth *auth,
		      int64_t *seq, int64_t delta, unsigned char out[DB_MAC_LEN], bool check,
		      int (*fn)(void *, int64_t, uint64_t), void *ctx, struct rowtag_sums *sums)
{
	struct scan s = { .auth = auth, .inst = inst, .delta = delta, .seq = seq,
			  .first = true, .fn = fn, .ctx = ctx };
	int r = sq_query(db, flags, sql_state_scan, row_scan, &s, SQ_ARGS(SQ_I(inst)));

	if (r == 0 && s.first)
		r = -ENOENT;
	if (r == 0) {
		rowtag_state_end(&s.c, out);
		if (sums)
			*sums = s.c.sums;
		if (check && !(s.stored_ok && rowtag_equal(out, s.stored, DB_MAC_LEN)))
			r = -EBADMSG;
	}
	return r;
}

static int state_failed(struct sq *db, int64_t inst)
{
	char what[WHAT_MAX];

	snprintf(what, sizeof(what), "instances row %lld state (its live secrets' versions)",
		 (long long)inst);
	auth_fail(db, what);
	return -EIO;
}

static const char sql_state_row[] = "SELECT seq, state FROM instances WHERE id = ?1";
static const char sql_secret_version[] =
	"SELECT version FROM secrets WHERE id = ?1 AND instance_id = ?2";

struct state_row {
	int64_t *seq;
	unsigned char *state;
};

static int row_state(struct sq *db, sqlite3_stmt *st, void *arg)
{
	struct state_row *s = arg;

	*s->seq = sqlite3_column_int64(st, 0);
	if (sqlite3_column_bytes(st, 1) == DB_MAC_LEN)
		memcpy(s->state, sqlite3_column_blob(st, 1), DB_MAC_LEN);
	return 0;
}

int sq_state_row(struct sq *db, int64_t inst, int64_t *seq, unsigned char state[DB_MAC_LEN])
{
	struct state_row s = { seq, state };

	memset(state, 0, DB_MAC_LEN);
	return sq_query(db, SQ_ONE, sql_state_row, row_state, &s, SQ_ARGS(SQ_I(inst)));
}

static int row_version(struct sq *db, sqlite3_stmt *st, void *out)
{
	*(uint64_t *)out = (uint64_t)sqlite3_column_int64(st, 0);
	return 0;
}

int sq_secret_version(struct sq *db, int64_t inst, int64_t id, uint64_t *version)
{
	int r = sq_query(db, SQ_ONE, sql_secret_version, row_version, version,
			 SQ_ARGS(SQ_I(id), SQ_I(inst)));

	return r == 0 ? 1 : r == -ENOENT ? 0 : r;
}

int sq_state_store(struct sq *db, int64_t inst, int64_t seq,
		   const unsigned char state[DB_MAC_LEN], const struct rowtag_sums *sums)
{
	unsigned char enc[ROWTAG_SUMS_LEN];
	struct db_blob b = { (unsigned char *)state, DB_MAC_LEN }, e = { enc, sizeof(enc) };

	rowtag_sums_encode(sums, enc);
	return sq_change(db, sql_state_set, 1,
			 SQ_ARGS(SQ_I(inst), SQ_I(seq), SQ_B(&b), SQ_B(&e)), NULL, NULL);
}

/* The set the writing connection trusts, when conn's snapshot shows its
 * (seq, state): no scan. -ENOENT when it can't be used, or the caller asks
 * only whether the rows match the state (no fn): that takes the scan. */
static int state_known(struct sq *db, struct sq *conn, int64_t inst, int64_t *seq,
		       int (*fn)(void *, int64_t id, uint64_t version), void *ctx)
{
	unsigned char state[DB_MAC_LEN];
	int r;

	if (!fn || !db->states || !db->auth)
		return -ENOENT;
	r = sq_state_row(conn, inst, seq, state);
	if (r == 0)
		r = sq_states_each(db, inst, *seq, state, fn, ctx);
	return r;
}

static int state_scan_checked(struct sq *db, int64_t inst, int64_t *seq,
			      int (*fn)(void *, int64_t id, uint64_t version), void *ctx)
{
	unsigned char out[DB_MAC_LEN];
	int r;

	if (!db->auth)
		return -EACCES;
	r = state_scan(db, 0, inst, db->auth, seq, 0, out, true, fn, ctx, NULL);
	return r == -EBADMSG ? state_failed(db, inst) : r;
}

/* On a reader where there is one; from the trusted set when the snapshot
 * shows it (with fn), else by the full scan. */
static int state_check(struct sq *db, int64_t inst, int64_t *seq,
		       int (*fn)(void *, int64_t id, uint64_t version), void *ctx)
{
	struct sq *rd = sq_reader_take(db);
	int r;

	if (rd) {
		r = state_known(db, rd, inst, seq, fn, ctx);
		if (r == -ENOENT)
			r = state_scan_checked(rd, inst, seq, fn, ctx);
		sq_reader_give(db, rd);
		return r;
	}
	if (!db->auth)
		return -EACCES;
	if (!sq_in_own_txn(db) && (r = state_known(db, db, inst, seq, fn, ctx)) != -ENOENT)
		return r;
	return state_scan_checked(db, inst, seq, fn, ctx);
}

int sq_state_check(struct db *h, int64_t inst, int64_t *seq,
		   int (*fn)(void *, int64_t id, uint64_t version), void *ctx)
{
	return state_check(sq_of(h), inst, seq, fn, ctx);
}

int sq_instance_seq(struct db *h, int64_t inst, bool latest, int64_t *seq)
{
	struct sq *db = sq_of(h);
	struct sq_cache_mark mark = { 0 };
	int r;

	if (!latest && sq_cache_seq(db, inst, seq))
		return 0;
	if (!latest)
		(void)sq_cache_mark(db, &mark);
	r = sq_query(db, SQ_ONE | (latest ? 0 : SQ_READ), sql_instance_seq, sq_row_int, seq,
		     SQ_ARGS(SQ_I(inst)));
	if (r == 0)
		sq_cache_seq_put(db, &mark, inst, *seq);
	return r;
}

int sq_state_verify(struct sq *db, int64_t inst)
{
	int64_t seq;

	return state_check(db, inst, &seq, NULL, NULL);
}

/* Inside the write transaction: seq + 1 (if bump) and the state of the set
 * as it is now, made with auth. */
int sq_state_update(struct sq *db, int64_t inst, const struct db_auth *auth, bool bump)
{
	unsigned char out[DB_MAC_LEN];
	struct rowtag_sums sums;
	int64_t seq = 0;
	int r;

	if (!auth)
		return -EACCES;
	r = state_scan(db, 0, inst, auth, &seq, bump, out, false, NULL, NULL, &sums);
	if (r == -ENOENT)
		return 0;	/* the instance went in this transaction */
	return r < 0 ? r : sq_state_store(db, inst, seq, out, &sums);
}

/* At the outermost commit: the state of each instance whose live secrets
 * changed, made afresh, and the audit floor raised. */
int sq_states_update(struct sq *db)
{
	int r = 0;

	for (size_t i = 0; r == 0 && i < db->ndirty; i++)
		r = sq_states_commit(db, db->dirty[i]);
	if (r == 0 && db->ndirty)
		r = sq_floor_update(db, db->auth);
	db->ndirty = 0;
	return r;
}

/* Whether any transaction ever changed live secrets (an instance's seq). */
static bool any_write(struct sq *db)
{
	static const char sql[] = "SELECT coalesce(max(seq), 0) FROM instances";
	int64_t top = 1;	/* can't tell: fail safe */

	(void)sq_query(db, SQ_ONE, sql, sq_row_int, &top, SQ_NOARGS);
	return top > 0;
}

/* The audit floor, checked: -ENOENT if none was recorded (missing_ok) or
 * none ever needed to be; -EIO if it fails. */
static int floor_read(struct sq *db, int64_t *floor, bool missing_ok)
{
	struct db_blob b = { 0 };
	int r;

	if (!db->auth)
		return -EACCES;
	r = sq_meta_get(&db->base, ROWTAG_FLOOR_KEY, &b);
	if (r == -ENOENT && !missing_ok && any_write(db)) {
		auth_fail(db, "meta row audit_floor (missing)");
		return -EIO;
	}
	if (r < 0)
		return r;
	r = rowtag_floor_decode(db->auth, &b, floor);
	db_blob_free(&b);
	if (r < 0)
		auth_fail(db, "meta row audit_floor");
	return r;
}

int sq_audit_floor(struct db *h, int64_t *floor)
{
	return floor_read(sq_of(h), floor, false);
}

/*
 * The audit log's floor: the highest entry the log had reached when a
 * write to the live secrets committed, tagged, in meta. Every such commit
 * raises it, so a log whose entries (or head) were removed down below it
 * is seen by `vaultfs audit --verify` even though its chain still holds.
 */
int sq_floor_update(struct sq *db, const struct db_auth *auth)
{
	static const char sql[] = "SELECT coalesce(max(seq), 0) FROM audit";
	unsigned char b[ROWTAG_FLOOR_LEN];
	int64_t floor = 0, top = 0;
	int r = 0;

	if (!auth)
		return -EACCES;
	r = floor_read(db, &floor, true);
	if (r == -ENOENT)
		r = 0;
	if (r < 0)
		return r;
	r = sq_query(db, SQ_ONE, sql, sq_row_int, &top, SQ_NOARGS);
	if (r < 0)
		return r == -ENOENT ? -EPROTO : r;
	rowtag_floor_encode(auth, top > floor ? top : floor, b);
	return sq_meta_set(&db->base, ROWTAG_FLOOR_KEY, b, sizeof(b));
}

struct mac_out {
	unsigned char *out;
	size_t len;
};

static int row_mac(struct sq *db, sqlite3_stmt *st, void *arg)
{
	struct mac_out *m = arg;

	if ((size_t)sqlite3_column_bytes(st, 0) >= m->len)
		memcpy(m->out, sqlite3_column_blob(st, 0), m->len);
	return 0;
}

int sq_audit_entry_mac(struct db *h, int64_t seq, unsigned char *out, size_t len)
{
	static const char sql[] = "SELECT mac FROM audit WHERE seq = ?1";
	struct mac_out m = { out, len };

	return sq_query(sq_of(h), SQ_ONE, sql, row_mac, &m, SQ_ARGS(SQ_I(seq)));
}

void sq_set_auth(struct db *h, const struct db_auth *auth)
{
	struct sq *db = sq_of(h), *rd;

	sq_lock(db);
	db->auth = auth;
	if (sq_auth_register(db) < 0)
		db->auth = NULL;	/* fails closed: rows are refused */
	pthread_mutex_lock(&db->readers_lock);
	for (rd = db->readers; rd; rd = rd->next_reader)
		rd->auth = db->auth;
	pthread_mutex_unlock(&db->readers_lock);
	sq_unlock(db);
}

int sq_state_touch_secret(struct sq *db, int64_t secret_id, bool trash)
{
	static const char live_sql[] = "SELECT instance_id FROM secrets WHERE id = ?1";
	static const char trash_sql[] = "SELECT instance_id FROM trash WHERE secret_id = ?1";
	int64_t inst = 0;
	int r = sq_query(db, SQ_ONE, trash ? trash_sql : live_sql, sq_row_int, &inst,
			 SQ_ARGS(SQ_I(secret_id)));

	if (r == 0)
		r = sq_state_touch(db, inst, false);
	if (r == 0)
		r = sq_states_check_row(db, inst, secret_id);
	return r < 0 ? r : sq_states_note(db, inst, secret_id);
}

struct id_array {
	int64_t *ids;
	size_t n, cap;
};

static int row_id(struct sq *db, sqlite3_stmt *st, void *arg)
{
	struct id_array *a = arg;
	int64_t *p;

	if (a->n == a->cap) {
		p = realloc(a->ids, (a->cap ? a->cap * 2 : 16) * sizeof(*p));
		if (!p)
			return -ENOMEM;
		a->ids = p;
		a->cap = a->cap ? a->cap * 2 : 16;
	}
	a->ids[a->n++] = sqlite3_column_int64(st, 0);
	return 0;
}

int sq_each_instance(struct sq *db, int (*fn)(struct sq *, int64_t, void *), void *ctx)
{
	static const char sql[] = "SELECT id FROM instances ORDER BY id";
	struct id_array a = { 0 };
	int r;

	sq_lock(db);
	r = sq_query(db, 0, sql, row_id, &a, SQ_NOARGS);
	for (size_t i = 0; r == 0 && i < a.n; i++)
		r = fn(db, a.ids[i], ctx);
	sq_unlock(db);
	free(a.ids);
	return r;
}
