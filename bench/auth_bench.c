// SPDX-License-Identifier: MIT
//
// auth_bench: single-thread throughput of the jwt provider (issue 4
// performance targets). Not a test: scripts/bench-auth.sh builds it, runs
// it next to `openssl speed -seconds 3 ecdsap256 rsa2048`, and prints the
// ratio.
//
// Measured, each for a fixed time on one thread:
//  - "verify ES256" / "verify RS256": the provider's verify() on a cache
//    miss, i.e. everything a new token costs: shape check, cjose import,
//    header checks, key lookup (keys already fetched and imported),
//    signature check, payload JSON parse and claim checks;
//  - "sig only": cjose_jws_import + cjose_jws_verify alone, to show what
//    share of verify() the signature itself takes;
//  - "cache hit": auth_cache_key() + auth_cache_begin() answering HIT,
//    the path of a token seen before (excluding transport).
//
// The JWKS is served from memory by a stub auth_http_request() (the same
// link seam as jwt_test.c), so no network is involved.
//
// Each measurement is split into BENCH_ROUNDS rounds and the best round is
// reported: on a shared machine the best round is the one least disturbed
// by other processes (scripts/bench-auth.sh does the same for openssl).
//
// Usage: auth_bench [seconds per measurement, default 3] [only]
// where only (for profiling) is one of es256, rs256, hit.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjose/cjose.h>
#include <jansson.h>

#include "auth-service/auth.h"
#include "auth-service/cache.h"
#include "auth-service/jwt.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"

// Longest JWKS document the stub serves (two public keys).
#define BENCH_JWKS_MAX 8192
// Longest measurement accepted, in seconds.
#define BENCH_SECONDS_MAX 60
// Operations between two clock reads (keeps clock_gettime off the
// profile).
#define BENCH_BATCH 64
// Rounds per measurement; the best one is reported.
#define BENCH_ROUNDS 5

auth_stats   auth_g_stats;
auth_metrics auth_g_metrics; // all NULL: records nothing

static char bench_jwks[BENCH_JWKS_MAX];

cm_err
auth_http_request(auth_worker *w, const auth_config *cfg, const char *method,
    const char *url, const char *const *headers, const char *post_body,
    auth_http_response *resp)
{
	resp->status    = 200;
	resp->body      = cm_xstrdup(bench_jwks);
	resp->body_len  = strlen(bench_jwks);
	resp->max_age_s = 600;
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

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((double) ts.tv_sec + (double) ts.tv_nsec / 1e9);
}

static json_t *
pub_jwk(cjose_jwk_t *key, const char *kid, const char *alg)
{
	cjose_err cerr;
	char     *s = cjose_jwk_to_json(key, false, &cerr);
	json_t   *j = json_loads(s, 0, NULL);

	free(s);
	json_object_set_new(j, "kid", json_string(kid));
	json_object_set_new(j, "alg", json_string(alg));
	json_object_set_new(j, "use", json_string("sig"));
	return (j);
}

// A Supabase-shaped access token signed by key; minimal != 0 gives a
// small flat payload (sub, iss, aud, exp, iat: OIDC-server style) instead.
static char *
mint(cjose_jwk_t *key, const char *alg, const char *kid, int minimal)
{
	cjose_err       cerr;
	cjose_header_t *h = cjose_header_new(&cerr);
	cjose_jws_t    *jws;
	const char     *ser = NULL;
	char            payload[1024];
	char           *out;
	long long       t = (long long) (cm_now_ms() / 1000);

	snprintf(payload, sizeof(payload),
	    "{\"iss\":\"https://bench.supabase.co/auth/v1\","
	    "\"sub\":\"8f1c2c0e-6a9b-4f1e-9d38-2b7f3c1a9e11\","
	    "\"aud\":\"authenticated\",\"exp\":%lld,\"iat\":%lld,"
	    "\"email\":\"bench@example.test\",\"phone\":\"\","
	    "\"app_metadata\":{\"provider\":\"email\",\"providers\":["
	    "\"email\"]},"
	    "\"user_metadata\":{\"email_verified\":true},\"role\":"
	    "\"authenticated\",\"aal\":\"aal1\",\"amr\":[{\"method\":"
	    "\"password\",\"timestamp\":%lld}],\"session_id\":"
	    "\"3b1f0c6e-0d55-4c2a-a7e4-5b0c9d1e2f33\",\"is_anonymous\":false}",
	    t + 3600, t, t);
	if (minimal) {
		snprintf(payload, sizeof(payload),
		    "{\"iss\":\"https://bench.supabase.co/auth/v1\","
		    "\"sub\":\"8f1c2c0e-6a9b-4f1e-9d38-2b7f3c1a9e11\","
		    "\"aud\":\"authenticated\",\"exp\":%lld,\"iat\":%lld}",
		    t + 3600, t);
	}
	cjose_header_set(h, CJOSE_HDR_ALG, alg, &cerr);
	cjose_header_set(h, CJOSE_HDR_KID, kid, &cerr);
	cjose_header_set(h, "typ", "JWT", &cerr);
	jws = cjose_jws_sign(
	    key, h, (const uint8_t *) payload, strlen(payload), &cerr);
	if (jws == NULL || !cjose_jws_export(jws, &ser, &cerr)) {
		fprintf(stderr, "auth_bench: cannot sign %s\n", alg);
		exit(1);
	}
	out = cm_xstrdup(ser);
	cjose_jws_release(jws);
	cjose_header_release(h);
	return (out);
}

