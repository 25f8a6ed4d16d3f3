/*
 * The PostgreSQL store's change feed. Rules this file keeps:
 *  - one connection of its own LISTENs on vaultfs_change, which the schema's
 *    triggers notify at each commit that changes instances or secrets,
 *    whoever commits it; a thread waits on its socket and counts notices,
 *    so reading the feed (pg_listen_seq) costs an atomic load;
 *  - our own writer's notices are not counted (the store's rule: the feed
 *    moves for others' changes);
 *  - a lost connection moves the feed (what happened meanwhile is unknown)
 *    and is retried every RETRY_MS, to whichever server is the primary
 *    then, LISTEN included; until it is back, and once it has been away
 *    longer than the store's bound, the store refuses to serve
 *    (pg_listen_seq is -EIO, and so is every call, pg_ready), since the
 *    kernel's caches can't be told of changes meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pg_int.h"

#define RETRY_MS 100
#define POLL_MS 250

struct pg_listen {
	pthread_t thread;
	_Atomic bool stop;
	_Atomic uint64_t seq;
	_Atomic int64_t lost_since;	/* 0 while listening */
	_Atomic int own_pid;		/* the writer's backend */
	int wake[2];
	PGconn *conn;
	char uri[PG_URI_MAX];
};

static int listen_on(PGconn *c)
{
	PGresult *res = PQexec(c, "LISTEN vaultfs_change");
	int r = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -EIO;

	if (r < 0)
		pg_set_error("cannot LISTEN for changes: %s", PQerrorMessage(c));
	PQclear(res);
	return r;
}

static int listen_connect(struct pg_listen *l)
{
	PGconn *c;
	int r = pg_connect(l->uri, true, &c);

	if (r == 0 && (r = listen_on(c)) < 0)
		PQfinish(c);
	if (r == 0)
		l->conn = c;
	return r;
}

static void lost(struct pg_listen *l)
{
	if (l->conn) {
		PQfinish(l->conn);
		l->conn = NULL;
	}
	if (!atomic_load(&l->lost_since))
		atomic_store(&l->lost_since, db_now_ns());
	atomic_fetch_add(&l->seq, 1);
}

static void drain(struct pg_listen *l)
{
	PGnotify *n;
	int own = atomic_load(&l->own_pid);

	while ((n = PQnotifies(l->conn))) {
		if (n->be_pid != own)
			atomic_fetch_add(&l->seq, 1);
		PQfreemem(n);
	}
}

static void wait_ms(struct pg_listen *l, int ms)
{
	struct pollfd p = { .fd = l->wake[0], .events = POLLIN };

	(void)poll(&p, 1, ms);
}

static void *listen_thread(void *arg)
{
	struct pg_listen *l = arg;
	struct pollfd p[2];

	while (!atomic_load(&l->stop)) {
		if (!l->conn) {
			if (listen_connect(l) < 0) {
				wait_ms(l, RETRY_MS);
				continue;
			}
			atomic_fetch_add(&l->seq, 1);	/* what we missed: rescan */
			atomic_store(&l->lost_since, 0);
		}
		p[0] = (struct pollfd){ .fd = PQsocket(l->conn), .events = POLLIN };
		p[1] = (struct pollfd){ .fd = l->wake[0], .events = POLLIN };
		if (poll(p, 2, POLL_MS) < 0 && errno != EINTR) {
			lost(l);
			continue;
		}
		if (p[0].revents && (!PQconsumeInput(l->conn) ||
				     PQstatus(l->conn) != CONNECTION_OK)) {
			lost(l);
			continue;
		}
		drain(l);
	}
	return NULL;
}

/* With every signal blocked: the daemon's signals (SIGTERM, SIGHUP, the
 * session's SIGUSR1) must reach the threads that wait for them, never
 * this one, whose poll would swallow them. */
static int listen_thread_start(struct pg_listen *l)
{
	sigset_t all, old;
	int r;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = -pthread_create(&l->thread, NULL, listen_thread, l);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r == 0)
		pthread_setname_np(l->thread, "vaultfs-listen");
	return r;
}

int pg_listen_start(struct pgs *s)
{
	struct pg_listen *l;
	int r;

	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	memcpy(l->uri, s->uri, sizeof(l->uri));
	if (pipe2(l->wake, O_CLOEXEC) < 0) {
		free(l);
		return -errno;
	}
	atomic_store(&l->own_pid, s->conn ? PQbackendPID(s->conn) : 0);
	r = listen_connect(l);
	if (r == 0)
		r = listen_thread_start(l);
	if (r < 0) {
		if (l->conn)
			PQfinish(l->conn);
		close(l->wake[0]);
		close(l->wake[1]);
		free(l);
		return r;
	}
	s->listen = l;
	return 0;
}

void pg_listen_stop(struct pgs *s)
{
	struct pg_listen *l = s->listen;

	if (!l)
		return;
	atomic_store(&l->stop, true);
	(void)!write(l->wake[1], "x", 1);
	pthread_join(l->thread, NULL);
	if (l->conn)
		PQfinish(l->conn);
	close(l->wake[0]);
	close(l->wake[1]);
	free(l);
	s->listen = NULL;
}

void pg_listen_own(struct pgs *s, int pid)
{
	if (s->listen)
		atomic_store(&s->listen->own_pid, pid);
}

/* 0 while the feed is trustworthy; -EIO once it has been lost for longer
 * than the store's bound. */
int pg_listen_fresh(struct pgs *s)
{
	int64_t since;

	if (!s->listen)
		return 0;
	since = atomic_load(&s->listen->lost_since);
	if (!since || db_now_ns() - since <= s->stale_ns)
		return 0;
	pg_set_error("the change feed from the database (its LISTEN connection) is lost "
		     "since %.1f s: refusing to serve what may be stale",
		     (double)(db_now_ns() - since) / 1e9);
	return -EIO;
}

int pg_listen_seq(struct pgs *s, uint64_t *out)
{
	int r = 0;

	if (!s->listen) {
		pg_lock(s);
		if (!s->listen)
			r = pg_listen_start(s);
		pg_unlock(s);
	}
	if (r == 0)
		r = pg_listen_fresh(s);
	if (r == 0)
		*out = atomic_load(&s->listen->seq);
	return r;
}
