/*
 * test_lowrank.c -- unit tests of the low-rank codec (codec/lowrank.h).
 *
 * One program, one case per argv[1]. The data: a base of N(0, 1) weights and a fine-tune adding a
 * rank-r delta (a merged LoRA) plus dense noise of a chosen size, in every dtype the codec takes.
 * The cases check what would break if the codec were wrong: the bytes stay within the target,
 * decode is what the planner measured, a low-rank delta comes back almost exactly, input weights
 * move the error where they say, and hostile blobs are refused without a crash.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "half.h"
#include "lowrank.h"

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);      \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

static uint64_t rng_s = 0x2545f491;

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

static unsigned esz(dt_id dt)
{
	return dt == DT_F32 ? 4 : 2;
}

static void st(dt_id dt, uint8_t *p, size_t i, float v)
{
	hf_store(dt, p, i, v);
}

typedef struct pair {
	dt_id dt;
	size_t rows, cols;
	uint8_t *base, *ft;
} pair;

/* base ~ N(0, 1); ft = base + 0.05 (B A / sqrt(r) + noise * N(0, 1)) */
static pair mkpair(dt_id dt, size_t rows, size_t cols, size_t r, double noise)
{
	pair p = {dt, rows, cols, malloc(rows * cols * esz(dt)), malloc(rows * cols * esz(dt))};
	double *B = malloc(rows * r * sizeof *B), *A = malloc(r * cols * sizeof *A);

	CHECK(p.base && p.ft && B && A);
	for (size_t i = 0; i < rows * r; i++)
		B[i] = grand();
	for (size_t i = 0; i < r * cols; i++)
		A[i] = grand();
	for (size_t i = 0; i < rows; i++)
		for (size_t j = 0; j < cols; j++) {
			double b = grand(), d = noise * grand();
			for (size_t k = 0; k < r; k++)
				d += B[i * r + k] * A[k * cols + j] / sqrt((double)r);
			st(dt, p.base, i * cols + j, (float)b);
			st(dt, p.ft, i * cols + j, (float)(hf_load(dt, p.base, i * cols + j) + 0.05 * d));
		}
	free(B);
	free(A);
	return p;
}

static void freepair(pair *p)
{
	free(p->base);
	free(p->ft);
}

static size_t crow_of(const pair *p, size_t chunk_bytes)
{
	size_t c = chunk_bytes / (p->cols * esz(p->dt));
	return c ? c : 1;
}

/* Decode every chunk of b into out (rows * cols elements). */
static int decode_all(cx_ctx *cx, const pair *p, const lr_blobs *b, size_t crow, uint8_t *out)
{
	const uint8_t *fb = b->nchunks > 1 ? b->buf + b->off[b->nchunks] : NULL;
	size_t fl = b->nchunks > 1 ? b->len[b->nchunks] : 0, rb = p->cols * esz(p->dt);

	for (size_t c = 0; c < b->nchunks; c++) {
		size_t r0 = c * crow, nr = r0 + crow > p->rows ? p->rows - r0 : crow;
		int rc = cx_decode_shared(cx, out + r0 * rb, nr * rb, b->buf + b->off[c], b->len[c],
					  p->base + r0 * rb, fb, fl);
		if (rc)
			return rc;
	}
	return 0;
}

static double rel_err(const pair *p, const uint8_t *rec)
{
	double num = 0, den = 0;

	for (size_t i = 0; i < p->rows * p->cols; i++) {
		double f = hf_load(p->dt, p->ft, i), o = hf_load(p->dt, p->base, i);
		double r = hf_load(p->dt, rec, i);
		num += (f - r) * (f - r);
		den += (f - o) * (f - o);
	}
	return sqrt(num / den);
}

static uint64_t total(const lr_blobs *b)
{
	uint64_t t = 0;

	for (size_t i = 0; i < b->nblobs; i++)
		t += b->len[i];
	return t;
}

