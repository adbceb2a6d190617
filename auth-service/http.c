// SPDX-License-Identifier: MIT
//
// Outbound HTTP to the identity provider (user endpoint, introspection,
// JWKS, discovery) with libcurl's easy interface.
//
// Each worker owns one easy handle; curl_easy_reset() between requests
// clears the options but keeps the handle's connection cache, so the
// connection to the IdP stays alive across requests. Every request gets
// the configured connect and total timeouts, shortened to the current
// request's remaining deadline (set per thread by the server with
// auth_http_set_deadline()), speaks only http/https, never follows a
// redirect, and reads at most AUTH_IDP_BODY_MAX bytes of body: a larger
// answer aborts the transfer and counts as the IdP failing. Each request
// carries the current request's id (X-Request-Id) and W3C traceparent from
// the thread's log context, so the IdP's logs can be joined with ours,
// and is counted and timed in the auth_g_metrics IdP series.

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "auth-service/auth.h"
#include "auth-service/service.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"

// Longest response header line we inspect for Cache-Control; longer
// lines are ignored (real Cache-Control values are a few dozen bytes).
#define HTTP_HEADER_LINE_MAX 1024
// Largest max-age we accept from a header, in seconds (one day); larger
// values are clamped. Callers apply their own, tighter caps.
#define HTTP_MAX_AGE_MAX 86400
// Shortest total timeout handed to curl, in ms: with less time left
// than this the request is not worth starting.
#define HTTP_MIN_TIMEOUT_MS 5

// The current request's absolute deadline (Unix ms, 0 = none) for the
// calling thread. Each worker thread serves one request at a time.
static _Thread_local int64_t http_deadline_ms;

typedef struct http_body {
	char  *buf;
	size_t len;
	size_t cap;
	int    too_big;
} http_body;

void
auth_http_set_deadline(int64_t deadline_unix_ms)
{
	http_deadline_ms = deadline_unix_ms;
}

int64_t
auth_http_deadline(void)
{
	return (http_deadline_ms);
}

static size_t
write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	http_body *b = arg;
	size_t     n = size * nmemb;

	if (n > AUTH_IDP_BODY_MAX || b->len + n > AUTH_IDP_BODY_MAX) {
		b->too_big = 1;
		return (0); // aborts the transfer with CURLE_WRITE_ERROR
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap == 0 ? 4096 : b->cap;
		while (cap < b->len + n + 1) {
			cap *= 2;
		}
		if (cap > AUTH_IDP_BODY_MAX + 1) {
			cap = AUTH_IDP_BODY_MAX + 1;
		}
		b->buf = cm_xrealloc(b->buf, cap);
		b->cap = cap;
	}
	memcpy(b->buf + b->len, data, n);
	b->len += n;
	b->buf[b->len] = '\0';
	return (n);
}

// Parses a Cache-Control value for max-age (and no-store/no-cache, which
// mean 0). Returns -1 when none of them is present.
static long
parse_cache_control(const char *v, size_t len)
{
	long   max_age = -1;
	size_t i       = 0;

	while (i < len) {
		size_t start;
		size_t tlen;

		while (
		    i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) {
			i++;
		}
		start = i;
		while (i < len && v[i] != ',') {
			i++;
		}
		tlen = i - start;
		// libcurl hands over the header line with its CRLF.
		while (tlen > 0 &&
		    (v[start + tlen - 1] == ' ' ||
		        v[start + tlen - 1] == '\t' ||
		        v[start + tlen - 1] == '\r' ||
		        v[start + tlen - 1] == '\n')) {
			tlen--;
		}
		if (tlen == 8 && strncasecmp(v + start, "no-store", 8) == 0) {
			return (0);
		}
		if (tlen == 8 && strncasecmp(v + start, "no-cache", 8) == 0) {
			return (0);
		}
		if (tlen > 8 && strncasecmp(v + start, "max-age=", 8) == 0) {
			long   val = 0;
			size_t k;
			int    ok = 1;

			for (k = start + 8; k < start + tlen; k++) {
				if (!isdigit((unsigned char) v[k])) {
					ok = 0;
					break;
				}
				if (val < HTTP_MAX_AGE_MAX) {
					val = val * 10 + (v[k] - '0');
				}
			}
			if (ok) {
				max_age = val > HTTP_MAX_AGE_MAX
				    ? HTTP_MAX_AGE_MAX
				    : val;
			}
		}
	}
	return (max_age);
}

