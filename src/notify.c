/* sd_notify(3) for Type=notify units. The message goes to $NOTIFY_SOCKET,
 * which the service manager sets; without it nothing is sent. A failed
 * notification is logged, never fatal: the mount itself works. */
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_SYSTEMD
#include <dlfcn.h>
#include <pthread.h>
#include <systemd/sd-daemon.h>
#endif

#include "../fs/log.h"
#include "notify.h"

#ifdef HAVE_SYSTEMD
/* libsystemd is loaded when a mount first talks to the service manager,
 * not linked: it brings six more libraries (gcrypt, lzma, zstd, ...) whose
 * loading and relocation was a third of a `vaultfs get`. The header keeps
 * the prototypes checked. */
static struct {
	__typeof__(&sd_notify) notify;
	__typeof__(&sd_pid_notify_with_fds) notify_with_fds;
	__typeof__(&sd_listen_fds_with_names) listen_fds_with_names;
} sd;

static void sd_load_once(void)
{
	void *h = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL);

	if (!h) {
		log_warn("cannot load libsystemd: %s", dlerror());
		return;
	}
	*(void **)&sd.notify = dlsym(h, "sd_notify");
	*(void **)&sd.notify_with_fds = dlsym(h, "sd_pid_notify_with_fds");
	*(void **)&sd.listen_fds_with_names = dlsym(h, "sd_listen_fds_with_names");
	if (!sd.notify || !sd.notify_with_fds || !sd.listen_fds_with_names) {
		log_warn("libsystemd.so.0 lacks sd_notify, sd_pid_notify_with_fds or "
			 "sd_listen_fds_with_names");
		memset(&sd, 0, sizeof(sd));
	}
}

/* Only where a service manager can be listening: no library otherwise. */
static bool sd_load(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	if (!getenv("NOTIFY_SOCKET") && !getenv("LISTEN_FDS"))
		return false;
	pthread_once(&once, sd_load_once);
	return sd.notify != NULL;
}

static void notify_send(const char *state)
{
	int r;

	if (!sd_load())
		return;
	r = sd.notify(0, state);
	if (r < 0)
		log_warn("cannot notify the service manager: %s", strerror(-r));
}
#else
static void notify_send(const char *state)
{
	static bool warned;

	(void)state;
	if (!getenv("NOTIFY_SOCKET") || warned)
		return;
	warned = true;
	log_warn("built without libsystemd: NOTIFY_SOCKET is ignored, so a "
		 "Type=notify unit never becomes ready (rebuild with libsystemd-dev)");
}
#endif

#ifdef HAVE_SYSTEMD
int notify_store_fd(int fd, const char *name)
{
	char state[128];
	int r;

	if (!getenv("NOTIFY_SOCKET") || !sd_load())
		return -1;
	snprintf(state, sizeof(state), "FDSTORE=1\nFDNAME=%s", name);
	r = sd.notify_with_fds(0, 0, state, &fd, 1);
	return r > 0 ? 0 : -1;
}

int notify_stored_fd(const char *name)
{
	static char **names;
	static int n = -1;

	if (n < 0) {
		n = sd_load() ? sd.listen_fds_with_names(1, &names) : 0;
		if (n < 0)
			n = 0;
	}
	for (int i = 0; i < n; i++)
		if (names && names[i] && !strcmp(names[i], name)) {
			fcntl(SD_LISTEN_FDS_START + i, F_SETFD, FD_CLOEXEC);
			return SD_LISTEN_FDS_START + i;
		}
	return -1;
}
void notify_remove_fd(const char *name)
{
	char state[128];

	snprintf(state, sizeof(state), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	notify_send(state);
}
#else
void notify_remove_fd(const char *name)
{
	(void)name;
}

int notify_store_fd(int fd, const char *name)
{
	(void)fd;
	(void)name;
	return -1;
}

int notify_stored_fd(const char *name)
{
	(void)name;
	return -1;
}
#endif

void notify_ready(const char *mountpoint)
{
	char state[PATH_MAX + 32];

	snprintf(state, sizeof(state), "READY=1\nSTATUS=serving %s", mountpoint);
	notify_send(state);
}

void notify_stopping(void)
{
	notify_send("STOPPING=1");
}
