/*
 * manifest.h -- what a checkpoint is: its files, each file's segments, each segment's chunks.
 *
 * A file is a sequence of segments that tile [0, size) in order:
 *   MF_HEADER  the verbatim safetensors header (8-byte length + JSON + padding), one U8 segment
 *   MF_TENSOR  one tensor's bytes in the data region
 *   MF_RAW     a whole non-safetensors file (config.json, tokenizer.json, ...)
 * A segment is cut into chunks of chunk_size bytes (the last one shorter): chunk c covers
 * [c * chunk_size, min((c + 1) * chunk_size, len)) of the segment, and decodes alone, so a read
 * decodes only the chunks its byte range touches.
 *
 * A segment with a base (base_file >= 0) was encoded against segment (base_file, base_seg) of the
 * checkpoint named by manifest.base, which has the same dtype, shape and chunk_size: chunk c of this
 * segment needs chunk c of that one, as the store decodes it. A chunk flagged MF_CHUNK_SAME equals its
 * base chunk and has no blob; MF_CHUNK_EMPTY never occurs (empty segments have no chunks).
 *
 * The encoding (mf_encode/mf_decode) is little-endian, versioned (MF_VERSION), checksummed and fully
 * bounds-checked on decode: a corrupt manifest gives -EBADMSG, never a crash or wrong bytes.
 */
#ifndef DELTAFS_INDEX_MANIFEST_H
#define DELTAFS_INDEX_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define MF_VERSION 4 /* 2: sparsity fields per segment; 3: a checksum of the record; 4: shared blobs */
#define MF_MAX_SHARED 1
#define MF_MAX_DIMS 16

enum { MF_HEADER = 0, MF_TENSOR = 1, MF_RAW = 2 };  /* mf_seg.kind */
enum { MF_FILE_SAFETENSORS = 0, MF_FILE_RAW = 1 }; /* mf_file.kind */
enum { MF_CHUNK_BLOB = 0, MF_CHUNK_SAME = 1 };     /* mf_chunk.flags */

typedef struct mf_chunk {
	uint8_t hash[16]; /* XXH3-128 of the blob's bytes (canonical big-endian form); zero if SAME */
	uint8_t flags;
	uint32_t blen;    /* stored blob size in bytes (0 if SAME) */
} mf_chunk;

/* Quality figures a lossy codec records at ingest (issue 4); all zero for lossless segments. */
#define MF_Q_SUPPORT 0x100
#define MF_Q_HYBRID 0x80000000u

typedef struct mf_quality {
	float delta_rel_err;  /* ||dW - dW'|| / ||dW|| */
	float output_rel_err; /* ||X dW - X dW'|| / ||X W_ft|| on probe inputs */
	float bits;           /* average bits per element on disk */
	float score;          /* importance score used for bit allocation */
	uint32_t params[4];   /* codec parameters: DeltaDQ group, kept per group, bits, quantizer
				 (| MF_Q_SUPPORT: over a pruned base's support); palette bits in [2];
				 low-rank: rank, then the components of 1..4 bits in the bytes of
				 [1] (1 bit lowest), of 5..8 bits in those of [2] (255: 255 or more),
				 and for a hybrid in [3] MF_Q_HYBRID | residual bits << 24 | kept
				 << 12 | group */
} mf_quality;

typedef struct mf_seg {
	uint64_t off, len;  /* byte span in the file */
	char *name;         /* tensor name; "" for MF_HEADER / MF_RAW */
	uint8_t kind;       /* MF_HEADER / MF_TENSOR / MF_RAW */
	uint8_t dtype;      /* dt_id; DT_U8 for header and raw segments */
	uint8_t codec;      /* cx_codec of its blobs (the codec chosen for this tensor) */
	uint8_t ndim;
	uint64_t shape[MF_MAX_DIMS];
	uint32_t chunk_size;
	int32_t base_file, base_seg; /* -1: no base */
	uint64_t stored;    /* sum of blen over the chunks */
	mf_quality q;
	/* Sparsity measured at ingest (float tensors): exact zeros (+-0.0), the N:M pattern along the
	 * last dimension (2:4, 4:8; 0:0 if none), and for a delta, the base's zeros that this tensor
	 * does not keep. */
	uint64_t zeros, broken;
	uint8_t nm_n, nm_m;
	uint32_t nchunks;   /* == ceil(len / chunk_size) */
	/* Blobs every chunk of the segment needs besides its own (a low-rank matrix's factors):
	 * chunks[nchunks .. nchunks + nshared), always MF_CHUNK_BLOB, counted in stored. The
	 * chunks array always has room for MF_MAX_SHARED of them. */
	uint8_t nshared;
	mf_chunk *chunks;
} mf_seg;

