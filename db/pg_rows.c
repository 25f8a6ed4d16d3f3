/*
 * The PostgreSQL store's instance and secret rows. Rules this file keeps:
 *  - every row read has its tag checked (pg_tag.c) before any field
 *    leaves here;
 *  - a change to a tagged row reads it FOR UPDATE in the transaction,
 *    checks its tag, and writes the new tag with it;
 *  - a change to which secrets are live, or their versions, runs in a
 *    transaction (pgs_own_begin) that remakes the instance's state at
 *    commit (pg_state_touch);
 *  - ids come from the tables' sequences, so they are never handed out
 *    again.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pg_int.h"

#define INST_COLS "id, name, uid, gid, mode, ctime, mtime, generation, mac"
#define SEC_COLS "id, instance_id, name, uid, gid, mode, version, size, flags, ctime, " \
		 "mtime, chtime, updated_by, mac"
#define SEC_MAC 13

static struct pgs *P(struct db *db)
{
	return (struct pgs *)db;
}

/* -- instances ------------------------------------------------------------------------ */

static int inst_tag(const struct db_auth *auth, const struct db_instance *in,
		    unsigned char out[DB_MAC_LEN])
{
	struct pg_tagf f[] = { TI(in->id), TT(in->name), TI(in->uid), TI(in->gid),
			       TI(in->mode), TI(in->generation) };

	return pg_tag_make(auth, "instances", f, 6, out);
}

int pgr_row_instance(struct pgs *s, const PGresult *res, int row, struct db_instance *in)
{
	char what[64];

	in->id = pg_int(res, row, 0);
	pg_name(res, row, 1, in->name);
	in->uid = (uid_t)pg_int(res, row, 2);
	in->gid = (gid_t)pg_int(res, row, 3);
	in->mode = (mode_t)pg_int(res, row, 4);
	in->ctime_ns = pg_int(res, row, 5);
	in->mtime_ns = pg_int(res, row, 6);
	in->generation = (uint64_t)pg_int(res, row, 7);
	snprintf(what, sizeof(what), "instances row %lld", (long long)in->id);
	struct pg_tagf f[] = { TI(in->id), TT(in->name), TI(in->uid), TI(in->gid),
			       TI(in->mode), TI(in->generation) };

	return pg_tag_check(s, "instances", f, 6, res, row, 8, what);
}

/* PQexecParams asked for binary results: nextval's int8 comes as 8 bytes. */
static int next_id_bin(struct pgs *s, const char *table, int64_t *id)
{
	char sql[128];
	PGresult *res;
	int r;

	snprintf(sql, sizeof(sql), "SELECT nextval(pg_get_serial_sequence('%s', 'id'))", table);
	r = pg_run(s, sql, NULL, &res);
	if (r == 0) {
		*id = pg_int(res, 0, 0);
		PQclear(res);
	}
	return r;
}

static int instance_create_now(struct pgs *s, struct db_instance *in,
			       const struct db_blob *key)
{
	unsigned char mac[DB_MAC_LEN];
	struct pgq q = { 0 };
	int r = next_id_bin(s, "instances", &in->id);

	in->mode &= 07777;
	in->ctime_ns = in->mtime_ns = db_now_ns();
	if (r == 0)
		r = inst_tag(s->auth, in, mac);
	if (r < 0)
		return r;
	pgq_int(&q, in->id);
	pgq_text(&q, in->name);
	pgq_int(&q, in->uid);
	pgq_int(&q, in->gid);
	pgq_int(&q, in->mode);
	pgq_int(&q, in->ctime_ns);
	pgq_int(&q, (int64_t)in->generation);
	pgq_blob(&q, key->data, key->len);
	pgq_blob(&q, mac, sizeof(mac));
	return pg_change(s, "INSERT INTO instances (id, name, uid, gid, mode, ctime, mtime, "
			 "generation, wrapped_key, mac) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, "
			 "$8, $9)", &q, 1);
}

int pgr_instance_create(struct db *db, struct db_instance *in,
			const struct db_blob *key)
{
	struct pgs *s = P(db);
	int r = pgs_own_begin(s);

	if (r < 0)
		return r;
	r = instance_create_now(s, in, key);
	if (r == 0)
		r = pg_state_touch(s, in->id, true);
	return pgs_own_end(s, r);
}

