// SPDX-License-Identifier: MIT
//
// Unit tests of the JSON mapping (route_threads.c, route_state.c): Thread
// proto -> JSON (timestamps, omitted values, ttl), select parsing and
// projection, ThreadState JSON (empty and stored), replies (search
// headers, count, prune, minimal patch), and request JSON -> proto with
// every 422 case naming its field.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/json.h"
#include "gateway/gw.h"

#define TID "01a21aea-6f0c-7600-af02-7657fcc02ab7"
#define CID "01a21aea-8222-74f3-84cf-2aafb51bc67e"
#define PID "01a21aea-8222-74f3-84cf-2aafb51bc000"
// 2024-07-18T18:35:15.540834Z in microseconds.
#define T0 1721327715540834LL

static Threadgate__Threads__V1__Thread
sample_thread(void)
{
	Threadgate__Threads__V1__Thread t =
	    THREADGATE__THREADS__V1__THREAD__INIT;

	t.thread_id       = TID;
	t.owner           = "u1";
	t.metadata_json   = "{\"owner\":\"u1\",\"a\":1}";
	t.status          = "idle";
	t.config_json     = "{}";
	t.values_json     = "";
	t.interrupts_json = "{}";
	t.created_at_us   = T0;
	t.updated_at_us   = T0 + 1000000;
	return (t);
}

static char *
dump_thread(const Threadgate__Threads__V1__Thread *t, unsigned mask)
{
	gw_jw  w;
	size_t n;

	gw_jw_init(&w);
	assert_int_equal(gw_thread_json(t, mask, &w), CM_OK);
	return (gw_jw_take(&w, &n));
}

static void
test_thread_json(void **state)
{
	Threadgate__Threads__V1__Thread t = sample_thread();
	char                           *s;

	(void) state;
	s = dump_thread(&t, GW_F_ALL & ~(GW_F_CONTEXT | GW_F_ERROR));
	assert_string_equal(s,
	    "{\"thread_id\":\"" TID "\","
	    "\"created_at\":\"2024-07-18T18:35:15.540834+00:00\","
	    "\"updated_at\":\"2024-07-18T18:35:16.540834+00:00\","
	    "\"metadata\":{\"owner\":\"u1\",\"a\":1},\"status\":\"idle\","
	    "\"config\":{},\"interrupts\":{}}");
	free(s);

	// values present once the service sends them; ttl only when set.
	t.values_json  = "{\"messages\":[]}";
	t.ttl_minutes  = 30;
	t.ttl_strategy = "delete";
	s = dump_thread(&t, GW_F_ALL & ~(GW_F_CONTEXT | GW_F_ERROR));
	assert_non_null(strstr(s, "\"values\":{\"messages\":[]}"));
	assert_non_null(
	    strstr(s, "\"ttl\":{\"ttl\":30.0,\"strategy\":\"delete\"}"));
	free(s);

	// Unparsable JSON from the service is an internal error.
	t.metadata_json = "{nope";
	{
		gw_jw w;
		gw_jw_init(&w);
		assert_int_equal(
		    gw_thread_json(&t, GW_F_ALL, &w), CM_EINTERNAL);
		assert_true(w.err);
		gw_jw_fini(&w);
	}
}

static void
test_select(void **state)
{
	Threadgate__Threads__V1__Thread t = sample_thread();
	unsigned                        mask;
	char                            d[GW_DETAIL_MAX];
	json_t                         *sel;
	char                           *s;

	(void) state;
	sel = json_pack("[s,s]", "thread_id", "status");
	assert_int_equal(gw_select_parse(sel, &mask, d, sizeof(d)), CM_OK);
	json_decref(sel);
	assert_int_equal(mask, GW_F_THREAD_ID | GW_F_STATUS);
	s = dump_thread(&t, mask);
	assert_string_equal(
	    s, "{\"thread_id\":\"" TID "\",\"status\":\"idle\"}");
	free(s);

	sel = json_pack("[s,s,s]", "context", "error", "ttl");
	assert_int_equal(gw_select_parse(sel, &mask, d, sizeof(d)), CM_OK);
	json_decref(sel);
	s = dump_thread(&t, mask);
	// ttl is not set -> omitted even when selected.
	assert_string_equal(s, "{\"context\":{},\"error\":null}");
	free(s);

	sel = json_pack("[s,s]", "thread_id", "owner");
	assert_int_equal(gw_select_parse(sel, &mask, d, sizeof(d)), CM_EINVAL);
	assert_string_equal(d, "select: unknown field 'owner'");
	json_decref(sel);
	sel = json_pack("[i]", 1);
	assert_int_equal(gw_select_parse(sel, &mask, d, sizeof(d)), CM_EINVAL);
	json_decref(sel);
	sel = json_string("thread_id");
	assert_int_equal(gw_select_parse(sel, &mask, d, sizeof(d)), CM_EINVAL);
	json_decref(sel);
	// A name with a NUL after it is not that field (issue 10).
	sel = json_loads("[\"thread_id\\u0000\"]", JSON_ALLOW_NUL, NULL);
	assert_non_null(sel);
	assert_int_equal(gw_select_parse(sel, &mask, d, sizeof(d)), CM_EINVAL);
	assert_string_equal(d, "select[0] must be a field name");
	json_decref(sel);
}

