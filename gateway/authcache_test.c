// SPDX-License-Identifier: MIT
//
// Unit tests for authcache.c: keys tell credentials and scopes apart
// (order and boundaries included), entries live exactly until their time,
// a full set evicts the soonest-expiring entry and the cache stays
// bounded, and a disabled cache (0 entries) keeps nothing.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/gw.h"

static gw_authcache_identity
ident(const char *who)
{
	gw_authcache_identity id;

	memset(&id, 0, sizeof(id));
	snprintf(id.identity, sizeof(id.identity), "%s", who);
	snprintf(id.email, sizeof(id.email), "%s@example.test", who);
	snprintf(id.perms, sizeof(id.perms), "threads:read threads:write");
	return (id);
}

static void
test_keys(void **state)
{
	gw_authcache *c = NULL;
	unsigned char k[6][GW_AUTHCACHE_KEY_LEN];
	const char   *a1[]  = { "Bearer ab", "c" };
	const char   *a2[]  = { "Bearer a", "bc" };
	const char   *a3[]  = { "c", "Bearer ab" };
	const char   *one[] = { "Bearer abc" };
	const char   *sc[]  = { "threads:write" };

	(void) state;
	assert_int_equal(gw_authcache_new(64, &c), CM_OK);
	gw_authcache_key(c, a1, 2, NULL, 0, k[0]);
	gw_authcache_key(c, a2, 2, NULL, 0, k[1]);
	gw_authcache_key(c, a3, 2, NULL, 0, k[2]);
	gw_authcache_key(c, one, 1, NULL, 0, k[3]);
	gw_authcache_key(c, one, 1, sc, 1, k[4]);
	gw_authcache_key(c, one, 1, NULL, 0, k[5]);
	for (int i = 0; i < 5; i++) {
		for (int j = i + 1; j < 5; j++) {
			assert_memory_not_equal(
			    k[i], k[j], GW_AUTHCACHE_KEY_LEN);
		}
	}
	assert_memory_equal(k[3], k[5], GW_AUTHCACHE_KEY_LEN);
	gw_authcache_free(c);
}

static void
test_expiry(void **state)
{
	gw_authcache         *c  = NULL;
	gw_authcache_identity id = ident("alice");
	gw_authcache_identity got;
	unsigned char         key[GW_AUTHCACHE_KEY_LEN];
	const char           *authz[] = { "Bearer alice-token" };

	(void) state;
	assert_int_equal(gw_authcache_new(64, &c), CM_OK);
	gw_authcache_key(c, authz, 1, NULL, 0, key);
	assert_false(gw_authcache_get(c, key, 1000, &got));
	gw_authcache_put(c, key, &id, 1000, 1500);
	assert_true(gw_authcache_get(c, key, 1499, &got));
	assert_string_equal(got.identity, "alice");
	assert_string_equal(got.perms, "threads:read threads:write");
	// Exactly until: not at 1500 or after.
	assert_false(gw_authcache_get(c, key, 1500, &got));
	assert_false(gw_authcache_get(c, key, 1499, &got)); // dropped
	// An until not after now keeps nothing.
	gw_authcache_put(c, key, &id, 2000, 2000);
	assert_false(gw_authcache_get(c, key, 2000, &got));
	gw_authcache_free(c);
}

static void
test_bounded(void **state)
{
	gw_authcache         *c = NULL;
	gw_authcache_identity got;
	char                  tok[64];
	int                   live = 0;

	(void) state;
	assert_int_equal(gw_authcache_new(64, &c), CM_OK);
	// Ten times more keys than room, the later ones living longer.
	for (int i = 0; i < 640; i++) {
		gw_authcache_identity id = ident("u");
		unsigned char         key[GW_AUTHCACHE_KEY_LEN];
		const char           *authz[] = { tok };

		snprintf(tok, sizeof(tok), "Bearer t%d", i);
		gw_authcache_key(c, authz, 1, NULL, 0, key);
		gw_authcache_put(c, key, &id, 0, 10000 + i);
	}
	for (int i = 0; i < 640; i++) {
		unsigned char key[GW_AUTHCACHE_KEY_LEN];
		const char   *authz[] = { tok };

		snprintf(tok, sizeof(tok), "Bearer t%d", i);
		gw_authcache_key(c, authz, 1, NULL, 0, key);
		live += gw_authcache_get(c, key, 1, &got);
	}
	assert_true(live > 0);
	assert_true(live <= 64);
	gw_authcache_free(c);
}

static void
test_disabled(void **state)
{
	gw_authcache         *c  = (gw_authcache *) 1;
	gw_authcache_identity id = ident("bob");
	gw_authcache_identity got;
	unsigned char         key[GW_AUTHCACHE_KEY_LEN] = { 1 };

	(void) state;
	assert_int_equal(gw_authcache_new(0, &c), CM_OK);
	assert_null(c);
	gw_authcache_put(c, key, &id, 0, 1000);
	assert_false(gw_authcache_get(c, key, 1, &got));
	gw_authcache_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_bounded),
		cmocka_unit_test(test_disabled),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
