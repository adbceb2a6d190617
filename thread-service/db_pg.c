// SPDX-License-Identifier: MIT
//
// The PostgreSQL backend of the thread-service (backend.h), on libpq.
//
// For deployments that outgrow one machine: several thread-service
// replicas share one PostgreSQL database and behave as one service. What
// makes that safe is written at the statements that need it (insert with
// ON CONFLICT, thread_get's FOR UPDATE, the sweeper's SKIP LOCKED); the
// rules themselves are backend.h's.
//
// Connections. One tsvc_conn is one libpq connection owned by one worker
// thread (the lanes of server.c are the pool: a process holds one
// connection per worker plus one for the sweeper). Each statement is
// prepared once per connection, on first use (PQsendPrepare), and then only
// executed with bound parameters: no SQL text is ever built from input.
// Strings and JSON go as text parameters, integers and doubles in binary
// (exact, no formatting); every parameter's type is fixed by a cast in the
// statement.
//
// Deadlines. The connection is non-blocking: a statement is sent with
// PQsendQueryPrepared and its result awaited with poll() on PQsocket for at
// most the time left before st->deadline_ms. When the deadline passes the
// statement is cancelled (PQcancel), its results drained, and the call
// fails with CM_ETIMEDOUT. statement_timeout (THREADS_DB_STATEMENT_
// TIMEOUT_MS) is set on every connection as a backstop for calls without
// a deadline (the sweeper) and for a client that died mid-statement.
//
// Outages. A connection that breaks (server restart, network) is closed
// and the call fails with CM_EUNAVAIL: never a guessed answer. A later
// call reconnects (and re-prepares lazily); reconnect attempts are
// rate-limited per database with a doubling back-off, so a dead server is
// not hammered by every worker. An idle connection is probed (a
// zero-timeout poll) before a request starts, so a server restart that
// happened between requests is noticed and repaired before the first
// statement instead of failing it.
//
// JSON. metadata, values, config and interrupts are jsonb: containment
// filters (`@>`) run in the server and the metadata GIN index serves them.
// jsonb normalizes text (key order, whitespace, number notation);
// json_text() turns what the server prints back into compact JSON that
// jansson reads (see there).
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <endian.h>
#include <libpq-fe.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "thread-service/backend.h"

// ---------------------------------------------------------------------
// Schema
//
// Checklist when you change the schema:
//  1. append a step to migrations[] (never edit a step that has shipped:
//     databases in the field ran it already); PG_SCHEMA_VERSION follows;
//  2. adjust the statements below and run store_test/contract_test
//     against PostgreSQL (ctest -L pg);
//  3. a database whose threadgate_schema holds a newer version than this
//     build knows is refused at open (an older binary must not write a
//     newer schema), so roll replicas forward, never back.
// Steps run in one transaction under a transaction-level advisory lock,
// so replicas starting together migrate once, one after the other.
// ---------------------------------------------------------------------

// The advisory lock key of schema migrations ("tgthread" in ASCII): any
// fixed number works as long as nothing else in the database uses it.
#define PG_MIGRATE_LOCK_KEY INT64_C(0x7467746872656164)

// Version 1. Times are Unix microseconds (bigint), as in the sqlite
// backend, so both order and compare alike. Ids are uuid: 16 bytes, and
// uuid order is byte order, which is the order of the canonical lower-case
// text the API uses (sort by thread_id agrees with sqlite). Text columns
// that are compared or sorted use the "C" collation: byte order, the same
// in every database locale, and the cheapest comparison.
//
// Indexes:
//  - one btree per search order, (owner, column, thread_id), thread_id
//    being the tie-break; the unique (owner, thread_id) is the parent key
//    of checkpoints' foreign key and serves the sort by thread_id;
//  - GIN (jsonb_path_ops) on metadata: serves `metadata @> filter`, the
//    API's metadata search. jsonb_path_ops indexes hashes of paths only,
//    so it is a fraction of the size of the default jsonb_ops and supports
//    exactly the one operator we use;
//  - no GIN on values, on purpose: values is the graph's state and can be
//    megabytes; indexing every path of it would multiply the cost of each
//    state update (every write rewrites the row's index entries) and the
//    index size, for a filter LangGraph clients rarely use. A values
//    filter runs on the owner's rows found through the owner indexes,
//    still exact;
//  - expires_at, partial (only rows with a ttl): the sweeper's scan
//    reads expired rows in expiry order and never the whole table.
//    expires_at = updated_at + ttl_minutes * 60e6 when ttl_strategy is
//    "delete" and ttl_minutes > 0, else NULL; every statement that changes
//    updated_at or the ttl sets it (EXPIRES_AT below);
//  - checkpoints: the primary key (owner, thread_id, ns, id) finds one
//    checkpoint and serves the cascade from threads; (owner, thread_id,
//    ns, created_at, checkpoint_id) is walked backwards for "latest" and
//    for history pages.
//
// Quotas (backend.h owner_usage): owner_usage holds each owner's thread
// count and bytes of JSON text, kept by statement-level triggers in the
// transaction of every write. The bytes are those of the compact JSON
// text the core handed in (what the sqlite backend counts too): each
// statement that writes a document also writes its length into the
// *_bytes columns, so neither a trigger nor a delete ever has to print a
// jsonb document to measure it. The unfiltered count reads owner_usage
// instead of walking a million index entries.
//
// Lock order. Every write of an owner changes that owner's usage row, so
// an owner's write transactions serialize on it anyway; to make that
// deadlock-free, a write transaction locks the owner's usage row before
// anything else of the owner (lock_owner(), on its first locking call),
// and the sweeper locks usage rows in owner order before any thread row.
// Writers of different owners never wait for each other.
static const char *const schema_v1[] = {
	"CREATE TABLE threads ("
	" thread_id    uuid NOT NULL PRIMARY KEY,"
	" owner        text COLLATE \"C\" NOT NULL,"
	" metadata     jsonb NOT NULL,"
	" status       text COLLATE \"C\" NOT NULL DEFAULT 'idle',"
	" config       jsonb NOT NULL DEFAULT '{}',"
	" \"values\"   jsonb,"
	" interrupts   jsonb NOT NULL DEFAULT '{}',"
	" created_at   bigint NOT NULL,"
	" updated_at   bigint NOT NULL,"
	" ttl_minutes  double precision NOT NULL DEFAULT 0,"
	" ttl_strategy text COLLATE \"C\" NOT NULL DEFAULT '',"
	" expires_at   bigint,"
	// Bytes of JSON text: metadata, values, and the whole row (metadata
	// + values + config + interrupts), for owner_usage.
	" meta_bytes   integer NOT NULL DEFAULT 0,"
	" values_bytes integer NOT NULL DEFAULT 0,"
	" bytes        bigint NOT NULL DEFAULT 0,"
	" CONSTRAINT threads_owner_id UNIQUE (owner, thread_id))",
	"CREATE INDEX threads_owner_created"
	" ON threads (owner, created_at, thread_id)",
	"CREATE INDEX threads_owner_updated"
	" ON threads (owner, updated_at, thread_id)",
	"CREATE INDEX threads_owner_status"
	" ON threads (owner, status, thread_id)",
	"CREATE INDEX threads_metadata"
	" ON threads USING gin (metadata jsonb_path_ops)",
	"CREATE INDEX threads_expires ON threads (expires_at)"
	" WHERE expires_at IS NOT NULL",
	"CREATE TABLE checkpoints ("
	" owner                text COLLATE \"C\" NOT NULL,"
	" thread_id            uuid NOT NULL,"
	" checkpoint_ns        text COLLATE \"C\" NOT NULL DEFAULT '',"
	" checkpoint_id        uuid NOT NULL,"
	" parent_checkpoint_id uuid,"
	" \"values\"           jsonb NOT NULL,"
	" metadata             jsonb NOT NULL,"
	" next                 jsonb NOT NULL DEFAULT '[]',"
	" created_at           bigint NOT NULL,"
	" meta_bytes           integer NOT NULL DEFAULT 0,"
	" bytes                bigint NOT NULL DEFAULT 0," // values+meta+next
	" PRIMARY KEY (owner, thread_id, checkpoint_ns, checkpoint_id),"
	" FOREIGN KEY (owner, thread_id) REFERENCES threads (owner, thread_id)"
	"  ON DELETE CASCADE)",
	"CREATE INDEX checkpoints_order ON checkpoints"
	" (owner, thread_id, checkpoint_ns, created_at, checkpoint_id)",
	"CREATE TABLE owner_usage ("
	" owner   text COLLATE \"C\" NOT NULL PRIMARY KEY,"
	" threads bigint NOT NULL DEFAULT 0,"
	" bytes   bigint NOT NULL DEFAULT 0)",
	// One function per event, shared by both tables; statement-level with
	// transition tables, so a statement that touches many rows (a sweep,
	// a cascade, a copy) updates each owner's row once, in owner order.
	"CREATE FUNCTION threadgate_usage_ins() RETURNS trigger"
	" LANGUAGE plpgsql AS $$ BEGIN"
	" INSERT INTO owner_usage AS u (owner, threads, bytes)"
	" SELECT owner, CASE WHEN TG_TABLE_NAME = 'threads' THEN count(*)"
	" ELSE 0 END, sum(bytes) FROM new_rows GROUP BY owner ORDER BY owner"
	" ON CONFLICT (owner) DO UPDATE SET threads = u.threads +"
	" EXCLUDED.threads, bytes = u.bytes + EXCLUDED.bytes;"
	" RETURN NULL; END $$",
	"CREATE FUNCTION threadgate_usage_del() RETURNS trigger"
	" LANGUAGE plpgsql AS $$ BEGIN"
	" UPDATE owner_usage AS u SET threads = u.threads - d.n,"
	" bytes = u.bytes - d.b FROM (SELECT owner, CASE WHEN TG_TABLE_NAME ="
	" 'threads' THEN count(*) ELSE 0 END AS n, sum(bytes) AS b"
	" FROM old_rows GROUP BY owner ORDER BY owner) d"
	" WHERE u.owner = d.owner;"
	" RETURN NULL; END $$",
	"CREATE FUNCTION threadgate_usage_upd() RETURNS trigger"
	" LANGUAGE plpgsql AS $$ BEGIN"
	" UPDATE owner_usage AS u SET bytes = u.bytes + d.b"
	" FROM (SELECT owner, sum(b) AS b FROM (SELECT owner, bytes AS b"
	" FROM new_rows UNION ALL SELECT owner, -bytes FROM old_rows) x"
	" GROUP BY owner HAVING sum(b) <> 0 ORDER BY owner) d"
	" WHERE u.owner = d.owner;"
	" RETURN NULL; END $$",
	"CREATE TRIGGER threads_usage_ins AFTER INSERT ON threads"
	" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
	" EXECUTE FUNCTION threadgate_usage_ins()",
	"CREATE TRIGGER threads_usage_del AFTER DELETE ON threads"
	" REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"
	" EXECUTE FUNCTION threadgate_usage_del()",
	"CREATE TRIGGER threads_usage_upd AFTER UPDATE ON threads"
	" REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
	" FOR EACH STATEMENT EXECUTE FUNCTION threadgate_usage_upd()",
	"CREATE TRIGGER checkpoints_usage_ins AFTER INSERT ON checkpoints"
	" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
	" EXECUTE FUNCTION threadgate_usage_ins()",
	"CREATE TRIGGER checkpoints_usage_del AFTER DELETE ON checkpoints"
	" REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"
	" EXECUTE FUNCTION threadgate_usage_del()",
	"CREATE TRIGGER checkpoints_usage_upd AFTER UPDATE ON checkpoints"
	" REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
	" FOR EACH STATEMENT EXECUTE FUNCTION threadgate_usage_upd()",
	NULL,
};

// migrations[i] takes a database from version i to i + 1.
static const char *const *const migrations[] = {
	schema_v1,
};

#define PG_SCHEMA_VERSION ((int) (sizeof(migrations) / sizeof(migrations[0])))

// ---------------------------------------------------------------------
// Statements (prepared once per connection, on first use)
// ---------------------------------------------------------------------

#define THREAD_COLS                                               \
	"thread_id, owner, metadata, status, config, \"values\"," \
	" interrupts, created_at, updated_at, ttl_minutes, ttl_strategy"

#define CP_COLS                                                          \
	"thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id," \
	" \"values\", metadata, next, created_at"

// expires_at as the schema comment defines it (trunc() like the sqlite
// backend's integer cast), for a row whose updated_at becomes:
//  - $4 with the ttl of $5/$6 (insert);
//  - $4 with the copied row's ttl (copy);
//  - greatest($4, updated_at + 1) with the row's ttl (thread_set_values);
//  - greatest($4, updated_at + 1) with the ttl of $5/$6 (thread_update).
#define EXPIRES_AT(upd, min, strat)                                     \
	"CASE WHEN " strat " = 'delete' AND " min " > 0 THEN " upd " +" \
	" trunc(" min " * 60000000.0::float8)::bigint END"
