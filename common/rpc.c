// SPDX-License-Identifier: MIT
//
// RPC over nng REQ/REP with threadgate.rpc.v1 envelopes (see rpc.h).
//
// Server: N contexts on one REP socket, each an aio running RECV ->
// handle -> SEND in nng's callbacks: a handler runs inline on the nng task
// thread that completed the receive. Handlers that may block offload the
// call to a lane: a bounded FIFO queue served by that lane's own threads,
// each with its own worker state. The context stays with the call (its
// reply must go out on it) until the lane thread answers. Dispatch is by
// method name through the protobuf-c service descriptor.
//
// Client: a REQ socket and a free list of slots, each an nng_ctx plus an
// aio running a two-step state machine (SEND -> RECV) in nng callbacks.
// Every step carries what is left of the call's deadline.
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/xalloc.h"
#include "proto/rpc.pb-c.h"

typedef Threadgate__Rpc__V1__Request  rpc_request;
typedef Threadgate__Rpc__V1__Response rpc_response;

// How long a call waits for a connection when the client has none at the
// moment of the call (peer down or not started yet): long enough to ride
// out a peer's start-up or a reconnect (reconnect backoff starts at
// 100 ms), short enough that a dead peer becomes a prompt 503.
#define RPC_UNCONNECTED_WAIT_MS 1000
// Reconnect backoff bounds for clients.
#define RPC_RECONNECT_MIN_MS 100
#define RPC_RECONNECT_MAX_MS 2000

// ---------------------------------------------------------------------
// Envelope helpers
// ---------------------------------------------------------------------

// Packs a Response into a new nng message; returns NULL on allocation
// failure.
static nng_msg *
response_msg(cm_err status, const char *detail, const char *rid,
    const uint8_t *payload, size_t payload_len)
{
	rpc_response resp = THREADGATE__RPC__V1__RESPONSE__INIT;
	nng_msg     *m    = NULL;
	size_t       n;

	resp.status     = (Threadgate__Rpc__V1__Status) status;
	resp.detail     = (char *) (detail != NULL ? detail : "");
	resp.request_id = (char *) (rid != NULL ? rid : "");
	if (status == CM_OK && payload != NULL) {
		resp.payload.data = (uint8_t *) payload;
		resp.payload.len  = payload_len;
	}
	n = threadgate__rpc__v1__response__get_packed_size(&resp);
	if (nng_msg_alloc(&m, n) != 0) {
		return (NULL);
	}
	threadgate__rpc__v1__response__pack(&resp, nng_msg_body(m));
	return (m);
}

// ---------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------

// One REP context: its aio runs the RECV -> (handle) -> SEND state machine
// in nng callbacks. The request being handled lives here until the reply
// is sent.
typedef struct rpc_ctx rpc_ctx;
struct rpc_ctx {
	cm_rpc_server *srv;
	nng_ctx        ctx;
	nng_aio       *aio;
	void          *state; // worker state from worker_init
	int            index;
	int            sending;
	// The call in progress (valid between receive and reply).
	rpc_request                     *req;
	ProtobufCMessage                *input;
	const ProtobufCMethodDescriptor *method;
	cm_rpc_call                      call;
	rpc_ctx                         *next; // lane queue link
};

// A lane: a FIFO of offloaded calls and the threads that run them.
typedef struct rpc_lane {
	cm_rpc_server  *srv;
	int             index;
	int             nthreads;
	int             queue_max;
	int             base;  // worker_init index of thread 0
	void          **state; // per thread, from worker_init
	pthread_t      *threads;
	int             nstarted;
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	rpc_ctx        *qhead;
	rpc_ctx        *qtail;
	int             qlen;
	int             busy;
	int             stop;
} rpc_lane;

struct cm_rpc_server {
	cm_rpc_server_config cfg;
	nng_socket           sock;
	rpc_ctx             *ctxs;
	rpc_lane             lanes[CM_RPC_MAX_LANES];
	atomic_int           stopping;
};

// Output of one handler invocation, filled by the closure.
typedef struct call_out {
	int      called;
	int      offload_lane; // -1: not offloaded
	uint8_t *buf;
	size_t   len;
} call_out;

void
cm_rpc_fail(cm_rpc_call *call, cm_err err, const char *fmt, ...)
{
	va_list ap;

	if (call == NULL) {
		return;
	}
	call->status = (err == CM_OK) ? CM_EINTERNAL : err;
	if (fmt == NULL) {
		snprintf(call->detail, sizeof(call->detail), "%s",
		    cm_strerror(call->status));
		return;
	}
	va_start(ap, fmt);
	vsnprintf(call->detail, sizeof(call->detail), fmt, ap);
	va_end(ap);
}

