// SPDX-License-Identifier: MIT
//
// The result cache (see cache.h for the contract). The key space is split
// over AUTH_CACHE_SHARDS shards by the first key byte; each shard has its
// own mutex, a chained hash table, an LRU list (head = most recently
// used) and the list of verifications in flight for its keys. Entries
// store the result strings packed into one allocation, so an entry costs
// about 100 bytes plus its strings rather than a whole auth_result.

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "auth-service/cache.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"

// Version tag at the start of every encoded key: change it when the
// encoding changes so old and new keys can never collide.
#define CACHE_KEY_TAG "threadgate-auth-cache-v1"

typedef struct entry entry;
struct entry {
	unsigned char key[AUTH_CACHE_KEY_LEN];
	int64_t       expires_s;  // keep until (Unix s)
	int64_t       result_exp; // auth_result.expires_at
	entry        *hnext;      // hash chain
	entry        *prev;       // LRU, towards head
	entry        *next;       // LRU, towards tail
	uint16_t      id_len;
	uint16_t      email_len;
	uint16_t      scopes_len;
	uint16_t      session_len;
	char          data[]; // identity\0email\0scopes\0session\0
};

struct auth_flight {
	unsigned char  key[AUTH_CACHE_KEY_LEN];
	pthread_cond_t cv;
	int            refs; // leader + waiters
	int            done;
	cm_err         rv;
	auth_result    result;
	auth_flight   *next;
	int            shard;
};

typedef struct shard {
	pthread_mutex_t mtx;
	entry         **buckets;
	size_t          mask; // buckets - 1 (a power of two)
	entry          *head;
	entry          *tail;
	size_t          count;
	size_t          cap;
	auth_flight    *flights;
} shard;

struct auth_cache {
	shard         shards[AUTH_CACHE_SHARDS];
	atomic_size_t count;
};

static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static EVP_MD        *md_sha256;

static void
md_init(void)
{
	md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	CM_ASSERT(md_sha256 != NULL);
}

// ---------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------

static void
digest_field(EVP_MD_CTX *ctx, const void *p, size_t len)
{
	unsigned char pre[8];
	uint64_t      l = (uint64_t) len;

	for (int i = 7; i >= 0; i--) {
		pre[i] = (unsigned char) (l & 0xff);
		l >>= 8;
	}
	CM_ASSERT(EVP_DigestUpdate(ctx, pre, sizeof(pre)) == 1);
	if (len > 0) {
		CM_ASSERT(EVP_DigestUpdate(ctx, p, len) == 1);
	}
}

static int
cmp_str(const void *a, const void *b)
{
	return (strcmp(*(const char *const *) a, *(const char *const *) b));
}

void
auth_cache_key(const char *scope, const char *token, size_t token_len,
    const char *const *scopes, size_t nscopes,
    unsigned char key[AUTH_CACHE_KEY_LEN])
{
	EVP_MD_CTX  *ctx;
	const char **sorted = NULL;
	unsigned int outl   = 0;
	char         n[32];

	pthread_once(&md_once, md_init);
	ctx = EVP_MD_CTX_new();
	CM_ASSERT(ctx != NULL);
	CM_ASSERT(EVP_DigestInit_ex(ctx, md_sha256, NULL) == 1);
	digest_field(ctx, CACHE_KEY_TAG, strlen(CACHE_KEY_TAG));
	digest_field(ctx, scope != NULL ? scope : "",
	    scope != NULL ? strlen(scope) : 0);
	digest_field(ctx, token, token_len);
	snprintf(n, sizeof(n), "%zu", nscopes);
	digest_field(ctx, n, strlen(n));
	if (nscopes > 0) {
		sorted = cm_xcalloc(nscopes, sizeof(*sorted));
		for (size_t i = 0; i < nscopes; i++) {
			sorted[i] = scopes[i] != NULL ? scopes[i] : "";
		}
		qsort(sorted, nscopes, sizeof(*sorted), cmp_str);
		for (size_t i = 0; i < nscopes; i++) {
			digest_field(ctx, sorted[i], strlen(sorted[i]));
		}
	}
	CM_ASSERT(EVP_DigestFinal_ex(ctx, key, &outl) == 1);
	CM_ASSERT(outl == AUTH_CACHE_KEY_LEN);
	EVP_MD_CTX_free(ctx);
	free(sorted);
}

