// SPDX-License-Identifier: MIT
//
// One HTTP request of the gateway (gw_job), between the connection layer
// (server.c) and the upstream chain (upstream.c):
//
//   gw_job_new       the head is complete: read the allowed headers,
//                    route, decide the answers known from the head alone
//                    (404, 405, 414, meta routes, preflight, 413 for a
//                    declared body far over the cap)
//   gw_job_body      collect the body up to max_body, charged to the
//                    memory budget; beyond the cap, or for a request
//                    already decided, read and drop it
//   gw_job_dispatch  answer locally (meta, errors, stopping) or start the
//                    upstream chain, which ends in gw_job_done
//   gw_job_head      the answer's status line and header fields
//   gw_job_free      log the request, return its memory budget
//
// Every answer, errors included, carries x-request-id and the CORS
// headers.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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
// First allocation for a body whose size was not declared (chunked).
#define BODY_INITIAL 1024

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

// read_headers() looks only at the headers the gateway uses. Everything
// else - in particular any identity-looking header a client sends
// (x-user-id, x-owner, x-forwarded-user, remote-user, ...) - is never
// looked at. The parser has already refused control bytes (NUL included)
// in every value, so what is copied here is what the client sent.
static void
read_headers(gw_job *job, const gw_h1_head *h)
{
	for (int i = 0; i < h->nfields; i++) {
		const char *key   = h->fields[i].name;
		const char *value = h->fields[i].value;

		if (header_is(key, "Authorization")) {
			if (job->nauth >= GW_AUTH_HEADERS_MAX ||
			    h->fields[i].value_len > GW_AUTH_VALUE_MAX) {
				job->auth_bad = 1;
				job->nauth++;
				continue;
			}
			job->auth[job->nauth++] = cm_xstrdup(value);
		} else if (header_is(key, "x-request-id")) {
			if (job->rid[0] == '\0') {
				gw_request_id_pick(value, job->rid);
			}
		} else if (header_is(key, "Origin")) {
			copy_bounded(job->origin, sizeof(job->origin), value);
		} else if (header_is(key, "Access-Control-Request-Headers")) {
			copy_bounded(job->acrh, sizeof(job->acrh), value);
		} else if (header_is(key, "Prefer")) {
			if (strstr(value, "return=minimal") != NULL) {
				job->prefer_minimal = 1;
			}
		} else {
			gw_ops_header(job, key, value);
		}
	}
	if (job->nauth > GW_AUTH_HEADERS_MAX) {
		job->nauth = GW_AUTH_HEADERS_MAX;
	}
}

static gw_job *
job_alloc(gw_server *srv, gw_conn *conn, const char *path)
{
	gw_job *job = cm_xcalloc(1, sizeof(*job));

	job->srv      = srv;
	job->conn     = conn;
	job->state    = GW_JOB_BODY;
	job->t0_us    = cm_now_us();
	job->declared = -1;
	atomic_fetch_add(&srv->active, 1);
	gw_ops_request_begin(job, path);
	return (job);
}

static void
early_error(gw_job *job, cm_err err, const char *detail)
{
	job->early = EARLY_ANSWER;
	gw_error_response(&job->resp, err, detail, 0);
}

gw_job *
gw_job_new(gw_server *srv, gw_conn *conn, const gw_h1_head *h)
{
	gw_job *job = job_alloc(srv, conn, h->path);

	snprintf(job->method, sizeof(job->method), "%s", h->method);
	job->query    = cm_xstrdup(h->query != NULL ? h->query : "");
	job->declared = h->content_length;
	read_headers(job, h);
	if (job->rid[0] == '\0') {
		gw_request_id_pick(NULL, job->rid);
	}

	if (strlen(h->path) > GW_URL_MAX) {
		job->early = EARLY_ANSWER;
		gw_status_response(&job->resp, 414, "URI too long");
		return (job);
	}
	if (strcmp(h->method, "OPTIONS") == 0) {
		// CORS preflight (or a plain OPTIONS): no authentication.
		job->early       = EARLY_PREFLIGHT;
		job->resp.status = 204;
		return (job);
	}
	job->mres = gw_route_match(h->method, h->path, &job->match);
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
		if (job->declared > GW_DRAIN_MAX) {
			// Far over the cap: answer before the body is sent
			// (a client using Expect: 100-continue never sends
			// it) and close.
			early_error(job, CM_ETOOBIG, "Request body too large");
			job->refuse_body = 1;
		}
	}
	return (job);
}

