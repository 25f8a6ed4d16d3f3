/* The INI configuration (src/config.h) and the policy list (fs/policy.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
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

#include "../../fs/policy.h"
#include "../../src/config.h"

static int fx_setup(void **state)
{
	return conf_fx_setup(state, "config");
}

static void test_defaults(void **state)
{
	struct vault_conf c;

	memset(&c, 0x55, sizeof(c));
	policy_defaults(&c);
	assert_string_equal(c.db, "/var/lib/vaultfs/vault.db");
	assert_string_equal(c.key_file, "");
	assert_string_equal(c.mountpoint, "/run/vault");
	assert_string_equal(c.path, "");
	assert_int_equal(c.max_value_size, POLICY_MAX_VALUE_DEFAULT);
	assert_int_equal(c.newline, NL_STRIP_SINGLE_LINE);
	assert_int_equal(c.secret_mode, 0600);
	assert_int_equal(c.daemon.audit_fold, 2);
	assert_false(c.allow_unlocked_memory);
	assert_int_equal(c.memlock_budget, 0);
	assert_false(c.has_memlock_reserve);
	assert_int_equal(c.user_memlock, 16 * 1024 * 1024);
	assert_int_equal(c.user_handles, 1024);
	assert_true(c.attr_timeout == 1.0);
	assert_null(c.instances);
	assert_null(policy_instance(&c, "billing"));
	policy_free(&c);
	assert_null(c.instances);
}

static const char full_conf[] =
	"# vaultfs test configuration\n"				/* 1 */
	"[vault]\n"
	"db = /srv/vault/v.db\n"
	"key_file = /etc/vaultfs/master.key   ; where the key lives\n"
	"mountpoint: /mnt/vault\n"					/* 5 */
	"max_value_size = 2M\n"
	"newline = keep\n"
	"secret_mode = 0640\n"
	"allow_unlocked_memory = yes\n"
	"memlock_budget = 64K\n"					/* 10 */
	"attr_timeout = 0.5\n"
	"\n"
	"[instance billing]\n"
	"owner = root\n"
	"group = root\n"						/* 15 */
	"mode = 0750\n"
	"secret_mode = 440\n"
	"newline = strip\n"
	"\n"
	"[instance support-bot]\n"					/* 20 */
	"\towner = 1234   \n"
	"group=5678\n"
	"  ; an instance with nothing set\n"
	"[instance empty.one]\n";

static void test_full(void **state)
{
	struct conf_fx *fx = *state;
	const struct instance_conf *in;
	const char *path = conf_write(fx, full_conf);

	assert_int_equal(conf_load(fx, path), 0);
	assert_string_equal(fx->err, "");
	assert_string_equal(fx->c.path, path);
	assert_string_equal(fx->c.db, "/srv/vault/v.db");
	assert_string_equal(fx->c.key_file, "/etc/vaultfs/master.key");
	assert_string_equal(fx->c.mountpoint, "/mnt/vault");
	assert_int_equal(fx->c.max_value_size, 2 * 1024 * 1024);
	assert_int_equal(fx->c.newline, NL_KEEP);
	assert_int_equal(fx->c.secret_mode, 0640);
	assert_true(fx->c.allow_unlocked_memory);
	assert_int_equal(fx->c.memlock_budget, 65536);
	assert_true(fx->c.attr_timeout == 0.5);

	in = fx->c.instances;
	assert_non_null(in);
	assert_string_equal(in->name, "billing");
	assert_int_equal(in->line, 13);
	assert_true(in->has_owner && in->has_group && in->has_mode);
	assert_true(in->has_secret_mode && in->has_newline);
	assert_int_equal(in->owner, 0);
	assert_int_equal(in->group, 0);
	assert_int_equal(in->mode, 0750);
	assert_int_equal(in->secret_mode, 0440);
	assert_int_equal(in->newline, NL_STRIP_SINGLE_LINE);
	assert_ptr_equal(policy_instance(&fx->c, "billing"), in);

	in = in->next;
	assert_non_null(in);
	assert_string_equal(in->name, "support-bot");
	assert_int_equal(in->line, 20);
	assert_true(in->has_owner && in->has_group);
	assert_false(in->has_mode || in->has_secret_mode || in->has_newline);
	assert_int_equal(in->owner, 1234);
	assert_int_equal(in->group, 5678);
	assert_ptr_equal(policy_instance(&fx->c, "support-bot"), in);

	in = in->next;
	assert_non_null(in);
	assert_string_equal(in->name, "empty.one");
	assert_int_equal(in->line, 24);
	assert_false(in->has_owner || in->has_group || in->has_mode);
	assert_false(in->has_secret_mode || in->has_newline);
	assert_null(in->next);

	assert_null(policy_instance(&fx->c, "nosuch"));
	assert_null(policy_instance(&fx->c, "Billing"));
	assert_null(policy_instance(&fx->c, "billin"));
	assert_null(policy_instance(&fx->c, ""));
	policy_free(&fx->c);
	assert_null(fx->c.instances);
}

