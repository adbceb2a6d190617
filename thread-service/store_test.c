// SPDX-License-Identifier: MIT
//
// Unit tests for store.c, its backends and json_filter.c: a real database
// (a sqlite file in a private temp directory, or with TG_TEST_DB=pg a
// fresh database of the test PostgreSQL cluster; ctest runs this file
// both ways), driven through the tsvc_store_* functions with the same
// proto request messages the rpc handlers pass. Covers owner
// stamping and isolation, the metadata merge rules, create conflicts,
// containment filters (nested, arrays, no match, hostile keys), sort
// orders, pagination totals, state updates and merges, history order,
// limit, before and start, patch, copy, prune, supersteps and the TTL
// sweep.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/json.h"
#include "common/util.h"
#include "tests/harness/proc.h"
#include "thread-service/tsvc.h"

#define ALICE "alice-0001"
#define BOB   "bob-0002"

static char *tmpdir;
static int   dbseq;

typedef struct fixture {
	char        path[1024];
	tsvc_db    *db;
	tsvc_store *st;
} fixture;

static int
setup(void **state)
{
	fixture *fx = calloc(1, sizeof(*fx));
	char     name[64];
	char     detail[CM_RPC_DETAIL_MAX];

	snprintf(name, sizeof(name), "store-%d.db", ++dbseq);
	assert_int_equal(
	    tg_test_db(tmpdir, name, fx->path, sizeof(fx->path)), 0);
	if (tsvc_db_open(fx->path, NULL, &fx->db, detail, sizeof(detail)) !=
	    CM_OK) {
		fail_msg("tsvc_db_open: %s", detail);
	}
	assert_int_equal(
	    tsvc_store_open(fx->db, &fx->st, detail, sizeof(detail)), CM_OK);
	*state = fx;
	return (0);
}

static void
rm_db(const char *path)
{
	char p[1100];

	unlink(path);
	snprintf(p, sizeof(p), "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", path);
	unlink(p);
}

static int
teardown(void **state)
{
	fixture *fx = *state;

	tsvc_store_close(fx->st);
	tsvc_db_close(fx->db);
	if (!tg_test_db_is_pg()) {
		rm_db(fx->path);
	}
	free(fx);
	return (0);
}

static void
msg_free(void *m)
{
	if (m != NULL) {
		protobuf_c_message_free_unpacked((ProtobufCMessage *) m, NULL);
	}
}

// ---------------------------------------------------------------------
// Request helpers
// ---------------------------------------------------------------------

static cm_err
create_full(tsvc_store *st, const char *owner, const char *id,
    const char *meta, int do_nothing, tsvc_thread **out)
{
	tsvc_create_req req =
	    THREADGATE__THREADS__V1__CREATE_THREAD_REQUEST__INIT;

	req.owner         = (char *) owner;
	req.thread_id     = (char *) (id != NULL ? id : "");
	req.metadata_json = (char *) (meta != NULL ? meta : "");
	req.if_exists     = do_nothing
	        ? THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_DO_NOTHING
	        : THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_RAISE;
	return (tsvc_store_create_thread(st, &req, out));
}

// create makes a thread and returns its id (new string).
static char *
create(tsvc_store *st, const char *owner, const char *meta)
{
	tsvc_thread *t = NULL;
	char        *id;

	assert_int_equal(create_full(st, owner, NULL, meta, 0, &t), CM_OK);
	id = strdup(t->thread_id);
	msg_free(t);
	return (id);
}

static cm_err
get(tsvc_store *st, const char *owner, const char *id, tsvc_thread **out)
{
	tsvc_thread_ref ref = THREADGATE__THREADS__V1__THREAD_REF__INIT;

	ref.owner     = (char *) owner;
	ref.thread_id = (char *) id;
	return (tsvc_store_get_thread(st, &ref, out));
}

static cm_err
update_meta(tsvc_store *st, const char *owner, const char *id,
    const char *meta, tsvc_thread **out)
{
	tsvc_update_req req =
	    THREADGATE__THREADS__V1__UPDATE_THREAD_REQUEST__INIT;

	req.owner         = (char *) owner;
	req.thread_id     = (char *) id;
	req.metadata_json = (char *) meta;
	return (tsvc_store_update_thread(st, &req, out));
}

static cm_err
update_state(tsvc_store *st, const char *owner, const char *id,
    const char *values, const char *as_node, const char *parent,
    tsvc_checkpoint **out)
{
	tsvc_update_state_req req =
	    THREADGATE__THREADS__V1__UPDATE_STATE_REQUEST__INIT;

	req.owner         = (char *) owner;
	req.thread_id     = (char *) id;
	req.values_json   = (char *) values;
	req.as_node       = (char *) (as_node != NULL ? as_node : "");
	req.checkpoint_id = (char *) (parent != NULL ? parent : "");
	return (tsvc_store_update_state(st, &req, out));
}

// search with a metadata/values filter; returns total, *out the page.
static cm_err
search(tsvc_store *st, const char *owner, const char *meta, const char *values,
    int limit, int offset, int sort_by, int asc, tsvc_search_reply **out)
{
	tsvc_search_req req =
	    THREADGATE__THREADS__V1__SEARCH_THREADS_REQUEST__INIT;

	req.owner         = (char *) owner;
	req.metadata_json = (char *) (meta != NULL ? meta : "");
	req.values_json   = (char *) (values != NULL ? values : "");
	req.limit         = limit;
	req.offset        = offset;
	req.sort_by       = (Threadgate__Threads__V1__SortBy) sort_by;
	req.ascending     = asc;
	return (tsvc_store_search_threads(st, &req, out));
}

// n_matches runs a metadata-filter search and returns the total (or -1
// on error).
static int64_t
n_matches(
    tsvc_store *st, const char *owner, const char *meta, const char *values)
{
	tsvc_search_reply *r = NULL;
	int64_t            n;

	if (search(st, owner, meta, values, 100, 0, 0, 0, &r) != CM_OK) {
		return (-1);
	}
	n = r->total;
	assert_int_equal((int64_t) r->n_threads, n);
	msg_free(r);
	return (n);
}

static int64_t
count(tsvc_store *st, const char *owner, const char *meta, const char *status)
{
	tsvc_count_req req =
	    THREADGATE__THREADS__V1__COUNT_THREADS_REQUEST__INIT;
	tsvc_count_reply *r = NULL;
	int64_t           n;

	req.owner         = (char *) owner;
	req.metadata_json = (char *) (meta != NULL ? meta : "");
	req.status        = (char *) (status != NULL ? status : "");
	if (tsvc_store_count_threads(st, &req, &r) != CM_OK) {
		return (-1);
	}
	n = r->count;
	msg_free(r);
	return (n);
}

static tsvc_history_reply *
history(tsvc_store *st, const char *owner, const char *id, int limit,
    const char *before, const char *start, const char *meta, cm_err *rv)
{
	tsvc_history_req req =
	    THREADGATE__THREADS__V1__GET_HISTORY_REQUEST__INIT;
	tsvc_history_reply *r = NULL;

	req.owner                = (char *) owner;
	req.thread_id            = (char *) id;
	req.limit                = limit;
	req.before_checkpoint_id = (char *) (before != NULL ? before : "");
	req.checkpoint_id        = (char *) (start != NULL ? start : "");
	req.metadata_json        = (char *) (meta != NULL ? meta : "");
	*rv                      = tsvc_store_get_history(st, &req, &r);
	return (r);
}

// json_at parses text and returns the value at key (a new reference to
// the whole doc is kept in *doc; decref it).
static json_t *
json_at(const char *text, const char *key, json_t **doc)
{
	json_error_t e;

	*doc = json_loads(text, 0, &e);
	assert_non_null(*doc);
	return (json_object_get(*doc, key));
}

static void
assert_json_eq(const char *text, const char *want)
{
	json_error_t e;
	json_t      *a = json_loads(text, 0, &e);
	json_t      *b = json_loads(want, 0, &e);

	assert_non_null(a);
	assert_non_null(b);
	if (!json_equal(a, b)) {
		fail_msg("JSON %s != %s", text, want);
	}
	json_decref(a);
	json_decref(b);
}

// ---------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------

