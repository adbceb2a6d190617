// SPDX-License-Identifier: MIT
//
// Unit tests of the jwt provider (jwt.c, jwks.c). The test links jwt.c and
// jwks.c with a stub auth_http_request() (a link seam, as mosquitto's
// *_stubs.c do) that plays the IdP: it serves a JWKS or discovery document
// from memory, counts calls, and can fail, answer garbage or be slow.
//
// Tokens here are signed with cjose (quick structural cases). Every
// acceptance/refusal rule that matters is also covered by
// tests/e2e/auth_jwt_matrix.test.mjs with tokens from an independent
// signer (npm jose) against the real binary.

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <cjose/cjose.h>
#include <jansson.h>

#include "auth-service/auth.h"
#include "auth-service/jwt.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"

// Longest document the fake IdP serves.
#define FAKE_BODY_MAX 16384
// Bound of every polling loop in these tests, in ms.
#define POLL_DEADLINE_MS 15000

auth_stats   auth_g_stats;
auth_metrics auth_g_metrics; // all NULL: records nothing

// ---------------------------------------------------------------------
// Fake IdP (the link seam)
// ---------------------------------------------------------------------

static struct {
	pthread_mutex_t mu;
	char            jwks[FAKE_BODY_MAX];
	char            discovery[FAKE_BODY_MAX];
	long            status;   // HTTP status of the JWKS answer
	cm_err          rv;       // transport result (CM_OK = answered)
	long            max_age;  // Cache-Control max-age, -1 = none
	int             delay_ms; // slow IdP
	int             jwks_hits;
	int             disc_hits;
} idp = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void
idp_reset(const char *jwks)
{
	pthread_mutex_lock(&idp.mu);
	snprintf(idp.jwks, sizeof(idp.jwks), "%s", jwks);
	idp.discovery[0] = '\0';
	idp.status       = 200;
	idp.rv           = CM_OK;
	idp.max_age      = -1;
	idp.delay_ms     = 0;
	idp.jwks_hits    = 0;
	idp.disc_hits    = 0;
	pthread_mutex_unlock(&idp.mu);
}

static int
idp_hits(void)
{
	int n;

	pthread_mutex_lock(&idp.mu);
	n = idp.jwks_hits;
	pthread_mutex_unlock(&idp.mu);
	return (n);
}

static void
sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

cm_err
auth_http_request(auth_worker *w, const auth_config *cfg, const char *method,
    const char *url, const char *const *headers, const char *post_body,
    auth_http_response *resp)
{
	const char *body;
	int         delay;
	cm_err      rv;
	int disc = strstr(url, "/.well-known/openid-configuration") != NULL;

	pthread_mutex_lock(&idp.mu);
	if (disc) {
		idp.disc_hits++;
	} else {
		idp.jwks_hits++;
	}
	delay = idp.delay_ms;
	rv    = idp.rv;
	pthread_mutex_unlock(&idp.mu);
	if (delay > 0) {
		sleep_ms(delay); // the IdP is slow, not the test
	}
	if (rv != CM_OK) {
		return (rv);
	}
	pthread_mutex_lock(&idp.mu);
	body            = disc ? idp.discovery : idp.jwks;
	resp->status    = disc ? 200 : idp.status;
	resp->body      = cm_xstrdup(body);
	resp->body_len  = strlen(body);
	resp->max_age_s = disc ? -1 : idp.max_age;
	pthread_mutex_unlock(&idp.mu);
	return (CM_OK);
}

void
auth_http_response_free(auth_http_response *resp)
{
	if (resp != NULL) {
		free(resp->body);
		resp->body = NULL;
	}
}

// ---------------------------------------------------------------------
// Keys and tokens
// ---------------------------------------------------------------------

static cjose_jwk_t *ec_key;  // kid "ec-1"
static cjose_jwk_t *ec_key2; // kid "ec-2" (rotation)
static cjose_jwk_t *rsa_key; // kid "rsa-1"
static char         secret[] = "0123456789abcdef0123456789abcdef-secret";

// Public JWK JSON of key with kid/alg/use added (NULL = omitted).
static json_t *
pub_jwk(cjose_jwk_t *key, const char *kid, const char *alg, const char *use)
{
	cjose_err cerr;
	char     *s = cjose_jwk_to_json(key, false, &cerr);
	json_t   *j = json_loads(s, 0, NULL);

	free(s);
	if (kid != NULL) {
		json_object_set_new(j, "kid", json_string(kid));
	}
	if (alg != NULL) {
		json_object_set_new(j, "alg", json_string(alg));
	}
	if (use != NULL) {
		json_object_set_new(j, "use", json_string(use));
	}
	return (j);
}

// Writes {"keys":[...]} of the given JWKs (stolen) into the fake IdP.
static void
publish(int n, ...)
{
	json_t *doc = json_object(), *arr = json_array();
	va_list ap;
	char   *s;
	int     i;

	va_start(ap, n);
	for (i = 0; i < n; i++) {
		json_array_append_new(arr, va_arg(ap, json_t *));
	}
	va_end(ap);
	json_object_set_new(doc, "keys", arr);
	s = json_dumps(doc, JSON_COMPACT);
	pthread_mutex_lock(&idp.mu);
	snprintf(idp.jwks, sizeof(idp.jwks), "%s", s);
	pthread_mutex_unlock(&idp.mu);
	free(s);
	json_decref(doc);
}

static void
publish_default(void)
{
	publish(2, pub_jwk(ec_key, "ec-1", "ES256", "sig"),
	    pub_jwk(rsa_key, "rsa-1", "RS256", "sig"));
}

// Signs payload with key; header has alg and (if not NULL) kid.
static char *
mint(cjose_jwk_t *key, const char *alg, const char *kid, const char *payload)
{
	cjose_err       cerr;
	cjose_header_t *h = cjose_header_new(&cerr);
	cjose_jws_t    *jws;
	const char     *ser = NULL;
	char           *out;

	cjose_header_set(h, CJOSE_HDR_ALG, alg, &cerr);
	if (kid != NULL) {
		cjose_header_set(h, CJOSE_HDR_KID, kid, &cerr);
	}
	jws = cjose_jws_sign(
	    key, h, (const uint8_t *) payload, strlen(payload), &cerr);
	assert_non_null(jws);
	assert_true(cjose_jws_export(jws, &ser, &cerr));
	out = cm_xstrdup(ser);
	cjose_jws_release(jws);
	cjose_header_release(h);
	return (out);
}

