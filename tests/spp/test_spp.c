/*
 * test_spp.c -- the support-only codec (codec/spp.h): round trips, exceptions, sparsity
 * measurement, hostile blobs.
 *
 *   test_spp CASE     CASE: roundtrip, exceptions, specials, measure, broken, truncate, hostile,
 *                     args
 *
 * Data: weight-like values (sum of uniforms, sd 0.02) in F64, F32, BF16, F16, and bit patterns
 * for F8_E4M3 and integers; bases pruned unstructured (each element zeroed with probability p)
 * or 2:4 (two random zeros in every group of 4), with +0.0 or -0.0 zeros; fine-tunes that keep
 * the zeros (SPP: each support element scaled by 1 + 0.05 z), that break all of them (dense), a
 * few of them, or only flip their sign. Every decode goes into a dirty buffer with guard bytes,
 * through spp_decode and cx_decode, and must give the fine-tune back bit for bit.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "codec.h"
#include "dtype.h"
#include "lossless.h"
#include "spp.h"
#include "testutil.h"

#define GUARD 64

static cx_ctx *cx;
static uint64_t seed = 7;

/* ---- elements --------------------------------------------------------------------------------- */

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

static double t_unit(void)
{
	return (double)(t_rand(&seed) >> 11) / 9007199254740992.0;
}

static double t_normal(double sd)
{
	double u = 0;

	for (int i = 0; i < 4; i++)
		u += t_unit();
	return (u - 2.0) * sd * 1.7320508;
}

/* Round-to-nearest-even F16 with subnormals: values near zero must not flush to a zero, which
 * would move them off the support. */
static uint16_t f16_bits(double x)
{
	uint16_t sign = signbit(x) ? 0x8000 : 0;
	double a = fabs(x);
	int e;

	if (a >= 65520.0)
		return sign | 0x7c00;
	if (a < 0x1p-14)
		return sign | (uint16_t)nearbyint(a * 0x1p24);
	frexp(a, &e); /* a = f * 2^e, f in [0.5, 1) */
	e -= 1;
	return sign | (uint16_t)(((e + 15) << 10) + (int)nearbyint((a * ldexp(1.0, -e) - 1.0) * 1024.0));
}

static uint64_t float_bits(dt_id dt, double x)
{
	float f = (float)x;
	uint32_t u;
	uint64_t v;

	memcpy(&u, &f, 4);
	switch (dt) {
	case DT_F64: memcpy(&v, &x, 8); return v;
	case DT_F32: return u;
	case DT_BF16: return (u + 0x7fff + ((u >> 16) & 1)) >> 16;
	default: return f16_bits(x);
	}
}

static int is_valued(dt_id dt)
{
	return dt == DT_F64 || dt == DT_F32 || dt == DT_BF16 || dt == DT_F16;
}

/* A non-zero element (magnitude bits not all zero). */
static uint64_t weight(dt_id dt, double *val)
{
	unsigned es = dt_size(dt);
	uint64_t mag = es == 8 ? UINT64_MAX >> 1 : (UINT64_C(1) << (8 * es - 1)) - 1, v;

	if (is_valued(dt)) {
		do {
			*val = t_normal(0.02);
			v = float_bits(dt, *val);
		} while (!(v & mag)); /* a tiny value may round to a zero of the dtype */
		return v;
	}
	*val = 0;
	do
		v = t_rand(&seed) & (mag >> (es == 1 ? 1 : 4 * es));
	while (!v);
	return t_rand(&seed) & 1 ? v : (dt_is_float(dt) ? v | (mag + 1) : (0 - v) & (mag | (mag + 1)));
}

/* ---- data ------------------------------------------------------------------------------------- */

enum prune { P_NONE, P_UNSTRUCTURED, P_24, P_ALL };
enum tune { T_SPP, T_DENSE, T_FEW, T_SIGN };

typedef struct {
	uint8_t *base, *ft;
	size_t m, n;
	unsigned es;
	uint64_t off, broken, flipped;
} pair;

