// SPDX-License-Identifier: MIT
//
// gateway internals: the one header shared by the gateway's modules.
//
// The gateway is threadgate's HTTP front door. A request flows:
//
//   server.c   the HTTP/1.1 connection layer: event loops, connection
//              limits and fair share, deadlines, keep-alive, pipelining,
//              suspend/resume, writing responses
//   http1.c    the strict HTTP/1.1 request parser (http1.h)
//   http.c     one request (gw_job): headers it reads, routing, body
//              collection, the memory budget, CORS, x-request-id, the
//              response head
//   jsonw.c    the JSON writer replies are rendered with
//   routes.c   method + path pattern -> route (404 / 405 + Allow / 422 for
//              a path id that is not a UUID)
//   route_*.c  request JSON -> proto request (422 on bad input), and the
//              proto reply -> JSON response
//   upstream.c the async chain: suspend -> Authenticate -> gw_authorize()
//              -> thread-service rpc -> resume; never blocks an HTTP thread
//   authz.c    the one authorization decision
//   errors.c   the one cm_err -> HTTP status (+ body, headers) mapping
//   ops.c      operations: /ready (upstream Health probes, draining),
//              /metrics, the request and upstream metrics, the access line
//
// Identity comes only from the auth-service's answer: the gateway reads a
// fixed list of request headers (Authorization, Content-Length, Prefer,
// Origin, Access-Control-Request-Headers, x-request-id; the body is JSON
// whatever the Content-Type says) and nothing else, so a client-sent identity
// header (x-user-id, x-owner, x-forwarded-user...) never reaches the owner
// decision or the logs.
#ifndef GW_GW_H
#define GW_GW_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <stdarg.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <jansson.h>

#include "common/err.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "gateway/http1.h"
#include "proto/auth.pb-c.h"
#include "proto/threads.pb-c.h"

// ---------------------------------------------------------------------
// Limits. Every input and buffer has one; each says why its value.
// ---------------------------------------------------------------------

// Default cap on a request body (GATEWAY_MAX_BODY). Thread bodies are
// small JSON documents (metadata, filters, state updates); 1 MiB is far
// above real ones and bounds what one request can make us hold.
#define GW_DEFAULT_MAX_BODY (1024 * 1024)
// Largest GATEWAY_MAX_BODY accepted: the thread-service's messages are
// capped at CM_RPC_MAX_MSG, and a body must fit in one with room to spare.
#define GW_MAX_BODY_LIMIT (8 * 1024 * 1024)
// An over-cap body of at most this many bytes is read and discarded (not
// stored) so the 413 goes out on a connection that stays usable. A body
// declared (Content-Length) larger is answered 413 before it is read and
// the connection is closed; an undeclared (chunked) one that passes this
// is cut off by closing the connection (we will not read gigabytes to be
// polite).
#define GW_DRAIN_MAX (16 * 1024 * 1024)
// (The request head - request line and header fields - is bounded by
// GW_H1_HEAD_MAX and GW_H1_FIELDS_MAX in http1.h.)
// Longest request path accepted; longer gets 414. Our longest real path
// is ~110 bytes. (The query string is bounded by GW_H1_HEAD_MAX.)
#define GW_URL_MAX 2048
// Most path segments examined by the router; our deepest route has 4.
#define GW_PATH_SEGMENTS_MAX 8
// Longest decoded path parameter kept (a UUID is 36; room for the 32-hex
// form and for a clear 422 on junk without storing unbounded text).
#define GW_PARAM_MAX 128
// Most Authorization header values forwarded to the auth-service. More
// than one is refused there anyway; beyond this we refuse without asking.
#define GW_AUTH_HEADERS_MAX 4
// Longest Authorization value forwarded: "Bearer " + an 8 KiB token
// (the auth-service's AUTH_HEADER_MAX). Longer is refused with 401.
#define GW_AUTH_VALUE_MAX (8192 + 16)
// Longest Origin / Access-Control-Request-* value echoed back. Origins
// are scheme://host:port; 512 bytes is plenty and bounds the echo.
#define GW_ORIGIN_MAX 512
// Longest Access-Control-Request-Headers value echoed in a preflight.
#define GW_ACRH_MAX 1024
// Longest identity kept from the auth-service (its AUTH_ID_MAX is 256).
#define GW_IDENTITY_MAX 256
// Longest error detail text sent in {"detail": ...}.
#define GW_DETAIL_MAX 256
// Most entries in a search "ids" or prune "thread_ids" list: a page is at
// most 1000 threads, so more ids than that cannot all be returned.
#define GW_IDS_MAX 1000
// Most entries in a search "select" list: there are 11 Thread fields;
// duplicates are allowed, so allow a few more than that.
#define GW_SELECT_MAX 32
// Largest search page (the LangGraph API's limit bound).
#define GW_LIMIT_MAX 1000
// Default search page size and history length (both SDKs send 10).
#define GW_LIMIT_DEFAULT 10
// Largest search offset accepted (the proto field is int32).
#define GW_OFFSET_MAX INT32_MAX
// Longest short string field (status, as_node, strategy, checkpoint_ns)
// taken from a body; real values are a few dozen bytes.
#define GW_SHORT_STR_MAX 256
// Extra response headers one response may carry (pagination, auth,
// retry, allow).
#define GW_RESP_HEADERS_MAX 6
// Longest extra header value we build (Allow lists, WWW-Authenticate).
#define GW_HEADER_VALUE_MAX 128
// Owned strings one parsed request may hold (JSON texts, canonical ids);
// the largest route (update_state) needs 5.
#define GW_REQ_STRS_MAX 16
// Longest extra response header name we set ("X-Pagination-Total").
#define GW_HEADER_NAME_MAX 32
// Default GATEWAY_HEADER_TIMEOUT_S: the whole request head must arrive
// within this many seconds of the connection's first byte of the request
// (of the connect, for the first request), whatever the pace - an
// absolute deadline, so trickling bytes (slowloris) does not extend it.
// Real clients send a head in one packet; 10 s covers a bad mobile link
// (nginx's client_header_timeout is 60 s, but an idle-reset timer).
#define GW_DEFAULT_HEADER_TIMEOUT_S 10
// Default GATEWAY_BODY_TIMEOUT_S: the whole request body must arrive
// within this many seconds of the end of the head. At the default 1 MiB
// body cap that is at least 35 KB/s, which any real client manages.
#define GW_DEFAULT_BODY_TIMEOUT_S 30
// Slowest rate (bytes/s) at which a client must read a response: the
// send deadline is the idle timeout plus size / this rate, so a client
// reading a large answer slowly cannot hold its memory forever.
#define GW_MIN_SEND_RATE (64 * 1024)
// Default GATEWAY_MEMORY_BUDGET_MB: bytes all requests together may hold
// in request bodies, thread-service replies being rendered and responses
// being sent. A request that would pass it gets 503 + Retry-After
// instead of growing the process (issue 10: eight GETs of an 8 MiB state
// took the gateway to 800 MB). 256 MiB holds a hundred 1 MiB bodies or
// several of the largest (16 MiB) replies at once.
#define GW_DEFAULT_MEMORY_BUDGET_MB 256
// Replies are charged this many times their packed size while they are
// rendered: the rpc layer's copy of the payload, the unpacked message and
// the JSON output coexist (each about the packed size). Once rendered,
// the charge drops to the JSON output's size until it is sent.
#define GW_RENDER_FACTOR 3
// Grace period on SIGTERM for requests in flight to finish before the
// upstream clients are closed (which completes the rest with 503). Below
// the 10 s a supervisor usually waits before SIGKILL.
#define GW_SHUTDOWN_GRACE_MS 6000
// Longest request path kept for the access line (a real one is ~110
// bytes; longer ones, which only junk requests have, are cut).
#define GW_LOG_PATH_MAX 512

