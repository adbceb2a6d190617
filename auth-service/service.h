// SPDX-License-Identifier: MIT
//
// auth-service internals that are not part of the fixed interface in
// auth.h: configuration loading (config.c), Authorization header parsing
// (header.c), the RPC server (server.c), the provider factory, the
// per-thread request deadline used by the HTTP helper (http.c) and small
// token helpers shared by the providers (token.c).
#ifndef AUTH_SERVICE_H
#define AUTH_SERVICE_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "auth-service/auth.h"
#include "auth-service/cache.h"
#include "common/err.h"

// Exit codes of threadgate-auth (documented in --help).
#define AUTH_EXIT_OK     0
#define AUTH_EXIT_OTHER  1
#define AUTH_EXIT_USAGE  2
#define AUTH_EXIT_LISTEN 3

// Most required scopes one Authenticate request may carry: real routes
// need one or two; the bound keeps the cache key and scope check cheap.
#define AUTH_REQUIRED_SCOPES_MAX 16
// Longest single required scope, in bytes.
#define AUTH_REQUIRED_SCOPE_LEN_MAX 128
// Most Authorization values we look at: one is valid, so anything above
// two only needs to be counted as "more than one".
#define AUTH_HEADER_VALUES_MAX 2

// ---------------------------------------------------------------------
// Configuration (config.c)
// ---------------------------------------------------------------------

/**
 * auth_config_load() fills *cfg from the environment, then argv flags
 * (--listen URL), and validates everything. Returns CM_OK; CM_EINVAL with
 * a log line naming the bad variable (exit 2). --help and --version are
 * handled here: they print to stdout and set *exit_now to 1 (exit 0);
 * otherwise *exit_now is 0. On error *cfg is left freed (all strings
 * NULL). Call from main() before any thread starts.
 */
cm_err auth_config_load(
    int argc, char **argv, auth_config *cfg, int *exit_now);

/** auth_config_free() frees the strings of cfg; NULL allowed. */
void auth_config_free(auth_config *cfg);

/** auth_config_usage() prints --help text (every flag and variable). */
void auth_config_usage(FILE *f);

/**
 * auth_provider_new() builds the provider cfg->provider names. Returns
 * what the constructor returns (CM_EINVAL bad config, CM_EUNAVAIL).
 */
cm_err auth_provider_new(const auth_config *cfg, auth_provider **out);

// ---------------------------------------------------------------------
// Authorization header (header.c)
// ---------------------------------------------------------------------

/**
 * auth_header_parse() extracts the bearer token from the n values of the
 * Authorization headers a client sent. Rules: exactly one value; it is at
 * most AUTH_HEADER_MAX bytes; scheme "Bearer" in any case; exactly one
 * space; a non-empty token of at most AUTH_TOKEN_MAX bytes with no
 * whitespace or control bytes. On CM_OK *token points into values[0]
 * (borrowed) and *token_len is its length. Every failure is CM_EAUTH with
 * a client-safe reason in detail ("missing bearer token", ...). Any
 * thread.
 */
cm_err auth_header_parse(const char *const *values, size_t n,
    const char **token, size_t *token_len, char *detail, size_t detail_len);

// ---------------------------------------------------------------------
// Server (server.c)
// ---------------------------------------------------------------------

typedef struct auth_server auth_server;

/**
 * auth_server_start() starts the RPC server on cfg->listen_url with
 * cfg->workers workers, each owning a CURL handle. provider and cfg are
 * borrowed and must outlive the server. Returns CM_OK and *out; CM_EUNAVAIL
 * when the URL cannot be listened on; CM_EINTERNAL when a worker cannot
 * create its CURL handle; CM_EINVAL for a bad config. Main thread only.
 */
cm_err auth_server_start(
    const auth_config *cfg, auth_provider *provider, auth_server **out);

/** auth_server_stop() stops and frees the server; NULL allowed. */
void auth_server_stop(auth_server *srv);

