/*
 * mount.c -- snapshots and their lifetime, chunk decoding into the cache, prefetch threads, the
 * generation poller. See mount.h for the design.
 */
#include "mount.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define FS_PF_BYTES (8u << 20) /* prefetch this far ahead of a sequential reader, at most a quarter
				 * of the chunk cache (else prefetched chunks evict each other) */
#define FS_PF_BATCH 64         /* chunks queued per refill at most (tiny tensors: many chunks) */
#define FS_PF_QUEUE 512        /* prefetch queue slots; a full queue drops the request */

/* --- per-thread codec context ----------------------------------------------------------------- */

/* FUSE worker threads are libfuse's, so a thread-specific key (with a destructor) rather than a
 * pool: each thread gets its own context on its first decode and frees it when it exits. */
static pthread_key_t cx_key;
static pthread_once_t cx_once = PTHREAD_ONCE_INIT;

/* And a buffer where the base bytes under a chunk that does not line up with its base's (a DeltaDQ
 * fine-tune's ~256 KiB of rows over a lossless base's 128 KiB chunks) are put together. */
static pthread_key_t span_key;

typedef struct span_buf {
	size_t cap;
	uint8_t *p;
} span_buf;

static void cx_destroy(void *p) { cx_ctx_free(p); }
static void span_destroy(void *p)
{
	if (p)
		free(((span_buf *)p)->p);
	free(p);
}
static void cx_key_make(void)
{
	pthread_key_create(&cx_key, cx_destroy);
	pthread_key_create(&span_key, span_destroy);
}

/* Take this thread's span buffer, grown to n bytes, out of its slot while it is in use: loading
 * the base chunks may load other chunks on this thread (a base chain), and those must not get the
 * same buffer. Give it back with span_put. NULL: out of memory. */
static span_buf *span_take(size_t n)
{
	span_buf *b = pthread_getspecific(span_key);
	if (b)
		pthread_setspecific(span_key, NULL);
	else if (!(b = calloc(1, sizeof *b)))
		return NULL;
	if (b->cap < n) {
		uint8_t *p = realloc(b->p, n);
		if (!p) {
			span_destroy(b);
			return NULL;
		}
		b->p = p;
		b->cap = n;
	}
	return b;
}

static void span_put(span_buf *b)
{
	if (b && (pthread_getspecific(span_key) || pthread_setspecific(span_key, b)))
		span_destroy(b);
}

static cx_ctx *thread_cx(void)
{
	cx_ctx *cx = pthread_getspecific(cx_key);
	if (!cx && (cx = cx_ctx_new()) && pthread_setspecific(cx_key, cx)) {
		cx_ctx_free(cx);
		cx = NULL;
	}
	return cx;
}

/* --- snapshots -------------------------------------------------------------------------------- */

ft_snap *fs_snap_newest(fs_mount *m)
{
	pthread_mutex_lock(&m->mu);
	ft_snap *s = m->live;
	s->refs++;
	pthread_mutex_unlock(&m->mu);
	return s;
}

ft_snap *fs_snap_find(fs_mount *m, uint64_t ino, const ft_node **node)
{
	pthread_mutex_lock(&m->mu);
	ft_snap *s = m->live;
	for (; s; s = s->next)
		if ((*node = ft_node_of(s, ino))) {
			s->refs++;
			break;
		}
	pthread_mutex_unlock(&m->mu);
	return s;
}

static void snap_hold(fs_mount *m, ft_snap *s, unsigned n)
{
	pthread_mutex_lock(&m->mu);
	s->refs += (int)n;
	pthread_mutex_unlock(&m->mu);
}

void fs_snap_release(fs_mount *m, ft_snap *s)
{
	pthread_mutex_lock(&m->mu);
	int last = --s->refs == 0;
	if (last) {
		ft_snap **p = &m->live;
		while (*p != s)
			p = &(*p)->next;
		*p = s->next;
	}
	pthread_mutex_unlock(&m->mu);
	if (last)
		ft_free(s);
}