// ---------------------------------------------------------------------
// Configuration (main.c fills it from the environment and flags).
// ---------------------------------------------------------------------

typedef struct gw_config {
	const char *host;               // GATEWAY_HOST (borrowed)
	int         port;               // GATEWAY_PORT, 0 = any free port
	const char *port_file;          // GATEWAY_PORT_FILE, NULL = none
	const char *auth_url;           // AUTH_SERVICE_URL
	const char *threads_url;        // THREAD_SERVICE_URL
	int         auth_timeout_ms;    // GATEWAY_AUTH_TIMEOUT_MS
	int         threads_timeout_ms; // GATEWAY_THREADS_TIMEOUT_MS
	size_t      max_body;           // GATEWAY_MAX_BODY
	int         threads;            // GATEWAY_THREADS (event loops)
	int         max_connections;    // GATEWAY_MAX_CONNECTIONS
	int         per_ip_connections; // GATEWAY_PER_IP_CONNECTIONS
	int         idle_timeout_s;     // GATEWAY_IDLE_TIMEOUT_S
	int         header_timeout_s;   // GATEWAY_HEADER_TIMEOUT_S
	int         body_timeout_s;     // GATEWAY_BODY_TIMEOUT_S
	size_t      memory_budget;      // GATEWAY_MEMORY_BUDGET_MB, bytes
	int         public_metrics;    // GATEWAY_PUBLIC_METRICS: /metrics here
	int         ready_interval_ms; // GATEWAY_READY_INTERVAL_MS
	int         drain_delay_ms;    // GATEWAY_DRAIN_DELAY_MS (main.c)
	int         auth_cache_ttl_ms; // GATEWAY_AUTH_CACHE_TTL, 0 = off
	int         auth_cache_max;    // GATEWAY_AUTH_CACHE_MAX, entries
	int         batch_window;      // GATEWAY_BATCH_WINDOW, 0 = off
} gw_config;

// Default GATEWAY_BATCH_WINDOW: point reads wait to share a message with
// others once this many messages of point reads are out to every healthy
// thread-service replica (cm_rpc_client_opts.batch_window). Chosen with
// make bench: see README, "Performance".
#define GW_BATCH_WINDOW_DEFAULT 1

// ---------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------

/**
 * gw_response is what a request is answered with. body is a new malloc'd
 * JSON text (NULL = empty body); headers hold extra name/value pairs (the
 * common ones - x-request-id, CORS, Content-Type - are added by http.c).
 */
typedef struct gw_response {
	unsigned    status;
	const char *content_type; // static; NULL = application/json
	char       *body;
	size_t      body_len;
	int         nheaders;
	char        hname[GW_RESP_HEADERS_MAX][GW_HEADER_NAME_MAX];
	char        hvalue[GW_RESP_HEADERS_MAX][GW_HEADER_VALUE_MAX];
} gw_response;

/** gw_response_fini() frees the body and clears r. NULL allowed. */
void gw_response_fini(gw_response *r);

/**
 * gw_response_json() sets status and body to the compact dump of v
 * (borrowed; not stolen). Replaces any previous body.
 */
void gw_response_json(gw_response *r, unsigned status, const json_t *v);

/**
 * gw_response_header() appends one extra header. Values longer than
 * GW_HEADER_VALUE_MAX - 1 are cut; headers beyond GW_RESP_HEADERS_MAX are
 * dropped (a programming error; logged).
 */
void gw_response_header(gw_response *r, const char *name, const char *value);

// ---------------------------------------------------------------------
// errors.c: the one cm_err -> HTTP mapping
// ---------------------------------------------------------------------

/**
 * gw_http_status_for() is THE mapping of cm_err to an HTTP status:
 * EINVAL 422, ENOENT 404, EEXIST 409, ECONFLICT 409, EPERM 403, EAUTH 401,
 * EUNAVAIL 503, ETIMEDOUT 503 (a deadline that passed upstream means
 * "retry later": never a success, never a 401),
 * ETOOBIG 413, ENOTSUP 501, EINTERNAL 500; CM_OK and unknown values give
 * 500 (an error path must never produce a success). Thread-safe.
 */
unsigned gw_http_status_for(cm_err err);

/**
 * gw_error_response() fills r with the error: the status from
 * gw_http_status_for(), body {"detail": detail} (a default text for the
 * status when detail is NULL or empty), and the status's headers:
 * 401 -> WWW-Authenticate: Bearer realm="threadgate" (plus
 * error="invalid_token" when token_presented), 503 -> Retry-After: 1.
 * Whatever r held before (body, headers) is replaced. Thread-safe (on
 * distinct r).
 */
void gw_error_response(
    gw_response *r, cm_err err, const char *detail, int token_presented);

/**
 * gw_status_response() fills r with an HTTP-level error that has no
 * cm_err (405 Method Not Allowed, 414 URI Too Long): status and body
 * {"detail": detail} (a default text when detail is NULL or empty).
 * Whatever r held before is replaced. Thread-safe (on distinct r).
 */
