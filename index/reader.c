/*
 * reader.c -- decode byte ranges of stored files (export, verify, the mount's chunk decoder).
 */
#include "reader.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#define RD_MAX_CHAIN 64 /* base chains deeper than this are refused as corrupt (cycles) */

static int load(store *s, MDB_txn *txn, const char *name, int depth, rd_ckpt **out, df_err *err)
{
	if (depth > RD_MAX_CHAIN)
		return df_errf(err, -EBADMSG, "%s: checkpoint \"%s\": base chain deeper than %d "
			       "(a cycle?)", store_path(s), name, RD_MAX_CHAIN);
	rd_ckpt *ck = calloc(1, sizeof *ck);
	if (!ck)
		return df_errf(err, -ENOMEM, "out of memory");
	int rc = store_ckpt_get(s, txn, name, &ck->mf, err);
	if (!rc && *ck->mf->base)
		rc = load(s, txn, ck->mf->base, depth + 1, &ck->base, err);
	for (uint32_t i = 0; !rc && i < ck->mf->nfiles; i++) {
		const mf_file *f = &ck->mf->files[i];
		for (uint32_t j = 0; !rc && j < f->nsegs; j++) {
			const mf_seg *sg = &f->segs[j];
			if (sg->base_file < 0)
				continue;
			const mf_seg *b = NULL;
			if ((uint32_t)sg->base_file < ck->base->mf->nfiles &&
			    (uint32_t)sg->base_seg < ck->base->mf->files[sg->base_file].nsegs)
				b = &ck->base->mf->files[sg->base_file].segs[sg->base_seg];
			if (!b || b->len != sg->len)
				rc = df_errf(err, -EBADMSG, "%s: checkpoint \"%s\" file \"%s\" tensor "
					     "\"%s\": its base segment in \"%s\" is missing or of "
					     "another size", store_path(s), name, f->path, sg->name,
					     ck->mf->base);
		}
	}
	if (rc) {
		rd_free(ck);
		return rc;
	}
	*out = ck;
	return 0;
}

int rd_load(store *s, MDB_txn *txn, const char *name, rd_ckpt **out, df_err *err)
{
	return load(s, txn, name, 0, out, err);
}

void rd_free(rd_ckpt *ck)
{
	while (ck) {
		rd_ckpt *b = ck->base;
		mf_free(ck->mf);
		free(ck);
		ck = b;
	}
}

const mf_seg *rd_base_seg(const rd_ckpt *ck, uint32_t f, uint32_t s)
{
	const mf_seg *sg = &ck->mf->files[f].segs[s];
	if (sg->base_file < 0)
		return NULL;
	return &ck->base->mf->files[sg->base_file].segs[sg->base_seg];
}

static const char *seg_label(const mf_seg *sg)
{
	return sg->kind == MF_HEADER ? "(safetensors header)" : sg->kind == MF_RAW ? "(file data)"
									    : sg->name;
}

/* Blob ch of chunk c (or, c == sg->nchunks, of the segment's shared blob) from the store or its
 * remote, checked against its hash: *p points into the store, or at *fetched (the caller frees). */
static int get_blob(store *s, MDB_txn *txn, const rd_ckpt *ck, const mf_file *fl, const mf_seg *sg,
		    uint32_t c, const mf_chunk *ch, const void **p, size_t *blen, void **fetched,
		    df_err *err)
{
	char what[32] = "shared blob";
	if (c < sg->nchunks)
		snprintf(what, sizeof what, "chunk %u", c);
	int rc = store_blob_get(s, txn, ch->hash, p, blen);
	*fetched = NULL;
	if (rc == -ENOENT && store_has_fetch(s)) {
		df_err fe;
		if ((rc = store_blob_fetch(s, ch->hash, fetched, blen, &fe)))
			return df_errf(err, rc == -ENOMEM ? -ENOMEM : -EIO, "%s: checkpoint \"%s\" file "
				       "\"%s\" tensor \"%s\" %s: %s", store_path(s),
				       ck->mf->name, fl->path, seg_label(sg), what, fe.msg);
		*p = *fetched;
	}
	if (rc)
		return df_errf(err, -EIO, "%s: checkpoint \"%s\" file \"%s\" tensor \"%s\" %s: "
			       "blob missing from the store", store_path(s), ck->mf->name, fl->path,
			       seg_label(sg), what);
	if (store_blob_check(ch->hash, *p, *blen)) {
		free(*fetched);
		*fetched = NULL;
		return df_errf(err, -EIO, "%s: checkpoint \"%s\" file \"%s\" tensor \"%s\" %s: "
			       "blob fails its hash (damaged store)", store_path(s), ck->mf->name,
			       fl->path, seg_label(sg), what);
	}
	return 0;
}