void fs_handle_track(fs_mount *m, fs_handle *h)
{
	pthread_mutex_lock(&m->mu);
	h->prev_open = NULL;
	h->next_open = m->open;
	if (m->open)
		m->open->prev_open = h;
	m->open = h;
	pthread_mutex_unlock(&m->mu);
}

void fs_handle_untrack(fs_mount *m, fs_handle *h)
{
	pthread_mutex_lock(&m->mu);
	if (h->prev_open)
		h->prev_open->next_open = h->next_open;
	else
		m->open = h->next_open;
	if (h->next_open)
		h->next_open->prev_open = h->prev_open;
	pthread_mutex_unlock(&m->mu);
}

/* --- decoding --------------------------------------------------------------------------------- */

typedef struct load_arg {
	fs_mount *m;
	ft_snap *s;
	const rd_ckpt *ck;
	uint32_t f, sg, c;
} load_arg;

/* The base bytes under chunk a->c of a segment with a base: the base chunk itself from the cache
 * when the two line up (*ref holds it), else the overlapping parts of the base chunks put together
 * in a span buffer (*span holds it). */
static int load_base(const load_arg *a, const mf_seg *seg, size_t len, fc_chunk **ref,
		     span_buf **span, const void **out)
{
	const mf_seg *b = rd_base_seg(a->ck, a->f, a->sg);
	uint32_t bf = (uint32_t)seg->base_file, bs = (uint32_t)seg->base_seg, first, last;
	uint64_t off = (uint64_t)a->c * seg->chunk_size;
	int rc;
	rd_base_span(a->ck, a->f, a->sg, a->c, &first, &last);
	if (first == last && off == (uint64_t)first * b->chunk_size && len == rd_chunk_len(b, first)) {
		if ((rc = fs_chunk_get(a->m, a->s, a->ck->base, bf, bs, first, ref)))
			return rc;
		*out = fc_data(*ref);
		return 0;
	}
	if (!(*span = span_take(len)))
		return -ENOMEM;
	for (uint32_t i = first; i <= last; i++) {
		uint64_t bo = (uint64_t)i * b->chunk_size, lo = bo > off ? bo : off;
		uint64_t hi = bo + rd_chunk_len(b, i) < off + len ? bo + rd_chunk_len(b, i) : off + len;
		fc_chunk *e;
		if ((rc = fs_chunk_get(a->m, a->s, a->ck->base, bf, bs, i, &e)))
			return rc;
		memcpy((*span)->p + (lo - off), (const uint8_t *)fc_data(e) + (lo - bo), hi - lo);
		fc_put(a->m->cache, e);
	}
	*out = (*span)->p;
	return 0;
}

static int load_chunk(void *arg, void *dst, size_t len)
{
	const load_arg *a = arg;
	const mf_seg *seg = &a->ck->mf->files[a->f].segs[a->sg];
	fc_chunk *ref = NULL;
	span_buf *span = NULL;
	const void *base = NULL;
	int rc = 0;
	/* len == rd_chunk_len(seg, c): fs_chunk_get sized the entry */
	if (seg->base_file >= 0 && (rc = load_base(a, seg, len, &ref, &span, &base))) {
		span_put(span);
		return rc;
	}
	cx_ctx *cx = thread_cx();
	MDB_txn *txn;
	df_err e;
	if (!cx) {
		rc = df_errf(&e, -ENOMEM, "out of memory for a codec context");
	} else if (!(rc = ft_txn_get(a->s, &txn, &e))) {
		rc = rd_decode_chunk(cx, a->m->st, txn, a->ck, a->f, a->sg, a->c, base, dst, &e);
		ft_txn_put(a->s, txn);
	}
	if (ref)
		fc_put(a->m->cache, ref);
	span_put(span);
	if (rc) {
		fs_log(LOG_ERR, "%s", e.msg);
		rc = rc == -ENOMEM ? -ENOMEM : -EIO;
	}
	return rc;
}

