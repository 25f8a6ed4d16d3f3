/* Row tags: the keyed MAC (crypto/mac.h) and the store's use of it
 * (rowtag.c, sqlite_auth.c): a tag made for one row, table or key never fits another. */
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
#include <sqlite3.h>

#include "../../crypto/mac.h"
#include "../../crypto/secmem.h"
#include "../../db/db.h"
#include "../../db/db_attrs.h"
#include "../../db/db_versions.h"
#include "../../db/rowtag.h"
#include "test_auth.h"

static const unsigned char key1[MAC_KEY_LEN] = "first 32-byte key for row tags!";
static const unsigned char key2[MAC_KEY_LEN] = "other 32-byte key for row tags!";
static const unsigned char msg[] = "secrets|12|3|K|0|0|384|2|8|0";

static void test_mac_known_properties(void **state)
{
	unsigned char a[MAC_LEN], b[MAC_LEN], c[MAC_LEN];

	mac_compute(a, key1, msg, sizeof(msg));
	mac_compute(b, key1, msg, sizeof(msg));
	mac_compute(c, key2, msg, sizeof(msg));
	assert_memory_equal(a, b, MAC_LEN);
	assert_memory_not_equal(a, c, MAC_LEN);
	assert_true(mac_verify(a, MAC_LEN, key1, msg, sizeof(msg)));
	assert_false(mac_verify(a, MAC_LEN, key2, msg, sizeof(msg)));
	assert_false(mac_verify(a, MAC_LEN - 1, key1, msg, sizeof(msg)));
	assert_false(mac_verify(NULL, 0, key1, msg, sizeof(msg)));
	assert_false(mac_verify(a, MAC_LEN, key1, msg, sizeof(msg) - 1));
	for (size_t i = 0; i < MAC_LEN; i++) {
		a[i] ^= 1;
		assert_false(mac_verify(a, MAC_LEN, key1, msg, sizeof(msg)));
		a[i] ^= 1;
	}
}

struct fx {
	char dir[64], path[96];
	struct db *db;
	int64_t inst;
};

static const struct db_blob wrap1 = { (unsigned char *)"wrapped-key", 11 };
static const struct db_blob blob1 = { (unsigned char *)"sealed-bytes", 12 };

static int fx_setup(void **state)
{
	struct db_instance in = { .uid = 0, .gid = 0, .mode = 0700, .generation = 1 };
	struct db_secret s = { .uid = 0, .gid = 0, .mode = 0600, .version = 1, .size = 3 };
	struct fx *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/vaultfs-test-mac-XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	snprintf(fx->path, sizeof(fx->path), "%s/vault.db", fx->dir);
	snprintf(in.name, sizeof(in.name), "app");
	snprintf(s.name, sizeof(s.name), "K");
	if (db_open(&fx->db, fx->path, DB_CREATE) || db_instance_create(fx->db, &in, &wrap1))
		return -1;
	s.instance_id = fx->inst = in.id;
	if (db_secret_insert(fx->db, &s, &blob1))
		return -1;
	snprintf(s.name, sizeof(s.name), "OTHER");
	s.mode = 0644;
	if (db_secret_insert(fx->db, &s, &blob1))
		return -1;
	*state = fx;
	return 0;
}

/* The same store opened again as a short-lived writer (vaultfs set) is:
 * its writes check their rows by bucket against the tagged sums. */
static int fx_setup_brief(void **state)
{
	struct fx *fx;

	if (fx_setup(state))
		return -1;
	fx = *state;
	db_close(fx->db);
	return db_open(&fx->db, fx->path, DB_BRIEF) ? -1 : 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;
	char p[128];

	db_close(fx->db);
	unlink(fx->path);
	snprintf(p, sizeof(p), "%s-wal", fx->path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", fx->path);
	unlink(p);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

/* Changes the file as someone without the key would. */
static void raw_sql(struct fx *fx, const char *sql)
{
	sqlite3 *c;

	assert_int_equal(sqlite3_open(fx->path, &c), SQLITE_OK);
	assert_int_equal(sqlite3_exec(c, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(c);
}

static void test_row_reads_check_tags(void **state)
{
	struct fx *fx = *state;
	struct db_secret s;
	unsigned before = test_row_failures;

	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &s), 0);
	assert_int_equal(s.mode, 0600);
	raw_sql(fx, "UPDATE secrets SET mode = 438 WHERE name = 'K'");
	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &s), -EIO);
	assert_non_null(strstr(db_errmsg(fx->db), "secrets row"));
	assert_int_equal(test_row_failures, before + 1);
	/* Writes that replace the row check it first: no laundering. */
	s.id = 1;
	assert_int_equal(db_secret_set_attr(fx->db, 1, 0, 0, 0400, 1), -EIO);
	raw_sql(fx, "UPDATE secrets SET mode = 384 WHERE name = 'K'");
	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &s), 0);
}

