// SPDX-License-Identifier: MIT
//
// End-to-end test of the gateway against the real stack, driven with
// libcurl: the dev IdP (real signed JWTs), the auth-service (Supabase mode
// against the dev IdP), the thread-service (sqlite in a temp dir) and the
// gateway on a free loopback port. Everything talks over ipc:// sockets in
// a private temporary directory. Checks what only a running gateway can
// show: keep-alive, the body cap with the connection still usable,
// spoofed identity headers being ignored, 503 + Retry-After when either
// backend is down, robustness against garbage, and a clean exit 0 on
// SIGTERM with requests in flight.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "common/util.h"
#include "common/xalloc.h"
#include "tests/harness/proc.h"

// How long a service may take to come up (bounded polling).
#define READY_MS 15000
// Deadlines the gateway runs with here: short, so the "backend down"
// cases answer quickly.
#define TEST_UPSTREAM_TIMEOUT "1500"
// The body cap the gateway runs with here (small, so the over-cap body is
// cheap to send).
#define TEST_MAX_BODY 65536
// Largest response body a test keeps.
#define RESP_MAX (4 * 1024 * 1024)
// Idle timeout and per-IP connection limit the gateway runs with here.
#define TEST_IDLE_S "2"
#define TEST_PER_IP "24"
#define PER_IP_N    24
// Connections opened at once by the per-IP test (more than TEST_PER_IP).
#define FLOOD 32
// Concurrent requests in flight when SIGTERM arrives.
#define INFLIGHT 8

typedef struct stack {
	char    *dir;
	char     auth_url[512];
	char     threads_url[512];
	char     idp_base[64];
	int      idp_port;
	int      gw_port;
	tg_proc *idp;
	tg_proc *auth;
	tg_proc *threads;
	tg_proc *gw;
	char    *tok1;
	char    *tok2;
	char    *uid1;
	char    *uid2;
} stack;

static stack S;

// ---------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------

typedef struct resp {
	long   status;
	char  *body;
	size_t len;
	char  *headers;
	size_t hlen;
	long   connects;
} resp;

static size_t
grow(char **buf, size_t *len, const char *p, size_t n)
{
	if (*len + n > RESP_MAX) {
		return (0);
	}
	*buf = cm_xrealloc(*buf, *len + n + 1);
	memcpy(*buf + *len, p, n);
	*len += n;
	(*buf)[*len] = '\0';
	return (n);
}

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
	resp *r = arg;
	return (grow(&r->body, &r->len, p, size * n));
}

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
	resp *r = arg;
	return (grow(&r->headers, &r->hlen, p, size * n));
}

static void
resp_free(resp *r)
{
	free(r->body);
	free(r->headers);
	memset(r, 0, sizeof(*r));
}

// header_of() returns a new copy of response header name's value, or NULL.
static char *
header_of(const resp *r, const char *name)
{
	size_t      nl = strlen(name);
	const char *p  = r->headers;

	while (p != NULL && *p != '\0') {
		const char *eol = strstr(p, "\r\n");
		if (eol == NULL) {
			break;
		}
		if ((size_t) (eol - p) > nl && strncasecmp(p, name, nl) == 0 &&
		    p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ') {
				v++;
			}
			return (cm_xstrndup(v, (size_t) (eol - v)));
		}
		p = eol + 2;
	}
	return (NULL);
}

// http() performs one request on h (reused for keep-alive when given,
// else a fresh handle). token may be NULL; extra is a NULL-terminated list
// of "Name: value" headers (may be NULL).
static void
http_on(CURL *h, const char *method, const char *path, const char *token,
    const char *body, size_t body_len, const char *const *extra, resp *r)
{
	struct curl_slist *hdrs = NULL;
	char               url[4096];
	char               auth[16384];
	CURL              *own = NULL;
	CURLcode           rc;

	memset(r, 0, sizeof(*r));
	if (h == NULL) {
		own = curl_easy_init();
		h   = own;
	}
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", S.gw_port, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 20000L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	if (body != NULL) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long) body_len);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	} else {
		// Back to a body-less request on a reused handle.
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	}
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (token != NULL) {
		snprintf(
		    auth, sizeof(auth), "Authorization: Bearer %s", token);
		hdrs = curl_slist_append(hdrs, auth);
	}
	hdrs = curl_slist_append(hdrs, "Expect:");
	for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
		hdrs = curl_slist_append(hdrs, extra[i]);
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		r->status = -1;
	} else {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
		curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &r->connects);
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(hdrs);
	if (own != NULL) {
		curl_easy_cleanup(own);
	}
}

static void
http(const char *method, const char *path, const char *token, const char *body,
    const char *const *extra, resp *r)
{
	http_on(NULL, method, path, token, body,
	    body != NULL ? strlen(body) : 0, extra, r);
}

// json_of() parses r's body (new reference) or fails the test.
static json_t *
json_of(const resp *r)
{
	json_error_t e;
	json_t      *v = json_loadb(
	         r->body != NULL ? r->body : "", r->len, JSON_DECODE_ANY, &e);
	if (v == NULL) {
		fail_msg("not JSON (status %ld): %s", r->status,
		    r->body != NULL ? r->body : "(empty)");
	}
	return (v);
}

static void
expect_detail(const resp *r, long status, const char *detail)
{
	json_t *v;
	char   *ct;

	if (r->status != status) {
		fail_msg("status %ld, want %ld; body %s", r->status, status,
		    r->body != NULL ? r->body : "");
	}
	ct = header_of(r, "Content-Type");
	assert_non_null(ct);
	assert_string_equal(ct, "application/json");
	free(ct);
	v = json_of(r);
	assert_true(json_is_string(json_object_get(v, "detail")));
	if (detail != NULL) {
		assert_string_equal(
		    json_string_value(json_object_get(v, "detail")), detail);
	}
	json_decref(v);
	ct = header_of(r, "x-request-id");
	assert_non_null(ct);
	free(ct);
}

// create_thread() creates a thread for token; returns its id (new).
static char *
create_thread(const char *token, const char *body)
{
	resp    r;
	json_t *v;
	char   *id;

	http("POST", "/threads", token, body, NULL, &r);
	if (r.status != 200) {
		fail_msg("create: %ld %s", r.status, r.body ? r.body : "");
	}
	v  = json_of(&r);
	id = cm_xstrdup(json_string_value(json_object_get(v, "thread_id")));
	json_decref(v);
	resp_free(&r);
	return (id);
}

// ---------------------------------------------------------------------
// The stack
// ---------------------------------------------------------------------

static char *
path_in(const char *name)
{
	char buf[1024];
	snprintf(buf, sizeof(buf), "%s/%s", S.dir, name);
	return (cm_xstrdup(buf));
}

