/* Going back: rollback to an old version, undelete, purge. Values pass
 * through locked memory only; every step is one transaction. */
#include <errno.h>
#include <stdint.h>

#include "../db/db_versions.h"
#include "log.h"
#include "vault_int.h"

int vault_rollback(struct vault *v, int64_t secret_id, uint64_t version, uid_t by,
		   struct db_secret *out)
{
	struct db_blob blob = { 0 };
	struct secbuf *pt = NULL;
	struct inst_key *k = NULL;
	struct db_version ver;
	struct db_secret s;
	struct seal_ad ad;
	int r = db_begin(v->db);

	if (r < 0)
		return r;
	r = db_secret_get(v->db, secret_id, &s);
	if (r == 0 && s.version == version)
		r = -EALREADY;
	if (r == 0)
		r = vault_key_current(v, s.instance_id, &k);
	if (r == 0)
		r = db_version_get(v->db, secret_id, version, &ver, &blob);
	if (r == 0) {
		seal_ad_value(&ad, k->name, s.name, version);
		r = seal_open(&pt, k->key->data, &ad, blob.data, blob.len);
		if (r == -EBADMSG || r == -EINVAL) {
			log_err("%s/%s: old version %llu fails authentication (tampered or "
				"damaged); not rolling back to it", k->name, s.name,
				(unsigned long long)version);
			r = -EIO;
		}
	}
	/* The value exactly as it was stored, newline flag included. */
	if (r == 0)
		r = vault_store_next(v, k, &s, pt->data, pt->len, ver.flags, by);
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	if (k)
		vault_key_put(v, k);
	secbuf_free(pt);
	db_blob_free(&blob);
	if (r == 0 && out)
		*out = s;
	return r;
}

int vault_undelete(struct vault *v, int64_t instance_id, const char *name,
		   struct db_secret *out)
{
	struct db_trash t;
	int r = db_begin(v->db);

	if (r < 0)
		return r;
	r = db_trash_find(v->db, instance_id, name, vault_undelete_since(v), &t);
	if (r == 0)
		r = db_trash_restore(v->db, t.secret_id, db_now_ns());
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	if (r == 0 && out)
		r = db_secret_get(v->db, t.secret_id, out);
	return r;
}

int vault_purge(struct vault *v, int64_t instance_id, const char *name, int64_t *count)
{
	int r = db_begin(v->db);

	if (r < 0)
		return r;
	r = db_trash_purge(v->db, instance_id, name, INT64_MAX, count);
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	/* The rows are overwritten in the store; the copies it keeps besides
	 * go now if no reader still needs them, else later. */
	if (r == 0 && db_scrub(v->db) < 0)
		log_debug("purge: older copies are still in use; they go later");
	return r;
}
