// SPDX-License-Identifier: MIT
//
// Unit tests for rpc_client.c, the client over replica sets. The
// replicas are small REP responders in this process on tcp://127.0.0.x,
// each in one of three modes: ANSWER (answers every request with its tag),
// SILENT (never reads: a stopped process, whose kernel still takes the
// bytes) and HOLD (reads requests and never answers; the test then closes
// it with calls outstanding: a process killed mid-call). Covers the URL
// list syntax, least-loaded spread, affinity (rendezvous) and what moves
// when a replica leaves, a stalled replica (re-sendable calls re-sent
// within the deadline, others not), a replica dying mid-call, a replica
// that is down, DNS names re-resolved into a changing set, and a replica
// answering Health NOT_SERVING (avoided; the set still counts as healthy),
// a lone slow replica (its calls wait), and a read bounced off a slow
// replica whose next replica dies (it goes back to the slow one).
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/util/platform.h>

#include "common/rpc.h"
#include "common/util.h"
#include "proto/auth.pb-c.h"
#include "proto/rpc.pb-c.h"

// Contexts per responder: requests it can hold at once.
#define R_CTXS 32
// Generous waits for things that take milliseconds (a loaded CI box).
#define WAIT_MS 10000

// ---------------------------------------------------------------------
// Responders
// ---------------------------------------------------------------------

// R_DOWN answers every call, but NOT_SERVING to Health (a replica whose
// database is unreachable). R_SLOW answers everything, Health included,
// after SLOW_MS (a CPU-starved process).
// R_HOLDCALLS answers Health at once but holds every other call (a
// replica that looks healthy, until the test kills it).
typedef enum { R_ANSWER, R_SILENT, R_HOLD, R_DOWN, R_SLOW, R_HOLDCALLS } rmode;
#define SLOW_MS 600

typedef struct responder responder;

typedef struct rctx {
	responder *r;
	nng_ctx    ctx;
	nng_aio   *aio;
	int        sending;
	int        sleeping; // R_SLOW: the reply waits in out
	nng_msg   *out;
	nng_msg   *held;
} rctx;

struct responder {
	nng_socket   sock;
	nng_listener l;
	int          port;
	int          tag;
	rmode        mode;
	atomic_int   calls;  // requests read, probes excluded
	atomic_int   probes; // Health probes read
	rctx         c[R_CTXS];
};

static void
rctx_cb(void *arg)
{
	rctx                         *x  = arg;
	responder                    *r  = x->r;
	int                           rv = nng_aio_result(x->aio);
	nng_msg                      *msg;
	Threadgate__Rpc__V1__Request *req;
	Threadgate__Rpc__V1__Response resp =
	    THREADGATE__RPC__V1__RESPONSE__INIT;
	Threadgate__Auth__V1__Identity id =
	    THREADGATE__AUTH__V1__IDENTITY__INIT;
	uint8_t  payload[128];
	char     ident[32];
	nng_msg *out;

	if (x->sleeping) {
		x->sleeping = 0;
		if (rv != 0) {
			nng_msg_free(x->out);
			x->out = NULL;
			return;
		}
		x->sending = 1;
		nng_aio_set_msg(x->aio, x->out);
		x->out = NULL;
		nng_ctx_send(x->ctx, x->aio);
		return;
	}
	if (x->sending) {
		x->sending = 0;
		if (rv != 0) {
			nng_msg_free(nng_aio_get_msg(x->aio));
		}
		if (rv != NNG_ECLOSED && rv != NNG_ECANCELED) {
			nng_ctx_recv(x->ctx, x->aio);
		}
		return;
	}
	if (rv != 0) {
		if (rv != NNG_ECLOSED && rv != NNG_ECANCELED) {
			nng_ctx_recv(x->ctx, x->aio);
		}
		return;
	}
	msg = nng_aio_get_msg(x->aio);
	req = threadgate__rpc__v1__request__unpack(
	    NULL, nng_msg_len(msg), nng_msg_body(msg));
	if (req != NULL && strcmp(req->method, "Health") == 0) {
		atomic_fetch_add(&r->probes, 1);
	} else {
		atomic_fetch_add(&r->calls, 1);
	}
	if (r->mode == R_HOLD ||
	    (r->mode == R_HOLDCALLS &&
	        (req == NULL || strcmp(req->method, "Health") != 0))) {
		threadgate__rpc__v1__request__free_unpacked(req, NULL);
		x->held = msg;
		return;
	}
	nng_msg_free(msg);
	resp.status     = THREADGATE__RPC__V1__STATUS__STATUS_OK;
	resp.request_id = req != NULL ? req->request_id : "";
	if (req != NULL && strcmp(req->method, "Health") == 0) {
		Threadgate__Rpc__V1__HealthReply hr =
		    THREADGATE__RPC__V1__HEALTH_REPLY__INIT;

		hr.status = r->mode == R_DOWN
		    ? THREADGATE__RPC__V1__SERVING_STATUS__SERVING_STATUS_NOT_SERVING
		    : THREADGATE__RPC__V1__SERVING_STATUS__SERVING_STATUS_SERVING;
		hr.detail = r->mode == R_DOWN ? "database unreachable" : "";
		resp.payload.len =
		    threadgate__rpc__v1__health_reply__pack(&hr, payload);
	} else {
		snprintf(ident, sizeof(ident), "r%d", r->tag);
		id.identity         = ident;
		id.is_authenticated = 1;
		resp.payload.len =
		    threadgate__auth__v1__identity__pack(&id, payload);
	}
	resp.payload.data = payload;
	nng_msg_alloc(
	    &out, threadgate__rpc__v1__response__get_packed_size(&resp));
	threadgate__rpc__v1__response__pack(&resp, nng_msg_body(out));
	threadgate__rpc__v1__request__free_unpacked(req, NULL);
	if (r->mode == R_SLOW) {
		x->sleeping = 1;
		x->out      = out;
		nng_sleep_aio(SLOW_MS, x->aio);
		return;
	}
	x->sending = 1;
	nng_aio_set_msg(x->aio, out);
	nng_ctx_send(x->ctx, x->aio);
}

