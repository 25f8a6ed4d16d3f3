/* vaultfs get, set, rm: the vault without a mount. They work on the
 * database directly, also while it is mounted (SQLite's locking keeps both
 * consistent). Values pass only through locked memory and stdin/stdout. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>


#include "../crypto/secmem.h"
#include "../fs/expiry.h"
#include "../fs/vault.h"
#include "cli.h"
#include "commands.h"
#include "secio.h"

static int version_opt(int opt, const char *arg, void *ctx)
{
	return opt == OPT_VERSION && cli_parse_version(arg, ctx) == 0 ? 0 : -1;
}

int get_main(int argc, char **argv)
{
	static const struct option extra[] = {
		{ "version", required_argument, NULL, OPT_VERSION }, { 0 },
	};
	struct cli c = {
		.cmd = "get", .usage = "[OPTIONS] [--version V] INSTANCE KEY",
		.min_args = 2, .max_args = 2, .want = "want INSTANCE and KEY",
		.help = "Writes the value of INSTANCE/KEY to standard output, exactly as stored.\n\n"
			"      --version V      an old version (see: vaultfs history)\n",
	};
	struct secbuf *val = NULL;
	int64_t version = -1;
	const struct db_secret *s = &c.secret;
	struct db_secret meta;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, extra, version_opt, &version);
	if (cli_start(&c, CLI_SECRET | VAULT_BRIEF, argv + i) < 0)
		goto out;
	if (version >= 0)
		r = vault_read_version(c.vault, s->id, (uint64_t)version, &val, NULL);
	else
		r = vault_read(c.vault, s->id, &val, &meta);
	if (r == 0 && version < 0)
		r = expiry_open(c.vault, &meta, &val);
	cli_audit(&c, AUDIT_READ, argv[i], argv[i + 1], r);
	if (r == -EIO) {
		cli_error("%s/%s: the stored value fails authentication (tampered or damaged); "
			  "refusing to show it", argv[i], argv[i + 1]);
		goto out;
	} else if (r == -ENOENT && version >= 0) {
		cli_error("%s/%s has no version %lld (see: vaultfs history %s %s)", argv[i],
			  argv[i + 1], (long long)version, argv[i], argv[i + 1]);
		goto out;
	} else if (r < 0) {
		cli_error("%s/%s: %s", argv[i], argv[i + 1], strerror(-r));
		goto out;
	}
	r = secmem_write_all(STDOUT_FILENO, val->data, val->len);
	if (r < 0) {
		cli_error("standard output: %s", strerror(-r));
		goto out;
	}
	ret = 0;
out:
	secbuf_free(val);
	cli_close(&c);
	return ret;
}

/* A terminal gets a prompt, no echo, and one line. */
static int read_value_tty(struct secbuf *b, size_t max, const char *inst, const char *key)
{
	struct termios old, quiet;
	int r;

	fprintf(stderr, "value for %s/%s (not echoed): ", inst, key);
	if (tcgetattr(STDIN_FILENO, &old) < 0)
		return secio_read(STDIN_FILENO, b, max, true);
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	r = secio_read(STDIN_FILENO, b, max, true);
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
	fputc('\n', stderr);
	return r;
}

struct set_opts {
	int64_t if_version;
	struct expiry limit;
	bool limited;
};

static int set_opt(int opt, const char *arg, void *ctx)
{
	struct set_opts *o = ctx;
	int64_t n;

	switch (opt) {
	case OPT_IF_VERSION:
		return cli_parse_version(arg, &o->if_version) == 0 ? 0 : -1;
	case OPT_EXPIRES:
		o->limited = true;
		if (expiry_parse(arg, strlen(arg), db_now_ns(), &o->limit.expires_ns) == 0)
			return 0;
		cli_error("bad --expires '%s' (want 2026-12-31, 2026-12-31T23:59:59Z, @EPOCH or "
			  "a duration like 12h, 7d, 1d12h)", arg);
		return -1;
	case OPT_MAX_READS:
		o->limited = true;
		if (cli_parse_version(arg, &n) == 0 && n > 0) {
			o->limit.max_reads = (uint64_t)n;
			return 0;
		}
		cli_error("bad --max-reads '%s' (want a number from 1)", arg);
		return -1;
	}
	return -1;
}

/* The value from standard input (asked for, unechoed, on a terminal). */
static int read_value(struct cli *c, const char *inst, const char *key, struct secbuf **val)
{
	size_t max = c->conf.max_value_size;
	int r = secbuf_new(val, 4096);

	if (r == 0)
		r = isatty(STDIN_FILENO) ? read_value_tty(*val, max, inst, key) :
					   secio_read(STDIN_FILENO, *val, max, false);
	if (r == -EFBIG)
		cli_error("value too large: the limit is %zu bytes; nothing was changed", max);
	else if (r < 0)
		cli_error("cannot read the value: %s", strerror(-r));
	return r;
}

