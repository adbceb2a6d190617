// SPDX-License-Identifier: MIT
//
// Contract test for the dev IdP over real HTTP: starts the built
// threadgate-dev-idp (port 0, database in a private temp dir) and drives
// it with libcurl. Covers signup -> login -> /user -> refresh -> logout ->
// /user 403 session_not_found; wrong password, duplicate signup, missing
// apikey; the JWKS (exactly the public key, the token's kid); alg:none
// and tampered tokens; the new error format header echo; the body cap
// (413); refusal of a non-loopback address, a taken port (exit 3); and a
// restart on the same database keeping old tokens valid.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>

#include <cjose/cjose.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "common/util.h"
#include "common/xalloc.h"
#include "tests/harness/proc.h"

#define ANON    "threadgate-dev-anon-key"
#define SERVICE "threadgate-dev-service-key"
// How long the server may take to start or stop, in ms.
#define START_TIMEOUT_MS 15000
// Largest response kept by the client, in bytes.
#define RESP_MAX (1024u * 1024u)
// Buffers for URLs, headers and small texts.
#define URL_MAX   512
#define HDR_MAX   8192
#define PATH_MAX_ 4096

static char    *dir;
static char     bin[PATH_MAX_], db[PATH_MAX_], portfile[PATH_MAX_];
static char     logpath[PATH_MAX_];
static tg_proc *proc;
static int      port;

// ---------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------

typedef struct buf {
	char  *p;
	size_t n;
} buf;

typedef struct resp {
	long    status;
	json_t *json; // NULL for an empty or non-JSON body
	buf     body;
	buf     headers;
} resp;

static size_t
on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
	buf   *b = ud;
	size_t n = size * nmemb;

	if (b->n + n > RESP_MAX) {
		return (0);
	}
	b->p = cm_xrealloc(b->p, b->n + n + 1);
	memcpy(b->p + b->n, ptr, n);
	b->n += n;
	b->p[b->n] = '\0';
	return (n);
}

static void
resp_free(resp *r)
{
	json_decref(r->json);
	free(r->body.p);
	free(r->headers.p);
	memset(r, 0, sizeof(*r));
}

// header() finds a response header value (copied into out), or NULL.
static const char *
header(const resp *r, const char *name, char *out, size_t outlen)
{
	const char *p  = r->headers.p;
	size_t      nl = strlen(name);

	while (p != NULL && *p != '\0') {
		const char *eol = strstr(p, "\r\n");
		size_t      len = eol != NULL ? (size_t) (eol - p) : strlen(p);
		if (len > nl && strncasecmp(p, name, nl) == 0 &&
		    p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ') {
				v++;
			}
			snprintf(out, outlen, "%.*s",
			    (int) (len - (size_t) (v - p)), v);
			return (out);
		}
		p = eol != NULL ? eol + 2 : NULL;
	}
	return (NULL);
}

// http() makes one request. hdrs is a NULL-terminated list (may be NULL).
static void
http(const char *method, const char *path, const char *const hdrs[],
    const char *body, size_t body_len, resp *r)
{
	CURL              *h  = curl_easy_init();
	struct curl_slist *sl = NULL;
	char               url[URL_MAX];
	CURLcode           rc;

	memset(r, 0, sizeof(*r));
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	for (size_t i = 0; hdrs != NULL && hdrs[i] != NULL; i++) {
		sl = curl_slist_append(sl, hdrs[i]);
	}
	sl = curl_slist_append(sl, "Expect:");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, sl);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &r->body);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &r->headers);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	if (body != NULL) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long) body_len);
	}
	rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		fprintf(stderr, "curl %s %s: %s\n", method, path,
		    curl_easy_strerror(rc));
	}
	assert_int_equal(rc, CURLE_OK);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	if (r->body.n > 0) {
		r->json = json_loadb(r->body.p, r->body.n, 0, NULL);
	}
	curl_slist_free_all(sl);
	curl_easy_cleanup(h);
}

static void
post_json(const char *path, const char *body, const char *auth, resp *r)
{
	char        a[HDR_MAX];
	const char *hdrs[] = { "apikey: " ANON,
		"Content-Type: application/json", NULL, NULL };

	if (auth != NULL) {
		snprintf(a, sizeof(a), "Authorization: Bearer %.*s",
		    (int) (sizeof(a) - sizeof("Authorization: Bearer ")),
		    auth);
		hdrs[2] = a;
	}
	http("POST", path, hdrs, body, body != NULL ? strlen(body) : 0, r);
}

