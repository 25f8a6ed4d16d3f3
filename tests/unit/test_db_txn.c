/* The store's transactions: nesting, and reads from other threads while a
 * write transaction is open (db/db.h). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixture.h"

#include "../../db/db.h"
#include "test_auth.h"

struct fx {
	struct tmpdir tmp;
	char path[128];
	struct db *db;
	int64_t inst;
};

static const struct db_blob wrapped = { (unsigned char *)"wrapped", 7 };

static int fx_setup(void **state)
{
	struct db_instance in = { .mode = 0750, .generation = 1 };
	struct fx *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	if (tmpdir_make(&fx->tmp, "txn") < 0)
		return -1;
	snprintf(fx->path, sizeof(fx->path), "%s/vault.db", fx->tmp.path);
	snprintf(in.name, sizeof(in.name), "app");
	if (db_open(&fx->db, fx->path, DB_CREATE) || db_instance_create(fx->db, &in, &wrapped))
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

static int insert(struct fx *fx, const char *name, const char *value)
{
	struct db_secret s = { .instance_id = fx->inst, .mode = 0600, .version = 1 };
	struct db_blob b = { (unsigned char *)value, strlen(value) };

	snprintf(s.name, sizeof(s.name), "%s", name);
	s.size = b.len;
	return db_secret_insert(fx->db, &s, &b);
}

static bool exists(struct db *db, int64_t inst, const char *name)
{
	struct db_secret s;

	return db_secret_find(db, inst, name, &s) == 0;
}

/* A begin inside a transaction is a savepoint: its rollback undoes its own
 * work only, and everything becomes durable with the outer commit. */
static void test_nested(void **state)
{
	struct fx *fx = *state;
	struct db *again;

	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(insert(fx, "OUTER", "o"), 0);

	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(insert(fx, "KEPT", "k"), 0);
	assert_int_equal(db_commit(fx->db), 0);

	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(insert(fx, "UNDONE", "u"), 0);
	assert_int_equal(insert(fx, "KEPT", "dup"), -EEXIST);
	db_rollback(fx->db);

	assert_true(exists(fx->db, fx->inst, "OUTER"));
	assert_true(exists(fx->db, fx->inst, "KEPT"));
	assert_false(exists(fx->db, fx->inst, "UNDONE"));
	assert_int_equal(db_commit(fx->db), 0);

	/* Committed: another connection sees it. */
	assert_int_equal(db_open(&again, fx->path, 0), 0);
	assert_true(exists(again, fx->inst, "OUTER"));
	assert_true(exists(again, fx->inst, "KEPT"));
	assert_false(exists(again, fx->inst, "UNDONE"));
	db_close(again);
}

/* An outer rollback takes the inner committed savepoints with it. */
static void test_nested_outer_rollback(void **state)
{
	struct fx *fx = *state;

	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(insert(fx, "INNER", "i"), 0);
	assert_int_equal(db_commit(fx->db), 0);
	db_rollback(fx->db);
	assert_false(exists(fx->db, fx->inst, "INNER"));

	/* And the store is usable afterwards, with a fresh transaction. */
	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(insert(fx, "AFTER", "a"), 0);
	assert_int_equal(db_commit(fx->db), 0);
	assert_true(exists(fx->db, fx->inst, "AFTER"));
}

struct peek {
	struct fx *fx;
	pthread_barrier_t started;
	pid_t tid;
	int found;		/* db_secret_find's result for "PENDING" */
	int64_t count;
};

static void *peek_main(void *arg)
{
	struct peek *pk = arg;
	struct db_secret s;

	pk->tid = (pid_t)syscall(SYS_gettid);
	pthread_barrier_wait(&pk->started);
	pk->found = db_secret_find(pk->fx->db, pk->fx->inst, "PENDING", &s);
	pk->count = db_secret_count(pk->fx->db, pk->fx->inst);
	return NULL;
}

/* Whether thread tid sleeps in futex(2), as a thread waiting for a lock
 * does: the first field of /proc/self/task/TID/syscall. */
static bool blocked_on_lock(pid_t tid)
{
	char path[64], buf[64] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
	f = fopen(path, "r");
	if (!f)
		return false;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	return atol(buf) == SYS_futex;
}

/* With readers, a read that comes while another thread's write transaction
 * is open still waits for it and sees its result (a value committed at
 * FUSE's asynchronous RELEASE must be what the next open reads); the
 * writing thread sees its own changes. */
/* A lazy transaction commits (another connection sees it) and rolls back
 * like any other; it can't be nested; the ones after it work as before. */
