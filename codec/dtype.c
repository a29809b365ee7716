/*
 * dtype.c -- the safetensors element types.
 *
 * One table indexed by dt_id carries name, size and float-ness, so a new dtype is one line and
 * the three lookups cannot disagree. Names are matched case-sensitively because the safetensors
 * spec spells them in upper case and a loader that accepted "bf16" would write files others reject.
 */
#include "dtype.h"

#include <errno.h>
#include <string.h>

static const struct {
	const char *name;
	unsigned char size;
	unsigned char is_float;
} dt_table[DT_COUNT] = {
	[DT_BOOL] = { "BOOL", 1, 0 },
	[DT_U8] = { "U8", 1, 0 },
	[DT_I8] = { "I8", 1, 0 },
	[DT_F8_E5M2] = { "F8_E5M2", 1, 1 },
	[DT_F8_E4M3] = { "F8_E4M3", 1, 1 },
	[DT_I16] = { "I16", 2, 0 },
	[DT_U16] = { "U16", 2, 0 },
	[DT_F16] = { "F16", 2, 1 },
	[DT_BF16] = { "BF16", 2, 1 },
	[DT_I32] = { "I32", 4, 0 },
	[DT_U32] = { "U32", 4, 0 },
	[DT_F32] = { "F32", 4, 1 },
	[DT_F64] = { "F64", 8, 1 },
	[DT_I64] = { "I64", 8, 0 },
	[DT_U64] = { "U64", 8, 0 },
};

int dt_from_name(const char *name, dt_id *out)
{
	if (!name || !out)
		return -EINVAL;
	for (int i = 0; i < DT_COUNT; i++) {
		if (strcmp(name, dt_table[i].name) == 0) {
			*out = (dt_id)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* The enum's underlying type may be unsigned, so a corrupt value is range-checked as unsigned:
 * that rejects negative values too. */
const char *dt_name(dt_id dt)
{
	return (unsigned)dt < DT_COUNT ? dt_table[dt].name : "?";
}

unsigned dt_size(dt_id dt)
{
	return (unsigned)dt < DT_COUNT ? dt_table[dt].size : 0;
}

int dt_is_float(dt_id dt)
{
	return (unsigned)dt < DT_COUNT ? dt_table[dt].is_float : 0;
}
