// SPDX-License-Identifier: MIT
//
// The "jwt" provider (issue 4): verifies access tokens locally, with no
// network call per request once the keys are known.
//
// verify() runs these steps, cheapest first, and refuses at the first
// failure (every refusal is CM_EAUTH with a short client-safe reason; only
// "the keys cannot be had" is CM_EUNAVAIL):
//  1. size (1..AUTH_TOKEN_MAX) and shape: three non-empty base64url
//     segments, no padding, nothing else;
//  2. cjose_jws_import (header JSON, payload and signature decoding);
//  3. the header, checked here and not left to cjose: "alg" must be one we
//     implement and that the configuration allows for some key source
//     (never "none"); no "crit"; "kid" bounded. "jku"/"x5u"/"jwk" headers
//     are ignored: keys only ever come from the configuration;
//  4. key choice: HS* tokens only ever meet the shared secret (and "oct"
//     JWKS keys when HS256 is explicitly allowed for JWKS keys), RS*/PS*
//     only RSA keys, ES256 only P-256 keys, ES384 only P-384 keys; a JWK
//     that names its "alg" is used for that alg only. A token with a kid
//     is checked against the keys with that kid (an unknown kid may cause
//     one JWKS refetch, see jwks.c); one without against every compatible
//     key. The signature length must be the key's exact length;
//  5. cjose_jws_verify with the cached cjose key;
//  6. the claims (auth_jwt_check_claims): exp required, nbf/iat with
//     leeway, iss, aud, identity, email, scopes, session_id. The payload
//     is read with the strict single-pass reader of claims.h, not a
//     jansson DOM (issue 4: the DOM cost more than the RSA verify).

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjose/header.h>
#include <cjose/jws.h>

#include "auth-service/auth.h"
#include "auth-service/claims.h"
#include "auth-service/jwt.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"

// Longest base64url header segment accepted, in chars. Real JOSE headers
// ({"alg","typ","kid"}) are under 200 chars; 1024 leaves room for x5t and
// friends while keeping cjose's header parse small.
#define JWT_HEADER_B64_MAX 1024
// Largest |number| accepted in a time claim: 2^53, the largest integer a
// JSON double represents exactly; beyond it the value is nonsense.
#define JWT_TIME_MAX 9007199254740992.0
// Most "aud" array entries looked at. Tokens carry 1-3 audiences.
#define JWT_AUD_MAX 64

typedef struct jwt_provider {
	auth_provider      base; // first member: auth_provider * casts back
	const auth_config *cfg;
	auth_jwks         *jwks;         // NULL when only a secret is set
	auth_keyset       *secret;       // NULL when no shared secret
	unsigned           jwks_algs;    // 0 when no JWKS
	unsigned           secret_algs;  // 0 when no secret
	char              *expected_iss; // "" = iss not checked
	char              *scope;        // cache scope text
} jwt_provider;

static const char *
nz(const char *s)
{
	return (s != NULL ? s : "");
}

static cm_err
refuse(char *detail, size_t detail_len, const char *why)
{
	if (detail != NULL && detail_len > 0) {
		snprintf(detail, detail_len, "%s", why);
	}
	return (CM_EAUTH);
}

// Length of the unpadded base64url text of n bytes.
static size_t
b64url_len(size_t n)
{
	return ((n * 8 + 5) / 6);
}

// 1 for the base64url alphabet (RFC 4648 §5), 2 for '.', else 0. A table
// because the shape check runs over every byte of every token.
static const unsigned char b64url_class[256] = {
	['A' ... 'Z'] = 1,
	['a' ... 'z'] = 1,
	['0' ... '9'] = 1,
	['-']         = 1,
	['_']         = 1,
	['.']         = 2,
};

// Checks the compact serialization's shape. Writes the length of the
// signature segment.
static int
token_shape_ok(const char *t, size_t len, size_t *sig_b64_len)
{
	size_t i, dots = 0, seg = 0, dot1 = 0, dot2 = 0;

	for (i = 0; i < len; i++) {
		unsigned char k = b64url_class[(unsigned char) t[i]];
		if (k == 1) {
			seg++;
			continue;
		}
		if (k == 0 || seg == 0 || ++dots > 2) {
			return (0);
		}
		if (dots == 1) {
			dot1 = i;
		} else {
			dot2 = i;
		}
		seg = 0;
	}
	if (dots != 2 || seg == 0 || dot1 > JWT_HEADER_B64_MAX) {
		return (0);
	}
	*sig_b64_len = len - dot2 - 1;
	return (1);
}

// ---------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------

