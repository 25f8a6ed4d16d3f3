/* The INI configuration file (inih). */
#ifndef VAULTFS_CONFIG_H
#define VAULTFS_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "../fs/vault_conf.h"

#define CONFIG_DEFAULT_PATH "/etc/vaultfs/vaultfs.ini"

/* Reads path into c (which holds defaults or earlier settings). On error
 * returns -errno (-EINVAL for a bad setting, -EPERM for a file others may
 * write, -ELOOP for a symlink) and writes "FILE:LINE: reason" or
 * "FILE: reason" into err; c may be partly filled: policy_free() it. */
int config_load(struct vault_conf *c, const char *path, char *err, size_t errlen) WUR;

/* "0640" -> 0640; only permission bits. */
int config_parse_mode(const char *s, mode_t *out);
/* "1048576", "512K", "1M" -> bytes. */
int config_parse_size(const char *s, size_t *out);
/* "90", "90s", "15m", "12h", "7d" -> seconds. */
int config_parse_duration(const char *s, int64_t *out);

#endif
