/* vaultfs check's part for expiring secrets and read limits. */
#ifndef VAULTFS_CHECK_LIMITS_H
#define VAULTFS_CHECK_LIMITS_H

#include <stdint.h>

struct cli;

#define CHECK_WARN_DEFAULT (7 * 86400)

/* For the instances named (n 0: every instance of the vault): names each
 * expired key (or spent read limit) on stderr and returns how many, and
 * warns of those that expire within warn_s seconds. -1 on error. */
int check_limits(struct cli *c, char *const *names, int n, int64_t warn_s) WUR;

#endif