// The members auth_jwt_check_claims() reads, in the order of claim_names
// in auth_jwt_check_claims (the identity claim's name comes from cfg).
enum {
	C_EXP,
	C_NBF,
	C_IAT,
	C_ISS,
	C_AUD,
	C_ID,
	C_EMAIL,
	C_SESSION,
	C_SCOPE,
	C_SCP,
	C_COUNT,
};

// Room for any decoded claim string: a decoded JSON string is never
// longer than its JSON text, and the payload is at most AUTH_TOKEN_MAX
// bytes (checked first), so nothing here is ever cut short.
#define JWT_CLAIM_TEXT_MAX AUTH_TOKEN_MAX

// A numeric claim as whole seconds. Returns 1 when absent, 0 when set,
// -1 when present but not a sane number.
static int
claim_time(const auth_claim *v, int64_t *out)
{
	double d;

	if (v->type == AUTH_CLAIM_ABSENT) {
		return (1);
	}
	if (v->type == AUTH_CLAIM_INTEGER) {
		if (v->i > (int64_t) JWT_TIME_MAX ||
		    v->i < -(int64_t) JWT_TIME_MAX) {
			return (-1);
		}
		*out = v->i;
		return (0);
	}
	if (v->type == AUTH_CLAIM_REAL) {
		d = v->d;
		if (!isfinite(d) || fabs(d) > JWT_TIME_MAX) {
			return (-1);
		}
		*out = (int64_t) floor(d);
		return (0);
	}
	return (-1);
}

// A string claim decoded into text (JWT_CLAIM_TEXT_MAX bytes) when it has
// no embedded NUL or control characters, else NULL.
static const char *
clean_str(const auth_claim *v, char *text)
{
	size_t i, n;

	if (auth_claims_str(v, text, JWT_CLAIM_TEXT_MAX, &n) != CM_OK) {
		return (NULL); // not a string (never too long, see above)
	}
	for (i = 0; i < n; i++) {
		if ((unsigned char) text[i] < 0x20 || text[i] == 0x7f) {
			return (NULL);
		}
	}
	return (text);
}

// Appends one scope to buf (space-separated) if it fits whole and is
// well-formed (RFC 6749 §3.3: printable ASCII without space, '"' or '\').
static void
scope_add(char *buf, size_t cap, const char *s, size_t n)
{
	size_t used = strlen(buf), i;

	if (n == 0) {
		return;
	}
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char) s[i];
		if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\') {
			return;
		}
	}
	if (used + (used > 0) + n + 1 > cap) {
		return; // keep whole scopes only; fewer permissions fail
		        // closed
	}
	if (used > 0) {
		buf[used++] = ' ';
	}
	memcpy(buf + used, s, n);
	buf[used + n] = '\0';
}

static void
scope_add_list(char *buf, size_t cap, const char *s)
{
	const char *p = s;

	while (*p != '\0') {
		size_t n;
		while (*p == ' ') {
			p++;
		}
		n = strcspn(p, " ");
		scope_add(buf, cap, p, n);
		p += n;
	}
}

static int
aud_matches(const auth_claim *aud, const char *want, char *text)
{
	auth_claim_iter it;
	auth_claim      a;
	size_t          i;
	const char     *s;

	if (aud->type == AUTH_CLAIM_STRING) {
		s = clean_str(aud, text);
		return (s != NULL && strcmp(s, want) == 0);
	}
	auth_claims_iter_init(aud, &it); // empty walk unless an array
	for (i = 0; i < JWT_AUD_MAX && auth_claims_next(&it, &a); i++) {
		s = clean_str(&a, text);
		if (s != NULL && strcmp(s, want) == 0) {
			return (1);
		}
	}
	return (0);
}

