// SPDX-License-Identifier: MIT
//
// HTTP helpers for the C cross-service tests (http.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "common/util.h"
#include "common/xalloc.h"
#include "tests/harness/http.h"

// The body collector of one request.
typedef struct sink {
	char  *buf;
	size_t len;
} sink;

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
	sink  *s = arg;
	size_t k = size * n;

	if (s->len + k > TG_HTTP_BODY_MAX) {
		return (0);
	}
	s->buf = cm_xrealloc(s->buf, s->len + k + 1);
	memcpy(s->buf + s->len, p, k);
	s->len += k;
	s->buf[s->len] = '\0';
	return (k);
}

void
tg_resp_free(tg_resp *r)
{
	free(r->body);
	memset(r, 0, sizeof(*r));
}

// Sets method, URL, headers and body on h; returns the header list to
// free after the request.
static struct curl_slist *
setup(CURL *h, const char *base, const char *method, const char *path,
    const char *token, const char *body, long timeout_ms, sink *s)
{
	struct curl_slist *hdrs = NULL;
	char               url[1024];
	char               auth[8300];

	snprintf(url, sizeof(url), "%s%s", base, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	if (body != NULL && body[0] != '\0') {
		curl_easy_setopt(
		    h, CURLOPT_POSTFIELDSIZE, (long) strlen(body));
		curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, body);
	} else {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	}
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (token != NULL) {
		snprintf(
		    auth, sizeof(auth), "Authorization: Bearer %s", token);
		hdrs = curl_slist_append(hdrs, auth);
	}
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	hdrs = curl_slist_append(hdrs, "Expect:");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	return (hdrs);
}

void
tg_http(const char *base, const char *method, const char *path,
    const char *token, const char *body, long timeout_ms, tg_resp *r)
{
	CURL              *h = curl_easy_init();
	sink               s = { 0 };
	struct curl_slist *hdrs;

	memset(r, 0, sizeof(*r));
	hdrs = setup(h, base, method, path, token, body, timeout_ms, &s);
	if (curl_easy_perform(h) == CURLE_OK) {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	} else {
		r->status = -1;
	}
	r->body = s.buf;
	r->len  = s.len;
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
}

char *
tg_json_str(const char *body, const char *key)
{
	json_t *v   = body != NULL ? json_loads(body, 0, NULL) : NULL;
	json_t *m   = json_object_get(v, key);
	char   *out = NULL;

	if (json_is_string(m)) {
		out = cm_xstrdup(json_string_value(m));
	}
	json_decref(v);
	return (out);
}

int
tg_signup(const char *idp_base, const char *email, char **token, char **uid)
{
	CURL              *h    = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	sink               s    = { 0 };
	char               url[512];
	char               body[512];
	json_t            *v;
	int                rv = -1;

	snprintf(url, sizeof(url), "%s/auth/v1/signup", idp_base);
	snprintf(body, sizeof(body),
	    "{\"email\":\"%s\",\"password\":\"correct-horse-battery\"}",
	    email);
	hdrs = curl_slist_append(hdrs, "apikey: threadgate-dev-anon-key");
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	if (curl_easy_perform(h) == CURLE_OK && s.buf != NULL) {
		v = json_loads(s.buf, 0, NULL);
		if (json_is_string(json_object_get(v, "access_token")) &&
		    json_is_string(
		        json_object_get(json_object_get(v, "user"), "id"))) {
			*token = cm_xstrdup(json_string_value(
			    json_object_get(v, "access_token")));
			*uid   = cm_xstrdup(json_string_value(json_object_get(
			      json_object_get(v, "user"), "id")));
			rv     = 0;
		}
		json_decref(v);
	}
	free(s.buf);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return (rv);
}

// ---------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------

typedef struct conn {
	CURL              *h;
	struct curl_slist *hdrs;
	sink               s;
	tg_load_req        req;
	int64_t            t0_us;
	int                active;
} conn;

// Starts conn i's next request; 0, or -1 when it stops.
static int
conn_next(conn *c, int i, const char *base, long timeout_ms,
    tg_load_next_fn next, void *arg, CURLM *m)
{
	memset(&c->req, 0, sizeof(c->req));
	if (next(arg, i, &c->req) != 0) {
		return (-1);
	}
	curl_slist_free_all(c->hdrs);
	free(c->s.buf);
	memset(&c->s, 0, sizeof(c->s));
	c->hdrs  = setup(c->h, base, c->req.method, c->req.path, c->req.token,
	     c->req.body, timeout_ms, &c->s);
	c->t0_us = cm_now_us();
	curl_multi_add_handle(m, c->h);
	c->active = 1;
	return (0);
}

int64_t
tg_load_run(const char *base, int conns, long timeout_ms, atomic_int *stop,
    tg_load_next_fn next, tg_load_done_fn done, void *arg)
{
	CURLM  *m        = curl_multi_init();
	conn   *c        = cm_xcalloc((size_t) conns, sizeof(*c));
	int64_t answered = 0;
	int     active   = 0;

	curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long) conns);
	for (int i = 0; i < conns; i++) {
		c[i].h = curl_easy_init();
		curl_easy_setopt(c[i].h, CURLOPT_PRIVATE, (char *) &c[i]);
		if (conn_next(&c[i], i, base, timeout_ms, next, arg, m) == 0) {
			active++;
		}
	}
	while (active > 0) {
		CURLMsg *msg;
		int      left;
		int      running;

		curl_multi_perform(m, &running);
		while ((msg = curl_multi_info_read(m, &left)) != NULL) {
			conn *x;
			long  status = -1;
			int   i;
			char *priv;

			if (msg->msg != CURLMSG_DONE) {
				continue;
			}
			curl_easy_getinfo(
			    msg->easy_handle, CURLINFO_PRIVATE, &priv);
			x = (conn *) priv;
			i = (int) (x - c);
			if (msg->data.result == CURLE_OK) {
				curl_easy_getinfo(
				    x->h, CURLINFO_RESPONSE_CODE, &status);
			}
			curl_multi_remove_handle(m, x->h);
			x->active = 0;
			answered++;
			done(arg, i, &x->req, status, x->s.buf ? x->s.buf : "",
			    x->s.len, cm_now_us() - x->t0_us);
			if (atomic_load(stop) ||
			    conn_next(x, i, base, timeout_ms, next, arg, m) !=
			        0) {
				active--;
			}
		}
		if (active > 0) {
			curl_multi_poll(m, NULL, 0, 50, NULL);
		}
	}
	for (int i = 0; i < conns; i++) {
		curl_slist_free_all(c[i].hdrs);
		free(c[i].s.buf);
		curl_easy_cleanup(c[i].h);
	}
	free(c);
	curl_multi_cleanup(m);
	return (answered);
}
