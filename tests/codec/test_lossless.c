/*
 * test_lossless.c -- byte-exact round trips of ll_encode/ll_decode (and cx_decode) for every
 * safetensors dtype: with and without a base, float specials (quiet and signalling NaNs with
 * payloads, infinities, -0.0, subnormals), empty and odd lengths, random and compressible
 * contents, a base equal to the chunk, and targeted inputs that must select each mode (RAW,
 * GROUPED, XOR, SUB). Every decode writes into a dirty buffer with guard bytes after it, so a
 * decoder that leaves bytes unwritten or writes past n fails the comparison.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "codec.h"
#include "dtype.h"
#include "lossless.h"
#include "testutil.h"

#include <zstd.h>

#define GUARD 64

static cx_ctx *ctx;
static unsigned mode_seen[4];

/* Encode, check the blob's shape, decode both through ll_decode and cx_decode, compare. Returns
 * the mode the encoder chose. */
static int roundtrip(const uint8_t *src, size_t n, unsigned es, const uint8_t *base, int level,
		     const char *what)
{
	size_t cap = ll_bound(n);
	uint8_t *blob = t_xmalloc(cap), *out = t_xmalloc(n + GUARD);
	ssize_t blen = ll_encode(ctx, blob, cap, src, n, es, base, level);
	int mode;

	CHECK(blen >= LL_HDR && (size_t)blen <= cap, "%s: encode n=%zu es=%u -> %zd", what, n, es,
	      blen);
	mode = blob[3];
	CHECK(mode <= LL_SUB, "%s: mode %d", what, mode);
	CHECK(base || mode <= LL_GROUPED, "%s: delta mode %d without a base", what, mode);
	CHECK(mode != LL_RAW || (size_t)blen == LL_HDR + n, "%s: raw blob size", what);
	CHECK(mode == LL_RAW || (size_t)blen < LL_HDR + n, "%s: compressed blob did not shrink",
	      what);
	CHECK(cx_blob_codec(blob, (size_t)blen) == CX_LOSSLESS, "%s: codec id", what);
	CHECK(cx_needs_base(blob, (size_t)blen) == (mode >= LL_XOR), "%s: needs_base", what);
	mode_seen[mode]++;

	for (int via = 0; via < 2; via++) {
		int rc;

		memset(out, 0xa5, n + GUARD);
		rc = via ? cx_decode(ctx, out, n, blob, (size_t)blen, base)
			 : ll_decode(ctx, out, n, blob, (size_t)blen, base);
		CHECK(rc == 0, "%s: decode(%d) rc=%d", what, via, rc);
		CHECK(n == 0 || memcmp(out, src, n) == 0, "%s: decode(%d) bytes differ", what, via);
		for (size_t i = n; i < n + GUARD; i++)
			CHECK(out[i] == 0xa5, "%s: decode wrote past n at %zu", what, i);
	}
	if (mode >= LL_XOR)
		CHECK(ll_decode(ctx, out, n, blob, (size_t)blen, NULL) == -EINVAL,
		      "%s: delta decoded without its base", what);
	free(blob);
	free(out);
	return mode;
}

/* ---- contents --------------------------------------------------------------------------------- */

static void put_le(uint8_t *p, uint64_t v, unsigned es)
{
	for (unsigned k = 0; k < es; k++)
		p[k] = (uint8_t)(v >> (8 * k));
}

static uint64_t get_le(const uint8_t *p, unsigned es)
{
	uint64_t v = 0;

	for (unsigned k = 0; k < es; k++)
		v |= (uint64_t)p[k] << (8 * k);
	return v;
}

/* Gaussian-ish via the sum of 4 uniforms: shape is irrelevant, only a weight-like exponent spread. */
static double t_normal(uint64_t *s, double sd)
{
	double u = 0;

	for (int i = 0; i < 4; i++)
		u += (double)(t_rand(s) >> 11) / 9007199254740992.0;
	return (u - 2.0) * sd * 1.7320508;
}