void gw_status_response(gw_response *r, unsigned status, const char *detail);

// ---------------------------------------------------------------------
// authz.c: the one authorization decision
// ---------------------------------------------------------------------

/** What a request does to a thread (the LangGraph auth "action"). */
typedef enum gw_action {
	GW_ACT_NONE = 0, // unauthenticated meta routes (/ok, /info)
	GW_ACT_CREATE,   // threads:create (create, copy)
	GW_ACT_READ,     // threads:read (get, state, history)
	GW_ACT_UPDATE,   // threads:update (patch, update_state, patch_state)
	GW_ACT_DELETE,   // threads:delete (delete, prune)
	GW_ACT_SEARCH,   // threads:search (search, count)
} gw_action;

/** gw_identity is the caller as told by the auth-service (borrowed). */
typedef struct gw_identity {
	const char        *id;    // never empty for an authenticated caller
	const char        *email; // "" when unknown
	const char *const *perms; // permissions/scopes
	size_t             nperms;
} gw_identity;

/**
 * gw_authorize() decides whether who may perform act on the thread
 * thread_id (NULL for collection actions: create without id, search,
 * count, prune). Today every authenticated identity may do everything to
 * its own threads (isolation is the thread-service's owner filter); a
 * later policy (read-only users, scopes) changes only this function.
 * Returns CM_OK, CM_EAUTH when who is NULL or has an empty id (fail
 * closed), or CM_EPERM when the policy refuses. Thread-safe.
 */
cm_err gw_authorize(
    const gw_identity *who, gw_action act, const char *thread_id);

/** gw_action_name() is "threads:read" etc. (static string). */
const char *gw_action_name(gw_action act);

// ---------------------------------------------------------------------
// authcache.c: identities the gateway may reuse (GATEWAY_AUTH_CACHE_TTL)
// ---------------------------------------------------------------------

// Digest size of a cache key (SHA-256).
#define GW_AUTHCACHE_KEY_LEN 32
// Default GATEWAY_AUTH_CACHE_TTL, seconds: short, so that even a caller
// whose auth-service promised longer gives the auth-service a look every
// few seconds; a hit saves a whole rpc.
#define GW_AUTHCACHE_TTL_DEFAULT_S 5
// Largest GATEWAY_AUTH_CACHE_TTL accepted: one hour.
#define GW_AUTHCACHE_TTL_MAX_S 3600
// Default GATEWAY_AUTH_CACHE_MAX (entries; ~1 KiB each).
#define GW_AUTHCACHE_MAX_DEFAULT 4096
// Largest GATEWAY_AUTH_CACHE_MAX accepted.
#define GW_AUTHCACHE_MAX_LIMIT 1000000
// Longest email and space-separated permission list kept; an answer with
// longer ones is used but not cached.
#define GW_AUTHCACHE_EMAIL_MAX 256
#define GW_AUTHCACHE_PERMS_MAX 512

/** The part of an Authenticate answer the gateway keeps. */
typedef struct gw_authcache_identity {
	char identity[GW_IDENTITY_MAX];
	char email[GW_AUTHCACHE_EMAIL_MAX];
	char perms[GW_AUTHCACHE_PERMS_MAX]; // space-separated
} gw_authcache_identity;

typedef struct gw_authcache gw_authcache;

/**
 * gw_authcache_new() makes a cache of at most about max_entries entries.
 * max_entries 0 gives *out = NULL: a disabled cache (get never hits, put
 * keeps nothing). CM_OK, or CM_EINTERNAL when SHA-256 is unavailable.
 */
cm_err gw_authcache_new(size_t max_entries, gw_authcache **out);

/** gw_authcache_free() frees c (NULL allowed). */
void gw_authcache_free(gw_authcache *c);

/**
 * gw_authcache_key() computes the key of a request's credentials: SHA-256
 * over length-prefixed Authorization values and required scopes, in
 * order. c must not be NULL. Thread-safe.
 */
void gw_authcache_key(const gw_authcache *c, const char *const *authz,
    size_t nauthz, const char *const *scopes, size_t nscopes,
    unsigned char key[GW_AUTHCACHE_KEY_LEN]);

/**
 * gw_authcache_get() copies the identity kept under key into *out and
 * returns 1 while it is live at now_ms (monotonic ms), else 0. NULL c
 * gives 0. Thread-safe.
 */
int gw_authcache_get(gw_authcache *c,
    const unsigned char key[GW_AUTHCACHE_KEY_LEN], int64_t now_ms,
    gw_authcache_identity *out);

/**
 * gw_authcache_put() keeps id under key until until_ms (monotonic ms;
 * nothing when not after now_ms), evicting the soonest-expiring entry of
 * its set when full. NULL c keeps nothing. Thread-safe.
 */
void gw_authcache_put(gw_authcache *c,
    const unsigned char             key[GW_AUTHCACHE_KEY_LEN],
    const gw_authcache_identity *id, int64_t now_ms, int64_t until_ms);

// ---------------------------------------------------------------------
// routes.c: the route table
// ---------------------------------------------------------------------

typedef enum gw_route_id {
	GW_R_OK = 0,
	GW_R_INFO,
	GW_R_THREAD_CREATE,
	GW_R_THREAD_GET,
	GW_R_THREAD_PATCH,
	GW_R_THREAD_DELETE,
	GW_R_THREAD_SEARCH,
	GW_R_THREAD_COUNT,
	GW_R_THREAD_COPY,
	GW_R_THREAD_PRUNE,
	GW_R_STATE_GET,
	GW_R_STATE_GET_AT,
	GW_R_STATE_CHECKPOINT,
	GW_R_STATE_UPDATE,
	GW_R_STATE_PATCH,
	GW_R_HISTORY_POST,
	GW_R_HISTORY_GET,
	GW_R_READY,   // GET /ready (ops.c)
	GW_R_METRICS, // GET /metrics, when GATEWAY_PUBLIC_METRICS=1 (ops.c)
	GW_R_COUNT_
} gw_route_id;

typedef struct gw_request gw_request;
typedef struct gw_jw      gw_jw;

/**
 * gw_query_fn returns the value of query parameter name (decoded, NUL-
 * terminated, borrowed) or NULL. http.c passes one reading the query string
 * arguments; tests pass their own.
 */
typedef const char *(*gw_query_fn)(void *arg, const char *name);

