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
#include "beneath.h"
#include "cli.h"
#include "commands.h"
#include "dotenv.h"
#include "import.h"
#include "secio.h"

#define MAX_REPORTED 50

enum { OPT_ANY_NAME = 0x300 };

static int import_opt(int opt, const char *arg, void *ctx)
{
	struct import_opts *o = ctx;

	if (opt == OPT_ENV)
		o->env = arg;
	else if (opt == OPT_DIR)
		o->dir = arg;
	else if (opt == 'n' || opt == OPT_DRY_RUN)
		o->dry_run = true;
	else if (opt == OPT_ANY_NAME)
		o->any_name = true;
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

static int load_env(struct cli *c, const char *path, unsigned flags, struct dotenv *d)
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
	r = dotenv_parse(text->data, text->len, flags, d, report, &rp);
	secbuf_free(text);
	if (r < 0)
		cli_error("%s: %s", rp.where, strerror(-r));
	else if (rp.count > MAX_REPORTED)
		cli_error("%s: and %d more problems", rp.where, rp.count - MAX_REPORTED);
	return r == 0 ? 0 : -1;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char *file_kind(mode_t m)
{
	if (S_ISDIR(m))
		return "a directory";
	if (S_ISFIFO(m))
		return "a fifo";
	if (S_ISSOCK(m))
		return "a socket";
	if (S_ISCHR(m) || S_ISBLK(m))
		return "a device";
	return "not a regular file";
}

/* Why the file behind pfd may not be imported from a directory owned by
 * dir_uid, or NULL. Root's files and the directory owner's are taken; a
 * file of anyone else was planted, and a hard link the owner doesn't own
 * could be anything on this filesystem. */
static const char *refuse_file(const struct stat *st, uid_t dir_uid, char *why, size_t n)
{
	if (!S_ISREG(st->st_mode))
		return file_kind(st->st_mode);
	if (st->st_uid != 0 && st->st_uid != dir_uid) {
		snprintf(why, n, "owned by uid %u, neither root nor the directory's owner",
			 (unsigned)st->st_uid);
		return why;
	}
	if (st->st_nlink > 1 && st->st_uid != dir_uid)
		return "a hard link to a file the directory's owner does not own";
	return NULL;
}

static const char *open_error(int r)
{
	if (r == -EXDEV)
		return "a symbolic link that leads outside the directory";
	if (r == -ELOOP)
		return "too many levels of symbolic links";
	return strerror(-r);
}

/* Opens name beneath dfd for reading; reports and returns -1 if it may not
 * be imported. Kubernetes' keys are links into ..data: followed while they
 * stay inside the directory. */
static int open_member(int dfd, uid_t dir_uid, const char *dir, const char *name)
{
	struct stat st;
	const char *why = NULL;
	char buf[96];
	int pfd, fd = -1;

	pfd = beneath_open_path(dfd, name);
	if (pfd < 0) {
		cli_error("%s/%s: %s", dir, name, open_error(pfd));
		return -1;
	}
	if (fstat(pfd, &st) < 0)
		why = strerror(errno);
	else
		why = refuse_file(&st, dir_uid, buf, sizeof(buf));
	/* The checked inode itself, not whatever the name leads to by now. */
	if (!why) {
		fd = beneath_reopen(pfd);
		if (fd < 0)
			why = strerror(-fd);
	}
	close(pfd);
	if (why)
		cli_error("%s/%s: %s", dir, name, why);
	return why ? -1 : fd;
}

/* One file of a secrets directory into d; false (reported) if it can't be. */
static bool load_one(struct cli *c, int dfd, uid_t dir_uid, const char *dir,
		     const char *name, struct dotenv *d)
{
	struct secbuf *v = NULL;
	struct stat st;
	int fd, r;

	if (!name_valid(name)) {
		cli_error("%s/%s: invalid key name (want 1-%d of A-Z a-z 0-9 . _ -)", dir, name,
			  NAME_MAX_LEN);
		return false;
	}
	fd = open_member(dfd, dir_uid, dir, name);
	if (fd < 0)
		return false;
	r = fstat(fd, &st) < 0 ? -errno : secbuf_new(&v, (size_t)st.st_size + 1);
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

/* The names in the directory dfd (a duplicate is read, dfd stays open),
 * sorted, without ., .. and Kubernetes' own ..data and ..2024_01_01_...;
 * -errno. */
static int list_dir(int dfd, char ***names, size_t *n)
{
	struct dirent *de;
	char **v = NULL, **nv;
	size_t cap = 0;
	DIR *dp;
	int fd, r = 0;

	*n = 0;
	fd = dup(dfd);
	dp = fd < 0 ? NULL : fdopendir(fd);
	if (!dp) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		return r;
	}
	rewinddir(dp);
	while (r == 0 && (errno = 0, de = readdir(dp))) {
		if (!strcmp(de->d_name, ".") || !strncmp(de->d_name, "..", 2))
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 32;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				r = -ENOMEM;
				break;
			}
			v = nv;
		}
		v[*n] = strdup(de->d_name);
		r = v[*n] ? 0 : -ENOMEM;
		*n += r == 0;
	}
	if (r == 0 && errno)
		r = -errno;
	closedir(dp);
	if (v)
		qsort(v, *n, sizeof(*v), cmp_name);
	*names = v;
	return r;
}

