// SPDX-License-Identifier: MIT
//
// auth-service configuration: environment variables (12-factor), then
// command-line flags, validated once at start. A value that does not
// parse or is out of range stops the service with exit code 2 and a log
// line naming the variable. The --help text below lists every flag and
// variable with its default; keep it in step with auth_config_load().

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth-service/auth.h"
#include "auth-service/cache.h"
#include "auth-service/service.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "common/xalloc.h"

// The default listen URL is private to the user (cm_default_ipc_url):
// a socket in /tmp could be created first by any local user, who would
// then answer the gateway's Authenticate calls.
#define DEFAULT_LISTEN_TEXT                                           \
	"ipc://$XDG_RUNTIME_DIR/threadgate/auth.sock, or\n"           \
	"                               ipc:///tmp/threadgate-<uid>/" \
	"auth.sock (a 0700 directory)"
// Longest listen URL accepted (nng's own limit for ipc paths is ~100).
#define LISTEN_URL_MAX 512
// Longest secret / key / claim name / audience accepted from the
// environment: far above real values, keeps derived strings bounded.
#define CONFIG_STR_MAX 4096
// Algorithms accepted by default: every asymmetric one for JWKS keys,
// HS256 only for a shared secret.
#define DEFAULT_JWKS_ALGS                                                    \
	(AUTH_ALG_RS256 | AUTH_ALG_RS384 | AUTH_ALG_RS512 | AUTH_ALG_PS256 | \
	    AUTH_ALG_ES256 | AUTH_ALG_ES384)
#define DEFAULT_SECRET_ALGS AUTH_ALG_HS256
// Longest algorithm list variable.
#define ALG_LIST_MAX 256

static const struct {
	const char *name;
	unsigned    bit;
} alg_names[] = {
	{ "HS256", AUTH_ALG_HS256 },
	{ "RS256", AUTH_ALG_RS256 },
	{ "RS384", AUTH_ALG_RS384 },
	{ "RS512", AUTH_ALG_RS512 },
	{ "PS256", AUTH_ALG_PS256 },
	{ "ES256", AUTH_ALG_ES256 },
	{ "ES384", AUTH_ALG_ES384 },
};

