/* vaultfs audit: shows the audit log, checks its chain, prunes it. */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../db/db_audit.h"
#include "../fs/audit.h"
#include "../fs/name.h"
#include "../fs/vault.h"
#include "cli.h"
#include "commands.h"
#include "config.h"
#include "json.h"

#define HEAD_FP_LEN 8	/* bytes of the head entry's MAC shown and checked */

struct audit_opts {
	const char *instance;
	const char *key;
	const char *since;
	bool json;
	bool verify;
	bool prune;
	int64_t expect_head;	/* -1: none */
	char expect_fp[HEAD_FP_LEN * 2 + 1];	/* "": none */
};

/* N or N:FINGERPRINT, as --verify prints the head. */
static int parse_head(const char *arg, struct audit_opts *o)
{
	char num[32];
	const char *colon = strchr(arg, ':');
	size_t n = colon ? (size_t)(colon - arg) : strlen(arg);

	if (n == 0 || n >= sizeof(num))
		return -1;
	memcpy(num, arg, n);
	num[n] = '\0';
	if (cli_parse_version(num, &o->expect_head) < 0)
		return -1;
	if (!colon)
		return 0;
	if (strlen(colon + 1) != HEAD_FP_LEN * 2 ||
	    strspn(colon + 1, "0123456789abcdef") != HEAD_FP_LEN * 2)
		return -1;
	snprintf(o->expect_fp, sizeof(o->expect_fp), "%s", colon + 1);
	return 0;
}

static void head_fp(struct vault *v, int64_t seq, char out[HEAD_FP_LEN * 2 + 1])
{
	unsigned char mac[HEAD_FP_LEN];

	out[0] = '\0';
	if (vault_audit_entry_mac(v, seq, mac, sizeof(mac)) < 0)
		return;
	for (int i = 0; i < HEAD_FP_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", mac[i]);
}

static int audit_opt(int opt, const char *arg, void *ctx)
{
	struct audit_opts *o = ctx;

	switch (opt) {
	case OPT_INSTANCE:
		o->instance = arg;
		return name_valid(arg) ? 0 : -1;
	case OPT_KEY:
		o->key = arg;
		return name_valid(arg) ? 0 : -1;
	case OPT_SINCE:
		o->since = arg;
		return 0;
	case OPT_JSON:
		o->json = true;
		return 0;
	case OPT_VERIFY:
		o->verify = true;
		return 0;
	case OPT_PRUNE:
		o->prune = true;
		return 0;
	case OPT_EXPECT_HEAD:
		return parse_head(arg, o);
	default:
		return -1;
	}
}

/* "2024-05-01", "2024-05-01T12:00:00" (UTC, optional Z), "@1714564800", or a
 * duration back from now ("90m", "2h", "7d"). */
static int parse_since(const char *s, int64_t *out_ns)
{
	struct tm tm = { 0 };
	const char *end;
	int64_t secs;
	time_t t;
	char *e;

	if (s[0] == '@') {
		long long v = strtoll(s + 1, &e, 10);

		if (e == s + 1 || *e || v < 0 || v > INT64_MAX / 1000000000)
			return -EINVAL;
		*out_ns = (int64_t)v * 1000000000;
		return 0;
	}
	if (config_parse_duration(s, &secs) == 0) {
		*out_ns = db_now_ns() - secs * 1000000000;
		return 0;
	}
	end = strptime(s, "%Y-%m-%d", &tm);
	if (end && (*end == 'T' || *end == ' '))
		end = strptime(end + 1, "%H:%M:%S", &tm);
	if (end && *end == 'Z')
		end++;
	if (!end || *end)
		return -EINVAL;
	t = timegm(&tm);
	/* Nanoseconds end in 2262: later is "after every entry". */
	*out_ns = t > INT64_MAX / 1000000000 ? INT64_MAX : (int64_t)t * 1000000000;
	return 0;
}

static void format_time(int64_t ns, char *buf, size_t size)
{
	time_t t = (time_t)(ns / 1000000000);
	struct tm tm;
	size_t n;

	gmtime_r(&t, &tm);
	n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, size - n, ".%03dZ", (int)(ns / 1000000 % 1000));
}

static const char *result_name(int32_t result)
{
	static char buf[32];

	if (!result)
		return "ok";
	snprintf(buf, sizeof(buf), "%s", strerrorname_np(result) ? strerrorname_np(result) : "");
	if (!buf[0])
		snprintf(buf, sizeof(buf), "errno %d", (int)result);
	return buf;
}

