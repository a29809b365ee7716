/*
 * bench_deltadq.c -- DeltaDQ against DARE and BitDelta at equal bytes on disk, the design
 * choices of codec/deltadq.c, and decode speed against the lossless delta.
 *
 *   bench_deltadq [--limit N] [--nprobe P] [--eval-rows R] [--speed] BASE.safetensors FT.safetensors
 *   bench_deltadq [...] CHARLM_DIR      (base.safetensors + finetuned_qa.safetensors)
 *
 * --speed: only part 4 (plan at each R, then decode MB/s of lossless and DeltaDQ side by side).
 *
 * Matrices: every 2-D F32/F16/BF16 tensor of FT with a base of the same name, dtype and shape and
 * a non-zero delta (--limit N keeps N of them, evenly spaced in file order). Probe inputs X:
 * nprobe N(0, 1) rows per matrix width, the same for every method.
 *
 * 1. Table: for R = 16, 32, 64, 128, DeltaDQ (dq_plan at ratio R) and, on each matrix, at the
 *    bytes DeltaDQ used there:
 *    - DARE: each element kept with probability q (iid, seeded: positions cost nothing), kept
 *      values rescaled by 1/q and quantised by the same quantiser family (k-means levels per set
 *      of rows, at 1..4 bits); bytes = per-chunk header (12) + levels + zstd of the packed
 *      indices; q, bits and level-set rows searched for the smallest output error at those bytes.
 *    - BitDelta: sign of the delta and one scale per matrix (mean |d|, the paper's init). Below
 *      1 bit per weight it signs a random subset (q = bits available), the scale rescaled or not,
 *      whichever errs less; above, it uses its 1 bit and fewer bytes than the budget.
 *    Errors are computed here, the same way for all three, on the first --eval-rows rows of each
 *    matrix (all rows by default): relative delta error ||dW - dW'|| / ||dW|| and relative output
 *    error ||X (dW - dW')^T|| / ||X W_ft^T|| after rounding base + dW' into the dtype. Columns:
 *    achieved ratio (sum of original bytes / sum of bytes), mean over matrices of each error.
 * 2. DeltaDQ per matrix at each R (dq_plan's own figures on the full matrix), and which
 *    quantiser, bits and dropout the search picked.
 * 3. Split study: bytes of the planes packed together vs split into a high and a low plane, for
 *    both quantisers at 2, 3, 4 and 8 bits (group 128, keep 32).
 * 4. Decode speed, one core: MB/s of output for the DeltaDQ blobs at each R and for the lossless
 *    delta (ll_encode against the base, level 3) of the same chunks; best of 3 passes.
 *
 * Numbers are printed, never asserted.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "codec.h"
#include "deltadq.h"
#include "lossless.h"
#include "../../index/safetensors.h"

#define NR 4
static const double ratios[NR] = { 16, 32, 64, 128 };

typedef struct mat {
	const char *name;
	dt_id dt;
	size_t rows, cols, es;
	const uint8_t *ft, *base;
	float *X;
} mat;

static size_t nprobe = 32, eval_rows = SIZE_MAX;
static int speed_only;

/* ---- helpers ---------------------------------------------------------------------------------- */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rs;

static double urand(void)
{
	rs ^= rs << 13;
	rs ^= rs >> 7;
	rs ^= rs << 17;
	return ((rs >> 11) + 0.5) * 0x1p-53;
}

static float ld(dt_id dt, const uint8_t *p, size_t i)
{
	uint16_t h;
	uint32_t u;
	float f;

	if (dt == DT_F32) {
		memcpy(&f, p + 4 * i, 4);
		return f;
	}
	memcpy(&h, p + 2 * i, 2);
	if (dt == DT_BF16) {
		u = (uint32_t)h << 16;
		memcpy(&f, &u, 4);
		return f;
	}
	return (float)(ldexp((h & 0x7c00) ? (double)((h & 0x3ff) | 0x400) : (double)(h & 0x3ff),
			     (h & 0x7c00) ? ((h >> 10) & 0x1f) - 25 : -24) *
		       ((h & 0x8000) ? -1 : 1));
}

