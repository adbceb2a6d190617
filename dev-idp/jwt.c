// SPDX-License-Identifier: MIT
//
// The dev IdP's signing key and its JWTs. Signing and signature checks are
// libcjose's (cjose_jws_sign / cjose_jws_verify over OpenSSL); this file
// only decides what is acceptable: a token must have three segments, a
// JSON header with alg ES256 (nothing else, in particular never "none"),
// our kid, a valid signature, and unexpired claims. Failure messages
// follow GoTrue's, which wraps golang-jwt v5's texts with the prefix
// "invalid JWT: unable to parse or verify signature, ".
#include <stdio.h>
#include <string.h>

#include <cjose/cjose.h>

#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "dev-idp/idp.h"

// GoTrue's prefix for every parse/verify failure (auth.go).
#define PREFIX "invalid JWT: unable to parse or verify signature, "
// Longest part of a foreign kid quoted back in an error message.
#define KID_QUOTE_MAX 64

struct idp_jwt_key {
	cjose_jwk_t *jwk;
	char         kid[IDP_KID_MAX];
};

// cjose allocates with its own (default: malloc) functions.
static void
cjose_free(void *p)
{
	if (p != NULL) {
		cjose_get_dealloc()(p);
	}
}

cm_err
idp_jwt_key_generate(idp_jwt_key **out)
{
	idp_jwt_key *key = NULL;
	cjose_err    err;
	cm_err       rv;

	key      = cm_xcalloc(1, sizeof(*key));
	key->jwk = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &err);
	if (key->jwk == NULL) {
		rv = CM_EINTERNAL;
		goto out;
	}
	cm_uuid4(key->kid);
	if (!cjose_jwk_set_kid(key->jwk, key->kid, strlen(key->kid), &err)) {
		rv = CM_EINTERNAL;
		goto out;
	}
	*out = key;
	key  = NULL;
	rv   = CM_OK;
out:
	idp_jwt_key_free(key);
	return (rv);
}

cm_err
idp_jwt_key_import(const char *json, idp_jwt_key **out)
{
	idp_jwt_key *key = NULL;
	json_t      *doc = NULL;
	const char  *kty, *crv, *kid, *d;
	cjose_err    err;
	cm_err       rv;

	// Check the shape ourselves first: cjose would also accept public
	// keys and other curves, which cannot sign ES256.
	rv = cm_json_parse(json, strlen(json), IDP_TOKEN_MAX, &doc, NULL, 0);
	if (rv != CM_OK) {
		rv = CM_EINVAL;
		goto out;
	}
	kty = json_string_value(json_object_get(doc, "kty"));
	crv = json_string_value(json_object_get(doc, "crv"));
	kid = json_string_value(json_object_get(doc, "kid"));
	d   = json_string_value(json_object_get(doc, "d"));
	if (kty == NULL || strcmp(kty, "EC") != 0 || crv == NULL ||
	    strcmp(crv, "P-256") != 0 || d == NULL || kid == NULL ||
	    kid[0] == '\0' || strlen(kid) >= IDP_KID_MAX) {
		rv = CM_EINVAL;
		goto out;
	}
	key      = cm_xcalloc(1, sizeof(*key));
	key->jwk = cjose_jwk_import(json, strlen(json), &err);
	if (key->jwk == NULL ||
	    cjose_jwk_get_kty(key->jwk, &err) != CJOSE_JWK_KTY_EC) {
		rv = CM_EINVAL;
		goto out;
	}
	snprintf(key->kid, sizeof(key->kid), "%s", kid);
	// Make sure cjose carries the same kid we publish.
	if (!cjose_jwk_set_kid(key->jwk, key->kid, strlen(key->kid), &err)) {
		rv = CM_EINTERNAL;
		goto out;
	}
	*out = key;
	key  = NULL;
	rv   = CM_OK;
out:
	json_decref(doc);
	idp_jwt_key_free(key);
	return (rv);
}

void
idp_jwt_key_free(idp_jwt_key *key)
{
	if (key == NULL) {
		return;
	}
	if (key->jwk != NULL) {
		cjose_jwk_release(key->jwk);
	}
	free(key);
}

const char *
idp_jwt_key_kid(const idp_jwt_key *key)
{
	return (key->kid);
}

char *
idp_jwt_key_private_json(const idp_jwt_key *key)
{
	cjose_err err;
	char     *s, *copy;

	s = cjose_jwk_to_json(key->jwk, true, &err);
	CM_ASSERT(s != NULL); // only fails on OOM for a valid key
	copy = cm_xstrdup(s);
	cjose_free(s);
	return (copy);
}

