/*
 * cache.c -- chunk cache: chained hash table, LRU list of evictable entries, one condvar for the
 * threads waiting on LOADING entries (waits are rare and short: a broadcast costs less than a
 * condvar per entry).
 */
#include "cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Charged per entry on top of its bytes: the struct, the malloc headers, the table slot. */
#define FC_OVERHEAD 128

/* Spare buffers. mount.deltafs makes every chunk buffer its own mapping (main.c: so that freed
 * chunks leave the process), which costs a fresh zeroed page per 4 KiB on every miss: page faults
 * were over 40% of the daemon's time under cold random reads. Buffers of evicted entries are
 * therefore kept, by size class (multiples of FC_CLASS up to FC_NCLASS of them), for the next
 * misses, up to 1/16 of the cache's bound (at most FC_SPARE_MAX): the memory bound becomes
 * max_bytes + that. */
#define FC_CLASS (64u << 10)
#define FC_NCLASS 64
#define FC_SPARE_MAX ((size_t)64 << 20)

enum { FC_LOADING, FC_READY, FC_FAILED };

struct fc_chunk {
	fc_key key;
	fc_chunk *hnext;        /* hash chain */
	fc_chunk *lprev, *lnext; /* LRU list: only READY entries with refs == 0 */
	size_t len, cap; /* cap: the buffer's size (len rounded up to its class) */
	uint8_t *data;
	int refs;
	int state;
	int err; /* FC_FAILED: the load's errno; a FAILED entry is out of the table already */
};

struct fcache {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	fc_chunk **tab;
	size_t mask; /* table size - 1 (a power of two) */
	size_t count;
	fc_chunk lru; /* sentinel: lru.lnext is the least recently used */
	size_t max_bytes, bytes;
	void *spare[FC_NCLASS + 1]; /* by class: singly linked through each buffer's first word */
	size_t spare_bytes, spare_max;
	fc_stats st;
};

static size_t buf_cap(size_t len)
{
	return len < FC_CLASS ? (len ? len : 1) : (len + FC_CLASS - 1) / FC_CLASS * FC_CLASS;
}

/* The size class of a buffer of cap bytes, 0 if buffers of that size are not recycled. */
static unsigned buf_class(size_t cap)
{
	return cap % FC_CLASS == 0 && cap / FC_CLASS <= FC_NCLASS ? (unsigned)(cap / FC_CLASS) : 0;
}

/* With c->mu held: a spare buffer of cap bytes, or NULL. */
static void *spare_take(fcache *c, size_t cap)
{
	unsigned k = buf_class(cap);
	void *p = k ? c->spare[k] : NULL;
	if (p) {
		memcpy(&c->spare[k], p, sizeof p);
		c->spare_bytes -= cap;
	}
	return p;
}

/* With c->mu held: keep buffer p (cap bytes) as a spare, or free it. */
static void spare_give(fcache *c, void *p, size_t cap)
{
	unsigned k = buf_class(cap);
	if (p && k && c->spare_bytes + cap <= c->spare_max) {
		memcpy(p, &c->spare[k], sizeof p);
		c->spare[k] = p;
		c->spare_bytes += cap;
	} else {
		free(p);
	}
}

static size_t key_hash(const fc_key *k)
{
	uint64_t h = k->uid * 0x9E3779B97F4A7C15ull;
	h ^= ((uint64_t)k->file << 40 ^ (uint64_t)k->seg << 20 ^ k->chunk) * 0xC2B2AE3D27D4EB4Full;
	h ^= h >> 31;
	h *= 0x165667B19E3779F9ull;
	return (size_t)(h ^ h >> 29);
}

static int key_eq(const fc_key *a, const fc_key *b)
{
	return a->uid == b->uid && a->file == b->file && a->seg == b->seg && a->chunk == b->chunk;
}

static size_t cost(const fc_chunk *e) { return e->len + FC_OVERHEAD; }

fcache *fc_new(size_t max_bytes)
{
	fcache *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->mask = 1023;
	c->tab = calloc(c->mask + 1, sizeof *c->tab);
	if (!c->tab) {
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	c->lru.lnext = c->lru.lprev = &c->lru;
	c->max_bytes = max_bytes;
	c->spare_max = max_bytes / 16 < FC_SPARE_MAX ? max_bytes / 16 : FC_SPARE_MAX;
	return c;
}

/* With c->mu held (or the cache being freed). */
static void entry_free(fcache *c, fc_chunk *e)
{
	spare_give(c, e->data, e->cap);
	free(e);
}

void fc_free(fcache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i <= c->mask; i++)
		for (fc_chunk *e = c->tab[i], *n; e; e = n) {
			n = e->hnext;
			free(e->data);
			free(e);
		}
	for (unsigned k = 0; k <= FC_NCLASS; k++)
		for (void *p = c->spare[k], *n; p; p = n) {
			memcpy(&n, p, sizeof n);
			free(p);
		}
	free(c->tab);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c);
}

static void lru_unlink(fc_chunk *e)
{
	e->lprev->lnext = e->lnext;
	e->lnext->lprev = e->lprev;
	e->lprev = e->lnext = NULL;
}

