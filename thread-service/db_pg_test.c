// SPDX-License-Identifier: MIT
//
// Tests of what only the PostgreSQL backend (db_pg.c) does, through its
// tsvc_backend table on a real server: store_test.c and contract_test.c
// cover the API's semantics on every backend; this file covers JSON
// round trips through jsonb, the deadline (cancel) path, reconnecting
// after a lost connection, migrations run by several replicas at once and
// refused when newer, the insert race across connections, concurrent
// sweepers, that the indexes serve the statements they were made for, the
// usage accounting behind the quotas, and the lock order that keeps
// writers of one owner free of deadlocks.
//
// The database comes from TG_TEST_THREADS_DB (a libpq keyword string of a
// fresh database, as scripts/pg-test-cluster.sh run sets it); the test
// connects as a superuser (the throwaway cluster's "postgres") to create
// extra databases and terminate connections. Without TG_TEST_THREADS_DB
// every test is skipped.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "common/json.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "thread-service/backend.h"

#define ALICE "alice-pg"
#define BOB   "bob-pg"
// How long a test waits for a condition it polls for (server-side state
// such as a lock wait, or statistics), generous for a loaded machine.
#define WAIT_MS 30000
// The short deadline of the cancel tests, and how late the cancelled
// call may return (scheduling on a loaded 2-core machine).
#define SHORT_DEADLINE_MS 300
#define LATE_MS           3000
// Connections test_abandoned_calls tries.
#define ABANDON_ROUNDS 200

static const tsvc_backend *be = &tsvc_backend_pg;
static const char         *target;
static void               *db;

// ---------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------

// admin runs one SQL statement on a fresh superuser connection to
// target_str and returns its first value (new string, "" when none).
static char *
admin_on(const char *target_str, const char *sql)
{
	PGconn   *pg = PQconnectdb(target_str);
	PGresult *r;
	char     *out;

	if (PQstatus(pg) != CONNECTION_OK) {
		fail_msg("admin connect: %s", PQerrorMessage(pg));
	}
	r = PQexec(pg, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK &&
	    PQresultStatus(r) != PGRES_COMMAND_OK) {
		fail_msg("admin %s: %s", sql, PQresultErrorMessage(r));
	}
	out = cm_xstrdup(
	    PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "");
	PQclear(r);
	PQfinish(pg);
	return (out);
}

static char *
admin(const char *sql)
{
	return (admin_on(target, sql));
}

static int64_t
admin_i64(const char *sql)
{
	char   *v = admin(sql);
	int64_t n = -1;

	cm_parse_i64(v, INT64_MIN, INT64_MAX, &n);
	free(v);
	return (n);
}

// wait_until polls sql until it returns want (a number), up to WAIT_MS.
static void
wait_until(const char *sql, int64_t want)
{
	int64_t end = cm_mono_ms() + WAIT_MS;
	int64_t got = -1;

	while (cm_mono_ms() < end) {
		got = admin_i64(sql);
		if (got == want) {
			return;
		}
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	fail_msg("waited %d ms for [%s] = %lld; last %lld", WAIT_MS, sql,
	    (long long) want, (long long) got);
}

// target_with_db is target with dbname replaced (new string).
static char *
target_with_db(const char *name, const char *extra)
{
	PQconninfoOption *opts = PQconninfoParse(target, NULL);
	char              buf[2048];
	size_t            len = 0;

	assert_non_null(opts);
	for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
		const char *v = o->val;

		if (strcmp(o->keyword, "dbname") == 0) {
			v = name;
		}
		if (v == NULL || v[0] == '\0') {
			continue;
		}
		len += (size_t) snprintf(
		    buf + len, sizeof(buf) - len, "%s='%s' ", o->keyword, v);
		assert_true(len < sizeof(buf));
	}
	PQconninfoFree(opts);
	if (extra != NULL) {
		len += (size_t) snprintf(
		    buf + len, sizeof(buf) - len, "%s", extra);
		assert_true(len < sizeof(buf));
	}
	return (cm_xstrdup(buf));
}

// A store on a new connection of d.
static tsvc_store *
store_new(void *d)
{
	tsvc_store *st = cm_xcalloc(1, sizeof(*st));
	char        detail[CM_RPC_DETAIL_MAX];
	cm_err      rv;

	rv = be->conn_open(d, &st->conn, detail, sizeof(detail));
	if (rv != CM_OK) {
		fail_msg("conn_open: %s (%s)", cm_strerror(rv), detail);
	}
	return (st);
}

static void
store_free(tsvc_store *st)
{
	if (st != NULL) {
		be->conn_close(st->conn);
		free(st);
	}
}

static void
msg_free(void *m)
{
	if (m != NULL) {
		protobuf_c_message_free_unpacked((ProtobufCMessage *) m, NULL);
	}
}

// insert adds a thread of owner with metadata (a fresh UUIDv7 id, written
// to id) created at created_us with the given ttl.
static cm_err
insert(tsvc_store *st, const char *owner, const char *meta, int64_t created_us,
    double ttl_minutes, char id[CM_UUID_LEN + 1])
{
	tsvc_thread t = THREADGATE__THREADS__V1__THREAD__INIT;

	cm_uuid7(id);
	t.owner         = (char *) owner;
	t.thread_id     = id;
	t.metadata_json = (char *) meta;
	t.created_at_us = created_us;
	t.updated_at_us = created_us;
	t.ttl_minutes   = ttl_minutes;
	t.ttl_strategy  = ttl_minutes > 0 ? "delete" : "";
	return (be->thread_insert(st, &t));
}

// assert_same_json: a and b parse to equal JSON values.
static void
assert_same_json(const char *a, const char *b)
{
	json_t *ja = NULL;
	json_t *jb = NULL;

	if (cm_json_parse(a, strlen(a), 1u << 24, &ja, NULL, 0) != CM_OK) {
		fail_msg("not JSON for jansson: %s", a);
	}
	assert_int_equal(
	    cm_json_parse(b, strlen(b), 1u << 24, &jb, NULL, 0), CM_OK);
	if (!json_equal(ja, jb)) {
		fail_msg("JSON differs:\n  %s\n  %s", a, b);
	}
	json_decref(ja);
	json_decref(jb);
}