static char *
binary(const char *rel)
{
	char buf[1024];
	snprintf(buf, sizeof(buf), "%s/%s", tg_build_dir(), rel);
	return (cm_xstrdup(buf));
}

static void
dump_logs(void)
{
	const char *logs[] = { "idp.log", "auth.log", "threads.log",
		"gw.log" };
	for (size_t i = 0; i < 4; i++) {
		char *p = path_in(logs[i]);
		char *t = tg_read_file(p);
		fprintf(stderr, "---- %s ----\n%s\n", logs[i], t ? t : "");
		free(t);
		free(p);
	}
}

static int
start_auth(void)
{
	char  env1[256], env2[256], env3[600];
	char *bin = binary("auth-service/threadgate-auth");
	char *log = path_in("auth.log");
	int   rv;

	snprintf(env1, sizeof(env1), "SUPABASE_URL=%s", S.idp_base);
	snprintf(env2, sizeof(env2),
	    "SUPABASE_SERVICE_KEY=threadgate-dev-service-key");
	snprintf(env3, sizeof(env3), "AUTH_SERVICE_URL=%s", S.auth_url);
	const char *argv[] = { bin, NULL };
	const char *env[]  = { env1, env2, env3, "AUTH_PROVIDER=supabase",
		 "AUTH_WORKERS=4", NULL };
	rv                 = tg_proc_start(argv, env, log, &S.auth);
	free(bin);
	free(log);
	return (rv);
}

static int
start_threads(void)
{
	char  env1[600], env2[600];
	char *bin = binary("thread-service/threadgate-threads");
	char *log = path_in("threads.log");
	char *db  = path_in("threads.db");
	int   rv;

	snprintf(env1, sizeof(env1), "THREAD_SERVICE_URL=%s", S.threads_url);
	snprintf(env2, sizeof(env2), "THREADS_DB=%s", db);
	const char *argv[] = { bin, NULL };
	const char *env[]  = { env1, env2, "THREAD_WORKERS=2", NULL };
	rv                 = tg_proc_start(argv, env, log, &S.threads);
	free(bin);
	free(log);
	free(db);
	return (rv);
}

static int
start_gateway(void)
{
	char  env1[600], env2[600], env3[600];
	char *bin = binary("gateway/threadgate-gateway");
	char *log = path_in("gw.log");
	char *pf  = path_in("gw.port");
	char  maxb[64];
	int   rv;

	unlink(pf);
	snprintf(env1, sizeof(env1), "AUTH_SERVICE_URL=%s", S.auth_url);
	snprintf(env2, sizeof(env2), "THREAD_SERVICE_URL=%s", S.threads_url);
	snprintf(env3, sizeof(env3), "GATEWAY_PORT_FILE=%s", pf);
	snprintf(maxb, sizeof(maxb), "GATEWAY_MAX_BODY=%d", TEST_MAX_BODY);
	const char *argv[] = { bin, NULL };
	const char *env[]  = { env1, env2, env3, maxb, "GATEWAY_PORT=0",
		 "GATEWAY_HOST=127.0.0.1", "GATEWAY_THREADS=2",
		 "GATEWAY_IDLE_TIMEOUT_S=" TEST_IDLE_S,
		 "GATEWAY_PER_IP_CONNECTIONS=" TEST_PER_IP,
		 "GATEWAY_AUTH_TIMEOUT_MS=" TEST_UPSTREAM_TIMEOUT,
		 "GATEWAY_THREADS_TIMEOUT_MS=" TEST_UPSTREAM_TIMEOUT, NULL };
	rv                 = tg_proc_start(argv, env, log, &S.gw);
	if (rv == 0) {
		S.gw_port = tg_wait_port_file(pf, READY_MS);
		rv        = S.gw_port > 0 ? 0 : -1;
	}
	free(bin);
	free(log);
	free(pf);
	return (rv);
}

// signup() creates a dev-IdP user; returns its access token and id (new).
static int
signup(const char *email, char **token, char **uid)
{
	CURL              *h    = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	char               url[256];
	char               body[256];
	resp               r = { 0 };
	json_t            *v;
	int                rv = -1;

	snprintf(url, sizeof(url), "%s/auth/v1/signup", S.idp_base);
	snprintf(body, sizeof(body),
	    "{\"email\":\"%s\",\"password\":\"correct-horse-battery\"}",
	    email);
	hdrs = curl_slist_append(hdrs, "apikey: threadgate-dev-anon-key");
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
	if (curl_easy_perform(h) == CURLE_OK && r.body != NULL) {
		v = json_loads(r.body, 0, NULL);
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
	resp_free(&r);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return (rv);
}

// wait_ready() polls an authenticated request until the whole chain
// answers 200 (both backends connected), up to ms.
static int
wait_ready(int ms)
{
	int64_t until = cm_mono_ms() + ms;

	while (cm_mono_ms() < until) {
		resp r;
		http("POST", "/threads/count", S.tok1, "{}", NULL, &r);
		long st = r.status;
		resp_free(&r);
		if (st == 200) {
			return (0);
		}
		if (!tg_proc_alive(S.gw)) {
			return (-1);
		}
		// Each attempt is itself bounded by the gateway's deadlines
		// (at most ~1.5 s), so this loop polls without sleeping.
		if (st == -1) {
			poll(NULL, 0, 20);
		}
	}
	return (-1);
}

static int
setup(void **state)
{
	char  pf[1024];
	char *bin, *log, *db;

	(void) state;
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	S.dir = tg_tmpdir("gw-e2e");
	snprintf(S.auth_url, sizeof(S.auth_url), "ipc://%s/auth.sock", S.dir);
	snprintf(S.threads_url, sizeof(S.threads_url), "ipc://%s/threads.sock",
	    S.dir);

	bin = binary("dev-idp/threadgate-dev-idp");
	log = path_in("idp.log");
	db  = path_in("idp.db");
	snprintf(pf, sizeof(pf), "%s/idp.port", S.dir);
	{
		const char *argv[] = { bin, "--port", "0", "--port-file", pf,
			"--db", db, NULL };
		if (tg_proc_start(argv, NULL, log, &S.idp) != 0) {
			return (-1);
		}
	}
	free(bin);
	free(log);
	free(db);
	S.idp_port = tg_wait_port_file(pf, READY_MS);
	if (S.idp_port <= 0) {
		dump_logs();
		return (-1);
	}
	snprintf(
	    S.idp_base, sizeof(S.idp_base), "http://127.0.0.1:%d", S.idp_port);
	if (start_auth() != 0 || start_threads() != 0 ||
	    start_gateway() != 0) {
		dump_logs();
		return (-1);
	}
	if (signup("e2e-one@example.com", &S.tok1, &S.uid1) != 0 ||
	    signup("e2e-two@example.com", &S.tok2, &S.uid2) != 0) {
		fprintf(stderr, "signup failed\n");
		dump_logs();
		return (-1);
	}
	if (wait_ready(READY_MS) != 0) {
		fprintf(stderr, "stack not ready\n");
		dump_logs();
		return (-1);
	}
	return (0);
}

static int
teardown(void **state)
{
	(void) state;
	tg_proc_stop(S.gw);
	tg_proc_stop(S.threads);
	tg_proc_stop(S.auth);
	tg_proc_stop(S.idp);
	free(S.tok1);
	free(S.tok2);
	free(S.uid1);
	free(S.uid2);
	// Keep the logs for a look when asked (TG_KEEP_TMP=1).
	if (getenv("TG_KEEP_TMP") == NULL) {
		const char *files[] = { "idp.log", "auth.log", "threads.log",
			"gw.log", "gw2.log", "idp.db", "idp.db-wal",
			"idp.db-shm", "threads.db", "threads.db-wal",
			"threads.db-shm", "idp.port", "gw.port", "auth.sock",
			"threads.sock" };
		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
			char *p = path_in(files[i]);
			unlink(p);
			free(p);
		}
		if (rmdir(S.dir) != 0) {
			fprintf(stderr, "left %s (not empty)\n", S.dir);
		}
	}
	free(S.dir);
	curl_global_cleanup();
	return (0);
}

