/*
 * test_deltadq.c -- unit tests of the DeltaDQ codec (codec/deltadq.h).
 *
 * One program, one case per argv[1] (meson registers each as its own test), on small synthetic
 * matrices: a base of N(0, 1) weights and a fine-tune that adds a delta of N(0, 0.01^2) plus a
 * rank-2 component, so the delta has the row/column structure real fine-tunes have and the output
 * error depends on how the dropout is placed. Every case checks properties that fail if the codec
 * is wrong; none measures time.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "deltadq.h"

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);      \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

/* ---- data ------------------------------------------------------------------------------------ */

static uint64_t rng_s = 0x1234567;

static double urand(void)
{
	rng_s ^= rng_s << 13;
	rng_s ^= rng_s >> 7;
	rng_s ^= rng_s << 17;
	return ((rng_s >> 11) + 0.5) * 0x1p-53;
}

static double grand(void)
{
	return sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand());
}

static float ld(dt_id dt, const void *p, size_t i)
{
	const uint8_t *b = p;
	uint16_t h;
	uint32_t u;
	float f;

	if (dt == DT_F32) {
		memcpy(&f, b + 4 * i, 4);
		return f;
	}
	memcpy(&h, b + 2 * i, 2);
	if (dt == DT_BF16) {
		u = (uint32_t)h << 16;
		memcpy(&f, &u, 4);
		return f;
	}
	return (float)ldexp((h & 0x7c00) ? (double)((h & 0x3ff) | 0x400) : (double)(h & 0x3ff),
			    (h & 0x7c00) ? ((h >> 10) & 0x1f) - 25 : -24) *
	       ((h & 0x8000) ? -1.0f : 1.0f);
}

/* Truncating conversions are fine for test data: the codec sees whatever bits we give it. */
static void st(dt_id dt, void *p, size_t i, float v)
{
	uint8_t *b = p;
	uint32_t u;
	uint16_t h;

	if (dt == DT_F32) {
		memcpy(b + 4 * i, &v, 4);
		return;
	}
	if (dt == DT_BF16) {
		memcpy(&u, &v, 4);
		h = (uint16_t)(u >> 16);
	} else {
		double a = fabs(v);
		int e;

		frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
		if (a < 0x1p-14)
			h = (uint16_t)(a * 0x1p24);
		else
			h = (uint16_t)((e + 14) << 10 | ((uint32_t)(ldexp(a, 11 - e)) & 0x3ff));
		h |= v < 0 ? 0x8000 : 0;
	}
	memcpy(b + 2 * i, &h, 2);
}

typedef struct mat {
	dt_id dt;
	size_t rows, cols;
	void *base, *ft;
} mat;

static mat mk(dt_id dt, size_t rows, size_t cols, double scale, uint64_t seed)
{
	mat m = { dt, rows, cols, NULL, NULL };
	size_t es = dt_size(dt);
	double u[2][4096], v[2][4096];

	CHECK(rows <= 4096 && cols <= 4096);
	rng_s = seed * 0x9e3779b97f4a7c15ull + 1;
	m.base = malloc(rows * cols * es + 1);
	m.ft = malloc(rows * cols * es + 1);
	CHECK(m.base && m.ft);
	for (int k = 0; k < 2; k++) {
		for (size_t r = 0; r < rows; r++)
			u[k][r] = grand();
		for (size_t c = 0; c < cols; c++)
			v[k][c] = grand();
	}
	for (size_t r = 0; r < rows; r++)
		for (size_t c = 0; c < cols; c++) {
			size_t i = r * cols + c;
			double b = grand() * 0.05;
			double d = scale * (grand() + 0.7 * (u[0][r] * v[0][c] + u[1][r] * v[1][c]));

			st(dt, m.base, i, (float)b);
			st(dt, m.ft, i, ld(dt, m.base, i) + (float)d);
		}
	return m;
}

static void mfree(mat *m)
{
	free(m->base);
	free(m->ft);
}

static float *probes(size_t n, size_t cols)
{
	float *x = malloc(n * cols * sizeof *x);

	CHECK(x);
	rng_s = 99;
	for (size_t i = 0; i < n * cols; i++)
		x[i] = (float)grand();
	return x;
}

/* Encode all chunks of m with p; decode each alone into out (whole matrix). Returns total bytes. */
static size_t roundtrip(cx_ctx *cx, const mat *m, const dq_params *p, void *out)
{
	size_t es = dt_size(m->dt), crow = dq_chunk_rows(m->cols, (unsigned)es), total = 0;
	size_t cap = dq_bound(crow, m->cols, (unsigned)es);
	uint8_t *blob = malloc(cap);

	CHECK(blob);
	for (size_t r0 = 0; r0 < m->rows; r0 += crow) {
		size_t nr = m->rows - r0 < crow ? m->rows - r0 : crow, off = r0 * m->cols * es;
		ssize_t z = dq_encode(cx, blob, cap, (uint8_t *)m->ft + off, (uint8_t *)m->base + off,
				      m->dt, m->cols, r0, nr, p);

		CHECK(z > 0 && (size_t)z <= cap);
		CHECK(cx_needs_base(blob, (size_t)z) == 1);
		CHECK(dq_decode(cx, (uint8_t *)out + off, nr * m->cols * es, blob, (size_t)z,
				(uint8_t *)m->base + off) == 0);
		total += (size_t)z;
	}
	free(blob);
	return total;
}

