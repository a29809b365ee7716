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
#include "deltadq.h"
#include "half.h"

/* Above this min(rows, cols), the SVD is of a randomized range of rank LR_OVERSAMPLE above what
 * the budget can hold: a full sgesdd of a 4096 x 4096 matrix takes ~20 s on one core, the range
 * finder at rank 256 under a second, and the components beyond the budget are never kept. */
#define LR_RSVD_MIN 768
#define LR_OVERSAMPLE 16
#define LR_POWER_ITERS 2
/* Components the planner keeps at most. Decode costs K multiply-adds an element:
 * tests/bench/bench_decode, one 256 x 512 BF16 chunk, one core (GEMM blocked, SSE2/AVX2 clones):
 * rank 6 1038 MB/s, 14 882, 31 615, 63 450 (the lossless delta: 2523). Past a few hundred the
 * first read of a matrix would crawl, and DeltaDQ wins there anyway (ratios near 16x). */
#define LR_PLAN_KMAX 256
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

/* A chunk blob's header: version, and a dtype with no flag but LR_INLINE. */
static int lr_chunk_hdr(const uint8_t *b)
{
	return b[2] == LR_VERSION && !(b[3] & ~(LR_INLINE | LR_RESID | 3)) && (b[3] & 3);
}

static const dt_id lr_dtypes[4] = {DT_U8, DT_F16, DT_BF16, DT_F32}; /* by mode bits 0-1 */

/* acc[nr][cp] = A[nr][K] V[K][cp] (cp a multiple of 8). Each element is summed over k in order,
 * every product rounded before its add (the codec library is built with -ffp-contract=off), so
 * the bits are the same at any vector width; AVX2 only widens the lanes. Blocks of 4 rows x 8
 * columns keep their sums in registers across k: one load of V feeds four rows. */
__attribute__((target_clones("avx2", "default"))) static void
lr_gemm(const float *A, size_t K, const float *V, size_t cp, size_t nr, float *acc)
{
	size_t i = 0;

	for (; i + 4 <= nr; i += 4)
		for (size_t j = 0; j < cp; j += 8) {
			lr_f32x8 c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
			const float *a0 = A + i * K, *a1 = a0 + K, *a2 = a1 + K, *a3 = a2 + K;
			for (size_t k = 0; k < K; k++) {
				lr_f32x8 v = *(const lr_f32x8 *)(const void *)(V + k * cp + j), t;
				t = v * a0[k];
				c0 += t;
				t = v * a1[k];
				c1 += t;
				t = v * a2[k];
				c2 += t;
				t = v * a3[k];
				c3 += t;
			}
			*(lr_f32x8 *)(void *)(acc + i * cp + j) = c0;
			*(lr_f32x8 *)(void *)(acc + (i + 1) * cp + j) = c1;
			*(lr_f32x8 *)(void *)(acc + (i + 2) * cp + j) = c2;
			*(lr_f32x8 *)(void *)(acc + (i + 3) * cp + j) = c3;
		}
	for (; i < nr; i++)
		for (size_t j = 0; j < cp; j += 8) {
			lr_f32x8 c0 = {0};
			for (size_t k = 0; k < K; k++) {
				lr_f32x8 t = *(const lr_f32x8 *)(const void *)(V + k * cp + j) * A[i * K + k];
				c0 += t;
			}
			*(lr_f32x8 *)(void *)(acc + i * cp + j) = c0;
		}
}

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
	int resid = !!(b[3] & LR_RESID);
	if (!up)
		return -ENOMEM;
	if ((rc = lr_get_planes(cx, b, blen, &off, &f, nr, up, upos, !resid)))
		return rc;
	/* a hybrid's residual: a DeltaDQ blob to the end, decoded over the low-rank rows */
	const uint8_t *rb = b + off;
	size_t rlen = blen - off;
	if (resid ? rlen < CX_HDR || rb[0] != CX_MAGIC || rb[1] != CX_DELTADQ : off != blen)
		return -EBADMSG;
	if (!base)
		return -EINVAL;
	uint8_t *final = dst;
	if (resid && !(dst = cx_scratch(cx, CX_S_STAGE, n)))
		return -ENOMEM;

	/* V as floats, padded to a multiple of 8 columns; the scales, every row's products, acc. */
	size_t cp = (cols + 7) & ~(size_t)7, k16 = (K + 15) & ~(size_t)15;
	float *V = cx_scratch(cx, 1, K * cp * sizeof *V);
	size_t ak = (nr * K + 15) & ~(size_t)15; /* acc stays 64-byte aligned for the vectors */
	float *cs = cx_scratch(cx, 2, (k16 + ak + nr * cp) * sizeof *cs);
	if (!V || !cs)
		return -ENOMEM;
	float *A = cs + k16, *acc = A + ak;
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
			A[i * K + k] = cs[k] * lr_level(cx_bits(up + upos[w], (i * f.nb[w] + g[w]++) * w,
							     w), w);
		}
	}
	lr_gemm(A, K, V, cp, nr, acc);
	for (size_t i = 0; i < nr; i++) {
		/* Where nothing is added the base's bits stay, -0.0 included (acc starts at +0.0 and
		 * sums of products never make -0.0). */
		const uint8_t *br = (const uint8_t *)base + i * cols * es;
		const float *ar = acc + i * cp;
		uint8_t *orow = (uint8_t *)dst + i * cols * es;
		for (size_t j = 0; j < cols; j++) {
			if (ar[j] == 0)
				memcpy(orow + j * es, br + j * es, es);
			else
				hf_store(dt, orow, j, hf_load(dt, br, j) + ar[j]);
		}
	}
	return resid ? dq_decode(cx, final, n, rb, rlen, dst) : 0;
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
static int lr_encode(lr_job *j, int resid, lr_blobs *out)
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
	size_t cap = nbl * (CX_HDR + (LR_MAXBITS + 1) * (CX_VMAX + 1)) + fcap;
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
		p[3] = (uint8_t)(code | (nch == 1 ? LR_INLINE : 0) | (resid ? LR_RESID : 0));
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
						 cx_plane_len(t, w), w == top && !resid);
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