static double
verify_round(auth_provider *p, const char *token, double secs)
{
	auth_worker w = { NULL, 0 };
	auth_result r;
	char        d[128];
	long        n  = 0;
	double      t0 = now_s(), t;
	int         i;

	do {
		for (i = 0; i < BENCH_BATCH; i++) {
			if (p->verify(p, &w, token, &r, d, sizeof(d)) !=
			    CM_OK) {
				fprintf(stderr,
				    "auth_bench: verify failed: %s\n", d);
				exit(1);
			}
		}
		n += BENCH_BATCH;
		t = now_s() - t0;
	} while (t < secs);
	return ((double) n / t);
}

static double
sig_round(cjose_jwk_t *key, const char *token, double secs)
{
	cjose_err cerr;
	size_t    len = strlen(token);
	long      n   = 0;
	double    t0  = now_s(), t;
	int       i;

	do {
		for (i = 0; i < BENCH_BATCH; i++) {
			cjose_jws_t *jws = cjose_jws_import(token, len, &cerr);
			if (jws == NULL ||
			    !cjose_jws_verify(jws, key, &cerr)) {
				fprintf(stderr,
				    "auth_bench: cjose verify failed\n");
				exit(1);
			}
			cjose_jws_release(jws);
		}
		n += BENCH_BATCH;
		t = now_s() - t0;
	} while (t < secs);
	return ((double) n / t);
}

static double
bench_verify(auth_provider *p, const char *token, double secs)
{
	double best = 0, v;
	int    i;

	for (i = 0; i < BENCH_ROUNDS; i++) {
		v    = verify_round(p, token, secs / BENCH_ROUNDS);
		best = v > best ? v : best;
	}
	return (best);
}

static double
bench_sig_only(cjose_jwk_t *key, const char *token, double secs)
{
	double best = 0, v;
	int    i;

	for (i = 0; i < BENCH_ROUNDS; i++) {
		v    = sig_round(key, token, secs / BENCH_ROUNDS);
		best = v > best ? v : best;
	}
	return (best);
}

static double
bench_cache_hit(const char *scope, const char *token, double secs)
{
	auth_cache        *c = NULL;
	unsigned char      key[AUTH_CACHE_KEY_LEN];
	auth_result        r, got;
	auth_cache_outcome how;
	auth_flight       *f   = NULL;
	int64_t            now = cm_now_ms() / 1000;
	size_t             len = strlen(token);
	long               n   = 0;
	double             t0, t, best = 0;
	int                i, round;

	if (auth_cache_new(100000, &c) != CM_OK) {
		exit(1);
	}
	memset(&r, 0, sizeof(r));
	snprintf(r.identity, sizeof(r.identity), "bench-user");
	auth_cache_key(scope, token, len, NULL, 0, key);
	auth_cache_put(c, key, &r, now, now + 3600);
	for (round = 0; round < BENCH_ROUNDS; round++) {
		n  = 0;
		t0 = now_s();
		do {
			for (i = 0; i < BENCH_BATCH; i++) {
				auth_cache_key(
				    scope, token, len, NULL, 0, key);
				if (auth_cache_begin(c, key, now,
				        cm_now_ms() + 1000, &got, &how,
				        &f) != CM_OK ||
				    how != AUTH_CACHE_HIT) {
					fprintf(stderr,
					    "auth_bench: cache miss\n");
					exit(1);
				}
			}
			n += BENCH_BATCH;
			t = now_s() - t0;
		} while (t < secs / BENCH_ROUNDS);
		if ((double) n / t > best) {
			best = (double) n / t;
		}
	}
	auth_cache_free(c);
	return (best);
}