static void test_empty_file(void **state)
{
	struct conf_fx *fx = *state;
	const char *path = conf_write(fx, "");

	assert_int_equal(conf_load(fx, path), 0);
	assert_string_equal(fx->c.path, path);
	assert_string_equal(fx->c.db, "/var/lib/vaultfs/vault.db");
	assert_null(fx->c.instances);
	assert_int_equal(conf_load_text(fx, "# only\n; comments\n\n   \n"), 0);
	assert_null(fx->c.instances);
}

/* A second file changes only what it sets. */
static void test_layered(void **state)
{
	struct conf_fx *fx = *state;
	char a[PATH_MAX];

	snprintf(a, sizeof(a), "%s", conf_write(fx, "[vault]\ndb = /a.db\nsecret_mode = 0400\n"
						"[instance one]\nmode = 0700\n"));
	assert_int_equal(conf_load(fx, a), 0);
	conf_write(fx, "[vault]\nsecret_mode = 0440\n[instance two]\n");
	assert_int_equal(config_load(&fx->c, fx->path, fx->err, sizeof(fx->err)), 0);
	assert_string_equal(fx->c.path, fx->path);
	assert_string_equal(fx->c.db, "/a.db");
	assert_int_equal(fx->c.secret_mode, 0440);
	assert_string_equal(fx->c.mountpoint, "/run/vault");
	assert_non_null(policy_instance(&fx->c, "one"));
	assert_non_null(policy_instance(&fx->c, "two"));
	assert_int_equal(policy_instance(&fx->c, "one")->mode, 0700);

	/* Naming an instance the first file had is a duplicate. */
	conf_write(fx, "[instance one]\n");
	assert_int_equal(config_load(&fx->c, fx->path, fx->err, sizeof(fx->err)), -EINVAL);
	assert_non_null(strstr(fx->err, ":1: duplicate section [instance one]"));
}

static void test_bom_crlf(void **state)
{
	struct conf_fx *fx = *state;

	assert_int_equal(conf_load_text(fx, "\xEF\xBB\xBF[vault]\r\ndb = /x.db\r\n"
					"[instance a]\r\nmode = 0700\r\n"), 0);
	assert_string_equal(fx->c.db, "/x.db");
	assert_non_null(policy_instance(&fx->c, "a"));
	assert_int_equal(policy_instance(&fx->c, "a")->mode, 0700);
	assert_int_equal(conf_load_text(fx, "\xEF\xBB\xBF""db = /x.db\r\n"), -EINVAL);
	assert_non_null(strstr(fx->err, ":1: setting 'db' outside any section"));
}

static void test_bools(void **state)
{
	static const struct { const char *s; bool v; } t[] = {
		{ "yes", true }, { "no", false }, { "true", true }, { "false", false },
		{ "1", true }, { "0", false }, { "YES", true }, { "False", false },
	};
	struct conf_fx *fx = *state;
	char text[128];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		snprintf(text, sizeof(text), "[vault]\nallow_unlocked_memory = %s\n", t[i].s);
		assert_int_equal(conf_load_text(fx, text), 0);
		if (fx->c.allow_unlocked_memory != t[i].v)
			fail_msg("allow_unlocked_memory = %s", t[i].s);
	}
}

static void test_values_in_range(void **state)
{
	static const struct { const char *s; double v; } timeouts[] = {
		{ "0", 0 }, { "3600", 3600 }, { "1.25", 1.25 }, { "0.001", 0.001 },
		{ "2", 2 }, { "3600.0", 3600 },
	};
	static const struct { const char *s; size_t v; } sizes[] = {
		{ "1", 1 }, { "64M", 64 << 20 }, { "67108864", 64 << 20 }, { "4k", 4096 },
	};
	struct conf_fx *fx = *state;
	char text[128];

	for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++) {
		snprintf(text, sizeof(text), "[vault]\nattr_timeout = %s\n", timeouts[i].s);
		assert_int_equal(conf_load_text(fx, text), 0);
		assert_true(fx->c.attr_timeout == timeouts[i].v);
	}
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		snprintf(text, sizeof(text), "[vault]\nmax_value_size = %s\n", sizes[i].s);
		assert_int_equal(conf_load_text(fx, text), 0);
		assert_int_equal(fx->c.max_value_size, sizes[i].v);
	}
	assert_int_equal(conf_load_text(fx, "[vault]\nmemlock_budget = 0\n"), 0);
	assert_int_equal(fx->c.memlock_budget, 0);
	assert_int_equal(conf_load_text(fx, "[vault]\nmemlock_budget = 1G\n"), 0);
	assert_int_equal(fx->c.memlock_budget, 1 << 30);
	assert_int_equal(conf_load_text(fx, "[vault]\nsecret_mode = 000\n"), 0);
	assert_int_equal(fx->c.secret_mode, 0);
}

