/*
 * fuzz_codec.c -- libFuzzer target for the decoders behind cx_decode.
 *
 * Input byte 0 chooses what the rest is:
 *   bit 0 = 0  a blob, decoded as-is for n = the n its header claims (when that is small; else
 *              a size of the fuzzer's choosing), with a base and without one;
 *   bit 0 = 1  chunk bytes: encoded (bits 1-2: log2 esize; bit 3: against a base derived from the
 *              input), checked to round-trip exactly, then the blob is damaged (a byte changed and
 *              a truncation, both chosen by the input) and decoded again.
 * Random bytes almost never form a zstd frame, so the second form is what gets the fuzzer deep into
 * zstd's decoder and the plane merge with near-valid blobs. Every buffer is malloc'd to its exact
 * size, so ASan sees any read or write past it. Besides "no crash", decode results must be 0,
 * -EBADMSG, or -EINVAL (a delta with no base); anything else traps.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "lossless.h"

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
	if (ctl >> 4) {
		size_t at = (ctl >> 4) * 131u % (size_t)blen;
		uint8_t *cut;

		blob[at] ^= (uint8_t)(src[at % (n ? n : 1)] | 1);
		fuzz_decode(blob, (size_t)blen, n, base);
		/* and the damaged blob truncated to an exactly sized copy */
		cut = malloc(at ? at : 1);
		fuzz_check(cut != NULL);
		memcpy(cut, blob, at);
		fuzz_check(fuzz_decode(cut, at, n, base) != 0);
		free(cut);
	}
	free(base);
	free(blob);
	free(out);
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
	else
		fuzz_blob(copy, size - 1);
	free(copy);
	return 0;
}
