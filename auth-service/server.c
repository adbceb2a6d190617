// SPDX-License-Identifier: MIT
//
// The auth-service RPC handlers (Authenticate, Stats) and the decision
// path behind Authenticate:
//   Authorization values -> auth_header_parse -> cache key -> cache lookup
//   (single-flight on a miss) -> provider verify() -> scope check -> cache
//   insert (success only) -> Identity.
// Every path that is not a verified, non-empty identity answers an error:
// the service fails closed. The generated protobuf-c service dispatches by
// method name (common/rpc.c). Header checks and cache hits are answered
// inline on nng's callback threads; everything that may block (the IdP,
// waiting for another caller's flight) runs on the rpc layer's blocking
// threads, each owning an auth_worker with its own CURL handle.

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "auth-service/auth.h"
#include "auth-service/cache.h"
#include "auth-service/service.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "proto/auth.pb-c.h"

// Longest detail text produced for a refusal (fits an rpc Response).
#define AUTH_DETAIL_MAX CM_RPC_DETAIL_MAX
// Most permissions returned in an Identity: AUTH_SCOPES_MAX bytes of
// space-separated words hold at most half as many words.
#define AUTH_PERMS_MAX (AUTH_SCOPES_MAX / 2)

auth_stats   auth_g_stats;
auth_metrics auth_g_metrics;

struct auth_server {
	Threadgate__Auth__V1__AuthService_Service service; // first member
	const auth_config                        *cfg;
	auth_provider                            *provider;
	auth_cache                               *cache;
	cm_rpc_server                            *rpc;
	auth_worker *health_worker; // the health thread's (own CURL handle)
};

// ---------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------

static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void
metrics_make(void)
{
	static const char *const l_outcome[]      = { "outcome", NULL };
	static const char *const l_result[]       = { "result", NULL };
	static const char *const outcomes[]       = { "valid", "refused",
		      "unavailable", "malformed" };
	static const char *const idp[AUTH_IDP_N_] = { "2xx", "3xx", "4xx",
		"5xx", "timeout", "error" };
	cm_metrics              *r                = cm_metrics_default();
	cm_metric_desc           d                = { 0 };
	cm_mfamily              *f;
	auth_metrics            *m = &auth_g_metrics;

	d.name   = "threadgate_auth_requests_total";
	d.help   = "Authenticate decisions by outcome: valid, refused (bad "
	           "token or scope), unavailable (IdP down or slow: 503), "
	           "malformed (bad request).";
	d.type   = CM_METRIC_COUNTER;
	d.labels = l_outcome;
	f        = cm_metrics_family(r, &d);
	for (int i = 0; i < 4; i++) {
		m->outcome[i] = cm_counter_get(f, &outcomes[i]);
	}
	d.name        = "threadgate_auth_cache_requests_total";
	d.help        = "Result cache lookups: hit or miss.";
	d.labels      = l_result;
	f             = cm_metrics_family(r, &d);
	m->cache_hit  = cm_counter_get(f, (const char *[]) { "hit" });
	m->cache_miss = cm_counter_get(f, (const char *[]) { "miss" });
	m->singleflight_waits =
	    cm_metrics_counter(r, "threadgate_auth_singleflight_waits_total",
	        "Cache misses answered by another caller's check of the same "
	        "token (single-flight) instead of an IdP request of their "
	        "own.");
	d.name = "threadgate_auth_idp_requests_total";
	d.help = "HTTP requests to the identity provider by result: the "
	         "status class, or timeout / error (no answer). Errors are "
	         "5xx, timeout and error.";
	f      = cm_metrics_family(r, &d);
	for (int i = 0; i < AUTH_IDP_N_; i++) {
		m->idp[i] = cm_counter_get(f, &idp[i]);
	}
	d.name = "threadgate_auth_jwks_fetches_total";
	d.help = "JWKS (and OIDC discovery) fetches by result: ok or error.";
	f      = cm_metrics_family(r, &d);
	m->jwks_ok    = cm_counter_get(f, (const char *[]) { "ok" });
	m->jwks_error = cm_counter_get(f, (const char *[]) { "error" });
	memset(&d, 0, sizeof(d));
	d.name = "threadgate_auth_idp_request_duration_seconds";
	d.help = "Duration of HTTP requests to the identity provider.";
	d.type = CM_METRIC_HISTOGRAM;
	d.unit = 1e-6;
	m->idp_duration = cm_histogram_get(cm_metrics_family(r, &d), NULL);
}

