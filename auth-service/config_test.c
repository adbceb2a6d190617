// SPDX-License-Identifier: MIT
//
// Unit tests of configuration loading (config.c): defaults, provider
// choice, derived Supabase defaults for the jwt modes, and that every bad
// value is refused (the binary then exits 2).

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth-service/service.h"
#include "common/util.h"

static const char *vars[] = { "AUTH_SERVICE_URL", "AUTH_WORKERS",
	"AUTH_PROVIDER", "SUPABASE_URL", "SUPABASE_SERVICE_KEY",
	"AUTH_CACHE_TTL", "AUTH_CACHE_MAX", "AUTH_IDP_TIMEOUT_MS",
	"AUTH_IDP_CONNECT_TIMEOUT_MS", "AUTH_JWKS_URL", "OIDC_ISSUER",
	"AUTH_JWT_SECRET", "SUPABASE_JWT_SECRET", "AUTH_JWT_SECRET_ALGS",
	"AUTH_JWKS_ALGS", "AUTH_ISSUER", "AUTH_AUDIENCE",
	"AUTH_IDENTITY_CLAIM", "AUTH_LEEWAY", "AUTH_JWKS_COOLDOWN",
	"AUTH_JWKS_MAX_AGE", "AUTH_INTROSPECTION_URL", "AUTH_CLIENT_ID",
	"AUTH_CLIENT_SECRET", "AUTH_HYBRID_INTERVAL", "AUTH_HYBRID_OUTAGE",
	"AUTH_STATIC_FILE", "THREADGATE_DEV" };

static int
clear_env(void **state)
{
	(void) state;
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		unsetenv(vars[i]);
	}
	return (0);
}

static cm_err
load(auth_config *cfg, int argc, char **argv)
{
	int   exit_now = 0;
	char *def[]    = { "threadgate-auth", NULL };

	if (argv == NULL) {
		argv = def;
		argc = 1;
	}
	return (auth_config_load(argc, argv, cfg, &exit_now));
}

static void
test_defaults(void **state)
{
	auth_config cfg;

	(void) state;
	// No provider at all: refused.
	assert_int_equal(load(&cfg, 0, NULL), CM_EINVAL);
	setenv("SUPABASE_URL", "http://127.0.0.1:9999/", 1);
	setenv("SUPABASE_SERVICE_KEY", "k", 1);
	assert_int_equal(load(&cfg, 0, NULL), CM_OK);
	assert_int_equal(cfg.provider, AUTH_PROVIDER_SUPABASE);
	assert_string_equal(cfg.supabase_url, "http://127.0.0.1:9999");
	{
		// The default is private to this user (cm_default_ipc_url).
		char want[CM_IPC_URL_MAX];
		assert_int_equal(
		    cm_default_ipc_url("auth", want, sizeof(want)), CM_OK);
		assert_string_equal(cfg.listen_url, want);
		assert_null(strstr(cfg.listen_url, "/tmp/threadgate-auth"));
	}
	assert_int_equal(cfg.workers, 32);
	assert_int_equal(cfg.cache_ttl_s, 60);
	assert_int_equal(cfg.cache_max, 100000);
	assert_int_equal(cfg.idp_timeout_ms, 2000);
	assert_int_equal(cfg.idp_connect_timeout_ms, 1000);
	assert_int_equal(cfg.hybrid_interval_s, 30);
	assert_int_equal(cfg.hybrid_fail_open, 0);
	auth_config_free(&cfg);
}

static void
test_flags(void **state)
{
	auth_config cfg;
	char *argv[]   = { "threadgate-auth", "--listen", "ipc:///tmp/x.sock",
		  NULL };
	char *bad[]    = { "threadgate-auth", "--bogus", NULL };
	char *help[]   = { "threadgate-auth", "--version", NULL };
	int   exit_now = 0;

	(void) state;
	setenv("SUPABASE_URL", "http://127.0.0.1:9999", 1);
	setenv("AUTH_SERVICE_URL", "ipc:///tmp/env.sock", 1);
	assert_int_equal(load(&cfg, 3, argv), CM_OK);
	assert_string_equal(cfg.listen_url, "ipc:///tmp/x.sock");
	auth_config_free(&cfg);
	assert_int_equal(load(&cfg, 2, bad), CM_EINVAL);
	assert_int_equal(auth_config_load(2, help, &cfg, &exit_now), CM_OK);
	assert_int_equal(exit_now, 1);
}

