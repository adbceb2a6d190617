// SPDX-License-Identifier: MIT
//
// The thread-service's storage: every SQL statement of the service.
//
// One tsvc_store is one sqlite3 connection owned by one thread (an rpc
// worker or the TTL sweeper). The database runs in WAL mode, so readers
// never wait for the writer; sqlite allows one writer at a time, so every
// read-modify-write (create, metadata merge, state update, copy, prune)
// runs inside BEGIN IMMEDIATE, which takes the write lock up front and
// waits up to TSVC_BUSY_TIMEOUT_MS for it. Every statement is prepared
// once when the store opens; a request only binds, steps and resets.
//
// Every statement that touches threads or checkpoints is constrained by
// owner (parameter ?1 everywhere). The two exceptions are documented at
// their statements: S_ID_TAKEN and S_SWEEP_SCAN.
//
// The public functions validate their request, so the rpc handlers in
// server.c stay thin and the unit tests reach every rule without a socket.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "thread-service/tsvc.h"

// ---------------------------------------------------------------------
// Schema
//
// Checklist when you change the schema:
//  1. increment TSVC_SCHEMA_VERSION;
//  2. add a step "version N-1 -> N" to migrate() (never edit a step that
//     has shipped: databases in the field ran it already);
//  3. adjust the statements below and the tests in store_test.c;
//  4. a database with a newer user_version than this build knows is
//     refused at open (an older binary must not write a newer schema).
// ---------------------------------------------------------------------

#define TSVC_SCHEMA_VERSION 1

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

// ---------------------------------------------------------------------
// Statements (prepared once per connection)
// ---------------------------------------------------------------------

#define THREAD_COLS                                                           \
	"thread_id, owner, metadata, status, config, \"values\", interrupts," \
	" created_at, updated_at, ttl_minutes, ttl_strategy"

#define CP_COLS                                                          \
	"thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id," \
	" \"values\", metadata, next, created_at"

// The search/count filter: ?1 owner, ?2 metadata filter, ?3 values
// filter, ?4 ids (JSON array), ?5 status. NULL disables a filter.
#define FILTER_WHERE                                                          \
	"owner = ?1"                                                          \
	" AND (?2 IS NULL OR tg_json_contains(metadata, ?2))"                 \
	" AND (?3 IS NULL OR tg_json_contains(\"values\", ?3))"               \
	" AND (?4 IS NULL OR thread_id IN (SELECT value FROM json_each(?4)))" \
	" AND (?5 IS NULL OR status = ?5)"

enum {
	S_BEGIN,
	S_BEGIN_IMM,
	S_COMMIT,
	S_ROLLBACK,
	S_ID_TAKEN,
	S_THREAD_INSERT,
	S_THREAD_GET,
	S_THREAD_CREATED,
	S_THREAD_UPDATE,
	S_THREAD_SET_VALUES,
	S_THREAD_DELETE,
	S_THREAD_COPY,
	S_CP_DELETE_THREAD,
	S_CP_COPY,
	S_CP_KEEP_LATEST,
	S_CP_LATEST,
	S_CP_GET,
	S_CP_INSERT,
	S_CP_SET_META,
	S_HISTORY,
	S_COUNT,
	S_SWEEP_SCAN,
	// 8 search statements: S_SEARCH + sort_by * 2 + ascending.
	S_SEARCH,
	S_NSTMT = S_SEARCH + 8,
};

static const char *const stmt_sql[S_SEARCH] = {
	[S_BEGIN]     = "BEGIN",
	[S_BEGIN_IMM] = "BEGIN IMMEDIATE",
	[S_COMMIT]    = "COMMIT",
	[S_ROLLBACK]  = "ROLLBACK",
	// Exception to the owner rule: decides 409 for an id taken by anyone.
	// It returns only whether the caller owns the row, never the row.
	[S_ID_TAKEN] = "SELECT owner = ?1 FROM threads WHERE thread_id = ?2",
	[S_THREAD_INSERT] =
	    "INSERT INTO threads (owner, thread_id, metadata, status, config,"
	    " \"values\", interrupts, created_at, updated_at, ttl_minutes,"
	    " ttl_strategy) VALUES (?1, ?2, ?3, 'idle', '{}', NULL, '{}', ?4,"
	    " ?4, ?5, ?6)",
	[S_THREAD_GET] = "SELECT " THREAD_COLS
	                 " FROM threads WHERE owner = ?1 AND thread_id = ?2",
	[S_THREAD_CREATED]    = "SELECT created_at FROM threads"
	                        " WHERE owner = ?1 AND thread_id = ?2",
	[S_THREAD_UPDATE]     = "UPDATE threads SET metadata = ?3,"
	                        " updated_at = max(?4, updated_at + 1),"
	                        " ttl_minutes = ?5, ttl_strategy = ?6"
	                        " WHERE owner = ?1 AND thread_id = ?2",
	[S_THREAD_SET_VALUES] = "UPDATE threads SET \"values\" = ?3,"
	                        " updated_at = max(?4, updated_at + 1)"
	                        " WHERE owner = ?1 AND thread_id = ?2",
	[S_THREAD_DELETE] =
	    "DELETE FROM threads WHERE owner = ?1 AND thread_id = ?2",
	[S_THREAD_COPY] =
	    "INSERT INTO threads (owner, thread_id, metadata, status, config,"
	    " \"values\", interrupts, created_at, updated_at, ttl_minutes,"
	    " ttl_strategy) SELECT owner, ?3, metadata, status, config,"
	    " \"values\", interrupts, ?4, ?4, ttl_minutes, ttl_strategy"
	    " FROM threads WHERE owner = ?1 AND thread_id = ?2",
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
	[S_COUNT] = "SELECT count(*) FROM threads WHERE " FILTER_WHERE,
	// Exception to the owner rule: the TTL sweeper is a system task that
	// finds expired rows of every owner. It deletes each one through the
	// owner-constrained S_CP_DELETE_THREAD and S_THREAD_DELETE.
	[S_SWEEP_SCAN] =
	    "SELECT owner, thread_id FROM threads"
	    " WHERE ttl_strategy = 'delete' AND ttl_minutes > 0"
	    " AND updated_at + CAST(ttl_minutes * 60000000.0 AS INTEGER) <= ?1"
	    " LIMIT ?2",
};

// Room for jansson's parse error text in a detail (its own messages are
// short; the detail itself is capped at CM_RPC_DETAIL_MAX anyway).
#define JSON_ERR_MAX 160

// Longest generated search statement, in bytes (the text is fixed; only
// the column and direction vary).
#define SEARCH_SQL_MAX 1024

// Order columns of the search statements, indexed by SortBy.
static const char *const sort_cols[4] = {
	"created_at",
	"updated_at",
	"thread_id",
	"status",
};

struct tsvc_store {
	sqlite3      *db;
	sqlite3_stmt *stmt[S_NSTMT];
	int           in_tx;
	char          detail[CM_RPC_DETAIL_MAX];
};

// Thread statuses LangGraph defines (the status filter must be one).
static const char *const statuses[] = {
	"idle",
	"busy",
	"interrupted",
	"error",
};

// ---------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------

static cm_err fail(tsvc_store *st, cm_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static cm_err
fail(tsvc_store *st, cm_err err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(st->detail, sizeof(st->detail), fmt, ap);
	va_end(ap);
	return (err);
}

// db_fail converts a sqlite error once, where it enters our code. The
// sqlite message goes to the log only; the client gets a generic text.
static cm_err
db_fail(tsvc_store *st, int rc, const char *what)
{
	int primary = rc & 0xff;

	if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
		cm_warn(NULL, "sqlite %s: %s", what, sqlite3_errmsg(st->db));
		return (fail(st, CM_EUNAVAIL, "storage busy, retry later"));
	}
	cm_error(NULL, "sqlite %s: %s (%d)", what, sqlite3_errmsg(st->db), rc);
	return (fail(st, CM_EINTERNAL, "internal storage error"));
}

