/* The vault layer (fs/vault.h) against a real temporary store: the contract
 * that the filesystem and the CLI rely on, whichever store is behind db/
 * ($VAULTFS_TEST_STORE, fixture.h; a SQLite file by default). Each test
 * starts from a new vault with one instance, "app". */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "../../crypto/seal.h"
#include "../../crypto/secmem.h"
#include "../../db/db_versions.h"
#include "../../fs/vault.h"
#include "fixture.h"

struct fx {
	struct tmpdir dir;
	struct vault_conf conf;
	struct secbuf *master;
	struct vault *v;
	int64_t inst;
	bool sqlite;		/* the store is a SQLite file */
};

static int fx_open(struct fx *fx)
{
	char err[256];

	return vault_open(&fx->v, &fx->conf, fx->master, 0, err, sizeof(err));
}

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	struct db_instance in;
	char err[256];

	if (!fx || secmem_init() < 0 || tmpdir_make(&fx->dir, "vault") < 0)
		return -1;
	policy_defaults(&fx->conf);
	fx->sqlite = store_spec(&fx->dir, "vault.db", fx->conf.db, sizeof(fx->conf.db));
	fx->conf.undelete_window = 3600;
	if (seal_keygen(&fx->master) < 0 ||
	    vault_init(fx->conf.db, fx->master, err, sizeof(err)) < 0 || fx_open(fx) < 0 ||
	    vault_instance_create(fx->v, "app", 0, 0, 0700, &in) < 0)
		return -1;
	fx->inst = in.id;
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	vault_close(fx->v);
	secbuf_free(fx->master);
	tmpdir_remove(&fx->dir);
	policy_free(&fx->conf);
	free(fx);
	return 0;
}

/* Stores value under name by the CLI's path; returns the new version. */
static uint64_t put(struct fx *fx, const char *name, const char *value)
{
	struct db_secret s;

	assert_int_equal(vault_put(fx->v, fx->inst, name, (const unsigned char *)value,
				   strlen(value), 0, 0, &s), 0);
	return s.version;
}

static int64_t id_of(struct fx *fx, const char *name)
{
	struct db_secret s;

	assert_int_equal(vault_secret_find(fx->v, fx->inst, name, &s), 0);
	return s.id;
}

static void assert_value(struct fx *fx, const char *name, const char *want)
{
	struct secbuf *b = NULL;

	assert_int_equal(vault_read(fx->v, id_of(fx, name), &b, NULL), 0);
	assert_int_equal(b->len, strlen(want));
	assert_memory_equal(b->data, want, b->len);
	secbuf_free(b);
}

static void test_wrong_master_key_rejected(void **state)
{
	struct fx *fx = *state;
	struct secbuf *other = NULL;
	struct vault *v = NULL;
	char err[256] = "";

	assert_int_equal(seal_keygen(&other), 0);
	assert_int_equal(vault_open(&v, &fx->conf, other, 0, err, sizeof(err)), -EKEYREJECTED);
	assert_null(v);
	secbuf_free(other);
	/* and an existing vault is never initialised over */
	assert_true(vault_init(fx->conf.db, fx->master, err, sizeof(err)) < 0);
}

static void test_put_read_versions(void **state)
{
	struct fx *fx = *state;
	struct secbuf *b = NULL;

	assert_int_equal(put(fx, "K", "one"), 1);
	assert_int_equal(put(fx, "K", "two"), 2);
	assert_value(fx, "K", "two");
	assert_int_equal(vault_read_version(fx->v, id_of(fx, "K"), 1, &b, NULL), 0);
	assert_memory_equal(b->data, "one", 3);
	secbuf_free(b);
	assert_int_equal(vault_read_version(fx->v, id_of(fx, "K"), 7, &b, NULL), -ENOENT);
}