// ---------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------

static void
test_meta_and_cors(void **state)
{
	resp        r;
	json_t     *v;
	char       *h;
	const char *pre[] = { "Origin: https://app.example",
		"Access-Control-Request-Method: POST",
		"Access-Control-Request-Headers: authorization, content-type",
		NULL };

	(void) state;
	http("GET", "/ok", NULL, NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	v = json_of(&r);
	assert_true(json_is_true(json_object_get(v, "ok")));
	json_decref(v);
	h = header_of(&r, "Access-Control-Allow-Origin");
	assert_non_null(h);
	assert_string_equal(h, "*");
	free(h);
	h = header_of(&r, "Access-Control-Expose-Headers");
	assert_non_null(h);
	assert_non_null(strstr(h, "x-pagination-total"));
	assert_non_null(strstr(h, "x-pagination-next"));
	free(h);
	resp_free(&r);

	http("GET", "/info", NULL, NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	v = json_of(&r);
	assert_string_equal(
	    json_string_value(json_object_get(v, "version")), TG_VERSION);
	json_decref(v);
	resp_free(&r);

	// Preflight: 204, no auth needed, the asked headers echoed.
	http("OPTIONS", "/threads", NULL, NULL, pre, &r);
	assert_int_equal(r.status, 204);
	assert_int_equal(r.len, 0);
	h = header_of(&r, "Access-Control-Allow-Origin");
	assert_string_equal(h, "https://app.example");
	free(h);
	h = header_of(&r, "Access-Control-Allow-Headers");
	assert_string_equal(h, "authorization, content-type");
	free(h);
	h = header_of(&r, "Access-Control-Allow-Methods");
	assert_non_null(strstr(h, "PATCH"));
	free(h);
	h = header_of(&r, "Access-Control-Max-Age");
	assert_non_null(h);
	free(h);
	resp_free(&r);
}

static void
test_request_id(void **state)
{
	resp        r;
	char       *h;
	const char *good[] = { "x-request-id: abc.DEF_123-x", NULL };
	const char *bad[]  = { "x-request-id: has space!", NULL };

	(void) state;
	http("GET", "/ok", NULL, NULL, good, &r);
	h = header_of(&r, "x-request-id");
	assert_string_equal(h, "abc.DEF_123-x");
	free(h);
	resp_free(&r);
	// Errors carry it too.
	http("POST", "/threads", NULL, "{}", good, &r);
	assert_int_equal(r.status, 401);
	h = header_of(&r, "x-request-id");
	assert_string_equal(h, "abc.DEF_123-x");
	free(h);
	resp_free(&r);
	http("GET", "/ok", NULL, NULL, bad, &r);
	h = header_of(&r, "x-request-id");
	assert_non_null(h);
	assert_int_equal(strlen(h), CM_RID_LEN);
	free(h);
	resp_free(&r);
}

static void
test_keepalive(void **state)
{
	CURL *h = curl_easy_init();
	resp  r;

	(void) state;
	http_on(h, "GET", "/ok", NULL, NULL, 0, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.connects, 1);
	resp_free(&r);
	// The second request (suspended/resumed through both backends)
	// reuses the connection.
	http_on(h, "POST", "/threads/count", S.tok1, "{}", 2, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.connects, 0);
	resp_free(&r);
	http_on(h, "POST", "/threads/count", S.tok1, "{}", 2, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.connects, 0);
	resp_free(&r);
	curl_easy_cleanup(h);
}

static void
test_body_cap(void **state)
{
	CURL  *h   = curl_easy_init();
	size_t n   = TEST_MAX_BODY + 40000;
	char  *big = cm_xmalloc(n);
	resp   r;

	(void) state;
	memset(big, ' ', n);
	big[0]     = '{';
	big[n - 1] = '}';
	http_on(h, "GET", "/ok", NULL, NULL, 0, NULL, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	http_on(h, "POST", "/threads/search", S.tok1, big, n, NULL, &r);
	expect_detail(&r, 413, "Request body too large");
	resp_free(&r);
	// The same connection still serves requests.
	http_on(h, "POST", "/threads/count", S.tok1, "{}", 2, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.connects, 0);
	resp_free(&r);
	// Exactly at the cap is accepted (and parsed).
	http_on(h, "POST", "/threads/search", S.tok1, big, TEST_MAX_BODY - 1,
	    NULL, &r);
	assert_true(r.status == 422 || r.status == 200);
	resp_free(&r);
	free(big);
	curl_easy_cleanup(h);
}

static void
test_spoofed_identity(void **state)
{
	char    h1[512], h2[512], h3[512], h4[512];
	resp    r;
	json_t *v;
	char   *tid;
	char    path[128];

	(void) state;
	// User 1 creates a thread while claiming to be user 2.
	snprintf(h1, sizeof(h1), "X-User-Id: %s", S.uid2);
	snprintf(h2, sizeof(h2), "X-Owner: %s", S.uid2);
	snprintf(h3, sizeof(h3), "X-Forwarded-User: %s", S.uid2);
	snprintf(h4, sizeof(h4), "X-Threadgate-Owner: %s", S.uid2);
	const char *spoof2[] = { h1, h2, h3, h4, "Remote-User: admin",
		"X-Auth-Request-User: admin", NULL };
	http("POST", "/threads", S.tok1, "{\"metadata\":{\"owner\":\"evil\"}}",
	    spoof2, &r);
	assert_int_equal(r.status, 200);
	v = json_of(&r);
	assert_string_equal(json_string_value(json_object_get(
	                        json_object_get(v, "metadata"), "owner")),
	    S.uid1);
	tid = cm_xstrdup(json_string_value(json_object_get(v, "thread_id")));
	json_decref(v);
	resp_free(&r);
	snprintf(path, sizeof(path), "/threads/%s", tid);

	// User 2, claiming to be user 1, still cannot see it.
	snprintf(h1, sizeof(h1), "X-User-Id: %s", S.uid1);
	snprintf(h2, sizeof(h2), "X-Owner: %s", S.uid1);
	const char *spoof1[] = { h1, h2, NULL };
	http("GET", path, S.tok2, NULL, spoof1, &r);
	expect_detail(&r, 404, NULL);
	resp_free(&r);
	http(
	    "POST", "/threads/search", S.tok2, "{\"limit\":1000}", spoof1, &r);
	assert_int_equal(r.status, 200);
	assert_null(strstr(r.body, tid));
	resp_free(&r);
	// A spoof header without a token is still unauthenticated.
	http("GET", path, NULL, NULL, spoof1, &r);
	expect_detail(&r, 401, NULL);
	resp_free(&r);
	// The owner can.
	http("GET", path, S.tok1, NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	free(tid);
}

static void
test_auth_and_isolation(void **state)
{
	char *tid = create_thread(S.tok1, "{}");
	char  path[128];
	resp  r;
	char *h;

	(void) state;
	snprintf(path, sizeof(path), "/threads/%s", tid);
	http("GET", path, NULL, NULL, NULL, &r);
	expect_detail(&r, 401, NULL);
	h = header_of(&r, "WWW-Authenticate");
	assert_non_null(h);
	assert_non_null(strstr(h, "Bearer"));
	assert_null(strstr(h, "invalid_token"));
	free(h);
	resp_free(&r);
	http("GET", path, "garbage.token.here", NULL, NULL, &r);
	expect_detail(&r, 401, NULL);
	h = header_of(&r, "WWW-Authenticate");
	assert_non_null(strstr(h, "invalid_token"));
	free(h);
	resp_free(&r);

	http("GET", path, S.tok2, NULL, NULL, &r);
	expect_detail(&r, 404, NULL);
	resp_free(&r);
	http("PATCH", path, S.tok2, "{\"metadata\":{\"x\":1}}", NULL, &r);
	expect_detail(&r, 404, NULL);
	resp_free(&r);
	http("DELETE", path, S.tok2, NULL, NULL, &r);
	expect_detail(&r, 404, NULL);
	resp_free(&r);
	// Prefer: return=minimal -> 204, empty.
	{
		const char *pref[] = { "Prefer: return=minimal", NULL };
		http("PATCH", path, S.tok1, "{\"metadata\":{\"x\":1}}", pref,
		    &r);
		assert_int_equal(r.status, 204);
		assert_int_equal(r.len, 0);
		resp_free(&r);
	}
	http("DELETE", path, S.tok1, NULL, NULL, &r);
	assert_int_equal(r.status, 204);
	assert_int_equal(r.len, 0);
	resp_free(&r);
	free(tid);
}

static void
test_error_table(void **state)
{
	static const struct {
		const char *method;
		const char *path;
		const char *body;
		long        status;
		const char *detail;
	} rows[] = {
		{ "GET", "/threads/not-a-uuid", NULL, 422,
		    "Invalid thread ID: must be a UUID" },
		{ "GET", "/threads/01a21aea-6f0c-7600-af02-7657fcc02ab", NULL,
		    422, "Invalid thread ID: must be a UUID" },
		{ "DELETE", "/threads/%zz", NULL, 422,
		    "Invalid thread ID: must be a UUID" },
		{ "GET", "/threads/00000000-0000-4000-8000-000000000000", NULL,
		    404, NULL },
		{ "POST", "/threads", "{bad json", 422,
		    "Invalid JSON in request body" },
		{ "POST", "/threads", "[1,2]", 422,
		    "Request body must be a JSON object" },
		{ "POST", "/threads", "{\"metadata\":5}", 422,
		    "metadata must be an object" },
		{ "POST", "/threads/search", "{\"limit\":0}", 422,
		    "limit must be an integer between 1 and 1000" },
		{ "POST", "/threads/search", "{\"limit\":\"x\"}", 422,
		    "limit must be an integer between 1 and 1000" },
		{ "POST", "/threads/search", "{\"select\":[\"password\"]}",
		    422, "select: unknown field 'password'" },
		{ "POST", "/threads/search", "{\"sort_by\":\"owner\"}", 422,
		    NULL },
		// A NUL after a valid name is not that name (issue 10).
		{ "POST", "/threads/search",
		    "{\"select\":[\"thread_id\\u0000\"]}", 422,
		    "select[0] must be a field name" },
		{ "POST", "/threads/search", "{\"status\":\"idle\\u0000x\"}",
		    422,
		    "status must be one of idle, busy, interrupted, error" },
		{ "POST", "/threads/00000000-0000-4000-8000-000000000000/copy",
		    NULL, 409, NULL },
		{ "GET", "/nope", NULL, 404, NULL },
		{ "PUT", "/threads", NULL, 405, NULL },
	};
	resp r;

	(void) state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		http(rows[i].method, rows[i].path, S.tok1, rows[i].body, NULL,
		    &r);
		expect_detail(&r, rows[i].status, rows[i].detail);
		if (rows[i].status == 405) {
			char *a = header_of(&r, "Allow");
			assert_non_null(a);
			assert_non_null(strstr(a, "POST"));
			free(a);
		}
		resp_free(&r);
	}
	// A raw NUL after the JSON used to end jansson's reading, so the
	// garbage after it was ignored; now the body is invalid JSON.
	http_on(NULL, "POST", "/threads/search", S.tok1,
	    "{\"limit\":1}\0{\"limit\":0}", 23, NULL, &r);
	expect_detail(&r, 422, "Invalid JSON in request body");
	resp_free(&r);
	// Deep JSON is refused, not recursed into.
	{
		size_t depth = 10000;
		char  *deep  = cm_xmalloc(2 * depth + 1);
		memset(deep, '[', depth);
		memset(deep + depth, ']', depth);
		deep[2 * depth] = '\0';
		http("POST", "/threads", S.tok1, deep, NULL, &r);
		expect_detail(&r, 422, "Invalid JSON in request body");
		resp_free(&r);
		free(deep);
	}
	// Conflict on an existing id.
	{
		char *tid = create_thread(S.tok1, "{}");
		char  body[128];
		snprintf(body, sizeof(body), "{\"thread_id\":\"%s\"}", tid);
		http("POST", "/threads", S.tok2, body, NULL, &r);
		expect_detail(&r, 409, NULL);
		resp_free(&r);
		free(tid);
	}
}

static void
test_search_pagination(void **state)
{
	resp    r;
	char    body[256];
	char   *h;
	json_t *v;
	char    tag[40];

	(void) state;
	cm_uuid4(tag);
	for (int i = 0; i < 12; i++) {
		snprintf(body, sizeof(body), "{\"metadata\":{\"tag\":\"%s\"}}",
		    tag);
		free(create_thread(S.tok1, body));
	}
	snprintf(body, sizeof(body),
	    "{\"metadata\":{\"tag\":\"%s\"},\"limit\":5,\"offset\":5,"
	    "\"select\":[\"thread_id\",\"metadata\"]}",
	    tag);
	http("POST", "/threads/search", S.tok1, body, NULL, &r);
	assert_int_equal(r.status, 200);
	v = json_of(&r);
	assert_int_equal(json_array_size(v), 5);
	assert_int_equal(json_object_size(json_array_get(v, 0)), 2);
	json_decref(v);
	// offset + page + 1 while more follow (the reference server's rule).
	h = header_of(&r, "X-Pagination-Total");
	assert_string_equal(h, "11");
	free(h);
	h = header_of(&r, "X-Pagination-Next");
	assert_string_equal(h, "10");
	free(h);
	resp_free(&r);
	snprintf(body, sizeof(body), "{\"metadata\":{\"tag\":\"%s\"}}", tag);
	http("POST", "/threads/count", S.tok1, body, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "12");
	resp_free(&r);
	http("POST", "/threads/count", S.tok2, body, NULL, &r);
	assert_string_equal(r.body, "0");
	resp_free(&r);
}

// complete() is 1 when buf holds a whole response (headers + a body of
// its Content-Length).
static int
complete(const char *buf)
{
	const char *end = strstr(buf, "\r\n\r\n");
	const char *cl  = strcasestr(buf, "\r\nContent-Length:");
	int64_t     n   = 0;
	char        num[24];
	size_t      k = 0;

	if (end == NULL || cl == NULL || cl > end) {
		return (0);
	}
	cl += strlen("\r\nContent-Length:");
	while (*cl == ' ') {
		cl++;
	}
	while (k + 1 < sizeof(num) && cl[k] >= '0' && cl[k] <= '9') {
		num[k] = cl[k];
		k++;
	}
	num[k] = '\0';
	if (cm_parse_i64(num, 0, 65535, &n) != CM_OK) {
		return (0);
	}
	return (strlen(end + 4) >= (size_t) n);
}

// raw() sends bytes on a new TCP connection and reads the answer until the
// server closes or 5 s pass. Returns the bytes read (new, NUL-terminated).
static char *
raw(const void *data, size_t len)
{
	struct sockaddr_in sa  = { 0 };
	int                fd  = socket(AF_INET, SOCK_STREAM, 0);
	char              *out = cm_xcalloc(1, 65536);
	size_t             got = 0;
	int64_t            until;

	sa.sin_family      = AF_INET;
	sa.sin_port        = htons((uint16_t) S.gw_port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
	for (size_t off = 0; off < len;) {
		ssize_t n = send(
		    fd, (const char *) data + off, len - off, MSG_NOSIGNAL);
		if (n <= 0) {
			break; // the server may close early
		}
		off += (size_t) n;
	}
	shutdown(fd, SHUT_WR);
	until = cm_mono_ms() + 5000;
	while (got < 65535 && cm_mono_ms() < until) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 200) <= 0) {
			continue;
		}
		ssize_t n = recv(fd, out + got, 65535 - got, 0);
		if (n <= 0) {
			break;
		}
		got += (size_t) n;
		if (complete(out)) {
			break; // one whole response: no need to wait for close
		}
	}
	close(fd);
	return (out);
}

static void
assert_alive(void)
{
	resp r;

	assert_true(tg_proc_alive(S.gw));
	http("GET", "/ok", NULL, NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
}

static void
test_garbage(void **state)
{
	unsigned char rnd[4096];
	char         *out;
	size_t        n;
	char         *req;

	(void) state;
	for (int i = 0; i < 5; i++) {
		cm_random_bytes(rnd, sizeof(rnd));
		free(raw(rnd, sizeof(rnd)));
	}
	assert_alive();
	// A header far over the per-connection memory limit: 431 or close,
	// never a crash.
	n   = 200000;
	req = cm_xmalloc(n + 128);
	n   = (size_t) snprintf(req, 128,
	      "GET /ok HTTP/1.1\r\nHost: x\r\n"
	        "X-Big: ");
	memset(req + n, 'a', 200000);
	n += 200000;
	memcpy(req + n, "\r\n\r\n", 4);
	n += 4;
	out = raw(req, n);
	assert_true(out[0] == '\0' || strncmp(out, "HTTP/1.1 431", 12) == 0 ||
	    strncmp(out, "HTTP/1.1 4", 10) == 0);
	free(out);
	free(req);
	assert_alive();
	// A truncated request line and a bogus method.
	out = raw("GET /threads/", 13);
	free(out);
	out = raw("BREW /ok HTTP/1.1\r\nHost: x\r\n\r\n", 30);
	assert_true(out[0] == '\0' || strncmp(out, "HTTP/1.1 4", 10) == 0 ||
	    strncmp(out, "HTTP/1.1 5", 10) == 0);
	free(out);
	// An absurdly long path: 414, not a crash.
	{
		size_t plen = 6000;
		char  *p    = cm_xmalloc(plen + 64);
		size_t k    = (size_t) snprintf(p, 64, "GET /threads/");
		memset(p + k, 'a', plen);
		k += plen;
		k += (size_t) snprintf(
		    p + k, 64, " HTTP/1.1\r\nHost: x\r\n\r\n");
		out = raw(p, k);
		assert_int_equal(strncmp(out, "HTTP/1.1 414", 12), 0);
		free(out);
		free(p);
	}
	// A chunked body far over the cap.
	{
		const char *hdr   = "POST /threads HTTP/1.1\r\nHost: x\r\n"
		                    "Transfer-Encoding: chunked\r\n\r\n";
		size_t      chunk = 8192, count = 40;
		size_t      cap = strlen(hdr) + count * (chunk + 16) + 16;
		char       *b   = cm_xmalloc(cap);
		size_t      k   = (size_t) snprintf(b, cap, "%s", hdr);
		for (size_t i = 0; i < count; i++) {
			k += (size_t) snprintf(
			    b + k, cap - k, "%zx\r\n", chunk);
			memset(b + k, 'x', chunk);
			k += chunk;
			memcpy(b + k, "\r\n", 2);
			k += 2;
		}
		k += (size_t) snprintf(b + k, cap - k, "0\r\n\r\n");
		out = raw(b, k);
		assert_int_equal(strncmp(out, "HTTP/1.1 413", 12), 0);
		free(out);
		free(b);
	}
	assert_alive();
}

// closed_within() is 1 when the server closes fd (EOF or reset) within ms.
static int
closed_within(int fd, int ms)
{
	int64_t until = cm_mono_ms() + ms;
	char    b[256];

	while (cm_mono_ms() < until) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 50) <= 0) {
			continue;
		}
		ssize_t n = recv(fd, b, sizeof(b), 0);
		if (n <= 0) {
			return (1);
		}
	}
	return (0);
}

