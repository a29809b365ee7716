/*
 * lowrank.c -- transform coding of a delta matrix by a truncated SVD with mixed-precision factors
 * (format and method: lowrank.h).
 *
 * Data path. Decode: the factor section's planes go to scratch slot 0 and are expanded into a
 * float matrix V[K][cols] of odd integers m (slot 1: every chunk needs all of V, and an integer
 * as float is what the inner loop multiplies); the chunk's U planes to slot 3; per row, the K
 * products a_k = c_k m_u (exact: an 11-bit F16 mantissa times an integer below 2^8) go to slot
 * 2, then acc = sum_k a_k V[k] row by row of V in k order, eight floats at a time in GCC vector
 * types, then one pass rounds base + acc into the dtype. After the first chunk of a shape the
 * decode allocates nothing. Cost: K multiply-adds per element, against a handful of table
 * lookups for the lossless and DeltaDQ paths; it is the price of spending bits on directions
 * instead of elements, and it only runs where the planner found that it pays.
 *
 * Encode (lr_plan) allocates freely: it runs once per matrix at ingest. The SVD, the GEMMs of
 * the randomized range finder and of the output error go to LAPACK and BLAS.
 *
 * Tunables, with why (charlm: 63 F32 matrices of ../shared/data/charlm, tests/lowrank):
 */
#include "lowrank.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "cx_internal.h"
#include "half.h"

/* Above this min(rows, cols), the SVD is of a randomized range of rank LR_OVERSAMPLE above what
 * the budget can hold: a full sgesdd of a 4096 x 4096 matrix takes ~20 s on one core, the range
 * finder at rank 256 under a second, and the components beyond the budget are never kept. */
#define LR_RSVD_MIN 768
#define LR_OVERSAMPLE 16
#define LR_POWER_ITERS 2
/* Components at most: past a few hundred, a row of U costs as much as the chunk's DeltaDQ
 * bytes, and the decoder's V would outgrow its cache. */
#define LR_KMAX 1024
/* Lloyd steps of the uniform quantiser's step size, from the Gaussian-optimal start. */
#define LR_LLOYD 6
/* Re-plans on the real encoded bytes (zstd shrinks some planes; headers are exact). */
#define LR_TRIES 10
/* Level spacing of the MSE-optimal uniform quantiser of a unit Gaussian, 2^b levels (Max 1960). */
static const double lr_gauss_step[LR_MAXBITS + 1] = {0,     1.596, 0.9957, 0.5860, 0.3352,
						     0.1881, 0.1041, 0.0569, 0.0308};

typedef float lr_f32x8 __attribute__((vector_size(32)));

/* ---- the factor section ---------------------------------------------------------------------- */

typedef struct lr_fac {
	size_t cols, K;
	size_t nb[LR_MAXBITS + 1]; /* components per width */
	int e;
	const uint8_t *widths; /* ceil(K / 2) bytes at the blob */
	const uint8_t *scales; /* 2K bytes at the blob */
} lr_fac;

static unsigned lr_width(const uint8_t *widths, size_t k)
{
	return 1 + (widths[k / 2] >> (k & 1 ? 4 : 0) & 15);
}

/* Parse the factor section's fields at b[*off..blen), up to its V planes. */
static int lr_fac_parse(const uint8_t *b, size_t blen, size_t *off, lr_fac *f)
{
	uint64_t cols, K;

	memset(f, 0, sizeof *f);
	if (cx_vget(b, blen, off, &cols) || cx_vget(b, blen, off, &K) || !cols || !K ||
	    K > cols || K > LR_KMAX || cols > UINT32_MAX)
		return -EBADMSG;
	f->cols = (size_t)cols;
	f->K = (size_t)K;
	if (blen - *off < (K + 1) / 2 + 1 + 2 * K)
		return -EBADMSG;
	f->widths = b + *off;
	*off += (K + 1) / 2;
	if ((K & 1) && f->widths[K / 2] >> 4)
		return -EBADMSG;
	for (size_t k = 0; k < K; k++) {
		unsigned w = lr_width(f->widths, k);
		if (w > LR_MAXBITS)
			return -EBADMSG;
		f->nb[w]++;
	}
	f->e = (int8_t)b[(*off)++];
	f->scales = b + *off;
	*off += 2 * K;
	for (size_t k = 0; k < K; k++) {
		uint16_t h = (uint16_t)(f->scales[2 * k] | f->scales[2 * k + 1] << 8);
		if ((h & 0x7c00) == 0x7c00 || !isfinite(ldexpf(hf_f16_to_f32(h), f->e)))
			return -EBADMSG;
	}
	return 0;
}

static float lr_scale(const lr_fac *f, size_t k)
{
	return ldexpf(hf_f16_to_f32((uint16_t)(f->scales[2 * k] | f->scales[2 * k + 1] << 8)), f->e);
}

/* Read the planes of one side ([count][n_b] fields per width, count = cols for V, nr for U) into
 * out (each plane followed by CX_PAD bytes); `last`: the final plane of the blob is among them.
 * pos[b] receives each plane's offset in out. */
