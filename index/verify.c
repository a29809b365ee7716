/*
 * verify.c -- decode everything, compare with what ingest recorded, recount references.
 */
#include "verify.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reader.h"

typedef struct vctx {
	void (*problem)(void *ud, const char *msg);
	void *ud;
	vf_report *rep;
} vctx;

static void problem(vctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(vctx *v, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	v->rep->bad++;
	if (v->problem)
		v->problem(v->ud, msg);
}

static void verify_ckpt(vctx *v, cx_ctx *cx, store *s, MDB_txn *txn, const char *name)
{
	rd_ckpt *ck;
	df_err e;
	if (rd_load(s, txn, name, &ck, &e)) {
		problem(v, "%s", e.msg);
		return;
	}
	v->rep->ckpts++;
	for (uint32_t f = 0; f < ck->mf->nfiles; f++) {
		const mf_file *fl = &ck->mf->files[f];
		uint8_t sha[32];
		v->rep->files++;
		if (rd_stream(cx, s, txn, ck, f, NULL, NULL, sha, &e)) {
			problem(v, "%s", e.msg);
			continue;
		}
		v->rep->bytes += fl->size;
		if (fl->lossless && memcmp(sha, fl->sha256, 32))
			problem(v, "%s: checkpoint \"%s\" file \"%s\": decoded bytes differ from the "
				"original (sha256 mismatch)", store_path(s), name, fl->path);
	}
	rd_free(ck);
}

static void refs_problem(void *ud, const char *msg)
{
	problem(ud, "%s", msg);
}

int vf_verify(store *s, const char *name, void (*cb)(void *ud, const char *msg), void *ud,
	      vf_report *rep, df_err *err)
{
	vctx v = {cb, ud, rep};
	MDB_txn *txn;
	char **names = NULL;
	size_t n = 0;
	memset(rep, 0, sizeof *rep);
	cx_ctx *cx = cx_ctx_new();
	if (!cx)
		return df_errf(err, -ENOMEM, "out of memory");
	int rc = store_rtxn(s, &txn, err);
	if (rc) {
		cx_ctx_free(cx);
		return rc;
	}
	if (name) {
		verify_ckpt(&v, cx, s, txn, name);
	} else if (!(rc = store_ckpt_list(s, txn, &names, &n, err))) {
		for (size_t i = 0; i < n; i++)
			verify_ckpt(&v, cx, s, txn, names[i]);
		rc = store_check_refs(s, txn, refs_problem, &v, err);
		rc = rc < 0 ? rc : 0;
	}
	store_names_free(names, n);
	store_txn_end(s, txn);
	cx_ctx_free(cx);
	return rc;
}
