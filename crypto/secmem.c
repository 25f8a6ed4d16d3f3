/*
 * Locked memory for keys and plaintext. Rules this file keeps:
 *  - every byte handed out is in a page of its own kind: locked, excluded
 *    from core dumps, between two guard pages, wiped before it is unmapped
 *    or handed out again. Buffers of up to a page less CANARY_ROOM come
 *    from slabs (below); larger ones from sodium_malloc (guard pages and a
 *    canary of libsodium's);
 *  - sodium_malloc ignores a failed mlock, and so would a slab: the lock is
 *    checked here and memory that could not be locked is refused unless
 *    explicitly allowed;
 *  - a budget of our own caps how much is locked at once, so a storm of
 *    opens fails cleanly instead of exhausting RLIMIT_MEMLOCK;
 *  - on top of it, a buffer made while an account is current (secmem_use)
 *    is charged to that account, up to its limit, and one whose account has
 *    no reserve must also fit under the shared limit: one user's storm of
 *    opens fails for that user, and leaves the rest to the others and the
 *    reserve to root and trusted readers;
 *  - small buffers come from slabs: one mapping of SLAB_SLOTS one-page
 *    slots, each between guard pages. A slot is made accessible and locked
 *    the first time it is handed out (two system calls), and stays so
 *    while its slab lives. A process that needs a few keys and a value
 *    (vaultfs get) then makes one mapping instead of one sodium_malloc
 *    region each (about 20 system calls apiece, made and undone), and
 *    prepares only the slots it uses at once; the daemon's opens make no
 *    system call for one. A slot is wiped as it is freed; a slab all of
 *    whose slots are free is unmapped once more than SLAB_KEEP slots stand
 *    free;
 *  - a slab made in a parent is not locked in a forked child (locks are not
 *    inherited): the child hands out none of its slots, only wipes those it
 *    frees; nor is one made while unlocked memory was allowed used once it
 *    no longer is.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <sodium.h>

#include "secmem.h"

/* Far above any value the vault accepts; keeps size arithmetic from
 * overflowing. */
#define SECMEM_MAX ((size_t)1 << 40)

/* Slots per slab: a get's keys and value fit in one. */
#define SLAB_SLOTS 8
/* Free slots kept locked for reuse: enough for every request thread to
 * have one in flight, little enough to keep idle memory small. */
#define SLAB_KEEP 16
/* Room libsodium may take from a page for its canary, with margin; a slot
 * leaves it free at the start so that its buffer ends at the guard page. */
#define CANARY_ROOM 64

static atomic_size_t locked_bytes;
static atomic_size_t shared_bytes;	/* locked by accounts without reserve */
static size_t budget;
static size_t shared_limit;
static _Thread_local struct secmem_account *current;
static bool allow_unlocked;
static size_t page_size = 4096;
static size_t small_cap = 4096 - CANARY_ROOM;	/* the size a slot holds */

/* Guard, slot, guard, slot, ..., slot, guard: 2 * SLAB_SLOTS + 1 pages. */
struct slab {
	struct slab *next;
	unsigned char *base;
	uint32_t free_mask;	/* bit i: slot i is free */
	uint32_t ready_mask;	/* bit i: slot i is read-write, and locked if `locked` */
	bool locked;		/* every ready slot is mlock'd (else allow_unlocked made one) */
	bool stale;		/* from before a fork, or unlocked: hand out nothing */
};

static pthread_mutex_t slab_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slab *slabs;
static unsigned slab_free_slots;	/* in slabs that are not stale */

#define SLAB_ALL ((uint32_t)((1ull << SLAB_SLOTS) - 1))

static size_t slab_len(void)
{
	return (2 * SLAB_SLOTS + 1) * page_size;
}

static unsigned char *slot_page(const struct slab *s, unsigned i)
{
	return s->base + (2 * i + 1) * page_size;
}

static void slab_unmap(struct slab *s)
{
	munmap(s->base, slab_len());
	free(s);
}

