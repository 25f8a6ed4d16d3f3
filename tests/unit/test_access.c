/* Access rules (fs/access.h) and the config settings that make them. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixture.h"

#include "../../fs/access.h"
#include "../../fs/policy.h"
#include "../../src/config.h"

static int fx_setup(void **state)
{
	return conf_fx_setup(state, "access");
}

static const char rules[] =
	"[vault]\n"
	"max_mode = 0750\n"
	"[instance open]\n"
	"[instance listed]\n"
	"read_users = 1001, 1002\n"
	"read_groups = 500\n"
	"create_users = 1001\n"
	"create_groups = 600 700\n"
	"max_mode = 0640\n"
	"[instance noroot]\n"
	"root_read = no\n"
	"[instance unit]\n"
	"read_units = app.service, job.scope\n";

static void test_parse_rules(void **state)
{
	struct conf_fx *fx = *state;
	const struct instance_conf *ic;

	assert_int_equal(conf_load_text(fx, rules), 0);
	assert_true(fx->c.access.has_max_mode);
	assert_int_equal(fx->c.access.max_mode, 0750);
	ic = policy_instance(&fx->c, "listed");
	assert_non_null(ic);
	assert_int_equal(ic->access.read_users.n, 2);
	assert_int_equal(ic->access.read_users.id[1], 1002);
	assert_int_equal(ic->access.create_groups.n, 2);
	assert_int_equal(ic->access.create_groups.id[1], 700);
	assert_int_equal(ic->access.max_mode, 0640);
	ic = policy_instance(&fx->c, "unit");
	assert_int_equal(ic->access.n_units, 2);
	assert_string_equal(ic->access.units[1], "job.scope");
	assert_true(policy_instance(&fx->c, "noroot")->access.has_root_read);
	assert_false(policy_instance(&fx->c, "noroot")->access.root_read);
}

static void test_parse_names(void **state)
{
	struct conf_fx *fx = *state;
	const struct instance_conf *ic;

	assert_int_equal(conf_load_text(fx, "[vault]\nuser = root\n[instance a]\n"
			 "read_users = root,root , 0\nread_groups = root\n"), 0);
	assert_true(fx->c.daemon.has_user);
	assert_string_equal(fx->c.daemon.user, "root");
	assert_int_equal(fx->c.daemon.uid, 0);
	ic = policy_instance(&fx->c, "a");
	assert_int_equal(ic->access.read_users.n, 1);	/* duplicates collapse */
	assert_int_equal(ic->access.read_groups.id[0], 0);
}

static void test_parse_audit(void **state)
{
	struct conf_fx *fx = *state;

	assert_true(fx->c.daemon.audit && fx->c.daemon.audit_syslog);
	assert_int_equal(fx->c.daemon.audit_retention, 0);
	assert_int_equal(conf_load_text(fx, "[vault]\naudit = no\naudit_syslog = no\n"
			 "audit_retention = 90d\n"), 0);
	assert_false(fx->c.daemon.audit);
	assert_false(fx->c.daemon.audit_syslog);
	assert_int_equal(fx->c.daemon.audit_retention, 90 * 86400);
}

