/*
 * half.h -- 16-bit float conversions shared by the codecs (inline: they sit in decode loops).
 *
 * Rounding to F16/BF16 is round-to-nearest-even done in integer arithmetic, so no FPU mode or
 * compiler contraction can change a decoded byte: every machine writes the same bits.
 */
#ifndef DELTAFS_CODEC_HALF_H
#define DELTAFS_CODEC_HALF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dtype.h"

static inline float hf_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, x;
	float f;

	if (e == 0x1f)
		x = sign | 0x7f800000 | m << 13;
	else if (e)
		x = sign | (e + 112) << 23 | m << 13;
	else {
		f = (float)m * 0x1p-24f; /* exact: m < 2^10 */
		memcpy(&x, &f, 4);
		x |= sign;
	}
	memcpy(&f, &x, 4);
	return f;
}

/* Round to nearest, ties to even, in integer arithmetic so no FPU mode can change the result. */
static inline uint16_t hf_f32_to_f16(float f)
{
	uint32_t x, ax, sign, r, rem, half;
	unsigned shift;

	memcpy(&x, &f, 4);
	sign = (x >> 16) & 0x8000;
	ax = x & 0x7fffffff;
	if (ax > 0x7f800000)
		return (uint16_t)(sign | 0x7e00 | (ax >> 13 & 0x3ff));
	if (ax >= 0x477ff000) /* >= 65520: rounds to infinity */
		return (uint16_t)(sign | 0x7c00);
	if (ax >= 0x38800000) { /* normal half */
		r = ax - (112u << 23);
		rem = r & 0x1fff;
		r >>= 13;
		if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
			r++;
		return (uint16_t)(sign | r);
	}
	if (ax < 0x33000000) /* below 2^-25: rounds to zero */
		return (uint16_t)sign;
	shift = 126 - (ax >> 23); /* 14..24: subnormal half, units of 2^-24 */
	r = (ax & 0x7fffff) | 0x800000;
	rem = r & ((1u << shift) - 1);
	half = 1u << (shift - 1);
	r >>= shift;
	if (rem > half || (rem == half && (r & 1)))
		r++;
	return (uint16_t)(sign | r);
}

static inline uint16_t hf_f32_to_bf16(float f)
{
	uint32_t x;

	memcpy(&x, &f, 4);
	if ((x & 0x7fffffff) > 0x7f800000)
		return (uint16_t)(x >> 16 | 0x40);
	return (uint16_t)((x + 0x7fff + (x >> 16 & 1)) >> 16);
}

static inline float hf_bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;

	memcpy(&f, &u, 4);
	return f;
}

/* Element i of an F32, F16 or BF16 array as float (0 for other dtypes). */
static inline float hf_load(dt_id dt, const void *p, size_t i)
{
	uint16_t h;
	float f;

	if (dt == DT_F32) {
		memcpy(&f, (const uint8_t *)p + 4 * i, 4);
		return f;
	}
	if (dt != DT_F16 && dt != DT_BF16)
		return 0;
	memcpy(&h, (const uint8_t *)p + 2 * i, 2);
	return dt == DT_F16 ? hf_f16_to_f32(h) : hf_bf16_to_f32(h);
}

/* Store v into element i of an F32, F16 or BF16 array, rounded to nearest even (the inverse of
 * hf_load). */
static inline void hf_store(dt_id dt, void *p, size_t i, float v)
{
	uint16_t h;

	if (dt == DT_F32) {
		memcpy((uint8_t *)p + 4 * i, &v, 4);
		return;
	}
	h = dt == DT_F16 ? hf_f32_to_f16(v) : hf_f32_to_bf16(v);
	memcpy((uint8_t *)p + 2 * i, &h, 2);
}

#endif
