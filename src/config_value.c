/* The values of the configuration file: numbers, sizes, durations, modes,
 * booleans, each parsed strictly (nothing trailing, nothing out of range). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_int.h"

int cfg_parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	const char *p;

	if (!s || !*s)
		return -EINVAL;
	for (p = s; *p; p++) {
		unsigned d = (unsigned)(*p - '0');

		if (*p < '0' || *p > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int config_parse_mode(const char *s, mode_t *out)
{
	size_t len = s ? strlen(s) : 0;
	mode_t m = 0;

	if (len < 3 || len > 4)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '7')
			return -EINVAL;
		m = m * 8 + (mode_t)(s[i] - '0');
	}
	if (m & ~(mode_t)0777)
		return -EINVAL;
	*out = m;
	return 0;
}

int config_parse_size(const char *s, size_t *out)
{
	size_t v = 0, mult = 1;
	const char *p = s;

	if (!s || *p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		size_t d = (size_t)(*p - '0');

		if (v > (SIZE_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	switch (*p) {
	case '\0':
		break;
	case 'K': case 'k':
		mult = (size_t)1 << 10;
		p++;
		break;
	case 'M': case 'm':
		mult = (size_t)1 << 20;
		p++;
		break;
	case 'G': case 'g':
		mult = (size_t)1 << 30;
		p++;
		break;
	default:
		return -EINVAL;
	}
	if (*p)
		return -EINVAL;
	if (v > SIZE_MAX / mult)
		return -ERANGE;
	*out = v * mult;
	return 0;
}

int config_parse_duration(const char *s, int64_t *out)
{
	static const struct { char suffix; int64_t secs; } units[] = {
		{ 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 },
	};
	int64_t mult = 1;
	uint64_t v = 0;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	if (*end) {
		size_t i;

		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (*end == units[i].suffix)
				break;
		if (i == sizeof(units) / sizeof(units[0]) || end[1])
			return -EINVAL;
		mult = units[i].secs;
	}
	if (v > (uint64_t)CFG_MAX_DURATION / (uint64_t)mult)
		return -ERANGE;
	*out = (int64_t)v * mult;
	return 0;
}

int cfg_parse_seconds(const char *s, double *out)
{
	bool dot = false, digit = false;
	char *end;
	double v;

	for (const char *p = s; *p; p++) {
		if (*p == '.' && !dot)
			dot = true;
		else if (*p >= '0' && *p <= '9')
			digit = true;
		else
			return -EINVAL;
	}
	if (!digit)
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end)
		return -EINVAL;
	if (v > CFG_MAX_TIMEOUT)
		return -ERANGE;
	*out = v;
	return 0;
}

int cfg_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "yes", "true", "1" };
	static const char *const no[] = { "no", "false", "0" };

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!strcasecmp(s, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

int cfg_parse_newline(const char *s, enum nl_policy *out)
{
	if (!strcmp(s, "strip"))
		*out = NL_STRIP_SINGLE_LINE;
	else if (!strcmp(s, "keep"))
		*out = NL_KEEP;
	else
		return -EINVAL;
	return 0;
}
