/*
 * store.h -- a deltafs store: one directory holding one LMDB environment.
 *
 *   STORE/data.mdb, STORE/lock.mdb   LMDB, named databases:
 *     meta   "format" -> u32 format version (STORE_FORMAT), "gen" -> u64 generation (bumped by every
 *            commit that adds, replaces or removes a checkpoint), "uid" -> u64 last manifest uid
 *     blobs  16-byte XXH3-128 of the bytes -> the bytes (codec blobs, see codec/codec.h)
 *     refs   16-byte hash -> u64 reference count (number of chunk entries, over all manifests,
 *            naming the blob); a blob at 0 is garbage for store_gc
 *     ckpt   checkpoint name -> encoded manifest (index/manifest.h)
 *   STORE/ingest.lock                flock: ingests hold it shared, gc exclusive, so gc never frees
 *                                    the blobs of an ingest still running
 *
 * Blobs are written in batches (store_put_batch) before the manifest that names them commits in one
 * write transaction (store_commit): a checkpoint appears whole or not at all, and the blobs of an
 * interrupted ingest stay at refcount 0 until gc frees them.
 *
 * The map is reserved large (virtual address space only: the file grows as pages are written) and
 * doubled on MDB_MAP_FULL, so stores of hundreds of GB work without tuning.
 *
 * Read transactions are MDB_NOTLS: a txn may move between threads, but is used by one at a time.
 */
#ifndef DELTAFS_INDEX_STORE_H
#define DELTAFS_INDEX_STORE_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "manifest.h"

/* Format versions: 1, the first; 2, lossless blobs may be codec version 2 (a zstd frame per byte
 * plane, codec/lossless.h). This deltafs reads 1 and 2, and a writer raises 1 to 2 on open. */
#define STORE_FORMAT 2
#define STORE_FORMAT_MIN 1

typedef struct store store;

enum {
	STORE_RDONLY = 1 << 0, /* open read-only (mount, ls, info, export, verify) */
	STORE_CREATE = 1 << 1, /* create the directory and environment if absent (init, add) */
	STORE_RANDOM = 1 << 2, /* blobs are read at random (the mount): no kernel readahead on
				* the map; each blob's pages are asked for in one request instead
				* (store_blob_get, store_blob_hint) */
};

/* Open the store in directory dir. Fails with a clear message if dir is missing (without
 * STORE_CREATE), is not a deltafs store, or holds an unknown format version. */
int store_open(const char *dir, unsigned flags, store **out, df_err *err);
void store_close(store *s);

const char *store_path(const store *s);
MDB_env *store_env(store *s);

/* Begin a read transaction (MDB_RDONLY); end it with store_txn_end, from any thread. While any
 * transaction of this process is open, the map cannot be grown by this process (store_put_batch
 * waits for them), so keep read transactions short, except for deliberate snapshots. If another
 * process grew the map (MDB_MAP_RESIZED), the new size is adopted when this process has no other
 * transaction open, else -EAGAIN with a message (retry after ending the others). */
int store_rtxn(store *s, MDB_txn **txn, df_err *err);
void store_txn_end(store *s, MDB_txn *txn);

/* Zero-copy lookup of a blob: *p points into the map and stays valid until txn ends. Returns 0,
 * -ENOENT, or -EIO. Does not check the hash (store_blob_check does). With STORE_RANDOM, also asks
 * the kernel for the blob's pages (store_blob_hint). */
int store_blob_get(store *s, MDB_txn *txn, const uint8_t hash[16], const void **p, size_t *n);

/* Ask the kernel to start reading blob hash's pages (madvise MADV_WILLNEED), so that a decode
 * later finds them in memory: the mount calls it for the chunks it is about to prefetch, whose
 * reads then overlap. Harmless when the pages are cached already; a blob data.mdb lacks goes to
 * the fetch-ahead hook (store_set_fetch), if any, else is ignored. */
void store_blob_hint(store *s, MDB_txn *txn, const uint8_t hash[16]);

/* Where blobs absent from data.mdb come from: a store cloned from a remote (index/tier.h) holds its
 * manifests but fetches blobs on demand. fetch(ud, hash, ...) returns a malloc'd copy of the blob
 * (the caller frees it) already checked against hash, or a negative errno with err filled; it must
 * be callable from several threads at once. ahead(ud, hash), which may be NULL, hears of a blob
 * that a reader will want soon (store_blob_hint), so that its fetch can start now; it must not
 * wait on the fetch. Set them once, before the store is shared. */
