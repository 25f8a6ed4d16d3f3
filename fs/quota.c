/*
 * Per-user shares of open handles and locked memory. Rules this file keeps:
 *  - a user's count and account exist from their first open to the end of
 *    the daemon (never freed, so a buffer that outlives its handle can't
 *    reach freed memory); there are only as many as uids that opened files;
 *  - root has no limit of its own; root and trusted readers lock into the
 *    reserve, everyone else only into the shared part of the budget;
 *  - the limits are read once, before serving.
 */
#include <errno.h>
#include <linux/capability.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../crypto/secmem.h"
#include "log.h"
#include "vault_conf.h"
#include "quota.h"

#define QUOTA_BUCKETS 64

struct quota_user {
	uid_t uid;
	unsigned handles;
	struct secmem_account acct;
	struct quota_user *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct quota_user *table[QUOTA_BUCKETS];
static unsigned max_handles;
static size_t user_memlock;
static const struct vault_conf *conf;

static bool ids_have(const struct id_list *l, uid_t uid)
{
	for (unsigned i = 0; i < l->n; i++)
		if (l->id[i] == uid)
			return true;
	return false;
}

/* Root, the owner of a configured instance, or one of its read_users. */
static bool trusted(uid_t uid)
{
	if (uid == 0 || ids_have(&conf->access.read_users, uid))
		return true;
	for (const struct instance_conf *i = conf->instances; i; i = i->next)
		if ((i->has_owner && i->owner == uid) || ids_have(&i->access.read_users, uid))
			return true;
	return false;
}

/* mlock ignores RLIMIT_MEMLOCK for a process with CAP_IPC_LOCK. */
static bool can_lock_freely(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &h, d) < 0)
		return false;
	return d[CAP_IPC_LOCK / 32].effective & (1u << (CAP_IPC_LOCK % 32));
}

/* How much we may lock in all, 0 if we can't tell. */
static size_t total_lockable(const struct vault_conf *c)
{
	struct rlimit rl;

	if (c->memlock_budget)
		return c->memlock_budget;
	if (can_lock_freely() || getrlimit(RLIMIT_MEMLOCK, &rl) < 0 ||
	    rl.rlim_cur == RLIM_INFINITY)
		return 0;
	return (size_t)rl.rlim_cur;
}

void quota_init(const struct vault_conf *c)
{
	size_t total = total_lockable(c);
	size_t reserve = c->has_memlock_reserve ? c->memlock_reserve : total / 4;

	conf = c;
	max_handles = c->user_handles;
	user_memlock = c->user_memlock;
	if (total && reserve >= total) {
		log_warn("memlock_reserve (%zu bytes) leaves nothing of the %zu lockable to "
			 "users other than root and trusted readers", reserve, total);
		reserve = total - 1;
	}
	secmem_set_shared_limit(total ? total - reserve : 0);
}

static struct quota_user *user_get(uid_t uid)
{
	struct quota_user **slot = &table[uid % QUOTA_BUCKETS], *u;

	for (u = *slot; u; u = u->next)
		if (u->uid == uid)
			return u;
	u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	u->uid = uid;
	u->acct.reserve = trusted(uid);
	u->acct.limit = uid == 0 ? 0 : user_memlock;
	u->next = *slot;
	*slot = u;
	return u;
}

int quota_open(uid_t uid, struct quota_user **out)
{
	struct quota_user *u;
	int r = 0;

	pthread_mutex_lock(&lock);
	u = user_get(uid);
	if (!u)
		r = -ENOMEM;
	else if (uid != 0 && max_handles && u->handles >= max_handles)
		r = -EMFILE;
	else
		u->handles++;
	pthread_mutex_unlock(&lock);
	*out = r == 0 ? u : NULL;
	return r;
}

struct secmem_account *quota_account(struct quota_user *u)
{
	return u ? &u->acct : NULL;
}

void quota_close(struct quota_user *u)
{
	if (!u)
		return;
	pthread_mutex_lock(&lock);
	u->handles--;
	pthread_mutex_unlock(&lock);
}
