// SPDX-License-Identifier: MIT
//
// The storage backend contract of the thread-service.
//
// store.c holds everything the threads API means: request validation, the
// merge rules, checkpoint chains, if_exists, copy, prune, the TTL rule and
// the reply budgets. It reaches the database only through one table of
// function pointers, tsvc_backend (like nng's transport ops or h2o's
// handler callbacks). Each backend is one file that fills one table:
//
//   db_sqlite.c   sqlite3, the embedded default (a file path or
//                 sqlite:///path)
//   db_pg.c       PostgreSQL through libpq (postgres://, postgresql://, or
//                 a libpq keyword string)
//
// A new backend is one new file plus one line in store.c's table of
// backends. It must pass thread-service/store_test.c and contract_test.c,
// which run against every backend.
//
// Rules every backend keeps:
//  - Every statement that reads or writes threads or checkpoints is
//    constrained by owner, except id_owner() (decides 409 for an id taken
//    by anyone; it returns only whether the caller owns it) and sweep() (a
//    system task over every owner). A row of another owner is never
//    returned, changed or counted.
//  - JSON texts handed in are valid compact JSON (the core validated
//    them); JSON texts handed out are what was stored.
//  - Filters are containment matches with PostgreSQL jsonb `@>` semantics
//    (tsvc_json_contains() is the reference); a backend that cannot serve
//    a filter with an index still answers it exactly.
//  - Every call honours st->deadline_ms (absolute Unix ms, 0 = none):
//    work still running when it passes is abandoned (sqlite: progress
//    handler; PostgreSQL: cancel) and the call fails with CM_ETIMEDOUT.
//  - Errors: CM_EUNAVAIL when the database is unreachable, locked past its
//    busy timeout, or restarting (retry later); CM_ETIMEDOUT when the
//    deadline passed; CM_EINTERNAL otherwise. A backend reports with
//    tsvc_store_fail() / tsvc_store_db_fail() so the detail is set; the
//    detail sent to clients never carries SQL text or another owner's data
//    (the database's own message goes to the log only).
//  - A connection (tsvc_conn) is used by one thread at a time.
//  - Concurrency with several processes on one database (replicas): the
//    core relies on (1) thread_insert failing with CM_EEXIST when the id is
//    taken, even by a concurrent transaction; (2) thread_get(lock = 1)
//    holding the thread's row until commit/rollback, so read-modify-write
//    sequences on one thread (metadata merge, state update, patch state)
//    are serialized across processes; (3) sweep() never deleting a row
//    twice or failing because another process deletes the same rows.
#ifndef TSVC_BACKEND_H
#define TSVC_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"
#include "common/rpc.h"
#include "thread-service/tsvc.h"

// One open connection of a backend (backend-defined).
typedef struct tsvc_conn tsvc_conn;

/**
 * tsvc_store is one connection plus the state of the request running on
 * it. Backends read deadline_ms and conn and report through
 * tsvc_store_fail(); everything else is the core's.
 */
struct tsvc_store {
	tsvc_db   *db;
	tsvc_conn *conn;
	int64_t    deadline_ms; // absolute Unix ms; 0 = none
	int        in_tx;       // core: a transaction is open
	char       detail[CM_RPC_DETAIL_MAX];
};

/**
 * tsvc_filter is a validated search/count filter. Object filters are
 * non-empty (the core drops `{}`, which matches everything): the compact
 * text to bind and the parsed document (borrowed) for backends that plan
 * with it (the sqlite metadata index). ids are canonical lower-case UUIDs.
 * NULL / 0 disables a part.
 */
typedef struct tsvc_filter {
	const char        *metadata;
	const json_t      *metadata_doc;
	const char        *values;
	const json_t      *values_doc;
	const char *const *ids;
	size_t             n_ids;
	const char        *status;
} tsvc_filter;

/** Sort columns of a search (the proto's SortBy values). */
typedef enum tsvc_sort {
	TSVC_SORT_CREATED_AT = 0,
	TSVC_SORT_UPDATED_AT = 1,
	TSVC_SORT_THREAD_ID  = 2,
	TSVC_SORT_STATUS     = 3,
} tsvc_sort;

/**
 * tsvc_page is the window of a search: rows offset..offset+limit-1 of the
 * matches in (sort, direction) order, thread_id ascending/descending with
 * the direction as the tie-break.
 */
typedef struct tsvc_page {
	tsvc_sort sort;
	int       ascending;
	int64_t   limit; // > 0
	int64_t   offset;
} tsvc_page;

/** tsvc_history_query is one GetHistory page (see tsvc_store_get_history). */
typedef struct tsvc_history_query {
	const char   *owner;
	const char   *thread_id;
	const char   *ns;
	const char   *before;       // exclusive bound, NULL = none
	const char   *start;        // inclusive bound, NULL = none
	const char   *metadata;     // containment filter text, NULL = none
	const json_t *metadata_doc; // its parsed form, NULL = none
	int64_t       limit;
} tsvc_history_query;

