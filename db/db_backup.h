/* Copies of the store: backups while it is in use, and restoring one. */
#ifndef VAULTFS_DB_BACKUP_H
#define VAULTFS_DB_BACKUP_H

#include "db.h"

/* Writes a consistent snapshot of the store into a new file (mode 0600; an
 * existing file is refused with -EEXIST), with SQLite's online backup API:
 * other connections keep reading and writing meanwhile. */
int db_backup(struct db *db, const char *path) WUR;
/* The same from a database file, opened read-only, into a new file. */
int db_copy_file(const char *src, const char *dst) WUR;
/* Replaces the instances and secrets, their old versions, trash and
 * attributes with those in the store at `path`, in one transaction. That
 * store must have this schema version (-EPROTO otherwise) and every row's
 * tag must hold under this store's auth (-EIO otherwise: nothing changes);
 * the caller has made sure its keys open it. Row ids keep their values and are never
 * handed out again. */
int db_restore(struct db *db, const char *path) WUR;

#endif
