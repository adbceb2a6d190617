// SPDX-License-Identifier: MIT
//
// Contract test of the thread-service: starts the real threadgate-threads
// binary (ipc:// socket and database in a private temp dir) and drives it
// only with proto messages over nng, as the gateway does. Proves that
// owner B can never read, change, delete, count, search, copy, prune or
// touch the state/history of owner A's threads; that an empty owner is
// refused on every rpc; that unknown methods, undecodable payloads and
// expired deadlines get error replies while the service keeps serving;
// the create conflict rules; and that data survives a restart.
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

#include "common/rpc.h"
#include "common/util.h"
#include "tests/harness/proc.h"
#include "thread-service/tsvc.h"

#define ALICE "user-alice"
#define BOB   "user-bob"
// Per-call bound in this test; generous for a loaded 2-core machine.
#define CALL_MS 5000
// How long the service may take to start answering.
#define READY_MS 15000

static char          *tmpdir;
static char           url[600];
static char           db[1024];
static char           logpath[600];
static tg_proc       *proc;
static cm_rpc_client *cli;

// assert_json_equal: a and b are the same JSON value. JSON is compared
// parsed, never as text: the PostgreSQL backend returns what jsonb stored
// (keys sorted, its own number notation), a JSON text of the same value.
#define assert_json_equal(a, b) json_equal_at((a), (b), __FILE__, __LINE__)

static void
json_equal_at(const char *a, const char *b, const char *file, int line)
{
	json_error_t e;
	json_t      *ja   = json_loads(a, JSON_DECODE_ANY, &e);
	json_t      *jb   = json_loads(b, JSON_DECODE_ANY, &e);
	int          same = ja != NULL && jb != NULL && json_equal(ja, jb);

	json_decref(ja);
	json_decref(jb);
	if (!same) {
		fail_msg("%s:%d: JSON %s is not %s", file, line, a, b);
	}
}

// ---------------------------------------------------------------------
// Process control
// ---------------------------------------------------------------------

static char *
binary(void)
{
	char path[1024];

	snprintf(path, sizeof(path), "%s/thread-service/threadgate-threads",
	    tg_build_dir());
	return (strdup(path));
}

static void
show_log(void)
{
	char *log = tg_read_file(logpath);

	fprintf(stderr, "--- service log ---\n%s\n---\n",
	    log != NULL ? log : "(none)");
	free(log);
}

static int
rpc(const char *method, const void *req, const ProtobufCMessageDescriptor *d,
    void *reply_out, char *detail, size_t detail_len)
{
	ProtobufCMessage *reply = NULL;
	char              dbuf[CM_RPC_DETAIL_MAX];
	cm_err            rv;

	rv = cm_rpc_call_sync(cli, method, "contract-test", CALL_MS,
	    (const ProtobufCMessage *) req, d, &reply,
	    detail != NULL ? detail : dbuf,
	    detail != NULL ? detail_len : sizeof(dbuf));
	if (rv == CM_OK) {
		if (reply_out != NULL) {
			*(ProtobufCMessage **) reply_out = reply;
		} else {
			protobuf_c_message_free_unpacked(reply, NULL);
		}
	}
	return (rv);
}

// wait_ready polls with a cheap GetThread until the service answers
// (NOT_FOUND) instead of timing out.
static void
wait_ready(void)
{
	int64_t         end = cm_mono_ms() + READY_MS;
	tsvc_thread_ref ref = THREADGATE__THREADS__V1__THREAD_REF__INIT;
	char            id[CM_UUID_LEN + 1];

	cm_uuid4(id);
	ref.owner     = "probe";
	ref.thread_id = id;
	while (cm_mono_ms() < end) {
		ProtobufCMessage *reply = NULL;
		char              detail[CM_RPC_DETAIL_MAX];
		cm_err            rv;

		if (!tg_proc_alive(proc)) {
			show_log();
			fail_msg("threadgate-threads exited during start-up");
		}
		rv = cm_rpc_call_sync(cli, "GetThread", "ready", 200,
		    &ref.base, &threadgate__threads__v1__thread__descriptor,
		    &reply, detail, sizeof(detail));
		if (rv == CM_ENOENT) {
			return;
		}
		if (rv == CM_OK) {
			protobuf_c_message_free_unpacked(reply, NULL);
		}
	}
	show_log();
	fail_msg("threadgate-threads not ready after %d ms", READY_MS);
}

static void
start_service(void)
{
	char       *bin    = binary();
	const char *argv[] = { bin, "--listen", url, "--db", db,
		"--write-workers", "4", "--ttl-sweep", "1", NULL };

	assert_int_equal(tg_proc_start(argv, NULL, logpath, &proc), 0);
	free(bin);
	wait_ready();
}

// stop_service stops the process and asserts a clean exit 0.
static void
stop_service(void)
{
	int status = tg_proc_stop(proc);

	proc = NULL;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		show_log();
		fail_msg(
		    "threadgate-threads did not exit 0 (status %d)", status);
	}
}

static int
group_setup(void **state)
{
	(void) state;
	tmpdir = tg_tmpdir("tsvc-contract");
	snprintf(url, sizeof(url), "ipc://%s/threads.sock", tmpdir);
	if (tg_test_db(tmpdir, "threads.db", db, sizeof(db)) != 0) {
		return (-1);
	}
	snprintf(logpath, sizeof(logpath), "%s/threads.log", tmpdir);
	if (cm_rpc_client_open(url, &cli) != CM_OK) {
		return (-1);
	}
	start_service();
	return (0);
}

