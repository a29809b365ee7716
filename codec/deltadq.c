/*
 * deltadq.c -- DeltaDQ encode, decode and parameter search (format and method: deltadq.h).
 *
 * Data path. Encode: one pass computes the float delta of every kept element (dropout positions
 * per group, rescale folded in) into scratch slot 0 in blob order; each level set is quantised
 * (k-means sorts a copy of its values in slot 2); level indices go to slot 1; the planes are
 * packed in slot 2 and zstd-compressed into the blob (the alternative split in slot 3, the smaller
 * kept). Decode: planes into slot 0 (raw ones copied, so the bit reader may over-read 8 zero
 * bytes), level tables into slot 2, then row by row (dense mode) the row's kept level values are
 * read straight from the planes into a float array in slot 3 (1-bit levels 8 per plane byte by a
 * vector select; no index array), and either (dense) scattered into a float row there (-0.0 where
 * nothing is kept) for one vector pass that writes round(base + row) or the base's bits, or
 * (sparse, at most DQ_SPARSE_MAX64 of 64 kept) the base row is copied and only the kept elements
 * are rounded in; support mode unpacks indices into slot 1 and goes element by element. Nothing else is
 * allocated: after the first chunk of a shape, decode runs without malloc. One chunk decodes on
 * one thread; chunks decode in parallel on as many threads as the caller runs (each its cx_ctx).
 *
 * The parameter search (dq_plan) runs encode + decode on a few blocks of rows (the whole matrix,
 * chunk by chunk, when it has at most 2 * DQ_SAMPLE elements), extrapolates the bytes to the full
 * matrix (headers and level tables counted exactly, plane bytes per row from the sample), and
 * keeps the candidate with the smallest output error among those within DQ_TOL of the target
 * ratio. Stage 1: quantiser x bits x level-set rows {1, 8, chunk} at group 128 (or the row width),
 * keep moved to the target; stage 2: every group size 8..1024 for the three best; stage 3: the
 * rescale exponent. Then every chunk is encoded for real and keep corrected until the real bytes
 * land within 10%.
 *
 * Choices, measured with tests/deltadq/bench_deltadq.c (charlm: 63 F32 matrices of
 * ../shared/data/charlm; 1g: 3 BF16 matrices of genmodel.py --preset 1g, delta 0.01) and a
 * decode loop over one 512 KiB BF16 chunk (2048 columns):
 *   - Split into planes: bytes of the planes, group 128, keep 32, sets of 8 rows:
 *       uniform 2 bits: one plane 2.59 MB, hi/lo 4.39 MB (1g); 3 bits: 5.48 vs 5.18 MB (split
 *       -5%); 4 bits: 6.89 vs 7.69 MB; 8 bits: 13.9 vs 16.0 MB. k-means: 3 bits split -4%,
 *       2, 4, 8 bits one plane -4 to -16%. Neither wins everywhere, so the encoder tries both
 *       (lo = 0 and lo = bits / 2) and keeps the smaller: one more zstd call at ingest, nothing
 *       at decode (the split only changes which unpack loop runs).
 *   - Quantiser: uniform min-max indices compress far better (2 bits: 2.59 MB vs 4.64 MB for
 *       k-means on the same values, 1g) but err more per value; which wins at a given ratio
 *       depends on the matrix, so all three are candidates and the search measures. It picks
 *       k-means at 1 bit on every 1g matrix at every ratio; on charlm (252 matrix x ratio
 *       choices) k-means 1 bit 189 times, k-means 2 bits 42, DQ_Q_ZERO 2 bits 21, uniform never
 *       (version 1 blobs; since version 2 the 1-bit zero quantiser, signs, wins most 1-bit
 *       choices: it stores one step per set where k-means stores two levels).
 *   - Scale granularity: per row (srows = 1), per 8 rows, or per chunk, measured per matrix: 1g
 *       picks per row at 16x and one set per chunk (128 rows) above; charlm's small matrices
 *       mostly one set per chunk (the levels would otherwise eat the bytes).
 *   - Rescale: wherever it drops elements at 32x and above, the plan picks a = 0 on every 1g
 *       matrix and a = 0 or 1/2 on charlm (see deltadq.h for why the unbiased a = 1 loses).
 *   - Dropout positions: Floyd's sampling into a bit mask decoded at 627 MB/s (keep 64 of 128,
 *       2 bits, one 512 KiB BF16 chunk); the keyed bijection of dq_positions at 1260 MB/s, with
 *       pair inclusion frequencies within sampling noise of uniform subsets for groups of 16 and
 *       more (rms 4% off at L = 8, kk = 2).
 *   - Header (version 2): fields at their default left out, nr from the decoder's n, F16 levels
 *       times a power of two, no clen for the last plane, 1-bit zero = signs with one stored
 *       step. charlm, mean output error DeltaDQ / DARE / BitDelta at equal bytes, version 1 ->
 *       version 2: 16x 0.0802 / 0.0814 / 0.1141 -> 0.0730 / 0.0822 / 0.1141; 32x 0.1228 /
 *       0.1248 / 0.1219 -> 0.1163 / 0.1232 / 0.1207; 64x 0.1574 / 0.2022 / 0.1554 -> 0.1509 /
 *       0.1979 / 0.1542; 128x 0.1726 / 0.3373 / 0.1694 -> 0.1689 / 0.3438 / 0.1696 (1-bit
 *       signs on 53, 56, 38 of the 63 matrices at 32x, 64x, 128x, 1-bit k-means on the rest).
 *       1g (6 matrices, errors on 256 rows):
 *       16x 0.00600 / 0.00592 (DARE still ahead: an i.i.d. Gaussian delta at 1 bit per weight
 *       leaves nothing but side information, and both spend ~1 bit per kept sign); 32x 0.00799 /
 *       0.00917 / 0.00818; 64x 0.00872 / 0.01279 / 0.00877; 128x 0.00903 / 0.01817 / 0.00904.
 *   - Decode: each row's level values come straight from the planes (the 2-byte index array
 *       between unpack and apply is gone); a chunk keeping at most 24 of 64 (DQ_SPARSE_MAX64)
 *       decodes sparse (memcpy the base row, round only the kept elements in), others dense
 *       (levels scattered into a float row in element order, one SSE2-width pass of add +
 *       integer BF16 rounding that splits even and odd elements with two shuffles and clears the
 *       row behind it, read one row late so the scattered stores do not stall its loads). One or
 *       two positions of a group (group 8 keep 1 at 128x) are computed in scalar code, dropped
 *       positions (keep > half) go into a mask walked with ctz. Instructions per output byte
 *       (callgrind, tests/bench/bench_decode, 256 KiB BF16 chunk, lossless delta 6.37), before ->
 *       after: dq16 (no dropout, 1 bit) 17.10 -> 6.12; dq32 (group 256 keep 132) 19.35 ->
 *       11.67; dq64 (512, 132) 8.55 -> 4.58; dq128 (512, 64) 6.34 -> 2.25. Group 8 keep 1: 15.1
 *       -> 10.8; 128 keep 16: 6.7 -> 2.6; 128 keep 64: 12.3 -> 8.0. Still behind lossless where
 *       about half is kept: the dropped-position mask (a read-modify-write per dropped element)
 *       and the scatter cost ~10 instructions per kept element; and at group 8 keep 1 the key
 *       mixing per group (~40 instructions per 8 elements). MB/s: see the report of issue 4 (the
 *       machine is shared: timings vary 2x from run to run).
 *   - zstd level 9 for the planes: they are small (a sixteenth of the tensor or less), so ingest
 *       barely notices, and decode speed does not depend on the level.
 *   - Support mode, on SPP fine-tunes of pruned bases (scratch pairs of tests/data/genpruned.py;
 *       `deltafs info`, means over the pruned matrices, dense -> support at equal bytes within
 *       2 %): gen 2:4 (BF16, 14 matrices) 16x delta error 0.53 -> 0.35, output error 0.0267 ->
 *       0.0173; 64x 0.87 -> 0.80, 0.0435 -> 0.0400. gen 50 %: 16x 0.51 -> 0.34, 0.0254 ->
 *       0.0171; 64x 0.88 -> 0.84, 0.0441 -> 0.0421. charlm 50 % (F32, 60 matrices): 16x 0.32 ->
 *       0.21, 0.0160 -> 0.0103; 64x 0.90 -> 0.80, 0.0452 -> 0.0395. Dense DeltaDQ spends bits on
 *       the zeros' null deltas and puts levels on them (at 16x on a tiny 2:4 model, none of a
 *       matrix's 32768 zeros survived); support mode keeps every one. Its cost is at decode: each
 *       base row is scanned for its support (branch-free); one 256 KiB BF16 2:4 chunk decoded at
 *       175 against 203 MB/s dense without dropout, 217 against 390 MB/s keeping 32 of 128 at
 *       1 bit (2 cores under load: noisy).
 */
#include "deltadq.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <zstd_errors.h>

#include "cx_internal.h"
#include "half.h"
#include "palette.h"

#define DQ_ZLEVEL 9       /* planes are small; decode speed does not depend on the level */
#define DQ_FIXHDR 5       /* cx header + bits and lo */
#define DQ_FIXHDR_V1 7    /* cx header + dtype, bits, lo */
#define DQ_HDR_MAX (DQ_FIXHDR_V1 + 7 * CX_VMAX)
#define DQ_CHUNK_BYTES (256u << 10)
#define DQ_DELTA_MAX 0x1p100f /* larger deltas (-EDOM) could overflow a level's step to infinity */
#define DQ_F_DROP 0x10    /* v2 header byte 3: group and keep present (keep < group) */
#define DQ_F_SETS 0x20    /* v2 header byte 3: srows present (srows < the chunk's rows) */
#define DQ_F_KEY 0x40     /* v2 header byte 3: r0 and seed present (not both 0) */

enum { DQ_S_VALS = 0, DQ_S_IDX = 1, DQ_S_WORK = 2, DQ_S_ALT = 3 }; /* encode */
enum { DQ_S_PLANES = 0, DQ_S_LUT = 2, DQ_S_ROW = 3 };              /* decode (+ DQ_S_IDX) */

#define AI static inline __attribute__((always_inline))

/* ---- elements ------------------------------------------------------------------------------ */




AI float dq_ld(int dt, const uint8_t *p, size_t i)
{
	return hf_load((dt_id)dt, p, i);
}

AI void dq_st(int dt, uint8_t *p, size_t i, float v)
{
	hf_store((dt_id)dt, p, i, v);
}

static unsigned dq_esize(dt_id dt)
{
	return dt == DT_F32 ? 4 : (dt == DT_F16 || dt == DT_BF16) ? 2 : 0;
}

/* ---- dropout --------------------------------------------------------------------------------- */

/* Elements kept of a group of L (<= g) elements. */
AI uint32_t dq_kk(uint32_t L, uint32_t g, uint32_t keep)
{
	return L == g ? keep : (uint32_t)(((uint64_t)keep * L + g - 1) / g);
}

static size_t dq_row_kept(size_t cols, uint32_t g, uint32_t keep)
{
	size_t t = cols % g;

	return cols / g * keep + (t ? dq_kk((uint32_t)t, g, keep) : 0);
}

/* Element i of base is on the support: not a zero by codec/spp.h's rule (+-0.0). */
AI int dq_on(int dt, const uint8_t *base, size_t i)
{
	uint32_t u;
	uint16_t h;

	if (dt == DT_F32) {
		memcpy(&u, base + 4 * i, 4);
		return (u & 0x7fffffffu) != 0;
	}
	memcpy(&h, base + 2 * i, 2);
	return (h & 0x7fff) != 0;
}

/* Size of the support of the row of cols elements at base. */
static size_t dq_support_len(int dt, const uint8_t *base, size_t cols)
{
	size_t s = 0;

	for (size_t c = 0; c < cols; c++)
		s += (size_t)dq_on(dt, base, c);
	return s;
}

/* Kept values of nr rows of base (cols elements of dtype dt each): nr times a row's count, or in
 * support mode, per row from the size of its support. */
