/*
 * codec.c -- the codec registry, the blob header, and the per-thread context.
 *
 * Dispatch is a table indexed by the blob's codec id byte, so adding a codec is one line here
 * (its ops) plus its own file. Ids in the enum whose codec is not built in keep their name (so
 * `deltafs info` can still say what a blob is) but decode as -EBADMSG, like any unknown id.
 */
/* For ZSTD_compressSequences (zstd >= 1.5.0, exported by the shared library; meson checks that it
 * links): the one way zstd's API gives to entropy-code literals without a match search. */
#define ZSTD_STATIC_LINKING_ONLY

#include "codec.h"

#include <errno.h>
#include <stdlib.h>

#include <zstd_errors.h>

#include "cx_internal.h"

static const struct {
	const char *name;
	const struct cx_codec_ops *ops; /* NULL: id reserved, codec not built in */
} cx_codecs[] = {
	[CX_LOSSLESS] = { "lossless", &ll_ops },
	[CX_DELTADQ] = { "deltadq", &dq_ops },
	[CX_PALETTE] = { "palette", &pal_ops },
	[CX_SPP] = { "spp", &spp_ops },
	[CX_LOWRANK] = { "lowrank", &lr_ops },
};

#define CX_NCODECS (sizeof cx_codecs / sizeof cx_codecs[0])

static const struct cx_codec_ops *cx_ops_of(const void *blob, size_t blen)
{
	const uint8_t *b = blob;

	if (!b || blen < CX_HDR || b[0] != CX_MAGIC || b[1] >= CX_NCODECS)
		return NULL;
	return cx_codecs[b[1]].ops;
}

cx_ctx *cx_ctx_new(void)
{
	cx_ctx *ctx = calloc(1, sizeof *ctx);

	if (!ctx)
		return NULL;
	ctx->dctx = ZSTD_createDCtx();
	if (!ctx->dctx) {
		free(ctx);
		return NULL;
	}
	return ctx;
}

void cx_ctx_free(cx_ctx *ctx)
{
	if (!ctx)
		return;
	ZSTD_freeDCtx(ctx->dctx);
	ZSTD_freeCCtx(ctx->cctx);
	for (unsigned i = 0; i < CX_NSCRATCH; i++)
		free(ctx->scratch[i].p);
	free(ctx);
}

void *cx_scratch(cx_ctx *ctx, unsigned slot, size_t n)
{
	void *p;

	if (n <= ctx->scratch[slot].cap)
		return ctx->scratch[slot].p;
	/* free + alloc, not realloc: the old contents are dead and copying them is wasted time.
	 * Rounding up to 64 KiB keeps a context that sees a few chunk sizes from regrowing. */
	n = (n + 65535) & ~(size_t)65535;
	if (posix_memalign(&p, 64, n) != 0)
		return NULL;
	free(ctx->scratch[slot].p);
	ctx->scratch[slot].p = p;
	ctx->scratch[slot].cap = n;
	return p;
}

ZSTD_CCtx *cx_cctx(cx_ctx *ctx)
{
	if (!ctx->cctx)
		ctx->cctx = ZSTD_createCCtx();
	return ctx->cctx;
}

static ssize_t cx_zstd_err(size_t z)
{
	return ZSTD_getErrorCode(z) == ZSTD_error_memory_allocation ? -ENOMEM : -EINVAL;
}

/* Whether most of a plane is one byte value, from 256 samples: then LZ (runs) is likely to beat
 * Huffman's floor of 1 bit a byte, and is tried first. */
static int cx_mostly_one_byte(const uint8_t *p, size_t m)
{
	uint8_t cnt[256] = { 0 };
	unsigned top = 0;
	size_t step = m / 256 ? m / 256 : 1;

	for (size_t i = 0; i < m; i += step)
		if (++cnt[p[i]] > top)
			top = cnt[p[i]];
	return top * 8 >= (m < 256 ? m : 256) * 7;
}

ssize_t cx_zstd_plane(cx_ctx *ctx, ZSTD_CCtx *cctx, uint8_t *dst, size_t cap, const uint8_t *src,
		      size_t m, int lz)
{
	/* Both encodings go to scratch with room for any result: ZSTD_compressSequences reports a
	 * short destination as workSpace_tooSmall or even memory_allocation (zstd 1.5.4), so an
	 * error here is always a real one. */
	size_t bound = ZSTD_compressBound(m), z, best = SIZE_MAX;
	uint8_t *tmp = cx_scratch(ctx, CX_S_ZSTD, 2 * bound), *out = NULL;
	ZSTD_Sequence none;
	int lz_first = lz || cx_mostly_one_byte(src, m);

	if (!tmp)
		return -ENOMEM;
	/* Two passes at most, in the likelier order. A literal frame is at least m / 8 bytes
	 * (Huffman spends a bit a byte; only a block of one repeated byte goes below, and LZ
	 * finds that too), so an LZ frame that small ends the search, as does a literal frame of
	 * a quarter of m or more when LZ was not asked for. */
	for (int pass = 0; pass < 2; pass++) {
		int use_lz = pass == 0 ? lz_first : !lz_first;
		if (pass == 1 && (lz_first ? best <= m / 8 : best >= m / 4))
			break;
		z = use_lz ? ZSTD_compress2(cctx, tmp + bound, bound, src, m)
			   : ZSTD_compressSequences(cctx, tmp, bound, &none, 0, src, m);
		if (ZSTD_isError(z))
			return cx_zstd_err(z);
		if (z < best) {
			best = z;
			out = use_lz ? tmp + bound : tmp;
		}
	}
	if (best > cap)
		return 0;
	memcpy(dst, out, best);
	return (ssize_t)best;
}

int cx_decode(cx_ctx *ctx, void *dst, size_t n, const void *blob, size_t blen, const void *base)
{
	return cx_decode_shared(ctx, dst, n, blob, blen, base, NULL, 0);
}

int cx_decode_shared(cx_ctx *ctx, void *dst, size_t n, const void *blob, size_t blen,
		     const void *base, const void *shared, size_t slen)
{
	const struct cx_codec_ops *ops;

	if (!ctx || (!dst && n))
		return -EINVAL;
	ops = cx_ops_of(blob, blen);
	if (!ops)
		return -EBADMSG;
	if (ops->decode_shared)
		return ops->decode_shared(ctx, dst, n, blob, blen, base, shared, slen);
	return ops->decode(ctx, dst, n, blob, blen, base);
}

int cx_needs_shared(const void *blob, size_t blen)
{
	const struct cx_codec_ops *ops = cx_ops_of(blob, blen);

	if (!ops)
		return -EBADMSG;
	return ops->needs_shared ? ops->needs_shared(blob, blen) : 0;
}

int cx_needs_base(const void *blob, size_t blen)
{
	const struct cx_codec_ops *ops = cx_ops_of(blob, blen);

	return ops ? ops->needs_base(blob, blen) : -EBADMSG;
}

int cx_blob_codec(const void *blob, size_t blen)
{
	const uint8_t *b = blob;

	return cx_ops_of(blob, blen) ? b[1] : -EBADMSG;
}

const char *cx_codec_name(int codec)
{
	if (codec < 0 || (size_t)codec >= CX_NCODECS || !cx_codecs[codec].name)
		return "?";
	return cx_codecs[codec].name;
}
