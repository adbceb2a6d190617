// SPDX-License-Identifier: MIT
//
// The HTTP side of the gateway, on libmicrohttpd 0.9.75: an epoll thread
// pool with suspend/resume. One gw_job per request:
//
//   1st handler call   create the job, read the allowed headers, route;
//                      never queue a response here (MHD would close the
//                      connection; c-stack-measurements.md section 2)
//   upload calls       collect the body up to max_body; beyond it, or for
//                      a request already decided (404, 405, meta), read
//                      and drop the rest
//   last call          answer locally (meta, errors) or suspend the
//                      connection and start the upstream chain
//   after resume       queue the response the chain left in the job
//
// Every response, errors included, carries x-request-id and the CORS
// headers. Limits are set explicitly: idle timeout, connection and per-IP
// limits, the per-connection memory pool (bounds headers), our body cap,
// the URL length. On stop every suspended connection is resumed before
// MHD_stop_daemon (an MHD requirement).
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "gateway/gw.h"

// Headers exposed to browser scripts (CORS).
#define EXPOSE_HEADERS                                              \
	"x-pagination-total, x-pagination-next, content-location, " \
	"x-request-id"
// Methods announced in preflight answers.
#define ALLOW_METHODS "GET, POST, PATCH, DELETE, OPTIONS"
// Request headers allowed when a preflight names none.
#define ALLOW_HEADERS_DEFAULT \
	"authorization, content-type, prefer, x-request-id, x-api-key"
// How long browsers may cache a preflight answer, seconds.
#define PREFLIGHT_MAX_AGE "600"
// gw_job.early: the answer was decided from the headers alone.
#define EARLY_ANSWER    1 // resp holds it (meta route or an error)
#define EARLY_PREFLIGHT 2 // a CORS preflight: 204 + the Allow-* headers
// listen(2) backlog: enough for a burst of connects on a 2-core box.
#define LISTEN_BACKLOG 511

// ---------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------

static int
header_is(const char *key, const char *name)
{
	return (strcasecmp(key, name) == 0);
}

static void
copy_bounded(char *dst, size_t dstsz, const char *src)
{
	size_t n = strlen(src);

	if (n >= dstsz) {
		// Too long to echo safely: behave as if absent.
		dst[0] = '\0';
		return;
	}
	memcpy(dst, src, n + 1);
}

