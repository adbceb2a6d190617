// SPDX-License-Identifier: MIT
//
// RPC over nng REQ/REP carrying threadgate.rpc.v1.Request/Response
// envelopes (proto/rpc.proto), dispatched through protobuf-c's generated
// service descriptors.
//
// Server: one REP socket and N nng contexts. When a context's receive
// completes, its aio callback (on one of nng's task threads) looks the
// method up by name in the service descriptor, unpacks the payload with
// the method's input descriptor and calls the generated service's
// invoke(), which calls the handler - inline, with no thread handoff, so a
// fast handler (a cache hit) costs one nng round trip and nothing more.
// The handler answers by calling its closure exactly once before
// returning (with its output message, or with NULL after cm_rpc_fail()).
// A handler that may block (network, disk, a database) must not run on
// nng's few callback threads: it calls cm_rpc_offload() with a lane and
// returns without answering; the same handler is then invoked again on one
// of that lane's threads with call->blocking_ok set. Lanes are separate
// bounded thread pools with bounded queues, so slow work of one kind (a
// long scan) never waits in front of another kind (a point read).
// Malformed envelopes, unknown methods, undecodable payloads and expired
// deadlines are answered with an error Response by this module; handlers
// never see them.
//
// Client (rpc_client.c): a replica set. The URL list names one or more
// servers of the same service (comma-separated nng URLs; a tcp:// host
// name stands for every address it resolves to, re-resolved every few
// seconds). The client keeps one REQ socket per replica, dialled
// non-blocking (start order does not matter), chooses the replica of each
// call itself (least loaded, or by affinity key), notices replicas that
// stop answering, and re-sends a call to another replica when that is
// safe (see cm_rpc_call_opts). Every call carries one deadline; the async
// call runs entirely in nng callbacks and never blocks a thread.
//
// Observability, the same for every service without touching its
// service descriptor:
//  - Health: the server answers method "Health" itself (HealthRequest /
//    HealthReply in rpc.proto) from the last result of the config's health
//    callback, which runs on the server's own thread; cm_rpc_health() and
//    cm_rpc_health_check_main() are the client side (--health-check).
//  - Metrics, in cfg.metrics (default: cm_metrics_default()):
//      threadgate_rpc_server_requests_total{service,method,status}
//      threadgate_rpc_server_request_duration_seconds{service,method}
//      threadgate_rpc_server_rejected_total{service,reason}
//      threadgate_rpc_server_in_flight{service}
//      threadgate_rpc_server_serving{service}
//    service is the descriptor's short name ("ThreadService"), method a
//    name from the descriptor, "Health" or "unknown", status a
//    cm_err_label(), reason malformed | unknown_method | deadline.
//  - Logs: while a handler runs, its thread's log context holds the
//    request id and the envelope's traceparent (cm_log_ctx_set()), so every
//    line it logs carries them; each request ends with a debug line
//    "rpc <method> <status> <duration>".
#ifndef CM_RPC_H
#define CM_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common/err.h"
#include "common/metrics.h"
#include "common/util.h"

// Largest nng message accepted on any socket (NNG_OPT_RECVMAXSZ). Request
// bodies are capped at 1 MiB by the gateway; state and search replies can
// hold up to 1000 threads, so replies get more room.
#define CM_RPC_MAX_MSG (16u * 1024u * 1024u)
// Longest detail text carried in a Response, in bytes (with the NUL).
#define CM_RPC_DETAIL_MAX 256
// Longest method name accepted, in bytes.
#define CM_RPC_METHOD_MAX 64
// Most worker threads a server may run (contexts, and threads per lane).
#define CM_RPC_MAX_WORKERS 256
// Most lanes (blocking thread pools) a server may have.
#define CM_RPC_MAX_LANES 4
// The method name of the Health rpc every server answers itself.
#define CM_RPC_HEALTH_METHOD "Health"
// The method name of a batch of calls in one message (BatchRequest in
// rpc.proto), which every server takes apart itself.
#define CM_RPC_BATCH_METHOD "Batch"
// Most calls one Batch carries: enough to make a message's cost small
// next to its calls', few enough that one slow call holds back little.
#define CM_RPC_BATCH_MAX 32
// Largest batch window of a client (cm_rpc_client_opts.batch_window).
#define CM_RPC_BATCH_WINDOW_MAX 64
// Default time between two runs of a server's health callback, ms: a
// failing dependency is noticed within a second, and a check costs at
// most one ping a second.
#define CM_RPC_HEALTH_INTERVAL_MS 1000
// Default deadline of a --health-check call, ms: well under the usual
// 5 s probe timeout, and 1 s more than the client's wait for a connection.
#define CM_RPC_HEALTH_TIMEOUT_MS 2000

