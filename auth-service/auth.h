// SPDX-License-Identifier: MIT
//
// auth-service internals: configuration, the provider interface, the
// per-worker state and the outbound HTTP helper.
//
// A request flows: server.c (Authenticate handler) parses the Authorization
// header(s) -> cache.c (lookup; single-flight on a miss) -> the configured
// provider's verify() -> cache insert on success only -> Identity reply.
// Every error path returns a non-OK cm_err: the service never answers OK
// without an identity.
#ifndef AUTH_AUTH_H
#define AUTH_AUTH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "common/err.h"
#include "common/metrics.h"

// Longest bearer token accepted, in bytes. Supabase access tokens are
// ~1 KiB; OIDC tokens with many claims stay well under 8 KiB.
#define AUTH_TOKEN_MAX 8192
// Longest Authorization header value accepted ("Bearer " + token).
#define AUTH_HEADER_MAX (AUTH_TOKEN_MAX + 16)
// Longest identity (sub / user id) kept, with the NUL.
#define AUTH_ID_MAX 256
// Longest email kept, with the NUL (RFC 5321 path limit is 256).
#define AUTH_EMAIL_MAX 320
// Longest space-separated permission list kept, with the NUL.
#define AUTH_SCOPES_MAX 1024
// Longest session id kept, with the NUL.
#define AUTH_SESSION_MAX 64
// Largest IdP response body read (user object, JWKS, discovery,
// introspection); a larger answer is treated as the IdP failing.
#define AUTH_IDP_BODY_MAX (256u * 1024u)
// Longest URL we build or accept from configuration/discovery.
#define AUTH_URL_MAX 2048

typedef enum auth_provider_kind {
	AUTH_PROVIDER_SUPABASE = 0,
	AUTH_PROVIDER_JWT,
	AUTH_PROVIDER_INTROSPECTION,
	AUTH_PROVIDER_HYBRID,
	AUTH_PROVIDER_STATIC,
} auth_provider_kind;

// Bit set of JWS algorithms (AUTH_ALG_*).
#define AUTH_ALG_HS256 (1u << 0)
#define AUTH_ALG_RS256 (1u << 1)
#define AUTH_ALG_ES256 (1u << 2)
#define AUTH_ALG_RS384 (1u << 3)
#define AUTH_ALG_RS512 (1u << 4)
#define AUTH_ALG_ES384 (1u << 5)
#define AUTH_ALG_PS256 (1u << 6)

/**
 * auth_config is read once from the environment at start (config.c) and
 * is read-only afterwards. Strings are new copies owned by the config,
 * "" when unset.
 */
typedef struct auth_config {
	auth_provider_kind provider;
	char              *listen_url; // AUTH_SERVICE_URL
	int                workers;    // AUTH_WORKERS
	int idp_timeout_ms; // AUTH_IDP_TIMEOUT_MS: total per IdP request
	int idp_connect_timeout_ms; // AUTH_IDP_CONNECT_TIMEOUT_MS
	int cache_ttl_s;            // AUTH_CACHE_TTL: 0 disables the cache
	int cache_max;              // AUTH_CACHE_MAX entries
	// supabase / hybrid
	char *supabase_url; // SUPABASE_URL, no trailing slash
	char *supabase_key; // SUPABASE_SERVICE_KEY (sent as apikey)
	// jwt / hybrid
	char *jwks_url;    // AUTH_JWKS_URL (supabase: derived)
	char *oidc_issuer; // OIDC_ISSUER: discovery -> jwks_uri
	char *jwt_secret;  // SUPABASE_JWT_SECRET / AUTH_JWT_SECRET (raw bytes)
	unsigned secret_algs; // algorithms the shared secret may verify
	unsigned jwks_algs;   // algorithms JWKS keys may verify
	char    *issuer;      // AUTH_ISSUER: required iss, "" = not checked
	char    *audience;    // AUTH_AUDIENCE: required aud, "" = not checked
	char    *identity_claim; // AUTH_IDENTITY_CLAIM, default "sub"
	int      leeway_s;       // AUTH_LEEWAY: nbf/iat/exp leeway, default 30
	int      jwks_cooldown_s; // AUTH_JWKS_COOLDOWN: min s between kid-miss
	                          // refetches (>= 30)
	int jwks_max_age_s; // AUTH_JWKS_MAX_AGE: cap on Cache-Control max-age
	// introspection
	char *introspection_url; // AUTH_INTROSPECTION_URL
	char *client_id;         // AUTH_CLIENT_ID
	char *client_secret;     // AUTH_CLIENT_SECRET
	// hybrid
	int hybrid_interval_s; // AUTH_HYBRID_INTERVAL: re-confirm period
	int hybrid_fail_open;  // AUTH_HYBRID_OUTAGE=allow (default refuse)
	// static (development only)
	char *static_file; // AUTH_STATIC_FILE
	int   dev_mode;    // THREADGATE_DEV=1 required for static
	// --health-check: ask the running service's Health and exit (only
	// listen_url is loaded then).
	int health_check;
} auth_config;