// A payload valid now for sub, plus extra members (",\"k\":v" or "").
static char *
claims(const char *sub, const char *extra)
{
	char   *buf = cm_xmalloc(2048);
	int64_t now = cm_now_ms() / 1000;

	snprintf(buf, 2048,
	    "{\"sub\":\"%s\",\"iat\":%lld,\"exp\":%lld,\"aud\":"
	    "\"authenticated\","
	    "\"iss\":\"https://idp.test/auth/"
	    "v1\",\"email\":\"%s@example.test\""
	    "%s}",
	    sub, (long long) now, (long long) (now + 3600), sub, extra);
	return (buf);
}

static char *
b64url(const char *s)
{
	cjose_err cerr;
	char     *out = NULL;
	size_t    n;

	assert_true(cjose_base64url_encode(
	    (const uint8_t *) s, strlen(s), &out, &n, &cerr));
	return (out);
}

// ---------------------------------------------------------------------
// Provider fixtures
// ---------------------------------------------------------------------

static auth_config cfg;
static auth_worker worker;

static void
cfg_default(void)
{
	memset(&cfg, 0, sizeof(cfg));
	cfg.provider        = AUTH_PROVIDER_JWT;
	cfg.idp_timeout_ms  = 2000;
	cfg.jwks_url        = "http://idp.test/jwks.json";
	cfg.oidc_issuer     = "";
	cfg.jwt_secret      = "";
	cfg.issuer          = "https://idp.test/auth/v1";
	cfg.audience        = "authenticated";
	cfg.identity_claim  = "sub";
	cfg.leeway_s        = 30;
	cfg.jwks_cooldown_s = 30;
	cfg.jwks_max_age_s  = 600;
}

static auth_provider *
provider(void)
{
	auth_provider *p = NULL;

	assert_int_equal(auth_jwt_new(&cfg, &p), CM_OK);
	assert_non_null(p);
	assert_string_equal(p->name, "jwt");
	assert_non_null(p->cache_scope);
	return (p);
}

static cm_err
verify(auth_provider *p, const char *token, auth_result *r, char *detail)
{
	detail[0] = '\0';
	memset(r, 0, sizeof(*r));
	return (p->verify(p, &worker, token, r, detail, 128));
}

static int
setup(void **state)
{
	cjose_err            cerr;
	static const uint8_t e[] = { 0x01, 0x00, 0x01 };

	ec_key  = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &cerr);
	ec_key2 = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &cerr);
	rsa_key = cjose_jwk_create_RSA_random(2048, e, sizeof(e), &cerr);
	if (ec_key == NULL || ec_key2 == NULL || rsa_key == NULL) {
		return (-1);
	}
	return (0);
}

static int
teardown(void **state)
{
	cjose_jwk_release(ec_key);
	cjose_jwk_release(ec_key2);
	cjose_jwk_release(rsa_key);
	return (0);
}

static int
each_setup(void **state)
{
	cfg_default();
	idp_reset("");
	publish_default();
	return (0);
}

// ---------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------

static void
test_alg_names(void **state)
{
	assert_int_equal(auth_alg_from_name("RS256", 5), AUTH_ALG_RS256);
	assert_int_equal(auth_alg_from_name("ES256", 5), AUTH_ALG_ES256);
	assert_int_equal(auth_alg_from_name("HS256", 5), AUTH_ALG_HS256);
	assert_int_equal(auth_alg_from_name("none", 4), 0);
	assert_int_equal(auth_alg_from_name("NONE", 4), 0);
	assert_int_equal(auth_alg_from_name("hs256", 5), 0);
	assert_int_equal(auth_alg_from_name("HS512", 5), 0);
	assert_int_equal(auth_alg_from_name("RS2566", 6), 0);
	assert_string_equal(auth_alg_name(AUTH_ALG_PS256), "PS256");
}

