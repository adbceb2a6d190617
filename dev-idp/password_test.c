// SPDX-License-Identifier: MIT
//
// Unit tests for password.c: PBKDF2 hashes verify, wrong passwords and
// tampered or malformed hashes are refused, salts differ, the production
// iteration count is at least 100k.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dev-idp/idp.h"

// Iterations for the fast tests (the format and logic do not depend on
// the count; one test uses the real IDP_PBKDF2_ITER).
#define FAST_ITER 1000

static void
test_roundtrip(void **state)
{
	char h[IDP_PWHASH_MAX];

	(void) state;
	assert_int_equal(idp_password_hash("secret1", 7, FAST_ITER, h), CM_OK);
	assert_int_equal(idp_password_verify("secret1", 7, h), CM_OK);
	assert_int_equal(idp_password_verify("secret2", 7, h), CM_EAUTH);
	assert_int_equal(idp_password_verify("secret", 6, h), CM_EAUTH);
	assert_int_equal(idp_password_verify("", 0, h), CM_EAUTH);
	assert_true(strncmp(h, "pbkdf2-sha256$1000$", 19) == 0);
}

static void
test_production_iterations(void **state)
{
	char        h[IDP_PWHASH_MAX];
	int64_t     iter = 0;
	char        num[16];
	const char *p, *e;

	(void) state;
	assert_true(IDP_PBKDF2_ITER >= 100000);
	assert_int_equal(idp_password_hash("pässwörd", strlen("pässwörd"),
	                     IDP_PBKDF2_ITER, h),
	    CM_OK);
	p = strchr(h, '$') + 1;
	e = strchr(p, '$');
	assert_non_null(e);
	snprintf(num, sizeof(num), "%.*s", (int) (e - p), p);
	assert_int_equal(cm_parse_i64(num, 0, INT64_MAX, &iter), CM_OK);
	assert_true(iter >= 100000);
	assert_int_equal(
	    idp_password_verify("pässwörd", strlen("pässwörd"), h), CM_OK);
}

static void
test_salt_differs(void **state)
{
	char a[IDP_PWHASH_MAX], b[IDP_PWHASH_MAX];

	(void) state;
	assert_int_equal(
	    idp_password_hash("samepass", 8, FAST_ITER, a), CM_OK);
	assert_int_equal(
	    idp_password_hash("samepass", 8, FAST_ITER, b), CM_OK);
	assert_string_not_equal(a, b);
	assert_int_equal(idp_password_verify("samepass", 8, a), CM_OK);
	assert_int_equal(idp_password_verify("samepass", 8, b), CM_OK);
}

static void
test_tampered_and_malformed(void **state)
{
	char  h[IDP_PWHASH_MAX];
	char *last;

	(void) state;
	assert_int_equal(idp_password_hash("secret1", 7, FAST_ITER, h), CM_OK);
	// Flip the last hex digit of the derived key.
	last  = h + strlen(h) - 1;
	*last = *last == '0' ? '1' : '0';
	assert_int_equal(idp_password_verify("secret1", 7, h), CM_EAUTH);

	assert_int_equal(idp_password_verify("x", 1, NULL), CM_EINVAL);
	assert_int_equal(idp_password_verify("x", 1, ""), CM_EINVAL);
	assert_int_equal(idp_password_verify("x", 1, "plain"), CM_EINVAL);
	assert_int_equal(
	    idp_password_verify("x", 1, "pbkdf2-sha256$"), CM_EINVAL);
	assert_int_equal(
	    idp_password_verify("x", 1, "pbkdf2-sha256$abc$00$00"), CM_EINVAL);
	// An absurd iteration count must be refused, not computed.
	assert_int_equal(
	    idp_password_verify("x", 1,
	        "pbkdf2-sha256$999999999999$00112233445566778899aabbccddeeff$"
	        "00112233445566778899aabbccddeeff00112233445566778899aabbccdde"
	        "eff"),
	    CM_EINVAL);
	// Wrong salt length.
	assert_int_equal(idp_password_verify("x", 1,
	                     "pbkdf2-sha256$1000$0011$"
	                     "00112233445566778899aabbccddeeff0011223344556677"
	                     "8899aabbccddeeff"),
	    CM_EINVAL);
	// Non-hex key.
	assert_int_equal(
	    idp_password_verify("x", 1,
	        "pbkdf2-sha256$1000$00112233445566778899aabbccddeeff$"
	        "zz112233445566778899aabbccddeeff00112233445566778899aabbccdde"
	        "eff"),
	    CM_EINVAL);
}

static void
test_limits(void **state)
{
	char big[IDP_PASSWORD_MAX + 2];
	char h[IDP_PWHASH_MAX];

	(void) state;
	memset(big, 'a', sizeof(big));
	assert_int_equal(
	    idp_password_hash(big, IDP_PASSWORD_MAX, FAST_ITER, h), CM_OK);
	assert_int_equal(idp_password_verify(big, IDP_PASSWORD_MAX, h), CM_OK);
	assert_int_equal(
	    idp_password_hash(big, IDP_PASSWORD_MAX + 1, FAST_ITER, h),
	    CM_EINVAL);
	assert_int_equal(
	    idp_password_verify(big, IDP_PASSWORD_MAX + 1, h), CM_EINVAL);
	assert_int_equal(idp_password_hash("secret1", 7, 0, h), CM_EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_production_iterations),
		cmocka_unit_test(test_salt_differs),
		cmocka_unit_test(test_tampered_and_malformed),
		cmocka_unit_test(test_limits),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
