/* Locked, guarded memory for keys and plaintext. */
#ifndef VAULTFS_SECMEM_H
#define VAULTFS_SECMEM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct secmem_account;

/* A growable buffer whose bytes live only in sodium_malloc memory. */
struct secbuf {
	unsigned char *data;
	size_t len;
	size_t cap;
	struct secmem_account *acct;	/* charged for it, NULL: nobody's */
};

/* One user's share of locked memory. A buffer is charged to the account
 * that was current in its thread when it was made (secmem_use), and so are
 * its growth and its release, whichever thread does them. */
struct secmem_account {
	_Atomic size_t bytes;	/* locked now */
	size_t limit;		/* its share, 0: none */
	bool reserve;		/* may lock into the reserve (root, trusted readers) */
};

int secmem_init(void) WUR;
/* Total bytes that may be locked by secbufs at once; 0 means no budget. */
void secmem_set_budget(size_t bytes);
/* The most that buffers of accounts without `reserve` may lock together
 * (the budget less a reserve); 0: no such limit. */
void secmem_set_shared_limit(size_t bytes);
/* Buffers made by this thread from now on are charged to a (NULL: to
 * nobody); returns the account that was current, to put back. */
struct secmem_account *secmem_use(struct secmem_account *a);
/* Hold plaintext in memory that could not be locked (config opt-in). */
void secmem_allow_unlocked(bool allow);
size_t secmem_locked_bytes(void);

/* 0 or -ENOMEM (no memory, or it could not be locked and unlocked memory
 * is not allowed). */
int secbuf_new(struct secbuf **out, size_t cap) WUR;
/* Writes all n bytes at p to fd (straight from locked memory, no stdio
 * buffer in between), retrying short writes and EINTR. */
int secmem_write_all(int fd, const void *p, size_t n) WUR;
int secbuf_reserve(struct secbuf *b, size_t cap) WUR;
int secbuf_set(struct secbuf *b, const void *data, size_t len) WUR;
/* Wipes and frees; NULL is fine. */
void secbuf_free(struct secbuf *b);
/* Wipes n bytes at p, in a way the compiler does not drop. */
void secmem_wipe(void *p, size_t n);

#endif
