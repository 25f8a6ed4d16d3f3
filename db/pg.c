/*
 * The PostgreSQL store: connections, statements, errors. Rules this file
 * keeps:
 *  - the server gets sealed blobs and tagged metadata, never plaintext nor
 *    the key that tags them (pg_tag.c tags in this process);
 *  - the database password never comes from vaultfs's configuration: a URI
 *    that holds one is refused; libpq reads its passfile, or the systemd
 *    credential vaultfs-db-password is handed to libpq and wiped;
 *  - every connection asks for a read-write server (the primary) and is
 *    checked to be one after each (re)connect, so no read comes from a
 *    standby that lags;
 *  - every wait is bounded: connect_timeout, TCP user timeout and
 *    keepalives, statement and lock timeouts; a lost server is -EIO at
 *    once and the next call after a short pause reconnects by itself;
 *  - a connection lost inside a transaction fails the transaction,
 *    COMMIT included: its outcome is reported as a failure, never guessed;
 *  - libpq's result codes become -errno here and go no further.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../crypto/secmem.h"
#include "pg_int.h"

#define RETRY_PAUSE_NS 200000000LL	/* between two reconnects */
#define CRED_NAME "vaultfs-db-password"
#define PASSWORD_MAX 1024

void pg_set_error(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	db_set_error("%s", msg);
}

/* libpq's messages end with a newline and may span lines: one line. */
static void set_server_error(const char *what, const char *msg)
{
	char line[400];
	char *p;

	snprintf(line, sizeof(line), "%s", msg && msg[0] ? msg : "unknown error");
	while ((p = strchr(line, '\n')))
		*p = p[1] ? ' ' : '\0';
	pg_set_error("%s%s%s", what, what[0] ? ": " : "", line);
}

/* -- parameters --------------------------------------------------------------- */

static void put_be64(unsigned char b[8], uint64_t v)
{
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (56 - 8 * i));
}

void pgq_int(struct pgq *q, int64_t v)
{
	put_be64(q->ints[q->n], (uint64_t)v);
	q->v[q->n] = (const char *)q->ints[q->n];
	q->len[q->n] = 8;
	q->fmt[q->n] = 1;
	q->type[q->n] = 20;	/* int8 */
	q->n++;
}

void pgq_text(struct pgq *q, const char *s)
{
	q->v[q->n] = s;
	q->len[q->n] = s ? (int)strlen(s) : 0;
	q->fmt[q->n] = 1;
	q->type[q->n] = 25;	/* text */
	q->n++;
}

void pgq_blob(struct pgq *q, const void *p, size_t len)
{
	q->v[q->n] = p ? p : "";
	q->len[q->n] = (int)len;
	q->fmt[q->n] = 1;
	q->type[q->n] = 17;	/* bytea */
	q->n++;
}

int64_t pg_int(const PGresult *res, int row, int col)
{
	const unsigned char *p = (const unsigned char *)PQgetvalue(res, row, col);
	uint64_t v = 0;

	if (PQgetisnull(res, row, col) || PQgetlength(res, row, col) != 8)
		return 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return (int64_t)v;
}

bool pg_null(const PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col);
}

int pg_blob(const PGresult *res, int row, int col, struct db_blob *out)
{
	size_t n = (size_t)PQgetlength(res, row, col);

	out->data = malloc(n ? n : 1);
	out->len = n;
	if (!out->data)
		return -ENOMEM;
	memcpy(out->data, PQgetvalue(res, row, col), n);
	return 0;
}

void pg_name(const PGresult *res, int row, int col, char name[static DB_NAME_MAX + 1])
{
	size_t n = (size_t)PQgetlength(res, row, col);

	if (n > DB_NAME_MAX)
		n = DB_NAME_MAX;
	memcpy(name, PQgetvalue(res, row, col), n);
	name[n] = '\0';
}

/* -- connecting ------------------------------------------------------------------ */

/* The systemd credential, if the unit passed one: read into locked memory,
 * NUL-terminated; NULL if there is none. */
static struct secbuf *cred_password(void)
{
	const char *dir = secure_getenv("CREDENTIALS_DIRECTORY");
	struct secbuf *pw = NULL;
	char path[4096];
	ssize_t n = -1;
	int fd;

	if (!dir || snprintf(path, sizeof(path), "%s/%s", dir, CRED_NAME) >= (int)sizeof(path))
		return NULL;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	if (secbuf_new(&pw, PASSWORD_MAX + 1) == 0)
		n = read(fd, pw->data, PASSWORD_MAX);
	close(fd);
	if (n <= 0) {
		secbuf_free(pw);
		return NULL;
	}
	while (n > 0 && (pw->data[n - 1] == '\n' || pw->data[n - 1] == '\r'))
		n--;
	pw->data[n] = '\0';
	pw->len = (size_t)n;
	return pw;
}

