/* Options, config and vault set-up shared by the subcommands. Errors are one
 * line on stderr, "vaultfs: ...", and never contain key material. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../crypto/key.h"
#include "../crypto/secmem.h"
#include "../fs/name.h"
#include "../fs/audit.h"
#include "../fs/policy.h"
#include "../fs/vault.h"
#include "cli.h"
#include "config.h"

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("vaultfs: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void cli_usage_error(const struct cli *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "vaultfs %s: ", c->cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: vaultfs %s %s\n(see: vaultfs %s --help)\n", c->cmd, c->usage,
		c->cmd);
	exit(EXIT_USAGE);
}

static const char common_help[] =
	"  -c, --config FILE    configuration file (default " CONFIG_DEFAULT_PATH " if present)\n"
	"      --db PATH        vault database (overrides the config)\n"
	"  -k, --key-file PATH  master key file: 32 raw bytes or 64 hex characters;\n"
	"                       without it: $VAULTFS_KEY, then $CREDENTIALS_DIRECTORY/vaultfs.key\n"
	"  -h, --help           this help\n"
	"Options may come before or after the arguments; -- ends them (for a name\n"
	"that begins with -).\n";

static void print_help(const struct cli *c)
{
	printf("usage: vaultfs %s %s\n\n%s\noptions:\n%s%s", c->cmd, c->usage,
	       c->help ? c->help : "", common_help, "");
}

/* The common options, then the command's own (at most 27 of them). */
static void cli_options(struct option opts[32], const struct option *extra)
{
	static const struct option common[] = {
		{ "config", required_argument, NULL, OPT_CONFIG },
		{ "db", required_argument, NULL, OPT_DB },
		{ "key-file", required_argument, NULL, OPT_KEY_FILE },
		{ "help", no_argument, NULL, OPT_HELP },
	};
	size_t n = 0;

	for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++)
		opts[n++] = common[i];
	for (; extra && extra->name && n < 31; extra++)
		opts[n++] = *extra;
	memset(&opts[n], 0, sizeof(opts[n]));
}

int cli_parse(struct cli *c, int argc, char **argv, const char *shortopts,
	      const struct option *extra, int (*on_opt)(int opt, const char *arg, void *ctx),
	      void *ctx)
{
	struct option opts[32];
	char sopts[64];
	int opt;

	cli_options(opts, extra);
	snprintf(sopts, sizeof(sopts), "c:k:h%s", shortopts ? shortopts : "");
	policy_defaults(&c->conf);
	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, sopts, opts, NULL)) != -1) {
		switch (opt) {
		case 'c': case OPT_CONFIG:
			c->config = optarg;
			break;
		case OPT_DB:
			c->db = optarg;
			break;
		case 'k': case OPT_KEY_FILE:
			c->key_file = optarg;
			break;
		case 'h': case OPT_HELP:
			print_help(c);
			exit(0);
		case '?':
			if (optopt)
				cli_usage_error(c, "option -%c is unknown or needs a value", optopt);
			cli_usage_error(c, "unknown option %s", argv[optind - 1]);
		case ':':
			cli_usage_error(c, "option %s needs a value", argv[optind - 1]);
		default:
			if (!on_opt || on_opt(opt, optarg, ctx) != 0)
				cli_usage_error(c, "bad option %s", argv[optind - 1]);
		}
	}
	if (c->want && (argc - optind < c->min_args || argc - optind > c->max_args))
		cli_usage_error(c, "%s", c->want);
	return optind;
}

