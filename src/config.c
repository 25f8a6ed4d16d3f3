/* The INI configuration file, read with inih.
 *
 * The file decides who may read which secret, so:
 * - it is opened without following a symlink and refused unless it is a
 *   regular file owned by root or by us and not writable by group or others;
 * - every problem is an error naming file, line, setting and value: nothing
 *   unknown, repeated, truncated or out of range is silently ignored;
 * - the first error stops the parse.
 *
 * inih sees each line through cfg_read_line(), which counts lines (the
 * handler is not told the line), refuses lines that inih would split, and
 * handles "[section]" lines itself, because inih cuts section names at 49
 * bytes and does not report empty or repeated sections.
 */
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../fs/name.h"
#include "../fs/policy.h"
#include "config_hooks.h"
#include "config_int.h"

int cfg_fail(struct cfg_state *st, int ret, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (st->ret)
		return st->ret;
	st->ret = ret;
	if (!st->errlen)
		return ret;
	n = snprintf(st->err, st->errlen, "%s:%u: ", st->path, st->line);
	if (n < 0 || (size_t)n >= st->errlen)
		return ret;
	va_start(ap, fmt);
	vsnprintf(st->err + n, st->errlen - n, fmt, ap);
	va_end(ap);
	return ret;
}

static int cfg_set(struct cfg_state *st, const struct cfg_key *keys, const char *key,
		   const char *value)
{
	for (size_t i = 0; keys[i].name; i++) {
		if (strcmp(keys[i].name, key))
			continue;
		if (st->seen[i])
			return cfg_fail(st, -EINVAL, "duplicate setting '%s' in [%s] (first on "
					"line %u)", key, st->sect_raw, st->seen[i]);
		st->seen[i] = st->line;
		return keys[i].set(st, key, value);
	}
	return cfg_fail(st, -EINVAL, "unknown setting '%s' in [%s]", key, st->sect_raw);
}

/* on_change settings (config_hooks.c): 1 if key is none of them. */
static int cfg_hook(struct cfg_state *st, const char *key, const char *value)
{
	char msg[512];
	int r = config_hook_set(st->inst, key, value, msg, sizeof(msg));

	if (r < 0)
		cfg_fail(st, r, "%s", msg);
	return r;
}

static int cfg_handler(void *user, const char *section, const char *key, const char *value)
{
	struct cfg_state *st = user;

	if (st->ret)
		return 0;
	/* inih keeps its own, shortened copy of the section name. */
	if (strncmp(section, st->sect_raw, strlen(section)))
		return !cfg_fail(st, -EINVAL, "internal error: section [%s] out of step",
				 section);
	switch (st->sect) {
	case SECT_VAULT:
		return !cfg_set(st, cfg_vault_keys, key, value);
	case SECT_INSTANCE:
		if (cfg_hook(st, key, value) <= 0)
			return !st->ret;
		return !cfg_set(st, cfg_instance_keys, key, value);
	case SECT_NONE:
		break;
	}
	return !cfg_fail(st, -EINVAL, "setting '%s' outside any section", key);
}

static int cfg_instance_add(struct cfg_state *st, const char *name)
{
	const struct instance_conf *old = policy_instance(st->c, name);
	struct instance_conf *in, **tail;

	if (!name_valid(name))
		return cfg_fail(st, -EINVAL, "bad instance name '%s' (want 1 to %d of "
				"A-Z a-z 0-9 . _ -)", name, NAME_MAX_LEN);
	if (old)
		return cfg_fail(st, -EINVAL, "duplicate section [%s] (first on line %u)",
				st->sect_raw, old->line);
	in = calloc(1, sizeof(*in));
	if (!in)
		return cfg_fail(st, -ENOMEM, "out of memory");
	memcpy(in->name, name, strlen(name) + 1);
	in->line = st->line;
	for (tail = &st->c->instances; *tail; tail = &(*tail)->next)
		;
	*tail = in;
	st->inst = in;
	st->sect = SECT_INSTANCE;
	return 0;
}

bool cfg_is_space(char ch)
{
	return ch == ' ' || (ch >= '\t' && ch <= '\r');
}

/* Where inih ends a section name: at ']' or at a ';' comment after a space. */
static const char *cfg_section_end(const char *s)
{
	bool was_space = false;

	for (; *s && *s != ']'; s++) {
		if (was_space && *s == ';')
			break;
		was_space = cfg_is_space(*s);
	}
	return s;
}

/* s: just after the '['. */
static int cfg_section(struct cfg_state *st, const char *s)
{
	const char *end = cfg_section_end(s), *p;
	size_t len = (size_t)(end - s);

	if (*end != ']')
		return cfg_fail(st, -EINVAL, "bad section header: no closing ']'");
	for (p = end + 1; cfg_is_space(*p); p++)
		;
	if (*p && *p != ';' && *p != '#')
		return cfg_fail(st, -EINVAL, "unexpected text '%s' after section header", p);
	memcpy(st->sect_raw, s, len);
	st->sect_raw[len] = '\0';
	memset(st->seen, 0, sizeof(st->seen));
	st->inst = NULL;
	st->sect = SECT_NONE;

	if (!strcmp(st->sect_raw, "vault")) {
		if (st->vault_line)
			return cfg_fail(st, -EINVAL, "duplicate section [vault] (first on "
					"line %u)", st->vault_line);
		st->vault_line = st->line;
		st->sect = SECT_VAULT;
		return 0;
	}
	if (!strncmp(st->sect_raw, "instance", 8) &&
	    (st->sect_raw[8] == '\0' || cfg_is_space(st->sect_raw[8]))) {
		for (p = st->sect_raw + 8; cfg_is_space(*p); p++)
			;
		if (!*p)
			return cfg_fail(st, -EINVAL, "missing name in [%s] (want [instance "
					"NAME])", st->sect_raw);
		return cfg_instance_add(st, p);
	}
	return cfg_fail(st, -EINVAL, "unknown section [%s]", st->sect_raw);
}

