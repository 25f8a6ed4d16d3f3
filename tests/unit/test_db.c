/* The store (db/db.h): the contract every store behind db/ meets, run
 * against $VAULTFS_TEST_STORE (fixture.h), a SQLite file by default; the
 * tests of SQLite's own files run only against SQLite. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixture.h"
#include <sqlite3.h>

#include "../../db/db.h"
#include "../../db/db_audit.h"
#include "../../db/sqlite_int.h"
#include "../../db/schema_expected.h"
#include "test_auth.h"

struct fx {
	struct tmpdir tmp;
	char path[512];		/* the store's spec */
	bool sqlite;		/* a SQLite file */
	struct db *db;
	int64_t inst;		/* "billing", created by fx_setup_open */
};

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	if (tmpdir_make(&fx->tmp, "db") < 0) {
		free(fx);
		return -1;
	}
	fx->sqlite = store_spec(&fx->tmp, "vault.db", fx->path, sizeof(fx->path));
	*state = fx;
	return 0;
}

static const struct db_blob wrap1 = { (unsigned char *)"wrapped-key-1", 13 };

/* A new store with one instance. */
static int fx_setup_open(void **state)
{
	struct db_instance in = { .uid = 1000, .gid = 1001, .mode = 0750, .generation = 1 };
	struct fx *fx;

	if (fx_setup(state))
		return -1;
	fx = *state;
	snprintf(in.name, sizeof(in.name), "billing");
	if (db_open(&fx->db, fx->path, DB_CREATE) || db_instance_create(fx->db, &in, &wrap1))
		return -1;
	fx->inst = in.id;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	db_close(fx->db);
	tmpdir_remove(&fx->tmp);
	free(fx);
	return 0;
}

