/*
 * test_alloc.c -- unit tests of the layer-wise bit allocation (codec/alloc.h).
 *
 * One program, one case per argv[1] (meson registers each as its own test). The allocation cases
 * draw thousands of random tensor sets (sizes over five decades, ties, unscored tensors, every
 * order and several spreads) and synthetic rate-distortion curves from a seeded PRNG, so a
 * failure reproduces exactly; t_lagrange checks the curve choice against brute force.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "../codec/testutil.h"

#define NMAX 300

static uint64_t seed = 0xa110c;

static double urand(void)
{
	return ((double)(t_rand(&seed) >> 11) + 0.5) * 0x1p-53;
}

/* A random set: tensors of 1 MiB..1 GiB in 512 KiB chunks (no cap binds below 512x), scores
 * from a few distinct values (ties) when `ties`, a fraction NaN when `unscored`. */
static size_t random_set(al_tensor *t, int ties, int unscored)
{
	size_t n = 1 + t_rand(&seed) % NMAX;

	for (size_t i = 0; i < n; i++) {
		t[i].bytes = (uint64_t)exp(log(1 << 20) + urand() * log(1024.0));
		t[i].chunks = (uint32_t)((t[i].bytes + (512u << 10) - 1) / (512u << 10));
		t[i].score = ties ? (double)(t_rand(&seed) % 5) / 10 : urand();
		if (unscored && urand() < 0.2)
			t[i].score = NAN;
	}
	return n;
}

static double planned(const al_tensor *t, size_t n, const double *r)
{
	double s = 0;

	for (size_t i = 0; i < n; i++)
		s += (double)t[i].bytes / r[i];
	return s;
}

static double budget(const al_tensor *t, size_t n, double R)
{
	double s = 0;

	for (size_t i = 0; i < n; i++)
		s += (double)t[i].bytes / R;
	return s;
}

/* A synthetic curve for tensor t at the ladder of R: bytes b / r (+-3% noise, as dq_plan lands
 * within 10%), distortion b * a * r^e (a, e per tensor: e in 0.3..1.3) with a
 * non-convex bump on some points. */
static size_t curve(const al_tensor *t, double R, al_point *p)
{
	double lr[AL_LADDER_MAX], a = 0.02 + urand(), e = 0.3 + urand();
	size_t m = al_ladder(t, R, INFINITY, lr);

	for (size_t k = 0; k < m; k++) {
		p[k].bytes = (uint64_t)((double)t->bytes / lr[k] * (0.97 + 0.06 * urand()));
		p[k].dist = (double)t->bytes * a * pow(lr[k], e) * (urand() < 0.2 ? 1.3 : 1);
	}
	return m;
}

/* The curve choice lands within AL_BUDGET_TOL below the budget and never above it; al_uniform
 * lands on it (1e-9) with every ratio in [AL_RATIO_MIN, AL_RATIO_MAX]. */
static void t_budget(void)
{
	static al_point pts[NMAX][AL_LADDER_MAX];
	const al_point *pp[NMAX];
	size_t np[NMAX], pick[NMAX];
	al_tensor t[NMAX];
	double r[NMAX], w[NMAX];

	for (int trial = 0; trial < 2000; trial++) {
		size_t n = random_set(t, trial & 1, trial & 2);
		double R = exp(log(8) + urand() * log(16)); /* 8x..128x */
		al_order o = (al_order)(trial % 3);
		double want = budget(t, n, R), got = 0, big = 0;

		CHECK(al_uniform(t, n, R, r) == 0, "trial %d", trial);
		CHECK(fabs(planned(t, n, r) - want) <= 1e-9 * want, "trial %d: uniform %.6g, budget %.6g",
		      trial, planned(t, n, r), want);
		for (size_t i = 0; i < n; i++)
			CHECK(r[i] >= AL_RATIO_MIN && r[i] <= AL_RATIO_MAX, "trial %d: ratio %g", trial,
			      r[i]);

		CHECK(al_weights(t, n, o, trial % 4 ? 1 + 10 * urand() : 0, w) == 0, "trial %d", trial);
		for (size_t i = 0; i < n; i++) {
			np[i] = curve(&t[i], R, pts[i]);
			pp[i] = pts[i];
			big = (double)t[i].bytes > big ? (double)t[i].bytes : big;
		}
		int rc = al_choose(pp, np, w, n, want, pick);
		for (size_t i = 0; i < n; i++) {
			CHECK(pick[i] < np[i], "trial %d", trial);
			got += (double)pts[i][pick[i]].bytes;
		}
		CHECK(got <= want, "trial %d: %.6g bytes for a budget of %.6g", trial, got, want);
		/* the ladder's steps are 1.5x: a miss takes a tensor whose step is a large part of the
		 * budget, one of at least a tenth of all bytes here; then -ERANGE says so */
		if (big * R / want < 0.1)
			CHECK(rc == 0, "trial %d: rc %d", trial, rc);
		CHECK(rc == 0 ? got >= (1 - AL_BUDGET_TOL) * want : rc == -ERANGE, "trial %d: %zu "
		      "tensors, rc %d, %.6g bytes for a budget of %.6g", trial, n, rc, got, want);
	}
}

