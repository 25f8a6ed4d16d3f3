#include <errno.h>
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

int array_i64_add(struct array_i64 *a, int64_t x)
{
	int64_t *v = array_room(a->v, a->n, &a->cap, sizeof(*v));

	if (!v)
		return -ENOMEM;
	a->v = v;
	a->v[a->n++] = x;
	return 0;
}
