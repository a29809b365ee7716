/*
 * deltafs -- manage a store: init, ls, info, rm, gc, verify, export, snapshot, and its remote:
 * remote, push, pull, clone.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../codec/codec.h"
#include "../codec/deltadq.h"
#include "../codec/dtype.h"
#include "../index/export.h"
#include "../index/store.h"
#include "../index/tier.h"
#include "../index/verify.h"
#include "cli.h"

static const char usage_text[] =
	"usage: deltafs COMMAND STORE [ARGS]\n"
	"\n"
	"commands:\n"
	"  init STORE                 create an empty store (deltafs-add also creates one)\n"
	"  ls STORE [--bytes]         list checkpoints: name, base, size, stored, ratio\n"
	"                             (--bytes: sizes in bytes)\n"
	"  info STORE NAME            per file and tensor: dtype, shape, codec, sizes, ratio\n"
	"  rm STORE NAME              remove a checkpoint (refused while others use it as base)\n"
	"  gc STORE                   free blobs no checkpoint uses (after rm, or a failed add)\n"
	"  verify STORE [NAME]        decode everything, check hashes, sha256 and refcounts;\n"
	"                             exit status 1 on any problem\n"
	"  export STORE NAME DIR [--force]\n"
	"                             write the checkpoint's files into DIR\n"
	"  snapshot STORE DIR         a consistent, compacted copy of the store into the empty\n"
	"                             directory DIR, safe while ingests and mounts run\n"
	"\n"
	"remote (blobs, manifests and the catalog of checkpoints in Ceph RADOS or S3):\n"
	"  remote STORE set URL [--id NAME] [--conf FILE]\n"
	"                             use URL = rados:POOL[/NAMESPACE] as the store's remote\n"
	"                             (cluster from --conf, CEPH_CONF or /etc/ceph/ceph.conf;\n"
	"                             cephx user client.NAME, default admin)\n"
	"  remote STORE set s3://BUCKET[/PREFIX] [--endpoint URL] [--region R] [--keys FILE]\n"
	"                             an S3 bucket (default endpoint https://s3.R.amazonaws.com,\n"
	"                             region us-east-1); keys from a 0600 FILE or from\n"
	"                             AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (never argv)\n"
	"  remote STORE               show the store's remote\n"
	"  push STORE [NAME...]       upload what the remote lacks of these checkpoints (all by\n"
	"                             default) and their bases, then publish them atomically\n"
	"  pull STORE [--every SECONDS]\n"
	"                             add or update the checkpoints the remote publishes\n"
	"                             (manifests only: blobs are fetched when read); --every:\n"
	"                             keep doing it, at once when a host publishes (RADOS\n"
	"                             watch/notify) and every SECONDS anyway (S3: polls)\n"
	"  clone URL STORE [--all] [--id NAME] [--conf FILE] [--endpoint URL] [--region R]\n"
	"        [--keys FILE]\n"
	"                             a new store from a remote: manifests only, blobs on demand\n"
	"                             (--all: fetch every blob now)\n"
	"  rm STORE NAME --remote     unpublish NAME from the remote's catalog (refused while\n"
	"                             published checkpoints use it as base)\n"
	"  gc STORE --remote [--grace SECONDS]\n"
	"                             delete the remote objects no published checkpoint names and\n"
	"                             unwritten for SECONDS (default 86400): longer than any push\n"
	"\n"
	"examples:\n"
	"  deltafs init /srv/models\n"
	"  deltafs ls /srv/models\n"
	"  deltafs info /srv/models llama-chat\n"
	"  deltafs rm /srv/models llama-chat && deltafs gc /srv/models\n"
	"  deltafs verify /srv/models\n"
	"  deltafs export /srv/models llama-chat ./llama-chat\n"
	"  deltafs snapshot /srv/models /backup/models-$(date +%F)\n"
	"  deltafs remote /srv/models set rados:models --id deltafs && deltafs push /srv/models\n"
	"  deltafs clone rados:models /srv/models    # on another host\n"
	"  deltafs remote /srv/models set s3://models/team1 --endpoint http://rgw:7480 --keys K\n"
	"\n"
	"Read a store's checkpoints as files with mount.deltafs STORE MOUNTPOINT.\n";

static int fail(const df_err *e)
{
	fprintf(stderr, "deltafs: %s\n", e->msg);
	return 1;
}

static int open_store(const char *dir, unsigned flags, store **s)
{
	df_err e;
	if (store_open(dir, flags, s, &e))
		return fail(&e);
	return 0;
}

/* A store with its remote tier attached (a clone reads blobs through it); *t NULL if none. */
static int open_tiered(const char *dir, unsigned flags, store **s, rt_tier **t)
{
	df_err e;
	if (open_store(dir, flags, s))
		return 1;
	if (rt_open(*s, 0, t, &e)) {
		store_close(*s);
		return fail(&e);
	}
	return 0;
}

