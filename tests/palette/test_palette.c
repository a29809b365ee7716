/*
 * test_palette.c -- unit tests of the palette codec (codec/palette.h).
 *
 * One program, one case per argv[1] (meson registers each as its own test), on small seeded
 * inputs: normal(0, 0.02) weights with a few outliers, as real weight matrices have. Every case
 * checks properties that fail if the codec is wrong; none measures time.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "codec.h"
#include "palette.h"
#include "palref.h"

static const dt_id dts[] = { DT_BF16, DT_F16, DT_F32 };
static const size_t sizes[] = { 0, 1, 2, 7, 63, 64, 65, 1001, 4097 };

/* m elements of dtype dt: normal(0, sigma), every 97th scaled by 8 (outliers). */
static void *gen(dt_id dt, size_t m, double sigma, uint64_t seed)
{
	uint8_t *p = r_xmalloc(m * r_esize(dt));
	uint64_t s = seed;

	for (size_t i = 0; i < m; i++)
		r_store(dt, p, i, (float)(sigma * r_normal(&s) * (i % 97 == 5 ? 8 : 1)));
	return p;
}

/* Heavy tails, like a fine-tune's delta: normal(0, sigma) times a log-normal scale e^(1.5 z). A
 * local optimum of Lloyd is far from the global one on such data, so only an exact fit passes the
 * brute-force comparison. */
static void *gen_heavy(dt_id dt, size_t m, double sigma, uint64_t seed)
{
	uint8_t *p = r_xmalloc(m * r_esize(dt));
	uint64_t s = seed;

	for (size_t i = 0; i < m; i++)
		r_store(dt, p, i, (float)(sigma * r_normal(&s) * exp(1.5 * r_normal(&s))));
	return p;
}

static int tables_equal(const float *a, const float *b, uint32_t k)
{
	return memcmp(a, b, k * sizeof *a) == 0;
}

/* Fit, encode, decode; returns the blob (caller frees) and its size, checks the decode. */
static uint8_t *roundtrip(cx_ctx *cx, const void *src, size_t m, dt_id dt, const pal_table *t,
			  void *out, size_t *blen)
{
	size_t n = m * r_esize(dt), cap = pal_bound(n, dt, t->bits);
	uint8_t *blob = r_xmalloc(cap);
	ssize_t z = pal_encode(cx, blob, cap, src, n, dt, t, 3);
	int rc;

	CHECK(z > 0, "encode: %zd (m %zu, %s, bits %u)", z, m, dt_name(dt), t->bits);
	CHECK((size_t)z <= cap, "blob %zd > bound %zu", z, cap);
	rc = pal_decode(cx, out, n, blob, (size_t)z, NULL);
	CHECK(rc == 0, "decode: %d (m %zu, %s, bits %u)", rc, m, dt_name(dt), t->bits);
	*blen = (size_t)z;
	return blob;
}

/* ---- cases ----------------------------------------------------------------------------------- */

/* The histogram fit equals the brute-force optimum over every element, bit for bit, on data whose
 * sums are exact in double (16-bit values; for pal_fit_values multiples of 2^-12), so that any
 * difference is a difference in the clustering, not in rounding. */