/**
 * A route's request builder: fills req (route, thread_id, checkpoint_id
 * and select already set) from the body object b (borrowed; {} for routes
 * that take no body) and the query. CM_OK, or an error with detail
 * (d, dl bytes) naming the field. Anything kept from b is copied into req.
 */
typedef cm_err (*gw_build_fn)(const json_t *b, gw_query_fn query,
    void *query_arg, gw_request *req, char *d, size_t dl);

/**
 * A route's reply renderer: writes the JSON body for reply to w; may add
 * headers to out, or set out->status to 204 (then w is not used).
 * CM_EINTERNAL for JSON text from the thread-service that does not parse.
 */
typedef cm_err (*gw_render_fn)(const gw_request *req,
    const ProtobufCMessage *reply, gw_jw *w, gw_response *out);

/**
 * What the gateway may do with a thread-service call whose replica failed
 * after the request may have reached it (a call that surely reached no
 * replica is always re-sent). Every attempt shares the route's one
 * deadline, which the envelope carries too, so a replica that gets the
 * request late does not run it. The rule of each route is in the route
 * table (routes.c), with why.
 */
typedef enum gw_retry {
	// Not re-sent: the client gets 503 and the write may or may not
	// have been applied (as with any 503 or timeout). Never applied
	// twice by us; never answered 2xx unless applied.
	GW_RETRY_NO = 0,
	// A read: re-sent to another replica; the client sees no failure.
	GW_RETRY_READ,
	// A create: idempotent when the gateway picked the id (no
	// thread_id in the body) or the body asks if_exists=do_nothing:
	// then it is sent with if_exists=do_nothing, and a re-sent create
	// that finds the thread the first attempt made returns it (200), so
	// exactly one thread exists and the answer is a success. A create
	// with the client's own thread_id and if_exists=raise is not
	// re-sent: a second attempt could not tell "this request made it"
	// from "it existed before" (that needs the thread-service to store
	// a per-request key with the thread).
	GW_RETRY_CREATE,
} gw_retry;

/**
 * One row of the route table: everything about a route. Meta routes
 * (action GW_ACT_NONE) have no rpc, build or render.
 */
typedef struct gw_route {
	gw_route_id id;
	const char *method;  // "GET", "POST", "PATCH", "DELETE"
	const char *pattern; // "/threads/{id}/state/{cid}"
	gw_action   action;  // GW_ACT_NONE: no authentication
	const char *rpc;     // thread-service method, NULL for meta routes
	const ProtobufCMessageDescriptor *reply_desc; // of rpc's output
	int          body;   // 0: a body sent is ignored (GET, DELETE, copy)
	gw_build_fn  build;  // body + query -> the rpc's request
	gw_render_fn render; // the rpc's reply -> HTTP response
	gw_retry     retry;  // re-send rule after a replica failed
	// 1: a point read by primary key, short and idempotent, that may
	// share an rpc message with others under load (batching: one slow
	// call would hold back the rest of its message, so scans never do).
	int batch;
} gw_route;

typedef enum gw_match_result {
	GW_MATCH_OK = 0,     // route found; params decoded and checked
	GW_MATCH_NOT_FOUND,  // no such path (404)
	GW_MATCH_BAD_METHOD, // known path, other method (405 + Allow)
	GW_MATCH_BAD_PARAM,  // a path id is not a UUID (422, detail set)
} gw_match_result;

/** gw_match is the router's answer (all strings inside it). */
typedef struct gw_match {
	const gw_route *route;                      // set on GW_MATCH_OK
	char            thread_id[CM_UUID_LEN + 1]; // canonical, "" when none
	char checkpoint_id[CM_UUID_LEN + 1];        // canonical, "" when none
	char allow[GW_HEADER_VALUE_MAX]; // set on GW_MATCH_BAD_METHOD
	char detail[GW_DETAIL_MAX];      // set on GW_MATCH_BAD_PARAM
} gw_match;

/**
 * gw_route_match() looks method + path up in the route table. path is the
 * raw (still percent-encoded) path without the query string; each segment
 * is percent-decoded after splitting, so "%2F" never creates a segment.
 * The route with the most literal segments wins ("/threads/search" over
 * "/threads/{id}"). A {id} that is not a UUID gives GW_MATCH_BAD_PARAM
 * with detail "Invalid thread ID: must be a UUID"; a {cid} likewise
 * "Invalid checkpoint ID: must be a UUID". Never fails otherwise; m is
 * always written. Thread-safe.
 */
gw_match_result gw_route_match(
    const char *method, const char *path, gw_match *m);

/**
 * gw_route_table() returns the table and its length in *n (static).
 */
const gw_route *gw_route_table(size_t *n);

/**
 * gw_pct_decode() percent-decodes len bytes of in into out (outsz bytes
 * with the NUL). '+' is kept as is (paths are not form data). Returns the
 * decoded length, or -1 for a malformed escape, an encoded NUL, or output
 * that does not fit. Thread-safe.
 */
long gw_pct_decode(const char *in, size_t len, char *out, size_t outsz);

/**
 * gw_request_id_pick() writes the request id to use into out: the client's
 * x-request-id (client may be NULL) when it is 1..CM_RID_MAX chars of
 * [A-Za-z0-9._-], else a new cm_request_id(). Thread-safe.
 */
void gw_request_id_pick(const char *client, char out[CM_RID_MAX + 1]);

// ---------------------------------------------------------------------
// Requests: parsed input of one route (route_threads.c, route_state.c)
// ---------------------------------------------------------------------

/** Thread fields selectable in search's "select" (bit per field). */
typedef enum gw_field {
	GW_F_THREAD_ID  = 1u << 0,
	GW_F_CREATED_AT = 1u << 1,
	GW_F_UPDATED_AT = 1u << 2,
	GW_F_METADATA   = 1u << 3,
	GW_F_CONFIG     = 1u << 4,
	GW_F_CONTEXT    = 1u << 5,
	GW_F_STATUS     = 1u << 6,
	GW_F_VALUES     = 1u << 7,
	GW_F_INTERRUPTS = 1u << 8,
	GW_F_ERROR      = 1u << 9,
	GW_F_TTL        = 1u << 10,
} gw_field;

// All Thread fields (no select given).
#define GW_F_ALL 0x7ffu