static size_t dq_kept(int dt, const uint8_t *base, size_t cols, size_t nr, uint32_t g,
		      uint32_t keep, int support)
{
	const size_t rowb = cols * dq_esize((dt_id)dt);
	size_t k = 0;

	if (!support)
		return nr * dq_row_kept(cols, g, keep);
	for (size_t r = 0; r < nr; r++)
		k += dq_row_kept(dq_support_len(dt, base + r * rowb, cols), g, keep);
	return k;
}

/* The next group of the support in the row of base at ro: from column *c on, up to g support
 * columns into sp; returns how many (0 at the row's end). Branch-free select, as codec/spp.c:
 * on an unstructured 50 % support a branch would be mispredicted every other element. */
AI uint32_t dq_next_group(int dt, const uint8_t *base, size_t ro, size_t cols, size_t *c,
			  uint32_t g, size_t *sp)
{
	uint32_t L = 0;
	size_t i = *c;

	for (; i < cols && L < g; i++) {
		sp[L] = i;
		L += (uint32_t)dq_on(dt, base, ro + i);
	}
	*c = i;
	return L;
}

AI uint64_t dq_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

#define DQ_GOLD 0x9e3779b97f4a7c15ull

/* Key of an absolute row: the masks of its groups derive from it. */
AI uint64_t dq_rowkey(uint64_t seed, uint64_t row)
{
	return dq_mix(dq_mix(seed + DQ_GOLD) + row);
}

/* The kept positions of group grp (L elements, kk kept, 0 < kk < L) of the row keyed rkey, into
 * pos[0..kk), in the order their values sit
 * in the blob: the first kk values below L of sigma(0), sigma(1), ..., or, when more than half
 * are kept, those not among the first L - kk (fewer evaluations), ascending. sigma is a keyed bijection of [0, 2^k), 2^k >= L: four rounds of
 * multiply by an odd constant, add, mask (each a bijection mod 2^k) with xor-shifts between them.
 * For a power-of-two L every sigma(j) is below L: kk evaluations, no bit set, no rejection; a
 * shorter tail group walks at most 2^k < 2L values. This replaced Floyd's sampling into a bit mask
 * (uniform subsets, but a store-to-load chain per draw: 627 MB/s decode at keep 64 of 128, BF16).
 * Measured over 2e5 keys (see the figures at the top of this file): the inclusion frequency of
 * every position is within 2% of kk/L and of every pair within the sampling noise of a uniform
 * subset for L >= 16 (rms 1.2% at L = 16, kk = 4); L = 8 with kk = 2 is the worst, at rms 4%. */
typedef uint16_t dq_u16x8 __attribute__((vector_size(16)));

/* The L - kk dropped positions of a group with 2 * kk > L, as bits of m[0..(L + 63) / 64): the
 * first L - kk values below L of sigma(0), sigma(1), ... (dq_positions lists the others). For a
 * power-of-two L every value counts: branch-free. Each value sets a byte of fl, and the bytes are
 * packed into words at the end: or-ing straight into m made a chain of read-modify-writes through
 * memory, a quarter of them on the word the previous one wrote (bench_decode dq32, keep 132 of
 * 256: 10% more MB/s this way, 5% fewer instructions). Bytes are packed little-endian, as the
 * planes are read (dq_get64). */
AI void dq_dropmask(uint64_t rkey, uint64_t grp, uint32_t L, uint32_t kk, uint64_t *m)
{
	const uint64_t k1 = dq_mix(rkey + grp * DQ_GOLD), k2 = k1 * 0xd6e8feb86659fd93ull;
	const uint16_t a = (uint16_t)(k1 | 1), b = (uint16_t)(k1 >> 16), c = (uint16_t)(k1 >> 32 | 1);
	const uint16_t d = (uint16_t)(k1 >> 48), e = (uint16_t)(k2 | 1), f = (uint16_t)(k2 >> 16);
	const uint16_t g = (uint16_t)(k2 >> 32 | 1), h = (uint16_t)(k2 >> 48);
	const unsigned k = L > 1 ? 32 - (unsigned)__builtin_clz(L - 1) : 0, sh = (k + 1) / 2;
	const uint16_t M = (uint16_t)((1u << k) - 1);
	const uint32_t D = L - kk; /* dropped */
	const dq_u16x8 step = { 8, 8, 8, 8, 8, 8, 8, 8 };
	dq_u16x8 j8 = { 0, 1, 2, 3, 4, 5, 6, 7 };
	uint16_t y8[8];
	uint8_t fl[DQ_GROUP_MAX];

	/* sigma of 8 consecutive j at a time in 16-bit lanes: k <= 10, and the low k bits of a sum or
	 * product depend only on the operands' low k bits, so this is the 32-bit bijection's value */
#define DQ_SIGMA8()                                                                                \
	do {                                                                                       \
		dq_u16x8 x_ = (j8 * a + b) & M;                                                    \
		x_ ^= x_ >> sh;                                                                    \
		x_ = (x_ * c + d) & M;                                                             \
		x_ ^= x_ >> sh;                                                                    \
		x_ = (x_ * e + f) & M;                                                             \
		x_ ^= x_ >> sh;                                                                    \
		x_ = (x_ * g + h) & M;                                                             \
		memcpy(y8, &x_, 16);                                                               \
		j8 += step;                                                                        \
	} while (0)
	/* the same, one j in 32-bit scalar arithmetic: for 1 or 2 values (the 128x plans' group of 8
	 * keeping 1) it skips the 8 constant broadcasts, which cost more than the rounds */
#define DQ_SIGMA1(j)                                                                               \
	({                                                                                         \
		uint32_t x_ = ((uint32_t)(j) * a + b) & M;                                         \
		x_ ^= x_ >> sh;                                                                    \
		x_ = (x_ * c + d) & M;                                                             \
		x_ ^= x_ >> sh;                                                                    \
		x_ = (x_ * e + f) & M;                                                             \
		x_ ^= x_ >> sh;                                                                    \
		(x_ * g + h) & M;                                                                  \
	})
	if (L == M + 1u && D <= 2) {
		memset(m, 0, (L + 63) / 64 * sizeof *m);
		for (uint32_t j = 0; j < D; j++) {
			uint32_t y = DQ_SIGMA1(j);

			m[y >> 6] |= 1ull << (y & 63);
		}
		return;
	}
	memset(fl, 0, (L + 63) & ~63u);
	if (L == M + 1u) {
		uint32_t j = 0;

		for (; j + 8 <= D; j += 8) {
			DQ_SIGMA8();
			for (unsigned l = 0; l < 8; l++)
				fl[y8[l]] = 1;
		}
		if (j < D) {
			DQ_SIGMA8();
			for (unsigned l = 0; l < D - j; l++)
				fl[y8[l]] = 1;
		}
	} else {
		for (uint32_t n = 0; n < D;) {
			DQ_SIGMA8();
			for (unsigned l = 0; l < 8 && n < D; l++)
				if (y8[l] < L) {
					fl[y8[l]] = 1;
					n++;
				}
		}
	}
	/* 8 flag bytes (0 or 1) to 8 bits: the multiply moves byte j's bit to bit 56 + j, and no two
	 * partial products meet, so nothing carries into the top byte */
	for (uint32_t w = 0; w < (L + 63) / 64; w++) {
		uint64_t word = 0;

		for (unsigned i = 0; i < 8; i++) {
			uint64_t v;

			memcpy(&v, fl + 64 * w + 8 * i, 8);
			word |= (v * 0x0102040810204080ull) >> 56 << (8 * i);
		}
		m[w] = word;
	}
#undef DQ_SIGMA8
#undef DQ_SIGMA1
}

AI void dq_positions(uint64_t rkey, uint64_t grp, uint32_t L, uint32_t kk, uint16_t *pos)
{
	const uint64_t k1 = dq_mix(rkey + grp * DQ_GOLD), k2 = k1 * 0xd6e8feb86659fd93ull;
	const uint16_t a = (uint16_t)(k1 | 1), b = (uint16_t)(k1 >> 16), c = (uint16_t)(k1 >> 32 | 1);
	const uint16_t d = (uint16_t)(k1 >> 48), e = (uint16_t)(k2 | 1), f = (uint16_t)(k2 >> 16);
	const uint16_t g = (uint16_t)(k2 >> 32 | 1), h = (uint16_t)(k2 >> 48);
	const unsigned k = L > 1 ? 32 - (unsigned)__builtin_clz(L - 1) : 0, sh = (k + 1) / 2;
	const uint16_t M = (uint16_t)((1u << k) - 1);
	const dq_u16x8 step = { 8, 8, 8, 8, 8, 8, 8, 8 };
	dq_u16x8 j8 = { 0, 1, 2, 3, 4, 5, 6, 7 };
	uint16_t y8[8];

	/* sigma of 8 consecutive j at a time in 16-bit lanes: k <= 10, and the low k bits of a sum or
	 * product depend only on the operands' low k bits, so this is the 32-bit bijection's value */
#define DQ_SIGMA8()                                                                                \
	do {                                                                                       \
		dq_u16x8 x_ = (j8 * a + b) & M;                                                    \
		x_ ^= x_ >> sh;                                                                    \
		x_ = (x_ * c + d) & M;                                                             \
		x_ ^= x_ >> sh;                                                                    \
		x_ = (x_ * e + f) & M;                                                             \
		x_ ^= x_ >> sh;                                                                    \
		x_ = (x_ * g + h) & M;                                                             \
		memcpy(y8, &x_, 16);                                                               \
		j8 += step;                                                                        \
	} while (0)
	/* the same, one j in 32-bit scalar arithmetic: for 1 or 2 values (the 128x plans' group of 8
	 * keeping 1) it skips the 8 constant broadcasts, which cost more than the rounds */
#define DQ_SIGMA1(j)                                                                               \
	({                                                                                         \
		uint32_t x_ = ((uint32_t)(j) * a + b) & M;                                         \
		x_ ^= x_ >> sh;                                                                    \
		x_ = (x_ * c + d) & M;                                                             \
		x_ ^= x_ >> sh;                                                                    \
		x_ = (x_ * e + f) & M;                                                             \
		x_ ^= x_ >> sh;                                                                    \
		(x_ * g + h) & M;                                                                  \
	})
	if (2 * kk > L) { /* mark the L - kk dropped ones, list the others in ascending order */
		uint64_t m[DQ_GROUP_MAX / 64];

		dq_dropmask(rkey, grp, L, kk, m);
		for (uint32_t w = 0, n = 0; w < (L + 63) / 64; w++) {
			uint64_t kept = ~m[w] & (L - 64 * w >= 64 ? ~0ull : (1ull << (L - 64 * w)) - 1);

			for (; kept; kept &= kept - 1)
				pos[n++] = (uint16_t)(64 * w + (uint32_t)__builtin_ctzll(kept));
		}
	} else if (kk <= 2) { /* scalar: 1 or 2 values (with rejection when L is not a power of 2) */
		for (uint32_t j = 0, n = 0; n < kk; j++) {
			uint32_t y = DQ_SIGMA1(j);

			if (y < L)
				pos[n++] = (uint16_t)y;
		}
	} else if (L == M + 1u) { /* every sigma(j) < L; pos has room for kk rounded up to 8 */
		for (uint32_t j = 0; j < kk; j += 8) {
			DQ_SIGMA8();
			memcpy(pos + j, y8, 16);
		}
	} else {
		for (uint32_t n = 0; n < kk;) {
			DQ_SIGMA8();
			for (unsigned l = 0; l < 8 && n < kk; l++)
				if (y8[l] < L)
					pos[n++] = y8[l];
		}
	}
#undef DQ_SIGMA8
#undef DQ_SIGMA1
}

/* ---- the header ------------------------------------------------------------------------------ */

typedef struct dq_hdr {
	int ver, dt, quant, support;
	unsigned bits, lo;
	uint64_t cols, r0, nr, g, keep, srows, seed; /* v2: nr is 0 until the decoder knows n */
	float scale; /* v2: levels are stored F16 values times this power of two */
	size_t off;  /* first byte after the fields before the levels */
} dq_hdr;

