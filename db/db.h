/*
 * The store: instances, sealed secrets and metadata. Never sees plaintext.
 * This header, with db_versions.h, db_attrs.h, db_audit.h and db_backup.h,
 * is the whole of it that the rest of vaultfs sees: no store's own type,
 * file name or behaviour crosses it. Two stores stand behind it (db/store.h
 * says how one plugs in): SQLite, for a path, and PostgreSQL, for a
 * postgresql:// or postgres:// URI; db_open picks by the spec it is given.
 *
 * Rules every store keeps:
 *  - Ids. Instance and secret ids are positive, given by the store at
 *    insert, and never handed out again, whatever is deleted, purged or
 *    restored: a secret made again after a purge has a new id and a history
 *    of its own. A trashed secret keeps its id.
 *  - Transactions belong to a thread. db_begin's transaction is the calling
 *    thread's until its db_commit or db_rollback; that thread's calls run
 *    inside it, and other threads' calls (reads too, unless the thread holds
 *    a snapshot) wait for its end, so a value committed by one request is
 *    what the next one reads. Every call made outside a transaction is
 *    atomic on its own. A db_begin nested in the thread's own transaction is
 *    a savepoint.
 *  - Snapshots. Between db_read_begin and db_read_end, the calling thread's
 *    reads all see one committed state, whatever others commit meanwhile
 *    (with db_set_readers; without, reads are serialised and see the latest
 *    state). Inside its own write transaction a thread reads that
 *    transaction's state, not the snapshot.
 *  - Durability. A commit that returns 0 is on disk (or, for a networked
 *    store, acknowledged as durable), except db_begin_lazy's; a failed
 *    commit changed nothing. A commit whose outcome is unknown is an error.
 *  - Authentication. Rows are tagged by the caller's key (struct db_auth);
 *    a row that fails its check is never returned (-EIO).
 *  - Errors are 0 or -errno, with the store's own words for the last one in
 *    db_errmsg() (the calling thread's). The same errno means the same
 *    thing from every store:
 *      -ENOENT  no such row (or, at open, no such store);
 *      -EEXIST  the name is taken (or, at DB_CREATE, the store exists);
 *      -ENOTEMPTY  an instance that still holds secrets;
 *      -EBUSY   locked by someone else beyond the store's wait;
 *      -ENOSPC  out of space; -EROFS: the store refuses writes;
 *      -EFBIG   a value larger than the store takes;
 *      -EACCES  the store refused us, or a tagged row was asked for without
 *               db_set_auth;
 *      -EIO     a failed read or write, or a row whose tag fails;
 *      -EPROTO  what was found is not a vaultfs store, or is damaged;
 *      -EPROTONOSUPPORT  a newer schema, or a store this build lacks;
 *      -EUCLEAN schema objects vaultfs did not make (refused);
 *      -ENOMEM, -EINVAL (a misuse, such as a change to live secrets outside
 *               a transaction).
 */
#ifndef VAULTFS_DB_H
#define VAULTFS_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DB_NAME_MAX 255

struct db;

struct db_blob {
	unsigned char *data;	/* malloc'd ciphertext */
	size_t len;
};

struct db_instance {
	int64_t id;
	char name[DB_NAME_MAX + 1];
	uid_t uid;
	gid_t gid;
	mode_t mode;		/* permission bits only */
	int64_t ctime_ns;
	int64_t mtime_ns;
	uint64_t generation;	/* of the data key */
};

#define DB_SECRET_NL_STRIPPED 0x1	/* one trailing newline was dropped */

struct db_secret {
	int64_t id;
	int64_t instance_id;
	char name[DB_NAME_MAX + 1];
	uid_t uid;
	gid_t gid;
	mode_t mode;
	uint64_t version;
	uint64_t size;		/* plaintext length */
	uint32_t flags;
	int64_t ctime_ns;	/* created */
	int64_t mtime_ns;	/* value last changed */
	int64_t chtime_ns;	/* value, name or attributes last changed */
	uid_t updated_by;
};

enum {
	DB_CREATE = 0x1,	/* create the store's schema; it must not exist */
	DB_READONLY = 0x2,
	/* A short-lived process that reads or writes a few secrets (vaultfs
	 * get, set): it checks the rows it reads or changes by their buckets,
	 * against the state's tagged sums, instead of reading the whole
	 * instance first. */
	DB_BRIEF = 0x4,
};

/* spec: where the store is, as configured ([vault] db): a file path
 * (SQLite) or a postgresql:// URI. Brings the schema up to date. */
int db_open(struct db **out, const char *spec, int flags) WUR;
void db_close(struct db *db);
/* The store's own check that what it holds is undamaged (for SQLite, the
 * file's structure, page by page): 0, or -EPROTO with the first problem
 * found in db_errmsg(). Slow on a large store: run once, at mount. */
int db_check_integrity(struct db *db) WUR;
/* Calls fn for each file the store keeps at spec on this machine, whether
 * or not it exists yet, the main one first (main true); none for a store
 * on a server. For checks of ownership and mode, and to remove a copy.
 * fn returns nonzero to stop, and that value is returned. */