static int print_json(void *ctx, const struct db_audit_row *r)
{
	char t[64];

	(void)ctx;
	format_time(r->time_ns, t, sizeof(t));
	printf("{\"seq\":%lld,\"time\":\"%s\",\"time_ns\":%lld,\"uid\":%u,\"gid\":%u,"
	       "\"pid\":%d,", (long long)r->seq, t, (long long)r->time_ns, (unsigned)r->uid,
	       (unsigned)r->gid, (int)r->pid);
	json_field(stdout, "comm", r->comm);
	putchar(',');
	json_field(stdout, "instance", r->instance);
	putchar(',');
	json_field(stdout, "key", r->key);
	putchar(',');
	json_field(stdout, "op", r->op);
	printf(",\"result\":\"%s\",\"errno\":%d,", result_name(r->result), (int)r->result);
	json_field(stdout, "detail", r->detail);
	/* A folded entry stands for count events from first_time to time. */
	format_time(r->first_ns, t, sizeof(t));
	printf(",\"count\":%lld,\"first_time\":\"%s\",\"first_time_ns\":%lld}\n",
	       (long long)r->count, t, (long long)r->first_ns);
	return 0;
}

/* Process names come from the processes: print them harmlessly. */
static void safe_print(const char *s, bool spaces)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		putchar((*p > 0x20 || (spaces && *p == ' ')) && *p < 0x7f ? *p : '?');
}

static void print_line(const struct db_audit_row *r)
{
	struct passwd *pw = getpwuid(r->uid);
	char t[64];

	format_time(r->time_ns, t, sizeof(t));
	printf("%lld %s uid=%u", (long long)r->seq, t, (unsigned)r->uid);
	if (pw)
		printf("(%s)", pw->pw_name);
	printf(" gid=%u pid=%d comm=", (unsigned)r->gid, (int)r->pid);
	safe_print(r->comm[0] ? r->comm : "?", false);
	printf(" %s %s%s%s %s", r->op, r->instance[0] ? r->instance : "-",
	       r->key[0] ? "/" : "", r->key, result_name(r->result));
	if (r->detail[0]) {
		printf(" (");
		safe_print(r->detail, true);
		printf(")");
	}
	if (r->count != 1 || r->first_ns != r->time_ns) {
		char first[64];

		format_time(r->first_ns, first, sizeof(first));
		printf(" [%lld times from %s to %s]", (long long)r->count, first, t);
	}
	putchar('\n');
}

static int print_text(void *ctx, const struct db_audit_row *r)
{
	(void)ctx;
	print_line(r);
	return 0;
}

/* What the chain alone can't show: a log cut at its end (or emptied)
 * together with its head. The vault's tagged floor, raised by each write,
 * and the operator's own record of the head (--expect-head) catch it. */
static void check_length(struct cli *c, struct audit_verdict *v, const struct audit_opts *o,
			 int r, int64_t floor)
{
	int64_t last = v->entries ? v->last_seq : 0, expect = o->expect_head;
	char fp[HEAD_FP_LEN * 2 + 1];

	if (!v->ok)
		return;
	if (r == -EIO) {
		v->ok = false;
		v->bad_seq = last + 1;
		snprintf(v->reason, sizeof(v->reason), "the vault's record of how far the log "
			 "reached fails authentication or is missing");
	} else if (r == 0 && last < floor) {
		v->ok = false;
		v->bad_seq = last + 1;
		snprintf(v->reason, sizeof(v->reason), "the log ends at entry %lld but had "
			 "reached entry %lld at the vault's last write: entries at its end (or "
			 "all of them) and its head were removed", (long long)last,
			 (long long)floor);
	} else if (expect >= 0 && last < expect) {
		v->ok = false;
		v->bad_seq = last + 1;
		snprintf(v->reason, sizeof(v->reason), "the log ends at entry %lld, before "
			 "entry %lld given with --expect-head: the database was replaced by an "
			 "older copy, or the log was cut", (long long)last, (long long)expect);
	} else if (expect >= 0 && o->expect_fp[0]) {
		head_fp(c->vault, expect, fp);
		if (strcmp(fp, o->expect_fp)) {
			v->ok = false;
			v->bad_seq = expect;
			snprintf(v->reason, sizeof(v->reason), "entry %lld is not the one given with "
				 "--expect-head: the database was replaced by an older copy (and "
				 "has written entries since)", (long long)expect);
		}
	}
}

static int do_verify(struct cli *c, struct audit *a, const struct audit_opts *o)
{
	char fp[HEAD_FP_LEN * 2 + 1];
	struct audit_verdict v;
	int64_t floor = 0;
	/* The floor first: the log only grows after it, so a chain read later
	 * that ends below it was cut. */
	int fr = vault_audit_floor(c->vault, &floor);
	int r = audit_verify(a, &v);

	if (r < 0) {
		cli_error("cannot read the audit log: %s", strerror(-r));
		return 1;
	}
	check_length(c, &v, o, fr, floor);
	if (v.ok) {
		head_fp(c->vault, v.last_seq, fp);
		if (v.entries)
			printf("audit log intact: %lld entries (%lld to %lld) recording %lld "
			       "events, chain verified; head %lld:%s\n", (long long)v.entries,
			       (long long)v.first_seq, (long long)v.last_seq, (long long)v.events,
			       (long long)v.last_seq, fp);
		else
			printf("audit log intact: no entries\n");
	} else {
		printf("audit log BROKEN at entry %lld: %s\n", (long long)v.bad_seq, v.reason);
		if (v.has_row) {
			printf("  as stored: ");
			print_line(v.bad_row);
		}
		if (v.entries)
			printf("  entries %lld to %lld before it verify\n", (long long)v.first_seq,
			       (long long)v.last_seq);
	}
	audit_verdict_free(&v);
	return v.ok ? 0 : 1;
}