static void
test_create_stamps_owner(void **state)
{
	fixture     *fx = *state;
	tsvc_thread *t  = NULL;
	tsvc_thread *g  = NULL;
	json_t      *doc;
	char         missing[CM_UUID_LEN + 1];
	char         d1[CM_RPC_DETAIL_MAX];

	assert_int_equal(create_full(fx->st, ALICE, NULL,
	                     "{\"a\":1,\"owner\":\"mallory\"}", 0, &t),
	    CM_OK);
	assert_int_equal(strlen(t->thread_id), CM_UUID_LEN);
	assert_int_equal(t->thread_id[14], '7'); // UUIDv7
	assert_string_equal(t->owner, ALICE);
	assert_string_equal(
	    json_string_value(json_at(t->metadata_json, "owner", &doc)),
	    ALICE);
	json_decref(doc);
	assert_json_eq(t->metadata_json, "{\"a\":1,\"owner\":\"" ALICE "\"}");
	assert_string_equal(t->status, "idle");
	assert_string_equal(t->config_json, "{}");
	assert_string_equal(t->interrupts_json, "{}");
	assert_string_equal(t->values_json, "");
	assert_true(t->created_at_us > 0);
	assert_int_equal(t->created_at_us, t->updated_at_us);

	// The owner reads it; another owner gets exactly the "missing" answer.
	assert_int_equal(get(fx->st, ALICE, t->thread_id, &g), CM_OK);
	assert_string_equal(g->thread_id, t->thread_id);
	msg_free(g);
	g = NULL;
	assert_int_equal(get(fx->st, BOB, t->thread_id, &g), CM_ENOENT);
	assert_null(g);
	snprintf(d1, sizeof(d1), "%s", tsvc_store_detail(fx->st));
	cm_uuid4(missing);
	assert_int_equal(get(fx->st, ALICE, missing, &g), CM_ENOENT);
	// Same text shape, differing only by the id the caller sent.
	assert_non_null(strstr(d1, t->thread_id));
	assert_non_null(strstr(tsvc_store_detail(fx->st), missing));
	assert_int_equal(strlen(d1), strlen(tsvc_store_detail(fx->st)));
	msg_free(t);

	// JS SDK default body: metadata {} behaves like none.
	assert_int_equal(create_full(fx->st, ALICE, NULL, "{}", 0, &t), CM_OK);
	assert_json_eq(t->metadata_json, "{\"owner\":\"" ALICE "\"}");
	msg_free(t);
}

static void
test_create_validation(void **state)
{
	fixture        *fx = *state;
	tsvc_thread    *t  = NULL;
	tsvc_create_req req =
	    THREADGATE__THREADS__V1__CREATE_THREAD_REQUEST__INIT;

	assert_int_equal(create_full(fx->st, "", NULL, NULL, 0, &t), CM_EPERM);
	assert_int_equal(
	    create_full(fx->st, ALICE, "not-a-uuid", NULL, 0, &t), CM_EINVAL);
	assert_non_null(strstr(tsvc_store_detail(fx->st), "UUID"));
	assert_int_equal(
	    create_full(fx->st, ALICE, NULL, "[1]", 0, &t), CM_EINVAL);
	assert_int_equal(
	    create_full(fx->st, ALICE, NULL, "{", 0, &t), CM_EINVAL);
	assert_int_equal(
	    create_full(fx->st, ALICE, NULL, "\"x\"", 0, &t), CM_EINVAL);
	assert_null(t);

	req.owner       = ALICE;
	req.thread_id   = "";
	req.ttl_minutes = -1;
	assert_int_equal(
	    tsvc_store_create_thread(fx->st, &req, &t), CM_EINVAL);
	req.ttl_minutes  = 5;
	req.ttl_strategy = "keep";
	assert_int_equal(
	    tsvc_store_create_thread(fx->st, &req, &t), CM_EINVAL);
	req.ttl_strategy = "";
	req.if_exists    = (Threadgate__Threads__V1__IfExists) 7;
	assert_int_equal(
	    tsvc_store_create_thread(fx->st, &req, &t), CM_EINVAL);
	req.if_exists       = 0;
	req.supersteps_json = "{\"updates\":[]}";
	assert_int_equal(
	    tsvc_store_create_thread(fx->st, &req, &t), CM_EINVAL);
	req.supersteps_json = "[{\"updates\":[{\"values\":5}]}]";
	assert_int_equal(
	    tsvc_store_create_thread(fx->st, &req, &t), CM_EINVAL);
	assert_null(t);
	// None of the refused creates left a row.
	assert_int_equal(count(fx->st, ALICE, NULL, NULL), 0);

	// ttl is stored, with strategy "delete" by default.
	req.supersteps_json = "";
	req.ttl_minutes     = 5;
	assert_int_equal(tsvc_store_create_thread(fx->st, &req, &t), CM_OK);
	assert_true(t->ttl_minutes == 5.0);
	assert_string_equal(t->ttl_strategy, "delete");
	msg_free(t);
	t = NULL;

	// Upper-case UUIDs are stored canonical.
	assert_int_equal(
	    create_full(fx->st, ALICE, "0190A3B4-C5D6-7E8F-9A0B-1C2D3E4F5A6B",
	        NULL, 0, &t),
	    CM_OK);
	assert_string_equal(
	    t->thread_id, "0190a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b");
	msg_free(t);
}

static void
test_create_conflicts(void **state)
{
	fixture     *fx = *state;
	tsvc_thread *t  = NULL;
	char         id[CM_UUID_LEN + 1];

	cm_uuid4(id);
	assert_int_equal(
	    create_full(fx->st, ALICE, id, "{\"v\":1}", 0, &t), CM_OK);
	msg_free(t);
	t = NULL;
	// raise: taken for the owner and for anyone else.
	assert_int_equal(
	    create_full(fx->st, ALICE, id, NULL, 0, &t), CM_EEXIST);
	assert_int_equal(create_full(fx->st, BOB, id, NULL, 0, &t), CM_EEXIST);
	// do_nothing: someone else's id is still a conflict...
	assert_int_equal(
	    create_full(fx->st, BOB, id, "{\"v\":2}", 1, &t), CM_EEXIST);
	assert_null(t);
	// ...the owner gets the existing thread back, unchanged.
	assert_int_equal(
	    create_full(fx->st, ALICE, id, "{\"v\":3}", 1, &t), CM_OK);
	assert_string_equal(t->thread_id, id);
	assert_json_eq(t->metadata_json, "{\"v\":1,\"owner\":\"" ALICE "\"}");
	msg_free(t);
	assert_int_equal(count(fx->st, BOB, NULL, NULL), 0);
	assert_int_equal(count(fx->st, ALICE, NULL, NULL), 1);
}

static void
test_update_merge(void **state)
{
	fixture     *fx = *state;
	tsvc_thread *t  = NULL;
	tsvc_thread *old;
	char        *id = create(fx->st, ALICE, "{\"a\":1,\"b\":{\"x\":1}}");
	tsvc_update_req req =
	    THREADGATE__THREADS__V1__UPDATE_THREAD_REQUEST__INIT;

	assert_int_equal(get(fx->st, ALICE, id, &old), CM_OK);
	// Shallow: "b" is replaced, not merged; owner cannot be changed.
	assert_int_equal(
	    update_meta(fx->st, ALICE, id,
	        "{\"b\":{\"y\":2},\"c\":3,\"owner\":\"" BOB "\"}", &t),
	    CM_OK);
	assert_json_eq(t->metadata_json,
	    "{\"a\":1,\"b\":{\"y\":2},\"c\":3,\"owner\":\"" ALICE "\"}");
	assert_true(t->updated_at_us > old->updated_at_us);
	assert_int_equal(t->created_at_us, old->created_at_us);
	msg_free(t);
	t = NULL;
	// Owner cannot be removed either (null is a value, then re-stamped).
	assert_int_equal(
	    update_meta(fx->st, ALICE, id, "{\"owner\":null}", &t), CM_OK);
	assert_json_eq(t->metadata_json,
	    "{\"a\":1,\"b\":{\"y\":2},\"c\":3,\"owner\":\"" ALICE "\"}");
	msg_free(t);
	t = NULL;
	// "" means {}: only updated_at changes.
	assert_int_equal(update_meta(fx->st, ALICE, id, "", &t), CM_OK);
	msg_free(t);
	t = NULL;
	// Foreign, missing, malformed.
	assert_int_equal(
	    update_meta(fx->st, BOB, id, "{\"z\":1}", &t), CM_ENOENT);
	assert_int_equal(update_meta(fx->st, ALICE, id, "[]", &t), CM_EINVAL);
	assert_int_equal(update_meta(fx->st, "", id, "{}", &t), CM_EPERM);
	assert_null(t);
	// Bob's attempt changed nothing.
	assert_int_equal(get(fx->st, ALICE, id, &t), CM_OK);
	assert_null(strstr(t->metadata_json, "\"z\""));
	msg_free(t);
	t = NULL;

	// TTL only when has_ttl.
	req.owner         = ALICE;
	req.thread_id     = id;
	req.metadata_json = "";
	req.has_ttl       = 1;
	req.ttl_minutes   = 30;
	assert_int_equal(tsvc_store_update_thread(fx->st, &req, &t), CM_OK);
	assert_true(t->ttl_minutes == 30.0);
	assert_string_equal(t->ttl_strategy, "delete");
	msg_free(t);
	t           = NULL;
	req.has_ttl = 0;
	assert_int_equal(tsvc_store_update_thread(fx->st, &req, &t), CM_OK);
	assert_true(t->ttl_minutes == 30.0);
	msg_free(t);
	msg_free(old);
	free(id);
}