/**
 * auth_result is what a provider decides about a valid token. Strings are
 * NUL-terminated and truncated to their buffers.
 */
typedef struct auth_result {
	char    identity[AUTH_ID_MAX];
	char    email[AUTH_EMAIL_MAX];
	char    scopes[AUTH_SCOPES_MAX];      // space-separated permissions
	char    session_id[AUTH_SESSION_MAX]; // "" when none
	int64_t expires_at;                   // Unix s; 0 when unknown
	// Unix s until which the result cache keeps this answer (never past
	// expires_at or a hybrid confirmation); 0 when it is not cached.
	// What a caller may reuse the answer for (Identity.reuse_ms).
	int64_t cached_until;
} auth_result;

/**
 * auth_worker is the per-worker state: one libcurl easy handle (reused, so
 * IdP connections are kept alive) and a scratch buffer. It belongs to one
 * worker thread; never share it.
 */
typedef struct auth_worker {
	CURL *curl;
	int   index;
} auth_worker;

typedef struct auth_provider auth_provider;

/**
 * auth_provider is one way of validating a token. verify() is called from
 * many worker threads at once, each with its own worker; implementations
 * keep shared state behind their own locks.
 *
 * verify(): token is the bearer token (1..AUTH_TOKEN_MAX bytes, no
 * whitespace, NUL-terminated). On CM_OK *out is filled and out->identity is
 * non-empty. Errors: CM_EAUTH (token invalid, expired, revoked: the caller
 * answers 401), CM_EUNAVAIL (the IdP could not be asked or answered
 * nonsense: 503), CM_ETIMEDOUT. detail (detail_len bytes) gets a short
 * reason that is safe to show to the client.
 */
struct auth_provider {
	const char *name; // "supabase", "jwt", ...
	cm_err (*verify)(auth_provider *p, auth_worker *w, const char *token,
	    auth_result *out, char *detail, size_t detail_len);
	void (*destroy)(auth_provider *p);
	// Text that identifies everything besides the token that the decision
	// depends on (provider, IdP URL, issuer, audience...). Part of the
	// cache key. Owned by the provider.
	const char *cache_scope;
	// Optional: 1 when the provider can verify tokens now, else 0 with a
	// client-safe reason in detail (n bytes): e.g. the jwt provider
	// before any signing key could be loaded. NULL means always able
	// (an IdP outage only fails the requests that need the IdP: cached
	// and locally verified tokens keep working, so it must not take the
	// service out of rotation). Called from the rpc layer's health thread
	// with a worker of its own; may block for one IdP request.
	int (*health)(
	    auth_provider *p, auth_worker *w, char *detail, size_t n);
};

/**
 * auth_stats are the process-wide outcome counters (the Stats rpc).
 */
typedef struct auth_stats {
	atomic_uint_fast64_t valid;
	atomic_uint_fast64_t refused;
	atomic_uint_fast64_t unavailable;
	atomic_uint_fast64_t cache_hits;
	atomic_uint_fast64_t cache_misses;
	atomic_uint_fast64_t idp_calls;
	atomic_uint_fast64_t jwks_fetches;
	atomic_uint_fast64_t malformed;
} auth_stats;

extern auth_stats auth_g_stats;