/* Base of m elements pruned as asked (zeros are -0.0 when negzero), and a fine-tune of it. */
static pair make_pair(dt_id dt, size_t m, enum prune pr, double p, int negzero, enum tune tu)
{
	unsigned es = dt_size(dt);
	uint64_t zero = negzero ? UINT64_C(1) << (8 * es - 1) : 0;
	pair q = { t_xmalloc(m * es), t_xmalloc(m * es), m, m * es, es, 0, 0, 0 };
	double *val = t_xmalloc(m * sizeof *val);

	for (size_t i = 0; i < m; i++)
		put_le(q.base + i * es, weight(dt, &val[i]), es);
	for (size_t i = 0; i < m; i++) {
		int z = pr == P_ALL || (pr == P_UNSTRUCTURED && t_unit() < p);

		if (pr == P_24 && i % 4 == 0 && i + 4 <= m) {
			unsigned a = (unsigned)(t_rand(&seed) % 4), b = (a + 1 + t_rand(&seed) % 3) % 4;

			put_le(q.base + (i + a) * es, zero, es);
			put_le(q.base + (i + b) * es, zero, es);
		}
		if (z)
			put_le(q.base + i * es, zero, es);
	}
	for (size_t i = 0; i < m; i++) {
		uint64_t b = get_le(q.base + i * es, es), f = b;
		int on = (b << (64 - 8 * es + 1)) != 0;
		double d;

		if (on) {
			if (is_valued(dt)) {
				d = val[i] * (1 + 0.05 * t_normal(1.0));
				/* A support element must stay non-zero, as W (1 + M) does. */
				f = d == 0 ? b : float_bits(dt, d);
				if ((f << (64 - 8 * es + 1)) == 0)
					f = b;
			} else {
				f = b ^ (t_rand(&seed) & 3);
				if ((f << (64 - 8 * es + 1)) == 0)
					f = b;
			}
		} else {
			q.off++;
			if (tu == T_DENSE || (tu == T_FEW && t_rand(&seed) % 97 == 0)) {
				f = weight(dt, &d);
				q.broken++;
			} else if (tu == T_SIGN && t_rand(&seed) % 31 == 0) {
				f = b ^ (UINT64_C(1) << (8 * es - 1));
				q.flipped++;
			}
		}
		put_le(q.ft + i * es, f, es);
	}
	free(val);
	return q;
}

static void free_pair(pair *q)
{
	free(q->base);
	free(q->ft);
}

/* ---- round trip ------------------------------------------------------------------------------- */

/* Encode, decode through spp_decode and cx_decode, compare; returns the blob (caller frees) and
 * its mode. */
static uint8_t *roundtrip(const pair *q, const char *what, size_t *blen_out, int *mode_out)
{
	size_t cap = spp_bound(q->n, q->es);
	uint8_t *blob = t_xmalloc(cap), *out = t_xmalloc(q->n + GUARD);
	ssize_t blen = spp_encode(cx, blob, cap, q->ft, q->base, q->n, q->es, 3);
	uint64_t broken = 0;

	CHECK(blen >= SPP_HDR && (size_t)blen <= cap, "%s: encode n=%zu es=%u -> %zd", what, q->n,
	      q->es, blen);
	CHECK(cx_blob_codec(blob, (size_t)blen) == CX_SPP, "%s: codec id", what);
	CHECK(strcmp(cx_codec_name(CX_SPP), "spp") == 0, "codec name");
	CHECK(cx_needs_base(blob, (size_t)blen) == 1, "%s: needs_base", what);
	CHECK(blob[3] <= SPP_X_FULL, "%s: mode %d", what, blob[3]);
	CHECK(spp_broken_zeros(q->ft, q->base, q->n, q->es, &broken) == 0 && broken == q->broken,
	      "%s: broken zeros %llu, made %llu", what, (unsigned long long)broken,
	      (unsigned long long)q->broken);
	for (int via = 0; via < 2; via++) {
		int rc;

		memset(out, 0xa5, q->n + GUARD);
		rc = via ? cx_decode(cx, out, q->n, blob, (size_t)blen, q->base)
			 : spp_decode(cx, out, q->n, blob, (size_t)blen, q->base);
		CHECK(rc == 0, "%s: decode(%d) rc=%d", what, via, rc);
		CHECK(q->n == 0 || memcmp(out, q->ft, q->n) == 0, "%s: decode(%d) bytes differ", what,
		      via);
		for (size_t i = q->n; i < q->n + GUARD; i++)
			CHECK(out[i] == 0xa5, "%s: decode wrote past n at %zu", what, i);
		/* Zeros kept: every off-support element is the base's zero, bit for bit. */
		if (q->broken == 0 && q->flipped == 0)
			for (size_t i = 0; i < q->m; i++) {
				uint64_t b = get_le(q->base + i * q->es, q->es);

				if ((b << (64 - 8 * q->es + 1)) == 0)
					CHECK(get_le(out + i * q->es, q->es) == b,
					      "%s: zero at %zu not kept", what, i);
			}
	}
	CHECK(q->n == 0 || spp_decode(cx, out, q->n, blob, (size_t)blen, NULL) == -EINVAL,
	      "%s: decoded without its base", what);
	free(out);
	*blen_out = (size_t)blen;
	*mode_out = blob[3];
	return blob;
}