// ---------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------

typedef struct cm_rpc_server cm_rpc_server;

/**
 * cm_rpc_call is the per-request context. The generic server passes it to
 * handlers as the protobuf-c closure_data. Handlers may read every field;
 * they must not keep the pointer after calling the closure.
 */
typedef struct cm_rpc_call {
	const char *request_id;  // borrowed; "" when the client sent none
	const char *traceparent; // borrowed; validated W3C value or ""
	int64_t     deadline_ms; // Unix ms; 0 = none
	void       *worker;      // the worker state from worker_init of the
	                         // context (inline) or lane thread
	int worker_index;
	// 0 when the handler runs inline on an nng callback thread (it must
	// not block: answer, or cm_rpc_offload()); 1 on a lane thread.
	int blocking_ok;
	int lane; // the lane running the handler; -1 inline
	// Set by cm_rpc_fail(); read by the server after the closure ran.
	cm_err status;
	char   detail[CM_RPC_DETAIL_MAX];
	// Private to rpc.c.
	void *priv;
} cm_rpc_call;

typedef struct cm_rpc_server_config {
	// Listen URL, e.g. "ipc:///run/threadgate/auth.sock" or
	// "tcp://127.0.0.1:7001". Required.
	const char *url;
	// The generated service, initialised with the handlers (e.g.
	// THREADGATE__AUTH__V1__AUTH_SERVICE__INIT(auth_)). Required.
	ProtobufCService *service;
	// Contexts (requests received and not yet answered, inline or
	// queued or running on a lane), 1..CM_RPC_MAX_WORKERS. Requests
	// beyond them wait in nng's socket queue, so keep it above the
	// lanes' threads plus queues.
	int nworkers;
	// Lanes for cm_rpc_offload(), 0..CM_RPC_MAX_LANES (0: handlers never
	// block; cm_rpc_offload() then fails). Lane i has lane_threads[i]
	// threads (1..CM_RPC_MAX_WORKERS) and holds at most lane_queue[i]
	// calls waiting for one (0 = up to nworkers); a call offloaded to a
	// full lane is answered CM_EUNAVAIL at once.
	int nlanes;
	int lane_threads[CM_RPC_MAX_LANES];
	int lane_queue[CM_RPC_MAX_LANES];
	// Scheduling priority of each lane's threads, as a nice increment
	// (0..19; 0 = the process's own). A lane of long, CPU-bound work
	// (scans) given a higher nice yields the CPU to the short calls of
	// other lanes when both run: a point read is not slowed by scans.
	int lane_nice[CM_RPC_MAX_LANES];
	// Optional: called at start, on the starting thread, once per context
	// (index 0..nworkers-1) and once per lane thread (index nworkers..,
	// lane 0's threads first); returns that worker's state (NULL allowed)
	// or sets *err to a non-OK value to abort start-up. The state is used
	// by one thread at a time, not always the same thread for contexts,
	// always its own thread for lane threads. arg is cfg.arg.
	void *(*worker_init)(void *arg, int index, cm_err *err);
	// Optional: called with each worker state when the server stops.
	void (*worker_fini)(void *arg, void *worker);
	// Optional: called on the worker's thread each time the server
	// itself refuses a request before any handler runs (undecodable
	// envelope or payload: CM_EINVAL; unknown method: CM_ENOTSUP;
	// deadline already passed: CM_ETIMEDOUT), e.g. to count them. Must
	// not block.
	void (*on_reject)(void *arg, cm_err err);
	void *arg;
	// Optional: the service's health check, the answer to the Health rpc.
	// Returns 1 when the service can serve, else 0 with the reason in
	// detail (n bytes; client-safe text). Runs on the server's own health
	// thread - once at start, then every health_interval_ms - never on
	// the request path, so it may block briefly (a database ping), but
	// should return within a second. Without it the server answers
	// SERVING whenever it runs. arg is cfg.arg.
	int (*health)(void *arg, char *detail, size_t n);
	// Milliseconds between health checks; 0 = CM_RPC_HEALTH_INTERVAL_MS.
	int health_interval_ms;
	// Optional: where the rpc metrics go; NULL = cm_metrics_default().
	cm_metrics *metrics;
} cm_rpc_server_config;

