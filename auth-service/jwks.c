// SPDX-License-Identifier: MIT
//
// JWKS key sets for local JWT verification (issue 4).
//
// auth_keyset_parse() turns a JWKS document into an immutable,
// reference-counted set of cjose keys: each JWK is imported once, here,
// from a copy holding only its public parameters, together with the list
// of algorithms it may verify (RSA: RS*/PS*, P-256: ES256, P-384: ES384,
// oct: HS256 when allowed) and the exact signature length it produces.
//
// auth_jwks is the live source of such sets: a JWKS URL or OIDC discovery
// (issuer -> /.well-known/openid-configuration -> jwks_uri, with the
// issuer checked). There is no thread of its own: fetches happen on the
// request path, with the requesting worker's curl handle, or on the rpc
// layer's health thread (the jwt provider's health check acquires the set
// every second: it loads the first set at start-up, so the service reports
// ready without waiting for a first token, and refreshes a stale one off
// the request path), and only:
//  - when there is no set yet (start-up, or the IdP was down until now);
//  - on the first request after the set's max-age (Cache-Control capped
//    by AUTH_JWKS_MAX_AGE) ran out;
//  - on a token whose kid is not in the set, at most once per cooldown
//    (AUTH_JWKS_COOLDOWN, >= 30 s), and never for a kid remembered as
//    unknown (negative cache).
// One fetch runs at a time (single-flight). Callers with no usable set
// wait for the running fetch; callers with a set keep using it. A failed
// fetch (IdP down, slow, garbage) keeps the last good set and blocks new
// attempts for AUTH_JWKS_RETRY_MS, doubling (up to AUTH_JWKS_RETRY_MAX_MS)
// while failures continue and a set is in use.
//
// Locks: `lock` (rwlock) guards the current set pointer, its expiry and
// the URL; it is only ever held for a few instructions. `mu` guards the
// fetch state and the negative cache. Order: mu, then lock; nobody takes
// mu while holding lock.

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include <cjose/jwk.h>
#include <jansson.h>

#include "auth-service/auth.h"
#include "auth-service/jwt.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"

// Suffix appended to the issuer for OIDC discovery (OpenID Connect
// Discovery 1.0 §4).
#define DISCOVERY_PATH "/.well-known/openid-configuration"
// Most JWK entries looked at in one JWKS (usable or not). A document with
// more is cut there: it bounds the work an IdP answer can cause.
#define JWKS_MAX_ENTRIES 256
// Extra wait, beyond two IdP request timeouts (discovery + JWKS), for a
// caller waiting on another worker's fetch: after that it gives up with
// CM_ETIMEDOUT rather than hang.
#define FETCH_WAIT_SLACK_MS 1000

typedef struct neg_entry {
	char   *kid;   // owned; NULL = free slot
	int64_t at_ms; // monotonic time it was added
} neg_entry;

struct auth_jwks {
	const auth_config *cfg;
	unsigned           algs;        // algorithms keys may verify
	int64_t            cooldown_ms; // between kid-miss refetches
	int64_t            max_age_s;   // cap on a set's lifetime
	int                discover;    // 1 = URL comes from OIDC discovery

	pthread_rwlock_t lock;
	auth_keyset     *keys; // current set, NULL before the first fetch
	int64_t          expires_ms;        // monotonic; refresh after this
	char             url[AUTH_URL_MAX]; // JWKS URL, "" until discovered

	pthread_mutex_t mu;
	pthread_cond_t  cv;
	int             fetching;     // a fetch is running
	uint64_t        fetch_gen;    // fetches completed
	cm_err          last_rv;      // result of the last completed fetch
	int64_t         retry_ms;     // monotonic: no new fetch before this
	int             fail_streak;  // consecutive failed fetches
	int64_t         kid_fetch_ms; // monotonic: last kid-miss refetch
	int             kid_fetched;  // 0 until the first kid-miss refetch
	neg_entry       neg[AUTH_JWKS_NEG_MAX];
	int             neg_next; // ring position of the next insert
};

// ---------------------------------------------------------------------
// Algorithms
// ---------------------------------------------------------------------

static const struct {
	const char *name;
	unsigned    bit;
} alg_table[] = {
	{ "HS256", AUTH_ALG_HS256 },
	{ "RS256", AUTH_ALG_RS256 },
	{ "ES256", AUTH_ALG_ES256 },
	{ "RS384", AUTH_ALG_RS384 },
	{ "RS512", AUTH_ALG_RS512 },
	{ "ES384", AUTH_ALG_ES384 },
	{ "PS256", AUTH_ALG_PS256 },
};