static void
test_keyset_parse_filters(void **state)
{
	auth_keyset         *ks = NULL;
	char                 d[128];
	json_t              *doc = json_object(), *arr = json_array();
	json_t              *ops;
	char                *s;
	cjose_err            cerr;
	static const uint8_t e[] = { 0x01, 0x00, 0x01 };
	cjose_jwk_t         *small =
	    cjose_jwk_create_RSA_random(1024, e, sizeof(e), &cerr);

	// garbage and shapeless documents are "the IdP failed", not keys
	assert_int_equal(auth_keyset_parse("<html>", 6, AUTH_JWKS_ALGS_DEFAULT,
	                     &ks, d, sizeof(d)),
	    CM_EUNAVAIL);
	assert_int_equal(auth_keyset_parse("{\"keys\":{}}", 11,
	                     AUTH_JWKS_ALGS_DEFAULT, &ks, d, sizeof(d)),
	    CM_EUNAVAIL);
	assert_int_equal(auth_keyset_parse("[]", 2, AUTH_JWKS_ALGS_DEFAULT,
	                     &ks, d, sizeof(d)),
	    CM_EUNAVAIL);
	assert_null(ks);

	json_array_append_new(arr, pub_jwk(ec_key, "enc", NULL, "enc"));
	json_array_append_new(arr, pub_jwk(rsa_key, "rsa-hs", "HS256", NULL));
	json_array_append_new(arr, pub_jwk(ec_key, "ec-rs", "RS256", NULL));
	ops = pub_jwk(ec_key, "ops-sign", NULL, NULL);
	json_object_set_new(ops, "key_ops", json_pack("[s]", "sign"));
	json_array_append_new(arr, ops);
	json_array_append_new(arr, pub_jwk(small, "rsa-1024", NULL, NULL));
	json_array_append_new(arr,
	    json_pack("{s:s,s:s,s:s}", "kty", "oct", "kid", "oct-1", "k",
	        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"));
	json_array_append_new(
	    arr, json_pack("{s:s,s:s}", "kty", "OKP", "kid", "okp"));
	json_array_append_new(arr, json_string("not a key"));
	// usable: no use/alg (allowed), an RSA key, an EC key with its alg
	json_array_append_new(arr, pub_jwk(ec_key, "ec-ok", "ES256", "sig"));
	json_array_append_new(arr, pub_jwk(rsa_key, "rsa-ok", NULL, NULL));
	ops = pub_jwk(ec_key2, "ops-verify", NULL, NULL);
	json_object_set_new(ops, "key_ops", json_pack("[s]", "verify"));
	json_array_append_new(arr, ops);
	json_object_set_new(doc, "keys", arr);
	s = json_dumps(doc, JSON_COMPACT);

	assert_int_equal(auth_keyset_parse(s, strlen(s),
	                     AUTH_JWKS_ALGS_DEFAULT, &ks, d, sizeof(d)),
	    CM_OK);
	assert_int_equal(ks->n, 3);
	assert_non_null(auth_keyset_find(ks, "ec-ok"));
	assert_int_equal(auth_keyset_find(ks, "ec-ok")->algs, AUTH_ALG_ES256);
	assert_int_equal(auth_keyset_find(ks, "ec-ok")->sig_len, 64);
	assert_int_equal(auth_keyset_find(ks, "rsa-ok")->algs,
	    AUTH_ALG_RS256 | AUTH_ALG_RS384 | AUTH_ALG_RS512 | AUTH_ALG_PS256);
	assert_int_equal(auth_keyset_find(ks, "rsa-ok")->sig_len, 256);
	assert_non_null(auth_keyset_find(ks, "ops-verify"));
	assert_null(auth_keyset_find(ks, "oct-1"));
	assert_null(auth_keyset_find(ks, "rsa-1024"));
	assert_null(auth_keyset_find(ks, "rsa-hs"));
	auth_keyset_rele(ks);
	ks = NULL;

	// oct keys only when HS256 is explicitly allowed for JWKS keys
	assert_int_equal(
	    auth_keyset_parse(s, strlen(s),
	        AUTH_JWKS_ALGS_DEFAULT | AUTH_ALG_HS256, &ks, d, sizeof(d)),
	    CM_OK);
	assert_non_null(auth_keyset_find(ks, "oct-1"));
	assert_int_equal(auth_keyset_find(ks, "oct-1")->algs, AUTH_ALG_HS256);
	// ...and an RSA key naming HS256 is still never an HMAC key
	assert_null(auth_keyset_find(ks, "rsa-hs"));
	auth_keyset_rele(ks);

	// Key material that is not strict base64url is skipped, not handed
	// to cjose: its decoder assert()s (aborts the service) on "d=GhyVm"
	// and on lengths of 4k + 1 (found by fuzz_jwt).
	{
		static const char *bad[] = { "d=GhyVm", "abcde", "ab+/", "a b",
			"MDEy=" };
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			char doc2[256];
			ks = NULL;
			snprintf(doc2, sizeof(doc2),
			    "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"b\","
			    "\"k\":\"%s\"},{\"kty\":\"EC\",\"crv\":"
			    "\"P-256\",\"kid\":\"e\",\"x\":\"%s\",\"y\":\"%"
			    "s\"}]}",
			    bad[i], bad[i], bad[i]);
			assert_int_equal(
			    auth_keyset_parse(doc2, strlen(doc2),
			        AUTH_JWKS_ALGS_DEFAULT | AUTH_ALG_HS256, &ks,
			        d, sizeof(d)),
			    CM_OK);
			assert_int_equal(ks->n, 0);
			auth_keyset_rele(ks);
		}
	}

	// an empty set is valid (HS256-only Supabase serves {"keys":[]})
	ks = NULL;
	assert_int_equal(auth_keyset_parse("{\"keys\":[]}", 11,
	                     AUTH_JWKS_ALGS_DEFAULT, &ks, d, sizeof(d)),
	    CM_OK);
	assert_int_equal(ks->n, 0);
	auth_keyset_rele(ks);
	free(s);
	json_decref(doc);
	cjose_jwk_release(small);
}

static void
test_private_parts_never_imported(void **state)
{
	cjose_err    cerr;
	auth_keyset *ks = NULL;
	char         d[128];
	char        *priv = cjose_jwk_to_json(ec_key, true, &cerr);
	char         doc[4096];
	char        *out;

	assert_non_null(strstr(priv, "\"d\""));
	snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", priv);
	assert_int_equal(auth_keyset_parse(doc, strlen(doc),
	                     AUTH_JWKS_ALGS_DEFAULT, &ks, d, sizeof(d)),
	    CM_OK);
	assert_int_equal(ks->n, 1);
	out = cjose_jwk_to_json(ks->keys[0].jwk, true, &cerr);
	assert_null(strstr(out, "\"d\""));
	free(out);
	free(priv);
	auth_keyset_rele(ks);
}

static void
test_config_errors(void **state)
{
	auth_provider *p = NULL;

	cfg.jwks_url = "";
	assert_int_equal(auth_jwt_new(&cfg, &p), CM_EINVAL);
	cfg.jwt_secret = "short";
	assert_int_equal(auth_jwt_new(&cfg, &p), CM_EINVAL);
	cfg.jwt_secret = "";
	cfg.jwks_url   = "ftp://idp.test/jwks";
	assert_int_equal(auth_jwt_new(&cfg, &p), CM_EINVAL);
	assert_null(p);
}

static void
test_es256_rs256_accepted(void **state)
{
	auth_provider *p = provider();
	auth_result    r;
	char           d[128];
	char          *pl = claims("user-1",
	             ",\"scope\":\"read write\","
	                      "\"session_id\":\"s-1\"");
	char          *es = mint(ec_key, "ES256", "ec-1", pl);
	char          *rs = mint(rsa_key, "RS256", "rsa-1", pl);

	assert_int_equal(verify(p, es, &r, d), CM_OK);
	assert_string_equal(r.identity, "user-1");
	assert_string_equal(r.email, "user-1@example.test");
	assert_string_equal(r.scopes, "read write");
	assert_string_equal(r.session_id, "s-1");
	assert_true(r.expires_at > cm_now_ms() / 1000);
	assert_int_equal(idp_hits(), 1);
	assert_int_equal(verify(p, rs, &r, d), CM_OK);
	assert_string_equal(r.identity, "user-1");
	assert_int_equal(verify(p, es, &r, d), CM_OK);
	// keys are cached: one fetch for all of it
	assert_int_equal(idp_hits(), 1);
	free(es);
	free(rs);
	free(pl);
	p->destroy(p);
}

static void
test_malformed_tokens(void **state)
{
	auth_provider *p = provider();
	auth_result    r;
	char           d[128];
	char          *pl  = claims("user-1", "");
	char          *es  = mint(ec_key, "ES256", "ec-1", pl);
	char          *big = cm_xmalloc(AUTH_TOKEN_MAX + 2);
	char           buf[4096];
	const char    *bad[] = { "", "abc", "a.b", "a.b.c.d", "a..c", ".b.c",
		   "a.b.", "a.b.c=", "a b.c.d", "a.b.c\x01", "eyJ.eyJ.+/+/" };
	size_t         i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(verify(p, bad[i], &r, d), CM_EAUTH);
		assert_string_equal(r.identity, "");
	}
	memset(big, 'a', AUTH_TOKEN_MAX + 1);
	big[AUTH_TOKEN_MAX + 1] = '\0';
	assert_int_equal(verify(p, big, &r, d), CM_EAUTH);
	assert_string_equal(d, "token too large");
	// a valid token with a flipped signature byte
	snprintf(buf, sizeof(buf), "%s", es);
	buf[strlen(buf) - 5] = buf[strlen(buf) - 5] == 'A' ? 'B' : 'A';
	assert_int_equal(verify(p, buf, &r, d), CM_EAUTH);
	assert_string_equal(d, "bad signature");
	// signature of the wrong length (one byte more)
	snprintf(buf, sizeof(buf), "%sAA", es);
	assert_int_equal(verify(p, buf, &r, d), CM_EAUTH);
	// the payload swapped for another (signature no longer matches)
	{
		char *pl2  = claims("admin", "");
		char *b    = b64url(pl2);
		char *dot1 = strchr(es, '.');
		char *dot2 = strchr(dot1 + 1, '.');
		snprintf(buf, sizeof(buf), "%.*s.%s%s", (int) (dot1 - es), es,
		    b, dot2);
		assert_int_equal(verify(p, buf, &r, d), CM_EAUTH);
		assert_string_equal(d, "bad signature");
		free(b);
		free(pl2);
	}
	assert_int_equal(verify(p, es, &r, d), CM_OK);
	free(big);
	free(es);
	free(pl);
	p->destroy(p);
}

