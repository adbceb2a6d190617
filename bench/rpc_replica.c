// SPDX-License-Identifier: MIT
//
// rpc_replica: how a replica set behaves when one replica stops (not a
// test; bench/replica-bench.sh runs it against two real thread-service
// replicas on one database).
//
// CONNS worker threads each loop GetThread on one thread, one call at a
// time with a DEADLINE_MS deadline, for SECS seconds with both replicas
// up, then SECS seconds with replica 2 stopped (SIGSTOP to PID2; SIGCONT
// at the end). Two clients:
//   nng  one REQ socket dialling both URLs: nng spreads requests itself,
//        round-robin over the connections that finished their last send
//        (what the gateway would get from a second nng_dial);
//   set  cm_rpc_client over "URL1,URL2": one socket per replica, our own
//        choice, stall detection, re-send of reads within the deadline.
// Prints per phase: calls/s, failed calls, the longest call.
//
// Usage: rpc_replica nng|set URL1 URL2 PID2 CONNS SECS
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "proto/rpc.pb-c.h"
#include "proto/threads.pb-c.h"

// The deadline of every call (the gateway's default threads deadline).
#define DEADLINE_MS 5000
// Most worker threads.
#define CONNS_MAX 256

typedef struct bench {
	int            set; // 1: cm_rpc_client, 0: one nng REQ socket
	cm_rpc_client *client;
	nng_socket     sock;
	char           thread_id[CM_UUID_LEN + 1];
	atomic_int     phase; // 0 normal, 1 stopped, 2 done
	atomic_llong   calls[2];
	atomic_llong   failed[2];
	atomic_llong   max_ms[2];
} bench;

static void
note(bench *b, int phase, int ok, int64_t ms)
{
	long long cur = atomic_load(&b->max_ms[phase]);

	atomic_fetch_add(ok ? &b->calls[phase] : &b->failed[phase], 1);
	while (ms > cur &&
	    !atomic_compare_exchange_weak(&b->max_ms[phase], &cur, ms)) {
	}
}

// One GetThread over the shared nng socket on ctx; 1 when it succeeded.
static int
call_nng(bench *b, nng_ctx ctx, nng_aio *aio)
{
	Threadgate__Threads__V1__ThreadRef ref =
	    THREADGATE__THREADS__V1__THREAD_REF__INIT;
	Threadgate__Rpc__V1__Request req = THREADGATE__RPC__V1__REQUEST__INIT;
	Threadgate__Rpc__V1__Response *resp;
	uint8_t                        payload[128];
	nng_msg                       *m;
	int64_t                        end = cm_mono_ms() + DEADLINE_MS;
	int                            ok;

	ref.owner            = "bench";
	ref.thread_id        = b->thread_id;
	req.method           = "GetThread";
	req.request_id       = "bench";
	req.deadline_unix_ms = cm_now_ms() + DEADLINE_MS;
	req.payload.data     = payload;
	req.payload.len =
	    threadgate__threads__v1__thread_ref__pack(&ref, payload);
	if (nng_msg_alloc(&m,
	        threadgate__rpc__v1__request__get_packed_size(&req)) != 0) {
		return (0);
	}
	threadgate__rpc__v1__request__pack(&req, nng_msg_body(m));
	nng_aio_set_msg(aio, m);
	nng_aio_set_timeout(aio, DEADLINE_MS);
	nng_ctx_send(ctx, aio);
	nng_aio_wait(aio);
	if (nng_aio_result(aio) != 0) {
		nng_msg_free(nng_aio_get_msg(aio));
		return (0);
	}
	nng_aio_set_timeout(aio, (nng_duration) (end - cm_mono_ms()));
	nng_ctx_recv(ctx, aio);
	nng_aio_wait(aio);
	if (nng_aio_result(aio) != 0) {
		return (0);
	}
	m    = nng_aio_get_msg(aio);
	resp = threadgate__rpc__v1__response__unpack(
	    NULL, nng_msg_len(m), nng_msg_body(m));
	nng_msg_free(m);
	ok = resp != NULL && resp->status == 0;
	threadgate__rpc__v1__response__free_unpacked(resp, NULL);
	return (ok);
}

// One GetThread through the replica-set client (a read: idempotent).
typedef struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	int             done;
	cm_err          st;
} waiter;