static void t_bruteforce(void)
{
	static const size_t ms[] = { 1, 5, 100, 1000, 3000 };

	for (unsigned d = 0; d < 4; d++) {
		for (unsigned mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
			size_t m = ms[mi];
			void *src = (d < 2 ? gen : gen_heavy)(dts[d % 2], m, 0.02, 11 + mi);
			float *x = r_xmalloc(m * sizeof *x), ref[256];

			for (size_t i = 0; i < m; i++)
				x[i] = r_load(dts[d % 2], src, i);
			for (unsigned bits = 1; bits <= (m > 1000 ? 4u : 8u); bits++) {
				pal_table t;

				CHECK(pal_fit(src, m * 2, dts[d % 2], bits, &t) == 0, "fit");
				r_optimum(x, m, bits, ref);
				for (uint32_t j = 0; j < t.k; j++)
					ref[j] = r_round(dts[d % 2], ref[j]);
				CHECK(t.bits == bits && t.k == 1u << bits, "table shape");
				CHECK(tables_equal(t.c, ref, t.k),
				      "%s%s m %zu bits %u: histogram fit != brute-force optimum",
				      dt_name(dts[d % 2]), d < 2 ? "" : " heavy", m, bits);
			}
			free(x);
			free(src);
		}
	}
	/* Spikes: 80% of the elements on one value (0, as in a sparse delta, or not), the rest heavy
	 * tailed: where a quantile init wastes centroids and high counts weigh in the cost. */
	for (unsigned spike = 0; spike < 2; spike++) {
		for (unsigned bits = 2; bits <= 6; bits++) {
			size_t m = 2000;
			uint16_t *src = gen_heavy(DT_BF16, m, 0.02, 77 + bits);
			float *x = r_xmalloc(m * sizeof *x), ref[256];
			pal_table t;

			for (size_t i = 0; i < m; i++) {
				if (i % 5)
					src[i] = spike ? r_bf16(0.01f) : 0;
				x[i] = r_bf16_val(src[i]);
			}
			CHECK(pal_fit(src, m * 2, DT_BF16, bits, &t) == 0, "fit");
			r_optimum(x, m, bits, ref);
			for (uint32_t j = 0; j < t.k; j++)
				ref[j] = r_round(DT_BF16, ref[j]);
			CHECK(tables_equal(t.c, ref, t.k), "spike %u bits %u: histogram fit != optimum",
			      spike, bits);
			free(x);
			free(src);
		}
	}
	/* pal_fit_values on unsorted samples with repeats, with and without counts */
	for (unsigned bits = 1; bits <= 5; bits++) {
		size_t m = 3000;
		float *x = r_xmalloc(m * sizeof *x), ref[256];
		uint64_t s = bits, *cnt = r_xmalloc(m * sizeof *cnt), tot = 0;
		pal_table t, tc;

		for (size_t i = 0; i < m; i++)
			x[i] = (float)(rint(r_normal(&s) * 600) * 0x1p-12);
		CHECK(pal_fit_values(x, NULL, m, bits, &t) == 0, "fit values");
		r_optimum(x, m, bits, ref);
		CHECK(tables_equal(t.c, ref, t.k), "fit_values bits %u != brute-force optimum", bits);
		/* the same multiset as (first occurrence, count) pairs, zero counts elsewhere */
		for (size_t i = 0; i < m; i++) {
			cnt[i] = 0;
			for (size_t j = 0; j <= i; j++)
				if (x[j] == x[i]) {
					cnt[j]++;
					break;
				}
		}
		for (size_t i = 0; i < m; i++)
			tot += cnt[i];
		CHECK(tot == m, "count bookkeeping");
		CHECK(pal_fit_values(x, cnt, m, bits, &tc) == 0, "fit values counts");
		CHECK(tables_equal(t.c, tc.c, t.k), "counts change the fit at bits %u", bits);
		free(cnt);
		free(x);
	}
}

/* More distinct values than the exact fit's budget (K x values > 2^20): split points on groups of
 * adjacent values, then Lloyd on the full histogram. At K = 2 the optimum over all elements is a
 * scan of every split, and the fit must reach it; at K = 256 the fit must be a Lloyd fixed point
 * over all elements. */
static void t_coarse(void)
{
	size_t m = 600000;
	float *x = r_xmalloc(m * sizeof *x), *s = r_xmalloc(m * sizeof *s);
	double *S = r_xmalloc((m + 1) * sizeof *S), *S2 = r_xmalloc((m + 1) * sizeof *S2), best = INFINITY;
	double c[256], e;
	uint64_t seed = 21;
	pal_table t;
	size_t nd = 1;

	for (size_t i = 0; i < m; i++)
		x[i] = (float)(r_normal(&seed) * exp(r_normal(&seed)));
	memcpy(s, x, m * sizeof *s);
	qsort(s, m, sizeof *s, r_fcmp);
	S[0] = S2[0] = 0;
	for (size_t i = 0; i < m; i++) {
		nd += i && s[i] != s[i - 1];
		S[i + 1] = S[i] + s[i];
		S2[i + 1] = S2[i] + (double)s[i] * s[i];
	}
	CHECK(nd * 2 > (1u << 20), "%zu distinct values: not the grouped regime", nd);
	for (size_t j = 1; j < m; j++) {
		double l = S2[j] - S[j] * S[j] / (double)j;
		double r = S2[m] - S2[j] - (S[m] - S[j]) * (S[m] - S[j]) / (double)(m - j);

		best = l + r < best ? l + r : best;
	}
	CHECK(pal_fit_values(x, NULL, m, 1, &t) == 0, "fit");
	e = r_sse(x, m, t.c, 2);
	CHECK(fabs(e - best) <= 1e-9 * best, "K = 2: sse %.12g, optimum %.12g", e, best);
	/* K = 256 on 20000 of them */
	m = 20000;
	CHECK(pal_fit_values(x, NULL, m, 8, &t) == 0, "fit");
	for (uint32_t j = 0; j < 256; j++)
		c[j] = t.c[j];
	CHECK(r_lloyd(x, m, 256, c, 1) == 1, "a Lloyd step moves the grouped fit");
	for (uint32_t j = 0; j < 256; j++)
		CHECK(fabs(c[j] - t.c[j]) <= 1e-6 * fabs(c[j]), "centroid %u moved", j);
	free(S);
	free(S2);
	free(s);
	free(x);
}

