// SPDX-License-Identifier: MIT
//
// Unit tests for routes.c, in-process against an in-memory store: the
// error body formats (old and 2024-01-01), the apikey gate, routing
// (404/405), signup validation, password and refresh grants (rotation,
// reuse), /user claim checks (GoTrue's codes and texts), logout scopes,
// user_not_found, and the /_dev/stats counters.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/util.h"
#include "common/xalloc.h"
#include "dev-idp/idp.h"

#define ANON    "anon-key-for-tests"
#define SERVICE "service-key-for-tests"
// Buffer for an Authorization header value.
#define AUTH_MAX 4096

static idp_ctx *ctx;

static int
setup(void **state)
{
	idp_config cfg;

	(void) state;
	memset(&cfg, 0, sizeof(cfg));
	cfg.db_path     = ":memory:";
	cfg.anon_key    = ANON;
	cfg.service_key = SERVICE;
	cfg.jwt_exp     = 3600;
	cfg.pbkdf2_iter = 1000; // fast; password_test covers the real count
	cfg.host        = "127.0.0.1";
	assert_int_equal(idp_ctx_open(&cfg, &ctx), CM_OK);
	assert_int_equal(idp_ctx_set_issuer(ctx, "127.0.0.1", 9999), CM_OK);
	assert_string_equal(ctx->issuer, "http://127.0.0.1:9999/auth/v1");
	return (0);
}

static int
teardown(void **state)
{
	(void) state;
	idp_ctx_close(ctx);
	ctx = NULL;
	return (0);
}

// A test request: everything optional.
typedef struct treq {
	const char *method;
	const char *path;
	const char *body;
	const char *apikey; // header; default ANON, "-" = none
	const char *apikey_query;
	const char *auth;
	const char *version;
	const char *grant;
	const char *scope;
} treq;

// call() runs one request; returns the parsed body (new; NULL if empty).
static json_t *
call(const treq *t, idp_response *res)
{
	idp_request req;
	json_t     *v = NULL;

	memset(&req, 0, sizeof(req));
	req.method        = t->method != NULL ? t->method : "GET";
	req.path          = t->path;
	req.apikey_header = t->apikey == NULL ? ANON
	    : strcmp(t->apikey, "-") == 0     ? NULL
	                                      : t->apikey;
	req.apikey_query  = t->apikey_query;
	req.authorization = t->auth;
	req.api_version   = t->version;
	req.grant_type    = t->grant;
	req.scope         = t->scope;
	req.body          = t->body;
	req.body_len      = t->body != NULL ? strlen(t->body) : 0;
	req.rid           = "test";
	idp_handle(ctx, &req, res);
	if (res->body != NULL) {
		v = json_loads(res->body, 0, NULL);
		assert_non_null(v);
	}
	return (v);
}

static const char *
str(json_t *v, const char *k)
{
	return (json_string_value(json_object_get(v, k)));
}

// expect_err() checks an old-format GoTrue error.
static void
expect_err(json_t *v, idp_response *res, int status, const char *code,
    const char *msg)
{
	assert_int_equal(res->status, status);
	assert_int_equal(
	    json_integer_value(json_object_get(v, "code")), status);
	assert_string_equal(str(v, "error_code"), code);
	if (msg != NULL) {
		assert_string_equal(str(v, "msg"), msg);
	}
	assert_string_equal(res->error_code, code);
}

// signup() creates a user and returns the session body (new).
static json_t *
signup(const char *email, const char *pw)
{
	char         body[512];
	idp_response res;
	json_t      *v;

	snprintf(body, sizeof(body), "{\"email\":\"%s\",\"password\":\"%s\"}",
	    email, pw);
	v = call(
	    &(treq) {
	        .method = "POST", .path = "/auth/v1/signup", .body = body },
	    &res);
	assert_int_equal(res.status, 200);
	idp_response_fini(&res);
	return (v);
}

static void
bearer(char out[AUTH_MAX], json_t *session)
{
	snprintf(out, AUTH_MAX, "Bearer %s", str(session, "access_token"));
}