// The closure handed to handlers: packs the output synchronously, so the
// handler may free its output message as soon as the closure returns.
static void
handler_closure(const ProtobufCMessage *out, void *closure_data)
{
	cm_rpc_call *call = closure_data;
	call_out    *co   = call->priv;

	if (co->called) {
		// A handler bug; keep the first answer.
		cm_error(
		    call->request_id, "rpc handler called its closure twice");
		return;
	}
	co->called = 1;
	if (out == NULL) {
		if (call->status == CM_OK) {
			cm_rpc_fail(
			    call, CM_EINTERNAL, "handler returned no reply");
		}
		return;
	}
	if (call->status != CM_OK) {
		return;
	}
	co->len = protobuf_c_message_get_packed_size(out);
	co->buf = cm_xmalloc(co->len);
	protobuf_c_message_pack(out, co->buf);
}

static void
reject(cm_rpc_server *srv, cm_err err)
{
	if (srv->cfg.on_reject != NULL) {
		srv->cfg.on_reject(srv->cfg.arg, err);
	}
}

// Frees the call in progress and sends reply (or, when it cannot be
// allocated, goes back to receiving: the client's deadline fires).
static void
ctx_reply(rpc_ctx *c, nng_msg *reply)
{
	protobuf_c_message_free_unpacked(c->input, NULL);
	threadgate__rpc__v1__request__free_unpacked(c->req, NULL);
	c->input  = NULL;
	c->req    = NULL;
	c->method = NULL;
	if (atomic_load(&c->srv->stopping)) {
		nng_msg_free(reply);
		return;
	}
	if (reply == NULL) {
		c->sending = 0;
		nng_ctx_recv(c->ctx, c->aio);
		return;
	}
	c->sending = 1;
	nng_aio_set_msg(c->aio, reply);
	nng_ctx_send(c->ctx, c->aio);
}

static cm_err enqueue(rpc_ctx *c, int lane);

// Invokes the handler for the call in c with the given worker state (on
// lane, or inline when lane is -1) and answers, unless the handler
// offloaded the call.
static void
ctx_invoke(rpc_ctx *c, void *state, int index, int lane)
{
	ProtobufCService *svc = c->srv->cfg.service;
	call_out          co  = { .offload_lane = -1 };

	c->call.worker       = state;
	c->call.worker_index = index;
	c->call.blocking_ok  = (lane >= 0);
	c->call.lane         = lane;
	c->call.priv         = &co;
	svc->invoke(svc, (unsigned) (c->method - svc->descriptor->methods),
	    c->input, handler_closure, &c->call);
	if (co.offload_lane >= 0 && !co.called) {
		cm_err err = enqueue(c, co.offload_lane);

		if (err == CM_OK) {
			return; // a lane thread answers
		}
		cm_rpc_fail(&c->call, CM_EUNAVAIL, "%s",
		    err == CM_ETOOBIG ? "server overloaded, retry later"
		                      : "server stopping");
		co.called = 1;
	}
	if (!co.called) {
		cm_rpc_fail(&c->call, CM_EINTERNAL, "%s did not answer",
		    c->method->name);
	}
	if (c->call.status != CM_OK) {
		cm_debug(c->call.request_id, "rpc %s failed: %s (%s)",
		    c->method->name, cm_strerror(c->call.status),
		    c->call.detail);
	}
	ctx_reply(c,
	    response_msg(c->call.status, c->call.detail, c->call.request_id,
	        co.buf, co.len));
	free(co.buf);
}

// A request arrived on c: decode, check, dispatch.
static void
ctx_request(rpc_ctx *c, nng_msg *msg)
{
	cm_rpc_server *srv = c->srv;
	const char    *rid = "";
	cm_err         err = CM_OK;
	char           detail[CM_RPC_DETAIL_MAX];

	c->req = threadgate__rpc__v1__request__unpack(
	    NULL, nng_msg_len(msg), nng_msg_body(msg));
	nng_msg_free(msg);
	if (c->req == NULL) {
		reject(srv, CM_EINVAL);
		ctx_reply(c,
		    response_msg(CM_EINVAL, "undecodable request envelope", "",
		        NULL, 0));
		return;
	}
	if (strlen(c->req->request_id) <= CM_RID_MAX) {
		rid = c->req->request_id;
	}
	if (strlen(c->req->method) > CM_RPC_METHOD_MAX ||
	    (c->method = protobuf_c_service_descriptor_get_method_by_name(
	         srv->cfg.service->descriptor, c->req->method)) == NULL) {
		err = CM_ENOTSUP;
		snprintf(detail, sizeof(detail), "unknown method \"%.64s\"",
		    c->req->method);
	} else if (c->req->deadline_unix_ms != 0 &&
	    cm_now_ms() >= c->req->deadline_unix_ms) {
		err = CM_ETIMEDOUT;
		snprintf(detail, sizeof(detail),
		    "deadline passed before %s ran", c->method->name);
	} else if ((c->input = protobuf_c_message_unpack(c->method->input,
	                NULL, c->req->payload.len, c->req->payload.data)) ==
	    NULL) {
		err = CM_EINVAL;
		snprintf(detail, sizeof(detail), "undecodable %s payload",
		    c->method->name);
	}
	if (err != CM_OK) {
		reject(srv, err);
		ctx_reply(c, response_msg(err, detail, rid, NULL, 0));
		return;
	}
	memset(&c->call, 0, sizeof(c->call));
	c->call.request_id  = rid;
	c->call.deadline_ms = c->req->deadline_unix_ms;
	c->call.status      = CM_OK;
	ctx_invoke(c, c->state, c->index, -1);
}

