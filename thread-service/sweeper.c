// SPDX-License-Identifier: MIT
//
// The TTL sweeper: one thread with its own connection that deletes
// expired threads (tsvc_store_sweep) at start and then every interval,
// each time followed by the backend's upkeep (tsvc_store_maintain).
// Every replica runs one; the backends make that safe (backend.h sweep()).
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "thread-service/tsvc.h"

struct tsvc_sweeper {
	tsvc_store          *store;
	int64_t              interval_s;
	pthread_t            thread;
	pthread_mutex_t      mtx;
	pthread_cond_t       cv;
	int                  stop;
	atomic_uint_fast64_t runs;
};

static void *
sweeper_main(void *arg)
{
	tsvc_sweeper *sw = arg;

	pthread_mutex_lock(&sw->mtx);
	while (!sw->stop) {
		struct timespec ts;
		int64_t         n = 0;
		cm_err          rv;

		pthread_mutex_unlock(&sw->mtx);
		tsvc_store_set_deadline(sw->store, 0);
		rv = tsvc_store_sweep(sw->store, cm_now_us(), &n);
		if (rv != CM_OK) {
			cm_warn(NULL, "ttl sweep: %s (%s)",
			    tsvc_store_detail(sw->store), cm_strerror(rv));
		}
		if (n > 0) {
			cm_info(NULL,
			    "ttl sweep: deleted %lld expired threads",
			    (long long) n);
		}
		atomic_fetch_add(&sw->runs, 1);
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

cm_err
tsvc_sweeper_start(tsvc_db *db, int64_t interval_s, tsvc_sweeper **out)
{
	tsvc_sweeper      *sw;
	pthread_condattr_t ca;
	char               detail[CM_RPC_DETAIL_MAX];
	cm_err             rv;

	if (interval_s < 1 || interval_s > TSVC_SWEEP_MAX_S) {
		return (CM_EINVAL);
	}
	sw = cm_xcalloc(1, sizeof(*sw));
	rv = tsvc_store_open(db, &sw->store, detail, sizeof(detail));
	if (rv != CM_OK) {
		cm_error(NULL, "ttl sweeper: cannot open storage: %s", detail);
		free(sw);
		return (rv);
	}
	sw->interval_s = interval_s;
	atomic_init(&sw->runs, 0);
	pthread_mutex_init(&sw->mtx, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sw->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&sw->thread, NULL, sweeper_main, sw) != 0) {
		pthread_cond_destroy(&sw->cv);
		pthread_mutex_destroy(&sw->mtx);
		tsvc_store_close(sw->store);
		free(sw);
		return (CM_EINTERNAL);
	}
	*out = sw;
	return (CM_OK);
}

void
tsvc_sweeper_stop(tsvc_sweeper *sw)
{
	if (sw == NULL) {
		return;
	}
	pthread_mutex_lock(&sw->mtx);
	sw->stop = 1;
	pthread_cond_broadcast(&sw->cv);
	pthread_mutex_unlock(&sw->mtx);
	pthread_join(sw->thread, NULL);
	pthread_cond_destroy(&sw->cv);
	pthread_mutex_destroy(&sw->mtx);
	tsvc_store_close(sw->store);
	free(sw);
}

uint64_t
tsvc_sweeper_runs(const tsvc_sweeper *sw)
{
	return (atomic_load(&((tsvc_sweeper *) sw)->runs));
}