static void
test_header_rules(void **state)
{
	auth_provider *p;
	auth_result    r;
	char           d[128];
	char          *pl = claims("user-1", "");
	char          *h, *b, *tok;
	char           buf[4096];
	cjose_err      cerr;
	cjose_jwk_t   *pubkey_secret;
	char          *rsa_pub = cjose_jwk_to_json(rsa_key, false, &cerr);

	cfg.jwt_secret = secret;
	p              = provider();
	b              = b64url(pl);

	// alg none, with an empty or a dummy signature
	h = b64url("{\"alg\":\"none\",\"kid\":\"ec-1\"}");
	snprintf(buf, sizeof(buf), "%s.%s.", h, b);
	assert_int_equal(verify(p, buf, &r, d), CM_EAUTH);
	snprintf(buf, sizeof(buf), "%s.%s.AAAA", h, b);
	assert_int_equal(verify(p, buf, &r, d), CM_EAUTH);
	assert_string_equal(d, "algorithm not allowed");
	free(h);
	// alg missing, alg of the wrong type, alg we do not implement
	h = b64url("{\"kid\":\"ec-1\"}");
	snprintf(buf, sizeof(buf), "%s.%s.AAAA", h, b);
	assert_int_equal(verify(p, buf, &r, d), CM_EAUTH);
	free(h);
	h = b64url("{\"alg\":256,\"kid\":\"ec-1\"}");
	snprintf(buf, sizeof(buf), "%s.%s.AAAA", h, b);
	assert_int_equal(verify(p, buf, &r, d), CM_EAUTH);
	free(h);
	h = b64url("{\"alg\":\"ES512\",\"kid\":\"ec-1\"}");
	snprintf(buf, sizeof(buf), "%s.%s.AAAA", h, b);
	assert_int_equal(verify(p, buf, &r, d), CM_EAUTH);
	assert_string_equal(d, "algorithm not allowed");
	free(h);
	// header is not JSON
	h = b64url("{\"alg\":\"ES256\"");
	snprintf(buf, sizeof(buf), "%s.%s.AAAA", h, b);
	assert_int_equal(verify(p, buf, &r, d), CM_EAUTH);
	free(h);

	// alg confusion: HS256 signed with the RSA public key's bytes, with
	// the RSA key's kid, must not verify against the RSA key
	pubkey_secret = cjose_jwk_create_oct_spec(
	    (const uint8_t *) rsa_pub, strlen(rsa_pub), &cerr);
	tok = mint(pubkey_secret, "HS256", "rsa-1", pl);
	assert_int_equal(verify(p, tok, &r, d), CM_EAUTH);
	assert_string_equal(d, "bad signature");
	free(tok);
	// ES256 token presented under the RSA key's kid
	tok = mint(ec_key, "ES256", "rsa-1", pl);
	assert_int_equal(verify(p, tok, &r, d), CM_EAUTH);
	free(tok);
	// RS256 token under the EC key's kid: that key only does ES256
	tok = mint(rsa_key, "RS256", "ec-1", pl);
	assert_int_equal(verify(p, tok, &r, d), CM_EAUTH);
	free(tok);
	p->destroy(p);

	// without a secret configured HS256 is not an algorithm at all
	cfg.jwt_secret = "";
	p              = provider();
	tok            = mint(pubkey_secret, "HS256", "rsa-1", pl);
	assert_int_equal(verify(p, tok, &r, d), CM_EAUTH);
	assert_string_equal(d, "algorithm not allowed");
	free(tok);

	// crit header is refused even with a good signature
	{
		cjose_header_t *hd = cjose_header_new(&cerr);
		cjose_jws_t    *jws;
		const char     *ser;
		cjose_header_set(hd, CJOSE_HDR_ALG, "ES256", &cerr);
		cjose_header_set(hd, CJOSE_HDR_KID, "ec-1", &cerr);
		cjose_header_set_raw(hd, "crit", "[\"exp\"]", &cerr);
		cjose_header_set_raw(hd, "exp", "1", &cerr);
		jws = cjose_jws_sign(
		    ec_key, hd, (const uint8_t *) pl, strlen(pl), &cerr);
		assert_non_null(jws);
		assert_true(cjose_jws_export(jws, &ser, &cerr));
		assert_int_equal(verify(p, ser, &r, d), CM_EAUTH);
		assert_string_equal(d, "unsupported critical header");
		cjose_jws_release(jws);
		cjose_header_release(hd);
	}
	// a kid longer than the limit
	{
		char kid[AUTH_JWT_KID_MAX + 2];
		memset(kid, 'k', sizeof(kid) - 1);
		kid[sizeof(kid) - 1] = '\0';
		tok                  = mint(ec_key, "ES256", kid, pl);
		assert_int_equal(verify(p, tok, &r, d), CM_EAUTH);
		assert_string_equal(d, "kid too long");
		free(tok);
	}
	cjose_jwk_release(pubkey_secret);
	free(rsa_pub);
	free(b);
	free(pl);
	p->destroy(p);
}

