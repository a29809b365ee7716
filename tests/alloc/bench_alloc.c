/*
 * bench_alloc.c -- one DeltaDQ allocation of a whole fine-tune, as `deltafs-add --codec deltadq`
 * with a budget would make it, measured: bytes on disk, errors, and (with -o) the reconstructed
 * fine-tune for a forward pass (tools/charlm.py eval).
 *
 *   bench_alloc [-j N] [--nprobe P] [--spread S] [--window W] [--dist D] [--raw]
 *               [--match-uniform] [--curves FILE] [-o OUT.safetensors] [-v] --ratio R
 *               --order uniform|importance|reversed --score zd-ft|zd-delta|FILE.json
 *               BASE.safetensors FT.safetensors
 *
 * Matrices: every 2-D F32/F16/BF16 tensor of FT whose base (same name, dtype, shape) differs from
 * it, as ingest plans them (alloc.h, "Integration"). Scores: 1 - ZD of the fine-tuned weights or
 * of the delta, or an importance file (JSON map, keys matched by al_match; unmatched tensors NaN).
 * uniform: al_uniform's ratio for each, planned by dq_plan there. importance, reversed: each
 * matrix planned at every ratio of al_ladder (window W, 0 = AL_WINDOW, inf = the whole ladder),
 * weights from al_weights (spread S; --raw: the raw scores, reversed = the score of the mirrored
 * rank), one point each by al_choose on the distortion D: sizesq (al_dist: bytes * output
 * error^2, the default), size (bytes * error), rel (output error) or sq (error^2 ||X W_ft^T||^2,
 * the absolute squared output error on the probes). dq_plan runs with nprobe Gaussian probe rows
 * (seeded by the tensor's name) on -j threads. --match-uniform: the budget is the bytes the
 * uniform allocation stores (instead of sum bytes / R), for a comparison at equal bytes.
 * --curves FILE keeps every plan (name, ratio) made so far, so the rows of eval_alloc.sh plan
 * each point once. With -o, every chunk
 * (dq_chunk_rows rows) is encoded and decoded for real and FT is written back with the decoded
 * matrices.
 *
 * Prints one line: planned and achieved ratio over the matrices (original bytes / blob bytes,
 * headers included), the size-weighted mean output and delta errors (the figures `deltafs info`
 * prints), and how many plans missed their target by more than 10%. -v adds one line per matrix.
 * Numbers are printed, never asserted: tests/alloc/eval_alloc.sh runs the comparison.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "alloc.h"
#include "codec.h"
#include "deltadq.h"
#include "half.h"
#include "../../index/safetensors.h"

typedef struct pt {
	double ratio; /* asked of dq_plan */
	dq_params p;
	dq_stats st;
	int rc; /* dq_plan's: 0 or -ERANGE */
} pt;

typedef struct mat {
	const st_tensor *t;
	const uint8_t *ft, *base;
	size_t rows, cols, es;
	double ref;   /* ||X W_ft^T||^2 on the probes (--dist sq) */
	pt pts[AL_LADDER_MAX];
	size_t npts, chosen;
} mat;

/* One plan to make: matrix m at pts[k].ratio. */
typedef struct task {
	size_t m, k;
} task;

static mat *mats;
static size_t nmats, nprobe = 32, ntasks;
static task *tasks;
static atomic_size_t next_task;
static int need_ref;

static void usage(void)
{
	fprintf(stderr, "usage: bench_alloc [-j N] [--nprobe P] [--spread S] [--window W] "
			"[--dist sizesq|size|rel|sq] [--raw] [--match-uniform] [--curves FILE] [-o OUT] [-v] --ratio R "
			"--order uniform|importance|reversed --score zd-ft|zd-delta|FILE.json BASE FT\n");
	exit(2);
}

static const uint8_t *map(const char *path, size_t *size)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	void *p;

	if (fd < 0 || fstat(fd, &st)) {
		perror(path);
		exit(1);
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		perror(path);
		exit(1);
	}
	*size = (size_t)st.st_size;
	return p;
}

/* N(0, 1) probe rows, seeded by the tensor's name (FNV-1a) so every run plans the same. */
static float *probes(const char *name, size_t cols)
{
	uint64_t s = 0xcbf29ce484222325ull;
	float *x = malloc(nprobe * cols * sizeof *x);

	for (const char *c = name; *c; c++)
		s = (s ^ (uint8_t)*c) * 0x100000001b3ull;
	for (size_t i = 0; i < nprobe * cols; i++) {
		double u[2];
		for (int k = 0; k < 2; k++) {
			s ^= s << 13;
			s ^= s >> 7;
			s ^= s << 17;
			u[k] = ((double)(s >> 11) + 0.5) * 0x1p-53;
		}
		x[i] = (float)(sqrt(-2 * log(u[0])) * cos(6.283185307179586 * u[1]));
	}
	return x;
}

