/*
 * test_dtype.c -- the dtype table: every safetensors name maps to its id and back, sizes and
 * float-ness are right, and names deltafs does not know (or spelled in the wrong case) are refused.
 */
#include <errno.h>
#include <string.h>

#include "dtype.h"
#include "testutil.h"

int main(void)
{
	static const struct {
		const char *name;
		dt_id id;
		unsigned size;
		int is_float;
	} want[] = {
		{ "BOOL", DT_BOOL, 1, 0 },	  { "U8", DT_U8, 1, 0 },
		{ "I8", DT_I8, 1, 0 },		  { "F8_E5M2", DT_F8_E5M2, 1, 1 },
		{ "F8_E4M3", DT_F8_E4M3, 1, 1 }, { "I16", DT_I16, 2, 0 },
		{ "U16", DT_U16, 2, 0 },	  { "F16", DT_F16, 2, 1 },
		{ "BF16", DT_BF16, 2, 1 },	  { "I32", DT_I32, 4, 0 },
		{ "U32", DT_U32, 4, 0 },	  { "F32", DT_F32, 4, 1 },
		{ "F64", DT_F64, 8, 1 },	  { "I64", DT_I64, 8, 0 },
		{ "U64", DT_U64, 8, 0 },
	};
	static const char *const bad[] = { "bf16", "f32", "F4", "", "BF16 ", "F8_E4M3FN", "Bool" };
	dt_id id;

	CHECK(sizeof want / sizeof want[0] == DT_COUNT, "table covers %d dtypes", DT_COUNT);
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		CHECK(dt_from_name(want[i].name, &id) == 0, "%s not found", want[i].name);
		CHECK(id == want[i].id, "%s -> %d", want[i].name, (int)id);
		CHECK(strcmp(dt_name(want[i].id), want[i].name) == 0, "name of %d", (int)want[i].id);
		CHECK(dt_size(want[i].id) == want[i].size, "size of %s", want[i].name);
		CHECK(!!dt_is_float(want[i].id) == want[i].is_float, "is_float %s", want[i].name);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		id = DT_U8;
		CHECK(dt_from_name(bad[i], &id) == -EINVAL, "'%s' accepted", bad[i]);
		CHECK(id == DT_U8, "'%s' wrote *out", bad[i]);
	}
	CHECK(dt_from_name(NULL, &id) == -EINVAL, "NULL name");
	CHECK(dt_from_name("F32", NULL) == -EINVAL, "NULL out");
	CHECK(strcmp(dt_name(DT_COUNT), "?") == 0 && strcmp(dt_name((dt_id)-1), "?") == 0,
	      "out of range name");
	CHECK(dt_size(DT_COUNT) == 0 && dt_size((dt_id)-1) == 0, "out of range size");
	CHECK(dt_is_float(DT_COUNT) == 0 && dt_is_float((dt_id)-1) == 0, "out of range float");
	return 0;
}
