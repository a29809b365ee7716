/*
 * deltadq.h -- DeltaDQ: lossy delta of a fine-tuned weight matrix against its base, by group-wise
 * dropout and separate quantization (Jiang et al., arXiv 2410.08666; see ../shared/SEEDS.md).
 *
 * Applies to 2-D matrices W[rows][cols] (safetensors [out, in], y = W x) of dtype F32, F16 or BF16
 * that have a base of the same dtype and shape. Everything else stays lossless.
 *
 * Method, per matrix (dq_plan chooses the parameters, dq_encode writes one chunk of whole rows):
 *   1. delta d = ft - base, in float.
 *   2. Group-wise dropout: each row is cut into groups of `group` consecutive input elements (the
 *      last group of a row may be shorter, length L); exactly `keep` of each full group are kept,
 *      ceil(keep * L / group) of a short one. The kept positions come from a keyed bijection of
 *      the group's indices (deltadq.c, dq_positions) keyed by (seed, absolute row, group index),
 *      so they cost nothing on disk and any chunk decodes alone.
 *      Kept values are multiplied by (L / kept)^a: a = 1 keeps the expected product (DARE's
 *      rescale); the plan also tries a = 1/2 and 0 because, for uncorrelated terms, the unbiased
 *      rescale adds variance (the squared output error grows by (1/q - 1) of the delta's instead
 *      of (1 - q)), and picks by measured output error. The factor is folded into the levels: it
 *      costs no byte.
 *   3. Quantization of the kept values to `bits` bits, one level set per `srows` rows:
 *      DQ_Q_UNIFORM: 2^bits evenly spaced levels from the set's min to max (stored min, step);
 *      DQ_Q_ZERO:    2^bits - 1 levels j * step around an exact zero, the step that minimises the
 *                    squared error (only the step is stored); at 1 bit the signs, +-mean |d|
 *                    (BitDelta's quantiser, with one scale per level set);
 *      DQ_Q_KMEANS:  2^bits levels by 1-D k-means (Lloyd on the sorted values with prefix sums,
 *                    so one iteration is O(2^bits log n)); stored as a table of levels.
 *   Support mode (dq_params.support, blob flag DQ_SUPPORT), for a pruned base whose fine-tune
 *      keeps its zeros (SPP, ../shared/SEEDS.md; the zero rule of codec/spp.h: +-0.0): in each row
 *      the elements where the base is not a zero form the row's support, in order, and steps 2-3
 *      run over the support instead of the row: groups of `group` support elements (the last one
 *      of a row shorter), kept positions drawn among them, set sizes summed over rows. Decode
 *      derives the support from the base rows it is given, so no mask is stored, and writes the
 *      base's bits (its exact zero) everywhere off the support: every zero of the base stays
 *      exactly that zero at any ratio. Rows then keep different counts, all known from the base.
 *      A fine-tune that breaks zeros loses those elements' deltas (ingest uses the mode only
 *      when it breaks none).
 *   4. Separate quantization: the level indices are split into a high plane (bits - lo bits
 *      each) and a low plane (lo bits each), each packed densely and zstd-compressed on its own
 *      (or stored raw when zstd does not shrink it), so each plane gets its own entropy table.
 *      The encoder tries lo = 0 (one plane) and lo = bits / 2 and keeps the smaller.
 *
 * The choices and their figures are at the top of deltadq.c (measured with
 * tests/deltadq/bench_deltadq.c).
 *
 * Blob layout, DQ_VERSION 2 (all little-endian; vu = unsigned LEB128 varint, at most 10 bytes).
 * Small matrices decide the layout: a 16x64 F32 attention head at 128x is a 32-byte blob, so every
 * byte of header is a kept sign less (version 1 spent ~26 bytes on header and levels there).
 *     u8 CX_MAGIC, u8 CX_DELTADQ, u8 DQ_VERSION
 *     u8 mode: bits 0-1 quantizer (DQ_Q_UNIFORM, _KMEANS, _ZERO), bits 2-3 dtype (1 F16, 2 BF16,
 *        3 F32), 0x10 DQ_F_DROP (group, keep follow), 0x20 DQ_F_SETS (srows follows), 0x40
 *        DQ_F_KEY (r0, seed follow), DQ_SUPPORT (0x80) in support mode
 *     u8 (bits - 1) | lo << 4 (bits 1..16; DQ_Q_KMEANS: 1..DQ_KMEANS_MAXBITS; lo 0..bits-1)
 *     vu cols; [vu group (2..DQ_GROUP_MAX), vu keep (1..group-1)] if DQ_F_DROP, else no dropout;
 *        [vu srows] if DQ_F_SETS, else one level set for the chunk; [vu r0, vu seed] if DQ_F_KEY,
 *        else both 0 (the encoder sets each flag exactly when the field is not its default).
 *        The chunk's rows are not stored: nr = n / (cols * esize) from the size the decoder is
 *        asked for.
 *     i8 e: level values are F16 numbers times 2^e (the encoder puts its largest kept value at
 *        2^12..2^13 in F16); above 8 bits they are f32 instead (a 16-bit uniform min and step
 *        need the precision) and e is unused
 *     levels: for each of ceil(nr / srows) sets (in support mode a set whose rows have no
 *        support has levels too, unused, written as zeros): UNIFORM: min, step; ZERO: the step
 *        (levels (j - K) * step, K = 2^(bits-1) - 1; at 1 bit +-step: signs); KMEANS: 2^bits
 *        levels, ascending
 *     hi plane, then lo plane if lo > 0. A plane followed by another: vu clen, then clen bytes of
 *        one zstd frame, or, if clen == 0, the plane raw. The last plane: the rest of the blob,
 *        raw if exactly the plane's size, else one zstd frame. A plane's decoded size follows
 *        from the fields above (in support mode with the base rows: a blob that does not match
 *        them is -EBADMSG)
 * and nothing after. Version 1 blobs still decode: the same mode byte with bits 2-6 clear, then
 * u8 dtype, u8 bits, u8 lo, vu cols, r0, nr, group, keep, srows, seed, f32 levels (ZERO as min,
 * step), and every plane with its clen.
 * Decoding writes, for each kept position, round(base + level[index]) into the dtype
 * (round-to-nearest-even from the float sum; F32 adds in float) and copies the base's bit pattern
 * everywhere else. A uniform or zero level is (float)(min + j * step) in double, where min and
 * j * step are exact, so the value is the same with or without fused multiply-add; an F16 level
 * times 2^e is one exactly rounded product: decode gives the same bytes on every machine.
 *
 * Errors: 0 (or a byte count) / negative errno, as codec.h. -EDOM means "not for this codec":
 * a non-finite value in ft or base, a difference beyond 2^100 in magnitude (it could overflow a
 * level's step), or an empty matrix. The caller then stores the tensor lossless.
 */