/* round-to-nearest-even into the dtype, back to float (for the baselines' reconstructions) */
static float rnd(dt_id dt, float v)
{
	uint32_t u;

	if (dt == DT_F32)
		return v;
	if (dt == DT_F16) {
		double a = fabs(v);
		int e;

		if (a == 0)
			return v;
		frexp(a, &e);
		e = e < -13 ? -13 : e; /* subnormal: spacing 2^-24 */
		return (float)copysign(ldexp(nearbyint(ldexp(a, 11 - e)), e - 11), v);
	}
	memcpy(&u, &v, 4);
	u = (u + 0x7fff + (u >> 16 & 1)) & 0xffff0000u;
	memcpy(&v, &u, 4);
	return v;
}

static double dot(const float *a, const float *b, size_t n)
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

static size_t erows(const mat *m)
{
	return m->rows < eval_rows ? m->rows : eval_rows;
}

/* Errors of reconstructed weights wr (erows x cols, values of the dtype): err[0] relative delta
 * error, err[1] relative output error. */
static void errors(const mat *m, const float *wr, double err[2])
{
	double a[4] = { 0 };
	float *e = malloc(m->cols * sizeof *e), *w = malloc(m->cols * sizeof *w);

	for (size_t r = 0; r < erows(m); r++) {
		for (size_t c = 0; c < m->cols; c++) {
			size_t i = r * m->cols + c;
			float b = ld(m->dt, m->base, i), f = ld(m->dt, m->ft, i);

			w[c] = f;
			e[c] = (f - b) - (wr[i] - b);
			a[0] += (double)e[c] * e[c];
			a[1] += (double)(f - b) * (f - b);
		}
		for (size_t p = 0; p < nprobe; p++) {
			double ye = dot(m->X + p * m->cols, e, m->cols), yw = dot(m->X + p * m->cols, w, m->cols);

			a[2] += ye * ye;
			a[3] += yw * yw;
		}
	}
	err[0] = a[1] > 0 ? sqrt(a[0] / a[1]) : 0;
	err[1] = a[3] > 0 ? sqrt(a[2] / a[3]) : 0;
	free(e);
	free(w);
}

/* errors of a baseline's delta dr: base + dr rounded into the dtype */
static void errors_delta(const mat *m, float *dr, double err[2])
{
	for (size_t i = 0; i < erows(m) * m->cols; i++)
		dr[i] = rnd(m->dt, ld(m->dt, m->base, i) + dr[i]);
	errors(m, dr, err);
}

/* ---- DeltaDQ: encode every chunk, decode, keep the blobs for the speed test ------------------ */

typedef struct blobs {
	uint8_t **b;
	size_t *n, nch, crow, bytes;
} blobs;

static int dq_all(cx_ctx *cx, const mat *m, const dq_params *p, blobs *bl)
{
	bl->crow = dq_chunk_rows(m->cols, (unsigned)m->es);
	bl->nch = (m->rows + bl->crow - 1) / bl->crow;
	bl->b = calloc(bl->nch, sizeof *bl->b);
	bl->n = calloc(bl->nch, sizeof *bl->n);
	bl->bytes = 0;
	for (size_t c = 0; c < bl->nch; c++) {
		size_t r0 = c * bl->crow, nr = m->rows - r0 < bl->crow ? m->rows - r0 : bl->crow;
		size_t cap = dq_bound(nr, m->cols, (unsigned)m->es), off = r0 * m->cols * m->es;
		ssize_t z;

		bl->b[c] = malloc(cap);
		z = dq_encode(cx, bl->b[c], cap, m->ft + off, m->base + off, m->dt, m->cols, r0, nr, p);
		if (z < 0)
			return (int)z;
		bl->n[c] = (size_t)z;
		bl->bytes += (size_t)z;
	}
	return 0;
}

static void blobs_free(blobs *bl)
{
	for (size_t c = 0; c < bl->nch; c++)
		free(bl->b[c]);
	free(bl->b);
	free(bl->n);
}

/* decode bl into out (rows x cols in the dtype) */
static int dq_dec_all(cx_ctx *cx, const mat *m, const blobs *bl, uint8_t *out)
{
	for (size_t c = 0; c < bl->nch; c++) {
		size_t r0 = c * bl->crow, nr = m->rows - r0 < bl->crow ? m->rows - r0 : bl->crow;
		size_t off = r0 * m->cols * m->es;
		int rc = cx_decode(cx, out + off, nr * m->cols * m->es, bl->b[c], bl->n[c], m->base + off);

		if (rc)
			return rc;
	}
	return 0;
}

