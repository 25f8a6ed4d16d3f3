/*
 * libFuzzer target: a database file as vaultfs mount finds it.
 *
 * Each input is the whole vault.db. It is opened as the mount opens it
 * (vault_open with a fixed master key, then db_check_integrity), and if that works,
 * every instance and every secret is listed and read. A damaged file must
 * be refused or read as errors: no crash, leak or undefined behaviour, and
 * a value comes back only together with success.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../fs/policy.h"
#include "../fs/vault.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[] = "/dev/shm/vaultfs-fuzz-db-XXXXXX";
static char path[sizeof(dir) + 16];
static struct vault_conf conf;
static struct secbuf *master;

static void unlink_db(void)
{
	char p[sizeof(path) + 8];

	unlink(path);
	snprintf(p, sizeof(p), "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", path);
	unlink(p);
}

static void cleanup(void)
{
	unlink_db();
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (secmem_init() < 0 || !mkdtemp(dir))
		abort();
	secmem_allow_unlocked(true);
	snprintf(path, sizeof(path), "%s/vault.db", dir);
	atexit(cleanup);
	policy_defaults(&conf);
	snprintf(conf.db, sizeof(conf.db), "%s", path);
	/* The seeds were made with this key: 64 hex digits "42". */
	if (secbuf_new(&master, 32) < 0)
		abort();
	memset(master->data, 0x42, 32);
	master->len = 32;
	return 0;
}

struct walk {
	struct vault *v;
	int64_t ids[64];
	size_t n;
};

static int secret_cb(void *ctx, const struct db_secret *s)
{
	struct walk *w = ctx;

	if (w->n < sizeof(w->ids) / sizeof(w->ids[0]))
		w->ids[w->n++] = s->id;
	return 0;
}

static int instance_cb(void *ctx, const struct db_instance *in)
{
	struct walk *w = ctx;
	struct secbuf *val;
	struct db_secret meta;
	int r;

	w->n = 0;
	(void)db_secret_each(vault_db(w->v), in->id, 0, secret_cb, w);
	for (size_t i = 0; i < w->n; i++) {
		val = NULL;
		r = vault_read(w->v, w->ids[i], &val, &meta);
		if ((r == 0) != (val != NULL))
			abort();
		secbuf_free(val);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct walk w = { 0 };
	char err[1024];
	FILE *f;

	unlink_db();
	f = fopen(path, "w");
	if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
		abort();
	if (vault_open(&w.v, &conf, master, 0, err, sizeof(err)) != 0) {
		if (!err[0])
			abort();	/* a refusal always says why */
		return 0;
	}
	if (db_check_integrity(vault_db(w.v)) == 0)
		(void)db_instance_each(vault_db(w.v), 0, instance_cb, &w);
	vault_close(w.v);
	return 0;
}