#define ALG_RSA_BITS \
	(AUTH_ALG_RS256 | AUTH_ALG_RS384 | AUTH_ALG_RS512 | AUTH_ALG_PS256)

unsigned
auth_alg_from_name(const char *name, size_t len)
{
	size_t i;

	if (name == NULL || len != 5) {
		return (0);
	}
	for (i = 0; i < sizeof(alg_table) / sizeof(alg_table[0]); i++) {
		if (memcmp(alg_table[i].name, name, 5) == 0) {
			return (alg_table[i].bit);
		}
	}
	return (0);
}

const char *
auth_alg_name(unsigned alg)
{
	size_t i;

	for (i = 0; i < sizeof(alg_table) / sizeof(alg_table[0]); i++) {
		if (alg_table[i].bit == alg) {
			return (alg_table[i].name);
		}
	}
	return ("?");
}

// ---------------------------------------------------------------------
// Key sets
// ---------------------------------------------------------------------

static auth_keyset *
keyset_alloc(void)
{
	auth_keyset *ks = cm_xcalloc(1, sizeof(*ks));

	atomic_init(&ks->refs, 1);
	return (ks);
}

auth_keyset *
auth_keyset_hold(auth_keyset *ks)
{
	if (ks != NULL) {
		atomic_fetch_add(&ks->refs, 1);
	}
	return (ks);
}

void
auth_keyset_rele(auth_keyset *ks)
{
	int i;

	if (ks == NULL) {
		return;
	}
	if (atomic_fetch_sub(&ks->refs, 1) != 1) {
		return;
	}
	for (i = 0; i < ks->n; i++) {
		cjose_jwk_release(ks->keys[i].jwk);
	}
	free(ks);
}

const auth_jwk *
auth_keyset_find(const auth_keyset *ks, const char *kid)
{
	int i;

	if (ks == NULL || kid == NULL) {
		return (NULL);
	}
	for (i = 0; i < ks->n; i++) {
		if (ks->keys[i].has_kid && strcmp(ks->keys[i].kid, kid) == 0) {
			return (&ks->keys[i]);
		}
	}
	return (NULL);
}

// A JSON string member without embedded NULs, or NULL.
static const char *
member_str(json_t *obj, const char *name)
{
	json_t *v = json_object_get(obj, name);

	if (!json_is_string(v)) {
		return (NULL);
	}
	if (strlen(json_string_value(v)) != json_string_length(v)) {
		return (NULL);
	}
	return (json_string_value(v));
}

// b64url_ok() is 1 for strict base64url without padding (RFC 7515 2):
// [A-Za-z0-9_-] only, and a length no encoding has (4k + 1) refused.
// libcjose 0.6.2's decoder assert()s on such input ("shift != 1") - an
// abort of the whole service on a bad JWKS document (found by fuzz_jwt) -
// so nothing else reaches it.
static int
b64url_ok(const char *s)
{
	size_t n = strlen(s);

	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		        (c >= '0' && c <= '9') || c == '-' || c == '_')) {
			return (0);
		}
	}
	return (n % 4 != 1);
}

// Imports the public members named in names (NULL-terminated) of jwk into
// a cjose key. Returns NULL if one is missing, is not strict base64url
// (every member but "crv") or cjose refuses the key.
static cjose_jwk_t *
import_public(json_t *jwk, const char *kty, const char *const *names)
{
	json_t      *pub  = json_object();
	cjose_jwk_t *key  = NULL;
	char        *text = NULL;
	cjose_err    cerr;
	size_t       i;

	json_object_set_new(pub, "kty", json_string(kty));
	for (i = 0; names[i] != NULL; i++) {
		const char *v = member_str(jwk, names[i]);
		if (v == NULL || v[0] == '\0' ||
		    (strcmp(names[i], "crv") != 0 && !b64url_ok(v))) {
			goto out;
		}
		json_object_set_new(pub, names[i], json_string(v));
	}
	text = cm_json_dump(pub);
	key  = cjose_jwk_import(text, strlen(text), &cerr);
out:
	free(text);
	json_decref(pub);
	return (key);
}