#define TOUCHED           "greatest($4::bigint, updated_at + 1)"
#define EXPIRES_AT_NEW    EXPIRES_AT("$4::bigint", "$5::float8", "$6::text")
#define EXPIRES_AT_COPY   EXPIRES_AT("$4::bigint", "ttl_minutes", "ttl_strategy")
#define EXPIRES_AT_TOUCH  EXPIRES_AT(TOUCHED, "ttl_minutes", "ttl_strategy")
#define EXPIRES_AT_UPDATE EXPIRES_AT(TOUCHED, "$5::float8", "$6::text")

// The search/count filter: $1 owner, $2 metadata filter, $3 values
// filter, $4 ids (uuid[]), $5 status; NULL disables a part. The
// connection plans every execution with its actual parameters
// (plan_cache_mode, see session_setup), so a NULL part folds away and the
// planner picks the owner btree or the metadata GIN index per request.
// A search with a metadata or values filter takes the steps of "Search
// plans" below instead.
#define FILTER_WHERE                                                \
	"owner = $1::text"                                          \
	" AND ($2::jsonb IS NULL OR metadata @> $2::jsonb)"         \
	" AND ($3::jsonb IS NULL OR \"values\" @> $3::jsonb)"       \
	" AND ($4::uuid[] IS NULL OR thread_id = ANY ($4::uuid[]))" \
	" AND ($5::text IS NULL OR status = $5::text)"

#define SEARCH(order)                                             \
	"SELECT " THREAD_COLS " FROM threads WHERE " FILTER_WHERE \
	" ORDER BY " order " LIMIT $6::bigint OFFSET $7::bigint"

// Search plans. The planner cannot estimate `metadata @> $2` for one
// owner: jsonb containment selectivity comes from a sample of whole
// documents of the whole table (with no statistics, a fixed 1%), and is
// multiplied with the owner's share as if the two were unrelated. Yet the
// right plan depends on it: a filter that matches half of an owner's
// million rows is answered by walking the owner's btree in the page's
// order and stopping after offset + limit matches (tens of rows); one that
// matches a hundred is answered by the GIN index and a sort of those
// hundred, while the walk reads a tenth of the million before it finds a
// page. A wrong guess either way costs hundreds of milliseconds (measured
// on the benchmark's data without statistics: the selective filter walked
// 113,000 rows, 237 ms, instead of 5-16 ms through the index; and a
// statement free to combine indexes read all of the million entries of
// the owner's btree for a bitmap, 0.5 to 1.6 s). So a search with a
// metadata or values filter (and no ids) runs in steps whose plans do not
// depend on an estimate (pg_thread_search). Steps 1 and 2 cost at most a
// number of rows known before they run; step 3 what the GIN index costs:
// the filter's matches in the whole table.
//
//  1. WINDOW over the first window (PG_SEARCH_WINDOW) of the owner's rows
//     in the page's order, the filter checked on those only. The LIMIT
//     inside the sub-select keeps the filter out of it (a condition is
//     never pushed below a LIMIT), so the walk of the owner's btree is
//     the only plan and reads at most a window of rows. Its page is the
//     answer when it holds limit rows, or when the owner has no more rows
//     than the window (each row carries the owner's count from
//     owner_usage, exact in the statement's snapshot; with a status
//     filter an upper bound, so never wrong). Until that is known the
//     rows are held back (search_window), so a page that is not the
//     answer never reaches the sink.
//  2. The filter is rarer than (offset + limit) / window in the owner's
//     newest rows. An owner with at most PG_WALK_WINDOWS windows of rows
//     gets WINDOW again over all of them: the cost is bounded by the
//     owner's rows, whatever the filter matches among other owners' rows.
//  3. A bigger owner: GIN_SEARCH for a metadata filter, which takes every
//     match of the filter from the GIN index (the OFFSET 0 sub-select,
//     where the filter is the only condition, so the owner's btrees are
//     not available to it), keeps the owner's, and sorts those; SEARCH
//     for a values filter alone (no index serves one: the planner walks
//     or scans the owner's rows, bounded by them either way). The GIN
//     index holds every owner's documents: a filter that many other
//     owners' rows match, but few of this owner's, costs those matches
//     here (an index that keys owner with metadata would not).
// The ids filter bounds the rows by itself (a primary-key lookup per id):
// a search with ids, or without a metadata or values filter, runs SEARCH.
// WINDOW costs the server about what SEARCH does (planning included:
// every execution is planned, see session_setup): 0.14 against 0.12 ms
// for the benchmark's unselective filter. A verdict computed in SQL (a CTE
// holding the page, a join for the owner's count) cost 0.4 ms, so it is
// decided here, from the row count and the owner's count.
#define WINDOW(order)                                                       \
	"SELECT " THREAD_COLS ", coalesce((SELECT threads FROM owner_usage" \
	" WHERE owner = $1::text), 0) FROM ("                               \
	" SELECT " THREAD_COLS " FROM threads WHERE owner = $1::text"       \
	" AND ($4::text IS NULL OR status = $4::text)"                      \
	" ORDER BY " order " LIMIT $7::bigint) w"                           \
	" WHERE ($2::jsonb IS NULL OR metadata @> $2::jsonb)"               \
	" AND ($3::jsonb IS NULL OR \"values\" @> $3::jsonb)"               \
	" ORDER BY " order " LIMIT $5::bigint OFFSET $6::bigint"

#define GIN_SEARCH(order)                                                  \
	"SELECT " THREAD_COLS " FROM (SELECT " THREAD_COLS " FROM threads" \
	" WHERE metadata @> $2::jsonb OFFSET 0) m WHERE owner = $1::text"  \
	" AND ($3::jsonb IS NULL OR \"values\" @> $3::jsonb)"              \
	" AND ($4::text IS NULL OR status = $4::text)"                     \
	" ORDER BY " order " LIMIT $5::bigint OFFSET $6::bigint"

enum {
	S_PING,
	S_BEGIN_READ,
	S_BEGIN_WRITE,
	S_COMMIT,
	S_ROLLBACK,
	S_ID_OWNER,
	S_THREAD_INSERT,
	S_THREAD_GET,
	S_THREAD_GET_LOCK,
	S_THREAD_CREATED,
	S_THREAD_CREATED_LOCK,
	S_THREAD_UPDATE,
	S_THREAD_SET_VALUES,
	S_THREAD_DELETE,
	S_THREAD_COPY,
	S_COUNT,
	S_CP_LATEST,
	S_CP_GET,
	S_CP_INSERT,
	S_CP_SET_META,
	S_CP_KEEP_LATEST,
	S_CP_COUNT,
	S_HISTORY,
	S_OWNER_LOCK,
	S_OWNER_NEW,
	S_USAGE,
	S_SWEEP,
	// 8 statements of each search plan: S_<plan> + sort * 2 +
	// ascending (see "Search plans").
	S_SEARCH,
	S_WINDOW     = S_SEARCH + 8,
	S_GIN_SEARCH = S_WINDOW + 8,
	S_NSTMT      = S_GIN_SEARCH + 8,
};

