// SPDX-License-Identifier: MIT
//
// RPC over nng REQ/REP with threadgate.rpc.v1 envelopes (see rpc.h).
//
// Server: each worker is a thread owning one nng_ctx on the REP socket.
// It blocks in its own ctx receive (never on an nng taskq thread), so a
// handler may do slow work (sqlite fsync, an IdP round trip) without
// stalling nng's callback threads. Dispatch is by method name through the
// protobuf-c service descriptor.
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

typedef struct rpc_worker {
	cm_rpc_server *srv;
	pthread_t      thread;
	nng_ctx        ctx;
	nng_aio       *aio;
	void          *state;
	int            index;
} rpc_worker;

struct cm_rpc_server {
	cm_rpc_server_config cfg;
	nng_socket           sock;
	rpc_worker          *workers;
	int                  nstarted;
	// Start-up rendezvous: each worker reports its worker_init result.
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	int             ninit;
	cm_err          init_err;
};

// Output of one handler invocation, filled by the closure.
typedef struct call_out {
	int      called;
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
		cm_error(call->request_id, "rpc handler called its closure twice");
		return;
	}
	co->called = 1;
	if (out == NULL) {
		if (call->status == CM_OK) {
			cm_rpc_fail(call, CM_EINTERNAL,
			    "handler returned no reply");
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

// Handles one request message; returns the reply message (NULL only when
// no message can be allocated).
static nng_msg *
serve_one(rpc_worker *w, nng_msg *msg)
{
	ProtobufCService                      *svc = w->srv->cfg.service;
	const ProtobufCMethodDescriptor       *m;
	ProtobufCMessage                      *input = NULL;
	rpc_request                           *req;
	cm_rpc_call                            call;
	call_out                               co = { 0 };
	nng_msg                               *reply;
	const char                            *rid = "";

	req = threadgate__rpc__v1__request__unpack(
	    NULL, nng_msg_len(msg), nng_msg_body(msg));
	if (req == NULL) {
		if (w->srv->cfg.on_reject != NULL) {
			w->srv->cfg.on_reject(w->srv->cfg.arg, CM_EINVAL);
		}
		return (response_msg(CM_EINVAL, "undecodable request envelope",
		    "", NULL, 0));
	}
	if (strlen(req->request_id) <= CM_RID_MAX) {
		rid = req->request_id;
	}
	memset(&call, 0, sizeof(call));
	call.request_id   = rid;
	call.deadline_ms  = req->deadline_unix_ms;
	call.worker       = w->state;
	call.worker_index = w->index;
	call.status       = CM_OK;
	call.priv         = &co;

	if (strlen(req->method) > CM_RPC_METHOD_MAX ||
	    (m = protobuf_c_service_descriptor_get_method_by_name(
	         svc->descriptor, req->method)) == NULL) {
		cm_rpc_fail(&call, CM_ENOTSUP, "unknown method \"%.64s\"",
		    req->method);
		goto out;
	}
	if (req->deadline_unix_ms != 0 && cm_now_ms() >= req->deadline_unix_ms) {
		cm_rpc_fail(&call, CM_ETIMEDOUT, "deadline passed before %s ran",
		    m->name);
		goto out;
	}
	input = protobuf_c_message_unpack(
	    m->input, NULL, req->payload.len, req->payload.data);
	if (input == NULL) {
		cm_rpc_fail(&call, CM_EINVAL, "undecodable %s payload", m->name);
		goto out;
	}
	svc->invoke(svc, (unsigned) (m - svc->descriptor->methods), input,
	    handler_closure, &call);
	if (!co.called) {
		cm_rpc_fail(&call, CM_EINTERNAL, "%s did not answer", m->name);
	}
	goto reply;

out:
	// Refused by this layer, before any handler ran.
	if (w->srv->cfg.on_reject != NULL) {
		w->srv->cfg.on_reject(w->srv->cfg.arg, call.status);
	}
reply:
	if (call.status != CM_OK) {
		cm_debug(rid, "rpc %.64s failed: %s (%s)", req->method,
		    cm_strerror(call.status), call.detail);
	}
	reply = response_msg(call.status, call.detail, rid, co.buf, co.len);
	free(co.buf);
	protobuf_c_message_free_unpacked(input, NULL);
	threadgate__rpc__v1__request__free_unpacked(req, NULL);
	return (reply);
}

static void *
worker_main(void *arg)
{
	rpc_worker    *w   = arg;
	cm_rpc_server *srv = w->srv;
	cm_err         err = CM_OK;

	if (srv->cfg.worker_init != NULL) {
		w->state = srv->cfg.worker_init(srv->cfg.arg, w->index, &err);
	}
	pthread_mutex_lock(&srv->mu);
	srv->ninit++;
	if (err != CM_OK && srv->init_err == CM_OK) {
		srv->init_err = err;
	}
	pthread_cond_broadcast(&srv->cv);
	// Serve only once every worker initialised; on a failed start the
	// socket gets closed and the receive below fails at once.
	while (srv->ninit < srv->nstarted) {
		pthread_cond_wait(&srv->cv, &srv->mu);
	}
	pthread_mutex_unlock(&srv->mu);

	while (err == CM_OK) {
		nng_msg *msg;
		nng_msg *reply;
		int      rv;

		nng_ctx_recv(w->ctx, w->aio);
		nng_aio_wait(w->aio);
		rv = nng_aio_result(w->aio);
		if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
			break;
		}
		if (rv != 0) {
			continue;
		}
		msg   = nng_aio_get_msg(w->aio);
		reply = serve_one(w, msg);
		nng_msg_free(msg);
		if (reply == NULL) {
			continue; // out of memory: the client's deadline fires
		}
		nng_aio_set_msg(w->aio, reply);
		nng_ctx_send(w->ctx, w->aio);
		nng_aio_wait(w->aio);
		rv = nng_aio_result(w->aio);
		if (rv != 0) {
			nng_msg_free(nng_aio_get_msg(w->aio));
			if (rv == NNG_ECLOSED) {
				break;
			}
		}
	}
	if (srv->cfg.worker_fini != NULL) {
		srv->cfg.worker_fini(srv->cfg.arg, w->state);
	}
	return (NULL);
}

static void
server_free(cm_rpc_server *srv)
{
	// Stop each worker's aio first: nng_aio_stop() cancels what is
	// pending and makes every later operation on that aio fail with
	// NNG_ECANCELED, so each worker leaves its loop. Only after the
	// workers are joined is the socket closed: closing it while a worker
	// is inside nng_ctx_send() crashes nng 1.5.2 (seen as a panic in
	// pthread_mutex_lock on SIGTERM). A reply being sent at that moment
	// is lost; its caller's deadline fires.
	for (int i = 0; i < srv->cfg.nworkers; i++) {
		if (srv->workers[i].aio != NULL) {
			nng_aio_stop(srv->workers[i].aio);
		}
	}
	for (int i = 0; i < srv->nstarted; i++) {
		pthread_join(srv->workers[i].thread, NULL);
	}
	nng_close(srv->sock);
	for (int i = 0; i < srv->cfg.nworkers; i++) {
		if (srv->workers[i].aio != NULL) {
			nng_aio_free(srv->workers[i].aio);
		}
	}
	pthread_mutex_destroy(&srv->mu);
	pthread_cond_destroy(&srv->cv);
	free(srv->workers);
	free(srv);
}

cm_err
cm_rpc_server_start(const cm_rpc_server_config *cfg, cm_rpc_server **out)
{
	cm_rpc_server *srv;
	cm_err         err = CM_OK;
	int            rv;

	if (cfg == NULL || cfg->url == NULL || cfg->service == NULL ||
	    cfg->nworkers < 1 || cfg->nworkers > CM_RPC_MAX_WORKERS) {
		return (CM_EINVAL);
	}
	srv          = cm_xcalloc(1, sizeof(*srv));
	srv->cfg     = *cfg;
	srv->workers = cm_xcalloc((size_t) cfg->nworkers, sizeof(rpc_worker));
	pthread_mutex_init(&srv->mu, NULL);
	pthread_cond_init(&srv->cv, NULL);

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
		rpc_worker *w = &srv->workers[i];

		w->srv   = srv;
		w->index = i;
		if ((rv = nng_ctx_open(&w->ctx, srv->sock)) != 0 ||
		    (rv = nng_aio_alloc(&w->aio, NULL, NULL)) != 0) {
			err = cm_err_from_nng(rv);
			goto fail;
		}
	}
	pthread_mutex_lock(&srv->mu);
	for (int i = 0; i < cfg->nworkers; i++) {
		if (pthread_create(&srv->workers[i].thread, NULL, worker_main,
		        &srv->workers[i]) != 0) {
			err = CM_EINTERNAL;
			break;
		}
		srv->nstarted++;
	}
	while (srv->ninit < srv->nstarted) {
		pthread_cond_wait(&srv->cv, &srv->mu);
	}
	if (err == CM_OK) {
		err = srv->init_err;
	}
	pthread_cond_broadcast(&srv->cv);
	pthread_mutex_unlock(&srv->mu);
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
slot_finish(rpc_slot *s, cm_err st, const char *detail,
    const uint8_t *payload, size_t len)
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
			// message; timing out here means no peer was there: the
			// service is down or unreachable, not slow.
			nng_msg_free(nng_aio_get_msg(s->aio));
			slot_finish(s,
			    rv == NNG_ETIMEDOUT ? CM_EUNAVAIL : cm_err_from_nng(rv),
			    rv == NNG_ETIMEDOUT ? "upstream not reachable"
			                        : nng_strerror(rv),
			    NULL, 0);
			return;
		}
		left = s->deadline_mono - cm_mono_ms();
		if (left <= 0) {
			slot_finish(s, CM_ETIMEDOUT, "upstream deadline passed",
			    NULL, 0);
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
		slot_finish(s, (cm_err) resp->status, detail, resp->payload.data,
		    resp->payload.len);
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
	nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, RPC_RECONNECT_MIN_MS);
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, RPC_RECONNECT_MAX_MS);
	nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, pipe_event, c);
	nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, pipe_event, c);
	if ((rv = nng_dial(c->sock, url, &c->dialer, NNG_FLAG_NONBLOCK)) != 0) {
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
	n                    = threadgate__rpc__v1__request__get_packed_size(&req);
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
	if (atomic_load(&c->npipes) == 0 && wait_ms > RPC_UNCONNECTED_WAIT_MS) {
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
cm_rpc_call_async(cm_rpc_client *c, const char *method,
    const char *request_id, int timeout_ms, const ProtobufCMessage *req,
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
cm_rpc_call_sync(cm_rpc_client *c, const char *method,
    const char *request_id, int timeout_ms, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply_out,
    char *detail, size_t detail_len)
{
	ProtobufCMessage *reply;
	uint8_t          *buf;
	uint8_t          *payload = NULL;
	size_t            len;
	size_t            plen = 0;
	cm_err            err;

	if (c == NULL || req == NULL || reply_desc == NULL || reply_out == NULL) {
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
			snprintf(detail, detail_len, "undecodable reply payload");
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