/* ---- the baselines ----------------------------------------------------------------------------- */

static int fcmp(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x > y) - (x < y);
}

/* 1-D k-means with 2^bits (<= 16) levels on v[0..n), as the codec's: out[i] = level of v[i],
 * idx[i] its index. */
static void kmeans_q(const float *v, size_t n, unsigned bits, float *out, uint8_t *idx)
{
	size_t K = (size_t)1 << bits, bnd[17];
	float *s = malloc(n * sizeof *s);
	double *ps = malloc((n + 1) * sizeof *ps), c[16];

	memcpy(s, v, n * sizeof *s);
	qsort(s, n, sizeof *s, fcmp);
	ps[0] = 0;
	for (size_t i = 0; i < n; i++)
		ps[i + 1] = ps[i] + s[i];
	for (size_t k = 0; k < K; k++)
		c[k] = s[(2 * k + 1) * n / (2 * K)];
	for (int it = 0; it < 40; it++) {
		int moved = 0;

		bnd[0] = 0;
		bnd[K] = n;
		for (size_t k = 1; k < K; k++) {
			double t = 0.5 * (c[k - 1] + c[k]);
			size_t lo = 0, hi = n;

			while (lo < hi) {
				size_t mid = (lo + hi) / 2;

				if (s[mid] > t)
					hi = mid;
				else
					lo = mid + 1;
			}
			bnd[k] = lo;
		}
		for (size_t k = 0; k < K; k++)
			if (bnd[k + 1] > bnd[k]) {
				double mm = (ps[bnd[k + 1]] - ps[bnd[k]]) / (double)(bnd[k + 1] - bnd[k]);

				moved |= mm != c[k];
				c[k] = mm;
			}
		if (!moved)
			break;
	}
	for (size_t i = 0; i < n; i++) {
		size_t best = 0;

		for (size_t k = 1; k < K; k++)
			if (fabs(v[i] - c[k]) < fabs(v[i] - c[best]))
				best = k;
		out[i] = (float)c[best];
		idx[i] = (uint8_t)best;
	}
	free(s);
	free(ps);
}

/* 1 + zstd -9 size of the packed b-bit indices (raw if smaller), as one codec plane */
static size_t plane_bytes(const uint8_t *idx, size_t n, unsigned b)
{
	size_t len = (n * b + 7) / 8, cap = ZSTD_compressBound(len), z, o = 0;
	uint8_t *pk = calloc(len + 1, 1), *out = malloc(cap);
	uint64_t acc = 0;
	unsigned nb = 0;

	for (size_t i = 0; i < n; i++) {
		acc |= (uint64_t)idx[i] << nb;
		nb += b;
		while (nb >= 8) {
			pk[o++] = (uint8_t)acc;
			acc >>= 8;
			nb -= 8;
		}
	}
	if (nb)
		pk[o++] = (uint8_t)acc;
	z = len ? ZSTD_compress(out, cap, pk, len, 9) : 0;
	free(pk);
	free(out);
	return 1 + (ZSTD_isError(z) || z >= len ? len : z);
}

/* Bytes of the per-chunk headers of a matrix: 12 each, what a blob in the same container needs
 * without the group, keep and level-set fields (cx header, dtype and bits, cols, r0, nr, seed). */
static double hdr_bytes(const mat *m)
{
	size_t crow = dq_chunk_rows(m->cols, (unsigned)m->es);

	return 12.0 * (double)((m->rows + crow - 1) / crow);
}

