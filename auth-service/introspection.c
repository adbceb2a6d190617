// SPDX-License-Identifier: MIT
//
// The introspection provider: RFC 7662 token introspection against any
// OAuth2 server. POST AUTH_INTROSPECTION_URL with the form body
// token=<urlencoded token> and HTTP Basic client authentication, where
// client id and secret are form-urlencoded before base64 (RFC 6749 §2.3.1,
// as oidc-provider expects). 200 {"active":true,...} -> valid, identity
// from "sub" (or "client_id" when there is no sub), "scope" ->
// permissions, "exp" bounds the cache TTL; when AUTH_ISSUER/AUTH_AUDIENCE
// are set, "iss"/"aud" must match. {"active":false} -> refused; anything
// else (other statuses, malformed JSON, active not a boolean) ->
// unavailable.

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "auth-service/auth.h"
#include "auth-service/service.h"
#include "common/json.h"
#include "common/log.h"
#include "common/xalloc.h"

// Longest client id or secret accepted: far above real ones (UUIDs,
// 64-char secrets), small enough for one header line.
#define INTRO_CRED_MAX 512
// Form body: "token=" + the token urlencoded (3 bytes per byte worst case).
#define INTRO_BODY_MAX (AUTH_TOKEN_MAX * 3 + 64)
// Basic credentials: both parts urlencoded, joined, base64, + header name.
#define INTRO_BASIC_MAX (((INTRO_CRED_MAX * 3 * 2 + 1) / 3 + 1) * 4 + 64)

typedef struct intro_provider {
	auth_provider      base;
	const auth_config *cfg;
	char              *auth_header;
	char              *scope;
} intro_provider;

static int
aud_matches(json_t *aud, const char *want)
{
	size_t  i;
	json_t *v;

	// auth_json_text: "authenticated\u0000x" is not "authenticated".
	if (json_is_string(aud)) {
		return (auth_json_text(aud) != NULL &&
		    strcmp(auth_json_text(aud), want) == 0);
	}
	if (json_is_array(aud)) {
		json_array_foreach(aud, i, v)
		{
			if (auth_json_text(v) != NULL &&
			    strcmp(auth_json_text(v), want) == 0) {
				return (1);
			}
		}
	}
	return (0);
}

static cm_err
intro_verify(auth_provider *p, auth_worker *w, const char *token,
    auth_result *out, char *detail, size_t detail_len)
{
	intro_provider    *ip   = (intro_provider *) p;
	auth_http_response resp = { 0 };
	json_t            *j    = NULL;
	json_t            *active;
	json_t            *exp;
	char              *body;
	const char        *id;
	const char        *s;
	const char        *hdrs[4];
	cm_err             rv;

	body = cm_xmalloc(INTRO_BODY_MAX);
	memcpy(body, "token=", 7);
	rv = auth_form_encode(token, body + 6, INTRO_BODY_MAX - 6);
	if (rv != CM_OK) {
		snprintf(detail, detail_len, "bearer token too long");
		rv = CM_EAUTH;
		goto out;
	}
	hdrs[0] = ip->auth_header;
	hdrs[1] = "Content-Type: application/x-www-form-urlencoded";
	hdrs[2] = "Accept: application/json";
	hdrs[3] = NULL;
	rv      = auth_http_request(
	         w, ip->cfg, "POST", ip->cfg->introspection_url, hdrs, body, &resp);
	if (rv != CM_OK) {
		snprintf(detail, detail_len, "identity provider %s",
		    rv == CM_ETIMEDOUT ? "timed out" : "unreachable");
		goto out;
	}
	if (resp.status != 200) {
		// 401 here means OUR client credentials were refused: that is
		// an outage, not the caller's fault.
		cm_warn(NULL, "introspection answered HTTP %ld", resp.status);
		snprintf(detail, detail_len,
		    "identity provider answered HTTP %ld", resp.status);
		rv = CM_EUNAVAIL;
		goto out;
	}
	rv = cm_json_parse(
	    resp.body, resp.body_len, AUTH_IDP_BODY_MAX, &j, NULL, 0);
	active = rv == CM_OK && json_is_object(j)
	    ? json_object_get(j, "active")
	    : NULL;
	if (!json_is_boolean(active)) {
		cm_warn(NULL, "introspection answered malformed JSON");
		snprintf(detail, detail_len,
		    "identity provider answered malformed JSON");
		rv = CM_EUNAVAIL;
		goto out;
	}
	if (!json_is_true(active)) {
		snprintf(detail, detail_len, "invalid or expired token");
		rv = CM_EAUTH;
		goto out;
	}
	if (ip->cfg->issuer[0] != '\0') {
		s = auth_json_text(json_object_get(j, "iss"));
		if (s == NULL || strcmp(s, ip->cfg->issuer) != 0) {
			snprintf(
			    detail, detail_len, "token issuer not accepted");
			rv = CM_EAUTH;
			goto out;
		}
	}
	if (ip->cfg->audience[0] != '\0' &&
	    !aud_matches(json_object_get(j, "aud"), ip->cfg->audience)) {
		snprintf(detail, detail_len, "token audience not accepted");
		rv = CM_EAUTH;
		goto out;
	}
	id = auth_json_text(json_object_get(j, "sub"));
	if (id == NULL || id[0] == '\0') {
		id = auth_json_text(json_object_get(j, "client_id"));
	}
	if (id == NULL || id[0] == '\0' || strlen(id) >= AUTH_ID_MAX) {
		cm_warn(NULL, "introspection answered active without sub");
		snprintf(detail, detail_len,
		    "identity provider answered without a subject");
		rv = CM_EUNAVAIL;
		goto out;
	}
	memset(out, 0, sizeof(*out));
	snprintf(out->identity, sizeof(out->identity), "%s", id);
	s = auth_json_text(json_object_get(j, "email"));
	if (s != NULL && strlen(s) < sizeof(out->email)) {
		snprintf(out->email, sizeof(out->email), "%s", s);
	}
	s = auth_json_text(json_object_get(j, "scope"));
	if (s != NULL && strlen(s) < sizeof(out->scopes)) {
		snprintf(out->scopes, sizeof(out->scopes), "%s", s);
	}
	exp = json_object_get(j, "exp");
	if (json_is_integer(exp) && json_integer_value(exp) > 0) {
		out->expires_at = json_integer_value(exp);
	}
	rv = CM_OK;

out:
	json_decref(j);
	auth_http_response_free(&resp);
	free(body);
	return (rv);
}

