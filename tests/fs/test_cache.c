/*
 * test_cache.c -- the mount's chunk cache without a mount: one decode however many threads want a
 * chunk (waiters included when it fails), the byte bound with pinned entries, eviction and reload,
 * failed loads not cached, prefetch.
 *
 * No timing: the "many waiters" cases hold the load open until the cache's own statistics show
 * every other thread waiting, then release it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../fs/cache.h"

#define CHECK(c)                                                                                \
	do {                                                                                    \
		if (!(c)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);    \
			exit(1);                                                                \
		}                                                                               \
	} while (0)

#define NTHREADS 8

/* The loader: fills a pattern derived from the key, counts calls, can be held or made to fail. */
typedef struct loader {
	fc_key key;
	atomic_int calls;
	atomic_int hold;  /* while set, load spins (yielding) before returning */
	int fail;         /* errno to return, 0 for success */
} loader;

static uint8_t pattern(const fc_key *k, size_t i)
{
	return (uint8_t)(k->uid * 31 + k->file * 7 + k->seg * 5 + k->chunk * 3 + i);
}

static int load(void *arg, void *dst, size_t len)
{
	loader *l = arg;
	atomic_fetch_add(&l->calls, 1);
	while (atomic_load(&l->hold))
		sched_yield();
	if (l->fail)
		return -l->fail;
	for (size_t i = 0; i < len; i++)
		((uint8_t *)dst)[i] = pattern(&l->key, i);
	return 0;
}

static int holds_pattern(const fc_chunk *e, const fc_key *k, size_t len)
{
	const uint8_t *p = fc_data(e);
	for (size_t i = 0; i < len; i++)
		if (p[i] != pattern(k, i))
			return 0;
	return 1;
}

typedef struct job {
	fcache *c;
	loader *l;
	int rc;
	int ok; /* got the right bytes */
} job;

static void *getter(void *arg)
{
	job *j = arg;
	fc_chunk *e;
	j->rc = fc_get(j->c, &j->l->key, 4096, load, j->l, &e);
	if (!j->rc) {
		j->ok = holds_pattern(e, &j->l->key, 4096);
		fc_put(j->c, e);
	}
	return NULL;
}

/* NTHREADS threads get one key while its load is held open: one load, NTHREADS - 1 waits, and
 * every thread ends with the load's outcome. */
static void many_readers(int fail)
{
	fcache *c = fc_new(1 << 20);
	CHECK(c);
	loader l = {.key = {42, 1, 2, 3}, .fail = fail};
	atomic_store(&l.hold, 1);
	pthread_t t[NTHREADS];
	job j[NTHREADS];
	for (int i = 0; i < NTHREADS; i++) {
		j[i] = (job){c, &l, 0, 0};
		CHECK(!pthread_create(&t[i], NULL, getter, &j[i]));
	}
	fc_stats st;
	do {
		sched_yield();
		fc_get_stats(c, &st);
	} while (st.waits < NTHREADS - 1 || atomic_load(&l.calls) < 1);
	atomic_store(&l.hold, 0);
	for (int i = 0; i < NTHREADS; i++) {
		CHECK(!pthread_join(t[i], NULL));
		CHECK(j[i].rc == -fail);
		CHECK(j[i].ok == !fail);
	}
	CHECK(atomic_load(&l.calls) == 1);
	fc_get_stats(c, &st);
	CHECK(st.misses == 1 && st.waits == NTHREADS - 1);
	if (fail) {
		/* A failure is not cached: the next get loads again. */
		CHECK(st.failures == 1 && st.entries == 0 && st.bytes == 0);
		l.fail = 0;
		fc_chunk *e;
		CHECK(fc_get(c, &l.key, 4096, load, &l, &e) == 0);
		CHECK(holds_pattern(e, &l.key, 4096) && atomic_load(&l.calls) == 2);
		fc_put(c, e);
	} else {
		CHECK(st.entries == 1);
	}
	fc_free(c);
}

/* A bound of ~10 chunks: pinned chunks all stay (the bound is exceeded only by them); unpinned,
 * the cache shrinks back under its bound, least recently used first, and an evicted chunk
 * reloads. */
