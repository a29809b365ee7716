/*
 * remote.h -- the seam between a store and a distributed object store holding its blobs,
 * manifests and catalog: one small backend interface (rb_), implemented over Ceph RADOS
 * (index/rados.c, built when meson finds librados) and over S3 (index/s3.c, built when meson finds
 * libcurl: radosgw, AWS, any S3-compatible service). deltafs speaks no network protocol of its own.
 *
 * What a remote holds (every name is an object in one RADOS pool and namespace, or a key under one
 * S3 bucket and prefix):
 *   <32 hex>     a blob, named by the hex of its XXH3-128; written once (create-only), never changed
 *   m.<32 hex>   a manifest (index/manifest.h encoding, uid zeroed), named by the XXH3-128 of those
 *                bytes; written once, never changed
 *   catalog      the published checkpoints: a map checkpoint name -> manifest object name
 *                (RADOS: the object's omap, which rb_publish updates atomically; S3: one empty
                object per entry under catalog/, written entry by entry: see s3.c)
 * Content-addressed objects make pushes idempotent and let two hosts push the same blob at once:
 * the second create fails with -EEXIST, which a pusher takes as "already there".
 *
 * Every call is safe from several threads at once on one rb_backend, and bounded in time: an
 * unreachable cluster gives -ETIMEDOUT / -EIO after the timeout, never a hang.
 */
#ifndef DELTAFS_INDEX_REMOTE_H
#define DELTAFS_INDEX_REMOTE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "err.h"

#define RB_CATALOG "catalog"
/* Default bound on one remote operation, seconds (DELTAFS_REMOTE_TIMEOUT overrides). Why 30: a
 * restarted OSD serves again once the monitors mark it up, ~15 s after it died on the test
 * cluster; a shorter bound turns every such restart into EIO for the reads waiting on it. */
#define RB_TIMEOUT_S 30

typedef struct rb_backend rb_backend;

/* Where a remote is and how to reach it. RADOS: url "rados:POOL[/NAMESPACE]"; id the client name
 * (cephx user without "client.", NULL: "admin"); conf a ceph.conf path (NULL: CEPH_CONF or
 * /etc/ceph/ceph.conf, keyring as that file says). S3: url "s3://BUCKET[/PREFIX]"; endpoint
 * (NULL: https://s3.REGION.amazonaws.com); region (NULL: us-east-1); keys the path of a 0600 file
 * holding them (NULL: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN). No field ever
 * holds a secret. */
typedef struct rb_config {
	const char *url, *id, *conf;
	const char *endpoint, *region, *keys;
} rb_config;

/* One catalog entry. */
typedef struct rb_entry {
	char *name; /* checkpoint name */
	char *oid;  /* manifest object name */
} rb_entry;

typedef struct rb_ops {
	/* Connect if not connected yet (see rb_probe). */
	int (*probe)(rb_backend *b, df_err *err);
	/* Read a whole object into a malloc'd buffer *p of *n bytes (caller frees). -ENOENT if absent. */
	int (*get)(rb_backend *b, const char *oid, void **p, size_t *n, df_err *err);
	/* Write a whole object. create_only: -EEXIST if it exists (nothing written); else replace it.
	 * Either way the object is written whole or not at all, and durable when this returns 0. */
	int (*put)(rb_backend *b, const char *oid, const void *p, size_t n, int create_only,
		   df_err *err);
	/* Size and modification time of an object; -ENOENT if absent. */
	int (*stat)(rb_backend *b, const char *oid, uint64_t *size, time_t *mtime, df_err *err);
	/* Call fn(ud, oid) for every object; a non-zero return from fn stops and is returned. */
	int (*list)(rb_backend *b, int (*fn)(void *ud, const char *oid), void *ud, df_err *err);
	/* Mark an existing object as in use now (its modification time: what remote gc's grace
	 * period counts from); -ENOENT if absent. */
	int (*touch)(rb_backend *b, const char *oid, df_err *err);
	/* Delete an object; -ENOENT if absent. */
	int (*remove)(rb_backend *b, const char *oid, df_err *err);
	/* All catalog entries, sorted by name (free with rb_entries_free); none if no catalog yet. */
	int (*catalog)(rb_backend *b, rb_entry **out, size_t *n, df_err *err);
	/* Set n catalog entries: other entries, including ones another host publishes at the same
	 * moment, are kept. RADOS: one atomic update. S3: entry by entry in the order given (callers
	 * put bases before their fine-tunes), each atomic, the batch not. */
	int (*publish)(rb_backend *b, const rb_entry *e, size_t n, df_err *err);
	/* Delete catalog entries e[0..n) where they still name e[i].oid, the version the caller
	 * read: a name that another host published again in another version since then stays
	 * (-ECANCELED; RADOS: nothing deleted, the update is one atomic op; S3: entries already
	 * removed stay removed), so that removing a name never undoes a publish it did not see.
	 * Names absent by now are ignored. */
	int (*unpublish)(rb_backend *b, const rb_entry *e, size_t n, df_err *err);
	/* Call fn(ud), from a librados thread, whenever notify is called on the catalog (another host
	 * published) or the watch is lost (the cluster went away: call watch again later). Returns 0
	 * at once if the watch is already in place; -ENOENT while nothing is published; -ENOTSUP
	 * where the store has no notifications (S3: callers poll). One watcher per backend. */
	int (*watch)(rb_backend *b, void (*fn)(void *ud), void *ud, df_err *err);
	/* Tell the catalog's watchers that it changed; waits at most a second for their answers.
	 * -ENOTSUP where there are none (S3). */
	int (*notify)(rb_backend *b, df_err *err);
	void (*close)(rb_backend *b);
} rb_ops;

struct rb_backend {
	const rb_ops *ops;
	char *url; /* as configured, for messages */
};

/* Open the backend cfg->url names. Connecting is deferred to the first call that needs the
 * cluster, so opening works while it is unreachable; rb_probe connects now. -EINVAL for a URL
 * this build does not know, -ENOTSUP for a backend it was built without. */
int rb_open(const rb_config *cfg, rb_backend **out, df_err *err);
void rb_close(rb_backend *b);

/* Connect now (if not yet): 0, or the error that the next operation would give. */
int rb_probe(rb_backend *b, df_err *err);

void rb_entries_free(rb_entry *e, size_t n);

/* The object name of a blob: 32 lowercase hex digits and a NUL. */
void rb_blob_oid(const uint8_t hash[16], char out[33]);

/* The timeout of one remote operation, seconds (RB_TIMEOUT_S or $DELTAFS_REMOTE_TIMEOUT). */
unsigned rb_timeout_s(void);

#endif