// Starts a responder on host:port (port 0 = any free one).
static responder *
responder_start(const char *host, int port, int tag, rmode mode)
{
	responder *r = calloc(1, sizeof(*r));
	char       url[128];

	r->tag  = tag;
	r->mode = mode;
	snprintf(url, sizeof(url), "tcp://%s:%d", host, port);
	if (nng_rep0_open(&r->sock) != 0) {
		free(r);
		return (NULL);
	}
	if (nng_listener_create(&r->l, r->sock, url) != 0 ||
	    nng_listener_start(r->l, 0) != 0 ||
	    nng_listener_get_int(r->l, NNG_OPT_TCP_BOUND_PORT, &r->port) !=
	        0) {
		nng_close(r->sock);
		free(r);
		return (NULL);
	}
	for (int i = 0; i < R_CTXS; i++) {
		r->c[i].r = r;
		assert_int_equal(nng_ctx_open(&r->c[i].ctx, r->sock), 0);
		assert_int_equal(
		    nng_aio_alloc(&r->c[i].aio, rctx_cb, &r->c[i]), 0);
		if (mode != R_SILENT) {
			nng_ctx_recv(r->c[i].ctx, r->c[i].aio);
		}
	}
	return (r);
}

// Closes r: its connections drop, as when the process dies.
static void
responder_stop(responder *r)
{
	if (r == NULL) {
		return;
	}
	for (int i = 0; i < R_CTXS; i++) {
		nng_aio_stop(r->c[i].aio);
	}
	nng_close(r->sock);
	for (int i = 0; i < R_CTXS; i++) {
		nng_msg_free(r->c[i].held);
		nng_msg_free(r->c[i].out);
		nng_aio_free(r->c[i].aio);
	}
	free(r);
}

static void
sleep_ms(int ms)
{
	nng_msleep((nng_duration) ms);
}

// Waits (polling every 5 ms, up to WAIT_MS) until cond(arg) holds.
static int
wait_for(int (*cond)(void *), void *arg)
{
	int64_t end = cm_mono_ms() + WAIT_MS;

	while (!cond(arg)) {
		if (cm_mono_ms() > end) {
			return (0);
		}
		sleep_ms(5);
	}
	return (1);
}

static int
all_connected(void *arg)
{
	cm_rpc_client      *c = arg;
	cm_rpc_replica_stat st[CM_RPC_MAX_REPLICAS];
	size_t n = cm_rpc_client_stats(c, st, CM_RPC_MAX_REPLICAS);

	for (size_t i = 0; i < n; i++) {
		if (!st[i].connected) {
			return (0);
		}
	}
	return (n > 0);
}

// The stat of the replica whose url ends with ":port" (or contains it).
static int
stat_of(cm_rpc_client *c, const char *needle, cm_rpc_replica_stat *out)
{
	cm_rpc_replica_stat st[CM_RPC_MAX_REPLICAS];
	size_t n = cm_rpc_client_stats(c, st, CM_RPC_MAX_REPLICAS);

	for (size_t i = 0; i < n; i++) {
		if (strstr(st[i].url, needle) != NULL) {
			*out = st[i];
			return (1);
		}
	}
	return (0);
}

