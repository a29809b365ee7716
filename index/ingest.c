/*
 * ingest.c -- see ingest.h for the pipeline.
 *
 * Threads: encoders take chunks from one atomic counter (chunks are equal-sized work, so no smarter
 * scheduling pays), each with its own codec context, base-decode buffer and blob batch. A worker
 * writes its batch to LMDB itself once it holds ING_BATCH_BYTES: LMDB serialises the write
 * transactions, and the encoders of other threads go on meanwhile. The calling thread hashes the
 * input files (sha256, recorded for `verify` and `export`) while the workers encode, then reports
 * progress until they finish.
 */
#include "ingest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "../codec/codec.h"
#include "../codec/dtype.h"
#include "../codec/alloc.h"
#include "../codec/deltadq.h"
#include "../codec/half.h"
#include "../codec/lossless.h"
#include "../codec/lowrank.h"
#include "../codec/palette.h"
#include "../codec/spp.h"
#include "reader.h"
#include "safetensors.h"

/* 128 KiB: on charlm (F32) and generated BF16 pairs, tests/bench/bench_chunk shows the ratio flat
 * (within 1.5%) from 64 KiB to 4 MiB chunks, so the size is set by reads. A cold random 128 KiB
 * read of a lossless fine-tune decodes every chunk it touches and the base chunk under each: 1.5
 * chunks of 256 KiB on average (x2 with the base), 2 of 128 KiB, 2.9 of 64 KiB. Through the mount,
 * 1 GB pair, 1000 cold random 128 KiB preads, medians of 3 rounds: 256 KiB 127 MB/s, 128 KiB 175,
 * 64 KiB 181 (squashfuse 80-92 in the same runs); but each blob wastes half an LMDB page on
 * average, and the store file of the pair grew from 1.08 GB (256 KiB) to 1.10 (128 KiB) and 1.16
 * (64 KiB). A DeltaDQ fine-tune keeps its ~256 KiB chunks of whole rows (dq_chunk_rows: fewer
 * per-blob headers and level tables), over 2-3 of the base's (rd_decode_base). */
const uint32_t ING_CHUNK_DEFAULT = 128u << 10;

#define ING_BATCH_BYTES (32u << 20) /* blob bytes a worker buffers before one write txn */
#define ING_MAX_FILES 100000

typedef struct in_file {
	char *rel;       /* path inside the checkpoint */
	char *abs;       /* path to read */
	uint8_t *map;    /* whole file, read-only; NULL when empty */
	uint64_t size;
	int is_st;
	st_file st;
} in_file;

/* One piece of work: chunk c of segment (f, s), or, with c == UNIT_PLAN, choosing the DeltaDQ
 * parameters of that segment. Plan units come first in the queue, so a worker that takes a chunk of
 * a segment still being planned waits only for that one plan. */
typedef struct unit {
	uint32_t f, s, c;
} unit;

#define UNIT_PLAN UINT32_MAX

/* One point of a matrix's rate-distortion curve (codec/alloc.h): dq_plan at one ladder ratio. */
typedef struct curve_pt {
	dq_params p;
	dq_stats st;  /* of the point's choice: DeltaDQ's, or the low-rank blobs' when lr.buf */
	lr_blobs lr;
	lr_stats ls;
} curve_pt;

/* The DeltaDQ plan of one segment: set by its plan unit, read by its chunk units. */
typedef struct plan {
	dq_params p;  /* CX_DELTADQ segments */
	double ratio; /* CX_DELTADQ: this matrix's target from the allocation; 0: opts.ratio */
	double weight; /* > 0: planned on a ladder of ratios, one point chosen for all at the end */
	curve_pt *pts; /* those points (npts), from the plan unit to the choice */
	size_t npts;
	pal_table t;  /* CX_PALETTE segments */
	lr_blobs lr;  /* CX_LOWRANK: every blob, encoded by the plan unit; freed with the job */
	int planned;  /* set before the workers start: this segment has a plan unit */
	int done; /* guarded by job.lock; 1 = plan valid, -1 = tensor falls back to lossless */
} plan;

typedef struct job {
	store *s;
	const ing_opts *o;
	in_file *in;
	manifest *m;
	rd_ckpt *base;
	unit *units;
	size_t nunits;
	plan **plans;    /* [file][seg], NULL entries for segments not planned */
	const st_file *calib;
	const uint8_t *calib_map;
	atomic_size_t next;
	atomic_uint_fast64_t done_bytes;
	atomic_uint_fast64_t new_bytes;
	atomic_int failed;
	atomic_uint off_target; /* DeltaDQ plans that could not land within 10% of the ratio */
	/* Curve allocation (codec/alloc.h): the ncurve matrices planned on a ladder, their segments,
	 * how many plan units are still to finish (the last one chooses), and the budget ratio. */
	plan **cpl;
	mf_seg **csg;
	size_t ncurve;
	atomic_size_t curves_left;
	double curve_R;
	uint64_t total_bytes;   /* progress total: input bytes + bytes of the matrices planned */
	pthread_mutex_t lock; /* guards err and the finished count */
	pthread_cond_t cond;
	int finished;
	int level;
	df_err err;
} job;

/* --- input ------------------------------------------------------------------------------------ */

static void in_free(in_file *in, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (in[i].map)
			munmap(in[i].map, in[i].size);
		st_free(&in[i].st);
		free(in[i].rel);
		free(in[i].abs);
	}
	free(in);
}

typedef struct in_list {
	in_file *v;
	size_t n, cap;
} in_list;

static int in_push(in_list *l, const char *rel, const char *abs, df_err *err)
{
	if (l->n == ING_MAX_FILES)
		return df_errf(err, -E2BIG, "%s: more than %d files", abs, ING_MAX_FILES);
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		in_file *nv = realloc(l->v, cap * sizeof *nv);
		if (!nv)
			return df_errf(err, -ENOMEM, "out of memory");
		l->v = nv;
		l->cap = cap;
	}
	in_file *f = &l->v[l->n];
	memset(f, 0, sizeof *f);
	f->rel = strdup(rel);
	f->abs = strdup(abs);
	l->n++;
	if (!f->rel || !f->abs)
		return df_errf(err, -ENOMEM, "out of memory");
	return 0;
}

/* Collect regular files under dir (rel is its path inside the checkpoint, "" at the top). Symlinks
 * to files are followed; symlinks to directories are not (no loops). */
static int walk(in_list *l, const char *dir, const char *rel, df_err *err)
{
	DIR *d = opendir(dir);
	if (!d)
		return df_errf(err, -errno, "%s: %s", dir, strerror(errno));
	int rc = 0;
	struct dirent *e;
	while (!rc && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char abs[PATH_MAX], r[PATH_MAX];
		struct stat st, lst;
		if ((size_t)snprintf(abs, sizeof abs, "%s/%s", dir, e->d_name) >= sizeof abs ||
		    (size_t)snprintf(r, sizeof r, "%s%s%s", rel, *rel ? "/" : "", e->d_name) >= sizeof r) {
			rc = df_errf(err, -ENAMETOOLONG, "%s/%s: path too long", dir, e->d_name);
			break;
		}
		if (lstat(abs, &lst) || stat(abs, &st)) {
			rc = df_errf(err, -errno, "%s: %s", abs, strerror(errno));
			break;
		}
		if (S_ISDIR(st.st_mode) && !S_ISLNK(lst.st_mode))
			rc = walk(l, abs, r, err);
		else if (S_ISREG(st.st_mode))
			rc = in_push(l, r, abs, err);
	}
	closedir(d);
	return rc;
}

static int cmp_rel(const void *a, const void *b)
{
	return strcmp(((const in_file *)a)->rel, ((const in_file *)b)->rel);
}

