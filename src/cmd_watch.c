/* vaultfs watch: the store's changes as they happen, one line each, for
 * scripts (text) and programs (--json). Names, versions and uids only:
 * it never opens a value, so it records nothing in the audit log. */
#include <stdio.h>
#include <string.h>

#include "../db/db.h"
#include "../fs/follow.h"
#include "../fs/meta.h"
#include "../fs/vault.h"
#include "cli.h"
#include "commands.h"
#include "json.h"

struct watch_cli {
	const char *instance, *key;	/* filters, NULL: any */
	bool json;
};

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

static void tell(void *ctx, const struct change_event *e)
{
	struct watch_cli *w = ctx;
	char when[META_TIME_LEN];

	if (w->key && !(e->key && !strcmp(e->key, w->key)) &&
	    !(e->old_key && !strcmp(e->old_key, w->key)))
		return;
	meta_format_time(db_now_ns(), when);
	if (w->json)
		print_json(e, when);
	else
		print_text(e, when);
}

static void ready(void *ctx)
{
	const struct watch_cli *w = ctx;

	fprintf(stderr, "vaultfs watch: watching %s\n", w->instance ? w->instance :
		"every instance");
}

/* Until killed, or stdout fails (the reader went away). */
static bool go_on(void *ctx)
{
	(void)ctx;
	fflush(stdout);
	return !ferror(stdout);
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
	static const struct follow_fns fns = {
		.want = want_instance, .ready = ready, .tell = tell, .go_on = go_on,
	};
	struct watch_cli w = { 0 };
	char err[256];
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, extra, watch_opt, &w);
	if (argc - i > 2)
		cli_usage_error(&c, "too many arguments");
	w.instance = i < argc ? argv[i] : NULL;
	w.key = i + 1 < argc ? argv[i + 1] : NULL;
	if ((w.instance && !cli_name_ok("instance", w.instance)) ||
	    (w.key && !cli_name_ok("key", w.key)))
		return EXIT_USAGE;
	if (cli_start(&c, CLI_NO_AUDIT | (w.instance ? CLI_INSTANCE : 0), argv + i) < 0)
		goto out;
	setvbuf(stdout, NULL, _IOFBF, 0);
	r = follow_vault(c.vault, &fns, &w, err, sizeof(err));
	if (r < 0)
		cli_error("cannot read the store: %s", err);
	else
		ret = 0;
out:
	cli_close(&c);
	return ret;
}