/**
 * Row sinks: the backend hands each row (a new message; stolen) to the
 * core in order. A sink returns CM_OK to go on, or an error (CM_ETOOBIG
 * when the reply budget is spent) which the backend returns at once after
 * cleaning up its statement.
 */
typedef cm_err (*tsvc_thread_sink)(void *arg, tsvc_thread *t);
typedef cm_err (*tsvc_checkpoint_sink)(void *arg, tsvc_checkpoint *c);

/** Transaction kinds for begin(). */
typedef enum tsvc_tx {
	TSVC_TX_READ  = 0, // several reads that should see one snapshot
	TSVC_TX_WRITE = 1, // reads and writes; writers serialize as needed
} tsvc_tx;

/** id_owner() answers. */
typedef enum tsvc_id_state {
	TSVC_ID_FREE  = 0, // no thread has this id
	TSVC_ID_MINE  = 1, // the caller owns it
	TSVC_ID_TAKEN = 2, // another owner has it
} tsvc_id_state;

/**
 * tsvc_backend is the table each backend fills. Every function but the
 * db_* ones takes the store whose connection it uses. Unless said
 * otherwise, a function returns CM_OK or one of the errors in the rules
 * above. Out-parameters are written only on CM_OK.
 */
typedef struct tsvc_backend {
	const char *name; // "sqlite", "postgres"

	// -- lifetime ----------------------------------------------------
	// target is what THREADS_DB named, with a scheme prefix already
	// removed for sqlite (a path) and kept for PostgreSQL (a URL or a
	// keyword string). db_open connects once, applies the schema
	// migrations (safe when several processes start at once) and keeps
	// whatever the connections share in *db. CM_EINVAL for an unusable
	// target, CM_EUNAVAIL when the database cannot be reached or has a
	// newer schema than this build knows; detail gets the reason.
	cm_err (*db_open)(const char *target, const tsvc_db_options *opt,
	    void **db, char *detail, size_t detail_len);
	void (*db_close)(void *db);
	// A new connection of db (one per worker). May be called from any
	// thread; the connection then belongs to the caller.
	cm_err (*conn_open)(
	    void *db, tsvc_conn **out, char *detail, size_t detail_len);
	void (*conn_close)(tsvc_conn *c);
	// A cheap round trip proving the database answers (Health).
	cm_err (*ping)(tsvc_store *st);

	// -- transactions ------------------------------------------------
	cm_err (*begin)(tsvc_store *st, tsvc_tx kind);
	cm_err (*commit)(tsvc_store *st);
	// Never fails from the caller's view (a failure is logged and the
	// connection is reset if needed).
	void (*rollback)(tsvc_store *st);

	// -- threads -----------------------------------------------------
	// Whether id is free, the caller's, or another owner's.
	cm_err (*id_owner)(tsvc_store *st, const char *owner, const char *id,
	    tsvc_id_state *state);
	// Inserts t (owner, thread_id, metadata_json, created_at_us =
	// updated_at_us, ttl_minutes, ttl_strategy; status "idle", config
	// and interrupts "{}", values NULL). CM_EEXIST when the id is taken,
	// also by a concurrent transaction.
	cm_err (*thread_insert)(tsvc_store *st, const tsvc_thread *t);
	// The owner's thread or *out = NULL. lock = 1 (inside a write
	// transaction) holds the row until the transaction ends.
	cm_err (*thread_get)(tsvc_store *st, const char *owner, const char *id,
	    int lock, tsvc_thread **out);
	// Whether the owner's thread exists, without reading its documents:
	// *created_us gets its created_at, or 0 when there is none. lock as
	// thread_get.
	cm_err (*thread_created)(tsvc_store *st, const char *owner,
	    const char *id, int lock, int64_t *created_us);
	// Sets metadata and ttl; updated_at = max(now_us, updated_at + 1).
	// *changed (may be NULL) is the number of rows changed (0 or 1).
	cm_err (*thread_update)(tsvc_store *st, const char *owner,
	    const char *id, const char *metadata_json, double ttl_minutes,
	    const char *ttl_strategy, int64_t now_us, int64_t *changed);
	// Sets values (JSON text); updated_at as thread_update.
	cm_err (*thread_set_values)(tsvc_store *st, const char *owner,
	    const char *id, const char *values_json, int64_t now_us);
	// Deletes the thread and its checkpoints; *deleted 0 or 1.
	cm_err (*thread_delete)(tsvc_store *st, const char *owner,
	    const char *id, int64_t *deleted);
	// Copies the thread (new id dst, created_at = updated_at = now_us,
	// everything else equal) and every checkpoint of it. *copied 0 when
	// src is missing or foreign.
	cm_err (*thread_copy)(tsvc_store *st, const char *owner,
	    const char *src, const char *dst, int64_t now_us, int64_t *copied);
	// Sends the page of matches to sink, in order.
	cm_err (*thread_search)(tsvc_store *st, const char *owner,
	    const tsvc_filter *f, const tsvc_page *page, tsvc_thread_sink sink,
	    void *arg);
	// The exact number of matches.
	cm_err (*thread_count)(tsvc_store *st, const char *owner,
	    const tsvc_filter *f, int64_t *count);

	// -- checkpoints -------------------------------------------------
	// The named checkpoint (cid != NULL) or the latest in ns by
	// (created_at, checkpoint_id); *out = NULL when there is none.
	cm_err (*cp_get)(tsvc_store *st, const char *owner, const char *id,
	    const char *ns, const char *cid, tsvc_checkpoint **out);
	// Inserts c (thread_id, checkpoint_ns, checkpoint_id,
	// parent_checkpoint_id ("" = none), values_json, metadata_json,
	// created_at_us; next is stored as "[]").
	cm_err (*cp_insert)(
	    tsvc_store *st, const char *owner, const tsvc_checkpoint *c);
	// Replaces one checkpoint's metadata.
	cm_err (*cp_set_metadata)(tsvc_store *st, const char *owner,
	    const char *id, const char *ns, const char *cid,
	    const char *metadata_json);
	// Deletes every checkpoint of the thread but the latest per ns.
	cm_err (*cp_keep_latest)(
	    tsvc_store *st, const char *owner, const char *id);
	// Sends the history page, newest first, to sink. An unknown before
	// or start id gives no rows.
	cm_err (*cp_history)(tsvc_store *st, const tsvc_history_query *q,
	    tsvc_checkpoint_sink sink, void *arg);

	// -- quotas -------------------------------------------------------
	// The owner's usage: how many threads it has and how many bytes of
	// JSON text its threads and checkpoints hold (metadata, values,
	// config, interrupts, next). Backends keep both current in the same
	// transaction as every write (sqlite and PostgreSQL: triggers), so
	// the count includes the caller's own uncommitted writes; concurrent
	// writers of one owner see each other's committed changes.
	cm_err (*owner_usage)(tsvc_store *st, const char *owner,
	    int64_t *threads, int64_t *bytes);
	// How many checkpoints the thread has in all namespaces, counting
	// at most max (*n <= max).
	cm_err (*cp_count)(tsvc_store *st, const char *owner, const char *id,
	    int64_t max, int64_t *n);

	// -- system --------------------------------------------------------
	// Deletes (with checkpoints) up to max threads of any owner whose
	// ttl has expired at now_us, in its own transaction; *deleted gets
	// how many. Safe to run in every replica at once. Backends keep the
	// expiry in an indexed column so this never scans the table:
	// expires_at = updated_at + ttl_minutes * 60e6 when ttl_strategy is
	// "delete" and ttl_minutes > 0, else NULL; every statement that
	// changes updated_at or the ttl recomputes it.
	cm_err (*sweep)(
	    tsvc_store *st, int64_t now_us, int64_t max, int64_t *deleted);
	// Periodic upkeep, run by the sweeper after each sweep: give the
	// space of deleted rows back and keep the journal bounded (sqlite:
	// incremental vacuum and a WAL checkpoint that truncates). May do
	// nothing (PostgreSQL: autovacuum's job).
	cm_err (*maintain)(tsvc_store *st);
} tsvc_backend;