void
auth_config_usage(FILE *f)
{
	fprintf(f,
	    "Usage: threadgate-auth [--listen URL] [--help] [--version]\n"
	    "\n"
	    "The threadgate auth-service: validates bearer tokens for the "
	    "gateway over nng REQ/REP.\n"
	    "\n"
	    "Flags (override the environment):\n"
	    "  --listen URL   listen URL (env AUTH_SERVICE_URL)\n"
	    "  --health-check ask the running service (at the listen URL)\n"
	    "                 for its Health; exit 0 serving, 1 not (for\n"
	    "                 exec probes and Docker HEALTHCHECK)\n"
	    "  --help         this text\n"
	    "  --version      print the version\n"
	    "\n"
	    "Environment (default in brackets):\n"
	    "  AUTH_SERVICE_URL             [" DEFAULT_LISTEN_TEXT "]\n"
	    "  AUTH_WORKERS                 concurrent workers, 1..256 [32]\n"
	    "  AUTH_PROVIDER                supabase|jwt|introspection|hybrid|"
	    "static\n"
	    "                               [supabase when SUPABASE_URL is "
	    "set, else required]\n"
	    "  SUPABASE_URL                 Supabase project URL, e.g. "
	    "http://127.0.0.1:9999 []\n"
	    "  SUPABASE_SERVICE_KEY         sent as apikey to /auth/v1/user "
	    "(supabase, hybrid) []\n"
	    "  AUTH_CACHE_TTL               result cache TTL in s, 0..86400; "
	    "0 disables [60]\n"
	    "  AUTH_CACHE_MAX               cached results, 0..10000000 "
	    "[100000]\n"
	    "  AUTH_IDP_TIMEOUT_MS          total per IdP request, 1..60000 "
	    "[2000]\n"
	    "  AUTH_IDP_CONNECT_TIMEOUT_MS  connect timeout, 1..60000 [1000]\n"
	    "  AUTH_JWKS_URL                JWKS URL (jwt, hybrid) "
	    "[$SUPABASE_URL/auth/v1/.well-known/jwks.json]\n"
	    "  OIDC_ISSUER                  issuer for OIDC discovery of "
	    "jwks_uri []\n"
	    "  AUTH_JWT_SECRET              HS256 shared secret (raw bytes) "
	    "[$SUPABASE_JWT_SECRET]\n"
	    "  SUPABASE_JWT_SECRET          same, Supabase's name []\n"
	    "  AUTH_JWT_SECRET_ALGS         algorithms for the secret "
	    "[HS256]\n"
	    "  AUTH_JWKS_ALGS               algorithms for JWKS keys "
	    "[RS256,RS384,RS512,PS256,ES256,ES384]\n"
	    "  AUTH_ISSUER                  required iss; * = not checked "
	    "[$SUPABASE_URL/auth/v1, or OIDC_ISSUER]\n"
	    "  AUTH_AUDIENCE                required aud; * = not checked "
	    "[authenticated with SUPABASE_URL, else not checked]\n"
	    "  AUTH_IDENTITY_CLAIM          claim holding the user id "
	    "(hybrid: sub "
	    "only) [sub]\n"
	    "  AUTH_LEEWAY                  nbf/iat/exp leeway in s, 0..300 "
	    "[30]\n"
	    "  AUTH_JWKS_COOLDOWN           s between kid-miss refetches, "
	    "30..86400 [30]\n"
	    "  AUTH_JWKS_MAX_AGE            cap on JWKS Cache-Control max-age "
	    "in s, 1..86400 [600]\n"
	    "  AUTH_INTROSPECTION_URL       RFC 7662 endpoint "
	    "(introspection) []\n"
	    "  AUTH_CLIENT_ID               introspection client id []\n"
	    "  AUTH_CLIENT_SECRET           introspection client secret []\n"
	    "  AUTH_HYBRID_INTERVAL         s between IdP confirmations of a "
	    "token, 1..86400 [30]\n"
	    "  AUTH_HYBRID_OUTAGE           refuse|allow when a confirmation "
	    "is due and the IdP is down [refuse]\n"
	    "  AUTH_STATIC_FILE             token -> identity JSON file "
	    "(static) []\n"
	    "  THREADGATE_DEV               1 allows the static provider [0]\n"
	    "  LOG_LEVEL                    debug|info|warn|error [info]\n"
	    "  LOG_FORMAT                   json|text [text on a terminal, "
	    "else json]\n"
	    "  METRICS_ADDR                 host:port of the /metrics "
	    "listener [none]\n"
	    "  METRICS_PORT_FILE            write its bound port here []\n"
	    "\n"
	    "Exit codes: 0 ok (SIGTERM/SIGINT), 1 other error, 2 usage or "
	    "configuration error,\n"
	    "3 cannot listen.\n");
}

static char *
env_dup(const char *name, const char *def)
{
	return (cm_xstrdup(cm_env_str(name, def)));
}

static cm_err
env_int(const char *name, int def, int min, int max, int *out)
{
	int64_t v;
	cm_err  rv = cm_env_i64(name, def, min, max, &v);

	if (rv != CM_OK) {
		return (rv); // cm_env_i64 logged the variable and the range
	}
	*out = (int) v;
	return (CM_OK);
}

static cm_err
check_http_url(const char *name, const char *v)
{
	if (v[0] == '\0') {
		return (CM_OK);
	}
	if (strlen(v) >= AUTH_URL_MAX - 64 ||
	    (strncmp(v, "http://", 7) != 0 &&
	        strncmp(v, "https://", 8) != 0)) {
		cm_error(NULL,
		    "%s must be an http:// or https:// URL shorter "
		    "than %d bytes",
		    name, AUTH_URL_MAX - 64);
		return (CM_EINVAL);
	}
	return (CM_OK);
}

