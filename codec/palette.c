/*
 * palette.c -- palette quantization: histogram k-means, encode, decode (format: palette.h).
 *
 * Data path. Fit: one counting pass (65,536 bins), the non-empty bins in value order, prefix sums
 * of count, count * value, count * value^2; the optimal split by divide-and-conquer dynamic
 * programming (pal_optimal), then Lloyd (pal_lloyd: a cluster is the range between two
 * midpoints, found by binary search, its mean two lookups). Encode: the table rounded to the
 * dtype, each element's index by a branch-free binary search over the midpoints into scratch slot
 * 0, the indices packed at 1, 2, 4 or 8 bits into slot 1 and compressed into the blob; if the
 * frame is not smaller than `bits`-bit dense packing, the dense payload is written instead.
 * Decode: for PAL_ZSTD one frame into slot 0; then, for widths 1, 2, 4, 8, a lookup per packed
 * byte in a 256-entry table of 8 / w elements (pal_map_bytes), or, for the dense widths 3, 5, 6,
 * 7, fixed-shift unpacking of 8 indices per w-byte word and a lookup per element. Nothing is
 * allocated on the decode path but the scratch slot.
 *
 * Measured with tests/palette/bench_palette.c (2 shared cores, best of several runs; data:
 * synthetic normal(0, 0.02) 4096 x 4096 BF16, the 1 GB genmodel.py pair, charlm F32):
 *   clustering, 4096 x 4096 BF16, same quantile init:  all elements (sort + Lloyd)  histogram
 *       b = 2: 15 iterations                           3.4 s                        15 ms
 *       b = 3: 38 iterations                           9.3 s                        24 ms
 *       b = 4: 74 iterations                           13.0 s                       23 ms
 *     identical tables (MSE 0.03455 at b = 3); pal_fit (histogram + optimal split + Lloyd):
 *     14-38 ms at b = 2-8, MSE 0.03453 at b = 3 and half that of quantile-init Lloyd at b = 6.
 *   relative L2 error at b = 2 / 3 / 4, palette against uniform min-max levels:
 *       1 GB q_proj base    0.439 / 0.279 / 0.154   against   8.76 / 2.39 / 0.94
 *       1 GB q_proj delta   0.426 / 0.209 / 0.093   against   1.61 / 2.40 / 0.98
 *       charlm ffwd base    0.315 / 0.171 / 0.089   against   0.66 / 0.29 / 0.14
 *       charlm ffwd delta   0.355 / 0.193 / 0.101   against   0.90 / 0.36 / 0.17
 *     (min-max levels are set by the outliers, so they waste most levels on empty range).
 *   bits per weight of whole base tensors in 1 MiB chunks, one table per tensor, zstd level 3:
 *     b = 3: 2.660 q_proj, 2.680 down_proj, 2.670 embed_tokens, 2.838 synthetic; b = 2: 1.76-1.93;
 *     b = 4: 3.33-3.78; b = 8: 7.24-8.0. zstd level 1: same size as 3, faster; 9 and 19: no gain.
 *   one core, 1 MiB BF16 chunk: decode 3.4-3.5 GB/s at b = 3-4 (zstd), 6.7 at b = 2, 15-44
 *     GB/s dense at b = 1, 2, 4, 1.6 GB/s dense at b = 3, 5-7 (near-equally full clusters, which
 *     zstd cannot shrink); encode 120-700 MB/s. The byte-table decode replaced an unpack of every index
 *     followed by a lookup per element: 1.9 -> 3.5 GB/s at b = 3 (zstd), 3.0 -> 15 GB/s at b = 4
 *     dense.
 */
#include "palette.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <zstd_errors.h>

#include "cx_internal.h"
#include "half.h"

/* The fit must give the same table on every machine: no fused multiply-add contraction, which
 * GNU C would otherwise do wherever the target has FMA (aarch64, x86-64 with -march=native). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define PAL_MAXITER 1000
#define PAL_DP_CELLS (1u << 22) /* K x split positions of the optimal fit: 16 MiB, */
#define PAL_DP_MAXPOS 65536u    /* and at most this many positions: ~0.1 s at K <= 16 */
#define PAL_BLOCK 64 /* elements per unpack block: 8 groups of 8, so 8 * w bytes for any width */

enum { PAL_S_IDX = 0, PAL_S_PACK = 1 }; /* encode */
enum { PAL_S_PLANE = 0 };                /* decode */

#define AI static inline __attribute__((always_inline))

/* ---- elements ------------------------------------------------------------------------------ */

static unsigned pal_esize(int dt)
{
	return dt == DT_F32 ? 4 : (dt == DT_BF16 || dt == DT_F16) ? 2 : 0;
}

