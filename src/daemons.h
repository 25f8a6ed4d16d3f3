/* Finding the mount daemons that serve a vault, to tell them something. */
#ifndef VAULTFS_DAEMONS_H
#define VAULTFS_DAEMONS_H

#include <sys/types.h>

/* Sends sig to every `vaultfs mount` process that has the database at
 * db_path open (found in /proc; needs root, or the daemons' uid). Returns
 * how many were signalled. */
int daemons_signal(const char *db_path, int sig);

#endif