/* ---- cases ----------------------------------------------------------------------------------- */

/* No dropout, 16-bit uniform levels: the only error is quantisation, at most half a step (range /
 * 65535 / 2) of the delta plus half an ulp of the output dtype (the rounding into it). */
static void t_lossless_limit(void)
{
	static const dt_id dts[] = { DT_F32, DT_F16, DT_BF16 };
	cx_ctx *cx = cx_ctx_new();

	for (size_t t = 0; t < 3; t++) {
		mat m = mk(dts[t], 48, 96, 0.01, 3);
		size_t n = m.rows * m.cols, es = dt_size(m.dt);
		uint8_t *out = malloc(n * es);
		float *x = probes(8, m.cols);
		dq_params fx = { .group = 32, .keep = 32, .bits = 16, .quant = DQ_Q_UNIFORM,
				 .srows = 1, .seed = 5 }, p;
		dq_stats s;

		CHECK(dq_plan(cx, m.ft, m.base, m.dt, m.rows, m.cols, x, 8, 0, &fx, &p, &s) == 0);
		CHECK(p.keep == p.group && p.bits == 16);
		roundtrip(cx, &m, &p, out);
		for (size_t r = 0; r < m.rows; r++) {
			float mn = INFINITY, mx = -INFINITY;

			for (size_t c = 0; c < m.cols; c++) {
				float d = ld(m.dt, m.ft, r * m.cols + c) - ld(m.dt, m.base, r * m.cols + c);

				mn = d < mn ? d : mn;
				mx = d > mx ? d : mx;
			}
			for (size_t c = 0; c < m.cols; c++) {
				size_t i = r * m.cols + c;
				float f = ld(m.dt, m.ft, i), o = ld(m.dt, out, i);
				double ulp = m.dt == DT_F32 ? ldexp(fabs(f), -23) :
					     m.dt == DT_BF16 ? ldexp(fabs(f), -7) : ldexp(fabs(f), -10);

				CHECK(fabs((double)o - f) <= (mx - mn) / 65535.0 / 2 * 1.001 + ulp + 1e-30);
			}
		}
		CHECK(s.delta_rel_err < (m.dt == DT_F32 ? 1e-4 : 1e-2));
		CHECK(s.output_rel_err < 1e-3);
		printf("%s k=16 no dropout: delta err %.2e, output err %.2e, %.2f bits/weight\n",
		       dt_name(m.dt), s.delta_rel_err, s.output_rel_err, s.bits_per_weight);
		free(out);
		free(x);
		mfree(&m);
	}
	cx_ctx_free(cx);
}

/* The planned ratio lands within 10% of the target, and the errors grow with the ratio. */
static void t_ratio(dt_id dt, size_t rows, size_t cols)
{
	static const double R[] = { 8, 16, 32, 64, 128 };
	cx_ctx *cx = cx_ctx_new();
	mat m = mk(dt, rows, cols, 0.01, 7);
	float *x = probes(16, cols);
	double prev = 0, orig = (double)rows * cols * dt_size(dt);

	for (size_t i = 0; i < sizeof R / sizeof R[0]; i++) {
		dq_params p;
		dq_stats s;
		uint8_t *out = malloc(rows * cols * dt_size(dt));
		int rc = dq_plan(cx, m.ft, m.base, dt, rows, cols, x, 16, R[i], NULL, &p, &s);
		size_t bytes;

		printf("%s %zux%zu R=%g: rc %d, ratio %.2f, g %u keep %u bits %u q %u srows %u rs %u: "
		       "delta err %.4f output err %.4f\n", dt_name(dt), rows, cols, R[i], rc,
		       orig / s.bytes, p.group, p.keep, p.bits, p.quant, p.srows, p.rescale,
		       s.delta_rel_err, s.output_rel_err);
		CHECK(rc == 0);
		CHECK(fabs(orig / s.bytes / R[i] - 1) <= 0.10);
		CHECK(s.output_rel_err > prev);
		prev = s.output_rel_err;
		/* the stats are those of what dq_encode writes with the chosen params */
		bytes = roundtrip(cx, &m, &p, out);
		CHECK(bytes == s.bytes);
		free(out);
	}
	free(x);
	mfree(&m);
	cx_ctx_free(cx);
}

static void t_ratio_all(void)
{
	t_ratio(DT_BF16, 256, 512);
	t_ratio(DT_F32, 64, 256);
	t_ratio(DT_F16, 96, 200);
}

/* Dropout keeps exactly `keep` per full group and ceil(keep * L / g) of a short one, positions
 * differ between rows, and untouched elements keep the base's exact bits; cols % g != 0. */