gw_job *
gw_job_new_error(
    gw_server *srv, gw_conn *conn, unsigned status, const char *detail)
{
	gw_job *job = job_alloc(srv, conn, "-");

	snprintf(job->method, sizeof(job->method), "-");
	gw_request_id_pick(NULL, job->rid);
	gw_job_fail(job, status, detail);
	return (job);
}

void
gw_job_fail(gw_job *job, unsigned status, const char *detail)
{
	job->early = EARLY_ANSWER;
	gw_status_response(&job->resp, status, detail);
}

void
gw_job_free(gw_job *job, int sent)
{
	if (job == NULL) {
		return;
	}
	gw_ops_request_end(job, sent);
	CM_ASSERT(job->state != GW_JOB_AUTH && job->state != GW_JOB_THREADS);
	for (int i = 0; i < job->nauth && i < GW_AUTH_HEADERS_MAX; i++) {
		free(job->auth[i]);
	}
	gw_mem_give(job->srv, job->mem);
	atomic_fetch_sub(&job->srv->active, 1);
	free(job->query);
	free(job->body);
	gw_request_fini(&job->req);
	gw_response_fini(&job->resp);
	free(job);
}

// ---------------------------------------------------------------------
// The body
// ---------------------------------------------------------------------

// over_budget() answers 503: the gateway holds as much as it may.
static int
over_budget(gw_job *job)
{
	gw_ratelog_note(&job->srv->log_refused, "memory budget exhausted");
	free(job->body);
	job->body     = NULL;
	job->body_len = 0;
	job->body_cap = 0;
	early_error(job, CM_EUNAVAIL, "Server busy, retry later");
	return (-1);
}

int
gw_job_body(gw_job *job, const char *data, size_t n)
{
	size_t max = job->srv->cfg.max_body;
	size_t cap;

	if (job->early || job->over_cap) {
		job->discarded += n;
		if (job->discarded > GW_DRAIN_MAX) {
			// An undeclared (chunked) body far over the cap: stop
			// reading; 413 and close is the only bounded answer.
			if (!job->early) {
				early_error(
				    job, CM_ETOOBIG, "Request body too large");
			}
			return (-1);
		}
		return (0);
	}
	if (job->body_len + n > max) {
		// Over the cap: stop storing, drop what we have.
		job->over_cap = 1;
		job->discarded += job->body_len + n;
		free(job->body);
		job->body     = NULL;
		job->body_len = 0;
		job->body_cap = 0;
		return (0);
	}
	if (job->body_len + n + 1 > job->body_cap) {
		// Grown by doubling as bytes arrive (a declared length is
		// not trusted until the bytes are here: a slow client must
		// not reserve a megabyte of the budget with one byte), never
		// past the declared length or max_body + 1.
		cap = job->body_cap ? job->body_cap : BODY_INITIAL;
		while (cap < job->body_len + n + 1) {
			cap *= 2;
		}
		if (job->declared > 0 && cap > (size_t) job->declared + 1) {
			cap = (size_t) job->declared + 1;
		}
		if (cap > max + 1) {
			cap = max + 1;
		}
		if (cap > job->body_cap &&
		    gw_mem_take(job->srv, cap - job->body_cap) != 0) {
			return (over_budget(job));
		}
		job->mem += cap - job->body_cap;
		job->body     = cm_xrealloc(job->body, cap);
		job->body_cap = cap;
	}
	memcpy(job->body + job->body_len, data, n);
	job->body_len += n;
	job->body[job->body_len] = '\0';
	return (0);
}

// ---------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------

static const char *
query_cb(void *arg, const char *name)
{
	static _Thread_local char buf[GW_PARAM_MAX];
	gw_job                   *job = arg;
	const char               *raw;
	size_t                    len = 0;

	raw = gw_h1_query_get(job->query, name, &len);
	if (raw == NULL) {
		return (NULL);
	}
	if (gw_pct_decode(raw, len, buf, sizeof(buf)) < 0) {
		// Undecodable (bad escape, encoded NUL, too long): a value
		// no field accepts, so the field check refuses it.
		return ("%");
	}
	return (buf);
}