AI float pal_f32(uint32_t x)
{
	float f;

	memcpy(&f, &x, 4);
	return f;
}

AI uint32_t pal_bits32(float f)
{
	uint32_t x;

	memcpy(&x, &f, 4);
	return x;
}




/* The value of a 16-bit pattern of dtype dt (BF16 or F16). */
static float pal_h2f(int dt, uint16_t h)
{
	return dt == DT_BF16 ? pal_f32((uint32_t)h << 16) : hf_f16_to_f32(h);
}

/* x rounded to dt, as the bit pattern the blob stores (low 16 bits for BF16/F16). */
static uint32_t pal_round(int dt, float x)
{
	return dt == DT_F32 ? pal_bits32(x) : dt == DT_BF16 ? hf_f32_to_bf16(x) : hf_f32_to_f16(x);
}

static float pal_value(int dt, uint32_t p)
{
	return dt == DT_F32 ? pal_f32(p) : pal_h2f(dt, (uint16_t)p);
}

/* ---- fitting --------------------------------------------------------------------------------- */

/* Order-preserving map of a finite float to an unsigned key: negatives, reversed, below positives
 * (-0 sorts just below +0). */
AI uint32_t pal_key(float f)
{
	uint32_t x = pal_bits32(f);

	return x & 0x80000000u ? ~x : x | 0x80000000u;
}

AI float pal_unkey(uint32_t k)
{
	return pal_f32(k & 0x80000000u ? k & 0x7fffffffu : ~k);
}

/* Stable LSD radix sort of n records by their high 32 bits (a float key; the low 32 bits carry
 * the sample's index), three passes of 11, 11 and 10 bits: O(n), where qsort of 4M samples took
 * 1.7 s. a and tmp hold n records each; returns the one holding the result. */
static uint64_t *pal_radix(uint64_t *a, uint64_t *tmp, size_t n)
{
	for (unsigned sh = 32; sh < 64; sh += 11) {
		size_t cnt[2048] = { 0 }, sum = 0;
		uint64_t *t;

		for (size_t i = 0; i < n; i++)
			cnt[a[i] >> sh & 2047]++;
		for (unsigned d = 0; d < 2048; d++) {
			size_t c = cnt[d];

			cnt[d] = sum;
			sum += c;
		}
		for (size_t i = 0; i < n; i++)
			tmp[cnt[a[i] >> sh & 2047]++] = a[i];
		t = a;
		a = tmp;
		tmp = t;
	}
	return a;
}

/* First i in [0, n) with v[i] > t, or n. */
static size_t pal_upper(const float *v, size_t n, double t)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (v[mid] > t)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* Optimal 1-D k-means (as Ckmeans.1d.dp: Wang and Song, R Journal 2011): clusters of sorted values
 * are contiguous ranges, so the best K clusters of the first i values extend the best K - 1 of
 * the first j < i by the range [j, i); D_k(i) = min_j D_{k-1}(j) + sse(j, i). The best j never
 * decreases with i (the cost satisfies the quadrangle inequality), so a layer is computed by
 * divide and conquer in O(T log T), not O(T^2). Split points are restricted to positions
 * pos[0..T] of the distinct values: all of them when K nd fits PAL_DP_CELLS (the result is then
 * the exact optimum on the histogram), else the boundaries of pal_grid's groups, and Lloyd
 * refines the result on the full histogram. */
typedef struct {
	const uint64_t *W;    /* prefix sums over the distinct values: counts, */
	const double *S, *S2; /* count * value, count * value^2 */
	const uint32_t *pos;  /* candidate split positions */
	const double *prev;   /* D_{k-1}(t) */
	double *cur;          /* D_k(t) */
	uint32_t *back;       /* this layer's best split of each t */
} pal_dp;

/* Sum of squared deviations of the values between candidate splits a < b. */
AI double pal_sse(const pal_dp *d, size_t a, size_t b)
{
	size_t i = d->pos[a], j = d->pos[b];
	double s = d->S[j] - d->S[i];

	return d->S2[j] - d->S2[i] - s * s / (double)(d->W[j] - d->W[i]);
}

/* cur[t] and back[t] for t in [lo, hi], given that their best splits lie in [olo, ohi]; ties
 * go to the lowest split, so the result depends on nothing but the input. */
static void pal_dc(pal_dp *d, size_t lo, size_t hi, size_t olo, size_t ohi)
{
	while (lo <= hi) {
		size_t mid = lo + (hi - lo) / 2, best = olo, end = ohi < mid - 1 ? ohi : mid - 1;
		double bv = INFINITY;

		for (size_t j = olo; j <= end; j++) {
			double v = d->prev[j] + pal_sse(d, j, mid);

			if (v < bv) {
				bv = v;
				best = j;
			}
		}
		d->cur[mid] = bv;
		d->back[mid] = (uint32_t)best;
		if (mid > lo)
			pal_dc(d, lo, mid - 1, olo, best);
		lo = mid + 1;
		olo = best;
	}
}

