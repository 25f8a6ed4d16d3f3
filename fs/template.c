/* Templates in the vault: storing them, rendering from one state of an
 * instance, and which templates name a key (the text side is
 * template_text.c). The rules it keeps are in template.h. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../crypto/seal.h"
#include "access.h"
#include "array.h"
#include "audit.h"
#include "log.h"
#include "template.h"
#include "vault_int.h"

/* --- the vault's side --- */

static size_t stat_size = 1024 * 1024;

void template_set_stat_size(size_t max_value_size)
{
	stat_size = max_value_size;
}

size_t template_stat_size(void)
{
	return stat_size;
}

int template_store(struct vault *v, int64_t instance_id, const char *name,
		   const unsigned char *src, size_t len, uid_t uid, gid_t gid,
		   struct template_error *e, const struct audit_entry *audit,
		   struct db_secret *out)
{
	struct db_blob blob = { 0 };
	struct db_secret s = { 0 };
	struct inst_key *k = NULL;
	struct seal_ad ad;
	int r = template_check(src, len, e);

	if (r < 0)
		return r;
	if (!name_valid(name))
		return -EINVAL;
	if (len > v->conf->max_value_size)
		return -EFBIG;
	r = db_begin(v->db);
	if (r < 0)
		return r;
	r = vault_key_current(v, instance_id, &k);
	if (r == 0)
		r = db_secret_find(v->db, instance_id, name, &s);
	if (r == 0 && !(s.flags & TEMPLATE_FLAG)) {
		r = -EEXIST;
	} else if (r == 0) {
		r = vault_store_next(v, k, &s, src, len, TEMPLATE_FLAG, uid);
	} else if (r == -ENOENT) {
		memset(&s, 0, sizeof(s));
		s.instance_id = instance_id;
		snprintf(s.name, sizeof(s.name), "%s", name);
		s.uid = uid;
		s.gid = gid;
		s.mode = vault_secret_mode(v, k->name, 0666);
		s.version = 1;
		s.size = len;
		s.flags = TEMPLATE_FLAG;
		s.ctime_ns = s.mtime_ns = s.chtime_ns = db_now_ns();
		s.updated_by = uid;
		seal_ad_value(&ad, k->name, s.name, s.version);
		r = vault_seal_blob(&blob, k->key, &ad, src, len);
		if (r == 0)
			r = db_secret_insert(v->db, &s, &blob);
	}
	if (r == 0)
		r = audit_record_txn(v->audit, v->db, audit);
	if (r == 0)
		r = db_commit(v->db);
	else
		db_rollback(v->db);
	db_blob_free(&blob);
	if (k)
		vault_key_put(v, k);
	if (r == 0 && out)
		*out = s;
	return r;
}

int template_source(struct vault *v, const struct db_secret *t, struct secbuf **out)
{
	*out = NULL;
	if (!(t->flags & TEMPLATE_FLAG))
		return -EMEDIUMTYPE;
	return vault_read(v, t->id, out, NULL);
}

/* The template owner as access_mode_permits sees a caller: uid, its
 * primary group and its groups from the user database (none if it has no
 * entry: then only the others' bits can let it read). */
struct owner {
	struct access_who who;
	gid_t groups[64];
	bool loaded;
};

static void owner_load(struct owner *o, uid_t uid)
{
	struct passwd pw, *res = NULL;
	char buf[4096];
	int n = (int)(sizeof(o->groups) / sizeof(o->groups[0]));

	o->loaded = true;
	o->who.ngroups = 0;
	o->who.groups = o->groups;
	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) != 0 || !res)
		return;
	o->who.gid = pw.pw_gid;
	if (getgrouplist(pw.pw_name, pw.pw_gid, o->groups, &n) < 0)
		n = (int)(sizeof(o->groups) / sizeof(o->groups[0]));
	o->who.ngroups = n;
}

/* Could the template's owner read key s of instance in, by its mode bits
 * and the instance's read rules? */
static bool owner_may_read(struct vault *v, struct owner *o, const struct db_instance *in,
			   const struct db_secret *s)
{
	const char *why;

	/* The user database only when the answer may depend on groups. */
	if (!o->loaded && o->who.uid != 0 &&
	    (o->who.uid != s->uid || o->who.uid != in->uid ||
	     access_read_needs(v->conf, in->name) & ACCESS_NEED_GROUPS))
		owner_load(o, o->who.uid);
	return access_mode_permits(&o->who, in->uid, in->gid, in->mode, X_OK) &&
	       access_mode_permits(&o->who, s->uid, s->gid, s->mode, R_OK) &&
	       access_may_read(v->conf, in->name, &o->who, &why) == 0;
}