extern const tsvc_backend tsvc_backend_sqlite;
extern const tsvc_backend tsvc_backend_pg;

// ---------------------------------------------------------------------
// Helpers the core offers to backends (store.c)
// ---------------------------------------------------------------------

/**
 * tsvc_db_backend() is db's backend table (static). For code that drives
 * a backend directly: the backends themselves and the bulk loader of
 * bench/ (which batches many inserts in one transaction).
 */
const tsvc_backend *tsvc_db_backend(const tsvc_db *db);

/**
 * tsvc_store_fail() sets st's detail from fmt and returns err, so a
 * backend writes `return (tsvc_store_fail(st, CM_EUNAVAIL, "..."));`.
 */
cm_err tsvc_store_fail(tsvc_store *st, cm_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * tsvc_store_deadline_left_ms() is the time left before st's deadline
 * (INT64_MAX when none; <= 0 when it passed).
 */
int64_t tsvc_store_deadline_left_ms(const tsvc_store *st);

/**
 * tsvc_checkpoint_set_next() fills c->next from the stored JSON array of
 * strings text (len bytes). CM_EINTERNAL (detail set, logged) when it is
 * not one.
 */
cm_err tsvc_checkpoint_set_next(
    tsvc_store *st, tsvc_checkpoint *c, const char *text, size_t len);

#endif // TSVC_BACKEND_H