static void test_tag_of_another_row_does_not_fit(void **state)
{
	struct fx *fx = *state;
	struct db_secret s;

	/* OTHER's mode and its tag copied onto K: the tag binds the id. */
	raw_sql(fx, "UPDATE secrets SET (mode, mac) = (SELECT mode, mac FROM secrets "
		    "WHERE name = 'OTHER') WHERE name = 'K'");
	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &s), -EIO);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "OTHER", &s), 0);
}

static void test_without_auth_rows_are_refused(void **state)
{
	struct fx *fx = *state;
	struct db *raw;
	struct db_secret s;

	assert_int_equal(test_db_open(&raw, fx->path, 0), 0);
	db_set_auth(raw, NULL);
	assert_int_equal(db_secret_find(raw, fx->inst, "K", &s), -EACCES);
	db_close(raw);
}

static void test_check_all_names_rows(void **state)
{
	struct fx *fx = *state;
	unsigned before = test_row_failures;

	assert_int_equal(db_auth_check_all(fx->db, test_row_failed, NULL), 0);
	raw_sql(fx, "UPDATE instances SET uid = 1000");
	assert_int_equal(db_auth_check_all(fx->db, test_row_failed, NULL), -EIO);
	assert_int_equal(test_row_failures, before + 1);
}

static void test_state_refuses_older_version(void **state)
{
	struct fx *fx = *state;
	struct db_secret s;
	int64_t seq0, seq1;

	assert_int_equal(db_instance_seq(fx->db, fx->inst, &seq0), 0);
	assert_int_equal(db_state_check(fx->db, fx->inst, &seq0, NULL, NULL), 0);
	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &s), 0);
	s.version = 2;
	assert_int_equal(db_secret_set_value(fx->db, &s, &blob1), 0);
	assert_int_equal(db_commit(fx->db), 0);
	assert_int_equal(db_state_check(fx->db, fx->inst, &seq1, NULL, NULL), 0);
	assert_true(seq1 > seq0);
	/* The row says version 1 again: the state says 2 (its tag fails too;
	 * the state alone sees it). */
	raw_sql(fx, "UPDATE secrets SET version = 1 WHERE name = 'K'");
	assert_int_equal(db_state_check(fx->db, fx->inst, &seq1, NULL, NULL), -EIO);
}

/* The writer makes each new state from the set it verified and the rows
 * it changed (sqlite_state.c), without reading the instance again: after
 * every kind of change, alone and several in one transaction, the full
 * check of the rows, here and on a connection that never wrote, agrees. */
static void full_check_agrees(struct fx *fx)
{
	struct db *other = NULL;
	int64_t seq, seq2;

	assert_int_equal(db_state_check(fx->db, fx->inst, &seq, NULL, NULL), 0);
	assert_int_equal(db_open(&other, fx->path, 0), 0);
	assert_int_equal(db_state_check(other, fx->inst, &seq2, NULL, NULL), 0);
	assert_int_equal(seq, seq2);
	db_close(other);
}