/* At most per + 1 groups of adjacent distinct values (nd > per): a group closes after g =
 * ceil(2 nd / per) values, before a value of weight >= H = ceil(W / (per / 4)), and once its own
 * weight reaches H. Heavy values thus sit alone: groups of a fixed g values merged the spike at
 * 0 of a delta with its neighbours, which no Lloyd step could then separate (1 GB q_proj delta at
 * 256 centroids: relative error 0.0066 against 0.0019 exact). Size closures are at most nd / g <=
 * per / 2, weight closures at most 2 W / H <= per / 2. Returns T, the last index of pos. */
static size_t pal_grid(const uint64_t *W, size_t nd, size_t per, uint32_t *pos)
{
	size_t T = 0, start = 0, g = (2 * nd + per - 1) / per;
	uint64_t q = per / 4, H = W[nd] / q + (W[nd] % q != 0);

	pos[0] = 0;
	for (size_t i = 1; i < nd; i++)
		if (i - start == g || W[i + 1] - W[i] >= H || W[i] - W[start] >= H)
			pos[++T] = (uint32_t)(start = i);
	pos[++T] = (uint32_t)nd;
	return T;
}

/* The mean of the distinct values v[a..b) (a < b) from the prefix sums. Clamped to [v[a], v[b-1]]:
 * prefix sums over values of very different magnitudes cancel, and a cluster of tiny values next
 * to large ones could otherwise get a mean outside its range (found by fuzz_codec: centroids out
 * of order, which pal_encode refuses). */
AI double pal_mean(const float *v, const uint64_t *W, const double *S, size_t a, size_t b)
{
	double m = (S[b] - S[a]) / (double)(W[b] - W[a]);

	return m < v[a] ? v[a] : m > v[b - 1] ? v[b - 1] : m;
}

/* Centroids c[0..K) of the optimal split of nd > K distinct values v. Returns 0 or -ENOMEM. */
static int pal_optimal(const float *v, const uint64_t *W, const double *S, const double *S2,
		       size_t nd, uint32_t K, double *c)
{
	size_t per = PAL_DP_CELLS / K < PAL_DP_MAXPOS ? PAL_DP_CELLS / K : PAL_DP_MAXPOS;
	size_t T = nd < per ? nd : per + 1;
	pal_dp d = { W, S, S2, NULL, NULL, NULL, NULL };
	uint32_t *pos, *back;
	double *buf;

	buf = malloc((T + 1) * (2 * sizeof *buf + sizeof *pos) + (size_t)K * (T + 1) * sizeof *back);
	if (!buf)
		return -ENOMEM;
	pos = (uint32_t *)(buf + 2 * (T + 1));
	back = pos + T + 1;
	if (nd <= per) {
		for (size_t t = 0; t <= nd; t++)
			pos[t] = (uint32_t)t;
		T = nd;
	} else {
		/* T >= nd / g >= per / 3 >= K, as per >= 3 K^2 */
		T = pal_grid(W, nd, per, pos);
	}
	d.pos = pos;
	d.cur = buf;
	for (size_t t = 1; t <= T; t++)
		d.cur[t] = pal_sse(&d, 0, t);
	for (uint32_t k = 1; k < K; k++) {
		d.prev = d.cur;
		d.cur = buf + (k & 1) * (T + 1);
		d.back = back + (size_t)k * (T + 1);
		/* k + 1 clusters need t >= k + 1; the last layer needs only t = T */
		pal_dc(&d, k + 1 < K ? k + 1 : T, T, k, T - 1);
	}
	for (size_t t = T, k = K; k-- > 0;) {
		size_t j = k ? back[k * (T + 1) + t] : 0;

		c[k] = pal_mean(v, W, S, pos[j], pos[t]);
		t = j;
	}
	free(buf);
	return 0;
}

/* Lloyd iterations on the histogram until no centroid moves. A cluster is the range of values in
 * (m_{j-1}, m_j], its mean (S[e] - S[b]) / (W[e] - W[b]); an empty cluster keeps its centroid.
 * Centroids stay ascending: a cluster's mean lies between its midpoints. */