static void
test_state_json(void **state)
{
	Threadgate__Threads__V1__StateReply s =
	    THREADGATE__THREADS__V1__STATE_REPLY__INIT;
	Threadgate__Threads__V1__Checkpoint c =
	    THREADGATE__THREADS__V1__CHECKPOINT__INIT;
	char   *next[] = { "agent" };
	json_t *v;
	char   *txt;
	gw_jw   w;
	size_t  n;

	(void) state;
	s.thread_created_at_us = T0;
	gw_jw_init(&w);
	assert_int_equal(gw_state_json(&s, TID, &w), CM_OK);
	txt = gw_jw_take(&w, &n);
	assert_string_equal(txt,
	    "{\"values\":{},\"next\":[],\"tasks\":[],\"checkpoint\":null,"
	    "\"metadata\":{},"
	    "\"created_at\":\"2024-07-18T18:35:15.540834+00:00\","
	    "\"parent_checkpoint\":null,\"interrupts\":[]}");
	free(txt);

	c.thread_id            = TID;
	c.checkpoint_id        = CID;
	c.parent_checkpoint_id = PID;
	c.values_json          = "{\"x\":1}";
	c.metadata_json        = "{\"as_node\":\"agent\"}";
	c.next                 = next;
	c.n_next               = 1;
	c.created_at_us        = T0;
	s.has_checkpoint       = 1;
	s.checkpoint           = &c;
	gw_jw_init(&w);
	assert_int_equal(gw_state_json(&s, TID, &w), CM_OK);
	txt = gw_jw_take(&w, &n);
	assert_string_equal(txt,
	    "{\"values\":{\"x\":1},\"next\":[\"agent\"],\"tasks\":[],"
	    "\"checkpoint\":{\"thread_id\":\"" TID "\",\"checkpoint_ns\":\"\","
	    "\"checkpoint_id\":\"" CID "\",\"checkpoint_map\":null},"
	    "\"metadata\":{\"as_node\":\"agent\"},"
	    "\"created_at\":\"2024-07-18T18:35:15.540834+00:00\","
	    "\"parent_checkpoint\":{\"thread_id\":\"" TID "\","
	    "\"checkpoint_ns\":\"\",\"checkpoint_id\":\"" PID "\","
	    "\"checkpoint_map\":null},\"interrupts\":[]}");
	free(txt);

	// The first checkpoint has no parent.
	c.parent_checkpoint_id = "";
	gw_jw_init(&w);
	assert_int_equal(gw_checkpoint_state_json(&c, &w), CM_OK);
	txt = gw_jw_take(&w, &n);
	v   = json_loads(txt, 0, NULL);
	assert_non_null(v);
	assert_true(json_is_null(json_object_get(v, "parent_checkpoint")));
	json_decref(v);
	free(txt);
}

// ---------------------------------------------------------------------
// Request building
// ---------------------------------------------------------------------

typedef struct q {
	const char *limit;
	const char *before;
} q;

static const char *
query(void *arg, const char *name)
{
	q *qq = arg;

	if (qq == NULL) {
		return (NULL);
	}
	if (strcmp(name, "limit") == 0) {
		return (qq->limit);
	}
	if (strcmp(name, "before") == 0) {
		return (qq->before);
	}
	return (NULL);
}

