/*
 * Row tags. Rules this file keeps:
 *  - the store never holds the key: it encodes a row's fields and asks
 *    auth->mac for the tag;
 *  - the encoding starts with the table's name and types every field
 *    (integer, text, blob, null) with its length, so a tag made for one
 *    table, one row or one field list never fits another;
 *  - a tag is checked before its row is used and before a write replaces
 *    or copies it (dba_check in the statement itself), so a write never
 *    launders a doctored row into a freshly tagged one;
 *  - a row that fails is -EIO, never its content; the failure is reported
 *    once the thread holds no write transaction, so the audit log, which
 *    writes through another connection, never waits for us.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "db_int.h"

#define MSG_MAX 4096	/* a 1024-byte description, two 255-byte names and more */
#define PENDING_MAX 8
#define WHAT_MAX 96

struct msg {
	unsigned char buf[MSG_MAX];
	size_t len;
	bool overflow;
};

static __thread int sql_failed;
static __thread char pending[PENDING_MAX][WHAT_MAX];
static __thread const struct db_auth *pending_auth;
static __thread unsigned npending;

static void put(struct msg *m, const void *p, size_t n)
{
	if (m->overflow || n > sizeof(m->buf) - m->len) {
		m->overflow = true;
		return;
	}
	if (n)
		memcpy(m->buf + m->len, p, n);
	m->len += n;
}

static void put_u64(struct msg *m, uint64_t v)
{
	unsigned char b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (56 - 8 * i));
	put(m, b, sizeof(b));
}

static void put_bytes(struct msg *m, char type, const void *p, size_t n)
{
	put(m, &type, 1);
	put_u64(m, n);
	put(m, p, n);
}

static void put_value(struct msg *m, sqlite3_value *v)
{
	switch (sqlite3_value_type(v)) {
	case SQLITE_INTEGER:
		put(m, "i", 1);
		put_u64(m, (uint64_t)sqlite3_value_int64(v));
		break;
	case SQLITE_TEXT:
		put_bytes(m, 't', sqlite3_value_text(v), (size_t)sqlite3_value_bytes(v));
		break;
	case SQLITE_BLOB:
		put_bytes(m, 'b', sqlite3_value_blob(v), (size_t)sqlite3_value_bytes(v));
		break;
	case SQLITE_FLOAT:
		/* No tagged column holds a real: never equal to anything tagged. */
		m->overflow = true;
		break;
	default:
		put(m, "n", 1);
		break;
	}
}

static void msg_init(struct msg *m, const char *tag)
{
	m->len = 0;
	m->overflow = false;
	put_bytes(m, 's', "vaultfs/row/1", 13);
	put_bytes(m, 's', tag, strlen(tag));
}

/* Constant time: the store's content is the attacker's. */
static bool same_tag(const unsigned char *a, const void *b, size_t blen)
{
	const unsigned char *p = b;
	unsigned char d = 0;

	if (!p || blen != DB_MAC_LEN)
		return false;
	for (size_t i = 0; i < DB_MAC_LEN; i++)
		d |= a[i] ^ p[i];
	return d == 0;
}

static bool msg_ok(const struct db_auth *auth, const struct msg *m, const void *tag,
		   size_t taglen)
{
	unsigned char want[DB_MAC_LEN];

	if (m->overflow)
		return false;
	auth->mac(auth->ctx, m->buf, m->len, want);
	return same_tag(want, tag, taglen);
}

static void report_now(const struct db_auth *auth, const char *what)
{
	if (auth && auth->failed)
		auth->failed(auth->ctx, what);
}

static void auth_fail(struct db *db, const char *what)
{
	char msg[160];

	snprintf(msg, sizeof(msg), "%s fails authentication (tampered or damaged database)",
		 what);
	dbi_set_error(msg);
	if (!dbi_in_own_txn(db)) {
		report_now(dbi_auth(db), what);
		return;
	}
	if (npending < PENDING_MAX) {
		snprintf(pending[npending++], WHAT_MAX, "%s", what);
		pending_auth = dbi_auth(db);
	}
}

void dbi_auth_flush(struct db *db)
{
	unsigned n = npending;

	(void)db;
	npending = 0;
	for (unsigned i = 0; i < n; i++)
		report_now(pending_auth, pending[i]);
}

