// SPDX-License-Identifier: MIT
//
// Unit tests of the router (routes.c): 404 for unknown paths, 405 with the
// right Allow list for a known path with another method, the most literal
// pattern winning, per-segment percent-decoding, UUID checks of path ids,
// and the x-request-id rule.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/gw.h"

#define TID "01a21aea-6f0c-7600-af02-7657fcc02ab7"
#define CID "01a21aea-8222-74f3-84cf-2aafb51bc67e"

static void
test_literal_routes(void **state)
{
	gw_match m;

	(void) state;
	assert_int_equal(gw_route_match("GET", "/ok", &m), GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_OK);
	assert_int_equal(gw_route_match("GET", "/info", &m), GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_INFO);
	assert_int_equal(gw_route_match("POST", "/threads", &m), GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_THREAD_CREATE);
	// "/threads/search" is literal and beats "/threads/{id}".
	assert_int_equal(
	    gw_route_match("POST", "/threads/search", &m), GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_THREAD_SEARCH);
	assert_int_equal(
	    gw_route_match("POST", "/threads/count", &m), GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_THREAD_COUNT);
	assert_int_equal(
	    gw_route_match("POST", "/threads/prune", &m), GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_THREAD_PRUNE);
	// ".../state/checkpoint" beats ".../state/{cid}" for POST.
	assert_int_equal(
	    gw_route_match("POST", "/threads/" TID "/state/checkpoint", &m),
	    GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_STATE_CHECKPOINT);
}

static void
test_param_routes(void **state)
{
	gw_match m;

	(void) state;
	assert_int_equal(
	    gw_route_match("GET", "/threads/" TID, &m), GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_THREAD_GET);
	assert_string_equal(m.thread_id, TID);
	assert_int_equal(
	    gw_route_match("PATCH", "/threads/" TID, &m), GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_THREAD_PATCH);
	assert_int_equal(
	    gw_route_match("DELETE", "/threads/" TID, &m), GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_THREAD_DELETE);
	assert_int_equal(
	    gw_route_match("POST", "/threads/" TID "/copy", &m), GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_THREAD_COPY);
	assert_int_equal(
	    gw_route_match("GET", "/threads/" TID "/state/" CID, &m),
	    GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_STATE_GET_AT);
	assert_string_equal(m.checkpoint_id, CID);
	assert_int_equal(gw_route_match("PATCH", "/threads/" TID "/state", &m),
	    GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_STATE_PATCH);
	assert_int_equal(gw_route_match("GET", "/threads/" TID "/history", &m),
	    GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_HISTORY_GET);
	assert_int_equal(
	    gw_route_match("POST", "/threads/" TID "/history", &m),
	    GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_HISTORY_POST);
}

static void
test_not_found(void **state)
{
	gw_match m;

	(void) state;
	assert_int_equal(gw_route_match("GET", "/", &m), GW_MATCH_NOT_FOUND);
	assert_int_equal(gw_route_match("GET", "", &m), GW_MATCH_NOT_FOUND);
	assert_int_equal(
	    gw_route_match("GET", "/nope", &m), GW_MATCH_NOT_FOUND);
	assert_int_equal(
	    gw_route_match("GET", "/threads/", &m), GW_MATCH_NOT_FOUND);
	assert_int_equal(gw_route_match("GET", "/threads/" TID "/nope", &m),
	    GW_MATCH_NOT_FOUND);
	assert_int_equal(
	    gw_route_match("GET", "/ok/", &m), GW_MATCH_NOT_FOUND);
	// Far too many segments.
	assert_int_equal(gw_route_match("GET", "/a/b/c/d/e/f/g/h/i/j/k", &m),
	    GW_MATCH_NOT_FOUND);
	// "%2F" is not a separator: no route has this one segment.
	assert_int_equal(gw_route_match("GET", "/threads%2Fsearch", &m),
	    GW_MATCH_NOT_FOUND);
}