/* A slab with every slot free and none ready yet (all PROT_NONE), or NULL. */
static struct slab *slab_make(void)
{
	struct slab *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->base = mmap(NULL, slab_len(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s->base == MAP_FAILED) {
		free(s);
		return NULL;
	}
	(void)madvise(s->base, slab_len(), MADV_DONTDUMP);
	s->locked = true;
	s->free_mask = SLAB_ALL;
	return s;
}

/* Makes slot i read-write and locks it; false if it can't be used (it is
 * then PROT_NONE again). Its guard pages stay PROT_NONE. */
static bool slot_ready(struct slab *s, unsigned i)
{
	unsigned char *p = slot_page(s, i);

	if (mprotect(p, page_size, PROT_READ | PROT_WRITE) != 0)
		return false;
	if (s->locked && mlock(p, page_size) != 0) {
		if (!allow_unlocked) {
			(void)mprotect(p, page_size, PROT_NONE);
			return false;
		}
		s->locked = false;	/* used only while unlocked memory is allowed */
	}
	s->ready_mask |= 1u << i;
	return true;
}

/* A slot's buffer, ending where the next guard page begins. */
static unsigned char *slab_take(void)
{
	struct slab *s;
	unsigned i;

	pthread_mutex_lock(&slab_lock);
	for (s = slabs; s; s = s->next)
		if (!s->stale && s->free_mask && (s->locked || allow_unlocked))
			break;
	if (!s && (s = slab_make())) {
		s->next = slabs;
		slabs = s;
		slab_free_slots += SLAB_SLOTS;
	}
	/* A slot already ready if there is one, else the first free one. */
	if (s)
		i = (unsigned)__builtin_ctz(s->free_mask & s->ready_mask ? s->free_mask & s->ready_mask
							  : s->free_mask);
	if (!s || (!(s->ready_mask & (1u << i)) && !slot_ready(s, i))) {
		pthread_mutex_unlock(&slab_lock);
		return NULL;	/* the caller falls back to sodium_malloc */
	}
	s->free_mask &= ~(1u << i);
	slab_free_slots--;
	pthread_mutex_unlock(&slab_lock);
	return slot_page(s, i) + CANARY_ROOM;
}

/* Frees p, wiped by the caller, if a slab holds it; false if none does. */
static bool slab_give(unsigned char *p)
{
	struct slab **pp, *s;
	size_t off;
	unsigned i;

	pthread_mutex_lock(&slab_lock);
	for (pp = &slabs; (s = *pp); pp = &s->next)
		if (p >= s->base && p < s->base + slab_len())
			break;
	if (!s) {
		pthread_mutex_unlock(&slab_lock);
		return false;
	}
	off = (size_t)(p - s->base);
	i = (unsigned)(off / page_size - 1) / 2;
	s->free_mask |= 1u << i;
	if (!s->stale)
		slab_free_slots++;
	if (s->free_mask == SLAB_ALL && (s->stale || slab_free_slots > SLAB_KEEP)) {
		if (!s->stale)
			slab_free_slots -= SLAB_SLOTS;
		*pp = s->next;
		slab_unmap(s);
	}
	pthread_mutex_unlock(&slab_lock);
	return true;
}

/* Every slab that is not in use: at exit. */
static void slab_drain(void)
{
	struct slab **pp = &slabs, *s;

	pthread_mutex_lock(&slab_lock);
	while ((s = *pp)) {
		if (s->free_mask == SLAB_ALL) {
			if (!s->stale)
				slab_free_slots -= SLAB_SLOTS;
			*pp = s->next;
			slab_unmap(s);
		} else {
			pp = &s->next;
		}
	}
	pthread_mutex_unlock(&slab_lock);
}

/* The child of a fork holds copies that are no longer locked. */
static void slab_stale_in_child(void)
{
	pthread_mutex_init(&slab_lock, NULL);
	for (struct slab *s = slabs; s; s = s->next)
		s->stale = true;
	slab_free_slots = 0;
	slab_drain();
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
		pthread_atfork(NULL, NULL, slab_stale_in_child);
		atexit(slab_drain);
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
	if (!allow) {
		/* A slab made meanwhile may be unlocked. */
		pthread_mutex_lock(&slab_lock);
		for (struct slab *s = slabs; s; s = s->next)
			if (!s->locked && !s->stale) {
				s->stale = true;
				slab_free_slots -= (unsigned)__builtin_popcount(s->free_mask);
			}
		pthread_mutex_unlock(&slab_lock);
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
	if (cap == small_cap && (p = slab_take()))
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
	/* Wiped outside the lock: the request threads free at once. */
	if (cap == small_cap)
		sodium_memzero(p, cap);
	if (cap != small_cap || !slab_give(p))
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