static void test_names_for_ids(void **state)
{
	struct conf_fx *fx = *state;
	const struct instance_conf *in;
	struct passwd *pw = getpwnam("nobody");
	struct group *gr = getgrnam("nogroup");
	char text[256];

	if (!pw || !gr)
		skip();
	snprintf(text, sizeof(text), "[instance a]\nowner = nobody\ngroup = nogroup\n"
		 "[instance b]\nowner = 0\ngroup = 4294967294\n");
	assert_int_equal(conf_load_text(fx, text), 0);
	in = policy_instance(&fx->c, "a");
	assert_non_null(in);
	assert_int_equal(in->owner, pw->pw_uid);
	assert_int_equal(in->group, gr->gr_gid);
	in = policy_instance(&fx->c, "b");
	assert_non_null(in);
	assert_int_equal(in->owner, 0);
	assert_int_equal(in->group, 4294967294u);
}

/* Instance names past inih's own 49-byte section buffer, paths to PATH_MAX. */
static void test_long_names(void **state)
{
	struct conf_fx *fx = *state;
	char name[300], text[PATH_MAX + 64], want[1024];

	memset(name, 'n', 255);
	name[255] = '\0';
	snprintf(text, sizeof(text), "[instance %s]\nmode = 0711\n[instance %.254s]\n", name, name);
	assert_int_equal(conf_load_text(fx, text), 0);
	assert_non_null(policy_instance(&fx->c, name));
	assert_int_equal(policy_instance(&fx->c, name)->mode, 0711);
	name[254] = '\0';
	assert_non_null(policy_instance(&fx->c, name));
	assert_false(policy_instance(&fx->c, name)->has_mode);

	name[254] = name[255] = 'n';
	name[256] = '\0';
	snprintf(text, sizeof(text), "[instance %s]\n", name);
	assert_int_equal(conf_load_text(fx, text), -EINVAL);
	snprintf(want, sizeof(want), "%s:1: bad instance name '%s' (want 1 to 255 of "
		 "A-Z a-z 0-9 . _ -)", fx->path, name);
	assert_string_equal(fx->err, want);

	/* A 4095-byte path fits c->db; 4096 does not. */
	text[0] = '\0';
	strcat(text, "[vault]\ndb = /");
	memset(text + strlen(text), 'p', PATH_MAX - 2);
	text[14 + PATH_MAX - 2] = '\0';
	strcat(text, "\n");
	assert_int_equal(conf_load_text(fx, text), 0);
	assert_int_equal(strlen(fx->c.db), PATH_MAX - 1);
	text[strlen(text) - 1] = 'p';
	strcat(text, "\n");
	assert_int_equal(conf_load_text(fx, text), -EINVAL);
	snprintf(want, sizeof(want), "%s:2: path too long for db", fx->path);
	assert_string_equal(fx->err, want);
	assert_int_equal(strlen(fx->c.db), strlen("/var/lib/vaultfs/vault.db"));
}

static void test_long_line(void **state)
{
	struct conf_fx *fx = *state;
	char *text = malloc(20000), want[PATH_MAX];

	assert_non_null(text);
	strcpy(text, "[vault]\n# ");
	memset(text + 10, 'x', 10000);
	strcpy(text + 10010, "\ndb = /after.db\n");
	assert_int_equal(conf_load_text(fx, text), -EINVAL);
	snprintf(want, sizeof(want), "%s:2: line too long", fx->path);
	assert_memory_equal(fx->err, want, strlen(want));
	assert_string_equal(fx->c.db, "/var/lib/vaultfs/vault.db");

	/* A value that inih would cut off and hand over in pieces. */
	strcpy(text, "[vault]\ndb = /");
	memset(text + 14, 'y', 9000);
	strcpy(text + 9014, "\n");
	assert_int_equal(conf_load_text(fx, text), -EINVAL);
	snprintf(want, sizeof(want), "%s:2: line too long", fx->path);
	assert_memory_equal(fx->err, want, strlen(want));
	assert_string_equal(fx->c.db, "/var/lib/vaultfs/vault.db");
	free(text);
}

