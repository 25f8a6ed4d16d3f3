/* Templates in a real temporary vault (fs/template.h): storing, the
 * owner's access rule, missing keys, and which templates name a key. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../crypto/seal.h"
#include "../../crypto/secmem.h"
#include "../../fs/template.h"
#include "../../fs/vault.h"
#include "../../fs/vault_int.h"
#include "fixture.h"

#define NOBODY_UID 65534	/* no key of the tests is its */

struct fx {
	struct tmpdir dir;
	struct vault_conf conf;
	struct secbuf *master;
	struct vault *v;
	int64_t inst;
};

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	struct db_instance in;
	char err[256];

	if (!fx || secmem_init() < 0 || tmpdir_make(&fx->dir, "template") < 0)
		return -1;
	policy_defaults(&fx->conf);
	tmpdir_file(&fx->dir, "vault.db", fx->conf.db, sizeof(fx->conf.db));
	if (seal_keygen(&fx->master) < 0 ||
	    vault_init(fx->conf.db, fx->master, err, sizeof(err)) < 0 ||
	    vault_open(&fx->v, &fx->conf, fx->master, 0, err, sizeof(err)) < 0 ||
	    vault_instance_create(fx->v, "app", 0, 0, 0755, &in) < 0)
		return -1;
	fx->inst = in.id;
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	vault_close(fx->v);
	secbuf_free(fx->master);
	tmpdir_remove(&fx->dir);
	policy_free(&fx->conf);
	free(fx);
	return 0;
}

static struct db_secret put(struct fx *fx, const char *name, const char *value, mode_t mode)
{
	struct db_secret s;

	assert_int_equal(vault_put(fx->v, fx->inst, name, (const unsigned char *)value,
				   strlen(value), 0, 0, &s), 0);
	assert_int_equal(db_secret_set_attr(vault_db(fx->v), s.id, 0, 0, mode, db_now_ns()), 0);
	return s;
}

static struct db_secret tmpl(struct fx *fx, const char *name, const char *src, uid_t owner)
{
	struct template_error e;
	struct db_secret t;

	assert_int_equal(template_store(fx->v, fx->inst, name, (const unsigned char *)src,
					strlen(src), 0, 0, &e, NULL, &t), 0);
	assert_int_equal(db_secret_set_attr(vault_db(fx->v), t.id, owner, 0, 0444, db_now_ns()),
			 0);
	assert_int_equal(db_secret_get(vault_db(fx->v), t.id, &t), 0);
	return t;
}

/* Renders t: 0 and the text compared with want, or -errno. */
static int render(struct fx *fx, const struct db_secret *t, const char *want,
		  struct template_fail *why)
{
	struct secbuf *src = NULL, *out = NULL;
	int r = template_source(fx->v, t, &src);

	assert_int_equal(r, 0);
	r = template_render(fx->v, t, src, NULL, &out, why);
	if (r == 0) {
		assert_int_equal(out->len, strlen(want));
		assert_memory_equal(out->data, want, out->len);
	} else {
		assert_null(out);
	}
	secbuf_free(src);
	secbuf_free(out);
	return r;
}

static void test_store_source_and_render(void **state)
{
	struct fx *fx = *state;
	struct template_fail why;
	struct template_error e;
	struct db_secret t, s;
	struct secbuf *src = NULL;

	put(fx, "USER", "bob", 0600);
	put(fx, "PW", "a b", 0600);
	t = tmpl(fx, "app.env", "U={{ USER }}\nP={{ PW | env }}\n", 0);
	assert_true(t.flags & TEMPLATE_FLAG);
	assert_int_equal(render(fx, &t, "U=bob\nP=\"a b\"\n", &why), 0);
	assert_int_equal(template_source(fx->v, &t, &src), 0);
	assert_int_equal(src->len, strlen("U={{ USER }}\nP={{ PW | env }}\n"));
	secbuf_free(src);
	/* A second source is a second version; a bad one changes nothing. */
	assert_int_equal(template_store(fx->v, fx->inst, "app.env", (const unsigned char *)"x",
					1, 0, 0, &e, NULL, &t), 0);
	assert_int_equal(t.version, 2);
	assert_int_equal(template_store(fx->v, fx->inst, "app.env",
					(const unsigned char *)"{{ X", 4, 0, 0, &e, NULL, &t),
			 -EINVAL);
	assert_int_equal(e.line, 1);
	assert_int_equal(e.col, 1);
	assert_int_equal(db_secret_find(vault_db(fx->v), fx->inst, "app.env", &t), 0);
	assert_int_equal(t.version, 2);
	/* Neither replaces the other's kind. */
	assert_int_equal(template_store(fx->v, fx->inst, "USER", (const unsigned char *)"x", 1,
					0, 0, &e, NULL, &s), -EEXIST);
	assert_int_equal(vault_put(fx->v, fx->inst, "app.env", (const unsigned char *)"v", 1, 0,
				   0, &s), -EMEDIUMTYPE);
	assert_int_equal(template_source(fx->v, &(struct db_secret){ .id = 1 }, &src),
			 -EMEDIUMTYPE);
	assert_true(template_is(fx->v, t.id));
}