static void test_states_made_in_memory_match_the_rows(void **state)
{
	struct fx *fx = *state;
	struct db_secret s = { .uid = 0, .gid = 0, .mode = 0600, .version = 1, .size = 3 };
	struct db_secret k, o;

	s.instance_id = fx->inst;
	full_check_agrees(fx);
	for (int i = 0; i < 40; i++) {
		snprintf(s.name, sizeof(s.name), "N%02d", i);
		assert_int_equal(db_secret_insert(fx->db, &s, &blob1), 0);
	}
	full_check_agrees(fx);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &k), 0);
	k.version++;
	assert_int_equal(db_secret_set_value(fx->db, &k, &blob1), 0);
	full_check_agrees(fx);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "N07", &o), 0);
	assert_int_equal(db_secret_delete(fx->db, o.id), 0);
	full_check_agrees(fx);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "N08", &o), 0);
	assert_int_equal(db_version_archive(fx->db, o.id, true, 10), 0);
	assert_int_equal(db_trash_put(fx->db, &o, db_now_ns(), 0), 0);
	full_check_agrees(fx);
	assert_int_equal(db_trash_restore(fx->db, o.id, db_now_ns()), 0);
	full_check_agrees(fx);
	/* Several changes in one transaction, one of them twice, and a new
	 * key written again before the commit. */
	assert_int_equal(db_begin(fx->db), 0);
	k.version++;
	assert_int_equal(db_secret_set_value(fx->db, &k, &blob1), 0);
	k.version++;
	assert_int_equal(db_secret_set_value(fx->db, &k, &blob1), 0);
	snprintf(s.name, sizeof(s.name), "LATE");
	assert_int_equal(db_secret_insert(fx->db, &s, &blob1), 0);
	s.version = 2;
	assert_int_equal(db_secret_set_value(fx->db, &s, &blob1), 0);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "N09", &o), 0);
	assert_int_equal(db_secret_delete(fx->db, o.id), 0);
	assert_int_equal(db_commit(fx->db), 0);
	full_check_agrees(fx);
	/* A rolled back transaction leaves the trusted state as it was. */
	assert_int_equal(db_begin(fx->db), 0);
	k.version++;
	assert_int_equal(db_secret_set_value(fx->db, &k, &blob1), 0);
	db_rollback(fx->db);
	full_check_agrees(fx);
	k.version--;
	/* Another writer's commit: this one's next write checks afresh. */
	{
		struct db *other = NULL;

		assert_int_equal(db_open(&other, fx->path, 0), 0);
		assert_int_equal(db_secret_find(other, fx->inst, "N10", &o), 0);
		o.version++;
		assert_int_equal(db_secret_set_value(other, &o, &blob1), 0);
		db_close(other);
	}
	k.version++;
	assert_int_equal(db_secret_set_value(fx->db, &k, &blob1), 0);
	full_check_agrees(fx);
}

/* A row put back behind the writer's back, while the instance row still
 * shows the state it trusts: the write to that row is refused, not made
 * into a new state. */
static void test_trusted_state_does_not_launder_a_put_back_row(void **state)
{
	struct fx *fx = *state;
	struct db_secret k;
	int64_t seq;

	sqlite3 *c;

	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &k), 0);
	k.version = 2;
	assert_int_equal(db_secret_set_value(fx->db, &k, &blob1), 0);
	/* The attacker keeps a copy of the whole row, tag included... */
	assert_int_equal(sqlite3_open(fx->path, &c), SQLITE_OK);
	assert_int_equal(sqlite3_exec(c, "ATTACH ':memory:' AS keep; CREATE TABLE keep.row AS "
				      "SELECT * FROM main.secrets WHERE name = 'K'", NULL, NULL,
				      NULL), SQLITE_OK);
	k.version = 3;
	assert_int_equal(db_secret_set_value(fx->db, &k, &blob1), 0);
	/* ...and puts it back after the next write. */
	assert_int_equal(sqlite3_exec(c, "DELETE FROM main.secrets WHERE name = 'K'; "
				      "INSERT INTO main.secrets SELECT * FROM keep.row", NULL, NULL,
				      NULL), SQLITE_OK);
	sqlite3_close(c);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &k), 0);
	assert_int_equal(k.version, 2);
	k.version = 3;
	assert_int_equal(db_secret_set_value(fx->db, &k, &blob1), -EIO);
	assert_int_equal(db_state_check(fx->db, fx->inst, &seq, NULL, NULL), -EIO);
}

