/*
 * test_s3xml.c -- the S3 backend's text handling (index/s3xml.h) on hand-written answers and
 * names: elements found in order and bounded by the buffer, entities unescaped or refused,
 * percent-encoding round trips and refuses what it cannot hold. No network, no libcurl.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../index/s3xml.h"

static int failures;

#define CHECK(c)                                                                   \
	do {                                                                       \
		if (!(c)) {                                                        \
			fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #c); \
			failures++;                                                \
		}                                                                  \
	} while (0)

static void next_cases(void)
{
	const char *xml = "<ListBucketResult><IsTruncated>true</IsTruncated>"
			  "<Contents><Key>p/a&amp;b</Key><Size>6</Size></Contents>"
			  "<Contents><Key>p/c</Key></Contents>"
			  "<NextContinuationToken>t+1/=</NextContinuationToken><Contents><Key>x";
	const char *pos = xml, *end = xml + strlen(xml), *t, *blk;
	size_t n, bn;
	char *keys[3] = {0};
	int k = 0;
	while (k < 3 && s3x_next(&pos, end, "Contents", &blk, &bn)) {
		const char *kp = blk;
		if (s3x_next(&kp, blk + bn, "Key", &t, &n))
			keys[k++] = s3x_text(t, n);
	}
	CHECK(k == 2); /* the last <Contents> is cut off: not seen */
	CHECK(keys[0] && !strcmp(keys[0], "p/a&b"));
	CHECK(keys[1] && !strcmp(keys[1], "p/c"));
	free(keys[0]);
	free(keys[1]);
	pos = xml;
	CHECK(s3x_next(&pos, end, "NextContinuationToken", &t, &n) && n == 5 && !memcmp(t, "t+1/=", 5));
	pos = xml;
	CHECK(!s3x_next(&pos, xml + 20, "IsTruncated", &t, &n)); /* the close is past the end */
	char longtag[100];
	memset(longtag, 'a', sizeof longtag - 1);
	longtag[sizeof longtag - 1] = 0;
	pos = xml;
	CHECK(!s3x_next(&pos, end, longtag, &t, &n));
}

static void text_cases(void)
{
	const char *good = "&lt;&gt;&amp;&quot;&apos;&#65;&#x42;z";
	char *s = s3x_text(good, strlen(good));
	CHECK(s && !strcmp(s, "<>&\"'ABz"));
	free(s);
	const char *bad[] = {"&", "&amp", "&nbsp;", "&#;", "&#x;", "&#0;", "&#200;", "&#x1F600;",
			     "&#65", "a&#12345;"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		s = s3x_text(bad[i], strlen(bad[i]));
		if (s)
			fprintf(stderr, "accepted \"%s\" as \"%s\"\n", bad[i], s);
		CHECK(!s);
		free(s);
	}
	CHECK(!s3x_text("a\0b", 3));
}

static void encode_cases(void)
{
	const char *names[] = {"llama-chat", "a/b c%d", "ünï~._-", "100%", "x"};
	char out[64];
	for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
		int n = s3x_encode(names[i], strlen(names[i]), 0, out, sizeof out);
		CHECK(n > 0 && !strchr(out, '/') && (size_t)n == strlen(out));
		char *d = n > 0 ? s3x_decode(out, (size_t)n) : NULL;
		CHECK(d && !strcmp(d, names[i]));
		free(d);
	}
	CHECK(s3x_encode("a/b c", 5, 0, out, sizeof out) == 9 && !strcmp(out, "a%2Fb%20c"));
	CHECK(s3x_encode("a/b c", 5, 1, out, sizeof out) == 7 && !strcmp(out, "a/b%20c"));
	CHECK(s3x_encode("abc", 3, 0, out, 3) == -1);      /* no room for the NUL */
	CHECK(s3x_encode("a b", 3, 0, out, 5) == -1);      /* no room for an escape */
	CHECK(s3x_encode("a b", 3, 0, out, 6) == 5);
	const char *bad[] = {"%", "%4", "%zz", "%00", "a%0"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		char *d = s3x_decode(bad[i], strlen(bad[i]));
		CHECK(!d);
		free(d);
	}
	char *d = s3x_decode("%2f%2F", 6);
	CHECK(d && !strcmp(d, "//"));
	free(d);
}

int main(void)
{
	next_cases();
	text_cases();
	encode_cases();
	if (failures) {
		fprintf(stderr, "%d failures\n", failures);
		return 1;
	}
	printf("s3xml: ok\n");
	return 0;
}