static int
skip_without_pg(void **state)
{
	(void) state;
	if (target == NULL) {
		skip();
	}
	return (0);
}

// ---------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------

// jsonb normalizes text; what comes back must be compact JSON that
// jansson reads as the same value, including doubles jsonb prints in
// plain notation and integers at the edges of int64.
static void
test_json_round_trip(void **state)
{
	static const char *const docs[] = {
		"{\"z\":1,\"a\":{\"y\":[3,2,1],\"b\":null},\"m\":true}",
		"{\"big\":1e300,\"neg\":-1.5e300,\"tiny\":1.5e-7,\"p\":0.1,"
		"\"one\":1.0,\"e20\":1e20,\"max\":9223372036854775807,"
		"\"min\":-9223372036854775808,\"z\":-0.0}",
		"{\"s\":\"caf\\u00e9 \\ud83d\\ude00 \\\" \\\\ \\n \\t \\u0001 "
		"/\",\"dup\":1,\"dup\":2}",
		"{\"e\":{},\"a\":[],\"n\":[[],[{}]],\"k with space\":\" v \"}",
	};
	tsvc_store *st = store_new(db);
	char        id[CM_UUID_LEN + 1];

	(void) state;
	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		tsvc_thread *t = NULL;
		json_t      *v = NULL;
		char        *compact;

		// The core hands in compact JSON it dumped itself.
		assert_int_equal(cm_json_parse(docs[i], strlen(docs[i]),
		                     1u << 20, &v, NULL, 0),
		    CM_OK);
		compact = cm_json_dump(v);
		json_decref(v);
		assert_int_equal(
		    insert(st, ALICE, compact, cm_now_us(), 0, id), CM_OK);
		assert_int_equal(
		    be->thread_set_values(st, ALICE, id, compact, cm_now_us()),
		    CM_OK);
		assert_int_equal(be->thread_get(st, ALICE, id, 0, &t), CM_OK);
		assert_non_null(t);
		assert_same_json(t->metadata_json, compact);
		assert_same_json(t->values_json, compact);
		// Compact: no whitespace after ':' or ',' outside strings.
		if (i != 3) {
			assert_null(strstr(t->metadata_json, "\": "));
			assert_null(strstr(t->metadata_json, ", "));
		}
		assert_string_equal(t->config_json, "{}");
		assert_string_equal(t->interrupts_json, "{}");
		msg_free(t);
		free(compact);
	}
	store_free(st);
}

// Input jsonb cannot hold is refused as invalid, not as a server error.
static void
test_json_nul_refused(void **state)
{
	tsvc_store *st = store_new(db);
	char        id[CM_UUID_LEN + 1];

	(void) state;
	assert_int_equal(
	    insert(st, ALICE, "{\"a\":\"x\\u0000y\"}", cm_now_us(), 0, id),
	    CM_EINVAL);
	assert_non_null(strstr(st->detail, "\\u0000"));
	// The connection is fine afterwards.
	assert_int_equal(be->ping(st), CM_OK);
	store_free(st);
}

// Containment is jsonb's @>; filters go through the bound parameter.
static void
test_containment(void **state)
{
	tsvc_store *st    = store_new(db);
	const char *owner = "owner-containment";
	char        a[CM_UUID_LEN + 1];
	char        b[CM_UUID_LEN + 1];
	tsvc_filter f = { 0 };
	int64_t     n = -1;

	(void) state;
	assert_int_equal(insert(st, owner,
	                     "{\"owner\":\"x\",\"t\":{\"tags\":[1,2,3]},"
	                     "\"n\":1.0}",
	                     cm_now_us(), 0, a),
	    CM_OK);
	assert_int_equal(insert(st, owner, "{\"t\":{\"tags\":[3]},\"n\":2}",
	                     cm_now_us(), 0, b),
	    CM_OK);
	f.metadata = "{\"t\":{\"tags\":[3]}}";
	assert_int_equal(be->thread_count(st, owner, &f, &n), CM_OK);
	assert_int_equal(n, 2);
	f.metadata = "{\"t\":{\"tags\":[2,1]}}";
	assert_int_equal(be->thread_count(st, owner, &f, &n), CM_OK);
	assert_int_equal(n, 1);
	f.metadata = "{\"n\":1}"; // 1 equals 1.0
	assert_int_equal(be->thread_count(st, owner, &f, &n), CM_OK);
	assert_int_equal(n, 1);
	f.metadata = "{\"t\":\"'; DROP TABLE threads; --\"}";
	assert_int_equal(be->thread_count(st, owner, &f, &n), CM_OK);
	assert_int_equal(n, 0);
	// Another owner sees none of it.
	f.metadata = NULL;
	assert_int_equal(be->thread_count(st, "someone-else", &f, &n), CM_OK);
	assert_int_equal(n, 0);
	store_free(st);
}

// A statement still waiting when the deadline passes is cancelled in the
// server and the call fails with CM_ETIMEDOUT soon after; the connection
// stays usable and no cancel leaks into the next statement.
static void
test_deadline_cancels(void **state)
{
	tsvc_store  *holder = store_new(db);
	tsvc_store  *st     = store_new(db);
	tsvc_thread *t      = NULL;
	char         id[CM_UUID_LEN + 1];
	int64_t      t0;
	int64_t      took;

	(void) state;
	assert_int_equal(insert(holder, BOB, "{}", cm_now_us(), 0, id), CM_OK);
	assert_int_equal(be->begin(holder, TSVC_TX_WRITE), CM_OK);
	assert_int_equal(be->thread_get(holder, BOB, id, 1, &t), CM_OK);
	msg_free(t);
	t = NULL;

	assert_int_equal(be->begin(st, TSVC_TX_WRITE), CM_OK);
	t0              = cm_mono_ms();
	st->deadline_ms = cm_now_ms() + SHORT_DEADLINE_MS;
	assert_int_equal(be->thread_get(st, BOB, id, 1, &t), CM_ETIMEDOUT);
	took = cm_mono_ms() - t0;
	assert_true(took >= SHORT_DEADLINE_MS - 50);
	assert_true(took < SHORT_DEADLINE_MS + LATE_MS);
	be->rollback(st);
	// Nothing of it still waits in the server.
	wait_until("SELECT count(*) FROM pg_stat_activity"
	           " WHERE wait_event_type = 'Lock'",
	    0);
	// A deadline already passed fails before anything is sent.
	st->deadline_ms = cm_now_ms() - 1;
	assert_int_equal(be->ping(st), CM_ETIMEDOUT);
	st->deadline_ms = 0;
	assert_int_equal(be->ping(st), CM_OK);
	be->rollback(holder);
	// Once the lock is free, the same call works within its deadline.
	st->deadline_ms = cm_now_ms() + WAIT_MS;
	assert_int_equal(be->begin(st, TSVC_TX_WRITE), CM_OK);
	assert_int_equal(be->thread_get(st, BOB, id, 1, &t), CM_OK);
	assert_non_null(t);
	msg_free(t);
	assert_int_equal(be->commit(st), CM_OK);
	store_free(st);
	store_free(holder);
}

