/*
 * The PostgreSQL store's old versions and attributes, a secret's adoption
 * of another's history, and the passes over every tagged row (upgrade,
 * rekey, check). Rules this file keeps:
 *  - every row copied or moved is read in the transaction, its tag checked
 *    here, and the copy tagged here for its new table (pg_tag.c), since the
 *    server can't; blobs are copied by the server, row to row;
 *  - what changes which secrets are live runs in a transaction that remakes
 *    the instance's state at commit (pgh_touch_secret, pg_state_touch).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

static struct pgs *P(struct db *db)
{
	return (struct pgs *)db;
}

static int instance_of(struct pgs *s, int64_t secret_id, bool trash, int64_t *inst)
{
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	pgq_int(&q, secret_id);
	r = pg_run(s, trash ? "SELECT instance_id FROM trash WHERE secret_id = $1" :
		   "SELECT instance_id FROM secrets WHERE id = $1", &q, &res);
	if (r < 0)
		return r;
	r = PQntuples(res) ? 0 : -ENOENT;
	if (r == 0)
		*inst = pg_int(res, 0, 0);
	else
		pg_set_error("no such secret");
	PQclear(res);
	return r;
}

/* Marks the instance of a live (or trashed) secret for a new state at
 * commit. */
int pgh_touch_secret(struct pgs *s, int64_t secret_id, bool trash)
{
	int64_t inst = 0;
	int r = instance_of(s, secret_id, trash, &inst);

	return r < 0 ? r : pg_state_touch(s, inst, false);
}

/* -- versions ------------------------------------------------------------------------- */

static int version_tag(const struct db_auth *auth, int64_t id, int64_t version, int64_t size,
		       int64_t flags, unsigned char out[DB_MAC_LEN])
{
	struct pg_tagf f[] = { TI(id), TI(version), TI(size), TI(flags) };

	return pg_tag_make(auth, "versions", f, 4, out);
}

static int archive_now(struct pgs *s, int64_t id, bool with_v0, unsigned keep)
{
	unsigned char mac[DB_MAC_LEN];
	struct db_secret m;
	struct pgq q = { 0 };
	int r = pgr_secret_locked(s, id, false, &m);

	if (r == 0 && (m.version > 0 || with_v0)) {
		r = version_tag(pg_write_auth(s), m.id, (int64_t)m.version, (int64_t)m.size, m.flags, mac);
		pgq_int(&q, id);
		pgq_blob(&q, mac, sizeof(mac));
		if (r == 0)
			r = pg_change(s, "INSERT INTO versions (secret_id, version, size, flags, "
				      "mtime, updated_by, blob, mac) SELECT id, version, size, flags, "
				      "mtime, updated_by, blob, $2 FROM secrets WHERE id = $1 "
				      "ON CONFLICT (secret_id, version) DO UPDATE SET size = "
				      "excluded.size, flags = excluded.flags, mtime = excluded.mtime, "
				      "updated_by = excluded.updated_by, blob = excluded.blob, "
				      "mac = excluded.mac", &q, 1);
	}
	if (r == 0) {
		q.n = 0;
		pgq_int(&q, id);
		pgq_int(&q, keep);
		r = pg_change(s, "DELETE FROM versions WHERE secret_id = $1 AND version NOT IN "
			      "(SELECT version FROM versions WHERE secret_id = $1 "
			      "ORDER BY version DESC LIMIT $2)", &q, -1);
	}
	return r;
}

int pgh_version_archive(struct db *db, int64_t secret_id, bool with_v0, unsigned keep)
{
	struct pgs *s = P(db);
	int r = pgs_own_begin(s);

	return r < 0 ? r : pgs_own_end(s, archive_now(s, secret_id, with_v0, keep));
}

static int row_version(struct pgs *s, const PGresult *res, int row, struct db_version *v)
{
	char what[64];

	v->secret_id = pg_int(res, row, 0);
	v->version = (uint64_t)pg_int(res, row, 1);
	v->size = (uint64_t)pg_int(res, row, 2);
	v->flags = (uint32_t)pg_int(res, row, 3);
	v->mtime_ns = pg_int(res, row, 4);
	v->updated_by = (uid_t)pg_int(res, row, 5);
	snprintf(what, sizeof(what), "versions row %lld (version %llu)", (long long)v->secret_id,
		 (unsigned long long)v->version);
	struct pg_tagf f[] = { TI(v->secret_id), TI(v->version), TI(v->size), TI(v->flags) };

	return pg_tag_check(s, "versions", f, 4, res, row, 6, what);
}

#define VERSION_COLS "secret_id, version, size, flags, mtime, updated_by, mac"

