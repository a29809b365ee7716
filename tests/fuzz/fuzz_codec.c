/*
 * fuzz_codec.c -- libFuzzer target for the decoders behind cx_decode.
 *
 * Input byte 0 chooses what the rest is:
 *   bit 0 = 1  chunk bytes: encoded lossless (bits 1-2: log2 esize; bit 3: against a base derived
 *              from the input), checked to round-trip exactly, then the blob is damaged (a byte
 *              changed and a truncation, both chosen by the input) and decoded again;
 *   bits 0-2 = 110  a matrix encoded by a lossy codec (DeltaDQ, low-rank, palette or SPP, with parameters
 *              taken from the next bytes: fuzz_lossy says how), decoded twice (the same bytes
 *              both times), then damaged and truncated as above and decoded again;
 *   otherwise  a blob, decoded as-is for n = the n its header claims (when that is small; else
 *              a size of the fuzzer's choosing), with a base and without one.
 * Random bytes almost never form a zstd frame or a consistent lossy header, so the round trips
 * are what get the fuzzer deep into zstd's decoder, the plane merges, DeltaDQ's level tables and
 * dropout, the low-rank factor planes and hybrid residuals, the palette unpacking and SPP's support walk with near-valid blobs. Every buffer is malloc'd to its exact
 * size, so ASan sees any read or write past it. Besides "no crash", decode results must be 0,
 * -EBADMSG, or -EINVAL (a delta with no base); anything else traps.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "deltadq.h"
#include "dtype.h"
#include "lossless.h"
#include "lowrank.h"
#include "palette.h"
#include "spp.h"

#define FUZZ_MAX_N (256 * 1024)

static cx_ctx *ctx;

static void fuzz_check(int ok)
{
	if (!ok)
		__builtin_trap();
}

static uint8_t *fuzz_base(size_t n, const uint8_t *like, size_t like_n)
{
	uint8_t *b = malloc(n ? n : 1);

	fuzz_check(b != NULL);
	for (size_t i = 0; i < n; i++)
		b[i] = (i < like_n ? like[i] : 0) ^ (uint8_t)((i * 7) & 3);
	return b;
}

static int fuzz_decode(const uint8_t *blob, size_t blen, size_t n, const uint8_t *base)
{
	uint8_t *out = malloc(n ? n : 1);
	int rc;

	fuzz_check(out != NULL);
	rc = cx_decode(ctx, out, n, blob, blen, base);
	fuzz_check(rc == 0 || rc == -EBADMSG || (rc == -EINVAL && !base));
	free(out);
	return rc;
}

static void fuzz_blob(const uint8_t *blob, size_t blen)
{
	size_t n = blen * 3 % 4096;
	uint8_t *base;

	if (blen >= LL_HDR) {
		uint64_t hn;

		memcpy(&hn, blob + 8, 8);
		if (hn <= FUZZ_MAX_N)
			n = (size_t)hn;
	}
	/* Copies of exactly blen bytes: libFuzzer's own buffer may sit inside a larger mapping. */
	base = fuzz_base(n, blob, blen);
	fuzz_decode(blob, blen, n, base);
	fuzz_decode(blob, blen, n, NULL);
	(void)cx_needs_base(blob, blen);
	(void)cx_blob_codec(blob, blen);
	free(base);
}

/* Damage blob (blen bytes, decodes to n bytes against base): change the byte the input chose,
 * decode; then decode a truncated copy, which must fail. */
static void fuzz_damage(uint8_t *blob, size_t blen, size_t n, const uint8_t *base, unsigned at_sel,
			uint8_t mask)
{
	size_t at = at_sel * 131u % blen;
	uint8_t *cut;

	blob[at] ^= mask | 1;
	fuzz_decode(blob, blen, n, base);
	blob[at] ^= mask | 1;
	cut = malloc(at ? at : 1);
	fuzz_check(cut != NULL);
	memcpy(cut, blob, at);
	fuzz_check(fuzz_decode(cut, at, n, base) != 0);
	free(cut);
}

static void fuzz_roundtrip(uint8_t ctl, const uint8_t *src, size_t size)
{
	unsigned es = 1u << ((ctl >> 1) & 3);
	size_t n = size / es * es, cap = ll_bound(n);
	uint8_t *base = (ctl & 8) ? fuzz_base(n, src, n) : NULL;
	uint8_t *blob = malloc(cap), *out = malloc(n ? n : 1);
	ssize_t blen;

	fuzz_check(blob && out);
	blen = ll_encode(ctx, blob, cap, src, n, es, base, 1);
	fuzz_check(blen >= LL_HDR && (size_t)blen <= cap);
	fuzz_check(cx_decode(ctx, out, n, blob, (size_t)blen, base) == 0);
	fuzz_check(n == 0 || memcmp(out, src, n) == 0);
	if (ctl >> 4 && blen > 0)
		fuzz_damage(blob, (size_t)blen, n, base, ctl >> 4, n ? src[0] : 0);
	free(base);
	free(blob);
	free(out);
}

/* Lossy round trip. p[0]: codec (0-1 DeltaDQ, 2 palette, 3 SPP; 0 with p[2] >= 0xc0: low-rank
 * in one chunk, alone or, p[3] odd, a hybrid with its DeltaDQ residual) in bits 0-1, dtype (BF16, F16,
 * F32, BF16) in bits 2-3, rows - 1 in bits 4-7; p[1]: cols - 1 (cols 1..64 by the low 6 bits);
 * p[2..7]: the codec's parameters; p[8]: where to damage; then the matrix's bytes (zero-padded).
 * Values that are not finite are made finite (the encoders refuse them, ingest stores such a
 * tensor lossless). The base is the matrix with some bytes changed and some elements zeroed, so
 * that deltas are small and SPP has a support. */
