/*
 * alloc.h -- layer-wise bit allocation for a lossy delta: more bits (a lower compression ratio)
 * for the tensors that matter more, fewer for the rest, with the total on a byte budget.
 *
 * Method (Dumitru et al., arXiv 2406.17415, "layer-wise quantization"; ../shared/SEEDS.md): rank
 * the tensors by an importance score and quantise the important ones with more bits. Scores,
 * higher = more important in al_tensor.score:
 *   LIM  layer input modification: 1 - cos(input, output) of a layer on real activations (needs a
 *        forward pass: tools/charlm.py lim writes one for charlm, any framework's forward hooks
 *        do the same; `deltafs-add --importance FILE` reads it, al_match maps it to tensors);
 *   ZD   z-score distribution: the fraction of a tensor's values with |z| > 1 (al_zd_score, from
 *        the weights alone). The paper ranks by ZD "smaller is better", so the importance is
 *        1 - ZD. Measured on charlm (below), 1 - ZD of the fine-tuned weights orders tensors
 *        better than 1 - ZD of the delta, and costs no base decode before planning: ingest
 *        scores the fine-tuned weights.
 *
 * The allocation (al_allocate), for a budget ratio R over tensors of b_i original bytes:
 *   1. Order the scored tensors by score, most important first, ties together, and place each at
 *      u_i in (0, 1): the fraction of all scored bytes ranked before it plus half its own (ties
 *      share the midpoint of their group). Bytes, not counts, because tensors differ by 10^4 in
 *      size: what the budget feels is how many bytes sit above or below R.
 *   2. Geometric ramp: r_i = c * s^(2 u_i - 1), from about c / s (most important) to c * s,
 *      with s the spread; AL_UNIFORM uses r_i = c for all, AL_REVERSED u_i -> 1 - u_i (the
 *      control: least important first).
 *   3. Clamp r_i to [AL_RATIO_MIN, cap_i], cap_i = min(AL_RATIO_MAX, b_i / (chunks_i *
 *      AL_BLOB_MIN)), and solve c (bisection: the planned bytes are monotone in c) so that
 *      sum b_i / r_i = sum b_i / R. A tensor with no score (NaN) gets R, clamped the same way.
 * Ratios, not bits, because DeltaDQ's dq_plan takes a ratio; a tensor's bits per weight are
 * 8 * esize / r_i, and `deltafs-add --budget B` (bits per delta weight) is
 * R = 8 * sum(b_i) / (B * sum(elements_i)), that is 8 * esize / B for one dtype.
 *
 * Constants, measured with tests/alloc/bench_alloc.c (dq_plan on every changed matrix of
 * ../shared/data/charlm, 63 F32 matrices, and of the 1 GB generated BF16 pair in scratch/dq/):
 *   - AL_RATIO_MIN 4: below 4x dq_plan's output error is not monotone in the ratio on charlm's
 *     F32 matrices (ffwd.net.0 of block 1: 0.171 at 2x, 0.001 at 4x, 0.044 at 6x, 0.019 at 8x),
 *     so a lower ratio does not buy a lower error there.
 *   - AL_RATIO_MAX 512: every 1g matrix lands within 10% up to 512x with its output error at
 *     the level of dropping the delta (0.009), but at 1024x dq_plan's best is 5x worse (0.051),
 *     worse than storing no delta at all.
 *   - AL_BLOB_MIN 32: the smallest DeltaDQ blob of a chunk (header, one level set, the planes).
 *     charlm's 16x64 F32 heads (4 KiB) reach 164x at most (25 bytes): asking for more only
 *     makes dq_plan miss the target, so the ramp stops at the cap and the rest of the budget
 *     goes to the others. A capped tensor may then get more bits than its rank asks for.
 *   - AL_SPREAD 1.5: charlm's KL divergence from the real fine-tune on QA text (tools/charlm.py
 *     eval) for s = 1.25, 1.5, 2, 4 at 16x..64x: 1.5 is best or within noise of it wherever
 *     ordering helps (24x, 48x, 64x; e.g. 48x, 1 - ZD: KL 2.20 / 2.08 / 2.27 for s = 1.25,
 *     1.5, 2, uniform 2.20); s = 4 loses badly at 16x-32x (16x: KL 0.56-0.94 against 0.13
 *     uniform) and gains little at 64x (LIM 2.87 against 2.91).
 *
 * What it buys (the full table: tests/alloc/eval_alloc.sh; KL on charlm, s = 1.5):
 *   - between DeltaDQ's efficient points, importance order beats uniform at equal bytes: 24x KL
 *     0.71 (1 - ZD), 0.70 (LIM) against 0.79; 48x 2.08 / 2.13 against 2.20; 64x 2.89 / 2.91
 *     against 3.03; the same scores reversed do worse at 48x and 64x (2.28 / 2.27, 3.07 / 2.99),
 *     but better at 24x (0.66 both): there any spread helps, whatever its order.
 *   - at 16x and 32x uniform wins (KL 0.13 and 1.02 against 0.20 and 1.26 for 1 - ZD): on F32
 *     deltas those budgets are exactly 2 and 1 bits per weight, where dq_plan keeps every
 *     element with 2- or 1-bit k-means levels, its most efficient setting; any ramp moves
 *     matrices off it, and the loss there outweighs the gain. Measured block sensitivity
 *     (one block at 32x, the rest at 4x: KL 0.08, 0.14, 0.18, 0.21 for blocks 0..3) ordered
 *     by depth still loses there (0.20 and 1.12), so it is the codec's staircase, not the scores.
 *   - the scores are weak predictors: Spearman correlation with the measured sensitivity of each
 *     of the 63 matrices: 1 - ZD(weights) +0.27, 1 - ZD(delta) +0.02, LIM (per block) -0.14.
 *   - on the 1g generated BF16 pair (size-weighted output error, as `deltafs info`): at 16x,
 *     1 bit per weight there, the same efficient point, uniform wins (0.00628 against 0.00650
 *     to 0.00658); at 32x and 64x every order is within 0.5% (0.0085, 0.0092): its delta is
 *     Gaussian noise scaled per layer, and 32x already loses nearly all of it.
 *
 * Integration (deltafs-add --ratio R | --budget B, --importance FILE), for the DeltaDQ matrices:
 *   1. drop from the allocation every matrix equal to its base (it stores no blob and must not
 *      take a share of the budget: charlm's 16 causal-mask buffers would take 55% of it); the
 *      rest are the al_tensor set, in any order, chunks = the segment's chunk count;
 *   2. score each: with FILE, al_match(name, keys) -> that key's number, NaN if no key names it;
 *      without, 1 - z with al_zd_score(ft, NULL, elements, dtype, &z); -EDOM (a non-finite
 *      value): the matrix stays lossless as dq_plan would send it, so leave it out;
 *   3. al_allocate(t, n, R, AL_IMPORTANCE, 0, ratio) once, before any plan (-ERANGE: warn and
 *      go on with the closest allocation it wrote);
 *   4. plan matrix i with dq_plan(..., ratio[i], ...) and keep t[i].score in mf_seg.q.score for
 *      `deltafs info`.
 * The budget is on the DeltaDQ matrices alone: the tensors stored lossless (norms, biases) are
 * the same bytes whatever the allocation.
 *
 * Pure computation over memory; no global state; thread-safe. Errors: 0 / negative errno.
 */
