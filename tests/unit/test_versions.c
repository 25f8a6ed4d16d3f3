/* The store's versions, trash, attributes and backups (db/db_versions.h,
 * db/db_attrs.h, db/db_backup.h), against $VAULTFS_TEST_STORE (fixture.h);
 * a backup is a SQLite file whatever the store. */
#include <dirent.h>
#include <errno.h>
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

#include "../../db/db_attrs.h"
#include "../../db/db_backup.h"
#include "../../db/db_versions.h"
#include "test_auth.h"

struct fx {
	struct tmpdir tmp;
	char path[512];		/* the store's spec */
	struct db *db;
	int64_t inst;
};

static const struct db_blob wrap1 = { (unsigned char *)"wrapped-key-1", 13 };

static int fx_setup(void **state)
{
	struct db_instance in = { .uid = 0, .gid = 0, .mode = 0700, .generation = 1 };
	struct fx *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	if (tmpdir_make(&fx->tmp, "versions") < 0)
		return -1;
	store_spec(&fx->tmp, "vault.db", fx->path, sizeof(fx->path));
	snprintf(in.name, sizeof(in.name), "app");
	if (db_open(&fx->db, fx->path, DB_CREATE) || db_instance_create(fx->db, &in, &wrap1))
		return -1;
	fx->inst = in.id;
	*state = fx;
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

static struct db_blob blob_of(const char *s)
{
	return (struct db_blob){ (unsigned char *)s, strlen(s) };
}

static struct db_secret put_secret(struct fx *fx, const char *name, const char *value)
{
	struct db_secret s = { .instance_id = fx->inst, .mode = 0600, .version = 1,
			       .size = strlen(value), .ctime_ns = 11, .mtime_ns = 12,
			       .chtime_ns = 13 };
	struct db_blob b = blob_of(value);

	snprintf(s.name, sizeof(s.name), "%s", name);
	assert_int_equal(db_secret_insert(fx->db, &s, &b), 0);
	return s;
}

/* A new value as the next version, the way the vault writes one. */
static void write_next(struct fx *fx, struct db_secret *s, const char *value, unsigned keep)
{
	struct db_blob b = blob_of(value);

	assert_int_equal(db_version_archive(fx->db, s->id, false, keep), 0);
	s->version++;
	s->size = strlen(value);
	s->mtime_ns += 1000;
	assert_int_equal(db_secret_set_value(fx->db, s, &b), 0);
}

static void assert_version_blob(struct fx *fx, int64_t id, uint64_t version, const char *want)
{
	struct db_blob b;
	struct db_version v;

	assert_int_equal(db_version_get(fx->db, id, version, &v, &b), 0);
	assert_int_equal(v.version, version);
	assert_int_equal(b.len, strlen(want));
	assert_memory_equal(b.data, want, b.len);
	db_blob_free(&b);
}

static int count_cb(void *ctx, const struct db_version *v)
{
	uint64_t *last = ctx;

	assert_true(*last == 0 || v->version < *last);	/* newest first */
	*last = v->version;
	return 0;
}

static size_t versions_of(struct fx *fx, int64_t id)
{
	uint64_t last = 0;
	size_t n = 0;
	struct db_version v;

	for (uint64_t i = 0; i < 100; i++)
		n += db_version_get(fx->db, id, i, &v, NULL) == 0;
	assert_int_equal(db_version_each(fx->db, id, count_cb, &last), 0);
	return n;
}

static void test_archive_and_prune(void **state)
{
	struct fx *fx = *state;
	struct db_secret s = put_secret(fx, "K", "v1");

	write_next(fx, &s, "v2", 9);
	write_next(fx, &s, "v3", 9);
	assert_int_equal(versions_of(fx, s.id), 2);
	assert_version_blob(fx, s.id, 1, "v1");
	assert_version_blob(fx, s.id, 2, "v2");
	assert_int_equal(db_version_get(fx->db, s.id, 3, &(struct db_version){ 0 }, NULL),
			 -ENOENT);
	/* Keeping 1 drops all but the newest old version. */
	write_next(fx, &s, "v4", 1);
	assert_int_equal(versions_of(fx, s.id), 1);
	assert_version_blob(fx, s.id, 3, "v3");
	write_next(fx, &s, "v5", 0);
	assert_int_equal(versions_of(fx, s.id), 0);
}

static void test_version_zero_is_not_archived(void **state)
{
	struct fx *fx = *state;
	struct db_secret s = put_secret(fx, "K", "");

	s.version = 0;
	assert_int_equal(db_secret_set_value(fx->db, &s, &(struct db_blob){ NULL, 0 }), 0);
	write_next(fx, &s, "v1", 9);
	assert_int_equal(versions_of(fx, s.id), 0);
	assert_int_equal(db_version_archive(fx->db, s.id, true, 9), 0);
	assert_int_equal(versions_of(fx, s.id), 1);
}

static void test_trash_restore_purge(void **state)
{
	struct fx *fx = *state;
	struct db_secret s = put_secret(fx, "K", "v1"), again, got;
	struct db_trash t;
	int64_t n = -1;

	write_next(fx, &s, "v2", 9);
	assert_int_equal(db_attr_set(fx->db, s.id, "description", "d", 1), 0);
	assert_int_equal(db_version_archive(fx->db, s.id, true, 10), 0);
	assert_int_equal(db_trash_put(fx->db, &s, 500, 77), 0);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &got), -ENOENT);
	assert_int_equal(db_trash_find(fx->db, fx->inst, "K", 0, &t), 0);
	assert_int_equal(t.secret_id, s.id);
	assert_int_equal(t.deleted_ns, 500);
	assert_int_equal(t.deleted_by, 77);
	assert_int_equal(t.version, 2);
	assert_int_equal(t.size, 2);
	assert_int_equal(db_trash_find(fx->db, fx->inst, "K", 501, &t), -ENOENT);

	/* A secret of that name blocks the restore. */
	again = put_secret(fx, "K", "other");
	assert_true(again.id > s.id);
	assert_int_equal(db_trash_restore(fx->db, s.id, 600), -EEXIST);
	assert_int_equal(db_secret_delete(fx->db, again.id), 0);

	assert_int_equal(db_trash_restore(fx->db, s.id, 600), 0);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "K", &got), 0);
	assert_int_equal(got.id, s.id);
	assert_int_equal(got.version, 2);
	assert_int_equal(got.ctime_ns, 11);
	assert_int_equal(got.chtime_ns, 600);
	assert_int_equal(versions_of(fx, s.id), 1);	/* v2 became current again */
	assert_int_equal(db_trash_find(fx->db, fx->inst, "K", 0, &t), -ENOENT);

	/* Purged: trash, versions and attributes. */
	assert_int_equal(db_version_archive(fx->db, s.id, true, 10), 0);
	assert_int_equal(db_trash_put(fx->db, &got, 700, 0), 0);
	assert_int_equal(db_trash_purge(fx->db, fx->inst, "OTHER", INT64_MAX, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(db_trash_purge(fx->db, fx->inst, "K", 700, &n), 0);
	assert_int_equal(n, 0);	/* deleted at 700: not before 700 */
	assert_int_equal(db_trash_purge(fx->db, fx->inst, "K", INT64_MAX, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(versions_of(fx, s.id), 0);
	assert_int_equal(db_attr_get(fx->db, s.id, "description", (char[8]){ 0 }, 8,
				     &(size_t){ 0 }), -ENOENT);
	assert_int_equal(db_trash_restore(fx->db, s.id, 800), -ENOENT);
}

static void test_adopt(void **state)
{
	struct fx *fx = *state;
	struct db_secret key = put_secret(fx, "KEY", "k1"), tmp = put_secret(fx, "tmp", "t1");
	struct db_secret got;
	char buf[16];
	size_t len;

	write_next(fx, &key, "k2", 9);
	write_next(fx, &tmp, "t2", 9);
	assert_int_equal(db_attr_set(fx->db, key.id, "description", "kd", 2), 0);
	assert_int_equal(db_attr_set(fx->db, key.id, "type", "kt", 2), 0);
	assert_int_equal(db_attr_set(fx->db, tmp.id, "type", "tt", 2), 0);
	assert_int_equal(db_version_archive(fx->db, key.id, false, 9), 0);
	assert_int_equal(db_secret_adopt(fx->db, tmp.id, key.id), 0);
	assert_int_equal(db_secret_get(fx->db, key.id, &got), -ENOENT);
	assert_int_equal(versions_of(fx, tmp.id), 2);	/* KEY's v1 and v2, not tmp's */
	assert_version_blob(fx, tmp.id, 2, "k2");
	assert_int_equal(db_attr_get(fx->db, tmp.id, "description", buf, sizeof(buf), &len), 0);
	assert_memory_equal(buf, "kd", 2);
	assert_int_equal(db_attr_get(fx->db, tmp.id, "type", buf, sizeof(buf), &len), 0);
	assert_memory_equal(buf, "tt", 2);	/* its own wins */
	assert_int_equal(db_secret_adopt(fx->db, tmp.id, tmp.id), -EINVAL);
}

struct ids {
	int64_t id[8];
	bool live[8];
	size_t n;
};

static int ids_cb(void *ctx, int64_t id, const char *name, bool live)
{
	struct ids *l = ctx;

	(void)name;
	l->id[l->n] = id;
	l->live[l->n++] = live;
	return 0;
}

static void test_instance_secret_ids_and_key(void **state)
{
	struct fx *fx = *state;
	struct db_secret a = put_secret(fx, "A", "a"), b = put_secret(fx, "B", "b");
	struct db_instance in;
	struct db_blob w;
	struct ids l = { 0 };

	assert_int_equal(db_version_archive(fx->db, a.id, true, 9), 0);
	assert_int_equal(db_trash_put(fx->db, &a, 1, 0), 0);
	assert_int_equal(db_instance_secret_ids(fx->db, fx->inst, ids_cb, &l), 0);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.id[0], b.id);
	assert_true(l.live[0]);
	assert_int_equal(l.id[1], a.id);
	assert_false(l.live[1]);
	assert_int_equal(db_instance_key(fx->db, fx->inst, &in, &w), 0);
	assert_string_equal(in.name, "app");
	assert_int_equal(in.generation, 1);
	assert_int_equal(w.len, wrap1.len);
	db_blob_free(&w);
	/* An instance's trash holds it until purged. */
	assert_int_equal(db_secret_delete(fx->db, b.id), 0);
	assert_int_not_equal(db_instance_delete(fx->db, fx->inst), 0);
	assert_int_equal(db_trash_purge(fx->db, fx->inst, NULL, INT64_MAX, NULL), 0);
	assert_int_equal(db_instance_delete(fx->db, fx->inst), 0);
}

static void test_attrs(void **state)
{
	struct fx *fx = *state;
	struct db_secret s = put_secret(fx, "K", "v");
	char buf[4];
	size_t len;

	assert_int_equal(db_attr_get(fx->db, s.id, "type", buf, sizeof(buf), &len), -ENOENT);
	assert_int_equal(db_attr_set(fx->db, s.id, "type", "abcdef", 6), 0);
	assert_int_equal(db_attr_get(fx->db, s.id, "type", buf, sizeof(buf), &len), -ERANGE);
	assert_int_equal(len, 6);
	assert_int_equal(db_attr_set(fx->db, s.id, "type", "ab", 2), 0);
	assert_int_equal(db_attr_get(fx->db, s.id, "type", buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 2);
	assert_int_equal(db_attr_set(fx->db, s.id, "type", "", 0), 0);
	assert_int_equal(db_attr_get(fx->db, s.id, "type", buf, sizeof(buf), &len), -ENOENT);
	/* Removing what is not there is no error. */
	assert_int_equal(db_attr_set(fx->db, s.id, "type", "", 0), 0);
}

static void test_backup_and_restore(void **state)
{
	struct fx *fx = *state;
	struct db_secret s = put_secret(fx, "K", "before"), got;
	char bak[PATH_MAX], copy[PATH_MAX];
	struct stat st;
	struct db_blob b;

	write_next(fx, &s, "before-2", 9);
	snprintf(bak, sizeof(bak), "%s/backup.db", fx->tmp.path);
	snprintf(copy, sizeof(copy), "%s/copy.db", fx->tmp.path);
	assert_int_equal(db_backup(fx->db, bak), 0);
	assert_int_equal(stat(bak, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(db_backup(fx->db, bak), -EEXIST);
	assert_int_equal(db_copy_file(bak, copy), 0);

	write_next(fx, &s, "after", 9);
	put_secret(fx, "NEW", "new");
	assert_int_equal(db_restore(fx->db, copy), 0);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "NEW", &got), -ENOENT);
	assert_int_equal(db_secret_blob(fx->db, s.id, &got, &b), 0);
	assert_int_equal(got.version, 2);
	assert_memory_equal(b.data, "before-2", 8);
	db_blob_free(&b);
	assert_version_blob(fx, s.id, 1, "before");
	/* Ids are never handed out again: NEW's id stays used. */
	got = put_secret(fx, "NEWER", "x");
	assert_true(got.id > s.id + 1);
	/* Not a vault. */
	snprintf(copy, sizeof(copy), "%s/junk.db", fx->tmp.path);
	assert_int_equal(db_copy_file("/nonexistent/x.db", copy), -ENOENT);
}

#define FX(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX(test_archive_and_prune),
		FX(test_version_zero_is_not_archived),
		FX(test_trash_restore_purge),
		FX(test_adopt),
		FX(test_instance_secret_ids_and_key),
		FX(test_attrs),
		FX(test_backup_and_restore),
	};

	return cmocka_run_group_tests_name("versions", tests, NULL, NULL);
}
