/* Logging to stderr or syslog. Never pass a secret value. */
#ifndef VAULTFS_LOG_H
#define VAULTFS_LOG_H

#include <stdbool.h>
#include <syslog.h>

void log_to_syslog(bool on);
/* Where syslog listens, /dev/log unless the config says otherwise. */
void log_syslog_socket(const char *path);
/* Whether that socket exists: without one, a batch of copies is skipped
 * instead of each failing to connect. */
bool log_syslog_present(void);
/* One message to /dev/log without ever blocking; false if it was dropped
 * (no log daemon, or its queue is full). */
bool log_syslog_send(int prio, const char *msg);
unsigned long log_syslog_dropped(void);
void log_set_verbose(bool on);
void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