static void pal_lloyd(const float *v, const uint64_t *W, const double *S, size_t nd, uint32_t K,
		      double *c)
{
	size_t b[257];

	b[0] = 0;
	b[K] = nd;
	for (int it = 0; it < PAL_MAXITER; it++) {
		int moved = 0;

		for (uint32_t j = 1; j < K; j++)
			b[j] = pal_upper(v, nd, 0.5 * (c[j - 1] + c[j]));
		for (uint32_t j = 0; j < K; j++) {
			double m;

			if (b[j + 1] <= b[j])
				continue;
			m = pal_mean(v, W, S, b[j], b[j + 1]);
			moved |= m != c[j];
			c[j] = m;
		}
		if (!moved)
			break;
	}
}

int pal_fit_values(const float *v, const uint64_t *count, size_t nv, unsigned bits, pal_table *out)
{
	uint32_t K;
	size_t nw = 0, nd = 0;
	int sorted = 1, rc = 0;
	uint64_t *rec = NULL, *r = NULL, *W;
	double *S, *S2, c[256];
	float *sv, prev = 0;

	if (!out || (!v && nv) || nv > UINT32_MAX || bits < 1 || bits > PAL_MAXBITS)
		return -EINVAL;
	K = 1u << bits;
	for (size_t i = 0; i < nv; i++) {
		if (count && !count[i])
			continue;
		if (!isfinite(v[i]))
			return -EDOM;
		if (nw && !(v[i] > prev))
			sorted = 0;
		prev = v[i];
		nw++;
	}
	out->bits = bits;
	out->k = K;
	memset(out->c, 0, sizeof out->c);
	if (nw == 0)
		return 0;
	nd = nw;
	if (!sorted) {
		rec = malloc(2 * nw * sizeof *rec);
		if (!rec)
			return -ENOMEM;
		for (size_t i = 0, k = 0; i < nv; i++)
			if (!count || count[i])
				rec[k++] = (uint64_t)pal_key(v[i]) << 32 | (count ? i : 0);
		r = pal_radix(rec, rec + nw, nw);
		for (size_t i = 1; i < nw; i++) /* -0 and +0 have two keys and one value */
			nd -= pal_unkey((uint32_t)(r[i] >> 32)) == pal_unkey((uint32_t)(r[i - 1] >> 32));
	}
	/* W, S, S2 [0..nd], then the distinct values */
	W = malloc((nd + 1) * (sizeof *W + 2 * sizeof *S) + nd * sizeof *sv);
	if (!W) {
		free(rec);
		return -ENOMEM;
	}
	S = (double *)(W + nd + 1);
	S2 = S + nd + 1;
	sv = (float *)(S2 + nd + 1);
	/* W[j + 1] first collects the weight of value j; then the prefix sums */
	nd = 0;
	for (size_t i = 0; i < (sorted ? nv : nw); i++) {
		uint64_t w = 1;
		float x;

		if (sorted) {
			if (count && !(w = count[i]))
				continue;
			x = v[i];
		} else {
			x = pal_unkey((uint32_t)(r[i] >> 32));
			if (count)
				w = count[(uint32_t)r[i]];
		}
		if (nd && x == sv[nd - 1]) {
			W[nd] += w;
			continue;
		}
		sv[nd++] = x;
		W[nd] = w;
	}
	free(rec);
	W[0] = 0;
	S[0] = 0;
	S2[0] = 0;
	for (size_t i = 0; i < nd; i++) {
		double wv = (double)W[i + 1] * sv[i];

		W[i + 1] += W[i];
		S[i + 1] = S[i] + wv;
		S2[i + 1] = S2[i] + wv * sv[i];
	}
	if (nd <= K) {
		for (uint32_t j = 0; j < K; j++)
			c[j] = sv[j < nd ? j : nd - 1];
	} else {
		rc = pal_optimal(sv, W, S, S2, nd, K, c);
		if (rc == 0)
			pal_lloyd(sv, W, S, nd, K, c);
	}
	for (uint32_t j = 0; j < K; j++)
		out->c[j] = (float)c[j];
	free(W);
	return rc;
}

/* The 16-bit patterns in ascending order of value: negatives from the largest magnitude down to
 * -0 (0xffff..0x8000), then +0 up (0x0000..0x7fff). */
AI uint32_t pal_ordered(uint32_t key)
{
	return key < 0x8000 ? 0xffff - key : key - 0x8000;
}

static int pal_nonfinite16(int dt, uint32_t p)
{
	return dt == DT_BF16 ? (p & 0x7f80) == 0x7f80 : (p & 0x7c00) == 0x7c00;
}