static void close_tiered(store *s, rt_tier *t)
{
	rt_close(t);
	store_close(s);
}

static int cmd_init(const char *dir)
{
	store *s;
	if (open_store(dir, STORE_CREATE, &s))
		return 1;
	store_close(s);
	printf("initialised store %s\n", dir);
	return 0;
}

/* Sizes for people, or exact bytes (--bytes) for scripts: the human form keeps 3 digits. */
static const char *ls_size(uint64_t n, int bytes, char buf[32])
{
	if (!bytes)
		return cli_size(n, buf);
	snprintf(buf, 32, "%llu", (unsigned long long)n);
	return buf;
}

static int cmd_ls(const char *dir, int bytes)
{
	store *s;
	MDB_txn *txn;
	df_err e;
	char **names;
	size_t n;
	int rc = 0;
	if (open_store(dir, STORE_RDONLY, &s))
		return 1;
	if (store_rtxn(s, &txn, &e)) {
		store_close(s);
		return fail(&e);
	}
	if (store_ckpt_list(s, txn, &names, &n, &e)) {
		store_txn_end(s, txn);
		store_close(s);
		return fail(&e);
	}
	printf("%-32s %-24s %12s %12s %8s %s\n", "name", "base", "size", "stored", "ratio",
	       "added");
	uint64_t tl = 0, ts = 0;
	for (size_t i = 0; i < n; i++) {
		manifest *m;
		if (store_ckpt_get(s, txn, names[i], &m, &e)) {
			fprintf(stderr, "deltafs: %s\n", e.msg);
			rc = 1;
			continue;
		}
		uint64_t l = mf_logical_bytes(m), st = mf_stored_bytes(m);
		char a[32], b[32], when[32];
		time_t t = (time_t)(m->ctime_ns / 1000000000);
		strftime(when, sizeof when, "%Y-%m-%d %H:%M", localtime(&t));
		printf("%-32s %-24s %12s %12s %7.2fx %s\n", m->name, *m->base ? m->base : "-",
		       ls_size(l, bytes, a), ls_size(st, bytes, b),
		       st ? (double)l / (double)st : 0.0, when);
		tl += l;
		ts += st;
		mf_free(m);
	}
	uint64_t used, fsize;
	store_usage(s, &used, &fsize);
	char a[32], b[32], c[32];
	printf("%zu checkpoint%s, %s logical, %s in chunks; store file %s\n", n, n == 1 ? "" : "s",
	       ls_size(tl, bytes, a), ls_size(ts, bytes, b), ls_size(fsize, bytes, c));
	store_names_free(names, n);
	store_txn_end(s, txn);
	store_close(s);
	return rc;
}

static void shape_str(const mf_seg *sg, char *buf, size_t len)
{
	size_t k = (size_t)snprintf(buf, len, "[");
	for (unsigned d = 0; d < sg->ndim && k < len; d++)
		k += (size_t)snprintf(buf + k, len - k, "%s%llu", d ? ", " : "",
				      (unsigned long long)sg->shape[d]);
	if (k < len)
		snprintf(buf + k, len - k, "]");
}