int64_t
auth_cache_expiry(int64_t now_s, int ttl_s, int64_t token_exp, int64_t cap)
{
	int64_t e = now_s + (ttl_s > 0 ? ttl_s : 0);

	if (token_exp > 0 && token_exp < e) {
		e = token_exp;
	}
	if (cap > 0 && cap < e) {
		e = cap;
	}
	return (e);
}

// ---------------------------------------------------------------------
// Entries
// ---------------------------------------------------------------------

static size_t
bucket_of(const shard *s, const unsigned char *key)
{
	uint64_t h = 0;

	// Bytes 8..15 of a SHA-256 digest: uniform, independent of the
	// shard choice (byte 0).
	for (int i = 8; i < 16; i++) {
		h = (h << 8) | key[i];
	}
	return ((size_t) h & s->mask);
}

static void
lru_unlink(shard *s, entry *e)
{
	if (e->prev != NULL) {
		e->prev->next = e->next;
	} else {
		s->head = e->next;
	}
	if (e->next != NULL) {
		e->next->prev = e->prev;
	} else {
		s->tail = e->prev;
	}
	e->prev = e->next = NULL;
}

static void
lru_push_head(shard *s, entry *e)
{
	e->prev = NULL;
	e->next = s->head;
	if (s->head != NULL) {
		s->head->prev = e;
	}
	s->head = e;
	if (s->tail == NULL) {
		s->tail = e;
	}
}

static entry *
find(shard *s, const unsigned char *key, entry ***linkp)
{
	entry **link = &s->buckets[bucket_of(s, key)];

	while (*link != NULL) {
		if (memcmp((*link)->key, key, AUTH_CACHE_KEY_LEN) == 0) {
			if (linkp != NULL) {
				*linkp = link;
			}
			return (*link);
		}
		link = &(*link)->hnext;
	}
	return (NULL);
}

static void
remove_entry(auth_cache *c, shard *s, entry *e)
{
	entry **link = &s->buckets[bucket_of(s, e->key)];

	while (*link != NULL && *link != e) {
		link = &(*link)->hnext;
	}
	if (*link == e) {
		*link = e->hnext;
	}
	lru_unlink(s, e);
	s->count--;
	atomic_fetch_sub(&c->count, 1);
	free(e);
}

static void
entry_to_result(const entry *e, auth_result *out)
{
	const char *p = e->data;

	memset(out, 0, sizeof(*out));
	memcpy(out->identity, p, e->id_len);
	p += e->id_len + 1;
	memcpy(out->email, p, e->email_len);
	p += e->email_len + 1;
	memcpy(out->scopes, p, e->scopes_len);
	p += e->scopes_len + 1;
	memcpy(out->session_id, p, e->session_len);
	out->expires_at   = e->result_exp;
	out->cached_until = e->expires_s;
}

static size_t
bounded_len(const char *s, size_t max)
{
	size_t n = strnlen(s, max);
	return (n == max ? max - 1 : n);
}