static int
group_teardown(void **state)
{
	char p[700];

	(void) state;
	cm_rpc_client_close(cli);
	if (proc != NULL) {
		tg_proc_stop(proc);
	}
	if (getenv("TG_KEEP_TMP") != NULL) {
		fprintf(stderr, "kept %s (TG_KEEP_TMP)\n", tmpdir);
		free(tmpdir);
		return (0);
	}
	const char *files[] = { "threads.db", "threads.db-wal",
		"threads.db-shm", "threads.log", "threads.sock", "bad.log",
		"quota.db", "quota.db-wal", "quota.db-shm", "quota.log",
		"quota.sock", NULL };
	for (int i = 0; files[i] != NULL; i++) {
		snprintf(p, sizeof(p), "%s/%s", tmpdir, files[i]);
		unlink(p);
	}
	rmdir(tmpdir);
	free(tmpdir);
	return (0);
}

// ---------------------------------------------------------------------
// Request helpers
// ---------------------------------------------------------------------

static cm_err
create(const char *owner, const char *id, const char *meta, int do_nothing,
    tsvc_thread **out)
{
	tsvc_create_req req =
	    THREADGATE__THREADS__V1__CREATE_THREAD_REQUEST__INIT;

	req.owner         = (char *) owner;
	req.thread_id     = (char *) (id != NULL ? id : "");
	req.metadata_json = (char *) (meta != NULL ? meta : "");
	req.if_exists     = do_nothing
	        ? THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_DO_NOTHING
	        : THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_RAISE;
	return (rpc("CreateThread", &req,
	    &threadgate__threads__v1__thread__descriptor, out, NULL, 0));
}

static cm_err
get(const char *owner, const char *id, tsvc_thread **out, char *detail,
    size_t dlen)
{
	tsvc_thread_ref ref = THREADGATE__THREADS__V1__THREAD_REF__INIT;

	ref.owner     = (char *) owner;
	ref.thread_id = (char *) id;
	return (rpc("GetThread", &ref,
	    &threadgate__threads__v1__thread__descriptor, out, detail, dlen));
}

static cm_err
update_state(const char *owner, const char *id, const char *values,
    const char *parent, tsvc_checkpoint **out)
{
	tsvc_update_state_req req =
	    THREADGATE__THREADS__V1__UPDATE_STATE_REQUEST__INIT;

	req.owner         = (char *) owner;
	req.thread_id     = (char *) id;
	req.values_json   = (char *) values;
	req.as_node       = "node";
	req.checkpoint_id = (char *) (parent != NULL ? parent : "");
	return (rpc("UpdateState", &req,
	    &threadgate__threads__v1__checkpoint__descriptor, out, NULL, 0));
}

static int64_t
history_len(const char *owner, const char *id)
{
	tsvc_history_req req =
	    THREADGATE__THREADS__V1__GET_HISTORY_REQUEST__INIT;
	tsvc_history_reply *h = NULL;
	int64_t             n;

	req.owner     = (char *) owner;
	req.thread_id = (char *) id;
	req.limit     = 100;
	if (rpc("GetHistory", &req,
	        &threadgate__threads__v1__history_reply__descriptor, &h, NULL,
	        0) != CM_OK) {
		return (-1);
	}
	n = (int64_t) h->n_checkpoints;
	protobuf_c_message_free_unpacked(&h->base, NULL);
	return (n);
}

static void
msg_free(void *m)
{
	if (m != NULL) {
		protobuf_c_message_free_unpacked((ProtobufCMessage *) m, NULL);
	}
}

// ---------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------