static void
test_error_formats(void **state)
{
	idp_response res;
	json_t      *v;

	(void) state;
	memset(&res, 0, sizeof(res));
	idp_error(&res, 0, 403, "bad_jwt", "some \"text\"");
	v = json_loads(res.body, 0, NULL);
	assert_int_equal(json_object_size(v), 3);
	expect_err(v, &res, 403, "bad_jwt", "some \"text\"");
	json_decref(v);
	idp_response_fini(&res);

	memset(&res, 0, sizeof(res));
	idp_error(&res, 1, 403, "session_not_found", "gone");
	v = json_loads(res.body, 0, NULL);
	assert_int_equal(json_object_size(v), 2);
	assert_string_equal(str(v, "code"), "session_not_found");
	assert_string_equal(str(v, "message"), "gone");
	assert_string_equal(res.error_code, "session_not_found");
	assert_string_equal(res.content_type, "application/json");
	json_decref(v);
	idp_response_fini(&res);

	// Through a route: the version header switches the format and is
	// echoed; an older or malformed version keeps the old one.
	v = call(&(treq) { .path = "/auth/v1/user", .version = "2024-01-01" },
	    &res);
	assert_int_equal(res.status, 401);
	assert_string_equal(str(v, "code"), "no_authorization");
	assert_string_equal(
	    str(v, "message"), "This endpoint requires a valid Bearer token");
	assert_true(res.echo_api_version);
	json_decref(v);
	idp_response_fini(&res);
	v = call(&(treq) { .path = "/auth/v1/user", .version = "2023-05-01" },
	    &res);
	expect_err(v, &res, 401, "no_authorization", NULL);
	assert_false(res.echo_api_version);
	json_decref(v);
	idp_response_fini(&res);
	v = call(
	    &(treq) { .path = "/auth/v1/user", .version = "2024-1-1x" }, &res);
	expect_err(v, &res, 401, "no_authorization", NULL);
	json_decref(v);
	idp_response_fini(&res);
}

static void
test_apikey_gate(void **state)
{
	idp_response res;
	json_t      *v;

	(void) state;
	v = call(&(treq) { .path = "/auth/v1/user", .apikey = "-" }, &res);
	assert_int_equal(res.status, 401);
	assert_string_equal(str(v, "message"), "No API key found in request");
	assert_null(res.error_code);
	json_decref(v);
	idp_response_fini(&res);
	v = call(&(treq) { .path = "/auth/v1/user", .apikey = "nope" }, &res);
	assert_int_equal(res.status, 401);
	assert_string_equal(str(v, "message"), "Invalid API key");
	json_decref(v);
	idp_response_fini(&res);
	// Key in the query string; the service key works too.
	v = call(&(treq) { .path   = "/auth/v1/user",
	             .apikey       = "-",
	             .apikey_query = SERVICE },
	    &res);
	assert_int_equal(res.status, 401); // gets past the gate to the route
	assert_string_equal(str(v, "error_code"), "no_authorization");
	json_decref(v);
	idp_response_fini(&res);
	// Unknown paths under /auth/v1 are gated too (Kong route first).
	v = call(&(treq) { .path = "/auth/v1/nothing", .apikey = "-" }, &res);
	assert_int_equal(res.status, 401);
	json_decref(v);
	idp_response_fini(&res);
	// Open routes.
	v = call(&(treq) { .path = "/auth/v1/.well-known/jwks.json",
	             .apikey     = "-" },
	    &res);
	assert_int_equal(res.status, 200);
	assert_string_equal(res.cache_control, "public, max-age=600");
	json_t *k = json_array_get(json_object_get(v, "keys"), 0);
	assert_int_equal(json_array_size(json_object_get(v, "keys")), 1);
	assert_null(json_object_get(k, "d"));
	assert_string_equal(str(k, "kid"), idp_jwt_key_kid(ctx->key));
	json_decref(v);
	idp_response_fini(&res);
	v = call(&(treq) { .path = "/auth/v1/.well-known/openid-configuration",
	             .apikey     = "-" },
	    &res);
	assert_int_equal(res.status, 200);
	assert_string_equal(str(v, "issuer"), "http://127.0.0.1:9999/auth/v1");
	assert_string_equal(str(v, "jwks_uri"),
	    "http://127.0.0.1:9999/auth/v1/.well-known/jwks.json");
	json_decref(v);
	idp_response_fini(&res);
	v = call(&(treq) { .path = "/auth/v1/health", .apikey = "-" }, &res);
	assert_int_equal(res.status, 200);
	assert_string_equal(str(v, "name"), "threadgate-dev-idp");
	assert_non_null(str(v, "version"));
	assert_non_null(str(v, "description"));
	json_decref(v);
	idp_response_fini(&res);
}