static void
test_shared_secret(void **state)
{
	auth_provider *p;
	auth_result    r;
	char           d[128];
	cjose_err      cerr;
	char          *pl = claims("user-hs", "");
	cjose_jwk_t   *k  = cjose_jwk_create_oct_spec(
	       (const uint8_t *) secret, strlen(secret), &cerr);
	cjose_jwk_t *wrong = cjose_jwk_create_oct_spec(
	    (const uint8_t *) "another-secret-another-secret-xx", 32, &cerr);
	char *tok, *tok2, *tok3;

	cfg.jwks_url   = "";
	cfg.jwt_secret = secret;
	p              = provider();
	tok            = mint(k, "HS256", NULL, pl);
	tok2           = mint(wrong, "HS256", NULL, pl);
	tok3           = mint(k, "HS256", "some-kid", pl); // GoTrue key id
	assert_int_equal(verify(p, tok, &r, d), CM_OK);
	assert_string_equal(r.identity, "user-hs");
	assert_int_equal(verify(p, tok3, &r, d), CM_OK);
	assert_int_equal(verify(p, tok2, &r, d), CM_EAUTH);
	assert_string_equal(d, "bad signature");
	// asymmetric tokens have no key source here
	free(tok2);
	tok2 = mint(ec_key, "ES256", "ec-1", pl);
	assert_int_equal(verify(p, tok2, &r, d), CM_EAUTH);
	assert_string_equal(d, "algorithm not allowed");
	assert_int_equal(idp_hits(), 0);
	p->destroy(p);
	free(tok);
	free(tok2);
	free(tok3);
	free(pl);
	cjose_jwk_release(k);
	cjose_jwk_release(wrong);
}

static void
test_unknown_kid_refetch_once(void **state)
{
	auth_provider *p = provider();
	auth_result    r;
	char           d[128];
	char          *pl    = claims("user-1", "");
	char          *good  = mint(ec_key, "ES256", "ec-1", pl);
	char          *k1    = mint(ec_key2, "ES256", "nope-1", pl);
	char          *k2    = mint(ec_key2, "ES256", "nope-2", pl);
	char          *nokid = mint(ec_key2, "ES256", NULL, pl);
	int            i;

	assert_int_equal(verify(p, good, &r, d), CM_OK);
	assert_int_equal(idp_hits(), 1);
	assert_int_equal(verify(p, k1, &r, d), CM_EAUTH);
	assert_string_equal(d, "unknown signing key");
	assert_int_equal(idp_hits(), 2); // refetched exactly once
	for (i = 0; i < 20; i++) {
		assert_int_equal(verify(p, k1, &r, d), CM_EAUTH);
		assert_int_equal(verify(p, k2, &r, d), CM_EAUTH);
	}
	assert_int_equal(idp_hits(), 2); // cooldown + negative cache
	// a token without kid never triggers a refetch; it is tried against
	// the compatible keys and fails on the signature
	assert_int_equal(verify(p, nokid, &r, d), CM_EAUTH);
	assert_string_equal(d, "bad signature");
	assert_int_equal(idp_hits(), 2);
	assert_int_equal(verify(p, good, &r, d), CM_OK);
	free(good);
	free(k1);
	free(k2);
	free(nokid);
	free(pl);
	p->destroy(p);
}

static void
test_rotation(void **state)
{
	auth_provider *p = provider();
	auth_result    r;
	char           d[128];
	char          *pl    = claims("user-1", "");
	char          *old   = mint(ec_key, "ES256", "ec-1", pl);
	char          *neu   = mint(ec_key2, "ES256", "ec-2", pl);
	char          *nokid = mint(ec_key2, "ES256", NULL, pl);

	assert_int_equal(verify(p, old, &r, d), CM_OK);
	assert_int_equal(idp_hits(), 1);
	publish(2, pub_jwk(ec_key, "ec-1", "ES256", "sig"),
	    pub_jwk(ec_key2, "ec-2", "ES256", "sig"));
	assert_int_equal(verify(p, neu, &r, d), CM_OK);
	assert_int_equal(idp_hits(), 2);
	assert_int_equal(verify(p, old, &r, d), CM_OK);
	assert_int_equal(verify(p, neu, &r, d), CM_OK);
	// no kid: every compatible key is tried
	assert_int_equal(verify(p, nokid, &r, d), CM_OK);
	assert_int_equal(idp_hits(), 2);
	free(old);
	free(neu);
	free(nokid);
	free(pl);
	p->destroy(p);
}

static void
test_idp_down_at_start(void **state)
{
	auth_provider *p = provider();
	auth_result    r;
	char           d[128];
	char          *pl  = claims("user-1", "");
	char          *tok = mint(ec_key, "ES256", "ec-1", pl);
	int64_t        deadline;

	idp.rv = CM_EUNAVAIL;
	assert_int_equal(verify(p, tok, &r, d), CM_EUNAVAIL);
	assert_string_equal(r.identity, "");
	assert_int_equal(idp_hits(), 1);
	// within the retry backoff nobody asks the IdP again
	assert_int_equal(verify(p, tok, &r, d), CM_EUNAVAIL);
	assert_int_equal(idp_hits(), 1);
	// the IdP answers garbage, then a 500
	pthread_mutex_lock(&idp.mu);
	idp.rv = CM_OK;
	snprintf(idp.jwks, sizeof(idp.jwks), "<html>oops</html>");
	pthread_mutex_unlock(&idp.mu);
	deadline = cm_mono_ms() + POLL_DEADLINE_MS;
	while (idp_hits() < 2 && cm_mono_ms() < deadline) {
		assert_int_not_equal(verify(p, tok, &r, d), CM_OK);
		sleep_ms(50);
	}
	assert_int_equal(idp_hits(), 2);
	assert_int_equal(verify(p, tok, &r, d), CM_EUNAVAIL);
	// back: accepted after the backoff
	publish_default();
	deadline = cm_mono_ms() + POLL_DEADLINE_MS;
	while (verify(p, tok, &r, d) != CM_OK && cm_mono_ms() < deadline) {
		sleep_ms(50);
	}
	assert_int_equal(verify(p, tok, &r, d), CM_OK);
	assert_int_equal(idp_hits(), 3);
	free(tok);
	free(pl);
	p->destroy(p);
}

