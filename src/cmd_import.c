/* vaultfs import: a dotenv file or a directory of one file per secret (a
 * Docker or Kubernetes secrets directory) into an instance. Everything is
 * read and checked first, then stored in one transaction: all or nothing.
 * Values pass only through locked memory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../crypto/secmem.h"
#include "../fs/name.h"
#include "../fs/vault.h"
#include "cli.h"
#include "commands.h"
#include "dotenv.h"
#include "secio.h"

#define MAX_REPORTED 50

struct import_opts {
	const char *env;
	const char *dir;
	bool dry_run;
};

static int import_opt(int opt, const char *arg, void *ctx)
{
	struct import_opts *o = ctx;

	if (opt == OPT_ENV)
		o->env = arg;
	else if (opt == OPT_DIR)
		o->dir = arg;
	else if (opt == 'n' || opt == OPT_DRY_RUN)
		o->dry_run = true;
	else
		return -1;
	return 0;
}

struct reporter {
	const char *where;
	int count;
};

static void report(void *ctx, unsigned line, const char *msg)
{
	struct reporter *rp = ctx;

	if (++rp->count <= MAX_REPORTED)
		cli_error("%s:%u: %s", rp->where, line, msg);
}

static int load_env(struct cli *c, const char *path, struct dotenv *d)
{
	struct reporter rp = { .where = strcmp(path, "-") ? path : "(standard input)" };
	struct secbuf *text = NULL;
	int fd, r;

	fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY) : STDIN_FILENO;
	if (fd < 0) {
		cli_error("%s: %s", path, strerror(errno));
		return -1;
	}
	r = secbuf_new(&text, 4096);
	if (r == 0)
		r = secio_read(fd, text, POLICY_MAX_VALUE_LIMIT, false);
	if (fd != STDIN_FILENO)
		close(fd);
	if (r < 0) {
		cli_error("%s: %s", rp.where, r == -EFBIG ? "too large" : strerror(-r));
		secbuf_free(text);
		return -1;
	}
	r = dotenv_parse(text->data, text->len, d, report, &rp);
	secbuf_free(text);
	if (r < 0)
		cli_error("%s: %s", rp.where, strerror(-r));
	else if (rp.count > MAX_REPORTED)
		cli_error("%s: and %d more problems", rp.where, rp.count - MAX_REPORTED);
	return r == 0 ? 0 : -1;
}

static int cmp_dirent(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

/* One file of a secrets directory into d; false (reported) if it can't be. */
static bool load_one(struct cli *c, int dfd, const char *dir, const char *name,
		     struct dotenv *d)
{
	struct secbuf *v = NULL;
	struct stat st;
	int fd, r;

	if (!name_valid(name)) {
		cli_error("%s/%s: invalid key name (want 1-%d of A-Z a-z 0-9 . _ -)", dir, name,
			  NAME_MAX_LEN);
		return false;
	}
	/* Kubernetes' keys are symlinks into ..data: follow them. */
	fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		cli_error("%s/%s: %s", dir, name, fd < 0 ? strerror(errno) : "not a regular file");
		if (fd >= 0)
			close(fd);
		return false;
	}
	r = secbuf_new(&v, (size_t)st.st_size + 1);
	if (r == 0)
		r = secio_read(fd, v, c->conf.max_value_size, false);
	close(fd);
	if (r == -EFBIG)
		cli_error("%s/%s: larger than max_value_size (%zu bytes)", dir, name,
			  c->conf.max_value_size);
	else if (r < 0)
		cli_error("%s/%s: %s", dir, name, strerror(-r));
	if (r < 0) {
		secbuf_free(v);
		return false;
	}
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 32;
		struct dotenv_entry *e = realloc(d->e, cap * sizeof(*e));

		if (!e) {
			secbuf_free(v);
			cli_error("out of memory");
			return false;
		}
		d->e = e;
		d->cap = cap;
	}
	memset(&d->e[d->n], 0, sizeof(d->e[d->n]));
	memcpy(d->e[d->n].name, name, strlen(name) + 1);
	d->e[d->n++].value = v;
	return true;
}