static void lru_push(fcache *c, fc_chunk *e)
{
	e->lprev = c->lru.lprev;
	e->lnext = &c->lru;
	c->lru.lprev->lnext = e;
	c->lru.lprev = e;
}

static fc_chunk **slot_of(fcache *c, const fc_key *k)
{
	fc_chunk **p = &c->tab[key_hash(k) & c->mask];
	while (*p && !key_eq(&(*p)->key, k))
		p = &(*p)->hnext;
	return p;
}

static void tab_unlink(fcache *c, fc_chunk *e)
{
	fc_chunk **p = slot_of(c, &e->key);
	*p = e->hnext;
	e->hnext = NULL;
	c->count--;
}

/* Doubling keeps chains short; a failed allocation only leaves them longer. */
static void tab_grow(fcache *c)
{
	size_t nmask = c->mask * 2 + 1;
	fc_chunk **nt = calloc(nmask + 1, sizeof *nt);
	if (!nt)
		return;
	for (size_t i = 0; i <= c->mask; i++)
		for (fc_chunk *e = c->tab[i], *n; e; e = n) {
			n = e->hnext;
			size_t b = key_hash(&e->key) & nmask;
			e->hnext = nt[b];
			nt[b] = e;
		}
	free(c->tab);
	c->tab = nt;
	c->mask = nmask;
}

static void evict(fcache *c)
{
	while (c->bytes > c->max_bytes && c->lru.lnext != &c->lru) {
		fc_chunk *e = c->lru.lnext;
		lru_unlink(e);
		tab_unlink(c, e);
		c->bytes -= cost(e);
		c->st.evictions++;
		entry_free(c, e);
	}
}

/* With c->mu held: drop one reference; an unreferenced READY entry becomes evictable, an
 * unreferenced FAILED one (already unlinked) is freed. */
static void put_locked(fcache *c, fc_chunk *e)
{
	if (--e->refs)
		return;
	if (e->state == FC_READY) {
		lru_push(c, e);
		evict(c);
	} else {
		c->bytes -= cost(e);
		entry_free(c, e);
	}
}

/* Insert key as LOADING with one reference, run load outside the lock, publish. Called and
 * returns with c->mu held. */
static int load_locked(fcache *c, fc_chunk **slot, const fc_key *key, size_t len, fc_load_fn load,
		       void *arg, fc_chunk **out)
{
	fc_chunk *e = calloc(1, sizeof *e);
	if (!e)
		return -ENOMEM;
	e->key = *key;
	e->len = len;
	e->cap = buf_cap(len);
	e->data = spare_take(c, e->cap);
	e->refs = 1;
	e->state = FC_LOADING;
	*slot = e;
	c->count++;
	c->bytes += cost(e);
	c->st.misses++;
	evict(c);
	if (c->count > c->mask + 1)
		tab_grow(c);
	pthread_mutex_unlock(&c->mu);

	if (!e->data)
		e->data = malloc(e->cap); /* outside the lock: it may be an mmap */
	int rc = e->data ? load(arg, e->data, len) : -ENOMEM;

	pthread_mutex_lock(&c->mu);
	if (rc) {
		e->state = FC_FAILED;
		e->err = rc;
		tab_unlink(c, e);
		c->st.failures++;
	} else {
		e->state = FC_READY;
	}
	pthread_cond_broadcast(&c->cv);
	if (rc) {
		put_locked(c, e);
		return rc;
	}
	*out = e;
	return 0;
}

int fc_get(fcache *c, const fc_key *key, size_t len, fc_load_fn load, void *arg, fc_chunk **out)
{
	int rc = 0;
	pthread_mutex_lock(&c->mu);
	fc_chunk **slot = slot_of(c, key), *e = *slot;
	if (!e) {
		rc = load_locked(c, slot, key, len, load, arg, out);
		pthread_mutex_unlock(&c->mu);
		return rc;
	}
	if (e->refs++ == 0 && e->state == FC_READY)
		lru_unlink(e);
	if (e->state == FC_LOADING) {
		c->st.waits++;
		while (e->state == FC_LOADING)
			pthread_cond_wait(&c->cv, &c->mu);
	} else {
		c->st.hits++;
	}
	if (e->state == FC_FAILED) {
		rc = e->err;
		put_locked(c, e);
	} else {
		*out = e;
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

int fc_prefetch(fcache *c, const fc_key *key, size_t len, fc_load_fn load, void *arg)
{
	int rc = 0;
	pthread_mutex_lock(&c->mu);
	fc_chunk **slot = slot_of(c, key), *e = NULL;
	if (!*slot) {
		rc = load_locked(c, slot, key, len, load, arg, &e);
		if (!rc)
			put_locked(c, e);
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

void fc_put(fcache *c, fc_chunk *e)
{
	pthread_mutex_lock(&c->mu);
	put_locked(c, e);
	pthread_mutex_unlock(&c->mu);
}

const void *fc_data(const fc_chunk *e) { return e->data; }

void fc_get_stats(fcache *c, fc_stats *out)
{
	pthread_mutex_lock(&c->mu);
	*out = c->st;
	out->bytes = c->bytes;
	out->entries = c->count;
	pthread_mutex_unlock(&c->mu);
}