static char *
urls2(int p1, int p2)
{
	static char buf[256];

	snprintf(buf, sizeof(buf), "tcp://127.0.0.1:%d, tcp://127.0.0.1:%d",
	    p1, p2);
	return (buf);
}

// ---------------------------------------------------------------------
// Calls in batches
// ---------------------------------------------------------------------

typedef struct batch {
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	int             pending;
	int             ok;
	int             st_count[16];
	int             tags[16]; // replies per responder tag
	int64_t         max_ms;
} batch;

typedef struct one {
	batch  *b;
	int64_t t0;
	int     tag; // of the reply, -1 on error
	cm_err  st;
} one;

static void
one_done(void *arg, cm_err st, const char *detail, ProtobufCMessage *reply)
{
	one    *o  = arg;
	batch  *b  = o->b;
	int64_t ms = cm_mono_ms() - o->t0;

	(void) detail;
	o->st  = st;
	o->tag = -1;
	if (st == CM_OK) {
		Threadgate__Auth__V1__Identity *id = (void *) reply;
		int64_t                         tag;

		assert_int_equal(
		    cm_parse_i64(id->identity + 1, 0, 15, &tag), CM_OK);
		o->tag = (int) tag;
		protobuf_c_message_free_unpacked(reply, NULL);
	}
	pthread_mutex_lock(&b->mu);
	b->st_count[st]++;
	if (st == CM_OK) {
		b->ok++;
		b->tags[o->tag]++;
	}
	if (ms > b->max_ms) {
		b->max_ms = ms;
	}
	b->pending--;
	pthread_cond_signal(&b->cv);
	pthread_mutex_unlock(&b->mu);
}

// Starts n calls at once with opts (affinity taken from keys[i] when keys
// is not NULL), waits for all; results in b and ones (n entries).
static void
run_batch(cm_rpc_client *c, int n, const cm_rpc_call_opts *opts,
    const uint64_t *keys, batch *b, one *ones)
{
	Threadgate__Auth__V1__AuthenticateRequest req =
	    THREADGATE__AUTH__V1__AUTHENTICATE_REQUEST__INIT;

	memset(b, 0, sizeof(*b));
	pthread_mutex_init(&b->mu, NULL);
	pthread_cond_init(&b->cv, NULL);
	b->pending = n;
	for (int i = 0; i < n; i++) {
		cm_rpc_call_opts o = *opts;

		if (keys != NULL) {
			o.affinity = keys[i];
		}
		ones[i].b  = b;
		ones[i].t0 = cm_mono_ms();
		assert_int_equal(
		    cm_rpc_call_start(c, "Authenticate", &o, &req.base,
		        &threadgate__auth__v1__identity__descriptor, one_done,
		        &ones[i]),
		    CM_OK);
	}
	pthread_mutex_lock(&b->mu);
	while (b->pending > 0) {
		pthread_cond_wait(&b->cv, &b->mu);
	}
	pthread_mutex_unlock(&b->mu);
}

// ---------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------

static void
test_key(void **state)
{
	(void) state;
	assert_int_equal(cm_rpc_key(0, "abc", 3), cm_rpc_key(0, "abc", 3));
	assert_int_not_equal(cm_rpc_key(0, "abc", 3), cm_rpc_key(0, "abd", 3));
	assert_int_not_equal(cm_rpc_key(0, "", 0), 0);
	assert_int_not_equal(cm_rpc_key(1, "abc", 3), cm_rpc_key(0, "abc", 3));
	// Chaining is not concatenation: "a"+"bc" differs from "ab"+"c".
	assert_int_not_equal(cm_rpc_key(cm_rpc_key(0, "a", 1), "bc", 2),
	    cm_rpc_key(cm_rpc_key(0, "ab", 2), "c", 1));
}