typedef int (*store_fetch_fn)(void *ud, const uint8_t hash[16], void **p, size_t *n, df_err *err);
typedef void (*store_ahead_fn)(void *ud, const uint8_t hash[16]);
void store_set_fetch(store *s, store_fetch_fn fn, store_ahead_fn ahead, void *ud);
int store_has_fetch(const store *s);

/* A blob store_blob_get did not find, from the fetch hook: 0 with a malloc'd *p (caller frees),
 * -ENOENT if the store has no hook, or the hook's error. */
int store_blob_fetch(store *s, const uint8_t hash[16], void **p, size_t *n, df_err *err);

/* 0 if XXH3-128(p, n) == hash, else -EIO. */
int store_blob_check(const uint8_t hash[16], const void *p, size_t n);

/* The hash of bytes as the store keys them. */
void store_hash(const void *p, size_t n, uint8_t out[16]);

/* Load a checkpoint's manifest. -ENOENT if absent, -EBADMSG if corrupt (err names the checkpoint). */
int store_ckpt_get(store *s, MDB_txn *txn, const char *name, manifest **out, df_err *err);

/* The uid of checkpoint name's manifest in txn, without decoding it (manifest.h: mf_peek_uid):
 * whether a manifest decoded earlier still describes that checkpoint. Returns 0, -ENOENT (no such
 * checkpoint), -EBADMSG or -EIO. */
int store_ckpt_uid(store *s, MDB_txn *txn, const char *name, uint64_t *uid);

/* Names of all checkpoints, sorted; *names is a malloc'd array of malloc'd strings (free with
 * store_names_free). */
int store_ckpt_list(store *s, MDB_txn *txn, char ***names, size_t *n, df_err *err);
void store_names_free(char **names, size_t n);

/* The store's generation: changes whenever the set of checkpoints changes. */
uint64_t store_generation(store *s, MDB_txn *txn);

/* Bytes in use by the environment (pages in use * page size) and the data file's size. */
int store_usage(store *s, uint64_t *used, uint64_t *file_size);

/* Recount every blob's references from all manifests and compare with the refs table; also check
 * that each referenced blob exists (in data.mdb; with a fetch hook set, absent blobs are the
 * remote's to hold and are not counted). Mismatches are reported by kind, one bad(ud, message) line per
 * kind with its count. Returns the number of mismatches (at most INT_MAX) or a negative errno. */
int store_check_refs(store *s, MDB_txn *txn, void (*bad)(void *ud, const char *msg), void *ud,
		     df_err *err);

/* --- writing ---------------------------------------------------------------------------------- */

/* One blob for store_put_batch. */
typedef struct store_blob {
	const void *p;
	size_t n;
	uint8_t hash[16]; /* filled by the caller with store_hash */
} store_blob;

/* Write blobs that are absent (a present blob writes nothing) in one write txn, refcount 0 for new
 * ones. Grows the map on MDB_MAP_FULL and retries. *written (may be NULL) gets the bytes actually
 * added. The caller must hold the ingest lock (store_ingest_lock). */
int store_put_batch(store *s, const store_blob *b, size_t n, uint64_t *written, df_err *err);

/* Commit manifest m as checkpoint m->name in one write txn: checks every blob exists, increments
 * their refcounts, assigns m->uid, sets m->ctime_ns if zero, bumps the generation. If the name
 * exists: -EEXIST unless replace, in which case the old manifest's refs are dropped in the same txn
 * (and refused with -EBUSY if other checkpoints use it as their base). If m->base is set, it must
 * exist. */
int store_commit(store *s, manifest *m, int replace, df_err *err);

/* Commit manifests ms[0..n), taken from a remote (index/tier.h), whose blobs need not be in
 * data.mdb, in this order (bases before the checkpoints using them) and in one write txn: all or
 * none. Each as store_commit with replace, except that a blob without a refcount record gets one
 * (its bytes stay remote until fetched). Each m->uid is assigned; m->ctime_ns is kept. */
int store_adopt(store *s, manifest **ms, size_t n, df_err *err);

/* Remove a checkpoint: -ENOENT if absent, -EBUSY (message names them) if others use it as base.
 * Its blobs' refcounts drop; gc frees them. */
int store_rm(store *s, const char *name, df_err *err);

/* Delete every blob with refcount 0. freed_bytes and freed_blobs may be NULL. Takes the ingest lock
 * exclusively: -EBUSY with a message if an ingest is running. */
int store_gc(store *s, uint64_t *freed_bytes, uint64_t *freed_blobs, df_err *err);

/* Shared ingest lock (blocks gc). Returns 0 or negative errno; released by store_ingest_unlock or by
 * process exit. */
int store_ingest_lock(store *s, df_err *err);
void store_ingest_unlock(store *s);

#endif