static int instance_query(struct pgs *s, const char *where, struct pgq *q, bool lock,
			  struct db_instance *out, struct db_blob *key)
{
	char sql[256];
	PGresult *res;
	int r;

	snprintf(sql, sizeof(sql), "SELECT " INST_COLS ", wrapped_key FROM instances WHERE %s%s",
		 where, lock ? " FOR UPDATE" : "");
	r = pg_run(s, sql, q, &res);
	if (r < 0)
		return r;
	if (PQntuples(res) == 0) {
		pg_set_error("no such instance");
		r = -ENOENT;
	} else {
		r = pgr_row_instance(s, res, 0, out);
		if (r == 0 && key)
			r = pg_blob(res, 0, 9, key);
	}
	PQclear(res);
	return r;
}

int pgr_instance_get(struct db *db, int64_t id, struct db_instance *out)
{
	struct pgq q = { 0 };

	pgq_int(&q, id);
	return instance_query(P(db), "id = $1", &q, false, out, NULL);
}

int pgr_instance_find(struct db *db, const char *name, struct db_instance *out)
{
	struct pgq q = { 0 };

	pgq_text(&q, name);
	return instance_query(P(db), "name = $1", &q, false, out, NULL);
}

int pgr_instance_key(struct db *db, int64_t id, struct db_instance *in,
		     struct db_blob *wrapped)
{
	struct pgq q = { 0 };

	wrapped->data = NULL;
	wrapped->len = 0;
	pgq_int(&q, id);
	return instance_query(P(db), "id = $1", &q, false, in, wrapped);
}

/* Reads the row FOR UPDATE, checks it, writes what change() made of it. */
static int instance_update(struct pgs *s, int64_t id, const char *sql,
			   void (*change)(struct db_instance *, struct pgq *, void *), void *ctx)
{
	unsigned char mac[DB_MAC_LEN];
	struct db_instance in;
	struct db_blob key = { 0 };
	struct pgq q = { 0 };
	int r = pgs_own_begin(s);

	if (r < 0)
		return r;
	pgq_int(&q, id);
	r = instance_query(s, "id = $1", &q, true, &in, &key);
	db_blob_free(&key);
	if (r == 0) {
		q.n = 1;
		change(&in, &q, ctx);
		r = inst_tag(pg_write_auth(s), &in, mac);
	}
	if (r == 0) {
		pgq_blob(&q, mac, sizeof(mac));
		r = pg_change(s, sql, &q, 1);
	}
	return pgs_own_end(s, r);
}

struct inst_key_change {
	uint64_t generation;
	const struct db_blob *wrapped;
};

static void set_key(struct db_instance *in, struct pgq *q, void *ctx)
{
	const struct inst_key_change *c = ctx;

	in->generation = c->generation;
	pgq_int(q, (int64_t)c->generation);
	pgq_blob(q, c->wrapped->data, c->wrapped->len);
}

int pgr_instance_set_key(struct db *db, int64_t id, uint64_t generation,
			 const struct db_blob *wrapped)
{
	struct inst_key_change c = { generation, wrapped };

	return instance_update(P(db), id, "UPDATE instances SET generation = $2, "
			       "wrapped_key = $3, mac = $4 WHERE id = $1", set_key, &c);
}

struct attr_change {
	uid_t uid;
	gid_t gid;
	mode_t mode;
	int64_t now_ns;
};

static void set_inst_attr(struct db_instance *in, struct pgq *q, void *ctx)
{
	const struct attr_change *c = ctx;

	in->uid = c->uid;
	in->gid = c->gid;
	in->mode = c->mode & 07777;
	pgq_int(q, in->uid);
	pgq_int(q, in->gid);
	pgq_int(q, in->mode);
	pgq_int(q, c->now_ns);
}

int pgr_instance_set_attr(struct db *db, int64_t id, uid_t uid, gid_t gid,
			  mode_t mode, int64_t now_ns)
{
	struct attr_change c = { uid, gid, mode, now_ns };

	return instance_update(P(db), id, "UPDATE instances SET uid = $2, gid = $3, mode = $4, "
			       "mtime = $5, mac = $6 WHERE id = $1", set_inst_attr, &c);
}

