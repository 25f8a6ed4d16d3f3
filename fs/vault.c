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
#include <unistd.h>

#include <sodium.h>

#include "../crypto/seal.h"
#include "audit.h"
#include "log.h"
#include "name.h"
#include "vault.h"

#define META_CHECK "check"
static const unsigned char check_plain[] = "vaultfs master key check";

struct inst_key {
	int64_t id;
	char name[DB_NAME_MAX + 1];
	struct secbuf *key;
	unsigned refs;
	bool dead;
	struct inst_key *next;
};

struct vault {
	struct db *db;
	const struct vault_conf *conf;
	struct secbuf *wrap;
	struct secbuf *audit_key;
	struct audit *audit;
	pthread_mutex_t keys_lock;
	struct inst_key *keys;
};

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

static int seal_blob(struct db_blob *out, const struct secbuf *key, const struct seal_ad *ad,
		     const unsigned char *pt, size_t len)
{
	return seal_seal(&out->data, &out->len, key->data, ad, pt, len);
}

int vault_init(const char *db_path, const struct secbuf *master, char *err, size_t errlen)
{
	struct secbuf *wrap = NULL;
	struct db_blob blob = { 0 };
	struct seal_ad ad;
	struct db *db = NULL;
	int r;

	r = db_open(&db, db_path, DB_CREATE);
	if (r < 0) {
		snprintf(err, errlen, "%s: %s", db_path, r == -EEXIST ?
			 "already exists; refusing to overwrite it" : db_errmsg(NULL));
		return r;
	}
	r = seal_derive(&wrap, master->data, SEAL_SUBKEY_WRAP);
	if (r == 0) {
		seal_ad_check(&ad);
		r = seal_blob(&blob, wrap, &ad, check_plain, sizeof(check_plain));
	}
	if (r == 0)
		r = db_meta_set(db, META_CHECK, blob.data, blob.len);
	if (r < 0)
		snprintf(err, errlen, "%s: cannot initialize: %s", db_path, strerror(-r));
	db_blob_free(&blob);
	secbuf_free(wrap);
	db_close(db);
	if (r < 0)
		unlink(db_path);
	return r;
}

static int check_key(struct vault *v, char *err, size_t errlen)
{
	struct db_blob blob = { 0 };
	struct secbuf *pt = NULL;
	struct seal_ad ad;
	int r;

	r = db_meta_get(v->db, META_CHECK, &blob);
	if (r < 0) {
		snprintf(err, errlen, "%s: not an initialized vault (%s)", db_path(v->db),
			 r == -ENOENT ? "no key check value" : strerror(-r));
		return r == -ENOENT ? -EPROTO : r;
	}
	seal_ad_check(&ad);
	r = seal_open(&pt, v->wrap->data, &ad, blob.data, blob.len);
	if (r == -EBADMSG || r == -EINVAL) {
		snprintf(err, errlen, "wrong master key for %s (the key check value does not "
			 "open); nothing was changed", db_path(v->db));
		r = -EKEYREJECTED;
	} else if (r < 0) {
		snprintf(err, errlen, "cannot check the master key: %s", strerror(-r));
	}
	secbuf_free(pt);
	db_blob_free(&blob);
	return r;
}

int vault_open(struct vault **out, const struct vault_conf *conf, const struct secbuf *master,
	       int flags, char *err, size_t errlen)
{
	struct vault *v;
	int r;

	*out = NULL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->conf = conf;
	pthread_mutex_init(&v->keys_lock, NULL);
	r = db_open(&v->db, conf->db, flags & VAULT_READONLY ? DB_READONLY : 0);
	if (r < 0) {
		if (r == -EPROTO)
			snprintf(err, errlen, "%s: not a vaultfs database, or damaged (%s)",
				 conf->db, db_errmsg(NULL));
		else
			snprintf(err, errlen, "%s: %s", conf->db, r == -ENOENT ?
				 "no such vault (create it with: vaultfs init)" : db_errmsg(NULL));
		goto fail;
	}
	r = seal_derive(&v->wrap, master->data, SEAL_SUBKEY_WRAP);
	if (r == 0)
		r = seal_derive(&v->audit_key, master->data, SEAL_SUBKEY_AUDIT);
	if (r < 0) {
		snprintf(err, errlen, "cannot lock memory for keys");
		goto fail;
	}
	r = check_key(v, err, errlen);
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
	secbuf_free(v->wrap);
	secbuf_free(v->audit_key);
	db_close(v->db);
	pthread_mutex_destroy(&v->keys_lock);
	free(v);
}