static void
strip_trailing_slash(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && s[n - 1] == '/') {
		s[--n] = '\0';
	}
}

static cm_err
parse_algs(const char *name, const char *v, unsigned def, unsigned forbidden,
    unsigned *out)
{
	char     buf[ALG_LIST_MAX];
	unsigned bits = 0;
	char    *tok;

	if (v == NULL || v[0] == '\0') {
		*out = def;
		return (CM_OK);
	}
	if (strlen(v) >= sizeof(buf)) {
		cm_error(NULL, "%s is too long", name);
		return (CM_EINVAL);
	}
	snprintf(buf, sizeof(buf), "%s", v);
	tok = buf;
	while (tok != NULL) {
		char    *next = strchr(tok, ',');
		unsigned bit  = 0;

		if (next != NULL) {
			*next++ = '\0';
		}
		while (*tok == ' ') {
			tok++;
		}
		for (char *e = tok + strlen(tok); e > tok && e[-1] == ' ';
		     e--) {
			e[-1] = '\0';
		}
		for (size_t i = 0;
		     i < sizeof(alg_names) / sizeof(alg_names[0]); i++) {
			if (strcmp(tok, alg_names[i].name) == 0) {
				bit = alg_names[i].bit;
			}
		}
		if (bit == 0 || (bit & forbidden) != 0) {
			cm_error(NULL,
			    "%s: algorithm \"%s\" is not allowed here", name,
			    tok);
			return (CM_EINVAL);
		}
		bits |= bit;
		tok = next;
	}
	if (bits == 0) {
		cm_error(NULL, "%s lists no algorithm", name);
		return (CM_EINVAL);
	}
	*out = bits;
	return (CM_OK);
}

static cm_err
check_len(const char *name, const char *v)
{
	if (strlen(v) > CONFIG_STR_MAX) {
		cm_error(
		    NULL, "%s is longer than %d bytes", name, CONFIG_STR_MAX);
		return (CM_EINVAL);
	}
	return (CM_OK);
}

void
auth_config_free(auth_config *cfg)
{
	if (cfg == NULL) {
		return;
	}
	free(cfg->listen_url);
	free(cfg->supabase_url);
	free(cfg->supabase_key);
	free(cfg->jwks_url);
	free(cfg->oidc_issuer);
	free(cfg->jwt_secret);
	free(cfg->issuer);
	free(cfg->audience);
	free(cfg->identity_claim);
	free(cfg->introspection_url);
	free(cfg->client_id);
	free(cfg->client_secret);
	free(cfg->static_file);
	memset(cfg, 0, sizeof(*cfg));
}

static cm_err
parse_provider(auth_config *cfg)
{
	const char *p = cm_env_str("AUTH_PROVIDER", "");

	if (p[0] == '\0') {
		if (cfg->supabase_url[0] == '\0') {
			cm_error(NULL,
			    "no identity provider configured: set "
			    "SUPABASE_URL (and SUPABASE_SERVICE_KEY) or "
			    "AUTH_PROVIDER (see --help)");
			return (CM_EINVAL);
		}
		cfg->provider = AUTH_PROVIDER_SUPABASE;
	} else if (strcasecmp(p, "supabase") == 0) {
		cfg->provider = AUTH_PROVIDER_SUPABASE;
	} else if (strcasecmp(p, "jwt") == 0) {
		cfg->provider = AUTH_PROVIDER_JWT;
	} else if (strcasecmp(p, "introspection") == 0) {
		cfg->provider = AUTH_PROVIDER_INTROSPECTION;
	} else if (strcasecmp(p, "hybrid") == 0) {
		cfg->provider = AUTH_PROVIDER_HYBRID;
	} else if (strcasecmp(p, "static") == 0) {
		cfg->provider = AUTH_PROVIDER_STATIC;
	} else {
		cm_error(NULL,
		    "AUTH_PROVIDER must be one of supabase, jwt, "
		    "introspection, hybrid, static");
		return (CM_EINVAL);
	}
	return (CM_OK);
}