static void
test_owner_isolation(void **state)
{
	tsvc_thread     *t = NULL;
	tsvc_thread     *g = NULL;
	tsvc_checkpoint *c = NULL;
	char             id[CM_UUID_LEN + 1];
	char             cid[CM_UUID_LEN + 1];
	char             d1[CM_RPC_DETAIL_MAX];
	char             d2[CM_RPC_DETAIL_MAX];
	char             missing[CM_UUID_LEN + 1];
	char            *ids[1];

	(void) state;
	assert_int_equal(
	    create(ALICE, NULL, "{\"secret\":\"a\"}", 0, &t), CM_OK);
	snprintf(id, sizeof(id), "%s", t->thread_id);
	assert_string_equal(t->owner, ALICE);
	msg_free(t);
	t = NULL;
	assert_int_equal(
	    update_state(ALICE, id, "{\"v\":1}", NULL, &c), CM_OK);
	snprintf(cid, sizeof(cid), "%s", c->checkpoint_id);
	msg_free(c);
	c      = NULL;
	ids[0] = id;

	// Read: NOT_FOUND with the same detail as a missing id.
	assert_int_equal(get(BOB, id, &g, d1, sizeof(d1)), CM_ENOENT);
	cm_uuid4(missing);
	assert_int_equal(get(BOB, missing, &g, d2, sizeof(d2)), CM_ENOENT);
	assert_non_null(strstr(d1, id));
	assert_int_equal(strlen(d1), strlen(d2));
	assert_null(strstr(d1, ALICE));

	// Update.
	{
		tsvc_update_req req =
		    THREADGATE__THREADS__V1__UPDATE_THREAD_REQUEST__INIT;

		req.owner         = BOB;
		req.thread_id     = id;
		req.metadata_json = "{\"secret\":\"b\"}";
		req.has_ttl       = 1;
		req.ttl_minutes   = 1;
		assert_int_equal(
		    rpc("UpdateThread", &req,
		        &threadgate__threads__v1__thread__descriptor, &g, NULL,
		        0),
		    CM_ENOENT);
	}
	// Delete.
	{
		tsvc_thread_ref ref =
		    THREADGATE__THREADS__V1__THREAD_REF__INIT;

		ref.owner     = BOB;
		ref.thread_id = id;
		assert_int_equal(
		    rpc("DeleteThread", &ref,
		        &threadgate__threads__v1__empty__descriptor, NULL,
		        NULL, 0),
		    CM_ENOENT);
		// Copy: CONFLICT, as the LangGraph API answers 409.
		assert_int_equal(
		    rpc("CopyThread", &ref,
		        &threadgate__threads__v1__thread__descriptor, &g, NULL,
		        0),
		    CM_ECONFLICT);
	}
	// Search and count never see it, whatever the filters say.
	{
		tsvc_search_req req =
		    THREADGATE__THREADS__V1__SEARCH_THREADS_REQUEST__INIT;
		tsvc_search_reply *r = NULL;
		tsvc_count_req     creq =
		    THREADGATE__THREADS__V1__COUNT_THREADS_REQUEST__INIT;
		tsvc_count_reply *cr = NULL;

		req.owner = BOB;
		req.limit = 100;
		assert_int_equal(
		    rpc("SearchThreads", &req,
		        &threadgate__threads__v1__search_threads_reply__descriptor,
		        &r, NULL, 0),
		    CM_OK);
		for (size_t i = 0; i < r->n_threads; i++) {
			assert_string_not_equal(r->threads[i]->thread_id, id);
			assert_string_equal(r->threads[i]->owner, BOB);
		}
		msg_free(r);
		r                 = NULL;
		req.ids           = ids;
		req.n_ids         = 1;
		req.metadata_json = "{\"owner\":\"" ALICE "\"}";
		assert_int_equal(
		    rpc("SearchThreads", &req,
		        &threadgate__threads__v1__search_threads_reply__descriptor,
		        &r, NULL, 0),
		    CM_OK);
		assert_int_equal(r->n_threads, 0);
		assert_int_equal(r->total, 0);
		msg_free(r);
		r = NULL;
		// ...while Alice's identical search finds it.
		req.owner = ALICE;
		assert_int_equal(
		    rpc("SearchThreads", &req,
		        &threadgate__threads__v1__search_threads_reply__descriptor,
		        &r, NULL, 0),
		    CM_OK);
		assert_int_equal(r->total, 1);
		msg_free(r);

		creq.owner         = BOB;
		creq.metadata_json = "{\"secret\":\"a\"}";
		assert_int_equal(
		    rpc("CountThreads", &creq,
		        &threadgate__threads__v1__count_reply__descriptor, &cr,
		        NULL, 0),
		    CM_OK);
		assert_int_equal(cr->count, 0);
		msg_free(cr);
		cr         = NULL;
		creq.owner = ALICE;
		assert_int_equal(
		    rpc("CountThreads", &creq,
		        &threadgate__threads__v1__count_reply__descriptor, &cr,
		        NULL, 0),
		    CM_OK);
		assert_int_equal(cr->count, 1);
		msg_free(cr);
	}
	// Prune, both strategies: nothing of Alice's is touched.
	{
		tsvc_prune_req req =
		    THREADGATE__THREADS__V1__PRUNE_THREADS_REQUEST__INIT;
		tsvc_prune_reply *r = NULL;

		assert_int_equal(
		    update_state(ALICE, id, "{\"v\":2}", NULL, &c), CM_OK);
		msg_free(c);
		c                = NULL;
		req.owner        = BOB;
		req.thread_ids   = ids;
		req.n_thread_ids = 1;
		req.strategy     = "keep_latest";
		assert_int_equal(
		    rpc("PruneThreads", &req,
		        &threadgate__threads__v1__prune_threads_reply__descriptor,
		        &r, NULL, 0),
		    CM_OK);
		assert_int_equal(r->pruned_count, 0);
		msg_free(r);
		r            = NULL;
		req.strategy = "delete";
		assert_int_equal(
		    rpc("PruneThreads", &req,
		        &threadgate__threads__v1__prune_threads_reply__descriptor,
		        &r, NULL, 0),
		    CM_OK);
		assert_int_equal(r->pruned_count, 0);
		msg_free(r);
		assert_int_equal(history_len(ALICE, id), 2);
	}
	// State: get (latest and named), update, patch, history.
	{
		tsvc_get_state_req gs =
		    THREADGATE__THREADS__V1__GET_STATE_REQUEST__INIT;
		tsvc_patch_state_req ps =
		    THREADGATE__THREADS__V1__PATCH_STATE_REQUEST__INIT;
		tsvc_state_reply *sr = NULL;

		gs.owner     = BOB;
		gs.thread_id = id;
		assert_int_equal(
		    rpc("GetState", &gs,
		        &threadgate__threads__v1__state_reply__descriptor, &sr,
		        NULL, 0),
		    CM_ENOENT);
		gs.checkpoint_id = cid;
		assert_int_equal(
		    rpc("GetState", &gs,
		        &threadgate__threads__v1__state_reply__descriptor, &sr,
		        NULL, 0),
		    CM_ENOENT);
		assert_int_equal(
		    update_state(BOB, id, "{\"v\":666}", NULL, &c), CM_ENOENT);
		assert_int_equal(
		    update_state(BOB, id, "{\"v\":666}", cid, &c), CM_ENOENT);
		ps.owner         = BOB;
		ps.thread_id     = id;
		ps.metadata_json = "{\"hacked\":true}";
		assert_int_equal(
		    rpc("PatchState", &ps,
		        &threadgate__threads__v1__empty__descriptor, NULL,
		        NULL, 0),
		    CM_ENOENT);
		ps.checkpoint_id = cid;
		assert_int_equal(
		    rpc("PatchState", &ps,
		        &threadgate__threads__v1__empty__descriptor, NULL,
		        NULL, 0),
		    CM_ENOENT);
		assert_int_equal(history_len(BOB, id), -1);

		// Alice's data is exactly as she left it.
		gs.owner         = ALICE;
		gs.checkpoint_id = "";
		assert_int_equal(
		    rpc("GetState", &gs,
		        &threadgate__threads__v1__state_reply__descriptor, &sr,
		        NULL, 0),
		    CM_OK);
		assert_true(sr->has_checkpoint);
		assert_json_equal(sr->checkpoint->values_json, "{\"v\":2}");
		assert_null(strstr(sr->checkpoint->metadata_json, "hacked"));
		msg_free(sr);
	}
	assert_int_equal(get(ALICE, id, &t, NULL, 0), CM_OK);
	assert_json_equal(
	    t->metadata_json, "{\"secret\":\"a\",\"owner\":\"" ALICE "\"}");
	assert_true(t->ttl_minutes == 0);
	assert_json_equal(t->values_json, "{\"v\":2}");
	msg_free(t);
}

