// SPDX-License-Identifier: MIT
//
// Unit tests for rpc.c: a REP server with test handlers on inproc://,
// driven by the sync, raw and async client calls. Covers dispatch by
// method name, handler errors, unknown methods, undecodable payloads,
// expired deadlines, per-worker state, an absent server, and lanes: a
// blocked lane does not hold up another, and a full lane queue is
// answered at once. Batches: a Batch message sent as it comes off the
// wire (each call answered in order, as if alone; nested and oversized
// batches refused), and the client's batching (calls wait while the
// window is full, leave together, end when the client closes or their
// deadline passes while they wait).
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
#include "proto/rpc.pb-c.h"

typedef Threadgate__Auth__V1__AuthService_Service svc_t;

#define URL       "inproc://rpc_test"
#define NWORKERS  4
#define NBLOCKING 2
// Lane 1: one thread, two queued calls at most.
#define LANE1_QUEUE 2

// The identity answered to token "big": over half of CM_RPC_MAX_MSG.
#define BIG_LEN (CM_RPC_MAX_MSG / 2 + 4096)

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
	if (in->n_authorization == 1 &&
	    strcmp(in->authorization[0], "big") == 0) {
		// More than half the largest message: two of them cannot
		// share one.
		char *big = malloc(BIG_LEN + 1);

		assert_non_null(big);
		memset(big, 'x', BIG_LEN);
		big[BIG_LEN] = '\0';
		memcpy(big, "big-", 4);
		id.identity         = big;
		id.is_authenticated = 1;
		closure(&id, closure_data);
		free(big);
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

// ---------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------

// A packed Request envelope of method(msg) (msg NULL: empty payload).
static ProtobufCBinaryData
envelope(const char *method, const char *rid, int64_t deadline,
    const ProtobufCMessage *msg)
{
	Threadgate__Rpc__V1__Request req = THREADGATE__RPC__V1__REQUEST__INIT;
	ProtobufCBinaryData          out;
	uint8_t                      pbuf[256];

	req.method           = (char *) method;
	req.request_id       = (char *) rid;
	req.deadline_unix_ms = deadline;
	if (msg != NULL) {
		assert_true(
		    protobuf_c_message_get_packed_size(msg) <= sizeof(pbuf));
		req.payload.len  = protobuf_c_message_pack(msg, pbuf);
		req.payload.data = pbuf;
	}
	out.len  = threadgate__rpc__v1__request__get_packed_size(&req);
	out.data = malloc(out.len);
	assert_non_null(out.data);
	threadgate__rpc__v1__request__pack(&req, out.data);
	return (out);
}

// Sends calls[0..n) as one Batch; returns the envelope's status, and on
// CM_OK the unpacked BatchReply in *out.
static cm_err
send_batch(ProtobufCBinaryData *calls, size_t n,
    Threadgate__Rpc__V1__BatchReply **out, char *detail)
{
	Threadgate__Rpc__V1__BatchRequest br =
	    THREADGATE__RPC__V1__BATCH_REQUEST__INIT;
	uint8_t *buf;
	void    *payload = NULL;
	size_t   plen    = 0;
	size_t   len;
	cm_err   err;

	br.n_calls = n;
	br.calls   = calls;
	len        = threadgate__rpc__v1__batch_request__get_packed_size(&br);
	buf        = malloc(len);
	assert_non_null(buf);
	threadgate__rpc__v1__batch_request__pack(&br, buf);
	err = cm_rpc_call_raw_sync(client, CM_RPC_BATCH_METHOD, "", 0, buf,
	    len, 5000, &payload, &plen, detail, 128);
	free(buf);
	if (err == CM_OK) {
		*out = threadgate__rpc__v1__batch_reply__unpack(
		    NULL, plen, payload);
		assert_non_null(*out);
		free(payload);
	}
	return (err);
}

// Item i of a BatchReply, unpacked (free it).
static Threadgate__Rpc__V1__Response *
item(const Threadgate__Rpc__V1__BatchReply *br, size_t i)
{
	Threadgate__Rpc__V1__Response *r;

	assert_true(i < br->n_replies);
	r = threadgate__rpc__v1__response__unpack(
	    NULL, br->replies[i].len, br->replies[i].data);
	assert_non_null(r);
	return (r);
}

static void
test_batch_message(void **state)
{
	Threadgate__Auth__V1__AuthenticateRequest ok =
	    THREADGATE__AUTH__V1__AUTHENTICATE_REQUEST__INIT;
	Threadgate__Auth__V1__AuthenticateRequest nope =
	    THREADGATE__AUTH__V1__AUTHENTICATE_REQUEST__INIT;
	Threadgate__Auth__V1__AuthenticateRequest big =
	    THREADGATE__AUTH__V1__AUTHENTICATE_REQUEST__INIT;
	Threadgate__Auth__V1__StatsRequest sreq =
	    THREADGATE__AUTH__V1__STATS_REQUEST__INIT;
	static const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0x0f };
	// Every call's expected status, in order.
	static const cm_err want[] = { CM_OK, CM_EAUTH, CM_ENOTSUP,
		CM_ETIMEDOUT, CM_OK, CM_EINVAL, CM_EINVAL };
	enum { NCALLS = sizeof(want) / sizeof(want[0]) };
	ProtobufCBinaryData              calls[CM_RPC_BATCH_MAX + 1];
	Threadgate__Rpc__V1__BatchReply *br = NULL;
	Threadgate__Rpc__V1__Response   *r;
	char                            *okv[1]   = { "ok" };
	char                            *nopev[1] = { "nope" };
	char                            *bigv[1]  = { "big" };
	char                             detail[128];
	int64_t                          later = cm_now_ms() + 5000;

	(void) state;
	ok.n_authorization   = 1;
	ok.authorization     = okv;
	nope.n_authorization = 1;
	nope.authorization   = nopev;
	big.n_authorization  = 1;
	big.authorization    = bigv;
	calls[0]             = envelope("Authenticate", "b0", later, &ok.base);
	calls[1] = envelope("Authenticate", "b1", later, &nope.base);
	calls[2] = envelope("NoSuchMethod", "b2", later, NULL);
	// Its own deadline counts, not the batch's.
	calls[3] = envelope("Authenticate", "b3", cm_now_ms() - 10, &ok.base);
	// Offloaded to a lane: the batch waits for it.
	calls[4]      = envelope("Stats", "b4", later, &sreq.base);
	calls[5].data = (uint8_t *) junk;
	calls[5].len  = sizeof(junk);
	calls[6]      = envelope(CM_RPC_BATCH_METHOD, "b6", later, NULL);
	assert_int_equal(send_batch(calls, NCALLS, &br, detail), CM_OK);
	assert_int_equal(br->n_replies, NCALLS);
	assert_int_equal(br->n_unsent, 0);
	for (size_t i = 0; i < NCALLS; i++) {
		r = item(br, i);
		assert_int_equal((cm_err) r->status, want[i]);
		if (i == 0) {
			Threadgate__Auth__V1__Identity *id =
			    threadgate__auth__v1__identity__unpack(
			        NULL, r->payload.len, r->payload.data);

			assert_non_null(id);
			// The call's own request id reached the handler.
			assert_non_null(strstr(id->identity, "b0"));
			threadgate__auth__v1__identity__free_unpacked(
			    id, NULL);
		} else if (i == 1) {
			assert_string_equal(r->detail, "bad token");
		} else if (i == 4) {
			Threadgate__Auth__V1__StatsReply *st =
			    threadgate__auth__v1__stats_reply__unpack(
			        NULL, r->payload.len, r->payload.data);

			assert_non_null(st);
			assert_true(st->valid >= 100 + NWORKERS &&
			    st->valid < 100 + NWORKERS + NBLOCKING);
			threadgate__auth__v1__stats_reply__free_unpacked(
			    st, NULL);
		} else if (i == 6) {
			assert_non_null(strstr(r->detail, "inside a batch"));
		}
		threadgate__rpc__v1__response__free_unpacked(r, NULL);
	}
	threadgate__rpc__v1__batch_reply__free_unpacked(br, NULL);

	// Too many calls, or none: the batch as a whole is refused.
	for (int i = NCALLS; i <= CM_RPC_BATCH_MAX; i++) {
		calls[i] = envelope("Authenticate", "x", later, &ok.base);
	}
	assert_int_equal(
	    send_batch(calls, CM_RPC_BATCH_MAX + 1, &br, detail), CM_EINVAL);
	assert_non_null(strstr(detail, "1 to"));
	assert_int_equal(send_batch(calls, 0, &br, detail), CM_EINVAL);
	// Exactly the most it may hold is served.
	assert_int_equal(
	    send_batch(calls + 1, CM_RPC_BATCH_MAX, &br, detail), CM_OK);
	assert_int_equal(br->n_replies, CM_RPC_BATCH_MAX);
	threadgate__rpc__v1__batch_reply__free_unpacked(br, NULL);
	for (int i = 0; i <= CM_RPC_BATCH_MAX; i++) {
		if (i != 5) {
			free(calls[i].data);
		}
	}
	// Two replies too large to travel together: the larger (here the
	// second, being equal, the first found) is left out and listed.
	calls[0] = envelope("Authenticate", "g0", later, &big.base);
	calls[1] = envelope("Authenticate", "g1", later, &ok.base);
	calls[2] = envelope("Authenticate", "g2", later, &big.base);
	assert_int_equal(send_batch(calls, 3, &br, detail), CM_OK);
	assert_int_equal(br->n_replies, 3);
	assert_int_equal(br->n_unsent, 1);
	assert_true(br->unsent[0] == 0 || br->unsent[0] == 2);
	assert_int_equal(br->replies[br->unsent[0]].len, 0);
	for (size_t i = 0; i < 3; i++) {
		if (i == br->unsent[0]) {
			continue;
		}
		r = item(br, i);
		assert_int_equal(r->status, CM_OK);
		assert_true(r->payload.len > (i == 1 ? 0 : BIG_LEN));
		threadgate__rpc__v1__response__free_unpacked(r, NULL);
	}
	threadgate__rpc__v1__batch_reply__free_unpacked(br, NULL);
	for (int i = 0; i < 3; i++) {
		free(calls[i].data);
	}
	// Still serving plain calls.
	assert_int_equal(
	    authenticate("ok", detail, sizeof(detail), detail), CM_OK);
}

