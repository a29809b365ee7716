/*
 * err.h -- how index/, fs/ and tools/ report errors.
 *
 * One convention: a function returns 0 (or a count) on success and a negative errno on failure,
 * and, where the caller passed a df_err, fills it with one line a user can act on: which file,
 * which tensor, what is wrong. codec/ returns the errno alone (it knows no file names).
 */
#ifndef DELTAFS_INDEX_ERR_H
#define DELTAFS_INDEX_ERR_H

#include <stddef.h>

typedef struct df_err {
	char msg[512];
} df_err;

/* printf-style: set err->msg (err may be NULL) and return rc, so callers can write
 * `return df_errf(err, -EINVAL, "%s: ...", path);`. */
int df_errf(df_err *err, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
