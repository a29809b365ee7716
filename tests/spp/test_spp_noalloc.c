/*
 * test_spp_noalloc.c -- a warmed-up cx_ctx decodes CX_SPP blobs without touching the heap.
 *
 * The read path decodes on every FUSE miss (see tests/codec/test_noalloc.c for why allocations
 * matter there). The allocator's entry points are replaced for the whole process (the executable's
 * definitions win over libc's, libzstd included) and forward to glibc's __libc_* functions; the
 * calls made while decoding, with a context that has decoded each blob once, are counted. The
 * blobs cover the three exception modes at 256 KiB in every element size, so the scratch slots
 * each mode uses are all exercised; under AddressSanitizer the sanitizer owns the allocator and
 * the test skips (77).
 */
#include "../codec/noalloc.h"

#include <errno.h>
#include <string.h>

#include "codec.h"
#include "spp.h"
#include "testutil.h"

#ifndef NOALLOC_SKIP
int main(void)
{
	const size_t n = 256 * 1024;
	static const unsigned esizes[] = { 1, 2, 4, 8 };
	uint8_t *base = t_xmalloc(n), *ft[3], *out = t_xmalloc(n), *blobs[4][3];
	size_t blens[4][3];
	uint64_t seed = 11;
	cx_ctx *ctx = cx_ctx_new();

	CHECK(ctx, "cx_ctx_new");
	/* Half the bytes zero (so, for every element size, about half the elements off the
	 * support or close to it); fine-tunes that keep them, break a few, break all. */
	for (size_t i = 0; i < n; i++)
		base[i] = t_rand(&seed) & 1 ? 0 : (uint8_t)(1 + t_rand(&seed) % 7);
	for (int k = 0; k < 3; k++) {
		ft[k] = t_xmalloc(n);
		for (size_t i = 0; i < n; i++) {
			int brk = base[i] == 0 && (k == 2 || (k == 1 && t_rand(&seed) % 500 == 0));

			ft[k][i] = brk ? 3 : base[i] ^ (uint8_t)(base[i] && t_rand(&seed) % 4 == 0);
		}
	}
	for (int e = 0; e < 4; e++) {
		for (int k = 0; k < 3; k++) {
			ssize_t len;

			blobs[e][k] = t_xmalloc(spp_bound(n, esizes[e]));
			len = spp_encode(ctx, blobs[e][k], spp_bound(n, esizes[e]), ft[k], base, n,
					 esizes[e], 3);
			CHECK(len > 0, "encode es=%u rc=%zd", esizes[e], len);
			CHECK(blobs[e][k][3] == k, "es=%u fine-tune %d: mode %d", esizes[e], k,
			      blobs[e][k][3]);
			blens[e][k] = (size_t)len;
		}
	}
	cx_ctx_free(ctx);

	ctx = cx_ctx_new();
	CHECK(ctx, "cx_ctx_new");
	for (int pass = 0; pass < 2; pass++) {
		counting = pass;
		for (int e = 0; e < 4; e++)
			for (int k = 0; k < 3; k++)
				CHECK(cx_decode(ctx, out, n, blobs[e][k], blens[e][k], base) == 0 &&
					      memcmp(out, ft[k], n) == 0,
				      "decode es=%u fine-tune %d", esizes[e], k);
	}
	counting = 0;
	CHECK(allocs == 0, "%lu allocations while decoding with a warm context", allocs);
	cx_ctx_free(ctx);
	for (int e = 0; e < 4; e++)
		for (int k = 0; k < 3; k++)
			free(blobs[e][k]);
	for (int k = 0; k < 3; k++)
		free(ft[k]);
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