static void
test_routing(void **state)
{
	idp_response res;
	json_t      *v;

	(void) state;
	v = call(&(treq) { .path = "/rest/v1/x" }, &res);
	assert_int_equal(res.status, 404);
	json_decref(v);
	idp_response_fini(&res);
	v = call(&(treq) { .path = "/auth/v1/nothing" }, &res);
	expect_err(v, &res, 404, "not_found", NULL);
	json_decref(v);
	idp_response_fini(&res);
	v = call(
	    &(treq) { .method = "DELETE", .path = "/auth/v1/user" }, &res);
	expect_err(v, &res, 405, "method_not_allowed", NULL);
	assert_string_equal(res.allow, "GET");
	json_decref(v);
	idp_response_fini(&res);
	// CORS preflight: no key needed, empty 204.
	v = call(
	    &(treq) {
	        .method = "OPTIONS", .path = "/auth/v1/token", .apikey = "-" },
	    &res);
	assert_int_equal(res.status, 204);
	assert_null(v);
	idp_response_fini(&res);
	v = call(&(treq) { .method = "GET", .path = "/auth/v1/signup" }, &res);
	assert_int_equal(res.status, 405);
	assert_string_equal(res.allow, "POST");
	json_decref(v);
	idp_response_fini(&res);
}

static void
test_flow(void **state)
{
	idp_response res;
	json_t      *s, *v, *u;
	char         auth[AUTH_MAX];
	int64_t      now = cm_now_us() / 1000000;

	(void) state;
	v = call(&(treq) { .method = "POST",
	             .path         = "/auth/v1/signup",
	             .body = "{\"email\":\"Flow@Example.COM\",\"password\":"
	                     "\"secret1\",\"data\":{\"name\":\"Flo\"}}" },
	    &res);
	s = v;
	assert_int_equal(res.status, 200);
	assert_string_equal(str(s, "token_type"), "bearer");
	assert_int_equal(
	    json_integer_value(json_object_get(s, "expires_in")), 3600);
	assert_true(json_integer_value(json_object_get(s, "expires_at")) >=
	    now + 3599);
	assert_true(strlen(str(s, "refresh_token")) >= 12);
	u = json_object_get(s, "user");
	assert_string_equal(str(u, "email"), "flow@example.com");
	assert_string_equal(str(u, "aud"), "authenticated");
	assert_string_equal(str(u, "role"), "authenticated");
	assert_string_equal(str(u, "phone"), "");
	assert_non_null(str(u, "email_confirmed_at"));
	assert_non_null(str(u, "confirmed_at"));
	assert_non_null(str(u, "last_sign_in_at"));
	assert_non_null(str(u, "created_at"));
	assert_non_null(str(u, "updated_at"));
	assert_true(json_is_false(json_object_get(u, "is_anonymous")));
	assert_string_equal(
	    str(json_object_get(u, "app_metadata"), "provider"), "email");
	assert_string_equal(
	    str(json_object_get(u, "user_metadata"), "name"), "Flo");
	assert_string_equal(
	    str(json_array_get(json_object_get(u, "identities"), 0),
	        "provider"),
	    "email");
	assert_string_equal(res.user_id, str(u, "id"));
	assert_true(strlen(res.session_id) == CM_UUID_LEN);
	idp_response_fini(&res);

	bearer(auth, s);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth }, &res);
	assert_int_equal(res.status, 200);
	assert_string_equal(str(v, "id"), str(u, "id"));
	assert_string_equal(str(v, "email"), "flow@example.com");
	json_decref(v);
	idp_response_fini(&res);
	// Scheme is case-insensitive.
	auth[0] = 'b';
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth }, &res);
	assert_int_equal(res.status, 200);
	json_decref(v);
	idp_response_fini(&res);

	v = call(
	    &(treq) {
	        .method = "POST", .path = "/auth/v1/logout", .auth = auth },
	    &res);
	assert_int_equal(res.status, 204);
	assert_null(v);
	assert_null(res.body);
	idp_response_fini(&res);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth }, &res);
	expect_err(v, &res, 403, "session_not_found",
	    "Session from session_id claim in JWT does not exist");
	json_decref(v);
	idp_response_fini(&res);
	v = call(&(treq) { .path = "/auth/v1/user",
	             .auth       = auth,
	             .version    = "2024-01-01" },
	    &res);
	assert_int_equal(res.status, 403);
	assert_string_equal(str(v, "code"), "session_not_found");
	json_decref(v);
	idp_response_fini(&res);
	json_decref(s);
}

