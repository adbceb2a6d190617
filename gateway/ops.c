// SPDX-License-Identifier: MIT
//
// Operations side of the gateway: readiness, metrics and the access line.
// http.c and upstream.c call in through a few hooks (gw_ops_* in gw.h);
// everything else lives here.
//
// Readiness. A prober thread, with its own rpc clients (so probes never
// compete with traffic for client slots and the server's clients can close
// in any order), calls the Health rpc of each upstream every
// GATEWAY_READY_INTERVAL_MS. GET /ready answers from the last round: 200
// while every upstream had at least one replica answer SERVING (a round
// tries GW_READY_PROBE_TRIES calls, so one bad replica behind a URL does
// not hide good ones), else 503 with a JSON body naming what is missing
// and why. On SIGTERM main() calls gw_ops_drain() first: /ready turns 503
// while the gateway still serves, then the server drains.
//
// Metrics (the default registry; served on METRICS_ADDR, or on the public
// port's GET /metrics only with GATEWAY_PUBLIC_METRICS=1):
//   threadgate_gateway_requests_total{route,method,status}
//   threadgate_gateway_request_duration_seconds{route,method}
//   threadgate_gateway_requests_in_flight
//   threadgate_gateway_open_connections
//   threadgate_gateway_upstream_requests_total{service,outcome}
//   threadgate_gateway_upstream_request_duration_seconds{service}
//   threadgate_gateway_upstream_serving{service}
//   threadgate_gateway_ready
// Labels come from closed sets only: route is the route template
// ("/threads/{id}") or "unmatched", method one of GET POST PATCH DELETE
// PUT HEAD OPTIONS other, status one of the codes the gateway produces or
// "other", service auth-service | thread-service, outcome ok | error |
// timeout | unavailable. Every series is looked up at start, so recording
// a request is a handful of relaxed atomic adds.
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "gateway/gw.h"

// Method label values; requests with any other method count as "other".
static const char *const methods[] = { "GET", "PUT", "POST", "HEAD", "PATCH",
	"DELETE", "OPTIONS", "other" };
#define NMETHODS (sizeof(methods) / sizeof(methods[0]))
// Status label values: every status the gateway's HTTP layer can produce
// for a request that reached the handler; anything else is "other".
static const unsigned statuses[] = { 200, 201, 204, 400, 401, 403, 404, 405,
	409, 413, 414, 422, 429, 431, 500, 501, 502, 503, 504 };
#define NSTATUSES (sizeof(statuses) / sizeof(statuses[0]) + 1)
// Series slots: one per route (each route has one method), then one per
// method for requests that matched no route.
#define NSLOTS (GW_R_COUNT_ + NMETHODS)

static const char *const upstream_names[GW_UP_COUNT_] = { "auth-service",
	"thread-service" };

typedef enum {
	UP_OK = 0,
	UP_ERROR,
	UP_TIMEOUT,
	UP_UNAVAILABLE,
	UP_N_
} up_outcome;
static const char *const outcome_names[UP_N_] = { "ok", "error", "timeout",
	"unavailable" };

// Longest /ready detail text.
#define READY_DETAIL_MAX 512
// Longest answer read by --health-check.
#define HEALTH_CHECK_BUF 4096
// Deadline of --health-check's HTTP request, seconds.
#define HEALTH_CHECK_TIMEOUT_S 2

struct gw_ops {
	gw_server       *srv;
	cm_metrics_http *mh;

	// Prober.
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	pthread_t       thread;
	int             running;
	int             stop;
	int             probed; // a round completed
	// The request path's own clients (srv->auth, srv->threads), so a
	// Health answer proves the connections requests use, not others.
	cm_rpc_client *probe[GW_UP_COUNT_];
	int            serving[GW_UP_COUNT_];
	char           detail[GW_UP_COUNT_][CM_RPC_DETAIL_MAX];
	atomic_int     draining;

	// Metrics.
	cm_counter   *req[NSLOTS][NSTATUSES];
	cm_histogram *dur[NSLOTS];
	cm_gauge     *in_flight;
	cm_gauge     *connections;
	cm_counter   *up[GW_UP_COUNT_][UP_N_];
	cm_histogram *up_dur[GW_UP_COUNT_];
	cm_gauge     *up_serving[GW_UP_COUNT_];
	cm_gauge     *ready;
	cm_counter   *acache[2]; // identity cache misses, hits
};

static int64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
}

