/* Rules for key and instance names. */
#ifndef VAULTFS_NAME_H
#define VAULTFS_NAME_H

#include <stdbool.h>
#include <stddef.h>

#define NAME_MAX_LEN 255

/* 1-255 bytes of A-Z a-z 0-9 . _ -, and not "." or "..". */
bool name_valid(const char *name);
bool name_valid_len(const char *name, size_t len);

#endif
