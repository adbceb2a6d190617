// SPDX-License-Identifier: MIT
//
// The sqlite3 backend of the thread-service (backend.h): the embedded
// default, one database file.
//
// One tsvc_conn is one sqlite3 connection owned by one thread (a worker
// or the sweeper) with every statement prepared once; a call only binds,
// steps and resets. The database runs in WAL mode, so readers never wait
// for the writer; sqlite allows one writer at a time, so write
// transactions start with BEGIN IMMEDIATE, which takes the write lock up
// front and waits up to the busy timeout for it. That lock also makes
// thread_get(lock = 1) hold the row: nobody else writes until commit.
//
// Filters: tg_json_contains(doc, filter), an SQL function over
// tsvc_json_contains(), decides every metadata/values filter exactly. It
// cannot use an index, so top-level metadata equality has one of its own:
// thread_meta keeps (owner, thread_id, key, value) for every top-level
// string or integer of a thread's metadata, maintained in the same
// transaction as the row. A search or count whose metadata filter has
// such a pair asks that index first how many threads have it (up to
// META_PLAN_MAX); when fewer, it walks just those threads instead of the
// owner's whole row set.
//
// Deadlines: a progress handler checks the store's deadline every
// PROGRESS_OPS virtual machine steps and interrupts the statement once it
// has passed.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "thread-service/backend.h"

// ---------------------------------------------------------------------
// Schema
//
// Checklist when you change the schema:
//  1. increment SCHEMA_VERSION;
//  2. add a step "version N-1 -> N" to migrate() (never edit a step that
//     has shipped: databases in the field ran it already);
//  3. adjust the statements below; the tests in store_test.c run against
//     every backend;
//  4. a database with a newer user_version than this build knows is
//     refused at open (an older binary must not write a newer schema).
// ---------------------------------------------------------------------

#define SCHEMA_VERSION 3

// Version 1. Times are Unix microseconds. JSON columns hold compact JSON
// text written by cm_json_dump. threads."values" is NULL until the first
// state update. Checkpoint order is (created_at, checkpoint_id): the store
// makes created_at strictly increasing per thread and namespace, because
// UUIDv7 ids are only ordered to the millisecond.
static const char schema_v1[] =
    "CREATE TABLE threads ("
    " thread_id    TEXT NOT NULL PRIMARY KEY,"
    " owner        TEXT NOT NULL,"
    " metadata     TEXT NOT NULL,"
    " status       TEXT NOT NULL DEFAULT 'idle',"
    " config       TEXT NOT NULL DEFAULT '{}',"
    " \"values\"   TEXT,"
    " interrupts   TEXT NOT NULL DEFAULT '{}',"
    " created_at   INTEGER NOT NULL,"
    " updated_at   INTEGER NOT NULL,"
    " ttl_minutes  REAL NOT NULL DEFAULT 0,"
    " ttl_strategy TEXT NOT NULL DEFAULT ''"
    ");"
    // One index per search order; thread_id is the tie-break. The unique
    // (owner, thread_id) index is the parent key of checkpoints' foreign
    // key and serves the sort by thread_id.
    "CREATE INDEX threads_owner_created ON threads(owner, created_at,"
    " thread_id);"
    "CREATE INDEX threads_owner_updated ON threads(owner, updated_at,"
    " thread_id);"
    "CREATE INDEX threads_owner_status ON threads(owner, status, thread_id);"
    "CREATE UNIQUE INDEX threads_owner_id ON threads(owner, thread_id);"
    "CREATE TABLE checkpoints ("
    " owner                TEXT NOT NULL,"
    " thread_id            TEXT NOT NULL,"
    " checkpoint_ns        TEXT NOT NULL DEFAULT '',"
    " checkpoint_id        TEXT NOT NULL,"
    " parent_checkpoint_id TEXT,"
    " \"values\"           TEXT NOT NULL,"
    " metadata             TEXT NOT NULL,"
    " next                 TEXT NOT NULL DEFAULT '[]',"
    " created_at           INTEGER NOT NULL,"
    " PRIMARY KEY (owner, thread_id, checkpoint_ns, checkpoint_id),"
    " FOREIGN KEY (owner, thread_id) REFERENCES threads(owner, thread_id)"
    "  ON DELETE CASCADE"
    ") WITHOUT ROWID;"
    // "Latest checkpoint of a thread" and "history newest first" both
    // walk this index backwards.
    "CREATE INDEX checkpoints_order ON checkpoints(owner, thread_id,"
    " checkpoint_ns, created_at, checkpoint_id);";

// What thread_meta indexes of a metadata document: top-level keys of at
// most META_KEY_MAX bytes whose value is a string of at most
// META_VALUE_MAX bytes or an integer. Longer strings and other types are
// still matched exactly by tg_json_contains(); only the index skips them.
// (Reals are left out on purpose: sqlite's and jansson's decimal parsers
// may round the same text differently in the last bit, and an index must
// never miss a row the exact check would match.)
#define META_KEY_MAX   128
#define META_VALUE_MAX 256
#define STR_(x)        #x
#define STR(x)         STR_(x)
#define META_ROW_OK(j)                                                      \
	"(" j ".type = 'integer' OR (" j ".type = 'text' AND"               \
	" length(CAST(" j ".value AS BLOB)) <= " STR(                       \
	    META_VALUE_MAX) "))"                                            \
	                    " AND length(CAST(" j ".key AS BLOB)) <= " STR( \
	                        META_KEY_MAX) " AND instr(" j               \
	                                      ".key, char(0)) = 0"

// Version 2: the expiry column and its index (the sweeper never scans),
// and the metadata equality index thread_meta, filled from every row.
static const char schema_v2[] =
    "ALTER TABLE threads ADD COLUMN expires_at INTEGER;"
    "UPDATE threads SET expires_at = updated_at"
    " + CAST(ttl_minutes * 60000000.0 AS INTEGER)"
    " WHERE ttl_strategy = 'delete' AND ttl_minutes > 0;"
    "CREATE INDEX threads_expiry ON threads(expires_at)"
    " WHERE expires_at IS NOT NULL;"
    // value has no declared type, so sqlite keeps what json_each gives:
    // TEXT for strings, INTEGER for integers; "1" never equals 1.
    "CREATE TABLE thread_meta ("
    " owner     TEXT NOT NULL,"
    " thread_id TEXT NOT NULL,"
    " key       TEXT NOT NULL,"
    " value,"
    " PRIMARY KEY (owner, thread_id, key),"
    " FOREIGN KEY (owner, thread_id) REFERENCES threads(owner, thread_id)"
    "  ON DELETE CASCADE"
    ") WITHOUT ROWID;"
    "CREATE INDEX thread_meta_value ON thread_meta(owner, key, value);"
    "INSERT INTO thread_meta (owner, thread_id, key, value)"
    " SELECT t.owner, t.thread_id, j.key, j.value FROM threads t,"
    " json_each(t.metadata) j WHERE " META_ROW_OK("j") ";";

// Bytes of JSON text a thread row / checkpoint row r holds (what the
// storage quota counts).
#define TSIZE(r)                                                           \
	"(length(CAST(" r ".metadata AS BLOB)) + coalesce(length(CAST(" r  \
	".\"values\" AS BLOB)), 0) + length(CAST(" r ".config AS BLOB)) +" \
	" length(CAST(" r ".interrupts AS BLOB)))"
#define CSIZE(r)                                                 \
	"(length(CAST(" r ".metadata AS BLOB)) + length(CAST(" r \
	".\"values\" AS BLOB)) + length(CAST(" r ".next AS BLOB)))"

