/*
 * store.c -- the LMDB environment behind a store: open/format check, blobs by hash, refcounts,
 * checkpoint commit/rm, gc, and map growth.
 *
 * Map growth: mdb_env_set_mapsize is only safe while this process has no transaction open, so every
 * transaction of the process holds `txlock` shared and growth takes it exclusively between two
 * attempts of the same batch. The initial map is large (STORE_MAP_INITIAL: address space only, the
 * file grows as pages are written), so growth and the MDB_MAP_RESIZED it causes in other processes
 * are rare; DELTAFS_MAPSIZE (bytes) overrides it so tests can exercise growth.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <xxhash.h>

#define STORE_MAP_INITIAL (1ull << 40) /* 1 TiB of address space */
#define STORE_MAX_READERS 1024         /* mount threads + prefetchers + CLIs at once */
#define STORE_PAGE 4096                /* madvise granularity (at most the page size) */

enum { DB_META, DB_BLOBS, DB_REFS, DB_CKPT, DB_N };
static const char *const db_names[DB_N] = {"meta", "blobs", "refs", "ckpt"};

struct store {
	MDB_env *env;
	MDB_dbi dbi[DB_N];
	char *path;
	int rdonly;
	int random; /* STORE_RANDOM */
	int lock_fd; /* ingest.lock, -1 until first needed */
	store_fetch_fn fetch; /* blobs absent from data.mdb (a clone), or NULL */
	store_ahead_fn ahead; /* ...and where hints of those go, or NULL */
	void *fetch_ud;
	pthread_rwlock_t txlock;
};

const char *store_path(const store *s) { return s->path; }
MDB_env *store_env(store *s) { return s->env; }

/* LMDB reports a short write as EIO (mdb_page_flush), and a write runs short when the file
 * system fills up in the middle of it: tell that apart from a failing disk by asking it. */
static int fs_full(const store *s)
{
	struct statvfs v;
	if (statvfs(s->path, &v))
		return 0;
	uint64_t left = (uint64_t)(geteuid() ? v.f_bavail : v.f_bfree) * v.f_frsize;
	return left < (1u << 20);
}

static int lmdb_err(df_err *err, int rc, const char *what, const store *s)
{
	if (rc == EIO && fs_full(s))
		rc = ENOSPC;
	int e = rc == MDB_MAP_FULL ? -ENOSPC : rc == MDB_NOTFOUND ? -ENOENT : rc > 0 ? -rc : -EIO;
	if (rc == ENOSPC || rc == EDQUOT)
		return df_errf(err, -ENOSPC, "%s: %s: no space left on the device holding the store",
			       s->path, what);
	return df_errf(err, e, "%s: %s: %s", s->path, what, mdb_strerror(rc));
}

static int meta_get_u64(store *s, MDB_txn *txn, const char *key, uint64_t *v)
{
	MDB_val k = {strlen(key), (void *)key}, d;
	int rc = mdb_get(txn, s->dbi[DB_META], &k, &d);
	if (rc)
		return rc;
	if (d.mv_size != 8)
		return MDB_CORRUPTED;
	memcpy(v, d.mv_data, 8);
	return 0;
}

static int meta_put_u64(store *s, MDB_txn *txn, const char *key, uint64_t v)
{
	MDB_val k = {strlen(key), (void *)key}, d = {8, &v};
	return mdb_put(txn, s->dbi[DB_META], &k, &d, 0);
}

static uint64_t map_initial(void)
{
	const char *e = getenv("DELTAFS_MAPSIZE");
	if (e && *e) {
		unsigned long long v = strtoull(e, NULL, 0);
		if (v >= (1u << 20))
			return v;
	}
	return STORE_MAP_INITIAL;
}