static void
test_delete(void **state)
{
	fixture            *fx  = *state;
	char               *id  = create(fx->st, ALICE, NULL);
	tsvc_thread_ref     ref = THREADGATE__THREADS__V1__THREAD_REF__INIT;
	tsvc_thread        *t   = NULL;
	tsvc_checkpoint    *cp  = NULL;
	tsvc_history_reply *h;
	cm_err              rv;

	assert_int_equal(
	    update_state(fx->st, ALICE, id, "{\"x\":1}", "n", NULL, &cp),
	    CM_OK);
	msg_free(cp);
	ref.owner     = BOB;
	ref.thread_id = id;
	assert_int_equal(tsvc_store_delete_thread(fx->st, &ref), CM_ENOENT);
	assert_int_equal(get(fx->st, ALICE, id, &t), CM_OK);
	msg_free(t);
	ref.owner = ALICE;
	assert_int_equal(tsvc_store_delete_thread(fx->st, &ref), CM_OK);
	assert_int_equal(tsvc_store_delete_thread(fx->st, &ref), CM_ENOENT);
	h = history(fx->st, ALICE, id, 10, NULL, NULL, NULL, &rv);
	assert_int_equal(rv, CM_ENOENT);
	assert_null(h);
	free(id);
}

static void
test_containment_filters(void **state)
{
	fixture *fx = *state;
	char    *a  = create(fx->st, ALICE,
	        "{\"kind\":\"x\",\"nested\":{\"a\":1,\"b\":{\"c\":true}},"
	            "\"tags\":[\"p\",\"q\"],\"n\":null}");
	char    *b  = create(fx->st, ALICE, "{\"kind\":\"y\",\"nested\":5}");
	char    *h  = create(fx->st, ALICE,
	        "{\"a'b\":1,\"a.b\":1,\"$x\":1,\"\\\") OR 1=1 --\":1}");
	char    *o  = create(fx->st, BOB, "{\"kind\":\"x\"}");
	tsvc_checkpoint *cp = NULL;

	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"kind\":\"x\"}", NULL), 1);
	assert_int_equal(n_matches(fx->st, ALICE, "{}", NULL), 3);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"nested\":{\"a\":1}}", NULL), 1);
	assert_int_equal(n_matches(fx->st, ALICE,
	                     "{\"nested\":{\"b\":{\"c\":true}}}", NULL),
	    1);
	assert_int_equal(n_matches(fx->st, ALICE,
	                     "{\"nested\":{\"b\":{\"c\":false}}}", NULL),
	    0);
	// Nested object filter vs a scalar: no match (not an error).
	assert_int_equal(n_matches(fx->st, ALICE, "{\"nested\":{}}", NULL), 1);
	// Arrays contain arrays (PostgreSQL jsonb @>): every element of the
	// filter's array is in the document's, in any order.
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"tags\":[\"p\",\"q\"]}", NULL), 1);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"tags\":[\"p\"]}", NULL), 1);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"tags\":[\"q\",\"p\",\"q\"]}", NULL),
	    1);
	assert_int_equal(n_matches(fx->st, ALICE, "{\"tags\":[]}", NULL), 1);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"tags\":[\"r\"]}", NULL), 0);
	// Below the top level a scalar never matches an array, nor an
	// array a scalar.
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"tags\":\"p\"}", NULL), 0);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"kind\":[\"x\"]}", NULL), 0);
	assert_int_equal(n_matches(fx->st, ALICE, "{\"n\":null}", NULL), 1);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"kind\":\"z\"}", NULL), 0);
	assert_int_equal(n_matches(fx->st, ALICE, "{\"missing\":1}", NULL), 0);
	assert_int_equal(n_matches(fx->st, ALICE, "{\"kind\":1}", NULL), 0);
	// Hostile keys are literal keys: they match only the thread that
	// really has them, and never error.
	assert_int_equal(n_matches(fx->st, ALICE, "{\"a'b\":1}", NULL), 1);
	assert_int_equal(n_matches(fx->st, ALICE, "{\"a.b\":1}", NULL), 1);
	assert_int_equal(n_matches(fx->st, ALICE, "{\"$x\":1}", NULL), 1);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"\\\") OR 1=1 --\":1}", NULL), 1);
	assert_int_equal(n_matches(fx->st, ALICE, "{\"a'b\":2}", NULL), 0);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"' OR '1'='1\":1}", NULL), 0);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"$.kind\":\"x\"}", NULL), 0);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"nested.a\":1}", NULL), 0);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"kind') --\":\"x\"}", NULL), 0);
	// The owner filter cannot be overridden through metadata.owner.
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"owner\":\"" BOB "\"}", NULL), 0);
	assert_int_equal(n_matches(fx->st, BOB, "{}", NULL), 1);
	// Filters must be objects.
	assert_int_equal(n_matches(fx->st, ALICE, "[1]", NULL), -1);
	assert_int_equal(n_matches(fx->st, ALICE, "{bad", NULL), -1);

	// Values filter: threads without values never match a non-empty one.
	assert_int_equal(n_matches(fx->st, ALICE, NULL, "{\"m\":1}"), 0);
	assert_int_equal(
	    update_state(fx->st, ALICE, b, "{\"m\":1,\"deep\":{\"k\":[1,2]}}",
	        "n", NULL, &cp),
	    CM_OK);
	msg_free(cp);
	assert_int_equal(n_matches(fx->st, ALICE, NULL, "{\"m\":1}"), 1);
	assert_int_equal(
	    n_matches(fx->st, ALICE, NULL, "{\"deep\":{\"k\":[1,2]}}"), 1);
	assert_int_equal(
	    n_matches(fx->st, ALICE, NULL, "{\"deep\":{\"k\":[2]}}"), 1);
	assert_int_equal(
	    n_matches(fx->st, ALICE, NULL, "{\"deep\":{\"k\":[3]}}"), 0);
	// Numbers compare by value: 1.0 is 1.
	assert_int_equal(n_matches(fx->st, ALICE, NULL, "{\"m\":1.0}"), 1);
	assert_int_equal(n_matches(fx->st, ALICE, NULL, "{\"m\":1.5}"), 0);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"kind\":\"y\"}", "{\"m\":1}"), 1);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"kind\":\"x\"}", "{\"m\":1}"), 0);
	assert_int_equal(n_matches(fx->st, BOB, NULL, "{\"m\":1}"), 0);
	free(a);
	free(b);
	free(h);
	free(o);
}

// contains(doc, filter) parses both and asks tsvc_json_contains().
static int
contains(const char *doc, const char *filter)
{
	json_error_t e;
	json_t      *d = json_loads(doc, JSON_DECODE_ANY, &e);
	json_t      *f = json_loads(filter, JSON_DECODE_ANY, &e);
	int          r;

	assert_non_null(d);
	assert_non_null(f);
	r = tsvc_json_contains(d, f);
	json_decref(d);
	json_decref(f);
	return (r);
}

// The rules of PostgreSQL's jsonb @> (its documentation's examples and
// the corner cases around them).
static void
test_json_contains_unit(void **state)
{
	json_error_t e;
	json_t      *f;

	(void) state;
	assert_true(contains("{\"a\":{\"b\":[1,{\"c\":2}]},\"d\":1}",
	    "{\"a\":{\"b\":[1,{\"c\":2}]}}"));
	assert_true(contains("{\"d\":1}", "{\"d\":1.0}"));
	assert_true(contains("{\"d\":1.5}", "{\"d\":1.50}"));
	assert_false(contains("{\"d\":1}", "{\"d\":\"1\"}"));
	assert_true(contains("\"foo\"", "\"foo\""));
	assert_true(contains("[1, 2, 3]", "[1, 3]"));
	assert_true(contains("[1, 2, 3]", "[3, 1, 1]"));
	assert_false(contains("[1, 2, 3]", "[4]"));
	assert_true(contains("[1, 2, [1, 3]]", "[[1, 3]]"));
	assert_false(contains("[1, 2, [1, 3]]", "[1, 3]"));
	assert_true(contains("[1, 2, [1, 3]]", "[[3]]"));
	assert_false(contains("[[1, 2]]", "[1]"));
	assert_true(contains("{\"p\": \"a\", \"t\": true}", "{\"t\": true}"));
	assert_false(contains("{\"p\": \"a\"}", "{\"p\": \"a\", \"q\": 1}"));
	assert_true(contains("{\"x\": {\"y\": 1, \"z\": 2}}", "{\"x\": {}}"));
	assert_false(contains("{\"x\": 1}", "{\"x\": {}}"));
	assert_true(contains(
	    "{\"x\": [1, {\"k\": 2, \"j\": 3}]}", "{\"x\": [{\"k\": 2}]}"));
	// The top-level exception: an array contains one of its scalars;
	// nested, it does not.
	assert_true(contains("[\"foo\", \"bar\"]", "\"foo\""));
	assert_false(contains("[\"foo\", \"bar\"]", "\"baz\""));
	assert_false(contains("\"foo\"", "[\"foo\"]"));
	assert_false(contains("{\"a\": [\"foo\"]}", "{\"a\": \"foo\"}"));
	assert_false(contains("{\"a\": \"foo\"}", "{\"a\": [\"foo\"]}"));
	assert_true(contains("{\"n\": null}", "{\"n\": null}"));
	assert_false(contains("{\"n\": null}", "{\"n\": false}"));
	assert_false(contains("{}", "[]"));
	assert_false(contains("[]", "{}"));
	f = json_loads("{}", 0, &e);
	assert_false(tsvc_json_contains(NULL, f));
	json_decref(f);
}

