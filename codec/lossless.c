/*
 * lossless.c -- byte grouping + zstd, and XOR/SUB deltas against a base (see lossless.h).
 *
 * Data path. Encode: transform each element (identity, XOR base, or zig-zag of the difference
 * from base), scatter its bytes into planes (scratch slot 0), compress each plane as its own zstd
 * frame into the blob (ll_compress_planes). Decode: the frames, in one zstd call, into scratch
 * slot 0, then gather the planes back into elements while undoing the
 * transform, writing the caller's buffer once. The one exception is 1-byte elements without a
 * delta, which have a single plane: zstd decodes straight into dst. A warm context decodes without
 * allocating (tests/codec/test_noalloc.c holds it to that).
 *
 * The split/merge kernels run on every read miss, so they are written for gcc -O2's "very cheap"
 * vectoriser, which only vectorises a loop when the vector code replaces the scalar loop entirely:
 * an inner loop of a fixed LL_BLOCK elements (a multiple of any vector width) with every plane a
 * separate restrict pointer (no runtime alias checks), and a scalar tail for the last < LL_BLOCK
 * elements. They are instantiated per element size and mode through always_inline helpers with
 * constant arguments, so no branch on the mode is left inside a loop. gcc 12 -O2
 * -fopt-info-vec reports every split and merge loop vectorised; the merge then costs ~12% of a
 * BF16 delta decode, zstd the rest.
 *
 * Choosing the mode: see ll_pick.
 */
#include "lossless.h"

#include <errno.h>

#include <zstd_errors.h>

#include "cx_internal.h"

/* Version 2 (written): one zstd frame per plane. Version 1 (still read): one frame of all planes,
 * a block per plane. The decoder takes both the same way, since zstd decodes concatenated frames
 * in one call. */
#define LL_VERSION 2
#define LL_VERSION_MIN 1
/* The level at and below which a plane that literal coding handles well is not also tried with
 * LZ (cx_zstd_plane): above it the user paid for the search. */
#define LL_LEVEL_LITERAL 1
#define LL_BLOCK 64 /* elements per vectorised block */

/* Scratch slots of the cx_ctx. */
enum { LL_S_PLANES = 0 };

#define AI static inline __attribute__((always_inline))

/* ---- element transforms ------------------------------------------------------------------- */

/* Zig-zag folds the wrapped difference so that -1 becomes 1, not 0xff..ff: a small step down has
 * zero high bytes, like a small step up, and the high planes compress to almost nothing. */
#define LL_XFORM(T, BITS)                                                                          \
	AI T ll_fwd_##BITS(T v, T b, int mode)                                                     \
	{                                                                                          \
		T d;                                                                               \
		switch (mode) {                                                                    \
		case LL_XOR:                                                                       \
			return (T)(v ^ b);                                                         \
		case LL_SUB:                                                                       \
			d = (T)(v - b);                                                            \
			return (T)((T)(d << 1) ^ (T)(0 - (T)(d >> (BITS - 1))));                   \
		default:                                                                           \
			return v;                                                                  \
		}                                                                                  \
	}                                                                                          \
	AI T ll_inv_##BITS(T z, T b, int mode)                                                     \
	{                                                                                          \
		switch (mode) {                                                                    \
		case LL_XOR:                                                                       \
			return (T)(z ^ b);                                                         \
		case LL_SUB:                                                                       \
			return (T)(b + (T)((T)(z >> 1) ^ (T)(0 - (T)(z & 1))));                    \
		default:                                                                           \
			return z;                                                                  \
		}                                                                                  \
	}

LL_XFORM(uint8_t, 8)
LL_XFORM(uint16_t, 16)
LL_XFORM(uint32_t, 32)
LL_XFORM(uint64_t, 64)

/* ---- split (encode) and merge (decode) kernels --------------------------------------------- */

