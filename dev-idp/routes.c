// SPDX-License-Identifier: MIT
//
// The dev IdP's endpoints, all under /auth/v1, independent of the HTTP
// library: http.c hands in an idp_request and sends back the idp_response
// filled here. Shapes, status codes and error bodies follow Supabase Auth
// (GoTrue) as described in shared/reference/identity-providers.md §1-§3:
//   POST /signup, POST /token?grant_type=password|refresh_token,
//   GET /user, POST /logout, GET /.well-known/jwks.json,
//   GET /.well-known/openid-configuration, GET /health, and the dev-only
//   GET /_dev/stats (service key) that counts requests for tests.
// An apikey gate in front (like Supabase's Kong key-auth) lets through
// only the anon or service key, except on jwks, discovery and health.
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "dev-idp/idp.h"

// Prefix of every route (Kong strips it before GoTrue in Supabase).
#define PREFIX "/auth/v1"
// The API version that switches errors to the new body format.
#define API_VERSION_2024 "2024-01-01"
// Length of "YYYY-MM-DD".
#define API_VERSION_LEN 10
// Cache-Control of the JWKS and discovery documents (GoTrue's value).
#define JWKS_CACHE "public, max-age=600"
// Longest allowed local part and domain of an e-mail address (RFC 5321).
#define EMAIL_LOCAL_MAX  64
#define EMAIL_DOMAIN_MAX 255
// GoTrue's password length limit, in characters.
#define PASSWORD_MAX_CHARS 72
// Shortest refresh token accepted (GoTrue's v1 tokens are 12 chars).
#define REFRESH_TOKEN_MIN 12

// ---------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------

void
idp_response_fini(idp_response *res)
{
	if (res == NULL) {
		return;
	}
	free(res->body);
	res->body = NULL;
}

// set_json() makes v (stolen) the body.
static void
set_json(idp_response *res, int status, json_t *v)
{
	free(res->body);
	res->status       = status;
	res->body         = cm_json_dump(v);
	res->content_type = "application/json";
	json_decref(v);
}

void
idp_error(idp_response *res, int new_format, int status,
    const char *error_code, const char *msg)
{
	json_t *v;

	if (new_format) {
		v = json_pack(
		    "{s:s, s:s}", "code", error_code, "message", msg);
	} else {
		v = json_pack("{s:i, s:s, s:s}", "code", status, "error_code",
		    error_code, "msg", msg);
	}
	CM_ASSERT(v != NULL); // fails only on invalid UTF-8 in msg
	set_json(res, status, v);
	res->error_code = error_code;
}

// gateway_error() is a Kong-style answer ({"message": ...}, no code).
static void
gateway_error(idp_response *res, int status, const char *msg)
{
	set_json(res, status, json_pack("{s:s}", "message", msg));
}

// ---------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------

// A request being handled: shortcuts shared by the endpoint functions.
typedef struct call {
	idp_ctx           *ctx;
	const idp_request *req;
	idp_response      *res;
	int                newf; // new error format requested
	int64_t            now_us;
} call;

static void
fail(call *c, int status, const char *code, const char *msg)
{
	idp_error(c->res, c->newf, status, code, msg);
}

// key_eq() compares a presented key with a configured one in time that
// does not depend on where they differ.
static int
key_eq(const char *given, const char *want)
{
	size_t n = strlen(want);

	if (strnlen(given, IDP_APIKEY_MAX + 1) != n) {
		return (0);
	}
	return (CRYPTO_memcmp(given, want, n) == 0);
}

// api_version_new() is 1 for "YYYY-MM-DD" at or after 2024-01-01.
static int
api_version_new(const char *v)
{
	int i;

	if (v == NULL || strlen(v) != API_VERSION_LEN) {
		return (0);
	}
	for (i = 0; i < API_VERSION_LEN; i++) {
		if (i == 4 || i == 7) {
			if (v[i] != '-') {
				return (0);
			}
		} else if (v[i] < '0' || v[i] > '9') {
			return (0);
		}
	}
	return (strcmp(v, API_VERSION_2024) >= 0);
}

static void
sha256_hex(const char *s, size_t len, char out[2 * SHA256_DIGEST_LENGTH + 1])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *) s, len, md);
	cm_hex(md, sizeof(md), out);
}

