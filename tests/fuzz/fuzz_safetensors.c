/*
 * fuzz_safetensors.c -- libFuzzer target: the input is a whole safetensors file for st_parse.
 *
 * Beyond "no crash, no leak, no UB" (ASan/UBSan), it checks the promises of safetensors.h on every
 * input, so a validation hole shows up as a crash rather than passing silently: on success the
 * tensors are sorted, inside the data region, sized exactly by dtype and shape, and tile the data
 * region without gaps; on failure the message names the file and *out is empty.
 *
 * Run: fuzz_safetensors -dict=tests/fuzz/safetensors.dict -max_total_time=180 CORPUS_DIR, with
 * CORPUS_DIR a scratch copy of tests/fuzz/corpus_safetensors (libFuzzer writes new inputs into it).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../index/safetensors.h"

#define FUZZ_FNAME "fuzz.safetensors"

static void fuzz_check(int ok)
{
	if (!ok)
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	st_file f;
	df_err err;
	err.msg[0] = '\0';
	int rc = st_parse(data, size, FUZZ_FNAME, &f, &err);
	if (rc) {
		fuzz_check(rc == -EINVAL || rc == -ENOMEM);
		fuzz_check(!strncmp(err.msg, FUZZ_FNAME ": ", sizeof FUZZ_FNAME + 1));
		fuzz_check(f.ntensors == 0 && f.tensors == NULL);
		return 0;
	}
	fuzz_check(f.file_size == size && f.data_start == 8 + f.header_len);
	fuzz_check(f.header_len > 0 && f.header_len <= ST_MAX_HEADER && f.data_start <= size);
	uint64_t data_len = size - f.data_start, pos = 0;
	for (size_t i = 0; i < f.ntensors; i++) {
		const st_tensor *t = &f.tensors[i];
		fuzz_check(t->name[0] != '\0' && t->dtype < DT_COUNT && t->ndim <= ST_MAX_DIMS);
		for (const unsigned char *p = (const unsigned char *)t->name; *p; p++)
			fuzz_check(*p >= 0x20 && *p != 0x7f);
		uint64_t n = dt_size(t->dtype);
		for (unsigned d = 0; d < t->ndim; d++)
			fuzz_check(!__builtin_mul_overflow(n, t->shape[d], &n));
		fuzz_check(t->begin <= t->end && t->end <= data_len && t->end - t->begin == n);
		if (i) {
			const st_tensor *u = &f.tensors[i - 1];
			fuzz_check(u->begin < t->begin ||
			           (u->begin == t->begin &&
			            (u->end < t->end || (u->end == t->end && strcmp(u->name, t->name) < 0))));
		}
		if (t->begin != t->end) {
			fuzz_check(t->begin == pos);
			pos = t->end;
		}
	}
	fuzz_check(pos == data_len);
	st_free(&f);
	return 0;
}