// The metadata equality index (sqlite's thread_meta, PostgreSQL's GIN)
// and the plain ordered walk must give the same answers: a rare pair
// (few matches: the index plan), a common one (at least the sqlite
// backend's META_PLAN_MAX of 1000 matches: the ordered walk), both
// together, and the index kept in step with update, copy and delete.
#define BULK_N 1005

static void
test_metadata_index_plans(void **state)
{
	fixture           *fx = *state;
	tsvc_search_reply *r  = NULL;
	char              *rare[BULK_N / 200 + 1];
	size_t             nrare = 0;
	char               meta[128];
	char              *copy_src;

	for (int i = 0; i < BULK_N; i++) {
		char *id;

		snprintf(meta, sizeof(meta),
		    "{\"bulk\":\"b\",\"i\":%d,\"sel\":\"%s\",\"r\":1.5}", i,
		    i % 200 == 0 ? "rare" : "common");
		id = create(fx->st, ALICE, meta);
		if (i % 200 == 0) {
			rare[nrare++] = id;
		} else {
			free(id);
		}
	}
	// Another owner's identical pairs are never seen.
	for (int i = 0; i < 3; i++) {
		free(create(fx->st, BOB, "{\"bulk\":\"b\",\"sel\":\"rare\"}"));
	}
	assert_int_equal(nrare, 6);
	// Rare pair: every match, newest first.
	assert_int_equal(search(fx->st, ALICE, "{\"sel\":\"rare\"}", NULL, 100,
	                     0, 0, 0, &r),
	    CM_OK);
	assert_int_equal(r->n_threads, nrare);
	for (size_t i = 0; i < nrare; i++) {
		assert_string_equal(
		    r->threads[i]->thread_id, rare[nrare - 1 - i]);
	}
	msg_free(r);
	r = NULL;
	assert_int_equal(count(fx->st, ALICE, "{\"sel\":\"rare\"}", NULL), 6);
	// Common pair: a page, more to follow; the exact count.
	assert_int_equal(
	    search(fx->st, ALICE, "{\"bulk\":\"b\"}", NULL, 10, 0, 0, 0, &r),
	    CM_OK);
	assert_int_equal(r->n_threads, 10);
	assert_int_equal(r->total, 11);
	msg_free(r);
	r = NULL;
	assert_int_equal(
	    count(fx->st, ALICE, "{\"bulk\":\"b\"}", NULL), BULK_N);
	assert_int_equal(
	    count(fx->st, ALICE, "{\"bulk\":\"b\",\"sel\":\"common\"}", NULL),
	    BULK_N - 6);
	// Both: the rarer pair drives, the other still filters.
	assert_int_equal(n_matches(fx->st, ALICE,
	                     "{\"bulk\":\"b\",\"sel\":\"rare\"}", NULL),
	    6);
	assert_int_equal(n_matches(fx->st, ALICE,
	                     "{\"bulk\":\"x\",\"sel\":\"rare\"}", NULL),
	    0);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"i\":400,\"sel\":\"rare\"}", NULL), 1);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"i\":401,\"sel\":\"rare\"}", NULL), 0);
	// A real, a string that looks like a number, a nested filter:
	// answered exactly without the index.
	assert_int_equal(
	    count(fx->st, ALICE, "{\"r\":1.5,\"sel\":\"rare\"}", NULL), 6);
	assert_int_equal(n_matches(fx->st, ALICE, "{\"i\":\"400\"}", NULL), 0);
	assert_int_equal(n_matches(fx->st, ALICE, "{\"i\":400.0}", NULL), 1);
	// The index follows updates, copies and deletes.
	{
		tsvc_thread    *t = NULL;
		tsvc_thread_ref ref =
		    THREADGATE__THREADS__V1__THREAD_REF__INIT;

		assert_int_equal(update_meta(fx->st, ALICE, rare[0],
		                     "{\"sel\":\"gone\"}", &t),
		    CM_OK);
		msg_free(t);
		t = NULL;
		assert_int_equal(
		    n_matches(fx->st, ALICE, "{\"sel\":\"rare\"}", NULL), 5);
		assert_int_equal(
		    n_matches(fx->st, ALICE, "{\"sel\":\"gone\"}", NULL), 1);
		copy_src      = rare[1];
		ref.owner     = ALICE;
		ref.thread_id = copy_src;
		assert_int_equal(
		    tsvc_store_copy_thread(fx->st, &ref, &t), CM_OK);
		msg_free(t);
		assert_int_equal(
		    n_matches(fx->st, ALICE, "{\"sel\":\"rare\"}", NULL), 6);
		ref.thread_id = rare[2];
		assert_int_equal(
		    tsvc_store_delete_thread(fx->st, &ref), CM_OK);
		assert_int_equal(
		    n_matches(fx->st, ALICE, "{\"sel\":\"rare\"}", NULL), 5);
	}
	assert_int_equal(
	    n_matches(fx->st, BOB, "{\"sel\":\"rare\"}", NULL), 3);
	for (size_t i = 0; i < nrare; i++) {
		free(rare[i]);
	}
}

// A call whose deadline has passed is abandoned with CM_ETIMEDOUT, and
// the connection serves the next call.
static void
test_deadline(void **state)
{
	fixture           *fx = *state;
	tsvc_search_reply *r  = NULL;

	for (int i = 0; i < 300; i++) {
		free(create(fx->st, ALICE, "{\"x\":{\"y\":2}}"));
	}
	tsvc_store_set_deadline(fx->st, cm_now_ms() - 1);
	assert_int_equal(
	    search(fx->st, ALICE, "{\"x\":{\"y\":1}}", NULL, 10, 0, 0, 0, &r),
	    CM_ETIMEDOUT);
	assert_null(r);
	assert_int_equal(count(fx->st, ALICE, "{\"x\":{\"y\":1}}", NULL), -1);
	tsvc_store_set_deadline(fx->st, cm_now_ms() + 60000);
	assert_int_equal(count(fx->st, ALICE, "{\"x\":{\"y\":2}}", NULL), 300);
	tsvc_store_set_deadline(fx->st, 0);
	assert_int_equal(
	    n_matches(fx->st, ALICE, "{\"x\":{\"y\":1}}", NULL), 0);
}

// Quotas per owner: threads, checkpoints per thread, stored bytes. A
// write past one fails with CM_EPERM and leaves nothing behind; deletes
// and prunes always work and make room again; other owners are not
// affected.
static void
test_quotas(void **state)
{
	fixture         *fx  = *state;
	tsvc_db_options  opt = tsvc_db_options_default();
	tsvc_db         *db  = NULL;
	tsvc_store      *st  = NULL;
	tsvc_thread     *t   = NULL;
	tsvc_checkpoint *cp  = NULL;
	tsvc_thread_ref  ref = THREADGATE__THREADS__V1__THREAD_REF__INIT;
	tsvc_prune_req   pr =
	    THREADGATE__THREADS__V1__PRUNE_THREADS_REQUEST__INIT;
	tsvc_prune_reply *prr = NULL;
	char             *ids[3];
	char             *big;
	char              detail[CM_RPC_DETAIL_MAX];

	opt.max_threads     = 3;
	opt.max_checkpoints = 4;
	opt.max_bytes       = 4000;
	assert_int_equal(
	    tsvc_db_open(fx->path, &opt, &db, detail, sizeof(detail)), CM_OK);
	assert_int_equal(tsvc_store_open(db, &st, NULL, 0), CM_OK);
	for (int i = 0; i < 3; i++) {
		ids[i] = create(st, ALICE, NULL);
	}
	assert_int_equal(create_full(st, ALICE, NULL, NULL, 0, &t), CM_EPERM);
	assert_non_null(strstr(tsvc_store_detail(st), "quota exceeded"));
	assert_int_equal(count(st, ALICE, NULL, NULL), 3);
	// Copy makes a thread too.
	ref.owner     = ALICE;
	ref.thread_id = ids[0];
	assert_int_equal(tsvc_store_copy_thread(st, &ref, &t), CM_EPERM);
	assert_int_equal(count(st, ALICE, NULL, NULL), 3);
	// Another owner has its own quota.
	free(create(st, BOB, NULL));
	// A delete makes room.
	ref.thread_id = ids[2];
	assert_int_equal(tsvc_store_delete_thread(st, &ref), CM_OK);
	free(ids[2]);
	ids[2] = create(st, ALICE, NULL);

	// Checkpoints per thread: 4, then refused; keep_latest makes room.
	for (int i = 0; i < 4; i++) {
		assert_int_equal(update_state(st, ALICE, ids[0], "{\"n\":1}",
		                     "a", NULL, &cp),
		    CM_OK);
		msg_free(cp);
		cp = NULL;
	}
	assert_int_equal(
	    update_state(st, ALICE, ids[0], "{\"n\":2}", "a", NULL, &cp),
	    CM_EPERM);
	assert_non_null(strstr(tsvc_store_detail(st), "checkpoints"));
	pr.owner        = ALICE;
	pr.thread_ids   = &ids[0];
	pr.n_thread_ids = 1;
	pr.strategy     = "keep_latest";
	assert_int_equal(tsvc_store_prune_threads(st, &pr, &prr), CM_OK);
	msg_free(prr);
	assert_int_equal(
	    update_state(st, ALICE, ids[0], "{\"n\":3}", "a", NULL, &cp),
	    CM_OK);
	msg_free(cp);
	cp = NULL;

	// Stored bytes: a state that would take the owner past 4000 bytes
	// is refused and the thread keeps its state.
	big = calloc(1, 3000);
	memcpy(big, "{\"s\":\"", 6);
	memset(big + 6, 'x', 2980);
	memcpy(big + 2986, "\"}", 3);
	assert_int_equal(
	    update_state(st, ALICE, ids[1], big, "a", NULL, &cp), CM_EPERM);
	assert_non_null(strstr(tsvc_store_detail(st), "bytes"));
	{
		tsvc_get_state_req gs =
		    THREADGATE__THREADS__V1__GET_STATE_REQUEST__INIT;
		tsvc_state_reply *sr = NULL;

		gs.owner     = ALICE;
		gs.thread_id = ids[1];
		assert_int_equal(tsvc_store_get_state(st, &gs, &sr), CM_OK);
		assert_false(sr->has_checkpoint);
		msg_free(sr);
	}
	// Under the default quotas (the fixture's database) the same state
	// is fine: the quota is the limit, not the document.
	assert_int_equal(
	    update_state(fx->st, ALICE, ids[1], big, "a", NULL, &cp), CM_OK);
	msg_free(cp);
	free(big);
	for (int i = 0; i < 3; i++) {
		free(ids[i]);
	}
	tsvc_store_close(st);
	tsvc_db_close(db);
}

