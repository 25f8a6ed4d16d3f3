/* The audit log's rows in the store. No crypto here: the chain's MACs are
 * computed by fs/audit.c and stored as given. Its own connection, so a
 * batch of entries never waits behind the filesystem's queries; or the
 * store's (db_audit_attach). Store-neutral: each store serves it. */
#ifndef VAULTFS_DB_AUDIT_H
#define VAULTFS_DB_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"

#define DB_AUDIT_MAC_LEN 32

struct db_audit;

struct db_audit_row {
	int64_t seq;		/* position in the chain, from 1 */
	int64_t time_ns;	/* of the last event it records */
	int64_t first_ns;	/* of the first (time_ns for a single event) */
	int64_t count;		/* events folded into it, 1 or more */
	uint32_t uid, gid;
	int32_t pid;
	int32_t result;		/* 0 or an errno */
	char comm[64];
	char instance[DB_NAME_MAX + 1];
	char key[DB_NAME_MAX + 1];
	char op[16];
	char detail[DB_NAME_MAX + 64];
	unsigned char mac[DB_AUDIT_MAC_LEN];
};

struct db_audit_filter {
	const char *instance;	/* NULL: any */
	const char *key;	/* NULL: any */
	int64_t since_ns;	/* entries at or after */
};

/* The log on a connection of its own to the store at spec (as db_open's). */
int db_audit_open(struct db_audit **out, const char *spec, bool readonly) WUR;
void db_audit_close(struct db_audit *a);
/* The log on the store's own connection: begin, commit and rollback are
 * db_begin, db_commit and db_rollback, so inside the caller's write
 * transaction rows commit with it. Close it before the store. */
int db_audit_attach(struct db_audit **out, struct db *db) WUR;

/* A write transaction held by the calling thread, as db_begin(). */
int db_audit_begin(struct db_audit *a) WUR;
/* The same, committed without waiting for the disk (db_begin_lazy) when
 * attached; as db_audit_begin otherwise. */
int db_audit_begin_lazy(struct db_audit *a) WUR;
int db_audit_commit(struct db_audit *a) WUR;
void db_audit_rollback(struct db_audit *a);

/* A read snapshot held by the calling thread: every read until
 * db_audit_read_end() sees the same committed state, whatever other
 * connections commit meanwhile. */
int db_audit_read_begin(struct db_audit *a) WUR;
void db_audit_read_end(struct db_audit *a);

int db_audit_insert(struct db_audit *a, const struct db_audit_row *row) WUR;
/* The row with the highest seq; -ENOENT if the log is empty. */
int db_audit_last(struct db_audit *a, struct db_audit_row *out) WUR;
/* The last row older than before_ns; -ENOENT if none. */
int db_audit_last_before(struct db_audit *a, int64_t before_ns,
			 struct db_audit_row *out) WUR;
int db_audit_delete_upto(struct db_audit *a, int64_t seq) WUR;
/* Rows in seq order; fn returns nonzero to stop, and that is returned. */
int db_audit_each(struct db_audit *a, const struct db_audit_filter *f,
		  int (*fn)(void *, const struct db_audit_row *), void *ctx) WUR;

/* Lets the store tidy what the log's writes left behind (SQLite: copies
 * the write-ahead log back and truncates it), without waiting for anyone:
 * -EBUSY if a reader or writer is in the way; then try again later. */
int db_audit_checkpoint(struct db_audit *a);

/* A meta value of exactly len bytes: -ENOENT if absent, -EPROTO if its
 * length differs. */
int db_audit_meta_get(struct db_audit *a, const char *key, unsigned char *buf,
		      size_t len) WUR;
int db_audit_meta_set(struct db_audit *a, const char *key, const unsigned char *buf,
		      size_t len) WUR;
/* Adds a meta value unless the key exists: -EEXIST then. */
int db_audit_meta_add(struct db_audit *a, const char *key, const unsigned char *buf,
		      size_t len) WUR;

#endif
