/*
 * bench_palette.c -- what the palette codec costs and what it buys.
 *
 *   bench_palette [SCRATCH_DIR [CHARLM_DIR]]   (meson: `meson test --benchmark bench_palette`)
 *
 * Data: a synthetic 4096 x 4096 BF16 matrix, normal(0, 0.02) rounded to nearest even; the 1 GB
 * llama-shaped BF16 pair SCRATCH_DIR/{base,ft}.safetensors (tests/data/genmodel.py, skipped when
 * absent); the real F32 charlm pair (../shared/data/charlm, skipped when absent).
 *
 * Sections, each a markdown table:
 *   1. clustering time: Lloyd from the same quantile init over all elements and over the
 *      histogram (same iterations, same table: the histogram is the whole speed-up), and pal_fit
 *      itself (histogram, optimal split, Lloyd), with the MSE each reaches; for F32, pal_fit's
 *      top-16-bit bins against pal_fit_values on the raw values;
 *   2. fit method on the histogram: quantile init + Lloyd, weighted k-means++ (D^2 sampling,
 *      fixed seed) + Lloyd, and the codec's optimal split, error and time; pal_fit_values' time
 *      on raw delta samples (one row, a whole matrix);
 *   3. relative L2 error ||x - q(x)|| / ||x|| of palette against uniform min-max levels (2^b
 *      evenly spaced from min to max, nearest) at b = 2, 3, 4, on base weights and on delta values
 *      (ft - base); F32 deltas both binned (pal_fit) and exact (pal_fit_values on every value);
 *   4. bits per weight (blob bytes * 8 / elements) of whole tensors cut into 1 MiB chunks, one
 *      table per tensor, against the entropy of the indices; the zstd level at b = 3 and 6;
 *   5. encode and decode MB/s of one core on 1 MiB BF16 chunks, both payload modes.
 *
 * Times are the best of several runs on a shared machine: read them as orders of magnitude.
 * Numbers are printed, never asserted.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "palette.h"
#include "palref.h"

#define CHUNK (1u << 20)

static cx_ctx *cx;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- data ------------------------------------------------------------------------------------- */

typedef struct {
	const void *p; /* elements, little-endian */
	size_t m;      /* element count */
	dt_id dt;
} tensor;

/* A tensor of a mapped safetensors file by name, found with strstr on the JSON header (names in
 * these files are unique and never a suffix of another's quoted form). Returns 0 or -1. */
static int st_find(const uint8_t *map, size_t size, const char *name, tensor *t)
{
	char key[256], *hdr, *o, *e;
	unsigned long long a, b;
	uint64_t hlen;

	if (size < 8)
		return -1;
	memcpy(&hlen, map, 8);
	if (hlen > size - 8)
		return -1;
	hdr = r_xmalloc(hlen + 1);
	memcpy(hdr, map + 8, hlen);
	hdr[hlen] = 0;
	snprintf(key, sizeof key, "\"%s\"", name);
	o = strstr(hdr, key);
	e = o ? strchr(o, '}') : NULL;
	if (!o || !e) {
		free(hdr);
		return -1;
	}
	*e = 0;
	t->dt = strstr(o, "\"BF16\"") ? DT_BF16 : strstr(o, "\"F16\"") ? DT_F16 : DT_F32;
	o = strstr(o, "\"data_offsets\"");
	if (!o || sscanf(o, "\"data_offsets\":[%llu,%llu]", &a, &b) != 2 || b < a ||
	    b > size - 8 - hlen) {
		free(hdr);
		return -1;
	}
	t->p = map + 8 + hlen + a;
	t->m = (b - a) / r_esize(t->dt);
	free(hdr);
	return 0;
}

static uint8_t *map_file(const char *dir, const char *name, size_t *size)
{
	char path[4096];
	struct stat st;
	void *p;
	int fd;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return NULL;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return NULL;
	*size = (size_t)st.st_size;
	return p;
}

