/* Inside db/ only: the PostgreSQL store's shared parts. libpq types are
 * fine here; this header never leaves db/. */
#ifndef VAULTFS_PG_INT_H
#define VAULTFS_PG_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

/* libpq, loaded by the first open of a PostgreSQL store (pg_lib.c) rather
 * than linked: it brings twenty more libraries (TLS, Kerberos, LDAP...)
 * whose loading was two thirds of every `vaultfs get` on SQLite. The
 * prototypes above keep each call checked; the names below go through
 * the table. */
struct pg_lib {
	__typeof__(&PQclear) p_PQclear;
	__typeof__(&PQntuples) p_PQntuples;
	__typeof__(&PQgetvalue) p_PQgetvalue;
	__typeof__(&PQgetlength) p_PQgetlength;
	__typeof__(&PQfinish) p_PQfinish;
	__typeof__(&PQstatus) p_PQstatus;
	__typeof__(&PQresultStatus) p_PQresultStatus;
	__typeof__(&PQerrorMessage) p_PQerrorMessage;
	__typeof__(&PQexec) p_PQexec;
	__typeof__(&PQgetisnull) p_PQgetisnull;
	__typeof__(&PQfreemem) p_PQfreemem;
	__typeof__(&PQexecParams) p_PQexecParams;
	__typeof__(&PQconninfoParse) p_PQconninfoParse;
	__typeof__(&PQconninfoFree) p_PQconninfoFree;
	__typeof__(&PQbackendPID) p_PQbackendPID;
	__typeof__(&PQsocket) p_PQsocket;
	__typeof__(&PQresultErrorMessage) p_PQresultErrorMessage;
	__typeof__(&PQresultErrorField) p_PQresultErrorField;
	__typeof__(&PQnotifies) p_PQnotifies;
	__typeof__(&PQftype) p_PQftype;
	__typeof__(&PQescapeIdentifier) p_PQescapeIdentifier;
	__typeof__(&PQconsumeInput) p_PQconsumeInput;
	__typeof__(&PQconnectdbParams) p_PQconnectdbParams;
	__typeof__(&PQcmdTuples) p_PQcmdTuples;
	__typeof__(&PQcmdStatus) p_PQcmdStatus;
};
extern struct pg_lib pg_lib;
/* 0 once libpq is loaded, or -EPROTONOSUPPORT with the error set. */
int pg_lib_load(void);
#define PQclear (pg_lib.p_PQclear)
#define PQntuples (pg_lib.p_PQntuples)
#define PQgetvalue (pg_lib.p_PQgetvalue)
#define PQgetlength (pg_lib.p_PQgetlength)
#define PQfinish (pg_lib.p_PQfinish)
#define PQstatus (pg_lib.p_PQstatus)
#define PQresultStatus (pg_lib.p_PQresultStatus)
#define PQerrorMessage (pg_lib.p_PQerrorMessage)
#define PQexec (pg_lib.p_PQexec)
#define PQgetisnull (pg_lib.p_PQgetisnull)
#define PQfreemem (pg_lib.p_PQfreemem)
#define PQexecParams (pg_lib.p_PQexecParams)
#define PQconninfoParse (pg_lib.p_PQconninfoParse)
#define PQconninfoFree (pg_lib.p_PQconninfoFree)
#define PQbackendPID (pg_lib.p_PQbackendPID)
#define PQsocket (pg_lib.p_PQsocket)
#define PQresultErrorMessage (pg_lib.p_PQresultErrorMessage)
#define PQresultErrorField (pg_lib.p_PQresultErrorField)
#define PQnotifies (pg_lib.p_PQnotifies)
#define PQftype (pg_lib.p_PQftype)
#define PQescapeIdentifier (pg_lib.p_PQescapeIdentifier)
#define PQconsumeInput (pg_lib.p_PQconsumeInput)
#define PQconnectdbParams (pg_lib.p_PQconnectdbParams)
#define PQcmdTuples (pg_lib.p_PQcmdTuples)
#define PQcmdStatus (pg_lib.p_PQcmdStatus)

#include "store.h"

#define PG_PARAMS_MAX 16
#define PG_URI_MAX 4096

