// SPDX-License-Identifier: MIT
//
// threadgate-dev-idp: entry point. Reads the configuration (environment,
// overridden by flags), opens the store and signing key, binds, serves
// until SIGTERM/SIGINT. Everything else lives in idp_core (idp.h).
//
// Exit codes: 0 clean stop, 1 other failure, 2 usage or configuration
// error, 3 cannot bind/listen or open the database.
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "dev-idp/idp.h"

#define EXIT_OTHER 1
#define EXIT_USAGE 2
#define EXIT_BIND  3

#define DEF_HOST        "127.0.0.1"
#define DEF_PORT        9999
#define DEF_DB          "threadgate-dev-idp.db"
#define DEF_ANON_KEY    "threadgate-dev-anon-key"
#define DEF_SERVICE_KEY "threadgate-dev-service-key"
#define DEF_JWT_EXP     IDP_JWT_EXP_DEFAULT

static void
usage(FILE *f)
{
	fprintf(f,
	    "Usage: threadgate-dev-idp [options]\n"
	    "\n"
	    "A Supabase Auth (GoTrue) compatible IdP for local development "
	    "and\n"
	    "tests: /auth/v1/signup, /token, /user, /logout, "
	    "/.well-known/jwks.json,\n"
	    "/.well-known/openid-configuration, /health, and /_dev/stats\n"
	    "(request counters; needs the service key). Users are\n"
	    "auto-confirmed. FOR DEVELOPMENT ONLY.\n"
	    "\n"
	    "Options (each overrides its environment variable):\n"
	    "  --host ADDR       DEV_IDP_HOST         listen address "
	    "(default " DEF_HOST ")\n"
	    "  --port N          DEV_IDP_PORT         listen port, 0 = any "
	    "free port (default %d)\n"
	    "  --port-file PATH  DEV_IDP_PORT_FILE    write the bound port "
	    "here once listening (default: none)\n"
	    "  --db PATH         DEV_IDP_DB           sqlite database "
	    "(default " DEF_DB ")\n"
	    "  --allow-remote    DEV_IDP_ALLOW_REMOTE=1  allow a "
	    "non-loopback listen address (default 0)\n"
	    "  --help            show this text\n"
	    "  --version         show the version\n"
	    "\n"
	    "Environment only:\n"
	    "  DEV_IDP_ANON_KEY     anon apikey (default " DEF_ANON_KEY ")\n"
	    "  DEV_IDP_SERVICE_KEY  service apikey (default " DEF_SERVICE_KEY
	    ")\n"
	    "  DEV_IDP_JWT_EXP      access token lifetime in seconds "
	    "(default %d, max %d)\n"
	    "  DEV_IDP_ISSUER       iss claim (default "
	    "http://<host>:<bound port>/auth/v1)\n"
	    "  LOG_LEVEL            debug|info|warn|error (default info)\n"
	    "\n"
	    "Exit codes: 0 stopped by SIGTERM/SIGINT, 1 other failure,\n"
	    "2 usage/configuration error, 3 cannot listen or open the "
	    "database.\n",
	    DEF_PORT, DEF_JWT_EXP, IDP_JWT_EXP_MAX);
}

enum {
	OPT_HOST = 256,
	OPT_PORT,
	OPT_PORT_FILE,
	OPT_DB,
	OPT_ALLOW_REMOTE,
	OPT_HELP,
	OPT_VERSION
};

static const struct option long_opts[] = {
	{ "host", required_argument, NULL, OPT_HOST },
	{ "port", required_argument, NULL, OPT_PORT },
	{ "port-file", required_argument, NULL, OPT_PORT_FILE },
	{ "db", required_argument, NULL, OPT_DB },
	{ "allow-remote", no_argument, NULL, OPT_ALLOW_REMOTE },
	{ "help", no_argument, NULL, OPT_HELP },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 },
};

