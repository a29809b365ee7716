/*
 * bench_decode.c -- the cost of decoding one chunk, per codec path, on a fixed input: in
 * instructions (under callgrind, which machine noise does not move) and in MB/s of one core.
 *
 *   bench_decode [--reps N] PATH...     PATH: base | delta | dq16 ... dq128 | lr16 ... lr128 | all
 *                                        (default all)
 *   valgrind --tool=callgrind --collect-atstart=no --toggle-collect=bd_decode bench_decode PATH
 *
 * Input: one 256 KiB BF16 chunk (256 rows x 512 columns, the store's chunk for such a matrix):
 * base weights normal(0, 0.02), fine-tune = base + normal(0, 0.0002 * rowscale) (rowscale log-
 * normal per row), both rounded to nearest even, from a fixed xorshift seed, so every run and
 * machine decodes the same blobs. Paths: "base" the lossless codec without a base (a base
 * checkpoint's chunk), "delta" lossless against the base (a lossless fine-tune), "dq16" to "dq128"
 * DeltaDQ planned for 16x, 32x, 64x and 128x (no probes), "lr16" to "lr128" the low-rank codec at
 * the same ratios (one chunk: the factors inline). Each path decodes its blob N times inside
 * bd_decode, the function callgrind is told to count, so the Ir it reports over N * 256 KiB is the
 * decode's instructions per output byte, set-up excluded. tests/bench/run.sh runs both ways.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "deltadq.h"
#include "dtype.h"
#include "half.h"
#include "lossless.h"
#include "lowrank.h"

#define BD_ROWS 256
#define BD_COLS 512
#define BD_N (BD_ROWS * BD_COLS * 2)

static uint64_t bd_state = 0x9E3779B97F4A7C15ull;

static double bd_uniform(void)
{
	bd_state ^= bd_state << 13;
	bd_state ^= bd_state >> 7;
	bd_state ^= bd_state << 17;
	return ((bd_state >> 11) + 0.5) * 0x1p-53;
}

static double bd_normal(void)
{
	return sqrt(-2 * log(bd_uniform())) * cos(6.283185307179586 * bd_uniform());
}

/* Kept out of line and named for callgrind's --toggle-collect. Returns the first error. */
__attribute__((noinline)) int bd_decode(cx_ctx *cx, uint8_t *out, const uint8_t *blob, size_t blen,
					const uint8_t *base, unsigned reps);
__attribute__((noinline)) int bd_decode(cx_ctx *cx, uint8_t *out, const uint8_t *blob, size_t blen,
					const uint8_t *base, unsigned reps)
{
	for (unsigned i = 0; i < reps; i++) {
		int rc = cx_decode(cx, out, BD_N, blob, blen, base);
		if (rc)
			return rc;
	}
	return 0;
}