// A connection the server dropped is replaced: between requests without
// the caller noticing; inside a transaction the transaction fails with
// CM_EUNAVAIL and the next call works again.
static void
test_reconnect(void **state)
{
	tsvc_store  *st = store_new(db);
	tsvc_thread *t  = NULL;
	char         id[CM_UUID_LEN + 1];
	char        *v;

	(void) state;
	assert_int_equal(insert(st, ALICE, "{}", cm_now_us(), 0, id), CM_OK);
	v = admin("SELECT count(pg_terminate_backend(pid))"
	          " FROM pg_stat_activity"
	          " WHERE application_name = 'threadgate-threads'"
	          " AND datname = current_database()");
	free(v);
	wait_until("SELECT count(*) FROM pg_stat_activity"
	           " WHERE application_name = 'threadgate-threads'"
	           " AND datname = current_database()",
	    0);
	// Idle when it was dropped: repaired before the statement.
	assert_int_equal(be->thread_get(st, ALICE, id, 0, &t), CM_OK);
	assert_non_null(t);
	msg_free(t);
	t = NULL;

	assert_int_equal(be->begin(st, TSVC_TX_WRITE), CM_OK);
	v = admin("SELECT count(pg_terminate_backend(pid))"
	          " FROM pg_stat_activity"
	          " WHERE application_name = 'threadgate-threads'"
	          " AND datname = current_database()");
	free(v);
	wait_until("SELECT count(*) FROM pg_stat_activity"
	           " WHERE application_name = 'threadgate-threads'"
	           " AND datname = current_database()",
	    0);
	assert_int_equal(be->thread_get(st, ALICE, id, 1, &t), CM_EUNAVAIL);
	assert_string_equal(st->detail, "storage unavailable, retry later");
	// Still inside the dead transaction: no silent reconnect.
	assert_int_equal(be->ping(st), CM_EUNAVAIL);
	be->rollback(st);
	assert_int_equal(be->ping(st), CM_OK);
	assert_int_equal(be->thread_get(st, ALICE, id, 0, &t), CM_OK);
	msg_free(t);
	store_free(st);
}

typedef struct opener {
	const char *target;
	cm_err      rv;
	void       *db;
	char        detail[CM_RPC_DETAIL_MAX];
} opener;

static void *
open_thread(void *arg)
{
	opener *o = arg;

	o->rv =
	    be->db_open(o->target, NULL, &o->db, o->detail, sizeof(o->detail));
	return (NULL);
}