int pgr_instance_delete(struct db *db, int64_t id)
{
	struct pgs *s = P(db);
	struct pgq q = { 0 };
	PGresult *res;
	int r = pgs_own_begin(s);

	if (r < 0)
		return r;
	pgq_int(&q, id);
	r = pg_run(s, "SELECT 1 FROM secrets WHERE instance_id = $1 UNION ALL "
		   "SELECT 1 FROM trash WHERE instance_id = $1 LIMIT 1", &q, &res);
	if (r == 0) {
		r = PQntuples(res) ? -ENOTEMPTY : 0;
		PQclear(res);
	}
	if (r == 0)
		r = pg_change(s, "DELETE FROM instances WHERE id = $1", &q, 1);
	return pgs_own_end(s, r);
}

PG_EACH_ROW(visit_instance, struct db_instance, pgr_row_instance)

int pgr_instance_each(struct db *db, int64_t after_id,
		      int (*fn)(void *, const struct db_instance *), void *ctx)
{
	struct pg_each e = { (void *)fn, ctx };
	struct pgq q = { 0 };

	pgq_int(&q, after_id);
	return pg_each(P(db), "SELECT " INST_COLS " FROM instances WHERE id > $1 ORDER BY id",
		       &q, visit_instance, &e);
}

static int64_t count(struct pgs *s, const char *sql, const struct pgq *q)
{
	PGresult *res;
	int64_t n = -1;

	if (pg_run(s, sql, q, &res) == 0) {
		n = pg_int(res, 0, 0);
		PQclear(res);
	}
	return n;
}

int64_t pgr_instance_count(struct db *db)
{
	return count(P(db), "SELECT count(*) FROM instances", NULL);
}

/* -- secrets ------------------------------------------------------------------------- */

static int sec_tag(const struct db_auth *auth, const struct db_secret *m,
		   unsigned char out[DB_MAC_LEN])
{
	struct pg_tagf f[] = { TI(m->id), TI(m->instance_id), TT(m->name), TI(m->uid),
			       TI(m->gid), TI(m->mode), TI(m->version), TI(m->size),
			       TI(m->flags) };

	return pg_tag_make(auth, "secrets", f, 9, out);
}

int pgr_row_secret(struct pgs *s, const PGresult *res, int row, struct db_secret *m)
{
	char what[64];

	m->id = pg_int(res, row, 0);
	m->instance_id = pg_int(res, row, 1);
	pg_name(res, row, 2, m->name);
	m->uid = (uid_t)pg_int(res, row, 3);
	m->gid = (gid_t)pg_int(res, row, 4);
	m->mode = (mode_t)pg_int(res, row, 5);
	m->version = (uint64_t)pg_int(res, row, 6);
	m->size = (uint64_t)pg_int(res, row, 7);
	m->flags = (uint32_t)pg_int(res, row, 8);
	m->ctime_ns = pg_int(res, row, 9);
	m->mtime_ns = pg_int(res, row, 10);
	m->chtime_ns = pg_int(res, row, 11);
	m->updated_by = (uid_t)pg_int(res, row, 12);
	snprintf(what, sizeof(what), "secrets row %lld", (long long)m->id);
	struct pg_tagf f[] = { TI(m->id), TI(m->instance_id), TT(m->name), TI(m->uid),
			       TI(m->gid), TI(m->mode), TI(m->version), TI(m->size),
			       TI(m->flags) };

	return pg_tag_check(s, "secrets", f, 9, res, row, SEC_MAC, what);
}

static int secret_query(struct pgs *s, const char *where, const struct pgq *q, bool lock,
			struct db_secret *out, struct db_blob *blob)
{
	char sql[256];
	PGresult *res;
	int r;

	snprintf(sql, sizeof(sql), "SELECT " SEC_COLS "%s FROM secrets WHERE %s%s",
		 blob ? ", blob" : "", where, lock ? " FOR UPDATE" : "");
	r = pg_run(s, sql, q, &res);
	if (r < 0)
		return r;
	if (PQntuples(res) == 0) {
		pg_set_error("no such secret");
		r = -ENOENT;
	} else {
		r = pgr_row_secret(s, res, 0, out);
		if (r == 0 && blob)
			r = pg_blob(res, 0, SEC_MAC + 1, blob);
	}
	PQclear(res);
	return r;
}

