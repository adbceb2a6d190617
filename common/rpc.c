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
#include "common/metrics.h"
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
	// Observability of the call in progress (see obs_begin()).
	int64_t t0_us; // monotonic start
	size_t  midx;  // method index for the metrics tables
	char    tp[CM_TRACEPARENT_LEN + 1];
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

// The rpc-layer metrics of one server: every series is looked up once at
// start (obs_init()), so recording is a few relaxed atomic adds.
typedef enum {
	OBS_MALFORMED = 0,
	OBS_UNKNOWN_METHOD,
	OBS_DEADLINE,
	OBS_N_
} obs_reason;

typedef struct rpc_obs {
	size_t         nmethods; // service methods, then Health, then unknown
	cm_counter   **requests; // [nmethods * CM_ERR_COUNT]
	cm_histogram **duration; // [nmethods]
	cm_counter    *rejected[OBS_N_];
	cm_gauge      *in_flight;
	cm_gauge      *serving;
} rpc_obs;

// The health state the Health rpc answers from (see health_main()).
typedef struct rpc_health {
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	pthread_t       thread;
	int             running; // the thread was started
	int             stop;
	int             status; // a ServingStatus value
	char            detail[CM_RPC_DETAIL_MAX];
} rpc_health;

struct cm_rpc_server {
	cm_rpc_server_config cfg;
	nng_socket           sock;
	rpc_ctx             *ctxs;
	rpc_lane             lanes[CM_RPC_MAX_LANES];
	atomic_int           stopping;
	rpc_obs              obs;
	rpc_health           health;
	cm_metrics_http
	    *mh; // METRICS_ADDR listener, when this server started it
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

// ---------------------------------------------------------------------
// Observability: rpc metrics, the Health rpc, trace context
// ---------------------------------------------------------------------

static const char *const obs_reason_names[OBS_N_] = { "malformed",
	"unknown_method", "deadline" };

static int64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
}

static const char *
obs_method_name(const cm_rpc_server *srv, size_t m)
{
	const ProtobufCServiceDescriptor *sd = srv->cfg.service->descriptor;

	if (m < sd->n_methods) {
		return (sd->methods[m].name);
	}
	return (m == sd->n_methods ? CM_RPC_HEALTH_METHOD : "unknown");
}