static void
gate_set(int open)
{
	pthread_mutex_lock(&gate_mu);
	gate_open = open;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
}

// Statuses of the calls of one batching test, by index.
#define NQUEUED 20

typedef struct {
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	int             done;
	cm_err          st[NQUEUED + 1];
	char            who[NQUEUED + 1][64];
	size_t          len[NQUEUED + 1]; // of the identity
	char            detail[NQUEUED + 1][96];
} calls_state;

typedef struct {
	calls_state *cs;
	int          i;
} call_arg;

static void
call_done(void *arg, cm_err st, const char *detail, ProtobufCMessage *reply)
{
	call_arg    *a  = arg;
	calls_state *cs = a->cs;

	pthread_mutex_lock(&cs->mu);
	cs->st[a->i] = st;
	snprintf(cs->detail[a->i], sizeof(cs->detail[a->i]), "%s", detail);
	if (reply != NULL) {
		const char *id =
		    ((Threadgate__Auth__V1__Identity *) reply)->identity;

		snprintf(cs->who[a->i], sizeof(cs->who[a->i]), "%s", id);
		cs->len[a->i] = strlen(id);
	}
	cs->done++;
	pthread_cond_signal(&cs->cv);
	pthread_mutex_unlock(&cs->mu);
	protobuf_c_message_free_unpacked(reply, NULL);
}