// build() routes method+path and builds body; returns the cm_err and
// leaves the detail in d. req must be finied by the caller.
static cm_err
build(const char *method, const char *path, const char *body, q *qq,
    gw_request *req, char *d)
{
	gw_match m;

	memset(req, 0, sizeof(*req));
	d[0] = '\0';
	assert_int_equal(gw_route_match(method, path, &m), GW_MATCH_OK);
	return (gw_request_build(&m, body, strlen(body), 1 << 20, query, qq,
	    req, d, GW_DETAIL_MAX));
}

static void
expect_422(
    const char *method, const char *path, const char *body, const char *detail)
{
	gw_request req;
	char       d[GW_DETAIL_MAX];

	assert_int_equal(build(method, path, body, NULL, &req, d), CM_EINVAL);
	if (strcmp(d, detail) != 0) {
		fail_msg("%s %s %s: detail '%s', want '%s'", method, path,
		    body, d, detail);
	}
	gw_request_fini(&req);
}

static void
test_build_create(void **state)
{
	gw_request req;
	char       d[GW_DETAIL_MAX];

	(void) state;
	// Empty body, {} and the JS SDK's {"metadata":{}} are the same.
	const char *same[] = { "", "  \n", "{}", "{\"metadata\":{}}",
		"{\"metadata\":null,\"unknown\":[1,2]}" };
	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
		assert_int_equal(
		    build("POST", "/threads", same[i], NULL, &req, d), CM_OK);
		assert_string_equal(req.u.create.metadata_json, "");
		assert_string_equal(req.u.create.thread_id, "");
		assert_int_equal(req.u.create.if_exists,
		    THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_RAISE);
		assert_ptr_equal(req.owner_slot, &req.u.create.owner);
		assert_ptr_equal(gw_request_message(&req), &req.u.create.base);
		gw_request_fini(&req);
	}
	assert_int_equal(build("POST", "/threads",
	                     "{\"thread_id\":\"01A21AEA-6F0C-7600-AF02-"
	                     "7657FCC02AB7\",\"metadata\":{\"k\":\"v\"},"
	                     "\"if_exists\":\"do_nothing\",\"ttl\":{\"ttl\":5,"
	                     "\"strategy\":\"delete\"},\"supersteps\":[{"
	                     "\"updates\":[]}]}",
	                     NULL, &req, d),
	    CM_OK);
	assert_string_equal(req.u.create.thread_id, TID);
	assert_string_equal(req.u.create.metadata_json, "{\"k\":\"v\"}");
	assert_int_equal(req.u.create.if_exists,
	    THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_DO_NOTHING);
	assert_true(req.u.create.ttl_minutes == 5.0);
	assert_string_equal(req.u.create.ttl_strategy, "delete");
	assert_string_equal(
	    req.u.create.supersteps_json, "[{\"updates\":[]}]");
	gw_request_fini(&req);
	// A bare number of minutes.
	assert_int_equal(
	    build("POST", "/threads", "{\"ttl\":1.5}", NULL, &req, d), CM_OK);
	assert_true(req.u.create.ttl_minutes == 1.5);
	gw_request_fini(&req);

	expect_422("POST", "/threads", "{bad", "Invalid JSON in request body");
	expect_422(
	    "POST", "/threads", "[1]", "Request body must be a JSON object");
	expect_422(
	    "POST", "/threads", "\"x\"", "Request body must be a JSON object");
	expect_422("POST", "/threads", "{\"metadata\":[]}",
	    "metadata must be an object");
	expect_422("POST", "/threads", "{\"thread_id\":\"nope\"}",
	    "thread_id must be a UUID");
	expect_422("POST", "/threads", "{\"thread_id\":5}",
	    "thread_id must be a UUID");
	expect_422("POST", "/threads", "{\"if_exists\":\"replace\"}",
	    "if_exists must be 'raise' or 'do_nothing'");
	expect_422("POST", "/threads", "{\"ttl\":-1}",
	    "ttl must be a number of minutes >= 0 or {\"ttl\": minutes, "
	    "\"strategy\": \"delete\"}");
	expect_422("POST", "/threads",
	    "{\"ttl\":{\"ttl\":1,\"strategy\":"
	    "\"keep\"}}",
	    "ttl.strategy must be \"delete\"");
	expect_422("POST", "/threads", "{\"supersteps\":{}}",
	    "supersteps must be a list");
	{
		// Deeper than CM_JSON_MAX_DEPTH.
		char deep[300];
		memset(deep, '[', 100);
		memset(deep + 100, ']', 100);
		deep[200] = '\0';
		expect_422(
		    "POST", "/threads", deep, "Invalid JSON in request body");
	}
}