// Registers the server's families and looks every series up once.
static void
obs_init(cm_rpc_server *srv)
{
	static const char *const l_req[] = { "service", "method", "status",
		NULL };
	static const char *const l_dur[] = { "service", "method", NULL };
	static const char *const l_rej[] = { "service", "reason", NULL };
	static const char *const l_svc[] = { "service", NULL };
	const char *svc = srv->cfg.service->descriptor->short_name;
	cm_metrics *r =
	    srv->cfg.metrics != NULL ? srv->cfg.metrics : cm_metrics_default();
	rpc_obs       *o        = &srv->obs;
	cm_metric_desc d_req    = { 0 };
	cm_metric_desc d_dur    = { 0 };
	cm_metric_desc d_rej    = { 0 };
	cm_metric_desc d_flight = { 0 };
	cm_metric_desc d_serve  = { 0 };
	cm_mfamily    *f_req, *f_dur, *f_rej;

	d_req.name      = "threadgate_rpc_server_requests_total";
	d_req.help      = "Rpc requests answered, by method and status.";
	d_req.type      = CM_METRIC_COUNTER;
	d_req.labels    = l_req;
	d_req.sparse    = 1;
	d_dur.name      = "threadgate_rpc_server_request_duration_seconds";
	d_dur.help      = "Time from receiving an rpc request to sending its "
	                  "reply (queueing included), by method.";
	d_dur.type      = CM_METRIC_HISTOGRAM;
	d_dur.labels    = l_dur;
	d_dur.unit      = 1e-6;
	d_dur.sparse    = 1;
	d_rej.name      = "threadgate_rpc_server_rejected_total";
	d_rej.help      = "Rpc requests refused before any handler ran: "
	                  "undecodable, unknown method, or deadline already "
	                  "passed (also while queued).";
	d_rej.type      = CM_METRIC_COUNTER;
	d_rej.labels    = l_rej;
	d_flight.name   = "threadgate_rpc_server_in_flight";
	d_flight.help   = "Rpc requests received and not yet answered.";
	d_flight.type   = CM_METRIC_GAUGE;
	d_flight.labels = l_svc;
	d_serve.name    = "threadgate_rpc_server_serving";
	d_serve.help    = "1 when the last health check said serving, else 0.";
	d_serve.type    = CM_METRIC_GAUGE;
	d_serve.labels  = l_svc;

	f_req       = cm_metrics_family(r, &d_req);
	f_dur       = cm_metrics_family(r, &d_dur);
	f_rej       = cm_metrics_family(r, &d_rej);
	o->nmethods = srv->cfg.service->descriptor->n_methods + 2;
	o->requests =
	    cm_xcalloc(o->nmethods * CM_ERR_COUNT, sizeof(cm_counter *));
	o->duration = cm_xcalloc(o->nmethods, sizeof(cm_histogram *));
	for (size_t m = 0; m < o->nmethods; m++) {
		const char *v[3] = { svc, obs_method_name(srv, m), NULL };

		for (int st = 0; st < CM_ERR_COUNT; st++) {
			v[2] = cm_err_label((cm_err) st);
			o->requests[m * CM_ERR_COUNT + (size_t) st] =
			    cm_counter_get(f_req, v);
		}
		o->duration[m] = cm_histogram_get(f_dur, v);
	}
	for (int i = 0; i < OBS_N_; i++) {
		const char *v[2] = { svc, obs_reason_names[i] };
		o->rejected[i]   = cm_counter_get(f_rej, v);
	}
	o->in_flight = cm_gauge_get(cm_metrics_family(r, &d_flight), &svc);
	o->serving   = cm_gauge_get(cm_metrics_family(r, &d_serve), &svc);
}

static void
obs_fini(cm_rpc_server *srv)
{
	free(srv->obs.requests);
	free(srv->obs.duration);
}

// A request arrived on c: start its clock. The method is "unknown" until
// the envelope names a known one.
static void
obs_begin(rpc_ctx *c)
{
	c->t0_us = mono_us();
	c->midx  = c->srv->obs.nmethods - 1;
	c->tp[0] = '\0';
	cm_gauge_add(c->srv->obs.in_flight, 1);
}

// The request on c is answered with st (rejected: refused before any
// handler ran). Call before ctx_reply(): rid may point into the request.
static void
obs_end(rpc_ctx *c, const char *rid, cm_err st, int rejected)
{
	rpc_obs *o  = &c->srv->obs;
	int64_t  us = mono_us() - c->t0_us;

	if (!cm_err_valid((int) st)) {
		st = CM_EINTERNAL;
	}
	cm_counter_inc(o->requests[c->midx * CM_ERR_COUNT + (size_t) st]);
	cm_histogram_observe(o->duration[c->midx], (uint64_t) us);
	if (rejected) {
		cm_counter_inc(
		    o->rejected[st == CM_ENOTSUP ? OBS_UNKNOWN_METHOD
		            : st == CM_ETIMEDOUT ? OBS_DEADLINE
		                                 : OBS_MALFORMED]);
	}
	cm_gauge_add(o->in_flight, -1);
	if (cm_log_enabled(CM_LOG_DEBUG)) {
		cm_log_ctx_set(rid, c->tp);
		cm_debug(rid, "rpc %s %s %lldus",
		    obs_method_name(c->srv, c->midx), cm_err_label(st),
		    (long long) us);
		cm_log_ctx_clear();
	}
}

// Keeps the envelope's traceparent when it is valid (else none).
static void
obs_trace(rpc_ctx *c)
{
	if (c->req->traceparent != NULL && c->req->traceparent[0] != '\0') {
		(void) cm_traceparent_parse(c->req->traceparent, c->tp);
	}
}