int pgr_secret_get(struct db *db, int64_t id, struct db_secret *out)
{
	struct pgq q = { 0 };

	pgq_int(&q, id);
	return secret_query(P(db), "id = $1", &q, false, out, NULL);
}

int pgr_secret_find(struct db *db, int64_t instance_id, const char *name,
		    struct db_secret *out)
{
	struct pgq q = { 0 };

	pgq_int(&q, instance_id);
	pgq_text(&q, name);
	return secret_query(P(db), "instance_id = $1 AND name = $2", &q, false, out, NULL);
}

int pgr_secret_blob(struct db *db, int64_t id, struct db_secret *meta,
		    struct db_blob *out)
{
	struct db_secret tmp;
	struct pgq q = { 0 };

	out->data = NULL;
	out->len = 0;
	pgq_int(&q, id);
	return secret_query(P(db), "id = $1", &q, false, meta ? meta : &tmp, out);
}

PG_EACH_ROW(visit_secret, struct db_secret, pgr_row_secret)

int pgr_secret_each(struct db *db, int64_t instance_id, int64_t after_id,
		    int (*fn)(void *, const struct db_secret *), void *ctx)
{
	struct pg_each e = { (void *)fn, ctx };
	struct pgq q = { 0 };

	pgq_int(&q, instance_id);
	pgq_int(&q, after_id);
	return pg_each(P(db), "SELECT " SEC_COLS " FROM secrets WHERE instance_id = $1 AND "
		       "id > $2 ORDER BY id", &q, visit_secret, &e);
}

int64_t pgr_secret_count(struct db *db, int64_t instance_id)
{
	struct pgq q = { 0 };

	pgq_int(&q, instance_id);
	return count(P(db), "SELECT count(*) FROM secrets WHERE instance_id = $1", &q);
}

static int secret_insert_now(struct pgs *s, struct db_secret *m, const struct db_blob *blob,
			     bool as_id)
{
	unsigned char mac[DB_MAC_LEN];
	struct pgq q = { 0 };
	int r = as_id ? 0 : next_id_bin(s, "secrets", &m->id);

	m->mode &= 07777;
	if (r == 0)
		r = sec_tag(s->auth, m, mac);
	if (r < 0)
		return r;
	pgq_int(&q, m->id);
	pgq_int(&q, m->instance_id);
	pgq_text(&q, m->name);
	pgq_int(&q, m->uid);
	pgq_int(&q, m->gid);
	pgq_int(&q, m->mode);
	pgq_int(&q, (int64_t)m->version);
	pgq_int(&q, (int64_t)m->size);
	pgq_int(&q, m->flags);
	pgq_int(&q, m->ctime_ns);
	pgq_int(&q, m->mtime_ns);
	pgq_int(&q, m->chtime_ns);
	pgq_int(&q, m->updated_by);
	pgq_blob(&q, blob->data, blob->len);
	pgq_blob(&q, mac, sizeof(mac));
	return pg_change(s, "INSERT INTO secrets (id, instance_id, name, uid, gid, mode, version, "
			 "size, flags, ctime, mtime, chtime, updated_by, blob, mac) VALUES ($1, $2, "
			 "$3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)", &q, 1);
}

int pgr_secret_insert(struct db *db, struct db_secret *m, const struct db_blob *blob, bool as_id)
{
	struct pgs *s = P(db);
	int r = pgs_own_begin(s);

	if (r < 0)
		return r;
	r = pg_state_touch(s, m->instance_id, false);
	if (r == 0)
		r = secret_insert_now(s, m, blob, as_id);
	return pgs_own_end(s, r);
}

/* A sequence's numbers are never handed out twice, whatever becomes of
 * the transaction that asked: nothing to commit. */
int pgr_secret_id_reserve(struct db *db, int64_t *id)
{
	return next_id_bin(P(db), "secrets", id);
}

/* Reads the live row FOR UPDATE and checks it (and its instance's state,
 * when the change touches the live set). */