void
auth_metrics_init(void)
{
	pthread_once(&metrics_once, metrics_make);
}

// The cache's size, read at scrape time.
static void
cache_collect(void *arg, cm_mwriter *w)
{
	auth_server *srv = arg;

	cm_mwriter_family(w, "threadgate_auth_cache_entries", "gauge",
	    "Results held in the auth result cache.");
	cm_mwriter_sample(w, "threadgate_auth_cache_entries", NULL, NULL,
	    (double) auth_cache_count(srv->cache));
}

// ---------------------------------------------------------------------
// The decision
// ---------------------------------------------------------------------

// 1 when every required scope is a word of the space-separated have.
static int
scopes_ok(const char *have, const char *const *need, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		size_t      nl    = strlen(need[i]);
		const char *p     = have;
		int         found = 0;

		while (*p != '\0' && !found) {
			size_t wl;
			while (*p == ' ') {
				p++;
			}
			wl = strcspn(p, " ");
			if (wl == nl && wl > 0 &&
			    memcmp(p, need[i], nl) == 0) {
				found = 1;
			}
			p += wl;
		}
		if (!found) {
			return (0);
		}
	}
	return (1);
}

static void
count(cm_err rv)
{
	switch (rv) {
	case CM_OK:
		atomic_fetch_add(&auth_g_stats.valid, 1);
		cm_counter_inc(auth_g_metrics.outcome[0]);
		break;
	case CM_EAUTH:
	case CM_EPERM:
		atomic_fetch_add(&auth_g_stats.refused, 1);
		cm_counter_inc(auth_g_metrics.outcome[1]);
		break;
	case CM_EINVAL:
		atomic_fetch_add(&auth_g_stats.malformed, 1);
		cm_counter_inc(auth_g_metrics.outcome[3]);
		break;
	default:
		atomic_fetch_add(&auth_g_stats.unavailable, 1);
		cm_counter_inc(auth_g_metrics.outcome[2]);
		break;
	}
}

static void
set_detail(char *detail, size_t detail_len, const char *s)
{
	if (detail != NULL && detail_len > 0) {
		snprintf(detail, detail_len, "%s", s);
	}
}

// Calls the provider and normalises its answer: only CM_OK with a
// non-empty identity is success; unexpected codes fail closed.
static cm_err
verify(auth_server *srv, auth_worker *w, const char *token,
    const char *const *scopes, size_t nscopes, int64_t deadline_ms,
    auth_result *res, char *detail, size_t detail_len)
{
	cm_err rv;

	memset(res, 0, sizeof(*res));
	auth_http_set_deadline(deadline_ms);
	rv = srv->provider->verify(
	    srv->provider, w, token, res, detail, detail_len);
	auth_http_set_deadline(0);
	switch (rv) {
	case CM_OK:
		if (res->identity[0] == '\0' ||
		    strnlen(res->identity, sizeof(res->identity)) ==
		        sizeof(res->identity)) {
			cm_error(NULL,
			    "provider %s answered OK without an "
			    "identity: refused (fail closed)",
			    srv->provider->name);
			set_detail(detail, detail_len,
			    "identity provider gave no identity");
			return (CM_EUNAVAIL);
		}
		res->email[sizeof(res->email) - 1]           = '\0';
		res->scopes[sizeof(res->scopes) - 1]         = '\0';
		res->session_id[sizeof(res->session_id) - 1] = '\0';
		if (!scopes_ok(res->scopes, scopes, nscopes)) {
			set_detail(detail, detail_len, "insufficient scope");
			return (CM_EPERM);
		}
		return (CM_OK);
	case CM_EAUTH:
	case CM_ETIMEDOUT:
	case CM_EUNAVAIL:
		return (rv);
	default:
		cm_error(NULL, "provider %s failed: %s (fail closed)",
		    srv->provider->name, cm_strerror(rv));
		set_detail(detail, detail_len, "identity check failed");
		return (CM_EUNAVAIL);
	}
}