cm_err
auth_jwt_check_claims(const auth_config *cfg, const char *expected_iss,
    const char *payload, size_t len, int64_t now_s, auth_result *out,
    char *detail, size_t detail_len)
{
	auth_claim  c[C_COUNT], *v;
	const char *names[C_COUNT];
	char        text[JWT_CLAIM_TEXT_MAX];
	auth_result r;
	const char *s;
	int64_t     exp = 0, nbf = 0, iat = 0;
	int64_t     leeway = cfg->leeway_s > 0 ? cfg->leeway_s : 0;
	int         rc;
	cm_err      rv;

	memset(&r, 0, sizeof(r));
	names[C_EXP] = "exp";
	names[C_NBF] = "nbf";
	names[C_IAT] = "iat";
	names[C_ISS] = "iss";
	names[C_AUD] = "aud";
	names[C_ID] =
	    nz(cfg->identity_claim)[0] != '\0' ? cfg->identity_claim : "sub";
	names[C_EMAIL]   = "email";
	names[C_SESSION] = "session_id";
	names[C_SCOPE]   = "scope";
	names[C_SCP]     = "scp";
	// The size limit cm_json_parse applied before (and what makes
	// JWT_CLAIM_TEXT_MAX enough for any string).
	if (payload == NULL || len > AUTH_TOKEN_MAX) {
		rv = CM_EINVAL;
	} else {
		rv = auth_claims_scan(payload, len, names, C_COUNT, c);
	}
	if (rv == CM_EEXIST) {
		// Which of two values counts is where parsers disagree:
		// refuse instead of picking one (claims.h).
		rv = refuse(detail, detail_len, "duplicate claim");
		goto out;
	}
	if (rv != CM_OK) {
		rv =
		    refuse(detail, detail_len, "payload is not a JSON object");
		goto out;
	}

	rc = claim_time(&c[C_EXP], &exp);
	if (rc != 0) {
		rv = refuse(detail, detail_len,
		    rc > 0 ? "exp claim missing" : "exp claim not a number");
		goto out;
	}
	if (now_s >= exp + leeway) {
		rv = refuse(detail, detail_len, "token expired");
		goto out;
	}
	rc = claim_time(&c[C_NBF], &nbf);
	if (rc < 0) {
		rv = refuse(detail, detail_len, "nbf claim not a number");
		goto out;
	}
	if (rc == 0 && nbf > now_s + leeway) {
		rv = refuse(detail, detail_len, "token not yet valid (nbf)");
		goto out;
	}
	rc = claim_time(&c[C_IAT], &iat);
	if (rc < 0) {
		rv = refuse(detail, detail_len, "iat claim not a number");
		goto out;
	}
	if (rc == 0 && iat > now_s + leeway) {
		rv = refuse(
		    detail, detail_len, "token issued in the future (iat)");
		goto out;
	}

	if (expected_iss != NULL && expected_iss[0] != '\0') {
		s = clean_str(&c[C_ISS], text);
		if (s == NULL || strcmp(s, expected_iss) != 0) {
			rv = refuse(detail, detail_len, "wrong issuer");
			goto out;
		}
	}
	if (nz(cfg->audience)[0] != '\0' &&
	    !aud_matches(&c[C_AUD], cfg->audience, text)) {
		rv = refuse(detail, detail_len, "wrong audience");
		goto out;
	}

	s = clean_str(&c[C_ID], text);
	if (s == NULL || s[0] == '\0') {
		rv = refuse(detail, detail_len, "identity claim missing");
		goto out;
	}
	if (strlen(s) >= sizeof(r.identity)) {
		// Never truncate an identity: two users would become one.
		rv = refuse(detail, detail_len, "identity claim too long");
		goto out;
	}
	snprintf(r.identity, sizeof(r.identity), "%s", s);

	s = clean_str(&c[C_EMAIL], text);
	if (s != NULL && strlen(s) < sizeof(r.email)) {
		snprintf(r.email, sizeof(r.email), "%s", s);
	}
	s = clean_str(&c[C_SESSION], text);
	if (s != NULL && strlen(s) < sizeof(r.session_id)) {
		snprintf(r.session_id, sizeof(r.session_id), "%s", s);
	}
	s = clean_str(&c[C_SCOPE], text);
	if (s != NULL) {
		scope_add_list(r.scopes, sizeof(r.scopes), s);
	} else {
		v = &c[C_SCP];
		s = clean_str(v, text);
		if (s != NULL) {
			scope_add_list(r.scopes, sizeof(r.scopes), s);
		} else if (v->type == AUTH_CLAIM_ARRAY) {
			auth_claim_iter it;
			auth_claim      e;
			auth_claims_iter_init(v, &it);
			while (auth_claims_next(&it, &e)) {
				s = clean_str(&e, text);
				if (s != NULL) {
					scope_add(r.scopes, sizeof(r.scopes),
					    s, strlen(s));
				}
			}
		}
	}
	r.expires_at = exp;
	*out         = r;
	rv           = CM_OK;
out:
	return (rv);
}

// ---------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------

// Tries the keys of ks that may verify alg (and carry kid, when kid is not
// NULL). Counts the keys tried in *tried. Returns 1 on a good signature.
static int
try_keys(const auth_keyset *ks, const char *kid, unsigned alg,
    cjose_jws_t *jws, size_t sig_b64_len, int *tried)
{
	cjose_err cerr;
	int       i;

	for (i = 0; i < ks->n; i++) {
		const auth_jwk *k = &ks->keys[i];
		if (kid != NULL && (!k->has_kid || strcmp(k->kid, kid) != 0)) {
			continue;
		}
		if ((k->algs & alg) == 0) {
			continue;
		}
		(*tried)++;
		if (b64url_len(k->sig_len) != sig_b64_len) {
			continue; // cjose 0.6.2 does not check this itself
		}
		if (cjose_jws_verify(jws, k->jwk, &cerr)) {
			return (1);
		}
	}
	return (0);
}