/* DARE on rows [0, erows): fills dr; returns the bytes extrapolated to the whole matrix. */
static double dare(const mat *m, unsigned bits, double q, size_t srows, float *dr)
{
	size_t er = erows(m), cols = m->cols, nk = 0, nsets = 0;
	float *v = malloc(er * cols * sizeof *v), *qv = malloc(er * cols * sizeof *qv);
	size_t *pos = malloc(er * cols * sizeof *pos);
	uint8_t *idx = malloc(er * cols + 1);
	double bytes;

	rs = 0x5eed;
	for (size_t r0 = 0; r0 < er; r0 += srows, nsets++) {
		size_t r1 = r0 + srows < er ? r0 + srows : er, n = 0;

		for (size_t i = r0 * cols; i < r1 * cols; i++) {
			dr[i] = 0;
			if (urand() < q) {
				pos[n] = i;
				v[n++] = (ld(m->dt, m->ft, i) - ld(m->dt, m->base, i)) / (float)q;
			}
		}
		if (!n)
			continue;
		kmeans_q(v, n, bits, qv, idx + nk);
		for (size_t j = 0; j < n; j++)
			dr[pos[j]] = qv[j];
		nk += n;
	}
	bytes = (double)plane_bytes(idx, nk, bits) + (double)nsets * 4.0 * (1 << bits);
	free(v);
	free(qv);
	free(pos);
	free(idx);
	return hdr_bytes(m) + bytes * (double)m->rows / (double)er;
}

/* BitDelta (sign + one scale) on a random fraction q of the elements (q = 1: the paper's). */
static double bitdelta(const mat *m, double q, int rescale, float *dr)
{
	size_t er = erows(m), n = er * m->cols, nk = 0;
	uint8_t *idx = malloc(n + 1);
	double sum = 0, alpha, bytes;

	rs = 0xb17;
	for (size_t i = 0; i < n; i++) {
		float d = ld(m->dt, m->ft, i) - ld(m->dt, m->base, i);

		dr[i] = 0;
		if (q >= 1 || urand() < q) {
			dr[i] = d >= 0 ? 1.0f : -1.0f;
			idx[nk++] = d >= 0;
			sum += fabs(d);
		}
	}
	alpha = nk ? sum / nk : 0;
	if (rescale)
		alpha /= q;
	for (size_t i = 0; i < n; i++)
		dr[i] *= (float)alpha;
	bytes = (double)plane_bytes(idx, nk, 1) * (double)m->rows / (double)er;
	free(idx);
	return hdr_bytes(m) + 4 + bytes;
}

/* The best DARE in at most `budget` bytes: bits 1..4, level sets of 1 row or of a chunk's rows,
 * q moved to within 1% under the budget (bytes are close to linear in q). Never more bytes than
 * DeltaDQ used: taking the best within +-10% favoured points above it (at 16x on the 1 GB pair
 * DARE then used 1.2% more bytes than DeltaDQ). Fills err with the best one's errors. */
static double dare_best(const mat *m, double budget, float *dr, double err[2])
{
	size_t crow = dq_chunk_rows(m->cols, (unsigned)m->es), srs[2] = { 1, crow };
	double best_bytes = 0;

	err[0] = err[1] = INFINITY;
	for (unsigned b = 1; b <= 4; b++)
		for (int si = 0; si < 2; si++) {
			double q = 1, bytes = 0, e[2];

			for (int it = 0; it < 8; it++) {
				double fixed = hdr_bytes(m);

				bytes = dare(m, b, q, srs[si], dr);
				if ((bytes <= budget && bytes >= 0.99 * budget) || bytes <= fixed)
					break;
				q *= (0.995 * budget - fixed) / (bytes - fixed);
				if (q > 1) {
					q = 1;
					bytes = dare(m, b, q, srs[si], dr);
					break;
				}
			}
			if (bytes > budget)
				continue;
			errors_delta(m, dr, e);
			if (e[1] < err[1]) {
				err[0] = e[0];
				err[1] = e[1];
				best_bytes = bytes;
			}
		}
	return best_bytes;
}

static double bitdelta_best(const mat *m, double budget, float *dr, double err[2])
{
	double full = bitdelta(m, 1, 0, dr), q, b1, e[2];

	if (full <= budget) {
		errors_delta(m, dr, err);
		return full;
	}
	q = (budget - hdr_bytes(m) - 4) / (full - hdr_bytes(m) - 4);
	while ((b1 = bitdelta(m, q, 0, dr)) > budget && q > 1e-3) /* the estimate can land a little above */
		q *= 0.99;
	errors_delta(m, dr, err);
	bitdelta(m, q, 1, dr);
	errors_delta(m, dr, e);
	if (e[1] < err[1]) {
		err[0] = e[0];
		err[1] = e[1];
	}
	return b1;
}

/* ---- loading ----------------------------------------------------------------------------------- */