static int cmd_info(const char *dir, const char *name)
{
	store *s;
	MDB_txn *txn;
	df_err e;
	manifest *m;
	if (open_store(dir, STORE_RDONLY, &s))
		return 1;
	if (store_rtxn(s, &txn, &e)) {
		store_close(s);
		return fail(&e);
	}
	if (store_ckpt_get(s, txn, name, &m, &e)) {
		store_txn_end(s, txn);
		store_close(s);
		return fail(&e);
	}
	char a[32], b[32], shp[128];
	uint64_t l = mf_logical_bytes(m), st = mf_stored_bytes(m), lorig = 0, lstored = 0;
	double lw = 0, dsum = 0, osum = 0;
	printf("checkpoint %s\nbase       %s\nsize       %s\nstored     %s (%.2fx)\nfiles      %u\n",
	       m->name, *m->base ? m->base : "-", cli_size(l, a), cli_size(st, b),
	       st ? (double)l / (double)st : 0.0, m->nfiles);
	for (uint32_t i = 0; i < m->nfiles; i++) {
		const mf_file *f = &m->files[i];
		uint64_t fs = 0;
		for (uint32_t j = 0; j < f->nsegs; j++)
			fs += f->segs[j].stored;
		printf("\n%s  %s -> %s (%.2fx)  %s ", f->path, cli_size(f->size, a),
		       cli_size(fs, b), fs ? (double)f->size / (double)fs : 0.0,
		       f->lossless ? "sha256" : "lossy; the original's sha256");
		for (int k = 0; k < 32; k++)
			printf("%02x", f->sha256[k]);
		printf("\n");
		if (f->kind != MF_FILE_SAFETENSORS)
			continue;
		int lossy = !f->lossless, sparse = 0;
		for (uint32_t j = 0; j < f->nsegs; j++)
			sparse |= f->segs[j].zeros || f->segs[j].broken;
		printf("  %-52s %-5s %-16s %-9s %-5s %11s %11s %8s", "tensor", "dtype", "shape",
		       "codec", "base", "size", "stored", "ratio");
		if (sparse)
			printf(" %-16s", "zeros");
		if (lossy)
			printf(" %6s %9s %9s  %s", "bits", "dW err", "out err", "params");
		printf("\n");
		for (uint32_t j = 0; j < f->nsegs; j++) {
			const mf_seg *sg = &f->segs[j];
			uint32_t same = 0;
			if (sg->kind != MF_TENSOR)
				continue;
			for (uint32_t c = 0; c < sg->nchunks; c++)
				same += sg->chunks[c].flags == MF_CHUNK_SAME;
			shape_str(sg, shp, sizeof shp);
			int eq = sg->nchunks && same == sg->nchunks;
			printf("  %-52s %-5s %-16s %-9s %-5s %11s %11s ", sg->name, dt_name(sg->dtype),
			       shp, eq ? "= base" : cx_codec_name(sg->codec),
			       sg->base_file >= 0 ? "delta" : "-", cli_size(sg->len, a),
			       cli_size(sg->stored, b));
			if (sg->stored)
				printf("%7.2fx", (double)sg->len / (double)sg->stored);
			else
				printf("%8s", "-");
			if (sparse) {
				char sp[48] = "";
				unsigned es = dt_size(sg->dtype);
				if (sg->zeros && sg->len && es)
					snprintf(sp, sizeof sp, "%.1f%%%s%.0u%s%.0u", 100.0 *
						 (double)sg->zeros / (double)(sg->len / es),
						 sg->nm_m ? " " : "", sg->nm_n, sg->nm_m ? ":" : "",
						 sg->nm_m);
				if (sg->broken)
					snprintf(sp + strlen(sp), sizeof sp - strlen(sp), " (%llu broken)",
						 (unsigned long long)sg->broken);
				printf(" %-16s", sp);
			}
			if (sg->codec == CX_PALETTE)
				printf(" %6.2f %9.4f %9s  bits=%u", sg->stored * 8.0 /
				       (double)(sg->len / dt_size(sg->dtype)), sg->q.delta_rel_err, "-",
				       sg->q.params[2]);
			if (sg->codec == CX_LOWRANK && !eq) {
				/* rank, then components per bit width, widest first: 3x4b+9x2b */
				printf(" %6.2f %9.4f %9.5f  rank=%u ", sg->q.bits, sg->q.delta_rel_err,
				       sg->q.output_rel_err, sg->q.params[0]);
				const char *sep = "";
				for (unsigned bw = 8; bw >= 1; bw--) {
					unsigned nb = sg->q.params[1 + (bw - 1) / 4] >> (8 * ((bw - 1) % 4)) &
						      0xff;
					if (nb) {
						printf("%s%ux%ub", sep, nb, bw);
						sep = "+";
					}
				}
				uint32_t h = sg->q.params[3];
				if (h & MF_Q_HYBRID)
					printf(" + deltadq g=%u keep=%u bits=%u", h & 0xfff, h >> 12 & 0xfff,
					       h >> 24 & 0x7f);
			}
			if (sg->codec == CX_DELTADQ && !eq) {
				unsigned qz = sg->q.params[3] & 0xff;
				printf(" %6.2f %9.4f %9.5f  g=%u keep=%u bits=%u %s%s", sg->q.bits,
				       sg->q.delta_rel_err, sg->q.output_rel_err, sg->q.params[0],
				       sg->q.params[1], sg->q.params[2],
				       qz == DQ_Q_KMEANS ? "kmeans" : qz == DQ_Q_ZERO ? "zero"
				       : qz == DQ_Q_PALETTE ? "palette" : "uniform",
				       sg->q.params[3] & MF_Q_SUPPORT ? " support" : "");
			}
			if ((sg->codec == CX_DELTADQ || sg->codec == CX_LOWRANK) && !eq) {
				if (sg->q.score)
					printf(" score=%.4f", sg->q.score);
				lw += (double)sg->len;
				dsum += (double)sg->len * sg->q.delta_rel_err;
				osum += (double)sg->len * sg->q.output_rel_err;
				lorig += sg->len;
				lstored += sg->stored;
			}
			printf("\n");
		}
	}
	if (lw > 0)
		printf("\nlossy matrices: %s -> %s (%.2fx); size-weighted mean relative error: "
		       "delta %.4f, output %.5f\n", cli_size(lorig, a), cli_size(lstored, b),
		       lstored ? (double)lorig / (double)lstored : 0.0, dsum / lw, osum / lw);
	mf_free(m);
	store_txn_end(s, txn);
	store_close(s);
	return 0;
}

