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

// Fills resp (payload only with CM_OK); the strings are borrowed.
static void
response_fill(rpc_response *resp, cm_err status, const char *detail,
    const char *rid, const uint8_t *payload, size_t payload_len)
{
	threadgate__rpc__v1__response__init(resp);
	resp->status     = (Threadgate__Rpc__V1__Status) status;
	resp->detail     = (char *) (detail != NULL ? detail : "");
	resp->request_id = (char *) (rid != NULL ? rid : "");
	if (status == CM_OK && payload != NULL) {
		resp->payload.data = (uint8_t *) payload;
		resp->payload.len  = payload_len;
	}
}

// Packs a Response into a new nng message; returns NULL on allocation
// failure.
static nng_msg *
response_msg(cm_err status, const char *detail, const char *rid,
    const uint8_t *payload, size_t payload_len)
{
	rpc_response resp;
	nng_msg     *m = NULL;

	response_fill(&resp, status, detail, rid, payload, payload_len);
	if (nng_msg_alloc(&m,
	        threadgate__rpc__v1__response__get_packed_size(&resp)) != 0) {
		return (NULL);
	}
	threadgate__rpc__v1__response__pack(&resp, nng_msg_body(m));
	return (m);
}

// ---------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------

// One call being handled: a plain request, or one call of a batch. Lives
// in its context (the plain one, or the context's batch array) until
// answered.
typedef struct rpc_ctx rpc_ctx;
typedef struct rpc_job rpc_job;
struct rpc_job {
	rpc_ctx                         *ctx;
	rpc_request                     *req;
	ProtobufCMessage                *input;
	const ProtobufCMethodDescriptor *method;
	cm_rpc_call                      call;
	rpc_job                         *next; // lane queue link
	// Observability of the call in progress (see obs_begin()).
	int64_t t0_us; // monotonic start
	size_t  midx;  // method index for the metrics tables
	char    tp[CM_TRACEPARENT_LEN + 1];
	// A batch call's packed Response, until the batch reply is sent.
	uint8_t *out;
	size_t   outlen;
};