static void test_nul_byte(void **state)
{
	static const char text[] = "[vault]\ndb = /a\0b.db\n";
	struct conf_fx *fx = *state;
	char want[PATH_MAX];

	conf_write_len(fx, text, sizeof(text) - 1, 0600);
	assert_int_equal(conf_load(fx, fx->path), -EINVAL);
	snprintf(want, sizeof(want), "%s:2: ", fx->path);
	assert_memory_equal(fx->err, want, strlen(want));
	assert_string_equal(fx->c.db, "/var/lib/vaultfs/vault.db");
}

struct err_case {
	const char *text;
	unsigned line;
	const char *reason;
};

static const struct err_case err_cases[] = {
	{ "[vault]\ncolour = red\n", 2, "unknown setting 'colour' in [vault]" },
	{ "[vault]\nDB = /x\n", 2, "unknown setting 'DB' in [vault]" },
	{ "db = /x\n", 1, "setting 'db' outside any section" },
	{ "; c\n\n# c\ndb = /x\n", 4, "setting 'db' outside any section" },
	{ "[vault]\nsecret_mode = 0999\n", 2,
	  "bad mode '0999' for secret_mode (want octal like 0640)" },
	{ "[vault]\nsecret_mode = 4750\n", 2,
	  "bad mode '4750' for secret_mode (want octal like 0640)" },
	{ "[vault]\nsecret_mode = 64\n", 2,
	  "bad mode '64' for secret_mode (want octal like 0640)" },
	{ "[vault]\nsecret_mode = 00640\n", 2,
	  "bad mode '00640' for secret_mode (want octal like 0640)" },
	{ "[vault]\nsecret_mode = rw-r-----\n", 2,
	  "bad mode 'rw-r-----' for secret_mode (want octal like 0640)" },
	{ "[vault]\nsecret_mode =\n", 2,
	  "bad mode '' for secret_mode (want octal like 0640)" },
	{ "[vault]\ndb = vault.db\n", 2, "bad path 'vault.db' for db (want an absolute path)" },
	{ "[vault]\nkey_file =\n", 2, "bad path '' for key_file (want an absolute path)" },
	{ "[vault]\nmountpoint = run/vault\n", 2,
	  "bad path 'run/vault' for mountpoint (want an absolute path)" },
	{ "[vault]\nmax_value_size = 0\n", 2, "bad size '0' for max_value_size "
	  "(want 1 to 64M bytes, with an optional K, M or G)" },
	{ "[vault]\nmax_value_size = 67108865\n", 2, "bad size '67108865' for max_value_size "
	  "(want 1 to 64M bytes, with an optional K, M or G)" },
	{ "[vault]\nmax_value_size = 1G\n", 2, "bad size '1G' for max_value_size "
	  "(want 1 to 64M bytes, with an optional K, M or G)" },
	{ "[vault]\nmax_value_size = -1\n", 2, "bad size '-1' for max_value_size "
	  "(want 1 to 64M bytes, with an optional K, M or G)" },
	{ "[vault]\nmax_value_size = 1.5M\n", 2, "bad size '1.5M' for max_value_size "
	  "(want 1 to 64M bytes, with an optional K, M or G)" },
	{ "[vault]\nmax_value_size = 1MB\n", 2, "bad size '1MB' for max_value_size "
	  "(want 1 to 64M bytes, with an optional K, M or G)" },
	{ "[vault]\nnewline = crlf\n", 2, "bad value 'crlf' for newline (want strip or keep)" },
	{ "[vault]\nnewline = Strip\n", 2, "bad value 'Strip' for newline (want strip or keep)" },
	{ "[vault]\nallow_unlocked_memory = maybe\n", 2,
	  "bad value 'maybe' for allow_unlocked_memory (want yes or no)" },
	{ "[vault]\nallow_unlocked_memory =\n", 2,
	  "bad value '' for allow_unlocked_memory (want yes or no)" },
	{ "[vault]\nmemlock_budget = lots\n", 2,
	  "bad size 'lots' for memlock_budget (want bytes, with an optional K, M or G)" },
	{ "[vault]\nmemlock_budget = 99999999999999999999\n", 2,
	  "bad size '99999999999999999999' for memlock_budget (want bytes, with an "
	  "optional K, M or G)" },
	{ "[vault]\nattr_timeout = 3601\n", 2,
	  "bad value '3601' for attr_timeout (want seconds from 0 to 3600)" },
	{ "[vault]\nattr_timeout = 3600.5\n", 2,
	  "bad value '3600.5' for attr_timeout (want seconds from 0 to 3600)" },
	{ "[vault]\nattr_timeout = -1\n", 2,
	  "bad value '-1' for attr_timeout (want seconds from 0 to 3600)" },
	{ "[vault]\nattr_timeout = 1e3\n", 2,
	  "bad value '1e3' for attr_timeout (want seconds from 0 to 3600)" },
	{ "[vault]\nattr_timeout = 0x10\n", 2,
	  "bad value '0x10' for attr_timeout (want seconds from 0 to 3600)" },
	{ "[vault]\nattr_timeout = nan\n", 2,
	  "bad value 'nan' for attr_timeout (want seconds from 0 to 3600)" },
	{ "[vault]\nattr_timeout = 1.2.3\n", 2,
	  "bad value '1.2.3' for attr_timeout (want seconds from 0 to 3600)" },
	{ "[vault]\nattr_timeout = .\n", 2,
	  "bad value '.' for attr_timeout (want seconds from 0 to 3600)" },
	{ "[instance billing]\nowner = root\n\nowner = nosuch-user-vaultfs\n", 4,
	  "duplicate setting 'owner' in [instance billing] (first on line 2)" },
	{ "[instance billing]\nmode = 0750\nowner = nosuch-user-vaultfs\n", 3,
	  "unknown user 'nosuch-user-vaultfs' for owner" },
	{ "[instance billing]\ngroup = nosuch-group-vaultfs\n", 2,
	  "unknown group 'nosuch-group-vaultfs' for group" },
	{ "[instance billing]\nowner =\n", 2, "unknown user '' for owner" },
	{ "[instance billing]\nowner = 4294967295\n", 2, "bad uid '4294967295' for owner" },
	{ "[instance billing]\nowner = 99999999999999999999999\n", 2,
	  "bad uid '99999999999999999999999' for owner" },
	{ "[instance billing]\ngroup = 4294967295\n", 2, "bad gid '4294967295' for group" },
	{ "[vault]\nuser_handles = -1\n", 2, "bad value '-1' for user_handles (want 0 to "
	  "1000000 open files per user; 0 for no limit)" },
	{ "[vault]\nuser_handles = 1000001\n", 2, "bad value '1000001' for user_handles (want "
	  "0 to 1000000 open files per user; 0 for no limit)" },
	{ "[vault]\nuser_memlock = lots\n", 2, "bad size 'lots' for user_memlock (want bytes, "
	  "with an optional K, M or G; 0 for no limit)" },
	{ "[vault]\nmemlock_reserve = 1T\n", 2, "bad size '1T' for memlock_reserve (want "
	  "bytes, with an optional K, M or G)" },
	{ "[instance billing]\nmode = 0800\n", 2,
	  "bad mode '0800' for mode (want octal like 0750, or 1770 with the sticky bit)" },
	{ "[instance billing]\nmode = 1800\n", 2,
	  "bad mode '1800' for mode (want octal like 0750, or 1770 with the sticky bit)" },
	{ "[instance billing]\nmode = 2777\n", 2,
	  "bad mode '2777' for mode (want octal like 0750, or 1770 with the sticky bit)" },
	{ "[instance billing]\nsecret_mode = 2640\n", 2,
	  "bad mode '2640' for secret_mode (want octal like 0640)" },
	{ "[instance billing]\nnewline = no\n", 2,
	  "bad value 'no' for newline (want strip or keep)" },
	{ "[instance billing]\nexpects = OPENAI_API_KEY\n", 2,
	  "unknown setting 'expects' in [instance billing]" },
	{ "[instance billing]\nexpect = A, B C\n", 2, "bad key name 'B C' in expect (want a "
	  "list like A, B of 1 to 255 of A-Z a-z 0-9 . _ -)" },
	{ "[instance billing]\nexpect = A,,B\n", 2, "bad key name '' in expect (want a "
	  "list like A, B of 1 to 255 of A-Z a-z 0-9 . _ -)" },
	{ "[instance billing]\nexpect =\n", 2, "bad key name '' in expect (want a "
	  "list like A, B of 1 to 255 of A-Z a-z 0-9 . _ -)" },
	{ "[instance billing]\nexpect = A, ..\n", 2, "bad key name '..' in expect (want a "
	  "list like A, B of 1 to 255 of A-Z a-z 0-9 . _ -)" },
	{ "[instance billing]\nexpect = A, B, A\n", 2, "key A is listed twice in expect" },
	{ "[instance billing]\nexpect = A\nexpect = B\n", 3,
	  "duplicate setting 'expect' in [instance billing] (first on line 2)" },
	{ "[vault]\nversions = 0\n", 2, "bad value '0' for versions (want 1 to 1000: how "
	  "many values of a secret are kept, the current one included)" },
	{ "[vault]\nversions = 1001\n", 2, "bad value '1001' for versions (want 1 to 1000: "
	  "how many values of a secret are kept, the current one included)" },
	{ "[vault]\nversions = ten\n", 2, "bad value 'ten' for versions (want 1 to 1000: "
	  "how many values of a secret are kept, the current one included)" },
	{ "[vault]\nundelete_window = 7w\n", 2, "bad duration '7w' for undelete_window (want "
	  "seconds, or a number with s, m, h or d, like 7d; 0 makes deletes final)" },
	{ "[vault]\nundelete_window = -1d\n", 2, "bad duration '-1d' for undelete_window "
	  "(want seconds, or a number with s, m, h or d, like 7d; 0 makes deletes final)" },
	{ "[vault]\nundelete_window = 1dd\n", 2, "bad duration '1dd' for undelete_window "
	  "(want seconds, or a number with s, m, h or d, like 7d; 0 makes deletes final)" },
	{ "[vault]\nundelete_window = 99999999999d\n", 2, "bad duration '99999999999d' for "
	  "undelete_window (want seconds, or a number with s, m, h or d, like 7d; 0 makes "
	  "deletes final)" },
	{ "[vault]\naudit_fold = 2h\n", 2, "bad duration '2h' for audit_fold (want at most "
	  "1h, like 2s; 0 stores every event on its own)" },
	{ "[vault]\naudit_fold = soon\n", 2, "bad duration 'soon' for audit_fold (want at "
	  "most 1h, like 2s; 0 stores every event on its own)" },
	{ "[instance billing]\ndb = /x.db\n", 2, "unknown setting 'db' in [instance billing]" },
	{ "[vault]\nowner = root\n", 2, "unknown setting 'owner' in [vault]" },
	{ "[instance a/b]\n", 1, "bad instance name 'a/b' (want 1 to 255 of A-Z a-z 0-9 . _ -)" },
	{ "[vault]\n[instance ..]\n", 2,
	  "bad instance name '..' (want 1 to 255 of A-Z a-z 0-9 . _ -)" },
	{ "[instance a b]\n", 1, "bad instance name 'a b' (want 1 to 255 of A-Z a-z 0-9 . _ -)" },
	{ "[instance]\n", 1, "missing name in [instance] (want [instance NAME])" },
	{ "[instance   ]\n", 1, "missing name in [instance   ] (want [instance NAME])" },
	{ "[instances billing]\n", 1, "unknown section [instances billing]" },
	{ "[Vault]\n", 1, "unknown section [Vault]" },
	{ "[ vault ]\n", 1, "unknown section [ vault ]" },
	{ "[]\n", 1, "unknown section []" },
	{ "[vault]\n[secrets]\ndb = /x\n", 2, "unknown section [secrets]" },
	{ "[vault\ndb = /x\n", 1, "bad section header: no closing ']'" },
	{ "[vault] extra\n", 1, "unexpected text 'extra' after section header" },
	{ "[instance a]\nmode = 0750\n\n[instance a]\n", 4,
	  "duplicate section [instance a] (first on line 1)" },
	{ "[vault]\n[instance a]\n[vault]\n", 3, "duplicate section [vault] (first on line 1)" },
	{ "[vault]\ndb = /a\ndb = /b\n", 3, "duplicate setting 'db' in [vault] (first on line 2)" },
	{ "[vault]\ndb /x\n", 2, "syntax error (want 'key = value' or '[section]')" },
	{ "[vault]\ndb = /a\n  /b\n", 3, "syntax error (want 'key = value' or '[section]')" },
	{ "[vault]\r\ncolour = x\r\n", 2, "unknown setting 'colour' in [vault]" },
	/* The first error is the one reported. */
	{ "[vault]\ndb = /ok\ncolour = 1\nshape = 2\n[bad]\n", 3,
	  "unknown setting 'colour' in [vault]" },
	{ "[vault]\ndb x\ncolour = 1\n", 2, "syntax error (want 'key = value' or '[section]')" },
};