// Version 3: owner_usage, what each owner stores (threads, bytes), kept
// current by triggers in the same transaction as every write, for the
// quotas. (auto_vacuum = INCREMENTAL is set on every new database before
// its first table, see open_db; older files keep their mode.)
static const char
    schema_v3[] =
        "CREATE TABLE owner_usage ("
        " owner   TEXT NOT NULL PRIMARY KEY,"
        " threads INTEGER NOT NULL DEFAULT 0,"
        " bytes   INTEGER NOT NULL DEFAULT 0"
        ") WITHOUT ROWID;"
        "INSERT INTO owner_usage (owner, threads, bytes)"
        " SELECT t.owner, count(*), sum(" TSIZE(
            "t") ") FROM threads t"
                 " GROUP BY t.owner;"
                 "UPDATE owner_usage SET bytes = bytes + coalesce((SELECT "
                 "sum(" CSIZE(
                     "c") ") FROM checkpoints c WHERE c.owner = "
                          "owner_usage.owner), 0);"
                          "CREATE TRIGGER usage_threads_ins AFTER INSERT ON "
                          "threads BEGIN"
                          " INSERT OR IGNORE INTO owner_usage (owner) VALUES "
                          "(NEW.owner);"
                          " UPDATE owner_usage SET threads = threads + 1, "
                          "bytes = bytes + " TSIZE(
                              "NEW") " WHERE owner = NEW.owner; END;"
                                     "CREATE TRIGGER usage_threads_del AFTER "
                                     "DELETE ON threads BEGIN"
                                     " UPDATE owner_usage SET threads = "
                                     "threads - 1, bytes = bytes - " TSIZE(
                                         "OLD") " WHERE owner = OLD.owner; "
                                                "END;"
                                                "CREATE TRIGGER "
                                                "usage_threads_upd AFTER "
                                                "UPDATE OF metadata, "
                                                "\"values\","
                                                " config, interrupts ON "
                                                "threads BEGIN"
                                                " UPDATE owner_usage SET "
                                                "bytes = bytes + " TSIZE("NEW") " - " TSIZE(
                                                    "OLD") " WHERE owner = "
                                                           "NEW.owner; END;"
                                                           "CREATE TRIGGER "
                                                           "usage_cp_ins "
                                                           "AFTER INSERT ON "
                                                           "checkpoints BEGIN"
                                                           " UPDATE "
                                                           "owner_usage SET "
                                                           "bytes = bytes "
                                                           "+ " CSIZE(
                                                               "NEW") " WHERE "
                                                                      "owner "
                                                                      "= "
                                                                      "NEW."
                                                                      "owner; "
                                                                      "END;"
                                                                      "CREATE "
                                                                      "TRIGGER"
                                                                      " usage_"
                                                                      "cp_del "
                                                                      "AFTER "
                                                                      "DELETE "
                                                                      "ON "
                                                                      "checkpo"
                                                                      "ints "
                                                                      "BEGIN"
                                                                      " UPDATE"
                                                                      " owner_"
                                                                      "usage "
                                                                      "SET "
                                                                      "bytes "
                                                                      "= "
                                                                      "bytes "
                                                                      "-"
                                                                      " " CSIZE(
                                                                          "OL"
                                                                          "D") " WHERE owner = OLD.owner; END;"
                                                                               "CREATE TRIGGER usage_cp_upd AFTER UPDATE OF metadata, \"values\", next"
                                                                               " ON checkpoints BEGIN"
                                                                               " UPDATE owner_usage SET bytes = bytes + " CSIZE(
                                                                                   "NEW") " - " CSIZE("OLD") " WHERE owner = NEW.owner; END;";

// ---------------------------------------------------------------------
// Statements (prepared once per connection)
// ---------------------------------------------------------------------

#define THREAD_COLS                                                           \
	"thread_id, owner, metadata, status, config, \"values\", interrupts," \
	" created_at, updated_at, ttl_minutes, ttl_strategy"

#define T_THREAD_COLS                                              \
	"t.thread_id, t.owner, t.metadata, t.status, t.config,"    \
	" t.\"values\", t.interrupts, t.created_at, t.updated_at," \
	" t.ttl_minutes, t.ttl_strategy"

#define CP_COLS                                                          \
	"thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id," \
	" \"values\", metadata, next, created_at"

// The search/count filter on table alias p ("" or "t."): ?1 owner, ?2
// metadata filter, ?3 values filter, ?4 ids (JSON array), ?5 status.
// NULL disables a filter.
#define FILTER_WHERE(p)                                                \
	p "owner = ?1"                                                 \
	  " AND (?2 IS NULL OR tg_json_contains(" p "metadata, ?2))"   \
	  " AND (?3 IS NULL OR tg_json_contains(" p "\"values\", ?3))" \
	  " AND (?4 IS NULL OR " p "thread_id IN"                      \
	  " (SELECT value FROM json_each(?4)))"                        \
	  " AND (?5 IS NULL OR " p "status = ?5)"

// The metadata index plan: the threads having (?8 key, ?9 value), walked
// first (CROSS JOIN keeps thread_meta as the outer loop).
#define META_FROM                                                       \
	" FROM thread_meta m CROSS JOIN threads t ON t.owner = m.owner" \
	" AND t.thread_id = m.thread_id"                                \
	" WHERE m.owner = ?1 AND m.key = ?8 AND m.value = ?9 AND "

// expires_at for a row whose updated_at becomes u with ttl minutes tm and
// strategy ts (SQL expressions).
#define EXPIRY(u, tm, ts)                                                  \
	"CASE WHEN " ts " = 'delete' AND " tm " > 0 THEN " u " + CAST(" tm \
	" * 60000000.0 AS INTEGER) END"

enum {
	S_BEGIN,
	S_BEGIN_IMM,
	S_COMMIT,
	S_ROLLBACK,
	S_PING,
	S_ID_OWNER,
	S_THREAD_INSERT,
	S_THREAD_GET,
	S_THREAD_CREATED,
	S_THREAD_UPDATE,
	S_THREAD_SET_VALUES,
	S_THREAD_DELETE,
	S_THREAD_COPY,
	S_META_CLEAR,
	S_META_FILL,
	S_META_COPY,
	S_META_PROBE,
	S_CP_DELETE_THREAD,
	S_CP_COPY,
	S_CP_KEEP_LATEST,
	S_CP_LATEST,
	S_CP_GET,
	S_CP_INSERT,
	S_CP_SET_META,
	S_HISTORY,
	S_COUNT,
	S_COUNT_META,
	S_SWEEP,
	S_USAGE,
	S_CP_COUNT,
	// 8 search statements each: + sort * 2 + ascending.
	S_SEARCH,
	S_SEARCH_META = S_SEARCH + 8,
	S_NSTMT       = S_SEARCH_META + 8,
};

