/*
 * test_alloc.c -- unit tests of the layer-wise bit allocation (codec/alloc.h).
 *
 * One program, one case per argv[1] (meson registers each as its own test). The allocation cases
 * draw thousands of random tensor sets (sizes over five decades, ties, unscored tensors, every
 * order and several spreads) from a seeded PRNG, so a failure reproduces exactly.
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

/* Planned bytes land on the budget (the issue asks within 5%; the solve gives 1e-9), and every
 * ratio lies in [AL_RATIO_MIN, AL_RATIO_MAX]. */
static void t_budget(void)
{
	static const double spreads[] = {0, 1, 1.5, 2, 4, 8};
	al_tensor t[NMAX];
	double r[NMAX];

	for (int trial = 0; trial < 3000; trial++) {
		size_t n = random_set(t, trial & 1, trial & 2);
		double R = exp(log(8) + urand() * log(16)); /* 8x..128x */
		al_order o = (al_order)(trial % 3);
		double s = spreads[trial % 6];
		int rc = al_allocate(t, n, R, o, s, r);
		double want = budget(t, n, R), got = planned(t, n, r);

		CHECK(rc == 0, "trial %d: rc %d", trial, rc);
		CHECK(fabs(got - want) <= 1e-9 * want, "trial %d: planned %.6g, budget %.6g", trial, got,
		      want);
		CHECK(fabs(got - want) <= 0.05 * want, "trial %d", trial);
		for (size_t i = 0; i < n; i++)
			CHECK(r[i] >= AL_RATIO_MIN && r[i] <= AL_RATIO_MAX, "trial %d: ratio %g", trial,
			      r[i]);
	}
}

/* Bits (8 * esize / ratio) follow the score order: AL_IMPORTANCE gives a higher score at least as
 * many bits, equal scores equal bits, and the most important strictly more than the least; the
 * unscored sit at R; AL_REVERSED the mirror image. */
static void t_order(void)
{
	al_tensor t[NMAX];
	double r[NMAX];

	for (int trial = 0; trial < 3000; trial++) {
		size_t n = random_set(t, trial & 1, trial & 2);
		double R = exp(log(8) + urand() * log(16));
		al_order o = trial % 2 ? AL_IMPORTANCE : AL_REVERSED;
		size_t top = SIZE_MAX, bottom = SIZE_MAX;

		CHECK(al_allocate(t, n, R, o, 4, r) == 0, "trial %d", trial);
		for (size_t i = 0; i < n; i++) {
			double bi = 16.0 / r[i];
			if (isnan(t[i].score)) {
				CHECK(r[i] == R, "trial %d: unscored tensor at %g, not R = %g", trial, r[i], R);
				continue;
			}
			if (top == SIZE_MAX || t[i].score > t[top].score)
				top = i;
			if (bottom == SIZE_MAX || t[i].score < t[bottom].score)
				bottom = i;
			for (size_t j = 0; j < n; j++) {
				double bj = 16.0 / r[j];
				if (isnan(t[j].score))
					continue;
				if (t[i].score == t[j].score)
					CHECK(bi == bj, "trial %d: equal scores, bits %g and %g", trial, bi, bj);
				else if ((t[i].score > t[j].score) == (o == AL_IMPORTANCE))
					CHECK(bi >= bj, "trial %d: score %g gets %g bits, score %g %g bits",
					      trial, t[i].score, bi, t[j].score, bj);
			}
		}
		if (top != SIZE_MAX && t[top].score != t[bottom].score)
			CHECK(o == AL_IMPORTANCE ? r[top] < r[bottom] : r[top] > r[bottom],
			      "trial %d: top %g, bottom %g", trial, r[top], r[bottom]);
	}
}

/* AL_UNIFORM: every tensor exactly at R, whatever the scores; spread 1 is uniform; n equal
 * tensors sit at u_i = (i + 1/2) / n, so neighbours differ by exactly s^(2 / n), tensors placed
 * symmetrically about the middle have r_i r_(n-1-i) = c^2, and the budget fixes c. */
