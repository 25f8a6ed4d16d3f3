/* Templates: a file assembled from several secrets of one instance.
 *
 * A template is a secret row whose flags hold TEMPLATE_FLAG: its sealed
 * value is the template's source, so history, backup, row tags and the
 * instance's state cover it as they cover values. Through the mount it
 * is a read-only file whose content is rendered at each open:
 *
 *   DB_PASSWORD={{ DB_PASSWORD | env }}
 *   {{ TLS_CERT }}{{ TLS_KEY }}
 *
 * Rules this module keeps:
 *   - every value of one rendering comes from one state of the instance:
 *     the instance's seq (bumped by every commit that changes a live
 *     version) is the same before and after the reads, or all is read
 *     again;
 *   - a key the template's owner could not read itself (the key's and
 *     the instance's mode bits, the instance's read rules, for the
 *     owner's uid and groups) fails the rendering, whoever reads;
 *   - a missing key, a refused key or a value a filter can't write fails
 *     the whole rendering: nothing partial is handed out;
 *   - values and rendered bytes live in secbufs only, wiped when freed;
 *     errors name keys and filters, never a byte of a value. */
#ifndef VAULTFS_TEMPLATE_H
#define VAULTFS_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../crypto/secmem.h"
#include "../db/db.h"
#include "name.h"

#define TEMPLATE_FLAG 0x2	/* in secrets.flags: the value is a template */
#define TEMPLATE_MAX_TAGS 1024
#define TEMPLATE_MAX_FILTERS 8

struct vault;
struct audit_entry;
struct audit_who;

/* Where a template's syntax is wrong: 1-based line and column (bytes). */
struct template_error {
	unsigned line, col;
	char msg[96];
};

/* Why a rendering failed: err (-errno) and the key and filter concerned. */
struct template_fail {
	int err;
	char key[NAME_MAX_LEN + 1];
	const char *filter;	/* NULL: not a filter's refusal */
	const char *reason;	/* static text, never from a value */
};

/* 0, or -EINVAL with *e saying where and why. */
int template_check(const unsigned char *src, size_t len, struct template_error *e) WUR;

/* Calls fn with each key src names, once each, in order of first use;
 * fn returns nonzero to stop (returned). -EINVAL on a syntax error. */
int template_keys(const unsigned char *src, size_t len,
		  int (*fn)(void *ctx, const char *key), void *ctx) WUR;

/* The value of key for template_expand: 0 and *out (still the caller's),
 * or -errno. */
typedef int (*template_lookup_fn)(void *ctx, const char *key, const struct secbuf **out);

/* Renders src into *out (a new secbuf) with lookup's values; -EFBIG if
 * it would be longer than max (0: no limit). On failure *out is NULL and
 * *why says which key and filter. */
int template_expand(const unsigned char *src, size_t len, template_lookup_fn lookup,
		    void *ctx, size_t max, struct secbuf **out, struct template_fail *why) WUR;

/* Stores src as the template `name` of the instance, a new version if it
 * is one already, in one transaction with its audit entry (NULL: none):
 * -EINVAL (with *e) for a syntax error, -EEXIST if `name` is a secret
 * that is not a template, -EFBIG over max_value_size. */
int template_store(struct vault *v, int64_t instance_id, const char *name,
		   const unsigned char *src, size_t len, uid_t uid, gid_t gid,
		   struct template_error *e, const struct audit_entry *audit,
		   struct db_secret *out) WUR;

/* The source of template t (its row), as stored: -EMEDIUMTYPE if t is
 * not a template. */
int template_source(struct vault *v, const struct db_secret *t, struct secbuf **out) WUR;

/* Renders template t whose source src is (see the rules above). -ENOKEY:
 * a key it names does not exist; -EACCES: t's owner may not read one;
 * -EINVAL: a filter can't write a value (why->reason); -EFBIG: the
 * rendering is longer than max_value_size; -EAGAIN: the
 * instance kept changing. The failure is logged, naming the keys; on
 * success each key read is audited as a read by who (NULL: this process). */
int template_render(struct vault *v, const struct db_secret *t, const struct secbuf *src,
		    const struct audit_who *who, struct secbuf **out,
		    struct template_fail *why) WUR;

/* The size stat shows for a template: the most a rendering can be
 * (max_value_size, as template_render refuses more), since programs such
 * as bash's `.` read no more than st_size bytes. Set once at mount. */
void template_set_stat_size(size_t max_value_size);
size_t template_stat_size(void);

/* Whether a secret is a template (false if it can't be read). */
bool template_is(struct vault *v, int64_t secret_id);
/* For an open of template t: *buf holds its source, and then what it
 * renders (NULL on failure, logged). */
int template_open(struct vault *v, const struct db_secret *t, const struct audit_who *who,
		  struct secbuf **buf) WUR;

/* For change hooks: calls fn for each template of the instance whose
 * source names key (fn returns nonzero to stop, and that is returned).
 * Reads and parses templates; hands out rows only. */
int template_dependents(struct vault *v, int64_t instance_id, const char *key,
			int (*fn)(void *ctx, const struct db_secret *tmpl), void *ctx) WUR;

#endif