// A state whose values parse into more than TSVC_JSON_NODES_MAX JSON
// values is refused, however few bytes it has.
static void
test_node_cap(void **state)
{
	fixture         *fx = *state;
	tsvc_checkpoint *cp = NULL;
	char            *id = create(fx->st, ALICE, NULL);
	size_t           n  = TSVC_JSON_NODES_MAX + 10;
	char            *v  = malloc(2 * n + 16);
	size_t           o  = 0;

	o += (size_t) snprintf(v, 16, "{\"a\":[");
	for (size_t i = 0; i < n; i++) {
		v[o++] = '0';
		v[o++] = ',';
	}
	v[o - 1] = ']';
	v[o++]   = '}';
	v[o]     = '\0';
	assert_int_equal(
	    update_state(fx->st, ALICE, id, v, "a", NULL, &cp), CM_ETOOBIG);
	assert_non_null(strstr(tsvc_store_detail(fx->st), "JSON values"));
	free(v);
	free(id);
}

// sqlite gives the space of deleted threads back (auto_vacuum
// INCREMENTAL + maintain) and truncates the WAL.
static void
test_space_reclaimed(void **state)
{
	fixture         *fx  = *state;
	tsvc_checkpoint *cp  = NULL;
	tsvc_thread_ref  ref = THREADGATE__THREADS__V1__THREAD_REF__INIT;
	char            *id;
	char            *v;
	char             wal[1100];
	struct stat      sb;
	off_t            full;

	id = create(fx->st, ALICE, NULL);
	v  = malloc(600 * 1024);
	for (int i = 0; i < 6; i++) {
		memset(v, 'a' + i, 600 * 1024);
		memcpy(v, "{\"s\":\"", 6);
		memcpy(v + 600 * 1024 - 3, "\"}", 3);
		assert_int_equal(
		    update_state(fx->st, ALICE, id, v, "a", NULL, &cp), CM_OK);
		msg_free(cp);
		cp = NULL;
	}
	free(v);
	assert_int_equal(tsvc_store_maintain(fx->st), CM_OK);
	assert_int_equal(stat(fx->path, &sb), 0);
	full = sb.st_size;
	assert_true(full > 6 * 600 * 1024); // values and their checkpoints
	ref.owner     = ALICE;
	ref.thread_id = id;
	assert_int_equal(tsvc_store_delete_thread(fx->st, &ref), CM_OK);
	assert_int_equal(tsvc_store_maintain(fx->st), CM_OK);
	assert_int_equal(stat(fx->path, &sb), 0);
	assert_true(sb.st_size < full / 8);
	snprintf(wal, sizeof(wal), "%s-wal", fx->path);
	assert_int_equal(stat(wal, &sb), 0);
	assert_true(sb.st_size == 0);
	free(id);
}

// ids sorted the way the store should return them.
static void
check_order(tsvc_store *st, int sort_by, int asc, char **want, size_t n)
{
	tsvc_search_reply *r = NULL;

	assert_int_equal(
	    search(st, ALICE, NULL, NULL, 100, 0, sort_by, asc, &r), CM_OK);
	assert_int_equal(r->n_threads, n);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(r->threads[i]->thread_id, want[i]) != 0) {
			fail_msg("sort %d asc %d: position %zu is %s, want %s",
			    sort_by, asc, i, r->threads[i]->thread_id,
			    want[i]);
		}
	}
	msg_free(r);
}

static int
cmp_str(const void *a, const void *b)
{
	return (strcmp(*(char *const *) a, *(char *const *) b));
}

static void
test_sort_orders(void **state)
{
	fixture     *fx = *state;
	char        *ids[5];
	char        *rev[5];
	char        *upd[5];
	tsvc_thread *t = NULL;

	for (int i = 0; i < 5; i++) {
		ids[i] = create(fx->st, ALICE, NULL);
	}
	free(create(fx->st, BOB, NULL)); // never listed
	for (int i = 0; i < 5; i++) {
		rev[i] = ids[4 - i];
	}
	// created_at: creation order.
	check_order(fx->st, 0, 1, ids, 5);
	check_order(fx->st, 0, 0, rev, 5);
	// updated_at: touch in the order 3,1,4,0,2.
	{
		int order[5] = { 3, 1, 4, 0, 2 };

		for (int i = 0; i < 5; i++) {
			assert_int_equal(update_meta(fx->st, ALICE,
			                     ids[order[i]], "{\"t\":1}", &t),
			    CM_OK);
			msg_free(t);
			t      = NULL;
			upd[i] = ids[order[i]];
		}
		check_order(fx->st, 1, 1, upd, 5);
		for (int i = 0; i < 5; i++) {
			rev[i] = upd[4 - i];
		}
		check_order(fx->st, 1, 0, rev, 5);
	}
	// thread_id: string order; status: all idle, so thread_id breaks
	// the tie in the same direction.
	{
		char *sorted[5];

		memcpy(sorted, ids, sizeof(sorted));
		qsort(sorted, 5, sizeof(char *), cmp_str);
		check_order(fx->st, 2, 1, sorted, 5);
		check_order(fx->st, 3, 1, sorted, 5);
		for (int i = 0; i < 5; i++) {
			rev[i] = sorted[4 - i];
		}
		check_order(fx->st, 2, 0, rev, 5);
		check_order(fx->st, 3, 0, rev, 5);
	}
	for (int i = 0; i < 5; i++) {
		free(ids[i]);
	}
}

