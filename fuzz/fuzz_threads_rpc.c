// SPDX-License-Identifier: MIT
//
// libFuzzer target: the thread-service's request path in-process, as its
// rpc server runs it on a lane thread - decode the envelope (rpc.proto
// Request), look the method up in the service descriptor, decode the
// payload, invoke the table-driven adapter (server.c), which validates
// the request and runs it on a real sqlite database (store.c,
// db_sqlite.c), and pack the answer. The handler must answer exactly once,
// with a message that packs, or with an error status.
//
// The database is a file in a private temporary directory, kept small by
// tight quotas (so a long run does not fill the disk) and removed at exit.
// Input: a serialized threadgate.rpc.v1.Request, as on the wire.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "proto/rpc.pb-c.h"
#include "thread-service/tsvc.h"

static char        dir[] = "/tmp/tg-fuzz-threads-XXXXXX";
static char        path[64];
static tsvc_db    *db;
static tsvc_store *st;

typedef struct answer {
	int called;
} answer;

static void
closure(const ProtobufCMessage *out, void *closure_data)
{
	cm_rpc_call *call = closure_data;
	answer      *a    = call->priv;
	size_t       len;
	uint8_t     *buf;

	if (a->called++) {
		abort(); // answered twice
	}
	if (out == NULL) {
		if (call->status == CM_OK) {
			abort(); // no answer and no error
		}
		return;
	}
	len = protobuf_c_message_get_packed_size(out);
	buf = cm_xmalloc(len + 1);
	if (protobuf_c_message_pack(out, buf) != len) {
		abort();
	}
	free(buf);
}

static void
cleanup(void)
{
	char p[96];

	tsvc_store_close(st);
	tsvc_db_close(db);
	unlink(path);
	snprintf(p, sizeof(p), "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", path);
	unlink(p);
	rmdir(dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	tsvc_db_options opt = tsvc_db_options_default();
	char            detail[CM_RPC_DETAIL_MAX];

	(void) argc;
	(void) argv;
	cm_log_init("fuzz", CM_LOG_ERROR);
	if (mkdtemp(dir) == NULL) {
		abort();
	}
	snprintf(path, sizeof(path), "%s/threads.db", dir);
	opt.max_threads     = 200;
	opt.max_checkpoints = 50;
	opt.max_bytes       = 16 * 1024 * 1024;
	if (tsvc_db_open(path, &opt, &db, detail, sizeof(detail)) != CM_OK ||
	    tsvc_store_open(db, &st, detail, sizeof(detail)) != CM_OK) {
		fprintf(stderr, "fuzz_threads_rpc: %s\n", detail);
		abort();
	}
	atexit(cleanup);
	return (0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ProtobufCService                *svc = tsvc_service();
	const ProtobufCMethodDescriptor *m;
	Threadgate__Rpc__V1__Request    *req;
	ProtobufCMessage                *in;
	cm_rpc_call                      call = { 0 };
	answer                           a    = { 0 };

	if (size > CM_RPC_MAX_MSG) {
		return (0);
	}
	req = threadgate__rpc__v1__request__unpack(NULL, size, data);
	if (req == NULL) {
		return (0);
	}
	m = protobuf_c_service_descriptor_get_method_by_name(
	    svc->descriptor, req->method);
	if (m == NULL) {
		threadgate__rpc__v1__request__free_unpacked(req, NULL);
		return (0);
	}
	in = protobuf_c_message_unpack(
	    m->input, NULL, req->payload.len, req->payload.data);
	if (in != NULL) {
		call.request_id  = req->request_id;
		call.deadline_ms = cm_now_ms() + 5000;
		call.worker      = st;
		call.blocking_ok = 1; // the lane thread's pass
		call.lane        = 0;
		call.priv        = &a;
		svc->invoke(svc, (unsigned) (m - svc->descriptor->methods), in,
		    closure, &call);
		if (a.called != 1) {
			abort(); // never answered
		}
		protobuf_c_message_free_unpacked(in, NULL);
	}
	threadgate__rpc__v1__request__free_unpacked(req, NULL);
	return (0);
}