static void file_write(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void file_read(const char *path, void *data, size_t len)
{
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(read(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void sql_exec(const char *path, const char *sql)
{
	sqlite3 *c = NULL;

	assert_int_equal(sqlite3_open(path, &c), SQLITE_OK);
	assert_int_equal(sqlite3_exec(c, sql, NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_close(c), SQLITE_OK);
}

static struct db_secret secret_new(int64_t instance_id, const char *name)
{
	struct db_secret s = {
		.instance_id = instance_id, .uid = 1000, .gid = 1001, .mode = 0440,
		.version = 1, .size = 5, .flags = DB_SECRET_NL_STRIPPED,
		.ctime_ns = 1000000001, .mtime_ns = 1000000002, .chtime_ns = 1000000003,
		.updated_by = 1002,
	};

	snprintf(s.name, sizeof(s.name), "%s", name);
	return s;
}

static void secret_insert(struct db *db, struct db_secret *s, const char *blob)
{
	struct db_blob b = { (unsigned char *)blob, strlen(blob) };

	s->id = 0;
	assert_int_equal(db_secret_insert(db, s, &b), 0);
	assert_true(s->id > 0);
}

static void assert_secret_equal(const struct db_secret *a, const struct db_secret *b)
{
	assert_int_equal(a->id, b->id);
	assert_int_equal(a->instance_id, b->instance_id);
	assert_string_equal(a->name, b->name);
	assert_int_equal(a->uid, b->uid);
	assert_int_equal(a->gid, b->gid);
	assert_int_equal(a->mode, b->mode);
	assert_int_equal(a->version, b->version);
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->flags, b->flags);
	assert_int_equal(a->ctime_ns, b->ctime_ns);
	assert_int_equal(a->mtime_ns, b->mtime_ns);
	assert_int_equal(a->chtime_ns, b->chtime_ns);
	assert_int_equal(a->updated_by, b->updated_by);
}

static void assert_blob(struct db *db, int64_t id, const char *want)
{
	struct db_blob b = { NULL, 0 };

	assert_int_equal(db_secret_blob(db, id, NULL, &b), 0);
	assert_int_equal(b.len, strlen(want));
	assert_memory_equal(b.data, want, b.len);
	db_blob_free(&b);
	assert_null(b.data);
}

static void test_create_and_reopen(void **state)
{
	struct fx *fx = *state;
	struct db *db = NULL;
	struct db_blob b;
	struct stat st;
	mode_t old;

	old = umask(0);
	assert_int_equal(db_open(&db, fx->path, DB_CREATE), 0);
	umask(old);
	assert_non_null(db);
	assert_string_equal(db_path(db), fx->path);
	if (fx->sqlite) {	/* a private file, whatever the umask */
		assert_int_equal(stat(fx->path, &st), 0);
		assert_true(S_ISREG(st.st_mode));
		assert_int_equal(st.st_mode & 07777, 0600);
	}
	assert_int_equal(db_meta_set(db, "check", (const unsigned char *)"v1", 2), 0);
	db_close(db);

	/* Creating refuses an existing file and leaves it alone. */
	db = (struct db *)&db;
	assert_int_equal(db_open(&db, fx->path, DB_CREATE), -EEXIST);
	assert_null(db);

	assert_int_equal(db_open(&db, fx->path, 0), 0);
	assert_int_equal(db_meta_get(db, "check", &b), 0);
	assert_int_equal(b.len, 2);
	assert_memory_equal(b.data, "v1", 2);
	db_blob_free(&b);
	assert_int_equal(db_instance_count(db), 0);
	db_close(db);
}

/* SQLite's journal files get the database file's mode, whatever the umask. */
static void test_journal_mode_bits(void **state)
{
	struct fx *fx = *state;
	char wal[sizeof(fx->path) + 8];
	struct db *db = NULL;
	struct stat st;
	mode_t old;

	old = umask(0);
	assert_int_equal(db_open(&db, fx->path, DB_CREATE), 0);
	assert_int_equal(db_meta_set(db, "k", (const unsigned char *)"v", 1), 0);
	umask(old);
	snprintf(wal, sizeof(wal), "%s-wal", fx->path);
	if (stat(wal, &st) == 0)
		assert_int_equal(st.st_mode & 07777, 0600);
	snprintf(wal, sizeof(wal), "%s-shm", fx->path);
	if (stat(wal, &st) == 0)
		assert_int_equal(st.st_mode & 07777, 0600);
	db_close(db);
}

static void test_open_missing(void **state)
{
	struct fx *fx = *state;
	struct db *db = (struct db *)&db;
	char p[256];

	assert_int_equal(db_open(&db, fx->path, 0), -ENOENT);
	assert_null(db);
	assert_int_equal(access(fx->path, F_OK), -1);
	db = (struct db *)&db;
	assert_int_equal(db_open(&db, fx->path, DB_READONLY), -ENOENT);
	assert_null(db);
	snprintf(p, sizeof(p), "%s/nosuch/vault.db", fx->tmp.path);
	assert_int_equal(db_open(&db, p, DB_CREATE), -ENOENT);
	assert_null(db);
}

static void test_open_garbage(void **state)
{
	struct fx *fx = *state;
	unsigned char junk[8192], after[8192];
	struct db *db = (struct db *)&db;
	uint32_t x = 2463534242u;

	for (size_t i = 0; i < sizeof(junk); i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		junk[i] = (unsigned char)x;
	}
	file_write(fx->path, junk, sizeof(junk));
	assert_int_equal(db_open(&db, fx->path, 0), -EPROTO);
	assert_null(db);
	assert_non_null(db_errmsg(NULL));
	/* Nothing was written to it. */
	file_read(fx->path, after, sizeof(after));
	assert_memory_equal(junk, after, sizeof(junk));

	/* Nor does junk behind a SQLite header. */
	memcpy(junk, "SQLite format 3", 16);
	file_write(fx->path, junk, sizeof(junk));
	assert_int_equal(db_open(&db, fx->path, 0), -EPROTO);
	assert_null(db);
}

static void test_open_foreign(void **state)
{
	struct fx *fx = *state;
	struct db *db = (struct db *)&db;

	/* A valid SQLite database that is not a vault. */
	sql_exec(fx->path, "CREATE TABLE t (x); INSERT INTO t VALUES (1);");
	assert_int_equal(db_open(&db, fx->path, 0), -EPROTO);
	assert_null(db);

	/* An empty file is no vault either. */
	assert_int_equal(unlink(fx->path), 0);
	file_write(fx->path, "", 0);
	assert_int_equal(db_open(&db, fx->path, 0), -EPROTO);
	assert_null(db);
}

static void plain_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	sqlite3_result_int(ctx, 7);
}

/* The error of running sql on c, or NULL if it ran. */
static char *sql_error(sqlite3 *c, const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(c, sql, NULL, NULL, &err) == SQLITE_OK)
		assert_null(err);
	return err;
}

/* The file's schema is its writer's: a view or trigger in it can call
 * neither the row-tag functions (else the file could have rows tagged
 * through us) nor any function that is not innocuous, even on a
 * connection where it got past the schema check. Our own statements can. */
static void test_schema_calls_no_tag_function(void **state)
{
	struct fx *fx = *state;
	sqlite3 *c;
	char *err;

	assert_int_equal(db_open(&fx->db, fx->path, DB_CREATE), 0);
	c = sq_of(fx->db)->conn;
	assert_null(sql_error(c, "SELECT dba_mac('meta', 'k', x'00')"));
	assert_int_equal(sqlite3_create_function(c, "plain_fn", 0, SQLITE_UTF8, NULL, plain_fn,
						 NULL, NULL), SQLITE_OK);
	assert_null(sql_error(c, "SELECT plain_fn()"));
	assert_null(sql_error(c, "CREATE VIEW tagger AS SELECT dba_mac('meta', 'k', x'00') AS t;"
			      "CREATE VIEW plain AS SELECT plain_fn() AS p;"
			      "CREATE TABLE x (a);"
			      "CREATE TRIGGER checker AFTER INSERT ON x BEGIN "
			      "SELECT dba_check(x'00', 'meta', 'k'); END;"));
	err = sql_error(c, "SELECT t FROM tagger");
	assert_non_null(err);
	assert_non_null(strstr(err, "unsafe use of dba_mac()"));
	sqlite3_free(err);
	err = sql_error(c, "INSERT INTO x VALUES (1)");
	assert_non_null(err);
	assert_non_null(strstr(err, "unsafe use of dba_check()"));
	sqlite3_free(err);
	err = sql_error(c, "SELECT p FROM plain");
	assert_non_null(err);
	assert_non_null(strstr(err, "unsafe use of plain_fn()"));
	sqlite3_free(err);
}

/* The audit log's own connection says what db_open says of a file that is
 * no vault (-EPROTO), and of a missing one (-ENOENT), with one errno map. */
static void test_audit_open_foreign(void **state)
{
	struct fx *fx = *state;
	struct db_audit *a = (struct db_audit *)&a;

	assert_int_equal(db_audit_open(&a, fx->path, false), -ENOENT);
	assert_null(a);
	sql_exec(fx->path, "CREATE TABLE t (x);");
	assert_int_equal(db_audit_open(&a, fx->path, false), -EPROTO);
	assert_null(a);
}

struct file_list {
	char path[4][sizeof(((struct fx *)0)->path) + 8];
	bool main[4];
	int n;
};

static int list_file(void *ctx, const char *path, bool main)
{
	struct file_list *l = ctx;

	if (l->n == 4)
		return -E2BIG;
	snprintf(l->path[l->n], sizeof(l->path[0]), "%s", path);
	l->main[l->n++] = main;
	return 0;
}

/* The files a SQLite store keeps beside its database, which the checks of
 * owner and mode (mount, doctor) walk: the database first. */
static void test_files(void **state)
{
	struct fx *fx = *state;
	struct file_list l = { .n = 0 };
	char want[sizeof(l.path[0])];

	assert_int_equal(db_files(fx->path, list_file, &l), 0);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.path[0], fx->path);
	assert_true(l.main[0]);
	snprintf(want, sizeof(want), "%s-wal", fx->path);
	assert_string_equal(l.path[1], want);
	assert_false(l.main[1]);
	snprintf(want, sizeof(want), "%s-shm", fx->path);
	assert_string_equal(l.path[2], want);
	assert_false(l.main[2]);
	/* fn's nonzero return stops the walk and is returned. */
	l.n = 4;
	assert_int_equal(db_files(fx->path, list_file, &l), -E2BIG);
}

static void test_open_newer(void **state)
{
	struct fx *fx = *state;
	struct db *db = NULL;

	assert_int_equal(db_open(&db, fx->path, DB_CREATE), 0);
	db_close(db);
	sql_exec(fx->path, "PRAGMA user_version = 9999;");
	db = (struct db *)&db;
	assert_int_equal(db_open(&db, fx->path, 0), -EPROTONOSUPPORT);
	assert_null(db);
}

static void test_readonly(void **state)
{
	struct fx *fx = *state;
	struct db_instance in;
	struct db *ro = NULL;

	assert_int_equal(db_open(&ro, fx->path, DB_READONLY), 0);
	assert_int_equal(db_instance_find(ro, "billing", &in), 0);
	assert_int_equal(in.id, fx->inst);
	assert_int_equal(db_meta_set(ro, "k", (const unsigned char *)"v", 1), -EROFS);
	assert_int_equal(db_instance_set_attr(ro, fx->inst, 1, 1, 0700, db_now_ns()), -EROFS);
	db_close(ro);
}

static void test_instances(void **state)
{
	struct fx *fx = *state;
	struct db_instance in, got, dup = { .uid = 1, .gid = 1, .mode = 0700, .generation = 1 };
	struct db_blob b;
	int64_t t0, now;

	assert_int_equal(db_instance_find(fx->db, "billing", &in), 0);
	assert_int_equal(in.id, fx->inst);
	assert_string_equal(in.name, "billing");
	assert_int_equal(in.uid, 1000);
	assert_int_equal(in.gid, 1001);
	assert_int_equal(in.mode, 0750);
	assert_int_equal(in.generation, 1);
	assert_true(in.ctime_ns > 0);
	assert_int_equal(db_instance_get(fx->db, fx->inst, &got), 0);
	assert_int_equal(got.id, in.id);
	assert_string_equal(got.name, in.name);
	assert_int_equal(got.ctime_ns, in.ctime_ns);
	assert_int_equal(got.mtime_ns, in.mtime_ns);

	assert_int_equal(db_instance_find(fx->db, "Billing", &got), -ENOENT);
	assert_int_equal(db_instance_find(fx->db, "nosuch", &got), -ENOENT);
	assert_int_equal(db_instance_get(fx->db, fx->inst + 1000, &got), -ENOENT);

	/* Names are unique. */
	snprintf(dup.name, sizeof(dup.name), "billing");
	assert_int_equal(db_instance_create(fx->db, &dup, &wrap1), -EEXIST);
	assert_int_equal(db_instance_count(fx->db), 1);

	/* Times are set on create; the mode keeps permission bits only. */
	t0 = db_now_ns();
	snprintf(dup.name, sizeof(dup.name), "support-bot");
	dup.mode = S_IFDIR | 0710;
	assert_int_equal(db_instance_create(fx->db, &dup, &wrap1), 0);
	assert_true(dup.id > 0 && dup.id != fx->inst);
	assert_int_equal(db_instance_get(fx->db, dup.id, &got), 0);
	assert_string_equal(got.name, "support-bot");
	assert_int_equal(got.mode, 0710);
	assert_true(got.ctime_ns >= t0 && got.ctime_ns <= db_now_ns());
	assert_int_equal(db_instance_count(fx->db), 2);

	/* Wrapped data key and generation. */
	assert_int_equal(db_instance_key(fx->db, fx->inst, &got, &b), 0);
	assert_int_equal(got.generation, 1);
	assert_int_equal(b.len, wrap1.len);
	assert_memory_equal(b.data, wrap1.data, wrap1.len);
	db_blob_free(&b);
	b.data = (unsigned char *)"wrapped-key-2!";
	b.len = 14;
	assert_int_equal(db_instance_set_wrapped_key(fx->db, fx->inst, 2, &b), 0);
	assert_int_equal(db_instance_key(fx->db, fx->inst, &got, &b), 0);
	assert_int_equal(b.len, 14);
	assert_memory_equal(b.data, "wrapped-key-2!", 14);
	db_blob_free(&b);
	assert_int_equal(db_instance_get(fx->db, fx->inst, &got), 0);
	assert_int_equal(got.generation, 2);
	assert_int_equal(db_instance_key(fx->db, 99999, &got, &b), -ENOENT);
	assert_int_equal(db_instance_set_wrapped_key(fx->db, 99999, 2, &wrap1), -ENOENT);

	/* Attributes. */
	now = db_now_ns();
	assert_int_equal(db_instance_set_attr(fx->db, fx->inst, 0, 5, 0700, now), 0);
	assert_int_equal(db_instance_get(fx->db, fx->inst, &got), 0);
	assert_int_equal(got.uid, 0);
	assert_int_equal(got.gid, 5);
	assert_int_equal(got.mode, 0700);
	assert_int_equal(got.mtime_ns, now);
	assert_int_equal(got.ctime_ns, in.ctime_ns);
	assert_int_equal(db_instance_set_attr(fx->db, 99999, 0, 0, 0700, now), -ENOENT);
}

struct names {
	char name[8][DB_NAME_MAX + 1];
	int64_t id[8];
	int n;
	int stop_at;
};

static int collect_instance(void *ctx, const struct db_instance *in)
{
	struct names *c = ctx;

	if (c->n >= 8)
		return -1;
	snprintf(c->name[c->n], sizeof(c->name[0]), "%s", in->name);
	c->id[c->n] = in->id;
	return ++c->n == c->stop_at ? 42 : 0;
}

static int collect_secret(void *ctx, const struct db_secret *s)
{
	struct names *c = ctx;

	if (c->n >= 8)
		return -1;
	snprintf(c->name[c->n], sizeof(c->name[0]), "%s", s->name);
	c->id[c->n] = s->id;
	return ++c->n == c->stop_at ? 43 : 0;
}

static void test_instance_each(void **state)
{
	static const char *const add[] = { "zeta", "alpha", "m" };
	struct fx *fx = *state;
	struct db_instance in = { .mode = 0700, .generation = 1 };
	struct names c = { .stop_at = 0 };
	int64_t ids[3];

	for (size_t i = 0; i < 3; i++) {
		snprintf(in.name, sizeof(in.name), "%s", add[i]);
		assert_int_equal(db_instance_create(fx->db, &in, &wrap1), 0);
		ids[i] = in.id;
	}
	/* In id order, that is order of creation. */
	assert_int_equal(db_instance_each(fx->db, 0, collect_instance, &c), 0);
	assert_int_equal(c.n, 4);
	assert_string_equal(c.name[0], "billing");
	assert_int_equal(c.id[0], fx->inst);
	for (size_t i = 0; i < 3; i++) {
		assert_string_equal(c.name[i + 1], add[i]);
		assert_int_equal(c.id[i + 1], ids[i]);
	}

	memset(&c, 0, sizeof(c));
	assert_int_equal(db_instance_each(fx->db, ids[0], collect_instance, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.name[0], "alpha");
	assert_string_equal(c.name[1], "m");
	memset(&c, 0, sizeof(c));
	assert_int_equal(db_instance_each(fx->db, ids[2], collect_instance, &c), 0);
	assert_int_equal(c.n, 0);

	memset(&c, 0, sizeof(c));
	c.stop_at = 2;
	assert_int_equal(db_instance_each(fx->db, 0, collect_instance, &c), 42);
	assert_int_equal(c.n, 2);
	/* A stopped walk leaves the store usable. */
	assert_int_equal(db_instance_find(fx->db, "zeta", &in), 0);
	assert_int_equal(db_instance_count(fx->db), 4);
	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(db_meta_set(fx->db, "after", (const unsigned char *)"walk", 4), 0);
	assert_int_equal(db_commit(fx->db), 0);
}

static void test_instance_delete(void **state)
{
	struct fx *fx = *state;
	struct db_secret s = secret_new(fx->inst, "K");
	struct db_instance in;

	secret_insert(fx->db, &s, "blob");
	assert_int_equal(db_instance_delete(fx->db, fx->inst), -ENOTEMPTY);
	assert_int_equal(db_instance_get(fx->db, fx->inst, &in), 0);
	assert_int_equal(db_secret_delete(fx->db, s.id), 0);
	assert_int_equal(db_instance_delete(fx->db, fx->inst), 0);
	assert_int_equal(db_instance_get(fx->db, fx->inst, &in), -ENOENT);
	assert_int_equal(db_instance_find(fx->db, "billing", &in), -ENOENT);
	assert_int_equal(db_instance_delete(fx->db, fx->inst), -ENOENT);
	assert_int_equal(db_instance_count(fx->db), 0);
}

static void test_secrets(void **state)
{
	struct fx *fx = *state;
	struct db_secret s = secret_new(fx->inst, "OPENAI_API_KEY"), got, meta;
	struct db_blob b;

	secret_insert(fx->db, &s, "sealed-1");
	assert_int_equal(db_secret_find(fx->db, fx->inst, "OPENAI_API_KEY", &got), 0);
	assert_secret_equal(&got, &s);
	memset(&got, 0, sizeof(got));
	assert_int_equal(db_secret_get(fx->db, s.id, &got), 0);
	assert_secret_equal(&got, &s);
	assert_int_equal(db_secret_blob(fx->db, s.id, &meta, &b), 0);
	assert_secret_equal(&meta, &s);
	assert_int_equal(b.len, 8);
	assert_memory_equal(b.data, "sealed-1", 8);
	db_blob_free(&b);
	assert_blob(fx->db, s.id, "sealed-1");
	assert_int_equal(db_secret_count(fx->db, fx->inst), 1);

	assert_int_equal(db_secret_find(fx->db, fx->inst, "openai_api_key", &got), -ENOENT);
	assert_int_equal(db_secret_find(fx->db, fx->inst + 1, "OPENAI_API_KEY", &got), -ENOENT);
	assert_int_equal(db_secret_get(fx->db, s.id + 100, &got), -ENOENT);
	assert_int_equal(db_secret_blob(fx->db, s.id + 100, NULL, &b), -ENOENT);
}

static void test_secret_unique(void **state)
{
	struct fx *fx = *state;
	struct db_instance other = { .mode = 0700, .generation = 1 };
	struct db_secret a = secret_new(fx->inst, "K"), b = secret_new(fx->inst, "K"), got;
	struct db_blob blob = { (unsigned char *)"x", 1 };

	secret_insert(fx->db, &a, "first");
	assert_int_equal(db_secret_insert(fx->db, &b, &blob), -EEXIST);
	assert_blob(fx->db, a.id, "first");
	assert_int_equal(db_secret_count(fx->db, fx->inst), 1);

	/* The same name in another instance is another secret. */
	snprintf(other.name, sizeof(other.name), "other");
	assert_int_equal(db_instance_create(fx->db, &other, &wrap1), 0);
	b.instance_id = other.id;
	secret_insert(fx->db, &b, "second");
	assert_true(b.id != a.id);
	assert_int_equal(db_secret_find(fx->db, other.id, "K", &got), 0);
	assert_int_equal(got.id, b.id);
	assert_blob(fx->db, a.id, "first");
	assert_blob(fx->db, b.id, "second");
}

/* A secret needs an instance to live in. */
static void test_secret_no_instance(void **state)
{
	struct fx *fx = *state;
	struct db_secret s = secret_new(fx->inst + 1000, "K");
	struct db_blob blob = { (unsigned char *)"x", 1 };

	assert_int_equal(db_secret_insert(fx->db, &s, &blob), -ENOENT);
	assert_int_equal(db_secret_count(fx->db, fx->inst + 1000), 0);
}

static void test_secret_blobs(void **state)
{
	struct fx *fx = *state;
	struct db_secret s = secret_new(fx->inst, "BIG"), e = secret_new(fx->inst, "EMPTY");
	struct db_blob big = { malloc(1 << 20), 1 << 20 }, empty = { NULL, 0 }, b;
	char name[DB_NAME_MAX + 1];
	struct db_secret l;

	assert_non_null(big.data);
	for (size_t i = 0; i < big.len; i++)
		big.data[i] = (unsigned char)(i ^ (i >> 9));
	big.data[0] = 0;
	assert_int_equal(db_secret_insert(fx->db, &s, &big), 0);
	assert_int_equal(db_secret_blob(fx->db, s.id, NULL, &b), 0);
	assert_int_equal(b.len, big.len);
	assert_memory_equal(b.data, big.data, big.len);
	db_blob_free(&b);
	free(big.data);

	assert_int_equal(db_secret_insert(fx->db, &e, &empty), 0);
	assert_int_equal(db_secret_blob(fx->db, e.id, NULL, &b), 0);
	assert_int_equal(b.len, 0);
	db_blob_free(&b);

	memset(name, 'n', DB_NAME_MAX);
	name[DB_NAME_MAX] = '\0';
	l = secret_new(fx->inst, name);
	secret_insert(fx->db, &l, "long");
	assert_int_equal(db_secret_find(fx->db, fx->inst, name, &l), 0);
	assert_int_equal(strlen(l.name), DB_NAME_MAX);
}

static void test_secret_each(void **state)
{
	static const char *const names[] = { "Z", "A", "M", "B" };
	struct fx *fx = *state;
	struct db_secret s[4];
	struct names c = { .stop_at = 0 };

	for (int i = 0; i < 4; i++) {
		s[i] = secret_new(fx->inst, names[i]);
		secret_insert(fx->db, &s[i], names[i]);
	}
	assert_int_equal(db_secret_each(fx->db, fx->inst, 0, collect_secret, &c), 0);
	assert_int_equal(c.n, 4);
	for (int i = 0; i < 4; i++) {
		assert_string_equal(c.name[i], names[i]);
		assert_int_equal(c.id[i], s[i].id);
	}
	memset(&c, 0, sizeof(c));
	assert_int_equal(db_secret_each(fx->db, fx->inst, s[1].id, collect_secret, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.name[0], "M");
	assert_string_equal(c.name[1], "B");

	memset(&c, 0, sizeof(c));
	c.stop_at = 1;
	assert_int_equal(db_secret_each(fx->db, fx->inst, 0, collect_secret, &c), 43);
	assert_int_equal(c.n, 1);

	memset(&c, 0, sizeof(c));
	assert_int_equal(db_secret_each(fx->db, fx->inst, s[3].id, collect_secret, &c), 0);
	assert_int_equal(c.n, 0);
	assert_int_equal(db_secret_each(fx->db, fx->inst + 1000, 0, collect_secret, &c), 0);
	assert_int_equal(c.n, 0);
	assert_int_equal(db_secret_count(fx->db, fx->inst), 4);
	assert_int_equal(db_secret_count(fx->db, fx->inst + 1000), 0);
}

static void test_secret_set_value(void **state)
{
	struct fx *fx = *state;
	struct db_secret s = secret_new(fx->inst, "K"), got;
	struct db_blob b = { (unsigned char *)"sealed-v2", 9 };

	secret_insert(fx->db, &s, "sealed-v1");
	s.version = 2;
	s.size = 77;
	s.flags = 0;
	s.mtime_ns = 2000000002;
	s.chtime_ns = 2000000003;
	s.updated_by = 0;
	assert_int_equal(db_secret_set_value(fx->db, &s, &b), 0);
	assert_int_equal(db_secret_get(fx->db, s.id, &got), 0);
	assert_secret_equal(&got, &s);
	assert_int_equal(got.ctime_ns, 1000000001);
	assert_blob(fx->db, s.id, "sealed-v2");

	s.id += 1000;
	assert_int_equal(db_secret_set_value(fx->db, &s, &b), -ENOENT);
}

static void test_secret_set_attr(void **state)
{
	struct fx *fx = *state;
	struct db_secret s = secret_new(fx->inst, "K"), got;

	secret_insert(fx->db, &s, "sealed");
	assert_int_equal(db_secret_set_attr(fx->db, s.id, 7, 8, S_IFREG | 0400, 3000000003), 0);
	assert_int_equal(db_secret_get(fx->db, s.id, &got), 0);
	assert_int_equal(got.uid, 7);
	assert_int_equal(got.gid, 8);
	assert_int_equal(got.mode, 0400);
	assert_int_equal(got.chtime_ns, 3000000003);
	assert_int_equal(got.mtime_ns, s.mtime_ns);
	assert_int_equal(got.version, s.version);
	assert_blob(fx->db, s.id, "sealed");
	assert_int_equal(db_secret_set_attr(fx->db, s.id + 1000, 7, 8, 0400, 1), -ENOENT);
}

static void test_secret_rename(void **state)
{
	struct fx *fx = *state;
	struct db_secret a = secret_new(fx->inst, "OLD"), b = secret_new(fx->inst, "TAKEN"), got;
	struct db_blob blob = { (unsigned char *)"sealed-for-NEW", 14 };

	secret_insert(fx->db, &a, "sealed-for-OLD");
	secret_insert(fx->db, &b, "sealed-for-TAKEN");
	snprintf(a.name, sizeof(a.name), "NEW");
	a.version = 2;
	a.chtime_ns = 4000000004;
	assert_int_equal(db_secret_rename(fx->db, &a, &blob), 0);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "OLD", &got), -ENOENT);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "NEW", &got), 0);
	assert_int_equal(got.id, a.id);
	assert_int_equal(got.version, 2);
	assert_int_equal(got.chtime_ns, 4000000004);
	assert_blob(fx->db, a.id, "sealed-for-NEW");

	/* Onto a name in use: refused, nothing changed. */
	snprintf(a.name, sizeof(a.name), "TAKEN");
	a.version = 3;
	assert_int_equal(db_secret_rename(fx->db, &a, &blob), -EEXIST);
	assert_int_equal(db_secret_get(fx->db, a.id, &got), 0);
	assert_string_equal(got.name, "NEW");
	assert_int_equal(got.version, 2);
	assert_blob(fx->db, b.id, "sealed-for-TAKEN");

	a.id += 1000;
	snprintf(a.name, sizeof(a.name), "FREE");
	assert_int_equal(db_secret_rename(fx->db, &a, &blob), -ENOENT);
}