static void
test_signup_validation(void **state)
{
	idp_response res;
	json_t      *v, *s;
	char         body[IDP_METADATA_MAX + 256];
	size_t       n;

	(void) state;
	s = signup("dup@example.com", "secret1");
	json_decref(s);
	struct {
		const char *body;
		int         status;
		const char *code;
	} cases[] = {
		{ "{\"email\":\"DUP@example.com\",\"password\":\"secret1\"}",
		    422, "user_already_exists" },
		{ "{\"email\":\"bad\",\"password\":\"secret1\"}", 400,
		    "validation_failed" },
		{ "{\"email\":\"a b@x.io\",\"password\":\"secret1\"}", 400,
		    "validation_failed" },
		{ "{\"email\":\"a@x\",\"password\":\"secret1\"}", 400,
		    "validation_failed" },
		{ "{\"email\":\"a@@x.io\",\"password\":\"secret1\"}", 400,
		    "validation_failed" },
		{ "{\"password\":\"secret1\"}", 400, "validation_failed" },
		{ "{\"email\":7,\"password\":\"secret1\"}", 400,
		    "validation_failed" },
		{ "{\"email\":\"new@x.io\"}", 400, "validation_failed" },
		{ "{\"email\":\"new@x.io\",\"password\":\"\"}", 400,
		    "validation_failed" },
		{ "{\"email\":\"new@x.io\",\"password\":\"12345\"}", 422,
		    "weak_password" },
		{ "{\"email\":\"new@x.io\",\"password\":\"secret1\",\"data\":"
		  "3}",
		    400, "bad_json" },
		{ "not json", 400, "bad_json" },
		{ "[1]", 400, "bad_json" },
		{ "", 400, "bad_json" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		v = call(&(treq) { .method = "POST",
		             .path         = "/auth/v1/signup",
		             .body         = cases[i].body },
		    &res);
		expect_err(v, &res, cases[i].status, cases[i].code, NULL);
		if (cases[i].status == 422 &&
		    strcmp(cases[i].code, "weak_password") == 0) {
			json_t *r = json_object_get(
			    json_object_get(v, "weak_password"), "reasons");
			assert_string_equal(
			    json_string_value(json_array_get(r, 0)), "length");
		}
		json_decref(v);
		idp_response_fini(&res);
	}
	// Password over 72 characters.
	n = (size_t) snprintf(
	    body, sizeof(body), "{\"email\":\"long@x.io\",\"password\":\"");
	memset(body + n, 'p', 73);
	snprintf(body + n + 73, sizeof(body) - n - 73, "\"}");
	v = call(
	    &(treq) {
	        .method = "POST", .path = "/auth/v1/signup", .body = body },
	    &res);
	expect_err(v, &res, 400, "validation_failed", NULL);
	json_decref(v);
	idp_response_fini(&res);
	// user_metadata over 16 KiB.
	n = (size_t) snprintf(body, sizeof(body),
	    "{\"email\":\"meta@x.io\","
	    "\"password\":\"secret1\",\"data\":{\"k\":\"");
	memset(body + n, 'm', IDP_METADATA_MAX);
	snprintf(body + n + IDP_METADATA_MAX,
	    sizeof(body) - n - IDP_METADATA_MAX, "\"}}");
	v = call(
	    &(treq) {
	        .method = "POST", .path = "/auth/v1/signup", .body = body },
	    &res);
	expect_err(v, &res, 400, "validation_failed", NULL);
	json_decref(v);
	idp_response_fini(&res);
}

static void
test_grants(void **state)
{
	idp_response res;
	json_t      *s, *v, *r1;
	char         body[256], auth[AUTH_MAX];
	char         rt0[128];

	(void) state;
	s = signup("grant@example.com", "secret1");
	snprintf(rt0, sizeof(rt0), "%s", str(s, "refresh_token"));

	v = call(&(treq) { .method = "POST",
	             .path         = "/auth/v1/token",
	             .grant        = "password",
	             .body         = "{\"email\":\"GRANT@example."
	                             "com\",\"password\":\"secret1\"}" },
	    &res);
	assert_int_equal(res.status, 200);
	assert_non_null(str(v, "access_token"));
	json_decref(v);
	idp_response_fini(&res);
	const char *bad[] = {
		"{\"email\":\"grant@example.com\",\"password\":\"wrong1\"}",
		"{\"email\":\"nobody@example.com\",\"password\":\"secret1\"}",
		"{\"email\":\"grant@example.com\"}",
		"{}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = call(&(treq) { .method = "POST",
		             .path         = "/auth/v1/token",
		             .grant        = "password",
		             .body         = bad[i] },
		    &res);
		expect_err(v, &res, 400, "invalid_credentials",
		    "Invalid login credentials");
		json_decref(v);
		idp_response_fini(&res);
	}
	v = call(&(treq) { .method = "POST",
	             .path         = "/auth/v1/token",
	             .grant        = "password",
	             .body         = "email=x" },
	    &res);
	expect_err(v, &res, 400, "bad_json", NULL);
	json_decref(v);
	idp_response_fini(&res);
	v = call(&(treq) { .method = "POST",
	             .path         = "/auth/v1/token",
	             .grant        = "client_credentials",
	             .body         = "{}" },
	    &res);
	expect_err(
	    v, &res, 400, "invalid_credentials", "unsupported_grant_type");
	json_decref(v);
	idp_response_fini(&res);
	v = call(
	    &(treq) {
	        .method = "POST", .path = "/auth/v1/token", .body = "{}" },
	    &res);
	expect_err(
	    v, &res, 400, "invalid_credentials", "unsupported_grant_type");
	json_decref(v);
	idp_response_fini(&res);

	// Refresh: rotates; same session; the old token is then "used".
	snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", rt0);
	r1 = call(&(treq) { .method = "POST",
	              .path         = "/auth/v1/token",
	              .grant        = "refresh_token",
	              .body         = body },
	    &res);
	assert_int_equal(res.status, 200);
	assert_string_not_equal(str(r1, "refresh_token"), rt0);
	assert_string_equal(
	    str(json_object_get(r1, "user"), "email"), "grant@example.com");
	idp_response_fini(&res);
	bearer(auth, r1);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth }, &res);
	assert_int_equal(res.status, 200);
	json_decref(v);
	idp_response_fini(&res);
	v = call(&(treq) { .method = "POST",
	             .path         = "/auth/v1/token",
	             .grant        = "refresh_token",
	             .body         = body },
	    &res);
	expect_err(v, &res, 400, "refresh_token_already_used",
	    "Invalid Refresh Token: Already Used");
	json_decref(v);
	idp_response_fini(&res);
	// Reuse revoked the session: its access token no longer works.
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth }, &res);
	expect_err(v, &res, 403, "session_not_found", NULL);
	json_decref(v);
	idp_response_fini(&res);
	v = call(&(treq) { .method = "POST",
	             .path         = "/auth/v1/token",
	             .grant        = "refresh_token",
	             .body = "{\"refresh_token\":\"abcdefghijklmnop\"}" },
	    &res);
	expect_err(v, &res, 400, "refresh_token_not_found",
	    "Invalid Refresh Token: Refresh Token Not Found");
	json_decref(v);
	idp_response_fini(&res);
	v = call(&(treq) { .method = "POST",
	             .path         = "/auth/v1/token",
	             .grant        = "refresh_token",
	             .body         = "{\"refresh_token\":\"short\"}" },
	    &res);
	expect_err(
	    v, &res, 400, "validation_failed", "Refresh token is not valid");
	json_decref(v);
	idp_response_fini(&res);
	json_decref(r1);
	json_decref(s);
}