static int cmd_rm(const char *dir, const char *name)
{
	store *s;
	df_err e;
	if (open_store(dir, 0, &s))
		return 1;
	int rc = store_rm(s, name, &e);
	store_close(s);
	if (rc)
		return fail(&e);
	printf("removed \"%s\"; run `deltafs gc %s` to free its blobs\n", name, dir);
	return 0;
}

static int cmd_gc(const char *dir)
{
	store *s;
	df_err e;
	uint64_t bytes, blobs;
	char a[32];
	if (open_store(dir, 0, &s))
		return 1;
	int rc = store_gc(s, &bytes, &blobs, &e);
	store_close(s);
	if (rc)
		return fail(&e);
	printf("freed %s in %llu blobs\n", cli_size(bytes, a), (unsigned long long)blobs);
	return 0;
}

static void print_problem(void *ud, const char *msg)
{
	(void)ud;
	fprintf(stderr, "verify: %s\n", msg);
}

static int cmd_verify(const char *dir, const char *name)
{
	store *s;
	df_err e;
	vf_report r;
	char a[32];
	rt_tier *t;
	if (open_tiered(dir, STORE_RDONLY, &s, &t))
		return 1;
	int rc = vf_verify(s, name, print_problem, NULL, &r, &e);
	close_tiered(s, t);
	if (rc)
		return fail(&e);
	printf("verified %llu checkpoint%s, %llu files, %s: %llu problem%s\n",
	       (unsigned long long)r.ckpts, r.ckpts == 1 ? "" : "s", (unsigned long long)r.files,
	       cli_size(r.bytes, a), (unsigned long long)r.bad, r.bad == 1 ? "" : "s");
	return r.bad ? 1 : 0;
}

static int cmd_export(const char *dir, const char *name, const char *out, int force)
{
	store *s;
	df_err e;
	uint64_t bytes;
	char a[32];
	rt_tier *t;
	if (open_tiered(dir, STORE_RDONLY, &s, &t))
		return 1;
	double t0 = cli_now();
	int rc = ex_export(s, name, out, force, &bytes, &e);
	double dt = cli_now() - t0;
	close_tiered(s, t);
	if (rc)
		return fail(&e);
	printf("exported \"%s\" to %s: %s, %.1f MB/s\n", name, out, cli_size(bytes, a),
	       dt > 0 ? (double)bytes / dt / 1e6 : 0.0);
	return 0;
}

