// SPDX-License-Identifier: MIT
//
// The thread-service's rpc handlers.
//
// common/rpc.c receives each envelope, decodes the payload with the
// method's input descriptor and calls protobuf-c's generated invoke(),
// which lands in one of the handlers below (their names are fixed by
// THREADGATE__THREADS__V1__THREAD_SERVICE__INIT(tsvc_)). Each handler is a
// thin adapter: it takes its worker's tsvc_store from the call, runs the
// store function of the same name, and answers through the closure
// exactly once, with the reply message or with NULL after cm_rpc_fail().
// Writes first hand themselves to a blocking thread (see offloaded()).
// All validation and all SQL live in store.c.
#include <stdlib.h>

#include "common/log.h"
#include "thread-service/tsvc.h"

typedef Threadgate__Threads__V1__ThreadService_Service svc_t;

static tsvc_store *
store_of(cm_rpc_call *call)
{
	CM_ASSERT(call->worker != NULL);
	return ((tsvc_store *) call->worker);
}

// finish records a failure for the rpc layer and logs it: client errors
// at debug level, storage trouble at warn/error.
static void
finish(cm_rpc_call *call, tsvc_store *st, cm_err rv, const char *method)
{
	if (rv == CM_OK) {
		return;
	}
	cm_rpc_fail(call, rv, "%s", tsvc_store_detail(st));
	if (rv == CM_EINTERNAL) {
		cm_error(
		    call->request_id, "%s: %s", method, tsvc_store_detail(st));
	} else if (rv == CM_EUNAVAIL) {
		cm_warn(
		    call->request_id, "%s: %s", method, tsvc_store_detail(st));
	} else {
		cm_debug(call->request_id, "%s: %s: %s", method,
		    cm_strerror(rv), tsvc_store_detail(st));
	}
}

// Writes take sqlite's write lock and may wait for it (busy timeout) or
// for a WAL checkpoint's fsync, so they run on the rpc layer's blocking
// threads; reads are short and run inline on nng's callback threads.
// Returns 1 when the call was handed to a blocking thread: the handler
// must return at once.
static int
offloaded(cm_rpc_call *call)
{
	return (!call->blocking_ok && cm_rpc_offload(call) == CM_OK);
}

static void
reply_free(void *m)
{
	if (m != NULL) {
		protobuf_c_message_free_unpacked((ProtobufCMessage *) m, NULL);
	}
}

static void
tsvc_create_thread(svc_t *svc, const tsvc_create_req *in,
    Threadgate__Threads__V1__Thread_Closure closure, void *cd)
{
	cm_rpc_call *call = cm_rpc_call_of(cd);
	tsvc_store  *st   = store_of(call);
	tsvc_thread *out  = NULL;
	cm_err       rv;

	(void) svc;
	if (offloaded(call)) {
		return;
	}
	rv = tsvc_store_create_thread(st, in, &out);
	finish(call, st, rv, "CreateThread");
	closure(out, cd);
	reply_free(out);
}

static void
tsvc_get_thread(svc_t *svc, const tsvc_thread_ref *in,
    Threadgate__Threads__V1__Thread_Closure closure, void *cd)
{
	cm_rpc_call *call = cm_rpc_call_of(cd);
	tsvc_store  *st   = store_of(call);
	tsvc_thread *out  = NULL;
	cm_err       rv;

	(void) svc;
	rv = tsvc_store_get_thread(st, in, &out);
	finish(call, st, rv, "GetThread");
	closure(out, cd);
	reply_free(out);
}

static void
tsvc_update_thread(svc_t *svc, const tsvc_update_req *in,
    Threadgate__Threads__V1__Thread_Closure closure, void *cd)
{
	cm_rpc_call *call = cm_rpc_call_of(cd);
	tsvc_store  *st   = store_of(call);
	tsvc_thread *out  = NULL;
	cm_err       rv;

	(void) svc;
	if (offloaded(call)) {
		return;
	}
	rv = tsvc_store_update_thread(st, in, &out);
	finish(call, st, rv, "UpdateThread");
	closure(out, cd);
	reply_free(out);
}

static void
tsvc_delete_thread(svc_t *svc, const tsvc_thread_ref *in,
    Threadgate__Threads__V1__Empty_Closure closure, void *cd)
{
	cm_rpc_call                   *call = cm_rpc_call_of(cd);
	tsvc_store                    *st   = store_of(call);
	Threadgate__Threads__V1__Empty empty =
	    THREADGATE__THREADS__V1__EMPTY__INIT;
	cm_err rv;

	(void) svc;
	if (offloaded(call)) {
		return;
	}
	rv = tsvc_store_delete_thread(st, in);
	finish(call, st, rv, "DeleteThread");
	closure(rv == CM_OK ? &empty : NULL, cd);
}

