/*
 * test_palette_noalloc.c -- a warmed-up cx_ctx decodes palette blobs without touching the heap.
 *
 * As tests/codec/test_noalloc.c: the allocator entry points of the process are replaced (the
 * executable's definitions win over libc's for every caller, libzstd included), forwarded to
 * glibc's __libc_* functions, and counted while a context that has decoded chunks of that size
 * decodes them again, in both payload modes and every element size. Under AddressSanitizer the
 * sanitizer owns the allocator, so the test skips (77) there.
 */
#include "../codec/noalloc.h"

#include <errno.h>
#include <string.h>

#include "codec.h"
#include "palette.h"
#include "palref.h"


#define NB 6

#ifndef NOALLOC_SKIP
int main(void)
{
	const size_t m = 128 * 1024;
	/* normal weights compress (PAL_ZSTD), uniform ones do not (PAL_DENSE) */
	static const struct {
		dt_id dt;
		unsigned bits;
		int uniform;
	} cfg[NB] = {
		{ DT_BF16, 3, 0 }, { DT_BF16, 4, 1 }, { DT_F16, 2, 0 },
		{ DT_F16, 5, 1 },  { DT_F32, 8, 0 },  { DT_F32, 3, 1 },
	};
	uint8_t *src[NB], *blobs[NB], *out = r_xmalloc(4 * m);
	size_t blens[NB];
	unsigned modes = 0;
	uint64_t seed = 9;
	cx_ctx *ctx = cx_ctx_new();

	CHECK(ctx, "cx_ctx_new");
	for (int b = 0; b < NB; b++) {
		size_t n = m * r_esize(cfg[b].dt), cap = pal_bound(n, cfg[b].dt, cfg[b].bits);
		pal_table t;
		ssize_t len;

		src[b] = r_xmalloc(n);
		for (size_t i = 0; i < m; i++)
			r_store(cfg[b].dt, src[b], i,
				(float)(cfg[b].uniform ? r_unif(&seed) : r_normal(&seed)));
		CHECK(pal_fit(src[b], n, cfg[b].dt, cfg[b].bits, &t) == 0, "fit %d", b);
		blobs[b] = r_xmalloc(cap);
		len = pal_encode(ctx, blobs[b], cap, src[b], n, cfg[b].dt, &t, 3);
		CHECK(len > 0, "encode %d: %zd", b, len);
		blens[b] = (size_t)len;
		modes |= 1u << blobs[b][3];
	}
	CHECK(modes == 3, "payload modes seen: %#x (want dense and zstd)", modes);
	cx_ctx_free(ctx);

	/* A fresh context, warmed by one decode of each blob, then counted. */
	ctx = cx_ctx_new();
	CHECK(ctx, "cx_ctx_new");
	for (int pass = 0; pass < 2; pass++) {
		counting = pass;
		for (int b = 0; b < NB; b++)
			CHECK(cx_decode(ctx, out, m * r_esize(cfg[b].dt), blobs[b], blens[b], NULL) ==
				      0,
			      "decode %d", b);
	}
	counting = 0;
	CHECK(allocs == 0, "%lu allocations while decoding with a warm context", allocs);
	cx_ctx_free(ctx);
	for (int b = 0; b < NB; b++) {
		free(blobs[b]);
		free(src[b]);
	}
	free(out);
	return 0;
}
#else
int main(void)
{
	return 77;
}
#endif
