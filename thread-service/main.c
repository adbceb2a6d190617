// SPDX-License-Identifier: MIT
//
// threadgate-threads: the thread-service process.
//
// Reads its configuration (environment, then flags, which win), opens the
// sqlite database once to create or migrate the schema, starts the rpc
// server (one sqlite connection per worker) and the TTL sweeper, then
// waits for SIGTERM/SIGINT and stops cleanly. Exit codes: 0 clean stop,
// 1 other failure, 2 usage or configuration error, 3 cannot open the
// database or listen on the URL.
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "thread-service/tsvc.h"

#define EXIT_OTHER   1
#define EXIT_USAGE   2
#define EXIT_STORAGE 3

#define DEFAULT_URL "ipc:///tmp/threadgate-threads.sock"
#define DEFAULT_DB  "threadgate-threads.db"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: threadgate-threads [options]\n"
	    "\n"
	    "The threadgate thread-service: stores LangGraph threads and\n"
	    "their checkpoints per owner in sqlite, served over nng.\n"
	    "\n"
	    "options (each overrides its environment variable):\n"
	    "  --listen URL       THREAD_SERVICE_URL   listen URL\n"
	    "                     (default " DEFAULT_URL ")\n"
	    "  --db PATH          THREADS_DB           sqlite database file; "
	    "its\n"
	    "                     directory must exist (default " DEFAULT_DB
	    ")\n"
	    "  --workers N        THREAD_WORKERS       rpc workers, 1..%d, "
	    "each\n"
	    "                     with its own connection (default %d)\n"
	    "  --ttl-sweep S      THREAD_TTL_SWEEP_S   seconds between TTL "
	    "sweeps,\n"
	    "                     0 disables, max %d (default %d)\n"
	    "  --help             show this text\n"
	    "  --version          show the version\n"
	    "\n"
	    "environment only:\n"
	    "  LOG_LEVEL          debug|info|warn|error (default info)\n"
	    "\n"
	    "exit codes: 0 stopped by SIGTERM/SIGINT, 1 other failure,\n"
	    "2 usage or configuration error, 3 cannot open the database or\n"
	    "listen on the URL.\n",
	    CM_RPC_MAX_WORKERS, TSVC_WORKERS_DEFAULT, TSVC_SWEEP_MAX_S,
	    TSVC_SWEEP_DEFAULT_S);
}

// ---------------------------------------------------------------------
// TTL sweeper: one thread with its own store, woken every interval.
// ---------------------------------------------------------------------

typedef struct sweeper {
	tsvc_store     *store;
	int64_t         interval_s;
	pthread_t       thread;
	pthread_mutex_t mtx;
	pthread_cond_t  cv;
	int             stop;
} sweeper;

static void *
sweeper_main(void *arg)
{
	sweeper *sw = arg;

	pthread_mutex_lock(&sw->mtx);
	while (!sw->stop) {
		struct timespec ts;
		int64_t         n = 0;
		cm_err          rv;

		pthread_mutex_unlock(&sw->mtx);
		// Batches of TSVC_SWEEP_BATCH, one transaction each, until a
		// batch comes back short: other writers get the lock between.
		do {
			n  = 0;
			rv = tsvc_store_sweep(sw->store, cm_now_us(), &n);
			if (rv != CM_OK) {
				cm_warn(NULL, "ttl sweep: %s",
				    tsvc_store_detail(sw->store));
			} else if (n > 0) {
				cm_info(NULL,
				    "ttl sweep: deleted %lld expired threads",
				    (long long) n);
			}
		} while (rv == CM_OK && n == TSVC_SWEEP_BATCH);
		pthread_mutex_lock(&sw->mtx);
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t) sw->interval_s;
		while (!sw->stop &&
		    pthread_cond_timedwait(&sw->cv, &sw->mtx, &ts) !=
		        ETIMEDOUT) {
			// woken early: re-check stop, keep the deadline
		}
	}
	pthread_mutex_unlock(&sw->mtx);
	return (NULL);
}

static int
sweeper_start(sweeper *sw)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&sw->mtx, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sw->cv, &ca);
	pthread_condattr_destroy(&ca);
	return (pthread_create(&sw->thread, NULL, sweeper_main, sw));
}

