/* vaultfs apply: several keys of an instance replaced in one transaction,
 * so that a template over them renders all old or all new values. The
 * input is read and checked as import reads it (src/cmd_import.c); only
 * then is anything stored, all or nothing. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../crypto/secmem.h"
#include "../fs/template.h"
#include "../fs/vault.h"
#include "cli.h"
#include "commands.h"
#include "dotenv.h"
#include "import.h"

/* Names that would replace a template: reported, -1. */
static int refuse_templates(struct cli *c, const char *inst, const struct db_instance *in,
			    const struct dotenv *d)
{
	struct db_secret s;
	int bad = 0;

	for (size_t k = 0; k < d->n; k++)
		if (vault_secret_find(c->vault, in->id, d->e[k].name, &s) == 0 &&
		    (s.flags & TEMPLATE_FLAG)) {
			cli_error("%s/%s is a template: apply changes values only", inst,
				  d->e[k].name);
			bad++;
		}
	return bad ? -1 : 0;
}

int apply_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "apply", .usage = IMPORT_USAGE,
		.min_args = 1, .max_args = 1, .want = "want INSTANCE",
		.help = "Replaces the keys named in the input, in INSTANCE, in one transaction:\n"
			"every reader, and every rendering of a template over them, sees all\n"
			"old or all new values. Keys the input does not name are left as they\n"
			"are. The input is read as import reads it (see: vaultfs import --help);\n"
			"any problem is reported and nothing is changed. Templates are refused.\n\n"
			"      --env FILE       a dotenv file (- for standard input)\n"
			"      --any-name       with --env: take any key name\n"
			"      --dir DIR        one file per key, named after it\n"
			"  -n, --dry-run        check and list the keys, change nothing\n",
	};
	struct import_opts o = { 0 };
	struct dotenv d = { 0 };
	struct db_instance in;
	int i, r, ret = 1;

	i = import_parse(&c, argc, argv, &o);
	if (!cli_name_ok("instance", argv[i]))
		return 1;
	if (cli_start(&c, CLI_INSTANCE, argv + i) < 0)
		goto out;
	in = c.in;
	r = import_load(&c, &o, &d);
	if (r == 0 && d.n == 0) {
		cli_error("%s: no keys in the input", o.env ? o.env : o.dir);
		r = -1;
	}
	if (r == 0)
		r = refuse_templates(&c, argv[i], &in, &d);
	if (r < 0) {
		cli_error("nothing was changed");
		goto out;
	}
	if (o.dry_run) {
		import_dry_run(&d, "replaced in", argv[i]);
		ret = 0;
		goto out;
	}
	if (import_put(&c, argv[i], &in, &d, "changed") < 0)
		goto out;
	for (size_t k = 0; k < d.n; k++)
		cli_audit(&c, AUDIT_WRITE, argv[i], d.e[k].name, 0);
	printf("vaultfs: applied %zu key%s to %s in one transaction\n", d.n,
	       d.n == 1 ? "" : "s", argv[i]);
	ret = 0;
out:
	dotenv_free(&d);
	cli_close(&c);
	return ret;
}
