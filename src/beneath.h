/* Opening a file inside a directory someone else may control (import --dir):
 * symbolic links are followed only while they stay beneath that directory.
 *
 * Rules this module keeps:
 *   - every lookup is relative to the directory's descriptor, never a path
 *     string that could be swapped under us;
 *   - an absolute link, or ".." that climbs above the directory, is -EXDEV;
 *   - more than BENEATH_MAX_LINKS links on one lookup is -ELOOP;
 *   - openat2(RESOLVE_BENEATH) where the kernel has it, else a walk that
 *     opens one component at a time with O_NOFOLLOW and reads links itself. */
#ifndef VAULTFS_BENEATH_H
#define VAULTFS_BENEATH_H

#define BENEATH_MAX_LINKS 40

/* An O_PATH descriptor of path (relative, no leading '/') beneath dfd, or
 * -errno: -EXDEV when it leads outside, -ELOOP, -ENOENT... */
int beneath_open_path(int dfd, const char *path) WUR;
/* The same without openat2, as on kernels before 5.6; for the tests. */
int beneath_walk(int dfd, const char *path) WUR;
/* Opens what an O_PATH descriptor names for reading (O_NONBLOCK, O_NOCTTY),
 * the same inode whatever happened to its name since; or -errno. */
int beneath_reopen(int pathfd) WUR;

#endif