static float *to_float(const tensor *t)
{
	float *x = r_xmalloc(t->m * sizeof *x);

	for (size_t i = 0; i < t->m; i++)
		x[i] = r_load(t->dt, t->p, i);
	return x;
}

/* ---- histograms and reference fits -------------------------------------------------------------- */

typedef struct {
	float *v;    /* distinct values, ascending */
	uint64_t *w; /* their counts */
	size_t nd;
} hist;

static hist hist_of(const float *x, size_t m)
{
	float *s = r_xmalloc(m * sizeof *s);
	hist h = { r_xmalloc(m * sizeof *h.v), r_xmalloc(m * sizeof *h.w), 0 };

	memcpy(s, x, m * sizeof *s);
	qsort(s, m, sizeof *s, r_fcmp);
	for (size_t i = 0; i < m; i++) {
		if (h.nd && s[i] == h.v[h.nd - 1]) {
			h.w[h.nd - 1]++;
			continue;
		}
		h.v[h.nd] = s[i];
		h.w[h.nd++] = 1;
	}
	free(s);
	return h;
}

static void hist_free(hist *h)
{
	free(h->v);
	free(h->w);
}

/* The histogram of a 16-bit tensor, as pal_fit builds it: one count per bit pattern, then the
 * non-empty ones in ascending order of value (-0 and +0 merged). */
static hist hist_16(const tensor *t)
{
	uint64_t *cnt = calloc(65536, sizeof *cnt);
	hist h = { r_xmalloc(65536 * sizeof *h.v), r_xmalloc(65536 * sizeof *h.w), 0 };
	const uint8_t *p = t->p;

	CHECK(cnt, "oom");
	for (size_t i = 0; i < t->m; i++) {
		uint16_t x;

		memcpy(&x, p + 2 * i, 2);
		cnt[x]++;
	}
	for (uint32_t key = 0; key < 65536; key++) {
		uint32_t pat = key < 0x8000 ? 0xffff - key : key - 0x8000;
		uint8_t b[4] = { (uint8_t)pat, (uint8_t)(pat >> 8), 0, 0 }; /* 4: r_load's F32 path */
		float v;

		if (!cnt[pat])
			continue;
		v = r_load(t->dt, b, 0);
		if (h.nd && v == h.v[h.nd - 1]) {
			h.w[h.nd - 1] += cnt[pat];
			continue;
		}
		h.v[h.nd] = v;
		h.w[h.nd++] = cnt[pat];
	}
	free(cnt);
	return h;
}

static double hist_sse(const hist *h, const double *c, uint32_t K)
{
	double mid[256], e = 0;

	for (uint32_t j = 0; j + 1 < K; j++)
		mid[j] = 0.5 * (c[j] + c[j + 1]);
	for (size_t i = 0; i < h->nd; i++) {
		double d = h->v[i] - c[r_assign(mid, K, h->v[i])];

		e += (double)h->w[i] * d * d;
	}
	return e;
}