// Fills *k from one JWKS entry. Returns 0 when usable, else -1 with a
// reason in *why (static string).
static int
parse_key(json_t *jwk, unsigned allowed, auth_jwk *k, const char **why)
{
	static const char *const rsa_names[] = { "n", "e", NULL };
	static const char *const ec_names[]  = { "crv", "x", "y", NULL };
	static const char *const oct_names[] = { "k", NULL };
	const char              *kty, *use, *alg_s, *kid, *crv;
	json_t                  *ops, *v;
	unsigned                 kalgs = 0, alg = 0;
	size_t                   i, bytes;
	cjose_err                cerr;
	cjose_jwk_kty_t          ckty;

	memset(k, 0, sizeof(*k));
	if (!json_is_object(jwk)) {
		*why = "not an object";
		return (-1);
	}
	kty = member_str(jwk, "kty");
	if (kty == NULL) {
		*why = "no kty";
		return (-1);
	}
	v = json_object_get(jwk, "use");
	if (v != NULL) {
		use = member_str(jwk, "use");
		if (use == NULL || strcmp(use, "sig") != 0) {
			*why = "use is not sig";
			return (-1);
		}
	}
	ops = json_object_get(jwk, "key_ops");
	if (ops != NULL) {
		int verify = 0;
		if (!json_is_array(ops)) {
			*why = "bad key_ops";
			return (-1);
		}
		for (i = 0; i < json_array_size(ops); i++) {
			json_t *op = json_array_get(ops, i);
			if (json_is_string(op) &&
			    strcmp(json_string_value(op), "verify") == 0) {
				verify = 1;
			}
		}
		if (!verify) {
			*why = "key_ops lacks verify";
			return (-1);
		}
	}
	if (json_object_get(jwk, "alg") != NULL) {
		alg_s = member_str(jwk, "alg");
		alg = alg_s != NULL ? auth_alg_from_name(alg_s, strlen(alg_s))
		                    : 0;
		if ((alg & allowed) == 0) {
			*why = "alg not allowed";
			return (-1);
		}
	}
	if (json_object_get(jwk, "kid") != NULL) {
		kid = member_str(jwk, "kid");
		if (kid == NULL || strlen(kid) > AUTH_JWT_KID_MAX) {
			*why = "bad kid";
			return (-1);
		}
		snprintf(k->kid, sizeof(k->kid), "%s", kid);
		k->has_kid = 1;
	}

	if (strcmp(kty, "RSA") == 0) {
		kalgs  = ALG_RSA_BITS;
		k->jwk = import_public(jwk, "RSA", rsa_names);
		ckty   = CJOSE_JWK_KTY_RSA;
	} else if (strcmp(kty, "EC") == 0) {
		crv = member_str(jwk, "crv");
		if (crv != NULL && strcmp(crv, "P-256") == 0) {
			kalgs = AUTH_ALG_ES256;
		} else if (crv != NULL && strcmp(crv, "P-384") == 0) {
			kalgs = AUTH_ALG_ES384;
		} else {
			*why = "unsupported curve";
			return (-1);
		}
		k->jwk = import_public(jwk, "EC", ec_names);
		ckty   = CJOSE_JWK_KTY_EC;
	} else if (strcmp(kty, "oct") == 0) {
		// A symmetric key in a (public) JWKS only counts when the
		// operator explicitly allowed HS256 for JWKS keys.
		kalgs = AUTH_ALG_HS256;
		ckty  = CJOSE_JWK_KTY_OCT;
		if ((allowed & AUTH_ALG_HS256) == 0) {
			*why = "oct keys not allowed";
			return (-1);
		}
		k->jwk = import_public(jwk, "oct", oct_names);
	} else {
		*why = "unsupported kty";
		return (-1);
	}
	kalgs &= allowed;
	if (alg != 0) {
		// The JWK names its algorithm: only that one, and only if it
		// fits the key type (an RSA key with "alg":"HS256" is
		// unusable).
		kalgs &= alg;
	}
	if (k->jwk == NULL) {
		*why = "cjose could not import it";
		return (-1);
	}
	if (kalgs == 0) {
		*why = "no allowed algorithm for this key type";
		goto fail;
	}
	if (cjose_jwk_get_kty(k->jwk, &cerr) != ckty) {
		*why = "kty mismatch after import";
		goto fail;
	}
	bytes = cjose_jwk_get_keysize(k->jwk, &cerr) / 8;
	switch (ckty) {
	case CJOSE_JWK_KTY_RSA:
		if (bytes * 8 < AUTH_JWK_RSA_MIN_BITS ||
		    bytes > AUTH_JWK_RSA_MAX_BYTES) {
			*why = "RSA modulus size out of range";
			goto fail;
		}
		k->sig_len = bytes;
		break;
	case CJOSE_JWK_KTY_EC:
		k->sig_len = (kalgs == AUTH_ALG_ES256) ? 64 : 96;
		if (cjose_jwk_EC_get_curve(k->jwk, &cerr) !=
		    (kalgs == AUTH_ALG_ES256 ? CJOSE_JWK_EC_P_256
		                             : CJOSE_JWK_EC_P_384)) {
			*why = "curve mismatch after import";
			goto fail;
		}
		break;
	default:
		if (bytes < AUTH_SECRET_MIN_LEN) {
			*why = "oct key too short";
			goto fail;
		}
		k->sig_len = 32;
		break;
	}
	k->algs = kalgs;
	return (0);

fail:
	cjose_jwk_release(k->jwk);
	k->jwk = NULL;
	return (-1);
}

