// SPDX-License-Identifier: MIT
//
// Unit test of sweeper.c: the TTL sweeper thread, on a real database
// (sqlite, or with TG_TEST_DB=pg the test PostgreSQL cluster). A thread
// whose ttl has run out is deleted by the sweeper's first run; a thread
// with time left and one without a ttl stay; stop is prompt even with a
// long interval; bad intervals are refused.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/util.h"
#include "tests/harness/proc.h"
#include "thread-service/tsvc.h"

#define OWNER "sweeper-owner"
// Bound of every wait in this test (a loaded 2-core machine).
#define WAIT_MS 20000

static char *tmpdir;

static void
msg_free(void *m)
{
	if (m != NULL) {
		protobuf_c_message_free_unpacked((ProtobufCMessage *) m, NULL);
	}
}

static char *
create(tsvc_store *st, double ttl_minutes)
{
	tsvc_create_req req =
	    THREADGATE__THREADS__V1__CREATE_THREAD_REQUEST__INIT;
	tsvc_thread *t = NULL;
	char        *id;

	req.owner       = OWNER;
	req.thread_id   = "";
	req.ttl_minutes = ttl_minutes;
	assert_int_equal(tsvc_store_create_thread(st, &req, &t), CM_OK);
	id = strdup(t->thread_id);
	msg_free(t);
	return (id);
}

static cm_err
get(tsvc_store *st, const char *id)
{
	tsvc_thread_ref ref = THREADGATE__THREADS__V1__THREAD_REF__INIT;
	tsvc_thread    *t   = NULL;
	cm_err          rv;

	ref.owner     = OWNER;
	ref.thread_id = (char *) id;
	rv            = tsvc_store_get_thread(st, &ref, &t);
	msg_free(t);
	return (rv);
}

static void
wait_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void
test_sweeper_deletes_expired(void **state)
{
	tsvc_db      *db = NULL;
	tsvc_store   *st = NULL;
	tsvc_sweeper *sw = NULL;
	char          target[1024];
	char         *gone;
	char         *left;
	char         *none;
	int64_t       t0;

	(void) state;
	assert_int_equal(
	    tg_test_db(tmpdir, "sweep.db", target, sizeof(target)), 0);
	assert_int_equal(tsvc_db_open(target, NULL, &db, NULL, 0), CM_OK);
	assert_int_equal(tsvc_store_open(db, &st, NULL, 0), CM_OK);
	t0   = cm_now_us();
	gone = create(st, 0.0005); // 30 ms
	left = create(st, 60);
	none = create(st, 0);
	// The sweeper's first run must see the first thread expired: wait
	// until its ttl has passed by the clock the sweeper reads.
	while (cm_now_us() < t0 + 40 * 1000) {
		wait_ms(5);
	}
	// A long interval: only the run at start can delete it.
	assert_int_equal(tsvc_sweeper_start(db, 3600, &sw), CM_OK);
	for (int i = 0; i < WAIT_MS / 10 && tsvc_sweeper_runs(sw) == 0; i++) {
		wait_ms(10);
	}
	assert_true(tsvc_sweeper_runs(sw) >= 1);
	assert_int_equal(get(st, gone), CM_ENOENT);
	assert_int_equal(get(st, left), CM_OK);
	assert_int_equal(get(st, none), CM_OK);
	// Stop wakes the thread out of its hour-long wait at once.
	tsvc_sweeper_stop(sw);
	tsvc_store_close(st);
	tsvc_db_close(db);
	free(gone);
	free(left);
	free(none);
}

static void
test_sweeper_bad_interval(void **state)
{
	tsvc_db      *db = NULL;
	tsvc_sweeper *sw = NULL;
	char          target[1024];

	(void) state;
	assert_int_equal(
	    tg_test_db(tmpdir, "sweep-bad.db", target, sizeof(target)), 0);
	assert_int_equal(tsvc_db_open(target, NULL, &db, NULL, 0), CM_OK);
	assert_int_equal(tsvc_sweeper_start(db, 0, &sw), CM_EINVAL);
	assert_int_equal(
	    tsvc_sweeper_start(db, TSVC_SWEEP_MAX_S + 1, &sw), CM_EINVAL);
	assert_null(sw);
	tsvc_sweeper_stop(NULL);
	tsvc_db_close(db);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sweeper_deletes_expired),
		cmocka_unit_test(test_sweeper_bad_interval),
	};
	char cmd[600];
	int  rc;

	tmpdir = tg_tmpdir("tsvc-sweeper");
	rc     = cmocka_run_group_tests(tests, NULL, NULL);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0) {
		fprintf(stderr, "cannot remove %s\n", tmpdir);
	}
	free(tmpdir);
	return (rc);
}