static int lr_get_planes(cx_ctx *cx, const uint8_t *b, size_t blen, size_t *off, const lr_fac *f,
			 size_t count, uint8_t *out, size_t pos[LR_MAXBITS + 1], int last)
{
	unsigned top = 0;
	size_t at = 0;

	for (unsigned w = 1; w <= LR_MAXBITS; w++)
		if (f->nb[w])
			top = w;
	for (unsigned w = 1; w <= LR_MAXBITS; w++) {
		if (!f->nb[w])
			continue;
		size_t len = cx_plane_len(f->nb[w] * count, w);
		int rc = cx_get_plane(cx, b, blen, off, out + at, len, last && w == top);
		if (rc)
			return rc;
		pos[w] = at;
		at += len + CX_PAD;
	}
	return 0;
}

static size_t lr_planes_len(const lr_fac *f, size_t count)
{
	size_t t = 0;

	for (unsigned w = 1; w <= LR_MAXBITS; w++)
		if (f->nb[w])
			t += cx_plane_len(f->nb[w] * count, w) + CX_PAD;
	return t;
}

static float lr_level(uint32_t q, unsigned w)
{
	return (float)(2 * (int32_t)q - (int32_t)((1u << w) - 1));
}

/* Store v (float) into element i of a dtype array. */
static void lr_st(dt_id dt, uint8_t *p, size_t i, float v)
{
	uint16_t h;

	if (dt == DT_F32) {
		memcpy(p + 4 * i, &v, 4);
		return;
	}
	h = dt == DT_F16 ? hf_f32_to_f16(v) : hf_f32_to_bf16(v);
	memcpy(p + 2 * i, &h, 2);
}

/* A chunk blob's header: version, and a dtype with no flag but LR_INLINE. */
static int lr_chunk_hdr(const uint8_t *b)
{
	return b[2] == LR_VERSION && !(b[3] & ~(LR_INLINE | 3)) && (b[3] & 3);
}

static const dt_id lr_dtypes[4] = {DT_U8, DT_F16, DT_BF16, DT_F32}; /* by mode bits 0-1 */

static int lr_decode_impl(cx_ctx *cx, void *dst, size_t n, const void *blob, size_t blen,
			  const void *base, const void *shared, size_t slen)
{
	const uint8_t *b = blob, *fb;
	size_t off = CX_HDR, foff = CX_HDR, fblen, vpos[LR_MAXBITS + 1] = {0};
	size_t upos[LR_MAXBITS + 1] = {0}, gpos[LR_MAXBITS + 1] = {0};
	lr_fac f;
	int rc;

	if (blen < CX_HDR || !lr_chunk_hdr(b))
		return -EBADMSG;
	dt_id dt = lr_dtypes[b[3] & 3];
	unsigned es = dt == DT_F32 ? 4 : 2;
	if (b[3] & LR_INLINE) {
		fb = b;
		fblen = blen;
	} else {
		const uint8_t *s = shared;
		if (!s || slen < CX_HDR || s[0] != CX_MAGIC || s[1] != CX_LOWRANK ||
		    s[2] != LR_VERSION || s[3] != LR_FACTORS)
			return -EBADMSG;
		fb = s;
		fblen = slen;
	}
	if ((rc = lr_fac_parse(fb, fblen, &foff, &f)))
		return rc;
	if (n % (f.cols * es))
		return -EBADMSG;
	size_t nr = n / (f.cols * es), cols = f.cols, K = f.K;
	uint8_t *vp = cx_scratch(cx, 0, lr_planes_len(&f, cols));
	if (!vp)
		return -ENOMEM;
	if ((rc = lr_get_planes(cx, fb, fblen, &foff, &f, cols, vp, vpos, !(b[3] & LR_INLINE))))
		return rc;
	if (b[3] & LR_INLINE)
		off = foff;
	else if (foff != fblen)
		return -EBADMSG;
	uint8_t *up = cx_scratch(cx, 3, lr_planes_len(&f, nr));
	if (!up)
		return -ENOMEM;
	if ((rc = lr_get_planes(cx, b, blen, &off, &f, nr, up, upos, 1)))
		return rc;
	if (off != blen)
		return -EBADMSG;
	if (!base)
		return -EINVAL;

	/* V as floats, padded to a multiple of 8 columns; the scales, a row's products, acc. */
	size_t cp = (cols + 7) & ~(size_t)7, k16 = (K + 15) & ~(size_t)15;
	float *V = cx_scratch(cx, 1, K * cp * sizeof *V);
	float *cs = cx_scratch(cx, 2, (2 * k16 + cp) * sizeof *cs);
	if (!V || !cs)
		return -ENOMEM;
	float *a = cs + k16, *acc = a + k16;
	for (size_t k = 0; k < K; k++) {
		unsigned w = lr_width(f.widths, k);
		size_t g = gpos[w]++;
		float *row = V + k * cp;
		cs[k] = lr_scale(&f, k);
		for (size_t j = 0; j < cols; j++)
			row[j] = lr_level(cx_bits(vp + vpos[w], (g * cols + j) * w, w), w);
		for (size_t j = cols; j < cp; j++)
			row[j] = 0;
	}
	for (size_t i = 0; i < nr; i++) {
		size_t g[LR_MAXBITS + 1] = {0};
		for (size_t k = 0; k < K; k++) {
			unsigned w = lr_width(f.widths, k);
			a[k] = cs[k] * lr_level(cx_bits(up + upos[w], (i * f.nb[w] + g[w]++) * w, w), w);
		}
		for (size_t j = 0; j < cp; j += 8)
			*(lr_f32x8 *)(void *)(acc + j) = (lr_f32x8){0};
		for (size_t k = 0; k < K; k++) {
			const float *vr = V + k * cp;
			float ak = a[k];
			if (ak == 0)
				continue; /* acc starts at +0.0, so adding +-0.0 never changes it */
			for (size_t j = 0; j < cp; j += 8) {
				lr_f32x8 t = *(const lr_f32x8 *)(const void *)(vr + j) * ak;
				*(lr_f32x8 *)(void *)(acc + j) += t;
			}
		}
		/* Where nothing is added the base's bits stay, -0.0 included. */
		const uint8_t *br = (const uint8_t *)base + i * cols * es;
		uint8_t *orow = (uint8_t *)dst + i * cols * es;
		for (size_t j = 0; j < cols; j++) {
			if (acc[j] == 0)
				memcpy(orow + j * es, br + j * es, es);
			else
				lr_st(dt, orow, j, hf_load(dt, br, j) + acc[j]);
		}
	}
	return 0;
}