json_t *
idp_jwt_key_public_jwk(const idp_jwt_key *key)
{
	cjose_err err;
	json_t   *jwk = NULL;
	char     *s;
	cm_err    rv;

	s = cjose_jwk_to_json(key->jwk, false, &err);
	CM_ASSERT(s != NULL);
	rv = cm_json_parse(s, strlen(s), IDP_TOKEN_MAX, &jwk, NULL, 0);
	cjose_free(s);
	CM_ASSERT(rv == CM_OK && json_is_object(jwk));
	// cjose's public export has no d; delete it anyway so a future
	// library change can never publish the private key.
	json_object_del(jwk, "d");
	json_object_set_new(jwk, "kid", json_string(key->kid));
	json_object_set_new(jwk, "alg", json_string("ES256"));
	json_object_set_new(jwk, "use", json_string("sig"));
	json_object_set_new(jwk, "key_ops", json_pack("[s]", "verify"));
	return (jwk);
}

cm_err
idp_jwt_sign(const idp_jwt_key *key, const json_t *claims, char **out)
{
	cjose_header_t *hdr     = NULL;
	cjose_jws_t    *jws     = NULL;
	char           *payload = NULL;
	const char     *ser     = NULL;
	cjose_err       err;
	cm_err          rv;

	hdr = cjose_header_new(&err);
	if (hdr == NULL ||
	    !cjose_header_set(hdr, CJOSE_HDR_ALG, CJOSE_HDR_ALG_ES256, &err) ||
	    !cjose_header_set(hdr, CJOSE_HDR_KID, key->kid, &err) ||
	    !cjose_header_set(hdr, "typ", "JWT", &err)) {
		rv = CM_EINTERNAL;
		goto out;
	}
	payload = cm_json_dump(claims);
	jws     = cjose_jws_sign(
	        key->jwk, hdr, (const uint8_t *) payload, strlen(payload), &err);
	if (jws == NULL || !cjose_jws_export(jws, &ser, &err)) {
		rv = CM_EINTERNAL;
		goto out;
	}
	*out = cm_xstrdup(ser);
	rv   = CM_OK;
out:
	cjose_jws_release(jws);
	if (hdr != NULL) {
		cjose_header_release(hdr);
	}
	free(payload);
	return (rv);
}

// Length of an ES256 signature in unpadded base64url (64 bytes).
#define ES256_SIG_B64_LEN 86

// b64url_ok() checks that seg is canonical unpadded base64url: only the
// URL alphabet and a length a real encoding can have. cjose's decoder is
// lenient (it drops stray trailing characters), golang-jwt's is not; a
// token with a character appended must not verify.
static int
b64url_ok(const char *seg, size_t len)
{
	size_t i;

	if (len % 4 == 1) {
		return (0);
	}
	for (i = 0; i < len; i++) {
		char ch = seg[i];
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		        (ch >= '0' && ch <= '9') || ch == '-' || ch == '_')) {
			return (0);
		}
	}
	return (1);
}

// decode_json() base64url-decodes seg (len bytes) and parses it as a JSON
// object. Returns CM_OK and a new reference, CM_EINVAL when the base64 is
// bad (*b64_bad = 1) or the JSON is (*b64_bad = 0).
static cm_err
decode_json(const char *seg, size_t len, json_t **out, int *b64_bad)
{
	uint8_t  *raw    = NULL;
	size_t    rawlen = 0;
	json_t   *v      = NULL;
	cjose_err err;
	cm_err    rv;

	*b64_bad = 0;
	if (len == 0 || !b64url_ok(seg, len) ||
	    !cjose_base64url_decode(seg, len, &raw, &rawlen, &err)) {
		*b64_bad = 1;
		rv       = CM_EINVAL;
		goto out;
	}
	rv = cm_json_parse(
	    (const char *) raw, rawlen, IDP_TOKEN_MAX, &v, NULL, 0);
	if (rv != CM_OK || !json_is_object(v)) {
		rv = CM_EINVAL;
		goto out;
	}
	*out = v;
	v    = NULL;
	rv   = CM_OK;
out:
	json_decref(v);
	cjose_free(raw);
	return (rv);
}

// numeric_claim() reads a NumericDate claim: 1 present (value in *v), 0
// absent, -1 present but not a number.
static int
numeric_claim(const json_t *claims, const char *name, double *v)
{
	const json_t *c = json_object_get(claims, name);

	if (c == NULL || json_is_null(c)) {
		return (0);
	}
	if (!json_is_number(c)) {
		return (-1);
	}
	*v = json_number_value(c);
	return (1);
}