static int ends_with(const char *s, const char *suf)
{
	size_t n = strlen(s), m = strlen(suf);
	return n >= m && !strcmp(s + n - m, suf);
}

/* Map and validate every input file. A single file given on the command line must be safetensors;
 * inside a directory, *.safetensors files are parsed and the rest kept whole. */
static int load_inputs(const char *path, in_file **out, size_t *nout, df_err *err)
{
	struct stat st;
	in_list l = {0};
	int rc, single = 0;
	if (stat(path, &st))
		return df_errf(err, -errno, "%s: %s", path, strerror(errno));
	if (S_ISDIR(st.st_mode)) {
		rc = walk(&l, path, "", err);
		if (!rc && !l.n)
			rc = df_errf(err, -ENOENT, "%s: directory holds no regular file", path);
	} else if (S_ISREG(st.st_mode)) {
		const char *slash = strrchr(path, '/');
		single = 1;
		rc = in_push(&l, slash ? slash + 1 : path, path, err);
	} else {
		rc = df_errf(err, -EINVAL, "%s: not a file or directory", path);
	}
	if (!rc)
		qsort(l.v, l.n, sizeof *l.v, cmp_rel);
	for (size_t i = 0; !rc && i < l.n; i++) {
		in_file *f = &l.v[i];
		if ((rc = mf_check_path(f->rel, err)))
			break;
		int fd = open(f->abs, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st)) {
			rc = df_errf(err, -errno, "%s: %s", f->abs, strerror(errno));
			if (fd >= 0)
				close(fd);
			break;
		}
		f->size = (uint64_t)st.st_size;
		if (f->size) {
			f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
			if (f->map == MAP_FAILED) {
				f->map = NULL;
				rc = df_errf(err, -errno, "%s: cannot map: %s", f->abs, strerror(errno));
			} else {
				madvise(f->map, f->size, MADV_SEQUENTIAL);
			}
		}
		close(fd);
		f->is_st = single || ends_with(f->rel, ".safetensors");
		if (!rc && f->is_st)
			rc = st_parse(f->map, f->size, f->abs, &f->st, err);
	}
	*out = l.v;
	*nout = l.n;
	return rc;
}

/* --- manifest skeleton ------------------------------------------------------------------------ */

/* A base tensor by name, for matching: sorted by name, looked up with bsearch. */
typedef struct base_ref {
	const char *name;
	uint32_t f, s;
} base_ref;

static int cmp_ref(const void *a, const void *b)
{
	return strcmp(((const base_ref *)a)->name, ((const base_ref *)b)->name);
}

static base_ref *base_index(const manifest *bm, size_t *n)
{
	size_t cnt = 0, k = 0;
	for (uint32_t i = 0; i < bm->nfiles; i++)
		for (uint32_t j = 0; j < bm->files[i].nsegs; j++)
			cnt += bm->files[i].segs[j].kind == MF_TENSOR;
	base_ref *v = malloc((cnt ? cnt : 1) * sizeof *v);
	if (!v)
		return NULL;
	for (uint32_t i = 0; i < bm->nfiles; i++)
		for (uint32_t j = 0; j < bm->files[i].nsegs; j++)
			if (bm->files[i].segs[j].kind == MF_TENSOR)
				v[k++] = (base_ref){bm->files[i].segs[j].name, i, j};
	qsort(v, cnt, sizeof *v, cmp_ref);
	*n = cnt;
	return v;
}

static int seg_init(mf_seg *sg, uint8_t kind, uint64_t off, uint64_t len, const char *name,
		    uint32_t chunk_size)
{
	sg->off = off;
	sg->len = len;
	sg->kind = kind;
	sg->dtype = DT_U8;
	sg->codec = CX_LOSSLESS;
	sg->chunk_size = chunk_size;
	sg->base_file = sg->base_seg = -1;
	sg->nchunks = len ? (uint32_t)((len - 1) / chunk_size + 1) : 0;
	sg->name = strdup(name);
	sg->chunks = calloc(sg->nchunks + MF_MAX_SHARED, sizeof *sg->chunks);
	return sg->name && sg->chunks ? 0 : -ENOMEM;
}

static int same_shape(const mf_seg *a, const st_tensor *t)
{
	if (a->ndim != t->ndim || a->dtype != t->dtype)
		return 0;
	for (unsigned d = 0; d < t->ndim; d++)
		if (a->shape[d] != t->shape[d])
			return 0;
	return 1;
}

/* DeltaDQ applies to a float matrix with a base counterpart. Its chunks hold dq_chunk_rows whole
 * rows (seg_rechunk), whatever the base's chunks: the reader puts the base bytes under each
 * together (rd_decode_base). */
static int dq_eligible(const mf_seg *sg)
{
	return sg->base_file >= 0 && sg->ndim == 2 && sg->shape[0] && sg->shape[1] &&
	       (sg->dtype == DT_F32 || sg->dtype == DT_F16 || sg->dtype == DT_BF16) &&
	       dq_chunk_rows(sg->shape[1], dt_size(sg->dtype)) * sg->shape[1] *
			       dt_size(sg->dtype) <= UINT32_MAX;
}

/* Give segment sg chunks of cs bytes (it had the base's: a DeltaDQ fine-tune's are larger). */
static int seg_rechunk(mf_seg *sg, uint32_t cs)
{
	uint32_t n = sg->len ? (uint32_t)((sg->len - 1) / cs + 1) : 0;
	mf_chunk *c = realloc(sg->chunks, (n + MF_MAX_SHARED) * sizeof *c);
	if (!c)
		return -ENOMEM;
	memset(c, 0, (n + MF_MAX_SHARED) * sizeof *c);
	sg->chunks = c;
	sg->chunk_size = cs;
	sg->nchunks = n;
	return 0;
}

/* A lossy (palette) base: float tensors of 2 or more dimensions; norms and biases stay exact. */
static int pal_eligible(const mf_seg *sg)
{
	return sg->kind == MF_TENSOR && sg->base_file < 0 && sg->ndim >= 2 && sg->len &&
	       (sg->dtype == DT_F32 || sg->dtype == DT_F16 || sg->dtype == DT_BF16);
}

static int build_manifest(manifest *m, in_file *in, size_t nin, const rd_ckpt *base,
			  uint32_t chunk_size, uint64_t *matched, df_err *err)
{
	size_t nref = 0;
	base_ref *refs = NULL;
	if (base && !(refs = base_index(base->mf, &nref)))
		return df_errf(err, -ENOMEM, "out of memory");
	int rc = 0;
	m->files = calloc(nin, sizeof *m->files);
	if (!m->files)
		rc = -ENOMEM;
	m->nfiles = (uint32_t)nin;
	for (size_t i = 0; !rc && i < nin; i++) {
		mf_file *f = &m->files[i];
		in_file *x = &in[i];
		f->path = strdup(x->rel);
		f->size = x->size;
		f->kind = x->is_st ? MF_FILE_SAFETENSORS : MF_FILE_RAW;
		f->lossless = 1;
		uint32_t nsegs = x->is_st ? (uint32_t)(1 + x->st.ntensors) : 1;
		f->segs = calloc(nsegs, sizeof *f->segs);
		if (!f->path || !f->segs) {
			rc = -ENOMEM;
			break;
		}
		f->nsegs = nsegs;
		if (!x->is_st) {
			rc = seg_init(&f->segs[0], MF_RAW, 0, x->size, "", chunk_size);
			continue;
		}
		rc = seg_init(&f->segs[0], MF_HEADER, 0, x->st.data_start, "", chunk_size);
		for (size_t t = 0; !rc && t < x->st.ntensors; t++) {
			const st_tensor *st = &x->st.tensors[t];
			mf_seg *sg = &f->segs[1 + t];
			const base_ref *hit = NULL;
			if (refs) {
				base_ref key = {st->name, 0, 0};
				hit = bsearch(&key, refs, nref, sizeof *refs, cmp_ref);
				if (hit && !same_shape(&base->mf->files[hit->f].segs[hit->s], st))
					hit = NULL;
			}
			uint32_t cs = hit ? base->mf->files[hit->f].segs[hit->s].chunk_size
					  : chunk_size;
			rc = seg_init(sg, MF_TENSOR, x->st.data_start + st->begin, st->end - st->begin,
				      st->name, cs);
			if (rc)
				break;
			sg->dtype = (uint8_t)st->dtype;
			sg->ndim = (uint8_t)st->ndim;
			sg->nm_m = 12; /* while ingesting: bit 4 = still 2:4, bit 8 = still 4:8 */
			memcpy(sg->shape, st->shape, sizeof sg->shape[0] * st->ndim);
			if (hit) {
				sg->base_file = (int32_t)hit->f;
				sg->base_seg = (int32_t)hit->s;
				(*matched)++;
			}
		}
	}
	free(refs);
	return rc ? df_errf(err, rc, "out of memory building the manifest") : 0;
}