static void
test_build_search(void **state)
{
	gw_request req;
	char       d[GW_DETAIL_MAX];

	(void) state;
	assert_int_equal(
	    build("POST", "/threads/search", "{}", NULL, &req, d), CM_OK);
	assert_int_equal(req.u.search.limit, 10);
	assert_int_equal(req.u.search.offset, 0);
	assert_false(req.u.search.ascending);
	assert_int_equal(req.u.search.sort_by,
	    THREADGATE__THREADS__V1__SORT_BY__SORT_BY_CREATED_AT);
	assert_int_equal(req.select, GW_F_ALL & ~(GW_F_CONTEXT | GW_F_ERROR));
	gw_request_fini(&req);

	assert_int_equal(build("POST", "/threads/search",
	                     "{\"limit\":1000,\"offset\":20,\"sort_by\":"
	                     "\"thread_id\",\"sort_order\":\"asc\",\"status\":"
	                     "\"idle\",\"ids\":[\"" TID "\"],\"metadata\":{"
	                     "\"owner\":\"someone-else\"},\"values\":{\"a\":"
	                     "{\"b\":1}},\"select\":[\"thread_id\"]}",
	                     NULL, &req, d),
	    CM_OK);
	assert_int_equal(req.u.search.limit, 1000);
	assert_int_equal(req.u.search.offset, 20);
	assert_true(req.u.search.ascending);
	assert_int_equal(req.u.search.n_ids, 1);
	assert_string_equal(req.u.search.ids[0], TID);
	assert_string_equal(req.u.search.status, "idle");
	assert_string_equal(req.u.search.values_json, "{\"a\":{\"b\":1}}");
	assert_int_equal(req.select, GW_F_THREAD_ID);
	// The owner field is set only from the identity, never the body.
	assert_string_equal(req.u.search.owner, "");
	gw_request_fini(&req);

	expect_422("POST", "/threads/search", "{\"limit\":0}",
	    "limit must be an integer between 1 and 1000");
	expect_422("POST", "/threads/search", "{\"limit\":1001}",
	    "limit must be an integer between 1 and 1000");
	expect_422("POST", "/threads/search", "{\"limit\":\"10\"}",
	    "limit must be an integer between 1 and 1000");
	expect_422("POST", "/threads/search", "{\"limit\":2.5}",
	    "limit must be an integer between 1 and 1000");
	expect_422("POST", "/threads/search", "{\"offset\":-1}",
	    "offset must be an integer between 0 and 2147483647");
	expect_422("POST", "/threads/search", "{\"sort_by\":\"owner\"}",
	    "sort_by must be one of thread_id, status, created_at, "
	    "updated_at");
	expect_422("POST", "/threads/search", "{\"sort_order\":\"up\"}",
	    "sort_order must be 'asc' or 'desc'");
	expect_422("POST", "/threads/search", "{\"status\":\"done\"}",
	    "status must be one of idle, busy, interrupted, error");
	expect_422("POST", "/threads/search", "{\"ids\":[\"x\"]}",
	    "ids[0] must be a UUID");
	expect_422("POST", "/threads/search", "{\"ids\":\"x\"}",
	    "ids must be a list of at most 1000 UUIDs");
	expect_422("POST", "/threads/search", "{\"select\":[\"nope\"]}",
	    "select: unknown field 'nope'");
	expect_422("POST", "/threads/search", "{\"values\":1}",
	    "values must be an object");
	expect_422("POST", "/threads/count", "{\"metadata\":\"x\"}",
	    "metadata must be an object");
	expect_422("POST", "/threads/prune", "{\"strategy\":\"all\"}",
	    "strategy must be 'delete' or 'keep_latest'");
	expect_422("POST", "/threads/prune", "{\"thread_ids\":[1]}",
	    "thread_ids[0] must be a UUID");
}