/* An ini_reader: one line into buf (at most num - 1 bytes, the newline
 * dropped), noting its number and acting on section headers. */
static char *cfg_read_line(char *buf, int num, void *stream)
{
	struct cfg_state *st = stream;
	size_t n = 0;
	const char *p;
	int ch;

	if (st->ret || num < 2)
		return NULL;
	ch = getc(st->f);
	if (ch == EOF) {
		if (ferror(st->f))
			cfg_fail(st, -EIO, "read error: %s", strerror(errno));
		return NULL;
	}
	st->line++;
	for (; ch != EOF && ch != '\n'; ch = getc(st->f)) {
		if (ch == '\0') {
			cfg_fail(st, -EINVAL, "NUL byte in line");
			return NULL;
		}
		if (n >= (size_t)num - 1) {
			cfg_fail(st, -EINVAL, "line too long (limit %d bytes)", num - 1);
			return NULL;
		}
		buf[n++] = (char)ch;
	}
	if (ferror(st->f)) {
		cfg_fail(st, -EIO, "read error: %s", strerror(errno));
		return NULL;
	}
	buf[n] = '\0';

	p = buf;
	if (st->line == 1 && !strncmp(p, "\xEF\xBB\xBF", 3))
		p += 3;
	while (cfg_is_space(*p))
		p++;
	if (*p == '[' && cfg_section(st, p + 1))
		return NULL;
	return buf;
}

static int cfg_parse(struct cfg_state *st)
{
	int saved_max_line = ini_max_line;
	bool saved_stop = ini_stop_on_first_error;
	bool saved_multiline = ini_allow_multiline;
	int line;

	/* Debian's inih takes these at run time (so config_load is not
	 * thread-safe). An indented line continuing a value would hide a
	 * mistake, and a line longer than ini_max_line would be cut in pieces. */
	ini_max_line = CFG_MAX_LINE;
	ini_stop_on_first_error = true;
	ini_allow_multiline = false;
	line = ini_parse_stream(cfg_read_line, st, cfg_handler, st);
	ini_max_line = saved_max_line;
	ini_stop_on_first_error = saved_stop;
	ini_allow_multiline = saved_multiline;

	if (st->ret)
		return st->ret;
	if (line < 0)
		return cfg_fail(st, -ENOMEM, "out of memory");
	if (line > 0) {
		st->line = (unsigned)line;
		return cfg_fail(st, -EINVAL, "syntax error (want 'key = value' or "
				"'[section]')");
	}
	return 0;
}

static int cfg_check_file(int fd, const char *path, char *err, size_t errlen)
{
	struct stat sb;

	if (fstat(fd, &sb)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	if (!S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		return -EINVAL;
	}
	if (sb.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen, "%s: must not be writable by group or others", path);
		return -EPERM;
	}
	if (sb.st_uid != 0 && sb.st_uid != geteuid()) {
		snprintf(err, errlen, "%s: owned by uid %u, must be owned by root or uid %u",
			 path, (unsigned)sb.st_uid, (unsigned)geteuid());
		return -EPERM;
	}
	return 0;
}

static int cfg_open(const char *path, char *err, size_t errlen)
{
	int fd, ret;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		ret = -errno;
		if (errno == ELOOP)
			snprintf(err, errlen, "%s: must not be a symbolic link", path);
		else
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return ret;
	}
	ret = cfg_check_file(fd, path, err, errlen);
	if (ret) {
		close(fd);
		return ret;
	}
	return fd;
}

int config_load(struct vault_conf *c, const char *path, char *err, size_t errlen)
{
	struct cfg_state *st = NULL;
	FILE *f = NULL;
	int fd = -1, ret;

	if (errlen)
		err[0] = '\0';
	else
		err = NULL;
	if (strlen(path) >= sizeof(c->path)) {
		snprintf(err, errlen, "%s: %s", path, strerror(ENAMETOOLONG));
		return -ENAMETOOLONG;
	}
	fd = cfg_open(path, err, errlen);
	if (fd < 0)
		return fd;
	f = fdopen(fd, "r");
	st = calloc(1, sizeof(*st));
	if (!f || !st) {
		ret = -ENOMEM;
		snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
		goto out;
	}
	fd = -1;
	memcpy(c->path, path, strlen(path) + 1);
	st->c = c;
	st->path = path;
	st->f = f;
	st->err = err;
	st->errlen = errlen;
	ret = cfg_parse(st);
out:
	free(st);
	if (f)
		fclose(f);
	else if (fd >= 0)
		close(fd);
	return ret;
}
