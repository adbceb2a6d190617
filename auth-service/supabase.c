// SPDX-License-Identifier: MIT
//
// The supabase provider: asks the IdP about every (uncached) token with
// GET $SUPABASE_URL/auth/v1/user, the only check that sees logout and
// session revocation. 200 with a user object whose "id" is a non-empty
// string -> valid; 401/403 (and 400 bad_jwt, GoTrue's answer for a token
// whose sub is not a UUID) -> refused; anything else -> unavailable. The
// token's exp claim is decoded (not verified) only to bound the cache TTL.

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "auth-service/auth.h"
#include "auth-service/service.h"
#include "common/json.h"
#include "common/log.h"
#include "common/xalloc.h"

// Room for "Authorization: Bearer " + the token + NUL.
#define SB_AUTHZ_MAX (AUTH_TOKEN_MAX + 32)
// Room for "apikey: " + the key + NUL. Supabase keys are JWTs (~200 B)
// or sb_secret_ strings; 4 KiB is far above either.
#define SB_APIKEY_MAX 4096

typedef struct sb_provider {
	auth_provider      base;
	const auth_config *cfg;
	char              *user_url;
	char              *apikey_header;
	char              *scope;
} sb_provider;

static void
copy_str(char *dst, size_t dst_len, const char *src)
{
	snprintf(dst, dst_len, "%s", src != NULL ? src : "");
}

static int
is_bad_jwt(const char *body, size_t len)
{
	json_t     *j  = NULL;
	int         rv = 0;
	const char *code;

	if (cm_json_parse(body, len, AUTH_IDP_BODY_MAX, &j, NULL, 0) !=
	    CM_OK) {
		return (0);
	}
	if (json_is_object(j)) {
		code = json_string_value(json_object_get(j, "error_code"));
		if (code == NULL) {
			code = json_string_value(json_object_get(j, "code"));
		}
		rv = code != NULL && strcmp(code, "bad_jwt") == 0;
	}
	json_decref(j);
	return (rv);
}

static cm_err
sb_verify(auth_provider *p, auth_worker *w, const char *token,
    auth_result *out, char *detail, size_t detail_len)
{
	sb_provider       *sp   = (sb_provider *) p;
	auth_http_response resp = { 0 };
	json_t            *user = NULL;
	char              *authz;
	const char        *hdrs[4];
	const char        *id;
	const char        *email;
	cm_err             rv;

	authz = cm_xmalloc(SB_AUTHZ_MAX);
	snprintf(authz, SB_AUTHZ_MAX, "Authorization: Bearer %s", token);
	hdrs[0] = authz;
	hdrs[1] = sp->apikey_header;
	hdrs[2] = "Accept: application/json";
	hdrs[3] = NULL;

	rv = auth_http_request(
	    w, sp->cfg, "GET", sp->user_url, hdrs, NULL, &resp);
	if (rv != CM_OK) {
		snprintf(detail, detail_len, "identity provider %s",
		    rv == CM_ETIMEDOUT ? "timed out" : "unreachable");
		goto out;
	}
	if (resp.status == 401 || resp.status == 403 ||
	    (resp.status == 400 && is_bad_jwt(resp.body, resp.body_len))) {
		snprintf(detail, detail_len, "invalid or expired token");
		rv = CM_EAUTH;
		goto out;
	}
	if (resp.status != 200) {
		cm_warn(NULL, "supabase /user answered HTTP %ld", resp.status);
		snprintf(detail, detail_len,
		    "identity provider answered HTTP %ld", resp.status);
		rv = CM_EUNAVAIL;
		goto out;
	}
	rv = cm_json_parse(
	    resp.body, resp.body_len, AUTH_IDP_BODY_MAX, &user, NULL, 0);
	if (rv != CM_OK || !json_is_object(user)) {
		cm_warn(
		    NULL, "supabase /user answered 200 with malformed JSON");
		snprintf(detail, detail_len,
		    "identity provider answered malformed JSON");
		rv = CM_EUNAVAIL;
		goto out;
	}
	// A value with a NUL is refused, not cut at it (auth_json_text).
	id    = auth_json_text(json_object_get(user, "id"));
	email = auth_json_text(json_object_get(user, "email"));
	if (id == NULL || id[0] == '\0' || strlen(id) >= AUTH_ID_MAX) {
		cm_warn(
		    NULL, "supabase /user answered 200 without a usable id");
		snprintf(detail, detail_len,
		    "identity provider answered without a user id");
		rv = CM_EUNAVAIL;
		goto out;
	}
	memset(out, 0, sizeof(*out));
	copy_str(out->identity, sizeof(out->identity), id);
	if (email != NULL && strlen(email) < sizeof(out->email)) {
		copy_str(out->email, sizeof(out->email), email);
	}
	out->expires_at = auth_token_exp(token);
	rv              = CM_OK;

out:
	json_decref(user);
	auth_http_response_free(&resp);
	free(authz);
	return (rv);
}

static void
sb_destroy(auth_provider *p)
{
	sb_provider *sp = (sb_provider *) p;

	if (sp == NULL) {
		return;
	}
	free(sp->user_url);
	free(sp->apikey_header);
	free(sp->scope);
	free(sp);
}

cm_err
auth_supabase_new(const auth_config *cfg, auth_provider **out)
{
	sb_provider *sp;
	size_t       n;

	if (cfg->supabase_url == NULL || cfg->supabase_url[0] == '\0') {
		cm_error(NULL,
		    "SUPABASE_URL is required for the supabase provider");
		return (CM_EINVAL);
	}
	if (cfg->supabase_key == NULL || cfg->supabase_key[0] == '\0' ||
	    strlen(cfg->supabase_key) >= SB_APIKEY_MAX - 16) {
		cm_error(NULL,
		    "SUPABASE_SERVICE_KEY is required (at most %d "
		    "bytes) for the supabase provider",
		    SB_APIKEY_MAX - 16);
		return (CM_EINVAL);
	}
	sp           = cm_xcalloc(1, sizeof(*sp));
	sp->cfg      = cfg;
	n            = strlen(cfg->supabase_url) + 32;
	sp->user_url = cm_xmalloc(n);
	snprintf(sp->user_url, n, "%s/auth/v1/user", cfg->supabase_url);
	n                 = strlen(cfg->supabase_key) + 16;
	sp->apikey_header = cm_xmalloc(n);
	snprintf(sp->apikey_header, n, "apikey: %s", cfg->supabase_key);
	n         = strlen(sp->user_url) + 32;
	sp->scope = cm_xmalloc(n);
	snprintf(sp->scope, n, "supabase\n%s", sp->user_url);
	sp->base.name        = "supabase";
	sp->base.verify      = sb_verify;
	sp->base.destroy     = sb_destroy;
	sp->base.cache_scope = sp->scope;
	*out                 = &sp->base;
	return (CM_OK);
}
