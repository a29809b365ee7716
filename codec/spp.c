/*
 * spp.c -- sparsity-preserving deltas (format and zero rule: spp.h).
 *
 * Data path. Encode: one pass over the chunk packs the base's support elements (scratch slot 1)
 * and the fine-tune's (slot 2) and counts the exceptions; the packed pair goes through ll_encode,
 * which picks XOR, SUB or no delta and byte-groups the planes as for any dense chunk. With
 * exceptions, the full off-support values are encoded into the blob, the list into slot 3, and
 * the list replaces them if smaller. Decode: pack the base's support (slot 1), ll_decode the
 * support values (slot 2; ll_decode itself uses slot 0), for SPP_X_FULL the off-support values
 * (slot 3), then one merge pass writes every element of dst once; a list is applied after it.
 *
 * The pack and merge loops select with the zero test instead of branching on it: on an
 * unstructured 50 % support the branch would be mispredicted every other element. They read or
 * write one element past the packed data when the last elements are off the support, so every
 * packed buffer is asked for one element more than it holds.
 */
#include "spp.h"

#include <errno.h>

#include <zstd.h>

#include "cx_internal.h"
#include "lossless.h"

enum { SPP_S_BASE = 1, SPP_S_VALS = 2, SPP_S_ALT = 3 };

#define AI static inline __attribute__((always_inline))

/* ---- elements -------------------------------------------------------------------------------- */

AI uint64_t spp_ld(const uint8_t *p, unsigned es)
{
	uint8_t v1;
	uint16_t v2;
	uint32_t v4;
	uint64_t v8;

	switch (es) {
	case 1: memcpy(&v1, p, 1); return v1;
	case 2: memcpy(&v2, p, 2); return v2;
	case 4: memcpy(&v4, p, 4); return v4;
	default: memcpy(&v8, p, 8); return v8;
	}
}

AI void spp_st(uint8_t *p, uint64_t v, unsigned es)
{
	uint8_t v1 = (uint8_t)v;
	uint16_t v2 = (uint16_t)v;
	uint32_t v4 = (uint32_t)v;

	switch (es) {
	case 1: memcpy(p, &v1, 1); break;
	case 2: memcpy(p, &v2, 2); break;
	case 4: memcpy(p, &v4, 4); break;
	default: memcpy(p, &v, 8); break;
	}
}

/* Bits of an element other than its sign bit: zero iff the element is +-0.0 (spp.h). */
AI uint64_t spp_mag(unsigned es)
{
	return es == 8 ? UINT64_MAX >> 1 : (UINT64_C(1) << (8 * es - 1)) - 1;
}

static int spp_esize_ok(unsigned es)
{
	return es == 1 || es == 2 || es == 4 || es == 8;
}

/* Instantiates a kernel once per element size, so es is a constant inside its loops. */
#define SPP_BY_ES(es, call)                                                                        \
	switch (es) {                                                                              \
	case 1: call(1); break;                                                                    \
	case 2: call(2); break;                                                                    \
	case 4: call(4); break;                                                                    \
	default: call(8); break;                                                                   \
	}

/* ---- kernels --------------------------------------------------------------------------------- */

/* Pack the support of base (m elements) into pb, and, if ft is not NULL, ft's elements there into
 * pf. pb and pf hold one element more than the support. Returns the support's size; counts the
 * off-support elements where ft differs from base in *nexc. */
AI size_t spp_pack_es(uint8_t *restrict pb, uint8_t *restrict pf, const uint8_t *restrict base,
		      const uint8_t *restrict ft, size_t m, uint64_t *nexc, unsigned es)
{
	const uint64_t mag = spp_mag(es);
	size_t k = 0;
	uint64_t x = 0;

	for (size_t i = 0; i < m; i++) {
		uint64_t b = spp_ld(base + i * es, es);
		size_t on = (b & mag) != 0;

		spp_st(pb + k * es, b, es);
		if (ft) {
			uint64_t f = spp_ld(ft + i * es, es);

			spp_st(pf + k * es, f, es);
			x += !on & (f != b);
		}
		k += on;
	}
	if (nexc)
		*nexc = x;
	return k;
}