static void
test_logout_scopes(void **state)
{
	idp_response res;
	json_t      *a, *b, *c, *v;
	char         auth_a[AUTH_MAX], auth_b[AUTH_MAX], auth_c[AUTH_MAX];
	const char  *login = "{\"email\":\"scope@example.com\","
	                     "\"password\":\"secret1\"}";

	(void) state;
	a = signup("scope@example.com", "secret1");
	b = call(&(treq) { .method = "POST",
	             .path         = "/auth/v1/token",
	             .grant        = "password",
	             .body         = login },
	    &res);
	idp_response_fini(&res);
	c = call(&(treq) { .method = "POST",
	             .path         = "/auth/v1/token",
	             .grant        = "password",
	             .body         = login },
	    &res);
	idp_response_fini(&res);
	bearer(auth_a, a);
	bearer(auth_b, b);
	bearer(auth_c, c);
	v = call(&(treq) { .method = "POST",
	             .path         = "/auth/v1/logout",
	             .auth         = auth_a,
	             .scope        = "bogus" },
	    &res);
	expect_err(v, &res, 400, "validation_failed", NULL);
	json_decref(v);
	idp_response_fini(&res);
	// local: only a's session ends.
	v = call(&(treq) { .method = "POST",
	             .path         = "/auth/v1/logout",
	             .auth         = auth_a,
	             .scope        = "local" },
	    &res);
	assert_int_equal(res.status, 204);
	idp_response_fini(&res);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth_a }, &res);
	assert_int_equal(res.status, 403);
	json_decref(v);
	idp_response_fini(&res);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth_b }, &res);
	assert_int_equal(res.status, 200);
	json_decref(v);
	idp_response_fini(&res);
	// others from b: c ends, b stays.
	v = call(&(treq) { .method = "POST",
	             .path         = "/auth/v1/logout",
	             .auth         = auth_b,
	             .scope        = "others" },
	    &res);
	assert_int_equal(res.status, 204);
	idp_response_fini(&res);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth_c }, &res);
	assert_int_equal(res.status, 403);
	json_decref(v);
	idp_response_fini(&res);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth_b }, &res);
	assert_int_equal(res.status, 200);
	json_decref(v);
	idp_response_fini(&res);
	// Logging out with a dead session: 403 like GoTrue.
	v = call(
	    &(treq) {
	        .method = "POST", .path = "/auth/v1/logout", .auth = auth_c },
	    &res);
	expect_err(v, &res, 403, "session_not_found", NULL);
	json_decref(v);
	idp_response_fini(&res);
	json_decref(a);
	json_decref(b);
	json_decref(c);
}