static void
test_keep_last_good_and_max_age(void **state)
{
	auth_provider *p;
	auth_result    r;
	char           d[128];
	char          *pl  = claims("user-1", "");
	char          *tok = mint(ec_key, "ES256", "ec-1", pl);
	int64_t        deadline;

	cfg.jwks_max_age_s = 1; // stale after one second
	p                  = provider();
	assert_int_equal(verify(p, tok, &r, d), CM_OK);
	assert_int_equal(idp_hits(), 1);
	assert_int_equal(verify(p, tok, &r, d), CM_OK);
	assert_int_equal(idp_hits(), 1);
	// the IdP starts answering garbage: the next request after expiry
	// refetches, fails, and still verifies with the last good keys
	pthread_mutex_lock(&idp.mu);
	snprintf(idp.jwks, sizeof(idp.jwks), "{\"keys\":\"garbage\"}");
	pthread_mutex_unlock(&idp.mu);
	deadline = cm_mono_ms() + POLL_DEADLINE_MS;
	while (idp_hits() < 2 && cm_mono_ms() < deadline) {
		assert_int_equal(verify(p, tok, &r, d), CM_OK);
		sleep_ms(50);
	}
	assert_int_equal(idp_hits(), 2);
	assert_int_equal(verify(p, tok, &r, d), CM_OK);
	// down: same
	idp.rv   = CM_EUNAVAIL;
	deadline = cm_mono_ms() + POLL_DEADLINE_MS;
	while (idp_hits() < 3 && cm_mono_ms() < deadline) {
		assert_int_equal(verify(p, tok, &r, d), CM_OK);
		sleep_ms(50);
	}
	assert_int_equal(idp_hits(), 3);
	// the IdP drops the key (publishes only the RSA key): after the next
	// refresh the EC token is refused
	idp.rv = CM_OK;
	publish(1, pub_jwk(rsa_key, "rsa-1", "RS256", "sig"));
	deadline = cm_mono_ms() + POLL_DEADLINE_MS;
	while (verify(p, tok, &r, d) == CM_OK && cm_mono_ms() < deadline) {
		sleep_ms(50);
	}
	assert_int_equal(verify(p, tok, &r, d), CM_EAUTH);
	free(tok);
	free(pl);
	p->destroy(p);
}

static void
test_cache_control_capped(void **state)
{
	auth_provider *p;
	auth_result    r;
	char           d[128];
	char          *pl  = claims("user-1", "");
	char          *tok = mint(ec_key, "ES256", "ec-1", pl);
	int64_t        deadline;

	// the IdP says one day; AUTH_JWKS_MAX_AGE=1 caps it
	cfg.jwks_max_age_s = 1;
	idp.max_age        = 86400;
	p                  = provider();
	assert_int_equal(verify(p, tok, &r, d), CM_OK);
	deadline = cm_mono_ms() + POLL_DEADLINE_MS;
	while (idp_hits() < 2 && cm_mono_ms() < deadline) {
		assert_int_equal(verify(p, tok, &r, d), CM_OK);
		sleep_ms(50);
	}
	assert_int_equal(idp_hits(), 2);
	p->destroy(p);

	// the IdP says max-age=600, below the cap: no refetch for a while
	idp_reset("");
	publish_default();
	cfg.jwks_max_age_s = 600;
	idp.max_age        = 600;
	p                  = provider();
	assert_int_equal(verify(p, tok, &r, d), CM_OK);
	assert_int_equal(verify(p, tok, &r, d), CM_OK);
	assert_int_equal(idp_hits(), 1);
	free(tok);
	free(pl);
	p->destroy(p);
}

// Polls verify() (which must keep succeeding from the last good keys)
// until the fake IdP has seen n JWKS requests; returns when that happened.
static int64_t
poll_hits(auth_provider *p, const char *tok, int n)
{
	auth_result r;
	char        d[128];
	int64_t     deadline = cm_mono_ms() + POLL_DEADLINE_MS;

	while (idp_hits() < n && cm_mono_ms() < deadline) {
		assert_int_equal(verify(p, tok, &r, d), CM_OK);
		sleep_ms(20);
	}
	assert_int_equal(idp_hits(), n);
	return (cm_mono_ms());
}

static void
test_refresh_backoff_grows(void **state)
{
	auth_provider *p;
	auth_result    r;
	char           d[128];
	char          *pl  = claims("user-1", "");
	char          *tok = mint(ec_key, "ES256", "ec-1", pl);
	int64_t        t2, t3, t4;

	cfg.jwks_max_age_s = 1;
	p                  = provider();
	assert_int_equal(verify(p, tok, &r, d), CM_OK);
	idp.rv = CM_EUNAVAIL; // down while we hold good keys
	t2     = poll_hits(p, tok, 2);
	t3     = poll_hits(p, tok, 3);
	t4     = poll_hits(p, tok, 4);
	// 2 s after the first failure, 4 s after the second
	assert_true(t3 - t2 >= AUTH_JWKS_RETRY_MS - 100);
	assert_true(t4 - t3 >= 2 * AUTH_JWKS_RETRY_MS - 100);
	free(tok);
	free(pl);
	p->destroy(p);
}

typedef struct flight_arg {
	auth_provider *p;
	const char    *token;
	cm_err         rv;
} flight_arg;

static void *
flight_main(void *a)
{
	flight_arg *fa = a;
	auth_worker w  = { NULL, 0 };
	auth_result r;
	char        d[128];

	fa->rv = fa->p->verify(fa->p, &w, fa->token, &r, d, sizeof(d));
	return (NULL);
}

#define FLIGHT_THREADS 16

static void
test_single_flight(void **state)
{
	auth_provider *p = provider();
	pthread_t      th[FLIGHT_THREADS];
	flight_arg     fa[FLIGHT_THREADS];
	char          *toks[FLIGHT_THREADS];
	auth_result    r;
	char           d[128];
	char          *pl  = claims("user-1", "");
	char          *old = mint(ec_key, "ES256", "ec-1", pl);
	int            i;

	// 1) cold start: many first requests, one fetch
	idp.delay_ms = 200;
	for (i = 0; i < FLIGHT_THREADS; i++) {
		char sub[32];
		snprintf(sub, sizeof(sub), "user-%d", i);
		free(pl);
		pl      = claims(sub, "");
		toks[i] = mint(ec_key, "ES256", "ec-1", pl);
		fa[i]   = (flight_arg) { p, toks[i], CM_EINTERNAL };
	}
	for (i = 0; i < FLIGHT_THREADS; i++) {
		pthread_create(&th[i], NULL, flight_main, &fa[i]);
	}
	for (i = 0; i < FLIGHT_THREADS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(fa[i].rv, CM_OK);
		free(toks[i]);
	}
	assert_int_equal(idp_hits(), 1);

	// 2) rotation: many tokens with a new kid at once, one refetch
	publish(2, pub_jwk(ec_key, "ec-1", "ES256", "sig"),
	    pub_jwk(ec_key2, "ec-2", "ES256", "sig"));
	for (i = 0; i < FLIGHT_THREADS; i++) {
		char sub[32];
		snprintf(sub, sizeof(sub), "new-%d", i);
		free(pl);
		pl      = claims(sub, "");
		toks[i] = mint(ec_key2, "ES256", "ec-2", pl);
		fa[i]   = (flight_arg) { p, toks[i], CM_EINTERNAL };
	}
	for (i = 0; i < FLIGHT_THREADS; i++) {
		pthread_create(&th[i], NULL, flight_main, &fa[i]);
	}
	for (i = 0; i < FLIGHT_THREADS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(fa[i].rv, CM_OK);
		free(toks[i]);
	}
	assert_int_equal(idp_hits(), 2);
	assert_int_equal(verify(p, old, &r, d), CM_OK);
	free(old);
	free(pl);
	p->destroy(p);
}

