// SPDX-License-Identifier: MIT
//
// Unit tests of the result cache (cache.c): the key covers everything
// the decision depends on, TTLs never outlive the token, the size bound
// holds with LRU eviction, failures are never stored, and single-flight
// gives one leader per key.

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth-service/cache.h"
#include "common/util.h"

static auth_result
result(const char *id)
{
	auth_result r;

	memset(&r, 0, sizeof(r));
	snprintf(r.identity, sizeof(r.identity), "%s", id);
	snprintf(r.email, sizeof(r.email), "%s@example.test", id);
	snprintf(r.scopes, sizeof(r.scopes), "a b");
	return (r);
}

static void
key_of(const char *scope, const char *tok, const char *const *sc, size_t n,
    unsigned char *k)
{
	auth_cache_key(scope, tok, strlen(tok), sc, n, k);
}

static void
test_key_covers_inputs(void **state)
{
	unsigned char k1[32], k2[32];
	const char   *s_ab[]  = { "a", "b" };
	const char   *s_ba[]  = { "b", "a" };
	const char   *s_a[]   = { "a" };
	const char   *s_ab1[] = { "ab" };

	(void) state;
	key_of("supabase\nhttp://idp/auth/v1/user", "tok", NULL, 0, k1);
	key_of("supabase\nhttp://idp/auth/v1/user", "tok", NULL, 0, k2);
	assert_memory_equal(k1, k2, 32);
	// Another token.
	key_of("supabase\nhttp://idp/auth/v1/user", "tok2", NULL, 0, k2);
	assert_memory_not_equal(k1, k2, 32);
	// Same token, another IdP URL (CVE-2026-33496 class).
	key_of("supabase\nhttp://other/auth/v1/user", "tok", NULL, 0, k2);
	assert_memory_not_equal(k1, k2, 32);
	// Another provider / audience in the scope text.
	key_of("jwt\nhttp://idp\naud=a", "tok", NULL, 0, k1);
	key_of("jwt\nhttp://idp\naud=b", "tok", NULL, 0, k2);
	assert_memory_not_equal(k1, k2, 32);
	// Required scopes count (CVE-2021-32701 class), order does not.
	key_of("s", "tok", s_ab, 2, k1);
	key_of("s", "tok", s_ba, 2, k2);
	assert_memory_equal(k1, k2, 32);
	key_of("s", "tok", s_a, 1, k2);
	assert_memory_not_equal(k1, k2, 32);
	key_of("s", "tok", NULL, 0, k2);
	assert_memory_not_equal(k1, k2, 32);
	// Length prefixes: {"a","b"} is not {"ab"}; "s"+"tok" is not
	// "st"+"ok".
	key_of("s", "tok", s_ab1, 1, k2);
	assert_memory_not_equal(k1, k2, 32);
	key_of("s", "tok", NULL, 0, k1);
	key_of("st", "ok", NULL, 0, k2);
	assert_memory_not_equal(k1, k2, 32);
}

static void
test_expiry(void **state)
{
	(void) state;
	// TTL only.
	assert_int_equal(auth_cache_expiry(1000, 60, 0, 0), 1060);
	// Token exp earlier than the TTL wins.
	assert_int_equal(auth_cache_expiry(1000, 60, 1010, 0), 1010);
	// Token exp later: the TTL wins.
	assert_int_equal(auth_cache_expiry(1000, 60, 5000, 0), 1060);
	// Expired token: nothing to keep (<= now).
	assert_true(auth_cache_expiry(1000, 60, 900, 0) <= 1000);
	// A cap (hybrid confirmation) lowers it further.
	assert_int_equal(auth_cache_expiry(1000, 60, 5000, 1030), 1030);
	// TTL 0: nothing kept.
	assert_true(auth_cache_expiry(1000, 0, 0, 0) <= 1000);
}