// reset_all resets every statement and clears its bindings, so no read
// transaction stays open and no bound pointer outlives the request.
static void
reset_all(tsvc_store *st)
{
	for (int i = 0; i < S_NSTMT; i++) {
		if (st->stmt[i] != NULL) {
			sqlite3_reset(st->stmt[i]);
			sqlite3_clear_bindings(st->stmt[i]);
		}
	}
}

static sqlite3_stmt *
stmt_get(tsvc_store *st, int id)
{
	sqlite3_stmt *s = st->stmt[id];

	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return (s);
}

// vbind binds parameters 1..n from fmt: 't' text (NULL binds NULL),
// 'i' int64_t, 'd' double. Text is bound SQLITE_STATIC: it must live until
// the statement is reset.
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
// ready (read it with sqlite3_column_*, then step again) or 0 when none.
static cm_err
query(
    tsvc_store *st, int id, sqlite3_stmt **sp, int *row, const char *fmt, ...)
{
	sqlite3_stmt *s = stmt_get(st, id);
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
		return (db_fail(st, rc, "query"));
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
	sqlite3_stmt *s = stmt_get(st, id);
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
		*changes = sqlite3_changes64(st->db);
	}
	return (CM_OK);
}

static cm_err
tx_begin(tsvc_store *st, int immediate)
{
	cm_err rv;

	CM_ASSERT(!st->in_tx);
	rv = run(st, immediate ? S_BEGIN_IMM : S_BEGIN, NULL, "");
	if (rv == CM_OK) {
		st->in_tx = 1;
	}
	return (rv);
}

static cm_err
tx_commit(tsvc_store *st)
{
	cm_err rv;

	reset_all(st);
	rv = run(st, S_COMMIT, NULL, "");
	if (rv == CM_OK) {
		st->in_tx = 0;
	}
	return (rv);
}

// tx_end finishes a request: rolls back an open transaction (after an
// error) and resets every statement.
static void
tx_end(tsvc_store *st)
{
	reset_all(st);
	if (st->in_tx) {
		if (run(st, S_ROLLBACK, NULL, "") != CM_OK) {
			// A failed ROLLBACK leaves sqlite in autocommit mode
			// anyway (the transaction is gone); log and go on.
			cm_error(NULL, "sqlite rollback failed");
		}
		st->in_tx = 0;
	}
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

// ---------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------

static cm_err
check_owner(tsvc_store *st, const char *owner)
{
	if (owner == NULL || owner[0] == '\0') {
		return (fail(st, CM_EPERM, "owner is required"));
	}
	if (strlen(owner) > TSVC_OWNER_MAX) {
		return (fail(st, CM_EINVAL, "owner is longer than %d bytes",
		    TSVC_OWNER_MAX));
	}
	return (CM_OK);
}

// check_uuid writes the canonical form of s into out.
static cm_err
check_uuid(
    tsvc_store *st, const char *s, const char *what, char out[CM_UUID_LEN + 1])
{
	if (s == NULL || cm_uuid_parse(s, strlen(s), out) != CM_OK) {
		return (
		    fail(st, CM_EINVAL, "Invalid %s: must be a UUID", what));
	}
	return (CM_OK);
}

static cm_err
check_name(tsvc_store *st, const char *s, const char *what)
{
	if (s != NULL && strlen(s) > TSVC_NAME_MAX) {
		return (fail(st, CM_EINVAL, "%s is longer than %d bytes", what,
		    TSVC_NAME_MAX));
	}
	return (CM_OK);
}

// parse_json parses a request field. type is a JSON_* type the value must
// have, or -1 for any. On CM_OK *out is a new reference.
static cm_err
parse_json(
    tsvc_store *st, const char *text, const char *what, int type, json_t **out)
{
	char    msg[JSON_ERR_MAX];
	json_t *v = NULL;
	cm_err  rv;

	rv = cm_json_parse(
	    text, strlen(text), TSVC_JSON_FIELD_MAX, &v, msg, sizeof(msg));
	if (rv == CM_ETOOBIG) {
		return (fail(st, rv, "%s is larger than %u bytes", what,
		    TSVC_JSON_FIELD_MAX));
	}
	if (rv != CM_OK) {
		return (fail(
		    st, CM_EINVAL, "%s is not valid JSON: %s", what, msg));
	}
	if (type >= 0 && (int) json_typeof(v) != type) {
		json_decref(v);
		return (fail(st, CM_EINVAL, "%s must be a JSON object", what));
	}
	*out = v;
	return (CM_OK);
}

// parse_object parses an optional JSON object field ("" gives {}).
static cm_err
parse_object(tsvc_store *st, const char *text, const char *what, json_t **out)
{
	if (text == NULL || text[0] == '\0') {
		*out = json_object();
		return (CM_OK);
	}
	return (parse_json(st, text, what, JSON_OBJECT, out));
}

// parse_filter validates an optional object filter and gives its compact
// text (new string), or NULL for "" (no filter).
static cm_err
parse_filter(tsvc_store *st, const char *text, const char *what, char **out)
{
	json_t *v;
	cm_err  rv;

	if (text == NULL || text[0] == '\0') {
		*out = NULL;
		return (CM_OK);
	}
	rv = parse_json(st, text, what, JSON_OBJECT, &v);
	if (rv != CM_OK) {
		return (rv);
	}
	*out = cm_json_dump(v);
	json_decref(v);
	return (CM_OK);
}

static cm_err
check_status(tsvc_store *st, const char *status)
{
	if (status == NULL || status[0] == '\0') {
		return (CM_OK);
	}
	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
		if (strcmp(status, statuses[i]) == 0) {
			return (CM_OK);
		}
	}
	return (fail(st, CM_EINVAL,
	    "status must be one of idle, busy, interrupted, error"));
}

// check_ttl validates a ttl and gives the strategy to store ("" when the
// ttl is 0, "delete" otherwise).
static cm_err
check_ttl(
    tsvc_store *st, double minutes, const char *strategy, const char **stored)
{
	if (!isfinite(minutes) || minutes < 0 ||
	    minutes > TSVC_TTL_MINUTES_MAX) {
		return (fail(st, CM_EINVAL,
		    "ttl must be a number of minutes between 0 and %.0f",
		    TSVC_TTL_MINUTES_MAX));
	}
	if (strategy != NULL && strategy[0] != '\0' &&
	    strcmp(strategy, "delete") != 0) {
		return (
		    fail(st, CM_EINVAL, "ttl strategy must be \"delete\""));
	}
	*stored = (minutes > 0) ? "delete" : "";
	return (CM_OK);
}

// stamp_owner sets metadata.owner; CM_EINVAL when owner is not UTF-8.
static cm_err
stamp_owner(tsvc_store *st, json_t *metadata, const char *owner)
{
	json_t *o = json_string(owner);

	if (o == NULL) {
		return (fail(st, CM_EINVAL, "owner must be UTF-8"));
	}
	json_object_set_new(metadata, "owner", o);
	return (CM_OK);
}

static cm_err
page_too_big(tsvc_store *st)
{
	return (fail(st, CM_ETOOBIG,
	    "result page exceeds %u bytes; ask for a smaller limit",
	    TSVC_REPLY_BUDGET));
}

static cm_err
not_found(tsvc_store *st, const char *thread_id)
{
	return (fail(st, CM_ENOENT, "Thread with ID %s not found", thread_id));
}

// ---------------------------------------------------------------------
// Rows to messages
// ---------------------------------------------------------------------

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

static void
msg_free(void *m)
{
	if (m != NULL) {
		protobuf_c_message_free_unpacked((ProtobufCMessage *) m, NULL);
	}
}

static tsvc_checkpoint *
checkpoint_new(void)
{
	tsvc_checkpoint *c = cm_xmalloc(sizeof(*c));

	threadgate__threads__v1__checkpoint__init(c);
	return (c);
}