static void t_groups(void)
{
	cx_ctx *cx = cx_ctx_new();
	const size_t rows = 40, cols = 100;
	const uint32_t g = 32, keep = 5;
	float *base = calloc(rows * cols, 4), *ft = malloc(rows * cols * 4), *out = malloc(rows * cols * 4);
	dq_params p = { .group = g, .keep = keep, .bits = 2, .quant = DQ_Q_KMEANS, .srows = 4,
			.seed = 11 };
	int differ = 0;

	CHECK(base && ft && out);
	for (size_t i = 0; i < rows * cols; i++) {
		base[i] = (i % 3) ? -0.0f : 0.25f;
		ft[i] = base[i] + 1.0f; /* every kept value quantises to a non-zero level */
	}
	mat m = { DT_F32, rows, cols, base, ft };
	roundtrip(cx, &m, &p, out);
	for (size_t r = 0; r < rows; r++)
		for (size_t st0 = 0; st0 < cols; st0 += g) {
			size_t L = cols - st0 < g ? cols - st0 : g, kk = L == g ? keep : (keep * L + g - 1) / g;
			size_t n = 0;

			for (size_t c = st0; c < st0 + L; c++) {
				size_t i = r * cols + c;

				if (memcmp(&out[i], &base[i], 4) == 0)
					continue;
				n++;
				/* rescaled by L / kk (full rescale); levels are stored F16 */
				CHECK(fabsf(out[i] - (base[i] + (float)L / kk)) < 0x1p-11f * L / kk + 1e-5f);
				if (r && memcmp(&out[i - cols], &base[i - cols], 4) == 0)
					differ = 1;
			}
			CHECK(n == kk);
		}
	CHECK(differ);
	free(base);
	free(ft);
	free(out);
	cx_ctx_free(cx);
}

/* A chunk of one row, at a large r0, and F16/BF16 rows shorter than a group. */
static void t_edge(void)
{
	cx_ctx *cx = cx_ctx_new();
	mat m = mk(DT_BF16, 3, 7, 0.01, 9);
	dq_params p = { .group = 64, .keep = 64, .bits = 8, .quant = DQ_Q_UNIFORM, .srows = 1 };
	uint8_t blob[4096], out[14];
	ssize_t z;

	z = dq_encode(cx, blob, sizeof blob, (uint8_t *)m.ft + 14, (uint8_t *)m.base + 14, DT_BF16, 7,
		      123456789, 1, &p);
	CHECK(z > 0);
	CHECK(dq_decode(cx, out, 14, blob, (size_t)z, (uint8_t *)m.base + 14) == 0);
	for (size_t c = 0; c < 7; c++)
		CHECK(fabsf(ld(DT_BF16, out, c) - ld(DT_BF16, m.ft, 7 + c)) < 1e-3f);
	CHECK(dq_decode(cx, out, 12, blob, (size_t)z, m.base) == -EBADMSG); /* wrong size */
	CHECK(dq_decode(cx, out, 14, blob, (size_t)z, NULL) == -EINVAL);
	CHECK(dq_encode(cx, blob, 8, m.ft, m.base, DT_BF16, 7, 0, 1, &p) == -ENOBUFS);
	p.keep = 65;
	CHECK(dq_encode(cx, blob, sizeof blob, m.ft, m.base, DT_BF16, 7, 0, 1, &p) == -EINVAL);
	/* DQ_Q_ZERO at 1 bit: signs times one stored step (+-s) */
	p = (dq_params){ .group = 8, .keep = 8, .bits = 1, .quant = DQ_Q_ZERO, .srows = 1 };
	z = dq_encode(cx, blob, sizeof blob, m.ft, m.base, DT_BF16, 7, 0, 1, &p);
	CHECK(z > 0 && dq_decode(cx, out, 14, blob, (size_t)z, m.base) == 0);
	for (size_t c = 0; c < 7; c++) {
		float dd = ld(DT_BF16, m.ft, c) - ld(DT_BF16, m.base, c);
		float od = ld(DT_BF16, out, c) - ld(DT_BF16, m.base, c);

		CHECK(dd == 0 || (dd > 0) == (od > 0));
	}

	/* DQ_Q_ZERO has an exact zero level: a zero delta leaves the base's bits alone */
	float zb[64], zf[64], zo[64];

	for (int i = 0; i < 64; i++) {
		zb[i] = 0.1f * (float)(i - 32);
		zf[i] = zb[i] + (i % 5 ? 0.0f : 0.5f);
	}
	p = (dq_params){ .group = 16, .keep = 16, .bits = 2, .quant = DQ_Q_ZERO, .srows = 1 };
	z = dq_encode(cx, blob, sizeof blob, zf, zb, DT_F32, 32, 0, 2, &p);
	CHECK(z > 0 && dq_decode(cx, zo, sizeof zo, blob, (size_t)z, zb) == 0);
	for (int i = 0; i < 64; i++)
		CHECK(i % 5 ? !memcmp(&zo[i], &zb[i], 4) : fabsf(zo[i] - zf[i]) < 0.05f);
	mfree(&m);
	cx_ctx_free(cx);
}