static int set_path(char dst[PATH_MAX], const char *src, const char *what)
{
	char *abs;
	int n;

	/* A PostgreSQL store's URI is no file name: kept as given. */
	if (!strncasecmp(src, "postgresql://", 13) || !strncasecmp(src, "postgres://", 11))
		abs = strdup(src);
	else
		abs = realpath(src, NULL);

	/* A file that doesn't exist yet (init) keeps the absolute form of its
	 * name; the daemon changes directory to / and must still find it. */
	if (abs) {
		n = snprintf(dst, PATH_MAX, "%s", abs);
		free(abs);
	} else if (src[0] == '/') {
		n = snprintf(dst, PATH_MAX, "%s", src);
	} else {
		char cwd[PATH_MAX];

		if (!getcwd(cwd, sizeof(cwd))) {
			cli_error("%s %s: %s", what, src, strerror(errno));
			return -1;
		}
		n = snprintf(dst, PATH_MAX, "%s/%s", cwd, src);
	}
	if (n < 0 || n >= PATH_MAX) {
		cli_error("%s %s: path too long", what, src);
		return -1;
	}
	return 0;
}

int cli_load_config(struct cli *c)
{
	const char *path = c->config;
	char err[1024];

	if (!path && access(CONFIG_DEFAULT_PATH, F_OK) == 0)
		path = CONFIG_DEFAULT_PATH;
	if (path && config_load(&c->conf, path, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		goto fail;
	}
	if (c->db && set_path(c->conf.db, c->db, "database") < 0)
		goto fail;
	if (c->key_file && set_path(c->conf.key_file, c->key_file, "key file") < 0)
		goto fail;
	secmem_allow_unlocked(c->conf.allow_unlocked_memory);
	secmem_set_budget(c->conf.memlock_budget);
	return 0;
fail:
	policy_free(&c->conf);
	return -1;
}

void cli_harden(void)
{
	struct rlimit rl = { 0, 0 };

	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	setrlimit(RLIMIT_CORE, &rl);
}

int cli_load_key(struct cli *c, struct secbuf **key)
{
	struct key_source src = { .file = c->conf.key_file };
	char err[1024], warn[1024];

	cli_harden();
	if (secmem_init() < 0) {
		cli_error("cannot initialize libsodium");
		return -1;
	}
	if (key_load(key, &src, err, sizeof(err), warn, sizeof(warn)) < 0) {
		cli_error("%s", err);
		return -1;
	}
	if (warn[0])
		cli_error("warning: %s", warn);
	return 0;
}

int cli_load_key_file(const char *path, const char *what, struct secbuf **key)
{
	struct key_source src = { .file = path };
	char err[1024], warn[1024];

	if (key_load(key, &src, err, sizeof(err), warn, sizeof(warn)) < 0) {
		cli_error("%s %s", what, err);
		return -1;
	}
	if (warn[0])
		cli_error("warning: %s %s", what, warn);
	return 0;
}

static int cli_open_audit(struct cli *c, int vault_flags);

int cli_open_vault(struct cli *c, int vault_flags)
{
	struct secbuf *key = NULL;
	char err[1024];
	int r;

	if (cli_load_key(c, &key) < 0)
		return -1;
	r = vault_open(&c->vault, &c->conf, key, vault_flags & ~CLI_NO_AUDIT, err, sizeof(err));
	secbuf_free(key);
	if (r < 0) {
		cli_error("%s", err);
		return -1;
	}
	return cli_open_audit(c, vault_flags);
}

void cli_audit_error(const char *db, int r)
{
	if (r == -EKEYREJECTED)
		cli_error("%s: cannot open the audit log: its key is not sealed for this master "
			  "key (damaged, or a master key rotation did not re-seal it)", db);
	else
		cli_error("%s: cannot open the audit log: %s%s", db, strerror(-r),
			  r == -EPROTO ? " (is the database older than this vaultfs?)" : "");
}

/* Every command that opens the vault records what it reads and changes, and
 * refuses to run when the log can't be written. */
static int cli_open_audit(struct cli *c, int vault_flags)
{
	struct audit *a = NULL;
	int r;

	if (!c->conf.daemon.audit || (vault_flags & (VAULT_READONLY | CLI_NO_AUDIT)))
		return 0;
	r = vault_audit_open(c->vault, &c->conf.daemon, &a);
	if (r < 0) {
		cli_audit_error(c->conf.db, r);
		return -1;
	}
	vault_set_audit(c->vault, a);
	return 0;
}

struct audit_entry *cli_entry(struct audit_entry *e, enum audit_op op, const char *instance,
			      const char *key)
{
	e->who = NULL;
	e->op = op;
	e->instance = instance;
	e->key = key;
	e->detail = "vaultfs CLI";
	return e;
}

void cli_audit(struct cli *c, enum audit_op op, const char *instance, const char *key,
	       int result)
{
	audit_record(vault_audit(c->vault), NULL, op, instance, key, result, "vaultfs CLI");
}

void cli_close(struct cli *c)
{
	if (c->vault) {
		audit_close(vault_audit(c->vault));
		vault_set_audit(c->vault, NULL);
	}
	vault_close(c->vault);
	c->vault = NULL;
	policy_free(&c->conf);
}

bool cli_name_ok(const char *what, const char *name)
{
	if (name_valid(name))
		return true;
	cli_error("invalid %s name '%s' (1-255 of A-Z a-z 0-9 . _ -)", what, name);
	return false;
}

int cli_find_instance(struct cli *c, const char *name, struct db_instance *in)
{
	int r;

	if (!cli_name_ok("instance", name))
		return -1;
	r = vault_instance_find(c->vault, name, in);
	if (r == -ENOENT)
		cli_error("no such instance: %s", name);
	else if (r < 0)
		cli_error("%s: %s", name, strerror(-r));
	return r < 0 ? -1 : 0;
}

static int find_secret_in(struct cli *c, const struct db_instance *in, const char *key,
			  struct db_secret *s)
{
	int r;

	if (!cli_name_ok("key", key))
		return -1;
	r = vault_secret_find(c->vault, in->id, key, s);
	if (r == -ENOENT)
		cli_error("no such key: %s/%s", in->name, key);
	else if (r < 0)
		cli_error("%s/%s: %s", in->name, key, strerror(-r));
	return r < 0 ? -1 : 0;
}

int cli_find_secret(struct cli *c, const char *inst, const char *key, struct db_secret *s)
{
	struct db_instance in;

	if (cli_find_instance(c, inst, &in) < 0)
		return -1;
	return find_secret_in(c, &in, key, s);
}

int cli_start(struct cli *c, int flags, char *const *names)
{
	struct db *db;
	int r = 0;

	if (cli_load_config(c) < 0)
		return -1;
	if (flags & CLI_CONFIG_ONLY)
		return 0;
	if (cli_open_vault(c, flags & (VAULT_READONLY | VAULT_BRIEF | CLI_NO_AUDIT)) < 0)
		return -1;
	if (!(flags & (CLI_INSTANCE | CLI_SECRET)))
		return 0;
	db = vault_db(c->vault);
	db_read_begin(db);	/* the instance and the secret in one snapshot */
	if (cli_find_instance(c, names[0], &c->in) < 0)
		r = -1;
	if (r == 0 && (flags & CLI_SECRET) && find_secret_in(c, &c->in, names[1], &c->secret) < 0)
		r = -1;
	db_read_end(db);
	return r;
}

int cli_instance_open(struct cli *c, const char *name, struct db_instance *in)
{
	const struct instance_conf *ic;
	int r = vault_instance_find(c->vault, name, in);

	if (r != -ENOENT)
		return r;
	ic = policy_instance(&c->conf, name);
	r = vault_instance_create(c->vault, name, ic && ic->has_owner ? ic->owner : getuid(),
				  ic && ic->has_group ? ic->group : getgid(),
				  ic && ic->has_mode ? ic->mode : 0700, in);
	if (r == 0)
		cli_error("created instance %s", name);
	return r;
}

int cli_parse_version(const char *s, int64_t *out)
{
	int64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (INT64_MAX - (*s - '0')) / 10)
			return -EINVAL;
		v = v * 10 + (*s - '0');
	}
	*out = v;
	return 0;
}