// Reads only the headers the gateway uses. Everything else - in
// particular any identity-looking header a client sends (x-user-id,
// x-owner, x-forwarded-user, remote-user, ...) - is never looked at.
static enum MHD_Result
header_cb(
    void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	gw_job *job = cls;

	(void) kind;
	if (key == NULL || value == NULL) {
		return (MHD_YES);
	}
	if (header_is(key, MHD_HTTP_HEADER_AUTHORIZATION)) {
		if (job->nauth >= GW_AUTH_HEADERS_MAX ||
		    strlen(value) > GW_AUTH_VALUE_MAX) {
			job->auth_bad = 1;
			job->nauth++;
			return (MHD_YES);
		}
		job->auth[job->nauth++] = cm_xstrdup(value);
	} else if (header_is(key, "x-request-id")) {
		if (job->rid[0] == '\0') {
			gw_request_id_pick(value, job->rid);
		}
	} else if (header_is(key, MHD_HTTP_HEADER_ORIGIN)) {
		copy_bounded(job->origin, sizeof(job->origin), value);
	} else if (header_is(key, "Access-Control-Request-Headers")) {
		copy_bounded(job->acrh, sizeof(job->acrh), value);
	} else if (header_is(key, "Prefer")) {
		if (strstr(value, "return=minimal") != NULL) {
			job->prefer_minimal = 1;
		}
	} else if (header_is(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
		int64_t n;
		if (cm_parse_i64(value, 0, INT64_MAX, &n) == CM_OK) {
			job->declared = n;
		}
	} else {
		gw_ops_header(job, key, value);
	}
	return (MHD_YES);
}

static void
job_free(gw_job *job)
{
	if (job == NULL) {
		return;
	}
	for (int i = 0; i < job->nauth && i < GW_AUTH_HEADERS_MAX; i++) {
		free(job->auth[i]);
	}
	free(job->body);
	gw_request_fini(&job->req);
	gw_response_fini(&job->resp);
	free(job);
}

static void
early_error(gw_job *job, cm_err err, const char *detail)
{
	job->early = EARLY_ANSWER;
	gw_error_response(&job->resp, err, detail, 0);
}

static gw_job *
job_new(gw_server *srv, struct MHD_Connection *conn, const char *url,
    const char *method)
{
	gw_job *job = cm_xcalloc(1, sizeof(*job));

	job->srv      = srv;
	job->conn     = conn;
	job->state    = GW_JOB_BODY;
	job->t0_us    = cm_now_us();
	job->declared = -1;
	snprintf(job->method, sizeof(job->method), "%s", method);
	atomic_fetch_add(&srv->active, 1);
	gw_ops_request_begin(job, url);
	MHD_get_connection_values(conn, MHD_HEADER_KIND, header_cb, job);
	if (job->rid[0] == '\0') {
		gw_request_id_pick(NULL, job->rid);
	}
	if (job->nauth > GW_AUTH_HEADERS_MAX) {
		job->nauth = GW_AUTH_HEADERS_MAX;
	}

	if (strlen(url) > GW_URL_MAX) {
		job->early = EARLY_ANSWER;
		gw_status_response(&job->resp, 414, "URI too long");
		return (job);
	}
	if (strcmp(method, "OPTIONS") == 0) {
		// CORS preflight (or a plain OPTIONS): no authentication.
		job->early       = EARLY_PREFLIGHT;
		job->resp.status = 204;
		return (job);
	}
	job->mres = gw_route_match(method, url, &job->match);
	switch (job->mres) {
	case GW_MATCH_NOT_FOUND:
		early_error(job, CM_ENOENT, "Not found");
		return (job);
	case GW_MATCH_BAD_METHOD:
		job->early = EARLY_ANSWER;
		gw_status_response(&job->resp, 405, "Method not allowed");
		gw_response_header(&job->resp, "Allow", job->match.allow);
		return (job);
	case GW_MATCH_BAD_PARAM:
		// Reported after authentication, like every input error.
		job->verr = CM_EINVAL;
		snprintf(job->vdetail, sizeof(job->vdetail), "%s",
		    job->match.detail);
		break;
	case GW_MATCH_OK:
	default:
		break;
	}
	if (job->match.route->action == GW_ACT_NONE) {
		job->early = EARLY_ANSWER;
		gw_ops_meta_response(srv, job->match.route->id, &job->resp);
		return (job);
	}
	if (job->declared > (int64_t) srv->cfg.max_body) {
		job->over_cap = 1;
	}
	return (job);
}

// ---------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------

static enum MHD_Result
queue(gw_job *job)
{
	gw_response         *r = &job->resp;
	struct MHD_Response *resp;
	enum MHD_Result      ret;

	resp = MHD_create_response_from_buffer(r->body_len,
	    r->body != NULL ? r->body : (void *) "", MHD_RESPMEM_MUST_COPY);
	if (resp == NULL) {
		return (MHD_NO);
	}
	if (r->body != NULL) {
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
		    r->content_type != NULL ? r->content_type
		                            : "application/json");
	}
	MHD_add_response_header(resp, "x-request-id", job->rid);
	if (job->origin[0] != '\0') {
		MHD_add_response_header(resp,
		    MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, job->origin);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
	} else {
		MHD_add_response_header(
		    resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, "*");
	}
	MHD_add_response_header(
	    resp, "Access-Control-Expose-Headers", EXPOSE_HEADERS);
	if (job->early == EARLY_PREFLIGHT) {
		MHD_add_response_header(
		    resp, "Access-Control-Allow-Methods", ALLOW_METHODS);
		MHD_add_response_header(resp, "Access-Control-Allow-Headers",
		    job->acrh[0] != '\0' ? job->acrh : ALLOW_HEADERS_DEFAULT);
		MHD_add_response_header(
		    resp, "Access-Control-Max-Age", PREFLIGHT_MAX_AGE);
	}
	for (int i = 0; i < r->nheaders; i++) {
		MHD_add_response_header(resp, r->hname[i], r->hvalue[i]);
	}
	ret = MHD_queue_response(job->conn, r->status, resp);
	MHD_destroy_response(resp);
	job->state = GW_JOB_SENT;
	return (ret);
}

void
gw_job_done(gw_job *job)
{
	gw_server             *srv  = job->srv;
	struct MHD_Connection *conn = job->conn;

	job->state = GW_JOB_READY;
	// After the resume MHD's thread owns the job (and may free it).
	MHD_resume_connection(conn);
	atomic_fetch_sub(&srv->suspended, 1);
}