static void
test_oidc_discovery(void **state)
{
	auth_provider *p;
	auth_result    r;
	char           d[128];
	char          *pl;
	char          *tok;
	int64_t        now = cm_now_ms() / 1000;
	char           payload[512];

	cfg.jwks_url    = "";
	cfg.issuer      = "";
	cfg.oidc_issuer = "https://op.test";
	snprintf(payload, sizeof(payload),
	    "{\"sub\":\"svc\",\"iss\":\"https://op.test\",\"aud\":"
	    "\"authenticated\",\"exp\":%lld}",
	    (long long) (now + 300));
	tok = mint(ec_key, "ES256", "ec-1", payload);
	// the discovery document names another issuer: refused as unusable
	snprintf(idp.discovery, sizeof(idp.discovery),
	    "{\"issuer\":\"https://evil.test\",\"jwks_uri\":"
	    "\"https://evil.test/jwks\"}");
	p = provider();
	assert_int_equal(verify(p, tok, &r, d), CM_EUNAVAIL);
	assert_int_equal(idp.disc_hits, 1);
	assert_int_equal(idp_hits(), 0);
	p->destroy(p);

	// an https issuer may not hand us an http jwks_uri
	idp_reset("");
	publish_default();
	snprintf(idp.discovery, sizeof(idp.discovery),
	    "{\"issuer\":\"https://op.test\",\"jwks_uri\":"
	    "\"http://op.test/jwks\"}");
	p = provider();
	assert_int_equal(verify(p, tok, &r, d), CM_EUNAVAIL);
	assert_int_equal(idp_hits(), 0);
	p->destroy(p);

	idp_reset("");
	publish_default();
	snprintf(idp.discovery, sizeof(idp.discovery),
	    "{\"issuer\":\"https://op.test\",\"jwks_uri\":"
	    "\"https://op.test/jwks\"}");
	p = provider();
	assert_int_equal(verify(p, tok, &r, d), CM_OK);
	assert_string_equal(r.identity, "svc");
	assert_int_equal(idp.disc_hits, 1);
	assert_int_equal(idp_hits(), 1);
	// iss defaults to OIDC_ISSUER: a token of another issuer is refused
	pl = claims("user-1", ""); // iss https://idp.test/auth/v1
	free(tok);
	tok = mint(ec_key, "ES256", "ec-1", pl);
	assert_int_equal(verify(p, tok, &r, d), CM_EAUTH);
	assert_string_equal(d, "wrong issuer");
	free(tok);
	free(pl);
	p->destroy(p);
}

// Claim rules, straight on auth_jwt_check_claims().
static cm_err
check(const char *payload, int64_t now, auth_result *r, char *d)
{
	memset(r, 0, sizeof(*r));
	d[0] = '\0';
	return (auth_jwt_check_claims(
	    &cfg, cfg.issuer, payload, strlen(payload), now, r, d, 128));
}