cm_err
auth_authenticate(auth_server *srv, auth_worker *w, const char *const *authz,
    size_t nauthz, const char *const *scopes, size_t nscopes,
    int64_t deadline_ms, auth_result *out, char *detail, size_t detail_len,
    int *would_block)
{
	unsigned char      key[AUTH_CACHE_KEY_LEN];
	auth_result        res;
	auth_cache_outcome how    = AUTH_CACHE_LEAD;
	auth_flight       *flight = NULL;
	const char        *token;
	size_t             token_len;
	int64_t            now_ms = cm_now_ms();
	int64_t            now_s  = now_ms / 1000;
	cm_err             rv;

	if (nscopes > AUTH_REQUIRED_SCOPES_MAX) {
		set_detail(detail, detail_len, "too many required scopes");
		rv = CM_EINVAL;
		goto out;
	}
	for (size_t i = 0; i < nscopes; i++) {
		if (scopes[i] == NULL || scopes[i][0] == '\0' ||
		    strlen(scopes[i]) > AUTH_REQUIRED_SCOPE_LEN_MAX ||
		    strchr(scopes[i], ' ') != NULL) {
			set_detail(
			    detail, detail_len, "malformed required scope");
			rv = CM_EINVAL;
			goto out;
		}
	}
	rv = auth_header_parse(
	    authz, nauthz, &token, &token_len, detail, detail_len);
	if (rv != CM_OK) {
		goto out;
	}
	if (deadline_ms <= 0) {
		deadline_ms = now_ms + 2 * (int64_t) srv->cfg->idp_timeout_ms;
	}
	if (now_ms >= deadline_ms) {
		set_detail(detail, detail_len, "deadline passed");
		rv = CM_ETIMEDOUT;
		goto out;
	}

	auth_cache_key(srv->provider->cache_scope, token, token_len, scopes,
	    nscopes, key);
	if (would_block != NULL) {
		// Non-blocking attempt: only a live cache entry answers here.
		// A miss needs the IdP or another caller's flight, so it must
		// run where blocking is allowed. The error fails closed should
		// a caller ignore *would_block; it is not counted.
		if (auth_cache_get(srv->cache, key, now_s, &res)) {
			atomic_fetch_add(&auth_g_stats.cache_hits, 1);
			cm_counter_inc(auth_g_metrics.cache_hit);
			rv = CM_OK;
			goto out;
		}
		*would_block = 1;
		set_detail(detail, detail_len, "needs a blocking thread");
		return (CM_EUNAVAIL);
	}
	rv = auth_cache_begin(
	    srv->cache, key, now_s, deadline_ms, &res, &how, &flight);
	if (rv != CM_OK) {
		set_detail(detail, detail_len,
		    rv == CM_EAUTH       ? "invalid or expired token"
		        : rv == CM_EPERM ? "insufficient scope"
		                         : "identity check timed out");
		goto out;
	}
	if (how == AUTH_CACHE_HIT) {
		atomic_fetch_add(&auth_g_stats.cache_hits, 1);
		cm_counter_inc(auth_g_metrics.cache_hit);
		goto out;
	}
	atomic_fetch_add(&auth_g_stats.cache_misses, 1);
	cm_counter_inc(auth_g_metrics.cache_miss);
	if (how == AUTH_CACHE_SHARED) {
		cm_counter_inc(auth_g_metrics.singleflight_waits);
		goto out;
	}

	// Lead: verify, then publish the outcome (stored only on success).
	rv = verify(srv, w, token, scopes, nscopes, deadline_ms, &res, detail,
	    detail_len);
	{
		int64_t fin_s = cm_now_ms() / 1000;
		int64_t cap   = 0;
		int64_t exp   = 0;

		if (rv == CM_OK && srv->cfg->cache_ttl_s > 0) {
			if (srv->cfg->provider == AUTH_PROVIDER_HYBRID) {
				cap = auth_hybrid_valid_until(
				    srv->provider, token);
				if (cap == 0) {
					cap = fin_s; // not confirmed: keep
					             // nothing
				}
			}
			exp = auth_cache_expiry(
			    fin_s, srv->cfg->cache_ttl_s, res.expires_at, cap);
		}
		auth_cache_finish(srv->cache, flight, rv,
		    rv == CM_OK ? &res : NULL, fin_s, exp);
		res.cached_until =
		    (rv == CM_OK && srv->cfg->cache_max > 0 && exp > fin_s)
		    ? exp
		    : 0;
	}

out:
	if (rv == CM_OK) {
		*out = res;
	}
	count(rv);
	return (rv);
}

// ---------------------------------------------------------------------
// RPC handlers
// ---------------------------------------------------------------------

static auth_server *
server_of(Threadgate__Auth__V1__AuthService_Service *service)
{
	return ((auth_server *) ((char *) service -
	    offsetof(auth_server, service)));
}