int rd_decode_chunk(cx_ctx *cx, store *s, MDB_txn *txn, const rd_ckpt *ck, uint32_t f, uint32_t s_,
		    uint32_t c, const void *base, void *dst, df_err *err)
{
	const mf_file *fl = &ck->mf->files[f];
	const mf_seg *sg = &fl->segs[s_];
	const mf_chunk *ch = &sg->chunks[c];
	size_t n = rd_chunk_len(sg, c), blen, slen = 0;
	if (sg->base_file >= 0 && !base)
		return df_errf(err, -EINVAL, "internal: chunk needs its base chunk");
	if (ch->flags == MF_CHUNK_SAME) {
		memcpy(dst, base, n);
		return 0;
	}
	const void *p, *sp = NULL;
	void *fetched, *sfetched = NULL;
	int rc = get_blob(s, txn, ck, fl, sg, c, ch, &p, &blen, &fetched, err);
	if (rc)
		return rc;
	if (sg->nshared && cx_needs_shared(p, blen) == 1 &&
	    (rc = get_blob(s, txn, ck, fl, sg, sg->nchunks, &sg->chunks[sg->nchunks], &sp, &slen,
			   &sfetched, err))) {
		free(fetched);
		return rc;
	}
	rc = cx_decode_shared(cx, dst, n, p, blen, sg->base_file >= 0 ? base : NULL, sp, slen);
	free(fetched);
	free(sfetched);
	if (rc)
		return df_errf(err, rc == -ENOMEM ? -ENOMEM : -EIO, "%s: checkpoint \"%s\" file \"%s\" "
			       "tensor \"%s\" chunk %u: blob does not decode (%s)", store_path(s),
			       ck->mf->name, fl->path, seg_label(sg), c, strerror(-rc));
	return 0;
}

/* The base chunks [*first, *last] under chunk c of sg (which has base segment b). */
static void base_span(const mf_seg *sg, const mf_seg *b, uint32_t c, uint32_t *first,
		      uint32_t *last)
{
	uint64_t off = (uint64_t)c * sg->chunk_size, end = off + rd_chunk_len(sg, c);
	*first = (uint32_t)(off / b->chunk_size);
	*last = (uint32_t)((end - 1) / b->chunk_size);
}

void rd_base_span(const rd_ckpt *ck, uint32_t f, uint32_t s_, uint32_t c, uint32_t *first,
		  uint32_t *last)
{
	base_span(&ck->mf->files[f].segs[s_], rd_base_seg(ck, f, s_), c, first, last);
}

void rd_hint_chunk(store *s, MDB_txn *txn, const rd_ckpt *ck, uint32_t f, uint32_t s_, uint32_t c)
{
	const mf_seg *sg = &ck->mf->files[f].segs[s_];
	uint32_t first, last;
	if (sg->chunks[c].flags != MF_CHUNK_SAME)
		store_blob_hint(s, txn, sg->chunks[c].hash);
	if (sg->nshared)
		store_blob_hint(s, txn, sg->chunks[sg->nchunks].hash);
	if (sg->base_file < 0 || !rd_chunk_len(sg, c))
		return;
	rd_base_span(ck, f, s_, c, &first, &last);
	for (uint32_t i = first; i <= last; i++)
		rd_hint_chunk(s, txn, ck->base, (uint32_t)sg->base_file, (uint32_t)sg->base_seg, i);
}

int rd_decode_base(cx_ctx *cx, store *s, MDB_txn *txn, const rd_ckpt *bck, const mf_seg *sg,
		   uint32_t c, void *dst, df_err *err)
{
	const mf_seg *b = &bck->mf->files[sg->base_file].segs[sg->base_seg];
	uint64_t off = (uint64_t)c * sg->chunk_size;
	size_t n = rd_chunk_len(sg, c), done = 0;
	uint8_t *part = NULL;
	uint32_t first, last;
	int rc = 0;
	if (!n)
		return 0;
	base_span(sg, b, c, &first, &last);
	for (uint32_t i = first; !rc && i <= last; i++) {
		uint64_t bo = (uint64_t)i * b->chunk_size;
		size_t bn = rd_chunk_len(b, i), skip = off + done > bo ? (size_t)(off + done - bo) : 0;
		size_t take = bn - skip < n - done ? bn - skip : n - done;
		if (!skip && take == bn) { /* whole: straight into place */
			rc = rd_decode_chunk_full(cx, s, txn, bck, (uint32_t)sg->base_file,
						  (uint32_t)sg->base_seg, i, (uint8_t *)dst + done, err);
		} else if (!part && !(part = malloc(b->chunk_size))) {
			rc = df_errf(err, -ENOMEM, "out of memory");
		} else if (!(rc = rd_decode_chunk_full(cx, s, txn, bck, (uint32_t)sg->base_file,
						      (uint32_t)sg->base_seg, i, part, err))) {
			memcpy((uint8_t *)dst + done, part + skip, take);
		}
		done += take;
	}
	free(part);
	return rc;
}

