/*
 * test_manifest.c -- mf_blob_next: the walk refcounting, gc's recount and the remote tier share
 * must yield every MF_CHUNK_BLOB chunk once, in order, across files without segments, segments
 * without chunks and runs of MF_CHUNK_SAME chunks, and nothing for a manifest without blobs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../index/manifest.h"

#define CHECK(c, ...)                                                                              \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #c);      \
			fprintf(stderr, __VA_ARGS__);                                              \
			fprintf(stderr, "\n");                                                     \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

int main(void)
{
	/* File 0: no segments. File 1: segments of 3, 0 and 4 chunks. File 2: 2 chunks, both SAME.
	 * Chunk i of the whole walk is a blob when i % 3 != 1; its hash's first byte is i. */
	static const uint32_t nchunks[] = { 3, 0, 4, 2 };
	mf_chunk chunks[9];
	mf_seg segs[4];
	mf_file files[3];
	manifest m = { .nfiles = 3, .files = files };
	uint32_t k = 0;

	memset(chunks, 0, sizeof chunks);
	memset(segs, 0, sizeof segs);
	memset(files, 0, sizeof files);
	for (uint32_t i = 0; i < 9; i++) {
		chunks[i].hash[0] = (uint8_t)i;
		chunks[i].flags = i % 3 == 1 || i >= 7 ? MF_CHUNK_SAME : MF_CHUNK_BLOB;
	}
	for (uint32_t s = 0; s < 4; s++) {
		segs[s].nchunks = nchunks[s];
		segs[s].chunks = chunks + k;
		k += nchunks[s];
	}
	files[1].nsegs = 3;
	files[1].segs = segs;
	files[2].nsegs = 1;
	files[2].segs = segs + 3;

	static const uint8_t want[] = { 0, 2, 3, 5, 6 };
	static const uint32_t want_seg[] = { 0, 0, 2, 2, 2 }, want_idx[] = { 0, 2, 0, 2, 3 };
	mf_blob_iter it = { .m = &m };
	size_t n = 0;
	for (const mf_chunk *ch; (ch = mf_blob_next(&it)); n++) {
		CHECK(n < sizeof want, "more blobs than %zu", sizeof want);
		CHECK(ch->hash[0] == want[n], "blob %zu is chunk %u, want %u", n, ch->hash[0], want[n]);
		CHECK(it.sg == &segs[want_seg[n]] && it.chunk == want_idx[n], "blob %zu: segment %td "
		      "chunk %u", n, it.sg - segs, it.chunk);
	}
	CHECK(n == sizeof want, "%zu blobs, want %zu", n, sizeof want);
	CHECK(!mf_blob_next(&it), "the walk stays at its end");

	for (uint32_t i = 0; i < 9; i++)
		chunks[i].flags = MF_CHUNK_SAME;
	it = (mf_blob_iter){ .m = &m };
	CHECK(!mf_blob_next(&it), "no blobs");
	manifest empty = { 0 };
	it = (mf_blob_iter){ .m = &empty };
	CHECK(!mf_blob_next(&it), "no files");
	return 0;
}