static void
test_bad_values(void **state)
{
	static const struct {
		const char *name, *value;
	} bad[] = {
		{ "AUTH_CACHE_TTL", "abc" },
		{ "AUTH_CACHE_TTL", "-1" },
		{ "AUTH_CACHE_MAX", "1e5" },
		{ "AUTH_WORKERS", "0" },
		{ "AUTH_WORKERS", "100000" },
		{ "AUTH_IDP_TIMEOUT_MS", "0" },
		{ "AUTH_IDP_CONNECT_TIMEOUT_MS", "x" },
		{ "AUTH_LEEWAY", "301" },
		{ "AUTH_JWKS_COOLDOWN", "5" },
		{ "AUTH_HYBRID_INTERVAL", "0" },
		{ "AUTH_HYBRID_OUTAGE", "maybe" },
		{ "AUTH_PROVIDER", "ldap" },
		{ "THREADGATE_DEV", "perhaps" },
		{ "SUPABASE_URL", "ftp://idp" },
		{ "AUTH_JWKS_URL", "file:///etc/passwd" },
		{ "AUTH_SERVICE_URL", "http://x" },
		{ "AUTH_JWKS_ALGS", "HS256" },
		{ "AUTH_JWKS_ALGS", "none" },
		{ "AUTH_JWT_SECRET_ALGS", "RS256" },
	};

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		auth_config cfg;
		clear_env(NULL);
		setenv("SUPABASE_URL", "http://127.0.0.1:9999", 1);
		setenv(bad[i].name, bad[i].value, 1);
		if (load(&cfg, 0, NULL) != CM_EINVAL) {
			fail_msg("%s=%s accepted", bad[i].name, bad[i].value);
		}
		assert_null(cfg.listen_url); // freed on error
	}
}

static void
test_jwt_defaults(void **state)
{
	auth_config cfg;

	(void) state;
	setenv("AUTH_PROVIDER", "jwt", 1);
	// jwt without any key source: refused.
	assert_int_equal(load(&cfg, 0, NULL), CM_EINVAL);
	// Supabase: JWKS URL, issuer and audience derived.
	setenv("SUPABASE_URL", "http://127.0.0.1:9999", 1);
	assert_int_equal(load(&cfg, 0, NULL), CM_OK);
	assert_string_equal(cfg.jwks_url,
	    "http://127.0.0.1:9999/auth/v1/.well-known/jwks.json");
	assert_string_equal(cfg.issuer, "http://127.0.0.1:9999/auth/v1");
	assert_string_equal(cfg.audience, "authenticated");
	assert_true(cfg.jwks_algs != 0);
	assert_int_equal(cfg.secret_algs, AUTH_ALG_HS256);
	auth_config_free(&cfg);
	// "*" switches a check off.
	setenv("AUTH_AUDIENCE", "*", 1);
	setenv("AUTH_ISSUER", "*", 1);
	assert_int_equal(load(&cfg, 0, NULL), CM_OK);
	assert_string_equal(cfg.issuer, "");
	assert_string_equal(cfg.audience, "");
	auth_config_free(&cfg);
	// OIDC: issuer defaults to OIDC_ISSUER, no audience default.
	clear_env(NULL);
	setenv("AUTH_PROVIDER", "jwt", 1);
	setenv("OIDC_ISSUER", "http://127.0.0.1:3999", 1);
	assert_int_equal(load(&cfg, 0, NULL), CM_OK);
	assert_string_equal(cfg.issuer, "http://127.0.0.1:3999");
	assert_string_equal(cfg.audience, "");
	assert_string_equal(cfg.jwks_url, "");
	auth_config_free(&cfg);
	// Explicit algorithm lists.
	setenv("AUTH_JWKS_ALGS", "ES256, RS256", 1);
	assert_int_equal(load(&cfg, 0, NULL), CM_OK);
	assert_int_equal(cfg.jwks_algs, AUTH_ALG_ES256 | AUTH_ALG_RS256);
	auth_config_free(&cfg);
}

static void
test_hybrid_caps_ttl(void **state)
{
	auth_config cfg;

	(void) state;
	setenv("AUTH_PROVIDER", "hybrid", 1);
	setenv("SUPABASE_URL", "http://127.0.0.1:9999", 1);
	setenv("AUTH_CACHE_TTL", "300", 1);
	setenv("AUTH_HYBRID_INTERVAL", "10", 1);
	setenv("AUTH_HYBRID_OUTAGE", "allow", 1);
	assert_int_equal(load(&cfg, 0, NULL), CM_OK);
	assert_int_equal(cfg.cache_ttl_s, 10);
	assert_int_equal(cfg.hybrid_fail_open, 1);
	auth_config_free(&cfg);
	setenv("AUTH_IDENTITY_CLAIM", "email", 1);
	assert_int_equal(load(&cfg, 0, NULL), CM_EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_defaults, clear_env),
		cmocka_unit_test_setup(test_flags, clear_env),
		cmocka_unit_test_setup(test_bad_values, clear_env),
		cmocka_unit_test_setup(test_jwt_defaults, clear_env),
		cmocka_unit_test_setup(test_hybrid_caps_ttl, clear_env),
	};
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