static void *plan_worker(void *arg)
{
	cx_ctx *cx = cx_ctx_new();

	(void)arg;
	for (size_t i; (i = atomic_fetch_add(&next_task, 1)) < ntasks;) {
		mat *m = &mats[tasks[i].m];
		pt *q = &m->pts[tasks[i].k];
		float *X = probes(m->t->name, m->cols);
		q->rc = dq_plan(cx, m->ft, m->base, m->t->dtype, m->rows, m->cols, X, nprobe, q->ratio,
				NULL, &q->p, &q->st);
		if (need_ref && tasks[i].k == 0) { /* ||X W_ft^T||^2 */
			double ref = 0;
			for (size_t r = 0; r < m->rows; r++)
				for (size_t p = 0; p < nprobe; p++) {
					double y = 0;
					for (size_t c = 0; c < m->cols; c++)
						y += (double)X[p * m->cols + c] *
						     hf_load(m->t->dtype, m->ft, r * m->cols + c);
					ref += y * y;
				}
			m->ref = ref;
		}
		free(X);
	}
	cx_ctx_free(cx);
	return NULL;
}

/* The plan cache: records of (name, ratio, plan) appended to FILE. */
typedef struct rec {
	char name[200];
	double ratio;
	dq_params p;
	dq_stats st;
	int rc;
} rec;

static int cache_get(rec *rs, size_t nr, const char *name, pt *q)
{
	for (size_t i = 0; i < nr; i++)
		if (rs[i].ratio == q->ratio && !strcmp(rs[i].name, name)) {
			q->p = rs[i].p;
			q->st = rs[i].st;
			q->rc = rs[i].rc;
			return 1;
		}
	return 0;
}

/* Encode and decode every chunk of m into out (rows * cols elements). */
static int reconstruct(cx_ctx *cx, const mat *m, uint8_t *out)
{
	size_t crow = dq_chunk_rows(m->cols, (unsigned)m->es);
	uint8_t *blob = malloc(dq_bound(crow, m->cols, (unsigned)m->es));
	int rc = blob ? 0 : -ENOMEM;

	for (size_t r0 = 0; !rc && r0 < m->rows; r0 += crow) {
		size_t nr = m->rows - r0 < crow ? m->rows - r0 : crow, off = r0 * m->cols * m->es;
		ssize_t n = dq_encode(cx, blob, dq_bound(nr, m->cols, (unsigned)m->es), m->ft + off,
				      m->base + off, m->t->dtype, m->cols, r0, nr,
				      &m->pts[m->chosen].p);
		rc = n < 0 ? (int)n
			   : dq_decode(cx, out + off, nr * m->cols * m->es, blob, (size_t)n, m->base + off);
	}
	free(blob);
	return rc;
}

static const st_tensor *find(const st_file *f, const char *name)
{
	for (size_t i = 0; i < f->ntensors; i++)
		if (!strcmp(f->tensors[i].name, name))
			return &f->tensors[i];
	return NULL;
}

static int by_size(const void *a, const void *b)
{
	size_t x = ((const mat *)a)->rows * ((const mat *)a)->cols;
	size_t y = ((const mat *)b)->rows * ((const mat *)b)->cols;

	return (x < y) - (x > y);
}

