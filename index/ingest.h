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

#include "../codec/deltadq.h"
#include "err.h"
#include "manifest.h"
#include "store.h"

/* Chosen by tests/bench/bench_chunk (see the comment at its definition in ingest.c). */
extern const uint32_t ING_CHUNK_DEFAULT;

/* zstd level 1: the level of the LZ frames cx_zstd_plane tries, on planes that are mostly one
 * byte; most planes are entropy-coded without a match search, where the level plays no part. A
 * level above 1 also tries LZ on every plane (codec/cx_internal.h). When every plane still went
 * through LZ, level 1 compressed as well as 3 and 5 (BF16 base +2%, deltas within 0.2%:
 * tests/bench/bench_chunk) and encoded 1.3-1.6x faster. */
#define ING_LEVEL_DEFAULT 1

enum { ING_T_AUTO = 0, ING_T_DELTADQ = 1, ING_T_LOWRANK = 2 };

/* Gaussian probe rows per matrix when no calibration file is given. */
#define ING_NPROBE 32

typedef struct ing_opts {
	const char *base;    /* base checkpoint name, or NULL */
	int threads;         /* encoder threads; 0 = number of CPUs */
	int replace;         /* replace an existing checkpoint of the same name */
	int level;           /* zstd level; 0 = ING_LEVEL_DEFAULT */
	uint32_t chunk_size; /* 0 = ING_CHUNK_DEFAULT. Tensors matched with a base take the base
				tensor's chunk size, except DeltaDQ matrices (dq_chunk_rows rows). */
	int codec;           /* CX_LOSSLESS (0 = the same); CX_DELTADQ: DeltaDQ for float
				matrices with a base; CX_PALETTE: a lossy base, float tensors of
				2+ dimensions as palettes of 2^pal_bits values. The rest stays
				lossless. */
	unsigned pal_bits;   /* CX_PALETTE: bits per weight, 2..8 */
	double ratio;        /* DeltaDQ: target ratio per matrix (original / stored bytes) */
	dq_params dq;        /* DeltaDQ: fixed parameters (zero fields: chosen per matrix) */
	const char *calib;   /* DeltaDQ: safetensors file of probe inputs, or NULL (Gaussian) */
	/* DeltaDQ: the transforms a matrix may get, ING_T_*: AUTO measures DeltaDQ and low-rank
	 * (codec/lowrank.h) at the same bytes and keeps the one with the smaller output error. */
	int transform;
	/* DeltaDQ bit allocation over the whole checkpoint (codec/alloc.h). alloc 0: every matrix
	 * at `ratio`. Else the matrices that differ from their base share one budget, `ratio` or
	 * budget_bits (average bits per weight) if > 0, in the order alloc - 1 (an al_order):
	 * importance from `importance` (a JSON object, tensor or layer name -> score) if set, else
	 * 1 - ZD of the fine-tuned weights. */
	int alloc;
	double budget_bits;
	const char *importance;
	uint32_t nprobe;     /* DeltaDQ: Gaussian probe rows per matrix; 0 = ING_NPROBE */
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
	uint64_t lossy;      /* tensors stored with DeltaDQ */
	uint64_t off_target; /* of those, how many could not land within 10% of the ratio */
} ing_result;

/* Add the safetensors file or model directory at path as checkpoint `name`. A directory
 * contributes every regular file under it (symlinks to files followed, *.safetensors parsed, the
 * rest stored whole), with '/'-separated relative paths. On success fills *res (free res->mf). */
int ing_add(store *s, const char *name, const char *path, const ing_opts *o, ing_result *res,
	    df_err *err);

#endif
