/*
 * alloc.c -- layer-wise bit allocation (method, constants and their measurements: alloc.h).
 *
 * al_zd_score converts blocks of AL_BLK elements to double on the stack and makes two passes:
 * mean and variance from sums shifted by the first element, then the count beyond one std. The
 * shift matters: summing squares of values far from zero relative to their spread cancels
 * (10^6 values 2^24 + {0, +-4} in double: the plain sums leave no variance at all), and the
 * tests check it. Two passes, not a histogram, because the threshold depends on the std, and
 * the matrices are read at memory speed either way.
 *
 * al_allocate solves for the ramp's scale c by bisection on log c: the planned bytes
 * sum b_i / clamp(c f_i, lo, cap_i) are continuous and non-increasing in c, and the clamps make a
 * closed form piecewise; 200 halvings of a range of a few tens in log c leave only rounding.
 */
#include "alloc.h"
#include "half.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define AL_BLK 1024 /* elements converted per block */


/* x[0..m) = elements i0.. of w (minus base's); 0, or -EDOM for a non-finite one. */
static int al_block(const void *w, const void *base, size_t i0, size_t m, dt_id dt, double *x)
{
	for (size_t k = 0; k < m; k++) {
		x[k] = hf_load(dt, w, i0 + k);
		if (base)
			x[k] -= hf_load(dt, base, i0 + k);
		if (!isfinite(x[k]))
			return -EDOM;
	}
	return 0;
}

int al_zd_score(const void *w, const void *base, size_t n, dt_id dt, double *score)
{
	double x[AL_BLK], shift = 0, s1 = 0, s2 = 0, mean, sd;
	size_t over = 0;
	int rc;

	if (!w || !score || !n || !(dt == DT_F32 || dt == DT_F16 || dt == DT_BF16))
		return -EINVAL;
	for (size_t i = 0; i < n; i += AL_BLK) {
		size_t m = n - i < AL_BLK ? n - i : AL_BLK;
		if ((rc = al_block(w, base, i, m, dt, x)))
			return rc;
		if (!i)
			shift = x[0];
		for (size_t k = 0; k < m; k++) {
			s1 += x[k] - shift;
			s2 += (x[k] - shift) * (x[k] - shift);
		}
	}
	mean = s1 / (double)n;
	sd = s2 / (double)n - mean * mean;
	sd = sd > 0 ? sqrt(sd) : 0;
	mean += shift;
	if (sd == 0) { /* a constant tensor (or delta): no value stands out */
		*score = 0;
		return 0;
	}
	for (size_t i = 0; i < n; i += AL_BLK) {
		size_t m = n - i < AL_BLK ? n - i : AL_BLK;
		al_block(w, base, i, m, dt, x); /* finite: checked by the first pass */
		for (size_t k = 0; k < m; k++)
			over += fabs(x[k] - mean) > sd;
	}
	*score = (double)over / (double)n;
	return 0;
}

/* ---- allocation ------------------------------------------------------------------------------- */

static double al_cap(const al_tensor *t)
{
	double cap = (double)t->bytes / ((double)(t->chunks ? t->chunks : 1) * AL_BLOB_MIN);
	cap = cap < AL_RATIO_MAX ? cap : AL_RATIO_MAX;
	return cap > AL_RATIO_MIN ? cap : AL_RATIO_MIN;
}

static double al_clamp(double r, const al_tensor *t)
{
	double cap = al_cap(t);
	return r < AL_RATIO_MIN ? AL_RATIO_MIN : r > cap ? cap : r;
}

/* Planned bytes at scale c (ratios into out when not NULL). */
static double al_bytes(const al_tensor *t, size_t n, double c, double *out)
{
	double sum = 0;

	for (size_t i = 0; i < n; i++) {
		double r = al_clamp(c, &t[i]);
		sum += (double)t[i].bytes / r;
		if (out)
			out[i] = r;
	}
	return sum;
}

int al_uniform(const al_tensor *t, size_t n, double budget_ratio, double *ratio_out)
{
	double target = 0, lo = log(AL_RATIO_MIN), hi = log(AL_RATIO_MAX);

	if (!t || !ratio_out || !n || !isfinite(budget_ratio) || budget_ratio <= 1)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!t[i].bytes)
			return -EINVAL;
		target += (double)t[i].bytes / budget_ratio;
	}
	if (al_bytes(t, n, AL_RATIO_MIN, NULL) < target * (1 - 1e-12)) {
		al_bytes(t, n, AL_RATIO_MIN, ratio_out); /* all at the floor: still too few bytes */
		return -ERANGE;
	}
	if (al_bytes(t, n, AL_RATIO_MAX, NULL) > target * (1 + 1e-12)) {
		al_bytes(t, n, AL_RATIO_MAX, ratio_out); /* all at their caps: still too many */
		return -ERANGE;
	}
	for (int it = 0; it < 200 && hi > lo; it++) {
		double mid = (lo + hi) / 2;
		if (al_bytes(t, n, exp(mid), NULL) > target)
			lo = mid;
		else
			hi = mid;
	}
	/* no clamp binding: exactly R (the bisection would leave the last ulps) */
	if (fabs(al_bytes(t, n, budget_ratio, NULL) - target) <= 1e-12 * target)
		lo = hi = log(budget_ratio);
	al_bytes(t, n, exp((lo + hi) / 2), ratio_out);
	if (lo == hi)
		for (size_t i = 0; i < n; i++)
			ratio_out[i] = budget_ratio;
	return 0;
}