static void
test_build_state(void **state)
{
	gw_request req;
	char       d[GW_DETAIL_MAX];
	q          qq = { "3", CID };

	(void) state;
	// before as a plain id, as {checkpoint_id} and as a config.
	const char *befores[] = { "\"" CID "\"",
		"{\"checkpoint_id\":\"" CID "\"}",
		"{\"configurable\":{\"thread_id\":\"" TID
		"\",\"checkpoint_ns\":"
		"\"\",\"checkpoint_id\":\"" CID "\"}}" };
	for (size_t i = 0; i < 3; i++) {
		char body[512];
		snprintf(body, sizeof(body), "{\"limit\":5,\"before\":%s}",
		    befores[i]);
		assert_int_equal(build("POST", "/threads/" TID "/history",
		                     body, NULL, &req, d),
		    CM_OK);
		assert_string_equal(req.u.history.before_checkpoint_id, CID);
		assert_int_equal(req.u.history.limit, 5);
		assert_string_equal(req.u.history.thread_id, TID);
		gw_request_fini(&req);
	}
	assert_int_equal(
	    build("GET", "/threads/" TID "/history", "", &qq, &req, d), CM_OK);
	assert_int_equal(req.u.history.limit, 3);
	assert_string_equal(req.u.history.before_checkpoint_id, CID);
	gw_request_fini(&req);
	qq.limit = "x";
	assert_int_equal(
	    build("GET", "/threads/" TID "/history", "", &qq, &req, d),
	    CM_EINVAL);
	assert_string_equal(d, "limit must be an integer between 1 and 1000");
	gw_request_fini(&req);

	assert_int_equal(build("POST", "/threads/" TID "/state",
	                     "{\"values\":{\"a\":1},\"as_node\":\"agent\","
	                     "\"checkpoint\":{\"checkpoint_id\":\"" CID "\","
	                     "\"checkpoint_ns\":\"sub\"}}",
	                     NULL, &req, d),
	    CM_OK);
	assert_string_equal(req.u.update_state.values_json, "{\"a\":1}");
	assert_string_equal(req.u.update_state.as_node, "agent");
	assert_string_equal(req.u.update_state.checkpoint_id, CID);
	assert_string_equal(req.u.update_state.checkpoint_ns, "sub");
	gw_request_fini(&req);
	assert_int_equal(
	    build("POST", "/threads/" TID "/state", "{}", NULL, &req, d),
	    CM_OK);
	assert_string_equal(req.u.update_state.values_json, "null");
	gw_request_fini(&req);

	assert_int_equal(
	    build("POST", "/threads/" TID "/state/checkpoint",
	        "{\"checkpoint\":{\"checkpoint_id\":\"" CID "\"}}", NULL, &req,
	        d),
	    CM_OK);
	assert_string_equal(req.u.state.checkpoint_id, CID);
	gw_request_fini(&req);
	assert_int_equal(
	    build("GET", "/threads/" TID "/state/" CID, "", NULL, &req, d),
	    CM_OK);
	assert_string_equal(req.u.state.checkpoint_id, CID);
	gw_request_fini(&req);

	expect_422("POST", "/threads/" TID "/state", "{\"values\":3}",
	    "values must be an object, a list or null");
	expect_422("POST", "/threads/" TID "/history", "{\"before\":\"x\"}",
	    "before: checkpoint_id must be a UUID");
	expect_422("POST", "/threads/" TID "/history", "{\"before\":5}",
	    "before must be a checkpoint id or an object");
	expect_422("POST", "/threads/" TID "/history", "{\"limit\":0}",
	    "limit must be an integer between 1 and 1000");
	expect_422("PATCH", "/threads/" TID "/state", "{\"metadata\":1}",
	    "metadata must be an object");
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
test_render(void **state)
{
	gw_request                                  req;
	gw_response                                 r = { 0 };
	char                                        d[GW_DETAIL_MAX];
	Threadgate__Threads__V1__Thread             t    = sample_thread();
	Threadgate__Threads__V1__Thread            *ts[] = { &t, &t };
	Threadgate__Threads__V1__SearchThreadsReply sr =
	    THREADGATE__THREADS__V1__SEARCH_THREADS_REPLY__INIT;
	Threadgate__Threads__V1__CountReply cr =
	    THREADGATE__THREADS__V1__COUNT_REPLY__INIT;

	(void) state;
	// Page 2 of 25 with limit 10: next is 20.
	assert_int_equal(build("POST", "/threads/search",
	                     "{\"limit\":10,\"offset\":10,\"select\":["
	                     "\"thread_id\"]}",
	                     NULL, &req, d),
	    CM_OK);
	sr.threads   = ts;
	sr.n_threads = 2;
	sr.total     = 25;
	assert_int_equal(gw_reply_render(&req, &sr.base, &r), CM_OK);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body,
	    "[{\"thread_id\":\"" TID "\"},{\"thread_id\":\"" TID "\"}]");
	assert_string_equal(header(&r, "X-Pagination-Total"), "25");
	assert_string_equal(header(&r, "X-Pagination-Next"), "20");
	gw_response_fini(&r);
	// Last page: no next.
	req.u.search.offset = 23;
	assert_int_equal(gw_reply_render(&req, &sr.base, &r), CM_OK);
	assert_null(header(&r, "X-Pagination-Next"));
	gw_response_fini(&r);
	gw_request_fini(&req);

	assert_int_equal(
	    build("POST", "/threads/count", "", NULL, &req, d), CM_OK);
	cr.count = 3;
	assert_int_equal(gw_reply_render(&req, &cr.base, &r), CM_OK);
	assert_string_equal(r.body, "3");
	gw_response_fini(&r);
	gw_request_fini(&req);

	// PATCH with Prefer: return=minimal -> 204 empty.
	assert_int_equal(build("PATCH", "/threads/" TID, "{\"metadata\":{}}",
	                     NULL, &req, d),
	    CM_OK);
	req.prefer_minimal = 1;
	assert_int_equal(gw_reply_render(&req, &t.base, &r), CM_OK);
	assert_int_equal(r.status, 204);
	assert_null(r.body);
	req.prefer_minimal = 0;
	assert_int_equal(gw_reply_render(&req, &t.base, &r), CM_OK);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, TID));
	gw_response_fini(&r);
	gw_request_fini(&req);

	// Routes without a body ignore one.
	assert_int_equal(
	    build("GET", "/threads/" TID, "{not json", NULL, &req, d), CM_OK);
	assert_string_equal(req.u.ref.thread_id, TID);
	gw_request_fini(&req);
	assert_int_equal(
	    build("POST", "/threads/" TID "/copy", "<xml/>", NULL, &req, d),
	    CM_OK);
	gw_request_fini(&req);

	// DELETE -> 204 empty.
	assert_int_equal(
	    build("DELETE", "/threads/" TID, "", NULL, &req, d), CM_OK);
	assert_int_equal(gw_reply_render(&req, &t.base, &r), CM_OK);
	assert_int_equal(r.status, 204);
	assert_null(r.body);
	gw_request_fini(&req);
}

