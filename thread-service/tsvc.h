// SPDX-License-Identifier: MIT
//
// The thread-service's one internal header.
//
// The thread-service stores LangGraph threads and their checkpoints, one
// row set per owner, and serves proto/threads.proto's ThreadService over
// nng REQ/REP (common/rpc.h). It is split along what each part does:
//
//   store.c        the threads API's semantics, backend-neutral: request
//                  validation, metadata merge rules, checkpoint chains,
//                  if_exists, copy, prune, ttl, reply budgets; one
//                  function per rpc taking the request message and
//                  returning the reply. Reaches the database only through
//                  a tsvc_backend (backend.h);
//   db_sqlite.c    the sqlite3 backend (the embedded default);
//   db_pg.c        the PostgreSQL backend (libpq);
//   json_filter.c  JSON containment with PostgreSQL `@>` semantics (the
//                  sqlite backend evaluates filters with it);
//   sweeper.c      the TTL sweeper thread;
//   server.c       one table-driven adapter from the generated service to
//                  the store functions, and the per-worker init/fini.
//
// main.c only reads configuration, opens the database, starts the server
// and the sweeper and waits for SIGTERM/SIGINT.
//
// Isolation rule: every statement that reads or writes threads or
// checkpoints constrains owner; the exceptions are listed in backend.h.
#ifndef TSVC_H
#define TSVC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"
#include "common/rpc.h"
#include "proto/threads.pb-c.h"

// ---------------------------------------------------------------------
// Limits. Each one bounds an input or a buffer; the comment says why.
// ---------------------------------------------------------------------

// Largest JSON text accepted in one request field (metadata, values,
// filters, supersteps). The gateway caps whole HTTP bodies at 1 MiB, so
// no legitimate field is larger.
#define TSVC_JSON_FIELD_MAX (1024u * 1024u)
// Largest JSON document stored in one column (values grow by merging).
// A reply must fit in one nng message (CM_RPC_MAX_MSG = 16 MiB) together
// with the rest of the thread, so one document may use half of it.
#define TSVC_JSON_STORED_MAX (CM_RPC_MAX_MSG / 2u)
// Most bytes of JSON text one search or history page may carry. The reply
// must fit in one nng message (CM_RPC_MAX_MSG); 64 KiB are left for ids,
// timestamps and protobuf framing. A larger page fails with CM_ETOOBIG
// (ask for a smaller limit) rather than being cut silently.
#define TSVC_REPLY_BUDGET (CM_RPC_MAX_MSG - 64u * 1024u)
// Longest owner identity, in bytes. OIDC `sub` is at most 255 ASCII
// characters (OpenID Connect Core 1.0 §2); 512 leaves room for
// provider-prefixed identities without letting one request bloat rows.
#define TSVC_OWNER_MAX 512
// Page size bounds for search and history (the LangGraph API's 1..1000).
#define TSVC_PAGE_MIN 1
#define TSVC_PAGE_MAX 1000
// Most ids in one search `ids` filter or one prune request. Same bound as
// a page: nobody can use more ids than one page shows.
#define TSVC_IDS_MAX 1000
// Longest as_node and checkpoint namespace, in bytes. Graph node names and
// namespaces ("parent:<uuid>|child:<uuid>") are short; 256 is generous.
#define TSVC_NAME_MAX 256
// Most supersteps in one CreateThread, and updates in one superstep or in
// one UpdateState array. Each becomes work inside one write transaction,
// so the bound keeps a single request from holding the writer long.
#define TSVC_SUPERSTEPS_MAX 100
#define TSVC_UPDATES_MAX    100
// Largest ttl_minutes accepted: one century. Larger values are a typo and
// would lose precision when turned into microseconds.
#define TSVC_TTL_MINUTES_MAX (100.0 * 365.0 * 24.0 * 60.0)
// How long a connection waits for sqlite's single writer lock before the
// request fails with CM_EUNAVAIL. Below the gateway's 5 s rpc deadline.
#define TSVC_BUSY_TIMEOUT_MS 4000
// Most expired threads deleted by one sweep transaction, so the sweeper
// never holds the writer lock for long; the rest go in the next sweep.
#define TSVC_SWEEP_BATCH 256
// Default seconds between TTL sweeps (THREAD_TTL_SWEEP_S); 0 disables.
#define TSVC_SWEEP_DEFAULT_S 60
// Largest sweep interval accepted: one day.
#define TSVC_SWEEP_MAX_S 86400
// Longest THREADS_DB value, in bytes (a path or a connection URL).
#define TSVC_DB_TARGET_MAX 4096
// Most JSON values (objects, arrays, strings, numbers...) one stored
// state may hold. Bytes alone do not bound memory: a megabyte of "[1,1,
// 1,...]" parses into half a million nodes of ~50 bytes each, so every
// reader that parses the document (this service merging states, the
// gateway rendering them) would hold ~25 times its size. 262,144 nodes
// parse into ~15 MiB; real LangGraph states (messages of text) have far
// fewer nodes than bytes.
#define TSVC_JSON_NODES_MAX (256u * 1024u)