/* Stored level values per set: a table, or uniform's min and step, or (v2) zero's step alone. */
static size_t dq_nlev_stored(int ver, int quant, unsigned bits)
{
	if (quant == DQ_Q_KMEANS || quant == DQ_Q_PALETTE)
		return (size_t)1 << bits;
	return ver == 1 || quant == DQ_Q_UNIFORM ? 2 : 1;
}

/* Bytes of one stored level value: F16 times the blob's scale in v2 up to 8 bits, f32 else (the
 * uniform min and step of wider indices need the precision). */
static size_t dq_lvsize(int ver, unsigned bits)
{
	return ver == 1 || bits > 8 ? 4 : 2;
}

/* 2^e as a float, for e in [-149, 127]: exact (subnormal below 2^-126). */
static float dq_pow2(int e)
{
	uint32_t u = e >= -126 ? (uint32_t)(e + 127) << 23 : 1u << (e + 149);
	float f;

	memcpy(&f, &u, 4);
	return f;
}

/* The v2 header's dtype code (bits 2-3 of byte 3) of dt, and back; 0 for none either way. */
static unsigned dq_dtcode(dt_id dt)
{
	return dt == DT_F16 ? 1 : dt == DT_BF16 ? 2 : dt == DT_F32 ? 3 : 0;
}

static int dq_dtof(unsigned code)
{
	return code == 1 ? DT_F16 : code == 2 ? DT_BF16 : code == 3 ? DT_F32 : 0;
}

/* Fields before the levels (deltadq.h), for the chunk of nr rows at r0; srows capped at nr. */
static size_t dq_hdr_len(const dq_params *p, size_t cols, size_t r0, size_t nr, size_t srows)
{
	return DQ_FIXHDR + cx_vlen(cols) +
	       (p->keep < p->group ? cx_vlen(p->group) + cx_vlen(p->keep) : 0) +
	       (srows < nr ? cx_vlen(srows) : 0) + (r0 || p->seed ? cx_vlen(r0) + cx_vlen(p->seed) : 0) +
	       1;
}

/* Version 1 (deltadq.h: still decoded, no longer written): every field present, f32 levels. */
static int dq_parse_v1(const uint8_t *b, size_t blen, dq_hdr *h)
{
	uint64_t *f[] = { &h->cols, &h->r0, &h->nr, &h->g, &h->keep, &h->srows, &h->seed };

	if (blen < DQ_FIXHDR_V1)
		return -EBADMSG;
	h->dt = b[4];
	h->bits = b[5];
	h->lo = b[6];
	h->off = DQ_FIXHDR_V1;
	for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
		if (cx_vget(b, blen, &h->off, f[i]))
			return -EBADMSG;
	if (!dq_dtcode((dt_id)h->dt) || !h->nr || h->r0 > UINT64_MAX - h->nr)
		return -EBADMSG;
	return 0;
}

/* Fields absent from a v2 blob take their defaults: no dropout (group = keep), one level set per
 * chunk (srows = all rows), r0 = seed = 0. */
static int dq_parse_v2(const uint8_t *b, size_t blen, dq_hdr *h)
{
	int8_t e;

	h->dt = dq_dtof(b[3] >> 2 & 3);
	h->bits = (b[4] & 15) + 1u;
	h->lo = b[4] >> 4;
	h->off = DQ_FIXHDR;
	h->g = h->keep = DQ_GROUP_MAX;
	h->srows = UINT64_MAX;
	h->r0 = h->seed = h->nr = 0;
	if (cx_vget(b, blen, &h->off, &h->cols) ||
	    ((b[3] & DQ_F_DROP) && (cx_vget(b, blen, &h->off, &h->g) ||
				    cx_vget(b, blen, &h->off, &h->keep) || h->keep >= h->g)) ||
	    ((b[3] & DQ_F_SETS) && cx_vget(b, blen, &h->off, &h->srows)) ||
	    ((b[3] & DQ_F_KEY) && (cx_vget(b, blen, &h->off, &h->r0) ||
				   cx_vget(b, blen, &h->off, &h->seed))) ||
	    h->off >= blen)
		return -EBADMSG;
	memcpy(&e, b + h->off++, 1);
	h->scale = dq_pow2(e);
	return h->dt ? 0 : -EBADMSG;
}

static int dq_parse(const uint8_t *b, size_t blen, dq_hdr *h)
{
	if (!b || blen < DQ_FIXHDR || b[0] != CX_MAGIC || b[1] != CX_DELTADQ)
		return -EBADMSG;
	h->ver = b[2];
	h->quant = b[3] & 3;
	h->support = !!(b[3] & DQ_SUPPORT);
	if (h->ver == 1 ? (b[3] & 0x7c) || dq_parse_v1(b, blen, h)
			: h->ver != DQ_VERSION || dq_parse_v2(b, blen, h))
		return -EBADMSG;
	if (!h->quant || h->bits > 16 || (h->quant == DQ_Q_KMEANS && h->bits > DQ_KMEANS_MAXBITS) ||
	    !h->bits || h->lo >= h->bits || !h->cols || !h->g || h->g > DQ_GROUP_MAX || !h->keep ||
	    h->keep > h->g || !h->srows || h->seed > UINT32_MAX || h->r0 > UINT64_MAX / 2)
		return -EBADMSG;
	return 0;
}

int dq_blob_params(const void *blob, size_t blen, dq_params *p)
{
	dq_hdr h;

	if (dq_parse(blob, blen, &h))
		return -EBADMSG;
	memset(p, 0, sizeof *p);
	p->group = (uint32_t)h.g;
	p->keep = (uint32_t)h.keep;
	p->keep_frac = (float)h.keep / (float)h.g;
	p->bits = (uint8_t)h.bits;
	p->quant = (uint8_t)h.quant;
	p->split = (uint8_t)(1 + h.lo);
	p->srows = h.srows > UINT32_MAX ? UINT32_MAX : (uint32_t)h.srows;
	p->seed = (uint32_t)h.seed;
	p->support = (uint32_t)h.support;
	return 0;
}

/* ---- quantisers ------------------------------------------------------------------------------ */

#define DQ_ZSAMPLE 8192 /* values the zero-level quantiser's step search looks at */

/* Round half away from zero, inline (lrint is a libm call without -fno-math-errno), saturating
 * at +-2^31 (callers clamp to their level range; a step that underflows to a subnormal makes the
 * quotient overflow, and NaN goes to the low end). Used only by the encoder: any rounding of ties
 * is a valid quantisation, and decode does not depend on it. */
AI long dq_round(double x)
{
	if (!(x > -0x1p31))
		return -(1L << 31);
	if (x > 0x1p31)
		return 1L << 31;
	return (long)(x + (x < 0 ? -0.5 : 0.5));
}

/* A uniform level: min + j * step in double, rounded once to float. j * step is exact in double
 * (j < 2^16, step has 24 significant bits), so an FMA or not gives the same double. The zero
 * quantiser's levels (j - K) * step are the same sum with min = -K * step, exact in double (K <
 * 2^15, its step has 11 significant bits), so they go through here too. */
AI float dq_ulevel(double mn, double step, uint32_t j)
{
	return (float)(mn + (double)j * step);
}

/* x rounded to what a v2 blob stores: the nearest F16 value times 2^e (scale = 2^e), or x itself
 * where levels are stored f32 (scale 0). */
static float dq_hround(float x, float scale)
{
	return scale ? hf_f16_to_f32(hf_f32_to_f16(x / scale)) * scale : x;
}

static void dq_uniform(const float *v, size_t n, unsigned bits, uint16_t *idx, float lv[2],
		       float scale)
{
	float mn = v[0], mx = v[0], step = 0;
	uint32_t top = (1u << bits) - 1;

	for (size_t i = 1; i < n; i++) {
		mn = v[i] < mn ? v[i] : mn;
		mx = v[i] > mx ? v[i] : mx;
	}
	/* min rounded to the stored grid (values below it clamp to level 0: off by at most 2^-11 of
	 * |min|), then the smallest stored step whose top level reaches max */
	mn = dq_hround(mn, scale);
	if (mx > mn && !scale) {
		step = (float)(((double)mx - mn) / top);
		while (dq_ulevel(mn, step, top) < mx)
			step = nextafterf(step, INFINITY);
	} else if (mx > mn) {
		uint16_t hs = hf_f32_to_f16((float)(((double)mx - mn) / top) / scale);

		step = hf_f16_to_f32(hs) * scale;
		while (dq_ulevel(mn, step, top) < mx && hs < 0x7bff)
			step = hf_f16_to_f32(++hs) * scale;
	}
	double inv = step > 0 ? 1.0 / step : 0;
	for (size_t i = 0; i < n; i++) {
		long q = dq_round(((double)v[i] - mn) * inv);

		idx[i] = (uint16_t)(q < 0 ? 0 : q > (long)top ? top : (uint32_t)q);
	}
	lv[0] = mn;
	lv[1] = step;
}

/* Levels j * step, |j| <= K = 2^(bits-1) - 1, index j + K: a level at zero, so the small majority
 * of a delta costs the entropy coder little, and the step that minimises the squared error (40
 * steps between 0.02 and 4 times the rms), not min-max, so the outliers do not spread the levels.
 * Only the step is stored (F16 times the blob's scale: 11 significant bits, so K * step and the
 * zero level are exact); lv gets min = -K * step and step. The top code is unused. */
static void dq_zero(const float *v, size_t n, unsigned bits, uint16_t *idx, float lv[2],
		    float scale)
{
	if (bits == 1) { /* signs: +-s with s = mean |v|, the squared error's minimum */
		double sa = 0;
		float s;

		for (size_t i = 0; i < n; i++)
			sa += fabsf(v[i]);
		s = dq_hround((float)(sa / (double)n), scale);
		for (size_t i = 0; i < n; i++)
			idx[i] = v[i] >= 0;
		lv[0] = -s;
		lv[1] = s;
		return;
	}

	const long K = (1L << (bits - 1)) - 1;
	double ss = 0, best = INFINITY;
	float step = 0;

	/* The step is chosen on at most DQ_ZSAMPLE evenly spaced values: 40 trials over every value
	 * made this quantiser most of a plan's time, for a step the sample picks as well. */
	size_t stride = n > DQ_ZSAMPLE ? n / DQ_ZSAMPLE : 1, ns = 0;

	for (size_t i = 0; i < n; i += stride, ns++)
		ss += (double)v[i] * v[i];
	/* 40 candidate steps on a log scale; the error is unimodal in the step in practice, so a
	 * grid of every 4th candidate and then the 6 around the best find the grid's minimum in 16
	 * trials instead of 40. */
	int tbest = 0;
	for (int pass = 0; pass < 2 && ss > 0; pass++) {
		int t0 = pass ? tbest - 3 : 0, t1 = pass ? tbest + 3 : 39, dt = pass ? 1 : 4;
		for (int t = t0 < 0 ? 0 : t0; t <= t1 && t < 40; t += dt) {
			float s = (float)(sqrt(ss / ns) * 0.02 * pow(200.0, t / 39.0));
			double err = 0, inv;

			if (pass && t % 4 == 0)
				continue; /* evaluated in the coarse pass */
			s = dq_hround(s, scale); /* what the blob stores: 11 significant bits */
			if (!(s > 0))
				continue; /* underflowed: deltas around 1e-38 */
			inv = 1.0 / s;
			for (size_t i = 0; i < n; i += stride) {
				long q = dq_round(v[i] * inv);
				double d = v[i] - (double)(q < -K ? -K : q > K ? K : q) * s;

				err += d * d;
			}
			if (err < best) {
				best = err;
				step = s;
				tbest = t;
			}
		}
	}
	double inv = step > 0 ? 1.0 / step : 0;
	for (size_t i = 0; i < n; i++) {
		long q = dq_round(v[i] * inv);

		idx[i] = (uint16_t)((q < -K ? -K : q > K ? K : q) + K);
	}
	lv[0] = -(float)K * step;
	lv[1] = step;
}