int
main(int argc, char **argv)
{
	static const uint8_t e[] = { 0x01, 0x00, 0x01 };
	auth_config          cfg;
	auth_provider       *p = NULL;
	cjose_err            cerr;
	cjose_jwk_t         *ec, *rsa;
	json_t              *doc;
	char                *s, *es_tok, *rs_tok, *rs_min;
	int64_t              secs = 3;
	const char          *only = argc > 2 ? argv[2] : NULL;
	double               es, rs, es_sig, rs_sig, hit, rsm;

	if (argc > 1 &&
	    cm_parse_i64(argv[1], 1, BENCH_SECONDS_MAX, &secs) != CM_OK) {
		fprintf(stderr, "usage: auth_bench [seconds 1..%d]\n",
		    BENCH_SECONDS_MAX);
		return (2);
	}
	cm_log_init("auth_bench", CM_LOG_WARN);
	ec  = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &cerr);
	rsa = cjose_jwk_create_RSA_random(2048, e, sizeof(e), &cerr);
	if (ec == NULL || rsa == NULL) {
		fprintf(stderr, "auth_bench: key generation failed\n");
		return (1);
	}
	doc = json_pack("{s:[o,o]}", "keys", pub_jwk(ec, "bench-ec", "ES256"),
	    pub_jwk(rsa, "bench-rsa", "RS256"));
	s   = json_dumps(doc, JSON_COMPACT);
	snprintf(bench_jwks, sizeof(bench_jwks), "%s", s);
	free(s);
	json_decref(doc);

	memset(&cfg, 0, sizeof(cfg));
	cfg.provider       = AUTH_PROVIDER_JWT;
	cfg.idp_timeout_ms = 2000;
	cfg.jwks_url    = "http://bench.invalid/auth/v1/.well-known/jwks.json";
	cfg.oidc_issuer = "";
	cfg.jwt_secret  = "";
	cfg.issuer      = "https://bench.supabase.co/auth/v1";
	cfg.audience    = "authenticated";
	cfg.identity_claim  = "sub";
	cfg.leeway_s        = 30;
	cfg.jwks_cooldown_s = 30;
	cfg.jwks_max_age_s  = 600;
	if (auth_jwt_new(&cfg, &p) != CM_OK) {
		return (1);
	}
	es_tok = mint(ec, "ES256", "bench-ec", 0);
	rs_tok = mint(rsa, "RS256", "bench-rsa", 0);
	rs_min = mint(rsa, "RS256", "bench-rsa", 1);
	// Warm up: the first call fetches and imports the keys.
	(void) verify_round(p, es_tok, 0.05);
	(void) verify_round(p, rs_tok, 0.05);

	es = es_sig = rs = rs_sig = hit = rsm = 1;
	if (only == NULL || strcmp(only, "es256") == 0) {
		es     = bench_verify(p, es_tok, (double) secs);
		es_sig = bench_sig_only(ec, es_tok, (double) secs);
	}
	if (only == NULL || strcmp(only, "rs256") == 0) {
		rs     = bench_verify(p, rs_tok, (double) secs);
		rs_sig = bench_sig_only(rsa, rs_tok, (double) secs);
		rsm    = bench_verify(p, rs_min, (double) secs);
	}
	if (only == NULL || strcmp(only, "hit") == 0) {
		hit = bench_cache_hit(p->cache_scope, es_tok, (double) secs);
	}

	printf("token sizes: ES256 %zu bytes, RS256 %zu bytes, RS256 minimal "
	       "%zu bytes\n",
	    strlen(es_tok), strlen(rs_tok), strlen(rs_min));
	printf("%-28s %12.0f /s  %8.2f us\n", "verify ES256 (cache miss)", es,
	    1e6 / es);
	printf("%-28s %12.0f /s  %8.2f us\n", "  cjose import+verify ES256",
	    es_sig, 1e6 / es_sig);
	printf("%-28s %12.0f /s  %8.2f us\n", "verify RS256 (cache miss)", rs,
	    1e6 / rs);
	printf("%-28s %12.0f /s  %8.2f us\n", "  cjose import+verify RS256",
	    rs_sig, 1e6 / rs_sig);
	printf("%-28s %12.0f /s  %8.2f us\n", "verify RS256 minimal claims",
	    rsm, 1e6 / rsm);
	printf("%-28s %12.0f /s  %8.2f us\n", "cache hit (key+lookup)", hit,
	    1e6 / hit);
	// Machine-readable lines for scripts/bench-auth.sh.
	printf("RESULT es256_verify_per_s %.0f\n", es);
	printf("RESULT rs256_verify_per_s %.0f\n", rs);
	printf("RESULT rs256_min_verify_per_s %.0f\n", rsm);
	printf("RESULT cache_hit_us %.3f\n", 1e6 / hit);

	p->destroy(p);
	free(es_tok);
	free(rs_tok);
	free(rs_min);
	cjose_jwk_release(ec);
	cjose_jwk_release(rsa);
	return (0);
}