static void
test_url_list(void **state)
{
	static const char *bad[] = {
		"",
		" ",
		",",
		"inproc://a,",
		"nourl",
		"://x",
		"tcp://",
		"tcp://host",
		"tcp://host:0",
		"tcp://host:99999",
		"tcp://[::1]9000",
		"tcp://:9000",
		"tcp://a:1,tcp://b:1,tcp://c:1,tcp://d:1,tcp://e:1,tcp://f:1,"
		"tcp://g:1,tcp://h:1,tcp://i:1,tcp://j:1,tcp://k:1,tcp://l:1,"
		"tcp://m:1,tcp://n:1,tcp://o:1,tcp://p:1,tcp://q:1",
	};
	cm_rpc_client      *c = NULL;
	cm_rpc_replica_stat st[4];

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(cm_rpc_client_open(bad[i], &c), CM_EINVAL);
	}
	assert_int_equal(cm_rpc_client_open(NULL, &c), CM_EINVAL);
	// Spaces are trimmed and duplicates merged; nothing needs to listen.
	assert_int_equal(cm_rpc_client_open(" inproc://rct-a ,inproc://rct-b,"
	                                    "inproc://rct-a, tcp://[::1]:9",
	                     &c),
	    CM_OK);
	assert_int_equal(cm_rpc_client_stats(c, st, 4), 3);
	cm_rpc_client_close(c);
}

static void
test_spread(void **state)
{
	responder       *a = responder_start("127.0.0.1", 0, 1, R_ANSWER);
	responder       *b = responder_start("127.0.0.1", 0, 2, R_ANSWER);
	cm_rpc_client   *c = NULL;
	cm_rpc_call_opts o = { .timeout_ms = 5000 };
	batch            bt;
	one              ones[64];

	(void) state;
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(
	    cm_rpc_client_open(urls2(a->port, b->port), &c), CM_OK);
	assert_true(wait_for(all_connected, c));
	// One at a time: equal loads rotate, so both get about half.
	for (int i = 0; i < 40; i++) {
		run_batch(c, 1, &o, NULL, &bt, ones);
		assert_int_equal(bt.ok, 1);
	}
	assert_true(atomic_load(&a->calls) >= 15);
	assert_true(atomic_load(&b->calls) >= 15);
	// Many at once: both share them.
	run_batch(c, 64, &o, NULL, &bt, ones);
	assert_int_equal(bt.ok, 64);
	assert_true(bt.tags[1] >= 16 && bt.tags[2] >= 16);
	cm_rpc_client_close(c);
	responder_stop(a);
	responder_stop(b);
}

static void
test_affinity(void **state)
{
	responder       *r[3];
	cm_rpc_client   *c = NULL;
	cm_rpc_call_opts o = { .timeout_ms = 5000, .idempotent = 1 };
	char             urls[256];
	uint64_t         keys[40];
	int              home[40];
	int              used[4] = { 0 };
	batch            bt;
	one              ones[40];
	int              gone;

	(void) state;
	for (int i = 0; i < 3; i++) {
		r[i] = responder_start("127.0.0.1", 0, i + 1, R_ANSWER);
		assert_non_null(r[i]);
	}
	snprintf(urls, sizeof(urls),
	    "tcp://127.0.0.1:%d,tcp://127.0.0.1:%d,tcp://127.0.0.1:%d",
	    r[0]->port, r[1]->port, r[2]->port);
	assert_int_equal(cm_rpc_client_open(urls, &c), CM_OK);
	assert_true(wait_for(all_connected, c));
	for (int i = 0; i < 40; i++) {
		char tok[32];

		snprintf(tok, sizeof(tok), "Bearer token-%d", i);
		keys[i] = cm_rpc_key(0, tok, strlen(tok));
	}
	// Each key keeps its replica, call after call.
	run_batch(c, 40, &o, keys, &bt, ones);
	assert_int_equal(bt.ok, 40);
	for (int i = 0; i < 40; i++) {
		home[i]       = ones[i].tag;
		used[home[i]] = 1;
	}
	assert_true(used[1] && used[2] && used[3]);
	for (int round = 0; round < 3; round++) {
		run_batch(c, 40, &o, keys, &bt, ones);
		for (int i = 0; i < 40; i++) {
			assert_int_equal(ones[i].tag, home[i]);
		}
	}
	// A replica leaves: only its keys move.
	gone = home[0];
	responder_stop(r[gone - 1]);
	r[gone - 1] = NULL;
	{
		int64_t end = cm_mono_ms() + WAIT_MS;

		// Wait until the client saw the connection drop.
		for (;;) {
			cm_rpc_replica_stat st[4];
			size_t              n = cm_rpc_client_stats(c, st, 4);
			int                 down = 0;

			for (size_t k = 0; k < n; k++) {
				down += !st[k].connected;
			}
			if (down == 1 || cm_mono_ms() > end) {
				break;
			}
			sleep_ms(5);
		}
	}
	run_batch(c, 40, &o, keys, &bt, ones);
	assert_int_equal(bt.ok, 40);
	for (int i = 0; i < 40; i++) {
		if (home[i] == gone) {
			assert_int_not_equal(ones[i].tag, gone);
		} else {
			assert_int_equal(ones[i].tag, home[i]);
		}
	}
	cm_rpc_client_close(c);
	for (int i = 0; i < 3; i++) {
		responder_stop(r[i]);
	}
}