int fs_chunk_get(fs_mount *m, ft_snap *s, const rd_ckpt *ck, uint32_t f, uint32_t sg, uint32_t c,
		 fc_chunk **out)
{
	size_t len = rd_chunk_len(&ck->mf->files[f].segs[sg], c);
	fc_key key = {ck->mf->uid, f, sg, c};
	load_arg a = {m, s, ck, f, sg, c};
	return out ? fc_get(m->cache, &key, len, load_chunk, &a, out)
		   : fc_prefetch(m->cache, &key, len, load_chunk, &a);
}

/* --- prefetch --------------------------------------------------------------------------------- */

static void *prefetcher(void *arg)
{
	fs_mount *m = arg;
	for (;;) {
		pthread_mutex_lock(&m->pf_mu);
		while (!m->pf_len && !m->pf_stop)
			pthread_cond_wait(&m->pf_cv, &m->pf_mu);
		if (!m->pf_len) {
			pthread_mutex_unlock(&m->pf_mu);
			return NULL;
		}
		fs_pf_item it = m->pf_ring[m->pf_head];
		m->pf_head = (m->pf_head + 1) % m->pf_cap;
		m->pf_len--;
		int stopping = m->pf_stop;
		pthread_mutex_unlock(&m->pf_mu);
		/* An error is logged by load_chunk and met again by the read itself. */
		if (!stopping)
			fs_chunk_get(m, it.snap, it.ck, it.file, it.seg, it.chunk, NULL);
		fs_snap_release(m, it.snap);
	}
}

/* The chunks of h's file covering [pos, target), FS_PF_BATCH at most, into items; returns how
 * many, and in *stop the position after the last one. */
static unsigned pf_collect(const fs_handle *h, uint64_t pos, uint64_t target, fs_pf_item *items,
			   uint64_t *stop)
{
	const mf_file *f = &h->node->ck->mf->files[h->node->file];
	unsigned n = 0;
	uint32_t si = mf_seg_at(f, pos);
	while (pos < target && n < FS_PF_BATCH) {
		size_t cpos, len;
		uint32_t c = fs_chunk_at(f, &si, pos, target, &cpos, &len);
		items[n++] = (fs_pf_item){h->snap, h->node->ck, (uint32_t)h->node->file, si, c};
		pos += rd_chunk_len(&f->segs[si], c) - cpos;
	}
	*stop = pos;
	return n;
}

/* Ask the kernel for the blobs of n items (rd_hint_chunk) before anything decodes them: the reads
 * of a whole prefetch window, or of every chunk of one read, then go to the disk together instead
 * of one blob at a time as each decode starts. Only a hint: a busy transaction pool skips it. */
static void pf_hint(ft_snap *snap, const fs_pf_item *items, unsigned n)
{
	MDB_txn *txn;
	df_err e;
	if (!n || ft_txn_get(snap, &txn, &e))
		return;
	for (unsigned i = 0; i < n; i++)
		rd_hint_chunk(snap->st, txn, items[i].ck, items[i].file, items[i].seg, items[i].chunk);
	ft_txn_put(snap, txn);
}

/* Queue n items of snapshot snap to the prefetchers (a full queue drops the rest). */
static void pf_enqueue(fs_mount *m, ft_snap *snap, const fs_pf_item *items, unsigned n)
{
	snap_hold(m, snap, n);
	pthread_mutex_lock(&m->pf_mu);
	unsigned queued = 0;
	for (; queued < n && m->pf_len < m->pf_cap; queued++)
		m->pf_ring[(m->pf_head + m->pf_len++) % m->pf_cap] = items[queued];
	pthread_cond_broadcast(&m->pf_cv);
	pthread_mutex_unlock(&m->pf_mu);
	for (; queued < n; queued++)
		fs_snap_release(m, snap);
}