// Checkpoints are owned like their thread: Bob cannot use Alice's
// checkpoint id as a parent on his own thread, and his history never
// shows hers.
static void
test_checkpoint_isolation(void **state)
{
	tsvc_thread     *ta = NULL;
	tsvc_thread     *tb = NULL;
	tsvc_checkpoint *ca = NULL;
	tsvc_checkpoint *cb = NULL;

	(void) state;
	assert_int_equal(create(ALICE, NULL, NULL, 0, &ta), CM_OK);
	assert_int_equal(create(BOB, NULL, NULL, 0, &tb), CM_OK);
	assert_int_equal(update_state(ALICE, ta->thread_id,
	                     "{\"a\":\"secret\"}", NULL, &ca),
	    CM_OK);
	assert_int_equal(update_state(BOB, tb->thread_id, "{\"b\":1}",
	                     ca->checkpoint_id, &cb),
	    CM_ENOENT);
	assert_int_equal(
	    update_state(BOB, tb->thread_id, "{\"b\":1}", NULL, &cb), CM_OK);
	// Bob's first checkpoint does not descend from Alice's.
	assert_string_equal(cb->parent_checkpoint_id, "");
	assert_json_equal(cb->values_json, "{\"b\":1}");
	assert_int_equal(history_len(BOB, tb->thread_id), 1);
	assert_int_equal(history_len(ALICE, ta->thread_id), 1);
	msg_free(ta);
	msg_free(tb);
	msg_free(ca);
	msg_free(cb);
}

static void
test_empty_owner_refused(void **state)
{
	tsvc_create_req c =
	    THREADGATE__THREADS__V1__CREATE_THREAD_REQUEST__INIT;
	tsvc_thread_ref r = THREADGATE__THREADS__V1__THREAD_REF__INIT;
	tsvc_update_req u =
	    THREADGATE__THREADS__V1__UPDATE_THREAD_REQUEST__INIT;
	tsvc_search_req s =
	    THREADGATE__THREADS__V1__SEARCH_THREADS_REQUEST__INIT;
	tsvc_count_req n =
	    THREADGATE__THREADS__V1__COUNT_THREADS_REQUEST__INIT;
	tsvc_prune_req p =
	    THREADGATE__THREADS__V1__PRUNE_THREADS_REQUEST__INIT;
	tsvc_get_state_req gs =
	    THREADGATE__THREADS__V1__GET_STATE_REQUEST__INIT;
	tsvc_update_state_req us =
	    THREADGATE__THREADS__V1__UPDATE_STATE_REQUEST__INIT;
	tsvc_patch_state_req ps =
	    THREADGATE__THREADS__V1__PATCH_STATE_REQUEST__INIT;
	tsvc_history_req h =
	    THREADGATE__THREADS__V1__GET_HISTORY_REQUEST__INIT;
	tsvc_thread *t = NULL;
	char         id[CM_UUID_LEN + 1];
	struct {
		const char                       *method;
		const void                       *req;
		const ProtobufCMessageDescriptor *out;
	} cases[] = {
		{ "CreateThread", &c,
		    &threadgate__threads__v1__thread__descriptor },
		{ "GetThread", &r,
		    &threadgate__threads__v1__thread__descriptor },
		{ "UpdateThread", &u,
		    &threadgate__threads__v1__thread__descriptor },
		{ "DeleteThread", &r,
		    &threadgate__threads__v1__empty__descriptor },
		{ "SearchThreads", &s,
		    &threadgate__threads__v1__search_threads_reply__descriptor },
		{ "CountThreads", &n,
		    &threadgate__threads__v1__count_reply__descriptor },
		{ "CopyThread", &r,
		    &threadgate__threads__v1__thread__descriptor },
		{ "PruneThreads", &p,
		    &threadgate__threads__v1__prune_threads_reply__descriptor },
		{ "GetState", &gs,
		    &threadgate__threads__v1__state_reply__descriptor },
		{ "UpdateState", &us,
		    &threadgate__threads__v1__checkpoint__descriptor },
		{ "PatchState", &ps,
		    &threadgate__threads__v1__empty__descriptor },
		{ "GetHistory", &h,
		    &threadgate__threads__v1__history_reply__descriptor },
	};

	(void) state;
	// A real thread id, so a missing owner check could not hide behind
	// NOT_FOUND.
	assert_int_equal(create(ALICE, NULL, NULL, 0, &t), CM_OK);
	snprintf(id, sizeof(id), "%s", t->thread_id);
	msg_free(t);
	c.thread_id    = id;
	r.thread_id    = id;
	u.thread_id    = id;
	gs.thread_id   = id;
	us.thread_id   = id;
	ps.thread_id   = id;
	h.thread_id    = id;
	s.limit        = 10;
	h.limit        = 10;
	us.values_json = "{}";
	assert_int_equal(sizeof(cases) / sizeof(cases[0]),
	    threadgate__threads__v1__thread_service__descriptor.n_methods);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		void  *out = NULL;
		cm_err rv  = rpc(cases[i].method, cases[i].req, cases[i].out,
		     &out, NULL, 0);

		if (rv != CM_EPERM) {
			fail_msg(
			    "%s with empty owner: %s, want permission denied",
			    cases[i].method, cm_strerror(rv));
		}
		assert_null(out);
	}
	// And nothing happened to the thread.
	assert_int_equal(get(ALICE, id, &t, NULL, 0), CM_OK);
	msg_free(t);
}

