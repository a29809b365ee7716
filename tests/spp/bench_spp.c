/*
 * bench_spp.c -- stored bytes of fine-tunes of pruned bases: the store's delta today (ll_encode
 * against the base) against the support-only codec (spp_encode).
 *
 *   bench_spp [-c CHUNK_KIB] BASE.safetensors FT.safetensors [FT...]
 *
 * Each tensor of FT that has a tensor of the same name, dtype and shape in BASE is cut into chunks
 * of CHUNK_KIB (default 256) as the store cuts tensors, and every chunk is encoded at zstd level 3
 * (the ingest default) (i) by ll_encode with the base chunk, (ii) by spp_encode (float tensors
 * only; others count as (i)), and decoded again: a chunk that does not come back bit-exact is an
 * error (exit 1). Reported per FT, over the tensors whose bytes differ from the base (identical
 * tensors cost a few bytes either way): their bytes, the blob bytes of (i), (ii) and of the
 * smaller of the two per chunk, the ratios, the exception modes (ii) chose, the base's zero
 * fraction and N:M pattern over those tensors (spp_measure) and the zeros the fine-tune broke
 * (spp_broken_zeros); then decode MB/s of one core for (i) and (ii), best of 3 passes over all
 * chunks (output bytes per second; printed, never asserted).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../index/safetensors.h"
#include "codec.h"
#include "lossless.h"
#include "spp.h"

typedef struct {
	const char *path;
	const uint8_t *map;
	size_t size;
	st_file st;
} model;

typedef struct {
	uint64_t bytes, ll, spp, best, xmode[3], broken, zeros, elems, nm_tensors, tensors;
	double ll_dec, spp_dec;
} totals;

static cx_ctx *cx;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static _Noreturn void die(const char *what, const char *path)
{
	fprintf(stderr, "bench_spp: %s: %s\n", path, what);
	exit(1);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		die("out of memory", "malloc");
	return p;
}

static void open_model(model *m, const char *path)
{
	struct stat sb;
	df_err err;
	int fd = open(path, O_RDONLY);

	m->path = path;
	if (fd < 0 || fstat(fd, &sb) < 0)
		die(strerror(errno), path);
	m->size = (size_t)sb.st_size;
	m->map = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (m->map == MAP_FAILED)
		die(strerror(errno), path);
	if (st_parse(m->map, m->size, path, &m->st, &err) < 0)
		die(err.msg, path);
}

static const st_tensor *find(const model *m, const st_tensor *t)
{
	for (size_t i = 0; i < m->st.ntensors; i++) {
		const st_tensor *u = &m->st.tensors[i];

		if (strcmp(u->name, t->name) == 0 && u->dtype == t->dtype && u->ndim == t->ndim &&
		    memcmp(u->shape, t->shape, sizeof u->shape[0] * t->ndim) == 0)
			return u;
	}
	return NULL;
}

/* Decode one blob into out and compare with want; exits on any difference. */
static void check(const uint8_t *blob, size_t blen, const uint8_t *base, const uint8_t *want,
		  uint8_t *out, size_t n, const char *what, const char *name)
{
	int rc = cx_decode(cx, out, n, blob, blen, base);

	if (rc != 0 || memcmp(out, want, n) != 0) {
		fprintf(stderr, "bench_spp: %s: %s: round trip failed (rc %d)\n", name, what, rc);
		exit(1);
	}
}

/* The blobs of every chunk, kept for the decode timing: (i) and (ii) side by side. */
typedef struct {
	uint8_t *bytes;
	size_t len, cap, nchunks, ccap;
	struct kept {
		size_t off[2], len[2], n;
		const uint8_t *base;
	} *c;
} keep;

static void keep_add(keep *k, const uint8_t *a, size_t la, const uint8_t *b, size_t lb, size_t n,
		     const uint8_t *base)
{
	if (k->nchunks == k->ccap) {
		k->ccap = k->ccap ? 2 * k->ccap : 1024;
		k->c = realloc(k->c, k->ccap * sizeof *k->c);
	}
	while (k->len + la + lb > k->cap) {
		k->cap = k->cap ? 2 * k->cap : 1 << 20;
		k->bytes = realloc(k->bytes, k->cap);
	}
	if (!k->c || !k->bytes)
		die("out of memory", "realloc");
	k->c[k->nchunks] = (struct kept){ { k->len, k->len + la }, { la, lb }, n, base };
	memcpy(k->bytes + k->len, a, la);
	memcpy(k->bytes + k->len + la, b, lb);
	k->len += la + lb;
	k->nchunks++;
}

/* Decode MB/s of one core over all kept chunks of (i) (which = 0) or (ii), best of 3. */
static double decode_rate(const keep *k, int which, uint8_t *out, uint64_t bytes)
{
	double best = 1e30;

	for (int pass = 0; pass < 3; pass++) {
		double t0 = now(), dt;

		for (size_t c = 0; c < k->nchunks; c++) {
			const struct kept *e = &k->c[c];

			if (cx_decode(cx, out, e->n, k->bytes + e->off[which], e->len[which], e->base))
				die("decode failed", "timing");
		}
		dt = now() - t0;
		if (dt < best)
			best = dt;
	}
	return (double)bytes / best / 1e6;
}