static uint16_t f32_to_f16(float f)
{
	uint32_t x;
	uint16_t sign;
	int e;

	memcpy(&x, &f, 4);
	sign = (uint16_t)((x >> 16) & 0x8000);
	e = (int)((x >> 23) & 0xff) - 127 + 15;
	if (e <= 0)
		return sign; /* flush: the test only needs plausible bit patterns */
	if (e >= 31)
		return sign | 0x7c00;
	return sign | (uint16_t)(e << 10) | (uint16_t)((x >> 13) & 0x3ff);
}

/* One weight-like element of dtype dt, as its little-endian bit pattern. */
static uint64_t weight_bits(dt_id dt, uint64_t *s)
{
	double w = t_normal(s, 0.02);
	float f = (float)w;
	uint32_t x;
	uint64_t y;

	memcpy(&x, &f, 4);
	switch (dt) {
	case DT_F64:
		memcpy(&y, &w, 8);
		return y;
	case DT_F32:
		return x;
	case DT_BF16:
		return x >> 16;
	case DT_F16:
		return f32_to_f16(f);
	case DT_F8_E5M2:
		return f32_to_f16(f) >> 8;
	case DT_F8_E4M3:
		return (x >> 24 & 0x80) | (t_rand(s) % 0x30); /* small magnitudes */
	case DT_BOOL:
		return t_rand(s) % 5 == 0;
	default: /* integers: small signed values, two's complement in es bytes */
		return (uint64_t)(int64_t)((int)(t_rand(s) % 17) - 8);
	}
}

/* Bit patterns of NaN (quiet and signalling, with payloads, both signs), +-Inf, -0.0 and
 * subnormals for each float type; integer types get their extremes. */
static size_t specials(dt_id dt, uint64_t *v)
{
	static const uint64_t f64[] = { 0x7ff8000000000000ull, 0x7ff8000000012345ull,
					0x7ff0000000000001ull, 0x7ff4000000000000ull,
					0xfff8000000000000ull, 0x7ff0000000000000ull,
					0xfff0000000000000ull, 0x8000000000000000ull,
					0x0000000000000001ull, 0x800fffffffffffffull,
					0x0008000000000000ull };
	static const uint64_t f32[] = { 0x7fc00000, 0x7fc12345, 0x7f800001, 0x7fa00000, 0xffc00000,
					0xff800001, 0x7f800000, 0xff800000, 0x80000000, 0x00000001,
					0x807fffff, 0x00400000 };
	static const uint64_t f16[] = { 0x7e00, 0x7e55, 0x7c01, 0x7d00, 0xfe00, 0xfc01, 0x7c00,
					0xfc00, 0x8000, 0x0001, 0x83ff, 0x0200 };
	static const uint64_t bf16[] = { 0x7fc0, 0x7fc5, 0x7f81, 0x7fa0, 0xffc0, 0xff81, 0x7f80,
					 0xff80, 0x8000, 0x0001, 0x807f, 0x0040 };
	static const uint64_t e5m2[] = { 0x7e, 0x7f, 0x7d, 0xfe, 0xfd, 0x7c, 0xfc, 0x80, 0x01, 0x83 };
	static const uint64_t e4m3[] = { 0x7f, 0xff, 0x80, 0x01, 0x07, 0x87, 0x7e };
	static const uint64_t ints[] = { 0, 1, 0xffffffffffffffffull, 0x80, 0x7f, 0x8000, 0x7fff,
					 0x80000000, 0x7fffffff, 0x8000000000000000ull,
					 0x7fffffffffffffffull };
	const uint64_t *t;
	size_t c;

	switch (dt) {
	case DT_F64: t = f64, c = sizeof f64 / 8; break;
	case DT_F32: t = f32, c = sizeof f32 / 8; break;
	case DT_F16: t = f16, c = sizeof f16 / 8; break;
	case DT_BF16: t = bf16, c = sizeof bf16 / 8; break;
	case DT_F8_E5M2: t = e5m2, c = sizeof e5m2 / 8; break;
	case DT_F8_E4M3: t = e4m3, c = sizeof e4m3 / 8; break;
	default: t = ints, c = sizeof ints / 8; break;
	}
	memcpy(v, t, c * 8);
	return c;
}

