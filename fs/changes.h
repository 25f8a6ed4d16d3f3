/* What changed in the store between two looks at it: the shared ground of
 * the kernel's cache invalidation (watch.c), change hooks (hooks.c) and
 * `vaultfs watch`. Metadata only: names, versions, owners, never a value. */
#ifndef VAULTFS_CHANGES_H
#define VAULTFS_CHANGES_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct db;
struct db_instance;

/* An instance (secret false) or a secret as one look saw it. */
struct changes_item {
	bool secret;
	int64_t id;
	int64_t parent;			/* a secret's instance */
	char *name;
	uid_t uid;
	gid_t gid;
	mode_t mode;
	uint64_t version;		/* a secret's; an instance's key generation */
	uint64_t size;
	int64_t mtime_ns, chtime_ns;
	uid_t by;			/* who wrote a secret's value */
};

/* Instances first, then secrets, each in id order. */
struct changes_snap {
	struct changes_item *v;
	size_t n, cap;
};

/* Which instances to look at: NULL takes every one. */
typedef bool (*changes_want_fn)(void *ctx, const struct db_instance *in);

/* Everything the wanted instances hold, in one read snapshot. With
 * only > 0, that instance alone (gone: an empty snapshot). 0 or -errno. */
int changes_scan(struct db *db, int64_t only, changes_want_fn want, void *ctx,
		 struct changes_snap *s) WUR;
void changes_free(struct changes_snap *s);

/* Calls fn(ctx, before, after) for each item that differs, in order:
 * before NULL for what appeared, after NULL for what went away. Stops
 * early when *stop (may be NULL) becomes true. Returns how many. */
unsigned changes_diff(const struct changes_snap *old, const struct changes_snap *now,
		      void (*fn)(void *ctx, const struct changes_item *before,
				 const struct changes_item *after),
		      void *ctx, const _Atomic bool *stop);

/* A difference told to people and scripts. */
struct change_event {
	const char *instance;		/* never NULL */
	const char *key;		/* NULL for the instance itself */
	const char *old_key;		/* a rename's old name, else NULL */
	/* created written renamed attr deleted rotated, or counted: a read of
	 * a read-limited secret was counted (same value, next version) */
	const char *what;
	uint64_t version;		/* a secret's, 0 for an instance's */
	bool has_by;
	uid_t by;
};

/* The event for a difference found by changes_diff between old and now
 * (whose instance items name the instances); false if there is nothing to
 * tell (a secret of an instance neither snapshot names). */
bool changes_event(const struct changes_snap *old, const struct changes_snap *now,
		   const struct changes_item *before, const struct changes_item *after,
		   struct change_event *e);

#endif