static void test_history_keeps_configured_count(void **state)
{
	struct fx *fx = *state;
	struct secbuf *b = NULL;
	char v[16];

	fx->conf.versions = 3;
	for (int i = 1; i <= 6; i++) {
		snprintf(v, sizeof(v), "v%d", i);
		put(fx, "K", v);
	}
	assert_int_equal(vault_read_version(fx->v, id_of(fx, "K"), 4, &b, NULL), 0);
	secbuf_free(b);
	b = NULL;
	assert_int_equal(vault_read_version(fx->v, id_of(fx, "K"), 3, &b, NULL), -ENOENT);
}

static void test_single_trailing_newline_dropped(void **state)
{
	struct fx *fx = *state;

	put(fx, "LINE", "token\n");
	assert_value(fx, "LINE", "token");
	put(fx, "PEM", "a\nb\n");
	assert_value(fx, "PEM", "a\nb\n");
}

static void test_value_size_limit(void **state)
{
	struct fx *fx = *state;
	size_t n = fx->conf.max_value_size + 1;
	unsigned char *big = calloc(1, n);
	struct db_secret s;

	put(fx, "K", "kept");
	assert_non_null(big);
	assert_int_equal(vault_put(fx->v, fx->inst, "K", big, n, 0, 0, &s), -EFBIG);
	free(big);
	assert_value(fx, "K", "kept");
}

static struct db_secret new_row(struct fx *fx, const char *name, int64_t id)
{
	struct db_secret s = { .id = id, .instance_id = fx->inst, .mode = 0600 };

	snprintf(s.name, sizeof(s.name), "%s", name);
	return s;
}

static void test_create_is_empty_version_zero(void **state)
{
	struct fx *fx = *state;
	struct db_secret s = new_row(fx, "NEW", 0);

	assert_int_equal(vault_create_as(fx->v, &s, NULL, 0, 0, false, NULL, NULL), 0);
	assert_int_equal(s.version, 0);
	assert_value(fx, "NEW", "");
	s = new_row(fx, "NEW", 0);
	assert_int_equal(vault_create_as(fx->v, &s, NULL, 0, 0, false, NULL, NULL), -EEXIST);
}

/* A key created through the mount is stored at its first close, with the
 * id (inode number) its create reserved: no key made in between, by this
 * process or another, gets that id, and the key comes with its first value
 * as version 1. An id or a name already taken is refused, not reused. */
static void test_create_at_reserved_id(void **state)
{
	const unsigned char first[] = "first";
	struct fx *fx = *state;
	struct vault *other;
	struct db_secret s;
	char err[256];
	int64_t a, b, c;

	assert_int_equal(vault_create_reserve(fx->v, &a), 0);
	assert_int_equal(vault_create_reserve(fx->v, &b), 0);
	assert_true(a > 0 && b > a);
	assert_int_equal(vault_open(&other, &fx->conf, fx->master, 0, err, sizeof(err)), 0);
	assert_int_equal(vault_create_reserve(other, &c), 0);
	assert_true(c != a && c != b);
	assert_int_equal(vault_put(other, fx->inst, "THEIRS", first, 5, 0, 0, &s), 0);
	vault_close(other);
	put(fx, "OURS", "x");
	assert_true(id_of(fx, "THEIRS") != a && id_of(fx, "THEIRS") != b);
	assert_true(id_of(fx, "OURS") != a && id_of(fx, "OURS") != b);

	s = new_row(fx, "NEW", b);
	assert_int_equal(vault_create_as(fx->v, &s, first, 5, 0, false, NULL, NULL), 0);
	assert_int_equal(s.version, 1);
	assert_int_equal(id_of(fx, "NEW"), b);
	assert_value(fx, "NEW", "first");

	s = new_row(fx, "NEW2", b);
	assert_int_equal(vault_create_as(fx->v, &s, first, 5, 0, false, NULL, NULL), -EEXIST);
	assert_int_equal(vault_secret_find(fx->v, fx->inst, "NEW2", &s), -ENOENT);
	s = new_row(fx, "NEW", a);
	assert_int_equal(vault_create_as(fx->v, &s, NULL, 0, 0, false, NULL, NULL), -EEXIST);
	assert_value(fx, "NEW", "first");
}