int pgh_version_get(struct db *db, int64_t secret_id, uint64_t version,
			   struct db_version *out, struct db_blob *blob)
{
	struct pgs *s = P(db);
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	if (blob) {
		blob->data = NULL;
		blob->len = 0;
	}
	pgq_int(&q, secret_id);
	pgq_int(&q, (int64_t)version);
	r = pg_run(s, "SELECT " VERSION_COLS ", blob FROM versions WHERE secret_id = $1 "
		   "AND version = $2", &q, &res);
	if (r < 0)
		return r;
	r = PQntuples(res) ? row_version(s, res, 0, out) : -ENOENT;
	if (r == 0 && blob)
		r = pg_blob(res, 0, 7, blob);
	PQclear(res);
	return r;
}

PG_EACH_ROW(visit_version, struct db_version, row_version)

int pgh_version_each(struct db *db, int64_t secret_id,
			    int (*fn)(void *, const struct db_version *), void *ctx)
{
	struct pg_each e = { (void *)fn, ctx };
	struct pgq q = { 0 };

	pgq_int(&q, secret_id);
	return pg_each(P(db), "SELECT " VERSION_COLS " FROM versions WHERE secret_id = $1 "
		       "ORDER BY version DESC", &q, visit_version, &e);
}

int pgh_version_set_blob(struct db *db, int64_t secret_id, uint64_t version,
				const struct db_blob *blob)
{
	struct pgq q = { 0 };

	pgq_int(&q, secret_id);
	pgq_int(&q, (int64_t)version);
	pgq_blob(&q, blob->data, blob->len);
	return pg_change(P(db), "UPDATE versions SET blob = $3 WHERE secret_id = $1 AND "
			 "version = $2", &q, 1);
}

/* -- adopt ------------------------------------------------------------------------------ */

/* Each row of from's history, checked, moves to id with a new tag. */
static int adopt_versions(struct pgs *s, int64_t id, int64_t from)
{
	unsigned char mac[DB_MAC_LEN];
	struct db_version v;
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	pgq_int(&q, from);
	r = pg_run(s, "SELECT " VERSION_COLS " FROM versions WHERE secret_id = $1 FOR UPDATE",
		   &q, &res);
	for (int i = 0; r == 0 && i < PQntuples(res); i++) {
		r = row_version(s, res, i, &v);
		if (r == 0)
			r = version_tag(pg_write_auth(s), id, (int64_t)v.version, (int64_t)v.size, v.flags,
					mac);
		if (r == 0) {
			q.n = 0;
			pgq_int(&q, from);
			pgq_int(&q, (int64_t)v.version);
			pgq_int(&q, id);
			pgq_blob(&q, mac, sizeof(mac));
			r = pg_change(s, "UPDATE versions SET secret_id = $3, mac = $4 WHERE "
				      "secret_id = $1 AND version = $2", &q, 1);
		}
	}
	PQclear(res);
	return r;
}

static int attr_tag(const struct db_auth *auth, int64_t id, const char *name, const void *v,
		    size_t len, unsigned char out[DB_MAC_LEN])
{
	struct pg_tagf f[] = { TI(id), TT(name), TB(v, len) };

	return pg_tag_make(auth, "secret_attrs", f, 3, out);
}

static int row_attr(struct pgs *s, const PGresult *res, int row, char name[DB_NAME_MAX + 1])
{
	char what[DB_NAME_MAX + 48];
	int64_t id = pg_int(res, row, 0);

	pg_name(res, row, 1, name);
	snprintf(what, sizeof(what), "secret_attrs row %lld (%s)", (long long)id, name);
	struct pg_tagf f[] = { TI(id), TT(name),
			       TB(PQgetvalue(res, row, 2), (size_t)PQgetlength(res, row, 2)) };

	return pg_tag_check(s, "secret_attrs", f, 3, res, row, 3, what);
}

static int adopt_attrs(struct pgs *s, int64_t id, int64_t from)
{
	unsigned char mac[DB_MAC_LEN];
	char name[DB_NAME_MAX + 1];
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	pgq_int(&q, from);
	r = pg_run(s, "SELECT secret_id, name, value, mac FROM secret_attrs WHERE secret_id = $1 "
		   "FOR UPDATE", &q, &res);
	for (int i = 0; r == 0 && i < PQntuples(res); i++) {
		r = row_attr(s, res, i, name);
		if (r == 0)
			r = attr_tag(pg_write_auth(s), id, name, PQgetvalue(res, i, 2),
				     (size_t)PQgetlength(res, i, 2), mac);
		if (r == 0) {
			q.n = 0;
			pgq_int(&q, id);
			pgq_text(&q, name);
			pgq_blob(&q, PQgetvalue(res, i, 2), (size_t)PQgetlength(res, i, 2));
			pgq_blob(&q, mac, sizeof(mac));
			r = pg_change(s, "INSERT INTO secret_attrs (secret_id, name, value, mac) "
				      "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", &q, -1);
		}
	}
	PQclear(res);
	if (r == 0) {
		q.n = 0;
		pgq_int(&q, from);
		r = pg_change(s, "DELETE FROM secret_attrs WHERE secret_id = $1", &q, -1);
	}
	return r;
}