enum { C_WEIGHTS, C_SPECIALS, C_RANDOM, C_CONST, C_NCONTENT };
static const char *const content_name[] = { "weights", "specials", "random", "const" };

static void make_content(uint8_t *p, size_t m, dt_id dt, int content, uint64_t *s)
{
	unsigned es = dt_size(dt);
	uint64_t sp[16];
	size_t nsp = specials(dt, sp);

	for (size_t i = 0; i < m; i++) {
		uint64_t v;

		switch (content) {
		case C_WEIGHTS: /* weights with a special every 17th element */
			v = i % 17 == 5 ? sp[(i / 17) % nsp] : weight_bits(dt, s);
			break;
		case C_SPECIALS:
			v = sp[i % nsp];
			break;
		case C_RANDOM:
			v = t_rand(s);
			break;
		default:
			v = sp[0];
			break;
		}
		put_le(p + i * es, v, es);
	}
}

enum { B_NONE, B_EQUAL, B_NEAR, B_UNRELATED, B_NBASE };
static const char *const base_name[] = { "no base", "base==chunk", "near base", "unrelated base" };

/* A base for chunk src: the chunk itself, the chunk with small +-steps on some elements (a
 * fine-tune's relation to its base), or unrelated random bytes. */
static void make_base(uint8_t *b, const uint8_t *src, size_t m, unsigned es, int kind, uint64_t *s)
{
	memcpy(b, src, m * es);
	if (kind == B_UNRELATED) {
		t_fill_random(b, m * es, s);
		return;
	}
	if (kind != B_NEAR)
		return;
	for (size_t i = 0; i < m; i++) {
		uint64_t r = t_rand(s);

		if (r & 1)
			put_le(b + i * es, get_le(b + i * es, es) + (r >> 1) % 7 - 3, es);
	}
}

static void test_all_dtypes(void)
{
	static const size_t lens[] = { 0, 1, 3, 7, 63, 64, 65, 1000, 4099 };
	uint64_t seed = 1;

	for (int dt = 0; dt < DT_COUNT; dt++) {
		unsigned es = dt_size((dt_id)dt);

		for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
			size_t m = lens[li], n = m * es;
			uint8_t *src = t_xmalloc(n), *base = t_xmalloc(n);

			for (int c = 0; c < C_NCONTENT; c++) {
				make_content(src, m, (dt_id)dt, c, &seed);
				for (int bk = 0; bk < B_NBASE; bk++) {
					char what[128];

					snprintf(what, sizeof what, "%s m=%zu %s %s",
						 dt_name((dt_id)dt), m, content_name[c],
						 base_name[bk]);
					make_base(base, src, m, es, bk, &seed);
					roundtrip(src, n, es, bk == B_NONE ? NULL : base, 3, what);
				}
			}
			free(src);
			free(base);
		}
	}
}