static void
auth_rpc_authenticate(Threadgate__Auth__V1__AuthService_Service *service,
    const Threadgate__Auth__V1__AuthenticateRequest             *in,
    Threadgate__Auth__V1__Identity_Closure closure, void *closure_data)
{
	auth_server                   *srv  = server_of(service);
	cm_rpc_call                   *call = cm_rpc_call_of(closure_data);
	Threadgate__Auth__V1__Identity id =
	    THREADGATE__AUTH__V1__IDENTITY__INIT;
	auth_result res;
	char        detail[AUTH_DETAIL_MAX] = "";
	char        scopes[AUTH_SCOPES_MAX];
	char       *perms[AUTH_PERMS_MAX];
	size_t      nperms = 0;
	cm_err      rv;

	if (call->worker == NULL) {
		count(CM_EINTERNAL);
		cm_rpc_fail(call, CM_EUNAVAIL, "auth worker not ready");
		closure(NULL, closure_data);
		return;
	}
	// Inline on an nng callback thread, only what cannot block: header
	// checks and the cache. A miss is handed to a blocking thread, where
	// this handler runs again with blocking_ok set.
	{
		int would_block = 0;

		rv = auth_authenticate(srv, call->worker,
		    (const char *const *) in->authorization,
		    in->n_authorization,
		    (const char *const *) in->required_scopes,
		    in->n_required_scopes, call->deadline_ms, &res, detail,
		    sizeof(detail), call->blocking_ok ? NULL : &would_block);
		if (would_block) {
			if (cm_rpc_offload(call, 0) == CM_OK) {
				return;
			}
			detail[0] = '\0';
			rv        = auth_authenticate(srv, call->worker,
			           (const char *const *) in->authorization,
			           in->n_authorization,
			           (const char *const *) in->required_scopes,
			           in->n_required_scopes, call->deadline_ms, &res,
			           detail, sizeof(detail), NULL);
		}
	}
	if (rv != CM_OK) {
		if (rv == CM_EAUTH || rv == CM_EPERM || rv == CM_EINVAL) {
			// Why a caller got a 401/403/422, for whoever follows
			// the request id (never the token itself).
			cm_log_field f = { .key = "reason",
				.type           = CM_LOG_F_STR,
				.str            = cm_err_label(rv) };
			cm_logf(CM_LOG_INFO, call->request_id, &f, 1,
			    "authenticate refused: %s", detail);
		} else {
			cm_warn(call->request_id,
			    "authenticate failed closed: %s (%s)",
			    cm_strerror(rv), detail);
		}
		cm_rpc_fail(call, rv, "%s",
		    detail[0] != '\0' ? detail : cm_strerror(rv));
		closure(NULL, closure_data);
		return;
	}

	// Split the space-separated permissions into the repeated field.
	memcpy(scopes, res.scopes, sizeof(scopes));
	for (char *p = scopes; *p != '\0' && nperms < AUTH_PERMS_MAX;) {
		size_t wl;
		while (*p == ' ') {
			p++;
		}
		wl = strcspn(p, " ");
		if (wl == 0) {
			break;
		}
		perms[nperms++] = p;
		p += wl;
		if (*p == ' ') {
			*p++ = '\0';
		}
	}
	id.identity         = res.identity;
	id.email            = res.email;
	id.permissions      = perms;
	id.n_permissions    = nperms;
	id.is_authenticated = 1;
	id.display_name     = res.identity;
	id.expires_at       = res.expires_at;
	id.provider         = (char *) srv->provider->name;
	// The caller may reuse this answer only as long as we would: until
	// our cache entry ends (never past the token's exp or, in hybrid
	// mode, its next IdP confirmation). A sign-out then takes effect for
	// every reuser within AUTH_CACHE_TTL, as it does here.
	if (res.cached_until > 0) {
		int64_t left = res.cached_until * 1000 - cm_now_ms();

		id.reuse_ms = left > 0 ? left : 0;
	}
	closure(&id, closure_data);
}

static void
auth_rpc_stats(Threadgate__Auth__V1__AuthService_Service *service,
    const Threadgate__Auth__V1__StatsRequest             *in,
    Threadgate__Auth__V1__StatsReply_Closure closure, void *closure_data)
{
	auth_server                     *srv = server_of(service);
	Threadgate__Auth__V1__StatsReply r =
	    THREADGATE__AUTH__V1__STATS_REPLY__INIT;

	r.valid         = atomic_load(&auth_g_stats.valid);
	r.refused       = atomic_load(&auth_g_stats.refused);
	r.unavailable   = atomic_load(&auth_g_stats.unavailable);
	r.cache_hits    = atomic_load(&auth_g_stats.cache_hits);
	r.cache_misses  = atomic_load(&auth_g_stats.cache_misses);
	r.idp_calls     = atomic_load(&auth_g_stats.idp_calls);
	r.cache_entries = auth_cache_count(srv->cache);
	r.jwks_fetches  = atomic_load(&auth_g_stats.jwks_fetches);
	r.malformed     = atomic_load(&auth_g_stats.malformed);
	closure(&r, closure_data);
}

