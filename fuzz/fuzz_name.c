/*
 * libFuzzer target: the rule for key and instance names (fs/name.c),
 * checked against a second, deliberately plain statement of the rule.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../fs/name.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool reference(const uint8_t *s, size_t n)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				       "0123456789._-";

	if (n < 1 || n > 255)
		return false;
	if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!s[i] || !strchr(alphabet, s[i]))
			return false;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (name_valid_len((const char *)data, size) != reference(data, size))
		abort();
	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (name_valid(s) != reference((const uint8_t *)s, strlen(s)))
		abort();
	free(s);
	return 0;
}
