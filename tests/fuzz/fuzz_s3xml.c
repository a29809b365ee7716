/*
 * fuzz_s3xml.c -- libFuzzer target: the input is an S3 answer as the backend reads it (s3.c's
 * listing and error paths), and, as a checkpoint name, a percent-encoding round trip.
 *
 * An S3 endpoint, or whatever answers in its place, is not trusted: no crash, leak or UB under
 * ASan and UBSan on any bytes, and every promise of s3xml.h is checked:
 *   - s3x_next's text lies inside the input and the position only moves forward;
 *   - s3x_text's result has no NUL before its end and is never longer than its input;
 *   - s3x_encode of the input (as a name) holds only unreserved bytes and '%', and s3x_decode
 *     gives the input back unless it holds a NUL byte (refused).
 * Seeds: tests/fuzz/corpus_s3xml (a ListObjectsV2 answer, an error answer).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../index/s3xml.h"

static void fuzz_check(int ok)
{
	if (!ok)
		__builtin_trap();
}

static void texts(const char *p, const char *end, const char *tag)
{
	const char *pos = p, *t;
	size_t n;
	while (s3x_next(&pos, end, tag, &t, &n)) {
		fuzz_check(t >= p && t + n <= end && pos <= end && pos > t);
		char *s = s3x_text(t, n);
		if (s)
			fuzz_check(strlen(s) <= n);
		free(s);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size, *pos = p, *blk;
	size_t bn;
	while (s3x_next(&pos, end, "Contents", &blk, &bn))
		texts(blk, blk + bn, "Key");
	for (const char *const *tag = (const char *const[]){"IsTruncated", "NextContinuationToken",
							     "Code", "Size", "LastModified", NULL};
	     *tag; tag++)
		texts(p, end, *tag);
	if (size > 4096)
		return 0;
	char *enc = malloc(3 * size + 1);
	if (!enc)
		return 0;
	int n = s3x_encode(p, size, 0, enc, 3 * size + 1);
	fuzz_check(n >= 0 && (size_t)n == strlen(enc));
	for (int i = 0; i < n; i++)
		fuzz_check(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%",
				  enc[i]) != NULL);
	char *dec = s3x_decode(enc, (size_t)n);
	fuzz_check(memchr(p, 0, size) ? dec == NULL : dec && strlen(dec) == size && !memcmp(dec, p, size));
	free(dec);
	free(enc);
	return 0;
}
