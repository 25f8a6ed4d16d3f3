/* Values in and out of the CLI: read(2) and write(2) straight from locked
 * memory, never through stdio buffers. */
#ifndef VAULTFS_SECIO_H
#define VAULTFS_SECIO_H

#include <stdbool.h>
#include <stddef.h>

struct secbuf;

/* Reads fd into b until end of file (or, with one_line, a newline); more
 * than max bytes is -EFBIG. */
int secio_read(int fd, struct secbuf *b, size_t max, bool one_line) WUR;

#endif