// The SQL keeps the layout it is written in.
// clang-format off
static const char *const stmt_sql[S_NSTMT] = {
	[S_PING] = "SELECT 1",
	// Several reads that must agree (a search page and its thread
	// checks, a state and its thread) see one snapshot; read-only
	// repeatable read never fails with a serialization error.
	[S_BEGIN_READ] = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
	// Writers use read committed plus row locks (lock_owner, thread_get
	// lock = 1): each statement sees what other replicas committed
	// before it, and read-modify-write sequences serialize on rows.
	// Stated explicitly so a server default of serializable cannot turn
	// concurrent writes into 40001 failures.
	[S_BEGIN_WRITE] = "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	// Exception to the owner rule (backend.h): decides 409 for an id
	// taken by anyone; it returns only whether the caller owns the row.
	[S_ID_OWNER] =
	    "SELECT owner = $1::text FROM threads WHERE thread_id = $2::uuid",
	// ON CONFLICT DO NOTHING: an id taken, also by a transaction of
	// another replica that commits while this one waits on the unique
	// index, inserts no row (CM_EEXIST) and, unlike a unique violation,
	// leaves the transaction usable (the core then asks id_owner). JSON
	// parameters are text cast to jsonb for the column, so their length
	// is the stored size (config and interrupts: "{}", two bytes each).
	[S_THREAD_INSERT] =
	    "INSERT INTO threads (owner, thread_id, metadata, created_at,"
	    " updated_at, ttl_minutes, ttl_strategy, expires_at, meta_bytes,"
	    " bytes)"
	    " VALUES ($1::text, $2::uuid, $3::text::jsonb, $4::bigint,"
	    " $4::bigint, $5::float8, $6::text, "
	    EXPIRES_AT_NEW ", octet_length($3::text),"
	    " octet_length($3::text) + 4)"
	    " ON CONFLICT DO NOTHING",
	[S_THREAD_GET] =
	    "SELECT " THREAD_COLS " FROM threads"
	    " WHERE owner = $1::text AND thread_id = $2::uuid",
	// The row lock that serializes read-modify-write sequences on one
	// thread across replicas; held until commit or rollback.
	[S_THREAD_GET_LOCK] =
	    "SELECT " THREAD_COLS " FROM threads"
	    " WHERE owner = $1::text AND thread_id = $2::uuid FOR UPDATE",
	[S_THREAD_CREATED] =
	    "SELECT created_at FROM threads"
	    " WHERE owner = $1::text AND thread_id = $2::uuid",
	[S_THREAD_CREATED_LOCK] =
	    "SELECT created_at FROM threads"
	    " WHERE owner = $1::text AND thread_id = $2::uuid FOR UPDATE",
	[S_THREAD_UPDATE] =
	    "UPDATE threads SET metadata = $3::text::jsonb,"
	    " meta_bytes = octet_length($3::text),"
	    " bytes = bytes - meta_bytes + octet_length($3::text),"
	    " updated_at = " TOUCHED ","
	    " ttl_minutes = $5::float8, ttl_strategy = $6::text,"
	    " expires_at = " EXPIRES_AT_UPDATE
	    " WHERE owner = $1::text AND thread_id = $2::uuid",
	[S_THREAD_SET_VALUES] =
	    "UPDATE threads SET \"values\" = $3::text::jsonb,"
	    " values_bytes = octet_length($3::text),"
	    " bytes = bytes - values_bytes + octet_length($3::text),"
	    " updated_at = " TOUCHED ","
	    " expires_at = " EXPIRES_AT_TOUCH
	    " WHERE owner = $1::text AND thread_id = $2::uuid",
	// Checkpoints go with the thread (ON DELETE CASCADE).
	[S_THREAD_DELETE] =
	    "DELETE FROM threads WHERE owner = $1::text AND thread_id = $2::uuid",
	// One statement, so the copy is whole even outside a transaction;
	// the checkpoints' foreign key is checked at the end of the
	// statement, when the new thread row exists.
	[S_THREAD_COPY] =
	    "WITH t AS (INSERT INTO threads (owner, thread_id, metadata,"
	    " status, config, \"values\", interrupts, created_at, updated_at,"
	    " ttl_minutes, ttl_strategy, expires_at, meta_bytes, values_bytes,"
	    " bytes)"
	    " SELECT owner, $3::uuid, metadata, status, config, \"values\","
	    " interrupts, $4::bigint, $4::bigint, ttl_minutes, ttl_strategy, "
	    EXPIRES_AT_COPY ", meta_bytes, values_bytes, bytes"
	    " FROM threads WHERE owner = $1::text AND thread_id = $2::uuid"
	    " RETURNING 1),"
	    " c AS (INSERT INTO checkpoints (owner, thread_id, checkpoint_ns,"
	    " checkpoint_id, parent_checkpoint_id, \"values\", metadata, next,"
	    " created_at, meta_bytes, bytes)"
	    " SELECT owner, $3::uuid, checkpoint_ns, checkpoint_id,"
	    " parent_checkpoint_id, \"values\", metadata, next, created_at,"
	    " meta_bytes, bytes FROM checkpoints"
	    " WHERE owner = $1::text AND thread_id = $2::uuid"
	    " AND EXISTS (SELECT 1 FROM t))"
	    " SELECT count(*) FROM t",
	[S_COUNT] = "SELECT count(*) FROM threads WHERE " FILTER_WHERE,
	[S_CP_LATEST] =
	    "SELECT " CP_COLS " FROM checkpoints"
	    " WHERE owner = $1::text AND thread_id = $2::uuid"
	    " AND checkpoint_ns = $3::text"
	    " ORDER BY created_at DESC, checkpoint_id DESC LIMIT 1",
	[S_CP_GET] =
	    "SELECT " CP_COLS " FROM checkpoints"
	    " WHERE owner = $1::text AND thread_id = $2::uuid"
	    " AND checkpoint_ns = $3::text AND checkpoint_id = $4::uuid",
	// next is "[]": two bytes.
	[S_CP_INSERT] =
	    "INSERT INTO checkpoints (owner, thread_id, checkpoint_ns,"
	    " checkpoint_id, parent_checkpoint_id, \"values\", metadata, next,"
	    " created_at, meta_bytes, bytes)"
	    " VALUES ($1::text, $2::uuid, $3::text, $4::uuid, $5::uuid,"
	    " $6::text::jsonb, $7::text::jsonb, '[]', $8::bigint,"
	    " octet_length($7::text),"
	    " octet_length($6::text) + octet_length($7::text) + 2)",
	[S_CP_SET_META] =
	    "UPDATE checkpoints SET metadata = $5::text::jsonb,"
	    " meta_bytes = octet_length($5::text),"
	    " bytes = bytes - meta_bytes + octet_length($5::text)"
	    " WHERE owner = $1::text AND thread_id = $2::uuid"
	    " AND checkpoint_ns = $3::text AND checkpoint_id = $4::uuid",
	[S_CP_KEEP_LATEST] =
	    "DELETE FROM checkpoints"
	    " WHERE owner = $1::text AND thread_id = $2::uuid"
	    " AND (checkpoint_ns, checkpoint_id) IN ("
	    "  SELECT checkpoint_ns, checkpoint_id FROM ("
	    "   SELECT checkpoint_ns, checkpoint_id, row_number() OVER ("
	    "    PARTITION BY checkpoint_ns"
	    "    ORDER BY created_at DESC, checkpoint_id DESC) AS rn"
	    "   FROM checkpoints WHERE owner = $1::text AND thread_id = $2::uuid"
	    "  ) s WHERE rn > 1)",
	[S_CP_COUNT] =
	    "SELECT count(*) FROM (SELECT 1 FROM checkpoints"
	    " WHERE owner = $1::text AND thread_id = $2::uuid"
	    " LIMIT $3::bigint) s",
	// $4 before (exclusive), $5 start (inclusive), $6 metadata filter,
	// $7 limit. An unknown before/start id makes the bound NULL, so the
	// page is empty.
	[S_HISTORY] =
	    "SELECT " CP_COLS " FROM checkpoints"
	    " WHERE owner = $1::text AND thread_id = $2::uuid"
	    " AND checkpoint_ns = $3::text"
	    " AND ($4::uuid IS NULL OR (created_at, checkpoint_id) < ("
	    "  SELECT created_at, checkpoint_id FROM checkpoints"
	    "  WHERE owner = $1::text AND thread_id = $2::uuid"
	    "  AND checkpoint_ns = $3::text AND checkpoint_id = $4::uuid))"
	    " AND ($5::uuid IS NULL OR (created_at, checkpoint_id) <= ("
	    "  SELECT created_at, checkpoint_id FROM checkpoints"
	    "  WHERE owner = $1::text AND thread_id = $2::uuid"
	    "  AND checkpoint_ns = $3::text AND checkpoint_id = $5::uuid))"
	    " AND ($6::jsonb IS NULL OR metadata @> $6::jsonb)"
	    " ORDER BY created_at DESC, checkpoint_id DESC LIMIT $7::bigint",
	// The first lock of a write transaction (see "Lock order"); a new
	// owner gets its row first.
	[S_OWNER_LOCK] =
	    "SELECT 1 FROM owner_usage WHERE owner = $1::text FOR UPDATE",
	[S_OWNER_NEW] =
	    "INSERT INTO owner_usage (owner) VALUES ($1::text)"
	    " ON CONFLICT (owner) DO NOTHING",
	[S_USAGE] =
	    "SELECT threads, bytes FROM owner_usage WHERE owner = $1::text",
	// Exception to the owner rule (backend.h): the TTL sweeper is a
	// system task over every owner. One statement. It takes the oldest
	// expired rows (the partial expires_at index), locks their owners'
	// usage rows in owner order (waiting for writers of those owners,
	// whose transactions are short; a global order, so two sweepers
	// cannot deadlock, and writers hold only their own owner), then the
	// rows themselves, skipping any still held, and deletes them. A row
	// another replica's sweeper deleted meanwhile is simply gone when
	// this one gets to it (no error, never deleted twice); a row skipped
	// now is taken by the next sweep. Waiting instead of skipping owners
	// means no owner's expired rows are passed over for long.
	[S_SWEEP] =
	    "WITH cand AS ("
	    "  SELECT thread_id, owner FROM threads"
	    "  WHERE expires_at <= $1::bigint ORDER BY expires_at"
	    "  LIMIT $2::bigint),"
	    " owners AS ("
	    "  SELECT owner FROM owner_usage"
	    "  WHERE owner IN (SELECT owner FROM cand) ORDER BY owner"
	    "  FOR UPDATE),"
	    " doomed AS ("
	    "  SELECT thread_id FROM threads"
	    "  WHERE thread_id IN (SELECT thread_id FROM cand)"
	    "  AND owner IN (SELECT owner FROM owners)"
	    "  AND expires_at <= $1::bigint FOR UPDATE SKIP LOCKED)"
	    " DELETE FROM threads t USING doomed d"
	    " WHERE t.thread_id = d.thread_id RETURNING t.thread_id",
	[S_SEARCH + 0] = SEARCH("created_at DESC, thread_id DESC"),
	[S_SEARCH + 1] = SEARCH("created_at ASC, thread_id ASC"),
	[S_SEARCH + 2] = SEARCH("updated_at DESC, thread_id DESC"),
	[S_SEARCH + 3] = SEARCH("updated_at ASC, thread_id ASC"),
	[S_SEARCH + 4] = SEARCH("thread_id DESC"),
	[S_SEARCH + 5] = SEARCH("thread_id ASC"),
	[S_SEARCH + 6] = SEARCH("status DESC, thread_id DESC"),
	[S_SEARCH + 7] = SEARCH("status ASC, thread_id ASC"),
	[S_WINDOW + 0] = WINDOW("created_at DESC, thread_id DESC"),
	[S_WINDOW + 1] = WINDOW("created_at ASC, thread_id ASC"),
	[S_WINDOW + 2] = WINDOW("updated_at DESC, thread_id DESC"),
	[S_WINDOW + 3] = WINDOW("updated_at ASC, thread_id ASC"),
	[S_WINDOW + 4] = WINDOW("thread_id DESC"),
	[S_WINDOW + 5] = WINDOW("thread_id ASC"),
	[S_WINDOW + 6] = WINDOW("status DESC, thread_id DESC"),
	[S_WINDOW + 7] = WINDOW("status ASC, thread_id ASC"),
	[S_GIN_SEARCH + 0] = GIN_SEARCH("created_at DESC, thread_id DESC"),
	[S_GIN_SEARCH + 1] = GIN_SEARCH("created_at ASC, thread_id ASC"),
	[S_GIN_SEARCH + 2] = GIN_SEARCH("updated_at DESC, thread_id DESC"),
	[S_GIN_SEARCH + 3] = GIN_SEARCH("updated_at ASC, thread_id ASC"),
	[S_GIN_SEARCH + 4] = GIN_SEARCH("thread_id DESC"),
	[S_GIN_SEARCH + 5] = GIN_SEARCH("thread_id ASC"),
	[S_GIN_SEARCH + 6] = GIN_SEARCH("status DESC, thread_id DESC"),
	[S_GIN_SEARCH + 7] = GIN_SEARCH("status ASC, thread_id ASC"),
};
// clang-format on

// What each statement is called in the log.
static const char *const stmt_name[S_NSTMT] = {
	[S_PING]                = "ping",
	[S_BEGIN_READ]          = "begin",
	[S_BEGIN_WRITE]         = "begin",
	[S_COMMIT]              = "commit",
	[S_ROLLBACK]            = "rollback",
	[S_ID_OWNER]            = "id_owner",
	[S_THREAD_INSERT]       = "thread_insert",
	[S_THREAD_GET]          = "thread_get",
	[S_THREAD_GET_LOCK]     = "thread_get",
	[S_THREAD_CREATED]      = "thread_created",
	[S_THREAD_CREATED_LOCK] = "thread_created",
	[S_THREAD_UPDATE]       = "thread_update",
	[S_THREAD_SET_VALUES]   = "thread_set_values",
	[S_THREAD_DELETE]       = "thread_delete",
	[S_THREAD_COPY]         = "thread_copy",
	[S_COUNT]               = "thread_count",
	[S_CP_LATEST]           = "cp_get",
	[S_CP_GET]              = "cp_get",
	[S_CP_INSERT]           = "cp_insert",
	[S_CP_SET_META]         = "cp_set_metadata",
	[S_CP_KEEP_LATEST]      = "cp_keep_latest",
	[S_CP_COUNT]            = "cp_count",
	[S_OWNER_LOCK]          = "lock_owner",
	[S_OWNER_NEW]           = "lock_owner",
	[S_USAGE]               = "owner_usage",
	[S_HISTORY]             = "cp_history",
	[S_SWEEP]               = "sweep",
	[S_SEARCH + 0]          = "thread_search",
	[S_SEARCH + 1]          = "thread_search",
	[S_SEARCH + 2]          = "thread_search",
	[S_SEARCH + 3]          = "thread_search",
	[S_SEARCH + 4]          = "thread_search",
	[S_SEARCH + 5]          = "thread_search",
	[S_SEARCH + 6]          = "thread_search",
	[S_SEARCH + 7]          = "thread_search",
	[S_WINDOW + 0]          = "thread_search",
	[S_WINDOW + 1]          = "thread_search",
	[S_WINDOW + 2]          = "thread_search",
	[S_WINDOW + 3]          = "thread_search",
	[S_WINDOW + 4]          = "thread_search",
	[S_WINDOW + 5]          = "thread_search",
	[S_WINDOW + 6]          = "thread_search",
	[S_WINDOW + 7]          = "thread_search",
	[S_GIN_SEARCH + 0]      = "thread_search",
	[S_GIN_SEARCH + 1]      = "thread_search",
	[S_GIN_SEARCH + 2]      = "thread_search",
	[S_GIN_SEARCH + 3]      = "thread_search",
	[S_GIN_SEARCH + 4]      = "thread_search",
	[S_GIN_SEARCH + 5]      = "thread_search",
	[S_GIN_SEARCH + 6]      = "thread_search",
	[S_GIN_SEARCH + 7]      = "thread_search",
};

// Most parameters of one statement.
#define PG_MAX_PARAMS 8
// The window of "Search plans": how many of the owner's rows step 1 of
// a filtered search walks at most. A filter matching at least (offset +
// limit) / window of the owner's newest rows (in the page's order) is
// answered by it; a rarer one goes on to step 2 or 3 after a wasted walk
// of this many rows. The walk reads about three rows per microsecond
// (index entry, row, containment check; measured on the benchmark's
// data), so a window costs well under a millisecond, while step 3 for a
// filter just below the threshold reads (offset + limit) / window of the
// owner's rows through the GIN index and sorts them (11,000 for a page of
// 10 over a million rows). A larger window moves work from step 3 to
// step 1.
#define PG_SEARCH_WINDOW 1000
// Step 2 walks all of an owner's rows when they are at most this many
// windows (10,000 rows by default, a few milliseconds).
#define PG_WALK_WINDOWS 10
// Largest window tsvc_db_options.search_window may set (keeps the walk
// of step 2 far from int64 overflow).
#define PG_SEARCH_WINDOW_MAX 1000000000
// Longest prepared statement name ("tg<id>_<gen>").
#define PG_STMT_NAME_MAX 32
// How long a cancelled statement may take to deliver its last results
// before the connection is given up as broken and closed. The server
// answers a cancel within milliseconds; only a dead network takes longer.
#define PG_DRAIN_MS 2000
// How long COMMIT and ROLLBACK may take past the deadline (see set_wait).
#define PG_END_TX_MS 5000
// Extra wait past statement_timeout for calls without a deadline, before
// the server is deemed unresponsive (it should have cancelled by then).
#define PG_NO_DEADLINE_GRACE_MS 5000
// Reconnect back-off: the first retry after a failed connect waits
// PG_RETRY_MIN_MS, each further failure doubles it up to PG_RETRY_MAX_MS
// (shared by every connection of the process; reset by a success). Short
// enough that service resumes within a couple of seconds of the server
// returning; long enough that a dead server sees a handful of attempts
// per second from a whole process, not one per request.
#define PG_RETRY_MIN_MS 100
#define PG_RETRY_MAX_MS 2000
// Room for one libpq error message in the log.
#define PG_ERR_MAX 512

// The details clients see (never the server's message).
#define DETAIL_UNAVAIL  "storage unavailable, retry later"
#define DETAIL_TIMEOUT  "storage deadline passed"
#define DETAIL_INTERNAL "internal storage error"

/** pg_db is what the connections of one database share (thread-safe). */
typedef struct pg_db {
	char           *target; // THREADS_DB as given (a URL or keywords)
	tsvc_db_options opt;
	int64_t         search_window; // rows of step 1 of a search
	pthread_mutex_t mu;            // guards the two fields below
	int64_t         retry_at_ms;   // no connect attempt before (mono ms)
	int64_t         backoff_ms;    // current back-off, 0 = none
} pg_db;