/* Create the named databases and the meta records of a new store, or check an existing one. */
static int open_dbs(store *s, int create, df_err *err)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(s->env, NULL, s->rdonly ? MDB_RDONLY : 0, &txn);
	if (rc)
		return lmdb_err(err, rc, "cannot begin a transaction", s);
	for (int i = 0; i < DB_N; i++) {
		rc = mdb_dbi_open(txn, db_names[i], create ? MDB_CREATE : 0, &s->dbi[i]);
		if (rc == MDB_NOTFOUND) {
			mdb_txn_abort(txn);
			return df_errf(err, -ENOENT, "%s: not a deltafs store (LMDB environment without "
				       "a \"%s\" table); create one with `deltafs init %s`",
				       s->path, db_names[i], s->path);
		}
		if (rc) {
			mdb_txn_abort(txn);
			return lmdb_err(err, rc, "cannot open tables", s);
		}
	}
	uint64_t fmt;
	MDB_stat meta, ckpt;
	rc = meta_get_u64(s, txn, "format", &fmt);
	/* Initialise only an empty environment: a store whose format record is missing (damaged)
	 * must not be taken for a new one, which would reset its generation and manifest uids. */
	if (rc == MDB_NOTFOUND && create && !mdb_stat(txn, s->dbi[DB_META], &meta) &&
	    !mdb_stat(txn, s->dbi[DB_CKPT], &ckpt) && !meta.ms_entries && !ckpt.ms_entries) {
		rc = meta_put_u64(s, txn, "format", STORE_FORMAT);
		if (!rc)
			rc = meta_put_u64(s, txn, "gen", 1);
		if (!rc)
			rc = meta_put_u64(s, txn, "uid", 0);
		if (!rc)
			rc = mdb_txn_commit(txn);
		else
			mdb_txn_abort(txn);
		return rc ? lmdb_err(err, rc, "cannot initialise the store", s) : 0;
	}
	/* A writer brings an older store up to this format before it adds anything in it: an older
	 * deltafs then refuses the store with a clear message instead of meeting blobs it cannot
	 * decode. Every older format is a subset of this one, so nothing else is rewritten. */
	if (!rc && fmt >= STORE_FORMAT_MIN && fmt < STORE_FORMAT && !s->rdonly) {
		rc = meta_put_u64(s, txn, "format", STORE_FORMAT);
		if (rc) {
			mdb_txn_abort(txn);
			return lmdb_err(err, rc, "cannot update the format record", s);
		}
	}
	/* Commit, not abort: the DBI handles opened in this txn survive only a commit. */
	if (rc)
		mdb_txn_abort(txn);
	else if ((rc = mdb_txn_commit(txn)))
		return lmdb_err(err, rc, "cannot open tables", s);
	if (rc == MDB_NOTFOUND)
		return df_errf(err, -ENOENT, "%s: not a deltafs store (no format record)", s->path);
	if (rc)
		return lmdb_err(err, rc, "cannot read the format record", s);
	if (fmt < STORE_FORMAT_MIN || fmt > STORE_FORMAT)
		return df_errf(err, -EPROTO, "%s: store format version %llu is not supported by this "
			       "deltafs (it reads versions %d to %d); use a matching deltafs release",
			       s->path, (unsigned long long)fmt, STORE_FORMAT_MIN, STORE_FORMAT);
	return 0;
}

