/*
 * loadvault: fills a vault with many keys quickly, for the benchmarks.
 *
 *   loadvault DB KEY_FILE INSTANCE COUNT VALUE
 *
 * Creates INSTANCE (if missing) and the keys K000000 .. K<COUNT-1>, each
 * holding VALUE, through vault_put, so the rows are exactly what the mount
 * and the CLI write. The puts are batched in transactions of BATCH keys:
 * one fsync per batch instead of one per key.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../crypto/key.h"
#include "../crypto/secmem.h"
#include "../fs/policy.h"
#include "../fs/vault.h"

#define BATCH 10000

static int load(struct vault *v, int64_t inst, long count, const char *value)
{
	struct db *db = vault_db(v);
	char name[32];
	int r = 0;

	for (long i = 0; i < count && r == 0; i += BATCH) {
		r = db_begin(db);
		for (long j = i; r == 0 && j < count && j < i + BATCH; j++) {
			snprintf(name, sizeof(name), "K%06ld", j);
			r = vault_put(v, inst, name, (const unsigned char *)value, strlen(value),
				      0, 0, NULL);
		}
		if (r == 0)
			r = db_commit(db);
		else
			db_rollback(db);
	}
	return r;
}

int main(int argc, char **argv)
{
	struct key_source src = { 0 };
	struct vault_conf conf;
	struct secbuf *master = NULL;
	struct vault *v = NULL;
	struct db_instance in;
	char err[1024], warn[1024];
	int r, ret = 1;

	if (argc != 6) {
		fprintf(stderr, "usage: loadvault DB KEY_FILE INSTANCE COUNT VALUE\n");
		return 2;
	}
	policy_defaults(&conf);
	snprintf(conf.db, sizeof(conf.db), "%s", argv[1]);
	src.file = argv[2];
	if (secmem_init() < 0 || key_load(&master, &src, err, sizeof(err), warn, sizeof(warn)) < 0) {
		fprintf(stderr, "loadvault: cannot load the key: %s\n", err);
		goto out;
	}
	r = vault_open(&v, &conf, master, 0, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "loadvault: %s\n", err);
		goto out;
	}
	r = db_instance_find(vault_db(v), argv[3], &in);
	if (r == -ENOENT)
		r = vault_instance_create(v, argv[3], 0, 0, 0755, &in);
	if (r == 0)
		r = load(v, in.id, atol(argv[4]), argv[5]);
	if (r < 0) {
		fprintf(stderr, "loadvault: %s: %s\n", argv[3], strerror(-r));
		goto out;
	}
	ret = 0;
out:
	vault_close(v);
	secbuf_free(master);
	policy_free(&conf);
	return ret;
}