/* --- encoding --------------------------------------------------------------------------------- */

static void job_fail(job *j, int rc, const df_err *e)
{
	pthread_mutex_lock(&j->lock);
	if (!atomic_load(&j->failed)) {
		j->err = *e;
		atomic_store(&j->failed, rc);
	}
	pthread_mutex_unlock(&j->lock);
}

typedef struct worker {
	job *j;
	cx_ctx *cx;
	uint8_t *basebuf;
	store_blob *batch;
	size_t nbatch, capbatch, batch_bytes;
	/* The batch's blob bytes, back to back: one buffer reused for every batch. A malloc per
	 * blob (freed after each batch) made glibc grow and trim the thread's arena every 32 MiB,
	 * and the kernel zero the returned pages again: clear_page was 5% of a fine-tune's ingest. */
	uint8_t *arena;
	size_t arena_cap;
	uint8_t *alt; /* the SPP alternative of one chunk, alt_cap bytes */
	size_t alt_cap;
} worker;

static int flush(worker *w, df_err *err);

/* Room for a blob of up to cap bytes at the end of the batch's arena (*out), flushing the batch
 * first when it is full. */
static int arena_room(worker *w, size_t cap, uint8_t **out, df_err *err)
{
	int rc;
	if (w->batch_bytes + cap > w->arena_cap && w->nbatch && (rc = flush(w, err)))
		return rc;
	if (w->batch_bytes + cap > w->arena_cap) { /* batch empty: no blob points into it */
		size_t c2 = ING_BATCH_BYTES + 2 * cap;
		uint8_t *a = realloc(w->arena, c2);
		if (!a)
			return df_errf(err, -ENOMEM, "out of memory");
		w->arena = a;
		w->arena_cap = c2;
	}
	*out = w->arena + w->batch_bytes;
	return 0;
}

static int flush(worker *w, df_err *err)
{
	uint64_t written = 0;
	int rc = w->nbatch ? store_put_batch(w->j->s, w->batch, w->nbatch, &written, err) : 0;
	w->nbatch = w->batch_bytes = 0;
	atomic_fetch_add(&w->j->new_bytes, written);
	return rc;
}

/* Hash the blob of ch (ch->blen bytes at p, in the worker's arena) into ch and queue it for the
 * next batch write. */
static int batch_add(worker *w, mf_chunk *ch, uint8_t *p, df_err *err)
{
	store_hash(p, ch->blen, ch->hash);
	if (w->nbatch == w->capbatch) {
		size_t c2 = w->capbatch ? w->capbatch * 2 : 64;
		store_blob *nb = realloc(w->batch, c2 * sizeof *nb);
		if (!nb)
			return df_errf(err, -ENOMEM, "out of memory");
		w->batch = nb;
		w->capbatch = c2;
	}
	store_blob *b = &w->batch[w->nbatch++];
	b->p = p;
	b->n = ch->blen;
	memcpy(b->hash, ch->hash, 16);
	w->batch_bytes += ch->blen;
	return w->batch_bytes >= ING_BATCH_BYTES ? flush(w, err) : 0;
}


/* Probe inputs for a matrix of `cols` columns: the user's calibration rows when the calibration
 * file has a tensor named like the weight (or its module: the name without ".weight"), else
 * Gaussian rows seeded by the tensor's name, so a re-ingest chooses the same parameters. */
static float *probes(const job *j, const mf_seg *sg, size_t cols, size_t *nprobe, int *calibrated)
{
	*calibrated = 0;
	if (j->calib) {
		size_t nl = strlen(sg->name);
		for (size_t i = 0; i < j->calib->ntensors; i++) {
			const st_tensor *t = &j->calib->tensors[i];
			size_t tl = strlen(t->name);
			int named = !strcmp(t->name, sg->name) ||
				    (nl == tl + 7 && !strncmp(t->name, sg->name, tl) &&
				     !strcmp(sg->name + tl, ".weight"));
			if (!named || t->dtype != DT_F32 || t->ndim != 2 || t->shape[1] != cols ||
			    !t->shape[0])
				continue;
			float *x = malloc(t->end - t->begin);
			if (x)
				memcpy(x, j->calib_map + j->calib->data_start + t->begin, t->end - t->begin);
			*nprobe = x ? t->shape[0] : 0;
			*calibrated = 1;
			return x;
		}
	}
	size_t n = j->o->nprobe ? j->o->nprobe : ING_NPROBE;
	float *x = malloc(n * cols * sizeof *x);
	if (!x)
		return NULL;
	uint64_t st = XXH64(sg->name, strlen(sg->name), 0x5eed) | 1;
	for (size_t i = 0; i < n * cols; i += 2) {
		/* xorshift64* + Box-Muller: deterministic and good enough for probe directions. */
		double u[2];
		for (int k = 0; k < 2; k++) {
			st ^= st >> 12;
			st ^= st << 25;
			st ^= st >> 27;
			u[k] = ((double)((st * 0x2545F4914F6CDD1Dull) >> 11) + 0.5) / 9007199254740992.0;
		}
		double r = sqrt(-2.0 * log(u[0])), a = 6.283185307179586 * u[1];
		x[i] = (float)(r * cos(a));
		if (i + 1 < n * cols)
			x[i + 1] = (float)(r * sin(a));
	}
	*nprobe = n;
	return x;
}

/* Mark segment (f, s)'s plan done (or fallen back to lossless) and wake its chunk units. */
static void plan_done(job *j, const unit *u, int ok)
{
	pthread_mutex_lock(&j->lock);
	j->plans[u->f][u->s].done = ok ? 1 : -1;
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);
}

/* The palette of a whole tensor of a lossy base, and its error ||W - W'|| / ||W||. */
static int pal_plan_unit(worker *w, const unit *u, df_err *err)
{
	job *j = w->j;
	const in_file *x = &j->in[u->f];
	mf_seg *sg = &j->m->files[u->f].segs[u->s];
	plan *pl = &j->plans[u->f][u->s];
	const uint8_t *src = x->map + sg->off;
	int rc = pal_fit(src, sg->len, (dt_id)sg->dtype, j->o->pal_bits, &pl->t);
	if (rc == -EDOM) {
		sg->codec = CX_LOSSLESS; /* non-finite values: stays exact */
		rc = 0;
	} else if (rc) {
		rc = df_errf(err, rc, "%s: tensor \"%s\": palette fit failed: %s", x->abs, sg->name,
			     strerror(-rc));
	} else {
		double num = 0, den = 0;
		unsigned es = dt_size(sg->dtype);
		for (size_t i = 0; i < sg->len / es; i++) {
			float v = hf_load((dt_id)sg->dtype, src, i);
			double d = v - pl->t.c[pal_nearest(&pl->t, v)];
			num += d * d;
			den += (double)v * v;
		}
		sg->q.delta_rel_err = den > 0 ? (float)sqrt(num / den) : 0;
		sg->q.params[2] = j->o->pal_bits;
	}
	plan_done(j, u, !rc && sg->codec == CX_PALETTE);
	return rc;
}