// new_refresh_token() makes a random token and its storage hash.
static void
new_refresh_token(char tok[IDP_REFRESH_TOKEN_LEN + 1],
    char               hash[2 * SHA256_DIGEST_LENGTH + 1])
{
	unsigned char raw[IDP_REFRESH_TOKEN_LEN / 2];

	cm_random_bytes(raw, sizeof(raw));
	cm_hex(raw, sizeof(raw), tok);
	sha256_hex(tok, IDP_REFRESH_TOKEN_LEN, hash);
}

// parse_body() parses the request body as a JSON object, answering 400
// bad_json (GoTrue's text) when it is not one.
static cm_err
parse_body(call *c, json_t **out)
{
	char    detail[128];
	char    msg[IDP_MSG_MAX];
	json_t *v = NULL;
	cm_err  rv;

	detail[0] = '\0';
	rv        = cm_json_parse(c->req->body == NULL ? "" : c->req->body,
	    c->req->body_len, IDP_BODY_MAX, &v, detail, sizeof(detail));
	if (rv == CM_OK && !json_is_object(v)) {
		snprintf(detail, sizeof(detail), "expected a JSON object");
		rv = CM_EINVAL;
	}
	if (rv != CM_OK) {
		json_decref(v);
		snprintf(msg, sizeof(msg),
		    "Could not parse request body as JSON: %s", detail);
		fail(c, 400, "bad_json", msg);
		return (rv);
	}
	*out = v;
	return (CM_OK);
}

// email_normalize() checks an address and writes it lower-cased. Returns
// CM_OK, CM_ETOOBIG (too long) or CM_EINVAL (not an address).
static cm_err
email_normalize(const char *in, size_t len, char out[IDP_EMAIL_MAX + 1])
{
	const char *at = NULL;
	size_t      i, local, domain;

	if (len > IDP_EMAIL_MAX) {
		return (CM_ETOOBIG);
	}
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char) in[i];
		if (ch <= ' ' || ch == 0x7f || strchr("\"(),:;<>[\\]", ch)) {
			return (CM_EINVAL);
		}
		if (ch == '@') {
			if (at != NULL) {
				return (CM_EINVAL);
			}
			at = in + i;
		}
	}
	if (at == NULL) {
		return (CM_EINVAL);
	}
	local  = (size_t) (at - in);
	domain = len - local - 1;
	if (local == 0 || local > EMAIL_LOCAL_MAX || domain == 0 ||
	    domain > EMAIL_DOMAIN_MAX || memchr(at + 1, '.', domain) == NULL ||
	    at[1] == '.' || at[1] == '-' || in[len - 1] == '.' ||
	    in[len - 1] == '-') {
		return (CM_EINVAL);
	}
	for (i = 0; i + 1 < domain; i++) {
		if (at[1 + i] == '.' && at[2 + i] == '.') {
			return (CM_EINVAL);
		}
	}
	for (i = 0; i < len; i++) {
		char ch = in[i];
		out[i] =
		    (ch >= 'A' && ch <= 'Z') ? (char) (ch - 'A' + 'a') : ch;
	}
	out[len] = '\0';
	return (CM_OK);
}

// utf8_chars() counts code points of valid UTF-8 (jansson guarantees it).
static size_t
utf8_chars(const char *s, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++) {
		if (((unsigned char) s[i] & 0xC0) != 0x80) {
			n++;
		}
	}
	return (n);
}

static json_t *
iso_time(int64_t us)
{
	char buf[CM_ISO8601_SIZE];

	return (json_string(cm_time_iso8601(us, buf)));
}

static json_t *
app_metadata(void)
{
	return (json_pack(
	    "{s:s, s:[s]}", "provider", "email", "providers", "email"));
}

// metadata_of() parses a stored user_metadata (always an object).
static json_t *
metadata_of(const idp_user *u)
{
	json_t *v = NULL;

	if (cm_json_parse(u->user_metadata, strlen(u->user_metadata),
	        IDP_METADATA_MAX, &v, NULL, 0) != CM_OK ||
	    !json_is_object(v)) {
		json_decref(v);
		v = json_object();
	}
	return (v);
}