/* Parameters of one statement, sent in binary. */
struct pgq {
	const char *v[PG_PARAMS_MAX];
	int len[PG_PARAMS_MAX];
	int fmt[PG_PARAMS_MAX];
	Oid type[PG_PARAMS_MAX];
	unsigned char ints[PG_PARAMS_MAX][8];
	int n;
};

void pgq_int(struct pgq *q, int64_t v);
void pgq_text(struct pgq *q, const char *s);	/* NULL: SQL's NULL, as text */
void pgq_blob(struct pgq *q, const void *p, size_t len);

struct pg_listen;

#define PG_READERS_MAX 8

/* A connection of its own for reads outside transactions (db_set_readers). */
struct pg_reader {
	PGconn *conn;
	bool busy;
};

struct pgs {
	struct db base;		/* first: the handle db.c passes around */
	char uri[PG_URI_MAX];
	PGconn *conn;		/* the writer's, used under lock */
	pthread_mutex_t lock;	/* recursive */
	_Atomic pthread_t owner;	/* the thread in a transaction */
	unsigned depth;
	bool reading;		/* a db_read_begin snapshot holds the connection */
	bool broken;		/* the transaction's connection was lost */
	bool readonly;		/* DB_READONLY */
	int64_t next_try_ns;	/* no reconnect before this */
	const struct db_auth *auth, *auth_next;
	int64_t *dirty;		/* instances whose state to make at commit */
	size_t ndirty, dirty_cap;
	struct pg_listen *listen;
	pthread_mutex_t rlock;	/* the readers' busy flags */
	struct pg_reader readers[PG_READERS_MAX];
	unsigned nreaders;
	int64_t stale_ns;	/* how long a lost listener may go unnoticed */
};

extern const struct db_store_ops db_pg_ops;

/* The key new tags are made with: the next one during a rekey. */
static inline const struct db_auth *pg_write_auth(const struct pgs *s)
{
	return s->auth_next ? s->auth_next : s->auth;
}

/* The handle (pg_store.c). */
void pgs_close_handle(struct pgs *s);
/* One snapshot for the calling thread, holding the connection. */
void pg_snapshot_begin(struct pgs *s);
void pg_snapshot_end(struct pgs *s);
/* Wraps one change in its own transaction unless the caller holds one:
 * pgs_own_end commits if r is 0, else rolls back and returns r. */
int pgs_own_begin(struct pgs *s);
int pgs_own_end(struct pgs *s, int r);

/* The ops of pg_rows.c (instances, secrets), for db_pg_ops. */
int pgr_instance_create(struct db *db, struct db_instance *in, const struct db_blob *key);
int pgr_instance_get(struct db *db, int64_t id, struct db_instance *out);
int pgr_instance_find(struct db *db, const char *name, struct db_instance *out);
int pgr_instance_key(struct db *db, int64_t id, struct db_instance *in,
		     struct db_blob *wrapped);
int pgr_instance_set_key(struct db *db, int64_t id, uint64_t generation,
			 const struct db_blob *wrapped);
int pgr_instance_set_attr(struct db *db, int64_t id, uid_t uid, gid_t gid, mode_t mode,
			  int64_t now_ns);
int pgr_instance_delete(struct db *db, int64_t id);
int pgr_instance_each(struct db *db, int64_t after_id,
		      int (*fn)(void *, const struct db_instance *), void *ctx);
int64_t pgr_instance_count(struct db *db);
int pgr_secret_get(struct db *db, int64_t id, struct db_secret *out);
int pgr_secret_find(struct db *db, int64_t instance_id, const char *name,
		    struct db_secret *out);
int pgr_secret_blob(struct db *db, int64_t id, struct db_secret *meta, struct db_blob *out);
int pgr_secret_each(struct db *db, int64_t instance_id, int64_t after_id,
		    int (*fn)(void *, const struct db_secret *), void *ctx);
int64_t pgr_secret_count(struct db *db, int64_t instance_id);
int pgr_secret_insert(struct db *db, struct db_secret *m, const struct db_blob *blob, bool as_id);
int pgr_secret_id_reserve(struct db *db, int64_t *id);
int pgr_secret_set_value(struct db *db, const struct db_secret *in, const struct db_blob *blob);
int pgr_secret_set_attr(struct db *db, int64_t id, uid_t uid, gid_t gid, mode_t mode,
			int64_t now_ns);