/* NaN/Inf anywhere: not for this codec (-EDOM), the caller stores the tensor lossless. Empty
 * matrices likewise. */
static void t_nonfinite(void)
{
	cx_ctx *cx = cx_ctx_new();
	mat m = mk(DT_F32, 16, 32, 0.01, 1);
	float *x = probes(4, 32);
	dq_params p, fx = { .group = 8, .keep = 4, .bits = 2, .quant = DQ_Q_KMEANS, .srows = 1 };
	dq_stats s;
	uint8_t blob[8192];

	((float *)m.ft)[77] = NAN;
	CHECK(dq_plan(cx, m.ft, m.base, DT_F32, 16, 32, x, 4, 16, NULL, &p, &s) == -EDOM);
	CHECK(dq_encode(cx, blob, sizeof blob, m.ft, m.base, DT_F32, 32, 0, 16, &fx) == -EDOM);
	((float *)m.ft)[77] = 0;
	((float *)m.base)[3] = -INFINITY;
	CHECK(dq_plan(cx, m.ft, m.base, DT_F32, 16, 32, x, 4, 16, NULL, &p, &s) == -EDOM);
	CHECK(dq_encode(cx, blob, sizeof blob, m.ft, m.base, DT_F32, 32, 0, 16, &fx) == -EDOM);
	((float *)m.base)[3] = 3e38f;
	((float *)m.ft)[3] = -3e38f;
	CHECK(dq_plan(cx, m.ft, m.base, DT_F32, 16, 32, x, 4, 16, NULL, &p, &s) == -EDOM);
	CHECK(dq_plan(cx, m.ft, m.base, DT_F32, 0, 32, x, 4, 16, NULL, &p, &s) == -EDOM);
	CHECK(dq_plan(cx, m.ft, m.base, DT_F32, 16, 0, x, 4, 16, NULL, &p, &s) == -EDOM);
	CHECK(dq_plan(cx, m.ft, m.base, DT_I32, 16, 32, x, 4, 16, NULL, &p, &s) == -EINVAL);
	CHECK(dq_encode(cx, blob, sizeof blob, m.ft, m.base, DT_F32, 32, 0, 0, &fx) == -EINVAL);
	free(x);
	mfree(&m);
	cx_ctx_free(cx);
}

/* Every truncation of a valid blob, and every single-byte corruption of its header, is rejected
 * or decodes within bounds (the output buffer has a guard byte; ASan checks reads). */
static void t_hostile(void)
{
	static const uint8_t qs[] = { DQ_Q_UNIFORM, DQ_Q_KMEANS, DQ_Q_UNIFORM, DQ_Q_ZERO };
	static const uint8_t bs[] = { 3, 4, 12, 3 };
	cx_ctx *cx = cx_ctx_new();
	mat m = mk(DT_BF16, 24, 72, 0.01, 4);
	size_t n = 24 * 72 * 2;
	uint8_t *out = malloc(n + 1), blob[16384], bad[16384];

	for (size_t t = 0; t < 4; t++) {
		dq_params p = { .group = 16, .keep = 6, .bits = bs[t], .quant = qs[t], .srows = 5,
				.seed = 3 };
		ssize_t z = dq_encode(cx, blob, sizeof blob, m.ft, m.base, DT_BF16, 72, 0, 24, &p);

		CHECK(z > 0);
		CHECK(cx_decode(cx, out, n, blob, (size_t)z, m.base) == 0);
		for (size_t len = 0; len < (size_t)z; len++) {
			memcpy(bad, blob, len); /* an exact-size copy: ASan sees any over-read */
			out[n] = 0xa5;
			CHECK(dq_decode(cx, out, n, bad, len, m.base) == -EBADMSG);
			CHECK(out[n] == 0xa5);
		}
		for (size_t i = 0; i < 32 && i < (size_t)z; i++)
			for (int v = 0; v < 256; v += 7) {
				int rc;

				memcpy(bad, blob, (size_t)z);
				bad[i] = (uint8_t)v;
				out[n] = 0xa5;
				rc = dq_decode(cx, out, n, bad, (size_t)z, m.base);
				CHECK(rc == 0 || rc == -EBADMSG);
				CHECK(out[n] == 0xa5);
			}
	}
	free(out);
	mfree(&m);
	cx_ctx_free(cx);
}

/* Same bytes from every run and every thread count: encode twice, decode the chunks of one
 * matrix with 1 and with 4 threads, each with its own context. */
typedef struct job {
	const mat *m;
	uint8_t **blobs;
	size_t *blen, nchunks, crow, first, step;
	uint8_t *out;
} job;

