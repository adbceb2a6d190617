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
// The client half is in rpc_client.c.
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

#include "common/log.h"
#include "common/rpc.h"
#include "common/xalloc.h"
#include "proto/rpc.pb-c.h"

typedef Threadgate__Rpc__V1__Request  rpc_request;
typedef Threadgate__Rpc__V1__Response rpc_response;

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