// checkpoint_from_row reads a CP_COLS row; next is a stored JSON array of
// strings.
static cm_err
checkpoint_from_row(tsvc_store *st, sqlite3_stmt *s, tsvc_checkpoint **out)
{
	tsvc_checkpoint *c    = checkpoint_new();
	json_t          *next = NULL;
	const char      *text;
	cm_err           rv;
	size_t           i;

	c->thread_id            = col_dup(s, 0);
	c->checkpoint_ns        = col_dup(s, 1);
	c->checkpoint_id        = col_dup(s, 2);
	c->parent_checkpoint_id = col_dup(s, 3);
	c->values_json          = col_dup(s, 4);
	c->metadata_json        = col_dup(s, 5);
	c->created_at_us        = sqlite3_column_int64(s, 7);
	text                    = (const char *) sqlite3_column_text(s, 6);
	rv                      = cm_json_parse(text != NULL ? text : "[]",
	    (size_t) sqlite3_column_bytes(s, 6), TSVC_JSON_STORED_MAX, &next,
	    NULL, 0);
	if (rv != CM_OK || !json_is_array(next)) {
		rv = fail(st, CM_EINTERNAL, "internal storage error");
		cm_error(
		    NULL, "checkpoint %s: bad next column", c->checkpoint_id);
		goto out;
	}
	c->next = cm_xcalloc(json_array_size(next) + 1, sizeof(char *));
	for (i = 0; i < json_array_size(next); i++) {
		const char *n = json_string_value(json_array_get(next, i));

		c->next[c->n_next++] = cm_xstrdup(n != NULL ? n : "");
	}
	*out = c;
	c    = NULL;
	rv   = CM_OK;
out:
	json_decref(next);
	msg_free(c);
	return (rv);
}