struct tsvc_conn {
	pg_db  *db;
	PGconn *pg;       // NULL while disconnected
	int     in_tx;    // a transaction is open on pg
	int     no_wait;  // this call waits without the default cap
	char   *tx_owner; // owner whose usage row this transaction holds
	int64_t until_ms; // wall ms the current statement may run to; 0 none
	int     until_is_deadline; // until_ms is the request's deadline
	unsigned char prepared[S_NSTMT];
	// Name generation of each statement (see stmt_label).
	unsigned gen[S_NSTMT];
};

/**
 * pgparam is the parameter list of one statement. Text parameters point
 * at the caller's strings (which must outlive the call); int64 and double
 * are stored here in network order and sent in binary.
 */
typedef struct pgparam {
	const char *v[PG_MAX_PARAMS];
	int         len[PG_MAX_PARAMS];
	int         fmt[PG_MAX_PARAMS];
	uint64_t    bin[PG_MAX_PARAMS];
	int         n;
} pgparam;

static void
p_text(pgparam *p, const char *s)
{
	CM_ASSERT(p->n < PG_MAX_PARAMS);
	p->v[p->n]   = s; // NULL binds SQL NULL
	p->len[p->n] = 0;
	p->fmt[p->n] = 0;
	p->n++;
}

static void
p_i64(pgparam *p, int64_t x)
{
	CM_ASSERT(p->n < PG_MAX_PARAMS);
	p->bin[p->n] = htobe64((uint64_t) x);
	p->v[p->n]   = (const char *) &p->bin[p->n];
	p->len[p->n] = 8;
	p->fmt[p->n] = 1;
	p->n++;
}

static void
p_f64(pgparam *p, double x)
{
	uint64_t u;

	CM_ASSERT(p->n < PG_MAX_PARAMS);
	memcpy(&u, &x, sizeof(u));
	p->bin[p->n] = htobe64(u);
	p->v[p->n]   = (const char *) &p->bin[p->n];
	p->len[p->n] = 8;
	p->fmt[p->n] = 1;
	p->n++;
}

// ---------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------

// one_line copies a libpq message without its trailing newline(s).
static void
one_line(char *out, size_t n, const char *msg)
{
	size_t len;

	snprintf(out, n, "%s", msg != NULL ? msg : "");
	len = strlen(out);
	while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == ' ')) {
		out[--len] = '\0';
	}
	for (size_t i = 0; i < len; i++) {
		if (out[i] == '\n') {
			out[i] = ' ';
		}
	}
}

// set_tx_owner records whose usage row the open transaction holds (NULL:
// none).
static void
set_tx_owner(tsvc_conn *c, const char *owner)
{
	free(c->tx_owner);
	c->tx_owner = (owner != NULL) ? cm_xstrdup(owner) : NULL;
}

// drop closes a connection that is broken or in an unknown state; the
// server rolls back whatever it had open. in_tx stays as it was: a
// transaction that died with its connection still ends with the core's
// rollback (which then has nothing to send). The next call outside a
// transaction reconnects.
static void
drop(tsvc_conn *c)
{
	if (c->pg != NULL) {
		PQfinish(c->pg);
		c->pg = NULL;
	}
	memset(c->prepared, 0, sizeof(c->prepared));
	set_tx_owner(c, NULL);
}

// retry_allowed: whether a connect attempt may run now (the back-off of
// the last failure has passed).
static int
retry_allowed(pg_db *db)
{
	int ok;

	pthread_mutex_lock(&db->mu);
	ok = cm_mono_ms() >= db->retry_at_ms;
	pthread_mutex_unlock(&db->mu);
	return (ok);
}

static void
connect_result(pg_db *db, int ok)
{
	pthread_mutex_lock(&db->mu);
	if (ok) {
		db->backoff_ms  = 0;
		db->retry_at_ms = 0;
	} else {
		db->backoff_ms  = db->backoff_ms == 0
		     ? PG_RETRY_MIN_MS
		     : (db->backoff_ms * 2 > PG_RETRY_MAX_MS
		               ? PG_RETRY_MAX_MS
		               : db->backoff_ms * 2);
		db->retry_at_ms = cm_mono_ms() + db->backoff_ms;
	}
	pthread_mutex_unlock(&db->mu);
}

// pg_connect opens a connection, waiting at most bound_ms (the connect
// timeout, or less when the request's deadline is nearer). libpq's own
// connect_timeout does not apply to PQconnectPoll, so the loop enforces
// the bound. On failure err gets libpq's reason (it never contains a
// password).
static PGconn *
pg_connect(const pg_db *db, int64_t bound_ms, char *err, size_t errlen)
{
	const char *const kw[]  = { "dbname", "fallback_application_name",
		 NULL };
	const char *const val[] = { db->target, "threadgate-threads", NULL };
	int64_t           end   = cm_mono_ms() + bound_ms;
	PostgresPollingStatusType ps = PGRES_POLLING_WRITING;
	PGconn                   *pg;

	// expand_dbname = 1: the target is a URL or a keyword string.
	pg = PQconnectStartParams(kw, val, 1);
	if (pg == NULL) {
		snprintf(err, errlen, "out of memory");
		return (NULL);
	}
	if (PQstatus(pg) == CONNECTION_BAD) {
		one_line(err, errlen, PQerrorMessage(pg));
		PQfinish(pg);
		return (NULL);
	}
	while (ps != PGRES_POLLING_OK && ps != PGRES_POLLING_FAILED) {
		struct pollfd pfd;
		int64_t       left = end - cm_mono_ms();
		int           rc;

		if (left <= 0) {
			snprintf(err, errlen,
			    "connect timed out after %" PRId64 " ms",
			    bound_ms);
			PQfinish(pg);
			return (NULL);
		}
		// The socket may change while libpq tries several addresses.
		pfd.fd      = PQsocket(pg);
		pfd.events  = (ps == PGRES_POLLING_READING) ? POLLIN : POLLOUT;
		pfd.revents = 0;
		rc = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int) left);
		if (rc < 0 && errno != EINTR) {
			snprintf(err, errlen, "poll: %s", strerror(errno));
			PQfinish(pg);
			return (NULL);
		}
		if (rc > 0) {
			ps = PQconnectPoll(pg);
		}
	}
	if (ps == PGRES_POLLING_FAILED) {
		one_line(err, errlen, PQerrorMessage(pg));
		PQfinish(pg);
		return (NULL);
	}
	if (PQsetnonblocking(pg, 1) != 0) {
		one_line(err, errlen, PQerrorMessage(pg));
		PQfinish(pg);
		return (NULL);
	}
	return (pg);
}

static cm_err run_sql(
    tsvc_store *st, const char *sql, const pgparam *p, PGresult **out);

// session_setup sets the per-connection settings:
//  - statement_timeout, the server-side backstop behind deadlines;
//  - plan_cache_mode = force_custom_plan: a prepared statement keeps its
//    parse and analysis, but is planned for each execution with the
//    actual parameters. Rows per owner are skewed (one user with a
//    million threads, most with a few), and the optional filters fold
//    away only in a plan that sees their values: a generic plan chosen
//    after five cheap executions could be ruinous for the next owner.
//    Planning a statement costs tens of microseconds.
static cm_err
session_setup(tsvc_store *st)
{
	pgparam p = { 0 };
	char    ms[32];

	snprintf(ms, sizeof(ms), "%d", st->conn->db->opt.statement_timeout_ms);
	p_text(&p, ms);
	return (run_sql(st,
	    "SELECT set_config('statement_timeout', $1::text, false),"
	    " set_config('plan_cache_mode', 'force_custom_plan', false)",
	    &p, NULL));
}

// reconnect replaces a broken connection, unless the back-off of a
// recent failure has not passed (then CM_EUNAVAIL at once).
static cm_err
reconnect(tsvc_store *st)
{
	tsvc_conn *c     = st->conn;
	pg_db     *db    = c->db;
	int64_t    bound = db->opt.connect_timeout_ms;
	int64_t    left  = tsvc_store_deadline_left_ms(st);
	char       err[PG_ERR_MAX];
	cm_err     rv;

	drop(c);
	if (!retry_allowed(db)) {
		return (tsvc_store_fail(st, CM_EUNAVAIL, DETAIL_UNAVAIL));
	}
	if (left <= 0) {
		return (tsvc_store_fail(st, CM_ETIMEDOUT, DETAIL_TIMEOUT));
	}
	if (left < bound) {
		bound = left;
	}
	c->pg = pg_connect(db, bound, err, sizeof(err));
	if (c->pg == NULL) {
		connect_result(db, 0);
		cm_warn(NULL, "postgres: cannot connect: %s", err);
		return (tsvc_store_fail(st, CM_EUNAVAIL, DETAIL_UNAVAIL));
	}
	rv = session_setup(st);
	if (rv != CM_OK) {
		drop(c);
		connect_result(db, 0);
		return (rv);
	}
	connect_result(db, 1);
	cm_info(NULL, "postgres: reconnected");
	return (CM_OK);
}

// idle_alive checks an idle connection without a round trip: a server
// that shut down or restarted has sent an error and closed the socket, so
// it is readable. Reading it (PQconsumeInput) tells a closed connection
// from a harmless notice. 1 when the connection is usable.
static int
idle_alive(PGconn *pg)
{
	for (int i = 0; i < 4; i++) {
		struct pollfd pfd = { PQsocket(pg), POLLIN, 0 };
		int           rc  = poll(&pfd, 1, 0);

		if (rc == 0) {
			break;
		}
		if (rc < 0) {
			if (errno == EINTR) {
				continue;
			}
			return (0);
		}
		if (!PQconsumeInput(pg)) {
			return (0);
		}
	}
	return (PQstatus(pg) == CONNECTION_OK);
}

// conn_usable makes sure st has a working connection before a
// statement: probes an idle one, reconnects a broken one. Inside a
// transaction a lost connection cannot be replaced (the transaction is
// gone with it): CM_EUNAVAIL until the core rolls back.
static cm_err
conn_usable(tsvc_store *st)
{
	tsvc_conn *c = st->conn;

	// Outside a transaction the server must be idle too: a BEGIN
	// abandoned at a deadline may have started one after all, and
	// running later requests inside it would be wrong; such a connection
	// is replaced.
	if (c->pg != NULL && PQstatus(c->pg) == CONNECTION_OK &&
	    (c->in_tx ||
	        (idle_alive(c->pg) &&
	            PQtransactionStatus(c->pg) == PQTRANS_IDLE))) {
		return (CM_OK);
	}
	if (c->in_tx) {
		drop(c);
		return (tsvc_store_fail(st, CM_EUNAVAIL, DETAIL_UNAVAIL));
	}
	if (c->pg != NULL && PQstatus(c->pg) == CONNECTION_OK) {
		cm_warn(NULL,
		    "postgres: a transaction was left open by an"
		    " abandoned statement; replacing the connection");
	} else if (c->pg != NULL) {
		char msg[PG_ERR_MAX];

		one_line(msg, sizeof(msg), PQerrorMessage(c->pg));
		cm_warn(NULL, "postgres: connection lost: %s", msg);
	}
	return (reconnect(st));
}

// ---------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------

// conn_lost: the connection broke under a statement.
static cm_err
conn_lost(tsvc_store *st, const char *what)
{
	tsvc_conn *c = st->conn;
	char       msg[PG_ERR_MAX];

	one_line(msg, sizeof(msg),
	    c->pg != NULL ? PQerrorMessage(c->pg) : "no connection");
	cm_warn(NULL, "postgres %s: connection lost: %s", what, msg);
	drop(c);
	return (tsvc_store_fail(st, CM_EUNAVAIL, DETAIL_UNAVAIL));
}