static const uint8_t *map(const char *path, size_t *size)
{
	struct stat sb;
	int fd = open(path, O_RDONLY);
	void *p;

	if (fd < 0 || fstat(fd, &sb)) {
		perror(path);
		exit(1);
	}
	p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		perror(path);
		exit(1);
	}
	*size = (size_t)sb.st_size;
	return p;
}

static mat *load(const char *bpath, const char *fpath, size_t limit, size_t *nm)
{
	size_t bs, fs, n = 0, all = 0, k = 0, nextj = 0;
	const uint8_t *b = map(bpath, &bs), *f = map(fpath, &fs);
	st_file sb, sf;
	df_err err;
	mat *m;

	if (st_parse(b, bs, bpath, &sb, &err) || st_parse(f, fs, fpath, &sf, &err)) {
		fprintf(stderr, "bench_deltadq: %s\n", err.msg);
		exit(1);
	}
	m = calloc(sf.ntensors, sizeof *m);
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < sf.ntensors; i++) {
			const st_tensor *t = &sf.tensors[i], *u = NULL;
			size_t es = dt_size(t->dtype);

			if (t->ndim != 2 || (t->dtype != DT_F32 && t->dtype != DT_F16 && t->dtype != DT_BF16))
				continue;
			for (size_t j = 0; j < sb.ntensors; j++)
				if (!strcmp(sb.tensors[j].name, t->name))
					u = &sb.tensors[j];
			if (!u || u->dtype != t->dtype || u->ndim != 2 || u->shape[0] != t->shape[0] ||
			    u->shape[1] != t->shape[1] ||
			    !memcmp(f + sf.data_start + t->begin, b + sb.data_start + u->begin, t->end - t->begin))
				continue;
			if (pass == 0) {
				all++;
				continue;
			}
			/* keep `limit` of the `all`, evenly spaced: the k-th eligible if k = j * all / limit */
			if (limit < all && k++ != nextj * all / limit)
				continue;
			nextj++;
			m[n] = (mat){ strdup(t->name), t->dtype, t->shape[0], t->shape[1], es,
				      f + sf.data_start + t->begin, b + sb.data_start + u->begin, NULL };
			n++;
		}
	*nm = n;
	return m;
}

static float *gauss(size_t n, uint64_t seed)
{
	float *x = malloc(n * sizeof *x);

	rs = seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t i = 0; i < n; i++)
		x[i] = (float)(sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand()));
	return x;
}

/* ---- decode speed ------------------------------------------------------------------------------ */

/* best of 3 passes over the chunks of m: seconds */
static double time_dq(cx_ctx *cx, const mat *m, const blobs *bl, uint8_t *out)
{
	double best = INFINITY;

	for (int pass = 0; pass < 3; pass++) {
		double t = now();

		if (dq_dec_all(cx, m, bl, out))
			abort();
		t = now() - t;
		best = t < best ? t : best;
	}
	return best;
}

static double time_ll(cx_ctx *cx, const mat *m, uint8_t *out, size_t *bytes)
{
	size_t crow = dq_chunk_rows(m->cols, (unsigned)m->es), nch = (m->rows + crow - 1) / crow;
	uint8_t **b = calloc(nch, sizeof *b);
	size_t *bn = calloc(nch, sizeof *bn);
	double best = INFINITY;

	*bytes = 0;
	for (size_t c = 0; c < nch; c++) {
		size_t r0 = c * crow, nr = m->rows - r0 < crow ? m->rows - r0 : crow;
		size_t n = nr * m->cols * m->es, off = r0 * m->cols * m->es;
		ssize_t z;

		b[c] = malloc(ll_bound(n));
		z = ll_encode(cx, b[c], ll_bound(n), m->ft + off, n, (unsigned)m->es, m->base + off, 3);
		if (z < 0)
			abort();
		bn[c] = (size_t)z;
		*bytes += (size_t)z;
	}
	for (int pass = 0; pass < 3; pass++) {
		double t = now();

		for (size_t c = 0; c < nch; c++) {
			size_t r0 = c * crow, nr = m->rows - r0 < crow ? m->rows - r0 : crow;
			size_t off = r0 * m->cols * m->es;

			if (cx_decode(cx, out + off, nr * m->cols * m->es, b[c], bn[c], m->base + off))
				abort();
		}
		t = now() - t;
		best = t < best ? t : best;
	}
	for (size_t c = 0; c < nch; c++)
		free(b[c]);
	free(b);
	free(bn);
	return best;
}