// Stores r under key in s (lock held).
static void
put_locked(auth_cache *c, shard *s, const unsigned char *key,
    const auth_result *r, int64_t now_s, int64_t expires_at_s)
{
	entry *e;
	size_t il, el, sl, xl;

	if (s->cap == 0 || expires_at_s <= now_s) {
		return;
	}
	e = find(s, key, NULL);
	if (e != NULL) {
		remove_entry(c, s, e);
	}
	// Drop an expired tail first, then evict LRU entries to make room.
	while (s->tail != NULL &&
	    (s->count >= s->cap || s->tail->expires_s <= now_s)) {
		remove_entry(c, s, s->tail);
	}
	il = bounded_len(r->identity, sizeof(r->identity));
	el = bounded_len(r->email, sizeof(r->email));
	sl = bounded_len(r->scopes, sizeof(r->scopes));
	xl = bounded_len(r->session_id, sizeof(r->session_id));
	e  = cm_xcalloc(1, sizeof(*e) + il + el + sl + xl + 4);
	memcpy(e->key, key, AUTH_CACHE_KEY_LEN);
	e->expires_s   = expires_at_s;
	e->result_exp  = r->expires_at;
	e->id_len      = (uint16_t) il;
	e->email_len   = (uint16_t) el;
	e->scopes_len  = (uint16_t) sl;
	e->session_len = (uint16_t) xl;
	{
		char *p = e->data;
		memcpy(p, r->identity, il);
		p += il + 1;
		memcpy(p, r->email, el);
		p += el + 1;
		memcpy(p, r->scopes, sl);
		p += sl + 1;
		memcpy(p, r->session_id, xl);
	}
	{
		size_t b      = bucket_of(s, key);
		e->hnext      = s->buckets[b];
		s->buckets[b] = e;
	}
	lru_push_head(s, e);
	s->count++;
	atomic_fetch_add(&c->count, 1);
}

// Looks key up in s (lock held); 1 and *out on a live entry.
static int
get_locked(auth_cache *c, shard *s, const unsigned char *key, int64_t now_s,
    auth_result *out)
{
	entry *e = find(s, key, NULL);

	if (e == NULL) {
		return (0);
	}
	if (e->expires_s <= now_s) {
		remove_entry(c, s, e);
		return (0);
	}
	if (s->head != e) {
		lru_unlink(s, e);
		lru_push_head(s, e);
	}
	entry_to_result(e, out);
	return (1);
}

// ---------------------------------------------------------------------
// Public
// ---------------------------------------------------------------------

cm_err
auth_cache_new(long max_entries, auth_cache **out)
{
	auth_cache *c;
	size_t      base, extra;

	if (max_entries < 0 || max_entries > AUTH_CACHE_MAX_LIMIT ||
	    out == NULL) {
		return (CM_EINVAL);
	}
	c = cm_xcalloc(1, sizeof(*c));
	atomic_init(&c->count, 0);
	// Split the bound exactly: the total never exceeds max_entries.
	base  = (size_t) max_entries / AUTH_CACHE_SHARDS;
	extra = (size_t) max_entries % AUTH_CACHE_SHARDS;
	for (int i = 0; i < AUTH_CACHE_SHARDS; i++) {
		shard *s  = &c->shards[i];
		size_t nb = 1;

		pthread_mutex_init(&s->mtx, NULL);
		s->cap = base + ((size_t) i < extra ? 1 : 0);
		while (nb < s->cap) {
			nb <<= 1;
		}
		s->buckets = cm_xcalloc(nb, sizeof(*s->buckets));
		s->mask    = nb - 1;
	}
	*out = c;
	return (CM_OK);
}

void
auth_cache_free(auth_cache *c)
{
	if (c == NULL) {
		return;
	}
	for (int i = 0; i < AUTH_CACHE_SHARDS; i++) {
		shard *s = &c->shards[i];
		entry *e = s->head;

		while (e != NULL) {
			entry *n = e->next;
			free(e);
			e = n;
		}
		free(s->buckets);
		pthread_mutex_destroy(&s->mtx);
	}
	free(c);
}

static shard *
shard_of(auth_cache *c, const unsigned char *key, int *idx)
{
	int i = key[0] % AUTH_CACHE_SHARDS;
	if (idx != NULL) {
		*idx = i;
	}
	return (&c->shards[i]);
}

static void
flight_unref(shard *s, auth_flight *f)
{
	if (--f->refs == 0) {
		pthread_cond_destroy(&f->cv);
		free(f);
	}
	(void) s;
}