static int
connect_gw(void)
{
	struct sockaddr_in sa = { 0 };
	int                fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_family      = AF_INET;
	sa.sin_port        = htons((uint16_t) S.gw_port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
	return (fd);
}

static void
test_idle_timeout(void **state)
{
	int64_t t0 = cm_mono_ms();
	int     fd = connect_gw();
	int64_t took;

	(void) state;
	// A connection that never sends is closed after the idle timeout
	// (2 s here), not kept forever and not closed at once.
	assert_true(closed_within(fd, 10000));
	took = cm_mono_ms() - t0;
	close(fd);
	assert_true(took >= 1000);
	assert_true(took < 10000);
}

static void
test_per_ip_limit(void **state)
{
	int fds[FLOOD];
	int closed = 0;

	(void) state;
	for (int i = 0; i < FLOOD; i++) {
		fds[i] = connect_gw();
	}
	// The connections over the per-IP limit are closed at once (well
	// before the 2 s idle timeout closes the others).
	for (int i = 0; i < FLOOD; i++) {
		closed += closed_within(fds[i], i == 0 ? 300 : 20);
	}
	for (int i = 0; i < FLOOD; i++) {
		close(fds[i]);
	}
	assert_true(closed >= FLOOD - PER_IP_N);
	assert_true(closed < FLOOD);
	// Once MHD has noticed our closes, the slots are free again.
	{
		int64_t until = cm_mono_ms() + 5000;
		long    st    = -1;
		while (st != 200 && cm_mono_ms() < until) {
			resp r;
			http("GET", "/ok", NULL, NULL, NULL, &r);
			st = r.status;
			resp_free(&r);
			if (st != 200) {
				poll(NULL, 0, 20);
			}
		}
		assert_int_equal(st, 200);
	}
}

// raw_conn_from() connects to the gateway from 127.0.0.<host> (every
// 127/8 address is loopback on Linux).
static int
raw_conn_from(int host)
{
	struct sockaddr_in sa   = { 0 };
	struct sockaddr_in from = { 0 };
	int                fd   = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	from.sin_family      = AF_INET;
	from.sin_addr.s_addr = htonl(INADDR_LOOPBACK - 1 + (uint32_t) host);
	assert_int_equal(bind(fd, (struct sockaddr *) &from, sizeof(from)), 0);
	sa.sin_family      = AF_INET;
	sa.sin_port        = htons((uint16_t) S.gw_port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
	return (fd);
}

static int
raw_conn(void)
{
	return (raw_conn_from(1));
}

// exchange() sends len bytes on a new connection, keeping our side open,
// and reads until the server closes or 5 s pass. Returns the bytes read
// (new) and sets *closed when the server closed the connection.
static char *
exchange(const char *data, size_t len, int *closed)
{
	int     fd  = raw_conn();
	char   *out = cm_xcalloc(1, 65536);
	size_t  got = 0;
	int64_t until;

	*closed = 0;
	for (size_t off = 0; off < len;) {
		ssize_t n = send(fd, data + off, len - off, MSG_NOSIGNAL);
		if (n <= 0) {
			break;
		}
		off += (size_t) n;
	}
	until = cm_mono_ms() + 5000;
	while (got < 65535 && cm_mono_ms() < until) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 100) <= 0) {
			continue;
		}
		ssize_t n = recv(fd, out + got, 65535 - got, 0);
		if (n <= 0) {
			*closed = 1;
			break;
		}
		got += (size_t) n;
	}
	close(fd);
	return (out);
}

