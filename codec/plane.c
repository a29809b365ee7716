/*
 * plane.c -- the pieces every lossy blob format of codec/ is built from: LEB128 varints for header
 * fields, dense bit packing of quantiser indices, and "planes" (a packed array stored as one zstd
 * frame, or raw where zstd does not shrink it). DeltaDQ and the low-rank codec share them, so a
 * bound check or a frame check is written once.
 */
#include <errno.h>
#include <string.h>

#include <zstd_errors.h>

#include "cx_internal.h"

size_t cx_vput(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

size_t cx_vlen(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

int cx_vget(const uint8_t *b, size_t end, size_t *off, uint64_t *v)
{
	uint64_t x = 0;

	for (unsigned sh = 0; sh < 64; sh += 7) {
		uint8_t c;

		if (*off >= end)
			return -EBADMSG;
		c = b[(*off)++];
		if (sh == 63 && c > 1)
			return -EBADMSG;
		x |= (uint64_t)(c & 0x7f) << sh;
		if (!(c & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -EBADMSG;
}

void cx_pack(uint8_t *out, const uint16_t *idx, size_t n, unsigned shift, unsigned w)
{
	uint64_t acc = 0;
	unsigned nb = 0;
	uint32_t mask = (1u << w) - 1;

	for (size_t i = 0; i < n; i++) {
		acc |= (uint64_t)((idx[i] >> shift) & mask) << nb;
		nb += w;
		while (nb >= 8) {
			*out++ = (uint8_t)acc;
			acc >>= 8;
			nb -= 8;
		}
	}
	if (nb)
		*out = (uint8_t)acc;
}

ssize_t cx_put_plane(cx_ctx *cx, ZSTD_CCtx *cc, uint8_t *out, size_t cap, const uint8_t *pl,
		     size_t len, int last)
{
	uint8_t v[CX_VMAX];
	size_t z, vl;

	if (cap > CX_VMAX + 1) {
		ssize_t c = cx_zstd_plane(cx, cc, out + CX_VMAX,
					  cap - CX_VMAX < len ? cap - CX_VMAX : len, pl, len, 0);
		if (c < 0)
			return c;
		z = (size_t)c;
		if (z && (last ? z < len : z + cx_vlen(z) < len + 1)) {
			vl = last ? 0 : cx_vput(v, z);
			memmove(out + vl, out + CX_VMAX, z);
			memcpy(out, v, vl);
			return (ssize_t)(vl + z);
		}
	}
	if (cap < len + !last)
		return -ENOBUFS;
	if (!last)
		out[0] = 0;
	memcpy(out + !last, pl, len);
	return (ssize_t)(len + !last);
}

int cx_get_plane(cx_ctx *cx, const uint8_t *b, size_t blen, size_t *off, uint8_t *out, size_t len,
		 int last)
{
	uint64_t clen;
	size_t z;

	if (last)
		clen = blen - *off == len ? 0 : blen - *off;
	else if (cx_vget(b, blen, off, &clen))
		return -EBADMSG;
	memset(out + len, 0, CX_PAD);
	if (!clen) {
		if (blen - *off < len)
			return -EBADMSG;
		memcpy(out, b + *off, len);
		*off += len;
		return 0;
	}
	if (clen > blen - *off || ZSTD_findFrameCompressedSize(b + *off, clen) != clen)
		return -EBADMSG;
	z = ZSTD_decompressDCtx(cx->dctx, out, len, b + *off, clen);
	if (ZSTD_isError(z))
		return ZSTD_getErrorCode(z) == ZSTD_error_memory_allocation ? -ENOMEM : -EBADMSG;
	if (z != len)
		return -EBADMSG;
	*off += clen;
	return 0;
}
