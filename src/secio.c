/* Values in and out of the CLI, through locked memory only. */
#include <errno.h>
#include <unistd.h>

#include "../crypto/secmem.h"
#include "secio.h"

int secio_read(int fd, struct secbuf *b, size_t max, bool one_line)
{
	size_t want;
	ssize_t n;
	int r;

	b->len = 0;
	for (;;) {
		/* One byte past max tells "exactly max" from "too large". */
		want = b->len + 4096 > max + 1 ? max + 1 : b->len + 4096;
		r = secbuf_reserve(b, want);
		if (r < 0)
			return r;
		if (b->len > max)
			return -EFBIG;
		n = read(fd, b->data + b->len, want - b->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		b->len += (size_t)n;
		if (one_line && b->data[b->len - 1] == '\n')
			return b->len > max ? -EFBIG : 0;
	}
}
