// SPDX-License-Identifier: MIT
//
// Several thread-service replicas on one PostgreSQL database behave as one
// service (issue 7, section 2), and a PostgreSQL outage is an outage, never
// a wrong answer. Two modes, two ctest tests:
//
//   pg_replica_test replicas   two threadgate-threads processes on one
//                              fresh database of the shared test cluster
//                              (TG_TEST_THREADS_DB), driven at once over
//                              nng the way two gateways would:
//     - the same thread_id created through both at the same moment:
//       exactly one success and one CM_EEXIST (409); with if_exists
//       do_nothing by the owner, both get the same thread;
//     - concurrent metadata merges through both lose no key;
//     - concurrent update_state through both keep one linear checkpoint
//       chain (each checkpoint's parent is the one before it, each holds
//       its parent's values plus its own update: no lost update);
//     - both TTL sweepers running at once delete every expired thread,
//       keep the others, and log no error.
//   pg_replica_test restart    a private cluster (restarting the shared one
//                              would break the tests running beside it):
//                              the service answers CM_EUNAVAIL (503) while
//                              PostgreSQL is down, and serves the same data
//                              again once it is back, without a restart of
//                              its own.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/json.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "tests/harness/proc.h"
#include "thread-service/tsvc.h"

// Per-call bound; generous for a loaded 2-core machine.
#define CALL_MS 10000
// How long a service may take to start answering, and how long the test
// waits for a condition it polls (sweeps done, service back).
#define READY_MS 30000
#define WAIT_MS  30000
// Rounds of the create race, and writers x updates of the merge and
// state races.
#define CREATE_ROUNDS 20
#define WRITERS       4
#define UPDATES       15
// Expiring threads for the sweepers: more than two sweep batches
// (TSVC_SWEEP_BATCH), so the two sweepers overlap.
#define EXPIRING 600
#define KEEPING  5

#define NREPLICAS 2

static char          *tmpdir;
static char           target[1024];
static char           logpath[NREPLICAS][600];
static char           url[NREPLICAS][600];
static tg_proc       *proc[NREPLICAS];
static cm_rpc_client *cli[NREPLICAS];
// restart mode: the private cluster's state directory.
static char pgstate[700];

// ---------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------

static void
show_logs(void)
{
	for (int i = 0; i < NREPLICAS; i++) {
		char *log =
		    logpath[i][0] != '\0' ? tg_read_file(logpath[i]) : NULL;

		if (log != NULL) {
			fprintf(
			    stderr, "--- replica %d log ---\n%s\n", i, log);
		}
		free(log);
	}
}

static cm_err
call(int r, const char *method, const void *req,
    const ProtobufCMessageDescriptor *d, void *reply_out, char *detail)
{
	ProtobufCMessage *reply = NULL;
	char              dbuf[CM_RPC_DETAIL_MAX];
	cm_err            rv;

	rv = cm_rpc_call_sync(cli[r], method, "pg-replica-test", CALL_MS,
	    (const ProtobufCMessage *) req, d, &reply,
	    detail != NULL ? detail : dbuf, CM_RPC_DETAIL_MAX);
	if (rv == CM_OK) {
		if (reply_out != NULL) {
			*(ProtobufCMessage **) reply_out = reply;
		} else {
			protobuf_c_message_free_unpacked(reply, NULL);
		}
	}
	return (rv);
}

static cm_err
get(int r, const char *owner, const char *id, tsvc_thread **out)
{
	tsvc_thread_ref ref = THREADGATE__THREADS__V1__THREAD_REF__INIT;

	ref.owner     = (char *) owner;
	ref.thread_id = (char *) id;
	return (call(r, "GetThread", &ref,
	    &threadgate__threads__v1__thread__descriptor, out, NULL));
}

// wait_ready polls with a GetThread of a random id until replica r
// answers NOT_FOUND.
static void
wait_ready(int r)
{
	int64_t end = cm_mono_ms() + READY_MS;
	char    id[CM_UUID_LEN + 1];

	cm_uuid4(id);
	while (cm_mono_ms() < end) {
		if (!tg_proc_alive(proc[r])) {
			show_logs();
			fail_msg("replica %d exited during start-up", r);
		}
		if (get(r, "probe", id, NULL) == CM_ENOENT) {
			return;
		}
	}
	show_logs();
	fail_msg("replica %d not ready after %d ms", r, READY_MS);
}

