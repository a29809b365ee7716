/*
 * export.h -- write a checkpoint's files back out, byte-identical for lossless files.
 */
#ifndef DELTAFS_INDEX_EXPORT_H
#define DELTAFS_INDEX_EXPORT_H

#include <stdint.h>

#include "err.h"
#include "store.h"

/* Write every file of checkpoint `name` under directory dir (created if absent; existing files
 * of the same names are refused unless overwrite). Paths come from the validated manifest, so
 * nothing lands outside dir. Each file is written to a temporary name and renamed when complete;
 * a lossless file whose sha256 differs from the one recorded at ingest is an error (-EIO) and is
 * not left behind. *bytes (may be NULL) gets the bytes written. */
int ex_export(store *s, const char *name, const char *dir, int overwrite, uint64_t *bytes,
	      df_err *err);

#endif