static void
test_stalled(void **state)
{
	responder          *a = responder_start("127.0.0.1", 0, 1, R_ANSWER);
	responder          *b = responder_start("127.0.0.1", 0, 2, R_SILENT);
	cm_rpc_client_opts  copts = { .stall_ms = 100 };
	cm_rpc_client      *c     = NULL;
	cm_rpc_call_opts    o     = { .timeout_ms = 3000, .idempotent = 1 };
	cm_rpc_replica_stat st;
	batch               bt;
	one                 ones[40];
	char                needle[16];

	(void) state;
	assert_int_equal(
	    cm_rpc_client_open_opts(urls2(a->port, b->port), &copts, &c),
	    CM_OK);
	assert_true(wait_for(all_connected, c));
	// Reads: the ones sent to the stopped replica are re-sent once it
	// counts as stalled (about 2 x stall_ms), well within the deadline.
	run_batch(c, 40, &o, NULL, &bt, ones);
	assert_int_equal(bt.ok, 40);
	assert_int_equal(bt.tags[1], 40);
	assert_true(bt.max_ms < 2000);
	snprintf(needle, sizeof(needle), ":%d", b->port);
	assert_true(stat_of(c, needle, &st));
	assert_true(st.stalled);
	assert_true(st.resent >= 1);
	// Now known stalled, it gets no new calls, writes included.
	o.idempotent = 0;
	run_batch(c, 20, &o, NULL, &bt, ones);
	assert_int_equal(bt.ok, 20);
	cm_rpc_client_close(c);

	// A fresh client does not know yet: writes that reach the stopped
	// replica are not re-sent; they fail at their deadline.
	assert_int_equal(
	    cm_rpc_client_open_opts(urls2(a->port, b->port), &copts, &c),
	    CM_OK);
	assert_true(wait_for(all_connected, c));
	atomic_store(&a->calls, 0);
	o.timeout_ms = 800;
	run_batch(c, 20, &o, NULL, &bt, ones);
	assert_true(bt.ok >= 1 && bt.ok < 20);
	assert_int_equal(bt.ok + bt.st_count[CM_ETIMEDOUT], 20);
	assert_int_equal(atomic_load(&a->calls), bt.ok);
	assert_true(bt.max_ms < 800 + 500);
	cm_rpc_client_close(c);
	responder_stop(a);
	responder_stop(b);
}

typedef struct calls_arg {
	responder *r;
	int        n;
} calls_arg;

static int
has_calls(void *arg)
{
	calls_arg *x = arg;

	return (atomic_load(&x->r->calls) >= x->n);
}

typedef struct bg_batch {
	cm_rpc_client   *c;
	cm_rpc_call_opts o;
	int              n;
	batch            b;
	one              ones[40];
} bg_batch;

static void *
bg_main(void *arg)
{
	bg_batch *g = arg;

	run_batch(g->c, g->n, &g->o, NULL, &g->b, g->ones);
	return (NULL);
}

// Runs 20 calls while replica b holds what it gets, kills b once it holds
// some, and returns the results.
static void
kill_mid_call(int idempotent, bg_batch *g, responder *a)
{
	responder *b;
	pthread_t  th;
	calls_arg  ca;
	int64_t    t0;

	b = responder_start("127.0.0.1", 0, 2, R_HOLD);
	assert_non_null(b);
	// Stalls are not what this is about.
	{
		cm_rpc_client_opts copts = { .stall_ms = 20000 };

		assert_int_equal(cm_rpc_client_open_opts(
		                     urls2(a->port, b->port), &copts, &g->c),
		    CM_OK);
	}
	assert_true(wait_for(all_connected, g->c));
	atomic_store(&a->calls, 0);
	g->o = (cm_rpc_call_opts) { .timeout_ms = 5000,
		.idempotent                     = idempotent };
	g->n = 20;
	t0   = cm_mono_ms();
	assert_int_equal(pthread_create(&th, NULL, bg_main, g), 0);
	ca.r = b;
	ca.n = 1; // least-loaded choice sends it few; one is enough
	assert_true(wait_for(has_calls, &ca));
	responder_stop(b);
	pthread_join(th, NULL);
	// Nobody waited for the deadline.
	assert_true(cm_mono_ms() - t0 < 3000);
	cm_rpc_client_close(g->c);
}