// user_json() is GoTrue's user object (§1.5).
static json_t *
user_json(const idp_user *u)
{
	json_t *v, *identity, *idata;

	idata    = json_pack("{s:s, s:s, s:b, s:b}", "email", u->email, "sub",
	       u->id, "email_verified", 1, "phone_verified", 0);
	identity = json_pack("{s:s, s:s, s:s, s:o, s:s, s:o, s:o, s:o, s:s}",
	    "identity_id", u->identity_id, "id", u->id, "user_id", u->id,
	    "identity_data", idata, "provider", "email", "last_sign_in_at",
	    iso_time(u->created_at), "created_at", iso_time(u->created_at),
	    "updated_at", iso_time(u->created_at), "email", u->email);
	v = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o}", "id", u->id,
	    "aud", IDP_AUD, "role", IDP_ROLE, "email", u->email, "phone", "",
	    "email_confirmed_at", iso_time(u->created_at), "confirmed_at",
	    iso_time(u->created_at));
	CM_ASSERT(identity != NULL && v != NULL);
	if (u->last_sign_in_at != 0) {
		json_object_set_new(
		    v, "last_sign_in_at", iso_time(u->last_sign_in_at));
	}
	json_object_set_new(v, "app_metadata", app_metadata());
	json_object_set_new(v, "user_metadata", metadata_of(u));
	json_object_set_new(v, "identities", json_pack("[o]", identity));
	json_object_set_new(v, "created_at", iso_time(u->created_at));
	json_object_set_new(v, "updated_at", iso_time(u->updated_at));
	json_object_set_new(v, "is_anonymous", json_false());
	return (v);
}

// send_session() signs an access token for (u, sess) and answers 200 with
// GoTrue's AccessTokenResponse (§2.1).
static void
send_session(call *c, const idp_user *u, const idp_session *sess,
    const char *refresh_token)
{
	json_t *claims, *body;
	char   *token = NULL;
	int64_t iat   = c->now_us / 1000000;
	int64_t exp   = iat + c->ctx->cfg.jwt_exp;

	claims = json_pack("{s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:o, s:o, "
	                   "s:s, s:s, s:[{s:s, s:I}], s:s, s:b}",
	    "aud", IDP_AUD, "exp", (json_int_t) exp, "iat", (json_int_t) iat,
	    "iss", c->ctx->issuer, "sub", u->id, "email", u->email, "phone",
	    "", "app_metadata", app_metadata(), "user_metadata",
	    metadata_of(u), "role", IDP_ROLE, "aal", "aal1", "amr", "method",
	    "password", "timestamp", (json_int_t) (sess->created_at / 1000000),
	    "session_id", sess->id, "is_anonymous", 0);
	CM_ASSERT(claims != NULL);
	if (idp_jwt_sign(c->ctx->key, claims, &token) != CM_OK) {
		json_decref(claims);
		fail(c, 500, "unexpected_failure", "Could not sign the token");
		return;
	}
	json_decref(claims);
	body = json_pack("{s:s, s:s, s:I, s:I, s:s, s:o}", "access_token",
	    token, "token_type", "bearer", "expires_in",
	    (json_int_t) (exp - iat), "expires_at", (json_int_t) exp,
	    "refresh_token", refresh_token, "user", user_json(u));
	free(token);
	CM_ASSERT(body != NULL);
	set_json(c->res, 200, body);
	snprintf(c->res->user_id, sizeof(c->res->user_id), "%s", u->id);
	snprintf(
	    c->res->session_id, sizeof(c->res->session_id), "%s", sess->id);
}