int dbi_auth_sql_failed(void)
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
	struct db *db = sqlite3_user_data(ctx);
	const struct db_auth *auth = dbi_auth_next(db) ? dbi_auth_next(db) : dbi_auth(db);
	unsigned char tag[DB_MAC_LEN];
	struct msg m;

	if (!auth || argc < 1 || sqlite3_value_type(argv[0]) != SQLITE_TEXT) {
		sqlite3_result_error(ctx, "rows can't be tagged without the vault's key", -1);
		return;
	}
	msg_init(&m, (const char *)sqlite3_value_text(argv[0]));
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
	struct db *db = sqlite3_user_data(ctx);
	const struct db_auth *auth = dbi_auth(db);
	char what[WHAT_MAX];
	const char *tag;
	struct msg m;

	if (argc < 2 || !auth) {
		sqlite3_result_error(ctx, "rows can't be checked without the vault's key", -1);
		return;
	}
	tag = (const char *)sqlite3_value_text(argv[1]);
	msg_init(&m, tag ? tag : "");
	for (int i = 2; i < argc; i++)
		put_value(&m, argv[i]);
	if (msg_ok(auth, &m, sqlite3_value_blob(argv[0]), (size_t)sqlite3_value_bytes(argv[0]))) {
		sqlite3_result_int(ctx, 1);
		return;
	}
	describe(what, sizeof(what), tag ? tag : "?", argv + 2, argc - 2);
	auth_fail(db, what);
	sql_failed = -EIO;
	sqlite3_result_error(ctx, what, -1);
}