static void bench_pair(const model *base, const model *ft, size_t chunk)
{
	size_t cap = spp_bound(chunk, 1) > ll_bound(chunk) ? spp_bound(chunk, 1) : ll_bound(chunk);
	uint8_t *llb = xmalloc(cap), *spb = xmalloc(cap), *out = xmalloc(chunk);
	totals t = { 0 };
	keep k = { 0 };

	for (size_t i = 0; i < ft->st.ntensors; i++) {
		const st_tensor *tf = &ft->st.tensors[i], *tb = find(base, tf);
		const uint8_t *pf, *pb;
		size_t len;
		unsigned es = dt_size(tf->dtype);
		int use_spp = dt_is_float(tf->dtype);
		spp_stats st;
		uint64_t broken;

		if (!tb)
			continue;
		pf = ft->map + ft->st.data_start + tf->begin;
		pb = base->map + base->st.data_start + tb->begin;
		len = (size_t)(tf->end - tf->begin);
		if (len == 0 || memcmp(pf, pb, len) == 0)
			continue;
		t.tensors++;
		t.bytes += len;
		if (spp_measure(pb, len / es, tf->dtype, &st) < 0 ||
		    spp_broken_zeros(pf, pb, len, es, &broken) < 0)
			die("spp_measure failed", tf->name);
		t.zeros += st.zeros;
		t.elems += st.n;
		t.nm_tensors += st.nm_m != 0;
		t.broken += broken;
		for (size_t off = 0; off < len; off += chunk) {
			size_t n = len - off < chunk ? len - off : chunk;
			ssize_t a = ll_encode(cx, llb, cap, pf + off, n, es, pb + off, 3), b = a;

			if (a < 0)
				die("ll_encode failed", tf->name);
			check(llb, (size_t)a, pb + off, pf + off, out, n, "ll", tf->name);
			if (use_spp) {
				b = spp_encode(cx, spb, cap, pf + off, pb + off, n, es, 3);
				if (b < 0)
					die("spp_encode failed", tf->name);
				check(spb, (size_t)b, pb + off, pf + off, out, n, "spp", tf->name);
				t.xmode[spb[3]]++;
			}
			t.ll += (uint64_t)a;
			t.spp += (uint64_t)b;
			t.best += (uint64_t)(a < b ? a : b);
			keep_add(&k, llb, (size_t)a, use_spp ? spb : llb, (size_t)b, n, pb + off);
		}
	}
	t.ll_dec = decode_rate(&k, 0, out, t.bytes);
	t.spp_dec = decode_rate(&k, 1, out, t.bytes);
	printf("%-34s %3llu %10llu %10llu %10llu %10llu %6.3f %6.3f %6.3f %+6.1f%%  %5.3f %3llu  "
	       "%10llu  %llu/%llu/%llu  %6.0f %6.0f\n",
	       ft->path, (unsigned long long)t.tensors, (unsigned long long)t.bytes,
	       (unsigned long long)t.ll, (unsigned long long)t.spp, (unsigned long long)t.best,
	       (double)t.bytes / (double)t.ll, (double)t.bytes / (double)t.spp,
	       (double)t.bytes / (double)t.best, 100.0 * ((double)t.ll / (double)t.spp - 1),
	       t.elems ? (double)t.zeros / (double)t.elems : 0, (unsigned long long)t.nm_tensors,
	       (unsigned long long)t.broken, (unsigned long long)t.xmode[0],
	       (unsigned long long)t.xmode[1], (unsigned long long)t.xmode[2], t.ll_dec, t.spp_dec);
	free(llb);
	free(spb);
	free(out);
	free(k.c);
	free(k.bytes);
}

int main(int argc, char **argv)
{
	size_t chunk = 256 << 10;
	int a = 1;
	model base;

	if (argc > 2 && strcmp(argv[1], "-c") == 0) {
		chunk = (size_t)strtoul(argv[2], NULL, 10) << 10;
		a = 3;
	}
	if (argc - a < 2 || chunk == 0 || chunk % 8) {
		fprintf(stderr, "usage: bench_spp [-c CHUNK_KIB] BASE.safetensors FT.safetensors...\n");
		return 2;
	}
	cx = cx_ctx_new();
	if (!cx)
		die("out of memory", "cx_ctx_new");
	open_model(&base, argv[a]);
	printf("base %s, chunks of %zu KiB, zstd level 3; over the tensors that differ from the base:\n"
	       "%-34s %3s %10s %10s %10s %10s %6s %6s %6s %7s  %5s %3s  %10s  %s  %6s %6s\n",
	       argv[a], chunk >> 10, "fine-tune", "#t", "bytes", "(i) ll", "(ii) spp", "min/chunk",
	       "r(i)", "r(ii)", "r(min)", "gain", "zeros", "N:M", "broken", "none/list/full",
	       "MB/s i", "ii");
	for (int i = a + 1; i < argc; i++) {
		model ft;

		open_model(&ft, argv[i]);
		bench_pair(&base, &ft, chunk);
		st_free(&ft.st);
		munmap((void *)ft.map, ft.size);
	}
	st_free(&base.st);
	munmap((void *)base.map, base.size);
	cx_ctx_free(cx);
	return 0;
}