/**
 * gw_request is one route's parsed input: the proto request (one member
 * of the union, chosen by the route) plus everything the strings inside it
 * point to. Everything is owned by the gw_request and freed by
 * gw_request_fini(). owner_slot points at the request's owner field; the
 * upstream step stores the authenticated identity there.
 */
struct gw_request {
	const gw_route *route;
	union {
		Threadgate__Threads__V1__CreateThreadRequest  create;
		Threadgate__Threads__V1__ThreadRef            ref;
		Threadgate__Threads__V1__UpdateThreadRequest  update;
		Threadgate__Threads__V1__SearchThreadsRequest search;
		Threadgate__Threads__V1__CountThreadsRequest  count;
		Threadgate__Threads__V1__PruneThreadsRequest  prune;
		Threadgate__Threads__V1__GetStateRequest      state;
		Threadgate__Threads__V1__UpdateStateRequest   update_state;
		Threadgate__Threads__V1__PatchStateRequest    patch_state;
		Threadgate__Threads__V1__GetHistoryRequest    history;
	} u;
	char   **owner_slot;
	char    *strs[GW_REQ_STRS_MAX]; // owned strings the proto points at
	int      nstrs;
	char   **ids;            // owned id array (search ids / prune ids)
	char    *id_buf;         // owned storage of the ids
	unsigned select;         // GW_F_* mask for search; GW_F_ALL otherwise
	int      prefer_minimal; // PATCH with Prefer: return=minimal
	char     thread_id[CM_UUID_LEN + 1];
	char     checkpoint_id[CM_UUID_LEN + 1];
};

/**
 * gw_request_build() parses the body (len bytes, need not be NUL-
 * terminated; len 0 means {}) and query of a matched route m into req.
 * Routes that take no body (GET, DELETE, copy) ignore it, as the
 * reference servers do. Returns CM_OK, or CM_EINVAL with detail
 * (detail_len bytes) naming the
 * field: "Invalid JSON in request body", "Request body must be a JSON
 * object", "metadata must be an object", "limit must be an integer
 * between 1 and 1000", ... req must be zeroed by the caller; on error it
 * may hold partial allocations, so always call gw_request_fini().
 * Thread-safe (touches only req).
 */
cm_err gw_request_build(const gw_match *m, const char *body, size_t len,
    size_t max_len, gw_query_fn query, void *query_arg, gw_request *req,
    char *detail, size_t detail_len);

/**
 * Field readers for request bodies (route_*.c). Each reads key of the
 * object body; absent or null means "not given". On a wrong type they
 * return CM_EINVAL and write a detail naming the field.
 * - gw_body_object(): an object -> its JSON text (kept by req), "" when
 *   not given or {}.
 * - gw_body_string(): a string of at most max bytes without NULs ->
 *   borrowed from body (valid while body lives), NULL when not given.
 * - gw_body_int(): an integer in [min, max], def when not given.
 * - gw_body_uuid(): a UUID string -> canonical form (kept by req), ""
 *   when not given.
 */
cm_err gw_body_object(const char *key, const json_t *body,
    const char **out_text, gw_request *req, char *detail, size_t detail_len);
cm_err gw_body_string(const char *key, const json_t *body, size_t max,
    const char **out, char *detail, size_t detail_len);
cm_err gw_body_int(const char *key, const json_t *body, int64_t min,
    int64_t max, int64_t def, int64_t *out, char *detail, size_t detail_len);
cm_err gw_body_uuid(const char *key, const json_t *body, const char **out,
    gw_request *req, char *detail, size_t detail_len);

/**
 * gw_req_keep() makes req own s (a new malloc'd string; stolen) and
 * returns it. At most GW_REQ_STRS_MAX strings per request (a programming
 * limit, checked with CM_ASSERT).
 */
char *gw_req_keep(gw_request *req, char *s);

// ---------------------------------------------------------------------
// jsonw.c: the JSON writer replies are rendered with
// ---------------------------------------------------------------------

// Deepest nesting the writer's own containers reach (our replies nest 4
// levels; embedded JSON text has its own CM_JSON_MAX_DEPTH check).
#define GW_JW_DEPTH_MAX 16

/**
 * gw_jw writes compact JSON (the bytes jansson's JSON_COMPACT prints)
 * into a growing buffer. Commas are placed by the writer; a value after
 * gw_jw_key() belongs to that key. err is set (and sticks) when embedded
 * JSON text or a string is invalid; the output is then unusable.
 */
struct gw_jw {
	char         *buf;
	size_t        len;
	size_t        cap;
	int           depth;
	int           after_key;
	int           err;
	unsigned char nonempty[GW_JW_DEPTH_MAX];
};

/** gw_jw_init() empties w; gw_jw_fini() frees its buffer (NULL ok). */
void gw_jw_init(gw_jw *w);
void gw_jw_fini(gw_jw *w);

/**
 * gw_jw_take() returns the output (new, NUL-terminated; *len bytes) and
 * empties w.
 */
char *gw_jw_take(gw_jw *w, size_t *len);

/** Containers, keys and scalar values. Strings must be valid UTF-8. */
void gw_jw_obj(gw_jw *w);
void gw_jw_obj_end(gw_jw *w);
void gw_jw_arr(gw_jw *w);
void gw_jw_arr_end(gw_jw *w);
void gw_jw_key(gw_jw *w, const char *key);
void gw_jw_str(gw_jw *w, const char *s);
void gw_jw_int(gw_jw *w, int64_t v);
void gw_jw_real(gw_jw *w, double v);
void gw_jw_null(gw_jw *w);

/** gw_jw_raw() appends n bytes as they are (no separator). */
void gw_jw_raw(gw_jw *w, const char *s, size_t n);

/** gw_jw_raw_value() appends a constant JSON value ("{}", "[]"). */
void gw_jw_raw_value(gw_jw *w, const char *json);

/**
 * gw_jw_json() appends the JSON text (n bytes) as one value, checked
 * (one value, nesting at most CM_JSON_MAX_DEPTH, valid strings, UTF-8 and
 * numbers) and without its insignificant whitespace, in one pass with no
 * allocation besides the output. CM_EINVAL (and w->err) when it is not
 * valid JSON.
 */
cm_err gw_jw_json(gw_jw *w, const char *text, size_t n);

/**
 * gw_jw_field() writes key and the JSON text from the thread-service
 * ("" or NULL gives the JSON text def). CM_EINVAL when it is not valid.
 */
cm_err gw_jw_field(
    gw_jw *w, const char *key, const char *text, const char *def);