int db_files(const char *spec, int (*fn)(void *, const char *path, bool main), void *ctx);
/* Lets reads use up to max connections of their own, opened when first
 * needed, so they run side by side. While a write transaction is open,
 * reads still wait for it. For a server's threads; a one-shot command
 * needs none. */
void db_set_readers(struct db *db, unsigned max);
/* Holds one read connection for the calling thread, in one read
 * transaction, until db_read_end: the reads between see one snapshot and
 * pay for one transaction. Does nothing without readers, while a write
 * transaction is open, or when the thread already holds one. */
void db_read_begin(struct db *db);
void db_read_end(struct db *db);
/* Whether the calling thread holds a db_read_begin snapshot of db. */
bool db_read_pinned(struct db *db);
/* The calling thread's last error, in the store's words. db may be NULL. */
const char *db_errmsg(struct db *db);
/* The spec the store was opened with. */
const char *db_path(struct db *db);

/* A write transaction held by the calling thread, taken at once (other
 * writers wait here, not at their first write); other threads wait. A
 * db_begin nested in the calling thread's transaction is a savepoint: its
 * rollback undoes only its own changes, and its commit becomes durable with
 * the outermost one. */
int db_begin(struct db *db) WUR;
/* A write transaction whose commit need not wait for the disk: it becomes
 * durable with the next synced commit by anyone, in order. A crash of the
 * process loses nothing; a crash of the machine may lose it, whole. Not
 * nested: -EBUSY inside a transaction. (For the audit log's batches.) */
int db_begin_lazy(struct db *db) WUR;
int db_commit(struct db *db) WUR;

void db_rollback(struct db *db);

/* The change feed: a number that moves whenever someone else commits a
 * change to instances or secrets (another process; with a shared store,
 * another host), and not for this handle's own commits nor for audit
 * entries. Compare two readings to know that something changed; what
 * changed is for the caller to find (fs/watch.c). Cheap enough to poll
 * every few milliseconds. */
int db_change_seq(struct db *db, uint64_t *out) WUR;
/* Brings up to date what the store keeps beside the rows for readers that
 * start cold (the SQLite store's sub-sums, db/rowtag.h), once this
 * handle's own writes have settled; cheap when there is nothing to do.
 * For a long-running process, every few milliseconds or less often; idle:
 * the process has had little to do lately, so that work that may scan a
 * whole instance (once, for a vault only read so far) may run. */
int db_tidy_caches(struct db *db, bool idle) WUR;

int db_meta_get(struct db *db, const char *key, struct db_blob *out) WUR;
int db_meta_set(struct db *db, const char *key, const unsigned char *v, size_t len) WUR;

int db_instance_create(struct db *db, struct db_instance *in,
		       const struct db_blob *wrapped_key) WUR;
int db_instance_get(struct db *db, int64_t id, struct db_instance *out) WUR;
int db_instance_find(struct db *db, const char *name, struct db_instance *out) WUR;
/* An instance and its wrapped data key, read together. */
int db_instance_key(struct db *db, int64_t id, struct db_instance *in,
		    struct db_blob *wrapped) WUR;
int db_instance_set_wrapped_key(struct db *db, int64_t id, uint64_t generation,
				const struct db_blob *wrapped) WUR;
int db_instance_set_attr(struct db *db, int64_t id, uid_t uid, gid_t gid,
			 mode_t mode, int64_t now_ns) WUR;
int db_instance_delete(struct db *db, int64_t id) WUR;	/* -ENOTEMPTY */
/* Calls fn for each instance with id > after_id, in id order; fn returns
 * nonzero to stop, and that value is returned. */
int db_instance_each(struct db *db, int64_t after_id,
		     int (*fn)(void *, const struct db_instance *), void *ctx) WUR;
int64_t db_instance_count(struct db *db);

int db_secret_get(struct db *db, int64_t id, struct db_secret *out) WUR;
int db_secret_find(struct db *db, int64_t instance_id, const char *name,
		   struct db_secret *out) WUR;
int db_secret_blob(struct db *db, int64_t id, struct db_secret *meta,
		   struct db_blob *out) WUR;
/* Calls fn for secrets of an instance in id order with id > after_id. */
int db_secret_each(struct db *db, int64_t instance_id, int64_t after_id,
		   int (*fn)(void *, const struct db_secret *), void *ctx) WUR;
int64_t db_secret_count(struct db *db, int64_t instance_id);
/* Inserts s (name, uid, gid, mode, version, size, flags, times, updated_by);
 * sets s->id. */
int db_secret_insert(struct db *db, struct db_secret *s, const struct db_blob *blob) WUR;
/* An id for a secret whose row is inserted later, with db_secret_insert_as:
 * no other row, made by this process or any other, ever gets it. Outside a
 * transaction (-EBUSY inside one); it may commit one of its own, lazily. */