static size_t
method_index(const char *m)
{
	for (size_t i = 0; i + 1 < NMETHODS; i++) {
		if (strcmp(m, methods[i]) == 0) {
			return (i);
		}
	}
	return (NMETHODS - 1);
}

static size_t
status_index(unsigned st)
{
	for (size_t i = 0; i + 1 < NSTATUSES; i++) {
		if (statuses[i] == st) {
			return (i);
		}
	}
	return (NSTATUSES - 1);
}

// ---------------------------------------------------------------------
// Metrics set-up
// ---------------------------------------------------------------------

static void
metrics_init(gw_ops *o)
{
	static const char *const l_req[] = { "route", "method", "status",
		NULL };
	static const char *const l_dur[] = { "route", "method", NULL };
	static const char *const l_up[]  = { "service", "outcome", NULL };
	static const char *const l_svc[] = { "service", NULL };
	cm_metrics              *r       = cm_metrics_default();
	cm_metric_desc           d       = { 0 };
	cm_mfamily              *f_req, *f_dur, *f_up, *f_updur, *f_upsrv;
	size_t                   nroutes;
	const gw_route          *routes = gw_route_table(&nroutes);

	d.name   = "threadgate_gateway_requests_total";
	d.help   = "HTTP requests answered, by route template, method and "
	           "status.";
	d.type   = CM_METRIC_COUNTER;
	d.labels = l_req;
	d.sparse = 1;
	f_req    = cm_metrics_family(r, &d);
	memset(&d, 0, sizeof(d));
	d.name   = "threadgate_gateway_request_duration_seconds";
	d.help   = "Time from the request's headers to its response being "
	           "queued, by route template and method.";
	d.type   = CM_METRIC_HISTOGRAM;
	d.labels = l_dur;
	d.unit   = 1e-6;
	d.sparse = 1;
	f_dur    = cm_metrics_family(r, &d);
	memset(&d, 0, sizeof(d));
	d.name   = "threadgate_gateway_upstream_requests_total";
	d.help   = "Rpc calls to the upstream services by outcome: ok, error "
	           "(the service answered an error), timeout, unavailable.";
	d.type   = CM_METRIC_COUNTER;
	d.labels = l_up;
	f_up     = cm_metrics_family(r, &d);
	memset(&d, 0, sizeof(d));
	d.name   = "threadgate_gateway_upstream_request_duration_seconds";
	d.help   = "Duration of rpc calls to the upstream services.";
	d.type   = CM_METRIC_HISTOGRAM;
	d.labels = l_svc;
	d.unit   = 1e-6;
	f_updur  = cm_metrics_family(r, &d);
	memset(&d, 0, sizeof(d));
	d.name   = "threadgate_gateway_upstream_serving";
	d.help   = "1 when the upstream answered Health SERVING in the last "
	           "readiness round, else 0.";
	d.type   = CM_METRIC_GAUGE;
	d.labels = l_svc;
	f_upsrv  = cm_metrics_family(r, &d);

	for (size_t s = 0; s < NSLOTS; s++) {
		const char *v[3];

		if (s < (size_t) GW_R_COUNT_) {
			CM_ASSERT(
			    s < nroutes && routes[s].id == (gw_route_id) s);
			v[0] = routes[s].pattern;
			v[1] = routes[s].method;
		} else {
			v[0] = "unmatched";
			v[1] = methods[s - GW_R_COUNT_];
		}
		for (size_t i = 0; i < NSTATUSES; i++) {
			char code[16];

			if (i + 1 < NSTATUSES) {
				snprintf(
				    code, sizeof(code), "%u", statuses[i]);
			} else {
				snprintf(code, sizeof(code), "other");
			}
			v[2]         = code;
			o->req[s][i] = cm_counter_get(f_req, v);
		}
		o->dur[s] = cm_histogram_get(f_dur, v);
	}
	for (int u = 0; u < GW_UP_COUNT_; u++) {
		for (int k = 0; k < UP_N_; k++) {
			const char *v[2] = { upstream_names[u],
				outcome_names[k] };
			o->up[u][k]      = cm_counter_get(f_up, v);
		}
		o->up_dur[u] = cm_histogram_get(f_updur, &upstream_names[u]);
		o->up_serving[u] = cm_gauge_get(f_upsrv, &upstream_names[u]);
	}
	o->in_flight =
	    cm_metrics_gauge(r, "threadgate_gateway_requests_in_flight",
	        "HTTP requests received and not yet completed.");
	o->connections =
	    cm_metrics_gauge(r, "threadgate_gateway_open_connections",
	        "Client connections open on the public port.");
	o->ready = cm_metrics_gauge(r, "threadgate_gateway_ready",
	    "1 while GET /ready answers 200, else 0.");
	o->acache[0] =
	    cm_metrics_counter(r, "threadgate_gateway_auth_cache_misses_total",
	        "Authenticated requests that asked the auth-service (the "
	        "identity cache was off, empty or expired for them).");
	o->acache[1] =
	    cm_metrics_counter(r, "threadgate_gateway_auth_cache_hits_total",
	        "Authenticated requests answered from the gateway's identity "
	        "cache, without an Authenticate rpc.");
}