static void
test_killed(void **state)
{
	responder *a = responder_start("127.0.0.1", 0, 1, R_ANSWER);
	bg_batch   g;

	(void) state;
	// Reads are re-sent to the live replica: every call succeeds.
	memset(&g, 0, sizeof(g));
	kill_mid_call(1, &g, a);
	assert_int_equal(g.b.ok, 20);
	assert_int_equal(g.b.tags[1], 20);
	// Writes are not: those at the dead replica fail with CM_EUNAVAIL,
	// and the live one saw exactly the calls that succeeded.
	memset(&g, 0, sizeof(g));
	kill_mid_call(0, &g, a);
	assert_true(g.b.ok < 20);
	assert_int_equal(g.b.ok + g.b.st_count[CM_EUNAVAIL], 20);
	assert_int_equal(atomic_load(&a->calls), g.b.ok);
	responder_stop(a);
}

static void
test_down(void **state)
{
	responder       *a     = responder_start("127.0.0.1", 0, 1, R_ANSWER);
	responder       *dead  = responder_start("127.0.0.1", 0, 9, R_ANSWER);
	int              dport = dead->port;
	cm_rpc_client   *c     = NULL;
	cm_rpc_call_opts o     = { .timeout_ms = 3000 };
	batch            bt;
	one              ones[20];
	int64_t          t0;

	(void) state;
	responder_stop(dead);
	// A replica that is down is never chosen while another is up:
	// even writes all succeed.
	assert_int_equal(cm_rpc_client_open(urls2(dport, a->port), &c), CM_OK);
	{
		char                needle[16];
		cm_rpc_replica_stat st;
		int64_t             end = cm_mono_ms() + WAIT_MS;

		snprintf(needle, sizeof(needle), ":%d", a->port);
		while (!(stat_of(c, needle, &st) && st.connected) &&
		    cm_mono_ms() < end) {
			sleep_ms(5);
		}
	}
	run_batch(c, 20, &o, NULL, &bt, ones);
	assert_int_equal(bt.ok, 20);
	cm_rpc_client_close(c);
	// Only dead ones: a prompt 503, not the whole deadline.
	{
		char url[64];

		snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", dport);
		assert_int_equal(cm_rpc_client_open(url, &c), CM_OK);
	}
	t0 = cm_mono_ms();
	run_batch(c, 1, &o, NULL, &bt, ones);
	assert_int_equal(bt.st_count[CM_EUNAVAIL], 1);
	assert_true(cm_mono_ms() - t0 < 2000);
	cm_rpc_client_close(c);
	responder_stop(a);
}

// A fake resolver whose answer the test changes.
typedef struct fake_dns {
	pthread_mutex_t mu;
	int             n; // -1: fail
	char            addr[4][CM_RPC_ADDR_MAX];
	atomic_int      asked;
} fake_dns;

static int
fake_resolve(void *arg, const char *host, int family,
    char out[][CM_RPC_ADDR_MAX], int max)
{
	fake_dns *d = arg;
	int       n;

	(void) family;
	assert_string_equal(host, "replicas.test");
	atomic_fetch_add(&d->asked, 1);
	pthread_mutex_lock(&d->mu);
	n = d->n;
	for (int i = 0; i < n && i < max; i++) {
		memcpy(out[i], d->addr[i], CM_RPC_ADDR_MAX);
	}
	pthread_mutex_unlock(&d->mu);
	return (n);
}

static void
dns_set(fake_dns *d, int n, const char *a0, const char *a1)
{
	pthread_mutex_lock(&d->mu);
	d->n = n;
	if (a0 != NULL) {
		snprintf(d->addr[0], CM_RPC_ADDR_MAX, "%s", a0);
	}
	if (a1 != NULL) {
		snprintf(d->addr[1], CM_RPC_ADDR_MAX, "%s", a1);
	}
	pthread_mutex_unlock(&d->mu);
}

typedef struct set_is {
	cm_rpc_client *c;
	const char    *want[2]; // hosts that must be there (connected)
	int            n;
} set_is;

static int
set_matches(void *arg)
{
	set_is             *x = arg;
	cm_rpc_replica_stat st[8];
	size_t              n     = cm_rpc_client_stats(x->c, st, 8);
	int                 found = 0;

	if ((int) n != x->n) {
		return (0);
	}
	for (size_t i = 0; i < n; i++) {
		for (int k = 0; k < x->n; k++) {
			char needle[64];

			snprintf(needle, sizeof(needle), "//%s:", x->want[k]);
			if (strstr(st[i].url, needle) != NULL &&
			    st[i].connected) {
				found++;
			}
		}
	}
	return (found == x->n);
}

