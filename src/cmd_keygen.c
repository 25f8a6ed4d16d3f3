/* vaultfs keygen, vaultfs init. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../crypto/key.h"
#include "../crypto/secmem.h"
#include "../fs/vault.h"
#include "cli.h"
#include "commands.h"

static int keygen_opt(int opt, const char *arg, void *ctx)
{
	if (opt != 'o')
		return -1;
	*(const char **)ctx = arg;
	return 0;
}

int keygen_main(int argc, char **argv)
{
	static const struct option extra[] = {
		{ "out", required_argument, NULL, 'o' }, { 0 },
	};
	struct cli c = {
		.cmd = "keygen", .usage = "[--out FILE]",
		.help = "Makes a new random master key: 64 hex characters on standard output,\n"
			"or written to FILE with mode 0600 (an existing FILE is never replaced).\n",
	};
	struct secbuf *hex = NULL;
	const char *out = NULL;
	int r, ret = 1;

	if (cli_parse(&c, argc, argv, "o:", extra, keygen_opt, &out) != argc)
		cli_usage_error(&c, "unexpected argument");
	cli_harden();
	if (secmem_init() < 0 || key_generate_hex(&hex) < 0) {
		cli_error("cannot make a key in locked memory");
		return 1;
	}
	if (out) {
		r = key_write_file(out, hex);
		if (r == -EEXIST)
			cli_error("%s already exists; refusing to overwrite a key file", out);
		else if (r < 0)
			cli_error("%s: %s", out, strerror(-r));
		else
			ret = 0;
	} else {
		hex->data[hex->len] = '\n';
		ret = write(STDOUT_FILENO, hex->data, hex->len + 1) == (ssize_t)hex->len + 1 ? 0 : 1;
		if (ret)
			cli_error("cannot write the key to standard output");
	}
	secbuf_free(hex);
	return ret;
}

int init_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "init", .usage = "[--config FILE] [--db PATH] [--key-file PATH]",
		.help = "Creates a new, empty vault at the database path, checkable with the\n"
			"master key given. An existing file is never overwritten.\n",
	};
	struct secbuf *key = NULL;
	char err[1024];
	int ret = 1;

	if (cli_parse(&c, argc, argv, NULL, NULL, NULL, NULL) != argc)
		cli_usage_error(&c, "unexpected argument");
	if (cli_start(&c, CLI_CONFIG_ONLY, NULL) < 0 || cli_load_key(&c, &key) < 0)
		goto out;
	if (vault_init(c.conf.db, key, err, sizeof(err)) < 0) {
		cli_error("%s", err);
		goto out;
	}
	fprintf(stderr, "vaultfs: created vault %s\n", c.conf.db);
	ret = 0;
out:
	secbuf_free(key);
	cli_close(&c);
	return ret;
}