static int lr_decode_op(cx_ctx *cx, void *dst, size_t n, const void *blob, size_t blen,
			const void *base, const void *shared, size_t slen)
{
	return lr_decode_impl(cx, dst, n, blob, blen, base, shared, slen);
}

int lr_decode(cx_ctx *cx, void *dst, size_t n, const void *blob, size_t blen, const void *base,
	      const void *shared, size_t slen)
{
	const uint8_t *b = blob;

	if (!cx || !blob || (!dst && n))
		return -EINVAL;
	if (blen < CX_HDR || b[0] != CX_MAGIC || b[1] != CX_LOWRANK)
		return -EBADMSG;
	return lr_decode_impl(cx, dst, n, blob, blen, base, shared, slen);
}

static int lr_needs_base(const uint8_t *blob, size_t blen)
{
	(void)blen;
	return lr_chunk_hdr(blob) ? 1 : -EBADMSG;
}

static int lr_needs_shared(const uint8_t *blob, size_t blen)
{
	(void)blen;
	return lr_chunk_hdr(blob) ? !(blob[3] & LR_INLINE) : -EBADMSG;
}

const struct cx_codec_ops lr_ops = {
	.decode_shared = lr_decode_op,
	.needs_base = lr_needs_base,
	.needs_shared = lr_needs_shared,
};

int lr_blob_bands(const void *blob, size_t blen, const void *shared, size_t slen, uint32_t *rank,
		  uint32_t bands[LR_MAXBITS + 1])
{
	const uint8_t *b = blob, *fb = blob;
	size_t off = CX_HDR, fl = blen;
	lr_fac f;

	if (!b || blen < CX_HDR || b[0] != CX_MAGIC || b[1] != CX_LOWRANK || b[2] != LR_VERSION)
		return -EBADMSG;
	if (!(b[3] & LR_INLINE)) {
		fb = shared;
		fl = slen;
		if (!fb || fl < CX_HDR || fb[3] != LR_FACTORS)
			return -EBADMSG;
	}
	if (lr_fac_parse(fb, fl, &off, &f))
		return -EBADMSG;
	*rank = (uint32_t)f.K;
	for (unsigned w = 0; w <= LR_MAXBITS; w++)
		bands[w] = (uint32_t)f.nb[w];
	return 0;
}

/* ---- encode ---------------------------------------------------------------------------------- */

void lr_blobs_free(lr_blobs *b)
{
	if (!b)
		return;
	free(b->buf);
	free(b->off);
	free(b->len);
	memset(b, 0, sizeof *b);
}

static int lr_mq(float x, double h, int top)
{
	double t = 2 * floor(x / (2 * h)) + 1;

	return t > top ? top : t < -top ? -top : (int)t;
}

/* Quantise x[n] to w bits with weights ww (squared input-channel weights, or NULL): the step by
 * Lloyd iterations on the weighted squared error, indices into q (NULL: not wanted). Returns, for
 * the product's least-squares scale, *xm = sum ww x m and *mm = sum ww m^2. */
static void lr_quant(const float *x, const float *ww, size_t n, unsigned w, uint16_t *q,
		     double *xm, double *mm)
{
	double ss = 0, ws = 0, h, a = 0, b = 0;
	int top = (1 << w) - 1;

	for (size_t i = 0; i < n; i++) {
		double c = ww ? ww[i] : 1;
		ss += c * x[i] * x[i];
		ws += c;
	}
	h = ss > 0 && ws > 0 ? lr_gauss_step[w] * sqrt(ss / ws) / 2 : 1;
	for (int it = 0; it <= LR_LLOYD; it++) {
		a = b = 0;
		for (size_t i = 0; i < n; i++) {
			double c = ww ? ww[i] : 1;
			int m = lr_mq(x[i], h, top);
			a += c * x[i] * m;
			b += c * (double)m * m;
		}
		if (!(a > 0 && b > 0))
			break;
		h = a / b;
	}
	if (q)
		for (size_t i = 0; i < n; i++)
			q[i] = (uint16_t)((lr_mq(x[i], h, top) + top) / 2);
	*xm = a;
	*mm = b;
}

