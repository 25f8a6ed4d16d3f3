/*
 * The audit log. Rules this file keeps:
 *  - an entry holds who (uid, gid, pid, process name), what (instance, key,
 *    operation, result, a short detail) and when; never a value;
 *  - entry N is stored with mac_N = BLAKE2b keyed by the audit key over
 *    mac_N-1 and all of entry N's fields, seq included, so a deleted,
 *    reordered or edited entry breaks the chain at that entry;
 *  - the head (last seq and mac) and, after pruning, the anchor (seq and
 *    mac of the last pruned entry) are kept in meta with a keyed tag, so
 *    cutting entries off either end is seen too;
 *  - the chain key is random, in locked memory, and stored only sealed under
 *    the master key's audit subkey; the master key is never needed here;
 *  - a folded entry (count > 1, or a first time of its own) is MACed with
 *    its count and first time too, under a domain of its own;
 *  - a change's entry is chained inside the change's own transaction on the
 *    store's connection (audit_record_txn): both are stored, or neither;
 *  - a successful read is queued and stored in a batch by one thread (no
 *    fsync per read); every other queued event waits until it is stored,
 *    so a denial or a tamper failure is on disk before the caller hears
 *    back. The queue is bounded: a full queue slows callers, never drops;
 *  - repeats of a queued event within audit_fold are counted, not queued:
 *    the first of a kind is stored as above, the window's count when it
 *    closes; a crash loses at most the counts of the open windows.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "../crypto/mac.h"
#include "../crypto/seal.h"
#include "../db/db_audit.h"
#include "audit_int.h"
#include "log.h"
#include "thread.h"

#define QUEUE_CAP 1024
/* Reads wait this long for company before they are stored: fewer, larger
 * transactions, and no wakeup of the writer per read. */
#define GATHER_NS (50LL * 1000000)
#define GATHER_MAX 256
#define PRUNE_EVERY_NS (600LL * 1000000000)
/* Kinds of event whose repeats are being counted at one time. */
#define FOLD_SLOTS 64
/* Quiet for this long: the WAL is checkpointed and starts over. */
#define TIDY_AFTER_NS (2LL * 1000000000)

/* A window in which repeats of one event are counted into row. */
struct fold {
	bool open;
	int64_t until_ns;
	struct db_audit_row row;	/* count 0: no repeat yet */
};

static const char *const op_names[AUDIT_OP_COUNT] = {
	[AUDIT_READ] = "read", [AUDIT_WRITE] = "write", [AUDIT_CREATE] = "create",
	[AUDIT_DELETE] = "delete", [AUDIT_RENAME] = "rename", [AUDIT_CHMOD] = "chmod",
	[AUDIT_CHOWN] = "chown", [AUDIT_TRUNCATE] = "truncate", [AUDIT_MKDIR] = "mkdir",
	[AUDIT_RMDIR] = "rmdir", [AUDIT_AUTHFAIL] = "authfail",
	[AUDIT_HOOK] = "hook",
};

/* A copy, so a caller that forgets to clear it leaves no dangling pointer. */
static __thread struct audit_who tls_caller;
static __thread bool tls_caller_set;

const char *audit_op_name(enum audit_op op)
{
	return op < AUDIT_OP_COUNT ? op_names[op] : "?";
}

/* -- syslog ------------------------------------------------------------ */

/* Process names are chosen by the process: keep them printable. */
static void printable(char *dst, size_t size, const char *src)
{
	size_t i;

	for (i = 0; src[i] && i + 1 < size; i++)
		dst[i] = src[i] > 0x20 && src[i] < 0x7f && src[i] != '"' ? src[i] : '?';
	dst[i] = '\0';
}

static void send_syslog(const struct db_audit_row *r)
{
	char comm[sizeof(r->comm)], detail[sizeof(r->detail)], msg[1024];

	printable(comm, sizeof(comm), r->comm);
	printable(detail, sizeof(detail), r->detail);
	snprintf(msg, sizeof(msg),
		 "audit seq=%lld uid=%u gid=%u pid=%d comm=\"%s\" op=%s instance=%s key=%s "
		 "result=%s%s%s", (long long)r->seq, (unsigned)r->uid, (unsigned)r->gid,
		 (int)r->pid, comm, r->op, r->instance[0] ? r->instance : "-",
		 r->key[0] ? r->key : "-", r->result ? strerror(r->result) : "ok",
		 detail[0] ? " detail=" : "", detail);
	/* The chain in the database is the record; this copy never waits. */
	log_syslog_send(LOG_AUTHPRIV | (r->result ? LOG_NOTICE : LOG_INFO), msg);
}

