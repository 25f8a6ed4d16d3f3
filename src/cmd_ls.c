/* vaultfs ls, check, export: what the vault holds and what the config
 * expects it to hold. Names and metadata only, never a value. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../db/db_versions.h"
#include "../fs/array.h"
#include "../fs/policy.h"
#include "../fs/template.h"
#include "../fs/vault.h"
#include "check_limits.h"
#include "cli.h"
#include "commands.h"
#include "config.h"
#include "json.h"
#include "listing.h"

struct ls_opts {
	bool long_fmt;
	bool all;
	bool deleted;
};

static int ls_opt(int opt, const char *arg, void *ctx)
{
	struct ls_opts *o = ctx;

	(void)arg;
	if (opt == 'l')
		o->long_fmt = true;
	else if (opt == 'a' || opt == OPT_ALL)
		o->all = true;
	else if (opt == OPT_DELETED)
		o->deleted = true;
	else
		return -1;
	return 0;
}

struct instances {
	struct db_instance *v;
	size_t n, cap;
};

static int instance_cb(void *ctx, const struct db_instance *in)
{
	struct instances *l = ctx;
	struct db_instance *v = array_room(l->v, l->n, &l->cap, sizeof(*v));

	if (!v)
		return -ENOMEM;
	l->v = v;
	l->v[l->n++] = *in;
	return 0;
}

static int cmp_instance(const void *a, const void *b)
{
	return strcmp(((const struct db_instance *)a)->name,
		      ((const struct db_instance *)b)->name);
}

/* Every instance, by name. */
static int instances_load(struct cli *c, struct instances *l)
{
	int r = vault_instance_each(c->vault, instance_cb, l);

	if (r == 0 && l->n)
		qsort(l->v, l->n, sizeof(*l->v), cmp_instance);
	return r;
}

static void print_instances(struct cli *c, const struct instances *l, bool long_fmt)
{
	char mode[11], owner[64], group[64];

	if (long_fmt)
		printf("%-10s %-10s %-10s %6s  %s\n", "MODE", "OWNER", "GROUP", "KEYS", "NAME");
	for (size_t i = 0; i < l->n; i++) {
		const struct db_instance *in = &l->v[i];

		if (!long_fmt) {
			puts(in->name);
			continue;
		}
		listing_mode_string(in->mode, true, mode);
		listing_user_name(in->uid, owner, sizeof(owner));
		listing_group_name(in->gid, group, sizeof(group));
		printf("%-10s %-10s %-10s %6lld  %s\n", mode, owner, group,
		       (long long)vault_secret_count(c->vault, in->id), in->name);
	}
}

/* "  [expires 2026-12-31T00:00:00Z, 1 of 3 reads]", "[EXPIRED: ...]". */
static void print_limit(const struct listing_entry *e)
{
	char what[96];

	if (e->limited) {
		expiry_describe(&e->limit, what, sizeof(what));
		printf("  [%s%s%s]", e->expired ? "EXPIRED" : "",
		       e->expired && what[0] ? ": " : "", what);
	}
	putchar('\n');
}

static void print_entry_long(const struct listing_entry *e)
{
	char mode[11], owner[64], group[64], updated[META_TIME_LEN], by[16];

	if (!e->exists) {
		printf("%-10s %-10s %-10s %8s %7s %-20s %-6s %-12s %s  (missing%s)\n", "-", "-",
		       "-", "-", "-", "-", "-", "-", e->name, e->expected ? ", expected" : "");
		return;
	}
	listing_mode_string(e->s.mode, false, mode);
	listing_user_name(e->s.uid, owner, sizeof(owner));
	listing_group_name(e->s.gid, group, sizeof(group));
	meta_format_time(e->s.mtime_ns, updated);
	snprintf(by, sizeof(by), "%u", (unsigned)e->s.updated_by);
	printf("%-10s %-10s %-10s %8llu %7llu %-20s %-6s %-12s %s%s%s", mode, owner, group,
	       (unsigned long long)e->s.size, (unsigned long long)e->s.version, updated, by,
	       e->type[0] ? e->type : "-", e->name, e->description[0] ? "  " : "",
	       e->description);
	print_limit(e);
}

static void print_listing(const struct listing *l, const struct ls_opts *o)
{
	if (o->long_fmt)
		printf("%-10s %-10s %-10s %8s %7s %-20s %-6s %-12s %s  %s\n", "MODE", "OWNER",
		       "GROUP", "SIZE", "VERSION", "UPDATED", "BY", "TYPE", "NAME",
		       "DESCRIPTION");
	for (size_t i = 0; i < l->n; i++) {
		const struct listing_entry *e = &l->e[i];

		if (!e->exists && !o->all)
			continue;
		if (o->long_fmt)
			print_entry_long(e);
		else if (o->all)
			printf("%-32s %-10s%s\n", e->name, listing_entry_state(e),
			       e->expected ? " expected" : "");
		else
			puts(e->name);
	}
}