/* The selection whose blobs are the largest within target bytes, by bisection of the bit budget
 * from the raw estimate `bits` (zstd may make room for more): *out, its widths in best[K], its
 * bytes in *bytes. -ERANGE if nothing fits. */
static int lr_fit(lr_job *j, double target, double bits, lr_blobs *out, uint8_t *best,
		  double *bytes_out)
{
	double lo = 0, hi = 1.5 * bits, bestbytes = 0;
	uint8_t *tmp = malloc(j->K);
	lr_blobs cand = {0};
	int have = 0, rc = tmp ? 0 : -ENOMEM;

	for (int t = 0; !rc && t < LR_TRIES; t++) {
		double b = t == 0 ? bits : (lo + hi) / 2;
		lr_allocate(j, b, j->bits, tmp);
		int r = lr_encode(j, 0, &cand);
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
				memcpy(best, j->bits, j->K);
				bestbytes = (double)bytes;
				have = 1;
			}
		} else {
			hi = b;
		}
		lr_blobs_free(&cand);
	}
	free(tmp);
	if (!rc && !have)
		rc = -ERANGE;
	*bytes_out = bestbytes;
	return rc;
}

/* Hybrid: the low-rank blobs in *out (selection j->bits) get a DeltaDQ residual of about `rest`
 * bytes, planned and encoded against what they decode to; *out is replaced by the chunks with
 * LR_RESID and their residual, the factor blob unchanged. */