static void test_lazy(void **state)
{
	struct fx *fx = *state;
	struct db *again;

	assert_int_equal(db_begin_lazy(fx->db), 0);
	assert_int_equal(insert(fx, "LAZY", "l"), 0);
	assert_int_equal(db_commit(fx->db), 0);
	assert_int_equal(db_begin_lazy(fx->db), 0);
	assert_int_equal(insert(fx, "UNDONE", "u"), 0);
	db_rollback(fx->db);
	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(db_begin_lazy(fx->db), -EBUSY);
	assert_int_equal(insert(fx, "SYNCED", "s"), 0);
	assert_int_equal(db_commit(fx->db), 0);
	assert_int_equal(db_open(&again, fx->path, 0), 0);
	assert_true(exists(again, fx->inst, "LAZY"));
	assert_true(exists(again, fx->inst, "SYNCED"));
	assert_false(exists(again, fx->inst, "UNDONE"));
	db_close(again);
}

static void test_readers_wait_for_writer(void **state)
{
	struct fx *fx = *state;
	struct peek pk = { .fx = fx };
	struct db_secret s;
	pthread_t t;

	db_set_readers(fx->db, 2);
	assert_int_equal(insert(fx, "COMMITTED", "c"), 0);
	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(insert(fx, "PENDING", "p"), 0);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "PENDING", &s), 0);
	pthread_barrier_init(&pk.started, NULL, 2);
	assert_int_equal(pthread_create(&t, NULL, peek_main, &pk), 0);
	pthread_barrier_wait(&pk.started);
	/* The read must wait for the transaction: it blocks, whatever the
	 * scheduling, and stays blocked until the commit. */
	for (int i = 0; i < 10000 && !blocked_on_lock(pk.tid); i++)
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	assert_true(blocked_on_lock(pk.tid));
	assert_int_equal(pk.count, 0);
	assert_int_equal(db_commit(fx->db), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	pthread_barrier_destroy(&pk.started);
	assert_int_equal(pk.found, 0);
	assert_int_equal(pk.count, 2);

	/* A rolled-back change is never seen. */
	assert_int_equal(db_begin(fx->db), 0);
	assert_int_equal(insert(fx, "GONE", "g"), 0);
	db_rollback(fx->db);
	assert_int_equal(db_secret_count(fx->db, fx->inst), 2);
	assert_false(exists(fx->db, fx->inst, "GONE"));
}

/* A change committed on the writer is seen by the next read at once, and
 * reads keep working while many threads share few readers. */
static void *reread_main(void *arg)
{
	struct fx *fx = arg;
	struct db_secret s;

	for (int i = 0; i < 200; i++)
		if (db_secret_find(fx->db, fx->inst, "COMMITTED", &s) != 0)
			return (void *)1;
	return NULL;
}

static void test_readers_coherent(void **state)
{
	struct fx *fx = *state;
	struct db_blob b = { (unsigned char *)"v2", 2 };
	struct db_secret s, got;
	pthread_t t[6];
	void *ret;

	db_set_readers(fx->db, 2);
	assert_int_equal(insert(fx, "COMMITTED", "v1"), 0);
	assert_int_equal(db_secret_find(fx->db, fx->inst, "COMMITTED", &s), 0);
	s.version = 2;
	s.size = 2;
	assert_int_equal(db_secret_set_value(fx->db, &s, &b), 0);
	assert_int_equal(db_secret_get(fx->db, s.id, &got), 0);
	assert_int_equal(got.version, 2);
	for (int i = 0; i < 6; i++)
		assert_int_equal(pthread_create(&t[i], NULL, reread_main, fx), 0);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(pthread_join(t[i], &ret), 0);
		assert_null(ret);
	}
}

struct writer {
	struct fx *fx;
	int r;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;

	w->r = insert(w->fx, "LATER", "l");
	return NULL;
}

/* Between db_read_begin and db_read_end a thread reads one snapshot: a
 * commit made meanwhile shows after db_read_end, and the thread's own
 * writes show at once. */
static void test_pinned_snapshot(void **state)
{
	struct fx *fx = *state;
	struct writer w = { .fx = fx };
	pthread_t t;

	db_set_readers(fx->db, 2);
	assert_int_equal(insert(fx, "FIRST", "f"), 0);
	db_read_begin(fx->db);
	assert_true(exists(fx->db, fx->inst, "FIRST"));
	assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(w.r, 0);
	assert_false(exists(fx->db, fx->inst, "LATER"));	/* the snapshot */
	assert_int_equal(db_secret_count(fx->db, fx->inst), 1);

	assert_int_equal(db_begin(fx->db), 0);		/* our own write... */
	assert_int_equal(insert(fx, "OWN", "o"), 0);
	assert_true(exists(fx->db, fx->inst, "OWN"));	/* ...is seen */
	db_rollback(fx->db);

	db_read_end(fx->db);
	assert_true(exists(fx->db, fx->inst, "LATER"));
	assert_false(exists(fx->db, fx->inst, "OWN"));
	db_read_end(fx->db);				/* unpaired: nothing */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_nested, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_nested_outer_rollback, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_lazy, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_readers_wait_for_writer, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_readers_coherent, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_pinned_snapshot, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