int pgr_secret_locked(struct pgs *s, int64_t id, bool live, struct db_secret *m)
{
	struct pgq q = { 0 };
	int r;

	pgq_int(&q, id);
	r = secret_query(s, "id = $1", &q, true, m, NULL);
	if (r == 0 && live)
		r = pg_state_touch(s, m->instance_id, false);
	return r;
}

static int secret_write(struct pgs *s, const struct db_secret *m, const char *sql,
			struct pgq *q)
{
	unsigned char mac[DB_MAC_LEN];
	int r = sec_tag(pg_write_auth(s), m, mac);

	if (r < 0)
		return r;
	pgq_blob(q, mac, sizeof(mac));
	return pg_change(s, sql, q, 1);
}

int pgr_secret_set_value(struct db *db, const struct db_secret *in,
			 const struct db_blob *blob)
{
	struct pgs *s = P(db);
	struct db_secret m;
	struct pgq q = { 0 };
	int r = pgs_own_begin(s);

	if (r < 0)
		return r;
	r = pgr_secret_locked(s, in->id, true, &m);
	if (r == 0) {
		m.version = in->version;
		m.size = in->size;
		m.flags = in->flags;
		pgq_int(&q, m.id);
		pgq_int(&q, (int64_t)m.version);
		pgq_int(&q, (int64_t)m.size);
		pgq_int(&q, m.flags);
		pgq_int(&q, in->mtime_ns);
		pgq_int(&q, in->chtime_ns);
		pgq_int(&q, in->updated_by);
		pgq_blob(&q, blob->data, blob->len);
		r = secret_write(s, &m, "UPDATE secrets SET version = $2, size = $3, flags = $4, "
				 "mtime = $5, chtime = $6, updated_by = $7, blob = $8, mac = $9 "
				 "WHERE id = $1", &q);
	}
	return pgs_own_end(s, r);
}

int pgr_secret_set_attr(struct db *db, int64_t id, uid_t uid, gid_t gid, mode_t mode,
			int64_t now_ns)
{
	struct pgs *s = P(db);
	struct db_secret m;
	struct pgq q = { 0 };
	int r = pgs_own_begin(s);

	if (r < 0)
		return r;
	r = pgr_secret_locked(s, id, false, &m);
	if (r == 0) {
		m.uid = uid;
		m.gid = gid;
		m.mode = mode & 07777;
		pgq_int(&q, id);
		pgq_int(&q, m.uid);
		pgq_int(&q, m.gid);
		pgq_int(&q, m.mode);
		pgq_int(&q, now_ns);
		r = secret_write(s, &m, "UPDATE secrets SET uid = $2, gid = $3, mode = $4, "
				 "chtime = $5, mac = $6 WHERE id = $1", &q);
	}
	return pgs_own_end(s, r);
}

int pgr_secret_rename(struct db *db, const struct db_secret *in,
		      const struct db_blob *blob)
{
	struct pgs *s = P(db);
	struct db_secret m;
	struct pgq q = { 0 };
	int r = pgs_own_begin(s);

	if (r < 0)
		return r;
	r = pgr_secret_locked(s, in->id, true, &m);
	if (r == 0) {
		memcpy(m.name, in->name, sizeof(m.name));
		m.version = in->version;
		pgq_int(&q, m.id);
		pgq_text(&q, m.name);
		pgq_int(&q, (int64_t)m.version);
		pgq_int(&q, in->chtime_ns);
		pgq_blob(&q, blob->data, blob->len);
		r = secret_write(s, &m, "UPDATE secrets SET name = $2, version = $3, chtime = $4, "
				 "blob = $5, mac = $6 WHERE id = $1", &q);
	}
	return pgs_own_end(s, r);
}

int pgr_secret_delete(struct db *db, int64_t id)
{
	struct pgs *s = P(db);
	struct db_secret m;
	struct pgq q = { 0 };
	int r = pgs_own_begin(s);

	if (r < 0)
		return r;
	r = pgr_secret_locked(s, id, true, &m);
	pgq_int(&q, id);
	if (r == 0)
		r = pg_change(s, "DELETE FROM secrets WHERE id = $1", &q, 1);
	return pgs_own_end(s, r);
}