// res_fail converts a failed result once, where it enters our code. The
// server's message goes to the log only; the client gets a generic text.
static cm_err
res_fail(tsvc_store *st, const PGresult *r, const char *what)
{
	const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	char        msg[PG_ERR_MAX];

	one_line(msg, sizeof(msg), PQresultErrorMessage(r));
	if (state == NULL) {
		// A client-side failure: libpq lost the connection or memory.
		if (st->conn->pg == NULL ||
		    PQstatus(st->conn->pg) != CONNECTION_OK) {
			return (conn_lost(st, what));
		}
		cm_error(NULL, "postgres %s: %s", what, msg);
		return (tsvc_store_fail(st, CM_EINTERNAL, DETAIL_INTERNAL));
	}
	// Connection exceptions, admin/crash shutdown, cannot connect now.
	if (strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
	    strcmp(state, "57P02") == 0 || strcmp(state, "57P04") == 0) {
		return (conn_lost(st, what)); // logs libpq's message
	}
	if (strncmp(state, "57P", 3) == 0) {
		cm_warn(NULL, "postgres %s: %s (%s)", what, msg, state);
		return (tsvc_store_fail(st, CM_EUNAVAIL, DETAIL_UNAVAIL));
	}
	// query_canceled: our cancel at the deadline, or statement_timeout.
	if (strcmp(state, "57014") == 0) {
		cm_warn(NULL, "postgres %s: %s", what, msg);
		return (tsvc_store_fail(st, CM_ETIMEDOUT, DETAIL_TIMEOUT));
	}
	// Serialization failure, deadlock, lock not available, too many
	// connections / out of resources: transient, retry later.
	if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
	    strcmp(state, "55P03") == 0 || strncmp(state, "53", 2) == 0) {
		cm_warn(NULL, "postgres %s: %s (%s)", what, msg, state);
		return (tsvc_store_fail(st, CM_EUNAVAIL, DETAIL_UNAVAIL));
	}
	// The prepared statement is gone (a pooler in between, DISCARD):
	// prepare again on the next call.
	if (strcmp(state, "26000") == 0) {
		cm_warn(NULL, "postgres %s: %s", what, msg);
		memset(st->conn->prepared, 0, sizeof(st->conn->prepared));
		return (tsvc_store_fail(st, CM_EUNAVAIL, DETAIL_UNAVAIL));
	}
	if (strcmp(state, "23505") == 0) { // unique_violation
		return (tsvc_store_fail(st, CM_EEXIST, "id already exists"));
	}
	// foreign_key_violation: a checkpoint for a thread deleted meanwhile.
	if (strcmp(state, "23503") == 0) {
		return (tsvc_store_fail(st, CM_ENOENT, "Thread not found"));
	}
	// jsonb cannot hold a \u0000 in a string (22P05), text an invalid
	// byte sequence (22021): input the sqlite backend stores but this
	// one must refuse.
	if (strcmp(state, "22P05") == 0) {
		return (tsvc_store_fail(
		    st, CM_EINVAL, "JSON strings must not contain \\u0000"));
	}
	if (strcmp(state, "22021") == 0) {
		return (tsvc_store_fail(st, CM_EINVAL, "text must be UTF-8"));
	}
	// program_limit_exceeded: a jsonb document over PostgreSQL's limits.
	if (strcmp(state, "54000") == 0) {
		cm_warn(NULL, "postgres %s: %s", what, msg);
		return (tsvc_store_fail(
		    st, CM_ETOOBIG, "document exceeds a storage limit"));
	}
	cm_error(NULL, "postgres %s: %s (%s)", what, msg, state);
	return (tsvc_store_fail(st, CM_EINTERNAL, DETAIL_INTERNAL));
}

// ---------------------------------------------------------------------
// Sending statements and waiting for results
// ---------------------------------------------------------------------

// drain_results reads and discards what remains of the current statement
// for at most PG_DRAIN_MS. 0 when the connection is idle again, -1 when
// it is not (then it must be dropped).
static int
drain_results(PGconn *pg)
{
	int64_t end = cm_mono_ms() + PG_DRAIN_MS;

	for (;;) {
		PGresult *r;

		while (PQisBusy(pg)) {
			struct pollfd pfd  = { PQsocket(pg), POLLIN, 0 };
			int64_t       left = end - cm_mono_ms();
			int           rc;

			if (left <= 0) {
				return (-1);
			}
			rc = poll(&pfd, 1, (int) left);
			if (rc < 0 && errno != EINTR) {
				return (-1);
			}
			if (rc > 0 && !PQconsumeInput(pg)) {
				return (-1);
			}
		}
		r = PQgetResult(pg);
		if (r == NULL) {
			return (PQstatus(pg) == CONNECTION_OK ? 0 : -1);
		}
		PQclear(r);
	}
}

// abandon stops the running statement: cancel, then drain. A connection
// that does not settle within PG_DRAIN_MS is dropped.
static void
abandon(tsvc_store *st, const char *what)
{
	tsvc_conn *c = st->conn;
	PGcancel  *cn;
	char       err[256];

	if (c->pg == NULL) {
		return;
	}
	cn = PQgetCancel(c->pg);
	if (cn != NULL) {
		if (!PQcancel(cn, err, sizeof(err))) {
			cm_warn(
			    NULL, "postgres %s: cancel failed: %s", what, err);
		}
		PQfreeCancel(cn);
	}
	if (drain_results(c->pg) != 0) {
		cm_warn(NULL,
		    "postgres %s: statement did not end after cancel;"
		    " closing the connection",
		    what);
		drop(c);
	}
}

// wait_ready flushes the outgoing statement and waits until a result can
// be read without blocking, for at most c->until_ms. At the deadline the
// statement is abandoned and the call fails with CM_ETIMEDOUT.
static cm_err
wait_ready(tsvc_store *st, const char *what)
{
	tsvc_conn *c  = st->conn;
	PGconn    *pg = c->pg;

	for (;;) {
		struct pollfd pfd;
		int           flush = PQflush(pg);
		int           timeout;
		int           rc;

		if (flush < 0) {
			return (conn_lost(st, what));
		}
		if (flush == 0 && !PQisBusy(pg)) {
			return (CM_OK);
		}
		timeout = -1;
		if (c->until_ms != 0) {
			int64_t left = c->until_ms - cm_now_ms();

			if (left <= 0) {
				abandon(st, what);
				cm_warn(NULL,
				    "postgres %s: %s passed; statement"
				    " cancelled",
				    what,
				    c->until_is_deadline ? "deadline"
				                         : "wait limit");
				return (tsvc_store_fail(
				    st, CM_ETIMEDOUT, DETAIL_TIMEOUT));
			}
			timeout = left > INT_MAX ? INT_MAX : (int) left;
		}
		pfd.fd      = PQsocket(pg);
		pfd.events  = POLLIN | (flush == 1 ? POLLOUT : 0);
		pfd.revents = 0;
		rc          = poll(&pfd, 1, timeout);
		if (rc < 0) {
			if (errno == EINTR) {
				continue;
			}
			return (conn_lost(st, what));
		}
		if (rc > 0 && (pfd.revents & (POLLIN | POLLERR | POLLHUP)) &&
		    !PQconsumeInput(pg)) {
			return (conn_lost(st, what));
		}
	}
}

// set_wait decides how long the next statement may take: until the
// request's deadline; without one, statement_timeout plus a grace (the
// server should have cancelled by then); without either, or on a no_wait
// connection (migrations), no bound. end_tx statements get PG_END_TX_MS
// beyond that: abandoning a COMMIT at the deadline would leave its outcome
// unknown, and a ROLLBACK must run after the deadline has passed.
static void
set_wait(tsvc_store *st, int end_tx)
{
	tsvc_conn *c   = st->conn;
	int        to  = c->db->opt.statement_timeout_ms;
	int64_t    now = cm_now_ms();

	c->until_is_deadline = 0;
	if (st->deadline_ms != 0) {
		c->until_ms          = st->deadline_ms;
		c->until_is_deadline = 1;
	} else if (to > 0 && !c->no_wait) {
		c->until_ms = now + to + PG_NO_DEADLINE_GRACE_MS;
	} else {
		c->until_ms = 0;
	}
	if (end_tx) {
		c->until_ms =
		    (c->until_ms > now ? c->until_ms : now) + PG_END_TX_MS;
		c->until_is_deadline = 0;
	}
}

// collect reads every result of the sent statement. On CM_OK *out (may
// be NULL) gets the last successful result (caller PQclears); the first
// failure is what is returned.
static cm_err
collect(tsvc_store *st, const char *what, PGresult **out)
{
	PGresult *keep = NULL;
	cm_err    err  = CM_OK;

	for (;;) {
		PGresult *r;
		cm_err    rv = wait_ready(st, what);

		if (rv != CM_OK) {
			PQclear(keep);
			return (rv);
		}
		r = PQgetResult(st->conn->pg);
		if (r == NULL) {
			break;
		}
		switch (PQresultStatus(r)) {
		case PGRES_TUPLES_OK:
		case PGRES_COMMAND_OK:
		case PGRES_SINGLE_TUPLE:
			if (err == CM_OK) {
				PQclear(keep);
				keep = r;
			} else {
				PQclear(r);
			}
			break;
		default:
			if (err == CM_OK) {
				err = res_fail(st, r, what);
			}
			PQclear(r);
			if (st->conn->pg == NULL) { // dropped: nothing more
				PQclear(keep);
				return (err);
			}
		}
	}
	if (err != CM_OK) {
		PQclear(keep);
		return (err);
	}
	if (out != NULL) {
		*out = keep;
	} else {
		PQclear(keep);
	}
	return (CM_OK);
}

// run_sql runs fixed SQL text (migrations, session setup) with
// parameters, unprepared.
static cm_err
run_sql(tsvc_store *st, const char *sql, const pgparam *p, PGresult **out)
{
	tsvc_conn *c = st->conn;

	if (c->pg == NULL) {
		return (tsvc_store_fail(st, CM_EUNAVAIL, DETAIL_UNAVAIL));
	}
	set_wait(st, 0);
	if (!PQsendQueryParams(c->pg, sql, p != NULL ? p->n : 0, NULL,
	        p != NULL ? p->v : NULL, p != NULL ? p->len : NULL,
	        p != NULL ? p->fmt : NULL, 0)) {
		return (conn_lost(st, "setup"));
	}
	return (collect(st, "setup", out));
}

// stmt_label writes the server-side name of statement id: "tg<id>_<gen>".
static void
stmt_label(const tsvc_conn *c, int id, char name[PG_STMT_NAME_MAX])
{
	snprintf(name, PG_STMT_NAME_MAX, "tg%d_%u", id, c->gen[id]);
}

// prepare makes sure statement id is prepared on this connection.
static cm_err
prepare(tsvc_store *st, int id)
{
	tsvc_conn *c = st->conn;
	char       name[PG_STMT_NAME_MAX];
	cm_err     rv;

	if (c->prepared[id]) {
		return (CM_OK);
	}
	stmt_label(c, id, name);
	if (!PQsendPrepare(c->pg, name, stmt_sql[id], 0, NULL)) {
		return (conn_lost(st, stmt_name[id]));
	}
	rv = collect(st, stmt_name[id], NULL);
	if (rv == CM_OK) {
		c->prepared[id] = 1;
	} else {
		// Abandoned or failed: the server may hold the statement
		// after all. The next attempt uses a new name, so it never
		// meets "already exists" (an error that would abort the
		// transaction it runs in); an orphan costs a few bytes.
		c->gen[id]++;
	}
	return (rv);
}

// q_send starts prepared statement id. single_row streams the rows one by
// one (PQsetSingleRowMode), so a page of large documents is never held
// whole in memory and can be stopped early.
static cm_err
q_send(tsvc_store *st, int id, const pgparam *p, int single_row)
{
	tsvc_conn *c = st->conn;
	char       name[PG_STMT_NAME_MAX];
	cm_err     rv;

	if (st->deadline_ms != 0 && tsvc_store_deadline_left_ms(st) <= 0) {
		return (tsvc_store_fail(st, CM_ETIMEDOUT, DETAIL_TIMEOUT));
	}
	rv = conn_usable(st);
	if (rv != CM_OK) {
		return (rv);
	}
	set_wait(st, 0);
	rv = prepare(st, id);
	if (rv != CM_OK) {
		return (rv);
	}
	stmt_label(c, id, name);
	if (!PQsendQueryPrepared(c->pg, name, p != NULL ? p->n : 0,
	        p != NULL ? p->v : NULL, p != NULL ? p->len : NULL,
	        p != NULL ? p->fmt : NULL, 0)) {
		return (conn_lost(st, stmt_name[id]));
	}
	if (single_row && !PQsetSingleRowMode(c->pg)) {
		abandon(st, stmt_name[id]);
		cm_error(
		    NULL, "postgres %s: cannot stream rows", stmt_name[id]);
		return (tsvc_store_fail(st, CM_EINTERNAL, DETAIL_INTERNAL));
	}
	return (CM_OK);
}

// run executes statement id and gives its result (*out may be NULL).
static cm_err
run(tsvc_store *st, int id, const pgparam *p, PGresult **out)
{
	cm_err rv = q_send(st, id, p, 0);

	if (rv != CM_OK) {
		return (rv);
	}
	return (collect(st, stmt_name[id], out));
}

// run_count runs a statement that changes rows and gives how many.
static cm_err
run_count(tsvc_store *st, int id, const pgparam *p, int64_t *n)
{
	PGresult *r = NULL;
	cm_err    rv;

	rv = run(st, id, p, &r);
	if (rv == CM_OK && n != NULL) {
		const char *t = PQcmdTuples(r);

		if (cm_parse_i64(t, 0, INT64_MAX, n) != CM_OK) {
			*n = 0;
		}
	}
	PQclear(r);
	return (rv);
}

