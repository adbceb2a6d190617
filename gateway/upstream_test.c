// SPDX-License-Identifier: MIT
//
// Unit tests of upstream.c's re-send rules: which routes' thread-service
// calls may be re-sent to another replica after they may have reached one
// (reads yes; writes no, except creates made idempotent), how a create
// without a thread_id gets its id and if_exists=do_nothing from the
// gateway, and the Authenticate affinity key.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/util.h"
#include "gateway/gw.h"

#define TID "01a21aea-6f0c-7600-af02-7657fcc02ab7"

static const char *
no_query(void *arg, const char *name)
{
	(void) arg;
	(void) name;
	return (NULL);
}

// Builds the request of method + path + body; returns the idempotent
// verdict. req is left for the caller to inspect and fini.
static int
verdict(
    const char *method, const char *path, const char *body, gw_request *req)
{
	gw_match m;
	char     detail[GW_DETAIL_MAX];

	memset(req, 0, sizeof(*req));
	assert_int_equal(gw_route_match(method, path, &m), GW_MATCH_OK);
	assert_int_equal(gw_request_build(&m, body, strlen(body), 1 << 20,
	                     no_query, NULL, req, detail, sizeof(detail)),
	    CM_OK);
	return (gw_upstream_idempotent(req));
}

static void
test_reads_resend(void **state)
{
	static const char *const reads[][3] = {
		{ "GET", "/threads/" TID, "" },
		{ "POST", "/threads/search", "{}" },
		{ "POST", "/threads/count", "{}" },
		{ "GET", "/threads/" TID "/state", "" },
		{ "GET", "/threads/" TID "/state/" TID, "" },
		{ "POST", "/threads/" TID "/state/checkpoint",
		    "{\"checkpoint\":{}}" },
		{ "GET", "/threads/" TID "/history", "" },
		{ "POST", "/threads/" TID "/history", "{}" },
	};
	gw_request req;

	(void) state;
	for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
		assert_int_equal(
		    verdict(reads[i][0], reads[i][1], reads[i][2], &req), 1);
		gw_request_fini(&req);
	}
}

static void
test_writes_do_not(void **state)
{
	static const char *const writes[][3] = {
		{ "PATCH", "/threads/" TID, "{\"metadata\":{\"a\":1}}" },
		{ "DELETE", "/threads/" TID, "" },
		{ "POST", "/threads/" TID "/copy", "" },
		{ "POST", "/threads/prune", "{\"thread_ids\":[\"" TID "\"]}" },
		{ "POST", "/threads/" TID "/state", "{\"values\":{}}" },
		{ "PATCH", "/threads/" TID "/state", "{\"metadata\":{}}" },
		// The client's own id, if_exists raise (the default): a
		// second attempt could not tell its own thread from an older
		// one.
		{ "POST", "/threads", "{\"thread_id\":\"" TID "\"}" },
	};
	gw_request req;

	(void) state;
	for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++) {
		assert_int_equal(
		    verdict(writes[i][0], writes[i][1], writes[i][2], &req),
		    0);
		gw_request_fini(&req);
	}
	// ... and its id is left alone.
	verdict("POST", "/threads", "{\"thread_id\":\"" TID "\"}", &req);
	assert_string_equal(req.u.create.thread_id, TID);
	assert_int_equal(req.u.create.if_exists,
	    THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_RAISE);
	gw_request_fini(&req);
}

static void
test_creates(void **state)
{
	gw_request req;
	char       first[CM_UUID_LEN + 1];
	char       canon[CM_UUID_LEN + 1];

	(void) state;
	// No id: the gateway picks a fresh UUIDv7 and asks do_nothing.
	assert_int_equal(verdict("POST", "/threads", "{}", &req), 1);
	assert_int_equal(strlen(req.u.create.thread_id), CM_UUID_LEN);
	assert_int_equal(
	    cm_uuid_parse(req.u.create.thread_id, CM_UUID_LEN, canon), CM_OK);
	assert_int_equal(req.u.create.thread_id[14], '7');
	assert_int_equal(req.u.create.if_exists,
	    THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_DO_NOTHING);
	memcpy(first, req.u.create.thread_id, sizeof(first));
	gw_request_fini(&req);
	// Each request gets its own.
	assert_int_equal(verdict("POST", "/threads", "{}", &req), 1);
	assert_string_not_equal(req.u.create.thread_id, first);
	gw_request_fini(&req);
	// The client's id with do_nothing is idempotent as it is.
	assert_int_equal(
	    verdict("POST", "/threads",
	        "{\"thread_id\":\"" TID "\",\"if_exists\":\"do_nothing\"}",
	        &req),
	    1);
	assert_string_equal(req.u.create.thread_id, TID);
	gw_request_fini(&req);
}

static void
test_affinity_key(void **state)
{
	gw_job a, b;
	char   t1[] = "Bearer token-one";
	char   t2[] = "Bearer token-two";

	(void) state;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	assert_int_equal(gw_auth_affinity(&a), 0);
	a.nauth   = 1;
	a.auth[0] = t1;
	b.nauth   = 1;
	b.auth[0] = t1;
	assert_int_equal(gw_auth_affinity(&a), gw_auth_affinity(&b));
	assert_int_not_equal(gw_auth_affinity(&a), 0);
	b.auth[0] = t2;
	assert_int_not_equal(gw_auth_affinity(&a), gw_auth_affinity(&b));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reads_resend),
		cmocka_unit_test(test_writes_do_not),
		cmocka_unit_test(test_creates),
		cmocka_unit_test(test_affinity_key),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
