#include <stdlib.h>

#include "array.h"

void *array_room(void *p, size_t n, size_t *cap, size_t size)
{
	size_t want = *cap ? *cap * 2 : 16;

	if (n < *cap)
		return p;
	p = reallocarray(p, want, size);
	if (p)
		*cap = want;
	return p;
}