static void
test_bad_envelopes_keep_serving(void **state)
{
	tsvc_thread_ref ref = THREADGATE__THREADS__V1__THREAD_REF__INIT;
	uint8_t         buf[256];
	size_t          len;
	char            detail[CM_RPC_DETAIL_MAX];
	void           *out = NULL;
	size_t          out_len;
	tsvc_thread    *t = NULL;
	int64_t         t0;
	cm_err          rv;
	// Field 1 (owner), length-delimited, claims 16 bytes but has 3.
	static const uint8_t garbage[] = { 0x0a, 0x10, 'a', 'b', 'c' };

	(void) state;
	ref.owner     = ALICE;
	ref.thread_id = "00000000-0000-4000-8000-000000000000";
	len           = protobuf_c_message_pack(&ref.base, buf);
	assert_true(len < sizeof(buf));

	// Unknown method: UNIMPLEMENTED.
	rv = cm_rpc_call_raw_sync(cli, "DropAllThreads", "c1", 0, buf, len,
	    CALL_MS, &out, &out_len, detail, sizeof(detail));
	assert_int_equal(rv, CM_ENOTSUP);
	assert_int_equal(get(ALICE, ref.thread_id, &t, NULL, 0), CM_ENOENT);

	// Undecodable payload: INVALID_ARGUMENT.
	rv = cm_rpc_call_raw_sync(cli, "GetThread", "c2", 0, garbage,
	    sizeof(garbage), CALL_MS, &out, &out_len, detail, sizeof(detail));
	assert_int_equal(rv, CM_EINVAL);
	assert_int_equal(get(ALICE, ref.thread_id, &t, NULL, 0), CM_ENOENT);

	// Expired deadline: DEADLINE_EXCEEDED from the server, at once (not
	// the client's own timeout).
	t0 = cm_mono_ms();
	rv = cm_rpc_call_raw_sync(cli, "GetThread", "c3", cm_now_ms() - 1000,
	    buf, len, CALL_MS, &out, &out_len, detail, sizeof(detail));
	assert_int_equal(rv, CM_ETIMEDOUT);
	assert_true(cm_mono_ms() - t0 < CALL_MS / 2);
	assert_int_equal(get(ALICE, ref.thread_id, &t, NULL, 0), CM_ENOENT);

	// Valid JSON of the wrong type and a non-UUID id: INVALID_ARGUMENT.
	assert_int_equal(create(ALICE, NULL, "[1,2]", 0, &t), CM_EINVAL);
	assert_int_equal(
	    create(ALICE, "../../etc/passwd", NULL, 0, &t), CM_EINVAL);
	assert_null(t);
	assert_true(tg_proc_alive(proc));
}

static void
test_create_conflicts(void **state)
{
	tsvc_thread *t = NULL;
	char         id[CM_UUID_LEN + 1];

	(void) state;
	cm_uuid4(id);
	assert_int_equal(create(ALICE, id, "{\"n\":1}", 0, &t), CM_OK);
	msg_free(t);
	t = NULL;
	assert_int_equal(create(ALICE, id, NULL, 0, &t), CM_EEXIST);
	assert_int_equal(create(BOB, id, NULL, 0, &t), CM_EEXIST);
	assert_int_equal(create(BOB, id, NULL, 1, &t), CM_EEXIST);
	assert_null(t);
	assert_int_equal(create(ALICE, id, "{\"n\":2}", 1, &t), CM_OK);
	assert_string_equal(t->thread_id, id);
	assert_json_equal(
	    t->metadata_json, "{\"n\":1,\"owner\":\"" ALICE "\"}");
	msg_free(t);
	t = NULL;
	assert_int_equal(get(BOB, id, &t, NULL, 0), CM_ENOENT);
}

