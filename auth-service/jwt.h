// SPDX-License-Identifier: MIT
//
// Local JWT verification (the "jwt" provider, issue 4): the internal
// interface between jwt.c (token parsing, key choice, signature check with
// libcjose, claim checks) and jwks.c (key sets: JWKS parsing, fetching,
// OIDC discovery, refresh, kid-miss refetch with single-flight, cooldown
// and a negative cache).
//
// Key sets are immutable once built and reference-counted: a verifying
// thread takes a hold on the current set under a read lock, lets go of the
// lock at once and verifies with the held set; a refresh builds a new set
// and swaps the pointer under the write lock. Readers never block each
// other and never wait for the network. Each JWK is imported into a
// cjose_jwk_t once, when its set is built, never per request.
#ifndef AUTH_JWT_H
#define AUTH_JWT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cjose/jwk.h>

#include "auth-service/auth.h"
#include "common/err.h"

// Longest "kid" accepted, in bytes without the NUL. Real kids are UUIDs,
// thumbprints (43 chars) or short names; 128 leaves room and bounds what
// a client can make us store in the negative cache.
#define AUTH_JWT_KID_MAX 128
// Most keys kept from one JWKS. IdPs publish 1-4 keys (current, next,
// previous); 32 tolerates odd setups while bounding the work a token
// without "kid" can cause (it is tried against each compatible key).
#define AUTH_JWKS_MAX_KEYS 32
// Unknown kids remembered (negative cache), oldest replaced first. The
// cooldown already limits refetches; this bounds the memory the
// remembered kids take (at most 256 * AUTH_JWT_KID_MAX bytes).
#define AUTH_JWKS_NEG_MAX 256
// Shortest wait after a failed JWKS or discovery fetch before the next
// attempt, in ms: while the IdP is down, requests are answered from what
// is cached (or refused with 503) instead of each one hitting the IdP.
#define AUTH_JWKS_RETRY_MS 2000
// Longest wait between attempts while a refresh keeps failing and the last
// good keys are still being used: the wait doubles from
// AUTH_JWKS_RETRY_MS up to this, so a hanging IdP costs one request a
// timeout at most once a minute. (With no keys at all the wait stays at
// AUTH_JWKS_RETRY_MS: every request is failing, so recover fast.)
#define AUTH_JWKS_RETRY_MAX_MS 60000
// Shortest lifetime given to a fetched key set, in seconds, whatever
// Cache-Control says (max-age=0 would otherwise mean a fetch per
// request): at most one refresh per second per process.
#define AUTH_JWKS_MIN_AGE_S 1
// Lower bound of AUTH_JWKS_COOLDOWN (issue 4: at least 30 s between
// kid-miss refetches).
#define AUTH_JWKS_COOLDOWN_MIN_S 30
// Defaults used when the configuration leaves a value at 0.
#define AUTH_JWKS_MAX_AGE_DEFAULT_S 600
// Algorithms JWKS keys may verify unless configured: every asymmetric
// algorithm we know; never HS* (a JWKS is public, so an HMAC key in it
// would let anyone sign).
#define AUTH_JWKS_ALGS_DEFAULT                                               \
	(AUTH_ALG_RS256 | AUTH_ALG_RS384 | AUTH_ALG_RS512 | AUTH_ALG_PS256 | \
	    AUTH_ALG_ES256 | AUTH_ALG_ES384)
// Algorithms the shared secret may verify unless configured.
#define AUTH_SECRET_ALGS_DEFAULT AUTH_ALG_HS256
// Every algorithm bit we implement.
#define AUTH_ALG_ALL (AUTH_JWKS_ALGS_DEFAULT | AUTH_ALG_HS256)
// Largest RSA signature we handle, in bytes (RSA-8192). Bigger keys are
// skipped: verifying with them costs a client-chosen amount of CPU.
#define AUTH_JWK_RSA_MAX_BYTES 1024
// Smallest RSA modulus accepted, in bits (NIST SP 800-131A).
#define AUTH_JWK_RSA_MIN_BITS 2048
// Shortest shared secret accepted, in bytes: RFC 7518 §3.2 requires an
// HS256 key of at least 256 bits, and cjose refuses shorter ones.
#define AUTH_SECRET_MIN_LEN 32

/**
 * auth_jwk is one verification key: the imported cjose key, the
 * algorithms it may verify and the exact signature length it produces.
 */
typedef struct auth_jwk {
	char     kid[AUTH_JWT_KID_MAX + 1]; // "" when the key has none
	int      has_kid;
	unsigned algs;    // AUTH_ALG_* bits this key may verify
	size_t   sig_len; // signature bytes (RSA modulus, 2 * EC coord, 32)
	cjose_jwk_t *jwk; // owned
} auth_jwk;

/**
 * auth_keyset is an immutable set of keys with a reference count.
 */
typedef struct auth_keyset {
	atomic_int refs;
	int        n;
	auth_jwk   keys[AUTH_JWKS_MAX_KEYS];
} auth_keyset;

/**
 * auth_alg_from_name() maps a JWS "alg" value (len bytes) to its
 * AUTH_ALG_* bit, or 0 for anything we do not implement ("none", "HS384",
 * "EdDSA", a wrong case...). Thread-safe.
 */
unsigned auth_alg_from_name(const char *name, size_t len);

/** auth_alg_name() returns the static name of one AUTH_ALG_* bit, or "?". */
const char *auth_alg_name(unsigned alg);

