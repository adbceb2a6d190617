// SPDX-License-Identifier: MIT
//
// The async chain behind every authenticated request, run on nng's
// callback threads while the HTTP connection is suspended:
//
//   gw_upstream_start  Authenticate(all Authorization values)  [auth]
//   on_auth            identity -> input check -> gw_authorize()
//                      -> owner = identity -> thread-service rpc [threads]
//   on_threads         reply -> JSON response (charged to the memory
//                      budget; 503 when it is exhausted)
//
// Every step has a deadline (cm_rpc_call_async's timeout), so each chain
// ends in exactly one gw_job_done(), which resumes the connection. The
// owner sent to the thread-service is only ever the identity the
// auth-service returned; nothing the client sent can set it.
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "gateway/gw.h"

static void
fail(gw_job *job, cm_err err, const char *detail)
{
	gw_error_response(&job->resp, err, detail, job->nauth > 0);
	gw_job_done(job);
}

static void
on_threads(void *arg, cm_err st, const char *detail, ProtobufCMessage *reply)
{
	gw_job    *job = arg;
	gw_server *srv = job->srv;
	size_t     charge;
	cm_err     rv;

	if (st != CM_OK) {
		if (st == CM_EINTERNAL || st == CM_ETIMEDOUT ||
		    st == CM_EUNAVAIL) {
			cm_warn(job->rid, "thread-service %s: %s",
			    job->match.route->rpc, detail);
		}
		// The service's detail is meant for clients (rpc.proto), but
		// transport failures carry nng's text: replace those.
		fail(job, st,
		    (st == CM_EINTERNAL || st == CM_ETIMEDOUT ||
		        st == CM_EUNAVAIL)
		        ? NULL
		        : detail);
		return;
	}
	// Rendering holds the reply (and the rpc layer's copy of it) and the
	// output at once: charge that to the memory budget first, and refuse
	// (503) rather than grow past it. Once rendered, only the output
	// stays charged until it is sent.
	charge = protobuf_c_message_get_packed_size(reply) * GW_RENDER_FACTOR;
	if (gw_mem_take(srv, charge) != 0) {
		protobuf_c_message_free_unpacked(reply, NULL);
		gw_ratelog_note(&srv->log_refused, "memory budget exhausted");
		fail(job, CM_EUNAVAIL, "Server busy, retry later");
		return;
	}
	rv = gw_reply_render(&job->req, reply, &job->resp);
	protobuf_c_message_free_unpacked(reply, NULL);
	gw_mem_give(srv, charge);
	atomic_fetch_add(&srv->mem_used, (long long) job->resp.body_len);
	job->mem += job->resp.body_len;
	if (rv != CM_OK) {
		cm_error(job->rid, "unrenderable %s reply from thread-service",
		    job->match.route->rpc);
		fail(job, CM_EINTERNAL, NULL);
		return;
	}
	gw_job_done(job);
}

static void
on_auth(void *arg, cm_err st, const char *detail, ProtobufCMessage *reply)
{
	gw_job                         *job = arg;
	Threadgate__Auth__V1__Identity *id  = (void *) reply;
	gw_identity                     who;
	cm_err                          rv;

	if (st != CM_OK) {
		if (st != CM_EAUTH) {
			cm_warn(job->rid, "auth-service: %s (%s)",
			    cm_strerror(st), detail);
		}
		// A failure other than "bad credentials" is never a 401 nor a
		// success: errors.c maps timeouts and outages to 503.
		fail(job, st, st == CM_EAUTH ? detail : NULL);
		return;
	}
	// Fail closed on an OK without a usable identity.
	if (id->identity == NULL || id->identity[0] == '\0' ||
	    strlen(id->identity) >= sizeof(job->identity)) {
		protobuf_c_message_free_unpacked(reply, NULL);
		cm_error(
		    job->rid, "auth-service answered OK without identity");
		fail(job, CM_EINTERNAL, NULL);
		return;
	}
	snprintf(job->identity, sizeof(job->identity), "%s", id->identity);
	who.id     = job->identity;
	who.email  = id->email != NULL ? id->email : "";
	who.perms  = (const char *const *) id->permissions;
	who.nperms = id->n_permissions;
	rv         = gw_authorize(&who, job->match.route->action,
            job->req.thread_id[0] ? job->req.thread_id : NULL);
	protobuf_c_message_free_unpacked(reply, NULL);
	if (rv != CM_OK) {
		fail(job, rv, NULL);
		return;
	}
	// Input errors are reported only to authenticated callers.
	if (job->verr != CM_OK) {
		fail(job, job->verr, job->vdetail);
		return;
	}
	*job->req.owner_slot = job->identity;
	rv = gw_ops_call(job, GW_UP_THREADS, job->match.route->rpc,
	    gw_request_message(&job->req), job->match.route->reply_desc,
	    on_threads);
	if (rv != CM_OK) {
		fail(job, rv == CM_EINVAL ? CM_EINTERNAL : rv, NULL);
	}
}

void
gw_upstream_start(gw_job *job)
{
	Threadgate__Auth__V1__AuthenticateRequest areq =
	    THREADGATE__AUTH__V1__AUTHENTICATE_REQUEST__INIT;
	cm_err rv;

	if (job->auth_bad) {
		fail(job, CM_EAUTH, "Invalid Authorization header");
		return;
	}
	areq.n_authorization = (size_t) job->nauth;
	areq.authorization   = job->auth;
	rv = gw_ops_call(job, GW_UP_AUTH, "Authenticate", &areq.base,
	    &threadgate__auth__v1__identity__descriptor, on_auth);
	if (rv != CM_OK) {
		fail(job, CM_EUNAVAIL, NULL);
	}
}