// ---------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------

void
gw_ops_request_begin(gw_job *job, const char *url)
{
	gw_ops *o = job->srv->ops;
	size_t  n = strcspn(url, "?");

	if (n >= sizeof(job->path)) {
		n = sizeof(job->path) - 1;
	}
	memcpy(job->path, url, n);
	job->path[n] = '\0';
	if (o != NULL) {
		cm_gauge_add(o->in_flight, 1);
	}
}

void
gw_ops_header(gw_job *job, const char *key, const char *value)
{
	if (strcasecmp(key, "traceparent") == 0 &&
	    job->traceparent[0] == '\0') {
		// An invalid value is dropped, as W3C Trace Context says.
		(void) cm_traceparent_parse(value, job->traceparent);
	}
}

void
gw_ops_request_end(gw_job *job, int sent)
{
	gw_ops *o  = job->srv->ops;
	int64_t us = cm_now_us() - job->t0_us;
	size_t  slot;
	char    msg_dur[32];

	if (o != NULL) {
		cm_gauge_add(o->in_flight, -1);
	}
	cm_log_ctx_set(job->rid, job->traceparent);
	if (!sent) {
		cm_debug(job->rid, "%s %s aborted before the response",
		    job->method, job->path);
		cm_log_ctx_clear();
		return;
	}
	if (o != NULL) {
		slot = job->match.route != NULL
		    ? (size_t) job->match.route->id
		    : (size_t) GW_R_COUNT_ + method_index(job->method);
		cm_counter_inc(o->req[slot][status_index(job->resp.status)]);
		cm_histogram_observe(
		    o->dur[slot], (uint64_t) (us > 0 ? us : 0));
	}
	if (cm_log_enabled(CM_LOG_INFO)) {
		cm_log_field f[6] = {
			{ .key         = "method",
			    .type      = CM_LOG_F_STR,
			    .str       = job->method,
			    .json_only = 1 },
			{ .key         = "path",
			    .type      = CM_LOG_F_STR,
			    .str       = job->path,
			    .json_only = 1 },
			{ .key         = "status",
			    .type      = CM_LOG_F_INT,
			    .num       = job->resp.status,
			    .json_only = 1 },
			{ .key         = "duration_ms",
			    .type      = CM_LOG_F_MS,
			    .num       = us,
			    .json_only = 1 },
			{ .key    = "owner",
			    .type = CM_LOG_F_STR,
			    .str  = job->identity[0] != '\0' ? job->identity
			                                     : "-" },
			{ .key         = "route",
			    .type      = CM_LOG_F_STR,
			    .str       = job->match.route != NULL
			              ? job->match.route->pattern
			              : "-",
			    .json_only = 1 },
		};
		snprintf(msg_dur, sizeof(msg_dur), "%lld.%03lldms",
		    (long long) (us / 1000), (long long) (us % 1000));
		cm_logf(CM_LOG_INFO, job->rid, f, 6, "%s %s %u %s",
		    job->method, job->path, job->resp.status, msg_dur);
	}
	cm_log_ctx_clear();
}

// ---------------------------------------------------------------------
// Upstream calls
// ---------------------------------------------------------------------

static void
up_record(gw_ops *o, int which, cm_err st, int64_t us)
{
	up_outcome k;

	if (o == NULL) {
		return;
	}
	switch (st) {
	case CM_OK:
		k = UP_OK;
		break;
	case CM_ETIMEDOUT:
		k = UP_TIMEOUT;
		break;
	case CM_EUNAVAIL:
		k = UP_UNAVAILABLE;
		break;
	default:
		k = UP_ERROR;
		break;
	}
	cm_counter_inc(o->up[which][k]);
	if (us >= 0) {
		cm_histogram_observe(o->up_dur[which], (uint64_t) us);
	}
}