/* The low-rank candidate (codec/lowrank.h) of matrix sg at `target` bytes, planned on the same
 * probes as DeltaDQ; with calibration rows, input channel j weighs sqrt(mean X_ij^2) in its SVD.
 * 0 with *lb and *ls filled, or the codec's refusal (-EDOM, -ERANGE) or failure. */
static int lr_candidate(worker *w, const mf_seg *sg, const uint8_t *ft, const uint8_t *base,
			const float *X, size_t nprobe, int calibrated, double target, lr_blobs *lb,
			lr_stats *ls)
{
	size_t rows = sg->shape[0], cols = sg->shape[1];
	float *wt = calibrated ? calloc(cols, sizeof *wt) : NULL;
	if (calibrated && !wt)
		return -ENOMEM;
	for (size_t i = 0; wt && i < nprobe; i++)
		for (size_t c = 0; c < cols; c++)
			wt[c] += X[i * cols + c] * X[i * cols + c];
	for (size_t c = 0; wt && c < cols; c++)
		wt[c] = sqrtf(wt[c] / (float)nprobe);
	/* auto: low-rank alone, or with a DeltaDQ residual in half or three quarters of the bytes */
	static const double hybrid[] = {1, 0.5, 0.25};
	int alone = w->j->o->transform == ING_T_LOWRANK;
	int rc = lr_plan(w->cx, ft, base, (dt_id)sg->dtype, rows, cols,
			 sg->chunk_size / (cols * dt_size(sg->dtype)), wt, X, nprobe, target,
			 hybrid, alone ? 1 : sizeof hybrid / sizeof *hybrid, lb, ls);
	free(wt);
	return rc;
}

/* Segment sg becomes low-rank with the blobs lb (the plan keeps them for the chunk units); its
 * factor blob, when it has several chunks, is the segment's shared chunk, queued here. */
static int lr_adopt(worker *w, mf_seg *sg, plan *pl, lr_blobs *lb, const lr_stats *ls,
		    df_err *err)
{
	uint8_t *p;
	int rc = 0;

	pl->lr = *lb;
	memset(lb, 0, sizeof *lb);
	sg->codec = CX_LOWRANK;
	float score = sg->q.score; /* the allocation's, kept */
	memset(&sg->q, 0, sizeof sg->q);
	sg->q.score = score;
	sg->q.delta_rel_err = (float)ls->delta_rel_err;
	sg->q.output_rel_err = (float)ls->output_rel_err;
	sg->q.bits = (float)ls->bits_per_weight;
	sg->q.params[0] = ls->rank;
	for (unsigned b = 1; b <= LR_MAXBITS; b++)
		sg->q.params[1 + (b - 1) / 4] |= (ls->bands[b] > 255 ? 255 : ls->bands[b])
						 << (8 * ((b - 1) % 4));
	if (ls->hybrid)
		sg->q.params[3] = MF_Q_HYBRID | (uint32_t)ls->resid.bits << 24 |
				  (ls->resid.keep & 0xfff) << 12 | (ls->resid.group & 0xfff);
	if (pl->lr.nchunks > 1) {
		mf_chunk *ch = &sg->chunks[sg->nchunks];
		ch->flags = MF_CHUNK_BLOB;
		ch->blen = (uint32_t)pl->lr.len[pl->lr.nchunks];
		if (!(rc = arena_room(w, ch->blen, &p, err))) {
			memcpy(p, pl->lr.buf + pl->lr.off[pl->lr.nchunks], ch->blen);
			sg->nshared = 1;
			rc = batch_add(w, ch, p, err);
		}
	}
	return rc;
}

/* Which of DeltaDQ's plan (st) and the low-rank one (ls) errs less, by the output error on the
 * probes (on calibration rows, the layer's real error). */
static int lr_wins(const lr_stats *ls, const dq_stats *st)
{
	return ls->output_rel_err < st->output_rel_err ||
	       (ls->output_rel_err == st->output_rel_err && ls->delta_rel_err < st->delta_rel_err);
}

/* What `deltafs info` shows of a DeltaDQ matrix: its plan and measured errors. */
static void seg_quality(mf_seg *sg, const dq_params *p, const dq_stats *st)
{
	sg->q.delta_rel_err = (float)st->delta_rel_err;
	sg->q.output_rel_err = (float)st->output_rel_err;
	sg->q.bits = (float)st->bits_per_weight;
	sg->q.params[0] = p->group;
	sg->q.params[1] = p->keep;
	sg->q.params[2] = p->bits;
	sg->q.params[3] = p->quant | (p->support ? MF_Q_SUPPORT : 0);
}

/* The curve allocation's choice (codec/alloc.h), once every matrix's ladder is planned: one point
 * per matrix by al_choose, its plan kept for the encode (no second dq_plan). Matrices that fell
 * back to lossless (or whose planning failed: the job fails then) are left out of the budget. */
static int curve_choose(worker *wk, job *j, df_err *err)
{
	size_t n = 0, *np = calloc(j->ncurve, sizeof *np), *pick = calloc(j->ncurve, sizeof *pick);
	size_t *ix = calloc(j->ncurve, sizeof *ix);
	const al_point **pp = calloc(j->ncurve, sizeof *pp);
	al_point *pts = calloc(j->ncurve * AL_LADDER_MAX, sizeof *pts);
	double *w = calloc(j->ncurve, sizeof *w), budget = 0;
	int rc = np && pick && ix && pp && pts && w ? 0 : df_errf(err, -ENOMEM, "out of memory");

	for (size_t i = 0; !rc && i < j->ncurve; i++) {
		const plan *pl = j->cpl[i];
		const mf_seg *sg = j->csg[i];
		if (!pl->npts || sg->codec != CX_DELTADQ)
			continue;
		al_point *q = pts + n * AL_LADDER_MAX;
		for (size_t k = 0; k < pl->npts; k++)
			q[k] = (al_point){pl->pts[k].st.bytes,
					  al_dist(pl->pts[k].st.output_rel_err, sg->len)};
		pp[n] = q;
		np[n] = pl->npts;
		w[n] = pl->weight;
		ix[n++] = i;
		budget += (double)sg->len / j->curve_R;
	}
	if (!rc && n) {
		int r = al_choose(pp, np, w, n, budget, pick);
		if (r == -ERANGE)
			atomic_fetch_add(&j->off_target, 1); /* the closest choice is kept */
		else if (r)
			rc = df_errf(err, r, "bit allocation over %zu matrices at %.2fx failed: %s", n,
				     j->curve_R, strerror(-r));
		for (size_t i = 0; !rc && i < n; i++) {
			plan *pl = j->cpl[ix[i]];
			curve_pt *pt = &pl->pts[pick[i]];
			if (pt->lr.buf) {
				rc = lr_adopt(wk, j->csg[ix[i]], pl, &pt->lr, &pt->ls, err);
			} else {
				pl->p = pt->p;
				seg_quality(j->csg[ix[i]], &pl->p, &pt->st);
			}
		}
	}
	free(np);
	free(pick);
	free(ix);
	free(pp);
	free(pts);
	free(w);
	return rc;
}