struct trash_print {
	const struct vault_conf *conf;
	bool any;
};

static int trash_cb(void *ctx, const struct db_trash *t)
{
	struct trash_print *tp = ctx;
	char deleted[META_TIME_LEN], until[META_TIME_LEN];
	int64_t end = t->deleted_ns + tp->conf->undelete_window * 1000000000;

	if (!tp->any)
		printf("%-20s %-6s %7s %8s %-20s %s\n", "DELETED", "BY", "VERSION", "SIZE",
		       "RESTORABLE UNTIL", "NAME");
	tp->any = true;
	meta_format_time(t->deleted_ns, deleted);
	meta_format_time(end, until);
	printf("%-20s %-6u %7llu %8llu %-20s %s\n", deleted, (unsigned)t->deleted_by,
	       (unsigned long long)t->version, (unsigned long long)t->size,
	       end > db_now_ns() ? until : "(expired)", t->name);
	return 0;
}

/* The instance from the vault, or NULL if only the config names it. */
static int instance_or_expected(struct cli *c, const char *name, struct db_instance *in,
				const struct db_instance **out)
{
	const struct instance_conf *ic = policy_instance(&c->conf, name);
	int r;

	*out = NULL;
	if (!cli_name_ok("instance", name))
		return -1;
	r = vault_instance_find(c->vault, name, in);
	if (r == 0)
		*out = in;
	else if (r != -ENOENT || !ic || !ic->n_expect)
		return cli_find_instance(c, name, in);
	return 0;
}

static int ls_instances(struct cli *c, const struct ls_opts *o)
{
	struct instances insts = { 0 };
	int r = instances_load(c, &insts);

	if (r == 0)
		print_instances(c, &insts, o->long_fmt);
	free(insts.v);
	return r;
}

/* The keys of an instance (in), or those the config expects in one the
 * vault lacks (in NULL). */
static int ls_keys(struct cli *c, const char *name, const struct db_instance *in,
		   const struct ls_opts *o)
{
	struct listing l = { 0 };
	int r = listing_load(c, name, in, &l);

	if (r == 0)
		print_listing(&l, o);
	listing_free(&l);
	return r;
}

int ls_main(int argc, char **argv)
{
	static const struct option extra[] = {
		{ "long", no_argument, NULL, 'l' },
		{ "all", no_argument, NULL, OPT_ALL },
		{ "deleted", no_argument, NULL, OPT_DELETED },
		{ 0 },
	};
	struct cli c = {
		.cmd = "ls", .usage = "[OPTIONS] [-l] [--all | --deleted] [INSTANCE]",
		.min_args = 0, .max_args = 1, .want = "too many arguments",
		.help = "Lists the instances, or the keys of INSTANCE, one per line. Values are\n"
			"never shown.\n\n"
			"  -l, --long           mode, owner, group, size, version, last update and\n"
			"                       who made it, type and description\n"
			"  -a, --all            also the keys the config expects (expect =), each\n"
			"                       as configured, empty or missing\n"
			"      --deleted        deleted keys that undelete can bring back\n",
	};
	struct trash_print tp = { .conf = &c.conf };
	const struct db_instance *inp;
	struct ls_opts o = { 0 };
	struct db_instance in;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, "la", extra, ls_opt, &o);
	if ((o.all || o.deleted) && i == argc)
		cli_usage_error(&c, "--all and --deleted need an INSTANCE");
	if (o.all && o.deleted)
		cli_usage_error(&c, "--all and --deleted don't go together");
	if (cli_start(&c, CLI_NO_AUDIT | (o.deleted ? CLI_INSTANCE : 0), argv + i) < 0)
		goto out;
	if (i == argc)
		r = ls_instances(&c, &o);
	else if (o.deleted)
		r = vault_trash_each(c.vault, c.in.id, trash_cb, &tp);
	else if (instance_or_expected(&c, argv[i], &in, &inp) < 0)
		goto out;
	else
		r = ls_keys(&c, argv[i], inp, &o);
	if (r < 0) {
		cli_error("cannot list: %s", strerror(-r));
		goto out;
	}
	ret = 0;
out:
	cli_close(&c);
	return ret;
}