int db_secret_id_reserve(struct db *db, int64_t *id) WUR;
/* db_secret_insert of s with the id s->id that db_secret_id_reserve gave. */
int db_secret_insert_as(struct db *db, struct db_secret *s, const struct db_blob *blob) WUR;
/* Replaces the value: version, size, flags, mtime/chtime, updated_by, blob. */
int db_secret_set_value(struct db *db, const struct db_secret *s,
			const struct db_blob *blob) WUR;
int db_secret_set_attr(struct db *db, int64_t id, uid_t uid, gid_t gid,
		       mode_t mode, int64_t now_ns) WUR;
/* Renames and replaces the value (its AD names the key) in one step. */
int db_secret_rename(struct db *db, const struct db_secret *s,
		     const struct db_blob *blob) WUR;
/* Removes the row for good, without history or trash (the vault moves a
 * deleted secret to the trash instead: db_trash_put). */
int db_secret_delete(struct db *db, int64_t id) WUR;

/* Row authentication. Each row of instances, secrets, versions, trash and
 * secret_attrs carries a tag over its access and identity fields and its
 * id, made by auth->mac with a key the store never sees. Every read of such
 * a row checks its tag, every write makes a new one after checking the row
 * it replaces or copies; a row that fails is -EIO, named in db_errmsg and
 * handed to auth->failed (outside the caller's write transaction, so it
 * may write an audit entry). A store without auth refuses those rows
 * (-EACCES). */
#define DB_MAC_LEN 32
#define DB_ELEM_LEN 16
struct db_auth {
	void (*mac)(void *ctx, const unsigned char *msg, size_t len,
		    unsigned char out[DB_MAC_LEN]);
	/* A keyed PRF over one element of an instance's live set, under a key
	 * of its own derived from the row-tag key (db/rowtag.c sums them). */
	void (*elem)(void *ctx, const unsigned char msg[16], unsigned char out[DB_ELEM_LEN]);
	/* The key may be stale (another process rotated the master key):
	 * true if it was renewed and the check is worth repeating. May be NULL. */
	bool (*renew)(void *ctx);
	/* what: "secrets row 12", for logs and the audit log. May be NULL. */
	void (*failed)(void *ctx, const char *what);
	void *ctx;
};
/* auth must outlive the store; set before the first read. */
void db_set_auth(struct db *db, const struct db_auth *auth);
/* Inside the caller's transaction: tags every row afresh, trusting what it
 * holds (a vault from before row tags, upgraded under its master key). */
int db_auth_upgrade(struct db *db) WUR;
/* Inside the caller's transaction: checks every row under the current auth
 * and tags it with next (a master-key rotation); the caller then makes
 * next's key the current one. */
int db_auth_rekey(struct db *db, const struct db_auth *next) WUR;
/* Checks every row; fn(ctx, what) for each that fails. 0, -EIO if any
 * failed, or another -errno. */
int db_auth_check_all(struct db *db, void (*fn)(void *, const char *what), void *ctx) WUR;

/* An instance's state: seq (bumped by each transaction that changes which
 * version of which secret is live) and, for db_state_check, the (id,
 * version) of each live secret, checked against the instance's tagged
 * state in one snapshot: -EIO (reported) if they differ. */
int db_instance_seq(struct db *db, int64_t instance_id, int64_t *seq) WUR;
/* The same, as last committed, whatever snapshot the thread holds. */
int db_instance_seq_latest(struct db *db, int64_t instance_id, int64_t *seq) WUR;
/* With fn, the set may come from the states this process verified or
 * made itself when the snapshot's instance row is still theirs (no
 * scan): a row put back meanwhile is then seen by its version disagreeing
 * with the set, not here. Without fn, always the full check. */
int db_state_check(struct db *db, int64_t instance_id, int64_t *seq,
		   int (*fn)(void *, int64_t id, uint64_t version), void *ctx) WUR;
/* One secret's entry in the set db_state_check would give, without a
 * scan: from the states this process trusts, or (DB_BRIEF) by the
 * secret's bucket. 1 and *version if it is live, 0 if not, in the
 * caller's snapshot (*seq: the snapshot's seq); -ENOENT when the store
 * can't tell that way (then use db_state_check). */
int db_state_version(struct db *db, int64_t instance_id, int64_t id, int64_t *seq,
		     uint64_t *version) WUR;
/* With the auth set: states an earlier vaultfs made another way, checked
 * and made again, in one transaction (0 when there are none). -EIO
 * (reported) if one does not match its rows: nothing changes; -EROFS if
 * readonly. */
int db_states_convert(struct db *db, bool readonly) WUR;

/* The highest audit entry the log had reached at the last write to live
 * secrets (checked): -ENOENT if none was recorded, -EIO if it fails. */
int db_audit_floor(struct db *db, int64_t *floor) WUR;
/* The first len bytes of audit entry seq's chain MAC: -ENOENT if none. */
int db_audit_entry_mac(struct db *db, int64_t seq, unsigned char *out, size_t len) WUR;

void db_blob_free(struct db_blob *b);
int64_t db_now_ns(void);

#endif