static int adopt_now(struct pgs *s, int64_t id, int64_t from)
{
	struct pgq q = { 0 };
	int r;

	if (id == from)
		return -EINVAL;
	pgq_int(&q, id);
	pgq_int(&q, from);
	r = pg_change(s, "DELETE FROM versions WHERE secret_id = $1 AND $2 = $2", &q, -1);
	if (r == 0)
		r = adopt_versions(s, id, from);
	if (r == 0)
		r = adopt_attrs(s, id, from);
	if (r == 0)
		r = pg_change(s, "UPDATE secrets SET ctime = (SELECT ctime FROM secrets "
			      "WHERE id = $2) WHERE id = $1", &q, -1);
	if (r == 0)
		r = pg_change(s, "DELETE FROM secrets WHERE id = $2 AND $1 = $1", &q, 1);
	return r;
}

int pgh_secret_adopt(struct db *db, int64_t id, int64_t from_id)
{
	struct pgs *s = P(db);
	int r = pgs_own_begin(s);

	if (r < 0)
		return r;
	r = pgh_touch_secret(s, id, false);
	if (r == 0)
		r = pgh_touch_secret(s, from_id, false);
	if (r == 0)
		r = adopt_now(s, id, from_id);
	return pgs_own_end(s, r);
}

/* -- attributes ---------------------------------------------------------------------------- */

int pgh_attr_get(struct db *db, int64_t secret_id, const char *name, void *buf,
			size_t size, size_t *len)
{
	struct pgs *s = P(db);
	char got[DB_NAME_MAX + 1];
	struct pgq q = { 0 };
	PGresult *res;
	int r;

	*len = 0;
	pgq_int(&q, secret_id);
	pgq_text(&q, name);
	r = pg_run(s, "SELECT secret_id, name, value, mac FROM secret_attrs WHERE secret_id = $1 "
		   "AND name = $2", &q, &res);
	if (r < 0)
		return r;
	r = PQntuples(res) ? row_attr(s, res, 0, got) : -ENOENT;
	if (r == 0) {
		*len = (size_t)PQgetlength(res, 0, 2);
		if (*len > size)
			r = -ERANGE;
		else if (*len)
			memcpy(buf, PQgetvalue(res, 0, 2), *len);
	}
	PQclear(res);
	return r;
}

int pgh_attr_set(struct db *db, int64_t secret_id, const char *name, const void *value,
			size_t len)
{
	struct pgs *s = P(db);
	unsigned char mac[DB_MAC_LEN];
	struct pgq q = { 0 };
	int r;

	pgq_int(&q, secret_id);
	pgq_text(&q, name);
	if (len == 0)
		return pg_change(s, "DELETE FROM secret_attrs WHERE secret_id = $1 AND name = $2",
				 &q, -1);
	r = attr_tag(pg_write_auth(s), secret_id, name, value, len, mac);
	if (r < 0)
		return r;
	pgq_blob(&q, value, len);
	pgq_blob(&q, mac, sizeof(mac));
	return pg_change(s, "INSERT INTO secret_attrs (secret_id, name, value, mac) VALUES "
			 "($1, $2, $3, $4) ON CONFLICT (secret_id, name) DO UPDATE SET "
			 "value = excluded.value, mac = excluded.mac", &q, -1);
}

/* -- every row ------------------------------------------------------------------------------ */

/* What each table's tag covers: its fields' types ('i', 't', 'b') in the
 * order of cols; the first nkey of them name the row. */
static const struct {
	const char *table, *cols, *types;
	int nkey;
} tagged[] = {
	{ "instances", "id, name, uid, gid, mode, generation", "itiiii", 1 },
	{ "secrets", "id, instance_id, name, uid, gid, mode, version, size, flags", "iitiiiiii", 1 },
	{ "versions", "secret_id, version, size, flags", "iiii", 2 },
	{ "trash", "secret_id, instance_id, name, uid, gid, mode", "iitiii", 1 },
	{ "secret_attrs", "secret_id, name, value", "itb", 2 },
};
#define N_TAGGED (sizeof(tagged) / sizeof(tagged[0]))
#define KEY_NAME(t, k) ((k) == 0 ? (t == 2 || t == 4 || t == 3 ? "secret_id" : "id") : \
			t == 2 ? "version" : "name")

static void fields_of(const PGresult *res, int row, const char *types, struct pg_tagf *f)
{
	for (int c = 0; types[c]; c++) {
		if (types[c] == 'i')
			f[c] = TI(pg_int(res, row, c));
		else
			f[c] = (struct pg_tagf){ types[c], 0, PQgetvalue(res, row, c),
						 (size_t)PQgetlength(res, row, c) };
	}
}