/* Inputs that must select one mode each; also checks a delta against an equal base is tiny. */
static void test_modes(void)
{
	const size_t m = 16384;
	uint8_t *src = t_xmalloc(m * 4), *base = t_xmalloc(m * 4), *blob;
	uint64_t seed = 7;
	ssize_t blen;

	/* Random bytes do not compress: RAW, with or without a base. */
	t_fill_random(src, m * 4, &seed);
	t_fill_random(base, m * 4, &seed);
	CHECK(roundtrip(src, m * 4, 4, NULL, 3, "random") == LL_RAW, "random not raw");
	CHECK(roundtrip(src, m * 4, 4, base, 3, "random+base") == LL_RAW, "random+base not raw");

	/* F32 weights, no base: GROUPED. */
	make_content(src, m, DT_F32, C_WEIGHTS, &seed);
	CHECK(roundtrip(src, m * 4, 4, NULL, 3, "weights") == LL_GROUPED, "weights not grouped");

	/* A constant chunk over a random base: its own encoding beats any delta. */
	make_content(src, m, DT_F32, C_CONST, &seed);
	CHECK(roundtrip(src, m * 4, 4, base, 3, "const/random base") == LL_GROUPED,
	      "const over random base not grouped");

	/* Sign flips of some elements: XOR touches only the top byte, SUB all four. */
	t_fill_random(base, m * 4, &seed);
	memcpy(src, base, m * 4);
	for (size_t i = 0; i < m; i++)
		if (t_rand(&seed) % 8 == 0)
			src[i * 4 + 3] ^= 0x80;
	CHECK(roundtrip(src, m * 4, 4, base, 3, "sign flips") == LL_XOR, "sign flips not XOR");

	/* Small +-steps of integers: SUB leaves only small low bytes, XOR smears carries. */
	for (size_t i = 0; i < m; i++) {
		uint32_t b, v;

		memcpy(&b, base + i * 4, 4);
		v = b + (uint32_t)((int)(t_rand(&seed) % 9) - 4);
		memcpy(src + i * 4, &v, 4);
	}
	CHECK(roundtrip(src, m * 4, 4, base, 3, "small steps") == LL_SUB, "small steps not SUB");

	/* A base equal to the chunk: a delta of zeros, a few dozen bytes whatever the size. */
	blob = t_xmalloc(ll_bound(m * 4));
	blen = ll_encode(ctx, blob, ll_bound(m * 4), base, m * 4, 4, base, 3);
	CHECK(blen > 0 && blen < 128 && blob[3] >= LL_XOR, "equal base: %zd bytes mode %d", blen,
	      blob[3]);
	free(blob);

	/* Other levels, including zstd's negative (fast) ones and its maximum. */
	make_content(src, m, DT_BF16, C_WEIGHTS, &seed);
	make_base(base, src, m * 2, 1, B_NEAR, &seed);
	roundtrip(src, m * 2, 2, base, -5, "level -5");
	roundtrip(src, m * 2, 2, base, 1, "level 1");
	roundtrip(src, m * 2, 2, base, 19, "level 19");
	roundtrip(src, m * 2, 2, NULL, ZSTD_maxCLevel(), "max level");
	free(src);
	free(base);

	for (int mode = LL_RAW; mode <= LL_SUB; mode++)
		CHECK(mode_seen[mode] > 0, "mode %d never chosen over the whole suite", mode);
}

/* A BF16 chunk (256 elements) and its base, as the version-1 fixture below was made from. */
static void v1_data(uint16_t *v, uint16_t *b)
{
	uint64_t s = 12345;
	for (int i = 0; i < 256; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		float f = (float)((int)(s >> 40) % 2001 - 1000) / 3000.0f;
		uint32_t u;
		memcpy(&u, &f, 4);
		b[i] = (uint16_t)(u >> 16);
		v[i] = (uint16_t)(b[i] ^ ((s >> 20) & 3));
	}
}

/* Blobs written before version 2 (one zstd frame of both planes, an XOR delta) still decode;
 * version 2 writes one frame per plane, and a payload whose frames do not match its version
 * and element size is refused. */
