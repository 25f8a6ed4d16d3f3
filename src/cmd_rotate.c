/* vaultfs rotate-key: a new master key without re-entering anything, or a
 * new data key for one instance. Both are one transaction in the store;
 * mounted daemons keep serving and are told to reload (SIGHUP). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../crypto/key.h"
#include "../fs/vault.h"
#include "cli.h"
#include "commands.h"
#include "daemons.h"

struct rotate_opts {
	const char *new_key_file;
	const char *instance;
	bool verbose;
	size_t done;
};

static int rotate_opt(int opt, const char *arg, void *ctx)
{
	struct rotate_opts *o = ctx;

	if (opt == OPT_NEW_KEY_FILE)
		o->new_key_file = arg;
	else if (opt == OPT_INSTANCE)
		o->instance = arg;
	else if (opt == 'v')
		o->verbose = true;
	else
		return -1;
	return 0;
}

static void progress(void *ctx, const char *instance, const char *key)
{
	struct rotate_opts *o = ctx;

	o->done++;
	if (!o->verbose)
		return;
	if (key)
		fprintf(stderr, "vaultfs: re-sealed %s/%s\n", instance, key);
	else
		fprintf(stderr, "vaultfs: re-wrapped the data key of %s\n", instance);
}

static void tell_daemons(const char *db)
{
	int n = daemons_signal(db, SIGHUP);

	if (n > 0)
		printf("vaultfs: told %d mount daemon%s to reload (SIGHUP)\n", n, n == 1 ? "" : "s");
}

static int sync_dir_of(const char *path)
{
	char dir[PATH_MAX];
	int fd, r = 0;

	snprintf(dir, sizeof(dir), "%s", path);
	fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* Another filesystem: a new file beside the old one, renamed over it. */