// The routes' builders and renderers (gw_build_fn, gw_render_fn), named
// in the route table (routes.c).
// route_threads.c:
cm_err gw_build_create(
    const json_t *, gw_query_fn, void *, gw_request *, char *, size_t);
cm_err gw_build_ref(
    const json_t *, gw_query_fn, void *, gw_request *, char *, size_t);
cm_err gw_build_patch(
    const json_t *, gw_query_fn, void *, gw_request *, char *, size_t);
cm_err gw_build_search(
    const json_t *, gw_query_fn, void *, gw_request *, char *, size_t);
cm_err gw_build_count(
    const json_t *, gw_query_fn, void *, gw_request *, char *, size_t);
cm_err gw_build_prune(
    const json_t *, gw_query_fn, void *, gw_request *, char *, size_t);
cm_err gw_render_thread(
    const gw_request *, const ProtobufCMessage *, gw_jw *, gw_response *);
cm_err gw_render_no_content(
    const gw_request *, const ProtobufCMessage *, gw_jw *, gw_response *);
cm_err gw_render_search(
    const gw_request *, const ProtobufCMessage *, gw_jw *, gw_response *);
cm_err gw_render_count(
    const gw_request *, const ProtobufCMessage *, gw_jw *, gw_response *);
cm_err gw_render_prune(
    const gw_request *, const ProtobufCMessage *, gw_jw *, gw_response *);
// route_state.c:
cm_err gw_build_state_get(
    const json_t *, gw_query_fn, void *, gw_request *, char *, size_t);
cm_err gw_build_state_checkpoint(
    const json_t *, gw_query_fn, void *, gw_request *, char *, size_t);
cm_err gw_build_state_update(
    const json_t *, gw_query_fn, void *, gw_request *, char *, size_t);
cm_err gw_build_state_patch(
    const json_t *, gw_query_fn, void *, gw_request *, char *, size_t);
cm_err gw_build_history(
    const json_t *, gw_query_fn, void *, gw_request *, char *, size_t);
cm_err gw_render_state(
    const gw_request *, const ProtobufCMessage *, gw_jw *, gw_response *);
cm_err gw_render_checkpoint(
    const gw_request *, const ProtobufCMessage *, gw_jw *, gw_response *);
cm_err gw_render_history(
    const gw_request *, const ProtobufCMessage *, gw_jw *, gw_response *);

/** gw_request_fini() frees everything req owns. NULL allowed. */
void gw_request_fini(gw_request *req);

/**
 * gw_request_message() returns the proto request of req to send (borrowed
 * from req), or NULL for routes with no rpc.
 */
const ProtobufCMessage *gw_request_message(gw_request *req);

/**
 * gw_reply_render() turns the thread-service's reply (borrowed) to req
 * into r: status and body (and pagination headers for search). Returns
 * CM_OK, or CM_EINTERNAL when the reply holds JSON text that does not
 * parse (r untouched). Thread-safe.
 */
cm_err gw_reply_render(
    const gw_request *req, const ProtobufCMessage *reply, gw_response *r);

/**
 * gw_thread_json() writes the JSON object for t with only the fields
 * in mask (GW_F_*): thread_id, created_at/updated_at (ISO-8601 with
 * offset), metadata, status, config, values (omitted when the service sent
 * ""), interrupts, ttl ({"ttl", "strategy"}, only when set), context ({}),
 * error (null). CM_EINTERNAL when a JSON field is not valid JSON (w is
 * then unusable).
 */
cm_err gw_thread_json(
    const Threadgate__Threads__V1__Thread *t, unsigned mask, gw_jw *w);

/**
 * gw_select_parse() turns a JSON "select" array into a GW_F_* mask.
 * CM_EINVAL (detail set) for a non-array, a non-string entry, an unknown
 * field name or more than GW_SELECT_MAX entries.
 */
cm_err gw_select_parse(
    const json_t *sel, unsigned *mask, char *detail, size_t detail_len);

/**
 * gw_state_json() writes the ThreadState JSON object for a StateReply
 * (the empty state when has_checkpoint is false). thread_id is the path
 * id (used for the empty state). CM_EINTERNAL on invalid JSON fields.
 */
cm_err gw_state_json(const Threadgate__Threads__V1__StateReply *s,
    const char *thread_id, gw_jw *w);

/**
 * gw_checkpoint_state_json() writes the ThreadState JSON object for one
 * stored checkpoint (a history entry). CM_EINTERNAL on invalid JSON.
 */
cm_err gw_checkpoint_state_json(
    const Threadgate__Threads__V1__Checkpoint *c, gw_jw *w);

/**
 * gw_checkpoint_ref_json() writes {thread_id, checkpoint_ns,
 * checkpoint_id, checkpoint_map: null}.
 */
void gw_checkpoint_ref_json(gw_jw *w, const char *thread_id, const char *ns,
    const char *checkpoint_id);

/**
 * gw_meta_response() answers the unauthenticated meta routes: GW_R_OK ->
 * {"ok":true}, GW_R_INFO -> {"version", "flags"}. Thread-safe.
 */
void gw_meta_response(gw_route_id id, gw_response *r);

// ---------------------------------------------------------------------
// server.c + http.c + upstream.c: the server
// ---------------------------------------------------------------------

typedef struct gw_server gw_server;
typedef struct gw_ops    gw_ops;
typedef struct gw_conn   gw_conn;  // one client connection (server.c)
typedef struct gw_loop   gw_loop;  // one event-loop thread (server.c)
typedef struct gw_iptab  gw_iptab; // connections per client address

/**
 * gw_server_start() opens the upstream rpc clients, binds cfg->host:port
 * and starts cfg->threads event loops. Writes the bound port to
 * cfg->port_file (temp file + rename) when set. Returns CM_OK and *out;
 * CM_EINVAL for a bad config or rpc URL; CM_EUNAVAIL when the address
 * cannot be bound (logged with the port and the variable to change).
 * cfg strings are borrowed and must outlive the server. Call from the
 * main thread.
 */
cm_err gw_server_start(const gw_config *cfg, gw_server **out);

/** gw_server_port() is the bound TCP port. */
int gw_server_port(const gw_server *s);

/**
 * gw_server_stop() stops accepting (new connects are refused), lets
 * requests in flight finish (up to GW_SHUTDOWN_GRACE_MS; requests that
 * arrive meanwhile on open connections get 503), closes the upstream
 * clients (completing any remaining call with 503), sends the last
 * answers, stops the loops and frees s. NULL allowed. Call from the
 * thread that started it.
 */