// Fills the derived defaults of the jwt-based providers.
static cm_err
jwt_defaults(auth_config *cfg)
{
	size_t n;
	int    supabase =
	    cfg->supabase_url[0] != '\0' && cfg->oidc_issuer[0] == '\0';

	if (cfg->jwks_url[0] == '\0' && cfg->oidc_issuer[0] == '\0' &&
	    cfg->supabase_url[0] != '\0') {
		free(cfg->jwks_url);
		n             = strlen(cfg->supabase_url) + 64;
		cfg->jwks_url = cm_xmalloc(n);
		snprintf(cfg->jwks_url, n, "%s/auth/v1/.well-known/jwks.json",
		    cfg->supabase_url);
	}
	if (cfg->issuer[0] == '\0') {
		free(cfg->issuer);
		if (cfg->oidc_issuer[0] != '\0') {
			cfg->issuer = cm_xstrdup(cfg->oidc_issuer);
		} else if (supabase) {
			n           = strlen(cfg->supabase_url) + 16;
			cfg->issuer = cm_xmalloc(n);
			snprintf(
			    cfg->issuer, n, "%s/auth/v1", cfg->supabase_url);
		} else {
			cfg->issuer = cm_xstrdup("");
		}
	}
	if (cfg->audience[0] == '\0' && supabase) {
		free(cfg->audience);
		cfg->audience = cm_xstrdup("authenticated");
	}
	if (cfg->jwks_url[0] == '\0' && cfg->oidc_issuer[0] == '\0' &&
	    cfg->jwt_secret[0] == '\0') {
		cm_error(NULL,
		    "the jwt provider needs keys: set AUTH_JWKS_URL, "
		    "OIDC_ISSUER, SUPABASE_URL or AUTH_JWT_SECRET");
		return (CM_EINVAL);
	}
	return (CM_OK);
}

// "*" in AUTH_ISSUER / AUTH_AUDIENCE means "do not check".
static void
star_to_empty(char **s)
{
	if (strcmp(*s, "*") == 0) {
		(*s)[0] = '\0';
	}
}