static int roundtrip_mode(const pair *q, const char *what)
{
	size_t blen;
	int mode;

	free(roundtrip(q, what, &blen, &mode));
	return mode;
}

static const dt_id dtypes[] = { DT_F32, DT_BF16, DT_F16, DT_F64, DT_F8_E4M3, DT_I8, DT_I32 };
#define NDT (sizeof dtypes / sizeof dtypes[0])

static void test_roundtrip(void)
{
	static const size_t sizes[] = { 0, 1, 3, 4, 1000, 4096, 70000 };
	char what[160];

	for (size_t d = 0; d < NDT; d++) {
		for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
			for (int pr = P_NONE; pr <= P_ALL; pr++) {
				for (int neg = 0; neg < 2; neg++) {
					pair q = make_pair(dtypes[d], sizes[s], pr, 0.5, neg, T_SPP);
					int mode;

					snprintf(what, sizeof what, "%s m=%zu prune=%d negzero=%d spp",
						 dt_name(dtypes[d]), sizes[s], pr, neg);
					mode = roundtrip_mode(&q, what);
					CHECK(mode == SPP_X_NONE, "%s: mode %d, want none", what, mode);
					free_pair(&q);

					q = make_pair(dtypes[d], sizes[s], pr, 0.75, neg, T_DENSE);
					snprintf(what, sizeof what, "%s m=%zu prune=%d negzero=%d dense",
						 dt_name(dtypes[d]), sizes[s], pr, neg);
					mode = roundtrip_mode(&q, what);
					CHECK(q.off == 0 ? mode == SPP_X_NONE : mode != SPP_X_NONE,
					      "%s: mode %d with %llu zeros broken", what, mode,
					      (unsigned long long)q.broken);
					free_pair(&q);
				}
			}
		}
	}
}

/* A 256 KiB BF16 chunk, as the store cuts: SPP fine-tunes must be smaller than the lossless
 * delta (they drop the zeros' planes), all modes must show up. */
static void test_exceptions(void)
{
	unsigned seen[3] = { 0 };
	char what[128];

	for (size_t d = 0; d < NDT; d++) {
		for (int tu = T_SPP; tu <= T_SIGN; tu++) {
			size_t m = (256u << 10) / dt_size(dtypes[d]);
			pair q = make_pair(dtypes[d], m, tu == T_SPP ? P_24 : P_UNSTRUCTURED, 0.5, 0,
					   (enum tune)tu);
			int mode;

			snprintf(what, sizeof what, "%s 256 KiB tune=%d", dt_name(dtypes[d]), tu);
			mode = roundtrip_mode(&q, what);
			seen[mode]++;
			if (tu == T_FEW || tu == T_SIGN)
				CHECK(mode == SPP_X_LIST, "%s: %llu broken, %llu flipped: mode %d",
				      what, (unsigned long long)q.broken,
				      (unsigned long long)q.flipped, mode);
			if (tu == T_SIGN)
				CHECK(q.broken == 0 && q.flipped > 0, "%s: sign flips only", what);
			if (tu == T_SPP && is_valued(dtypes[d])) {
				size_t cap = ll_bound(q.n), sb = spp_bound(q.n, q.es);
				uint8_t *a = t_xmalloc(cap), *b = t_xmalloc(sb);
				ssize_t la = ll_encode(cx, a, cap, q.ft, q.n, q.es, q.base, 3);
				ssize_t lb = spp_encode(cx, b, sb, q.ft, q.base, q.n, q.es, 3);

				CHECK(la > 0 && lb > 0 && lb < la, "%s: spp %zd bytes, lossless %zd",
				      what, lb, la);
				free(a);
				free(b);
			}
			free_pair(&q);
		}
	}
	CHECK(seen[SPP_X_NONE] && seen[SPP_X_LIST] && seen[SPP_X_FULL], "modes seen %u/%u/%u",
	      seen[0], seen[1], seen[2]);
}

