/*
 * tier.c -- push, pull and on-demand fetch between a store and its remote (tier.h).
 */
#include "tier.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "manifest.h"

#define RT_MANIFEST_PREFIX "m."
#define RT_TMP_AGE 3600 /* a cache file being written is renamed within seconds; older: debris */
/* Fetch-ahead (rt_ahead): a sequential reader's window is a few hundred blobs, each one round trip
 * that costs more than its bytes (~1 ms on RADOS or radosgw over loopback, ~45 ms on radosgw
 * before s3.c's on_header), so threads that only wait on the network, apart from the mount's
 * decode threads, keep many requests in flight whatever the decoders are doing. */
#define RT_AHEAD_THREADS 16
#define RT_AHEAD_QUEUE 512 /* blobs waiting for a fetch-ahead thread; a hint beyond is dropped */
/* ...and at most a quarter of the cache's bound in blobs this large (a large chunk's blob), so that
 * a blob fetched ahead is still cached when its reader comes: a 16 GiB cache queues 512, one
 * under 1 MiB none (every fetch then waits for its reader). */
#define RT_AHEAD_BLOB (256u << 10)

/* --- the cache directory ------------------------------------------------------------------ */

/* One cached blob, on the LRU list (head: most recent) and in a hash bucket. */
typedef struct centry {
	uint8_t h[16];
	uint64_t size;
	struct centry *prev, *next, *chain;
} centry;

/* One fetch, queued ahead (!started) or in progress; threads wanting the same blob wait for a
 * started one and take a copy, and take over one still queued rather than wait in line. */
typedef struct flight {
	uint8_t h[16];
	int started, done, rc, refs;
	int ahead;   /* started by a fetch-ahead thread */
	int waiters; /* threads that waited for it: its fetcher copies rather than gives f->p away */
	char msg[512];
	void *p;
	size_t n;
	struct flight *next;
} flight;

struct rt_tier {
	store *st;
	rb_backend *be;
	char dir[PATH_MAX - 64]; /* STORE/cache; room left for a blob's name */
	uint64_t cap;
	pthread_mutex_t mu; /* guards everything below */
	pthread_cond_t cv;  /* a flight finished */
	centry **buckets;
	size_t nbuckets, nentries;
	centry *lru_head, *lru_tail;
	uint64_t bytes;
	flight *flights[256]; /* by the first byte of the hash: up to RT_AHEAD_QUEUE are queued */
	unsigned long tmp_seq;
	rt_stats stats;
	int changed; /* the catalog's watch fired since the last rt_wait_change (under mu; cv) */
	flight *aq[RT_AHEAD_QUEUE]; /* fetch-ahead ring, each holding a reference to its flight */
	size_t aq_head, aq_len;
	pthread_cond_t aq_cv; /* the ring has work, or stop is set */
	pthread_t ahead[RT_AHEAD_THREADS];
	unsigned nahead; /* fetch-ahead threads running: started at the first hint */
	size_t aq_max;   /* RT_AHEAD_QUEUE, or fewer for a small cache */
	int stop;
};

static size_t bucket_of(const rt_tier *t, const uint8_t h[16])
{
	uint64_t v;
	memcpy(&v, h, 8);
	return (size_t)(v & (t->nbuckets - 1));
}

static centry *c_find(rt_tier *t, const uint8_t h[16])
{
	for (centry *e = t->buckets[bucket_of(t, h)]; e; e = e->chain)
		if (!memcmp(e->h, h, 16))
			return e;
	return NULL;
}

static void lru_unlink(rt_tier *t, centry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		t->lru_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		t->lru_tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_front(rt_tier *t, centry *e)
{
	e->next = t->lru_head;
	e->prev = NULL;
	if (t->lru_head)
		t->lru_head->prev = e;
	t->lru_head = e;
	if (!t->lru_tail)
		t->lru_tail = e;
}

static void c_grow(rt_tier *t)
{
	size_t nb = t->nbuckets * 2;
	centry **b = calloc(nb, sizeof *b);
	if (!b)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < t->nbuckets; i++)
		for (centry *e = t->buckets[i], *nx; e; e = nx) {
			nx = e->chain;
			uint64_t v;
			memcpy(&v, e->h, 8);
			e->chain = b[v & (nb - 1)];
			b[v & (nb - 1)] = e;
		}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = nb;
}

/* Account a blob file of size bytes as most recently used (new or known). */
static void c_touch(rt_tier *t, const uint8_t h[16], uint64_t size)
{
	centry *e = c_find(t, h);
	if (e) {
		lru_unlink(t, e);
		t->bytes -= e->size;
	} else {
		if (!(e = calloc(1, sizeof *e)))
			return; /* unaccounted: the bound is exceeded by this blob until a restart */
		memcpy(e->h, h, 16);
		size_t b = bucket_of(t, h);
		e->chain = t->buckets[b];
		t->buckets[b] = e;
		if (++t->nentries > t->nbuckets)
			c_grow(t);
	}
	e->size = size;
	t->bytes += size;
	lru_front(t, e);
}

static void c_path(const rt_tier *t, const uint8_t h[16], char *out, size_t len)
{
	char oid[33];
	rb_blob_oid(h, oid);
	snprintf(out, len, "%s/%s", t->dir, oid);
}

static void c_drop(rt_tier *t, centry *e)
{
	centry **pp = &t->buckets[bucket_of(t, e->h)];
	while (*pp != e)
		pp = &(*pp)->chain;
	*pp = e->chain;
	lru_unlink(t, e);
	t->bytes -= e->size;
	t->nentries--;
	free(e);
}

/* Evict least recently used blobs until the cache fits its bound, sparing keep. Called with mu. */
static void c_evict(rt_tier *t, const uint8_t keep[16])
{
	char p[PATH_MAX];
	while (t->bytes > t->cap && t->lru_tail && memcmp(t->lru_tail->h, keep, 16)) {
		centry *e = t->lru_tail;
		c_path(t, e->h, p, sizeof p);
		unlink(p);
		c_drop(t, e);
		t->stats.evictions++;
	}
}

