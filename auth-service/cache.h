// SPDX-License-Identifier: MIT
//
// The result cache of the auth-service: successful verifications only,
// keyed by SHA-256 over everything the decision depends on, with per-token
// expiry, an LRU bound, sharded locks, and single-flight so concurrent
// lookups of one uncached key cause one provider call.
//
// Usage on a request (server.c):
//   auth_cache_key(...)                 -> key
//   auth_cache_begin(c, key, ...)       -> HIT (answer), SHARED (a
//                                          concurrent leader's answer) or
//                                          LEAD (verify, then ...)
//   auth_cache_finish(c, flight, rv, r, expires_at)
// Refusals and errors are never stored. If a leader fails with CM_EAUTH
// or CM_EPERM, its waiters get the same code (the same decision, made at the
// same moment; nothing is stored). If it fails with anything else (IdP down,
// timeout), each waiter retries: one of them becomes the new leader and
// calls the provider again, all bounded by their own deadlines.
#ifndef AUTH_CACHE_H
#define AUTH_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "auth-service/auth.h"
#include "common/err.h"

// Cache key size: a SHA-256 digest.
#define AUTH_CACHE_KEY_LEN 32
// Lock shards: enough that 32 workers rarely meet on one lock, few
// enough that the per-shard LRU stays close to a global one.
#define AUTH_CACHE_SHARDS 16
// Largest AUTH_CACHE_MAX accepted (entries are ~100 bytes + strings, so
// this is at most a few GiB; the default is 100000).
#define AUTH_CACHE_MAX_LIMIT 10000000

typedef struct auth_cache  auth_cache;
typedef struct auth_flight auth_flight;

typedef enum auth_cache_outcome {
	AUTH_CACHE_HIT = 0, // answered from a stored entry
	AUTH_CACHE_SHARED,  // answered by a concurrent leader's verification
	AUTH_CACHE_LEAD,    // the caller must verify and call finish
} auth_cache_outcome;

/**
 * auth_cache_new() makes a cache holding at most max_entries results
 * (0: nothing is stored, single-flight still works). Returns CM_OK and a
 * new cache in *out, or CM_EINVAL when max_entries is out of
 * [0, AUTH_CACHE_MAX_LIMIT].
 */
cm_err auth_cache_new(long max_entries, auth_cache **out);

/**
 * auth_cache_free() frees the cache and every entry; NULL allowed. No
 * other thread may use it any more (no flights in progress).
 */
void auth_cache_free(auth_cache *c);

/**
 * auth_cache_key() computes the key: SHA-256 over a length-prefixed
 * encoding of a version tag, scope (the provider's cache_scope: provider,
 * IdP URL, issuer, audience...), the token bytes, and the required scopes
 * sorted (so their order does not matter). Length prefixes make the
 * encoding unambiguous: no two different inputs encode the same bytes.
 * scopes may be NULL when nscopes is 0. Any thread.
 */
void auth_cache_key(const char *scope, const char *token, size_t token_len,
    const char *const *scopes, size_t nscopes,
    unsigned char key[AUTH_CACHE_KEY_LEN]);

/**
 * auth_cache_expiry() returns the Unix second a result may be kept until:
 * now_s + ttl_s, lowered to token_exp when that is known (> 0) and to cap
 * when that is > 0. A result is stored only when this is > now_s.
 */
int64_t auth_cache_expiry(
    int64_t now_s, int ttl_s, int64_t token_exp, int64_t cap);

/**
 * auth_cache_begin() looks key up at time now_s. Returns CM_OK with
 * *how = HIT or SHARED and *out filled; or CM_OK with *how = LEAD and
 * *flight set: the caller then verifies and must call auth_cache_finish()
 * exactly once. While another caller leads for the same key, this waits
 * (condition variable) until it finishes or deadline_ms (Unix ms) passes.
 * Errors: CM_EAUTH or CM_EPERM (the concurrent leader's verification
 * refused the token), CM_ETIMEDOUT (the deadline passed while waiting). Any
 * thread.
 */
cm_err auth_cache_begin(auth_cache *c,
    const unsigned char key[AUTH_CACHE_KEY_LEN], int64_t now_s,
    int64_t deadline_ms, auth_result *out, auth_cache_outcome *how,
    auth_flight **flight);

/**
 * auth_cache_finish() ends a flight: when rv is CM_OK and expires_at_s >
 * now_s, r is stored until expires_at_s (evicting the least recently used
 * entry of its shard when full); waiters are woken with the outcome. f is
 * freed (stolen). r may be NULL when rv is not CM_OK.
 */
void auth_cache_finish(auth_cache *c, auth_flight *f, cm_err rv,
    const auth_result *r, int64_t now_s, int64_t expires_at_s);

/**
 * auth_cache_put() stores r under key until expires_at_s (if > now_s)
 * without a flight. auth_cache_get() returns 1 and fills *out for a live
 * entry, else 0 (an expired entry is dropped). Any thread.
 */
void auth_cache_put(auth_cache *c, const unsigned char key[AUTH_CACHE_KEY_LEN],
    const auth_result *r, int64_t now_s, int64_t expires_at_s);
int  auth_cache_get(auth_cache *c, const unsigned char key[AUTH_CACHE_KEY_LEN],
     int64_t now_s, auth_result *out);

/** auth_cache_count() returns the number of stored entries. */
size_t auth_cache_count(auth_cache *c);

#endif // AUTH_CACHE_H
