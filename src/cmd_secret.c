/* vaultfs ls, get, set, rm: the vault without a mount. They work on the
 * database directly, also while it is mounted (SQLite's locking keeps both
 * consistent). Values pass only through locked memory and stdin/stdout. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "../crypto/secmem.h"
#include "../fs/name.h"
#include "../fs/vault.h"
#include "cli.h"
#include "commands.h"

struct names {
	char **v;
	size_t n, cap;
};

static int names_add(struct names *ns, const char *name)
{
	if (ns->n == ns->cap) {
		size_t cap = ns->cap ? ns->cap * 2 : 64;
		char **v = realloc(ns->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		ns->v = v;
		ns->cap = cap;
	}
	ns->v[ns->n] = strdup(name);
	return ns->v[ns->n++] ? 0 : -ENOMEM;
}

static int instance_name_cb(void *ctx, const struct db_instance *in)
{
	return names_add(ctx, in->name);
}

static int secret_name_cb(void *ctx, const struct db_secret *s)
{
	return names_add(ctx, s->name);
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_print_free(struct names *ns)
{
	if (ns->n)
		qsort(ns->v, ns->n, sizeof(*ns->v), cmp_names);
	for (size_t i = 0; i < ns->n; i++) {
		puts(ns->v[i]);
		free(ns->v[i]);
	}
	free(ns->v);
}

/* Finds an instance by name, with the error printed. */
static int find_instance(struct cli *c, const char *name, struct db_instance *in)
{
	int r;

	if (!name_valid(name)) {
		cli_error("invalid instance name '%s' (1-255 of A-Z a-z 0-9 . _ -)", name);
		return -1;
	}
	r = db_instance_find(vault_db(c->vault), name, in);
	if (r == -ENOENT)
		cli_error("no such instance: %s", name);
	else if (r < 0)
		cli_error("%s: %s", name, strerror(-r));
	return r < 0 ? -1 : 0;
}

static int find_secret(struct cli *c, const char *inst, const char *key, struct db_secret *s)
{
	struct db_instance in;
	int r;

	if (find_instance(c, inst, &in) < 0)
		return -1;
	if (!name_valid(key)) {
		cli_error("invalid key name '%s' (1-255 of A-Z a-z 0-9 . _ -)", key);
		return -1;
	}
	r = db_secret_find(vault_db(c->vault), in.id, key, s);
	if (r == -ENOENT)
		cli_error("no such key: %s/%s", inst, key);
	else if (r < 0)
		cli_error("%s/%s: %s", inst, key, strerror(-r));
	return r < 0 ? -1 : 0;
}

int ls_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "ls", .usage = "[OPTIONS] [INSTANCE]",
		.help = "Lists the instances, or the keys configured in INSTANCE, one per line.\n"
			"Values are never shown.\n",
	};
	struct names ns = { 0 };
	struct db_instance in;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, NULL, NULL, NULL);
	if (argc - i > 1)
		cli_usage_error(&c, "too many arguments");
	if (cli_load_config(&c) < 0 || cli_open_vault(&c, 0) < 0)
		goto out;
	if (i == argc) {
		r = db_instance_each(vault_db(c.vault), 0, instance_name_cb, &ns);
	} else {
		if (find_instance(&c, argv[i], &in) < 0)
			goto out;
		r = db_secret_each(vault_db(c.vault), in.id, 0, secret_name_cb, &ns);
	}
	if (r < 0) {
		cli_error("cannot list: %s", strerror(-r));
		goto out;
	}
	ret = 0;
out:
	names_print_free(&ns);
	cli_close(&c);
	return ret;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int get_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "get", .usage = "[OPTIONS] INSTANCE KEY",
		.help = "Writes the value of INSTANCE/KEY to standard output, exactly as stored.\n",
	};
	struct secbuf *val = NULL;
	struct db_secret s;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, NULL, NULL, NULL);
	if (argc - i != 2)
		cli_usage_error(&c, "want INSTANCE and KEY");
	if (cli_load_config(&c) < 0 || cli_open_vault(&c, 0) < 0)
		goto out;
	if (find_secret(&c, argv[i], argv[i + 1], &s) < 0)
		goto out;
	r = vault_read(c.vault, s.id, &val, NULL);
	if (r == -EIO) {
		cli_error("%s/%s: the stored value fails authentication (tampered or damaged); "
			  "refusing to show it", argv[i], argv[i + 1]);
		goto out;
	} else if (r < 0) {
		cli_error("%s/%s: %s", argv[i], argv[i + 1], strerror(-r));
		goto out;
	}
	r = write_all(STDOUT_FILENO, val->data, val->len);
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

