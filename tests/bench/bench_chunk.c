/*
 * bench_chunk.c -- what chunk size and zstd level the store should cut tensors with, and whether
 * the lossless codec's choice between its delta modes is good and cheap.
 *
 *   bench_chunk [CHARLM_DIR]      (meson: `meson test --benchmark bench_chunk`, or run it directly)
 *
 * Data: the real F32 charlm pair (base.safetensors, finetuned_qa.safetensors; the 8+N header bytes
 * are skipped and the rest read as one F32 array: tensor boundaries do not matter here), and a
 * synthetic BF16 pair: weights normal(0, 0.02) rounded to bf16 (round to nearest even), fine-tune =
 * weight + normal(0, 0.002 * rowscale) rounded again, rowscale log-normal per row of 4096.
 *
 * For each chunk size and level it reports the ratio (input bytes / blob bytes) of the base alone
 * and of the fine-tune as a delta against the base, encode and decode MB/s of one core (best of
 * several passes, input bytes per second; the delta's decode is given the decoded base, as the
 * mount is), and decode microseconds per chunk: the latency a 128 KiB read that misses the cache
 * pays. Then the mode study: the fine-tune encoded as XOR-only, SUB-only and no-delta (the chunk
 * is transformed here and encoded without a base, which yields the same planes and the same
 * blob size as the codec's own mode), against what ll_encode picks; and the encode time of the
 * pick (sample estimate + transform + compress) against compressing SUB alone (the pick's price)
 * and both deltas in full (what trying both would cost). Last, plain zstd -3 and -19 over the whole bytes (what `zstd -3 FILE` does).
 *
 * Numbers are printed, never asserted: a benchmark, not a test.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zstd.h>

#include "codec.h"
#include "lossless.h"

#define MIB (1024.0 * 1024.0)

typedef struct {
	const char *name;
	uint8_t *base, *ft;
	size_t n;
	unsigned es;
} bench_data;

static cx_ctx *ctx;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p) {
		fprintf(stderr, "bench_chunk: out of memory (%zu bytes)\n", n);
		exit(1);
	}
	return p;
}

/* ---- data ------------------------------------------------------------------------------------- */

/* The tensor bytes of a safetensors file: everything after the 8-byte length and the header. */
static uint8_t *load_st(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	uint64_t hlen;
	long size;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	rewind(f);
	buf = xmalloc((size_t)size);
	if (fread(buf, 1, (size_t)size, f) != (size_t)size || size < 8) {
		fclose(f);
		free(buf);
		return NULL;
	}
	fclose(f);
	memcpy(&hlen, buf, 8);
	if (hlen > (uint64_t)size - 8) {
		free(buf);
		return NULL;
	}
	*n = ((size_t)size - 8 - hlen) / 4 * 4;
	memmove(buf, buf + 8 + hlen, *n);
	return buf;
}

static uint64_t rng_state = 42;

static double urand(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return ((double)((z ^ (z >> 31)) >> 11) + 0.5) / 9007199254740992.0;
}

static double nrand(void)
{
	return sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand());
}

