/* vaultfs watch: the store's changes as they happen, one line each, for
 * scripts (text) and programs (--json). Names, versions and uids only:
 * it never opens a value, so it records nothing in the audit log. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../db/db.h"
#include "../db/db_versions.h"
#include "../fs/changes.h"
#include "../fs/meta.h"
#include "../fs/vault.h"
#include "cli.h"
#include "commands.h"
#include "json.h"

/* The mount's own follower polls as often (fs/watch.c). */
#define WATCH_CLI_PERIOD_MS 20

struct watch_cli {
	const char *instance, *key;	/* filters, NULL: any */
	bool json;
	struct db *db;
	const struct changes_snap *old, *now;
};

/* Who deleted it, from its trash row (none without an undelete window). */
static void deleted_by(struct watch_cli *w, const struct changes_item *it,
		       struct change_event *e)
{
	struct db_trash t;

	if (db_trash_find(w->db, it->parent, it->name, 0, &t) == 0 && t.secret_id == it->id) {
		e->has_by = true;
		e->by = t.deleted_by;
	}
}

static bool want_instance(void *ctx, const struct db_instance *in)
{
	const struct watch_cli *w = ctx;

	return !w->instance || !strcmp(w->instance, in->name);
}

static void print_text(const struct change_event *e, const char *when)
{
	printf("%s %s %s %s", when, e->instance, e->key ? e->key : "-", e->what);
	if (e->key)
		printf(" version=%llu", (unsigned long long)e->version);
	if (e->has_by)
		printf(" by=%u", (unsigned)e->by);
	if (e->old_key)
		printf(" from=%s", e->old_key);
	putchar('\n');
}

static void print_json(const struct change_event *e, const char *when)
{
	printf("{");
	json_field(stdout, "time", when);
	printf(",");
	json_field(stdout, "instance", e->instance);
	printf(",\"key\":");
	if (e->key)
		json_string(stdout, e->key, strlen(e->key));
	else
		printf("null");
	printf(",");
	json_field(stdout, "event", e->what);
	printf(",\"version\":%llu,\"by\":", (unsigned long long)e->version);
	if (e->has_by)
		printf("%u", (unsigned)e->by);
	else
		printf("null");
	if (e->old_key) {
		printf(",");
		json_field(stdout, "from", e->old_key);
	}
	printf("}\n");
}

static void tell(void *ctx, const struct changes_item *before, const struct changes_item *after)
{
	struct watch_cli *w = ctx;
	char when[META_TIME_LEN];
	struct change_event e;

	if (!changes_event(w->old, w->now, before, after, &e))
		return;
	if (before && !after && before->secret)
		deleted_by(w, before, &e);
	if (w->key && !(e.key && !strcmp(e.key, w->key)) &&
	    !(e.old_key && !strcmp(e.old_key, w->key)))
		return;
	meta_format_time(db_now_ns(), when);
	if (w->json)
		print_json(&e, when);
	else
		print_text(&e, when);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)ms * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Until killed, or stdout fails (the reader went away). */
static int follow(struct db *db, struct watch_cli *w)
{
	struct changes_snap seen, now;
	uint64_t seq, last;
	int r;

	r = db_change_seq(db, &last);
	if (r == 0)
		r = changes_scan(db, 0, want_instance, w, &seen);
	if (r < 0) {
		cli_error("cannot read the store: %s", db_errmsg(db));
		return r;
	}
	fprintf(stderr, "vaultfs watch: watching %s\n", w->instance ? w->instance : "every instance");
	while (!ferror(stdout)) {
		sleep_ms(WATCH_CLI_PERIOD_MS);
		if ((r = db_change_seq(db, &seq)) < 0 || seq == last)
			continue;
		if ((r = changes_scan(db, 0, want_instance, w, &now)) < 0)
			continue;
		last = seq;
		w->old = &seen;
		w->now = &now;
		(void)changes_diff(&seen, &now, tell, w, NULL);
		fflush(stdout);
		changes_free(&seen);
		seen = now;
	}
	changes_free(&seen);
	return 0;
}

static int watch_opt(int opt, const char *arg, void *ctx)
{
	struct watch_cli *w = ctx;

	(void)arg;
	if (opt != OPT_JSON)
		return -1;
	w->json = true;
	return 0;
}

int watch_main(int argc, char **argv)
{
	static const struct option extra[] = {
		{ "json", no_argument, NULL, OPT_JSON }, { 0 },
	};
	struct cli c = {
		.cmd = "watch", .usage = "[OPTIONS] [--json] [INSTANCE [KEY]]",
		.help = "Prints each change to the vault (or INSTANCE, or its KEY) as it is\n"
			"committed, by any path: the mount, the command line, import, rollback,\n"
			"undelete, restore, rotation. One line each:\n"
			"  TIME INSTANCE KEY EVENT version=V by=UID [from=OLDNAME]\n"
			"EVENT is created, written, renamed, attr, deleted, counted (a read of a\n"
			"--max-reads key), or rotated for an instance, whose KEY is -.\n"
			"--json writes one JSON object per line: time, instance, key, event,\n"
			"version, by (null when unknown), from.\n"
			"Never a value. Runs until interrupted.\n",
	};
	struct watch_cli w = { 0 };
	struct db_instance in;
	int i, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, extra, watch_opt, &w);
	if (argc - i > 2)
		cli_usage_error(&c, "too many arguments");
	w.instance = i < argc ? argv[i] : NULL;
	w.key = i + 1 < argc ? argv[i + 1] : NULL;
	if ((w.instance && !cli_name_ok("instance", w.instance)) ||
	    (w.key && !cli_name_ok("key", w.key)))
		return EXIT_USAGE;
	if (cli_load_config(&c) < 0 || cli_open_vault(&c, CLI_NO_AUDIT) < 0)
		goto out;
	if (w.instance && cli_find_instance(&c, w.instance, &in) < 0)
		goto out;
	setvbuf(stdout, NULL, _IOFBF, 0);
	w.db = vault_db(c.vault);
	if (follow(vault_db(c.vault), &w) == 0)
		ret = 0;
out:
	cli_close(&c);
	return ret;
}
