/*
 * Locked memory for keys and plaintext. Rules this file keeps:
 *  - every byte handed out comes from sodium_malloc: guard pages, canary,
 *    excluded from core dumps, wiped by sodium_free;
 *  - sodium_malloc ignores a failed mlock, so the lock is checked here and a
 *    buffer that could not be locked is refused unless explicitly allowed;
 *  - a budget of our own caps how much is locked at once, so a storm of
 *    opens fails cleanly instead of exhausting RLIMIT_MEMLOCK;
 *  - on top of it, a buffer made while an account is current (secmem_use)
 *    is charged to that account, up to its limit, and one whose account has
 *    no reserve must also fit under the shared limit: one user's storm of
 *    opens fails for that user, and leaves the rest to the others and the
 *    reserve to root and trusted readers;
 *  - small regions are kept for reuse in a short pool, wiped as they enter
 *    it: each open then costs no mmap/mprotect/mlock system calls. Pooled
 *    regions keep their guard pages and their lock, the pool is emptied in
 *    a forked child (locks are not inherited) and at exit, and nothing is
 *    pooled once unlocked memory has been allowed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "secmem.h"

/* Far above any value the vault accepts; keeps size arithmetic from
 * overflowing. */
#define SECMEM_MAX ((size_t)1 << 40)

/* Free small regions kept locked for reuse: enough for every request
 * thread to have one in flight, little enough to keep idle memory small. */
#define POOL_MAX 16
/* Room libsodium may take from a page for its canary, with margin. */
#define CANARY_ROOM 64

static atomic_size_t locked_bytes;
static atomic_size_t shared_bytes;	/* locked by accounts without reserve */
static size_t budget;
static size_t shared_limit;
static _Thread_local struct secmem_account *current;
static bool allow_unlocked;
static size_t page_size = 4096;
static size_t small_cap = 4096 - CANARY_ROOM;	/* the size the pool holds */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *pool[POOL_MAX];
static unsigned pool_len;
static bool pool_off;

static void pool_drain(void)
{
	pthread_mutex_lock(&pool_lock);
	while (pool_len)
		sodium_free(pool[--pool_len]);
	pthread_mutex_unlock(&pool_lock);
}

/* The child of a fork holds copies that are no longer locked. */
static void pool_drop_in_child(void)
{
	pthread_mutex_init(&pool_lock, NULL);
	while (pool_len)
		sodium_free(pool[--pool_len]);
}

static unsigned char *pool_take(void)
{
	unsigned char *p = NULL;

	pthread_mutex_lock(&pool_lock);
	if (pool_len)
		p = pool[--pool_len];
	pthread_mutex_unlock(&pool_lock);
	return p;
}

/* Wipes p and keeps it; false if the pool is full or off. */
static bool pool_put(unsigned char *p)
{
	bool kept = false;

	sodium_memzero(p, small_cap);
	pthread_mutex_lock(&pool_lock);
	if (!pool_off && pool_len < POOL_MAX) {
		pool[pool_len++] = p;
		kept = true;
	}
	pthread_mutex_unlock(&pool_lock);
	return kept;
}

int secmem_init(void)
{
	static bool registered;
	long ps = sysconf(_SC_PAGESIZE);

	if (ps > 0)
		page_size = (size_t)ps;
	small_cap = page_size - CANARY_ROOM;
	if (sodium_init() < 0)
		return -EIO;
	if (!registered) {
		registered = true;
		pthread_atfork(NULL, NULL, pool_drop_in_child);
		atexit(pool_drain);
	}
	return 0;
}

void secmem_set_budget(size_t bytes)
{
	budget = bytes;
}

void secmem_set_shared_limit(size_t bytes)
{
	shared_limit = bytes;
}

struct secmem_account *secmem_use(struct secmem_account *a)
{
	struct secmem_account *was = current;

	current = a;
	return was;
}

void secmem_allow_unlocked(bool allow)
{
	allow_unlocked = allow;
	if (allow) {
		pthread_mutex_lock(&pool_lock);
		pool_off = true;	/* a region might now be unlocked */
		pthread_mutex_unlock(&pool_lock);
	}
}

