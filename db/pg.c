/* The PostgreSQL store's slot: until it is written, a postgresql:// spec is
 * refused with a clear error rather than taken for a file name. */
#include <errno.h>

#include "store.h"

static int pg_open(struct db **out, const char *spec, int flags)
{
	*out = NULL;
	db_set_error("this build has no PostgreSQL store");
	return -EPROTONOSUPPORT;
}

/* A store on a server keeps no file here. */
static int pg_files(const char *spec, int (*fn)(void *, const char *path, bool main),
		    void *ctx)
{
	return 0;
}

static int pg_audit_open(struct db_audit **out, const char *spec, bool readonly)
{
	*out = NULL;
	db_set_error("this build has no PostgreSQL store");
	return -EPROTONOSUPPORT;
}

/* No handle is ever made, so no other op is ever called. */
const struct db_store_ops db_pg_ops = {
	.name = "postgresql",
	.open = pg_open,
	.files = pg_files,
	.audit_open = pg_audit_open,
};