/* The state is a tag over the sums of the live set's elements, bucket
 * by bucket: the same set gives the same sums whatever the order or the
 * changes on the way, and any other set, seq or instance another tag. */
static void test_state_sum_is_of_the_set(void **state)
{
	const int64_t ids[] = { 3, 7, 12, 67 };	/* 3 and 67 share a bucket */
	const uint64_t vers[] = { 1, 5, 2, 9 }, swapped[] = { 9, 5, 2, 1 };
	struct rowtag_sums a, b = { 0 }, c;
	unsigned char ta[DB_MAC_LEN], tb[DB_MAC_LEN], enc[ROWTAG_SUMS_LEN];

	(void)state;
	assert_int_equal(rowtag_bucket(3), rowtag_bucket(67));
	rowtag_sums_of(&test_auth, ids, vers, 4, &a);
	rowtag_sums_put(&test_auth, &b, 67, 9, false);
	rowtag_sums_put(&test_auth, &b, 12, 2, false);
	rowtag_sums_put(&test_auth, &b, 3, 1, false);
	rowtag_sums_put(&test_auth, &b, 7, 4, false);
	/* 7 moves from version 4 to 5: out with the old, in with the new. */
	rowtag_sums_put(&test_auth, &b, 7, 4, true);
	rowtag_sums_put(&test_auth, &b, 7, 5, false);
	assert_memory_equal(&a, &b, sizeof(a));
	rowtag_state_tag(&test_auth, 1, 9, &a, ta);
	rowtag_state_tag(&test_auth, 1, 9, &b, tb);
	assert_memory_equal(ta, tb, DB_MAC_LEN);
	/* Another set: two versions swapped between secrets of one bucket. */
	rowtag_sums_of(&test_auth, ids, swapped, 4, &c);
	assert_memory_not_equal(&a.b[rowtag_bucket(3)], &c.b[rowtag_bucket(3)],
				sizeof(struct rowtag_sum));
	/* The same set at another seq or in another instance. */
	rowtag_state_tag(&test_auth, 1, 10, &a, tb);
	assert_memory_not_equal(ta, tb, DB_MAC_LEN);
	rowtag_state_tag(&test_auth, 2, 9, &a, tb);
	assert_memory_not_equal(ta, tb, DB_MAC_LEN);
	/* As the store keeps them, and back. */
	rowtag_sums_encode(&a, enc);
	rowtag_sums_decode(enc, &c);
	assert_memory_equal(&a, &c, sizeof(a));
	/* Taking every element out leaves the empty set's sums. */
	for (int i = 0; i < 4; i++)
		rowtag_sums_put(&test_auth, &b, ids[i], i == 1 ? 5 : vers[i], true);
	memset(&c, 0, sizeof(c));
	assert_memory_equal(&b, &c, sizeof(b));
}

/* db_state_version answers one secret from the set the writer trusts,
 * only while the instance row is the one it made. */
static void test_state_version_from_the_trusted_set(void **state)
{
	struct fx *fx = *state;
	struct db_secret k;
	uint64_t version = 0;
	int64_t seq, at = -1;

	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &k), 0);
	k.version = 2;
	assert_int_equal(db_secret_set_value(fx->db, &k, &blob1), 0);
	assert_int_equal(db_instance_seq(fx->db, fx->inst, &seq), 0);
	assert_int_equal(db_state_version(fx->db, fx->inst, k.id, &at, &version), 1);
	assert_int_equal(version, 2);
	assert_int_equal(at, seq);
	assert_int_equal(db_state_version(fx->db, fx->inst, k.id + 1000, &at, &version), 0);
	/* The instance row from before that write: not the trusted state, so
	 * no answer (the caller checks in full). */
	raw_sql(fx, "UPDATE instances SET seq = seq - 1");
	assert_int_equal(db_state_version(fx->db, fx->inst, k.id, &at, &version), -ENOENT);
}

/* A process that trusts no state yet (vaultfs get) checks one secret by
 * its bucket: the stored sums under the state's tag, and the bucket's
 * rows adding up to their sum. A row put back, or sums changed, is no
 * answer (-ENOENT): the full check then reports it. */