int store_open(const char *dir, unsigned flags, store **out, df_err *err)
{
	struct stat st;
	int create = !!(flags & STORE_CREATE);
	*out = NULL;
	if (stat(dir, &st)) {
		if (errno != ENOENT || !create)
			return df_errf(err, -errno, "%s: %s", dir, strerror(errno));
		if (mkdir(dir, 0700))
			return df_errf(err, -errno, "%s: cannot create the store directory: %s", dir,
				       strerror(errno));
	} else if (!S_ISDIR(st.st_mode)) {
		return df_errf(err, -ENOTDIR, "%s: not a directory (a store is a directory)", dir);
	}
	char data[PATH_MAX];
	snprintf(data, sizeof data, "%s/data.mdb", dir);
	if (!create && access(data, F_OK))
		return df_errf(err, -ENOENT, "%s: not a deltafs store (no data.mdb); create one with "
			       "`deltafs init %s`", dir, dir);

	store *s = calloc(1, sizeof *s);
	if (!s || !(s->path = strdup(dir))) {
		free(s);
		return df_errf(err, -ENOMEM, "out of memory");
	}
	s->rdonly = !!(flags & STORE_RDONLY);
	s->random = !!(flags & STORE_RANDOM);
	s->lock_fd = -1;
	pthread_rwlock_init(&s->txlock, NULL);
	int rc = mdb_env_create(&s->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(s->env, DB_N);
	if (!rc)
		rc = mdb_env_set_maxreaders(s->env, STORE_MAX_READERS);
	if (!rc)
		rc = mdb_env_set_mapsize(s->env, map_initial());
	if (!rc)
		rc = mdb_env_open(s->env, dir, MDB_NOTLS | (s->rdonly ? MDB_RDONLY : 0) |
				  (s->random ? MDB_NORDAHEAD : 0), 0600);
	/* A process killed inside a read transaction (a SIGKILLed deltafs-add, export, verify)
	 * leaves its reader slot behind while another process keeps the environment open (a
	 * mount): the slot pins that old snapshot, so no page freed since (by gc) is ever reused and
	 * the file grows with every add/rm/gc; 1024 of them would fill the reader table. Clear the
	 * slots of dead processes whenever a store is opened. */
	if (!rc) {
		int dead;
		mdb_reader_check(s->env, &dead);
	}
	if (rc) {
		rc = rc == EACCES || rc == EROFS
			? df_errf(err, -rc, "%s: cannot open the store: %s (a read-only user still needs "
				  "write access to lock.mdb)", dir, mdb_strerror(rc))
			: lmdb_err(err, rc, "cannot open the LMDB environment", s);
		store_close(s);
		return rc;
	}
	rc = open_dbs(s, create && !s->rdonly, err);
	if (rc) {
		store_close(s);
		return rc;
	}
	*out = s;
	return 0;
}

void store_close(store *s)
{
	if (!s)
		return;
	if (s->env)
		mdb_env_close(s->env);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	pthread_rwlock_destroy(&s->txlock);
	free(s->path);
	free(s);
}

int store_rtxn(store *s, MDB_txn **txn, df_err *err)
{
	pthread_rwlock_rdlock(&s->txlock);
	int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
	if (rc == MDB_MAP_RESIZED) {
		pthread_rwlock_unlock(&s->txlock);
		if (pthread_rwlock_trywrlock(&s->txlock))
			return df_errf(err, -EAGAIN, "%s: the store's map was grown by another process; "
				       "retry once this process's other reads end", s->path);
		rc = mdb_env_set_mapsize(s->env, 0);
		pthread_rwlock_unlock(&s->txlock);
		pthread_rwlock_rdlock(&s->txlock);
		if (!rc)
			rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
	}
	if (rc) {
		pthread_rwlock_unlock(&s->txlock);
		return lmdb_err(err, rc, "cannot begin a read transaction", s);
	}
	return 0;
}

void store_txn_end(store *s, MDB_txn *txn)
{
	mdb_txn_abort(txn);
	pthread_rwlock_unlock(&s->txlock);
}

void store_hash(const void *p, size_t n, uint8_t out[16])
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(p, n));
	memcpy(out, c.digest, 16);
}

void store_set_fetch(store *s, store_fetch_fn fn, store_ahead_fn ahead, void *ud)
{
	s->fetch = fn;
	s->ahead = ahead;
	s->fetch_ud = ud;
}

int store_has_fetch(const store *s)
{
	return s->fetch != NULL;
}

int store_blob_fetch(store *s, const uint8_t hash[16], void **p, size_t *n, df_err *err)
{
	if (!s->fetch)
		return df_errf(err, -ENOENT, "%s: blob missing from the store", s->path);
	return s->fetch(s->fetch_ud, hash, p, n, err);
}

int store_blob_check(const uint8_t hash[16], const void *p, size_t n)
{
	uint8_t h[16];
	store_hash(p, n, h);
	return memcmp(h, hash, 16) ? -EIO : 0;
}

/* Why STORE_RANDOM: with the kernel's readahead on the map, a cold random read of the mount
 * faulted each blob in 128 KiB readahead windows around its pages (2-3x the bytes of a 45 KiB
 * blob, and page-cache insertions the daemon paid for: over half of its CPU was in the kernel);
 * with readahead off and no hint, every 4 KiB page was its own read. Off + one WILLNEED per blob,
 * 1 GB pair, 1000 cold random 128 KiB preads, 64 KiB chunks: 160 MB/s against 78-115 with
 * readahead (2 shared cores, noisy). */
static void blob_hint(const MDB_val *d)
{
	uintptr_t a = (uintptr_t)d->mv_data & ~(uintptr_t)(STORE_PAGE - 1);
	madvise((void *)a, (uintptr_t)d->mv_data + d->mv_size - a, MADV_WILLNEED);
}