/* A curve plan unit finished (planned, fell back to lossless, or failed): the last one chooses
 * for all and releases their chunk units. Plan units precede every chunk unit in the queue, so
 * by the time a worker waits on a chunk, every plan unit is running or done. */
static void curve_done(worker *w, job *j)
{
	df_err err = {{0}};
	int rc = 0;

	if (atomic_fetch_sub(&j->curves_left, 1) != 1)
		return;
	if (!atomic_load(&j->failed) && (rc = curve_choose(w, j, &err)))
		job_fail(j, rc, &err);
	pthread_mutex_lock(&j->lock);
	for (size_t i = 0; i < j->ncurve; i++) {
		plan *pl = j->cpl[i];
		pl->done = !rc && pl->npts && (j->csg[i]->codec == CX_DELTADQ ||
						 j->csg[i]->codec == CX_LOWRANK) ? 1 : -1;
		for (size_t k = 0; pl->pts && k < pl->npts; k++)
			lr_blobs_free(&pl->pts[k].lr);
		free(pl->pts);
		pl->pts = NULL;
	}
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);
}

/* Choose segment (f, s)'s DeltaDQ parameters on the whole matrix against the whole decoded base. */
static int dq_plan_unit(worker *w, const unit *u, df_err *err)
{
	job *j = w->j;
	const in_file *x = &j->in[u->f];
	mf_seg *sg = &j->m->files[u->f].segs[u->s];
	plan *pl = &j->plans[u->f][u->s];
	size_t rows = sg->shape[0], cols = sg->shape[1], nprobe = 0;
	uint8_t *base = malloc(sg->len);
	int calibrated;
	float *X = probes(j, sg, cols, &nprobe, &calibrated);
	MDB_txn *txn;
	int rc = base && X ? 0 : df_errf(err, -ENOMEM, "out of memory");
	if (!rc && !(rc = store_rtxn(j->s, &txn, err))) {
		for (uint32_t c = 0; !rc && c < sg->nchunks; c++)
			rc = rd_decode_base(w->cx, j->s, txn, j->base, sg, c,
					    base + (uint64_t)c * sg->chunk_size, err);
		store_txn_end(j->s, txn);
	}
	dq_stats st = {0};
	dq_params fx = j->o->dq;
	spp_stats bz = {0};
	uint64_t broken = 0;
	/* A pruned base whose zeros the fine-tune all keeps (SPP): DeltaDQ over the base's support,
	 * which keeps those zeros exact and spends no byte on them. */
	if (!rc && !spp_measure(base, rows * cols, (dt_id)sg->dtype, &bz) && bz.zeros &&
	    !spp_broken_zeros(x->map + sg->off, base, sg->len, dt_size(sg->dtype), &broken))
		fx.support = !broken;
	else
		bz.zeros = 0;
	if (!rc && pl->weight > 0) {
		/* the curve allocation: every ratio of the ladder now, the choice when all are in */
		al_tensor t = {sg->len, sg->nchunks, 0};
		double lr[AL_LADDER_MAX];
		size_t n = al_ladder(&t, j->curve_R, 0, lr);
		if (!(pl->pts = calloc(n ? n : 1, sizeof *pl->pts)))
			rc = df_errf(err, -ENOMEM, "out of memory");
		for (size_t k = 0; !rc && k < n; k++) {
			int r = dq_plan(w->cx, x->map + sg->off, base, (dt_id)sg->dtype, rows, cols, X,
					nprobe, lr[k], &fx, &pl->pts[k].p, &pl->pts[k].st);
			if (r == -EDOM) {
				sg->codec = CX_LOSSLESS; /* non-finite values: stays exact */
				break;
			} else if (r && r != -ERANGE) { /* a missed ratio is still a measured point */
				rc = df_errf(err, r, "%s: tensor \"%s\": DeltaDQ cannot encode it: %s",
					     x->abs, sg->name, strerror(-r));
				break;
			}
			/* The point's low-rank alternative, at the bytes DeltaDQ spends there: the
			 * ladder then holds, at each size, the better of the two. */
			curve_pt *pt = &pl->pts[k];
			int lrc = j->o->transform == ING_T_DELTADQ || fx.support ? -ENOTSUP
				: lr_candidate(w, sg, x->map + sg->off, base, X, nprobe, calibrated,
					       r ? (double)sg->len / lr[k] : (double)pt->st.bytes,
					       &pt->lr, &pt->ls);
			if (lrc && lrc != -ENOTSUP && lrc != -EDOM && lrc != -ERANGE) {
				rc = df_errf(err, lrc, "%s: tensor \"%s\": low-rank planning failed: "
					     "%s", x->abs, sg->name, strerror(-lrc));
			} else if (!lrc && (r || j->o->transform == ING_T_LOWRANK ||
					    lr_wins(&pt->ls, &pt->st))) {
				pt->st = (dq_stats){pt->ls.delta_rel_err, pt->ls.output_rel_err,
						    pt->ls.bits_per_weight, pt->ls.bytes};
			} else {
				lr_blobs_free(&pt->lr);
			}
			if (!rc && k + 1 == n) {
				pl->npts = n;
				sg->broken = bz.zeros ? broken : 0;
			}
		}
	} else if (!rc) {
		double R = pl->ratio > 0 ? pl->ratio : j->o->ratio;
		int r = j->o->transform == ING_T_LOWRANK ? -ENOTSUP
			: dq_plan(w->cx, x->map + sg->off, base, (dt_id)sg->dtype, rows, cols, X,
				  nprobe, R, &fx, &pl->p, &st);
		lr_blobs lb = {0};
		lr_stats ls = {0};
		/* Low-rank at DeltaDQ's real bytes (or the target's, when DeltaDQ missed or was not
		 * asked for). Not over a pruned base's support: its sum would fill the zeros. */
		int lrc = j->o->transform == ING_T_DELTADQ || fx.support || r == -EDOM ? -ENOTSUP
			: lr_candidate(w, sg, x->map + sg->off, base, X, nprobe, calibrated,
				       r ? (double)sg->len / R : (double)st.bytes, &lb, &ls);
		if (lrc && lrc != -ENOTSUP && lrc != -EDOM && lrc != -ERANGE)
			rc = df_errf(err, lrc, "%s: tensor \"%s\": low-rank planning failed: %s",
				     x->abs, sg->name, strerror(-lrc));
		else if (!lrc && (r || lr_wins(&ls, &st)))
			rc = lr_adopt(w, sg, pl, &lb, &ls, err);
		else if (r == -ENOTSUP) /* low-rank alone was asked for and does not apply */
			r = dq_plan(w->cx, x->map + sg->off, base, (dt_id)sg->dtype, rows, cols, X,
				    nprobe, R, &fx, &pl->p, &st);
		lr_blobs_free(&lb);
		if (rc || sg->codec == CX_LOWRANK) {
			/* chosen (or failed) */
		} else if (r == -ERANGE) {
			atomic_fetch_add(&j->off_target, 1);
			seg_quality(sg, &pl->p, &st);
			sg->broken = bz.zeros ? broken : 0;
		} else if (r == -EDOM) {
			sg->codec = CX_LOSSLESS; /* non-finite values: stays exact */
		} else if (r) {
			rc = df_errf(err, r, "%s: tensor \"%s\": DeltaDQ cannot encode it: %s", x->abs,
				     sg->name, strerror(-r));
		} else {
			seg_quality(sg, &pl->p, &st);
			sg->broken = bz.zeros ? broken : 0;
		}
	}
	free(base);
	free(X);
	if (pl->weight > 0)
		curve_done(w, j);
	else
		plan_done(j, u, !rc && (sg->codec == CX_DELTADQ || sg->codec == CX_LOWRANK));
	return rc;
}