static int copy_key(const struct secbuf *key, const char *to)
{
	char tmp[PATH_MAX];
	struct secbuf *hex = NULL;
	int r;

	if (snprintf(tmp, sizeof(tmp), "%s.new-%d", to, (int)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	r = key_hex(key, &hex);
	if (r < 0)
		return r;
	r = key_write_file(tmp, hex);
	secbuf_free(hex);
	if (r == 0 && rename(tmp, to) < 0) {
		r = -errno;
		unlink(tmp);
	}
	return r;
}

/* The new key file takes the old one's place (its old contents gone), and
 * the new key is nowhere else. */
static int install_key(const char *from, const struct secbuf *key, const char *to)
{
	int r = rename(from, to) < 0 ? -errno : 0;

	if (r == -EXDEV) {
		r = copy_key(key, to);
		if (r == 0 && unlink(from) < 0)
			cli_error("warning: the new key is installed, but %s could not be "
				  "removed: %s", from, strerror(errno));
	}
	if (r == 0)
		r = sync_dir_of(to);
	return r;
}

/* The vault opened with the current key, or (a rotation that committed
 * but was cut short before installing the key) with the new one. */
static int open_either(struct cli *c, const struct secbuf *cur, const struct secbuf *new_key,
		       bool *done_before)
{
	char err[1024], err2[1024];
	int r;

	*done_before = false;
	r = vault_open(&c->vault, &c->conf, cur, 0, err, sizeof(err));
	if (r == -EKEYREJECTED &&
	    vault_open(&c->vault, &c->conf, new_key, 0, err2, sizeof(err2)) == 0) {
		*done_before = true;
		return 0;
	}
	if (r < 0)
		cli_error("%s", err);
	return r;
}

/* The new key is another key, in another file: 0, or -1 (printed). */
static int new_key_ok(const struct cli *c, const struct rotate_opts *o,
		      const struct secbuf *cur, const struct secbuf *new_key)
{
	char real_new[PATH_MAX], real_cur[PATH_MAX];

	if (c->conf.key_file[0] && realpath(o->new_key_file, real_new) &&
	    realpath(c->conf.key_file, real_cur) && !strcmp(real_new, real_cur)) {
		cli_error("--new-key-file is the key file in use (%s)", c->conf.key_file);
		return -1;
	}
	if (key_equal(cur, new_key)) {
		cli_error("the new key is the key in use; nothing was changed");
		return -1;
	}
	return 0;
}

/* The vault needs the new key now: it takes the old one's place. */
static int new_key_install(const struct cli *c, const struct rotate_opts *o,
			   const struct secbuf *new_key)
{
	int r;

	if (!c->conf.key_file[0]) {
		printf("vaultfs: the key came from $%s or a systemd credential: put the new key "
		       "there, then reload the daemons (systemctl reload, or kill -HUP)\n",
		       KEY_ENV);
		return 0;
	}
	r = install_key(o->new_key_file, new_key, c->conf.key_file);
	if (r < 0) {
		cli_error("the vault needs the new key now, but it could not be moved to %s "
			  "(%s): run this command again, or move it yourself (mv %s %s) and "
			  "reload the daemons", c->conf.key_file, strerror(-r), o->new_key_file,
			  c->conf.key_file);
		return -1;
	}
	printf("vaultfs: the new key is now %s\n", c->conf.key_file);
	return 0;
}

static int rotate_master(struct cli *c, struct rotate_opts *o)
{
	struct secbuf *cur = NULL, *new_key = NULL;
	char err[1024];
	bool done_before;
	int r, ret = 1;

	if (cli_load_key(c, &cur) < 0 || cli_load_key_file(o->new_key_file, "new", &new_key) < 0 ||
	    new_key_ok(c, o, cur, new_key) < 0 || open_either(c, cur, new_key, &done_before) < 0)
		goto out;
	if (done_before) {
		printf("vaultfs: %s already needs the new key (an earlier rotation was cut "
		       "short); finishing it\n", c->conf.db);
	} else {
		r = vault_rotate_master(c->vault, new_key, progress, o, err, sizeof(err));
		if (r < 0) {
			cli_error("cannot rotate the master key: %s", err);
			goto out;
		}
		printf("vaultfs: %s: re-wrapped %zu data key%s for the new master key; the old "
		       "key opens nothing now\n", c->conf.db, o->done, o->done == 1 ? "" : "s");
	}
	if (new_key_install(c, o, new_key) < 0)
		goto out;
	tell_daemons(c->conf.db);
	ret = 0;
out:
	secbuf_free(cur);
	secbuf_free(new_key);
	return ret;
}

static int rotate_instance(struct cli *c, struct rotate_opts *o)
{
	struct db_instance in;
	char err[1024];
	int r;

	if (cli_open_vault(c, 0) < 0 || cli_find_instance(c, o->instance, &in) < 0)
		return 1;
	r = vault_rotate_instance(c->vault, in.id, progress, o, err, sizeof(err));
	if (r < 0) {
		cli_error("cannot rotate the data key of %s: %s", o->instance, err);
		return 1;
	}
	printf("vaultfs: %s has a new data key (generation %llu); re-sealed %zu key%s with "
	       "their old versions\n", o->instance, (unsigned long long)in.generation + 1,
	       o->done, o->done == 1 ? "" : "s");
	tell_daemons(c->conf.db);
	return 0;
}

int rotate_key_main(int argc, char **argv)
{
	static const struct option extra[] = {
		{ "new-key-file", required_argument, NULL, OPT_NEW_KEY_FILE },
		{ "instance", required_argument, NULL, OPT_INSTANCE },
		{ "verbose", no_argument, NULL, 'v' },
		{ 0 },
	};
	struct cli c = {
		.cmd = "rotate-key",
		.usage = "[OPTIONS] (--new-key-file FILE | --instance NAME) [-v]",
		.help = "--new-key-file FILE: re-wraps every instance's data key and the key\n"
			"check value for the master key in FILE, in one transaction: nothing is\n"
			"re-entered or lost, and afterwards the old key opens nothing. FILE then\n"
			"replaces the key file in use (--key-file or key_file), and the mount\n"
			"daemons of this vault are told to reload it (SIGHUP); they keep serving\n"
			"throughout. With the key from $VAULTFS_KEY or a systemd credential, put\n"
			"the new key there yourself and reload the daemons. Interrupted, the\n"
			"vault opens with exactly one of the two keys; run it again to finish.\n"
			"Backups made before need the old key.\n\n"
			"--instance NAME: gives NAME a new data key and re-seals its values, old\n"
			"versions and deleted keys with it, in one transaction.\n\n"
			"      --new-key-file FILE  the new master key (see: vaultfs keygen --out)\n"
			"      --instance NAME      rotate the data key of NAME instead\n"
			"  -v, --verbose            name each instance or key as it is done\n",
	};
	struct rotate_opts o = { 0 };
	int i, ret = 1;

	i = cli_parse(&c, argc, argv, "v", extra, rotate_opt, &o);
	if (i != argc)
		cli_usage_error(&c, "unexpected argument %s", argv[i]);
	if (!o.new_key_file == !o.instance)
		cli_usage_error(&c, "want --new-key-file FILE or --instance NAME");
	if (cli_start(&c, CLI_CONFIG_ONLY, NULL) < 0)
		return 1;
	ret = o.new_key_file ? rotate_master(&c, &o) : rotate_instance(&c, &o);
	cli_close(&c);
	return ret;
}