/* One open file's successive commits make one version. */
static void test_amend_replaces_own_version(void **state)
{
	struct fx *fx = *state;
	uint64_t ver = 0;
	int64_t id;

	put(fx, "K", "base");
	id = id_of(fx, "K");
	assert_int_equal(vault_update_amend(fx->v, id, (const unsigned char *)"a", 1, 0, &ver,
					    NULL), 0);
	assert_int_equal(ver, 2);
	assert_int_equal(vault_update_amend(fx->v, id, (const unsigned char *)"ab", 2, 0, &ver,
					    NULL), 0);
	assert_int_equal(ver, 2);
	assert_value(fx, "K", "ab");
	/* someone else's write in between: the next commit is a new version */
	put(fx, "K", "other");
	assert_int_equal(vault_update_amend(fx->v, id, (const unsigned char *)"abc", 3, 0, &ver,
					    NULL), 0);
	assert_int_equal(ver, 4);
}

static void test_check_and_set(void **state)
{
	struct fx *fx = *state;
	struct db_secret s;

	assert_int_equal(vault_put_if(fx->v, fx->inst, "K", (const unsigned char *)"x", 1, 0, 0,
				      0, &s, NULL), 0);
	assert_int_equal(vault_put_if(fx->v, fx->inst, "K", (const unsigned char *)"y", 1, 0, 0,
				      0, &s, NULL), -ESTALE);
	assert_int_equal(s.version, 1);
	assert_int_equal(vault_put_if(fx->v, fx->inst, "K", (const unsigned char *)"y", 1, 0, 0,
				      1, &s, NULL), 0);
	assert_value(fx, "K", "y");
}

static void test_put_many_all_or_nothing(void **state)
{
	struct fx *fx = *state;
	const char *names[] = { "A", "B", "bad/name" };
	struct secbuf *vals[3] = { 0 };
	struct db_secret s;
	size_t at = 99;

	for (int i = 0; i < 3; i++) {
		assert_int_equal(secbuf_new(&vals[i], 8), 0);
		assert_int_equal(secbuf_set(vals[i], "val", 3), 0);
	}
	assert_true(vault_put_many(fx->v, fx->inst, 3, names, vals, 0, 0, &at) < 0);
	assert_int_equal(at, 2);
	assert_int_equal(vault_secret_find(fx->v, fx->inst, "A", &s), -ENOENT);
	assert_int_equal(vault_put_many(fx->v, fx->inst, 2, names, vals, 0, 0, &at), 0);
	assert_value(fx, "B", "val");
	for (int i = 0; i < 3; i++)
		secbuf_free(vals[i]);
}

static void test_rename_over_continues_history(void **state)
{
	struct fx *fx = *state;
	struct secbuf *b = NULL;
	int64_t replaced = 0;

	put(fx, "K", "k1");
	put(fx, "K", "k2");
	put(fx, "TMP", "new");
	assert_int_equal(vault_rename(fx->v, id_of(fx, "TMP"), "K", true, 0, NULL), -EEXIST);
	assert_int_equal(vault_rename(fx->v, id_of(fx, "TMP"), "K", false, 0, &replaced), 0);
	assert_true(replaced > 0);
	assert_value(fx, "K", "new");
	assert_int_equal(vault_read_version(fx->v, id_of(fx, "K"), 2, &b, NULL), 0);
	assert_memory_equal(b->data, "k2", 2);
	secbuf_free(b);
	assert_int_equal(vault_secret_find(fx->v, fx->inst, "TMP", &(struct db_secret){ 0 }),
			 -ENOENT);
}

/* Someone else's rename over a key (not its owner, not root) sends that
 * key to the trash with its history; the renamer's key keeps its own. */