int main(int argc, char **argv)
{
	const char *out_path = NULL, *score = NULL, *pos[2], *dist = "sizesq", *cache = NULL;
	double ratio = 0, spread = 0, window = 0;
	int threads = 2, verbose = 0, npos = 0, raw = 0, match = 0;
	al_order order = (al_order)-1;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-v"))
			verbose = 1;
		else if (!strcmp(a, "--raw"))
			raw = 1;
		else if (!strcmp(a, "--match-uniform"))
			match = 1;
		else if (a[0] == '-' && !v)
			usage();
		else if (!strcmp(a, "-j"))
			threads = atoi(argv[++i]);
		else if (!strcmp(a, "--nprobe"))
			nprobe = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(a, "--spread"))
			spread = atof(argv[++i]);
		else if (!strcmp(a, "--window"))
			window = atof(argv[++i]);
		else if (!strcmp(a, "--dist"))
			dist = argv[++i];
		else if (!strcmp(a, "--curves"))
			cache = argv[++i];
		else if (!strcmp(a, "-o"))
			out_path = argv[++i];
		else if (!strcmp(a, "--ratio"))
			ratio = atof(argv[++i]);
		else if (!strcmp(a, "--score"))
			score = argv[++i];
		else if (!strcmp(a, "--order")) {
			i++;
			order = !strcmp(v, "uniform")	   ? AL_UNIFORM
				: !strcmp(v, "importance") ? AL_IMPORTANCE
				: !strcmp(v, "reversed")   ? AL_REVERSED
							   : (al_order)-1;
		} else if (a[0] == '-' || npos == 2)
			usage();
		else
			pos[npos++] = a;
	}
	int dk = !strcmp(dist, "sizesq") ? 0 : !strcmp(dist, "rel") ? 1 : !strcmp(dist, "size") ? 2
		 : !strcmp(dist, "sq") ? 3 : -1;
	if (npos != 2 || !score || (int)order < 0 || threads < 1 || !nprobe || dk < 0)
		usage();
	if (access(pos[0], R_OK) || access(pos[1], R_OK)) {
		fprintf(stderr, "bench_alloc: %s or %s missing: skipped\n", pos[0], pos[1]);
		return 77;
	}
	need_ref = dk == 3 && order != AL_UNIFORM;

	size_t nb, nf;
	const uint8_t *bmap = map(pos[0], &nb), *fmap = map(pos[1], &nf);
	st_file sb, sf;
	df_err err;
	if (st_parse(bmap, nb, pos[0], &sb, &err) || st_parse(fmap, nf, pos[1], &sf, &err)) {
		fprintf(stderr, "bench_alloc: %s\n", err.msg);
		return 1;
	}
	mats = calloc(sf.ntensors ? sf.ntensors : 1, sizeof *mats);
	for (size_t i = 0; i < sf.ntensors; i++) {
		const st_tensor *t = &sf.tensors[i], *b = find(&sb, t->name);
		if (t->ndim != 2 || !(t->dtype == DT_F32 || t->dtype == DT_F16 || t->dtype == DT_BF16) ||
		    !t->shape[0] || !t->shape[1] || !b || b->dtype != t->dtype || b->ndim != 2 ||
		    b->shape[0] != t->shape[0] || b->shape[1] != t->shape[1])
			continue;
		mat *m = &mats[nmats];
		*m = (mat){.t = t, .ft = fmap + sf.data_start + t->begin,
			   .base = bmap + sb.data_start + b->begin, .rows = t->shape[0],
			   .cols = t->shape[1], .es = dt_size(t->dtype)};
		if (memcmp(m->ft, m->base, t->end - t->begin))
			nmats++; /* an unchanged matrix stores nothing: not in the budget */
	}
	if (!nmats) {
		fprintf(stderr, "bench_alloc: no matrix of %s differs from %s\n", pos[1], pos[0]);
		return 1;
	}
	qsort(mats, nmats, sizeof *mats, by_size); /* largest first: the threads finish together */

	/* scores */
	json_t *imp = NULL;
	const char **keys = NULL;
	size_t nkeys = 0;
	int zd = !strcmp(score, "zd-ft") ? 1 : !strcmp(score, "zd-delta") ? 2 : 0;
	if (!zd) {
		json_error_t je;
		const char *k;
		json_t *v;
		if (!(imp = json_load_file(score, JSON_REJECT_DUPLICATES, &je)) || !json_is_object(imp)) {
			fprintf(stderr, "bench_alloc: %s: %s\n", score, imp ? "not an object" : je.text);
			return 1;
		}
		keys = malloc((json_object_size(imp) + 1) * sizeof *keys);
		json_object_foreach(imp, k, v) keys[nkeys++] = k;
	}
	al_tensor *at = calloc(nmats, sizeof *at);
	double *r = calloc(nmats, sizeof *r), *w = calloc(nmats, sizeof *w), orig = 0;
	for (size_t i = 0; i < nmats; i++) {
		mat *m = &mats[i];
		size_t crow = dq_chunk_rows(m->cols, (unsigned)m->es);
		at[i].bytes = m->t->end - m->t->begin;
		at[i].chunks = (uint32_t)((m->rows + crow - 1) / crow);
		orig += (double)at[i].bytes;
		if (zd) {
			double z;
			int rc = al_zd_score(m->ft, zd == 2 ? m->base : NULL, m->rows * m->cols,
					     m->t->dtype, &z);
			if (rc) {
				fprintf(stderr, "%s: ZD: %s\n", m->t->name, strerror(-rc));
				return 1;
			}
			at[i].score = 1 - z; /* fewer values beyond one std: more important (alloc.h) */
		} else {
			int k = al_match(m->t->name, keys, nkeys);
			json_t *v = k >= 0 ? json_object_get(imp, keys[k]) : NULL;
			at[i].score = json_is_number(v) ? json_number_value(v) : NAN;
		}
	}
	int arc = 0;
	if (order == AL_UNIFORM) {
		arc = al_uniform(at, nmats, ratio, r);
		for (size_t i = 0; i < nmats; i++) {
			mats[i].pts[0].ratio = r[i];
			mats[i].npts = 1;
		}
	} else {
		for (size_t i = 0; i < nmats; i++) {
			double lr[AL_LADDER_MAX];
			mats[i].npts = al_ladder(&at[i], ratio, window, lr);
			for (size_t k = 0; k < mats[i].npts; k++)
				mats[i].pts[k].ratio = lr[k];
		}
		if (raw) { /* the scores themselves; reversed: the score of the mirrored rank */
			size_t *ix = malloc(nmats * sizeof *ix);
			for (size_t i = 0; i < nmats; i++)
				ix[i] = i;
			for (size_t i = 1; i < nmats; i++) /* by score, NaN last */
				for (size_t j = i; j > 0 && (isnan(at[ix[j - 1]].score) ||
							     at[ix[j]].score > at[ix[j - 1]].score); j--) {
					if (isnan(at[ix[j]].score))
						break;
					size_t x = ix[j];
					ix[j] = ix[j - 1];
					ix[j - 1] = x;
				}
			size_t ns = 0;
			while (ns < nmats && !isnan(at[ix[ns]].score))
				ns++;
			for (size_t i = 0; i < nmats; i++)
				w[i] = 1;
			double mean = 0;
			for (size_t i = 0; i < ns; i++)
				mean += at[ix[i]].score / (double)ns;
			for (size_t i = 0; i < ns; i++)
				w[ix[i]] = (order == AL_IMPORTANCE ? at[ix[i]].score
								   : at[ix[ns - 1 - i]].score) / mean;
			free(ix);
		} else if ((arc = al_weights(at, nmats, order, spread, w))) {
			fprintf(stderr, "bench_alloc: al_weights: %s\n", strerror(-arc));
			return 1;
		}
	}
	if (arc && arc != -ERANGE) {
		fprintf(stderr, "bench_alloc: allocation: %s\n", strerror(-arc));
		return 1;
	}

	/* plans: from the cache, else made now (and added to it) */
	rec *rs = NULL;
	size_t nrs = 0;
	if (cache) {
		FILE *fc = fopen(cache, "rb");
		struct stat cst;
		if (fc && !fstat(fileno(fc), &cst) && cst.st_size >= (off_t)sizeof *rs) {
			nrs = (size_t)cst.st_size / sizeof *rs;
			rs = malloc(nrs * sizeof *rs);
			nrs = fread(rs, sizeof *rs, nrs, fc);
		}
		if (fc)
			fclose(fc);
	}
	tasks = calloc(nmats * AL_LADDER_MAX, sizeof *tasks);
	for (size_t i = 0; i < nmats; i++)
		for (size_t k = 0; k < mats[i].npts; k++)
			if (!cache_get(rs, nrs, mats[i].t->name, &mats[i].pts[k]) ||
			    (need_ref && k == 0))
				tasks[ntasks++] = (task){i, k};
	pthread_t *th = calloc((size_t)threads, sizeof *th);
	for (int i = 0; i < threads; i++)
		pthread_create(&th[i], NULL, plan_worker, NULL);
	for (int i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
	if (cache && ntasks) {
		FILE *fc = fopen(cache, "ab");
		for (size_t t = 0; fc && t < ntasks; t++) {
			const mat *m = &mats[tasks[t].m];
			const pt *q = &m->pts[tasks[t].k];
			rec x = {.ratio = q->ratio, .p = q->p, .st = q->st, .rc = q->rc};
			snprintf(x.name, sizeof x.name, "%s", m->t->name);
			fwrite(&x, sizeof x, 1, fc);
		}
		if (fc)
			fclose(fc);
	}
	for (size_t i = 0; i < nmats; i++)
		for (size_t k = 0; k < mats[i].npts; k++)
			if (mats[i].pts[k].rc && mats[i].pts[k].rc != -ERANGE) {
				fprintf(stderr, "%s: dq_plan: %s\n", mats[i].t->name,
					strerror(-mats[i].pts[k].rc));
				return 1;
			}

	/* the choice */
	double budget = orig / ratio, plan_bytes = 0;
	if (match && order != AL_UNIFORM && !al_uniform(at, nmats, ratio, r)) {
		/* the bytes uniform stores (its ratios are on every ladder when no clamp binds) */
		double ub = 0;
		for (size_t i = 0; i < nmats; i++)
			for (size_t k = 0; k < mats[i].npts; k++)
				if (mats[i].pts[k].ratio == r[i]) {
					ub += (double)mats[i].pts[k].st.bytes;
					break;
				}
		budget = ub;
	}
	if (order != AL_UNIFORM) {
		al_point **pp = calloc(nmats, sizeof *pp);
		size_t *np = calloc(nmats, sizeof *np), *pick = calloc(nmats, sizeof *pick);
		for (size_t i = 0; i < nmats; i++) {
			mat *m = &mats[i];
			pp[i] = calloc(m->npts, sizeof **pp);
			np[i] = m->npts;
			for (size_t k = 0; k < m->npts; k++) {
				double e = m->pts[k].st.output_rel_err, b = (double)at[i].bytes;
				pp[i][k].bytes = m->pts[k].st.bytes;
				pp[i][k].dist = dk == 0 ? al_dist(e, at[i].bytes) : dk == 1 ? e
					      : dk == 2 ? b * e : e * e * m->ref;
			}
		}
		arc = al_choose((const al_point *const *)pp, np, w, nmats, budget, pick);
		if (arc && arc != -ERANGE) {
			fprintf(stderr, "bench_alloc: al_choose: %s\n", strerror(-arc));
			return 1;
		}
		for (size_t i = 0; i < nmats; i++) {
			mats[i].chosen = pick[i];
			free(pp[i]);
		}
		free(pp);
		free(np);
		free(pick);
	}
	for (size_t i = 0; i < nmats; i++)
		plan_bytes += (double)at[i].bytes / mats[i].pts[mats[i].chosen].ratio;

	double stored = 0, oe = 0, de = 0;
	size_t off_target = 0;
	for (size_t i = 0; i < nmats; i++) {
		mat *m = &mats[i];
		const pt *q = &m->pts[m->chosen];
		off_target += order == AL_UNIFORM && q->rc == -ERANGE;
		stored += (double)q->st.bytes;
		oe += (double)at[i].bytes * q->st.output_rel_err;
		de += (double)at[i].bytes * q->st.delta_rel_err;
		if (verbose)
			printf("  %-44s score %8.5f w %6.3f ratio %7.2f got %7.2f bits %6.3f out %.5f "
			       "delta %.4f g=%u keep=%u bits=%u q=%u%s\n", m->t->name, at[i].score,
			       order == AL_UNIFORM ? 1 : w[i], q->ratio,
			       (double)at[i].bytes / (double)q->st.bytes, q->st.bits_per_weight,
			       q->st.output_rel_err, q->st.delta_rel_err, q->p.group, q->p.keep, q->p.bits,
			       q->p.quant, q->rc ? " off-target" : "");
	}
	printf("matrices %zu orig %.0f planned %.3f achieved %.3f out_err %.6f delta_err %.5f "
	       "off_target %zu%s\n", nmats, orig, orig / plan_bytes, orig / stored, oe / orig, de / orig,
	       off_target, arc ? " (budget out of reach: ERANGE)" : "");

	if (out_path) {
		uint8_t *buf = malloc(nf);
		cx_ctx *cx = cx_ctx_new();
		FILE *fo;
		memcpy(buf, fmap, nf);
		for (size_t i = 0; i < nmats; i++) {
			int rc = reconstruct(cx, &mats[i], buf + sf.data_start + mats[i].t->begin);
			if (rc) {
				fprintf(stderr, "%s: encode/decode: %s\n", mats[i].t->name, strerror(-rc));
				return 1;
			}
		}
		if (!(fo = fopen(out_path, "wb")) || fwrite(buf, 1, nf, fo) != nf || fclose(fo)) {
			perror(out_path);
			return 1;
		}
		cx_ctx_free(cx);
		free(buf);
	}
	return 0;
}
