/*
 * safetensors.c -- parse and validate a safetensors header (contract in safetensors.h).
 *
 * Everything downstream (ingest, the mount's span map, the codecs) trusts the offsets and shapes
 * returned here, so this is the one place a hostile or truncated file must be stopped. The checks
 * are deliberately at least as strict as the reference implementation's:
 *
 *   - jansson parses exactly the N header bytes with JSON_REJECT_DUPLICATES (which also covers
 *     keys inside tensor objects) and JSON_DISABLE_EOF_CHECK: the latter tells us where the object
 *     ended (error.position), so we accept exactly what safetensors writers emit after it -- space
 *     padding -- and reject anything else, where jansson's own EOF check would also let newlines,
 *     tabs and carriage returns through. Like the reference, the header must begin with '{'.
 *   - Names with an embedded NUL cannot reach us: jansson refuses "\u0000" inside object keys
 *     ("NUL byte in object key not supported") in every version we build against, so a key's
 *     strlen is its length and the name checks below work on C strings.
 *   - Numbers must be JSON integers (jansson keeps 1.0 as a real, and fails the whole parse on an
 *     integer beyond long long); negative ones are rejected before they become uint64_t.
 *   - All arithmetic on sizes uses the overflow builtins: a shape like [2^40, 2^40] is an error,
 *     never a wrapped-around small number that happens to match data_offsets.
 *   - Coverage is checked after sorting by (begin, end, name): walking the non-empty tensors in
 *     order, each must begin where the previous one ended, the first at 0 and the last ending at
 *     the data region's end. So every byte of the data region belongs to exactly one tensor, which
 *     is what lets the mount describe a file as header + tensor spans with no gaps to invent.
 *
 * Error messages quote names through st_quote: a name may be what is wrong (control characters),
 * and a very long one must not push the actual complaint out of the 512-byte df_err.
 */
#include "safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define ST_QUOTE_MAX 160 /* bytes of a name shown in a message */

/* Quote name into buf ("..." with control bytes as \xNN), cut at a UTF-8 boundary with "..."
 * appended when it does not fit. */