/* Sort n finite floats ascending: LSD radix sort, 4 passes of 8 bits over the bit patterns mapped
 * to unsigned order (qsort with a comparator was a fifth of a plan's time). tmp holds n floats. */
static void dq_sort(float *s, size_t n, float *tmp)
{
	uint32_t *a = (uint32_t *)(void *)s, *b = (uint32_t *)(void *)tmp;

	for (size_t i = 0; i < n; i++) {
		uint32_t u;
		memcpy(&u, &s[i], 4);
		a[i] = u ^ ((uint32_t)-(int32_t)(u >> 31) | 0x80000000u);
	}
	for (unsigned sh = 0; sh < 32; sh += 8) {
		size_t cnt[256] = { 0 }, sum = 0;

		for (size_t i = 0; i < n; i++)
			cnt[(a[i] >> sh) & 0xff]++;
		for (unsigned k = 0; k < 256; k++) {
			size_t c = cnt[k];
			cnt[k] = sum;
			sum += c;
		}
		for (size_t i = 0; i < n; i++)
			b[cnt[(a[i] >> sh) & 0xff]++] = a[i];
		uint32_t *t = a;
		a = b;
		b = t;
	}
	/* after 4 passes the keys are back in s */
	for (size_t i = 0; i < n; i++) {
		uint32_t u = a[i];
		u ^= (u >> 31) ? 0x80000000u : 0xffffffffu;
		memcpy(&s[i], &u, 4);
	}
}

/* First index in s[0..n) with s[i] > t. */
static size_t dq_upper(const float *s, size_t n, double t)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s[mid] > t)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* Round a table of 2^bits ascending levels to the stored grid (rounding keeps them ascending). */
static void dq_table_round(float *lv, unsigned bits, float scale)
{
	for (size_t k = 0; k < ((size_t)1 << bits); k++)
		lv[k] = dq_hround(lv[k], scale);
	for (size_t k = 1; k < ((size_t)1 << bits); k++) /* be sure */
		if (lv[k] < lv[k - 1])
			lv[k] = lv[k - 1];
}

/* idx[i] = the nearest of the 2^bits ascending levels lv to v[i]. */
static void dq_nearest(const float *v, size_t n, const float *lv, unsigned bits, uint16_t *idx)
{
	const size_t K = (size_t)1 << bits;

	for (size_t i = 0; i < n; i++) {
		size_t lo = 0, hi = K - 1;

		while (lo < hi) { /* last level <= v, then compare with the next */
			size_t mid = (lo + hi + 1) / 2;

			if (lv[mid] <= v[i])
				lo = mid;
			else
				hi = mid - 1;
		}
		if (lo + 1 < K && (double)lv[lo + 1] - v[i] < (double)v[i] - lv[lo])
			lo++;
		idx[i] = (uint16_t)lo;
	}
}

/* The palette quantiser (codec/palette.h): levels by the optimal split of the sorted values
 * refined by Lloyd, where dq_kmeans starts Lloyd from quantiles; written as a k-means table, so
 * decode is the same. Returns 0 or a negative errno. */
static int dq_palette(const float *v, size_t n, unsigned bits, uint16_t *idx, float *lv,
		      float scale)
{
	pal_table t;
	int rc = pal_fit_values(v, NULL, n, bits, &t);

	if (rc)
		return rc;
	for (size_t k = 0; k < ((size_t)1 << bits); k++)
		lv[k] = t.c[k];
	dq_table_round(lv, bits, scale);
	dq_nearest(v, n, lv, bits, idx);
	return 0;
}

/* 1-D k-means (Lloyd) with K = 2^bits levels, exact on the sorted values: a cluster is a range of
 * the sorted array, its mean two prefix-sum lookups. work: n floats + (n + 1) doubles. */
static void dq_kmeans(const float *v, size_t n, unsigned bits, uint16_t *idx, float *lv, void *work,
		      float scale)
{
	size_t K = (size_t)1 << bits, bnd[257];
	float *s = work;
	double *ps = (double *)((uint8_t *)work + ((n * sizeof(float) + 7) & ~(size_t)7));
	double c[256];

	memcpy(s, v, n * sizeof *s);
	dq_sort(s, n, (float *)(void *)ps); /* ps (n + 1 doubles) is free until the prefix sums */
	ps[0] = 0;
	for (size_t i = 0; i < n; i++)
		ps[i + 1] = ps[i] + s[i];
	for (size_t k = 0; k < K; k++)
		c[k] = s[(2 * k + 1) * n / (2 * K)];
	for (int it = 0; it < 40; it++) {
		int moved = 0;

		bnd[0] = 0;
		bnd[K] = n;
		for (size_t k = 1; k < K; k++)
			bnd[k] = dq_upper(s, n, 0.5 * (c[k - 1] + c[k]));
		for (size_t k = 0; k < K; k++) {
			double m;

			if (bnd[k + 1] <= bnd[k])
				continue;
			m = (ps[bnd[k + 1]] - ps[bnd[k]]) / (double)(bnd[k + 1] - bnd[k]);
			moved |= m != c[k];
			c[k] = m;
		}
		if (!moved)
			break;
	}
	for (size_t k = 0; k < K; k++)
		lv[k] = (float)c[k];
	dq_table_round(lv, bits, scale);
	dq_nearest(v, n, lv, bits, idx);
}

/* ---- encode ---------------------------------------------------------------------------------- */

size_t dq_chunk_rows(size_t cols, unsigned esize)
{
	size_t row = cols * (esize ? esize : 1);

	return row && row < DQ_CHUNK_BYTES ? DQ_CHUNK_BYTES / row : 1;
}

size_t dq_bound(size_t nr, size_t cols, unsigned esize)
{
	/* Kept values take at most 16 bits whatever the element size, so esize only matters through
	 * the caller's choice of nr. */
	(void)esize;
	return DQ_HDR_MAX + nr * ((size_t)4 << DQ_KMEANS_MAXBITS) + 2 * (CX_VMAX + 1) + 2 * nr * cols +
	       2;
}

static int dq_check_params(const dq_params *p)
{
	if (!p->group || p->group > DQ_GROUP_MAX || !p->keep || p->keep > p->group || !p->bits ||
	    p->bits > 16 || !p->quant || p->quant > DQ_Q_PALETTE ||
	    ((p->quant == DQ_Q_KMEANS || p->quant == DQ_Q_PALETTE) && p->bits > DQ_KMEANS_MAXBITS) ||
	    p->split > p->bits ||
	    !p->srows || p->rescale > DQ_RESCALE_NONE || p->support > 1)
		return -EINVAL;
	return 0;
}

AI float dq_factor(int rescale, uint32_t L, uint32_t kk)
{
	double f = (double)L / kk;

	return rescale == DQ_RESCALE_NONE ? 1.0f : rescale == DQ_RESCALE_HALF ? (float)sqrt(f) : (float)f;
}

/* Gather the rescaled deltas of the kept elements in blob order into v. -EDOM on a non-finite
 * value anywhere in the chunk. */
AI int dq_gather(int dt, float *v, const uint8_t *ft, const uint8_t *base, size_t cols, size_t r0,
		 size_t nr, const dq_params *p)
{
	uint16_t pos[DQ_GROUP_MAX];
	size_t k = 0;

	for (size_t i = 0; i < nr * cols; i++) {
		float a = dq_ld(dt, ft, i), b = dq_ld(dt, base, i);

		if (!isfinite(a) || !isfinite(b) || !(fabsf(a - b) <= DQ_DELTA_MAX))
			return -EDOM;
	}
	for (size_t r = 0; r < nr && p->support; r++) {
		const size_t ro = r * cols;
		const uint64_t rkey = dq_rowkey(p->seed, r0 + r);
		size_t c = 0, sp[DQ_GROUP_MAX];
		uint32_t L;

		for (uint64_t grp = 0; (L = dq_next_group(dt, base, ro, cols, &c, p->group, sp)); grp++) {
			uint32_t kk = dq_kk(L, p->group, p->keep);
			float f = dq_factor(p->rescale, L, kk);

			if (kk < L)
				dq_positions(rkey, grp, L, kk, pos);
			for (uint32_t j = 0; j < kk; j++) {
				size_t i = ro + sp[kk < L ? pos[j] : j];

				v[k++] = (dq_ld(dt, ft, i) - dq_ld(dt, base, i)) * f;
			}
		}
	}
	for (size_t r = 0; r < nr && !p->support; r++) {
		const size_t ro = r * cols;
		const uint64_t rkey = dq_rowkey(p->seed, r0 + r);
		uint64_t grp = 0;

		for (size_t st = 0; st < cols; st += p->group, grp++) {
			uint32_t L = (uint32_t)(cols - st < p->group ? cols - st : p->group);
			uint32_t kk = dq_kk(L, p->group, p->keep);
			float f = dq_factor(p->rescale, L, kk);

			if (kk == L) {
				for (uint32_t i = 0; i < L; i++)
					v[k++] = (dq_ld(dt, ft, ro + st + i) - dq_ld(dt, base, ro + st + i)) * f;
				continue;
			}
			dq_positions(rkey, grp, L, kk, pos);
			for (uint32_t j = 0; j < kk; j++) {
				size_t i = ro + st + pos[j];

				v[k++] = (dq_ld(dt, ft, i) - dq_ld(dt, base, i)) * f;
			}
		}
	}
	return 0;
}

/* Kept values of level set s (rows s * srows.. of the nr rows of base, cols wide). */
static size_t dq_set_kept(dt_id dt, const uint8_t *base, size_t cols, size_t nr, size_t srows,
			  size_t s, const dq_params *p)
{
	size_t r0 = s * srows;

	return dq_kept(dt, base + r0 * cols * dq_esize(dt), cols, nr - r0 < srows ? nr - r0 : srows,
		       p->group, p->keep, (int)p->support);
}

/* Write the planes of n indices with `lo` low bits at out; bytes written or negative errno. */
static ssize_t dq_put_planes(cx_ctx *cx, ZSTD_CCtx *cc, uint8_t *out, size_t cap, uint8_t *work,
			     const uint16_t *idx, size_t n, unsigned bits, unsigned lo)
{
	size_t hl = cx_plane_len(n, bits - lo);
	ssize_t a, b = 0;

	cx_pack(work, idx, n, lo, bits - lo);
	a = cx_put_plane(cx, cc, out, cap, work, hl, !lo);
	if (a < 0 || !lo)
		return a;
	cx_pack(work, idx, n, 0, lo);
	b = cx_put_plane(cx, cc, out + a, cap - (size_t)a, work, cx_plane_len(n, lo), 1);
	return b < 0 ? b : a + b;
}

