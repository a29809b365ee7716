/*
 * test_safetensors.c -- st_parse on hand-built files: each malformed case must fail with -EINVAL
 * and a message naming the file and the problem; the good cases must round-trip exactly.
 *
 * Files are built in memory by st_mk (JSON text + data size, data bytes zero): st_parse reads only
 * the header, so the data contents never matter here.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../index/safetensors.h"

#define FNAME "model.safetensors"

static int failures;

/* file = u64le(len) + json[0..len) + data_len zero bytes; *size set */
static unsigned char *st_mk(const char *json, size_t len, size_t data_len, size_t *size)
{
	*size = 8 + len + data_len;
	unsigned char *b = calloc(1, *size);
	if (!b) {
		perror("calloc");
		exit(1);
	}
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)len >> (8 * i));
	memcpy(b + 8, json, len);
	return b;
}

/* every word (NULL-terminated) must appear in the message */
static void expect_bad_buf(int line, const unsigned char *b, size_t size, const char **words)
{
	st_file f;
	df_err err = {{0}};
	int rc = st_parse(b, size, FNAME, &f, &err);
	if (rc != -EINVAL) {
		fprintf(stderr, "line %d: rc %d, expected -EINVAL (msg: %s)\n", line, rc, err.msg);
		failures++;
		if (!rc)
			st_free(&f);
		return;
	}
	if (f.ntensors || f.tensors || f.file_size) {
		fprintf(stderr, "line %d: *out not left empty on error\n", line);
		failures++;
	}
	if (strncmp(err.msg, FNAME ": ", strlen(FNAME) + 2)) {
		fprintf(stderr, "line %d: message does not start with the file name: %s\n", line,
		        err.msg);
		failures++;
	}
	for (; *words; words++)
		if (!strstr(err.msg, *words)) {
			fprintf(stderr, "line %d: message lacks \"%s\": %s\n", line, *words, err.msg);
			failures++;
		}
}

#define WORDS(...) ((const char *[]){__VA_ARGS__, NULL})
#define BAD(json, data_len, ...) expect_bad(__LINE__, json, sizeof(json) - 1, data_len, WORDS(__VA_ARGS__))

static void expect_bad(int line, const char *json, size_t len, size_t data_len, const char **words)
{
	size_t size;
	unsigned char *b = st_mk(json, len, data_len, &size);
	expect_bad_buf(line, b, size, words);
	free(b);
}

/* parse must succeed; returns the file for the caller to inspect and st_free */
static int expect_good(int line, const char *json, size_t len, size_t data_len, st_file *f)
{
	size_t size;
	unsigned char *b = st_mk(json, len, data_len, &size);
	df_err err = {{0}};
	int rc = st_parse(b, size, FNAME, f, &err);
	free(b);
	if (rc) {
		fprintf(stderr, "line %d: rc %d on a good file: %s\n", line, rc, err.msg);
		failures++;
		return -1;
	}
	if (f->header_len != len || f->data_start != 8 + len || f->file_size != size) {
		fprintf(stderr, "line %d: header_len/data_start/file_size wrong\n", line);
		failures++;
	}
	return 0;
}

#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond)) {                                                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			failures++;                                                   \
		}                                                                     \
	} while (0)

static void bad_framing(void)
{
	size_t size;
	unsigned char *b;

	for (size_t n = 0; n < 8; n++) {
		unsigned char z[8] = {2, 0, 0, 0, 0, 0, 0, 0};
		expect_bad_buf(__LINE__, z, n, WORDS("too short"));
	}
	/* N = 0 */
	b = st_mk("", 0, 16, &size);
	expect_bad_buf(__LINE__, b, size, WORDS("header length is 0"));
	free(b);
	/* N larger than the file */
	b = st_mk("{}", 2, 0, &size);
	b[0] = 3;
	expect_bad_buf(__LINE__, b, size, WORDS("header length 3", "past the end"));
	/* N far past the file, and N with high bits set (no overflow in 8 + N) */
	b[0] = 0xff;
	b[3] = 0x01;
	expect_bad_buf(__LINE__, b, size, WORDS("header length"));
	memset(b, 0xff, 8);
	expect_bad_buf(__LINE__, b, size, WORDS("header length 18446744073709551615", "limit"));
	free(b);
	/* N just above ST_MAX_HEADER */
	b = st_mk("{}", 2, 0, &size);
	uint64_t big = (uint64_t)ST_MAX_HEADER + 1;
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(big >> (8 * i));
	expect_bad_buf(__LINE__, b, size, WORDS("header length 104857601", "limit"));
	free(b);
}