static void bound_and_eviction(void)
{
	enum { LEN = 1000, PINNED = 25, MAXB = 10 * (LEN + 200) };
	fcache *c = fc_new(MAXB);
	CHECK(c);
	loader l[PINNED];
	fc_chunk *e[PINNED];
	for (int i = 0; i < PINNED; i++) {
		l[i] = (loader){.key = {7, 0, 0, (uint32_t)i}};
		CHECK(fc_get(c, &l[i].key, LEN, load, &l[i], &e[i]) == 0);
	}
	for (int i = 0; i < PINNED; i++) /* pinned data stays intact past the bound */
		CHECK(holds_pattern(e[i], &l[i].key, LEN));
	fc_stats st;
	fc_get_stats(c, &st);
	CHECK(st.entries == PINNED && st.evictions == 0 && st.bytes > MAXB);
	for (int i = 0; i < PINNED; i++)
		fc_put(c, e[i]);
	fc_get_stats(c, &st);
	CHECK(st.bytes <= MAXB && st.entries < PINNED && st.evictions == PINNED - st.entries);

	/* The newest chunk is still cached (a hit), the oldest was evicted (a reload). */
	fc_chunk *x;
	CHECK(fc_get(c, &l[PINNED - 1].key, LEN, load, &l[PINNED - 1], &x) == 0);
	fc_put(c, x);
	CHECK(atomic_load(&l[PINNED - 1].calls) == 1);
	CHECK(fc_get(c, &l[0].key, LEN, load, &l[0], &x) == 0);
	CHECK(holds_pattern(x, &l[0].key, LEN));
	fc_put(c, x);
	CHECK(atomic_load(&l[0].calls) == 2);

	/* Recency counts: the reload evicted the oldest survivor, so first is now the least recently
	 * used. Touched before each of many new chunks, it outlives the ones it was older than. */
	uint32_t first = PINNED - (uint32_t)st.entries + 1;
	loader more[12];
	for (int i = 0; i < 12; i++) {
		more[i] = (loader){.key = {8, 0, 0, (uint32_t)i}};
		CHECK(fc_get(c, &l[first].key, LEN, load, &l[first], &x) == 0);
		fc_put(c, x);
		CHECK(fc_get(c, &more[i].key, LEN, load, &more[i], &x) == 0);
		fc_put(c, x);
	}
	CHECK(atomic_load(&l[first].calls) == 1);
	CHECK(fc_get(c, &l[first + 1].key, LEN, load, &l[first + 1], &x) == 0);
	fc_put(c, x);
	CHECK(atomic_load(&l[first + 1].calls) == 2);
	fc_free(c);
}

static void prefetch(void)
{
	fcache *c = fc_new(1 << 20);
	CHECK(c);
	loader l = {.key = {9, 9, 9, 9}};
	CHECK(fc_prefetch(c, &l.key, 100, load, &l) == 0);
	CHECK(fc_prefetch(c, &l.key, 100, load, &l) == 0);
	CHECK(atomic_load(&l.calls) == 1);
	fc_chunk *e;
	CHECK(fc_get(c, &l.key, 100, load, &l, &e) == 0);
	CHECK(holds_pattern(e, &l.key, 100) && atomic_load(&l.calls) == 1);
	fc_put(c, e);
	loader bad = {.key = {9, 9, 9, 10}, .fail = EIO};
	CHECK(fc_prefetch(c, &bad.key, 100, load, &bad) == -EIO);
	fc_stats st;
	fc_get_stats(c, &st);
	CHECK(st.entries == 1 && st.hits == 1);
	fc_free(c);
}

/* Distinct keys differing in one field each are distinct entries (the key compares every field);
 * many entries force the table to grow. */
static void keys_and_growth(void)
{
	fcache *c = fc_new(64 << 20);
	CHECK(c);
	enum { N = 5000 };
	static loader l[N];
	for (int i = 0; i < N; i++) {
		int f = i % 4;
		l[i] = (loader){.key = {f == 0 ? (uint64_t)i : 1, f == 1 ? (uint32_t)i : 1,
					f == 2 ? (uint32_t)i : 1, f == 3 ? (uint32_t)i : 1}};
		fc_chunk *e;
		CHECK(fc_get(c, &l[i].key, 16, load, &l[i], &e) == 0);
		fc_put(c, e);
	}
	for (int i = 0; i < N; i++) {
		fc_chunk *e;
		CHECK(fc_get(c, &l[i].key, 16, load, &l[i], &e) == 0);
		CHECK(holds_pattern(e, &l[i].key, 16));
		fc_put(c, e);
	}
	fc_stats st;
	fc_get_stats(c, &st);
	CHECK(st.misses == N && st.hits == N && st.entries == N);
	fc_free(c);
}

int main(void)
{
	many_readers(0);
	many_readers(EIO);
	bound_and_eviction();
	prefetch();
	keys_and_growth();
	printf("ok\n");
	return 0;
}