static void
test_dns(void **state)
{
	responder         *r[3] = { NULL, NULL, NULL };
	fake_dns           d    = { .mu = PTHREAD_MUTEX_INITIALIZER };
	cm_rpc_client_opts copts;
	cm_rpc_client     *c = NULL;
	cm_rpc_call_opts   o = { .timeout_ms = 3000 };
	char               url[64];
	set_is             want;
	batch              bt;
	one                ones[30];
	int                port = 0;
	int                asked;

	(void) state;
	// Three replicas on one port, as the pods behind a name: 127.0.0.x.
	for (int attempt = 0; attempt < 20 && r[2] == NULL; attempt++) {
		for (int i = 0; i < 3; i++) {
			responder_stop(r[i]);
			r[i] = NULL;
		}
		r[0] = responder_start("127.0.0.1", 0, 1, R_ANSWER);
		assert_non_null(r[0]);
		port = r[0]->port;
		r[1] = responder_start("127.0.0.2", port, 2, R_ANSWER);
		if (r[1] != NULL) {
			r[2] = responder_start("127.0.0.3", port, 3, R_ANSWER);
		}
	}
	assert_non_null(r[2]);
	dns_set(&d, 2, "127.0.0.1", "127.0.0.2");
	copts = (cm_rpc_client_opts) {
		.resolve_ms = 50, .resolve = fake_resolve, .resolve_arg = &d
	};
	snprintf(url, sizeof(url), "tcp://replicas.test:%d", port);
	assert_int_equal(cm_rpc_client_open_opts(url, &copts, &c), CM_OK);
	want = (set_is) { c, { "127.0.0.1", "127.0.0.2" }, 2 };
	assert_true(wait_for(set_matches, &want));
	run_batch(c, 30, &o, NULL, &bt, ones);
	assert_int_equal(bt.ok, 30);
	assert_true(bt.tags[1] > 0 && bt.tags[2] > 0 && bt.tags[3] == 0);
	// A pod replaced: .1 leaves, .3 joins, without a restart.
	dns_set(&d, 2, "127.0.0.2", "127.0.0.3");
	want = (set_is) { c, { "127.0.0.2", "127.0.0.3" }, 2 };
	assert_true(wait_for(set_matches, &want));
	run_batch(c, 30, &o, NULL, &bt, ones);
	assert_int_equal(bt.ok, 30);
	assert_true(bt.tags[1] == 0 && bt.tags[2] > 0 && bt.tags[3] > 0);
	// The resolver failing keeps the set.
	dns_set(&d, -1, NULL, NULL);
	asked = atomic_load(&d.asked);
	while (atomic_load(&d.asked) < asked + 3) {
		sleep_ms(10);
	}
	if (!set_matches(&want)) {
		cm_rpc_replica_stat st[8];
		size_t              n = cm_rpc_client_stats(c, st, 8);

		for (size_t i = 0; i < n; i++) {
			fprintf(stderr, "replica %s connected %d\n", st[i].url,
			    st[i].connected);
		}
		fail_msg("the set changed while the resolver failed");
	}
	// An empty answer empties it: calls fail at once.
	dns_set(&d, 0, NULL, NULL);
	want = (set_is) { c, { NULL, NULL }, 0 };
	assert_true(wait_for(set_matches, &want));
	{
		Threadgate__Auth__V1__AuthenticateRequest req =
		    THREADGATE__AUTH__V1__AUTHENTICATE_REQUEST__INIT;
		ProtobufCMessage *reply = NULL;

		assert_int_equal(
		    cm_rpc_call_sync(c, "Authenticate", "r", 1000, &req.base,
		        &threadgate__auth__v1__identity__descriptor, &reply,
		        NULL, 0),
		    CM_EUNAVAIL);
	}
	cm_rpc_client_close(c);
	for (int i = 0; i < 3; i++) {
		responder_stop(r[i]);
	}
}

typedef struct serving_is {
	cm_rpc_client *c;
	const char    *needle;
	int            serving;
} serving_is;

static int
serving_matches(void *arg)
{
	serving_is         *x = arg;
	cm_rpc_replica_stat st;

	return (stat_of(x->c, x->needle, &st) && st.serving == x->serving);
}

