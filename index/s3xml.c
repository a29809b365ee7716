/*
 * s3xml.c -- XML element extraction and percent-encoding for the S3 backend (s3xml.h).
 */
#include "s3xml.h"

#include <stdlib.h>
#include <string.h>

int s3x_next(const char **pos, const char *end, const char *tag, const char **text, size_t *len)
{
	char open[64], close[64];
	size_t tl = strlen(tag);
	if (tl + 4 > sizeof open || *pos >= end)
		return 0;
	open[0] = '<';
	memcpy(open + 1, tag, tl);
	open[tl + 1] = '>';
	close[0] = '<';
	close[1] = '/';
	memcpy(close + 2, tag, tl);
	close[tl + 2] = '>';
	const char *a = memmem(*pos, (size_t)(end - *pos), open, tl + 2);
	if (!a)
		return 0;
	a += tl + 2;
	const char *b = memmem(a, (size_t)(end - a), close, tl + 3);
	if (!b)
		return 0;
	*text = a;
	*len = (size_t)(b - a);
	*pos = b + tl + 3;
	return 1;
}

char *s3x_text(const char *p, size_t n)
{
	static const struct {
		const char *name;
		char c;
	} ents[] = {{"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''}};
	char *out = malloc(n + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n;) {
		if (!p[i])
			goto bad;
		if (p[i] != '&') {
			*o++ = p[i++];
			continue;
		}
		size_t k;
		for (k = 0; k < sizeof ents / sizeof *ents; k++) {
			size_t el = strlen(ents[k].name);
			if (n - i - 1 >= el && !memcmp(p + i + 1, ents[k].name, el)) {
				*o++ = ents[k].c;
				i += 1 + el;
				break;
			}
		}
		if (k < sizeof ents / sizeof *ents)
			continue;
		/* &#DDD; or &#xHH;, ASCII only: enough for what S3 escapes in a key (control bytes). */
		if (n - i < 4 || p[i + 1] != '#')
			goto bad;
		int hex = p[i + 2] == 'x' || p[i + 2] == 'X';
		size_t j = i + 2 + (size_t)hex;
		unsigned v = 0, digits = 0;
		for (; j < n && digits < 4; j++, digits++) {
			int c = p[j], d = c >= '0' && c <= '9' ? c - '0'
					  : hex && c >= 'a' && c <= 'f' ? c - 'a' + 10
					  : hex && c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
			if (d < 0)
				break;
			v = v * (hex ? 16 : 10) + (unsigned)d;
		}
		if (!digits || j >= n || p[j] != ';' || !v || v > 127)
			goto bad;
		*o++ = (char)v;
		i = j + 1;
	}
	*o = 0;
	return out;
bad:
	free(out);
	return NULL;
}

int s3x_encode(const char *s, size_t n, int keep_slash, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		int keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			   c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
		if (o + (keep ? 1 : 3) >= cap)
			return -1;
		if (keep) {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	if (o >= cap)
		return -1;
	out[o] = 0;
	return (int)o;
}

static int hexval(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

char *s3x_decode(const char *s, size_t n)
{
	char *out = malloc(n + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)s[i];
		if (c == '%') {
			int hi = i + 2 < n ? hexval(s[i + 1]) : -1, lo = hi >= 0 ? hexval(s[i + 2]) : -1;
			if (lo < 0)
				goto bad;
			c = hi << 4 | lo;
			i += 2;
		}
		if (!c)
			goto bad;
		*o++ = (char)c;
	}
	*o = 0;
	return out;
bad:
	free(out);
	return NULL;
}
