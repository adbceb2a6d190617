// SPDX-License-Identifier: MIT
//
// threads_load: the bulk loader of the storage benchmark (not a test).
//
// Builds the data set of bench/store-bench.sh with the thread-service's
// own storage code: tsvc_db_open runs the same migrations, and every row
// goes in through the backend's thread_insert(), the call CreateThread
// makes (it also fills the backend's metadata index), with metadata
// stamped with its owner as CreateThread does. The one difference is
// batching: LOAD_BATCH rows per transaction instead of one, because one
// create per transaction rewrites every touched index page each time
// (about 30 pages with sqlite), which would make a million rows take
// hours of disk writes. Works on any THREADS_DB target.
//
// Rows: n_main threads owned by `owner`, then n_other threads spread over
// n_owners other owners ("bench-other-<k>"). Thread i's metadata:
//   {"seq": i, "bucket": "b<i % buckets>", "kind": "odd"|"even"}
// where buckets = n_main / 100, so a bucket filter matches 100 of the main
// owner's threads (the "selective filter" of the benchmark) and a kind
// filter half of them. Every 1000th thread id of the main owner is
// written, one per line, to ids_file (the point-read sample).
//
// Usage: threads_load TARGET OWNER N_MAIN N_OTHER N_OWNERS IDS_FILE
//                     [WORKERS]
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "thread-service/backend.h"
#include "thread-service/tsvc.h"

// Most loader threads (each with its own connection).
#define LOAD_WORKERS_MAX 32
// Every this many threads of the main owner one id goes to IDS_FILE.
#define ID_SAMPLE_EVERY 1000
// Progress line every this many threads.
#define PROGRESS_EVERY 100000
// Rows per transaction.
#define LOAD_BATCH 1000

typedef struct load {
	tsvc_db        *db;
	const char     *owner;
	int64_t         n_main;
	int64_t         n_other;
	int64_t         n_owners;
	int64_t         buckets;
	atomic_llong    next; // next row number to create
	atomic_llong    done;
	atomic_int      failed;
	pthread_mutex_t mu;
	FILE           *ids;
} load;

// insert_one inserts row i; *id gets its id.
static cm_err
insert_one(load *l, tsvc_store *st, int64_t i, char id[CM_UUID_LEN + 1])
{
	const tsvc_backend *be = tsvc_db_backend(l->db);
	tsvc_thread         row;
	char                other[64];
	char                meta[300];
	int64_t             now = cm_now_us();

	threadgate__threads__v1__thread__init(&row);
	if (i < l->n_main) {
		row.owner = (char *) l->owner;
	} else {
		snprintf(other, sizeof(other), "bench-other-%lld",
		    (long long) ((i - l->n_main) % l->n_owners));
		row.owner = other;
	}
	cm_uuid7(id);
	snprintf(meta, sizeof(meta),
	    "{\"seq\":%lld,\"bucket\":\"b%lld\",\"kind\":\"%s\","
	    "\"owner\":\"%s\"}",
	    (long long) i, (long long) (i % l->buckets),
	    i % 2 ? "odd" : "even", row.owner);
	row.thread_id     = id;
	row.metadata_json = meta;
	row.created_at_us = now;
	row.updated_at_us = now;
	row.ttl_strategy  = "";
	return (be->thread_insert(st, &row));
}

