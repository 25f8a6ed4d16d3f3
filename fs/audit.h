/* The audit log: who opened, changed or was refused which secret, kept in
 * the store as a hash chain keyed from the master key, and sent to syslog.
 * Never a value. */
#ifndef VAULTFS_AUDIT_H
#define VAULTFS_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../crypto/secmem.h"
#include "vault_conf.h"

struct audit;
struct db;
struct db_audit_row;

struct audit_who {
	uid_t uid;
	gid_t gid;
	pid_t pid;		/* a hint: the calling thread, 0 across namespaces */
	char comm[16];		/* process name, "?" if unknown */
};

enum audit_op {
	AUDIT_READ,		/* open for reading */
	AUDIT_WRITE,		/* a committed value */
	AUDIT_CREATE,
	AUDIT_DELETE,
	AUDIT_RENAME,
	AUDIT_CHMOD,
	AUDIT_CHOWN,
	AUDIT_TRUNCATE,
	AUDIT_MKDIR,
	AUDIT_RMDIR,
	AUDIT_AUTHFAIL,		/* a stored blob failed to authenticate */
	AUDIT_HOOK,		/* an on_change hook ran: its exit status */
	AUDIT_OP_COUNT
};

const char *audit_op_name(enum audit_op op);

/* Where the chain key is kept, sealed (see audit_reseal_key). */
#define AUDIT_META_KEY "audit_key"

/* Opens the log in the database at path. wrap (SEAL_SUBKEY_AUDIT of the
 * master key) opens the chain key, which is made on first use.
 * -EKEYREJECTED if it does not open it. */
int audit_open(struct audit **out, const char *path, const struct secbuf *wrap,
	       const struct daemon_conf *conf) WUR;
/* The same on the vault's own connection to the store, for a command:
 * no second connection to open. Not for audit_start. */
int audit_open_db(struct audit **out, struct db *db, const struct secbuf *wrap,
		  const struct daemon_conf *conf) WUR;
/* For master key rotation: the chain key sealed under the new master key's
 * audit subkey, to store in meta under AUDIT_META_KEY in the same
 * transaction that re-wraps the instance keys. blob is malloc'd. */
int audit_reseal_key(struct audit *a, const struct secbuf *new_wrap, unsigned char **blob,
		     size_t *len) WUR;
/* The same without an open log: re-seals the stored chain key (if there is
 * one) from old_wrap (vault_audit_key) to new_master's audit subkey, with
 * db_meta_set; call it inside the rotation's transaction. */
int audit_rotate_master(struct db *db, const struct secbuf *old_wrap,
			const struct secbuf *new_master) WUR;
/* Moves storing to a background thread that writes entries in batches: a
 * successful read returns without waiting for the disk; everything else
 * waits until its entry is stored, except repeats within conf's
 * audit_fold, which are counted into one entry stored when the window
 * closes. Without it, every entry is stored at once (the CLI). */
int audit_start(struct audit *a) WUR;
/* Stores what is queued, stops the thread and frees; NULL is fine. */
void audit_close(struct audit *a);

/* Records one event; result is 0 or -errno; detail may be NULL. A NULL
 * audit records nothing. Never call it inside a write transaction on the
 * store: it may wait for the store's write lock. */
void audit_record(struct audit *a, const struct audit_who *who, enum audit_op op,
		  const char *instance, const char *key, int result, const char *detail);

/* A change's entry, stored in the change's own transaction. */
struct audit_entry {
	const struct audit_who *who;	/* NULL: this process */
	enum audit_op op;
	const char *instance, *key, *detail;	/* detail may be NULL */
};
struct db;
/* Inside the calling thread's write transaction on db (the vault's store):
 * chains e, as a success, into that transaction, so the change and its
 * entry are stored together or not at all. NULL a or e: nothing. */
int audit_record_txn(struct audit *a, struct db *db, const struct audit_entry *e) WUR;
/* The same for the n entries e[] (NULL ones skipped), in their order. */
int audit_record_txn_n(struct audit *a, struct db *db, const struct audit_entry *const *e,
		       size_t n) WUR;

/* Who the calling thread is working for (NULL: this process), for entries
 * recorded deep in the vault, such as an authentication failure. */
void audit_set_caller(const struct audit_who *who);
void audit_authfail(struct audit *a, const char *instance, const char *key);
/* A stored row (what: "secrets row 12") fails its tag. */
void audit_authfail_row(struct audit *a, const char *what);
/* The same, reported by the store itself, perhaps with its lock held: the
 * writer thread, which needs that lock when the log shares the vault's
 * connection, stores it after; the caller does not wait for it. */
void audit_authfail_row_queued(struct audit *a, const char *what);

void audit_who_self(struct audit_who *who);
/* Fills comm from /proc/PID/comm. */
void audit_who_fill_comm(struct audit_who *who);

/* Deletes entries older than the retention, keeping the chain verifiable:
 * the MAC of the last one deleted is kept, authenticated, as the anchor. */
int audit_prune(struct audit *a, int64_t now_ns, int64_t *pruned) WUR;

struct audit_verdict {
	bool ok;
	int64_t entries;
	int64_t events;			/* what they record: folded entries count more */
	int64_t first_seq, last_seq;
	int64_t bad_seq;		/* the first bad entry, 0 if none */
	char reason[256];
	bool has_row;			/* bad_row holds the entry at bad_seq */
	struct db_audit_row *bad_row;
};

/* Walks the chain. 0 with v->ok false when it is broken; -errno when the
 * log can't be read. */
int audit_verify(struct audit *a, struct audit_verdict *v) WUR;
void audit_verdict_free(struct audit_verdict *v);

/* Entries in order, for `vaultfs audit`. */
struct db_audit_filter;
int audit_each(struct audit *a, const struct db_audit_filter *f,
	       int (*fn)(void *, const struct db_audit_row *), void *ctx) WUR;

#endif