/* Missing or empty expected keys of one instance, each named on stderr. */
static int check_instance(struct cli *c, const char *name, size_t *expected)
{
	const struct instance_conf *ic = policy_instance(&c->conf, name);
	const struct db_instance *inp;
	struct db_instance in;
	struct listing l;
	int bad = 0, r;

	if (instance_or_expected(c, name, &in, &inp) < 0)
		return -1;
	r = listing_load(c, name, inp, &l);
	if (r < 0) {
		cli_error("%s: %s", name, strerror(-r));
		return -1;
	}
	for (size_t i = 0; i < l.n; i++) {
		if (!l.e[i].expected)
			continue;
		(*expected)++;
		if (listing_entry_ok(&l.e[i]))
			continue;
		bad++;
		cli_error("%s/%s: %s (expected by %s:%u)", name, l.e[i].name,
			  listing_entry_state(&l.e[i]), c->conf.path, ic ? ic->line : 0);
	}
	listing_free(&l);
	return bad;
}

static int warn_opt(int opt, const char *arg, void *ctx)
{
	if (opt == OPT_EXPIRY_WARN && config_parse_duration(arg, ctx) == 0)
		return 0;
	cli_error("bad --warn '%s' (want a duration like 12h or 7d)", arg);
	return -1;
}

int check_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "check", .usage = "[OPTIONS] [INSTANCE...]",
		.help = "Checks that every key the config expects (expect = in [instance NAME])\n"
			"exists and has a value, for ExecStartPre= and container health checks.\n"
			"Without INSTANCE, checks every instance of the config.\n\n"
			"Also names each key whose expiry (set --expires) or read limit\n"
			"(--max-reads) has passed, in INSTANCE or every instance, and warns\n"
			"of keys that expire within --warn (default 7d).\n\n"
			"      --warn DURATION  how far ahead to warn of an expiry (12h, 7d...)\n\n"
			"Exit status: 0 all there; 3 some missing or empty, or expired (each is\n"
			"named on standard error); 1 the vault could not be opened.\n",
	};
	static const struct option extra[] = {
		{ "warn", required_argument, NULL, OPT_EXPIRY_WARN }, { 0 },
	};
	int64_t warn = CHECK_WARN_DEFAULT;
	int expired, first;
	const struct instance_conf *ic;
	size_t expected = 0, instances = 0;
	int i, n, bad = 0, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, extra, warn_opt, &warn);
	first = i;
	if (cli_start(&c, CLI_NO_AUDIT, NULL) < 0)
		goto out;
	if (i < argc) {
		for (; i < argc; i++, instances++) {
			n = check_instance(&c, argv[i], &expected);
			if (n < 0)
				goto out;
			bad += n;
		}
	} else {
		for (ic = c.conf.instances; ic; ic = ic->next) {
			if (!ic->n_expect)
				continue;
			instances++;
			n = check_instance(&c, ic->name, &expected);
			if (n < 0)
				goto out;
			bad += n;
		}
	}
	expired = check_limits(&c, argv + first, argc - first, warn);
	if (expired < 0)
		goto out;
	if (bad)
		cli_error("%d of %zu expected keys missing or empty", bad, expected);
	if (expired)
		cli_error("%d key%s expired", expired, expired == 1 ? "" : "s");
	if (bad || expired) {
		ret = EXIT_NO;
		goto out;
	}
	printf("vaultfs: %zu expected key%s configured in %zu instance%s\n", expected,
	       expected == 1 ? "" : "s", instances, instances == 1 ? "" : "s");
	ret = 0;
out:
	cli_close(&c);
	return ret;
}

static void export_limit(const struct listing_entry *e)
{
	char when[META_TIME_LEN];

	if (!e->limited)
		return;
	printf(", \"expired\": %s", e->expired ? "true" : "false");
	if (e->limit.expires_ns) {
		meta_format_time(e->limit.expires_ns, when);
		printf(", \"expires\": \"%s\"", when);
	}
	if (e->limit.max_reads)
		printf(", \"max_reads\": %llu, \"reads\": %llu",
		       (unsigned long long)e->limit.max_reads, (unsigned long long)e->limit.reads);
}

