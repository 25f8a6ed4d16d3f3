/* What the subcommands share: options, config, the key and the vault. */
#ifndef VAULTFS_CLI_H
#define VAULTFS_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "../db/db.h"
#include "../fs/audit.h"
#include "../fs/vault_conf.h"

struct vault;
struct secbuf;

/* 1: an error; 2: a usage error; 3: "no": a check-and-set conflict, or an
 * expected key missing (vaultfs check). */
enum { EXIT_USAGE = 2, EXIT_NO = 3 };

struct cli {
	const char *cmd;
	const char *usage;		/* after "vaultfs CMD " */
	const char *help;		/* option lines for --help */
	/* The arguments after the options: min_args to max_args of them, else
	 * cli_parse's usage error is `want` ("want INSTANCE and KEY"); with no
	 * `want` the command counts them itself. */
	int min_args, max_args;
	const char *want;
	struct vault_conf conf;
	const char *config;		/* --config */
	const char *db;			/* --db */
	const char *key_file;		/* --key-file */
	struct vault *vault;
	/* What cli_start found: the instance (CLI_INSTANCE, CLI_SECRET) and the
	 * secret (CLI_SECRET) the arguments name. */
	struct db_instance in;
	struct db_secret secret;
};

/* Long options every subcommand takes, and the codes they come back as. */
enum { OPT_CONFIG = 0x100, OPT_DB, OPT_KEY_FILE, OPT_HELP };
/* Codes for the subcommands' own long options. */
enum { OPT_VERSION = 0x200, OPT_IF_VERSION, OPT_ALL, OPT_DELETED, OPT_NEW_KEY_FILE,
       OPT_INSTANCE, OPT_JSON, OPT_ENV, OPT_DIR, OPT_TYPE, OPT_VERBOSE, OPT_DRY_RUN,
       OPT_BACKUP_KEY_FILE, OPT_KEY, OPT_SINCE, OPT_VERIFY, OPT_PRUNE,
       OPT_EXPECT_HEAD, OPT_WORKER, OPT_TEST_HOLD, OPT_TEST_HOLD_REPLY, OPT_FD_STORE,
       OPT_EXPIRES, OPT_MAX_READS, OPT_EXPIRY_WARN };

/* Parses argv with the common options plus `extra` (NULL-terminated, may be
 * NULL) and `shortopts`; calls on_opt for the extra ones (nonzero: usage
 * error). Returns optind, or exits on --help (0) and usage errors (2). */
int cli_parse(struct cli *c, int argc, char **argv, const char *shortopts,
	      const struct option *extra, int (*on_opt)(int opt, const char *arg, void *ctx),
	      void *ctx);
/* Loads the config (given, or the default one if it exists) and applies the
 * command-line overrides. Prints the error and returns -1 on failure. */
int cli_load_config(struct cli *c);
/* Hardens the process, loads the master key and opens the vault, and its
 * audit log unless CLI_NO_AUDIT: for a command that reads no value and
 * changes nothing, so records nothing (and need not unseal the log's key). */
#define CLI_NO_AUDIT 0x100
int cli_open_vault(struct cli *c, int vault_flags);
/* What cli_start opens after the config: nothing (CLI_CONFIG_ONLY); else
 * the vault (with VAULT_READONLY, VAULT_BRIEF, CLI_NO_AUDIT as for
 * cli_open_vault) and,
 * in it, the instance names[0] (CLI_INSTANCE, into c->in) or the secret
 * names[0]/names[1] (CLI_SECRET, into c->in and c->secret). */
#define CLI_CONFIG_ONLY 0x200
#define CLI_INSTANCE 0x400
#define CLI_SECRET 0x800
/* The start-up the commands share: 0, or -1 with the error printed (the
 * command cli_close()s either way). */
int cli_start(struct cli *c, int flags, char *const *names);
/* Loads the master key alone (for init). */
int cli_load_key(struct cli *c, struct secbuf **key);
/* Loads another key from a file (rotate-key's new key, restore's old one);
 * errors are printed with `what` before them. */
int cli_load_key_file(const char *path, const char *what, struct secbuf **key);
void cli_close(struct cli *c);
/* Prints why the audit log of db could not be opened (r: -errno). */
void cli_audit_error(const char *db, int r);
/* The entry for a change this command makes, stored with the change
 * (audit_record_txn); returns e. */
struct audit_entry *cli_entry(struct audit_entry *e, enum audit_op op, const char *instance,
			      const char *key);
/* Records a CLI read, or a change's failure, in the audit log (a change's
 * success is stored with the change). */
void cli_audit(struct cli *c, enum audit_op op, const char *instance, const char *key,
	       int result);

/* A version number: digits only, at most INT64_MAX. */
int cli_parse_version(const char *s, int64_t *out);

/* Look-ups by name in the open vault; the error is printed (-1). */
/* Prints "invalid WHAT name ..." for a bad name. */
bool cli_name_ok(const char *what, const char *name);
int cli_find_instance(struct cli *c, const char *name, struct db_instance *in);
int cli_find_secret(struct cli *c, const char *inst, const char *key, struct db_secret *s);
/* The instance, created (owner, group and mode from the config, else the
 * caller's, 0700) if it doesn't exist; -errno, nothing printed. */
int cli_instance_open(struct cli *c, const char *name, struct db_instance *in);

/* No core dumps, not ptrace-able by other users, for any process that holds
 * keys or plaintext. */
void cli_harden(void);

void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_usage_error(const struct cli *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));

#endif
