/*
 * palref.h -- what the palette tests and benchmark share: a failing check that names its line, a
 * seeded PRNG, reference conversions to and from BF16/F16 written independently of the codec's,
 * the brute-force optimal palette over all elements (what the histogram fit must equal), and
 * Lloyd over all elements (the benchmark's baseline).
 */
#ifndef DELTAFS_TESTS_PALETTE_PALREF_H
#define DELTAFS_TESTS_PALETTE_PALREF_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);   \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

static inline void *r_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	CHECK(p, "out of memory (%zu bytes)", n);
	return p;
}

/* splitmix64 */
static inline uint64_t r_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline double r_unif(uint64_t *s)
{
	return ((double)(r_rand(s) >> 11) + 0.5) * 0x1p-53;
}

static inline double r_normal(uint64_t *s)
{
	return sqrt(-2 * log(r_unif(s))) * cos(6.283185307179586 * r_unif(s));
}

/* ---- element conversions (round to nearest even) ---------------------------------------------- */

static inline uint16_t r_bf16(float f)
{
	uint32_t x;

	memcpy(&x, &f, 4);
	return (uint16_t)((x + 0x7fff + (x >> 16 & 1)) >> 16);
}

static inline float r_bf16_val(uint16_t h)
{
	uint32_t x = (uint32_t)h << 16;
	float f;

	memcpy(&f, &x, 4);
	return f;
}

/* Through frexp and rint in double, not bit manipulation: an independent check of the codec's. */
static inline uint16_t r_f16(float f)
{
	uint16_t sign = signbit(f) ? 0x8000 : 0;
	double a = fabs((double)f), q;
	int e;

	if (isnan(a))
		return sign | 0x7e00;
	if (a >= 65520.0)
		return sign | 0x7c00;
	if (a < 0x1p-14)
		return (uint16_t)(sign | (uint16_t)rint(a * 0x1p24)); /* 1024 is the smallest normal */
	frexp(a, &e);
	e -= 1; /* a in [2^e, 2^(e+1)) */
	q = rint(ldexp(a, 10 - e));
	if (q == 2048) {
		q = 1024;
		e++;
	}
	if (e + 15 >= 31)
		return sign | 0x7c00;
	return (uint16_t)(sign | (uint16_t)((e + 15) << 10) | (uint16_t)(q - 1024));
}

static inline float r_f16_val(uint16_t h)
{
	int e = (h >> 10) & 0x1f, m = h & 0x3ff;
	double v;

	if (e == 31)
		v = m ? NAN : INFINITY;
	else if (e == 0)
		v = ldexp(m, -24);
	else
		v = ldexp(1024 + m, e - 25);
	return (float)((h & 0x8000) ? -v : v);
}

static inline unsigned r_esize(dt_id dt)
{
	return dt == DT_F32 ? 4 : 2;
}

static inline float r_load(dt_id dt, const void *p, size_t i)
{
	const uint8_t *b = p;
	uint16_t h;
	float f;

	if (dt == DT_F32) {
		memcpy(&f, b + 4 * i, 4);
		return f;
	}
	memcpy(&h, b + 2 * i, 2);
	return dt == DT_BF16 ? r_bf16_val(h) : r_f16_val(h);
}

static inline void r_store(dt_id dt, void *p, size_t i, float v)
{
	uint8_t *b = p;
	uint16_t h;

	if (dt == DT_F32) {
		memcpy(b + 4 * i, &v, 4);
		return;
	}
	h = dt == DT_BF16 ? r_bf16(v) : r_f16(v);
	memcpy(b + 2 * i, &h, 2);
}

/* v as dt would store it. */
static inline float r_round(dt_id dt, float v)
{
	uint8_t b[4];

	r_store(dt, b, 0, v);
	return r_load(dt, b, 0);
}

/* ---- reference fits over all elements --------------------------------------------------------- */

static inline int r_fcmp(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x > y) - (x < y);
}

/* The optimal palette of n elements by brute force: dynamic programming over every split of the
 * sorted elements (not of distinct values: equal elements may land in different clusters), all
 * O(K n^2) candidates, no monotonicity assumed. Centroids = the optimal clusters' means, summed
 * element by element; with at most K distinct values, those values, the last repeated, as
 * palette.h specifies. Writes out[0..K) and returns the optimal sum of squared errors. */
