/*
 * alloc.h -- layer-wise bit allocation for a lossy delta: more bits (a lower compression ratio)
 * for the tensors that matter more, fewer for the rest, with the total on a byte budget.
 *
 * Scores (Dumitru et al., arXiv 2406.17415, "layer-wise quantization"; ../shared/SEEDS.md),
 * higher = more important in al_tensor.score:
 *   LIM  layer input modification: 1 - cos(input, output) of a layer on real activations (needs a
 *        forward pass: tools/charlm.py lim writes one for charlm, any framework's forward hooks
 *        do the same; `deltafs-add --importance FILE` reads it, al_match maps it to tensors);
 *   ZD   z-score distribution: the fraction of a tensor's values with |z| > 1 (al_zd_score, from
 *        the weights alone). The paper ranks by ZD "smaller is better", so the importance is
 *        1 - ZD of the fine-tuned weights (better than of the delta on charlm, and no base decode
 *        before planning).
 *
 * Method: rate-distortion curves measured by the codec, chosen by a Lagrange multiplier.
 *   1. Ladder (al_ladder): each matrix is planned by dq_plan (real encode + decode) at the
 *      ratios 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512 that lie within
 *      [R / AL_WINDOW, R * AL_WINDOW], and at R itself, so the uniform point is always there;
 *      each clamped to [AL_RATIO_MIN, cap_i]. A point is (bytes_i, output_rel_err_i) as measured.
 *   2. Distortion (al_dist): d = b_i * err_i^2, the squared output error of the matrix as if every
 *      weight carried the same energy. Squared, because independent errors add in squares at a
 *      layer's output; per byte of the original, because a 4 KiB head must not weigh as much as
 *      a 64 KiB feed-forward matrix. Measured on charlm (full ladder, no weights, equal bytes to
 *      uniform, KL below): b err^2 gave KL 0.204 / 0.549 / 1.253 at 16x / 24x / 32x, b err 0.230
 *      / 0.871 / 1.421, err^2 ||X W_ft||^2 on the probes 0.180 / 1.023 / -, err alone 1.61 / 2.85
 *      / 3.74 (it starves the large matrices).
 *   3. Weights (al_weights): w_i = s^(1 - 2 u_i), u_i the byte-weighted rank of the score (the
 *      fraction of scored bytes ranked before the tensor plus half its own; ties share it), from
 *      s (most important) to 1 / s; AL_REVERSED mirrors the rank, AL_UNIFORM and unscored
 *      tensors weigh 1. Rank, not the raw score: 1 - ZD spans 0.64..0.69 on charlm (raw weights
 *      are all but equal: KL 0.232 importance vs 0.235 reversed at 16x), LIM per block 0.25..0.54.
 *   4. Choice (al_choose): on each matrix's lower convex hull of (bytes, w_i d), one point each
 *      at an equal marginal weighted distortion per byte. The hull segments of all matrices are
 *      taken in falling slope (lowering the multiplier from infinity) while they fit in the budget
 *      sum b_i / R; a matrix whose next segment does not fit stops there and the others' smaller
 *      steps fill the rest. Every choice of hull vertices that equal slopes give is optimal for
 *      its byte total (tests/alloc: brute force on a hand-made set). The total never exceeds the
 *      budget and lands within AL_BUDGET_TOL below it unless one matrix's ladder step is a large
 *      part of the budget (-ERANGE then: the closest choice is kept).
 *   Uniform (al_uniform) plans every matrix once, at R (clamps aside); the curve choice costs a
 *   dq_plan per ladder point (5 at AL_WINDOW 2) and reuses the chosen point's plan for the encode.
 * Ratios, not bits, because dq_plan takes a ratio; a tensor's bits per weight are 8 * esize / r_i,
 * and `deltafs-add --budget B` (bits per delta weight) is R = 8 * sum(b_i) / (B * sum(elements_i)).
 *
 * Constants, measured with tests/alloc/bench_alloc.c (dq_plan on every changed matrix of
 * ../shared/data/charlm, 63 F32 matrices, and of the 1 GB generated BF16 pair in scratch/dq/):
 *   - AL_RATIO_MIN 4: below 4x dq_plan's output error is not monotone in the ratio on charlm's
 *     F32 matrices (ffwd.net.0 of block 1: 0.171 at 2x, 0.001 at 4x, 0.044 at 6x, 0.019 at 8x).
 *   - AL_RATIO_MAX 512: every 1g matrix lands within 10% up to 512x with its output error at
 *     the level of dropping the delta (0.009), but at 1024x dq_plan's best is 5x worse (0.051).
 *   - AL_BLOB_MIN 32: the smallest DeltaDQ blob of a chunk (header, one level set, the planes);
 *     charlm's 16x64 F32 heads (4 KiB) reach 164x at most, so their ladder stops at the cap.
 *   - AL_SPREAD 2: KL on charlm (full ladder, b err^2) for s = 1, 2, 4, 16 with 1 - ZD: 16x
 *     0.204 / 0.193 / 0.307 / 0.783, 24x 0.549 / 0.816 / 1.020 / 1.695, 32x 1.253 / 1.466 /
 *     1.859 / 2.093 (uniform 0.127, 0.742, 0.973). Larger spreads lose everywhere: the scores are
 *     weak predictors of a matrix's effect on the model (Spearman with the measured sensitivity:
 *     1 - ZD +0.27, LIM -0.14). s = 1 (scores ignored) is as good or better at 24x and 32x; 2 is
 *     the smallest spread measured at which the scores still order the bits.
 *   - AL_WINDOW 2 (5 ladder points at 32x): planning cost; the full ladder (15 points, 3x the
 *     time) did worse (1 - ZD, s = 2: KL 0.173 / 0.729 / 1.273 at 16x / 24x / 32x against 0.193 /
 *     0.816 / 1.466 with the full ladder).
 *
 * What it buys (tests/alloc/eval_alloc.sh, equal bytes: the budget is what uniform stores;
 * importance and reversed rows: 1 - ZD / LIM):
 *   charlm  R   uniform KL (out err)   importance KL (out err)           reversed KL
 *           16  0.127 (0.0778)         0.173 (0.0703) / 0.156 (0.0726)   0.157 / 0.192
 *           24  0.742 (0.1185)         0.729 (0.1034) / 0.557 (0.1036)   0.650 / 0.645
 *           32  0.973 (0.1307)         1.273 (0.1283) / 1.283 (0.1304)   1.019 / 1.139
 *           48  2.091 (0.1579)         2.018 (0.1509) / 1.980 (0.1515)   2.110 / 2.008
 *           64  2.873 (0.1714)         2.679 (0.1651) / 2.611 (0.1662)   2.865 / 2.762
 *   The curves lower the matrices' size-weighted output error against uniform at every ratio
 *   (its own objective, up to the weights), but the model's KL only at 24x, 48x and 64x. At 16x
 *   and 32x (2 and 1 bits per F32 weight) uniform keeps every matrix at DeltaDQ's most efficient
 *   point (every element kept, 2- or 1-bit k-means levels) and any reallocation loses more KL
 *   than the Gaussian-probe output error says. Importance beats reversed at 24x (LIM), 48x and
 *   64x, not at 16x (1 - ZD) or 32x. So uniform stays the default.
 *   1g (scratch/dq, 58 BF16 matrices, delta 0.01; size-weighted output error, 1 - ZD weights):
 *           R   uniform    importance   reversed
 *           16  0.00628    0.00608      0.00610
 *           32  0.00848    0.00781      0.00793
 *           64  0.00921    0.00904      0.00907
 *   There the curves lower the error 3% / 8% / 2% against uniform and importance beats reversed
 *   at every ratio, by less than the curves' own gain (its delta is Gaussian noise scaled per
 *   layer: the scores barely tell its matrices apart). No KL: it is not a model one can run.
 * Cost: `deltafs-add --ratio 32 --alloc importance` takes 7.3 s on charlm against 1.1 s uniform
 * (2 shared cores), 77 s (142 s CPU) on the 1g pair against 49 s (42 s CPU) with the old ramp.
 *
 * Integration (deltafs-add --ratio R | --budget B, --alloc, --importance FILE; index/ingest.c):
 *   1. drop from the allocation every matrix equal to its base (it stores no blob and must not
 *      take a share of the budget: charlm's 16 causal-mask buffers would take 55% of it);
 *   2. score each: with FILE, al_match(name, keys) -> that key's number, NaN if no key names it;
 *      without, 1 - z with al_zd_score(ft, NULL, elements, dtype, &z) (-EDOM: NaN);
 *   3. uniform: al_uniform once, before any plan, and one dq_plan per matrix at its ratio;
 *      importance / reversed: al_weights; each matrix's plan unit runs dq_plan at every
 *      al_ladder ratio (-EDOM: the matrix stays lossless and leaves the budget); the last plan
 *      unit to finish calls al_choose over all (budget sum b_i / R over the DeltaDQ matrices)
 *      and releases the chunk units, which encode with the chosen point's parameters;
 *   4. t[i].score goes to mf_seg.q.score for `deltafs info`, with the chosen point's bits and
 *      errors. -ERANGE from al_uniform or al_choose counts as one plan off target.
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

#define AL_RATIO_MIN 4.0   /* lowest ratio a matrix is planned at (see above) */
#define AL_RATIO_MAX 512.0 /* highest */
#define AL_BLOB_MIN 32     /* bytes: the smallest DeltaDQ blob of one chunk */
#define AL_SPREAD 2.0      /* weight spread s: weights run from s (most important) to 1 / s */
#define AL_WINDOW 2.0      /* the ladder spans R / AL_WINDOW .. R * AL_WINDOW */
#define AL_LADDER_MAX 16   /* most ratios al_ladder gives */
#define AL_BUDGET_TOL 0.05 /* al_choose: -ERANGE when the total lands further below the budget */