/* NaN, infinities and -0.0 on and off the support, in base and fine-tune. */
static void test_specials(void)
{
	static const uint32_t f32[] = { 0x7fc00000, 0xffc00001, 0x7f800001, 0x7f800000, 0xff800000,
					0x80000000, 0x00000000, 0x00000001, 0x80000001 };
	static const uint16_t b16[] = { 0x7fc0, 0xffc1, 0x7f81, 0x7f80, 0xff80, 0x8000, 0x0000,
					0x0001, 0x8001 };
	const size_t k = sizeof f32 / sizeof f32[0];

	for (int es = 2; es <= 4; es += 2) {
		for (size_t sb = 0; sb < k; sb++) {
			for (size_t sf = 0; sf < k; sf++) {
				pair q = make_pair(es == 4 ? DT_F32 : DT_BF16, 64, P_UNSTRUCTURED, 0.5,
						   0, T_SPP);
				uint64_t bv = es == 4 ? f32[sb] : b16[sb];
				uint64_t fv = es == 4 ? f32[sf] : b16[sf];
				uint64_t mag = (UINT64_C(1) << (8 * es - 1)) - 1;
				char what[96];

				/* Element 5: base bv, fine-tune fv; element 9: both bv. */
				put_le(q.base + 5 * q.es, bv, q.es);
				put_le(q.ft + 5 * q.es, fv, q.es);
				put_le(q.base + 9 * q.es, bv, q.es);
				put_le(q.ft + 9 * q.es, bv, q.es);
				q.broken = 0;
				CHECK(spp_broken_zeros(q.ft, q.base, q.n, q.es, &q.broken) == 0,
				      "broken");
				q.flipped = !(bv & mag) && fv != bv;
				snprintf(what, sizeof what, "es=%d base %#llx ft %#llx", es,
					 (unsigned long long)bv, (unsigned long long)fv);
				CHECK(q.broken == (!(bv & mag) && (fv & mag)), "%s: broken %llu",
				      what, (unsigned long long)q.broken);
				roundtrip_mode(&q, what);
				free_pair(&q);
			}
		}
	}
}

/* ---- measurement ----------------------------------------------------------------------------- */

static spp_stats measure(const void *p, size_t m, dt_id dt)
{
	spp_stats st;

	CHECK(spp_measure(p, m, dt, &st) == 0, "spp_measure %s", dt_name(dt));
	CHECK(st.n == m, "n");
	return st;
}

