/*
 * The vault: where sealed blobs meet the keys that open them. Rules this
 * file keeps:
 *  - the master key is used only to derive the wrapping key and is not kept;
 *  - instance data keys are unwrapped into locked memory, cached, and
 *    wiped when the vault closes or the instance goes;
 *  - a value is sealed for (instance, key, version), and a new version is
 *    written in one transaction, so readers see the old value or the new;
 *  - a blob that fails to authenticate is logged by name and yields -EIO,
 *    never bytes.
 */
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
#include "template.h"
#include "vault_int.h"

static const unsigned char check_plain[] = "vaultfs master key check";

struct inst_state {
	int64_t id, seq;
	size_t n, cap;
	int64_t *ids;
	uint64_t *vers;
	struct inst_state *next;
};

static void state_free(struct inst_state *st)
{
	if (!st)
		return;
	free(st->ids);
	free(st->vers);
	free(st);
}


struct db *vault_db(struct vault *v)
{
	return v->db;
}

const struct vault_conf *vault_conf(struct vault *v)
{
	return v->conf;
}

const struct secbuf *vault_audit_key(struct vault *v)
{
	return v->audit_key;
}

void vault_set_audit(struct vault *v, struct audit *a)
{
	v->audit = a;
}

struct audit *vault_audit(struct vault *v)
{
	return v ? v->audit : NULL;
}

int vault_seal_blob(struct db_blob *out, const struct secbuf *key, const struct seal_ad *ad,
		    const unsigned char *pt, size_t len)
{
	return seal_seal(&out->data, &out->len, key->data, ad, pt, len);
}

unsigned vault_keep_old(const struct vault *v)
{
	return v->conf->versions > 0 ? v->conf->versions - 1 : 0;
}

int64_t vault_undelete_since(const struct vault *v)
{
	return db_now_ns() - v->conf->undelete_window * 1000000000;
}

int vault_check_value(const struct secbuf *wrap, struct db_blob *out)
{
	struct seal_ad ad;

	seal_ad_check(&ad, 2);
	return vault_seal_blob(out, wrap, &ad, check_plain, sizeof(check_plain));
}

int vault_init(const char *db_path, const struct secbuf *master, char *err, size_t errlen)
{
	struct secbuf *wrap = NULL, *row_key = NULL;
	struct db_blob blob = { 0 }, kblob = { 0 };
	struct db *db = NULL;
	int r;

	r = db_open(&db, db_path, DB_CREATE);
	if (r < 0) {
		snprintf(err, errlen, "%s: %s", db_path, r == -EEXIST ?
			 "already exists; refusing to overwrite it" : db_errmsg(NULL));
		return r;
	}
	r = seal_derive(&wrap, master->data, SEAL_SUBKEY_WRAP);
	if (r == 0)
		r = vault_check_value(wrap, &blob);
	if (r == 0)
		r = db_meta_set(db, VAULT_META_CHECK, blob.data, blob.len);
	if (r == 0)
		r = seal_keygen(&row_key);
	if (r == 0)
		r = vault_row_key_seal(wrap, row_key, &kblob);
	if (r == 0)
		r = db_meta_set(db, VAULT_META_ROW_KEY, kblob.data, kblob.len);
	if (r < 0)
		snprintf(err, errlen, "%s: cannot initialize: %s", db_path, strerror(-r));
	db_blob_free(&blob);
	db_blob_free(&kblob);
	secbuf_free(wrap);
	secbuf_free(row_key);
	db_close(db);
	if (r < 0)
		unlink(db_path);
	return r;
}

int vault_wrap_seal(struct vault *v, const struct seal_ad *ad, const unsigned char *pt,
		    size_t len, struct db_blob *out)
{
	int r;

	pthread_rwlock_rdlock(&v->wrap_lock);
	r = vault_seal_blob(out, v->wrap, ad, pt, len);
	pthread_rwlock_unlock(&v->wrap_lock);
	return r;
}

int vault_wrap_open(struct vault *v, const struct seal_ad *ad, const struct db_blob *blob,
		    struct secbuf **out)
{
	int r;

	pthread_rwlock_rdlock(&v->wrap_lock);
	r = seal_open(out, v->wrap->data, ad, blob->data, blob->len);
	pthread_rwlock_unlock(&v->wrap_lock);
	return r;
}

int vault_keys_derive(struct vault_keys *k, const struct secbuf *master)
{
	int r;

	*k = (struct vault_keys){ 0 };
	r = seal_derive(&k->wrap, master->data, SEAL_SUBKEY_WRAP);
	if (r == 0)
		r = seal_derive(&k->audit, master->data, SEAL_SUBKEY_AUDIT);
	if (r < 0)
		vault_keys_free(k);
	return r;
}

void vault_keys_free(struct vault_keys *k)
{
	secbuf_free(k->wrap);
	secbuf_free(k->audit);
	*k = (struct vault_keys){ 0 };
}

void vault_wrap_replace(struct vault *v, struct vault_keys *k)
{
	struct vault_keys old;

	pthread_rwlock_wrlock(&v->wrap_lock);
	old = (struct vault_keys){ v->wrap, v->audit_key };
	v->wrap = k->wrap;
	v->audit_key = k->audit;
	pthread_rwlock_unlock(&v->wrap_lock);
	*k = (struct vault_keys){ 0 };
	vault_keys_free(&old);
}