static void test_parse_duration(void **state)
{
	int64_t v;

	(void)state;
	assert_int_equal(config_parse_duration("45", &v), 0);
	assert_int_equal(v, 45);
	assert_int_equal(config_parse_duration("30m", &v), 0);
	assert_int_equal(v, 1800);
	assert_int_equal(config_parse_duration("12h", &v), 0);
	assert_int_equal(v, 43200);
	assert_int_equal(config_parse_duration("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(config_parse_duration("", &v), -EINVAL);
	assert_int_equal(config_parse_duration("d", &v), -EINVAL);
	assert_int_equal(config_parse_duration("5w", &v), -EINVAL);
	assert_int_equal(config_parse_duration("5dd", &v), -EINVAL);
	assert_int_equal(config_parse_duration("-5", &v), -EINVAL);
	assert_int_equal(config_parse_duration("99999999999999999999", &v), -ERANGE);
	assert_int_equal(config_parse_duration("9999999999999d", &v), -ERANGE);
}

struct err_case {
	const char *text;
	unsigned line;
	const char *reason;
};

static const struct err_case err_cases[] = {
	{ "[instance a]\nread_users = root, no_such_user_vfs\n", 2,
	  "unknown user 'no_such_user_vfs' in read_users" },
	{ "[instance a]\n\ncreate_groups = no_such_group_vfs\n", 3,
	  "unknown group 'no_such_group_vfs' in create_groups" },
	{ "[instance a]\nread_users = 4294967295\n", 2, "bad uid '4294967295' in read_users" },
	{ "[instance a]\nread_groups = , ,\n", 2,
	  "empty list for read_groups (leave the setting out for no rule)" },
	{ "[instance a]\nmax_mode = 0999\n", 2, "bad mode '0999' for max_mode (want octal like 0640)" },
	{ "[vault]\nmax_mode = 644x\n", 2, "bad mode '644x' for max_mode (want octal like 0640)" },
	{ "[instance a]\nroot_read = maybe\n", 2, "bad value 'maybe' for root_read (want yes or no)" },
	{ "[instance a]\nreader_users = root\n", 2, "unknown setting 'reader_users' in [instance a]" },
	{ "[instance a]\nread_units = app\n", 2,
	  "bad unit name 'app' in read_units (want NAME.service or NAME.scope)" },
	{ "[instance a]\nread_units = a/b.service\n", 2,
	  "bad unit name 'a/b.service' in read_units (want NAME.service or NAME.scope)" },
	{ "[vault]\nuser = no_such_user_vfs\n", 2, "unknown user 'no_such_user_vfs' for user" },
	{ "[vault]\naudit = sometimes\n", 2, "bad value 'sometimes' for audit (want yes or no)" },
	{ "[vault]\naudit_retention = 3 days\n", 2, "bad duration '3 days' for audit_retention "
	  "(want a number with s, m, h or d, like 90d; 0 keeps every entry)" },
	{ "[instance a]\nuser = root\n", 2, "unknown setting 'user' in [instance a]" },
	{ "[instance a]\nread_users = 1\nread_users = 2\n", 3,
	  "duplicate setting 'read_users' in [instance a] (first on line 2)" },
	{ "[instance a]\nread_users = 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 "
	  "23 24 25 26 27 28 29 30 31 32 33\n", 2, "too many entries in read_users (limit 32)" },
};

static void test_errors(void **state)
{
	struct conf_fx *fx = *state;
	char want[1024];

	for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++) {
		const struct err_case *t = &err_cases[i];
		int r = conf_load_text(fx, t->text);

		snprintf(want, sizeof(want), "%s:%u: %s", fx->path, t->line, t->reason);
		if (r != -EINVAL || strcmp(fx->err, want))
			fail_msg("case %zu: got %d \"%s\", want \"%s\"", i, r, fx->err, want);
	}
}

static int may_read(struct conf_fx *fx, const char *inst, uid_t uid, gid_t gid,
		    const gid_t *groups, int n, const char *unit)
{
	struct access_who w = { uid, gid, groups, n, unit };
	const char *why = NULL;
	int r = access_may_read(&fx->c, inst, &w, &why);

	assert_non_null(why);
	assert_true(r == 0 ? !why[0] : why[0] != '\0');
	return r;
}

static void test_read_rules(void **state)
{
	struct conf_fx *fx = *state;
	const gid_t g500[] = { 42, 500 }, other[] = { 42, 43 };

	assert_int_equal(conf_load_text(fx, rules), 0);
	/* No rules: the mode bits decide alone. */
	assert_int_equal(may_read(fx, "open", 2000, 2000, NULL, 0, NULL), 0);
	assert_int_equal(may_read(fx, "not-configured", 2000, 2000, NULL, 0, NULL), 0);
	/* Listed users, and members of a listed group by primary or supplementary gid. */
	assert_int_equal(may_read(fx, "listed", 1001, 1, NULL, 0, NULL), 0);
	assert_int_equal(may_read(fx, "listed", 1002, 1, NULL, 0, NULL), 0);
	assert_int_equal(may_read(fx, "listed", 2000, 500, NULL, 0, NULL), 0);
	assert_int_equal(may_read(fx, "listed", 2000, 1, g500, 2, NULL), 0);
	assert_int_equal(may_read(fx, "listed", 2000, 1, other, 2, NULL), -EACCES);
	assert_int_equal(may_read(fx, "listed", 2000, 1, NULL, -1, NULL), -EACCES);
	/* Root is exempt from lists, but not from root_read = no. */
	assert_int_equal(may_read(fx, "listed", 0, 0, NULL, 0, NULL), 0);
	assert_int_equal(may_read(fx, "noroot", 0, 0, NULL, 0, NULL), -EACCES);
	assert_int_equal(may_read(fx, "noroot", 1001, 1001, NULL, 0, NULL), 0);
	/* Units: listed ones only; unknown is no match. */
	assert_int_equal(may_read(fx, "unit", 2000, 1, NULL, 0, "app.service"), 0);
	assert_int_equal(may_read(fx, "unit", 2000, 1, NULL, 0, "job.scope"), 0);
	assert_int_equal(may_read(fx, "unit", 2000, 1, NULL, 0, "other.service"), -EACCES);
	assert_int_equal(may_read(fx, "unit", 2000, 1, NULL, 0, NULL), -EACCES);
}

static void test_root_read_default(void **state)
{
	struct conf_fx *fx = *state;

	assert_int_equal(conf_load_text(fx, "[vault]\nroot_read = no\n[instance yes]\nroot_read = yes\n"), 0);
	assert_int_equal(may_read(fx, "other", 0, 0, NULL, 0, NULL), -EACCES);
	assert_int_equal(may_read(fx, "yes", 0, 0, NULL, 0, NULL), 0);
}

static void test_needs(void **state)
{
	struct conf_fx *fx = *state;

	assert_int_equal(conf_load_text(fx, rules), 0);
	assert_int_equal(access_read_needs(&fx->c, "open"), 0);
	assert_int_equal(access_read_needs(&fx->c, "listed"), ACCESS_NEED_GROUPS);
	assert_int_equal(access_read_needs(&fx->c, "unit"), ACCESS_NEED_UNIT);
	assert_int_equal(access_create_needs(&fx->c, "listed"), ACCESS_NEED_GROUPS);
	assert_int_equal(access_create_needs(&fx->c, "noroot"), 0);
}

static void test_create_rules(void **state)
{
	struct conf_fx *fx = *state;
	struct access_who w = { .uid = 1001, .gid = 1 };
	const gid_t g700[] = { 700 };
	const char *why;

	assert_int_equal(conf_load_text(fx, rules), 0);
	assert_int_equal(access_may_create(&fx->c, "listed", &w, &why), 0);
	w.uid = 1002;
	assert_int_equal(access_may_create(&fx->c, "listed", &w, &why), -EACCES);
	assert_string_equal(why, "not in create_users or create_groups");
	w.groups = g700;
	w.ngroups = 1;
	assert_int_equal(access_may_create(&fx->c, "listed", &w, &why), 0);
	w.ngroups = 0;
	w.gid = 600;
	assert_int_equal(access_may_create(&fx->c, "listed", &w, &why), 0);
	w.gid = 1;
	assert_int_equal(access_may_create(&fx->c, "open", &w, &why), 0);
	w.uid = 0;
	assert_int_equal(access_may_create(&fx->c, "listed", &w, &why), 0);
}

static void test_max_mode(void **state)
{
	struct conf_fx *fx = *state;
	const char *why;

	assert_int_equal(conf_load_text(fx, rules), 0);
	assert_int_equal(access_max_mode(&fx->c, "listed"), 0640);
	assert_int_equal(access_max_mode(&fx->c, "open"), 0750);	/* [vault] default */
	assert_int_equal(access_mode_allowed(&fx->c, "listed", 0640, &why), 0);
	assert_int_equal(access_mode_allowed(&fx->c, "listed", 0400, &why), 0);
	assert_int_equal(access_mode_allowed(&fx->c, "listed", 0644, &why), -EPERM);
	assert_string_equal(why, "beyond max_mode");
	assert_int_equal(access_mode_allowed(&fx->c, "listed", 0604, &why), -EPERM);
	assert_int_equal(access_mode_allowed(&fx->c, "listed", 04640, &why), -EPERM);
	assert_int_equal(access_mode_allowed(&fx->c, "open", 0750, &why), 0);
	assert_int_equal(access_mode_allowed(&fx->c, "open", 0751, &why), -EPERM);
	policy_free(&fx->c);
	policy_defaults(&fx->c);
	assert_int_equal(access_mode_allowed(&fx->c, "open", 0777, &why), 0);
}

static void test_unit_from_cgroup(void **state)
{
	char unit[64];

	(void)state;
	assert_int_equal(access_unit_from_cgroup("0::/system.slice/app.service\n", unit,
						 sizeof(unit)), 0);
	assert_string_equal(unit, "app.service");
	/* A service's own sub-cgroups still belong to it. */
	assert_int_equal(access_unit_from_cgroup("0::/system.slice/app.service/worker\n", unit,
						 sizeof(unit)), 0);
	assert_string_equal(unit, "app.service");
	assert_int_equal(access_unit_from_cgroup(
		"0::/user.slice/user-1000.slice/session-3.scope\n", unit, sizeof(unit)), 0);
	assert_string_equal(unit, "session-3.scope");
	/* cgroup v1: the name=systemd hierarchy. */
	assert_int_equal(access_unit_from_cgroup(
		"4:memory:/x\n1:name=systemd:/system.slice/db.service\n0::/\n", unit,
		sizeof(unit)), 0);
	assert_string_equal(unit, "db.service");
	assert_int_equal(access_unit_from_cgroup("0::/\n", unit, sizeof(unit)), -ENOENT);
	assert_int_equal(access_unit_from_cgroup("0::/docker/abc\n", unit, sizeof(unit)), -ENOENT);
	assert_int_equal(access_unit_from_cgroup("", unit, sizeof(unit)), -ENOENT);
	assert_int_equal(access_unit_from_cgroup("0::/a.slice/long-name.service\n", unit, 8),
			 -ENAMETOOLONG);
}

/* The mode bits as the kernel reads them: one class per caller. */
static void test_mode_permits(void **state)
{
	static const gid_t extra[] = { 300 };
	struct access_who owner = { .uid = 100, .gid = 100 };
	struct access_who member = { .uid = 200, .gid = 200, .groups = extra, .ngroups = 1 };
	struct access_who other = { .uid = 201, .gid = 201 };
	struct access_who unknown = { .uid = 202, .gid = 202, .ngroups = -1 };
	struct access_who root = { .uid = 0, .gid = 0 };

	(void)state;
	assert_true(access_mode_permits(&owner, 100, 300, 0600, R_OK | W_OK));
	assert_false(access_mode_permits(&owner, 100, 300, 0066, R_OK));	/* owner class */
	assert_true(access_mode_permits(&member, 100, 300, 0640, R_OK));
	assert_false(access_mode_permits(&member, 100, 300, 0640, W_OK));
	assert_false(access_mode_permits(&member, 100, 300, 0604, R_OK));	/* group class */
	assert_true(access_mode_permits(&other, 100, 300, 0644, R_OK));
	assert_false(access_mode_permits(&other, 100, 300, 0640, R_OK));
	assert_false(access_mode_permits(&unknown, 100, 300, 0640, R_OK));
	assert_true(access_mode_permits(&root, 100, 300, 0000, R_OK | W_OK | X_OK));
	assert_true(access_mode_permits(&other, 100, 300, 0711, X_OK));
	assert_false(access_mode_permits(&other, 100, 300, 01770, X_OK));

	/* Groups matter only where the group's bits and the others' differ. */
	assert_true(access_mode_needs_groups(&other, 100, 300, 0640, R_OK));
	assert_false(access_mode_needs_groups(&other, 100, 300, 0644, R_OK));
	assert_false(access_mode_needs_groups(&other, 100, 300, 0600, R_OK));
	assert_false(access_mode_needs_groups(&owner, 100, 300, 0640, R_OK));
	assert_false(access_mode_needs_groups(&root, 100, 300, 0640, R_OK));
	assert_false(access_mode_needs_groups(&other, 100, 201, 0640, R_OK));
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, conf_fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_parse_rules),
		FX_TEST(test_parse_names),
		FX_TEST(test_parse_audit),
		cmocka_unit_test(test_parse_duration),
		FX_TEST(test_errors),
		FX_TEST(test_read_rules),
		FX_TEST(test_root_read_default),
		FX_TEST(test_needs),
		FX_TEST(test_create_rules),
		FX_TEST(test_max_mode),
		cmocka_unit_test(test_unit_from_cgroup),
		cmocka_unit_test(test_mode_permits),
	};

	return cmocka_run_group_tests_name("access", tests, NULL, NULL);
}
