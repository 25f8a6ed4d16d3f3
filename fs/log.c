/* Log lines go to stderr in the foreground and to syslog (the journal) once
 * daemonized. Callers never pass values; names and errno only. */
#include <stdarg.h>
#include <stdio.h>

#include "log.h"

static bool use_syslog;
static bool verbose;

void log_to_syslog(bool on)
{
	if (on && !use_syslog)
		openlog("vaultfs", LOG_PID | LOG_NDELAY, LOG_DAEMON);
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
		vsyslog(prio, fmt, ap);
	} else {
		fputs("vaultfs: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	va_end(ap);
}
