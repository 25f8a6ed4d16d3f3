/* The multithreaded session loop vaultfs serves requests with. */
#define FUSE_USE_VERSION 314

#include <errno.h>

#include "fuse_lib.h"

#include "loop.h"

#define LOOP_MAX_THREADS 16

int fs_loop(struct fuse_session *se)
{
	struct fuse_loop_config *lc = fuse_loop_cfg_create();
	int r;

	if (!lc)
		return -1;
	/* Measured with bench/: a device fd per thread (clone_fd) changed
	 * nothing beyond the noise; reaping idle threads (idle_threads 1)
	 * cut reads per second by 5x, so idle threads stay (the default). */
	fuse_loop_cfg_set_clone_fd(lc, 0);
	fuse_loop_cfg_set_max_threads(lc, LOOP_MAX_THREADS);
	r = fuse_session_loop_mt(se, lc);
	fuse_loop_cfg_destroy(lc);
	/* A signal ends the loop with its number: that is a clean stop. So is
	 * a connection the kernel ended with ECONNABORTED (see io_read in
	 * session.c) in a session whose device libfuse reads itself. */
	if (r == -ECONNABORTED)
		r = 0;
	return r < 0 ? -1 : 0;
}