static void
start_replica(int r)
{
	char        bin[1024];
	const char *argv[] = { bin, "--listen", url[r], "--db", target,
		"--ttl-sweep", "1", NULL };

	snprintf(bin, sizeof(bin), "%s/thread-service/threadgate-threads",
	    tg_build_dir());
	assert_int_equal(tg_proc_start(argv, NULL, logpath[r], &proc[r]), 0);
	wait_ready(r);
}

static void
stop_replica(int r)
{
	int status = tg_proc_stop(proc[r]);

	proc[r] = NULL;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		show_logs();
		fail_msg("replica %d did not exit 0 (status %d)", r, status);
	}
}

static void
setup_dirs(const char *prefix)
{
	tmpdir = tg_tmpdir(prefix);
	for (int i = 0; i < NREPLICAS; i++) {
		snprintf(
		    url[i], sizeof(url[i]), "ipc://%s/r%d.sock", tmpdir, i);
		snprintf(
		    logpath[i], sizeof(logpath[i]), "%s/r%d.log", tmpdir, i);
		if (cm_rpc_client_open(url[i], &cli[i]) != CM_OK) {
			fail_msg("rpc client %s", url[i]);
		}
	}
}

static void
teardown_dirs(void)
{
	char p[700];

	for (int i = 0; i < NREPLICAS; i++) {
		cm_rpc_client_close(cli[i]);
		if (proc[i] != NULL) {
			tg_proc_stop(proc[i]);
		}
		if (getenv("TG_KEEP_TMP") == NULL) {
			unlink(logpath[i]);
			snprintf(p, sizeof(p), "%s/r%d.sock", tmpdir, i);
			unlink(p);
		}
	}
	if (getenv("TG_KEEP_TMP") == NULL) {
		rmdir(tmpdir);
	}
	free(tmpdir);
}

// log_has_errors: whether a replica logged anything at error level.
static int
log_has_errors(int r)
{
	char *log = tg_read_file(logpath[r]);
	int   bad = log != NULL && strstr(log, "\"level\":\"error\"") != NULL;

	free(log);
	return (bad);
}

// ---------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------

static cm_err
create(int r, const char *owner, const char *id, const char *meta,
    int do_nothing, double ttl, tsvc_thread **out)
{
	tsvc_create_req req =
	    THREADGATE__THREADS__V1__CREATE_THREAD_REQUEST__INIT;

	req.owner         = (char *) owner;
	req.thread_id     = (char *) (id != NULL ? id : "");
	req.metadata_json = (char *) (meta != NULL ? meta : "");
	req.if_exists     = do_nothing
	        ? THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_DO_NOTHING
	        : THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_RAISE;
	req.ttl_minutes   = ttl;
	req.ttl_strategy  = ttl > 0 ? "delete" : "";
	return (call(r, "CreateThread", &req,
	    &threadgate__threads__v1__thread__descriptor, out, NULL));
}

static cm_err
count(int r, const char *owner, const char *meta, int64_t *n)
{
	tsvc_count_req req =
	    THREADGATE__THREADS__V1__COUNT_THREADS_REQUEST__INIT;
	tsvc_count_reply *rep = NULL;
	cm_err            rv;

	req.owner         = (char *) owner;
	req.metadata_json = (char *) (meta != NULL ? meta : "");
	rv                = call(r, "CountThreads", &req,
	                   &threadgate__threads__v1__count_reply__descriptor, &rep, NULL);
	if (rv == CM_OK) {
		*n = rep->count;
		protobuf_c_message_free_unpacked(&rep->base, NULL);
	}
	return (rv);
}

static void
msg_free(void *m)
{
	if (m != NULL) {
		protobuf_c_message_free_unpacked((ProtobufCMessage *) m, NULL);
	}
}

static json_t *
parse(const char *text)
{
	json_t *v = NULL;

	if (cm_json_parse(text, strlen(text), 1u << 24, &v, NULL, 0) !=
	    CM_OK) {
		fail_msg("not JSON: %s", text);
	}
	return (v);
}

// ---------------------------------------------------------------------
// Racers: WRITERS threads, half through each replica, released together
// ---------------------------------------------------------------------

typedef struct racer {
	int                index;
	pthread_barrier_t *go;
	const char        *id;
	const char        *owner;
	int                do_nothing;
	cm_err             rv;
	tsvc_thread       *thread;
	int                failures;
	char               detail[CM_RPC_DETAIL_MAX];
} racer;