static void test_state_version_by_bucket(void **state)
{
	struct fx *fx = *state;
	struct db *other = NULL;
	struct db_secret k;
	uint64_t version = 0;
	int64_t at = -1;

	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &k), 0);
	k.version = 2;
	assert_int_equal(db_secret_set_value(fx->db, &k, &blob1), 0);
	/* A long-running process checks the whole set instead. */
	assert_int_equal(db_open(&other, fx->path, 0), 0);
	assert_int_equal(db_state_version(other, fx->inst, k.id, &at, &version), -ENOENT);
	db_close(other);
	assert_int_equal(db_open(&other, fx->path, DB_BRIEF), 0);
	assert_int_equal(db_state_version(other, fx->inst, k.id, &at, &version), 1);
	assert_int_equal(version, 2);
	assert_int_equal(db_state_version(other, fx->inst, k.id + 64, &at, &version), 0);
	raw_sql(fx, "UPDATE secrets SET version = 1 WHERE name = 'K'");
	assert_int_equal(db_state_version(other, fx->inst, k.id, &at, &version), -ENOENT);
	raw_sql(fx, "UPDATE secrets SET version = 2 WHERE name = 'K'");
	assert_int_equal(db_state_version(other, fx->inst, k.id, &at, &version), 1);
	raw_sql(fx, "UPDATE instances SET sums = zeroblob(1024)");
	assert_int_equal(db_state_version(other, fx->inst, k.id, &at, &version), -ENOENT);
	db_close(other);
}

/* A brief writer changes K while another secret's row, in another
 * bucket, was put back from an older copy: K's write is K's bucket's
 * business and goes through, but the state it makes still does not
 * match the put-back row: the full check reports it, nothing was
 * laundered. */
static void test_brief_write_does_not_launder_another_bucket(void **state)
{
	struct fx *fx = *state;
	struct db_secret k, o;
	int64_t seq;
	sqlite3 *c;

	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &k), 0);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "OTHER", &o), 0);
	assert_int_not_equal(k.id % 64, o.id % 64);
	assert_int_equal(sqlite3_open(fx->path, &c), SQLITE_OK);
	assert_int_equal(sqlite3_exec(c, "ATTACH ':memory:' AS keep; CREATE TABLE keep.row AS "
				      "SELECT * FROM main.secrets WHERE name = 'OTHER'", NULL, NULL,
				      NULL), SQLITE_OK);
	o.version = 2;
	assert_int_equal(db_secret_set_value(fx->db, &o, &blob1), 0);
	assert_int_equal(sqlite3_exec(c, "DELETE FROM main.secrets WHERE name = 'OTHER'; "
				      "INSERT INTO main.secrets SELECT * FROM keep.row", NULL, NULL,
				      NULL), SQLITE_OK);
	sqlite3_close(c);
	k.version = 2;
	assert_int_equal(db_secret_set_value(fx->db, &k, &blob1), 0);
	assert_int_equal(db_state_check(fx->db, fx->inst, &seq, NULL, NULL), -EIO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mac_known_properties),
		cmocka_unit_test(test_state_sum_is_of_the_set),
		cmocka_unit_test_setup_teardown(test_state_version_from_the_trusted_set, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_state_version_by_bucket, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_row_reads_check_tags, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_tag_of_another_row_does_not_fit, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_without_auth_rows_are_refused, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_check_all_names_rows, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_state_refuses_older_version, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_states_made_in_memory_match_the_rows,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_trusted_state_does_not_launder_a_put_back_row,
						fx_setup, fx_teardown),
		/* The same, for a short-lived writer (DB_BRIEF). */
		cmocka_unit_test_setup_teardown(test_states_made_in_memory_match_the_rows,
						fx_setup_brief, fx_teardown),
		cmocka_unit_test_setup_teardown(test_trusted_state_does_not_launder_a_put_back_row,
						fx_setup_brief, fx_teardown),
		cmocka_unit_test_setup_teardown(test_state_refuses_older_version, fx_setup_brief,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_brief_write_does_not_launder_another_bucket,
						fx_setup_brief, fx_teardown),
	};

	if (secmem_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