size_t secmem_locked_bytes(void)
{
	return atomic_load(&locked_bytes);
}

static size_t round_page(size_t n)
{
	return (n + page_size - 1) / page_size * page_size;
}

/* Adds n to *counter unless that would pass limit (0: none). */
static bool add_within(atomic_size_t *counter, size_t n, size_t limit)
{
	size_t cur = atomic_load(counter);

	do {
		if (limit && (cur > limit || n > limit - cur))
			return false;
	} while (!atomic_compare_exchange_weak(counter, &cur, cur + n));
	return true;
}

static void uncharge(size_t n, struct secmem_account *a)
{
	atomic_fetch_sub(&locked_bytes, n);
	if (a) {
		atomic_fetch_sub(&a->bytes, n);
		if (!a->reserve)
			atomic_fetch_sub(&shared_bytes, n);
	}
}

static int charge(size_t n, struct secmem_account *a)
{
	if (a && !add_within(&a->bytes, n, a->limit))
		return -ENOMEM;
	if (a && !a->reserve && !add_within(&shared_bytes, n, shared_limit)) {
		atomic_fetch_sub(&a->bytes, n);
		return -ENOMEM;
	}
	if (!add_within(&locked_bytes, n, budget)) {
		if (a)
			atomic_fetch_sub(&a->bytes, n);
		if (a && !a->reserve)
			atomic_fetch_sub(&shared_bytes, n);
		return -ENOMEM;
	}
	return 0;
}

/* A locked region of at least cap bytes (cap > 0), charged to a. */
static unsigned char *region_new(size_t cap, struct secmem_account *a)
{
	unsigned char *p;

	if (charge(round_page(cap), a) < 0)
		return NULL;
	if (cap == small_cap && (p = pool_take()))
		return p;
	p = sodium_malloc(cap);
	if (!p) {
		uncharge(round_page(cap), a);
		return NULL;
	}
	if (sodium_mlock(p, cap) != 0 && !allow_unlocked) {
		sodium_free(p);
		uncharge(round_page(cap), a);
		return NULL;
	}
	return p;
}

static void region_free(unsigned char *p, size_t cap, struct secmem_account *a)
{
	if (!p)
		return;
	if (cap != small_cap || !pool_put(p))
		sodium_free(p);		/* wipes before unmapping */
	uncharge(round_page(cap), a);
}

int secbuf_new(struct secbuf **out, size_t cap)
{
	struct secbuf *b;

	*out = NULL;
	if (cap > SECMEM_MAX)
		return -ENOMEM;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->cap = cap <= small_cap ? small_cap : cap;
	b->acct = current;
	b->data = region_new(b->cap, b->acct);
	if (!b->data) {
		free(b);
		return -ENOMEM;
	}
	*out = b;
	return 0;
}

int secbuf_reserve(struct secbuf *b, size_t cap)
{
	unsigned char *p;
	size_t ncap = b->cap;

	if (cap <= b->cap)
		return 0;
	if (cap > SECMEM_MAX)
		return -ENOMEM;
	while (ncap < cap)
		ncap = ncap < page_size ? page_size : ncap * 2;
	p = region_new(ncap, b->acct);
	if (!p)
		return -ENOMEM;
	memcpy(p, b->data, b->len);
	region_free(b->data, b->cap, b->acct);
	b->data = p;
	b->cap = ncap;
	return 0;
}

int secbuf_set(struct secbuf *b, const void *data, size_t len)
{
	int r = secbuf_reserve(b, len);

	if (r < 0)
		return r;
	if (len)
		memcpy(b->data, data, len);
	if (b->len > len)
		sodium_memzero(b->data + len, b->len - len);
	b->len = len;
	return 0;
}

void secmem_wipe(void *p, size_t n)
{
	sodium_memzero(p, n);
}

void secbuf_free(struct secbuf *b)
{
	if (!b)
		return;
	region_free(b->data, b->cap, b->acct);
	free(b);
}

int secmem_write_all(int fd, const void *p, size_t n)
{
	const unsigned char *c = p;

	while (n) {
		ssize_t w = write(fd, c, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}