int pgr_secret_rename(struct db *db, const struct db_secret *in, const struct db_blob *blob);
int pgr_secret_delete(struct db *db, int64_t id);
/* A row of a query of the table's columns (INST_COLS, SEC_COLS), its tag
 * checked: 0, -EIO, -EACCES. */
int pgr_row_instance(struct pgs *s, const PGresult *res, int row, struct db_instance *in);
int pgr_row_secret(struct pgs *s, const PGresult *res, int row, struct db_secret *m);
/* Reads the live row FOR UPDATE and checks it (and, with live, touches its
 * instance's state). */
int pgr_secret_locked(struct pgs *s, int64_t id, bool live, struct db_secret *m);

/* The ops of pg_hist.c (history, attributes, every-row passes), pg_trash.c
 * (deleted secrets), pg_audit.c (the audit log) and pg_backup.c, for
 * db_pg_ops. */
int pgh_touch_secret(struct pgs *s, int64_t secret_id, bool trash);
int pgh_version_archive(struct db *db, int64_t secret_id, bool with_v0, unsigned keep);
int pgh_version_get(struct db *db, int64_t secret_id, uint64_t version,
		    struct db_version *out, struct db_blob *blob);
int pgh_version_each(struct db *db, int64_t secret_id,
		     int (*fn)(void *, const struct db_version *), void *ctx);
int pgh_version_set_blob(struct db *db, int64_t secret_id, uint64_t version,
			 const struct db_blob *blob);
int pgh_secret_adopt(struct db *db, int64_t id, int64_t from_id);
int pgt_trash_put(struct db *db, const struct db_secret *m, int64_t now_ns, uid_t by);
int pgt_trash_find(struct db *db, int64_t instance_id, const char *name,
		   int64_t since_ns, struct db_trash *out);
int pgt_trash_each(struct db *db, int64_t instance_id,
		   int (*fn)(void *, const struct db_trash *), void *ctx);
int pgt_trash_restore(struct db *db, int64_t secret_id, int64_t now_ns);
int pgt_trash_purge(struct db *db, int64_t instance_id, const char *name,
		    int64_t before_ns, int64_t *count);
int pgt_instance_secret_ids(struct db *db, int64_t instance_id,
			    int (*fn)(void *, int64_t, const char *, bool), void *ctx);
int pgh_attr_get(struct db *db, int64_t secret_id, const char *name, void *buf,
		 size_t size, size_t *len);
int pgh_attr_set(struct db *db, int64_t secret_id, const char *name, const void *value,
		 size_t len);
int pgt_scrub(struct db *db);
int pgh_auth_upgrade(struct db *db);
int pgh_auth_rekey(struct db *db, const struct db_auth *next);
int pgh_auth_check_all(struct db *db, void (*fn)(void *, const char *), void *ctx);
int pga_snapshot_begin(struct db *db);
void pga_snapshot_end(struct db *db);
int pga_insert(struct db *db, const struct db_audit_row *row);
int pga_last(struct db *db, int64_t before_ns, struct db_audit_row *out);
int pga_delete_upto(struct db *db, int64_t seq);
int pga_each(struct db *db, const struct db_audit_filter *f,
	     int (*fn)(void *, const struct db_audit_row *), void *ctx);
int pga_tidy(struct db *db);
int pga_meta_add(struct db *db, const char *key, const unsigned char *v, size_t len);
int pgb_backup(struct db *db, const char *file);
int pgb_restore(struct db *db, const char *file);

/* Connections (pg.c). */
int pg_connect(const char *uri, bool listener, PGconn **out);
int pg_connect_to(const char *uri, const char *dbname, bool listener, PGconn **out);
void pg_database_ensure(const char *uri);
int pg_ready(struct pgs *s);
int pg_session(struct pgs *s, PGconn *c);
void pg_readers_close(struct pgs *s);
void pg_lock(struct pgs *s);
void pg_unlock(struct pgs *s);
bool pg_in_own_txn(struct pgs *s);
/* Runs sql with q's parameters (q may be NULL) on the writer's connection;
 * *res gets the result of a query that returns rows (PQclear it). 0 or
 * -errno with the server's words in db_errmsg. */
int pg_run(struct pgs *s, const char *sql, const struct pgq *q, PGresult **res);
/* pg_run for a query, whose rows it hands to fn(s, res, row, ctx) in turn
 * until fn returns other than 0: 0, fn's result or pg_run's. */
