/* Helper threads of the daemon. */
#ifndef VAULTFS_THREAD_H
#define VAULTFS_THREAD_H

#include <pthread.h>

/* pthread_create, with the signals that stop or reload the daemon blocked
 * in the new thread: libfuse's handlers end the session loop only if the
 * signal interrupts one of its own threads. The name (at most 15 bytes) is
 * what ps and /proc/PID/task/TID/comm show. Returns 0 or -errno. */
int thread_start(pthread_t *t, const char *name, void *(*fn)(void *), void *arg) WUR;

#endif