static int do_prune(struct cli *c, struct audit *a)
{
	int64_t upto = 0;
	int r;

	if (!c->conf.daemon.audit_retention) {
		cli_error("no audit_retention in the config: every entry is kept");
		return 1;
	}
	r = audit_prune(a, db_now_ns(), &upto);
	if (r < 0) {
		cli_error("cannot prune the audit log: %s", strerror(-r));
		return 1;
	}
	if (upto)
		printf("removed entries up to %lld\n", (long long)upto);
	else
		printf("no entry is older than the retention\n");
	return 0;
}

/* The options that don't go together are usage errors; the filter. */
static void check_opts(const struct cli *c, const struct audit_opts *o,
		       struct db_audit_filter *f)
{
	if (o->since && parse_since(o->since, &f->since_ns) < 0)
		cli_usage_error(c, "bad time '%s' for --since", o->since);
	if (o->verify + o->prune > 1 ||
	    ((o->verify || o->prune) && (o->instance || o->key || o->since || o->json)))
		cli_usage_error(c, "--verify and --prune take no other option");
	if (o->expect_head >= 0 && !o->verify)
		cli_usage_error(c, "--expect-head goes with --verify");
	f->instance = o->instance;
	f->key = o->key;
}

int audit_main(int argc, char **argv)
{
	static const struct option extra[] = {
		{ "instance", required_argument, NULL, OPT_INSTANCE },
		{ "key", required_argument, NULL, OPT_KEY },
		{ "since", required_argument, NULL, OPT_SINCE },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "verify", no_argument, NULL, OPT_VERIFY },
		{ "prune", no_argument, NULL, OPT_PRUNE },
		{ "expect-head", required_argument, NULL, OPT_EXPECT_HEAD },
		{ 0 },
	};
	struct cli c = {
		.cmd = "audit", .usage = "[OPTIONS] [--instance X] [--key K] [--since T] [--json] "
			"| --verify [--expect-head N] | --prune",
		.help = "Shows the audit log: who read, changed or was refused which secret,\n"
			"oldest first, one entry per line. Values are never recorded.\n\n"
			"      --instance X     only entries about instance X\n"
			"      --key K          only entries about key K\n"
			"      --since T        only entries since T: 2024-05-01, 2024-05-01T12:00:00\n"
			"                       (UTC), @EPOCH_SECONDS, or a duration back from now\n"
			"                       (30m, 12h, 7d)\n"
			"      --json           one JSON object per line\n"
			"      --verify         check the hash chain; exits 1 naming the first bad\n"
			"                       entry if one was deleted, edited or moved, or if\n"
			"                       the log ends before the entry the vault's last\n"
			"                       write saw\n"
			"      --expect-head N[:FP]  with --verify: also exit 1 if the log ends\n"
			"                       before entry N or entry N is not FP (the head as\n"
			"                       --verify printed it and you kept it elsewhere:\n"
			"                       catches a database replaced by an older copy)\n"
			"      --prune          remove entries older than audit_retention now\n",
	};
	struct audit_opts o = { .expect_head = -1 };
	struct db_audit_filter f = { .since_ns = INT64_MIN };
	struct audit *own = NULL, *a;
	int i, r, ret = 1;

	i = cli_parse(&c, argc, argv, NULL, extra, audit_opt, &o);
	if (i != argc)
		cli_usage_error(&c, "unexpected argument %s", argv[i]);
	check_opts(&c, &o, &f);
	if (cli_start(&c, CLI_NO_AUDIT, NULL) < 0)
		goto out;
	/* A connection of its own, also with audit = no (the log may still
	 * hold older entries): reading the whole log never holds the vault's. */
	r = audit_open(&own, c.conf.db, vault_audit_key(c.vault), &c.conf.daemon);
	if (r < 0) {
		cli_audit_error(c.conf.db, r);
		goto out;
	}
	a = own;
	if (o.verify) {
		ret = do_verify(&c, a, &o);
	} else if (o.prune) {
		ret = do_prune(&c, a);
	} else {
		r = audit_each(a, &f, o.json ? print_json : print_text, NULL);
		if (r < 0)
			cli_error("cannot read the audit log: %s", strerror(-r));
		else
			ret = 0;
	}
out:
	audit_close(own);
	cli_close(&c);
	return ret;
}