/* ---- the split study --------------------------------------------------------------------------- */

static void split_study(cx_ctx *cx, mat *m, size_t nm)
{
	static const uint8_t bs[] = { 2, 3, 4, 8 };

	printf("\n## Separate quantisation: plane bytes, one plane vs high/low planes "
	       "(group 128, keep 32, level sets of 8 rows; sum over the matrices)\n\n");
	printf("| quantiser | bits | one plane | lo = bits/2 | lo = 1 | lo = bits-1 | auto |\n");
	printf("|---|---|---|---|---|---|---|\n");
	for (int q = DQ_Q_UNIFORM; q <= DQ_Q_KMEANS; q++)
		for (size_t bi = 0; bi < sizeof bs; bi++) {
			unsigned b = bs[bi], sp[5] = { 1, 1 + b / 2, 2, b, 0 };
			size_t tot[5] = { 0 };

			for (int v = 0; v < 5; v++)
				for (size_t i = 0; i < nm; i++) {
					dq_params p = { .group = 128, .keep = 32, .bits = (uint8_t)b,
							.quant = (uint8_t)q, .split = (uint8_t)sp[v],
							.srows = 8, .rescale = DQ_RESCALE_FULL };
					blobs bl;

					if (dq_all(cx, &m[i], &p, &bl))
						abort();
					tot[v] += bl.bytes;
					blobs_free(&bl);
				}
			printf("| %s | %u | %zu | %zu | %zu | %zu | %zu |\n",
			       q == DQ_Q_UNIFORM ? "uniform" : "k-means", b, tot[0], tot[1], tot[2], tot[3],
			       tot[4]);
		}
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_deltadq [--limit N] [--nprobe P] [--eval-rows R] [--speed] "
			"(CHARLM_DIR | BASE FT)\n");
	exit(2);
}

