/* vaultfs history, rollback, undelete, purge, describe: a secret's past and
 * its metadata. History lists versions, never values; rollback passes a
 * value through locked memory only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../db/db_versions.h"
#include "../fs/expiry.h"
#include "../fs/meta.h"
#include "../fs/vault.h"
#include "cli.h"
#include "commands.h"

static void print_version(uint64_t version, int64_t mtime_ns, uint64_t size, uid_t by,
			  const char *note)
{
	char updated[META_TIME_LEN];

	meta_format_time(mtime_ns, updated);
	printf("%7llu  %-20s %8llu  %u%s\n", (unsigned long long)version, updated,
	       (unsigned long long)size, (unsigned)by, note);
}

static int history_cb(void *ctx, const struct db_version *v)
{
	(void)ctx;
	print_version(v->version, v->mtime_ns, v->size, v->updated_by, "");
	return 0;
}

/* "  (current)", with its expiry or read limit if it has one. */
static void current_note(struct vault *v, const struct db_secret *s, char *buf, size_t size)
{
	char what[96];
	struct expiry e;
	int r = expiry_get(v, s, &e);

	if (r == -ENOENT) {
		snprintf(buf, size, "  (current)");
		return;
	}
	if (r == 0)
		expiry_describe(&e, what, sizeof(what));
	snprintf(buf, size, "  (current, %s%s%s)", r < 0 || expiry_spent(&e, db_now_ns()) ?
		 "EXPIRED" : "", r == 0 && expiry_spent(&e, db_now_ns()) ? ": " : "",
		 r == 0 ? what : "");
}

int history_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "history", .usage = "[OPTIONS] INSTANCE KEY",
		.min_args = 2, .max_args = 2, .want = "want INSTANCE and KEY",
		.help = "Lists the kept versions of INSTANCE/KEY, newest first: when each was\n"
			"written, its size and the uid that wrote it. Never the values; read\n"
			"one with: vaultfs get --version V INSTANCE KEY. How many are kept is\n"
			"`versions` in the config (default 10, the current one included).\n",
	};
	const struct db_secret *s = &c.secret;
	char note[128];
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, NULL, NULL, NULL);
	if (cli_start(&c, CLI_SECRET, argv + i) < 0)
		goto out;
	printf("%7s  %-20s %8s  %s\n", "VERSION", "UPDATED", "SIZE", "BY");
	current_note(c.vault, s, note, sizeof(note));
	print_version(s->version, s->mtime_ns, s->size, s->updated_by, note);
	r = vault_version_each(c.vault, s->id, history_cb, NULL);
	if (r < 0) {
		cli_error("%s/%s: cannot list versions: %s", argv[i], argv[i + 1], strerror(-r));
		goto out;
	}
	ret = 0;
out:
	cli_close(&c);
	return ret;
}

int rollback_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "rollback", .usage = "[OPTIONS] INSTANCE KEY VERSION",
		.min_args = 3, .max_args = 3, .want = "want INSTANCE, KEY and VERSION",
		.help = "Makes version VERSION of INSTANCE/KEY the current value again, as a new\n"
			"version (the value it replaces is kept like any other).\n",
	};
	const struct db_secret *s = &c.secret;
	struct db_secret now;
	int64_t version;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, NULL, NULL, NULL);
	if (cli_parse_version(argv[i + 2], &version) < 0)
		cli_usage_error(&c, "bad version '%s' (want a number from vaultfs history)",
				argv[i + 2]);
	if (cli_start(&c, CLI_SECRET, argv + i) < 0)
		goto out;
	r = vault_rollback(c.vault, s->id, (uint64_t)version, getuid(), &now);
	if (r == -EALREADY) {
		cli_error("%s/%s: version %lld is the current one; nothing was changed", argv[i],
			  argv[i + 1], (long long)version);
		goto out;
	} else if (r == -ENOENT) {
		cli_error("%s/%s has no version %lld (see: vaultfs history %s %s); nothing was "
			  "changed", argv[i], argv[i + 1], (long long)version, argv[i],
			  argv[i + 1]);
		goto out;
	} else if (r < 0) {
		cli_error("%s/%s: %s; nothing was changed", argv[i], argv[i + 1],
			  r == -EIO ? "that version fails authentication (tampered or damaged)"
				    : strerror(-r));
		goto out;
	}
	printf("vaultfs: %s/%s: the value of version %lld is current again, as version "
	       "%llu\n", argv[i], argv[i + 1], (long long)version,
	       (unsigned long long)now.version);
	ret = 0;
out:
	cli_close(&c);
	return ret;
}

