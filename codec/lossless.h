/*
 * lossless.h -- byte-exact codecs for one chunk: byte grouping + zstd, and deltas against a base.
 *
 * Byte grouping: the bytes of each element are split into planes (plane k holds byte k of every
 * element), so the sign/exponent bytes of floats sit together, apart from the noisy low mantissa
 * bytes; zstd then finds the exponent's redundancy. BF16/F16 give 2 planes, F32 4, F64 8, 1-byte
 * types 1 (plain zstd). Each plane is entropy-coded alone or LZ-compressed, whichever is smaller
 * where LZ can win (codec/cx_internal.h, cx_zstd_plane).
 *
 * Deltas: a fine-tune chunk is stored as its difference from the base chunk (same dtype, same
 * bytes span), either XOR of the bit patterns or the arithmetic difference of the bit patterns read
 * as little-endian unsigned integers (mod 2^bits), zig-zag folded so a small negative step has small
 * high bytes. The encoder tries both and keeps the smaller.
 *
 * Blob layout after the 4-byte cx header (codec CX_LOSSLESS; byte 3 = ll_mode):
 *     u8  esize        element size in bytes (1, 2, 4, 8)
 *     u8  reserved (0)
 *     u16 reserved (0)
 *     u64 n            decoded size in bytes (little-endian)
 *     ... payload      raw bytes (LL_RAW) or esize zstd frames, frame k holding plane k
 *                      (version 2; version 1, still read, had one frame of all planes)
 * A chunk whose encoding does not shrink is stored LL_RAW (for a delta mode: the raw delta is not
 * kept; the chunk's own bytes are, so LL_RAW never needs a base).
 */
#ifndef DELTAFS_CODEC_LOSSLESS_H
#define DELTAFS_CODEC_LOSSLESS_H

#include "codec.h"

typedef enum {
	LL_RAW = 0,     /* payload = the chunk's bytes */
	LL_GROUPED = 1, /* payload = zstd(byte planes of the chunk) */
	LL_XOR = 2,     /* payload = zstd(byte planes of chunk XOR base) */
	LL_SUB = 3,     /* payload = zstd(byte planes of zigzag(chunk - base)) */
} ll_mode;

#define LL_HDR (CX_HDR + 12)

/* Largest blob ll_encode can produce for n input bytes. */
size_t ll_bound(size_t n);

/* Encode n bytes (n a multiple of esize; esize 1, 2, 4 or 8) into dst (capacity cap >=
 * ll_bound(n)). base: n bytes of the decoded base chunk, or NULL to encode without a delta.
 * level: zstd level (ingest uses ING_LEVEL_DEFAULT, 1). Returns the blob size (> 0) or a negative errno. */
ssize_t ll_encode(cx_ctx *ctx, void *dst, size_t cap, const void *src, size_t n, unsigned esize,
		  const void *base, int level);

/* Decode a CX_LOSSLESS blob into exactly n bytes at dst; base as for ll_encode (needed by
 * LL_XOR/LL_SUB only). Returns 0 or a negative errno (-EBADMSG on any malformed blob). */
int ll_decode(cx_ctx *ctx, void *dst, size_t n, const void *blob, size_t blen, const void *base);

#endif
