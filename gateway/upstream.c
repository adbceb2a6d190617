// SPDX-License-Identifier: MIT
//
// The async chain behind every authenticated request, run on nng's
// callback threads while the HTTP connection is suspended:
//
//   gw_upstream_start  the identity cache (authcache.c), else
//                      Authenticate(all Authorization values)  [auth]
//   on_auth            identity -> (cache it if the auth-service allows)
//   authenticated      gw_authorize() -> input check
//                      -> owner = identity -> thread-service rpc [threads]
//   on_threads         reply -> JSON response (charged to the memory
//                      budget; 503 when it is exhausted)
//
// job->state follows it: GW_JOB_AUTH until the caller is known (from
// the cache or on_auth), GW_JOB_THREADS while the thread-service call is
// in flight, GW_JOB_READY once gw_job_done() ran; each step asserts the
// state it expects. Every step has a deadline (the call's timeout), so
// each chain ends in exactly one gw_job_done(), which resumes the
// connection. The owner sent
// to the thread-service is only ever the identity the auth-service
// returned; nothing the client sent can set it.
//
// Both services may run as replica sets (common/rpc_client.c). The
// Authenticate call carries an affinity key, a digest of the
// Authorization values, so a token keeps reaching the replica that has it
// cached. Whether a thread-service call may be re-sent to another replica
// after it may already have reached one - its replica died mid-call,
// stalled, or answered "unavailable" - is decided by each route's retry
// rule in the route table (routes.c, gw_retry in gw.h).
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "gateway/gw.h"

int
gw_upstream_idempotent(gw_request *req)
{
	Threadgate__Threads__V1__CreateThreadRequest *c = &req->u.create;

	switch (req->route->retry) {
	case GW_RETRY_READ:
		return (1);
	case GW_RETRY_CREATE:
		if (c->thread_id == NULL || c->thread_id[0] == '\0') {
			// The id is ours and unknown to anyone until we
			// answer: a thread of this owner with this id can
			// only have been made by this request.
			cm_uuid7(req->thread_id);
			c->thread_id = req->thread_id;
			c->if_exists =
			    THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_DO_NOTHING;
		}
		return (c->if_exists ==
		    THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_DO_NOTHING);
	case GW_RETRY_NO:
	default:
		return (0);
	}
}

uint64_t
gw_auth_affinity(const gw_job *job)
{
	uint64_t key = 0;

	for (int i = 0; i < job->nauth; i++) {
		key = cm_rpc_key(key, job->auth[i], strlen(job->auth[i]));
	}
	return (key);
}

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

	CM_ASSERT(job->state == GW_JOB_THREADS);
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

// The rest of the chain once the caller is known: authorize, report input
// errors (only to authenticated callers), then the thread-service rpc with
// the owner set to who->id, the only place the owner is ever set.
static void
authenticated(gw_job *job, const gw_identity *who)
{
	cm_rpc_call_opts opts = { 0 };
	cm_err           rv;

	CM_ASSERT(job->state == GW_JOB_AUTH);
	CM_ASSERT(who->id == job->identity && job->identity[0] != '\0');
	rv = gw_authorize(who, job->match.route->action,
	    job->req.thread_id[0] ? job->req.thread_id : NULL);
	if (rv != CM_OK) {
		fail(job, rv, NULL);
		return;
	}
	if (job->verr != CM_OK) {
		fail(job, job->verr, job->vdetail);
		return;
	}
	*job->req.owner_slot = job->identity;
	opts.idempotent      = gw_upstream_idempotent(&job->req);
	opts.batch           = job->match.route->batch;
	job->state           = GW_JOB_THREADS;
	rv = gw_ops_call(job, GW_UP_THREADS, job->match.route->rpc,
	    gw_request_message(&job->req), job->match.route->reply_desc, &opts,
	    on_threads);
	if (rv != CM_OK) {
		fail(job, rv == CM_EINVAL ? CM_EINTERNAL : rv, NULL);
	}
}