static void *
worker(void *arg)
{
	load               *l  = arg;
	const tsvc_backend *be = tsvc_db_backend(l->db);
	tsvc_store         *st = NULL;
	char                detail[CM_RPC_DETAIL_MAX];

	if (tsvc_store_open(l->db, &st, detail, sizeof(detail)) != CM_OK) {
		fprintf(stderr, "threads_load: %s\n", detail);
		atomic_store(&l->failed, 1);
		return (NULL);
	}
	for (;;) {
		int64_t first = atomic_fetch_add(&l->next, LOAD_BATCH);
		int64_t end   = first + LOAD_BATCH;
		cm_err  rv;

		if (end > l->n_main + l->n_other) {
			end = l->n_main + l->n_other;
		}
		if (first >= end || atomic_load(&l->failed)) {
			break;
		}
		rv = be->begin(st, TSVC_TX_WRITE);
		for (int64_t i = first; i < end && rv == CM_OK; i++) {
			char id[CM_UUID_LEN + 1];

			rv = insert_one(l, st, i, id);
			if (rv == CM_OK && i < l->n_main &&
			    i % ID_SAMPLE_EVERY == 0) {
				pthread_mutex_lock(&l->mu);
				fprintf(l->ids, "%s\n", id);
				pthread_mutex_unlock(&l->mu);
			}
		}
		if (rv == CM_OK) {
			rv = be->commit(st);
		}
		if (rv != CM_OK) {
			fprintf(stderr, "threads_load: rows %lld..: %s\n",
			    (long long) first, tsvc_store_detail(st));
			be->rollback(st);
			atomic_store(&l->failed, 1);
			break;
		}
		{
			int64_t n    = end - first;
			int64_t done = atomic_fetch_add(&l->done, n) + n;

			if (done / PROGRESS_EVERY !=
			    (done - n) / PROGRESS_EVERY) {
				fprintf(stderr, "threads_load: %lld rows\n",
				    (long long) done);
			}
		}
	}
	tsvc_store_close(st);
	return (NULL);
}

int
main(int argc, char **argv)
{
	load            l;
	pthread_t       th[LOAD_WORKERS_MAX];
	int64_t         nworkers = 4;
	tsvc_db_options opt      = tsvc_db_options_default();
	int64_t         t0;
	char            detail[CM_RPC_DETAIL_MAX];

	memset(&l, 0, sizeof(l));
	if (argc < 7 || argc > 8 ||
	    cm_parse_i64(argv[3], 1, INT32_MAX, &l.n_main) != CM_OK ||
	    cm_parse_i64(argv[4], 0, INT32_MAX, &l.n_other) != CM_OK ||
	    cm_parse_i64(argv[5], 1, INT32_MAX, &l.n_owners) != CM_OK ||
	    (argc == 8 &&
	        cm_parse_i64(argv[7], 1, LOAD_WORKERS_MAX, &nworkers) !=
	            CM_OK)) {
		fprintf(stderr,
		    "usage: threads_load TARGET OWNER N_MAIN N_OTHER N_OWNERS "
		    "IDS_FILE [WORKERS]\n");
		return (2);
	}
	cm_log_init("threads_load", CM_LOG_WARN);
	l.owner   = argv[2];
	l.buckets = l.n_main / 100 > 0 ? l.n_main / 100 : 1;
	l.ids     = fopen(argv[6], "w");
	if (l.ids == NULL) {
		perror(argv[6]);
		return (1);
	}
	// No statement_timeout backstop for a bulk load: on PostgreSQL the
	// workers' transactions of one owner queue on its usage row (the
	// quota counter), each for a whole batch.
	opt.statement_timeout_ms = 0;
	if (tsvc_db_open(argv[1], &opt, &l.db, detail, sizeof(detail)) !=
	    CM_OK) {
		fprintf(stderr, "threads_load: %s\n", detail);
		return (1);
	}
	pthread_mutex_init(&l.mu, NULL);
	t0 = cm_mono_ms();
	for (int i = 0; i < nworkers; i++) {
		pthread_create(&th[i], NULL, worker, &l);
	}
	for (int i = 0; i < nworkers; i++) {
		pthread_join(th[i], NULL);
	}
	fclose(l.ids);
	tsvc_db_close(l.db);
	fprintf(stderr, "threads_load: %lld rows in %.1f s\n",
	    (long long) atomic_load(&l.done), (cm_mono_ms() - t0) / 1000.0);
	return (atomic_load(&l.failed) ? 1 : 0);
}