static void test_versions(void)
{
	static const uint8_t v1[] = {
	0x64, 0x01, 0x01, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x28, 0xb5, 0x2f, 0xfd, 0x60, 0x00, 0x01, 0xcc, 0x02, 0x00, 0x42, 0x4b, 0x0c, 0x82, 0x11, 0x10,
	0xfa, 0x8b, 0x03, 0xf2, 0xcc, 0x0a, 0x08, 0xcd, 0x54, 0xb6, 0xe5, 0x06, 0x40, 0x58, 0x9b, 0xde,
	0xc2, 0x11, 0x55, 0x71, 0x3e, 0x6e, 0x5a, 0x0a, 0xa5, 0x1e, 0x83, 0xf3, 0xf4, 0x80, 0x78, 0x36,
	0x9a, 0x85, 0x21, 0x39, 0xfa, 0xb0, 0xbf, 0xe8, 0x34, 0xe3, 0x15, 0x8c, 0x19, 0x01, 0x0e, 0x00,
	0x5b, 0xf3, 0x57, 0xd1, 0xf4, 0x1f, 0x30, 0xa1, 0x69, 0xcf, 0x79, 0x82, 0xc1, 0x4c, 0x5e, 0xf1,
	0x25, 0x41, 0x07, 0x77, 0xe1, 0x4e, 0xab, 0x06, 0x57, 0xc9, 0xc5, 0xa4, 0x0e, 0x26, 0x67, 0x2b,
	0xc2, 0xca, 0x16, 0x03, 0x08, 0x00, 0x00,
	};
	uint16_t v[256], b[256], out[256];
	uint8_t blob[LL_HDR + 512];

	v1_data(v, b);
	CHECK(ll_decode(ctx, out, sizeof out, v1, sizeof v1, b) == 0, "version 1 blob");
	CHECK(!memcmp(out, v, sizeof v), "version 1 blob decodes to its chunk");

	ssize_t z = ll_encode(ctx, blob, sizeof blob, v, sizeof v, 2, b, 1);
	CHECK(z > LL_HDR && blob[2] == 2 && blob[3] == LL_XOR, "version 2 XOR blob: %zd", z);
	size_t f0 = ZSTD_findFrameCompressedSize(blob + LL_HDR, (size_t)z - LL_HDR);
	CHECK(!ZSTD_isError(f0) && f0 < (size_t)z - LL_HDR, "two frames");
	CHECK(ZSTD_findFrameCompressedSize(blob + LL_HDR + f0, (size_t)z - LL_HDR - f0) ==
		      (size_t)z - LL_HDR - f0, "second frame ends the blob");
	CHECK(ll_decode(ctx, out, sizeof out, blob, (size_t)z, b) == 0 && !memcmp(out, v, sizeof v),
	      "version 2 round trip");
	blob[2] = 1;
	CHECK(ll_decode(ctx, out, sizeof out, blob, (size_t)z, b) == -EBADMSG, "two frames as v1");
	blob[2] = 2;
	CHECK(ll_decode(ctx, out, sizeof out, blob, LL_HDR + f0, b) == -EBADMSG, "one frame of two");
	memcpy(blob, v1, sizeof v1);
	blob[2] = 2;
	CHECK(ll_decode(ctx, out, sizeof out, blob, sizeof v1, b) == -EBADMSG, "one frame as v2");
}

/* Arguments a caller gets wrong. */
static void test_bad_args(void)
{
	uint8_t src[64] = { 0 }, blob[LL_HDR + 64];

	CHECK(ll_encode(ctx, blob, sizeof blob, src, 64, 3, NULL, 3) == -EINVAL, "esize 3");
	CHECK(ll_encode(ctx, blob, sizeof blob, src, 64, 16, NULL, 3) == -EINVAL, "esize 16");
	CHECK(ll_encode(ctx, blob, sizeof blob, src, 62, 4, NULL, 3) == -EINVAL, "n %% esize");
	CHECK(ll_encode(ctx, blob, sizeof blob - 1, src, 64, 4, NULL, 3) == -ENOBUFS, "cap");
	CHECK(ll_encode(ctx, blob, sizeof blob, src, 64, 4, NULL, 1000) == -EINVAL, "level");
	CHECK(ll_encode(ctx, blob, sizeof blob, NULL, 64, 4, NULL, 3) == -EINVAL, "NULL src");
	CHECK(ll_encode(NULL, blob, sizeof blob, src, 64, 4, NULL, 3) == -EINVAL, "NULL ctx");
	CHECK(ll_bound(100) == LL_HDR + 100, "bound");
}

int main(void)
{
	ctx = cx_ctx_new();
	CHECK(ctx, "cx_ctx_new");
	test_bad_args();
	test_versions();
	test_all_dtypes();
	test_modes();
	cx_ctx_free(ctx);
	return 0;
}