static void t_uniform(void)
{
	al_tensor t[NMAX];
	double r[NMAX];

	for (int trial = 0; trial < 1000; trial++) {
		size_t n = random_set(t, trial & 1, trial & 2);
		double R = exp(log(8) + urand() * log(16));

		CHECK(al_allocate(t, n, R, AL_UNIFORM, 4, r) == 0, "trial %d", trial);
		for (size_t i = 0; i < n; i++)
			CHECK(fabs(r[i] - R) <= 1e-9 * R, "trial %d: %g, R %g", trial, r[i], R);
		for (size_t i = 0; i < n; i++)
			t[i].score = isnan(t[i].score) ? 0.5 : t[i].score;
		CHECK(al_allocate(t, n, R, AL_IMPORTANCE, 1, r) == 0, "trial %d", trial);
		for (size_t i = 0; i < n; i++)
			CHECK(fabs(r[i] - R) <= 1e-9 * R, "trial %d: spread 1 gave %g, R %g", trial, r[i],
			      R);
	}
	for (size_t n = 2; n <= 64; n *= 2) {
		for (size_t i = 0; i < n; i++)
			t[i] = (al_tensor){64u << 20, 128, (double)i};
		CHECK(al_allocate(t, n, 32, AL_IMPORTANCE, 4, r) == 0, "n %zu", n);
		double step = pow(4, 2.0 / (double)n), inv = 0;
		for (size_t i = 0; i + 1 < n; i++)
			CHECK(fabs(r[i] / r[i + 1] - step) <= 1e-9 * step, "n %zu: step %g, want %g", n,
			      r[i] / r[i + 1], step);
		for (size_t i = 0; i < n; i++)
			inv += pow(4, 1 - (2.0 * (double)i + 1) / (double)n); /* sum of 1 / f_i */
		double c = 32 * inv / (double)n; /* n b / R = sum b / (c f_i) */
		for (size_t i = 0; i < n; i++)
			CHECK(fabs(r[i] * r[n - 1 - i] - c * c) <= 1e-9 * c * c, "n %zu: symmetry", n);
	}
	/* byte-weighted ranks: tensors of 1, 2 and 5 MiB (most important first) sit at u = 1/16,
	 * 4/16, 11/16, so the ratio steps are s^(6/16) and s^(14/16) */
	for (size_t i = 0; i < 3; i++)
		t[i] = (al_tensor){(uint64_t)(i == 2 ? 5 : i + 1) << 20, 10, 1 - (double)i};
	CHECK(al_allocate(t, 3, 32, AL_IMPORTANCE, 4, r) == 0, "1-2-5");
	CHECK(fabs(r[1] / r[0] - pow(4, 6 / 16.0)) <= 1e-9 && fabs(r[2] / r[1] - pow(4, 14 / 16.0)) <= 1e-9,
	      "1-2-5 steps %g %g", r[1] / r[0], r[2] / r[1]);
}

/* Clamps: a small tensor stops at its cap (bytes / (chunks * AL_BLOB_MIN)) and the others take
 * up the slack; a budget outside what the clamps allow is -ERANGE with the closest allocation. */
