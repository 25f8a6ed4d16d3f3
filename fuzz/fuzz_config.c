/*
 * libFuzzer target: the INI configuration parser (src/config.c over inih).
 *
 * config_load() reads a path and checks the file's owner and mode, as for
 * the real file, so each input is written to a private 0600 file first.
 * Beyond not crashing, leaking or hitting undefined behaviour: a refused
 * file always comes with a "FILE..." message, and an accepted one holds
 * only what the rules allow.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../fs/name.h"
#include "../fs/policy.h"
#include "../src/config.h"

static char path[] = "/tmp/vaultfs-fuzz-config-XXXXXX";

static void remove_file(void)
{
	unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int fd = mkstemp(path);

	(void)argc;
	(void)argv;
	if (fd < 0) {
		perror("mkstemp");
		exit(1);
	}
	close(fd);
	atexit(remove_file);
	return 0;
}

static void put_file(const uint8_t *data, size_t size)
{
	FILE *f = fopen(path, "w");

	if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
		abort();
}

static void check_accepted(const struct vault_conf *c)
{
	const struct instance_conf *ic;

	if (c->max_value_size < 1 || c->max_value_size > POLICY_MAX_VALUE_LIMIT)
		abort();
	if (c->secret_mode & ~0777u)
		abort();
	/* The store: an absolute path (SQLite) or a PostgreSQL URI. */
	if ((c->db[0] != '/' && strncasecmp(c->db, "postgresql://", 13) != 0 &&
	     strncasecmp(c->db, "postgres://", 11) != 0) || c->mountpoint[0] != '/')
		abort();
	for (ic = c->instances; ic; ic = ic->next) {
		if (!name_valid(ic->name))
			abort();
		if ((ic->has_mode && (ic->mode & ~01777u)) ||
		    (ic->has_secret_mode && (ic->secret_mode & ~0777u)))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vault_conf c;
	char err[1024];
	int r;

	put_file(data, size);
	policy_defaults(&c);
	r = config_load(&c, path, err, sizeof(err));
	if (r == 0)
		check_accepted(&c);
	else if (r > 0 || strncmp(err, path, strlen(path)) != 0 || memchr(err, '\n', strlen(err)))
		abort();	/* errors are negative and one line naming the file */
	policy_free(&c);
	return 0;
}