int pg_each(struct pgs *s, const char *sql, const struct pgq *q,
	    int (*fn)(struct pgs *, const PGresult *, int, void *), void *ctx);
/* What an *_each op hands pg_each: the caller's callback and its ctx. */
struct pg_each {
	void *fn;
	void *ctx;
};
/* Defines NAME, pg_each's row callback for an *_each op: reads the row
 * with ROW into a TYPE and hands it to the caller's callback, an
 * int (*)(void *, const TYPE *) in the struct pg_each. */
#define PG_EACH_ROW(NAME, TYPE, ROW)						\
	static int NAME(struct pgs *s, const PGresult *res, int row, void *ctx)	\
	{									\
		struct pg_each *e = ctx;					\
		int (*fn)(void *, const TYPE *) = e->fn;			\
		TYPE item;							\
		int r = ROW(s, res, row, &item);				\
										\
		return r ? r : fn(e->ctx, &item);				\
	}
int pg_commit_sql(struct pgs *s);
/* pg_run for a statement that must change exactly want rows (any if < 0):
 * -ENOENT otherwise. */
int pg_change(struct pgs *s, const char *sql, const struct pgq *q, int want);
int64_t pg_int(const PGresult *res, int row, int col);
bool pg_null(const PGresult *res, int row, int col);
int pg_blob(const PGresult *res, int row, int col, struct db_blob *out);
void pg_name(const PGresult *res, int row, int col, char name[static DB_NAME_MAX + 1]);
void pg_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Schema and migrations (pg_schema.c), under an advisory lock. */
int pg_schema_create(PGconn *c);
int pg_schema_check(PGconn *c, bool migrate);

/* The change feed (pg_listen.c): a connection that LISTENs, its thread. */
int pg_listen_start(struct pgs *s);
void pg_listen_stop(struct pgs *s);
/* The count of changes others made; -EIO while the listener has been
 * lost for longer than s->stale_ns. */
int pg_listen_seq(struct pgs *s, uint64_t *out);
/* 0, or -EIO (in db_errmsg) once the feed has been lost for too long. */
int pg_listen_fresh(struct pgs *s);
/* The writer's backend pid, whose own notices don't count. */
void pg_listen_own(struct pgs *s, int pid);

/* Row tags (pg_tag.c), the same bytes as the SQLite store's. */
struct pg_tagf {
	char type;		/* 'i', 't', 'b' */
	int64_t i;
	const void *p;
	size_t len;
};
#define TI(x) ((struct pg_tagf){ 'i', (int64_t)(x), NULL, 0 })
#define TT(s) ((struct pg_tagf){ 't', 0, (s), strlen(s) })
#define TB(d, n) ((struct pg_tagf){ 'b', 0, (d), (n) })
/* The tag of a row of table made of fields, with auth. 0 or -EOVERFLOW. */
int pg_tag_make(const struct db_auth *auth, const char *table, const struct pg_tagf *f,
		int n, unsigned char out[DB_MAC_LEN]);
/* Whether the tag in res's column col is right, quietly. */
bool pg_tag_ok(const struct db_auth *auth, const char *table, const struct pg_tagf *f, int n,
	       const PGresult *res, int row, int col);
/* Checks a stored tag: 0, -EIO (reported, naming the row), -EACCES. */
int pg_tag_check(struct pgs *s, const char *table, const struct pg_tagf *f, int n,
		 const PGresult *res, int row, int col, const char *what);
/* Reports the failures a transaction found, once it is over. */
void pg_tag_flush(struct pgs *s);
int pg_state_update(struct pgs *s, int64_t inst, const struct db_auth *auth, bool bump);
int pg_state_scan(struct pgs *s, int64_t inst, int64_t *seq, bool check,
		  int (*fn)(void *, int64_t, uint64_t), void *ctx);
int pg_state_touch(struct pgs *s, int64_t inst, bool fresh);
/* States chained by schema 1, checked and made again (pg_chain.c). */
int pg_states_convert(struct db *db, bool readonly);
int pg_floor_update(struct pgs *s, const struct db_auth *auth);
int pg_floor_read(struct pgs *s, int64_t *floor, bool missing_ok);

#endif