static void
ctx_cb(void *arg)
{
	rpc_ctx *c  = arg;
	int      rv = nng_aio_result(c->aio);

	if (c->sending) {
		c->sending = 0;
		if (rv != 0) {
			nng_msg_free(nng_aio_get_msg(c->aio));
		}
		if (rv == NNG_ECLOSED || rv == NNG_ECANCELED ||
		    atomic_load(&c->srv->stopping)) {
			return;
		}
		nng_ctx_recv(c->ctx, c->aio);
		return;
	}
	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED ||
	    atomic_load(&c->srv->stopping)) {
		if (rv == 0) {
			nng_msg_free(nng_aio_get_msg(c->aio));
		}
		return;
	}
	if (rv != 0) {
		nng_ctx_recv(c->ctx, c->aio);
		return;
	}
	ctx_request(c, nng_aio_get_msg(c->aio));
}

cm_err
cm_rpc_offload(cm_rpc_call *call, int lane)
{
	rpc_ctx  *c  = (rpc_ctx *) ((char *) call - offsetof(rpc_ctx, call));
	call_out *co = call->priv;

	// Only marks the call: ctx_invoke() queues it once the handler has
	// returned, so a lane thread never touches a call whose inline
	// handler is still on the stack.
	if (call->blocking_ok || lane < 0 || lane >= c->srv->cfg.nlanes) {
		return (CM_EINVAL);
	}
	if (atomic_load(&c->srv->stopping)) {
		return (CM_EUNAVAIL);
	}
	co->offload_lane = lane;
	return (CM_OK);
}

// Queues c on a lane: CM_ETOOBIG when its queue is full, CM_EUNAVAIL
// when the server is stopping.
static cm_err
enqueue(rpc_ctx *c, int lane)
{
	rpc_lane *l = &c->srv->lanes[lane];

	pthread_mutex_lock(&l->mu);
	if (l->stop) {
		pthread_mutex_unlock(&l->mu);
		return (CM_EUNAVAIL);
	}
	// Calls wait only while every thread is busy; beyond queue_max of
	// them the lane cannot drain the queue before the callers give up.
	if (l->qlen >= l->queue_max) {
		pthread_mutex_unlock(&l->mu);
		return (CM_ETOOBIG);
	}
	c->next = NULL;
	if (l->qtail != NULL) {
		l->qtail->next = c;
	} else {
		l->qhead = c;
	}
	l->qtail = c;
	l->qlen++;
	pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->mu);
	return (CM_OK);
}

void
cm_rpc_server_lane_stats(cm_rpc_server *srv, int lane, int *busy, int *queued)
{
	rpc_lane *l;

	if (srv == NULL || lane < 0 || lane >= srv->cfg.nlanes) {
		return;
	}
	l = &srv->lanes[lane];
	pthread_mutex_lock(&l->mu);
	if (busy != NULL) {
		*busy = l->busy;
	}
	if (queued != NULL) {
		*queued = l->qlen;
	}
	pthread_mutex_unlock(&l->mu);
}

typedef struct lane_arg {
	rpc_lane *lane;
	int       thread; // 0..nthreads-1
} lane_arg;