int undelete_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "undelete", .usage = "[OPTIONS] INSTANCE KEY",
		.min_args = 2, .max_args = 2, .want = "want INSTANCE and KEY",
		.help = "Brings back INSTANCE/KEY as it was when it was deleted (value, history,\n"
			"owner, mode, description), if that was within `undelete_window` (config,\n"
			"default 7d). See the deleted keys with: vaultfs ls --deleted INSTANCE.\n",
	};
	const struct db_instance *in = &c.in;
	struct db_secret s;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, NULL, NULL, NULL);
	if (cli_start(&c, CLI_INSTANCE, argv + i) < 0)
		goto out;
	if (!cli_name_ok("key", argv[i + 1]))
		goto out;
	r = vault_undelete(c.vault, in->id, argv[i + 1], &s);
	if (r == -ENOENT) {
		cli_error("%s/%s: no deleted key of that name within the undelete window (see: "
			  "vaultfs ls --deleted %s)", argv[i], argv[i + 1], argv[i]);
		goto out;
	} else if (r == -EEXIST) {
		cli_error("%s/%s exists; delete or rename it first; nothing was changed",
			  argv[i], argv[i + 1]);
		goto out;
	} else if (r < 0) {
		cli_error("%s/%s: %s", argv[i], argv[i + 1], strerror(-r));
		goto out;
	}
	printf("vaultfs: %s/%s is back (version %llu)\n", argv[i], argv[i + 1],
	       (unsigned long long)s.version);
	ret = 0;
out:
	cli_close(&c);
	return ret;
}

int purge_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "purge", .usage = "[OPTIONS] INSTANCE [KEY]",
		.min_args = 1, .max_args = 2, .want = "want INSTANCE and maybe KEY",
		.help = "Erases deleted keys for good, with all their versions: KEY, or every\n"
			"deleted key of INSTANCE. A key created again afterwards starts a fresh\n"
			"history. Keys that exist are not touched: delete them first.\n",
	};
	const struct db_instance *in = &c.in;
	struct db_secret s;
	const char *key;
	int64_t count = 0;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, NULL, NULL, NULL);
	key = argc - i == 2 ? argv[i + 1] : NULL;
	if (cli_start(&c, CLI_INSTANCE, argv + i) < 0)
		goto out;
	if (key && !cli_name_ok("key", key))
		goto out;
	r = vault_purge(c.vault, in->id, key, &count);
	if (r < 0) {
		cli_error("%s: %s", argv[i], strerror(-r));
		goto out;
	}
	if (key && count == 0) {
		if (vault_secret_find(c.vault, in->id, key, &s) == 0)
			cli_error("%s/%s is not deleted (delete it first: vaultfs rm %s %s); "
				  "nothing was purged", argv[i], key, argv[i], key);
		else
			cli_error("%s/%s: no deleted key of that name; nothing was purged",
				  argv[i], key);
		goto out;
	}
	printf("vaultfs: purged %lld deleted key%s of %s\n", (long long)count,
	       count == 1 ? "" : "s", argv[i]);
	ret = 0;
out:
	cli_close(&c);
	return ret;
}

static int type_opt(int opt, const char *arg, void *ctx)
{
	if (opt != OPT_TYPE)
		return -1;
	*(const char **)ctx = arg;
	return 0;
}

static int describe_set(struct cli *c, const struct db_secret *s, enum meta_attr a,
			const char *value, const char *what)
{
	int r = vault_meta_set(c->vault, s->id, a, value, strlen(value));

	if (r == -E2BIG)
		cli_error("%s too long: at most %d bytes; nothing was changed", what,
			  a == META_TYPE ? META_TYPE_MAX : META_DESCRIPTION_MAX);
	else if (r == -EINVAL && a == META_TYPE)
		cli_error("bad type '%s' (want 1-%d of A-Z a-z 0-9 . _ - / +); nothing was "
			  "changed", value, META_TYPE_MAX);
	else if (r == -EINVAL)
		cli_error("bad description: want UTF-8 text without control characters; "
			  "nothing was changed");
	else if (r < 0)
		cli_error("%s: %s", what, strerror(-r));
	return r;
}

int describe_main(int argc, char **argv)
{
	static const struct option extra[] = {
		{ "type", required_argument, NULL, OPT_TYPE }, { 0 },
	};
	struct cli c = {
		.cmd = "describe", .usage = "[OPTIONS] [--type TYPE] INSTANCE KEY [TEXT]",
		.min_args = 2, .max_args = 3, .want = "want INSTANCE, KEY and maybe TEXT",
		.help = "Sets the description of INSTANCE/KEY to TEXT (\"\" removes it), and its\n"
			"type with --type (\"\" removes it); without either, prints both. The same\n"
			"as user.description and user.type on the file in the mount. Metadata,\n"
			"not secret: don't put values here.\n\n"
			"      --type TYPE      what kind of secret: 1-64 of A-Z a-z 0-9 . _ - / +\n",
	};
	char buf[META_DESCRIPTION_MAX + 1];
	const char *type = NULL;
	const struct db_secret *s = &c.secret;
	size_t len;
	int i, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, extra, type_opt, &type);
	if (cli_start(&c, CLI_SECRET, argv + i) < 0)
		goto out;
	if (argc - i == 3 && describe_set(&c, s, META_DESCRIPTION, argv[i + 2],
					  "description") < 0)
		goto out;
	if (type && describe_set(&c, s, META_TYPE, type, "type") < 0)
		goto out;
	if (argc - i == 2 && !type) {
		if (vault_meta_get(c.vault, s->id, META_DESCRIPTION, buf, sizeof(buf) - 1, &len))
			len = 0;
		printf("description: %.*s\n", (int)len, buf);
		if (vault_meta_get(c.vault, s->id, META_TYPE, buf, sizeof(buf) - 1, &len))
			len = 0;
		printf("type: %.*s\n", (int)len, buf);
	}
	ret = 0;
out:
	cli_close(&c);
	return ret;
}