static const char *const stmt_sql[S_SEARCH] = {
	[S_BEGIN]     = "BEGIN",
	[S_BEGIN_IMM] = "BEGIN IMMEDIATE",
	[S_COMMIT]    = "COMMIT",
	[S_ROLLBACK]  = "ROLLBACK",
	[S_PING]      = "SELECT 1 FROM threads LIMIT 1",
	// Exception to the owner rule (backend.h): decides 409 for an id
	// taken by anyone; returns only whether the caller owns the row.
	[S_ID_OWNER] = "SELECT owner = ?1 FROM threads WHERE thread_id = ?2",
	[S_THREAD_INSERT] =
	    "INSERT INTO threads (owner, thread_id, metadata, status, config,"
	    " \"values\", interrupts, created_at, updated_at, ttl_minutes,"
	    " ttl_strategy, expires_at) VALUES (?1, ?2, ?3, 'idle', '{}',"
	    " NULL, '{}', ?4, ?4, ?5, ?6, " EXPIRY("?4", "?5", "?6") ")",
	[S_THREAD_GET] = "SELECT " THREAD_COLS
	                 " FROM threads WHERE owner = ?1 AND thread_id = ?2",
	[S_THREAD_CREATED] = "SELECT created_at FROM threads"
	                     " WHERE owner = ?1 AND thread_id = ?2",
	// In an UPDATE every expression sees the old row, so updated_at
	// and expires_at are computed from the same old updated_at.
	[S_THREAD_UPDATE] =
	    "UPDATE threads SET metadata = ?3,"
	    " updated_at = max(?4, updated_at + 1),"
	    " ttl_minutes = ?5, ttl_strategy = ?6,"
	    " expires_at = " EXPIRY("max(?4, updated_at + 1)", "?5",
	        "?6") " WHERE owner = ?1 AND thread_id = ?2",
	[S_THREAD_SET_VALUES] =
	    "UPDATE threads SET \"values\" = ?3,"
	    " updated_at = max(?4, updated_at + 1),"
	    " expires_at = " EXPIRY("max(?4, updated_at + 1)", "ttl_minutes",
	        "ttl_strategy") " WHERE owner = ?1 AND thread_id = ?2",
	[S_THREAD_DELETE] =
	    "DELETE FROM threads WHERE owner = ?1 AND thread_id = ?2",
	[S_THREAD_COPY] =
	    "INSERT INTO threads (owner, thread_id, metadata, status, config,"
	    " \"values\", interrupts, created_at, updated_at, ttl_minutes,"
	    " ttl_strategy, expires_at) SELECT owner, ?3, metadata, status,"
	    " config, \"values\", interrupts, ?4, ?4, ttl_minutes,"
	    " ttl_strategy, " EXPIRY("?4", "ttl_minutes",
	        "ttl_strategy") " FROM threads WHERE owner = ?1 AND thread_id "
	                        "= ?2",
	[S_META_CLEAR] =
	    "DELETE FROM thread_meta WHERE owner = ?1 AND thread_id = ?2",
	[S_META_FILL] =
	    "INSERT INTO thread_meta (owner, thread_id, key, value)"
	    " SELECT ?1, ?2, j.key, j.value FROM json_each(?3) j"
	    " WHERE " META_ROW_OK("j"),
	[S_META_COPY] =
	    "INSERT INTO thread_meta (owner, thread_id, key, value)"
	    " SELECT owner, ?3, key, value FROM thread_meta"
	    " WHERE owner = ?1 AND thread_id = ?2",
	// How many of the owner's threads have (key, value), up to ?4.
	[S_META_PROBE] = "SELECT count(*) FROM (SELECT 1 FROM thread_meta"
	                 " WHERE owner = ?1 AND key = ?2 AND value = ?3"
	                 " LIMIT ?4)",
	[S_CP_DELETE_THREAD] =
	    "DELETE FROM checkpoints WHERE owner = ?1 AND thread_id = ?2",
	[S_CP_COPY] =
	    "INSERT INTO checkpoints (owner, thread_id, checkpoint_ns,"
	    " checkpoint_id, parent_checkpoint_id, \"values\", metadata, next,"
	    " created_at) SELECT owner, ?3, checkpoint_ns, checkpoint_id,"
	    " parent_checkpoint_id, \"values\", metadata, next, created_at"
	    " FROM checkpoints WHERE owner = ?1 AND thread_id = ?2",
	[S_CP_KEEP_LATEST] =
	    "DELETE FROM checkpoints WHERE owner = ?1 AND thread_id = ?2"
	    " AND checkpoint_id IN (SELECT checkpoint_id FROM (SELECT"
	    " checkpoint_id, row_number() OVER (PARTITION BY checkpoint_ns"
	    " ORDER BY created_at DESC, checkpoint_id DESC) AS rn"
	    " FROM checkpoints WHERE owner = ?1 AND thread_id = ?2)"
	    " WHERE rn > 1)",
	[S_CP_LATEST] =
	    "SELECT " CP_COLS " FROM checkpoints"
	    " WHERE owner = ?1 AND thread_id = ?2"
	    " AND checkpoint_ns = ?3"
	    " ORDER BY created_at DESC, checkpoint_id DESC LIMIT 1",
	[S_CP_GET] = "SELECT " CP_COLS " FROM checkpoints"
	             " WHERE owner = ?1 AND thread_id = ?2"
	             " AND checkpoint_ns = ?3 AND checkpoint_id = ?4",
	[S_CP_INSERT] =
	    "INSERT INTO checkpoints (owner, thread_id, checkpoint_ns,"
	    " checkpoint_id, parent_checkpoint_id, \"values\", metadata, next,"
	    " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '[]', ?8)",
	[S_CP_SET_META] =
	    "UPDATE checkpoints SET metadata = ?5"
	    " WHERE owner = ?1 AND thread_id = ?2 AND checkpoint_ns = ?3"
	    " AND checkpoint_id = ?4",
	// ?4 before (exclusive), ?5 start (inclusive), ?6 metadata filter,
	// ?7 limit. An unknown before/start id makes the bound NULL, so the
	// page is empty.
	[S_HISTORY] =
	    "SELECT " CP_COLS " FROM checkpoints"
	    " WHERE owner = ?1 AND thread_id = ?2 AND checkpoint_ns = ?3"
	    " AND (?4 IS NULL OR (created_at, checkpoint_id) < (SELECT"
	    " created_at, checkpoint_id FROM checkpoints WHERE owner = ?1"
	    " AND thread_id = ?2 AND checkpoint_ns = ?3 AND checkpoint_id = "
	    "?4))"
	    " AND (?5 IS NULL OR (created_at, checkpoint_id) <= (SELECT"
	    " created_at, checkpoint_id FROM checkpoints WHERE owner = ?1"
	    " AND thread_id = ?2 AND checkpoint_ns = ?3 AND checkpoint_id = "
	    "?5))"
	    " AND (?6 IS NULL OR tg_json_contains(metadata, ?6))"
	    " ORDER BY created_at DESC, checkpoint_id DESC LIMIT ?7",
	[S_COUNT] = "SELECT count(*) FROM threads WHERE " FILTER_WHERE(""),
	[S_COUNT_META] = "SELECT count(*)" META_FROM FILTER_WHERE("t."),
	// Exception to the owner rule (backend.h): the sweeper deletes
	// expired rows of every owner, through the expiry index; the
	// checkpoints and thread_meta rows go by ON DELETE CASCADE.
	[S_SWEEP] = "DELETE FROM threads WHERE rowid IN (SELECT rowid FROM"
	            " threads WHERE expires_at <= ?1 LIMIT ?2)",
	[S_USAGE] = "SELECT threads, bytes FROM owner_usage WHERE owner = ?1",
	[S_CP_COUNT] = "SELECT count(*) FROM (SELECT 1 FROM checkpoints"
	               " WHERE owner = ?1 AND thread_id = ?2 LIMIT ?3)",
};

// Order columns of the search statements, indexed by tsvc_sort.
static const char *const sort_cols[4] = {
	"created_at",
	"updated_at",
	"thread_id",
	"status",
};

// Longest generated search statement, in bytes (the text is fixed; only
// the column and direction vary).
#define SEARCH_SQL_MAX 2048
// The metadata index plan is taken when a filter pair matches fewer
// threads than this: walking them costs at most this many row reads and
// filter checks plus a sort; with more matches the ordered walk of the
// owner's index finds a page sooner.
#define META_PLAN_MAX 1000
// The progress handler runs every this many virtual machine steps (a few
// microseconds of work), so a deadline is noticed within microseconds.
#define PROGRESS_OPS 1000

