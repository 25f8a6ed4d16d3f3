/*
 * New keys for an open vault: reloading the master key, rotating it, and
 * rotating an instance's data key. Rules this file keeps:
 *  - a rotation is one transaction: after a crash the vault opens with
 *    exactly one of the two keys, the old or the new, and nothing else;
 *  - a master-key rotation re-wraps the data keys, the rows' tag key and
 *    the check value; the values and the row tags are untouched, so a
 *    mounted daemon's cached data keys and tag key stay good and it only needs the new wrapping key for new
 *    instances (reload, or wrap_renew when it finds its key stale);
 *  - an instance rotation re-seals every value of the instance, old
 *    versions and deleted secrets included, then wraps the new data key as
 *    the next generation; readers holding the old one notice the
 *    generation and unwrap again;
 *  - keys and plaintext stay in locked memory and are wiped on every path.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../crypto/key.h"
#include "../db/db_versions.h"
#include "array.h"
#include "audit.h"
#include "log.h"
#include "vault_int.h"

/* 0 if the wrapping key opens the vault's check value. */
static int wrap_opens_vault(struct vault *v, const struct secbuf *wrap)
{
	struct db_blob blob = { 0 };
	struct secbuf *pt = NULL;
	struct seal_ad ad;
	int r;

	r = db_meta_get(v->db, VAULT_META_CHECK, &blob);
	if (r < 0)
		return r == -ENOENT ? -EPROTO : r;
	seal_ad_check(&ad, 2);
	r = seal_open(&pt, wrap->data, &ad, blob.data, blob.len);
	if (r == -EBADMSG || r == -EINVAL)
		r = -EKEYREJECTED;
	secbuf_free(pt);
	db_blob_free(&blob);
	return r;
}

int vault_reload_key(struct vault *v, char *err, size_t errlen)
{
	struct key_source src = { .file = v->conf->key_file };
	struct secbuf *master = NULL;
	struct vault_keys keys = { 0 };
	char warn[512];
	int r;

	r = key_load(&master, &src, err, errlen, warn, sizeof(warn));
	if (r == 0)
		r = vault_keys_derive(&keys, master);
	secbuf_free(master);
	if (r == 0) {
		r = wrap_opens_vault(v, keys.wrap);
		if (r == -EKEYREJECTED)
			snprintf(err, errlen, "the key in %s does not open %s (is the new key "
				 "installed there?)", src.file && src.file[0] ? src.file :
				 "the key source", db_path(v->db));
		else if (r < 0)
			snprintf(err, errlen, "cannot check the key: %s", strerror(-r));
	}
	if (r == 0)
		vault_wrap_replace(v, &keys);
	/* Data keys are unwrapped again when needed, which also picks up an
	 * instance rotation or a restore; not while our key is stale. */
	if (r == 0 || vault_wrap_check(v) == 0)
		vault_keys_flush(v);
	vault_keys_free(&keys);
	return r;
}

static int instance_id_add(void *ctx, const struct db_instance *in)
{
	return array_i64_add(ctx, in->id);
}

static int rewrap_instance(struct vault *v, int64_t id, const struct secbuf *new_wrap,
			   char *name, char *err, size_t errlen)
{
	struct db_blob blob = { 0 }, nblob = { 0 };
	struct secbuf *dk = NULL;
	struct db_instance in;
	struct seal_ad ad;
	int r;

	r = db_instance_key(v->db, id, &in, &blob);
	if (r < 0)
		return r;
	memcpy(name, in.name, DB_NAME_MAX + 1);
	seal_ad_wrap(&ad, in.name, in.generation);
	r = vault_wrap_open(v, &ad, &blob, &dk);
	if (r == -EBADMSG || r == -EINVAL) {
		snprintf(err, errlen, "instance %s: its data key does not open (tampered or "
			 "damaged database); nothing was changed", in.name);
		r = -EIO;
	}
	if (r == 0)
		r = vault_seal_blob(&nblob, new_wrap, &ad, dk->data, dk->len);
	if (r == 0)
		r = db_instance_set_wrapped_key(v->db, id, in.generation, &nblob);
	secbuf_free(dk);
	db_blob_free(&blob);
	db_blob_free(&nblob);
	return r;
}

