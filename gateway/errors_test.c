// SPDX-License-Identifier: MIT
//
// Unit tests of errors.c (the cm_err -> HTTP mapping table, error bodies
// and their required headers) and authz.c (the authorization decision).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/gw.h"

static void
test_status_table(void **state)
{
	static const struct {
		cm_err   err;
		unsigned status;
	} rows[] = {
		{ CM_OK, 500 },
		{ CM_EINVAL, 422 },
		{ CM_ENOENT, 404 },
		{ CM_EEXIST, 409 },
		{ CM_EPERM, 403 },
		{ CM_EAUTH, 401 },
		// An upstream timeout is never 401 nor success: retry later.
		{ CM_ETIMEDOUT, 503 },
		{ CM_EUNAVAIL, 503 },
		{ CM_ETOOBIG, 413 },
		{ CM_EINTERNAL, 500 },
		{ CM_ENOTSUP, 501 },
		{ CM_ECONFLICT, 409 },
		{ (cm_err) 99, 500 },
	};

	(void) state;
	assert_int_equal(sizeof(rows) / sizeof(rows[0]), CM_ERR_COUNT + 1);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		assert_int_equal(
		    gw_http_status_for(rows[i].err), rows[i].status);
	}
}

static const char *
header(const gw_response *r, const char *name)
{
	for (int i = 0; i < r->nheaders; i++) {
		if (strcmp(r->hname[i], name) == 0) {
			return (r->hvalue[i]);
		}
	}
	return (NULL);
}

static void
test_error_bodies(void **state)
{
	gw_response r = { 0 };

	(void) state;
	gw_error_response(&r, CM_ENOENT, "Thread not found", 1);
	assert_int_equal(r.status, 404);
	assert_string_equal(r.body, "{\"detail\":\"Thread not found\"}");
	assert_int_equal(r.body_len, strlen(r.body));
	assert_int_equal(r.nheaders, 0);
	gw_response_fini(&r);

	// 401 without a token: bare challenge.
	gw_error_response(&r, CM_EAUTH, NULL, 0);
	assert_int_equal(r.status, 401);
	assert_string_equal(
	    header(&r, "WWW-Authenticate"), "Bearer realm=\"threadgate\"");
	assert_non_null(strstr(r.body, "\"detail\":"));
	gw_response_fini(&r);

	// 401 with a token: invalid_token.
	gw_error_response(&r, CM_EAUTH, "expired", 1);
	assert_string_equal(header(&r, "WWW-Authenticate"),
	    "Bearer realm=\"threadgate\", error=\"invalid_token\"");
	assert_string_equal(r.body, "{\"detail\":\"expired\"}");
	gw_response_fini(&r);

	// 503 carries Retry-After.
	gw_error_response(&r, CM_ETIMEDOUT, "", 1);
	assert_int_equal(r.status, 503);
	assert_string_equal(header(&r, "Retry-After"), "1");
	assert_null(header(&r, "WWW-Authenticate"));
	gw_response_fini(&r);

	// A detail with quotes is escaped, not pasted.
	gw_error_response(&r, CM_EINVAL, "a \"b\"", 0);
	assert_string_equal(r.body, "{\"detail\":\"a \\\"b\\\"\"}");
	gw_response_fini(&r);

	// Invalid UTF-8 in a detail still gives a JSON body.
	gw_error_response(&r, CM_EINVAL, "\xff\xfe", 0);
	assert_int_equal(r.status, 422);
	assert_non_null(strstr(r.body, "\"detail\""));
	gw_response_fini(&r);

	// Protocol-level statuses without a cm_err.
	gw_status_response(&r, 405, NULL);
	assert_int_equal(r.status, 405);
	assert_string_equal(r.body, "{\"detail\":\"Method not allowed\"}");
	gw_status_response(&r, 414, "URI too long");
	assert_int_equal(r.status, 414);
	assert_string_equal(r.body, "{\"detail\":\"URI too long\"}");
	gw_response_fini(&r);
	gw_response_fini(NULL);
}

static void
test_authorize(void **state)
{
	gw_identity who    = { "user-1", "", NULL, 0 };
	gw_identity empty  = { "", "", NULL, 0 };
	gw_identity none   = { NULL, "", NULL, 0 };
	gw_action   acts[] = { GW_ACT_CREATE, GW_ACT_READ, GW_ACT_UPDATE,
		  GW_ACT_DELETE, GW_ACT_SEARCH };

	(void) state;
	for (size_t i = 0; i < sizeof(acts) / sizeof(acts[0]); i++) {
		assert_int_equal(gw_authorize(&who, acts[i], NULL), CM_OK);
		assert_int_equal(gw_authorize(&who, acts[i],
		                     "01a21aea-6f0c-7600-af02-7657fcc02ab7"),
		    CM_OK);
		// Fail closed without an identity.
		assert_int_equal(
		    gw_authorize(&empty, acts[i], NULL), CM_EAUTH);
		assert_int_equal(gw_authorize(&none, acts[i], NULL), CM_EAUTH);
		assert_int_equal(gw_authorize(NULL, acts[i], NULL), CM_EAUTH);
	}
	assert_int_equal(gw_authorize(&who, GW_ACT_NONE, NULL), CM_EPERM);
	assert_string_equal(gw_action_name(GW_ACT_READ), "threads:read");
	assert_string_equal(gw_action_name(GW_ACT_SEARCH), "threads:search");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_table),
		cmocka_unit_test(test_error_bodies),
		cmocka_unit_test(test_authorize),
	};
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
