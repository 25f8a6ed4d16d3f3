/* vaultfs template set|get, vaultfs render: templates without a mount.
 * Sources and rendered text pass only through locked memory and
 * stdin/stdout. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../crypto/secmem.h"
#include "../fs/template.h"
#include "../fs/vault.h"
#include "cli.h"
#include "commands.h"
#include "secio.h"

static int template_set(int argc, char **argv)
{
	struct cli c = {
		.cmd = "template set", .usage = "[OPTIONS] INSTANCE NAME < TEMPLATE",
		.min_args = 2, .max_args = 2,
		.want = "want INSTANCE and NAME (the template comes from standard input)",
		.help = "Stores the template read from standard input as INSTANCE/NAME, a new\n"
			"version if it exists. Through the mount, INSTANCE/NAME is then a\n"
			"read-only file rendered at each open. {{ KEY }} inserts the value of\n"
			"KEY of the same instance; {{ KEY | env }}, | docker, | json, | base64\n"
			"and | sh write it quoted for a dotenv file, docker's --env-file, JSON,\n"
			"base64 and a shell. {{ \"{{\" }} is a literal {{. A syntax error is\n"
			"reported as LINE:COLUMN and nothing is stored. See vaultfs(8),\n"
			"TEMPLATES.\n",
	};
	struct template_error te = { 0 };
	struct secbuf *src = NULL;
	struct audit_entry ae;
	struct db_instance in;
	struct db_secret t;
	const char *inst, *name;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, NULL, NULL, NULL);
	inst = argv[i];
	name = argv[i + 1];
	if (!cli_name_ok("instance", inst) || !cli_name_ok("template", name))
		return 1;
	if (cli_start(&c, 0, NULL) < 0)
		goto out;
	r = secbuf_new(&src, 4096);
	if (r == 0)
		r = secio_read(STDIN_FILENO, src, c.conf.max_value_size, false);
	if (r == -EFBIG) {
		cli_error("template too large: the limit is %zu bytes; nothing was changed",
			  c.conf.max_value_size);
		goto out;
	} else if (r < 0) {
		cli_error("cannot read the template: %s", strerror(-r));
		goto out;
	}
	if (template_check(src->data, src->len, &te) < 0) {
		cli_error("(standard input):%u:%u: %s; nothing was changed", te.line, te.col,
			  te.msg);
		goto out;
	}
	r = cli_instance_open(&c, inst, &in);
	if (r == 0)
		r = template_store(c.vault, in.id, name, src->data, src->len, getuid(), in.gid,
				   &te, cli_entry(&ae, AUDIT_WRITE, inst, name), &t);
	if (r < 0)
		cli_audit(&c, AUDIT_WRITE, inst, name, r);
	if (r == -EEXIST)
		cli_error("%s/%s is a secret, not a template; nothing was changed (vaultfs rm it "
			  "first to make it a template)", inst, name);
	else if (r < 0)
		cli_error("%s/%s: %s; nothing was changed", inst, name, strerror(-r));
	else
		ret = 0;
out:
	secbuf_free(src);
	cli_close(&c);
	return ret;
}

/* get: the source; render: what an open of it reads. */
static int template_show(int argc, char **argv, bool render)
{
	struct cli c = {
		.cmd = render ? "render" : "template get",
		.usage = "[OPTIONS] INSTANCE NAME",
		.min_args = 2, .max_args = 2, .want = "want INSTANCE and NAME",
		.help = render ?
			"Writes the template INSTANCE/NAME rendered from the current values,\n"
			"all read in one state of the instance, as the mount serves it. A key\n"
			"that is missing, that the template's owner may not read, or whose value\n"
			"a filter can't write fails it, naming the key; nothing is written.\n" :
			"Writes the source of the template INSTANCE/NAME, as stored.\n",
	};
	struct secbuf *src = NULL, *out = NULL;
	struct template_fail why = { 0 };
	struct db_secret t;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, NULL, NULL, NULL);
	if (cli_start(&c, CLI_SECRET, argv + i) < 0)
		goto out;
	t = c.secret;
	if (!(t.flags & TEMPLATE_FLAG)) {
		cli_error("%s/%s is a secret, not a template", argv[i], argv[i + 1]);
		goto out;
	}
	/* The keys come from one state (template_render checks it). */
	r = template_source(c.vault, &t, &src);
	if (r == 0 && render)
		r = template_render(c.vault, &t, src, NULL, &out, &why);
	cli_audit(&c, AUDIT_READ, argv[i], argv[i + 1], r);
	/* A rendering's failure names its key in the log, which is stderr. */
	if (r < 0 && !why.key[0])
		cli_error("%s/%s: %s", argv[i], argv[i + 1], strerror(-r));
	if (r < 0)
		goto out;
	r = render ? secmem_write_all(STDOUT_FILENO, out->data, out->len) :
		     secmem_write_all(STDOUT_FILENO, src->data, src->len);
	if (r < 0) {
		cli_error("standard output: %s", strerror(-r));
		goto out;
	}
	ret = 0;
out:
	secbuf_free(src);
	secbuf_free(out);
	cli_close(&c);
	return ret;
}

/* The verb may come before or after the common options (--db PATH...):
 * the first word that is not an option's value. */
static int verb_at(int argc, char **argv)
{
	for (int k = 1; k < argc; k++) {
		if (!strcmp(argv[k], "set") || !strcmp(argv[k], "get"))
			return k;
		if (argv[k][0] != '-')
			return -1;
		if (!strcmp(argv[k], "--db") || !strcmp(argv[k], "--config") ||
		    !strcmp(argv[k], "--key-file") || !strcmp(argv[k], "-c") ||
		    !strcmp(argv[k], "-k"))
			k++;
	}
	return -1;
}

int template_main(int argc, char **argv)
{
	int k = verb_at(argc, argv);
	bool set;

	if (k < 0 && argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: vaultfs template set [OPTIONS] INSTANCE NAME < TEMPLATE\n"
		       "       vaultfs template get [OPTIONS] INSTANCE NAME\n"
		       "       vaultfs render [OPTIONS] INSTANCE NAME\n\n"
		       "'vaultfs template set --help' describes the syntax.\n");
		return 0;
	}
	if (k < 0) {
		fprintf(stderr, "usage: vaultfs template (set|get) [OPTIONS] INSTANCE NAME\n");
		return EXIT_USAGE;
	}
	set = !strcmp(argv[k], "set");
	/* Drop the verb: the rest parses as one command's arguments. */
	memmove(&argv[k], &argv[k + 1], (size_t)(argc - k) * sizeof(*argv));
	argc--;
	return set ? template_set(argc, argv) : template_show(argc, argv, false);
}

int render_main(int argc, char **argv)
{
	return template_show(argc, argv, true);
}