// ---------------------------------------------------------------------
// The access handler
// ---------------------------------------------------------------------

static const char *
query_cb(void *arg, const char *name)
{
	static _Thread_local char buf[GW_PARAM_MAX];
	gw_job                   *job = arg;
	const char               *raw;

	raw = MHD_lookup_connection_value(
	    job->conn, MHD_GET_ARGUMENT_KIND, name);
	if (raw == NULL) {
		return (NULL);
	}
	if (gw_pct_decode(raw, strlen(raw), buf, sizeof(buf)) < 0) {
		// Undecodable: hand it on raw so the field check refuses it.
		return (raw);
	}
	return (buf);
}

static void
body_chunk(gw_job *job, const char *data, size_t n)
{
	size_t max = job->srv->cfg.max_body;

	if (job->early || job->over_cap) {
		job->discarded += n;
		return;
	}
	if (job->body_len + n > max) {
		// Over the cap: stop storing, drop what we have.
		job->over_cap = 1;
		job->discarded += job->body_len + n;
		free(job->body);
		job->body     = NULL;
		job->body_len = 0;
		job->body_cap = 0;
		return;
	}
	if (job->body_len + n + 1 > job->body_cap) {
		size_t cap = job->body_cap ? job->body_cap : 1024;
		while (cap < job->body_len + n + 1) {
			cap *= 2;
		}
		if (cap > max + 1) {
			cap = max + 1;
		}
		job->body     = cm_xrealloc(job->body, cap);
		job->body_cap = cap;
	}
	memcpy(job->body + job->body_len, data, n);
	job->body_len += n;
	job->body[job->body_len] = '\0';
}

static enum MHD_Result
dispatch(gw_job *job)
{
	char   detail[GW_DETAIL_MAX];
	cm_err rv;

	if (job->over_cap && !job->early) {
		early_error(job, CM_ETOOBIG, "Request body too large");
	}
	if (job->early) {
		return (queue(job));
	}
	if (job->verr == CM_OK) {
		detail[0] = '\0';
		rv = gw_request_build(&job->match, job->body, job->body_len,
		    job->srv->cfg.max_body, query_cb, job, &job->req, detail,
		    sizeof(detail));
		if (rv != CM_OK) {
			job->verr = rv;
			snprintf(
			    job->vdetail, sizeof(job->vdetail), "%s", detail);
		}
		job->req.prefer_minimal = job->prefer_minimal;
	}
	free(job->body);
	job->body = NULL;
	// Count first, then look at stopping (gw_server_stop sets stopping,
	// then waits for suspended == 0): either we see the flag or the stop
	// sees us, so no chain starts on a client being closed.
	atomic_fetch_add(&job->srv->suspended, 1);
	if (atomic_load(&job->srv->stopping)) {
		atomic_fetch_sub(&job->srv->suspended, 1);
		gw_error_response(&job->resp, CM_EUNAVAIL,
		    "Shutting down, retry later", job->nauth > 0);
		return (queue(job));
	}
	// Suspend before the chain starts: its callback may resume at once.
	job->state = GW_JOB_WAIT;
	MHD_suspend_connection(job->conn);
	gw_upstream_start(job);
	return (MHD_YES);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	gw_server *srv = cls;
	gw_job    *job = *con_cls;

	(void) version;
	if (job == NULL) {
		job      = job_new(srv, conn, url, method);
		*con_cls = job;
		if (job->over_cap && !job->early &&
		    job->declared > GW_DRAIN_MAX) {
			// Far over the cap: answer now, before the body is
			// sent (a client using Expect: 100-continue never
			// sends it); MHD closes the connection after.
			early_error(job, CM_ETOOBIG, "Request body too large");
			return (queue(job));
		}
		return (MHD_YES);
	}
	if (*upload_data_size != 0) {
		if (job->state == GW_JOB_BODY) {
			body_chunk(job, upload_data, *upload_data_size);
		}
		*upload_data_size = 0;
		if (job->discarded > GW_DRAIN_MAX) {
			// An undeclared (chunked) body far over the cap:
			// stop reading; closing is the only bounded answer.
			return (MHD_NO);
		}
		return (MHD_YES);
	}
	switch (job->state) {
	case GW_JOB_BODY:
		return (dispatch(job));
	case GW_JOB_READY:
		return (queue(job));
	case GW_JOB_WAIT:
	case GW_JOB_SENT:
	default:
		return (MHD_YES);
	}
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	gw_server *srv = cls;
	gw_job    *job = *con_cls;

	(void) conn;
	if (job == NULL) {
		return;
	}
	*con_cls = NULL;
	gw_ops_request_end(job, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
	CM_ASSERT(job->state != GW_JOB_WAIT);
	job_free(job);
	atomic_fetch_sub(&srv->active, 1);
}

// The URL is split and decoded by the router (per segment), and query
// values by query_cb; MHD must leave both raw.
static size_t
no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
	(void) cls;
	(void) c;
	return (strlen(s));
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[512];

	(void) cls;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	buf[strcspn(buf, "\n")] = '\0';
	cm_warn(NULL, "libmicrohttpd: %s", buf);
}