// Random and mangled bodies against every route: the only answers are
// CM_OK or CM_EINVAL (never a crash; ASan builds check memory).
static void
test_build_random(void **state)
{
	static const char *seeds[] = {
		"{\"thread_id\":\"" TID
		"\",\"metadata\":{\"a\":[1,{\"b\":null}]},"
		"\"if_exists\":\"do_nothing\",\"ttl\":{\"ttl\":1}}",
		"{\"limit\":5,\"offset\":1,\"ids\":[\"" TID "\"],\"select\":["
		"\"thread_id\"],\"sort_by\":\"status\",\"values\":{}}",
		"{\"values\":[{\"a\":1}],\"as_node\":\"n\",\"checkpoint\":{"
		"\"configurable\":{\"checkpoint_id\":\"" CID "\"}}}",
		"{\"before\":{\"checkpoint_id\":\"" CID "\"},\"metadata\":{}}",
	};
	const char *paths[][2] = {
		{ "POST", "/threads" },
		{ "PATCH", "/threads/" TID },
		{ "POST", "/threads/search" },
		{ "POST", "/threads/count" },
		{ "POST", "/threads/prune" },
		{ "POST", "/threads/" TID "/state" },
		{ "PATCH", "/threads/" TID "/state" },
		{ "POST", "/threads/" TID "/state/checkpoint" },
		{ "POST", "/threads/" TID "/history" },
	};
	char buf[512];

	(void) state;
	srand(12345);
	for (int round = 0; round < 3000; round++) {
		const char *seed = seeds[round % 4];
		size_t      n    = strlen(seed);
		gw_request  req;
		char        d[GW_DETAIL_MAX];
		gw_match    m;
		cm_err      rv;

		memcpy(buf, seed, n + 1);
		if (round % 3 == 0) {
			n = (size_t) rand() % (n + 1); // truncate
		}
		for (int k = rand() % 4; k > 0; k--) {
			buf[(size_t) rand() % (n + 1)] = (char) (rand() % 256);
		}
		const char **p = paths[round % 9];
		assert_int_equal(gw_route_match(p[0], p[1], &m), GW_MATCH_OK);
		memset(&req, 0, sizeof(req));
		rv = gw_request_build(
		    &m, buf, n, 1 << 20, NULL, NULL, &req, d, sizeof(d));
		assert_true(rv == CM_OK || rv == CM_EINVAL);
		if (rv == CM_OK) {
			assert_non_null(req.owner_slot);
			assert_non_null(gw_request_message(&req));
			// What we send must be a valid message.
			assert_true(protobuf_c_message_check(
			    gw_request_message(&req)));
		} else {
			assert_true(d[0] != '\0');
		}
		gw_request_fini(&req);
	}
}

