/* vaultfs doctor: one line per check, secure / weak / insecure, about the
 * host and the vault's files; exits 1 if anything is insecure. It needs no
 * key and changes nothing. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../crypto/key.h"
#include "../crypto/secmem.h"
#include "../fs/vault.h"
#include "cli.h"
#include "commands.h"
#include "status.h"

enum verdict { SECURE, WEAK, INSECURE };

struct report {
	enum verdict worst;
	unsigned counts[3];
	struct vault *vault;
};

static void say(struct report *rep, enum verdict v, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void say(struct report *rep, enum verdict v, const char *fmt, ...)
{
	static const char *const names[] = { "secure", "weak", "insecure" };
	va_list ap;

	printf("%-9s", names[v]);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	rep->counts[v]++;
	if (v > rep->worst)
		rep->worst = v;
}

static int read_small(const char *path, char *buf, size_t size)
{
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return (int)n;
}

static void human(size_t n, char *buf, size_t size)
{
	if (n >= (1 << 20) && n % (1 << 20) == 0)
		snprintf(buf, size, "%zuM", n >> 20);
	else if (n >= 1024 && n % 1024 == 0)
		snprintf(buf, size, "%zuK", n >> 10);
	else
		snprintf(buf, size, "%zu bytes", n);
}

static void check_swap(struct report *rep)
{
	char buf[4096], *line, *save = NULL;
	unsigned n = 0;

	if (read_small("/proc/swaps", buf, sizeof(buf)) < 0) {
		say(rep, WEAK, "swap: cannot read /proc/swaps");
		return;
	}
	line = strtok_r(buf, "\n", &save);	/* the header */
	while ((line = strtok_r(NULL, "\n", &save)))
		n++;
	if (n)
		say(rep, WEAK, "swap: on (%u device%s); values stay in locked memory, but "
		    "other memory of any process may be written to disk", n, n == 1 ? "" : "s");
	else
		say(rep, SECURE, "swap: off");
}

static void check_memlock(struct report *rep, const struct vault_conf *c)
{
	struct secbuf *b = NULL;
	struct rlimit rl;
	char budget[32], limit[32];

	if (c->allow_unlocked_memory) {
		say(rep, INSECURE, "memory locking: allow_unlocked_memory = yes lets values sit "
		    "in memory that can be swapped out");
		return;
	}
	secmem_allow_unlocked(false);
	secmem_set_budget(0);
	if (secmem_init() < 0 || secbuf_new(&b, 4096) < 0) {
		say(rep, INSECURE, "memory locking: mlock fails here, so every open would fail "
		    "(raise RLIMIT_MEMLOCK, or LimitMEMLOCK= in the unit)");
		return;
	}
	secbuf_free(b);
	getrlimit(RLIMIT_MEMLOCK, &rl);
	if (rl.rlim_cur == RLIM_INFINITY)
		snprintf(limit, sizeof(limit), "unlimited");
	else
		human((size_t)rl.rlim_cur, limit, sizeof(limit));
	if (!c->memlock_budget) {
		say(rep, WEAK, "memory locking: works; no memlock_budget, so only RLIMIT_MEMLOCK "
		    "(%s%s) bounds what many open files lock", limit,
		    geteuid() == 0 && !c->daemon.has_user ? ", not binding on root" : "");
		return;
	}
	human(c->memlock_budget, budget, sizeof(budget));
	say(rep, SECURE, "memory locking: works; memlock_budget %s (RLIMIT_MEMLOCK %s)",
	    budget, limit);
}

static long core_limit(pid_t pid)
{
	char path[64], buf[4096], *p;

	snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
	if (read_small(path, buf, sizeof(buf)) < 0 || !(p = strstr(buf, "Max core file size")))
		return -1;
	p += strlen("Max core file size");
	while (*p == ' ')
		p++;
	return strncmp(p, "unlimited", 9) ? strtol(p, NULL, 10) : -2;
}

/* The daemons of this vault: the holders whose status names its database
 * (the same file), not whatever else is mounted or running on the host. */
struct ours {
	int n;
	struct mount_status s[16];
};

static void check_cores(struct report *rep, const struct ours *o)
{
	char pattern[256] = "", dumpable[16] = "0";
	long lim;

	read_small("/proc/sys/kernel/core_pattern", pattern, sizeof(pattern));
	read_small("/proc/sys/fs/suid_dumpable", dumpable, sizeof(dumpable));
	pattern[strcspn(pattern, "\n")] = '\0';
	for (int i = 0; i < o->n; i++) {
		lim = o->s[i].worker > 0 ? core_limit(o->s[i].worker) : -1;
		if (lim == 0)
			say(rep, SECURE, "core dumps: off for the daemon (pid %d): RLIMIT_CORE 0 "
			    "and not dumpable", (int)o->s[i].worker);
		else if (lim != -1)
			say(rep, INSECURE, "core dumps: the daemon (pid %d) may dump core",
			    (int)o->s[i].worker);
	}
	if (atoi(dumpable) == 2)
		say(rep, WEAK, "core dumps: fs.suid_dumpable = 2 (processes that changed "
		    "user may dump core, readable by root; core_pattern %s)", pattern);
	else if (!o->n)
		say(rep, SECURE, "core dumps: vaultfs turns them off for itself (RLIMIT_CORE 0, "
		    "not dumpable); core_pattern %s", pattern);
}