int pal_fit(const void *src, size_t n, dt_id dt, unsigned bits, pal_table *out)
{
	const uint8_t *s = src;
	unsigned es = pal_esize(dt);
	size_t m, nd = 0;
	uint64_t *cnt, *w;
	double *sum = NULL;
	float *v;
	int rc;

	if (!es || n % es || (!src && n) || !out || bits < 1 || bits > PAL_MAXBITS)
		return -EINVAL;
	m = n / es;
	/* counts, the compacted weights and values (65,536 each), and for F32 the bins' sums */
	cnt = calloc(65536, sizeof *cnt * 2 + sizeof *v + (dt == DT_F32 ? sizeof *sum : 0));
	if (!cnt)
		return -ENOMEM;
	w = cnt + 65536;
	v = (float *)(w + 65536);
	if (dt == DT_F32) {
		sum = (double *)(v + 65536);
		for (size_t i = 0; i < m; i++) {
			uint32_t x;

			memcpy(&x, s + 4 * i, 4);
			cnt[x >> 16]++;
			sum[x >> 16] += pal_f32(x);
		}
	} else {
		for (size_t i = 0; i < m; i++) {
			uint16_t h;

			memcpy(&h, s + 2 * i, 2);
			cnt[h]++;
		}
	}
	for (uint32_t key = 0; key < 65536; key++) {
		uint32_t p = pal_ordered(key);
		float x;

		if (!cnt[p])
			continue;
		if (pal_nonfinite16(dt == DT_F32 ? DT_BF16 : dt, p)) { /* F32: a bf16 bin */
			free(cnt);
			return -EDOM;
		}
		/* A bin holds one value for 16-bit types; for F32 it stands for its elements' mean,
		 * so the cluster means fitted on the bins are the means over the elements. */
		x = sum ? (float)(sum[p] / (double)cnt[p]) : pal_h2f(dt, (uint16_t)p);
		if (nd && x == v[nd - 1]) { /* -0 and +0 */
			w[nd - 1] += cnt[p];
			continue;
		}
		v[nd] = x;
		w[nd++] = cnt[p];
	}
	rc = pal_fit_values(v, w, nd, bits, out);
	free(cnt);
	if (rc == 0 && dt != DT_F32)
		for (uint32_t j = 0; j < out->k; j++)
			out->c[j] = pal_value(dt, pal_round(dt, out->c[j]));
	return rc;
}

/* ---- nearest centroid ------------------------------------------------------------------------ */

AI double pal_mid(const float *c, uint32_t j)
{
	return 0.5 * ((double)c[j] + c[j + 1]);
}

/* Branch-free binary search over the K - 1 midpoints mid[]: the number of them below x. */
AI unsigned pal_search(const double *mid, uint32_t K, float x)
{
	unsigned j = 0;

	for (uint32_t s = K >> 1; s; s >>= 1)
		j += x > mid[j + s - 1] ? s : 0;
	return j;
}

unsigned pal_nearest(const pal_table *t, float x)
{
	uint32_t K = 1u << t->bits;
	unsigned j = 0;

	for (uint32_t s = K >> 1; s; s >>= 1)
		j += x > pal_mid(t->c, j + s - 1) ? s : 0;
	return j;
}

/* ---- bit packing ------------------------------------------------------------------------------ */

/* Field width of the PAL_ZSTD payload: the smallest of 1, 2, 4, 8 that holds `bits`. */
static unsigned pal_width(unsigned bits)
{
	return bits <= 2 ? bits : bits <= 4 ? 4 : 8;
}

/* ceil(m * w / 8) without overflow for any m. */
static size_t pal_packed(size_t m, unsigned w)
{
	return m / 8 * w + (m % 8 * w + 7) / 8;
}

/* Groups of 8 indices in w bytes (one little-endian word of 8w bits); the last partial group is
 * packed from zero-padded indices so its unused bits are zero. */
static void pal_pack(uint8_t *restrict out, const uint8_t *restrict idx, size_t m, unsigned w)
{
	size_t g = 0;

	for (; g + 8 <= m; g += 8, out += w) {
		uint64_t x = 0;

		for (unsigned j = 0; j < 8; j++)
			x |= (uint64_t)idx[g + j] << (j * w);
		memcpy(out, &x, w);
	}
	if (g < m) {
		uint64_t x = 0;

		for (unsigned j = 0; g + j < m; j++)
			x |= (uint64_t)idx[g + j] << (j * w);
		memcpy(out, &x, pal_packed(m - g, w));
	}
}

/* Widths 1, 2, 4 and 8 (every PAL_ZSTD payload, and PAL_DENSE at those bits): a byte holds 8 / W
 * whole indices, so one lookup in a table of 256 entries of 8 / W elements writes them all: one
 * load and one store of 2 to 16 bytes per input byte, no shifts. */
AI void pal_map_bytes(uint8_t *restrict out, const uint8_t *restrict in, size_t m,
		      const uint8_t *restrict blut, unsigned W, unsigned ES)
{
	const unsigned per = 8 / W, sz = per * ES;
	size_t nb = m / per;

	for (size_t i = 0; i < nb; i++)
		memcpy(out + i * sz, blut + in[i] * sz, sz);
	if (m % per)
		memcpy(out + nb * sz, blut + in[nb] * sz, m % per * ES);
}

