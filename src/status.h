/* What a holder tells `vaultfs status` and `vaultfs reload`: one small file
 * per mount, with no secret in it, in /run/vaultfs-status (root) or
 * $XDG_RUNTIME_DIR/vaultfs-status. */
#ifndef VAULTFS_STATUS_H
#define VAULTFS_STATUS_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

struct mount_status {
	char mountpoint[PATH_MAX];
	char db[PATH_MAX];
	pid_t holder, worker;
	time_t started, serving_since;
	unsigned restarts;
};

/* The holder: writes (replaces) its file; removes it. */
void status_write(const struct mount_status *s);
void status_remove(void);
/* The CLI: calls fn for each live holder's status; returns how many. */
int status_each(void (*fn)(const struct mount_status *s, void *ctx), void *ctx);
/* The live holders whose status names the database at db_path: the same
 * file (device and inode), whatever its name; at most max; how many. */
int status_serving(const char *db_path, struct mount_status *out, int max);
/* The mount point of a line of /proc/PID/mountinfo, unescaped ("\040" is a
 * space) into out; false if the line has none. */
bool status_mountinfo_point(const char *line, char out[static PATH_MAX + 1]);

#endif