static void row_mac(void *ctx, const unsigned char *msg, size_t len,
		    unsigned char out[DB_MAC_LEN])
{
	struct vault *v = ctx;

	pthread_rwlock_rdlock(&v->wrap_lock);
	mac_compute(out, v->row_key->data, msg, len);
	pthread_rwlock_unlock(&v->wrap_lock);
}

int vault_row_key_seal(const struct secbuf *wrap, const struct secbuf *row_key,
		       struct db_blob *out)
{
	struct seal_ad ad;

	seal_ad_row_key(&ad);
	return vault_seal_blob(out, wrap, &ad, row_key->data, row_key->len);
}

static int row_key_load(struct vault *v)
{
	struct db_blob blob = { 0 };
	struct secbuf *k = NULL;
	struct seal_ad ad;
	int r;

	r = db_meta_get(v->db, VAULT_META_ROW_KEY, &blob);
	seal_ad_row_key(&ad);
	if (r == 0)
		r = vault_wrap_open(v, &ad, &blob, &k);
	if (r == 0 && k->len != MAC_KEY_LEN)
		r = -EBADMSG;
	db_blob_free(&blob);
	if (r < 0) {
		secbuf_free(k);
		return r == -ENOENT || r == -EINVAL || r == -EBADMSG ? -EIO : r;
	}
	secbuf_free(v->row_key);
	v->row_key = k;
	return 0;
}

/* A fresh tag key for a vault that has none, sealed into *out. */
static int row_key_new(struct vault *v, struct db_blob *out)
{
	int r = seal_keygen(&v->row_key);

	if (r == 0)
		r = vault_row_key_seal(v->wrap, v->row_key, out);
	return r;
}

int vault_retag_for(struct vault *src, struct vault *dst)
{
	return db_auth_rekey(src->db, &dst->auth);
}

/* A row that fails its tag is handled like a value that fails: logged
 * and audited by name, never used. */
static void row_failed(void *ctx, const char *what)
{
	struct vault *v = ctx;

	log_err("%s: %s fails authentication (tampered or damaged database); refusing "
		"to use it", db_path(v->db), what);
	audit_authfail_row(v->audit, what);
}

int vault_wrap_check(struct vault *v)
{
	struct db_blob blob = { 0 };
	struct secbuf *pt = NULL;
	struct seal_ad ad;
	int r;

	r = db_meta_get(v->db, VAULT_META_CHECK, &blob);
	if (r == -ENOENT)
		return -EPROTO;
	if (r < 0)
		return r;
	seal_ad_check(&ad, 2);
	r = vault_wrap_open(v, &ad, &blob, &pt);
	if (r == -EBADMSG || r == -EINVAL)
		r = -EKEYREJECTED;
	secbuf_free(pt);
	db_blob_free(&blob);
	return r;
}

/* A vault from before row tags has a check value of era 1: then, and only
 * then, its rows are tagged now, under the master key that opens it, and
 * its check value moves to era 2 in the same transaction. */
static int legacy_check(struct vault *v)
{
	struct db_blob blob = { 0 };
	struct secbuf *pt = NULL;
	struct seal_ad ad;
	int r;

	r = db_meta_get(v->db, VAULT_META_CHECK, &blob);
	if (r < 0)
		return r;
	seal_ad_check(&ad, 1);
	r = vault_wrap_open(v, &ad, &blob, &pt);
	secbuf_free(pt);
	db_blob_free(&blob);
	return r == -EBADMSG || r == -EINVAL ? -EKEYREJECTED : r;
}

static int upgrade_rows(struct vault *v, char *err, size_t errlen)
{
	struct db_blob blob = { 0 };
	struct db_blob kblob = { 0 };
	int r;

	r = db_begin(v->db);
	if (r < 0)
		goto out;
	r = row_key_new(v, &kblob);
	if (r == 0)
		r = db_meta_set(v->db, VAULT_META_ROW_KEY, kblob.data, kblob.len);
	if (r == 0)
		r = db_auth_upgrade(v->db);
	if (r == 0)
		r = vault_check_value(v->wrap, &blob);
	if (r == 0)
		r = db_meta_set(v->db, VAULT_META_CHECK, blob.data, blob.len);
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
out:
	if (r < 0)
		snprintf(err, errlen, "%s: cannot add row authentication to this vault from an "
			 "older vaultfs: %s (%s)", db_path(v->db), strerror(-r),
			 db_errmsg(v->db));
	db_blob_free(&blob);
	db_blob_free(&kblob);
	return r;
}

static int check_key(struct vault *v, bool readonly, char *err, size_t errlen)
{
	int r = vault_wrap_check(v);

	if (r == -EKEYREJECTED && legacy_check(v) == 0) {
		if (readonly) {
			snprintf(err, errlen, "%s was made by an older vaultfs: open it once "
				 "for writing (any command) to add row authentication",
				 db_path(v->db));
			return -EROFS;
		}
		return upgrade_rows(v, err, errlen);
	}
	if (r == -EPROTO)
		snprintf(err, errlen, "%s: not an initialized vault (no key check value)",
			 db_path(v->db));
	else if (r == -EKEYREJECTED)
		snprintf(err, errlen, "wrong master key for %s (the key check value does not "
			 "open); nothing was changed", db_path(v->db));
	else if (r < 0)
		snprintf(err, errlen, "cannot check the master key: %s", strerror(-r));
	return r;
}