cm_err
auth_config_load(int argc, char **argv, auth_config *cfg, int *exit_now)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "health-check", no_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *listen_flag = NULL;
	char        listen_def[CM_IPC_URL_MAX];
	const char *outage;
	const char *secret;
	int         c;
	cm_err      rv;

	memset(cfg, 0, sizeof(*cfg));
	*exit_now = 0;
	optind    = 1;
	opterr    = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			listen_flag = optarg;
			break;
		case 'c':
			cfg->health_check = 1;
			break;
		case 'h':
			auth_config_usage(stdout);
			*exit_now = 1;
			return (CM_OK);
		case 'V':
			printf("threadgate-auth %s\n", TG_VERSION);
			*exit_now = 1;
			return (CM_OK);
		default:
			cm_error(
			    NULL, "unknown or incomplete option (see --help)");
			return (CM_EINVAL);
		}
	}
	if (optind < argc) {
		cm_error(NULL, "unexpected argument \"%s\" (see --help)",
		    argv[optind]);
		return (CM_EINVAL);
	}

	if (listen_flag == NULL &&
	    cm_env_str("AUTH_SERVICE_URL", NULL) == NULL) {
		// Only computed (and its directory made) when used.
		if (cm_default_ipc_url(
		        "auth", listen_def, sizeof(listen_def)) != CM_OK) {
			cm_error(NULL,
			    "no usable default for AUTH_SERVICE_URL; set it "
			    "(or --listen)");
			return (CM_EINVAL);
		}
		listen_flag = listen_def;
	}
	cfg->listen_url = cm_xstrdup(listen_flag != NULL
	        ? listen_flag
	        : cm_env_str("AUTH_SERVICE_URL", NULL));
	if (cfg->health_check) {
		return (CM_OK); // only the URL is needed to ask Health
	}
	cfg->supabase_url      = env_dup("SUPABASE_URL", "");
	cfg->supabase_key      = env_dup("SUPABASE_SERVICE_KEY", "");
	cfg->jwks_url          = env_dup("AUTH_JWKS_URL", "");
	cfg->oidc_issuer       = env_dup("OIDC_ISSUER", "");
	secret                 = cm_env_str("AUTH_JWT_SECRET", "");
	cfg->jwt_secret        = cm_xstrdup(secret[0] != '\0'
	               ? secret
	               : cm_env_str("SUPABASE_JWT_SECRET", ""));
	cfg->issuer            = env_dup("AUTH_ISSUER", "");
	cfg->audience          = env_dup("AUTH_AUDIENCE", "");
	cfg->identity_claim    = env_dup("AUTH_IDENTITY_CLAIM", "sub");
	cfg->introspection_url = env_dup("AUTH_INTROSPECTION_URL", "");
	cfg->client_id         = env_dup("AUTH_CLIENT_ID", "");
	cfg->client_secret     = env_dup("AUTH_CLIENT_SECRET", "");
	cfg->static_file       = env_dup("AUTH_STATIC_FILE", "");
	strip_trailing_slash(cfg->supabase_url);
	strip_trailing_slash(cfg->oidc_issuer);

	const struct {
		const char *name;
		int         def, min, max;
		int        *out;
	} ints[] = {
		{ "AUTH_WORKERS", 32, 1, CM_RPC_MAX_WORKERS, &cfg->workers },
		{ "AUTH_IDP_TIMEOUT_MS", 2000, 1, 60000,
		    &cfg->idp_timeout_ms },
		{ "AUTH_IDP_CONNECT_TIMEOUT_MS", 1000, 1, 60000,
		    &cfg->idp_connect_timeout_ms },
		{ "AUTH_CACHE_TTL", 60, 0, 86400, &cfg->cache_ttl_s },
		{ "AUTH_CACHE_MAX", 100000, 0, AUTH_CACHE_MAX_LIMIT,
		    &cfg->cache_max },
		{ "AUTH_LEEWAY", 30, 0, 300, &cfg->leeway_s },
		{ "AUTH_JWKS_COOLDOWN", 30, 30, 86400, &cfg->jwks_cooldown_s },
		{ "AUTH_JWKS_MAX_AGE", 600, 1, 86400, &cfg->jwks_max_age_s },
		{ "AUTH_HYBRID_INTERVAL", 30, 1, 86400,
		    &cfg->hybrid_interval_s },
	};
	const struct {
		const char *name;
		char      **val;
	} urls[] = {
		{ "SUPABASE_URL", &cfg->supabase_url },
		{ "AUTH_JWKS_URL", &cfg->jwks_url },
		{ "OIDC_ISSUER", &cfg->oidc_issuer },
		{ "AUTH_INTROSPECTION_URL", &cfg->introspection_url },
	}, strs[] = {
		{ "SUPABASE_SERVICE_KEY", &cfg->supabase_key },
		{ "AUTH_JWT_SECRET", &cfg->jwt_secret },
		{ "AUTH_ISSUER", &cfg->issuer },
		{ "AUTH_AUDIENCE", &cfg->audience },
		{ "AUTH_IDENTITY_CLAIM", &cfg->identity_claim },
		{ "AUTH_CLIENT_ID", &cfg->client_id },
		{ "AUTH_CLIENT_SECRET", &cfg->client_secret },
		{ "AUTH_STATIC_FILE", &cfg->static_file },
	};

	if (strlen(cfg->listen_url) >= LISTEN_URL_MAX ||
	    (strncmp(cfg->listen_url, "ipc://", 6) != 0 &&
	        strncmp(cfg->listen_url, "tcp://", 6) != 0 &&
	        strncmp(cfg->listen_url, "inproc://", 9) != 0)) {
		cm_error(NULL,
		    "AUTH_SERVICE_URL/--listen must be an ipc://, "
		    "tcp:// or inproc:// URL shorter than %d bytes",
		    LISTEN_URL_MAX);
		rv = CM_EINVAL;
		goto out;
	}
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		rv = env_int(ints[i].name, ints[i].def, ints[i].min,
		    ints[i].max, ints[i].out);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = cm_env_bool("THREADGATE_DEV", 0, &cfg->dev_mode);
	if (rv != CM_OK) {
		cm_error(NULL, "THREADGATE_DEV must be 0 or 1");
		goto out;
	}
	outage = cm_env_str("AUTH_HYBRID_OUTAGE", "refuse");
	if (strcasecmp(outage, "refuse") == 0) {
		cfg->hybrid_fail_open = 0;
	} else if (strcasecmp(outage, "allow") == 0) {
		cfg->hybrid_fail_open = 1;
	} else {
		cm_error(NULL, "AUTH_HYBRID_OUTAGE must be refuse or allow");
		rv = CM_EINVAL;
		goto out;
	}
	rv = parse_algs("AUTH_JWT_SECRET_ALGS",
	    cm_env_str("AUTH_JWT_SECRET_ALGS", ""), DEFAULT_SECRET_ALGS,
	    DEFAULT_JWKS_ALGS, &cfg->secret_algs);
	if (rv != CM_OK) {
		goto out;
	}
	rv = parse_algs("AUTH_JWKS_ALGS", cm_env_str("AUTH_JWKS_ALGS", ""),
	    DEFAULT_JWKS_ALGS, AUTH_ALG_HS256, &cfg->jwks_algs);
	if (rv != CM_OK) {
		goto out;
	}
	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		rv = check_http_url(urls[i].name, *urls[i].val);
		if (rv != CM_OK) {
			goto out;
		}
	}
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		rv = check_len(strs[i].name, *strs[i].val);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = parse_provider(cfg);
	if (rv != CM_OK) {
		goto out;
	}
	if (cfg->provider == AUTH_PROVIDER_JWT ||
	    cfg->provider == AUTH_PROVIDER_HYBRID) {
		// "*" is kept through the defaults (it is not empty), then
		// cleared below: the claim is then not checked.
		rv = jwt_defaults(cfg);
		if (rv != CM_OK) {
			goto out;
		}
	}
	star_to_empty(&cfg->issuer);
	star_to_empty(&cfg->audience);
	if (cfg->provider == AUTH_PROVIDER_HYBRID &&
	    strcmp(cfg->identity_claim, "sub") != 0) {
		// The IdP's /user id is compared with the token's identity:
		// for Supabase that is the sub claim.
		cm_error(NULL,
		    "AUTH_IDENTITY_CLAIM must be sub with "
		    "AUTH_PROVIDER=hybrid");
		rv = CM_EINVAL;
		goto out;
	}
	if (cfg->provider == AUTH_PROVIDER_HYBRID &&
	    cfg->cache_ttl_s > cfg->hybrid_interval_s) {
		// A cached answer must not outlive the confirmation interval.
		cfg->cache_ttl_s = cfg->hybrid_interval_s;
	}
	rv = CM_OK;
out:
	if (rv != CM_OK) {
		auth_config_free(cfg);
	}
	return (rv);
}

cm_err
auth_provider_new(const auth_config *cfg, auth_provider **out)
{
	switch (cfg->provider) {
	case AUTH_PROVIDER_SUPABASE:
		return (auth_supabase_new(cfg, out));
	case AUTH_PROVIDER_JWT:
		return (auth_jwt_new(cfg, out));
	case AUTH_PROVIDER_INTROSPECTION:
		return (auth_introspection_new(cfg, out));
	case AUTH_PROVIDER_HYBRID:
		return (auth_hybrid_new(cfg, out));
	case AUTH_PROVIDER_STATIC:
		return (auth_static_new(cfg, out));
	}
	return (CM_EINVAL);
}
