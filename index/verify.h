/*
 * verify.h -- check a store end to end: every blob decodes and matches its hash, every lossless
 * file's bytes match the sha256 recorded at ingest, and the reference counts match the manifests.
 */
#ifndef DELTAFS_INDEX_VERIFY_H
#define DELTAFS_INDEX_VERIFY_H

#include <stdint.h>

#include "err.h"
#include "store.h"

typedef struct vf_report {
	uint64_t ckpts, files, bytes; /* checked */
	uint64_t bad;                 /* problems found (each reported through the callback) */
} vf_report;

/* Verify checkpoint `name`, or all checkpoints when name is NULL (and then also the refcounts).
 * Each problem is passed to problem(ud, message) and counted in rep->bad; the walk goes on.
 * Returns 0 when the walk completed (look at rep->bad), or a negative errno if it could not run. */
int vf_verify(store *s, const char *name, void (*problem)(void *ud, const char *msg), void *ud,
	      vf_report *rep, df_err *err);

#endif