// stream runs statement id in single-row mode and hands each row to
// row(arg, result); when row() fails the statement is abandoned and its
// error returned.
static cm_err
stream(tsvc_store *st, int id, const pgparam *p,
    cm_err (*row)(tsvc_store *, const PGresult *, void *), void *arg)
{
	const char *what = stmt_name[id];
	cm_err      err  = CM_OK;
	cm_err      rv;

	rv = q_send(st, id, p, 1);
	if (rv != CM_OK) {
		return (rv);
	}
	for (;;) {
		PGresult *r;

		rv = wait_ready(st, what);
		if (rv != CM_OK) {
			return (rv);
		}
		r = PQgetResult(st->conn->pg);
		if (r == NULL) {
			break;
		}
		switch (PQresultStatus(r)) {
		case PGRES_SINGLE_TUPLE:
			if (err == CM_OK) {
				err = row(st, r, arg);
				if (err != CM_OK) {
					PQclear(r);
					abandon(st, what);
					return (err);
				}
			}
			break;
		case PGRES_TUPLES_OK: // the end of the rows
			break;
		default:
			if (err == CM_OK) {
				err = res_fail(st, r, what);
			}
			if (st->conn->pg == NULL) {
				PQclear(r);
				return (err);
			}
		}
		PQclear(r);
	}
	return (err);
}

// ---------------------------------------------------------------------
// Values out
// ---------------------------------------------------------------------

// fits_i64 is 1 when the integer token s (n bytes, optional '-') is in
// jansson's json_int_t (long long) range.
static int
fits_i64(const char *s, size_t n)
{
	char    buf[24];
	int64_t v;

	if (n >= sizeof(buf)) {
		return (0);
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	return (cm_parse_i64(buf, INT64_MIN, INT64_MAX, &v) == CM_OK);
}

/**
 * json_text() turns a jsonb value as PostgreSQL prints it into compact
 * JSON that jansson (the core, the gateway) reads back to the same
 * value: new string. jsonb prints `{"a": 1, "b": [1, 2]}` with keys
 * sorted (shorter first, then bytewise) and duplicates removed (the last
 * one kept, as jansson does), which is a legal JSON text of the same
 * value; what needs care:
 *  - whitespace after ':' and ',' is removed (replies stay compact and
 *    under the same size budgets as sqlite's);
 *  - numbers come back in plain notation: a double stored as 1e+300
 *    comes back as "1" and 300 zeros, which jansson would refuse as an
 *    integer too large for long long. Such an integer token gets ".0"
 *    appended, so it is read as the same double again. Every other number
 *    is left as the server printed it (1.0 stays 1.0: numeric keeps its
 *    scale).
 * Strings are copied unchanged (jsonb escapes them the JSON way).
 */
static char *
json_text(const char *s, size_t n)
{
	char  *out = cm_xmalloc(n + 1);
	size_t o   = 0;
	size_t cap = n + 1;

	for (size_t i = 0; i < n;) {
		char ch = s[i];

		if (ch == '"') {
			size_t j = i + 1;

			while (j < n && s[j] != '"') {
				j += (s[j] == '\\') ? 2 : 1;
			}
			j = (j < n) ? j + 1 : n; // past the closing quote
			memcpy(out + o, s + i, j - i);
			o += j - i;
			i = j;
		} else if (ch == ' ' || ch == '\n' || ch == '\t' ||
		    ch == '\r') {
			i++;
		} else if (ch == '-' || (ch >= '0' && ch <= '9')) {
			size_t j    = i;
			int    frac = 0;

			while (
			    j < n && strchr("0123456789+-.eE", s[j]) != NULL) {
				frac |= (s[j] == '.' || s[j] == 'e' ||
				    s[j] == 'E');
				j++;
			}
			if (!frac && !fits_i64(s + i, j - i)) {
				// Room for ".0": the output may grow by
				// two bytes per such token.
				cap += 2;
				out = cm_xrealloc(out, cap);
				memcpy(out + o, s + i, j - i);
				o += j - i;
				out[o++] = '.';
				out[o++] = '0';
			} else {
				memcpy(out + o, s + i, j - i);
				o += j - i;
			}
			i = j;
		} else {
			out[o++] = ch;
			i++;
		}
	}
	out[o] = '\0';
	return (out);
}

// col_str: a text column as a new string ("" for NULL).
static char *
col_str(const PGresult *r, int i)
{
	if (PQgetisnull(r, 0, i)) {
		return (cm_xstrdup(""));
	}
	return (
	    cm_xstrndup(PQgetvalue(r, 0, i), (size_t) PQgetlength(r, 0, i)));
}

// col_json: a jsonb column as compact JSON ("" for NULL).
static char *
col_json(const PGresult *r, int i)
{
	if (PQgetisnull(r, 0, i)) {
		return (cm_xstrdup(""));
	}
	return (json_text(PQgetvalue(r, 0, i), (size_t) PQgetlength(r, 0, i)));
}

static int64_t
col_i64(const PGresult *r, int i)
{
	int64_t v = 0;

	if (cm_parse_i64(PQgetvalue(r, 0, i), INT64_MIN, INT64_MAX, &v) !=
	    CM_OK) {
		v = 0;
	}
	return (v);
}

// Columns of THREAD_COLS.
#define PG_THREAD_NCOLS 11

// A thread from row 0 of a THREAD_COLS result.
static tsvc_thread *
thread_from_row(const PGresult *r)
{
	tsvc_thread *t = cm_xmalloc(sizeof(*t));

	threadgate__threads__v1__thread__init(t);
	t->thread_id       = col_str(r, 0);
	t->owner           = col_str(r, 1);
	t->metadata_json   = col_json(r, 2);
	t->status          = col_str(r, 3);
	t->config_json     = col_json(r, 4);
	t->values_json     = col_json(r, 5); // NULL gives ""
	t->interrupts_json = col_json(r, 6);
	t->created_at_us   = col_i64(r, 7);
	t->updated_at_us   = col_i64(r, 8);
	t->ttl_minutes     = strtod(PQgetvalue(r, 0, 9), NULL);
	t->ttl_strategy    = col_str(r, 10);
	return (t);
}

// A checkpoint from row 0 of a CP_COLS result.
static cm_err
checkpoint_from_row(tsvc_store *st, const PGresult *r, tsvc_checkpoint **out)
{
	tsvc_checkpoint *c = cm_xmalloc(sizeof(*c));
	char            *next;
	cm_err           rv;

	threadgate__threads__v1__checkpoint__init(c);
	c->thread_id            = col_str(r, 0);
	c->checkpoint_ns        = col_str(r, 1);
	c->checkpoint_id        = col_str(r, 2);
	c->parent_checkpoint_id = col_str(r, 3); // NULL gives ""
	c->values_json          = col_json(r, 4);
	c->metadata_json        = col_json(r, 5);
	c->created_at_us        = col_i64(r, 7);
	next                    = col_json(r, 6);
	rv = tsvc_checkpoint_set_next(st, c, next, strlen(next));
	free(next);
	if (rv != CM_OK) {
		protobuf_c_message_free_unpacked(&c->base, NULL);
		return (rv);
	}
	*out = c;
	return (CM_OK);
}

// ---------------------------------------------------------------------
// Lifetime and migrations
// ---------------------------------------------------------------------

static void
set_detail(char *detail, size_t len, const char *text)
{
	if (detail != NULL && len > 0) {
		snprintf(detail, len, "%s", text);
	}
}

// migrate brings the schema to PG_SCHEMA_VERSION inside one transaction
// holding the migration advisory lock (released at commit or rollback,
// also if this process dies). Replicas starting together queue on the
// lock; the first migrates, the others then find the schema current.
static cm_err
migrate(tsvc_store *st)
{
	PGresult *r = NULL;
	pgparam   p = { 0 };
	int64_t   version;
	cm_err    rv;

	rv = run_sql(st, "BEGIN ISOLATION LEVEL READ COMMITTED", NULL, NULL);
	if (rv != CM_OK) {
		return (rv);
	}
	// A step may build an index over a large table: no statement
	// timeout inside this transaction (the client waits too, see
	// no_wait). Then wait for any other replica's migration.
	rv = run_sql(st, "SELECT set_config('statement_timeout', '0', true)",
	    NULL, NULL);
	if (rv != CM_OK) {
		goto out;
	}
	p_i64(&p, PG_MIGRATE_LOCK_KEY);
	rv = run_sql(st, "SELECT pg_advisory_xact_lock($1::bigint)", &p, NULL);
	if (rv != CM_OK) {
		goto out;
	}
	// Only create the version table when it is missing: CREATE ... IF
	// NOT EXISTS would need CREATE privilege even when nothing is made.
	rv = run_sql(st, "SELECT to_regclass('threadgate_schema') IS NOT NULL",
	    NULL, &r);
	if (rv != CM_OK) {
		goto out;
	}
	if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
		rv = run_sql(st,
		    "CREATE TABLE threadgate_schema ("
		    " version integer NOT NULL PRIMARY KEY,"
		    " applied_at timestamptz NOT NULL DEFAULT now())",
		    NULL, NULL);
		if (rv != CM_OK) {
			goto out;
		}
	}
	PQclear(r);
	r  = NULL;
	rv = run_sql(st,
	    "SELECT coalesce(max(version), 0) FROM threadgate_schema", NULL,
	    &r);
	if (rv != CM_OK) {
		goto out;
	}
	version = col_i64(r, 0);
	if (version > PG_SCHEMA_VERSION) {
		rv = tsvc_store_fail(st, CM_EUNAVAIL,
		    "database schema version %" PRId64
		    " is newer than this build's %d",
		    version, PG_SCHEMA_VERSION);
		goto out;
	}
	for (int64_t v = version; v < PG_SCHEMA_VERSION; v++) {
		pgparam vp = { 0 };

		for (const char *const *s = migrations[v]; *s != NULL; s++) {
			rv = run_sql(st, *s, NULL, NULL);
			if (rv != CM_OK) {
				goto out;
			}
		}
		p_i64(&vp, v + 1);
		rv = run_sql(st,
		    "INSERT INTO threadgate_schema (version)"
		    " VALUES ($1::bigint)",
		    &vp, NULL);
		if (rv != CM_OK) {
			goto out;
		}
		cm_info(NULL, "postgres: schema migrated to version %" PRId64,
		    v + 1);
	}
	rv = run_sql(st, "COMMIT", NULL, NULL);
out:
	PQclear(r);
	if (rv != CM_OK && st->conn->pg != NULL) {
		char keep[sizeof(st->detail)];

		memcpy(keep, st->detail, sizeof(keep));
		(void) run_sql(st, "ROLLBACK", NULL, NULL);
		memcpy(st->detail, keep, sizeof(keep));
	}
	return (rv);
}

// open_conn connects a new connection of db with its session settings.
// st is a scratch store for the setup statements (detail set on failure).
static cm_err
open_conn(pg_db *db, tsvc_store *st, tsvc_conn **out)
{
	tsvc_conn *c = cm_xcalloc(1, sizeof(*c));
	char       err[PG_ERR_MAX];
	cm_err     rv;

	c->db    = db;
	st->conn = c;
	c->pg = pg_connect(db, db->opt.connect_timeout_ms, err, sizeof(err));
	if (c->pg == NULL) {
		connect_result(db, 0);
		free(c);
		st->conn = NULL;
		return (tsvc_store_fail(
		    st, CM_EUNAVAIL, "cannot connect to PostgreSQL: %s", err));
	}
	rv = session_setup(st);
	if (rv != CM_OK) {
		drop(c);
		free(c);
		st->conn = NULL;
		return (rv);
	}
	connect_result(db, 1);
	*out = c;
	return (CM_OK);
}

static void
pg_conn_close(tsvc_conn *c)
{
	if (c != NULL) {
		drop(c);
		free(c->tx_owner);
		free(c);
	}
}

static void
pg_db_close(void *p)
{
	pg_db *db = p;

	if (db == NULL) {
		return;
	}
	pthread_mutex_destroy(&db->mu);
	free(db->target);
	free(db);
}

static cm_err
pg_db_open(const char *target, const tsvc_db_options *opt, void **out,
    char *detail, size_t detail_len)
{
	tsvc_store        st = { 0 };
	pg_db            *db;
	tsvc_conn        *c   = NULL;
	char             *err = NULL;
	PQconninfoOption *o;
	cm_err            rv;

	if (target == NULL || target[0] == '\0') {
		set_detail(detail, detail_len, "database target is empty");
		return (CM_EINVAL);
	}
	// Validate the syntax first. libpq's parse message may quote a
	// piece of the string (which could be a password): not repeated.
	o = PQconninfoParse(target, &err);
	if (o == NULL) {
		PQfreemem(err);
		set_detail(detail, detail_len,
		    "THREADS_DB is not a valid PostgreSQL URL or keyword"
		    " string");
		return (CM_EINVAL);
	}
	PQconninfoFree(o);
	db         = cm_xcalloc(1, sizeof(*db));
	db->target = cm_xstrdup(target);
	db->opt    = (opt != NULL) ? *opt : tsvc_db_options_default();
	if (db->opt.connect_timeout_ms <= 0) {
		db->opt.connect_timeout_ms = TSVC_CONNECT_TIMEOUT_DEFAULT_MS;
	}
	if (db->opt.statement_timeout_ms < 0) {
		db->opt.statement_timeout_ms = 0;
	}
	db->search_window = db->opt.search_window > 0 ? db->opt.search_window
	                                              : PG_SEARCH_WINDOW;
	if (db->search_window > PG_SEARCH_WINDOW_MAX) {
		db->search_window = PG_SEARCH_WINDOW_MAX;
	}
	pthread_mutex_init(&db->mu, NULL);
	rv = open_conn(db, &st, &c);
	if (rv == CM_OK) {
		// Migrations may wait on another replica's lock and build
		// indexes: no client-side wait limit (statement_timeout still
		// applies).
		c->no_wait = 1;
		rv         = migrate(&st);
	}
	pg_conn_close(c);
	if (rv != CM_OK) {
		set_detail(detail, detail_len, st.detail);
		pg_db_close(db);
		return (rv);
	}
	*out = db;
	return (CM_OK);
}