// The full round trip of the remaining rpcs as their owner sees them.
static void
test_owner_round_trip(void **state)
{
	tsvc_thread     *t   = NULL;
	tsvc_thread     *cp  = NULL;
	tsvc_checkpoint *c   = NULL;
	tsvc_thread_ref  ref = THREADGATE__THREADS__V1__THREAD_REF__INIT;
	tsvc_update_req  u =
	    THREADGATE__THREADS__V1__UPDATE_THREAD_REQUEST__INIT;
	char id[CM_UUID_LEN + 1];

	(void) state;
	assert_int_equal(create(ALICE, NULL, "{\"a\":1}", 0, &t), CM_OK);
	snprintf(id, sizeof(id), "%s", t->thread_id);
	msg_free(t);
	t               = NULL;
	u.owner         = ALICE;
	u.thread_id     = id;
	u.metadata_json = "{\"b\":2,\"owner\":\"" BOB "\"}";
	assert_int_equal(
	    rpc("UpdateThread", &u,
	        &threadgate__threads__v1__thread__descriptor, &t, NULL, 0),
	    CM_OK);
	assert_json_equal(
	    t->metadata_json, "{\"a\":1,\"owner\":\"" ALICE "\",\"b\":2}");
	msg_free(t);
	assert_int_equal(
	    update_state(ALICE, id, "{\"x\":1}", NULL, &c), CM_OK);
	msg_free(c);
	ref.owner     = ALICE;
	ref.thread_id = id;
	assert_int_equal(
	    rpc("CopyThread", &ref,
	        &threadgate__threads__v1__thread__descriptor, &cp, NULL, 0),
	    CM_OK);
	assert_string_equal(cp->owner, ALICE);
	assert_int_equal(history_len(ALICE, cp->thread_id), 1);
	assert_int_equal(
	    rpc("DeleteThread", &ref,
	        &threadgate__threads__v1__empty__descriptor, NULL, NULL, 0),
	    CM_OK);
	assert_int_equal(get(ALICE, id, &t, NULL, 0), CM_ENOENT);
	assert_int_equal(history_len(ALICE, id), -1);
	assert_int_equal(history_len(ALICE, cp->thread_id), 1);
	msg_free(cp);
}

static void
test_restart_keeps_data(void **state)
{
	tsvc_thread       *t = NULL;
	tsvc_checkpoint   *c = NULL;
	tsvc_get_state_req gs =
	    THREADGATE__THREADS__V1__GET_STATE_REQUEST__INIT;
	tsvc_state_reply *sr = NULL;
	char              id[CM_UUID_LEN + 1];
	char              cid[CM_UUID_LEN + 1];

	(void) state;
	assert_int_equal(
	    create(ALICE, NULL, "{\"durable\":true}", 0, &t), CM_OK);
	snprintf(id, sizeof(id), "%s", t->thread_id);
	msg_free(t);
	t = NULL;
	assert_int_equal(
	    update_state(ALICE, id, "{\"kept\":42}", NULL, &c), CM_OK);
	snprintf(cid, sizeof(cid), "%s", c->checkpoint_id);
	msg_free(c);

	stop_service(); // asserts exit status 0 on SIGTERM
	start_service();

	assert_int_equal(get(ALICE, id, &t, NULL, 0), CM_OK);
	assert_json_equal(
	    t->metadata_json, "{\"durable\":true,\"owner\":\"" ALICE "\"}");
	assert_json_equal(t->values_json, "{\"kept\":42}");
	msg_free(t);
	t = NULL;
	assert_int_equal(get(BOB, id, &t, NULL, 0), CM_ENOENT);
	gs.owner     = ALICE;
	gs.thread_id = id;
	assert_int_equal(rpc("GetState", &gs,
	                     &threadgate__threads__v1__state_reply__descriptor,
	                     &sr, NULL, 0),
	    CM_OK);
	assert_true(sr->has_checkpoint);
	assert_string_equal(sr->checkpoint->checkpoint_id, cid);
	msg_free(sr);
}

// wait_exit waits (bounded) for a child that should exit by itself and
// returns its exit code, or -1.
static int
wait_exit(tg_proc *p)
{
	int64_t end = cm_mono_ms() + READY_MS;
	int     status;

	while (tg_proc_alive(p) && cm_mono_ms() < end) {
		struct timespec ts = { 0, 10 * 1000000L };

		nanosleep(&ts, NULL);
	}
	status = tg_proc_stop(p);
	if (status < 0 || !WIFEXITED(status)) {
		return (-1);
	}
	return (WEXITSTATUS(status));
}