static void
test_put_get_ttl(void **state)
{
	auth_cache   *c = NULL;
	unsigned char k[32];
	auth_result   r = result("user-1");
	auth_result   got;

	(void) state;
	assert_int_equal(auth_cache_new(100, &c), CM_OK);
	key_of("s", "tok", NULL, 0, k);
	auth_cache_put(c, k, &r, 1000, auth_cache_expiry(1000, 60, 1010, 0));
	assert_int_equal(auth_cache_count(c), 1);
	assert_int_equal(auth_cache_get(c, k, 1005, &got), 1);
	assert_string_equal(got.identity, "user-1");
	assert_string_equal(got.email, "user-1@example.test");
	assert_string_equal(got.scopes, "a b");
	// At the token's exp the entry is gone, though the TTL is not over.
	assert_int_equal(auth_cache_get(c, k, 1010, &got), 0);
	assert_int_equal(auth_cache_count(c), 0);
	// An already expired token is never stored.
	auth_cache_put(c, k, &r, 1000, auth_cache_expiry(1000, 60, 999, 0));
	assert_int_equal(auth_cache_count(c), 0);
	auth_cache_free(c);

	// max 0: nothing is ever stored.
	assert_int_equal(auth_cache_new(0, &c), CM_OK);
	auth_cache_put(c, k, &r, 1000, 2000);
	assert_int_equal(auth_cache_count(c), 0);
	assert_int_equal(auth_cache_get(c, k, 1001, &got), 0);
	auth_cache_free(c);

	assert_int_equal(auth_cache_new(-1, &c), CM_EINVAL);
	assert_int_equal(
	    auth_cache_new(AUTH_CACHE_MAX_LIMIT + 1L, &c), CM_EINVAL);
}

static void
test_lru_bound(void **state)
{
	auth_cache   *c     = NULL;
	unsigned char a[32] = { 0 }, b[32] = { 0 }, d[32] = { 0 };
	auth_result   r = result("u");
	auth_result   got;

	(void) state;
	// 2 entries per shard. Keys a, b, d share shard 0.
	assert_int_equal(auth_cache_new(2 * AUTH_CACHE_SHARDS, &c), CM_OK);
	a[1] = 1;
	b[1] = 2;
	d[1] = 3;
	a[8] = 1;
	b[8] = 2;
	d[8] = 3;
	auth_cache_put(c, a, &r, 1000, 2000);
	auth_cache_put(c, b, &r, 1000, 2000);
	assert_int_equal(auth_cache_get(c, a, 1001, &got), 1); // a is fresh
	auth_cache_put(c, d, &r, 1000, 2000);                  // evicts b
	assert_int_equal(auth_cache_get(c, b, 1001, &got), 0);
	assert_int_equal(auth_cache_get(c, a, 1001, &got), 1);
	assert_int_equal(auth_cache_get(c, d, 1001, &got), 1);
	auth_cache_free(c);

	// Many random keys: the total never exceeds the configured max.
	assert_int_equal(auth_cache_new(100, &c), CM_OK);
	for (int i = 0; i < 5000; i++) {
		unsigned char k[32];
		char          tok[32];
		snprintf(tok, sizeof(tok), "tok-%d", i);
		key_of("s", tok, NULL, 0, k);
		auth_cache_put(c, k, &r, 1000, 2000);
		assert_true(auth_cache_count(c) <= 100);
	}
	assert_true(auth_cache_count(c) >= 90); // and it is actually used
	auth_cache_free(c);
}

static void
test_failures_not_cached(void **state)
{
	auth_cache        *c = NULL;
	unsigned char      k[32];
	auth_result        got;
	auth_result        r = result("u");
	auth_cache_outcome how;
	auth_flight       *f  = NULL;
	int64_t            dl = cm_now_ms() + 5000;
	cm_err errs[] = { CM_EAUTH, CM_EUNAVAIL, CM_ETIMEDOUT, CM_EPERM,
		CM_EINTERNAL };

	(void) state;
	assert_int_equal(auth_cache_new(100, &c), CM_OK);
	key_of("s", "tok", NULL, 0, k);
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		assert_int_equal(
		    auth_cache_begin(c, k, 1000, dl, &got, &how, &f), CM_OK);
		assert_int_equal(how, AUTH_CACHE_LEAD);
		// Even with a result and a future expiry: errors are not kept.
		auth_cache_finish(c, f, errs[i], &r, 1000, 2000);
		assert_int_equal(auth_cache_count(c), 0);
	}
	// OK with an identity is stored; the next lookup is a hit.
	assert_int_equal(
	    auth_cache_begin(c, k, 1000, dl, &got, &how, &f), CM_OK);
	assert_int_equal(how, AUTH_CACHE_LEAD);
	auth_cache_finish(c, f, CM_OK, &r, 1000, 2000);
	assert_int_equal(auth_cache_count(c), 1);
	assert_int_equal(
	    auth_cache_begin(c, k, 1001, dl, &got, &how, &f), CM_OK);
	assert_int_equal(how, AUTH_CACHE_HIT);
	assert_string_equal(got.identity, "u");
	auth_cache_free(c);
}

