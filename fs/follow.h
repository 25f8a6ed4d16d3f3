/* Following a vault's changes from a command (`vaultfs watch`): the
 * store's change feed and changes.c's differ, told as events. */
#ifndef VAULTFS_FOLLOW_H
#define VAULTFS_FOLLOW_H

#include <stdbool.h>

#include "changes.h"

struct vault;

struct follow_fns {
	changes_want_fn want;		/* which instances, NULL: all */
	/* Once the first look is taken: from then on nothing is missed. */
	void (*ready)(void *ctx);
	/* Each change, in order; a deleted key's e->by is who deleted it
	 * when its trash row says. */
	void (*tell)(void *ctx, const struct change_event *e);
	/* After each batch: false stops. */
	bool (*go_on)(void *ctx);
};

/* Polls every 20 ms until go_on says stop. 0, or -errno if the store
 * can't be read at the start (db_errmsg-like words in err). */
int follow_vault(struct vault *v, const struct follow_fns *f, void *ctx, char *err,
		 size_t errlen) WUR;

#endif