/* The byte table of pal_map_bytes: entry v holds the elements of the 8 / w indices in byte v. */
static void pal_blut(uint8_t *blut, const uint32_t *lut, unsigned w, unsigned es)
{
	unsigned per = 8 / w;

	for (unsigned v = 0; v < 256; v++)
		for (unsigned k = 0; k < per; k++)
			memcpy(blut + (v * per + k) * es, &lut[v >> (k * w) & ((1u << w) - 1)], es);
}

/* Widths 3, 5, 6, 7 (PAL_DENSE only): blocks of 64 indices from 8 * W bytes, a group of 8 from
 * one little-endian word of W bytes. W is a constant in every instantiation, so a group is fixed
 * shifts and masks with no loop-carried state; then a lookup per element. */
AI void pal_unpack64(uint8_t *restrict idx, const uint8_t *restrict in, unsigned W)
{
	for (unsigned g = 0; g < 8; g++) {
		uint64_t x = 0;

		memcpy(&x, in + g * W, W);
		for (unsigned j = 0; j < 8; j++)
			idx[8 * g + j] = (uint8_t)(x >> (j * W) & ((1u << W) - 1));
	}
}

AI void pal_map_packed(uint8_t *restrict out, const uint8_t *restrict in, size_t m,
		       const uint8_t *restrict lut, unsigned W, unsigned ES)
{
	uint8_t idx[PAL_BLOCK], tail[8 * 8] = { 0 };
	size_t i = 0;

	for (; i + PAL_BLOCK <= m; i += PAL_BLOCK, in += 8 * W) {
		pal_unpack64(idx, in, W);
		for (unsigned j = 0; j < PAL_BLOCK; j++)
			memcpy(out + ES * (i + j), lut + ES * idx[j], ES);
	}
	if (i == m)
		return;
	memcpy(tail, in, pal_packed(m - i, W));
	pal_unpack64(idx, tail, W);
	for (unsigned j = 0; i + j < m; j++)
		memcpy(out + ES * (i + j), lut + ES * idx[j], ES);
}

/* lut: 256 entries of the element size (the byte table for widths 1, 2, 4, 8). */
typedef void pal_map_fn(uint8_t *out, const uint8_t *in, size_t m, const uint8_t *lut);

#define PAL_MAPS(W, kind)                                                                          \
	static void pal_map_##W##_2(uint8_t *out, const uint8_t *in, size_t m, const uint8_t *lut) \
	{                                                                                          \
		pal_map_##kind(out, in, m, lut, W, 2);                                             \
	}                                                                                          \
	static void pal_map_##W##_4(uint8_t *out, const uint8_t *in, size_t m, const uint8_t *lut) \
	{                                                                                          \
		pal_map_##kind(out, in, m, lut, W, 4);                                             \
	}
PAL_MAPS(1, bytes)
PAL_MAPS(2, bytes)
PAL_MAPS(3, packed)
PAL_MAPS(4, bytes)
PAL_MAPS(5, packed)
PAL_MAPS(6, packed)
PAL_MAPS(7, packed)
PAL_MAPS(8, bytes)

/* [width - 1][element size 2, 4] */
static pal_map_fn *const pal_maps[8][2] = {
	{ pal_map_1_2, pal_map_1_4 }, { pal_map_2_2, pal_map_2_4 }, { pal_map_3_2, pal_map_3_4 },
	{ pal_map_4_2, pal_map_4_4 }, { pal_map_5_2, pal_map_5_4 }, { pal_map_6_2, pal_map_6_4 },
	{ pal_map_7_2, pal_map_7_4 }, { pal_map_8_2, pal_map_8_4 },
};

/* ---- blobs ----------------------------------------------------------------------------------- */

size_t pal_bound(size_t n, dt_id dt, unsigned bits)
{
	unsigned es = pal_esize(dt);

	if (!es || bits < 1 || bits > PAL_MAXBITS)
		return 0;
	/* A PAL_ZSTD payload is kept only when smaller than the dense one. */
	return PAL_HDR + ((size_t)es << bits) + pal_packed(n / es, bits);
}

/* Indices of m elements into idx; -EDOM at the first NaN or infinity. */
AI int pal_assign(uint8_t *restrict idx, const uint8_t *restrict s, size_t m, const double *mid,
		  uint32_t K, int dt)
{
	for (size_t i = 0; i < m; i++) {
		float x;

		if (dt == DT_F32) {
			uint32_t u;

			memcpy(&u, s + 4 * i, 4);
			x = pal_f32(u);
		} else {
			uint16_t h;

			memcpy(&h, s + 2 * i, 2);
			x = pal_h2f(dt, h);
		}
		if (!isfinite(x))
			return -EDOM;
		idx[i] = (uint8_t)pal_search(mid, K, x);
	}
	return 0;
}

