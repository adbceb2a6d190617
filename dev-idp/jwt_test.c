// SPDX-License-Identifier: MIT
//
// Unit tests for jwt.c: sign -> verify round trip; every kind of bad
// token (tampered payload, appended characters, alg none / HS256, foreign
// kid, another key under our kid, wrong segment count, bad base64 or
// JSON, expired, not yet valid) is refused with GoTrue's message; the
// private key survives export/import; the public JWK never carries d.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjose/cjose.h>
#include <cmocka.h>

#include "common/util.h"
#include "common/xalloc.h"
#include "dev-idp/idp.h"

#define PFX "invalid JWT: unable to parse or verify signature, "
// Big enough for any token these tests build.
#define TOK_MAX 4096

typedef struct fixture {
	idp_jwt_key *key;
	int64_t      now;
} fixture;

static int
setup(void **state)
{
	fixture *f = cm_xcalloc(1, sizeof(*f));

	assert_int_equal(idp_jwt_key_generate(&f->key), CM_OK);
	f->now = cm_now_us() / 1000000;
	*state = f;
	return (0);
}

static int
teardown(void **state)
{
	fixture *f = *state;

	idp_jwt_key_free(f->key);
	free(f);
	return (0);
}

static json_t *
claims_at(int64_t now, int64_t exp)
{
	return (json_pack("{s:s, s:s, s:I, s:I, s:s}", "sub",
	    "3f1c2a9e-6a3b-4c1e-9d2f-1a2b3c4d5e6f", "aud", "authenticated",
	    "iat", (json_int_t) now, "exp", (json_int_t) exp, "session_id",
	    "0b6f5e0e-2f7c-4d2a-8a39-5c5d1f0e9a11"));
}

static char *
sign(fixture *f, json_t *claims)
{
	char *tok = NULL;

	assert_int_equal(idp_jwt_sign(f->key, claims, &tok), CM_OK);
	json_decref(claims);
	return (tok);
}

static char *
b64(const char *s)
{
	char     *out = NULL, *copy;
	size_t    n   = 0;
	cjose_err err;

	assert_true(cjose_base64url_encode(
	    (const uint8_t *) s, strlen(s), &out, &n, &err));
	copy = cm_xstrndup(out, n);
	cjose_get_dealloc()(out);
	return (copy);
}

// verify_msg() expects rejection and returns the message (static).
static const char *
verify_msg(fixture *f, const char *tok)
{
	static char msg[IDP_MSG_MAX];
	json_t     *claims = NULL;

	msg[0] = '\0';
	assert_int_not_equal(idp_jwt_verify(f->key, tok, strlen(tok), f->now,
	                         &claims, msg, sizeof(msg)),
	    CM_OK);
	assert_null(claims);
	return (msg);
}

static void
test_roundtrip(void **state)
{
	fixture  *f      = *state;
	char     *tok    = sign(f, claims_at(f->now, f->now + 60));
	json_t   *claims = NULL;
	char      msg[IDP_MSG_MAX];
	size_t    hlen;
	char     *hdr;
	uint8_t  *raw = NULL;
	size_t    rawlen;
	cjose_err err;

	assert_int_equal(idp_jwt_verify(f->key, tok, strlen(tok), f->now,
	                     &claims, msg, sizeof(msg)),
	    CM_OK);
	assert_string_equal(json_string_value(json_object_get(claims, "sub")),
	    "3f1c2a9e-6a3b-4c1e-9d2f-1a2b3c4d5e6f");
	json_decref(claims);

	// Header: exactly alg ES256, our kid, typ JWT.
	// Offsets, not pointers into tok: GCC 12 at -O3 takes pointers
	// kept across cmocka's assertions for dangling ones.
	hlen = strcspn(tok, ".");
	assert_true(cjose_base64url_decode(tok, hlen, &raw, &rawlen, &err));
	hdr = cm_xstrndup((const char *) raw, rawlen);
	cjose_get_dealloc()(raw);
	json_t *h = json_loads(hdr, 0, NULL);
	assert_non_null(h);
	assert_string_equal(
	    json_string_value(json_object_get(h, "alg")), "ES256");
	assert_string_equal(
	    json_string_value(json_object_get(h, "typ")), "JWT");
	assert_string_equal(json_string_value(json_object_get(h, "kid")),
	    idp_jwt_key_kid(f->key));
	json_decref(h);
	free(hdr);
	free(tok);
}

