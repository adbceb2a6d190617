// SPDX-License-Identifier: MIT
//
// Unit tests for rpc.c: a REP server with test handlers on inproc://,
// driven by the sync, raw and async client calls. Covers dispatch by
// method name, handler errors, unknown methods, undecodable payloads,
// expired deadlines, per-worker state, an absent server, and lanes: a
// blocked lane does not hold up another, and a full lane queue is
// answered at once.
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/rpc.h"
#include "proto/auth.pb-c.h"

typedef Threadgate__Auth__V1__AuthService_Service svc_t;

#define URL       "inproc://rpc_test"
#define NWORKERS  4
#define NBLOCKING 2
// Lane 1: one thread, two queued calls at most.
#define LANE1_QUEUE 2

static int worker_tags[NWORKERS + NBLOCKING + 1];

// Calls on lane 1 ("block1") wait here until the test releases them.
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  gate_cv = PTHREAD_COND_INITIALIZER;
static int             gate_open;

static void *
w_init(void *arg, int index, cm_err *err)
{
	worker_tags[index] = 100 + index;
	return (&worker_tags[index]);
}

// Authenticate test handler: "ok" -> identity with the worker tag;
// "silent" -> never answers (a handler bug); anything else ->
// UNAUTHENTICATED.
static void
t_authenticate(svc_t *svc, const Threadgate__Auth__V1__AuthenticateRequest *in,
    Threadgate__Auth__V1__Identity_Closure closure, void *closure_data)
{
	cm_rpc_call                   *call = cm_rpc_call_of(closure_data);
	Threadgate__Auth__V1__Identity id =
	    THREADGATE__AUTH__V1__IDENTITY__INIT;
	char buf[64];

	if (in->n_authorization == 1 &&
	    strcmp(in->authorization[0], "silent") == 0) {
		return;
	}
	if (in->n_authorization == 1 &&
	    strcmp(in->authorization[0], "block1") == 0) {
		if (!call->blocking_ok) {
			if (cm_rpc_offload(call, 1) != CM_OK) {
				cm_rpc_fail(call, CM_EINTERNAL, "no lane 1");
				closure(NULL, closure_data);
			}
			return;
		}
		pthread_mutex_lock(&gate_mu);
		while (!gate_open) {
			pthread_cond_wait(&gate_cv, &gate_mu);
		}
		pthread_mutex_unlock(&gate_mu);
		id.identity         = "user-lane1";
		id.is_authenticated = 1;
		closure(&id, closure_data);
		return;
	}
	if (in->n_authorization != 1 ||
	    strcmp(in->authorization[0], "ok") != 0) {
		cm_rpc_fail(call, CM_EAUTH, "bad token");
		closure(NULL, closure_data);
		return;
	}
	snprintf(buf, sizeof(buf), "user-%d-%s", *(int *) call->worker,
	    call->request_id);
	id.identity         = buf;
	id.is_authenticated = 1;
	closure(&id, closure_data);
}

// Stats handler that needs to block: offloads itself, then answers from
// a blocking thread with that thread's worker tag in `valid`.
static void
t_stats(svc_t *svc, const Threadgate__Auth__V1__StatsRequest *in,
    Threadgate__Auth__V1__StatsReply_Closure closure, void *closure_data)
{
	cm_rpc_call                     *call = cm_rpc_call_of(closure_data);
	Threadgate__Auth__V1__StatsReply r =
	    THREADGATE__AUTH__V1__STATS_REPLY__INIT;

	if (!call->blocking_ok) {
		if (cm_rpc_offload(call, 0) == CM_OK) {
			return;
		}
		cm_rpc_fail(call, CM_EINTERNAL, "offload refused");
		closure(NULL, closure_data);
		return;
	}
	// A second offload from a blocking thread is refused.
	r.valid   = (uint64_t) * (int *) call->worker;
	r.refused = cm_rpc_offload(call, 0) == CM_EINVAL;
	closure(&r, closure_data);
}

static svc_t          service = THREADGATE__AUTH__V1__AUTH_SERVICE__INIT(t_);
static cm_rpc_server *server;
static cm_rpc_client *client;

static int
setup(void **state)
{
	cm_rpc_server_config cfg = {
		.url          = URL,
		.service      = &service.base,
		.nworkers     = NWORKERS,
		.nlanes       = 2,
		.lane_threads = { NBLOCKING, 1 },
		.lane_queue   = { 0, LANE1_QUEUE },
		.worker_init  = w_init,
	};

	if (cm_rpc_server_start(&cfg, &server) != CM_OK) {
		return (-1);
	}
	return (cm_rpc_client_open(URL, &client) == CM_OK ? 0 : -1);
}

static int
teardown(void **state)
{
	cm_rpc_client_close(client);
	cm_rpc_server_stop(server);
	return (0);
}