// The quota variables reach the store: a service started with
// THREAD_MAX_THREADS_PER_USER=1 refuses a second thread of one owner with
// PERMISSION_DENIED naming the quota, while another owner still creates.
static void
test_quota_env(void **state)
{
	char           *bin = binary();
	char            qurl[700];
	char            qdb[1100];
	char            qlog[700];
	char            env1[64];
	const char     *argv[] = { bin, "--listen", qurl, "--db", qdb, NULL };
	const char     *env[]  = { env1, NULL };
	tg_proc        *p      = NULL;
	cm_rpc_client  *c      = NULL;
	tsvc_create_req req =
	    THREADGATE__THREADS__V1__CREATE_THREAD_REQUEST__INIT;
	ProtobufCMessage *reply = NULL;
	char              detail[CM_RPC_DETAIL_MAX];
	cm_err            rv = CM_EUNAVAIL;
	int64_t           end;

	(void) state;
	snprintf(qurl, sizeof(qurl), "ipc://%s/quota.sock", tmpdir);
	snprintf(qlog, sizeof(qlog), "%s/quota.log", tmpdir);
	snprintf(env1, sizeof(env1), "THREAD_MAX_THREADS_PER_USER=1");
	assert_int_equal(tg_test_db(tmpdir, "quota.db", qdb, sizeof(qdb)), 0);
	assert_int_equal(tg_proc_start(argv, env, qlog, &p), 0);
	assert_int_equal(cm_rpc_client_open(qurl, &c), CM_OK);
	req.owner     = ALICE;
	req.thread_id = "";
	end           = cm_mono_ms() + READY_MS;
	while (rv == CM_EUNAVAIL && cm_mono_ms() < end && tg_proc_alive(p)) {
		// CALL_MS: the first write of a fresh worker prepares its
		// statements (PostgreSQL under ASan on a loaded machine took
		// over a second).
		rv = cm_rpc_call_sync(c, "CreateThread", "q", CALL_MS,
		    &req.base, &threadgate__threads__v1__thread__descriptor,
		    &reply, detail, sizeof(detail));
	}
	assert_int_equal(rv, CM_OK);
	protobuf_c_message_free_unpacked(reply, NULL);
	assert_int_equal(
	    cm_rpc_call_sync(c, "CreateThread", "q", CALL_MS, &req.base,
	        &threadgate__threads__v1__thread__descriptor, &reply, detail,
	        sizeof(detail)),
	    CM_EPERM);
	assert_non_null(strstr(detail, "quota exceeded"));
	req.owner = BOB;
	assert_int_equal(
	    cm_rpc_call_sync(c, "CreateThread", "q", CALL_MS, &req.base,
	        &threadgate__threads__v1__thread__descriptor, &reply, detail,
	        sizeof(detail)),
	    CM_OK);
	protobuf_c_message_free_unpacked(reply, NULL);
	cm_rpc_client_close(c);
	assert_int_equal(tg_proc_stop(p), 0);
	free(bin);
}

static void
test_exit_codes(void **state)
{
	char       *bin = binary();
	char        log[700];
	char        badurl[700];
	tg_proc    *p          = NULL;
	const char *nodb[]     = { bin, "--listen",
		    "ipc:///nonexistent-dir/x.sock", "--db",
		    "/nonexistent-dir/x.db", NULL };
	const char *badw[]     = { bin, "--read-workers", "0", NULL };
	const char *badopt[]   = { bin, "--frobnicate", NULL };
	const char *nolisten[] = { bin, "--listen", badurl, "--db", db, NULL };

	(void) state;
	snprintf(log, sizeof(log), "%s/bad.log", tmpdir);
	snprintf(
	    badurl, sizeof(badurl), "ipc://%s/no/such/dir/x.sock", tmpdir);
	assert_int_equal(tg_proc_start(nodb, NULL, log, &p), 0);
	assert_int_equal(wait_exit(p), 3);
	assert_int_equal(tg_proc_start(nolisten, NULL, log, &p), 0);
	assert_int_equal(wait_exit(p), 3);
	assert_int_equal(tg_proc_start(badw, NULL, log, &p), 0);
	assert_int_equal(wait_exit(p), 2);
	assert_int_equal(tg_proc_start(badopt, NULL, log, &p), 0);
	assert_int_equal(wait_exit(p), 2);
	free(bin);
	// The running service was not disturbed.
	assert_true(tg_proc_alive(proc));
}

// ---------------------------------------------------------------------
// Concurrency: read-modify-writes from many clients at once, served by
// several workers (each with its own connection), lose nothing.
// ---------------------------------------------------------------------

// Client threads and calls per thread; 8 x 5 = 40 concurrent writes on
// one thread row, more than the 4 workers, so they really contend.
#define RACE_THREADS 8
#define RACE_CALLS   5

typedef struct racer {
	pthread_t   thr;
	int         index;
	const char *thread_id;
	int         failures;
} racer;

static void *
racer_main(void *arg)
{
	racer *r = arg;

	for (int i = 0; i < RACE_CALLS; i++) {
		tsvc_update_state_req us =
		    THREADGATE__THREADS__V1__UPDATE_STATE_REQUEST__INIT;
		tsvc_update_req u =
		    THREADGATE__THREADS__V1__UPDATE_THREAD_REQUEST__INIT;
		char v[64];
		char m[64];

		snprintf(v, sizeof(v), "{\"k%d_%d\":%d}", r->index, i, i);
		snprintf(m, sizeof(m), "{\"m%d_%d\":true}", r->index, i);
		us.owner        = ALICE;
		us.thread_id    = (char *) r->thread_id;
		us.values_json  = v;
		u.owner         = ALICE;
		u.thread_id     = (char *) r->thread_id;
		u.metadata_json = m;
		if (rpc("UpdateState", &us,
		        &threadgate__threads__v1__checkpoint__descriptor, NULL,
		        NULL, 0) != CM_OK) {
			r->failures++;
		}
		if (rpc("UpdateThread", &u,
		        &threadgate__threads__v1__thread__descriptor, NULL,
		        NULL, 0) != CM_OK) {
			r->failures++;
		}
	}
	return (NULL);
}