static cm_err
jwt_verify(auth_provider *p, auth_worker *w, const char *token,
    auth_result *out, char *detail, size_t detail_len)
{
	jwt_provider   *jp  = (jwt_provider *) p;
	cjose_jws_t    *jws = NULL;
	auth_keyset    *ks  = NULL;
	cjose_header_t *hdr;
	cjose_err       cerr;
	const char     *alg_s, *kid;
	char           *crit;
	uint8_t        *plain = NULL;
	size_t          len, sig_b64_len = 0, plain_len = 0;
	unsigned        alg;
	int             tried = 0, ok = 0;
	cm_err          rv;

	len = (token != NULL) ? strnlen(token, AUTH_TOKEN_MAX + 1) : 0;
	if (len == 0) {
		rv = refuse(detail, detail_len, "empty token");
		goto out;
	}
	if (len > AUTH_TOKEN_MAX) {
		rv = refuse(detail, detail_len, "token too large");
		goto out;
	}
	if (!token_shape_ok(token, len, &sig_b64_len)) {
		rv = refuse(detail, detail_len, "malformed token");
		goto out;
	}
	jws = cjose_jws_import(token, len, &cerr);
	if (jws == NULL) {
		rv = refuse(detail, detail_len, "malformed token");
		goto out;
	}
	hdr   = cjose_jws_get_protected(jws);
	alg_s = cjose_header_get(hdr, CJOSE_HDR_ALG, &cerr);
	alg   = (alg_s != NULL) ? auth_alg_from_name(alg_s, strlen(alg_s)) : 0;
	if ((alg & (jp->secret_algs | jp->jwks_algs)) == 0) {
		rv = refuse(detail, detail_len, "algorithm not allowed");
		goto out;
	}
	crit = cjose_header_get_raw(hdr, "crit", &cerr);
	if (crit != NULL) {
		free(crit);
		rv = refuse(detail, detail_len, "unsupported critical header");
		goto out;
	}
	kid = cjose_header_get(hdr, CJOSE_HDR_KID, &cerr);
	if (kid != NULL && strlen(kid) > AUTH_JWT_KID_MAX) {
		rv = refuse(detail, detail_len, "kid too long");
		goto out;
	}

	if (jp->secret != NULL && (jp->secret_algs & alg) != 0) {
		// The shared secret has no kid: GoTrue may still put one in
		// the header (GOTRUE_JWT_KEY_ID), so it is not matched.
		ok = try_keys(jp->secret, NULL, alg, jws, sig_b64_len, &tried);
	}
	if (!ok && jp->jwks != NULL && (jp->jwks_algs & alg) != 0) {
		rv = auth_jwks_acquire(jp->jwks, w, kid, &ks);
		if (rv != CM_OK) {
			if (detail != NULL && detail_len > 0) {
				snprintf(detail, detail_len,
				    "signing keys unavailable");
			}
			goto out;
		}
		ok = try_keys(ks, kid, alg, jws, sig_b64_len, &tried);
	}
	if (!ok) {
		rv = refuse(detail, detail_len,
		    tried == 0 ? (kid != NULL ? "unknown signing key"
		                              : "no key for this algorithm")
		               : "bad signature");
		goto out;
	}

	if (!cjose_jws_get_plaintext(jws, &plain, &plain_len, &cerr)) {
		rv = refuse(detail, detail_len, "malformed token");
		goto out;
	}
	rv = auth_jwt_check_claims(jp->cfg, jp->expected_iss,
	    (const char *) plain, plain_len, cm_now_ms() / 1000, out, detail,
	    detail_len);
out:
	auth_keyset_rele(ks);
	cjose_jws_release(jws);
	return (rv);
}

// Serving once tokens can be verified: always with a shared secret; with
// a JWKS only, once a key set with at least one usable key is loaded (this
// fetches it when there is none yet, so the service becomes ready without
// waiting for a first request).
static int
jwt_health(auth_provider *p, auth_worker *w, char *detail, size_t n)
{
	jwt_provider *jp = (jwt_provider *) p;
	auth_keyset  *ks = NULL;
	int           ok;

	if (jp->secret != NULL) {
		return (1);
	}
	if (auth_jwks_acquire(jp->jwks, w, NULL, &ks) != CM_OK) {
		snprintf(detail, n,
		    "no signing keys yet: the JWKS could not be fetched");
		return (0);
	}
	ok = ks->n > 0;
	if (!ok) {
		snprintf(detail, n, "the JWKS holds no usable signing key");
	}
	auth_keyset_rele(ks);
	return (ok);
}

