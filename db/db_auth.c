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

#define MSG_MAX 1024
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

int db_auth_upgrade(struct db *db)
{
	if (!dbi_auth(db))
		return -EACCES;
	return each_table(db, "UPDATE %s SET mac = dba_mac(%s)%.0s");
}

int db_auth_rekey(struct db *db, const struct db_auth *next)
{
	int r;

	if (!dbi_auth(db))
		return -EACCES;
	dbi_lock(db);
	dbi_set_auth_next(db, next);
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
