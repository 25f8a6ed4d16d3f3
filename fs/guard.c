/*
 * FUSE requests against the access rules, and into the audit log. Rules
 * this file keeps:
 *  - the decision is made at open(), from the request's uid, gid and (when
 *    a rule needs them) supplementary groups and systemd unit; the file is
 *    opened direct_io, so no later read bypasses it;
 *  - every denial made here is recorded before the caller hears of it;
 *  - names and errno only: no value passes through here.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../crypto/secmem.h"
#include "access.h"
#include "guard.h"
#include "log.h"
#include "vault.h"

#define GROUPS_FIRST 64

/* Runs on every open: a plain copy, not snprintf's format machinery. */
static void copy_name(char *dst, size_t size, const char *src)
{
	size_t i;

	for (i = 0; src && src[i] && i + 1 < size; i++)
		dst[i] = src[i];
	dst[i] = '\0';
}

void guard_ref_init(fuse_req_t req, struct vault *v, struct guard_ref *ref,
		    const char *instance, const char *key)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	ref->who.uid = ctx->uid;
	ref->who.gid = ctx->gid;
	ref->who.pid = ctx->pid;
	if (vault_audit(v))
		audit_who_fill_comm(&ref->who);
	else
		snprintf(ref->who.comm, sizeof(ref->who.comm), "?");
	copy_name(ref->instance, sizeof(ref->instance), instance);
	copy_name(ref->key, sizeof(ref->key), key);
}

void guard_entry(const struct guard_ref *ref, enum audit_op op, const char *detail,
		 struct audit_entry *out)
{
	out->who = &ref->who;
	out->op = op;
	out->instance = ref->instance;
	out->key = ref->key;
	out->detail = detail;
}

void guard_done(struct vault *v, const struct guard_ref *ref, enum audit_op op, int result,
		const char *detail)
{
	audit_set_caller(NULL);
	audit_record(vault_audit(v), &ref->who, op, ref->instance, ref->key, result, detail);
}

/* The caller's supplementary groups, malloc'd; -1 when unknown. */
static int load_groups(fuse_req_t req, gid_t **out)
{
	int size = GROUPS_FIRST, n;
	gid_t *list;

	for (;;) {
		list = calloc((size_t)size, sizeof(*list));
		if (!list)
			return -1;
		n = fuse_req_getgroups(req, size, list);
		if (n < 0 || n <= size)
			break;
		free(list);
		size = n;
	}
	if (n < 0) {
		free(list);
		return -1;
	}
	*out = list;
	return n;
}

/* Runs a rule with what it needs to know of the caller. */
static int decide(fuse_req_t req, struct vault *v, const char *instance, int needs,
		  int (*rule)(const struct vault_conf *, const char *,
			      const struct access_who *, const char **),
		  const char **why)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct access_who w = { .uid = ctx->uid, .gid = ctx->gid };
	char unit[POLICY_UNIT_LEN];
	gid_t *groups = NULL;
	int r;

	if (needs & ACCESS_NEED_GROUPS) {
		w.ngroups = load_groups(req, &groups);
		w.groups = groups;
	}
	if ((needs & ACCESS_NEED_UNIT) && access_unit_of(ctx->pid, unit, sizeof(unit)) == 0)
		w.unit = unit;
	r = rule(vault_conf(v), instance, &w, why);
	free(groups);
	return r;
}

/* The secret's row (with its sealed value too if blob is not NULL) and the
 * names in it. */
static int names_of(struct vault *v, int64_t secret_id, struct guard_ref *ref,
		    struct db_secret *s, struct db_blob *blob)
{
	struct db_instance in;
	int r;

	r = blob ? db_secret_blob(vault_db(v), secret_id, s, blob) :
		   db_secret_get(vault_db(v), secret_id, s);
	if (r < 0)
		return r;
	memcpy(ref->key, s->name, sizeof(ref->key));
	/* Every open asks: the cache spares a query per open. */
	if (vault_instance_name_cached(v, s->instance_id, ref->instance))
		return 0;
	r = db_instance_get(vault_db(v), s->instance_id, &in);
	if (r < 0)
		return r;
	memcpy(ref->instance, in.name, sizeof(ref->instance));
	return 0;
}

static bool reads(int flags)
{
	return (flags & O_ACCMODE) != O_WRONLY;
}