/* Stores val as inst/key if it is still at o->if_version (-1: any), with
 * o's limits if any: 0, EXIT_NO
 * if it changed meanwhile, else 1; audited either way. */
static int store_value(struct cli *c, const char *inst, const char *key,
		       const struct secbuf *val, const struct set_opts *o)
{
	int64_t if_version = o->if_version;
	struct db_secret cur = { 0 };
	struct audit_entry ae;
	struct db_instance in;
	int r;

	/* A check against a version > 0 fails on a missing instance: don't make one. */
	r = if_version > 0 ? vault_instance_find(c->vault, inst, &in) :
			     cli_instance_open(c, inst, &in);
	if (r == -ENOENT && if_version > 0)
		r = -ESTALE;
	else if (r == 0 && o->limited)
		r = expiry_put(c->vault, in.id, key, val->data, val->len, getuid(), in.gid,
			       if_version, &o->limit, &cur, cli_entry(&ae, AUDIT_WRITE, inst, key));
	else if (r == 0)
		r = vault_put_if(c->vault, in.id, key, val->data, val->len, getuid(), in.gid,
				 if_version, &cur, cli_entry(&ae, AUDIT_WRITE, inst, key));
	if (r < 0)
		cli_audit(c, AUDIT_WRITE, inst, key, r);
	if (r == -ESTALE) {
		cli_error("%s/%s is at version %llu, not %lld: it changed meanwhile; nothing was "
			  "changed", inst, key, (unsigned long long)cur.version,
			  (long long)if_version);
		return EXIT_NO;
	}
	if (r < 0) {
		cli_error("%s/%s: %s; nothing was changed", inst, key, r == -EMEDIUMTYPE ?
			  "it is a template (see: vaultfs template set)" : strerror(-r));
		return 1;
	}
	return 0;
}

int set_main(int argc, char **argv)
{
	static const struct option extra[] = {
		{ "if-version", required_argument, NULL, OPT_IF_VERSION },
		{ "expires", required_argument, NULL, OPT_EXPIRES },
		{ "max-reads", required_argument, NULL, OPT_MAX_READS }, { 0 },
	};
	struct cli c = {
		.cmd = "set", .usage = "[OPTIONS] [--if-version V] [--expires WHEN] [--max-reads N] "
				       "INSTANCE KEY < VALUE",
		.min_args = 2, .max_args = 2,
		.want = "want INSTANCE and KEY (the value comes from standard input)",
		.help = "Stores the value read from standard input as INSTANCE/KEY (never from\n"
			"the command line, where other users could see it). Creates the key,\n"
			"and the instance, if they don't exist. A single-line value loses one\n"
			"trailing newline unless the instance keeps newlines. The value it\n"
			"replaces is kept as an old version (see: vaultfs history).\n\n"
			"      --if-version V   only if the key is still at version V (a missing\n"
			"                       key counts as 0); otherwise change nothing and\n"
			"                       exit with status 3\n"
			"      --expires WHEN   this version can't be read after WHEN: a date\n"
			"                       (2026-12-31, 2026-12-31T23:59:59Z, UTC), @EPOCH\n"
			"                       or a duration from now (90m, 12h, 7d, 1d12h);\n"
			"                       opens then fail with EKEYEXPIRED\n"
			"      --max-reads N    this version can be opened for reading N times\n"
			"                       (the mount and vaultfs get), then is expired\n",
	};
	struct secbuf *val = NULL;
	struct set_opts o = { .if_version = -1 };
	int i, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, extra, set_opt, &o);
	if (!cli_name_ok("instance", argv[i]) || !cli_name_ok("key", argv[i + 1]))
		return 1;
	if (cli_start(&c, VAULT_BRIEF, NULL) < 0 ||
	    read_value(&c, argv[i], argv[i + 1], &val) < 0)
		goto out;
	ret = store_value(&c, argv[i], argv[i + 1], val, &o);
out:
	secbuf_free(val);
	cli_close(&c);
	return ret;
}

int rm_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "rm", .usage = "[OPTIONS] INSTANCE KEY",
		.min_args = 2, .max_args = 2, .want = "want INSTANCE and KEY",
		.help = "Deletes INSTANCE/KEY.\n",
	};
	struct audit_entry ae;
	const struct db_secret *s = &c.secret;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, NULL, NULL, NULL);
	if (cli_start(&c, CLI_SECRET | VAULT_BRIEF, argv + i) < 0)
		goto out;
	r = vault_delete(c.vault, s->id, getuid(),
			 cli_entry(&ae, AUDIT_DELETE, argv[i], argv[i + 1]));
	if (r < 0)
		cli_audit(&c, AUDIT_DELETE, argv[i], argv[i + 1], r);
	if (r < 0) {
		cli_error("%s/%s: %s", argv[i], argv[i + 1], strerror(-r));
		goto out;
	}
	ret = 0;
out:
	cli_close(&c);
	return ret;
}
