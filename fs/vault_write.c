/* The vault's write path: a new version sealed for (instance, key,
 * version) and written in one transaction with its audit entry, so readers
 * see the old value or the new; history, renames and the trash. */
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
#include "array.h"
#include "audit.h"
#include "log.h"
#include "name.h"
#include "policy.h"
#include "template.h"
#include "vault_int.h"

static enum nl_policy newline_policy(struct vault *v, const char *instance)
{
	const struct instance_conf *ic = policy_instance(v->conf, instance);

	return ic && ic->has_newline ? ic->newline : v->conf->newline;
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

/* Ends a write transaction: the change's audit entries join it, and all
 * are committed, or all rolled back. */
static int commit_audited_n(struct vault *v, int r, const struct audit_entry *const *audit,
			    size_t n)
{
	if (r == 0)
		r = audit_record_txn_n(v->audit, v->db, audit, n);
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	return r;
}

static int commit_audited(struct vault *v, int r, const struct audit_entry *audit)
{
	return commit_audited_n(v, r, &audit, 1);
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

int vault_create_reserve(struct vault *v, int64_t *id)
{
	return db_secret_id_reserve(v->db, id);
}

/* A secret made empty holds version 0 until it is first written; version
 * 0 never enters the history. Made empty, its commit is not synced unless
 * asked: the commit of its first value (or any later one) makes it
 * durable, as a file created on a local filesystem is by the sync of its
 * data. Made with its first value (version 1), it is synced as an update
 * is: one sync per new key written. Its audit entries are in the same
 * transaction, so they stand or fall together with it. */
int vault_create_as(struct vault *v, struct db_secret *s, const unsigned char *pt, size_t len,
		    uid_t by, bool sync, const struct audit_entry *created,
		    const struct audit_entry *wrote)
{
	const struct audit_entry *audit[2] = { created, pt ? wrote : NULL };
	struct db_blob blob = { 0 };
	struct inst_key *k = NULL;
	uint32_t flags = 0;
	int r;

	if (!name_valid(s->name))
		return -EINVAL;
	if (pt && len > v->conf->max_value_size)
		return -EFBIG;
	r = pt || sync ? db_begin(v->db) : db_begin_lazy(v->db);
	if (r < 0)
		return r;
	r = vault_key_current(v, s->instance_id, &k);
	if (r < 0)
		goto done;
	if (pt)
		len = apply_newline(v, k->name, pt, len, &flags);
	s->mode &= 07777;
	s->version = pt ? 1 : 0;
	s->size = pt ? len : 0;
	s->flags = flags;
	s->mtime_ns = s->chtime_ns = db_now_ns();
	if (!s->ctime_ns)
		s->ctime_ns = s->mtime_ns;
	s->updated_by = by;
	r = seal_value(k, s, pt ? pt : (const unsigned char *)"", s->size, &blob);
	if (r == 0)
		r = s->id ? db_secret_insert_as(v->db, s, &blob) : db_secret_insert(v->db, s, &blob);
done:
	r = commit_audited_n(v, r, audit, 2);
	db_blob_free(&blob);
	if (k)
		vault_key_put(v, k);
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

static int versions_add(void *ctx, const struct db_version *ver)
{
	return array_i64_add(ctx, (int64_t)ver->version);
}

int vault_history_visit(struct vault *v, int64_t secret_id,
			int (*fn)(void *, uint64_t version, const struct db_blob *blob),
			void *ctx)
{
	struct array_i64 l = { 0 };
	struct db_blob blob = { 0 };
	struct db_version ver;
	int r;

	/* Listed first and visited after, so fn may change the rows. */
	r = db_version_each(v->db, secret_id, versions_add, &l);
	for (size_t i = 0; r == 0 && i < l.n; i++) {
		r = db_version_get(v->db, secret_id, (uint64_t)l.v[i], &ver, &blob);
		if (r == 0)
			r = fn(ctx, (uint64_t)l.v[i], &blob);
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

/* Inside vault_rename's transaction: what becomes of the history of s and
 * of the key already named newname, if any (s->version is then the one
 * the renamed value takes). */
static int rename_onto(struct vault *v, const struct inst_key *k, struct db_secret *s,
		       const char *newname, bool noreplace, uid_t by, int64_t *replaced_id)
{
	struct db_secret t;
	int r = db_secret_find(v->db, s->instance_id, newname, &t);

	if (r == -ENOENT)
		return vault_reseal_history(v, s->id, k->key, k->name, s->name, k->key, newname);
	if (r == 0 && noreplace)
		return -EEXIST;
	if (r == 0 && by != 0 && by != t.uid) {
		r = trash_in_txn(v, t.id, by);
		if (r == 0)
			r = vault_reseal_history(v, s->id, k->key, k->name, s->name, k->key,
						 newname);
	} else if (r == 0) {
		r = db_version_archive(v->db, t.id, false, vault_keep_old(v));
		if (r == 0)
			r = db_secret_adopt(v->db, s->id, t.id);
		s->version = t.version + 1;
	}
	if (r == 0 && replaced_id)
		*replaced_id = t.id;
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
	struct db_secret s;
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
	r = rename_onto(v, k, &s, newname, noreplace, by, replaced_id);
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
