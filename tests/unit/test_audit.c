/* The audit log (fs/audit.h): the chain, its verification, pruning, and
 * the background writer. Tampering is done with plain SQL, as an attacker
 * with the database file would. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixture.h"
#include <sodium.h>
#include <sqlite3.h>

#include "../../crypto/seal.h"
#include "../../crypto/secmem.h"
#include "../../db/db.h"
#include "../../db/db_audit.h"
#include "test_auth.h"
#include "../../fs/audit.h"

struct fx {
	struct tmpdir tmp;
	char path[128];
	struct db *db;
	struct secbuf *key;
	struct daemon_conf conf;
	struct audit *a;
};

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if (!fx || secmem_init() < 0)
		return -1;
	if (tmpdir_make(&fx->tmp, "audit") < 0)
		return -1;
	snprintf(fx->path, sizeof(fx->path), "%s/vault.db", fx->tmp.path);
	if (db_open(&fx->db, fx->path, DB_CREATE) < 0 || secbuf_new(&fx->key, 32) < 0)
		return -1;
	randombytes_buf(fx->key->data, 32);
	fx->key->len = 32;
	fx->conf.audit = true;
	if (audit_open(&fx->a, fx->path, fx->key, &fx->conf) < 0)
		return -1;
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	audit_close(fx->a);
	db_close(fx->db);
	secbuf_free(fx->key);
	tmpdir_remove(&fx->tmp);
	free(fx);
	return 0;
}

static const struct audit_who alice = { 1001, 1002, 4242, "cat" };

/* n entries about keys K1..Kn, alternating reads and writes. */
static void record_n(struct fx *fx, int n)
{
	char key[16];

	for (int i = 1; i <= n; i++) {
		snprintf(key, sizeof(key), "K%d", i);
		audit_record(fx->a, &alice, i % 2 ? AUDIT_READ : AUDIT_WRITE, "billing", key,
			     i % 3 ? 0 : -EACCES, i % 3 ? NULL : "not in read_users");
	}
}

