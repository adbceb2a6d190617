// SPDX-License-Identifier: MIT
//
// Unit tests for json.c: size and depth limits, error details.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/json.h"

static void
test_parse_ok(void **state)
{
	const char *s = "{\"a\":[1,{\"b\":\"x\"}]}";
	json_t     *v = NULL;
	char       *out;

	assert_int_equal(
	    cm_json_parse(s, strlen(s), 1024, &v, NULL, 0), CM_OK);
	assert_int_equal(cm_json_depth(v), 3);
	out = cm_json_dump(v);
	assert_string_equal(out, s);
	free(out);
	json_decref(v);
}

static void
test_parse_limits(void **state)
{
	char    detail[128];
	json_t *v = NULL;
	char    deep[2 * CM_JSON_MAX_DEPTH + 10];
	size_t  n = 0;

	assert_int_equal(
	    cm_json_parse("{}", 2, 1, &v, detail, sizeof(detail)), CM_ETOOBIG);
	assert_int_equal(
	    cm_json_parse("{\"a\":", 5, 100, &v, detail, sizeof(detail)),
	    CM_EINVAL);
	assert_non_null(strstr(detail, "invalid JSON"));
	for (int i = 0; i <= CM_JSON_MAX_DEPTH; i++) {
		deep[n++] = '[';
	}
	for (int i = 0; i <= CM_JSON_MAX_DEPTH; i++) {
		deep[n++] = ']';
	}
	assert_int_equal(
	    cm_json_parse(deep, n, sizeof(deep), &v, detail, sizeof(detail)),
	    CM_EINVAL);
	assert_non_null(strstr(detail, "deeper"));
	// Brackets inside strings do not count.
	const char *s =
	    "{\"k\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
	    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"\"}";
	assert_int_equal(
	    cm_json_parse(s, strlen(s), 4096, &v, NULL, 0), CM_OK);
	json_decref(v);
	// A raw NUL ends jansson's reading: "{}\0junk" would be {}. Refused;
	// the escape \u0000 inside a string stays allowed.
	assert_int_equal(
	    cm_json_parse("{}\0junk", 7, 100, &v, detail, sizeof(detail)),
	    CM_EINVAL);
	assert_non_null(strstr(detail, "NUL"));
	assert_int_equal(cm_json_parse("[\"a\\u0000b\"]", 12, 100, &v, detail,
	                     sizeof(detail)),
	    CM_OK);
	json_decref(v);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ok),
		cmocka_unit_test(test_parse_limits),
	};
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