// Quotas per owner (THREAD_MAX_*; 0 = unlimited). They bound what one
// identity can make the database hold: each state update stores a full
// copy of the values as a checkpoint, so a few bytes of requests can
// store megabytes. Writes that would go past a quota fail with CM_EPERM
// (403) and change nothing; deletes and prunes always work.
//  - threads an owner may keep;
#define TSVC_MAX_THREADS_DEFAULT 1000000
//  - checkpoints one thread may hold (prune keep_latest or delete to go
//    on);
#define TSVC_MAX_CHECKPOINTS_DEFAULT 10000
//  - bytes of JSON one owner's threads and checkpoints may hold.
#define TSVC_MAX_BYTES_DEFAULT (1024LL * 1024 * 1024)
// sqlite: the write-ahead log is truncated back to this size after each
// checkpoint (PRAGMA journal_size_limit), so a burst of large writes
// does not leave a large -wal file behind.
#define TSVC_WAL_LIMIT_BYTES 67108864 // 64 MiB (a literal: it goes into SQL)

// Worker lanes. Each rpc runs on the lane of its kind, on threads of its
// own (never on nng's callback threads), each thread holding one database
// connection: the connections of a process are the sum of the three plus
// one for the sweeper. A slow search can then only delay other searches:
// point reads and writes have threads of their own.
//  - point reads (GetThread, GetState): short, by primary key;
#define TSVC_READ_WORKERS_DEFAULT 4
//  - scans (SearchThreads, CountThreads, GetHistory): may read many rows;
//    their threads run at a lower priority (nice + TSVC_SCAN_NICE), so
//    while scans keep every core busy, the short calls of the other lanes
//    (and the gateway and auth-service on the same host) still get the
//    CPU at once: a point read is not slowed by a full scan.
#define TSVC_SCAN_WORKERS_DEFAULT 4
#define TSVC_SCAN_NICE            10
//  - writes: sqlite admits one writer at a time, so a few threads let one
//    wait on the lock while another finishes; PostgreSQL writers only
//    serialize per thread row.
#define TSVC_WRITE_WORKERS_DEFAULT 4
// Most threads one lane may have (THREAD_*_WORKERS).
#define TSVC_LANE_WORKERS_MAX 64
// Deadline of the Health check's ping: a database slower than this to
// answer `SELECT 1` is not serving.
#define TSVC_HEALTH_PING_MS 800
// Requests one lane may hold queued beyond its running ones; more are
// answered CM_EUNAVAIL (503, retry) at once instead of waiting for their
// deadline in a queue that cannot drain in time.
#define TSVC_LANE_QUEUE_PER_WORKER 16
// PostgreSQL: default statement_timeout backstop (THREADS_DB_STATEMENT_
// TIMEOUT_MS); every query is also cancelled at its request's deadline.
#define TSVC_STATEMENT_TIMEOUT_DEFAULT_MS 10000
// PostgreSQL: default connect timeout (THREADS_DB_CONNECT_TIMEOUT_MS).
#define TSVC_CONNECT_TIMEOUT_DEFAULT_MS 3000

