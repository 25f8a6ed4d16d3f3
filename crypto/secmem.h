/* Locked, guarded memory for keys and plaintext. */
#ifndef VAULTFS_SECMEM_H
#define VAULTFS_SECMEM_H

#include <stdbool.h>
#include <stddef.h>

#define WUR __attribute__((warn_unused_result))

/* A growable buffer whose bytes live only in sodium_malloc memory. */
struct secbuf {
	unsigned char *data;
	size_t len;
	size_t cap;
};

int secmem_init(void) WUR;
/* Total bytes that may be locked by secbufs at once; 0 means no budget. */
void secmem_set_budget(size_t bytes);
/* Hold plaintext in memory that could not be locked (config opt-in). */
void secmem_allow_unlocked(bool allow);
size_t secmem_locked_bytes(void);

/* 0 or -ENOMEM (no memory, or it could not be locked and unlocked memory
 * is not allowed). */
int secbuf_new(struct secbuf **out, size_t cap) WUR;
int secbuf_reserve(struct secbuf *b, size_t cap) WUR;
int secbuf_set(struct secbuf *b, const void *data, size_t len) WUR;
/* Wipes and frees; NULL is fine. */
void secbuf_free(struct secbuf *b);

#endif