cm_err
auth_keyset_parse(const char *json, size_t len, unsigned allowed_algs,
    auth_keyset **out, char *detail, size_t detail_len)
{
	json_t      *doc = NULL, *keys;
	auth_keyset *ks  = NULL;
	const char  *why;
	char         perr[128];
	size_t       i, n;
	cm_err       rv;

	rv = cm_json_parse(
	    json, len, AUTH_IDP_BODY_MAX, &doc, perr, sizeof(perr));
	if (rv != CM_OK) {
		snprintf(detail, detail_len, "JWKS is not JSON: %s", perr);
		rv = CM_EUNAVAIL;
		goto out;
	}
	keys = json_object_get(doc, "keys");
	if (!json_is_object(doc) || !json_is_array(keys)) {
		snprintf(detail, detail_len, "JWKS has no \"keys\" array");
		rv = CM_EUNAVAIL;
		goto out;
	}
	ks = keyset_alloc();
	n  = json_array_size(keys);
	if (n > JWKS_MAX_ENTRIES) {
		cm_warn(NULL,
		    "JWKS has %zu entries; only the first %d are read", n,
		    JWKS_MAX_ENTRIES);
		n = JWKS_MAX_ENTRIES;
	}
	for (i = 0; i < n && ks->n < AUTH_JWKS_MAX_KEYS; i++) {
		auth_jwk *k = &ks->keys[ks->n];
		if (parse_key(
		        json_array_get(keys, i), allowed_algs, k, &why) != 0) {
			cm_debug(NULL, "JWKS entry %zu skipped: %s", i, why);
			continue;
		}
		ks->n++;
	}
	if (i < n) {
		cm_warn(NULL,
		    "JWKS has more than %d usable keys; rest ignored",
		    AUTH_JWKS_MAX_KEYS);
	}
	*out = ks;
	ks   = NULL;
	rv   = CM_OK;
out:
	auth_keyset_rele(ks);
	json_decref(doc);
	return (rv);
}

cm_err
auth_keyset_from_secret(
    const char *secret, size_t len, unsigned algs, auth_keyset **out)
{
	auth_keyset *ks;
	cjose_err    cerr;
	cjose_jwk_t *jwk;

	algs &= AUTH_ALG_HS256;
	if (secret == NULL || len < AUTH_SECRET_MIN_LEN || algs == 0) {
		return (CM_EINVAL);
	}
	jwk = cjose_jwk_create_oct_spec((const uint8_t *) secret, len, &cerr);
	if (jwk == NULL) {
		return (CM_EINVAL);
	}
	ks                  = keyset_alloc();
	ks->n               = 1;
	ks->keys[0].jwk     = jwk;
	ks->keys[0].algs    = algs;
	ks->keys[0].sig_len = 32;
	*out                = ks;
	return (CM_OK);
}

// ---------------------------------------------------------------------
// Live source
// ---------------------------------------------------------------------

static const char *
nz(const char *s)
{
	return (s != NULL ? s : "");
}

static int
is_http_url(const char *u)
{
	return (
	    strncmp(u, "https://", 8) == 0 || strncmp(u, "http://", 7) == 0);
}