static const char *st_quote(char buf[ST_QUOTE_MAX + 16], const char *name)
{
	size_t o = 0;
	buf[o++] = '"';
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		if (o >= ST_QUOTE_MAX) {
			/* back off any partial multi-byte character */
			while (o > 1 && ((unsigned char)buf[o - 1] & 0xc0) == 0x80)
				o--;
			if (o > 1 && ((unsigned char)buf[o - 1] & 0xc0) == 0xc0)
				o--;
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\')
			o += (size_t)snprintf(buf + o, 5, "\\x%02x", *p);
		else
			buf[o++] = (char)*p;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

/* "[3, 4]" into buf, shortened with "..." if the dims do not fit. */
static const char *st_fmt_shape(char *buf, size_t cap, const uint64_t *shape, unsigned ndim)
{
	size_t o = 0;
	buf[o++] = '[';
	for (unsigned i = 0; i < ndim; i++) {
		int n = snprintf(buf + o, cap - o, "%s%" PRIu64, i ? ", " : "", shape[i]);
		if (n < 0 || (size_t)n >= cap - o - 8) {
			snprintf(buf + o, cap - o, ", ...]");
			return buf;
		}
		o += (size_t)n;
	}
	snprintf(buf + o, cap - o, "]");
	return buf;
}

static int st_check_name(const char *name, const char *fname, df_err *err)
{
	char q[ST_QUOTE_MAX + 16];
	if (!*name)
		return df_errf(err, -EINVAL, "%s: a tensor has an empty name", fname);
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return df_errf(err, -EINVAL,
			               "%s: tensor name %s contains control character 0x%02x", fname,
			               st_quote(q, name), *p);
	return 0;
}

/* A JSON integer >= 0 into *out; what describes the value in messages ("shape[2]"). */
static int st_get_uint(const json_t *v, uint64_t *out, const char *fname, const char *tname,
                       const char *what, df_err *err)
{
	char q[ST_QUOTE_MAX + 16];
	if (!json_is_integer(v))
		return df_errf(err, -EINVAL, "%s: tensor %s: %s is %s, not an integer", fname,
		               st_quote(q, tname), what,
		               json_is_real(v)     ? "a real number"
		               : json_is_string(v) ? "a string"
		               : json_is_array(v)  ? "an array"
		               : json_is_object(v) ? "an object"
		               : json_is_null(v)   ? "null"
		                                   : "a boolean");
	json_int_t i = json_integer_value(v);
	if (i < 0)
		return df_errf(err, -EINVAL, "%s: tensor %s: %s is negative (%" JSON_INTEGER_FORMAT ")",
		               fname, st_quote(q, tname), what, i);
	*out = (uint64_t)i;
	return 0;
}

static int st_parse_tensor(const char *name, const json_t *obj, uint64_t data_len,
                           const char *fname, st_tensor *t, df_err *err)
{
	char q[ST_QUOTE_MAX + 16], what[32];
	int rc = st_check_name(name, fname, err);
	if (rc)
		return rc;
	if (!json_is_object(obj))
		return df_errf(err, -EINVAL, "%s: tensor %s: value is not an object", fname,
		               st_quote(q, name));

	const json_t *dtype = json_object_get(obj, "dtype");
	const json_t *shape = json_object_get(obj, "shape");
	const json_t *offs = json_object_get(obj, "data_offsets");
	if (!dtype || !shape || !offs)
		return df_errf(err, -EINVAL, "%s: tensor %s: missing \"%s\"", fname, st_quote(q, name),
		               !dtype ? "dtype" : !shape ? "shape" : "data_offsets");

	if (!json_is_string(dtype))
		return df_errf(err, -EINVAL, "%s: tensor %s: dtype is not a string", fname,
		               st_quote(q, name));
	if (dt_from_name(json_string_value(dtype), &t->dtype)) {
		char qd[ST_QUOTE_MAX + 16];
		return df_errf(err, -EINVAL, "%s: tensor %s: unknown dtype %s", fname,
		               st_quote(q, name), st_quote(qd, json_string_value(dtype)));
	}

	if (!json_is_array(shape))
		return df_errf(err, -EINVAL, "%s: tensor %s: shape is not an array", fname,
		               st_quote(q, name));
	if (json_array_size(shape) > ST_MAX_DIMS)
		return df_errf(err, -EINVAL, "%s: tensor %s: shape has %zu dims, at most %d allowed",
		               fname, st_quote(q, name), json_array_size(shape), ST_MAX_DIMS);
	t->ndim = (unsigned)json_array_size(shape);
	uint64_t nbytes = dt_size(t->dtype);
	for (unsigned i = 0; i < t->ndim; i++) {
		snprintf(what, sizeof what, "shape[%u]", i);
		rc = st_get_uint(json_array_get(shape, i), &t->shape[i], fname, name, what, err);
		if (rc)
			return rc;
		if (__builtin_mul_overflow(nbytes, t->shape[i], &nbytes)) {
			char s[128];
			return df_errf(err, -EINVAL,
			               "%s: tensor %s: %s shape %s: byte size overflows 64 bits", fname,
			               st_quote(q, name), dt_name(t->dtype),
			               st_fmt_shape(s, sizeof s, t->shape, i + 1));
		}
	}

	if (!json_is_array(offs) || json_array_size(offs) != 2)
		return df_errf(err, -EINVAL, "%s: tensor %s: data_offsets is not an array [begin, end]",
		               fname, st_quote(q, name));
	rc = st_get_uint(json_array_get(offs, 0), &t->begin, fname, name, "data_offsets[0]", err);
	if (!rc)
		rc = st_get_uint(json_array_get(offs, 1), &t->end, fname, name, "data_offsets[1]",
		                 err);
	if (rc)
		return rc;
	if (t->begin > t->end)
		return df_errf(err, -EINVAL,
		               "%s: tensor %s: data_offsets [%" PRIu64 ", %" PRIu64 "] begin after end",
		               fname, st_quote(q, name), t->begin, t->end);
	if (t->end - t->begin != nbytes) {
		char s[128];
		return df_errf(err, -EINVAL,
		               "%s: tensor %s: data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
		               " bytes but %s shape %s needs %" PRIu64,
		               fname, st_quote(q, name), t->begin, t->end, t->end - t->begin,
		               dt_name(t->dtype), st_fmt_shape(s, sizeof s, t->shape, t->ndim), nbytes);
	}
	if (t->end > data_len)
		return df_errf(err, -EINVAL,
		               "%s: tensor %s: data_offsets [%" PRIu64 ", %" PRIu64
		               "] end past the data region (%" PRIu64 " bytes): file truncated?",
		               fname, st_quote(q, name), t->begin, t->end, data_len);
	return 0;
}

static int st_check_metadata(const json_t *meta, const char *fname, df_err *err)
{
	const char *k;
	json_t *v;
	char q[ST_QUOTE_MAX + 16];
	if (!json_is_object(meta))
		return df_errf(err, -EINVAL, "%s: __metadata__ is not an object", fname);
	json_object_foreach((json_t *)meta, k, v)
		if (!json_is_string(v))
			return df_errf(err, -EINVAL, "%s: __metadata__ value %s is not a string", fname,
			               st_quote(q, k));
	return 0;
}

static int st_cmp(const void *a, const void *b)
{
	const st_tensor *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* tensors sorted: every byte of [0, data_len) in exactly one non-empty tensor */
static int st_check_coverage(const st_file *f, uint64_t data_len, const char *fname, df_err *err)
{
	char q[ST_QUOTE_MAX + 16], qp[ST_QUOTE_MAX + 16];
	const st_tensor *prev = NULL; /* last non-empty tensor */
	uint64_t pos = 0;
	for (size_t i = 0; i < f->ntensors; i++) {
		const st_tensor *t = &f->tensors[i];
		if (t->begin == t->end)
			continue;
		if (t->begin < pos)
			return df_errf(err, -EINVAL,
			               "%s: tensor %s: data_offsets [%" PRIu64 ", %" PRIu64
			               "] overlap tensor %s at [%" PRIu64 ", %" PRIu64 "]",
			               fname, st_quote(q, t->name), t->begin, t->end,
			               st_quote(qp, prev->name), prev->begin, prev->end);
		if (t->begin > pos) {
			if (prev)
				return df_errf(err, -EINVAL,
				               "%s: hole in the data region: bytes [%" PRIu64 ", %" PRIu64
				               ") between tensor %s and tensor %s belong to no tensor",
				               fname, pos, t->begin, st_quote(qp, prev->name),
				               st_quote(q, t->name));
			return df_errf(err, -EINVAL,
			               "%s: hole at the start of the data region: first tensor %s begins "
			               "at %" PRIu64 ", bytes [0, %" PRIu64 ") belong to no tensor",
			               fname, st_quote(q, t->name), t->begin, t->begin);
		}
		pos = t->end;
		prev = t;
	}
	if (pos != data_len) {
		if (prev)
			return df_errf(err, -EINVAL,
			               "%s: %" PRIu64 " trailing bytes after the last tensor %s (ends at %" PRIu64
			               ", data region holds %" PRIu64 " bytes)",
			               fname, data_len - pos, st_quote(q, prev->name), pos, data_len);
		return df_errf(err, -EINVAL,
		               "%s: data region holds %" PRIu64 " bytes but no tensor has any data", fname,
		               data_len);
	}
	return 0;
}

void st_free(st_file *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->ntensors; i++)
		free(f->tensors[i].name);
	free(f->tensors);
	memset(f, 0, sizeof *f);
}

int st_parse(const void *buf, size_t size, const char *fname, st_file *out, df_err *err)
{
	const unsigned char *p = buf;
	memset(out, 0, sizeof *out);
	if (size < 8)
		return df_errf(err, -EINVAL,
		               "%s: %zu bytes, too short for a safetensors file (8-byte header length "
		               "missing)",
		               fname, size);
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | p[i];
	if (n == 0)
		return df_errf(err, -EINVAL, "%s: header length is 0: not a safetensors file", fname);
	if (n > ST_MAX_HEADER)
		return df_errf(err, -EINVAL,
		               "%s: header length %" PRIu64 " exceeds the %u-byte limit: not a safetensors "
		               "file?",
		               fname, n, ST_MAX_HEADER);
	if (n > size - 8)
		return df_errf(err, -EINVAL,
		               "%s: header length %" PRIu64 " runs past the end of the %zu-byte file "
		               "(truncated?)",
		               fname, n, size);
	const char *hdr = (const char *)p + 8;
	uint64_t data_start = 8 + n, data_len = size - data_start;

	json_error_t je;
	json_t *root = json_loadb(hdr, n, JSON_REJECT_DUPLICATES | JSON_DISABLE_EOF_CHECK, &je);
	if (!root) {
#if JANSSON_VERSION_HEX >= 0x020b00
		if (json_error_code(&je) == json_error_out_of_memory)
			return df_errf(err, -ENOMEM, "%s: out of memory parsing the header", fname);
#endif
		return df_errf(err, -EINVAL, "%s: header is not valid JSON: %s (byte %d of the header)",
		               fname, je.text, je.position);
	}
	int rc;
	if (!json_is_object(root)) {
		rc = df_errf(err, -EINVAL, "%s: header is a JSON array, not an object", fname);
		goto out;
	}
	if (hdr[0] != '{') {
		rc = df_errf(err, -EINVAL, "%s: header must begin with '{' (found byte 0x%02x)", fname,
		             (unsigned char)hdr[0]);
		goto out;
	}
	/* with JSON_DISABLE_EOF_CHECK, position is where the object ended: only padding may follow */
	for (uint64_t i = (uint64_t)je.position; i < n; i++)
		if (hdr[i] != ' ') {
			rc = df_errf(err, -EINVAL,
			             "%s: byte 0x%02x after the header's JSON object at offset %" PRIu64
			             ": only space padding may follow it",
			             fname, (unsigned char)hdr[i], i);
			goto out;
		}

	size_t count = json_object_size(root);
	const json_t *meta = json_object_get(root, "__metadata__");
	if (meta) {
		rc = st_check_metadata(meta, fname, err);
		if (rc)
			goto out;
		count--;
	}
	if (count) {
		out->tensors = calloc(count, sizeof *out->tensors);
		if (!out->tensors) {
			rc = df_errf(err, -ENOMEM, "%s: out of memory for %zu tensors", fname, count);
			goto out;
		}
	}
	const char *key;
	json_t *val;
	json_object_foreach(root, key, val) {
		if (!strcmp(key, "__metadata__"))
			continue;
		st_tensor *t = &out->tensors[out->ntensors];
		rc = st_parse_tensor(key, val, data_len, fname, t, err);
		if (rc)
			goto out;
		t->name = strdup(key);
		if (!t->name) {
			rc = df_errf(err, -ENOMEM, "%s: out of memory", fname);
			goto out;
		}
		out->ntensors++;
	}
	if (out->ntensors > 1)
		qsort(out->tensors, out->ntensors, sizeof *out->tensors, st_cmp);
	rc = st_check_coverage(out, data_len, fname, err);
	if (!rc) {
		out->header_len = n;
		out->data_start = data_start;
		out->file_size = size;
	}
out:
	json_decref(root);
	if (rc)
		st_free(out);
	return rc;
}