static void
ops_done(void *arg, cm_err st, const char *detail, ProtobufCMessage *reply)
{
	gw_job *job = arg;

	up_record(job->srv->ops, job->up_which, st, mono_us() - job->up_t0_us);
	job->up_done(job, st, detail, reply);
}

cm_err
gw_ops_call(gw_job *job, gw_upstream which, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *reply_desc,
    const cm_rpc_call_opts *how, cm_rpc_done_fn done)
{
	gw_server       *srv  = job->srv;
	gw_ops          *o    = srv->ops;
	cm_rpc_client   *c    = which == GW_UP_AUTH ? srv->auth : srv->threads;
	cm_rpc_call_opts opts = *how;
	cm_err           rv;

	opts.request_id  = job->rid;
	opts.traceparent = job->traceparent;
	opts.timeout_ms  = which == GW_UP_AUTH ? srv->cfg.auth_timeout_ms
	                                       : srv->cfg.threads_timeout_ms;
	job->up_which    = (int) which;
	job->up_done     = done;
	job->up_t0_us    = mono_us();
	rv               = cm_rpc_call_start(
	                  c, method, &opts, req, reply_desc, ops_done, job);
	if (rv != CM_OK) {
		// done will not run; the job is still ours.
		up_record(o, (int) which, CM_EUNAVAIL, -1);
	}
	return (rv);
}

// ---------------------------------------------------------------------
// Readiness
// ---------------------------------------------------------------------

static void
set_ready_gauge(gw_ops *o)
{
	cm_gauge_set(o->ready, gw_ops_ready(o->srv));
}

int
gw_ops_ready(gw_server *srv)
{
	gw_ops *o = srv->ops;
	int     ok;

	if (o == NULL || atomic_load(&o->draining)) {
		return (0);
	}
	pthread_mutex_lock(&o->mu);
	ok = o->probed;
	for (int u = 0; u < GW_UP_COUNT_; u++) {
		ok = ok && o->serving[u];
	}
	pthread_mutex_unlock(&o->mu);
	return (ok);
}

// One probe of upstream u: up to GW_READY_PROBE_TRIES Health calls.
static int
probe_one(gw_ops *o, int u, char *detail, size_t n)
{
	for (int t = 0; t < GW_READY_PROBE_TRIES; t++) {
		if (cm_rpc_health(o->probe[u], NULL, GW_READY_PROBE_TIMEOUT_MS,
		        detail, n) == CM_OK) {
			return (1);
		}
		pthread_mutex_lock(&o->mu);
		if (o->stop) {
			pthread_mutex_unlock(&o->mu);
			break;
		}
		pthread_mutex_unlock(&o->mu);
	}
	return (0);
}

static void *
prober_main(void *arg)
{
	gw_ops *o     = arg;
	int64_t every = o->srv->cfg.ready_interval_ms > 0
	    ? o->srv->cfg.ready_interval_ms
	    : GW_READY_INTERVAL_DEFAULT_MS;
	int     last[GW_UP_COUNT_];

	for (int u = 0; u < GW_UP_COUNT_; u++) {
		last[u] = -1;
	}
	pthread_mutex_lock(&o->mu);
	while (!o->stop) {
		struct timespec ts;

		pthread_mutex_unlock(&o->mu);
		for (int u = 0; u < GW_UP_COUNT_; u++) {
			char detail[CM_RPC_DETAIL_MAX] = "";
			int  ok = probe_one(o, u, detail, sizeof(detail));

			pthread_mutex_lock(&o->mu);
			o->serving[u] = ok;
			snprintf(o->detail[u], sizeof(o->detail[u]), "%s",
			    ok ? "" : detail);
			pthread_mutex_unlock(&o->mu);
			cm_gauge_set(o->up_serving[u], ok);
			if (ok != last[u]) {
				if (ok) {
					cm_info(NULL, "ready: %s serving",
					    upstream_names[u]);
				} else {
					cm_warn(NULL,
					    "ready: %s not serving: %s",
					    upstream_names[u], detail);
				}
				last[u] = ok;
			}
		}
		pthread_mutex_lock(&o->mu);
		o->probed = 1;
		pthread_mutex_unlock(&o->mu);
		set_ready_gauge(o);
		pthread_mutex_lock(&o->mu);
		cm_timespec_in(&ts, CLOCK_MONOTONIC, every);
		while (!o->stop &&
		    pthread_cond_timedwait(&o->cv, &o->mu, &ts) == 0) {
			// woken early: re-check stop, keep the deadline
		}
	}
	pthread_mutex_unlock(&o->mu);
	return (NULL);
}

