/*
 * lowrank.h -- transform coding of a delta matrix: a truncated SVD with mixed-precision factors
 * (Delta-CoMe, arXiv 2406.08903; DeltaMix; see ../shared/SEEDS.md).
 *
 * Applies where DeltaDQ does (codec/deltadq.h): a 2-D F32/F16/BF16 matrix W[rows][cols] with a
 * base of the same dtype and shape. Fine-tunes move a matrix mostly along a few directions (a
 * merged LoRA exactly so), and then a rank-r factorisation costs r (rows + cols) numbers where
 * dropout and quantisation of the elements cost a fraction of rows * cols.
 *
 * Method, per matrix (lr_plan):
 *   1. d = ft - base in float; optionally scaled by input-channel weights w[cols] (the root mean
 *      square of each input over calibration rows), so the SVD minimises the layer's output
 *      error ||(d - d') diag(w)|| instead of the Frobenius error of d (activation-aware SVD with
 *      the diagonal of X^T X).
 *   2. The leading singular triples (s_k, u_k, v_k) by LAPACK's sgesdd, of the whole matrix or,
 *      for a large one, of its projection on a randomized range (Halko, Martinsson and Tropp:
 *      Gaussian test matrix, two power iterations, QR by sgeqrf/sorgqr, GEMMs by cblas_sgemm).
 *      Component k is the pair u_k sqrt(s_k), v_k sqrt(s_k) / w, one number per row and column.
 *   3. Component k gets b_k bits (0 = dropped, 1..LR_MAXBITS): each factor quantised by a
 *      symmetric mid-rise uniform quantiser (levels m h, m odd, |m| <= 2^b - 1, h by Lloyd
 *      steps from the Gaussian-optimal step), then one scale c_k for the product fitted by least
 *      squares. The b_k minimise the summed error of the rank-1 terms (each computed exactly
 *      from dot products) at a bit budget: a Lagrangian choice per component, bisected on the
 *      multiplier (reverse water-filling over the singular bands); the budget is then corrected
 *      on the real encoded bytes.
 *   Decode of a chunk of rows: out = round(base + U_chunk diag(c) V) into the dtype.
 *
 * Blobs. A matrix stored in one chunk holds everything in that chunk's blob (LR_INLINE). A
 * matrix of several chunks has one factor blob (LR_FACTORS: the V side, shared by all its
 * chunks: the manifest stores it as the segment's shared chunk) and one blob per chunk with that
 * chunk's rows of U; a chunk decodes with its own blob and the factor blob.
 * Layout, LR_VERSION 1 (little-endian; vu = unsigned LEB128 varint):
 *     u8 CX_MAGIC, u8 CX_LOWRANK, u8 LR_VERSION, u8 mode
 *     mode: bits 0-1 dtype (1 F16, 2 BF16, 3 F32) in a chunk blob, 0 in a factor blob;
 *           LR_INLINE (0x04): a chunk blob with the factor section in it; LR_FACTORS (0x08): a
 *           factor blob (then no other bit); LR_RESID (0x10): a hybrid chunk blob, whose last U
 *           plane carries its length and is followed by a CX_DELTADQ blob (its own header
 *           included) to the end, decoded against the chunk's low-rank result
 *     factor section (a factor blob's body, or an inline chunk blob's, first):
 *       vu cols, vu K (1..min(cols, LR_KMAX)), ceil(K / 2) bytes of widths (b_k - 1 in
 *       nibbles, component 2i in the low one), i8 e, K u16: c_k as F16 numbers times 2^e (finite);
 *       then per width b = 1..LR_MAXBITS held by n_b > 0 components: the plane of those
 *       components' V indices, [n_b][cols] b-bit fields, packed LSB first (codec/plane.c)
 *     chunk section: per width as above, the plane of the chunk's U indices, [nr][n_b] fields,
 *       nr = n / (cols * esize) from the size asked for. Index q stands for m = 2q - (2^b - 1).
 *   Every plane but a blob's last carries its length (cx_put_plane); a factor blob's last plane
 *   is its last V plane.
 * Decode computes, for each row, acc_j = sum over k in order of (c_k m_u) * m_v[k][j] in float,
 * each product rounded then added (the codec library is built with -ffp-contract=off), then
 * round(base_j + acc_j) into the dtype: the same bytes on every machine, so a lossy checkpoint
 * can be the base of another's exact delta.
 *
 * Errors as codec.h; -EDOM: not for this codec (a non-finite value, a zero delta, a difference
 * beyond 2^100, an SVD that did not converge); -ERANGE: the matrix is too small for even one
 * component within the budget. The caller then keeps another candidate.
 */