/* Wait until segment (f, s)'s plan is done; NULL if it fell back to lossless. */
static const plan *plan_wait(job *j, const unit *u)
{
	plan *pl = &j->plans[u->f][u->s];
	pthread_mutex_lock(&j->lock);
	while (!pl->done && !atomic_load(&j->failed))
		pthread_cond_wait(&j->cond, &j->lock);
	int ok = pl->done == 1;
	pthread_mutex_unlock(&j->lock);
	return ok ? pl : NULL;
}

static int encode_unit(worker *w, const unit *u, df_err *err)
{
	job *j = w->j;
	const in_file *x = &j->in[u->f];
	mf_seg *sg = &j->m->files[u->f].segs[u->s];
	mf_chunk *ch = &sg->chunks[u->c];
	size_t n = rd_chunk_len(sg, u->c);
	const uint8_t *src = x->map + sg->off + (uint64_t)u->c * sg->chunk_size;
	const uint8_t *base = NULL;
	int rc;

	if (sg->kind == MF_TENSOR && dt_is_float(sg->dtype)) {
		/* Sparsity, chunk by chunk while the chunk is hot: zeros add up, and the tensor follows
		 * 2:4 (4:8) if every chunk does; chunks start at multiples of 8 elements. */
		spp_stats sp;
		if (!spp_measure(src, n / dt_size(sg->dtype), (dt_id)sg->dtype, &sp)) {
			uint8_t keep = (uint8_t)((sp.nm_m == 4 ? 4 : 0) | (sp.nm_m ? 8 : 0));
			__atomic_fetch_add(&sg->zeros, sp.zeros, __ATOMIC_RELAXED);
			__atomic_fetch_and(&sg->nm_m, keep | ~12u, __ATOMIC_RELAXED);
		}
	}
	if (sg->base_file >= 0) {
		MDB_txn *txn;
		if ((rc = store_rtxn(j->s, &txn, err)))
			return rc;
		rc = rd_decode_base(w->cx, j->s, txn, j->base, sg, u->c, w->basebuf, err);
		store_txn_end(j->s, txn);
		if (rc)
			return rc;
		base = w->basebuf;
		if (!memcmp(src, base, n)) {
			ch->flags = MF_CHUNK_SAME;
			return 0;
		}
	}
	/* The plan unit sets sg->codec; plan_wait orders that before what follows. */
	const plan *pl = j->plans && j->plans[u->f][u->s].planned ? plan_wait(j, u) : NULL;
	if (!pl && atomic_load(&j->failed))
		return 0;
	const dq_params *dq = pl && sg->codec == CX_DELTADQ ? &pl->p : NULL;
	const pal_table *pal = pl && sg->codec == CX_PALETTE ? &pl->t : NULL;
	const lr_blobs *lr = pl && sg->codec == CX_LOWRANK ? &pl->lr : NULL;
	unsigned es = dt_size(sg->dtype);
	size_t rowb = sg->ndim == 2 ? (size_t)sg->shape[1] * es : 0;
	size_t cap = dq ? dq_bound(n / rowb, sg->shape[1], es)
		   : pal ? pal_bound(n, (dt_id)sg->dtype, pal->bits)
		   : lr ? lr->len[u->c] : ll_bound(n);
	uint8_t *blob = NULL;
	if ((rc = arena_room(w, cap, &blob, err)))
		return rc;
	ssize_t blen = dq ? dq_encode(w->cx, blob, cap, src, base, (dt_id)sg->dtype, sg->shape[1],
				      (size_t)u->c * (sg->chunk_size / rowb), n / rowb, dq)
		     : pal ? pal_encode(w->cx, blob, cap, src, n, (dt_id)sg->dtype, pal, j->level)
		     : lr ? (ssize_t)cap
			  : ll_encode(w->cx, blob, cap, src, n, es, base, j->level);
	if (lr) /* encoded with the plan: every chunk's U rows depend on the whole matrix's SVD */
		memcpy(blob, lr->buf + lr->off[u->c], cap);
	spp_stats bz;
	if (blen > 0 && !dq && !lr && base && dt_is_float(sg->dtype) &&
	    !spp_measure(base, n / es, (dt_id)sg->dtype, &bz) && bz.zeros) {
		/* A pruned base: the delta on its support alone (SPP) is usually far smaller; keep
		 * whichever blob is. Counting the zeros the fine-tune breaks is part of its info. */
		uint64_t broken = 0;
		if (!spp_broken_zeros(src, base, n, es, &broken))
			__atomic_fetch_add(&sg->broken, broken, __ATOMIC_RELAXED);
		size_t cap2 = spp_bound(n, es);
		if (cap2 > w->alt_cap) {
			free(w->alt);
			w->alt_cap = 0;
			if ((w->alt = malloc(cap2)))
				w->alt_cap = cap2;
		}
		ssize_t alen = w->alt ? spp_encode(w->cx, w->alt, cap2, src, base, n, es, j->level)
				      : -ENOMEM;
		if (alen > 0 && alen < blen) {
			memcpy(blob, w->alt, (size_t)alen);
			blen = alen;
			__atomic_store_n(&sg->codec, CX_SPP, __ATOMIC_RELAXED);
		}
	}
	if (blen < 0) {
		return df_errf(err, (int)blen, "%s: tensor \"%s\": encode failed: %s", x->abs,
			       sg->name, strerror((int)-blen));
	}
	ch->flags = MF_CHUNK_BLOB;
	ch->blen = (uint32_t)blen;
	return batch_add(w, ch, blob, err);
}

static void *worker_main(void *arg)
{
	job *j = arg;
	worker w = {.j = j};
	df_err err = {{0}};
	int rc = 0;
	uint32_t maxcs = 0;
	for (size_t i = 0; i < j->nunits; i++) {
		const mf_seg *sg = &j->m->files[j->units[i].f].segs[j->units[i].s];
		if (j->units[i].c != UNIT_PLAN && sg->chunk_size > maxcs)
			maxcs = sg->chunk_size;
	}
	w.cx = cx_ctx_new();
	w.basebuf = malloc(maxcs ? maxcs : 1);
	if (!w.cx || !w.basebuf)
		rc = df_errf(&err, -ENOMEM, "out of memory");
	while (!rc && !atomic_load(&j->failed)) {
		size_t i = atomic_fetch_add(&j->next, 1);
		if (i >= j->nunits)
			break;
		const unit *u = &j->units[i];
		const mf_seg *sg = &j->m->files[u->f].segs[u->s];
		if (u->c == UNIT_PLAN) {
			if (sg->codec == CX_LOSSLESS) /* dropped from the plans by allocate() */
				plan_done(j, u, 0);
			else
				rc = sg->codec == CX_PALETTE ? pal_plan_unit(&w, u, &err)
							     : dq_plan_unit(&w, u, &err);
			atomic_fetch_add(&j->done_bytes, sg->len);
		} else {
			rc = encode_unit(&w, u, &err);
			atomic_fetch_add(&j->done_bytes, rd_chunk_len(sg, u->c));
		}
	}
	if (!rc && !atomic_load(&j->failed))
		rc = flush(&w, &err);
	free(w.batch);
	free(w.arena);
	free(w.alt);
	free(w.basebuf);
	cx_ctx_free(w.cx);
	if (rc)
		job_fail(j, rc, &err);
	pthread_mutex_lock(&j->lock);
	j->finished++;
	pthread_cond_signal(&j->cond);
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

/* Hash every input file (sha256), reporting progress between slices. */
static int hash_inputs(job *j, size_t nin, df_err *err)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!md)
		return df_errf(err, -ENOMEM, "out of memory");
	int rc = 0;
	for (size_t i = 0; !rc && i < nin && !atomic_load(&j->failed); i++) {
		in_file *x = &j->in[i];
		unsigned len = 32;
		if (!EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
			rc = df_errf(err, -EIO, "sha256 unavailable");
			break;
		}
		for (uint64_t off = 0; off < x->size; off += 16u << 20) {
			uint64_t n = x->size - off < (16u << 20) ? x->size - off : (16u << 20);
			EVP_DigestUpdate(md, x->map + off, n);
			if (j->o->progress)
				j->o->progress(j->o->progress_ud, atomic_load(&j->done_bytes),
					       j->total_bytes);
		}
		EVP_DigestFinal_ex(md, j->m->files[i].sha256, &len);
	}
	EVP_MD_CTX_free(md);
	return rc;
}