void fs_prefetch_ahead(fs_mount *m, fs_handle *h, uint64_t off, uint64_t end)
{
	if (!m->pf_nthreads)
		return;
	uint64_t next = atomic_load(&h->next);
	atomic_store(&h->next, end > next ? end : next);
	if (off > next + FS_MAX_READ || off + FS_MAX_READ < next)
		return; /* not sequential */
	const mf_file *f = &h->node->ck->mf->files[h->node->file];
	uint64_t win = ((uint64_t)m->opts.cache_mib << 20) / 4;
	if (win > FS_PF_BYTES)
		win = FS_PF_BYTES;
	uint64_t pf = atomic_load(&h->pf_end), from = pf > end ? pf : end;
	uint64_t target = end + win < f->size ? end + win : f->size;
	if (from >= target || (pf > end && pf - end >= win / 2))
		return; /* enough queued already */
	fs_pf_item items[FS_PF_BATCH];
	uint64_t pos;
	unsigned n = pf_collect(h, from, target, items, &pos);
	/* Another thread may have refilled meanwhile: only the one that moves pf_end queues. */
	if (!n || !atomic_compare_exchange_strong(&h->pf_end, &pf, pos))
		return;
	pf_hint(h->snap, items, n);
	pf_enqueue(m, h->snap, items, n);
}

void fs_prefetch_read(fs_mount *m, fs_handle *h, uint64_t pos, uint64_t end)
{
	fs_pf_item items[FS_PF_BATCH];
	uint64_t stop;
	unsigned n = pf_collect(h, pos, end, items, &stop);
	pf_hint(h->snap, items, n);
	if (n > 1 && m->pf_nthreads) /* items[0]: the caller's */
		pf_enqueue(m, h->snap, items + 1, n - 1);
}

/* --- readahead -------------------------------------------------------------------------------- */

void fs_tune_readahead(fs_mount *m)
{
	if (!m->opts.read_ahead_kb || !m->bdi[0] || atomic_load(&m->ra_done) ||
	    atomic_exchange(&m->ra_done, 1))
		return;
	char path[96];
	snprintf(path, sizeof path, "/sys/class/bdi/%s/read_ahead_kb", m->bdi);
	FILE *f = fopen(path, "w");
	int ok = f && fprintf(f, "%u\n", m->opts.read_ahead_kb) > 0;
	if (f && fclose(f))
		ok = 0;
	fs_log(ok ? LOG_DEBUG : LOG_INFO, "%s %s to %u KiB%s", ok ? "readahead set" :
	       "cannot raise the readahead", path, m->opts.read_ahead_kb,
	       ok ? "" : " (needs root; sequential reads go in 128 KiB requests)");
}

/* --- the generation poller -------------------------------------------------------------------- */

/* Tell the kernel what the new snapshot lost: the topmost vanished names (their subtrees go with
 * them), directories whose listing changed (attributes only: nlink/size), and always the root. */
static void invalidate(fs_mount *m, const ft_snap *old, const ft_snap *cur)
{
	for (uint32_t i = 1; i < old->nnodes; i++) {
		const ft_node *n = &old->nodes[i], *p = &old->nodes[n->parent];
		const ft_node *now = ft_node_of(cur, n->ino);
		int rc = 0;
		if (!now) {
			if (ft_node_of(cur, p->ino))
				rc = fuse_lowlevel_notify_inval_entry(m->se, p->ino, n->name,
								      strlen(n->name));
		} else if (n->file < 0 && (now->nlink != n->nlink || now->size != n->size)) {
			rc = fuse_lowlevel_notify_inval_inode(m->se, n->ino, -1, 0);
		}
		/* -ENOENT: the kernel had nothing cached for it. */
		if (rc && rc != -ENOENT)
			fs_log(LOG_WARNING, "cannot tell the kernel that \"%s\" changed: %s",
			       n->path[0] ? n->path : n->name, strerror(-rc));
	}
	fuse_lowlevel_notify_inval_inode(m->se, FT_ROOT_INO, -1, 0);
}