static void
health_set(cm_rpc_server *srv, int status, const char *detail)
{
	rpc_health *h = &srv->health;

	pthread_mutex_lock(&h->mu);
	h->status = status;
	snprintf(
	    h->detail, sizeof(h->detail), "%s", detail != NULL ? detail : "");
	pthread_mutex_unlock(&h->mu);
	cm_gauge_set(srv->obs.serving,
	    status ==
	        THREADGATE__RPC__V1__SERVING_STATUS__SERVING_STATUS_SERVING);
}

// The health thread: runs the service's check at start and then every
// interval, and keeps the result for the Health rpc.
static void *
health_main(void *arg)
{
	cm_rpc_server *srv   = arg;
	rpc_health    *h     = &srv->health;
	int            last  = -1;
	int64_t        every = srv->cfg.health_interval_ms > 0
	           ? srv->cfg.health_interval_ms
	           : CM_RPC_HEALTH_INTERVAL_MS;

	pthread_mutex_lock(&h->mu);
	while (!h->stop) {
		char            detail[CM_RPC_DETAIL_MAX] = "";
		struct timespec ts;
		int             ok;

		pthread_mutex_unlock(&h->mu);
		ok =
		    srv->cfg.health(srv->cfg.arg, detail, sizeof(detail)) != 0;
		if (!ok && detail[0] == '\0') {
			snprintf(
			    detail, sizeof(detail), "health check failed");
		}
		if (ok != last) {
			if (ok) {
				cm_info(NULL, "health: serving");
			} else {
				cm_warn(
				    NULL, "health: not serving: %s", detail);
			}
			last = ok;
		}
		pthread_mutex_lock(&h->mu);
		if (h->stop) {
			break;
		}
		pthread_mutex_unlock(&h->mu);
		health_set(srv,
		    ok ? THREADGATE__RPC__V1__SERVING_STATUS__SERVING_STATUS_SERVING
		       : THREADGATE__RPC__V1__SERVING_STATUS__SERVING_STATUS_NOT_SERVING,
		    ok ? "" : detail);
		pthread_mutex_lock(&h->mu);
		cm_timespec_in(&ts, CLOCK_MONOTONIC, every);
		while (!h->stop &&
		    pthread_cond_timedwait(&h->cv, &h->mu, &ts) == 0) {
			// woken early: re-check stop, keep the deadline
		}
	}
	pthread_mutex_unlock(&h->mu);
	return (NULL);
}