// token_with() signs claims (stolen) with the IdP's own key.
static void
token_with(json_t *claims, char out[AUTH_MAX])
{
	char *tok = NULL;

	assert_int_equal(idp_jwt_sign(ctx->key, claims, &tok), CM_OK);
	json_decref(claims);
	snprintf(out, AUTH_MAX, "Bearer %s", tok);
	free(tok);
}

static void
test_claim_checks(void **state)
{
	idp_response res;
	json_t      *s, *v;
	char         auth[AUTH_MAX];
	const char  *uid;
	json_int_t   exp = (json_int_t) (cm_now_us() / 1000000 + 600);

	(void) state;
	s   = signup("claims@example.com", "secret1");
	uid = str(json_object_get(s, "user"), "id");

	const char *noauth[] = { NULL, "", "Basic abc", "Bearer", "Bearer ",
		"Bearer a b", "Bearerx abc" };
	for (size_t i = 0; i < sizeof(noauth) / sizeof(noauth[0]); i++) {
		v = call(
		    &(treq) { .path = "/auth/v1/user", .auth = noauth[i] },
		    &res);
		expect_err(v, &res, 401, "no_authorization",
		    "This endpoint requires a valid Bearer token");
		json_decref(v);
		idp_response_fini(&res);
	}
	v = call(&(treq) { .path = "/auth/v1/user", .auth = "Bearer garbage" },
	    &res);
	expect_err(v, &res, 403, "bad_jwt",
	    "invalid JWT: unable to parse or "
	    "verify signature, token is malformed: token contains an invalid "
	    "number of segments");
	json_decref(v);
	idp_response_fini(&res);

	token_with(
	    json_pack("{s:s, s:I}", "aud", "authenticated", "exp", exp), auth);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth }, &res);
	expect_err(
	    v, &res, 403, "bad_jwt", "invalid claim: missing sub claim");
	json_decref(v);
	idp_response_fini(&res);

	token_with(json_pack("{s:s, s:s, s:I}", "sub", "not-a-uuid", "aud",
	               "authenticated", "exp", exp),
	    auth);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth }, &res);
	expect_err(v, &res, 400, "bad_jwt",
	    "invalid claim: sub claim must be a UUID");
	json_decref(v);
	idp_response_fini(&res);

	token_with(json_pack("{s:s, s:s, s:I}", "sub",
	               "00000000-0000-4000-8000-000000000000", "aud",
	               "authenticated", "exp", exp),
	    auth);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth }, &res);
	expect_err(v, &res, 403, "user_not_found",
	    "User from sub claim in JWT does not exist");
	json_decref(v);
	idp_response_fini(&res);

	token_with(json_pack("{s:s, s:s, s:I, s:s}", "sub", uid, "aud",
	               "authenticated", "exp", exp, "session_id", "nope"),
	    auth);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth }, &res);
	expect_err(v, &res, 403, "bad_jwt",
	    "invalid claim: session_id claim must be a UUID");
	json_decref(v);
	idp_response_fini(&res);

	token_with(json_pack("{s:s, s:s, s:I}", "sub", uid, "aud", "other",
	               "exp", exp),
	    auth);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth }, &res);
	expect_err(v, &res, 400, "validation_failed",
	    "Token audience doesn't match request audience");
	json_decref(v);
	idp_response_fini(&res);

	token_with(json_pack("{s:s, s:[s], s:I}", "sub", uid, "aud",
	               "authenticated", "exp", exp),
	    auth);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth }, &res);
	assert_int_equal(res.status, 200); // no session_id: user only
	json_decref(v);
	idp_response_fini(&res);

	token_with(json_pack("{s:s, s:s, s:I}", "sub", uid, "aud",
	               "authenticated", "exp", (json_int_t) (exp - 1200)),
	    auth);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth }, &res);
	expect_err(v, &res, 403, "bad_jwt",
	    "invalid JWT: unable to parse or "
	    "verify signature, token has invalid claims: token is expired");
	json_decref(v);
	idp_response_fini(&res);

	// The user disappears: user_not_found with a real session token.
	bearer(auth, s);
	assert_int_equal(idp_store_user_delete(ctx->store, uid), CM_OK);
	v = call(&(treq) { .path = "/auth/v1/user", .auth = auth }, &res);
	expect_err(v, &res, 403, "user_not_found", NULL);
	json_decref(v);
	idp_response_fini(&res);
	assert_int_equal(idp_store_user_delete(ctx->store, uid), CM_ENOENT);
	json_decref(s);
}

