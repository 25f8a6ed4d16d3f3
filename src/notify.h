/* Service-manager notifications (systemd Type=notify). Without libsystemd at
 * build time these only warn when a service manager is listening. */
#ifndef VAULTFS_NOTIFY_H
#define VAULTFS_NOTIFY_H

/* The mount is in place and serving: READY=1. */
void notify_ready(const char *mountpoint);
/* The daemon is unmounting and about to exit: STOPPING=1. */
void notify_stopping(void);

#endif