static uint16_t bf16_rne(float f)
{
	uint32_t x;

	memcpy(&x, &f, 4);
	return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

static float bf16_to_f32(uint16_t h)
{
	uint32_t x = (uint32_t)h << 16;
	float f;

	memcpy(&f, &x, 4);
	return f;
}

static void synth_bf16(bench_data *d, size_t m)
{
	uint16_t *b = xmalloc(m * 2), *t = xmalloc(m * 2);
	double rowscale = 1;

	for (size_t i = 0; i < m; i++) {
		if (i % 4096 == 0)
			rowscale = exp(0.5 * nrand());
		b[i] = bf16_rne((float)(0.02 * nrand()));
		t[i] = bf16_rne(bf16_to_f32(b[i]) + (float)(0.002 * rowscale * nrand()));
	}
	d->name = "synth BF16";
	d->base = (uint8_t *)b;
	d->ft = (uint8_t *)t;
	d->n = m * 2;
	d->es = 2;
}

/* ---- encode / decode a whole buffer in chunks ------------------------------------------------- */

typedef struct {
	uint8_t *arena; /* blobs back to back */
	size_t *off, *len;
	size_t nchunks, total;
	unsigned modes[4];
	double enc_s, dec_s;
} bench_run;

static unsigned reps_for(size_t n)
{
	unsigned r = (unsigned)(64.0 * MIB / (double)n);

	return r < 2 ? 2 : r > 50 ? 50 : r;
}

static void run_encode(bench_run *r, const uint8_t *src, const uint8_t *base, size_t n, unsigned es,
		       size_t chunk, int level)
{
	unsigned reps = reps_for(n);

	r->nchunks = (n + chunk - 1) / chunk;
	r->arena = xmalloc(n + r->nchunks * LL_HDR);
	r->off = xmalloc(r->nchunks * sizeof *r->off);
	r->len = xmalloc(r->nchunks * sizeof *r->len);
	r->enc_s = 1e9;
	for (unsigned rep = 0; rep < reps; rep++) {
		double t0 = now();
		size_t pos = 0;

		memset(r->modes, 0, sizeof r->modes);
		for (size_t c = 0; c < r->nchunks; c++) {
			size_t o = c * chunk, len = n - o < chunk ? n - o : chunk;
			ssize_t b = ll_encode(ctx, r->arena + pos, ll_bound(len), src + o, len, es,
					      base ? base + o : NULL, level);

			if (b < 0) {
				fprintf(stderr, "bench_chunk: ll_encode: %s\n", strerror((int)-b));
				exit(1);
			}
			r->off[c] = pos;
			r->len[c] = (size_t)b;
			r->modes[r->arena[pos + 3]]++;
			pos += (size_t)b;
		}
		r->total = pos;
		if (now() - t0 < r->enc_s)
			r->enc_s = now() - t0;
	}
}

static void run_decode(bench_run *r, const uint8_t *src, const uint8_t *base, size_t n,
		       size_t chunk)
{
	uint8_t *out = xmalloc(chunk);
	unsigned reps = reps_for(n) * 2;

	r->dec_s = 1e9;
	for (unsigned rep = 0; rep < reps; rep++) {
		double t0 = now(), dt;

		for (size_t c = 0; c < r->nchunks; c++) {
			size_t o = c * chunk, len = n - o < chunk ? n - o : chunk;
			int rc = cx_decode(ctx, out, len, r->arena + r->off[c], r->len[c],
					   base ? base + o : NULL);

			if (rc < 0 || (rep == 0 && memcmp(out, src + o, len) != 0)) {
				fprintf(stderr, "bench_chunk: chunk %zu does not round-trip (%d)\n", c,
					rc);
				exit(1);
			}
		}
		dt = now() - t0;
		if (dt < r->dec_s)
			r->dec_s = dt;
	}
	free(out);
}

static void run_free(bench_run *r)
{
	free(r->arena);
	free(r->off);
	free(r->len);
}

static const size_t chunks[] = { 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 4 << 20 };
#define NCHUNKS (sizeof chunks / sizeof chunks[0])

static void table(const bench_data *d)
{
	static const int levels[] = { 1, 3, 5 };

	printf("\n## %s: %.2f MiB per checkpoint\n\n", d->name, (double)d->n / MIB);
	printf("| what | chunk KiB | level | ratio | enc MB/s | dec MB/s | dec us/chunk | modes "
	       "raw/grp/xor/sub |\n|---|---:|---:|---:|---:|---:|---:|---|\n");
	for (int kind = 0; kind < 2; kind++) {
		const uint8_t *src = kind ? d->ft : d->base, *base = kind ? d->base : NULL;

		for (size_t ci = 0; ci < NCHUNKS; ci++) {
			for (size_t li = 0; li < 3; li++) {
				bench_run r;
				size_t chunk = chunks[ci];

				run_encode(&r, src, base, d->n, d->es, chunk, levels[li]);
				run_decode(&r, src, base, d->n, chunk);
				printf("| %s | %zu | %d | %.3f | %.0f | %.0f | %.0f | %u/%u/%u/%u |\n",
				       kind ? "fine-tune delta" : "base alone", chunk >> 10,
				       levels[li], (double)d->n / (double)r.total,
				       (double)d->n / MIB / r.enc_s, (double)d->n / MIB / r.dec_s,
				       r.dec_s / (double)r.nchunks * 1e6, r.modes[0], r.modes[1],
				       r.modes[2], r.modes[3]);
				fflush(stdout);
				run_free(&r);
			}
		}
	}
}

/* ---- the delta mode study --------------------------------------------------------------------- */

static void xform(uint8_t *out, const uint8_t *src, const uint8_t *base, size_t n, unsigned es,
		  int mode)
{
	for (size_t i = 0; i < n; i += es) {
		uint64_t v = 0, b = 0, d, mask = es == 8 ? ~0ull : (1ull << (8 * es)) - 1;

		memcpy(&v, src + i, es);
		memcpy(&b, base + i, es);
		if (mode == LL_XOR) {
			d = v ^ b;
		} else {
			d = (v - b) & mask;
			d = ((d << 1) ^ (0 - (d >> (8 * es - 1)))) & mask;
		}
		memcpy(out + i, &d, es);
	}
}

static void mode_study(const bench_data *d)
{
	uint8_t *x = xmalloc(d->n), *s = xmalloc(d->n);

	xform(x, d->ft, d->base, d->n, d->es, LL_XOR);
	xform(s, d->ft, d->base, d->n, d->es, LL_SUB);
	printf("\n## %s fine-tune: delta mode choice (level 3)\n\n", d->name);
	printf("| chunk KiB | xor-only B | sub-only B | no-delta B | ll_encode pick B | best per chunk B"
	       " | enc s: pick | sub alone | xor+sub |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (size_t ci = 0; ci < NCHUNKS; ci++) {
		size_t chunk = chunks[ci], best = 0;
		bench_run rx, rs, rg, rp;

		run_encode(&rx, x, NULL, d->n, d->es, chunk, 3);
		run_encode(&rs, s, NULL, d->n, d->es, chunk, 3);
		run_encode(&rg, d->ft, NULL, d->n, d->es, chunk, 3);
		run_encode(&rp, d->ft, d->base, d->n, d->es, chunk, 3);
		for (size_t c = 0; c < rx.nchunks; c++) {
			size_t b = rx.len[c] < rs.len[c] ? rx.len[c] : rs.len[c];

			best += b < rg.len[c] ? b : rg.len[c];
		}
		printf("| %zu | %zu | %zu | %zu | %zu | %zu | %.4f | %.4f | %.4f |\n", chunk >> 10,
		       rx.total, rs.total, rg.total, rp.total, best, rp.enc_s, rs.enc_s,
		       rx.enc_s + rs.enc_s);
		run_free(&rx);
		run_free(&rs);
		run_free(&rg);
		run_free(&rp);
	}
	free(x);
	free(s);
}

/* ---- plain zstd over the same bytes ----------------------------------------------------------- */

static void plain_zstd(const bench_data *d)
{
	size_t cap = ZSTD_compressBound(d->n);
	uint8_t *out = xmalloc(cap);
	static const int levels[] = { 3, 19 };

	printf("\n## %s: plain zstd over the whole bytes (no grouping, no delta)\n\n", d->name);
	printf("| what | level | ratio | MB/s |\n|---|---:|---:|---:|\n");
	for (int kind = 0; kind < 2; kind++) {
		for (int li = 0; li < 2; li++) {
			double t0 = now();
			size_t z = ZSTD_compress(out, cap, kind ? d->ft : d->base, d->n, levels[li]);

			if (ZSTD_isError(z)) {
				fprintf(stderr, "bench_chunk: zstd: %s\n", ZSTD_getErrorName(z));
				exit(1);
			}
			printf("| %s | %d | %.3f | %.1f |\n", kind ? "fine-tune" : "base", levels[li],
			       (double)d->n / (double)z, (double)d->n / MIB / (now() - t0));
		}
	}
	free(out);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "../shared/data/charlm";
	char path[4096];
	bench_data data[2];
	int nd = 0;
	size_t nb = 0, nf = 0;

	ctx = cx_ctx_new();
	if (!ctx)
		return 1;
	snprintf(path, sizeof path, "%s/base.safetensors", dir);
	data[0].base = load_st(path, &nb);
	snprintf(path, sizeof path, "%s/finetuned_qa.safetensors", dir);
	data[0].ft = load_st(path, &nf);
	if (data[0].base && data[0].ft && nb == nf) {
		data[0].name = "charlm F32";
		data[0].n = nb;
		data[0].es = 4;
		nd = 1;
	} else {
		fprintf(stderr, "bench_chunk: no charlm pair in %s: synthetic data only\n", dir);
		free(data[0].base);
		free(data[0].ft);
	}
	synth_bf16(&data[nd++], 8u << 20);

	printf("# bench_chunk: one core, best of several passes\n");
	for (int i = 0; i < nd; i++) {
		table(&data[i]);
		mode_study(&data[i]);
		plain_zstd(&data[i]);
		free(data[i].base);
		free(data[i].ft);
	}
	cx_ctx_free(ctx);
	return 0;
}