static cm_err
authenticate(const char *token, char *identity, size_t len, char *detail)
{
	Threadgate__Auth__V1__AuthenticateRequest req =
	    THREADGATE__AUTH__V1__AUTHENTICATE_REQUEST__INIT;
	ProtobufCMessage *reply   = NULL;
	char             *vals[1] = { (char *) token };
	cm_err            err;

	req.n_authorization = 1;
	req.authorization   = vals;
	err = cm_rpc_call_sync(client, "Authenticate", "rid42", 2000,
	    &req.base, &threadgate__auth__v1__identity__descriptor, &reply,
	    detail, 128);
	if (err == CM_OK) {
		snprintf(identity, len, "%s",
		    ((Threadgate__Auth__V1__Identity *) reply)->identity);
		protobuf_c_message_free_unpacked(reply, NULL);
	}
	return (err);
}

static void
test_ok_and_error(void **state)
{
	char id[64] = "";
	char detail[128];

	assert_int_equal(authenticate("ok", id, sizeof(id), detail), CM_OK);
	// Worker state reached the handler; the request id travelled.
	assert_non_null(strstr(id, "user-10"));
	assert_non_null(strstr(id, "rid42"));
	assert_int_equal(
	    authenticate("nope", id, sizeof(id), detail), CM_EAUTH);
	assert_string_equal(detail, "bad token");
}

static void
test_unknown_method_and_garbage(void **state)
{
	char                 detail[128];
	void                *out    = NULL;
	size_t               len    = 0;
	static const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0x0f };

	assert_int_equal(
	    cm_rpc_call_raw_sync(client, "NoSuchMethod", "r", 0, NULL, 0, 2000,
	        &out, &len, detail, sizeof(detail)),
	    CM_ENOTSUP);
	assert_non_null(strstr(detail, "NoSuchMethod"));
	assert_int_equal(
	    cm_rpc_call_raw_sync(client, "Authenticate", "r", 0, junk,
	        sizeof(junk), 2000, &out, &len, detail, sizeof(detail)),
	    CM_EINVAL);
	// A handler that never answers is reported, not hung.
	char id[64];
	assert_int_equal(
	    authenticate("silent", id, sizeof(id), detail), CM_EINTERNAL);
	assert_non_null(strstr(detail, "did not answer"));
	// Still serving.
	assert_int_equal(authenticate("ok", id, sizeof(id), detail), CM_OK);
}

static void
test_expired_deadline(void **state)
{
	char   detail[128];
	void  *out = NULL;
	size_t len = 0;

	assert_int_equal(
	    cm_rpc_call_raw_sync(client, "Authenticate", "r", cm_now_ms() - 10,
	        NULL, 0, 2000, &out, &len, detail, sizeof(detail)),
	    CM_ETIMEDOUT);
}

static void
test_no_server(void **state)
{
	cm_rpc_client                     *c;
	Threadgate__Auth__V1__StatsRequest req =
	    THREADGATE__AUTH__V1__STATS_REQUEST__INIT;
	ProtobufCMessage *reply = NULL;
	char              detail[128];
	int64_t           t0;
	cm_err            err;

	assert_int_equal(cm_rpc_client_open("inproc://nobody", &c), CM_OK);
	t0  = cm_mono_ms();
	err = cm_rpc_call_sync(c, "Stats", "r", 5000, &req.base,
	    &threadgate__auth__v1__stats_reply__descriptor, &reply, detail,
	    sizeof(detail));
	// Fails (never OK), and promptly: not the full 5 s.
	assert_int_equal(err, CM_EUNAVAIL);
	assert_true(cm_mono_ms() - t0 < 3000);
	cm_rpc_client_close(c);
}

static void
test_offload(void **state)
{
	Threadgate__Auth__V1__StatsRequest req =
	    THREADGATE__AUTH__V1__STATS_REQUEST__INIT;
	ProtobufCMessage *reply = NULL;
	char              detail[128];

	for (int i = 0; i < 10; i++) {
		Threadgate__Auth__V1__StatsReply *r;

		assert_int_equal(
		    cm_rpc_call_sync(client, "Stats", "r", 2000, &req.base,
		        &threadgate__auth__v1__stats_reply__descriptor, &reply,
		        detail, sizeof(detail)),
		    CM_OK);
		r = (Threadgate__Auth__V1__StatsReply *) reply;
		// Ran on a blocking thread: its worker state, not a context's.
		assert_true(r->valid >= 100 + NWORKERS &&
		    r->valid < 100 + NWORKERS + NBLOCKING);
		assert_int_equal(r->refused, 1);
		protobuf_c_message_free_unpacked(reply, NULL);
	}
}

#define NASYNC 200