static void
test_bad_method(void **state)
{
	gw_match m;

	(void) state;
	assert_int_equal(
	    gw_route_match("PUT", "/threads/" TID, &m), GW_MATCH_BAD_METHOD);
	assert_string_equal(m.allow, "GET, PATCH, DELETE, OPTIONS");
	assert_int_equal(
	    gw_route_match("GET", "/threads", &m), GW_MATCH_BAD_METHOD);
	assert_string_equal(m.allow, "POST, OPTIONS");
	assert_int_equal(
	    gw_route_match("POST", "/ok", &m), GW_MATCH_BAD_METHOD);
	assert_string_equal(m.allow, "GET, OPTIONS");
	assert_int_equal(
	    gw_route_match("DELETE", "/threads/" TID "/state", &m),
	    GW_MATCH_BAD_METHOD);
	assert_string_equal(m.allow, "GET, POST, PATCH, OPTIONS");
}

static void
test_uuid_checks(void **state)
{
	gw_match m;

	(void) state;
	assert_int_equal(gw_route_match("GET", "/threads/not-a-uuid", &m),
	    GW_MATCH_BAD_PARAM);
	assert_string_equal(m.detail, "Invalid thread ID: must be a UUID");
	assert_non_null(m.route);
	assert_int_equal(m.route->id, GW_R_THREAD_GET);
	// One character short, one too long.
	assert_int_equal(
	    gw_route_match(
	        "GET", "/threads/01a21aea-6f0c-7600-af02-7657fcc02ab", &m),
	    GW_MATCH_BAD_PARAM);
	assert_int_equal(
	    gw_route_match(
	        "GET", "/threads/01a21aea-6f0c-7600-af02-7657fcc02ab77", &m),
	    GW_MATCH_BAD_PARAM);
	// GET /threads/search is the {id} route with a non-UUID id.
	assert_int_equal(
	    gw_route_match("GET", "/threads/search", &m), GW_MATCH_BAD_PARAM);
	assert_int_equal(
	    gw_route_match("GET", "/threads/" TID "/state/xyz", &m),
	    GW_MATCH_BAD_PARAM);
	assert_string_equal(m.detail, "Invalid checkpoint ID: must be a UUID");
	// Upper case and the 32-hex form are canonicalised.
	assert_int_equal(
	    gw_route_match(
	        "GET", "/threads/01A21AEA-6F0C-7600-AF02-7657FCC02AB7", &m),
	    GW_MATCH_OK);
	assert_string_equal(m.thread_id, TID);
	assert_int_equal(gw_route_match("GET",
	                     "/threads/01a21aea6f0c7600af027657fcc02ab7", &m),
	    GW_MATCH_OK);
	assert_string_equal(m.thread_id, TID);
}

static void
test_percent_decoding(void **state)
{
	gw_match m;
	char     out[16];

	(void) state;
	// Encoded id characters decode before the UUID check.
	assert_int_equal(gw_route_match("GET",
	                     "/threads/%30%31a21aea-6f0c-7600-af02-"
	                     "7657fcc02ab7",
	                     &m),
	    GW_MATCH_OK);
	assert_string_equal(m.thread_id, TID);
	// An encoded literal segment matches too.
	assert_int_equal(
	    gw_route_match("POST", "/threads/%73earch", &m), GW_MATCH_OK);
	assert_int_equal(m.route->id, GW_R_THREAD_SEARCH);
	// Bad escapes and encoded NULs never match an id.
	assert_int_equal(
	    gw_route_match("GET", "/threads/%zz", &m), GW_MATCH_BAD_PARAM);
	assert_int_equal(
	    gw_route_match("GET", "/threads/%00", &m), GW_MATCH_BAD_PARAM);
	assert_int_equal(
	    gw_route_match("GET", "/threads/%4", &m), GW_MATCH_BAD_PARAM);
	// An encoded slash stays inside the id segment -> not a UUID.
	assert_int_equal(
	    gw_route_match("GET", "/threads/a%2Fb", &m), GW_MATCH_BAD_PARAM);

	assert_int_equal(gw_pct_decode("a%20b", 5, out, sizeof(out)), 3);
	assert_string_equal(out, "a b");
	assert_int_equal(gw_pct_decode("a+b", 3, out, sizeof(out)), 3);
	assert_string_equal(out, "a+b");
	assert_int_equal(gw_pct_decode("%", 1, out, sizeof(out)), -1);
	assert_int_equal(gw_pct_decode("%g0", 3, out, sizeof(out)), -1);
	assert_int_equal(gw_pct_decode("%00", 3, out, sizeof(out)), -1);
	assert_int_equal(gw_pct_decode("0123456789abcdef", 16, out, 16), -1);
	assert_int_equal(gw_pct_decode("", 0, out, sizeof(out)), 0);
	assert_string_equal(out, "");
}