static void
test_pagination(void **state)
{
	fixture           *fx = *state;
	tsvc_search_reply *r  = NULL;
	char              *seen[25];
	size_t             nseen     = 0;
	int                sizes[3]  = { 10, 10, 5 };
	int                totals[3] = { 11, 21, 25 };

	for (int i = 0; i < 25; i++) {
		free(create(fx->st, ALICE, "{\"page\":true}"));
	}
	for (int i = 0; i < 7; i++) {
		free(create(fx->st, BOB, "{\"page\":true}"));
	}
	for (int p = 0; p < 3; p++) {
		assert_int_equal(search(fx->st, ALICE, "{\"page\":true}", NULL,
		                     10, p * 10, 0, 0, &r),
		    CM_OK);
		// offset + page, plus one when more follow.
		assert_int_equal(r->total, totals[p]);
		assert_int_equal(r->n_threads, sizes[p]);
		for (size_t i = 0; i < r->n_threads; i++) {
			for (size_t j = 0; j < nseen; j++) {
				assert_string_not_equal(
				    seen[j], r->threads[i]->thread_id);
			}
			seen[nseen++] = strdup(r->threads[i]->thread_id);
		}
		msg_free(r);
		r = NULL;
	}
	assert_int_equal(nseen, 25);
	// Past the end: an empty page, nothing follows.
	assert_int_equal(
	    search(fx->st, ALICE, NULL, NULL, 10, 100, 0, 0, &r), CM_OK);
	assert_int_equal(r->n_threads, 0);
	assert_int_equal(r->total, 100);
	msg_free(r);
	r = NULL;
	// A page that ends exactly at the last match: nothing follows.
	assert_int_equal(
	    search(fx->st, ALICE, NULL, NULL, 5, 20, 0, 0, &r), CM_OK);
	assert_int_equal(r->n_threads, 5);
	assert_int_equal(r->total, 25);
	msg_free(r);
	r = NULL;
	// Limits.
	assert_int_equal(
	    search(fx->st, ALICE, NULL, NULL, 0, 0, 0, 0, &r), CM_EINVAL);
	assert_int_equal(
	    search(fx->st, ALICE, NULL, NULL, 1001, 0, 0, 0, &r), CM_EINVAL);
	assert_int_equal(
	    search(fx->st, ALICE, NULL, NULL, 10, -1, 0, 0, &r), CM_EINVAL);
	assert_int_equal(
	    search(fx->st, ALICE, NULL, NULL, 10, 0, 9, 0, &r), CM_EINVAL);
	assert_int_equal(
	    search(fx->st, "", NULL, NULL, 10, 0, 0, 0, &r), CM_EPERM);
	assert_int_equal(
	    search(fx->st, ALICE, NULL, NULL, 1000, 0, 0, 0, &r), CM_OK);
	msg_free(r);
	r = NULL;
	// ids and status filters.
	{
		tsvc_search_req req =
		    THREADGATE__THREADS__V1__SEARCH_THREADS_REQUEST__INIT;
		char *ids[3];
		char  foreign[CM_UUID_LEN + 1];
		char *bob = create(fx->st, BOB, NULL);

		snprintf(foreign, sizeof(foreign), "%s", bob);
		ids[0]    = seen[3];
		ids[1]    = seen[7];
		ids[2]    = foreign;
		req.owner = ALICE;
		req.ids   = ids;
		req.n_ids = 3;
		req.limit = 10;
		assert_int_equal(
		    tsvc_store_search_threads(fx->st, &req, &r), CM_OK);
		assert_int_equal(r->total, 2);
		msg_free(r);
		r          = NULL;
		req.status = "idle";
		assert_int_equal(
		    tsvc_store_search_threads(fx->st, &req, &r), CM_OK);
		assert_int_equal(r->total, 2);
		msg_free(r);
		r          = NULL;
		req.status = "busy";
		assert_int_equal(
		    tsvc_store_search_threads(fx->st, &req, &r), CM_OK);
		assert_int_equal(r->total, 0);
		msg_free(r);
		r          = NULL;
		req.status = "bogus";
		assert_int_equal(
		    tsvc_store_search_threads(fx->st, &req, &r), CM_EINVAL);
		req.status = "";
		ids[2]     = "nope";
		assert_int_equal(
		    tsvc_store_search_threads(fx->st, &req, &r), CM_EINVAL);
		free(bob);
	}
	assert_int_equal(count(fx->st, ALICE, NULL, NULL), 25);
	assert_int_equal(count(fx->st, ALICE, "{\"page\":true}", "idle"), 25);
	assert_int_equal(count(fx->st, ALICE, NULL, "error"), 0);
	assert_int_equal(count(fx->st, ALICE, NULL, "nope"), -1);
	assert_int_equal(count(fx->st, BOB, NULL, NULL), 8);
	for (size_t i = 0; i < nseen; i++) {
		free(seen[i]);
	}
}

static void
test_state_updates(void **state)
{
	fixture           *fx = *state;
	char              *id = create(fx->st, ALICE, NULL);
	tsvc_get_state_req gs =
	    THREADGATE__THREADS__V1__GET_STATE_REQUEST__INIT;
	tsvc_state_reply *sr = NULL;
	tsvc_checkpoint  *c1 = NULL;
	tsvc_checkpoint  *c2 = NULL;
	tsvc_checkpoint  *c3 = NULL;
	tsvc_thread      *t  = NULL;
	json_t           *doc;
	char              missing[CM_UUID_LEN + 1];

	gs.owner     = ALICE;
	gs.thread_id = id;
	assert_int_equal(tsvc_store_get_state(fx->st, &gs, &sr), CM_OK);
	assert_false(sr->has_checkpoint);
	assert_null(sr->checkpoint);
	assert_true(sr->thread_created_at_us > 0);
	msg_free(sr);
	sr = NULL;

	assert_int_equal(update_state(fx->st, ALICE, id, "{\"x\":1,\"y\":1}",
	                     "agent", NULL, &c1),
	    CM_OK);
	assert_string_equal(c1->parent_checkpoint_id, "");
	assert_json_eq(c1->values_json, "{\"x\":1,\"y\":1}");
	assert_json_eq(c1->metadata_json,
	    "{\"source\":\"update\",\"step\":0,\"writes\":{\"agent\":"
	    "{\"x\":1,\"y\":1}},\"parents\":{},\"as_node\":\"agent\"}");
	assert_int_equal(c1->n_next, 0);
	// Shallow merge on the parent's values.
	assert_int_equal(update_state(fx->st, ALICE, id, "{\"y\":{\"z\":2}}",
	                     "", NULL, &c2),
	    CM_OK);
	assert_string_equal(c2->parent_checkpoint_id, c1->checkpoint_id);
	assert_json_eq(c2->values_json, "{\"x\":1,\"y\":{\"z\":2}}");
	assert_json_eq(c2->metadata_json,
	    "{\"source\":\"update\",\"step\":1,\"writes\":{},\"parents\":{}}");
	assert_true(c2->created_at_us > c1->created_at_us);
	// Array of objects, applied in order; null = unchanged.
	assert_int_equal(update_state(fx->st, ALICE, id,
	                     "[{\"x\":5},{\"x\":6,\"w\":0}]", "n", NULL, &c3),
	    CM_OK);
	assert_json_eq(c3->values_json, "{\"x\":6,\"y\":{\"z\":2},\"w\":0}");
	assert_int_equal(
	    json_integer_value(json_at(c3->metadata_json, "step", &doc)), 2);
	json_decref(doc);
	msg_free(c3);
	c3 = NULL;
	assert_int_equal(
	    update_state(fx->st, ALICE, id, "null", "n", NULL, &c3), CM_OK);
	assert_json_eq(c3->values_json, "{\"x\":6,\"y\":{\"z\":2},\"w\":0}");
	msg_free(c3);
	c3 = NULL;
	// The thread carries the latest values.
	assert_int_equal(get(fx->st, ALICE, id, &t), CM_OK);
	assert_json_eq(t->values_json, "{\"x\":6,\"y\":{\"z\":2},\"w\":0}");
	msg_free(t);
	t = NULL;
	// Branch from a named parent.
	assert_int_equal(update_state(fx->st, ALICE, id, "{\"b\":1}", "n",
	                     c1->checkpoint_id, &c3),
	    CM_OK);
	assert_string_equal(c3->parent_checkpoint_id, c1->checkpoint_id);
	assert_json_eq(c3->values_json, "{\"x\":1,\"y\":1,\"b\":1}");
	// Bad input.
	assert_int_equal(
	    update_state(fx->st, ALICE, id, "5", "n", NULL, &c3), CM_EINVAL);
	assert_int_equal(
	    update_state(fx->st, ALICE, id, "[1]", "n", NULL, &c3), CM_EINVAL);
	assert_int_equal(
	    update_state(fx->st, ALICE, id, "{", "n", NULL, &c3), CM_EINVAL);
	cm_uuid7(missing);
	assert_int_equal(
	    update_state(fx->st, ALICE, id, "{}", "n", missing, &c3),
	    CM_ENOENT);
	assert_int_equal(
	    update_state(fx->st, BOB, id, "{\"evil\":1}", "n", NULL, &c3),
	    CM_ENOENT);
	assert_int_equal(
	    update_state(fx->st, "", id, "{}", "n", NULL, &c3), CM_EPERM);

	// GetState: latest, named, missing, foreign.
	assert_int_equal(tsvc_store_get_state(fx->st, &gs, &sr), CM_OK);
	assert_true(sr->has_checkpoint);
	assert_string_equal(sr->checkpoint->checkpoint_id, c3->checkpoint_id);
	msg_free(sr);
	sr               = NULL;
	gs.checkpoint_id = c2->checkpoint_id;
	assert_int_equal(tsvc_store_get_state(fx->st, &gs, &sr), CM_OK);
	assert_string_equal(sr->checkpoint->checkpoint_id, c2->checkpoint_id);
	assert_json_eq(sr->checkpoint->values_json, c2->values_json);
	msg_free(sr);
	sr               = NULL;
	gs.checkpoint_id = missing;
	assert_int_equal(tsvc_store_get_state(fx->st, &gs, &sr), CM_ENOENT);
	gs.checkpoint_id = "x";
	assert_int_equal(tsvc_store_get_state(fx->st, &gs, &sr), CM_EINVAL);
	gs.checkpoint_id = "";
	gs.owner         = BOB;
	assert_int_equal(tsvc_store_get_state(fx->st, &gs, &sr), CM_ENOENT);
	assert_null(sr);

	// PatchState merges into the latest (or named) checkpoint.
	{
		tsvc_patch_state_req ps =
		    THREADGATE__THREADS__V1__PATCH_STATE_REQUEST__INIT;

		ps.owner         = ALICE;
		ps.thread_id     = id;
		ps.metadata_json = "{\"note\":\"hi\",\"step\":99}";
		assert_int_equal(tsvc_store_patch_state(fx->st, &ps), CM_OK);
		gs.owner = ALICE;
		assert_int_equal(
		    tsvc_store_get_state(fx->st, &gs, &sr), CM_OK);
		assert_json_eq(sr->checkpoint->metadata_json,
		    "{\"source\":\"update\",\"step\":99,\"writes\":{\"n\":"
		    "{\"b\":1}},\"parents\":{},\"as_node\":\"n\",\"note\":"
		    "\"hi\"}");
		msg_free(sr);
		sr               = NULL;
		ps.checkpoint_id = c1->checkpoint_id;
		ps.metadata_json = "{\"tag\":1}";
		assert_int_equal(tsvc_store_patch_state(fx->st, &ps), CM_OK);
		ps.owner = BOB;
		assert_int_equal(
		    tsvc_store_patch_state(fx->st, &ps), CM_ENOENT);
		ps.owner         = ALICE;
		ps.metadata_json = "[]";
		assert_int_equal(
		    tsvc_store_patch_state(fx->st, &ps), CM_EINVAL);
		ps.metadata_json = "{}";
		ps.checkpoint_id = missing;
		assert_int_equal(
		    tsvc_store_patch_state(fx->st, &ps), CM_ENOENT);
	}
	msg_free(c1);
	msg_free(c2);
	msg_free(c3);
	free(id);
}