static void *
lane_main(void *arg)
{
	lane_arg  la = *(lane_arg *) arg;
	rpc_lane *l  = la.lane;
	int       nice_inc;

	free(arg);
	// Linux keeps a nice value per thread: this lowers only this one.
	nice_inc = l->srv->cfg.lane_nice[l->index];
	if (nice_inc > 0 &&
	    setpriority(PRIO_PROCESS, (id_t) gettid(),
	        getpriority(PRIO_PROCESS, (id_t) gettid()) + nice_inc) != 0) {
		cm_warn(NULL, "lane %d: cannot lower priority", l->index);
	}
	pthread_mutex_lock(&l->mu);
	for (;;) {
		rpc_ctx *c;

		while (l->qhead == NULL && !l->stop) {
			pthread_cond_wait(&l->cv, &l->mu);
		}
		if (l->stop) {
			break;
		}
		c        = l->qhead;
		l->qhead = c->next;
		if (l->qhead == NULL) {
			l->qtail = NULL;
		}
		l->qlen--;
		l->busy++;
		pthread_mutex_unlock(&l->mu);

		if (c->call.deadline_ms != 0 &&
		    cm_now_ms() >= c->call.deadline_ms) {
			ctx_reply(c,
			    response_msg(CM_ETIMEDOUT,
			        "deadline passed while queued",
			        c->call.request_id, NULL, 0));
		} else {
			c->call.status    = CM_OK;
			c->call.detail[0] = '\0';
			ctx_invoke(c, l->state[la.thread], l->base + la.thread,
			    l->index);
		}
		pthread_mutex_lock(&l->mu);
		l->busy--;
	}
	pthread_mutex_unlock(&l->mu);
	return (NULL);
}

static void
server_free(cm_rpc_server *srv)
{
	// Order matters with nng 1.5.2, which crashes when a socket closes
	// under an operation in progress: stop receiving, let the lane
	// threads finish their call (they may still send its reply), stop
	// every context's aio (waits for its callback), and only then close
	// the socket.
	atomic_store(&srv->stopping, 1);
	for (int l = 0; l < srv->cfg.nlanes; l++) {
		rpc_lane *lane = &srv->lanes[l];

		pthread_mutex_lock(&lane->mu);
		lane->stop = 1;
		pthread_cond_broadcast(&lane->cv);
		pthread_mutex_unlock(&lane->mu);
		for (int t = 0; t < lane->nstarted; t++) {
			pthread_join(lane->threads[t], NULL);
		}
	}
	for (int i = 0; i < srv->cfg.nworkers; i++) {
		if (srv->ctxs[i].aio != NULL) {
			nng_aio_stop(srv->ctxs[i].aio);
		}
	}
	nng_close(srv->sock);
	for (int i = 0; i < srv->cfg.nworkers; i++) {
		rpc_ctx *c = &srv->ctxs[i];

		// Calls still queued for a lane were never answered.
		protobuf_c_message_free_unpacked(c->input, NULL);
		threadgate__rpc__v1__request__free_unpacked(c->req, NULL);
		if (c->aio != NULL) {
			nng_aio_free(c->aio);
		}
		if (c->state != NULL && srv->cfg.worker_fini != NULL) {
			srv->cfg.worker_fini(srv->cfg.arg, c->state);
		}
	}
	for (int l = 0; l < srv->cfg.nlanes; l++) {
		rpc_lane *lane = &srv->lanes[l];

		for (int t = 0; t < lane->nthreads; t++) {
			if (lane->state[t] != NULL &&
			    srv->cfg.worker_fini != NULL) {
				srv->cfg.worker_fini(
				    srv->cfg.arg, lane->state[t]);
			}
		}
		pthread_mutex_destroy(&lane->mu);
		pthread_cond_destroy(&lane->cv);
		free(lane->state);
		free(lane->threads);
	}
	free(srv->ctxs);
	free(srv);
}

// Runs worker_init for the state of index; on failure sets *err.
static void *
state_init(const cm_rpc_server_config *cfg, int index, cm_err *err)
{
	if (*err != CM_OK || cfg->worker_init == NULL) {
		return (NULL);
	}
	return (cfg->worker_init(cfg->arg, index, err));
}