static int cmd_snapshot(const char *dir, const char *out)
{
	store *s;
	if (open_store(dir, STORE_RDONLY, &s))
		return 1;
	if (mkdir(out, 0700) && errno != EEXIST) {
		fprintf(stderr, "deltafs: %s: %s\n", out, strerror(errno));
		store_close(s);
		return 1;
	}
	/* LMDB copies inside one read transaction: consistent whatever writers do meanwhile. */
	int rc = mdb_env_copy2(store_env(s), out, MDB_CP_COMPACT);
	store_close(s);
	if (rc) {
		fprintf(stderr, "deltafs: snapshot to %s: %s (DIR must be empty)\n", out,
			mdb_strerror(rc));
		return 1;
	}
	char data[4096];
	snprintf(data, sizeof data, "%s/data.mdb", out);
	chmod(data, 0600); /* the store's own mode, whatever the umask */
	printf("snapshot of %s written to %s\n", dir, out);
	return 0;
}

static int cmd_remote_set(const char *dir, const rb_config *cfg)
{
	store *s;
	df_err e;
	if (open_store(dir, 0, &s))
		return 1;
	int rc = rt_config_set(dir, cfg, &e);
	store_close(s);
	if (rc)
		return fail(&e);
	printf("remote of %s: %s\n", dir, cfg->url);
	return 0;
}

static int cmd_remote_show(const char *dir)
{
	char p[4096], line[4200];
	snprintf(p, sizeof p, "%s/remote", dir);
	FILE *f = fopen(p, "re");
	if (!f) {
		if (errno != ENOENT) {
			fprintf(stderr, "deltafs: %s: %s\n", p, strerror(errno));
			return 1;
		}
		printf("%s has no remote (set one with `deltafs remote %s set rados:POOL` or "
		       "`... set s3://BUCKET`)\n", dir, dir);
		return 0;
	}
	while (fgets(line, sizeof line, f))
		fputs(line, stdout);
	fclose(f);
	return 0;
}

/* The store's tier, or 1 with a message if it has none. */
static int need_tier(const char *dir, unsigned flags, store **s, rt_tier **t)
{
	if (open_tiered(dir, flags, s, t))
		return 1;
	if (!*t) {
		store_close(*s);
		fprintf(stderr, "deltafs: %s has no remote; set one with `deltafs remote %s set "
			"rados:POOL` or `... set s3://BUCKET`\n", dir, dir);
		return 1;
	}
	return 0;
}

static int cmd_push(const char *dir, const char *const *names, size_t n)
{
	store *s;
	rt_tier *t;
	df_err e;
	rt_push_stats st;
	cli_progress pr;
	char a[32], b[32];
	if (need_tier(dir, STORE_RDONLY, &s, &t))
		return 1;
	cli_progress_init(&pr, "push");
	double t0 = cli_now();
	int rc = rt_push(s, t, names, n, 0, cli_progress_cb, &pr, &st, &e);
	double dt = cli_now() - t0;
	cli_progress_end(&pr);
	printf("%s: %llu blobs sent (%s, %.1f MB/s), %llu already there (%s), %llu manifests; ",
	       rt_backend(t)->url, (unsigned long long)st.blobs_sent, cli_size(st.bytes_sent, a),
	       dt > 0 ? (double)st.bytes_sent / dt / 1e6 : 0.0, (unsigned long long)st.blobs_had,
	       cli_size(st.bytes_had, b), (unsigned long long)st.manifests_sent);
	if (st.ckpts)
		printf("%llu checkpoint%s published", (unsigned long long)st.ckpts,
		       st.ckpts == 1 ? "" : "s");
	else
		printf("nothing new to publish");
	if (st.unchanged)
		printf("%s%llu already published as %s", st.ckpts ? ", " : ": ",
		       (unsigned long long)st.unchanged, st.unchanged == 1 ? "it is" : "they are");
	printf("\n");
	close_tiered(s, t);
	return rc ? fail(&e) : 0;
}