// One REP context: its aio runs the RECV -> (handle) -> SEND state machine
// in nng callbacks. The request being handled lives here until the reply
// is sent: one job, or a batch of them.
struct rpc_ctx {
	cm_rpc_server *srv;
	nng_ctx        ctx;
	nng_aio       *aio;
	void          *state; // worker state from worker_init
	int            index;
	int            sending;
	rpc_job        one;   // a plain request
	rpc_job       *batch; // CM_RPC_BATCH_MAX jobs, from the first batch on
	int            nbatch;
	// Batch calls not answered yet, plus one while they are dispatched:
	// whoever takes it to 0 sends the batch's reply.
	atomic_int pending;
	// Lanes this batch was admitted to (see enqueue()).
	unsigned admitted;
	// While a batch's calls are dispatched: the lanes that got some. A
	// lane's first call wakes one thread; the others queue silently and
	// lane_wake() wakes the threads they need once all are queued - not
	// a wake, and a fight over the lane's lock, per call.
	int      dispatching;
	unsigned woken;
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
	rpc_job        *qhead;
	rpc_job        *qtail;
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

// Frees what the job's request holds.
static void
job_clear(rpc_job *j)
{
	protobuf_c_message_free_unpacked(j->input, NULL);
	threadgate__rpc__v1__request__free_unpacked(j->req, NULL);
	j->input  = NULL;
	j->req    = NULL;
	j->method = NULL;
}

// Sends reply on c (or, when it cannot be allocated, goes back to
// receiving: the client's deadline fires).
static void
ctx_reply(rpc_ctx *c, nng_msg *reply)
{
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

static void batch_reply(rpc_ctx *c);

// Answers job j: a plain request at once; a batch call by keeping its
// packed Response for the batch reply, which the last one sends. rid may
// point into j's request (freed here, after use).
static void
job_answer(rpc_job *j, cm_err st, const char *detail, const char *rid,
    const uint8_t *payload, size_t len)
{
	rpc_ctx *c = j->ctx;
	nng_msg *m;

	if (j == &c->one) {
		m = response_msg(st, detail, rid, payload, len);
		job_clear(j);
		ctx_reply(c, m);
		return;
	}
	{
		rpc_response resp;

		response_fill(&resp, st, detail, rid, payload, len);
		j->outlen =
		    threadgate__rpc__v1__response__get_packed_size(&resp);
		j->out = cm_xmalloc(j->outlen);
		threadgate__rpc__v1__response__pack(&resp, j->out);
	}
	job_clear(j);
	if (atomic_fetch_sub(&c->pending, 1) == 1) {
		batch_reply(c);
	}
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
obs_begin(rpc_job *j)
{
	j->t0_us = mono_us();
	j->midx  = j->ctx->srv->obs.nmethods - 1;
	j->tp[0] = '\0';
	cm_gauge_add(j->ctx->srv->obs.in_flight, 1);
}

// Job j is answered with st (rejected: refused before any handler ran).
// Call before job_answer(): rid may point into the request.
static void
obs_end(rpc_job *j, const char *rid, cm_err st, int rejected)
{
	rpc_obs *o  = &j->ctx->srv->obs;
	int64_t  us = mono_us() - j->t0_us;

	if (!cm_err_valid((int) st)) {
		st = CM_EINTERNAL;
	}
	cm_counter_inc(o->requests[j->midx * CM_ERR_COUNT + (size_t) st]);
	cm_histogram_observe(o->duration[j->midx], (uint64_t) us);
	if (rejected) {
		cm_counter_inc(
		    o->rejected[st == CM_ENOTSUP ? OBS_UNKNOWN_METHOD
		            : st == CM_ETIMEDOUT ? OBS_DEADLINE
		                                 : OBS_MALFORMED]);
	}
	cm_gauge_add(o->in_flight, -1);
	if (cm_log_enabled(CM_LOG_DEBUG)) {
		cm_log_ctx_set(rid, j->tp);
		cm_debug(rid, "rpc %s %s %lldus",
		    obs_method_name(j->ctx->srv, j->midx), cm_err_label(st),
		    (long long) us);
		cm_log_ctx_clear();
	}
}

// Keeps the envelope's traceparent when it is valid (else none).
static void
obs_trace(rpc_job *j)
{
	if (j->req->traceparent != NULL && j->req->traceparent[0] != '\0') {
		(void) cm_traceparent_parse(j->req->traceparent, j->tp);
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

// Answers a Health request (job j) from the last check's result.
static void
health_reply(rpc_job *j, const char *rid)
{
	cm_rpc_server                   *srv = j->ctx->srv;
	Threadgate__Rpc__V1__HealthReply r =
	    THREADGATE__RPC__V1__HEALTH_REPLY__INIT;
	char     detail[CM_RPC_DETAIL_MAX];
	uint8_t *buf;
	size_t   len;

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
	j->midx = srv->cfg.service->descriptor->n_methods;
	obs_end(j, rid, CM_OK, 0);
	job_answer(j, CM_OK, "", rid, buf, len);
	free(buf);
}

static cm_err enqueue(rpc_job *j, int lane);
static void   lane_wake(rpc_lane *l);

// Invokes the handler for job j with the given worker state (on lane, or
// inline when lane is -1) and answers, unless the handler offloaded the
// call.
static void
job_invoke(rpc_job *j, void *state, int index, int lane)
{
	ProtobufCService *svc = j->ctx->srv->cfg.service;
	call_out          co  = { .offload_lane = -1 };

	j->call.worker       = state;
	j->call.worker_index = index;
	j->call.blocking_ok  = (lane >= 0);
	j->call.lane         = lane;
	j->call.priv         = &co;
	cm_log_ctx_set(j->call.request_id, j->call.traceparent);
	svc->invoke(svc, (unsigned) (j->method - svc->descriptor->methods),
	    j->input, handler_closure, &j->call);
	cm_log_ctx_clear();
	if (co.offload_lane >= 0 && !co.called) {
		cm_err err = enqueue(j, co.offload_lane);

		if (err == CM_OK) {
			return; // a lane thread answers
		}
		cm_rpc_fail(&j->call, CM_EUNAVAIL, "%s",
		    err == CM_ETOOBIG ? "server overloaded, retry later"
		                      : "server stopping");
		co.called = 1;
	}
	if (!co.called) {
		cm_rpc_fail(&j->call, CM_EINTERNAL, "%s did not answer",
		    j->method->name);
	}
	if (j->call.status != CM_OK) {
		cm_debug(j->call.request_id, "rpc %s failed: %s (%s)",
		    j->method->name, cm_strerror(j->call.status),
		    j->call.detail);
	}
	obs_end(j, j->call.request_id, j->call.status, 0);
	job_answer(j, j->call.status, j->call.detail, j->call.request_id,
	    co.buf, co.len);
	free(co.buf);
}

static void batch_request(rpc_job *j);

// A request (len bytes of a packed Request) arrived for job j: decode,
// check, dispatch. A Batch is taken apart when j is the context's plain
// job (top level); inside a batch it is refused.
static void
job_request(rpc_job *j, const uint8_t *data, size_t len)
{
	cm_rpc_server *srv = j->ctx->srv;
	const char    *rid = "";
	cm_err         err = CM_OK;
	char           detail[CM_RPC_DETAIL_MAX];

	obs_begin(j);
	j->req = threadgate__rpc__v1__request__unpack(NULL, len, data);
	if (j->req == NULL) {
		reject(srv, CM_EINVAL);
		obs_end(j, "", CM_EINVAL, 1);
		job_answer(
		    j, CM_EINVAL, "undecodable request envelope", "", NULL, 0);
		return;
	}
	if (strlen(j->req->request_id) <= CM_RID_MAX) {
		rid = j->req->request_id;
	}
	obs_trace(j);
	if (strcmp(j->req->method, CM_RPC_HEALTH_METHOD) == 0) {
		health_reply(j, rid);
		return;
	}
	if (strcmp(j->req->method, CM_RPC_BATCH_METHOD) == 0) {
		if (j == &j->ctx->one) {
			// Not a call of its own: its calls are counted.
			cm_gauge_add(srv->obs.in_flight, -1);
			batch_request(j);
			return;
		}
		err = CM_EINVAL;
		snprintf(detail, sizeof(detail), "a batch inside a batch");
	} else if (strlen(j->req->method) > CM_RPC_METHOD_MAX ||
	    (j->method = protobuf_c_service_descriptor_get_method_by_name(
	         srv->cfg.service->descriptor, j->req->method)) == NULL) {
		err = CM_ENOTSUP;
		snprintf(detail, sizeof(detail), "unknown method \"%.64s\"",
		    j->req->method);
	} else if (j->req->deadline_unix_ms != 0 &&
	    cm_now_ms() >= j->req->deadline_unix_ms) {
		err = CM_ETIMEDOUT;
		snprintf(detail, sizeof(detail),
		    "deadline passed before %s ran", j->method->name);
	} else if ((j->input = protobuf_c_message_unpack(j->method->input,
	                NULL, j->req->payload.len, j->req->payload.data)) ==
	    NULL) {
		err = CM_EINVAL;
		snprintf(detail, sizeof(detail), "undecodable %s payload",
		    j->method->name);
	}
	if (j->method != NULL) {
		j->midx = (size_t) (j->method -
		    srv->cfg.service->descriptor->methods);
	}
	if (err != CM_OK) {
		reject(srv, err);
		obs_end(j, rid, err, 1);
		job_answer(j, err, detail, rid, NULL, 0);
		return;
	}
	memset(&j->call, 0, sizeof(j->call));
	j->call.request_id  = rid;
	j->call.traceparent = j->tp;
	j->call.deadline_ms = j->req->deadline_unix_ms;
	j->call.status      = CM_OK;
	job_invoke(j, j->ctx->state, j->ctx->index, -1);
}

// The Batch envelope in the context's plain job: dispatches each call as
// a job of the context's batch; the last one answered sends the reply
// (batch_reply()). A batch that cannot be taken apart is answered as a
// whole.
static void
batch_request(rpc_job *top)
{
	rpc_ctx                           *c = top->ctx;
	Threadgate__Rpc__V1__BatchRequest *b;
	char                               detail[CM_RPC_DETAIL_MAX];

	b = threadgate__rpc__v1__batch_request__unpack(
	    NULL, top->req->payload.len, top->req->payload.data);
	job_clear(top);
	if (b == NULL || b->n_calls == 0 || b->n_calls > CM_RPC_BATCH_MAX) {
		snprintf(detail, sizeof(detail),
		    b == NULL ? "undecodable batch"
		              : "a batch holds 1 to %d calls",
		    CM_RPC_BATCH_MAX);
		threadgate__rpc__v1__batch_request__free_unpacked(b, NULL);
		reject(c->srv, CM_EINVAL);
		ctx_reply(c, response_msg(CM_EINVAL, detail, "", NULL, 0));
		return;
	}
	if (c->batch == NULL) {
		c->batch = cm_xcalloc(CM_RPC_BATCH_MAX, sizeof(rpc_job));
	}
	c->nbatch      = (int) b->n_calls;
	c->admitted    = 0;
	c->woken       = 0;
	c->dispatching = 1;
	atomic_store(&c->pending, c->nbatch + 1);
	for (int i = 0; i < c->nbatch; i++) {
		rpc_job *j = &c->batch[i];

		j->ctx    = c;
		j->out    = NULL;
		j->outlen = 0;
		j->method = NULL;
		j->input  = NULL;
		job_request(j, b->calls[i].data, b->calls[i].len);
	}
	threadgate__rpc__v1__batch_request__free_unpacked(b, NULL);
	c->dispatching = 0;
	for (int i = 0; i < c->srv->cfg.nlanes; i++) {
		if ((c->woken & (1u << i)) != 0) {
			lane_wake(&c->srv->lanes[i]);
		}
	}
	if (atomic_fetch_sub(&c->pending, 1) == 1) {
		batch_reply(c);
	}
}

// Every call of c's batch is answered: sends their replies in one
// Response. Replies that would make it larger than CM_RPC_MAX_MSG are
// left out, the largest first, and listed as unsent.
static void
batch_reply(rpc_ctx *c)
{
	Threadgate__Rpc__V1__BatchReply br =
	    THREADGATE__RPC__V1__BATCH_REPLY__INIT;
	ProtobufCBinaryData replies[CM_RPC_BATCH_MAX];
	uint32_t            unsent[CM_RPC_BATCH_MAX];
	// Room for the Response envelope around the BatchReply.
	size_t   limit = CM_RPC_MAX_MSG - 1024;
	size_t   len;
	uint8_t *buf;

	for (int i = 0; i < c->nbatch; i++) {
		replies[i].data = c->batch[i].out;
		replies[i].len  = c->batch[i].outlen;
	}
	br.n_replies = (size_t) c->nbatch;
	br.replies   = replies;
	br.unsent    = unsent;
	while ((len = threadgate__rpc__v1__batch_reply__get_packed_size(&br)) >
	    limit) {
		int big = 0;

		for (int i = 1; i < c->nbatch; i++) {
			if (replies[i].len > replies[big].len) {
				big = i;
			}
		}
		replies[big].data     = NULL;
		replies[big].len      = 0;
		unsent[br.n_unsent++] = (uint32_t) big;
	}
	buf = cm_xmalloc(len);
	threadgate__rpc__v1__batch_reply__pack(&br, buf);
	for (int i = 0; i < c->nbatch; i++) {
		free(c->batch[i].out);
		c->batch[i].out = NULL;
	}
	c->nbatch = 0;
	ctx_reply(c, response_msg(CM_OK, "", "", buf, len));
	free(buf);
}

static void
ctx_cb(void *arg)
{
	rpc_ctx *c  = arg;
	int      rv = nng_aio_result(c->aio);
	nng_msg *m;

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
	m = nng_aio_get_msg(c->aio);
	nng_aio_set_msg(c->aio, NULL);
	job_request(&c->one, nng_msg_body(m), nng_msg_len(m));
	nng_msg_free(m);
}

cm_err
cm_rpc_offload(cm_rpc_call *call, int lane)
{
	rpc_job  *j  = (rpc_job *) ((char *) call - offsetof(rpc_job, call));
	call_out *co = call->priv;

	// Only marks the call: job_invoke() queues it once the handler has
	// returned, so a lane thread never touches a call whose inline
	// handler is still on the stack.
	if (call->blocking_ok || lane < 0 || lane >= j->ctx->srv->cfg.nlanes) {
		return (CM_EINVAL);
	}
	if (atomic_load(&j->ctx->srv->stopping)) {
		return (CM_EUNAVAIL);
	}
	co->offload_lane = lane;
	return (CM_OK);
}

// Queues j on a lane: CM_ETOOBIG when its queue is full, CM_EUNAVAIL
// when the server is stopping. The bound counts requests: a batch is
// admitted to a lane by its first call for it, and its other calls follow
// (at most CM_RPC_BATCH_MAX - 1 beyond the bound per context).
static cm_err
enqueue(rpc_job *j, int lane)
{
	rpc_ctx  *c     = j->ctx;
	rpc_lane *l     = &c->srv->lanes[lane];
	int       batch = j != &c->one;

	pthread_mutex_lock(&l->mu);
	if (l->stop) {
		pthread_mutex_unlock(&l->mu);
		return (CM_EUNAVAIL);
	}
	// Calls wait only while every thread is busy; beyond queue_max of
	// them the lane cannot drain the queue before the callers give up.
	if (l->qlen >= l->queue_max &&
	    !(batch && (c->admitted & (1u << lane)) != 0)) {
		pthread_mutex_unlock(&l->mu);
		return (CM_ETOOBIG);
	}
	if (batch) {
		c->admitted |= 1u << lane;
	}
	j->next = NULL;
	if (l->qtail != NULL) {
		l->qtail->next = j;
	} else {
		l->qhead = j;
	}
	l->qtail = j;
	l->qlen++;
	if (!batch || !c->dispatching || (c->woken & (1u << lane)) == 0) {
		pthread_cond_signal(&l->cv);
	}
	if (batch && c->dispatching) {
		c->woken |= 1u << lane;
	}
	pthread_mutex_unlock(&l->mu);
	return (CM_OK);
}

// Wakes as many of lane l's idle threads as its queue needs (after a
// batch was queued on it).
static void
lane_wake(rpc_lane *l)
{
	pthread_mutex_lock(&l->mu);
	for (int k = 0; k < l->qlen && k < l->nthreads - l->busy; k++) {
		pthread_cond_signal(&l->cv);
	}
	pthread_mutex_unlock(&l->mu);
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
		rpc_job *j;

		while (l->qhead == NULL && !l->stop) {
			pthread_cond_wait(&l->cv, &l->mu);
		}
		if (l->stop) {
			break;
		}
		j        = l->qhead;
		l->qhead = j->next;
		if (l->qhead == NULL) {
			l->qtail = NULL;
		}
		l->qlen--;
		l->busy++;
		pthread_mutex_unlock(&l->mu);

		if (j->call.deadline_ms != 0 &&
		    cm_now_ms() >= j->call.deadline_ms) {
			obs_end(j, j->call.request_id, CM_ETIMEDOUT, 1);
			job_answer(j, CM_ETIMEDOUT,
			    "deadline passed while queued", j->call.request_id,
			    NULL, 0);
		} else {
			j->call.status    = CM_OK;
			j->call.detail[0] = '\0';
			job_invoke(j, l->state[la.thread], l->base + la.thread,
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
		job_clear(&c->one);
		if (c->batch != NULL) {
			for (int k = 0; k < CM_RPC_BATCH_MAX; k++) {
				job_clear(&c->batch[k]);
				free(c->batch[k].out);
			}
			free(c->batch);
		}
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

		c->srv     = srv;
		c->index   = i;
		c->one.ctx = c;
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