static void test_lifecycle_settings(void **state)
{
	struct conf_fx *fx = *state;
	const struct instance_conf *ic;

	assert_int_equal(fx->c.versions, POLICY_VERSIONS_DEFAULT);
	assert_int_equal(fx->c.undelete_window, POLICY_UNDELETE_DEFAULT);
	assert_int_equal(conf_load_text(fx, "[vault]\nversions = 3\nundelete_window = 36h\n"
					"[instance billing]\n"
					"expect =  OPENAI_API_KEY ,STRIPE_API_KEY,x.y-z\n"
					"[instance other]\n"), 0);
	assert_int_equal(fx->c.versions, 3);
	assert_int_equal(fx->c.undelete_window, 36 * 3600);
	ic = policy_instance(&fx->c, "billing");
	assert_non_null(ic);
	assert_int_equal(ic->n_expect, 3);
	assert_string_equal(ic->expect[0], "OPENAI_API_KEY");
	assert_string_equal(ic->expect[1], "STRIPE_API_KEY");
	assert_string_equal(ic->expect[2], "x.y-z");
	ic = policy_instance(&fx->c, "other");
	assert_int_equal(ic->n_expect, 0);
	assert_null(ic->expect);
	assert_int_equal(conf_load_text(fx, "[vault]\nundelete_window = 0\n"), 0);
	assert_int_equal(fx->c.undelete_window, 0);
}