static void
test_history(void **state)
{
	fixture            *fx = *state;
	char               *id = create(fx->st, ALICE, NULL);
	char               *ids[6];
	tsvc_history_reply *h;
	cm_err              rv;

	for (int i = 0; i < 6; i++) {
		tsvc_checkpoint *c = NULL;
		char             v[32];

		snprintf(v, sizeof(v), "{\"i\":%d}", i);
		assert_int_equal(update_state(fx->st, ALICE, id, v,
		                     (i % 2) ? "odd" : "even", NULL, &c),
		    CM_OK);
		ids[i] = strdup(c->checkpoint_id);
		msg_free(c);
	}
	// Newest first.
	h = history(fx->st, ALICE, id, 10, NULL, NULL, NULL, &rv);
	assert_int_equal(rv, CM_OK);
	assert_int_equal(h->n_checkpoints, 6);
	for (int i = 0; i < 6; i++) {
		assert_string_equal(
		    h->checkpoints[i]->checkpoint_id, ids[5 - i]);
	}
	msg_free(h);
	// limit.
	h = history(fx->st, ALICE, id, 2, NULL, NULL, NULL, &rv);
	assert_int_equal(h->n_checkpoints, 2);
	assert_string_equal(h->checkpoints[0]->checkpoint_id, ids[5]);
	assert_string_equal(h->checkpoints[1]->checkpoint_id, ids[4]);
	msg_free(h);
	// before: strictly older.
	h = history(fx->st, ALICE, id, 10, ids[3], NULL, NULL, &rv);
	assert_int_equal(h->n_checkpoints, 3);
	assert_string_equal(h->checkpoints[0]->checkpoint_id, ids[2]);
	assert_string_equal(h->checkpoints[2]->checkpoint_id, ids[0]);
	msg_free(h);
	// checkpoint: start there, inclusive.
	h = history(fx->st, ALICE, id, 2, NULL, ids[3], NULL, &rv);
	assert_int_equal(h->n_checkpoints, 2);
	assert_string_equal(h->checkpoints[0]->checkpoint_id, ids[3]);
	assert_string_equal(h->checkpoints[1]->checkpoint_id, ids[2]);
	msg_free(h);
	// metadata filter.
	h = history(
	    fx->st, ALICE, id, 10, NULL, NULL, "{\"as_node\":\"odd\"}", &rv);
	assert_int_equal(h->n_checkpoints, 3);
	assert_string_equal(h->checkpoints[0]->checkpoint_id, ids[5]);
	msg_free(h);
	h = history(fx->st, ALICE, id, 10, NULL, NULL, "{\"step\":4}", &rv);
	assert_int_equal(h->n_checkpoints, 1);
	assert_string_equal(h->checkpoints[0]->checkpoint_id, ids[4]);
	msg_free(h);
	h = history(fx->st, ALICE, id, 10, NULL, NULL,
	    "{\"writes\":{\"even\":{\"i\":2}}}", &rv);
	assert_int_equal(h->n_checkpoints, 1);
	msg_free(h);
	// Errors and isolation.
	assert_null(history(fx->st, BOB, id, 10, NULL, NULL, NULL, &rv));
	assert_int_equal(rv, CM_ENOENT);
	assert_null(history(fx->st, ALICE, id, 0, NULL, NULL, NULL, &rv));
	assert_int_equal(rv, CM_EINVAL);
	assert_null(history(fx->st, ALICE, id, 1001, NULL, NULL, NULL, &rv));
	assert_int_equal(rv, CM_EINVAL);
	assert_null(history(fx->st, ALICE, id, 10, "bad", NULL, NULL, &rv));
	assert_int_equal(rv, CM_EINVAL);
	assert_null(history(fx->st, ALICE, id, 10, NULL, NULL, "[]", &rv));
	assert_int_equal(rv, CM_EINVAL);
	for (int i = 0; i < 6; i++) {
		free(ids[i]);
	}
	free(id);
}

static void
test_copy(void **state)
{
	fixture            *fx  = *state;
	char               *id  = create(fx->st, ALICE, "{\"k\":\"v\"}");
	tsvc_thread_ref     ref = THREADGATE__THREADS__V1__THREAD_REF__INIT;
	tsvc_thread        *cp  = NULL;
	tsvc_checkpoint    *c   = NULL;
	tsvc_history_reply *h;
	char                missing[CM_UUID_LEN + 1];
	cm_err              rv;

	for (int i = 0; i < 3; i++) {
		assert_int_equal(update_state(fx->st, ALICE, id, "{\"a\":1}",
		                     "n", NULL, &c),
		    CM_OK);
		msg_free(c);
		c = NULL;
	}
	ref.owner     = ALICE;
	ref.thread_id = id;
	assert_int_equal(tsvc_store_copy_thread(fx->st, &ref, &cp), CM_OK);
	assert_string_not_equal(cp->thread_id, id);
	assert_string_equal(cp->owner, ALICE);
	assert_json_eq(
	    cp->metadata_json, "{\"k\":\"v\",\"owner\":\"" ALICE "\"}");
	assert_json_eq(cp->values_json, "{\"a\":1}");
	h = history(fx->st, ALICE, cp->thread_id, 10, NULL, NULL, NULL, &rv);
	assert_int_equal(h->n_checkpoints, 3);
	assert_string_equal(h->checkpoints[0]->thread_id, cp->thread_id);
	msg_free(h);
	// The copy is independent: deleting the source keeps it.
	{
		tsvc_thread_ref d = ref;

		assert_int_equal(tsvc_store_delete_thread(fx->st, &d), CM_OK);
		h = history(
		    fx->st, ALICE, cp->thread_id, 10, NULL, NULL, NULL, &rv);
		assert_int_equal(h->n_checkpoints, 3);
		msg_free(h);
	}
	msg_free(cp);
	cp = NULL;
	// Missing or foreign source: CONFLICT.
	assert_int_equal(
	    tsvc_store_copy_thread(fx->st, &ref, &cp), CM_ECONFLICT);
	free(id);
	id            = create(fx->st, ALICE, NULL);
	ref.thread_id = id;
	ref.owner     = BOB;
	assert_int_equal(
	    tsvc_store_copy_thread(fx->st, &ref, &cp), CM_ECONFLICT);
	cm_uuid4(missing);
	ref.thread_id = missing;
	assert_int_equal(
	    tsvc_store_copy_thread(fx->st, &ref, &cp), CM_ECONFLICT);
	assert_null(cp);
	assert_int_equal(count(fx->st, BOB, NULL, NULL), 0);
	free(id);
}

static void
test_prune(void **state)
{
	fixture       *fx = *state;
	char          *a1 = create(fx->st, ALICE, NULL);
	char          *a2 = create(fx->st, ALICE, NULL);
	char          *a3 = create(fx->st, ALICE, NULL);
	char          *b1 = create(fx->st, BOB, NULL);
	tsvc_prune_req req =
	    THREADGATE__THREADS__V1__PRUNE_THREADS_REQUEST__INIT;
	tsvc_prune_reply   *r = NULL;
	tsvc_history_reply *h;
	tsvc_thread        *t = NULL;
	char               *list[4];
	cm_err              rv;

	for (int i = 0; i < 3; i++) {
		tsvc_checkpoint *c = NULL;

		assert_int_equal(update_state(fx->st, ALICE, a3, "{\"a\":1}",
		                     "n", NULL, &c),
		    CM_OK);
		msg_free(c);
		assert_int_equal(
		    update_state(fx->st, BOB, b1, "{\"a\":1}", "n", NULL, &c),
		    CM_OK);
		msg_free(c);
	}
	// delete: own ids (one twice) + a foreign one.
	list[0]          = a1;
	list[1]          = b1;
	list[2]          = a2;
	list[3]          = a1;
	req.owner        = ALICE;
	req.thread_ids   = list;
	req.n_thread_ids = 4;
	assert_int_equal(tsvc_store_prune_threads(fx->st, &req, &r), CM_OK);
	assert_int_equal(r->pruned_count, 2);
	msg_free(r);
	r = NULL;
	assert_int_equal(get(fx->st, ALICE, a1, &t), CM_ENOENT);
	assert_int_equal(get(fx->st, BOB, b1, &t), CM_OK);
	msg_free(t);
	t = NULL;
	// keep_latest: only the owner's thread is trimmed.
	list[0]          = a3;
	list[1]          = b1;
	req.n_thread_ids = 2;
	req.strategy     = "keep_latest";
	assert_int_equal(tsvc_store_prune_threads(fx->st, &req, &r), CM_OK);
	assert_int_equal(r->pruned_count, 1);
	msg_free(r);
	r = NULL;
	h = history(fx->st, ALICE, a3, 10, NULL, NULL, NULL, &rv);
	assert_int_equal(h->n_checkpoints, 1);
	{
		json_t *doc;

		assert_int_equal(
		    json_integer_value(json_at(
		        h->checkpoints[0]->metadata_json, "step", &doc)),
		    2);
		json_decref(doc);
	}
	msg_free(h);
	h = history(fx->st, BOB, b1, 10, NULL, NULL, NULL, &rv);
	assert_int_equal(h->n_checkpoints, 3);
	msg_free(h);
	// Bad input.
	req.strategy = "everything";
	assert_int_equal(
	    tsvc_store_prune_threads(fx->st, &req, &r), CM_EINVAL);
	req.strategy = "";
	list[0]      = "nope";
	assert_int_equal(
	    tsvc_store_prune_threads(fx->st, &req, &r), CM_EINVAL);
	req.owner = "";
	assert_int_equal(tsvc_store_prune_threads(fx->st, &req, &r), CM_EPERM);
	free(a1);
	free(a2);
	free(a3);
	free(b1);
}