static void fuzz_lossy(const uint8_t *p, size_t size)
{
	static const dt_id dts[4] = {DT_BF16, DT_F16, DT_F32, DT_BF16};
	if (size < 10)
		return;
	dt_id dt = dts[(p[0] >> 2) & 3];
	unsigned es = dt_size(dt), codec = p[0] & 3;
	size_t rows = 1 + (p[0] >> 4), cols = 1 + (p[1] & 63), ne = rows * cols, n = ne * es;
	uint8_t *ft = calloc(1, n), *base = malloc(n), *out = malloc(n), *out2 = malloc(n), *blob;
	fuzz_check(ft && base && out && out2);
	memcpy(ft, p + 9, size - 9 < n ? size - 9 : n);
	for (size_t i = 0; i < ne; i++) {
		uint8_t *hi = ft + i * es + es - 1; /* the sign+exponent byte (little-endian) */
		unsigned expo_mask = dt == DT_F16 ? 0x7c : 0x7f;
		if ((*hi & expo_mask) == expo_mask)
			*hi ^= 0x40;
	}
	memcpy(base, ft, n);
	for (size_t i = 0; i < ne; i++) {
		if (p[9 + i % (size - 9)] % 5 == 0)
			memset(base + i * es, 0, es);
		else
			base[i * es + (es > 2 ? 1 : 0)] ^= (uint8_t)(i * 37);
	}
	ssize_t blen = -1;
	size_t cap = 0;
	if (codec == 0 && p[2] >= 0xc0) {
		static const double fr[2] = {1, 0.5};
		lr_blobs lb;
		lr_stats ls;
		int rc = lr_plan(ctx, ft, base, dt, rows, cols, rows, NULL, NULL, 0,
				 (double)n / (2 + p[4] % 64), fr + (p[3] & 1), 1, &lb, &ls);
		fuzz_check(rc == 0 || rc == -EDOM || rc == -ERANGE);
		cap = rc ? 1 : lb.len[0];
		blob = malloc(cap);
		fuzz_check(blob != NULL);
		if (!rc) {
			memcpy(blob, lb.buf, cap);
			blen = (ssize_t)cap;
			lr_blobs_free(&lb);
		}
	} else if (codec <= 1) {
		dq_params q = {0};
		q.group = 1 + p[2] % 64;
		q.keep = 1 + p[3] % q.group;
		q.bits = (uint8_t)(1 + p[4] % 16);
		q.quant = (uint8_t)(1 + (p[4] >> 4) % 3);
		if (q.quant == DQ_Q_KMEANS && q.bits > 8)
			q.bits = 8;
		if (q.quant == DQ_Q_ZERO && q.bits < 2)
			q.bits = 2;
		q.split = (uint8_t)(p[5] % (q.bits + 1u));
		q.rescale = (uint8_t)(1 + p[5] / 86);
		q.srows = 1 + p[6] % rows;
		q.seed = p[7];
		q.support = codec == 1;
		cap = dq_bound(rows, cols, es);
		blob = malloc(cap);
		fuzz_check(blob != NULL);
		blen = dq_encode(ctx, blob, cap, ft, base, dt, cols, 0, rows, &q);
		fuzz_check(blen > 0 || blen == -EINVAL || blen == -EDOM);
	} else if (codec == 2) {
		pal_table t;
		unsigned bits = 1 + p[2] % 8;
		cap = pal_bound(n, dt, bits);
		blob = malloc(cap);
		fuzz_check(blob != NULL);
		int rc = pal_fit(ft, n, dt, bits, &t);
		fuzz_check(rc == 0 || rc == -EDOM);
		if (!rc)
			blen = pal_encode(ctx, blob, cap, ft, n, dt, &t, 1);
		fuzz_check(rc || blen > 0);
	} else {
		cap = spp_bound(n, es);
		blob = malloc(cap);
		fuzz_check(blob != NULL);
		blen = spp_encode(ctx, blob, cap, ft, base, n, es, 1);
		fuzz_check(blen > 0);
	}
	if (blen > 0) {
		fuzz_check((size_t)blen <= cap);
		fuzz_check(cx_decode(ctx, out, n, blob, (size_t)blen, base) == 0);
		memset(out2, 0xa5, n);
		fuzz_check(cx_decode(ctx, out2, n, blob, (size_t)blen, base) == 0);
		fuzz_check(memcmp(out, out2, n) == 0);
		if (codec == 3)
			fuzz_check(memcmp(out, ft, n) == 0); /* SPP is lossless */
		fuzz_damage(blob, (size_t)blen, n, base, p[8], p[2]);
	}
	free(blob);
	free(ft);
	free(base);
	free(out);
	free(out2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy;

	if (size < 1 || size - 1 > FUZZ_MAX_N)
		return 0;
	if (!ctx) {
		ctx = cx_ctx_new(); /* kept for the whole run, as a reader thread keeps its own */
		fuzz_check(ctx != NULL);
	}
	copy = malloc(size - 1 ? size - 1 : 1);
	fuzz_check(copy != NULL);
	memcpy(copy, data + 1, size - 1);
	if (data[0] & 1)
		fuzz_roundtrip(data[0], copy, size - 1);
	else if ((data[0] & 7) == 6)
		fuzz_lossy(copy, size - 1);
	else
		fuzz_blob(copy, size - 1);
	free(copy);
	return 0;
}