static void test_parse_duration(void **state)
{
	static const struct { const char *s; int64_t want; } ok[] = {
		{ "0", 0 }, { "90", 90 }, { "90s", 90 }, { "15m", 900 }, { "12h", 43200 },
		{ "7d", 604800 },
	};
	static const char *const bad[] = { "", "d", "1w", "1.5d", "-1", "1 d", "1ds", "0x10" };
	int64_t v;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(config_parse_duration(ok[i].s, &v), 0);
		assert_int_equal(v, ok[i].want);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_true(config_parse_duration(bad[i], &v) < 0);
}

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

static void test_missing_file(void **state)
{
	struct conf_fx *fx = *state;
	char path[PATH_MAX], want[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/nosuch.ini", fx->tmp.path);
	assert_int_equal(conf_load(fx, path), -ENOENT);
	snprintf(want, sizeof(want), "%s: No such file or directory", path);
	assert_string_equal(fx->err, want);
	assert_null(fx->c.instances);
}

static void test_file_checks(void **state)
{
	static const mode_t bad[] = { 0620, 0602, 0666, 0660, 0622, 0606 };
	static const mode_t good[] = { 0600, 0644, 0400, 0640, 0444 };
	struct conf_fx *fx = *state;
	char want[PATH_MAX + 64];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		conf_write_len(fx, "[vault]\n", 8, bad[i]);
		assert_true(conf_load(fx, fx->path) < 0);
		snprintf(want, sizeof(want), "%s: must not be writable by group or others",
			 fx->path);
		assert_string_equal(fx->err, want);
		assert_string_equal(fx->c.path, "");
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		conf_write_len(fx, "[vault]\ndb = /g.db\n", 19, good[i]);
		assert_int_equal(conf_load(fx, fx->path), 0);
		assert_string_equal(fx->c.db, "/g.db");
	}
}

