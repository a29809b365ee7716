/*
 * dtype.h -- the element types of safetensors, as deltafs stores them.
 *
 * The numeric values are part of the on-disk manifest format: never renumber, only append.
 */
#ifndef DELTAFS_CODEC_DTYPE_H
#define DELTAFS_CODEC_DTYPE_H

#include <stddef.h>

typedef enum {
	DT_BOOL = 0,
	DT_U8 = 1,
	DT_I8 = 2,
	DT_F8_E5M2 = 3,
	DT_F8_E4M3 = 4,
	DT_I16 = 5,
	DT_U16 = 6,
	DT_F16 = 7,
	DT_BF16 = 8,
	DT_I32 = 9,
	DT_U32 = 10,
	DT_F32 = 11,
	DT_F64 = 12,
	DT_I64 = 13,
	DT_U64 = 14,
	DT_COUNT
} dt_id;

/* Look up a safetensors dtype name ("BF16", "F32", ...), case-sensitive as the spec writes them.
 * Returns 0 and sets *out, or -EINVAL for a name deltafs does not know. */
int dt_from_name(const char *name, dt_id *out);

/* The safetensors name of a dtype; "?" for a value out of range (a corrupt manifest). */
const char *dt_name(dt_id dt);

/* Bytes per element (1, 2, 4 or 8); 0 for a value out of range. */
unsigned dt_size(dt_id dt);

/* Non-zero for the floating-point types (F8_*, F16, BF16, F32, F64). */
int dt_is_float(dt_id dt);

#endif