// ---------------------------------------------------------------------
// Workers and lifecycle
// ---------------------------------------------------------------------

static void *
worker_init(void *arg, int index, cm_err *err)
{
	auth_worker *w = cm_xcalloc(1, sizeof(*w));

	(void) arg;
	w->index = index;
	w->curl  = curl_easy_init();
	if (w->curl == NULL) {
		cm_error(
		    NULL, "worker %d: cannot create a CURL handle", index);
		free(w);
		*err = CM_EINTERNAL;
		return (NULL);
	}
	return (w);
}

static void
worker_fini(void *arg, void *state)
{
	auth_worker *w = state;

	(void) arg;
	if (w == NULL) {
		return;
	}
	curl_easy_cleanup(w->curl);
	free(w);
}

cm_err
auth_server_new_local(
    const auth_config *cfg, auth_provider *provider, auth_server **out)
{
	static const Threadgate__Auth__V1__AuthService_Service init =
	    THREADGATE__AUTH__V1__AUTH_SERVICE__INIT(auth_rpc_);
	auth_server *srv;
	cm_err       rv;

	if (cfg == NULL || provider == NULL || out == NULL) {
		return (CM_EINVAL);
	}
	auth_metrics_init();
	srv           = cm_xcalloc(1, sizeof(*srv));
	srv->service  = init;
	srv->cfg      = cfg;
	srv->provider = provider;
	rv            = auth_cache_new(
	               cfg->cache_ttl_s > 0 ? cfg->cache_max : 0, &srv->cache);
	if (rv != CM_OK) {
		free(srv);
		return (rv);
	}
	*out = srv;
	return (CM_OK);
}

// Requests the rpc layer refused before Authenticate ran: undecodable
// envelopes and payloads, unknown methods, expired deadlines.
static void
on_reject(void *arg, cm_err err)
{
	if (err == CM_EINVAL || err == CM_ENOTSUP) {
		atomic_fetch_add(&auth_g_stats.malformed, 1);
	}
}

// The Health rpc's answer (on the rpc layer's health thread): whether
// the provider can verify tokens now.
static int
health(void *arg, char *detail, size_t n)
{
	auth_server *srv = arg;

	if (srv->provider->health == NULL) {
		return (1);
	}
	return (srv->provider->health(
	    srv->provider, srv->health_worker, detail, n));
}

cm_err
auth_server_start(
    const auth_config *cfg, auth_provider *provider, auth_server **out)
{
	cm_rpc_server_config rc;
	auth_server         *srv = NULL;
	cm_err               rv;

	rv = auth_server_new_local(cfg, provider, &srv);
	if (rv != CM_OK) {
		goto out;
	}
	srv->health_worker = worker_init(NULL, -1, &rv);
	if (srv->health_worker == NULL) {
		goto out;
	}
	memset(&rc, 0, sizeof(rc));
	rc.health          = health;
	rc.url             = cfg->listen_url;
	rc.service         = &srv->service.base;
	rc.nworkers        = cfg->workers;
	rc.nlanes          = 1;
	rc.lane_threads[0] = cfg->workers;
	rc.worker_init     = worker_init;
	rc.worker_fini     = worker_fini;
	rc.on_reject       = on_reject;
	rc.arg             = srv;
	rv                 = cm_rpc_server_start(&rc, &srv->rpc);
	if (rv != CM_OK) {
		goto out;
	}
	cm_metrics_add_collector(cm_metrics_default(), cache_collect, srv);
	*out = srv;
	srv  = NULL;
out:
	auth_server_stop(srv);
	return (rv);
}

void
auth_server_stop(auth_server *srv)
{
	if (srv == NULL) {
		return;
	}
	cm_metrics_remove_collector(cm_metrics_default(), cache_collect, srv);
	cm_rpc_server_stop(srv->rpc);
	worker_fini(NULL, srv->health_worker);
	auth_cache_free(srv->cache);
	free(srv);
}

auth_cache *
auth_server_cache(auth_server *srv)
{
	return (srv->cache);
}

ProtobufCService *
auth_server_service(auth_server *srv)
{
	return (&srv->service.base);
}