void gw_server_stop(gw_server *s);

/**
 * gw_ratelog counts one kind of event and logs it at most once per
 * interval, with the count since the last line (so a flood of aborted
 * connections is one warn line every few seconds, not one per event).
 */
typedef struct gw_ratelog {
	const char  *what;    // "connections aborted by clients"
	atomic_llong count;   // since the last line
	atomic_llong last_ms; // monotonic ms of the last line
} gw_ratelog;

/** gw_ratelog_note() counts one event (detail: the latest, for the log). */
void gw_ratelog_note(gw_ratelog *rl, const char *detail);

/**
 * gw_server is the running gateway. Read-only after start except the
 * atomic counters.
 */
struct gw_server {
	gw_config      cfg;
	cm_rpc_client *auth;
	cm_rpc_client *threads;
	int            port;
	int            lsock; // listening socket
	int            nloops;
	gw_loop      **loops;
	gw_iptab      *ips;
	atomic_int     active;      // requests between gw_job_new and free
	atomic_int     suspended;   // requests in the upstream chain right now
	atomic_int     stopping;    // set by gw_server_stop: no new chains
	atomic_llong   mem_used;    // bytes charged to cfg.memory_budget
	gw_ratelog     log_aborted; // clients that went away mid-request
	gw_ratelog     log_timeouts; // header/body/send deadlines that hit
	gw_ratelog     log_refused;  // connections refused or evicted
	gw_ops        *ops;          // ops.c state; NULL before gw_ops_start
	gw_authcache  *acache;       // NULL = GATEWAY_AUTH_CACHE_TTL 0
};

/**
 * gw_mem_take() charges n bytes to the server's memory budget. Returns 0,
 * or -1 (nothing charged) when that would pass cfg.memory_budget.
 * gw_mem_give() returns n bytes. Thread-safe.
 */
int  gw_mem_take(gw_server *srv, size_t n);
void gw_mem_give(gw_server *srv, size_t n);

/** Where a request is in its life (gw_job.state). */
typedef enum gw_job_state {
	GW_JOB_BODY = 0, // collecting (or discarding) the request body
	GW_JOB_AUTH,     // upstream chain: Authenticate in flight
	GW_JOB_THREADS,  // upstream chain: the thread-service call in flight
	GW_JOB_READY,    // resp is final
} gw_job_state;

/**
 * gw_job is one HTTP request: created by the connection layer when the
 * request head is complete, freed after the response was sent (or the
 * connection died). Between gw_job_dispatch() starting the chain and
 * gw_job_done() only the upstream chain (nng threads) touches it; before
 * and after, only the connection's loop thread does, so no lock is
 * needed (the hand-over goes through the loop's locked ready queue).
 */
typedef struct gw_job {
	gw_server      *srv;
	gw_conn        *conn;
	gw_job_state    state;
	int64_t         t0_us;
	char            rid[CM_RID_MAX + 1];
	char            method[GW_H1_METHOD_MAX];
	gw_match_result mres;
	gw_match        match;
	char           *query;       // owned copy of the query string
	int             early;       // resp decided before the body
	int             over_cap;    // body exceeded max_body
	int             refuse_body; // answer before reading the body, close
	size_t          discarded;   // body bytes read and dropped
	int64_t         declared;    // Content-Length, -1 when none
	char           *body;        // new; body_len bytes (+NUL)
	size_t          body_len;
	size_t          body_cap;
	size_t          mem;      // bytes charged to the memory budget
	int             nauth;    // Authorization values seen
	int             auth_bad; // too many / too long
	char           *auth[GW_AUTH_HEADERS_MAX];
	char            origin[GW_ORIGIN_MAX];
	char            acrh[GW_ACRH_MAX];
	int             prefer_minimal;
	gw_request      req;
	cm_err          verr; // input validation result
	char            vdetail[GW_DETAIL_MAX];
	char            identity[GW_IDENTITY_MAX];
	unsigned char   akey[GW_AUTHCACHE_KEY_LEN]; // identity cache key
	int             akey_set;                   // akey computed
	gw_response     resp;
	// ops.c: the access line and the upstream metrics.
	char           path[GW_LOG_PATH_MAX]; // request path, no query
	char           traceparent[CM_TRACEPARENT_LEN + 1]; // "" = none
	int64_t        up_t0_us; // start of the upstream call in flight
	int            up_which; // gw_upstream of that call
	cm_rpc_done_fn up_done;  // its completion
} gw_job;

/**
 * gw_job_new() makes the job for a complete request head h (borrowed;
 * everything needed later is copied): reads the headers the gateway
 * uses, routes, and decides the early answers (404, 405, 414, meta
 * routes, preflight, a declared body far over the cap). Never NULL.
 * Loop thread.
 */
gw_job *gw_job_new(gw_server *srv, gw_conn *conn, const gw_h1_head *h);

/**
 * gw_job_new_error() makes a job that answers status with {"detail":
 * detail} (a request refused before it could be parsed: 400, 408, 431,
 * 501, 505...). Loop thread.
 */
gw_job *gw_job_new_error(
    gw_server *srv, gw_conn *conn, unsigned status, const char *detail);

/**
 * gw_job_fail() replaces job's answer with status + {"detail": detail}
 * (a body that turned out malformed). Loop thread.
 */
void gw_job_fail(gw_job *job, unsigned status, const char *detail);

/**
 * gw_job_body() takes n bytes of the request body: stored up to max_body
 * and within the memory budget, else dropped. Returns 0 to go on, or -1
 * when reading must stop (an undeclared body far over the cap, or the
 * memory budget is exhausted): the job's answer is then set (413 / 503)
 * and the connection must close after it. Loop thread.
 */
int gw_job_body(gw_job *job, const char *data, size_t n);

/**
 * gw_job_dispatch() is called once the body is complete. Returns 1 when
 * the answer is ready now (errors, meta routes, stopping); or 0 when the
 * upstream chain was started: gw_job_done() will be called exactly once,
 * from any thread, possibly before this returns. Loop thread.
 */
int gw_job_dispatch(gw_job *job);

/**
 * gw_job_done() marks job's response final and hands the job back to its
 * connection's loop (gw_conn_resume). Called exactly once per started
 * chain, from the upstream chain (any thread); the caller must not touch
 * the job afterwards.
 */