static void test_secret_delete(void **state)
{
	struct fx *fx = *state;
	struct db_secret a = secret_new(fx->inst, "A"), b = secret_new(fx->inst, "B"), got;

	secret_insert(fx->db, &a, "a");
	secret_insert(fx->db, &b, "b");
	assert_int_equal(db_secret_delete(fx->db, a.id), 0);
	assert_int_equal(db_secret_get(fx->db, a.id, &got), -ENOENT);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "A", &got), -ENOENT);
	assert_int_equal(db_secret_delete(fx->db, a.id), -ENOENT);
	assert_int_equal(db_secret_get(fx->db, b.id, &got), 0);
	assert_int_equal(db_secret_count(fx->db, fx->inst), 1);
	/* The name is free again. */
	secret_insert(fx->db, &a, "a2");
	assert_blob(fx->db, a.id, "a2");
}

static void test_meta(void **state)
{
	static const unsigned char bin[] = { 0, 1, 2, 0, 255 };
	struct fx *fx = *state;
	struct db_blob b = { (unsigned char *)&b, 99 };

	assert_int_equal(db_meta_get(fx->db, "nosuch", &b), -ENOENT);
	assert_null(b.data);
	assert_int_equal(db_meta_set(fx->db, "check", bin, sizeof(bin)), 0);
	assert_int_equal(db_meta_get(fx->db, "check", &b), 0);
	assert_int_equal(b.len, sizeof(bin));
	assert_memory_equal(b.data, bin, sizeof(bin));
	db_blob_free(&b);
	assert_int_equal(db_meta_set(fx->db, "check", (const unsigned char *)"v2", 2), 0);
	assert_int_equal(db_meta_get(fx->db, "check", &b), 0);
	assert_int_equal(b.len, 2);
	assert_memory_equal(b.data, "v2", 2);
	db_blob_free(&b);
	assert_int_equal(db_meta_set(fx->db, "empty", NULL, 0), 0);
	assert_int_equal(db_meta_get(fx->db, "empty", &b), 0);
	assert_int_equal(b.len, 0);
	db_blob_free(&b);
	assert_int_equal(db_meta_get(fx->db, "Check", &b), -ENOENT);
}