/* One element i: load (and base), transform, scatter to the planes p[0..ES-1]. */
#define LL_SPLIT_ONE(T, BITS, ES, i)                                                               \
	do {                                                                                       \
		T v_, b_ = 0;                                                                      \
		memcpy(&v_, in + (size_t)(i) * ES, ES);                                            \
		if (mode != LL_GROUPED)                                                            \
			memcpy(&b_, base + (size_t)(i) * ES, ES);                                  \
		v_ = ll_fwd_##BITS(v_, b_, mode);                                                  \
		LL_SCATTER_##ES(v_, i);                                                            \
	} while (0)

#define LL_MERGE_ONE(T, BITS, ES, i)                                                               \
	do {                                                                                       \
		T z_ = LL_GATHER_##ES(T, i), b_ = 0;                                               \
		if (mode != LL_GROUPED)                                                            \
			memcpy(&b_, base + (size_t)(i) * ES, ES);                                  \
		z_ = ll_inv_##BITS(z_, b_, mode);                                                  \
		memcpy(out + (size_t)(i) * ES, &z_, ES);                                           \
	} while (0)

#define LL_SCATTER_1(v, i) (p0[i] = (uint8_t)(v))
#define LL_SCATTER_2(v, i) (p0[i] = (uint8_t)(v), p1[i] = (uint8_t)((v) >> 8))
#define LL_SCATTER_4(v, i)                                                                         \
	(p0[i] = (uint8_t)(v), p1[i] = (uint8_t)((v) >> 8), p2[i] = (uint8_t)((v) >> 16),          \
	 p3[i] = (uint8_t)((v) >> 24))
#define LL_SCATTER_8(v, i)                                                                         \
	(LL_SCATTER_4(v, i), p4[i] = (uint8_t)((v) >> 32), p5[i] = (uint8_t)((v) >> 40),           \
	 p6[i] = (uint8_t)((v) >> 48), p7[i] = (uint8_t)((v) >> 56))

#define LL_GATHER_1(T, i) ((T)p0[i])
#define LL_GATHER_2(T, i) ((T)((T)p0[i] | (T)((T)p1[i] << 8)))
#define LL_GATHER_4(T, i)                                                                          \
	((T)p0[i] | (T)p1[i] << 8 | (T)p2[i] << 16 | (T)p3[i] << 24)
#define LL_GATHER_8(T, i)                                                                          \
	(LL_GATHER_4(T, i) | (T)p4[i] << 32 | (T)p5[i] << 40 | (T)p6[i] << 48 | (T)p7[i] << 56)

#define LL_PLANES_1 uint8_t *restrict p0
#define LL_PLANES_2 LL_PLANES_1, uint8_t *restrict p1
#define LL_PLANES_4 LL_PLANES_2, uint8_t *restrict p2, uint8_t *restrict p3
#define LL_PLANES_8                                                                                \
	LL_PLANES_4, uint8_t *restrict p4, uint8_t *restrict p5, uint8_t *restrict p6,             \
		uint8_t *restrict p7
#define LL_CPLANES_1 const uint8_t *restrict p0
#define LL_CPLANES_2 LL_CPLANES_1, const uint8_t *restrict p1
#define LL_CPLANES_4 LL_CPLANES_2, const uint8_t *restrict p2, const uint8_t *restrict p3
#define LL_CPLANES_8                                                                               \
	LL_CPLANES_4, const uint8_t *restrict p4, const uint8_t *restrict p5,                      \
		const uint8_t *restrict p6, const uint8_t *restrict p7
#define LL_ARGS_1(pl, m) (pl)
#define LL_ARGS_2(pl, m) LL_ARGS_1(pl, m), (pl) + (m)
#define LL_ARGS_4(pl, m) LL_ARGS_2(pl, m), (pl) + 2 * (m), (pl) + 3 * (m)
#define LL_ARGS_8(pl, m)                                                                           \
	LL_ARGS_4(pl, m), (pl) + 4 * (m), (pl) + 5 * (m), (pl) + 6 * (m), (pl) + 7 * (m)