static bool is_ours(const struct ours *o, const char *mnt)
{
	for (int i = 0; i < o->n; i++)
		if (!strcmp(o->s[i].mountpoint, mnt))
			return true;
	return false;
}

static void check_mount(struct report *rep, const char *mnt, const char *opts)
{
	bool dp = strstr(opts, "default_permissions") != NULL;
	bool ao = strstr(opts, "allow_other") != NULL;

	if (dp)
		say(rep, SECURE, "mount %s: default_permissions (the kernel checks each "
		    "secret's mode)%s", mnt, ao ? ", allow_other" : "");
	else if (ao)
		say(rep, INSECURE, "mount %s: allow_other without default_permissions: "
		    "mode bits are not enforced, any user reads any secret", mnt);
	else
		say(rep, WEAK, "mount %s: no default_permissions (only its owner can use "
		    "it, but mode bits are not enforced)", mnt);
}

static void check_mounts(struct report *rep, const struct ours *o)
{
	char line[PATH_MAX * 2 + 256], mnt[PATH_MAX + 1], *sep, *opts;
	unsigned n = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	while (f && fgets(line, sizeof(line), f)) {
		sep = strstr(line, " - ");
		if (!sep || strncmp(sep + 3, "fuse.vaultfs ", 13))
			continue;
		opts = strrchr(sep, ' ');
		if (!opts || !status_mountinfo_point(line, mnt) || !is_ours(o, mnt))
			continue;
		n++;
		check_mount(rep, mnt, opts);
	}
	if (f)
		fclose(f);
	if (!n)
		say(rep, SECURE, "mounts: this vault is not mounted on this host");
}