int store_blob_get(store *s, MDB_txn *txn, const uint8_t hash[16], const void **p, size_t *n)
{
	MDB_val k = {16, (void *)hash}, d;
	int rc = mdb_get(txn, s->dbi[DB_BLOBS], &k, &d);
	if (rc)
		return rc == MDB_NOTFOUND ? -ENOENT : -EIO;
	if (s->random)
		blob_hint(&d);
	*p = d.mv_data;
	*n = d.mv_size;
	return 0;
}

void store_blob_hint(store *s, MDB_txn *txn, const uint8_t hash[16])
{
	MDB_val k = {16, (void *)hash}, d;
	if (!mdb_get(txn, s->dbi[DB_BLOBS], &k, &d))
		blob_hint(&d);
	else if (s->ahead)
		s->ahead(s->fetch_ud, hash);
}

int store_ckpt_get(store *s, MDB_txn *txn, const char *name, manifest **out, df_err *err)
{
	MDB_val k = {strlen(name), (void *)name}, d;
	int rc = mdb_get(txn, s->dbi[DB_CKPT], &k, &d);
	if (rc == MDB_NOTFOUND)
		return df_errf(err, -ENOENT, "%s: no checkpoint named \"%s\" (see `deltafs ls %s`)",
			       s->path, name, s->path);
	if (rc)
		return lmdb_err(err, rc, "cannot read a manifest", s);
	df_err e2;
	rc = mf_decode(d.mv_data, d.mv_size, out, &e2);
	if (rc)
		return df_errf(err, rc, "%s: checkpoint \"%s\": corrupt manifest: %s", s->path, name,
			       e2.msg);
	return 0;
}

int store_ckpt_uid(store *s, MDB_txn *txn, const char *name, uint64_t *uid)
{
	MDB_val k = {strlen(name), (void *)name}, d;
	int rc = mdb_get(txn, s->dbi[DB_CKPT], &k, &d);
	if (rc)
		return rc == MDB_NOTFOUND ? -ENOENT : -EIO;
	return mf_peek_uid(d.mv_data, d.mv_size, uid);
}

int store_ckpt_list(store *s, MDB_txn *txn, char ***names, size_t *n, df_err *err)
{
	MDB_cursor *cur;
	MDB_val k, d;
	size_t cap = 16, cnt = 0;
	char **v = malloc(cap * sizeof *v);
	int rc = mdb_cursor_open(txn, s->dbi[DB_CKPT], &cur);
	if (rc) {
		free(v);
		return lmdb_err(err, rc, "cannot list checkpoints", s);
	}
	for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); !rc && v;
	     rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
		if (cnt == cap) {
			char **nv = realloc(v, (cap *= 2) * sizeof *v);
			if (!nv)
				break;
			v = nv;
		}
		if (!(v[cnt] = strndup(k.mv_data, k.mv_size)))
			break;
		cnt++;
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND) {
		store_names_free(v, cnt);
		return rc ? lmdb_err(err, rc, "cannot list checkpoints", s)
			  : df_errf(err, -ENOMEM, "out of memory");
	}
	*names = v;
	*n = cnt;
	return 0;
}

void store_names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n && names; i++)
		free(names[i]);
	free(names);
}

uint64_t store_generation(store *s, MDB_txn *txn)
{
	uint64_t g = 0;
	meta_get_u64(s, txn, "gen", &g);
	return g;
}

int store_usage(store *s, uint64_t *used, uint64_t *file_size)
{
	MDB_envinfo info;
	MDB_stat st;
	struct stat fst;
	char data[PATH_MAX];
	mdb_env_info(s->env, &info);
	mdb_env_stat(s->env, &st);
	*used = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
	snprintf(data, sizeof data, "%s/data.mdb", s->path);
	*file_size = stat(data, &fst) ? *used : (uint64_t)fst.st_size;
	return 0;
}

typedef struct ref_want {
	uint8_t h[16];
} ref_want;

