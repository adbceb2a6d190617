// SPDX-License-Identifier: MIT
//
// threadgate-threads: the thread-service process.
//
// Reads its configuration (environment, then flags, which win), opens the
// database named by THREADS_DB once (creating or migrating the schema),
// starts the rpc server (three worker lanes, each thread with its own
// connection) and the TTL sweeper, then waits for SIGTERM/SIGINT and stops
// cleanly. Exit codes: 0 clean stop, 1 other failure, 2 usage or
// configuration error, 3 cannot open the database or listen on the URL.
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "thread-service/tsvc.h"

#define EXIT_OTHER   1
#define EXIT_USAGE   2
#define EXIT_STORAGE 3

// The listen URL defaults to a socket in a directory private to the user
// (cm_default_ipc_url): one in /tmp could be taken by any local user.
#define DEFAULT_URL_TEXT                                    \
	"ipc://$XDG_RUNTIME_DIR/threadgate/threads.sock,\n" \
	"                     or ipc:///tmp/threadgate-<uid>/threads.sock"
#define DEFAULT_DB "threadgate-threads.db"

// getopt values of the --*-workers flags: OPT_LANE + the lane.
#define OPT_LANE 256

// Largest THREADS_DB_*_TIMEOUT_MS accepted: one hour.
#define TIMEOUT_MAX_MS 3600000

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: threadgate-threads [options]\n"
	    "\n"
	    "The threadgate thread-service: stores LangGraph threads and\n"
	    "their checkpoints per owner in sqlite or PostgreSQL, served\n"
	    "over nng.\n"
	    "\n"
	    "options (each overrides its environment variable):\n"
	    "  --listen URL       THREAD_SERVICE_URL    listen URL\n"
	    "                     (default " DEFAULT_URL_TEXT ")\n"
	    "  --db TARGET        THREADS_DB            a sqlite file path\n"
	    "                     (or sqlite:///path), or PostgreSQL: a\n"
	    "                     postgres:// URL or libpq keyword string\n"
	    "                     (default " DEFAULT_DB ")\n"
	    "  --read-workers N   THREAD_READ_WORKERS   point reads, 1..%d\n"
	    "                     (default %d)\n"
	    "  --scan-workers N   THREAD_SCAN_WORKERS   search, count and\n"
	    "                     history, 1..%d (default %d)\n"
	    "  --write-workers N  THREAD_WRITE_WORKERS  writes, 1..%d\n"
	    "                     (default %d)\n"
	    "  --ttl-sweep S      THREAD_TTL_SWEEP_S    seconds between TTL\n"
	    "                     sweeps, 0 disables, max %d (default %d)\n"
	    "  --health-check     ask the running instance at --listen for\n"
	    "                     Health; exit 0 serving, 1 not (a probe)\n"
	    "  --help             show this text\n"
	    "  --version          show the version\n"
	    "\n"
	    "environment only:\n"
	    "  THREADS_DB_STATEMENT_TIMEOUT_MS  PostgreSQL statement_timeout\n"
	    "                     backstop, 0 = none (default %d)\n"
	    "  THREADS_DB_CONNECT_TIMEOUT_MS    PostgreSQL connect timeout\n"
	    "                     (default %d)\n"
	    "  THREAD_MAX_THREADS_PER_USER      threads one owner may keep,\n"
	    "                     0 = unlimited (default %d)\n"
	    "  THREAD_MAX_CHECKPOINTS_PER_THREAD  checkpoints one thread may\n"
	    "                     hold, 0 = unlimited (default %d)\n"
	    "  THREAD_MAX_BYTES_PER_USER        bytes of JSON one owner may\n"
	    "                     store, 0 = unlimited (default %lld)\n"
	    "  LOG_LEVEL          debug|info|warn|error (default info)\n"
	    "  LOG_FORMAT         json|text (default: text on a terminal)\n"
	    "  METRICS_ADDR       host:port of the Prometheus /metrics\n"
	    "                     listener (default: none)\n"
	    "\n"
	    "Each worker holds one database connection: a process opens\n"
	    "read + scan + write workers + 1 (the sweeper).\n"
	    "\n"
	    "exit codes: 0 stopped by SIGTERM/SIGINT, 1 other failure,\n"
	    "2 usage or configuration error, 3 cannot open the database or\n"
	    "listen on the URL.\n",
	    TSVC_LANE_WORKERS_MAX, TSVC_READ_WORKERS_DEFAULT,
	    TSVC_LANE_WORKERS_MAX, TSVC_SCAN_WORKERS_DEFAULT,
	    TSVC_LANE_WORKERS_MAX, TSVC_WRITE_WORKERS_DEFAULT,
	    TSVC_SWEEP_MAX_S, TSVC_SWEEP_DEFAULT_S,
	    TSVC_STATEMENT_TIMEOUT_DEFAULT_MS, TSVC_CONNECT_TIMEOUT_DEFAULT_MS,
	    TSVC_MAX_THREADS_DEFAULT, TSVC_MAX_CHECKPOINTS_DEFAULT,
	    (long long) TSVC_MAX_BYTES_DEFAULT);
}

