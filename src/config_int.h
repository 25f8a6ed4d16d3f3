/* Inside the configuration reader only: its state while reading a file,
 * shared by config.c (lines and sections), config_keys.c (each setting)
 * and config_value.c (values). Everyone else uses config.h. */
#ifndef VAULTFS_CONFIG_INT_H
#define VAULTFS_CONFIG_INT_H

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>

#include "config.h"

/* Long enough for "key = " and a PATH_MAX path, or a 255-byte instance name. */
#define CFG_MAX_LINE (PATH_MAX + 256)
#define CFG_MAX_KEYS 32
#define CFG_MAX_TIMEOUT 3600.0
#define CFG_MAX_DURATION ((int64_t)100 * 366 * 86400)

enum cfg_section {
	SECT_NONE,
	SECT_VAULT,
	SECT_INSTANCE,
};

struct cfg_state {
	struct vault_conf *c;
	const char *path;
	FILE *f;
	unsigned line;
	enum cfg_section sect;
	char sect_raw[CFG_MAX_LINE];	/* between the brackets, as written */
	struct instance_conf *inst;
	unsigned vault_line;		/* of the [vault] header, 0: none yet */
	unsigned seen[CFG_MAX_KEYS];	/* line each key of this section was set on */
	int ret;
	char *err;
	size_t errlen;
};

struct cfg_key {
	const char *name;
	int (*set)(struct cfg_state *st, const char *key, const char *value);
};

/* The settings of [vault] and of an instance's section (config_keys.c). */
extern const struct cfg_key cfg_vault_keys[];
extern const struct cfg_key cfg_instance_keys[];

/* Records the first error as "FILE:LINE: ..." and returns it (config.c). */
int cfg_fail(struct cfg_state *st, int ret, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
bool cfg_is_space(char ch);

/* Values (config_value.c): 0, -EINVAL or -ERANGE. */
int cfg_parse_u64(const char *s, uint64_t *out);
/* Seconds as digits with at most one '.', no sign, exponent or hex. */
int cfg_parse_seconds(const char *s, double *out);
int cfg_parse_bool(const char *s, bool *out);
int cfg_parse_newline(const char *s, enum nl_policy *out);

#endif
