/* import's options and its readers of a dotenv file and of a secrets
 * directory, for apply: the same checks (a hostile directory's links,
 * fifos, devices, planted files, sizes), every problem reported; values in
 * locked memory. */
#ifndef VAULTFS_IMPORT_H
#define VAULTFS_IMPORT_H

#include <stdbool.h>

#include "dotenv.h"

struct cli;
struct db_instance;

/* What import and apply read: --env FILE [--any-name] or --dir DIR; -n. */
struct import_opts {
	const char *env;
	const char *dir;
	bool dry_run;
	bool any_name;
};

#define IMPORT_USAGE "[OPTIONS] INSTANCE (--env FILE [--any-name] | --dir DIR) [-n]"

/* Parses argv with those options for c's command: the index of the first
 * argument; a usage error exits. */
int import_parse(struct cli *c, int argc, char **argv, struct import_opts *o);
/* Reads the input o names: 0, or -1 once every problem was reported. */
int import_load(struct cli *c, const struct import_opts *o, struct dotenv *d) WUR;
/* Stores d's values in in, all in one transaction: 0, or -errno reported
 * as "...; nothing was <done>". */
int import_put(struct cli *c, const char *inst, const struct db_instance *in,
	       const struct dotenv *d, const char *done);
/* -n: the keys, and "N keys would be <done> INSTANCE (dry run)". */
void import_dry_run(const struct dotenv *d, const char *done, const char *inst);

#endif
