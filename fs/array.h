/* Arrays that grow as a callback fills them (ids of instances, versions). */
#ifndef VAULTFS_ARRAY_H
#define VAULTFS_ARRAY_H

#include <stddef.h>

/* Room for element n of an array of elements of size bytes at p, whose
 * capacity is *cap: p itself, or p moved to twice the room (16 at first)
 * with *cap updated; NULL (p unchanged and still owned) when memory runs
 * out. */
void *array_room(void *p, size_t n, size_t *cap, size_t size);

#endif