#define LL_KERNELS(T, BITS, ES)                                                                    \
	AI void ll_split_##ES(LL_PLANES_##ES, const uint8_t *restrict in,                          \
			      const uint8_t *restrict base, size_t m, int mode)                    \
	{                                                                                          \
		size_t i = 0;                                                                      \
		for (; i + LL_BLOCK <= m; i += LL_BLOCK)                                           \
			for (size_t j = 0; j < LL_BLOCK; j++)                                      \
				LL_SPLIT_ONE(T, BITS, ES, i + j);                                  \
		for (; i < m; i++)                                                                 \
			LL_SPLIT_ONE(T, BITS, ES, i);                                              \
	}                                                                                          \
	AI void ll_merge_##ES(uint8_t *restrict out, LL_CPLANES_##ES,                              \
			      const uint8_t *restrict base, size_t m, int mode)                    \
	{                                                                                          \
		size_t i = 0;                                                                      \
		for (; i + LL_BLOCK <= m; i += LL_BLOCK)                                           \
			for (size_t j = 0; j < LL_BLOCK; j++)                                      \
				LL_MERGE_ONE(T, BITS, ES, i + j);                                  \
		for (; i < m; i++)                                                                 \
			LL_MERGE_ONE(T, BITS, ES, i);                                              \
	}                                                                                          \
	static void ll_split_##ES##_grouped(uint8_t *pl, const uint8_t *in, const uint8_t *base,   \
					    size_t m)                                              \
	{                                                                                          \
		ll_split_##ES(LL_ARGS_##ES(pl, m), in, base, m, LL_GROUPED);                        \
	}                                                                                          \
	static void ll_split_##ES##_xor(uint8_t *pl, const uint8_t *in, const uint8_t *base,       \
					size_t m)                                                  \
	{                                                                                          \
		ll_split_##ES(LL_ARGS_##ES(pl, m), in, base, m, LL_XOR);                            \
	}                                                                                          \
	static void ll_split_##ES##_sub(uint8_t *pl, const uint8_t *in, const uint8_t *base,       \
					size_t m)                                                  \
	{                                                                                          \
		ll_split_##ES(LL_ARGS_##ES(pl, m), in, base, m, LL_SUB);                            \
	}                                                                                          \
	static void ll_merge_##ES##_grouped(uint8_t *out, const uint8_t *pl, const uint8_t *base,  \
					    size_t m)                                              \
	{                                                                                          \
		ll_merge_##ES(out, LL_ARGS_##ES(pl, m), base, m, LL_GROUPED);                       \
	}                                                                                          \
	static void ll_merge_##ES##_xor(uint8_t *out, const uint8_t *pl, const uint8_t *base,      \
					size_t m)                                                  \
	{                                                                                          \
		ll_merge_##ES(out, LL_ARGS_##ES(pl, m), base, m, LL_XOR);                           \
	}                                                                                          \
	static void ll_merge_##ES##_sub(uint8_t *out, const uint8_t *pl, const uint8_t *base,      \
					size_t m)                                                  \
	{                                                                                          \
		ll_merge_##ES(out, LL_ARGS_##ES(pl, m), base, m, LL_SUB);                           \
	}

LL_KERNELS(uint8_t, 8, 1)
LL_KERNELS(uint16_t, 16, 2)
LL_KERNELS(uint32_t, 32, 4)
LL_KERNELS(uint64_t, 64, 8)

typedef void ll_fn(uint8_t *out, const uint8_t *in, const uint8_t *base, size_t m);

/* [log2 esize][mode - LL_GROUPED] */
#define LL_FNS(dir, ES) { ll_##dir##_##ES##_grouped, ll_##dir##_##ES##_xor, ll_##dir##_##ES##_sub }
static ll_fn *const ll_split_fns[4][3] = {
	LL_FNS(split, 1), LL_FNS(split, 2), LL_FNS(split, 4), LL_FNS(split, 8),
};
static ll_fn *const ll_merge_fns[4][3] = {
	LL_FNS(merge, 1), LL_FNS(merge, 2), LL_FNS(merge, 4), LL_FNS(merge, 8),
};

static int ll_log2_esize(unsigned esize)
{
	switch (esize) {
	case 1: return 0;
	case 2: return 1;
	case 4: return 2;
	case 8: return 3;
	default: return -1;
	}
}