void gw_job_done(gw_job *job);

/**
 * gw_job_head() renders the status line and header fields of job's
 * answer (new string, *len bytes): Date, Content-Length (none for 204),
 * Content-Type, x-request-id, CORS, the answer's extra headers, and
 * Connection: close when close is set. Loop thread.
 */
char *gw_job_head(gw_job *job, int close, size_t *len);

/**
 * gw_job_free() logs the request (when an answer was sent: sent = 1),
 * returns its memory budget and frees it. NULL allowed. Loop thread.
 */
void gw_job_free(gw_job *job, int sent);

/**
 * gw_conn_resume() hands a connection whose job is done back to its loop,
 * which then sends the answer. Any thread.
 */
void gw_conn_resume(gw_conn *c);

/**
 * gw_upstream_start() runs the chain for a dispatched job: Authenticate,
 * gw_authorize(), the route's rpc, render. Exactly once it stores the
 * response in the job and calls gw_job_done(). Called on the loop
 * thread; never blocks.
 */
void gw_upstream_start(gw_job *job);

/**
 * gw_upstream_idempotent() says whether req's thread-service call may be
 * re-sent to another replica after it may already have reached one (the
 * per-route table in upstream.c). For a create without a thread_id it
 * first picks the id (a new UUIDv7 in req->thread_id) and asks for
 * if_exists=do_nothing, which makes the create idempotent. Call it once
 * per request, after gw_request_build() succeeded and before sending.
 */
int gw_upstream_idempotent(gw_request *req);

/**
 * gw_auth_affinity() is the replica affinity key of job's Authenticate
 * call: cm_rpc_key() over its Authorization values (0 when it has none).
 */
uint64_t gw_auth_affinity(const gw_job *job);

// ---------------------------------------------------------------------
// ops.c: readiness, metrics, access line
// ---------------------------------------------------------------------

/** The upstream services, for metrics and readiness. */
typedef enum gw_upstream {
	GW_UP_AUTH = 0,
	GW_UP_THREADS,
	GW_UP_COUNT_
} gw_upstream;

// How long one readiness probe (a Health rpc) may take, ms.
#define GW_READY_PROBE_TIMEOUT_MS 500
// Health calls per upstream and probe round before it counts as missing:
// with several replicas behind one URL, one call may reach a bad one.
#define GW_READY_PROBE_TRIES 2
// Default time between probe rounds (GATEWAY_READY_INTERVAL_MS), ms.
#define GW_READY_INTERVAL_DEFAULT_MS 1000

/**
 * gw_ops_start() registers the gateway's metrics, starts the METRICS_ADDR
 * listener (cm_metrics_serve_env()) and the readiness prober: a thread
 * with its own rpc clients that calls Health on each upstream every
 * cfg.ready_interval_ms. Until its first round completes /ready is 503.
 * Returns CM_OK (srv->ops set), or what cm_metrics_serve_env() returns.
 * Call from gw_server_start() before the HTTP daemon starts.
 */
cm_err gw_ops_start(gw_server *srv);

/**
 * gw_ops_stop() stops the prober and the metrics listener and frees
 * srv->ops (NULL allowed). Call once no request can run any more (after
 * the connection layer stops).
 */
void gw_ops_stop(gw_server *srv);

/**
 * gw_ops_stop_prober() stops the Health prober (it uses the server's rpc
 * clients): call before closing them. NULL ops allowed; idempotent.
 */
void gw_ops_stop_prober(gw_server *srv);

/**
 * gw_ops_drain() makes /ready answer 503 ("shutting down") from now on,
 * so a load balancer stops sending traffic before the gateway stops
 * accepting. Thread-safe; main() calls it on SIGTERM.
 */
void gw_ops_drain(gw_server *srv);

/**
 * gw_ops_ready() is 1 while every upstream answered Health in the last
 * probe round and the gateway is not draining.
 */
int gw_ops_ready(gw_server *srv);

/**
 * gw_ops_request_begin() counts a new request in flight and keeps its
 * path (without the query) for the access line. Loop thread, from
 * job_new().
 */
void gw_ops_request_begin(gw_job *job, const char *url);

/**
 * gw_ops_request_end() records the finished request (requests by route,
 * method, status; duration) and writes the access line: method, path,
 * status, duration, owner or "-", rid, trace id. A request that ended
 * before its response was sent (client gone) is logged at debug. Loop
 * thread, from the request-completed callback.
 */
void gw_ops_request_end(gw_job *job, int sent);

/**
 * gw_ops_header() takes the request headers ops.c reads (traceparent).
 * Called from http.c's header callback for every header.
 */
void gw_ops_header(gw_job *job, const char *key, const char *value);

/**
 * gw_ops_meta_response() answers an unauthenticated route: /ready and
 * /metrics here (/metrics only with GATEWAY_PUBLIC_METRICS=1, else 404),
 * the rest through gw_meta_response(). Thread-safe.
 */
void gw_ops_meta_response(gw_server *srv, gw_route_id id, gw_response *r);

/**
 * gw_ops_call() is the one way the chain calls an upstream: it sends
 * method(req) to which's client with the step's deadline, the job's rid
 * and traceparent, and how's idempotent and affinity (its other fields
 * are ignored), records the outcome (ok, error, timeout, unavailable)
 * and latency, then calls done(job, ...). Same contract as
 * cm_rpc_call_start(): CM_OK when done will run.
 */
cm_err gw_ops_call(gw_job *job, gw_upstream which, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *reply_desc,
    const cm_rpc_call_opts *how, cm_rpc_done_fn done);

/**
 * gw_ops_on_connection() keeps the open-connections gauge: delta is +1
 * when the connection layer accepts a connection, -1 when it closes one.
 * Any thread.
 */
void gw_ops_on_connection(gw_server *srv, int delta);

/**
 * gw_ops_auth_cache() counts a lookup in the gateway's identity cache:
 * hit 1 when it answered, 0 when the auth-service was asked. Any thread.
 */
void gw_ops_auth_cache(gw_server *srv, int hit);

/**
 * gw_ops_health_check_main() is threadgate-gateway --health-check: GET
 * /ready on the configured port (loopback when the host is a wildcard),
 * prints the answer, returns 0 for 200 and 1 otherwise.
 */
int gw_ops_health_check_main(const gw_config *cfg);

#endif // GW_GW_H