void
gw_ops_drain(gw_server *srv)
{
	gw_ops *o = srv->ops;

	if (o == NULL || atomic_exchange(&o->draining, 1)) {
		return;
	}
	cm_gauge_set(o->ready, 0);
	cm_info(NULL, "draining: /ready answers 503 from now on");
}

// The /ready body: which upstream is serving, and why not.
static void
ready_response(gw_ops *o, gw_response *r)
{
	json_t *ups     = json_object();
	json_t *missing = json_array();
	json_t *v;
	char    why[READY_DETAIL_MAX] = "";
	int     draining              = atomic_load(&o->draining);
	int     ok;

	pthread_mutex_lock(&o->mu);
	ok = o->probed && !draining;
	for (int u = 0; u < GW_UP_COUNT_; u++) {
		json_t *e = json_pack("{s:b}", "serving", o->serving[u]);

		if (!o->serving[u]) {
			size_t used = strlen(why);
			ok          = 0;
			json_array_append_new(
			    missing, json_string(upstream_names[u]));
			json_object_set_new(e, "detail",
			    json_string(
			        o->probed ? o->detail[u] : "starting"));
			snprintf(why + used, sizeof(why) - used, "%s%s (%s)",
			    used == 0 ? "" : ", ", upstream_names[u],
			    o->probed ? o->detail[u] : "starting");
		}
		json_object_set_new(ups, upstream_names[u], e);
	}
	pthread_mutex_unlock(&o->mu);
	if (ok) {
		v = json_pack("{s:b,s:o}", "ready", 1, "upstreams", ups);
		json_decref(missing);
		gw_response_json(r, 200, v);
	} else {
		char detail[READY_DETAIL_MAX + 32];

		if (draining) {
			snprintf(detail, sizeof(detail), "shutting down");
		} else {
			snprintf(detail, sizeof(detail), "not ready: %s", why);
		}
		v = json_pack("{s:b,s:s,s:b,s:o,s:o}", "ready", 0, "detail",
		    detail, "draining", draining, "missing", missing,
		    "upstreams", ups);
		gw_response_json(r, 503, v);
	}
	json_decref(v);
}

void
gw_ops_meta_response(gw_server *srv, gw_route_id id, gw_response *r)
{
	gw_ops *o = srv->ops;

	if (id == GW_R_READY) {
		if (o == NULL) {
			gw_status_response(r, 503, "starting");
			return;
		}
		ready_response(o, r);
		return;
	}
	if (id == GW_R_METRICS) {
		char  *text = NULL;
		size_t len  = 0;

		if (!srv->cfg.public_metrics) {
			gw_error_response(r, CM_ENOENT, "Not found", 0);
			return;
		}
		if (cm_metrics_render(cm_metrics_default(), &text, &len) !=
		    CM_OK) {
			gw_error_response(r, CM_EINTERNAL, NULL, 0);
			return;
		}
		gw_response_fini(r);
		r->status       = 200;
		r->body         = text;
		r->body_len     = len;
		r->content_type = "text/plain; version=0.0.4; charset=utf-8";
		return;
	}
	gw_meta_response(id, r);
}

// ---------------------------------------------------------------------
// Start / stop
// ---------------------------------------------------------------------

// Scrape time: calls each upstream client sent in batches (summed over
// its replicas).
static void
batched_collect(void *arg, cm_mwriter *w)
{
	gw_ops             *o = arg;
	cm_rpc_replica_stat st[CM_RPC_MAX_REPLICAS];

	cm_mwriter_family(w, "threadgate_gateway_upstream_batched_calls_total",
	    "counter",
	    "Rpc calls that shared a message with others "
	    "(GATEWAY_BATCH_WINDOW), "
	    "by service.");
	for (int u = 0; u < GW_UP_COUNT_; u++) {
		size_t n =
		    cm_rpc_client_stats(o->probe[u], st, CM_RPC_MAX_REPLICAS);
		double sum = 0;

		for (size_t i = 0; i < n && i < CM_RPC_MAX_REPLICAS; i++) {
			sum += (double) st[i].batched;
		}
		cm_mwriter_sample(w,
		    "threadgate_gateway_upstream_batched_calls_total",
		    "service", upstream_names[u], sum);
	}
}