int
gw_job_dispatch(gw_job *job)
{
	char   detail[GW_DETAIL_MAX];
	cm_err rv;

	if (job->over_cap && !job->early) {
		early_error(job, CM_ETOOBIG, "Request body too large");
	}
	if (job->early) {
		job->state = GW_JOB_READY;
		return (1);
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
	// The request built from the body takes about the body's size; the
	// body's charge (job->mem) stays to cover it.
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
		job->state = GW_JOB_READY;
		return (1);
	}
	job->state = GW_JOB_AUTH;
	gw_upstream_start(job);
	return (0);
}

void
gw_job_done(gw_job *job)
{
	gw_server *srv  = job->srv;
	gw_conn   *conn = job->conn;

	job->state = GW_JOB_READY;
	// After this the loop owns the job again (and may free it).
	gw_conn_resume(conn);
	atomic_fetch_sub(&srv->suspended, 1);
}

// ---------------------------------------------------------------------
// The answer's head
// ---------------------------------------------------------------------

static const char *
reason(unsigned status)
{
	switch (status) {
	case 200:
		return ("OK");
	case 204:
		return ("No Content");
	case 400:
		return ("Bad Request");
	case 401:
		return ("Unauthorized");
	case 403:
		return ("Forbidden");
	case 404:
		return ("Not Found");
	case 405:
		return ("Method Not Allowed");
	case 408:
		return ("Request Timeout");
	case 409:
		return ("Conflict");
	case 413:
		return ("Content Too Large");
	case 414:
		return ("URI Too Long");
	case 422:
		return ("Unprocessable Content");
	case 431:
		return ("Request Header Fields Too Large");
	case 500:
		return ("Internal Server Error");
	case 501:
		return ("Not Implemented");
	case 503:
		return ("Service Unavailable");
	case 505:
		return ("HTTP Version Not Supported");
	default:
		return ("Unknown");
	}
}

static void
add(gw_jw *h, const char *name, const char *value)
{
	gw_jw_raw(h, name, strlen(name));
	gw_jw_raw(h, ": ", 2);
	gw_jw_raw(h, value, strlen(value));
	gw_jw_raw(h, "\r\n", 2);
}

char *
gw_job_head(gw_job *job, int close, size_t *len)
{
	gw_response *r = &job->resp;
	gw_jw        h; // used as a plain growing buffer here
	char         line[128];
	struct tm    tm;
	time_t       now = time(NULL);

	gw_jw_init(&h);
	snprintf(line, sizeof(line), "HTTP/1.1 %u %s\r\n", r->status,
	    reason(r->status));
	gw_jw_raw(&h, line, strlen(line));
	gmtime_r(&now, &tm);
	strftime(line, sizeof(line), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	add(&h, "Date", line);
	if (r->status != 204) {
		snprintf(line, sizeof(line), "%zu", r->body_len);
		add(&h, "Content-Length", line);
	}
	if (r->body != NULL) {
		add(&h, "Content-Type",
		    r->content_type != NULL ? r->content_type
		                            : "application/json");
	}
	add(&h, "x-request-id", job->rid);
	if (job->origin[0] != '\0') {
		add(&h, "Access-Control-Allow-Origin", job->origin);
		add(&h, "Vary", "Origin");
	} else {
		add(&h, "Access-Control-Allow-Origin", "*");
	}
	add(&h, "Access-Control-Expose-Headers", EXPOSE_HEADERS);
	if (job->early == EARLY_PREFLIGHT) {
		add(&h, "Access-Control-Allow-Methods", ALLOW_METHODS);
		add(&h, "Access-Control-Allow-Headers",
		    job->acrh[0] != '\0' ? job->acrh : ALLOW_HEADERS_DEFAULT);
		add(&h, "Access-Control-Max-Age", PREFLIGHT_MAX_AGE);
	}
	for (int i = 0; i < r->nheaders; i++) {
		add(&h, r->hname[i], r->hvalue[i]);
	}
	if (close) {
		add(&h, "Connection", "close");
	}
	gw_jw_raw(&h, "\r\n", 2);
	return (gw_jw_take(&h, len));
}