/* Orthonormalise the columns of M [r][c] (r >= c, row-major) in place. */
static int lr_orth(float *M, size_t r, size_t c, float *tau)
{
	if (LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, (lapack_int)r, (lapack_int)c, M, (lapack_int)c, tau) ||
	    LAPACKE_sorgqr(LAPACK_ROW_MAJOR, (lapack_int)r, (lapack_int)c, (lapack_int)c, M,
			   (lapack_int)c, tau))
		return -EDOM;
	return 0;
}

static double lr_gauss(uint64_t *st)
{
	double u[2];

	for (int k = 0; k < 2; k++) {
		*st ^= *st >> 12;
		*st ^= *st << 25;
		*st ^= *st >> 27;
		u[k] = ((double)((*st * 0x2545F4914F6CDD1Dull) >> 11) + 0.5) / 9007199254740992.0;
	}
	return sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

/* The leading p singular triples of A [m][n] (row-major; destroyed): U [m][p], s[p], Vt [p][n]. */
static int lr_svd(float *A, size_t m, size_t n, size_t p, float *U, float *s, float *Vt)
{
	size_t kmin = m < n ? m : n;
	int rc = -ENOMEM;

	if (kmin <= LR_RSVD_MIN || 2 * (p + LR_OVERSAMPLE) >= kmin) {
		float *u = malloc(m * kmin * sizeof *u), *vt = malloc(kmin * n * sizeof *vt);
		float *sv = malloc(kmin * sizeof *sv);
		if (u && vt && sv) {
			rc = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m, (lapack_int)n, A,
					    (lapack_int)n, sv, u, (lapack_int)kmin, vt,
					    (lapack_int)n) ? -EDOM : 0;
			for (size_t i = 0; !rc && i < m; i++)
				memcpy(U + i * p, u + i * kmin, p * sizeof *U);
			if (!rc) {
				memcpy(Vt, vt, p * n * sizeof *Vt);
				memcpy(s, sv, p * sizeof *s);
			}
		}
		free(u);
		free(vt);
		free(sv);
		return rc;
	}
	size_t l = p + LR_OVERSAMPLE;
	float *Om = malloc(n * l * sizeof *Om), *Y = malloc(m * l * sizeof *Y);
	float *Z = malloc(n * l * sizeof *Z), *B = malloc(l * n * sizeof *B);
	float *Ub = malloc(l * l * sizeof *Ub), *sb = malloc(l * sizeof *sb);
	float *Uq = malloc(m * l * sizeof *Uq), *tau = malloc(l * sizeof *tau);
	uint64_t st = 0x9e3779b97f4a7c15ull ^ (m * 31 + n);

	if (Om && Y && Z && B && Ub && sb && Uq && tau) {
		for (size_t i = 0; i < n * l; i++)
			Om[i] = (float)lr_gauss(&st);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)l, (int)n, 1, A,
			    (int)n, Om, (int)l, 0, Y, (int)l);
		rc = 0;
		for (int it = 0; !rc && it < LR_POWER_ITERS; it++) {
			if ((rc = lr_orth(Y, m, l, tau)))
				break;
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)l, (int)m, 1,
				    A, (int)n, Y, (int)l, 0, Z, (int)l);
			if ((rc = lr_orth(Z, n, l, tau)))
				break;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)l, (int)n,
				    1, A, (int)n, Z, (int)l, 0, Y, (int)l);
		}
		if (!rc)
			rc = lr_orth(Y, m, l, tau);
		if (!rc) {
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)l, (int)n, (int)m, 1,
				    Y, (int)l, A, (int)n, 0, B, (int)n);
			/* B = Ub diag(sb) Vt, with Vt [l][n] written over Z's space */
			rc = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)l, (lapack_int)n, B,
					    (lapack_int)n, sb, Ub, (lapack_int)l, Z, (lapack_int)n)
				     ? -EDOM : 0;
		}
		if (!rc) {
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)l, (int)l,
				    1, Y, (int)l, Ub, (int)l, 0, Uq, (int)l);
			for (size_t i = 0; i < m; i++)
				memcpy(U + i * p, Uq + i * l, p * sizeof *U);
			memcpy(Vt, Z, p * n * sizeof *Vt);
			memcpy(s, sb, p * sizeof *s);
		}
	}
	free(Om);
	free(Y);
	free(Z);
	free(B);
	free(Ub);
	free(sb);
	free(Uq);
	free(tau);
	return rc;
}

/* The planner's state for one matrix. */
typedef struct lr_job {
	cx_ctx *cx;
	const uint8_t *ft, *base;
	dt_id dt;
	unsigned es;
	size_t rows, cols, crow, nchunks, K; /* K: components from the SVD */
	float *u, *v;  /* [K][rows], [K][cols]: balanced factors, v in the input's own units */
	float *ww;     /* [cols] squared input-channel weights, or NULL */
	double *D;     /* [K][LR_MAXBITS + 1]: error of component k at b bits (b = 0: dropped) */
	double rest;   /* error outside the K components */
	uint8_t *bits; /* the selection being encoded */
} lr_job;