static void
on_done(void *arg, cm_err st, const char *detail, ProtobufCMessage *reply)
{
	waiter *w = arg;

	(void) detail;
	protobuf_c_message_free_unpacked(reply, NULL);
	pthread_mutex_lock(&w->mu);
	w->st   = st;
	w->done = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static int
call_set(bench *b, waiter *w)
{
	Threadgate__Threads__V1__ThreadRef ref =
	    THREADGATE__THREADS__V1__THREAD_REF__INIT;
	cm_rpc_call_opts o = { .request_id = "bench",
		.timeout_ms                = DEADLINE_MS,
		.idempotent                = 1 };

	ref.owner     = "bench";
	ref.thread_id = b->thread_id;
	w->done       = 0;
	if (cm_rpc_call_start(b->client, "GetThread", &o, &ref.base,
	        &threadgate__threads__v1__thread__descriptor, on_done,
	        w) != CM_OK) {
		return (0);
	}
	pthread_mutex_lock(&w->mu);
	while (!w->done) {
		pthread_cond_wait(&w->cv, &w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return (w->st == CM_OK);
}

static void *
worker(void *arg)
{
	bench   *b   = arg;
	nng_ctx  ctx = NNG_CTX_INITIALIZER;
	nng_aio *aio = NULL;
	waiter   w;

	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	if (!b->set &&
	    (nng_ctx_open(&ctx, b->sock) != 0 ||
	        nng_aio_alloc(&aio, NULL, NULL) != 0)) {
		return (NULL);
	}
	for (;;) {
		int     phase = atomic_load(&b->phase);
		int64_t t0    = cm_mono_ms();
		int     ok;

		if (phase >= 2) {
			break;
		}
		ok = b->set ? call_set(b, &w) : call_nng(b, ctx, aio);
		// A call counts in the phase it started in.
		note(b, phase, ok, cm_mono_ms() - t0);
	}
	if (aio != NULL) {
		nng_aio_free(aio);
	}
	return (NULL);
}

int
main(int argc, char **argv)
{
	static bench                                 b;
	pthread_t                                    th[CONNS_MAX];
	int64_t                                      conns;
	int64_t                                      secs;
	int64_t                                      pid;
	char                                         urls[1024];
	cm_rpc_client                               *setup = NULL;
	Threadgate__Threads__V1__CreateThreadRequest creq =
	    THREADGATE__THREADS__V1__CREATE_THREAD_REQUEST__INIT;
	ProtobufCMessage *reply = NULL;

	if (argc != 7 ||
	    (strcmp(argv[1], "nng") != 0 && strcmp(argv[1], "set") != 0) ||
	    cm_parse_i64(argv[4], 1, INT32_MAX, &pid) != CM_OK ||
	    cm_parse_i64(argv[5], 1, CONNS_MAX, &conns) != CM_OK ||
	    cm_parse_i64(argv[6], 1, 600, &secs) != CM_OK) {
		fprintf(stderr,
		    "usage: rpc_replica nng|set URL1 URL2 PID2 CONNS SECS\n");
		return (2);
	}
	cm_log_init("rpc_replica", CM_LOG_ERROR);
	b.set = strcmp(argv[1], "set") == 0;
	snprintf(urls, sizeof(urls), "%s,%s", argv[2], argv[3]);

	// The thread every call reads.
	if (cm_rpc_client_open(argv[2], &setup) != CM_OK) {
		return (1);
	}
	creq.owner = "bench";
	if (cm_rpc_call_sync(setup, "CreateThread", "bench", 5000, &creq.base,
	        &threadgate__threads__v1__thread__descriptor, &reply, NULL,
	        0) != CM_OK) {
		fprintf(stderr, "rpc_replica: CreateThread failed\n");
		return (1);
	}
	snprintf(b.thread_id, sizeof(b.thread_id), "%s",
	    ((Threadgate__Threads__V1__Thread *) reply)->thread_id);
	protobuf_c_message_free_unpacked(reply, NULL);
	cm_rpc_client_close(setup);

	if (b.set) {
		if (cm_rpc_client_open(urls, &b.client) != CM_OK) {
			return (1);
		}
	} else {
		if (nng_req0_open(&b.sock) != 0) {
			return (1);
		}
		nng_socket_set_ms(
		    b.sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
		nng_socket_set_ms(b.sock, NNG_OPT_RECONNMINT, 100);
		nng_socket_set_ms(b.sock, NNG_OPT_RECONNMAXT, 2000);
		if (nng_dial(b.sock, argv[2], NULL, 0) != 0 ||
		    nng_dial(b.sock, argv[3], NULL, 0) != 0) {
			fprintf(stderr, "rpc_replica: cannot dial\n");
			return (1);
		}
	}
	// Both connected before the clock starts.
	nng_msleep(300);
	for (int i = 0; i < conns; i++) {
		pthread_create(&th[i], NULL, worker, &b);
	}
	nng_msleep((nng_duration) (secs * 1000));
	kill((pid_t) pid, SIGSTOP);
	atomic_store(&b.phase, 1);
	nng_msleep((nng_duration) (secs * 1000));
	atomic_store(&b.phase, 2);
	kill((pid_t) pid, SIGCONT);
	for (int i = 0; i < conns; i++) {
		pthread_join(th[i], NULL);
	}
	for (int p = 0; p < 2; p++) {
		printf("%-3s %-8s calls/s %8.0f  failed %5lld  longest %5lld "
		       "ms\n",
		    argv[1], p == 0 ? "normal" : "stopped",
		    (double) atomic_load(&b.calls[p]) / (double) secs,
		    atomic_load(&b.failed[p]), atomic_load(&b.max_ms[p]));
	}
	printf("%-3s ratio stopped/normal %.2f\n", argv[1],
	    (double) atomic_load(&b.calls[1]) /
	        (double) (atomic_load(&b.calls[0]) > 0
	                ? atomic_load(&b.calls[0])
	                : 1));
	if (b.set) {
		cm_rpc_client_close(b.client);
	} else {
		nng_close(b.sock);
	}
	return (0);
}