static size_t spp_pack(uint8_t *pb, uint8_t *pf, const uint8_t *base, const uint8_t *ft, size_t m,
		       uint64_t *nexc, unsigned es)
{
	size_t k = 0;

#define SPP_PACK(E) k = spp_pack_es(pb, pf, base, ft, m, nexc, E)
	SPP_BY_ES(es, SPP_PACK)
#undef SPP_PACK
	return k;
}

/* dst = sup on the support, off-support: the base, XOR full (in order) if not NULL. sup and full
 * hold one element more than they are read for. */
AI void spp_merge_es(uint8_t *restrict dst, const uint8_t *restrict base,
		     const uint8_t *restrict sup, const uint8_t *restrict full, size_t m, unsigned es)
{
	const uint64_t mag = spp_mag(es);
	size_t k = 0, j = 0;

	for (size_t i = 0; i < m; i++) {
		uint64_t b = spp_ld(base + i * es, es), s = spp_ld(sup + k * es, es), o = b;
		size_t on = (b & mag) != 0;

		if (full)
			o ^= spp_ld(full + j * es, es);
		spp_st(dst + i * es, on ? s : o, es);
		k += on;
		j += !on;
	}
}

static void spp_merge(uint8_t *dst, const uint8_t *base, const uint8_t *sup, const uint8_t *full,
		      size_t m, unsigned es)
{
#define SPP_MERGE(E) spp_merge_es(dst, base, sup, full, m, E)
	SPP_BY_ES(es, SPP_MERGE)
#undef SPP_MERGE
}

/* ---- measurement ------------------------------------------------------------------------------ */

/* 1 if every group of nm_m elements has at most nm_m / 2 non-zeros. */
#define SPP_BLOCK 64

/* Elements of width T whose bits under mask are all zero. */
#define SPP_COUNT(T, NAME)                                                                         \
	static uint64_t NAME(const uint8_t *p, size_t n, T mask)                                   \
	{                                                                                          \
		uint64_t zeros = 0;                                                                \
		size_t i = 0;                                                                      \
		for (; i + SPP_BLOCK <= n; i += SPP_BLOCK) {                                       \
			unsigned c = 0;                                                            \
			for (unsigned j = 0; j < SPP_BLOCK; j++) {                                 \
				T v;                                                               \
				memcpy(&v, p + (i + j) * sizeof(T), sizeof(T));                    \
				c += (v & mask) == 0;                                              \
			}                                                                          \
			zeros += c;                                                                \
		}                                                                                  \
		for (; i < n; i++) {                                                               \
			T v;                                                                       \
			memcpy(&v, p + i * sizeof(T), sizeof(T));                                  \
			zeros += (v & mask) == 0;                                                  \
		}                                                                                  \
		return zeros;                                                                      \
	}
SPP_COUNT(uint16_t, spp_count16)
SPP_COUNT(uint32_t, spp_count32)

static int spp_nm_ok(const uint8_t *p, size_t m, unsigned es, uint64_t zmask, unsigned nm_m)
{
	if (m == 0 || m % nm_m)
		return 0;
	for (size_t g = 0; g < m; g += nm_m) {
		unsigned nz = 0;

		for (unsigned i = 0; i < nm_m; i++)
			nz += (spp_ld(p + (g + i) * es, es) & zmask) != 0;
		if (nz > nm_m / 2)
			return 0;
	}
	return 1;
}

