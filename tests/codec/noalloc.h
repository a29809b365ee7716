/*
 * noalloc.h -- count the heap allocations a piece of code makes: the allocator entry points of the
 * process are replaced (the executable's definitions win over libc's for every caller, libzstd
 * included) and forwarded to glibc's own __libc_* functions; `allocs` grows by one per call made
 * while `counting` is set. Include it in exactly one file of a test executable.
 *
 * Under AddressSanitizer the sanitizer owns the allocator: NOALLOC_SKIP is defined and nothing is
 * replaced, and the test should exit 77.
 */
#ifndef DELTAFS_TESTS_NOALLOC_H
#define DELTAFS_TESTS_NOALLOC_H

#if defined(__SANITIZE_ADDRESS__)
#define NOALLOC_SKIP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NOALLOC_SKIP 1
#endif
#endif

#include <errno.h>
#include <stddef.h>

#ifndef NOALLOC_SKIP
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t k, size_t n);
void *__libc_realloc(void *p, size_t n);
void *__libc_memalign(size_t align, size_t n);
void __libc_free(void *p);

static volatile int counting;
static volatile unsigned long allocs;

void *malloc(size_t n)
{
	allocs += counting;
	return __libc_malloc(n);
}

void *calloc(size_t k, size_t n)
{
	allocs += counting;
	return __libc_calloc(k, n);
}

void *realloc(void *p, size_t n)
{
	allocs += counting;
	return __libc_realloc(p, n);
}

void *memalign(size_t align, size_t n)
{
	allocs += counting;
	return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
	allocs += counting;
	return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
	void *p;

	allocs += counting;
	p = __libc_memalign(align, n);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

void free(void *p)
{
	__libc_free(p);
}
#endif

#endif