static void *decoder(void *arg)
{
	job *j = arg;
	cx_ctx *cx = cx_ctx_new();
	size_t es = dt_size(j->m->dt);

	CHECK(cx);
	for (size_t c = j->first; c < j->nchunks; c += j->step) {
		size_t r0 = c * j->crow, nr = j->m->rows - r0 < j->crow ? j->m->rows - r0 : j->crow;
		size_t off = r0 * j->m->cols * es;

		CHECK(cx_decode(cx, j->out + off, nr * j->m->cols * es, j->blobs[c], j->blen[c],
				(uint8_t *)j->m->base + off) == 0);
	}
	cx_ctx_free(cx);
	return NULL;
}

static void t_determinism(void)
{
	cx_ctx *cx = cx_ctx_new();
	mat m = mk(DT_BF16, 600, 1000, 0.01, 21); /* 1000 cols: 262 rows per chunk, 3 chunks */
	size_t es = 2, crow = dq_chunk_rows(1000, 2), nch = (600 + crow - 1) / crow;
	dq_params p = { .group = 64, .keep = 13, .bits = 3, .quant = DQ_Q_KMEANS, .srows = 8,
			.seed = 77 };
	uint8_t *blobs[8], *blobs2[8], *o1 = malloc(600 * 1000 * es), *o4 = malloc(600 * 1000 * es);
	size_t blen[8];

	CHECK(nch > 1 && nch <= 8 && o1 && o4);
	for (size_t c = 0; c < nch; c++) {
		size_t r0 = c * crow, nr = 600 - r0 < crow ? 600 - r0 : crow, cap = dq_bound(nr, 1000, 2);
		ssize_t z1, z2;

		blobs[c] = malloc(cap);
		blobs2[c] = malloc(cap);
		z1 = dq_encode(cx, blobs[c], cap, (uint8_t *)m.ft + r0 * 2000, (uint8_t *)m.base + r0 * 2000,
			       DT_BF16, 1000, r0, nr, &p);
		z2 = dq_encode(cx, blobs2[c], cap, (uint8_t *)m.ft + r0 * 2000,
			       (uint8_t *)m.base + r0 * 2000, DT_BF16, 1000, r0, nr, &p);
		CHECK(z1 > 0 && z1 == z2 && !memcmp(blobs[c], blobs2[c], (size_t)z1));
		blen[c] = (size_t)z1;
	}
	for (int threads = 1; threads <= 4; threads += 3) {
		pthread_t th[4];
		job j[4];
		uint8_t *o = threads == 1 ? o1 : o4;

		memset(o, threads, 600 * 1000 * es);
		for (int t = 0; t < threads; t++) {
			j[t] = (job){ &m, blobs, blen, nch, crow, (size_t)t, (size_t)threads, o };
			CHECK(pthread_create(&th[t], NULL, decoder, &j[t]) == 0);
		}
		for (int t = 0; t < threads; t++)
			pthread_join(th[t], NULL);
	}
	CHECK(!memcmp(o1, o4, 600 * 1000 * es));
	for (size_t c = 0; c < nch; c++) {
		free(blobs[c]);
		free(blobs2[c]);
	}
	free(o1);
	free(o4);
	mfree(&m);
	cx_ctx_free(cx);
}

/* Explicit parameters override the search: fixed fields come back as given. */
static void t_fixed(void)
{
	cx_ctx *cx = cx_ctx_new();
	mat m = mk(DT_BF16, 128, 256, 0.01, 5);
	float *x = probes(8, 256);
	dq_params p, fx = { .keep_frac = 0.25f, .bits = 2 };
	dq_stats s;
	int rc;

	rc = dq_plan(cx, m.ft, m.base, DT_BF16, 128, 256, x, 8, 32, &fx, &p, &s);
	CHECK(rc == 0 || rc == -ERANGE);
	CHECK(p.bits == 2 && p.keep * 4 == p.group);
	fx = (dq_params){ .group = 16 };
	CHECK(dq_plan(cx, m.ft, m.base, DT_BF16, 128, 256, x, 8, 16, &fx, &p, &s) == 0);
	CHECK(p.group == 16);
	fx = (dq_params){ .group = 16, .keep = 17 };
	CHECK(dq_plan(cx, m.ft, m.base, DT_BF16, 128, 256, x, 8, 16, &fx, &p, &s) == -EINVAL);
	CHECK(dq_plan(cx, m.ft, m.base, DT_BF16, 128, 256, x, 8, 0, NULL, &p, &s) == -EINVAL);
	free(x);
	mfree(&m);
	cx_ctx_free(cx);
}

/* ---- support mode ---------------------------------------------------------------------------- */

/* Prune m's base, and make its fine-tune keep the zeros (as SPP does): pattern 0 zeroes about half
 * at random (unstructured), 4 the two smallest of every 4 (2:4; cols a multiple of 4). Zeros
 * alternate +0.0 and -0.0, as torch's mask multiply leaves them; the fine-tune has the base's bits
 * there. Returns the number of zeros. */