int vault_rotate_master(struct vault *v, const struct secbuf *new_master,
			vault_progress_fn progress, void *ctx, char *err, size_t errlen)
{
	struct vault_keys nk;
	struct db_blob check = { 0 }, rk = { 0 };
	struct array_i64 a = { 0 };
	char name[DB_NAME_MAX + 1];
	int r;

	err[0] = '\0';
	r = vault_keys_derive(&nk, new_master);
	if (r < 0)
		return r;
	if (wrap_opens_vault(v, nk.wrap) == 0) {
		snprintf(err, errlen, "the new key is the key in use");
		vault_keys_free(&nk);
		return -EINVAL;
	}
	r = db_begin(v->db);
	if (r < 0)
		goto out;
	/* Listed inside the transaction: no instance can be created meanwhile
	 * and be left wrapped with the old key. */
	r = db_instance_each(v->db, 0, instance_id_add, &a);
	for (size_t i = 0; r == 0 && i < a.n; i++) {
		r = rewrap_instance(v, a.v[i], nk.wrap, name, err, errlen);
		if (r == 0 && progress)
			progress(ctx, name, NULL);
	}
	if (r == 0)
		r = vault_check_value(nk.wrap, &check);
	if (r == 0)
		r = db_meta_set(v->db, VAULT_META_CHECK, check.data, check.len);
	/* The audit chain's key, sealed under the master key, moves with it. */
	if (r == 0)
		r = audit_rotate_master(v->db, v->audit_key, new_master);
	/* The rows' tag key is re-sealed; the tags stay as they are. */
	if (r == 0)
		r = vault_row_key_seal(nk.wrap, v->row_key, &rk);
	if (r == 0)
		r = db_meta_set(v->db, VAULT_META_ROW_KEY, rk.data, rk.len);
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	if (r == 0)
		vault_wrap_replace(v, &nk);
out:
	if (r < 0 && !err[0])
		snprintf(err, errlen, "%s; nothing was changed", strerror(-r));
	db_blob_free(&check);
	db_blob_free(&rk);
	vault_keys_free(&nk);
	free(a.v);
	return r;
}

struct reseal {
	struct vault *v;
	struct inst_key *k;
	const struct secbuf *nk;
	vault_progress_fn progress;
	void *ctx;
	char *err;
	size_t errlen;
};

static int reseal_current(struct reseal *rs, int64_t id)
{
	struct db_blob blob = { 0 }, nblob = { 0 };
	struct secbuf *pt = NULL;
	struct db_secret s;
	struct seal_ad ad;
	int r;

	r = db_secret_blob(rs->v->db, id, &s, &blob);
	if (r < 0)
		return r;
	seal_ad_value(&ad, rs->k->name, s.name, s.version);
	r = seal_open(&pt, rs->k->key->data, &ad, blob.data, blob.len);
	if (r == -EBADMSG || r == -EINVAL) {
		log_err("%s/%s: stored value fails authentication (tampered or damaged)",
			rs->k->name, s.name);
		r = -EIO;
	}
	if (r == 0)
		r = vault_seal_blob(&nblob, rs->nk, &ad, pt->data, pt->len);
	if (r == 0)
		r = db_secret_set_value(rs->v->db, &s, &nblob);
	secbuf_free(pt);
	db_blob_free(&blob);
	db_blob_free(&nblob);
	return r;
}

static int reseal_secret(void *ctx, int64_t id, const char *name, bool live)
{
	struct reseal *rs = ctx;
	int r = live ? reseal_current(rs, id) : 0;

	if (r == 0)
		r = vault_reseal_history(rs->v, id, rs->k->key, rs->k->name, name, rs->nk, name);
	if (r < 0)
		snprintf(rs->err, rs->errlen, "%s/%s%s: %s; nothing was changed", rs->k->name,
			 name, live ? "" : " (deleted)", r == -EIO ?
			 "a value fails authentication (tampered or damaged)" : strerror(-r));
	else if (rs->progress)
		rs->progress(rs->ctx, rs->k->name, name);
	return r;
}