/* Every dtype, one chunk and many, odd shapes: the bytes fit the target, decode reproduces the
 * planner's measured error exactly, and the error falls as the budget grows. */
static void t_roundtrip(cx_ctx *cx)
{
	const dt_id dts[3] = {DT_F32, DT_F16, DT_BF16};
	const size_t shapes[][2] = {{64, 64}, {300, 97}, {37, 256}, {1, 512}, {513, 3}};

	for (int d = 0; d < 3; d++)
		for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
			pair p = mkpair(dts[d], shapes[s][0], shapes[s][1], 4, 0.2);
			size_t n = p.rows * p.cols * esz(p.dt), crow = crow_of(&p, 8192);
			uint8_t *rec = malloc(n);
			double last = 2;
			CHECK(rec);
			for (double R = 64; R >= 8; R /= 2) {
				lr_blobs b;
				lr_stats stt;
				int rc = lr_plan(cx, p.ft, p.base, p.dt, p.rows, p.cols, crow, NULL, NULL,
						 0, n / R, LR_ALONE, 1, &b, &stt);
				if (rc == -ERANGE)
					continue; /* too small for one component at this ratio */
				CHECK(rc == 0);
				CHECK(total(&b) == stt.bytes && stt.bytes <= n / R);
				CHECK(b.nchunks == (p.rows + crow - 1) / crow);
				CHECK(b.nblobs == b.nchunks + (b.nchunks > 1));
				CHECK(stt.rank >= 1);
				CHECK(decode_all(cx, &p, &b, crow, rec) == 0);
				CHECK(fabs(rel_err(&p, rec) - stt.delta_rel_err) < 1e-9);
				CHECK(stt.delta_rel_err < 1 && stt.delta_rel_err <= last + 1e-3);
				last = stt.delta_rel_err;
				lr_blobs_free(&b);
			}
			CHECK(last < 1);
			free(rec);
			freepair(&p);
		}
}

/* A merged LoRA of rank 8 (plus 1% noise) in F32 at 128x: almost exact, where an i.i.d. delta
 * at 0.25 bits per weight could not get below 2^-0.25 = 0.84 of its norm. */
static void t_lora(cx_ctx *cx)
{
	pair p = mkpair(DT_F32, 512, 512, 8, 0.01);
	size_t n = p.rows * p.cols * 4, crow = crow_of(&p, 256 << 10);
	lr_blobs b;
	lr_stats s;

	CHECK(lr_plan(cx, p.ft, p.base, p.dt, p.rows, p.cols, crow, NULL, NULL, 0, n / 128.0, LR_ALONE, 1, &b,
		      &s) == 0);
	printf("lora 512x512 rank 8 at 128x: %llu bytes, rank %u, delta error %.4f\n",
	       (unsigned long long)s.bytes, s.rank, s.delta_rel_err);
	CHECK(s.rank >= 8 && s.delta_rel_err < 0.05);
	lr_blobs_free(&b);
	freepair(&p);
}

/* A large matrix goes through the randomized range finder: same quality as above. */
static void t_randomized(cx_ctx *cx)
{
	pair p = mkpair(DT_BF16, 1024, 1536, 6, 0.01);
	size_t n = p.rows * p.cols * 2, crow = crow_of(&p, 256 << 10);
	uint8_t *rec = malloc(n);
	lr_blobs b;
	lr_stats s;

	CHECK(rec);
	CHECK(lr_plan(cx, p.ft, p.base, p.dt, p.rows, p.cols, crow, NULL, NULL, 0, n / 64.0, LR_ALONE, 1, &b,
		      &s) == 0);
	printf("bf16 1024x1536 rank 6 at 64x: %llu bytes in %zu blobs, rank %u, delta error %.4f\n",
	       (unsigned long long)s.bytes, b.nblobs, s.rank, s.delta_rel_err);
	CHECK(b.nchunks > 1 && s.rank >= 6 && s.delta_rel_err < 0.1);
	CHECK(decode_all(cx, &p, &b, crow, rec) == 0);
	CHECK(fabs(rel_err(&p, rec) - s.delta_rel_err) < 1e-9);
	lr_blobs_free(&b);
	free(rec);
	freepair(&p);
}