static void
get_user(const char *token, resp *r)
{
	char        a[HDR_MAX];
	const char *hdrs[] = { "apikey: " ANON, a, NULL };

	snprintf(a, sizeof(a), "Authorization: Bearer %.*s",
	    (int) (sizeof(a) - sizeof("Authorization: Bearer ")), token);
	http("GET", "/auth/v1/user", hdrs, NULL, 0, r);
}

static const char *
jstr(json_t *v, const char *k)
{
	return (json_string_value(json_object_get(v, k)));
}

// ---------------------------------------------------------------------
// Process control
// ---------------------------------------------------------------------

static void
dump_log(void)
{
	char *s = tg_read_file(logpath);

	fprintf(stderr, "---- dev-idp log ----\n%s\n----\n", s ? s : "(none)");
	free(s);
}

static void
start_idp(void)
{
	const char *argv[] = { bin, "--port", "0", "--port-file", portfile,
		"--db", db, NULL };

	remove(portfile);
	assert_int_equal(tg_proc_start(argv, NULL, logpath, &proc), 0);
	port = tg_wait_port_file(portfile, START_TIMEOUT_MS);
	if (port < 0) {
		dump_log();
	}
	assert_true(port > 0);
}

static void
stop_idp(void)
{
	int st = tg_proc_stop(proc);

	proc = NULL;
	if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
		dump_log();
	}
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

// run_to_exit() runs the binary with argv and returns its exit code
// (polling for the exit, bounded).
static int
run_to_exit(const char *const argv[], const char *log)
{
	tg_proc        *p;
	struct timespec ts = { 0, 10 * 1000000L };
	int             st;

	assert_int_equal(tg_proc_start(argv, NULL, log, &p), 0);
	for (int i = 0; i < START_TIMEOUT_MS / 10 && tg_proc_alive(p); i++) {
		nanosleep(&ts, NULL);
	}
	assert_false(tg_proc_alive(p));
	st = tg_proc_stop(p);
	assert_true(WIFEXITED(st));
	return (WEXITSTATUS(st));
}

static int
setup(void **state)
{
	(void) state;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	dir = tg_tmpdir("dev-idp-http");
	snprintf(
	    bin, sizeof(bin), "%s/dev-idp/threadgate-dev-idp", tg_build_dir());
	snprintf(db, sizeof(db), "%s/idp.db", dir);
	snprintf(portfile, sizeof(portfile), "%s/port", dir);
	snprintf(logpath, sizeof(logpath), "%s/idp.log", dir);
	start_idp();
	return (0);
}

static int
teardown(void **state)
{
	(void) state;
	if (proc != NULL) {
		stop_idp();
	}
	free(dir);
	curl_global_cleanup();
	return (0);
}

// ---------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------

