/* Each user's share of the daemon: open handles and locked memory, so that
 * one user opening files without end is refused (EMFILE, ENOMEM) and the
 * others keep reading and writing. Root is never limited, and root and
 * trusted readers (instance owners and read_users in the config) may use a
 * reserve of locked memory that nobody else can. */
#ifndef VAULTFS_QUOTA_H
#define VAULTFS_QUOTA_H

#include <sys/types.h>

struct vault_conf;
struct quota_user;

/* Sets the limits from the config; the shared limit of locked memory is
 * the budget (memlock_budget, else RLIMIT_MEMLOCK when it binds us) less
 * the reserve. Call once, before serving. */
void quota_init(const struct vault_conf *c);
/* One more open handle for uid: -EMFILE at user_handles, -ENOMEM. */
int quota_open(uid_t uid, struct quota_user **out) WUR;
/* Its locked-memory account, for secmem_use(). */
struct secmem_account *quota_account(struct quota_user *u);
/* The handle is gone (after its buffers were freed); NULL is fine. */
void quota_close(struct quota_user *u);

#endif