cm_err
cm_rpc_server_start(const cm_rpc_server_config *cfg, cm_rpc_server **out)
{
	cm_rpc_server *srv;
	cm_err         err   = CM_OK;
	int            index = 0;
	int            rv;

	if (cfg == NULL || cfg->url == NULL || cfg->service == NULL ||
	    cfg->nworkers < 1 || cfg->nworkers > CM_RPC_MAX_WORKERS ||
	    cfg->nlanes < 0 || cfg->nlanes > CM_RPC_MAX_LANES) {
		return (CM_EINVAL);
	}
	for (int l = 0; l < cfg->nlanes; l++) {
		if (cfg->lane_threads[l] < 1 ||
		    cfg->lane_threads[l] > CM_RPC_MAX_WORKERS ||
		    cfg->lane_queue[l] < 0 || cfg->lane_nice[l] < 0 ||
		    cfg->lane_nice[l] > 19) {
			return (CM_EINVAL);
		}
	}
	srv       = cm_xcalloc(1, sizeof(*srv));
	srv->cfg  = *cfg;
	srv->ctxs = cm_xcalloc((size_t) cfg->nworkers, sizeof(rpc_ctx));
	atomic_init(&srv->stopping, 0);

	// Worker states first, in the documented index order: a failing
	// worker_init aborts before anything listens.
	for (int i = 0; i < cfg->nworkers; i++) {
		srv->ctxs[i].state = state_init(cfg, index++, &err);
	}
	for (int l = 0; l < cfg->nlanes; l++) {
		rpc_lane *lane = &srv->lanes[l];

		lane->srv       = srv;
		lane->index     = l;
		lane->nthreads  = cfg->lane_threads[l];
		lane->queue_max = cfg->lane_queue[l] > 0 ? cfg->lane_queue[l]
		                                         : cfg->nworkers;
		lane->base      = index;
		lane->state =
		    cm_xcalloc((size_t) lane->nthreads, sizeof(void *));
		lane->threads =
		    cm_xcalloc((size_t) lane->nthreads, sizeof(pthread_t));
		pthread_mutex_init(&lane->mu, NULL);
		pthread_cond_init(&lane->cv, NULL);
		for (int t = 0; t < lane->nthreads; t++) {
			lane->state[t] = state_init(cfg, index++, &err);
		}
	}
	if (err != CM_OK) {
		goto fail;
	}
	if ((rv = nng_rep0_open(&srv->sock)) != 0) {
		err = cm_err_from_nng(rv);
		goto fail;
	}
	nng_socket_set_size(srv->sock, NNG_OPT_RECVMAXSZ, CM_RPC_MAX_MSG);
	if (strncmp(cfg->url, "ipc://", 6) == 0) {
		// A stale socket file from a crashed run would make listen
		// fail; nobody else owns our path.
		(void) unlink(cfg->url + 6);
	}
	if ((rv = nng_listen(srv->sock, cfg->url, NULL, 0)) != 0) {
		cm_error(NULL, "cannot listen on %s: %s", cfg->url,
		    nng_strerror(rv));
		err = (rv == NNG_EADDRINVAL || rv == NNG_EINVAL ||
		          rv == NNG_ENOTSUP)
		    ? CM_EINVAL
		    : CM_EUNAVAIL;
		goto fail;
	}
	for (int i = 0; i < cfg->nworkers; i++) {
		rpc_ctx *c = &srv->ctxs[i];

		c->srv   = srv;
		c->index = i;
		if ((rv = nng_ctx_open(&c->ctx, srv->sock)) != 0 ||
		    (rv = nng_aio_alloc(&c->aio, ctx_cb, c)) != 0) {
			err = cm_err_from_nng(rv);
			goto fail;
		}
	}
	for (int l = 0; l < cfg->nlanes; l++) {
		rpc_lane *lane = &srv->lanes[l];

		for (int t = 0; t < lane->nthreads; t++) {
			lane_arg *la = cm_xmalloc(sizeof(*la));

			la->lane   = lane;
			la->thread = t;
			if (pthread_create(
			        &lane->threads[t], NULL, lane_main, la) != 0) {
				free(la);
				err = CM_EINTERNAL;
				goto fail;
			}
			lane->nstarted++;
		}
	}
	for (int i = 0; i < cfg->nworkers; i++) {
		nng_ctx_recv(srv->ctxs[i].ctx, srv->ctxs[i].aio);
	}
	*out = srv;
	return (CM_OK);

fail:
	server_free(srv);
	return (err);
}

void
cm_rpc_server_stop(cm_rpc_server *srv)
{
	if (srv == NULL) {
		return;
	}
	server_free(srv);
}

// ---------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------

// Internal completion: raw reply payload (valid during the call only).
typedef void (*raw_done_fn)(void *arg, cm_err status, const char *detail,
    const uint8_t *payload, size_t len);

typedef enum { SLOT_IDLE, SLOT_SEND, SLOT_RECV } slot_state;

typedef struct rpc_slot rpc_slot;
struct rpc_slot {
	cm_rpc_client *c;
	nng_ctx        ctx;
	nng_aio       *aio;
	slot_state     state;
	int64_t        deadline_mono; // monotonic ms
	raw_done_fn    done;
	void          *arg;
	rpc_slot      *next; // free list
};

struct cm_rpc_client {
	nng_socket      sock;
	nng_dialer      dialer;
	pthread_mutex_t mu;
	rpc_slot       *free_slots;
	rpc_slot      **all; // every slot ever made, for close
	size_t          nall;
	size_t          capall;
	atomic_int      npipes; // connected peers
	int             closing;
};

static void
pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	cm_rpc_client *c = arg;

	if (ev == NNG_PIPE_EV_ADD_POST) {
		atomic_fetch_add(&c->npipes, 1);
	} else if (ev == NNG_PIPE_EV_REM_POST) {
		atomic_fetch_sub(&c->npipes, 1);
	}
}