int rd_decode_chunk_full(cx_ctx *cx, store *s, MDB_txn *txn, const rd_ckpt *ck, uint32_t f,
			 uint32_t s_, uint32_t c, void *dst, df_err *err)
{
	const mf_seg *sg = &ck->mf->files[f].segs[s_];
	if (sg->base_file < 0)
		return rd_decode_chunk(cx, s, txn, ck, f, s_, c, NULL, dst, err);
	void *base = malloc(rd_chunk_len(sg, c));
	if (!base)
		return df_errf(err, -ENOMEM, "out of memory");
	int rc = rd_decode_base(cx, s, txn, ck->base, sg, c, base, err);
	if (!rc)
		rc = rd_decode_chunk(cx, s, txn, ck, f, s_, c, base, dst, err);
	free(base);
	return rc;
}

ssize_t rd_pread(cx_ctx *cx, store *s, MDB_txn *txn, const rd_ckpt *ck, uint32_t f, void *dst,
		 size_t len, uint64_t off, df_err *err)
{
	const mf_file *fl = &ck->mf->files[f];
	if (off >= fl->size)
		return 0;
	if (len > fl->size - off)
		len = (size_t)(fl->size - off);
	uint8_t *out = dst, *scratch = NULL;
	size_t scap = 0, done = 0;
	uint32_t si = mf_seg_at(fl, off);
	int rc = 0;
	while (done < len && si < fl->nsegs) {
		const mf_seg *sg = &fl->segs[si];
		uint64_t pos = off + done;
		if (pos >= sg->off + sg->len) {
			si++;
			continue;
		}
		uint64_t rel = pos - sg->off;
		uint32_t c = (uint32_t)(rel / sg->chunk_size);
		size_t clen = rd_chunk_len(sg, c), cpos = (size_t)(rel % sg->chunk_size);
		size_t take = clen - cpos < len - done ? clen - cpos : len - done;
		uint8_t *into;
		if (cpos == 0 && take == clen) {
			into = out + done; /* whole chunk wanted: decode in place */
		} else {
			if (scap < clen) {
				free(scratch);
				if (!(scratch = malloc(scap = sg->chunk_size))) {
					rc = df_errf(err, -ENOMEM, "out of memory");
					break;
				}
			}
			into = scratch;
		}
		if ((rc = rd_decode_chunk_full(cx, s, txn, ck, f, si, c, into, err)))
			break;
		if (into == scratch)
			memcpy(out + done, scratch + cpos, take);
		done += take;
	}
	free(scratch);
	return rc ? rc : (ssize_t)done;
}

int rd_stream(cx_ctx *cx, store *s, MDB_txn *txn, const rd_ckpt *ck, uint32_t f,
	      int (*sink)(void *ud, const void *p, size_t n), void *ud, uint8_t sha[32],
	      df_err *err)
{
	const mf_file *fl = &ck->mf->files[f];
	uint32_t maxcs = 1;
	for (uint32_t i = 0; i < fl->nsegs; i++)
		if (fl->segs[i].chunk_size > maxcs)
			maxcs = fl->segs[i].chunk_size;
	uint8_t *buf = malloc(maxcs);
	EVP_MD_CTX *md = sha ? EVP_MD_CTX_new() : NULL;
	int rc = 0;
	if (!buf || (sha && (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL))))
		rc = df_errf(err, -ENOMEM, "out of memory");
	for (uint32_t i = 0; !rc && i < fl->nsegs; i++) {
		const mf_seg *sg = &fl->segs[i];
		for (uint32_t c = 0; !rc && c < sg->nchunks; c++) {
			size_t n = rd_chunk_len(sg, c);
			rc = rd_decode_chunk_full(cx, s, txn, ck, f, i, c, buf, err);
			if (!rc && md)
				EVP_DigestUpdate(md, buf, n);
			if (!rc && sink)
				rc = sink(ud, buf, n);
		}
	}
	if (!rc && md) {
		unsigned len = 32;
		EVP_DigestFinal_ex(md, sha, &len);
	}
	EVP_MD_CTX_free(md);
	free(buf);
	return rc;
}

int rd_find_file(const rd_ckpt *ck, const char *path)
{
	for (uint32_t i = 0; i < ck->mf->nfiles; i++)
		if (!strcmp(ck->mf->files[i].path, path))
			return (int)i;
	return -1;
}