int dbi_auth_register(struct db *db)
{
	int rc = sqlite3_create_function(dbi_conn(db), "dba_mac", -1, SQLITE_UTF8, db,
					 sql_mac, NULL, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_create_function(dbi_conn(db), "dba_check", -1, SQLITE_UTF8, db,
					     sql_check, NULL, NULL);
	return rc == SQLITE_OK ? 0 : dbi_rc(db, rc);
}

static bool row_ok(const struct db_auth *auth, sqlite3_stmt *st, const char *tag,
		   const int *cols, int ncols, int maccol)
{
	struct msg m;

	msg_init(&m, tag);
	for (int i = 0; i < ncols; i++)
		put_value(&m, sqlite3_column_value(st, cols[i]));
	return msg_ok(auth, &m, sqlite3_column_blob(st, maccol),
		      (size_t)sqlite3_column_bytes(st, maccol));
}

int dbi_row_verify(struct db *db, sqlite3_stmt *st, const char *tag, const int *cols,
		   int ncols, int maccol, const char *what, int64_t id)
{
	const struct db_auth *auth = dbi_auth(db);
	char desc[WHAT_MAX];

	if (!auth) {
		dbi_set_error("the store was opened without the vault's key: rows can't be "
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
static const struct {
	const char *table, *fields;
} tagged[] = {
	{ "instances", DBA_INSTANCES },
	{ "secrets", DBA_SECRETS },
	{ "versions", DBA_VERSIONS },
	{ "trash", DBA_TRASH },
	{ "secret_attrs", DBA_ATTRS },
};
#define N_TAGGED (sizeof(tagged) / sizeof(tagged[0]))

static int each_table(struct db *db, const char *fmt)
{
	char sql[512];
	int r = 0;

	dbi_lock(db);
	for (size_t i = 0; r == 0 && i < N_TAGGED; i++) {
		snprintf(sql, sizeof(sql), fmt, tagged[i].table, tagged[i].fields,
			 tagged[i].fields);
		r = dbi_exec(db, sql);
	}
	dbi_unlock(db);
	return r;
}

int dbi_auth_check_attached(struct db *db, const char *schema)
{
	char sql[512];
	int r = 0;

	if (!dbi_auth(db))
		return -EACCES;
	for (size_t i = 0; r == 0 && i < N_TAGGED; i++) {
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s.%s WHERE NOT dba_check(mac, %s)",
			 schema, tagged[i].table, tagged[i].fields);
		r = dbi_exec(db, sql);
	}
	return r;
}

static int state_make(struct db *db, int64_t inst, void *ctx)
{
	return dbi_state_update(db, inst, ctx, false);
}

static int state_remake(struct db *db, int64_t inst, void *ctx)
{
	int r = dbi_state_verify(db, inst);

	return r < 0 ? r : dbi_state_update(db, inst, ctx, false);
}

int db_auth_upgrade(struct db *db)
{
	int r;

	if (!dbi_auth(db))
		return -EACCES;
	r = each_table(db, "UPDATE %s SET mac = dba_mac(%s)%.0s");
	if (r == 0)
		r = dbi_state_remake_all(db);
	return r;
}

int dbi_state_remake_all(struct db *db)
{
	int r = dbi_each_instance(db, state_make, (void *)dbi_auth(db));

	return r < 0 ? r : dbi_floor_update(db, dbi_auth(db));
}

int db_auth_rekey(struct db *db, const struct db_auth *next)
{
	int r;

	if (!dbi_auth(db))
		return -EACCES;
	dbi_lock(db);
	r = dbi_each_instance(db, state_remake, (void *)next);
	dbi_set_auth_next(db, next);
	if (r == 0)
		r = each_table(db, "UPDATE %s SET mac = dba_mac(%s) WHERE dba_check(mac, %s)");
	dbi_set_auth_next(db, NULL);
	dbi_unlock(db);
	return r;
}

static int check_table(struct db *db, size_t t, void (*fn)(void *, const char *), void *ctx,
		       bool *bad)
{
	const struct db_auth *auth = dbi_auth(db);
	char sql[512], what[WHAT_MAX];
	sqlite3_stmt *st = NULL;
	int cols[16], n, rc, r = 0;

	snprintf(sql, sizeof(sql), "SELECT %s, mac FROM %s", tagged[t].fields,
		 tagged[t].table);
	rc = sqlite3_prepare_v2(dbi_conn(db), sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return dbi_rc(db, rc);
	n = sqlite3_column_count(st) - 1;	/* the tag's own name comes first */
	for (int i = 1; i < n && i - 1 < 16; i++)
		cols[i - 1] = i;
	while ((r = dbi_step_row(db, st)) == 1) {
		if (row_ok(auth, st, tagged[t].table, cols, n - 1, n))
			continue;
		*bad = true;
		snprintf(what, sizeof(what), "%s row %s%s%s", tagged[t].table,
			 (const char *)sqlite3_column_text(st, 1),
			 t == 2 || t == 4 ? "/" : "",
			 t == 2 || t == 4 ? (const char *)sqlite3_column_text(st, 2) : "");
		if (fn)
			fn(ctx, what);
	}
	sqlite3_finalize(st);
	return r;
}

int db_auth_check_all(struct db *db, void (*fn)(void *, const char *what), void *ctx)
{
	bool bad = false;
	int r = 0;

	if (!dbi_auth(db))
		return -EACCES;
	dbi_lock(db);
	for (size_t t = 0; r == 0 && t < N_TAGGED; t++)
		r = check_table(db, t, fn, ctx, &bad);
	dbi_unlock(db);
	return r < 0 ? r : bad ? -EIO : 0;
}

/*
 * Instance state: which version of each live secret is current. Rules:
 *  - an instance row holds seq, bumped by every transaction that changes
 *    the (id, version) set of its live secrets, and state, a keyed chain
 *    over (instance id, seq) and that set in id order;
 *  - the state is checked before a transaction changes the set and made
 *    afresh at its commit, so a write never launders a row put back from
 *    an older copy, from versions or from another secret;
 *  - readers compare a row's version with the set (fs/vault.c).
 */
#define STATE_CHUNK (MSG_MAX - 64)

struct state_calc {
	const struct db_auth *auth;
	struct msg m;
};

static void state_begin(struct state_calc *c, const struct db_auth *auth, int64_t inst,
			int64_t seq)
{
	c->auth = auth;
	msg_init(&c->m, "state");
	put_u64(&c->m, (uint64_t)inst);
	put_u64(&c->m, (uint64_t)seq);
}

static void state_add(struct state_calc *c, int64_t id, int64_t version)
{
	unsigned char h[DB_MAC_LEN];

	if (c->m.len > STATE_CHUNK) {
		c->auth->mac(c->auth->ctx, c->m.buf, c->m.len, h);
		msg_init(&c->m, "state+");
		put(&c->m, h, sizeof(h));
	}
	put_u64(&c->m, (uint64_t)id);
	put_u64(&c->m, (uint64_t)version);
}

static void state_end(struct state_calc *c, unsigned char out[DB_MAC_LEN])
{
	c->auth->mac(c->auth->ctx, c->m.buf, c->m.len, out);
}

static const char sql_state_scan[] =
	"SELECT i.seq, i.state, s.id, s.version FROM instances i LEFT JOIN secrets s "
	"ON s.instance_id = i.id WHERE i.id = ?1 ORDER BY s.id";
static const char sql_state_set[] =
	"UPDATE instances SET seq = ?2, state = ?3 WHERE id = ?1";
static const char sql_instance_seq[] = "SELECT seq FROM instances WHERE id = ?1";

/* One statement, so one snapshot: seq (plus delta), state and the set;
 * with check, compares the state made with the stored one; fn gets each
 * (id, version). */
static int state_scan(struct db *db, int64_t inst, const struct db_auth *auth, int64_t *seq,
		      int64_t delta, unsigned char out[DB_MAC_LEN], bool check,
		      int (*fn)(void *, int64_t, uint64_t), void *ctx)
{
	struct state_calc c;
	sqlite3_stmt *st;
	const void *stored = NULL;
	size_t stored_len = 0;
	unsigned char stored_buf[DB_MAC_LEN];
	bool first = true;
	int r = 0;

	dbi_lock(db);
	st = dbi_stmt(db, sql_state_scan, &r);
	if (!st)
		goto out;
	sqlite3_bind_int64(st, 1, inst);
	while ((r = dbi_step_row(db, st)) == 1) {
		if (first) {
			*seq = sqlite3_column_int64(st, 0) + delta;
			stored = sqlite3_column_blob(st, 1);
			stored_len = (size_t)sqlite3_column_bytes(st, 1);
			if (stored && stored_len == DB_MAC_LEN)
				memcpy(stored_buf, stored, DB_MAC_LEN);
			state_begin(&c, auth, inst, *seq);
			first = false;
		}
		if (sqlite3_column_type(st, 2) == SQLITE_NULL)
			continue;
		state_add(&c, sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3));
		if (fn && (r = fn(ctx, sqlite3_column_int64(st, 2),
				  (uint64_t)sqlite3_column_int64(st, 3))) != 0)
			break;
	}
	dbi_done(st);
	if (r == 0 && first)
		r = -ENOENT;
	if (r == 0) {
		state_end(&c, out);
		if (check && !(stored && stored_len == DB_MAC_LEN && same_tag(out, stored_buf,
									  DB_MAC_LEN)))
			r = -EBADMSG;
	}
out:
	dbi_unlock(db);
	return r;
}

static int state_failed(struct db *db, int64_t inst)
{
	char what[WHAT_MAX];

	snprintf(what, sizeof(what), "instances row %lld state (its live secrets' versions)",
		 (long long)inst);
	auth_fail(db, what);
	return -EIO;
}

/* The set the writing connection trusts, when conn's snapshot shows its
 * (seq, state): no scan. -ENOENT when it can't be used, or the caller asks
 * only whether the rows match the state (no fn): that takes the scan. */
static int state_known(struct db *db, struct db *conn, int64_t inst, int64_t *seq,
		       int (*fn)(void *, int64_t id, uint64_t version), void *ctx)
{
	unsigned char state[DB_MAC_LEN];
	int r;

	if (!fn || !dbi_states(db) || !dbi_auth(db))
		return -ENOENT;
	r = dbi_state_row(conn, inst, seq, state);
	if (r == 0)
		r = dbi_states_each(db, inst, *seq, state, fn, ctx);
	return r;
}

int db_state_check(struct db *db, int64_t inst, int64_t *seq,
		   int (*fn)(void *, int64_t id, uint64_t version), void *ctx)
{
	const struct db_auth *auth = dbi_auth(db);
	unsigned char out[DB_MAC_LEN];
	struct db *rd;
	int r;

	if ((rd = dbi_reader_take(db))) {
		r = state_known(db, rd, inst, seq, fn, ctx);
		return dbi_reader_give(db, rd, r != -ENOENT ? r :
				       db_state_check(rd, inst, seq, fn, ctx));
	}
	if (!auth)
		return -EACCES;
	if (!dbi_in_own_txn(db) && (r = state_known(db, db, inst, seq, fn, ctx)) != -ENOENT)
		return r;
	r = state_scan(db, inst, auth, seq, 0, out, true, fn, ctx);
	return r == -EBADMSG ? state_failed(db, inst) : r;
}

int db_instance_seq(struct db *db, int64_t inst, int64_t *seq)
{
	struct db *rd;

	if ((rd = dbi_reader_take(db)))
		return dbi_reader_give(db, rd, db_instance_seq_latest(rd, inst, seq));
	return db_instance_seq_latest(db, inst, seq);
}

int db_instance_seq_latest(struct db *db, int64_t inst, int64_t *seq)
{
	sqlite3_stmt *st;
	int r = 0;

	dbi_lock(db);
	st = dbi_stmt(db, sql_instance_seq, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, inst);
		r = dbi_step_row(db, st);
		if (r == 1)
			*seq = sqlite3_column_int64(st, 0);
		r = r == 1 ? 0 : r == 0 ? -ENOENT : r;
		dbi_done(st);
	}
	dbi_unlock(db);
	return r;
}

int dbi_state_verify(struct db *db, int64_t inst)
{
	int64_t seq;

	return db_state_check(db, inst, &seq, NULL, NULL);
}

void dbi_state_make(const struct db_auth *auth, int64_t inst, int64_t seq, const int64_t *ids,
		    const uint64_t *vers, size_t n, unsigned char out[DB_MAC_LEN])
{
	struct state_calc c;

	state_begin(&c, auth, inst, seq);
	for (size_t i = 0; i < n; i++)
		state_add(&c, ids[i], (int64_t)vers[i]);
	state_end(&c, out);
}

static const char sql_state_row[] = "SELECT seq, state FROM instances WHERE id = ?1";
static const char sql_secret_version[] =
	"SELECT version FROM secrets WHERE id = ?1 AND instance_id = ?2";

int dbi_state_row(struct db *db, int64_t inst, int64_t *seq, unsigned char state[DB_MAC_LEN])
{
	sqlite3_stmt *st;
	int r = 0;

	memset(state, 0, DB_MAC_LEN);
	dbi_lock(db);
	st = dbi_stmt(db, sql_state_row, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, inst);
		r = dbi_step_row(db, st);
		if (r == 1) {
			*seq = sqlite3_column_int64(st, 0);
			if (sqlite3_column_bytes(st, 1) == DB_MAC_LEN)
				memcpy(state, sqlite3_column_blob(st, 1), DB_MAC_LEN);
		}
		r = r == 1 ? 0 : r == 0 ? -ENOENT : r;
		dbi_done(st);
	}
	dbi_unlock(db);
	return r;
}

int dbi_secret_version(struct db *db, int64_t inst, int64_t id, uint64_t *version)
{
	sqlite3_stmt *st;
	int r = 0;

	dbi_lock(db);
	st = dbi_stmt(db, sql_secret_version, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_int64(st, 2, inst);
		r = dbi_step_row(db, st);
		if (r == 1)
			*version = (uint64_t)sqlite3_column_int64(st, 0);
		dbi_done(st);
	}
	dbi_unlock(db);
	return r;
}

int dbi_state_store(struct db *db, int64_t inst, int64_t seq,
		    const unsigned char state[DB_MAC_LEN])
{
	struct db_blob b = { (unsigned char *)state, DB_MAC_LEN };
	sqlite3_stmt *st;
	int r = 0;

	dbi_lock(db);
	st = dbi_stmt(db, sql_state_set, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, inst);
		sqlite3_bind_int64(st, 2, seq);
		dbi_bind_blob(st, 3, &b);
		r = dbi_step_change(db, st, 1);
		dbi_done(st);
	}
	dbi_unlock(db);
	return r;
}