static void test_missing_key_and_nesting(void **state)
{
	struct fx *fx = *state;
	struct template_fail why;
	struct db_secret t, u;

	put(fx, "A", "1", 0600);
	t = tmpl(fx, "t", "{{ A }}{{ GONE }}", 0);
	assert_int_equal(render(fx, &t, NULL, &why), -ENOKEY);
	assert_string_equal(why.key, "GONE");
	u = tmpl(fx, "u", "{{ t }}", 0);
	assert_int_equal(render(fx, &u, NULL, &why), -EINVAL);
	assert_string_equal(why.key, "t");
}

static void test_owner_rule(void **state)
{
	struct fx *fx = *state;
	struct template_fail why;
	struct db_secret t;

	put(fx, "ROOTS", "r", 0600);
	put(fx, "OTHERS", "o", 0604);
	/* Owned by a uid that may read only what others may. */
	t = tmpl(fx, "t1", "{{ OTHERS }}", NOBODY_UID);
	assert_int_equal(render(fx, &t, "o", &why), 0);
	t = tmpl(fx, "t2", "{{ OTHERS }}{{ ROOTS }}", NOBODY_UID);
	assert_int_equal(render(fx, &t, NULL, &why), -EACCES);
	assert_string_equal(why.key, "ROOTS");
	/* Root's template renders any key. */
	t = tmpl(fx, "t3", "{{ OTHERS }}{{ ROOTS }}", 0);
	assert_int_equal(render(fx, &t, "or", &why), 0);
	/* The instance's search bit counts for the owner too. */
	assert_int_equal(db_instance_set_attr(vault_db(fx->v), fx->inst, 0, 0, 0700,
					      db_now_ns()), 0);
	t = tmpl(fx, "t4", "{{ OTHERS }}", NOBODY_UID);
	assert_int_equal(render(fx, &t, NULL, &why), -EACCES);
}

/* A key whose row carries a flag templates don't know (another feature's
 * limit, such as an expiry) is refused, never read around. */
static void test_unknown_flag_fails_closed(void **state)
{
	struct fx *fx = *state;
	struct template_fail why;
	struct inst_key *k = NULL;
	struct db_secret s, t;

	s = put(fx, "LIMITED", "l", 0600);
	assert_int_equal(db_begin(vault_db(fx->v)), 0);
	assert_int_equal(vault_key_current(fx->v, fx->inst, &k), 0);
	assert_int_equal(db_secret_get(vault_db(fx->v), s.id, &s), 0);
	assert_int_equal(vault_store_next(fx->v, k, &s, (const unsigned char *)"l2", 2, 0x4, 0),
			 0);
	assert_int_equal(db_commit(vault_db(fx->v)), 0);
	vault_key_put(fx->v, k);
	t = tmpl(fx, "t", "{{ LIMITED }}", 0);
	assert_int_equal(render(fx, &t, NULL, &why), -EACCES);
	assert_string_equal(why.key, "LIMITED");
}

struct hits {
	char names[256];
	int n;
};

static int hit(void *ctx, const struct db_secret *t)
{
	struct hits *h = ctx;

	strcat(h->names, t->name);
	strcat(h->names, " ");
	h->n++;
	return 0;
}

static void test_dependents(void **state)
{
	struct fx *fx = *state;
	struct hits h = { .n = 0 };

	put(fx, "K", "k", 0600);
	put(fx, "K2", "k", 0600);
	tmpl(fx, "a", "{{ K }}", 0);
	tmpl(fx, "b", "{{ K2 | json }}", 0);
	tmpl(fx, "c", "{{ K2 }}{{ K | sh }}", 0);
	assert_int_equal(template_dependents(fx->v, fx->inst, "K", hit, &h), 0);
	assert_string_equal(h.names, "a c ");
	memset(&h, 0, sizeof(h));
	assert_int_equal(template_dependents(fx->v, fx->inst, "NONE", hit, &h), 0);
	assert_int_equal(h.n, 0);
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_store_source_and_render),
		FX_TEST(test_missing_key_and_nesting),
		FX_TEST(test_owner_rule),
		FX_TEST(test_dependents),
		FX_TEST(test_unknown_flag_fails_closed),
	};

	return cmocka_run_group_tests_name("template_vault", tests, NULL, NULL);
}