static void
test_full_flow(void **state)
{
	resp        r, login, ref;
	char        h[HDR_MAX];
	const char *uid;

	(void) state;
	post_json("/auth/v1/signup",
	    "{\"email\":\"alice@example.com\","
	    "\"password\":\"alice-pass\",\"data\":{\"name\":\"Alice\"}}",
	    NULL, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(jstr(r.json, "access_token"));
	assert_string_equal(jstr(r.json, "token_type"), "bearer");
	uid = jstr(json_object_get(r.json, "user"), "id");
	assert_non_null(header(&r, "sb-auth-user-id", h, sizeof(h)));
	assert_string_equal(h, uid);
	char user_id[64];
	snprintf(user_id, sizeof(user_id), "%s", uid);
	resp_free(&r);

	post_json("/auth/v1/token?grant_type=password",
	    "{\"email\":\"Alice@"
	    "Example.com\",\"password\":\"alice-pass\"}",
	    NULL, &login);
	assert_int_equal(login.status, 200);
	assert_int_equal(
	    json_integer_value(json_object_get(login.json, "expires_in")),
	    3600);

	get_user(jstr(login.json, "access_token"), &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "id"), user_id);
	assert_string_equal(jstr(r.json, "email"), "alice@example.com");
	assert_string_equal(
	    jstr(json_object_get(r.json, "user_metadata"), "name"), "Alice");
	resp_free(&r);

	char body[256];
	snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}",
	    jstr(login.json, "refresh_token"));
	post_json("/auth/v1/token?grant_type=refresh_token", body, NULL, &ref);
	assert_int_equal(ref.status, 200);
	assert_string_not_equal(jstr(ref.json, "refresh_token"),
	    jstr(login.json, "refresh_token"));
	get_user(jstr(ref.json, "access_token"), &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);

	post_json("/auth/v1/logout", NULL, jstr(ref.json, "access_token"), &r);
	assert_int_equal(r.status, 204);
	assert_int_equal(r.body.n, 0);
	resp_free(&r);
	get_user(jstr(ref.json, "access_token"), &r);
	assert_int_equal(r.status, 403);
	assert_string_equal(jstr(r.json, "error_code"), "session_not_found");
	assert_non_null(header(&r, "x-sb-error-code", h, sizeof(h)));
	assert_string_equal(h, "session_not_found");
	resp_free(&r);
	// The login's original token shares the session: gone too.
	get_user(jstr(login.json, "access_token"), &r);
	assert_int_equal(r.status, 403);
	resp_free(&r);
	resp_free(&ref);
	resp_free(&login);
}

