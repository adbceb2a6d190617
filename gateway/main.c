// SPDX-License-Identifier: MIT
//
// threadgate-gateway: the HTTP front door process.
//
// Reads its configuration (environment, then flags, which win), starts the
// gateway (gw_server_start: upstream rpc clients, the HTTP event loops),
// then waits for SIGTERM/SIGINT: /ready turns 503 at once, the gateway
// keeps serving for GATEWAY_DRAIN_DELAY_MS (so load balancers notice), then
// stops cleanly, letting requests in flight finish. --health-check asks a
// running gateway's /ready instead. Exit codes: 0 clean stop (or ready),
// 1 other failure (or not ready), 2 usage or configuration error, 3
// cannot bind/listen.
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "gateway/gw.h"

#define EXIT_OTHER  1
#define EXIT_USAGE  2
#define EXIT_LISTEN 3

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT 2024
// The upstream URLs default to sockets in a directory private to the
// user (cm_default_ipc_url): a socket in /tmp could be created first by
// any local user, who would then receive the gateway's calls.
#define DEFAULT_URL_TEXT(name)                               \
	"ipc://$XDG_RUNTIME_DIR/threadgate/" name ".sock,\n" \
	"                       or ipc:///tmp/threadgate-<uid>/" name ".sock"
#define DEFAULT_AUTH_TIMEOUT_MS    3000
#define DEFAULT_THREADS_TIMEOUT_MS 5000
#define DEFAULT_MAX_CONNECTIONS    1024
#define DEFAULT_PER_IP_CONNECTIONS 256
#define DEFAULT_IDLE_TIMEOUT_S     30
// Upper bounds of the numeric settings: beyond them a value is a typo.
#define MAX_TIMEOUT_MS     600000
#define MAX_THREADS        256
#define MAX_CONNECTIONS    100000
#define MAX_IDLE_TIMEOUT_S 3600
#define MAX_REQ_TIMEOUT_S  3600
#define MAX_DRAIN_DELAY_MS 600000
// Shortest readiness probe interval: a probe round is a few rpc calls.
#define MIN_READY_INTERVAL_MS 50
// GATEWAY_MEMORY_BUDGET_MB bounds: at least one largest reply
// (CM_RPC_MAX_MSG, 16 MiB) rendered, at most 64 GiB.
#define MIN_MEMORY_BUDGET_MB 64
#define MAX_MEMORY_BUDGET_MB 65536
// Allocations from this size up get their own mapping, given back to the
// system on free. glibc raises this threshold on its own after a large
// free (up to 32 MiB), after which large reply buffers stay in the heap
// and the process never shrinks (issue 10: RSS "never returned").
// Fixing it at glibc's initial 128 KiB keeps that from happening.
#define MALLOC_MMAP_THRESHOLD (128 * 1024)
// Descriptors besides client connections: listening socket, epoll and
// eventfds, nng pipes, logs.
#define FD_RESERVE 64

// raise_fd_limit() lifts the soft descriptor limit (often 1024) towards
// what GATEWAY_MAX_CONNECTIONS needs: each connection, and briefly an
// evicted one besides it. Bounded by the hard limit; warns when short.
static void
raise_fd_limit(int max_connections)
{
	struct rlimit rl;
	rlim_t        need = (rlim_t) max_connections * 2 + FD_RESERVE;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need) {
		return;
	}
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need
	    ? need
	    : rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < need) {
		cm_warn(NULL,
		    "descriptor limit %llu is below the %llu that "
		    "GATEWAY_MAX_CONNECTIONS=%d needs; raise ulimit -n",
		    (unsigned long long) rl.rlim_cur,
		    (unsigned long long) need, max_connections);
	}
}