// Keeps an Authenticate answer in the identity cache for as long as the
// auth-service allows and GATEWAY_AUTH_CACHE_TTL, when it fits: an email
// or permission list over the cache's limits, or a permission that is
// empty or holds a space (the cache joins them with spaces), is used for
// this request only.
static void
remember(gw_job *job, const Threadgate__Auth__V1__Identity *id)
{
	gw_server            *srv = job->srv;
	gw_authcache_identity e;
	size_t                used = 0;
	int64_t               now, ttl;

	if (srv->acache == NULL || !job->akey_set || id->reuse_ms <= 0) {
		return;
	}
	if (snprintf(e.email, sizeof(e.email), "%s",
	        id->email != NULL ? id->email : "") >= (int) sizeof(e.email)) {
		return;
	}
	e.perms[0] = '\0';
	for (size_t i = 0; i < id->n_permissions; i++) {
		const char *p = id->permissions[i];
		size_t      n = strlen(p);

		if (n == 0 || strchr(p, ' ') != NULL ||
		    used + n + 2 > sizeof(e.perms)) {
			return;
		}
		if (used > 0) {
			e.perms[used++] = ' ';
		}
		memcpy(e.perms + used, p, n + 1);
		used += n;
	}
	memcpy(e.identity, job->identity, sizeof(e.identity));
	now = cm_mono_ms();
	ttl = id->reuse_ms < srv->cfg.auth_cache_ttl_ms
	    ? id->reuse_ms
	    : srv->cfg.auth_cache_ttl_ms;
	gw_authcache_put(srv->acache, job->akey, &e, now, now + ttl);
}

static void
on_auth(void *arg, cm_err st, const char *detail, ProtobufCMessage *reply)
{
	gw_job                         *job = arg;
	Threadgate__Auth__V1__Identity *id  = (void *) reply;
	gw_identity                     who;

	CM_ASSERT(job->state == GW_JOB_AUTH);
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
	remember(job, id);
	who.id     = job->identity;
	who.email  = id->email != NULL ? id->email : "";
	who.perms  = (const char *const *) id->permissions;
	who.nperms = id->n_permissions;
	authenticated(job, &who);
	protobuf_c_message_free_unpacked(reply, NULL);
}

// Answers the caller from the identity cache: 1 when it was there (the
// chain went on without an Authenticate rpc), else 0.
static int
from_cache(gw_job *job)
{
	gw_server            *srv = job->srv;
	gw_authcache_identity e;
	const char           *perms[GW_AUTHCACHE_PERMS_MAX / 2];
	gw_identity           who;
	size_t                n = 0;

	if (srv->acache == NULL) {
		return (0);
	}
	gw_authcache_key(srv->acache, (const char *const *) job->auth,
	    (size_t) job->nauth, NULL, 0, job->akey);
	job->akey_set = 1;
	if (!gw_authcache_get(srv->acache, job->akey, cm_mono_ms(), &e)) {
		gw_ops_auth_cache(srv, 0);
		return (0);
	}
	gw_ops_auth_cache(srv, 1);
	for (char *p = e.perms; *p != '\0';) {
		perms[n++] = p;
		p += strcspn(p, " ");
		if (*p == ' ') {
			*p++ = '\0';
		}
	}
	memcpy(job->identity, e.identity, sizeof(job->identity));
	who.id     = job->identity;
	who.email  = e.email;
	who.perms  = perms;
	who.nperms = n;
	authenticated(job, &who);
	return (1);
}

void
gw_upstream_start(gw_job *job)
{
	Threadgate__Auth__V1__AuthenticateRequest areq =
	    THREADGATE__AUTH__V1__AUTHENTICATE_REQUEST__INIT;
	cm_rpc_call_opts opts = { 0 };
	cm_err           rv;

	if (job->auth_bad) {
		fail(job, CM_EAUTH, "Invalid Authorization header");
		return;
	}
	// Without credentials the auth-service refuses (or, in dev mode,
	// decides): always ask it.
	if (job->nauth > 0 && from_cache(job)) {
		return;
	}
	areq.n_authorization = (size_t) job->nauth;
	areq.authorization   = job->auth;
	// Authenticate only reads (the IdP check is a lookup): safe to
	// re-send to another replica.
	opts.idempotent = 1;
	opts.affinity   = gw_auth_affinity(job);
	rv = gw_ops_call(job, GW_UP_AUTH, "Authenticate", &areq.base,
	    &threadgate__auth__v1__identity__descriptor, &opts, on_auth);
	if (rv != CM_OK) {
		fail(job, CM_EUNAVAIL, NULL);
	}
}