/**
 * cm_rpc_server_start() opens the REP socket, listens on cfg->url (with
 * NNG_OPT_RECVMAXSZ = CM_RPC_MAX_MSG), runs every worker_init and starts
 * the workers and the health thread. When METRICS_ADDR is set and the
 * process has not started its metrics listener yet, it starts it
 * (cm_metrics_serve_env() with the cm_log_init() service name; stopped
 * with the server), so a service has /metrics without code of its own.
 * Returns CM_OK and the server in *out, CM_EINVAL for a bad config or
 * METRICS_ADDR, CM_EUNAVAIL when the URL (or METRICS_ADDR) cannot be
 * listened on (in use, bad path), or the error a worker_init reported. *out is
 * written only on success. For an ipc:// URL a stale socket file is replaced.
 */
cm_err cm_rpc_server_start(
    const cm_rpc_server_config *cfg, cm_rpc_server **out);

/**
 * cm_rpc_server_stop() stops receiving, lets the lane threads finish
 * their current call, closes the socket, runs worker_fini and frees the
 * server. Queued offloaded calls are dropped (their clients' deadlines
 * fire). NULL is allowed. Call from the thread that started it (not from
 * a handler).
 */
void cm_rpc_server_stop(cm_rpc_server *srv);

/**
 * cm_rpc_server_set_serving() overrides the health result until the next
 * check (serving 0: NOT_SERVING with detail, e.g. "shutting down"); a
 * stopping server answers NOT_SERVING by itself. Thread-safe.
 */
void cm_rpc_server_set_serving(
    cm_rpc_server *srv, int serving, const char *detail);

/**
 * cm_rpc_offload() asks for the call's handler to be invoked again on a
 * thread of lane (0..nlanes-1), with call->blocking_ok = 1, call->lane =
 * lane and that thread's worker state. Call it from an inline handler
 * (blocking_ok == 0), then return without calling the closure. Returns
 * CM_OK; CM_EINVAL for a lane the server does not have or a call already
 * on a lane; CM_EUNAVAIL when the server is stopping - the handler must
 * then answer itself. A call offloaded to a lane whose queue is full is
 * answered CM_EUNAVAIL ("overloaded") by the server, and one that waits
 * in the queue past its deadline CM_ETIMEDOUT, without running.
 */
cm_err cm_rpc_offload(cm_rpc_call *call, int lane);

/**
 * cm_rpc_server_lane_stats() reports lane's threads busy right now and
 * calls queued for it (either may be NULL). Thread-safe.
 */
void cm_rpc_server_lane_stats(
    cm_rpc_server *srv, int lane, int *busy, int *queued);

/**
 * cm_rpc_fail() records an error for the call: the handler then calls its
 * closure with NULL. fmt may be NULL (the detail is then cm_strerror(err)).
 * The detail is sent to the client: never put secrets or other owners'
 * data in it.
 */