static void slot_cb(void *arg);

static rpc_slot *
slot_get(cm_rpc_client *c)
{
	rpc_slot *s;

	pthread_mutex_lock(&c->mu);
	if (c->closing) {
		pthread_mutex_unlock(&c->mu);
		return (NULL);
	}
	if ((s = c->free_slots) != NULL) {
		c->free_slots = s->next;
		pthread_mutex_unlock(&c->mu);
		return (s);
	}
	s    = cm_xcalloc(1, sizeof(*s));
	s->c = c;
	if (nng_ctx_open(&s->ctx, c->sock) != 0 ||
	    nng_aio_alloc(&s->aio, slot_cb, s) != 0) {
		pthread_mutex_unlock(&c->mu);
		free(s);
		return (NULL);
	}
	if (c->nall == c->capall) {
		c->capall = c->capall ? 2 * c->capall : 16;
		c->all    = cm_xrealloc(c->all, c->capall * sizeof(*c->all));
	}
	c->all[c->nall++] = s;
	pthread_mutex_unlock(&c->mu);
	return (s);
}

static void
slot_put(rpc_slot *s)
{
	cm_rpc_client *c = s->c;

	s->state = SLOT_IDLE;
	s->done  = NULL;
	s->arg   = NULL;
	pthread_mutex_lock(&c->mu);
	s->next       = c->free_slots;
	c->free_slots = s;
	pthread_mutex_unlock(&c->mu);
}

// Ends a call: returns the slot first (so the callback may start a new
// call), then reports.
static void
slot_finish(rpc_slot *s, cm_err st, const char *detail, const uint8_t *payload,
    size_t len)
{
	raw_done_fn done = s->done;
	void       *arg  = s->arg;

	slot_put(s);
	done(arg, st, detail != NULL ? detail : cm_strerror(st), payload, len);
}

static void
slot_cb(void *arg)
{
	rpc_slot     *s  = arg;
	int           rv = nng_aio_result(s->aio);
	nng_msg      *msg;
	rpc_response *resp;
	int64_t       left;

	if (s->state == SLOT_SEND) {
		if (rv != 0) {
			// A REQ send completes when a connected peer takes the
			// message; timing out here means no peer was there:
			// the service is down or unreachable, not slow.
			nng_msg_free(nng_aio_get_msg(s->aio));
			slot_finish(s,
			    rv == NNG_ETIMEDOUT ? CM_EUNAVAIL
			                        : cm_err_from_nng(rv),
			    rv == NNG_ETIMEDOUT ? "upstream not reachable"
			                        : nng_strerror(rv),
			    NULL, 0);
			return;
		}
		left = s->deadline_mono - cm_mono_ms();
		if (left <= 0) {
			slot_finish(s, CM_ETIMEDOUT,
			    "upstream deadline passed", NULL, 0);
			return;
		}
		s->state = SLOT_RECV;
		nng_aio_set_timeout(s->aio, (nng_duration) left);
		nng_ctx_recv(s->ctx, s->aio);
		return;
	}
	if (s->state != SLOT_RECV) {
		return;
	}
	if (rv != 0) {
		slot_finish(s, cm_err_from_nng(rv),
		    rv == NNG_ETIMEDOUT ? "upstream did not answer in time"
		                        : nng_strerror(rv),
		    NULL, 0);
		return;
	}
	msg  = nng_aio_get_msg(s->aio);
	resp = threadgate__rpc__v1__response__unpack(
	    NULL, nng_msg_len(msg), nng_msg_body(msg));
	nng_msg_free(msg);
	if (resp == NULL || !cm_err_valid((int) resp->status)) {
		threadgate__rpc__v1__response__free_unpacked(resp, NULL);
		slot_finish(s, CM_EINTERNAL, "undecodable reply from upstream",
		    NULL, 0);
		return;
	}
	{
		char detail[CM_RPC_DETAIL_MAX];

		snprintf(detail, sizeof(detail), "%s",
		    resp->detail[0] != '\0'
		        ? resp->detail
		        : cm_strerror((cm_err) resp->status));
		slot_finish(s, (cm_err) resp->status, detail,
		    resp->payload.data, resp->payload.len);
	}
	threadgate__rpc__v1__response__free_unpacked(resp, NULL);
}