static void store_rows(struct audit *a, struct db_audit_row *const *rows, size_t n, bool lazy)
{
	bool to_syslog = a->syslog && log_syslog_present();
	int r = audit_chain_append(a, a->store, rows, n, lazy);

	if (r == -EBUSY)
		r = audit_chain_append(a, a->store, rows, n, lazy);
	if (r < 0)
		log_err("audit: %zu entries could not be stored (%s); they went to syslog only",
			n, strerror(-r));
	for (size_t i = 0; to_syslog && i < n; i++)
		send_syslog(rows[i]);
}

/* -- the queue --------------------------------------------------------- */

static void maybe_prune(struct audit *a)
{
	int64_t now = db_now_ns(), pruned = 0;

	if (!a->retention_ns || now - a->last_prune_ns < PRUNE_EVERY_NS)
		return;
	a->last_prune_ns = now;
	if (audit_prune(a, now, &pruned) < 0)
		log_err("audit: pruning old entries failed");
}

static void abs_time(int64_t ns, struct timespec *ts)
{
	ts->tv_sec = (time_t)(ns / 1000000000);
	ts->tv_nsec = (long)(ns % 1000000000);
}

/* With only reads queued, waits a little for more (lock held). */
static void gather(struct audit *a)
{
	struct timespec until;

	abs_time(db_now_ns() + GATHER_NS, &until);
	while (a->urgent <= a->done && !a->stop && a->count < GATHER_MAX)
		if (pthread_cond_timedwait(&a->not_empty, &a->lock, &until) == ETIMEDOUT)
			break;
}

/* -- folding ----------------------------------------------------------- */

/* Events of one kind: who (but the pid, which changes with every thread
 * and process of a flood), what, and the outcome. */
static bool same_kind(const struct db_audit_row *x, const struct db_audit_row *y)
{
	return x->uid == y->uid && x->gid == y->gid && x->result == y->result &&
	       strcmp(x->op, y->op) == 0 && strcmp(x->key, y->key) == 0 &&
	       strcmp(x->instance, y->instance) == 0 && strcmp(x->comm, y->comm) == 0 &&
	       strcmp(x->detail, y->detail) == 0;
}

/* Counts row into an open window of its kind (lock held): true if it was,
 * and then it is not stored on its own. Otherwise opens a window for its
 * kind when there is room, and the caller stores it. */
static bool fold(struct audit *a, const struct db_audit_row *row)
{
	struct fold *free_slot = NULL;

	for (unsigned i = 0; i < FOLD_SLOTS; i++) {
		struct fold *f = &a->folds[i];

		if (!f->open) {
			free_slot = free_slot ? free_slot : f;
		} else if (row->time_ns < f->until_ns && same_kind(&f->row, row)) {
			if (!f->row.count++) {
				f->row.first_ns = row->time_ns;
				f->row.pid = row->pid;
			}
			f->row.time_ns = row->time_ns;
			return true;
		}
	}
	if (free_slot) {
		free_slot->open = true;
		free_slot->until_ns = row->time_ns + a->fold_ns;
		free_slot->row = *row;
		free_slot->row.count = 0;
		if (free_slot->until_ns < a->next_close_ns || !a->next_close_ns)
			a->next_close_ns = free_slot->until_ns;
	}
	return false;
}

/* Queues the folded entries of the windows that have closed (all of them
 * when stopping), as far as the queue has room (lock held). */
static void folds_close(struct audit *a, int64_t now)
{
	a->next_close_ns = 0;
	for (unsigned i = 0; i < FOLD_SLOTS && a->folds; i++) {
		struct fold *f = &a->folds[i];

		if (!f->open)
			continue;
		if ((now >= f->until_ns || a->stop) && (!f->row.count || a->count < QUEUE_CAP)) {
			if (f->row.count) {
				a->ring[(a->head + a->count) % QUEUE_CAP] = f->row;
				a->count++;
				a->queued++;
			}
			f->open = false;
		} else if (!a->next_close_ns || f->until_ns < a->next_close_ns) {
			a->next_close_ns = f->until_ns;
		}
	}
}