static void
run_racers(racer *rs, int n, void *(*fn)(void *) )
{
	pthread_t         th[WRITERS];
	pthread_barrier_t go;

	CM_ASSERT(n <= WRITERS);
	pthread_barrier_init(&go, NULL, (unsigned) n);
	for (int i = 0; i < n; i++) {
		rs[i].index = i;
		rs[i].go    = &go;
		assert_int_equal(pthread_create(&th[i], NULL, fn, &rs[i]), 0);
	}
	for (int i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
	}
	pthread_barrier_destroy(&go);
}

static void *
create_racer(void *arg)
{
	racer *r = arg;

	pthread_barrier_wait(r->go);
	r->rv = create(r->index % NREPLICAS, r->owner, r->id, "{\"race\":1}",
	    r->do_nothing, 0, &r->thread);
	return (NULL);
}

// The same id through both replicas at once: one 200, one 409; with
// do_nothing by the owner both answer the one thread; with do_nothing by
// another owner, 409 for the other.
static void
test_create_race(void **state)
{
	(void) state;
	for (int round = 0; round < CREATE_ROUNDS; round++) {
		racer rs[2];
		char  id[CM_UUID_LEN + 1];
		int   mode  = round % 3; // 0 raise, 1 do_nothing, 2 foreign
		int   ok    = 0;
		int   exist = 0;

		cm_uuid7(id);
		memset(rs, 0, sizeof(rs));
		for (int i = 0; i < 2; i++) {
			rs[i].id    = id;
			rs[i].owner = (mode == 2 && i == 1) ? "bob" : "alice";
			rs[i].do_nothing = (mode != 0);
		}
		run_racers(rs, 2, create_racer);
		for (int i = 0; i < 2; i++) {
			if (rs[i].rv == CM_OK) {
				ok++;
			} else if (rs[i].rv == CM_EEXIST) {
				exist++;
			} else {
				show_logs();
				fail_msg("round %d: create via replica %d: %s",
				    round, i, cm_strerror(rs[i].rv));
			}
		}
		if (mode == 1) {
			// Both the owner's: both get the same thread.
			assert_int_equal(ok, 2);
			assert_string_equal(rs[0].thread->thread_id, id);
			assert_string_equal(rs[1].thread->thread_id, id);
			assert_true(rs[0].thread->created_at_us ==
			    rs[1].thread->created_at_us);
		} else if (mode == 2 && ok == 2) {
			fail_msg(
			    "round %d: two owners both created %s", round, id);
		} else {
			assert_int_equal(ok, 1);
			assert_int_equal(exist, 1);
		}
		msg_free(rs[0].thread);
		msg_free(rs[1].thread);
	}
}

static void *
merge_racer(void *arg)
{
	racer *r = arg;

	pthread_barrier_wait(r->go);
	for (int m = 0; m < UPDATES; m++) {
		tsvc_update_req req =
		    THREADGATE__THREADS__V1__UPDATE_THREAD_REQUEST__INIT;
		char   meta[64];
		cm_err rv;

		snprintf(
		    meta, sizeof(meta), "{\"w%d_%d\":%d}", r->index, m, m);
		req.owner         = (char *) r->owner;
		req.thread_id     = (char *) r->id;
		req.metadata_json = meta;
		rv = call(r->index % NREPLICAS, "UpdateThread", &req,
		    &threadgate__threads__v1__thread__descriptor, NULL,
		    r->detail);
		if (rv != CM_OK) {
			r->failures++;
			r->rv = rv;
		}
	}
	return (NULL);
}

// Metadata merges through both replicas at once lose no key.
static void
test_concurrent_merges(void **state)
{
	racer        rs[WRITERS];
	tsvc_thread *t = NULL;
	json_t      *meta;

	(void) state;
	assert_int_equal(
	    create(0, "alice", NULL, "{\"base\":true}", 0, 0, &t), CM_OK);
	memset(rs, 0, sizeof(rs));
	for (int i = 0; i < WRITERS; i++) {
		rs[i].id    = t->thread_id;
		rs[i].owner = "alice";
	}
	run_racers(rs, WRITERS, merge_racer);
	for (int i = 0; i < WRITERS; i++) {
		if (rs[i].failures != 0) {
			show_logs();
			fail_msg("writer %d: %d updates failed, last %s: %s",
			    i, rs[i].failures, cm_strerror(rs[i].rv),
			    rs[i].detail);
		}
	}
	{
		tsvc_thread *g = NULL;

		assert_int_equal(get(1, "alice", t->thread_id, &g), CM_OK);
		meta = parse(g->metadata_json);
		msg_free(g);
	}
	for (int i = 0; i < WRITERS; i++) {
		for (int m = 0; m < UPDATES; m++) {
			char key[32];

			snprintf(key, sizeof(key), "w%d_%d", i, m);
			if (json_object_get(meta, key) == NULL) {
				fail_msg("metadata lost %s", key);
			}
		}
	}
	// base + owner + every writer's keys.
	assert_int_equal(json_object_size(meta), 2 + WRITERS * UPDATES);
	json_decref(meta);
	msg_free(t);
}