/* Every element decodes to its nearest centroid of the blob's table, which is pal_fit's table, and
 * so lies within half the largest gap between adjacent centroids (or, outside the table's range,
 * at the distance to the end centroid). Both payload modes occur. */
static void t_roundtrip(void)
{
	cx_ctx *cx = cx_ctx_new();
	unsigned modes = 0;

	CHECK(cx, "ctx");
	for (unsigned d = 0; d < 3; d++) {
		dt_id dt = dts[d];

		for (unsigned si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
			size_t m = sizes[si], blen;
			void *src = gen(dt, m, 0.02, 100 * d + si);
			void *out = r_xmalloc(m * r_esize(dt));

			for (unsigned bits = 1; bits <= 8; bits++) {
				pal_table t, bt;
				dt_id bdt;
				uint8_t *blob;
				double gap = 0;

				CHECK(pal_fit(src, m * r_esize(dt), dt, bits, &t) == 0, "fit");
				for (uint32_t j = 0; j + 1 < t.k; j++) {
					CHECK(t.c[j] <= t.c[j + 1], "table not ascending");
					if (t.c[j + 1] - (double)t.c[j] > gap)
						gap = t.c[j + 1] - (double)t.c[j];
				}
				for (uint32_t j = 0; j < t.k; j++)
					CHECK(r_round(dt, t.c[j]) == t.c[j], "centroid not in dtype");
				blob = roundtrip(cx, src, m, dt, &t, out, &blen);
				modes |= 1u << blob[3];
				CHECK(pal_blob_table(blob, blen, &bdt, &bt) == 0 && bdt == dt,
				      "blob table");
				CHECK(bt.bits == bits && tables_equal(bt.c, t.c, t.k),
				      "blob table differs from the fit");
				CHECK(cx_needs_base(blob, blen) == 0, "palette needs no base");
				for (size_t i = 0; i < m; i++) {
					float x = r_load(dt, src, i), y = r_load(dt, out, i);
					double err = fabs((double)x - y), bound = gap / 2;

					if (x < t.c[0])
						bound = t.c[0] - (double)x;
					else if (x > t.c[t.k - 1])
						bound = (double)x - t.c[t.k - 1];
					CHECK(y == t.c[pal_nearest(&t, x)],
					      "%s bits %u m %zu: element %zu is not its nearest centroid",
					      dt_name(dt), bits, m, i);
					CHECK(err <= bound, "%s bits %u: |%g - %g| > %g", dt_name(dt), bits,
					      x, y, bound);
				}
				/* the generic entry point decodes it the same */
				if (m) {
					void *o2 = r_xmalloc(m * r_esize(dt));

					CHECK(cx_decode(cx, o2, m * r_esize(dt), blob, blen, NULL) == 0,
					      "cx_decode");
					CHECK(!memcmp(o2, out, m * r_esize(dt)), "cx_decode differs");
					free(o2);
				}
				free(blob);
			}
			free(out);
			free(src);
		}
	}
	CHECK(modes == 3, "payload modes seen: %#x (want dense and zstd)", modes);
	cx_ctx_free(cx);
}

/* Every truncation of a valid blob, in both payload modes, is -EBADMSG; so are a byte appended
 * and the header and table corruptions a decoder must catch. */
