/*
 * Rows a mount's opens read again and again, kept while the database has
 * not moved. Rules this file keeps:
 *  - "not moved" is SQLite's WAL-index header: the first 48 bytes of the
 *    -shm file, which every commit (and every restart of the WAL) rewrites
 *    (https://www.sqlite.org/walformat.html). It is read from SQLite's own
 *    mapping, both of its copies, and trusted only when they agree: SQLite
 *    writes the second, then the first, and its readers compare the same;
 *  - the header is read before the query whose row is kept, so a commit
 *    between the two leaves the row tagged with the older header, which
 *    the next look no longer matches; a row is kept only from a query that
 *    read the latest state, never from a pinned read's older snapshot;
 *  - a hit is the latest state at the time of the look, so what a thread
 *    reads only moves forward; inside a pinned read whose snapshot has
 *    begun, every read is the snapshot's (no look at all);
 *  - only a daemon's reads while no write transaction is open use it (the
 *    changes of one are not in the header until it commits, and a read
 *    then waits for it), and only rows the query verified: a -shm file someone
 *    else writes can at worst keep the last rows we verified in use, never
 *    bring in rows of its own or older ones;
 *  - a row kept before one of this handle's own commits is never used
 *    after it, whatever the header says then: a -shm file written back to
 *    an older header brings back nothing this process replaced;
 *  - per thread, a few small rows, no lock: a hit costs no system call.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite_int.h"

#define HDR_LEN 48		/* one copy of the WAL-index header */
#define HDR_ISINIT 12		/* its isInit byte */
#define SHM_REGION 32768	/* SQLite's wal-index region size */
#define SLOTS 4
#define BLOB_MAX 512		/* sealed values kept up to this length */

struct slot {
	const struct sq *db;
	uint64_t commits;
	unsigned char hdr[HDR_LEN];
	int64_t id;		/* 0: empty */
	struct db_secret meta;
	size_t len;
	unsigned char blob[BLOB_MAX];
};

struct seq_slot {
	const struct sq *db;
	uint64_t commits;
	unsigned char hdr[HDR_LEN];
	int64_t inst;		/* 0: empty */
	int64_t seq;
};

static __thread struct slot slots[SLOTS];
static __thread unsigned slot_next;
static __thread struct seq_slot seqs[SLOTS];
static __thread unsigned seq_next;

/* SQLite's own mapping of the -shm file's first region, taken from the
 * store's connection once it has one (its first query, at open, made it).
 * Never a descriptor of our own on that file: closing one would drop every
 * lock this process holds on it, SQLite's among them, and another process
 * would then take the file for unused and cut it short under us. The
 * mapping lives as long as the connection. Asked without waiting for a
 * writer to finish (then: no cache this time). */
static const volatile unsigned char *shm_of(struct sq *db)
{
	sqlite3_file *f = NULL;
	void volatile *p = NULL;
	int state = atomic_load(&db->shm_state);

	if (state)
		return state > 0 ? db->shm : NULL;
	if (pthread_mutex_trylock(&db->lock) != 0)
		return NULL;
	if (!atomic_load(&db->shm_state)) {
		if (sqlite3_file_control(db->conn, "main", SQLITE_FCNTL_FILE_POINTER, &f) !=
		    SQLITE_OK || !f || !f->pMethods || f->pMethods->iVersion < 2 ||
		    !f->pMethods->xShmMap)
			atomic_store(&db->shm_state, -1);
		else if (f->pMethods->xShmMap(f, 0, SHM_REGION, 0, &p) == SQLITE_OK && p) {
			db->shm = p;
			atomic_store(&db->shm_state, 1);
		}
	}
	pthread_mutex_unlock(&db->lock);
	return atomic_load(&db->shm_state) > 0 ? db->shm : NULL;
}

void sq_cache_close(struct sq *db)
{
	atomic_store(&db->shm_state, -1);
	db->shm = NULL;
}

/* Not while a write transaction is open, whoever's: reads then wait for
 * its commit on the writer's connection (sqlite_txn.c), so an open that
 * follows a close reads what the close's RELEASE committed. */
static bool usable(struct sq *db)
{
	return !(db->flags & (SQ_READER | SQ_LOG | DB_BRIEF)) && db->readers_max &&
	       atomic_load(&db->owner) == (pthread_t)0 && !sq_read_in_snapshot(db);
}

/* The header now, if both copies agree and it was ever written. */
static bool header_now(struct sq *db, unsigned char out[HDR_LEN])
{
	const volatile unsigned char *h = usable(db) ? shm_of(db) : NULL;
	unsigned char second[HDR_LEN];

	if (!h)
		return false;
	for (size_t i = 0; i < HDR_LEN; i++)
		out[i] = h[i];
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	for (size_t i = 0; i < HDR_LEN; i++)
		second[i] = h[HDR_LEN + i];
	return memcmp(out, second, HDR_LEN) == 0 && out[HDR_ISINIT];
}

bool sq_cache_mark(struct sq *db, struct sq_cache_mark *m)
{
	m->commits = atomic_load(&db->commits);
	m->valid = header_now(db, m->hdr);
	return m->valid;
}

/* Called after each outermost commit of the handle (sqlite_txn.c). */
void sq_cache_committed(struct sq *db)
{
	atomic_fetch_add(&db->commits, 1);
}

static bool same(const struct sq *db, const struct sq_cache_mark *now, const struct sq *sdb,
		 uint64_t commits, const unsigned char hdr[HDR_LEN])
{
	return sdb == db && commits == now->commits && !memcmp(hdr, now->hdr, HDR_LEN);
}

bool sq_cache_secret(struct sq *db, int64_t id, struct db_secret *meta, struct db_blob *out)
{
	struct sq_cache_mark now;
	struct slot *s;

	if (!sq_cache_mark(db, &now))
		return false;
	for (unsigned i = 0; i < SLOTS; i++) {
		s = &slots[i];
		if (s->id != id || !same(db, &now, s->db, s->commits, s->hdr))
			continue;
		out->data = malloc(s->len ? s->len : 1);
		if (!out->data)
			return false;
		memcpy(out->data, s->blob, s->len);
		out->len = s->len;
		*meta = s->meta;
		return true;
	}
	return false;
}

void sq_cache_secret_put(struct sq *db, const struct sq_cache_mark *m,
			 const struct db_secret *meta, const struct db_blob *blob)
{
	struct slot *s;

	if (!m->valid || blob->len > BLOB_MAX)
		return;
	s = &slots[slot_next++ % SLOTS];
	s->db = db;
	s->commits = m->commits;
	memcpy(s->hdr, m->hdr, HDR_LEN);
	s->id = meta->id;
	s->meta = *meta;
	s->len = blob->len;
	memcpy(s->blob, blob->data, blob->len);
}

bool sq_cache_seq(struct sq *db, int64_t inst, int64_t *seq)
{
	struct sq_cache_mark now;

	if (!sq_cache_mark(db, &now))
		return false;
	for (unsigned i = 0; i < SLOTS; i++) {
		if (seqs[i].inst == inst && same(db, &now, seqs[i].db, seqs[i].commits,
						 seqs[i].hdr)) {
			*seq = seqs[i].seq;
			return true;
		}
	}
	return false;
}

void sq_cache_seq_put(struct sq *db, const struct sq_cache_mark *m, int64_t inst, int64_t seq)
{
	struct seq_slot *s;

	if (!m->valid)
		return;
	s = &seqs[seq_next++ % SLOTS];
	s->db = db;
	s->commits = m->commits;
	memcpy(s->hdr, m->hdr, HDR_LEN);
	s->inst = inst;
	s->seq = seq;
}
