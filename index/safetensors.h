/*
 * safetensors.h -- parse and validate a safetensors file's header.
 *
 * File layout: u64 N (little-endian), N bytes of JSON (may end in spaces), then the data region.
 * The JSON is an object mapping tensor names to {"dtype", "shape", "data_offsets": [begin, end]}
 * (offsets relative to the data region) plus an optional "__metadata__" string->string map.
 *
 * st_parse validates everything deltafs relies on before anything is stored:
 *   - N bounded (ST_MAX_HEADER) and 8 + N <= file size; JSON parsed by jansson with
 *     JSON_REJECT_DUPLICATES; the top level an object; "__metadata__" only string values;
 *   - each tensor: known dtype, shape an array of non-negative integers (at most ST_MAX_DIMS),
 *     data_offsets two integers begin <= end; product(shape) * dtype size == end - begin computed
 *     without overflow; end inside the data region;
 *   - tensors, sorted by begin, neither overlap nor leave holes: together they cover the data region
 *     exactly (empty tensors may sit at any offset inside it);
 *   - tensor names non-empty UTF-8 without control characters.
 * Every error names the file, the tensor and what is wrong.
 */
#ifndef DELTAFS_INDEX_SAFETENSORS_H
#define DELTAFS_INDEX_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../codec/dtype.h"
#include "err.h"

#define ST_MAX_HEADER (100u << 20) /* the reference implementation's limit */
#define ST_MAX_DIMS 16

typedef struct st_tensor {
	char *name;       /* owned by the st_file */
	dt_id dtype;
	unsigned ndim;
	uint64_t shape[ST_MAX_DIMS];
	uint64_t begin, end; /* relative to the data region */
} st_tensor;

typedef struct st_file {
	uint64_t header_len; /* N */
	uint64_t data_start; /* 8 + N: file offset of the data region */
	uint64_t file_size;
	size_t ntensors;
	st_tensor *tensors; /* sorted by (begin, end, name) */
} st_file;

/* Parse the safetensors file whose first `size` bytes are at buf (the whole file, normally an mmap;
 * only the header is read). fname is used in messages only. On success fills *out (free with
 * st_free) and returns 0; else returns -EINVAL (malformed) or -ENOMEM, fills err, and leaves *out
 * empty. */
int st_parse(const void *buf, size_t size, const char *fname, st_file *out, df_err *err);

void st_free(st_file *f);

#endif