static void
test_meta(void **state)
{
	gw_response r = { 0 };

	(void) state;
	gw_meta_response(GW_R_OK, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"ok\":true}");
	gw_meta_response(GW_R_INFO, &r);
	assert_string_equal(r.body,
	    "{\"version\":\"" TG_VERSION "\",\"flags\":{\"assistants\":false,"
	    "\"crons\":false,\"langsmith\":false}}");
	gw_response_fini(&r);
}

// copy() runs gw_jw_json on text; returns the output (new) or NULL.
static char *
copy(const char *text, size_t len)
{
	gw_jw  w;
	size_t n;

	gw_jw_init(&w);
	if (gw_jw_json(&w, text, len) != CM_OK) {
		gw_jw_fini(&w);
		return (NULL);
	}
	return (gw_jw_take(&w, &n));
}

static void
test_jw_json(void **state)
{
	static const struct {
		const char *in;
		const char *out; // NULL: refused
	} rows[] = {
		{ " { \"a\" : [ 1 , 2.5e-3 , true , null ] } ",
		    "{\"a\":[1,2.5e-3,true,null]}" },
		{ "\"\\ud83d\\ude00 \\u00e9\"", "\"\\ud83d\\ude00 \\u00e9\"" },
		{ "12345678901234567890123", "12345678901234567890123" },
		{ "\"\\ud83d\"", NULL },        // lone high surrogate
		{ "\"\\ude00x\"", NULL },       // lone low surrogate
		{ "\"\\ud83d\\u0041\"", NULL }, // high then not a low
		{ "\"\xc3\x28\"", NULL },       // invalid UTF-8
		{ "\"\xed\xa0\x80\"", NULL },   // UTF-8 surrogate
		// NUL may be escaped in a value, not in a key (jansson, and so
		// the store, cannot hold such a key).
		{ "{\"a\":\"\\u0000\"}", "{\"a\":\"\\u0000\"}" },
		{ "{\"\\u0000n\":1}", NULL },
		{ "[1,]", NULL },
		{ "{\"a\"1}", NULL },
		{ "01", NULL },
		{ "1 2", NULL },
		{ "", NULL },
		{ "nul", NULL },
	};
	char  *out;
	char   deep[2 * 70 + 1];
	size_t k = 0;

	(void) state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		out = copy(rows[i].in, strlen(rows[i].in));
		if (rows[i].out == NULL) {
			if (out != NULL) {
				fail_msg("row %zu accepted: %s", i, out);
			}
		} else {
			assert_non_null(out);
			assert_string_equal(out, rows[i].out);
		}
		free(out);
	}
	// A raw NUL byte is not JSON (jansson would stop reading there).
	assert_null(copy("[1]\0", 4));
	// 64 levels are fine, 65 are not.
	for (int i = 0; i < 64; i++) {
		deep[k++] = '[';
	}
	for (int i = 0; i < 64; i++) {
		deep[k++] = ']';
	}
	out = copy(deep, k);
	assert_non_null(out);
	free(out);
	k = 0;
	for (int i = 0; i < 65; i++) {
		deep[k++] = '[';
	}
	for (int i = 0; i < 65; i++) {
		deep[k++] = ']';
	}
	assert_null(copy(deep, k));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_jw_json),
		cmocka_unit_test(test_thread_json),
		cmocka_unit_test(test_select),
		cmocka_unit_test(test_state_json),
		cmocka_unit_test(test_build_create),
		cmocka_unit_test(test_build_search),
		cmocka_unit_test(test_build_state),
		cmocka_unit_test(test_render),
		cmocka_unit_test(test_build_random),
		cmocka_unit_test(test_meta),
	};
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