/* -- the writer thread ------------------------------------------------- */

/* Once the log has been quiet for a while: the WAL's pages go back into
 * the database and the next commit starts the file over, if no one is in
 * the way. */
static void tidy(struct audit *a, int64_t now)
{
	if (a->tidy_ns && now >= a->tidy_ns)
		a->tidy_ns = db_audit_checkpoint(a->store) == -EBUSY ? now + TIDY_AFTER_NS : 0;
}

/* Sleeps until there is something to store, a window closes, or it is
 * time to tidy up (lock held). */
static void wait_for_work(struct audit *a)
{
	int64_t until = a->next_close_ns;
	struct timespec ts;

	if (a->tidy_ns && (!until || a->tidy_ns < until))
		until = a->tidy_ns;
	if (!until) {
		pthread_cond_wait(&a->not_empty, &a->lock);
		return;
	}
	abs_time(until, &ts);
	pthread_cond_timedwait(&a->not_empty, &a->lock, &ts);
}

static void *flusher(void *arg)
{
	struct audit *a = arg;
	int64_t now;
	unsigned n;

	pthread_mutex_lock(&a->lock);
	for (;;) {
		now = db_now_ns();
		folds_close(a, now);
		if (!a->count && a->stop)
			break;
		if (!a->count) {
			pthread_mutex_unlock(&a->lock);
			tidy(a, now);
			pthread_mutex_lock(&a->lock);
			if (!a->count && !a->stop)
				wait_for_work(a);
			continue;
		}
		gather(a);
		/* Producers only fill free slots: these stay ours unlocked. */
		n = a->count;
		for (unsigned i = 0; i < n; i++)
			a->batch[i] = &a->ring[(a->head + i) % QUEUE_CAP];
		pthread_mutex_unlock(&a->lock);
		store_rows(a, a->batch, n, false);
		maybe_prune(a);
		pthread_mutex_lock(&a->lock);
		a->tidy_ns = db_now_ns() + TIDY_AFTER_NS;
		a->head = (a->head + n) % QUEUE_CAP;
		a->count -= n;
		a->done += n;
		pthread_cond_broadcast(&a->not_full);
		pthread_cond_broadcast(&a->stored);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

/* A repeat of an event whose window is open is only counted: neither
 * stored now nor waited for. */
static void enqueue(struct audit *a, const struct db_audit_row *row, bool wait)
{
	uint64_t ticket;

	pthread_mutex_lock(&a->lock);
	if (a->fold_ns && fold(a, row)) {
		pthread_mutex_unlock(&a->lock);
		return;
	}
	while (a->count == QUEUE_CAP)
		pthread_cond_wait(&a->not_full, &a->lock);
	a->ring[(a->head + a->count) % QUEUE_CAP] = *row;
	a->count++;
	ticket = ++a->queued;
	if (wait)
		a->urgent = ticket;
	/* The writer sleeps until the first entry, then gathers reads. */
	if (a->count == 1 || wait || a->count == GATHER_MAX)
		pthread_cond_signal(&a->not_empty);
	while (wait && a->done < ticket)
		pthread_cond_wait(&a->stored, &a->lock);
	pthread_mutex_unlock(&a->lock);
}

static int open_log(struct audit **out, const char *path, struct db *db,
		    const struct secbuf *key, const struct daemon_conf *conf)
{
	struct audit *a;
	int r;

	*out = NULL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->not_empty, NULL);
	pthread_cond_init(&a->not_full, NULL);
	pthread_cond_init(&a->stored, NULL);
	a->syslog = conf->audit_syslog;
	a->retention_ns = conf->audit_retention * 1000000000;
	a->fold_ns = conf->audit_fold * 1000000000;
	r = db ? db_audit_attach(&a->store, db) : db_audit_open(&a->store, path, false);
	if (r == 0)
		r = audit_chain_key_load(a, key);
	if (r < 0) {
		audit_close(a);
		return r;
	}
	*out = a;
	return 0;
}

int audit_open(struct audit **out, const char *path, const struct secbuf *key,
	       const struct daemon_conf *conf)
{
	return open_log(out, path, NULL, key, conf);
}

int audit_open_db(struct audit **out, struct db *db, const struct secbuf *key,
		  const struct daemon_conf *conf)
{
	return open_log(out, NULL, db, key, conf);
}

int audit_start(struct audit *a)
{
	int r;

	a->ring = calloc(QUEUE_CAP, sizeof(*a->ring));
	a->batch = calloc(QUEUE_CAP, sizeof(*a->batch));
	a->folds = calloc(FOLD_SLOTS, sizeof(*a->folds));
	if (!a->ring || !a->batch || !a->folds)
		return -ENOMEM;
	r = thread_start(&a->thread, "vaultfs-audit", flusher, a);
	if (r == 0)
		a->running = true;
	return r;
}

void audit_close(struct audit *a)
{
	if (!a)
		return;
	if (a->running) {
		pthread_mutex_lock(&a->lock);
		a->stop = true;
		pthread_cond_signal(&a->not_empty);
		pthread_mutex_unlock(&a->lock);
		pthread_join(a->thread, NULL);
	}
	free(a->ring);
	free(a->batch);
	free(a->folds);
	db_audit_close(a->txn_store);
	db_audit_close(a->store);
	secbuf_free(a->key);
	pthread_cond_destroy(&a->stored);
	pthread_cond_destroy(&a->not_full);
	pthread_cond_destroy(&a->not_empty);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

/* Every read is recorded: a plain copy, not snprintf's format machinery. */
static void copy_str(char *dst, size_t size, const char *src)
{
	size_t i;

	for (i = 0; src && src[i] && i + 1 < size; i++)
		dst[i] = src[i];
	dst[i] = '\0';
}

static void row_fill(struct db_audit_row *row, const struct audit_who *who,
		     enum audit_op op, const char *instance, const char *key, int result,
		     const char *detail)
{
	struct audit_who self;

	if (!who) {
		audit_who_self(&self);
		who = &self;
	}
	memset(row, 0, sizeof(*row));
	row->time_ns = row->first_ns = db_now_ns();
	row->count = 1;
	row->uid = who->uid;
	row->gid = who->gid;
	row->pid = who->pid;
	row->result = result < 0 ? -result : result;
	copy_str(row->comm, sizeof(row->comm), who->comm);
	copy_str(row->instance, sizeof(row->instance), instance);
	copy_str(row->key, sizeof(row->key), key);
	copy_str(row->op, sizeof(row->op), audit_op_name(op));
	copy_str(row->detail, sizeof(row->detail), detail);
}

void audit_record(struct audit *a, const struct audit_who *who, enum audit_op op,
		  const char *instance, const char *key, int result, const char *detail)
{
	struct db_audit_row row, *p = &row;

	if (!a)
		return;
	row_fill(&row, who, op, instance, key, result, detail);
	/* A command's successful read need not wait for the disk either: a
	 * crash of the machine may lose it, as it may the daemon's queued
	 * reads; the next synced commit makes it durable. */
	if (a->running)
		enqueue(a, &row, op != AUDIT_READ || result != 0);
	else
		store_rows(a, &p, 1, op == AUDIT_READ && result == 0);
}

int audit_record_txn(struct audit *a, struct db *db, const struct audit_entry *e)
{
	return audit_record_txn_n(a, db, &e, 1);
}

#define TXN_ENTRIES_MAX 2

int audit_record_txn_n(struct audit *a, struct db *db, const struct audit_entry *const *e,
		       size_t n)
{
	struct db_audit_row rows[TXN_ENTRIES_MAX], *p[TXN_ENTRIES_MAX];
	size_t m = 0;
	int r = 0;

	if (n > TXN_ENTRIES_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (e[i]) {
			p[m] = &rows[m];
			m++;
		}
	}
	if (!a || !m)
		return 0;
	/* The caller holds db's write transaction, hence its lock: one
	 * thread at a time gets here. */
	if (!a->txn_store) {
		r = db_audit_attach(&a->txn_store, db);
		if (r == 0)
			a->txn_db = db;
	}
	if (r == 0 && a->txn_db != db)
		r = -EINVAL;
	if (r < 0)
		return r;
	m = 0;
	for (size_t i = 0; i < n; i++)
		if (e[i])
			row_fill(&rows[m++], e[i]->who, e[i]->op, e[i]->instance, e[i]->key, 0,
				 e[i]->detail);
	r = audit_chain_append(a, a->txn_store, p, m, false);
	for (size_t i = 0; r == 0 && a->syslog && i < m && log_syslog_present(); i++)
		send_syslog(&rows[i]);
	return r;
}

void audit_set_caller(const struct audit_who *who)
{
	if (who)
		tls_caller = *who;
	tls_caller_set = who != NULL;
}

void audit_authfail(struct audit *a, const char *instance, const char *key)
{
	audit_record(a, tls_caller_set ? &tls_caller : NULL, AUDIT_AUTHFAIL, instance, key,
		     -EBADMSG, "stored value fails authentication");
}

void audit_authfail_row(struct audit *a, const char *what)
{
	audit_record(a, tls_caller_set ? &tls_caller : NULL, AUDIT_AUTHFAIL, "", "", -EBADMSG,
		     what);
}

void audit_authfail_row_queued(struct audit *a, const char *what)
{
	struct db_audit_row row;

	if (!a || !a->running) {
		/* No writer thread: stored by this thread, which may hold the
		 * store's (recursive) lock already. */
		audit_authfail_row(a, what);
		return;
	}
	row_fill(&row, tls_caller_set ? &tls_caller : NULL, AUDIT_AUTHFAIL, "", "", -EBADMSG,
		 what);
	enqueue(a, &row, false);
}

/* Process names, for every open: reading /proc/PID/comm afresh costs an
 * openat (a path walk in procfs), a read and a close. Each slot keeps the
 * file open instead, and a read at offset 0 gives the name as it is now.
 * That descriptor belongs to the task it was opened for, not to its
 * number: once that task is gone the read fails (ESRCH) even if a new
 * task has the same pid, and the slot opens the new one's file. So a
 * reused pid never gets its predecessor's name, and a renamed process
 * shows its new one. One system call per open, instead of three. */
#define COMM_SLOTS 128

struct comm_slot {
	pthread_mutex_t lock;
	pid_t pid;
	int fd;			/* /proc/pid/comm of that very task, or -1 */
};

static struct comm_slot comm_slots[COMM_SLOTS];
static pthread_once_t comm_once = PTHREAD_ONCE_INIT;

static void comm_init(void)
{
	for (unsigned i = 0; i < COMM_SLOTS; i++) {
		pthread_mutex_init(&comm_slots[i].lock, NULL);
		comm_slots[i].fd = -1;
	}
}

static ssize_t comm_read(struct comm_slot *c, char *comm, size_t size)
{
	return c->fd >= 0 ? pread(c->fd, comm, size - 1, 0) : -1;
}

static void read_comm(pid_t pid, char *comm, size_t size)
{
	struct comm_slot *c = &comm_slots[(unsigned)pid % COMM_SLOTS];
	char path[32];
	ssize_t n = -1;

	if (pid > 0) {
		pthread_once(&comm_once, comm_init);
		pthread_mutex_lock(&c->lock);
		if (c->pid == pid)
			n = comm_read(c, comm, size);
		if (n <= 0) {
			if (c->fd >= 0)
				close(c->fd);
			snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
			c->fd = open(path, O_RDONLY | O_CLOEXEC);
			c->pid = pid;
			n = comm_read(c, comm, size);
		}
		pthread_mutex_unlock(&c->lock);
	}
	if (n <= 0) {
		snprintf(comm, size, "?");
		return;
	}
	if (comm[n - 1] == '\n')
		n--;
	comm[n] = '\0';
}

void audit_who_fill_comm(struct audit_who *who)
{
	read_comm(who->pid, who->comm, sizeof(who->comm));
}

/* The process's name. The main thread's own (a command's) costs one
 * system call and no /proc lookup; the daemon's threads have names of
 * their own, so they read the process's. */
void audit_who_self(struct audit_who *who)
{
	char name[16] = "";	/* PR_GET_NAME's size, as comm's */

	who->uid = getuid();
	who->gid = getgid();
	who->pid = getpid();
	if (gettid() == who->pid && prctl(PR_GET_NAME, name) == 0 && name[0])
		snprintf(who->comm, sizeof(who->comm), "%.15s", name);
	else
		audit_who_fill_comm(who);
}

