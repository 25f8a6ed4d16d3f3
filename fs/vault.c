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
#include "policy.h"
#include "vault_int.h"

static const unsigned char check_plain[] = "vaultfs master key check";

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

static int unlink_file(void *ctx, const char *path, bool main)
{
	unlink(path);
	return 0;
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
	if (r < 0)	/* what the store made here goes (none on a server) */
		(void)db_files(db_path, unlink_file, NULL);
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

static void row_elem(void *ctx, const unsigned char msg[16], unsigned char out[DB_ELEM_LEN])
{
	struct vault *v = ctx;

	pthread_rwlock_rdlock(&v->wrap_lock);
	mac_short(out, v->elem_key->data, msg, 16);
	pthread_rwlock_unlock(&v->wrap_lock);
}

/* The vault's row-tag key is now k (owned), and the key of its states'
 * sums is derived from it. */
static int row_key_take(struct vault *v, struct secbuf *k)
{
	struct secbuf *e = NULL;
	int r = secbuf_new(&e, MAC_SHORT_KEY_LEN);

	if (r < 0) {
		secbuf_free(k);
		return r;
	}
	mac_derive(e->data, MAC_SHORT_KEY_LEN, k->data, "vaultfs/state-sum/1");
	e->len = MAC_SHORT_KEY_LEN;
	secbuf_free(v->row_key);
	secbuf_free(v->elem_key);
	v->row_key = k;
	v->elem_key = e;
	return 0;
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
	return row_key_take(v, k);
}

/* A fresh tag key for a vault that has none, sealed into *out. */
static int row_key_new(struct vault *v, struct db_blob *out)
{
	struct secbuf *k = NULL;
	int r = seal_keygen(&k);

	if (r == 0)
		r = row_key_take(v, k);
	if (r == 0)
		r = vault_row_key_seal(v->wrap, v->row_key, out);
	return r;
}

int vault_retag_for(struct vault *src, struct vault *dst)
{
	return db_auth_rekey(src->db, &dst->auth);
}

/* A row that fails its tag is handled like a value that fails: logged
 * and audited by name, never used. The store calls this while it may hold
 * its lock, which the audit writer needs: queued, not waited for (a wait
 * here deadlocked a lookup whose read fell back on the vault's own
 * connection). */
static void row_failed(void *ctx, const char *what)
{
	struct vault *v = ctx;

	log_err("%s: %s fails authentication (tampered or damaged database); refusing "
		"to use it", db_path(v->db), what);
	audit_authfail_row_queued(v->audit, what);
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

/* Whoever can write the store's files can destroy secrets: only the user
 * the daemon runs as may (root, or the `user =` account, which owns it by
 * design after the drop). */
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

struct files_check {
	const struct vault_conf *conf;
	char *err;
	size_t errlen;
};

static int file_check(void *ctx, const char *path, bool main)
{
	struct files_check *f = ctx;

	return file_safe(f->conf, path, f->err, f->errlen);
}

/* Each file the store keeps here (none for a store on a server). */
static int files_safe(const struct vault_conf *conf, char *err, size_t errlen)
{
	struct files_check f = { conf, err, errlen };

	return db_files(conf->db, file_check, &f);
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
	r = db_open(&v->db, conf->db, (flags & VAULT_READONLY ? DB_READONLY : 0) |
		    (flags & VAULT_BRIEF ? DB_BRIEF : 0));
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
		.mac = row_mac, .elem = row_elem, .failed = row_failed, .ctx = v,
	};
	db_set_auth(v->db, &v->auth);
	/* The key check, the row key and the states read in one snapshot. */
	db_read_begin(v->db);
	r = check_key(v, flags & VAULT_READONLY, err, errlen);
	if (r == 0 && !v->row_key && (r = row_key_load(v)) < 0)
		snprintf(err, errlen, "%s: the key of its row tags is missing or does not "
			 "open (tampered or damaged database)", conf->db);
	if (r == 0 && (r = db_states_convert(v->db, flags & VAULT_READONLY)) < 0)
		snprintf(err, errlen, "%s: %s", conf->db, r == -EIO ?
			 "an instance's state does not match its secrets (tampered or damaged "
			 "database); nothing was changed" : db_errmsg(v->db));
	db_read_end(v->db);
	if (r < 0)
		goto fail;
	*out = v;
	return 0;
fail:
	vault_close(v);
	return r;
}

void vault_close(struct vault *v)
{
	if (!v)
		return;
	vault_key_cache_free(v);
	vault_states_free(v);
	pthread_mutex_destroy(&v->states_lock);
	db_close(v->db);
	secbuf_free(v->wrap);
	secbuf_free(v->audit_key);
	secbuf_free(v->row_key);
	secbuf_free(v->elem_key);
	pthread_mutex_destroy(&v->keys_lock);
	pthread_rwlock_destroy(&v->wrap_lock);
	free(v);
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