static void
test_concurrent_writes_lose_nothing(void **state)
{
	racer            rs[RACE_THREADS];
	tsvc_thread     *t = NULL;
	tsvc_history_req req =
	    THREADGATE__THREADS__V1__GET_HISTORY_REQUEST__INIT;
	tsvc_history_reply *h = NULL;
	json_t             *values;
	json_t             *meta;
	json_error_t        e;
	int                 steps[RACE_THREADS * RACE_CALLS] = { 0 };
	char                id[CM_UUID_LEN + 1];

	(void) state;
	assert_int_equal(create(ALICE, NULL, NULL, 0, &t), CM_OK);
	snprintf(id, sizeof(id), "%s", t->thread_id);
	msg_free(t);
	t = NULL;
	for (int i = 0; i < RACE_THREADS; i++) {
		rs[i].index     = i;
		rs[i].thread_id = id;
		rs[i].failures  = 0;
		assert_int_equal(
		    pthread_create(&rs[i].thr, NULL, racer_main, &rs[i]), 0);
	}
	for (int i = 0; i < RACE_THREADS; i++) {
		pthread_join(rs[i].thr, NULL);
		assert_int_equal(rs[i].failures, 0);
	}
	assert_int_equal(get(ALICE, id, &t, NULL, 0), CM_OK);
	values = json_loads(t->values_json, 0, &e);
	meta   = json_loads(t->metadata_json, 0, &e);
	assert_non_null(values);
	assert_non_null(meta);
	// Every merge landed: no update overwrote another's read.
	assert_int_equal(json_object_size(values), RACE_THREADS * RACE_CALLS);
	assert_int_equal(
	    json_object_size(meta), RACE_THREADS * RACE_CALLS + 1);
	json_decref(values);
	json_decref(meta);
	msg_free(t);
	// One checkpoint per update, a single chain: steps 0..n-1 each once.
	req.owner     = ALICE;
	req.thread_id = id;
	req.limit     = 1000;
	assert_int_equal(
	    rpc("GetHistory", &req,
	        &threadgate__threads__v1__history_reply__descriptor, &h, NULL,
	        0),
	    CM_OK);
	assert_int_equal(h->n_checkpoints, RACE_THREADS * RACE_CALLS);
	for (size_t i = 0; i < h->n_checkpoints; i++) {
		json_t *md =
		    json_loads(h->checkpoints[i]->metadata_json, 0, &e);
		int64_t step = json_integer_value(json_object_get(md, "step"));

		assert_true(step >= 0 && step < RACE_THREADS * RACE_CALLS);
		steps[step]++;
		// Newest first: step n-1-i.
		assert_int_equal(step, (int64_t) (h->n_checkpoints - 1 - i));
		if (i + 1 < h->n_checkpoints) {
			assert_string_equal(
			    h->checkpoints[i]->parent_checkpoint_id,
			    h->checkpoints[i + 1]->checkpoint_id);
		}
		json_decref(md);
	}
	msg_free(h);
}

// The TTL sweeper of the running binary (started with --ttl-sweep 1)
// deletes an expired thread and keeps the others.
static void
test_ttl_sweeper_deletes_expired(void **state)
{
	tsvc_create_req req =
	    THREADGATE__THREADS__V1__CREATE_THREAD_REQUEST__INIT;
	tsvc_thread *t    = NULL;
	tsvc_thread *keep = NULL;
	int64_t      end;
	cm_err       rv = CM_OK;

	(void) state;
	req.owner       = BOB;
	req.thread_id   = "";
	req.ttl_minutes = 0.001; // 60 ms
	assert_int_equal(
	    rpc("CreateThread", &req,
	        &threadgate__threads__v1__thread__descriptor, &t, NULL, 0),
	    CM_OK);
	assert_string_equal(t->ttl_strategy, "delete");
	assert_int_equal(create(BOB, NULL, NULL, 0, &keep), CM_OK);
	end = cm_mono_ms() + READY_MS;
	while (cm_mono_ms() < end) {
		tsvc_thread    *g  = NULL;
		struct timespec ts = { 0, 50 * 1000000L };

		rv = get(BOB, t->thread_id, &g, NULL, 0);
		msg_free(g);
		if (rv == CM_ENOENT) {
			break;
		}
		nanosleep(&ts, NULL);
	}
	assert_int_equal(rv, CM_ENOENT);
	assert_int_equal(get(BOB, keep->thread_id, NULL, NULL, 0), CM_OK);
	msg_free(t);
	msg_free(keep);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_owner_isolation),
		cmocka_unit_test(test_checkpoint_isolation),
		cmocka_unit_test(test_empty_owner_refused),
		cmocka_unit_test(test_bad_envelopes_keep_serving),
		cmocka_unit_test(test_create_conflicts),
		cmocka_unit_test(test_owner_round_trip),
		cmocka_unit_test(test_concurrent_writes_lose_nothing),
		cmocka_unit_test(test_ttl_sweeper_deletes_expired),
		cmocka_unit_test(test_exit_codes),
		cmocka_unit_test(test_quota_env),
		cmocka_unit_test(test_restart_keeps_data),
	};

	return (cmocka_run_group_tests(tests, group_setup, group_teardown));
}
