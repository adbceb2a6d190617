// SPDX-License-Identifier: MIT
//
// Unit tests for the observability half of rpc.c: the Health rpc every
// server answers (without a check: serving; with one: its result, updated
// in the background), traceparent from the envelope reaching the handler
// and its log context, the rpc-layer metrics (requests by method and
// status, durations, rejections, in flight, serving), cm_rpc_dial_url()
// and the --health-check helper against a server and against nothing.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/rpc.h"
#include "proto/auth.pb-c.h"

typedef Threadgate__Auth__V1__AuthService_Service svc_t;

#define URL_PLAIN  "inproc://rpc_obs_plain"
#define URL_CHECK  "inproc://rpc_obs_check"
#define WAIT_MS    10000
#define TIMEOUT_MS 3000

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// What the Authenticate handler saw last.
static char seen_tp[CM_TRACEPARENT_LEN + 1];
static char seen_ctx_tp[CM_TRACEPARENT_LEN + 1];
static char seen_ctx_rid[CM_RID_MAX + 1];

static void
t_authenticate(svc_t *svc, const Threadgate__Auth__V1__AuthenticateRequest *in,
    Threadgate__Auth__V1__Identity_Closure closure, void *closure_data)
{
	cm_rpc_call                   *call = cm_rpc_call_of(closure_data);
	Threadgate__Auth__V1__Identity id =
	    THREADGATE__AUTH__V1__IDENTITY__INIT;

	snprintf(seen_tp, sizeof(seen_tp), "%s", call->traceparent);
	snprintf(
	    seen_ctx_tp, sizeof(seen_ctx_tp), "%s", cm_log_ctx_traceparent());
	snprintf(seen_ctx_rid, sizeof(seen_ctx_rid), "%s", cm_log_ctx_rid());
	if (in->n_authorization != 1) {
		cm_rpc_fail(call, CM_EAUTH, "no");
		closure(NULL, closure_data);
		return;
	}
	id.identity = "u1";
	closure(&id, closure_data);
}

static void
t_stats(svc_t *svc, const Threadgate__Auth__V1__StatsRequest *in,
    Threadgate__Auth__V1__StatsReply_Closure closure, void *closure_data)
{
	Threadgate__Auth__V1__StatsReply r =
	    THREADGATE__AUTH__V1__STATS_REPLY__INIT;
	closure(&r, closure_data);
}

static svc_t service = THREADGATE__AUTH__V1__AUTH_SERVICE__INIT(t_);

// The health check's answer, flipped by the tests.
static atomic_int db_up;

static int
check(void *arg, char *detail, size_t n)
{
	(void) arg;
	if (!atomic_load(&db_up)) {
		snprintf(detail, n, "database unreachable");
		return (0);
	}
	return (1);
}

static cm_metrics    *reg;
static cm_metrics    *reg2;
static cm_rpc_server *plain;
static cm_rpc_server *checked;
static cm_rpc_client *c_plain;
static cm_rpc_client *c_checked;

static int
setup(void **state)
{
	cm_rpc_server_config a = {
		.url      = URL_PLAIN,
		.service  = &service.base,
		.nworkers = 2,
	};
	cm_rpc_server_config b = a;

	cm_log_init("rpc_obs_test", CM_LOG_WARN);
	reg       = cm_metrics_new();
	reg2      = cm_metrics_new();
	a.metrics = reg;
	b.url     = URL_CHECK;
	// Both servers run the same service: in one registry they would
	// share every series (one process runs one server per service).
	b.metrics            = reg2;
	b.health             = check;
	b.health_interval_ms = 20;
	atomic_store(&db_up, 0);
	if (cm_rpc_server_start(&a, &plain) != CM_OK ||
	    cm_rpc_server_start(&b, &checked) != CM_OK ||
	    cm_rpc_client_open(URL_PLAIN, &c_plain) != CM_OK ||
	    cm_rpc_client_open(URL_CHECK, &c_checked) != CM_OK) {
		return (-1);
	}
	return (0);
}

static int
teardown(void **state)
{
	cm_rpc_client_close(c_plain);
	cm_rpc_client_close(c_checked);
	cm_rpc_server_stop(plain);
	cm_rpc_server_stop(checked);
	cm_metrics_free(reg);
	cm_metrics_free(reg2);
	return (0);
}