static void t_hostile(void)
{
	cx_ctx *cx = cx_ctx_new();
	unsigned modes = 0;

	CHECK(cx, "ctx");
	for (unsigned d = 0; d < 3; d++) {
		for (unsigned bits = 1; bits <= 8; bits++) {
			dt_id dt = dts[d];
			size_t m = 3001 + bits, n = m * r_esize(dt), blen;
			void *src = gen(dt, m, 0.02, 7 * bits + d), *out = r_xmalloc(n);
			pal_table t;
			uint8_t *blob, *bad;

			CHECK(pal_fit(src, n, dt, bits, &t) == 0, "fit");
			blob = roundtrip(cx, src, m, dt, &t, out, &blen);
			modes |= 1u << blob[3];
			bad = r_xmalloc(blen + 1);
			for (size_t l = 0; l < blen; l++) {
				memcpy(bad, blob, l);
				CHECK(pal_decode(cx, out, n, bad, l, NULL) == -EBADMSG,
				      "%s bits %u: truncation to %zu of %zu decoded", dt_name(dt), bits,
				      l, blen);
			}
			memcpy(bad, blob, blen);
			bad[blen] = 0;
			CHECK(pal_decode(cx, out, n, bad, blen + 1, NULL) == -EBADMSG, "extension");
			CHECK(pal_decode(cx, out, n - r_esize(dt), blob, blen, NULL) == -EBADMSG,
			      "wrong size");
			for (unsigned f = 2; f < 8; f++) { /* version, mode, dtype, bits, reserved */
				static const uint8_t delta[8] = { 0, 0, 1, 2, 1, 1, 1, 1 };

				memcpy(bad, blob, blen);
				bad[f] = (uint8_t)(bad[f] + delta[f]);
				if (f == 4 && bad[f] == DT_BF16) /* F16 + 1: another 2-byte float */
					bad[f] = DT_U16;
				CHECK(pal_decode(cx, out, n, bad, blen, NULL) == -EBADMSG,
				      "header byte %u", f);
			}
			/* a table out of order, or with a NaN */
			memcpy(bad, blob, blen);
			memcpy(bad + PAL_HDR, blob + PAL_HDR + r_esize(dt), r_esize(dt));
			memcpy(bad + PAL_HDR + r_esize(dt), blob + PAL_HDR, r_esize(dt));
			if (t.c[0] != t.c[1])
				CHECK(pal_decode(cx, out, n, bad, blen, NULL) == -EBADMSG, "order");
			memcpy(bad, blob, blen);
			memset(bad + PAL_HDR, 0xff, r_esize(dt));
			CHECK(pal_decode(cx, out, n, bad, blen, NULL) == -EBADMSG, "NaN centroid");
			free(bad);
			free(blob);
			free(out);
			free(src);
		}
	}
	CHECK(modes == 3, "payload modes seen: %#x (want dense and zstd)", modes);
	cx_ctx_free(cx);
}

/* Payload contents the encoder never writes: an index >= 2^bits in a PAL_ZSTD field, a set bit
 * past the last index. Blobs are built by hand around the codec's own table. */