static void
test_stats(void **state)
{
	idp_response res;
	json_t      *v;
	json_int_t   u0, t0, s0;

	(void) state;
	v = call(&(treq) { .path = "/auth/v1/_dev/stats", .apikey = SERVICE },
	    &res);
	assert_int_equal(res.status, 200);
	u0 = json_integer_value(json_object_get(v, "user_requests"));
	t0 = json_integer_value(json_object_get(v, "token_requests"));
	s0 = json_integer_value(json_object_get(v, "signup_requests"));
	json_decref(v);
	idp_response_fini(&res);
	for (int i = 0; i < 3; i++) {
		v = call(&(treq) { .path = "/auth/v1/user" }, &res);
		json_decref(v);
		idp_response_fini(&res);
	}
	v = call(
	    &(treq) {
	        .method = "POST", .path = "/auth/v1/token", .body = "{}" },
	    &res);
	json_decref(v);
	idp_response_fini(&res);
	v = call(&(treq) { .path = "/auth/v1/_dev/stats", .apikey = SERVICE },
	    &res);
	assert_int_equal(
	    json_integer_value(json_object_get(v, "user_requests")), u0 + 3);
	assert_int_equal(
	    json_integer_value(json_object_get(v, "token_requests")), t0 + 1);
	assert_int_equal(
	    json_integer_value(json_object_get(v, "signup_requests")), s0);
	json_decref(v);
	idp_response_fini(&res);
	// The anon key may not read them.
	v = call(&(treq) { .path = "/auth/v1/_dev/stats" }, &res);
	expect_err(v, &res, 403, "not_admin", NULL);
	json_decref(v);
	idp_response_fini(&res);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_formats),
		cmocka_unit_test(test_apikey_gate),
		cmocka_unit_test(test_routing),
		cmocka_unit_test(test_flow),
		cmocka_unit_test(test_signup_validation),
		cmocka_unit_test(test_grants),
		cmocka_unit_test(test_logout_scopes),
		cmocka_unit_test(test_claim_checks),
		cmocka_unit_test(test_stats),
	};

	return (cmocka_run_group_tests(tests, setup, teardown));
}