/* Reads all of stdin into locked memory; a terminal gets a prompt, no echo,
 * and one line. */
static int read_value(struct secbuf *b, size_t max, bool tty)
{
	ssize_t n;
	int r;

	b->len = 0;
	for (;;) {
		r = secbuf_reserve(b, b->len + 4096 > max + 1 ? max + 1 : b->len + 4096);
		if (r < 0)
			return r;
		if (b->len == max + 1)
			return -EFBIG;
		n = read(STDIN_FILENO, b->data + b->len, b->cap - b->len > max + 1 - b->len ?
			 max + 1 - b->len : b->cap - b->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		b->len += (size_t)n;
		if (tty && b->data[b->len - 1] == '\n')
			return 0;
	}
}

static int read_value_tty(struct secbuf *b, size_t max, const char *inst, const char *key)
{
	struct termios old, quiet;
	int r;

	fprintf(stderr, "value for %s/%s (not echoed): ", inst, key);
	if (tcgetattr(STDIN_FILENO, &old) < 0)
		return read_value(b, max, true);
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	r = read_value(b, max, true);
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
	fputc('\n', stderr);
	return r;
}

int set_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "set", .usage = "[OPTIONS] INSTANCE KEY < VALUE",
		.help = "Stores the value read from standard input as INSTANCE/KEY (never from\n"
			"the command line, where other users could see it). Creates the key,\n"
			"and the instance, if they don't exist. A single-line value loses one\n"
			"trailing newline unless the instance keeps newlines.\n",
	};
	struct secbuf *val = NULL;
	struct db_instance in;
	const char *inst, *key;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, NULL, NULL, NULL);
	if (argc - i != 2)
		cli_usage_error(&c, "want INSTANCE and KEY (the value comes from standard input)");
	inst = argv[i];
	key = argv[i + 1];
	if (!name_valid(inst) || !name_valid(key)) {
		cli_error("invalid name '%s' (1-255 of A-Z a-z 0-9 . _ -)",
			  name_valid(inst) ? key : inst);
		return 1;
	}
	if (cli_load_config(&c) < 0 || cli_open_vault(&c, 0) < 0)
		goto out;
	r = secbuf_new(&val, 4096);
	if (r == 0)
		r = isatty(STDIN_FILENO) ? read_value_tty(val, c.conf.max_value_size, inst, key) :
					   read_value(val, c.conf.max_value_size, false);
	if (r == -EFBIG) {
		cli_error("value too large: the limit is %zu bytes; nothing was changed",
			  c.conf.max_value_size);
		goto out;
	} else if (r < 0) {
		cli_error("cannot read the value: %s", strerror(-r));
		goto out;
	}
	r = db_instance_find(vault_db(c.vault), inst, &in);
	if (r == -ENOENT) {
		const struct instance_conf *ic = policy_instance(&c.conf, inst);

		r = vault_instance_create(c.vault, inst, ic && ic->has_owner ? ic->owner : getuid(),
					  ic && ic->has_group ? ic->group : getgid(),
					  ic && ic->has_mode ? ic->mode : 0700, &in);
		if (r == 0)
			cli_error("created instance %s", inst);
	}
	if (r == 0)
		r = vault_put(c.vault, in.id, key, val->data, val->len, getuid(), in.gid, NULL);
	if (r < 0) {
		cli_error("%s/%s: %s; nothing was changed", inst, key, strerror(-r));
		goto out;
	}
	ret = 0;
out:
	secbuf_free(val);
	cli_close(&c);
	return ret;
}

int rm_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "rm", .usage = "[OPTIONS] INSTANCE KEY",
		.help = "Deletes INSTANCE/KEY.\n",
	};
	struct db_secret s;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, NULL, NULL, NULL);
	if (argc - i != 2)
		cli_usage_error(&c, "want INSTANCE and KEY");
	if (cli_load_config(&c) < 0 || cli_open_vault(&c, 0) < 0)
		goto out;
	if (find_secret(&c, argv[i], argv[i + 1], &s) < 0)
		goto out;
	r = vault_delete(c.vault, s.id);
	if (r < 0) {
		cli_error("%s/%s: %s", argv[i], argv[i + 1], strerror(-r));
		goto out;
	}
	ret = 0;
out:
	cli_close(&c);
	return ret;
}