/* Equal curves: a tensor's bytes (bits) follow its score, more for a higher score with
 * AL_IMPORTANCE and fewer with AL_REVERSED, the top strictly above the bottom; AL_UNIFORM weights
 * them all 1, as it does the unscored. */
static void t_order(void)
{
	static al_point pts[NMAX][AL_LADDER_MAX];
	const al_point *pp[NMAX];
	size_t np[NMAX], pick[NMAX];
	al_tensor t[NMAX];
	double w[NMAX];

	for (int trial = 0; trial < 2000; trial++) {
		size_t n = 20 + t_rand(&seed) % (NMAX - 19); /* enough to land within the tolerance */
		double R = exp(log(8) + urand() * log(16));
		al_order o = trial % 2 ? AL_IMPORTANCE : AL_REVERSED;
		size_t top = 0, bottom = 0, m;

		for (size_t i = 0; i < n; i++)
			t[i] = (al_tensor){64u << 20, 128, trial & 2 ? (double)(t_rand(&seed) % 5) : urand()};
		m = curve(&t[0], R, pts[0]);
		for (size_t i = 0; i < n; i++) {
			memcpy(pts[i], pts[0], m * sizeof pts[0][0]);
			np[i] = m;
			pp[i] = pts[i];
			top = t[i].score > t[top].score ? i : top;
			bottom = t[i].score < t[bottom].score ? i : bottom;
		}
		CHECK(al_weights(t, n, o, 4, w) == 0, "trial %d", trial);
		CHECK(al_choose(pp, np, w, n, budget(t, n, R), pick) == 0, "trial %d", trial);
		for (size_t i = 0; i < n; i++)
			for (size_t j = 0; j < n; j++)
				if ((t[i].score > t[j].score) == (o == AL_IMPORTANCE) &&
				    t[i].score != t[j].score)
					CHECK(pts[i][pick[i]].bytes >= pts[j][pick[j]].bytes,
					      "trial %d: score %g gets %llu bytes, score %g %llu", trial,
					      t[i].score, (unsigned long long)pts[i][pick[i]].bytes, t[j].score,
					      (unsigned long long)pts[j][pick[j]].bytes);
		if (t[top].score != t[bottom].score) {
			size_t hi = o == AL_IMPORTANCE ? top : bottom, lo = hi == top ? bottom : top;
			CHECK(pts[hi][pick[hi]].bytes > pts[lo][pick[lo]].bytes, "trial %d: top %llu, "
			      "bottom %llu", trial, (unsigned long long)pts[hi][pick[hi]].bytes,
			      (unsigned long long)pts[lo][pick[lo]].bytes);
		}
		t[0].score = NAN;
		CHECK(al_weights(t, n, o, 4, w) == 0 && w[0] == 1, "trial %d: unscored weight %g", trial,
		      w[0]);
		CHECK(al_weights(t, n, AL_UNIFORM, 4, w) == 0, "trial %d", trial);
		for (size_t i = 0; i < n; i++)
			CHECK(w[i] == 1, "trial %d: uniform weight %g", trial, w[i]);
	}
	/* byte-weighted ranks: tensors of 1, 2 and 5 MiB (most important first) sit at u = 1/16,
	 * 4/16, 11/16: weights s^(14/16), s^(8/16), s^(-6/16) */
	al_tensor u[3];
	double x[3];
	for (size_t i = 0; i < 3; i++)
		u[i] = (al_tensor){(uint64_t)(i == 2 ? 5 : i + 1) << 20, 10, 1 - (double)i};
	CHECK(al_weights(u, 3, AL_IMPORTANCE, 4, x) == 0, "1-2-5");
	CHECK(fabs(x[0] - pow(4, 14 / 16.0)) <= 1e-12 && fabs(x[1] - pow(4, 8 / 16.0)) <= 1e-12 &&
	      fabs(x[2] - pow(4, -6 / 16.0)) <= 1e-12, "1-2-5: %g %g %g", x[0], x[1], x[2]);
	CHECK(al_weights(u, 3, AL_REVERSED, 4, x) == 0, "1-2-5 reversed");
	CHECK(fabs(x[0] - pow(4, -14 / 16.0)) <= 1e-12 && fabs(x[2] - pow(4, 6 / 16.0)) <= 1e-12,
	      "1-2-5 reversed: %g %g", x[0], x[2]);
	CHECK(al_weights(u, 3, AL_IMPORTANCE, 1, x) == 0 && x[0] == 1 && x[2] == 1, "spread 1");
}

