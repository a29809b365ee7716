/*
 * fuzz_manifest.c -- libFuzzer target: the input is an encoded manifest for mf_decode.
 *
 * A manifest is the one record of a store that carries no hash: a damaged one reaches mf_decode as
 * it is, and everything downstream (the mount's tree, export's paths, the reader's chunk
 * arithmetic) trusts what mf_decode accepts. So besides "no crash, no leak, no UB" under ASan and
 * UBSan, every promise of manifest.h is checked on each accepted input, and a hole in the
 * validation traps instead of passing silently:
 *   - the result is 0, -EBADMSG or -ENOMEM; a failure leaves a message;
 *   - accepted: the checkpoint name (and base name, if any) and every file path pass their
 *     validators, so nothing can escape a directory on export or confuse the mount's namespace;
 *     the segments of each file tile [0, size) in order; each segment has exactly
 *     ceil(len / chunk_size) chunks whose lengths add up to len; base references come in pairs
 *     and only with a base name; SAME chunks only with a base; `stored` is the sum of blen;
 *   - mf_seg_at finds, for offsets across each file, a segment that holds the offset;
 *   - mf_encode gives back exactly the input bytes (the encoding is canonical), and
 *     mf_peek_base reads the same base name as the full decode;
 *   - mf_peek_base never crashes, accepted or not.
 *
 * Seeds: tests/fuzz/corpus_manifest holds real manifests of every shape ingest makes (a base, a
 * delta fine-tune, one equal to its base, a sharded model directory with nested and empty files,
 * DeltaDQ, palette, SPP, an empty tensor), made by `tests/reliability/reliability.py
 * manifest-seeds DIR` (BUILD set to a build directory); remake them when MF_VERSION changes.
 * Run: fuzz_manifest -max_total_time=120 CORPUS_DIR, with CORPUS_DIR a scratch copy of
 * tests/fuzz/corpus_manifest (libFuzzer writes new inputs into it).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "../../index/manifest.h"

static void fuzz_check(int ok)
{
	if (!ok)
		__builtin_trap();
}

/* Offsets worth asking mf_seg_at about: both ends of every segment, and a spread across the
 * file (bounded, so a manifest of many segments stays cheap). */
static void check_seg_at(const mf_file *f)
{
	if (!f->size)
		return;
	for (uint32_t j = 0; j < f->nsegs && j < 64; j++) {
		const mf_seg *s = &f->segs[j];
		if (!s->len)
			continue;
		uint64_t at[2] = {s->off, s->off + s->len - 1};
		for (int k = 0; k < 2; k++) {
			const mf_seg *got = &f->segs[mf_seg_at(f, at[k])];
			fuzz_check(got->off <= at[k] && at[k] - got->off < got->len);
		}
	}
	for (uint64_t k = 0; k < 16; k++) {
		uint64_t off = f->size / 16 * k + k % (f->size - f->size / 16 * k);
		uint32_t i = mf_seg_at(f, off);
		fuzz_check(i < f->nsegs && f->segs[i].off <= off &&
			   off - f->segs[i].off < f->segs[i].len);
	}
}

static void check_manifest(const manifest *m, const uint8_t *data, size_t size)
{
	df_err err;
	int has_base = m->base[0] != '\0';

	fuzz_check(mf_check_name("checkpoint name", m->name, &err) == 0);
	fuzz_check(!has_base || mf_check_name("base name", m->base, &err) == 0);
	uint64_t logical = 0, stored = 0;
	for (uint32_t i = 0; i < m->nfiles; i++) {
		const mf_file *f = &m->files[i];
		uint64_t end = 0, fstored = 0;
		fuzz_check(mf_check_path(f->path, &err) == 0);
		fuzz_check(f->kind <= MF_FILE_RAW);
		for (uint32_t j = 0; j < f->nsegs; j++) {
			const mf_seg *s = &f->segs[j];
			uint64_t sum = 0, blen = 0;
			fuzz_check(s->off == end && s->len <= f->size - s->off);
			end = s->off + s->len;
			fuzz_check(s->kind <= MF_RAW && s->ndim <= MF_MAX_DIMS && s->name);
			fuzz_check(s->len ? s->chunk_size && s->nchunks == (s->len - 1) / s->chunk_size + 1
					  : s->nchunks == 0);
			fuzz_check((s->base_file < 0) == (s->base_seg < 0));
			fuzz_check(s->base_file < 0 || has_base);
			for (uint32_t c = 0; c < s->nchunks; c++) {
				/* rd_chunk_len's arithmetic, which the reader and the mount use. */
				uint64_t start = (uint64_t)c * s->chunk_size, left = s->len - start;
				fuzz_check(start < s->len);
				sum += left < s->chunk_size ? left : s->chunk_size;
				fuzz_check(s->chunks[c].flags == MF_CHUNK_BLOB ||
					   (s->chunks[c].flags == MF_CHUNK_SAME && s->base_file >= 0));
				blen += s->chunks[c].blen;
			}
			fuzz_check(sum == s->len && blen == s->stored);
			fstored += s->stored;
		}
		fuzz_check(end == f->size);
		check_seg_at(f);
		logical += f->size;
		stored += fstored;
	}
	fuzz_check(mf_logical_bytes(m) == logical && mf_stored_bytes(m) == stored);

	uint8_t *buf;
	size_t len;
	int rc = mf_encode(m, &buf, &len);
	fuzz_check(rc == 0 || rc == -ENOMEM);
	if (!rc) {
		fuzz_check(len == size && memcmp(buf, data, size) == 0);
		free(buf);
	}
	char base[256];
	if (strlen(m->base) < sizeof base) {
		fuzz_check(mf_peek_base(data, size, base, sizeof base) == 0);
		fuzz_check(strcmp(base, m->base) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	manifest *m = NULL;
	df_err err;
	char base[16];
	uint8_t *copy = malloc(size ? size : 1);

	/* An exactly sized copy: libFuzzer's buffer may sit inside a larger mapping, and ASan must
	 * see a read one byte past the end. */
	fuzz_check(copy != NULL);
	memcpy(copy, data, size);
	/* Odd-sized inputs are taken as they are (the checksum check itself gets fuzzed); even-sized
	 * ones get a valid checksum in their last 8 bytes, so mutations reach the structure behind
	 * it. */
	if (size >= 8 && size % 2 == 0) {
		uint64_t sum = XXH3_64bits(copy, size - 8);
		for (unsigned i = 0; i < 8; i++)
			copy[size - 8 + i] = (uint8_t)(sum >> (8 * i));
	}
	err.msg[0] = '\0';
	int rc = mf_decode(copy, size, &m, &err);
	if (rc) {
		fuzz_check(rc == -EBADMSG || rc == -ENOMEM);
		fuzz_check(err.msg[0] != '\0');
	} else {
		check_manifest(m, copy, size);
		mf_free(m);
	}
	(void)mf_peek_base(copy, size, base, sizeof base);
	free(copy);
	return 0;
}
