/* libfuse, loaded when a mount starts (see fuse_lib.h). */
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

#include "fuse_lib.h"

struct fuse_lib fuse_lib;

static const char *load_error;

static void load_once(void)
{
	void *h = dlopen("libfuse3.so.3", RTLD_NOW | RTLD_LOCAL);

	if (!h) {
		load_error = dlerror();
		return;
	}
	/* The versions the header binds to: a newer libfuse keeps them. */
#define LOAD(f, version) \
	if (!(*(void **)&fuse_lib.p_##f = dlvsym(h, #f, version)) && !load_error) \
		load_error = "libfuse3.so.3 lacks " #f "@" version;
	FUSE_LIB_FUNCS(LOAD)
#undef LOAD
	if (load_error)
		memset(&fuse_lib, 0, sizeof(fuse_lib));
}

int fuse_lib_load(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, load_once);
	return load_error ? -1 : 0;
}

const char *fuse_lib_error(void)
{
	return load_error;
}
