/* Expiring secrets and read limits: a version may carry an expiry time
 * and a number of reads, after which opening it fails with EKEYEXPIRED. */
#ifndef VAULTFS_EXPIRY_H
#define VAULTFS_EXPIRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../db/db.h"

struct vault;
struct secbuf;
struct audit_entry;

/* secrets.flags: this version has an expiry record (0x1 is
 * DB_SECRET_NL_STRIPPED, 0x2 the templates'). */
#define EXPIRY_FLAG 0x4
#define EXPIRY_XATTR "user.vaultfs.expires"

struct expiry {
	uint64_t version;	/* the version it belongs to */
	int64_t expires_ns;	/* 0: no time limit */
	uint64_t max_reads;	/* 0: no read limit */
	uint64_t reads;		/* counted so far */
};

/* "2026-12-31", "2026-12-31T23:59:59Z", "@EPOCH" or a duration from now
 * ("90m", "12h", "7d", "2w", "1d12h"). -EINVAL if it is none of them. */
int expiry_parse(const char *s, size_t len, int64_t now_ns, int64_t *out) WUR;

/* The record of s (flagged): 0, -ENOENT if s has none, -EKEYEXPIRED if
 * the flag promises one that is missing or belongs to another version
 * (fail closed), -EIO if its tag fails. */
int expiry_get(struct vault *v, const struct db_secret *s, struct expiry *e) WUR;
/* Whether e has run out at now_ns. */
bool expiry_spent(const struct expiry *e, int64_t now_ns);

/* vault_put_if (see vault.h) whose new version carries e's limits (its
 * version and reads are filled in), in one transaction. */
int expiry_put(struct vault *v, int64_t instance_id, const char *name,
	       const unsigned char *pt, size_t len, uid_t uid, gid_t gid, int64_t if_version,
	       const struct expiry *e, struct db_secret *out,
	       const struct audit_entry *audit) WUR;

/* At an open that reads the value of m (fetched into *buf): 0 to go on,
 * -EKEYEXPIRED when expired or out of reads. A read-limited secret's read
 * is counted here, in one write transaction with the decision and a
 * re-read of the value (*buf is replaced, m updated), so concurrent
 * readers get exactly max_reads successes. */
int expiry_open(struct vault *v, struct db_secret *m, struct secbuf **buf) WUR;

/* At an open for reading and writing (not O_TRUNC) of secret_id: 0,
 * -EKEYEXPIRED when spent, -EACCES for a read-limited one (reads are
 * counted for opens for reading only). */
int expiry_open_rw(struct vault *v, int64_t secret_id) WUR;

/* user.vaultfs.expires: the time as "YYYY-MM-DDTHH:MM:SSZ" (-ENODATA if
 * none); setting or removing it makes a new version (same value) that
 * carries it, by `by`. */
int expiry_xattr_get(struct vault *v, int64_t secret_id, char *buf, size_t size) WUR;
int expiry_xattr_set(struct vault *v, int64_t secret_id, const char *value, size_t len,
		     uid_t by) WUR;
int expiry_xattr_remove(struct vault *v, int64_t secret_id, uid_t by) WUR;

/* "expires 2026-12-31T00:00:00Z, 1 of 3 reads" (or "" without a record)
 * for ls -l, history and export. */
void expiry_describe(const struct expiry *e, char *buf, size_t size);

#endif