// Short names for the generated message types.
typedef Threadgate__Threads__V1__Thread               tsvc_thread;
typedef Threadgate__Threads__V1__ThreadRef            tsvc_thread_ref;
typedef Threadgate__Threads__V1__CreateThreadRequest  tsvc_create_req;
typedef Threadgate__Threads__V1__UpdateThreadRequest  tsvc_update_req;
typedef Threadgate__Threads__V1__SearchThreadsRequest tsvc_search_req;
typedef Threadgate__Threads__V1__SearchThreadsReply   tsvc_search_reply;
typedef Threadgate__Threads__V1__CountThreadsRequest  tsvc_count_req;
typedef Threadgate__Threads__V1__CountReply           tsvc_count_reply;
typedef Threadgate__Threads__V1__PruneThreadsRequest  tsvc_prune_req;
typedef Threadgate__Threads__V1__PruneThreadsReply    tsvc_prune_reply;
typedef Threadgate__Threads__V1__Checkpoint           tsvc_checkpoint;
typedef Threadgate__Threads__V1__GetStateRequest      tsvc_get_state_req;
typedef Threadgate__Threads__V1__StateReply           tsvc_state_reply;
typedef Threadgate__Threads__V1__UpdateStateRequest   tsvc_update_state_req;
typedef Threadgate__Threads__V1__PatchStateRequest    tsvc_patch_state_req;
typedef Threadgate__Threads__V1__GetHistoryRequest    tsvc_history_req;
typedef Threadgate__Threads__V1__HistoryReply         tsvc_history_reply;

// ---------------------------------------------------------------------
// store.c
// ---------------------------------------------------------------------

/** Options of a database (main.c fills them from the environment). */
typedef struct tsvc_db_options {
	// sqlite: how long a writer waits for the write lock.
	int busy_timeout_ms;
	// PostgreSQL: server-side statement_timeout of every connection, a
	// backstop behind the per-request deadline; 0 = none.
	int statement_timeout_ms;
	// PostgreSQL: connect timeout of each (re)connection.
	int connect_timeout_ms;
	// PostgreSQL: how many of the owner's rows a filtered search walks
	// in the page's order before it turns to the index (db_pg.c,
	// "Search plans"); 0 = the default. Results never depend on it;
	// tests set it small to reach both plans with few rows.
	int64_t search_window;
	// Quotas per owner (0 = unlimited), see TSVC_MAX_*_DEFAULT.
	int64_t max_threads;
	int64_t max_checkpoints;
	int64_t max_bytes;
} tsvc_db_options;

/** tsvc_db_options_default() gives the documented defaults. */
tsvc_db_options tsvc_db_options_default(void);

/**
 * tsvc_db is an open database: the backend THREADS_DB selects and what its
 * connections share. Thread-safe; connections (tsvc_store) come from it.
 */
typedef struct tsvc_db tsvc_db;

/**
 * tsvc_db_open() selects the backend from target and opens it, applying
 * the schema migrations (safe when several replicas start at once):
 *   - "postgres://...", "postgresql://..." or a libpq keyword string
 *     ("host=... dbname=...": starts with a keyword and '=') ->
 *     PostgreSQL;
 *   - "sqlite:///abs/path", "sqlite://rel/path", "sqlite:path" or any
 *     other text -> a sqlite file path (its directory must exist).
 * opt may be NULL (defaults). Returns CM_OK and *out (free with
 * tsvc_db_close); CM_EINVAL for an empty or over-long target;
 * CM_EUNAVAIL when the database cannot be opened or reached, is not ours,
 * or has a schema newer than this build. detail (may be NULL) gets the
 * reason, never a password. Call from any thread.
 */
cm_err tsvc_db_open(const char *target, const tsvc_db_options *opt,
    tsvc_db **out, char *detail, size_t detail_len);

/** tsvc_db_close() closes db; every store must be closed first. NULL OK. */
void tsvc_db_close(tsvc_db *db);

/** tsvc_db_backend_name() is "sqlite" or "postgres" (static string). */
const char *tsvc_db_backend_name(const tsvc_db *db);

/**
 * tsvc_store is one connection of a database with the state of the
 * request running on it. It belongs to exactly one thread at a time (one
 * per worker, one for the sweeper); it is never shared.
 */
typedef struct tsvc_store tsvc_store;

/**
 * tsvc_store_open() opens a new connection of db. Returns CM_OK and *out
 * (free with tsvc_store_close), CM_EUNAVAIL when the database cannot be
 * reached (detail gets why). Any thread may call it; the store then
 * belongs to that thread.
 */
