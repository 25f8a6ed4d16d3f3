/* Arrays that grow as a callback fills them (ids of instances, versions). */
#ifndef VAULTFS_ARRAY_H
#define VAULTFS_ARRAY_H

#include <stddef.h>
#include <stdint.h>

/* Room for element n of an array of elements of size bytes at p, whose
 * capacity is *cap: p itself, or p moved to twice the room (16 at first)
 * with *cap updated; NULL (p unchanged and still owned) when memory runs
 * out. */
void *array_room(void *p, size_t n, size_t *cap, size_t size);

/* A list of ids or versions, filled by a callback: free(a.v) when done. */
struct array_i64 {
	int64_t *v;
	size_t n, cap;
};
/* Appends x: 0, or -ENOMEM (the list is unchanged). */
int array_i64_add(struct array_i64 *a, int64_t x);

#endif