static void
sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

// Polls Health on c until it returns want - and, when detail is given,
// a detail other than "starting" (the answer before the server's first
// check has run) - bounded; returns the last.
static cm_err
health_until(cm_rpc_client *c, cm_err want, char *detail, size_t n)
{
	cm_err rv = CM_EINTERNAL;

	for (int waited = 0; waited < WAIT_MS; waited += 10) {
		rv = cm_rpc_health(c, "hc", TIMEOUT_MS, detail, n);
		if (rv == want &&
		    (detail == NULL || strcmp(detail, "starting") != 0)) {
			break;
		}
		sleep_ms(10);
	}
	return (rv);
}

static void
test_health(void **state)
{
	char detail[CM_RPC_DETAIL_MAX];

	// No check configured: serving.
	assert_int_equal(
	    cm_rpc_health(c_plain, "h1", TIMEOUT_MS, detail, sizeof(detail)),
	    CM_OK);
	assert_string_equal(detail, "serving");
	// A failing check: not serving, with its reason.
	assert_int_equal(
	    health_until(c_checked, CM_EUNAVAIL, detail, sizeof(detail)),
	    CM_EUNAVAIL);
	assert_string_equal(detail, "database unreachable");
	// The check recovers: serving again without a restart.
	atomic_store(&db_up, 1);
	assert_int_equal(
	    health_until(c_checked, CM_OK, detail, sizeof(detail)), CM_OK);
	// And fails again.
	atomic_store(&db_up, 0);
	assert_int_equal(
	    health_until(c_checked, CM_EUNAVAIL, detail, sizeof(detail)),
	    CM_EUNAVAIL);
}

static void
test_health_check_main(void **state)
{
	char url[128];

	// inproc URLs are dialled as they are.
	assert_int_equal(cm_rpc_health_check_main(URL_PLAIN, TIMEOUT_MS), 0);
	atomic_store(&db_up, 0);
	assert_int_equal(
	    health_until(c_checked, CM_EUNAVAIL, NULL, 0), CM_EUNAVAIL);
	assert_int_equal(cm_rpc_health_check_main(URL_CHECK, TIMEOUT_MS), 1);
	// Nobody there: 1 within the connect wait.
	assert_int_equal(
	    cm_rpc_health_check_main("inproc://rpc_obs_nobody", 1500), 1);
	assert_int_equal(cm_rpc_health_check_main("bogus://x", 500), 2);

	assert_int_equal(
	    cm_rpc_dial_url("tcp://0.0.0.0:7001", url, sizeof(url)), CM_OK);
	assert_string_equal(url, "tcp://127.0.0.1:7001");
	cm_rpc_dial_url("tcp://*:7001", url, sizeof(url));
	assert_string_equal(url, "tcp://127.0.0.1:7001");
	cm_rpc_dial_url("tcp://:7001", url, sizeof(url));
	assert_string_equal(url, "tcp://127.0.0.1:7001");
	cm_rpc_dial_url("tcp6://[::]:7001", url, sizeof(url));
	assert_string_equal(url, "tcp6://[::1]:7001");
	cm_rpc_dial_url("tcp://10.0.0.5:7001", url, sizeof(url));
	assert_string_equal(url, "tcp://10.0.0.5:7001");
	cm_rpc_dial_url("ipc:///run/a.sock", url, sizeof(url));
	assert_string_equal(url, "ipc:///run/a.sock");
	assert_int_equal(
	    cm_rpc_dial_url("tcp://0.0.0.0:7001", url, 8), CM_ETOOBIG);
}

typedef struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	int             done;
	cm_err          st;
} waiter;