// get_checkpoint loads a checkpoint: the named one (id != NULL) or the
// latest. *out is NULL when there is none.
static cm_err
get_checkpoint(tsvc_store *st, const char *owner, const char *thread_id,
    const char *ns, const char *id, tsvc_checkpoint **out)
{
	sqlite3_stmt *s;
	int           row;
	cm_err        rv;

	if (id != NULL) {
		rv = query(
		    st, S_CP_GET, &s, &row, "tttt", owner, thread_id, ns, id);
	} else {
		rv = query(
		    st, S_CP_LATEST, &s, &row, "ttt", owner, thread_id, ns);
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

// get_thread loads the owner's thread; *out is NULL when there is none.
static cm_err
get_thread(tsvc_store *st, const char *owner, const char *thread_id,
    tsvc_thread **out)
{
	sqlite3_stmt *s;
	int           row;
	cm_err        rv;

	rv = query(st, S_THREAD_GET, &s, &row, "tt", owner, thread_id);
	if (rv != CM_OK) {
		return (rv);
	}
	*out = row ? thread_from_row(s) : NULL;
	sqlite3_reset(s);
	return (CM_OK);
}

// thread_created gives the thread's created_at, or CM_ENOENT.
static cm_err
thread_created(
    tsvc_store *st, const char *owner, const char *thread_id, int64_t *created)
{
	sqlite3_stmt *s;
	int           row;
	cm_err        rv;

	rv = query(st, S_THREAD_CREATED, &s, &row, "tt", owner, thread_id);
	if (rv != CM_OK) {
		return (rv);
	}
	if (!row) {
		sqlite3_reset(s);
		return (not_found(st, thread_id));
	}
	*created = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return (CM_OK);
}

// ---------------------------------------------------------------------
// State updates (UpdateState and CreateThread's supersteps)
// ---------------------------------------------------------------------

// check_update validates one state update value: NULL/null, an object,
// or an array of objects (at most TSVC_UPDATES_MAX).
static cm_err
check_update(tsvc_store *st, const json_t *v)
{
	size_t  i;
	json_t *e;

	if (v == NULL || json_is_null(v) || json_is_object(v)) {
		return (CM_OK);
	}
	if (json_is_array(v)) {
		if (json_array_size(v) > TSVC_UPDATES_MAX) {
			return (fail(st, CM_ETOOBIG,
			    "values holds more than %d updates",
			    TSVC_UPDATES_MAX));
		}
		json_array_foreach(v, i, e)
		{
			if (!json_is_object(e)) {
				return (fail(st, CM_EINVAL,
				    "values must be an object, an array of "
				    "objects or null"));
			}
		}
		return (CM_OK);
	}
	return (fail(st, CM_EINVAL,
	    "values must be an object, an array of objects or null"));
}

// apply_update merges a checked update into values (an object).
static void
apply_update(json_t *values, json_t *v)
{
	size_t  i;
	json_t *e;

	if (json_is_object(v)) {
		json_object_update(values, v);
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, e)
		{
			json_object_update(values, e);
		}
	}
}

// One update of a state change: the value (borrowed; NULL = null) and
// the node it is attributed to ("" = none).
typedef struct update {
	json_t     *values;
	const char *as_node;
} update;

// state_apply writes one checkpoint holding n updates on top of the
// parent (named, or the latest in ns), inside the caller's write
// transaction. out (may be NULL) gets the new checkpoint.
static cm_err
state_apply(tsvc_store *st, const char *owner, const char *thread_id,
    const char *ns, const char *parent_id, const update *ups, size_t n,
    int64_t now, tsvc_checkpoint **out)
{
	tsvc_checkpoint *latest  = NULL;
	tsvc_checkpoint *parent  = NULL;
	json_t          *values  = NULL;
	json_t          *pmeta   = NULL;
	json_t          *meta    = NULL;
	json_t          *writes  = NULL;
	char            *vtext   = NULL;
	char            *mtext   = NULL;
	tsvc_checkpoint *c       = NULL;
	int64_t          step    = 0;
	int64_t          created = now;
	char             id[CM_UUID_LEN + 1];
	cm_err           rv;

	rv = get_checkpoint(st, owner, thread_id, ns, NULL, &latest);
	if (rv != CM_OK) {
		goto out;
	}
	if (parent_id != NULL) {
		rv = get_checkpoint(
		    st, owner, thread_id, ns, parent_id, &parent);
		if (rv != CM_OK) {
			goto out;
		}
		if (parent == NULL) {
			rv = fail(st, CM_ENOENT, "Checkpoint %s not found",
			    parent_id);
			goto out;
		}
	} else {
		parent = latest;
		latest = NULL;
	}
	if (parent != NULL) {
		if (cm_json_parse(parent->values_json,
		        strlen(parent->values_json), TSVC_JSON_STORED_MAX,
		        &values, NULL, 0) == CM_OK &&
		    !json_is_object(values)) {
			json_decref(values);
			values = NULL;
		}
		if (cm_json_parse(parent->metadata_json,
		        strlen(parent->metadata_json), TSVC_JSON_STORED_MAX,
		        &pmeta, NULL, 0) == CM_OK &&
		    json_is_integer(json_object_get(pmeta, "step"))) {
			step = json_integer_value(
			           json_object_get(pmeta, "step")) +
			    1;
		}
		// Keep (created_at, id) strictly increasing per thread.
		if (parent->created_at_us >= created) {
			created = parent->created_at_us + 1;
		}
	}
	if (latest != NULL && latest->created_at_us >= created) {
		created = latest->created_at_us + 1;
	}
	if (values == NULL) {
		values = json_object();
	}
	writes = json_object();
	for (size_t i = 0; i < n; i++) {
		apply_update(values, ups[i].values);
		if (ups[i].as_node[0] != '\0') {
			json_object_set(writes, ups[i].as_node,
			    ups[i].values != NULL ? ups[i].values
			                          : json_null());
		}
	}
	meta = json_pack("{s:s, s:I, s:O, s:{}}", "source", "update", "step",
	    (json_int_t) step, "writes", writes, "parents");
	CM_ASSERT(meta != NULL);
	if (n == 1 && ups[0].as_node[0] != '\0') {
		json_object_set_new(
		    meta, "as_node", json_string(ups[0].as_node));
	}
	vtext = cm_json_dump(values);
	if (strlen(vtext) > TSVC_JSON_STORED_MAX) {
		rv = fail(st, CM_ETOOBIG, "state values would exceed %u bytes",
		    TSVC_JSON_STORED_MAX);
		goto out;
	}
	mtext = cm_json_dump(meta);
	cm_uuid7(id);
	rv = run(st, S_CP_INSERT, NULL, "ttttttti", owner, thread_id, ns, id,
	    parent != NULL ? parent->checkpoint_id : NULL, vtext, mtext,
	    (int64_t) created);
	if (rv != CM_OK) {
		goto out;
	}
	if (ns[0] == '\0') {
		rv = run(st, S_THREAD_SET_VALUES, NULL, "ttti", owner,
		    thread_id, vtext, (int64_t) now);
		if (rv != CM_OK) {
			goto out;
		}
	}
	if (out != NULL) {
		c                = checkpoint_new();
		c->thread_id     = cm_xstrdup(thread_id);
		c->checkpoint_ns = cm_xstrdup(ns);
		c->checkpoint_id = cm_xstrdup(id);
		c->parent_checkpoint_id =
		    cm_xstrdup(parent != NULL ? parent->checkpoint_id : "");
		c->values_json   = vtext;
		c->metadata_json = mtext;
		c->created_at_us = created;
		vtext            = NULL;
		mtext            = NULL;
		*out             = c;
	}
out:
	msg_free(latest);
	msg_free(parent);
	json_decref(values);
	json_decref(pmeta);
	json_decref(meta);
	json_decref(writes);
	free(vtext);
	free(mtext);
	return (rv);
}

// Parsed supersteps of a CreateThread: steps[i] holds nups[i] updates.
typedef struct supersteps {
	json_t  *doc; // owns every value the updates point into
	update **steps;
	size_t  *nups;
	size_t   n;
} supersteps;

static void
supersteps_fini(supersteps *ss)
{
	for (size_t i = 0; i < ss->n; i++) {
		free(ss->steps[i]);
	}
	free(ss->steps);
	free(ss->nups);
	json_decref(ss->doc);
}

// parse_supersteps validates `[{"updates":[{"values","as_node",
// "command"?}]}]` before any write. "command" is accepted and ignored:
// the thread-service does not run graphs.
static cm_err
parse_supersteps(tsvc_store *st, const char *text, supersteps *ss)
{
	const char *bad = "supersteps must be an array of "
	                  "{\"updates\": [{\"values\", \"as_node\"}]}";
	json_t     *step;
	size_t      i;
	cm_err      rv;

	memset(ss, 0, sizeof(*ss));
	if (text == NULL || text[0] == '\0') {
		return (CM_OK);
	}
	rv = parse_json(st, text, "supersteps", JSON_ARRAY, &ss->doc);
	if (rv != CM_OK) {
		if (rv == CM_EINVAL) {
			return (fail(st, rv, "%s", bad));
		}
		return (rv);
	}
	if (json_array_size(ss->doc) > TSVC_SUPERSTEPS_MAX) {
		return (fail(st, CM_ETOOBIG, "more than %d supersteps",
		    TSVC_SUPERSTEPS_MAX));
	}
	ss->steps = cm_xcalloc(json_array_size(ss->doc) + 1, sizeof(update *));
	ss->nups  = cm_xcalloc(json_array_size(ss->doc) + 1, sizeof(size_t));
	json_array_foreach(ss->doc, i, step)
	{
		json_t *ups = json_object_get(step, "updates");
		json_t *u;
		size_t  j;

		if (!json_is_object(step) || !json_is_array(ups)) {
			return (fail(st, CM_EINVAL, "%s", bad));
		}
		if (json_array_size(ups) > TSVC_UPDATES_MAX) {
			return (fail(st, CM_ETOOBIG,
			    "a superstep holds more than %d updates",
			    TSVC_UPDATES_MAX));
		}
		ss->steps[i] =
		    cm_xcalloc(json_array_size(ups) + 1, sizeof(update));
		ss->n++;
		json_array_foreach(ups, j, u)
		{
			json_t *node;

			if (!json_is_object(u)) {
				return (fail(st, CM_EINVAL, "%s", bad));
			}
			node = json_object_get(u, "as_node");
			if (node != NULL && !json_is_null(node) &&
			    !json_is_string(node)) {
				return (fail(st, CM_EINVAL,
				    "as_node must be a string"));
			}
			ss->steps[i][j].values  = json_object_get(u, "values");
			ss->steps[i][j].as_node = json_is_string(node)
			    ? json_string_value(node)
			    : "";
			rv =
			    check_name(st, ss->steps[i][j].as_node, "as_node");
			if (rv == CM_OK) {
				rv = check_update(st, ss->steps[i][j].values);
			}
			if (rv != CM_OK) {
				return (rv);
			}
		}
		ss->nups[i] = json_array_size(ups);
	}
	return (CM_OK);
}

// ---------------------------------------------------------------------
// Open / close
// ---------------------------------------------------------------------

static cm_err
exec_sql(tsvc_store *st, const char *sql)
{
	char *msg = NULL;
	int   rc  = sqlite3_exec(st->db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		snprintf(st->detail, sizeof(st->detail), "%s",
		    msg != NULL ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return (CM_EUNAVAIL);
	}
	return (CM_OK);
}

static cm_err
migrate(tsvc_store *st)
{
	sqlite3_stmt *s = NULL;
	int64_t       version;
	cm_err        rv;
	int           rc;

	rv = exec_sql(st, "BEGIN IMMEDIATE");
	if (rv != CM_OK) {
		return (rv);
	}
	rc = sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL);
	if (rc != SQLITE_OK || sqlite3_step(s) != SQLITE_ROW) {
		rv = fail(st, CM_EUNAVAIL, "cannot read schema version: %s",
		    sqlite3_errmsg(st->db));
		goto out;
	}
	version = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	s = NULL;
	if (version > TSVC_SCHEMA_VERSION) {
		rv = fail(st, CM_EUNAVAIL,
		    "database schema version %lld is newer than %d",
		    (long long) version, TSVC_SCHEMA_VERSION);
		goto out;
	}
	if (version < 1) {
		// Step "0 -> 1": the first schema.
		rv = exec_sql(st, schema_v1);
		if (rv != CM_OK) {
			goto out;
		}
		rv = exec_sql(st, "PRAGMA user_version = 1");
		if (rv != CM_OK) {
			goto out;
		}
	}
	// Future steps go here: if (version < 2) { ...; user_version = 2 }
	rv = exec_sql(st, "COMMIT");
out:
	sqlite3_finalize(s);
	if (rv != CM_OK) {
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	}
	return (rv);
}

static cm_err
prepare_all(tsvc_store *st)
{
	char sql[SEARCH_SQL_MAX];
	int  rc;

	for (int i = 0; i < S_NSTMT; i++) {
		const char *text = (i < S_SEARCH) ? stmt_sql[i] : sql;

		if (i >= S_SEARCH) {
			int         col = (i - S_SEARCH) / 2;
			const char *dir =
			    ((i - S_SEARCH) % 2) ? "ASC" : "DESC";
			int len;

			if (col == 2) { // thread_id is unique: no tie-break
				len = snprintf(sql, sizeof(sql),
				    "SELECT " THREAD_COLS
				    " FROM threads WHERE " FILTER_WHERE
				    " ORDER BY thread_id %s"
				    " LIMIT ?6 OFFSET ?7",
				    dir);
			} else {
				len = snprintf(sql, sizeof(sql),
				    "SELECT " THREAD_COLS
				    " FROM threads WHERE " FILTER_WHERE
				    " ORDER BY %s %s, thread_id %s"
				    " LIMIT ?6 OFFSET ?7",
				    sort_cols[col], dir, dir);
			}
			CM_ASSERT(len > 0 && (size_t) len < sizeof(sql));
		}
		rc = sqlite3_prepare_v3(st->db, text, -1,
		    SQLITE_PREPARE_PERSISTENT, &st->stmt[i], NULL);
		if (rc != SQLITE_OK) {
			snprintf(st->detail, sizeof(st->detail),
			    "cannot prepare statement %d: %s", i,
			    sqlite3_errmsg(st->db));
			return (CM_EINTERNAL);
		}
	}
	return (CM_OK);
}

cm_err
tsvc_store_open(
    const char *path, tsvc_store **out, char *detail, size_t detail_len)
{
	tsvc_store *st;
	cm_err      rv;
	int         rc;

	if (path == NULL || path[0] == '\0') {
		if (detail != NULL) {
			snprintf(detail, detail_len, "database path is empty");
		}
		return (CM_EINVAL);
	}
	st = cm_xcalloc(1, sizeof(*st));
	rc = sqlite3_open_v2(path, &st->db,
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	    NULL);
	if (rc != SQLITE_OK) {
		rv = fail(st, CM_EUNAVAIL, "cannot open %s: %s", path,
		    st->db != NULL ? sqlite3_errmsg(st->db)
		                   : sqlite3_errstr(rc));
		goto out;
	}
	sqlite3_extended_result_codes(st->db, 1);
	sqlite3_busy_timeout(st->db, TSVC_BUSY_TIMEOUT_MS);
	// journal_mode answers with a row; sqlite3_exec ignores it. WAL lets
	// readers run while one writer writes; NORMAL is durable at every
	// checkpoint and loses at most the last transactions on power loss.
	rv = exec_sql(st,
	    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
	    " PRAGMA foreign_keys = ON;");
	if (rv != CM_OK) {
		goto out;
	}
	rv = migrate(st);
	if (rv != CM_OK) {
		goto out;
	}
	if (tsvc_sql_register(st->db) != CM_OK) {
		rv = fail(st, CM_EINTERNAL, "cannot register SQL functions");
		goto out;
	}
	rv = prepare_all(st);
out:
	if (rv != CM_OK) {
		if (detail != NULL) {
			snprintf(detail, detail_len, "%s", st->detail);
		}
		tsvc_store_close(st);
		return (rv);
	}
	st->detail[0] = '\0';
	*out          = st;
	return (CM_OK);
}

void
tsvc_store_close(tsvc_store *st)
{
	if (st == NULL) {
		return;
	}
	for (int i = 0; i < S_NSTMT; i++) {
		sqlite3_finalize(st->stmt[i]);
	}
	sqlite3_close_v2(st->db);
	free(st);
}

const char *
tsvc_store_detail(const tsvc_store *st)
{
	return (st->detail);
}

// ---------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------

cm_err
tsvc_store_create_thread(
    tsvc_store *st, const tsvc_create_req *req, tsvc_thread **out)
{
	json_t       *meta     = NULL;
	char         *mtext    = NULL;
	tsvc_thread  *t        = NULL;
	supersteps    ss       = { 0 };
	const char   *strategy = NULL;
	char          id[CM_UUID_LEN + 1];
	int64_t       now = cm_now_us();
	sqlite3_stmt *s;
	int           row;
	cm_err        rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->thread_id[0] == '\0') {
		cm_uuid7(id);
	} else {
		rv = check_uuid(st, req->thread_id, "thread ID", id);
		if (rv != CM_OK) {
			goto out;
		}
	}
	if (req->if_exists !=
	        THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_RAISE &&
	    req->if_exists !=
	        THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_DO_NOTHING) {
		rv = fail(
		    st, CM_EINVAL, "if_exists must be raise or do_nothing");
		goto out;
	}
	rv = parse_object(st, req->metadata_json, "metadata", &meta);
	if (rv != CM_OK) {
		goto out;
	}
	rv = stamp_owner(st, meta, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_ttl(st, req->ttl_minutes, req->ttl_strategy, &strategy);
	if (rv != CM_OK) {
		goto out;
	}
	rv = parse_supersteps(st, req->supersteps_json, &ss);
	if (rv != CM_OK) {
		goto out;
	}
	mtext = cm_json_dump(meta);

	rv = tx_begin(st, 1);
	if (rv != CM_OK) {
		goto out;
	}
	rv = query(st, S_ID_TAKEN, &s, &row, "tt", req->owner, id);
	if (rv != CM_OK) {
		goto out;
	}
	if (row) {
		int mine = sqlite3_column_int(s, 0);

		sqlite3_reset(s);
		if (!mine ||
		    req->if_exists ==
		        THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_RAISE) {
			rv = fail(st, CM_EEXIST,
			    "Thread with ID %s already exists", id);
			goto out;
		}
		rv = get_thread(st, req->owner, id, &t);
		if (rv == CM_OK && t == NULL) {
			rv = not_found(st, id); // cannot happen inside the tx
		}
		goto out;
	}
	rv = run(st, S_THREAD_INSERT, NULL, "tttidt", req->owner, id, mtext,
	    (int64_t) now, req->ttl_minutes, strategy);
	if (rv != CM_OK) {
		goto out;
	}
	for (size_t i = 0; i < ss.n; i++) {
		rv = state_apply(st, req->owner, id, "", NULL, ss.steps[i],
		    ss.nups[i], now, NULL);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = get_thread(st, req->owner, id, &t);
	if (rv == CM_OK && t == NULL) {
		rv = fail(st, CM_EINTERNAL, "internal storage error");
	}
out:
	if (rv == CM_OK && st->in_tx) {
		rv = tx_commit(st);
	}
	tx_end(st);
	json_decref(meta);
	free(mtext);
	supersteps_fini(&ss);
	if (rv != CM_OK) {
		msg_free(t);
		return (rv);
	}
	*out = t;
	return (CM_OK);
}

cm_err
tsvc_store_get_thread(
    tsvc_store *st, const tsvc_thread_ref *req, tsvc_thread **out)
{
	tsvc_thread *t = NULL;
	char         id[CM_UUID_LEN + 1];
	cm_err       rv;

	rv = check_owner(st, req->owner);
	if (rv == CM_OK) {
		rv = check_uuid(st, req->thread_id, "thread ID", id);
	}
	if (rv == CM_OK) {
		rv = get_thread(st, req->owner, id, &t);
	}
	if (rv == CM_OK && t == NULL) {
		rv = not_found(st, id);
	}
	tx_end(st);
	if (rv != CM_OK) {
		return (rv);
	}
	*out = t;
	return (CM_OK);
}

cm_err
tsvc_store_update_thread(
    tsvc_store *st, const tsvc_update_req *req, tsvc_thread **out)
{
	json_t      *patch    = NULL;
	json_t      *meta     = NULL;
	char        *mtext    = NULL;
	tsvc_thread *old      = NULL;
	tsvc_thread *t        = NULL;
	const char  *strategy = NULL;
	char         id[CM_UUID_LEN + 1];
	cm_err       rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_uuid(st, req->thread_id, "thread ID", id);
	if (rv != CM_OK) {
		goto out;
	}
	rv = parse_object(st, req->metadata_json, "metadata", &patch);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->has_ttl) {
		rv = check_ttl(
		    st, req->ttl_minutes, req->ttl_strategy, &strategy);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = tx_begin(st, 1);
	if (rv != CM_OK) {
		goto out;
	}
	rv = get_thread(st, req->owner, id, &old);
	if (rv != CM_OK) {
		goto out;
	}
	if (old == NULL) {
		rv = not_found(st, id);
		goto out;
	}
	rv = cm_json_parse(old->metadata_json, strlen(old->metadata_json),
	    TSVC_JSON_STORED_MAX, &meta, NULL, 0);
	if (rv != CM_OK || !json_is_object(meta)) {
		json_decref(meta);
		meta = json_object();
	}
	json_object_update(meta, patch);
	rv = stamp_owner(st, meta, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	mtext = cm_json_dump(meta);
	if (strlen(mtext) > TSVC_JSON_FIELD_MAX) {
		rv = fail(st, CM_ETOOBIG, "metadata would exceed %u bytes",
		    TSVC_JSON_FIELD_MAX);
		goto out;
	}
	rv = run(st, S_THREAD_UPDATE, NULL,
	    "ttt"
	    "idt",
	    req->owner, id, mtext, (int64_t) cm_now_us(),
	    req->has_ttl ? req->ttl_minutes : old->ttl_minutes,
	    req->has_ttl ? strategy : old->ttl_strategy);
	if (rv != CM_OK) {
		goto out;
	}
	rv = get_thread(st, req->owner, id, &t);
	if (rv == CM_OK && t == NULL) {
		rv = fail(st, CM_EINTERNAL, "internal storage error");
	}
	if (rv == CM_OK) {
		rv = tx_commit(st);
	}
out:
	tx_end(st);
	json_decref(patch);
	json_decref(meta);
	free(mtext);
	msg_free(old);
	if (rv != CM_OK) {
		msg_free(t);
		return (rv);
	}
	*out = t;
	return (CM_OK);
}

// delete_one deletes an owner's thread and its checkpoints inside the
// caller's transaction; *deleted is 0 when there was no such thread.
static cm_err
delete_one(tsvc_store *st, const char *owner, const char *id, int64_t *deleted)
{
	cm_err rv;

	rv = run(st, S_CP_DELETE_THREAD, NULL, "tt", owner, id);
	if (rv == CM_OK) {
		rv = run(st, S_THREAD_DELETE, deleted, "tt", owner, id);
	}
	return (rv);
}

cm_err
tsvc_store_delete_thread(tsvc_store *st, const tsvc_thread_ref *req)
{
	char    id[CM_UUID_LEN + 1];
	int64_t n = 0;
	cm_err  rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_uuid(st, req->thread_id, "thread ID", id);
	if (rv != CM_OK) {
		goto out;
	}
	rv = tx_begin(st, 1);
	if (rv != CM_OK) {
		goto out;
	}
	rv = delete_one(st, req->owner, id, &n);
	if (rv != CM_OK) {
		goto out;
	}
	if (n == 0) {
		rv = not_found(st, id);
		goto out;
	}
	rv = tx_commit(st);
out:
	tx_end(st);
	return (rv);
}

// Filters shared by search and count, validated and ready to bind.
typedef struct filters {
	char       *metadata; // compact JSON object text or NULL
	char       *values;   // compact JSON object text or NULL
	char       *ids;      // JSON array of canonical UUIDs or NULL
	const char *status;   // borrowed, or NULL
} filters;

static void
filters_fini(filters *f)
{
	free(f->metadata);
	free(f->values);
	free(f->ids);
}

static cm_err
parse_filters(tsvc_store *st, const char *owner, const char *metadata,
    const char *values, char *const *ids, size_t n_ids, const char *status,
    filters *f)
{
	json_t *arr;
	cm_err  rv;

	memset(f, 0, sizeof(*f));
	rv = check_owner(st, owner);
	if (rv != CM_OK) {
		return (rv);
	}
	rv = parse_filter(st, metadata, "metadata", &f->metadata);
	if (rv != CM_OK) {
		return (rv);
	}
	rv = parse_filter(st, values, "values", &f->values);
	if (rv != CM_OK) {
		return (rv);
	}
	rv = check_status(st, status);
	if (rv != CM_OK) {
		return (rv);
	}
	f->status = (status != NULL && status[0] != '\0') ? status : NULL;
	if (n_ids == 0) {
		return (CM_OK);
	}
	if (n_ids > TSVC_IDS_MAX) {
		return (
		    fail(st, CM_ETOOBIG, "more than %d ids", TSVC_IDS_MAX));
	}
	arr = json_array();
	for (size_t i = 0; i < n_ids; i++) {
		char id[CM_UUID_LEN + 1];

		rv = check_uuid(st, ids[i], "thread ID", id);
		if (rv != CM_OK) {
			json_decref(arr);
			return (rv);
		}
		json_array_append_new(arr, json_string(id));
	}
	f->ids = cm_json_dump(arr);
	json_decref(arr);
	return (CM_OK);
}

static cm_err
count_matches(
    tsvc_store *st, const char *owner, const filters *f, int64_t *count)
{
	sqlite3_stmt *s;
	int           row;
	cm_err        rv;

	rv = query(st, S_COUNT, &s, &row, "ttttt", owner, f->metadata,
	    f->values, f->ids, f->status);
	if (rv != CM_OK) {
		return (rv);
	}
	*count = row ? sqlite3_column_int64(s, 0) : 0;
	sqlite3_reset(s);
	return (CM_OK);
}

cm_err
tsvc_store_search_threads(
    tsvc_store *st, const tsvc_search_req *req, tsvc_search_reply **out)
{
	tsvc_search_reply *r     = NULL;
	filters            f     = { 0 };
	size_t             bytes = 0;
	sqlite3_stmt      *s;
	int                row;
	cm_err             rv;

	rv = parse_filters(st, req->owner, req->metadata_json,
	    req->values_json, req->ids, req->n_ids, req->status, &f);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->limit < TSVC_PAGE_MIN || req->limit > TSVC_PAGE_MAX) {
		rv = fail(st, CM_EINVAL, "limit must be between %d and %d",
		    TSVC_PAGE_MIN, TSVC_PAGE_MAX);
		goto out;
	}
	if (req->offset < 0) {
		rv = fail(st, CM_EINVAL, "offset must be >= 0");
		goto out;
	}
	if ((int) req->sort_by < 0 || (int) req->sort_by > 3) {
		rv = fail(st, CM_EINVAL,
		    "sort_by must be created_at, updated_at, thread_id or "
		    "status");
		goto out;
	}
	r = cm_xmalloc(sizeof(*r));
	threadgate__threads__v1__search_threads_reply__init(r);
	r->threads = cm_xcalloc((size_t) req->limit, sizeof(tsvc_thread *));

	// One read transaction: the page and the total see the same rows.
	rv = tx_begin(st, 0);
	if (rv != CM_OK) {
		goto out;
	}
	rv = count_matches(st, req->owner, &f, &r->total);
	if (rv != CM_OK) {
		goto out;
	}
	rv = query(st,
	    S_SEARCH + (int) req->sort_by * 2 + (req->ascending ? 1 : 0), &s,
	    &row, "tttttii", req->owner, f.metadata, f.values, f.ids, f.status,
	    (int64_t) req->limit, (int64_t) req->offset);
	while (rv == CM_OK && row && r->n_threads < (size_t) req->limit) {
		tsvc_thread *t = thread_from_row(s);

		r->threads[r->n_threads++] = t;
		bytes += strlen(t->metadata_json) + strlen(t->values_json) +
		    strlen(t->config_json) + strlen(t->interrupts_json);
		if (bytes > TSVC_REPLY_BUDGET) {
			rv = page_too_big(st);
			break;
		}
		rv = next_row(st, s, &row);
	}
	if (rv == CM_OK) {
		rv = tx_commit(st);
	}
out:
	tx_end(st);
	filters_fini(&f);
	if (rv != CM_OK) {
		msg_free(r);
		return (rv);
	}
	*out = r;
	return (CM_OK);
}

cm_err
tsvc_store_count_threads(
    tsvc_store *st, const tsvc_count_req *req, tsvc_count_reply **out)
{
	tsvc_count_reply *r;
	filters           f = { 0 };
	int64_t           n = 0;
	cm_err            rv;

	rv = parse_filters(st, req->owner, req->metadata_json,
	    req->values_json, NULL, 0, req->status, &f);
	if (rv == CM_OK) {
		rv = count_matches(st, req->owner, &f, &n);
	}
	tx_end(st);
	filters_fini(&f);
	if (rv != CM_OK) {
		return (rv);
	}
	r = cm_xmalloc(sizeof(*r));
	threadgate__threads__v1__count_reply__init(r);
	r->count = n;
	*out     = r;
	return (CM_OK);
}

cm_err
tsvc_store_copy_thread(
    tsvc_store *st, const tsvc_thread_ref *req, tsvc_thread **out)
{
	tsvc_thread *t = NULL;
	char         src[CM_UUID_LEN + 1];
	char         dst[CM_UUID_LEN + 1];
	int64_t      n = 0;
	cm_err       rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_uuid(st, req->thread_id, "thread ID", src);
	if (rv != CM_OK) {
		goto out;
	}
	cm_uuid7(dst);
	rv = tx_begin(st, 1);
	if (rv != CM_OK) {
		goto out;
	}
	rv = run(st, S_THREAD_COPY, &n, "ttti", req->owner, src, dst,
	    (int64_t) cm_now_us());
	if (rv != CM_OK) {
		goto out;
	}
	if (n == 0) {
		rv =
		    fail(st, CM_ECONFLICT, "Thread with ID %s not found", src);
		goto out;
	}
	rv = run(st, S_CP_COPY, NULL, "ttt", req->owner, src, dst);
	if (rv != CM_OK) {
		goto out;
	}
	rv = get_thread(st, req->owner, dst, &t);
	if (rv == CM_OK && t == NULL) {
		rv = fail(st, CM_EINTERNAL, "internal storage error");
	}
	if (rv == CM_OK) {
		rv = tx_commit(st);
	}
out:
	tx_end(st);
	if (rv != CM_OK) {
		msg_free(t);
		return (rv);
	}
	*out = t;
	return (CM_OK);
}

static int
cmp_id(const void *a, const void *b)
{
	return (strcmp((const char *) a, (const char *) b));
}

cm_err
tsvc_store_prune_threads(
    tsvc_store *st, const tsvc_prune_req *req, tsvc_prune_reply **out)
{
	tsvc_prune_reply *r;
	char(*ids)[CM_UUID_LEN + 1] = NULL;
	int     keep_latest;
	int64_t pruned = 0;
	cm_err  rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->strategy[0] == '\0' || strcmp(req->strategy, "delete") == 0) {
		keep_latest = 0;
	} else if (strcmp(req->strategy, "keep_latest") == 0) {
		keep_latest = 1;
	} else {
		rv = fail(st, CM_EINVAL,
		    "strategy must be \"delete\" or \"keep_latest\"");
		goto out;
	}
	if (req->n_thread_ids > TSVC_IDS_MAX) {
		rv = fail(
		    st, CM_ETOOBIG, "more than %d thread ids", TSVC_IDS_MAX);
		goto out;
	}
	ids = cm_xcalloc(req->n_thread_ids + 1, sizeof(*ids));
	for (size_t i = 0; i < req->n_thread_ids; i++) {
		rv = check_uuid(st, req->thread_ids[i], "thread ID", ids[i]);
		if (rv != CM_OK) {
			goto out;
		}
	}
	// Sorted, so duplicates are adjacent and counted once.
	qsort(ids, req->n_thread_ids, sizeof(*ids), cmp_id);
	rv = tx_begin(st, 1);
	if (rv != CM_OK) {
		goto out;
	}
	for (size_t i = 0; i < req->n_thread_ids; i++) {
		int64_t created;
		int64_t n = 0;

		if (i > 0 && strcmp(ids[i], ids[i - 1]) == 0) {
			continue;
		}
		if (!keep_latest) {
			rv = delete_one(st, req->owner, ids[i], &n);
			if (rv != CM_OK) {
				goto out;
			}
			pruned += (n > 0);
			continue;
		}
		rv = thread_created(st, req->owner, ids[i], &created);
		if (rv == CM_ENOENT) {
			rv = CM_OK; // another owner's or missing: skipped
			continue;
		}
		if (rv != CM_OK) {
			goto out;
		}
		rv = run(st, S_CP_KEEP_LATEST, NULL, "tt", req->owner, ids[i]);
		if (rv != CM_OK) {
			goto out;
		}
		pruned++;
	}
	rv = tx_commit(st);
out:
	tx_end(st);
	free(ids);
	if (rv != CM_OK) {
		return (rv);
	}
	r = cm_xmalloc(sizeof(*r));
	threadgate__threads__v1__prune_threads_reply__init(r);
	r->pruned_count = pruned;
	*out            = r;
	return (CM_OK);
}

// ---------------------------------------------------------------------
// State
// ---------------------------------------------------------------------

cm_err
tsvc_store_get_state(
    tsvc_store *st, const tsvc_get_state_req *req, tsvc_state_reply **out)
{
	tsvc_state_reply *r  = NULL;
	tsvc_checkpoint  *cp = NULL;
	char              id[CM_UUID_LEN + 1];
	char              cid[CM_UUID_LEN + 1];
	int64_t           created = 0;
	cm_err            rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_uuid(st, req->thread_id, "thread ID", id);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->checkpoint_id[0] != '\0') {
		rv = check_uuid(st, req->checkpoint_id, "checkpoint ID", cid);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = check_name(st, req->checkpoint_ns, "checkpoint_ns");
	if (rv != CM_OK) {
		goto out;
	}
	rv = tx_begin(st, 0);
	if (rv != CM_OK) {
		goto out;
	}
	rv = thread_created(st, req->owner, id, &created);
	if (rv != CM_OK) {
		goto out;
	}
	rv = get_checkpoint(st, req->owner, id, req->checkpoint_ns,
	    req->checkpoint_id[0] != '\0' ? cid : NULL, &cp);
	if (rv != CM_OK) {
		goto out;
	}
	if (cp == NULL && req->checkpoint_id[0] != '\0') {
		rv = fail(st, CM_ENOENT, "Checkpoint %s not found", cid);
		goto out;
	}
	rv = tx_commit(st);
out:
	tx_end(st);
	if (rv != CM_OK) {
		msg_free(cp);
		return (rv);
	}
	r = cm_xmalloc(sizeof(*r));
	threadgate__threads__v1__state_reply__init(r);
	r->has_checkpoint       = (cp != NULL);
	r->checkpoint           = cp;
	r->thread_created_at_us = created;
	*out                    = r;
	return (CM_OK);
}

cm_err
tsvc_store_update_state(
    tsvc_store *st, const tsvc_update_state_req *req, tsvc_checkpoint **out)
{
	tsvc_checkpoint *cp     = NULL;
	json_t          *values = NULL;
	update           up;
	char             id[CM_UUID_LEN + 1];
	char             cid[CM_UUID_LEN + 1];
	int64_t          created;
	cm_err           rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_uuid(st, req->thread_id, "thread ID", id);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->checkpoint_id[0] != '\0') {
		rv = check_uuid(st, req->checkpoint_id, "checkpoint ID", cid);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = check_name(st, req->checkpoint_ns, "checkpoint_ns");
	if (rv == CM_OK) {
		rv = check_name(st, req->as_node, "as_node");
	}
	if (rv != CM_OK) {
		goto out;
	}
	if (req->values_json[0] != '\0') {
		rv = parse_json(st, req->values_json, "values", -1, &values);
		if (rv != CM_OK) {
			goto out;
		}
		rv = check_update(st, values);
		if (rv != CM_OK) {
			goto out;
		}
	}
	if (req->as_node[0] != '\0') {
		json_t *probe = json_string(req->as_node);

		if (probe == NULL) {
			rv = fail(st, CM_EINVAL, "as_node must be UTF-8");
			goto out;
		}
		json_decref(probe);
	}
	up.values  = values;
	up.as_node = req->as_node;
	rv         = tx_begin(st, 1);
	if (rv != CM_OK) {
		goto out;
	}
	rv = thread_created(st, req->owner, id, &created);
	if (rv != CM_OK) {
		goto out;
	}
	rv = state_apply(st, req->owner, id, req->checkpoint_ns,
	    req->checkpoint_id[0] != '\0' ? cid : NULL, &up, 1, cm_now_us(),
	    &cp);
	if (rv == CM_OK) {
		rv = tx_commit(st);
	}
out:
	tx_end(st);
	json_decref(values);
	if (rv != CM_OK) {
		msg_free(cp);
		return (rv);
	}
	*out = cp;
	return (CM_OK);
}

cm_err
tsvc_store_patch_state(tsvc_store *st, const tsvc_patch_state_req *req)
{
	tsvc_checkpoint *cp    = NULL;
	json_t          *patch = NULL;
	json_t          *meta  = NULL;
	char            *mtext = NULL;
	char             id[CM_UUID_LEN + 1];
	char             cid[CM_UUID_LEN + 1];
	int64_t          created;
	cm_err           rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_uuid(st, req->thread_id, "thread ID", id);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->checkpoint_id[0] != '\0') {
		rv = check_uuid(st, req->checkpoint_id, "checkpoint ID", cid);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = parse_object(st, req->metadata_json, "metadata", &patch);
	if (rv != CM_OK) {
		goto out;
	}
	rv = tx_begin(st, 1);
	if (rv != CM_OK) {
		goto out;
	}
	rv = thread_created(st, req->owner, id, &created);
	if (rv != CM_OK) {
		goto out;
	}
	rv = get_checkpoint(st, req->owner, id, "",
	    req->checkpoint_id[0] != '\0' ? cid : NULL, &cp);
	if (rv != CM_OK) {
		goto out;
	}
	if (cp == NULL) {
		if (req->checkpoint_id[0] != '\0') {
			rv = fail(
			    st, CM_ENOENT, "Checkpoint %s not found", cid);
		} else {
			rv = fail(st, CM_ENOENT,
			    "Thread with ID %s has no state", id);
		}
		goto out;
	}
	if (cm_json_parse(cp->metadata_json, strlen(cp->metadata_json),
	        TSVC_JSON_STORED_MAX, &meta, NULL, 0) != CM_OK ||
	    !json_is_object(meta)) {
		json_decref(meta);
		meta = json_object();
	}
	json_object_update(meta, patch);
	mtext = cm_json_dump(meta);
	if (strlen(mtext) > TSVC_JSON_FIELD_MAX) {
		rv = fail(st, CM_ETOOBIG, "metadata would exceed %u bytes",
		    TSVC_JSON_FIELD_MAX);
		goto out;
	}
	rv = run(st, S_CP_SET_META, NULL, "ttttt", req->owner, id, "",
	    cp->checkpoint_id, mtext);
	if (rv == CM_OK) {
		rv = tx_commit(st);
	}
out:
	tx_end(st);
	msg_free(cp);
	json_decref(patch);
	json_decref(meta);
	free(mtext);
	return (rv);
}

cm_err
tsvc_store_get_history(
    tsvc_store *st, const tsvc_history_req *req, tsvc_history_reply **out)
{
	tsvc_history_reply *r      = NULL;
	char               *filter = NULL;
	size_t              bytes  = 0;
	sqlite3_stmt       *s;
	char                id[CM_UUID_LEN + 1];
	char                before[CM_UUID_LEN + 1];
	char                start[CM_UUID_LEN + 1];
	int64_t             created;
	int                 row;
	cm_err              rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_uuid(st, req->thread_id, "thread ID", id);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->before_checkpoint_id[0] != '\0') {
		rv = check_uuid(
		    st, req->before_checkpoint_id, "checkpoint ID", before);
		if (rv != CM_OK) {
			goto out;
		}
	}
	if (req->checkpoint_id[0] != '\0') {
		rv =
		    check_uuid(st, req->checkpoint_id, "checkpoint ID", start);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = check_name(st, req->checkpoint_ns, "checkpoint_ns");
	if (rv != CM_OK) {
		goto out;
	}
	if (req->limit < TSVC_PAGE_MIN || req->limit > TSVC_PAGE_MAX) {
		rv = fail(st, CM_EINVAL, "limit must be between %d and %d",
		    TSVC_PAGE_MIN, TSVC_PAGE_MAX);
		goto out;
	}
	rv = parse_filter(st, req->metadata_json, "metadata", &filter);
	if (rv != CM_OK) {
		goto out;
	}
	r = cm_xmalloc(sizeof(*r));
	threadgate__threads__v1__history_reply__init(r);
	r->checkpoints =
	    cm_xcalloc((size_t) req->limit, sizeof(tsvc_checkpoint *));
	rv = tx_begin(st, 0);
	if (rv != CM_OK) {
		goto out;
	}
	rv = thread_created(st, req->owner, id, &created);
	if (rv != CM_OK) {
		goto out;
	}
	rv = query(st, S_HISTORY, &s, &row, "tttttti", req->owner, id,
	    req->checkpoint_ns,
	    req->before_checkpoint_id[0] != '\0' ? before : NULL,
	    req->checkpoint_id[0] != '\0' ? start : NULL, filter,
	    (int64_t) req->limit);
	while (rv == CM_OK && row && r->n_checkpoints < (size_t) req->limit) {
		tsvc_checkpoint *c;

		rv = checkpoint_from_row(st, s, &c);
		if (rv != CM_OK) {
			break;
		}
		r->checkpoints[r->n_checkpoints++] = c;
		bytes += strlen(c->metadata_json) + strlen(c->values_json);
		if (bytes > TSVC_REPLY_BUDGET) {
			rv = page_too_big(st);
			break;
		}
		rv = next_row(st, s, &row);
	}
	if (rv == CM_OK) {
		rv = tx_commit(st);
	}
out:
	tx_end(st);
	free(filter);
	if (rv != CM_OK) {
		msg_free(r);
		return (rv);
	}
	*out = r;
	return (CM_OK);
}

// ---------------------------------------------------------------------
// TTL sweeper
// ---------------------------------------------------------------------

cm_err
tsvc_store_sweep(tsvc_store *st, int64_t now_us, int64_t *deleted)
{
	char **owners               = NULL;
	char(*ids)[CM_UUID_LEN + 1] = NULL;
	size_t        n             = 0;
	int64_t       total         = 0;
	sqlite3_stmt *s;
	int           row;
	cm_err        rv;

	owners = cm_xcalloc(TSVC_SWEEP_BATCH, sizeof(char *));
	ids    = cm_xcalloc(TSVC_SWEEP_BATCH, sizeof(*ids));
	rv     = tx_begin(st, 1);
	if (rv != CM_OK) {
		goto out;
	}
	rv = query(st, S_SWEEP_SCAN, &s, &row, "ii", (int64_t) now_us,
	    (int64_t) TSVC_SWEEP_BATCH);
	while (rv == CM_OK && row && n < TSVC_SWEEP_BATCH) {
		const unsigned char *t = sqlite3_column_text(s, 1);

		owners[n] = col_dup(s, 0);
		snprintf(ids[n], sizeof(ids[n]), "%s",
		    t != NULL ? (const char *) t : "");
		n++;
		rv = next_row(st, s, &row);
	}
	if (rv != CM_OK) {
		goto out;
	}
	sqlite3_reset(s);
	for (size_t i = 0; i < n; i++) {
		int64_t d = 0;

		rv = delete_one(st, owners[i], ids[i], &d);
		if (rv != CM_OK) {
			goto out;
		}
		total += d;
	}
	rv = tx_commit(st);
out:
	tx_end(st);
	for (size_t i = 0; i < n; i++) {
		free(owners[i]);
	}
	free(owners);
	free(ids);
	if (rv == CM_OK && deleted != NULL) {
		*deleted = total;
	}
	return (rv);
}
