/* Following the store's change feed: changes others make (another mount,
 * the command line, later another host) drop what the kernel cached about
 * them, within tens of milliseconds. */
#ifndef VAULTFS_WATCH_H
#define VAULTFS_WATCH_H

#include <stdint.h>

struct db;

/* Starts following db for a mount of the whole vault (only_instance 0) or
 * of one instance; inval_start() must have been called. 0 or -errno. */
int watch_start(struct db *db, int64_t only_instance) WUR;
void watch_stop(void);

#endif
