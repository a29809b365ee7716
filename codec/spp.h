/*
 * spp.h -- sparsity-preserving deltas: a fine-tune of a pruned base stored on the base's support.
 *
 * A pruned base (unstructured 50-75 %, or N:M such as 2:4) is fine-tuned by methods like SPP
 * (../shared/SEEDS.md) that keep its zeros: dW = W (.) M is zero wherever W is. The delta then
 * lives only on the base's support, and since the decoder has the base, the support costs nothing
 * on disk: no mask bits, only the support's deltas in support order. A fine-tune that breaks some
 * of the base's zeros (an ordinary dense fine-tune of a pruned base) is still stored byte-exact:
 * the off-support elements that differ from the base are exceptions.
 *
 * Zero rule: an element is a zero of the base when its bits, sign bit excepted, are all zero. For
 * every IEEE-like float type (F8_E5M2, F8_E4M3, F16, BF16, F32, F64) that is exactly "== 0.0",
 * both +0.0 and -0.0: torch.nn.utils.prune multiplies by a 0/1 mask, which leaves -0.0 where a
 * negative weight was pruned, and such a base is as sparse as one pruned to +0.0 (SparseGPT and
 * Wanda assign 0). The codec works on element sizes, not dtypes, so for integer data it also
 * counts the most negative value (0x80, 0x8000...) as a zero; that costs exactness nothing, since
 * an off-support element is copied from the base bit for bit and any difference is an exception.
 * The codec is meant for float tensors; spp_measure, which knows the dtype, counts only the real
 * zeros of integer types.
 *
 * Exactness: decoding copies the base's zero bit pattern (+0.0 or -0.0 as the base has it) to every
 * off-support element that is not an exception, so a fine-tune that keeps the base's zeros gets
 * them back exactly; a fine-tune whose zero has the other sign than the base's is an exception,
 * still decoded bit-exactly.
 *
 * Blob layout (little-endian; codec CX_SPP; byte 3 = spp_xmode):
 *     u8  esize          element size in bytes (1, 2, 4, 8)
 *     u8  reserved (0)
 *     u16 reserved (0)
 *     u64 n              decoded size in bytes
 *     u64 slen           size of the support blob
 *     support blob       a CX_LOSSLESS blob (lossless.h) of s * esize bytes: the fine-tune's
 *                        elements on the base's support (s of them, in order), encoded by
 *                        ll_encode against the base's support elements packed the same way
 *   then, by mode:
 *     SPP_X_NONE         nothing: every off-support element equals the base's
 *     SPP_X_LIST         u64 count (1 .. off-support elements), u64 plen, then
 *                        a CX_LOSSLESS blob of plen bytes: count gaps, each w bytes, where the
 *                        k-th exception is the (g_0 + ... + g_k + k)-th off-support element
 *                        (w = 2 for at most 2^16 off-support elements, 4 up to 2^32, else 8:
 *                        the high byte planes are zero and cost zstd nothing), then
 *                        a CX_LOSSLESS blob (the rest) of count * esize bytes: the fine-tune's bit
 *                        patterns at those positions XOR the base's
 *     SPP_X_FULL         a CX_LOSSLESS blob (the rest) of every off-support element of the
 *                        fine-tune XOR the base's, in order: cheaper than a list when most zeros
 *                        are broken
 * and nothing after. Every field is checked on decode against the sizes the base implies.
 * Exception values are XORed with the base's zero so that a zero whose sign flipped is one
 * constant pattern (the sign bit), which zstd stores in nothing; a broken zero is unchanged by it.
 *
 * Measured (tests/spp/bench_spp.c, 256 KiB chunks, zstd 3; pairs from tests/data/genpruned.py,
 * magnitude-pruned 50 % or 2:4, SPP fine-tunes with ||dW||/||W|| = 0.05; bytes of the changed
 * tensors, as (i) ll_encode against the base -> (ii) spp_encode):
 *     charlm (real F32, 196,608 pruned weights)  50 %: 371,282 -> 264,051 (+40.6 %)
 *                                                 2:4: 355,736 -> 264,019 (+34.7 %)
 *     generated BF16, 25.7 M pruned weights      50 %: 12.35 MB -> 8.01 MB (+54.3 %)
 *                                                 2:4: 12.46 MB -> 7.88 MB (+58.1 %)
 * (ii) pays for the support alone what a dense base pays per element: the same SPP fine-tune over
 * the unpruned generated base takes 15.96 MB, twice (ii) for twice the elements. The lossless
 * delta (i) spends about 1 bit per byte plane per zero on where its zero deltas are. Dense
 * fine-tunes of the same pruned bases (every zero broken) still gain +24-26 % in BF16, +9 % in
 * F32, with SPP_X_FULL in every chunk: the off-support values (dW itself) and the support's deltas
 * get byte planes of their own instead of sharing one exponent plane. Over a base without zeros
 * (ii) is (i) plus 24 + 16 bytes of headers per chunk. A base pruned to signed zeros
 * (--signed-zeros: -0.0 for negative weights) fine-tuned as W + W (.) M flips the sign of a
 * quarter of its zeros: 9.48 MB (every chunk SPP_X_LIST) against 16.96 MB for (i); counting the
 * list's gaps over off-support elements rather than all elements took it from 9.80 MB. Decode:
 * ~650 MB/s per core on a 256 KiB BF16 chunk against ~1.1 GB/s for ll_decode, for half the
 * stored bytes; the scalar pack and merge passes are about 40 % of it (perf).
 *
 * Not done, measured (tests/spp/lowrank.py): an SPP delta divided by W on the support is rank 1
 * on each of SPP's 16 row blocks, so its factors b, A (out + 16 in values per matrix) predict the
 * fine-tune: on the generated BF16 pairs, BF16 factors (0.62 MB) predict 95.7 % of the support
 * bit-exactly (||error|| = 1.9 % of ||dW||, about the fine-tune's own BF16 rounding), and factors
 * + this codec's residual against the prediction take 0.62 + 0.98 MB, 5x less than (ii),
 * lossless. On charlm the factors alone (0.30 MB in F32, 0.15 MB in BF16) are about (ii)'s size
 * (0.26 MB): its 16 x 64 heads have more factor values than weights.
 * Such a codec needs the matrix's rows and shape, like deltadq.h, and a prediction computed
 * identically on every machine.
 */