struct tsvc_conn {
	sqlite3      *db;
	sqlite3_stmt *stmt[S_NSTMT];
	tsvc_store   *st; // the store of the call in progress (deadline)
};

typedef struct sq_db {
	char           *path;
	tsvc_db_options opt;
} sq_db;

// ---------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------

// db_fail converts a sqlite error once, where it enters our code. The
// sqlite message goes to the log only; the client gets a generic text.
static cm_err
db_fail(tsvc_store *st, int rc, const char *what)
{
	tsvc_conn *c       = st->conn;
	int        primary = rc & 0xff;

	if (primary == SQLITE_INTERRUPT) {
		return (tsvc_store_fail(
		    st, CM_ETIMEDOUT, "deadline passed during the query"));
	}
	if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
		cm_warn(NULL, "sqlite %s: %s", what, sqlite3_errmsg(c->db));
		return (tsvc_store_fail(
		    st, CM_EUNAVAIL, "storage busy, retry later"));
	}
	if (primary == SQLITE_CONSTRAINT &&
	    (rc == SQLITE_CONSTRAINT_PRIMARYKEY ||
	        rc == SQLITE_CONSTRAINT_UNIQUE)) {
		return (tsvc_store_fail(st, CM_EEXIST, "already exists"));
	}
	cm_error(NULL, "sqlite %s: %s (%d)", what, sqlite3_errmsg(c->db), rc);
	return (tsvc_store_fail(st, CM_EINTERNAL, "internal storage error"));
}

static int
progress(void *arg)
{
	tsvc_conn *c = arg;

	return (c->st != NULL && c->st->deadline_ms != 0 &&
	    cm_now_ms() >= c->st->deadline_ms);
}

// conn_of binds the store to its connection for the call (the progress
// handler reads the deadline through it).
static tsvc_conn *
conn_of(tsvc_store *st)
{
	tsvc_conn *c = st->conn;

	c->st = st;
	return (c);
}

static sqlite3_stmt *
stmt_get(tsvc_conn *c, int id)
{
	sqlite3_stmt *s = c->stmt[id];

	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return (s);
}

// vbind binds parameters 1..n from fmt: 't' text (NULL binds NULL),
// 'i' int64_t, 'd' double, '-' skips a parameter. Text is bound
// SQLITE_STATIC: it must live until the statement is reset.
static cm_err
vbind(tsvc_store *st, sqlite3_stmt *s, const char *fmt, va_list ap)
{
	int rc = SQLITE_OK;

	for (int i = 0; fmt[i] != '\0' && rc == SQLITE_OK; i++) {
		const char *t;

		switch (fmt[i]) {
		case 't':
			t  = va_arg(ap, const char *);
			rc = (t != NULL)
			    ? sqlite3_bind_text(s, i + 1, t, -1, SQLITE_STATIC)
			    : sqlite3_bind_null(s, i + 1);
			break;
		case 'i':
			rc = sqlite3_bind_int64(s, i + 1, va_arg(ap, int64_t));
			break;
		case 'd':
			rc = sqlite3_bind_double(s, i + 1, va_arg(ap, double));
			break;
		case '-':
			break;
		default:
			CM_ASSERT(0);
		}
	}
	if (rc != SQLITE_OK) {
		return (db_fail(st, rc, "bind"));
	}
	return (CM_OK);
}

// query binds and starts statement id: on CM_OK *row is 1 when a row is
// ready (read it with sqlite3_column_*, then next_row) or 0 when none.
// The caller resets the statement when done with it.
static cm_err
query(
    tsvc_store *st, int id, sqlite3_stmt **sp, int *row, const char *fmt, ...)
{
	tsvc_conn    *c = conn_of(st);
	sqlite3_stmt *s = stmt_get(c, id);
	va_list       ap;
	cm_err        rv;
	int           rc;

	va_start(ap, fmt);
	rv = vbind(st, s, fmt, ap);
	va_end(ap);
	if (rv != CM_OK) {
		return (rv);
	}
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		rv = db_fail(st, rc, "query");
		sqlite3_reset(s);
		return (rv);
	}
	*sp  = s;
	*row = (rc == SQLITE_ROW);
	return (CM_OK);
}

// next_row steps a statement started by query().
static cm_err
next_row(tsvc_store *st, sqlite3_stmt *s, int *row)
{
	int rc = sqlite3_step(s);

	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		return (db_fail(st, rc, "step"));
	}
	*row = (rc == SQLITE_ROW);
	return (CM_OK);
}

// run binds and runs a statement that returns no rows; *changes (may be
// NULL) gets the number of rows changed.
static cm_err
run(tsvc_store *st, int id, int64_t *changes, const char *fmt, ...)
{
	tsvc_conn    *c = conn_of(st);
	sqlite3_stmt *s = stmt_get(c, id);
	va_list       ap;
	cm_err        rv;
	int           rc;

	va_start(ap, fmt);
	rv = vbind(st, s, fmt, ap);
	va_end(ap);
	if (rv != CM_OK) {
		return (rv);
	}
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		return (db_fail(st, rc, "exec"));
	}
	if (changes != NULL) {
		*changes = sqlite3_changes64(c->db);
	}
	return (CM_OK);
}

// one_int runs a statement that returns one integer in *out (0 when it
// returns no row).
static cm_err
one_int(tsvc_store *st, int id, int64_t *out, const char *fmt, ...)
{
	tsvc_conn    *c = conn_of(st);
	sqlite3_stmt *s = stmt_get(c, id);
	va_list       ap;
	cm_err        rv;
	int           rc;

	va_start(ap, fmt);
	rv = vbind(st, s, fmt, ap);
	va_end(ap);
	if (rv != CM_OK) {
		return (rv);
	}
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(s, 0);
	} else if (rc == SQLITE_DONE) {
		*out = 0;
	} else {
		rv = db_fail(st, rc, "query");
	}
	sqlite3_reset(s);
	return (rv);
}

static char *
col_dup(sqlite3_stmt *s, int i)
{
	const unsigned char *p = sqlite3_column_text(s, i);
	int                  n = sqlite3_column_bytes(s, i);

	if (p == NULL) {
		return (cm_xstrdup(""));
	}
	return (cm_xstrndup((const char *) p, (size_t) n));
}

static tsvc_thread *
thread_from_row(sqlite3_stmt *s)
{
	tsvc_thread *t = cm_xmalloc(sizeof(*t));

	threadgate__threads__v1__thread__init(t);
	t->thread_id       = col_dup(s, 0);
	t->owner           = col_dup(s, 1);
	t->metadata_json   = col_dup(s, 2);
	t->status          = col_dup(s, 3);
	t->config_json     = col_dup(s, 4);
	t->values_json     = col_dup(s, 5); // NULL column gives ""
	t->interrupts_json = col_dup(s, 6);
	t->created_at_us   = sqlite3_column_int64(s, 7);
	t->updated_at_us   = sqlite3_column_int64(s, 8);
	t->ttl_minutes     = sqlite3_column_double(s, 9);
	t->ttl_strategy    = col_dup(s, 10);
	return (t);
}