// authenticate() checks the Bearer token the way GoTrue's
// requireAuthentication does (§1.2) and loads user and session. On
// failure it has answered and returns non-OK.
static cm_err
authenticate(call *c, idp_user *user, idp_session *sess)
{
	const char *h = c->req->authorization;
	const char *tok, *sub, *sid, *aud;
	json_t     *claims = NULL, *audv;
	char        msg[IDP_MSG_MAX];
	char        uid[CM_UUID_LEN + 1];
	idp_user    u;
	idp_session s;
	size_t      toklen, i;
	cm_err      rv;

	memset(&u, 0, sizeof(u));
	memset(&s, 0, sizeof(s));
	// (?i)^bearer (\S+$)
	if (h == NULL || strncasecmp(h, "bearer ", 7) != 0 || h[7] == '\0') {
		goto noauth;
	}
	tok    = h + 7;
	toklen = strlen(tok);
	for (i = 0; i < toklen; i++) {
		if (tok[i] == ' ' || tok[i] == '\t' || tok[i] == '\r' ||
		    tok[i] == '\n' || tok[i] == '\v' || tok[i] == '\f') {
			goto noauth;
		}
	}
	rv = idp_jwt_verify(c->ctx->key, tok, toklen, c->now_us / 1000000,
	    &claims, msg, sizeof(msg));
	if (rv != CM_OK) {
		fail(c, 403, "bad_jwt", msg);
		goto out;
	}
	sub = json_string_value(json_object_get(claims, "sub"));
	if (sub == NULL || sub[0] == '\0') {
		fail(c, 403, "bad_jwt", "invalid claim: missing sub claim");
		rv = CM_EAUTH;
		goto out;
	}
	rv = cm_uuid_parse(sub, strlen(sub), uid);
	if (rv != CM_OK) {
		fail(c, 400, "bad_jwt",
		    "invalid claim: sub claim must be a UUID");
		goto out;
	}
	rv = idp_store_user_by_id(c->ctx->store, uid, &u);
	if (rv == CM_ENOENT) {
		fail(c, 403, "user_not_found",
		    "User from sub claim in JWT does not exist");
		goto out;
	}
	if (rv != CM_OK) {
		fail(c, 500, "unexpected_failure", "Database error");
		goto out;
	}
	sid = json_string_value(json_object_get(claims, "session_id"));
	if (sid != NULL && sid[0] != '\0' &&
	    strcmp(sid, "00000000-0000-0000-0000-000000000000") != 0) {
		char sidbuf[CM_UUID_LEN + 1];
		rv = cm_uuid_parse(sid, strlen(sid), sidbuf);
		if (rv != CM_OK) {
			fail(c, 403, "bad_jwt",
			    "invalid claim: session_id claim must be a UUID");
			goto out;
		}
		rv = idp_store_session_get(c->ctx->store, sidbuf, &s);
		if (rv == CM_OK && strcmp(s.user_id, u.id) != 0) {
			rv = CM_ENOENT;
		}
		if (rv == CM_ENOENT) {
			fail(c, 403, "session_not_found",
			    "Session from session_id claim in JWT does not "
			    "exist");
			goto out;
		}
		if (rv != CM_OK) {
			fail(c, 500, "unexpected_failure", "Database error");
			goto out;
		}
	}
	// aud is a string, or an array whose first element counts.
	audv = json_object_get(claims, "aud");
	if (json_is_array(audv)) {
		audv = json_array_get(audv, 0);
	}
	aud = json_string_value(audv);
	if (aud == NULL || strcmp(aud, IDP_AUD) != 0) {
		fail(c, 400, "validation_failed",
		    "Token audience doesn't match request audience");
		rv = CM_EAUTH;
		goto out;
	}
	*user = u;
	memset(&u, 0, sizeof(u));
	*sess = s;
	rv    = CM_OK;
	goto out;
noauth:
	fail(c, 401, "no_authorization",
	    "This endpoint requires a valid Bearer token");
	rv = CM_EAUTH;
out:
	idp_user_fini(&u);
	json_decref(claims);
	return (rv);
}

// ---------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------

// weak_password() answers 422 with GoTrue's extra weak_password field.
static void
weak_password(call *c)
{
	const char *msg = "Password should be at least 6 characters.";
	json_t     *v;

	if (c->newf) {
		v = json_pack("{s:s, s:s, s:{s:[s]}}", "code", "weak_password",
		    "message", msg, "weak_password", "reasons", "length");
	} else {
		v = json_pack("{s:i, s:s, s:s, s:{s:[s]}}", "code", 422,
		    "error_code", "weak_password", "msg", msg, "weak_password",
		    "reasons", "length");
	}
	set_json(c->res, 422, v);
	c->res->error_code = "weak_password";
}