static void
test_tampered_payload(void **state)
{
	fixture *f   = *state;
	char    *tok = sign(f, claims_at(f->now, f->now + 60));
	char    *evil_payload, *forged;
	char     buf[TOK_MAX];
	size_t   d1 = strcspn(tok, ".");
	size_t   d2 = d1 + 1 + strcspn(tok + d1 + 1, ".");

	// Same header and signature, a payload naming another user.
	evil_payload = b64("{\"sub\":\"11111111-1111-4111-8111-111111111111\","
	                   "\"aud\":\"authenticated\",\"exp\":9999999999}");
	snprintf(buf, sizeof(buf), "%.*s.%s%s", (int) d1, tok, evil_payload,
	    tok + d2);
	assert_string_equal(verify_msg(f, buf),
	    PFX "token signature is "
	        "invalid: crypto/ecdsa: verification error");
	// One flipped character in the signature.
	forged = cm_xstrdup(tok);
	forged[strlen(forged) - 3] =
	    forged[strlen(forged) - 3] == 'A' ? 'B' : 'A';
	assert_string_equal(verify_msg(f, forged),
	    PFX "token signature is "
	        "invalid: crypto/ecdsa: verification error");
	// Characters appended to the signature (a lenient base64 decoder
	// would drop them).
	snprintf(buf, sizeof(buf), "%sx", tok);
	assert_string_equal(verify_msg(f, buf),
	    PFX "token signature is "
	        "invalid: crypto/ecdsa: verification error");
	snprintf(buf, sizeof(buf), "%sxy", tok);
	assert_string_equal(verify_msg(f, buf),
	    PFX "token signature is "
	        "invalid: crypto/ecdsa: verification error");
	free(evil_payload);
	free(forged);
	free(tok);
}

static void
test_alg_none_and_hs256(void **state)
{
	fixture *f = *state;
	char     buf[TOK_MAX];
	char    *h, *p;

	p = b64("{\"sub\":\"3f1c2a9e-6a3b-4c1e-9d2f-1a2b3c4d5e6f\","
	        "\"aud\":\"authenticated\",\"exp\":9999999999}");
	h = b64("{\"alg\":\"none\",\"typ\":\"JWT\"}");
	snprintf(buf, sizeof(buf), "%s.%s.", h, p);
	assert_string_equal(verify_msg(f, buf),
	    PFX "token signature is invalid: signing method none is invalid");
	free(h);
	h = b64("{\"alg\":\"HS256\",\"typ\":\"JWT\"}");
	snprintf(buf, sizeof(buf), "%s.%s.c2lnbmF0dXJl", h, p);
	assert_string_equal(verify_msg(f, buf),
	    PFX "token signature is invalid: signing method HS256 is invalid");
	free(h);
	h = b64("{\"typ\":\"JWT\"}");
	snprintf(buf, sizeof(buf), "%s.%s.c2lnbmF0dXJl", h, p);
	assert_string_equal(verify_msg(f, buf),
	    PFX "token is unverifiable: signing method (alg) is unavailable");
	free(h);
	free(p);
}

static void
test_foreign_key(void **state)
{
	fixture     *f = *state;
	idp_jwt_key *other;
	char        *tok    = NULL, *json;
	json_t      *claims = claims_at(f->now, f->now + 60);
	char         expect[IDP_MSG_MAX];

	// Another key, other kid.
	assert_int_equal(idp_jwt_key_generate(&other), CM_OK);
	assert_int_equal(idp_jwt_sign(other, claims, &tok), CM_OK);
	snprintf(expect, sizeof(expect),
	    PFX
	    "token is unverifiable: error "
	    "while executing keyfunc: unrecognized JWT kid %s for algorithm "
	    "ES256",
	    idp_jwt_key_kid(other));
	assert_string_equal(verify_msg(f, tok), expect);
	free(tok);
	idp_jwt_key_free(other);

	// Another key claiming our kid: the signature must fail.
	assert_int_equal(idp_jwt_key_generate(&other), CM_OK);
	json      = idp_jwt_key_private_json(other);
	json_t *j = json_loads(json, 0, NULL);
	json_object_set_new(j, "kid", json_string(idp_jwt_key_kid(f->key)));
	free(json);
	json = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	idp_jwt_key_free(other);
	assert_int_equal(idp_jwt_key_import(json, &other), CM_OK);
	free(json);
	assert_int_equal(idp_jwt_sign(other, claims, &tok), CM_OK);
	assert_string_equal(verify_msg(f, tok),
	    PFX "token signature is "
	        "invalid: crypto/ecdsa: verification error");
	free(tok);
	idp_jwt_key_free(other);
	json_decref(claims);
}