static void
test_failures(void **state)
{
	resp        r;
	const char *nokey[]  = { "Content-Type: application/json", NULL };
	const char *badkey[] = { "apikey: wrong", NULL };

	(void) state;
	post_json("/auth/v1/signup",
	    "{\"email\":\"bob@example.com\","
	    "\"password\":\"bob-pass\"}",
	    NULL, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	post_json("/auth/v1/token?grant_type=password",
	    "{\"email\":\"bob@"
	    "example.com\",\"password\":\"not-bobs\"}",
	    NULL, &r);
	assert_int_equal(r.status, 400);
	assert_string_equal(jstr(r.json, "error_code"), "invalid_credentials");
	assert_string_equal(jstr(r.json, "msg"), "Invalid login credentials");
	resp_free(&r);
	post_json("/auth/v1/signup",
	    "{\"email\":\"BOB@example.com\","
	    "\"password\":\"bob-pass\"}",
	    NULL, &r);
	assert_int_equal(r.status, 422);
	assert_string_equal(jstr(r.json, "error_code"), "user_already_exists");
	resp_free(&r);
	http("POST", "/auth/v1/signup", nokey, "{}", 2, &r);
	assert_int_equal(r.status, 401);
	assert_string_equal(
	    jstr(r.json, "message"), "No API key found in request");
	resp_free(&r);
	http("GET", "/auth/v1/user", badkey, NULL, 0, &r);
	assert_int_equal(r.status, 401);
	assert_string_equal(jstr(r.json, "message"), "Invalid API key");
	resp_free(&r);
	http("GET", "/auth/v1/user?apikey=" ANON, NULL, NULL, 0, &r);
	assert_int_equal(r.status, 401);
	assert_string_equal(jstr(r.json, "error_code"), "no_authorization");
	resp_free(&r);
}

static void
test_new_error_format(void **state)
{
	resp        r;
	char        h[HDR_MAX];
	const char *hdrs[] = { "apikey: " ANON,
		"X-Supabase-Api-Version: 2024-01-01",
		"Authorization: Bearer a.b.c", NULL };

	(void) state;
	http("GET", "/auth/v1/user", hdrs, NULL, 0, &r);
	assert_int_equal(r.status, 403);
	assert_string_equal(jstr(r.json, "code"), "bad_jwt");
	assert_non_null(jstr(r.json, "message"));
	assert_null(json_object_get(r.json, "msg"));
	assert_non_null(header(&r, "X-Supabase-Api-Version", h, sizeof(h)));
	assert_string_equal(h, "2024-01-01");
	assert_non_null(header(&r, "x-sb-error-code", h, sizeof(h)));
	assert_string_equal(h, "bad_jwt");
	resp_free(&r);
}

static char *
b64url(const char *s, size_t n)
{
	char     *out = NULL, *copy;
	size_t    len = 0;
	cjose_err err;

	assert_true(
	    cjose_base64url_encode((const uint8_t *) s, n, &out, &len, &err));
	copy = cm_xstrndup(out, len);
	cjose_get_dealloc()(out);
	return (copy);
}

static char *
b64url_decode(const char *s, size_t n)
{
	uint8_t  *out = NULL;
	size_t    len = 0;
	cjose_err err;
	char     *copy;

	assert_true(cjose_base64url_decode(s, n, &out, &len, &err));
	copy = cm_xstrndup((const char *) out, len);
	cjose_get_dealloc()(out);
	return (copy);
}

static void
test_jwks_and_bad_tokens(void **state)
{
	resp        s, r;
	char        h[HDR_MAX], tok[HDR_MAX];
	const char *at, *d1, *d2;
	json_t     *keys, *k, *hdr;
	char       *hjson, *payload, *evil, *none_hdr;

	(void) state;
	post_json("/auth/v1/signup",
	    "{\"email\":\"carol@example.com\","
	    "\"password\":\"carol-pass\"}",
	    NULL, &s);
	assert_int_equal(s.status, 200);
	at = jstr(s.json, "access_token");
	d1 = strchr(at, '.');
	d2 = strchr(d1 + 1, '.');

	// JWKS: no apikey needed, exactly our public key.
	http("GET", "/auth/v1/.well-known/jwks.json", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(header(&r, "Cache-Control", h, sizeof(h)));
	assert_string_equal(h, "public, max-age=600");
	keys = json_object_get(r.json, "keys");
	assert_int_equal(json_array_size(keys), 1);
	k = json_array_get(keys, 0);
	assert_null(json_object_get(k, "d"));
	assert_null(strstr(r.body.p, "\"d\""));
	assert_string_equal(jstr(k, "kty"), "EC");
	assert_string_equal(jstr(k, "crv"), "P-256");
	assert_string_equal(jstr(k, "alg"), "ES256");
	assert_string_equal(jstr(k, "use"), "sig");
	hjson = b64url_decode(at, (size_t) (d1 - at));
	hdr   = json_loads(hjson, 0, NULL);
	assert_string_equal(jstr(hdr, "kid"), jstr(k, "kid"));
	assert_string_equal(jstr(hdr, "alg"), "ES256");
	assert_string_equal(jstr(hdr, "typ"), "JWT");
	json_decref(hdr);
	free(hjson);
	resp_free(&r);

	// alg:none with the real payload and no signature.
	none_hdr = b64url("{\"alg\":\"none\",\"typ\":\"JWT\"}", 27);
	snprintf(tok, sizeof(tok), "%s.%.*s.", none_hdr, (int) (d2 - d1 - 1),
	    d1 + 1);
	get_user(tok, &r);
	assert_int_equal(r.status, 403);
	assert_string_equal(jstr(r.json, "error_code"), "bad_jwt");
	resp_free(&r);
	free(none_hdr);

	// Tampered payload (role changed), original header and signature.
	payload = b64url_decode(d1 + 1, (size_t) (d2 - d1 - 1));
	char *p = strstr(payload, "\"role\":\"authenticated\"");
	assert_non_null(p);
	memcpy(p, "\"role\":\"service_role\" ", 22);
	evil = b64url(payload, strlen(payload));
	snprintf(tok, sizeof(tok), "%.*s.%s%s", (int) (d1 - at), at, evil, d2);
	get_user(tok, &r);
	assert_int_equal(r.status, 403);
	assert_string_equal(jstr(r.json, "error_code"), "bad_jwt");
	assert_non_null(strstr(jstr(r.json, "msg"), "verification error"));
	resp_free(&r);
	free(evil);
	free(payload);
	// Sanity: the untouched token still works.
	get_user(at, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	resp_free(&s);
}

static void
test_body_limit_and_routes(void **state)
{
	resp        r;
	size_t      n      = 70 * 1024;
	char       *big    = cm_xmalloc(n);
	const char *hdrs[] = { "apikey: " ANON, NULL };

	(void) state;
	memset(big, 'a', n);
	http("POST", "/auth/v1/signup", hdrs, big, n, &r);
	assert_int_equal(r.status, 413);
	resp_free(&r);
	free(big);
	http("GET", "/auth/v1/nope", hdrs, NULL, 0, &r);
	assert_int_equal(r.status, 404);
	resp_free(&r);
	http("PUT", "/auth/v1/token", hdrs, "{}", 2, &r);
	assert_int_equal(r.status, 405);
	resp_free(&r);
	http("GET", "/auth/v1/health", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "name"), "threadgate-dev-idp");
	resp_free(&r);
}

static void
test_stats(void **state)
{
	resp        r;
	const char *svc[] = { "apikey: " SERVICE, NULL };
	json_int_t  before;

	(void) state;
	http("GET", "/auth/v1/_dev/stats", svc, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	before = json_integer_value(json_object_get(r.json, "user_requests"));
	resp_free(&r);
	get_user("x.y.z", &r);
	resp_free(&r);
	get_user("x.y.z", &r);
	resp_free(&r);
	http("GET", "/auth/v1/_dev/stats", svc, NULL, 0, &r);
	assert_int_equal(
	    json_integer_value(json_object_get(r.json, "user_requests")),
	    before + 2);
	resp_free(&r);
}

static void
test_startup_refusals(void **state)
{
	char        portstr[16], log2[PATH_MAX_], db2[PATH_MAX_];
	char       *log;
	const char *taken[]  = { bin, "--port", portstr, "--db", db2, NULL };
	const char *remote[] = { bin, "--host", "0.0.0.0", "--port", "0",
		"--db", db2, NULL };
	const char *help[]   = { bin, "--help", NULL };
	const char *bad[]    = { bin, "--port", "99999", NULL };

	(void) state;
	snprintf(portstr, sizeof(portstr), "%d", port);
	snprintf(db2, sizeof(db2), "%s/second.db", dir);
	snprintf(log2, sizeof(log2), "%s/second.log", dir);
	// The port is held by the running instance: exit 3, naming it.
	assert_int_equal(run_to_exit(taken, log2), 3);
	log = tg_read_file(log2);
	assert_non_null(log);
	assert_non_null(strstr(log, "DEV_IDP_PORT"));
	assert_non_null(strstr(log, portstr));
	free(log);
	// A non-loopback address without --allow-remote: refused (exit 2)
	// before anything is bound.
	remove(log2);
	assert_int_equal(run_to_exit(remote, log2), 2);
	log = tg_read_file(log2);
	assert_non_null(strstr(log, "allow-remote"));
	free(log);
	remove(log2);
	assert_int_equal(run_to_exit(help, log2), 0);
	log = tg_read_file(log2);
	assert_non_null(strstr(log, "DEV_IDP_SERVICE_KEY"));
	assert_non_null(strstr(log, "DEV_IDP_PORT_FILE"));
	free(log);
	assert_int_equal(run_to_exit(bad, log2), 2);
}

static void
test_restart_keeps_key(void **state)
{
	resp  s, r;
	char *kid_before;

	(void) state;
	post_json("/auth/v1/signup",
	    "{\"email\":\"dave@example.com\","
	    "\"password\":\"dave-pass\"}",
	    NULL, &s);
	assert_int_equal(s.status, 200);
	http("GET", "/auth/v1/.well-known/jwks.json", NULL, NULL, 0, &r);
	kid_before = cm_xstrdup(
	    jstr(json_array_get(json_object_get(r.json, "keys"), 0), "kid"));
	resp_free(&r);

	stop_idp();
	start_idp();

	get_user(jstr(s.json, "access_token"), &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(jstr(r.json, "email"), "dave@example.com");
	resp_free(&r);
	http("GET", "/auth/v1/.well-known/jwks.json", NULL, NULL, 0, &r);
	assert_string_equal(
	    jstr(json_array_get(json_object_get(r.json, "keys"), 0), "kid"),
	    kid_before);
	resp_free(&r);
	free(kid_before);
	resp_free(&s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_flow),
		cmocka_unit_test(test_failures),
		cmocka_unit_test(test_new_error_format),
		cmocka_unit_test(test_jwks_and_bad_tokens),
		cmocka_unit_test(test_body_limit_and_routes),
		cmocka_unit_test(test_stats),
		cmocka_unit_test(test_startup_refusals),
		cmocka_unit_test(test_restart_keeps_key),
	};

	return (cmocka_run_group_tests(tests, setup, teardown));
}