cm_err
auth_jwks_new(const auth_config *cfg, auth_jwks **out)
{
	auth_jwks         *j;
	pthread_condattr_t ca;
	const char        *url = nz(cfg->jwks_url);
	const char        *iss = nz(cfg->oidc_issuer);

	if (url[0] == '\0' && iss[0] == '\0') {
		cm_error(NULL, "jwt: set AUTH_JWKS_URL or OIDC_ISSUER");
		return (CM_EINVAL);
	}
	if (url[0] != '\0' &&
	    (strlen(url) >= AUTH_URL_MAX || !is_http_url(url))) {
		cm_error(NULL,
		    "jwt: AUTH_JWKS_URL must be an http(s) URL "
		    "shorter than %d bytes",
		    AUTH_URL_MAX);
		return (CM_EINVAL);
	}
	if (url[0] == '\0' &&
	    (strlen(iss) + sizeof(DISCOVERY_PATH) >= AUTH_URL_MAX ||
	        !is_http_url(iss))) {
		cm_error(NULL,
		    "jwt: OIDC_ISSUER must be an http(s) URL "
		    "shorter than %d bytes",
		    (int) (AUTH_URL_MAX - sizeof(DISCOVERY_PATH)));
		return (CM_EINVAL);
	}

	j       = cm_xcalloc(1, sizeof(*j));
	j->cfg  = cfg;
	j->algs = cfg->jwks_algs != 0 ? (cfg->jwks_algs & AUTH_ALG_ALL)
	                              : AUTH_JWKS_ALGS_DEFAULT;
	j->cooldown_ms =
	    (int64_t) (cfg->jwks_cooldown_s < AUTH_JWKS_COOLDOWN_MIN_S
	            ? AUTH_JWKS_COOLDOWN_MIN_S
	            : cfg->jwks_cooldown_s) *
	    1000;
	j->max_age_s = cfg->jwks_max_age_s > 0 ? cfg->jwks_max_age_s
	                                       : AUTH_JWKS_MAX_AGE_DEFAULT_S;
	if (j->max_age_s < AUTH_JWKS_MIN_AGE_S) {
		j->max_age_s = AUTH_JWKS_MIN_AGE_S;
	}
	if (url[0] != '\0') {
		snprintf(j->url, sizeof(j->url), "%s", url);
	} else {
		j->discover = 1;
	}
	j->last_rv = CM_EUNAVAIL;
	pthread_rwlock_init(&j->lock, NULL);
	pthread_mutex_init(&j->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&j->cv, &ca);
	pthread_condattr_destroy(&ca);
	*out = j;
	return (CM_OK);
}

void
auth_jwks_free(auth_jwks *j)
{
	int i;

	if (j == NULL) {
		return;
	}
	auth_keyset_rele(j->keys);
	for (i = 0; i < AUTH_JWKS_NEG_MAX; i++) {
		free(j->neg[i].kid);
	}
	pthread_cond_destroy(&j->cv);
	pthread_mutex_destroy(&j->mu);
	pthread_rwlock_destroy(&j->lock);
	free(j);
}

void
auth_jwks_url(auth_jwks *j, char *buf, size_t len)
{
	pthread_rwlock_rdlock(&j->lock);
	snprintf(buf, len, "%s", j->url);
	pthread_rwlock_unlock(&j->lock);
}

// Takes a hold on the current set (may be NULL) and reads its expiry.
static auth_keyset *
current(auth_jwks *j, int64_t *expires_ms)
{
	auth_keyset *ks;

	pthread_rwlock_rdlock(&j->lock);
	ks = auth_keyset_hold(j->keys);
	if (expires_ms != NULL) {
		*expires_ms = j->expires_ms;
	}
	pthread_rwlock_unlock(&j->lock);
	return (ks);
}

// Reads a JSON object from an IdP answer. CM_EUNAVAIL on anything else.
static cm_err
idp_json(auth_worker *w, const auth_config *cfg, const char *url,
    const char *what, json_t **out)
{
	static const char *const hdrs[] = {
		"Accept: application/json, application/jwk-set+json", NULL
	};
	auth_http_response resp = { 0 };
	json_t            *doc  = NULL;
	char               perr[128];
	cm_err             rv;

	rv = auth_http_request(w, cfg, "GET", url, hdrs, NULL, &resp);
	if (rv != CM_OK) {
		cm_warn(NULL, "jwt: %s fetch from %s failed: %s", what, url,
		    cm_strerror(rv));
		goto out;
	}
	if (resp.status != 200) {
		cm_warn(NULL, "jwt: %s fetch from %s answered HTTP %ld", what,
		    url, resp.status);
		rv = CM_EUNAVAIL;
		goto out;
	}
	rv = cm_json_parse(resp.body, resp.body_len, AUTH_IDP_BODY_MAX, &doc,
	    perr, sizeof(perr));
	if (rv != CM_OK || !json_is_object(doc)) {
		cm_warn(
		    NULL, "jwt: %s from %s is not a JSON object", what, url);
		rv = CM_EUNAVAIL;
		goto out;
	}
	*out = doc;
	doc  = NULL;
	rv   = CM_OK;
out:
	json_decref(doc);
	auth_http_response_free(&resp);
	return (rv);
}

