/* Inside db/ only: what db.c shares with the store's other files. SQLite
 * types are fine here; this header never leaves db/. */
#ifndef VAULTFS_DB_INT_H
#define VAULTFS_DB_INT_H

#include <stdbool.h>

#include <sqlite3.h>

#include "db.h"

#define DBI_XSTMT_MAX 64

/* The connection's recursive lock: held around every use of a statement. */
void dbi_lock(struct db *db);
void dbi_unlock(struct db *db);
sqlite3 *dbi_conn(struct db *db);
/* A SQLite result code as -errno, remembering SQLite's message. */
int dbi_rc(struct db *db, int rc);
int dbi_exec(struct db *db, const char *sql);
void dbi_set_error(const char *msg);
/* Calls each for every object of sqlite_master in a fresh database built
 * by the migrations, sorted by type and name: what schema_expected.h must
 * hold (test_db checks, `make schema-expected` writes it). 0 or -errno. */
int dbi_schema_fresh(void (*each)(void *ctx, const char *type, const char *name,
				  const char *tbl, const char *sql), void *ctx);
/* A new, empty file of mode 0600: -EEXIST if there is one. */
int dbi_create_file(const char *path);
/* The prepared statement for sql (a string literal: cached by its address
 * for the connection's life). The caller holds the lock and calls dbi_done. */
sqlite3_stmt *dbi_stmt(struct db *db, const char *sql, int *err);
void dbi_done(sqlite3_stmt *st);
/* 1 for a row, 0 at the end, or -errno. */
int dbi_step_row(struct db *db, sqlite3_stmt *st);
/* Runs a statement that returns no row and must change exactly `want` rows
 * (any number if want < 0): -ENOENT otherwise. */
int dbi_step_change(struct db *db, sqlite3_stmt *st, int want);
int dbi_column_blob(sqlite3_stmt *st, int col, struct db_blob *out);
void dbi_column_name(sqlite3_stmt *st, int col, char name[static DB_NAME_MAX + 1]);
int dbi_bind_blob(sqlite3_stmt *st, int i, const struct db_blob *b);
/* The columns of INST_COLS in db.c, from column 0: 0 or -EIO (its tag). */
int dbi_row_instance(struct db *db, sqlite3_stmt *st, struct db_instance *in);

/* A read connection for the calling thread (the pinned one, if any), or
 * NULL: then db itself serves the read. Give it back with dbi_reader_give,
 * which passes r through. */
struct db *dbi_reader_take(struct db *db);
int dbi_reader_give(struct db *db, struct db *rd, int r);

/* Row tags (db_auth.c): what each table's tag covers, as SQL over the
 * row's own columns, the table's name first. A tag binds the row's id, so
 * rows can't be swapped, and the table, so a row can't move to another. */
#define DBA_INSTANCES "'instances', id, name, uid, gid, mode, generation"
#define DBA_SECRETS "'secrets', id, instance_id, name, uid, gid, mode, version, size, flags"
#define DBA_VERSIONS "'versions', secret_id, version, size, flags"
#define DBA_TRASH "'trash', secret_id, instance_id, name, uid, gid, mode"
#define DBA_ATTRS "'secret_attrs', secret_id, name, value"
const struct db_auth *dbi_auth(struct db *db);
const struct db_auth *dbi_auth_next(struct db *db);
void dbi_set_auth_next(struct db *db, const struct db_auth *next);
bool dbi_in_own_txn(struct db *db);
/* Registers dba_mac() and dba_check() on the connection. */
int dbi_auth_register(struct db *db);
/* Checks the tag in column maccol of st's row over tag and columns cols:
 * 0, or -EIO (reported) or -EACCES (no auth). what names the row. */
int dbi_row_verify(struct db *db, sqlite3_stmt *st, const char *tag, const int *cols,
		   int ncols, int maccol, const char *what, int64_t id);
/* Checks every row of the attached database `schema` (dba_check): 0, or
 * -EIO naming the first row that fails. */
int dbi_auth_check_attached(struct db *db, const char *schema);
/* A tag failure inside SQL (dba_check): the -errno to return, 0 if none. */
int dbi_auth_sql_failed(void);
/* After the outermost commit or rollback: reports failures found inside it. */
void dbi_auth_flush(struct db *db);

/* Instance state (db_auth.c). */
int dbi_state_verify(struct db *db, int64_t inst);
int dbi_state_update(struct db *db, int64_t inst, const struct db_auth *auth, bool bump);
/* Inside a write transaction, before a change to the live secrets of an
 * instance (fresh: one created in it): checks its state the first time,
 * and has it made afresh at the outermost commit. */
int dbi_state_touch(struct db *db, int64_t inst, bool fresh);
/* The same for the instance of a live (or, with trash, deleted) secret. */
int dbi_state_touch_secret(struct db *db, int64_t secret_id, bool trash);
/* Raises the audit floor to the log's last entry (db_auth.c). */
int dbi_floor_update(struct db *db, const struct db_auth *auth);
/* Every instance's state made afresh (after a restore). */
int dbi_state_remake_all(struct db *db);
/* The writing connection's verified instance states (db_state.c): NULL
 * for a read connection. */
struct dbi_states;
struct dbi_states *dbi_states(struct db *db);
struct dbi_states *dbi_states_new(void);
void dbi_states_free(struct dbi_states *c);
/* Before a transaction's first change to inst: its state checked, by the
 * trusted set if the row still shows it, else in full. 0 or -errno. */
int dbi_states_verify(struct db *db, int64_t inst);
/* Before changing secret id of inst: its stored row agrees with the
 * trusted set, or the full check decides (-EIO: reported). */
int dbi_states_check_row(struct db *db, int64_t inst, int64_t id);
/* The transaction changed secret id of inst (DBI_STATES_FRESH: made inst). */
#define DBI_STATES_FRESH (-1)
int dbi_states_note(struct db *db, int64_t inst, int64_t id);
/* At the outermost commit: inst's state made and stored (db_auth.c's
 * dbi_state_update when the trusted set can't be used). */
int dbi_states_commit(struct db *db, int64_t inst);
/* After the outermost COMMIT (committed) or rollback. */
void dbi_states_end(struct db *db, bool committed);
/* fn for each (id, version) of inst's trusted set if it is the state
 * (seq, state); -ENOENT if not known. */
int dbi_states_each(struct db *db, int64_t inst, int64_t seq,
		    const unsigned char state[DB_MAC_LEN],
		    int (*fn)(void *, int64_t id, uint64_t version), void *ctx);
/* Instance state pieces (db_auth.c): the row's seq and state (zeros when
 * it has none yet), the state of a set, storing one. */
int dbi_state_row(struct db *db, int64_t inst, int64_t *seq, unsigned char state[DB_MAC_LEN]);
void dbi_state_make(const struct db_auth *auth, int64_t inst, int64_t seq, const int64_t *ids,
		    const uint64_t *vers, size_t n, unsigned char out[DB_MAC_LEN]);
int dbi_state_store(struct db *db, int64_t inst, int64_t seq,
		    const unsigned char state[DB_MAC_LEN]);
/* 1 and *version if secret id is live in inst, 0 if not, or -errno. */
int dbi_secret_version(struct db *db, int64_t inst, int64_t id, uint64_t *version);
/* Calls fn for every instance id, listed first. */
int dbi_each_instance(struct db *db, int (*fn)(struct db *, int64_t, void *), void *ctx);

#endif
