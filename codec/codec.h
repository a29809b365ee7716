/*
 * codec.h -- the codec contract: pure functions over memory, no I/O.
 *
 * A blob is what the store keeps for one chunk (a bounded byte span of one tensor or raw file).
 * Every blob starts with a 4-byte header, so any blob decodes on its own, given its base bytes:
 *
 *     byte 0  CX_MAGIC ('d')
 *     byte 1  codec id (cx_codec)
 *     byte 2  codec version
 *     byte 3  codec-specific mode/flags
 *
 * followed by the codec's own fields (each codec's header documents them).
 *
 * Errors: every function returns 0 (or a byte count) on success and a negative errno on failure:
 *   -EINVAL   bad arguments (caller bug)
 *   -EBADMSG  a blob that is malformed, truncated, of an unknown codec/version, or inconsistent with
 *             the requested output size; decoders never read or write out of bounds on such input
 *   -ENOMEM   allocation failed
 *   -ENOBUFS  the destination is too small
 */
#ifndef DELTAFS_CODEC_CODEC_H
#define DELTAFS_CODEC_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CX_MAGIC 0x64 /* 'd' */
#define CX_HDR 4

/* Numeric values are on disk: append only. */
typedef enum {
	CX_LOSSLESS = 1, /* codec/lossless.h: raw, byte-grouped zstd, XOR/SUB delta against a base */
	CX_DELTADQ = 2,  /* codec/deltadq.h: group-wise dropout and separate quantization */
	CX_PALETTE = 3,  /* codec/palette.h: k-means levels of a lossy base */
	CX_SPP = 4,      /* codec/spp.h: support-only delta over a pruned base */
	CX_LOWRANK = 5,  /* codec/lowrank.h: truncated SVD of a delta, mixed-precision factors */
} cx_codec;

/* Per-thread scratch space: zstd contexts and work buffers, reused across calls so that the hot
 * path allocates nothing. A context is used by one thread at a time. */
typedef struct cx_ctx cx_ctx;

cx_ctx *cx_ctx_new(void);
void cx_ctx_free(cx_ctx *ctx);

/* Decode any blob into exactly n bytes at dst. base is the decoded base chunk (n bytes) for a
 * blob that needs one (cx_needs_base), else ignored and may be NULL. */
int cx_decode(cx_ctx *ctx, void *dst, size_t n, const void *blob, size_t blen, const void *base);

/* As cx_decode, for a blob that may need its segment's shared blob (cx_needs_shared): a low-rank
 * chunk's factors, one blob shared by every chunk of its matrix. shared may be NULL (slen 0) for
 * a blob that needs none; given to one that needs none, it is ignored. */
int cx_decode_shared(cx_ctx *ctx, void *dst, size_t n, const void *blob, size_t blen,
		     const void *base, const void *shared, size_t slen);

/* 1 if the blob decodes only with its segment's shared blob, 0 if not, -EBADMSG if the blob's
 * header is unreadable. */
int cx_needs_shared(const void *blob, size_t blen);

/* 1 if the blob is a delta that needs its base chunk to decode, 0 if not, -EBADMSG if the blob's
 * header is unreadable. */
int cx_needs_base(const void *blob, size_t blen);

/* The codec id of a blob, or -EBADMSG. */
int cx_blob_codec(const void *blob, size_t blen);

/* Short lowercase name of a codec id ("lossless", "deltadq", "palette"), "?" if unknown. */
const char *cx_codec_name(int codec);

#endif
