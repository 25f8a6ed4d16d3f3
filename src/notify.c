/* sd_notify(3) for Type=notify units. The message goes to $NOTIFY_SOCKET,
 * which the service manager sets; without it nothing is sent. A failed
 * notification is logged, never fatal: the mount itself works. */
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "../fs/log.h"
#include "notify.h"

#ifdef HAVE_SYSTEMD
static void notify_send(const char *state)
{
	int r = sd_notify(0, state);

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