static void *
state_racer(void *arg)
{
	racer *r = arg;

	pthread_barrier_wait(r->go);
	for (int m = 0; m < UPDATES; m++) {
		tsvc_update_state_req req =
		    THREADGATE__THREADS__V1__UPDATE_STATE_REQUEST__INIT;
		char   values[64];
		char   node[16];
		cm_err rv;

		snprintf(
		    values, sizeof(values), "{\"v%d_%d\":%d}", r->index, m, m);
		snprintf(node, sizeof(node), "node%d", r->index);
		req.owner       = (char *) r->owner;
		req.thread_id   = (char *) r->id;
		req.values_json = values;
		req.as_node     = node;
		rv = call(r->index % NREPLICAS, "UpdateState", &req,
		    &threadgate__threads__v1__checkpoint__descriptor, NULL,
		    r->detail);
		if (rv != CM_OK) {
			r->failures++;
			r->rv = rv;
		}
	}
	return (NULL);
}

// update_state through both replicas at once: one linear chain, each
// checkpoint derived from the one before it, nothing overwritten.
static void
test_concurrent_state(void **state)
{
	racer            rs[WRITERS];
	tsvc_thread     *t = NULL;
	tsvc_history_req hreq =
	    THREADGATE__THREADS__V1__GET_HISTORY_REQUEST__INIT;
	tsvc_history_reply *h = NULL;
	size_t              n;

	(void) state;
	assert_int_equal(create(1, "alice", NULL, NULL, 0, 0, &t), CM_OK);
	memset(rs, 0, sizeof(rs));
	for (int i = 0; i < WRITERS; i++) {
		rs[i].id    = t->thread_id;
		rs[i].owner = "alice";
	}
	run_racers(rs, WRITERS, state_racer);
	for (int i = 0; i < WRITERS; i++) {
		if (rs[i].failures != 0) {
			show_logs();
			fail_msg(
			    "writer %d: %d state updates failed, last %s: %s",
			    i, rs[i].failures, cm_strerror(rs[i].rv),
			    rs[i].detail);
		}
	}
	hreq.owner     = "alice";
	hreq.thread_id = t->thread_id;
	hreq.limit     = TSVC_PAGE_MAX;
	assert_int_equal(
	    call(0, "GetHistory", &hreq,
	        &threadgate__threads__v1__history_reply__descriptor, &h, NULL),
	    CM_OK);
	n = h->n_checkpoints;
	assert_int_equal(n, WRITERS * UPDATES);
	// Newest first: each one's parent is the next in the list, the
	// oldest has none; walking from the oldest, each holds exactly one
	// more key than its parent, all of its parent's, and a step one
	// higher.
	for (size_t i = 0; i < n; i++) {
		tsvc_checkpoint *c      = h->checkpoints[i];
		json_t          *values = parse(c->values_json);
		json_t          *meta   = parse(c->metadata_json);
		json_t          *step   = json_object_get(meta, "step");

		if (i + 1 < n) {
			tsvc_checkpoint *parent = h->checkpoints[i + 1];
			json_t          *pv     = parse(parent->values_json);
			const char      *key;
			json_t          *val;

			if (strcmp(c->parent_checkpoint_id,
			        parent->checkpoint_id) != 0) {
				fail_msg("checkpoint %zu (%s) has parent %s, "
				         "the one before it is %s",
				    i, c->checkpoint_id,
				    c->parent_checkpoint_id,
				    parent->checkpoint_id);
			}
			json_object_foreach(pv, key, val)
			{
				if (!json_equal(
				        json_object_get(values, key), val)) {
					fail_msg(
					    "checkpoint %zu lost %s of its "
					    "parent",
					    i, key);
				}
			}
			json_decref(pv);
		} else {
			assert_string_equal(c->parent_checkpoint_id, "");
		}
		assert_int_equal(json_object_size(values), n - i);
		assert_true(json_is_integer(step));
		assert_int_equal(
		    json_integer_value(step), (json_int_t) (n - 1 - i));
		json_decref(values);
		json_decref(meta);
	}
	// The thread's values are the latest checkpoint's.
	{
		tsvc_thread *g = NULL;
		json_t      *a;
		json_t      *b;

		assert_int_equal(get(0, "alice", t->thread_id, &g), CM_OK);
		a = parse(g->values_json);
		b = parse(h->checkpoints[0]->values_json);
		assert_true(json_equal(a, b));
		json_decref(a);
		json_decref(b);
		msg_free(g);
	}
	msg_free(h);
	msg_free(t);
}