static int cmp16(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

/* Every blob chunk hash named by any manifest, sorted (duplicates kept: they are the counts). */
static int collect_refs(store *s, MDB_txn *txn, ref_want **out, size_t *nout, df_err *err)
{
	MDB_cursor *cur;
	MDB_val k, d;
	size_t cap = 1024, n = 0;
	ref_want *w = malloc(cap * sizeof *w);
	int rc = w ? mdb_cursor_open(txn, s->dbi[DB_CKPT], &cur) : ENOMEM;
	if (rc) {
		free(w);
		return lmdb_err(err, rc, "cannot scan manifests", s);
	}
	for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); !rc;
	     rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
		manifest *m;
		if (mf_decode(d.mv_data, d.mv_size, &m, NULL))
			continue; /* reported by the per-checkpoint walk */
		mf_blob_iter it = {.m = m};
		for (const mf_chunk *ch; (ch = mf_blob_next(&it));) {
			if (n == cap) {
				ref_want *nw = realloc(w, (cap *= 2) * sizeof *w);
				if (!nw) {
					mf_free(m);
					mdb_cursor_close(cur);
					free(w);
					return df_errf(err, -ENOMEM, "out of memory");
				}
				w = nw;
			}
			memcpy(w[n++].h, ch->hash, 16);
		}
		mf_free(m);
	}
	mdb_cursor_close(cur);
	qsort(w, n, sizeof *w, cmp16);
	*out = w;
	*nout = n;
	return 0;
}

int store_check_refs(store *s, MDB_txn *txn, void (*bad)(void *ud, const char *msg), void *ud,
		     df_err *err)
{
	ref_want *w = NULL;
	size_t n = 0, i = 0;
	/* Counted by kind and reported once per kind: one unreadable manifest leaves every blob it
	 * named with a surplus reference, and a line per blob would bury the line that says why. */
	uint64_t malformed = 0, unrecorded = 0, missing = 0, differ = 0, have1 = 0, want1 = 0;
	char msg[320];
	int rc = collect_refs(s, txn, &w, &n, err);
	if (rc)
		return rc;
	MDB_cursor *cur;
	MDB_val k, d;
	if ((rc = mdb_cursor_open(txn, s->dbi[DB_REFS], &cur))) {
		free(w);
		return lmdb_err(err, rc, "cannot scan refcounts", s);
	}
	for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); !rc;
	     rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
		uint64_t have = 0, want = 0;
		if (k.mv_size != 16 || d.mv_size != 8) {
			malformed++;
			continue;
		}
		memcpy(&have, d.mv_data, 8);
		for (; i < n && memcmp(w[i].h, k.mv_data, 16) < 0; i++)
			unrecorded++;
		for (; i < n && !memcmp(w[i].h, k.mv_data, 16); i++)
			want++;
		MDB_val bd;
		if (want && !s->fetch && mdb_get(txn, s->dbi[DB_BLOBS], &k, &bd))
			missing++;
		if (have != want && !differ++) {
			have1 = have;
			want1 = want;
		}
	}
	mdb_cursor_close(cur);
	unrecorded += n - i;
	free(w);
	if (malformed) {
		snprintf(msg, sizeof msg, "%s: %llu malformed refcount records", s->path,
			 (unsigned long long)malformed);
		bad(ud, msg);
	}
	if (unrecorded) {
		snprintf(msg, sizeof msg, "%s: %llu references to blobs with no refcount record",
			 s->path, (unsigned long long)unrecorded);
		bad(ud, msg);
	}
	if (missing) {
		snprintf(msg, sizeof msg, "%s: %llu referenced blobs are missing", s->path,
			 (unsigned long long)missing);
		bad(ud, msg);
	}
	if (differ) {
		snprintf(msg, sizeof msg, "%s: %llu blobs have a refcount other than the number of "
			 "manifests naming them (the first: %llu, named %llu times)%s", s->path,
			 (unsigned long long)differ, (unsigned long long)have1,
			 (unsigned long long)want1,
			 have1 > want1 ? "; expected while a manifest cannot be read" : "");
		bad(ud, msg);
	}
	return (int)((malformed + unrecorded + missing + differ) > INT_MAX
			     ? INT_MAX : malformed + unrecorded + missing + differ);
}

/* --- writing ---------------------------------------------------------------------------------- */

typedef int (*wtxn_fn)(store *s, MDB_txn *txn, void *arg, df_err *err);

