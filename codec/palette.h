/*
 * palette.h -- palette quantization (weight clustering, as in eDKM: Cho et al., arXiv 2309.00964):
 * every weight is replaced by the nearest of K = 2^bits centroids; a chunk stores the K-entry
 * table and one small index per weight. Lossy: for bases of stores that accept a lossy base
 * (`--codec palette --bits 3`), and as the value quantizer of DeltaDQ (`--quantizer palette`).
 *
 * Fitting works on the histogram of distinct values with their counts, never on every element
 * (eDKM's "uniquification"): a 16-bit tensor has at most 65,536 distinct values (a BF16 weight
 * matrix ~5,000), so after one counting pass the fit costs nothing that grows with the tensor.
 * F32 tensors are binned on their top 16 bits (the bf16 truncation, bins of relative width 2^-8),
 * each bin standing for the exact mean of its elements, so cluster means are exact and binning
 * only costs the few elements whose bin straddles a cluster boundary: relative MSE 0.007943
 * binned against 0.007942 on the raw values (charlm F32, b = 4).
 * On the histogram the fit is the optimal 1-D k-means (dynamic programming over the splits of the
 * sorted values, then Lloyd), not Lloyd from an init: quantile and k-means++ inits stop in local
 * optima that lose badly on deltas, whose mass sits in a spike at 0 with long tails. Relative L2
 * error, quantile / k-means++ / optimal: 1 GB q_proj delta b = 4: 0.245 / 0.150 / 0.093, b = 8:
 * 0.063 / 0.0024 / 0.0019; q_proj base b = 3-4: within 0.5% of each other, b = 8: 0.039 / 0.011 /
 * 0.0099. Versus k-means over all 16.7M elements of a 4096 x 4096 BF16 matrix with the same init,
 * Lloyd on the histogram gives the identical table 230-580x faster (b = 2-4); pal_fit itself takes
 * 14-40 ms there (tests/palette/bench_palette.c; figures in palette.c's header).
 *
 * Nearest centroid: x maps to the number of midpoints m_j = (c_j + c_{j+1}) / 2 (in double) below
 * x: a value exactly on a midpoint goes to the lower centroid, and the fit, pal_encode and
 * pal_nearest agree by construction.
 *
 * Blob layout (all little-endian; codec CX_PALETTE; byte 3 = pal_mode):
 *     u8  dtype        DT_BF16, DT_F16 or DT_F32 (dtype.h)
 *     u8  bits         1..8; K = 2^bits
 *     u16 reserved (0)
 *     u64 n            decoded size in bytes (a multiple of the element size)
 *     K centroids      in the tensor's own dtype (2 or 4 bytes each), ascending, finite
 *     payload          PAL_DENSE: the indices packed at `bits` bits each, LSB first, exactly
 *                      ceil(m * bits / 8) bytes for m = n / esize elements, unused bits zero;
 *                      PAL_ZSTD: one zstd frame of the indices packed at w bits each (w = bits
 *                      rounded up to 1, 2, 4 or 8), which decodes to exactly ceil(m * w / 8) bytes,
 *                      every index < K and the unused bits zero.
 * Clusters of weights are far from equally full (3 bits on normal weights: ~2.55 bits of entropy),
 * and zstd's Huffman stage codes byte-aligned fields near that entropy, while 3-bit fields that
 * straddle bytes compress little (2.84 bits/weight, against 2.57 in 4-bit fields). The encoder
 * keeps the smaller payload: at bits = 3, 2.66-2.68 bits per weight on whole base tensors.
 * The table is stored in the tensor's dtype: the decoded values are then exactly the table's, and
 * it saves 2K bytes per chunk against f32 (0.0002 bits per weight at b = 3 in 1 MiB BF16 chunks,
 * 0.008 at b = 8).
 *
 * Errors: 0 (or a byte count) / negative errno, as codec.h. -EDOM means "not for this codec": a
 * NaN or infinity in the input; the caller stores such a tensor lossless.
 */
#ifndef DELTAFS_CODEC_PALETTE_H
#define DELTAFS_CODEC_PALETTE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec.h"
#include "dtype.h"

#define PAL_VERSION 1
#define PAL_HDR (CX_HDR + 12)
#define PAL_MAXBITS 8

typedef enum {
	PAL_DENSE = 0, /* payload = indices packed at `bits` bits */
	PAL_ZSTD = 1,  /* payload = zstd(indices packed at 1, 2, 4 or 8 bits) */
} pal_mode;

/* A palette: k = 2^bits centroids, c[0..k) ascending (ties allowed), finite. */
typedef struct pal_table {
	unsigned bits;
	uint32_t k;
	float c[256];
} pal_table;