// 1 when the discovery document's issuer is OIDC_ISSUER. config.c strips
// a trailing slash from OIDC_ISSUER, so "https://x/" (Auth0 style) also
// matches when the configured value is "https://x"; nothing else does.
static int
same_issuer(const char *got, const char *want)
{
	size_t n = strlen(want);

	if (strcmp(got, want) == 0) {
		return (1);
	}
	return (strncmp(got, want, n) == 0 && strcmp(got + n, "/") == 0);
}

// OIDC discovery: writes the issuer's jwks_uri into url.
static cm_err
discover(auth_jwks *j, auth_worker *w, char *url, size_t url_len)
{
	const char *iss = nz(j->cfg->oidc_issuer);
	char        disc[AUTH_URL_MAX];
	size_t      n   = strlen(iss);
	json_t     *doc = NULL;
	const char *got_iss, *juri;
	cm_err      rv;

	// Discovery URL = issuer without a trailing slash + the path (§4).
	while (n > 0 && iss[n - 1] == '/') {
		n--;
	}
	snprintf(disc, sizeof(disc), "%.*s%s", (int) n, iss, DISCOVERY_PATH);
	rv = idp_json(w, j->cfg, disc, "discovery", &doc);
	if (rv != CM_OK) {
		goto out;
	}
	got_iss = member_str(doc, "issuer");
	juri    = member_str(doc, "jwks_uri");
	if (got_iss == NULL || !same_issuer(got_iss, iss)) {
		// OIDC Discovery §4.3: the issuer MUST be identical, or an
		// attacker-controlled document could point us at its keys.
		cm_warn(NULL,
		    "jwt: discovery issuer \"%s\" is not OIDC_ISSUER",
		    got_iss != NULL ? got_iss : "(missing)");
		rv = CM_EUNAVAIL;
		goto out;
	}
	if (juri == NULL || strlen(juri) >= url_len || !is_http_url(juri) ||
	    (strncmp(iss, "https://", 8) == 0 &&
	        strncmp(juri, "https://", 8) != 0)) {
		cm_warn(NULL,
		    "jwt: discovery jwks_uri missing, too long or not "
		    "https for an https issuer");
		rv = CM_EUNAVAIL;
		goto out;
	}
	snprintf(url, url_len, "%s", juri);
	rv = CM_OK;
out:
	json_decref(doc);
	return (rv);
}