/* ---- choosing the mode --------------------------------------------------------------------- */

#define LL_SAMPLE_WINDOWS 16
#define LL_SAMPLE_MAX (16 * 1024) /* bytes sampled at most */

/* log2 to 2e-4, from the float's exponent and a polynomial in its mantissa. The estimate below
 * takes up to 3 x 8 x 256 logarithms per chunk, and libm's log2 made them cost more than the
 * compression itself on a 64 KiB F32 chunk; candidates are only compared, so this precision is
 * plenty. */
static inline float ll_log2(float x)
{
	uint32_t i;
	float e, m;

	memcpy(&i, &x, 4);
	e = (float)((int)(i >> 23) - 127);
	i = (i & 0x7fffff) | 0x3f800000;
	memcpy(&m, &i, 4);
	/* least-squares quartic for log2 on [1, 2): max error 2.1e-4 */
	return e + ((((-0.0791512335f * m + 0.628822172f) * m - 2.08107734f) * m + 4.02839226f) * m -
		    2.49678181f);
}

/* Order-0 entropy in bits of one plane's histogram: what a Huffman stage (zstd's literals) pays
 * for bytes it finds no matches in, which is most of a weight plane. */
static float ll_hist_bits(const uint32_t *h, uint32_t total)
{
	float bits = total ? (float)total * ll_log2((float)total) : 0;

	for (int c = 0; c < 256; c++)
		if (h[c])
			bits -= (float)h[c] * ll_log2((float)h[c]);
	return bits;
}

/* Estimated bits for the planes of n bytes in the given mode, from LL_SAMPLE_WINDOWS windows spread
 * over the chunk, n/16 bytes in all up to LL_SAMPLE_MAX (the whole chunk if it is under 4 KiB).
 * The windows' planes are built with the real split kernel, so the estimate sees exactly the bytes
 * zstd would. Each plane is counted into 4 interleaved histograms: an exponent plane is nearly one
 * byte value, and a single histogram would chain every increment on the one before through the
 * same counter (bench_chunk, 64 KiB F32 chunks: encoding with a base took 2.3x a SUB-only encode
 * that way, 1.4x now). */
static float ll_estimate(const uint8_t *src, const uint8_t *base, size_t n, int l2, int mode)
{
	uint8_t tmp[LL_SAMPLE_MAX];
	uint32_t h[4][256];
	const unsigned es = 1u << l2;
	size_t nwin = LL_SAMPLE_WINDOWS, win, m;
	float bits = 0;

	if (n < 4096) {
		nwin = 1;
		win = n;
	} else {
		win = n / 16 / LL_SAMPLE_WINDOWS / 8 * 8;
		if (win > LL_SAMPLE_MAX / LL_SAMPLE_WINDOWS)
			win = LL_SAMPLE_MAX / LL_SAMPLE_WINDOWS;
	}
	m = win / es;
	for (size_t w = 0; w < nwin; w++) {
		size_t off = nwin == 1 ? 0 : w * (n - win) / (nwin - 1) / es * es;

		ll_split_fns[l2][mode - LL_GROUPED](tmp + w * win, src + off,
						   base ? base + off : NULL, m);
	}
	for (unsigned k = 0; k < es; k++) {
		memset(h, 0, sizeof h);
		for (size_t w = 0; w < nwin; w++) {
			const uint8_t *p = tmp + w * win + k * m;
			size_t i = 0;

			for (; i + 4 <= m; i += 4) {
				h[0][p[i]]++;
				h[1][p[i + 1]]++;
				h[2][p[i + 2]]++;
				h[3][p[i + 3]]++;
			}
			for (; i < m; i++)
				h[0][p[i]]++;
		}
		for (int c = 0; c < 256; c++)
			h[0][c] += h[1][c] + h[2][c] + h[3][c];
		bits += ll_hist_bits(h[0], (uint32_t)(nwin * m));
	}
	return bits;
}

