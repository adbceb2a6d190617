// SPDX-License-Identifier: MIT
//
// libFuzzer target: the auth-service's request path in-process, as the
// rpc server runs it - decode the envelope (rpc.proto Request), look the
// method up in the service descriptor, decode the payload, invoke the
// handler (Authorization parsing, cache, the jwt provider verifying with
// a shared secret: no network), pack the answer. The handler must answer
// exactly once, with a message that packs, or with an error status.
//
// Input: a serialized threadgate.rpc.v1.Request, as on the wire.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth-service/service.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/xalloc.h"
#include "proto/rpc.pb-c.h"

// The shared secret the seed tokens are signed with (fuzz/README.md).
#define FUZZ_SECRET "threadgate-fuzz-secret-0123456789abcdef"

static auth_config    cfg;
static auth_provider *provider;
static auth_server   *server;
static auth_worker    worker;

typedef struct answer {
	int      called;
	uint8_t *buf;
	size_t   len;
} answer;

static void
closure(const ProtobufCMessage *out, void *closure_data)
{
	cm_rpc_call *call = closure_data;
	answer      *a    = call->priv;

	if (a->called++) {
		abort(); // answered twice
	}
	if (out == NULL) {
		if (call->status == CM_OK) {
			abort(); // no answer and no error
		}
		return;
	}
	a->len = protobuf_c_message_get_packed_size(out);
	a->buf = cm_xmalloc(a->len + 1);
	if (protobuf_c_message_pack(out, a->buf) != a->len) {
		abort();
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char *args[] = { "fuzz_auth_rpc", NULL };
	int   exit_now;

	(void) argc;
	(void) argv;
	cm_log_init("fuzz", CM_LOG_ERROR);
	setenv("AUTH_SERVICE_URL", "inproc://fuzz-auth", 1);
	setenv("AUTH_PROVIDER", "jwt", 1);
	setenv("AUTH_JWT_SECRET", FUZZ_SECRET, 1);
	setenv("AUTH_ISSUER", "https://fuzz.test/auth/v1", 1);
	setenv("AUTH_AUDIENCE", "authenticated", 1);
	setenv("AUTH_CACHE_MAX", "1000", 1);
	if (auth_config_load(1, args, &cfg, &exit_now) != CM_OK ||
	    auth_provider_new(&cfg, &provider) != CM_OK ||
	    auth_server_new_local(&cfg, provider, &server) != CM_OK) {
		fprintf(stderr, "fuzz_auth_rpc: cannot set up\n");
		abort();
	}
	return (0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ProtobufCService                *svc = auth_server_service(server);
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
		call.deadline_ms = 0;
		call.worker      = &worker;
		call.blocking_ok = 1; // the blocking thread's pass
		call.priv        = &a;
		svc->invoke(svc, (unsigned) (m - svc->descriptor->methods), in,
		    closure, &call);
		if (a.called != 1) {
			abort(); // never answered
		}
		protobuf_c_message_free_unpacked(in, NULL);
	}
	free(a.buf);
	threadgate__rpc__v1__request__free_unpacked(req, NULL);
	return (0);
}