/* A hand-made example against brute force over every combination of points. Three tensors:
 *   A: (10, 100) (20, 50) (30, 30) (40, 25)          convex
 *   B: (10, 80) (15, 79) (20, 40) (40, 10) (45, 12)  (15, 79) under the hull, (45, 12) dominated
 *   C: (5, 60) (25, 20) (35, 5)                      weight 2 in the second pass
 * At every budget the choice stays within it, and it is never worse than the best combination
 * of hull points that equal marginal rates give (the Lagrangian solutions); where the budget is
 * one of their totals, it is the brute-force optimum over all 4 * 5 * 3 combinations. */
static void t_lagrange(void)
{
	static const al_point A[] = {{10, 100}, {20, 50}, {30, 30}, {40, 25}};
	static const al_point B[] = {{10, 80}, {15, 79}, {20, 40}, {40, 10}, {45, 12}};
	static const al_point C[] = {{5, 60}, {25, 20}, {35, 5}};
	const al_point *pp[3] = {A, B, C};
	size_t np[3] = {4, 5, 3}, pick[3];
	static const double weights[2][3] = {{1, 1, 1}, {1, 1, 2}};

	for (int wi = 0; wi < 2; wi++) {
		const double *w = weights[wi];
		/* the Lagrangian solutions: for each multiplier, each tensor's minimum of w d + l b */
		double lag_b[64], lag_d[64];
		size_t nlag = 0;
		for (double l = 1e-3; l < 1e3; l *= 1.01) {
			double tb = 0, td = 0;
			for (int i = 0; i < 3; i++) {
				size_t best = 0;
				for (size_t k = 1; k < np[i]; k++)
					if (w[i] * pp[i][k].dist + l * (double)pp[i][k].bytes <
					    w[i] * pp[i][best].dist + l * (double)pp[i][best].bytes)
						best = k;
				tb += (double)pp[i][best].bytes;
				td += w[i] * pp[i][best].dist;
			}
			if (!nlag || tb != lag_b[nlag - 1]) {
				lag_b[nlag] = tb;
				lag_d[nlag++] = td;
			}
		}
		CHECK(nlag >= 6, "weights %d: %zu Lagrangian solutions", wi, nlag);
		for (double bud = 25; bud <= 120; bud += 1) {
			int rc = al_choose(pp, np, w, 3, bud, pick);
			double b = 0, d = 0, opt = INFINITY, lag = INFINITY;
			for (int i = 0; i < 3; i++) {
				b += (double)pp[i][pick[i]].bytes;
				d += w[i] * pp[i][pick[i]].dist;
			}
			CHECK(rc == 0 || (rc == -ERANGE && b < (1 - AL_BUDGET_TOL) * bud), "budget %g: rc %d",
			      bud, rc);
			CHECK(b <= bud, "weights %d, budget %g: %g bytes", wi, bud, b);
			for (size_t k = 0; k < nlag; k++)
				if (lag_b[k] <= bud && lag_d[k] < lag)
					lag = lag_d[k];
			CHECK(d <= lag + 1e-9, "weights %d, budget %g: distortion %g, Lagrangian %g", wi, bud,
			      d, lag);
			for (size_t a = 0; a < 4; a++)
				for (size_t c = 0; c < 5; c++)
					for (size_t e = 0; e < 3; e++) {
						double tb = (double)(A[a].bytes + B[c].bytes + C[e].bytes);
						double td = w[0] * A[a].dist + w[1] * B[c].dist + w[2] * C[e].dist;
						if (tb <= bud && td < opt)
							opt = td;
					}
			for (size_t k = 0; k < nlag; k++)
				if (lag_b[k] == bud)
					CHECK(fabs(d - opt) <= 1e-9, "weights %d, budget %g: %g, optimum %g",
					      wi, bud, d, opt);
		}
	}
	/* below the cheapest points: -ERANGE with them; far above the richest: -ERANGE, richest */
	CHECK(al_choose(pp, np, weights[0], 3, 20, pick) == -ERANGE && pick[0] == 0 && pick[1] == 0 &&
	      pick[2] == 0, "below: %zu %zu %zu", pick[0], pick[1], pick[2]);
	CHECK(al_choose(pp, np, weights[0], 3, 1000, pick) == -ERANGE && pick[0] == 3 && pick[1] == 3 &&
	      pick[2] == 2, "above: %zu %zu %zu", pick[0], pick[1], pick[2]);
}