static double lr_cost(const lr_job *j, unsigned b)
{
	/* factor indices, the F16 scale and the width nibble */
	return b ? (double)b * (double)(j->rows + j->cols) + 20 : 0;
}

/* Widths minimising sum D + lambda * bits; returns the bits. */
static double lr_select(const lr_job *j, double lambda, uint8_t *bits)
{
	double t = 0;

	for (size_t k = 0; k < j->K; k++) {
		double best = j->D[k * (LR_MAXBITS + 1)];
		unsigned bb = 0;
		for (unsigned b = 1; b <= LR_MAXBITS; b++) {
			double c = j->D[k * (LR_MAXBITS + 1) + b] + lambda * lr_cost(j, b);
			if (c < best) {
				best = c;
				bb = b;
			}
		}
		bits[k] = (uint8_t)bb;
		t += lr_cost(j, bb);
	}
	return t;
}

/* The selection with the most bits at most `budget` (a bisection on the multiplier). */
static void lr_allocate(const lr_job *j, double budget, uint8_t *bits, uint8_t *tmp)
{
	double lo = 0, hi = 1;

	/* lambda large enough to drop everything */
	for (size_t k = 0; k < j->K; k++)
		if (j->D[k * (LR_MAXBITS + 1)] / lr_cost(j, 1) > hi)
			hi = 2 * j->D[k * (LR_MAXBITS + 1)] / lr_cost(j, 1);
	if (lr_select(j, 0, bits) <= budget)
		return;
	lr_select(j, hi, bits);
	for (int it = 0; it < 64; it++) {
		double mid = lo ? sqrt(lo * hi) : hi / 1024;
		if (lr_select(j, mid, tmp) <= budget) {
			hi = mid;
			memcpy(bits, tmp, j->K);
		} else {
			lo = mid;
		}
		if (lo && hi / lo < 1 + 1e-9)
			break;
	}
	/* The multiplier moves whole steps of the rate; fill what is left with single-bit steps,
	 * best error drop per bit first. */
	double used = 0;
	for (size_t k = 0; k < j->K; k++)
		used += lr_cost(j, bits[k]);
	for (;;) {
		size_t bk = SIZE_MAX;
		double bg = 0;
		for (size_t k = 0; k < j->K; k++) {
			unsigned b = bits[k];
			if (b == LR_MAXBITS || used - lr_cost(j, b) + lr_cost(j, b + 1) > budget)
				continue;
			double g = (j->D[k * (LR_MAXBITS + 1) + b] - j->D[k * (LR_MAXBITS + 1) + b + 1]) /
				   (lr_cost(j, b + 1) - lr_cost(j, b));
			if (g > bg) {
				bg = g;
				bk = k;
			}
		}
		if (bk == SIZE_MAX)
			break;
		used += lr_cost(j, bits[bk] + 1) - lr_cost(j, bits[bk]);
		bits[bk]++;
	}
}

