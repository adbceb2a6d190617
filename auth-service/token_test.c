// SPDX-License-Identifier: MIT
//
// Unit tests of the token helpers (token.c): reading a JWT's exp without
// verifying it (only to bound a cache TTL) and form-urlencoding.

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "auth-service/service.h"

static void
test_exp(void **state)
{
	(void) state;
	// {"alg":"ES256"} . {"sub":"u","exp":1893456000} . sig
	assert_int_equal(
	    auth_token_exp("eyJhbGciOiJFUzI1NiJ9."
	                   "eyJzdWIiOiJ1IiwiZXhwIjoxODkzNDU2MDAwfQ."
	                   "c2ln"),
	    1893456000);
	// Not a JWT, or no usable exp: 0 (the configured TTL applies).
	assert_int_equal(auth_token_exp("opaque-token"), 0);
	assert_int_equal(auth_token_exp("a.b"), 0);
	assert_int_equal(auth_token_exp("a.b.c.d"), 0);
	assert_int_equal(auth_token_exp("x.!!!.y"), 0);
	// {"exp":"soon"}
	assert_int_equal(auth_token_exp("x.eyJleHAiOiJzb29uIn0.y"), 0);
	// [1]
	assert_int_equal(auth_token_exp("x.WzFd.y"), 0);
	// {"exp":-5}
	assert_int_equal(auth_token_exp("x.eyJleHAiOi01fQ.y"), 0);
	assert_int_equal(auth_token_exp(NULL), 0);
}

static void
test_form_encode(void **state)
{
	char out[64];

	(void) state;
	assert_int_equal(
	    auth_form_encode("a b+c/=~:&", out, sizeof(out)), CM_OK);
	assert_string_equal(out, "a+b%2Bc%2F%3D%7E%3A%26");
	assert_int_equal(
	    auth_form_encode("Az09-._*", out, sizeof(out)), CM_OK);
	assert_string_equal(out, "Az09-._*");
	assert_int_equal(auth_form_encode("", out, sizeof(out)), CM_OK);
	assert_string_equal(out, "");
	// Exactly fits (3 chars + NUL), then one byte too small.
	assert_int_equal(auth_form_encode("%", out, 4), CM_OK);
	assert_string_equal(out, "%25");
	assert_int_equal(auth_form_encode("%", out, 3), CM_ETOOBIG);
	assert_string_equal(out, "");
	assert_int_equal(auth_form_encode("abc", out, 3), CM_ETOOBIG);
	assert_string_equal(out, "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exp),
		cmocka_unit_test(test_form_encode),
	};
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