static void test_not_regular(void **state)
{
	struct conf_fx *fx = *state;
	char link[PATH_MAX], want[2 * PATH_MAX];

	conf_write(fx, "[vault]\n");
	snprintf(link, sizeof(link), "%s/link.ini", fx->tmp.path);
	assert_int_equal(symlink(fx->path, link), 0);
	assert_int_equal(conf_load(fx, link), -ELOOP);
	snprintf(want, sizeof(want), "%s: must not be a symbolic link", link);
	assert_string_equal(fx->err, want);

	snprintf(link, sizeof(link), "%s/sub.ini", fx->tmp.path);
	assert_int_equal(mkdir(link, 0700), 0);
	assert_true(conf_load(fx, link) < 0);
	snprintf(want, sizeof(want), "%s: not a regular file", link);
	assert_string_equal(fx->err, want);

	/* Must not block waiting for a writer. */
	snprintf(link, sizeof(link), "%s/fifo.ini", fx->tmp.path);
	assert_int_equal(mkfifo(link, 0600), 0);
	assert_true(conf_load(fx, link) < 0);
	snprintf(want, sizeof(want), "%s: not a regular file", link);
	assert_string_equal(fx->err, want);
}

static void test_owner(void **state)
{
	struct conf_fx *fx = *state;
	char want[PATH_MAX + 64];

	if (geteuid() != 0)
		skip();
	conf_write(fx, "[vault]\n");
	assert_int_equal(chown(fx->path, 12345, 0), 0);
	assert_int_equal(conf_load(fx, fx->path), -EPERM);
	snprintf(want, sizeof(want), "%s: owned by uid 12345, must be owned by root or uid 0",
		 fx->path);
	assert_string_equal(fx->err, want);
	assert_int_equal(chown(fx->path, 0, 12345), 0);
	assert_int_equal(conf_load(fx, fx->path), 0);
}