static struct inst_key *key_lookup(struct vault *v, int64_t id)
{
	for (struct inst_key *k = v->keys; k; k = k->next)
		if (k->id == id && !k->dead)
			return k;
	return NULL;
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

	r = db_instance_get(v->db, id, &in);
	if (r < 0)
		return r;
	r = db_instance_wrapped_key(v->db, id, &blob);
	if (r < 0)
		return r;
	k = calloc(1, sizeof(*k));
	if (!k) {
		db_blob_free(&blob);
		return -ENOMEM;
	}
	k->id = id;
	memcpy(k->name, in.name, sizeof(k->name));
	seal_ad_wrap(&ad, in.name, in.generation);
	r = seal_open(&k->key, v->wrap->data, &ad, blob.data, blob.len);
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

static int key_get(struct vault *v, int64_t id, struct inst_key **out)
{
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
	r = key_unwrap(v, id, &fresh);
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

static void key_put(struct vault *v, struct inst_key *k)
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

static void key_forget(struct vault *v, int64_t id)
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
		key_put(v, k);
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
	r = seal_blob(&blob, v->wrap, &ad, dk->data, dk->len);
	secbuf_free(dk);
	if (r == 0)
		r = db_instance_create(v->db, &in, &blob);
	db_blob_free(&blob);
	if (r == 0 && out)
		*out = in;
	return r;
}

int vault_instance_delete(struct vault *v, int64_t id)
{
	int r = db_instance_delete(v->db, id);

	if (r == 0)
		key_forget(v, id);
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

int vault_read(struct vault *v, int64_t secret_id, struct secbuf **out, struct db_secret *meta)
{
	struct db_blob blob = { 0 };
	struct db_secret m;
	struct inst_key *k;
	struct seal_ad ad;
	int r;

	*out = NULL;
	r = db_secret_blob(v->db, secret_id, &m, &blob);
	if (r < 0)
		return r;
	r = key_get(v, m.instance_id, &k);
	if (r < 0)
		goto out;
	seal_ad_value(&ad, k->name, m.name, m.version);
	r = seal_open(out, k->key->data, &ad, blob.data, blob.len);
	if (r == -EBADMSG || r == -EINVAL) {
		log_err("%s/%s: stored value fails authentication (tampered or damaged); "
			"refusing to return it", k->name, m.name);
		audit_authfail(v->audit, k->name, m.name);
		r = -EIO;
	}
	key_put(v, k);
	if (r == 0 && meta)
		*meta = m;
out:
	db_blob_free(&blob);
	return r;
}

/* Seals pt as the next version of s (whose version and name are current)
 * and fills in the value fields; the caller writes s and the blob. */
static int seal_version(struct vault *v, struct inst_key *k, struct db_secret *s,
			const unsigned char *pt, size_t len, uid_t by, struct db_blob *blob)
{
	struct seal_ad ad;

	if (len > v->conf->max_value_size)
		return -EFBIG;
	s->flags = 0;
	if (newline_policy(v, k->name) == NL_STRIP_SINGLE_LINE && len > 0 &&
	    pt[len - 1] == '\n' && !memchr(pt, '\n', len - 1)) {
		len--;
		s->flags |= DB_SECRET_NL_STRIPPED;
	}
	s->version++;
	s->size = len;
	s->mtime_ns = s->chtime_ns = db_now_ns();
	s->updated_by = by;
	seal_ad_value(&ad, k->name, s->name, s->version);
	return seal_blob(blob, k->key, &ad, pt, len);
}

int vault_create(struct vault *v, int64_t instance_id, const char *name, uid_t uid,
		 gid_t gid, mode_t mode, struct db_secret *out)
{
	struct db_blob blob = { 0 };
	struct db_secret s = { 0 };
	struct inst_key *k;
	int r;

	if (!name_valid(name))
		return -EINVAL;
	r = key_get(v, instance_id, &k);
	if (r < 0)
		return r;
	s.instance_id = instance_id;
	snprintf(s.name, sizeof(s.name), "%s", name);
	s.uid = uid;
	s.gid = gid;
	s.mode = mode & 07777;
	r = seal_version(v, k, &s, (const unsigned char *)"", 0, uid, &blob);
	s.ctime_ns = s.mtime_ns;
	if (r == 0)
		r = db_secret_insert(v->db, &s, &blob);
	db_blob_free(&blob);
	key_put(v, k);
	if (r == 0 && out)
		*out = s;
	return r;
}

int vault_update(struct vault *v, int64_t secret_id, const unsigned char *pt, size_t len,
		 uid_t by, struct db_secret *out)
{
	struct db_blob blob = { 0 };
	struct db_secret s;
	struct inst_key *k;
	int r;

	if (len > v->conf->max_value_size)
		return -EFBIG;
	r = db_secret_get(v->db, secret_id, &s);
	if (r < 0)
		return r;
	r = key_get(v, s.instance_id, &k);
	if (r < 0)
		return r;
	r = db_begin(v->db);
	if (r < 0)
		goto out;
	r = db_secret_get(v->db, secret_id, &s);	/* current name and version */
	if (r == 0)
		r = seal_version(v, k, &s, pt, len, by, &blob);
	if (r == 0)
		r = db_secret_set_value(v->db, &s, &blob);
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	if (r == 0 && out)
		*out = s;
out:
	db_blob_free(&blob);
	key_put(v, k);
	return r;
}

int vault_put(struct vault *v, int64_t instance_id, const char *name, const unsigned char *pt,
	      size_t len, uid_t uid, gid_t gid, struct db_secret *out)
{
	struct db_blob blob = { 0 };
	struct db_secret s = { 0 };
	struct inst_key *k;
	bool exists;
	int r;

	if (!name_valid(name))
		return -EINVAL;
	if (len > v->conf->max_value_size)
		return -EFBIG;
	r = key_get(v, instance_id, &k);
	if (r < 0)
		return r;
	r = db_begin(v->db);
	if (r < 0)
		goto out;
	r = db_secret_find(v->db, instance_id, name, &s);
	exists = r == 0;
	if (r == -ENOENT) {
		s.instance_id = instance_id;
		snprintf(s.name, sizeof(s.name), "%s", name);
		s.uid = uid;
		s.gid = gid;
		s.mode = vault_secret_mode(v, k->name, 0666);
		r = 0;
	}
	if (r == 0)
		r = seal_version(v, k, &s, pt, len, uid, &blob);
	if (r == 0 && exists) {
		r = db_secret_set_value(v->db, &s, &blob);
	} else if (r == 0) {
		s.ctime_ns = s.mtime_ns;
		r = db_secret_insert(v->db, &s, &blob);
	}
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	if (r == 0 && out)
		*out = s;
out:
	db_blob_free(&blob);
	key_put(v, k);
	return r;
}

int vault_rename(struct vault *v, int64_t secret_id, const char *newname, bool noreplace,
		 int64_t *replaced_id)
{
	struct db_blob blob = { 0 }, nblob = { 0 };
	struct secbuf *pt = NULL;
	struct db_secret s, t;
	struct inst_key *k;
	struct seal_ad ad;
	bool tampered = false;
	int r;

	if (replaced_id)
		*replaced_id = 0;
	if (!name_valid(newname))
		return -EINVAL;
	r = db_secret_get(v->db, secret_id, &s);
	if (r < 0)
		return r;
	r = key_get(v, s.instance_id, &k);
	if (r < 0)
		return r;
	r = db_begin(v->db);
	if (r < 0)
		goto out;
	r = db_secret_blob(v->db, secret_id, &s, &blob);
	if (r < 0 || strcmp(s.name, newname) == 0)
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
	} else if (r == 0) {
		r = db_secret_delete(v->db, t.id);
		if (r == 0 && replaced_id)
			*replaced_id = t.id;
	} else if (r == -ENOENT) {
		r = 0;
	}
	if (r < 0)
		goto done;
	snprintf(s.name, sizeof(s.name), "%s", newname);
	s.version++;
	s.chtime_ns = db_now_ns();
	seal_ad_value(&ad, k->name, s.name, s.version);
	r = seal_blob(&nblob, k->key, &ad, pt->data, pt->len);
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
out:
	secbuf_free(pt);
	db_blob_free(&blob);
	db_blob_free(&nblob);
	key_put(v, k);
	return r;
}

int vault_delete(struct vault *v, int64_t secret_id)
{
	return db_secret_delete(v->db, secret_id);
}
