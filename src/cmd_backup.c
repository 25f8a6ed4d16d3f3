/* vaultfs backup, restore. A backup is the store as it is: values stay
 * sealed, and the master key in use at the time opens it. Restoring checks
 * that the key opens every value of the backup before touching the vault. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../crypto/key.h"
#include "../crypto/secmem.h"
#include "../db/db_backup.h"
#include "../fs/vault.h"
#include "cli.h"
#include "commands.h"
#include "daemons.h"

/* Opens the vault file at path with key, checks every row's tag and opens
 * every value in it, then, if to_key is another key, re-wraps it for
 * to_key (as rotate-key does), and if into is given, tags its rows for
 * that vault: 0, or -1 with the reason printed. */
static int verify_file(struct cli *c, const struct secbuf *key, const struct secbuf *to_key,
		       const char *path, const char *what, struct vault *into)
{
	struct vault_conf conf = c->conf;
	struct vault *v = NULL;
	char err[1024];
	int r;

	conf.instances = NULL;	/* not ours to free */
	snprintf(conf.db, sizeof(conf.db), "%s", path);
	r = vault_open(&v, &conf, key, 0, err, sizeof(err));
	if (r == -EKEYREJECTED) {
		cli_error("%s: the master key does not open it (made before a key rotation? "
			  "give the key of that time with --backup-key-file)", what);
	} else if (r < 0) {
		cli_error("%s: %s", what, err);
	} else if ((r = vault_verify(v, err, sizeof(err))) < 0) {
		cli_error("%s: %s", what, err);
	} else if (to_key && !key_equal(key, to_key) &&
		   (r = vault_rotate_master(v, to_key, NULL, NULL, err, sizeof(err))) < 0) {
		cli_error("%s: cannot re-wrap it for the master key in use: %s", what, err);
	} else if (into && (r = vault_retag_into(v, into, err, sizeof(err))) < 0) {
		cli_error("%s: %s", what, err);
	}
	vault_close(v);
	return r < 0 ? -1 : 0;
}

/* The key is loaded once (from $VAULTFS_KEY it can't be read twice) and
 * kept for verify_file. */
static int open_vault(struct cli *c, struct secbuf **key)
{
	char err[1024];
	int r;

	if (cli_load_key(c, key) < 0)
		return -1;
	r = vault_open(&c->vault, &c->conf, *key, 0, err, sizeof(err));
	if (r < 0)
		cli_error("%s", err);
	return r;
}

int backup_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "backup", .usage = "[OPTIONS] FILE",
		.min_args = 1, .max_args = 1, .want = "want FILE",
		.help = "Writes a consistent snapshot of the vault to FILE (a new file, mode\n"
			"0600), also while it is mounted and written to; SQLite's online backup.\n"
			"Values stay sealed: the backup needs the current master key to be\n"
			"restored, and is checked with it before this command succeeds.\n",
	};
	struct secbuf *key = NULL;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, NULL, NULL, NULL);
	if (cli_start(&c, CLI_CONFIG_ONLY, NULL) < 0 || open_vault(&c, &key) < 0)
		goto out;
	r = vault_backup(c.vault, argv[i]);
	if (r == -EEXIST) {
		cli_error("%s exists; refusing to overwrite it", argv[i]);
		goto out;
	} else if (r < 0) {
		cli_error("%s: %s (%s)", argv[i], strerror(-r), db_errmsg(NULL));
		goto out;
	}
	if (verify_file(&c, key, NULL, argv[i], argv[i], NULL) < 0) {
		unlink(argv[i]);
		goto out;
	}
	printf("vaultfs: backed up %s to %s\n", c.conf.db, argv[i]);
	ret = 0;
out:
	secbuf_free(key);
	cli_close(&c);
	return ret;
}

/* A name for a file beside the vault's database. */
static void beside(char *out, size_t size, const char *db, const char *suffix)
{
	time_t t = time(NULL);
	struct tm tm;
	char stamp[32] = "";

	if (gmtime_r(&t, &tm))
		strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(out, size, "%s.%s-%s-%d", db, suffix, stamp, (int)getpid());
}

static void unlink_db(const char *path)
{
	char p[PATH_MAX + 128];

	if (!path[0])
		return;
	unlink(path);
	snprintf(p, sizeof(p), "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", path);
	unlink(p);
}