/* al_uniform: every tensor exactly at R; the ladder holds R and the standard steps around it. */
static void t_uniform(void)
{
	al_tensor t[NMAX];
	double r[NMAX], lr[AL_LADDER_MAX];

	for (int trial = 0; trial < 1000; trial++) {
		size_t n = random_set(t, trial & 1, trial & 2);
		double R = exp(log(8) + urand() * log(16));

		CHECK(al_uniform(t, n, R, r) == 0, "trial %d", trial);
		for (size_t i = 0; i < n; i++)
			CHECK(r[i] == R, "trial %d: %g, R %g", trial, r[i], R);
		size_t m = al_ladder(&t[0], R, 0, lr), hasR = 0;
		CHECK(m >= 2 && m <= AL_LADDER_MAX, "trial %d: %zu ratios", trial, m);
		for (size_t k = 0; k < m; k++) {
			hasR += lr[k] == R;
			CHECK(k == 0 || lr[k] > lr[k - 1], "trial %d: not ascending", trial);
			CHECK(lr[k] >= R / AL_WINDOW * (1 - 1e-9) && lr[k] <= R * AL_WINDOW * (1 + 1e-9),
			      "trial %d: %g outside the window of %g", trial, lr[k], R);
		}
		CHECK(hasR == 1, "trial %d: R not on the ladder", trial);
	}
	al_tensor big = {64u << 20, 128, 0.5}, head = {4096, 1, 0.5};
	size_t m = al_ladder(&big, 32, 0, lr);
	CHECK(m == 5 && lr[0] == 16 && lr[1] == 24 && lr[2] == 32 && lr[3] == 48 && lr[4] == 64,
	      "ladder at 32x: %zu", m);
	m = al_ladder(&big, 20, INFINITY, lr);
	CHECK(m == 16 && lr[0] == 4 && lr[5] == 20 && lr[15] == 512, "whole ladder: %zu", m);
	m = al_ladder(&head, 100, 4, lr); /* cap 4096 / 32 = 128: 128, 192, 256, 384 clamp to it */
	CHECK(m == 6 && lr[0] == 32 && lr[3] == 96 && lr[4] == 100 && lr[5] == 128, "capped: %zu %g", m,
	      lr[m - 1]);
}

/* Clamps of al_uniform: a small tensor stops at its cap (bytes / (chunks * AL_BLOB_MIN)) and the
 * others take up the slack; a budget outside what the clamps allow is -ERANGE with the closest
 * allocation. */