void cm_rpc_fail(cm_rpc_call *call, cm_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * cm_rpc_call_of() returns the cm_rpc_call behind a handler's
 * closure_data argument.
 */
static inline cm_rpc_call *
cm_rpc_call_of(void *closure_data)
{
	return ((cm_rpc_call *) closure_data);
}

// ---------------------------------------------------------------------
// Client (rpc_client.c)
// ---------------------------------------------------------------------

// Longest URL of one list entry or replica, in bytes (with the NUL).
#define CM_RPC_URL_MAX 256
// Longest URL list accepted, in bytes (with the NUL): 16 entries of
// ordinary length.
#define CM_RPC_URLS_MAX 4096
// Most entries in one URL list: a replica set is named by a few URLs or
// one DNS name; more is a configuration mistake.
#define CM_RPC_MAX_ENTRIES 16
// Most replicas one client keeps (list entries plus every address their
// names resolve to). Each costs a socket and a connection; a DNS answer
// beyond this is cut (and logged).
#define CM_RPC_MAX_REPLICAS 64
// Longest numeric address text a resolver hands back (INET6_ADDRSTRLEN).
#define CM_RPC_ADDR_MAX 46
// Default stall time, ms. The client probes every replica with a Health
// call every CM_RPC_HEALTH_INTERVAL_MS, and at once when one with calls
// outstanding has answered nothing for this long. A probe not answered
// within this long marks the replica stalled (stopped, hung, partitioned):
// it gets no new calls while another replica is healthy, and its
// re-sendable calls go to another replica. A replica answering NOT_SERVING
// is avoided the same way. Well above a healthy replica's p99 (a few ms),
// well under the gateway's deadlines (3 s auth, 5 s threads).
#define CM_RPC_STALL_MS 250
// Default time between DNS re-resolutions of host names, ms: a pod added
// to or removed from a Kubernetes headless Service is dialled or dropped
// within this.
#define CM_RPC_RESOLVE_MS 5000

typedef struct cm_rpc_client cm_rpc_client;

/**
 * cm_rpc_resolve_fn resolves host for the client (a test seam; the default
 * is getaddrinfo()). family is AF_UNSPEC, AF_INET or AF_INET6. It writes
 * up to max numeric addresses ("10.0.0.5", "fd00::5") into out and returns
 * how many (0 is a valid answer: no address now), or -1 when the name
 * could not be resolved at all (the client then keeps what it had).
 * Called from the client's resolver thread (and once from
 * cm_rpc_client_open_opts()); may block.
 */
typedef int (*cm_rpc_resolve_fn)(void *arg, const char *host, int family,
    char out[][CM_RPC_ADDR_MAX], int max);

/** cm_rpc_client_opts tunes a client; zero fields take the defaults. */
typedef struct cm_rpc_client_opts {
	int               stall_ms;   // CM_RPC_STALL_MS
	int               resolve_ms; // CM_RPC_RESOLVE_MS
	cm_rpc_resolve_fn resolve;    // NULL: getaddrinfo()
	void             *resolve_arg;
	// Batching (0 = off; 1..CM_RPC_BATCH_WINDOW_MAX): while every
	// healthy replica has this many messages of short calls out (long
	// calls do not count: a point read never waits for a scan), new
	// calls started with cm_rpc_call_opts.batch wait in the client and
	// leave together, up to CM_RPC_BATCH_MAX in one Batch message, as
	// soon as such a message comes back. Below that load nothing waits,
	// so a lone call's latency is unchanged; under load a message's
	// fixed cost (nng's thread hops, a few syscalls on each side) is
	// shared by its calls. The calls of a batch are answered together:
	// one slow call holds back the others, so only short calls should
	// ask for it.
	int batch_window;
} cm_rpc_client_opts;

/**
 * cm_rpc_client_open() opens a client for the replica set named by urls:
 * one or more nng URLs separated by commas (spaces around them ignored),
 * e.g. "tcp://10.0.0.5:7001, tcp://10.0.0.6:7001" or
 * "ipc:///run/threadgate/auth.sock". In a tcp://, tcp4:// or tcp6:// URL a
 * host that is a name, not an address, stands for every address it
 * resolves to (tcp4/tcp6: only that family), each a replica, re-resolved
 * every CM_RPC_RESOLVE_MS: addresses that appear are dialled, addresses
 * that disappear are dropped once their calls are done (a Kubernetes
 * headless Service). Other URLs (ipc://, inproc://, numeric tcp) are one
 * replica each. Each replica gets its own REQ socket, dialled
 * non-blocking and reconnected in the background (100 ms .. 2 s backoff);
 * nng's resend is disabled (our deadlines bound every call instead).
 * Returns CM_OK and *out; CM_EINVAL for an empty or malformed list (an
 * entry without "scheme://", a tcp URL without a port, too many or too
 * long entries, a URL nng refuses to dial). A name that does not resolve
 * yet is not an error: it is retried in the background and calls fail
 * with CM_EUNAVAIL meanwhile. Thread-safe to use afterwards.
 */
cm_err cm_rpc_client_open(const char *urls, cm_rpc_client **out);

/**
 * cm_rpc_client_open_opts() is cm_rpc_client_open() with opts (NULL
 * allowed: the defaults).
 */
cm_err cm_rpc_client_open_opts(
    const char *urls, const cm_rpc_client_opts *opts, cm_rpc_client **out);

/**
 * cm_rpc_client_close() stops the client's threads, completes the calls
 * in flight with CM_EUNAVAIL, closes every socket and frees the client.
 * NULL is allowed. Never call it from a done callback.
 */
void cm_rpc_client_close(cm_rpc_client *c);

/**
 * cm_rpc_key() folds len bytes of data into the affinity key seed (0 to
 * start) and returns the new key, never 0. Chain it over several fields.
 * The same bytes give the same key in every process, so every gateway
 * sends a given token to the same auth-service replica. Not a
 * cryptographic digest: it only places calls. Thread-safe.
 */
uint64_t cm_rpc_key(uint64_t seed, const void *data, size_t len);

/**
 * cm_rpc_call_opts says how one call is made.
 *
 * idempotent: may the request be sent again after it may already have
 * reached a replica? A call is always re-sent to another replica (within
 * its deadline) when it surely did not reach one (no connection took it).
 * After it may have reached one - the connection dropped mid-call (the
 * replica died), the replica stalled, or it answered CM_EUNAVAIL (its
 * database down, overloaded, stopping) - it is re-sent only when
 * idempotent is 1; otherwise it fails with CM_EUNAVAIL, and the caller
 * cannot know whether it was applied. Set it only for calls whose second
 * execution changes nothing the first did not (reads; creates with an id
 * chosen by the caller and if-exists = return the existing one).
 *
 * affinity: 0, or a key from cm_rpc_key(): calls with the same key go to
 * the same replica while it is healthy and not overloaded (rendezvous
 * hashing over the healthy replicas: when one leaves, only its keys move),
 * so a per-replica cache keeps hitting. 0 = the least loaded replica.
 */
typedef struct cm_rpc_call_opts {
	const char *request_id;  // NULL = none; at most CM_RID_MAX bytes
	const char *traceparent; // NULL or "" = none; a value validated
	                         // with cm_traceparent_parse()
	int      timeout_ms;     // the whole call, every attempt; > 0
	int      idempotent;     // see above
	uint64_t affinity;       // see above
	// 1: the call is short (a point read) and may wait to share a
	// message with others when the client batches (see
	// cm_rpc_client_opts.batch_window); only idempotent calls without
	// affinity are batched.
	int batch;
} cm_rpc_call_opts;

/**
 * cm_rpc_done_fn is called exactly once per started call, on an nng
 * thread. status is CM_OK or the error: the server's Status, CM_ETIMEDOUT
 * when the deadline passed with the request at a replica, CM_EUNAVAIL when
 * no replica could be reached, or the call could not be completed and was
 * not safe to re-send, CM_EINTERNAL for an undecodable reply. detail is a
 * borrowed NUL-terminated text, valid only during the call. reply is a new
 * message (free it with protobuf_c_message_free_unpacked(reply, NULL))
 * when status is CM_OK, else NULL. The callback must not block; it may
 * start another call.
 */
typedef void (*cm_rpc_done_fn)(
    void *arg, cm_err status, const char *detail, ProtobufCMessage *reply);

/**
 * cm_rpc_call_start() sends method(req) as o says and returns at once;
 * done runs later exactly once (possibly before this returns).
 * o->timeout_ms bounds the whole call, re-sends included, and its end is
 * written into the envelope's deadline (a replica that gets the request
 * after it does not run it). reply_desc is the output descriptor the
 * reply payload is unpacked with. Returns CM_OK when done will run;
 * otherwise done will not run: CM_EINVAL for a bad method name, request
 * id or timeout; CM_EUNAVAIL when the client knows no replica (a name
 * not resolved yet) or is closing; CM_EINTERNAL when a message cannot be
 * allocated.
 */
cm_err cm_rpc_call_start(cm_rpc_client *c, const char *method,
    const cm_rpc_call_opts *o, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *reply_desc, cm_rpc_done_fn done,
    void *arg);

/**
 * cm_rpc_call_async() is cm_rpc_call_start() with request_id and
 * timeout_ms, not idempotent, no affinity.
 */
cm_err cm_rpc_call_async(cm_rpc_client *c, const char *method,
    const char *request_id, int timeout_ms, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *reply_desc, cm_rpc_done_fn done,
    void *arg);

/** One replica as cm_rpc_client_stats() reports it. */
typedef struct cm_rpc_replica_stat {
	char     url[CM_RPC_URL_MAX]; // what is dialled
	int      connected;           // a connection is up
	int      stalled;             // avoided: not answering, or failing
	int      serving;             // its last Health answer
	int      in_flight;           // calls at it now
	uint64_t sent;                // attempts sent to it
	uint64_t answered;            // replies received from it
	uint64_t resent;              // calls re-sent elsewhere from it
	uint64_t batched;             // calls sent in batches of 2 or more
} cm_rpc_replica_stat;

/**
 * cm_rpc_client_stats() writes up to max replicas (in no particular order)
 * into out and returns how many the client has now (may exceed max).
 * Thread-safe; for tests, logs and metrics.
 */
size_t cm_rpc_client_stats(
    cm_rpc_client *c, cm_rpc_replica_stat *out, size_t max);

/**
 * cm_rpc_call_async_traced() is cm_rpc_call_async() that also sends
 * traceparent (a value validated with cm_traceparent_parse(); NULL or ""
 * for none) in the envelope.
 */
cm_err cm_rpc_call_async_traced(cm_rpc_client *c, const char *method,
    const char *request_id, const char *traceparent, int timeout_ms,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *reply_desc,
    cm_rpc_done_fn done, void *arg);

/**
 * cm_rpc_call_sync() is the blocking form for tests and tools (never use
 * it on an nng callback or an HTTP thread). On CM_OK *reply_out gets a new
 * message; on error detail (if not NULL) gets the reason and *reply_out is
 * untouched.
 */
cm_err cm_rpc_call_sync(cm_rpc_client *c, const char *method,
    const char *request_id, int timeout_ms, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply_out,
    char *detail, size_t detail_len);

/**
 * cm_rpc_call_raw_sync() sends an envelope with an arbitrary method name,
 * deadline and payload bytes (for contract tests that send undecodable or
 * unknown requests). On CM_OK, *payload_out and *payload_len_out get a
 * malloc'd copy of the reply payload (free it); on error they are untouched
 * and detail gets the server's reason.
 */
cm_err cm_rpc_call_raw_sync(cm_rpc_client *c, const char *method,
    const char *request_id, int64_t deadline_unix_ms, const void *payload,
    size_t payload_len, int timeout_ms, void **payload_out,
    size_t *payload_len_out, char *detail, size_t detail_len);

// ---------------------------------------------------------------------
// Health (client side)
// ---------------------------------------------------------------------

/**
 * cm_rpc_health() asks the replicas behind c, one after the other
 * (connected ones first), whether they are serving, until one says yes,
 * waiting at most timeout_ms in all (blocking: never on an nng callback or
 * HTTP thread). Returns CM_OK when one answered SERVING; CM_EUNAVAIL when
 * none did and at least one answered NOT_SERVING/UNKNOWN (detail: its
 * reason), or none could be reached; CM_ETIMEDOUT when a connected
 * replica did not answer in time; CM_EINTERNAL for an undecodable answer.
 * detail (may be NULL) always gets a reason.
 */
cm_err cm_rpc_health(cm_rpc_client *c, const char *request_id, int timeout_ms,
    char *detail, size_t detail_len);

/**
 * cm_rpc_dial_url() turns a listen URL into one to dial from the same
 * host: a wildcard or empty tcp host (0.0.0.0, *, "", [::]) becomes the
 * loopback address; anything else is copied. Returns CM_OK, or CM_ETOOBIG
 * when out (len bytes) is too small.
 */
cm_err cm_rpc_dial_url(const char *listen_url, char *out, size_t len);

/**
 * cm_rpc_health_check_main() is the --health-check mode of a service
 * binary (a Kubernetes exec probe, a Docker HEALTHCHECK): it dials the
 * service's own listen URL (see cm_rpc_dial_url()), calls Health with a
 * timeout_ms deadline (0 = CM_RPC_HEALTH_TIMEOUT_MS), prints "serving" or
 * "not serving: <reason>" on stdout and returns the exit code: 0 serving,
 * 1 not serving or unreachable, 2 for a malformed URL.
 */
int cm_rpc_health_check_main(const char *listen_url, int timeout_ms);

#endif // CM_RPC_H
