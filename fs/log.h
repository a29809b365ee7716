/*
 * log.h -- the daemon's log: stderr while it runs in the foreground (or before it detaches), syslog
 * (facility daemon, ident mount.deltafs) once it has detached and stderr is /dev/null.
 */
#ifndef DELTAFS_FS_LOG_H
#define DELTAFS_FS_LOG_H

#include <syslog.h>

/* prio is a syslog priority (LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG); one line per call, the
 * newline added. LOG_DEBUG lines are dropped unless fs_log_debug(1). Thread-safe. */
void fs_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Route later lines to syslog (on = 1) or stderr (0). */
void fs_log_syslog(int on);
void fs_log_debug(int on);

#endif