/* Encode the blobs of selection j->bits into out. */
static int lr_encode(lr_job *j, lr_blobs *out)
{
	size_t K = 0, R = j->rows, C = j->cols, nb[LR_MAXBITS + 1] = {0};
	size_t *kk = malloc(j->K * sizeof *kk);
	uint16_t *qu = NULL, *qv = NULL, *tmp = NULL;
	float *c = NULL;
	uint8_t *pl = NULL;
	int rc = -ENOMEM;
	ZSTD_CCtx *cc = cx_cctx(j->cx);

	memset(out, 0, sizeof *out);
	if (!kk || !cc)
		goto done;
	for (size_t k = 0; k < j->K; k++)
		if (j->bits[k]) {
			kk[K++] = k;
			nb[j->bits[k]]++;
		}
	if (!K) {
		rc = -ERANGE;
		goto done;
	}
	qu = malloc(K * R * sizeof *qu);
	qv = malloc(K * C * sizeof *qv);
	c = malloc(K * sizeof *c);
	tmp = malloc((R > C ? R : C) * K * sizeof *tmp);
	pl = malloc(cx_plane_len((R > C ? R : C) * K, LR_MAXBITS) + 16);
	if (!qu || !qv || !c || !tmp || !pl)
		goto done;
	float cmax = 0;
	for (size_t i = 0; i < K; i++) {
		size_t k = kk[i];
		double um, uu, vm, vv;
		lr_quant(j->u + k * R, NULL, R, j->bits[k], qu + i * R, &um, &uu);
		lr_quant(j->v + k * C, j->ww, C, j->bits[k], qv + i * C, &vm, &vv);
		c[i] = uu > 0 && vv > 0 ? (float)(um * vm / (uu * vv)) : 0;
		if (c[i] < 0)
			c[i] = 0; /* cannot happen for Lloyd's step, but a scale stays >= 0 */
		if (c[i] > cmax)
			cmax = c[i];
	}
	int e = cmax > 0 ? ilogbf(cmax) - 14 : 0;
	e = e < -128 ? -128 : e > 127 ? 127 : e;

	/* the factor section, in its own buffer */
	size_t fcap = 2 * CX_VMAX + K + 2 + 2 * K + CX_HDR;
	for (unsigned w = 1; w <= LR_MAXBITS; w++)
		if (nb[w])
			fcap += CX_VMAX + 1 + cx_plane_len(nb[w] * C, w);
	uint8_t *fs = malloc(fcap);
	if (!fs)
		goto done;
	size_t fo = 0;
	fo += cx_vput(fs + fo, C);
	fo += cx_vput(fs + fo, K);
	memset(fs + fo, 0, (K + 1) / 2);
	for (size_t i = 0; i < K; i++)
		fs[fo + i / 2] |= (uint8_t)((j->bits[kk[i]] - 1) << (i & 1 ? 4 : 0));
	fo += (K + 1) / 2;
	fs[fo++] = (uint8_t)(int8_t)e;
	for (size_t i = 0; i < K; i++) {
		uint16_t h = hf_f32_to_f16(ldexpf(c[i], -e));
		fs[fo++] = (uint8_t)h;
		fs[fo++] = (uint8_t)(h >> 8);
	}
	size_t vstart = fo;
	unsigned top = 0;
	for (unsigned w = 1; w <= LR_MAXBITS; w++)
		if (nb[w])
			top = w;
	/* V planes: written once as non-last (inline use) into fs; a factor blob rewrites its last */
	for (unsigned w = 1; w <= LR_MAXBITS; w++) {
		if (!nb[w])
			continue;
		size_t t = 0;
		for (size_t i = 0; i < K; i++)
			if (j->bits[kk[i]] == w)
				memcpy(tmp + (t++) * C, qv + i * C, C * sizeof *tmp);
		cx_pack(pl, tmp, t * C, 0, w);
		ssize_t z = cx_put_plane(j->cx, cc, fs + fo, fcap - fo, pl, cx_plane_len(t * C, w), 0);
		if (z < 0) {
			rc = (int)z;
			free(fs);
			goto done;
		}
		fo += (size_t)z;
	}

	/* blobs: chunk blobs, then the factor blob */
	size_t nch = j->nchunks, nbl = nch + (nch > 1);
	size_t cap = nbl * (CX_HDR + LR_MAXBITS * (CX_VMAX + 1)) + fcap;
	for (size_t ch = 0; ch < nch; ch++) {
		size_t nr = (ch + 1) * j->crow > R ? R - ch * j->crow : j->crow;
		for (unsigned w = 1; w <= LR_MAXBITS; w++)
			if (nb[w])
				cap += cx_plane_len(nb[w] * nr, w);
	}
	out->buf = malloc(cap);
	out->off = malloc(nbl * sizeof *out->off);
	out->len = malloc(nbl * sizeof *out->len);
	if (!out->buf || !out->off || !out->len) {
		free(fs);
		goto done;
	}
	out->nchunks = nch;
	out->nblobs = nbl;
	size_t o = 0;
	int code = j->dt == DT_F16 ? 1 : j->dt == DT_BF16 ? 2 : 3;
	for (size_t ch = 0; ch < nch; ch++) {
		size_t r0 = ch * j->crow, nr = r0 + j->crow > R ? R - r0 : j->crow;
		uint8_t *p = out->buf + o;
		size_t q = CX_HDR;
		p[0] = CX_MAGIC;
		p[1] = CX_LOWRANK;
		p[2] = LR_VERSION;
		p[3] = (uint8_t)(code | (nch == 1 ? LR_INLINE : 0));
		if (nch == 1) {
			memcpy(p + q, fs, fo);
			q += fo;
		}
		for (unsigned w = 1; w <= LR_MAXBITS; w++) {
			if (!nb[w])
				continue;
			size_t t = 0;
			for (size_t r = 0; r < nr; r++)
				for (size_t i = 0; i < K; i++)
					if (j->bits[kk[i]] == w)
						tmp[t++] = qu[i * R + r0 + r];
			cx_pack(pl, tmp, t, 0, w);
			ssize_t z = cx_put_plane(j->cx, cc, p + q, cap - o - q, pl,
						 cx_plane_len(t, w), w == top);
			if (z < 0) {
				rc = (int)z;
				free(fs);
				goto done;
			}
			q += (size_t)z;
		}
		out->off[ch] = o;
		out->len[ch] = q;
		o += q;
	}
	if (nch > 1) {
		/* the factor blob: the section again, its last V plane without a length */
		uint8_t *p = out->buf + o;
		size_t q = CX_HDR + vstart;
		p[0] = CX_MAGIC;
		p[1] = CX_LOWRANK;
		p[2] = LR_VERSION;
		p[3] = LR_FACTORS;
		memcpy(p + CX_HDR, fs, vstart);
		for (unsigned w = 1; w <= LR_MAXBITS; w++) {
			if (!nb[w])
				continue;
			size_t t = 0;
			for (size_t i = 0; i < K; i++)
				if (j->bits[kk[i]] == w)
					memcpy(tmp + (t++) * C, qv + i * C, C * sizeof *tmp);
			cx_pack(pl, tmp, t * C, 0, w);
			ssize_t z = cx_put_plane(j->cx, cc, p + q, cap - o - q, pl,
						 cx_plane_len(t * C, w), w == top);
			if (z < 0) {
				rc = (int)z;
				free(fs);
				goto done;
			}
			q += (size_t)z;
		}
		out->off[nch] = o;
		out->len[nch] = q;
		o += q;
	}
	free(fs);
	rc = 0;
done:
	if (rc)
		lr_blobs_free(out);
	free(kk);
	free(qu);
	free(qv);
	free(c);
	free(tmp);
	free(pl);
	return rc;
}