static cm_err
pg_conn_open(void *db, tsvc_conn **out, char *detail, size_t detail_len)
{
	tsvc_store st = { 0 };
	cm_err     rv;

	rv = open_conn(db, &st, out);
	if (rv != CM_OK) {
		set_detail(detail, detail_len, st.detail);
	}
	return (rv);
}

static cm_err
pg_ping(tsvc_store *st)
{
	return (run(st, S_PING, NULL, NULL));
}

// ---------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------

static void pg_rollback(tsvc_store *st);

static cm_err
pg_begin(tsvc_store *st, tsvc_tx kind)
{
	cm_err rv;

	if (st->conn->in_tx) {
		// A bug in the caller; never run statements in a transaction
		// left over from an earlier request.
		cm_error(NULL, "postgres begin: a transaction is still open");
		pg_rollback(st);
	}
	rv = run(st, kind == TSVC_TX_WRITE ? S_BEGIN_WRITE : S_BEGIN_READ,
	    NULL, NULL);
	if (rv == CM_OK) {
		st->conn->in_tx = 1;
		set_tx_owner(st->conn, NULL);
	}
	return (rv);
}

// lock_owner takes the owner's usage row for the open write transaction
// before anything else of the owner is locked (see "Lock order"), once
// per transaction; a new owner's row is made first. Outside a
// transaction a statement is its own transaction and locks nothing
// before it, so there is no order to keep.
static cm_err
lock_owner(tsvc_store *st, const char *owner)
{
	tsvc_conn *c = st->conn;
	PGresult  *r = NULL;
	pgparam    p = { 0 };
	int        found;
	cm_err     rv;

	if (!c->in_tx ||
	    (c->tx_owner != NULL && strcmp(c->tx_owner, owner) == 0)) {
		return (CM_OK);
	}
	p_text(&p, owner);
	rv    = run(st, S_OWNER_LOCK, &p, &r);
	found = (rv == CM_OK && PQntuples(r) > 0);
	PQclear(r);
	r = NULL;
	if (rv == CM_OK && !found) {
		rv = run_count(st, S_OWNER_NEW, &p, NULL);
		if (rv == CM_OK) {
			rv = run(st, S_OWNER_LOCK, &p, &r);
			PQclear(r);
		}
	}
	if (rv == CM_OK) {
		set_tx_owner(c, owner);
	}
	return (rv);
}

// end_tx sends COMMIT or ROLLBACK (see set_wait for how long it may
// take). Whatever the outcome, no transaction is open afterwards: it
// ended, or its connection was dropped (and the server rolled it back).
static cm_err
end_tx(tsvc_store *st, int id, PGresult **out)
{
	tsvc_conn *c = st->conn;
	char       name[PG_STMT_NAME_MAX];
	cm_err     rv;

	if (c->pg == NULL) { // the connection died with the transaction
		c->in_tx = 0;
		return (tsvc_store_fail(st, CM_EUNAVAIL, DETAIL_UNAVAIL));
	}
	set_wait(st, 1);
	rv = prepare(st, id);
	if (rv == CM_OK) {
		set_wait(st, 1);
		stmt_label(c, id, name);
		if (!PQsendQueryPrepared(
		        c->pg, name, 0, NULL, NULL, NULL, 0)) {
			rv = conn_lost(st, stmt_name[id]);
		} else {
			rv = collect(st, stmt_name[id], out);
		}
	}
	if (rv != CM_OK && c->pg != NULL &&
	    PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
		cm_warn(NULL,
		    "postgres %s failed; closing the connection (the server"
		    " rolls back)",
		    stmt_name[id]);
		drop(c);
	}
	c->in_tx = 0;
	set_tx_owner(c, NULL);
	return (rv);
}

static cm_err
pg_commit(tsvc_store *st)
{
	PGresult *r = NULL;
	char      keep[sizeof(st->detail)];
	cm_err    rv;

	if (st->deadline_ms != 0 && tsvc_store_deadline_left_ms(st) <= 0) {
		// Too late to commit: the work is abandoned, as the
		// deadline rule says.
		rv = tsvc_store_fail(st, CM_ETIMEDOUT, DETAIL_TIMEOUT);
		memcpy(keep, st->detail, sizeof(keep));
		pg_rollback(st);
		memcpy(st->detail, keep, sizeof(keep));
		return (rv);
	}
	rv = end_tx(st, S_COMMIT, &r);
	if (rv == CM_OK && strcmp(PQcmdStatus(r), "COMMIT") != 0) {
		// COMMIT of a failed transaction answers ROLLBACK.
		cm_error(NULL, "postgres commit: transaction was rolled back");
		rv = tsvc_store_fail(st, CM_EINTERNAL, DETAIL_INTERNAL);
	}
	PQclear(r);
	return (rv);
}

static void
pg_rollback(tsvc_store *st)
{
	tsvc_conn *c = st->conn;
	char       keep[sizeof(st->detail)];

	if (!c->in_tx) {
		return;
	}
	// Keep the detail of the failure that led here.
	memcpy(keep, st->detail, sizeof(keep));
	(void) end_tx(st, S_ROLLBACK, NULL);
	memcpy(st->detail, keep, sizeof(keep));
}

// ---------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------

static cm_err
pg_id_owner(
    tsvc_store *st, const char *owner, const char *id, tsvc_id_state *state)
{
	PGresult *r = NULL;
	pgparam   p = { 0 };
	cm_err    rv;

	p_text(&p, owner);
	p_text(&p, id);
	rv = run(st, S_ID_OWNER, &p, &r);
	if (rv == CM_OK) {
		if (PQntuples(r) == 0) {
			*state = TSVC_ID_FREE;
		} else if (strcmp(PQgetvalue(r, 0, 0), "t") == 0) {
			*state = TSVC_ID_MINE;
		} else {
			*state = TSVC_ID_TAKEN;
		}
	}
	PQclear(r);
	return (rv);
}

static cm_err
pg_thread_insert(tsvc_store *st, const tsvc_thread *t)
{
	pgparam p = { 0 };
	int64_t n = 0;
	cm_err  rv;

	rv = lock_owner(st, t->owner);
	if (rv != CM_OK) {
		return (rv);
	}
	p_text(&p, t->owner);
	p_text(&p, t->thread_id);
	p_text(&p, t->metadata_json);
	p_i64(&p, t->created_at_us);
	p_f64(&p, t->ttl_minutes);
	p_text(&p, t->ttl_strategy != NULL ? t->ttl_strategy : "");
	rv = run_count(st, S_THREAD_INSERT, &p, &n);
	if (rv == CM_OK && n == 0) {
		rv = tsvc_store_fail(st, CM_EEXIST,
		    "Thread with ID %s already exists", t->thread_id);
	}
	return (rv);
}

// Runs the one-thread lookup s (or, with lock, s_lock after taking the
// owner's usage lock) for owner's thread id; *r is the result on CM_OK.
static cm_err
owner_thread_row(tsvc_store *st, const char *owner, const char *id, int lock,
    int s, int s_lock, PGresult **r)
{
	pgparam p = { 0 };
	cm_err  rv;

	if (lock) {
		rv = lock_owner(st, owner);
		if (rv != CM_OK) {
			return (rv);
		}
	}
	p_text(&p, owner);
	p_text(&p, id);
	return (run(st, lock ? s_lock : s, &p, r));
}

static cm_err
pg_thread_get(tsvc_store *st, const char *owner, const char *id, int lock,
    tsvc_thread **out)
{
	PGresult *r = NULL;
	cm_err    rv;

	rv = owner_thread_row(
	    st, owner, id, lock, S_THREAD_GET, S_THREAD_GET_LOCK, &r);
	if (rv == CM_OK) {
		*out = PQntuples(r) > 0 ? thread_from_row(r) : NULL;
	}
	PQclear(r);
	return (rv);
}

static cm_err
pg_thread_created(tsvc_store *st, const char *owner, const char *id, int lock,
    int64_t *created_us)
{
	PGresult *r = NULL;
	cm_err    rv;

	rv = owner_thread_row(
	    st, owner, id, lock, S_THREAD_CREATED, S_THREAD_CREATED_LOCK, &r);
	if (rv == CM_OK) {
		*created_us = PQntuples(r) > 0 ? col_i64(r, 0) : 0;
	}
	PQclear(r);
	return (rv);
}

static cm_err
pg_thread_update(tsvc_store *st, const char *owner, const char *id,
    const char *metadata_json, double ttl_minutes, const char *ttl_strategy,
    int64_t now_us, int64_t *changed)
{
	pgparam p  = { 0 };
	cm_err  rv = lock_owner(st, owner);

	if (rv != CM_OK) {
		return (rv);
	}
	p_text(&p, owner);
	p_text(&p, id);
	p_text(&p, metadata_json);
	p_i64(&p, now_us);
	p_f64(&p, ttl_minutes);
	p_text(&p, ttl_strategy != NULL ? ttl_strategy : "");
	return (run_count(st, S_THREAD_UPDATE, &p, changed));
}

static cm_err
pg_thread_set_values(tsvc_store *st, const char *owner, const char *id,
    const char *values_json, int64_t now_us)
{
	pgparam p  = { 0 };
	cm_err  rv = lock_owner(st, owner);

	if (rv != CM_OK) {
		return (rv);
	}
	p_text(&p, owner);
	p_text(&p, id);
	p_text(&p, values_json);
	p_i64(&p, now_us);
	return (run_count(st, S_THREAD_SET_VALUES, &p, NULL));
}

static cm_err
pg_thread_delete(
    tsvc_store *st, const char *owner, const char *id, int64_t *deleted)
{
	pgparam p  = { 0 };
	cm_err  rv = lock_owner(st, owner);

	if (rv != CM_OK) {
		return (rv);
	}
	p_text(&p, owner);
	p_text(&p, id);
	return (run_count(st, S_THREAD_DELETE, &p, deleted));
}

static cm_err
pg_thread_copy(tsvc_store *st, const char *owner, const char *src,
    const char *dst, int64_t now_us, int64_t *copied)
{
	PGresult *r = NULL;
	pgparam   p = { 0 };
	cm_err    rv;

	rv = lock_owner(st, owner);
	if (rv != CM_OK) {
		return (rv);
	}
	p_text(&p, owner);
	p_text(&p, src);
	p_text(&p, dst);
	p_i64(&p, now_us);
	rv = run(st, S_THREAD_COPY, &p, &r);
	if (rv == CM_OK) {
		*copied = col_i64(r, 0);
	}
	PQclear(r);
	return (rv);
}

// filter_params binds $1..$5 of FILTER_WHERE. *ids gets the uuid[] text
// of the ids filter (new string or NULL; free it after the call): the ids
// are canonical UUIDs (the core checked them), so the array literal is
// plain data in a bound parameter.
static void
filter_params(pgparam *p, const char *owner, const tsvc_filter *f, char **ids)
{
	*ids = NULL;
	if (f->n_ids > 0) {
		size_t len = 0;
		char  *s   = cm_xmalloc(f->n_ids * (CM_UUID_LEN + 1) + 2);

		s[len++] = '{';
		for (size_t i = 0; i < f->n_ids; i++) {
			size_t n = strlen(f->ids[i]);

			CM_ASSERT(n == CM_UUID_LEN);
			if (i > 0) {
				s[len++] = ',';
			}
			memcpy(s + len, f->ids[i], n);
			len += n;
		}
		s[len++] = '}';
		s[len]   = '\0';
		*ids     = s;
	}
	p_text(p, owner);
	p_text(p, f->metadata);
	p_text(p, f->values);
	p_text(p, *ids);
	p_text(p, f->status);
}

typedef struct thread_sink_arg {
	tsvc_thread_sink sink;
	void            *arg;
} thread_sink_arg;

static cm_err
thread_row(tsvc_store *st, const PGresult *r, void *arg)
{
	thread_sink_arg *a = arg;

	(void) st;
	return (a->sink(a->arg, thread_from_row(r)));
}

static cm_err pg_owner_usage(
    tsvc_store *st, const char *owner, int64_t *threads, int64_t *bytes);