/* Snapshots kept by open files: follow the newest generation where what they have open is
 * unchanged in it, so that they do not pin the space freed since (tree.h). */
static void move_older(fs_mount *m)
{
	enum { MAX_MOVE = 16 }; /* more live snapshots than this wait for the next poll */
	ft_snap *old[MAX_MOVE], *newest;
	unsigned n = 0;
	pthread_mutex_lock(&m->mu);
	newest = m->live;
	newest->refs++;
	for (ft_snap *s = newest->next; s && n < MAX_MOVE; s = s->next) {
		s->refs++;
		old[n++] = s;
	}
	pthread_mutex_unlock(&m->mu);
	for (unsigned i = 0; i < n; i++) {
		MDB_txn *txn;
		df_err e;
		if (!store_rtxn(m->st, &txn, &e)) {
			size_t id = mdb_txn_id(txn);
			if (store_generation(m->st, txn) != newest->gen)
				store_txn_end(m->st, txn); /* moved on again: the next poll */
			else if (ft_adopt(old[i], txn, newest->gen, newest))
				fs_log(LOG_DEBUG, "an older snapshot now reads at store txn %zu", id);
		}
		fs_snap_release(m, old[i]);
	}
	fs_snap_release(m, newest);
}

/* One poll: a short read transaction tells the generation. Unchanged: the current snapshot adopts
 * the transaction if anything committed since its own began (tree.h: why). Changed: build the new
 * snapshot and swap it in. */
static void poll_once(fs_mount *m, uint64_t *failed_gen, int *resized_logged)
{
	MDB_txn *txn;
	df_err e;
	ft_snap *cur = fs_snap_newest(m), *ns = NULL;
	int rc = store_rtxn(m->st, &txn, &e);
	if (rc) {
		if (rc != -EAGAIN)
			fs_log(LOG_WARNING, "%s", e.msg);
		else if (!*resized_logged)
			fs_log(LOG_WARNING, "%s; this mount keeps showing the store as it was: "
			       "remount to see later changes", e.msg);
		*resized_logged |= rc == -EAGAIN;
		fs_snap_release(m, cur);
		return;
	}
	uint64_t gen = store_generation(m->st, txn);
	if (gen == cur->gen) {
		size_t id = mdb_txn_id(txn);
		unsigned ended = ft_drop_idle(cur);
		if (ended) {
			store_txn_end(m->st, txn);
			fs_log(LOG_DEBUG, "idle: %u read transactions ended", ended);
		} else if (ft_adopt(cur, txn, gen, NULL)) {
			fs_log(LOG_DEBUG, "read transactions renewed at store txn %zu", id);
		}
		fs_snap_release(m, cur);
		move_older(m);
		return;
	}
	store_txn_end(m->st, txn);
	if (gen == *failed_gen) {
		fs_snap_release(m, cur);
		return;
	}
	if ((rc = ft_build(m->st, &ns, &e))) {
		/* Logged once per generation; the next commit retries. */
		fs_log(LOG_ERR, "cannot load the store's new state: %s", e.msg);
		*failed_gen = gen;
		fs_snap_release(m, cur);
		return;
	}
	pthread_mutex_lock(&m->mu);
	ns->refs = 1;
	ns->next = m->live;
	m->live = ns;
	pthread_mutex_unlock(&m->mu);
	fs_log(LOG_INFO, "store generation %llu: %zu checkpoints", (unsigned long long)ns->gen,
	       ns->ncks);
	if (atomic_load(&m->inited))
		invalidate(m, cur, ns);
	fs_snap_release(m, cur); /* this call's reference */
	fs_snap_release(m, cur); /* the list's: open handles keep it alive as long as needed */
	move_older(m);
}