static void test_small_err(void **state)
{
	struct conf_fx *fx = *state;
	char err[8];

	conf_write(fx, "[vault]\ncolour = 1\n");
	memset(err, 'X', sizeof(err));
	assert_int_equal(config_load(&fx->c, fx->path, err, sizeof(err)), -EINVAL);
	assert_int_equal(strlen(err), 7);
	assert_memory_equal(err, fx->path, 7);
	assert_int_equal(config_load(&fx->c, fx->path, err, 0), -EINVAL);
}

static void test_parse_mode(void **state)
{
	static const struct { const char *s; mode_t m; } ok[] = {
		{ "0640", 0640 }, { "640", 0640 }, { "0000", 0 }, { "000", 0 },
		{ "0777", 0777 }, { "777", 0777 }, { "0750", 0750 }, { "0400", 0400 },
		{ "0007", 07 },
	};
	static const char *const bad[] = {
		"", "0", "64", "00640", "0800", "0999", "1777", "2750", "4750", "7777",
		"+640", "-640", " 640", "640 ", "0x1a4", "rw-", "064a", "08", "0o640",
		"06400", "8", "0\xb7" "40",
	};
	mode_t m;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		m = 07777;
		assert_int_equal(config_parse_mode(ok[i].s, &m), 0);
		assert_int_equal(m, ok[i].m);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		m = 0123;
		if (config_parse_mode(bad[i], &m) != -EINVAL)
			fail_msg("mode '%s' should be refused", bad[i]);
		assert_int_equal(m, 0123);
	}
}

static void test_parse_size(void **state)
{
	static const struct { const char *s; size_t v; } ok[] = {
		{ "0", 0 }, { "1", 1 }, { "1048576", 1048576 }, { "1K", 1024 },
		{ "1k", 1024 }, { "512K", 512 * 1024 }, { "1M", 1 << 20 }, { "1m", 1 << 20 },
		{ "64M", 64 << 20 }, { "2G", (size_t)2 << 30 }, { "007", 7 },
		{ "18446744073709551615", SIZE_MAX },
		{ "17179869183G", (size_t)17179869183 << 30 },
	};
	static const struct { const char *s; int r; } bad[] = {
		{ "", -EINVAL }, { "-1", -EINVAL }, { "+1", -EINVAL }, { " 1", -EINVAL },
		{ "1 ", -EINVAL }, { "K", -EINVAL }, { "1KB", -EINVAL }, { "1.5M", -EINVAL },
		{ "1T", -EINVAL }, { "0x10", -EINVAL }, { "1e3", -EINVAL }, { "1KK", -EINVAL },
		{ "1 K", -EINVAL }, { "M1", -EINVAL },
		{ "18446744073709551616", -ERANGE }, { "17179869184G", -ERANGE },
		{ "18014398509481984K", -ERANGE }, { "99999999999999999999999", -ERANGE },
	};
	size_t v;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		v = 12345;
		if (config_parse_size(ok[i].s, &v) != 0 || v != ok[i].v)
			fail_msg("size '%s': got %zu", ok[i].s, v);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 12345;
		if (config_parse_size(bad[i].s, &v) != bad[i].r)
			fail_msg("size '%s' should be refused with %d", bad[i].s, bad[i].r);
		assert_int_equal(v, 12345);
	}
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, conf_fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		FX_TEST(test_full),
		FX_TEST(test_empty_file),
		FX_TEST(test_layered),
		FX_TEST(test_bom_crlf),
		FX_TEST(test_bools),
		FX_TEST(test_values_in_range),
		FX_TEST(test_names_for_ids),
		FX_TEST(test_long_names),
		FX_TEST(test_long_line),
		FX_TEST(test_nul_byte),
		FX_TEST(test_errors),
		FX_TEST(test_lifecycle_settings),
		cmocka_unit_test(test_parse_duration),
		FX_TEST(test_missing_file),
		FX_TEST(test_file_checks),
		FX_TEST(test_not_regular),
		FX_TEST(test_owner),
		FX_TEST(test_small_err),
		cmocka_unit_test(test_parse_mode),
		cmocka_unit_test(test_parse_size),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