static int backup_key_opt(int opt, const char *arg, void *ctx)
{
	if (opt != OPT_BACKUP_KEY_FILE)
		return -1;
	*(const char **)ctx = arg;
	return 0;
}

/* No vault at the database path: the checked copy becomes the vault. */
static int restore_new(struct cli *c, const struct secbuf *key, const struct secbuf *to_key,
		       const char *work, const char *file)
{
	if (verify_file(c, key, to_key, work, file, NULL) < 0)
		return 1;
	if (rename(work, c->conf.db) < 0) {
		cli_error("%s: %s", c->conf.db, strerror(errno));
		return 1;
	}
	printf("vaultfs: restored %s from %s\n", c->conf.db, file);
	return 0;
}

/* The vault's rows replaced by the checked copy's, in one transaction; the
 * vault as it was is kept beside it first. */
static int restore_into(struct cli *c, const struct secbuf *key, const struct secbuf *to_key,
			const char *work, const char *file)
{
	char saved[PATH_MAX + 64], err[1024];
	int r = vault_open(&c->vault, &c->conf, to_key, 0, err, sizeof(err));

	if (r < 0) {
		cli_error("%s", err);
		return 1;
	}
	if (verify_file(c, key, to_key, work, file, c->vault) < 0)
		return 1;
	beside(saved, sizeof(saved), c->conf.db, "before-restore");
	r = vault_backup(c->vault, saved);
	if (r < 0) {
		cli_error("cannot keep the vault as it is in %s: %s; nothing was changed", saved,
			  strerror(-r));
		return 1;
	}
	r = vault_restore(c->vault, work);
	if (r < 0) {
		cli_error("cannot restore %s: %s (%s); nothing was changed", file, strerror(-r),
			  db_errmsg(NULL));
		return 1;
	}
	printf("vaultfs: restored %s from %s (it was kept as %s)\n", c->conf.db, file, saved);
	if (daemons_signal(c->conf.db, SIGHUP) > 0)
		printf("vaultfs: told the mount daemons to drop their cached keys\n");
	return 0;
}

int restore_main(int argc, char **argv)
{
	static const struct option extra[] = {
		{ "backup-key-file", required_argument, NULL, OPT_BACKUP_KEY_FILE }, { 0 },
	};
	struct cli c = {
		.cmd = "restore", .usage = "[OPTIONS] [--backup-key-file OLD] FILE",
		.min_args = 1, .max_args = 1, .want = "want FILE",
		.help = "Replaces the vault's instances and secrets (with their versions, trash\n"
			"and descriptions) by those in the backup FILE, in one transaction, also\n"
			"while mounted: the mount daemons are told to drop their cached keys.\n"
			"The master key must open every value in FILE, or nothing is changed.\n"
			"The vault as it was is kept beside it, as DB.before-restore-TIME.\n"
			"Without a vault at the database path, FILE becomes the vault.\n\n"
			"      --backup-key-file OLD  the master key FILE was made with, if that\n"
			"                             was before a rotation: FILE is opened with\n"
			"                             it and re-wrapped for the key in use\n",
	};
	char work[PATH_MAX + 64] = "";
	struct secbuf *key = NULL, *bkey = NULL;
	const char *bkey_file = NULL;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, extra, backup_key_opt, &bkey_file);
	if (cli_start(&c, CLI_CONFIG_ONLY, NULL) < 0 || cli_load_key(&c, &key) < 0 ||
	    (bkey_file && cli_load_key_file(bkey_file, "backup", &bkey) < 0))
		goto out;
	/* A private copy: opening it may upgrade its schema, and FILE stays as
	 * it is. */
	beside(work, sizeof(work), c.conf.db, "restoring");
	r = db_copy_file(argv[i], work);
	if (r < 0)
		cli_error("%s: %s", argv[i], r == -ENOENT ? strerror(ENOENT) : db_errmsg(NULL));
	else if (access(c.conf.db, F_OK) < 0 && errno == ENOENT)
		ret = restore_new(&c, bkey ? bkey : key, key, work, argv[i]);
	else
		ret = restore_into(&c, bkey ? bkey : key, key, work, argv[i]);
out:
	unlink_db(work);
	secbuf_free(key);
	secbuf_free(bkey);
	cli_close(&c);
	return ret;
}
