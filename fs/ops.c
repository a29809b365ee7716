/*
 * ops.c -- the FUSE low-level operations of mount.deltafs: a read-only namespace over snapshots
 * (fs/tree.h) and reads answered from the chunk cache (fs/mount.h).
 *
 * Not implemented on purpose: forget (inode numbers are computed, there is nothing to free per
 * inode), flush (files open with noflush), every write-side operation (the mount is "ro", so the
 * kernel refuses them before they reach us; open still checks, for kernels that ask anyway).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>

#include "log.h"
#include "mount.h"

#define FS_IOV_STACK 64 /* pieces of a read before the arrays move to the heap */
#define FS_IOV_MAX 512  /* pieces one reply may have (the kernel takes at most 1024 iovecs) */
#define FS_MAX_BACKGROUND 64 /* readahead requests in flight (libfuse/kernel default: 12) */

#define XA_PREFIX "user.deltafs."

static fs_mount *mount_of(fuse_req_t req) { return fuse_req_userdata(req); }

static fs_handle *handle_of(const struct fuse_file_info *fi)
{
	return (fs_handle *)(uintptr_t)fi->fh;
}

static void node_stat(const fs_mount *m, const ft_node *n, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = n->ino;
	st->st_mode = n->file < 0 ? S_IFDIR | 0555 : S_IFREG | 0444;
	st->st_nlink = n->nlink;
	st->st_uid = m->uid;
	st->st_gid = m->gid;
	st->st_size = (off_t)n->size;
	if (n->file >= 0)
		st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
	int64_t sec = n->mtime_ns / 1000000000, nsec = n->mtime_ns % 1000000000;
	if (nsec < 0) {
		sec--;
		nsec += 1000000000;
	}
	st->st_mtim.tv_sec = sec;
	st->st_mtim.tv_nsec = nsec;
	st->st_atim = st->st_ctim = st->st_mtim;
}

static double attr_timeout(const ft_node *n)
{
	return n->ino == FT_ROOT_INO ? FS_ROOT_TIMEOUT : FS_TIMEOUT;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	fs_mount *m = userdata;
	/* Must equal the max_read mount option (libfuse refuses INIT otherwise); main.c passes it. */
	conn->max_read = FS_MAX_READ;
	/* max_write stays at libfuse's 1 MiB: libfuse derives max_pages (the largest request, read
	 * ones too) from it. max_readahead stays at the kernel's offer, the most it accepts. */
	conn->max_background = FS_MAX_BACKGROUND;
	conn->congestion_threshold = FS_MAX_BACKGROUND * 3 / 4;
	/* A file's bytes never change under one inode number: checking mtime on every read to drop
	 * the page cache would only cost getattr round trips. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	atomic_store(&m->inited, 1);
	fs_log(LOG_DEBUG, "init: max_read %u max_readahead %u max_write %u max_background %u",
	       conn->max_read, conn->max_readahead, conn->max_write, conn->max_background);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fs_mount *m = mount_of(req);
	fs_tune_readahead(m);
	const ft_node *dir, *n = NULL;
	ft_snap *s = fs_snap_find(m, parent, &dir);
	if (s)
		n = ft_lookup(s, dir, name);
	if (!n) {
		fuse_reply_err(req, ENOENT);
	} else {
		struct fuse_entry_param e;
		memset(&e, 0, sizeof e);
		e.ino = n->ino;
		e.attr_timeout = attr_timeout(n);
		e.entry_timeout = FS_TIMEOUT;
		node_stat(m, n, &e.attr);
		fuse_reply_entry(req, &e);
	}
	if (s)
		fs_snap_release(m, s);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fs_mount *m = mount_of(req);
	fs_tune_readahead(m); /* every path into the mount starts with a lookup or a getattr */
	struct stat st;
	if (fi) { /* fstat of an open file: its own snapshot, even if the name is gone */
		node_stat(m, handle_of(fi)->node, &st);
		fuse_reply_attr(req, &st, attr_timeout(handle_of(fi)->node));
		return;
	}
	const ft_node *n;
	ft_snap *s = fs_snap_find(m, ino, &n);
	if (!s) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	node_stat(m, n, &st);
	fuse_reply_attr(req, &st, attr_timeout(n));
	fs_snap_release(m, s);
}

static void close_handle(fs_mount *m, fs_handle *h)
{
	fs_handle_untrack(m, h);
	if (h->node->file >= 0)
		ft_close_file(h->snap, h->node);
	fs_snap_release(m, h->snap);
	free(h);
}

