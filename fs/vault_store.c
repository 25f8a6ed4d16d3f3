/* The store as the commands see it: look-ups and listings of instances,
 * secrets, old versions and the trash; the audit log on the vault's
 * connection; the checks doctor and mount run; backup and restore. Each is
 * named for what a command needs, so src/ reaches the database only
 * through the vault layer. None of them opens a value. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../db/db_backup.h"
#include "../db/db_versions.h"
#include "audit.h"
#include "vault_int.h"

int vault_instance_find(struct vault *v, const char *name, struct db_instance *out)
{
	return db_instance_find(v->db, name, out);
}

int vault_instance_each(struct vault *v, int (*fn)(void *, const struct db_instance *),
			void *ctx)
{
	return db_instance_each(v->db, 0, fn, ctx);
}

int vault_secret_find(struct vault *v, int64_t instance_id, const char *name,
		      struct db_secret *out)
{
	return db_secret_find(v->db, instance_id, name, out);
}

int vault_secret_each(struct vault *v, int64_t instance_id,
		      int (*fn)(void *, const struct db_secret *), void *ctx)
{
	return db_secret_each(v->db, instance_id, 0, fn, ctx);
}

int64_t vault_secret_count(struct vault *v, int64_t instance_id)
{
	return db_secret_count(v->db, instance_id);
}

int vault_version_each(struct vault *v, int64_t secret_id,
		       int (*fn)(void *, const struct db_version *), void *ctx)
{
	return db_version_each(v->db, secret_id, fn, ctx);
}

int vault_trash_each(struct vault *v, int64_t instance_id,
		     int (*fn)(void *, const struct db_trash *), void *ctx)
{
	return db_trash_each(v->db, instance_id, fn, ctx);
}

int vault_audit_open(struct vault *v, const struct daemon_conf *conf, struct audit **out)
{
	return audit_open_db(out, v->db, v->audit_key, conf);
}

int vault_audit_floor(struct vault *v, int64_t *floor)
{
	return db_audit_floor(v->db, floor);
}

int vault_audit_entry_mac(struct vault *v, int64_t seq, unsigned char *out, size_t len)
{
	return db_audit_entry_mac(v->db, seq, out, len);
}

int vault_store_check(struct vault *v, char *err, size_t errlen)
{
	int r = db_check(v->db);

	if (r < 0)
		snprintf(err, errlen, "%s", r == -EPROTO ? db_errmsg(v->db) : strerror(-r));
	return r;
}

int vault_rows_check(struct vault *v, void (*bad)(void *, const char *what), void *ctx)
{
	return db_auth_check_all(v->db, bad, ctx);
}

int vault_instance_state_check(struct vault *v, int64_t instance_id)
{
	int64_t seq;

	return db_state_check(v->db, instance_id, &seq, NULL, NULL);
}

int vault_retag_into(struct vault *v, struct vault *into, char *err, size_t errlen)
{
	int r = db_begin(v->db);

	if (r < 0)
		return r;
	r = vault_retag_for(v, into);
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	if (r < 0)
		snprintf(err, errlen, "%s", db_errmsg(NULL));
	return r;
}

int vault_backup(struct vault *v, const char *path)
{
	return db_backup(v->db, path);
}

int vault_restore(struct vault *v, const char *path)
{
	return db_restore(v->db, path);
}
