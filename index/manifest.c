/*
 * manifest.c -- binary encoding of checkpoint manifests.
 *
 * Why binary and not JSON: a 7B checkpoint has ~55,000 chunks, and the mount decodes every manifest
 * at start and again whenever the store's generation changes; a flat little-endian record decodes in
 * well under a millisecond and is trivially bounds-checked. Layout (all integers little-endian):
 *
 *   "DFMF" u16 version
 *   str name, str base, u64 uid, i64 ctime_ns, u32 nfiles
 *   file:  str path, u64 size, u8 kind, u8 lossless, u8 sha256[32], u32 nsegs
 *   seg:   u64 off, u64 len, str name, u8 kind, u8 dtype, u8 codec, u8 ndim, u64 shape[ndim],
 *          u32 chunk_size, i32 base_file, i32 base_seg,
 *          f32 delta_rel_err, f32 output_rel_err, f32 bits, f32 score, u32 params[4],
 *          u64 zeros, u64 broken, u8 nm_n, u8 nm_m, u32 nchunks, nchunks x chunk,
 *          u8 nshared, nshared x chunk (version 4; version 3 has neither and reads as nshared 0)
 *   chunk: u8 flags, u32 blen, u8 hash[16]
 *   str:   u16 length + bytes (no NUL)
 *   u64 XXH3-64 of every byte before it
 *
 * The checksum: a manifest says which blob holds which bytes, so a damaged one could make the mount
 * serve the wrong bytes with no error (a chunk's flags byte flipped to "same as base" returns the
 * base's chunk; fuzzing the store found 52-63% of single-byte damage otherwise undetected). Blobs
 * carry their hash in the manifest; the manifest carries its own.
 */
#include "manifest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "../codec/codec.h"
#include "../codec/dtype.h"

static const char MF_MAGIC[4] = {'D', 'F', 'M', 'F'};

/* --- writer ----------------------------------------------------------------------------------- */

typedef struct wbuf {
	uint8_t *p;
	size_t len, cap;
	int oom;
} wbuf;

static void w_bytes(wbuf *w, const void *p, size_t n)
{
	if (w->oom)
		return;
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 4096;
		while (cap < w->len + n)
			cap *= 2;
		uint8_t *np = realloc(w->p, cap);
		if (!np) {
			w->oom = 1;
			return;
		}
		w->p = np;
		w->cap = cap;
	}
	memcpy(w->p + w->len, p, n);
	w->len += n;
}