#ifndef DELTAFS_CODEC_DELTADQ_H
#define DELTAFS_CODEC_DELTADQ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec.h"
#include "dtype.h"

#define DQ_VERSION 2
#define DQ_GROUP_MAX 1024    /* largest dropout group */
#define DQ_KMEANS_MAXBITS 8  /* a k-means level table holds 2^bits f32 */
#define DQ_SUPPORT 0x80      /* header byte 3: support mode (the quantizer is the low bits) */

/* DQ_Q_PALETTE: encoder only, chosen only when asked for: levels fitted by codec/palette.h's
 * optimal split instead of Lloyd from quantiles, stored as a DQ_Q_KMEANS table. */
enum { DQ_Q_AUTO = 0, DQ_Q_UNIFORM = 1, DQ_Q_KMEANS = 2, DQ_Q_ZERO = 3, DQ_Q_PALETTE = 4 };        /* quant */
enum { DQ_RESCALE_AUTO = 0, DQ_RESCALE_FULL = 1, DQ_RESCALE_HALF = 2, DQ_RESCALE_NONE = 3 }; /* rescale */
#define DQ_SPLIT_AUTO 0 /* split: 0 = the encoder keeps the smaller; else 1 + lo (1 = one plane) */

/* Parameters of one matrix. In dq_plan's `fixed`, a zero field means "choose"; in dq_encode every
 * field must be set except split and rescale (AUTO: smaller of the two splits; full rescale). */