/* Inside the write transaction: seq + 1 (if bump) and the state of the set
 * as it is now, made with auth. */
int dbi_state_update(struct db *db, int64_t inst, const struct db_auth *auth, bool bump)
{
	unsigned char out[DB_MAC_LEN];
	struct db_blob b = { out, sizeof(out) };
	sqlite3_stmt *st;
	int64_t seq = 0;
	int r;

	if (!auth)
		return -EACCES;
	r = state_scan(db, inst, auth, &seq, bump, out, false, NULL, NULL);
	if (r == -ENOENT)
		return 0;	/* the instance went in this transaction */
	if (r < 0)
		return r;
	dbi_lock(db);
	st = dbi_stmt(db, sql_state_set, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, inst);
		sqlite3_bind_int64(st, 2, seq);
		dbi_bind_blob(st, 3, &b);
		r = dbi_step_change(db, st, 1);
		dbi_done(st);
	}
	dbi_unlock(db);
	return r;
}

/*
 * The audit log's floor: the highest entry the log had reached when a
 * write to the live secrets committed, tagged, in meta. Every such commit
 * raises it, so a log whose entries (or head) were removed down below it
 * is seen by `vaultfs audit --verify` even though its chain still holds.
 */
#define FLOOR_KEY "audit_floor"

static void floor_tag(const struct db_auth *auth, int64_t floor, unsigned char out[DB_MAC_LEN])
{
	struct msg m;

	msg_init(&m, FLOOR_KEY);
	put_u64(&m, (uint64_t)floor);
	auth->mac(auth->ctx, m.buf, m.len, out);
}