static void t_clamp(void)
{
	al_tensor t[3] = {
		{4096, 1, 0.1}, /* least important, cap 4096 / 32 = 128x */
		{1u << 20, 2, 0.5},
		{1u << 20, 2, 0.9},
	};
	double r[3], cap = 4096.0 / AL_BLOB_MIN;

	CHECK(al_allocate(t, 3, 100, AL_IMPORTANCE, 8, r) == 0, "capped set");
	CHECK(r[0] == cap, "small tensor at %g, cap %g", r[0], cap);
	CHECK(fabs(planned(t, 3, r) - budget(t, 3, 100)) <= 1e-9 * budget(t, 3, 100), "budget");
	CHECK(r[2] < r[1], "order of the others: %g %g", r[2], r[1]);

	CHECK(al_allocate(t, 3, 2, AL_IMPORTANCE, 4, r) == -ERANGE, "below the floor");
	for (int i = 0; i < 3; i++)
		CHECK(r[i] == AL_RATIO_MIN, "closest below: %g", r[i]);
	CHECK(al_allocate(t, 3, 600, AL_UNIFORM, 4, r) == -ERANGE, "above every cap");
	CHECK(r[0] == cap && r[1] == AL_RATIO_MAX && r[2] == AL_RATIO_MAX, "closest above: %g %g %g",
	      r[0], r[1], r[2]);
	/* only unscored tensors: fine at a reachable R, -ERANGE when a clamp moves one */
	t[0].score = t[1].score = t[2].score = NAN;
	CHECK(al_allocate(t, 3, 64, AL_IMPORTANCE, 4, r) == 0 && r[0] == 64 && r[2] == 64, "unscored");
	CHECK(al_allocate(t, 3, 200, AL_IMPORTANCE, 4, r) == -ERANGE && r[0] == cap && r[1] == 200,
	      "unscored over a cap");
}

static void t_einval(void)
{
	al_tensor t[2] = {{1u << 20, 2, 0.5}, {1u << 20, 2, 0.2}};
	double r[2];

	CHECK(al_allocate(NULL, 2, 32, AL_IMPORTANCE, 0, r) == -EINVAL, "t NULL");
	CHECK(al_allocate(t, 2, 32, AL_IMPORTANCE, 0, NULL) == -EINVAL, "out NULL");
	CHECK(al_allocate(t, 0, 32, AL_IMPORTANCE, 0, r) == -EINVAL, "n 0");
	CHECK(al_allocate(t, 2, 1, AL_IMPORTANCE, 0, r) == -EINVAL, "ratio 1");
	CHECK(al_allocate(t, 2, -3, AL_IMPORTANCE, 0, r) == -EINVAL, "ratio < 0");
	CHECK(al_allocate(t, 2, NAN, AL_IMPORTANCE, 0, r) == -EINVAL, "ratio NaN");
	CHECK(al_allocate(t, 2, INFINITY, AL_IMPORTANCE, 0, r) == -EINVAL, "ratio inf");
	CHECK(al_allocate(t, 2, 32, (al_order)3, 0, r) == -EINVAL, "order");
	CHECK(al_allocate(t, 2, 32, AL_IMPORTANCE, 0.5, r) == -EINVAL, "spread < 1");
	CHECK(al_allocate(t, 2, 32, AL_IMPORTANCE, -1, r) == -EINVAL, "spread < 0");
	CHECK(al_allocate(t, 2, 32, AL_IMPORTANCE, NAN, r) == -EINVAL, "spread NaN");
	t[1].score = INFINITY;
	CHECK(al_allocate(t, 2, 32, AL_IMPORTANCE, 0, r) == -EINVAL, "score inf");
	t[1].score = 0.2;
	t[0].bytes = 0;
	CHECK(al_allocate(t, 2, 32, AL_IMPORTANCE, 0, r) == -EINVAL, "empty tensor");

	float w[4] = {1, 2, 3, 4};
	double s = -1;
	CHECK(al_zd_score(NULL, NULL, 4, DT_F32, &s) == -EINVAL, "w NULL");
	CHECK(al_zd_score(w, NULL, 4, DT_F32, NULL) == -EINVAL, "score NULL");
	CHECK(al_zd_score(w, NULL, 0, DT_F32, &s) == -EINVAL, "n 0");
	CHECK(al_zd_score(w, NULL, 4, DT_I32, &s) == -EINVAL, "int dtype");
	CHECK(al_zd_score(w, NULL, 4, DT_F64, &s) == -EINVAL, "F64");
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
		{"budget", t_budget}, {"order", t_order}, {"uniform", t_uniform}, {"clamp", t_clamp},
		{"einval", t_einval}, {"zd", t_zd},       {"match", t_match},
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
