/*
 * Copies between the PostgreSQL store and a SQLite vault file.
 */
#include <errno.h>

#include "pg_int.h"

int pgb_backup(struct db *db, const char *file)
{
	pg_set_error("backup from PostgreSQL is not built yet");
	return -EOPNOTSUPP;
}

int pgb_restore(struct db *db, const char *file)
{
	pg_set_error("restore into PostgreSQL is not built yet");
	return -EOPNOTSUPP;
}
