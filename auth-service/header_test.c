// SPDX-License-Identifier: MIT
//
// Unit tests of Authorization header parsing (header.c): a table of
// accepted and refused header sets, each with its exact outcome.

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth-service/service.h"

typedef struct hcase {
	const char *name;
	const char *v[3];
	size_t      n;
	cm_err      want;
	const char *token; // expected token on CM_OK
} hcase;

static const hcase cases[] = {
	{ "plain", { "Bearer abc.def.ghi" }, 1, CM_OK, "abc.def.ghi" },
	{ "lower scheme", { "bearer tok" }, 1, CM_OK, "tok" },
	{ "upper scheme", { "BEARER tok" }, 1, CM_OK, "tok" },
	{ "mixed scheme", { "bEaReR tok" }, 1, CM_OK, "tok" },
	{ "no header", { NULL }, 0, CM_EAUTH, NULL },
	{ "empty value", { "" }, 1, CM_EAUTH, NULL },
	{ "scheme only", { "Bearer" }, 1, CM_EAUTH, NULL },
	{ "scheme and space", { "Bearer " }, 1, CM_EAUTH, NULL },
	{ "wrong scheme", { "Basic dXNlcjpwdw==" }, 1, CM_EAUTH, NULL },
	{ "scheme prefix", { "Bearerx tok" }, 1, CM_EAUTH, NULL },
	{ "two spaces", { "Bearer  tok" }, 1, CM_EAUTH, NULL },
	{ "tab separator", { "Bearer\ttok" }, 1, CM_EAUTH, NULL },
	{ "two tokens", { "Bearer a b" }, 1, CM_EAUTH, NULL },
	{ "tab inside", { "Bearer a\tb" }, 1, CM_EAUTH, NULL },
	{ "trailing space", { "Bearer tok " }, 1, CM_EAUTH, NULL },
	{ "leading space", { " Bearer tok" }, 1, CM_EAUTH, NULL },
	{ "newline", { "Bearer tok\n" }, 1, CM_EAUTH, NULL },
	{ "non-ascii", { "Bearer t\xc3\xa9" }, 1, CM_EAUTH, NULL },
	{ "two headers", { "Bearer a", "Bearer a" }, 2, CM_EAUTH, NULL },
	{ "two different", { "Bearer a", "Bearer b" }, 2, CM_EAUTH, NULL },
	{ "three headers", { "Bearer a", "Bearer b", "Bearer c" }, 3, CM_EAUTH,
	    NULL },
};

static void
test_table(void **state)
{
	(void) state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const hcase *c           = &cases[i];
		const char  *tok         = NULL;
		size_t       tl          = 0;
		char         detail[128] = "";
		cm_err       rv;

		rv = auth_header_parse(
		    c->v, c->n, &tok, &tl, detail, sizeof(detail));
		if (rv != c->want) {
			fail_msg("case \"%s\": got %s want %s", c->name,
			    cm_strerror(rv), cm_strerror(c->want));
		}
		if (rv == CM_OK) {
			assert_int_equal(tl, strlen(c->token));
			assert_memory_equal(tok, c->token, tl);
		} else {
			// Every refusal explains itself.
			assert_true(detail[0] != '\0');
		}
	}
}

static void
test_missing_detail(void **state)
{
	char        detail[128] = "";
	const char *tok;
	size_t      tl;

	(void) state;
	assert_int_equal(
	    auth_header_parse(NULL, 0, &tok, &tl, detail, sizeof(detail)),
	    CM_EAUTH);
	assert_string_equal(detail, "missing bearer token");
}

static void
test_lengths(void **state)
{
	char       *v     = malloc(AUTH_HEADER_MAX + 16);
	const char *vv[1] = { v };
	const char *tok   = NULL;
	size_t      tl    = 0;

	(void) state;
	// Exactly AUTH_TOKEN_MAX token bytes: accepted.
	memcpy(v, "Bearer ", 7);
	memset(v + 7, 'a', AUTH_TOKEN_MAX);
	v[7 + AUTH_TOKEN_MAX] = '\0';
	assert_int_equal(auth_header_parse(vv, 1, &tok, &tl, NULL, 0), CM_OK);
	assert_int_equal(tl, AUTH_TOKEN_MAX);
	// One more: refused.
	v[7 + AUTH_TOKEN_MAX]     = 'a';
	v[7 + AUTH_TOKEN_MAX + 1] = '\0';
	assert_int_equal(
	    auth_header_parse(vv, 1, &tok, &tl, NULL, 0), CM_EAUTH);
	// Far over the header limit: refused without reading it all.
	memset(v + 7, 'a', AUTH_HEADER_MAX);
	v[AUTH_HEADER_MAX + 7] = '\0';
	assert_int_equal(
	    auth_header_parse(vv, 1, &tok, &tl, NULL, 0), CM_EAUTH);
	free(v);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_missing_detail),
		cmocka_unit_test(test_lengths),
	};
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
