/*
 * tier.h -- a store backed by a remote (index/remote.h): push, pull/clone, and blobs fetched on
 * demand into a bounded local cache.
 *
 *   STORE/remote   the remote's configuration, 0600, one "key value" line each: url, and
 *                  optionally id (cephx client) and conf (ceph.conf path). No secrets: the cephx
 *                  key stays in the keyring ceph.conf names.
 *   STORE/cache/   blobs fetched from the remote, one file per blob named by its hex hash, bounded
 *                  in bytes, evicted least recently used. data.mdb is never written by a reader (a
 *                  mount included): a clone's data.mdb holds manifests and refcounts only, unless
 *                  cloned with --all.
 *
 * Push order is what makes the catalog safe to read: every blob the pushed checkpoints name is
 * durable in the remote before their manifests are written, and every manifest before the one
 * atomic catalog update that publishes them, so a host that sees a name in the catalog can read
 * all of it. Objects are content-addressed and created exclusively, so pushers never overwrite
 * each other, and a push repeated after a failure sends only what is missing.
 *
 * A fetch (the store's fetch hook, store_set_fetch) looks in the cache, else reads the object from
 * the remote, checks it against its hash (a damaged object gives -EIO, never bytes), stores it in
 * the cache and returns it. Threads asking for one blob at once share one fetch. A blob a reader
 * will want soon (store_blob_hint: the mount's prefetch window) is fetched ahead, up to 16 at once,
 * by threads that do nothing else, so a sequential reader keeps that many requests in flight while
 * the mount's threads decode; a reader that wants a blob still waiting in that queue fetches it
 * itself.
 */
#ifndef DELTAFS_INDEX_TIER_H
#define DELTAFS_INDEX_TIER_H

#include <stdint.h>

#include "err.h"
#include "remote.h"
#include "store.h"

#define RT_CACHE_DEFAULT (16ull << 30) /* cache bound when none is given, bytes */
#define RT_THREADS 8                   /* parallel remote operations of push and clone --all */
#define RT_MANIFEST_THREADS 16         /* parallel manifest reads of pull, clone, rm and gc */
#define RT_GC_GRACE (24u * 3600)       /* default grace period of remote gc, seconds */

typedef struct rt_tier rt_tier;

/* Record cfg as the remote of the store in directory dir (STORE/remote, 0600, replaced
 * atomically). Checks that the URL is one this build can open; does not connect. */
int rt_config_set(const char *dir, const rb_config *cfg, df_err *err);

/* The remote tier of store s: 0 and *out NULL if s has no remote; else opens the backend (without
 * connecting), indexes STORE/cache (bounded by cache_bytes; 0: RT_CACHE_DEFAULT) and sets s's fetch
 * hook. Close with rt_close before store_close. */
int rt_open(store *s, uint64_t cache_bytes, rt_tier **out, df_err *err);
void rt_close(rt_tier *t);

rb_backend *rt_backend(rt_tier *t);

typedef struct rt_stats {
	uint64_t fetches, fetch_bytes; /* objects read from the remote */
	uint64_t ahead;                /* fetches started ahead of their reader (store_blob_hint) */
	uint64_t shared;               /* reads that waited for another thread's fetch */
	uint64_t hits;                 /* blobs found in STORE/cache */
	uint64_t evictions;            /* blobs removed from STORE/cache to keep its bound */
	uint64_t failures;             /* fetches that failed (unreachable, missing, bad hash) */
} rt_stats;

/* Counters since rt_open (this process only). */
void rt_get_stats(rt_tier *t, rt_stats *out);

/* Progress of push / fetch_all: called from the calling thread about every 200 ms and at the end. */
typedef void (*rt_progress_fn)(void *ud, uint64_t done, uint64_t total);

typedef struct rt_push_stats {
	uint64_t ckpts;      /* checkpoints published now (of the named ones and their bases) */
	uint64_t unchanged;  /* ...and those the catalog published as they are already */
	uint64_t blobs_sent, bytes_sent; /* blobs the remote lacked, written now */
	uint64_t blobs_had, bytes_had;   /* blobs the remote had already */
	uint64_t manifests_sent;
} rt_push_stats;

/* Push checkpoints names[0..n) (all if n == 0) and their base chains to the remote, then publish
 * them in one catalog update and notify the catalog's watchers (rt_wait_change). A checkpoint
 * not named in names (a base, or any when n == 0) that the catalog publishes in another version
 * is refused (-EEXIST, before anything is sent): a stale store must not undo another host's push;
 * naming it replaces it. Objects the remote has already are touched (their mtime renewed) so
 * that rt_gc leaves them alone until the push has published them. threads: parallel uploads (0: RT_THREADS). progress may be NULL. */
int rt_push(store *s, rt_tier *t, const char *const *names, size_t n, unsigned threads,
	    rt_progress_fn progress, void *ud, rt_push_stats *st, df_err *err);

typedef struct rt_pull_stats {
	uint64_t added, replaced, unchanged;
} rt_pull_stats;

/* Bring the remote's catalog into s (opened writable): every published checkpoint whose manifest
 * differs from the local one (or is absent locally) is fetched (RT_MANIFEST_THREADS at once),
 * checked against its object name and committed with store_adopt, bases first, all in one
 * transaction (all or none: a manifest that cannot be read fails the pull, naming its checkpoint). Local
 * checkpoints the catalog lacks are kept; a local `deltafs rm` of a published one is undone. */
int rt_pull(store *s, rt_tier *t, rt_pull_stats *st, df_err *err);

/* Wait until the remote's catalog may have changed or `seconds` pass, whichever comes first: a
 * push or unpublish from any host notifies the catalog's watchers (RADOS watch/notify), so a
 * loop of rt_wait_change + rt_pull follows the remote within a round trip, and polls anyway in
 * case a notification was lost. Returns 1 if notified, 0 on timeout. */
int rt_wait_change(rt_tier *t, unsigned seconds);

/* Fetch every blob that s's checkpoints name and data.mdb lacks into data.mdb (s writable):
 * a full local copy, as `deltafs clone --all` makes. *bytes (may be NULL) gets the bytes fetched. */
int rt_fetch_all(store *s, rt_tier *t, unsigned threads, rt_progress_fn progress, void *ud,
		 uint64_t *bytes, df_err *err);

/* Remove checkpoint name from the remote's catalog (one atomic update, watchers notified); its
 * objects stay until rt_gc. -ENOENT if not published, -EBUSY (naming them) while published checkpoints use it as
 * their base. Hosts that cloned it keep their copy until they `deltafs rm` it. */
int rt_unpublish(rt_tier *t, const char *name, df_err *err);

typedef struct rt_gc_stats {
	uint64_t removed, removed_bytes; /* objects deleted */
	uint64_t kept;                   /* objects a published manifest names (or a manifest) */
	uint64_t young;                  /* unreferenced, but newer than the grace period */
} rt_gc_stats;

/* Remote garbage collection: delete every blob and manifest object that no published checkpoint
 * names and that was last written more than grace_s seconds ago. A push writes or touches every
 * object it relies on before publishing (rt_push), so a push in flight is never robbed as long as
 * it takes less than grace_s. The catalog object and objects not named the way deltafs names them
 * are left alone. */
int rt_gc(rt_tier *t, unsigned grace_s, rt_gc_stats *st, df_err *err);

#endif
