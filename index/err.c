#include "err.h"

#include <stdarg.h>
#include <stdio.h>

int df_errf(df_err *err, int rc, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof err->msg, fmt, ap);
		va_end(ap);
	}
	return rc;
}