static size_t
header_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	long             *max_age = arg;
	size_t            n       = size * nmemb;
	static const char name[]  = "cache-control:";

	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		// A new response (after a 100 Continue, say): forget
		// headers of the previous one.
		*max_age = -1;
		return (n);
	}
	if (n > HTTP_HEADER_LINE_MAX || n < sizeof(name) - 1) {
		return (n);
	}
	if (strncasecmp(data, name, sizeof(name) - 1) == 0) {
		long v = parse_cache_control(
		    data + sizeof(name) - 1, n - (sizeof(name) - 1));
		if (v >= 0) {
			*max_age = v;
		}
	}
	return (n);
}

static cm_err
err_from_curl(CURLcode c)
{
	switch (c) {
	case CURLE_OK:
		return (CM_OK);
	case CURLE_OPERATION_TIMEDOUT:
		return (CM_ETIMEDOUT);
	default:
		return (CM_EUNAVAIL);
	}
}

// Appends X-Request-Id and traceparent from the thread's log context
// (set by the rpc layer around each request) when there are any.
static cm_err
trace_headers(struct curl_slist **hl)
{
	const char *rid = cm_log_ctx_rid();
	const char *tp  = cm_log_ctx_traceparent();
	char        line[128];

	if (rid[0] != '\0' && strlen(rid) <= CM_RID_MAX) {
		struct curl_slist *nl;

		snprintf(line, sizeof(line), "X-Request-Id: %s", rid);
		nl = curl_slist_append(*hl, line);
		if (nl == NULL) {
			return (CM_EINTERNAL);
		}
		*hl = nl;
	}
	if (strlen(tp) == CM_TRACEPARENT_LEN) {
		struct curl_slist *nl;

		snprintf(line, sizeof(line), "traceparent: %s", tp);
		nl = curl_slist_append(*hl, line);
		if (nl == NULL) {
			return (CM_EINTERNAL);
		}
		*hl = nl;
	}
	return (CM_OK);
}

static void
count_idp(CURLcode c, int too_big, long status)
{
	auth_idp_result r;

	if (c == CURLE_OPERATION_TIMEDOUT) {
		r = AUTH_IDP_TIMEOUT;
	} else if (c != CURLE_OK || too_big || status < 200) {
		r = AUTH_IDP_ERROR;
	} else if (status < 300) {
		r = AUTH_IDP_2XX;
	} else if (status < 400) {
		r = AUTH_IDP_3XX;
	} else if (status < 500) {
		r = AUTH_IDP_4XX;
	} else {
		r = AUTH_IDP_5XX;
	}
	cm_counter_inc(auth_g_metrics.idp[r]);
}