static double bd_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	unsigned reps = 50;
	int a = 1;
	if (a + 1 < argc && !strcmp(argv[a], "--reps"))
		reps = (unsigned)atoi(argv[a + 1]), a += 2;
	static const char *all[] = {"base", "delta", "dq16", "dq32", "dq64", "dq128",
				    "lr16", "lr32", "lr64", "lr128"};
	const char **paths = argc > a && strcmp(argv[a], "all") ? (const char **)argv + a : all;
	int npaths = argc > a && strcmp(argv[a], "all") ? argc - a : 10;

	uint16_t *base = malloc(BD_N), *ft = malloc(BD_N);
	uint8_t *out = malloc(BD_N), *blob = malloc(ll_bound(BD_N) + dq_bound(BD_ROWS, BD_COLS, 2));
	cx_ctx *cx = cx_ctx_new();
	if (!base || !ft || !out || !blob || !cx || !reps) {
		fprintf(stderr, "bench_decode: out of memory (or --reps 0)\n");
		return 1;
	}
	for (size_t r = 0; r < BD_ROWS; r++) {
		double rowscale = exp(0.5 * bd_normal());
		for (size_t c = 0; c < BD_COLS; c++) {
			float w = (float)(0.02 * bd_normal());
			base[r * BD_COLS + c] = hf_f32_to_bf16(w);
			w = hf_bf16_to_f32(base[r * BD_COLS + c]);
			ft[r * BD_COLS + c] = hf_f32_to_bf16(w + (float)(0.0002 * rowscale * bd_normal()));
		}
	}
	printf("| path | blob bytes | ratio | plan | decode MB/s (1 core, best of 5 x %u) |\n", reps);
	printf("|---|---|---|---|---|\n");
	for (int i = 0; i < npaths; i++) {
		const char *p = paths[i];
		const uint8_t *want = (const uint8_t *)ft, *with = (const uint8_t *)base;
		ssize_t blen;
		if (!strcmp(p, "base")) {
			want = (const uint8_t *)base;
			with = NULL;
			blen = ll_encode(cx, blob, ll_bound(BD_N), base, BD_N, 2, NULL, 1);
		} else if (!strcmp(p, "delta")) {
			blen = ll_encode(cx, blob, ll_bound(BD_N), ft, BD_N, 2, base, 1);
		} else if (!strcmp(p, "dq16") || !strcmp(p, "dq32") || !strcmp(p, "dq64") ||
			   !strcmp(p, "dq128")) {
			dq_params q;
			dq_stats st;
			int rc = dq_plan(cx, ft, base, DT_BF16, BD_ROWS, BD_COLS, NULL, 0,
					 atof(p + 2), NULL, &q, &st);
			blen = rc && rc != -ERANGE ? rc : dq_encode(cx, blob, dq_bound(BD_ROWS, BD_COLS, 2),
							       ft, base, DT_BF16, BD_COLS, 0,
							       BD_ROWS, &q);
		} else if (!strcmp(p, "lr16") || !strcmp(p, "lr32") || !strcmp(p, "lr64") ||
			   !strcmp(p, "lr128")) {
			lr_blobs lb;
			lr_stats ls;
			int rc = lr_plan(cx, ft, base, DT_BF16, BD_ROWS, BD_COLS, BD_ROWS, NULL, NULL, 0,
					 BD_N / atof(p + 2), LR_ALONE, 1, &lb, &ls);
			blen = rc ? rc : (ssize_t)lb.len[0];
			if (!rc) {
				memcpy(blob, lb.buf, lb.len[0]);
				lr_blobs_free(&lb);
			}
		} else {
			fprintf(stderr, "bench_decode: unknown path %s (base, delta, dq16 ... dq128, lr16 ... "
				"lr128, all)\n", p);
			return 2;
		}
		if (blen <= 0) {
			fprintf(stderr, "bench_decode: %s: encode failed: %s\n", p, strerror((int)-blen));
			return 1;
		}
		double best = INFINITY;
		for (int t = 0; t < 5; t++) {
			double t0 = bd_now();
			int rc = bd_decode(cx, out, blob, (size_t)blen, with, reps);
			double dt = bd_now() - t0;
			if (rc) {
				fprintf(stderr, "bench_decode: %s: decode failed: %s\n", p, strerror(-rc));
				return 1;
			}
			best = dt < best ? dt : best;
		}
		int lossy = !strncmp(p, "dq", 2) || !strncmp(p, "lr", 2);
		if (!lossy && memcmp(out, want, BD_N)) { /* the lossless paths */
			fprintf(stderr, "bench_decode: %s: decoded bytes differ\n", p);
			return 1;
		}
		char plan[64] = "-";
		dq_params q;
		if (!strncmp(p, "dq", 2) && !dq_blob_params(blob, (size_t)blen, &q))
			snprintf(plan, sizeof plan, "keep %u/%u, %u bits", q.keep, q.group, q.bits);
		uint32_t rank, bands[LR_MAXBITS + 1];
		if (!strncmp(p, "lr", 2) && !lr_blob_bands(blob, (size_t)blen, NULL, 0, &rank, bands))
			snprintf(plan, sizeof plan, "rank %u", rank);
		printf("| %s | %zd | %.2fx | %s | %.0f |\n", p, blen, (double)BD_N / (double)blen, plan,
		       (double)reps * BD_N / best / 1e6);
	}
	cx_ctx_free(cx);
	free(base);
	free(ft);
	free(out);
	free(blob);
	return 0;
}