static void
do_signup(call *c)
{
	json_t     *body = NULL, *data;
	const char *email, *pw;
	size_t      pwlen;
	idp_user    u;
	idp_session sess;
	char        tok[IDP_REFRESH_TOKEN_LEN + 1];
	char        hash[2 * SHA256_DIGEST_LENGTH + 1];
	cm_err      rv;

	memset(&u, 0, sizeof(u));
	if (parse_body(c, &body) != CM_OK) {
		goto out;
	}
	email = json_string_value(json_object_get(body, "email"));
	if (email == NULL || email[0] == '\0') {
		fail(c, 400, "validation_failed",
		    "An email address is required");
		goto out;
	}
	rv = email_normalize(email,
	    json_string_length(json_object_get(body, "email")), u.email);
	if (rv == CM_ETOOBIG) {
		fail(c, 400, "validation_failed",
		    "An email address is too long");
		goto out;
	}
	if (rv != CM_OK) {
		fail(c, 400, "validation_failed",
		    "Unable to validate email address: invalid format");
		goto out;
	}
	pw = json_string_value(json_object_get(body, "password"));
	if (pw == NULL ||
	    json_string_length(json_object_get(body, "password")) == 0) {
		fail(c, 400, "validation_failed",
		    "Signup requires a valid password");
		goto out;
	}
	pwlen = json_string_length(json_object_get(body, "password"));
	if (pwlen > IDP_PASSWORD_MAX ||
	    utf8_chars(pw, pwlen) > PASSWORD_MAX_CHARS) {
		fail(c, 400, "validation_failed",
		    "Password cannot be longer than 72 characters");
		goto out;
	}
	if (pwlen < IDP_PASSWORD_MIN) {
		weak_password(c);
		goto out;
	}
	data = json_object_get(body, "data");
	if (data != NULL && !json_is_null(data) && !json_is_object(data)) {
		fail(c, 400, "bad_json",
		    "Could not parse request body as JSON: "
		    "data must be an object");
		goto out;
	}
	u.user_metadata = (data == NULL || json_is_null(data))
	    ? cm_xstrdup("{}")
	    : cm_json_dump(data);
	if (strlen(u.user_metadata) > IDP_METADATA_MAX) {
		fail(c, 400, "validation_failed",
		    "User metadata is too large "
		    "(at most 16384 bytes of JSON)");
		goto out;
	}
	rv = idp_password_hash(
	    pw, pwlen, c->ctx->cfg.pbkdf2_iter, u.password_hash);
	if (rv != CM_OK) {
		fail(c, 500, "unexpected_failure", "Could not hash password");
		goto out;
	}
	cm_uuid4(u.id);
	cm_uuid4(u.identity_id);
	u.created_at = u.updated_at = u.last_sign_in_at = c->now_us;
	cm_uuid4(sess.id);
	memcpy(sess.user_id, u.id, sizeof(sess.user_id));
	sess.created_at = c->now_us;
	new_refresh_token(tok, hash);
	rv = idp_store_signup(c->ctx->store, &u, &sess, hash);
	if (rv == CM_EEXIST) {
		fail(c, 422, "user_already_exists", "User already registered");
		goto out;
	}
	if (rv != CM_OK) {
		fail(c, 500, "unexpected_failure", "Database error");
		goto out;
	}
	cm_info(c->req->rid, "signup user %s", u.id);
	send_session(c, &u, &sess, tok);
out:
	idp_user_fini(&u);
	json_decref(body);
}

static void
grant_password(call *c)
{
	json_t     *body = NULL;
	const char *email, *pw;
	size_t      pwlen = 0, elen = 0;
	char        norm[IDP_EMAIL_MAX + 1];
	idp_user    u;
	idp_session sess;
	char        tok[IDP_REFRESH_TOKEN_LEN + 1];
	char        hash[2 * SHA256_DIGEST_LENGTH + 1];
	cm_err      rv;

	memset(&u, 0, sizeof(u));
	if (parse_body(c, &body) != CM_OK) {
		goto out;
	}
	email = json_string_value(json_object_get(body, "email"));
	pw    = json_string_value(json_object_get(body, "password"));
	if (email != NULL) {
		elen = json_string_length(json_object_get(body, "email"));
	}
	if (pw != NULL) {
		pwlen = json_string_length(json_object_get(body, "password"));
	}
	if (email == NULL || pw == NULL || pwlen > IDP_PASSWORD_MAX ||
	    email_normalize(email, elen, norm) != CM_OK) {
		goto bad;
	}
	rv = idp_store_user_by_email(c->ctx->store, norm, &u);
	if (rv == CM_ENOENT) {
		// Same work as a real check, so timing does not tell whether
		// the address is registered.
		(void) idp_password_verify(pw, pwlen, c->ctx->dummy_hash);
		goto bad;
	}
	if (rv != CM_OK) {
		fail(c, 500, "unexpected_failure", "Database error");
		goto out;
	}
	rv = idp_password_verify(pw, pwlen, u.password_hash);
	if (rv != CM_OK) {
		goto bad;
	}
	cm_uuid4(sess.id);
	memcpy(sess.user_id, u.id, sizeof(sess.user_id));
	sess.created_at = c->now_us;
	new_refresh_token(tok, hash);
	rv = idp_store_login(c->ctx->store, &sess, hash);
	if (rv == CM_ENOENT) {
		goto bad; // deleted meanwhile
	}
	if (rv != CM_OK) {
		fail(c, 500, "unexpected_failure", "Database error");
		goto out;
	}
	u.last_sign_in_at = u.updated_at = c->now_us;
	send_session(c, &u, &sess, tok);
	goto out;
bad:
	fail(c, 400, "invalid_credentials", "Invalid login credentials");
out:
	idp_user_fini(&u);
	json_decref(body);
}