static void
sweeper_stop(sweeper *sw)
{
	pthread_mutex_lock(&sw->mtx);
	sw->stop = 1;
	pthread_cond_signal(&sw->cv);
	pthread_mutex_unlock(&sw->mtx);
	pthread_join(sw->thread, NULL);
	pthread_cond_destroy(&sw->cv);
	pthread_mutex_destroy(&sw->mtx);
}

// ---------------------------------------------------------------------
// main
// ---------------------------------------------------------------------

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

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "db", required_argument, NULL, 'd' },
		{ "workers", required_argument, NULL, 'w' },
		{ "ttl-sweep", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	cm_rpc_server_config cfg = { 0 };
	cm_rpc_server       *srv = NULL;
	sweeper              sw  = { 0 };
	const char          *url;
	const char          *db;
	int64_t              workers;
	int64_t              sweep_s;
	sigset_t             sigs;
	char                 detail[CM_RPC_DETAIL_MAX];
	int                  sweeping = 0;
	int                  code     = EXIT_OTHER;
	int                  sig;
	int                  c;
	cm_err               rv;

	cm_log_init("thread-service", cm_log_level_from_env());
	url = cm_env_str("THREAD_SERVICE_URL", DEFAULT_URL);
	db  = cm_env_str("THREADS_DB", DEFAULT_DB);
	if (cm_env_i64("THREAD_WORKERS", TSVC_WORKERS_DEFAULT, 1,
	        CM_RPC_MAX_WORKERS, &workers) != CM_OK ||
	    cm_env_i64("THREAD_TTL_SWEEP_S", TSVC_SWEEP_DEFAULT_S, 0,
	        TSVC_SWEEP_MAX_S, &sweep_s) != CM_OK) {
		return (EXIT_USAGE);
	}
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			url = optarg;
			break;
		case 'd':
			db = optarg;
			break;
		case 'w':
			if (parse_count("--workers", optarg, 1,
			        CM_RPC_MAX_WORKERS, &workers) != 0) {
				return (EXIT_USAGE);
			}
			break;
		case 's':
			if (parse_count("--ttl-sweep", optarg, 0,
			        TSVC_SWEEP_MAX_S, &sweep_s) != 0) {
				return (EXIT_USAGE);
			}
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

	// Signals: SIGPIPE ignored; SIGTERM/SIGINT blocked in every thread
	// (the workers inherit the mask) and taken by sigwait below.
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	// Open once before the workers: creates/migrates the schema and
	// switches to WAL without racing them. This store is the sweeper's.
	rv = tsvc_store_open(db, &sw.store, detail, sizeof(detail));
	if (rv != CM_OK) {
		cm_error(NULL, "cannot open database %s: %s", db, detail);
		return (rv == CM_EINVAL ? EXIT_USAGE : EXIT_STORAGE);
	}

	cfg.url         = url;
	cfg.service     = tsvc_service();
	cfg.nworkers    = (int) workers;
	cfg.nblocking   = TSVC_WRITE_THREADS;
	cfg.worker_init = tsvc_worker_init;
	cfg.worker_fini = tsvc_worker_fini;
	cfg.arg         = (void *) db;
	rv              = cm_rpc_server_start(&cfg, &srv);
	if (rv != CM_OK) {
		cm_error(NULL, "cannot serve on %s: %s", url, cm_strerror(rv));
		code = (rv == CM_EINVAL) ? EXIT_USAGE : EXIT_STORAGE;
		goto out;
	}
	if (sweep_s > 0) {
		sw.interval_s = sweep_s;
		if (sweeper_start(&sw) != 0) {
			cm_error(NULL, "cannot start the ttl sweeper");
			goto out;
		}
		sweeping = 1;
	}
	cm_info(NULL, "listening on %s, db %s, %d workers", url, db,
	    (int) workers);

	for (;;) {
		if (sigwait(&sigs, &sig) == 0) {
			break;
		}
	}
	cm_info(NULL, "signal %d: stopping", sig);
	code = 0;
out:
	if (sweeping) {
		sweeper_stop(&sw);
	}
	cm_rpc_server_stop(srv);
	tsvc_store_close(sw.store);
	return (code);
}
