// SPDX-License-Identifier: MIT
//
// The gateway's identity cache: a small, bounded map from a digest of a
// request's credentials (its Authorization values and the scopes the route
// requires) to the identity the auth-service answered, kept no longer than
// the auth-service allows (Identity.reuse_ms) nor GATEWAY_AUTH_CACHE_TTL.
// A hit skips the Authenticate rpc altogether. Only successful answers are
// kept: a refusal is always asked again (fail closed), and a sign-out
// reaches the gateway within the auth-service's own cache TTL, because the
// gateway never keeps an answer past the auth-service's cache entry.
//
// Layout: SHARDS shards, each a mutex and an array of BUCKET-way sets; a
// key lives in one set of one shard (chosen by its digest). A full set
// evicts its soonest-expiring entry. No allocation after start.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/util.h"
#include "common/xalloc.h"
#include "gateway/gw.h"

// Shards (independent locks): enough that two event loops rarely meet.
#define SHARDS 16
// Entries per set: a new key evicts the soonest-expiring of these.
#define BUCKET 4

typedef struct slot {
	unsigned char         key[GW_AUTHCACHE_KEY_LEN];
	int64_t               until_ms; // monotonic; 0 = empty
	gw_authcache_identity id;
} slot;

typedef struct shard {
	pthread_mutex_t mu;
	slot           *slots; // nsets * BUCKET
	size_t          nsets;
} shard;

struct gw_authcache {
	shard   shards[SHARDS];
	EVP_MD *sha256;
};

cm_err
gw_authcache_new(size_t max_entries, gw_authcache **out)
{
	gw_authcache *c;
	size_t        per   = (max_entries + SHARDS - 1) / SHARDS;
	size_t        nsets = (per + BUCKET - 1) / BUCKET;

	if (max_entries == 0) {
		*out = NULL;
		return (CM_OK);
	}
	c         = cm_xcalloc(1, sizeof(*c));
	c->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (c->sha256 == NULL) {
		free(c);
		return (CM_EINTERNAL);
	}
	for (int i = 0; i < SHARDS; i++) {
		pthread_mutex_init(&c->shards[i].mu, NULL);
		c->shards[i].nsets = nsets;
		c->shards[i].slots = cm_xcalloc(nsets * BUCKET, sizeof(slot));
	}
	*out = c;
	return (CM_OK);
}

void
gw_authcache_free(gw_authcache *c)
{
	if (c == NULL) {
		return;
	}
	for (int i = 0; i < SHARDS; i++) {
		pthread_mutex_destroy(&c->shards[i].mu);
		free(c->shards[i].slots);
	}
	EVP_MD_free(c->sha256);
	free(c);
}

// add_field hashes one length-prefixed field, so no two different lists
// of values encode the same bytes.
static void
add_field(EVP_MD_CTX *ctx, const char *s)
{
	size_t        n = strlen(s);
	unsigned char pre[8];

	for (int i = 0; i < 8; i++) {
		pre[i] = (unsigned char) (n >> (8 * i));
	}
	CM_ASSERT(EVP_DigestUpdate(ctx, pre, sizeof(pre)) == 1);
	CM_ASSERT(EVP_DigestUpdate(ctx, s, n) == 1);
}

void
gw_authcache_key(const gw_authcache *c, const char *const *authz,
    size_t nauthz, const char *const *scopes, size_t nscopes,
    unsigned char key[GW_AUTHCACHE_KEY_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	char        count[32];

	CM_ASSERT(ctx != NULL);
	CM_ASSERT(EVP_DigestInit_ex(ctx, c->sha256, NULL) == 1);
	add_field(ctx, "threadgate-gw-authcache-v1");
	snprintf(count, sizeof(count), "%zu", nauthz);
	add_field(ctx, count);
	for (size_t i = 0; i < nauthz; i++) {
		add_field(ctx, authz[i]);
	}
	snprintf(count, sizeof(count), "%zu", nscopes);
	add_field(ctx, count);
	for (size_t i = 0; i < nscopes; i++) {
		add_field(ctx, scopes[i]);
	}
	CM_ASSERT(EVP_DigestFinal_ex(ctx, key, NULL) == 1);
	EVP_MD_CTX_free(ctx);
}

// The shard and set of a key (its digest is uniform already).
static slot *
set_of(gw_authcache *c, const unsigned char *key, shard **sh)
{
	uint64_t h = 0;

	memcpy(&h, key, sizeof(h));
	*sh = &c->shards[h % SHARDS];
	return (&(*sh)->slots[((h / SHARDS) % (*sh)->nsets) * BUCKET]);
}

int
gw_authcache_get(gw_authcache *c,
    const unsigned char key[GW_AUTHCACHE_KEY_LEN], int64_t now_ms,
    gw_authcache_identity *out)
{
	shard *sh;
	slot  *set;
	int    found = 0;

	if (c == NULL) {
		return (0);
	}
	set = set_of(c, key, &sh);
	pthread_mutex_lock(&sh->mu);
	for (int i = 0; i < BUCKET; i++) {
		slot *s = &set[i];

		if (s->until_ms == 0 ||
		    memcmp(s->key, key, GW_AUTHCACHE_KEY_LEN) != 0) {
			continue;
		}
		if (s->until_ms <= now_ms) {
			s->until_ms = 0; // expired: gone
			break;
		}
		*out  = s->id;
		found = 1;
		break;
	}
	pthread_mutex_unlock(&sh->mu);
	return (found);
}

void
gw_authcache_put(gw_authcache   *c,
    const unsigned char          key[GW_AUTHCACHE_KEY_LEN],
    const gw_authcache_identity *id, int64_t now_ms, int64_t until_ms)
{
	shard *sh;
	slot  *set;
	slot  *victim = NULL;

	if (c == NULL || until_ms <= now_ms) {
		return;
	}
	set = set_of(c, key, &sh);
	pthread_mutex_lock(&sh->mu);
	for (int i = 0; i < BUCKET; i++) {
		slot *s = &set[i];

		if (s->until_ms != 0 &&
		    memcmp(s->key, key, GW_AUTHCACHE_KEY_LEN) == 0) {
			victim = s; // the same key: replace it
			break;
		}
		if (victim == NULL || s->until_ms <= now_ms ||
		    (victim->until_ms > now_ms &&
		        s->until_ms < victim->until_ms)) {
			victim = s;
		}
	}
	memcpy(victim->key, key, GW_AUTHCACHE_KEY_LEN);
	victim->id       = *id;
	victim->until_ms = until_ms;
	pthread_mutex_unlock(&sh->mu);
}