static void
test_not_serving(void **state)
{
	responder       *a = responder_start("127.0.0.1", 0, 1, R_ANSWER);
	responder       *b = responder_start("127.0.0.1", 0, 2, R_DOWN);
	cm_rpc_client   *c = NULL;
	cm_rpc_call_opts o = { .timeout_ms = 3000 };
	char             needle[16];
	char             detail[CM_RPC_DETAIL_MAX];
	char             url[64];
	serving_is       w;
	batch            bt;
	one              ones[20];

	(void) state;
	assert_int_equal(
	    cm_rpc_client_open(urls2(a->port, b->port), &c), CM_OK);
	assert_true(wait_for(all_connected, c));
	// The periodic Health probe finds b not serving: it gets nothing
	// while a serves, writes included.
	snprintf(needle, sizeof(needle), ":%d", b->port);
	w = (serving_is) { c, needle, 0 };
	assert_true(wait_for(serving_matches, &w));
	atomic_store(&b->calls, 0);
	run_batch(c, 20, &o, NULL, &bt, ones);
	assert_int_equal(bt.ok, 20);
	assert_int_equal(atomic_load(&b->calls), 0);
	// The set is healthy while one replica serves.
	assert_int_equal(
	    cm_rpc_health(c, "h", 2000, detail, sizeof(detail)), CM_OK);
	assert_string_equal(detail, "serving");
	cm_rpc_client_close(c);
	// Alone, b says why.
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", b->port);
	assert_int_equal(cm_rpc_client_open(url, &c), CM_OK);
	assert_int_equal(
	    cm_rpc_health(c, "h", 2000, detail, sizeof(detail)), CM_EUNAVAIL);
	assert_string_equal(detail, "database unreachable");
	cm_rpc_client_close(c);
	responder_stop(a);
	responder_stop(b);
}

static void
test_single_slow(void **state)
{
	responder         *a     = responder_start("127.0.0.1", 0, 1, R_SLOW);
	cm_rpc_client_opts copts = { .stall_ms = 100 };
	cm_rpc_client     *c     = NULL;
	cm_rpc_call_opts   o     = { .timeout_ms = 3000, .idempotent = 1 };
	char               url[64];
	batch              bt;
	one                ones[8];

	(void) state;
	// Alone and slower than two stall windows (its probes too): it
	// counts as stalled, but with nowhere else to go its calls wait.
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", a->port);
	assert_int_equal(cm_rpc_client_open_opts(url, &copts, &c), CM_OK);
	assert_true(wait_for(all_connected, c));
	run_batch(c, 8, &o, NULL, &bt, ones);
	assert_int_equal(bt.ok, 8);
	if (bt.max_ms < SLOW_MS - 50) {
		fail_msg("max %lld ms, probes %d calls %d",
		    (long long) bt.max_ms, atomic_load(&a->probes),
		    atomic_load(&a->calls));
	}
	cm_rpc_client_close(c);
	responder_stop(a);
}

static void
test_bounce_back(void **state)
{
	responder         *a = responder_start("127.0.0.1", 0, 1, R_HOLDCALLS);
	responder         *b = responder_start("127.0.0.1", 0, 2, R_SLOW);
	cm_rpc_client_opts copts = { .stall_ms = 100 };
	bg_batch           g;
	pthread_t          th;
	calls_arg          ca;

	(void) state;
	memset(&g, 0, sizeof(g));
	assert_int_equal(
	    cm_rpc_client_open_opts(urls2(a->port, b->port), &copts, &g.c),
	    CM_OK);
	assert_true(wait_for(all_connected, g.c));
	// b misses its probe window while a answers its own: b counts as
	// stalled and its reads move to a, which holds them all...
	g.o = (cm_rpc_call_opts) { .timeout_ms = 5000, .idempotent = 1 };
	g.n = 10;
	assert_int_equal(pthread_create(&th, NULL, bg_main, &g), 0);
	ca.r = a;
	ca.n = 10;
	assert_true(wait_for(has_calls, &ca));
	// ... and dies with them. Those that came from b go back to b (tried
	// before, but connected): every read succeeds, late.
	responder_stop(a);
	pthread_join(th, NULL);
	assert_int_equal(g.b.ok, 10);
	assert_int_equal(g.b.tags[2], 10);
	cm_rpc_client_close(g.c);
	responder_stop(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key),
		cmocka_unit_test(test_url_list),
		cmocka_unit_test(test_spread),
		cmocka_unit_test(test_affinity),
		cmocka_unit_test(test_stalled),
		cmocka_unit_test(test_killed),
		cmocka_unit_test(test_down),
		cmocka_unit_test(test_dns),
		cmocka_unit_test(test_not_serving),
		cmocka_unit_test(test_single_slow),
		cmocka_unit_test(test_bounce_back),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