/* open and opendir: a handle holding the snapshot the node was found in. */
static void open_node(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int want_dir)
{
	fs_mount *m = mount_of(req);
	const ft_node *n;
	ft_snap *s = fs_snap_find(m, ino, &n);
	if (!s) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	int err = want_dir && n->file >= 0 ? ENOTDIR : !want_dir && n->file < 0 ? EISDIR : 0;
	fs_handle *h = err ? NULL : calloc(1, sizeof *h);
	if (!err && !h)
		err = ENOMEM;
	if (err) {
		fs_snap_release(m, s);
		fuse_reply_err(req, err);
		return;
	}
	h->snap = s;
	h->node = n;
	fi->fh = (uintptr_t)h;
	if (!want_dir) {
		fi->keep_cache = 1;
		fi->noflush = 1;
		if ((err = -ft_open_file(s, n))) {
			free(h);
			fs_snap_release(m, s);
			fuse_reply_err(req, err);
			return;
		}
	}
	fs_handle_track(m, h);
	if (fuse_reply_open(req, fi)) /* interrupted: no release will come for this handle */
		close_handle(m, h);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	open_node(req, ino, fi, 0);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	open_node(req, ino, fi, 1);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	close_handle(mount_of(req), handle_of(fi));
	fuse_reply_err(req, 0);
}

/* Reply with bytes spread over n cache buffers. Normally straight from them (the kernel copies
 * out of our buffers into its pages: no copy of ours); a read over very many tiny tensors
 * exceeds the iovec limit and is gathered into one buffer instead. */
static void reply_pieces(fuse_req_t req, const struct iovec *iov, unsigned n, size_t total)
{
	if (n <= FS_IOV_MAX) {
		fuse_reply_iov(req, iov, (int)n);
		return;
	}
	char *buf = malloc(total), *p = buf;
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (unsigned i = 0; i < n; i++)
		p = mempcpy(p, iov[i].iov_base, iov[i].iov_len);
	fuse_reply_buf(req, buf, total);
	free(buf);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	fs_mount *m = mount_of(req);
	fs_handle *h = handle_of(fi);
	const ft_node *n = h->node;
	const mf_file *f = &n->ck->mf->files[n->file];
	(void)ino;
	if ((uint64_t)off >= f->size || !size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	uint64_t pos = (uint64_t)off, end = f->size - pos < size ? f->size : pos + size;
	/* Queue the chunks ahead first, so they decode while this thread decodes these; and the
	 * read's own chunks after its first, which this thread decodes meanwhile. */
	fs_prefetch_ahead(m, h, pos, end);
	fs_prefetch_read(m, h, pos, end);

	struct iovec iov_stack[FS_IOV_STACK], *iov = iov_stack;
	fc_chunk *ref_stack[FS_IOV_STACK], **refs = ref_stack;
	unsigned cap = FS_IOV_STACK, k = 0;
	uint32_t si = mf_seg_at(f, pos);
	int rc = 0;
	while (pos < end) {
		if (k == cap) {
			struct iovec *ni = malloc(2 * cap * sizeof *ni);
			fc_chunk **nr = malloc(2 * cap * sizeof *nr);
			if (!ni || !nr) {
				free(ni);
				free(nr);
				rc = -ENOMEM;
				break;
			}
			memcpy(ni, iov, k * sizeof *ni);
			memcpy(nr, refs, k * sizeof *nr);
			if (iov != iov_stack) {
				free(iov);
				free(refs);
			}
			iov = ni;
			refs = nr;
			cap *= 2;
		}
		size_t cpos, len;
		uint32_t c = fs_chunk_at(f, &si, pos, end, &cpos, &len);
		if ((rc = fs_chunk_get(m, h->snap, n->ck, (uint32_t)n->file, si, c, &refs[k])))
			break;
		iov[k].iov_base = (char *)fc_data(refs[k]) + cpos;
		iov[k++].iov_len = len;
		pos += len;
	}
	if (rc)
		fuse_reply_err(req, -rc);
	else
		reply_pieces(req, iov, k, (size_t)(end - (uint64_t)off));
	for (unsigned i = 0; i < k; i++)
		fc_put(m->cache, refs[i]);
	if (iov != iov_stack) {
		free(iov);
		free(refs);
	}
}

/* readdir and readdirplus: offsets are positions in [".", "..", children by name] of the
 * directory as the handle's snapshot has it, so a listing in several calls is consistent. */
static void list_dir(fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi, int plus)
{
	fs_mount *m = mount_of(req);
	fs_handle *h = handle_of(fi);
	const ft_node *d = h->node;
	char *buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t used = 0;
	for (uint64_t i = (uint64_t)off; i < 2 + (uint64_t)d->nkids; i++) {
		const ft_node *n = i == 0 ? d : i == 1 ? &h->snap->nodes[d->parent]
						      : ft_kid(h->snap, d, (uint32_t)(i - 2));
		const char *name = i == 0 ? "." : i == 1 ? ".." : n->name;
		size_t len;
		if (plus) {
			struct fuse_entry_param e;
			memset(&e, 0, sizeof e);
			node_stat(m, n, &e.attr);
			if (i >= 2) { /* the kernel makes no entries for "." and ".." */
				e.ino = n->ino;
				e.attr_timeout = attr_timeout(n);
				e.entry_timeout = FS_TIMEOUT;
			}
			len = fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
						     (off_t)i + 1);
		} else {
			struct stat st;
			node_stat(m, n, &st);
			len = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)i + 1);
		}
		if (len > size - used)
			break;
		used += len;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)ino;
	list_dir(req, size, off, fi, 0);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	(void)ino;
	list_dir(req, size, off, fi, 1);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	fs_mount *m = mount_of(req);
	uint64_t used, fsize;
	(void)ino;
	int rc = store_usage(m->st, &used, &fsize);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	struct statvfs sv;
	memset(&sv, 0, sizeof sv);
	sv.f_bsize = sv.f_frsize = 4096;
	sv.f_blocks = fsize / 4096;
	sv.f_bfree = (fsize > used ? fsize - used : 0) / 4096; /* free pages inside data.mdb */
	sv.f_bavail = 0; /* nothing is writable through the mount */
	ft_snap *s = fs_snap_newest(m);
	sv.f_files = s->nfiles;
	fs_snap_release(m, s);
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