// count_of() counts occurrences of needle in hay.
static int
count_of(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = strstr(hay, needle); p != NULL;
	     p             = strstr(p + 1, needle)) {
		n++;
	}
	return (n);
}

static void
test_framing(void **state)
{
	// One row per RFC 9112 framing rule the gateway enforces: the answer
	// is the status with a JSON {"detail"}, exactly one response (what
	// follows a refused head is never parsed as a second request), and
	// the gateway closes the connection although we keep ours open.
	static const struct {
		const char *name;
		const char *req;
		size_t      len;
		unsigned    status;
		const char *detail;
	} rows[] = {
#define F(n, r, st, d) { n, r, sizeof(r) - 1, st, d }
		F("CL and TE, smuggled GET",
		    "POST /threads/search HTTP/1.1\r\nHost: x\r\n"
		    "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
		    "0\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n",
		    400, "Both Content-Length and Transfer-Encoding"),
		F("two different Content-Length, smuggled GET",
		    "POST /threads/search HTTP/1.1\r\nHost: x\r\n"
		    "Content-Length: 0\r\nContent-Length: 32\r\n\r\n"
		    "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n",
		    400, "Conflicting Content-Length headers"),
		F("bare LF line endings", "GET /ok HTTP/1.1\nHost: x\n\n", 400,
		    "Bare LF line ending"),
		F("bare LF in one field line",
		    "GET /ok HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", 400,
		    "Bare LF line ending"),
		F("NUL in a header value",
		    "GET /ok HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400,
		    "NUL byte in request head"),
		F("HTTP/1.1 without Host", "GET /ok HTTP/1.1\r\n\r\n", 400,
		    "Missing Host header"),
		F("unknown transfer coding (gzip)",
		    "POST /threads HTTP/1.1\r\nHost: x\r\n"
		    "Transfer-Encoding: gzip\r\n\r\nabc",
		    400, "Transfer-Encoding must end with chunked, once"),
		F("unknown coding before chunked",
		    "POST /threads HTTP/1.1\r\nHost: x\r\n"
		    "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		    501, "Transfer coding not implemented"),
		F("obs-fold",
		    "GET /ok HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400,
		    "Obsolete line folding"),
		F("space before colon",
		    "GET /ok HTTP/1.1\r\nHost: x\r\nX : a\r\n\r\n", 400,
		    "Whitespace before colon in header field"),
		F("malformed chunk size",
		    "POST /threads HTTP/1.1\r\nHost: x\r\n"
		    "Transfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
		    400, "Malformed chunk size"),
		F("HTTP/2.0 request line", "GET /ok HTTP/2.0\r\n\r\n", 505,
		    "HTTP version not supported"),
#undef F
	};

	(void) state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		int   closed;
		char *out = exchange(rows[i].req, rows[i].len, &closed);
		char  want[64];
		char *body;

		snprintf(want, sizeof(want), "HTTP/1.1 %u ", rows[i].status);
		if (strncmp(out, want, strlen(want)) != 0) {
			fail_msg("%s: got %.60s", rows[i].name, out);
		}
		if (count_of(out, "HTTP/1.1 ") != 1) {
			fail_msg("%s: %d responses", rows[i].name,
			    count_of(out, "HTTP/1.1 "));
		}
		if (!closed) {
			fail_msg("%s: connection left open", rows[i].name);
		}
		assert_non_null(strcasestr(out, "\r\nConnection: close\r\n"));
		assert_non_null(
		    strcasestr(out, "\r\nContent-Type: application/json\r\n"));
		body = strstr(out, "\r\n\r\n");
		assert_non_null(body);
		{
			json_t *v = json_loads(body + 4, 0, NULL);
			if (!json_is_string(json_object_get(v, "detail")) ||
			    strcmp(json_string_value(
			               json_object_get(v, "detail")),
			        rows[i].detail) != 0) {
				fail_msg(
				    "%s: body %s", rows[i].name, body + 4);
			}
			json_decref(v);
		}
		free(out);
	}
	// A valid token followed by a NUL and junk authenticated before
	// (MHD cut the value at the NUL); now the request is refused.
	{
		char *tid = create_thread(S.tok1, "{}");
		char  req[16384];
		int   n, closed;
		char *out;
		n = snprintf(req, sizeof(req),
		    "GET /threads/%s HTTP/1.1\r\nHost: x\r\n"
		    "Authorization: Bearer %s",
		    tid, S.tok1);
		memcpy(req + n, "\0junk\r\n\r\n", 9);
		out = exchange(req, (size_t) n + 9, &closed);
		assert_int_equal(strncmp(out, "HTTP/1.1 400 ", 13), 0);
		assert_true(closed);
		free(out);
		free(tid);
	}
	assert_alive();
}