ssize_t dq_encode(cx_ctx *cx, void *dst, size_t cap, const void *ft, const void *base, dt_id dt,
		  size_t cols, size_t r0, size_t nr, const dq_params *p)
{
	uint8_t *d = dst, *work, *alt;
	size_t n = 0, srows, nsets, nlev, lvsz, off, wcap, pcap, kmax = 0;
	float *vals;
	uint16_t *idx;
	ZSTD_CCtx *cc;
	unsigned lo;
	ssize_t a;
	int rc;

	if (!cx || !dst || !ft || !base || !p || !dq_esize(dt) || !cols || !nr || dq_check_params(p))
		return -EINVAL;
	srows = p->srows < nr ? p->srows : nr;
	nsets = (nr + srows - 1) / srows;
	for (size_t s = 0; s < nsets; s++) { /* support mode: sets differ in size, some may be empty */
		size_t k = dq_set_kept(dt, base, cols, nr, srows, s, p);

		n += k;
		kmax = k > kmax ? k : kmax;
	}
	nlev = dq_nlev_stored(DQ_VERSION, p->quant, p->bits);
	lvsz = dq_lvsize(DQ_VERSION, p->bits);
	pcap = cx_plane_len(n, p->bits) + 2 * (CX_VMAX + 1) + 2;
	wcap = kmax * (sizeof(float) + sizeof(double)) + 16;
	if (wcap < pcap)
		wcap = pcap;
	vals = cx_scratch(cx, DQ_S_VALS, (n + 1) * sizeof *vals); /* + 1: n may be 0 */
	idx = cx_scratch(cx, DQ_S_IDX, (n + 1) * sizeof *idx);
	work = cx_scratch(cx, DQ_S_WORK, wcap);
	cc = cx_cctx(cx);
	if (!vals || !idx || !work || !cc)
		return -ENOMEM;
	switch (dt) {
	case DT_F32: rc = dq_gather(DT_F32, vals, ft, base, cols, r0, nr, p); break;
	case DT_F16: rc = dq_gather(DT_F16, vals, ft, base, cols, r0, nr, p); break;
	default: rc = dq_gather(DT_BF16, vals, ft, base, cols, r0, nr, p); break;
	}
	if (rc)
		return rc;

	off = dq_hdr_len(p, cols, r0, nr, srows);
	if (cap < off + nsets * nlev * lvsz)
		return -ENOBUFS;
	d[0] = CX_MAGIC;
	d[1] = CX_DELTADQ;
	d[2] = DQ_VERSION;
	d[3] = (uint8_t)((p->quant == DQ_Q_PALETTE ? DQ_Q_KMEANS : p->quant) | /* same table on disk */
			 dq_dtcode(dt) << 2 | (p->keep < p->group ? DQ_F_DROP : 0) |
			 (srows < nr ? DQ_F_SETS : 0) | (r0 || p->seed ? DQ_F_KEY : 0) |
			 (p->support ? DQ_SUPPORT : 0));
	/* d[4] = bits - 1 | lo << 4, below */
	off = DQ_FIXHDR;
	off += cx_vput(d + off, cols);
	if (p->keep < p->group) {
		off += cx_vput(d + off, p->group);
		off += cx_vput(d + off, p->keep);
	}
	if (srows < nr)
		off += cx_vput(d + off, srows);
	if (r0 || p->seed) {
		off += cx_vput(d + off, r0);
		off += cx_vput(d + off, p->seed);
	}
	/* The levels' scale 2^e puts the largest kept value at 2^12..2^13 in F16: every stored value
	 * (levels within the values' range, a zero step at most 4 rms, a uniform step at most the
	 * range) stays below F16's 65504 with 11 significant bits. */
	float mx = 0, scale;
	int e = 0;

	for (size_t i = 0; i < n; i++)
		mx = fabsf(vals[i]) > mx ? fabsf(vals[i]) : mx;
	if (mx > 0)
		e = ilogbf(mx) - 12;
	e = e < -128 ? -128 : e > 127 ? 127 : e;
	scale = lvsz == 2 ? dq_pow2(e) : 0;
	d[off++] = (uint8_t)(int8_t)e;
	for (size_t s = 0, b = 0; s < nsets; s++) {
		size_t en = b + dq_set_kept(dt, base, cols, nr, srows, s, p);
		float lv[(size_t)1 << DQ_KMEANS_MAXBITS];
		const float *st = p->quant == DQ_Q_ZERO ? lv + 1 : lv; /* zero: the step alone */

		if (en == b) /* support mode, rows without a support: levels that nothing uses */
			memset(lv, 0, sizeof lv);
		else if (p->quant == DQ_Q_UNIFORM)
			dq_uniform(vals + b, en - b, p->bits, idx + b, lv, scale);
		else if (p->quant == DQ_Q_ZERO)
			dq_zero(vals + b, en - b, p->bits, idx + b, lv, scale);
		else if (p->quant == DQ_Q_KMEANS)
			dq_kmeans(vals + b, en - b, p->bits, idx + b, lv, work, scale);
		else if ((a = dq_palette(vals + b, en - b, p->bits, idx + b, lv, scale)))
			return a;
		for (size_t k = 0; k < nlev; k++) { /* exact: the quantisers rounded them */
			uint16_t hv = scale ? hf_f32_to_f16(st[k] / scale) : 0;

			memcpy(d + off, scale ? (const void *)&hv : (const void *)&st[k], lvsz);
			off += lvsz;
		}
		b = en;
	}

	ZSTD_CCtx_reset(cc, ZSTD_reset_session_and_parameters);
	if (ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, DQ_ZLEVEL)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0)))
		return -ENOMEM;
	lo = p->split ? p->split - 1u : 0;
	a = dq_put_planes(cx, cc, d + off, cap - off, work, idx, n, p->bits, lo);
	if (a < 0 && (a != -ENOBUFS || p->split))
		return a;
	if (!p->split && p->bits >= 2) {
		ssize_t b;

		alt = cx_scratch(cx, DQ_S_ALT, pcap);
		if (!alt)
			return -ENOMEM;
		b = dq_put_planes(cx, cc, alt, pcap, work, idx, n, p->bits, p->bits / 2);
		if (b < 0)
			return b;
		if (a < 0 || b < a) {
			if ((size_t)b > cap - off)
				return -ENOBUFS;
			memcpy(d + off, alt, (size_t)b);
			a = b;
			lo = p->bits / 2;
		}
	}
	if (a < 0)
		return a;
	d[4] = (uint8_t)((p->bits - 1u) | lo << 4);
	return (ssize_t)(off + (size_t)a);
}

/* ---- decode ---------------------------------------------------------------------------------- */

/* Unpack n w-bit fields (LSB first) of plane p into idx; with `merge`, shift the indices already
 * there left by w and OR the field in (the low plane after the high one). Widths 1, 2, 4 and 8
 * (what the planes of 1, 2, 4 and 8 bits, and the halves of 2, 4 and 8, use) run a loop per byte
 * that gcc unrolls and vectorises; others go through the 64-bit bit reader. */
AI void dq_unpack_w(uint16_t *restrict idx, const uint8_t *restrict p, size_t n, unsigned w,
		    int merge)
{
	const unsigned per = 8 / w;
	const uint32_t mask = (1u << w) - 1;
	size_t i = 0;

	if (w == 1 || w == 2 || w == 4 || w == 8) {
		for (; i + per <= n; i += per) {
			const uint32_t byte = p[i / per];

			for (unsigned j = 0; j < per; j++) {
				uint16_t v = (uint16_t)(byte >> (j * w) & mask);

				idx[i + j] = merge ? (uint16_t)(idx[i + j] << w | v) : v;
			}
		}
	}
	for (; i < n; i++) {
		uint16_t v = (uint16_t)cx_bits(p, i * w, w);

		idx[i] = merge ? (uint16_t)(idx[i] << w | v) : v;
	}
}

static void dq_unpack(uint16_t *idx, const uint8_t *p, size_t n, unsigned w, int merge)
{
	switch (w) {
	case 1: merge ? dq_unpack_w(idx, p, n, 1, 1) : dq_unpack_w(idx, p, n, 1, 0); break;
	case 2: merge ? dq_unpack_w(idx, p, n, 2, 1) : dq_unpack_w(idx, p, n, 2, 0); break;
	case 4: merge ? dq_unpack_w(idx, p, n, 4, 1) : dq_unpack_w(idx, p, n, 4, 0); break;
	case 8: merge ? dq_unpack_w(idx, p, n, 8, 1) : dq_unpack_w(idx, p, n, 8, 0); break;
	default: merge ? dq_unpack_w(idx, p, n, w, 1) : dq_unpack_w(idx, p, n, w, 0); break;
	}
}

/* Levels of one set for wide (> 8 bit) uniform and zero indices, computed per element. */
typedef struct dq_uset {
	double mn, step;
} dq_uset;

/* Level of index q of a set: from its table (bits <= 8) or computed. */
AI float dq_level(const float *tab, const dq_uset *us, uint32_t q)
{
	return tab ? tab[q] : dq_ulevel(us->mn, us->step, q);
}

typedef float dq_f32x4 __attribute__((vector_size(16)));
typedef uint32_t dq_u32x4 __attribute__((vector_size(16)));
typedef int32_t dq_i32x4 __attribute__((vector_size(16)));

/* BF16 bits (in the low 16 bits of each lane) of float bits x, round to nearest even as
 * hf_f32_to_bf16 (NaN stays NaN). */
AI dq_u32x4 dq_bf16x4(dq_u32x4 x)
{
	dq_u32x4 nan = (dq_u32x4)((dq_i32x4)(x & 0x7fffffffu) > 0x7f800000);

	return ((x + 0x7fff + (x >> 16 & 1)) >> 16 & ~nan) | ((x >> 16 | 0x40) & nan);
}

/* out[i] = base[i] + d[i] rounded into the dtype, or base[i]'s bits where d[i] is -0.0 (not kept):
 * one pass over a row of n elements, 4 floats at a time in GCC vector types (BF16, F32: float adds
 * and integer rounding, no FMA possible, so the bytes are the same everywhere); F16 element by
 * element through half.h. BF16 reads 8 elements (16 bytes, 4 u32 lanes) at a time: a lane's two
 * BF16 halves widen to float with a shift and a mask and narrow back with a shift and an or, and
 * d's 8 floats are split into the even and the odd ones by two shuffles (d used to be stored in
 * that order instead, at ~10 instructions per kept element to compute where). `clear`: write -0.0
 * back over d as it is read, ready for the next row's scatter (cheaper than a loop of its own). */
AI void dq_addrow(int dt, int clear, uint8_t *restrict out, const uint8_t *restrict base,
		  float *restrict d, size_t n)
{
	const dq_u32x4 neg0 = { 0x80000000u, 0x80000000u, 0x80000000u, 0x80000000u };
	size_t i = 0;

	for (; dt == DT_BF16 && i + 8 <= n; i += 8) {
		dq_u32x4 w, de, dd, be, bo, xe, xo, se, so, d0, d1;
		dq_f32x4 fe, fo;

		memcpy(&w, base + 2 * i, 16);
		memcpy(&d0, d + i, 16);
		memcpy(&d1, d + i + 4, 16);
		if (clear) {
			memcpy(d + i, &neg0, 16);
			memcpy(d + i + 4, &neg0, 16);
		}
#ifdef __clang__
		de = __builtin_shufflevector(d0, d1, 0, 2, 4, 6);
		dd = __builtin_shufflevector(d0, d1, 1, 3, 5, 7);
#else
		de = __builtin_shuffle(d0, d1, (dq_u32x4){ 0, 2, 4, 6 });
		dd = __builtin_shuffle(d0, d1, (dq_u32x4){ 1, 3, 5, 7 });
#endif
		be = w << 16;
		bo = w & 0xffff0000u;
		fe = (dq_f32x4)be + (dq_f32x4)de;
		fo = (dq_f32x4)bo + (dq_f32x4)dd;
		se = (dq_u32x4)(de == neg0);
		so = (dq_u32x4)(dd == neg0);
		xe = (dq_bf16x4((dq_u32x4)fe) & ~se) | (w & 0xffffu & se);
		xo = (dq_bf16x4((dq_u32x4)fo) & ~so) | (w >> 16 & so);
		w = xe | xo << 16;
		memcpy(out + 2 * i, &w, 16);
	}
	for (; dt == DT_F32 && i + 4 <= n; i += 4) {
		dq_u32x4 du, bu, x, s;
		dq_f32x4 dv, bf;

		memcpy(&du, d + i, 16);
		memcpy(&dv, d + i, 16);
		if (clear)
			memcpy(d + i, &neg0, 16);
		memcpy(&bu, base + 4 * i, 16);
		memcpy(&bf, base + 4 * i, 16);
		s = (dq_u32x4)(du == neg0);
		x = (dq_u32x4)(bf + dv);
		x = (x & ~s) | (bu & s);
		memcpy(out + 4 * i, &x, 16);
	}
	for (; i < n; i++) {
		uint32_t u;

		memcpy(&u, d + i, 4);
		if (u == 0x80000000u)
			memcpy(out + dq_esize((dt_id)dt) * i, base + dq_esize((dt_id)dt) * i,
			       dq_esize((dt_id)dt));
		else
			dq_st(dt, out, i, dq_ld(dt, base, i) + d[i]);
		if (clear)
			d[i] = -0.0f;
	}
}

/* Support mode: write nr rows of out from the base and the indices (unpacked into idx), element
 * by element (the support's positions come from a scan of the base row anyway). tab: nsets tables
 * of 2^bits floats, or NULL for wider indices, whose levels come from us (one per set). */