/* zstd frame of n bytes into at most cap bytes: its size, 0 if it does not fit, or -errno. */
static ssize_t pal_zstd(cx_ctx *cx, uint8_t *dst, size_t cap, const uint8_t *src, size_t n,
			int level)
{
	ZSTD_CCtx *cctx = cx_cctx(cx);
	size_t z;

	if (!cctx)
		return -ENOMEM;
	/* Parameters are sticky in a CCtx; another codec sharing this context may have set some. */
	ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
	if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)))
		return -EINVAL;
	z = ZSTD_compress2(cctx, dst, cap, src, n);
	if (!ZSTD_isError(z))
		return (ssize_t)z;
	if (ZSTD_getErrorCode(z) == ZSTD_error_dstSize_tooSmall)
		return 0;
	return ZSTD_getErrorCode(z) == ZSTD_error_memory_allocation ? -ENOMEM : -EINVAL;
}

ssize_t pal_encode(cx_ctx *cx, void *dst, size_t cap, const void *src, size_t n, dt_id dt,
		   const pal_table *t, int level)
{
	uint8_t *d = dst, *idx, *pack;
	unsigned es = pal_esize(dt), bits, w;
	uint32_t K;
	size_t m, off, dense;
	double mid[255];
	float lv[256];
	ssize_t z = 0;
	int rc;

	if (!cx || !d || (!src && n) || !t || !es || n % es || t->bits < 1 ||
	    t->bits > PAL_MAXBITS || t->k != 1u << t->bits || level < ZSTD_minCLevel() ||
	    level > ZSTD_maxCLevel())
		return -EINVAL;
	bits = t->bits;
	K = t->k;
	if (cap < pal_bound(n, dt, bits))
		return -ENOBUFS;
	m = n / es;
	off = PAL_HDR;
	for (uint32_t j = 0; j < K; j++) {
		uint32_t p = pal_round(dt, t->c[j]);

		lv[j] = pal_value(dt, p);
		if (!isfinite(t->c[j]) || !isfinite(lv[j]) || (j && !(lv[j] >= lv[j - 1])))
			return -EINVAL;
		memcpy(d + off, &p, es);
		off += es;
	}
	for (uint32_t j = 0; j + 1 < K; j++)
		mid[j] = pal_mid(lv, j);
	d[0] = CX_MAGIC;
	d[1] = CX_PALETTE;
	d[2] = PAL_VERSION;
	d[3] = PAL_DENSE;
	d[4] = (uint8_t)dt;
	d[5] = (uint8_t)bits;
	d[6] = d[7] = 0;
	cx_wr64(d + 8, n);
	if (m == 0)
		return (ssize_t)off;
	idx = cx_scratch(cx, PAL_S_IDX, m);
	if (!idx)
		return -ENOMEM;
	switch (dt) {
	case DT_F32: rc = pal_assign(idx, src, m, mid, K, DT_F32); break;
	case DT_F16: rc = pal_assign(idx, src, m, mid, K, DT_F16); break;
	default: rc = pal_assign(idx, src, m, mid, K, DT_BF16); break;
	}
	if (rc)
		return rc;
	dense = pal_packed(m, bits);
	w = pal_width(bits);
	pack = cx_scratch(cx, PAL_S_PACK, pal_packed(m, w));
	if (!pack)
		return -ENOMEM;
	pal_pack(pack, idx, m, w);
	/* Capacity dense - 1: a frame no smaller than the dense payload is abandoned early. */
	if (dense > 1)
		z = pal_zstd(cx, d + off, dense - 1, pack, pal_packed(m, w), level);
	if (z < 0)
		return z;
	if (z > 0) {
		d[3] = PAL_ZSTD;
		return (ssize_t)(off + (size_t)z);
	}
	pal_pack(d + off, idx, m, bits);
	return (ssize_t)(off + dense);
}

/* Header and table of a blob: dtype, bits, mode, decoded size, the table as stored (lut) and
 * the payload's offset. Returns 0 or -EBADMSG. */
