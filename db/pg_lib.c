/* libpq, loaded when a PostgreSQL store is first opened (see pg_int.h). */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "pg_int.h"

struct pg_lib pg_lib;

static const char *load_error;

static void load_once(void)
{
	void *h = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);

	if (!h) {
		load_error = dlerror();
		return;
	}
#define LOAD(f) \
	if (!(*(void **)&pg_lib.p_##f = dlsym(h, #f)) && !load_error) \
		load_error = "libpq.so.5 lacks " #f;
	LOAD(PQclear)
	LOAD(PQntuples)
	LOAD(PQgetvalue)
	LOAD(PQgetlength)
	LOAD(PQfinish)
	LOAD(PQstatus)
	LOAD(PQresultStatus)
	LOAD(PQerrorMessage)
	LOAD(PQexec)
	LOAD(PQgetisnull)
	LOAD(PQfreemem)
	LOAD(PQexecParams)
	LOAD(PQconninfoParse)
	LOAD(PQconninfoFree)
	LOAD(PQbackendPID)
	LOAD(PQsocket)
	LOAD(PQresultErrorMessage)
	LOAD(PQresultErrorField)
	LOAD(PQnotifies)
	LOAD(PQftype)
	LOAD(PQescapeIdentifier)
	LOAD(PQconsumeInput)
	LOAD(PQconnectdbParams)
	LOAD(PQcmdTuples)
	LOAD(PQcmdStatus)
#undef LOAD
	if (load_error)
		memset(&pg_lib, 0, sizeof(pg_lib));
}

int pg_lib_load(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, load_once);
	if (!load_error)
		return 0;
	pg_set_error("cannot load libpq (Debian package libpq5): %s", load_error);
	return -EPROTONOSUPPORT;
}