/* Whoever can write the database, its -wal or its -shm can destroy
 * secrets: only the user the daemon runs as may (root, or the `user =`
 * account, which owns it by design after the drop). */
static int file_safe(const struct vault_conf *conf, const char *path, char *err,
		     size_t errlen)
{
	const struct daemon_conf *d = &conf->daemon;
	struct stat st;

	if (lstat(path, &st) < 0)
		return 0;	/* missing: db_open says so */
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen, "%s is writable by group or others (mode %04o): "
			 "refusing it, since whoever can write it can destroy secrets; run: "
			 "chmod go-w %s", path, (unsigned)(st.st_mode & 07777), path);
		return -EPERM;
	}
	if (st.st_uid != geteuid() && !(d->has_user && st.st_uid == d->uid)) {
		snprintf(err, errlen, "%s is owned by uid %u, not by the user vaultfs runs as "
			 "(uid %u%s%s): refusing it; run: chown %s %s", path,
			 (unsigned)st.st_uid, (unsigned)geteuid(), d->has_user ? " or " : "",
			 d->has_user ? d->user : "", d->has_user ? d->user : "root", path);
		return -EPERM;
	}
	return 0;
}

static int files_safe(const struct vault_conf *conf, char *err, size_t errlen)
{
	static const char *const suffix[] = { "", "-wal", "-shm" };
	char path[sizeof(conf->db) + 8];
	int r = 0;

	for (size_t i = 0; r == 0 && i < 3; i++) {
		snprintf(path, sizeof(path), "%s%s", conf->db, suffix[i]);
		r = file_safe(conf, path, err, errlen);
	}
	return r;
}

int vault_open(struct vault **out, const struct vault_conf *conf, const struct secbuf *master,
	       int flags, char *err, size_t errlen)
{
	struct vault_keys keys;
	struct vault *v;
	int r;

	*out = NULL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->conf = conf;
	pthread_mutex_init(&v->keys_lock, NULL);
	pthread_mutex_init(&v->states_lock, NULL);
	pthread_rwlock_init(&v->wrap_lock, NULL);
	r = files_safe(conf, err, errlen);
	if (r < 0)
		goto fail;
	r = db_open(&v->db, conf->db, flags & VAULT_READONLY ? DB_READONLY : 0);
	if (r < 0) {
		if (r == -EPROTO)
			snprintf(err, errlen, "%s: not a vaultfs database, or damaged (%s)",
				 conf->db, db_errmsg(NULL));
		else if (r == -EUCLEAN)
			snprintf(err, errlen, "%s", db_errmsg(NULL));
		else
			snprintf(err, errlen, "%s: %s", conf->db, r == -ENOENT ?
				 "no such vault (create it with: vaultfs init)" : db_errmsg(NULL));
		goto fail;
	}
	r = vault_keys_derive(&keys, master);
	if (r < 0) {
		snprintf(err, errlen, "cannot lock memory for keys");
		goto fail;
	}
	vault_wrap_replace(v, &keys);
	v->auth = (struct db_auth){
		.mac = row_mac, .failed = row_failed, .ctx = v,
	};
	db_set_auth(v->db, &v->auth);
	r = check_key(v, flags & VAULT_READONLY, err, errlen);
	if (r == 0 && !v->row_key && (r = row_key_load(v)) < 0)
		snprintf(err, errlen, "%s: the key of its row tags is missing or does not "
			 "open (tampered or damaged database)", conf->db);
	if (r < 0)
		goto fail;
	*out = v;
	return 0;
fail:
	vault_close(v);
	return r;
}

static void key_free(struct inst_key *k)
{
	secbuf_free(k->key);
	free(k);
}

