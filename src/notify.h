/* Service-manager notifications (systemd Type=notify), sent when
 * $NOTIFY_SOCKET names a socket. */
#ifndef VAULTFS_NOTIFY_H
#define VAULTFS_NOTIFY_H

/* The mount is in place and serving: READY=1. */
void notify_ready(const char *mountpoint);
/* The daemon is unmounting and about to exit: STOPPING=1. */
void notify_stopping(void);

#endif
