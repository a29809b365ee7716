/*
 * test_corrupt.c -- decoders on hostile input: every truncation of a valid blob, every flipped
 * header bit, garbled payloads, a wrong n, a missing base, unknown codec ids. The contract is an
 * error (-EBADMSG for a bad blob, -EINVAL for a missing base), never a crash, and never a write
 * past n: each decode goes into a buffer with guard bytes after it.
 */
#include <errno.h>
#include <string.h>

#include "codec.h"
#include "lossless.h"
#include "testutil.h"

#define GUARD 64

static cx_ctx *ctx;

/* Decode into a fresh buffer with guards; returns the rc after checking the guards. */
static int decode_guarded(const uint8_t *blob, size_t blen, size_t n, const uint8_t *base)
{
	uint8_t *out = t_xmalloc(n + GUARD);
	int rc;

	memset(out, 0x5a, n + GUARD);
	rc = cx_decode(ctx, out, n, blob, blen, base);
	for (size_t i = n; i < n + GUARD; i++)
		CHECK(out[i] == 0x5a, "decode wrote past n (rc=%d)", rc);
	free(out);
	return rc;
}

static void corrupt_one(const uint8_t *blob, size_t blen, size_t n, const uint8_t *base,
			const char *what)
{
	uint8_t *copy = t_xmalloc(blen);
	int mode = blob[3];
	uint64_t seed = 99;

	CHECK(decode_guarded(blob, blen, n, base) == 0, "%s: valid blob fails", what);

	/* Every truncation: a heap copy of exactly len bytes, so reading past it is an ASan error. */
	for (size_t len = 0; len < blen; len++) {
		uint8_t *t = t_xmalloc(len);
		int rc;

		memcpy(t, blob, len);
		rc = decode_guarded(t, len, n, base);
		CHECK(rc == -EBADMSG, "%s: truncated to %zu of %zu: rc=%d", what, len, blen, rc);
		free(t);
	}

	/* Every header bit. Only the mode byte can flip into another valid header (GROUPED, XOR
	 * and SUB share a payload format), and the blob carries no checksum to catch that, so a
	 * flip there must merely not crash (or ask for a base it was not given); any other header
	 * flip is an error. */
	for (size_t i = 0; i < LL_HDR; i++) {
		for (int bit = 0; bit < 8; bit++) {
			int rc;

			memcpy(copy, blob, blen);
			copy[i] ^= (uint8_t)(1 << bit);
			rc = decode_guarded(copy, blen, n, base);
			if (i == 3)
				CHECK(rc == 0 || rc == -EBADMSG || (!base && rc == -EINVAL),
				      "%s: mode flip rc=%d", what, rc);
			else
				CHECK(rc == -EBADMSG, "%s: header byte %zu bit %d: rc=%d", what, i,
				      bit, rc);
		}
	}

	/* Garbled payloads: random bytes and bits anywhere after the header must not crash. */
	for (int trial = 0; trial < 200 && blen > LL_HDR; trial++) {
		int rc;

		memcpy(copy, blob, blen);
		for (int k = 0; k < 1 + trial % 4; k++) {
			size_t at = LL_HDR + t_rand(&seed) % (blen - LL_HDR);

			copy[at] = trial & 1 ? (uint8_t)t_rand(&seed)
					     : copy[at] ^ (uint8_t)(1 << (t_rand(&seed) % 8));
		}
		rc = decode_guarded(copy, blen, n, base);
		CHECK(rc == 0 || rc == -EBADMSG, "%s: garbled payload rc=%d", what, rc);
	}

	/* A wrong n, and trailing bytes after the payload. */
	CHECK(decode_guarded(blob, blen, n + 8, base) == -EBADMSG, "%s: n+8 accepted", what);
	if (n >= 8)
		CHECK(decode_guarded(blob, blen, n - 8, base) == -EBADMSG, "%s: n-8 accepted", what);
	{
		uint8_t *longer = t_xmalloc(blen + 1);

		memcpy(longer, blob, blen);
		longer[blen] = 0;
		CHECK(decode_guarded(longer, blen + 1, n, base) == -EBADMSG, "%s: trailing byte",
		      what);
		free(longer);
	}
	/* A delta without its base is the caller's error, not the blob's. */
	if (mode >= LL_XOR)
		CHECK(decode_guarded(blob, blen, n, NULL) == -EINVAL, "%s: missing base", what);
	free(copy);
}