void vault_close(struct vault *v)
{
	struct inst_key *k, *next;

	if (!v)
		return;
	for (k = v->keys; k; k = next) {
		next = k->next;
		key_free(k);
	}
	while (v->states) {
		struct inst_state *st = v->states;

		v->states = st->next;
		state_free(st);
	}
	pthread_mutex_destroy(&v->states_lock);
	db_close(v->db);
	secbuf_free(v->wrap);
	secbuf_free(v->audit_key);
	secbuf_free(v->row_key);
	pthread_mutex_destroy(&v->keys_lock);
	pthread_rwlock_destroy(&v->wrap_lock);
	free(v);
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

int vault_apply_config(struct vault *v, char *err, size_t errlen)
{
	const struct instance_conf *ic;
	struct db_instance in;
	int r;

	for (ic = v->conf->instances; ic; ic = ic->next) {
		r = db_instance_find(v->db, ic->name, &in);
		if (r == -ENOENT) {
			r = vault_instance_create(v, ic->name, ic->has_owner ? ic->owner : 0,
						  ic->has_group ? ic->group : 0,
						  ic->has_mode ? ic->mode : 0700, &in);
		} else if (r == 0 && ((ic->has_owner && in.uid != ic->owner) ||
				      (ic->has_group && in.gid != ic->group) ||
				      (ic->has_mode && in.mode != ic->mode))) {
			r = db_instance_set_attr(v->db, in.id, ic->has_owner ? ic->owner : in.uid,
						 ic->has_group ? ic->group : in.gid,
						 ic->has_mode ? ic->mode : in.mode, db_now_ns());
		}
		if (r < 0) {
			snprintf(err, errlen, "instance %s (%s:%u): %s", ic->name, v->conf->path,
				 ic->line, strerror(-r));
			return r;
		}
	}
	return 0;
}

mode_t vault_secret_mode(struct vault *v, const char *instance, mode_t asked)
{
	const struct instance_conf *ic = policy_instance(v->conf, instance);
	mode_t mask = ic && ic->has_secret_mode ? ic->secret_mode : v->conf->secret_mode;

	return asked & mask & 0777;
}

static enum nl_policy newline_policy(struct vault *v, const char *instance)
{
	const struct instance_conf *ic = policy_instance(v->conf, instance);

	return ic && ic->has_newline ? ic->newline : v->conf->newline;
}

/* Which version of each live secret an instance's tagged state says is
 * current, checked once per seq; each read then compares its row's
 * version, so a row put back from an older copy, from versions or from
 * another secret is refused. seq never goes down. */
static int state_add(void *ctx, int64_t id, uint64_t version)
{
	struct inst_state *st = ctx;

	if (st->n == st->cap) {
		size_t cap = st->cap ? st->cap * 2 : 32;
		int64_t *ids = realloc(st->ids, cap * sizeof(*ids));
		uint64_t *vers;

		if (!ids)
			return -ENOMEM;
		st->ids = ids;
		vers = realloc(st->vers, cap * sizeof(*vers));
		if (!vers)
			return -ENOMEM;
		st->vers = vers;
		st->cap = cap;
	}
	st->ids[st->n] = id;
	st->vers[st->n++] = version;
	return 0;
}

/* Under states_lock: true if the state lists (id, version). */
static bool state_has(const struct inst_state *st, int64_t id, uint64_t version)
{
	size_t lo = 0, hi = st->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (st->ids[mid] == id)
			return st->vers[mid] == version;
		if (st->ids[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

static struct inst_state **state_slot(struct vault *v, int64_t id)
{
	struct inst_state **pp;

	for (pp = &v->states; *pp; pp = &(*pp)->next)
		if ((*pp)->id == id)
			break;
	return pp;
}

/* The state in this snapshot (not cached: an older one than the cache). */
static int version_in_snapshot(struct vault *v, const struct db_secret *m)
{
	struct inst_state tmp = { .id = m->instance_id };
	int r = db_state_check(v->db, m->instance_id, &tmp.seq, state_add, &tmp);

	if (r == 0)
		r = state_has(&tmp, m->id, m->version) ? 0 : -ESTALE;
	free(tmp.ids);
	free(tmp.vers);
	return r;
}

/* 0: m's version is the current one; -ESTALE: it is not, as this snapshot
 * shows (read again before believing it); -EIO: the instance's state does
 * not match its rows, or went back (reported). m, the seq and the state
 * are read in the caller's snapshot (db_read_begin). */
static int version_current(struct vault *v, const struct db_secret *m)
{
	struct inst_state *fresh, **pp;
	int64_t seq, cached = -1, latest;
	char what[96];
	bool has = false;
	int r = db_instance_seq(v->db, m->instance_id, &seq);

	if (r < 0)
		return r;
	pthread_mutex_lock(&v->states_lock);
	pp = state_slot(v, m->instance_id);
	if (*pp) {
		cached = (*pp)->seq;
		has = state_has(*pp, m->id, m->version);
	}
	pthread_mutex_unlock(&v->states_lock);
	if (seq == cached)
		return has ? 0 : -ESTALE;
	if (seq < cached) {
		/* This snapshot is older than the cache's, or the state went
		 * back, which the last commit shows. */
		r = db_instance_seq_latest(v->db, m->instance_id, &latest);
		if (r == 0 && latest < cached) {
			snprintf(what, sizeof(what), "instances row %lld state went back from "
				 "seq %lld to %lld", (long long)m->instance_id, (long long)cached,
				 (long long)latest);
			log_err("%s: %s (rows put back from an older copy?)", db_path(v->db), what);
			audit_authfail_row(v->audit, what);
			return -EIO;
		}
		return r < 0 ? r : version_in_snapshot(v, m);
	}
	fresh = calloc(1, sizeof(*fresh));
	if (!fresh)
		return -ENOMEM;
	fresh->id = m->instance_id;
	r = db_state_check(v->db, m->instance_id, &fresh->seq, state_add, fresh);
	if (r < 0) {
		state_free(fresh);
		return r;
	}
	r = state_has(fresh, m->id, m->version) ? 0 : -ESTALE;
	pthread_mutex_lock(&v->states_lock);
	pp = state_slot(v, m->instance_id);
	if (!*pp || (*pp)->seq < fresh->seq) {
		fresh->next = *pp ? (*pp)->next : NULL;
		state_free(*pp);
		*pp = fresh;
		fresh = NULL;
	}
	pthread_mutex_unlock(&v->states_lock);
	state_free(fresh);
	return r;
}

static void version_refused(struct vault *v, const char *inst, const struct db_secret *m)
{
	char what[2 * DB_NAME_MAX + 96];

	log_err("%s/%s: its stored row (version %llu) is not the current version the "
		"instance's state records (a row put back from an older copy?); refusing "
		"to serve it", inst, m->name, (unsigned long long)m->version);
	snprintf(what, sizeof(what), "secrets row %lld not current (version %llu)",
		 (long long)m->id, (unsigned long long)m->version);
	audit_authfail_row(v->audit, what);
}

/* Which value to open: the current one, or an old version. */
struct value_ref {
	int64_t secret_id;
	bool old;
	uint64_t version;
};

static int open_once(struct vault *v, const struct value_ref *ref, struct secbuf **out,
		     struct db_secret *m, struct db_version *ver, char inst[DB_NAME_MAX + 1],
		     bool *failed)
{
	struct db_blob blob = { 0 };
	struct inst_key *k;
	struct seal_ad ad;
	int r;

	*failed = false;
	if (ref->old) {
		r = db_secret_get(v->db, ref->secret_id, m);
		if (r == 0)
			r = db_version_get(v->db, ref->secret_id, ref->version, ver, &blob);
	} else {
		r = db_secret_blob(v->db, ref->secret_id, m, &blob);
	}
	if (r < 0)
		goto out;
	r = vault_key_get(v, m->instance_id, &k);
	if (r < 0)
		goto out;
	memcpy(inst, k->name, DB_NAME_MAX + 1);
	seal_ad_value(&ad, k->name, m->name, ref->old ? ref->version : m->version);
	r = seal_open(out, k->key->data, &ad, blob.data, blob.len);
	if (r == -EBADMSG || r == -EINVAL) {
		*failed = true;
		vault_key_stale(v, k);
	}
	vault_key_put(v, k);
out:
	db_blob_free(&blob);
	return r;
}

/* A rotation or a rename may re-seal a value between our reading it and
 * its key, and a commit may change the row between our reading it and its
 * instance's state: all is read again, a few times. */
#define OPEN_TRIES 8

static int open_value(struct vault *v, const struct value_ref *ref, struct secbuf **out,
		      struct db_secret *m, struct db_version *ver)
{
	char inst[DB_NAME_MAX + 1];
	bool failed, pinned;
	int r;

	*out = NULL;
	/* The row, the instance's seq and its state: one snapshot. */
	pinned = db_read_pinned(v->db);
	if (!pinned)
		db_read_begin(v->db);
	r = open_once(v, ref, out, m, ver, inst, &failed);
	if (r == 0 && !ref->old && (r = version_current(v, m)) == -ESTALE) {
		secbuf_free(*out);
		*out = NULL;
		failed = false;
		r = -ESTALE;
	}
	/* Each retry follows a commit that raced with our reads (a snapshot
	 * can't be held while a write transaction is open); a row that really
	 * is not current fails every time. */
	for (int tries = 0; tries < OPEN_TRIES && (failed || r == -ESTALE); tries++) {
		db_read_end(v->db);	/* the retry must see what was committed since */
		db_read_begin(v->db);
		pinned = false;
		r = open_once(v, ref, out, m, ver, inst, &failed);
		if (r == 0 && !ref->old && (r = version_current(v, m)) == -ESTALE) {
			secbuf_free(*out);
			*out = NULL;
		}
	}
	if (r == -ESTALE) {
		version_refused(v, inst, m);
		r = -EIO;
	}
	if (failed) {
		log_err("%s/%s: stored value (version %llu) fails authentication (tampered or "
			"damaged); refusing to return it", inst, m->name, (unsigned long long)
			(ref->old ? ref->version : m->version));
		audit_authfail(v->audit, inst, m->name);
		r = -EIO;
	}
	if (!pinned)
		db_read_end(v->db);
	return r;
}

int vault_read(struct vault *v, int64_t secret_id, struct secbuf **out, struct db_secret *meta)
{
	struct value_ref ref = { .secret_id = secret_id };
	struct db_secret m;
	int r = open_value(v, &ref, out, &m, NULL);

	if (r == 0 && meta)
		*meta = m;
	return r;
}

int vault_read_fetched(struct vault *v, const struct db_secret *m, const struct db_blob *blob,
		       struct secbuf **out)
{
	struct secbuf *fetched = NULL;
	struct inst_key *k;
	struct seal_ad ad;
	int r;

	*out = NULL;
	r = vault_key_get(v, m->instance_id, &k);
	if (r < 0)
		return r;
	seal_ad_value(&ad, k->name, m->name, m->version);
	r = seal_open(out, k->key->data, &ad, blob->data, blob->len);
	vault_key_put(v, k);
	if (r == 0 && (r = version_current(v, m)) == -ESTALE) {
		fetched = *out;
		*out = NULL;
		r = -EBADMSG;	/* read both again below */
	}
	if (r != -EBADMSG && r != -EINVAL)
		return r;
	/* A rotation or a rename may have re-sealed it since, or a commit
	 * changed it between our reads (which then were not one snapshot):
	 * read all again, which also reports a value that really fails. A
	 * row a commit replaced or deleted since (a rename onto it) serves
	 * the value it held, as a read that came first would have. */
	db_read_end(v->db);
	r = vault_read(v, m->id, out, NULL);
	if (r == -ENOENT && fetched) {
		*out = fetched;
		return 0;
	}
	secbuf_free(fetched);
	return r;
}

int vault_read_version(struct vault *v, int64_t secret_id, uint64_t version,
		       struct secbuf **out, struct db_version *meta)
{
	struct value_ref ref = { .secret_id = secret_id, .old = true, .version = version };
	struct db_version ver;
	struct db_secret m;
	int r;

	*out = NULL;
	r = db_secret_get(v->db, secret_id, &m);
	if (r == 0 && m.version == version) {
		ref.old = false;
		r = open_value(v, &ref, out, &m, NULL);
		ver = (struct db_version){
			.secret_id = m.id, .version = m.version, .size = m.size,
			.flags = m.flags, .mtime_ns = m.mtime_ns, .updated_by = m.updated_by,
		};
	} else if (r == 0) {
		r = open_value(v, &ref, out, &m, &ver);
	}
	if (r == 0 && meta)
		*meta = ver;
	return r;
}

/* The stored length of a value under the instance's newline policy. */
static size_t apply_newline(struct vault *v, const char *instance, const unsigned char *pt,
			    size_t len, uint32_t *flags)
{
	*flags = 0;
	if (newline_policy(v, instance) == NL_STRIP_SINGLE_LINE && len > 0 &&
	    pt[len - 1] == '\n' && !memchr(pt, '\n', len - 1)) {
		*flags |= DB_SECRET_NL_STRIPPED;
		return len - 1;
	}
	return len;
}

static int seal_value(const struct inst_key *k, const struct db_secret *s,
		      const unsigned char *pt, size_t len, struct db_blob *blob)
{
	struct seal_ad ad;

	seal_ad_value(&ad, k->name, s->name, s->version);
	return vault_seal_blob(blob, k->key, &ad, pt, len);
}

/* Ends a write transaction: the change's audit entry joins it, and both
 * are committed, or both rolled back. */
static int commit_audited(struct vault *v, int r, const struct audit_entry *audit)
{
	if (r == 0)
		r = audit_record_txn(v->audit, v->db, audit);
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	return r;
}



int vault_store_next(struct vault *v, struct inst_key *k, struct db_secret *s,
		     const unsigned char *pt, size_t len, uint32_t flags, uid_t by)
{
	struct db_blob blob = { 0 };
	int r;

	if (len > v->conf->max_value_size)
		return -EFBIG;
	r = db_version_archive(v->db, s->id, false, vault_keep_old(v));
	if (r < 0)
		return r;
	s->version++;
	s->size = len;
	s->flags = flags;
	s->mtime_ns = s->chtime_ns = db_now_ns();
	s->updated_by = by;
	r = seal_value(k, s, pt, len, &blob);
	if (r == 0)
		r = db_secret_set_value(v->db, s, &blob);
	db_blob_free(&blob);
	return r;
}

/* A secret made by create() holds version 0, empty, until it is first
 * written; version 0 never enters the history. Its commit is not synced:
 * the commit of its first value (or any later one) makes it durable, as
 * a file created on a local filesystem is by the sync of its data; its
 * audit entry is in the same transaction, so the two stand or fall
 * together. One sync per new key written, as for a key updated. */
int vault_create(struct vault *v, int64_t instance_id, const char *name, uid_t uid,
		 gid_t gid, mode_t mode, struct db_secret *out,
		 const struct audit_entry *audit)
{
	struct db_blob blob = { 0 };
	struct db_secret s = { 0 };
	struct inst_key *k = NULL;
	int r;

	if (!name_valid(name))
		return -EINVAL;
	r = db_begin_lazy(v->db);
	if (r < 0)
		return r;
	r = vault_key_current(v, instance_id, &k);
	if (r < 0)
		goto done;
	s.instance_id = instance_id;
	snprintf(s.name, sizeof(s.name), "%s", name);
	s.uid = uid;
	s.gid = gid;
	s.mode = mode & 07777;
	s.ctime_ns = s.mtime_ns = s.chtime_ns = db_now_ns();
	s.updated_by = uid;
	r = seal_value(k, &s, (const unsigned char *)"", 0, &blob);
	if (r == 0)
		r = db_secret_insert(v->db, &s, &blob);
done:
	r = commit_audited(v, r, audit);
	db_blob_free(&blob);
	if (k)
		vault_key_put(v, k);
	if (r == 0 && out)
		*out = s;
	return r;
}

/* One handle's commits make one version: a shell's `cmd > key` commits
 * the empty file at its first close and the value at the next, and only
 * the value belongs in the history. So a commit amends the version
 * *amend when it is still the current one, and makes a new version
 * otherwise. */
static int update(struct vault *v, int64_t secret_id, const unsigned char *pt, size_t len,
		  uid_t by, uint64_t *amend, struct db_secret *out,
		  const struct audit_entry *audit)
{
	struct db_blob blob = { 0 };
	struct inst_key *k = NULL;
	struct db_secret s;
	uint32_t flags;
	int r;

	if (len > v->conf->max_value_size)
		return -EFBIG;
	r = db_begin(v->db);
	if (r < 0)
		return r;
	r = db_secret_get(v->db, secret_id, &s);
	if (r == 0)
		r = vault_key_current(v, s.instance_id, &k);
	if (r == 0)
		len = apply_newline(v, k->name, pt, len, &flags);
	if (r == 0 && amend && *amend && *amend == s.version) {
		s.size = len;
		s.flags = flags;
		s.mtime_ns = s.chtime_ns = db_now_ns();
		s.updated_by = by;
		r = seal_value(k, &s, pt, len, &blob);
		if (r == 0)
			r = db_secret_set_value(v->db, &s, &blob);
	} else if (r == 0) {
		r = vault_store_next(v, k, &s, pt, len, flags, by);
	}
	r = commit_audited(v, r, audit);
	db_blob_free(&blob);
	if (k)
		vault_key_put(v, k);
	if (r == 0 && amend)
		*amend = s.version;
	if (r == 0 && out)
		*out = s;
	return r;
}

int vault_update(struct vault *v, int64_t secret_id, const unsigned char *pt, size_t len,
		 uid_t by, struct db_secret *out)
{
	return update(v, secret_id, pt, len, by, NULL, out, NULL);
}

int vault_update_amend(struct vault *v, int64_t secret_id, const unsigned char *pt,
		       size_t len, uid_t by, uint64_t *version,
		       const struct audit_entry *audit)
{
	return update(v, secret_id, pt, len, by, version, NULL, audit);
}

/* Inside a transaction: update or create by name. */
static int put_locked(struct vault *v, int64_t instance_id, const char *name,
		      const unsigned char *pt, size_t len, uid_t uid, gid_t gid,
		      int64_t if_version, struct db_secret *out)
{
	struct db_blob blob = { 0 };
	struct db_secret s = { 0 };
	struct inst_key *k;
	uint32_t flags;
	bool exists;
	int r;

	if (!name_valid(name))
		return -EINVAL;
	if (len > v->conf->max_value_size)
		return -EFBIG;
	r = vault_key_current(v, instance_id, &k);
	if (r < 0)
		return r;
	r = db_secret_find(v->db, instance_id, name, &s);
	exists = r == 0;
	if (r == -ENOENT)
		r = 0;
	/* A value never replaces a template unseen (template_store does). */
	if (exists && (s.flags & TEMPLATE_FLAG))
		r = -EMEDIUMTYPE;
	if (r == 0 && if_version >= 0 && (uint64_t)if_version != s.version)
		r = -ESTALE;
	if (r < 0) {
		if (out)
			*out = s;
		goto out;
	}
	len = apply_newline(v, k->name, pt, len, &flags);
	if (exists) {
		r = vault_store_next(v, k, &s, pt, len, flags, uid);
	} else {
		s.instance_id = instance_id;
		snprintf(s.name, sizeof(s.name), "%s", name);
		s.uid = uid;
		s.gid = gid;
		s.mode = vault_secret_mode(v, k->name, 0666);
		s.version = 1;
		s.size = len;
		s.flags = flags;
		s.ctime_ns = s.mtime_ns = s.chtime_ns = db_now_ns();
		s.updated_by = uid;
		r = seal_value(k, &s, pt, len, &blob);
		if (r == 0)
			r = db_secret_insert(v->db, &s, &blob);
	}
	if (r == 0 && out)
		*out = s;
out:
	db_blob_free(&blob);
	vault_key_put(v, k);
	return r;
}

int vault_put_if(struct vault *v, int64_t instance_id, const char *name,
		 const unsigned char *pt, size_t len, uid_t uid, gid_t gid,
		 int64_t if_version, struct db_secret *out,
		 const struct audit_entry *audit)
{
	int r = db_begin(v->db);

	if (r < 0)
		return r;
	r = put_locked(v, instance_id, name, pt, len, uid, gid, if_version, out);
	return commit_audited(v, r, audit);
}

int vault_put(struct vault *v, int64_t instance_id, const char *name, const unsigned char *pt,
	      size_t len, uid_t uid, gid_t gid, struct db_secret *out)
{
	return vault_put_if(v, instance_id, name, pt, len, uid, gid, -1, out, NULL);
}

int vault_put_many(struct vault *v, int64_t instance_id, size_t n, const char *const *names,
		   struct secbuf *const *values, uid_t uid, gid_t gid, size_t *at)
{
	size_t i;
	int r = db_begin(v->db);

	if (r < 0)
		return r;
	for (i = 0; i < n; i++) {
		r = put_locked(v, instance_id, names[i], values[i]->data, values[i]->len, uid,
			       gid, -1, NULL);
		if (r < 0)
			break;
	}
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	if (at)
		*at = i;
	return r;
}

struct versions {
	uint64_t *v;
	size_t n, cap;
};

static int versions_add(void *ctx, const struct db_version *ver)
{
	struct versions *l = ctx;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		uint64_t *p = realloc(l->v, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		l->v = p;
		l->cap = cap;
	}
	l->v[l->n++] = ver->version;
	return 0;
}

int vault_history_visit(struct vault *v, int64_t secret_id,
			int (*fn)(void *, uint64_t version, const struct db_blob *blob),
			void *ctx)
{
	struct versions l = { 0 };
	struct db_blob blob = { 0 };
	struct db_version ver;
	int r;

	/* Listed first and visited after, so fn may change the rows. */
	r = db_version_each(v->db, secret_id, versions_add, &l);
	for (size_t i = 0; r == 0 && i < l.n; i++) {
		r = db_version_get(v->db, secret_id, l.v[i], &ver, &blob);
		if (r == 0)
			r = fn(ctx, l.v[i], &blob);
		db_blob_free(&blob);
	}
	free(l.v);
	return r;
}

struct reseal_history {
	struct vault *v;
	int64_t secret_id;
	const struct secbuf *from_key, *to_key;
	const char *instance, *from_name, *to_name;
};

static int reseal_one(void *ctx, uint64_t version, const struct db_blob *blob)
{
	struct reseal_history *rh = ctx;
	struct db_blob nblob = { 0 };
	struct secbuf *pt = NULL;
	struct seal_ad ad;
	int r;

	seal_ad_value(&ad, rh->instance, rh->from_name, version);
	r = seal_open(&pt, rh->from_key->data, &ad, blob->data, blob->len);
	if (r == -EBADMSG || r == -EINVAL) {
		log_err("%s/%s: old version %llu fails authentication (tampered or damaged)",
			rh->instance, rh->from_name, (unsigned long long)version);
		r = -EIO;
	}
	if (r == 0) {
		seal_ad_value(&ad, rh->instance, rh->to_name, version);
		r = vault_seal_blob(&nblob, rh->to_key, &ad, pt->data, pt->len);
	}
	if (r == 0)
		r = db_version_set_blob(rh->v->db, rh->secret_id, version, &nblob);
	secbuf_free(pt);
	db_blob_free(&nblob);
	return r;
}

int vault_reseal_history(struct vault *v, int64_t secret_id, const struct secbuf *from_key,
			 const char *instance, const char *from_name,
			 const struct secbuf *to_key, const char *to_name)
{
	struct reseal_history rh = {
		.v = v, .secret_id = secret_id, .from_key = from_key, .to_key = to_key,
		.instance = instance, .from_name = from_name, .to_name = to_name,
	};

	return vault_history_visit(v, secret_id, reseal_one, &rh);
}

/* Moves the secret to the trash inside the caller's transaction. */
static int trash_in_txn(struct vault *v, int64_t secret_id, uid_t by)
{
	struct db_secret s;
	int r = db_secret_get(v->db, secret_id, &s);

	if (r == 0)
		r = db_version_archive(v->db, secret_id, true, v->conf->versions);
	if (r == 0)
		r = db_trash_put(v->db, &s, db_now_ns(), by);
	if (r == 0 && v->conf->undelete_window == 0)
		r = db_trash_purge(v->db, s.instance_id, s.name, INT64_MAX, NULL);
	if (r == 0)
		r = db_trash_purge(v->db, 0, NULL, vault_undelete_since(v), NULL);
	return r;
}

/* A rename keeps the history under the new name; a rename onto an existing
 * key (how editors save) continues that key's history with a new version,
 * when `by` owns that key or is root. Anyone else's rename over it moves
 * it, history and all, to the trash: its history is never handed to the
 * renamer's row. */
int vault_rename(struct vault *v, int64_t secret_id, const char *newname, bool noreplace,
		 uid_t by, int64_t *replaced_id)
{
	struct db_blob blob = { 0 }, nblob = { 0 };
	struct secbuf *pt = NULL;
	struct inst_key *k = NULL;
	struct db_secret s, t;
	struct seal_ad ad;
	bool tampered = false;
	int r;

	if (replaced_id)
		*replaced_id = 0;
	if (!name_valid(newname))
		return -EINVAL;
	r = db_begin(v->db);
	if (r < 0)
		return r;
	r = db_secret_blob(v->db, secret_id, &s, &blob);
	if (r < 0 || strcmp(s.name, newname) == 0)
		goto done;
	r = vault_key_current(v, s.instance_id, &k);
	if (r < 0)
		goto done;
	seal_ad_value(&ad, k->name, s.name, s.version);
	r = seal_open(&pt, k->key->data, &ad, blob.data, blob.len);
	if (r == -EBADMSG || r == -EINVAL) {
		log_err("%s/%s: stored value fails authentication; not renaming it",
			k->name, s.name);
		tampered = true;
		r = -EIO;
	}
	if (r < 0)
		goto done;
	r = db_secret_find(v->db, s.instance_id, newname, &t);
	if (r == 0 && noreplace) {
		r = -EEXIST;
	} else if (r == 0 && by != 0 && by != t.uid) {
		r = trash_in_txn(v, t.id, by);
		if (r == 0)
			r = vault_reseal_history(v, s.id, k->key, k->name, s.name, k->key,
						 newname);
		if (r == 0 && replaced_id)
			*replaced_id = t.id;
	} else if (r == 0) {
		r = db_version_archive(v->db, t.id, false, vault_keep_old(v));
		if (r == 0)
			r = db_secret_adopt(v->db, s.id, t.id);
		s.version = t.version + 1;
		if (r == 0 && replaced_id)
			*replaced_id = t.id;
	} else if (r == -ENOENT) {
		r = vault_reseal_history(v, s.id, k->key, k->name, s.name, k->key, newname);
	}
	if (r < 0)
		goto done;
	snprintf(s.name, sizeof(s.name), "%s", newname);
	s.chtime_ns = db_now_ns();
	r = seal_value(k, &s, pt->data, pt->len, &nblob);
	if (r == 0)
		r = db_secret_rename(v->db, &s, &nblob);
done:
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	/* Only now: the audit log waits for the store, which this held. */
	if (tampered)
		audit_authfail(v->audit, k->name, s.name);
	if (k)
		vault_key_put(v, k);
	secbuf_free(pt);
	db_blob_free(&blob);
	db_blob_free(&nblob);
	return r;
}

/* Into the trash, restorable for undelete_window; with no window, gone. */
int vault_delete(struct vault *v, int64_t secret_id, uid_t by,
		 const struct audit_entry *audit)
{
	int r = db_begin(v->db);

	if (r < 0)
		return r;
	r = trash_in_txn(v, secret_id, by);
	return commit_audited(v, r, audit);
}