// window_page holds the rows of a WINDOW statement until it is known
// whether they are the answer.
typedef struct window_page {
	tsvc_thread **rows; // cap slots
	size_t        n;
	size_t        cap;     // the page's limit
	size_t        bytes;   // JSON text held, counted as the core does
	int64_t       n_owner; // the owner's rows; -1 until a row told
} window_page;

// window_row keeps one row of a WINDOW statement: THREAD_COLS, then the
// owner's row count. A page whose documents exceed the reply budget is
// given up (CM_ETOOBIG stops the statement): the next step streams the
// answer to the sink, which then decides.
static cm_err
window_row(tsvc_store *st, const PGresult *r, void *arg)
{
	window_page *w = arg;
	tsvc_thread *t = thread_from_row(r);

	if (w->n == w->cap) { // the statement's LIMIT makes this impossible
		protobuf_c_message_free_unpacked(&t->base, NULL);
		cm_error(
		    NULL, "postgres thread_search: window over its limit");
		return (tsvc_store_fail(st, CM_EINTERNAL, DETAIL_INTERNAL));
	}
	w->n_owner = col_i64(r, PG_THREAD_NCOLS);
	w->bytes += strlen(t->metadata_json) + strlen(t->values_json) +
	    strlen(t->config_json) + strlen(t->interrupts_json);
	w->rows[w->n++] = t;
	return (w->bytes > TSVC_REPLY_BUDGET ? CM_ETOOBIG : CM_OK);
}

// window_page_free frees the rows still held.
static void
window_page_free(window_page *w)
{
	for (size_t i = 0; i < w->n; i++) {
		protobuf_c_message_free_unpacked(&w->rows[i]->base, NULL);
	}
	free(w->rows);
}

// plan_params binds $1..$6 of WINDOW and GIN_SEARCH.
static void
plan_params(
    pgparam *p, const char *owner, const tsvc_filter *f, const tsvc_page *page)
{
	p_text(p, owner);
	p_text(p, f->metadata);
	p_text(p, f->values);
	p_text(p, f->status);
	p_i64(p, page->limit);
	p_i64(p, page->offset);
}

// search_window runs WINDOW over the first window rows of the owner (see
// "Search plans"). When its page is the answer, the rows go to the sink
// and *done is 1; else *n_owner gets the owner's row count.
static cm_err
search_window(tsvc_store *st, const char *owner, const tsvc_filter *f,
    const tsvc_page *page, int order, int64_t window, thread_sink_arg out,
    int *done, int64_t *n_owner)
{
	window_page w = { 0 };
	pgparam     p = { 0 };
	size_t      i;
	cm_err      rv;

	*done     = 0;
	w.cap     = (size_t) page->limit;
	w.rows    = cm_xcalloc(w.cap, sizeof(*w.rows));
	w.n_owner = -1;
	plan_params(&p, owner, f, page);
	p_i64(&p, window);
	rv = stream(st, S_WINDOW + order, &p, window_row, &w);
	if (rv == CM_ETOOBIG) {
		// Over the budget: not held here; the next step answers.
		*n_owner = INT64_MAX;
		window_page_free(&w);
		return (CM_OK);
	}
	if (rv == CM_OK && w.n_owner < 0) {
		// No match in the window: its count did not come.
		int64_t bytes;

		rv = pg_owner_usage(st, owner, &w.n_owner, &bytes);
	}
	if (rv != CM_OK ||
	    ((int64_t) w.n < page->limit && w.n_owner > window)) {
		*n_owner = w.n_owner;
		window_page_free(&w);
		return (rv);
	}
	// The answer: the sink takes each row (stolen), until it fails.
	*done = 1;
	for (i = 0; i < w.n && rv == CM_OK; i++) {
		rv = out.sink(out.arg, w.rows[i]);
	}
	for (; i < w.n; i++) {
		protobuf_c_message_free_unpacked(&w.rows[i]->base, NULL);
	}
	free(w.rows);
	return (rv);
}

static cm_err
pg_thread_search(tsvc_store *st, const char *owner, const tsvc_filter *f,
    const tsvc_page *page, tsvc_thread_sink sink, void *arg)
{
	thread_sink_arg a       = { sink, arg };
	pgparam         p       = { 0 };
	char           *ids     = NULL;
	int64_t         window  = st->conn->db->search_window;
	int64_t         n_owner = INT64_MAX;
	int             done    = 0;
	int             order;
	cm_err          rv;

	CM_ASSERT((int) page->sort >= 0 && (int) page->sort <= 3);
	order = (int) page->sort * 2 + (page->ascending ? 1 : 0);
	if ((f->metadata != NULL || f->values != NULL) && f->n_ids == 0) {
		// "Search plans", steps 1 and 2.
		rv = search_window(
		    st, owner, f, page, order, window, a, &done, &n_owner);
		if (rv == CM_OK && !done &&
		    n_owner <= window * PG_WALK_WINDOWS) {
			rv = search_window(st, owner, f, page, order,
			    window * PG_WALK_WINDOWS, a, &done, &n_owner);
		}
		if (rv != CM_OK || done) {
			return (rv);
		}
		if (f->metadata != NULL) {
			plan_params(&p, owner, f, page);
			return (stream(
			    st, S_GIN_SEARCH + order, &p, thread_row, &a));
		}
	}
	filter_params(&p, owner, f, &ids);
	p_i64(&p, page->limit);
	p_i64(&p, page->offset);
	rv = stream(st, S_SEARCH + order, &p, thread_row, &a);
	free(ids);
	return (rv);
}

static cm_err
pg_thread_count(
    tsvc_store *st, const char *owner, const tsvc_filter *f, int64_t *count)
{
	PGresult *r   = NULL;
	pgparam   p   = { 0 };
	char     *ids = NULL;
	cm_err    rv;

	if (f->metadata == NULL && f->values == NULL && f->n_ids == 0 &&
	    f->status == NULL) {
		// owner_usage.threads is exact (triggers in every write, and
		// this snapshot sees both tables alike): no need to walk a
		// million index entries.
		int64_t bytes;

		return (pg_owner_usage(st, owner, count, &bytes));
	}
	filter_params(&p, owner, f, &ids);
	rv = run(st, S_COUNT, &p, &r);
	if (rv == CM_OK) {
		*count = col_i64(r, 0);
	}
	PQclear(r);
	free(ids);
	return (rv);
}

// ---------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------

static cm_err
pg_cp_get(tsvc_store *st, const char *owner, const char *id, const char *ns,
    const char *cid, tsvc_checkpoint **out)
{
	PGresult *r = NULL;
	pgparam   p = { 0 };
	cm_err    rv;

	p_text(&p, owner);
	p_text(&p, id);
	p_text(&p, ns != NULL ? ns : "");
	if (cid != NULL) {
		p_text(&p, cid);
	}
	rv = run(st, cid != NULL ? S_CP_GET : S_CP_LATEST, &p, &r);
	if (rv == CM_OK) {
		if (PQntuples(r) == 0) {
			*out = NULL;
		} else {
			rv = checkpoint_from_row(st, r, out);
		}
	}
	PQclear(r);
	return (rv);
}

static cm_err
pg_cp_insert(tsvc_store *st, const char *owner, const tsvc_checkpoint *c)
{
	const char *parent = c->parent_checkpoint_id;
	pgparam     p      = { 0 };
	cm_err      rv     = lock_owner(st, owner);

	if (rv != CM_OK) {
		return (rv);
	}
	p_text(&p, owner);
	p_text(&p, c->thread_id);
	p_text(&p, c->checkpoint_ns != NULL ? c->checkpoint_ns : "");
	p_text(&p, c->checkpoint_id);
	p_text(&p, (parent != NULL && parent[0] != '\0') ? parent : NULL);
	p_text(&p, c->values_json);
	p_text(&p, c->metadata_json);
	p_i64(&p, c->created_at_us);
	return (run_count(st, S_CP_INSERT, &p, NULL));
}

static cm_err
pg_cp_set_metadata(tsvc_store *st, const char *owner, const char *id,
    const char *ns, const char *cid, const char *metadata_json)
{
	pgparam p  = { 0 };
	cm_err  rv = lock_owner(st, owner);

	if (rv != CM_OK) {
		return (rv);
	}
	p_text(&p, owner);
	p_text(&p, id);
	p_text(&p, ns != NULL ? ns : "");
	p_text(&p, cid);
	p_text(&p, metadata_json);
	return (run_count(st, S_CP_SET_META, &p, NULL));
}

static cm_err
pg_cp_keep_latest(tsvc_store *st, const char *owner, const char *id)
{
	pgparam p  = { 0 };
	cm_err  rv = lock_owner(st, owner);

	if (rv != CM_OK) {
		return (rv);
	}
	p_text(&p, owner);
	p_text(&p, id);
	return (run_count(st, S_CP_KEEP_LATEST, &p, NULL));
}

typedef struct cp_sink_arg {
	tsvc_checkpoint_sink sink;
	void                *arg;
} cp_sink_arg;

static cm_err
cp_row(tsvc_store *st, const PGresult *r, void *arg)
{
	cp_sink_arg     *a = arg;
	tsvc_checkpoint *c;
	cm_err           rv;

	rv = checkpoint_from_row(st, r, &c);
	if (rv != CM_OK) {
		return (rv);
	}
	return (a->sink(a->arg, c));
}

static cm_err
pg_cp_history(tsvc_store *st, const tsvc_history_query *q,
    tsvc_checkpoint_sink sink, void *arg)
{
	cp_sink_arg a = { sink, arg };
	pgparam     p = { 0 };

	p_text(&p, q->owner);
	p_text(&p, q->thread_id);
	p_text(&p, q->ns != NULL ? q->ns : "");
	p_text(&p, q->before);
	p_text(&p, q->start);
	p_text(&p, q->metadata);
	p_i64(&p, q->limit);
	return (stream(st, S_HISTORY, &p, cp_row, &a));
}

// ---------------------------------------------------------------------
// Quotas
// ---------------------------------------------------------------------

static cm_err
pg_owner_usage(
    tsvc_store *st, const char *owner, int64_t *threads, int64_t *bytes)
{
	PGresult *r = NULL;
	pgparam   p = { 0 };
	cm_err    rv;

	p_text(&p, owner);
	rv = run(st, S_USAGE, &p, &r);
	if (rv == CM_OK) {
		*threads = PQntuples(r) > 0 ? col_i64(r, 0) : 0;
		*bytes   = PQntuples(r) > 0 ? col_i64(r, 1) : 0;
	}
	PQclear(r);
	return (rv);
}

static cm_err
pg_cp_count(
    tsvc_store *st, const char *owner, const char *id, int64_t max, int64_t *n)
{
	PGresult *r = NULL;
	pgparam   p = { 0 };
	cm_err    rv;

	p_text(&p, owner);
	p_text(&p, id);
	p_i64(&p, max);
	rv = run(st, S_CP_COUNT, &p, &r);
	if (rv == CM_OK) {
		*n = col_i64(r, 0);
	}
	PQclear(r);
	return (rv);
}

// ---------------------------------------------------------------------
// System
// ---------------------------------------------------------------------

static cm_err
pg_sweep(tsvc_store *st, int64_t now_us, int64_t max, int64_t *deleted)
{
	PGresult *r = NULL;
	pgparam   p = { 0 };
	cm_err    rv;

	p_i64(&p, now_us);
	p_i64(&p, max);
	rv = run(st, S_SWEEP, &p, &r);
	if (rv == CM_OK) {
		*deleted = PQntuples(r);
	}
	PQclear(r);
	return (rv);
}

// Dead rows of deletes and updates are autovacuum's job; the server
// needs nothing from the sweeper.
static cm_err
pg_maintain(tsvc_store *st)
{
	(void) st;
	return (CM_OK);
}

const tsvc_backend tsvc_backend_pg = {
	.name              = "postgres",
	.db_open           = pg_db_open,
	.db_close          = pg_db_close,
	.conn_open         = pg_conn_open,
	.conn_close        = pg_conn_close,
	.ping              = pg_ping,
	.begin             = pg_begin,
	.commit            = pg_commit,
	.rollback          = pg_rollback,
	.id_owner          = pg_id_owner,
	.thread_insert     = pg_thread_insert,
	.thread_get        = pg_thread_get,
	.thread_created    = pg_thread_created,
	.thread_update     = pg_thread_update,
	.thread_set_values = pg_thread_set_values,
	.thread_delete     = pg_thread_delete,
	.thread_copy       = pg_thread_copy,
	.thread_search     = pg_thread_search,
	.thread_count      = pg_thread_count,
	.cp_get            = pg_cp_get,
	.cp_insert         = pg_cp_insert,
	.cp_set_metadata   = pg_cp_set_metadata,
	.cp_keep_latest    = pg_cp_keep_latest,
	.cp_history        = pg_cp_history,
	.owner_usage       = pg_owner_usage,
	.cp_count          = pg_cp_count,
	.sweep             = pg_sweep,
	.maintain          = pg_maintain,
};