// One JWKS fetch (with discovery first when needed). Only ever runs in
// the thread that set j->fetching, so it reads j->url without the lock.
static cm_err
do_fetch(auth_jwks *j, auth_worker *w)
{
	static const char *const hdrs[] = {
		"Accept: application/jwk-set+json, application/json", NULL
	};
	auth_http_response resp = { 0 };
	auth_keyset       *ks = NULL, *old = NULL;
	char               url[AUTH_URL_MAX];
	char               detail[160];
	int64_t            age;
	cm_err             rv;

	snprintf(url, sizeof(url), "%s", j->url);
	if (url[0] == '\0') {
		rv = discover(j, w, url, sizeof(url));
		if (rv != CM_OK) {
			goto out;
		}
		pthread_rwlock_wrlock(&j->lock);
		snprintf(j->url, sizeof(j->url), "%s", url);
		pthread_rwlock_unlock(&j->lock);
		cm_info(NULL, "jwt: discovered jwks_uri %s", url);
	}

	atomic_fetch_add(&auth_g_stats.jwks_fetches, 1);
	rv = auth_http_request(w, j->cfg, "GET", url, hdrs, NULL, &resp);
	if (rv != CM_OK) {
		cm_warn(NULL, "jwt: JWKS fetch from %s failed: %s", url,
		    cm_strerror(rv));
		goto out;
	}
	if (resp.status != 200) {
		cm_warn(NULL, "jwt: JWKS fetch from %s answered HTTP %ld", url,
		    resp.status);
		rv = CM_EUNAVAIL;
		goto out;
	}
	rv = auth_keyset_parse(
	    resp.body, resp.body_len, j->algs, &ks, detail, sizeof(detail));
	if (rv != CM_OK) {
		cm_warn(NULL,
		    "jwt: JWKS from %s unusable (%s); keeping the "
		    "previous keys",
		    url, detail);
		goto out;
	}
	age = resp.max_age_s >= 0 ? resp.max_age_s : j->max_age_s;
	if (age > j->max_age_s) {
		age = j->max_age_s;
	}
	if (age < AUTH_JWKS_MIN_AGE_S) {
		age = AUTH_JWKS_MIN_AGE_S;
	}
	pthread_rwlock_wrlock(&j->lock);
	old           = j->keys;
	j->keys       = ks;
	j->expires_ms = cm_mono_ms() + age * 1000;
	pthread_rwlock_unlock(&j->lock);
	cm_info(NULL,
	    "jwt: loaded %d signing key(s) from %s (refresh in %lld s)", ks->n,
	    url, (long long) age);
	ks = NULL;
out:
	cm_counter_inc(
	    rv == CM_OK ? auth_g_metrics.jwks_ok : auth_g_metrics.jwks_error);
	if (rv != CM_OK && j->discover) {
		// Rediscover next time: the jwks_uri may have moved.
		pthread_rwlock_wrlock(&j->lock);
		j->url[0] = '\0';
		pthread_rwlock_unlock(&j->lock);
	}
	auth_keyset_rele(old);
	auth_keyset_rele(ks);
	auth_http_response_free(&resp);
	return (rv);
}

// With mu held: waits until the running fetch completes. Returns its
// result, or CM_ETIMEDOUT when it takes longer than it possibly should.
static cm_err
wait_fetch(auth_jwks *j)
{
	uint64_t        gen = j->fetch_gen;
	struct timespec ts;
	int64_t         wait_ms;
	int             rc = 0;

	wait_ms = 2 * (int64_t) j->cfg->idp_timeout_ms + FETCH_WAIT_SLACK_MS;
	cm_timespec_in(&ts, CLOCK_MONOTONIC, wait_ms);
	while (j->fetching && j->fetch_gen == gen && rc != ETIMEDOUT) {
		rc = pthread_cond_timedwait(&j->cv, &j->mu, &ts);
	}
	if (j->fetch_gen == gen) {
		return (CM_ETIMEDOUT);
	}
	return (j->last_rv);
}

// With mu held and j->fetching clear: runs one fetch with mu released,
// then publishes the result to waiters. Returns with mu held.
static cm_err
run_fetch(auth_jwks *j, auth_worker *w)
{
	cm_err rv;

	j->fetching = 1;
	pthread_mutex_unlock(&j->mu);
	rv = do_fetch(j, w);
	pthread_mutex_lock(&j->mu);
	j->fetching = 0;
	j->fetch_gen++;
	j->last_rv = rv;
	if (rv != CM_OK) {
		int64_t wait = AUTH_JWKS_RETRY_MS;
		int     have_keys;

		pthread_rwlock_rdlock(&j->lock);
		have_keys = j->keys != NULL;
		pthread_rwlock_unlock(&j->lock);
		if (j->fail_streak < 30) {
			j->fail_streak++;
		}
		if (have_keys) {
			int i;
			for (i = 1; i < j->fail_streak &&
			     wait < AUTH_JWKS_RETRY_MAX_MS;
			     i++) {
				wait *= 2;
			}
			if (wait > AUTH_JWKS_RETRY_MAX_MS) {
				wait = AUTH_JWKS_RETRY_MAX_MS;
			}
		}
		j->retry_ms = cm_mono_ms() + wait;
	} else {
		j->fail_streak = 0;
	}
	pthread_cond_broadcast(&j->cv);
	return (rv);
}

// Fetch when there is no set (wait = 1: join a running fetch) or when it
// is stale (wait = 0: leave it to whoever is fetching).
static cm_err
fetch_shared(auth_jwks *j, auth_worker *w, int wait)
{
	cm_err rv;

	pthread_mutex_lock(&j->mu);
	if (j->fetching) {
		rv = wait ? wait_fetch(j) : CM_OK;
	} else if (cm_mono_ms() < j->retry_ms) {
		rv = j->last_rv != CM_OK ? j->last_rv : CM_EUNAVAIL;
	} else {
		rv = run_fetch(j, w);
	}
	pthread_mutex_unlock(&j->mu);
	return (rv);
}

