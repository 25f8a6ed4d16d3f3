/*
 * on_change hooks. Rules this file keeps:
 *  - one source, the store: a connection of its own follows the change feed
 *    (db_change_seq), so the mount's own commits count like anyone's (CLI,
 *    import, rollback, undelete, restore, rotation, another host), and
 *    what changed is found by changes.c, as for the kernel's caches;
 *  - never a value: a hook gets names, a version and the event in its
 *    environment (VAULTFS_*), nothing else of the vault;
 *  - a hook never holds up or undoes a write: it runs after the commit, from
 *    this thread, in a process of its own as its configured user (nobody
 *    unless on_change_user says otherwise; a daemon that gave up root, its
 *    own user), in its own process group, killed whole at its timeout;
 *  - debounced: a hook runs HOOK_QUIET_MS after the last change of a burst
 *    (at most HOOK_MAX_WAIT_MS after the first); at most one run of a hook
 *    at a time, and changes during a run make exactly one more run after;
 *  - every run's end (exit status, signal, timeout) goes to the audit log.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../db/db.h"
#include "audit.h"
#include "changes.h"
#include "hooks.h"
#include "log.h"
#include "template.h"
#include "thread.h"
#include "vault_int.h"

#define HOOK_PERIOD_MS 20
#define HOOK_QUIET_MS 200
#define HOOK_MAX_WAIT_MS 2000
#define HOOK_KEYS_MAX 1024		/* VAULTFS_KEYS, then "..." */
#define HOOK_ENV_N 12

struct hook {
	const struct instance_conf *ic;
	const struct hook_conf *hc;
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	int ngroups;
	bool switch_ids;		/* the daemon is root: become uid, gid */
	char home[256], user[64];
	/* what the next run tells */
	bool pending;
	int64_t first_ns, last_ns;
	char key[256], event[16];
	uint64_t version;
	char keys[HOOK_KEYS_MAX + 4];
	/* the run in progress */
	pid_t pid;
	int64_t started_ns;
	bool killed;
	char run_key[256];
};

static struct {
	struct vault *v;
	struct db *db;			/* our own connection */
	struct hook *h;
	size_t n;
	pthread_t thread;
	bool running;
	_Atomic bool stop;
	uint64_t seq;
	struct changes_snap seen;
} hk;

static bool want_instance(void *ctx, const struct db_instance *in)
{
	(void)ctx;
	for (size_t i = 0; i < hk.n; i++)
		if (!strcmp(hk.h[i].ic->name, in->name))
			return true;
	return false;
}

static bool hook_matches(const struct hook *h, const struct change_event *e)
{
	if (strcmp(h->ic->name, e->instance))
		return false;
	if (!h->hc->key[0])
		return true;
	return (e->key && !strcmp(e->key, h->hc->key)) ||
	       (e->old_key && !strcmp(e->old_key, h->hc->key));
}

static void keys_add(struct hook *h, const char *key)
{
	size_t len = strlen(h->keys), klen = strlen(key);
	const char *p = h->keys;

	while ((p = strstr(p, key))) {
		if ((p == h->keys || p[-1] == ' ') && (p[klen] == ' ' || !p[klen]))
			return;		/* already listed */
		p += klen;
	}
	if (len + klen + 1 > HOOK_KEYS_MAX) {
		if (len < 3 || strcmp(h->keys + len - 3, "..."))
			snprintf(h->keys + len, sizeof(h->keys) - len, "%s...", len ? " " : "");
		return;
	}
	snprintf(h->keys + len, sizeof(h->keys) - len, "%s%s", len ? " " : "", key);
}

static void hook_note(struct hook *h, const struct change_event *e, int64_t now)
{
	if (!h->pending) {
		h->pending = true;
		h->first_ns = now;
		h->keys[0] = '\0';
	}
	h->last_ns = now;
	snprintf(h->key, sizeof(h->key), "%s", e->key ? e->key : "");
	snprintf(h->event, sizeof(h->event), "%s", e->what);
	h->version = e->version;
	if (e->key)
		keys_add(h, e->key);
}