static void t_clamp(void)
{
	al_tensor t[3] = {
		{4096, 1, 0.1}, /* cap 4096 / 32 = 128x */
		{1u << 20, 2, 0.5},
		{1u << 20, 2, 0.9},
	};
	double r[3], cap = 4096.0 / AL_BLOB_MIN;

	CHECK(al_uniform(t, 3, 200, r) == 0, "capped set");
	CHECK(r[0] == cap && r[1] == r[2] && r[1] > 200, "small tensor at %g, cap %g; %g", r[0], cap,
	      r[1]);
	CHECK(fabs(planned(t, 3, r) - budget(t, 3, 200)) <= 1e-9 * budget(t, 3, 200), "budget");
	CHECK(al_uniform(t, 3, 2, r) == -ERANGE, "below the floor");
	for (int i = 0; i < 3; i++)
		CHECK(r[i] == AL_RATIO_MIN, "closest below: %g", r[i]);
	CHECK(al_uniform(t, 3, 600, r) == -ERANGE, "above every cap");
	CHECK(r[0] == cap && r[1] == AL_RATIO_MAX && r[2] == AL_RATIO_MAX, "closest above: %g %g %g",
	      r[0], r[1], r[2]);
}

static void t_einval(void)
{
	al_tensor t[2] = {{1u << 20, 2, 0.5}, {1u << 20, 2, 0.2}};
	double r[2], lr[AL_LADDER_MAX], w[2] = {1, 1};
	static const al_point p0[] = {{10, 1}}, p1[] = {{10, 1}, {20, 0.5}};
	const al_point *pp[2] = {p0, p1};
	size_t np[2] = {1, 2}, pick[2];

	CHECK(al_uniform(NULL, 2, 32, r) == -EINVAL, "t NULL");
	CHECK(al_uniform(t, 2, 32, NULL) == -EINVAL, "out NULL");
	CHECK(al_uniform(t, 0, 32, r) == -EINVAL, "n 0");
	CHECK(al_uniform(t, 2, 1, r) == -EINVAL, "ratio 1");
	CHECK(al_uniform(t, 2, NAN, r) == -EINVAL, "ratio NaN");
	CHECK(al_uniform(t, 2, INFINITY, r) == -EINVAL, "ratio inf");
	CHECK(al_ladder(NULL, 32, 0, lr) == 0 && al_ladder(t, 32, 0, NULL) == 0, "ladder NULL");
	CHECK(al_ladder(t, 1, 0, lr) == 0 && al_ladder(t, NAN, 0, lr) == 0, "ladder ratio");
	CHECK(al_ladder(t, 32, -1, lr) == 0 && al_ladder(t, 32, NAN, lr) == 0, "ladder window");
	CHECK(al_weights(NULL, 2, AL_IMPORTANCE, 0, w) == -EINVAL, "weights t NULL");
	CHECK(al_weights(t, 2, AL_IMPORTANCE, 0, NULL) == -EINVAL, "weights out NULL");
	CHECK(al_weights(t, 0, AL_IMPORTANCE, 0, w) == -EINVAL, "weights n 0");
	CHECK(al_weights(t, 2, (al_order)3, 0, w) == -EINVAL, "order");
	CHECK(al_weights(t, 2, AL_IMPORTANCE, 0.5, w) == -EINVAL, "spread < 1");
	CHECK(al_weights(t, 2, AL_IMPORTANCE, -1, w) == -EINVAL, "spread < 0");
	CHECK(al_weights(t, 2, AL_IMPORTANCE, NAN, w) == -EINVAL, "spread NaN");
	t[1].score = INFINITY;
	CHECK(al_weights(t, 2, AL_IMPORTANCE, 0, w) == -EINVAL, "score inf");
	t[1].score = 0.2;
	t[0].bytes = 0;
	CHECK(al_uniform(t, 2, 32, r) == -EINVAL, "empty tensor");
	CHECK(al_weights(t, 2, AL_IMPORTANCE, 0, w) == -EINVAL, "weights: empty tensor");
	w[0] = w[1] = 1;
	CHECK(al_choose(NULL, np, w, 2, 25, pick) == -EINVAL, "choose pts NULL");
	CHECK(al_choose(pp, NULL, w, 2, 25, pick) == -EINVAL, "choose npts NULL");
	CHECK(al_choose(pp, np, NULL, 2, 25, pick) == -EINVAL, "choose w NULL");
	CHECK(al_choose(pp, np, w, 2, 25, NULL) == -EINVAL, "choose pick NULL");
	CHECK(al_choose(pp, np, w, 0, 25, pick) == -EINVAL, "choose n 0");
	CHECK(al_choose(pp, np, w, 2, 0, pick) == -EINVAL, "choose budget 0");
	CHECK(al_choose(pp, np, w, 2, NAN, pick) == -EINVAL, "choose budget NaN");
	w[1] = 0;
	CHECK(al_choose(pp, np, w, 2, 25, pick) == -EINVAL, "choose weight 0");
	w[1] = INFINITY;
	CHECK(al_choose(pp, np, w, 2, 25, pick) == -EINVAL, "choose weight inf");
	w[1] = 1;
	np[0] = 0;
	CHECK(al_choose(pp, np, w, 2, 25, pick) == -EINVAL, "choose no points");
	np[0] = 1;
	static const al_point bad[] = {{10, NAN}};
	pp[0] = bad;
	CHECK(al_choose(pp, np, w, 2, 25, pick) == -EINVAL, "choose distortion NaN");
	pp[0] = p0;
	CHECK(al_choose(pp, np, w, 2, 30, pick) == 0 && pick[0] == 0 && pick[1] == 1, "choose ok");

	float wf[4] = {1, 2, 3, 4};
	double s = -1;
	CHECK(al_zd_score(NULL, NULL, 4, DT_F32, &s) == -EINVAL, "w NULL");
	CHECK(al_zd_score(wf, NULL, 4, DT_F32, NULL) == -EINVAL, "score NULL");
	CHECK(al_zd_score(wf, NULL, 0, DT_F32, &s) == -EINVAL, "n 0");
	CHECK(al_zd_score(wf, NULL, 4, DT_I32, &s) == -EINVAL, "int dtype");
	CHECK(al_zd_score(wf, NULL, 4, DT_F64, &s) == -EINVAL, "F64");
	CHECK(s == -1, "score written on error");

	const char *keys[] = {"a", NULL};
	CHECK(al_match(NULL, keys, 1) == -EINVAL, "name NULL");
	CHECK(al_match("a", NULL, 1) == -EINVAL, "keys NULL");
	CHECK(al_match("b", keys, 2) == -EINVAL, "key NULL");
}

