/*
 * log.c -- stderr or syslog, chosen once at start-up (before any thread exists, so plain ints).
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

static int use_syslog, debug;

void fs_log_syslog(int on)
{
	if (on && !use_syslog)
		openlog("mount.deltafs", LOG_PID, LOG_DAEMON);
	use_syslog = on;
}

void fs_log_debug(int on) { debug = on; }

void fs_log(int prio, const char *fmt, ...)
{
	if (prio == LOG_DEBUG && !debug)
		return;
	va_list ap;
	va_start(ap, fmt);
	if (use_syslog) {
		vsyslog(prio, fmt, ap);
	} else {
		char line[1024];
		vsnprintf(line, sizeof line, fmt, ap);
		fprintf(stderr, "mount.deltafs: %s\n", line);
	}
	va_end(ap);
}