typedef struct mf_file {
	char *path;         /* relative, '/'-separated; validated: no "", ".", "..", control chars */
	uint64_t size;
	uint8_t kind;       /* MF_FILE_SAFETENSORS / MF_FILE_RAW */
	uint8_t lossless;   /* 1 if every segment is lossless: export must match sha256 */
	uint8_t sha256[32]; /* of the original file at ingest */
	uint32_t nsegs;
	mf_seg *segs;
} mf_file;

typedef struct manifest {
	char *name;         /* checkpoint name */
	char *base;         /* base checkpoint name, or "" */
	uint64_t uid;       /* unique per committed manifest in this store (never reused) */
	int64_t ctime_ns;   /* ingest time (the mount's mtime) */
	uint32_t nfiles;
	mf_file *files;
} manifest;

/* Serialize m into a malloc'd buffer (*buf, *len). Returns 0 or -ENOMEM. */
int mf_encode(const manifest *m, uint8_t **buf, size_t *len);

/* Parse a manifest; *out is malloc'd (free with mf_free). Checks every length and count against the
 * buffer, segment tiling, chunk counts and base references' ranges. Returns 0, -EBADMSG (with err
 * naming what is inconsistent) or -ENOMEM. */
int mf_decode(const void *buf, size_t len, manifest **out, df_err *err);

void mf_free(manifest *m);

/* The base name of an encoded manifest without decoding all of it (for "who uses X as base"
 * scans): copies it into out (NUL-terminated, "" if none). Returns 0 or -EBADMSG. */
int mf_peek_base(const void *buf, size_t len, char *out, size_t outlen);

/* The uid of an encoded manifest, without decoding (or checksumming) the rest: enough to tell
 * whether a checkpoint is still the one a decoded manifest describes, since uids are never reused.
 * Returns 0 or -EBADMSG. */
int mf_peek_uid(const void *buf, size_t len, uint64_t *uid);

/* Totals over a manifest: logical bytes (sum of file sizes) and stored bytes (sum of chunk blen). */
uint64_t mf_logical_bytes(const manifest *m);
uint64_t mf_stored_bytes(const manifest *m);

/* A walk over the blob chunks (MF_CHUNK_BLOB) of a manifest, in file, segment, chunk order:
 *     mf_blob_iter it = { .m = m };
 *     for (const mf_chunk *ch; (ch = mf_blob_next(&it));)
 *         ... it.sg and it.chunk name ch's segment and its index there
 * Shared blobs come after their segment's chunks (it.chunk >= it.sg->nchunks).
 * Refcounting, gc's recount and the remote tier all want exactly these chunks. */
typedef struct mf_blob_iter {
	const manifest *m;
	const mf_seg *sg; /* segment of the chunk last returned */
	uint32_t chunk;   /* its index in sg */
	uint32_t f, g, c; /* position of the walk */
} mf_blob_iter;

/* The next blob chunk, or NULL at the end. m must not change during the walk. */
const mf_chunk *mf_blob_next(mf_blob_iter *it);

/* Index of the segment of f containing byte offset off (off < f->size), by binary search. */
uint32_t mf_seg_at(const mf_file *f, uint64_t off);

/* Validate a checkpoint name (what: "checkpoint name", for the message): non-empty, at most 255
 * bytes, not "." or "..", no '/', no control characters. Returns 0 or -EINVAL with err. */
int mf_check_name(const char *what, const char *s, df_err *err);

/* Validate a relative file path: '/'-separated components, each valid as for mf_check_name (so no
 * leading '/', no "//", no "." or ".." component: nothing escapes a directory on export). */
int mf_check_path(const char *s, df_err *err);

#endif