static void
test_supersteps(void **state)
{
	fixture        *fx = *state;
	tsvc_create_req req =
	    THREADGATE__THREADS__V1__CREATE_THREAD_REQUEST__INIT;
	tsvc_thread        *t = NULL;
	tsvc_history_reply *h;
	cm_err              rv;

	req.owner     = ALICE;
	req.thread_id = "";
	req.supersteps_json =
	    "[{\"updates\":[{\"values\":{\"a\":1},\"as_node\":\"in\"}]},"
	    " {\"updates\":[{\"values\":{\"b\":2},\"as_node\":\"x\"},"
	    "               {\"values\":{\"a\":3},\"as_node\":\"y\","
	    "                \"command\":null}]}]";
	assert_int_equal(tsvc_store_create_thread(fx->st, &req, &t), CM_OK);
	assert_json_eq(t->values_json, "{\"a\":3,\"b\":2}");
	h = history(fx->st, ALICE, t->thread_id, 10, NULL, NULL, NULL, &rv);
	assert_int_equal(rv, CM_OK);
	assert_int_equal(h->n_checkpoints, 2);
	assert_json_eq(h->checkpoints[0]->metadata_json,
	    "{\"source\":\"update\",\"step\":1,\"writes\":{\"x\":{\"b\":2},"
	    "\"y\":{\"a\":3}},\"parents\":{}}");
	assert_json_eq(h->checkpoints[1]->values_json, "{\"a\":1}");
	assert_string_equal(h->checkpoints[0]->parent_checkpoint_id,
	    h->checkpoints[1]->checkpoint_id);
	msg_free(h);
	msg_free(t);
}

static void
test_ttl_sweep(void **state)
{
	fixture        *fx = *state;
	tsvc_create_req req =
	    THREADGATE__THREADS__V1__CREATE_THREAD_REQUEST__INIT;
	tsvc_thread     *t    = NULL;
	tsvc_thread     *g    = NULL;
	char            *keep = create(fx->st, ALICE, NULL);
	tsvc_checkpoint *c    = NULL;
	int64_t          n    = -1;
	int64_t          now  = cm_now_us();

	req.owner       = BOB;
	req.thread_id   = "";
	req.ttl_minutes = 1;
	assert_int_equal(tsvc_store_create_thread(fx->st, &req, &t), CM_OK);
	assert_int_equal(update_state(fx->st, BOB, t->thread_id, "{\"a\":1}",
	                     "n", NULL, &c),
	    CM_OK);
	msg_free(c);
	assert_int_equal(
	    tsvc_store_sweep(fx->st, now + 30 * 1000000LL, &n), CM_OK);
	assert_int_equal(n, 0);
	assert_int_equal(
	    tsvc_store_sweep(fx->st, now + 120 * 1000000LL, &n), CM_OK);
	assert_int_equal(n, 1);
	assert_int_equal(get(fx->st, BOB, t->thread_id, &g), CM_ENOENT);
	// Threads without ttl stay.
	assert_int_equal(get(fx->st, ALICE, keep, &g), CM_OK);
	msg_free(g);
	msg_free(t);
	free(keep);
}

// Two connections on one file (as two workers): writes of one are seen
// by the other, and a write transaction on one does not break the other.
static void
test_two_connections(void **state)
{
	fixture     *fx  = *state;
	tsvc_store  *st2 = NULL;
	tsvc_thread *t   = NULL;
	char        *id;

	assert_int_equal(tsvc_store_open(fx->db, &st2, NULL, 0), CM_OK);
	id = create(fx->st, ALICE, NULL);
	assert_int_equal(get(st2, ALICE, id, &t), CM_OK);
	msg_free(t);
	t = NULL;
	assert_int_equal(update_meta(st2, ALICE, id, "{\"w\":2}", &t), CM_OK);
	msg_free(t);
	t = NULL;
	assert_int_equal(get(fx->st, ALICE, id, &t), CM_OK);
	{
		json_t *m = json_loads(t->metadata_json, 0, NULL);

		assert_int_equal(
		    json_integer_value(json_object_get(m, "w")), 2);
		json_decref(m);
	}
	msg_free(t);
	tsvc_store_close(st2);
	free(id);
}

static void
test_open_errors(void **state)
{
	tsvc_db *db = NULL;
	char     detail[CM_RPC_DETAIL_MAX];
	char     path[600];
	FILE    *f;

	(void) state;
	assert_int_equal(
	    tsvc_db_open("", NULL, &db, detail, sizeof(detail)), CM_EINVAL);
	assert_int_equal(
	    tsvc_db_open("sqlite://", NULL, &db, detail, sizeof(detail)),
	    CM_EINVAL);
	assert_int_equal(tsvc_db_open("/nonexistent-dir/x.db", NULL, &db,
	                     detail, sizeof(detail)),
	    CM_EUNAVAIL);
	assert_int_equal(tsvc_db_open("sqlite:///nonexistent-dir/x.db", NULL,
	                     &db, detail, sizeof(detail)),
	    CM_EUNAVAIL);
	assert_non_null(strstr(detail, "/nonexistent-dir/x.db"));
	// Not a database.
	snprintf(path, sizeof(path), "%s/garbage.db", tmpdir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("this is not an sqlite database, just some text......"
	      "..................................................",
	    f);
	fclose(f);
	assert_int_equal(tsvc_db_open(path, NULL, &db, detail, sizeof(detail)),
	    CM_EUNAVAIL);
	assert_null(db);
	unlink(path);
}

// The sqlite:// forms name the same file as the plain path.
static void
test_sqlite_targets(void **state)
{
	tsvc_db     *db = NULL;
	tsvc_store  *st = NULL;
	tsvc_thread *t  = NULL;
	char         path[600];
	char         url[700];
	char        *id;

	(void) state;
	snprintf(path, sizeof(path), "%s/targets.db", tmpdir);
	assert_int_equal(tsvc_db_open(path, NULL, &db, NULL, 0), CM_OK);
	assert_string_equal(tsvc_db_backend_name(db), "sqlite");
	assert_int_equal(tsvc_store_open(db, &st, NULL, 0), CM_OK);
	id = create(st, ALICE, NULL);
	tsvc_store_close(st);
	tsvc_db_close(db);
	snprintf(url, sizeof(url), "sqlite://%s", path); // sqlite:///abs
	assert_int_equal(tsvc_db_open(url, NULL, &db, NULL, 0), CM_OK);
	assert_int_equal(tsvc_store_open(db, &st, NULL, 0), CM_OK);
	assert_int_equal(get(st, ALICE, id, &t), CM_OK);
	msg_free(t);
	tsvc_store_close(st);
	tsvc_db_close(db);
	free(id);
	rm_db(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
		    test_create_stamps_owner, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_create_validation, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_create_conflicts, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_update_merge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_containment_filters, setup, teardown),
		cmocka_unit_test(test_json_contains_unit),
		cmocka_unit_test_setup_teardown(
		    test_metadata_index_plans, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quotas, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_node_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_sort_orders, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_pagination, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_state_updates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_history, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_supersteps, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_ttl_sweep, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_two_connections, setup, teardown),
	};
	// The sqlite backend's own behaviour: run in the sqlite variant of
	// this test only (the PostgreSQL variant says so and runs the rest).
	const struct CMUnitTest sqlite_tests[] = {
		cmocka_unit_test_setup_teardown(
		    test_space_reclaimed, setup, teardown),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_sqlite_targets),
	};
	int rc;

	tmpdir = tg_tmpdir("tsvc-store");
	rc     = cmocka_run_group_tests(tests, NULL, NULL);
	if (tg_test_db_is_pg()) {
		printf("sqlite-only tests not run here (TG_TEST_DB=pg); "
		       "the sqlite variant of this test runs them\n");
	} else {
		rc += cmocka_run_group_tests(sqlite_tests, NULL, NULL);
	}
	rmdir(tmpdir);
	free(tmpdir);
	return (rc);
}