cm_err
idp_jwt_verify(const idp_jwt_key *key, const char *token, size_t len,
    int64_t now, json_t **claims, char *msg, size_t msg_len)
{
	json_t      *hdr = NULL, *cl = NULL;
	cjose_jws_t *jws = NULL;
	const char  *dot1, *dot2, *alg, *kid, *sig;
	size_t       siglen;
	cjose_err    err;
	double       t;
	int          b64_bad, has;
	cm_err       rv;

	if (len > IDP_TOKEN_MAX) {
		snprintf(msg, msg_len,
		    PREFIX "token is malformed: token is too "
		           "long");
		rv = CM_ETOOBIG;
		goto out;
	}
	dot1 = memchr(token, '.', len);
	dot2 = dot1 == NULL
	    ? NULL
	    : memchr(dot1 + 1, '.', len - (size_t) (dot1 + 1 - token));
	if (dot2 == NULL ||
	    memchr(dot2 + 1, '.', len - (size_t) (dot2 + 1 - token)) != NULL) {
		snprintf(msg, msg_len,
		    PREFIX "token is malformed: token "
		           "contains an invalid number of segments");
		rv = CM_EAUTH;
		goto out;
	}
	rv = decode_json(token, (size_t) (dot1 - token), &hdr, &b64_bad);
	if (rv != CM_OK) {
		snprintf(msg, msg_len, PREFIX "token is malformed: %s",
		    b64_bad ? "could not base64 decode header"
		            : "could not JSON decode header");
		rv = CM_EAUTH;
		goto out;
	}
	rv = decode_json(dot1 + 1, (size_t) (dot2 - dot1 - 1), &cl, &b64_bad);
	if (rv != CM_OK) {
		snprintf(msg, msg_len, PREFIX "token is malformed: %s",
		    b64_bad ? "could not base64 decode claim"
		            : "could not JSON decode claim");
		rv = CM_EAUTH;
		goto out;
	}
	alg = json_string_value(json_object_get(hdr, "alg"));
	if (alg == NULL || alg[0] == '\0') {
		snprintf(msg, msg_len,
		    PREFIX "token is unverifiable: signing "
		           "method (alg) is unavailable");
		rv = CM_EAUTH;
		goto out;
	}
	if (strcmp(alg, "ES256") != 0) {
		snprintf(msg, msg_len,
		    PREFIX "token signature is invalid: "
		           "signing method %.*s is invalid",
		    KID_QUOTE_MAX, alg);
		rv = CM_EAUTH;
		goto out;
	}
	kid = json_string_value(json_object_get(hdr, "kid"));
	if (kid == NULL || strcmp(kid, key->kid) != 0) {
		snprintf(msg, msg_len,
		    PREFIX
		    "token is unverifiable: error "
		    "while executing keyfunc: unrecognized JWT kid %.*s for "
		    "algorithm ES256",
		    KID_QUOTE_MAX, kid == NULL ? "" : kid);
		rv = CM_EAUTH;
		goto out;
	}
	// The header says ES256 and our kid: now let cjose check the
	// signature with our public key.
	sig    = dot2 + 1;
	siglen = len - (size_t) (sig - token);
	jws    = NULL;
	if (siglen == ES256_SIG_B64_LEN && b64url_ok(sig, siglen)) {
		jws = cjose_jws_import(token, len, &err);
	}
	if (jws == NULL || !cjose_jws_verify(jws, key->jwk, &err)) {
		snprintf(msg, msg_len,
		    PREFIX "token signature is invalid: "
		           "crypto/ecdsa: verification error");
		rv = CM_EAUTH;
		goto out;
	}
	has = numeric_claim(cl, "exp", &t);
	if (has < 0) {
		snprintf(msg, msg_len,
		    PREFIX "token is malformed: could not "
		           "JSON decode claim");
		rv = CM_EAUTH;
		goto out;
	}
	// golang-jwt does not require exp by default; we never issue a token
	// without one, so a token lacking it is not ours to accept.
	if (has == 0) {
		snprintf(msg, msg_len,
		    PREFIX "token has invalid claims: token "
		           "is missing required claim: exp claim is required");
		rv = CM_EAUTH;
		goto out;
	}
	if ((double) now >= t) {
		snprintf(msg, msg_len,
		    PREFIX "token has invalid claims: token "
		           "is expired");
		rv = CM_EAUTH;
		goto out;
	}
	has = numeric_claim(cl, "nbf", &t);
	if (has < 0 || (has > 0 && (double) now < t)) {
		snprintf(msg, msg_len,
		    PREFIX "token has invalid claims: token "
		           "is not valid yet");
		rv = CM_EAUTH;
		goto out;
	}
	*claims = cl;
	cl      = NULL;
	rv      = CM_OK;
out:
	cjose_jws_release(jws);
	json_decref(hdr);
	json_decref(cl);
	return (rv);
}