/* The values of one rendering, by key. */
struct fetched {
	struct fetched_key {
		char name[NAME_MAX_LEN + 1];
		struct secbuf *val;
	} *k;
	size_t n, cap;
};

static void fetched_clear(struct fetched *f)
{
	for (size_t i = 0; i < f->n; i++) {
		secbuf_free(f->k[i].val);
		f->k[i].val = NULL;
	}
	f->n = 0;
}

/* Room for one more value. */
static int fetched_grow(struct fetched *f)
{
	struct fetched_key *k = array_room(f->k, f->n, &f->cap, sizeof(*k));

	if (!k)
		return -ENOMEM;
	f->k = k;
	return 0;
}

static void fetched_free(struct fetched *f)
{
	fetched_clear(f);
	free(f->k);
}

struct render {
	struct vault *v;
	const struct db_secret *t;
	struct db_instance in;
	struct owner owner;
	struct fetched f;
	struct template_fail *why;
};

static int fail_key(struct render *rd, int r, const char *key, const char *reason)
{
	rd->why->err = r;
	snprintf(rd->why->key, sizeof(rd->why->key), "%s", key);
	rd->why->reason = reason;
	return r;
}

static int fetch_key(void *ctx, const char *key)
{
	struct render *rd = ctx;
	struct fetched *f = &rd->f;
	struct db_secret s, m;
	int r = db_secret_find(vault_db(rd->v), rd->t->instance_id, key, &s);

	if (r == -ENOENT)
		return fail_key(rd, -ENOKEY, key, "no such key");
	if (r < 0)
		return fail_key(rd, r, key, "cannot look it up");
	if (s.flags & TEMPLATE_FLAG)
		return fail_key(rd, -EINVAL, key, "is a template (templates don't nest)");
	/* A flag this renderer does not know may limit reads (expiry, read
	 * counts): fail closed rather than read around it. */
	if (s.flags & ~(uint32_t)(TEMPLATE_FLAG | DB_SECRET_NL_STRIPPED))
		return fail_key(rd, -EACCES, key, "carries a limit templates don't apply");
	if (!owner_may_read(rd->v, &rd->owner, &rd->in, &s))
		return fail_key(rd, -EACCES, key, "the template's owner may not read it");
	r = fetched_grow(f);
	if (r < 0)
		return fail_key(rd, r, key, "out of memory");
	f->k[f->n].val = NULL;
	r = vault_read(rd->v, s.id, &f->k[f->n].val, &m);
	if (r == -ENOENT)
		return fail_key(rd, -ENOKEY, key, "no such key");
	if (r < 0)
		return fail_key(rd, r, key, "cannot read it");
	memcpy(f->k[f->n++].name, key, NAME_MAX_LEN + 1);
	return 0;
}

static int lookup_fetched(void *ctx, const char *key, const struct secbuf **out)
{
	struct fetched *f = ctx;

	for (size_t i = 0; i < f->n; i++)
		if (!strcmp(f->k[i].name, key)) {
			*out = f->k[i].val;
			return 0;
		}
	return -ENOKEY;
}

/* The instance's seq as the thread's snapshot shows it. Every commit that
 * changes which version of a key is live bumps it, and the snapshots the
 * thread reads in only move forward (vault_read may leave the caller's
 * snapshot for a newer one): the same seq before and after the reads
 * means no such commit came between, so the values are one state. */
static int snapshot_seq(struct render *rd, int64_t *seq)
{
	return db_instance_seq(vault_db(rd->v), rd->t->instance_id, seq);
}

#define RENDER_TRIES 16

static void render_log(const struct render *rd)
{
	const struct template_fail *w = rd->why;

	if (w->filter)
		log_warn("%s/%s: the value of %s can't be written by | %s: it %s; not rendered",
			 rd->in.name, rd->t->name, w->key, w->filter, w->reason);
	else if (w->err == -EFBIG)
		log_warn("%s/%s: the rendered file would be larger than max_value_size (%zu "
			 "bytes); not rendered", rd->in.name, rd->t->name, rd->v->conf->max_value_size);
	else if (w->key[0])
		log_warn("%s/%s: key %s: %s; not rendered (%s)", rd->in.name, rd->t->name, w->key,
			 w->reason ? w->reason : strerror(-w->err), strerror(-w->err));
	else
		log_warn("%s/%s: cannot render: %s", rd->in.name, rd->t->name, strerror(-w->err));
}