static void
grant_refresh(call *c)
{
	json_t     *body = NULL;
	const char *old;
	size_t      oldlen = 0;
	char        oldhash[2 * SHA256_DIGEST_LENGTH + 1];
	char        tok[IDP_REFRESH_TOKEN_LEN + 1];
	char        hash[2 * SHA256_DIGEST_LENGTH + 1];
	idp_user    u;
	idp_session sess;
	cm_err      rv;

	memset(&u, 0, sizeof(u));
	if (parse_body(c, &body) != CM_OK) {
		goto out;
	}
	old = json_string_value(json_object_get(body, "refresh_token"));
	if (old != NULL) {
		oldlen =
		    json_string_length(json_object_get(body, "refresh_token"));
	}
	if (old == NULL || oldlen < REFRESH_TOKEN_MIN ||
	    oldlen > IDP_REFRESH_TOKEN_MAX) {
		fail(
		    c, 400, "validation_failed", "Refresh token is not valid");
		goto out;
	}
	sha256_hex(old, oldlen, oldhash);
	new_refresh_token(tok, hash);
	rv = idp_store_refresh(c->ctx->store, oldhash, hash, c->now_us, &sess);
	if (rv == CM_ECONFLICT) {
		fail(c, 400, "refresh_token_already_used",
		    "Invalid Refresh Token: Already Used");
		goto out;
	}
	if (rv == CM_OK) {
		rv = idp_store_user_by_id(c->ctx->store, sess.user_id, &u);
	}
	if (rv == CM_ENOENT) {
		fail(c, 400, "refresh_token_not_found",
		    "Invalid Refresh Token: Refresh Token Not Found");
		goto out;
	}
	if (rv != CM_OK) {
		fail(c, 500, "unexpected_failure", "Database error");
		goto out;
	}
	send_session(c, &u, &sess, tok);
out:
	idp_user_fini(&u);
	json_decref(body);
}

static void
do_token(call *c)
{
	const char *g = c->req->grant_type;

	if (g != NULL && strcmp(g, "password") == 0) {
		grant_password(c);
	} else if (g != NULL && strcmp(g, "refresh_token") == 0) {
		grant_refresh(c);
	} else {
		fail(c, 400, "invalid_credentials", "unsupported_grant_type");
	}
}

static void
do_user(call *c)
{
	idp_user    u;
	idp_session s;

	if (authenticate(c, &u, &s) != CM_OK) {
		return;
	}
	set_json(c->res, 200, user_json(&u));
	idp_user_fini(&u);
}

static void
do_logout(call *c)
{
	const char      *sc = c->req->scope;
	idp_logout_scope scope;
	idp_user         u;
	idp_session      s;
	char             msg[IDP_MSG_MAX];

	if (sc == NULL || strcmp(sc, "global") == 0) {
		scope = IDP_LOGOUT_GLOBAL;
	} else if (strcmp(sc, "local") == 0) {
		scope = IDP_LOGOUT_LOCAL;
	} else if (strcmp(sc, "others") == 0) {
		scope = IDP_LOGOUT_OTHERS;
	} else {
		snprintf(msg, sizeof(msg),
		    "Unsupported logout scope \"%.32s\"", sc);
		fail(c, 400, "validation_failed", msg);
		return;
	}
	if (authenticate(c, &u, &s) != CM_OK) {
		return;
	}
	if (idp_store_logout(c->ctx->store, u.id, s.id, scope) != CM_OK) {
		fail(c, 500, "unexpected_failure", "Database error");
	} else {
		c->res->status = 204;
	}
	idp_user_fini(&u);
}