static void bad_json(void)
{
	BAD("not json", 0, "not valid JSON");
	BAD("{\"a\": ", 0, "not valid JSON");
	BAD("[]", 0, "array, not an object");
	BAD("[{\"a\":1}]", 0, "array, not an object");
	BAD("\"str\"", 0, "not valid JSON");
	BAD("{}x", 0, "byte 0x78", "offset 2", "padding");
	BAD("{}  \n", 0, "byte 0x0a", "padding");
	BAD("{}\t", 0, "byte 0x09", "padding");
	BAD("{} \0 ", 0, "byte 0x00", "offset 3");
	BAD("{}{}", 0, "byte 0x7b");
	BAD(" {}", 0, "must begin with '{'", "0x20");
	BAD("{\"a\": {\"dtype\": \"U8\", \"shape\": [], \"data_offsets\": [0, 1]},"
	    " \"a\": {\"dtype\": \"U8\", \"shape\": [], \"data_offsets\": [1, 2]}}",
	    2, "not valid JSON", "duplicate");
	BAD("{\"a\": {\"dtype\": \"U8\", \"dtype\": \"U8\", \"shape\": [], \"data_offsets\": [0, 1]}}",
	    1, "not valid JSON", "duplicate");
	BAD("{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"shape\": [1], \"data_offsets\": [0, 1]}}",
	    1, "not valid JSON", "duplicate");
	BAD("{\"a\": 1e999}", 0, "not valid JSON");
	BAD("{\"a\": 99999999999999999999}", 0, "not valid JSON");
	BAD("{\"\xff\": 1}", 0, "not valid JSON");
}

static void bad_metadata(void)
{
	BAD("{\"__metadata__\": {\"format\": \"pt\", \"n\": 3}}", 0, "__metadata__", "\"n\"",
	    "not a string");
	BAD("{\"__metadata__\": {\"x\": null}}", 0, "__metadata__", "\"x\"", "not a string");
	BAD("{\"__metadata__\": {\"x\": {}}}", 0, "__metadata__", "not a string");
	BAD("{\"__metadata__\": [\"a\"]}", 0, "__metadata__ is not an object");
	BAD("{\"__metadata__\": \"pt\"}", 0, "__metadata__ is not an object");
	BAD("{\"__metadata__\": {\"a\": \"b\", \"a\": \"c\"}}", 0, "duplicate");
}