static int load_dir(struct cli *c, const char *dir, struct dotenv *d)
{
	struct dirent **list = NULL;
	int n, dfd, bad = 0;

	memset(d, 0, sizeof(*d));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	n = dfd < 0 ? -1 : scandir(dir, &list, NULL, cmp_dirent);
	if (n < 0) {
		cli_error("%s: %s", dir, strerror(errno));
		if (dfd >= 0)
			close(dfd);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		const char *name = list[i]->d_name;

		/* ., .., and Kubernetes' own ..data and ..2024_01_01_... */
		if (strncmp(name, "..", 2) && strcmp(name, ".") &&
		    !load_one(c, dfd, dir, name, d))
			bad++;
		free(list[i]);
	}
	free(list);
	close(dfd);
	return bad ? -1 : 0;
}

int import_main(int argc, char **argv)
{
	static const struct option extra[] = {
		{ "env", required_argument, NULL, OPT_ENV },
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
		{ 0 },
	};
	struct cli c = {
		.cmd = "import", .usage = "[OPTIONS] INSTANCE (--env FILE | --dir DIR) [-n]",
		.help = "Stores many secrets in INSTANCE at once, all or nothing: every problem\n"
			"is reported (with its line number) and then nothing is imported.\n"
			"Existing keys get a new version. Creates INSTANCE if needed.\n\n"
			"      --env FILE       a dotenv file (- for standard input): NAME=VALUE\n"
			"                       lines, # comments, an optional `export`, 'single'\n"
			"                       and \"double\" quotes (\\n \\t \\\\ \\\" escapes), quoted\n"
			"                       values over several lines; no ${VAR} expansion\n"
			"      --dir DIR        one file per secret, named after it (a Docker or\n"
			"                       Kubernetes secrets directory; symlinks followed,\n"
			"                       Kubernetes' ..data entries skipped)\n"
			"  -n, --dry-run        check and list what would be imported, store nothing\n",
	};
	struct import_opts o = { 0 };
	struct dotenv d = { 0 };
	const char **names = NULL;
	struct secbuf **values = NULL;
	struct db_instance in;
	struct db_secret s;
	size_t at, fresh = 0;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, "n", extra, import_opt, &o);
	if (argc - i != 1)
		cli_usage_error(&c, "want INSTANCE");
	if (!o.env == !o.dir)
		cli_usage_error(&c, "want --env FILE or --dir DIR");
	if (!cli_name_ok("instance", argv[i]))
		return 1;
	if (cli_load_config(&c) < 0 || cli_open_vault(&c, 0) < 0)
		goto out;
	if ((o.env ? load_env(&c, o.env, &d) : load_dir(&c, o.dir, &d)) < 0) {
		cli_error("nothing was imported");
		goto out;
	}
	if (o.dry_run) {
		for (size_t k = 0; k < d.n; k++)
			printf("%s\n", d.e[k].name);
		printf("vaultfs: %zu key%s would be imported into %s (dry run)\n", d.n,
		       d.n == 1 ? "" : "s", argv[i]);
		ret = 0;
		goto out;
	}
	names = calloc(d.n + 1, sizeof(*names));
	values = calloc(d.n + 1, sizeof(*values));
	r = names && values ? cli_instance_open(&c, argv[i], &in) : -ENOMEM;
	for (size_t k = 0; r == 0 && k < d.n; k++) {
		names[k] = d.e[k].name;
		values[k] = d.e[k].value;
		fresh += db_secret_find(vault_db(c.vault), in.id, names[k], &s) == -ENOENT;
	}
	if (r == 0)
		r = vault_put_many(c.vault, in.id, d.n, names, values, getuid(), in.gid, &at);
	if (r < 0) {
		if (r == -EFBIG && at < d.n)
			cli_error("%s: larger than max_value_size (%zu bytes); nothing was "
				  "imported", names[at], c.conf.max_value_size);
		else
			cli_error("%s: %s; nothing was imported", argv[i], strerror(-r));
		goto out;
	}
	printf("vaultfs: imported %zu key%s into %s (%zu new, %zu updated)\n", d.n,
	       d.n == 1 ? "" : "s", argv[i], fresh, d.n - fresh);
	ret = 0;
out:
	free(names);
	free(values);
	dotenv_free(&d);
	cli_close(&c);
	return ret;
}