cm_err
cm_rpc_client_open(const char *url, cm_rpc_client **out)
{
	cm_rpc_client *c;
	int            rv;

	if (url == NULL) {
		return (CM_EINVAL);
	}
	c = cm_xcalloc(1, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);
	atomic_init(&c->npipes, 0);
	if ((rv = nng_req0_open(&c->sock)) != 0) {
		free(c);
		return (cm_err_from_nng(rv));
	}
	nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, CM_RPC_MAX_MSG);
	nng_socket_set_ms(
	    c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, RPC_RECONNECT_MIN_MS);
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, RPC_RECONNECT_MAX_MS);
	nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, pipe_event, c);
	nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, pipe_event, c);
	if ((rv = nng_dial(c->sock, url, &c->dialer, NNG_FLAG_NONBLOCK)) !=
	    0) {
		cm_error(NULL, "cannot dial %s: %s", url, nng_strerror(rv));
		nng_close(c->sock);
		pthread_mutex_destroy(&c->mu);
		free(c);
		return (CM_EINVAL);
	}
	*out = c;
	return (CM_OK);
}

void
cm_rpc_client_close(cm_rpc_client *c)
{
	if (c == NULL) {
		return;
	}
	pthread_mutex_lock(&c->mu);
	c->closing = 1;
	pthread_mutex_unlock(&c->mu);
	// Stop every slot's aio before closing the socket (as the server
	// does): nng_aio_stop() completes a call in flight with
	// NNG_ECANCELED (reported as CM_EUNAVAIL) and makes any later
	// operation on that aio fail, so no callback can start a receive on a
	// closing socket (nng 1.5.2 crashes then). No new slot is made once
	// closing is set.
	for (size_t i = 0; i < c->nall; i++) {
		nng_aio_stop(c->all[i]->aio);
	}
	nng_close(c->sock);
	for (size_t i = 0; i < c->nall; i++) {
		nng_aio_free(c->all[i]->aio);
		free(c->all[i]);
	}
	free(c->all);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static cm_err
start_raw(cm_rpc_client *c, const char *method, const char *request_id,
    int64_t deadline_unix_ms, const uint8_t *payload, size_t payload_len,
    int timeout_ms, raw_done_fn done, void *arg)
{
	rpc_request req = THREADGATE__RPC__V1__REQUEST__INIT;
	rpc_slot   *s;
	nng_msg    *m = NULL;
	size_t      n;
	int         wait_ms = timeout_ms;

	if (method == NULL || strlen(method) > CM_RPC_METHOD_MAX ||
	    (request_id != NULL && strlen(request_id) > CM_RID_MAX) ||
	    timeout_ms <= 0) {
		return (CM_EINVAL);
	}
	req.method           = (char *) method;
	req.request_id       = (char *) (request_id != NULL ? request_id : "");
	req.deadline_unix_ms = deadline_unix_ms;
	req.payload.data     = (uint8_t *) payload;
	req.payload.len      = payload_len;
	n = threadgate__rpc__v1__request__get_packed_size(&req);
	if (nng_msg_alloc(&m, n) != 0) {
		return (CM_EINTERNAL);
	}
	threadgate__rpc__v1__request__pack(&req, nng_msg_body(m));
	if ((s = slot_get(c)) == NULL) {
		nng_msg_free(m);
		return (CM_EINTERNAL);
	}
	s->done          = done;
	s->arg           = arg;
	s->deadline_mono = cm_mono_ms() + timeout_ms;
	s->state         = SLOT_SEND;
	if (atomic_load(&c->npipes) == 0 &&
	    wait_ms > RPC_UNCONNECTED_WAIT_MS) {
		wait_ms = RPC_UNCONNECTED_WAIT_MS;
	}
	nng_aio_set_msg(s->aio, m);
	nng_aio_set_timeout(s->aio, (nng_duration) wait_ms);
	nng_ctx_send(s->ctx, s->aio);
	return (CM_OK);
}

// Adapter from the raw completion to the typed one.
typedef struct typed_call {
	const ProtobufCMessageDescriptor *desc;
	cm_rpc_done_fn                    done;
	void                             *arg;
} typed_call;

static void
typed_done(void *arg, cm_err st, const char *detail, const uint8_t *payload,
    size_t len)
{
	typed_call        tc    = *(typed_call *) arg;
	ProtobufCMessage *reply = NULL;

	free(arg);
	if (st == CM_OK) {
		reply = protobuf_c_message_unpack(tc.desc, NULL, len, payload);
		if (reply == NULL) {
			st     = CM_EINTERNAL;
			detail = "undecodable reply payload from upstream";
		}
	}
	tc.done(tc.arg, st, detail, reply);
}

static uint8_t *
pack_msg(const ProtobufCMessage *req, size_t *len)
{
	uint8_t *buf;

	*len = protobuf_c_message_get_packed_size(req);
	buf  = cm_xmalloc(*len);
	protobuf_c_message_pack(req, buf);
	return (buf);
}

cm_err
cm_rpc_call_async(cm_rpc_client *c, const char *method, const char *request_id,
    int timeout_ms, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *reply_desc, cm_rpc_done_fn done,
    void *arg)
{
	typed_call *tc;
	uint8_t    *buf;
	size_t      len;
	cm_err      err;

	if (c == NULL || req == NULL || reply_desc == NULL || done == NULL) {
		return (CM_EINVAL);
	}
	buf      = pack_msg(req, &len);
	tc       = cm_xmalloc(sizeof(*tc));
	tc->desc = reply_desc;
	tc->done = done;
	tc->arg  = arg;
	err = start_raw(c, method, request_id, cm_now_ms() + timeout_ms, buf,
	    len, timeout_ms, typed_done, tc);
	free(buf);
	if (err != CM_OK) {
		free(tc);
	}
	return (err);
}

// Blocking waiter used by the sync forms.
typedef struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	int             finished;
	cm_err          st;
	char            detail[CM_RPC_DETAIL_MAX];
	uint8_t        *payload;
	size_t          len;
} waiter;

