/*
 * cx_internal.h -- what the codecs of codec/ share and nothing outside codec/ may use.
 *
 * struct cx_ctx is the per-thread state behind the opaque cx_ctx of codec.h: zstd contexts and a
 * few growable scratch buffers. A chunk's decode runs on every FUSE read miss, so a warmed-up
 * context must let a decoder run without calling malloc: buffers only grow, never shrink, and keep
 * their size for the next call. The compression context is created on first use, because most
 * contexts (the mount's reader threads) only ever decode.
 *
 * Registering a codec: it defines one `const struct cx_codec_ops` and codec.c's table names it on
 * one line, indexed by its cx_codec id. cx_decode/cx_needs_base have already checked the 4-byte cx
 * header's magic and codec id before calling into it; version, mode and everything after are the
 * codec's to check.
 */
#ifndef DELTAFS_CODEC_CX_INTERNAL_H
#define DELTAFS_CODEC_CX_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include <zstd.h>

#include "codec.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
/* Blobs and the tensors they hold are little-endian; the codecs read elements with memcpy. */
#error "deltafs codecs assume a little-endian host"
#endif

/* Scratch slots: a codec uses them as it likes within one call; nothing survives between calls
 * except the capacity. Slot CX_S_ZSTD belongs to cx_zstd_plane; the lossless codec, which the SPP
 * codec calls while holding slots 1-3, keeps to slot 0 besides. */
#define CX_NSCRATCH 6
#define CX_S_ZSTD 4
#define CX_S_STAGE 5 /* a hybrid low-rank blob's intermediate, under the DeltaDQ residual's decode */

struct cx_ctx {
	ZSTD_DCtx *dctx;
	ZSTD_CCtx *cctx; /* NULL until the first encode */
	struct {
		void *p;
		size_t cap;
	} scratch[CX_NSCRATCH];
};

/* A buffer of at least n bytes in slot (< CX_NSCRATCH), 64-byte aligned, contents undefined;
 * NULL if it had to grow and could not. The pointer stays valid until the next cx_scratch call
 * on the same slot. */
void *cx_scratch(cx_ctx *ctx, unsigned slot, size_t n);

/* The context's compression context, created on first use; NULL on allocation failure. */
ZSTD_CCtx *cx_cctx(cx_ctx *ctx);

/* Compress m bytes at src as one zstd frame at dst (capacity cap) with cctx's parameters,
 * choosing between two encodings. Literal-only: zstd's Huffman stage alone, no match search
 * (ZSTD_compressSequences with no sequences), one table per 128 KiB block. LZ: an ordinary
 * frame. Byte planes of weights and of their deltas, and packed quantiser indices, are
 * near-i.i.d. symbols, where LZ's short matches cost more bits than they save and most of the
 * time; 64 KiB planes of the 1 GB BF16 pair, level 1 vs literal-only, ratio / encode / decode
 * MB/s: base exponent plane 2.58x / 160 / 909 vs 2.85x / 790 / 1470; XOR-delta low plane 2.67x /
 * 177 / 748 vs 3.19x / 677 / 1377; noise planes are stored raw either way (1007 vs 3603 MB/s
 * encode). LZ is also tried, and the smaller frame kept, where it can win: on a plane that is
 * mostly one byte (like the XOR high plane of a light fine-tune: 76x with LZ against Huffman's
 * floor of 1 bit a byte, 7.8x; tried first there, from a 256-byte sample), when the literal frame
 * is under a quarter of m, and when `lz` is set (the caller's data may repeat strings: text,
 * one-byte elements, a raised level).
 * Any frame decodes with ZSTD_decompressDCtx as before. Uses scratch slot CX_S_ZSTD.
 * Returns the frame's size, 0 if it does not fit in cap, or -ENOMEM / -EINVAL. */
ssize_t cx_zstd_plane(cx_ctx *ctx, ZSTD_CCtx *cctx, uint8_t *dst, size_t cap, const uint8_t *src,
		      size_t m, int lz);

/* ---- plane.c: the building blocks of the lossy blob formats --------------------------------- */

#define CX_VMAX 10 /* bytes of a u64 varint */
#define CX_PAD 8   /* zero bytes after each decoded plane: cx_bits loads 8 bytes */

/* Unsigned LEB128: cx_vput writes v at p (at most CX_VMAX bytes) and returns the count; cx_vlen
 * is that count; cx_vget reads one at *off (< end), advancing *off: 0 or -EBADMSG (truncated, or
 * more than 64 bits). */
size_t cx_vput(uint8_t *p, uint64_t v);
size_t cx_vlen(uint64_t v);
int cx_vget(const uint8_t *b, size_t end, size_t *off, uint64_t *v);

/* Pack bits [shift, shift + w) of each of the n indices densely at out, LSB first
 * (cx_plane_len(n, w) bytes). */
void cx_pack(uint8_t *out, const uint16_t *idx, size_t n, unsigned shift, unsigned w);

static inline size_t cx_plane_len(size_t n, unsigned w)
{
	return (n * w + 7) / 8;
}

/* The w-bit field at bit bitpos of a packed plane (w <= 25); the plane must have CX_PAD readable
 * bytes after it, as cx_get_plane leaves. */
static inline __attribute__((always_inline)) uint32_t cx_bits(const uint8_t *p, size_t bitpos,
							      unsigned w)
{
	uint64_t v;

	memcpy(&v, p + (bitpos >> 3), 8);
	return (uint32_t)(v >> (bitpos & 7)) & ((1u << w) - 1);
}

/* Write one plane of len bytes at out: varint clen + zstd frame, or 0 + the raw bytes when zstd
 * does not win; the last plane of a blob (`last`) goes without clen, its size being what is left
 * of the blob (raw if exactly the plane's size, else a zstd frame). Returns the bytes written,
 * -ENOBUFS or -ENOMEM. */
ssize_t cx_put_plane(cx_ctx *cx, ZSTD_CCtx *cc, uint8_t *out, size_t cap, const uint8_t *pl,
		     size_t len, int last);

/* Read one plane of len bytes at *off (advanced past it) into out, which has len + CX_PAD bytes
 * (the padding is zeroed); `last` as for cx_put_plane. 0, -EBADMSG or -ENOMEM. */
int cx_get_plane(cx_ctx *cx, const uint8_t *b, size_t blen, size_t *off, uint8_t *out, size_t len,
		 int last);

/* A codec defines decode or, if its blobs may need their segment's shared blob, decode_shared
 * (and needs_shared); the other stays NULL. */
struct cx_codec_ops {
	/* As cx_decode. */
	int (*decode)(cx_ctx *ctx, void *dst, size_t n, const void *blob, size_t blen,
		      const void *base);
	/* As cx_decode_shared. */
	int (*decode_shared)(cx_ctx *ctx, void *dst, size_t n, const void *blob, size_t blen,
			     const void *base, const void *shared, size_t slen);
	/* As cx_needs_base; blen >= CX_HDR. */
	int (*needs_base)(const uint8_t *blob, size_t blen);
	/* As cx_needs_shared; blen >= CX_HDR; NULL: never. */
	int (*needs_shared)(const uint8_t *blob, size_t blen);
};

extern const struct cx_codec_ops ll_ops;
extern const struct cx_codec_ops dq_ops; /* deltadq.c */
extern const struct cx_codec_ops pal_ops; /* palette.c */
extern const struct cx_codec_ops spp_ops; /* spp.c */
extern const struct cx_codec_ops lr_ops; /* lowrank.c */

static inline uint64_t cx_rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof v);
	return v;
}

static inline void cx_wr64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, sizeof v);
}

#endif
