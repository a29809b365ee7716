/*
 * mount.h -- the state of a running mount.deltafs and the read path under the FUSE operations.
 *
 * Snapshots: the mount keeps a list of live snapshots (fs/tree.h), newest first; the newest is the
 * one new lookups see. A poller thread checks the store's generation every FS_POLL_MS; when it
 * changes, it builds a new snapshot, puts it at the head, tells the kernel which names vanished
 * (fuse_lowlevel_notify_inval_entry) and drops the list's reference on the old one. Open files and
 * directories hold a reference on the snapshot they were opened in, so a file open when its
 * checkpoint is removed (and gc'd) stays readable until its last close; then the snapshot and its
 * transactions go. Operations on an inode number search the live snapshots newest first, so fstat
 * and getxattr keep working on such a file too. Each poll also lets the snapshots renew, move or
 * drop their read transactions, so that the mount does not keep the store from reusing space
 * (tree.h: the cost and the rules).
 *
 * Reading: a read names bytes of one file; they are cut at chunk boundaries, each chunk comes from
 * the chunk cache (fs/cache.h), decoded on a miss by the calling thread with a transaction borrowed
 * from the snapshot, and the reply points into the cache entries. A chunk with a base first gets
 * its base chunk from the cache the same way (recursively down the base chain). When a handle reads
 * sequentially, the chunks ahead of it are queued to prefetch threads, which decode them into the
 * cache while the kernel is still asking for the current ones.
 *
 * Kernel caching: files are opened with keep_cache and entries/attributes live FS_TIMEOUT seconds,
 * since a file's bytes never change for a given inode number (tree.h); what vanishes is invalidated
 * explicitly. No direct_io: mmap and the page cache must work.
 */
#ifndef DELTAFS_FS_MOUNT_H
#define DELTAFS_FS_MOUNT_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "cache.h"
#include "tree.h"

#define FS_MAX_READ (1u << 20) /* max_read: the kernel sends reads of up to this many bytes */
#define FS_TIMEOUT 86400.0     /* entry/attr timeout of everything but the root (seconds) */
#define FS_ROOT_TIMEOUT 1.0    /* the root's attributes (its link count changes) */
#define FS_POLL_MS 400         /* store generation poll period */

typedef struct fs_opts {
	unsigned cache_mib;   /* chunk cache bound, MiB */
	unsigned threads;     /* FUSE worker threads at most */
	unsigned prefetchers; /* prefetch threads (0: none) */
	unsigned read_ahead_kb; /* the mount's bdi readahead to set after INIT (0: leave it) */
} fs_opts;

typedef struct fs_pf_item {
	ft_snap *snap; /* holds a reference */
	const rd_ckpt *ck;
	uint32_t file, seg, chunk;
} fs_pf_item;

typedef struct fs_mount {
	store *st;
	struct fuse_session *se;
	fcache *cache;
	fs_opts opts;
	uid_t uid;
	gid_t gid;
	atomic_int inited; /* the kernel's INIT was answered: notifications may be sent */
	char bdi[32];      /* "major:minor" of the mount (its /sys/class/bdi name), "" if unknown */
	atomic_int ra_done;

	pthread_mutex_t mu; /* guards live, every snapshot's refs, and open */
	ft_snap *live;      /* newest first; live->refs counts the list's own reference */
	/* handles the kernel has not released: fs_mount_fini frees them when the session ends
	 * first (a file still open at SIGTERM gets no release) */
	struct fs_handle *open;

	pthread_t poller;
	int poller_on;
	pthread_mutex_t stop_mu;
	pthread_cond_t stop_cv;
	int stop;

	pthread_mutex_t pf_mu; /* the prefetch queue, a ring, and pf_stop */
	pthread_cond_t pf_cv;
	int pf_stop;
	fs_pf_item *pf_ring;
	unsigned pf_cap, pf_head, pf_len;
	pthread_t *pf_threads;
	unsigned pf_nthreads;
} fs_mount;

/* An open file or directory (fuse_file_info.fh). */
typedef struct fs_handle {
	ft_snap *snap; /* holds a reference */
	const ft_node *node;
	_Atomic uint64_t next;   /* files: end of the last read, to detect sequential access */
	_Atomic uint64_t pf_end; /* files: prefetch queued up to this offset */
	struct fs_handle *prev_open, *next_open; /* fs_mount.open, under fs_mount.mu */
} fs_handle;