int vault_rotate_instance(struct vault *v, int64_t instance_id, vault_progress_fn progress,
			  void *ctx, char *err, size_t errlen)
{
	struct reseal rs = { .v = v, .progress = progress, .ctx = ctx, .err = err,
			     .errlen = errlen };
	struct secbuf *nk = NULL;
	struct db_blob wrapped = { 0 };
	struct seal_ad ad;
	int r;

	err[0] = '\0';
	r = seal_keygen(&nk);
	if (r < 0)
		return r;
	rs.nk = nk;
	r = db_begin(v->db);
	if (r < 0)
		goto out;
	r = vault_key_current(v, instance_id, &rs.k);
	if (r == 0)
		r = db_instance_secret_ids(v->db, instance_id, reseal_secret, &rs);
	if (r == 0)
		r = vault_wrap_current(v);
	if (r == 0) {
		seal_ad_wrap(&ad, rs.k->name, rs.k->generation + 1);
		r = vault_wrap_seal(v, &ad, nk->data, nk->len, &wrapped);
	}
	if (r == 0)
		r = db_instance_set_wrapped_key(v->db, instance_id, rs.k->generation + 1,
						&wrapped);
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	if (rs.k)
		vault_key_put(v, rs.k);
	if (r == 0)
		vault_key_forget(v, instance_id);
out:
	if (r < 0 && !err[0])
		snprintf(err, errlen, "%s; nothing was changed", strerror(-r));
	secbuf_free(nk);
	db_blob_free(&wrapped);
	return r;
}

struct verify {
	struct vault *v;
	struct inst_key *k;
	const char *name;
	char *err;
	size_t errlen;
};

static int verify_blob(void *ctx, uint64_t version, const struct db_blob *blob)
{
	struct verify *vf = ctx;
	struct secbuf *pt = NULL;
	struct seal_ad ad;
	int r;

	seal_ad_value(&ad, vf->k->name, vf->name, version);
	r = seal_open(&pt, vf->k->key->data, &ad, blob->data, blob->len);
	secbuf_free(pt);
	if (r == -EBADMSG || r == -EINVAL) {
		snprintf(vf->err, vf->errlen, "%s/%s version %llu does not open",
			 vf->k->name, vf->name, (unsigned long long)version);
		r = -EIO;
	}
	return r;
}

static int verify_secret(void *ctx, int64_t id, const char *name, bool live)
{
	struct verify *vf = ctx;
	struct db_blob blob = { 0 };
	struct db_secret s;
	int r = 0;

	vf->name = name;
	if (live) {
		r = db_secret_blob(vf->v->db, id, &s, &blob);
		if (r == 0)
			r = verify_blob(vf, s.version, &blob);
		db_blob_free(&blob);
	}
	if (r == 0)
		r = vault_history_visit(vf->v, id, verify_blob, vf);
	return r;
}

/* Names the first row that fails; the rest go to the log. */
static void verify_row_failed(void *ctx, const char *what)
{
	struct verify *vf = ctx;

	log_err("%s: %s fails authentication", db_path(vf->v->db), what);
	if (!vf->err[0])
		snprintf(vf->err, vf->errlen, "%s fails authentication (tampered or damaged)",
			 what);
}

int vault_verify(struct vault *v, char *err, size_t errlen)
{
	struct verify vf = { .v = v, .err = err, .errlen = errlen };
	struct array_i64 a = { 0 };
	int r;

	err[0] = '\0';
	r = db_auth_check_all(v->db, verify_row_failed, &vf);
	if (r == 0)
		r = db_instance_each(v->db, 0, instance_id_add, &a);
	for (size_t i = 0; r == 0 && i < a.n; i++) {
		r = vault_key_get(v, a.v[i], &vf.k);
		if (r < 0) {
			snprintf(err, errlen, "instance id %lld: its data key does not open",
				 (long long)a.v[i]);
			break;
		}
		r = db_instance_secret_ids(v->db, a.v[i], verify_secret, &vf);
		vault_key_put(v, vf.k);
	}
	if (r < 0 && !err[0])
		snprintf(err, errlen, "%s", strerror(-r));
	free(a.v);
	return r;
}