int main(int argc, char **argv)
{
	size_t limit = SIZE_MAX, nm, maxn = 0;
	const char *pos[2];
	char bpath[4096], fpath[4096];
	int npos = 0;
	mat *m;
	cx_ctx *cx = cx_ctx_new();
	double orig = 0, t_ll = 0, out_bytes = 0;
	size_t ll_bytes = 0;
	uint8_t *out;
	float *wr;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--limit") && i + 1 < argc)
			limit = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--nprobe") && i + 1 < argc)
			nprobe = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--eval-rows") && i + 1 < argc)
			eval_rows = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--speed"))
			speed_only = 1;
		else if (argv[i][0] == '-' || npos == 2)
			usage();
		else
			pos[npos++] = argv[i];
	}
	if (npos == 1) {
		snprintf(bpath, sizeof bpath, "%s/base.safetensors", pos[0]);
		snprintf(fpath, sizeof fpath, "%s/finetuned_qa.safetensors", pos[0]);
	} else if (npos == 2) {
		snprintf(bpath, sizeof bpath, "%s", pos[0]);
		snprintf(fpath, sizeof fpath, "%s", pos[1]);
	} else
		usage();
	if (access(bpath, R_OK) || access(fpath, R_OK)) {
		fprintf(stderr, "bench_deltadq: %s or %s missing: skipped\n", bpath, fpath);
		return 77;
	}
	m = load(bpath, fpath, limit ? limit : 1, &nm);
	for (size_t i = 0; i < nm; i++) {
		m[i].X = gauss(nprobe * m[i].cols, m[i].cols);
		orig += (double)(m[i].rows * m[i].cols * m[i].es);
		maxn = m[i].rows * m[i].cols * m[i].es > maxn ? m[i].rows * m[i].cols * m[i].es : maxn;
	}
	out = malloc(maxn);
	wr = malloc(maxn / 2 * sizeof *wr + 16);
	printf("# bench_deltadq: %s vs %s\n\n%zu matrices, %.1f MB; %zu Gaussian probes; errors on "
	       "%s rows of each\n", fpath, bpath, nm, orig / 1e6, nprobe,
	       eval_rows == SIZE_MAX ? "all" : "the first --eval-rows");

	char *detail = NULL;
	size_t dlen = 0;
	FILE *dm = open_memstream(&detail, &dlen);
	double t_dq[NR] = { 0 }, dq_ratio[NR];

	printf("\n## Ratio vs relative error at equal bytes (means over matrices)\n\n");
	printf("| target R | method | achieved R | delta err | output err |\n|---|---|---|---|---|\n");
	for (int ri = 0; ri < NR; ri++) {
		double by[3] = { 0 }, de[3] = { 0 }, oe[3] = { 0 };
		const char *names[3] = { "DeltaDQ", "DARE", "BitDelta" };

		fprintf(dm, "\n### DeltaDQ at %gx, per matrix (dq_plan's figures, full matrix)\n\n",
			ratios[ri]);
		fprintf(dm, "| matrix | shape | R | delta err | output err | quant | bits | group | "
			    "keep | level rows | rescale |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
		for (size_t i = 0; i < nm; i++) {
			mat *t = &m[i];
			dq_params p;
			dq_stats st;
			blobs bl;
			double e[2];
			int rc = dq_plan(cx, t->ft, t->base, t->dt, t->rows, t->cols, t->X, nprobe,
					 ratios[ri], NULL, &p, &st);

			if (rc && rc != -ERANGE) {
				fprintf(stderr, "%s: dq_plan: %s\n", t->name, strerror(-rc));
				return 1;
			}
			fprintf(dm, "| %s | %zux%zu | %.1f%s | %.4f | %.4f | %s | %u | %u | %u | %u | %s |\n",
				t->name, t->rows, t->cols,
				(double)t->rows * t->cols * t->es / (double)st.bytes, rc ? " (ERANGE)" : "",
				st.delta_rel_err, st.output_rel_err,
				p.quant == DQ_Q_KMEANS ? "k-means" : p.quant == DQ_Q_ZERO ? "zero" : "uniform", p.bits, p.group, p.keep,
				p.srows, p.rescale == DQ_RESCALE_FULL ? "1" : p.rescale == DQ_RESCALE_HALF ? "1/2" : "0");
			if (dq_all(cx, t, &p, &bl) || dq_dec_all(cx, t, &bl, out))
				abort();
			by[0] += (double)bl.bytes;
			t_dq[ri] += time_dq(cx, t, &bl, out);
			if (ri == 0)
				out_bytes += (double)(t->rows * t->cols * t->es);
			if (speed_only) {
				blobs_free(&bl);
				continue;
			}
			for (size_t j = 0; j < erows(t) * t->cols; j++)
				wr[j] = ld(t->dt, out, j);
			errors(t, wr, e);
			de[0] += e[0];
			oe[0] += e[1];
			by[1] += dare_best(t, (double)bl.bytes, wr, e);
			de[1] += e[0];
			oe[1] += e[1];
			by[2] += bitdelta_best(t, (double)bl.bytes, wr, e);
			de[2] += e[0];
			oe[2] += e[1];
			blobs_free(&bl);
		}
		dq_ratio[ri] = orig / by[0];
		for (int k = 0; k < (speed_only ? 0 : 3); k++)
			printf("| %g | %s | %.1f | %.4f | %.5f |\n", ratios[ri], names[k], orig / by[k],
			       de[k] / nm, oe[k] / nm);
		fflush(stdout);
	}
	fclose(dm);
	if (!speed_only)
		fputs(detail, stdout);
	free(detail);

	for (size_t i = 0; i < nm; i++) {
		size_t b;

		t_ll += time_ll(cx, &m[i], out, &b);
		ll_bytes += b;
	}
	printf("\n## Decode, one core: MB/s of output (best of 3 passes)\n\n| codec | ratio | MB/s |\n"
	       "|---|---|---|\n| lossless delta (level 3) | %.2f | %.0f |\n", orig / ll_bytes,
	       out_bytes / t_ll / 1e6);
	for (int ri = 0; ri < NR; ri++)
		printf("| DeltaDQ %gx | %.1f | %.0f |\n", ratios[ri], dq_ratio[ri], out_bytes / t_dq[ri] / 1e6);

	if (!speed_only)
		split_study(cx, m, nm);
	cx_ctx_free(cx);
	return 0;
}