static void note_event(const struct change_event *e, int64_t now)
{
	for (size_t i = 0; i < hk.n; i++)
		if (hook_matches(&hk.h[i], e))
			hook_note(&hk.h[i], e, now);
}

/* A template whose inputs changed: its rendering changed, so it counts as
 * a write of the template (fs/template.c reads the templates through the
 * vault's connection and hands out rows, never a value). */
struct dep_ctx {
	const struct change_event *e;
	int64_t now;
};

static int note_template(void *ctx, const struct db_secret *t)
{
	const struct dep_ctx *c = ctx;
	struct change_event te = {
		.instance = c->e->instance, .key = t->name, .what = "written",
		.version = t->version,
	};

	note_event(&te, c->now);
	return 0;
}

static void note_dependents(int64_t instance_id, const struct change_event *e, int64_t now)
{
	struct dep_ctx c = { e, now };

	if (template_dependents(hk.v, instance_id, e->key, note_template, &c) < 0)
		log_debug("hooks: cannot tell which templates name %s/%s: %s", e->instance, e->key,
			  db_errmsg(vault_db(hk.v)));
}

struct diff_ctx {
	const struct changes_snap *old, *now;
	int64_t now_ns;
};

static void on_diff(void *ctx, const struct changes_item *before, const struct changes_item *after)
{
	struct diff_ctx *d = ctx;
	struct change_event e;

	if (!changes_event(d->old, d->now, before, after, &e) || !strcmp(e.what, "counted"))
		return;		/* a counted read changes no value */
	note_event(&e, d->now_ns);
	if (e.key)
		note_dependents((after ? after : before)->parent, &e, d->now_ns);
}

/* -- running ------------------------------------------------------------ */

static void env_put(char **envp, size_t *n, char *buf, size_t size, const char *name,
		    const char *value)
{
	snprintf(buf, size, "%s=%s", name, value);
	envp[(*n)++] = buf;
}

