/* import's readers of a dotenv file and of a secrets directory, for apply:
 * the same checks (a hostile directory's links, fifos, devices, planted
 * files, sizes), every problem reported; values in locked memory. */
#ifndef VAULTFS_IMPORT_H
#define VAULTFS_IMPORT_H

#include "dotenv.h"

struct cli;

/* 0, or -1 once every problem was reported. path "-" is standard input. */
int import_load_env(struct cli *c, const char *path, unsigned flags, struct dotenv *d) WUR;
int import_load_dir(struct cli *c, const char *dir, struct dotenv *d) WUR;

#endif