/* The mode bits of a directory and, if s, of a secret in it, as stored
 * now: another mount or the command line may have changed them since the
 * kernel cached the attributes it checked. -EACCES with *why. */
static int stored_modes(fuse_req_t req, const struct db_instance *in, int dir_want,
			const struct db_secret *s, int want, const char **why)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct access_who w = { .uid = ctx->uid, .gid = ctx->gid };
	gid_t *groups = NULL;
	int r = 0;

	if (access_mode_needs_groups(&w, in->uid, in->gid, in->mode, dir_want) ||
	    (s && access_mode_needs_groups(&w, s->uid, s->gid, s->mode, want))) {
		w.ngroups = load_groups(req, &groups);
		w.groups = groups;
	}
	if (!access_mode_permits(&w, in->uid, in->gid, in->mode, dir_want)) {
		*why = "the instance's mode bits (as stored)";
		r = -EACCES;
	} else if (s && !access_mode_permits(&w, s->uid, s->gid, s->mode, want)) {
		*why = "the secret's mode bits (as stored)";
		r = -EACCES;
	}
	free(groups);
	return r;
}

static int open_modes(fuse_req_t req, struct vault *v, const struct db_secret *s, int flags,
		      const char **why)
{
	int want = (reads(flags) ? R_OK : 0) | ((flags & O_ACCMODE) != O_RDONLY ? W_OK : 0);
	struct db_instance in;
	int r;

	if (fuse_req_ctx(req)->uid == 0)
		return 0;
	r = db_instance_get(vault_db(v), s->instance_id, &in);
	return r < 0 ? r : stored_modes(req, &in, X_OK, s, want, why);
}

static int open_checked(fuse_req_t req, struct vault *v, int64_t secret_id, int flags,
			struct guard_ref *ref, struct db_secret *s, struct db_blob *blob)
{
	const char *why = "";
	int r;

	guard_ref_init(req, v, ref, NULL, NULL);
	r = names_of(v, secret_id, ref, s, blob);
	if (r < 0)
		return r;
	r = open_modes(req, v, s, flags, &why);
	if (r == 0 && reads(flags))
		r = decide(req, v, ref->instance, access_read_needs(vault_conf(v), ref->instance),
			   access_may_read, &why);
	if (r < 0)
		guard_done(v, ref, reads(flags) ? AUDIT_READ : AUDIT_WRITE, r, why);
	else
		audit_set_caller(&ref->who);	/* for an authentication failure */
	return r;
}

int guard_open_fetch(fuse_req_t req, struct vault *v, int64_t secret_id, int flags,
		     struct guard_ref *ref, struct db_secret *s, struct db_blob *blob)
{
	return open_checked(req, v, secret_id, flags, ref, s, blob);
}

void guard_opened(struct vault *v, const struct guard_ref *ref, int flags, int result)
{
	audit_set_caller(NULL);
	if (result == -ENOMEM)
		log_err("%s/%s: cannot lock memory for the value (%zu bytes locked now, "
			"memlock_budget %zu, 0 for none); open refused", ref->instance, ref->key,
			secmem_locked_bytes(), vault_conf(v)->memlock_budget);
	if (reads(flags))
		guard_done(v, ref, AUDIT_READ, result,
			   result == -ENOMEM ? "memory could not be locked" : NULL);
}

int guard_create(fuse_req_t req, struct vault *v, const struct db_instance *in,
		 const char *name, mode_t mode, struct guard_ref *ref)
{
	const struct vault_conf *c = vault_conf(v);
	const char *instance = in->name;
	char detail[64];
	const char *why = "";
	int r;

	guard_ref_init(req, v, ref, instance, name);
	r = stored_modes(req, in, W_OK | X_OK, NULL, 0, &why);
	if (r == 0)
		r = decide(req, v, instance, access_create_needs(c, instance), access_may_create,
			   &why);
	if (r == 0)
		r = access_mode_allowed(c, instance, mode, &why);
	if (r < 0) {
		snprintf(detail, sizeof(detail), "%s (mode %04o, max_mode %04o)", why,
			 (unsigned)mode, (unsigned)access_max_mode(c, instance));
		guard_done(v, ref, AUDIT_CREATE, r, r == -EPERM ? detail : why);
	}
	return r;
}

int guard_change(fuse_req_t req, struct vault *v, int64_t instance_id, const char *name,
		 enum audit_op op, const char *detail, struct guard_ref *ref)
{
	const struct vault_conf *c = vault_conf(v);
	struct db_instance in;
	const char *why = "";
	char msg[DB_NAME_MAX + 64];
	int r;