static void
waiter_done(void *arg, cm_err st, const char *detail, const uint8_t *payload,
    size_t len)
{
	waiter *w = arg;

	pthread_mutex_lock(&w->mu);
	w->st = st;
	snprintf(w->detail, sizeof(w->detail), "%s", detail);
	if (st == CM_OK) {
		w->payload = cm_xmalloc(len);
		if (len > 0) {
			memcpy(w->payload, payload, len);
		}
		w->len = len;
	}
	w->finished = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static cm_err
call_wait(cm_rpc_client *c, const char *method, const char *rid,
    int64_t deadline, const uint8_t *payload, size_t len, int timeout_ms,
    uint8_t **out, size_t *out_len, char *detail, size_t detail_len)
{
	waiter w;
	cm_err err;

	memset(&w, 0, sizeof(w));
	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	err = start_raw(c, method, rid, deadline, payload, len, timeout_ms,
	    waiter_done, &w);
	if (err == CM_OK) {
		pthread_mutex_lock(&w.mu);
		while (!w.finished) {
			pthread_cond_wait(&w.cv, &w.mu);
		}
		pthread_mutex_unlock(&w.mu);
		err = w.st;
	} else {
		snprintf(w.detail, sizeof(w.detail), "%s", cm_strerror(err));
	}
	pthread_mutex_destroy(&w.mu);
	pthread_cond_destroy(&w.cv);
	if (err != CM_OK) {
		if (detail != NULL && detail_len > 0) {
			snprintf(detail, detail_len, "%s", w.detail);
		}
		free(w.payload);
		return (err);
	}
	*out     = w.payload;
	*out_len = w.len;
	return (CM_OK);
}

cm_err
cm_rpc_call_sync(cm_rpc_client *c, const char *method, const char *request_id,
    int timeout_ms, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply_out,
    char *detail, size_t detail_len)
{
	ProtobufCMessage *reply;
	uint8_t          *buf;
	uint8_t          *payload = NULL;
	size_t            len;
	size_t            plen = 0;
	cm_err            err;

	if (c == NULL || req == NULL || reply_desc == NULL ||
	    reply_out == NULL) {
		return (CM_EINVAL);
	}
	buf = pack_msg(req, &len);
	err = call_wait(c, method, request_id, cm_now_ms() + timeout_ms, buf,
	    len, timeout_ms, &payload, &plen, detail, detail_len);
	free(buf);
	if (err != CM_OK) {
		return (err);
	}
	reply = protobuf_c_message_unpack(reply_desc, NULL, plen, payload);
	free(payload);
	if (reply == NULL) {
		if (detail != NULL && detail_len > 0) {
			snprintf(
			    detail, detail_len, "undecodable reply payload");
		}
		return (CM_EINTERNAL);
	}
	*reply_out = reply;
	return (CM_OK);
}

cm_err
cm_rpc_call_raw_sync(cm_rpc_client *c, const char *method,
    const char *request_id, int64_t deadline_unix_ms, const void *payload,
    size_t payload_len, int timeout_ms, void **payload_out,
    size_t *payload_len_out, char *detail, size_t detail_len)
{
	uint8_t *out = NULL;
	size_t   len = 0;
	cm_err   err;

	if (c == NULL || payload_out == NULL || payload_len_out == NULL) {
		return (CM_EINVAL);
	}
	err = call_wait(c, method, request_id, deadline_unix_ms, payload,
	    payload_len, timeout_ms, &out, &len, detail, detail_len);
	if (err != CM_OK) {
		return (err);
	}
	*payload_out     = out;
	*payload_len_out = len;
	return (CM_OK);
}
