/* The vault's cache of unwrapped instance data keys, and the instances
 * themselves (created with a fresh data key, deleted with their trash).
 * The rules of vault.c hold here: data keys only in locked memory, wiped
 * when the vault closes or the instance goes. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../crypto/mac.h"
#include "../crypto/seal.h"
#include "../db/db_versions.h"
#include "audit.h"
#include "log.h"
#include "name.h"
#include "vault_int.h"

static void key_free(struct inst_key *k)
{
	secbuf_free(k->key);
	free(k);
}

static struct inst_key *key_lookup(struct vault *v, int64_t id)
{
	for (struct inst_key *k = v->keys; k; k = k->next)
		if (k->id == id && !k->dead)
			return k;
	return NULL;
}

/* After a master-key rotation by another process our wrapping key is
 * stale: 0 if it was replaced by a current one (worth trying again). */
static int wrap_renew(struct vault *v)
{
	char err[512];
	int r = vault_wrap_check(v);

	if (r != -EKEYREJECTED)
		return -EAGAIN;
	r = vault_reload_key(v, err, sizeof(err));
	if (r < 0)
		log_err("the master key was rotated and ours is stale: %s", err);
	return r;
}

/* Unwraps an instance's data key without holding keys_lock, so the lock
 * order never meets the store's. */
static int key_unwrap(struct vault *v, int64_t id, struct inst_key **out)
{
	struct db_blob blob = { 0 };
	struct db_instance in;
	struct inst_key *k;
	struct seal_ad ad;
	int r;

	r = db_instance_key(v->db, id, &in, &blob);
	if (r < 0)
		return r;
	k = calloc(1, sizeof(*k));
	if (!k) {
		db_blob_free(&blob);
		return -ENOMEM;
	}
	k->id = id;
	k->generation = in.generation;
	memcpy(k->name, in.name, sizeof(k->name));
	seal_ad_wrap(&ad, in.name, in.generation);
	r = vault_wrap_open(v, &ad, &blob, &k->key);
	if ((r == -EBADMSG || r == -EINVAL) && wrap_renew(v) == 0)
		r = vault_wrap_open(v, &ad, &blob, &k->key);
	db_blob_free(&blob);
	if (r < 0 || k->key->len != SEAL_KEY_LEN) {
		if (r == -EBADMSG || r == -EINVAL || r == 0) {
			log_err("instance %s: its data key does not authenticate (tampered or "
				"damaged database)", in.name);
			audit_authfail(v->audit, in.name, "");
			r = -EIO;
		}
		key_free(k);
		return r;
	}
	*out = k;
	return 0;
}

bool vault_instance_name_cached(struct vault *v, int64_t id, char name[static DB_NAME_MAX + 1])
{
	struct inst_key *k;

	pthread_mutex_lock(&v->keys_lock);
	k = key_lookup(v, id);
	if (k)
		memcpy(name, k->name, DB_NAME_MAX + 1);
	pthread_mutex_unlock(&v->keys_lock);
	return k != NULL;
}

int vault_key_get(struct vault *v, int64_t id, struct inst_key **out)
{
	struct secmem_account *acct;
	struct inst_key *k, *fresh = NULL;
	int r;

	pthread_mutex_lock(&v->keys_lock);
	k = key_lookup(v, id);
	if (k)
		k->refs++;
	pthread_mutex_unlock(&v->keys_lock);
	if (k) {
		*out = k;
		return 0;
	}
	/* The cache's, not the user's whose open brought it here. */
	acct = secmem_use(NULL);
	r = key_unwrap(v, id, &fresh);
	secmem_use(acct);
	if (r < 0)
		return r;
	pthread_mutex_lock(&v->keys_lock);
	k = key_lookup(v, id);
	if (!k) {
		k = fresh;
		fresh = NULL;
		k->next = v->keys;
		v->keys = k;
	}
	k->refs++;
	pthread_mutex_unlock(&v->keys_lock);
	if (fresh)
		key_free(fresh);
	*out = k;
	return 0;
}

