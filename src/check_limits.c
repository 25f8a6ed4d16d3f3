/* vaultfs check: expired keys fail the check, keys that expire soon are
 * named as a warning, so a timer or a health check sees them coming. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fs/expiry.h"
#include "../fs/vault.h"
#include "check_limits.h"
#include "cli.h"
#include "listing.h"

struct names {
	char (*v)[DB_NAME_MAX + 1];
	size_t n;
};

static int name_cb(void *ctx, const struct db_instance *in)
{
	struct names *ns = ctx;
	void *p = realloc(ns->v, (ns->n + 1) * sizeof(*ns->v));

	if (!p)
		return -ENOMEM;
	ns->v = p;
	snprintf(ns->v[ns->n++], DB_NAME_MAX + 1, "%s", in->name);
	return 0;
}

static int check_one(struct cli *c, const char *name, int64_t warn_s)
{
	struct db_instance in;
	struct listing l;
	char what[96];
	int64_t now = db_now_ns();
	int bad = 0, r;

	r = vault_instance_find(c->vault, name, &in);
	if (r == -ENOENT)
		return 0;	/* nothing stored, nothing expires (expect = tells) */
	if (r < 0) {
		cli_error("%s: %s", name, strerror(-r));
		return -1;
	}
	r = listing_load(c, name, &in, &l);
	if (r < 0) {
		cli_error("%s: %s", name, strerror(-r));
		return -1;
	}
	for (size_t i = 0; i < l.n; i++) {
		const struct listing_entry *e = &l.e[i];

		if (!e->limited)
			continue;
		expiry_describe(&e->limit, what, sizeof(what));
		if (e->expired) {
			bad++;
			cli_error("%s/%s: expired (%s)", name, e->name,
				  what[0] ? what : "its limit is missing");
		} else if (e->limit.expires_ns && e->limit.expires_ns - now <
			   warn_s * 1000000000) {
			fprintf(stderr, "vaultfs: warning: %s/%s %s (in %lldh%02lldm)\n", name,
				e->name, what, (long long)((e->limit.expires_ns - now) / 3600000000000),
				(long long)((e->limit.expires_ns - now) / 60000000000 % 60));
		}
	}
	listing_free(&l);
	return bad;
}

int check_limits(struct cli *c, char *const *names, int n, int64_t warn_s)
{
	struct names all = { 0 };
	int bad = 0, r = 0;

	if (n == 0) {
		r = vault_instance_each(c->vault, name_cb, &all);
		if (r < 0) {
			cli_error("cannot list the instances: %s", strerror(-r));
			free(all.v);
			return -1;
		}
	}
	for (size_t i = 0; r >= 0 && i < (n ? (size_t)n : all.n); i++) {
		r = check_one(c, n ? names[i] : all.v[i], warn_s);
		bad += r > 0 ? r : 0;
	}
	free(all.v);
	return r < 0 ? -1 : bad;
}