// ---------------------------------------------------------------------
// Start / stop
// ---------------------------------------------------------------------

static cm_err
bind_listen(const char *host, int port, int *fd_out)
{
	struct addrinfo  hints = { 0 };
	struct addrinfo *res   = NULL;
	char             portstr[16];
	int              fd  = -1;
	int              one = 1;
	int              rc;
	cm_err           rv = CM_OK;

	hints.ai_family   = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags    = AI_PASSIVE;
	snprintf(portstr, sizeof(portstr), "%d", port);
	rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0 || res == NULL) {
		cm_error(NULL, "GATEWAY_HOST %s: %s", host, gai_strerror(rc));
		rv = CM_EINVAL;
		goto out;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		cm_error(NULL, "socket: %s", strerror(errno));
		rv = CM_EUNAVAIL;
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
		if (errno == EADDRINUSE) {
			cm_error(NULL,
			    "port %d on %s is already in use; choose another "
			    "with GATEWAY_PORT (or --port), 0 picks a free "
			    "one",
			    port, host);
		} else {
			cm_error(NULL,
			    "cannot bind %s:%d: %s; check GATEWAY_HOST (or "
			    "--host) and GATEWAY_PORT (or --port)",
			    host, port, strerror(errno));
		}
		rv = CM_EUNAVAIL;
		goto out;
	}
	if (listen(fd, LISTEN_BACKLOG) != 0) {
		cm_error(NULL, "cannot listen on %s:%d: %s", host, port,
		    strerror(errno));
		rv = CM_EUNAVAIL;
		goto out;
	}
	*fd_out = fd;
	fd      = -1;
out:
	if (fd >= 0) {
		close(fd);
	}
	if (res != NULL) {
		freeaddrinfo(res);
	}
	return (rv);
}

static cm_err
write_port_file(const char *path, int port)
{
	char  tmp[4096];
	FILE *f;
	int   ok;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int) getpid()) >=
	    (int) sizeof(tmp)) {
		cm_error(NULL, "GATEWAY_PORT_FILE path too long");
		return (CM_EINVAL);
	}
	f = fopen(tmp, "w");
	if (f == NULL) {
		cm_error(NULL, "cannot write %s: %s", tmp, strerror(errno));
		return (CM_EINVAL);
	}
	ok = fprintf(f, "%d\n", port) > 0;
	ok = (fclose(f) == 0) && ok;
	if (!ok || rename(tmp, path) != 0) {
		cm_error(NULL, "cannot write port file %s: %s", path,
		    strerror(errno));
		unlink(tmp);
		return (CM_EINVAL);
	}
	return (CM_OK);
}

