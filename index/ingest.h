/*
 * ingest.h -- add a checkpoint to a store: parse, encode in parallel, write blobs, commit.
 *
 * The pipeline (DESIGN.md "Ingest"):
 *   1. every input file is mapped and, if it is a *.safetensors, its header fully validated
 *      (index/safetensors.h) -- nothing is written before every file has passed;
 *   2. each tensor is matched by name, dtype and shape with a tensor of the base checkpoint;
 *   3. worker threads encode chunks (codec/): a chunk equal to its base chunk costs no blob, a
 *      matched one is a delta against the base chunk as the store decodes it, the rest stand alone;
 *      blobs go to the store in batches (store_put_batch), deduplicated by hash;
 *   4. one write transaction commits the manifest (store_commit).
 * An ingest that dies before 4 leaves no visible checkpoint; its blobs sit at refcount 0 until gc.
 */
#ifndef DELTAFS_INDEX_INGEST_H
#define DELTAFS_INDEX_INGEST_H

#include <stdint.h>

#include "err.h"
#include "manifest.h"
#include "store.h"

/* Chosen by tests/bench/bench_chunk (see the comment at its definition in ingest.c). */
extern const uint32_t ING_CHUNK_DEFAULT;

typedef struct ing_opts {
	const char *base;    /* base checkpoint name, or NULL */
	int threads;         /* encoder threads; 0 = number of CPUs */
	int replace;         /* replace an existing checkpoint of the same name */
	int level;           /* zstd level; 0 = default (3) */
	uint32_t chunk_size; /* 0 = ING_CHUNK_DEFAULT; ignored for tensors matched with a base */
	/* Called from the calling thread about every 200 ms and once at the end. */
	void (*progress)(void *ud, uint64_t done, uint64_t total);
	void *progress_ud;
} ing_opts;

typedef struct ing_result {
	manifest *mf;        /* the committed manifest (free with mf_free) */
	uint64_t in_bytes;   /* sum of input file sizes */
	uint64_t new_bytes;  /* blob bytes this ingest added to the store (after dedup) */
	uint64_t matched;    /* tensors encoded against a base tensor */
	uint64_t unchanged;  /* tensors equal to their base tensor (no blob bytes) */
} ing_result;

/* Add the safetensors file or model directory at path as checkpoint `name`. A directory
 * contributes every regular file under it (symlinks to files followed, *.safetensors parsed, the
 * rest stored whole), with '/'-separated relative paths. On success fills *res (free res->mf). */
int ing_add(store *s, const char *name, const char *path, const ing_opts *o, ing_result *res,
	    df_err *err);

#endif
