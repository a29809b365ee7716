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

typedef struct al_job {
	const al_tensor *t;
	size_t n;
	const double *f; /* ramp factor of each tensor; NaN for the unscored */
} al_job;

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

/* Planned bytes of the scored tensors at scale c (ratios into out when not NULL). */
static double al_bytes(const al_job *j, double c, double *out)
{
	double sum = 0;

	for (size_t i = 0; i < j->n; i++) {
		if (isnan(j->f[i]))
			continue;
		double r = al_clamp(c * j->f[i], &j->t[i]);
		sum += (double)j->t[i].bytes / r;
		if (out)
			out[i] = r;
	}
	return sum;
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

/* f[i] = s^(2 u_i - 1) (AL_REVERSED: s^(1 - 2 u_i)) by byte-weighted rank; NaN if unscored. */
static int al_ramp(const al_tensor *t, size_t n, al_order order, double s, double *f)
{
	al_rank *rk = malloc(n * sizeof *rk);
	size_t m = 0;
	double total = 0, before = 0;

	if (!rk)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (order == AL_UNIFORM) {
			f[i] = 1;
			continue;
		}
		f[i] = NAN;
		if (!isnan(t[i].score)) {
			rk[m++] = (al_rank){t[i].score, i};
			total += (double)t[i].bytes;
		}
	}
	qsort(rk, m, sizeof *rk, al_by_score);
	for (size_t a = 0, b; a < m; a = b) {
		double group = 0, u, e;
		for (b = a; b < m && rk[b].score == rk[a].score; b++)
			group += (double)t[rk[b].i].bytes;
		u = (before + group / 2) / total;
		e = order == AL_IMPORTANCE ? 2 * u - 1 : 1 - 2 * u;
		for (size_t k = a; k < b; k++)
			f[rk[k].i] = pow(s, e);
		before += group;
	}
	free(rk);
	return 0;
}

int al_allocate(const al_tensor *t, size_t n, double budget_ratio, al_order order, double spread,
		double *ratio_out)
{
	double want = 0, target, lo, hi, fmin = INFINITY, fmax = 0, *f;
	int rc;

	if (!t || !ratio_out || !n || !isfinite(budget_ratio) || budget_ratio <= 1 ||
	    !isfinite(spread) || spread < 0 || (spread > 0 && spread < 1) ||
	    !(order == AL_IMPORTANCE || order == AL_UNIFORM || order == AL_REVERSED))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!t[i].bytes || isinf(t[i].score))
			return -EINVAL;
	if (!(f = malloc(n * sizeof *f)))
		return -ENOMEM;
	if ((rc = al_ramp(t, n, order, spread ? spread : AL_SPREAD, f))) {
		free(f);
		return rc;
	}
	/* The unscored keep R (clamped); the scored share what is left of the budget. */
	for (size_t i = 0; i < n; i++)
		want += (double)t[i].bytes / budget_ratio;
	target = want;
	for (size_t i = 0; i < n; i++) {
		if (isnan(f[i])) {
			ratio_out[i] = al_clamp(budget_ratio, &t[i]);
			target -= (double)t[i].bytes / ratio_out[i];
		} else {
			fmin = f[i] < fmin ? f[i] : fmin;
			fmax = f[i] > fmax ? f[i] : fmax;
		}
	}
	al_job j = {t, n, f};
	if (fmax == 0) {
		/* Nothing scored: the unscored met the budget unless a clamp moved one. */
		rc = fabs(target) > 1e-9 * want ? -ERANGE : 0;
	} else if (al_bytes(&j, AL_RATIO_MIN / fmax, NULL) < target * (1 - 1e-12)) {
		al_bytes(&j, AL_RATIO_MIN / fmax, ratio_out); /* all at the floor: still too few bytes */
		rc = -ERANGE;
	} else if (al_bytes(&j, AL_RATIO_MAX / fmin, NULL) > target * (1 + 1e-12)) {
		al_bytes(&j, AL_RATIO_MAX / fmin, ratio_out); /* all at their caps: still too many */
		rc = -ERANGE;
	} else {
		lo = log(AL_RATIO_MIN / fmax);
		hi = log(AL_RATIO_MAX / fmin);
		for (int it = 0; it < 200 && hi > lo; it++) {
			double mid = (lo + hi) / 2;
			if (al_bytes(&j, exp(mid), NULL) > target)
				lo = mid;
			else
				hi = mid;
		}
		al_bytes(&j, exp((lo + hi) / 2), ratio_out);
	}
	free(f);
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