static int pull(const char *dir, store *s, rt_tier *t)
{
	df_err e;
	rt_pull_stats st;
	if (rt_pull(s, t, &st, &e))
		return fail(&e);
	printf("%s: %llu checkpoint%s added, %llu updated, %llu unchanged\n", dir,
	       (unsigned long long)st.added, st.added == 1 ? "" : "s",
	       (unsigned long long)st.replaced, (unsigned long long)st.unchanged);
	return 0;
}

/* every > 0: pull again whenever another host publishes (watch/notify) and at least every
 * `every` seconds, until killed, going on after failures (a remote unreachable for a while must
 * not end the loop); only changes are printed. */
static int cmd_pull(const char *dir, unsigned every)
{
	store *s;
	rt_tier *t;
	df_err e;
	rt_pull_stats st;
	if (need_tier(dir, 0, &s, &t))
		return 1;
	if (!every) {
		int rc = pull(dir, s, t);
		close_tiered(s, t);
		return rc;
	}
	for (;;) {
		if (rt_pull(s, t, &st, &e))
			fprintf(stderr, "deltafs: %s\n", e.msg);
		else if (st.added || st.replaced)
			printf("%s: %llu checkpoint%s added, %llu updated\n", dir,
			       (unsigned long long)st.added, st.added == 1 ? "" : "s",
			       (unsigned long long)st.replaced);
		fflush(stdout);
		rt_wait_change(t, every);
	}
}

static int cmd_clone(const rb_config *cfg, const char *dir, int all)
{
	store *s;
	rt_tier *t;
	df_err e;
	struct stat st;
	if (!stat(dir, &st)) {
		fprintf(stderr, "deltafs: %s exists; clone makes a new store (use `deltafs pull` to "
			"update one)\n", dir);
		return 1;
	}
	rb_backend *b;
	if (rb_open(cfg, &b, &e)) /* a URL this build cannot use: leave nothing behind */
		return fail(&e);
	rb_close(b);
	if (open_store(dir, STORE_CREATE, &s))
		return 1;
	int rc = rt_config_set(dir, cfg, &e) ? fail(&e) : 0;
	store_close(s);
	if (rc || need_tier(dir, 0, &s, &t))
		return 1;
	rc = pull(dir, s, t);
	if (rc)
		fprintf(stderr, "deltafs: %s is set up with its remote; `deltafs pull %s` finishes the "
			"clone\n", dir, dir);
	if (!rc && all) {
		cli_progress pr;
		uint64_t bytes;
		char a[32];
		cli_progress_init(&pr, "fetch");
		double t0 = cli_now();
		rc = rt_fetch_all(s, t, 0, cli_progress_cb, &pr, &bytes, &e);
		double dt = cli_now() - t0;
		cli_progress_end(&pr);
		if (rc)
			rc = fail(&e);
		else
			printf("fetched %s of blobs into %s (%.1f MB/s)\n", cli_size(bytes, a), dir,
			       dt > 0 ? (double)bytes / dt / 1e6 : 0.0);
	}
	close_tiered(s, t);
	return rc;
}

static int cmd_rm_remote(const char *dir, const char *name)
{
	store *s;
	rt_tier *t;
	df_err e;
	if (need_tier(dir, STORE_RDONLY, &s, &t))
		return 1;
	int rc = rt_unpublish(t, name, &e);
	if (!rc)
		printf("unpublished \"%s\" from %s; run `deltafs gc %s --remote` to free its objects\n",
		       name, rt_backend(t)->url, dir);
	close_tiered(s, t);
	return rc ? fail(&e) : 0;
}