static void
do_jwks(call *c)
{
	set_json(c->res, 200,
	    json_pack("{s:[o]}", "keys", idp_jwt_key_public_jwk(c->ctx->key)));
	c->res->cache_control = JWKS_CACHE;
}

static void
do_discovery(call *c)
{
	char jwks[IDP_ISSUER_MAX + 32];

	snprintf(
	    jwks, sizeof(jwks), "%s/.well-known/jwks.json", c->ctx->issuer);
	set_json(c->res, 200,
	    json_pack("{s:s, s:s, s:[s]}", "issuer", c->ctx->issuer,
	        "jwks_uri", jwks, "id_token_signing_alg_values_supported",
	        "ES256"));
	c->res->cache_control = JWKS_CACHE;
}

static void
do_health(call *c)
{
	set_json(c->res, 200,
	    json_pack("{s:s, s:s, s:s}", "name", "threadgate-dev-idp",
	        "version", TG_VERSION, "description",
	        "Supabase Auth compatible IdP for development only; never use "
	        "it in production"));
}

static void
do_stats(call *c)
{
	const char *k = c->req->apikey_header != NULL ? c->req->apikey_header
	                                              : c->req->apikey_query;

	if (k == NULL || !key_eq(k, c->ctx->cfg.service_key)) {
		fail(c, 403, "not_admin", "User not allowed");
		return;
	}
	set_json(c->res, 200,
	    json_pack("{s:I, s:I, s:I}", "user_requests",
	        (json_int_t) atomic_load(&c->ctx->stats.user_requests),
	        "token_requests",
	        (json_int_t) atomic_load(&c->ctx->stats.token_requests),
	        "signup_requests",
	        (json_int_t) atomic_load(&c->ctx->stats.signup_requests)));
}

// ---------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------

typedef struct route {
	const char *path; // after PREFIX
	const char *method;
	void (*fn)(call *);
	int    open;        // no apikey needed
	size_t counter_off; // offsetof the idp_stats counter, or NO_COUNTER
} route;

#define NO_COUNTER ((size_t) -1)

static const route routes[] = {
	{ "/signup", "POST", do_signup, 0,
	    offsetof(idp_stats, signup_requests) },
	{ "/token", "POST", do_token, 0, offsetof(idp_stats, token_requests) },
	{ "/user", "GET", do_user, 0, offsetof(idp_stats, user_requests) },
	{ "/logout", "POST", do_logout, 0, NO_COUNTER },
	{ "/.well-known/jwks.json", "GET", do_jwks, 1, NO_COUNTER },
	{ "/.well-known/openid-configuration", "GET", do_discovery, 1,
	    NO_COUNTER },
	{ "/health", "GET", do_health, 1, NO_COUNTER },
	{ "/_dev/stats", "GET", do_stats, 0, NO_COUNTER },
};

void
idp_handle(idp_ctx *ctx, const idp_request *req, idp_response *res)
{
	const route *r = NULL;
	const char  *sub, *key;
	call         c;
	size_t       i;

	memset(res, 0, sizeof(*res));
	c.ctx                 = ctx;
	c.req                 = req;
	c.res                 = res;
	c.newf                = api_version_new(req->api_version);
	c.now_us              = cm_now_us();
	res->echo_api_version = c.newf;

	if (req->path == NULL ||
	    strncmp(req->path, PREFIX "/", strlen(PREFIX) + 1) != 0) {
		gateway_error(res, 404, "no Route matched with those values");
		return;
	}
	sub = req->path + strlen(PREFIX);
	for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (strcmp(routes[i].path, sub) == 0) {
			r = &routes[i];
			break;
		}
	}
	// CORS preflight, answered before the key check as Supabase's Kong
	// cors plugin does, so browser apps can use the dev IdP too.
	if (req->method != NULL && strcmp(req->method, "OPTIONS") == 0) {
		res->status = 204;
		res->allow  = r != NULL ? r->method : NULL;
		return;
	}
	if (r == NULL || !r->open) {
		key = req->apikey_header != NULL ? req->apikey_header
		                                 : req->apikey_query;
		if (key == NULL || key[0] == '\0') {
			gateway_error(res, 401, "No API key found in request");
			return;
		}
		if (!key_eq(key, ctx->cfg.anon_key) &&
		    !key_eq(key, ctx->cfg.service_key)) {
			gateway_error(res, 401, "Invalid API key");
			return;
		}
	}
	if (r == NULL) {
		fail(&c, 404, "not_found", "Not Found");
		return;
	}
	if (req->method == NULL || strcmp(req->method, r->method) != 0) {
		fail(&c, 405, "method_not_allowed", "Method Not Allowed");
		res->allow = r->method;
		return;
	}
	if (r->counter_off != NO_COUNTER) {
		atomic_fetch_add(
		    (atomic_llong *) ((char *) &ctx->stats + r->counter_off),
		    1);
	}
	r->fn(&c);
}