// Each test's calls: static, as a failed test leaves them in flight.
static calls_state qs;
static call_arg    qargs[NQUEUED + 1];

static void
calls_reset(void)
{
	memset(&qs, 0, sizeof(qs));
	pthread_mutex_init(&qs.mu, NULL);
	pthread_cond_init(&qs.cv, NULL);
}

static void
calls_wait(calls_state *cs, int n)
{
	pthread_mutex_lock(&cs->mu);
	while (cs->done < n) {
		pthread_cond_wait(&cs->cv, &cs->mu);
	}
	pthread_mutex_unlock(&cs->mu);
}

// Starts call i of cs: Authenticate(token), a short read that may batch.
static void
start_short(cm_rpc_client *c, calls_state *cs, call_arg *args, int i,
    const char *token, int timeout_ms)
{
	Threadgate__Auth__V1__AuthenticateRequest req =
	    THREADGATE__AUTH__V1__AUTHENTICATE_REQUEST__INIT;
	char            *vals[1] = { (char *) token };
	char             rid[16];
	cm_rpc_call_opts o = { .request_id = rid,
		.timeout_ms                = timeout_ms,
		.idempotent                = 1,
		.batch                     = 1 };

	snprintf(rid, sizeof(rid), "q%d", i);
	req.n_authorization = 1;
	req.authorization   = vals;
	args[i].cs          = cs;
	args[i].i           = i;
	assert_int_equal(cm_rpc_call_start(c, "Authenticate", &o, &req.base,
	                     &threadgate__auth__v1__identity__descriptor,
	                     call_done, &args[i]),
	    CM_OK);
}

static cm_rpc_replica_stat
stat_of(cm_rpc_client *c)
{
	cm_rpc_replica_stat st;

	assert_int_equal(cm_rpc_client_stats(c, &st, 1), 1);
	return (st);
}