AI void dq_apply_support(int dt, int has_lut, uint8_t *restrict out, const uint8_t *restrict base,
			 const dq_hdr *h, const uint16_t *restrict idx, const float *lut,
			 const dq_uset *uset)
{
	const uint32_t g = (uint32_t)h->g, keep = (uint32_t)h->keep;
	const size_t cols = h->cols, nlut = (size_t)1 << h->bits, es = dq_esize((dt_id)dt);
	uint16_t pos[DQ_GROUP_MAX];

	for (size_t r = 0; r < h->nr; r++) {
		const size_t ro = r * cols, set = r / h->srows;
		const float *tab = has_lut ? lut + set * nlut : NULL;
		const dq_uset *us = has_lut ? NULL : uset + set;
		const uint64_t rkey = dq_rowkey(h->seed, h->r0 + r);
		size_t c = 0, sp[DQ_GROUP_MAX];
		uint32_t L;

		memcpy(out + ro * es, base + ro * es, cols * es);
		for (uint64_t grp = 0; (L = dq_next_group(dt, base, ro, cols, &c, g, sp)); grp++) {
			uint32_t kk = dq_kk(L, g, keep);

			if (kk < L)
				dq_positions(rkey, grp, L, kk, pos);
			for (uint32_t j = 0; j < kk; j++) {
				size_t i = ro + sp[kk < L ? pos[j] : j];

				dq_st(dt, out, i, dq_ld(dt, base, i) + dq_level(tab, us, idx[j]));
			}
			idx += kk;
		}
	}
}

/* The planes as dense decode reads them: the level index of kept value k (blob order) is bits
 * [k * wh, (k + 1) * wh) of hp, then (lo plane, wl > 0) shifted left by wl with bits
 * [k * wl, (k + 1) * wl) of lp or'ed in: what dq_unpack's two passes give, read in place. Each
 * plane has CX_PAD zero bytes after it for dq_get's 8-byte loads. */
typedef struct dq_planes {
	const uint8_t *hp, *lp;
	unsigned wh, wl;
} dq_planes;

AI uint32_t dq_q(const dq_planes *pl, size_t k)
{
	uint32_t q = cx_bits(pl->hp, k * pl->wh, pl->wh);

	return pl->wl ? q << pl->wl | cx_bits(pl->lp, k * pl->wl, pl->wl) : q;
}

/* 64 bits of plane p from bit bitpos on (the low 57 at least are valid; CX_PAD covers the load). */
AI uint64_t dq_get64(const uint8_t *p, size_t bitpos)
{
	uint64_t v;

	memcpy(&v, p + (bitpos >> 3), 8);
	return v >> (bitpos & 7);
}

/* The level values of the n kept values from k0 on (blob order) into lv[0..n). `one` (1-bit
 * levels, one plane, a table): 8 at a time, one plane byte selecting between the set's two levels
 * in two 4-lane vectors. Else 8 at a time from one 64-bit load per plane where the 8 indices fit
 * in it (widths up to 7 bits, or 8, which is byte-aligned), then one by one. */
AI void dq_levels(int one, float *restrict lv, const dq_planes *pl, size_t k0, size_t n,
		  const float *tab, const dq_uset *us)
{
	const unsigned wh = pl->wh, wl = pl->wl;
	size_t j = 0;

	if (one) {
		const dq_u32x4 m0 = { 1, 2, 4, 8 }, m1 = { 16, 32, 64, 128 };
		uint32_t u0, u1;
		dq_u32x4 l0, x;

		memcpy(&u0, tab, 4);
		memcpy(&u1, tab + 1, 4);
		l0 = (dq_u32x4){ u0, u0, u0, u0 };
		x = l0 ^ u1;
		for (; j + 8 <= n; j += 8) {
			const uint32_t by = cx_bits(pl->hp, k0 + j, 8);
			const dq_u32x4 bv = { by, by, by, by };
			dq_u32x4 v0 = l0 ^ (x & (dq_u32x4)((bv & m0) != 0));
			dq_u32x4 v1 = l0 ^ (x & (dq_u32x4)((bv & m1) != 0));

			memcpy(lv + j, &v0, 16);
			memcpy(lv + j + 4, &v1, 16);
		}
	} else if (wh <= 8 && wl <= 8) {
		const uint64_t mh = (1u << wh) - 1, ml = (1u << wl) - 1;

		for (; j + 8 <= n; j += 8) {
			const uint64_t vh = dq_get64(pl->hp, (k0 + j) * wh);
			const uint64_t vl = wl ? dq_get64(pl->lp, (k0 + j) * wl) : 0;

			for (unsigned i = 0; i < 8; i++) {
				uint32_t q = (uint32_t)(vh >> (i * wh) & mh);

				if (wl)
					q = q << wl | (uint32_t)(vl >> (i * wl) & ml);
				lv[j + i] = dq_level(tab, us, q);
			}
		}
	}
	for (; j < n; j++)
		lv[j] = dq_level(tab, us, dq_q(pl, k0 + j));
}

/* Element i of out from the base row already copied there: round(base + v), or the base's bits
 * (left as they are) where v is -0.0, as dq_addrow does. */
AI void dq_put1(int dt, uint8_t *restrict out, const uint8_t *restrict base, size_t i, float v)
{
	uint32_t u;

	memcpy(&u, &v, 4);
	if (u != 0x80000000u)
		dq_st(dt, out, i, dq_ld(dt, base, i) + v);
}

/* Test hook (tests/deltadq): 0 chooses by the kept fraction, 1 forces the dense path, 2 the
 * sparse one (for blobs with dropout). Not in deltadq.h: nothing but the test sets it. */
int dq_decode_path;

/* Keep at most this many of 64 and a chunk decodes sparse (below). */
#define DQ_SPARSE_MAX64 24

/* Dense mode: write nr rows of out from the base and the planes. tab: nsets tables of 2^bits
 * floats, or NULL for wider indices, whose levels come from us (one per set). Each row's kept
 * level values are first read from the planes into lv (blob order), then
 *   - dense (sparse == 0): scattered into the float row d (cols, -0.0 elsewhere; without dropout
 *     the levels are written there directly) and dq_addrow writes the row;
 *   - sparse: the base row is copied to out (memcpy) and each kept element gets round(base +
 *     level), element by element. Far cheaper when few are kept, no dense pass at all.
 * Both give the same bytes (dq_put1 is dq_addrow's rule for one element: test_deltadq checks).
 * Instantiated per dtype, level source and path, so the inner loops have no branch but the
 * position walk's. */
AI void dq_apply_dense(int dt, int has_lut, int one, int sparse, uint8_t *restrict out,
		       const uint8_t *restrict base, const dq_hdr *h, const dq_planes *pl,
		       const float *lut, const dq_uset *uset, float *restrict d)
{
	const uint32_t g = (uint32_t)h->g, keep = (uint32_t)h->keep;
	const size_t cols = h->cols, nlut = (size_t)1 << h->bits, es = dq_esize((dt_id)dt);
	const size_t dw = (cols + 3) & ~(size_t)3, kr = dq_row_kept(cols, g, keep);
	float *restrict lv = d + 2 * dw; /* kr floats */
	uint16_t pos[DQ_GROUP_MAX];

	/* Row r is scattered into one half of d while dq_addrow reads row r - 1 from the other: read
	 * right after the scalar stores, a 16-byte load stalls on store forwarding (a fifth of the
	 * decode time when it did). d: 2 rows of dw floats. */
	for (size_t r = 0; r <= h->nr; r++) {
		const size_t ro = r * cols, set = r / h->srows;
		const float *tab = has_lut ? lut + set * nlut : NULL;
		const dq_uset *us = has_lut ? NULL : uset + set;
		const uint64_t rkey = dq_rowkey(h->seed, h->r0 + r);
		float *dr = d + (r & 1) * dw;
		uint64_t grp = 0;
		size_t k = 0;

		if (r && !sparse)
			dq_addrow(dt, keep < g, out + (ro - cols) * es, base + (ro - cols) * es,
				  d + ((r - 1) & 1) * dw, cols);
		if (r == h->nr)
			break;
		if (keep == g) { /* no dropout: every element kept, in order */
			dq_levels(one, dr, pl, r * kr, cols, tab, us);
			continue;
		}
		dq_levels(one, lv, pl, r * kr, kr, tab, us);
		if (sparse) {
			memcpy(out + ro * es, base + ro * es, cols * es);
		} else if (r < 2) { /* later rows: dq_addrow cleared d behind it */
			for (size_t c = 0; c < dw; c++)
				dr[c] = -0.0f;
		}
		for (size_t st = 0; st < cols; st += g, grp++) {
			uint32_t L = (uint32_t)(cols - st < g ? cols - st : g);
			uint32_t kk = dq_kk(L, g, keep);

			if (kk == L) {
				for (uint32_t i = 0; i < L; i++)
					if (sparse)
						dq_put1(dt, out, base, ro + st + i, lv[k + i]);
					else
						dr[st + i] = lv[k + i];
				k += L;
				continue;
			}
			if (2 * kk > L) { /* kept ones ascending: walk the mask, no position list */
				uint64_t m[DQ_GROUP_MAX / 64];

				dq_dropmask(rkey, grp, L, kk, m);
				for (uint32_t w = 0; w < (L + 63) / 64; w++) {
					uint64_t kept = ~m[w] & (L - 64 * w >= 64 ? ~0ull
									    : (1ull << (L - 64 * w)) - 1);

					for (; kept; kept &= kept - 1, k++) {
						size_t c = st + 64 * w + (size_t)__builtin_ctzll(kept);

						if (sparse)
							dq_put1(dt, out, base, ro + c, lv[k]);
						else
							dr[c] = lv[k];
					}
				}
				continue;
			}
			dq_positions(rkey, grp, L, kk, pos);
			for (uint32_t j = 0; j < kk; j++)
				if (sparse)
					dq_put1(dt, out, base, ro + st + pos[j], lv[k + j]);
				else
					dr[st + pos[j]] = lv[k + j];
			k += kk;
		}
	}
}

#define DQ_APPLY(dt)                                                                               \
	static void dq_support_##dt(uint8_t *out, const uint8_t *base, const dq_hdr *h,            \
				    const uint16_t *idx, const float *lut, const dq_uset *us)      \
	{                                                                                          \
		if (lut)                                                                           \
			dq_apply_support(dt, 1, out, base, h, idx, lut, us);                       \
		else                                                                               \
			dq_apply_support(dt, 0, out, base, h, idx, lut, us);                       \
	}                                                                                          \
	static void dq_dense_##dt(uint8_t *out, const uint8_t *base, const dq_hdr *h,              \
				  const dq_planes *pl, const float *lut, const dq_uset *us,        \
				  float *d, int sparse)                                            \
	{                                                                                          \
		const int one = lut && pl->wh == 1 && !pl->wl;                                     \
		if (sparse && one)                                                                 \
			dq_apply_dense(dt, 1, 1, 1, out, base, h, pl, lut, us, d);                 \
		else if (sparse && lut)                                                            \
			dq_apply_dense(dt, 1, 0, 1, out, base, h, pl, lut, us, d);                 \
		else if (sparse)                                                                   \
			dq_apply_dense(dt, 0, 0, 1, out, base, h, pl, lut, us, d);                 \
		else if (one)                                                                      \
			dq_apply_dense(dt, 1, 1, 0, out, base, h, pl, lut, us, d);                 \
		else if (lut)                                                                      \
			dq_apply_dense(dt, 1, 0, 0, out, base, h, pl, lut, us, d);                 \
		else                                                                               \
			dq_apply_dense(dt, 0, 0, 0, out, base, h, pl, lut, us, d);                 \
	}
DQ_APPLY(DT_F32)
DQ_APPLY(DT_F16)
DQ_APPLY(DT_BF16)