size_t al_ladder(const al_tensor *t, double budget_ratio, double window, double *ratios)
{
	static const double steps[] = {4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512};
	double lo, hi, v[sizeof steps / sizeof steps[0] + 1];
	size_t m = 0, k = 0;

	if (!t || !ratios || !isfinite(budget_ratio) || budget_ratio <= 1 || !(window >= 0))
		return 0;
	window = window ? window : AL_WINDOW;
	lo = budget_ratio / window * (1 - 1e-9);
	hi = budget_ratio * window * (1 + 1e-9);
	v[m++] = al_clamp(budget_ratio, t);
	for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
		if (steps[i] >= lo && steps[i] <= hi)
			v[m++] = al_clamp(steps[i], t);
	/* ascending, without the duplicates the clamps make (m <= 16: insertion sort) */
	for (size_t i = 1; i < m; i++)
		for (size_t j = i; j > 0 && v[j] < v[j - 1]; j--) {
			double x = v[j];
			v[j] = v[j - 1];
			v[j - 1] = x;
		}
	for (size_t i = 0; i < m; i++)
		if (!k || v[i] != ratios[k - 1])
			ratios[k++] = v[i];
	return k;
}

typedef struct al_rank {
	double score;
	size_t i;
} al_rank;

static int al_by_score(const void *a, const void *b)
{
	const al_rank *x = a, *y = b;

	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return (x->i > y->i) - (x->i < y->i);
}

int al_weights(const al_tensor *t, size_t n, al_order order, double spread, double *w)
{
	al_rank *rk;
	size_t m = 0;
	double total = 0, before = 0;

	if (!t || !w || !n || !isfinite(spread) || spread < 0 || (spread > 0 && spread < 1) ||
	    !(order == AL_IMPORTANCE || order == AL_UNIFORM || order == AL_REVERSED))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!t[i].bytes || isinf(t[i].score))
			return -EINVAL;
	if (!(rk = malloc(n * sizeof *rk)))
		return -ENOMEM;
	spread = spread ? spread : AL_SPREAD;
	for (size_t i = 0; i < n; i++) {
		w[i] = 1;
		if (order != AL_UNIFORM && !isnan(t[i].score)) {
			rk[m++] = (al_rank){t[i].score, i};
			total += (double)t[i].bytes;
		}
	}
	qsort(rk, m, sizeof *rk, al_by_score);
	for (size_t a = 0, b; a < m; a = b) {
		double group = 0, u;
		for (b = a; b < m && rk[b].score == rk[a].score; b++)
			group += (double)t[rk[b].i].bytes;
		u = (before + group / 2) / total;
		for (size_t k = a; k < b; k++)
			w[rk[k].i] = pow(spread, order == AL_IMPORTANCE ? 1 - 2 * u : 2 * u - 1);
		before += group;
	}
	free(rk);
	return 0;
}

/* ---- choice on the curves --------------------------------------------------------------------- */

typedef struct al_seg {
	double slope; /* weighted distortion removed per byte */
	size_t i, k;  /* tensor, hull vertex it starts from */
	uint64_t db;
} al_seg;

static int al_by_slope(const void *a, const void *b)
{
	const al_seg *x = a, *y = b;

	if (x->slope != y->slope)
		return x->slope > y->slope ? -1 : 1;
	if (x->i != y->i)
		return (x->i > y->i) - (x->i < y->i);
	return (x->k > y->k) - (x->k < y->k);
}

/* Lower convex hull of p[0..np) as indices into p, cheapest first, distortion strictly falling;
 * returns its length (>= 1). idx: np slots of scratch, the hull is written to its front. */