/* Weighted 1-D k-means of the values v[0..nv) into K = 2^bits centroids (bits 1..PAL_MAXBITS).
 * count[i] is the weight of v[i] (entries of weight 0 are ignored); count may be NULL (every
 * weight 1). v may be in any order and hold repeats (DeltaDQ's kept delta values of a row or a
 * tensor); strictly ascending v, as pal_fit passes, skips the sort.
 * Method: the optimal split of the sorted distinct values into K ranges by dynamic programming,
 * exact while K x distinct values <= 2^22 and distinct values <= 65,536 (every 16-bit histogram up
 * to K = 64; ~5,000-value BF16 histograms at any K); beyond, the split points are restricted to
 * at most 65,536 (or 2^22 / K) groups of adjacent values, heavy values kept alone, and Lloyd
 * iterations on the full histogram refine the result until no centroid moves (at most 1000).
 * With at most K distinct values the centroids are those values, the last repeated to fill the
 * table; with none (nv == 0 or all weights 0) every centroid is 0.
 * Cost: O(K P log P) for P <= min(65,536, 2^22 / K) split positions, 16 MiB at most for the
 * split table (4M raw samples: ~0.3 s; a BF16 histogram at b = 3: ~1 ms); the unsorted path
 * sorts 16 bytes per weighted sample (radix) plus 28 per distinct value: for large sample sets,
 * pal_fit on F32 bounds memory at ~2 MiB.
 * Deterministic: the same input gives the same table on every IEEE-754 machine evaluating double
 * in double (x86-64, aarch64): fixed operation order, no seeds, and no fused multiply-add
 * (contraction is off in palette.c, whatever the target).
 * Returns 0; -EINVAL (out NULL, v NULL with nv > 0, nv >= 2^32, bits out of range); -EDOM (a
 * weighted value is NaN or infinite); -ENOMEM. */
int pal_fit_values(const float *v, const uint64_t *count, size_t nv, unsigned bits, pal_table *out);

/* The palette of n bytes of a BF16, F16 or F32 tensor (n a multiple of the element size): the
 * histogram of its distinct values (F32: of its top-16-bit bins, each at the mean of its
 * elements) through pal_fit_values, the centroids then rounded to nearest even in dt (so two may
 * coincide). Returns 0; -EINVAL (bad dtype, n, bits, NULL pointers); -EDOM (a NaN or infinity:
 * store the tensor lossless); -ENOMEM. */
int pal_fit(const void *src, size_t n, dt_id dt, unsigned bits, pal_table *out);

/* Index of the centroid of t (k = 2^bits, ascending) nearest to x, ties to the lower one; 0 for
 * NaN. What pal_encode stores for x, given a table already in the chunk's dtype. */
unsigned pal_nearest(const pal_table *t, float x);

/* Largest blob pal_encode can write for n bytes of dtype dt at `bits` bits; 0 for a bad dtype or
 * bits. */
size_t pal_bound(size_t n, dt_id dt, unsigned bits);

/* Encode n bytes of a BF16, F16 or F32 chunk with palette t (typically fitted on the whole tensor
 * and shared by its chunks; each blob carries its own copy). The centroids are first rounded to
 * nearest even in dt (a no-op for pal_fit's tables), and each element gets the nearest rounded
 * one. level: zstd level of PAL_ZSTD (1 packs as small as 3 here, and faster). Returns the blob size (> 0); -EINVAL (bad arguments, t not sorted/finite/of k = 2^bits, or a
 * centroid beyond dt's range); -EDOM (a NaN or infinity in src); -ENOBUFS (cap <
 * pal_bound(n, dt, t->bits)); -ENOMEM. Uses cx's scratch slots 0 and 1 and its zstd context. */
ssize_t pal_encode(cx_ctx *cx, void *dst, size_t cap, const void *src, size_t n, dt_id dt,
		   const pal_table *t, int level);

/* Decode a CX_PALETTE blob into exactly n bytes at dst; base is ignored (a palette blob needs
 * none). Returns 0; -EBADMSG for any malformed or inconsistent blob (never reads or writes out
 * of bounds); -EINVAL; -ENOMEM. After the first call with a chunk of that size, allocates nothing
 * (PAL_ZSTD uses scratch slot 0; PAL_DENSE unpacks straight from the blob). */
int pal_decode(cx_ctx *cx, void *dst, size_t n, const void *blob, size_t blen, const void *base);

/* Read a blob's dtype and table, for `deltafs info` and the tests. Returns 0 or -EBADMSG. */
int pal_blob_table(const void *blob, size_t blen, dt_id *dt, pal_table *t);

#endif