static inline double r_optimum(const float *x, size_t n, unsigned bits, float *out)
{
	uint32_t K = 1u << bits;
	float *s = r_xmalloc(n * sizeof *s);
	double *S = r_xmalloc((n + 1) * sizeof *S), *S2 = r_xmalloc((n + 1) * sizeof *S2);
	double *D = r_xmalloc((size_t)K * (n + 1) * sizeof *D), best;
	size_t *B = r_xmalloc((size_t)K * (n + 1) * sizeof *B), nd = 0;

	memcpy(s, x, n * sizeof *s);
	qsort(s, n, sizeof *s, r_fcmp);
	for (size_t i = 0; i < n; i++)
		nd += i == 0 || s[i] != s[i - 1];
	if (nd <= K) {
		size_t j = 0;

		for (size_t i = 0; i < n; i++)
			if (i == 0 || s[i] != s[i - 1])
				out[j++] = s[i];
		for (; j < K; j++)
			out[j] = nd ? out[nd - 1] : 0;
		best = 0;
		goto done;
	}
	S[0] = S2[0] = 0;
	for (size_t i = 0; i < n; i++) {
		S[i + 1] = S[i] + s[i];
		S2[i + 1] = S2[i] + (double)s[i] * s[i];
	}
#define R_SSE(a, b) (S2[b] - S2[a] - (S[b] - S[a]) * (S[b] - S[a]) / (double)((b) - (a)))
	for (size_t i = 1; i <= n; i++)
		D[i] = R_SSE(0, i);
	for (uint32_t k = 1; k < K; k++)
		for (size_t i = k + 1; i <= n; i++) {
			double bv = INFINITY;

			for (size_t j = k; j < i; j++) {
				double v = D[(k - 1) * (n + 1) + j] + R_SSE(j, i);

				if (v < bv) {
					bv = v;
					B[k * (n + 1) + i] = j;
				}
			}
			D[k * (n + 1) + i] = bv;
		}
#undef R_SSE
	best = D[(K - 1) * (n + 1) + n];
	for (size_t i = n, k = K; k-- > 0;) {
		size_t j = k ? B[k * (n + 1) + i] : 0;
		double sum = 0;

		for (size_t e = j; e < i; e++)
			sum += s[e];
		out[k] = (float)(sum / (double)(i - j));
		i = j;
	}
done:
	free(s);
	free(S);
	free(S2);
	free(D);
	free(B);
	return best;
}

/* Nearest centroid as palette.h defines it: the number of midpoints below x, by binary search. */
static inline unsigned r_assign(const double *mid, uint32_t K, float x)
{
	unsigned j = 0;

	for (uint32_t s = K >> 1; s; s >>= 1)
		j += x > mid[j + s - 1] ? s : 0;
	return j;
}

/* Lloyd over all n elements x[] from centroids c[0..K), until no centroid moves or maxit
 * iterations; returns the iterations run (an iteration that moves nothing counts). */
static inline int r_lloyd(const float *x, size_t n, uint32_t K, double *c, int maxit)
{
	double sum[256], mid[256];
	uint64_t cnt[256];
	int it;

	for (it = 0; it < maxit; it++) {
		int moved = 0;

		for (uint32_t j = 0; j + 1 < K; j++)
			mid[j] = 0.5 * (c[j] + c[j + 1]);
		memset(sum, 0, sizeof sum);
		memset(cnt, 0, sizeof cnt);
		for (size_t i = 0; i < n; i++) {
			unsigned j = r_assign(mid, K, x[i]);

			sum[j] += x[i];
			cnt[j]++;
		}
		for (uint32_t j = 0; j < K; j++) {
			double m;

			if (!cnt[j])
				continue;
			m = sum[j] / (double)cnt[j];
			moved |= m != c[j];
			c[j] = m;
		}
		if (!moved)
			return it + 1;
	}
	return it;
}

/* Sum of squared errors of quantising x[] to the nearest of K ascending centroids c. */
static inline double r_sse(const float *x, size_t n, const float *c, uint32_t K)
{
	double mid[256], e = 0;

	for (uint32_t j = 0; j + 1 < K; j++)
		mid[j] = 0.5 * ((double)c[j] + c[j + 1]);
	for (size_t i = 0; i < n; i++) {
		double d = (double)x[i] - c[r_assign(mid, K, x[i])];

		e += d * d;
	}
	return e;
}

#endif