int spp_measure(const void *src, size_t n_elems, dt_id dt, spp_stats *out)
{
	const uint8_t *p = src;
	unsigned es = dt_size(dt);
	uint64_t zmask, zeros = 0;

	if (!out || !es || (!src && n_elems))
		return -EINVAL;
	zmask = dt_is_float(dt) ? spp_mag(es) : (es == 8 ? UINT64_MAX : (UINT64_C(1) << 8 * es) - 1);
	/* Typed loops for the common widths: the generic load kept this at ~1 GB/s, a tenth of
	 * an ingest's time on a dense base. gcc -O2's "very cheap" vectoriser takes only a loop of
	 * a fixed trip count (as in lossless.c's kernels): blocks of SPP_BLOCK elements counted into
	 * a small accumulator, then a scalar tail. The plain loop stayed scalar and was 9% of a
	 * lossless fine-tune's ingest (perf, 1 GB BF16 pair). */
	if (es == 2)
		zeros = spp_count16(p, n_elems, (uint16_t)zmask);
	else if (es == 4)
		zeros = spp_count32(p, n_elems, (uint32_t)zmask);
	else
		for (size_t i = 0; i < n_elems; i++)
			zeros += (spp_ld(p + i * es, es) & zmask) == 0;
	out->n = n_elems;
	out->zeros = zeros;
	out->nm_n = out->nm_m = 0;
	/* A tensor with no zeros in some group fails at once, so the dense majority costs little. */
	for (unsigned nm_m = 4; nm_m <= 8; nm_m *= 2) {
		if (spp_nm_ok(p, n_elems, es, zmask, nm_m)) {
			out->nm_n = nm_m / 2;
			out->nm_m = nm_m;
			break;
		}
	}
	return 0;
}

int spp_broken_zeros(const void *ft, const void *base, size_t n, unsigned esize, uint64_t *count)
{
	const uint8_t *f = ft, *b = base;
	uint64_t mag, c = 0;

	if (!count || !spp_esize_ok(esize) || n % esize || (n && (!ft || !base)))
		return -EINVAL;
	mag = spp_mag(esize);
	for (size_t i = 0; i < n / esize; i++)
		c += (unsigned)!(spp_ld(b + i * esize, esize) & mag) &
		     (unsigned)!!(spp_ld(f + i * esize, esize) & mag);
	*count = c;
	return 0;
}

/* ---- blobs ----------------------------------------------------------------------------------- */

/* Bytes of one gap of an exception list over m off-support elements: a gap is < m. */
static unsigned spp_gap_width(size_t m)
{
	return m <= (1u << 16) ? 2 : (uint64_t)m <= (UINT64_C(1) << 32) ? 4 : 8;
}

size_t spp_bound(size_t n, unsigned esize)
{
	(void)esize;
	/* Support blob + full off-support blob, each ll_bound of its bytes; a list is only kept
	 * when smaller than the full blob. */
	return n > SIZE_MAX - SPP_HDR - 2 * LL_HDR ? SIZE_MAX : SPP_HDR + 2 * LL_HDR + n;
}

static void spp_put_header(uint8_t *d, int xmode, unsigned es, size_t n, size_t slen)
{
	d[0] = CX_MAGIC;
	d[1] = CX_SPP;
	d[2] = SPP_VERSION;
	d[3] = (uint8_t)xmode;
	d[4] = (uint8_t)es;
	d[5] = d[6] = d[7] = 0;
	cx_wr64(d + 8, n);
	cx_wr64(d + 16, slen);
}

/* The exception list (nexc entries) of a chunk of m elements, off of them off the support, into
 * out (capacity cap): u64 count, u64 plen, gaps blob, values blob. Returns its size or a negative
 * errno. */
static ssize_t spp_encode_list(cx_ctx *cx, uint8_t *out, size_t cap, const uint8_t *src,
			       const uint8_t *base, size_t m, size_t off, uint64_t nexc, unsigned es,
			       int level)
{
	const uint64_t mag = spp_mag(es);
	unsigned w = spp_gap_width(off);
	uint8_t *gaps = cx_scratch(cx, SPP_S_BASE, nexc * w), *vals;
	size_t k = 0, j = 0, prev = 0;
	ssize_t pl, vl;

	if (!gaps)
		return -ENOMEM;
	vals = cx_scratch(cx, SPP_S_VALS, nexc * es);
	if (!vals)
		return -ENOMEM;
	for (size_t i = 0; i < m; i++) {
		uint64_t b = spp_ld(base + i * es, es), f = spp_ld(src + i * es, es);

		if (b & mag)
			continue;
		if (f != b) {
			spp_st(gaps + k * w, j - prev, w);
			spp_st(vals + k * es, f ^ b, es);
			prev = j + 1;
			k++;
		}
		j++;
	}
	pl = ll_encode(cx, out + 16, cap - 16, gaps, nexc * w, w, NULL, level);
	if (pl < 0)
		return pl;
	vl = ll_encode(cx, out + 16 + pl, cap - 16 - (size_t)pl, vals, nexc * es, es, NULL, level);
	if (vl < 0)
		return vl;
	cx_wr64(out, nexc);
	cx_wr64(out + 8, (uint64_t)pl);
	return 16 + pl + vl;
}