/* Run fn in a write transaction and commit, growing the map and retrying on MDB_MAP_FULL. fn returns
 * an LMDB code (> 0), 0, or a negative errno with err filled (then the txn is aborted). */
static int with_wtxn(store *s, wtxn_fn fn, void *arg, const char *what, df_err *err)
{
	if (s->rdonly)
		return df_errf(err, -EROFS, "%s: store opened read-only", s->path);
	for (;;) {
		MDB_txn *txn;
		pthread_rwlock_rdlock(&s->txlock);
		int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
		if (rc == MDB_MAP_RESIZED) {
			pthread_rwlock_unlock(&s->txlock);
			pthread_rwlock_wrlock(&s->txlock);
			rc = mdb_env_set_mapsize(s->env, 0);
			pthread_rwlock_unlock(&s->txlock);
			if (rc)
				return lmdb_err(err, rc, what, s);
			continue;
		}
		if (rc) {
			pthread_rwlock_unlock(&s->txlock);
			return lmdb_err(err, rc, what, s);
		}
		rc = fn(s, txn, arg, err);
		if (rc)
			mdb_txn_abort(txn);
		else
			rc = mdb_txn_commit(txn);
		pthread_rwlock_unlock(&s->txlock);
		if (rc != MDB_MAP_FULL)
			return rc > 0 ? lmdb_err(err, rc, what, s) : rc;
		/* Grow: wait for this process's other transactions to end, then double the map. */
		MDB_envinfo info;
		pthread_rwlock_wrlock(&s->txlock);
		mdb_env_info(s->env, &info);
		rc = mdb_env_set_mapsize(s->env, info.me_mapsize * 2);
		pthread_rwlock_unlock(&s->txlock);
		if (rc)
			return lmdb_err(err, rc, "cannot grow the map", s);
	}
}

struct batch_arg {
	const store_blob *b;
	size_t n;
	uint64_t written;
};

static int put_batch_fn(store *s, MDB_txn *txn, void *arg, df_err *err)
{
	struct batch_arg *a = arg;
	(void)err;
	a->written = 0;
	for (size_t i = 0; i < a->n; i++) {
		MDB_val k = {16, (void *)a->b[i].hash}, d = {a->b[i].n, (void *)a->b[i].p};
		int rc = mdb_put(txn, s->dbi[DB_BLOBS], &k, &d, MDB_NOOVERWRITE);
		if (rc == MDB_KEYEXIST)
			continue;
		if (rc)
			return rc;
		uint64_t zero = 0;
		MDB_val z = {8, &zero};
		/* A clone's blob fetched into data.mdb (deltafs clone --all) already has its count. */
		rc = mdb_put(txn, s->dbi[DB_REFS], &k, &z, MDB_NOOVERWRITE);
		if (rc && rc != MDB_KEYEXIST)
			return rc;
		a->written += a->b[i].n;
	}
	return 0;
}

int store_put_batch(store *s, const store_blob *b, size_t n, uint64_t *written, df_err *err)
{
	struct batch_arg a = {b, n, 0};
	int rc = with_wtxn(s, put_batch_fn, &a, "cannot write blobs", err);
	if (!rc && written)
		*written = a.written;
	return rc;
}

/* Add delta to the refcount of every blob chunk of m. adopt: a blob without a record is one the
 * store does not hold (a clone's), counted from 0 instead of refused. */
static int refs_add(store *s, MDB_txn *txn, const manifest *m, int delta, int adopt, df_err *err)
{
	mf_blob_iter it = {.m = m};
	for (const mf_chunk *ch; (ch = mf_blob_next(&it));) {
		MDB_val k = {16, (void *)ch->hash}, d;
		int rc = mdb_get(txn, s->dbi[DB_REFS], &k, &d);
		uint64_t zero = 0;
		if (rc == MDB_NOTFOUND && adopt) {
			d.mv_data = &zero;
			d.mv_size = 8;
			rc = 0;
		}
		if (rc == MDB_NOTFOUND)
			return df_errf(err, -EIO, "%s: checkpoint \"%s\": blob of tensor \"%s\" chunk %u "
				       "is missing from the store", s->path, m->name, it.sg->name,
				       it.chunk);
		if (rc)
			return rc;
		uint64_t v;
		memcpy(&v, d.mv_data, 8);
		if (delta < 0 && v == 0)
			return df_errf(err, -EIO, "%s: refcount underflow for a blob of \"%s\" (run "
				       "`deltafs verify`)", s->path, m->name);
		v += (uint64_t)(int64_t)delta;
		d.mv_data = &v;
		d.mv_size = 8;
		if ((rc = mdb_put(txn, s->dbi[DB_REFS], &k, &d, 0)))
			return rc;
	}
	return 0;
}