cm_err
auth_cache_begin(auth_cache *c, const unsigned char key[AUTH_CACHE_KEY_LEN],
    int64_t now_s, int64_t deadline_ms, auth_result *out,
    auth_cache_outcome *how, auth_flight **flight)
{
	int    idx;
	shard *s = shard_of(c, key, &idx);
	cm_err rv;

	pthread_mutex_lock(&s->mtx);
	for (;;) {
		auth_flight *f;

		if (get_locked(c, s, key, now_s, out)) {
			*how = AUTH_CACHE_HIT;
			rv   = CM_OK;
			break;
		}
		for (f = s->flights; f != NULL; f = f->next) {
			if (memcmp(f->key, key, AUTH_CACHE_KEY_LEN) == 0) {
				break;
			}
		}
		if (f == NULL) {
			// Nobody is verifying this key: lead.
			f = cm_xcalloc(1, sizeof(*f));
			memcpy(f->key, key, AUTH_CACHE_KEY_LEN);
			pthread_cond_init(&f->cv, NULL);
			f->refs    = 1;
			f->shard   = idx;
			f->next    = s->flights;
			s->flights = f;
			*flight    = f;
			*how       = AUTH_CACHE_LEAD;
			rv         = CM_OK;
			break;
		}
		// Wait for the leader, bounded by our deadline.
		f->refs++;
		{
			struct timespec ts;
			int             wrv = 0;

			ts.tv_sec  = (time_t) (deadline_ms / 1000);
			ts.tv_nsec = (long) (deadline_ms % 1000) * 1000000L;
			while (!f->done && wrv != ETIMEDOUT) {
				wrv = pthread_cond_timedwait(
				    &f->cv, &s->mtx, &ts);
			}
		}
		if (!f->done) {
			flight_unref(s, f);
			rv = CM_ETIMEDOUT;
			break;
		}
		if (f->rv == CM_OK) {
			*out = f->result;
			*how = AUTH_CACHE_SHARED;
			flight_unref(s, f);
			rv = CM_OK;
			break;
		}
		if (f->rv == CM_EAUTH || f->rv == CM_EPERM) {
			// A definitive refusal: the same decision for us.
			rv = f->rv;
			flight_unref(s, f);
			break;
		}
		// The leader failed transiently: try again ourselves (maybe
		// as the new leader), unless our time is up.
		flight_unref(s, f);
		if (cm_now_ms() >= deadline_ms) {
			rv = CM_ETIMEDOUT;
			break;
		}
		now_s = cm_now_ms() / 1000;
	}
	pthread_mutex_unlock(&s->mtx);
	return (rv);
}

void
auth_cache_finish(auth_cache *c, auth_flight *f, cm_err rv,
    const auth_result *r, int64_t now_s, int64_t expires_at_s)
{
	shard        *s = &c->shards[f->shard];
	auth_flight **link;

	pthread_mutex_lock(&s->mtx);
	for (link = &s->flights; *link != NULL; link = &(*link)->next) {
		if (*link == f) {
			*link = f->next;
			break;
		}
	}
	f->done = 1;
	f->rv   = (rv == CM_OK && r == NULL) ? CM_EINTERNAL : rv;
	if (f->rv == CM_OK) {
		f->result = *r;
		f->result.cached_until =
		    (s->cap > 0 && expires_at_s > now_s) ? expires_at_s : 0;
		put_locked(c, s, f->key, r, now_s, expires_at_s);
	}
	pthread_cond_broadcast(&f->cv);
	flight_unref(s, f);
	pthread_mutex_unlock(&s->mtx);
}

void
auth_cache_put(auth_cache *c, const unsigned char key[AUTH_CACHE_KEY_LEN],
    const auth_result *r, int64_t now_s, int64_t expires_at_s)
{
	shard *s = shard_of(c, key, NULL);

	pthread_mutex_lock(&s->mtx);
	put_locked(c, s, key, r, now_s, expires_at_s);
	pthread_mutex_unlock(&s->mtx);
}

int
auth_cache_get(auth_cache *c, const unsigned char key[AUTH_CACHE_KEY_LEN],
    int64_t now_s, auth_result *out)
{
	shard *s = shard_of(c, key, NULL);
	int    hit;

	pthread_mutex_lock(&s->mtx);
	hit = get_locked(c, s, key, now_s, out);
	pthread_mutex_unlock(&s->mtx);
	return (hit);
}

size_t
auth_cache_count(auth_cache *c)
{
	return (c != NULL ? atomic_load(&c->count) : 0);
}