/* The cached copy of blob h: 0 with a malloc'd buffer, or -ENOENT (absent, or damaged: removed). */
static int c_read(rt_tier *t, const uint8_t h[16], void **p, size_t *n)
{
	char path[PATH_MAX];
	struct stat st;
	c_path(t, h, path, sizeof path);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -ENOENT;
	uint8_t *buf = NULL;
	int rc = fstat(fd, &st) ? -errno : 0;
	if (!rc && !(buf = malloc(st.st_size ? (size_t)st.st_size : 1)))
		rc = -ENOMEM;
	size_t done = 0;
	while (!rc && done < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + done, (size_t)st.st_size - done);
		if (r <= 0)
			rc = -EIO;
		else
			done += (size_t)r;
	}
	if (!rc)
		futimens(fd, NULL); /* recency for the next process that indexes the cache */
	close(fd);
	if (!rc && store_blob_check(h, buf, done)) {
		unlink(path); /* damaged on the local disk: fetch it again */
		rc = -ENOENT;
	}
	if (rc) {
		free(buf);
		pthread_mutex_lock(&t->mu);
		centry *e = c_find(t, h);
		if (e)
			c_drop(t, e);
		pthread_mutex_unlock(&t->mu);
		return rc == -ENOMEM ? rc : -ENOENT;
	}
	pthread_mutex_lock(&t->mu);
	c_touch(t, h, done);
	t->stats.hits++;
	pthread_mutex_unlock(&t->mu);
	*p = buf;
	*n = done;
	return 0;
}

/* Keep a verified blob in the cache: written to a temporary name, renamed into place, so a reader
 * of the cache never sees part of a blob. A failure only costs a fetch later. */
static void c_write(rt_tier *t, const uint8_t h[16], const void *p, size_t n)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	pthread_mutex_lock(&t->mu);
	snprintf(tmp, sizeof tmp, "%s/.tmp.%d.%lu", t->dir, (int)getpid(), ++t->tmp_seq);
	pthread_mutex_unlock(&t->mu);
	c_path(t, h, path, sizeof path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	size_t done = 0;
	while (done < n) {
		ssize_t w = write(fd, (const uint8_t *)p + done, n - done);
		if (w <= 0)
			break;
		done += (size_t)w;
	}
	if (close(fd) || done < n || rename(tmp, path)) {
		unlink(tmp);
		return;
	}
	pthread_mutex_lock(&t->mu);
	c_touch(t, h, n);
	c_evict(t, h);
	pthread_mutex_unlock(&t->mu);
}

static int hex_hash(const char *s, uint8_t h[16])
{
	for (int i = 0; i < 32; i++) {
		int c = s[i], v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (v < 0)
			return -1;
		if (i & 1)
			h[i / 2] |= (uint8_t)v;
		else
			h[i / 2] = (uint8_t)(v << 4);
	}
	return s[32] ? -1 : 0;
}

typedef struct scan_item {
	uint8_t h[16];
	uint64_t size;
	struct timespec mtime;
} scan_item;

static int by_mtime(const void *a, const void *b)
{
	const struct timespec *x = &((const scan_item *)a)->mtime, *y = &((const scan_item *)b)->mtime;
	return x->tv_sec != y->tv_sec ? (x->tv_sec < y->tv_sec ? -1 : 1)
				      : (x->tv_nsec > y->tv_nsec) - (x->tv_nsec < y->tv_nsec);
}

/* Index what an earlier process left in the cache, oldest first, then trim it to the bound. */
static int c_scan(rt_tier *t, df_err *err)
{
	DIR *d = opendir(t->dir);
	if (!d)
		return df_errf(err, -errno, "%s: %s", t->dir, strerror(errno));
	scan_item *v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		struct stat st;
		uint8_t h[16];
		if (!strncmp(de->d_name, ".tmp.", 5) && !fstatat(dirfd(d), de->d_name, &st, 0) &&
		    time(NULL) - st.st_mtime > RT_TMP_AGE) {
			unlinkat(dirfd(d), de->d_name, 0); /* left by a process that died writing it */
			continue;
		}
		if (hex_hash(de->d_name, h) || fstatat(dirfd(d), de->d_name, &st, 0) ||
		    !S_ISREG(st.st_mode))
			continue;
		if (n == cap) {
			scan_item *nv = realloc(v, (cap = cap ? cap * 2 : 256) * sizeof *v);
			if (!nv)
				break;
			v = nv;
		}
		memcpy(v[n].h, h, 16);
		v[n].size = (uint64_t)st.st_size;
		v[n].mtime = st.st_mtim;
		n++;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof *v, by_mtime);
	uint8_t none[16] = {0};
	pthread_mutex_lock(&t->mu);
	for (size_t i = 0; i < n; i++)
		c_touch(t, v[i].h, v[i].size);
	c_evict(t, none);
	pthread_mutex_unlock(&t->mu);
	free(v);
	return 0;
}

/* --- fetch: the store's hook ---------------------------------------------------------------- */

static void flight_put(flight *f)
{
	if (--f->refs)
		return;
	free(f->p);
	free(f);
}

static int copy_out(const void *src, size_t n, void **p, size_t *np, df_err *err)
{
	void *c = malloc(n ? n : 1);
	if (!c)
		return df_errf(err, -ENOMEM, "out of memory");
	memcpy(c, src, n);
	*p = c;
	*np = n;
	return 0;
}

static flight *flight_find(rt_tier *t, const uint8_t h[16])
{
	flight *f = t->flights[h[0]];
	while (f && memcmp(f->h, h, 16))
		f = f->next;
	return f;
}

/* A new flight for h on t's list, holding one reference; called with mu. */
static flight *flight_new(rt_tier *t, const uint8_t h[16])
{
	flight *f = calloc(1, sizeof *f);
	if (!f)
		return NULL;
	memcpy(f->h, h, 16);
	f->refs = 1;
	f->next = t->flights[h[0]];
	t->flights[h[0]] = f;
	return f;
}

static void flight_unlink(rt_tier *t, flight *f)
{
	for (flight **pp = &t->flights[f->h[0]]; *pp; pp = &(*pp)->next)
		if (*pp == f) {
			*pp = f->next;
			break;
		}
}

/* Fetch f's blob (started by the caller, mu not held) into f->p, and tell its waiters. The cache
 * is read once more first: another thread may have finished the same fetch between a reader's
 * c_read and its registering f. The blob is checked against its hash before anyone sees it. */