static void t_fields(void)
{
	cx_ctx *cx = cx_ctx_new();
	uint8_t one = 0;
	size_t blen;
	pal_table t;
	uint8_t *blob, out[2 * 9], plane[5], frame[64], hand[256];
	uint16_t src[9];
	size_t z, off;

	CHECK(cx, "ctx");
	for (unsigned i = 0; i < 9; i++)
		src[i] = r_bf16((float)i);
	/* bits 3: dense payload of 9 indices = 27 bits in 4 bytes, 5 bits of padding */
	CHECK(pal_fit(src, sizeof src, DT_BF16, 3, &t) == 0, "fit");
	blob = roundtrip(cx, src, 9, DT_BF16, &t, out, &blen);
	CHECK(blob[3] == PAL_DENSE, "9 indices stay dense");
	off = PAL_HDR + 2 * 8;
	CHECK(blen == off + 4, "dense size %zu", blen);
	memcpy(hand, blob, blen);
	hand[blen - 1] |= 0x80;
	CHECK(pal_decode(cx, out, sizeof out, hand, blen, NULL) == -EBADMSG, "padding bit");
	/* the same 9 indices as a PAL_ZSTD payload: 4-bit fields, 5 bytes, upper nibble padding */
	for (unsigned i = 0; i < 5; i++)
		plane[i] = (uint8_t)(pal_nearest(&t, (float)(2 * i)) |
				     (2 * i + 1 < 9 ? pal_nearest(&t, (float)(2 * i + 1)) << 4 : 0));
	z = ZSTD_compress(frame, sizeof frame, plane, sizeof plane, 1);
	CHECK(!ZSTD_isError(z) && off + z <= sizeof hand, "zstd");
	memcpy(hand, blob, off);
	hand[3] = PAL_ZSTD;
	memcpy(hand + off, frame, z);
	CHECK(pal_decode(cx, out, sizeof out, hand, off + z, NULL) == 0, "hand-made zstd blob");
	for (unsigned i = 0; i < 9; i++)
		CHECK(r_bf16_val((uint16_t)(out[2 * i] | out[2 * i + 1] << 8)) ==
			      t.c[pal_nearest(&t, (float)i)],
		      "hand-made element %u", i);
	plane[1] |= 0x08; /* index 8 + x in a 3-bit palette */
	z = ZSTD_compress(frame, sizeof frame, plane, sizeof plane, 1);
	memcpy(hand + off, frame, z);
	CHECK(pal_decode(cx, out, sizeof out, hand, off + z, NULL) == -EBADMSG, "index >= K");
	plane[1] &= 0xf7;
	plane[4] |= 0x10; /* the nibble after the 9th index */
	z = ZSTD_compress(frame, sizeof frame, plane, sizeof plane, 1);
	memcpy(hand + off, frame, z);
	CHECK(pal_decode(cx, out, sizeof out, hand, off + z, NULL) == -EBADMSG, "zstd padding");
	/* two frames back to back, and a frame of the wrong size */
	plane[4] &= 0x0f;
	z = ZSTD_compress(frame, sizeof frame, plane, sizeof plane, 1);
	memcpy(hand + off, frame, z);
	memcpy(hand + off + z, frame, z);
	CHECK(pal_decode(cx, out, sizeof out, hand, off + 2 * z, NULL) == -EBADMSG, "two frames");
	z = ZSTD_compress(frame, sizeof frame, plane, 4, 1);
	memcpy(hand + off, frame, z);
	CHECK(pal_decode(cx, out, sizeof out, hand, off + z, NULL) == -EBADMSG, "short frame");
	/* an empty chunk is never compressed */
	memset(hand + 8, 0, 8); /* n = 0 */
	z = ZSTD_compress(frame, sizeof frame, &one, 0, 1);
	memcpy(hand + off, frame, z);
	CHECK(pal_decode(cx, out, 0, hand, off + z, NULL) == -EBADMSG, "empty zstd");
	free(blob);
	cx_ctx_free(cx);
}

/* NaN and infinity are refused (-EDOM: the caller stores the tensor lossless); a NaN with weight
 * 0 is no value at all. */
static void t_nonfinite(void)
{
	cx_ctx *cx = cx_ctx_new();
	const float bad[] = { NAN, INFINITY, -INFINITY };
	uint8_t blob[1024];

	CHECK(cx, "ctx");
	for (unsigned d = 0; d < 3; d++) {
		for (unsigned b = 0; b < 3; b++) {
			dt_id dt = dts[d];
			void *src = gen(dt, 50, 1, 3);
			pal_table t;

			CHECK(pal_fit(src, 50 * r_esize(dt), dt, 2, &t) == 0, "fit");
			if (dt == DT_F32)
				memcpy((uint8_t *)src + 4 * 17, &bad[b], 4);
			else
				r_store(dt, src, 17, bad[b]);
			CHECK(pal_fit(src, 50 * r_esize(dt), dt, 2, &t) == -EDOM, "fit %s", dt_name(dt));
			CHECK(pal_encode(cx, blob, sizeof blob, src, 50 * r_esize(dt), dt, &t, 3) ==
				      -EDOM,
			      "encode %s", dt_name(dt));
			free(src);
		}
	}
	{
		float v[] = { 1, NAN, 2 };
		uint64_t c[] = { 1, 0, 1 };
		pal_table t;

		CHECK(pal_fit_values(v, NULL, 3, 2, &t) == -EDOM, "NaN sample");
		CHECK(pal_fit_values(v, c, 3, 2, &t) == 0 && t.c[0] == 1 && t.c[1] == 2 &&
			      t.c[3] == 2,
		      "NaN of weight 0");
	}
	cx_ctx_free(cx);
}