static void
health_init(cm_rpc_server *srv)
{
	rpc_health        *h = &srv->health;
	pthread_condattr_t ca;

	pthread_mutex_init(&h->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (srv->cfg.health == NULL) {
		// No check: serving whenever the server runs.
		health_set(srv,
		    THREADGATE__RPC__V1__SERVING_STATUS__SERVING_STATUS_SERVING,
		    "");
	} else {
		health_set(srv,
		    THREADGATE__RPC__V1__SERVING_STATUS__SERVING_STATUS_UNKNOWN,
		    "starting");
	}
}

static cm_err
health_start(cm_rpc_server *srv)
{
	if (srv->cfg.health == NULL) {
		return (CM_OK);
	}
	if (pthread_create(&srv->health.thread, NULL, health_main, srv) != 0) {
		return (CM_EINTERNAL);
	}
	srv->health.running = 1;
	return (CM_OK);
}

// Stops the health thread (if any); from now on Health says NOT_SERVING.
static void
health_stop(cm_rpc_server *srv)
{
	rpc_health *h = &srv->health;

	pthread_mutex_lock(&h->mu);
	h->stop = 1;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
	if (h->running) {
		pthread_join(h->thread, NULL);
		h->running = 0;
	}
	health_set(srv,
	    THREADGATE__RPC__V1__SERVING_STATUS__SERVING_STATUS_NOT_SERVING,
	    "shutting down");
}

static void
health_fini(cm_rpc_server *srv)
{
	pthread_cond_destroy(&srv->health.cv);
	pthread_mutex_destroy(&srv->health.mu);
}

void
cm_rpc_server_set_serving(cm_rpc_server *srv, int serving, const char *detail)
{
	if (srv == NULL) {
		return;
	}
	health_set(srv,
	    serving
	        ? THREADGATE__RPC__V1__SERVING_STATUS__SERVING_STATUS_SERVING
	        : THREADGATE__RPC__V1__SERVING_STATUS__SERVING_STATUS_NOT_SERVING,
	    serving ? "" : (detail != NULL ? detail : "not serving"));
}

// Answers a Health request on c from the last check's result.
static void
health_reply(rpc_ctx *c, const char *rid)
{
	cm_rpc_server                   *srv = c->srv;
	Threadgate__Rpc__V1__HealthReply r =
	    THREADGATE__RPC__V1__HEALTH_REPLY__INIT;
	char     detail[CM_RPC_DETAIL_MAX];
	uint8_t *buf;
	size_t   len;
	nng_msg *m;

	pthread_mutex_lock(&srv->health.mu);
	r.status = (Threadgate__Rpc__V1__ServingStatus) srv->health.status;
	memcpy(detail, srv->health.detail, sizeof(detail));
	pthread_mutex_unlock(&srv->health.mu);
	r.detail  = detail;
	r.service = (char *) srv->cfg.service->descriptor->name;
	r.version = (char *) TG_VERSION;
	len       = threadgate__rpc__v1__health_reply__get_packed_size(&r);
	buf       = cm_xmalloc(len);
	threadgate__rpc__v1__health_reply__pack(&r, buf);
	c->midx = srv->cfg.service->descriptor->n_methods;
	obs_end(c, rid, CM_OK, 0);
	m = response_msg(CM_OK, "", rid, buf, len);
	free(buf);
	ctx_reply(c, m);
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
	cm_log_ctx_set(c->call.request_id, c->call.traceparent);
	svc->invoke(svc, (unsigned) (c->method - svc->descriptor->methods),
	    c->input, handler_closure, &c->call);
	cm_log_ctx_clear();
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
	obs_end(c, c->call.request_id, c->call.status, 0);
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

	obs_begin(c);
	c->req = threadgate__rpc__v1__request__unpack(
	    NULL, nng_msg_len(msg), nng_msg_body(msg));
	nng_msg_free(msg);
	if (c->req == NULL) {
		reject(srv, CM_EINVAL);
		obs_end(c, "", CM_EINVAL, 1);
		ctx_reply(c,
		    response_msg(CM_EINVAL, "undecodable request envelope", "",
		        NULL, 0));
		return;
	}
	if (strlen(c->req->request_id) <= CM_RID_MAX) {
		rid = c->req->request_id;
	}
	obs_trace(c);
	if (strcmp(c->req->method, CM_RPC_HEALTH_METHOD) == 0) {
		health_reply(c, rid);
		return;
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
	if (c->method != NULL) {
		c->midx = (size_t) (c->method -
		    srv->cfg.service->descriptor->methods);
	}
	if (err != CM_OK) {
		reject(srv, err);
		obs_end(c, rid, err, 1);
		ctx_reply(c, response_msg(err, detail, rid, NULL, 0));
		return;
	}
	memset(&c->call, 0, sizeof(c->call));
	c->call.request_id  = rid;
	c->call.traceparent = c->tp;
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
			obs_end(c, c->call.request_id, CM_ETIMEDOUT, 1);
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
	health_stop(srv);
	cm_metrics_serve_env_stop(srv->mh);

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
	health_fini(srv);
	obs_fini(srv);
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
	obs_init(srv);
	health_init(srv);

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
	err = health_start(srv);
	if (err != CM_OK) {
		goto fail;
	}
	err = cm_metrics_serve_env(cm_log_service(), &srv->mh);
	if (err != CM_OK) {
		goto fail;
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