#ifndef DELTAFS_CODEC_SPP_H
#define DELTAFS_CODEC_SPP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec.h"
#include "dtype.h"

#define SPP_VERSION 1
#define SPP_HDR (CX_HDR + 20)

typedef enum {
	SPP_X_NONE = 0, /* no exceptions */
	SPP_X_LIST = 1, /* positions + values of the off-support elements that differ */
	SPP_X_FULL = 2, /* all off-support elements */
} spp_xmode;

/* Sparsity of one tensor. Measured in spans that start at multiples of 8 elements (the store's
 * chunks), the zeros add up and the whole follows 2:4 if every span does, else 4:8 if every span
 * follows 2:4 or 4:8. */
typedef struct spp_stats {
	uint64_t n;           /* elements */
	uint64_t zeros;       /* exact zeros: +-0.0 for floats, 0 for integers and BOOL */
	unsigned nm_n, nm_m;  /* N:M pattern followed ((2,4) preferred to (4,8)), or 0, 0 */
} spp_stats;

/* Measure n_elems elements of dtype dt at src. The N:M test runs over contiguous groups of M
 * elements from element 0, which are groups along the last dimension only when that dimension is
 * a multiple of M (N:M sparsity requires it: the caller, who has the shape, checks it); a pattern
 * is reported only when n_elems > 0 is a multiple of M and every group has at most N non-zeros.
 * An all-zero tensor follows 2:4. Returns 0, or -EINVAL (NULL pointers, unknown dt). */
int spp_measure(const void *src, size_t n_elems, dt_id dt, spp_stats *out);

/* Largest blob spp_encode can produce for n bytes of elements of size esize. */
size_t spp_bound(size_t n, unsigned esize);

/* Encode n bytes of a fine-tune chunk src (n a multiple of esize; esize 1, 2, 4 or 8) against
 * base, the same span of the base as the store decodes it (required), into dst (capacity cap >=
 * spp_bound(n, esize)). level: zstd level of the sub-blobs (3 is the ingest default). When there
 * are exceptions the encoder writes both a list and the full off-support values and keeps the
 * smaller. Returns the blob size (> 0) or a negative errno (-EINVAL, -ENOBUFS, -ENOMEM). */
ssize_t spp_encode(cx_ctx *cx, void *dst, size_t cap, const void *src, const void *base, size_t n,
		   unsigned esize, int level);

/* Decode a CX_SPP blob into exactly n bytes at dst, given base (n bytes, the same base as
 * encoding; must not overlap dst). Returns 0, -EINVAL (no base, NULL pointers), -ENOMEM, or
 * -EBADMSG for any blob that is malformed, truncated or inconsistent with n or with the base's
 * support; never reads or writes out of bounds. Allocation-free once the context's scratch
 * buffers (which never shrink) have grown: after one decode of a chunk as large, with as many
 * exceptions. */
int spp_decode(cx_ctx *cx, void *dst, size_t n, const void *blob, size_t blen, const void *base);

/* Count the base's zeros (the zero rule above) that the fine-tune ft breaks, i.e. where ft is not
 * a zero by the same rule, over n bytes of elements of size esize. A zero of the other sign is not
 * broken (it is still stored exactly, as an exception). Returns 0 and sets *count, or -EINVAL. */
int spp_broken_zeros(const void *ft, const void *base, size_t n, unsigned esize, uint64_t *count);

#endif