static size_t al_hull(const al_point *p, size_t np, size_t *idx)
{
	size_t h = 0;

	for (size_t i = 0; i < np; i++)
		idx[i] = i;
	/* insertion sort (a ladder is at most AL_LADDER_MAX points): qsort_r is not C11, and a
	 * static sort key is not thread-safe */
	for (size_t i = 1; i < np; i++)
		for (size_t j = i; j > 0; j--) {
			const al_point *x = &p[idx[j]], *y = &p[idx[j - 1]];
			if (x->bytes > y->bytes || (x->bytes == y->bytes && x->dist >= y->dist))
				break;
			size_t s = idx[j];
			idx[j] = idx[j - 1];
			idx[j - 1] = s;
		}
	for (size_t i = 0; i < np; i++) {
		const al_point *c = &p[idx[i]];
		if (h && c->dist >= p[idx[h - 1]].dist)
			continue; /* more bytes, no less distortion: never worth it */
		while (h >= 2) {
			const al_point *a = &p[idx[h - 2]], *b = &p[idx[h - 1]];
			/* b on or above the chord a-c: drop it (cross product of a->b, a->c) */
			double cross = ((double)b->bytes - (double)a->bytes) * (c->dist - a->dist) -
				       (b->dist - a->dist) * ((double)c->bytes - (double)a->bytes);
			if (cross > 0)
				break;
			h--;
		}
		idx[h++] = idx[i];
	}
	return h;
}

int al_choose(const al_point *const *pts, const size_t *npts, const double *w, size_t n,
	      double budget, size_t *pick)
{
	size_t nseg = 0, tot = 0, *hull = NULL, *hoff = NULL, *hn = NULL, *at = NULL;
	unsigned char *stop = NULL;
	al_point *wp = NULL;
	al_seg *seg = NULL;
	double used = 0;
	int rc = 0;

	if (!pts || !npts || !w || !pick || !n || !(budget > 0) || !isfinite(budget))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!pts[i] || !npts[i] || !(w[i] > 0) || !isfinite(w[i]))
			return -EINVAL;
		for (size_t k = 0; k < npts[i]; k++)
			if (!(pts[i][k].dist >= 0) || !isfinite(pts[i][k].dist))
				return -EINVAL;
		tot += npts[i];
	}
	hull = malloc(tot * sizeof *hull);
	wp = malloc(tot * sizeof *wp);
	hoff = malloc(n * sizeof *hoff);
	hn = malloc(n * sizeof *hn);
	at = malloc(n * sizeof *at);
	seg = malloc(tot * sizeof *seg);
	stop = calloc(n, 1);
	if (!hull || !wp || !hoff || !hn || !at || !seg || !stop) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0, off = 0; i < n; off += npts[i++]) {
		for (size_t k = 0; k < npts[i]; k++)
			wp[off + k] = (al_point){pts[i][k].bytes, w[i] * pts[i][k].dist};
		hoff[i] = off;
		hn[i] = al_hull(wp + off, npts[i], hull + off);
		at[i] = 0;
		used += (double)wp[off + hull[off]].bytes;
		for (size_t k = 0; k + 1 < hn[i]; k++) {
			const al_point *a = &wp[off + hull[off + k]], *b = &wp[off + hull[off + k + 1]];
			uint64_t db = b->bytes - a->bytes;
			seg[nseg++] = (al_seg){(a->dist - b->dist) / (double)db, i, k, db};
		}
	}
	if (used > budget) {
		rc = -ERANGE; /* even the cheapest points are over: they are the closest */
	} else {
		/* Equal marginal weighted distortion per byte: lowering the multiplier from infinity
		 * takes the segments in falling slope (one tensor's in hull order, slopes falling
		 * along a convex hull); the first that does not fit fixes the multiplier. Its tensor
		 * stops there, and the smaller steps of the others still fill the rest. */
		qsort(seg, nseg, sizeof *seg, al_by_slope);
		for (size_t s = 0; s < nseg; s++) {
			al_seg *g = &seg[s];
			if (stop[g->i] || at[g->i] != g->k)
				continue; /* its tensor stopped at an earlier vertex */
			if (used + (double)g->db > budget) {
				stop[g->i] = 1;
				continue;
			}
			used += (double)g->db;
			at[g->i] = g->k + 1;
		}
		if (used < (1 - AL_BUDGET_TOL) * budget)
			rc = -ERANGE; /* every tensor at its richest point, or a step too coarse */
	}
	for (size_t i = 0; i < n; i++)
		pick[i] = hull[hoff[i] + at[i]];
out:
	free(stop);
	free(hull);
	free(wp);
	free(hoff);
	free(hn);
	free(at);
	free(seg);
	return rc;
}

/* ---- importance files ------------------------------------------------------------------------- */

int al_match(const char *name, const char *const *keys, size_t nkeys)
{
	size_t nl, best = 0;
	int hit = -ENOENT;

	if (!name || (!keys && nkeys))
		return -EINVAL;
	nl = strlen(name);
	for (size_t k = 0; k < nkeys; k++) {
		size_t kl;
		if (!keys[k])
			return -EINVAL;
		kl = strlen(keys[k]);
		if (kl == nl && !memcmp(keys[k], name, nl))
			return (int)k;
		if (kl < nl && (hit < 0 || kl > best) && name[kl] == '.' &&
		    !memcmp(keys[k], name, kl)) {
			best = kl;
			hit = (int)k;
		}
	}
	return hit;
}