cm_err tsvc_store_open(
    tsvc_db *db, tsvc_store **out, char *detail, size_t detail_len);

/** tsvc_store_close() closes the connection. NULL is OK. */
void tsvc_store_close(tsvc_store *st);

/**
 * tsvc_store_set_deadline() sets the absolute deadline (Unix ms, 0 =
 * none) of the calls that follow on st: work still running when it passes
 * is abandoned and the call fails with CM_ETIMEDOUT.
 */
void tsvc_store_set_deadline(tsvc_store *st, int64_t deadline_unix_ms);

/**
 * tsvc_store_detail() returns the reason of the last failed call on st
 * (borrowed, valid until the next call). It is safe to send to the client:
 * it never names another owner's data or database internals.
 */
const char *tsvc_store_detail(const tsvc_store *st);

/**
 * tsvc_store_ping() is a round trip to the database (Health). CM_OK or
 * CM_EUNAVAIL / CM_ETIMEDOUT.
 */
cm_err tsvc_store_ping(tsvc_store *st);

// The rpc functions below share one contract:
//  - req is borrowed; it is never changed.
//  - On CM_OK *out gets a new heap message: free it with
//    protobuf_c_message_free_unpacked(&(*out)->base, NULL). *out is
//    written only on success.
//  - Errors common to all: CM_EPERM when req->owner is empty; CM_EINVAL
//    when a field is malformed (non-UUID id, JSON that is not the
//    required type, out-of-range number, unknown enum value), and
//    CM_ETOOBIG when a field is over its TSVC_* limit; CM_EUNAVAIL when
//    the database is unreachable or stayed locked past its busy timeout;
//    CM_ETIMEDOUT when the deadline (tsvc_store_set_deadline) passed;
//    CM_EINTERNAL when the database failed otherwise. The reason is in
//    tsvc_store_detail().
//  - Only the owner's rows are read or changed. A thread of another owner
//    behaves exactly like a missing one, with the same detail text.
//  - Call only from the thread that owns st.

/**
 * tsvc_store_create_thread() creates a thread (CreateThread): "" id gives
 * a UUIDv7, metadata.owner is stamped, status "idle", config and
 * interrupts "{}", ttl stored, supersteps applied as checkpoints, all in
 * one transaction. CM_EEXIST when the id is taken and if_exists is RAISE,
 * or DO_NOTHING and the caller is not the owner; with DO_NOTHING and the
 * caller's own thread, the existing thread is returned unchanged.
 */
cm_err tsvc_store_create_thread(
    tsvc_store *st, const tsvc_create_req *req, tsvc_thread **out);

/** tsvc_store_get_thread(): GetThread. CM_ENOENT when missing/foreign. */
cm_err tsvc_store_get_thread(
    tsvc_store *st, const tsvc_thread_ref *req, tsvc_thread **out);

/**
 * tsvc_store_update_thread(): UpdateThread. Shallow-merges metadata,
 * re-stamps owner, refreshes updated_at (strictly increasing), and sets
 * the ttl when has_ttl. CM_ENOENT when missing/foreign.
 */
cm_err tsvc_store_update_thread(
    tsvc_store *st, const tsvc_update_req *req, tsvc_thread **out);

/**
 * tsvc_store_delete_thread(): DeleteThread, with its checkpoints, in one
 * transaction. No reply message. CM_ENOENT when missing/foreign.
 */
cm_err tsvc_store_delete_thread(tsvc_store *st, const tsvc_thread_ref *req);

/**
 * tsvc_store_search_threads(): SearchThreads. Containment filters on
 * metadata and values, ids, status, limit 1..TSVC_PAGE_MAX, offset >= 0,
 * four sort columns both ways with thread_id as the tie-break. total is
 * offset + page length, plus 1 when more matches follow (the reference
 * server's X-Pagination-Total): finding it costs one extra row, never a
 * count of every match. CountThreads gives the exact count.
 */
cm_err tsvc_store_search_threads(
    tsvc_store *st, const tsvc_search_req *req, tsvc_search_reply **out);

/** tsvc_store_count_threads(): CountThreads with the search filters. */
cm_err tsvc_store_count_threads(
    tsvc_store *st, const tsvc_count_req *req, tsvc_count_reply **out);