static void describe(char *out, size_t size, size_t t, const struct pg_tagf *f)
{
	if (tagged[t].nkey == 2 && f[1].type == 'i')
		snprintf(out, size, "%s row %lld/%lld", tagged[t].table, (long long)f[0].i,
			 (long long)f[1].i);
	else if (tagged[t].nkey == 2)
		snprintf(out, size, "%s row %lld/%.*s", tagged[t].table, (long long)f[0].i,
			 (int)(f[1].len > 40 ? 40 : f[1].len), (const char *)f[1].p);
	else
		snprintf(out, size, "%s row %lld", tagged[t].table, (long long)f[0].i);
}

/* For each row of table t: check it (unless trust), and with next, tag it
 * anew; fn hears of each that fails. */
static int pass_table(struct pgs *s, size_t t, bool trust, const struct db_auth *next,
		      void (*fn)(void *, const char *), void *ctx, bool *bad)
{
	unsigned char mac[DB_MAC_LEN];
	struct pg_tagf f[9];
	char sql[256], what[96];
	int n = (int)strlen(tagged[t].types), r;
	PGresult *res;

	snprintf(sql, sizeof(sql), "SELECT %s, mac FROM %s%s", tagged[t].cols, tagged[t].table,
		 next ? " FOR UPDATE" : "");
	r = pg_run(s, sql, NULL, &res);
	for (int i = 0; r == 0 && i < PQntuples(res); i++) {
		fields_of(res, i, tagged[t].types, f);
		describe(what, sizeof(what), t, f);
		if (!trust && !pg_tag_ok(s->auth, tagged[t].table, f, n, res, i, n)) {
			*bad = true;
			if (fn)
				fn(ctx, what);
			if (next)
				r = -EIO;
			continue;
		}
		if (!next)
			continue;
		r = pg_tag_make(next, tagged[t].table, f, n, mac);
		if (r == 0) {
			struct pgq q = { 0 };

			snprintf(sql, sizeof(sql), "UPDATE %s SET mac = $1 WHERE %s = $2%s%s%s",
				 tagged[t].table, KEY_NAME(t, 0),
				 tagged[t].nkey == 2 ? " AND " : "",
				 tagged[t].nkey == 2 ? KEY_NAME(t, 1) : "",
				 tagged[t].nkey == 2 ? " = $3" : "");
			pgq_blob(&q, mac, sizeof(mac));
			pgq_int(&q, f[0].i);
			if (tagged[t].nkey == 2 && f[1].type == 'i')
				pgq_int(&q, f[1].i);
			else if (tagged[t].nkey == 2)
				pgq_text(&q, f[1].p);	/* libpq ends values with a NUL */
			r = pg_change(s, sql, &q, 1);
		}
	}
	PQclear(res);
	return r;
}

static int each_instance_state(struct pgs *s, const struct db_auth *next, bool verify)
{
	PGresult *res;
	int64_t seq;
	int r = pg_run(s, "SELECT id FROM instances ORDER BY id", NULL, &res);

	for (int i = 0; r == 0 && i < PQntuples(res); i++) {
		if (verify)
			r = pg_state_scan(s, pg_int(res, i, 0), &seq, true, NULL, NULL);
		if (r == 0)
			r = pg_state_update(s, pg_int(res, i, 0), next, false);
	}
	PQclear(res);
	return r;
}

int pgh_auth_upgrade(struct db *db)
{
	struct pgs *s = P(db);
	bool bad = false;
	int r = 0;

	if (!s->auth)
		return -EACCES;
	for (size_t t = 0; r == 0 && t < N_TAGGED; t++)
		r = pass_table(s, t, true, s->auth, NULL, NULL, &bad);
	if (r == 0)
		r = each_instance_state(s, s->auth, false);
	return r < 0 ? r : pg_floor_update(s, s->auth);
}

int pgh_auth_rekey(struct db *db, const struct db_auth *next)
{
	struct pgs *s = P(db);
	bool bad = false;
	int r;

	if (!s->auth)
		return -EACCES;
	r = each_instance_state(s, next, true);
	s->auth_next = next;
	for (size_t t = 0; r == 0 && t < N_TAGGED; t++)
		r = pass_table(s, t, false, next, NULL, NULL, &bad);
	s->auth_next = NULL;
	return r;
}

int pgh_auth_check_all(struct db *db, void (*fn)(void *, const char *), void *ctx)
{
	struct pgs *s = P(db);
	bool bad = false;
	int r = 0;

	if (!s->auth)
		return -EACCES;
	for (size_t t = 0; r == 0 && t < N_TAGGED; t++)
		r = pass_table(s, t, false, NULL, fn, ctx, &bad);
	return r < 0 ? r : bad ? -EIO : 0;
}