// Result classes of an IdP HTTP request (threadgate_auth_idp_requests_total).
typedef enum auth_idp_result {
	AUTH_IDP_2XX = 0,
	AUTH_IDP_3XX,
	AUTH_IDP_4XX,
	AUTH_IDP_5XX,
	AUTH_IDP_TIMEOUT,
	AUTH_IDP_ERROR, // connection failed, answer over the cap, ...
	AUTH_IDP_N_
} auth_idp_result;

/**
 * auth_metrics are the auth-service's Prometheus series (set up by
 * auth_metrics_init(); all NULL, recording nothing, until then):
 *   threadgate_auth_requests_total{outcome}  valid|refused|unavailable|
 *                                            malformed
 *   threadgate_auth_cache_requests_total{result}  hit|miss
 *   threadgate_auth_cache_entries            (at scrape time)
 *   threadgate_auth_singleflight_waits_total answered by another caller's
 *                                            IdP check of the same token
 *   threadgate_auth_idp_requests_total{result}  2xx|3xx|4xx|5xx|timeout|
 *                                            error
 *   threadgate_auth_idp_request_duration_seconds
 *   threadgate_auth_jwks_fetches_total{result}  ok|error
 */
typedef struct auth_metrics {
	cm_counter   *outcome[4]; // valid, refused, unavailable, malformed
	cm_counter   *cache_hit;
	cm_counter   *cache_miss;
	cm_counter   *singleflight_waits;
	cm_counter   *idp[AUTH_IDP_N_];
	cm_histogram *idp_duration;
	cm_counter   *jwks_ok;
	cm_counter   *jwks_error;
} auth_metrics;

extern auth_metrics auth_g_metrics;

/**
 * auth_metrics_init() registers the series in cm_metrics_default() and
 * fills auth_g_metrics (once; later calls do nothing). server.c.
 */
void auth_metrics_init(void);

// ---------------------------------------------------------------------
// Outbound HTTP (http.c)
// ---------------------------------------------------------------------

/**
 * auth_http_response is an IdP answer. body is NUL-terminated, malloc'd,
 * owned by the response (free with auth_http_response_free).
 */
typedef struct auth_http_response {
	long   status; // HTTP status
	char  *body;   // NUL-terminated body ("" when none)
	size_t body_len;
	long   max_age_s; // Cache-Control max-age, -1 when absent
} auth_http_response;

/**
 * auth_http_request() performs one HTTP request with the worker's curl
 * handle (connection reuse), the configured connect and total timeouts,
 * and a body cap of AUTH_IDP_BODY_MAX. method is "GET" or "POST"; headers
 * is a NULL-terminated list of "Name: value" strings (may be NULL);
 * post_body is sent for POST (form or JSON as the headers say; may be
 * NULL). Counts auth_g_stats.idp_calls. Returns CM_OK with *resp filled
 * (any HTTP status: the caller decides), CM_ETIMEDOUT on timeout,
 * CM_EUNAVAIL on connection failure or a body over the cap.
 */
cm_err auth_http_request(auth_worker *w, const auth_config *cfg,
    const char *method, const char *url, const char *const *headers,
    const char *post_body, auth_http_response *resp);

/** auth_http_response_free() frees resp's body; NULL allowed. */
void auth_http_response_free(auth_http_response *resp);

// ---------------------------------------------------------------------
// Providers (one file each)
// ---------------------------------------------------------------------

/**
 * Each constructor returns CM_OK and a new provider in *out, or CM_EINVAL
 * (with a log line naming the variable) when the configuration is
 * incomplete, or CM_EUNAVAIL when start-up needs the IdP and it cannot be
 * reached (jwt with OIDC discovery retries in the background instead).
 * The provider keeps a borrowed pointer to cfg.
 */
cm_err auth_supabase_new(const auth_config *cfg, auth_provider **out);
cm_err auth_jwt_new(const auth_config *cfg, auth_provider **out);
cm_err auth_introspection_new(const auth_config *cfg, auth_provider **out);
cm_err auth_hybrid_new(const auth_config *cfg, auth_provider **out);
cm_err auth_static_new(const auth_config *cfg, auth_provider **out);

#endif // AUTH_AUTH_H