static uint16_t to_bf16(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return (uint16_t)(u >> 16); /* the test values are exact in bf16 */
}

/* f16 of small integers and their halves (exact) */
static uint16_t to_f16(float f)
{
	int e;
	double m = frexp(fabs(f), &e);

	if (f == 0)
		return 0;
	return (uint16_t)((f < 0 ? 0x8000 : 0) | (uint16_t)(e - 1 + 15) << 10 |
			  (uint16_t)((m * 2 - 1) * 1024));
}

/* ZD on data whose answer is known in closed form, in every float dtype, on weights and deltas. */
static void t_zd(void)
{
	enum { N = 1000 };
	static float w[N], b[N];
	static uint16_t h[N], hb[N];
	double s;

	/* 0, 1, ..., 999: mean 499.5, std sqrt((N^2 - 1) / 12) = 288.67: 211 values each side */
	for (int i = 0; i < N; i++)
		w[i] = (float)i;
	CHECK(al_zd_score(w, NULL, N, DT_F32, &s) == 0 && s == 0.422, "ramp: %g", s);
	/* eight 0s, then 4 and -4: std sqrt(3.2) = 1.79, so 2 of 10 */
	static const float ten[10] = {0, 0, 0, 0, 0, 0, 0, 0, 4, -4};
	for (int i = 0; i < 10; i++) {
		h[i] = to_bf16(ten[i]);
		hb[i] = to_f16(ten[i]);
	}
	CHECK(al_zd_score(h, NULL, 10, DT_BF16, &s) == 0 && s == 0.2, "bf16: %g", s);
	CHECK(al_zd_score(hb, NULL, 10, DT_F16, &s) == 0 && s == 0.2, "f16: %g", s);
	CHECK(al_zd_score(ten, NULL, 10, DT_F32, &s) == 0 && s == 0.2, "f32: %g", s);
	/* strictly beyond one population std: {-1, 1} has std 1 and nothing beyond; {-1, 1, -1, 1,
	 * 0} has std sqrt(0.8) (the sample std would be 1) and four beyond */
	static const float pm[5] = {-1, 1, -1, 1, 0};
	CHECK(al_zd_score(pm, NULL, 2, DT_F32, &s) == 0 && s == 0, "{-1, 1}: %g", s);
	CHECK(al_zd_score(pm, NULL, 5, DT_F32, &s) == 0 && s == 0.8, "{-1, 1, -1, 1, 0}: %g", s);
	/* the same pattern as a delta over a large base (1000 + x in f32: the shifted sums keep the
	 * variance); as weights alone the base's ramp dominates */
	for (int i = 0; i < N; i++) {
		b[i] = 1000.0f + (float)i;
		w[i] = b[i] + ten[i % 10];
	}
	CHECK(al_zd_score(w, b, N, DT_F32, &s) == 0 && s == 0.2, "delta: %g", s);
	CHECK(al_zd_score(w, NULL, N, DT_F32, &s) == 0 && fabs(s - 0.422) < 0.01, "weights: %g", s);
	/* 2^24 + the same pattern, 10^6 times: naive sums of squares in double lose the variance to
	 * cancellation (2^48 against 3.2); the shifted sums do not */
	enum { M = 1000000 };
	float *big = t_xmalloc(M * sizeof *big);
	for (int i = 0; i < M; i++)
		big[i] = 16777216.0f + ten[i % 10];
	CHECK(al_zd_score(big, NULL, M, DT_F32, &s) == 0 && s == 0.2, "offset 2^24: %g", s);
	free(big);
	/* constant: 0 */
	for (int i = 0; i < N; i++)
		w[i] = 0.02f;
	CHECK(al_zd_score(w, NULL, N, DT_F32, &s) == 0 && s == 0, "constant: %g", s);
	CHECK(al_zd_score(w, w, N, DT_F32, &s) == 0 && s == 0, "zero delta: %g", s);
	/* Gaussian: P(|z| > 1) = 0.3173; 200k samples put it within 0.005 */
	enum { G = 200000 };
	float *g = t_xmalloc(G * sizeof *g);
	for (int i = 0; i < G; i++)
		g[i] = (float)(0.02 * sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand()));
	CHECK(al_zd_score(g, NULL, G, DT_F32, &s) == 0 && fabs(s - 0.3173) < 0.005, "gauss: %g", s);
	free(g);
	/* non-finite values anywhere: -EDOM, score untouched */
	s = -1;
	w[N - 1] = NAN;
	CHECK(al_zd_score(w, NULL, N, DT_F32, &s) == -EDOM && s == -1, "NaN f32");
	h[3] = 0x7f80;
	CHECK(al_zd_score(h, NULL, 10, DT_BF16, &s) == -EDOM, "inf bf16");
	hb[5] = 0xfc00;
	CHECK(al_zd_score(hb, NULL, 10, DT_F16, &s) == -EDOM, "-inf f16");
	w[N - 1] = 3e38f;
	b[N - 1] = -3e38f;
	CHECK(al_zd_score(w, b, N, DT_F32, &s) == 0, "a finite delta beyond float range is fine");
}

static void t_match(void)
{
	const char *keys[] = {"blocks.3", "blocks.3.ffwd", "blocks.30", "lm_head.weight", "blocks"};

	CHECK(al_match("lm_head.weight", keys, 5) == 3, "exact");
	CHECK(al_match("blocks.3.ffwd.net.0.weight", keys, 5) == 1, "longest prefix");
	CHECK(al_match("blocks.3.sa.proj.weight", keys, 5) == 0, "prefix");
	CHECK(al_match("blocks.30.sa.proj.weight", keys, 5) == 2, "'.'-bounded: blocks.30");
	CHECK(al_match("blocks.31.sa.proj.weight", keys, 5) == 4, "'.'-bounded: blocks");
	CHECK(al_match("lm_head.bias", keys, 5) == -ENOENT, "no key");
	CHECK(al_match("blocks3.x", keys, 4) == -ENOENT, "not at a dot");
	CHECK(al_match("x", keys, 0) == -ENOENT, "no keys");
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} cases[] = {
		{"budget", t_budget}, {"order", t_order}, {"lagrange", t_lagrange},
		{"uniform", t_uniform}, {"clamp", t_clamp}, {"einval", t_einval}, {"zd", t_zd},
		{"match", t_match},
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