/* A URI that carries a password is refused: it would sit in an INI file,
 * in argv and in logs. */
static int uri_check(const char *uri)
{
	PQconninfoOption *opts, *o;
	char *err = NULL;
	int r = 0;

	opts = PQconninfoParse(uri, &err);
	if (!opts) {
		pg_set_error("bad database URI: %s", err ? err : "out of memory");
		PQfreemem(err);
		return -EINVAL;
	}
	for (o = opts; o->keyword; o++)
		if (!strcmp(o->keyword, "password") && o->val && o->val[0]) {
			pg_set_error("the database URI holds a password: give it in a libpq "
				     "passfile (~/.pgpass, PGPASSFILE, passfile=) or the "
				     "systemd credential " CRED_NAME ", never in the URI");
			r = -EINVAL;
		}
	PQconninfoFree(opts);
	return r;
}

/* Defaults first (the URI may change them), the URI, then what the URI
 * may not change: a read-write server, and bounded statements. */
int pg_connect(const char *uri, bool listener, PGconn **out)
{
	return pg_connect_to(uri, NULL, listener, out);
}

/* dbname, if given, replaces the URI's database (the maintenance one). */
int pg_connect_to(const char *uri, const char *dbname, bool listener, PGconn **out)
{
	const char *kw[16], *val[16];
	struct secbuf *pw = NULL;
	PGconn *c;
	int n = 0, r;

	*out = NULL;
	if ((r = uri_check(uri)) < 0)
		return r;
	kw[n] = "connect_timeout"; val[n++] = "3";
	kw[n] = "keepalives"; val[n++] = "1";
	kw[n] = "keepalives_idle"; val[n++] = "5";
	kw[n] = "keepalives_interval"; val[n++] = "2";
	kw[n] = "keepalives_count"; val[n++] = "2";
	kw[n] = "tcp_user_timeout"; val[n++] = "9000";
	kw[n] = "application_name"; val[n++] = listener ? "vaultfs-listen" : "vaultfs";
	kw[n] = "dbname"; val[n++] = uri;
	if (dbname) {
		kw[n] = "dbname";
		val[n++] = dbname;
	}
	kw[n] = "target_session_attrs"; val[n++] = "read-write";
	kw[n] = "options";
	val[n++] = "-c statement_timeout=10s -c lock_timeout=10s "
		   "-c idle_in_transaction_session_timeout=60s -c client_min_messages=warning";
	if ((pw = cred_password())) {
		kw[n] = "password";
		val[n++] = (const char *)pw->data;
	}
	kw[n] = NULL;
	val[n] = NULL;
	c = PQconnectdbParams(kw, val, 1);
	secbuf_free(pw);
	if (!c) {
		pg_set_error("cannot connect to the database: out of memory");
		return -ENOMEM;
	}
	if (PQstatus(c) != CONNECTION_OK) {
		set_server_error("cannot connect to the database", PQerrorMessage(c));
		PQfinish(c);
		return -EIO;
	}
	*out = c;
	return 0;
}

/* The URI's database name, "" if it names none. */
static void uri_dbname(const char *uri, char *out, size_t size)
{
	PQconninfoOption *opts = PQconninfoParse(uri, NULL), *o;

	out[0] = '\0';
	for (o = opts; o && o->keyword; o++)
		if (!strcmp(o->keyword, "dbname") && o->val)
			snprintf(out, size, "%s", o->val);
	PQconninfoFree(opts);
}

/* For init: the database, created if the role may and it is absent. A
 * role that may not (the usual least-privilege set-up) gets the error of
 * the connection that follows, naming the missing database. */
void pg_database_ensure(const char *uri)
{
	char name[256], sql[600];
	PGconn *c = NULL;
	PGresult *res;
	char *id;

	uri_dbname(uri, name, sizeof(name));
	if (!name[0] || pg_connect_to(uri, "postgres", false, &c) < 0)
		return;
	res = PQexecParams(c, "SELECT 1 FROM pg_database WHERE datname = $1", 1, NULL,
			   (const char *const[]){ name }, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 0 &&
	    (id = PQescapeIdentifier(c, name, strlen(name)))) {
		snprintf(sql, sizeof(sql), "CREATE DATABASE %s", id);
		PQfreemem(id);
		PQclear(PQexec(c, sql));
	}
	PQclear(res);
	PQfinish(c);
}

/* Asked after every (re)connect, whatever the URI said. */
static int check_primary(PGconn *c)
{
	PGresult *res = PQexec(c, "SELECT pg_is_in_recovery()");
	int r = -EIO;

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		set_server_error("cannot ask the server whether it is the primary",
				 PQerrorMessage(c));
	else if (strcmp(PQgetvalue(res, 0, 0), "f"))
		pg_set_error("the database server is a standby (read-only): vaultfs reads and "
			     "writes only on the primary");
	else
		r = 0;
	PQclear(res);
	return r;
}