static void *poller(void *arg)
{
	fs_mount *m = arg;
	uint64_t failed_gen = UINT64_MAX;
	int resized_logged = 0;
	pthread_mutex_lock(&m->stop_mu);
	while (!m->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += FS_POLL_MS * 1000000L;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&m->stop_cv, &m->stop_mu, &ts);
		if (m->stop)
			break;
		pthread_mutex_unlock(&m->stop_mu);
		poll_once(m, &failed_gen, &resized_logged);
		pthread_mutex_lock(&m->stop_mu);
	}
	pthread_mutex_unlock(&m->stop_mu);
	return NULL;
}

/* --- lifetime --------------------------------------------------------------------------------- */

int fs_mount_init(fs_mount *m, store *st, const fs_opts *o, df_err *err)
{
	memset(m, 0, sizeof *m);
	m->st = st;
	m->opts = *o;
	m->uid = getuid();
	m->gid = getgid();
	pthread_mutex_init(&m->mu, NULL);
	pthread_mutex_init(&m->stop_mu, NULL);
	pthread_mutex_init(&m->pf_mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->stop_cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&m->pf_cv, NULL);
	pthread_once(&cx_once, cx_key_make);
	if (!(m->cache = fc_new((size_t)o->cache_mib << 20)))
		return df_errf(err, -ENOMEM, "out of memory for the chunk cache");
	int rc = ft_build(st, &m->live, err);
	if (rc)
		return rc;
	m->live->refs = 1;
	return 0;
}

int fs_mount_start(fs_mount *m, struct fuse_session *se, df_err *err)
{
	m->se = se;
	int rc = pthread_create(&m->poller, NULL, poller, m);
	if (rc)
		return df_errf(err, -rc, "cannot start the poller thread: %s", strerror(rc));
	m->poller_on = 1;
	if (!m->opts.prefetchers)
		return 0;
	m->pf_cap = FS_PF_QUEUE;
	if (!(m->pf_ring = calloc(m->pf_cap, sizeof *m->pf_ring)) ||
	    !(m->pf_threads = calloc(m->opts.prefetchers, sizeof *m->pf_threads)))
		return df_errf(err, -ENOMEM, "out of memory for the prefetch threads");
	for (; m->pf_nthreads < m->opts.prefetchers; m->pf_nthreads++)
		if ((rc = pthread_create(&m->pf_threads[m->pf_nthreads], NULL, prefetcher, m)))
			return df_errf(err, -rc, "cannot start a prefetch thread: %s", strerror(rc));
	return 0;
}

void fs_mount_fini(fs_mount *m)
{
	pthread_mutex_lock(&m->stop_mu);
	m->stop = 1;
	pthread_cond_broadcast(&m->stop_cv);
	pthread_mutex_unlock(&m->stop_mu);
	pthread_mutex_lock(&m->pf_mu);
	m->pf_stop = 1;
	pthread_cond_broadcast(&m->pf_cv);
	pthread_mutex_unlock(&m->pf_mu);
	if (m->poller_on)
		pthread_join(m->poller, NULL);
	/* The prefetchers drain the queue (releasing its references) before they exit. */
	for (unsigned i = 0; i < m->pf_nthreads; i++)
		pthread_join(m->pf_threads[i], NULL);
	free(m->pf_threads);
	free(m->pf_ring);
	/* After the session ends no release will come for handles still open: free them, and every
	 * snapshot regardless of references. */
	while (m->open) {
		fs_handle *h = m->open;
		m->open = h->next_open;
		free(h);
	}
	while (m->live) {
		ft_snap *s = m->live;
		m->live = s->next;
		ft_free(s);
	}
	fc_free(m->cache);
	pthread_mutex_destroy(&m->mu);
	pthread_mutex_destroy(&m->stop_mu);
	pthread_mutex_destroy(&m->pf_mu);
	pthread_cond_destroy(&m->stop_cv);
	pthread_cond_destroy(&m->pf_cv);
}
