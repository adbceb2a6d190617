// SPDX-License-Identifier: MIT
//
// The thread-service's rpc adapter.
//
// common/rpc.c receives each envelope, decodes the payload with the
// method's input descriptor and calls the service's invoke(). Here that
// is one function driven by a table with a row per rpc: the lane it runs
// on and the store function that does the work. On nng's callback thread
// the call is only handed to its lane; on the lane thread the store
// function runs on the worker's own store, with the call's deadline, and
// the reply (or the failure) goes back through the closure exactly once.
// All validation and the API's semantics live in store.c.
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "thread-service/tsvc.h"

// A store function with the shapes erased: in is the rpc's input message,
// *out its output (left NULL for the rpcs that answer Empty).
typedef cm_err (*op_fn)(
    tsvc_store *st, const ProtobufCMessage *in, ProtobufCMessage **out);

typedef struct op {
	const char *name; // the rpc, as in the service descriptor
	tsvc_lane   lane;
	op_fn       run;
} op;

// OP(fn, in, out) adapts tsvc_store_<fn>(st, const in *, out **).
#define OP(fn, in_t, out_t)                                               \
	static cm_err op_##fn(tsvc_store *st, const ProtobufCMessage *in, \
	    ProtobufCMessage **out)                                       \
	{                                                                 \
		return (tsvc_store_##fn(                                  \
		    st, (const in_t *) in, (out_t **) (void *) out));     \
	}