/* Stored level value k of the set at lv: f32 (v1) or F16 times the scale (v2). */
static double dq_lvget(const dq_hdr *h, const uint8_t *lv, size_t k)
{
	uint16_t hv;
	float f;

	if (dq_lvsize(h->ver, h->bits) == 4) {
		memcpy(&f, lv + 4 * k, 4);
		return f;
	}
	memcpy(&hv, lv + 2 * k, 2);
	return hf_f16_to_f32(hv) * h->scale;
}

int dq_decode(cx_ctx *cx, void *dst, size_t n, const void *blob, size_t blen, const void *base)
{
	const uint8_t *b = blob;
	size_t esize, nk, srows, nsets, nlev, lvsz, lvoff, hl, ll, nlut = (size_t)1 << 8;
	uint8_t *planes;
	uint16_t *idx = NULL;
	float *lut = NULL, *drow = NULL;
	dq_uset *uset = NULL;
	dq_hdr h;
	int rc;

	if (!cx || (!dst && n))
		return -EINVAL;
	if (dq_parse(b, blen, &h))
		return -EBADMSG;
	if (!base)
		return -EINVAL;
	esize = dq_esize((dt_id)h.dt);
	if (h.ver > 1) /* v2: the rows follow from n */
		h.nr = h.cols <= n / esize ? n / esize / h.cols : 0;
	if (!h.nr || h.cols > n / esize || h.nr > n / esize / h.cols || h.nr * h.cols * esize != n)
		return -EBADMSG;
	/* support mode: the kept count follows from the base's zeros, which the blob must match
	 * (a plane of another size fails below) */
	nk = dq_kept(h.dt, base, h.cols, h.nr, (uint32_t)h.g, (uint32_t)h.keep, h.support);
	srows = h.srows < h.nr ? h.srows : h.nr;
	nsets = (h.nr + srows - 1) / srows;
	nlev = dq_nlev_stored(h.ver, h.quant, h.bits);
	lvsz = dq_lvsize(h.ver, h.bits);
	lvoff = h.off;
	if (nsets * nlev * lvsz > blen - lvoff)
		return -EBADMSG;
	h.srows = srows;
	h.off += nsets * nlev * lvsz;
	hl = cx_plane_len(nk, h.bits - h.lo);
	ll = h.lo ? cx_plane_len(nk, h.lo) : 0;
	planes = cx_scratch(cx, DQ_S_PLANES, hl + ll + 2 * CX_PAD);
	if (h.support) /* + 1: nk may be 0 */
		idx = cx_scratch(cx, DQ_S_IDX, (nk + 1) * sizeof *idx);
	else /* two float rows and a row's level values (dq_apply_dense) */
		drow = cx_scratch(cx, DQ_S_ROW,
				  (2 * ((h.cols + 3) & ~(size_t)3) +
				   dq_row_kept(h.cols, (uint32_t)h.g, (uint32_t)h.keep) + 1) *
					  sizeof *drow);
	if (!planes || (h.support ? !idx : !drow))
		return -ENOMEM;
	if ((rc = cx_get_plane(cx, b, blen, &h.off, planes, hl, h.ver > 1 && !h.lo)))
		return rc;
	if (h.lo && (rc = cx_get_plane(cx, b, blen, &h.off, planes + hl + CX_PAD, ll, h.ver > 1)))
		return rc;
	if (h.off != blen)
		return -EBADMSG;
	if (h.bits <= 8) {
		nlut = (size_t)1 << h.bits;
		lut = cx_scratch(cx, DQ_S_LUT, nsets * nlut * sizeof *lut);
		if (!lut)
			return -ENOMEM;
	} else if (!(uset = cx_scratch(cx, DQ_S_LUT, nsets * sizeof *uset))) {
		return -ENOMEM;
	}
	for (size_t s = 0; s < nsets; s++) {
		const uint8_t *lv = b + lvoff + s * nlev * lvsz;
		dq_uset u;

		if (h.quant == DQ_Q_KMEANS) {
			for (size_t j = 0; j < nlut; j++)
				lut[s * nlut + j] = (float)dq_lvget(&h, lv, j);
			continue;
		}
		if (h.ver > 1 && h.quant == DQ_Q_ZERO && h.bits == 1) { /* -s, +s */
			u.mn = -dq_lvget(&h, lv, 0);
			u.step = -2 * u.mn;
		} else if (h.ver > 1 && h.quant == DQ_Q_ZERO) { /* min = -K * step, exact in double */
			u.step = dq_lvget(&h, lv, 0);
			u.mn = -(double)((1u << (h.bits - 1)) - 1) * u.step;
		} else {
			u.mn = dq_lvget(&h, lv, 0);
			u.step = dq_lvget(&h, lv, 1);
		}
		if (uset)
			uset[s] = u;
		else
			for (size_t j = 0; j < nlut; j++)
				lut[s * nlut + j] = dq_ulevel(u.mn, u.step, (uint32_t)j);
	}
	if (!h.support) {
		const dq_planes pl = { planes, planes + hl + CX_PAD, h.bits - h.lo, h.lo };
		const int sparse = h.keep < h.g && (dq_decode_path ? dq_decode_path == 2
						   : 64 * h.keep <= DQ_SPARSE_MAX64 * h.g);

		switch (h.dt) {
		case DT_F32: dq_dense_DT_F32(dst, base, &h, &pl, lut, uset, drow, sparse); break;
		case DT_F16: dq_dense_DT_F16(dst, base, &h, &pl, lut, uset, drow, sparse); break;
		default: dq_dense_DT_BF16(dst, base, &h, &pl, lut, uset, drow, sparse); break;
		}
		return 0;
	}
	dq_unpack(idx, planes, nk, h.bits - h.lo, 0);
	if (h.lo)
		dq_unpack(idx, planes + hl + CX_PAD, nk, h.lo, 1);
	switch (h.dt) {
	case DT_F32: dq_support_DT_F32(dst, base, &h, idx, lut, uset); break;
	case DT_F16: dq_support_DT_F16(dst, base, &h, idx, lut, uset); break;
	default: dq_support_DT_BF16(dst, base, &h, idx, lut, uset); break;
	}
	return 0;
}

static int dq_needs_base(const uint8_t *b, size_t blen)
{
	dq_hdr h;

	return dq_parse(b, blen, &h) ? -EBADMSG : 1;
}

const struct cx_codec_ops dq_ops = {
	.decode = dq_decode,
	.needs_base = dq_needs_base,
};

/* ---- parameter search ------------------------------------------------------------------------ */

#define DQ_TOL 0.05          /* sample estimates must land this close; the real bytes within 10% */
#define DQ_SAMPLE (1u << 16) /* elements the search encodes per candidate */
#define DQ_MAXBLK 8
#define DQ_MAXEV 512

typedef struct dq_eval {
	dq_params p;
	double err;   /* selection metric: squared relative output (or delta) error */
	double bytes; /* estimated (sample) or real bytes of the whole matrix */
} dq_eval;

typedef struct dq_pc {
	cx_ctx *cx;
	const uint8_t *ft, *base;
	dt_id dt;
	unsigned esize;
	size_t rows, cols, crow;
	size_t gcols; /* elements a row's groups run over: cols, or the widest support */
	const float *X;
	size_t nprobe;
	double orig, target; /* bytes; target 0: no size constraint */
	size_t nblk, blk0[DQ_MAXBLK], blkn[DQ_MAXBLK], srow; /* sample blocks; srow: rows in them */
	uint8_t *blob, *dec;
	size_t blobcap;
	float *w, *e; /* a row of W_ft and of the delta's error */
	dq_eval ev[DQ_MAXEV];
	size_t nev;
} dq_pc;

static double dq_dot(const float *a, const float *b, size_t n)
{
	float acc[8] = { 0 };
	double s = 0;
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			acc[j] += a[i + j] * b[i + j];
	for (int j = 0; j < 8; j++)
		s += acc[j];
	for (; i < n; i++)
		s += (double)a[i] * b[i];
	return s;
}

static float dq_ldr(dt_id dt, const uint8_t *p, size_t i)
{
	return dt == DT_F32 ? dq_ld(DT_F32, p, i) : dt == DT_F16 ? dq_ld(DT_F16, p, i) : dq_ld(DT_BF16, p, i);
}

/* Accumulate over rows r0..r0+nr-1, decoded into dec: acc[0] ||dW - dW'||^2, acc[1] ||dW||^2,
 * acc[2] ||X (dW - dW')^T||^2, acc[3] ||X W_ft^T||^2. */
static void dq_errs(dq_pc *pc, size_t r0, size_t nr, const uint8_t *dec, double acc[4])
{
	const size_t cols = pc->cols;

	for (size_t r = 0; r < nr; r++) {
		const size_t i0 = (r0 + r) * cols;

		for (size_t c = 0; c < cols; c++) {
			float w = dq_ldr(pc->dt, pc->ft, i0 + c), b = dq_ldr(pc->dt, pc->base, i0 + c);
			float d = w - b, dd = dq_ldr(pc->dt, dec, r * cols + c) - b;

			pc->w[c] = w;
			pc->e[c] = d - dd;
			acc[0] += (double)pc->e[c] * pc->e[c];
			acc[1] += (double)d * d;
		}
		for (size_t p = 0; p < pc->nprobe; p++) {
			double ye = dq_dot(pc->X + p * cols, pc->e, cols);
			double yw = dq_dot(pc->X + p * cols, pc->w, cols);

			acc[2] += ye * ye;
			acc[3] += yw * yw;
		}
	}
}

/* Header and level bytes of the chunk of nr rows at r0: known without encoding. */
static size_t dq_fixed_bytes(const dq_params *p, size_t cols, size_t r0, size_t nr)
{
	size_t srows = p->srows < nr ? p->srows : nr;

	return dq_hdr_len(p, cols, r0, nr, srows) +
	       (nr + srows - 1) / srows * dq_nlev_stored(DQ_VERSION, p->quant, p->bits) *
		       dq_lvsize(DQ_VERSION, p->bits);
}

static double dq_fixed_all(const dq_pc *pc, const dq_params *p)
{
	double f = 0;

	for (size_t r0 = 0; r0 < pc->rows; r0 += pc->crow)
		f += (double)dq_fixed_bytes(p, pc->cols, r0,
					    pc->rows - r0 < pc->crow ? pc->rows - r0 : pc->crow);
	return f;
}

/* Encode + decode rows [r0, r0 + nr); adds the blob size to *bytes, the errors to acc. */
static int dq_run(dq_pc *pc, const dq_params *p, size_t r0, size_t nr, double *bytes, double acc[4])
{
	const size_t off = r0 * pc->cols * pc->esize, n = nr * pc->cols * pc->esize;
	ssize_t z = dq_encode(pc->cx, pc->blob, pc->blobcap, pc->ft + off, pc->base + off, pc->dt,
			      pc->cols, r0, nr, p);
	int rc;

	if (z < 0)
		return (int)z;
	if ((rc = dq_decode(pc->cx, pc->dec, n, pc->blob, (size_t)z, pc->base + off)))
		return rc;
	*bytes += (double)z;
	dq_errs(pc, r0, nr, pc->dec, acc);
	return 0;
}

static double dq_metric(const dq_pc *pc, const double acc[4])
{
	if (pc->nprobe)
		return acc[3] > 0 ? acc[2] / acc[3] : acc[2];
	return acc[1] > 0 ? acc[0] / acc[1] : acc[0];
}

/* Evaluate p on the sample blocks; record it. */
static int dq_try(dq_pc *pc, const dq_params *p, dq_eval **out)
{
	double acc[4] = { 0 }, bytes = 0, fixed = 0;
	dq_eval *ev;
	int rc;

	for (size_t i = 0; i < pc->nev; i++)
		if (!memcmp(&pc->ev[i].p, p, sizeof *p)) {
			*out = &pc->ev[i];
			return 0;
		}
	if (pc->nev == DQ_MAXEV)
		return -ENOMEM;
	for (size_t i = 0; i < pc->nblk; i++) {
		if ((rc = dq_run(pc, p, pc->blk0[i], pc->blkn[i], &bytes, acc)))
			return rc;
		fixed += (double)dq_fixed_bytes(p, pc->cols, pc->blk0[i], pc->blkn[i]);
	}
	ev = &pc->ev[pc->nev++];
	ev->p = *p;
	ev->err = dq_metric(pc, acc);
	ev->bytes = dq_fixed_all(pc, p) + (bytes - fixed) * (double)pc->rows / (double)pc->srow;
	*out = ev;
	return 0;
}