/* With a base: the mode among GROUPED, XOR and SUB with the fewest estimated bits. GROUPED is a
 * candidate because a tensor the fine-tune rewrote wholesale compresses better on its own, and
 * then its blob does not even need the base decoded.
 *
 * Why an estimate on a sample rather than compressing every candidate: bench_chunk compares, per
 * chunk, the sizes of XOR-only, SUB-only and no-delta blobs with what this picks. On the real F32
 * charlm pair and synthetic BF16, at every chunk size from 64 KiB to 4 MiB, the pick equalled the
 * per-chunk best on every chunk (0 bytes lost), while compressing both deltas in full took 1.8-2x
 * the encode time. The pick itself (sample estimate of 3 candidates, then the SUB transform) adds
 * 7-20% to the encode of F32 chunks of 256 KiB-1 MiB and 44% at 64 KiB, where F32 compresses at
 * ~1 GB/s; on BF16 it is within the timing noise. */
static int ll_pick(const uint8_t *src, const uint8_t *base, size_t n, int l2)
{
	int best = LL_GROUPED;
	float best_bits = ll_estimate(src, NULL, n, l2, LL_GROUPED);

	for (int mode = LL_XOR; mode <= LL_SUB; mode++) {
		float bits = ll_estimate(src, base, n, l2, mode);

		if (bits < best_bits) {
			best_bits = bits;
			best = mode;
		}
	}
	return best;
}

/* ---- blobs --------------------------------------------------------------------------------- */

size_t ll_bound(size_t n)
{
	/* A payload that would not be smaller than n is stored raw, so the bound is tight. */
	return n > SIZE_MAX - LL_HDR ? SIZE_MAX : LL_HDR + n;
}

static void ll_put_header(uint8_t *d, int mode, unsigned esize, size_t n)
{
	d[0] = CX_MAGIC;
	d[1] = CX_LOSSLESS;
	d[2] = LL_VERSION;
	d[3] = (uint8_t)mode;
	d[4] = (uint8_t)esize;
	d[5] = d[6] = d[7] = 0;
	cx_wr64(d + 8, n);
}

/* Compress n bytes of planes (esize planes of n / esize bytes) as esize concatenated frames, one
 * per plane, into at most cap bytes. A frame per plane gives each plane its own Huffman tables
 * (one table fitted to an exponent plane and a noisy mantissa plane at once is what made small
 * chunks worse than big ones: bench_chunk, level 3, BF16 at 128 KiB 1.315 -> 1.416 when planes
 * were first split into blocks) and its own choice of encoding (cx_zstd_plane).
 * Returns the payload's size, 0 if it does not fit in cap, or a negative errno. */
static ssize_t ll_compress_planes(cx_ctx *ctx, ZSTD_CCtx *cctx, uint8_t *dst, size_t cap,
				  const uint8_t *planes, size_t n, unsigned esize, int level)
{
	size_t m = n / esize, pos = 0;

	for (unsigned k = 0; k < esize; k++) {
		ssize_t z = cx_zstd_plane(ctx, cctx, dst + pos, cap - pos, planes + k * m, m,
					  esize == 1 || level > LL_LEVEL_LITERAL);
		if (z <= 0)
			return z;
		pos += (size_t)z;
	}
	return (ssize_t)pos;
}

ssize_t ll_encode(cx_ctx *ctx, void *dst, size_t cap, const void *src, size_t n, unsigned esize,
		  const void *base, int level)
{
	uint8_t *d = dst;
	const uint8_t *planes = src;
	int l2 = ll_log2_esize(esize), mode = LL_GROUPED;
	ZSTD_CCtx *cctx;
	ssize_t z;

	if (!ctx || !d || (!src && n) || l2 < 0 || n % esize || level < ZSTD_minCLevel() ||
	    level > ZSTD_maxCLevel())
		return -EINVAL;
	if (cap < ll_bound(n))
		return -ENOBUFS;
	if (n == 0)
		goto raw;
	if (base)
		mode = ll_pick(src, base, n, l2);
	if (l2 != 0 || mode != LL_GROUPED) {
		uint8_t *p = cx_scratch(ctx, LL_S_PLANES, n);

		if (!p)
			return -ENOMEM;
		ll_split_fns[l2][mode - LL_GROUPED](p, src, base, n / esize);
		planes = p;
	}
	cctx = cx_cctx(ctx);
	if (!cctx)
		return -ENOMEM;
	/* Parameters are sticky in a CCtx; another codec sharing this context may have set some. */
	ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
	if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)))
		return -EINVAL;
	/* Capacity n - 1: a payload that would not be strictly smaller than the chunk is stored
	 * raw; the planes after the one that overflows are not compressed at all. */
	z = ll_compress_planes(ctx, cctx, d + LL_HDR, n - 1, planes, n, esize, level);
	if (z == 0)
		goto raw;
	if (z < 0)
		return z;
	ll_put_header(d, mode, esize, n);
	return LL_HDR + z;