static void
test_malformed(void **state)
{
	fixture *f = *state;
	char     buf[TOK_MAX];
	char    *h, *p;
	char     msg[IDP_MSG_MAX];
	json_t  *claims = NULL;

	assert_string_equal(verify_msg(f, "abc"),
	    PFX "token is malformed: "
	        "token contains an invalid number of segments");
	assert_string_equal(verify_msg(f, "a.b"),
	    PFX "token is malformed: "
	        "token contains an invalid number of segments");
	assert_string_equal(verify_msg(f, "a.b.c.d"),
	    PFX "token is malformed: "
	        "token contains an invalid number of segments");
	assert_string_equal(verify_msg(f, "!!.e30.sig"),
	    PFX "token is "
	        "malformed: could not base64 decode header");
	h = b64("not json");
	snprintf(buf, sizeof(buf), "%s.e30.sig", h);
	assert_string_equal(verify_msg(f, buf),
	    PFX "token is malformed: "
	        "could not JSON decode header");
	free(h);
	h = b64("{\"alg\":\"ES256\"}");
	snprintf(buf, sizeof(buf), "%s.%%%%.sig", h);
	assert_string_equal(verify_msg(f, buf),
	    PFX "token is malformed: "
	        "could not base64 decode claim");
	p = b64("[1,2]");
	snprintf(buf, sizeof(buf), "%s.%s.sig", h, p);
	assert_string_equal(verify_msg(f, buf),
	    PFX "token is malformed: "
	        "could not JSON decode claim");
	free(p);
	free(h);
	assert_string_equal(verify_msg(f, ""),
	    PFX "token is malformed: "
	        "token contains an invalid number of segments");
	// Over the size limit.
	char *huge = cm_xmalloc(IDP_TOKEN_MAX + 2);
	memset(huge, 'a', IDP_TOKEN_MAX + 1);
	huge[IDP_TOKEN_MAX + 1] = '\0';
	assert_int_equal(idp_jwt_verify(f->key, huge, strlen(huge), f->now,
	                     &claims, msg, sizeof(msg)),
	    CM_ETOOBIG);
	free(huge);
}

static void
test_times(void **state)
{
	fixture *f = *state;
	char    *tok;
	json_t  *c;

	tok = sign(f, claims_at(f->now - 100, f->now - 1));
	assert_string_equal(verify_msg(f, tok),
	    PFX "token has invalid claims: token is expired");
	free(tok);
	// exp == now is expired too (leeway 0).
	tok = sign(f, claims_at(f->now - 100, f->now));
	assert_string_equal(verify_msg(f, tok),
	    PFX "token has invalid claims: token is expired");
	free(tok);
	c = claims_at(f->now, f->now + 60);
	json_object_set_new(c, "nbf", json_integer(f->now + 30));
	tok = sign(f, c);
	assert_string_equal(verify_msg(f, tok),
	    PFX "token has invalid claims: token is not valid yet");
	free(tok);
	c = claims_at(f->now, f->now + 60);
	json_object_del(c, "exp");
	tok = sign(f, c);
	assert_string_equal(verify_msg(f, tok),
	    PFX "token has invalid claims: "
	        "token is missing required claim: exp claim is required");
	free(tok);
	c = claims_at(f->now, f->now + 60);
	json_object_set_new(c, "exp", json_string("soon"));
	tok = sign(f, c);
	assert_string_equal(verify_msg(f, tok),
	    PFX "token is malformed: "
	        "could not JSON decode claim");
	free(tok);
}

static void
test_export_import(void **state)
{
	fixture     *f = *state;
	idp_jwt_key *copy;
	char        *json = idp_jwt_key_private_json(f->key);
	char        *tok;
	json_t      *claims = NULL, *pub;
	char         msg[IDP_MSG_MAX];

	assert_int_equal(idp_jwt_key_import(json, &copy), CM_OK);
	assert_string_equal(idp_jwt_key_kid(copy), idp_jwt_key_kid(f->key));
	// A token signed with the original verifies with the re-imported key.
	tok = sign(f, claims_at(f->now, f->now + 60));
	assert_int_equal(idp_jwt_verify(copy, tok, strlen(tok), f->now,
	                     &claims, msg, sizeof(msg)),
	    CM_OK);
	json_decref(claims);
	free(tok);
	idp_jwt_key_free(copy);
	free(json);

	pub = idp_jwt_key_public_jwk(f->key);
	assert_null(json_object_get(pub, "d"));
	assert_string_equal(
	    json_string_value(json_object_get(pub, "kty")), "EC");
	assert_string_equal(
	    json_string_value(json_object_get(pub, "crv")), "P-256");
	assert_string_equal(
	    json_string_value(json_object_get(pub, "alg")), "ES256");
	assert_string_equal(
	    json_string_value(json_object_get(pub, "use")), "sig");
	assert_string_equal(json_string_value(json_array_get(
	                        json_object_get(pub, "key_ops"), 0)),
	    "verify");
	assert_string_equal(json_string_value(json_object_get(pub, "kid")),
	    idp_jwt_key_kid(f->key));
	assert_non_null(json_string_value(json_object_get(pub, "x")));
	assert_non_null(json_string_value(json_object_get(pub, "y")));
	json_decref(pub);

	// Not a private EC key: refused.
	assert_int_equal(idp_jwt_key_import("{}", &copy), CM_EINVAL);
	assert_int_equal(idp_jwt_key_import("garbage", &copy), CM_EINVAL);
	assert_int_equal(
	    idp_jwt_key_import("{\"kty\":\"EC\",\"crv\":\"P-256\","
	                       "\"kid\":\"k\",\"x\":\"AA\",\"y\":\"AA\"}",
	        &copy),
	    CM_EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
		    test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_tampered_payload, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_alg_none_and_hs256, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_foreign_key, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_times, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_export_import, setup, teardown),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
