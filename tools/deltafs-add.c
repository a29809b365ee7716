/*
 * deltafs-add -- ingest a safetensors file or a model directory into a store.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/alloc.h"
#include "../codec/codec.h"
#include "../index/ingest.h"
#include "../index/store.h"
#include "../index/tier.h"
#include "cli.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: deltafs-add STORE NAME PATH [options]\n"
		"\n"
		"Add the safetensors file or model directory PATH to STORE as checkpoint NAME.\n"
		"A directory contributes every regular file under it: *.safetensors files are\n"
		"parsed and stored per tensor, the rest (config.json, tokenizer files...) whole.\n"
		"The checkpoint appears in one transaction, whole or not at all.\n"
		"\n"
		"options:\n"
		"  --base NAME      store tensors as deltas against checkpoint NAME (same tensor\n"
		"                   name, dtype and shape); unchanged tensors cost nothing\n"
		"  -j, --threads N  encoder threads (default: number of CPUs)\n"
		"  --replace        replace an existing checkpoint NAME\n"
		"  --level N        zstd level (default 1)\n"
		"  --chunk-size K   chunk size in KiB for tensors without a base (default %u)\n"
		"  --codec C        lossless (default); deltadq: lossy DeltaDQ deltas for float\n"
		"                   matrices with a base; palette: a lossy base, float tensors of\n"
		"                   2+ dims as 2^bits-entry palettes (--bits); 1-D tensors and\n"
		"                   everything else stay lossless\n"
		"  --ratio R        deltadq: target compression per matrix, e.g. 16, 32, 64, 128\n"
		"  --transform T    deltadq: auto (default: per matrix, DeltaDQ or a low-rank SVD\n"
		"                   with mixed-precision factors, whichever errs less at the same\n"
		"                   bytes), deltadq or lowrank (where it applies, else DeltaDQ);\n"
		"                   --drop, --bits, --group and --quantizer imply deltadq\n"
		"  --drop P         deltadq: fraction of each group's delta dropped (0 = none)\n"
		"  --bits K         deltadq: bits per kept value; palette: bits per weight (2..8)\n"
		"  --group G        deltadq: dropout group size along a row (8..1024)\n"
		"  --quantizer Q    deltadq: uniform, kmeans (Lloyd) or palette (optimal k-means,\n"
		"                   codec/palette.h) levels (default: chosen per matrix)\n"
		"  --budget B       deltadq: average bits per weight over the checkpoint's changed\n"
		"                   matrices, shared out by --alloc (default uniform)\n"
		"  --alloc ORDER    deltadq: share --budget (or --ratio, then for the whole\n"
		"                   checkpoint) among matrices: uniform (every matrix at R), or\n"
		"                   importance: each matrix planned at several ratios around R and\n"
		"                   one picked per matrix for the least output error in total, the\n"
		"                   errors of higher-scored matrices (--importance, else 1 - ZD of\n"
		"                   the weights) counting more; about 5x the planning time. Uniform\n"
		"                   stays the default: on charlm it gave the lower KL at 16x and 32x\n"
		"                   (codec/alloc.h). reversed: the control experiment\n"
		"  --importance F   deltadq: JSON object of tensor or layer name -> score (e.g. LIM =\n"
		"                   1 - cos(layer input, layer output) on real text; see\n"
		"                   tools/charlm.py lim); implies --alloc importance\n"
		"  --calib FILE     deltadq: probe inputs, a safetensors file with an F32 [n, in]\n"
		"                   tensor per weight, named as the weight or its module (the\n"
		"                   weight's name without \".weight\"); default: Gaussian probes\n"
		"  -q, --quiet      no progress display\n"
		"  -h, --help       this help\n"
		"\n"
		"examples:\n"
		"  deltafs-add /srv/models llama-base ./Llama-2-7b-hf\n"
		"  deltafs-add /srv/models llama-chat ./Llama-2-7b-chat-hf --base llama-base\n"
		"  deltafs-add /srv/models math-32x ./WizardMath-7B --base llama-base \\\n"
		"              --codec deltadq --ratio 32\n",
		ING_CHUNK_DEFAULT >> 10);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"base", required_argument, 0, 'b'},   {"threads", required_argument, 0, 'j'},
		{"replace", no_argument, 0, 'r'},      {"level", required_argument, 0, 'l'},
		{"chunk-size", required_argument, 0, 'c'}, {"quiet", no_argument, 0, 'q'},
		{"help", no_argument, 0, 'h'},         {"codec", required_argument, 0, 'C'},
		{"ratio", required_argument, 0, 'R'},  {"drop", required_argument, 0, 'D'},
		{"bits", required_argument, 0, 'B'},   {"group", required_argument, 0, 'G'},
		{"quantizer", required_argument, 0, 'Q'}, {"calib", required_argument, 0, 'X'},
		{"budget", required_argument, 0, 'U'},   {"alloc", required_argument, 0, 'A'},
		{"importance", required_argument, 0, 'I'}, {"transform", required_argument, 0, 'T'},
		{0, 0, 0, 0},
	};
	ing_opts o = {0};
	int quiet = 0, opt, transform = -1;
	while ((opt = getopt_long(argc, argv, "j:qh", lo, NULL)) != -1) {
		char *end;
		switch (opt) {
		case 'b': o.base = optarg; break;
		case 'j':
			o.threads = (int)strtol(optarg, &end, 10);
			if (*end || o.threads < 1 || o.threads > 1024) {
				fprintf(stderr, "deltafs-add: -j needs a thread count from 1 to 1024\n");
				return 2;
			}
			break;
		case 'r': o.replace = 1; break;
		case 'l':
			o.level = (int)strtol(optarg, &end, 10);
			if (*end || o.level < 1 || o.level > 22) {
				fprintf(stderr, "deltafs-add: --level needs a zstd level from 1 to 22\n");
				return 2;
			}
			break;
		case 'c': {
			long k = strtol(optarg, &end, 10);
			if (*end || k < 4 || k > 65536) {
				fprintf(stderr, "deltafs-add: --chunk-size needs KiB from 4 to 65536\n");
				return 2;
			}
			o.chunk_size = (uint32_t)k << 10;
			break;
		}
		case 'q': quiet = 1; break;
		case 'C':
			if (!strcmp(optarg, "lossless")) {
				o.codec = CX_LOSSLESS;
			} else if (!strcmp(optarg, "deltadq")) {
				o.codec = CX_DELTADQ;
			} else if (!strcmp(optarg, "palette")) {
				o.codec = CX_PALETTE;
			} else {
				fprintf(stderr, "deltafs-add: --codec is lossless, deltadq or palette\n");
				return 2;
			}
			break;
		case 'R':
			o.ratio = strtod(optarg, &end);
			if (*end || !(o.ratio > 1)) {
				fprintf(stderr, "deltafs-add: --ratio needs a number above 1\n");
				return 2;
			}
			break;
		case 'D': {
			double p = strtod(optarg, &end);
			if (*end || !(p >= 0 && p < 1)) {
				fprintf(stderr, "deltafs-add: --drop needs a fraction in [0, 1)\n");
				return 2;
			}
			o.dq.keep_frac = (float)(1 - p);
			break;
		}
		case 'B': {
			long b = strtol(optarg, &end, 10);
			if (*end || b < 1 || b > 16) {
				fprintf(stderr, "deltafs-add: --bits needs 1 to 16\n");
				return 2;
			}
			o.dq.bits = (uint8_t)b;
			break;
		}
		case 'G': {
			long g = strtol(optarg, &end, 10);
			if (*end || g < 1 || g > DQ_GROUP_MAX) {
				fprintf(stderr, "deltafs-add: --group needs 1 to %d\n", DQ_GROUP_MAX);
				return 2;
			}
			o.dq.group = (uint32_t)g;
			break;
		}
		case 'Q':
			if (!strcmp(optarg, "uniform")) {
				o.dq.quant = DQ_Q_UNIFORM;
			} else if (!strcmp(optarg, "kmeans")) {
				o.dq.quant = DQ_Q_KMEANS;
			} else if (!strcmp(optarg, "palette")) {
				o.dq.quant = DQ_Q_PALETTE;
			} else {
				fprintf(stderr, "deltafs-add: --quantizer is uniform, kmeans or "
					"palette\n");
				return 2;
			}
			break;
		case 'X': o.calib = optarg; break;
		case 'U':
			o.budget_bits = strtod(optarg, &end);
			if (*end || !(o.budget_bits > 0 && o.budget_bits < 16)) {
				fprintf(stderr, "deltafs-add: --budget needs bits per weight in (0, 16)\n");
				return 2;
			}
			break;
		case 'A':
			if (!strcmp(optarg, "importance")) {
				o.alloc = 1 + AL_IMPORTANCE;
			} else if (!strcmp(optarg, "uniform")) {
				o.alloc = 1 + AL_UNIFORM;
			} else if (!strcmp(optarg, "reversed")) {
				o.alloc = 1 + AL_REVERSED;
			} else {
				fprintf(stderr, "deltafs-add: --alloc is uniform, importance or "
					"reversed\n");
				return 2;
			}
			break;
		case 'I': o.importance = optarg; break;
		case 'T':
			if (!strcmp(optarg, "auto")) {
				transform = ING_T_AUTO;
			} else if (!strcmp(optarg, "deltadq")) {
				transform = ING_T_DELTADQ;
			} else if (!strcmp(optarg, "lowrank")) {
				transform = ING_T_LOWRANK;
			} else {
				fprintf(stderr, "deltafs-add: --transform is auto, deltadq or lowrank\n");
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (argc - optind != 3) {
		usage(stderr);
		return 2;
	}
	if (o.codec == CX_PALETTE) {
		if (o.base || !o.dq.bits || o.dq.bits < 2 || o.dq.bits > 8 || o.ratio ||
		    o.dq.keep_frac > 0 || o.dq.group || o.dq.quant || o.calib) {
			fprintf(stderr, "deltafs-add: --codec palette makes a lossy base: it takes "
				"--bits 2..8 and no --base or DeltaDQ option\n");
			return 2;
		}
		o.pal_bits = o.dq.bits;
		o.dq.bits = 0;
	}
	if (o.importance && !o.alloc)
		o.alloc = 1 + AL_IMPORTANCE;
	if (o.budget_bits > 0 && !o.alloc)
		o.alloc = 1 + AL_UNIFORM;
	if (o.alloc && o.budget_bits > 0 && o.ratio) {
		fprintf(stderr, "deltafs-add: give --budget or --ratio, not both\n");
		return 2;
	}
	int explicit = o.dq.bits && o.dq.keep_frac > 0;
	if (o.codec == CX_DELTADQ && !o.ratio && !o.budget_bits && !explicit) {
		fprintf(stderr, "deltafs-add: --codec deltadq needs --ratio R, --budget B, or --drop "
			"and --bits\n");
		return 2;
	}
	if (o.codec == CX_DELTADQ && !o.base) {
		fprintf(stderr, "deltafs-add: --codec deltadq stores deltas: it needs --base NAME\n");
		return 2;
	}
	if (o.codec != CX_DELTADQ && (o.ratio || o.dq.bits || o.dq.group || o.dq.keep_frac ||
				      o.dq.quant || o.calib || o.alloc)) {
		fprintf(stderr, "deltafs-add: --ratio, --drop, --bits, --group, --quantizer, --calib, "
			"--budget, --alloc and --importance apply to --codec deltadq\n");
		return 2;
	}
	if (transform >= 0 && o.codec != CX_DELTADQ) {
		fprintf(stderr, "deltafs-add: --transform applies to --codec deltadq\n");
		return 2;
	}
	int fixed = o.dq.bits || o.dq.keep_frac > 0 || o.dq.group || o.dq.quant;
	if (transform == ING_T_LOWRANK && fixed) {
		fprintf(stderr, "deltafs-add: --drop, --bits, --group and --quantizer are DeltaDQ's: "
			"not with --transform lowrank\n");
		return 2;
	}
	o.transform = transform >= 0 ? transform : fixed ? ING_T_DELTADQ : ING_T_AUTO;
	const char *dir = argv[optind], *name = argv[optind + 1], *path = argv[optind + 2];
	store *s;
	rt_tier *t = NULL;
	df_err err = {{0}};
	if (store_open(dir, STORE_CREATE, &s, &err)) {
		fprintf(stderr, "deltafs-add: %s\n", err.msg);
		return 1;
	}
	/* A clone holds its base's manifest but maybe not its blobs: they come from the remote,
	 * through the cache, as a mount's do. */
	if (o.base && rt_open(s, 0, &t, &err)) {
		fprintf(stderr, "deltafs-add: %s\nnothing was added\n", err.msg);
		store_close(s);
		return 1;
	}
	cli_progress p;
	cli_progress_init(&p, name);
	if (!quiet) {
		o.progress = cli_progress_cb;
		o.progress_ud = &p;
	}
	ing_result r;
	double t0 = cli_now();
	int rc = ing_add(s, name, path, &o, &r, &err);
	double dt = cli_now() - t0;
	if (!quiet)
		cli_progress_end(&p);
	if (rc) {
		fprintf(stderr, "deltafs-add: %s\nnothing was added\n", err.msg);
		rt_close(t);
		store_close(s);
		return 1;
	}
	rt_close(t);
	char a[32], b[32], c[32];
	printf("%-48s %12s %12s %8s\n", "file", "input", "stored", "ratio");
	for (uint32_t i = 0; i < r.mf->nfiles; i++) {
		const mf_file *f = &r.mf->files[i];
		uint64_t st = 0;
		for (uint32_t j = 0; j < f->nsegs; j++)
			st += f->segs[j].stored;
		printf("%-48s %12s %12s %7.2fx\n", f->path, cli_size(f->size, a), cli_size(st, b),
		       st ? (double)f->size / (double)st : 0.0);
	}
	uint64_t stored = mf_stored_bytes(r.mf);
	printf("%-48s %12s %12s %7.2fx\n", "total", cli_size(r.in_bytes, a), cli_size(stored, b),
	       stored ? (double)r.in_bytes / (double)stored : 0.0);
	printf("added \"%s\"%s%s%s: %s new in the store, %.1f MB/s",
	       name, o.base ? " (base \"" : "", o.base ? o.base : "", o.base ? "\")" : "",
	       cli_size(r.new_bytes, c), dt > 0 ? (double)r.in_bytes / dt / 1e6 : 0.0);
	if (o.base)
		printf(", %llu tensors matched the base, %llu unchanged",
		       (unsigned long long)r.matched, (unsigned long long)r.unchanged);
	if (o.codec == CX_DELTADQ || o.codec == CX_PALETTE)
		printf(", %llu stored lossy (%s)", (unsigned long long)r.lossy,
		       cx_codec_name(o.codec));
	if (r.off_target)
		printf(" (%llu could not reach the ratio within 10%%: the closest was kept)",
		       (unsigned long long)r.off_target);
	printf("\n");
	mf_free(r.mf);
	store_close(s);
	return 0;
}