// Both sweepers (every second, in both replicas) delete every expired
// thread once, keep the others, and log no error.
static void
test_sweepers(void **state)
{
	int64_t end;
	int64_t left = -1;
	int64_t kept = -1;

	(void) state;
	for (int i = 0; i < EXPIRING; i++) {
		// 0.0005 minutes = 30 ms of ttl.
		assert_int_equal(
		    create(i % NREPLICAS, i % 3 ? "alice" : "bob", NULL,
		        "{\"sweep\":\"me\"}", 0, 0.0005, NULL),
		    CM_OK);
	}
	for (int i = 0; i < KEEPING; i++) {
		assert_int_equal(create(i % NREPLICAS, "alice", NULL,
		                     "{\"sweep\":\"keep\"}", 0, 60, NULL),
		    CM_OK);
	}
	end = cm_mono_ms() + WAIT_MS;
	while (cm_mono_ms() < end) {
		int64_t a = -1;
		int64_t b = -1;

		assert_int_equal(
		    count(0, "alice", "{\"sweep\":\"me\"}", &a), CM_OK);
		assert_int_equal(
		    count(1, "bob", "{\"sweep\":\"me\"}", &b), CM_OK);
		left = a + b;
		if (left == 0) {
			break;
		}
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	if (left != 0) {
		show_logs();
		fail_msg("%lld expired threads still there after %d ms",
		    (long long) left, WAIT_MS);
	}
	assert_int_equal(
	    count(1, "alice", "{\"sweep\":\"keep\"}", &kept), CM_OK);
	assert_int_equal(kept, KEEPING);
	for (int r = 0; r < NREPLICAS; r++) {
		if (log_has_errors(r)) {
			show_logs();
			fail_msg("replica %d logged an error", r);
		}
	}
}

static int
replicas_setup(void **state)
{
	const char *t = getenv("TG_TEST_THREADS_DB");

	(void) state;
	if (t == NULL || t[0] == '\0') {
		fprintf(stderr,
		    "TG_TEST_THREADS_DB is not set (run through "
		    "scripts/pg-test-cluster.sh run)\n");
		return (-1);
	}
	snprintf(target, sizeof(target), "%s", t);
	setup_dirs("pg-replicas");
	for (int i = 0; i < NREPLICAS; i++) {
		start_replica(i);
	}
	return (0);
}

static int
replicas_teardown(void **state)
{
	(void) state;
	for (int i = 0; i < NREPLICAS; i++) {
		if (proc[i] != NULL) {
			stop_replica(i);
		}
	}
	teardown_dirs();
	return (0);
}

// ---------------------------------------------------------------------
// restart: PostgreSQL down and back under a running thread-service
// ---------------------------------------------------------------------

// cluster runs scripts/pg-test-cluster.sh CMD on the private cluster.
static void
cluster(const char *cmd)
{
	char line[2048];
	int  rc;

	snprintf(line, sizeof(line), "'%s/scripts/pg-test-cluster.sh' %s '%s'",
	    tg_source_dir(), cmd, pgstate);
	rc = system(line);
	if (rc != 0) {
		fail_msg("%s: status %d", line, rc);
	}
}

static void
test_outage(void **state)
{
	tsvc_thread *t = NULL;
	tsvc_thread *g = NULL;
	char         id[CM_UUID_LEN + 1];
	char         detail[CM_RPC_DETAIL_MAX];
	int64_t      end;
	cm_err       rv = CM_OK;

	(void) state;
	start_replica(0);
	assert_int_equal(
	    create(0, "alice", NULL, "{\"keep\":\"me\"}", 0, 0, &t), CM_OK);

	// A restart between requests is repaired before the next statement:
	// the first request after it succeeds.
	cluster("restart");
	assert_int_equal(get(0, "alice", t->thread_id, &g), CM_OK);
	msg_free(g);
	g = NULL;

	// Down: every kind of request answers CM_EUNAVAIL (503), never a
	// wrong answer (not found, a success, a timeout after the deadline).
	cluster("halt");
	for (int i = 0; i < 5; i++) {
		tsvc_thread_ref ref =
		    THREADGATE__THREADS__V1__THREAD_REF__INIT;
		int64_t n = 0;

		ref.owner     = "alice";
		ref.thread_id = t->thread_id;
		rv            = call(0, "GetThread", &ref,
		               &threadgate__threads__v1__thread__descriptor, NULL,
		               detail);
		assert_int_equal(rv, CM_EUNAVAIL);
		assert_string_equal(
		    detail, "storage unavailable, retry later");
		cm_uuid7(id);
		assert_int_equal(
		    create(0, "alice", id, NULL, 0, 0, NULL), CM_EUNAVAIL);
		assert_int_equal(count(0, "alice", NULL, &n), CM_EUNAVAIL);
	}
	assert_true(tg_proc_alive(proc[0]));

	// Back: the same service serves the same data again.
	cluster("resume");
	end = cm_mono_ms() + WAIT_MS;
	while (cm_mono_ms() < end) {
		rv = get(0, "alice", t->thread_id, &g);
		if (rv != CM_EUNAVAIL) {
			break;
		}
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	if (rv != CM_OK) {
		show_logs();
		fail_msg("after the restart: %s", cm_strerror(rv));
	}
	assert_string_equal(g->metadata_json, t->metadata_json);
	msg_free(g);
	assert_int_equal(create(0, "alice", NULL, NULL, 0, 0, NULL), CM_OK);
	msg_free(t);
	stop_replica(0);
}

static int
restart_setup(void **state)
{
	char   line[1024];
	FILE  *p;
	size_t n;

	(void) state;
	setup_dirs("pg-restart");
	snprintf(pgstate, sizeof(pgstate), "%s/pg-state", tmpdir);
	snprintf(line, sizeof(line),
	    "'%s/scripts/pg-test-cluster.sh' start '%s'", tg_source_dir(),
	    pgstate);
	if (system(line) != 0) {
		return (-1);
	}
	snprintf(line, sizeof(line),
	    "'%s/scripts/pg-test-cluster.sh' createdb '%s'", tg_source_dir(),
	    pgstate);
	p = popen(line, "r");
	if (p == NULL) {
		return (-1);
	}
	n         = fread(target, 1, sizeof(target) - 1, p);
	target[n] = '\0';
	if (pclose(p) != 0 || n == 0) {
		return (-1);
	}
	while (n > 0 && target[n - 1] == '\n') {
		target[--n] = '\0';
	}
	return (0);
}

static int
restart_teardown(void **state)
{
	char line[1024];

	(void) state;
	if (proc[0] != NULL) {
		tg_proc_stop(proc[0]);
		proc[0] = NULL;
	}
	snprintf(line, sizeof(line),
	    "'%s/scripts/pg-test-cluster.sh' stop '%s'", tg_source_dir(),
	    pgstate);
	if (system(line) != 0) {
		fprintf(stderr, "could not stop the private cluster\n");
	}
	rmdir(pgstate);
	teardown_dirs();
	return (0);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest replicas[] = {
		cmocka_unit_test(test_create_race),
		cmocka_unit_test(test_concurrent_merges),
		cmocka_unit_test(test_concurrent_state),
		cmocka_unit_test(test_sweepers),
	};
	const struct CMUnitTest restart[] = {
		cmocka_unit_test(test_outage),
	};

	if (argc == 2 && strcmp(argv[1], "replicas") == 0) {
		return (cmocka_run_group_tests_name(
		    "replicas", replicas, replicas_setup, replicas_teardown));
	}
	if (argc == 2 && strcmp(argv[1], "restart") == 0) {
		return (cmocka_run_group_tests_name(
		    "restart", restart, restart_setup, restart_teardown));
	}
	fprintf(stderr, "usage: pg_replica_test replicas|restart\n");
	return (2);
}