// load_config() fills cfg from the environment and argv. Returns 0, or
// the exit code to stop with (-1 = exit 0 after --help/--version).
static int
load_config(int argc, char **argv, idp_config *cfg)
{
	int64_t v;
	int     opt, b;

	memset(cfg, 0, sizeof(*cfg));
	cfg->host        = cm_env_str("DEV_IDP_HOST", DEF_HOST);
	cfg->port_file   = cm_env_str("DEV_IDP_PORT_FILE", NULL);
	cfg->db_path     = cm_env_str("DEV_IDP_DB", DEF_DB);
	cfg->anon_key    = cm_env_str("DEV_IDP_ANON_KEY", DEF_ANON_KEY);
	cfg->service_key = cm_env_str("DEV_IDP_SERVICE_KEY", DEF_SERVICE_KEY);
	cfg->issuer      = cm_env_str("DEV_IDP_ISSUER", NULL);
	cfg->pbkdf2_iter = IDP_PBKDF2_ITER;
	if (cm_env_i64("DEV_IDP_PORT", DEF_PORT, 0, 65535, &v) != CM_OK) {
		return (EXIT_USAGE);
	}
	cfg->port = (int) v;
	if (cm_env_i64("DEV_IDP_JWT_EXP", DEF_JWT_EXP, 1, IDP_JWT_EXP_MAX,
	        &cfg->jwt_exp) != CM_OK) {
		return (EXIT_USAGE);
	}
	if (cm_env_bool("DEV_IDP_ALLOW_REMOTE", 0, &b) != CM_OK) {
		return (EXIT_USAGE);
	}
	cfg->allow_remote = b;

	while ((opt = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
		switch (opt) {
		case OPT_HOST:
			cfg->host = optarg;
			break;
		case OPT_PORT:
			if (cm_parse_i64(optarg, 0, 65535, &v) != CM_OK) {
				fprintf(stderr,
				    "threadgate-dev-idp: --port: "
				    "not a port number: %s\n",
				    optarg);
				return (EXIT_USAGE);
			}
			cfg->port = (int) v;
			break;
		case OPT_PORT_FILE:
			cfg->port_file = optarg;
			break;
		case OPT_DB:
			cfg->db_path = optarg;
			break;
		case OPT_ALLOW_REMOTE:
			cfg->allow_remote = 1;
			break;
		case OPT_HELP:
			usage(stdout);
			return (-1);
		case OPT_VERSION:
			printf("threadgate-dev-idp %s\n", TG_VERSION);
			return (-1);
		default:
			usage(stderr);
			return (EXIT_USAGE);
		}
	}
	if (optind < argc) {
		fprintf(stderr,
		    "threadgate-dev-idp: unexpected argument: %s\n",
		    argv[optind]);
		usage(stderr);
		return (EXIT_USAGE);
	}
	if (strcmp(cfg->anon_key, cfg->service_key) == 0) {
		fprintf(stderr,
		    "threadgate-dev-idp: DEV_IDP_ANON_KEY and "
		    "DEV_IDP_SERVICE_KEY must differ\n");
		return (EXIT_USAGE);
	}
	return (0);
}

int
main(int argc, char **argv)
{
	idp_config cfg;
	idp_ctx   *ctx = NULL;
	idp_http  *srv = NULL;
	sigset_t   set;
	int        rc, fd = -1, port = 0, sig;
	cm_err     rv;

	cm_log_init("dev-idp", cm_log_level_from_env());
	rc = load_config(argc, argv, &cfg);
	if (rc != 0) {
		return (rc < 0 ? 0 : rc);
	}
	signal(SIGPIPE, SIG_IGN);
	// Block the stop signals before any thread starts, so only the
	// sigwait() below receives them.
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	cm_warn(NULL,
	    "threadgate-dev-idp is for DEVELOPMENT ONLY: "
	    "auto-confirmed users, no rate limits; never expose it");
	rv = idp_ctx_open(&cfg, &ctx);
	if (rv != CM_OK) {
		cm_error(NULL,
		    "cannot open the database %s (%s); check the "
		    "path and its directory, or choose another with "
		    "DEV_IDP_DB "
		    "(or --db)",
		    cfg.db_path, cm_strerror(rv));
		rc = rv == CM_EUNAVAIL ? EXIT_BIND : EXIT_OTHER;
		goto out;
	}
	rv = idp_listen(cfg.host, cfg.port, cfg.allow_remote, &fd, &port);
	if (rv == CM_EPERM) {
		cm_error(NULL,
		    "refusing to listen on non-loopback address %s: "
		    "this is a development IdP; pass --allow-remote or set "
		    "DEV_IDP_ALLOW_REMOTE=1 if you really mean it",
		    cfg.host);
		rc = EXIT_USAGE;
		goto out;
	}
	if (rv == CM_EINVAL) {
		cm_error(NULL, "DEV_IDP_HOST/--host: cannot use address %s",
		    cfg.host);
		rc = EXIT_USAGE;
		goto out;
	}
	if (rv != CM_OK) {
		cm_error(NULL,
		    "cannot listen on %s port %d: %s; choose another "
		    "port with DEV_IDP_PORT (or --port; 0 = any free port)",
		    cfg.host, cfg.port, strerror(errno));
		rc = EXIT_BIND;
		goto out;
	}
	rv = idp_ctx_set_issuer(ctx, cfg.host, port);
	if (rv != CM_OK) {
		cm_error(NULL, "issuer URL too long");
		rc = EXIT_USAGE;
		goto out;
	}
	rv = idp_http_start(ctx, fd, &srv);
	fd = -1; // stolen
	if (rv != CM_OK) {
		cm_error(NULL, "cannot start the HTTP server");
		rc = EXIT_OTHER;
		goto out;
	}
	if (cfg.port_file != NULL) {
		rv = cm_write_port_file(cfg.port_file, port);
		if (rv != CM_OK) {
			cm_error(NULL, "cannot write the port file %s",
			    cfg.port_file);
			rc = EXIT_OTHER;
			goto out;
		}
	}
	cm_info(NULL, "listening on %s:%d, issuer %s, database %s, key %s",
	    cfg.host, port, ctx->issuer, cfg.db_path,
	    idp_jwt_key_kid(ctx->key));
	for (;;) {
		if (sigwait(&set, &sig) == 0 &&
		    (sig == SIGTERM || sig == SIGINT)) {
			break;
		}
	}
	cm_info(NULL, "stopping (signal %d)", sig);
	rc = 0;
out:
	if (fd >= 0) {
		close(fd);
	}
	idp_http_stop(srv);
	idp_ctx_close(ctx);
	return (rc);
}