static int lr_resid(lr_job *j, double rest, const float *X, size_t nprobe, lr_blobs *out,
		    dq_params *p)
{
	size_t R = j->rows, C = j->cols, rb = C * j->es, n = R * rb;
	uint8_t *rec = malloc(n);
	lr_blobs lb = {0}, hb = {0};
	dq_stats ds;
	int rc = rec ? 0 : -ENOMEM;
	const uint8_t *fb = out->nchunks > 1 ? out->buf + out->off[out->nchunks] : NULL;
	size_t fl = out->nchunks > 1 ? out->len[out->nchunks] : 0;

	for (size_t c = 0; !rc && c < out->nchunks; c++) {
		size_t r0 = c * j->crow, nr = r0 + j->crow > R ? R - r0 : j->crow;
		rc = lr_decode(j->cx, rec + r0 * rb, nr * rb, out->buf + out->off[c], out->len[c],
			       j->base + r0 * rb, fb, fl);
	}
	if (!rc && !(rest > 0))
		rc = -ERANGE;
	if (!rc) {
		rc = dq_plan(j->cx, j->ft, rec, j->dt, R, C, X, nprobe, (double)n / rest, NULL, p, &ds);
		rc = rc == -ERANGE ? 0 : rc; /* the closest it found: bytes are measured anyway */
	}
	if (!rc)
		rc = lr_encode(j, 1, &lb);
	size_t cap = lr_total(&lb);
	for (size_t c = 0; !rc && c < out->nchunks; c++) {
		size_t nr = (c + 1) * j->crow > R ? R - c * j->crow : j->crow;
		cap += dq_bound(nr, C, j->es);
	}
	if (!rc) {
		hb.buf = malloc(cap);
		hb.off = malloc(lb.nblobs * sizeof *hb.off);
		hb.len = malloc(lb.nblobs * sizeof *hb.len);
		hb.nchunks = lb.nchunks;
		hb.nblobs = lb.nblobs;
		rc = hb.buf && hb.off && hb.len ? 0 : -ENOMEM;
	}
	size_t o = 0;
	for (size_t c = 0; !rc && c < lb.nblobs; c++) {
		memcpy(hb.buf + o, lb.buf + lb.off[c], lb.len[c]);
		hb.off[c] = o;
		hb.len[c] = lb.len[c];
		o += lb.len[c];
		if (c >= lb.nchunks)
			continue; /* the factor blob */
		size_t r0 = c * j->crow, nr = r0 + j->crow > R ? R - r0 : j->crow;
		ssize_t z = dq_encode(j->cx, hb.buf + o, cap - o, j->ft + r0 * rb, rec + r0 * rb,
				      j->dt, C, r0, nr, p);
		if (z < 0) {
			rc = (int)z;
			break;
		}
		hb.len[c] += (size_t)z;
		o += (size_t)z;
	}
	if (!rc) {
		lr_blobs_free(out);
		*out = hb;
	} else {
		lr_blobs_free(&hb);
	}
	lr_blobs_free(&lb);
	free(rec);
	return rc;
}

int lr_plan(cx_ctx *cx, const void *ft, const void *base, dt_id dt, size_t rows, size_t cols,
	    size_t crow, const float *w, const float *X, size_t nprobe, double target,
	    const double *fracs, size_t nfrac, lr_blobs *out, lr_stats *st)
{
	lr_job j = {.cx = cx, .ft = ft, .base = base, .dt = dt, .rows = rows, .cols = cols,
		    .crow = crow};
	float *A = NULL, *U = NULL, *s = NULL, *Vt = NULL;
	uint8_t *best = NULL;
	double norm2 = 0;
	int rc;

	memset(out, 0, sizeof *out);
	memset(st, 0, sizeof *st);
	if (!cx || !ft || !base || (dt != DT_F32 && dt != DT_F16 && dt != DT_BF16) || !crow ||
	    !(target > 0) || !fracs || !nfrac || (nprobe && !X))
		return -EINVAL;
	for (size_t v = 0; v < nfrac; v++)
		if (!(fracs[v] > 0 && fracs[v] <= 1))
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
	K = K < LR_PLAN_KMAX ? K : LR_PLAN_KMAX;
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
		rc = U && s && Vt && j.u && j.v && j.D && j.bits && best ? 0 : -ENOMEM;
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
	/* Each split of the budget on the same SVD; the one with the least error is kept. */
	for (size_t v = 0; !rc && v < nfrac; v++) {
		double frac = fracs[v], lrt = frac < 1 ? target * frac : target, got = 0;
		lr_blobs cb = {0};
		lr_stats cs = {0};
		int r = lr_fit(&j, lrt, bits * lrt / target, &cb, best, &got);
		if (!r) {
			memcpy(j.bits, best, K);
			for (size_t k = 0; k < K; k++)
				if (best[k]) {
					cs.rank++;
					cs.bands[best[k]]++;
				}
		}
		if (!r && frac < 1)
			r = lr_resid(&j, target - got, X, nprobe, &cb, &cs.resid);
		if (!r) {
			cs.hybrid = frac < 1;
			cs.frac = frac;
			cs.bytes = lr_total(&cb);
			cs.bits_per_weight = 8.0 * (double)cs.bytes / ((double)rows * cols);
			r = lr_measure(&j, &cb, X, nprobe, &cs);
		}
		if (!r && (!out->buf || (nprobe ? cs.output_rel_err < st->output_rel_err
					      : cs.delta_rel_err < st->delta_rel_err))) {
			lr_blobs_free(out);
			*out = cb;
			*st = cs;
		} else {
			lr_blobs_free(&cb);
		}
		if (r && r != -ERANGE && r != -EDOM)
			rc = r;
	}
	if (!rc && !out->buf)
		rc = -ERANGE;
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
	return rc;
}