static uint64_t lr_total(const lr_blobs *b)
{
	uint64_t t = 0;

	for (size_t i = 0; i < b->nblobs; i++)
		t += b->len[i];
	return t;
}

/* Decode every chunk of b into rec [rows][cols] floats; fills the error figures of st. */
static int lr_measure(lr_job *j, const lr_blobs *b, const float *X, size_t nprobe, lr_stats *st)
{
	size_t R = j->rows, C = j->cols;
	uint8_t *row = malloc(j->crow * C * j->es);
	float *E = malloc(R * C * sizeof *E), *F = X ? malloc(R * C * sizeof *F) : NULL;
	double num = 0, den = 0;
	int rc = row && E && (!X || F) ? 0 : -ENOMEM;
	const uint8_t *fb = b->nchunks > 1 ? b->buf + b->off[b->nchunks] : NULL;
	size_t fl = b->nchunks > 1 ? b->len[b->nchunks] : 0;

	for (size_t ch = 0; !rc && ch < b->nchunks; ch++) {
		size_t r0 = ch * j->crow, nr = r0 + j->crow > R ? R - r0 : j->crow;
		size_t n = nr * C * j->es;
		rc = lr_decode(j->cx, row, n, b->buf + b->off[ch], b->len[ch], j->base + r0 * C * j->es,
			       fb, fl);
		for (size_t i = 0; !rc && i < nr * C; i++) {
			size_t at = r0 * C + i;
			float f = hf_load(j->dt, j->ft, at), o = hf_load(j->dt, j->base, at);
			float r = hf_load(j->dt, row, i);
			E[at] = f - r;
			if (F)
				F[at] = f;
			num += (double)E[at] * E[at];
			den += ((double)f - o) * ((double)f - o);
		}
	}
	if (!rc) {
		st->delta_rel_err = den > 0 ? sqrt(num / den) : 0;
		st->output_rel_err = 0;
	}
	if (!rc && X && nprobe) {
		float *Y = malloc(nprobe * R * sizeof *Y);
		if (!Y) {
			rc = -ENOMEM;
		} else {
			double a = 0, bb = 0;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nprobe, (int)R, (int)C,
				    1, X, (int)C, E, (int)C, 0, Y, (int)R);
			for (size_t i = 0; i < nprobe * R; i++)
				a += (double)Y[i] * Y[i];
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nprobe, (int)R, (int)C,
				    1, X, (int)C, F, (int)C, 0, Y, (int)R);
			for (size_t i = 0; i < nprobe * R; i++)
				bb += (double)Y[i] * Y[i];
			st->output_rel_err = bb > 0 ? sqrt(a / bb) : 0;
			free(Y);
		}
	}
	free(row);
	free(E);
	free(F);
	return rc;
}