// checkpoint_from_row reads a CP_COLS row.
static cm_err
checkpoint_from_row(tsvc_store *st, sqlite3_stmt *s, tsvc_checkpoint **out)
{
	tsvc_checkpoint *c = cm_xmalloc(sizeof(*c));
	cm_err           rv;

	threadgate__threads__v1__checkpoint__init(c);
	c->thread_id            = col_dup(s, 0);
	c->checkpoint_ns        = col_dup(s, 1);
	c->checkpoint_id        = col_dup(s, 2);
	c->parent_checkpoint_id = col_dup(s, 3);
	c->values_json          = col_dup(s, 4);
	c->metadata_json        = col_dup(s, 5);
	c->created_at_us        = sqlite3_column_int64(s, 7);
	rv                      = tsvc_checkpoint_set_next(st, c,
	                         (const char *) sqlite3_column_text(s, 6),
	                         (size_t) sqlite3_column_bytes(s, 6));
	if (rv != CM_OK) {
		protobuf_c_message_free_unpacked(&c->base, NULL);
		return (rv);
	}
	*out = c;
	return (CM_OK);
}

// ---------------------------------------------------------------------
// tg_json_contains(doc, filter)
// ---------------------------------------------------------------------

static void
filter_free(void *p)
{
	json_decref((json_t *) p);
}

// tg_json_contains(doc TEXT, filter TEXT): 1 when doc contains filter
// (tsvc_json_contains), 0 when not or when doc is NULL or not JSON, NULL
// when filter is NULL, an SQL error when filter is not JSON (the store
// validates filters before binding them, so that cannot happen from a
// request). The parsed filter is cached per statement execution.
static void
sql_json_contains(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	json_t     *filter;
	json_t     *doc = NULL;
	const char *text;
	int         len;

	(void) argc;
	if (sqlite3_value_type(argv[1]) == SQLITE_NULL) {
		sqlite3_result_null(ctx);
		return;
	}
	filter = sqlite3_get_auxdata(ctx, 1);
	if (filter == NULL) {
		cm_err rv;

		text = (const char *) sqlite3_value_text(argv[1]);
		len  = sqlite3_value_bytes(argv[1]);
		rv   = cm_json_parse(text != NULL ? text : "", (size_t) len,
		    TSVC_JSON_FIELD_MAX, &filter, NULL, 0);
		if (rv != CM_OK) {
			sqlite3_result_error(
			    ctx, "tg_json_contains: bad filter", -1);
			return;
		}
		// sqlite owns filter from here on (it may free it at once, so
		// fetch it back before use).
		sqlite3_set_auxdata(ctx, 1, filter, filter_free);
		filter = sqlite3_get_auxdata(ctx, 1);
		if (filter == NULL) {
			// sqlite could not keep it (OOM): it is freed already.
			sqlite3_result_error_nomem(ctx);
			return;
		}
	}
	if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
		sqlite3_result_int(ctx, 0);
		return;
	}
	text = (const char *) sqlite3_value_text(argv[0]);
	len  = sqlite3_value_bytes(argv[0]);
	if (text == NULL ||
	    cm_json_parse(text, (size_t) len, TSVC_JSON_STORED_MAX, &doc, NULL,
	        0) != CM_OK) {
		// Stored documents are always valid JSON; if one is not, it
		// matches nothing rather than failing the whole query.
		sqlite3_result_int(ctx, 0);
		return;
	}
	sqlite3_result_int(ctx, tsvc_json_contains(doc, filter));
	json_decref(doc);
}

// ---------------------------------------------------------------------
// Open / close
// ---------------------------------------------------------------------

static cm_err
exec_sql(sqlite3 *db, const char *sql, char *detail, size_t detail_len)
{
	char *msg = NULL;
	int   rc  = sqlite3_exec(db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		snprintf(detail, detail_len, "%s",
		    msg != NULL ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return (CM_EUNAVAIL);
	}
	return (CM_OK);
}

// open_db opens path with the pragmas every connection uses.
static cm_err
open_db(const sq_db *d, sqlite3 **out, char *detail, size_t detail_len)
{
	sqlite3 *db = NULL;
	int      rc;
	cm_err   rv;

	rc = sqlite3_open_v2(d->path, &db,
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	    NULL);
	if (rc != SQLITE_OK) {
		snprintf(detail, detail_len, "cannot open %s: %s", d->path,
		    db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close_v2(db);
		return (CM_EUNAVAIL);
	}
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, d->opt.busy_timeout_ms);
	// auto_vacuum first: it only takes on a new, empty file (before its
	// first table), where it lets maintain() give freed pages back.
	// journal_mode answers with a row; sqlite3_exec ignores it. WAL lets
	// readers run while one writer writes; NORMAL is durable at every
	// checkpoint and loses at most the last transactions on power loss.
	// journal_size_limit truncates the WAL after checkpoints.
	rv = exec_sql(db,
	    "PRAGMA auto_vacuum = INCREMENTAL;"
	    " PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
	    " PRAGMA foreign_keys = ON;"
	    " PRAGMA journal_size_limit = " STR(TSVC_WAL_LIMIT_BYTES) ";",
	    detail, detail_len);
	if (rv != CM_OK) {
		sqlite3_close_v2(db);
		return (rv);
	}
	*out = db;
	return (CM_OK);
}

// migrate brings the schema to SCHEMA_VERSION in one IMMEDIATE
// transaction: processes starting at once on one file take turns, and
// each re-reads the version under the lock.
static cm_err
migrate(sqlite3 *db, char *detail, size_t detail_len)
{
	sqlite3_stmt *s = NULL;
	int64_t       version;
	cm_err        rv;
	int           rc;

	rv = exec_sql(db, "BEGIN IMMEDIATE", detail, detail_len);
	if (rv != CM_OK) {
		return (rv);
	}
	rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL);
	if (rc != SQLITE_OK || sqlite3_step(s) != SQLITE_ROW) {
		snprintf(detail, detail_len, "cannot read schema version: %s",
		    sqlite3_errmsg(db));
		rv = CM_EUNAVAIL;
		goto out;
	}
	version = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	s = NULL;
	if (version > SCHEMA_VERSION) {
		snprintf(detail, detail_len,
		    "database schema version %lld is newer than %d",
		    (long long) version, SCHEMA_VERSION);
		rv = CM_EUNAVAIL;
		goto out;
	}
	if (version < 1) {
		rv = exec_sql(db, schema_v1, detail, detail_len);
		if (rv != CM_OK) {
			goto out;
		}
	}
	if (version < 2) {
		rv = exec_sql(db, schema_v2, detail, detail_len);
		if (rv != CM_OK) {
			goto out;
		}
	}
	if (version < 3) {
		rv = exec_sql(db, schema_v3, detail, detail_len);
		if (rv != CM_OK) {
			goto out;
		}
	}
	// Future steps go here: if (version < 4) { ... }
	if (version < SCHEMA_VERSION) {
		char sql[64];

		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d",
		    SCHEMA_VERSION);
		rv = exec_sql(db, sql, detail, detail_len);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = exec_sql(db, "COMMIT", detail, detail_len);
out:
	sqlite3_finalize(s);
	if (rv != CM_OK) {
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	}
	return (rv);
}

static cm_err
sq_db_open(const char *target, const tsvc_db_options *opt, void **out,
    char *detail, size_t detail_len)
{
	sq_db   *d  = cm_xcalloc(1, sizeof(*d));
	sqlite3 *db = NULL;
	cm_err   rv;

	d->path = cm_xstrdup(target);
	d->opt  = *opt;
	rv      = open_db(d, &db, detail, detail_len);
	if (rv == CM_OK) {
		rv = migrate(db, detail, detail_len);
	}
	sqlite3_close_v2(db);
	if (rv != CM_OK) {
		free(d->path);
		free(d);
		return (rv);
	}
	*out = d;
	return (CM_OK);
}

static void
sq_db_close(void *arg)
{
	sq_db *d = arg;

	if (d != NULL) {
		free(d->path);
		free(d);
	}
}

