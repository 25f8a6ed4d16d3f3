/* Service-manager notifications (systemd Type=notify). Without libsystemd at
 * build time these only warn when a service manager is listening. */
#ifndef VAULTFS_NOTIFY_H
#define VAULTFS_NOTIFY_H

/* The mount is in place and serving: READY=1. */
void notify_ready(const char *mountpoint);
/* The daemon is unmounting and about to exit: STOPPING=1. */
void notify_stopping(void);
/* The service manager's file descriptor store (FileDescriptorStoreMax=):
 * keeps fd under name across a restart of the service; 0 or -1 (no store,
 * or built without libsystemd). */
int notify_store_fd(int fd, const char *name);
/* A descriptor stored before this start, by name, or -1. */
int notify_stored_fd(const char *name);
/* Drops the descriptors stored under name from the store. */
void notify_remove_fd(const char *name);

#endif