static void w_le(wbuf *w, uint64_t v, unsigned n)
{
	uint8_t b[8];
	for (unsigned i = 0; i < n; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	w_bytes(w, b, n);
}

static void w_f32(wbuf *w, float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	w_le(w, u, 4);
}

static void w_str(wbuf *w, const char *s)
{
	size_t n = strlen(s);
	if (n > 0xffff) {
		w->oom = 1; /* names are validated far below this; treat as a caller bug */
		return;
	}
	w_le(w, n, 2);
	w_bytes(w, s, n);
}

int mf_encode(const manifest *m, uint8_t **buf, size_t *len)
{
	wbuf w = {0};
	w_bytes(&w, MF_MAGIC, 4);
	w_le(&w, MF_VERSION, 2);
	w_str(&w, m->name);
	w_str(&w, m->base ? m->base : "");
	w_le(&w, m->uid, 8);
	w_le(&w, (uint64_t)m->ctime_ns, 8);
	w_le(&w, m->nfiles, 4);
	for (uint32_t i = 0; i < m->nfiles; i++) {
		const mf_file *f = &m->files[i];
		w_str(&w, f->path);
		w_le(&w, f->size, 8);
		w_le(&w, f->kind, 1);
		w_le(&w, f->lossless, 1);
		w_bytes(&w, f->sha256, 32);
		w_le(&w, f->nsegs, 4);
		for (uint32_t j = 0; j < f->nsegs; j++) {
			const mf_seg *s = &f->segs[j];
			w_le(&w, s->off, 8);
			w_le(&w, s->len, 8);
			w_str(&w, s->name ? s->name : "");
			w_le(&w, s->kind, 1);
			w_le(&w, s->dtype, 1);
			w_le(&w, s->codec, 1);
			w_le(&w, s->ndim, 1);
			for (unsigned d = 0; d < s->ndim; d++)
				w_le(&w, s->shape[d], 8);
			w_le(&w, s->chunk_size, 4);
			w_le(&w, (uint32_t)s->base_file, 4);
			w_le(&w, (uint32_t)s->base_seg, 4);
			w_f32(&w, s->q.delta_rel_err);
			w_f32(&w, s->q.output_rel_err);
			w_f32(&w, s->q.bits);
			w_f32(&w, s->q.score);
			for (unsigned k = 0; k < 4; k++)
				w_le(&w, s->q.params[k], 4);
			w_le(&w, s->zeros, 8);
			w_le(&w, s->broken, 8);
			w_le(&w, s->nm_n, 1);
			w_le(&w, s->nm_m, 1);
			w_le(&w, s->nchunks, 4);
			for (uint32_t c = 0; c < s->nchunks; c++) {
				w_le(&w, s->chunks[c].flags, 1);
				w_le(&w, s->chunks[c].blen, 4);
				w_bytes(&w, s->chunks[c].hash, 16);
			}
			w_le(&w, s->nshared, 1);
			for (uint32_t c = s->nchunks; c < s->nchunks + s->nshared; c++) {
				w_le(&w, s->chunks[c].flags, 1);
				w_le(&w, s->chunks[c].blen, 4);
				w_bytes(&w, s->chunks[c].hash, 16);
			}
		}
	}
	if (!w.oom)
		w_le(&w, XXH3_64bits(w.p, w.len), 8);
	if (w.oom) {
		free(w.p);
		return -ENOMEM;
	}
	*buf = w.p;
	*len = w.len;
	return 0;
}

/* --- reader ----------------------------------------------------------------------------------- */

typedef struct rbuf {
	const uint8_t *p;
	size_t len, pos;
	int bad;
} rbuf;

static const uint8_t *r_take(rbuf *r, size_t n)
{
	if (r->bad || n > r->len - r->pos) {
		r->bad = 1;
		return NULL;
	}
	const uint8_t *p = r->p + r->pos;
	r->pos += n;
	return p;
}

static uint64_t r_le(rbuf *r, unsigned n)
{
	const uint8_t *p = r_take(r, n);
	uint64_t v = 0;
	if (!p)
		return 0;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static float r_f32(rbuf *r)
{
	uint32_t u = (uint32_t)r_le(r, 4);
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static char *r_str(rbuf *r)
{
	size_t n = r_le(r, 2);
	const uint8_t *p = r_take(r, n);
	if (!p)
		return NULL;
	if (memchr(p, 0, n)) {
		r->bad = 1;
		return NULL;
	}
	char *s = malloc(n + 1);
	if (!s) {
		r->bad = 1;
		return NULL;
	}
	memcpy(s, p, n);
	s[n] = 0;
	return s;
}

/* Allocate count elements of size, refusing counts the remaining input cannot possibly describe
 * (each element takes at least min_bytes on disk): a corrupt count never triggers a huge calloc. */
static void *r_array(rbuf *r, uint64_t count, size_t size, size_t min_bytes)
{
	if (r->bad || count > (r->len - r->pos) / min_bytes) {
		r->bad = 1;
		return NULL;
	}
	void *p = calloc(count ? count : 1, size);
	if (!p)
		r->bad = 1;
	return p;
}

#define BAD(...) do { rc = df_errf(err, -EBADMSG, __VA_ARGS__); goto fail; } while (0)

/* Read chunk c of s (flags, blen, hash), adding its blen to s->stored: 0, or 1 if its flags are
 * not valid for the segment (a SAME chunk needs a base). */
static int r_chunk(rbuf *r, mf_seg *s, uint32_t c)
{
	mf_chunk *ch = &s->chunks[c];
	ch->flags = (uint8_t)r_le(r, 1);
	ch->blen = (uint32_t)r_le(r, 4);
	const uint8_t *h = r_take(r, 16);
	if (h)
		memcpy(ch->hash, h, 16);
	s->stored += ch->blen;
	return ch->flags > MF_CHUNK_SAME || (ch->flags == MF_CHUNK_SAME && s->base_file < 0);
}

int mf_decode(const void *buf, size_t len, manifest **out, df_err *err)
{
	int rc;
	if (len < 6 + 8)
		return df_errf(err, -EBADMSG, "manifest truncated (%zu bytes)", len);
	uint64_t sum = 0;
	for (unsigned i = 0; i < 8; i++)
		sum |= (uint64_t)((const uint8_t *)buf)[len - 8 + i] << (8 * i);
	if (sum != XXH3_64bits(buf, len - 8))
		return df_errf(err, -EBADMSG, "manifest fails its checksum (damaged store: see "
			       "`deltafs verify`)");
	rbuf r = {.p = buf, .len = len - 8};
	manifest *m = calloc(1, sizeof *m);
	if (!m)
		return df_errf(err, -ENOMEM, "out of memory decoding a manifest");
	const uint8_t *magic = r_take(&r, 4);
	if (!magic || memcmp(magic, MF_MAGIC, 4))
		BAD("not a deltafs manifest (bad magic)");
	unsigned version = (unsigned)r_le(&r, 2);
	if (version != MF_VERSION && version != 3)
		BAD("manifest version %u is not supported (this deltafs reads versions 3 and %d)",
		    version, MF_VERSION);
	m->name = r_str(&r);
	m->base = r_str(&r);
	m->uid = r_le(&r, 8);
	m->ctime_ns = (int64_t)r_le(&r, 8);
	uint64_t nfiles = r_le(&r, 4);
	m->files = r_array(&r, nfiles, sizeof *m->files, 2 + 8 + 2 + 32 + 4);
	if (r.bad)
		BAD("manifest truncated in its header");
	/* The names become directory names in the mount and in a store's listing: a damaged one
	 * must not put a '/' or a control character there. */
	if (mf_check_name("checkpoint name", m->name, err) ||
	    (*m->base && mf_check_name("base name", m->base, err)))
		goto fail_kept;
	m->nfiles = (uint32_t)nfiles;
	for (uint32_t i = 0; i < m->nfiles; i++) {
		mf_file *f = &m->files[i];
		f->path = r_str(&r);
		f->size = r_le(&r, 8);
		f->kind = (uint8_t)r_le(&r, 1);
		f->lossless = (uint8_t)r_le(&r, 1);
		const uint8_t *sha = r_take(&r, 32);
		if (sha)
			memcpy(f->sha256, sha, 32);
		uint64_t nsegs = r_le(&r, 4);
		f->segs = r_array(&r, nsegs, sizeof *f->segs, 8 + 8 + 2 + 4 + 12 + 32 + 18 + 4);
		if (r.bad)
			BAD("manifest truncated in file %u", i);
		f->nsegs = (uint32_t)nsegs;
		if (f->kind > MF_FILE_RAW)
			BAD("file \"%s\": unknown kind %u", f->path, f->kind);
		uint64_t end = 0;
		for (uint32_t j = 0; j < f->nsegs; j++) {
			mf_seg *s = &f->segs[j];
			s->off = r_le(&r, 8);
			s->len = r_le(&r, 8);
			s->name = r_str(&r);
			s->kind = (uint8_t)r_le(&r, 1);
			s->dtype = (uint8_t)r_le(&r, 1);
			s->codec = (uint8_t)r_le(&r, 1);
			s->ndim = (uint8_t)r_le(&r, 1);
			if (s->ndim > MF_MAX_DIMS)
				BAD("file \"%s\": segment %u has %u dims", f->path, j, s->ndim);
			for (unsigned d = 0; d < s->ndim; d++)
				s->shape[d] = r_le(&r, 8);
			s->chunk_size = (uint32_t)r_le(&r, 4);
			s->base_file = (int32_t)(uint32_t)r_le(&r, 4);
			s->base_seg = (int32_t)(uint32_t)r_le(&r, 4);
			s->q.delta_rel_err = r_f32(&r);
			s->q.output_rel_err = r_f32(&r);
			s->q.bits = r_f32(&r);
			s->q.score = r_f32(&r);
			for (unsigned k = 0; k < 4; k++)
				s->q.params[k] = (uint32_t)r_le(&r, 4);
			s->zeros = r_le(&r, 8);
			s->broken = r_le(&r, 8);
			s->nm_n = (uint8_t)r_le(&r, 1);
			s->nm_m = (uint8_t)r_le(&r, 1);
			uint64_t nchunks = r_le(&r, 4);
			if (!r.bad && nchunks > (r.len - r.pos) / 21)
				r.bad = 1;
			if (!r.bad && !(s->chunks = calloc(nchunks + MF_MAX_SHARED, sizeof *s->chunks)))
				r.bad = 1;
			if (r.bad)
				BAD("manifest truncated in file \"%s\" segment %u", f->path ? f->path : "?", j);
			s->nchunks = (uint32_t)nchunks;
			for (uint32_t c = 0; c < s->nchunks; c++)
				if (r_chunk(&r, s, c))
					BAD("file \"%s\" tensor \"%s\": chunk %u has bad flags", f->path,
					    s->name ? s->name : "", c);
			s->nshared = version > 3 ? (uint8_t)r_le(&r, 1) : 0;
			if (s->nshared > MF_MAX_SHARED)
				BAD("file \"%s\" tensor \"%s\": %u shared blobs", f->path,
				    s->name ? s->name : "", s->nshared);
			for (uint32_t c = s->nchunks; c < s->nchunks + s->nshared; c++)
				if (r_chunk(&r, s, c) || s->chunks[c].flags != MF_CHUNK_BLOB)
					BAD("file \"%s\" tensor \"%s\": its shared blob has bad flags",
					    f->path, s->name ? s->name : "");
			if (r.bad)
				BAD("manifest truncated in file \"%s\" segment %u", f->path, j);
			if (s->off != end || s->len > f->size - s->off)
				BAD("file \"%s\": segment %u at [%llu, +%llu) does not tile the file", f->path,
				    j, (unsigned long long)s->off, (unsigned long long)s->len);
			end = s->off + s->len;
			if (s->kind > MF_RAW || s->dtype >= DT_COUNT)
				BAD("file \"%s\" segment %u: unknown kind or dtype", f->path, j);
			uint64_t want = s->len && s->chunk_size ? (s->len - 1) / s->chunk_size + 1 : 0;
			if ((s->len && !s->chunk_size) || s->nchunks != want)
				BAD("file \"%s\" tensor \"%s\": %u chunks of %u bytes cannot hold %llu bytes",
				    f->path, s->name, s->nchunks, s->chunk_size, (unsigned long long)s->len);
			if ((s->base_file < 0) != (s->base_seg < 0) || (s->base_file >= 0 && !*m->base))
				BAD("file \"%s\" tensor \"%s\": inconsistent base reference", f->path, s->name);
		}
		if (end != f->size)
			BAD("file \"%s\": segments cover %llu of %llu bytes", f->path,
			    (unsigned long long)end, (unsigned long long)f->size);
		if (mf_check_path(f->path, err))
			goto fail_kept;
	}
	if (r.pos != r.len)
		BAD("manifest has %zu trailing bytes", r.len - r.pos);
	*out = m;
	return 0;
fail_kept:
	rc = -EBADMSG;
fail:
	mf_free(m);
	return rc;
}

int mf_peek_base(const void *buf, size_t len, char *out, size_t outlen)
{
	rbuf r = {.p = buf, .len = len};
	const uint8_t *magic = r_take(&r, 4);
	uint64_t v;
	if (!magic || memcmp(magic, MF_MAGIC, 4) || ((v = r_le(&r, 2)) != MF_VERSION && v != 3))
		return -EBADMSG;
	size_t n = r_le(&r, 2);
	r_take(&r, n);
	n = r_le(&r, 2);
	const uint8_t *p = r_take(&r, n);
	if (!p || n >= outlen)
		return -EBADMSG;
	memcpy(out, p, n);
	out[n] = 0;
	return 0;
}

int mf_peek_uid(const void *buf, size_t len, uint64_t *uid)
{
	rbuf r = {.p = buf, .len = len};
	const uint8_t *magic = r_take(&r, 4);
	uint64_t v;
	if (!magic || memcmp(magic, MF_MAGIC, 4) || ((v = r_le(&r, 2)) != MF_VERSION && v != 3))
		return -EBADMSG;
	for (int i = 0; i < 2; i++) /* name, base */
		r_take(&r, r_le(&r, 2));
	*uid = r_le(&r, 8);
	return r.bad ? -EBADMSG : 0;
}

void mf_free(manifest *m)
{
	if (!m)
		return;
	for (uint32_t i = 0; i < m->nfiles; i++) {
		mf_file *f = &m->files[i];
		for (uint32_t j = 0; j < f->nsegs; j++) {
			free(f->segs[j].name);
			free(f->segs[j].chunks);
		}
		free(f->segs);
		free(f->path);
	}
	free(m->files);
	free(m->name);
	free(m->base);
	free(m);
}

uint64_t mf_logical_bytes(const manifest *m)
{
	uint64_t t = 0;
	for (uint32_t i = 0; i < m->nfiles; i++)
		t += m->files[i].size;
	return t;
}

uint64_t mf_stored_bytes(const manifest *m)
{
	uint64_t t = 0;
	for (uint32_t i = 0; i < m->nfiles; i++)
		for (uint32_t j = 0; j < m->files[i].nsegs; j++)
			t += m->files[i].segs[j].stored;
	return t;
}

const mf_chunk *mf_blob_next(mf_blob_iter *it)
{
	/* Resumes where the last call returned: the increments of the loops run only when a
	 * segment or a file is done. */
	for (; it->f < it->m->nfiles; it->f++, it->g = 0) {
		const mf_file *fl = &it->m->files[it->f];
		for (; it->g < fl->nsegs; it->g++, it->c = 0) {
			const mf_seg *sg = &fl->segs[it->g];
			while (it->c < sg->nchunks + sg->nshared) {
				uint32_t c = it->c++;
				if (sg->chunks[c].flags == MF_CHUNK_BLOB) {
					it->sg = sg;
					it->chunk = c;
					return &sg->chunks[c];
				}
			}
		}
	}
	return NULL;
}

uint32_t mf_seg_at(const mf_file *f, uint64_t off)
{
	uint32_t lo = 0, hi = f->nsegs;
	/* Last segment whose start is <= off; empty segments share a start with their successor, and
	 * the search lands on the non-empty one that contains off. */
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (f->segs[mid].off <= off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static int check_component(const char *what, const char *full, const char *s, size_t n, df_err *err)
{
	if (n == 0)
		return df_errf(err, -EINVAL, "%s \"%s\": empty name or component", what, full);
	if (n > 255)
		return df_errf(err, -EINVAL, "%s \"%s\": a name or component is longer than 255 bytes",
			       what, full);
	if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
		return df_errf(err, -EINVAL, "%s \"%s\": \".\" and \"..\" are not allowed", what, full);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return df_errf(err, -EINVAL, "%s \"%s\": control characters are not allowed",
				       what, full);
	return 0;
}

int mf_check_name(const char *what, const char *s, df_err *err)
{
	if (!s)
		return df_errf(err, -EINVAL, "%s missing", what);
	if (strchr(s, '/'))
		return df_errf(err, -EINVAL, "%s \"%s\": '/' is not allowed", what, s);
	return check_component(what, s, s, strlen(s), err);
}

int mf_check_path(const char *s, df_err *err)
{
	if (!s)
		return df_errf(err, -EINVAL, "file path missing");
	for (const char *p = s;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		int rc = check_component("file path", s, p, n, err);
		if (rc || !slash)
			return rc;
		p = slash + 1;
	}
}