static void test_transactions(void **state)
{
	struct fx *fx = *state;
	struct db_secret s = secret_new(fx->inst, "K"), got;
	struct db_blob b;

	assert_int_equal(db_begin(fx->db), 0);
	secret_insert(fx->db, &s, "v");
	assert_int_equal(db_meta_set(fx->db, "m", (const unsigned char *)"1", 1), 0);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &got), 0);
	db_rollback(fx->db);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &got), -ENOENT);
	assert_int_equal(db_meta_get(fx->db, "m", &b), -ENOENT);
	assert_int_equal(db_secret_count(fx->db, fx->inst), 0);

	assert_int_equal(db_begin(fx->db), 0);
	secret_insert(fx->db, &s, "v");
	assert_int_equal(db_secret_set_attr(fx->db, s.id, 1, 2, 0400, 5), 0);
	assert_int_equal(db_commit(fx->db), 0);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &got), 0);
	assert_int_equal(got.mode, 0400);

	/* A failed step inside a transaction, then rollback: the store is as before. */
	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(db_secret_set_attr(fx->db, s.id, 3, 3, 0440, 6), 0);
	s.id = 0;
	assert_int_equal(db_secret_insert(fx->db, &s, &(struct db_blob){ (unsigned char *)"v", 1 }),
			 -EEXIST);
	db_rollback(fx->db);
	assert_int_equal(db_secret_get(fx->db, got.id, &got), 0);
	assert_int_equal(got.mode, 0400);
	assert_int_equal(got.uid, 1);

	/* Committed work survives closing and reopening. */
	db_close(fx->db);
	fx->db = NULL;
	assert_int_equal(db_open(&fx->db, fx->path, 0), 0);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &got), 0);
	assert_int_equal(got.uid, 1);
	assert_blob(fx->db, got.id, "v");
}