typedef struct {
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	int             done;
	int             ok;
} async_state;

static void
async_done(void *arg, cm_err st, const char *detail, ProtobufCMessage *reply)
{
	async_state *as = arg;

	pthread_mutex_lock(&as->mu);
	as->done++;
	if (st == CM_OK && reply != NULL &&
	    strncmp(((Threadgate__Auth__V1__Identity *) reply)->identity,
	        "user-", 5) == 0) {
		as->ok++;
	}
	pthread_cond_signal(&as->cv);
	pthread_mutex_unlock(&as->mu);
	protobuf_c_message_free_unpacked(reply, NULL);
}

static void
test_async_many(void **state)
{
	async_state as = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
		0, 0 };
	Threadgate__Auth__V1__AuthenticateRequest req =
	    THREADGATE__AUTH__V1__AUTHENTICATE_REQUEST__INIT;
	char *vals[1] = { "ok" };

	req.n_authorization = 1;
	req.authorization   = vals;
	for (int i = 0; i < NASYNC; i++) {
		assert_int_equal(
		    cm_rpc_call_async(client, "Authenticate", "a", 5000,
		        &req.base, &threadgate__auth__v1__identity__descriptor,
		        async_done, &as),
		    CM_OK);
	}
	pthread_mutex_lock(&as.mu);
	while (as.done < NASYNC) {
		pthread_cond_wait(&as.cv, &as.mu);
	}
	pthread_mutex_unlock(&as.mu);
	assert_int_equal(as.ok, NASYNC);
}

// wait_lane waits (bounded) until lane has busy threads and queued calls.
static void
wait_lane(int lane, int busy, int queued)
{
	int64_t end = cm_mono_ms() + 10000;
	int     b   = -1;
	int     q   = -1;

	while (cm_mono_ms() < end) {
		cm_rpc_server_lane_stats(server, lane, &b, &q);
		if (b == busy && q == queued) {
			return;
		}
		sched_yield();
	}
	fail_msg("lane %d: busy %d queued %d, want %d and %d", lane, b, q,
	    busy, queued);
}

static void
test_lanes(void **state)
{
	async_state as = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
		0, 0 };
	Threadgate__Auth__V1__AuthenticateRequest req =
	    THREADGATE__AUTH__V1__AUTHENTICATE_REQUEST__INIT;
	Threadgate__Auth__V1__StatsRequest sreq =
	    THREADGATE__AUTH__V1__STATS_REQUEST__INIT;
	ProtobufCMessage *reply   = NULL;
	char             *vals[1] = { "block1" };
	char              id[64];
	char              detail[128];

	(void) state;
	req.n_authorization = 1;
	req.authorization   = vals;
	// One call occupies lane 1's only thread...
	assert_int_equal(
	    cm_rpc_call_async(client, "Authenticate", "b", 10000, &req.base,
	        &threadgate__auth__v1__identity__descriptor, async_done, &as),
	    CM_OK);
	wait_lane(1, 1, 0);
	// ...and lane 0 still answers.
	assert_int_equal(
	    cm_rpc_call_sync(client, "Stats", "r", 2000, &sreq.base,
	        &threadgate__auth__v1__stats_reply__descriptor, &reply, detail,
	        sizeof(detail)),
	    CM_OK);
	protobuf_c_message_free_unpacked(reply, NULL);
	// Two more wait in lane 1's queue; the next one finds it full and is
	// answered at once, not after its deadline.
	for (int i = 0; i < LANE1_QUEUE; i++) {
		assert_int_equal(
		    cm_rpc_call_async(client, "Authenticate", "b", 10000,
		        &req.base, &threadgate__auth__v1__identity__descriptor,
		        async_done, &as),
		    CM_OK);
	}
	wait_lane(1, 1, LANE1_QUEUE);
	assert_int_equal(
	    authenticate("block1", id, sizeof(id), detail), CM_EUNAVAIL);
	assert_non_null(strstr(detail, "overloaded"));
	// Released, every accepted call completes.
	pthread_mutex_lock(&gate_mu);
	gate_open = 1;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
	pthread_mutex_lock(&as.mu);
	while (as.done < 1 + LANE1_QUEUE) {
		pthread_cond_wait(&as.cv, &as.mu);
	}
	pthread_mutex_unlock(&as.mu);
	assert_int_equal(as.ok, 1 + LANE1_QUEUE);
	wait_lane(1, 0, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ok_and_error),
		cmocka_unit_test(test_unknown_method_and_garbage),
		cmocka_unit_test(test_expired_deadline),
		cmocka_unit_test(test_no_server),
		cmocka_unit_test(test_offload),
		cmocka_unit_test(test_async_many),
		cmocka_unit_test(test_lanes),
	};
	return (cmocka_run_group_tests(tests, setup, teardown));
}