/* Ownership and mode of one file: who may read or write it. */
static void check_file(struct report *rep, const char *what, const char *path,
		       const struct vault_conf *c, bool secret, bool must_exist)
{
	struct stat st;
	char dir[PATH_MAX], *dn;
	bool owner_ok;

	if (lstat(path, &st) < 0) {
		if (errno != ENOENT || must_exist)
			say(rep, must_exist ? INSECURE : WEAK, "%s %s: %s", what, path,
			    strerror(errno));
		return;
	}
	owner_ok = st.st_uid == 0 || (c->daemon.has_user && st.st_uid == c->daemon.uid);
	if (!S_ISREG(st.st_mode))
		say(rep, INSECURE, "%s %s: not a regular file", what, path);
	else if (st.st_mode & (S_IWGRP | S_IWOTH))
		say(rep, INSECURE, "%s %s: mode %04o, writable by group or others", what, path,
		    (unsigned)(st.st_mode & 07777));
	else if (secret && (st.st_mode & (S_IRGRP | S_IROTH)))
		say(rep, INSECURE, "%s %s: mode %04o, readable by group or others", what, path,
		    (unsigned)(st.st_mode & 07777));
	else if (st.st_mode & (S_IRGRP | S_IROTH))
		say(rep, WEAK, "%s %s: mode %04o, group or others read the ciphertext, names "
		    "and audit log", what, path, (unsigned)(st.st_mode & 07777));
	else if (!owner_ok)
		say(rep, WEAK, "%s %s: owned by uid %u (expected root%s%s)", what, path,
		    (unsigned)st.st_uid, c->daemon.has_user ? " or " : "",
		    c->daemon.has_user ? c->daemon.user : "");
	else
		say(rep, SECURE, "%s %s: mode %04o, owner uid %u", what, path,
		    (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
	snprintf(dir, sizeof(dir), "%s", path);
	dn = dirname(dir);
	if (stat(dn, &st) == 0 && (st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX))
		say(rep, INSECURE, "%s directory %s: writable by anyone, so the file can be "
		    "replaced", what, dn);
}

static void check_files(struct report *rep, const struct vault_conf *c)
{
	char path[PATH_MAX + 8];
	const char *creds = getenv("CREDENTIALS_DIRECTORY");

	check_file(rep, "database", c->db, c, false, true);
	snprintf(path, sizeof(path), "%s-wal", c->db);
	check_file(rep, "database WAL", path, c, false, false);
	snprintf(path, sizeof(path), "%s-shm", c->db);
	check_file(rep, "database SHM", path, c, false, false);
	if (c->key_file[0]) {
		check_file(rep, "key file", c->key_file, c, true, true);
	} else if (getenv(KEY_ENV)) {
		say(rep, WEAK, "key: given in $%s; the environment of a process is readable "
		    "by root and its own user (vaultfs wipes it once read; prefer key_file or "
		    "LoadCredentialEncrypted=)", KEY_ENV);
	} else if (creds) {
		snprintf(path, sizeof(path), "%s/%s", creds, KEY_CREDENTIAL);
		check_file(rep, "key credential", path, c, true, true);
	} else {
		say(rep, WEAK, "key: no key_file, $%s or systemd credential here to check",
		    KEY_ENV);
	}
	if (c->key_file[0] && getenv(KEY_ENV))
		say(rep, WEAK, "key: $%s is set too (unused while key_file is given)", KEY_ENV);
}

struct row_report {
	struct report *rep;
	unsigned bad;
};

static void row_bad(void *ctx, const char *what)
{
	struct row_report *rr = ctx;

	rr->bad++;
	say(rr->rep, INSECURE, "stored row: %s fails authentication (changed by someone "
	    "without the key: restore from a backup)", what);
}

static int state_ok(void *ctx, const struct db_instance *in)
{
	struct row_report *rr = ctx;

	if (vault_instance_state_check(rr->rep->vault, in->id) == -EIO) {
		rr->bad++;
		say(rr->rep, INSECURE, "instance %s: its live secrets are not the versions its "
		    "state records (a row put back from an older copy?)", in->name);
	}
	return 0;
}

/* With a key at hand (key_file, $VAULTFS_KEY, a credential), every row's
 * tag and every instance's state; read-only, so nothing changes. */
static void check_rows(struct report *rep, struct cli *c)
{
	struct row_report rr = { rep, 0 };
	struct secbuf *key = NULL;
	char err[1024], warn[1024];
	struct key_source src = { .file = c->conf.key_file };
	int r;

	secmem_allow_unlocked(c->conf.allow_unlocked_memory);
	if (secmem_init() < 0) {
		say(rep, WEAK, "stored rows: not checked (no locked memory for the key)");
		return;
	}
	if (key_load(&key, &src, err, sizeof(err), warn, sizeof(warn)) < 0) {
		say(rep, WEAK, "stored rows: not checked (%s)", err);
		return;
	}
	r = vault_open(&c->vault, &c->conf, key, VAULT_READONLY, err, sizeof(err));
	secbuf_free(key);
	if (r < 0) {
		say(rep, INSECURE, "stored rows: cannot open the vault: %s", err);
		return;
	}
	rep->vault = c->vault;
	r = vault_rows_check(c->vault, row_bad, &rr);
	if (r == 0 || r == -EIO)
		r = vault_instance_each(c->vault, state_ok, &rr);
	if (r < 0 && r != -EIO)
		say(rep, WEAK, "stored rows: cannot read them all: %s", strerror(-r));
	else if (!rr.bad)
		say(rep, SECURE, "stored rows: every row's tag and every instance's state "
		    "check out");
}

static void check_daemon_conf(struct report *rep, const struct vault_conf *c)
{
	if (c->daemon.has_user)
		say(rep, SECURE, "daemon user: mounts as root, then runs as %s (uid %u)",
		    c->daemon.user, (unsigned)c->daemon.uid);
	else
		say(rep, WEAK, "daemon user: stays root while serving (set user = in [vault])");
	if (c->daemon.audit)
		say(rep, SECURE, "audit log: on%s", c->daemon.audit_syslog ? ", and to syslog" : "");
	else
		say(rep, WEAK, "audit log: off (audit = no): reads and changes leave no trace");
}

int doctor_main(int argc, char **argv)
{
	struct cli c = {
		.cmd = "doctor", .usage = "[OPTIONS]",
		.help = "Checks what protects the secrets beyond their encryption: swap, memory\n"
			"locking and its budget, core dumps, the mount's default_permissions,\n"
			"owners and modes of the database, its WAL and the key file, a key in the\n"
			"environment, the daemon's user and the audit log; with the master key at\n"
			"hand, every stored row's tag and every instance's state, naming each row\n"
			"that fails. One line per check: secure, weak or insecure. Exits 1 if\n"
			"anything is insecure. Changes nothing.\n",
	};
	struct report rep = { SECURE, { 0 }, NULL };
	struct ours o = { 0 };
	int i;

	i = cli_parse(&c, argc, argv, NULL, NULL, NULL, NULL);
	if (i != argc)
		cli_usage_error(&c, "unexpected argument %s", argv[i]);
	if (cli_start(&c, CLI_CONFIG_ONLY, NULL) < 0)
		return 1;
	cli_harden();
	check_swap(&rep);
	check_memlock(&rep, &c.conf);
	o.n = status_serving(c.conf.db, o.s, (int)(sizeof(o.s) / sizeof(o.s[0])));
	check_cores(&rep, &o);
	check_mounts(&rep, &o);
	check_files(&rep, &c.conf);
	check_daemon_conf(&rep, &c.conf);
	check_rows(&rep, &c);
	printf("%u secure, %u weak, %u insecure\n", rep.counts[SECURE], rep.counts[WEAK],
	       rep.counts[INSECURE]);
	cli_close(&c);
	return rep.worst == INSECURE ? 1 : 0;
}