static void
sq_conn_close(tsvc_conn *c)
{
	if (c == NULL) {
		return;
	}
	for (int i = 0; i < S_NSTMT; i++) {
		sqlite3_finalize(c->stmt[i]);
	}
	sqlite3_close_v2(c->db);
	free(c);
}

static cm_err
prepare_all(tsvc_conn *c, char *detail, size_t detail_len)
{
	char sql[SEARCH_SQL_MAX];
	int  rc;

	for (int i = 0; i < S_NSTMT; i++) {
		const char *text = (i < S_SEARCH) ? stmt_sql[i] : sql;

		if (i >= S_SEARCH) {
			int         k    = (i - S_SEARCH) % 8;
			int         meta = (i >= S_SEARCH_META);
			int         col  = k / 2;
			const char *dir  = (k % 2) ? "ASC" : "DESC";
			char        order[128];
			int         len;

			// thread_id is unique: it needs no tie-break.
			if (col == TSVC_SORT_THREAD_ID) {
				snprintf(order, sizeof(order),
				    "%sthread_id %s", meta ? "t." : "", dir);
			} else {
				snprintf(order, sizeof(order),
				    "%s%s %s, %sthread_id %s",
				    meta ? "t." : "", sort_cols[col], dir,
				    meta ? "t." : "", dir);
			}
			len = meta
			    ? snprintf(sql, sizeof(sql),
			          "SELECT " T_THREAD_COLS META_FROM
			              FILTER_WHERE("t.") " ORDER BY %s"
			                                 " LIMIT ?6 OFFSET"
			                                 " ?7",
			          order)
			    : snprintf(sql, sizeof(sql),
			          "SELECT " THREAD_COLS
			          " FROM threads WHERE " FILTER_WHERE(
			              "") " ORDER BY %s LIMIT ?6 OFFSET ?7",
			          order);
			CM_ASSERT(len > 0 && (size_t) len < sizeof(sql));
		}
		rc = sqlite3_prepare_v3(c->db, text, -1,
		    SQLITE_PREPARE_PERSISTENT, &c->stmt[i], NULL);
		if (rc != SQLITE_OK) {
			snprintf(detail, detail_len,
			    "cannot prepare statement %d: %s", i,
			    sqlite3_errmsg(c->db));
			return (CM_EINTERNAL);
		}
	}
	return (CM_OK);
}

static cm_err
sq_conn_open(void *arg, tsvc_conn **out, char *detail, size_t detail_len)
{
	sq_db     *d = arg;
	tsvc_conn *c = cm_xcalloc(1, sizeof(*c));
	char       dbuf[CM_RPC_DETAIL_MAX];
	cm_err     rv;
	int        rc;

	if (detail == NULL || detail_len == 0) {
		detail     = dbuf;
		detail_len = sizeof(dbuf);
	}
	rv = open_db(d, &c->db, detail, detail_len);
	if (rv != CM_OK) {
		free(c);
		return (rv);
	}
	rc = sqlite3_create_function_v2(c->db, "tg_json_contains", 2,
	    SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL,
	    sql_json_contains, NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		snprintf(detail, detail_len, "cannot register SQL functions");
		sq_conn_close(c);
		return (CM_EINTERNAL);
	}
	sqlite3_progress_handler(c->db, PROGRESS_OPS, progress, c);
	rv = prepare_all(c, detail, detail_len);
	if (rv != CM_OK) {
		sq_conn_close(c);
		return (rv);
	}
	*out = c;
	return (CM_OK);
}

static cm_err
sq_ping(tsvc_store *st)
{
	int64_t one;

	return (one_int(st, S_PING, &one, ""));
}

// ---------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------

static cm_err
sq_begin(tsvc_store *st, tsvc_tx kind)
{
	return (
	    run(st, kind == TSVC_TX_WRITE ? S_BEGIN_IMM : S_BEGIN, NULL, ""));
}

static cm_err
sq_commit(tsvc_store *st)
{
	return (run(st, S_COMMIT, NULL, ""));
}

static void
sq_rollback(tsvc_store *st)
{
	tsvc_conn *c = conn_of(st);

	// A ROLLBACK must not be interrupted by a deadline that has passed.
	c->st = NULL;
	if (!sqlite3_get_autocommit(c->db) &&
	    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK) {
		// A failed ROLLBACK leaves sqlite in autocommit mode anyway
		// (the transaction is gone); log and go on.
		cm_error(
		    NULL, "sqlite rollback failed: %s", sqlite3_errmsg(c->db));
	}
}

// ---------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------

static cm_err
sq_id_owner(
    tsvc_store *st, const char *owner, const char *id, tsvc_id_state *state)
{
	sqlite3_stmt *s;
	int           row;
	cm_err        rv;

	rv = query(st, S_ID_OWNER, &s, &row, "tt", owner, id);
	if (rv != CM_OK) {
		return (rv);
	}
	*state = !row                       ? TSVC_ID_FREE
	    : sqlite3_column_int(s, 0) != 0 ? TSVC_ID_MINE
	                                    : TSVC_ID_TAKEN;
	sqlite3_reset(s);
	return (CM_OK);
}

static cm_err
meta_refresh(tsvc_store *st, const char *owner, const char *id,
    const char *metadata_json)
{
	cm_err rv = run(st, S_META_CLEAR, NULL, "tt", owner, id);

	if (rv == CM_OK) {
		rv = run(
		    st, S_META_FILL, NULL, "ttt", owner, id, metadata_json);
	}
	return (rv);
}

static cm_err
sq_thread_insert(tsvc_store *st, const tsvc_thread *t)
{
	cm_err rv;

	rv = run(st, S_THREAD_INSERT, NULL, "tttidt", t->owner, t->thread_id,
	    t->metadata_json, (int64_t) t->created_at_us, t->ttl_minutes,
	    t->ttl_strategy);
	if (rv == CM_OK) {
		rv = run(st, S_META_FILL, NULL, "ttt", t->owner, t->thread_id,
		    t->metadata_json);
	}
	return (rv);
}

static cm_err
sq_thread_get(tsvc_store *st, const char *owner, const char *id, int lock,
    tsvc_thread **out)
{
	sqlite3_stmt *s;
	int           row;
	cm_err        rv;

	// lock: BEGIN IMMEDIATE already holds the database's write lock.
	(void) lock;
	rv = query(st, S_THREAD_GET, &s, &row, "tt", owner, id);
	if (rv != CM_OK) {
		return (rv);
	}
	*out = row ? thread_from_row(s) : NULL;
	sqlite3_reset(s);
	return (CM_OK);
}

static cm_err
sq_thread_created(tsvc_store *st, const char *owner, const char *id, int lock,
    int64_t *created_us)
{
	(void) lock;
	return (one_int(st, S_THREAD_CREATED, created_us, "tt", owner, id));
}

static cm_err
sq_thread_update(tsvc_store *st, const char *owner, const char *id,
    const char *metadata_json, double ttl_minutes, const char *ttl_strategy,
    int64_t now_us, int64_t *changed)
{
	int64_t n = 0;
	cm_err  rv;

	rv = run(st, S_THREAD_UPDATE, &n, "tttidt", owner, id, metadata_json,
	    now_us, ttl_minutes, ttl_strategy);
	if (rv == CM_OK && n > 0) {
		rv = meta_refresh(st, owner, id, metadata_json);
	}
	if (rv == CM_OK && changed != NULL) {
		*changed = n;
	}
	return (rv);
}

static cm_err
sq_thread_set_values(tsvc_store *st, const char *owner, const char *id,
    const char *values_json, int64_t now_us)
{
	return (run(st, S_THREAD_SET_VALUES, NULL, "ttti", owner, id,
	    values_json, now_us));
}