/* Importance scores from a JSON object (name -> number) for the tensors named by al_match. */
typedef struct imp_file {
	json_t *root;
	const char **keys;
	double *vals;
	size_t n;
} imp_file;

static int imp_load(const char *path, imp_file *f, df_err *err)
{
	json_error_t je;
	memset(f, 0, sizeof *f);
	f->root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (!f->root)
		return df_errf(err, -EINVAL, "%s: line %d: %s", path, je.line, je.text);
	if (!json_is_object(f->root)) {
		json_decref(f->root);
		return df_errf(err, -EINVAL, "%s: not a JSON object of name -> score", path);
	}
	size_t n = json_object_size(f->root), i = 0;
	f->keys = calloc(n ? n : 1, sizeof *f->keys);
	f->vals = calloc(n ? n : 1, sizeof *f->vals);
	if (!f->keys || !f->vals)
		return df_errf(err, -ENOMEM, "out of memory");
	const char *k;
	json_t *v;
	json_object_foreach(f->root, k, v) {
		if (!json_is_number(v) || !isfinite(json_number_value(v)))
			return df_errf(err, -EINVAL, "%s: \"%s\": the score must be a finite number",
				       path, k);
		f->keys[i] = k;
		f->vals[i++] = json_number_value(v);
	}
	f->n = n;
	return 0;
}

static void imp_free(imp_file *f)
{
	free(f->keys);
	free(f->vals);
	json_decref(f->root);
}

/* Share the DeltaDQ budget among the matrices that differ from their base (codec/alloc.h): fills
 * each segment's score and, for uniform, each plan's ratio; for importance or reversed, each plan's
 * weight and the job's curve set (the plan units plan the ladders, curve_done chooses). Equal
 * matrices are left out (they cost nothing, and would otherwise take their share of the budget:
 * the causal masks of charlm, 55% of it). */
static int allocate(job *j, df_err *err)
{
	const ing_opts *o = j->o;
	manifest *m = j->m;
	size_t n = 0, k = 0;
	for (uint32_t i = 0; i < m->nfiles; i++)
		for (uint32_t t = 0; t < m->files[i].nsegs; t++)
			n += m->files[i].segs[t].codec == CX_DELTADQ;
	if (!n)
		return 0;
	al_tensor *tv = calloc(n, sizeof *tv);
	double *ratio = calloc(n, sizeof *ratio);
	plan **pls = calloc(n, sizeof *pls);
	mf_seg **sgs = calloc(n, sizeof *sgs);
	cx_ctx *cx = cx_ctx_new();
	imp_file imp = {0};
	int rc = tv && ratio && pls && sgs && cx ? 0 : df_errf(err, -ENOMEM, "out of memory");
	if (!rc && o->importance)
		rc = imp_load(o->importance, &imp, err);
	uint64_t bytes = 0, elems = 0;
	for (uint32_t i = 0; !rc && i < m->nfiles; i++)
		for (uint32_t t = 0; !rc && t < m->files[i].nsegs; t++) {
			mf_seg *sg = &m->files[i].segs[t];
			const uint8_t *src = j->in[i].map + sg->off;
			if (sg->codec != CX_DELTADQ)
				continue;
			int same = 1;
			MDB_txn *txn;
			uint8_t *buf = malloc(sg->chunk_size);
			if (!buf)
				rc = df_errf(err, -ENOMEM, "out of memory");
			else if (!(rc = store_rtxn(j->s, &txn, err))) {
				for (uint32_t c = 0; !rc && same && c < sg->nchunks; c++) {
					rc = rd_decode_base(cx, j->s, txn, j->base, sg, c,
							    buf, err);
					same = !rc && !memcmp(buf, src + (uint64_t)c * sg->chunk_size,
							      rd_chunk_len(sg, c));
				}
				store_txn_end(j->s, txn);
			}
			free(buf);
			if (same)
				sg->codec = CX_LOSSLESS; /* all chunks equal their base: nothing to plan */
			if (rc || same)
				continue;
			double score = NAN, z;
			if (imp.n) {
				int hit = al_match(sg->name, imp.keys, imp.n);
				score = hit >= 0 ? imp.vals[hit] : NAN;
			} else if (!al_zd_score(src, NULL, sg->len / dt_size(sg->dtype),
						(dt_id)sg->dtype, &z)) {
				score = 1 - z; /* a low ZD marks an important layer (alloc.h) */
			}
			sg->q.score = isnan(score) ? 0 : (float)score;
			tv[k] = (al_tensor){sg->len, sg->nchunks, score};
			sgs[k] = sg;
			pls[k++] = &j->plans[i][t];
			bytes += sg->len;
			elems += sg->len / dt_size(sg->dtype);
		}
	if (!rc && k) {
		double R = o->budget_bits > 0 ? 8.0 * (double)bytes / (o->budget_bits * (double)elems)
					      : o->ratio;
		al_order order = (al_order)(o->alloc - 1);
		int r = 0;
		if (!(R > 1) || !isfinite(R))
			r = -EINVAL;
		else if (order == AL_UNIFORM) /* every matrix at R, planned once there */
			r = al_uniform(tv, k, R, ratio);
		else if (!(r = al_weights(tv, k, order, 0, ratio))) {
			/* planned on a ladder, chosen by curve_done when all are (ratio: the weights) */
			for (size_t i = 0; i < k; i++)
				pls[i]->weight = ratio[i];
			j->cpl = pls;
			j->csg = sgs;
			j->ncurve = k;
			atomic_store(&j->curves_left, k);
			j->curve_R = R;
			pls = NULL;
			sgs = NULL;
		}
		if (r && r != -ERANGE)
			rc = df_errf(err, r, "bit allocation over %zu matrices at %.2fx failed: %s", k,
				     R, strerror(-r));
		if (r == -ERANGE)
			atomic_fetch_add(&j->off_target, 1);
		for (size_t i = 0; !rc && order == AL_UNIFORM && i < k; i++)
			pls[i]->ratio = ratio[i];
	}
	imp_free(&imp);
	cx_ctx_free(cx);
	free(tv);
	free(ratio);
	free(pls);
	free(sgs);
	return rc;
}