static int dq_fits(const dq_pc *pc, double bytes, double tol)
{
	return !pc->target || fabs(pc->target / bytes - 1) <= tol;
}

/* keep that moves ev's bytes to the target, assuming plane bytes proportional to the kept count */
static uint32_t dq_rekeep(const dq_pc *pc, const dq_eval *ev)
{
	double f = dq_fixed_all(pc, &ev->p), k;

	if (ev->bytes <= f || pc->target <= f)
		return 1;
	k = ev->p.keep * (pc->target - f) / (ev->bytes - f);
	return k < 1 ? 1 : k > ev->p.group ? ev->p.group : (uint32_t)lrint(k);
}

/* Try p with keep free: start at kstart, then move keep toward the target twice. */
static int dq_try_keep(dq_pc *pc, dq_params p, uint32_t kstart, int keep_free, dq_eval **best)
{
	dq_eval *ev;
	int rc;

	p.keep = kstart;
	for (int i = 0; i < 3; i++) {
		uint32_t k;

		if ((rc = dq_try(pc, &p, &ev)))
			return rc;
		if (!*best || (dq_fits(pc, ev->bytes, DQ_TOL) &&
			       (!dq_fits(pc, (*best)->bytes, DQ_TOL) || ev->err < (*best)->err)))
			*best = ev;
		if (!keep_free || dq_fits(pc, ev->bytes, DQ_TOL / 2))
			break;
		k = dq_rekeep(pc, ev);
		if (k == p.keep)
			break;
		p.keep = k;
	}
	return 0;
}

/* The best fitting candidate of the evaluated ones, else the one closest to the target. */
static dq_eval *dq_pick(dq_pc *pc, double tol)
{
	dq_eval *b = NULL, *c = NULL;

	for (size_t i = 0; i < pc->nev; i++) {
		dq_eval *e = &pc->ev[i];

		if (dq_fits(pc, e->bytes, tol) && (!b || e->err < b->err))
			b = e;
		if (!c || fabs(log(pc->target / e->bytes)) < fabs(log(pc->target / c->bytes)))
			c = e;
	}
	return b ? b : c;
}

static uint32_t dq_keep_for(const dq_params *fx, uint32_t g)
{
	long k;

	if (fx->keep)
		return fx->keep;
	k = lrint((double)fx->keep_frac * g);
	return k < 1 ? 1 : k > (long)g ? g : (uint32_t)k;
}

/* Encode every chunk for real; fill st. */
static int dq_full(dq_pc *pc, const dq_params *p, dq_stats *st)
{
	double acc[4] = { 0 }, bytes = 0;
	int rc;

	for (size_t r0 = 0; r0 < pc->rows; r0 += pc->crow)
		if ((rc = dq_run(pc, p, r0, pc->rows - r0 < pc->crow ? pc->rows - r0 : pc->crow, &bytes,
				 acc)))
			return rc;
	st->bytes = (uint64_t)bytes;
	st->bits_per_weight = 8 * bytes / ((double)pc->rows * pc->cols);
	st->delta_rel_err = acc[1] > 0 ? sqrt(acc[0] / acc[1]) : 0;
	st->output_rel_err = pc->nprobe && acc[3] > 0 ? sqrt(acc[2] / acc[3]) : 0;
	return 0;
}

static int dq_check_fixed(const dq_params *f)
{
	if (f->group > DQ_GROUP_MAX || (f->group && f->keep > f->group) || !(f->keep_frac >= 0) ||
	    f->keep_frac > 1 || f->bits > 16 || f->quant > DQ_Q_PALETTE ||
	    ((f->quant == DQ_Q_KMEANS || f->quant == DQ_Q_PALETTE) && f->bits > DQ_KMEANS_MAXBITS) ||
	    f->split > 17 ||
	    (f->bits && f->split > f->bits) || f->rescale > DQ_RESCALE_NONE || f->support > 1)
		return -EINVAL;
	return 0;
}

static int dq_search(dq_pc *pc, const dq_params *fx, dq_params *out, dq_stats *st)
{
	static const uint8_t qs[] = { DQ_Q_KMEANS, DQ_Q_UNIFORM, DQ_Q_ZERO };
	static const uint8_t bs[] = { 1, 2, 3, 4, 6, 8 };
	const int keep_free = !fx->keep && !fx->keep_frac;
	size_t srs[3] = { 1, 8, pc->crow }, nsr = fx->srows ? 1 : pc->crow > 8 ? 3 : pc->crow > 1 ? 2 : 1;
	uint32_t g0 = fx->group;
	dq_eval *best = NULL, *top[3] = { NULL, NULL, NULL };
	dq_params p = *fx;
	int rc;

	if (fx->srows)
		srs[0] = fx->srows;
	if (!g0) { /* 128, or the power of two at or above a narrower row */
		g0 = 128;
		while (g0 > 8 && g0 / 2 >= pc->gcols)
			g0 /= 2;
		if (fx->keep > g0)
			g0 = fx->keep;
	}
	p.group = g0;
	p.rescale = fx->rescale ? fx->rescale : DQ_RESCALE_FULL;

	/* Stage 1: quantiser x bits x level-set rows at group g0, keep moved to the target. */
	for (size_t qi = 0; qi < sizeof qs; qi++)
		for (size_t bi = 0; bi < sizeof bs; bi++)
			for (size_t si = 0; si < nsr; si++) {
				dq_eval *b = NULL;

				p.quant = fx->quant ? fx->quant : qs[qi];
				p.bits = fx->bits ? fx->bits : bs[bi];
				p.srows = (uint32_t)srs[si];
				if ((fx->quant && qi) || (fx->bits && bi) ||
				    ((p.quant == DQ_Q_KMEANS || p.quant == DQ_Q_PALETTE) && p.bits > DQ_KMEANS_MAXBITS) ||
				    (fx->split && fx->split > p.bits))
					continue;
				rc = dq_try_keep(pc, p, keep_free ? g0 : dq_keep_for(fx, g0), keep_free, &b);
				if (rc)
					return rc;
				if (!dq_fits(pc, b->bytes, DQ_TOL))
					continue;
				for (int t = 0; t < 3; t++) /* keep the three best configurations */
					if (!top[t] || b->err < top[t]->err) {
						memmove(top + t + 1, top + t, (size_t)(2 - t) * sizeof *top);
						top[t] = b;
						break;
					}
			}

	/* Stage 2: every group size for the three best (pc->ev only grows: top[] stays valid). */
	for (int t = 0; t < 3 && top[t] && !fx->group; t++) {
		dq_params q = top[t]->p;
		double frac = (double)q.keep / q.group;

		for (uint32_t g = 8; g <= DQ_GROUP_MAX && g / 2 < pc->gcols; g *= 2) {
			dq_eval *b = NULL;
			long k = lrint(frac * g);

			if (g == g0)
				continue;
			q.group = g;
			k = keep_free ? (k < 1 ? 1 : k > (long)g ? (long)g : k) : (long)dq_keep_for(fx, g);
			if ((rc = dq_try_keep(pc, q, (uint32_t)k, keep_free, &b)))
				return rc;
		}
	}

	/* Stage 3: the rescale exponent of the best. */
	best = dq_pick(pc, DQ_TOL);
	if (!fx->rescale && best->p.keep < best->p.group) {
		dq_params q = best->p;
		dq_eval *b;

		for (uint8_t r = DQ_RESCALE_HALF; r <= DQ_RESCALE_NONE; r++) {
			q.rescale = r;
			if ((rc = dq_try(pc, &q, &b)))
				return rc;
		}
		best = dq_pick(pc, DQ_TOL);
	}

	/* Real bytes: move keep until within 10% (the sample may mispredict a little). */
	p = best->p;
	for (int i = 0; i < 6; i++) {
		dq_eval e = { .p = p };
		uint32_t k;

		if ((rc = dq_full(pc, &p, st)))
			return rc;
		*out = p;
		out->keep_frac = (float)p.keep / (float)p.group;
		if (dq_fits(pc, (double)st->bytes, 0.10) || !keep_free)
			break;
		e.bytes = (double)st->bytes;
		k = dq_rekeep(pc, &e);
		if (k == p.keep)
			k = st->bytes > pc->target ? p.keep - (p.keep > 1) : p.keep + (p.keep < p.group);
		if (k == p.keep)
			break;
		p.keep = k;
	}
	return dq_fits(pc, (double)st->bytes, 0.10) ? 0 : -ERANGE;
}

int dq_plan(cx_ctx *cx, const void *ft, const void *base, dt_id dt, size_t rows, size_t cols,
	    const float *X, size_t nprobe, double ratio, const dq_params *fixed, dq_params *out,
	    dq_stats *st)
{
	dq_params fx = { 0 };
	dq_pc *pc;
	size_t es = dq_esize(dt), srow = 0;
	int rc, size_free;

	if (fixed)
		fx = *fixed;
	if (!cx || !out || !st || !es || (nprobe && !X) || dq_check_fixed(&fx))
		return -EINVAL;
	size_free = !(fx.group && (fx.keep || fx.keep_frac) && fx.bits);
	if (size_free && !(ratio > 1))
		return -EINVAL;
	if (!rows || !cols)
		return -EDOM;
	if (!ft || !base)
		return -EINVAL;
	for (size_t i = 0; i < rows * cols; i++) {
		float a = dq_ldr(dt, ft, i), b = dq_ldr(dt, base, i);

		if (!isfinite(a) || !isfinite(b) || !(fabsf(a - b) <= DQ_DELTA_MAX))
			return -EDOM;
	}
	pc = calloc(1, sizeof *pc);
	if (!pc)
		return -ENOMEM;
	*pc = (dq_pc){ .cx = cx, .ft = ft, .base = base, .dt = dt, .esize = (unsigned)es,
		       .rows = rows, .cols = cols, .crow = dq_chunk_rows(cols, (unsigned)es),
		       .X = X, .nprobe = nprobe, .orig = (double)rows * cols * es };
	pc->target = size_free ? pc->orig / ratio : 0;
	pc->gcols = cols;
	if (fx.support) {
		pc->gcols = 0;
		for (size_t r = 0; r < rows; r++) {
			size_t s = dq_support_len(dt, (const uint8_t *)base + r * cols * es, cols);

			pc->gcols = s > pc->gcols ? s : pc->gcols;
		}
	}
	if (pc->crow > rows)
		pc->crow = rows;
	if (rows * cols <= 2 * DQ_SAMPLE && (rows + pc->crow - 1) / pc->crow <= DQ_MAXBLK) {
		/* small: the sample is the matrix, chunk by chunk, so the estimate is exact */
		for (size_t r0 = 0; r0 < rows; r0 += pc->crow, pc->nblk++) {
			pc->blk0[pc->nblk] = r0;
			pc->blkn[pc->nblk] = rows - r0 < pc->crow ? rows - r0 : pc->crow;
		}
	} else {
		size_t br = DQ_SAMPLE / 4 / cols;

		br = br < 1 ? 1 : br > pc->crow ? pc->crow : br;
		for (size_t i = 0; i < 4; i++, pc->nblk++) {
			pc->blk0[i] = i * (rows - br) / 3;
			pc->blkn[i] = br;
		}
	}
	for (size_t i = 0; i < pc->nblk; i++)
		srow += pc->blkn[i];
	pc->srow = srow;
	pc->blobcap = dq_bound(pc->crow, cols, (unsigned)es);
	pc->blob = malloc(pc->blobcap);
	pc->dec = malloc(pc->crow * cols * es);
	pc->w = malloc(2 * cols * sizeof(float));
	pc->e = pc->w ? pc->w + cols : NULL;
	rc = pc->blob && pc->dec && pc->w ? dq_search(pc, &fx, out, st) : -ENOMEM;
	free(pc->blob);
	free(pc->dec);
	free(pc->w);
	free(pc);
	return rc;
}