static size_t prune(mat *m, int pattern)
{
	size_t n = m->rows * m->cols, es = dt_size(m->dt), z = 0;

	rng_s = 4242;
	for (size_t q = 0; q < n; q += 4) {
		int zero[4];

		for (size_t i = q; i < q + 4; i++) {
			float a = fabsf(ld(m->dt, m->base, i));
			size_t smaller = 0;

			for (size_t j = q; j < q + 4; j++) {
				float b = fabsf(ld(m->dt, m->base, j));

				smaller += b < a || (b == a && j < i);
			}
			zero[i - q] = pattern == 4 ? smaller < 2 : urand() < 0.5;
		}
		for (size_t i = q; i < q + 4; i++)
			if (zero[i - q]) {
				st(m->dt, m->base, i, z++ % 2 ? -0.0f : 0.0f);
				memcpy((uint8_t *)m->ft + i * es, (uint8_t *)m->base + i * es, es);
			}
	}
	return z;
}

/* Support mode on 50 % unstructured and 2:4 bases with SPP fine-tunes (F32, BF16): at 16x, 64x and
 * 128x every base zero comes back with the base's exact bits, the real ratio is within 10 %, the
 * stats are those of the real blobs, and the output error is no worse than dense DeltaDQ's at the
 * same ratio (which spends bytes on the zeros). */
static void t_support(void)
{
	static const dt_id dts[] = { DT_F32, DT_BF16 };
	static const double R[] = { 16, 64, 128 };
	cx_ctx *cx = cx_ctx_new();

	for (size_t t = 0; t < 2; t++)
		for (int pattern = 0; pattern <= 4; pattern += 4) {
			const size_t rows = 128, cols = 256, es = dt_size(dts[t]);
			mat m = mk(dts[t], rows, cols, 0.01, 31);
			size_t zeros = prune(&m, pattern);
			float *x = probes(16, cols);
			uint8_t *out = malloc(rows * cols * es);
			double orig = (double)rows * cols * es;

			CHECK(out && zeros > rows * cols * 4 / 10 && zeros < rows * cols * 6 / 10);
			for (size_t i = 0; i < sizeof R / sizeof R[0]; i++) {
				dq_params fx = { .support = 1 }, p, pd;
				dq_stats s, sd;
				size_t same = 0;
				int rc = dq_plan(cx, m.ft, m.base, m.dt, rows, cols, x, 16, R[i], &fx, &p, &s);
				int rcd = dq_plan(cx, m.ft, m.base, m.dt, rows, cols, x, 16, R[i], NULL, &pd,
						  &sd);

				printf("%s %s R=%g: support rc %d ratio %.2f g %u keep %u bits %u q %u: "
				       "delta err %.4f output err %.4f | dense rc %d ratio %.2f: delta err "
				       "%.4f output err %.4f q %u\n", dt_name(m.dt), pattern ? "2:4" : "50%",
				       R[i], rc, orig / s.bytes, p.group, p.keep, p.bits, p.quant,
				       s.delta_rel_err, s.output_rel_err, rcd, orig / sd.bytes,
				       sd.delta_rel_err, sd.output_rel_err, pd.quant);
				CHECK(rc == 0 && p.support == 1 && pd.support == 0);
				CHECK(fabs(orig / s.bytes / R[i] - 1) <= 0.10);
				CHECK(s.output_rel_err <= sd.output_rel_err);
				CHECK(roundtrip(cx, &m, &p, out) == s.bytes);
				for (size_t j = 0; j < rows * cols; j++)
					same += ld(m.dt, m.base, j) == 0 &&
						!memcmp(out + j * es, (uint8_t *)m.base + j * es, es);
				CHECK(same == zeros);
			}
			free(out);
			free(x);
			mfree(&m);
		}
	cx_ctx_free(cx);
}

/* Support-mode blobs: every truncation and the base of another support give -EBADMSG, byte
 * corruptions of the header decode within bounds or fail; rows without a support (an empty level
 * set) round-trip. */
static void t_support_hostile(void)
{
	cx_ctx *cx = cx_ctx_new();
	mat m = mk(DT_BF16, 24, 72, 0.01, 4);
	size_t n = 24 * 72 * 2;
	uint8_t *out = malloc(n + 1), *other = calloc(1, n), blob[16384], bad[16384];
	dq_params p = { .group = 16, .keep = 6, .bits = 3, .quant = DQ_Q_KMEANS, .srows = 5, .seed = 3,
			.support = 1 }, q;
	ssize_t z;

	CHECK(out && other);
	prune(&m, 4);
	memset(m.base, 0, 5 * 72 * 2); /* rows 0-4, the first level set: no support */
	memset(m.ft, 0, 5 * 72 * 2);
	z = dq_encode(cx, blob, sizeof blob, m.ft, m.base, DT_BF16, 72, 0, 24, &p);
	CHECK(z > 0 && dq_blob_params(blob, (size_t)z, &q) == 0 && q.support == 1);
	CHECK(dq_decode(cx, out, n, blob, (size_t)z, m.base) == 0);
	for (size_t i = 0; i < n / 2; i++)
		CHECK(ld(DT_BF16, m.base, i) != 0 || !memcmp(out + 2 * i, (uint8_t *)m.base + 2 * i, 2));
	CHECK(dq_decode(cx, out, n, blob, (size_t)z, other) == -EBADMSG);
	for (size_t len = 0; len < (size_t)z; len++) {
		memcpy(bad, blob, len);
		out[n] = 0xa5;
		CHECK(dq_decode(cx, out, n, bad, len, m.base) == -EBADMSG);
		CHECK(out[n] == 0xa5);
	}
	for (size_t i = 0; i < 32; i++)
		for (int v = 0; v < 256; v += 7) {
			int rc;

			memcpy(bad, blob, (size_t)z);
			bad[i] = (uint8_t)v;
			out[n] = 0xa5;
			rc = dq_decode(cx, out, n, bad, (size_t)z, m.base);
			CHECK(rc == 0 || rc == -EBADMSG);
			CHECK(out[n] == 0xa5);
		}
	p.support = 2;
	CHECK(dq_encode(cx, blob, sizeof blob, m.ft, m.base, DT_BF16, 72, 0, 24, &p) == -EINVAL);
	free(out);
	free(other);
	mfree(&m);
	cx_ctx_free(cx);
}