/* Names of checkpoints whose base is `name`, comma-separated into out; returns their count. */
static int users_of(store *s, MDB_txn *txn, const char *name, char *out, size_t outlen)
{
	MDB_cursor *cur;
	MDB_val k, d;
	int n = 0;
	out[0] = 0;
	if (mdb_cursor_open(txn, s->dbi[DB_CKPT], &cur))
		return 0;
	for (int rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); !rc;
	     rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
		char base[256];
		if (mf_peek_base(d.mv_data, d.mv_size, base, sizeof base) || strcmp(base, name))
			continue;
		size_t l = strlen(out);
		snprintf(out + l, outlen - l, "%s%.*s", n ? ", " : "", (int)k.mv_size,
			 (char *)k.mv_data);
		n++;
	}
	mdb_cursor_close(cur);
	return n;
}

/* Drop checkpoint `name` (which must exist) inside txn: refs down, record deleted. */
static int drop_ckpt(store *s, MDB_txn *txn, const char *name, df_err *err)
{
	char users[1024];
	int n = users_of(s, txn, name, users, sizeof users);
	if (n)
		return df_errf(err, -EBUSY, "%s: checkpoint \"%s\" is the base of %d other%s (%s): "
			       "remove %s first", s->path, name, n, n > 1 ? "s" : "", users,
			       n > 1 ? "them" : "it");
	manifest *old;
	int rc = store_ckpt_get(s, txn, name, &old, err);
	if (rc)
		return rc;
	rc = refs_add(s, txn, old, -1, 0, err);
	mf_free(old);
	if (rc)
		return rc;
	MDB_val k = {strlen(name), (void *)name};
	return mdb_del(txn, s->dbi[DB_CKPT], &k, NULL);
}

static int bump_gen(store *s, MDB_txn *txn)
{
	uint64_t g = 0;
	int rc = meta_get_u64(s, txn, "gen", &g);
	return rc ? rc : meta_put_u64(s, txn, "gen", g + 1);
}

struct commit_arg {
	manifest *m;
	int replace;
	int adopt; /* store_adopt */
};

static int commit_fn(store *s, MDB_txn *txn, void *arg, df_err *err)
{
	struct commit_arg *a = arg;
	manifest *m = a->m;
	MDB_val k = {strlen(m->name), m->name}, d;
	int rc;
	if (m->base && *m->base) {
		MDB_val bk = {strlen(m->base), m->base};
		if (mdb_get(txn, s->dbi[DB_CKPT], &bk, &d) == MDB_NOTFOUND)
			return df_errf(err, -ENOENT, "%s: base checkpoint \"%s\" does not exist (was "
				       "it removed during the ingest?)", s->path, m->base);
	}
	rc = mdb_get(txn, s->dbi[DB_CKPT], &k, &d);
	if (!rc) {
		if (!a->replace)
			return df_errf(err, -EEXIST, "%s: checkpoint \"%s\" already exists (use "
				       "--replace, or `deltafs rm` it first)", s->path, m->name);
		if ((rc = drop_ckpt(s, txn, m->name, err)))
			return rc;
	} else if (rc != MDB_NOTFOUND) {
		return rc;
	}
	if ((rc = refs_add(s, txn, m, +1, a->adopt, err)))
		return rc;
	uint64_t uid = 0;
	if ((rc = meta_get_u64(s, txn, "uid", &uid)) || (rc = meta_put_u64(s, txn, "uid", uid + 1)))
		return rc;
	m->uid = uid + 1;
	if (!m->ctime_ns) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		m->ctime_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	}
	uint8_t *buf;
	size_t len;
	if ((rc = mf_encode(m, &buf, &len)))
		return df_errf(err, rc, "out of memory encoding the manifest");
	d.mv_data = buf;
	d.mv_size = len;
	rc = mdb_put(txn, s->dbi[DB_CKPT], &k, &d, 0);
	free(buf);
	return rc ? rc : bump_gen(s, txn);
}