// half_closed() sends count complete requests on as many connections,
// each followed by shutdown(SHUT_WR), all at once, and counts the
// answers with status want (every one must come).
static int
half_closed(int count, unsigned want)
{
	int    *fds  = cm_xcalloc((size_t) count, sizeof(int));
	char  **outs = cm_xcalloc((size_t) count, sizeof(char *));
	size_t *got  = cm_xcalloc((size_t) count, sizeof(size_t));
	int    *done = cm_xcalloc((size_t) count, sizeof(int));
	char    req[16384];
	char    prefix[32];
	int     n, left = count, ok = 0;
	int64_t until = cm_mono_ms() + 20000;

	n = snprintf(req, sizeof(req),
	    "POST /threads/count HTTP/1.1\r\nHost: x\r\n"
	    "Authorization: Bearer %s\r\nContent-Length: 2\r\n\r\n{}",
	    S.tok1);
	for (int i = 0; i < count; i++) {
		// Spread over five addresses: 12 each stays under the
		// per-address limit this stack runs with.
		fds[i]  = raw_conn_from(10 + i % 5);
		outs[i] = cm_xcalloc(1, 8192);
		assert_int_equal(
		    send(fds[i], req, (size_t) n, MSG_NOSIGNAL), n);
		shutdown(fds[i], SHUT_WR);
	}
	while (left > 0 && cm_mono_ms() < until) {
		for (int i = 0; i < count; i++) {
			struct pollfd p = { fds[i], POLLIN, 0 };
			ssize_t       r;
			if (done[i] || poll(&p, 1, 0) <= 0) {
				continue;
			}
			r = recv(fds[i], outs[i] + got[i], 8191 - got[i], 0);
			if (r <= 0) {
				done[i] = 1;
				left--;
				continue;
			}
			got[i] += (size_t) r;
		}
		poll(NULL, 0, 5);
	}
	snprintf(prefix, sizeof(prefix), "HTTP/1.1 %u ", want);
	for (int i = 0; i < count; i++) {
		ok += strncmp(outs[i], prefix, strlen(prefix)) == 0;
		close(fds[i]);
		free(outs[i]);
	}
	free(fds);
	free(outs);
	free(got);
	free(done);
	return (ok);
}