static void test_now(void **state)
{
	int64_t a = db_now_ns(), b = db_now_ns();

	assert_true(a > (int64_t)1600000000 * 1000000000);
	assert_true(b >= a);
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
#define DB_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup_open, fx_teardown)

/* schema_expected.h against the migrations: the table open compares a
 * file with must be what the migrations make. */
struct schema_walk {
	size_t i;
	int bad;
	FILE *dump;
};

static void put_c_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n\"\n\t\t\"", f);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\%03o", (unsigned char)*s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void schema_each(void *ctx, const char *type, const char *name, const char *tbl,
			const char *sql)
{
	struct schema_walk *w = ctx;
	size_t n = sizeof(schema_expected) / sizeof(schema_expected[0]);

	if (w->dump) {
		fprintf(w->dump, "\t{ \"%s\", \"%s\", \"%s\",\n\t\t", type, name, tbl);
		put_c_string(w->dump, sql);
		fputs(" },\n", w->dump);
	} else if (w->i >= n || strcmp(type, schema_expected[w->i].type) ||
		   strcmp(name, schema_expected[w->i].name) ||
		   strcmp(tbl, schema_expected[w->i].tbl) ||
		   strcmp(sql, schema_expected[w->i].sql)) {
		fprintf(stderr, "db/schema_expected.h differs from the migrations at %s %s: "
			"run `make schema-expected`\n", type, name);
		w->bad++;
	}
	w->i++;
}