static int
parse_count(
    const char *name, const char *s, int64_t min, int64_t max, int64_t *out)
{
	if (cm_parse_i64(s, min, max, out) != CM_OK) {
		fprintf(stderr,
		    "threadgate-threads: %s must be an integer in "
		    "%lld..%lld\n",
		    name, (long long) min, (long long) max);
		return (-1);
	}
	return (0);
}

// What the log may say about the database: the backend and, for sqlite,
// the path (a PostgreSQL target may hold a password).
static void
describe_db(const tsvc_db *db, const char *target, char *out, size_t len)
{
	if (strcmp(tsvc_db_backend_name(db), "sqlite") == 0) {
		snprintf(out, len, "sqlite %s", target);
	} else {
		snprintf(out, len, "%s", tsvc_db_backend_name(db));
	}
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "db", required_argument, NULL, 'd' },
		{ "read-workers", required_argument, NULL,
		    OPT_LANE + TSVC_LANE_READ },
		{ "scan-workers", required_argument, NULL,
		    OPT_LANE + TSVC_LANE_SCAN },
		{ "write-workers", required_argument, NULL,
		    OPT_LANE + TSVC_LANE_WRITE },
		{ "ttl-sweep", required_argument, NULL, 's' },
		{ "health-check", no_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static const char *const lane_flags[TSVC_NLANES] = {
		[TSVC_LANE_READ]  = "--read-workers",
		[TSVC_LANE_SCAN]  = "--scan-workers",
		[TSVC_LANE_WRITE] = "--write-workers",
	};
	cm_rpc_server_config cfg     = { 0 };
	cm_rpc_server       *srv     = NULL;
	tsvc_sweeper        *sw      = NULL;
	tsvc_db             *db      = NULL;
	tsvc_db_options      opt     = tsvc_db_options_default();
	tsvc_workers         workers = { 0 };
	const char          *url;
	char                 url_def[CM_IPC_URL_MAX];
	const char          *target;
	int64_t              lanes[TSVC_NLANES];
	int64_t              sweep_s;
	int64_t              stmt_ms;
	int64_t              conn_ms;
	int64_t              max_threads;
	int64_t              max_cps;
	int64_t              max_bytes;
	int64_t              contexts = 1;
	sigset_t             sigs;
	char                 detail[CM_RPC_DETAIL_MAX];
	char                 what[128];
	int                  code         = EXIT_OTHER;
	int                  health_check = 0;
	int                  sig;
	int                  c;
	cm_err               rv;

	cm_log_init("thread-service", cm_log_level_from_env());
	url    = cm_env_str("THREAD_SERVICE_URL", NULL);
	target = cm_env_str("THREADS_DB", DEFAULT_DB);
	if (cm_env_i64("THREAD_READ_WORKERS", TSVC_READ_WORKERS_DEFAULT, 1,
	        TSVC_LANE_WORKERS_MAX, &lanes[TSVC_LANE_READ]) != CM_OK ||
	    cm_env_i64("THREAD_SCAN_WORKERS", TSVC_SCAN_WORKERS_DEFAULT, 1,
	        TSVC_LANE_WORKERS_MAX, &lanes[TSVC_LANE_SCAN]) != CM_OK ||
	    cm_env_i64("THREAD_WRITE_WORKERS", TSVC_WRITE_WORKERS_DEFAULT, 1,
	        TSVC_LANE_WORKERS_MAX, &lanes[TSVC_LANE_WRITE]) != CM_OK ||
	    cm_env_i64("THREAD_TTL_SWEEP_S", TSVC_SWEEP_DEFAULT_S, 0,
	        TSVC_SWEEP_MAX_S, &sweep_s) != CM_OK ||
	    cm_env_i64("THREADS_DB_STATEMENT_TIMEOUT_MS",
	        TSVC_STATEMENT_TIMEOUT_DEFAULT_MS, 0, TIMEOUT_MAX_MS,
	        &stmt_ms) != CM_OK ||
	    cm_env_i64("THREADS_DB_CONNECT_TIMEOUT_MS",
	        TSVC_CONNECT_TIMEOUT_DEFAULT_MS, 1, TIMEOUT_MAX_MS,
	        &conn_ms) != CM_OK ||
	    cm_env_i64("THREAD_MAX_THREADS_PER_USER", TSVC_MAX_THREADS_DEFAULT,
	        0, INT32_MAX, &max_threads) != CM_OK ||
	    cm_env_i64("THREAD_MAX_CHECKPOINTS_PER_THREAD",
	        TSVC_MAX_CHECKPOINTS_DEFAULT, 0, INT32_MAX,
	        &max_cps) != CM_OK ||
	    cm_env_i64("THREAD_MAX_BYTES_PER_USER", TSVC_MAX_BYTES_DEFAULT, 0,
	        INT64_MAX, &max_bytes) != CM_OK) {
		return (EXIT_USAGE);
	}
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			url = optarg;
			break;
		case 'd':
			target = optarg;
			break;
		case OPT_LANE + TSVC_LANE_READ:
		case OPT_LANE + TSVC_LANE_SCAN:
		case OPT_LANE + TSVC_LANE_WRITE:
			if (parse_count(lane_flags[c - OPT_LANE], optarg, 1,
			        TSVC_LANE_WORKERS_MAX,
			        &lanes[c - OPT_LANE]) != 0) {
				return (EXIT_USAGE);
			}
			break;
		case 's':
			if (parse_count("--ttl-sweep", optarg, 0,
			        TSVC_SWEEP_MAX_S, &sweep_s) != 0) {
				return (EXIT_USAGE);
			}
			break;
		case 'H':
			health_check = 1;
			break;
		case 'h':
			usage(stdout);
			return (0);
		case 'V':
			printf("threadgate-threads %s\n", TG_VERSION);
			return (0);
		default:
			usage(stderr);
			return (EXIT_USAGE);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "threadgate-threads: unexpected argument %s\n",
		    argv[optind]);
		usage(stderr);
		return (EXIT_USAGE);
	}
	// Only computed (and its directory made) when used.
	if (url == NULL) {
		if (cm_default_ipc_url("threads", url_def, sizeof(url_def)) !=
		    CM_OK) {
			cm_error(NULL,
			    "no usable default for THREAD_SERVICE_URL; set it "
			    "(or --listen)");
			return (EXIT_USAGE);
		}
		url = url_def;
	}
	if (health_check) {
		// Probe mode: ask the running instance, touch nothing.
		return (cm_rpc_health_check_main(url, 0));
	}
	opt.statement_timeout_ms = (int) stmt_ms;
	opt.connect_timeout_ms   = (int) conn_ms;
	opt.max_threads          = max_threads;
	opt.max_checkpoints      = max_cps;
	opt.max_bytes            = max_bytes;

	// Signals: SIGPIPE ignored; SIGTERM/SIGINT blocked in every thread
	// (the workers inherit the mask) and taken by sigwait below.
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	// Open once before the workers: creates/migrates the schema without
	// racing them.
	rv = tsvc_db_open(target, &opt, &db, detail, sizeof(detail));
	if (rv != CM_OK) {
		cm_error(NULL, "cannot open the database: %s", detail);
		return (rv == CM_EINVAL ? EXIT_USAGE : EXIT_STORAGE);
	}
	describe_db(db, target, what, sizeof(what));

	// Contexts: even with every lane's threads busy and its queue full,
	// one more request can be received (and answered 503 by its lane or
	// served by another).
	cfg.nlanes = TSVC_NLANES;
	for (int i = 0; i < TSVC_NLANES; i++) {
		cfg.lane_threads[i] = (int) lanes[i];
		cfg.lane_queue[i] =
		    (int) lanes[i] * TSVC_LANE_QUEUE_PER_WORKER;
		contexts += lanes[i] * (1 + TSVC_LANE_QUEUE_PER_WORKER);
	}
	if (contexts > CM_RPC_MAX_WORKERS) {
		contexts = CM_RPC_MAX_WORKERS;
	}
	workers.db       = db;
	workers.contexts = (int) contexts;
	workers.health   = NULL;
	cfg.url          = url;
	cfg.service      = tsvc_service();
	cfg.nworkers     = (int) contexts;
	cfg.worker_init  = tsvc_worker_init;
	cfg.worker_fini  = tsvc_worker_fini;
	cfg.health       = tsvc_health;
	cfg.arg          = &workers;
	rv               = cm_rpc_server_start(&cfg, &srv);
	if (rv != CM_OK) {
		cm_error(NULL, "cannot serve on %s: %s", url, cm_strerror(rv));
		code = (rv == CM_EINVAL) ? EXIT_USAGE : EXIT_STORAGE;
		goto out;
	}
	tsvc_metrics_init(srv);
	if (sweep_s > 0) {
		rv = tsvc_sweeper_start(db, sweep_s, &sw);
		if (rv != CM_OK) {
			cm_error(NULL, "cannot start the ttl sweeper: %s",
			    cm_strerror(rv));
			code = EXIT_STORAGE;
			goto out;
		}
	}
	cm_info(NULL,
	    "listening on %s, db %s, workers read %d scan %d write %d", url,
	    what, (int) lanes[TSVC_LANE_READ], (int) lanes[TSVC_LANE_SCAN],
	    (int) lanes[TSVC_LANE_WRITE]);

	for (;;) {
		if (sigwait(&sigs, &sig) == 0) {
			break;
		}
	}
	cm_info(NULL, "signal %d: stopping", sig);
	code = 0;
out:
	tsvc_sweeper_stop(sw);
	if (srv != NULL) {
		tsvc_metrics_fini(srv);
	}
	cm_rpc_server_stop(srv);
	tsvc_health_fini(&workers);
	tsvc_db_close(db);
	return (code);
}