/* Whether any transaction ever changed live secrets (an instance's seq). */
static bool db_any_write(struct db *db)
{
	static const char sql[] = "SELECT coalesce(max(seq), 0) FROM instances";
	sqlite3_stmt *st;
	bool any = true;	/* can't tell: fail safe */
	int r = 0;

	dbi_lock(db);
	st = dbi_stmt(db, sql, &r);
	if (st) {
		if (dbi_step_row(db, st) == 1)
			any = sqlite3_column_int64(st, 0) > 0;
		dbi_done(st);
	}
	dbi_unlock(db);
	return any;
}

static int floor_read(struct db *db, int64_t *floor, bool missing_ok);

int db_audit_floor(struct db *db, int64_t *floor)
{
	return floor_read(db, floor, false);
}

static int floor_read(struct db *db, int64_t *floor, bool missing_ok)
{
	const struct db_auth *auth = dbi_auth(db);
	unsigned char want[DB_MAC_LEN];
	struct db_blob b = { 0 };
	uint64_t v = 0;
	int r;

	if (!auth)
		return -EACCES;
	r = db_meta_get(db, FLOOR_KEY, &b);
	if (r == -ENOENT && !missing_ok && db_any_write(db)) {
		auth_fail(db, "meta row audit_floor (missing)");
		return -EIO;
	}
	if (r < 0)
		return r;
	if (b.len != 8 + DB_MAC_LEN) {
		db_blob_free(&b);
		auth_fail(db, "meta row audit_floor");
		return -EIO;
	}
	for (int i = 0; i < 8; i++)
		v = v << 8 | b.data[i];
	floor_tag(auth, (int64_t)v, want);
	r = same_tag(want, b.data + 8, DB_MAC_LEN) ? 0 : -EIO;
	db_blob_free(&b);
	if (r < 0) {
		auth_fail(db, "meta row audit_floor");
		return r;
	}
	*floor = (int64_t)v;
	return 0;
}