static void
usage(FILE *f)
{
	static const char auth_def[]    = DEFAULT_URL_TEXT("auth");
	static const char threads_def[] = DEFAULT_URL_TEXT("threads");

	fprintf(f,
	    "usage: threadgate-gateway [options]\n"
	    "\n"
	    "The threadgate gateway: the LangGraph threads API over HTTP,\n"
	    "authenticated by the auth-service, stored by the "
	    "thread-service.\n"
	    "\n"
	    "options (each overrides its environment variable):\n"
	    "  --host HOST          GATEWAY_HOST        address to bind\n"
	    "                       (default " DEFAULT_HOST ")\n"
	    "  --port N             GATEWAY_PORT        TCP port, 0 = any "
	    "free\n"
	    "                       port (default %d)\n"
	    "  --port-file PATH     GATEWAY_PORT_FILE   write the bound port\n"
	    "                       here once listening (default: none)\n"
	    "  --auth-url URLS      AUTH_SERVICE_URL    auth-service "
	    "replicas\n"
	    "                       (default %s)\n"
	    "  --threads-url URLS   THREAD_SERVICE_URL  thread-service "
	    "replicas\n"
	    "                       (default %s)\n"
	    "                       URLS: nng URLs separated by commas; a\n"
	    "                       tcp:// host name means every address it\n"
	    "                       resolves to, re-resolved every 5 s\n"
	    "  --health-check       ask the running gateway's GET /ready on\n"
	    "                       HOST:PORT; exit 0 ready, 1 not (for\n"
	    "                       exec probes and Docker HEALTHCHECK)\n"
	    "  --help               show this text\n"
	    "  --version            show the version\n"
	    "\n"
	    "environment only:\n"
	    "  GATEWAY_AUTH_TIMEOUT_MS     deadline of the auth call (%d)\n"
	    "  GATEWAY_THREADS_TIMEOUT_MS  deadline of a thread-service call\n"
	    "                              (%d)\n"
	    "  GATEWAY_MAX_BODY            largest request body, bytes (%d,\n"
	    "                              max %d)\n"
	    "  GATEWAY_THREADS             HTTP event loops (default: the\n"
	    "                              number of CPUs)\n"
	    "  GATEWAY_MAX_CONNECTIONS     open connections in all (%d)\n"
	    "  GATEWAY_PER_IP_CONNECTIONS  open connections per client IP "
	    "(%d)\n"
	    "  GATEWAY_IDLE_TIMEOUT_S      close idle connections after (%d)\n"
	    "  GATEWAY_HEADER_TIMEOUT_S    a request head must arrive within\n"
	    "                              this many seconds (%d)\n"
	    "  GATEWAY_BODY_TIMEOUT_S      a request body must arrive within\n"
	    "                              this many seconds (%d)\n"
	    "  GATEWAY_MEMORY_BUDGET_MB    memory all requests may hold for\n"
	    "                              bodies and replies (%d)\n"
	    "  GATEWAY_READY_INTERVAL_MS   upstream Health probes for /ready\n"
	    "                              every (%d)\n"
	    "  GATEWAY_DRAIN_DELAY_MS      on SIGTERM: /ready is 503 this "
	    "long\n"
	    "                              before the gateway stops "
	    "accepting\n"
	    "                              (0)\n"
	    "  GATEWAY_AUTH_CACHE_TTL      reuse an identity the "
	    "auth-service\n"
	    "                              allows reusing for at most this\n"
	    "                              many seconds, 0 = off (%d, max "
	    "%d)\n"
	    "  GATEWAY_AUTH_CACHE_MAX      identities kept (%d)\n"
	    "  GATEWAY_BATCH_WINDOW        under load, point reads share a\n"
	    "                              thread-service message once this\n"
	    "                              many are out, 0 = off (%d, max "
	    "%d)\n"
	    "  GATEWAY_PUBLIC_METRICS      1: also serve GET /metrics on the\n"
	    "                              public port, unauthenticated (0)\n"
	    "  METRICS_ADDR                host:port of a separate /metrics\n"
	    "                              listener (default: none)\n"
	    "  METRICS_PORT_FILE           write its bound port here\n"
	    "  LOG_LEVEL                   debug|info|warn|error (info)\n"
	    "  LOG_FORMAT                  json|text (text on a terminal)\n"
	    "\n"
	    "exit codes: 0 stopped by SIGTERM/SIGINT, 1 other failure,\n"
	    "2 usage or configuration error, 3 cannot bind/listen.\n",
	    DEFAULT_PORT, auth_def, threads_def, DEFAULT_AUTH_TIMEOUT_MS,
	    DEFAULT_THREADS_TIMEOUT_MS, GW_DEFAULT_MAX_BODY, GW_MAX_BODY_LIMIT,
	    DEFAULT_MAX_CONNECTIONS, DEFAULT_PER_IP_CONNECTIONS,
	    DEFAULT_IDLE_TIMEOUT_S, GW_DEFAULT_HEADER_TIMEOUT_S,
	    GW_DEFAULT_BODY_TIMEOUT_S, GW_DEFAULT_MEMORY_BUDGET_MB,
	    GW_READY_INTERVAL_DEFAULT_MS, GW_AUTHCACHE_TTL_DEFAULT_S,
	    GW_AUTHCACHE_TTL_MAX_S, GW_AUTHCACHE_MAX_DEFAULT,
	    GW_BATCH_WINDOW_DEFAULT, CM_RPC_BATCH_WINDOW_MAX);
}