/* Input weights: with half the input channels weighted 10x, the weighted plan errs less on them
 * than the unweighted plan at the same bytes. */
static void t_weights(cx_ctx *cx)
{
	pair p = mkpair(DT_F32, 128, 128, 64, 0.5);
	size_t n = p.rows * p.cols * 4;
	float w[128];
	double e[2];

	for (int j = 0; j < 128; j++)
		w[j] = j < 64 ? 10 : 1;
	for (int k = 0; k < 2; k++) {
		lr_blobs b;
		lr_stats s;
		uint8_t *rec = malloc(n);
		CHECK(rec);
		CHECK(lr_plan(cx, p.ft, p.base, p.dt, p.rows, p.cols, 128, k ? w : NULL, NULL, 0,
			      n / 16.0, LR_ALONE, 1, &b, &s) == 0);
		CHECK(decode_all(cx, &p, &b, 128, rec) == 0);
		double num = 0;
		for (size_t i = 0; i < 128; i++)
			for (size_t j = 0; j < 64; j++) {
				double d = hf_load(p.dt, p.ft, i * 128 + j) - hf_load(p.dt, rec, i * 128 + j);
				num += d * d;
			}
		e[k] = num;
		lr_blobs_free(&b);
		free(rec);
	}
	printf("weighted channels' error: unweighted plan %.4g, weighted plan %.4g\n", e[0], e[1]);
	CHECK(e[1] < 0.8 * e[0]);
	freepair(&p);
}

/* What the codec refuses: non-finite values, a zero delta, a budget below one component. */
static void t_refuse(cx_ctx *cx)
{
	pair p = mkpair(DT_F16, 16, 16, 2, 0.1);
	lr_blobs b;
	lr_stats s;

	CHECK(lr_plan(cx, p.ft, p.ft, p.dt, 16, 16, 16, NULL, NULL, 0, 64, LR_ALONE, 1, &b, &s) == -EDOM);
	CHECK(lr_plan(cx, p.ft, p.base, p.dt, 16, 16, 16, NULL, NULL, 0, 4, LR_ALONE, 1, &b, &s) == -ERANGE);
	st(p.dt, p.ft, 5, NAN);
	CHECK(lr_plan(cx, p.ft, p.base, p.dt, 16, 16, 16, NULL, NULL, 0, 64, LR_ALONE, 1, &b, &s) == -EDOM);
	st(p.dt, p.ft, 5, INFINITY);
	CHECK(lr_plan(cx, p.ft, p.base, p.dt, 16, 16, 16, NULL, NULL, 0, 64, LR_ALONE, 1, &b, &s) == -EDOM);
	CHECK(lr_plan(cx, p.ft, p.base, DT_I32, 16, 16, 16, NULL, NULL, 0, 64, LR_ALONE, 1, &b, &s) == -EINVAL);
	CHECK(lr_plan(cx, p.ft, p.base, p.dt, 0, 16, 16, NULL, NULL, 0, 64, LR_ALONE, 1, &b, &s) == -EDOM);
	freepair(&p);
}

/* Base bits where nothing is added: a -0.0 of the base stays -0.0; decode is deterministic. */
static void t_zero_sign(cx_ctx *cx)
{
	pair p = mkpair(DT_BF16, 8, 64, 1, 0);
	size_t n = 8 * 64 * 2;
	uint8_t *rec = malloc(n), *rec2 = malloc(n);
	lr_blobs b;
	lr_stats s;

	CHECK(rec && rec2);
	/* column 0 of the delta is zero and the base there -0.0 */
	for (size_t i = 0; i < 8; i++) {
		st(p.dt, p.base, i * 64, -0.0f);
		st(p.dt, p.ft, i * 64, -0.0f);
	}
	CHECK(lr_plan(cx, p.ft, p.base, p.dt, 8, 64, 8, NULL, NULL, 0, n / 8.0, LR_ALONE, 1, &b, &s) == 0);
	CHECK(decode_all(cx, &p, &b, 8, rec) == 0);
	CHECK(decode_all(cx, &p, &b, 8, rec2) == 0);
	CHECK(!memcmp(rec, rec2, n));
	lr_blobs_free(&b);
	free(rec);
	free(rec2);
	freepair(&p);
}