#define T1 "{\"w\": {\"dtype\": "
static void bad_tensor(void)
{
	BAD("{\"w\": 5}", 0, "tensor \"w\"", "not an object");
	BAD("{\"w\": []}", 0, "tensor \"w\"", "not an object");
	BAD(T1 "\"F17\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "tensor \"w\"",
	    "unknown dtype \"F17\"");
	BAD(T1 "\"bf16\", \"shape\": [1], \"data_offsets\": [0, 2]}}", 2, "unknown dtype \"bf16\"");
	BAD(T1 "\"\", \"shape\": [1], \"data_offsets\": [0, 2]}}", 2, "unknown dtype \"\"");
	BAD(T1 "7, \"shape\": [1], \"data_offsets\": [0, 2]}}", 2, "tensor \"w\"",
	    "dtype is not a string");
	BAD("{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "tensor \"w\"",
	    "missing \"dtype\"");
	BAD(T1 "\"F32\", \"data_offsets\": [0, 4]}}", 4, "tensor \"w\"", "missing \"shape\"");
	BAD(T1 "\"F32\", \"shape\": [1]}}", 4, "tensor \"w\"", "missing \"data_offsets\"");
	BAD(T1 "\"F32\", \"shape\": 1, \"data_offsets\": [0, 4]}}", 4, "shape is not an array");
	BAD(T1 "\"F32\", \"shape\": [2, -1], \"data_offsets\": [0, 4]}}", 4, "tensor \"w\"",
	    "shape[1] is negative (-1)");
	BAD(T1 "\"F32\", \"shape\": [1.0], \"data_offsets\": [0, 4]}}", 4, "tensor \"w\"",
	    "shape[0] is a real number, not an integer");
	BAD(T1 "\"F32\", \"shape\": [\"1\"], \"data_offsets\": [0, 4]}}", 4,
	    "shape[0] is a string, not an integer");
	BAD(T1 "\"F32\", \"shape\": [null], \"data_offsets\": [0, 4]}}", 4,
	    "shape[0] is null, not an integer");
	BAD(T1 "\"F32\", \"shape\": [true], \"data_offsets\": [0, 4]}}", 4,
	    "shape[0] is a boolean, not an integer");
	BAD(T1 "\"F32\", \"shape\": [[1]], \"data_offsets\": [0, 4]}}", 4,
	    "shape[0] is an array, not an integer");
	BAD(T1 "\"U8\", \"shape\": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}",
	    1, "tensor \"w\"", "17 dims", "at most 16");
	BAD(T1 "\"U8\", \"shape\": [1099511627776, 1099511627776], \"data_offsets\": [0, 0]}}", 0,
	    "tensor \"w\"", "U8 shape [1099511627776, 1099511627776]", "overflows");
	/* overflow only through the dtype size: 2^62 elements of 4 bytes */
	BAD(T1 "\"F32\", \"shape\": [4611686018427387904], \"data_offsets\": [0, 0]}}", 0,
	    "F32 shape [4611686018427387904]", "overflows");
	/* wrap-around to exactly the stated size must not pass: 2^63 * 2 + ... */
	BAD(T1 "\"BF16\", \"shape\": [9223372036854775807, 2], \"data_offsets\": [0, 0]}}", 0,
	    "overflows");
	BAD(T1 "\"U8\", \"shape\": [1], \"data_offsets\": [0]}}", 1, "data_offsets is not an array");
	BAD(T1 "\"U8\", \"shape\": [1], \"data_offsets\": [0, 1, 2]}}", 1,
	    "data_offsets is not an array");
	BAD(T1 "\"U8\", \"shape\": [1], \"data_offsets\": {\"b\": 0}}}", 1,
	    "data_offsets is not an array");
	BAD(T1 "\"U8\", \"shape\": [1], \"data_offsets\": [0, 1.0]}}", 1,
	    "data_offsets[1] is a real number");
	BAD(T1 "\"U8\", \"shape\": [1], \"data_offsets\": [-1, 0]}}", 1,
	    "data_offsets[0] is negative");
	BAD(T1 "\"U8\", \"shape\": [0], \"data_offsets\": [\"0\", 0]}}", 1,
	    "data_offsets[0] is a string");
	BAD(T1 "\"U8\", \"shape\": [1], \"data_offsets\": [2, 1]}}", 2, "tensor \"w\"",
	    "data_offsets [2, 1] begin after end");
	BAD("{\"model.layers.3.mlp.up_proj.weight\": {\"dtype\": \"BF16\", \"shape\": [3, 4], "
	    "\"data_offsets\": [10, 20]}}",
	    20, "tensor \"model.layers.3.mlp.up_proj.weight\"",
	    "data_offsets [10, 20] hold 10 bytes but BF16 shape [3, 4] needs 24");
	BAD(T1 "\"F32\", \"shape\": [], \"data_offsets\": [0, 2]}}", 2,
	    "hold 2 bytes but F32 shape [] needs 4");
	BAD(T1 "\"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 7, "tensor \"w\"",
	    "[0, 8] end past the data region (7 bytes)");
	BAD(T1 "\"U8\", \"shape\": [0], \"data_offsets\": [8, 8]}}", 7, "[8, 8] end past");
	/* a shape too long to print whole is cut, and the needed size is still given */
	BAD(T1 "\"U8\", \"shape\": [0, 9223372036854775807, 9223372036854775807, 9223372036854775807, "
	    "9223372036854775807, 9223372036854775807, 9223372036854775807, 9223372036854775807], "
	    "\"data_offsets\": [0, 1]}}",
	    1, "hold 1 bytes but U8 shape [0, 9223372036854775807, ", ", ...] needs 0");
}