static void
test_request_id_rule(void **state)
{
	char rid[CM_RID_MAX + 1];
	char long_ok[CM_RID_MAX + 1];
	char too_long[CM_RID_MAX + 2];

	(void) state;
	gw_request_id_pick("abc-DEF_1.2", rid);
	assert_string_equal(rid, "abc-DEF_1.2");
	memset(long_ok, 'a', CM_RID_MAX);
	long_ok[CM_RID_MAX] = '\0';
	gw_request_id_pick(long_ok, rid);
	assert_string_equal(rid, long_ok);

	// Rejected: too long, bad characters, empty, NULL -> a fresh id of
	// 32 hex chars.
	memset(too_long, 'a', CM_RID_MAX + 1);
	too_long[CM_RID_MAX + 1] = '\0';
	const char *bad[]        = { too_long, "a b", "a\"b", "",
		       "x\r\nSet-Cookie: y", "ü", NULL };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		gw_request_id_pick(bad[i], rid);
		assert_int_equal(strlen(rid), CM_RID_LEN);
		for (size_t k = 0; k < CM_RID_LEN; k++) {
			assert_true(
			    strchr("0123456789abcdef", rid[k]) != NULL);
		}
	}
	// Two fresh ids differ.
	{
		char a[CM_RID_MAX + 1], b[CM_RID_MAX + 1];
		gw_request_id_pick(NULL, a);
		gw_request_id_pick(NULL, b);
		assert_string_not_equal(a, b);
	}
}

static void
test_table_consistent(void **state)
{
	size_t          n;
	const gw_route *t = gw_route_table(&n);

	(void) state;
	assert_int_equal(n, GW_R_COUNT_);
	for (size_t i = 0; i < n; i++) {
		// Every authenticated route names its rpc and reply type;
		// meta routes have neither.
		if (t[i].action == GW_ACT_NONE) {
			assert_null(t[i].rpc);
		} else {
			assert_non_null(t[i].rpc);
			assert_non_null(t[i].reply_desc);
		}
		// Only reads that may be re-sent may share a message (the
		// client batches nothing else), and only point reads by key:
		// a scan or a history in a batch would hold back its others.
		if (t[i].batch) {
			assert_int_equal(t[i].retry, GW_RETRY_READ);
			assert_int_equal(t[i].action, GW_ACT_READ);
			assert_true(strcmp(t[i].rpc, "GetThread") == 0 ||
			    strcmp(t[i].rpc, "GetState") == 0);
		}
	}
	// The point reads do.
	assert_int_equal(t[GW_R_THREAD_GET].batch, 1);
	assert_int_equal(t[GW_R_STATE_GET].batch, 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_literal_routes),
		cmocka_unit_test(test_param_routes),
		cmocka_unit_test(test_not_found),
		cmocka_unit_test(test_bad_method),
		cmocka_unit_test(test_uuid_checks),
		cmocka_unit_test(test_percent_decoding),
		cmocka_unit_test(test_request_id_rule),
		cmocka_unit_test(test_table_consistent),
	};
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