static int ncpu(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

int ing_add(store *s, const char *name, const char *path, const ing_opts *o, ing_result *res,
	    df_err *err)
{
	in_file *in = NULL, *cin = NULL;
	size_t nin = 0, ncin = 0;
	rd_ckpt *base = NULL;
	manifest *m = NULL;
	job j = {0};
	int rc;

	memset(res, 0, sizeof *res);
	if ((rc = mf_check_name("checkpoint name", name, err)))
		return rc;
	if (o->base && (rc = mf_check_name("base name", o->base, err)))
		return rc;
	if (!o->replace) {
		/* Fail before hours of encoding, not at the commit (which checks again). */
		MDB_txn *txn;
		manifest *old = NULL;
		if ((rc = store_rtxn(s, &txn, err)))
			return rc;
		rc = store_ckpt_get(s, txn, name, &old, NULL);
		store_txn_end(s, txn);
		mf_free(old);
		if (rc != -ENOENT)
			return df_errf(err, -EEXIST, "%s: checkpoint \"%s\" already exists (use "
				       "--replace, or `deltafs rm` it first)", store_path(s), name);
	}
	if ((rc = load_inputs(path, &in, &nin, err)))
		goto out;
	if (o->calib && (rc = load_inputs(o->calib, &cin, &ncin, err)))
		goto out;
	if (o->base) {
		MDB_txn *txn;
		if ((rc = store_rtxn(s, &txn, err)))
			goto out;
		rc = rd_load(s, txn, o->base, &base, err);
		store_txn_end(s, txn);
		if (rc)
			goto out;
	}
	if (!(m = calloc(1, sizeof *m)) || !(m->name = strdup(name)) ||
	    !(m->base = strdup(o->base ? o->base : ""))) {
		rc = df_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	uint32_t cs = o->chunk_size ? o->chunk_size : ING_CHUNK_DEFAULT;
	if ((rc = build_manifest(m, in, nin, base, cs, &res->matched, err)))
		goto out;

	size_t nunits = 0, k = 0;
	uint64_t plan_bytes = 0;
	int dq = o->codec == CX_DELTADQ, pal = o->codec == CX_PALETTE;
	if ((dq || pal) && !(j.plans = calloc(m->nfiles, sizeof *j.plans))) {
		rc = df_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < m->nfiles; i++) {
		mf_file *f = &m->files[i];
		if ((dq || pal) && !(j.plans[i] = calloc(f->nsegs, sizeof **j.plans))) {
			rc = df_errf(err, -ENOMEM, "out of memory");
			goto out;
		}
		for (uint32_t t = 0; t < f->nsegs; t++) {
			mf_seg *sg = &f->segs[t];
			if ((dq && dq_eligible(sg)) || (pal && pal_eligible(sg))) {
				sg->codec = dq ? CX_DELTADQ : CX_PALETTE;
				j.plans[i][t].planned = 1;
				plan_bytes += sg->len;
				nunits++;
				if (dq && seg_rechunk(sg, (uint32_t)(dq_chunk_rows(sg->shape[1],
							dt_size(sg->dtype)) * sg->shape[1] *
							dt_size(sg->dtype)))) {
					rc = df_errf(err, -ENOMEM, "out of memory");
					goto out;
				}
			}
			nunits += sg->nchunks;
		}
	}
	j.units = malloc((nunits ? nunits : 1) * sizeof *j.units);
	if (!j.units) {
		rc = df_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < m->nfiles; i++)
		for (uint32_t t = 0; t < m->files[i].nsegs; t++)
			if (m->files[i].segs[t].codec != CX_LOSSLESS)
				j.units[k++] = (unit){i, t, UNIT_PLAN};
	for (uint32_t i = 0; i < m->nfiles; i++)
		for (uint32_t t = 0; t < m->files[i].nsegs; t++)
			for (uint32_t c = 0; c < m->files[i].segs[t].nchunks; c++)
				j.units[k++] = (unit){i, t, c};
	j.s = s;
	j.o = o;
	j.in = in;
	j.m = m;
	j.base = base;
	j.nunits = nunits;
	j.calib = cin ? &cin[0].st : NULL;
	j.calib_map = cin ? cin[0].map : NULL;
	j.total_bytes = mf_logical_bytes(m) + plan_bytes;
	j.level = o->level ? o->level : ING_LEVEL_DEFAULT;
	pthread_mutex_init(&j.lock, NULL);
	pthread_cond_init(&j.cond, NULL);

	if (dq && o->alloc && (rc = allocate(&j, err)))
		goto out_sync;
	if ((rc = store_ingest_lock(s, err)))
		goto out_sync;
	int nth = o->threads > 0 ? o->threads : ncpu();
	pthread_t *th = calloc((size_t)nth, sizeof *th);
	int started = 0;
	for (; th && started < nth; started++)
		if (pthread_create(&th[started], NULL, worker_main, &j))
			break;
	if (!started) {
		free(th);
		rc = df_errf(err, -EAGAIN, "cannot start encoder threads");
		goto out_unlock;
	}
	df_err herr;
	int hrc = hash_inputs(&j, nin, &herr);
	pthread_mutex_lock(&j.lock);
	while (j.finished < started) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&j.cond, &j.lock, &ts);
		if (o->progress) {
			pthread_mutex_unlock(&j.lock);
			o->progress(o->progress_ud, atomic_load(&j.done_bytes), j.total_bytes);
			pthread_mutex_lock(&j.lock);
		}
	}
	pthread_mutex_unlock(&j.lock);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(th);
	if (atomic_load(&j.failed)) {
		*err = j.err;
		rc = atomic_load(&j.failed);
		goto out_unlock;
	}
	if (hrc) {
		*err = herr;
		rc = hrc;
		goto out_unlock;
	}
	res->off_target = atomic_load(&j.off_target);
	for (uint32_t i = 0; i < m->nfiles; i++)
		for (uint32_t t = 0; t < m->files[i].nsegs; t++) {
			mf_seg *sg = &m->files[i].segs[t];
			int same = sg->base_file >= 0;
			uint64_t last = sg->ndim ? sg->shape[sg->ndim - 1] : 1;
			uint8_t m2 = sg->nm_m & 4 ? 4 : sg->nm_m & 8 ? 8 : 0;
			sg->nm_m = sg->zeros && m2 && last % m2 == 0 ? m2 : 0;
			sg->nm_n = sg->nm_m / 2;
			if (sg->codec == CX_DELTADQ || sg->codec == CX_PALETTE ||
			    sg->codec == CX_LOWRANK) {
				/* LOSSLESS and SPP blobs are byte-exact */
				m->files[i].lossless = 0;
				res->lossy++;
			}
			for (uint32_t c = 0; c < sg->nchunks; c++) {
				sg->stored += sg->chunks[c].blen;
				same &= sg->chunks[c].flags == MF_CHUNK_SAME;
			}
			for (uint32_t c = sg->nchunks; c < sg->nchunks + sg->nshared; c++)
				sg->stored += sg->chunks[c].blen;
			res->unchanged += same && sg->kind == MF_TENSOR;
		}
	rc = store_commit(s, m, o->replace, err);
	if (o->progress)
		o->progress(o->progress_ud, atomic_load(&j.done_bytes), j.total_bytes);
out_unlock:
	store_ingest_unlock(s);
out_sync:
	pthread_mutex_destroy(&j.lock);
	pthread_cond_destroy(&j.cond);
out:
	for (size_t i = 0; i < j.ncurve; i++) { /* curves not chosen: a failed ingest */
		for (size_t k = 0; j.cpl[i]->pts && k < j.cpl[i]->npts; k++)
			lr_blobs_free(&j.cpl[i]->pts[k].lr);
		free(j.cpl[i]->pts);
	}
	free(j.cpl);
	free(j.csg);
	for (uint32_t i = 0; j.plans && i < m->nfiles; i++) {
		for (uint32_t t = 0; j.plans[i] && t < m->files[i].nsegs; t++)
			lr_blobs_free(&j.plans[i][t].lr);
		free(j.plans[i]);
	}
	free(j.plans);
	free(j.units);
	rd_free(base);
	if (!rc) {
		res->mf = m;
		res->in_bytes = mf_logical_bytes(m);
		res->new_bytes = atomic_load(&j.new_bytes);
	} else {
		mf_free(m);
	}
	in_free(in, nin);
	in_free(cin, ncin);
	return rc;
}