typedef enum {
	AL_IMPORTANCE = 0, /* higher score -> larger weight (its error counts more: more bytes) */
	AL_UNIFORM = 1,    /* every tensor at the budget ratio (clamps aside) */
	AL_REVERSED = 2,   /* higher score -> smaller weight: the control for the evidence */
} al_order;

typedef struct al_tensor {
	uint64_t bytes;  /* original bytes (elements * element size), > 0 */
	uint32_t chunks; /* blobs the tensor is stored in; 0 counts as 1 (caps its ratio) */
	double score;    /* importance, higher = more important; NaN: none (weight 1) */
} al_tensor;

/* One measured point of a tensor's rate-distortion curve: dq_plan's real bytes at one ladder
 * ratio and its (unweighted) distortion, al_dist of its output error. */
typedef struct al_point {
	uint64_t bytes;
	double dist; /* >= 0, finite */
} al_point;

/* ZD score of n elements of dtype dt (DT_F32, DT_F16 or DT_BF16) at w: the fraction of them with
 * |x - mean| > std (population std, over all n), where x = w[i], or w[i] - base[i] if base is not
 * NULL (same dtype and count: the delta of a fine-tune). A constant x scores 0. The importance
 * for al_tensor.score is 1 - ZD (header).
 * Returns 0 and sets *score in [0, 1]; -EINVAL (NULL w or score, n == 0, other dtype); -EDOM (a
 * non-finite value; *score untouched). */