void vault_key_put(struct vault *v, struct inst_key *k)
{
	struct inst_key **pp;

	pthread_mutex_lock(&v->keys_lock);
	if (--k->refs == 0 && k->dead) {
		for (pp = &v->keys; *pp; pp = &(*pp)->next) {
			if (*pp == k) {
				*pp = k->next;
				break;
			}
		}
		key_free(k);
	}
	pthread_mutex_unlock(&v->keys_lock);
}

void vault_key_forget(struct vault *v, int64_t id)
{
	struct inst_key *k;

	pthread_mutex_lock(&v->keys_lock);
	k = key_lookup(v, id);
	if (k) {
		k->dead = true;
		k->refs++;
	}
	pthread_mutex_unlock(&v->keys_lock);
	if (k)
		vault_key_put(v, k);
}

void vault_keys_flush(struct vault *v)
{
	struct inst_key **pp = &v->keys, *k;

	pthread_mutex_lock(&v->keys_lock);
	while ((k = *pp)) {
		k->dead = true;
		if (k->refs == 0) {
			*pp = k->next;
			key_free(k);
		} else {
			pp = &k->next;
		}
	}
	pthread_mutex_unlock(&v->keys_lock);
}

bool vault_key_stale(struct vault *v, const struct inst_key *k)
{
	struct db_instance in;

	if (db_instance_get(v->db, k->id, &in) < 0 || in.generation == k->generation)
		return false;
	vault_key_forget(v, k->id);
	return true;
}

int vault_key_current(struct vault *v, int64_t id, struct inst_key **out)
{
	int r = vault_key_get(v, id, out);

	if (r == 0 && vault_key_stale(v, *out)) {
		vault_key_put(v, *out);
		r = vault_key_get(v, id, out);
	}
	return r;
}

int vault_wrap_current(struct vault *v)
{
	int r = vault_wrap_check(v);

	if (r == -EKEYREJECTED)
		r = wrap_renew(v) == 0 ? 0 : -EKEYREJECTED;
	return r;
}

int vault_instance_create(struct vault *v, const char *name, uid_t uid, gid_t gid,
			  mode_t mode, struct db_instance *out)
{
	struct secbuf *dk = NULL;
	struct db_blob blob = { 0 };
	struct db_instance in = { 0 };
	struct seal_ad ad;
	int r;

	if (!name_valid(name))
		return -EINVAL;
	snprintf(in.name, sizeof(in.name), "%s", name);
	in.uid = uid;
	in.gid = gid;
	in.mode = mode & 07777;
	in.generation = 1;
	r = seal_keygen(&dk);
	if (r < 0)
		return r;
	seal_ad_wrap(&ad, name, in.generation);
	r = db_begin(v->db);
	if (r < 0)
		goto out;
	r = vault_wrap_current(v);
	if (r == 0)
		r = vault_wrap_seal(v, &ad, dk->data, dk->len, &blob);
	if (r == 0)
		r = db_instance_create(v->db, &in, &blob);
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	if (r == 0 && out)
		*out = in;
out:
	secbuf_free(dk);
	db_blob_free(&blob);
	return r;
}

int vault_instance_delete(struct vault *v, int64_t id)
{
	int r = db_begin(v->db);

	if (r < 0)
		return r;
	/* Its deleted secrets can't outlive the data key that opens them. */
	r = db_trash_purge(v->db, id, NULL, INT64_MAX, NULL);
	if (r == 0)
		r = db_instance_delete(v->db, id);
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	if (r == 0)
		vault_key_forget(v, id);
	return r;
}


void vault_key_cache_free(struct vault *v)
{
	struct inst_key *k, *next;

	for (k = v->keys; k; k = next) {
		next = k->next;
		key_free(k);
	}
	v->keys = NULL;
}
