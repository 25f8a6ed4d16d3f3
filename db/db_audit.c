/*
 * The audit log's functions (db_audit.h), for every store: a log is a
 * store handle, the store's own (attached: its rows commit in the
 * caller's transaction) or one opened for the log alone (DB_LOG), and its
 * transactions and meta are that handle's.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

struct db_audit {
	struct db *db;
	bool own;		/* opened for the log: closed with it */
};

static int audit_new(struct db_audit **out, struct db *db, bool own)
{
	struct db_audit *a = calloc(1, sizeof(*a));

	*out = a;
	if (!a)
		return -ENOMEM;
	a->db = db;
	a->own = own;
	return 0;
}

int db_audit_open(struct db_audit **out, const char *spec, bool readonly)
{
	struct db *db = NULL;
	int r;

	*out = NULL;
	r = db_store_for(spec)->open(&db, spec, DB_LOG | (readonly ? DB_READONLY : 0));
	if (r == 0 && (r = audit_new(out, db, true)) < 0)
		db_close(db);
	return r;
}

int db_audit_attach(struct db_audit **out, struct db *db)
{
	return audit_new(out, db, false);
}

void db_audit_close(struct db_audit *a)
{
	if (!a)
		return;
	if (a->own)
		db_close(a->db);
	free(a);
}

int db_audit_begin(struct db_audit *a)
{
	return db_begin(a->db);
}

/* Attached, a lazy begin inside the caller's transaction is a savepoint
 * of it (-EBUSY: then an ordinary one); on its own handle every commit of
 * the log is synced. */
int db_audit_begin_lazy(struct db_audit *a)
{
	int r = a->own ? -EBUSY : db_begin_lazy(a->db);

	return r == -EBUSY ? db_begin(a->db) : r;
}

int db_audit_commit(struct db_audit *a)
{
	return db_commit(a->db);
}

void db_audit_rollback(struct db_audit *a)
{
	db_rollback(a->db);
}

int db_audit_read_begin(struct db_audit *a)
{
	return a->db->ops->snapshot_begin(a->db);
}

void db_audit_read_end(struct db_audit *a)
{
	a->db->ops->snapshot_end(a->db);
}

int db_audit_insert(struct db_audit *a, const struct db_audit_row *row)
{
	return a->db->ops->audit_insert(a->db, row);
}

int db_audit_last(struct db_audit *a, struct db_audit_row *out)
{
	return a->db->ops->audit_last(a->db, INT64_MAX, out);
}

int db_audit_last_before(struct db_audit *a, int64_t before_ns, struct db_audit_row *out)
{
	return a->db->ops->audit_last(a->db, before_ns, out);
}

int db_audit_delete_upto(struct db_audit *a, int64_t seq)
{
	return a->db->ops->audit_delete_upto(a->db, seq);
}

int db_audit_each(struct db_audit *a, const struct db_audit_filter *f,
		  int (*fn)(void *, const struct db_audit_row *), void *ctx)
{
	return a->db->ops->audit_each(a->db, f, fn, ctx);
}

int db_audit_checkpoint(struct db_audit *a)
{
	return a->db->ops->audit_tidy(a->db);
}

int db_audit_meta_get(struct db_audit *a, const char *key, unsigned char *buf, size_t len)
{
	struct db_blob b;
	int r = db_meta_get(a->db, key, &b);

	if (r < 0)
		return r;
	if (b.len != len)
		r = -EPROTO;
	else if (len)
		memcpy(buf, b.data, len);
	db_blob_free(&b);
	return r;
}

int db_audit_meta_set(struct db_audit *a, const char *key, const unsigned char *buf,
		      size_t len)
{
	return db_meta_set(a->db, key, buf, len);
}

int db_audit_meta_add(struct db_audit *a, const char *key, const unsigned char *buf,
		      size_t len)
{
	return a->db->ops->meta_add(a->db, key, buf, len);
}
