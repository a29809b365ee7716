/*
 * reader.h -- decode any byte range of a stored file: the read path shared by export, verify and
 * the mount.
 *
 * rd_ckpt is a checkpoint with its base chain loaded (mf, base, base->base, ...). Decoding chunk c
 * of a segment with a base needs chunk c of the base segment first; rd_decode_chunk takes that base
 * chunk from the caller (the mount takes it from its chunk cache, so a base chunk shared by many
 * fine-tunes decodes once), and rd_pread decodes the chain itself.
 *
 * Every blob is checked against its hash before it is decoded: a damaged blob gives -EIO and a
 * message naming the checkpoint, file and tensor, never wrong bytes.
 */
#ifndef DELTAFS_INDEX_READER_H
#define DELTAFS_INDEX_READER_H

#include <stddef.h>
#include <stdint.h>

#include "../codec/codec.h"
#include "err.h"
#include "manifest.h"
#include "store.h"

typedef struct rd_ckpt {
	manifest *mf;
	struct rd_ckpt *base; /* the checkpoint named by mf->base, loaded; NULL if none */
} rd_ckpt;

/* Load checkpoint name and its base chain within txn. -ENOENT if absent, -EBADMSG if a manifest is
 * corrupt or a base reference points nowhere. Free with rd_free. */
int rd_load(store *s, MDB_txn *txn, const char *name, rd_ckpt **out, df_err *err);
void rd_free(rd_ckpt *ck);

/* Bytes in chunk c of segment seg. */
static inline size_t rd_chunk_len(const mf_seg *seg, uint32_t c)
{
	uint64_t start = (uint64_t)c * seg->chunk_size;
	uint64_t left = seg->len - start;
	return (size_t)(left < seg->chunk_size ? left : seg->chunk_size);
}

/* The base segment of segment (f, s) of ck, or NULL if it has none. */
const mf_seg *rd_base_seg(const rd_ckpt *ck, uint32_t f, uint32_t s);

/* Decode chunk c of segment (f, s) of ck into dst (rd_chunk_len bytes). base: the decoded base bytes
 * under that chunk (rd_chunk_len bytes, as rd_decode_base gives) if the segment has a base, else NULL. The blob is
 * read zero-copy from txn's map and hash-checked. Returns 0, -EIO (bad hash or missing blob),
 * -EBADMSG (blob does not decode) or -ENOMEM; err says which checkpoint/file/tensor. */
int rd_decode_chunk(cx_ctx *cx, store *s, MDB_txn *txn, const rd_ckpt *ck, uint32_t f, uint32_t s_,
		    uint32_t c, const void *base, void *dst, df_err *err);

/* The chunks [*first, *last] of segment (f, s)'s base segment that chunk c of it overlaps (the
 * segment has a base and chunk c is not empty). */
void rd_base_span(const rd_ckpt *ck, uint32_t f, uint32_t s_, uint32_t c, uint32_t *first,
		  uint32_t *last);

/* Ask the kernel to start reading the blobs that chunk c of segment (f, s) of ck needs, its own and
 * its base chain's (store_blob_hint), so that decoding it later does not wait on the disk. */
void rd_hint_chunk(store *s, MDB_txn *txn, const rd_ckpt *ck, uint32_t f, uint32_t s_, uint32_t c);

/* Decode the base bytes under chunk c of segment sg of a checkpoint whose base is bck (sg has a
 * base: segment (sg->base_file, sg->base_seg) of bck, of the same length) into dst
 * (rd_chunk_len(sg, c) bytes): from the base chunks that overlap that span, each decoded through
 * its own chain. Chunk sizes need not match: a DeltaDQ fine-tune's chunks hold ~256 KiB of whole
 * rows (dq_chunk_rows), a lossless base's 128 KiB; a lossless fine-tune takes its base's sizes. */
int rd_decode_base(cx_ctx *cx, store *s, MDB_txn *txn, const rd_ckpt *bck, const mf_seg *sg,
		   uint32_t c, void *dst, df_err *err);

/* Decode chunk c of segment (f, s), resolving the base chain recursively with malloc'd scratch. */
int rd_decode_chunk_full(cx_ctx *cx, store *s, MDB_txn *txn, const rd_ckpt *ck, uint32_t f,
			 uint32_t s_, uint32_t c, void *dst, df_err *err);

/* Read len bytes at offset off of file f of ck into dst (clamped to the file's size). Returns the
 * byte count or a negative errno. Decodes whole chunks into scratch; meant for export and verify. */
ssize_t rd_pread(cx_ctx *cx, store *s, MDB_txn *txn, const rd_ckpt *ck, uint32_t f, void *dst,
		 size_t len, uint64_t off, df_err *err);

/* Decode file f of ck from start to end, chunk by chunk, passing each span to sink(ud, p, n) in
 * order; a non-zero return from sink stops the walk and is returned. Also computes the sha256 of
 * the bytes (sha may be NULL). */
int rd_stream(cx_ctx *cx, store *s, MDB_txn *txn, const rd_ckpt *ck, uint32_t f,
	      int (*sink)(void *ud, const void *p, size_t n), void *ud, uint8_t sha[32],
	      df_err *err);

/* Index of file `path` in ck->mf, or -1. */
int rd_find_file(const rd_ckpt *ck, const char *path);

#endif