/* Small and degenerate inputs: nothing at all, fewer distinct values than centroids (decoded
 * exactly), bad arguments, a short destination. */
static void t_edge(void)
{
	cx_ctx *cx = cx_ctx_new();
	pal_table t;
	uint8_t blob[4096], out[2 * 301];
	uint16_t src[301];
	uint64_t zero[3] = { 0, 0, 0 };
	float v[3] = { 1, 2, 3 };
	ssize_t z;

	CHECK(cx, "ctx");
	CHECK(pal_fit_values(NULL, NULL, 0, 3, &t) == 0 && t.k == 8 && t.c[0] == 0 && t.c[7] == 0,
	      "empty fit");
	CHECK(pal_fit_values(v, zero, 3, 3, &t) == 0 && t.c[7] == 0, "all weights 0");
	CHECK(pal_fit(NULL, 0, DT_F16, 4, &t) == 0 && t.k == 16, "empty tensor");
	/* 5 distinct values in 301 elements at bits 3: lossless */
	for (unsigned i = 0; i < 301; i++)
		src[i] = r_bf16((float)((int)(i * 7 % 5) - 2) * 0.125f);
	CHECK(pal_fit(src, sizeof src, DT_BF16, 3, &t) == 0, "fit");
	CHECK(t.c[0] == -0.25f && t.c[4] == 0.25f && t.c[5] == 0.25f && t.c[7] == 0.25f,
	      "few distinct values");
	z = pal_encode(cx, blob, sizeof blob, src, sizeof src, DT_BF16, &t, 3);
	CHECK(z > 0 && pal_decode(cx, out, sizeof out, blob, (size_t)z, NULL) == 0, "round trip");
	CHECK(!memcmp(out, src, sizeof src), "few distinct values must round-trip exactly");
	/* -0 and +0 are one value */
	src[0] = 0x8000;
	src[1] = 0;
	CHECK(pal_fit(src, 4, DT_BF16, 1, &t) == 0 && t.c[0] == 0 && t.c[1] == 0, "+-0");
	/* bad arguments */
	CHECK(pal_fit(src, 3, DT_BF16, 3, &t) == -EINVAL, "odd byte count");
	CHECK(pal_fit(src, 4, DT_I16, 3, &t) == -EINVAL, "integer dtype");
	CHECK(pal_fit(src, 4, DT_BF16, 0, &t) == -EINVAL && pal_fit(src, 4, DT_BF16, 9, &t) ==
		      -EINVAL,
	      "bits");
	CHECK(pal_bound(4, DT_I16, 3) == 0 && pal_bound(4, DT_BF16, 9) == 0, "bound of bad args");
	CHECK(pal_fit(src, sizeof src, DT_BF16, 3, &t) == 0, "fit");
	CHECK(pal_encode(cx, blob, pal_bound(sizeof src, DT_BF16, 3) - 1, src, sizeof src,
			 DT_BF16, &t, 3) == -ENOBUFS,
	      "short destination");
	t.c[2] = t.c[1] - 1;
	CHECK(pal_encode(cx, blob, sizeof blob, src, sizeof src, DT_BF16, &t, 3) == -EINVAL,
	      "unsorted table");
	t.c[2] = t.c[3];
	t.k = 4;
	CHECK(pal_encode(cx, blob, sizeof blob, src, sizeof src, DT_BF16, &t, 3) == -EINVAL,
	      "k != 2^bits");
	/* a table beyond F16's range cannot be stored as F16 */
	CHECK(pal_fit_values((float[]){ 1, 1e6f }, NULL, 2, 1, &t) == 0, "fit");
	CHECK(pal_encode(cx, blob, sizeof blob, src, 8, DT_F16, &t, 3) == -EINVAL, "F16 range");
	/* Most weight on the last of 5 values: the optimum keeps it alone and splits the rest
	 * {0, 1} {3} {7} (sse 0.5; {0} {1, 3} {7} costs 2, {0} {1} {3, 7} 8). */
	CHECK(pal_fit_values((float[]){ 7, 0, 20, 3, 1 }, (uint64_t[]){ 1, 1, 100, 1, 1 }, 5, 2,
			     &t) == 0,
	      "fit");
	CHECK(t.c[0] == 0.5f && t.c[1] == 3 && t.c[2] == 7 && t.c[3] == 20, "top-heavy: %g %g %g %g",
	      t.c[0], t.c[1], t.c[2], t.c[3]);
	/* pal_nearest: ties go down, NaN to 0 */
	CHECK(pal_fit_values((float[]){ 1, 2, 4, 8 }, NULL, 4, 2, &t) == 0, "fit");
	CHECK(pal_nearest(&t, 1.5f) == 0 && pal_nearest(&t, 1.5001f) == 1 &&
		      pal_nearest(&t, 100) == 3 && pal_nearest(&t, -100) == 0 &&
		      pal_nearest(&t, NAN) == 0,
	      "nearest");
	cx_ctx_free(cx);
}