static void test_blobs(void)
{
	const size_t n = 4096;
	uint8_t *src = t_xmalloc(n), *base = t_xmalloc(n), *blob = t_xmalloc(ll_bound(n));
	uint64_t seed = 3;
	ssize_t blen;
	int seen[4] = { 0 };

	for (int kind = 0; kind < 4; kind++) {
		const uint8_t *b = NULL;

		t_fill_random(base, n, &seed);
		for (size_t i = 0; i < n / 4; i++) {
			uint32_t v;

			memcpy(&v, base + 4 * i, 4);
			switch (kind) {
			case 0: /* random: RAW */
				break;
			case 1: /* small values, no base: GROUPED */
				v = (uint32_t)(t_rand(&seed) % 5);
				break;
			case 2: /* sign flips: XOR */
				v ^= (t_rand(&seed) % 4 == 0) ? 0x80000000u : 0;
				b = base;
				break;
			default: /* small steps: SUB */
				v += (uint32_t)(t_rand(&seed) % 5) - 2;
				b = base;
				break;
			}
			if (kind != 0)
				memcpy(src + 4 * i, &v, 4);
			else
				memcpy(src + 4 * i, base + 4 * i, 4);
		}
		if (kind == 0)
			t_fill_random(src, n, &seed);
		blen = ll_encode(ctx, blob, ll_bound(n), src, n, 4, b, 3);
		CHECK(blen > 0 && blob[3] == kind, "blob kind %d came out mode %d", kind, blob[3]);
		seen[blob[3]]++;
		corrupt_one(blob, (size_t)blen, n, b, kind == 0 ? "raw"
						     : kind == 1 ? "grouped"
						     : kind == 2 ? "xor"
								 : "sub");
	}
	/* An empty chunk's blob is a bare header. */
	blen = ll_encode(ctx, blob, ll_bound(0), src, 0, 2, NULL, 3);
	CHECK(blen == LL_HDR, "empty blob %zd", blen);
	corrupt_one(blob, (size_t)blen, 0, NULL, "empty");
	free(src);
	free(base);
	free(blob);
}

/* The cx_ layer: magic and codec id checks, names, needs_base on bad headers. */
static void test_dispatch(void)
{
	uint8_t src[256], blob[LL_HDR + 256];
	ssize_t blen;

	memset(src, 1, sizeof src);
	blen = ll_encode(ctx, blob, sizeof blob, src, sizeof src, 1, NULL, 3);
	CHECK(blen > 0 && blob[3] == LL_GROUPED, "setup");
	CHECK(cx_blob_codec(blob, (size_t)blen) == CX_LOSSLESS, "codec id");
	CHECK(cx_needs_base(blob, (size_t)blen) == 0, "needs base");
	CHECK(cx_blob_codec(blob, CX_HDR - 1) == -EBADMSG, "short header");
	CHECK(cx_needs_base(blob, CX_HDR) == -EBADMSG, "lossless header cut");
	CHECK(cx_blob_codec(NULL, 0) == -EBADMSG, "NULL blob");
	CHECK(cx_decode(ctx, src, sizeof src, NULL, 0, NULL) == -EBADMSG, "NULL blob decode");
	CHECK(cx_decode(NULL, src, sizeof src, blob, (size_t)blen, NULL) == -EINVAL, "NULL ctx");

	for (int id = 0; id < 256; id++) {
		int rc;

		/* The enum's ids belong to codecs that may be built in later. */
		if (id >= CX_LOSSLESS && id <= CX_LOWRANK)
			continue;
		blob[1] = (uint8_t)id;
		rc = decode_guarded(blob, (size_t)blen, sizeof src, NULL);
		CHECK(rc == -EBADMSG, "codec id %d decoded: rc=%d", id, rc);
		CHECK(cx_needs_base(blob, (size_t)blen) == -EBADMSG, "needs_base id %d", id);
		CHECK(cx_blob_codec(blob, (size_t)blen) == -EBADMSG, "blob_codec id %d", id);
	}
	blob[1] = CX_LOSSLESS;
	blob[0] = 'D';
	CHECK(cx_blob_codec(blob, (size_t)blen) == -EBADMSG, "bad magic");
	blob[0] = CX_MAGIC;
	blob[2] = 3;
	CHECK(cx_needs_base(blob, (size_t)blen) == -EBADMSG, "unknown version");
	blob[2] = 0;
	CHECK(cx_needs_base(blob, (size_t)blen) == -EBADMSG, "version 0");
	blob[2] = 2;
	blob[3] = 4;
	CHECK(cx_needs_base(blob, (size_t)blen) == -EBADMSG, "unknown mode");

	CHECK(strcmp(cx_codec_name(CX_LOSSLESS), "lossless") == 0, "name lossless");
	CHECK(strcmp(cx_codec_name(CX_DELTADQ), "deltadq") == 0, "name deltadq");
	CHECK(strcmp(cx_codec_name(CX_PALETTE), "palette") == 0, "name palette");
	CHECK(strcmp(cx_codec_name(0), "?") == 0 && strcmp(cx_codec_name(-1), "?") == 0 &&
		      strcmp(cx_codec_name(99), "?") == 0,
	      "unknown names");
}

int main(void)
{
	ctx = cx_ctx_new();
	CHECK(ctx, "cx_ctx_new");
	test_blobs();
	test_dispatch();
	cx_ctx_free(ctx);
	return 0;
}