static void sql(struct fx *fx, const char *stmt)
{
	sqlite3 *c;
	char *msg = NULL;

	assert_int_equal(sqlite3_open(fx->path, &c), SQLITE_OK);
	if (sqlite3_exec(c, stmt, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", stmt, msg);
	sqlite3_close(c);
}

static int64_t sql_int(struct fx *fx, const char *query)
{
	sqlite3 *c;
	sqlite3_stmt *st;
	int64_t v = -1;

	assert_int_equal(sqlite3_open(fx->path, &c), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(c, query, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(c);
	return v;
}

/* Verifies; returns the first bad seq (0 if intact). */
static int64_t verify(struct fx *fx, char *reason, size_t size)
{
	struct audit_verdict v;

	assert_int_equal(audit_verify(fx->a, &v), 0);
	if (reason)
		snprintf(reason, size, "%s", v.reason);
	audit_verdict_free(&v);
	assert_true(v.ok == (v.bad_seq == 0));
	return v.bad_seq;
}

struct collect {
	int n;
	struct db_audit_row last;
};

static int collect_cb(void *ctx, const struct db_audit_row *r)
{
	struct collect *c = ctx;

	c->n++;
	c->last = *r;
	return 0;
}

static void test_entries_stored(void **state)
{
	struct fx *fx = *state;
	struct db_audit_filter f = { .since_ns = INT64_MIN };
	struct collect c = { 0 };

	record_n(fx, 6);
	assert_int_equal(audit_each(fx->a, &f, collect_cb, &c), 0);
	assert_int_equal(c.n, 6);
	assert_int_equal(c.last.seq, 6);
	assert_int_equal(c.last.uid, 1001);
	assert_int_equal(c.last.gid, 1002);
	assert_int_equal(c.last.pid, 4242);
	assert_string_equal(c.last.comm, "cat");
	assert_string_equal(c.last.instance, "billing");
	assert_string_equal(c.last.key, "K6");
	assert_string_equal(c.last.op, "write");
	assert_int_equal(c.last.result, EACCES);
	assert_string_equal(c.last.detail, "not in read_users");
	f.key = "K3";
	c.n = 0;
	assert_int_equal(audit_each(fx->a, &f, collect_cb, &c), 0);
	assert_int_equal(c.n, 1);
	f.key = NULL;
	f.instance = "other";
	c.n = 0;
	assert_int_equal(audit_each(fx->a, &f, collect_cb, &c), 0);
	assert_int_equal(c.n, 0);
	assert_int_equal(verify(fx, NULL, 0), 0);
}

static void test_empty_log_verifies(void **state)
{
	struct fx *fx = *state;

	assert_int_equal(verify(fx, NULL, 0), 0);
}

static void test_deleted_entry(void **state)
{
	struct fx *fx = *state;
	char why[256];

	record_n(fx, 6);
	sql(fx, "DELETE FROM audit WHERE seq = 3");
	assert_int_equal(verify(fx, why, sizeof(why)), 3);
	assert_string_equal(why, "entry 3 is missing (the log goes from entry 2 to entry 4)");
}

static void test_edited_entry(void **state)
{
	struct fx *fx = *state;
	char why[256];

	record_n(fx, 6);
	sql(fx, "UPDATE audit SET uid = 0 WHERE seq = 4");
	assert_int_equal(verify(fx, why, sizeof(why)), 4);
	assert_non_null(strstr(why, "entry 4 was altered"));
}

static void test_edited_mac_too(void **state)
{
	struct fx *fx = *state;

	record_n(fx, 6);
	/* A forger without the key can only copy MACs around. */
	sql(fx, "UPDATE audit SET result = 0, mac = (SELECT mac FROM audit WHERE seq = 2) "
		"WHERE seq = 3");
	assert_int_equal(verify(fx, NULL, 0), 3);
}

static void test_swapped_entries(void **state)
{
	struct fx *fx = *state;

	record_n(fx, 6);
	/* Swap rows 2 and 5 whole (every column but seq). */
	sql(fx, "UPDATE audit SET seq = -2 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 5;"
		"UPDATE audit SET seq = 5 WHERE seq = -2;");
	assert_int_equal(verify(fx, NULL, 0), 2);
}

static void test_cut_off_end(void **state)
{
	struct fx *fx = *state;
	char why[256];

	record_n(fx, 6);
	sql(fx, "DELETE FROM audit WHERE seq >= 5");
	assert_int_equal(verify(fx, why, sizeof(why)), 5);
	assert_string_equal(why, "entry 5 is missing (entries 5 to 6 were cut off the end)");
	/* New entries continue after the head: the gap stays visible. */
	record_n(fx, 1);
	assert_int_equal(sql_int(fx, "SELECT max(seq) FROM audit"), 7);
	assert_int_equal(verify(fx, NULL, 0), 5);
}

static void test_cut_off_start(void **state)
{
	struct fx *fx = *state;

	record_n(fx, 4);
	sql(fx, "DELETE FROM audit WHERE seq <= 2");
	assert_int_equal(verify(fx, NULL, 0), 1);
}

static void test_head_removed(void **state)
{
	struct fx *fx = *state;
	char why[256];

	record_n(fx, 3);
	sql(fx, "DELETE FROM meta WHERE key = 'audit_head'");
	assert_int_equal(verify(fx, why, sizeof(why)), 3);
	assert_non_null(strstr(why, "head record"));
}

static void test_prune_keeps_chain(void **state)
{
	struct fx *fx = *state;
	int64_t upto = -1;

	audit_close(fx->a);
	fx->conf.audit_retention = 3600;
	assert_int_equal(audit_open(&fx->a, fx->path, fx->key, &fx->conf), 0);
	record_n(fx, 6);
	/* Nothing is an hour old yet. */
	assert_int_equal(audit_prune(fx->a, db_now_ns(), &upto), 0);
	assert_int_equal(upto, 0);
	/* Age entries 1-4 by two hours. */
	sql(fx, "UPDATE audit SET time = time - 7200000000000 WHERE seq <= 4");
	/* That broke their MACs, but pruning removes them with the anchor... */
	assert_int_equal(audit_prune(fx->a, db_now_ns(), &upto), 0);
	assert_int_equal(upto, 4);
	assert_int_equal(sql_int(fx, "SELECT min(seq) FROM audit"), 5);
	/* ...and what is left verifies from the anchor on. */
	assert_int_equal(verify(fx, NULL, 0), 0);
	record_n(fx, 2);
	assert_int_equal(verify(fx, NULL, 0), 0);
	/* A forged anchor, or none, is detected. */
	sql(fx, "UPDATE meta SET value = zeroblob(72) WHERE key = 'audit_anchor'");
	assert_int_equal(verify(fx, NULL, 0), 1);
	sql(fx, "DELETE FROM meta WHERE key = 'audit_anchor'");
	assert_int_equal(verify(fx, NULL, 0), 1);
}

static struct secbuf *random_key(void)
{
	struct secbuf *k = NULL;

	assert_int_equal(secbuf_new(&k, 32), 0);
	randombytes_buf(k->data, 32);
	k->len = 32;
	return k;
}

static void test_wrong_key_refused(void **state)
{
	struct fx *fx = *state;
	struct secbuf *other = random_key();

	record_n(fx, 2);
	audit_close(fx->a);
	fx->a = NULL;
	assert_int_equal(audit_open(&fx->a, fx->path, other, &fx->conf), -EKEYREJECTED);
	assert_null(fx->a);
	secbuf_free(other);
	/* A chain key swapped in by someone without the master key: refused too. */
	sql(fx, "UPDATE meta SET value = zeroblob(73) WHERE key = 'audit_key'");
	assert_int_equal(audit_open(&fx->a, fx->path, fx->key, &fx->conf), -EKEYREJECTED);
	sql(fx, "UPDATE meta SET value = zeroblob(5) WHERE key = 'audit_key'");
	assert_int_equal(audit_open(&fx->a, fx->path, fx->key, &fx->conf), -EKEYREJECTED);
}

static void test_reseal_for_new_master(void **state)
{
	struct fx *fx = *state;
	struct secbuf *next = random_key();
	unsigned char *blob = NULL;
	size_t len = 0;
	sqlite3 *c;
	sqlite3_stmt *st;

	record_n(fx, 5);
	assert_int_equal(audit_reseal_key(fx->a, next, &blob, &len), 0);
	/* What rotation does, in its own transaction on the store. */
	assert_int_equal(sqlite3_open(fx->path, &c), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(c, "UPDATE meta SET value = ?1 WHERE key = ?2", -1,
					    &st, NULL), SQLITE_OK);
	sqlite3_bind_blob(st, 1, blob, (int)len, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, AUDIT_META_KEY, -1, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
	sqlite3_close(c);
	free(blob);
	audit_close(fx->a);
	fx->a = NULL;
	assert_int_equal(audit_open(&fx->a, fx->path, fx->key, &fx->conf), -EKEYREJECTED);
	assert_int_equal(audit_open(&fx->a, fx->path, next, &fx->conf), 0);
	secbuf_free(next);
	/* The old entries verify under the new master key, and the chain goes on. */
	assert_int_equal(verify(fx, NULL, 0), 0);
	record_n(fx, 2);
	assert_int_equal(verify(fx, NULL, 0), 0);
}

static void test_background_writer(void **state)
{
	struct fx *fx = *state;

	assert_int_equal(audit_start(fx->a), 0);
	/* More than the queue holds, so producers also wait for room. */
	for (int i = 0; i < 3000; i++)
		audit_record(fx->a, &alice, AUDIT_READ, "billing", "K", 0, NULL);
	/* A denial waits until it is stored: everything before it is too. */
	audit_record(fx->a, &alice, AUDIT_READ, "billing", "K", -EACCES, "root_read = no");
	assert_int_equal(sql_int(fx, "SELECT count(*) FROM audit"), 3001);
	audit_record(fx->a, &alice, AUDIT_READ, "billing", "K", 0, NULL);
	audit_close(fx->a);	/* stores what is queued */
	fx->a = NULL;
	assert_int_equal(sql_int(fx, "SELECT count(*) FROM audit"), 3002);
	assert_int_equal(audit_open(&fx->a, fx->path, fx->key, &fx->conf), 0);
	assert_int_equal(verify(fx, NULL, 0), 0);
}

/* Repeats of an event within the window are one entry with a count; the
 * chain covers the count and the first time. */
static void test_folding(void **state)
{
	struct fx *fx = *state;
	struct audit_who bob = alice;
	char stmt[128];
	int64_t seq;

	fx->conf.audit_fold = 60;
	audit_close(fx->a);
	assert_int_equal(audit_open(&fx->a, fx->path, fx->key, &fx->conf), 0);
	assert_int_equal(audit_start(fx->a), 0);
	bob.uid = 1003;
	for (int i = 0; i < 500; i++) {
		bob.pid = 5000 + i;	/* a new process each time: still one kind */
		audit_record(fx->a, &alice, AUDIT_READ, "billing", "K", 0, NULL);
		audit_record(fx->a, &bob, AUDIT_READ, "billing", "K", -EACCES, "not in read_users");
	}
	audit_record(fx->a, &bob, AUDIT_READ, "billing", "K2", -EACCES, "not in read_users");
	audit_close(fx->a);	/* stores the open windows */
	fx->a = NULL;
	/* Each kind: its first event, then one entry for the other 499. */
	assert_int_equal(sql_int(fx, "SELECT count(*) FROM audit"), 5);
	assert_int_equal(sql_int(fx, "SELECT sum(count) FROM audit WHERE uid = 1001"), 500);
	assert_int_equal(sql_int(fx, "SELECT sum(count) FROM audit WHERE uid = 1003 "
				 "AND key = 'K'"), 500);
	assert_int_equal(sql_int(fx, "SELECT count(*) FROM audit WHERE count = 499 "
				 "AND first_time < time"), 2);
	assert_int_equal(sql_int(fx, "SELECT pid FROM audit WHERE uid = 1003 AND count = 499"),
			 5001);
	assert_int_equal(audit_open(&fx->a, fx->path, fx->key, &fx->conf), 0);
	assert_int_equal(verify(fx, NULL, 0), 0);
	seq = sql_int(fx, "SELECT seq FROM audit WHERE uid = 1003 AND count = 499");
	snprintf(stmt, sizeof(stmt), "UPDATE audit SET count = 1 WHERE seq = %lld", (long long)seq);
	sql(fx, stmt);
	assert_int_equal(verify(fx, NULL, 0), seq);
	snprintf(stmt, sizeof(stmt), "UPDATE audit SET count = 499 WHERE seq = %lld",
		 (long long)seq);
	sql(fx, stmt);
	assert_int_equal(verify(fx, NULL, 0), 0);
	snprintf(stmt, sizeof(stmt), "UPDATE audit SET first_time = first_time - 1 WHERE seq = "
		 "%lld", (long long)seq);
	sql(fx, stmt);
	assert_int_equal(verify(fx, NULL, 0), seq);
}

/* A change's entry goes in the change's transaction: rolled back with it,
 * committed with it, and chained with entries stored on the log's own
 * connection. */
static void test_entry_in_transaction(void **state)
{
	struct fx *fx = *state;
	struct audit_entry e = { .who = &alice, .op = AUDIT_WRITE, .instance = "billing",
				 .key = "K" };

	record_n(fx, 2);
	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(audit_record_txn(fx->a, fx->db, &e), 0);
	db_rollback(fx->db);
	assert_int_equal(sql_int(fx, "SELECT count(*) FROM audit"), 2);
	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(audit_record_txn(fx->a, fx->db, &e), 0);
	assert_int_equal(db_commit(fx->db), 0);
	assert_int_equal(sql_int(fx, "SELECT count(*) FROM audit"), 3);
	assert_int_equal(sql_int(fx, "SELECT seq FROM audit WHERE key = 'K'"), 3);
	record_n(fx, 2);
	assert_int_equal(verify(fx, NULL, 0), 0);
	assert_int_equal(audit_record_txn(fx->a, fx->db, NULL), 0);
	assert_int_equal(audit_record_txn(NULL, fx->db, &e), 0);
}

static void test_authfail_caller(void **state)
{
	struct fx *fx = *state;
	struct db_audit_filter f = { .since_ns = INT64_MIN };
	struct collect c = { 0 };

	audit_set_caller(&alice);
	audit_authfail(fx->a, "billing", "K");
	audit_set_caller(NULL);
	audit_authfail(fx->a, "billing", "K2");
	assert_int_equal(audit_each(fx->a, &f, collect_cb, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.last.op, "authfail");
	assert_int_equal(c.last.result, EBADMSG);
	assert_int_equal(c.last.pid, getpid());	/* no caller set: this process */
	assert_int_equal(sql_int(fx, "SELECT uid FROM audit WHERE seq = 1"), 1001);
}

static void test_rotate_master(void **state)
{
	struct fx *fx = *state;
	struct secbuf *master = random_key(), *wrap = NULL;

	record_n(fx, 4);
	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(audit_rotate_master(fx->db, fx->key, master), 0);
	assert_int_equal(db_commit(fx->db), 0);
	audit_close(fx->a);
	fx->a = NULL;
	assert_int_equal(audit_open(&fx->a, fx->path, fx->key, &fx->conf), -EKEYREJECTED);
	assert_int_equal(seal_derive(&wrap, master->data, SEAL_SUBKEY_AUDIT), 0);
	assert_int_equal(audit_open(&fx->a, fx->path, wrap, &fx->conf), 0);
	assert_int_equal(verify(fx, NULL, 0), 0);
	/* From a key that does not open it: refused, nothing written. */
	assert_int_equal(audit_rotate_master(fx->db, fx->key, master), -EKEYREJECTED);
	secbuf_free(wrap);
	secbuf_free(master);
}

static void test_rotate_master_without_log(void **state)
{
	struct fx *fx = *state;
	struct secbuf *master = random_key();

	sql(fx, "DELETE FROM meta WHERE key = 'audit_key'");
	assert_int_equal(audit_rotate_master(fx->db, fx->key, master), 0);
	secbuf_free(master);
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_entries_stored),
		FX_TEST(test_empty_log_verifies),
		FX_TEST(test_deleted_entry),
		FX_TEST(test_edited_entry),
		FX_TEST(test_edited_mac_too),
		FX_TEST(test_swapped_entries),
		FX_TEST(test_cut_off_end),
		FX_TEST(test_cut_off_start),
		FX_TEST(test_head_removed),
		FX_TEST(test_prune_keeps_chain),
		FX_TEST(test_wrong_key_refused),
		FX_TEST(test_reseal_for_new_master),
		FX_TEST(test_rotate_master),
		FX_TEST(test_rotate_master_without_log),
		FX_TEST(test_background_writer),
		FX_TEST(test_authfail_caller),
		FX_TEST(test_entry_in_transaction),
		FX_TEST(test_folding),
	};

	return cmocka_run_group_tests_name("audit", tests, NULL, NULL);
}
