/*
 * test_noalloc.c -- a warmed-up cx_ctx decodes without touching the heap.
 *
 * Decoding runs on every FUSE read miss, from several threads; an allocation there is lock
 * traffic and fragmentation the read path should not have. This test replaces the allocator
 * entry points of the process (the executable's definitions win over libc's for every caller,
 * libzstd included), forwards them to glibc's own __libc_* functions, and counts the calls made
 * while decoding with a context that has already decoded chunks of that size in every mode.
 *
 * Under AddressSanitizer the sanitizer owns the allocator, so the test skips (77) there.
 */
#include "noalloc.h"

#include <errno.h>
#include <string.h>

#include "codec.h"
#include "lossless.h"
#include "testutil.h"

#ifndef NOALLOC_SKIP
int main(void)
{
	const size_t n = 256 * 1024;
	static const unsigned esizes[] = { 1, 2, 4, 8 };
	uint8_t *src = t_xmalloc(n), *base = t_xmalloc(n), *out = t_xmalloc(n);
	uint8_t *blobs[4][3];
	size_t blens[4][3];
	uint64_t seed = 5;
	cx_ctx *ctx = cx_ctx_new();

	CHECK(ctx, "cx_ctx_new");
	/* Low-entropy bytes, and a base that differs in a few low bits: compressible in every mode. */
	for (size_t i = 0; i < n; i++)
		base[i] = (uint8_t)(t_rand(&seed) % 8);
	for (size_t i = 0; i < n; i++)
		src[i] = base[i] ^ (uint8_t)(t_rand(&seed) % 4 == 0);
	for (int e = 0; e < 4; e++) {
		for (int b = 0; b < 3; b++) {
			ssize_t len;

			blobs[e][b] = t_xmalloc(ll_bound(n));
			len = ll_encode(ctx, blobs[e][b], ll_bound(n), src, n, esizes[e],
					b ? base : NULL, 3);
			CHECK(len > 0, "encode es=%u rc=%zd", esizes[e], len);
			blens[e][b] = (size_t)len;
		}
	}
	cx_ctx_free(ctx);

	/* A fresh context, warmed by one decode of each blob, then counted. */
	ctx = cx_ctx_new();
	CHECK(ctx, "cx_ctx_new");
	for (int pass = 0; pass < 2; pass++) {
		counting = pass;
		for (int e = 0; e < 4; e++)
			for (int b = 0; b < 3; b++)
				CHECK(cx_decode(ctx, out, n, blobs[e][b], blens[e][b], base) == 0 &&
					      memcmp(out, src, n) == 0,
				      "decode es=%u", esizes[e]);
	}
	counting = 0;
	CHECK(allocs == 0, "%lu allocations while decoding with a warm context", allocs);
	cx_ctx_free(ctx);
	for (int e = 0; e < 4; e++)
		for (int b = 0; b < 3; b++)
			free(blobs[e][b]);
	free(src);
	free(base);
	free(out);
	return 0;
}
#else
int main(void)
{
	return 77;
}
#endif