static void bad_names(void)
{
	BAD("{\"\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [0, 0]}}", 0, "empty name");
	BAD("{\"a\\nb\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [0, 0]}}", 0,
	    "\"a\\x0ab\"", "control character 0x0a");
	BAD("{\"a\\u001fb\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [0, 0]}}", 0,
	    "control character 0x1f");
	BAD("{\"\x7f\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [0, 0]}}", 0,
	    "control character 0x7f");
	BAD("{\"a\\u007fb\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [0, 0]}}", 0,
	    "control character 0x7f");
	/* jansson itself refuses NUL in keys; the message must still say so */
	BAD("{\"a\\u0000b\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [0, 0]}}", 0,
	    "not valid JSON", "NUL");
	/* the name check comes before anything else about the tensor */
	BAD("{\"\\t\": 5}", 0, "control character 0x09");
	/* a name far longer than a message is cut, and the complaint is still there */
	char json[2048], name[1200];
	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	int len = snprintf(json, sizeof json,
	                   "{\"%s\": {\"dtype\": \"U8\", \"shape\": [3], \"data_offsets\": [0, 2]}}",
	                   name);
	expect_bad(__LINE__, json, (size_t)len, 2, WORDS("nnnn...\"", "hold 2 bytes but U8 shape [3] needs 3"));
}

static void bad_coverage(void)
{
	BAD("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]},"
	    " \"b\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [2, 6]}}",
	    6, "tensor \"b\"", "[2, 6] overlap tensor \"a\" at [0, 4]");
	/* identical ranges overlap too; the order of the names decides which one is reported */
	BAD("{\"b\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]},"
	    " \"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]}}",
	    4, "tensor \"b\"", "overlap tensor \"a\"");
	/* a tensor inside another */
	BAD("{\"big\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [0, 8]},"
	    " \"in\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [3, 5]}}",
	    8, "tensor \"in\"", "overlap tensor \"big\"");
	BAD("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]},"
	    " \"b\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [6, 10]}}",
	    10, "hole", "bytes [4, 6)", "tensor \"a\" and tensor \"b\"");
	BAD("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [2, 6]}}", 6,
	    "hole at the start", "tensor \"a\" begins at 2");
	/* an empty tensor at 0 does not fill a hole at the start */
	BAD("{\"e\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [0, 0]},"
	    " \"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [2, 6]}}",
	    6, "hole at the start", "tensor \"a\"");
	BAD("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]}}", 5,
	    "1 trailing bytes after the last tensor \"a\"");
	BAD("{}", 3, "data region holds 3 bytes but no tensor");
	BAD("{\"e\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [0, 0]}}", 3,
	    "data region holds 3 bytes but no tensor");
	BAD("{\"__metadata__\": {}}", 1, "data region holds 1 bytes but no tensor");
	/* an empty tensor sorted before the first non-empty one is not its predecessor */
	BAD("{\"a\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [1, 1]},"
	    " \"b\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [1, 3]}}",
	    3, "hole at the start", "tensor \"b\"");
}