/**
 * tsvc_store_copy_thread(): CopyThread. New UUIDv7, same owner, metadata,
 * values, config and every checkpoint copied. CM_ECONFLICT when the source
 * is missing or foreign.
 */
cm_err tsvc_store_copy_thread(
    tsvc_store *st, const tsvc_thread_ref *req, tsvc_thread **out);

/**
 * tsvc_store_prune_threads(): PruneThreads. strategy "" or "delete"
 * deletes, "keep_latest" keeps only the latest checkpoint per namespace.
 * Foreign and missing ids are skipped; duplicates count once.
 */
cm_err tsvc_store_prune_threads(
    tsvc_store *st, const tsvc_prune_req *req, tsvc_prune_reply **out);

/**
 * tsvc_store_get_state(): GetState. has_checkpoint false when the thread
 * has no checkpoint in the namespace; CM_ENOENT when the thread or the
 * named checkpoint is missing/foreign.
 */
cm_err tsvc_store_get_state(
    tsvc_store *st, const tsvc_get_state_req *req, tsvc_state_reply **out);

/**
 * tsvc_store_update_state(): UpdateState. New checkpoint (UUIDv7) whose
 * parent is the named checkpoint or the latest; values = parent values
 * shallow-merged with the update (object; array of objects in order; null
 * or "" = unchanged); metadata {"source":"update","step":n,"writes":
 * {as_node: update},"parents":{}} plus "as_node" when given (an empty
 * as_node gives an empty writes object); next []. In the root namespace
 * it also sets the thread's values and updated_at. CM_ENOENT when the
 * thread or named parent is missing/foreign; CM_ETOOBIG when the merged
 * values exceed TSVC_JSON_STORED_MAX.
 */
cm_err tsvc_store_update_state(
    tsvc_store *st, const tsvc_update_state_req *req, tsvc_checkpoint **out);

/**
 * tsvc_store_patch_state(): PatchState, shallow-merging metadata into the
 * named (or latest) root-namespace checkpoint. No reply message.
 * CM_ENOENT when the thread or checkpoint is missing/foreign, or the
 * thread has no checkpoint.
 */
cm_err tsvc_store_patch_state(tsvc_store *st, const tsvc_patch_state_req *req);

/**
 * tsvc_store_get_history(): GetHistory, newest first: at most limit
 * (1..TSVC_PAGE_MAX), strictly older than before_checkpoint_id, starting
 * at checkpoint_id (inclusive), metadata containment filter. An unknown
 * before/checkpoint id gives an empty list. CM_ENOENT when the thread is
 * missing/foreign.
 */
cm_err tsvc_store_get_history(
    tsvc_store *st, const tsvc_history_req *req, tsvc_history_reply **out);

/**
 * tsvc_store_sweep() deletes, in batches of at most TSVC_SWEEP_BATCH (one
 * transaction each, so writers get the lock between), every thread of any
 * owner whose ttl has expired at now_us: ttl_strategy "delete" and
 * updated_at + ttl_minutes <= now_us. *deleted (may be NULL) gets how
 * many. Safe to run in several replicas at once. Returns CM_OK or the
 * backend's error (the batches done stay done).
 */
cm_err tsvc_store_sweep(tsvc_store *st, int64_t now_us, int64_t *deleted);

/**
 * tsvc_store_maintain() runs the backend's upkeep: gives the space of
 * deleted rows back to the file system and truncates the journal
 * (sqlite); nothing to do for PostgreSQL (autovacuum). CM_OK, or
 * CM_EUNAVAIL when the database was busy (try again later).
 */
cm_err tsvc_store_maintain(tsvc_store *st);

// ---------------------------------------------------------------------
// sweeper.c
// ---------------------------------------------------------------------

/** tsvc_sweeper is the TTL sweeper thread with its own connection. */
typedef struct tsvc_sweeper tsvc_sweeper;

/**
 * tsvc_sweeper_start() opens a connection of db and starts a thread that
 * runs tsvc_store_sweep() at once and then every interval_s seconds
 * (1..TSVC_SWEEP_MAX_S), logging what it deleted and any failure (a
 * failed sweep is retried at the next interval). Returns CM_OK and *out,
 * CM_EINVAL for a bad interval, or the error of tsvc_store_open() /
 * CM_EINTERNAL when the thread cannot start. Call from the main thread.
 */