/* Lloyd on a histogram (O(nd log K) per iteration), same stopping rule as r_lloyd. */
static int hist_lloyd(const hist *h, uint32_t K, double *c)
{
	double mid[256], sum[256];
	uint64_t cnt[256];
	int it;

	for (it = 0; it < 1000; it++) {
		int moved = 0;

		for (uint32_t j = 0; j + 1 < K; j++)
			mid[j] = 0.5 * (c[j] + c[j + 1]);
		memset(sum, 0, sizeof sum);
		memset(cnt, 0, sizeof cnt);
		for (size_t i = 0; i < h->nd; i++) {
			unsigned j = r_assign(mid, K, h->v[i]);

			sum[j] += (double)h->w[i] * h->v[i];
			cnt[j] += h->w[i];
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

/* Quantile init on nd > K distinct values: centroid j on the value of weighted rank
 * floor((2j + 1) N / 2K), moved up past the previous one so no two start together. */
static void init_quantile(const hist *h, uint32_t K, double *c)
{
	uint64_t tot = 0, acc = 0;
	size_t i = 0, prev = 0;

	for (size_t k = 0; k < h->nd; k++)
		tot += h->w[k];
	for (uint32_t j = 0; j < K; j++) {
		uint64_t rank = (uint64_t)((unsigned __int128)(2 * j + 1) * tot / (2 * K));
		size_t at;

		while (acc + h->w[i] <= rank)
			acc += h->w[i++];
		at = i;
		if (j && at <= prev)
			at = prev + 1;
		if (at > h->nd - K + j)
			at = h->nd - K + j;
		c[j] = h->v[at];
		prev = at;
	}
}

/* The same rule over the sorted elements (the all-elements baseline's init). */
static void init_quantile_sorted(const float *s, size_t n, uint32_t K, double *c)
{
	hist h = { r_xmalloc(n * sizeof *h.v), r_xmalloc(n * sizeof *h.w), 0 };

	for (size_t i = 0; i < n; i++) {
		if (h.nd && s[i] == h.v[h.nd - 1]) {
			h.w[h.nd - 1]++;
			continue;
		}
		h.v[h.nd] = s[i];
		h.w[h.nd++] = 1;
	}
	init_quantile(&h, K, c);
	hist_free(&h);
}

static int dcmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Weighted k-means++: each next centroid drawn with probability ~ count * D^2. */
static void init_kmpp(const hist *h, uint32_t K, double *c)
{
	double *d2 = r_xmalloc(h->nd * sizeof *d2), tot = 0, r, acc;
	uint64_t s = 12345, wt = 0;
	size_t pick = 0;

	for (size_t i = 0; i < h->nd; i++)
		wt += h->w[i];
	r = r_unif(&s) * (double)wt;
	for (acc = 0; pick + 1 < h->nd && (acc += (double)h->w[pick]) < r; pick++)
		;
	c[0] = h->v[pick];
	for (size_t i = 0; i < h->nd; i++)
		d2[i] = (h->v[i] - c[0]) * (h->v[i] - c[0]);
	for (uint32_t j = 1; j < K; j++) {
		tot = 0;
		for (size_t i = 0; i < h->nd; i++)
			tot += (double)h->w[i] * d2[i];
		r = r_unif(&s) * tot;
		for (acc = 0, pick = 0; pick + 1 < h->nd && (acc += (double)h->w[pick] * d2[pick]) < r;
		     pick++)
			;
		c[j] = h->v[pick];
		for (size_t i = 0; i < h->nd; i++) {
			double d = (h->v[i] - c[j]) * (h->v[i] - c[j]);

			d2[i] = d < d2[i] ? d : d2[i];
		}
	}
	qsort(c, K, sizeof *c, dcmp);
	free(d2);
}

/* Uniform min-max levels at `bits`, rounded to dt as a decoder would store them. */
static double uniform_rel(const float *x, size_t m, unsigned bits, dt_id dt)
{
	float mn = x[0], mx = x[0];
	double e = 0, s = 0, step;
	uint32_t top = (1u << bits) - 1;

	for (size_t i = 1; i < m; i++) {
		mn = x[i] < mn ? x[i] : mn;
		mx = x[i] > mx ? x[i] : mx;
	}
	step = ((double)mx - mn) / top;
	for (size_t i = 0; i < m; i++) {
		double q = step > 0 ? rint(((double)x[i] - mn) / step) : 0;
		float y = r_round(dt, (float)(mn + q * step));

		e += ((double)x[i] - y) * ((double)x[i] - y);
		s += (double)x[i] * x[i];
	}
	return s > 0 ? sqrt(e / s) : 0;
}

/* Relative error of the codec itself on m elements of dt: fit, encode in 1 MiB chunks, decode. */
static double palette_rel(const void *src, size_t m, dt_id dt, const pal_table *t)
{
	size_t es = r_esize(dt), n = m * es, cap = pal_bound(CHUNK, dt, t->bits);
	uint8_t *blob = r_xmalloc(cap), *out = r_xmalloc(CHUNK);
	const uint8_t *s = src;
	double e = 0, ss = 0;

	for (size_t off = 0; off < n; off += CHUNK) {
		size_t len = n - off < CHUNK ? n - off : CHUNK;
		ssize_t z = pal_encode(cx, blob, cap, s + off, len, dt, t, 3);

		CHECK(z > 0 && pal_decode(cx, out, len, blob, (size_t)z, NULL) == 0, "round trip");
		for (size_t i = 0; i < len / es; i++) {
			double x = r_load(dt, s + off, i), y = r_load(dt, out, i);

			e += (x - y) * (x - y);
			ss += x * x;
		}
	}
	free(blob);
	free(out);
	return ss > 0 ? sqrt(e / ss) : 0;
}

/* ---- sections --------------------------------------------------------------------------------- */

static void sec_cluster(const char *name, const tensor *t)
{
	float *x = to_float(t), *s = r_xmalloc(t->m * sizeof *s);
	double sumsq = 0;

	for (size_t i = 0; i < t->m; i++)
		sumsq += (double)x[i] * x[i];
	printf("\n### 1. Clustering time: %s (%zu elements)\n\n", name, t->m);
	printf("Lloyd from the same quantile init over all elements and over the histogram; then "
	       "pal_fit (histogram, optimal split, Lloyd). MSE relative to mean(x^2).\n\n");
	printf("| bits | all elements: sort+init ms | Lloyd ms | iters | MSE | histogram Lloyd ms | "
	       "MSE | same table | ratio | pal_fit ms | MSE |\n");
	printf("|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|\n");
	for (unsigned bits = 2; bits <= 8; bits++) {
		uint32_t K = 1u << bits;
		pal_table t1;
		double t0, tf = 1e30, th = 1e30, ti = 0, tl = 0, c[256], ch[256], ms = sumsq / t->m;
		float ref[256], hc[256];
		int it = 0, same = 1;

		for (int rep = 0; rep < 3; rep++) {
			hist h;

			t0 = now();
			CHECK(pal_fit(t->p, t->m * r_esize(t->dt), t->dt, bits, &t1) == 0, "fit");
			t0 = now() - t0;
			tf = t0 < tf ? t0 : tf;
			t0 = now();
			h = hist_16(t);
			init_quantile(&h, K, ch);
			hist_lloyd(&h, K, ch);
			t0 = now() - t0;
			th = t0 < th ? t0 : th;
			hist_free(&h);
		}
		for (uint32_t j = 0; j < K; j++)
			hc[j] = r_round(t->dt, (float)ch[j]);
		if (bits <= 4) { /* over all elements it takes minutes beyond */
			ti = now();
			memcpy(s, x, t->m * sizeof *s);
			qsort(s, t->m, sizeof *s, r_fcmp);
			init_quantile_sorted(s, t->m, K, c);
			ti = now() - ti;
			tl = now();
			it = r_lloyd(x, t->m, K, c, 1000);
			tl = now() - tl;
			for (uint32_t j = 0; j < K; j++) {
				ref[j] = r_round(t->dt, (float)c[j]);
				same &= ref[j] == hc[j];
			}
			printf("| %u | %.0f | %.0f | %d | %.5f | %.1f | %.5f | %s | %.0fx |", bits,
			       ti * 1e3, tl * 1e3, it, r_sse(x, t->m, ref, K) / t->m / ms, th * 1e3,
			       r_sse(x, t->m, hc, K) / t->m / ms, same ? "yes" : "no",
			       (ti + tl) / th);
		} else {
			printf("| %u | - | - | - | - | %.1f | %.5f | - | - |", bits, th * 1e3,
			       r_sse(x, t->m, hc, K) / t->m / ms);
		}
		printf(" %.1f | %.5f |\n", tf * 1e3, r_sse(x, t->m, t1.c, K) / t->m / ms);
	}
	free(s);
	free(x);
}

/* Relative L2 error and fit time of: quantile init + Lloyd, k-means++ + Lloyd, pal_fit_values
 * (optimal split + Lloyd), all on the histogram of x. */
static void sec_fit_row(const char *name, const float *x, size_t m)
{
	hist h = hist_of(x, m);
	double ss = 0;

	for (size_t i = 0; i < m; i++)
		ss += (double)x[i] * x[i];
	printf("| %s (%zu distinct) |", name, h.nd);
	for (unsigned bits = 2; bits <= 8; bits += 2) {
		uint32_t K = 1u << bits;
		double cq[256], ck[256], cp[256], t0;
		pal_table t;

		init_quantile(&h, K, cq);
		hist_lloyd(&h, K, cq);
		init_kmpp(&h, K, ck);
		hist_lloyd(&h, K, ck);
		t0 = now();
		CHECK(pal_fit_values(h.v, h.w, h.nd, bits, &t) == 0, "fit");
		t0 = now() - t0;
		for (uint32_t j = 0; j < K; j++)
			cp[j] = t.c[j];
		printf(" %.4f / %.4f / **%.4f** (%.0f ms) |", sqrt(hist_sse(&h, cq, K) / ss),
		       sqrt(hist_sse(&h, ck, K) / ss), sqrt(hist_sse(&h, cp, K) / ss), t0 * 1e3);
	}
	printf("\n");
	hist_free(&h);
}

/* pal_fit_values on raw float samples, as DeltaDQ calls it: one row of `row` values, and all m. */
static void sec_samples(const float *x, size_t m, size_t row)
{
	printf("\npal_fit_values on raw delta samples (unsorted floats, count NULL): ms\n\n");
	printf("| samples | b=2 | b=3 | b=4 | b=8 |\n|---:|---:|---:|---:|---:|\n");
	for (int all = 0; all < 2; all++) {
		size_t n = all ? m : row;

		printf("| %zu |", n);
		for (unsigned bits = 2; bits <= 8; bits++) {
			pal_table t;
			double t0;

			if (bits > 4 && bits < 8)
				continue;
			t0 = now();
			CHECK(pal_fit_values(x, NULL, n, bits, &t) == 0, "fit");
			printf(" %.1f |", (now() - t0) * 1e3);
		}
		printf("\n");
	}
	printf("\n");
}

static void sec_error_row(const char *name, const float *x, size_t m, dt_id dt, const void *src)
{
	printf("| %s |", name);
	for (unsigned bits = 2; bits <= 4; bits++) {
		pal_table t;
		double pal;

		if (src) {
			CHECK(pal_fit(src, m * r_esize(dt), dt, bits, &t) == 0, "fit");
			pal = palette_rel(src, m, dt, &t);
			printf(" %.4f | %.4f |", pal, uniform_rel(x, m, bits, dt));
		} else { /* float deltas: binned fit, exact fit, both decoded as F32 */
			double p2;

			CHECK(pal_fit(x, m * 4, DT_F32, bits, &t) == 0, "fit");
			pal = palette_rel(x, m, DT_F32, &t);
			CHECK(pal_fit_values(x, NULL, m, bits, &t) == 0, "fit values");
			p2 = palette_rel(x, m, DT_F32, &t);
			printf(" %.4f (%.4f) | %.4f |", pal, p2, uniform_rel(x, m, bits, DT_F32));
		}
	}
	printf("\n");
}

/* Entropy in bits of the nearest-centroid indices. */
static double index_entropy(const tensor *t, const pal_table *tb)
{
	uint64_t cnt[256] = { 0 };
	double h = 0;

	for (size_t i = 0; i < t->m; i++)
		cnt[pal_nearest(tb, r_load(t->dt, t->p, i))]++;
	for (uint32_t j = 0; j < tb->k; j++)
		if (cnt[j])
			h -= (double)cnt[j] / t->m * log2((double)cnt[j] / t->m);
	return h;
}

/* Blob bytes of the whole tensor in 1 MiB chunks; *nz = chunks stored PAL_ZSTD. */
static size_t tensor_bytes(const tensor *t, const pal_table *tb, int level, size_t *nz,
			   double *enc_s)
{
	size_t es = r_esize(t->dt), n = t->m * es, cap = pal_bound(CHUNK, t->dt, tb->bits), tot = 0;
	uint8_t *blob = r_xmalloc(cap);
	double t0 = now();

	*nz = 0;
	for (size_t off = 0; off < n; off += CHUNK) {
		size_t len = n - off < CHUNK ? n - off : CHUNK;
		ssize_t z = pal_encode(cx, blob, cap, (const uint8_t *)t->p + off, len, t->dt, tb,
				       level);

		CHECK(z > 0, "encode %zd", z);
		tot += (size_t)z;
		*nz += blob[3] == PAL_ZSTD;
	}
	*enc_s = now() - t0;
	free(blob);
	return tot;
}

static void sec_bpw_row(const char *name, const tensor *t)
{
	size_t nchunks = (t->m * r_esize(t->dt) + CHUNK - 1) / CHUNK;

	printf("| %s | %zu |", name, t->m);
	for (unsigned bits = 2; bits <= 8; bits++) {
		pal_table tb;
		size_t nz, bytes;
		double es;

		if (bits == 5 || bits == 7)
			continue;
		CHECK(pal_fit(t->p, t->m * r_esize(t->dt), t->dt, bits, &tb) == 0, "fit");
		bytes = tensor_bytes(t, &tb, 3, &nz, &es);
		printf(" %.3f (H %.2f, %zu/%zu z) |", bytes * 8.0 / t->m, index_entropy(t, &tb), nz,
		       nchunks);
	}
	printf("\n");
}

static void sec_level(const char *name, const tensor *t)
{
	static const int levels[] = { 1, 3, 9, 19 };

	for (unsigned bits = 3; bits <= 6; bits += 3) {
		pal_table tb;

		CHECK(pal_fit(t->p, t->m * r_esize(t->dt), t->dt, bits, &tb) == 0, "fit");
		printf("| %s | %u |", name, bits);
		for (unsigned l = 0; l < 4; l++) {
			size_t nz, bytes;
			double es;

			bytes = tensor_bytes(t, &tb, levels[l], &nz, &es);
			printf(" %.3f, %.0f MB/s |", bytes * 8.0 / t->m,
			       t->m * r_esize(t->dt) / es / 1e6);
		}
		printf("\n");
	}
}

static void sec_speed(void)
{
	size_t m = CHUNK / 2;
	uint16_t *src = r_xmalloc(CHUNK), *out = r_xmalloc(CHUNK);
	uint8_t *blob = r_xmalloc(pal_bound(CHUNK, DT_BF16, 8));
	uint64_t seed = 3;

	printf("\n### 5. Speed, one core, 1 MiB BF16 chunks (MB/s of BF16 bytes)\n\n");
	printf("| bits | data | mode | bits/weight | encode MB/s | decode MB/s |\n");
	printf("|---:|---|---|---:|---:|---:|\n");
	for (int uni = 0; uni < 2; uni++) {
		for (size_t i = 0; i < m; i++)
			src[i] = r_bf16((float)(uni ? r_unif(&seed) - 0.5 : 0.02 * r_normal(&seed)));
		for (unsigned bits = 1; bits <= 8; bits++) {
			pal_table t;
			ssize_t z = 0;
			double te = 1e30, td = 1e30, t0;

			CHECK(pal_fit(src, CHUNK, DT_BF16, bits, &t) == 0, "fit");
			for (int rep = 0; rep < 5; rep++) {
				t0 = now();
				z = pal_encode(cx, blob, pal_bound(CHUNK, DT_BF16, bits), src, CHUNK,
					       DT_BF16, &t, 3);
				t0 = now() - t0;
				te = t0 < te ? t0 : te;
				CHECK(z > 0, "encode");
			}
			for (int rep = 0; rep < 20; rep++) {
				t0 = now();
				CHECK(pal_decode(cx, out, CHUNK, blob, (size_t)z, NULL) == 0, "decode");
				t0 = now() - t0;
				td = t0 < td ? t0 : td;
			}
			printf("| %u | %s | %s | %.3f | %.0f | %.0f |\n", bits,
			       uni ? "uniform" : "normal", blob[3] == PAL_ZSTD ? "zstd" : "dense",
			       z * 8.0 / m, CHUNK / te / 1e6, CHUNK / td / 1e6);
		}
	}
	free(src);
	free(out);
	free(blob);
}

int main(int argc, char **argv)
{
	const char *scratch = argc > 1 ? argv[1] : "scratch";
	const char *charlm = argc > 2 ? argv[2] : "../shared/data/charlm";
	size_t m = 4096 * 4096, bsz = 0, fsz = 0, cbsz = 0, cfsz = 0;
	uint16_t *syn = r_xmalloc(m * 2);
	uint8_t *bmap = map_file(scratch, "base.safetensors", &bsz);
	uint8_t *fmap = map_file(scratch, "ft.safetensors", &fsz);
	uint8_t *cbmap = map_file(charlm, "base.safetensors", &cbsz);
	uint8_t *cfmap = map_file(charlm, "finetuned_qa.safetensors", &cfsz);
	tensor tsyn = { syn, m, DT_BF16 }, q, qf, dn, emb, cb, cf;
	int have1g, havech;
	uint64_t seed = 1;

	cx = cx_ctx_new();
	CHECK(cx, "ctx");
	for (size_t i = 0; i < m; i++)
		syn[i] = r_bf16((float)(0.02 * r_normal(&seed)));
	have1g = bmap && fmap &&
		 !st_find(bmap, bsz, "model.layers.0.self_attn.q_proj.weight", &q) &&
		 !st_find(fmap, fsz, "model.layers.0.self_attn.q_proj.weight", &qf) &&
		 !st_find(bmap, bsz, "model.layers.0.mlp.down_proj.weight", &dn) &&
		 !st_find(bmap, bsz, "model.embed_tokens.weight", &emb) && q.dt == DT_BF16 &&
		 qf.m == q.m && qf.dt == q.dt;
	havech = cbmap && cfmap && !st_find(cbmap, cbsz, "blocks.1.ffwd.net.0.weight", &cb) &&
		 !st_find(cfmap, cfsz, "blocks.1.ffwd.net.0.weight", &cf) && cb.dt == DT_F32 &&
		 cf.m == cb.m && cf.dt == DT_F32;
	printf("# bench_palette\n\n1 GB pair: %s; charlm: %s\n", have1g ? "yes" : "absent (skipped)",
	       havech ? "yes" : "absent (skipped)");

	sec_cluster("synthetic 4096 x 4096 BF16 normal(0, 0.02)", &tsyn);
	if (havech) {
		float *x = to_float(&cb);

		printf("\nF32 (charlm blocks.1.ffwd.net.0.weight, %zu elements): relative MSE of pal_fit "
		       "(top-16-bit bins at their means) and of pal_fit_values on the raw values\n\n",
		       cb.m);
		printf("| bits | pal_fit (binned) | pal_fit_values (raw) |\n|---:|---:|---:|\n");
		for (unsigned bits = 2; bits <= 8; bits += 2) {
			pal_table t, tr;
			double ss = 0;

			for (size_t i = 0; i < cb.m; i++)
				ss += (double)x[i] * x[i];
			CHECK(pal_fit(cb.p, cb.m * 4, DT_F32, bits, &t) == 0, "fit");
			CHECK(pal_fit_values(x, NULL, cb.m, bits, &tr) == 0, "fit values");
			printf("| %u | %.6f | %.6f |\n", bits, r_sse(x, cb.m, t.c, t.k) / ss,
			       r_sse(x, cb.m, tr.c, t.k) / ss);
		}
		free(x);
	}

	printf("\n### 2. Fit: relative L2 error of quantile init + Lloyd / k-means++ + Lloyd / "
	       "pal_fit_values (optimal split + Lloyd, its time)\n\n");
	printf("| data | b=2 | b=4 | b=6 | b=8 |\n|---|---|---|---|---|\n");
	{
		float *x = to_float(&tsyn);

		sec_fit_row("synthetic BF16", x, m);
		free(x);
	}
	if (have1g) {
		float *x = to_float(&q), *y = to_float(&qf);

		sec_fit_row("1 GB q_proj base", x, q.m);
		for (size_t i = 0; i < q.m; i++)
			y[i] -= x[i];
		sec_fit_row("1 GB q_proj delta", y, q.m);
		free(x);
		free(y);
	}
	if (havech) {
		float *x = to_float(&cb), *y = to_float(&cf);

		sec_fit_row("charlm F32 base", x, cb.m);
		for (size_t i = 0; i < cb.m; i++)
			y[i] -= x[i];
		sec_fit_row("charlm F32 delta", y, cb.m);
		free(x);
		free(y);
	}

	if (have1g) {
		float *x = to_float(&q), *y = to_float(&qf);

		for (size_t i = 0; i < q.m; i++)
			y[i] -= x[i];
		sec_samples(y, q.m, 2048);
		free(x);
		free(y);
	}

	printf("\n### 3. Relative L2 error, palette | uniform min-max (deltas: binned (exact))\n\n");
	printf("| data | b=2 palette | b=2 uniform | b=3 palette | b=3 uniform | b=4 palette | b=4 "
	       "uniform |\n|---|---:|---:|---:|---:|---:|---:|\n");
	{
		float *x = to_float(&tsyn);

		sec_error_row("synthetic BF16 base", x, m, DT_BF16, syn);
		free(x);
	}
	if (have1g) {
		float *x = to_float(&q), *y = to_float(&qf), *z = to_float(&dn);

		sec_error_row("1 GB q_proj base (BF16)", x, q.m, DT_BF16, q.p);
		sec_error_row("1 GB down_proj base (BF16)", z, dn.m, DT_BF16, dn.p);
		for (size_t i = 0; i < q.m; i++)
			y[i] -= x[i];
		sec_error_row("1 GB q_proj delta ft - base", y, q.m, DT_F32, NULL);
		free(x);
		free(y);
		free(z);
	}
	if (havech) {
		float *x = to_float(&cb), *y = to_float(&cf);

		sec_error_row("charlm ffwd.0 base (F32)", x, cb.m, DT_F32, cb.p);
		for (size_t i = 0; i < cb.m; i++)
			y[i] -= x[i];
		sec_error_row("charlm ffwd.0 delta", y, cb.m, DT_F32, NULL);
		free(x);
		free(y);
	}

	printf("\n### 4. Bits per weight, whole tensors in 1 MiB chunks, zstd level 3 "
	       "(H: entropy of the indices; chunks stored zstd / all)\n\n");
	printf("| tensor | elements | b=2 | b=3 | b=4 | b=6 | b=8 |\n|---|---:|---|---|---|---|---|\n");
	sec_bpw_row("synthetic 4096x4096", &tsyn);
	if (have1g) {
		sec_bpw_row("q_proj", &q);
		sec_bpw_row("down_proj", &dn);
		sec_bpw_row("embed_tokens", &emb);
	}
	printf("\nzstd level: bits/weight and encode MB/s\n\n| tensor | bits | level 1 | level 3 | "
	       "level 9 | level 19 |\n|---|---:|---|---|---|---|\n");
	sec_level("synthetic 4096x4096", &tsyn);
	sec_speed();
	cx_ctx_free(cx);
	free(syn);
	return 0;
}