static int load_dir(struct cli *c, const char *dir, struct dotenv *d)
{
	char **names = NULL;
	struct stat st;
	size_t n = 0;
	int dfd, r, bad = 0;

	memset(d, 0, sizeof(*d));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	r = dfd < 0 || fstat(dfd, &st) < 0 ? -errno : list_dir(dfd, &names, &n);
	if (r < 0)
		cli_error("%s: %s", dir, strerror(-r));
	for (size_t i = 0; i < n; i++) {
		if (r == 0 && !load_one(c, dfd, st.st_uid, dir, names[i], d))
			bad++;
		free(names[i]);
	}
	free(names);
	if (dfd >= 0)
		close(dfd);
	return r < 0 || bad ? -1 : 0;
}

/* Stores every entry of d in the instance (created if need be), in one
 * transaction: 0, or 1 with the reason printed and nothing stored. */
static int store_all(struct cli *c, const char *inst, const struct dotenv *d)
{
	struct db_instance in;
	struct db_secret s;
	size_t fresh = 0;
	int r = cli_instance_open(c, inst, &in);

	for (size_t k = 0; r == 0 && k < d->n; k++)
		fresh += vault_secret_find(c->vault, in.id, d->e[k].name, &s) == -ENOENT;
	if (r < 0)
		cli_error("%s: %s; nothing was imported", inst, strerror(-r));
	else
		r = import_put(c, inst, &in, d, "imported");
	if (r == 0)
		printf("vaultfs: imported %zu key%s into %s (%zu new, %zu updated)\n", d->n,
		       d->n == 1 ? "" : "s", inst, fresh, d->n - fresh);
	return r < 0 ? 1 : 0;
}

int import_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "import", .usage = IMPORT_USAGE,
		.min_args = 1, .max_args = 1, .want = "want INSTANCE",
		.help = "Stores many secrets in INSTANCE at once, all or nothing: every problem\n"
			"is reported (with its line number) and then nothing is imported.\n"
			"Existing keys get a new version. Creates INSTANCE if needed.\n\n"
			"      --env FILE       a dotenv file (- for standard input): NAME=VALUE\n"
			"                       lines, # comments, an optional `export`, 'single'\n"
			"                       and \"double\" quotes (\\n \\t \\\\ \\\" escapes), quoted\n"
			"                       values over several lines; no ${VAR} expansion.\n"
			"                       Names: a letter or _, then letters, digits, _ . -\n"
			"                       (at most 128), not looking like a token\n"
			"      --any-name       with --env: take any key name (A-Z a-z 0-9 . _ -)\n"
			"      --dir DIR        one file per secret, named after it (a Docker or\n"
			"                       Kubernetes secrets directory): regular files only,\n"
			"                       owned by root or the directory's owner; symlinks\n"
			"                       followed only inside DIR; ..data entries skipped\n"
			"  -n, --dry-run        check and list what would be imported, store nothing\n",
	};
	struct import_opts o = { 0 };
	struct dotenv d = { 0 };
	int i, ret = 1;

	i = import_parse(&c, argc, argv, &o);
	if (!cli_name_ok("instance", argv[i]))
		return 1;
	if (cli_start(&c, 0, NULL) < 0)
		goto out;
	if (import_load(&c, &o, &d) < 0) {
		cli_error("nothing was imported");
		goto out;
	}
	if (o.dry_run) {
		import_dry_run(&d, "imported into", argv[i]);
		ret = 0;
	} else {
		ret = store_all(&c, argv[i], &d);
	}
out:
	dotenv_free(&d);
	cli_close(&c);
	return ret;
}

int import_parse(struct cli *c, int argc, char **argv, struct import_opts *o)
{
	static const struct option extra[] = {
		{ "env", required_argument, NULL, OPT_ENV },
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
		{ "any-name", no_argument, NULL, OPT_ANY_NAME },
		{ 0 },
	};
	int i = cli_parse(c, argc, argv, "n", extra, import_opt, o);

	if (!o->env == !o->dir)
		cli_usage_error(c, "want --env FILE or --dir DIR");
	return i;
}

int import_load(struct cli *c, const struct import_opts *o, struct dotenv *d)
{
	if (o->env)
		return load_env(c, o->env, o->any_name ? DOTENV_ANY_NAME : 0, d);
	return load_dir(c, o->dir, d);
}

void import_dry_run(const struct dotenv *d, const char *done, const char *inst)
{
	for (size_t k = 0; k < d->n; k++)
		printf("%s\n", d->e[k].name);
	printf("vaultfs: %zu key%s would be %s %s (dry run)\n", d->n, d->n == 1 ? "" : "s",
	       done, inst);
}

int import_put(struct cli *c, const char *inst, const struct db_instance *in,
	       const struct dotenv *d, const char *done)
{
	const char **names = calloc(d->n + 1, sizeof(*names));
	struct secbuf **values = calloc(d->n + 1, sizeof(*values));
	size_t at = d->n;
	int r = names && values ? 0 : -ENOMEM;

	for (size_t k = 0; r == 0 && k < d->n; k++) {
		names[k] = d->e[k].name;
		values[k] = d->e[k].value;
	}
	if (r == 0)
		r = vault_put_many(c->vault, in->id, d->n, names, values, getuid(), in->gid, &at);
	if (r == -EFBIG && at < d->n)
		cli_error("%s: larger than max_value_size (%zu bytes); nothing was %s",
			  names[at], c->conf.max_value_size, done);
	else if (r == -EMEDIUMTYPE && at < d->n)
		cli_error("%s/%s is a template, which a value does not replace; nothing was %s",
			  inst, names[at], done);
	else if (r < 0)
		cli_error("%s: %s; nothing was %s", inst, strerror(-r), done);
	free(names);
	free(values);
	return r;
}
