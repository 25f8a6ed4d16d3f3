/* Log lines go to stderr in the foreground and to syslog (the journal) once
 * daemonized. Callers never pass values; names and errno only. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static bool use_syslog;
static bool verbose;
static int syslog_fd = -1;
static char syslog_path[108] = "/dev/log";
/* Whether syslog_path was there, as looked at last (0: never). */
static int64_t syslog_seen_ns;
static bool syslog_seen;
static pthread_mutex_t syslog_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_ulong syslog_dropped;

/* glibc's syslog() blocks while the reader of /dev/log is behind, and a
 * blocked log line would stall the filesystem: messages go out on a
 * non-blocking socket instead, and one that doesn't fit is dropped and
 * counted. */
static int syslog_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	memcpy(sa.sun_path, syslog_path, sizeof(syslog_path));
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

bool log_syslog_send(int prio, const char *msg)
{
	char line[2048];
	int n, tries;
	bool sent = false;

	n = snprintf(line, sizeof(line), "<%d>vaultfs[%d]: %s", prio, (int)getpid(), msg);
	if (n < 0)
		return false;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	pthread_mutex_lock(&syslog_lock);
	for (tries = 0; tries < 2 && !sent; tries++) {
		if (syslog_fd < 0)
			syslog_fd = syslog_connect();
		if (syslog_fd < 0)
			break;
		if (send(syslog_fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) == n) {
			sent = true;
		} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
			close(syslog_fd);	/* the log daemon restarted: reconnect */
			syslog_fd = -1;
		} else {
			break;
		}
	}
	pthread_mutex_unlock(&syslog_lock);
	if (!sent)
		atomic_fetch_add(&syslog_dropped, 1);
	return sent;
}

unsigned long log_syslog_dropped(void)
{
	return atomic_load(&syslog_dropped);
}

void log_syslog_socket(const char *path)
{
	pthread_mutex_lock(&syslog_lock);
	snprintf(syslog_path, sizeof(syslog_path), "%s", path);
	syslog_seen_ns = 0;
	if (syslog_fd >= 0)
		close(syslog_fd);
	syslog_fd = -1;
	pthread_mutex_unlock(&syslog_lock);
}

/* Asked for every audit entry stored: the socket is looked for at most
 * once a second (a coarse clock costs no system call). */
bool log_syslog_present(void)
{
	struct timespec ts;
	int64_t now;
	bool there;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	pthread_mutex_lock(&syslog_lock);
	if (!syslog_seen_ns || now - syslog_seen_ns >= 1000000000) {
		syslog_seen = access(syslog_path, F_OK) == 0;
		syslog_seen_ns = now ? now : 1;
	}
	there = syslog_seen;
	pthread_mutex_unlock(&syslog_lock);
	return there;
}

void log_to_syslog(bool on)
{
	use_syslog = on;
}

void log_set_verbose(bool on)
{
	verbose = on;
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;

	if (prio == LOG_DEBUG && !verbose)
		return;
	va_start(ap, fmt);
	if (use_syslog) {
		char msg[1024];

		vsnprintf(msg, sizeof(msg), fmt, ap);
		log_syslog_send(LOG_DAEMON | prio, msg);
	} else {
		fputs("vaultfs: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	va_end(ap);
}