// OP_EMPTY(fn, in) adapts tsvc_store_<fn>(st, const in *), whose rpc
// answers Empty.
#define OP_EMPTY(fn, in_t)                                                \
	static cm_err op_##fn(tsvc_store *st, const ProtobufCMessage *in, \
	    ProtobufCMessage **out)                                       \
	{                                                                 \
		(void) out;                                               \
		return (tsvc_store_##fn(st, (const in_t *) in));          \
	}

OP(create_thread, tsvc_create_req, tsvc_thread)
OP(get_thread, tsvc_thread_ref, tsvc_thread)
OP(update_thread, tsvc_update_req, tsvc_thread)
OP_EMPTY(delete_thread, tsvc_thread_ref)
OP(search_threads, tsvc_search_req, tsvc_search_reply)
OP(count_threads, tsvc_count_req, tsvc_count_reply)
OP(copy_thread, tsvc_thread_ref, tsvc_thread)
OP(prune_threads, tsvc_prune_req, tsvc_prune_reply)
OP(get_state, tsvc_get_state_req, tsvc_state_reply)
OP(update_state, tsvc_update_state_req, tsvc_checkpoint)
OP_EMPTY(patch_state, tsvc_patch_state_req)
OP(get_history, tsvc_history_req, tsvc_history_reply)

// One row per rpc, in the order of the service block in threads.proto
// (checked against the descriptor by tsvc_service()).
static const op ops[] = {
	{ "CreateThread", TSVC_LANE_WRITE, op_create_thread },
	{ "GetThread", TSVC_LANE_READ, op_get_thread },
	{ "UpdateThread", TSVC_LANE_WRITE, op_update_thread },
	{ "DeleteThread", TSVC_LANE_WRITE, op_delete_thread },
	{ "SearchThreads", TSVC_LANE_SCAN, op_search_threads },
	{ "CountThreads", TSVC_LANE_SCAN, op_count_threads },
	{ "CopyThread", TSVC_LANE_WRITE, op_copy_thread },
	{ "PruneThreads", TSVC_LANE_WRITE, op_prune_threads },
	{ "GetState", TSVC_LANE_READ, op_get_state },
	{ "UpdateState", TSVC_LANE_WRITE, op_update_state },
	{ "PatchState", TSVC_LANE_WRITE, op_patch_state },
	{ "GetHistory", TSVC_LANE_SCAN, op_get_history },
};

#define NOPS (sizeof(ops) / sizeof(ops[0]))

// Storage errors by kind (threadgate_threads_db_errors_total).
enum { DBERR_UNAVAILABLE, DBERR_TIMEOUT, DBERR_INTERNAL, DBERR_N_ };
static cm_counter *db_errors[DBERR_N_];

// finish records a failure for the rpc layer and logs it: client errors
// at debug level, storage trouble at warn/error (and counted).
static void
finish(cm_rpc_call *call, tsvc_store *st, cm_err rv, const char *method)
{
	if (rv == CM_OK) {
		return;
	}
	cm_rpc_fail(call, rv, "%s", tsvc_store_detail(st));
	cm_counter_inc(rv == CM_EUNAVAIL ? db_errors[DBERR_UNAVAILABLE]
	        : rv == CM_ETIMEDOUT     ? db_errors[DBERR_TIMEOUT]
	        : rv == CM_EINTERNAL     ? db_errors[DBERR_INTERNAL]
	                                 : NULL);
	if (rv == CM_EINTERNAL) {
		cm_error(
		    call->request_id, "%s: %s", method, tsvc_store_detail(st));
	} else if (rv == CM_EUNAVAIL || rv == CM_ETIMEDOUT) {
		cm_warn(
		    call->request_id, "%s: %s", method, tsvc_store_detail(st));
	} else {
		cm_debug(call->request_id, "%s: %s: %s", method,
		    cm_strerror(rv), tsvc_store_detail(st));
	}
}

static void
invoke(ProtobufCService *svc, unsigned method, const ProtobufCMessage *in,
    ProtobufCClosure closure, void *cd)
{
	static const Threadgate__Threads__V1__Empty empty =
	    THREADGATE__THREADS__V1__EMPTY__INIT;
	cm_rpc_call      *call = cm_rpc_call_of(cd);
	const op         *o;
	tsvc_store       *st;
	ProtobufCMessage *out = NULL;
	cm_err            rv;

	(void) svc;
	CM_ASSERT(method < NOPS);
	o = &ops[method];
	if (!call->blocking_ok) {
		// On nng's callback thread: hand the call to its lane.
		rv = cm_rpc_offload(call, (int) o->lane);
		if (rv == CM_OK) {
			return;
		}
		cm_rpc_fail(call, CM_EUNAVAIL, "server stopping");
		closure(NULL, cd);
		return;
	}
	st = call->worker;
	CM_ASSERT(st != NULL);
	tsvc_store_set_deadline(st, call->deadline_ms);
	rv = o->run(st, in, &out);
	finish(call, st, rv, o->name);
	if (rv != CM_OK) {
		closure(NULL, cd);
	} else {
		closure(out != NULL ? out : &empty.base, cd);
	}
	if (out != NULL) {
		protobuf_c_message_free_unpacked(out, NULL);
	}
}

static ProtobufCService service = {
	.descriptor = &threadgate__threads__v1__thread_service__descriptor,
	.invoke     = invoke,
	.destroy    = NULL,
};

ProtobufCService *
tsvc_service(void)
{
	const ProtobufCServiceDescriptor *d = service.descriptor;

	// The table must follow threads.proto's service block exactly.
	CM_ASSERT(d->n_methods == NOPS);
	for (size_t i = 0; i < NOPS; i++) {
		CM_ASSERT(strcmp(d->methods[i].name, ops[i].name) == 0);
	}
	return (&service);
}

void *
tsvc_worker_init(void *arg, int index, cm_err *err)
{
	const tsvc_workers *w  = arg;
	tsvc_store         *st = NULL;
	char                detail[CM_RPC_DETAIL_MAX];
	cm_err              rv;

	// The contexts (nng callback threads) never touch the database;
	// only lane threads get a connection.
	if (index < w->contexts) {
		return (NULL);
	}
	rv = tsvc_store_open(w->db, &st, detail, sizeof(detail));
	if (rv != CM_OK) {
		cm_error(
		    NULL, "worker %d: cannot open storage: %s", index, detail);
		*err = rv;
		return (NULL);
	}
	return (st);
}

void
tsvc_worker_fini(void *arg, void *worker)
{
	(void) arg;
	tsvc_store_close(worker);
}

int
tsvc_health(void *arg, char *detail, size_t n)
{
	tsvc_workers *w = arg;
	char          why[CM_RPC_DETAIL_MAX];

	if (w->health == NULL &&
	    tsvc_store_open(w->db, &w->health, why, sizeof(why)) != CM_OK) {
		cm_debug(NULL, "health: %s", why);
		snprintf(detail, n, "database unreachable");
		return (0);
	}
	tsvc_store_set_deadline(w->health, cm_now_ms() + TSVC_HEALTH_PING_MS);
	if (tsvc_store_ping(w->health) != CM_OK) {
		cm_debug(NULL, "health: %s", tsvc_store_detail(w->health));
		snprintf(detail, n, "database unreachable");
		return (0);
	}
	return (1);
}

void
tsvc_health_fini(tsvc_workers *w)
{
	tsvc_store_close(w->health);
	w->health = NULL;
}

static const char *const lane_names[TSVC_NLANES] = { "read", "scan", "write" };

// Lane figures at scrape time: each busy lane thread holds its database
// connection in use; queued calls wait for one.
static void
lanes_collect(void *arg, cm_mwriter *w)
{
	cm_rpc_server *srv = arg;
	int            busy[TSVC_NLANES];
	int            queued[TSVC_NLANES];

	for (int i = 0; i < TSVC_NLANES; i++) {
		busy[i]   = 0;
		queued[i] = 0;
		cm_rpc_server_lane_stats(srv, i, &busy[i], &queued[i]);
	}
	cm_mwriter_family(w, "threadgate_threads_pool_in_use", "gauge",
	    "Database connections in use (busy lane workers), by lane.");
	for (int i = 0; i < TSVC_NLANES; i++) {
		cm_mwriter_sample(w, "threadgate_threads_pool_in_use", "lane",
		    lane_names[i], busy[i]);
	}
	cm_mwriter_family(w, "threadgate_threads_pool_waiting", "gauge",
	    "Calls waiting for a lane worker (and its connection), by lane.");
	for (int i = 0; i < TSVC_NLANES; i++) {
		cm_mwriter_sample(w, "threadgate_threads_pool_waiting", "lane",
		    lane_names[i], queued[i]);
	}
}

void
tsvc_metrics_init(cm_rpc_server *srv)
{
	static const char *const    labels[] = { "kind", NULL };
	static const cm_metric_desc d        = {
		       .name   = "threadgate_threads_db_errors_total",
		       .help   = "Storage errors by kind: unavailable (unreachable, "
		                        "busy), timeout (deadline passed), internal.",
		       .type   = CM_METRIC_COUNTER,
		       .labels = labels,
	};
	static const char *const kinds[DBERR_N_] = { "unavailable", "timeout",
		"internal" };
	cm_mfamily *f = cm_metrics_family(cm_metrics_default(), &d);

	for (int i = 0; i < DBERR_N_; i++) {
		const char *v[] = { kinds[i] };

		db_errors[i] = cm_counter_get(f, v);
	}
	cm_metrics_add_collector(cm_metrics_default(), lanes_collect, srv);
}

void
tsvc_metrics_fini(cm_rpc_server *srv)
{
	cm_metrics_remove_collector(cm_metrics_default(), lanes_collect, srv);
}