cm_err
gw_ops_start(gw_server *srv)
{
	gw_ops            *o = cm_xcalloc(1, sizeof(*o));
	pthread_condattr_t ca;
	cm_err             rv;

	o->srv = srv;
	atomic_init(&o->draining, 0);
	pthread_mutex_init(&o->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&o->cv, &ca);
	pthread_condattr_destroy(&ca);
	metrics_init(o);
	srv->ops = o;
	rv       = cm_metrics_serve_env("gateway", &o->mh);
	if (rv != CM_OK) {
		goto fail;
	}
	o->probe[GW_UP_AUTH]    = srv->auth;
	o->probe[GW_UP_THREADS] = srv->threads;
	cm_metrics_add_collector(cm_metrics_default(), batched_collect, o);
	if (pthread_create(&o->thread, NULL, prober_main, o) != 0) {
		rv = CM_EINTERNAL;
		goto fail;
	}
	o->running = 1;
	return (CM_OK);
fail:
	gw_ops_stop(srv);
	return (rv);
}

void
gw_ops_stop_prober(gw_server *srv)
{
	gw_ops *o = srv->ops;

	if (o == NULL) {
		return;
	}
	pthread_mutex_lock(&o->mu);
	o->stop = 1;
	pthread_cond_signal(&o->cv);
	pthread_mutex_unlock(&o->mu);
	if (o->running) {
		pthread_join(o->thread, NULL);
		o->running = 0;
	}
}

void
gw_ops_stop(gw_server *srv)
{
	gw_ops *o = srv->ops;

	if (o == NULL) {
		return;
	}
	gw_ops_stop_prober(srv);
	cm_metrics_remove_collector(cm_metrics_default(), batched_collect, o);
	cm_metrics_serve_env_stop(o->mh);
	cm_gauge_set(o->ready, 0);
	cm_gauge_set(o->in_flight, 0);
	cm_gauge_set(o->connections, 0);
	pthread_cond_destroy(&o->cv);
	pthread_mutex_destroy(&o->mu);
	srv->ops = NULL;
	free(o);
}

void
gw_ops_auth_cache(gw_server *srv, int hit)
{
	if (srv->ops != NULL) {
		cm_counter_inc(srv->ops->acache[hit != 0]);
	}
}

void
gw_ops_on_connection(gw_server *srv, int delta)
{
	if (srv->ops != NULL) {
		cm_gauge_add(srv->ops->connections, delta);
	}
}

// ---------------------------------------------------------------------
// --health-check
// ---------------------------------------------------------------------

int
gw_ops_health_check_main(const gw_config *cfg)
{
	struct addrinfo   hints = { 0 };
	struct addrinfo  *res   = NULL;
	struct timeval    tv    = { HEALTH_CHECK_TIMEOUT_S, 0 };
	const char       *host  = cfg->host;
	char              port[16];
	char              buf[HEALTH_CHECK_BUF];
	size_t            len = 0;
	ssize_t           n;
	int               fd   = -1;
	int               code = 1;
	static const char req[] =
	    "GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n";

	if (host == NULL || host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 ||
	    strcmp(host, "*") == 0) {
		host = "127.0.0.1";
	} else if (strcmp(host, "::") == 0) {
		host = "::1";
	}
	snprintf(port, sizeof(port), "%d", cfg->port);
	hints.ai_socktype = SOCK_STREAM;
	if (cfg->port == 0 || getaddrinfo(host, port, &hints, &res) != 0) {
		printf("not ready: cannot resolve %s:%s\n", host, port);
		return (1);
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0 ||
	    write(fd, req, sizeof(req) - 1) != (ssize_t) (sizeof(req) - 1)) {
		printf("not ready: cannot reach %s:%s: %s\n", host, port,
		    strerror(errno));
		goto out;
	}
	while (len + 1 < sizeof(buf) &&
	    (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0) {
		len += (size_t) n;
	}
	buf[len] = '\0';
	if (strncmp(buf, "HTTP/1.", 7) == 0 &&
	    strncmp(buf + 8, " 200", 4) == 0) {
		code = 0;
	}
	{
		const char *body = strstr(buf, "\r\n\r\n");
		printf("%s %s\n", code == 0 ? "ready" : "not ready:",
		    body != NULL ? body + 4 : "(no answer)");
	}
out:
	if (fd >= 0) {
		close(fd);
	}
	freeaddrinfo(res);
	return (code);
}