static int pal_parse(const uint8_t *b, size_t blen, int *dt, unsigned *bits, int *mode,
		     uint64_t *n, uint32_t *lut, size_t *off)
{
	unsigned es;
	float prev = 0;

	if (!b || blen < PAL_HDR || b[0] != CX_MAGIC || b[1] != CX_PALETTE || b[2] != PAL_VERSION ||
	    b[3] > PAL_ZSTD || b[6] || b[7])
		return -EBADMSG;
	*mode = b[3];
	*dt = b[4];
	*bits = b[5];
	*n = cx_rd64(b + 8);
	es = pal_esize(*dt);
	if (!es || *bits < 1 || *bits > PAL_MAXBITS || *n % es ||
	    blen - PAL_HDR < ((size_t)es << *bits))
		return -EBADMSG;
	for (uint32_t j = 0; j < 1u << *bits; j++) {
		uint32_t p = 0;
		float x;

		memcpy(&p, b + PAL_HDR + (size_t)j * es, es);
		x = pal_value(*dt, p);
		if (!isfinite(x) || (j && !(x >= prev)))
			return -EBADMSG;
		prev = x;
		lut[j] = p;
	}
	*off = PAL_HDR + ((size_t)es << *bits);
	return 0;
}

/* 1 if a w-bit packed array of m indices has an index >= 2^bits or a set bit past its end. */
static int pal_bad_fields(const uint8_t *p, size_t len, size_t m, unsigned w, unsigned bits)
{
	uint8_t field = (uint8_t)(((1u << w) - 1) & ~((1u << bits) - 1)), bad = 0, acc = 0;
	unsigned used = (unsigned)(m % 8 * w % 8);

	for (unsigned s = 0; s < 8; s += w)
		bad |= (uint8_t)(field << s);
	if (bad)
		for (size_t i = 0; i < len; i++)
			acc |= p[i];
	return (acc & bad) || (used && (p[len - 1] >> used));
}

int pal_decode(cx_ctx *cx, void *dst, size_t n, const void *blob, size_t blen, const void *base)
{
	const uint8_t *b = blob, *payload;
	uint32_t lut32[256] = { 0 };
	uint8_t lut[256 * 8 * 4]; /* elements of 256 indices, or of 256 bytes of 8 / w indices */
	unsigned bits, w, es;
	size_t off, plen, m, len;
	uint64_t n64;
	int dt, mode;

	(void)base;
	if (!cx || (!dst && n))
		return -EINVAL;
	if (pal_parse(b, blen, &dt, &bits, &mode, &n64, lut32, &off) || n64 != n)
		return -EBADMSG;
	es = pal_esize(dt);
	m = n / es;
	payload = b + off;
	plen = blen - off;
	w = mode == PAL_ZSTD ? pal_width(bits) : bits;
	len = pal_packed(m, w);
	if (mode == PAL_DENSE) {
		if (plen != len || pal_bad_fields(payload, len, m, w, bits))
			return -EBADMSG;
	} else {
		uint8_t *plane;
		size_t z;

		/* The encoder never compresses an empty chunk; and a payload must be exactly one
		 * frame, which zstd alone would not check (it decodes concatenated frames). */
		if (m == 0 || ZSTD_findFrameCompressedSize(payload, plen) != plen)
			return -EBADMSG;
		plane = cx_scratch(cx, PAL_S_PLANE, len);
		if (!plane)
			return -ENOMEM;
		z = ZSTD_decompressDCtx(cx->dctx, plane, len, payload, plen);
		if (ZSTD_isError(z))
			return ZSTD_getErrorCode(z) == ZSTD_error_memory_allocation ? -ENOMEM
										 : -EBADMSG;
		if (z != len || pal_bad_fields(plane, len, m, w, bits))
			return -EBADMSG;
		payload = plane;
	}
	if (m == 0)
		return 0;
	if (8 % w == 0)
		pal_blut(lut, lut32, w, es);
	else
		for (unsigned j = 0; j < 256; j++)
			memcpy(lut + j * es, &lut32[j], es);
	pal_maps[w - 1][es == 4](dst, payload, m, lut);
	return 0;
}

int pal_blob_table(const void *blob, size_t blen, dt_id *dt, pal_table *t)
{
	uint32_t lut[256];
	unsigned bits;
	uint64_t n;
	size_t off;
	int d, mode;

	if (!dt || !t || pal_parse(blob, blen, &d, &bits, &mode, &n, lut, &off))
		return -EBADMSG;
	*dt = (dt_id)d;
	t->bits = bits;
	t->k = 1u << bits;
	memset(t->c, 0, sizeof t->c);
	for (uint32_t j = 0; j < t->k; j++)
		t->c[j] = pal_value(d, lut[j]);
	return 0;
}

static int pal_needs_base(const uint8_t *b, size_t blen)
{
	uint32_t lut[256];
	unsigned bits;
	uint64_t n;
	size_t off;
	int dt, mode;

	return pal_parse(b, blen, &dt, &bits, &mode, &n, lut, &off) ? -EBADMSG : 0;
}

const struct cx_codec_ops pal_ops = {
	.decode = pal_decode,
	.needs_base = pal_needs_base,
};