// Clients that give up mid-request in the log test.
#define ABORTS 50

static void
test_aborted_log(void **state)
{
	char *log = path_in("gw.log");
	char *txt;
	int   lines = 0;

	(void) state;
	// Each client sends half a head, then resets the connection. Before,
	// every one was a warn line; now one line per 10 s carries a count.
	for (int i = 0; i < ABORTS; i++) {
		static const char half[] = "GET /ok HTTP/1.1\r\nHo";
		int               fd     = raw_conn_from(30 + i % 5);
		struct linger     lg     = { 1, 0 }; // close with a reset
		assert_true(send(fd, half, sizeof(half) - 1, MSG_NOSIGNAL) ==
		    (ssize_t) (sizeof(half) - 1));
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
	}
	assert_alive();
	txt = tg_read_file(log);
	assert_non_null(txt);
	// The whole run so far (these 50 and the earlier tests' aborts) is
	// a line per 10 s window, not a line per client.
	lines = count_of(txt, "connections aborted by clients");
	if (lines < 1 || lines >= ABORTS / 5) {
		fail_msg(
		    "%d abort lines for %d aborted clients", lines, ABORTS);
	}
	free(txt);
	free(log);
}

// Connections at once in the half-close test (the issue saw 56 of 60
// unanswered).
#define HALF_CLOSED 60

static void
test_half_close(void **state)
{
	(void) state;
	// A client that sent a whole request and shut its write side gets
	// its answer, also when the upstream step is slow: with the
	// thread-service stopped each request waits for the 1.5 s deadline
	// and is answered 503 (before, most such clients got no answer).
	assert_int_equal(half_closed(HALF_CLOSED, 200), HALF_CLOSED);
	tg_proc_stop(S.threads);
	S.threads = NULL;
	assert_int_equal(half_closed(HALF_CLOSED, 503), HALF_CLOSED);
	assert_int_equal(start_threads(), 0);
	assert_int_equal(wait_ready(READY_MS), 0);
}