static void test_rename_over_by_another_user(void **state)
{
	struct fx *fx = *state;
	struct secbuf *b = NULL;
	struct db_secret s;
	struct db_trash t;

	assert_int_equal(vault_put(fx->v, fx->inst, "K", (const unsigned char *)"k1", 2, 1000, 0,
				   &s), 0);
	put(fx, "K", "k2");
	assert_int_equal(vault_put(fx->v, fx->inst, "T", (const unsigned char *)"t1", 2, 2000, 0,
				   &s), 0);
	assert_int_equal(vault_rename(fx->v, id_of(fx, "T"), "K", false, 2000, NULL), 0);
	assert_value(fx, "K", "t1");
	assert_int_equal(vault_secret_find(fx->v, fx->inst, "K", &s), 0);
	assert_int_equal(s.uid, 2000);
	assert_int_equal(s.version, 1);
	assert_int_equal(vault_read_version(fx->v, s.id, 2, &b, NULL), -ENOENT);
	assert_null(b);
	assert_int_equal(db_trash_find(vault_db(fx->v), fx->inst, "K", 0, &t), 0);
	assert_true(t.secret_id != s.id);
	assert_int_equal(t.uid, 1000);
	assert_int_equal(t.version, 2);		/* its history went with it */
}

static void test_delete_undelete_purge(void **state)
{
	struct fx *fx = *state;
	struct db_secret s;
	int64_t n = 0;

	put(fx, "K", "gone-soon");
	assert_int_equal(vault_delete(fx->v, id_of(fx, "K"), 0, NULL), 0);
	assert_int_equal(vault_secret_find(fx->v, fx->inst, "K", &s), -ENOENT);
	assert_int_equal(vault_undelete(fx->v, fx->inst, "K", &s), 0);
	assert_value(fx, "K", "gone-soon");
	assert_int_equal(vault_delete(fx->v, id_of(fx, "K"), 0, NULL), 0);
	assert_int_equal(vault_purge(fx->v, fx->inst, "K", &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(vault_undelete(fx->v, fx->inst, "K", &s), -ENOENT);
}

static void test_rollback(void **state)
{
	struct fx *fx = *state;
	struct db_secret s;

	put(fx, "K", "first");
	put(fx, "K", "second");
	assert_int_equal(vault_rollback(fx->v, id_of(fx, "K"), 2, 0, &s), -EALREADY);
	assert_int_equal(vault_rollback(fx->v, id_of(fx, "K"), 1, 0, &s), 0);
	assert_int_equal(s.version, 3);
	assert_value(fx, "K", "first");
}

static void test_rotate_instance_keeps_values(void **state)
{
	struct fx *fx = *state;
	struct db_instance in;
	struct secbuf *b = NULL;
	char err[256];

	put(fx, "K", "old");
	put(fx, "K", "cur");
	assert_int_equal(vault_rotate_instance(fx->v, fx->inst, NULL, NULL, err, sizeof(err)), 0);
	assert_int_equal(db_instance_get(vault_db(fx->v), fx->inst, &in), 0);
	assert_int_equal(in.generation, 2);
	assert_value(fx, "K", "cur");
	assert_int_equal(vault_read_version(fx->v, id_of(fx, "K"), 1, &b, NULL), 0);
	assert_memory_equal(b->data, "old", 3);
	secbuf_free(b);
	assert_int_equal(vault_verify(fx->v, err, sizeof(err)), 0);
}

static void test_rotate_master(void **state)
{
	struct fx *fx = *state;
	struct secbuf *next = NULL;
	char err[256];

	put(fx, "K", "survives");
	assert_int_equal(seal_keygen(&next), 0);
	assert_int_equal(vault_rotate_master(fx->v, next, NULL, NULL, err, sizeof(err)), 0);
	vault_close(fx->v);
	fx->v = NULL;
	assert_int_equal(fx_open(fx), -EKEYREJECTED);
	secbuf_free(fx->master);
	fx->master = next;
	assert_int_equal(fx_open(fx), 0);
	assert_value(fx, "K", "survives");
}

/* Whoever can write the file can set AUTOINCREMENT's counter back: an id
 * reserved after that still names no live row and no deleted key that
 * undelete could bring back. */
static void test_reserved_id_past_counter_set_back(void **state)
{
	struct fx *fx = *state;
	int64_t live, deleted, id;
	sqlite3 *c;

	put(fx, "A", "a");
	put(fx, "B", "b");
	live = id_of(fx, "A");
	deleted = id_of(fx, "B");
	assert_int_equal(vault_delete(fx->v, deleted, 0, NULL), 0);
	assert_int_equal(sqlite3_open(fx->conf.db, &c), SQLITE_OK);
	assert_int_equal(sqlite3_exec(c, "UPDATE sqlite_sequence SET seq = 0", NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(c);
	vault_close(fx->v);
	assert_int_equal(fx_open(fx), 0);
	assert_int_equal(vault_create_reserve(fx->v, &id), 0);
	assert_true(id > live && id > deleted);
}

/* A sealed value moved onto another row (by whoever can write the file)
 * fails to authenticate: -EIO, never the wrong secret. */
static void test_swapped_ciphertext_refused(void **state)
{
	struct fx *fx = *state;
	struct secbuf *b = NULL;
	char err[256];
	sqlite3 *c;

	put(fx, "A", "value-a");
	put(fx, "B", "value-b");
	assert_int_equal(sqlite3_open(fx->conf.db, &c), SQLITE_OK);
	assert_int_equal(sqlite3_exec(c, "UPDATE secrets SET blob = (SELECT blob FROM secrets "
				      "WHERE name = 'A') WHERE name = 'B'", NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(c);
	assert_int_equal(vault_read(fx->v, id_of(fx, "B"), &b, NULL), -EIO);
	assert_null(b);
	assert_value(fx, "A", "value-a");
	assert_int_equal(vault_verify(fx->v, err, sizeof(err)), -EIO);
	assert_non_null(strstr(err, "B"));
}

/* What the listings see: names collected in the order they are given. */
struct seen {
	char names[8][DB_NAME_MAX + 1];
	uint64_t versions[8];
	int n;
};

static int seen_instance(void *ctx, const struct db_instance *in)
{
	struct seen *sn = ctx;

	snprintf(sn->names[sn->n++], DB_NAME_MAX + 1, "%s", in->name);
	return 0;
}

static int seen_secret(void *ctx, const struct db_secret *s)
{
	struct seen *sn = ctx;

	sn->versions[sn->n] = s->version;
	snprintf(sn->names[sn->n++], DB_NAME_MAX + 1, "%s", s->name);
	return 0;
}

static int seen_version(void *ctx, const struct db_version *ver)
{
	struct seen *sn = ctx;

	sn->versions[sn->n++] = ver->version;
	return 0;
}

static int seen_trash(void *ctx, const struct db_trash *t)
{
	struct seen *sn = ctx;

	snprintf(sn->names[sn->n++], DB_NAME_MAX + 1, "%s", t->name);
	return 0;
}

/* The look-ups and listings the commands use (ls, history, trash). */
static void test_listings(void **state)
{
	struct fx *fx = *state;
	struct db_instance in;
	struct seen sn = { 0 };

	put(fx, "A", "1");
	put(fx, "B", "1");
	put(fx, "B", "2");
	put(fx, "B", "3");
	put(fx, "C", "1");
	assert_int_equal(vault_instance_create(fx->v, "other", 0, 0, 0700, &in), 0);
	assert_int_equal(vault_instance_find(fx->v, "other", &in), 0);
	assert_int_equal(vault_instance_find(fx->v, "nope", &in), -ENOENT);
	assert_int_equal(vault_instance_each(fx->v, seen_instance, &sn), 0);
	assert_int_equal(sn.n, 2);
	assert_string_equal(sn.names[0], "app");
	assert_string_equal(sn.names[1], "other");

	assert_int_equal(vault_secret_count(fx->v, fx->inst), 3);
	assert_int_equal(vault_secret_count(fx->v, in.id), 0);
	sn.n = 0;
	assert_int_equal(vault_secret_each(fx->v, fx->inst, seen_secret, &sn), 0);
	assert_int_equal(sn.n, 3);
	assert_string_equal(sn.names[1], "B");
	assert_int_equal(sn.versions[1], 3);

	sn.n = 0;
	assert_int_equal(vault_version_each(fx->v, id_of(fx, "B"), seen_version, &sn), 0);
	assert_int_equal(sn.n, 2);		/* old versions, newest first */
	assert_int_equal(sn.versions[0], 2);
	assert_int_equal(sn.versions[1], 1);

	assert_int_equal(vault_delete(fx->v, id_of(fx, "C"), 0, NULL), 0);
	sn.n = 0;
	assert_int_equal(vault_trash_each(fx->v, fx->inst, seen_trash, &sn), 0);
	assert_int_equal(sn.n, 1);
	assert_string_equal(sn.names[0], "C");
	assert_int_equal(vault_secret_count(fx->v, fx->inst), 2);
}

static void count_bad(void *ctx, const char *what)
{
	(*(int *)ctx)++;
}

/* The checks doctor and mount run: nothing in a sound vault; a row whose
 * owner was changed by whoever can write the file, named. */
static void test_row_checks(void **state)
{
	struct fx *fx = *state;
	char err[256] = "";
	int bad = 0;
	sqlite3 *c;

	put(fx, "A", "1");
	assert_int_equal(vault_store_check(fx->v, err, sizeof(err)), 0);
	assert_int_equal(vault_rows_check(fx->v, count_bad, &bad), 0);
	assert_int_equal(bad, 0);
	assert_int_equal(vault_instance_state_check(fx->v, fx->inst), 0);
	assert_int_equal(sqlite3_open(fx->conf.db, &c), SQLITE_OK);
	assert_int_equal(sqlite3_exec(c, "UPDATE secrets SET uid = 1000 WHERE name = 'A'",
				      NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(c);
	assert_int_equal(vault_rows_check(fx->v, count_bad, &bad), -EIO);
	assert_int_equal(bad, 1);
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_wrong_master_key_rejected),
		FX_TEST(test_put_read_versions),
		FX_TEST(test_history_keeps_configured_count),
		FX_TEST(test_single_trailing_newline_dropped),
		FX_TEST(test_value_size_limit),
		FX_TEST(test_create_is_empty_version_zero),
		FX_TEST(test_create_at_reserved_id),
		FX_TEST(test_amend_replaces_own_version),
		FX_TEST(test_check_and_set),
		FX_TEST(test_put_many_all_or_nothing),
		FX_TEST(test_rename_over_continues_history),
		FX_TEST(test_rename_over_by_another_user),
		FX_TEST(test_delete_undelete_purge),
		FX_TEST(test_rollback),
		FX_TEST(test_rotate_instance_keeps_values),
		FX_TEST(test_rotate_master),
		FX_TEST(test_listings),
	};
	/* Edits the file behind the store's back, with SQLite's own tools. */
	const struct CMUnitTest sqlite_files[] = {
		FX_TEST(test_swapped_ciphertext_refused),
		FX_TEST(test_row_checks),
		FX_TEST(test_reserved_id_past_counter_set_back),
	};
	struct tmpdir t;
	char spec[512];
	int failed;
	bool sqlite = tmpdir_make(&t, "spec") == 0 &&
		      store_spec(&t, "vault.db", spec, sizeof(spec));

	tmpdir_remove(&t);
	failed = cmocka_run_group_tests_name("vault", tests, NULL, NULL);
	if (sqlite)
		failed += cmocka_run_group_tests_name("vault: SQLite's files", sqlite_files,
						      NULL, NULL);
	return failed;
}