/* Hostile blobs: every truncation and single-byte change of a chunk blob and of a factor blob,
 * swapped and missing factor blobs, are refused or decode to something, never out of bounds
 * (the ASan build checks that); a header that lies about its shape is -EBADMSG. */
static void t_hostile(cx_ctx *cx)
{
	pair p = mkpair(DT_F16, 40, 48, 3, 0.1);
	size_t n = 40 * 48 * 2, crow = 10, rb = 48 * 2;
	uint8_t *out = malloc(n);
	lr_blobs b, one;
	lr_stats s, s1;

	CHECK(out);
	CHECK(lr_plan(cx, p.ft, p.base, p.dt, 40, 48, crow, NULL, NULL, 0, n / 8.0, LR_ALONE, 1, &b, &s) == 0);
	CHECK(lr_plan(cx, p.ft, p.base, p.dt, 40, 48, 40, NULL, NULL, 0, n / 8.0, LR_ALONE, 1, &one, &s1) == 0);
	CHECK(b.nchunks == 4 && one.nchunks == 1);
	const uint8_t *c0 = b.buf + b.off[0], *fb = b.buf + b.off[4], *in = one.buf;
	size_t l0 = b.len[0], fl = b.len[4], il = one.len[0];

	CHECK(cx_needs_shared(c0, l0) == 1 && cx_needs_shared(in, il) == 0);
	CHECK(cx_needs_base(c0, l0) == 1);
	CHECK(cx_decode_shared(cx, out, crow * rb, c0, l0, p.base, NULL, 0) == -EBADMSG);
	CHECK(cx_decode_shared(cx, out, crow * rb, c0, l0, p.base, c0, l0) == -EBADMSG);
	CHECK(cx_decode_shared(cx, out, crow * rb, fb, fl, p.base, fb, fl) == -EBADMSG);
	CHECK(cx_decode_shared(cx, out, crow * rb, c0, l0, p.base, fb, fl) == 0);
	CHECK(cx_decode_shared(cx, out, crow * rb + 2, c0, l0, p.base, fb, fl) == -EBADMSG);
	CHECK(cx_decode_shared(cx, out, 2 * crow * rb, c0, l0, p.base, fb, fl) == -EBADMSG);
	CHECK(cx_decode(cx, out, n, in, il, p.base) == 0);
	CHECK(cx_decode(cx, out, n, in, il, NULL) == -EINVAL);
	CHECK(cx_decode(cx, out, n - rb, in, il, p.base) == -EBADMSG);

	uint8_t *m = malloc(il > fl ? il : fl > l0 ? fl : l0);
	CHECK(m);
	for (size_t k = 0; k < il; k++) {
		CHECK(cx_decode(cx, out, n, in, k, p.base) < 0);
		memcpy(m, in, il);
		m[k] ^= (uint8_t)(1 + k % 255);
		int rc = cx_decode(cx, out, n, m, il, p.base);
		CHECK(rc == 0 || rc == -EBADMSG);
	}
	for (size_t k = 0; k < fl; k++) {
		CHECK(cx_decode_shared(cx, out, crow * rb, c0, l0, p.base, fb, k) < 0);
		memcpy(m, fb, fl);
		m[k] ^= (uint8_t)(1 + k % 255);
		int rc = cx_decode_shared(cx, out, crow * rb, c0, l0, p.base, m, fl);
		CHECK(rc == 0 || rc == -EBADMSG);
	}
	for (size_t k = 0; k < l0; k++) {
		CHECK(cx_decode_shared(cx, out, crow * rb, c0, k, p.base, fb, fl) < 0);
		memcpy(m, c0, l0);
		m[k] ^= (uint8_t)(1 + k % 255);
		int rc = cx_decode_shared(cx, out, crow * rb, m, l0, p.base, fb, fl);
		CHECK(rc == 0 || rc == -EBADMSG);
	}
	uint32_t rank, bands[LR_MAXBITS + 1];
	CHECK(lr_blob_bands(c0, l0, fb, fl, &rank, bands) == 0 && rank == s.rank);
	CHECK(lr_blob_bands(c0, l0, NULL, 0, &rank, bands) == -EBADMSG);
	free(m);
	free(out);
	lr_blobs_free(&b);
	lr_blobs_free(&one);
	freepair(&p);
}

