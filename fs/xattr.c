/* The metadata of a secret as extended attributes. The kernel checks read
 * (getxattr) and write (setxattr) permission on the file for user.* names
 * before we see the request; ownership is ours to check. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>

#include "expiry.h"
#include "vault.h"
#include "xattr.h"

enum xattr_kind {
	X_DESCRIPTION, X_TYPE, X_VERSION, X_CREATED, X_UPDATED, X_UPDATED_BY, X_NONE,
};

static const struct {
	const char *name;
	enum meta_attr attr;	/* for the writable ones */
} xattrs[X_NONE] = {
	[X_DESCRIPTION] = { "user.description", META_DESCRIPTION },
	[X_TYPE] = { "user.type", META_TYPE },
	[X_VERSION] = { "user.vaultfs.version", META_COUNT },
	[X_CREATED] = { "user.vaultfs.created", META_COUNT },
	[X_UPDATED] = { "user.vaultfs.updated", META_COUNT },
	[X_UPDATED_BY] = { "user.vaultfs.updated_by", META_COUNT },
};

static enum xattr_kind xattr_kind(const char *name)
{
	for (int i = 0; i < X_NONE; i++)
		if (!strcmp(name, xattrs[i].name))
			return (enum xattr_kind)i;
	return X_NONE;
}

static bool writable(enum xattr_kind k)
{
	return k == X_DESCRIPTION || k == X_TYPE;
}

static int read_only_value(const struct db_secret *s, enum xattr_kind k,
			   char buf[static XATTR_BUF_MAX])
{
	switch (k) {
	case X_VERSION:
		return snprintf(buf, XATTR_BUF_MAX, "%llu", (unsigned long long)s->version);
	case X_CREATED:
		meta_format_time(s->ctime_ns, buf);
		return (int)strlen(buf);
	case X_UPDATED:
		meta_format_time(s->mtime_ns, buf);
		return (int)strlen(buf);
	case X_UPDATED_BY:
		return snprintf(buf, XATTR_BUF_MAX, "%u", (unsigned)s->updated_by);
	default:
		return -ENODATA;
	}
}

int xattr_get(struct vault *v, int64_t secret_id, const char *name,
	      char buf[static XATTR_BUF_MAX])
{
	enum xattr_kind k = xattr_kind(name);
	struct db_secret s;
	size_t len;
	int r;

	if (!strcmp(name, EXPIRY_XATTR))
		return expiry_xattr_get(v, secret_id, buf, XATTR_BUF_MAX);
	if (k == X_NONE)
		return -ENODATA;
	if (writable(k)) {
		r = vault_meta_get(v, secret_id, xattrs[k].attr, buf, XATTR_BUF_MAX, &len);
		return r == -ENOENT ? -ENODATA : r < 0 ? r : (int)len;
	}
	r = db_secret_get(vault_db(v), secret_id, &s);
	return r < 0 ? r : read_only_value(&s, k, buf);
}

int xattr_list(struct vault *v, int64_t secret_id, char buf[static XATTR_BUF_MAX])
{
	char val[XATTR_BUF_MAX];
	size_t used = 0, n;
	int r;

	for (int i = 0; i < X_NONE; i++) {
		if (writable((enum xattr_kind)i)) {
			r = xattr_get(v, secret_id, xattrs[i].name, val);
			if (r == -ENODATA)
				continue;
			if (r < 0)
				return r;
		}
		n = strlen(xattrs[i].name) + 1;
		if (used + n > XATTR_BUF_MAX)
			return -ERANGE;
		memcpy(buf + used, xattrs[i].name, n);
		used += n;
	}
	r = expiry_xattr_get(v, secret_id, val, sizeof(val));
	n = sizeof(EXPIRY_XATTR);
	if (r >= 0 && used + n <= XATTR_BUF_MAX) {
		memcpy(buf + used, EXPIRY_XATTR, n);
		used += n;
	}
	return (int)used;
}

/* user.vaultfs.expires: value NULL removes it. Like a write, only the
 * secret's owner or root may. */
static int expiry_xattr_change(struct vault *v, int64_t secret_id, const void *value,
			       size_t len, int flags, uid_t caller)
{
	char old[XATTR_BUF_MAX];
	struct db_secret s;
	int r = db_secret_get(vault_db(v), secret_id, &s);

	if (r == 0 && caller != 0 && caller != s.uid)
		r = -EPERM;
	if (r == 0 && (flags & (XATTR_CREATE | XATTR_REPLACE))) {
		r = expiry_xattr_get(v, secret_id, old, sizeof(old));
		r = r >= 0 && (flags & XATTR_CREATE) ? -EEXIST :
		    r == -ENODATA && (flags & XATTR_REPLACE) ? -ENODATA :
		    r == -ENODATA || r >= 0 ? 0 : r;
	}
	if (r < 0)
		return r;
	return value ? expiry_xattr_set(v, secret_id, value, len, caller) :
		       expiry_xattr_remove(v, secret_id, caller);
}

static int may_change(struct vault *v, int64_t secret_id, enum xattr_kind k, uid_t caller)
{
	struct db_secret s;
	int r;

	if (k == X_NONE)
		return -ENOTSUP;
	if (!writable(k))
		return -EPERM;
	r = db_secret_get(vault_db(v), secret_id, &s);
	if (r == 0 && caller != 0 && caller != s.uid)
		r = -EPERM;
	return r;
}

int xattr_set(struct vault *v, int64_t secret_id, const char *name, const void *value,
	      size_t len, int flags, uid_t caller)
{
	enum xattr_kind k = xattr_kind(name);
	char old[XATTR_BUF_MAX];
	int r;

	if (!strcmp(name, EXPIRY_XATTR))
		return expiry_xattr_change(v, secret_id, value, len, flags, caller);
	r = may_change(v, secret_id, k, caller);
	if (r < 0)
		return r;
	if (flags & (XATTR_CREATE | XATTR_REPLACE)) {
		r = xattr_get(v, secret_id, name, old);
		if (r >= 0 && (flags & XATTR_CREATE))
			return -EEXIST;
		if (r == -ENODATA && (flags & XATTR_REPLACE))
			return -ENODATA;
		if (r < 0 && r != -ENODATA)
			return r;
	}
	return vault_meta_set(v, secret_id, xattrs[k].attr, value, len);
}

int xattr_remove(struct vault *v, int64_t secret_id, const char *name, uid_t caller)
{
	enum xattr_kind k = xattr_kind(name);
	char old[XATTR_BUF_MAX];
	int r;

	if (!strcmp(name, EXPIRY_XATTR))
		return expiry_xattr_change(v, secret_id, NULL, 0, 0, caller);
	r = may_change(v, secret_id, k, caller);
	if (r == 0)
		r = xattr_get(v, secret_id, name, old);
	if (r >= 0)
		r = vault_meta_set(v, secret_id, xattrs[k].attr, "", 0);
	return r;
}
