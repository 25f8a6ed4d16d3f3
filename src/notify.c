/* sd_notify(3) for Type=notify units, without libsystemd (whose library and
 * its six dependencies every command paid for at start): the state is one
 * datagram to the AF_UNIX socket named by $NOTIFY_SOCKET, a path or, with a
 * leading '@', an abstract name; without it nothing is sent. A failed
 * notification is logged, never fatal: the mount itself works. */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../fs/log.h"
#include "notify.h"

/* The socket's address from $NOTIFY_SOCKET: -ENOENT if unset, -EAFNOSUPPORT
 * for a form this does not speak (vsock). */
static int notify_addr(struct sockaddr_un *sa, socklen_t *len)
{
	const char *e = getenv("NOTIFY_SOCKET");
	size_t n;

	if (!e || !*e)
		return -ENOENT;
	if (e[0] != '/' && e[0] != '@')
		return -EAFNOSUPPORT;
	n = strlen(e);
	if (n >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, e, n);
	if (e[0] == '@')
		sa->sun_path[0] = '\0';		/* abstract: no trailing NUL counted */
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (e[0] == '/'));
	return 0;
}

static void notify_send(const char *state)
{
	struct sockaddr_un sa;
	socklen_t len;
	int fd, r;

	r = notify_addr(&sa, &len);
	if (r == -ENOENT)
		return;
	fd = r == 0 ? socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0) : -1;
	if (r == 0 && fd < 0)
		r = -errno;
	if (r == 0 && sendto(fd, state, strlen(state), MSG_NOSIGNAL,
			     (const struct sockaddr *)&sa, len) < 0)
		r = -errno;
	if (fd >= 0)
		close(fd);
	if (r < 0)
		log_warn("cannot notify the service manager: %s", strerror(-r));
}

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