int store_commit(store *s, manifest *m, int replace, df_err *err)
{
	struct commit_arg a = {m, replace, 0};
	return with_wtxn(s, commit_fn, &a, "cannot commit the checkpoint", err);
}

struct adopt_arg {
	manifest **ms;
	size_t n;
};

static int adopt_fn(store *s, MDB_txn *txn, void *arg, df_err *err)
{
	struct adopt_arg *a = arg;
	for (size_t i = 0; i < a->n; i++) {
		struct commit_arg c = {a->ms[i], 1, 1};
		int rc = commit_fn(s, txn, &c, err);
		if (rc)
			return rc;
	}
	return 0;
}

int store_adopt(store *s, manifest **ms, size_t n, df_err *err)
{
	struct adopt_arg a = {ms, n};
	return with_wtxn(s, adopt_fn, &a, "cannot commit the checkpoints", err);
}

static int rm_fn(store *s, MDB_txn *txn, void *arg, df_err *err)
{
	const char *name = arg;
	MDB_val k = {strlen(name), (void *)name}, d;
	int rc = mdb_get(txn, s->dbi[DB_CKPT], &k, &d);
	if (rc == MDB_NOTFOUND)
		return df_errf(err, -ENOENT, "%s: no checkpoint named \"%s\"", s->path, name);
	if (rc)
		return rc;
	rc = drop_ckpt(s, txn, name, err);
	return rc ? rc : bump_gen(s, txn);
}

int store_rm(store *s, const char *name, df_err *err)
{
	return with_wtxn(s, rm_fn, (void *)name, "cannot remove the checkpoint", err);
}

struct gc_arg {
	uint64_t bytes, blobs;
};

static int gc_fn(store *s, MDB_txn *txn, void *arg, df_err *err)
{
	struct gc_arg *a = arg;
	MDB_cursor *cur;
	MDB_val k, d;
	(void)err;
	a->bytes = a->blobs = 0;
	int rc = mdb_cursor_open(txn, s->dbi[DB_REFS], &cur);
	if (rc)
		return rc;
	for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); !rc;
	     rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
		uint64_t v;
		if (d.mv_size != 8)
			continue;
		memcpy(&v, d.mv_data, 8);
		if (v)
			continue;
		MDB_val bk = k, bd;
		if (!mdb_get(txn, s->dbi[DB_BLOBS], &bk, &bd)) {
			a->bytes += bd.mv_size;
			a->blobs++;
			if ((rc = mdb_del(txn, s->dbi[DB_BLOBS], &bk, NULL)))
				break;
		}
		if ((rc = mdb_cursor_del(cur, 0)))
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int lock_file(store *s, int op, df_err *err)
{
	if (s->lock_fd < 0) {
		char p[PATH_MAX];
		snprintf(p, sizeof p, "%s/ingest.lock", s->path);
		s->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (s->lock_fd < 0)
			return df_errf(err, -errno, "%s: %s", p, strerror(errno));
	}
	if (flock(s->lock_fd, op)) {
		if (errno == EWOULDBLOCK)
			return df_errf(err, -EBUSY, "%s: an ingest (deltafs-add) is running; run gc "
				       "after it ends", s->path);
		return df_errf(err, -errno, "%s: cannot lock ingest.lock: %s", s->path,
			       strerror(errno));
	}
	return 0;
}

int store_gc(store *s, uint64_t *freed_bytes, uint64_t *freed_blobs, df_err *err)
{
	struct gc_arg a = {0, 0};
	int rc = lock_file(s, LOCK_EX | LOCK_NB, err);
	if (rc)
		return rc;
	rc = with_wtxn(s, gc_fn, &a, "cannot collect garbage", err);
	flock(s->lock_fd, LOCK_UN);
	if (freed_bytes)
		*freed_bytes = a.bytes;
	if (freed_blobs)
		*freed_blobs = a.blobs;
	return rc;
}

int store_ingest_lock(store *s, df_err *err)
{
	return lock_file(s, LOCK_SH, err);
}

void store_ingest_unlock(store *s)
{
	if (s->lock_fd >= 0)
		flock(s->lock_fd, LOCK_UN);
}
