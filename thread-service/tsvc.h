// SPDX-License-Identifier: MIT
//
// The thread-service's one internal header.
//
// The thread-service stores LangGraph threads and their checkpoints in
// sqlite3, one row set per owner, and serves proto/threads.proto's
// ThreadService over nng REQ/REP (common/rpc.h). It is split in three:
//
//   store.c        all SQL: schema, migrations, one connection per worker
//                  with every statement prepared once, one function per
//                  rpc taking the request message and returning the reply;
//                  validation of every request field happens here too, so
//                  the unit tests cover it without a socket;
//   json_filter.c  JSON containment (the search filters) and the SQL
//                  function tg_json_contains() that evaluates it in SQL;
//   server.c       the rpc handlers: thin adapters from the generated
//                  service to the store, plus the per-worker init/fini.
//
// main.c only reads configuration, opens the storage, starts the server
// and waits for SIGTERM/SIGINT.
//
// Isolation rule: every SQL statement that reads or writes threads or
// checkpoints constrains owner. The two documented exceptions are the
// "is this id taken by anyone" probe of CreateThread (it returns only
// whether the caller owns the row, never the row) and the TTL sweeper's
// scan for expired rows (a system task; it deletes through the same
// owner-constrained statements as DeleteThread).
#ifndef TSVC_H
// Threads that run writes (see server.c: writes may wait for sqlite's
// one write lock or a checkpoint fsync, so they stay off nng's callback
// threads). sqlite admits one writer at a time; a few threads let one wait
// on the lock while another finishes without queueing every write behind
// a busy one.
#define TSVC_WRITE_THREADS 4
#define TSVC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

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
// Default worker count (THREAD_WORKERS).
#define TSVC_WORKERS_DEFAULT 8
// Default seconds between TTL sweeps (THREAD_TTL_SWEEP_S); 0 disables.
#define TSVC_SWEEP_DEFAULT_S 60
// Largest sweep interval accepted: one day.
#define TSVC_SWEEP_MAX_S 86400

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

/**
 * tsvc_store is one sqlite connection with all its prepared statements.
 * It belongs to exactly one thread at a time (one per rpc worker, one for
 * the sweeper); it is never shared.
 */
typedef struct tsvc_store tsvc_store;

/**
 * tsvc_store_open() opens (creating if missing) the database file at
 * path, sets WAL mode, synchronous=NORMAL, foreign keys and the busy
 * timeout, creates or migrates the schema (PRAGMA user_version), registers
 * tg_json_contains() and prepares every statement.
 *
 * The directory of path must exist. Returns CM_OK and a new store in *out
 * (free with tsvc_store_close), CM_EINVAL when path is NULL or empty,
 * CM_EUNAVAIL when the file cannot be opened, is not a database, or has a
 * schema newer than this build understands. On error detail (if not NULL)
 * gets a reason of at most detail_len bytes. Any thread may call it; the
 * store then belongs to that thread.
 */
cm_err tsvc_store_open(
    const char *path, tsvc_store **out, char *detail, size_t detail_len);

/** tsvc_store_close() finalizes every statement and closes. NULL is OK. */
void tsvc_store_close(tsvc_store *st);

/**
 * tsvc_store_detail() returns the reason of the last failed call on st
 * (borrowed, valid until the next call). It is safe to send to the client:
 * it never names another owner's data or sqlite internals.
 */
const char *tsvc_store_detail(const tsvc_store *st);

// The rpc functions below share one contract:
//  - req is borrowed; it is never changed.
//  - On CM_OK *out gets a new heap message: free it with
//    protobuf_c_message_free_unpacked(&(*out)->base, NULL). *out is
//    written only on success.
//  - Errors common to all: CM_EPERM when req->owner is empty; CM_EINVAL
//    when a field is malformed (non-UUID id, JSON that is not the
//    required type, out-of-range number, unknown enum value), and
//    CM_ETOOBIG when a field is over its TSVC_* limit; CM_EUNAVAIL when
//    the database stayed locked past TSVC_BUSY_TIMEOUT_MS; CM_EINTERNAL
//    when sqlite failed otherwise. The reason is in tsvc_store_detail().
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
 * four sort columns both ways with thread_id as the tie-break; total is
 * the number of all matches.
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
 * tsvc_store_sweep() deletes up to TSVC_SWEEP_BATCH threads (and their
 * checkpoints) whose ttl_strategy is "delete" and whose updated_at +
 * ttl_minutes is at or before now_us. *deleted (may be NULL) gets the
 * number deleted. Returns CM_OK, CM_EUNAVAIL (locked) or CM_EINTERNAL.
 * Call from the thread that owns st (the sweeper).
 */
cm_err tsvc_store_sweep(tsvc_store *st, int64_t now_us, int64_t *deleted);

// ---------------------------------------------------------------------
// json_filter.c
// ---------------------------------------------------------------------

/**
 * tsvc_json_contains() is 1 when doc contains filter: for an object
 * filter, doc is an object holding every key of filter with a value that
 * contains the filter's value (recursively); for any other filter, doc
 * equals it (json_equal: arrays element-wise, numbers by type and value).
 * An empty object filter matches any doc, even NULL. Otherwise a NULL doc
 * matches nothing. Both are borrowed. Recursion is bounded by the depth of
 * filter (at most CM_JSON_MAX_DEPTH after cm_json_parse). Thread-safe.
 */
int tsvc_json_contains(const json_t *doc, const json_t *filter);

/**
 * tsvc_sql_register() registers the deterministic SQL function
 * tg_json_contains(doc TEXT, filter TEXT) on db: 1 when doc contains
 * filter, 0 when not or when doc is NULL or not JSON (a NULL doc matches
 * an empty-object filter), NULL when filter is NULL, and an SQL error when
 * filter is not JSON (the store validates filters before binding them, so
 * that cannot happen from a request). The parsed filter is cached per
 * statement execution with sqlite3_set_auxdata. Returns CM_OK or
 * CM_EINTERNAL. Call on the thread that owns db.
 */
cm_err tsvc_sql_register(sqlite3 *db);

// ---------------------------------------------------------------------
// server.c
// ---------------------------------------------------------------------

/**
 * tsvc_service() returns the ThreadService with this service's handlers
 * (a static object; borrowed). Thread-safe.
 */
ProtobufCService *tsvc_service(void);

/**
 * tsvc_worker_init() is the cm_rpc worker_init hook: arg is the database
 * path (const char *, borrowed for the server's lifetime). It opens a
 * tsvc_store for the worker (returned as the worker state). On failure
 * *err is set (see tsvc_store_open) and NULL returned. Called on the
 * worker's thread by cm_rpc_server_start.
 */
void *tsvc_worker_init(void *arg, int index, cm_err *err);

/** tsvc_worker_fini() closes the worker's store (cm_rpc worker_fini). */
void tsvc_worker_fini(void *arg, void *worker);

#endif // TSVC_H
