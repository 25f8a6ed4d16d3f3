/* Key and instance names: a portable, shell-safe alphabet, so that a name
 * is always one path component and never needs quoting. */
#include <string.h>

#include "name.h"

static bool name_char_ok(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

bool name_valid_len(const char *name, size_t len)
{
	if (len == 0 || len > NAME_MAX_LEN)
		return false;
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!name_char_ok((unsigned char)name[i]))
			return false;
	return true;
}

bool name_valid(const char *name)
{
	return name && name_valid_len(name, strnlen(name, NAME_MAX_LEN + 1));
}