// Replicas starting together on an empty database migrate it once; a
// database with a newer schema is refused.
static void
test_migrations(void **state)
{
	char      name[64];
	char     *t;
	char     *v;
	opener    o[4];
	pthread_t th[4];
	void     *d = NULL;
	char      detail[CM_RPC_DETAIL_MAX];

	(void) state;
	snprintf(name, sizeof(name), "tgmig_%lld", (long long) cm_now_us());
	{
		char sql[128];

		snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
		free(admin(sql));
	}
	t = target_with_db(name, NULL);
	for (int i = 0; i < 4; i++) {
		memset(&o[i], 0, sizeof(o[i]));
		o[i].target = t;
		assert_int_equal(
		    pthread_create(&th[i], NULL, open_thread, &o[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		if (o[i].rv != CM_OK) {
			fail_msg("db_open %d: %s", i, o[i].detail);
		}
		be->db_close(o[i].db);
	}
	v = admin_on(t,
	    "SELECT count(*) || ':' || max(version)"
	    " FROM threadgate_schema");
	assert_string_equal(v, "1:1");
	free(v);
	// A newer schema (a newer build ran here) is refused.
	free(admin_on(t,
	    "INSERT INTO threadgate_schema (version)"
	    " VALUES (99)"));
	assert_int_equal(
	    be->db_open(t, NULL, &d, detail, sizeof(detail)), CM_EUNAVAIL);
	assert_non_null(strstr(detail, "newer"));
	// Garbage targets are refused without being echoed.
	assert_int_equal(be->db_open("host=x password='secret", NULL, &d,
	                     detail, sizeof(detail)),
	    CM_EINVAL);
	assert_null(strstr(detail, "secret"));
	free(t);
	{
		char sql[128];

		snprintf(
		    sql, sizeof(sql), "DROP DATABASE %s WITH (FORCE)", name);
		free(admin(sql));
	}
}

typedef struct racer {
	tsvc_store *st;
	const char *id;
	cm_err      rv;
} racer;

static void *
insert_thread(void *arg)
{
	racer      *r = arg;
	tsvc_thread t = THREADGATE__THREADS__V1__THREAD__INIT;

	t.owner         = BOB;
	t.thread_id     = (char *) r->id;
	t.metadata_json = "{}";
	t.created_at_us = cm_now_us();
	t.updated_at_us = t.created_at_us;
	t.ttl_strategy  = "";
	r->rv           = be->thread_insert(r->st, &t);
	return (NULL);
}

// The same id inserted by two connections at once: the second waits for
// the first's transaction and gets CM_EEXIST when it commits, or inserts
// when it rolls back.
static void
test_insert_race(void **state)
{
	tsvc_store *a = store_new(db);
	racer       r = { store_new(db), NULL, CM_OK };
	pthread_t   th;
	tsvc_thread t = THREADGATE__THREADS__V1__THREAD__INIT;
	char        id[CM_UUID_LEN + 1];

	(void) state;
	for (int commit = 1; commit >= 0; commit--) {
		cm_uuid7(id);
		t.owner         = ALICE;
		t.thread_id     = id;
		t.metadata_json = "{}";
		t.created_at_us = cm_now_us();
		t.updated_at_us = t.created_at_us;
		t.ttl_strategy  = "";
		assert_int_equal(be->begin(a, TSVC_TX_WRITE), CM_OK);
		assert_int_equal(be->thread_insert(a, &t), CM_OK);
		r.id = id;
		assert_int_equal(
		    pthread_create(&th, NULL, insert_thread, &r), 0);
		wait_until("SELECT count(*) FROM pg_stat_activity"
		           " WHERE wait_event_type = 'Lock'"
		           " AND application_name = 'threadgate-threads'",
		    1);
		if (commit) {
			assert_int_equal(be->commit(a), CM_OK);
		} else {
			be->rollback(a);
		}
		pthread_join(th, NULL);
		assert_int_equal(r.rv, commit ? CM_EEXIST : CM_OK);
	}
	store_free(r.st);
	store_free(a);
}

typedef struct sweeper {
	tsvc_store *st;
	int64_t     now;
	int64_t     total;
	cm_err      rv;
} sweeper;

static void *
sweep_thread(void *arg)
{
	sweeper *s   = arg;
	int64_t  end = cm_mono_ms() + WAIT_MS;
	char     sql[200];

	snprintf(sql, sizeof(sql),
	    "SELECT count(*) FROM threads WHERE owner LIKE 'sweep-%%'"
	    " AND expires_at <= %lld",
	    (long long) s->now);
	// Small batches until nothing expired is left: a sweep that met the
	// other sweeper may find its rows gone and delete nothing, as a
	// sweep in the service may; the next one takes the rest.
	while (cm_mono_ms() < end) {
		int64_t n = 0;

		s->rv = be->sweep(s->st, s->now, 7, &n);
		s->total += n;
		if (s->rv != CM_OK || (n == 0 && admin_i64(sql) == 0)) {
			break;
		}
	}
	return (NULL);
}

// Two sweepers at once delete every expired thread exactly once, wait
// for a writer that holds an owner (instead of failing, or passing over
// that owner's rows), and leave the rest.
static void
test_concurrent_sweep(void **state)
{
	tsvc_store  *st  = store_new(db);
	tsvc_thread *t   = NULL;
	int64_t      now = cm_now_us();
	int64_t      old = now - 3600 * INT64_C(1000000);
	sweeper      s[2];
	pthread_t    th[2];
	char         id[CM_UUID_LEN + 1];
	char         held[CM_UUID_LEN + 1];

	(void) state;
	for (int i = 0; i < 100; i++) {
		assert_int_equal(insert(st, i % 4 ? "sweep-a" : "sweep-b",
		                     "{}", old + i, 1, id),
		    CM_OK);
	}
	for (int i = 0; i < 5; i++) { // not expired yet
		assert_int_equal(
		    insert(st, "sweep-a", "{}", now, 120, id), CM_OK);
	}
	assert_int_equal(insert(st, "sweep-a", "{}", old, 0, id), CM_OK);
	// The oldest expired row's owner is held by a writer.
	assert_int_equal(
	    insert(st, "sweep-held", "{}", old - 1, 1, held), CM_OK);
	assert_int_equal(be->begin(st, TSVC_TX_WRITE), CM_OK);
	assert_int_equal(be->thread_get(st, "sweep-held", held, 1, &t), CM_OK);
	msg_free(t);
	for (int i = 0; i < 2; i++) {
		s[i].st    = store_new(db);
		s[i].now   = now;
		s[i].total = 0;
		s[i].rv    = CM_OK;
		assert_int_equal(
		    pthread_create(&th[i], NULL, sweep_thread, &s[i]), 0);
	}
	// Both sweepers wait for the writer, which then commits.
	wait_until("SELECT count(*) FROM pg_stat_activity"
	           " WHERE wait_event_type = 'Lock'"
	           " AND application_name = 'threadgate-threads'",
	    2);
	assert_int_equal(be->commit(st), CM_OK);
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(s[i].rv, CM_OK);
	}
	// Every expired row once, the others kept.
	assert_int_equal(s[0].total + s[1].total, 101);
	assert_int_equal(admin_i64("SELECT count(*) FROM threads"
	                           " WHERE owner LIKE 'sweep-%'"),
	    6);
	// The usage rows followed the deletes.
	assert_int_equal(admin_i64("SELECT sum(threads) FROM owner_usage"
	                           " WHERE owner LIKE 'sweep-%'"),
	    6);
	store_free(s[0].st);
	store_free(s[1].st);
	store_free(st);
}

// The GIN index serves metadata containment and the partial expires_at
// index serves the sweep, with the statements as prepared (checked in
// the server's index statistics).
static void
test_indexes_serve(void **state)
{
	tsvc_store *st    = store_new(db);
	tsvc_filter f     = { 0 };
	const char *owner = "index-owner";
	char        id[CM_UUID_LEN + 1];
	char        meta[64];
	int64_t     n   = 0;
	int64_t     now = cm_now_us();
	char       *v;

	(void) state;
	assert_int_equal(be->begin(st, TSVC_TX_WRITE), CM_OK);
	for (int i = 0; i < 3000; i++) {
		snprintf(meta, sizeof(meta), "{\"k\":\"%s\",\"i\":%d}",
		    i % 1000 == 0 ? "rare" : "common", i);
		assert_int_equal(insert(st, owner, meta, now - i,
		                     i % 1000 == 1 ? 1 : 0, id),
		    CM_OK);
	}
	assert_int_equal(be->commit(st), CM_OK);
	free(admin("ANALYZE threads"));
	f.metadata = "{\"k\":\"rare\"}";
	assert_int_equal(be->thread_count(st, owner, &f, &n), CM_OK);
	assert_int_equal(n, 3);
	assert_int_equal(
	    be->sweep(st, now + 3600 * INT64_C(1000000), 100, &n), CM_OK);
	assert_int_equal(n, 3);
	// Statistics reach the server's views within a second or so.
	wait_until("SELECT count(*) FROM pg_stat_user_indexes"
	           " WHERE indexrelname IN ('threads_metadata',"
	           " 'threads_expires') AND idx_scan > 0",
	    2);
	v = admin("SELECT 1");
	free(v);
	store_free(st);
}

// Calls abandoned at tiny deadlines leave no trace on their connection:
// a statement prepared or a transaction begun by the server just before
// the client gave up must not break the next calls (once it answered
// 42P05 "already exists" to the next prepare, an internal error).
static void
test_abandoned_calls(void **state)
{
	char    id[CM_UUID_LEN + 1];
	int     abandoned = 0;
	int64_t end       = cm_mono_ms() + WAIT_MS;

	(void) state;
	{
		tsvc_store *st = store_new(db);

		assert_int_equal(
		    insert(st, ALICE, "{}", cm_now_us(), 0, id), CM_OK);
		store_free(st);
	}
	for (int i = 0; i < ABANDON_ROUNDS && cm_mono_ms() < end; i++) {
		tsvc_store  *st = store_new(db);
		tsvc_thread *t  = NULL;
		cm_err       rv;

		// Fresh connection: nothing prepared yet. 0..3 ms to begin
		// a transaction and read under it.
		st->deadline_ms = cm_now_ms() + i % 4;
		rv              = be->begin(st, TSVC_TX_READ);
		if (rv == CM_OK) {
			rv = be->thread_get(st, ALICE, id, 0, &t);
			msg_free(t);
			t = NULL;
			be->rollback(st);
		}
		if (rv != CM_OK) {
			assert_int_equal(rv, CM_ETIMEDOUT);
			abandoned++;
		}
		st->deadline_ms = 0;
		assert_int_equal(be->begin(st, TSVC_TX_READ), CM_OK);
		rv = be->thread_get(st, ALICE, id, 0, &t);
		if (rv != CM_OK) {
			fail_msg("round %d: after an abandoned call: %s (%s)",
			    i, cm_strerror(rv), st->detail);
		}
		assert_non_null(t);
		msg_free(t);
		assert_int_equal(be->commit(st), CM_OK);
		store_free(st);
	}
	// Some calls must have been abandoned, or nothing was tested.
	assert_true(abandoned > 0);
}

// usage_is checks owner's usage against the expected numbers.
static void
usage_is(tsvc_store *st, const char *owner, int64_t threads, int64_t bytes)
{
	int64_t t = -1;
	int64_t b = -1;

	assert_int_equal(be->owner_usage(st, owner, &t, &b), CM_OK);
	if (t != threads || b != bytes) {
		fail_msg(
		    "usage of %s: %lld threads, %lld bytes; want %lld, %lld",
		    owner, (long long) t, (long long) b, (long long) threads,
		    (long long) bytes);
	}
}

// owner_usage follows every write, counting the bytes of the JSON text
// handed in (as the sqlite backend does): insert, values, metadata,
// checkpoints, checkpoint metadata, copy, keep_latest, delete.
static void
test_usage(void **state)
{
	tsvc_store     *st    = store_new(db);
	const char     *owner = "usage-owner";
	const char     *m1    = "{\"owner\":\"usage-owner\",\"k\":1}";
	const char     *m2    = "{\"owner\":\"usage-owner\",\"k\":22}";
	const char     *v     = "{\"messages\":[\"hi\",\"there\"]}";
	const char     *cm    = "{\"step\":0}";
	const char     *cm2   = "{\"step\":0,\"note\":\"x\"}";
	tsvc_checkpoint c     = THREADGATE__THREADS__V1__CHECKPOINT__INIT;
	char            id[CM_UUID_LEN + 1];
	char            cid[CM_UUID_LEN + 1];
	char            cid2[CM_UUID_LEN + 1];
	char            copy[CM_UUID_LEN + 1];
	int64_t         tb;
	int64_t         cb;
	int64_t         n = 0;

	(void) state;
	usage_is(st, owner, 0, 0);
	assert_int_equal(be->begin(st, TSVC_TX_WRITE), CM_OK);
	assert_int_equal(insert(st, owner, m1, cm_now_us(), 0, id), CM_OK);
	tb = (int64_t) strlen(m1) + 4;
	usage_is(st, owner, 1, tb); // the transaction sees its own writes
	assert_int_equal(be->commit(st), CM_OK);
	assert_int_equal(
	    be->thread_set_values(st, owner, id, v, cm_now_us()), CM_OK);
	tb += (int64_t) strlen(v);
	usage_is(st, owner, 1, tb);
	assert_int_equal(
	    be->thread_update(st, owner, id, m2, 0, "", cm_now_us(), NULL),
	    CM_OK);
	tb += (int64_t) strlen(m2) - (int64_t) strlen(m1);
	usage_is(st, owner, 1, tb);

	c.thread_id            = id;
	c.checkpoint_ns        = "";
	c.parent_checkpoint_id = "";
	c.values_json          = (char *) v;
	c.metadata_json        = (char *) cm;
	c.created_at_us        = cm_now_us();
	cm_uuid7(cid);
	c.checkpoint_id = cid;
	assert_int_equal(be->cp_insert(st, owner, &c), CM_OK);
	cm_uuid7(cid2);
	c.checkpoint_id = cid2;
	c.created_at_us++;
	assert_int_equal(be->cp_insert(st, owner, &c), CM_OK);
	cb = 2 * ((int64_t) strlen(v) + (int64_t) strlen(cm) + 2);
	usage_is(st, owner, 1, tb + cb);
	assert_int_equal(
	    be->cp_set_metadata(st, owner, id, "", cid2, cm2), CM_OK);
	cb += (int64_t) strlen(cm2) - (int64_t) strlen(cm);
	usage_is(st, owner, 1, tb + cb);
	assert_int_equal(be->cp_count(st, owner, id, 100, &n), CM_OK);
	assert_int_equal(n, 2);
	assert_int_equal(be->cp_count(st, owner, id, 1, &n), CM_OK);
	assert_int_equal(n, 1);

	cm_uuid7(copy);
	assert_int_equal(
	    be->thread_copy(st, owner, id, copy, cm_now_us(), &n), CM_OK);
	assert_int_equal(n, 1);
	usage_is(st, owner, 2, 2 * (tb + cb));
	// keep_latest drops the older checkpoint (cid, with metadata cm).
	assert_int_equal(be->cp_keep_latest(st, owner, copy), CM_OK);
	usage_is(st, owner, 2,
	    2 * (tb + cb) - ((int64_t) strlen(v) + (int64_t) strlen(cm) + 2));
	assert_int_equal(be->thread_delete(st, owner, copy, &n), CM_OK);
	assert_int_equal(n, 1);
	usage_is(st, owner, 1, tb + cb);
	// The unfiltered count reads the usage row.
	{
		tsvc_filter f = { 0 };

		assert_int_equal(be->thread_count(st, owner, &f, &n), CM_OK);
		assert_int_equal(n, 1);
	}
	assert_int_equal(be->thread_delete(st, owner, id, &n), CM_OK);
	usage_is(st, owner, 0, 0);
	store_free(st);
}

typedef struct orderer {
	tsvc_store  *st;
	const char  *owner;
	const char  *id;
	cm_err       rv;
	tsvc_thread *t;
} orderer;

static void *
lock_thread(void *arg)
{
	orderer *o = arg;

	o->rv = be->begin(o->st, TSVC_TX_WRITE);
	if (o->rv == CM_OK) {
		o->rv = be->thread_get(o->st, o->owner, o->id, 1, &o->t);
	}
	be->rollback(o->st);
	return (NULL);
}

// A write transaction takes its owner first: one that deletes two
// threads while another transaction of the same owner wants the second
// one never deadlocks (without the rule the second would hold the thread
// and wait for the owner's usage row while the first holds the row and
// waits for the thread).
static void
test_owner_lock_order(void **state)
{
	tsvc_store *a = store_new(db);
	orderer     b = { store_new(db), "order-owner", NULL, CM_OK, NULL };
	pthread_t   th;
	char        t1[CM_UUID_LEN + 1];
	char        t2[CM_UUID_LEN + 1];
	int64_t     n = 0;

	(void) state;
	assert_int_equal(insert(a, b.owner, "{}", cm_now_us(), 0, t1), CM_OK);
	assert_int_equal(insert(a, b.owner, "{}", cm_now_us(), 0, t2), CM_OK);
	assert_int_equal(be->begin(a, TSVC_TX_WRITE), CM_OK);
	assert_int_equal(be->thread_delete(a, b.owner, t1, &n), CM_OK);
	b.id = t2;
	assert_int_equal(pthread_create(&th, NULL, lock_thread, &b), 0);
	// b waits for the owner, holding nothing of it.
	wait_until("SELECT count(*) FROM pg_stat_activity"
	           " WHERE wait_event_type = 'Lock'"
	           " AND application_name = 'threadgate-threads'",
	    1);
	assert_int_equal(be->thread_delete(a, b.owner, t2, &n), CM_OK);
	assert_int_equal(n, 1);
	assert_int_equal(be->commit(a), CM_OK);
	pthread_join(th, NULL);
	assert_int_equal(b.rv, CM_OK);
	assert_null(b.t); // deleted meanwhile
	store_free(b.st);
	store_free(a);
}

// ---------------------------------------------------------------------
// Search plans (db_pg.c "Search plans")
// ---------------------------------------------------------------------

// The window of the plan tests' database handle: step 1 walks at most
// PLAN_WINDOW rows, step 2 all of an owner's rows up to PLAN_WALK (10
// windows, PG_WALK_WINDOWS). The owners' sizes sit on both sides of both
// bounds.
#define PLAN_WINDOW 4
#define PLAN_WALK   40
#define PLAN_BIG    100

// ids_sink collects the ids of a search page.
typedef struct ids_page {
	char   ids[PLAN_BIG + 1][CM_UUID_LEN + 1];
	size_t n;
} ids_page;

static cm_err
ids_sink(void *arg, tsvc_thread *t)
{
	ids_page *pg = arg;

	assert_true(pg->n < PLAN_BIG + 1);
	snprintf(pg->ids[pg->n++], CM_UUID_LEN + 1, "%s", t->thread_id);
	msg_free(t);
	return (CM_OK);
}

// all_sink collects whole threads (new references) in order.
typedef struct all_rows {
	tsvc_thread *t[PLAN_BIG + 1];
	size_t       n;
} all_rows;

static cm_err
all_sink(void *arg, tsvc_thread *t)
{
	all_rows *a = arg;

	assert_true(a->n < PLAN_BIG + 1);
	a->t[a->n++] = t;
	return (CM_OK);
}

static json_t *
parse_or_null(const char *text)
{
	json_t *v = NULL;

	if (text == NULL || text[0] == '\0') {
		return (NULL);
	}
	assert_int_equal(
	    cm_json_parse(text, strlen(text), 1u << 24, &v, NULL, 0), CM_OK);
	return (v);
}

// expect_all is the reference answer without offset and limit: every row
// of owner in the page's order (an unfiltered search), the filter decided
// by tsvc_json_contains().
static void
expect_all(tsvc_store *st, const char *owner, const tsvc_filter *f,
    const tsvc_page *page, ids_page *out)
{
	tsvc_filter none = { 0 };
	tsvc_page   all  = *page;
	all_rows    a    = { 0 };
	json_t     *mf   = parse_or_null(f->metadata);
	json_t     *vf   = parse_or_null(f->values);

	all.limit   = PLAN_BIG + 1;
	all.offset  = 0;
	none.status = f->status;
	assert_int_equal(
	    be->thread_search(st, owner, &none, &all, all_sink, &a), CM_OK);
	out->n = 0;
	for (size_t i = 0; i < a.n; i++) {
		json_t *m = parse_or_null(a.t[i]->metadata_json);
		json_t *v = parse_or_null(a.t[i]->values_json);

		if ((mf == NULL || tsvc_json_contains(m, mf)) &&
		    (vf == NULL || (v != NULL && tsvc_json_contains(v, vf)))) {
			snprintf(out->ids[out->n++], CM_UUID_LEN + 1, "%s",
			    a.t[i]->thread_id);
		}
		json_decref(m);
		json_decref(v);
		msg_free(a.t[i]);
	}
	json_decref(mf);
	json_decref(vf);
}

// plan_owner creates n threads of owner, oldest first: metadata
// {"i": i, "half": "odd"|"even"} plus "r": true on three old rows
// (outside a window at either end) and "near": true on the second newest
// and the second oldest (one in each end's window); values {"v": i % 3}
// on every other row, set in an order that mixes updated_at.
static void
plan_owner(tsvc_store *st, const char *owner, int n, int64_t t0)
{
	char ids[PLAN_BIG][CM_UUID_LEN + 1];
	char meta[128];
	char vals[32];

	assert_int_equal(be->begin(st, TSVC_TX_WRITE), CM_OK);
	for (int i = 0; i < n; i++) {
		int rare = n > 2 * PLAN_WINDOW + 2 &&
		    (i == 5 || i == n / 2 || i == n - 6);
		int near = i == 1 || i == n - 2;

		snprintf(meta, sizeof(meta), "{\"i\":%d,\"half\":\"%s\"%s%s}",
		    i, i % 2 ? "odd" : "even", rare ? ",\"r\":true" : "",
		    near ? ",\"near\":true" : "");
		assert_int_equal(
		    insert(st, owner, meta, t0 + i, 0, ids[i]), CM_OK);
	}
	for (int i = n - 1; i >= 0; i -= 2) {
		snprintf(vals, sizeof(vals), "{\"v\":%d}", i % 3);
		assert_int_equal(be->thread_set_values(st, owner, ids[i], vals,
		                     t0 + 1000 + (n - i) % 7),
		    CM_OK);
	}
	assert_int_equal(be->commit(st), CM_OK);
}

// check_plans compares every page of owner under each filter, order,
// limit and offset with the reference; returns how many it compared.
static int
check_plans(tsvc_store *st, tsvc_store *ref, const char *owner)
{
	static const struct {
		const char *metadata;
		const char *values;
		const char *status;
	} filters[] = {
		{ "{\"half\":\"odd\"}", NULL, NULL }, // unselective
		{ "{\"r\":true}", NULL, NULL },       // rare and old
		{ "{\"near\":true}", NULL, NULL },    // one in each window
		{ "{\"absent\":1}", NULL, NULL },     // no match
		{ NULL, "{\"v\":0}", NULL },          // values alone
		{ "{\"half\":\"even\"}", "{\"v\":1}", NULL },
		{ "{\"half\":\"odd\"}", NULL, "idle" },
		{ "{\"r\":true}", NULL, "busy" },
	};
	static const int64_t limits[]  = { 1, 2, 3, 11 };
	static const int64_t offsets[] = { 0, 1, 3, 4, 5, 39, 41, 99 };
	int                  n         = 0;

	for (size_t fi = 0; fi < sizeof(filters) / sizeof(filters[0]); fi++) {
		tsvc_filter f = { 0 };

		f.metadata = filters[fi].metadata;
		f.values   = filters[fi].values;
		f.status   = filters[fi].status;
		for (int order = 0; order < 8; order++) {
			tsvc_page page = { 0 };
			ids_page  want = { 0 };

			page.sort      = (tsvc_sort) (order / 2);
			page.ascending = order % 2;
			expect_all(ref, owner, &f, &page, &want);
			for (size_t li = 0; li < 4; li++) {
				for (size_t oi = 0; oi < 8; oi++) {
					ids_page got = { 0 };
					size_t   from, to;

					page.limit  = limits[li];
					page.offset = offsets[oi];
					from        = (size_t) page.offset;
					from = from < want.n ? from : want.n;
					to   = from + (size_t) page.limit;
					to   = to < want.n ? to : want.n;
					assert_int_equal(
					    be->thread_search(st, owner, &f,
					        &page, ids_sink, &got),
					    CM_OK);
					if (got.n != to - from) {
						fail_msg(
						    "%s %s/%s order %d limit"
						    " %lld offset %lld: %zu"
						    " rows, want %zu",
						    owner,
						    f.metadata ? f.metadata
						               : "-",
						    f.values ? f.values : "-",
						    order,
						    (long long) page.limit,
						    (long long) page.offset,
						    got.n, to - from);
					}
					for (size_t i = 0; i < got.n; i++) {
						assert_string_equal(got.ids[i],
						    want.ids[from + i]);
					}
					n++;
				}
			}
		}
	}
	return (n);
}

// gin_scans is how often the metadata GIN index was used, once the
// thread-service connections of the database are gone (a backend
// reports its statistics when it exits).
static int64_t
gin_scans(void)
{
	wait_until("SELECT count(*) FROM pg_stat_activity"
	           " WHERE application_name = 'threadgate-threads'"
	           " AND datname = current_database()",
	    0);
	return (admin_i64("SELECT idx_scan FROM pg_stat_user_indexes"
	                  " WHERE indexrelname = 'threads_metadata'"));
}

// Filtered searches give exactly the reference's pages on every path of
// "Search plans": owners of up to a window of rows answered by the first
// window whatever the filter, owners of up to PLAN_WALK rows by the walk
// of all their rows, bigger ones by the window when it holds the page and
// by the GIN index (metadata) or the planner's walk (values) when it does
// not; offsets and limits cross the window's end. Another owner's
// matching rows (newer than all) never show. The GIN index serves only
// the bigger owners' rare filters.
static void
test_search_plans(void **state)
{
	static const int within[] = { 3, PLAN_WINDOW, PLAN_WINDOW + 1,
		PLAN_WALK };
	static const int beyond[] = { PLAN_WALK + 1, PLAN_BIG };
	tsvc_db_options  opt      = tsvc_db_options_default();
	void            *d        = NULL;
	char             detail[CM_RPC_DETAIL_MAX];
	char             owner[32];
	tsvc_store      *st;
	tsvc_store      *ref;
	int64_t          t0 = cm_now_us() - 3600 * INT64_C(1000000);
	int64_t          g0, g1, g2;
	int              n = 0;

	(void) state;
	opt.search_window = PLAN_WINDOW;
	assert_int_equal(
	    be->db_open(target, &opt, &d, detail, sizeof(detail)), CM_OK);
	st = store_new(d);
	for (size_t i = 0; i < 4; i++) {
		snprintf(owner, sizeof(owner), "plan-%d", within[i]);
		plan_owner(st, owner, within[i], t0);
	}
	for (size_t i = 0; i < 2; i++) {
		snprintf(owner, sizeof(owner), "plan-%d", beyond[i]);
		plan_owner(st, owner, beyond[i], t0);
	}
	// Another owner whose rows match every filter, newer than all.
	plan_owner(st, "plan-other", PLAN_BIG, t0 + 500);
	store_free(st);
	g0 = gin_scans();

	st  = store_new(d);
	ref = store_new(db);
	for (size_t i = 0; i < 4; i++) {
		snprintf(owner, sizeof(owner), "plan-%d", within[i]);
		n += check_plans(st, ref, owner);
	}
	{
		// A big owner's unselective filter: its window holds the
		// page.
		tsvc_filter f    = { 0 };
		tsvc_page   page = { TSVC_SORT_CREATED_AT, 0, 2, 0 };
		ids_page    got  = { 0 };

		f.metadata = "{\"half\":\"odd\"}";
		assert_int_equal(be->thread_search(st, "plan-100", &f, &page,
		                     ids_sink, &got),
		    CM_OK);
		assert_int_equal(got.n, 2);
	}
	store_free(st);
	store_free(ref);
	g1 = gin_scans();
	assert_int_equal(g1, g0);

	st  = store_new(d);
	ref = store_new(db);
	for (size_t i = 0; i < 2; i++) {
		snprintf(owner, sizeof(owner), "plan-%d", beyond[i]);
		n += check_plans(st, ref, owner);
	}
	store_free(st);
	store_free(ref);
	g2 = gin_scans();
	assert_true(g2 > g1);
	be->db_close(d);
	assert_int_equal(n, 6 * 8 * 8 * 4 * 8);
}

// A window page whose documents exceed the reply budget is not held: the
// next step streams the same rows to the sink.
static void
test_search_window_budget(void **state)
{
	tsvc_db_options opt   = tsvc_db_options_default();
	const char     *owner = "plan-budget";
	size_t          big   = TSVC_REPLY_BUDGET / 3 + 1024;
	char           *vals  = cm_xmalloc(big + 16);
	char            ids[3][CM_UUID_LEN + 1];
	void           *d = NULL;
	char            detail[CM_RPC_DETAIL_MAX];
	tsvc_store     *st;
	tsvc_filter     f    = { 0 };
	tsvc_page       page = { TSVC_SORT_CREATED_AT, 1, 3, 0 };
	ids_page        got  = { 0 };
	int64_t         t0   = cm_now_us();
	int64_t         g0;

	(void) state;
	opt.search_window = PLAN_WINDOW;
	assert_int_equal(
	    be->db_open(target, &opt, &d, detail, sizeof(detail)), CM_OK);
	st = store_new(d);
	memcpy(vals, "{\"blob\":\"", 9);
	memset(vals + 9, 'x', big);
	memcpy(vals + 9 + big, "\"}", 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(
		    insert(st, owner, "{\"k\":1}", t0 + i, 0, ids[i]), CM_OK);
		assert_int_equal(
		    be->thread_set_values(st, owner, ids[i], vals, t0 + i),
		    CM_OK);
	}
	free(vals);
	store_free(st);
	g0         = gin_scans();
	st         = store_new(d);
	f.metadata = "{\"k\":1}";
	assert_int_equal(
	    be->thread_search(st, owner, &f, &page, ids_sink, &got), CM_OK);
	assert_int_equal(got.n, 3);
	for (int i = 0; i < 3; i++) {
		assert_string_equal(got.ids[i], ids[i]);
	}
	store_free(st);
	// The window (which held all three rows) gave up; the GIN index
	// answered.
	assert_true(gin_scans() > g0);
	be->db_close(d);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_json_round_trip, skip_without_pg),
		cmocka_unit_test_setup(test_json_nul_refused, skip_without_pg),
		cmocka_unit_test_setup(test_containment, skip_without_pg),
		cmocka_unit_test_setup(test_deadline_cancels, skip_without_pg),
		cmocka_unit_test_setup(test_reconnect, skip_without_pg),
		cmocka_unit_test_setup(test_migrations, skip_without_pg),
		cmocka_unit_test_setup(test_insert_race, skip_without_pg),
		cmocka_unit_test_setup(test_concurrent_sweep, skip_without_pg),
		cmocka_unit_test_setup(test_indexes_serve, skip_without_pg),
		cmocka_unit_test_setup(test_usage, skip_without_pg),
		cmocka_unit_test_setup(test_abandoned_calls, skip_without_pg),
		cmocka_unit_test_setup(test_owner_lock_order, skip_without_pg),
		cmocka_unit_test_setup(test_search_plans, skip_without_pg),
		cmocka_unit_test_setup(
		    test_search_window_budget, skip_without_pg),
	};
	char   detail[CM_RPC_DETAIL_MAX];
	int    rc;
	cm_err rv;

	target = getenv("TG_TEST_THREADS_DB");
	if (target != NULL && target[0] == '\0') {
		target = NULL;
	}
	if (target != NULL) {
		rv = be->db_open(target, NULL, &db, detail, sizeof(detail));
		if (rv != CM_OK) {
			fprintf(stderr, "db_open(%s): %s: %s\n", target,
			    cm_strerror(rv), detail);
			return (1);
		}
	}
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	be->db_close(db);
	return (rc);
}