/* What every connection of the handle is set to: read-only for a
 * DB_READONLY handle, so a write fails as -EROFS. */
int pg_session(struct pgs *s, PGconn *c)
{
	PGresult *res;
	int r = 0;

	if (!s->readonly)
		return 0;
	res = PQexec(c, "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		set_server_error("cannot make the connection read-only", PQerrorMessage(c));
		r = -EIO;
	}
	PQclear(res);
	return r;
}

/* Outside a transaction: a working connection to the primary, made anew
 * if the last one was lost (at most once per RETRY_PAUSE_NS). */
int pg_ready(struct pgs *s)
{
	PGconn *c = NULL;
	int r;

	if (s->depth || s->reading)
		return s->broken ? -EIO : 0;
	if ((r = pg_listen_fresh(s)) < 0)
		return r;
	if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
		return 0;
	if (db_now_ns() < s->next_try_ns) {
		pg_set_error("the database is unreachable (reconnecting)");
		return -EIO;
	}
	if (s->conn) {
		PQfinish(s->conn);
		s->conn = NULL;
	}
	r = pg_connect(s->uri, false, &c);
	if (r == 0 && (r = check_primary(c)) == 0 && (r = pg_session(s, c)) == 0)
		r = pg_schema_check(c, false);
	if (r < 0) {
		if (c)
			PQfinish(c);
		s->next_try_ns = db_now_ns() + RETRY_PAUSE_NS;
		return r == -EINVAL || r == -EPROTO || r == -EPROTONOSUPPORT ? r : -EIO;
	}
	s->conn = c;
	pg_listen_own(s, PQbackendPID(c));
	return 0;
}

/* -- statements ------------------------------------------------------------------ */

static int map_state(const char *st)
{
	static const struct {
		const char *state;
		int err;
	} map[] = {
		{ "23505", -EEXIST },		/* unique_violation */
		{ "23503", -ENOTEMPTY },	/* foreign_key_violation */
		{ "40001", -EBUSY },		/* serialization_failure */
		{ "40P01", -EBUSY },		/* deadlock_detected */
		{ "55P03", -EBUSY },		/* lock_not_available */
		{ "57014", -EBUSY },		/* query_canceled: a timeout */
		{ "53100", -ENOSPC },		/* disk_full */
		{ "25006", -EROFS },		/* read_only_sql_transaction */
		{ "42P01", -EPROTO },		/* undefined_table */
		{ "42703", -EPROTO },		/* undefined_column */
	};

	for (size_t i = 0; st && i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(st, map[i].state))
			return map[i].err;
	return -EIO;
}

/* c is the writer's connection (then a loss breaks its transaction) or a
 * reader's. */
static int result_error(struct pgs *s, PGconn *c, PGresult *res)
{
	const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (PQstatus(c) != CONNECTION_OK) {
		set_server_error("the database connection was lost", PQerrorMessage(c));
		if (c == s->conn && s->depth)
			s->broken = true;
		return -EIO;
	}
	set_server_error("database", res ? PQresultErrorMessage(res) : PQerrorMessage(c));
	return map_state(st);
}

static int exec_on(struct pgs *s, PGconn *c, const char *sql, const struct pgq *q,
		   PGresult **out)
{
	PGresult *res;
	int r;

	res = PQexecParams(c, sql, q ? q->n : 0, q ? q->type : NULL, q ? q->v : NULL,
			   q ? q->len : NULL, q ? q->fmt : NULL, 1);
	switch (PQresultStatus(res)) {
	case PGRES_TUPLES_OK:
		if (out) {
			*out = res;
			res = NULL;
		}
		r = 0;
		break;
	case PGRES_COMMAND_OK:
		r = atoi(PQcmdTuples(res));
		break;
	default:
		r = result_error(s, c, res);
	}
	PQclear(res);
	return r;
}

static int run_once(struct pgs *s, const char *sql, const struct pgq *q, PGresult **out)
{
	int r = pg_ready(s);

	return r < 0 ? r : exec_on(s, s->conn, sql, q, out);
}

/* -- readers ---------------------------------------------------------------------- */

/* A free reader's connection, made on first use; NULL if none is free
 * (the caller then reads on the writer's). */
static struct pg_reader *reader_take(struct pgs *s)
{
	struct pg_reader *rd = NULL;
	PGconn *c = NULL;