static void test_schema_expected(void **state)
{
	struct schema_walk w = { 0 };

	(void)state;
	assert_int_equal(sq_schema_fresh(schema_each, &w), 0);
	assert_int_equal(w.bad, 0);
	assert_int_equal(w.i, sizeof(schema_expected) / sizeof(schema_expected[0]));
}

/* `test_db --dump-schema` writes schema_expected.h (make schema-expected). */
static int dump_schema(void)
{
	struct schema_walk w = { .dump = stdout };

	printf("/* Written by `make schema-expected` from the migrations in sqlite_schema.c:\n"
	       " * the objects of a fresh vault's sqlite_master, sorted by type and\n"
	       " * name, which sq_schema_check compares a file with. Do not edit. */\n"
	       "static const struct schema_obj {\n"
	       "\tconst char *type, *name, *tbl, *sql;\n"
	       "} schema_expected[] = {\n");
	if (sq_schema_fresh(schema_each, &w) < 0)
		return 1;
	printf("};\n");
	return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest sqlite_files[] = {
		cmocka_unit_test(test_schema_expected),
		FX_TEST(test_journal_mode_bits),
		FX_TEST(test_open_missing),
		FX_TEST(test_open_garbage),
		FX_TEST(test_open_foreign),
		FX_TEST(test_open_newer),
		FX_TEST(test_audit_open_foreign),
		FX_TEST(test_schema_calls_no_tag_function),
		FX_TEST(test_files),
	};
	const struct CMUnitTest tests[] = {
		FX_TEST(test_create_and_reopen),
		DB_TEST(test_readonly),
		DB_TEST(test_instances),
		DB_TEST(test_instance_each),
		DB_TEST(test_instance_delete),
		DB_TEST(test_secrets),
		DB_TEST(test_secret_unique),
		DB_TEST(test_secret_no_instance),
		DB_TEST(test_secret_blobs),
		DB_TEST(test_secret_each),
		DB_TEST(test_secret_set_value),
		DB_TEST(test_secret_set_attr),
		DB_TEST(test_secret_rename),
		DB_TEST(test_secret_delete),
		DB_TEST(test_meta),
		DB_TEST(test_transactions),
		cmocka_unit_test(test_now),
	};

	struct tmpdir t;
	char spec[512];
	int failed;
	bool sqlite;

	if (argc == 2 && !strcmp(argv[1], "--dump-schema"))
		return dump_schema();
	sqlite = tmpdir_make(&t, "spec") == 0 && store_spec(&t, "vault.db", spec, sizeof(spec));
	tmpdir_remove(&t);
	failed = cmocka_run_group_tests_name("db", tests, NULL, NULL);
	if (sqlite)
		failed += cmocka_run_group_tests_name("db: SQLite's files", sqlite_files, NULL,
						      NULL);
	return failed;
}
