/*
 * testutil.h -- what the codec tests share: a failing check that names its line, and a seeded
 * PRNG so every run sees the same bytes (a failure reproduces exactly).
 */
#ifndef DELTAFS_TESTS_CODEC_TESTUTIL_H
#define DELTAFS_TESTS_CODEC_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);   \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

/* splitmix64: tiny, seedable, and good enough to make incompressible bytes. */
static inline uint64_t t_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline void t_fill_random(uint8_t *p, size_t n, uint64_t *s)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)t_rand(s);
}

static inline void *t_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	CHECK(p, "out of memory (%zu bytes)", n);
	return p;
}

#endif