static int cmd_gc_remote(const char *dir, unsigned grace)
{
	store *s;
	rt_tier *t;
	df_err e;
	rt_gc_stats st;
	char a[32];
	if (need_tier(dir, STORE_RDONLY, &s, &t))
		return 1;
	int rc = rt_gc(t, grace, &st, &e);
	if (!rc)
		printf("%s: removed %llu objects (%s); %llu in use; %llu unused but written less than "
		       "%u s ago\n", rt_backend(t)->url, (unsigned long long)st.removed,
		       cli_size(st.removed_bytes, a), (unsigned long long)st.kept,
		       (unsigned long long)st.young, grace);
	close_tiered(s, t);
	return rc ? fail(&e) : 0;
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "help")) {
		fputs(usage_text, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	const char *cmd = argv[1];
	int force = 0, bytes = 0, all = 0, remote = 0;
	unsigned grace = RT_GC_GRACE, every = 0;
	size_t n = 0;
	rb_config cfg = {0};
	char keys[PATH_MAX];
	const char *arg[argc];
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--force")) {
			force = 1;
		} else if (!strcmp(argv[i], "--bytes")) {
			bytes = 1;
		} else if (!strcmp(argv[i], "--all")) {
			all = 1;
		} else if (!strcmp(argv[i], "--remote")) {
			remote = 1;
		} else if ((!strcmp(argv[i], "--grace") || !strcmp(argv[i], "--every")) &&
			   i + 1 < argc) {
			char *end;
			unsigned long v = strtoul(argv[i + 1], &end, 10);
			if (*end || !*argv[i + 1] || v > UINT_MAX) {
				fprintf(stderr, "deltafs: %s takes a number of seconds\n", argv[i]);
				return 2;
			}
			*(argv[i][2] == 'g' ? &grace : &every) = (unsigned)v;
			i++;
		} else if ((!strcmp(argv[i], "--id") || !strcmp(argv[i], "--conf") ||
			    !strcmp(argv[i], "--endpoint") || !strcmp(argv[i], "--region")) &&
			   i + 1 < argc) {
			*(argv[i][2] == 'i' ? &cfg.id : argv[i][2] == 'c' ? &cfg.conf
			  : argv[i][2] == 'e' ? &cfg.endpoint : &cfg.region) = argv[i + 1];
			i++;
		} else if (!strcmp(argv[i], "--keys") && i + 1 < argc) {
			/* Recorded in STORE/remote, read by every later command: absolute. */
			if (!realpath(argv[i + 1], keys)) {
				fprintf(stderr, "deltafs: %s: %s\n", argv[i + 1], strerror(errno));
				return 2;
			}
			cfg.keys = keys;
			i++;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(usage_text, stdout);
			return 0;
		} else {
			arg[n++] = argv[i];
		}
	}
	if (!strcmp(cmd, "init") && n == 1)
		return cmd_init(arg[0]);
	if (!strcmp(cmd, "ls") && n == 1)
		return cmd_ls(arg[0], bytes);
	if (!strcmp(cmd, "info") && n == 2)
		return cmd_info(arg[0], arg[1]);
	if (!strcmp(cmd, "rm") && n == 2)
		return remote ? cmd_rm_remote(arg[0], arg[1]) : cmd_rm(arg[0], arg[1]);
	if (!strcmp(cmd, "gc") && n == 1)
		return remote ? cmd_gc_remote(arg[0], grace) : cmd_gc(arg[0]);
	if (!strcmp(cmd, "verify") && (n == 1 || n == 2))
		return cmd_verify(arg[0], n == 2 ? arg[1] : NULL);
	if (!strcmp(cmd, "snapshot") && n == 2)
		return cmd_snapshot(arg[0], arg[1]);
	if (!strcmp(cmd, "export") && n == 3)
		return cmd_export(arg[0], arg[1], arg[2], force);
	if (!strcmp(cmd, "remote") && n == 1)
		return cmd_remote_show(arg[0]);
	if (!strcmp(cmd, "remote") && n == 3 && !strcmp(arg[1], "set")) {
		cfg.url = arg[2];
		return cmd_remote_set(arg[0], &cfg);
	}
	if (!strcmp(cmd, "push") && n >= 1)
		return cmd_push(arg[0], arg + 1, n - 1);
	if (!strcmp(cmd, "pull") && n == 1)
		return cmd_pull(arg[0], every);
	if (!strcmp(cmd, "clone") && n == 2) {
		cfg.url = arg[0];
		return cmd_clone(&cfg, arg[1], all);
	}
	fprintf(stderr, "deltafs: unknown command or wrong arguments: %s (see deltafs --help)\n", cmd);
	return 2;
}