static int
env_int(const char *name, int64_t def, int64_t min, int64_t max, int *out)
{
	int64_t v;

	// cm_env_i64() logs which variable is wrong and why.
	if (cm_env_i64(name, def, min, max, &v) != CM_OK) {
		return (-1);
	}
	*out = (int) v;
	return (0);
}

// drain() turns /ready 503 and keeps serving for delay_ms, so that load
// balancers and Kubernetes endpoints stop routing here before the
// listener closes. A second SIGTERM/SIGINT cuts the wait short.
static void
drain(gw_server *srv, const sigset_t *set, int delay_ms)
{
	struct timespec ts = { delay_ms / 1000,
		(long) (delay_ms % 1000) * 1000000L };

	gw_ops_drain(srv);
	if (delay_ms <= 0) {
		return;
	}
	cm_info(
	    NULL, "draining for %d ms before closing the listener", delay_ms);
	while (sigtimedwait(set, NULL, &ts) < 0 && errno == EINTR) {
		// interrupted by another signal: keep waiting
	}
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'p' },
		{ "port-file", required_argument, NULL, 'f' },
		{ "auth-url", required_argument, NULL, 'a' },
		{ "threads-url", required_argument, NULL, 't' },
		{ "health-check", no_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	gw_config  cfg = { 0 };
	gw_server *srv = NULL;
	sigset_t   set;
	long       ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	char       auth_def[CM_IPC_URL_MAX];
	char       threads_def[CM_IPC_URL_MAX];
	int        max_body;
	int        budget_mb;
	int        acache_ttl_s;
	int        sig;
	int        c;
	int        health_check = 0;
	int64_t    port;
	cm_err     rv;

	cm_log_init("gateway", cm_log_level_from_env());
	cfg.host        = cm_env_str("GATEWAY_HOST", DEFAULT_HOST);
	cfg.port_file   = cm_env_str("GATEWAY_PORT_FILE", NULL);
	cfg.auth_url    = cm_env_str("AUTH_SERVICE_URL", NULL);
	cfg.threads_url = cm_env_str("THREAD_SERVICE_URL", NULL);
	if (env_int("GATEWAY_PORT", DEFAULT_PORT, 0, 65535, &cfg.port) != 0 ||
	    env_int("GATEWAY_AUTH_TIMEOUT_MS", DEFAULT_AUTH_TIMEOUT_MS, 1,
	        MAX_TIMEOUT_MS, &cfg.auth_timeout_ms) != 0 ||
	    env_int("GATEWAY_THREADS_TIMEOUT_MS", DEFAULT_THREADS_TIMEOUT_MS,
	        1, MAX_TIMEOUT_MS, &cfg.threads_timeout_ms) != 0 ||
	    env_int("GATEWAY_MAX_BODY", GW_DEFAULT_MAX_BODY, 1,
	        GW_MAX_BODY_LIMIT, &max_body) != 0 ||
	    env_int("GATEWAY_THREADS", ncpu > 0 ? ncpu : 2, 1, MAX_THREADS,
	        &cfg.threads) != 0 ||
	    env_int("GATEWAY_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, 1,
	        MAX_CONNECTIONS, &cfg.max_connections) != 0 ||
	    env_int("GATEWAY_PER_IP_CONNECTIONS", DEFAULT_PER_IP_CONNECTIONS,
	        1, MAX_CONNECTIONS, &cfg.per_ip_connections) != 0 ||
	    env_int("GATEWAY_IDLE_TIMEOUT_S", DEFAULT_IDLE_TIMEOUT_S, 1,
	        MAX_IDLE_TIMEOUT_S, &cfg.idle_timeout_s) != 0 ||
	    env_int("GATEWAY_HEADER_TIMEOUT_S", GW_DEFAULT_HEADER_TIMEOUT_S, 1,
	        MAX_REQ_TIMEOUT_S, &cfg.header_timeout_s) != 0 ||
	    env_int("GATEWAY_BODY_TIMEOUT_S", GW_DEFAULT_BODY_TIMEOUT_S, 1,
	        MAX_REQ_TIMEOUT_S, &cfg.body_timeout_s) != 0 ||
	    env_int("GATEWAY_MEMORY_BUDGET_MB", GW_DEFAULT_MEMORY_BUDGET_MB,
	        MIN_MEMORY_BUDGET_MB, MAX_MEMORY_BUDGET_MB, &budget_mb) != 0 ||
	    env_int("GATEWAY_READY_INTERVAL_MS", GW_READY_INTERVAL_DEFAULT_MS,
	        MIN_READY_INTERVAL_MS, MAX_TIMEOUT_MS,
	        &cfg.ready_interval_ms) != 0 ||
	    env_int("GATEWAY_DRAIN_DELAY_MS", 0, 0, MAX_DRAIN_DELAY_MS,
	        &cfg.drain_delay_ms) != 0 ||
	    env_int("GATEWAY_AUTH_CACHE_TTL", GW_AUTHCACHE_TTL_DEFAULT_S, 0,
	        GW_AUTHCACHE_TTL_MAX_S, &acache_ttl_s) != 0 ||
	    env_int("GATEWAY_AUTH_CACHE_MAX", GW_AUTHCACHE_MAX_DEFAULT, 1,
	        GW_AUTHCACHE_MAX_LIMIT, &cfg.auth_cache_max) != 0 ||
	    env_int("GATEWAY_BATCH_WINDOW", GW_BATCH_WINDOW_DEFAULT, 0,
	        CM_RPC_BATCH_WINDOW_MAX, &cfg.batch_window) != 0 ||
	    cm_env_bool("GATEWAY_PUBLIC_METRICS", 0, &cfg.public_metrics) !=
	        CM_OK) {
		return (EXIT_USAGE);
	}
	cfg.max_body          = (size_t) max_body;
	cfg.auth_cache_ttl_ms = acache_ttl_s * 1000;
	cfg.memory_budget     = (size_t) budget_mb * 1024 * 1024;
	mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
	raise_fd_limit(cfg.max_connections);

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'H':
			cfg.host = optarg;
			break;
		case 'p':
			if (cm_parse_i64(optarg, 0, 65535, &port) != CM_OK) {
				fprintf(stderr,
				    "threadgate-gateway: --port must "
				    "be 0..65535\n");
				return (EXIT_USAGE);
			}
			cfg.port = (int) port;
			break;
		case 'f':
			cfg.port_file = optarg;
			break;
		case 'a':
			cfg.auth_url = optarg;
			break;
		case 't':
			cfg.threads_url = optarg;
			break;
		case 'c':
			health_check = 1;
			break;
		case 'h':
			usage(stdout);
			return (0);
		case 'V':
			printf("threadgate-gateway %s\n", TG_VERSION);
			return (0);
		default:
			usage(stderr);
			return (EXIT_USAGE);
		}
	}
	if (optind != argc) {
		usage(stderr);
		return (EXIT_USAGE);
	}
	if (health_check) {
		return (gw_ops_health_check_main(&cfg));
	}
	// Only computed (and their directory made) when used.
	if ((cfg.auth_url == NULL &&
	        cm_default_ipc_url("auth", auth_def, sizeof(auth_def)) !=
	            CM_OK) ||
	    (cfg.threads_url == NULL &&
	        cm_default_ipc_url(
	            "threads", threads_def, sizeof(threads_def)) != CM_OK)) {
		cm_error(NULL,
		    "no usable default for AUTH_SERVICE_URL / "
		    "THREAD_SERVICE_URL; set them (or --auth-url, "
		    "--threads-url)");
		return (EXIT_USAGE);
	}
	if (cfg.auth_url == NULL) {
		cfg.auth_url = auth_def;
	}
	if (cfg.threads_url == NULL) {
		cfg.threads_url = threads_def;
	}

	// Every thread started from here on inherits this mask, so only
	// sigwait() below sees SIGTERM/SIGINT.
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	rv = gw_server_start(&cfg, &srv);
	if (rv != CM_OK) {
		return (rv == CM_EINVAL     ? EXIT_USAGE
		        : rv == CM_EUNAVAIL ? EXIT_LISTEN
		                            : EXIT_OTHER);
	}
	if (sigwait(&set, &sig) != 0) {
		sig = 0;
	}
	cm_info(NULL, "signal %d: stopping", sig);
	drain(srv, &set, cfg.drain_delay_ms);
	gw_server_stop(srv);
	cm_info(NULL, "stopped");
	return (0);
}