static void
on_done(void *arg, cm_err st, const char *detail, ProtobufCMessage *reply)
{
	waiter *w = arg;

	protobuf_c_message_free_unpacked(reply, NULL);
	pthread_mutex_lock(&w->mu);
	w->st   = st;
	w->done = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static cm_err
call_traced(const char *tp, int with_token)
{
	Threadgate__Auth__V1__AuthenticateRequest req =
	    THREADGATE__AUTH__V1__AUTHENTICATE_REQUEST__INIT;
	char  *tok[] = { "t" };
	waiter w     = { .mu = PTHREAD_MUTEX_INITIALIZER,
		    .cv      = PTHREAD_COND_INITIALIZER };

	if (with_token) {
		req.authorization   = tok;
		req.n_authorization = 1;
	}
	assert_int_equal(
	    cm_rpc_call_async_traced(c_plain, "Authenticate", "rid-7", tp,
	        TIMEOUT_MS, &req.base,
	        &threadgate__auth__v1__identity__descriptor, on_done, &w),
	    CM_OK);
	pthread_mutex_lock(&w.mu);
	while (!w.done) {
		pthread_cond_wait(&w.cv, &w.mu);
	}
	pthread_mutex_unlock(&w.mu);
	return (w.st);
}

static void
test_traceparent(void **state)
{
	assert_int_equal(call_traced(TP, 1), CM_OK);
	assert_string_equal(seen_tp, TP);
	assert_string_equal(seen_ctx_tp, TP);
	assert_string_equal(seen_ctx_rid, "rid-7");
	// An invalid value never reaches the handler.
	assert_int_equal(call_traced("00-nonsense", 1), CM_OK);
	assert_string_equal(seen_tp, "");
	assert_int_equal(call_traced(NULL, 1), CM_OK);
	assert_string_equal(seen_tp, "");
	// The context is cleared after the handler.
	assert_string_equal(cm_log_ctx_traceparent(), "");
}

static void
assert_has(const char *text, const char *line)
{
	if (strstr(text, line) == NULL) {
		fail_msg("missing \"%s\" in:\n%s", line, text);
	}
}

static void
test_metrics(void **state)
{
	char  *text;
	size_t len;
	void  *payload = NULL;
	size_t plen    = 0;
	char   detail[CM_RPC_DETAIL_MAX];

	assert_int_equal(call_traced(NULL, 0), CM_EAUTH);
	assert_int_equal(call_traced(NULL, 1), CM_OK);
	assert_int_equal(
	    cm_rpc_call_raw_sync(c_plain, "NoSuchMethod", "r", 0, "", 0,
	        TIMEOUT_MS, &payload, &plen, detail, sizeof(detail)),
	    CM_ENOTSUP);
	assert_int_equal(
	    cm_rpc_call_raw_sync(c_plain, "Authenticate", "r", 1, "", 0,
	        TIMEOUT_MS, &payload, &plen, detail, sizeof(detail)),
	    CM_ETIMEDOUT);
	assert_int_equal(cm_metrics_render(reg, &text, &len), CM_OK);
	assert_has(text,
	    "threadgate_rpc_server_requests_total{service=\"AuthService\","
	    "method=\"Authenticate\",status=\"unauthenticated\"} ");
	assert_has(text,
	    "threadgate_rpc_server_requests_total{service=\"AuthService\","
	    "method=\"Authenticate\",status=\"ok\"} ");
	assert_has(text,
	    "threadgate_rpc_server_requests_total{service=\"AuthService\","
	    "method=\"unknown\",status=\"unimplemented\"} 1\n");
	assert_has(text,
	    "threadgate_rpc_server_requests_total{service=\"AuthService\","
	    "method=\"Health\",status=\"ok\"} ");
	assert_has(text,
	    "threadgate_rpc_server_rejected_total{service=\"AuthService\","
	    "reason=\"unknown_method\"} 1\n");
	assert_has(text,
	    "threadgate_rpc_server_rejected_total{service=\"AuthService\","
	    "reason=\"deadline\"} 1\n");
	assert_has(text,
	    "threadgate_rpc_server_request_duration_seconds_bucket{service="
	    "\"AuthService\",method=\"Authenticate\",le=\"+Inf\"} ");
	assert_has(text,
	    "threadgate_rpc_server_in_flight{service=\"AuthService\"} 0\n");
	assert_has(
	    text, "threadgate_rpc_server_serving{service=\"AuthService\"} ");
	// Stats was never called: its sparse series are not shown.
	assert_null(strstr(text, "method=\"Stats\""));
	free(text);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_health),
		cmocka_unit_test(test_health_check_main),
		cmocka_unit_test(test_traceparent),
		cmocka_unit_test(test_metrics),
	};

	return (cmocka_run_group_tests(tests, setup, teardown));
}
