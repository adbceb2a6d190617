// SPDX-License-Identifier: MIT
//
// threadgate-auth: reads the configuration, builds the provider, serves
// Authenticate/Stats (and the rpc layer's Health) until SIGTERM or SIGINT,
// then stops cleanly. /metrics is served on METRICS_ADDR by the rpc layer.
// --health-check asks a running instance's Health instead (exit 0/1).
// Exit codes: 0 ok, 1 other error, 2 usage/configuration, 3 cannot listen.

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <curl/curl.h>

#include "auth-service/auth.h"
#include "auth-service/service.h"
#include "common/log.h"
#include "common/rpc.h"

static int
wait_for_signal(void)
{
	sigset_t set;
	int      sig = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigwait(&set, &sig) != 0) {
		return (-1);
	}
	return (sig);
}

int
main(int argc, char **argv)
{
	auth_config    cfg      = { 0 };
	auth_provider *provider = NULL;
	auth_server   *srv      = NULL;
	sigset_t       set;
	int            exit_now = 0;
	int            code     = AUTH_EXIT_OTHER;
	int            sig;
	cm_err         rv;

	cm_log_init("auth-service", cm_log_level_from_env());
	signal(SIGPIPE, SIG_IGN);
	// Block the stop signals in every thread; main waits for them.
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	rv = auth_config_load(argc, argv, &cfg, &exit_now);
	if (rv != CM_OK) {
		code = AUTH_EXIT_USAGE;
		goto out;
	}
	if (exit_now) {
		code = AUTH_EXIT_OK;
		goto out;
	}
	if (cfg.health_check) {
		code = cm_rpc_health_check_main(cfg.listen_url, 0);
		goto out;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		cm_error(NULL, "libcurl initialisation failed");
		goto out;
	}
	rv = auth_provider_new(&cfg, &provider);
	if (rv != CM_OK) {
		code = rv == CM_EINVAL ? AUTH_EXIT_USAGE : AUTH_EXIT_OTHER;
		goto out;
	}
	rv = auth_server_start(&cfg, provider, &srv);
	if (rv != CM_OK) {
		cm_error(NULL, "cannot serve on %s: %s", cfg.listen_url,
		    cm_strerror(rv));
		code = rv == CM_EUNAVAIL ? AUTH_EXIT_LISTEN
		    : rv == CM_EINVAL    ? AUTH_EXIT_USAGE
		                         : AUTH_EXIT_OTHER;
		goto out;
	}
	cm_info(NULL,
	    "listening on %s (provider %s, %d workers, cache ttl "
	    "%d s, max %d)",
	    cfg.listen_url, provider->name, cfg.workers, cfg.cache_ttl_s,
	    cfg.cache_max);
	sig = wait_for_signal();
	cm_info(NULL, "stopping (signal %d)", sig);
	code = AUTH_EXIT_OK;

out:
	auth_server_stop(srv);
	if (provider != NULL) {
		provider->destroy(provider);
	}
	auth_config_free(&cfg);
	curl_global_cleanup();
	return (code);
}