int dbi_floor_update(struct db *db, const struct db_auth *auth)
{
	static const char sql[] = "SELECT coalesce(max(seq), 0) FROM audit";
	unsigned char b[8 + DB_MAC_LEN];
	int64_t floor = 0, top = 0;
	sqlite3_stmt *st;
	int r = 0;

	if (!auth)
		return -EACCES;
	r = floor_read(db, &floor, true);
	if (r == -ENOENT)
		r = 0;
	if (r < 0)
		return r;
	dbi_lock(db);
	st = dbi_stmt(db, sql, &r);
	if (st) {
		r = dbi_step_row(db, st);
		if (r == 1)
			top = sqlite3_column_int64(st, 0);
		r = r == 1 ? 0 : r == 0 ? -EPROTO : r;
		dbi_done(st);
	}
	dbi_unlock(db);
	if (r < 0)
		return r;
	if (top > floor)
		floor = top;
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)floor >> (56 - 8 * i));
	floor_tag(auth, floor, b + 8);
	return db_meta_set(db, FLOOR_KEY, b, sizeof(b));
}

int db_audit_entry_mac(struct db *db, int64_t seq, unsigned char *out, size_t len)
{
	static const char sql[] = "SELECT mac FROM audit WHERE seq = ?1";
	sqlite3_stmt *st;
	int r = 0;

	dbi_lock(db);
	st = dbi_stmt(db, sql, &r);
	if (st) {
		sqlite3_bind_int64(st, 1, seq);
		r = dbi_step_row(db, st);
		if (r == 1 && (size_t)sqlite3_column_bytes(st, 0) >= len)
			memcpy(out, sqlite3_column_blob(st, 0), len);
		r = r == 1 ? 0 : r == 0 ? -ENOENT : r;
		dbi_done(st);
	}
	dbi_unlock(db);
	return r;
}
