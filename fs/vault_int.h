/* Inside fs/ only: the vault's state, for the files that make it up
 * (vault.c, vault_key.c, vault_read.c, vault_write.c) and extend it
 * (history.c, rekey.c, meta.c). Everyone else uses vault.h. */
#ifndef VAULTFS_VAULT_INT_H
#define VAULTFS_VAULT_INT_H

#include <pthread.h>

#include "../crypto/seal.h"
#include "vault.h"

/* An instance's data key, unwrapped; shared by reference. */
struct inst_key {
	int64_t id;
	char name[DB_NAME_MAX + 1];
	uint64_t generation;	/* of the wrapped key it came from */
	struct secbuf *key;
	unsigned refs;
	bool dead;
	struct inst_key *next;
};

struct vault {
	struct db *db;
	const struct vault_conf *conf;
	pthread_rwlock_t wrap_lock;	/* wrap changes on reload and rotation */
	struct secbuf *wrap;
	struct secbuf *audit_key;	/* keys the audit chain's MACs */
	struct secbuf *row_key;		/* keys the rows' tags (db_set_auth) */
	struct secbuf *elem_key;	/* derived from it: the states' sums */
	struct db_auth auth;
	struct audit *audit;
	pthread_mutex_t keys_lock;
	struct inst_key *keys;
	pthread_mutex_t states_lock;
	struct inst_state *states;	/* checked instance states (vault_read.c) */
};

/* A data key by instance id: cached, or unwrapped now. */
int vault_key_get(struct vault *v, int64_t instance_id, struct inst_key **out) WUR;
/* The same, inside a write transaction: checked against the instance's
 * current generation, so nothing is sealed with a key a rotation retired. */
int vault_key_current(struct vault *v, int64_t instance_id, struct inst_key **out) WUR;
void vault_key_put(struct vault *v, struct inst_key *k);
void vault_key_forget(struct vault *v, int64_t instance_id);
/* Drops every cached data key (they are unwrapped again when needed). */
void vault_keys_flush(struct vault *v);
/* true (and the key forgotten) if the instance's data key changed since k
 * was unwrapped. */
bool vault_key_stale(struct vault *v, const struct inst_key *k);

/* Seal and open with the wrapping key (data keys, the check value). */
int vault_wrap_seal(struct vault *v, const struct seal_ad *ad, const unsigned char *pt,
		    size_t len, struct db_blob *out) WUR;
int vault_wrap_open(struct vault *v, const struct seal_ad *ad, const struct db_blob *blob,
		    struct secbuf **out) WUR;
/* 0 if the wrapping key opens the check value, -EKEYREJECTED if not. */
int vault_wrap_check(struct vault *v) WUR;
/* The same inside a transaction, before wrapping anything new: a stale
 * wrapping key (the master key was rotated by another process) is
 * reloaded from the key source first. */
int vault_wrap_current(struct vault *v) WUR;
/* The check value for a wrapping key, sealed. */
#define VAULT_META_CHECK "check"
int vault_check_value(const struct secbuf *wrap, struct db_blob *out) WUR;
/* The keys derived from one master key. */
struct vault_keys {
	struct secbuf *wrap, *audit;
};
int vault_keys_derive(struct vault_keys *k, const struct secbuf *master) WUR;
void vault_keys_free(struct vault_keys *k);
/* Takes over the keys derived from a new master key (k is emptied): the
 * wrapping key and the audit subkey (which seals the audit chain's key). */
void vault_wrap_replace(struct vault *v, struct vault_keys *k);
/* The rows' tag key is random, like the data keys, and stored sealed under
 * the wrapping key: a master-key rotation re-seals it and no row changes,
 * so a daemon keeps checking rows with the key it holds. */
#define VAULT_META_ROW_KEY "row_key"
int vault_row_key_seal(const struct secbuf *wrap, const struct secbuf *row_key,
		       struct db_blob *out) WUR;

/* Seals pt with key for ad into a new blob. */
int vault_seal_blob(struct db_blob *out, const struct secbuf *key, const struct seal_ad *ad,
		    const unsigned char *pt, size_t len) WUR;
/* Calls fn with each old version of a secret and its blob, newest first;
 * fn may change the version's row. */
int vault_history_visit(struct vault *v, int64_t secret_id,
			int (*fn)(void *, uint64_t version, const struct db_blob *blob),
			void *ctx) WUR;
/* Re-seals the old versions of a secret of `instance` from (from_key,
 * from_name) to (to_key, to_name), inside the caller's transaction. */
int vault_reseal_history(struct vault *v, int64_t secret_id, const struct secbuf *from_key,
			 const char *instance, const char *from_name,
			 const struct secbuf *to_key, const char *to_name) WUR;

/* Inside a transaction: s is the current row. Keeps the current value as an
 * old version, seals pt exactly (with flags) as version s->version + 1, and
 * stores it. */
int vault_store_next(struct vault *v, struct inst_key *k, struct db_secret *s,
		     const unsigned char *pt, size_t len, uint32_t flags, uid_t by) WUR;
/* On close: every cached data key (vault_key.c) and every checked
 * instance state (vault_read.c), freed whatever their references. */
void vault_key_cache_free(struct vault *v);
void vault_states_free(struct vault *v);
/* How many old versions a secret keeps. */
unsigned vault_keep_old(const struct vault *v);
/* Now, as the store counts time, less the undelete window. */
int64_t vault_undelete_since(const struct vault *v);

#endif