/* Same input, same table and same blob, whatever the order of the samples; and the table of a
 * fixed input is the one recorded here, so a machine whose arithmetic differs fails. The input is
 * built with integer arithmetic only (a sum of 12 uniform bytes: near-normal, no libm). */
#define PAL_GOLDEN 0x91ccf4a0abc7a3f1ull

static void t_determinism(void)
{
	cx_ctx *cx = cx_ctx_new();
	size_t m = 20000;
	uint16_t *src = r_xmalloc(m * 2);
	float *x = r_xmalloc(m * sizeof *x);
	uint8_t *b1 = r_xmalloc(pal_bound(m * 2, DT_BF16, 4)), *b2 = r_xmalloc(pal_bound(m * 2, DT_BF16, 4));
	uint64_t s = 42, h = 0xcbf29ce484222325ull;
	pal_table t1, t2;
	ssize_t z1, z2;

	CHECK(cx, "ctx");
	for (size_t i = 0; i < m; i++) {
		int acc = 0;

		for (int j = 0; j < 12; j++)
			acc += (int)(r_rand(&s) & 0xff);
		src[i] = r_bf16((float)(acc - 12 * 255 / 2) * 0x1p-12f);
		x[i] = r_bf16_val(src[i]);
	}
	CHECK(pal_fit(src, m * 2, DT_BF16, 4, &t1) == 0 && pal_fit(src, m * 2, DT_BF16, 4, &t2) == 0,
	      "fit");
	CHECK(!memcmp(&t1, &t2, sizeof t1), "two fits differ");
	/* the same values as unsorted samples */
	CHECK(pal_fit_values(x, NULL, m, 4, &t2) == 0, "fit values");
	for (uint32_t j = 0; j < 16; j++)
		t2.c[j] = r_round(DT_BF16, t2.c[j]);
	CHECK(tables_equal(t1.c, t2.c, 16), "samples and histogram differ");
	z1 = pal_encode(cx, b1, pal_bound(m * 2, DT_BF16, 4), src, m * 2, DT_BF16, &t1, 3);
	z2 = pal_encode(cx, b2, pal_bound(m * 2, DT_BF16, 4), src, m * 2, DT_BF16, &t1, 3);
	CHECK(z1 > 0 && z1 == z2 && !memcmp(b1, b2, (size_t)z1), "two encodes differ");
	for (uint32_t j = 0; j < 16; j++) {
		uint16_t c = r_bf16(t1.c[j]);

		h = (h ^ c) * 0x100000001b3ull;
	}
	printf("table hash %#llx\n", (unsigned long long)h);
	CHECK(h == PAL_GOLDEN, "table hash %#llx, recorded %#llx", (unsigned long long)h,
	      (unsigned long long)PAL_GOLDEN);
	free(b1);
	free(b2);
	free(x);
	free(src);
	cx_ctx_free(cx);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} cases[] = {
		{ "bruteforce", t_bruteforce }, { "roundtrip", t_roundtrip },
		{ "hostile", t_hostile },       { "fields", t_fields },
		{ "nonfinite", t_nonfinite },   { "edge", t_edge },
		{ "determinism", t_determinism }, { "coarse", t_coarse },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (argc == 2 && !strcmp(argv[1], cases[i].name)) {
			cases[i].fn();
			return 0;
		}
	fprintf(stderr, "usage: %s CASE\n", argv[0]);
	return 2;
}