static void good(void)
{
	st_file f;

	/* empty file: header only */
	if (!expect_good(__LINE__, "{}", 2, 0, &f)) {
		CHECK(f.ntensors == 0 && f.tensors == NULL);
		st_free(&f);
	}
	/* padding, metadata, scalars, empty tensors at 0, in the middle and at the end */
	static const char j[] =
		"{\"__metadata__\": {\"format\": \"pt\", \"\": \"\"},"
		" \"z.scalar\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]},"
		" \"e0\": {\"dtype\": \"BF16\", \"shape\": [0, 5], \"data_offsets\": [0, 0]},"
		" \"e1\": {\"dtype\": \"F64\", \"shape\": [3, 0], \"data_offsets\": [4, 4]},"
		" \"a\": {\"dtype\": \"BF16\", \"shape\": [2, 3], \"data_offsets\": [4, 16], \"x\": 1},"
		" \"e2\": {\"dtype\": \"I8\", \"shape\": [0], \"data_offsets\": [10, 10]},"
		" \"e3\": {\"dtype\": \"I8\", \"shape\": [0], \"data_offsets\": [16, 16]},"
		" \"\xc3\xa9t\xc3\xa9/\xe2\x82\xac\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1], \"data_offsets\": [16, 17]}}"
		"        ";
	if (!expect_good(__LINE__, j, sizeof j - 1, 17, &f)) {
		static const struct {
			const char *name;
			dt_id dt;
			unsigned ndim;
			uint64_t b, e;
		} want[] = {
			{"e0", DT_BF16, 2, 0, 0},  {"z.scalar", DT_F32, 0, 0, 4}, {"e1", DT_F64, 2, 4, 4},
			{"a", DT_BF16, 2, 4, 16},   {"e2", DT_I8, 1, 10, 10},     {"e3", DT_I8, 1, 16, 16},
			{"\xc3\xa9t\xc3\xa9/\xe2\x82\xac", DT_U8, 16, 16, 17},
		};
		CHECK(f.ntensors == sizeof want / sizeof want[0]);
		for (size_t i = 0; i < f.ntensors && i < sizeof want / sizeof want[0]; i++) {
			const st_tensor *t = &f.tensors[i];
			CHECK(!strcmp(t->name, want[i].name));
			CHECK(t->dtype == want[i].dt);
			CHECK(t->ndim == want[i].ndim);
			CHECK(t->begin == want[i].b && t->end == want[i].e);
		}
		CHECK(f.tensors[3].shape[0] == 2 && f.tensors[3].shape[1] == 3);
		CHECK(f.tensors[0].shape[0] == 0 && f.tensors[0].shape[1] == 5);
		st_free(&f);
		CHECK(f.tensors == NULL && f.ntensors == 0);
	}

	/* every dtype, one tensor each, laid out back to back */
	static const struct {
		const char *name;
		dt_id dt;
		unsigned size;
	} dts[] = {
		{"BOOL", DT_BOOL, 1}, {"U8", DT_U8, 1},   {"I8", DT_I8, 1},     {"F8_E5M2", DT_F8_E5M2, 1},
		{"F8_E4M3", DT_F8_E4M3, 1}, {"I16", DT_I16, 2}, {"U16", DT_U16, 2}, {"F16", DT_F16, 2},
		{"BF16", DT_BF16, 2}, {"I32", DT_I32, 4}, {"U32", DT_U32, 4}, {"F32", DT_F32, 4},
		{"F64", DT_F64, 8},   {"I64", DT_I64, 8}, {"U64", DT_U64, 8},
	};
	_Static_assert(sizeof dts / sizeof dts[0] == DT_COUNT, "a dtype is missing from the test");
	char json[4096];
	size_t o = 0, off = 0;
	o += (size_t)snprintf(json + o, sizeof json - o, "{");
	for (size_t i = 0; i < DT_COUNT; i++) {
		size_t n = 3 * dts[i].size;
		o += (size_t)snprintf(json + o, sizeof json - o,
		                      "%s\"t%02zu\": {\"dtype\": \"%s\", \"shape\": [3], "
		                      "\"data_offsets\": [%zu, %zu]}",
		                      i ? ", " : "", i, dts[i].name, off, off + n);
		off += n;
	}
	o += (size_t)snprintf(json + o, sizeof json - o, "}");
	if (!expect_good(__LINE__, json, o, off, &f)) {
		CHECK(f.ntensors == DT_COUNT);
		for (size_t i = 0; i < f.ntensors; i++) {
			char nm[24];
			snprintf(nm, sizeof nm, "t%02zu", i);
			CHECK(!strcmp(f.tensors[i].name, nm));
			CHECK(f.tensors[i].dtype == dts[i].dt);
			CHECK(f.tensors[i].end - f.tensors[i].begin == 3 * dts[i].size);
		}
		st_free(&f);
	}

	/* a header that is all padding after a one-tensor object, largest legal shape values */
	static const char big[] =
		"{\"w\": {\"dtype\": \"U8\", \"shape\": [0, 9223372036854775807], \"data_offsets\": [0, 0]}}"
		"                                                                ";
	if (!expect_good(__LINE__, big, sizeof big - 1, 0, &f)) {
		CHECK(f.ntensors == 1 && f.tensors[0].shape[1] == 9223372036854775807ull);
		st_free(&f);
	}

	/* err may be NULL */
	size_t size;
	unsigned char *b = st_mk("[]", 2, 0, &size);
	CHECK(st_parse(b, size, FNAME, &f, NULL) == -EINVAL);
	free(b);
	st_free(NULL);
}

int main(void)
{
	bad_framing();
	bad_json();
	bad_metadata();
	bad_tensor();
	bad_names();
	bad_coverage();
	good();
	if (failures) {
		fprintf(stderr, "%d failures\n", failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