#ifndef DELTAFS_CODEC_LOWRANK_H
#define DELTAFS_CODEC_LOWRANK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec.h"
#include "deltadq.h"
#include "dtype.h"

#define LR_VERSION 1
#define LR_MAXBITS 8
#define LR_KMAX 1024 /* components a blob may hold */
#define LR_INLINE 0x04
#define LR_FACTORS 0x08
#define LR_RESID 0x10

/* What lr_plan measured on its real encode and decode; bands[b] = components given b bits. */
typedef struct lr_stats {
	double delta_rel_err;   /* ||dW - dW'|| / ||dW|| */
	double output_rel_err;  /* ||X dW^T - X dW'^T|| / ||X W_ft^T||, 0 without probes */
	double bits_per_weight; /* 8 * bytes / (rows * cols) */
	uint64_t bytes;         /* every blob, factor blob included */
	uint32_t rank;          /* components kept */
	uint32_t bands[LR_MAXBITS + 1];
	double frac;            /* the split chosen, of those asked for */
	int hybrid;             /* frac < 1: a DeltaDQ residual in every chunk, with these: */
	dq_params resid;
} lr_stats;

/* The blobs of one planned matrix: nchunks chunk blobs (chunk c = rows [c * crow, ...)), then,
 * when nchunks > 1, the factor blob at index nchunks. All in one malloc'd buffer. */
typedef struct lr_blobs {
	uint8_t *buf;
	size_t nchunks, nblobs; /* nblobs = nchunks + (nchunks > 1) */
	size_t *off, *len;      /* [nblobs] */
} lr_blobs;

void lr_blobs_free(lr_blobs *b);

/* lr_plan's fracs for low-rank alone */
#define LR_ALONE ((const double[]){1})

/* Plan and encode ft[rows][cols] against base (dtype dt, F32/F16/BF16) in chunks of crow rows, in
 * at most `target` bytes of blobs in all: as many components and bits as fit, chosen as the
 * header says. fracs[nfrac] are the splits of the budget to try, each in (0, 1], on the same SVD,
 * keeping the one with the least error (output error with probes, else delta error): 1 is
 * low-rank alone; below 1 a hybrid, the low-rank part in frac * target bytes and DeltaDQ
 * (dq_plan, within its 10%) of what it leaves, ft - round(base + L), in the rest. w[cols] (may be NULL: all 1) weighs input channels in the objective; X[nprobe]
 * [cols] (may be NULL, nprobe 0) are the probe rows output_rel_err is measured on. Fills *out and
 * *st from the real blobs (decoded again to measure). Thread-safe for distinct cx. Returns 0,
 * -EDOM or -ERANGE as the header says, -EINVAL, -ENOMEM. */
int lr_plan(cx_ctx *cx, const void *ft, const void *base, dt_id dt, size_t rows, size_t cols,
	    size_t crow, const float *w, const float *X, size_t nprobe, double target,
	    const double *fracs, size_t nfrac, lr_blobs *out, lr_stats *st);

/* Decode a CX_LOWRANK chunk blob into exactly n bytes at dst given the base rows (n bytes) and,
 * unless the blob is LR_INLINE, its matrix's factor blob (shared, slen). Returns 0, -EBADMSG for
 * any malformed or mismatched blob pair, -EINVAL, -ENOMEM. */
int lr_decode(cx_ctx *cx, void *dst, size_t n, const void *blob, size_t blen, const void *base,
	      const void *shared, size_t slen);

/* Rank and components per width of a chunk blob with its factor blob (as lr_decode takes them),
 * for `deltafs info`. Returns 0 or -EBADMSG. */
int lr_blob_bands(const void *blob, size_t blen, const void *shared, size_t slen, uint32_t *rank,
		  uint32_t bands[LR_MAXBITS + 1]);

#endif