cm_err tsvc_sweeper_start(tsvc_db *db, int64_t interval_s, tsvc_sweeper **out);

/**
 * tsvc_sweeper_stop() wakes the thread, waits for the sweep in progress
 * to end, closes its connection and frees sw. NULL is OK.
 */
void tsvc_sweeper_stop(tsvc_sweeper *sw);

/**
 * tsvc_sweeper_runs() is how many sweeps have completed (for tests and
 * metrics). Thread-safe.
 */
uint64_t tsvc_sweeper_runs(const tsvc_sweeper *sw);

// ---------------------------------------------------------------------
// json_filter.c
// ---------------------------------------------------------------------

/**
 * tsvc_json_contains() is 1 when doc contains filter, with PostgreSQL's
 * jsonb containment rules (`doc @> filter`), so every backend answers a
 * filter alike: an object contains an object when every key of the filter
 * is in it with a value that contains the filter's value; an array
 * contains an array when every element of the filter is contained in
 * some element of it (order and duplicates do not matter; a scalar only
 * matches an equal scalar); scalars contain equal scalars (numbers by
 * value: 1 equals 1.0; strings byte for byte); values of different types
 * never contain each other. At the top level only, an array also
 * contains a scalar that is one of its elements. NULL doc or filter
 * gives 0. Both are borrowed. Recursion is bounded by the depth of filter
 * (at most CM_JSON_MAX_DEPTH after cm_json_parse). Thread-safe.
 */
int tsvc_json_contains(const json_t *doc, const json_t *filter);

// ---------------------------------------------------------------------
// server.c
// ---------------------------------------------------------------------

/** The worker lanes (see TSVC_*_WORKERS_DEFAULT). */
typedef enum tsvc_lane {
	TSVC_LANE_READ  = 0,
	TSVC_LANE_SCAN  = 1,
	TSVC_LANE_WRITE = 2,
	TSVC_NLANES     = 3,
} tsvc_lane;

/**
 * tsvc_service() returns the ThreadService (a static object; borrowed):
 * its invoke() is one table-driven adapter that hands each call to its
 * lane and, there, runs the store function of the same name on the
 * worker's store with the call's deadline. Thread-safe.
 */
ProtobufCService *tsvc_service(void);

/**
 * What tsvc_worker_init() and tsvc_health() need: the database, the
 * context count, and the health check's own connection (made by the first
 * check; NULL before).
 */
typedef struct tsvc_workers {
	tsvc_db    *db;
	int         contexts; // cm_rpc_server_config.nworkers
	tsvc_store *health;   // used by tsvc_health() only
} tsvc_workers;

/**
 * tsvc_worker_init() is the cm_rpc worker_init hook: arg is a
 * tsvc_workers (borrowed for the server's lifetime). Contexts (index <
 * contexts) get no state: they only hand calls to lanes. Each lane thread
 * gets a tsvc_store of its own (its database connection). On failure
 * *err is set (see tsvc_store_open) and NULL returned.
 */
void *tsvc_worker_init(void *arg, int index, cm_err *err);

/** tsvc_worker_fini() closes the worker's store (cm_rpc worker_fini). */
void tsvc_worker_fini(void *arg, void *worker);

/**
 * tsvc_health() is the cm_rpc health hook (arg: the tsvc_workers): 1
 * (serving) when the database answers a ping within TSVC_HEALTH_PING_MS
 * on the check's own connection, else 0 with a client-safe detail. Runs
 * on the rpc layer's health thread, never on a request path.
 */
int tsvc_health(void *arg, char *detail, size_t n);

/** tsvc_health_fini() closes the health check's connection. */
void tsvc_health_fini(tsvc_workers *w);

/**
 * tsvc_metrics_init() registers the thread-service's own metrics (the
 * rpc layer counts requests and latency by method): storage errors by
 * kind, and the worker lanes of srv (threads busy = connections in use,
 * calls waiting, threads) read at scrape time. Call once after the
 * server started; tsvc_metrics_fini() before it stops.
 */
void tsvc_metrics_init(cm_rpc_server *srv);
void tsvc_metrics_fini(cm_rpc_server *srv);

#endif // TSVC_H