static void
intro_destroy(auth_provider *p)
{
	intro_provider *ip = (intro_provider *) p;

	if (ip == NULL) {
		return;
	}
	free(ip->auth_header);
	free(ip->scope);
	free(ip);
}

cm_err
auth_introspection_new(const auth_config *cfg, auth_provider **out)
{
	intro_provider *ip;
	char            id[INTRO_CRED_MAX * 3 + 1];
	char            secret[INTRO_CRED_MAX * 3 + 1];
	char            joined[INTRO_CRED_MAX * 6 + 2];
	unsigned char   b64[sizeof(joined) * 4 / 3 + 8];
	size_t          n;
	int             blen;

	if (cfg->introspection_url[0] == '\0') {
		cm_error(NULL,
		    "AUTH_INTROSPECTION_URL is required for the "
		    "introspection provider");
		return (CM_EINVAL);
	}
	if (cfg->client_id[0] == '\0' || cfg->client_secret[0] == '\0') {
		cm_error(NULL,
		    "AUTH_CLIENT_ID and AUTH_CLIENT_SECRET are "
		    "required for the introspection provider");
		return (CM_EINVAL);
	}
	if (strlen(cfg->client_id) > INTRO_CRED_MAX ||
	    strlen(cfg->client_secret) > INTRO_CRED_MAX ||
	    auth_form_encode(cfg->client_id, id, sizeof(id)) != CM_OK ||
	    auth_form_encode(cfg->client_secret, secret, sizeof(secret)) !=
	        CM_OK) {
		cm_error(NULL,
		    "AUTH_CLIENT_ID/AUTH_CLIENT_SECRET longer than %d "
		    "bytes",
		    INTRO_CRED_MAX);
		return (CM_EINVAL);
	}
	snprintf(joined, sizeof(joined), "%s:%s", id, secret);
	blen = EVP_EncodeBlock(
	    b64, (const unsigned char *) joined, (int) strlen(joined));
	ip              = cm_xcalloc(1, sizeof(*ip));
	ip->cfg         = cfg;
	n               = (size_t) blen + 32;
	ip->auth_header = cm_xmalloc(n);
	snprintf(ip->auth_header, n, "Authorization: Basic %s", (char *) b64);
	n = strlen(cfg->introspection_url) + strlen(cfg->client_id) +
	    strlen(cfg->issuer) + strlen(cfg->audience) + 64;
	ip->scope = cm_xmalloc(n);
	snprintf(ip->scope, n, "introspection\n%s\n%s\n%s\n%s",
	    cfg->introspection_url, cfg->client_id, cfg->issuer,
	    cfg->audience);
	OPENSSL_cleanse(joined, sizeof(joined));
	OPENSSL_cleanse(secret, sizeof(secret));
	ip->base.name        = "introspection";
	ip->base.verify      = intro_verify;
	ip->base.destroy     = intro_destroy;
	ip->base.cache_scope = ip->scope;
	*out                 = &ip->base;
	return (CM_OK);
}