raw:
	ll_put_header(d, LL_RAW, esize, n);
	if (n)
		memcpy(d + LL_HDR, src, n);
	return (ssize_t)(LL_HDR + n);
}

/* Check that a payload is exactly nf zstd frames, each declaring n / nf decoded bytes, so that
 * one ZSTD_decompressDCtx call (which decodes concatenated frames) lays the planes out in place
 * and a hostile blob cannot shift them. */
static int ll_check_frames(const uint8_t *p, size_t plen, unsigned nf, size_t n)
{
	size_t pos = 0;

	for (unsigned k = 0; k < nf; k++) {
		size_t f = ZSTD_findFrameCompressedSize(p + pos, plen - pos);
		if (ZSTD_isError(f) || ZSTD_getFrameContentSize(p + pos, plen - pos) != n / nf)
			return -EBADMSG;
		pos += f;
	}
	return pos == plen ? 0 : -EBADMSG;
}

int ll_decode(cx_ctx *ctx, void *dst, size_t n, const void *blob, size_t blen, const void *base)
{
	const uint8_t *b = blob, *payload;
	uint8_t *planes;
	size_t plen, z;
	int mode, l2;

	if (!ctx || (!dst && n))
		return -EINVAL;
	if (!b || blen < LL_HDR || b[0] != CX_MAGIC || b[1] != CX_LOSSLESS || b[2] < LL_VERSION_MIN ||
	    b[2] > LL_VERSION)
		return -EBADMSG;
	mode = b[3];
	l2 = ll_log2_esize(b[4]);
	if (mode > LL_SUB || l2 < 0 || b[5] || b[6] || b[7] || cx_rd64(b + 8) != n ||
	    n & ((1u << l2) - 1))
		return -EBADMSG;
	payload = b + LL_HDR;
	plen = blen - LL_HDR;
	if (mode == LL_RAW) {
		if (plen != n)
			return -EBADMSG;
		if (n)
			memcpy(dst, payload, n);
		return 0;
	}
	if (mode != LL_GROUPED && !base)
		return -EINVAL;
	/* The encoder never compresses an empty chunk. */
	if (n == 0 || ll_check_frames(payload, plen, b[2] == 1 ? 1 : 1u << l2, n) < 0)
		return -EBADMSG;
	if (l2 == 0 && mode == LL_GROUPED) {
		planes = dst;
	} else {
		planes = cx_scratch(ctx, LL_S_PLANES, n);
		if (!planes)
			return -ENOMEM;
	}
	z = ZSTD_decompressDCtx(ctx->dctx, planes, n, payload, plen);
	if (ZSTD_isError(z))
		return ZSTD_getErrorCode(z) == ZSTD_error_memory_allocation ? -ENOMEM : -EBADMSG;
	if (z != n)
		return -EBADMSG;
	if (planes != dst)
		ll_merge_fns[l2][mode - LL_GROUPED](dst, planes, base, n >> l2);
	return 0;
}

static int ll_needs_base(const uint8_t *b, size_t blen)
{
	if (blen < LL_HDR || b[2] < LL_VERSION_MIN || b[2] > LL_VERSION || b[3] > LL_SUB)
		return -EBADMSG;
	return b[3] == LL_XOR || b[3] == LL_SUB;
}

const struct cx_codec_ops ll_ops = {
	.decode = ll_decode,
	.needs_base = ll_needs_base,
};