#ifndef DELTAFS_CODEC_ALLOC_H
#define DELTAFS_CODEC_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#define AL_RATIO_MIN 4.0   /* lowest ratio al_allocate gives (see above) */
#define AL_RATIO_MAX 512.0 /* highest */
#define AL_BLOB_MIN 32     /* bytes: the smallest DeltaDQ blob of one chunk */

/* Ramp spread s: the most important tensor gets about R / s, the least R * s. */
#define AL_SPREAD 1.5

typedef enum {
	AL_IMPORTANCE = 0, /* higher score -> lower ratio (more bytes, more bits) */
	AL_UNIFORM = 1,    /* every tensor at the budget ratio (clamps aside) */
	AL_REVERSED = 2,   /* higher score -> higher ratio: the control for the evidence */
} al_order;

typedef struct al_tensor {
	uint64_t bytes;  /* original bytes (elements * element size), > 0 */
	uint32_t chunks; /* blobs the tensor is stored in; 0 counts as 1 (caps its ratio) */
	double score;    /* importance, higher = more important; NaN: none (gets the budget ratio) */
} al_tensor;

/* ZD score of n elements of dtype dt (DT_F32, DT_F16 or DT_BF16) at w: the fraction of them with
 * |x - mean| > std (population std, over all n), where x = w[i], or w[i] - base[i] if base is not
 * NULL (same dtype and count: the delta of a fine-tune). A constant x scores 0. The importance
 * for al_tensor.score is 1 - ZD (header).
 * Returns 0 and sets *score in [0, 1]; -EINVAL (NULL w or score, n == 0, other dtype); -EDOM (a
 * non-finite value; *score untouched). */
int al_zd_score(const void *w, const void *base, size_t n, dt_id dt, double *score);

/* Target ratio ratio_out[i] (original bytes / stored bytes) for each of the n tensors t[i], for a
 * budget ratio R = budget_ratio over them all: sum t[i].bytes / ratio_out[i] equals (to 1e-9
 * relative) sum t[i].bytes / R. Each ratio lies in [AL_RATIO_MIN, cap_i] (header). With
 * AL_IMPORTANCE, ratios are non-decreasing as scores decrease (equal scores, equal ratios) except
 * where a tensor sits at its cap_i; AL_REVERSED the opposite; AL_UNIFORM gives every tensor one
 * ratio, R when no clamp binds. spread: the ramp's s (>= 1; 0 = AL_SPREAD); 1 makes every order
 * uniform. Scores of AL_UNIFORM are ignored.
 * Returns 0; -ERANGE when the clamps make R unreachable (R below AL_RATIO_MIN, or above what the
 * caps allow): ratio_out then holds the closest allocation (every scored tensor at the bound);
 * -EINVAL (n == 0, NULL pointer, a tensor of 0 bytes, budget_ratio not finite or <= 1, spread
 * not finite, negative, or in (0, 1), unknown order, an infinite score). */
int al_allocate(const al_tensor *t, size_t n, double budget_ratio, al_order order, double spread,
		double *ratio_out);

/* The key of an importance file that names tensor `name`: the key equal to it, else the longest
 * key that is a prefix of it ending where a '.' follows in name ("blocks.3" names
 * "blocks.3.ffwd.net.0.weight"; "blocks.3" does not name "blocks.30.x"). Returns the key's index
 * in keys[0..nkeys), or -ENOENT when none names it; -EINVAL for a NULL name or keys with nkeys. */
int al_match(const char *name, const char *const *keys, size_t nkeys);

#endif