static void flight_run(rt_tier *t, flight *f)
{
	df_err e;
	char oid[33];
	int fetched = 0;
	int rc = c_read(t, f->h, &f->p, &f->n);
	if (rc == -ENOENT) {
		fetched = 1;
		rb_blob_oid(f->h, oid);
		rc = t->be->ops->get(t->be, oid, &f->p, &f->n, &e);
		if (rc == -ENOENT)
			df_errf(&e, -EIO, "%s: object %s is missing from the remote (run "
				"`deltafs push` on the host that has it)", t->be->url, oid);
		else if (!rc && store_blob_check(f->h, f->p, f->n))
			rc = df_errf(&e, -EIO, "%s: object %s fails its hash (damaged in the "
				     "remote)", t->be->url, oid);
		else if (!rc)
			c_write(t, f->h, f->p, f->n);
		if (rc)
			rc = rc == -ENOMEM ? rc : -EIO;
	} else if (rc) {
		df_errf(&e, rc, "out of memory");
	}
	pthread_mutex_lock(&t->mu);
	flight_unlink(t, f);
	f->done = 1;
	f->rc = rc;
	if (rc) {
		t->stats.failures++;
	} else if (fetched) {
		t->stats.fetches++;
		t->stats.fetch_bytes += f->n;
		t->stats.ahead += (uint64_t)f->ahead;
	}
	snprintf(f->msg, sizeof f->msg, "%s", rc ? e.msg : "");
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

static int rt_fetch(void *ud, const uint8_t h[16], void **p, size_t *n, df_err *err)
{
	rt_tier *t = ud;
	int rc = c_read(t, h, p, n);
	if (rc != -ENOENT)
		return rc ? df_errf(err, rc, "out of memory") : 0;
	pthread_mutex_lock(&t->mu);
	flight *f = flight_find(t, h);
	if (f && f->started) { /* someone fetches it: wait, and share their result */
		f->refs++;
		f->waiters++;
		t->stats.shared++;
		while (!f->done)
			pthread_cond_wait(&t->cv, &t->mu);
		rc = f->rc ? df_errf(err, f->rc, "%s", f->msg) : copy_out(f->p, f->n, p, n, err);
		flight_put(f);
		pthread_mutex_unlock(&t->mu);
		return rc;
	}
	if (f) /* queued ahead: fetch it now; the fetch-ahead thread that meets it skips it */
		f->refs++;
	else if (!(f = flight_new(t, h))) {
		pthread_mutex_unlock(&t->mu);
		return df_errf(err, -ENOMEM, "out of memory");
	}
	f->started = 1;
	pthread_mutex_unlock(&t->mu);
	flight_run(t, f);
	pthread_mutex_lock(&t->mu);
	if (f->rc) {
		rc = df_errf(err, f->rc, "%s", f->msg);
	} else if (f->waiters) {
		rc = copy_out(f->p, f->n, p, n, err);
	} else { /* done and off the list: nobody else can want these bytes, so no copy */
		*p = f->p;
		*n = f->n;
		f->p = NULL;
		rc = 0;
	}
	flight_put(f);
	pthread_mutex_unlock(&t->mu);
	return rc;
}

static void *ahead_worker(void *arg)
{
	rt_tier *t = arg;
	pthread_mutex_lock(&t->mu);
	for (;;) {
		while (!t->aq_len && !t->stop)
			pthread_cond_wait(&t->aq_cv, &t->mu);
		if (!t->aq_len)
			break;
		flight *f = t->aq[t->aq_head];
		t->aq_head = (t->aq_head + 1) % RT_AHEAD_QUEUE;
		t->aq_len--;
		if (!f->started && !t->stop) {
			f->started = f->ahead = 1;
			pthread_mutex_unlock(&t->mu);
			flight_run(t, f);
			pthread_mutex_lock(&t->mu);
		} else if (!f->started) { /* closing: nobody waits for an unstarted flight */
			flight_unlink(t, f);
		}
		flight_put(f);
	}
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

/* The store's fetch-ahead hook (store_blob_hint on a blob data.mdb lacks): queue blob h for the
 * fetch-ahead threads, which start at the first hint, unless it is cached, in flight or queued
 * already. A full queue drops the hint: the read that needs the blob fetches it. */
static void rt_ahead(void *ud, const uint8_t h[16])
{
	rt_tier *t = ud;
	pthread_mutex_lock(&t->mu);
	if (!t->nahead && !t->stop && t->aq_max)
		while (t->nahead < RT_AHEAD_THREADS &&
		       !pthread_create(&t->ahead[t->nahead], NULL, ahead_worker, t))
			t->nahead++;
	flight *f;
	if (t->nahead && !t->stop && t->aq_len < t->aq_max && !c_find(t, h) &&
	    !flight_find(t, h) && (f = flight_new(t, h))) {
		t->aq[(t->aq_head + t->aq_len++) % RT_AHEAD_QUEUE] = f;
		pthread_cond_signal(&t->aq_cv);
	}
	pthread_mutex_unlock(&t->mu);
}

/* --- configuration and opening ------------------------------------------------------------ */

/* The STORE/remote lines: key and where it goes in an rb_config. */
static const struct {
	const char *key;
	size_t off;
} cfg_keys[] = {
	{"url", offsetof(rb_config, url)},           {"id", offsetof(rb_config, id)},
	{"conf", offsetof(rb_config, conf)},         {"endpoint", offsetof(rb_config, endpoint)},
	{"region", offsetof(rb_config, region)},     {"keys", offsetof(rb_config, keys)},
};
#define NCFG (sizeof cfg_keys / sizeof *cfg_keys)

static const char **cfg_field(rb_config *c, size_t i)
{
	return (const char **)((char *)c + cfg_keys[i].off);
}

int rt_config_set(const char *dir, const rb_config *cfg, df_err *err)
{
	rb_backend *b;
	rb_config c = *cfg;
	char path[PATH_MAX], tmp[PATH_MAX];
	int rc = rb_open(cfg, &b, err);
	if (rc)
		return rc;
	rb_close(b);
	for (size_t i = 0; i < NCFG; i++)
		if (*cfg_field(&c, i) && strpbrk(*cfg_field(&c, i), "\n\r"))
			return df_errf(err, -EINVAL, "remote settings cannot hold line breaks");
	snprintf(path, sizeof path, "%s/remote", dir);
	snprintf(tmp, sizeof tmp, "%s/remote.tmp", dir);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return df_errf(err, -errno, "%s: %s", tmp, strerror(errno));
	FILE *f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		return df_errf(err, -ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < NCFG; i++)
		if (*cfg_field(&c, i) && **cfg_field(&c, i))
			fprintf(f, "%s %s\n", cfg_keys[i].key, *cfg_field(&c, i));
	if (fflush(f) || fsync(fileno(f)))
		rc = -errno;
	if (fclose(f) && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return df_errf(err, rc, "%s: %s", path, strerror(-rc));
	}
	return 0;
}

static void config_free(rb_config *c)
{
	for (size_t i = 0; i < NCFG; i++) {
		free((char *)*cfg_field(c, i));
		*cfg_field(c, i) = NULL;
	}
}

/* Read STORE/remote into c (malloc'd strings; config_free): -ENOENT if the store has no remote. */
static int config_get(const char *dir, rb_config *c, df_err *err)
{
	char path[PATH_MAX], line[PATH_MAX + 16];
	memset(c, 0, sizeof *c);
	snprintf(path, sizeof path, "%s/remote", dir);
	FILE *f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? -ENOENT : df_errf(err, -errno, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = 0;
		char *sp = strchr(line, ' ');
		if (!sp)
			continue;
		*sp++ = 0;
		for (size_t i = 0; i < NCFG; i++)
			if (!strcmp(line, cfg_keys[i].key) && !*cfg_field(c, i))
				*cfg_field(c, i) = strdup(sp);
	}
	fclose(f);
	if (!c->url) {
		config_free(c);
		return df_errf(err, -EINVAL, "%s: no \"url\" line; set the remote again with `deltafs "
			       "remote %s set URL`", path, dir);
	}
	return 0;
}

int rt_open(store *s, uint64_t cache_bytes, rt_tier **out, df_err *err)
{
	rb_config cfg;
	*out = NULL;
	int rc = config_get(store_path(s), &cfg, err);
	if (rc)
		return rc == -ENOENT ? 0 : rc;
	rt_tier *t = calloc(1, sizeof *t);
	if (!t)
		rc = df_errf(err, -ENOMEM, "out of memory");
	else
		rc = rb_open(&cfg, &t->be, err);
	config_free(&cfg);
	if (rc) {
		free(t);
		return rc;
	}
	t->st = s;
	t->cap = cache_bytes ? cache_bytes : RT_CACHE_DEFAULT;
	t->aq_max = t->cap / 4 / RT_AHEAD_BLOB < RT_AHEAD_QUEUE ? (size_t)(t->cap / 4 / RT_AHEAD_BLOB)
								 : RT_AHEAD_QUEUE;
	t->nbuckets = 1024;
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
	pthread_cond_init(&t->aq_cv, NULL);
	snprintf(t->dir, sizeof t->dir, "%s/cache", store_path(s));
	/* A user who may read the store but not write its directory (verify, export) still reads
	 * through the remote, without a cache: c_write's failures only cost fetches. */
	if (!(t->buckets = calloc(t->nbuckets, sizeof *t->buckets)))
		rc = df_errf(err, -ENOMEM, "out of memory");
	else if (mkdir(t->dir, 0700) && errno != EEXIST && errno != EACCES && errno != EROFS)
		rc = df_errf(err, -errno, "%s: cannot create the remote cache: %s", t->dir,
			     strerror(errno));
	else if (!access(t->dir, F_OK))
		rc = c_scan(t, err);
	if (rc) {
		rt_close(t);
		return rc;
	}
	store_set_fetch(s, rt_fetch, rt_ahead, t);
	*out = t;
	return 0;
}

void rt_close(rt_tier *t)
{
	if (!t)
		return;
	/* A fetch-ahead thread ends once its fetch does (within the remote's timeout). */
	pthread_mutex_lock(&t->mu);
	t->stop = 1;
	pthread_cond_broadcast(&t->aq_cv);
	pthread_mutex_unlock(&t->mu);
	for (unsigned i = 0; i < t->nahead; i++)
		pthread_join(t->ahead[i], NULL);
	if (t->st)
		store_set_fetch(t->st, NULL, NULL, NULL);
	for (size_t i = 0; t->buckets && i < t->nbuckets; i++)
		for (centry *e = t->buckets[i], *nx; e; e = nx) {
			nx = e->chain;
			free(e);
		}
	free(t->buckets);
	rb_close(t->be);
	pthread_mutex_destroy(&t->mu);
	pthread_cond_destroy(&t->cv);
	pthread_cond_destroy(&t->aq_cv);
	free(t);
}

rb_backend *rt_backend(rt_tier *t)
{
	return t->be;
}

void rt_get_stats(rt_tier *t, rt_stats *out)
{
	pthread_mutex_lock(&t->mu);
	*out = t->stats;
	pthread_mutex_unlock(&t->mu);
}

/* --- parallel work over a list of blobs ----------------------------------------------------- */

typedef struct blob_ref {
	uint8_t h[16];
	uint32_t len;
} blob_ref;

static int cmp_ref(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

/* Append the blobs of m to *v (sorted and deduplicated by the caller). */
static int add_blobs(const manifest *m, blob_ref **v, size_t *n, size_t *cap)
{
	mf_blob_iter it = {.m = m};
	for (const mf_chunk *ch; (ch = mf_blob_next(&it));) {
		if (*n == *cap) {
			blob_ref *nv = realloc(*v, (*cap = *cap ? *cap * 2 : 1024) * sizeof **v);
			if (!nv)
				return -ENOMEM;
			*v = nv;
		}
		memcpy((*v)[*n].h, ch->hash, 16);
		(*v)[(*n)++].len = ch->blen;
	}
	return 0;
}

static size_t dedup(blob_ref *v, size_t n)
{
	size_t k = 0;
	if (n)
		qsort(v, n, sizeof *v, cmp_ref);
	for (size_t i = 0; i < n; i++)
		if (!k || memcmp(v[k - 1].h, v[i].h, 16))
			v[k++] = v[i];
	return k;
}

typedef struct par {
	store *st;
	rt_tier *t;
	const blob_ref *v;      /* push, fetch_all: the blobs (their lengths weigh the progress) */
	const rb_entry *ents;   /* manifests: the catalog entries to fetch... */
	manifest **mfs;         /* ...and where each one's manifest goes */
	size_t n;
	_Atomic size_t next;
	_Atomic uint64_t done_bytes, sent, sent_bytes, had, had_bytes;
	_Atomic int failed;
	pthread_mutex_t mu; /* guards err, rc, running, the batch */
	pthread_cond_t cv;  /* the last worker ended */
	unsigned running;
	int rc;    /* the first failure's error code... */
	df_err err; /* ...and message */
	store_blob *batch; /* fetch_all: fetched blobs waiting for store_put_batch */
	size_t nbatch, batch_bytes;
	int (*one)(struct par *p, size_t i, df_err *err);
} par;

static void *par_worker(void *arg)
{
	par *p = arg;
	size_t i;
	while (!p->failed && (i = atomic_fetch_add(&p->next, 1)) < p->n) {
		df_err e;
		int rc = p->one(p, i, &e);
		if (rc) {
			pthread_mutex_lock(&p->mu);
			if (!p->failed++) {
				p->rc = rc;
				p->err = e;
			}
			pthread_mutex_unlock(&p->mu);
		}
		if (p->v)
			p->done_bytes += p->v[i].len;
	}
	pthread_mutex_lock(&p->mu);
	if (!--p->running)
		pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Run p->one over items [0, p->n) on `threads` threads (at most one per item), reporting progress
 * from this one. The first failure stops the others from taking new items. */
static int par_run(par *p, unsigned threads, rt_progress_fn progress, void *ud, df_err *err)
{
	uint64_t total = 0;
	for (size_t i = 0; p->v && i < p->n; i++)
		total += p->v[i].len;
	if (!threads)
		threads = RT_THREADS;
	if (threads > p->n)
		threads = p->n ? (unsigned)p->n : 1;
	pthread_t *th = calloc(threads, sizeof *th);
	unsigned started = 0;
	if (!th)
		return df_errf(err, -ENOMEM, "out of memory");
	pthread_cond_init(&p->cv, NULL);
	pthread_mutex_lock(&p->mu);
	for (; started < threads; started++)
		if (pthread_create(&th[started], NULL, par_worker, p))
			break;
	p->running += started;
	while (p->running) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 200 * 1000 * 1000;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if (pthread_cond_timedwait(&p->cv, &p->mu, &until) == ETIMEDOUT && progress) {
			pthread_mutex_unlock(&p->mu);
			progress(ud, p->done_bytes, total);
			pthread_mutex_lock(&p->mu);
		}
	}
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(th);
	pthread_cond_destroy(&p->cv);
	if (!started)
		return df_errf(err, -EAGAIN, "cannot start threads");
	if (progress)
		progress(ud, p->done_bytes, total);
	if (p->failed > 1)
		return df_errf(err, p->rc, "%s (and %d more errors)", p->err.msg, p->failed - 1);
	return p->failed ? df_errf(err, p->rc, "%s", p->err.msg) : 0;
}

/* --- push ----------------------------------------------------------------------------------- */

static int push_one(par *p, size_t i, df_err *err)
{
	const blob_ref *b = &p->v[i];
	rb_backend *be = p->t->be;
	char oid[33];
	uint64_t size;
	time_t mtime;
	rb_blob_oid(b->h, oid);
	int rc = be->ops->stat(be, oid, &size, &mtime, err);
	if (!rc) {
		/* This push will publish a manifest naming it: keep remote gc off it meanwhile
		 * (gc deletes only objects unwritten for its grace period). One small write op. */
		if ((rc = be->ops->touch(be, oid, err)) && rc != -ENOENT)
			return rc;
		if (rc != -ENOENT) {
			p->had++;
			p->had_bytes += b->len;
			return 0;
		}
	}
	if (rc != -ENOENT)
		return rc;
	MDB_txn *txn;
	const void *data;
	size_t n;
	if ((rc = store_rtxn(p->st, &txn, err)))
		return rc;
	rc = store_blob_get(p->st, txn, b->h, &data, &n);
	if (rc == -ENOENT)
		rc = df_errf(err, -EIO, "%s: blob %s is neither in this store nor in %s (it was cloned "
			     "from another remote?)", store_path(p->st), oid, be->url);
	else if (rc)
		rc = df_errf(err, rc, "%s: cannot read blob %s", store_path(p->st), oid);
	else if (store_blob_check(b->h, data, n))
		rc = df_errf(err, -EIO, "%s: blob %s fails its hash (damaged store: run `deltafs "
			     "verify`); not pushed", store_path(p->st), oid);
	else if ((rc = be->ops->put(be, oid, data, n, 1, err)) == -EEXIST)
		rc = 0; /* another host pushed it meanwhile */
	else if (!rc) {
		p->sent++;
		p->sent_bytes += n;
	}
	store_txn_end(p->st, txn);
	return rc;
}

/* The manifest's object name and bytes as pushed: encoded with uid 0, since uids are local to a
 * store, so one checkpoint pushed from any host has one name. */
static int mf_object(manifest *m, uint8_t **buf, size_t *len, char oid[36])
{
	uint64_t uid = m->uid;
	uint8_t h[16];
	m->uid = 0;
	int rc = mf_encode(m, buf, len);
	m->uid = uid;
	if (rc)
		return rc;
	store_hash(*buf, *len, h);
	memcpy(oid, RT_MANIFEST_PREFIX, 2);
	rb_blob_oid(h, oid + 2);
	return 0;
}

/* Add checkpoint name and its base chain to the list (*ms, *nms), each once. */
static int want_ckpt(store *s, MDB_txn *txn, const char *name, manifest ***ms, size_t *nms,
		     df_err *err)
{
	for (int depth = 0; name && *name; depth++) {
		size_t i = 0;
		while (i < *nms && strcmp((*ms)[i]->name, name))
			i++;
		if (i < *nms)
			return 0;
		if (depth > 64)
			return df_errf(err, -EBADMSG, "%s: base chain of \"%s\" too deep (a cycle?)",
				       store_path(s), name);
		manifest *m;
		int rc = store_ckpt_get(s, txn, name, &m, err);
		if (rc)
			return rc;
		manifest **nv = realloc(*ms, (*nms + 1) * sizeof **ms);
		if (!nv) {
			mf_free(m);
			return df_errf(err, -ENOMEM, "out of memory");
		}
		*ms = nv;
		(*ms)[(*nms)++] = m;
		name = m->base;
	}
	return 0;
}

/* Order ms so that every checkpoint comes after its base (want_ckpt lists a fine-tune first): a
 * backend that publishes entry by entry (S3) then never shows a fine-tune without its base. */
static void bases_first(manifest **ms, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		size_t i = k;
		for (; i < n; i++) {
			size_t j = k;
			while (j < n && (j == i || strcmp(ms[j]->name, ms[i]->base)))
				j++;
			if (j == n) /* its base is placed already, or not pushed */
				break;
		}
		if (i == n) /* a cycle: want_ckpt refuses those, keep the order */
			return;
		manifest *m = ms[i];
		memmove(ms + k + 1, ms + k, (i - k) * sizeof *ms);
		ms[k] = m;
	}
}

/* A push must not replace, in passing, a checkpoint another host published since this store last
 * pulled it: of ms, those not named explicitly must be absent from the catalog or published there
 * as they are here. (Between this check and the publish another host may still publish one; the
 * later publish wins, as for two pushes of the same name.) same[i] is set where the catalog
 * publishes ms[i] as it is here: nothing to send for it. */
static int check_versions(rt_tier *t, manifest **ms, size_t nms, const char *const *named,
			  size_t nnamed, char *same, df_err *err)
{
	rb_entry *e;
	size_t n;
	int rc = t->be->ops->catalog(t->be, &e, &n, err);
	if (rc)
		return rc;
	for (size_t i = 0; !rc && i < nms; i++) {
		size_t k = 0, j = 0;
		while (k < nnamed && strcmp(named[k], ms[i]->name))
			k++;
		while (j < n && strcmp(e[j].name, ms[i]->name))
			j++;
		if (j == n)
			continue;
		uint8_t *buf;
		size_t len;
		char oid[36];
		if (mf_object(ms[i], &buf, &len, oid)) {
			rc = df_errf(err, -ENOMEM, "out of memory");
			break;
		}
		free(buf);
		same[i] = !strcmp(oid, e[j].oid);
		if (!same[i] && k == nnamed)
			rc = df_errf(err, -EEXIST, "%s: checkpoint \"%s\" is published there in another "
				     "version than this store's: `deltafs pull` first, or push \"%s\" by "
				     "name to replace it", t->be->url, ms[i]->name, ms[i]->name);
	}
	rb_entries_free(e, n);
	return rc;
}

int rt_push(store *s, rt_tier *t, const char *const *names, size_t n, unsigned threads,
	    rt_progress_fn progress, void *ud, rt_push_stats *st, df_err *err)
{
	MDB_txn *txn;
	manifest **ms = NULL;
	size_t nms = 0, nb = 0, cap = 0;
	char **all = NULL;
	size_t nall = 0;
	blob_ref *v = NULL;
	rb_entry *pub = NULL;
	size_t npub = 0;
	char *same = NULL;
	const char *const *named = names;
	size_t nnamed = n;
	memset(st, 0, sizeof *st);
	int rc = store_rtxn(s, &txn, err);
	if (rc)
		return rc;
	if (!n && !(rc = store_ckpt_list(s, txn, &all, &nall, err))) {
		names = (const char *const *)all;
		n = nall;
	}
	for (size_t i = 0; !rc && i < n; i++)
		rc = want_ckpt(s, txn, names[i], &ms, &nms, err);
	store_txn_end(s, txn);
	bases_first(ms, nms);
	if (!rc && !(same = calloc(nms ? nms : 1, 1)))
		rc = df_errf(err, -ENOMEM, "out of memory");
	if (!rc)
		rc = check_versions(t, ms, nms, named, nnamed, same, err);
	store_names_free(all, nall);
	for (size_t i = 0; !rc && i < nms; i++)
		if (add_blobs(ms[i], &v, &nb, &cap))
			rc = df_errf(err, -ENOMEM, "out of memory");
	if (!rc) {
		par p = {.st = s, .t = t, .v = v, .n = dedup(v, nb), .one = push_one};
		pthread_mutex_init(&p.mu, NULL);
		rc = par_run(&p, threads, progress, ud, err);
		pthread_mutex_destroy(&p.mu);
		st->blobs_sent = p.sent;
		st->bytes_sent = p.sent_bytes;
		st->blobs_had = p.had;
		st->bytes_had = p.had_bytes;
	}
	/* Manifests, once every blob they name is durable; then one catalog update for all that the
	 * catalog does not publish as they are (on S3, one entry after the other, bases first). A
	 * published manifest needs no touch: remote gc keeps what the catalog names. */
	if (!rc && !(pub = calloc(nms ? nms : 1, sizeof *pub)))
		rc = df_errf(err, -ENOMEM, "out of memory");
	for (size_t i = 0; !rc && i < nms; i++) {
		uint8_t *buf;
		size_t len;
		char oid[36];
		if (same[i]) {
			st->unchanged++;
			continue;
		}
		if (mf_object(ms[i], &buf, &len, oid)) {
			rc = df_errf(err, -ENOMEM, "out of memory");
			break;
		}
		rc = t->be->ops->put(t->be, oid, buf, len, 1, err);
		free(buf);
		if (!rc)
			st->manifests_sent++;
		else if (rc == -EEXIST) /* pushed before; unpublished since, maybe: keep gc off it */
			rc = t->be->ops->touch(t->be, oid, err);
		pub[npub].name = ms[i]->name;
		if (!rc && !(pub[npub++].oid = strdup(oid)))
			rc = df_errf(err, -ENOMEM, "out of memory");
	}
	if (!rc && npub && !(rc = t->be->ops->publish(t->be, pub, npub, err))) {
		df_err ne;
		st->ckpts = npub;
		t->be->ops->notify(t->be, &ne); /* a courtesy: watchers poll as well */
	}
	for (size_t i = 0; i < npub; i++)
		free(pub[i].oid);
	free(pub);
	free(same);
	for (size_t i = 0; i < nms; i++)
		mf_free(ms[i]);
	free(ms);
	free(v);
	return rc;
}

/* --- pull ----------------------------------------------------------------------------------- */

/* Whether the local checkpoint name is the manifest object oid already. */
static int same_local(store *s, const char *name, const char *oid)
{
	MDB_txn *txn;
	manifest *m;
	uint8_t *buf;
	size_t len;
	char have[36];
	int same = 0;
	if (store_rtxn(s, &txn, NULL))
		return 0;
	if (!store_ckpt_get(s, txn, name, &m, NULL)) {
		if (!mf_object(m, &buf, &len, have)) {
			same = !strcmp(have, oid);
			free(buf);
		}
		mf_free(m);
	}
	store_txn_end(s, txn);
	return same;
}

static int local_exists(store *s, const char *name)
{
	MDB_txn *txn;
	uint64_t uid;
	if (store_rtxn(s, &txn, NULL))
		return 0;
	int rc = store_ckpt_uid(s, txn, name, &uid);
	store_txn_end(s, txn);
	return rc == 0;
}

/* The manifest catalog entry e names: read, checked against its object name (a damaged object
 * gives -EIO, never a manifest), decoded, and checked to be e's checkpoint. */
static int get_manifest(rt_tier *t, const rb_entry *e, manifest **out, df_err *err)
{
	void *buf;
	size_t len;
	uint8_t h[16];
	char want[36];
	df_err me;
	int rc = t->be->ops->get(t->be, e->oid, &buf, &len, err);
	if (rc)
		return rc == -ENOENT ? df_errf(err, -EIO, "%s: checkpoint \"%s\": its manifest %s is "
					       "missing from the remote", t->be->url, e->name, e->oid)
				     : rc;
	store_hash(buf, len, h);
	memcpy(want, RT_MANIFEST_PREFIX, 2);
	rb_blob_oid(h, want + 2);
	if (strcmp(want, e->oid))
		rc = df_errf(err, -EIO, "%s: checkpoint \"%s\": manifest %s fails its hash (damaged "
			     "in the remote)", t->be->url, e->name, e->oid);
	else if ((rc = mf_decode(buf, len, out, &me)))
		rc = df_errf(err, rc, "%s: checkpoint \"%s\": %s", t->be->url, e->name, me.msg);
	else if (strcmp((*out)->name, e->name)) {
		rc = df_errf(err, -EIO, "%s: catalog entry \"%s\" names the manifest of \"%s\"",
			     t->be->url, e->name, (*out)->name);
		mf_free(*out);
	}
	free(buf);
	if (rc)
		*out = NULL;
	return rc;
}

static int manifest_one(par *p, size_t i, df_err *err)
{
	return get_manifest(p->t, &p->ents[i], &p->mfs[i], err);
}

/* The manifests of entries e[0..n) into ms[0..n) (NULL where none came), fetched on
 * RT_MANIFEST_THREADS threads: each is one small read, whose round trip (~45 ms a GET on radosgw)
 * costs far more than the bytes, so a clone of many checkpoints waits on latency, not bandwidth. */
static int get_manifests(rt_tier *t, const rb_entry *e, size_t n, manifest **ms, df_err *err)
{
	par p = {.t = t, .ents = e, .mfs = ms, .n = n, .one = manifest_one};
	if (!n)
		return 0;
	pthread_mutex_init(&p.mu, NULL);
	int rc = par_run(&p, RT_MANIFEST_THREADS, NULL, NULL, err);
	pthread_mutex_destroy(&p.mu);
	return rc;
}

int rt_pull(store *s, rt_tier *t, rt_pull_stats *st, df_err *err)
{
	rb_entry *e;
	size_t n;
	memset(st, 0, sizeof *st);
	int rc = t->be->ops->catalog(t->be, &e, &n, err);
	if (rc)
		return rc;
	/* want: shallow copies of the entries that differ from the local checkpoints */
	rb_entry *want = calloc(n ? n : 1, sizeof *want);
	manifest **todo = calloc(n ? n : 1, sizeof *todo);
	int *existed = calloc(n ? n : 1, sizeof *existed);
	size_t ntodo = 0;
	if (!want || !todo || !existed)
		rc = df_errf(err, -ENOMEM, "out of memory");
	for (size_t i = 0; !rc && i < n; i++) {
		if (same_local(s, e[i].name, e[i].oid)) {
			st->unchanged++;
			continue;
		}
		existed[ntodo] = local_exists(s, e[i].name);
		want[ntodo++] = e[i];
	}
	if (!rc)
		rc = get_manifests(t, want, ntodo, todo, err);
	/* Bases first: each pass places those whose base is local, placed already, or absent. */
	manifest **order = calloc(ntodo ? ntodo : 1, sizeof *order);
	size_t placed = 0;
	if (!rc && !order)
		rc = df_errf(err, -ENOMEM, "out of memory");
	for (int progress = 1; !rc && placed < ntodo && progress;) {
		progress = 0;
		for (size_t i = 0; i < ntodo; i++) {
			manifest *m = todo[i];
			int ready = m && (!*m->base || local_exists(s, m->base));
			for (size_t j = 0; m && !ready && j < placed; j++)
				ready = !strcmp(order[j]->name, m->base);
			/* A base that is being replaced goes first even where a copy is local. */
			for (size_t j = 0; ready && j < ntodo; j++)
				ready = !(todo[j] && j != i && !strcmp(todo[j]->name, m->base));
			if (!ready)
				continue;
			order[placed++] = m;
			if (existed[i])
				st->replaced++;
			else
				st->added++;
			todo[i] = NULL;
			progress = 1;
		}
	}
	for (size_t i = 0; !rc && i < ntodo; i++)
		if (todo[i]) {
			rc = df_errf(err, -EIO, "%s: checkpoint \"%s\": its base \"%s\" is not published",
				     t->be->url, todo[i]->name, todo[i]->base);
			break;
		}
	if (!rc && placed)
		rc = store_adopt(s, order, placed, err);
	if (rc)
		st->added = st->replaced = 0;
	for (size_t i = 0; order && i < placed; i++)
		mf_free(order[i]);
	free(order);
	for (size_t i = 0; todo && i < ntodo; i++)
		mf_free(todo[i]);
	free(todo);
	free(existed);
	free(want);
	rb_entries_free(e, n);
	return rc;
}

static void on_change(void *ud)
{
	rt_tier *t = ud;
	pthread_mutex_lock(&t->mu);
	t->changed = 1;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

int rt_wait_change(rt_tier *t, unsigned seconds)
{
	df_err e;
	struct timespec until;
	/* (Re)register: the first call, or after the watch was lost. Failing is no worse than
	 * polling, which this still does. */
	t->be->ops->watch(t->be, on_change, t, &e);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += seconds;
	pthread_mutex_lock(&t->mu);
	while (!t->changed)
		if (pthread_cond_timedwait(&t->cv, &t->mu, &until) == ETIMEDOUT)
			break;
	int changed = t->changed;
	t->changed = 0;
	pthread_mutex_unlock(&t->mu);
	return changed;
}

/* --- fetch everything ----------------------------------------------------------------------- */

#define RT_BATCH_BYTES (32u << 20)

static int flush_batch(par *p, df_err *err)
{
	int rc = p->nbatch ? store_put_batch(p->st, p->batch, p->nbatch, NULL, err) : 0;
	for (size_t i = 0; i < p->nbatch; i++)
		free((void *)p->batch[i].p);
	p->nbatch = p->batch_bytes = 0;
	return rc;
}

static int fetch_one(par *p, size_t i, df_err *err)
{
	const blob_ref *b = &p->v[i];
	MDB_txn *txn;
	const void *data;
	size_t n;
	int rc = store_rtxn(p->st, &txn, err);
	if (rc)
		return rc;
	rc = store_blob_get(p->st, txn, b->h, &data, &n);
	store_txn_end(p->st, txn);
	if (!rc)
		return 0;
	/* Straight from the remote: a blob headed for data.mdb has no business in the cache. */
	void *buf;
	char oid[33];
	rb_blob_oid(b->h, oid);
	if ((rc = p->t->be->ops->get(p->t->be, oid, &buf, &n, err)))
		return rc == -ENOENT ? df_errf(err, -EIO, "%s: object %s is missing from the remote",
					       p->t->be->url, oid) : rc;
	if (store_blob_check(b->h, buf, n)) {
		free(buf);
		return df_errf(err, -EIO, "%s: object %s fails its hash (damaged in the remote)",
			       p->t->be->url, oid);
	}
	pthread_mutex_lock(&p->mu);
	p->sent++;
	p->sent_bytes += n;
	p->batch[p->nbatch].p = buf;
	p->batch[p->nbatch].n = n;
	memcpy(p->batch[p->nbatch].hash, b->h, 16);
	p->nbatch++;
	p->batch_bytes += n;
	if (p->batch_bytes >= RT_BATCH_BYTES || p->nbatch == RT_BATCH_BYTES / 4096)
		rc = flush_batch(p, err);
	pthread_mutex_unlock(&p->mu);
	return rc;
}

int rt_fetch_all(store *s, rt_tier *t, unsigned threads, rt_progress_fn progress, void *ud,
		 uint64_t *bytes, df_err *err)
{
	MDB_txn *txn;
	char **names = NULL;
	size_t n = 0, nb = 0, cap = 0;
	blob_ref *v = NULL;
	int rc = store_rtxn(s, &txn, err);
	if (rc)
		return rc;
	rc = store_ckpt_list(s, txn, &names, &n, err);
	for (size_t i = 0; !rc && i < n; i++) {
		manifest *m;
		if (!(rc = store_ckpt_get(s, txn, names[i], &m, err))) {
			if (add_blobs(m, &v, &nb, &cap))
				rc = df_errf(err, -ENOMEM, "out of memory");
			mf_free(m);
		}
	}
	store_txn_end(s, txn);
	store_names_free(names, n);
	par p = {.st = s, .t = t, .v = v, .one = fetch_one};
	if (!rc) {
		p.n = dedup(v, nb);
		if (!(p.batch = calloc(RT_BATCH_BYTES / 4096, sizeof *p.batch)))
			rc = df_errf(err, -ENOMEM, "out of memory");
	}
	if (!rc && !(rc = store_ingest_lock(s, err))) {
		pthread_mutex_init(&p.mu, NULL);
		rc = par_run(&p, threads, progress, ud, err);
		int rc2 = flush_batch(&p, rc ? NULL : err);
		rc = rc ? rc : rc2;
		pthread_mutex_destroy(&p.mu);
		store_ingest_unlock(s);
	}
	if (bytes)
		*bytes = p.sent_bytes;
	free(p.batch);
	free(v);
	return rc;
}

/* --- the remote's catalog: removal and garbage collection ----------------------------------- */

/* The published manifests, decoded, in catalog order (entries e[0..n)). */
static int catalog_manifests(rt_tier *t, rb_entry **e, size_t *n, manifest ***ms, df_err *err)
{
	int rc = t->be->ops->catalog(t->be, e, n, err);
	if (rc)
		return rc;
	if (!(*ms = calloc(*n ? *n : 1, sizeof **ms)))
		rc = df_errf(err, -ENOMEM, "out of memory");
	else
		rc = get_manifests(t, *e, *n, *ms, err);
	if (rc) {
		for (size_t i = 0; *ms && i < *n; i++)
			mf_free((*ms)[i]);
		free(*ms);
		rb_entries_free(*e, *n);
	}
	return rc;
}

static void manifests_free(rb_entry *e, size_t n, manifest **ms)
{
	for (size_t i = 0; i < n; i++)
		mf_free(ms[i]);
	free(ms);
	rb_entries_free(e, n);
}

int rt_unpublish(rt_tier *t, const char *name, df_err *err)
{
	rb_entry *e;
	manifest **ms;
	size_t n, at = SIZE_MAX;
	char users[512] = "";
	int nusers = 0;
	int rc = catalog_manifests(t, &e, &n, &ms, err);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(e[i].name, name))
			at = i;
		if (!strcmp(ms[i]->base, name)) {
			size_t l = strlen(users);
			snprintf(users + l, sizeof users - l, "%s%s", nusers++ ? ", " : "", e[i].name);
		}
	}
	if (at == SIZE_MAX)
		rc = df_errf(err, -ENOENT, "%s: no published checkpoint named \"%s\"", t->be->url,
			     name);
	else if (nusers)
		rc = df_errf(err, -EBUSY, "%s: \"%s\" is the published base of %s: remove %s first",
			     t->be->url, name, users, nusers > 1 ? "them" : "it");
	else if (!(rc = t->be->ops->unpublish(t->be, &e[at], 1, err))) {
		df_err ne;
		t->be->ops->notify(t->be, &ne);
	}
	manifests_free(e, n, ms);
	return rc;
}

typedef struct gc_list {
	char **oids;
	size_t n, cap;
} gc_list;

static int gc_collect(void *ud, const char *oid)
{
	gc_list *l = ud;
	if (l->n == l->cap) {
		char **nv = realloc(l->oids, (l->cap = l->cap ? l->cap * 2 : 1024) * sizeof *nv);
		if (!nv)
			return -ENOMEM;
		l->oids = nv;
	}
	if (!(l->oids[l->n] = strdup(oid)))
		return -ENOMEM;
	l->n++;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int rt_gc(rt_tier *t, unsigned grace_s, rt_gc_stats *st, df_err *err)
{
	rb_entry *e;
	manifest **ms;
	size_t n, nb = 0, cap = 0;
	blob_ref *v = NULL;
	gc_list l = {0};
	memset(st, 0, sizeof *st);
	/* What is published first, objects after: an object a push writes after the catalog is read
	 * is newer than the grace period, and so is every blob a push found already there (touched). */
	int rc = catalog_manifests(t, &e, &n, &ms, err);
	if (rc)
		return rc;
	for (size_t i = 0; !rc && i < n; i++)
		if (add_blobs(ms[i], &v, &nb, &cap))
			rc = df_errf(err, -ENOMEM, "out of memory");
	nb = rc ? 0 : dedup(v, nb);
	char **kept = calloc(n ? n : 1, sizeof *kept);
	if (!rc && !kept)
		rc = df_errf(err, -ENOMEM, "out of memory");
	for (size_t i = 0; !rc && i < n; i++)
		kept[i] = e[i].oid;
	if (!rc) {
		if (n)
			qsort(kept, n, sizeof *kept, cmp_str);
		rc = t->be->ops->list(t->be, gc_collect, &l, err);
		if (rc == -ENOMEM)
			rc = df_errf(err, rc, "out of memory");
	}
	time_t now = time(NULL);
	for (size_t i = 0; !rc && i < l.n; i++) {
		const char *oid = l.oids[i];
		blob_ref key;
		int ours = !hex_hash(oid, key.h) || (!strncmp(oid, RT_MANIFEST_PREFIX, 2) &&
						      !hex_hash(oid + 2, key.h));
		if (!ours) /* the catalog, or an object deltafs did not write: not ours to delete */
			continue;
		if (oid[1] == '.' ? bsearch(&oid, kept, n, sizeof *kept, cmp_str) != NULL
				  : nb && bsearch(&key, v, nb, sizeof *v, cmp_ref) != NULL) {
			st->kept++;
			continue;
		}
		uint64_t size;
		time_t mtime;
		if ((rc = t->be->ops->stat(t->be, oid, &size, &mtime, err)) == -ENOENT) {
			rc = 0; /* another gc got there first */
			continue;
		}
		if (rc)
			break;
		if (now - mtime < (time_t)grace_s) {
			st->young++;
			continue;
		}
		if ((rc = t->be->ops->remove(t->be, oid, err)) == -ENOENT)
			rc = 0;
		else if (!rc) {
			st->removed++;
			st->removed_bytes += size;
		}
	}
	for (size_t i = 0; i < l.n; i++)
		free(l.oids[i]);
	free(l.oids);
	free(kept);
	free(v);
	manifests_free(e, n, ms);
	return rc;
}
