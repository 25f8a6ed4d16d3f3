/* vaultfs status, vaultfs reload: what the holders say about their mounts,
 * and signals to them. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "json.h"
#include "listing.h"
#include "status.h"

#define UPGRADE_WAIT_MS 30000

struct select {
	const char *mountpoint;		/* realpath, or NULL: every mount */
	bool json, upgrade;
	int n;
	struct mount_status found[64];
};

static int status_opt(int opt, const char *arg, void *ctx)
{
	struct select *sel = ctx;

	(void)arg;
	if (opt == OPT_JSON)
		sel->json = true;
	else if (opt == 'u')
		sel->upgrade = true;
	else
		return -1;
	return 0;
}

static void collect(const struct mount_status *s, void *ctx)
{
	struct select *sel = ctx;

	if (sel->mountpoint && strcmp(sel->mountpoint, s->mountpoint))
		return;
	if (sel->n < (int)(sizeof(sel->found) / sizeof(sel->found[0])))
		sel->found[sel->n++] = *s;
}

static void print_one(const struct mount_status *s, bool json, bool last)
{
	time_t now = time(NULL);
	long long up = (long long)(now - s->started);
	long long serving = (long long)(now - s->serving_since);

	if (!json) {
		printf("%s\n  database:   %s\n  holder:     %d\n  worker:     %d\n"
		       "  uptime:     %llds (this worker: %llds)\n  restarts:   %u\n",
		       s->mountpoint, s->db, (int)s->holder, (int)s->worker, up, serving,
		       s->restarts);
		return;
	}
	printf("  {\"mountpoint\": ");
	json_string(stdout, s->mountpoint, strlen(s->mountpoint));
	printf(", \"database\": ");
	json_string(stdout, s->db, strlen(s->db));
	printf(", \"holder_pid\": %d, \"worker_pid\": %d, \"uptime_seconds\": %lld, "
	       "\"worker_uptime_seconds\": %lld, \"restarts\": %u}%s\n", (int)s->holder,
	       (int)s->worker, up, serving, s->restarts, last ? "" : ",");
}

static int select_mounts(struct cli *c, int argc, char **argv, int i, struct select *sel,
			 char *buf)
{
	if (argc - i > 1)
		cli_usage_error(c, "too many arguments");
	if (i < argc) {
		if (!realpath(argv[i], buf)) {
			cli_error("%s: %s", argv[i], strerror(errno));
			return -1;
		}
		sel->mountpoint = buf;
	}
	status_each(collect, sel);
	if (sel->mountpoint && !sel->n) {
		cli_error("%s: no vaultfs mount is served there", sel->mountpoint);
		return -1;
	}
	return 0;
}

int status_main(int argc, char **argv)
{
	static const struct option extra[] = {
		{ "json", no_argument, NULL, OPT_JSON }, { 0 },
	};
	struct cli c = {
		.cmd = "status", .usage = "[--json] [MOUNTPOINT]",
		.help = "Shows each vaultfs mount (or the one on MOUNTPOINT): its database, the\n"
			"pids of the holder that keeps the mount and of the worker that serves\n"
			"it, how long each has served, and how many times a worker was\n"
			"restarted (crash or upgrade).\n\n"
			"      --json           as a JSON array\n",
	};
	struct select sel = { 0 };
	char buf[PATH_MAX];
	int i = cli_parse(&c, argc, argv, "", extra, status_opt, &sel);

	if (select_mounts(&c, argc, argv, i, &sel, buf) < 0)
		return 1;
	if (sel.json)
		printf("[\n");
	for (int k = 0; k < sel.n; k++)
		print_one(&sel.found[k], sel.json, k == sel.n - 1);
	if (sel.json)
		printf("]\n");
	else if (!sel.n)
		printf("no vaultfs mount\n");
	return 0;
}

/* The holder rewrites its status once the new worker serves. */
static int wait_new_worker(const struct mount_status *old)
{
	struct select sel = { .mountpoint = old->mountpoint };
	struct timespec ts = { 0, 20 * 1000 * 1000 };

	for (int ms = 0; ms < UPGRADE_WAIT_MS; ms += 20) {
		sel.n = 0;
		status_each(collect, &sel);
		for (int k = 0; k < sel.n; k++)
			if (sel.found[k].holder == old->holder && sel.found[k].worker != old->worker) {
				printf("%s: worker %d took over from %d\n", old->mountpoint,
				       (int)sel.found[k].worker, (int)old->worker);
				return 0;
			}
		nanosleep(&ts, NULL);
	}
	cli_error("%s: no new worker serves after %d s; the old one (%d) still does, see "
		  "the log", old->mountpoint, UPGRADE_WAIT_MS / 1000, (int)old->worker);
	return -1;
}

int reload_main(int argc, char **argv)
{
	static const struct option extra[] = {
		{ "upgrade", no_argument, NULL, 'u' }, { 0 },
	};
	struct cli c = {
		.cmd = "reload", .usage = "[--upgrade] [MOUNTPOINT]",
		.help = "Tells the vaultfs mount on MOUNTPOINT (default: every one) to reload its\n"
			"master key and config (SIGHUP to its holder). With --upgrade, the holder\n"
			"starts the vaultfs binary now installed at the same path as a new worker,\n"
			"which takes over from the old one with no failed request (SIGUSR2 to the\n"
			"holder); returns once the new worker serves.\n\n"
			"  -u, --upgrade        start a new worker from the installed binary\n",
	};
	struct select sel = { 0 };
	char buf[PATH_MAX];
	int i = cli_parse(&c, argc, argv, "u", extra, status_opt, &sel), ret = 0;

	if (select_mounts(&c, argc, argv, i, &sel, buf) < 0)
		return 1;
	if (!sel.n) {
		cli_error("no vaultfs mount to reload");
		return 1;
	}
	for (int k = 0; k < sel.n; k++) {
		if (kill(sel.found[k].holder, sel.upgrade ? SIGUSR2 : SIGHUP) < 0) {
			cli_error("%s: cannot signal holder %d: %s", sel.found[k].mountpoint,
				  (int)sel.found[k].holder, strerror(errno));
			ret = 1;
		} else if (sel.upgrade && wait_new_worker(&sel.found[k]) < 0) {
			ret = 1;
		}
	}
	return ret;
}