static void
expect_503(const char *what, const char *tok)
{
	resp  r;
	char *h;

	http("POST", "/threads/count", tok, "{}", NULL, &r);
	if (r.status != 503) {
		fail_msg("%s down: status %ld (want 503), body %s", what,
		    r.status, r.body ? r.body : "");
	}
	expect_detail(&r, 503, NULL);
	h = header_of(&r, "Retry-After");
	assert_non_null(h);
	assert_string_equal(h, "1");
	free(h);
	resp_free(&r);
}

static void
test_threads_down(void **state)
{
	int st;

	(void) state;
	st        = tg_proc_stop(S.threads);
	S.threads = NULL;
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	expect_503("thread-service", S.tok1);
	expect_503("thread-service", S.tok1);
	assert_int_equal(start_threads(), 0);
	assert_int_equal(wait_ready(READY_MS), 0);
}

static void
test_auth_down(void **state)
{
	char *tok = NULL;
	char *uid = NULL;

	(void) state;
	// A token the gateway has never seen: one it used within
	// GATEWAY_AUTH_CACHE_TTL may be answered from its identity cache.
	assert_int_equal(signup("e2e-three@example.com", &tok, &uid), 0);
	tg_proc_stop(S.auth);
	S.auth = NULL;
	// Not 401 (the token may be fine) and never a success.
	expect_503("auth-service", tok);
	expect_503("auth-service", tok);
	free(tok);
	free(uid);
	assert_int_equal(start_auth(), 0);
	assert_int_equal(wait_ready(READY_MS), 0);
}

static void
test_sigterm_inflight(void **state)
{
	CURLM             *m = curl_multi_init();
	CURL              *e[INFLIGHT];
	resp               r[INFLIGHT];
	struct curl_slist *hdrs = NULL;
	char               auth[16384];
	char               url[128];
	int                running = 1;
	int                st;
	int                sent;

	(void) state;
	// With the thread-service down each request waits in the upstream
	// step (~1 s), so all of them are in flight when SIGTERM arrives.
	tg_proc_stop(S.threads);
	S.threads = NULL;
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", S.tok1);
	hdrs = curl_slist_append(hdrs, auth);
	snprintf(
	    url, sizeof(url), "http://127.0.0.1:%d/threads/count", S.gw_port);
	for (int i = 0; i < INFLIGHT; i++) {
		memset(&r[i], 0, sizeof(r[i]));
		e[i] = curl_easy_init();
		curl_easy_setopt(e[i], CURLOPT_URL, url);
		curl_easy_setopt(e[i], CURLOPT_POSTFIELDS, "{}");
		curl_easy_setopt(e[i], CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(e[i], CURLOPT_WRITEFUNCTION, on_body);
		curl_easy_setopt(e[i], CURLOPT_WRITEDATA, &r[i]);
		curl_easy_setopt(e[i], CURLOPT_TIMEOUT_MS, 20000L);
		curl_multi_add_handle(m, e[i]);
	}
	// Drive until every request is on the wire (bounded).
	{
		int64_t until = cm_mono_ms() + 10000;
		do {
			curl_multi_perform(m, &running);
			curl_multi_poll(m, NULL, 0, 20, NULL);
			sent = 0;
			for (int i = 0; i < INFLIGHT; i++) {
				long rs = 0;
				curl_easy_getinfo(
				    e[i], CURLINFO_REQUEST_SIZE, &rs);
				sent += rs > 0;
			}
		} while (sent < INFLIGHT && cm_mono_ms() < until);
	}
	assert_int_equal(sent, INFLIGHT);
	kill(tg_proc_pid(S.gw), SIGTERM);
	while (running > 0) {
		curl_multi_perform(m, &running);
		curl_multi_poll(m, NULL, 0, 100, NULL);
	}
	for (int i = 0; i < INFLIGHT; i++) {
		long code = 0;
		curl_easy_getinfo(e[i], CURLINFO_RESPONSE_CODE, &code);
		// Every request in flight got an answer: the backend is
		// down, so 503 - never a reset, never a success.
		assert_int_equal(code, 503);
		curl_multi_remove_handle(m, e[i]);
		curl_easy_cleanup(e[i]);
		resp_free(&r[i]);
	}
	curl_multi_cleanup(m);
	curl_slist_free_all(hdrs);
	st   = tg_proc_stop(S.gw);
	S.gw = NULL;
	if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
		dump_logs();
		fail_msg("gateway exit status %d", st);
	}
}

static void
test_port_taken(void **state)
{
	// A second gateway on the first one's port exits 3 and names the
	// variable to change.
	char     port[32];
	char    *bin = binary("gateway/threadgate-gateway");
	char    *log = path_in("gw2.log");
	char    *txt;
	tg_proc *p;
	int      st;

	(void) state;
	snprintf(port, sizeof(port), "%d", S.gw_port);
	const char *argv[] = { bin, "--port", port, NULL };
	const char *env[]  = { "GATEWAY_HOST=127.0.0.1", NULL };
	assert_int_equal(tg_proc_start(argv, env, log, &p), 0);
	{
		int64_t until = cm_mono_ms() + READY_MS;
		while (tg_proc_alive(p) && cm_mono_ms() < until) {
			poll(NULL, 0, 10);
		}
	}
	st = tg_proc_stop(p);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 3);
	txt = tg_read_file(log);
	assert_non_null(txt);
	assert_non_null(strstr(txt, "GATEWAY_PORT"));
	assert_non_null(strstr(txt, port));
	free(txt);
	free(bin);
	free(log);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_meta_and_cors),
		cmocka_unit_test(test_request_id),
		cmocka_unit_test(test_keepalive),
		cmocka_unit_test(test_body_cap),
		cmocka_unit_test(test_spoofed_identity),
		cmocka_unit_test(test_auth_and_isolation),
		cmocka_unit_test(test_error_table),
		cmocka_unit_test(test_search_pagination),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_framing),
		cmocka_unit_test(test_half_close),
		cmocka_unit_test(test_aborted_log),
		cmocka_unit_test(test_port_taken),
		cmocka_unit_test(test_idle_timeout),
		cmocka_unit_test(test_per_ip_limit),
		cmocka_unit_test(test_threads_down),
		cmocka_unit_test(test_auth_down),
		cmocka_unit_test(test_sigterm_inflight),
	};
	return (cmocka_run_group_tests(tests, setup, teardown));
}