cm_err
auth_http_request(auth_worker *w, const auth_config *cfg, const char *method,
    const char *url, const char *const *headers, const char *post_body,
    auth_http_response *resp)
{
	struct curl_slist *hl      = NULL;
	http_body          body    = { 0 };
	long               max_age = -1;
	long               status  = 0;
	long               timeout_ms;
	int64_t            t0;
	CURLcode           c;
	cm_err             rv;
	int                is_post;

	if (w == NULL || w->curl == NULL || cfg == NULL || method == NULL ||
	    url == NULL || resp == NULL || strlen(url) >= AUTH_URL_MAX) {
		return (CM_EINVAL);
	}
	if (strcmp(method, "POST") == 0) {
		is_post = 1;
	} else if (strcmp(method, "GET") == 0) {
		is_post = 0;
	} else {
		return (CM_EINVAL);
	}

	timeout_ms = cfg->idp_timeout_ms;
	if (http_deadline_ms > 0) {
		int64_t left = http_deadline_ms - cm_now_ms();
		if (left < HTTP_MIN_TIMEOUT_MS) {
			return (CM_ETIMEDOUT);
		}
		if (left < timeout_ms) {
			timeout_ms = (long) left;
		}
	}

	for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
		struct curl_slist *nl = curl_slist_append(hl, headers[i]);
		if (nl == NULL) {
			rv = CM_EINTERNAL;
			goto out;
		}
		hl = nl;
	}
	rv = trace_headers(&hl);
	if (rv != CM_OK) {
		goto out;
	}

	// Reset keeps the connection cache: keep-alive to the IdP survives.
	curl_easy_reset(w->curl);
	curl_easy_setopt(w->curl, CURLOPT_URL, url);
	curl_easy_setopt(w->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(w->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(w->curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(w->curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(w->curl, CURLOPT_CONNECTTIMEOUT_MS,
	    (long) cfg->idp_connect_timeout_ms < timeout_ms
	        ? (long) cfg->idp_connect_timeout_ms
	        : timeout_ms);
	curl_easy_setopt(w->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(w->curl, CURLOPT_MAXFILESIZE_LARGE,
	    (curl_off_t) AUTH_IDP_BODY_MAX);
	curl_easy_setopt(w->curl, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(w->curl, CURLOPT_WRITEDATA, &body);
	curl_easy_setopt(w->curl, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(w->curl, CURLOPT_HEADERDATA, &max_age);
	curl_easy_setopt(
	    w->curl, CURLOPT_USERAGENT, "threadgate-auth/" TG_VERSION);
	curl_easy_setopt(w->curl, CURLOPT_TCP_KEEPALIVE, 1L);
	if (hl != NULL) {
		curl_easy_setopt(w->curl, CURLOPT_HTTPHEADER, hl);
	}
	if (is_post) {
		const char *pb = post_body != NULL ? post_body : "";
		curl_easy_setopt(w->curl, CURLOPT_POST, 1L);
		curl_easy_setopt(
		    w->curl, CURLOPT_POSTFIELDSIZE, (long) strlen(pb));
		curl_easy_setopt(w->curl, CURLOPT_POSTFIELDS, pb);
	} else {
		curl_easy_setopt(w->curl, CURLOPT_HTTPGET, 1L);
	}

	atomic_fetch_add(&auth_g_stats.idp_calls, 1);
	t0 = cm_now_us();
	c  = curl_easy_perform(w->curl);
	cm_histogram_observe(
	    auth_g_metrics.idp_duration, (uint64_t) (cm_now_us() - t0));
	if (c == CURLE_OK && !body.too_big) {
		curl_easy_getinfo(w->curl, CURLINFO_RESPONSE_CODE, &status);
	}
	count_idp(c, body.too_big, status);
	if (body.too_big || c == CURLE_FILESIZE_EXCEEDED) {
		cm_warn(NULL, "idp answer over %u bytes: %s",
		    AUTH_IDP_BODY_MAX, url);
		rv = CM_EUNAVAIL;
		goto out;
	}
	if (c != CURLE_OK) {
		rv = err_from_curl(c);
		cm_warn(NULL, "idp request failed: %s", curl_easy_strerror(c));
		goto out;
	}
	resp->status    = status;
	resp->body      = body.buf != NULL ? body.buf : cm_xstrdup("");
	resp->body_len  = body.len;
	resp->max_age_s = max_age;
	body.buf        = NULL;
	rv              = CM_OK;

out:
	// The handle keeps no pointer to the list or the body after reset.
	if (w != NULL && w->curl != NULL) {
		curl_easy_setopt(w->curl, CURLOPT_HTTPHEADER, NULL);
		curl_easy_setopt(w->curl, CURLOPT_POSTFIELDS, NULL);
	}
	curl_slist_free_all(hl);
	free(body.buf);
	return (rv);
}

void
auth_http_response_free(auth_http_response *resp)
{
	if (resp == NULL) {
		return;
	}
	free(resp->body);
	resp->body     = NULL;
	resp->body_len = 0;
}