/* Each key a rendering read is a read by its reader: the audit log says
 * who got DB_PASSWORD, through which template. */
static void render_audit(const struct render *rd, const struct audit_who *who)
{
	char detail[NAME_MAX_LEN + 16];

	snprintf(detail, sizeof(detail), "template %s", rd->t->name);
	for (size_t i = 0; i < rd->f.n; i++)
		audit_record(rd->v->audit, who, AUDIT_READ, rd->in.name, rd->f.k[i].name, 0, detail);
}

int template_render(struct vault *v, const struct db_secret *t, const struct secbuf *src,
		    const struct audit_who *who, struct secbuf **out, struct template_fail *why)
{
	struct template_fail local;
	struct render rd = { .v = v, .t = t, .why = why ? why : &local };
	int64_t seq0 = 0, seq1 = -1;
	int r, tries = 0;

	*out = NULL;
	memset(rd.why, 0, sizeof(*rd.why));
	rd.owner.who.uid = t->uid;
	rd.owner.who.gid = (gid_t)-1;
	rd.owner.who.groups = rd.owner.groups;
	r = db_instance_get(vault_db(v), t->instance_id, &rd.in);
	do {
		fetched_clear(&rd.f);
		memset(rd.why, 0, sizeof(*rd.why));
		if (r == 0 || r == -EAGAIN)
			r = snapshot_seq(&rd, &seq0);
		if (r == 0)
			r = template_keys(src->data, src->len, fetch_key, &rd);
		/* A key missing from a state that changed meanwhile may be
		 * there in the new one: read again rather than fail. */
		if ((r == 0 || r == -ENOKEY) && snapshot_seq(&rd, &seq1) == 0 && seq0 != seq1)
			r = -EAGAIN;
		/* The retry must see what was committed since. */
		if (r == -EAGAIN && db_read_pinned(vault_db(v))) {
			db_read_end(vault_db(v));
			db_read_begin(vault_db(v));
		}
	} while (r == -EAGAIN && ++tries < RENDER_TRIES);
	if (r == 0)
		r = template_expand(src->data, src->len, lookup_fetched, &rd.f,
				    v->conf->max_value_size, out, rd.why);
	if (r < 0 && !rd.why->err)
		rd.why->err = r;
	if (r < 0)
		render_log(&rd);
	else
		render_audit(&rd, who);
	fetched_free(&rd.f);
	return r;
}

struct deps {
	struct vault *v;
	const char *key;
	int (*fn)(void *, const struct db_secret *);
	void *ctx;
	int64_t last;
	struct db_secret hit[64];
	size_t n;
};

static int dep_key(void *ctx, const char *key)
{
	return !strcmp(ctx, key);
}

static int dep_row(void *ctx, const struct db_secret *s)
{
	struct deps *d = ctx;

	d->last = s->id;
	if (s->flags & TEMPLATE_FLAG)
		d->hit[d->n++] = *s;
	return d->n == sizeof(d->hit) / sizeof(d->hit[0]);
}

int template_dependents(struct vault *v, int64_t instance_id, const char *key,
			int (*fn)(void *ctx, const struct db_secret *tmpl), void *ctx)
{
	struct deps d = { .v = v, .key = key, .fn = fn, .ctx = ctx };
	struct secbuf *src = NULL;
	int r;

	/* Rows in batches, so no template is read while the scan holds the
	 * store. */
	do {
		d.n = 0;
		r = db_secret_each(vault_db(v), instance_id, d.last, dep_row, &d);
		if (r < 0)
			break;
		r = 0;
		for (size_t i = 0; r == 0 && i < d.n; i++) {
			if (template_source(v, &d.hit[i], &src) < 0)
				continue;
			r = template_keys(src->data, src->len, dep_key, (void *)key);
			secbuf_free(src);
			src = NULL;
			if (r == 1)
				r = fn(ctx, &d.hit[i]);
			else if (r < 0)
				r = 0;	/* a source that no longer parses names nothing */
		}
	} while (r == 0 && d.n == sizeof(d.hit) / sizeof(d.hit[0]));
	return r;
}

bool template_is(struct vault *v, int64_t secret_id)
{
	struct db_secret s;

	return db_secret_get(vault_db(v), secret_id, &s) == 0 && (s.flags & TEMPLATE_FLAG);
}

int template_open(struct vault *v, const struct db_secret *t, const struct audit_who *who,
		  struct secbuf **buf)
{
	struct secbuf *out = NULL;
	int r = template_render(v, t, *buf, who, &out, NULL);

	secbuf_free(*buf);
	*buf = out;
	return r;
}