typedef struct sf_arg {
	auth_cache        *c;
	unsigned char      key[32];
	cm_err             rv;
	auth_cache_outcome how;
	auth_result        got;
	auth_flight       *f;
} sf_arg;

static void *
sf_thread(void *p)
{
	sf_arg *a = p;

	a->rv = auth_cache_begin(a->c, a->key, cm_now_ms() / 1000,
	    cm_now_ms() + 10000, &a->got, &a->how, &a->f);
	return (NULL);
}

static void
test_single_flight(void **state)
{
	enum { N = 20 };
	auth_cache        *c = NULL;
	unsigned char      k[32];
	auth_result        got;
	auth_result        r = result("leader-result");
	auth_cache_outcome how;
	auth_flight       *f = NULL;
	pthread_t          th[N];
	sf_arg             args[N];
	int64_t            now_s = cm_now_ms() / 1000;

	(void) state;
	assert_int_equal(auth_cache_new(100, &c), CM_OK);
	key_of("s", "tok", NULL, 0, k);
	assert_int_equal(
	    auth_cache_begin(c, k, now_s, cm_now_ms() + 5000, &got, &how, &f),
	    CM_OK);
	assert_int_equal(how, AUTH_CACHE_LEAD);
	for (int i = 0; i < N; i++) {
		memset(&args[i], 0, sizeof(args[i]));
		args[i].c = c;
		memcpy(args[i].key, k, 32);
		assert_int_equal(
		    pthread_create(&th[i], NULL, sf_thread, &args[i]), 0);
	}
	// Whether they are already waiting or arrive later, nobody else
	// may lead: they share the leader's result or hit the cache.
	auth_cache_finish(c, f, CM_OK, &r, now_s, now_s + 60);
	for (int i = 0; i < N; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].rv, CM_OK);
		assert_true(args[i].how == AUTH_CACHE_SHARED ||
		    args[i].how == AUTH_CACHE_HIT);
		assert_string_equal(args[i].got.identity, "leader-result");
	}
	auth_cache_free(c);
}

static void
test_waiter_deadline_and_retry(void **state)
{
	auth_cache        *c = NULL;
	unsigned char      k[32];
	auth_result        got;
	auth_cache_outcome how;
	auth_flight       *f  = NULL;
	auth_flight       *f2 = NULL;
	int64_t            t0;
	pthread_t          th;
	sf_arg             a;

	(void) state;
	assert_int_equal(auth_cache_new(100, &c), CM_OK);
	key_of("s", "tok", NULL, 0, k);
	assert_int_equal(
	    auth_cache_begin(c, k, 1000, cm_now_ms() + 5000, &got, &how, &f),
	    CM_OK);
	assert_int_equal(how, AUTH_CACHE_LEAD);
	// A waiter whose deadline passes gets CM_ETIMEDOUT, not a result.
	t0 = cm_now_ms();
	assert_int_equal(
	    auth_cache_begin(c, k, 1000, t0 + 100, &got, &how, &f2),
	    CM_ETIMEDOUT);
	assert_true(cm_now_ms() - t0 >= 90);
	assert_true(cm_now_ms() - t0 < 3000);
	// The leader fails transiently: the next caller leads itself.
	memset(&a, 0, sizeof(a));
	a.c = c;
	memcpy(a.key, k, 32);
	assert_int_equal(pthread_create(&th, NULL, sf_thread, &a), 0);
	auth_cache_finish(c, f, CM_EUNAVAIL, NULL, 1000, 0);
	pthread_join(th, NULL);
	assert_int_equal(a.rv, CM_OK);
	assert_int_equal(a.how, AUTH_CACHE_LEAD);
	auth_cache_finish(c, a.f, CM_EAUTH, NULL, 1000, 0);
	assert_int_equal(auth_cache_count(c), 0);
	auth_cache_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_covers_inputs),
		cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_put_get_ttl),
		cmocka_unit_test(test_lru_bound),
		cmocka_unit_test(test_failures_not_cached),
		cmocka_unit_test(test_single_flight),
		cmocka_unit_test(test_waiter_deadline_and_retry),
	};
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