static cm_err
sq_thread_delete(
    tsvc_store *st, const char *owner, const char *id, int64_t *deleted)
{
	// thread_meta rows go by ON DELETE CASCADE; checkpoints too, but
	// deleting them first keeps the cascade's work out of the parent
	// delete.
	cm_err rv = run(st, S_CP_DELETE_THREAD, NULL, "tt", owner, id);

	if (rv == CM_OK) {
		rv = run(st, S_THREAD_DELETE, deleted, "tt", owner, id);
	}
	return (rv);
}

static cm_err
sq_thread_copy(tsvc_store *st, const char *owner, const char *src,
    const char *dst, int64_t now_us, int64_t *copied)
{
	int64_t n = 0;
	cm_err  rv;

	rv = run(st, S_THREAD_COPY, &n, "ttti", owner, src, dst, now_us);
	if (rv == CM_OK && n > 0) {
		rv = run(st, S_META_COPY, NULL, "ttt", owner, src, dst);
	}
	if (rv == CM_OK && n > 0) {
		rv = run(st, S_CP_COPY, NULL, "ttt", owner, src, dst);
	}
	if (rv == CM_OK) {
		*copied = n;
	}
	return (rv);
}

// A metadata pair the index can look up: key and a string or integer.
typedef struct meta_pair {
	const char *key;
	const char *text; // string value, or NULL for an integer
	int64_t     num;
} meta_pair;

// indexable tells whether (key, v) of a filter is a pair thread_meta
// holds for every document that has it (see META_ROWS_SQL).
static int
indexable(const char *key, size_t key_len, const json_t *v, meta_pair *p)
{
	if (key_len > META_KEY_MAX || strlen(key) != key_len) {
		return (0);
	}
	if (json_is_integer(v)) {
		p->key  = key;
		p->text = NULL;
		p->num  = json_integer_value(v);
		return (1);
	}
	if (json_is_string(v) && json_string_length(v) <= META_VALUE_MAX &&
	    strlen(json_string_value(v)) == json_string_length(v)) {
		p->key  = key;
		p->text = json_string_value(v);
		return (1);
	}
	return (0);
}

// bind_pair binds a pair's key and value to parameters k and k + 1.
static cm_err
bind_pair(tsvc_store *st, sqlite3_stmt *s, int k, const meta_pair *p)
{
	int rc = sqlite3_bind_text(s, k, p->key, -1, SQLITE_STATIC);

	if (rc == SQLITE_OK) {
		rc = p->text != NULL
		    ? sqlite3_bind_text(s, k + 1, p->text, -1, SQLITE_STATIC)
		    : sqlite3_bind_int64(s, k + 1, p->num);
	}
	return (rc == SQLITE_OK ? CM_OK : db_fail(st, rc, "bind"));
}

// pick_pair chooses the filter's most selective indexable pair: *use is
// 1 when it matches fewer than META_PLAN_MAX of the owner's threads.
static cm_err
pick_pair(tsvc_store *st, const char *owner, const tsvc_filter *f,
    meta_pair *best, int *use)
{
	tsvc_conn  *c      = conn_of(st);
	int64_t     best_n = META_PLAN_MAX;
	const char *key;
	size_t      key_len;
	json_t     *v;

	*use = 0;
	if (f->metadata_doc == NULL) {
		return (CM_OK);
	}
	json_object_keylen_foreach((json_t *) f->metadata_doc, key, key_len, v)
	{
		sqlite3_stmt *s = stmt_get(c, S_META_PROBE);
		meta_pair     p;
		int64_t       n = 0;
		cm_err        rv;
		int           rc;

		if (!indexable(key, key_len, v, &p)) {
			continue;
		}
		rv = (sqlite3_bind_text(s, 1, owner, -1, SQLITE_STATIC) ==
		         SQLITE_OK)
		    ? bind_pair(st, s, 2, &p)
		    : db_fail(st, SQLITE_ERROR, "bind");
		if (rv == CM_OK) {
			sqlite3_bind_int64(s, 4, META_PLAN_MAX);
			rc = sqlite3_step(s);
			if (rc == SQLITE_ROW) {
				n = sqlite3_column_int64(s, 0);
			} else {
				rv = db_fail(st, rc, "probe");
			}
		}
		sqlite3_reset(s);
		if (rv != CM_OK) {
			return (rv);
		}
		if (n < best_n) {
			best_n = n;
			*best  = p;
			*use   = 1;
		}
	}
	return (CM_OK);
}

// ids_json gives the ids filter as the JSON array text json_each() reads
// (new string), or NULL when there is none.
static char *
ids_json(const tsvc_filter *f)
{
	json_t *arr;
	char   *text;

	if (f->n_ids == 0) {
		return (NULL);
	}
	arr = json_array();
	for (size_t i = 0; i < f->n_ids; i++) {
		json_array_append_new(arr, json_string(f->ids[i]));
	}
	text = cm_json_dump(arr);
	json_decref(arr);
	return (text);
}