/* Hybrids: a rank-4 delta under dense noise, the low-rank part in half the bytes and DeltaDQ of
 * the rest: blobs within DeltaDQ's 10% of the target, decode equal to what was measured, with
 * one chunk and many, and damaged hybrid blobs refused. */
static void t_hybrid(cx_ctx *cx)
{
	static const double half[] = {0.5};
	for (int multi = 0; multi < 2; multi++) {
		pair p = mkpair(DT_BF16, 96, 80, 4, 0.5);
		size_t n = 96 * 80 * 2, crow = multi ? 16 : 96, rb = 80 * 2;
		uint8_t *rec = malloc(n), *m = malloc(n);
		lr_blobs b;
		lr_stats s;
		CHECK(rec && m);
		CHECK(lr_plan(cx, p.ft, p.base, p.dt, 96, 80, crow, NULL, NULL, 0, n / 16.0, half, 1,
			      &b, &s) == 0);
		printf("hybrid %zu chunks: %llu bytes (target %zu), rank %u, residual keep %u/%u "
		       "bits %u, delta error %.4f\n", b.nchunks, (unsigned long long)s.bytes, n / 16,
		       s.rank, s.resid.keep, s.resid.group, s.resid.bits, s.delta_rel_err);
		CHECK(s.hybrid && s.frac == 0.5 && s.bytes <= 1.1 * n / 16);
		CHECK(decode_all(cx, &p, &b, crow, rec) == 0);
		CHECK(fabs(rel_err(&p, rec) - s.delta_rel_err) < 1e-9);
		const uint8_t *c0 = b.buf + b.off[0];
		const uint8_t *fb = multi ? b.buf + b.off[b.nchunks] : NULL;
		size_t l0 = b.len[0], fl = multi ? b.len[b.nchunks] : 0;
		CHECK(c0[3] & LR_RESID);
		for (size_t k = 0; k < l0; k++) {
			CHECK(cx_decode_shared(cx, rec, crow * rb, c0, k, p.base, fb, fl) < 0);
			memcpy(m, c0, l0);
			m[k] ^= (uint8_t)(1 + k % 255);
			int rc = cx_decode_shared(cx, rec, crow * rb, m, l0, p.base, fb, fl);
			CHECK(rc == 0 || rc == -EBADMSG);
		}
		lr_blobs_free(&b);
		free(rec);
		free(m);
		freepair(&p);
	}
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(cx_ctx *);
	} cases[] = {
		{"roundtrip", t_roundtrip}, {"lora", t_lora},   {"randomized", t_randomized},
		{"weights", t_weights},     {"refuse", t_refuse}, {"zero_sign", t_zero_sign},
		{"hostile", t_hostile},     {"hybrid", t_hybrid},
	};
	cx_ctx *cx = cx_ctx_new();

	CHECK(cx && argc == 2);
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
		if (!strcmp(argv[1], cases[i].name)) {
			cases[i].fn(cx);
			cx_ctx_free(cx);
			return 0;
		}
	fprintf(stderr, "unknown case %s\n", argv[1]);
	return 2;
}
