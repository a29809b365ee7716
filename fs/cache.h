/*
 * cache.h -- the mount's chunk cache: decoded chunks shared by every reader, bounded in bytes.
 *
 * A chunk is the unit a read decodes (index/manifest.h): the mount keys it by (manifest uid, file,
 * segment, chunk). A uid names one committed manifest forever, so a key's bytes never change and
 * entries need no invalidation: a removed checkpoint's chunks just age out. The base chunks a
 * fine-tune needs are ordinary entries under the base's uid, so a base chunk decodes once for all
 * the fine-tunes built on it.
 *
 * Why the states: a model loader faults many pages of one chunk at once, from several threads.
 * The first reader inserts the entry LOADING and decodes outside the lock; the others find it
 * LOADING and sleep until it is READY (or FAILED), so a chunk is decoded once however many wait.
 * A failed load is unlinked at once, so the next read tries again (and logs again) rather than
 * caching an error.
 *
 * Entries are refcounted: a reader holds its references while the kernel copies the reply out of
 * the entries' buffers (fuse_reply_iov), so replies need no bounce copy. Only unreferenced READY
 * entries sit on the LRU list and can be evicted; the byte bound counts every entry (plus a fixed
 * overhead per entry, so a model of many tiny tensors is bounded too), so the cache can exceed it
 * only by what readers hold pinned at that moment.
 *
 * One mutex guards the table and the list; it is held only for pointer work, never while decoding.
 */
#ifndef DELTAFS_FS_CACHE_H
#define DELTAFS_FS_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct fc_key {
	uint64_t uid;
	uint32_t file, seg, chunk;
} fc_key;

typedef struct fcache fcache;
typedef struct fc_chunk fc_chunk;

/* Fill dst (len bytes) with the chunk's bytes; return 0 or a negative errno. Called without the
 * cache lock, by the thread that inserted the key. */
typedef int (*fc_load_fn)(void *arg, void *dst, size_t len);

typedef struct fc_stats {
	uint64_t hits, misses, waits, evictions, failures;
	uint64_t bytes, entries; /* now, all states */
} fc_stats;

/* A cache bounded to max_bytes (> 0). Returns NULL on allocation failure. */
fcache *fc_new(size_t max_bytes);

/* Free the cache; every reference must have been put. */
void fc_free(fcache *c);

/* Get the chunk key (len bytes), loading it with load(arg) if absent; waits if another thread is
 * loading it. On success *out holds a reference (release with fc_put) and 0 is returned; else the
 * load's negative errno (also for the waiters of a failed load) or -ENOMEM. */
int fc_get(fcache *c, const fc_key *key, size_t len, fc_load_fn load, void *arg, fc_chunk **out);

/* Prefetch: load key if it is neither cached nor loading, else return at once. Returns 0, or the
 * load's negative errno. Leaves no reference behind. */
int fc_prefetch(fcache *c, const fc_key *key, size_t len, fc_load_fn load, void *arg);

/* Release a reference taken by fc_get. */
void fc_put(fcache *c, fc_chunk *e);

/* The bytes of a referenced READY chunk. */
const void *fc_data(const fc_chunk *e);

void fc_get_stats(fcache *c, fc_stats *out);

#endif
