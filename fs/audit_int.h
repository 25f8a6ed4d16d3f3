/* Inside the audit log only: its state, shared by audit.c (the queue, the
 * writer thread, recording) and audit_chain.c (the MAC chain, pruning,
 * verification). Everyone else uses audit.h. */
#ifndef VAULTFS_AUDIT_INT_H
#define VAULTFS_AUDIT_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../crypto/seal.h"
#include "../db/db_audit.h"
#include "audit.h"

struct fold;

struct audit {
	struct db_audit *store;
	struct db_audit *txn_store;	/* on the vault's connection (audit_record_txn) */
	struct db *txn_db;
	struct secbuf *key;
	bool syslog;
	int64_t retention_ns;

	pthread_mutex_t lock;
	pthread_cond_t not_empty, not_full, stored;
	struct db_audit_row *ring;
	struct db_audit_row **batch;
	unsigned head, count;
	uint64_t queued, done;		/* tickets: entries queued and handled */
	uint64_t urgent;		/* the last ticket whose caller waits */
	bool running, stop;
	pthread_t thread;
	int64_t last_prune_ns;
	int64_t fold_ns;		/* 0: no folding */
	struct fold *folds;
	int64_t next_close_ns;		/* of the first open window, 0: none */
	int64_t tidy_ns;		/* when to tidy the WAL, 0: done */
};

/* The chain (audit_chain.c). Opens, or creates, the chain's key with the
 * master key's audit subkey. */
int audit_chain_key_load(struct audit *a, const struct secbuf *wrap) WUR;
/* Chains and stores rows in one transaction (nested in the caller's, for
 * the vault's store). */
int audit_chain_append(struct audit *a, struct db_audit *store,
		       struct db_audit_row *const *rows, size_t n, bool lazy) WUR;

#endif