/* A version 1 blob (by the encoder of commit 927c1c6, before support mode) still decodes to the
 * same bytes; today's encoder writes the current version. */
static void t_old_blob(void)
{
	static const uint8_t old[] = {
		0x64, 0x02, 0x01, 0x02, 0x08, 0x03, 0x00, 0x28, 0x07, 0x06, 0x10, 0x05,
		0x04, 0x09, 0x66, 0xe6, 0xc6, 0xbd, 0xa7, 0x98, 0x56, 0xbd, 0x0c, 0x36,
		0xb1, 0xbc, 0xcb, 0xa5, 0xdc, 0xbb, 0xbc, 0xbb, 0x49, 0x3c, 0x9a, 0x99,
		0x01, 0x3d, 0xde, 0x5d, 0x7c, 0x3d, 0xb6, 0x20, 0xc2, 0x3d, 0xbc, 0xbb,
		0x93, 0xbd, 0xef, 0xee, 0x14, 0xbd, 0x9a, 0x99, 0xa1, 0xbc, 0xcd, 0xcc,
		0xd1, 0xbb, 0x11, 0x11, 0x19, 0x3c, 0xde, 0xdd, 0x9d, 0x3c, 0xab, 0xaa,
		0x00, 0x3d, 0x67, 0xb6, 0x75, 0x3d, 0x00, 0xcd, 0xf7, 0x80, 0xd4, 0x2c,
		0x6a, 0xa5, 0x16, 0xca, 0x49, 0x3e, 0x32, 0x04, 0x4d, 0x6a, 0x6c, 0xf6,
		0xbb, 0xce, 0x9d, 0x89, 0x3a, 0x07, 0xf9, 0x2f, 0x90, 0xb5, 0xcc, 0x1e,
		0x03,
	};
	cx_ctx *cx = cx_ctx_new();
	mat m = mk(DT_BF16, 6, 40, 0.01, 17);
	dq_params p = { .group = 16, .keep = 5, .bits = 3, .quant = DQ_Q_KMEANS, .srows = 4,
			.seed = 9 };
	uint8_t blob[4096], out[480];
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a of the output of that commit's decoder */
	ssize_t z = dq_encode(cx, blob, sizeof blob, m.ft, m.base, DT_BF16, 40, 7, 6, &p);

	CHECK(z > 0 && blob[2] == DQ_VERSION && DQ_VERSION > 1);
	CHECK(dq_decode(cx, out, sizeof out, old, sizeof old, m.base) == 0);
	for (size_t i = 0; i < sizeof out; i++)
		h = (h ^ out[i]) * 0x100000001b3ull;
	CHECK(h == 0x7ab73c7ef85bfe8eull);
	mfree(&m);
	cx_ctx_free(cx);
}

/* The version 2 header leaves out what has its default: a 16x64 F32 chunk without dropout, one
 * level set, r0 = seed = 0, 1-bit signs takes 9 bytes besides its plane (5 fixed, cols, e, one F16
 * step), dq_blob_params gives back parameters that encode the same bytes, and with every field
 * present the header grows by exactly their varints. */