// ---------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------

cm_err
idp_ctx_open(const idp_config *cfg, idp_ctx **out)
{
	idp_ctx     *ctx       = NULL;
	idp_jwt_key *cand      = NULL;
	char        *cand_json = NULL, *stored = NULL;
	char         rnd[IDP_REFRESH_TOKEN_LEN + 1];
	char         rndhash[2 * SHA256_DIGEST_LENGTH + 1];
	cm_err       rv;

	ctx      = cm_xcalloc(1, sizeof(*ctx));
	ctx->cfg = *cfg;
	if (ctx->cfg.pbkdf2_iter <= 0) {
		ctx->cfg.pbkdf2_iter = IDP_PBKDF2_ITER;
	}
	if (ctx->cfg.jwt_exp <= 0 || ctx->cfg.jwt_exp > IDP_JWT_EXP_MAX) {
		ctx->cfg.jwt_exp = IDP_JWT_EXP_DEFAULT;
	}
	rv = idp_store_open(cfg->db_path, &ctx->store);
	if (rv != CM_OK) {
		goto out;
	}
	// A fresh key is made every start but stored only when the database
	// has none; the stored one wins, so restarts keep tokens valid.
	rv = idp_jwt_key_generate(&cand);
	if (rv != CM_OK) {
		goto out;
	}
	cand_json = idp_jwt_key_private_json(cand);
	rv        = idp_store_key_get_or_put(
	           ctx->store, idp_jwt_key_kid(cand), cand_json, &stored);
	if (rv != CM_OK) {
		goto out;
	}
	rv = idp_jwt_key_import(stored, &ctx->key);
	if (rv != CM_OK) {
		cm_error(NULL,
		    "dev-idp: the signing key stored in %s is not a "
		    "usable EC P-256 private JWK",
		    cfg->db_path);
		goto out;
	}
	new_refresh_token(rnd, rndhash);
	rv = idp_password_hash(
	    rnd, strlen(rnd), ctx->cfg.pbkdf2_iter, ctx->dummy_hash);
	if (rv != CM_OK) {
		goto out;
	}
	if (cfg->issuer != NULL) {
		if (strlen(cfg->issuer) >= sizeof(ctx->issuer)) {
			rv = CM_EINVAL;
			goto out;
		}
		snprintf(ctx->issuer, sizeof(ctx->issuer), "%s", cfg->issuer);
	}
	*out = ctx;
	ctx  = NULL;
	rv   = CM_OK;
out:
	idp_jwt_key_free(cand);
	free(cand_json);
	free(stored);
	idp_ctx_close(ctx);
	return (rv);
}

cm_err
idp_ctx_set_issuer(idp_ctx *ctx, const char *host, int port)
{
	int n;

	if (ctx->cfg.issuer != NULL) {
		return (CM_OK);
	}
	if (strchr(host, ':') != NULL) {
		n = snprintf(ctx->issuer, sizeof(ctx->issuer),
		    "http://[%s]:%d" PREFIX, host, port);
	} else {
		n = snprintf(ctx->issuer, sizeof(ctx->issuer),
		    "http://%s:%d" PREFIX, host, port);
	}
	if (n < 0 || (size_t) n >= sizeof(ctx->issuer)) {
		ctx->issuer[0] = '\0';
		return (CM_EINVAL);
	}
	return (CM_OK);
}

void
idp_ctx_close(idp_ctx *ctx)
{
	if (ctx == NULL) {
		return;
	}
	idp_jwt_key_free(ctx->key);
	idp_store_close(ctx->store);
	free(ctx);
}