static void
jwt_destroy(auth_provider *p)
{
	jwt_provider *jp = (jwt_provider *) p;

	if (jp == NULL) {
		return;
	}
	auth_jwks_free(jp->jwks);
	auth_keyset_rele(jp->secret);
	free(jp->expected_iss);
	free(jp->scope);
	free(jp);
}

cm_err
auth_jwt_new(const auth_config *cfg, auth_provider **out)
{
	jwt_provider *jp     = NULL;
	const char   *secret = nz(cfg->jwt_secret);
	const char   *iss;
	int           n;
	cm_err        rv;

	jp      = cm_xcalloc(1, sizeof(*jp));
	jp->cfg = cfg;
	if (secret[0] != '\0') {
		jp->secret_algs = cfg->secret_algs != 0
		    ? (cfg->secret_algs & AUTH_ALG_HS256)
		    : AUTH_SECRET_ALGS_DEFAULT;
		rv              = auth_keyset_from_secret(
		                 secret, strlen(secret), jp->secret_algs, &jp->secret);
		if (rv != CM_OK) {
			cm_error(NULL,
			    "jwt: SUPABASE_JWT_SECRET must be at "
			    "least %d bytes and allow HS256",
			    AUTH_SECRET_MIN_LEN);
			goto out;
		}
	}
	if (nz(cfg->jwks_url)[0] != '\0' || nz(cfg->oidc_issuer)[0] != '\0') {
		rv = auth_jwks_new(cfg, &jp->jwks);
		if (rv != CM_OK) {
			goto out;
		}
		jp->jwks_algs = cfg->jwks_algs != 0
		    ? (cfg->jwks_algs & AUTH_ALG_ALL)
		    : AUTH_JWKS_ALGS_DEFAULT;
	}
	if (jp->secret == NULL && jp->jwks == NULL) {
		cm_error(NULL,
		    "jwt: AUTH_PROVIDER=jwt needs AUTH_JWKS_URL, "
		    "OIDC_ISSUER or SUPABASE_JWT_SECRET");
		rv = CM_EINVAL;
		goto out;
	}
	// With discovery and no AUTH_ISSUER, tokens must come from the
	// issuer whose keys we use.
	iss = nz(cfg->issuer)[0] != '\0' ? cfg->issuer : nz(cfg->oidc_issuer);
	jp->expected_iss = cm_xstrdup(iss);
	if (nz(cfg->audience)[0] == '\0') {
		cm_warn(NULL,
		    "jwt: AUTH_AUDIENCE is not set: tokens issued for "
		    "any audience of this issuer are accepted");
	}
	if (iss[0] == '\0') {
		cm_warn(
		    NULL, "jwt: AUTH_ISSUER is not set: iss is not checked");
	}

	// Everything besides the token the decision depends on (the secret
	// itself is not written: its presence is, and it cannot change
	// while the process runs).
	n         = snprintf(NULL, 0,
	            "jwt|jwks=%s|oidc=%s|hs=%d|algs=%x/%x|iss=%s|aud=%s|claim=%s|"
	                    "leeway=%d",
	            nz(cfg->jwks_url), nz(cfg->oidc_issuer), jp->secret != NULL,
	            jp->jwks_algs, jp->secret_algs, iss, nz(cfg->audience),
	            nz(cfg->identity_claim), cfg->leeway_s);
	jp->scope = cm_xmalloc((size_t) n + 1);
	snprintf(jp->scope, (size_t) n + 1,
	    "jwt|jwks=%s|oidc=%s|hs=%d|algs=%x/%x|iss=%s|aud=%s|claim=%s|"
	    "leeway=%d",
	    nz(cfg->jwks_url), nz(cfg->oidc_issuer), jp->secret != NULL,
	    jp->jwks_algs, jp->secret_algs, iss, nz(cfg->audience),
	    nz(cfg->identity_claim), cfg->leeway_s);

	jp->base.name        = "jwt";
	jp->base.verify      = jwt_verify;
	jp->base.destroy     = jwt_destroy;
	jp->base.health      = jwt_health;
	jp->base.cache_scope = jp->scope;
	*out                 = &jp->base;
	jp                   = NULL;
	rv                   = CM_OK;
out:
	jwt_destroy(jp == NULL ? NULL : &jp->base);
	return (rv);
}