static void t_compact(void)
{
	cx_ctx *cx = cx_ctx_new();
	mat m = mk(DT_F32, 16, 64, 0.01, 23);
	dq_params p = { .group = 64, .keep = 64, .bits = 1, .quant = DQ_Q_ZERO, .srows = 16 }, q;
	uint8_t blob[4096], blob2[4096], out[16 * 64 * 4];
	ssize_t z, z2;

	z = dq_encode(cx, blob, sizeof blob, m.ft, m.base, DT_F32, 64, 0, 16, &p);
	CHECK(z > 0 && z <= 9 + 16 * 64 / 8);
	CHECK(dq_decode(cx, out, sizeof out, blob, (size_t)z, m.base) == 0);
	CHECK(dq_blob_params(blob, (size_t)z, &q) == 0 && q.keep == q.group && q.bits == 1 &&
	      q.quant == DQ_Q_ZERO && q.seed == 0);
	z2 = dq_encode(cx, blob2, sizeof blob2, m.ft, m.base, DT_F32, 64, 0, 16, &q);
	CHECK(z2 == z && !memcmp(blob, blob2, (size_t)z));
	/* dropout (group 64, keep 10), 4 level sets, r0 300, seed 7: + 1 + 1, + 1, + 2 + 1 bytes of
	 * varints and 3 more steps; the plane shrinks to 160 bits */
	p = (dq_params){ .group = 64, .keep = 10, .bits = 1, .quant = DQ_Q_ZERO, .srows = 4, .seed = 7 };
	z2 = dq_encode(cx, blob2, sizeof blob2, m.ft, m.base, DT_F32, 64, 300, 16, &p);
	CHECK(z2 > 0 && z2 <= 9 + 6 + 3 * 2 + 160 / 8);
	CHECK(dq_decode(cx, out, sizeof out, blob2, (size_t)z2, m.base) == 0);
	CHECK(dq_decode(cx, out, sizeof out - 4 * 64, blob2, (size_t)z2, m.base) == -EBADMSG);
	mfree(&m);
	cx_ctx_free(cx);
}

/* The sparse and the dense decode paths (codec/deltadq.c picks one by the kept fraction) give the
 * same bytes on the same blob: every dtype, odd widths (short tail groups, rows not a multiple of
 * 8), kept fractions on both sides of the crossover and above half (the ascending mask walk), 1-
 * to 10-bit levels with and without a low plane. dq_decode_path is codec/deltadq.c's test hook. */
extern int dq_decode_path;

static void t_paths(void)
{
	static const dt_id dts[] = { DT_BF16, DT_F16, DT_F32 };
	static const unsigned gk[][2] = { { 8, 1 },    { 64, 16 },  { 128, 24 }, { 128, 66 },
					  { 100, 37 }, { 256, 126 }, { 512, 276 }, { 1024, 1000 },
					  { 3, 2 },    { 16, 9 } };
	static const unsigned bq[][3] = { { 1, DQ_Q_ZERO, 1 },   { 1, DQ_Q_KMEANS, 1 },
					  { 2, DQ_Q_UNIFORM, 2 }, { 3, DQ_Q_KMEANS, 0 },
					  { 4, DQ_Q_ZERO, 3 },    { 10, DQ_Q_UNIFORM, 6 } };
	cx_ctx *cx = cx_ctx_new();

	for (size_t d = 0; d < 3; d++)
		for (size_t cols = 509; cols <= 1030; cols += 521) {
			const size_t rows = 13, es = dts[d] == DT_F32 ? 4 : 2, n = rows * cols * es;
			mat m = mk(dts[d], rows, cols, 0.01, (unsigned)(31 + d));
			uint8_t *blob = malloc(dq_bound(rows, cols, (unsigned)es));
			uint8_t *o[3] = { malloc(n), malloc(n), malloc(n) };

			CHECK(blob && o[0] && o[1] && o[2]);
			for (size_t i = 0; i < sizeof gk / sizeof gk[0]; i++)
				for (size_t b = 0; b < sizeof bq / sizeof bq[0]; b++) {
					dq_params p = { .group = gk[i][0], .keep = gk[i][1],
							.bits = (uint8_t)bq[b][0], .quant = (uint8_t)bq[b][1],
							.split = (uint8_t)bq[b][2], .srows = 4,
							.seed = (uint32_t)(5 + i) };
					ssize_t z = dq_encode(cx, blob, dq_bound(rows, cols, (unsigned)es), m.ft,
							      m.base, dts[d], cols, 7 * i, rows, &p);

					CHECK(z > 0);
					for (int path = 0; path < 3; path++) {
						memset(o[path], 0x5a + path, n);
						dq_decode_path = path;
						CHECK(cx_decode(cx, o[path], n, blob, (size_t)z, m.base) == 0);
					}
					dq_decode_path = 0;
					CHECK(!memcmp(o[0], o[1], n) && !memcmp(o[1], o[2], n));
				}
			free(blob);
			for (int k = 0; k < 3; k++)
				free(o[k]);
			mfree(&m);
		}
	cx_ctx_free(cx);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} cases[] = {
		{ "lossless_limit", t_lossless_limit }, { "ratio", t_ratio_all },
		{ "groups", t_groups }, { "edge", t_edge }, { "nonfinite", t_nonfinite },
		{ "hostile", t_hostile }, { "determinism", t_determinism }, { "fixed", t_fixed },
		{ "support", t_support }, { "support_hostile", t_support_hostile },
		{ "old_blob", t_old_blob }, { "compact", t_compact }, { "paths", t_paths },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (argc < 2 || !strcmp(argv[1], cases[i].name)) {
			cases[i].fn();
			if (argc >= 2)
				return 0;
		}
	if (argc >= 2) {
		fprintf(stderr, "unknown case %s\n", argv[1]);
		return 2;
	}
	return 0;
}