/* In the child of a threaded process: system calls only until exec. */
static void __attribute__((noreturn)) child(const struct hook *h, char *const argv[],
					    char *const envp[])
{
	sigset_t none;
	int fd;

	sigemptyset(&none);
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
	sigprocmask(SIG_SETMASK, &none, NULL);
	setsid();
	if (chdir("/") < 0)
		_exit(125);
	fd = open("/dev/null", O_RDWR);
	if (fd < 0 || dup2(fd, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
		_exit(125);
	if (syscall(SYS_close_range, 3U, ~0U, 0U) < 0)
		for (fd = 3; fd < 4096; fd++)
			close(fd);
	/* Until exec this is a copy of the daemon's memory: not for the
	 * hook's user to read (a change of uid keeps it so; say it anyway). */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (h->switch_ids && (setgroups((size_t)h->ngroups, h->groups) < 0 ||
			      setgid(h->gid) < 0 || setuid(h->uid) < 0))
		_exit(126);
	if (h->uid != 0 && (setuid(0) == 0 || geteuid() == 0))
		_exit(126);
	execve("/bin/sh", argv, envp);
	_exit(127);
}

static void hook_run(struct hook *h, int64_t now)
{
	char e_inst[300], e_key[300], e_keys[sizeof(h->keys) + 16], e_ver[48], e_ev[48];
	char e_home[300], e_user[300], e_path[] = "PATH=/usr/local/sbin:/usr/local/bin:"
		"/usr/sbin:/usr/bin:/sbin:/bin";
	char *argv[] = { "sh", "-c", h->hc->command, NULL };
	char *envp[HOOK_ENV_N], ver[24];
	size_t n = 0;
	pid_t pid;

	snprintf(ver, sizeof(ver), "%llu", (unsigned long long)h->version);
	envp[n++] = e_path;
	env_put(envp, &n, e_home, sizeof(e_home), "HOME", h->home);
	env_put(envp, &n, e_user, sizeof(e_user), "USER", h->user);
	env_put(envp, &n, e_inst, sizeof(e_inst), "VAULTFS_INSTANCE", h->ic->name);
	env_put(envp, &n, e_key, sizeof(e_key), "VAULTFS_KEY", h->key);
	env_put(envp, &n, e_keys, sizeof(e_keys), "VAULTFS_KEYS", h->keys);
	env_put(envp, &n, e_ver, sizeof(e_ver), "VAULTFS_VERSION", ver);
	env_put(envp, &n, e_ev, sizeof(e_ev), "VAULTFS_EVENT", h->event);
	envp[n] = NULL;
	h->pending = false;
	snprintf(h->run_key, sizeof(h->run_key), "%s", h->hc->key);
	pid = fork();
	if (pid == 0)
		child(h, argv, envp);
	if (pid < 0) {
		int err = errno;

		log_warn("on_change of %s%s%s: cannot start: %s", h->ic->name,
			 h->hc->key[0] ? "/" : "", h->hc->key, strerror(err));
		audit_record(vault_audit(hk.v), NULL, AUDIT_HOOK, h->ic->name, h->run_key,
			     -err, "not started");
		return;
	}
	h->pid = pid;
	h->started_ns = now;
	h->killed = false;
}

static void hook_ended(struct hook *h, int status)
{
	struct audit_who who = { .uid = h->uid, .gid = h->gid, .pid = h->pid };
	char detail[64];
	int result = 0;

	snprintf(who.comm, sizeof(who.comm), "on_change");
	if (h->killed) {
		snprintf(detail, sizeof(detail), "timed out after %.1fs, killed",
			 h->ic->hook_timeout > 0 ? h->ic->hook_timeout :
			 POLICY_HOOK_TIMEOUT_DEFAULT);
		result = -ETIMEDOUT;
	} else if (WIFEXITED(status)) {
		snprintf(detail, sizeof(detail), "exit %d", WEXITSTATUS(status));
		result = WEXITSTATUS(status) ? -ECANCELED : 0;
	} else {
		snprintf(detail, sizeof(detail), "killed by signal %d", WTERMSIG(status));
		result = -EINTR;
	}
	if (result)
		log_warn("on_change of %s%s%s: %s", h->ic->name, h->run_key[0] ? "/" : "",
			 h->run_key, detail);
	audit_record(vault_audit(hk.v), &who, AUDIT_HOOK, h->ic->name, h->run_key, result,
		     detail);
	h->pid = 0;
}

static void hook_tick(struct hook *h, int64_t now)
{
	double timeout = h->ic->hook_timeout > 0 ? h->ic->hook_timeout :
			 POLICY_HOOK_TIMEOUT_DEFAULT;
	int status;

	if (h->pid > 0) {
		pid_t r = waitpid(h->pid, &status, WNOHANG);

		if (r == h->pid || (r < 0 && errno == ECHILD)) {
			/* ECHILD: reaped by someone else; its status is lost. */
			hook_ended(h, r == h->pid ? status : W_EXITCODE(255, 0));
		} else if (!h->killed && now - h->started_ns > (int64_t)(timeout * 1e9)) {
			/* The group, or the child before its setsid(). */
			if (kill(-h->pid, SIGKILL) < 0)
				kill(h->pid, SIGKILL);
			h->killed = true;
		}
	}
	if (h->pid == 0 && h->pending && (now - h->last_ns >= HOOK_QUIET_MS * 1000000LL ||
					  now - h->first_ns >= HOOK_MAX_WAIT_MS * 1000000LL))
		hook_run(h, now);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)ms * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void look(void)
{
	struct changes_snap now;
	struct diff_ctx d;
	uint64_t seq;

	if (db_change_seq(hk.db, &seq) < 0 || seq == hk.seq)
		return;
	if (changes_scan(hk.db, 0, want_instance, NULL, &now) < 0)
		return;		/* tried again at the next tick */
	hk.seq = seq;
	d = (struct diff_ctx){ .old = &hk.seen, .now = &now, .now_ns = mono_ns() };
	(void)changes_diff(&hk.seen, &now, on_diff, &d, &hk.stop);
	changes_free(&hk.seen);
	hk.seen = now;
}

static void *hooks_thread(void *arg)
{
	(void)arg;
	while (!hk.stop) {
		sleep_ms(HOOK_PERIOD_MS);
		look();
		for (size_t i = 0; i < hk.n && !hk.stop; i++)
			hook_tick(&hk.h[i], mono_ns());
	}
	return NULL;
}

/* -- set-up ------------------------------------------------------------- */

/* Who a hook runs as: on_change_user, else nobody, or the daemon's own
 * user when it gave up root: then it can't honour another user. */
static int hook_identity(struct hook *h)
{
	const struct instance_conf *ic = h->ic;
	struct passwd *pw = ic->has_hook_user ? getpwuid(ic->hook_uid) :
			    geteuid() == 0 ? getpwnam("nobody") : getpwuid(geteuid());
	int n = 64;

	if (!pw) {
		log_err("on_change in [%s]: no user %s", ic->name,
			ic->has_hook_user ? "for on_change_user" : "nobody (set on_change_user)");
		return -ENOENT;
	}
	if (geteuid() != 0 && pw->pw_uid != geteuid()) {
		log_err("on_change in [%s]: the daemon runs as uid %u and can't run hooks as "
			"%s: set on_change_user to the daemon's user", ic->name,
			(unsigned)geteuid(), pw->pw_name);
		return -EPERM;
	}
	h->uid = pw->pw_uid;
	h->gid = pw->pw_gid;
	h->switch_ids = geteuid() == 0;
	snprintf(h->home, sizeof(h->home), "%s", pw->pw_dir ? pw->pw_dir : "/");
	snprintf(h->user, sizeof(h->user), "%s", pw->pw_name);
	h->groups = calloc((size_t)n, sizeof(gid_t));
	if (!h->groups)
		return -ENOMEM;
	if (getgrouplist(pw->pw_name, pw->pw_gid, h->groups, &n) < 0)
		n = 1;		/* more than 64: its own group only */
	h->ngroups = n;
	return 0;
}

static void hooks_free(void)
{
	for (size_t i = 0; i < hk.n; i++)
		free(hk.h[i].groups);
	free(hk.h);
	hk.h = NULL;
	hk.n = 0;
	changes_free(&hk.seen);
	if (hk.db)
		db_close(hk.db);
	hk.db = NULL;
}

static int hooks_load(const struct vault_conf *c)
{
	size_t n = 0;
	int r = 0;

	for (const struct instance_conf *ic = c->instances; ic; ic = ic->next)
		for (const struct hook_conf *hc = ic->hooks; hc; hc = hc->next)
			n++;
	if (!n)
		return 0;
	hk.h = calloc(n, sizeof(*hk.h));
	if (!hk.h)
		return -ENOMEM;
	for (const struct instance_conf *ic = c->instances; ic; ic = ic->next)
		for (const struct hook_conf *hc = ic->hooks; r == 0 && hc; hc = hc->next) {
			hk.h[hk.n] = (struct hook){ .ic = ic, .hc = hc };
			r = hook_identity(&hk.h[hk.n++]);
		}
	return r;
}

int hooks_start(struct vault *v, int64_t only_instance)
{
	int r;

	hk.v = v;
	hk.stop = false;
	if (only_instance)
		return 0;
	r = hooks_load(v->conf);
	if (r < 0 || hk.n == 0)
		goto out;
	r = db_open(&hk.db, db_path(v->db), DB_READONLY);
	if (r < 0) {
		log_err("on_change: cannot open the store: %s", db_errmsg(NULL));
		goto out;
	}
	db_set_auth(hk.db, &v->auth);
	r = db_change_seq(hk.db, &hk.seq);
	if (r == 0)
		r = changes_scan(hk.db, 0, want_instance, NULL, &hk.seen);
	if (r == 0)
		r = thread_start(&hk.thread, "vaultfs-hooks", hooks_thread, NULL);
	if (r == 0)
		hk.running = true;
out:
	if (r < 0 || !hk.running)
		hooks_free();
	return r;
}

void hooks_stop(void)
{
	if (!hk.running)
		return;
	hk.stop = true;
	pthread_join(hk.thread, NULL);
	hk.running = false;
	hooks_free();
}
