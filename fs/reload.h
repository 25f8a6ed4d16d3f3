/* SIGHUP in the daemon: reload the master key from its source and drop the
 * cached data keys (after a key rotation or a restore). */
#ifndef VAULTFS_RELOAD_H
#define VAULTFS_RELOAD_H

struct vault;

/* Takes SIGHUP over (from libfuse, which would unmount) and starts the
 * thread that reloads; 0 or -errno. */
int reload_start(struct vault *v);
void reload_stop(void);

#endif
