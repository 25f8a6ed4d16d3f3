/* Inside db/ only: what db.c shares with the store's other files. SQLite
 * types are fine here; this header never leaves db/. */
#ifndef VAULTFS_DB_INT_H
#define VAULTFS_DB_INT_H

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
/* The columns of INST_COLS in db.c, from column 0. */
void dbi_row_instance(sqlite3_stmt *st, struct db_instance *in);

#endif