/* --- extended attributes ---------------------------------------------------------------------- */

/* Files: codec (the distinct codecs of its segments, comma-separated, in file order), stored (bytes
 * of its blobs). Checkpoint directories: stored (the checkpoint's blobs) and base (if it has one). */
enum { XA_CODEC, XA_STORED, XA_BASE, XA_N };
static const char *const xa_names[XA_N] = {XA_PREFIX "codec", XA_PREFIX "stored", XA_PREFIX "base"};

static int xa_has(const ft_node *n, int a)
{
	if (n->file >= 0)
		return a == XA_CODEC || a == XA_STORED;
	if (!n->ck || *n->path) /* the root, nested directories */
		return 0;
	return a == XA_STORED || (a == XA_BASE && *n->ck->mf->base);
}

/* The value of attribute a of n in buf (cap bytes); returns its length. */
static size_t xa_value(const ft_node *n, int a, char *buf, size_t cap)
{
	const manifest *mf = n->ck->mf;
	if (a == XA_BASE)
		return (size_t)snprintf(buf, cap, "%s", mf->base);
	if (n->file < 0)
		return (size_t)snprintf(buf, cap, "%llu", (unsigned long long)mf_stored_bytes(mf));
	const mf_file *f = &mf->files[n->file];
	if (a == XA_STORED) {
		uint64_t t = 0;
		for (uint32_t i = 0; i < f->nsegs; i++)
			t += f->segs[i].stored;
		return (size_t)snprintf(buf, cap, "%llu", (unsigned long long)t);
	}
	unsigned seen = 0; /* bit per codec id already listed */
	size_t len = 0;
	buf[0] = 0;
	for (uint32_t i = 0; i < f->nsegs; i++) {
		unsigned c = f->segs[i].codec, bit = c < 32 ? 1u << c : 0;
		if (!f->segs[i].len || (seen & bit))
			continue;
		seen |= bit;
		len += (size_t)snprintf(buf + len, len < cap ? cap - len : 0, "%s%s", len ? "," : "",
					cx_codec_name((int)c));
	}
	return len;
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	fs_mount *m = mount_of(req);
	const ft_node *n;
	ft_snap *s = fs_snap_find(m, ino, &n);
	if (!s) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	int a = 0;
	while (a < XA_N && strcmp(name, xa_names[a]))
		a++;
	char val[512];
	if (a == XA_N || !xa_has(n, a)) {
		fuse_reply_err(req, ENODATA);
	} else {
		size_t len = xa_value(n, a, val, sizeof val);
		if (len >= sizeof val)
			fuse_reply_err(req, E2BIG);
		else if (!size)
			fuse_reply_xattr(req, len);
		else if (size < len)
			fuse_reply_err(req, ERANGE);
		else
			fuse_reply_buf(req, val, len);
	}
	fs_snap_release(m, s);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	fs_mount *m = mount_of(req);
	const ft_node *n;
	ft_snap *s = fs_snap_find(m, ino, &n);
	if (!s) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	char list[128];
	size_t len = 0;
	for (int a = 0; a < XA_N; a++)
		if (xa_has(n, a)) {
			size_t l = strlen(xa_names[a]) + 1;
			memcpy(list + len, xa_names[a], l);
			len += l;
		}
	fs_snap_release(m, s);
	if (!size)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, list, len);
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.open = op_open,
	.read = op_read,
	.release = op_release,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_release,
	.statfs = op_statfs,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
};