int lr_plan(cx_ctx *cx, const void *ft, const void *base, dt_id dt, size_t rows, size_t cols,
	    size_t crow, const float *w, const float *X, size_t nprobe, double target,
	    lr_blobs *out, lr_stats *st)
{
	lr_job j = {.cx = cx, .ft = ft, .base = base, .dt = dt, .rows = rows, .cols = cols,
		    .crow = crow};
	float *A = NULL, *U = NULL, *s = NULL, *Vt = NULL;
	uint8_t *best = NULL, *tmp = NULL;
	double norm2 = 0;
	int rc;

	memset(out, 0, sizeof *out);
	memset(st, 0, sizeof *st);
	if (!cx || !ft || !base || (dt != DT_F32 && dt != DT_F16 && dt != DT_BF16) || !crow ||
	    !(target > 0) || (nprobe && !X))
		return -EINVAL;
	if (!rows || !cols)
		return -EDOM;
	j.es = dt == DT_F32 ? 4 : 2;
	j.nchunks = (rows + crow - 1) / crow;
	if (!(A = malloc(rows * cols * sizeof *A)))
		return -ENOMEM;
	for (size_t i = 0; i < rows * cols; i++) {
		float f = hf_load(dt, ft, i), o = hf_load(dt, base, i);
		double d = (double)f - o;
		if (!isfinite(f) || !isfinite(o) || fabs(d) > 0x1p100) {
			free(A);
			return -EDOM;
		}
		A[i] = (float)d;
		norm2 += d * d;
	}
	if (norm2 == 0) {
		free(A);
		return -EDOM;
	}
	if (w) {
		if (!(j.ww = malloc(cols * sizeof *j.ww))) {
			free(A);
			return -ENOMEM;
		}
		for (size_t c = 0; c < cols; c++)
			j.ww[c] = isfinite(w[c]) && w[c] > 0 ? w[c] * w[c] : 0;
		norm2 = 0;
		for (size_t r = 0; r < rows; r++)
			for (size_t c = 0; c < cols; c++) {
				A[r * cols + c] *= sqrtf(j.ww[c]);
				norm2 += (double)A[r * cols + c] * A[r * cols + c];
			}
	}
	/* headers: 4 bytes and about two plane lengths a blob, the section's varints and exponent
	 * (a component's scale and width are in lr_cost); the real bytes correct the estimate */
	double fixed = (double)(j.nchunks + (j.nchunks > 1)) * (CX_HDR + 2) + (double)cx_vlen(cols) + 2;
	double bits = (target - fixed) * 8;
	size_t kmin = rows < cols ? rows : cols;
	size_t K = bits > 0 ? (size_t)(bits / lr_cost(&j, 1)) : 0;
	K = K < kmin ? K : kmin;
	K = K < LR_KMAX ? K : LR_KMAX;
	rc = K ? 0 : -ERANGE;
	j.K = K;
	if (!rc) {
		U = malloc(rows * K * sizeof *U);
		s = malloc(K * sizeof *s);
		Vt = malloc(K * cols * sizeof *Vt);
		j.u = malloc(K * rows * sizeof *j.u);
		j.v = malloc(K * cols * sizeof *j.v);
		j.D = malloc(K * (LR_MAXBITS + 1) * sizeof *j.D);
		j.bits = malloc(K);
		best = malloc(K);
		tmp = malloc(K);
		rc = U && s && Vt && j.u && j.v && j.D && j.bits && best && tmp ? 0 : -ENOMEM;
	}
	if (!rc)
		rc = lr_svd(A, rows, cols, K, U, s, Vt);
	if (!rc) {
		double kept = 0;
		for (size_t k = 0; k < K; k++) {
			float r = sqrtf(s[k] > 0 ? s[k] : 0);
			kept += (double)s[k] * s[k];
			for (size_t i = 0; i < rows; i++)
				j.u[k * rows + i] = U[i * K + k] * r;
			for (size_t c = 0; c < cols; c++) {
				float wc = j.ww ? sqrtf(j.ww[c]) : 1;
				j.v[k * cols + c] = wc > 0 ? Vt[k * cols + c] * r / wc : 0;
			}
			double uu = 0, vv = 0;
			for (size_t i = 0; i < rows; i++)
				uu += (double)j.u[k * rows + i] * j.u[k * rows + i];
			for (size_t c = 0; c < cols; c++)
				vv += (j.ww ? j.ww[c] : 1) * (double)j.v[k * cols + c] * j.v[k * cols + c];
			double *D = j.D + k * (LR_MAXBITS + 1);
			D[0] = uu * vv;
			for (unsigned b = 1; b <= LR_MAXBITS; b++) {
				double um, mu, vm, mv;
				lr_quant(j.u + k * rows, NULL, rows, b, NULL, &um, &mu);
				lr_quant(j.v + k * cols, j.ww, cols, b, NULL, &vm, &mv);
				double g = mu > 0 && mv > 0 ? um * um / mu * (vm * vm / mv) : 0;
				D[b] = D[0] - g > 0 ? D[0] - g : 0;
				if (D[b] > D[b - 1] && b > 1)
					D[b] = D[b - 1]; /* never worse with a bit more */
			}
		}
		j.rest = norm2 - kept > 0 ? norm2 - kept : 0;
	}
	/* Bisect the bit budget on real bytes: the largest whose blobs fit the target (zstd may
	 * make room for more than the raw estimate). */
	double lo = 0, hi = 1.5 * bits, bestbytes = 0;
	lr_blobs cand = {0};
	int have = 0;
	for (int t = 0; !rc && t < LR_TRIES; t++) {
		double b = t == 0 ? bits : (lo + hi) / 2;
		lr_allocate(&j, b, j.bits, tmp);
		int r = lr_encode(&j, &cand);
		if (r == -ERANGE) { /* nothing selected */
			lo = b;
			continue;
		}
		if (r) {
			rc = r;
			break;
		}
		uint64_t bytes = lr_total(&cand);
		if (bytes <= target) {
			lo = b;
			if (!have || bytes > bestbytes) {
				lr_blobs_free(out);
				*out = cand;
				memset(&cand, 0, sizeof cand);
				memcpy(best, j.bits, K);
				bestbytes = (double)bytes;
				have = 1;
			}
		} else {
			hi = b;
		}
		lr_blobs_free(&cand);
	}
	if (!rc && !have)
		rc = -ERANGE;
	if (!rc) {
		memcpy(j.bits, best, K);
		st->bytes = (uint64_t)bestbytes;
		st->bits_per_weight = 8.0 * bestbytes / ((double)rows * cols);
		for (size_t k = 0; k < K; k++)
			if (best[k]) {
				st->rank++;
				st->bands[best[k]]++;
			}
		rc = lr_measure(&j, out, X, nprobe, st);
	}
	if (rc)
		lr_blobs_free(out);
	free(A);
	free(U);
	free(s);
	free(Vt);
	free(j.u);
	free(j.v);
	free(j.ww);
	free(j.D);
	free(j.bits);
	free(best);
	free(tmp);
	return rc;
}