/* Set up m on an open store: build the first snapshot (a checkpoint that does not load is left
 * out, named on stderr), create the chunk cache. Returns 0 or a negative errno with err. */
int fs_mount_init(fs_mount *m, store *st, const fs_opts *o, df_err *err);

/* Start the poller and the prefetch threads for session se (after fuse_session_mount). */
int fs_mount_start(fs_mount *m, struct fuse_session *se, df_err *err);

/* Stop the threads and free everything; the store stays open. Safe after a failed init/start. */
void fs_mount_fini(fs_mount *m);

/* The newest snapshot, with a reference. */
ft_snap *fs_snap_newest(fs_mount *m);

/* The newest live snapshot holding ino, with a reference, and the node in *node; NULL if none. */
ft_snap *fs_snap_find(fs_mount *m, uint64_t ino, const ft_node **node);

/* Drop a reference; the last one frees the snapshot and ends its transactions. */
void fs_snap_release(fs_mount *m, ft_snap *s);

/* Put h on m's list of open handles (after a successful open), or take it off (at release). */
void fs_handle_track(fs_mount *m, fs_handle *h);
void fs_handle_untrack(fs_mount *m, fs_handle *h);

/* Chunk c of segment (f, sg) of ck, from the cache or decoded (bases first). Returns 0 with a cache
 * reference in *out (fc_put it), -EIO for a damaged or undecodable blob (logged with the checkpoint,
 * file and tensor), or -ENOMEM. out NULL: prefetch (fc_prefetch), no reference. */
int fs_chunk_get(fs_mount *m, ft_snap *s, const rd_ckpt *ck, uint32_t f, uint32_t sg, uint32_t c,
		 fc_chunk **out);

/* Once, on the first request after INIT: set the mount's readahead (opts.read_ahead_kb) through
 * /sys/class/bdi/BDI/read_ahead_kb. Why: the kernel caps a FUSE mount's readahead at 128 KiB (the
 * daemon can lower it at INIT, never raise it), so a sequential reader costs one request per
 * 128 KiB; raised to 1 MiB (max_read) after INIT, requests grow to 1 MiB and several are in flight,
 * decoded by several threads. Only root may write it: otherwise it stays as the kernel set it.
 * Not earlier: the kernel's INIT processing lowers it again, and any request after INIT comes
 * after that. */
void fs_tune_readahead(fs_mount *m);

/* The chunk of file f holding byte pos (pos < end <= f->size). *si is a segment index at or before
 * pos (mf_seg_at, or the previous call's) and is advanced to pos's segment, past empty ones. Returns
 * the chunk index, with pos's offset in the chunk in *cpos and the bytes of the chunk inside
 * [pos, end) in *n. */
static inline uint32_t fs_chunk_at(const mf_file *f, uint32_t *si, uint64_t pos, uint64_t end,
				   size_t *cpos, size_t *n)
{
	while (pos >= f->segs[*si].off + f->segs[*si].len)
		(*si)++;
	const mf_seg *seg = &f->segs[*si];
	uint64_t rel = pos - seg->off;
	uint32_t c = (uint32_t)(rel / seg->chunk_size);
	*cpos = (size_t)(rel % seg->chunk_size);
	size_t left = rd_chunk_len(seg, c) - *cpos;
	*n = end - pos < left ? (size_t)(end - pos) : left;
	return c;
}

/* Called by read on handle h for [off, end): if the handle reads sequentially, queue the chunks
 * ahead of end for the prefetch threads. */
void fs_prefetch_ahead(fs_mount *m, fs_handle *h, uint64_t off, uint64_t end);

/* For a read of [pos, end) of h's file: ask the kernel for the blobs of every chunk it covers
 * (their disk reads overlap), and queue all chunks but the first to the prefetch threads, so that
 * they decode in parallel with the first, which the reading thread decodes itself (a cold random
 * 128 KiB read spans 2-3 chunks of 64 KiB). */
void fs_prefetch_read(fs_mount *m, fs_handle *h, uint64_t pos, uint64_t end);

/* The FUSE operations (fs/ops.c). */
extern const struct fuse_lowlevel_ops fs_ops;

#endif