static void
tsvc_search_threads(svc_t *svc, const tsvc_search_req *in,
    Threadgate__Threads__V1__SearchThreadsReply_Closure closure, void *cd)
{
	cm_rpc_call       *call = cm_rpc_call_of(cd);
	tsvc_store        *st   = store_of(call);
	tsvc_search_reply *out  = NULL;
	cm_err             rv;

	(void) svc;
	rv = tsvc_store_search_threads(st, in, &out);
	finish(call, st, rv, "SearchThreads");
	closure(out, cd);
	reply_free(out);
}

static void
tsvc_count_threads(svc_t *svc, const tsvc_count_req *in,
    Threadgate__Threads__V1__CountReply_Closure closure, void *cd)
{
	cm_rpc_call      *call = cm_rpc_call_of(cd);
	tsvc_store       *st   = store_of(call);
	tsvc_count_reply *out  = NULL;
	cm_err            rv;

	(void) svc;
	rv = tsvc_store_count_threads(st, in, &out);
	finish(call, st, rv, "CountThreads");
	closure(out, cd);
	reply_free(out);
}

static void
tsvc_copy_thread(svc_t *svc, const tsvc_thread_ref *in,
    Threadgate__Threads__V1__Thread_Closure closure, void *cd)
{
	cm_rpc_call *call = cm_rpc_call_of(cd);
	tsvc_store  *st   = store_of(call);
	tsvc_thread *out  = NULL;
	cm_err       rv;

	(void) svc;
	if (offloaded(call)) {
		return;
	}
	rv = tsvc_store_copy_thread(st, in, &out);
	finish(call, st, rv, "CopyThread");
	closure(out, cd);
	reply_free(out);
}

static void
tsvc_prune_threads(svc_t *svc, const tsvc_prune_req *in,
    Threadgate__Threads__V1__PruneThreadsReply_Closure closure, void *cd)
{
	cm_rpc_call      *call = cm_rpc_call_of(cd);
	tsvc_store       *st   = store_of(call);
	tsvc_prune_reply *out  = NULL;
	cm_err            rv;

	(void) svc;
	if (offloaded(call)) {
		return;
	}
	rv = tsvc_store_prune_threads(st, in, &out);
	finish(call, st, rv, "PruneThreads");
	closure(out, cd);
	reply_free(out);
}

static void
tsvc_get_state(svc_t *svc, const tsvc_get_state_req *in,
    Threadgate__Threads__V1__StateReply_Closure closure, void *cd)
{
	cm_rpc_call      *call = cm_rpc_call_of(cd);
	tsvc_store       *st   = store_of(call);
	tsvc_state_reply *out  = NULL;
	cm_err            rv;

	(void) svc;
	rv = tsvc_store_get_state(st, in, &out);
	finish(call, st, rv, "GetState");
	closure(out, cd);
	reply_free(out);
}

static void
tsvc_update_state(svc_t *svc, const tsvc_update_state_req *in,
    Threadgate__Threads__V1__Checkpoint_Closure closure, void *cd)
{
	cm_rpc_call     *call = cm_rpc_call_of(cd);
	tsvc_store      *st   = store_of(call);
	tsvc_checkpoint *out  = NULL;
	cm_err           rv;

	(void) svc;
	if (offloaded(call)) {
		return;
	}
	rv = tsvc_store_update_state(st, in, &out);
	finish(call, st, rv, "UpdateState");
	closure(out, cd);
	reply_free(out);
}

static void
tsvc_patch_state(svc_t *svc, const tsvc_patch_state_req *in,
    Threadgate__Threads__V1__Empty_Closure closure, void *cd)
{
	cm_rpc_call                   *call = cm_rpc_call_of(cd);
	tsvc_store                    *st   = store_of(call);
	Threadgate__Threads__V1__Empty empty =
	    THREADGATE__THREADS__V1__EMPTY__INIT;
	cm_err rv;

	(void) svc;
	if (offloaded(call)) {
		return;
	}
	rv = tsvc_store_patch_state(st, in);
	finish(call, st, rv, "PatchState");
	closure(rv == CM_OK ? &empty : NULL, cd);
}

static void
tsvc_get_history(svc_t *svc, const tsvc_history_req *in,
    Threadgate__Threads__V1__HistoryReply_Closure closure, void *cd)
{
	cm_rpc_call        *call = cm_rpc_call_of(cd);
	tsvc_store         *st   = store_of(call);
	tsvc_history_reply *out  = NULL;
	cm_err              rv;

	(void) svc;
	rv = tsvc_store_get_history(st, in, &out);
	finish(call, st, rv, "GetHistory");
	closure(out, cd);
	reply_free(out);
}

// The service object handed to cm_rpc_server_start. Handlers keep no
// state of their own (everything is in the call's worker), so one static
// object serves every worker.
static svc_t service = THREADGATE__THREADS__V1__THREAD_SERVICE__INIT(tsvc_);

ProtobufCService *
tsvc_service(void)
{
	return (&service.base);
}

void *
tsvc_worker_init(void *arg, int index, cm_err *err)
{
	const char *path = arg;
	tsvc_store *st   = NULL;
	char        detail[CM_RPC_DETAIL_MAX];
	cm_err      rv;

	rv = tsvc_store_open(path, &st, detail, sizeof(detail));
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