ssize_t spp_encode(cx_ctx *cx, void *dst, size_t cap, const void *src, const void *base, size_t n,
		   unsigned esize, int level)
{
	uint8_t *d = dst, *pb, *pf, *alt;
	size_t m, s, off, pos, acap;
	uint64_t nexc;
	ssize_t sl, fl, ll;

	if (!cx || !d || (n && (!src || !base)) || !spp_esize_ok(esize) || n % esize ||
	    level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
		return -EINVAL;
	if (cap < spp_bound(n, esize))
		return -ENOBUFS;
	m = n / esize;
	pb = cx_scratch(cx, SPP_S_BASE, n + esize);
	pf = cx_scratch(cx, SPP_S_VALS, n + esize);
	if (!pb || !pf)
		return -ENOMEM;
	s = spp_pack(pb, pf, base, src, m, &nexc, esize);
	off = m - s;
	sl = ll_encode(cx, d + SPP_HDR, cap - SPP_HDR, pf, s * esize, esize, pb, level);
	if (sl < 0)
		return sl;
	pos = SPP_HDR + (size_t)sl;
	if (nexc == 0) {
		spp_put_header(d, SPP_X_NONE, esize, n, (size_t)sl);
		return (ssize_t)pos;
	}
	/* The support values are encoded: their slot now takes the fine-tune's off-support ones. */
	pf = cx_scratch(cx, SPP_S_VALS, off * esize + esize);
	if (!pf)
		return -ENOMEM;
	for (size_t i = 0, j = 0; i < m; i++) {
		uint64_t b = spp_ld((const uint8_t *)base + i * esize, esize);

		if (b & spp_mag(esize))
			continue;
		spp_st(pf + j++ * esize, b ^ spp_ld((const uint8_t *)src + i * esize, esize), esize);
	}
	fl = ll_encode(cx, d + pos, cap - pos, pf, off * esize, esize, NULL, level);
	if (fl < 0)
		return fl;
	acap = 16 + ll_bound(nexc * spp_gap_width(off)) + ll_bound(nexc * esize);
	alt = cx_scratch(cx, SPP_S_ALT, acap);
	if (!alt)
		return -ENOMEM;
	ll = spp_encode_list(cx, alt, acap, src, base, m, off, nexc, esize, level);
	if (ll < 0)
		return ll;
	if (ll < fl) {
		memcpy(d + pos, alt, (size_t)ll);
		spp_put_header(d, SPP_X_LIST, esize, n, (size_t)sl);
		return (ssize_t)(pos + (size_t)ll);
	}
	spp_put_header(d, SPP_X_FULL, esize, n, (size_t)sl);
	return (ssize_t)(pos + (size_t)fl);
}

/* Decode a sub-blob that has no base (gaps, exception values): a delta there is a malformed blob,
 * not a missing argument, so it is -EBADMSG where ll_decode would say -EINVAL. */
static int spp_ll_plain(cx_ctx *cx, uint8_t *dst, size_t n, const uint8_t *blob, size_t len)
{
	if (cx_needs_base(blob, len) != 0)
		return -EBADMSG;
	return ll_decode(cx, dst, n, blob, len, NULL);
}

/* Apply an exception list (p, len bytes: count, plen, gaps blob, values blob) to dst. */
static int spp_apply_list(cx_ctx *cx, uint8_t *dst, const uint8_t *base, size_t off,
			  const uint8_t *p, size_t len, unsigned es)
{
	const uint64_t mag = spp_mag(es);
	unsigned w = spp_gap_width(off);
	uint64_t cnt, plen, end = 0, next;
	uint8_t *gaps, *vals;
	size_t k = 0, j = 0;
	int rc;

	if (len < 16)
		return -EBADMSG;
	cnt = cx_rd64(p);
	plen = cx_rd64(p + 8);
	if (cnt == 0 || cnt > off || plen > len - 16)
		return -EBADMSG;
	gaps = cx_scratch(cx, SPP_S_BASE, cnt * w);
	vals = cx_scratch(cx, SPP_S_VALS, cnt * es);
	if (!gaps || !vals)
		return -ENOMEM;
	rc = spp_ll_plain(cx, gaps, cnt * w, p + 16, plen);
	if (rc < 0)
		return rc;
	rc = spp_ll_plain(cx, vals, cnt * es, p + 16 + plen, len - 16 - plen);
	if (rc < 0)
		return rc;
	/* All positions inside the off-support elements before any is applied. */
	for (size_t i = 0; i < cnt; i++) {
		uint64_t g = spp_ld(gaps + i * w, w);

		if (g >= off - end)
			return -EBADMSG;
		end += g + 1;
	}
	next = spp_ld(gaps, w);
	for (size_t i = 0; k < cnt; i++) {
		uint64_t b = spp_ld(base + i * es, es);

		if (b & mag)
			continue;
		if (j++ == next) {
			spp_st(dst + i * es, spp_ld(vals + k * es, es) ^ b, es);
			if (++k < cnt)
				next = j + spp_ld(gaps + k * w, w);
		}
	}
	return 0;
}

int spp_decode(cx_ctx *cx, void *dst, size_t n, const void *blob, size_t blen, const void *base)
{
	const uint8_t *b = blob;
	uint8_t *pb, *sup, *full = NULL;
	size_t m, s, off, rest;
	uint64_t slen;
	unsigned es;
	int xmode, rc;

	if (!cx || (!dst && n))
		return -EINVAL;
	if (!b || blen < SPP_HDR || b[0] != CX_MAGIC || b[1] != CX_SPP || b[2] != SPP_VERSION)
		return -EBADMSG;
	xmode = b[3];
	es = b[4];
	if (xmode > SPP_X_FULL || !spp_esize_ok(es) || b[5] || b[6] || b[7] ||
	    cx_rd64(b + 8) != n || n % es)
		return -EBADMSG;
	slen = cx_rd64(b + 16);
	if (slen > blen - SPP_HDR)
		return -EBADMSG;
	if (!base && n)
		return -EINVAL;
	rest = blen - SPP_HDR - (size_t)slen;
	m = n / es;
	pb = cx_scratch(cx, SPP_S_BASE, n + es);
	sup = cx_scratch(cx, SPP_S_VALS, n + es);
	if (!pb || !sup)
		return -ENOMEM;
	s = spp_pack(pb, NULL, base, NULL, m, NULL, es);
	off = m - s;
	rc = ll_decode(cx, sup, s * es, b + SPP_HDR, (size_t)slen, pb);
	if (rc < 0)
		return rc;
	if (xmode == SPP_X_NONE && rest)
		return -EBADMSG;
	if (xmode == SPP_X_FULL) {
		if (off == 0)
			return -EBADMSG;
		full = cx_scratch(cx, SPP_S_ALT, off * es + es);
		if (!full)
			return -ENOMEM;
		rc = spp_ll_plain(cx, full, off * es, b + SPP_HDR + slen, rest);
		if (rc < 0)
			return rc;
	}
	if (n)
		spp_merge(dst, base, sup, full, m, es);
	if (xmode == SPP_X_LIST)
		return spp_apply_list(cx, dst, base, off, b + SPP_HDR + slen, rest, es);
	return 0;
}

/* Every SPP blob needs its base (the support is the base's); the fixed header is checked whole,
 * so that a blob this says yes to has at least a well-formed header. */
static int spp_needs_base(const uint8_t *b, size_t blen)
{
	if (blen < SPP_HDR || b[2] != SPP_VERSION || b[3] > SPP_X_FULL || !spp_esize_ok(b[4]) ||
	    b[5] || b[6] || b[7] || cx_rd64(b + 16) > blen - SPP_HDR)
		return -EBADMSG;
	return 1;
}

const struct cx_codec_ops spp_ops = {
	.decode = spp_decode,
	.needs_base = spp_needs_base,
};
