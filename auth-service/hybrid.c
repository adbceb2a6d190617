// SPDX-License-Identifier: MIT
//
// The hybrid provider: verify locally with the jwt provider (no network),
// then confirm the session with the IdP (the supabase GET /auth/v1/user
// call) at most once per token per AUTH_HYBRID_INTERVAL seconds. Logout
// and revocation therefore take effect within the interval, while most
// requests cost no network call.
//
// Last confirmation times live in a direct-mapped table indexed by the
// token's SHA-256: a bounded map where a collision simply forgets the
// older token (which then gets confirmed again: safe, one extra call).
// The server also caps the result cache's TTL at the confirmation's
// validity (auth_hybrid_valid_until), so no cached answer outlives it.
//
// Outage policy: when a confirmation is due and the IdP cannot be asked
// (unreachable, timeout, 5xx, nonsense), the request fails with
// CM_EUNAVAIL by default; with AUTH_HYBRID_OUTAGE=allow the locally
// verified token is accepted (and not marked confirmed, so the next
// request tries the IdP again). An IdP refusal is always CM_EAUTH.

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "auth-service/auth.h"
#include "auth-service/service.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"

// Slots of the confirmation table: 16384 * 40 bytes = 640 KiB. Tokens
// beyond that many concurrently active ones only cost extra
// confirmations, never a wrong answer.
#define HYBRID_SLOTS 16384

typedef struct confirm_slot {
	unsigned char hash[32];
	int64_t       at_s; // last confirmation (Unix s); 0 = empty
} confirm_slot;

typedef struct hybrid_provider {
	auth_provider      base;
	const auth_config *cfg;
	auth_provider     *local;
	auth_provider     *remote;
	pthread_mutex_t    mtx;
	confirm_slot      *slots;
	char              *scope;
} hybrid_provider;

static void
token_hash(const char *token, unsigned char out[32])
{
	unsigned int n = 0;

	CM_ASSERT(EVP_Digest(
	              token, strlen(token), out, &n, EVP_sha256(), NULL) == 1);
}

static size_t
slot_of(const unsigned char h[32])
{
	size_t v = ((size_t) h[0] << 16) | ((size_t) h[1] << 8) | h[2];
	return (v % HYBRID_SLOTS);
}

static int64_t
last_confirm(hybrid_provider *hp, const unsigned char h[32])
{
	int64_t       at = 0;
	confirm_slot *s  = &hp->slots[slot_of(h)];

	pthread_mutex_lock(&hp->mtx);
	if (s->at_s != 0 && memcmp(s->hash, h, 32) == 0) {
		at = s->at_s;
	}
	pthread_mutex_unlock(&hp->mtx);
	return (at);
}

static void
set_confirm(hybrid_provider *hp, const unsigned char h[32], int64_t at)
{
	confirm_slot *s = &hp->slots[slot_of(h)];

	pthread_mutex_lock(&hp->mtx);
	memcpy(s->hash, h, 32);
	s->at_s = at;
	pthread_mutex_unlock(&hp->mtx);
}

int64_t
auth_hybrid_valid_until(auth_provider *p, const char *token)
{
	hybrid_provider *hp = (hybrid_provider *) p;
	unsigned char    h[32];
	int64_t          at;

	token_hash(token, h);
	at = last_confirm(hp, h);
	return (at == 0 ? 0 : at + hp->cfg->hybrid_interval_s);
}

static cm_err
hybrid_verify(auth_provider *p, auth_worker *w, const char *token,
    auth_result *out, char *detail, size_t detail_len)
{
	hybrid_provider *hp = (hybrid_provider *) p;
	auth_result      local;
	auth_result      remote;
	unsigned char    h[32];
	int64_t          now_s;
	int64_t          at;
	cm_err           rv;

	rv =
	    hp->local->verify(hp->local, w, token, &local, detail, detail_len);
	if (rv != CM_OK) {
		return (rv);
	}
	token_hash(token, h);
	now_s = cm_now_ms() / 1000;
	at    = last_confirm(hp, h);
	if (at != 0 && now_s - at < hp->cfg->hybrid_interval_s) {
		*out = local;
		return (CM_OK);
	}
	rv = hp->remote->verify(
	    hp->remote, w, token, &remote, detail, detail_len);
	if (rv == CM_EAUTH) {
		set_confirm(hp, h, 0);
		return (CM_EAUTH);
	}
	if (rv != CM_OK) {
		if (hp->cfg->hybrid_fail_open) {
			cm_warn(NULL,
			    "hybrid: identity provider unavailable; "
			    "accepting a locally verified token "
			    "(AUTH_HYBRID_OUTAGE=allow)");
			*out = local;
			return (CM_OK);
		}
		return (rv);
	}
	if (strcmp(remote.identity, local.identity) != 0) {
		// The IdP says the session belongs to someone else: do not
		// guess which side is right.
		cm_warn(NULL,
		    "hybrid: IdP user id differs from the token's "
		    "identity claim");
		snprintf(detail, detail_len,
		    "identity provider disagrees with the token");
		return (CM_EUNAVAIL);
	}
	set_confirm(hp, h, now_s);
	if (local.email[0] == '\0') {
		memcpy(local.email, remote.email, sizeof(local.email));
	}
	*out = local;
	return (CM_OK);
}

static void
hybrid_destroy(auth_provider *p)
{
	hybrid_provider *hp = (hybrid_provider *) p;

	if (hp == NULL) {
		return;
	}
	if (hp->local != NULL) {
		hp->local->destroy(hp->local);
	}
	if (hp->remote != NULL) {
		hp->remote->destroy(hp->remote);
	}
	pthread_mutex_destroy(&hp->mtx);
	free(hp->slots);
	free(hp->scope);
	free(hp);
}

// The local (jwt) half decides: without signing keys nothing verifies.
static int
hybrid_health(auth_provider *p, auth_worker *w, char *detail, size_t n)
{
	hybrid_provider *hp = (hybrid_provider *) p;

	if (hp->local->health == NULL) {
		return (1);
	}
	return (hp->local->health(hp->local, w, detail, n));
}

cm_err
auth_hybrid_new(const auth_config *cfg, auth_provider **out)
{
	hybrid_provider *hp;
	cm_err           rv;
	size_t           n;

	if (cfg->hybrid_interval_s <= 0) {
		cm_error(NULL, "AUTH_HYBRID_INTERVAL must be positive");
		return (CM_EINVAL);
	}
	hp      = cm_xcalloc(1, sizeof(*hp));
	hp->cfg = cfg;
	pthread_mutex_init(&hp->mtx, NULL);
	hp->slots = cm_xcalloc(HYBRID_SLOTS, sizeof(*hp->slots));
	rv        = auth_jwt_new(cfg, &hp->local);
	if (rv != CM_OK) {
		goto out;
	}
	rv = auth_supabase_new(cfg, &hp->remote);
	if (rv != CM_OK) {
		goto out;
	}
	n = strlen(hp->local->cache_scope) + strlen(hp->remote->cache_scope) +
	    64;
	hp->scope = cm_xmalloc(n);
	snprintf(hp->scope, n, "hybrid\n%d\n%s\n%s", cfg->hybrid_interval_s,
	    hp->local->cache_scope, hp->remote->cache_scope);
	hp->base.name        = "hybrid";
	hp->base.verify      = hybrid_verify;
	hp->base.destroy     = hybrid_destroy;
	hp->base.health      = hybrid_health;
	hp->base.cache_scope = hp->scope;
	*out                 = &hp->base;
	hp                   = NULL;
out:
	hybrid_destroy(hp != NULL ? &hp->base : NULL);
	return (rv);
}
