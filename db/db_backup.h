/* Copies of the store: backups while it is in use, and restoring one. */
#ifndef VAULTFS_DB_BACKUP_H
#define VAULTFS_DB_BACKUP_H

#include "db.h"

/* A backup file is a SQLite vault, whatever the store: the one format
 * every store reads and writes, so that a backup moves a vault from one
 * store to another. */

/* Writes one snapshot of the store (every row, tags included, and the
 * meta) into a new SQLite vault file (mode 0600; an existing file is
 * refused with -EEXIST), synced before it returns; others keep reading and
 * writing meanwhile. */
int db_backup(struct db *db, const char *path) WUR;
/* Copies the backup file src, opened read-only, into a new file dst. */
int db_copy_file(const char *src, const char *dst) WUR;
/* Replaces the instances and secrets, their old versions, trash and
 * attributes with those in the backup file at `path`, in one transaction.
 * That file must have this schema version (-EPROTO otherwise) and every row's
 * tag must hold under this store's auth (-EIO otherwise: nothing changes);
 * the caller has made sure its keys open it. Row ids keep their values and are never
 * handed out again. */
int db_restore(struct db *db, const char *path) WUR;

#endif
