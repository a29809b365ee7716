/*
 * export.c -- write a checkpoint's files back to a directory.
 */
#include "export.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reader.h"

/* mkdir -p for the directories of rel under dir (rel is a validated relative path). */
static int make_parents(const char *dir, const char *rel, df_err *err)
{
	char p[PATH_MAX];
	if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, rel) >= sizeof p)
		return df_errf(err, -ENAMETOOLONG, "%s/%s: path too long", dir, rel);
	for (char *s = p + strlen(dir) + 1; (s = strchr(s, '/')); s++) {
		struct stat st;
		*s = 0;
		if (mkdir(p, 0755) && errno != EEXIST)
			return df_errf(err, -errno, "%s: %s", p, strerror(errno));
		/* A symlink already in DIR must not carry the export elsewhere. */
		if (lstat(p, &st) || !S_ISDIR(st.st_mode))
			return df_errf(err, -ENOTDIR, "%s: not a directory (a symlink or file in the "
				       "way: export does not follow them)", p);
		*s = '/';
	}
	return 0;
}

typedef struct wctx {
	int fd;
	uint64_t written;
} wctx;

static int write_sink(void *ud, const void *p, size_t n)
{
	wctx *w = ud;
	const char *c = p;
	while (n) {
		ssize_t k = write(w->fd, c, n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		c += k;
		n -= (size_t)k;
		w->written += (uint64_t)k;
	}
	return 0;
}

int ex_export(store *s, const char *name, const char *dir, int overwrite, uint64_t *bytes,
	      df_err *err)
{
	MDB_txn *txn;
	rd_ckpt *ck = NULL;
	uint64_t total = 0;
	if (mkdir(dir, 0755) && errno != EEXIST)
		return df_errf(err, -errno, "%s: %s", dir, strerror(errno));
	cx_ctx *cx = cx_ctx_new();
	if (!cx)
		return df_errf(err, -ENOMEM, "out of memory");
	int rc = store_rtxn(s, &txn, err);
	if (!rc) {
		rc = rd_load(s, txn, name, &ck, err);
		if (rc)
			store_txn_end(s, txn);
	}
	for (uint32_t f = 0; !rc && f < ck->mf->nfiles; f++) {
		const mf_file *fl = &ck->mf->files[f];
		char path[PATH_MAX], tmp[PATH_MAX + 16];
		if ((rc = make_parents(dir, fl->path, err)))
			break;
		snprintf(path, sizeof path, "%s/%s", dir, fl->path);
		snprintf(tmp, sizeof tmp, "%s.deltafs-tmp", path);
		if (!overwrite && !access(path, F_OK)) {
			rc = df_errf(err, -EEXIST, "%s: exists (use --force to overwrite)", path);
			break;
		}
		wctx w = {open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644), 0};
		if (w.fd < 0) {
			rc = df_errf(err, -errno, "%s: %s", tmp, strerror(errno));
			break;
		}
		uint8_t sha[32];
		err->msg[0] = 0;
		rc = rd_stream(cx, s, txn, ck, f, write_sink, &w, sha, err);
		if (rc && !err->msg[0]) /* the sink failed: a write error */
			df_errf(err, rc, "%s: %s", tmp, strerror(-rc));
		if (close(w.fd) && !rc)
			rc = df_errf(err, -errno, "%s: %s", tmp, strerror(errno));
		if (!rc && fl->lossless && memcmp(sha, fl->sha256, 32))
			rc = df_errf(err, -EIO, "checkpoint \"%s\" file \"%s\": decoded bytes differ "
				     "from the original (sha256 mismatch); run `deltafs verify`",
				     name, fl->path);
		if (!rc && rename(tmp, path))
			rc = df_errf(err, -errno, "%s: %s", path, strerror(errno));
		if (rc)
			unlink(tmp);
		total += w.written;
	}
	if (ck) {
		rd_free(ck);
		store_txn_end(s, txn);
	}
	cx_ctx_free(cx);
	if (bytes)
		*bytes = total;
	return rc;
}