	r = db_instance_get(vault_db(v), instance_id, &in);
	guard_ref_init(req, v, ref, r == 0 ? in.name : NULL, name);
	if (r < 0)
		return r;
	r = stored_modes(req, &in, W_OK | X_OK, NULL, 0, &why);
	if (r == 0)
		r = decide(req, v, in.name, access_create_needs(c, in.name), access_may_create,
			   &why);
	if (r < 0) {
		snprintf(msg, sizeof(msg), "%s%s%s", why, detail ? "; " : "", detail ? detail : "");
		guard_done(v, ref, op, r, msg);
	} else {
		audit_set_caller(&ref->who);
	}
	return r;
}

int guard_sticky(struct vault *v, int64_t instance_id, uid_t secret_owner,
		 const struct guard_ref *ref, enum audit_op op)
{
	struct db_instance in;
	uid_t uid = ref->who.uid;
	int r = db_instance_get(vault_db(v), instance_id, &in);

	if (r < 0)
		return r;
	if (!(in.mode & S_ISVTX) || uid == 0 || uid == secret_owner || uid == in.uid)
		return 0;
	guard_done(v, ref, op, -EPERM, "sticky instance: not the owner of the secret");
	return -EPERM;
}

static enum audit_op setattr_op(int to_set)
{
	if (to_set & FUSE_SET_ATTR_MODE)
		return AUDIT_CHMOD;
	if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
		return AUDIT_CHOWN;
	return AUDIT_TRUNCATE;
}

static void setattr_detail(const struct stat *attr, int to_set, char *buf, size_t size)
{
	int n = 0;

	buf[0] = '\0';
	if (to_set & FUSE_SET_ATTR_MODE)
		n += snprintf(buf + n, size - (size_t)n, "mode %04o ",
			      (unsigned)(attr->st_mode & 07777));
	if ((to_set & FUSE_SET_ATTR_UID) && (size_t)n < size)
		n += snprintf(buf + n, size - (size_t)n, "uid %u ", (unsigned)attr->st_uid);
	if ((to_set & FUSE_SET_ATTR_GID) && (size_t)n < size)
		n += snprintf(buf + n, size - (size_t)n, "gid %u ", (unsigned)attr->st_gid);
	if ((to_set & FUSE_SET_ATTR_SIZE) && (size_t)n < size)
		n += snprintf(buf + n, size - (size_t)n, "size %lld ", (long long)attr->st_size);
	if (n > 0 && (size_t)n <= size)
		buf[n - 1] = '\0';
}

int guard_setattr(fuse_req_t req, struct vault *v, int64_t instance_id, int64_t secret_id,
		  const struct stat *attr, int to_set, struct guard_ref *ref)
{
	struct db_instance in;
	struct db_secret s;
	char detail[128], msg[192];
	const char *why = "";
	int r;

	guard_ref_init(req, v, ref, NULL, NULL);
	if (secret_id) {
		r = names_of(v, secret_id, ref, &s, NULL);
	} else {
		r = db_instance_get(vault_db(v), instance_id, &in);
		if (r == 0)
			memcpy(ref->instance, in.name, sizeof(ref->instance));
	}
	if (r == 0 && secret_id && (to_set & FUSE_SET_ATTR_MODE))
		r = access_mode_allowed(vault_conf(v), ref->instance, attr->st_mode, &why);
	if (r == 0)
		audit_set_caller(&ref->who);
	if (r == -EPERM) {
		setattr_detail(attr, to_set, detail, sizeof(detail));
		snprintf(msg, sizeof(msg), "%s: %s, max_mode %04o", why, detail,
			 (unsigned)access_max_mode(vault_conf(v), ref->instance));
		guard_done(v, ref, AUDIT_CHMOD, r, msg);
	}
	return r;
}

void guard_setattr_done(struct vault *v, const struct guard_ref *ref,
			const struct stat *attr, int to_set, int result)
{
	char detail[128];

	audit_set_caller(NULL);
	if (!(to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID |
			FUSE_SET_ATTR_SIZE)))
		return;		/* times only: nothing changes */
	setattr_detail(attr, to_set, detail, sizeof(detail));
	guard_done(v, ref, setattr_op(to_set), result, detail);
}
