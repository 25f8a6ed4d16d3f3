/* Listings of an instance: rows, metadata and expected keys, by name. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../fs/policy.h"
#include "../fs/vault.h"
#include "cli.h"
#include "listing.h"

static struct listing_entry *entry_add(struct listing *l, const char *name)
{
	struct listing_entry *e;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 32;

		e = realloc(l->e, cap * sizeof(*e));
		if (!e)
			return NULL;
		l->e = e;
		l->cap = cap;
	}
	e = &l->e[l->n++];
	memset(e, 0, sizeof(*e));
	snprintf(e->name, sizeof(e->name), "%s", name);
	return e;
}

struct load_ctx {
	struct vault *v;
	struct listing *l;
};

static void load_meta(struct vault *v, struct listing_entry *e, enum meta_attr a, char *buf,
		      size_t size)
{
	size_t len = 0;

	if (vault_meta_get(v, e->s.id, a, buf, size - 1, &len) < 0)
		len = 0;
	buf[len] = '\0';
}

static int secret_cb(void *ctx, const struct db_secret *s)
{
	struct load_ctx *lc = ctx;
	struct listing_entry *e = entry_add(lc->l, s->name);

	if (!e)
		return -ENOMEM;
	e->exists = true;
	e->s = *s;
	load_meta(lc->v, e, META_DESCRIPTION, e->description, sizeof(e->description));
	load_meta(lc->v, e, META_TYPE, e->type, sizeof(e->type));
	if (s->flags & EXPIRY_FLAG) {
		e->limited = true;
		e->expired = expiry_get(lc->v, s, &e->limit) < 0;
		if (e->expired)
			memset(&e->limit, 0, sizeof(e->limit));	/* not this version's */
		else
			e->expired = expiry_spent(&e->limit, db_now_ns());
	}
	return 0;
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct listing_entry *)a)->name, ((const struct listing_entry *)b)->name);
}

int listing_load(struct cli *c, const char *instance, const struct db_instance *in,
		 struct listing *out)
{
	const struct instance_conf *ic = policy_instance(&c->conf, instance);
	struct load_ctx lc = { .v = c->vault, .l = out };
	struct listing_entry *e;
	size_t have;
	int r = 0;

	memset(out, 0, sizeof(*out));
	if (in)
		r = vault_secret_each(c->vault, in->id, secret_cb, &lc);
	have = out->n;
	for (size_t i = 0; r == 0 && ic && i < ic->n_expect; i++) {
		e = NULL;
		for (size_t j = 0; j < have && !e; j++)
			if (!strcmp(out->e[j].name, ic->expect[i]))
				e = &out->e[j];
		if (!e)
			e = entry_add(out, ic->expect[i]);
		if (!e)
			r = -ENOMEM;
		else
			e->expected = true;
	}
	if (r < 0) {
		listing_free(out);
		return r;
	}
	if (out->n)
		qsort(out->e, out->n, sizeof(*out->e), cmp_entry);
	return 0;
}

void listing_free(struct listing *l)
{
	free(l->e);
	memset(l, 0, sizeof(*l));
}

bool listing_entry_ok(const struct listing_entry *e)
{
	return e->exists && e->s.size > 0;
}

const char *listing_entry_state(const struct listing_entry *e)
{
	return !e->exists ? "missing" : listing_entry_ok(e) ? "configured" : "empty";
}

void listing_mode_string(mode_t mode, bool dir, char out[static 11])
{
	static const char rwx[] = "rwxrwxrwx";

	out[0] = dir ? 'd' : '-';
	for (int i = 0; i < 9; i++)
		out[i + 1] = mode & (0400 >> i) ? rwx[i] : '-';
	if (mode & S_ISVTX)
		out[9] = mode & 01 ? 't' : 'T';
	out[10] = '\0';
}

void listing_user_name(uid_t uid, char *buf, size_t size)
{
	struct passwd pw, *res = NULL;
	char tmp[1024];

	if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &res) == 0 && res)
		snprintf(buf, size, "%s", res->pw_name);
	else
		snprintf(buf, size, "%u", (unsigned)uid);
}

void listing_group_name(gid_t gid, char *buf, size_t size)
{
	struct group gr, *res = NULL;
	char tmp[1024];

	if (getgrgid_r(gid, &gr, tmp, sizeof(tmp), &res) == 0 && res)
		snprintf(buf, size, "%s", res->gr_name);
	else
		snprintf(buf, size, "%u", (unsigned)gid);
}