typedef struct dq_params {
	uint32_t group;  /* dropout group size along a row, 1..DQ_GROUP_MAX */
	uint32_t keep;   /* kept per full group, 1..group (keep == group: no dropout) */
	float keep_frac; /* dq_plan only: fixes keep = max(1, round(keep_frac * group)) for whatever
			    group it picks; (0, 1]; 1 = no dropout (`--drop P` is 1 - P) */
	uint8_t bits;    /* bits per kept value */
	uint8_t quant;   /* DQ_Q_UNIFORM, DQ_Q_KMEANS (bits <= 8) or DQ_Q_ZERO */
	uint8_t split;   /* DQ_SPLIT_AUTO or 1 + bits of the low plane */
	uint8_t rescale; /* DQ_RESCALE_*: exponent a = 1, 1/2, 0 of the (L / kept) factor */
	uint32_t srows;  /* rows sharing one level set (capped at the chunk's rows) */
	uint32_t seed;   /* dropout PRNG seed */
	uint32_t support; /* 1: support mode (groups over the base's non-zeros only); 0: dense. In
			     dq_plan's `fixed` set by the caller and kept as given, not chosen */
} dq_params;

/* Quality and size of one matrix as dq_plan measured it on the real encode + decode. */
typedef struct dq_stats {
	double delta_rel_err;   /* ||dW - dW'|| / ||dW|| (0 if dW == 0) */
	double output_rel_err;  /* ||X dW^T - X dW'^T|| / ||X W_ft^T|| (0 without probes) */
	double bits_per_weight; /* 8 * bytes / (rows * cols) */
	uint64_t bytes;         /* sum of the blob sizes of every chunk, headers included */
} dq_stats;

/* Rows per chunk for a matrix with `cols` columns of esize-byte elements: about 256 KiB of
 * original bytes (so the mount decodes little per read), at least 1. Chunk c is rows
 * [c * dq_chunk_rows, ...) and dq_plan counts bytes over exactly these chunks. */
size_t dq_chunk_rows(size_t cols, unsigned esize);

/* Choose parameters for the whole matrix ft[rows][cols] against base (same dtype dt, same shape)
 * so that rows * cols * esize / (bytes of all chunk blobs) is within 10% of `ratio`, with the
 * smallest output error on the probe rows X[nprobe][cols] (row-major; Gaussian or calibration
 * inputs; with nprobe == 0 the delta error is minimised instead). Fields of `fixed` (may be NULL)
 * that are non-zero are kept as given; with group, keep (or keep_frac) and bits all fixed, ratio
 * is ignored (may be 0). Fills *out (ready for dq_encode) and *st from the real encode and decode
 * of every chunk. Thread-safe for distinct cx; no global state.
 * Returns 0; -EDOM (non-finite value, or rows or cols 0: store the tensor lossless); -ERANGE when
 * no choice lands within 10% of ratio (*out and *st then hold the closest one found); -EINVAL
 * (bad arguments: dtype not F32/F16/BF16, ratio <= 1 with something left to choose, fixed fields
 * out of range); -ENOMEM. */
int dq_plan(cx_ctx *cx, const void *ft, const void *base, dt_id dt, size_t rows, size_t cols,
	    const float *X, size_t nprobe, double ratio, const dq_params *fixed, dq_params *out,
	    dq_stats *st);

/* Largest blob dq_encode can write for a chunk of nr rows of `cols` esize-byte elements. */
size_t dq_bound(size_t nr, size_t cols, unsigned esize);

/* Encode rows r0..r0+nr-1 of a matrix with `cols` columns: ft and base point at those rows
 * (nr * cols elements of dtype dt each). Returns the blob size (> 0); -EDOM (non-finite value);
 * -EINVAL (bad params, nr or cols 0); -ENOBUFS (cap too small; cap >= dq_bound always fits);
 * -ENOMEM. Uses cx's scratch buffers and compression context. */
ssize_t dq_encode(cx_ctx *cx, void *dst, size_t cap, const void *ft, const void *base, dt_id dt,
		  size_t cols, size_t r0, size_t nr, const dq_params *p);

/* Decode a CX_DELTADQ blob into exactly n = nr * cols * esize bytes at dst, given the decoded base
 * rows (n bytes). Returns 0, -EBADMSG for any malformed or inconsistent blob (never reads or
 * writes out of bounds), -EINVAL (base NULL), -ENOMEM. After the first call with a given chunk
 * shape, allocates nothing. */
int dq_decode(cx_ctx *cx, void *dst, size_t n, const void *blob, size_t blen, const void *base);

/* Fill p (all fields) from a blob's header, for `deltafs info`: fields a version 2 blob leaves out
 * come back as what encodes the same (no dropout: group = keep = DQ_GROUP_MAX; one level set per
 * chunk: srows = UINT32_MAX). Returns 0 or -EBADMSG. */
int dq_blob_params(const void *blob, size_t blen, dq_params *p);

#endif