/**
 * auth_authenticate() is the whole Authenticate decision without the
 * transport (the handler calls it; benchmarks and tests may too):
 * header parsing, cache lookup with single-flight, provider call, scope
 * check, cache insert on success, counters. deadline_ms is an absolute
 * Unix ms deadline (0 = the configured IdP timeout from now). On CM_OK
 * *out has a non-empty identity. Errors: CM_EAUTH, CM_EPERM (a required
 * scope is missing), CM_EUNAVAIL, CM_ETIMEDOUT, CM_EINVAL (too many or too
 * long required scopes). detail gets a client-safe reason.
 *
 * would_block: NULL means the call may block (IdP round trip, waiting for
 * another caller's flight). Non-NULL asks for a non-blocking attempt: only
 * header checks and a live cache entry are answered; anything else sets
 * *would_block = 1 and returns CM_EUNAVAIL without counting, and the caller
 * retries with NULL where blocking is allowed. Thread: any; a blocking
 * call needs its own w.
 */
cm_err auth_authenticate(auth_server *srv, auth_worker *w,
    const char *const *authz, size_t nauthz, const char *const *scopes,
    size_t nscopes, int64_t deadline_ms, auth_result *out, char *detail,
    size_t detail_len, int *would_block);

/**
 * auth_server_new_local() builds a server without a socket, for tests and
 * benchmarks of auth_authenticate(). Free with auth_server_stop().
 */
cm_err auth_server_new_local(
    const auth_config *cfg, auth_provider *provider, auth_server **out);

/**
 * auth_server_service() returns the server's protobuf-c service (the
 * Authenticate and Stats handlers; borrowed), for driving the handlers
 * in-process without the rpc transport (the fuzz target).
 */
ProtobufCService *auth_server_service(auth_server *srv);

/** auth_server_cache() returns the server's cache (borrowed). */
auth_cache *auth_server_cache(auth_server *srv);

// ---------------------------------------------------------------------
// HTTP deadline (http.c)
// ---------------------------------------------------------------------

/**
 * auth_http_set_deadline() sets the calling thread's current request
 * deadline (Unix ms; 0 = none). auth_http_request() shortens its total
 * timeout to the time left and fails with CM_ETIMEDOUT when none is left.
 * The server sets it before each provider call.
 */
void auth_http_set_deadline(int64_t deadline_unix_ms);

/** auth_http_deadline() returns the calling thread's deadline (0 = none). */
int64_t auth_http_deadline(void);

// ---------------------------------------------------------------------
// Token helpers (token.c)
// ---------------------------------------------------------------------

/**
 * auth_token_exp() decodes, WITHOUT verifying, the payload of a JWT-shaped
 * token and returns its integer "exp" claim, or 0 when the token is not a
 * JWT or has no usable exp. Use it only to bound a cache TTL, never to
 * decide validity. Any thread.
 */
int64_t auth_token_exp(const char *token);

/**
 * auth_json_text() returns the string value of v (borrowed from v), or
 * NULL when v is not a string or holds a NUL ("\u0000"): our JSON reader
 * accepts that escape, and as a C string the value would be cut at the
 * NUL - "alice\u0000x" read as "alice" - so an IdP answer could name
 * someone else. Callers treat NULL as "no usable value". Any thread.
 */
const char *auth_json_text(const json_t *v);

/**
 * auth_form_encode() appends s form-urlencoded
 * (application/x-www-form-urlencoded: unreserved kept, space -> '+',
 * everything else %XX) into out (out_len bytes with the NUL). Returns
 * CM_OK or CM_ETOOBIG when it does not fit (out is then "").
 */
cm_err auth_form_encode(const char *s, char *out, size_t out_len);

/**
 * auth_static_new_from_buffer() builds a static provider from the JSON
 * text buf (len bytes) as AUTH_STATIC_FILE holds it. Returns CM_OK and
 * *out, or CM_EINVAL with the reason in detail.
 */
cm_err auth_static_new_from_buffer(const char *buf, size_t len,
    auth_provider **out, char *detail, size_t detail_len);

/**
 * auth_hybrid_valid_until() returns the Unix second until which a hybrid
 * provider's last IdP confirmation of token stays good (the cache must
 * not keep the result longer), or 0 when there is none. p must be a
 * hybrid provider. Any thread.
 */
int64_t auth_hybrid_valid_until(auth_provider *p, const char *token);

#endif // AUTH_SERVICE_H