int al_zd_score(const void *w, const void *base, size_t n, dt_id dt, double *score);

/* Uniform allocation: ratio_out[i] for each of the n tensors t[i] at a budget ratio R =
 * budget_ratio, R itself for all when no clamp binds; else the tensors below their cap share what
 * the capped ones leave, so that sum t[i].bytes / ratio_out[i] equals (to 1e-9 relative)
 * sum t[i].bytes / R. Each ratio lies in [AL_RATIO_MIN, cap_i] (header).
 * Returns 0; -ERANGE when the clamps make R unreachable (ratio_out then holds the closest, every
 * tensor at the bound); -EINVAL (n == 0, NULL pointer, a tensor of 0 bytes, budget_ratio not
 * finite or <= 1). */
int al_uniform(const al_tensor *t, size_t n, double budget_ratio, double *ratio_out);

/* The ratios to plan tensor t at for a budget ratio R: those of the ladder 4, 6, 8, 12, ..., 384,
 * 512 within [R / window, R * window] (window 0: AL_WINDOW; INFINITY: all), and R itself, each
 * clamped to [AL_RATIO_MIN, cap], ascending, without duplicates, into ratios[0..AL_LADDER_MAX).
 * Returns how many (>= 1), 0 for bad arguments (NULL, R not finite or <= 1, window < 0 or NaN). */
size_t al_ladder(const al_tensor *t, double budget_ratio, double window, double *ratios);

/* Weight of each tensor by its score's byte-weighted rank u_i in (0, 1) (header):
 * AL_IMPORTANCE s^(1 - 2 u_i), AL_REVERSED s^(2 u_i - 1), AL_UNIFORM 1; equal scores share the
 * midpoint of their group; an unscored (NaN) tensor weighs 1. spread: s (>= 1; 0 = AL_SPREAD).
 * Returns 0; -EINVAL (n == 0, NULL, a tensor of 0 bytes, an infinite score, spread not finite,
 * negative or in (0, 1), unknown order); -ENOMEM. */
int al_weights(const al_tensor *t, size_t n, al_order order, double spread, double *w);

/* Distortion of a point for al_point.dist from dq_stats.output_rel_err: orig_bytes * err^2, the
 * squared output error as if every weight carried the same energy (header: why squared). */
static inline double al_dist(double output_rel_err, uint64_t orig_bytes)
{
	return (double)orig_bytes * output_rel_err * output_rel_err;
}

/* One point per tensor (pick[i] indexes pts[i][0..npts[i])) that minimises the sum of
 * w[i] * dist over the lower convex hulls of the curves with sum bytes <= budget (bytes), by equal
 * marginal weighted distortion per byte (header). Returns 0; -ERANGE when the cheapest points
 * already exceed the budget (pick then holds them) or the total lands more than AL_BUDGET_TOL
 * below it (every tensor at its richest point); -EINVAL (NULL, n == 0, a tensor without points,
 * a weight not finite and > 0, a distortion not finite and >= 0, budget not finite and > 0);
 * -ENOMEM. */
int al_choose(const al_point *const *pts, const size_t *npts, const double *w, size_t n,
	      double budget, size_t *pick);

/* The key of an importance file that names tensor `name`: the key equal to it, else the longest
 * key that is a prefix of it ending where a '.' follows in name ("blocks.3" names
 * "blocks.3.ffwd.net.0.weight"; "blocks.3" does not name "blocks.30.x"). Returns the key's index
 * in keys[0..nkeys), or -ENOENT when none names it; -EINVAL for a NULL name or keys with nkeys. */
int al_match(const char *name, const char *const *keys, size_t nkeys);

#endif