/**
 * auth_keyset_parse() builds a key set from a JWKS document (len bytes of
 * json, need not be NUL-terminated, at most AUTH_IDP_BODY_MAX). Keys are
 * skipped (with a debug log line) when "use" is present and not "sig",
 * "key_ops" is present without "verify", the kty/crv is not one we
 * verify with, "alg" is present and not in allowed_algs or not matching
 * the key type, an RSA modulus is outside [AUTH_JWK_RSA_MIN_BITS,
 * AUTH_JWK_RSA_MAX_BYTES * 8], the kid is longer than AUTH_JWT_KID_MAX,
 * or cjose cannot import it. Only public parameters are imported (a
 * private "d" is never read); "oct" keys are taken only when allowed_algs
 * has HS256. At most AUTH_JWKS_MAX_KEYS usable keys are kept. An empty
 * set is valid ({"keys":[]} is what an HS256-only Supabase serves).
 *
 * Returns CM_OK and a new set (refs = 1) in *out; CM_EUNAVAIL when the
 * document is not JSON, not an object or has no "keys" array (an IdP
 * answering garbage); detail gets a short reason. Thread-safe.
 */
cm_err auth_keyset_parse(const char *json, size_t len, unsigned allowed_algs,
    auth_keyset **out, char *detail, size_t detail_len);

/**
 * auth_keyset_from_secret() builds a one-key set from a shared secret:
 * the raw len bytes of secret (as GoTrue uses SUPABASE_JWT_SECRET), usable
 * for algs (HS* bits only; others are dropped). Returns CM_OK and a new
 * set in *out, or CM_EINVAL when the secret is shorter than
 * AUTH_SECRET_MIN_LEN or algs has no HS bit.
 */
cm_err auth_keyset_from_secret(
    const char *secret, size_t len, unsigned algs, auth_keyset **out);

/** auth_keyset_hold() adds a reference; returns ks (NULL allowed). */
auth_keyset *auth_keyset_hold(auth_keyset *ks);

/**
 * auth_keyset_rele() drops a reference; the last one frees the set and
 * its cjose keys. NULL allowed. Any thread.
 */
void auth_keyset_rele(auth_keyset *ks);

/**
 * auth_keyset_find() returns the key whose kid equals kid (borrowed from
 * ks, valid while the caller holds ks), or NULL.
 */
const auth_jwk *auth_keyset_find(const auth_keyset *ks, const char *kid);

// ---------------------------------------------------------------------
// Live JWKS source (jwks.c)
// ---------------------------------------------------------------------

typedef struct auth_jwks auth_jwks;

/**
 * auth_jwks_new() creates a key source for cfg: cfg->jwks_url when set,
 * else OIDC discovery from cfg->oidc_issuer. Nothing is fetched here: the
 * first auth_jwks_acquire() fetches (so the service starts while the IdP
 * is down and answers 503 until it is back). cfg is borrowed and must
 * outlive the source. Returns CM_OK and a new source in *out, or
 * CM_EINVAL (logged) when neither URL is set or a URL is too long or not
 * http(s).
 */
cm_err auth_jwks_new(const auth_config *cfg, auth_jwks **out);

/** auth_jwks_free() frees j and releases its key set. NULL allowed. */
void auth_jwks_free(auth_jwks *j);

/**
 * auth_jwks_acquire() returns a hold on the key set to verify a token
 * whose header carries kid (NULL when it has none). Fetches with the
 * caller's worker w when needed:
 *  - no key set yet: fetch now (one fetch at a time; others wait for it);
 *  - the set is older than its max-age: the first caller refreshes it,
 *    the others keep using the current set meanwhile;
 *  - kid given and not in the set: refetch once, unless a kid-miss
 *    refetch happened less than the cooldown ago or this kid is in the
 *    negative cache; a kid still unknown after the refetch is added to
 *    the negative cache.
 * A failed fetch keeps the last good set and is not retried for
 * AUTH_JWKS_RETRY_MS (doubling up to AUTH_JWKS_RETRY_MAX_MS while a set
 * is in use). Returns CM_OK with a held set in *out (the caller
 * calls auth_keyset_rele; the kid may still be missing from it: the
 * caller refuses the token); CM_EUNAVAIL (or CM_ETIMEDOUT) when there is
 * no key set at all, or when the refetch for this unknown kid could not
 * be done. Any worker thread.
 */
cm_err auth_jwks_acquire(
    auth_jwks *j, auth_worker *w, const char *kid, auth_keyset **out);

/**
 * auth_jwks_url() copies the JWKS URL in use (configured or discovered;
 * "" before discovery) into buf. For logs and tests.
 */
void auth_jwks_url(auth_jwks *j, char *buf, size_t len);

// ---------------------------------------------------------------------
// Token checks (jwt.c), exposed for the unit tests and the benchmark
// ---------------------------------------------------------------------

/**
 * auth_jwt_check_claims() applies the claim rules of cfg to the JSON
 * payload (len bytes) at time now_s (Unix seconds) and fills *out:
 * exp required and numeric; nbf/iat checked with cfg->leeway_s; iss equal
 * to expected_iss when that is non-empty; aud (string or array)
 * containing cfg->audience when set; identity from cfg->identity_claim
 * ("sub" when empty), a non-empty string without control characters that
 * fits AUTH_ID_MAX; email, session_id, scope/scp kept when well-formed.
 * Returns CM_OK, or CM_EAUTH with a client-safe reason in detail. *out
 * is written only on success. Thread-safe.
 */
cm_err auth_jwt_check_claims(const auth_config *cfg, const char *expected_iss,
    const char *payload, size_t len, int64_t now_s, auth_result *out,
    char *detail, size_t detail_len);

#endif // AUTH_JWT_H