static void test_measure(void)
{
	/* 16 F32: groups of 4 with <= 2 non-zeros, -0.0 among the zeros. */
	float a[16] = { 1, 0, -0.0f, 2, 0, 0, 3, 4, 5, -0.0f, 6, 0, 0, 7, 0, 0 };
	/* Groups of 8 with <= 4 non-zeros, one group of 4 with 3. */
	float b[16] = { 1, 2, 3, 0, 0, 0, 0, 4, 0, 0, 0, 0, 1, 1, 1, 1 };
	uint16_t h[8] = { 0x3c00, 0x8000, 0, 0x3c00, 0x8000, 0x8000, 0x0001, 0 };
	int8_t i8[8] = { 0, -128, 0, 5, 0, 0, 0, 0 };
	float dense[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
	spp_stats st;

	st = measure(a, 16, DT_F32);
	CHECK(st.zeros == 9 && st.nm_n == 2 && st.nm_m == 4, "2:4: zeros %llu %u:%u",
	      (unsigned long long)st.zeros, st.nm_n, st.nm_m);
	st = measure(a, 15, DT_F32);
	CHECK(st.zeros == 8 && st.nm_m == 0, "15 elements: no pattern (%u:%u)", st.nm_n, st.nm_m);
	st = measure(b, 16, DT_F32);
	CHECK(st.zeros == 8 && st.nm_n == 4 && st.nm_m == 8, "4:8: %u:%u", st.nm_n, st.nm_m);
	b[3] = 9;
	st = measure(b, 16, DT_F32);
	CHECK(st.zeros == 7 && st.nm_m == 0, "5 of 8: %u:%u", st.nm_n, st.nm_m);
	st = measure(h, 8, DT_BF16);
	CHECK(st.zeros == 5 && st.nm_n == 2 && st.nm_m == 4, "BF16: %llu %u:%u",
	      (unsigned long long)st.zeros, st.nm_n, st.nm_m);
	/* Integers: -128 is no zero for measure. */
	st = measure(i8, 8, DT_I8);
	CHECK(st.zeros == 6 && st.nm_n == 2 && st.nm_m == 4, "I8: %llu %u:%u",
	      (unsigned long long)st.zeros, st.nm_n, st.nm_m);
	st = measure(dense, 12, DT_F32);
	CHECK(st.zeros == 0 && st.nm_m == 0, "dense");
	st = measure(NULL, 0, DT_F32);
	CHECK(st.zeros == 0 && st.nm_m == 0, "empty");
	CHECK(spp_measure(a, 4, DT_COUNT, &st) == -EINVAL, "bad dtype");
	CHECK(spp_measure(NULL, 4, DT_F32, &st) == -EINVAL, "NULL src");
	CHECK(spp_measure(a, 4, DT_F32, NULL) == -EINVAL, "NULL out");

	/* The generated bases: 2:4 is detected, 50 % unstructured is not, a 75 % base counts. */
	for (size_t d = 0; d < NDT; d++) {
		pair q = make_pair(dtypes[d], 4096, P_24, 0, 0, T_SPP);

		st = measure(q.base, q.m, dtypes[d]);
		CHECK(st.zeros == q.off && st.nm_n == 2 && st.nm_m == 4, "%s 2:4 base",
		      dt_name(dtypes[d]));
		free_pair(&q);
		q = make_pair(dtypes[d], 4096, P_UNSTRUCTURED, 0.5, 1, T_SPP);
		st = measure(q.base, q.m, dtypes[d]);
		CHECK(st.zeros == (dt_is_float(dtypes[d]) ? q.off : 0) && st.nm_m == 0,
		      "%s unstructured base: %llu zeros of %llu", dt_name(dtypes[d]),
		      (unsigned long long)st.zeros, (unsigned long long)q.off);
		free_pair(&q);
	}
}

static void test_broken(void)
{
	uint16_t base[6] = { 0, 0x8000, 0, 0x3c00, 0, 0x8000 };
	uint16_t ft[6] = { 0x8000, 0, 0x0001, 0, 0, 0x3c00 };
	uint64_t c = 99;

	/* Sign flips (0, 1) are not broken; 2 and 5 are; 3 is a support element. */
	CHECK(spp_broken_zeros(ft, base, sizeof ft, 2, &c) == 0 && c == 2, "broken %llu",
	      (unsigned long long)c);
	CHECK(spp_broken_zeros(ft, base, 0, 2, &c) == 0 && c == 0, "empty");
	CHECK(spp_broken_zeros(ft, base, 5, 2, &c) == -EINVAL, "odd n");
	CHECK(spp_broken_zeros(ft, base, 6, 3, &c) == -EINVAL, "esize 3");
	CHECK(spp_broken_zeros(ft, NULL, 6, 2, &c) == -EINVAL, "NULL base");
}

/* ---- hostile blobs ---------------------------------------------------------------------------- */

static void expect_bad(const uint8_t *blob, size_t blen, const pair *q, const char *what)
{
	uint8_t *out = t_xmalloc(q->n);
	int rc = spp_decode(cx, out, q->n, blob, blen, q->base);

	CHECK(rc == -EBADMSG, "%s: rc %d, want -EBADMSG", what, rc);
	rc = cx_decode(cx, out, q->n, blob, blen, q->base);
	CHECK(rc == -EBADMSG, "%s: cx_decode rc %d", what, rc);
	free(out);
}

static void test_truncate(void)
{
	for (int tu = T_SPP; tu <= T_FEW; tu++) {
		pair q = make_pair(DT_BF16, 2048, P_UNSTRUCTURED, 0.5, 0, (enum tune)tu);
		size_t blen;
		int mode;
		uint8_t *blob = roundtrip(&q, "truncate", &blen, &mode);
		char what[64];

		CHECK(mode == (tu == T_SPP ? SPP_X_NONE : tu == T_DENSE ? SPP_X_FULL : SPP_X_LIST),
		      "mode %d for tune %d", mode, tu);
		for (size_t len = 0; len < blen; len++) {
			uint8_t *cut = t_xmalloc(len);

			memcpy(cut, blob, len);
			snprintf(what, sizeof what, "mode %d cut to %zu of %zu", mode, len, blen);
			expect_bad(cut, len, &q, what);
			free(cut);
		}
		free(blob);
		free_pair(&q);
	}
}

/* A blob built by hand: header, support blob, then `tail` bytes after it. */
static size_t forge(uint8_t *blob, const pair *q, int mode, const uint8_t *tail, size_t tlen)
{
	unsigned es = q->es;
	uint8_t *pb = t_xmalloc(q->n + es), *pf = t_xmalloc(q->n + es);
	size_t s = 0;
	ssize_t sl;

	for (size_t i = 0; i < q->m; i++) {
		uint64_t b = get_le(q->base + i * es, es);

		if ((b << (64 - 8 * es + 1)) == 0)
			continue;
		memcpy(pb + s * es, q->base + i * es, es);
		memcpy(pf + s * es, q->ft + i * es, es);
		s++;
	}
	sl = ll_encode(cx, blob + SPP_HDR, ll_bound(s * es), pf, s * es, es, pb, 3);
	CHECK(sl > 0, "forge: ll_encode");
	blob[0] = CX_MAGIC;
	blob[1] = CX_SPP;
	blob[2] = SPP_VERSION;
	blob[3] = (uint8_t)mode;
	blob[4] = (uint8_t)es;
	memset(blob + 5, 0, 3);
	put_le(blob + 8, q->n, 8);
	put_le(blob + 16, (uint64_t)sl, 8);
	memcpy(blob + SPP_HDR + sl, tail, tlen);
	free(pb);
	free(pf);
	return SPP_HDR + (size_t)sl + tlen;
}

/* An exception list of `count` entries with the given gaps (2-byte: the chunk is small). */
static size_t forge_list(uint8_t *tail, uint64_t count, const uint16_t *gaps, size_t ngaps)
{
	uint8_t vals[64];
	ssize_t pl, vl;

	memset(vals, 0x11, sizeof vals);
	pl = ll_encode(cx, tail + 16, ll_bound(ngaps * 2), gaps, ngaps * 2, 2, NULL, 3);
	vl = ll_encode(cx, tail + 16 + pl, ll_bound(ngaps * 2), vals, ngaps * 2, 2, NULL, 3);
	CHECK(pl > 0 && vl > 0, "forge_list");
	put_le(tail, count, 8);
	put_le(tail + 8, (uint64_t)pl, 8);
	return 16 + (size_t)pl + (size_t)vl;
}

static void test_hostile(void)
{
	pair q = make_pair(DT_BF16, 4096, P_UNSTRUCTURED, 0.5, 0, T_FEW);
	size_t blen, cap = spp_bound(q.n, q.es) + 4096, tl, first_zero = 0;
	int mode;
	uint8_t *good = roundtrip(&q, "hostile", &blen, &mode), *bad = t_xmalloc(cap);
	uint8_t tail[1024], *out = t_xmalloc(q.n);
	uint16_t gaps[2];
	pair other = make_pair(DT_BF16, 4096, P_UNSTRUCTURED, 0.5, 0, T_SPP);

	CHECK(mode == SPP_X_LIST, "hostile: want a list, mode %d", mode);
	while (get_le(q.base + first_zero * 2, 2) & 0x7fff)
		first_zero++;

	/* Header fields. */
	for (int f = 0; f < 7; f++) {
		memcpy(bad, good, blen);
		switch (f) {
		case 0: bad[0] ^= 1; break;          /* magic */
		case 1: bad[2] = SPP_VERSION + 1; break;
		case 2: bad[3] = SPP_X_FULL + 1; break;
		case 3: bad[4] = 3; break;           /* esize */
		case 4: bad[6] = 1; break;           /* reserved */
		case 5: put_le(bad + 8, q.n + 2, 8); break;
		default: put_le(bad + 16, blen, 8); break; /* slen beyond the blob */
		}
		expect_bad(bad, blen, &q, "header field");
		/* needs_base checks the fixed header but n, which only the caller knows. */
		CHECK(f == 5 ? cx_needs_base(bad, blen) == 1 : cx_needs_base(bad, blen) == -EBADMSG,
		      "needs_base, header field %d", f);
	}
	CHECK(cx_needs_base(good, SPP_HDR - 1) == -EBADMSG, "needs_base, short header");
	/* Another base (other support): the support blob's size no longer matches. */
	CHECK(spp_decode(cx, out, q.n, good, blen, other.base) == -EBADMSG, "other base");
	/* A NONE blob with bytes after it; FULL over a base without zeros. */
	tl = forge(bad, &q, SPP_X_NONE, (const uint8_t *)"x", 1);
	expect_bad(bad, tl, &q, "none + trailing byte");
	{
		pair dense = make_pair(DT_BF16, 512, P_NONE, 0, 0, T_SPP);
		ssize_t vl = ll_encode(cx, tail, sizeof tail, "", 0, 2, NULL, 3);

		CHECK(vl > 0, "empty values blob");
		tl = forge(bad, &dense, SPP_X_FULL, tail, (size_t)vl);
		expect_bad(bad, tl, &dense, "full without off-support elements");
		free_pair(&dense);
	}
	/* A FULL blob whose values are an XOR delta: they have no base to be a delta of. */
	{
		uint8_t *v = t_xmalloc(q.off * 2), *vb = t_xmalloc(q.off * 2);
		size_t vcap = ll_bound(q.off * 2);
		uint8_t *vblob = t_xmalloc(vcap);
		ssize_t vl;

		for (size_t i = 0; i < q.off * 2; i++) {
			vb[i] = (uint8_t)t_rand(&seed);
			v[i] = vb[i] ^ (uint8_t)(i % 2 == 0 && t_rand(&seed) % 8 == 0);
		}
		vl = ll_encode(cx, vblob, vcap, v, q.off * 2, 2, vb, 3);
		CHECK(vl > 0 && vblob[3] >= LL_XOR, "delta values blob: mode %d", vblob[3]);
		tl = forge(bad, &q, SPP_X_FULL, vblob, (size_t)vl);
		expect_bad(bad, tl, &q, "full values as a delta");
		free(v);
		free(vb);
		free(vblob);
	}
	/* Lists (positions count off-support elements): one gap or the sum of gaps beyond the
	 * zeros, a count of 0 or beyond the zeros, a plen beyond the blob. Positions out of order
	 * or on the support cannot be written. */
	gaps[0] = (uint16_t)q.off;
	tl = forge(bad, &q, SPP_X_LIST, tail, forge_list(tail, 1, gaps, 1));
	expect_bad(bad, tl, &q, "gap beyond the zeros");
	gaps[0] = 0;
	gaps[1] = (uint16_t)(q.off - 1);
	tl = forge(bad, &q, SPP_X_LIST, tail, forge_list(tail, 2, gaps, 2));
	expect_bad(bad, tl, &q, "exception past the end");
	tl = forge(bad, &q, SPP_X_LIST, tail, forge_list(tail, 0, gaps, 0));
	expect_bad(bad, tl, &q, "count 0");
	tl = forge(bad, &q, SPP_X_LIST, tail, forge_list(tail, q.m, gaps, 1));
	expect_bad(bad, tl, &q, "count beyond the zeros");
	tl = forge_list(tail, 1, gaps, 1);
	put_le(tail + 8, tl, 8);
	tl = forge(bad, &q, SPP_X_LIST, tail, tl);
	expect_bad(bad, tl, &q, "plen beyond the blob");
	/* A valid forged list decodes (so the cases above fail for the reason named): gap 0 is
	 * the first zero, where the base is +0.0. */
	gaps[0] = 0;
	tl = forge(bad, &q, SPP_X_LIST, tail, forge_list(tail, 1, gaps, 1));
	CHECK(spp_decode(cx, out, q.n, bad, tl, q.base) == 0 && get_le(out + first_zero * 2, 2) ==
	      0x1111, "forged list");

	/* Every single-byte change of the first 40 bytes: -EBADMSG or a decode, never a crash
	 * (run under ASan by the fuzz build). */
	for (size_t i = 0; i < 40 && i < blen; i++) {
		for (unsigned v = 0; v < 256; v += 17) {
			int rc;

			memcpy(bad, good, blen);
			bad[i] = (uint8_t)v;
			rc = spp_decode(cx, out, q.n, bad, blen, q.base);
			CHECK(rc == 0 || rc == -EBADMSG, "byte %zu = %u: rc %d", i, v, rc);
		}
	}
	free(good);
	free(bad);
	free(out);
	free_pair(&q);
	free_pair(&other);
}

static void test_args(void)
{
	pair q = make_pair(DT_F32, 64, P_UNSTRUCTURED, 0.5, 0, T_SPP);
	size_t cap = spp_bound(q.n, 4);
	uint8_t *blob = t_xmalloc(cap);

	CHECK(spp_encode(cx, blob, cap, q.ft, q.base, q.n, 3, 3) == -EINVAL, "esize 3");
	CHECK(spp_encode(cx, blob, cap, q.ft, q.base, q.n - 2, 4, 3) == -EINVAL, "n not a multiple of esize");
	CHECK(spp_encode(cx, blob, cap, q.ft, NULL, q.n, 4, 3) == -EINVAL, "no base");
	CHECK(spp_encode(NULL, blob, cap, q.ft, q.base, q.n, 4, 3) == -EINVAL, "no ctx");
	CHECK(spp_encode(cx, blob, cap, q.ft, q.base, q.n, 4, 1000) == -EINVAL, "level");
	CHECK(spp_encode(cx, blob, cap - 1, q.ft, q.base, q.n, 4, 3) == -ENOBUFS, "cap");
	CHECK(spp_bound(SIZE_MAX, 4) == SIZE_MAX, "bound saturates");
	CHECK(spp_decode(NULL, blob, q.n, blob, cap, q.base) == -EINVAL, "decode no ctx");
	/* Same input, same blob. */
	{
		uint8_t *again = t_xmalloc(cap);
		ssize_t a = spp_encode(cx, blob, cap, q.ft, q.base, q.n, 4, 3);
		ssize_t b = spp_encode(cx, again, cap, q.ft, q.base, q.n, 4, 3);

		CHECK(a > 0 && a == b && memcmp(blob, again, (size_t)a) == 0, "deterministic");
		free(again);
	}
	free(blob);
	free_pair(&q);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} cases[] = {
		{ "roundtrip", test_roundtrip }, { "exceptions", test_exceptions },
		{ "specials", test_specials },   { "measure", test_measure },
		{ "broken", test_broken },       { "truncate", test_truncate },
		{ "hostile", test_hostile },     { "args", test_args },
	};

	CHECK(argc == 2, "usage: test_spp CASE");
	cx = cx_ctx_new();
	CHECK(cx, "cx_ctx_new");
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		if (strcmp(argv[1], cases[i].name) == 0) {
			cases[i].fn();
			cx_ctx_free(cx);
			return 0;
		}
	}
	fprintf(stderr, "test_spp: unknown case %s\n", argv[1]);
	return 2;
}