cm_err
gw_server_start(const gw_config *cfg, gw_server **out)
{
	gw_server                  *srv = cm_xcalloc(1, sizeof(*srv));
	const union MHD_DaemonInfo *info;
	unsigned                    flags;
	cm_err                      rv;

	srv->cfg   = *cfg;
	srv->lsock = -1;
	atomic_init(&srv->active, 0);
	atomic_init(&srv->suspended, 0);
	atomic_init(&srv->stopping, 0);

	rv = cm_rpc_client_open(cfg->auth_url, &srv->auth);
	if (rv != CM_OK) {
		cm_error(NULL, "AUTH_SERVICE_URL %s: %s", cfg->auth_url,
		    cm_strerror(rv));
		rv = CM_EINVAL;
		goto out;
	}
	rv = cm_rpc_client_open(cfg->threads_url, &srv->threads);
	if (rv != CM_OK) {
		cm_error(NULL, "THREAD_SERVICE_URL %s: %s", cfg->threads_url,
		    cm_strerror(rv));
		rv = CM_EINVAL;
		goto out;
	}
	rv = bind_listen(cfg->host, cfg->port, &srv->lsock);
	if (rv != CM_OK) {
		goto out;
	}
	rv = gw_ops_start(srv);
	if (rv != CM_OK) {
		goto out;
	}
	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
	    MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	// The logger goes first so MHD's own start-up messages use it too.
	srv->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, srv,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	    MHD_OPTION_LISTEN_SOCKET, (MHD_socket) srv->lsock,
	    MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) cfg->threads,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) cfg->idle_timeout_s,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int) cfg->max_connections,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT,
	    (unsigned int) cfg->per_ip_connections,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) GW_CONN_MEMORY_LIMIT,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
	    MHD_OPTION_NOTIFY_CONNECTION, gw_ops_on_connection, srv,
	    MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_END);
	if (srv->daemon == NULL) {
		cm_error(NULL, "cannot start the HTTP server on %s:%d",
		    cfg->host, cfg->port);
		rv = CM_EUNAVAIL;
		goto out;
	}
	info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
	srv->port = info != NULL ? (int) info->port : 0;
	if (srv->port == 0) {
		struct sockaddr_storage ss;
		socklen_t               len = sizeof(ss);
		if (getsockname(srv->lsock, (struct sockaddr *) &ss, &len) ==
		    0) {
			srv->port = ntohs(ss.ss_family == AF_INET6
			        ? ((struct sockaddr_in6 *) &ss)->sin6_port
			        : ((struct sockaddr_in *) &ss)->sin_port);
		}
	}
	if (cfg->port_file != NULL && cfg->port_file[0] != '\0') {
		rv = write_port_file(cfg->port_file, srv->port);
		if (rv != CM_OK) {
			goto out;
		}
	}
	cm_info(NULL, "listening on http://%s:%d (auth %s, threads %s)",
	    cfg->host, srv->port, cfg->auth_url, cfg->threads_url);
	*out = srv;
	srv  = NULL;
out:
	if (srv != NULL) {
		if (srv->daemon != NULL) {
			MHD_stop_daemon(srv->daemon);
		}
		if (srv->lsock >= 0) {
			close(srv->lsock);
		}
		gw_ops_stop(srv);
		cm_rpc_client_close(srv->auth);
		cm_rpc_client_close(srv->threads);
		free(srv);
	}
	return (rv);
}

int
gw_server_port(const gw_server *s)
{
	return (s->port);
}

// wait_for() polls *counter until it is 0 or ms pass; returns its value.
static int
wait_for(atomic_int *counter, int ms)
{
	int64_t until = cm_mono_ms() + ms;

	while (atomic_load(counter) > 0 && cm_mono_ms() < until) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return (atomic_load(counter));
}

void
gw_server_stop(gw_server *s)
{
	MHD_socket ls;
	int        left;

	if (s == NULL) {
		return;
	}
	// 1. Stop accepting and starting new upstream chains; requests
	// already in the chain go on, later ones on open connections get a
	// 503 + Retry-After.
	atomic_store(&s->stopping, 1);
	ls = MHD_quiesce_daemon(s->daemon);
	if (ls != MHD_INVALID_SOCKET) {
		close(ls);
	}
	s->lsock = -1;
	// 2. Let requests in flight finish.
	left = wait_for(&s->active, GW_SHUTDOWN_GRACE_MS);
	if (left > 0) {
		cm_warn(NULL, "%d request(s) still running after %d ms", left,
		    GW_SHUTDOWN_GRACE_MS);
	}
	// 3. Closing the clients completes every call in flight (503), and
	// each completion resumes its connection. Auth first: once its close
	// returns no on_auth runs, so nothing starts a call on the
	// thread-service client while that one closes.
	cm_rpc_client_close(s->auth);
	cm_rpc_client_close(s->threads);
	s->auth    = NULL;
	s->threads = NULL;
	left       = wait_for(&s->suspended, GW_SHUTDOWN_GRACE_MS);
	CM_ASSERT(left == 0);
	// 4. Give the resumed connections a moment to send their answers.
	wait_for(&s->active, 1000);
	MHD_stop_daemon(s->daemon);
	gw_ops_stop(s);
	free(s);
}