// A client batching with a window of 1, connected. A stall takes longer
// than any of these tests: its replica stays healthy, as batching needs
// (with none healthy, calls go out one by one).
static cm_rpc_client *
batch_client(void)
{
	cm_rpc_client_opts opts = { .batch_window = 1, .stall_ms = 60000 };
	cm_rpc_client     *c;
	int64_t            end = cm_mono_ms() + 10000;

	assert_int_equal(cm_rpc_client_open_opts(URL, &opts, &c), CM_OK);
	while (!stat_of(c).connected) {
		assert_true(cm_mono_ms() < end);
		sched_yield();
	}
	return (c);
}

// batch_client() with its window held: call 0 of qs, a short call
// blocked on lane 1 until gate_set(1).
static cm_rpc_client *
batch_client_held(void)
{
	cm_rpc_client *c;

	gate_set(0);
	calls_reset();
	c = batch_client();
	start_short(c, &qs, qargs, 0, "block1", 10000);
	wait_lane(1, 1, 0);
	return (c);
}

// One short call held on lane 1 fills a window of 1: the next ones wait in
// the client (nothing more is sent) and leave as one Batch when it comes
// back; each gets its own answer, a reply too large to share the batch's
// message by asking again.
static void
test_client_batches(void **state)
{
	cm_rpc_client      *c;
	cm_rpc_replica_stat st;

	(void) state;
	c = batch_client_held();
	for (int i = 1; i <= NQUEUED; i++) {
		start_short(c, &qs, qargs, i, i <= 2 ? "big" : "ok", 10000);
	}
	// Held: had they been sent, the "ok" ones would be answered at once.
	assert_int_equal(qs.done, 0);
	gate_set(1);
	calls_wait(&qs, NQUEUED + 1);
	assert_int_equal(qs.st[0], CM_OK);
	assert_string_equal(qs.who[0], "user-lane1");
	// Two replies too large for one message: one came in the batch,
	// the other was asked for again, alone.
	for (int i = 1; i <= 2; i++) {
		assert_int_equal(qs.st[i], CM_OK);
		assert_int_equal(qs.len[i], BIG_LEN);
	}
	for (int i = 3; i <= NQUEUED; i++) {
		char want[16];

		snprintf(want, sizeof(want), "-q%d", i);
		assert_int_equal(qs.st[i], CM_OK);
		// Its own answer: the request id it was sent with.
		assert_non_null(strstr(qs.who[i], want));
		assert_int_equal(
		    strlen(strstr(qs.who[i], want)), strlen(want));
	}
	// All of them went in batches (a Health probe may have gone alone);
	// one was asked for again.
	st = stat_of(c);
	assert_int_equal(st.batched, NQUEUED);
	assert_int_equal(st.resent, 1);
	cm_rpc_client_close(c);
	wait_lane(1, 0, 0);
}

// Calls waiting for a batch end when their deadline passes (the client's
// watchdog sees it) and when the client closes - never hang.
static void
test_client_batch_queue_ends(void **state)
{
	cm_rpc_client *c;
	int64_t        t0;

	(void) state;
	c  = batch_client_held();
	t0 = cm_mono_ms();
	start_short(c, &qs, qargs, 1, "ok", 200);
	calls_wait(&qs, 1);
	assert_int_equal(qs.st[1], CM_ETIMEDOUT);
	assert_non_null(strstr(qs.detail[1], "waited to be sent"));
	assert_true(cm_mono_ms() - t0 >= 200);
	assert_true(cm_mono_ms() - t0 < 5000);
	for (int i = 2; i <= NQUEUED; i++) {
		start_short(c, &qs, qargs, i, "ok", 10000);
	}
	cm_rpc_client_close(c);
	// Every call completed: the queued ones and the one out.
	assert_int_equal(qs.done, NQUEUED + 1);
	assert_int_equal(qs.st[0], CM_EUNAVAIL);
	for (int i = 2; i <= NQUEUED; i++) {
		assert_int_equal(qs.st[i], CM_EUNAVAIL);
		assert_non_null(strstr(qs.detail[i], "closed while the call"));
	}
	gate_set(1);
	wait_lane(1, 0, 0);
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
	gate_set(0);
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
	gate_set(1);
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
		cmocka_unit_test(test_batch_message),
		cmocka_unit_test(test_client_batches),
		cmocka_unit_test(test_client_batch_queue_ends),
		cmocka_unit_test(test_lanes),
	};
	return (cmocka_run_group_tests(tests, setup, teardown));
}