static cm_err
sq_thread_search(tsvc_store *st, const char *owner, const tsvc_filter *f,
    const tsvc_page *page, tsvc_thread_sink sink, void *arg)
{
	tsvc_conn    *c   = conn_of(st);
	char         *ids = ids_json(f);
	meta_pair     pair;
	sqlite3_stmt *s;
	int           use_meta = 0;
	int           id;
	int           row;
	int           rc;
	cm_err        rv;

	rv = pick_pair(st, owner, f, &pair, &use_meta);
	if (rv != CM_OK) {
		goto out;
	}
	id = (use_meta ? S_SEARCH_META : S_SEARCH) + (int) page->sort * 2 +
	    (page->ascending ? 1 : 0);
	s  = stmt_get(c, id);
	rv = CM_OK;
	if (sqlite3_bind_text(s, 1, owner, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_text(s, 2, f->metadata, -1, SQLITE_STATIC) !=
	        SQLITE_OK ||
	    sqlite3_bind_text(s, 3, f->values, -1, SQLITE_STATIC) !=
	        SQLITE_OK ||
	    sqlite3_bind_text(s, 4, ids, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_text(s, 5, f->status, -1, SQLITE_STATIC) !=
	        SQLITE_OK ||
	    sqlite3_bind_int64(s, 6, page->limit) != SQLITE_OK ||
	    sqlite3_bind_int64(s, 7, page->offset) != SQLITE_OK) {
		rv = db_fail(st, sqlite3_errcode(c->db), "bind");
	}
	if (rv == CM_OK && use_meta) {
		rv = bind_pair(st, s, 8, &pair);
	}
	rc  = (rv == CM_OK) ? sqlite3_step(s) : SQLITE_DONE;
	row = (rc == SQLITE_ROW);
	if (rv == CM_OK && rc != SQLITE_ROW && rc != SQLITE_DONE) {
		rv = db_fail(st, rc, "search");
	}
	while (rv == CM_OK && row) {
		rv = sink(arg, thread_from_row(s));
		if (rv == CM_OK) {
			rv = next_row(st, s, &row);
		}
	}
	sqlite3_reset(s);
out:
	free(ids);
	return (rv);
}

static cm_err sq_owner_usage(
    tsvc_store *st, const char *owner, int64_t *threads, int64_t *bytes);

static cm_err
sq_thread_count(
    tsvc_store *st, const char *owner, const tsvc_filter *f, int64_t *count)
{
	tsvc_conn    *c   = conn_of(st);
	char         *ids = NULL;
	meta_pair     pair;
	sqlite3_stmt *s;
	int           use_meta = 0;
	int           rc;
	cm_err        rv;

	if (f->metadata == NULL && f->values == NULL && f->n_ids == 0 &&
	    f->status == NULL) {
		// owner_usage.threads is kept exact by triggers in every write
		// transaction: no need to walk a million index entries.
		int64_t bytes;

		return (sq_owner_usage(st, owner, count, &bytes));
	}
	rv = pick_pair(st, owner, f, &pair, &use_meta);
	if (rv != CM_OK) {
		return (rv);
	}
	ids = ids_json(f);
	s   = stmt_get(c, use_meta ? S_COUNT_META : S_COUNT);
	if (sqlite3_bind_text(s, 1, owner, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_text(s, 2, f->metadata, -1, SQLITE_STATIC) !=
	        SQLITE_OK ||
	    sqlite3_bind_text(s, 3, f->values, -1, SQLITE_STATIC) !=
	        SQLITE_OK ||
	    sqlite3_bind_text(s, 4, ids, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_text(s, 5, f->status, -1, SQLITE_STATIC) !=
	        SQLITE_OK) {
		rv = db_fail(st, sqlite3_errcode(c->db), "bind");
	}
	if (rv == CM_OK && use_meta) {
		rv = bind_pair(st, s, 8, &pair);
	}
	if (rv == CM_OK) {
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			*count = sqlite3_column_int64(s, 0);
		} else {
			rv = db_fail(st, rc, "count");
		}
	}
	sqlite3_reset(s);
	free(ids);
	return (rv);
}

// ---------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------

static cm_err
sq_cp_get(tsvc_store *st, const char *owner, const char *id, const char *ns,
    const char *cid, tsvc_checkpoint **out)
{
	sqlite3_stmt *s;
	int           row;
	cm_err        rv;

	if (cid != NULL) {
		rv = query(st, S_CP_GET, &s, &row, "tttt", owner, id, ns, cid);
	} else {
		rv = query(st, S_CP_LATEST, &s, &row, "ttt", owner, id, ns);
	}
	if (rv != CM_OK) {
		return (rv);
	}
	if (!row) {
		sqlite3_reset(s);
		*out = NULL;
		return (CM_OK);
	}
	rv = checkpoint_from_row(st, s, out);
	sqlite3_reset(s);
	return (rv);
}

static cm_err
sq_cp_insert(tsvc_store *st, const char *owner, const tsvc_checkpoint *c)
{
	return (run(st, S_CP_INSERT, NULL, "ttttttti", owner, c->thread_id,
	    c->checkpoint_ns, c->checkpoint_id,
	    c->parent_checkpoint_id[0] != '\0' ? c->parent_checkpoint_id
	                                       : NULL,
	    c->values_json, c->metadata_json, (int64_t) c->created_at_us));
}

static cm_err
sq_cp_set_metadata(tsvc_store *st, const char *owner, const char *id,
    const char *ns, const char *cid, const char *metadata_json)
{
	return (run(st, S_CP_SET_META, NULL, "ttttt", owner, id, ns, cid,
	    metadata_json));
}

static cm_err
sq_cp_keep_latest(tsvc_store *st, const char *owner, const char *id)
{
	return (run(st, S_CP_KEEP_LATEST, NULL, "tt", owner, id));
}

static cm_err
sq_cp_history(tsvc_store *st, const tsvc_history_query *q,
    tsvc_checkpoint_sink sink, void *arg)
{
	sqlite3_stmt *s;
	int           row;
	cm_err        rv;

	rv = query(st, S_HISTORY, &s, &row, "tttttti", q->owner, q->thread_id,
	    q->ns, q->before, q->start, q->metadata, (int64_t) q->limit);
	if (rv != CM_OK) {
		return (rv);
	}
	while (rv == CM_OK && row) {
		tsvc_checkpoint *c;

		rv = checkpoint_from_row(st, s, &c);
		if (rv == CM_OK) {
			rv = sink(arg, c);
		}
		if (rv == CM_OK) {
			rv = next_row(st, s, &row);
		}
	}
	sqlite3_reset(s);
	return (rv);
}

// ---------------------------------------------------------------------
// System
// ---------------------------------------------------------------------

static cm_err
sq_sweep(tsvc_store *st, int64_t now_us, int64_t max, int64_t *deleted)
{
	int64_t n = 0;
	cm_err  rv;

	rv = sq_begin(st, TSVC_TX_WRITE);
	if (rv != CM_OK) {
		return (rv);
	}
	rv = run(st, S_SWEEP, &n, "ii", now_us, max);
	if (rv == CM_OK) {
		rv = sq_commit(st);
	}
	if (rv != CM_OK) {
		sq_rollback(st);
		return (rv);
	}
	*deleted = n;
	return (CM_OK);
}

static cm_err
sq_owner_usage(
    tsvc_store *st, const char *owner, int64_t *threads, int64_t *bytes)
{
	sqlite3_stmt *s;
	int           row;
	cm_err        rv;

	rv = query(st, S_USAGE, &s, &row, "t", owner);
	if (rv != CM_OK) {
		return (rv);
	}
	*threads = row ? sqlite3_column_int64(s, 0) : 0;
	*bytes   = row ? sqlite3_column_int64(s, 1) : 0;
	sqlite3_reset(s);
	return (CM_OK);
}

static cm_err
sq_cp_count(
    tsvc_store *st, const char *owner, const char *id, int64_t max, int64_t *n)
{
	return (one_int(st, S_CP_COUNT, n, "tti", owner, id, max));
}

// Pages freed by one maintain(): 64k pages of 4 KiB, 256 MiB, so a run
// holds the write lock only briefly; the rest goes at the next run.
#define VACUUM_PAGES 65536

static cm_err
sq_maintain(tsvc_store *st)
{
	tsvc_conn *c = conn_of(st);
	char       detail[CM_RPC_DETAIL_MAX];
	cm_err     rv;

	rv =
	    exec_sql(c->db, "PRAGMA incremental_vacuum(" STR(VACUUM_PAGES) ")",
	        detail, sizeof(detail));
	if (rv == CM_OK) {
		// TRUNCATE resets the WAL to zero bytes when no reader needs
		// it; with long readers it does what it can (busy is fine).
		rv = exec_sql(c->db, "PRAGMA wal_checkpoint(TRUNCATE)", detail,
		    sizeof(detail));
	}
	if (rv != CM_OK) {
		return (tsvc_store_fail(
		    st, CM_EUNAVAIL, "maintenance: %s", detail));
	}
	return (CM_OK);
}

const tsvc_backend tsvc_backend_sqlite = {
	.name              = "sqlite",
	.db_open           = sq_db_open,
	.db_close          = sq_db_close,
	.conn_open         = sq_conn_open,
	.conn_close        = sq_conn_close,
	.ping              = sq_ping,
	.begin             = sq_begin,
	.commit            = sq_commit,
	.rollback          = sq_rollback,
	.id_owner          = sq_id_owner,
	.thread_insert     = sq_thread_insert,
	.thread_get        = sq_thread_get,
	.thread_created    = sq_thread_created,
	.thread_update     = sq_thread_update,
	.thread_set_values = sq_thread_set_values,
	.thread_delete     = sq_thread_delete,
	.thread_copy       = sq_thread_copy,
	.thread_search     = sq_thread_search,
	.thread_count      = sq_thread_count,
	.cp_get            = sq_cp_get,
	.cp_insert         = sq_cp_insert,
	.cp_set_metadata   = sq_cp_set_metadata,
	.cp_keep_latest    = sq_cp_keep_latest,
	.cp_history        = sq_cp_history,
	.owner_usage       = sq_owner_usage,
	.cp_count          = sq_cp_count,
	.sweep             = sq_sweep,
	.maintain          = sq_maintain,
};