	pthread_mutex_lock(&s->rlock);
	for (unsigned i = 0; !rd && i < s->nreaders; i++)
		if (!s->readers[i].busy)
			rd = &s->readers[i];
	if (rd)
		rd->busy = true;
	pthread_mutex_unlock(&s->rlock);
	if (!rd || (rd->conn && PQstatus(rd->conn) == CONNECTION_OK))
		return rd;
	if (rd->conn)
		PQfinish(rd->conn);
	rd->conn = NULL;
	/* While the server is away, no connection attempt per read. */
	if (db_now_ns() >= s->next_try_ns && pg_connect(s->uri, false, &c) == 0 &&
	    (check_primary(c) < 0 || pg_session(s, c) < 0)) {
		PQfinish(c);
		c = NULL;
	}
	if (!c)
		s->next_try_ns = db_now_ns() + RETRY_PAUSE_NS;
	rd->conn = c;
	if (!c) {
		pthread_mutex_lock(&s->rlock);
		rd->busy = false;
		pthread_mutex_unlock(&s->rlock);
		return NULL;
	}
	return rd;
}

static void reader_give(struct pgs *s, struct pg_reader *rd)
{
	pthread_mutex_lock(&s->rlock);
	rd->busy = false;
	pthread_mutex_unlock(&s->rlock);
}

/* A read outside the thread's transaction, on a reader of its own. It
 * first waits for a write transaction another thread holds, so what an
 * earlier request committed is what it reads. 1: not served here. */
static int run_reader(struct pgs *s, const char *sql, const struct pgq *q, PGresult **out)
{
	struct pg_reader *rd;
	int r;

	if (!s->nreaders || pg_in_own_txn(s) || s->reading)
		return 1;
	pg_lock(s);
	r = pg_listen_fresh(s);
	pg_unlock(s);
	if (r < 0)
		return r;
	rd = reader_take(s);
	if (!rd)
		return 1;
	r = exec_on(s, rd->conn, sql, q, out);
	if (r == -EIO && PQstatus(rd->conn) != CONNECTION_OK) {
		PQfinish(rd->conn);		/* the server went: once more, anew */
		rd->conn = NULL;
		reader_give(s, rd);
		return 1;
	}
	reader_give(s, rd);
	return r;
}

void pg_readers_close(struct pgs *s)
{
	for (unsigned i = 0; i < s->nreaders; i++)
		if (s->readers[i].conn)
			PQfinish(s->readers[i].conn);
	s->nreaders = 0;
}

/* A read outside any transaction whose connection turns out lost (the
 * server restarted, or failed over) is asked once more on a new one: it
 * changed nothing. Anything else fails. */
int pg_run(struct pgs *s, const char *sql, const struct pgq *q, PGresult **out)
{
	bool read = !strncmp(sql, "SELECT", 6) && !strstr(sql, "FOR UPDATE");
	int r;

	if (out)
		*out = NULL;
	if (read && (r = run_reader(s, sql, q, out)) <= 0)
		return r;
	pg_lock(s);
	r = run_once(s, sql, q, out);
	if (r == -EIO && read && !s->depth && !s->reading && s->conn &&
	    PQstatus(s->conn) != CONNECTION_OK)
		r = run_once(s, sql, q, out);
	pg_unlock(s);
	return r;
}

int pg_each(struct pgs *s, const char *sql, const struct pgq *q,
	    int (*fn)(struct pgs *, const PGresult *, int, void *), void *ctx)
{
	PGresult *res;
	int r = pg_run(s, sql, q, &res);

	for (int i = 0; r == 0 && i < PQntuples(res); i++)
		r = fn(s, res, i, ctx);
	PQclear(res);
	return r;
}

/* COMMIT of a transaction that a failed statement aborted answers
 * ROLLBACK, not an error: that is a failure too. */
int pg_commit_sql(struct pgs *s)
{
	PGresult *res;
	int r;

	pg_lock(s);
	res = PQexec(s->conn, "COMMIT");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		r = result_error(s, s->conn, res);
	} else if (strcmp(PQcmdStatus(res), "COMMIT")) {
		pg_set_error("the transaction was rolled back by the database");
		r = -EIO;
	} else {
		r = 0;
	}
	PQclear(res);
	pg_unlock(s);
	return r;
}

int pg_change(struct pgs *s, const char *sql, const struct pgq *q, int want)
{
	int r = pg_run(s, sql, q, NULL);

	if (r >= 0 && want >= 0 && r != want) {
		pg_set_error("no such row");
		return -ENOENT;
	}
	return r < 0 ? r : 0;
}

/* -- locking --------------------------------------------------------------------- */

void pg_lock(struct pgs *s)
{
	pthread_mutex_lock(&s->lock);
}

void pg_unlock(struct pgs *s)
{
	pthread_mutex_unlock(&s->lock);
}

bool pg_in_own_txn(struct pgs *s)
{
	return s->depth && pthread_equal(atomic_load(&s->owner), pthread_self());
}
