/* Repeated denials are answered late, so a user looping over open() on a
 * secret it may not read neither keeps the daemon's threads busy nor gets
 * ahead of everyone else's requests. */
#ifndef VAULTFS_PENALTY_H
#define VAULTFS_PENALTY_H

#define FUSE_USE_VERSION 314
#include <stdbool.h>
#include <sys/types.h>

#include "fuse_lib.h"

int penalty_start(void);
/* Answers every request still waiting, and stops. */
void penalty_stop(void);
/* Answers req with -err, at once or, when uid has been denied often in the
 * last second, a little later from a thread of its own: the calling thread
 * returns at once either way. */
void penalty_reply(fuse_req_t req, uid_t uid, int err);

#endif