static void
test_claims(void **state)
{
	auth_result   r;
	char          d[128];
	char          p[1024];
	const int64_t now = 1700000000;
	char          longid[AUTH_ID_MAX + 8];

#define BASE "\"iss\":\"https://idp.test/auth/v1\",\"aud\":\"authenticated\""
	snprintf(p, sizeof(p), "{\"sub\":\"u\",%s,\"exp\":%lld}", BASE,
	    (long long) now + 10);
	assert_int_equal(check(p, now, &r, d), CM_OK);
	assert_string_equal(r.identity, "u");
	assert_int_equal(r.expires_at, now + 10);

	// exp: required, numeric, leeway
	snprintf(p, sizeof(p), "{\"sub\":\"u\",%s}", BASE);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	assert_string_equal(d, "exp claim missing");
	snprintf(p, sizeof(p), "{\"sub\":\"u\",%s,\"exp\":\"%lld\"}", BASE,
	    (long long) now + 10);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	snprintf(p, sizeof(p), "{\"sub\":\"u\",%s,\"exp\":true}", BASE);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	snprintf(p, sizeof(p), "{\"sub\":\"u\",%s,\"exp\":1e300}", BASE);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	snprintf(p, sizeof(p), "{\"sub\":\"u\",%s,\"exp\":%lld}", BASE,
	    (long long) now - 31);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	assert_string_equal(d, "token expired");
	snprintf(p, sizeof(p), "{\"sub\":\"u\",%s,\"exp\":%lld}", BASE,
	    (long long) now - 29);
	assert_int_equal(check(p, now, &r, d), CM_OK); // within leeway
	snprintf(p, sizeof(p), "{\"sub\":\"u\",%s,\"exp\":%lld.5}", BASE,
	    (long long) now + 100);
	assert_int_equal(check(p, now, &r, d), CM_OK);
	assert_int_equal(r.expires_at, now + 100);

	// nbf / iat with leeway 30
	snprintf(p, sizeof(p), "{\"sub\":\"u\",%s,\"exp\":%lld,\"nbf\":%lld}",
	    BASE, (long long) now + 600, (long long) now + 31);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	assert_string_equal(d, "token not yet valid (nbf)");
	snprintf(p, sizeof(p), "{\"sub\":\"u\",%s,\"exp\":%lld,\"nbf\":%lld}",
	    BASE, (long long) now + 600, (long long) now + 25);
	assert_int_equal(check(p, now, &r, d), CM_OK);
	snprintf(p, sizeof(p), "{\"sub\":\"u\",%s,\"exp\":%lld,\"nbf\":null}",
	    BASE, (long long) now + 600);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	snprintf(p, sizeof(p), "{\"sub\":\"u\",%s,\"exp\":%lld,\"iat\":%lld}",
	    BASE, (long long) now + 600, (long long) now + 31);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	assert_string_equal(d, "token issued in the future (iat)");
	snprintf(p, sizeof(p), "{\"sub\":\"u\",%s,\"exp\":%lld,\"iat\":%lld}",
	    BASE, (long long) now + 600, (long long) now + 25);
	assert_int_equal(check(p, now, &r, d), CM_OK);
	cfg.leeway_s = 0;
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	cfg.leeway_s = 30;

	// iss
	snprintf(p, sizeof(p),
	    "{\"sub\":\"u\",\"iss\":\"https://"
	    "other\",\"aud\":\"authenticated\","
	    "\"exp\":%lld}",
	    (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	assert_string_equal(d, "wrong issuer");
	snprintf(p, sizeof(p),
	    "{\"sub\":\"u\",\"aud\":\"authenticated\",\"exp\":%lld}",
	    (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);

	// aud: string, array, missing, wrong
	snprintf(p, sizeof(p),
	    "{\"sub\":\"u\",\"iss\":\"https://idp.test/auth/"
	    "v1\",\"aud\":[\"x\","
	    "\"authenticated\"],\"exp\":%lld}",
	    (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_OK);
	snprintf(p, sizeof(p),
	    "{\"sub\":\"u\",\"iss\":\"https://idp.test/auth/"
	    "v1\",\"aud\":[\"x\","
	    "\"y\"],\"exp\":%lld}",
	    (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	assert_string_equal(d, "wrong audience");
	snprintf(p, sizeof(p),
	    "{\"sub\":\"u\",\"iss\":\"https://idp.test/auth/v1\",\"aud\":"
	    "\"authenticated2\",\"exp\":%lld}",
	    (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	snprintf(p, sizeof(p),
	    "{\"sub\":\"u\",\"iss\":\"https://idp.test/auth/"
	    "v1\",\"exp\":%lld}",
	    (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);

	// identity
	snprintf(
	    p, sizeof(p), "{%s,\"exp\":%lld}", BASE, (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	assert_string_equal(d, "identity claim missing");
	snprintf(p, sizeof(p), "{\"sub\":\"\",%s,\"exp\":%lld}", BASE,
	    (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	snprintf(p, sizeof(p), "{\"sub\":42,%s,\"exp\":%lld}", BASE,
	    (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	snprintf(p, sizeof(p), "{\"sub\":\"alice\\u0000x\",%s,\"exp\":%lld}",
	    BASE, (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	snprintf(p, sizeof(p), "{\"sub\":\"a\\nb\",%s,\"exp\":%lld}", BASE,
	    (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	memset(longid, 'x', AUTH_ID_MAX);
	longid[AUTH_ID_MAX] = '\0';
	snprintf(p, sizeof(p), "{\"sub\":\"%s\",%s,\"exp\":%lld}", longid,
	    BASE, (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_EAUTH);
	assert_string_equal(d, "identity claim too long");
	longid[AUTH_ID_MAX - 1] = '\0';
	snprintf(p, sizeof(p), "{\"sub\":\"%s\",%s,\"exp\":%lld}", longid,
	    BASE, (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_OK);
	// configurable identity claim
	cfg.identity_claim = "user_id";
	snprintf(p, sizeof(p),
	    "{\"sub\":\"s\",\"user_id\":\"uid-7\",%s,"
	    "\"exp\":%lld}",
	    BASE, (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_OK);
	assert_string_equal(r.identity, "uid-7");
	cfg.identity_claim = "sub";

	// scopes: scope string, scp array, scp string; junk dropped
	snprintf(p, sizeof(p),
	    "{\"sub\":\"u\",%s,\"exp\":%lld,\"scope\":\"  a:read  b:write \"}",
	    BASE, (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_OK);
	assert_string_equal(r.scopes, "a:read b:write");
	snprintf(p, sizeof(p),
	    "{\"sub\":\"u\",%s,\"exp\":%lld,\"scp\":[\"x\",7,\"y z\",\"w\"]}",
	    BASE, (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_OK);
	assert_string_equal(r.scopes, "x w");
	snprintf(p, sizeof(p),
	    "{\"sub\":\"u\",%s,\"exp\":%lld,\"scp\":\"q r\"}", BASE,
	    (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_OK);
	assert_string_equal(r.scopes, "q r");
	// email and session_id kept; an oversized email is dropped
	snprintf(p, sizeof(p),
	    "{\"sub\":\"u\",%s,\"exp\":%lld,\"email\":\"a@b.c\","
	    "\"session_id\":\"sess\"}",
	    BASE, (long long) now + 60);
	assert_int_equal(check(p, now, &r, d), CM_OK);
	assert_string_equal(r.email, "a@b.c");
	assert_string_equal(r.session_id, "sess");

	// not an object / not JSON
	assert_int_equal(check("[1,2]", now, &r, d), CM_EAUTH);
	assert_int_equal(check("{\"sub\":", now, &r, d), CM_EAUTH);
	assert_string_equal(r.identity, "");
#undef BASE
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_alg_names, each_setup),
		cmocka_unit_test_setup(test_keyset_parse_filters, each_setup),
		cmocka_unit_test_setup(
		    test_private_parts_never_imported, each_setup),
		cmocka_unit_test_setup(test_config_errors, each_setup),
		cmocka_unit_test_setup(test_es256_rs256_accepted, each_setup),
		cmocka_unit_test_setup(test_malformed_tokens, each_setup),
		cmocka_unit_test_setup(test_header_rules, each_setup),
		cmocka_unit_test_setup(test_shared_secret, each_setup),
		cmocka_unit_test_setup(
		    test_unknown_kid_refetch_once, each_setup),
		cmocka_unit_test_setup(test_rotation, each_setup),
		cmocka_unit_test_setup(test_idp_down_at_start, each_setup),
		cmocka_unit_test_setup(
		    test_keep_last_good_and_max_age, each_setup),
		cmocka_unit_test_setup(test_cache_control_capped, each_setup),
		cmocka_unit_test_setup(test_refresh_backoff_grows, each_setup),
		cmocka_unit_test_setup(test_single_flight, each_setup),
		cmocka_unit_test_setup(test_oidc_discovery, each_setup),
		cmocka_unit_test_setup(test_claims, each_setup),
	};

	cm_log_init("jwt_test", CM_LOG_ERROR);
	return (cmocka_run_group_tests(tests, setup, teardown));
}
