/*
 * s3xml.h -- the text handling of the S3 backend (index/s3.c) that needs no network: picking the
 * few elements it reads out of S3's XML answers, and the percent-encoding of object keys, URL paths
 * and checkpoint names. Kept apart from s3.c (and from libcurl) so that it builds everywhere and
 * can be tested and fuzzed on its own (tests/index/test_s3xml.c, tests/fuzz/fuzz_s3xml.c).
 *
 * Why no XML library: the backend reads five elements (Key, Size, LastModified, IsTruncated,
 * NextContinuationToken) and an error's Code. In well-formed XML a text node never holds a raw
 * '<', so "<Tag>" followed by the next "</Tag>" is exactly that element's text; S3 answers carry
 * no CDATA or comments in these elements. Hostile input (a broken proxy, a fuzzer) can only make
 * an element look absent or its text malformed: every search is bounded by the buffer's end and
 * nothing recurses or allocates more than the input's size.
 */
#ifndef DELTAFS_INDEX_S3XML_H
#define DELTAFS_INDEX_S3XML_H

#include <stddef.h>

/* Find the next element <tag>TEXT</tag> in [*pos, end) (no attributes, no nesting of the same
 * tag). 1: *text / *len give TEXT's raw bytes and *pos moves past the closing tag; 0: none. */
int s3x_next(const char **pos, const char *end, const char *tag, const char **text, size_t *len);

/* XML text (the five predefined entities and numeric ones below 128 unescaped) as a malloc'd
 * string; NULL if malformed (an unknown or unterminated entity, a NUL byte) or out of memory. */
char *s3x_text(const char *p, size_t n);

/* Percent-encode s[0..n) into out (room for cap bytes, NUL included): every byte but A-Z a-z 0-9
 * - . _ ~ (and '/' where keep_slash) becomes %XX, upper-case hex, as SigV4 wants. Returns the
 * length, or -1 if it does not fit. */
int s3x_encode(const char *s, size_t n, int keep_slash, char *out, size_t cap);

/* Undo s3x_encode (only %XX escapes, upper- or lower-case): a malloc'd string, NULL if malformed
 * (a bad escape, a NUL byte) or out of memory. */
char *s3x_decode(const char *s, size_t n);

#endif