static void export_entry(const struct listing_entry *e, bool last)
{
	char created[META_TIME_LEN], updated[META_TIME_LEN];

	printf("        {\"name\": ");
	json_string(stdout, e->name, strlen(e->name));
	printf(", \"configured\": %s, \"expected\": %s", listing_entry_ok(e) ? "true" : "false",
	       e->expected ? "true" : "false");
	if (e->exists) {
		meta_format_time(e->s.ctime_ns, created);
		meta_format_time(e->s.mtime_ns, updated);
		printf(", \"version\": %llu, \"size\": %llu, \"created\": \"%s\", "
		       "\"updated\": \"%s\", \"updated_by\": %u, \"owner\": %u, \"group\": %u, "
		       "\"mode\": \"%04o\", \"type\": ", (unsigned long long)e->s.version,
		       (unsigned long long)e->s.size, created, updated,
		       (unsigned)e->s.updated_by, (unsigned)e->s.uid, (unsigned)e->s.gid,
		       (unsigned)e->s.mode);
		json_string(stdout, e->type, strlen(e->type));
		printf(", \"description\": ");
		json_string(stdout, e->description, strlen(e->description));
		if (e->s.flags & TEMPLATE_FLAG)
			printf(", \"template\": true");
		export_limit(e);
	}
	printf("}%s\n", last ? "" : ",");
}

static int export_instance(struct cli *c, const char *name, const struct db_instance *in,
			   bool last)
{
	struct listing l;
	int r = listing_load(c, name, in, &l);

	if (r < 0)
		return r;
	printf("    {\"name\": ");
	json_string(stdout, name, strlen(name));
	if (in)
		printf(", \"exists\": true, \"owner\": %u, \"group\": %u, \"mode\": \"%04o\", "
		       "\"generation\": %llu", (unsigned)in->uid, (unsigned)in->gid,
		       (unsigned)in->mode, (unsigned long long)in->generation);
	else
		printf(", \"exists\": false");
	printf(",\n      \"keys\": [\n");
	for (size_t i = 0; i < l.n; i++)
		export_entry(&l.e[i], i + 1 == l.n);
	printf("      ]}%s\n", last ? "" : ",");
	listing_free(&l);
	return 0;
}

static int json_opt(int opt, const char *arg, void *ctx)
{
	(void)arg;
	(void)ctx;
	return opt == OPT_JSON ? 0 : -1;
}

static void export_head(const char *now)
{
	printf("{\"format\": \"vaultfs-export-1\", \"exported\": \"%s\",\n"
	       "  \"instances\": [\n", now);
}

/* Every instance of the vault, then those only the config names (for the
 * keys it expects there). */
static int export_all(struct cli *c, const char *now)
{
	struct instances insts = { 0 };
	const struct instance_conf *ic;
	struct db_instance in;
	size_t extra_n = 0, k = 0;
	int r = instances_load(c, &insts);

	for (ic = c->conf.instances; r == 0 && ic; ic = ic->next)
		if (ic->n_expect && vault_instance_find(c->vault, ic->name, &in) < 0)
			extra_n++;
	if (r == 0)
		export_head(now);
	for (size_t j = 0; r == 0 && j < insts.n; j++, k++)
		r = export_instance(c, insts.v[j].name, &insts.v[j], k + 1 == insts.n + extra_n);
	for (ic = c->conf.instances; r == 0 && ic; ic = ic->next)
		if (ic->n_expect && vault_instance_find(c->vault, ic->name, &in) < 0)
			r = export_instance(c, ic->name, NULL, ++k == insts.n + extra_n);
	free(insts.v);
	return r;
}

int export_main(int argc, char **argv)
{
	static const struct option extra[] = {
		{ "json", no_argument, NULL, OPT_JSON }, { 0 },
	};
	struct cli c = {
		.cmd = "export", .usage = "[OPTIONS] [--json] [INSTANCE]",
		.min_args = 0, .max_args = 1, .want = "too many arguments",
		.help = "Writes the instances (or INSTANCE) and their keys as JSON: names,\n"
			"versions, sizes, times, owners, modes, types and descriptions, and the\n"
			"keys the config expects, configured or not. Never a value: what to\n"
			"re-enter elsewhere, or to review.\n",
	};
	const struct db_instance *inp;
	struct db_instance in;
	char now[META_TIME_LEN];
	int i, r = 0, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, extra, json_opt, NULL);
	if (cli_start(&c, CLI_NO_AUDIT, NULL) < 0)
		goto out;
	meta_format_time(db_now_ns(), now);
	if (i == argc) {
		r = export_all(&c, now);
	} else if (instance_or_expected(&c, argv[i], &in, &inp) < 0) {
		goto out;
	} else {
		export_head(now);
		r = export_instance(&c, argv[i], inp, true);
	}
	if (r < 0) {
		cli_error("cannot export: %s", strerror(-r));
		goto out;
	}
	printf("  ]}\n");
	if (fflush(stdout) != 0) {
		cli_error("standard output: %s", strerror(errno));
		goto out;
	}
	ret = 0;
out:
	cli_close(&c);
	return ret;
}