// With mu held.
static int
neg_has(auth_jwks *j, const char *kid, int64_t now)
{
	int i;

	for (i = 0; i < AUTH_JWKS_NEG_MAX; i++) {
		if (j->neg[i].kid != NULL &&
		    now - j->neg[i].at_ms < j->cooldown_ms &&
		    strcmp(j->neg[i].kid, kid) == 0) {
			return (1);
		}
	}
	return (0);
}

// With mu held.
static void
neg_add(auth_jwks *j, const char *kid, int64_t now)
{
	neg_entry *e = &j->neg[j->neg_next];

	free(e->kid);
	e->kid      = cm_xstrndup(kid, AUTH_JWT_KID_MAX);
	e->at_ms    = now;
	j->neg_next = (j->neg_next + 1) % AUTH_JWKS_NEG_MAX;
}

// The kid is not in *ksp. Decides whether to refetch (see the header);
// may replace *ksp by a newer set.
static cm_err
kid_miss(auth_jwks *j, auth_worker *w, const char *kid, auth_keyset **ksp)
{
	auth_keyset *cur = NULL;
	int64_t      now;
	int          waited = 0;
	cm_err       rv     = CM_OK;

	pthread_mutex_lock(&j->mu);
	for (;;) {
		// Look again: a fetch may have completed since the caller
		// took its set.
		auth_keyset_rele(cur);
		cur = current(j, NULL);
		if (cur != NULL && auth_keyset_find(cur, kid) != NULL) {
			goto done;
		}
		if (!j->fetching || waited) {
			break;
		}
		// Someone is fetching right now: that fetch sees whatever the
		// IdP publishes now, so its result decides for us too.
		rv     = wait_fetch(j);
		waited = 1;
		if (rv != CM_OK) {
			goto done;
		}
	}
	now = cm_mono_ms();
	if (waited || neg_has(j, kid, now) ||
	    (j->kid_fetched && now - j->kid_fetch_ms < j->cooldown_ms)) {
		if (!neg_has(j, kid, now)) {
			neg_add(j, kid, now);
		}
		goto done;
	}
	if (now < j->retry_ms) {
		// The IdP failed a moment ago: we cannot tell whether the
		// kid is new, so this is "unavailable", not "invalid".
		rv = CM_EUNAVAIL;
		goto done;
	}
	j->kid_fetched  = 1;
	j->kid_fetch_ms = now;
	cm_info(NULL, "jwt: unknown kid, refetching the JWKS");
	rv = run_fetch(j, w);
	if (rv != CM_OK) {
		goto done;
	}
	auth_keyset_rele(cur);
	cur = current(j, NULL);
	if (auth_keyset_find(cur, kid) == NULL) {
		neg_add(j, kid, cm_mono_ms());
	}
done:
	pthread_mutex_unlock(&j->mu);
	if (rv == CM_OK && cur != NULL) {
		auth_keyset_rele(*ksp);
		*ksp = cur;
		cur  = NULL;
	}
	auth_keyset_rele(cur);
	return (rv);
}

cm_err
auth_jwks_acquire(
    auth_jwks *j, auth_worker *w, const char *kid, auth_keyset **out)
{
	auth_keyset *ks;
	int64_t      exp;
	cm_err       rv = CM_OK;

	ks = current(j, &exp);
	if (ks == NULL) {
		rv = fetch_shared(j, w, 1);
		ks = current(j, &exp);
		if (ks == NULL) {
			rv = (rv != CM_OK) ? rv : CM_EUNAVAIL;
			goto out;
		}
	} else if (cm_mono_ms() >= exp) {
		// Stale: refresh now if nobody else is; a failure keeps the
		// set we have (the IdP may be down for a while).
		(void) fetch_shared(j, w, 0);
		auth_keyset_rele(ks);
		ks = current(j, NULL);
	}
	rv = CM_OK;
	if (kid != NULL && auth_keyset_find(ks, kid) == NULL) {
		rv = kid_miss(j, w, kid, &ks);
		if (rv != CM_OK) {
			goto out;
		}
	}
	*out = ks;
	ks   = NULL;
out:
	auth_keyset_rele(ks);
	return (rv);
}
