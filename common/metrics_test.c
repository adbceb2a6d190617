// SPDX-License-Identifier: MIT
//
// Unit tests for metrics.c and metrics_http.c: the exact exposition text
// of each metric type, label escaping, sparse series, the series cap,
// histogram buckets, concurrent recording (no lost increments), the
// process metrics, the HTTP listener (GET /metrics, 404, 405), Debian's
// `promtool check metrics` on a full rendering when promtool is installed,
// and the cost of one increment / observation (printed; bounded loosely).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/xalloc.h"

// Increments per thread in the concurrency test.
#define CONC_N 200000
// Operations timed in the cost test.
#define COST_N 5000000

// render sets *text to r's exposition text (new string). The caller's
// variable is the out-parameter, not a local of this helper: gcc 12 at -O3
// inlines a helper that returns the value of a local whose address it
// passed out, assumes the callee may have stored that local's own address
// in it, and then reports every later use as a dangling pointer
// (-Wdangling-pointer).
static void
render(cm_metrics *r, char **text)
{
	size_t len = 0;

	*text = NULL;
	assert_int_equal(cm_metrics_render(r, text, &len), CM_OK);
	assert_int_equal(strlen(*text), len);
}

static void
assert_has(const char *text, const char *line)
{
	if (strstr(text, line) == NULL) {
		fail_msg("missing \"%s\" in:\n%s", line, text);
	}
}

static void
test_counter_gauge_text(void **state)
{
	static const char *const labels[] = { "route", "status", NULL };
	cm_metrics              *r        = cm_metrics_new();
	cm_metric_desc           d        = { 0 };
	cm_counter              *c, *c2, *plain;
	cm_gauge                *g;
	char                    *text;

	d.name   = "t_requests_total";
	d.help   = "Requests.\nSecond line with a \\ backslash.";
	d.type   = CM_METRIC_COUNTER;
	d.labels = labels;
	c        = cm_counter_get(cm_metrics_family(r, &d),
	           (const char *[]) { "/threads/{id}", "200" });
	c2       = cm_counter_get(cm_metrics_family(r, &d),
	          (const char *[]) { "a\"b\\c\nd", "500" });
	// The same values give the same series.
	assert_ptr_equal(c,
	    cm_counter_get(cm_metrics_family(r, &d),
	        (const char *[]) { "/threads/{id}", "200" }));
	plain = cm_metrics_counter(r, "t_plain_total", "Plain.");
	g     = cm_metrics_gauge(r, "t_in_flight", "In flight.");
	cm_counter_inc(c);
	cm_counter_add(c, 41);
	cm_counter_inc(c2);
	cm_gauge_add(g, 5);
	cm_gauge_add(g, -7);
	// NULL series record nothing and do not crash.
	cm_counter_inc(NULL);
	cm_gauge_set(NULL, 3);
	cm_histogram_observe(NULL, 3);

	render(r, &text);
	assert_has(text,
	    "# HELP t_requests_total Requests.\\nSecond line with a \\\\ "
	    "backslash.\n# TYPE t_requests_total counter\n");
	assert_has(text,
	    "t_requests_total{route=\"/threads/{id}\",status=\"200\"} 42\n");
	assert_has(text,
	    "t_requests_total{route=\"a\\\"b\\\\c\\nd\",status=\"500\"} 1\n");
	assert_has(text, "# TYPE t_plain_total counter\nt_plain_total 0\n");
	assert_int_equal(cm_counter_value(plain), 0);
	assert_has(text, "# TYPE t_in_flight gauge\nt_in_flight -2\n");
	assert_int_equal(cm_counter_value(c), 42);
	assert_int_equal(cm_gauge_value(g), -2);
	free(text);
	cm_metrics_free(r);
}

static void
test_histogram_text(void **state)
{
	static const double      b[]      = { 0.001, 0.01, 0.1 };
	static const char *const labels[] = { "method", NULL };
	cm_metrics              *r        = cm_metrics_new();
	cm_metric_desc           d        = { 0 };
	cm_histogram            *h;
	char                    *text;

	d.name     = "t_duration_seconds";
	d.help     = "Duration.";
	d.type     = CM_METRIC_HISTOGRAM;
	d.labels   = labels;
	d.buckets  = b;
	d.nbuckets = 3;
	d.unit     = 1e-6; // observations in microseconds
	h          = cm_histogram_get(
	             cm_metrics_family(r, &d), (const char *[]) { "Get" });
	cm_histogram_observe(h, 1000);    // le 0.001 (bounds are inclusive)
	cm_histogram_observe(h, 1001);    // le 0.01
	cm_histogram_observe(h, 50000);   // le 0.1
	cm_histogram_observe(h, 2500000); // +Inf
	assert_int_equal(cm_histogram_count(h), 4);
	render(r, &text);
	assert_has(text, "# TYPE t_duration_seconds histogram\n");
	assert_has(text,
	    "t_duration_seconds_bucket{method=\"Get\",le=\"0.001\"} 1\n"
	    "t_duration_seconds_bucket{method=\"Get\",le=\"0.01\"} 2\n"
	    "t_duration_seconds_bucket{method=\"Get\",le=\"0.1\"} 3\n"
	    "t_duration_seconds_bucket{method=\"Get\",le=\"+Inf\"} 4\n"
	    "t_duration_seconds_sum{method=\"Get\"} 2.552001\n"
	    "t_duration_seconds_count{method=\"Get\"} 4\n");
	free(text);

	// Bytes (unit 1), no labels.
	{
		static const double bb[] = { 64, 1024, 1048576 };

		memset(&d, 0, sizeof(d));
		d.name     = "t_size_bytes";
		d.help     = "Size.";
		d.type     = CM_METRIC_HISTOGRAM;
		d.buckets  = bb;
		d.nbuckets = 3;
		h          = cm_histogram_get(cm_metrics_family(r, &d), NULL);
	}
	cm_histogram_observe(h, 65);
	render(r, &text);
	assert_has(text,
	    "t_size_bytes_bucket{le=\"64\"} 0\n"
	    "t_size_bytes_bucket{le=\"1024\"} 1\n"
	    "t_size_bytes_bucket{le=\"1048576\"} 1\n"
	    "t_size_bytes_bucket{le=\"+Inf\"} 1\n"
	    "t_size_bytes_sum 65\nt_size_bytes_count 1\n");
	free(text);
	// Default buckets (seconds), observed in microseconds.
	memset(&d, 0, sizeof(d));
	d.name = "t_default_seconds";
	d.help = "Default buckets.";
	d.type = CM_METRIC_HISTOGRAM;
	d.unit = 1e-6;
	h      = cm_histogram_get(cm_metrics_family(r, &d), NULL);
	cm_histogram_observe(h, 500);
	render(r, &text);
	assert_has(text, "t_default_seconds_bucket{le=\"0.0005\"} 1\n");
	assert_has(text, "t_default_seconds_bucket{le=\"10\"} 1\n");
	assert_has(text, "t_default_seconds_sum 0.0005\n");
	free(text);
	cm_metrics_free(r);
}

static void
test_sparse_and_cap(void **state)
{
	static const char *const labels[] = { "k", NULL };
	cm_metrics              *r        = cm_metrics_new();
	cm_metric_desc           d        = { 0 };
	cm_mfamily              *f;
	cm_counter              *a, *b;
	char                    *text;
	char                     v[32];
	int                      made = 0;

	d.name   = "t_sparse_total";
	d.help   = "Sparse.";
	d.type   = CM_METRIC_COUNTER;
	d.labels = labels;
	d.sparse = 1;
	f        = cm_metrics_family(r, &d);
	a        = cm_counter_get(f, (const char *[]) { "a" });
	b        = cm_counter_get(f, (const char *[]) { "b" });
	cm_counter_inc(b);
	render(r, &text);
	assert_null(strstr(text, "k=\"a\""));
	assert_has(text, "t_sparse_total{k=\"b\"} 1\n");
	free(text);
	(void) a;
	// A wrong type gives NULL.
	assert_null(cm_gauge_get(f, (const char *[]) { "a" }));
	// The cap: series beyond CM_METRICS_SERIES_MAX are refused.
	cm_log_init("metrics_test", CM_LOG_ERROR);
	for (int i = 0; i < CM_METRICS_SERIES_MAX + 10; i++) {
		snprintf(v, sizeof(v), "v%d", i);
		if (cm_counter_get(f, (const char *[]) { v }) != NULL) {
			made++;
		}
	}
	// "a" and "b" are two of the CM_METRICS_SERIES_MAX.
	assert_int_equal(made, CM_METRICS_SERIES_MAX - 2);
	cm_metrics_free(r);
}

typedef struct conc_arg {
	cm_counter   *c;
	cm_histogram *h;
} conc_arg;

static void *
conc_main(void *p)
{
	conc_arg *a = p;

	for (int i = 0; i < CONC_N; i++) {
		cm_counter_inc(a->c);
		cm_histogram_observe(a->h, (uint64_t) (i % 3000));
	}
	return (NULL);
}

static void
test_concurrent(void **state)
{
	cm_metrics    *r = cm_metrics_new();
	cm_metric_desc d = { 0 };
	conc_arg       a;
	pthread_t      t[4];

	d.name = "t_conc_seconds";
	d.help = "Concurrent.";
	d.type = CM_METRIC_HISTOGRAM;
	d.unit = 1e-6;
	a.h    = cm_histogram_get(cm_metrics_family(r, &d), NULL);
	a.c    = cm_metrics_counter(r, "t_conc_total", "Concurrent.");
	for (int i = 0; i < 4; i++) {
		pthread_create(&t[i], NULL, conc_main, &a);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
	}
	assert_int_equal(cm_counter_value(a.c), 4 * CONC_N);
	assert_int_equal(cm_histogram_count(a.h), 4 * CONC_N);
	cm_metrics_free(r);
}

static void
test_process_and_build_info(void **state)
{
	cm_metrics *r = cm_metrics_new();
	char       *text;

	cm_metrics_add_process(r);
	cm_metrics_add_process(r); // once only
	cm_metrics_add_build_info(r, "metrics_test", "9.9.9");
	render(r, &text);
	assert_has(text, "# TYPE process_cpu_seconds_total counter\n");
	assert_has(text, "# TYPE process_resident_memory_bytes gauge\n");
	assert_has(text, "# TYPE process_open_fds gauge\n");
	assert_has(text, "# TYPE process_max_fds gauge\n");
	assert_has(text, "# TYPE process_start_time_seconds gauge\n");
	assert_has(text,
	    "threadgate_build_info{service=\"metrics_test\",version=\"9.9.9\"}"
	    " 1\n");
	// One process family each.
	assert_null(strstr(strstr(text, "# TYPE process_open_fds") + 1,
	    "# TYPE process_open_fds"));
	{
		// RSS of a running test is well above a megabyte.
		const char *p =
		    strstr(text, "\nprocess_resident_memory_bytes ");
		assert_non_null(p);
		assert_true(strtod(p + 31, NULL) > 1e6);
	}
	free(text);
	cm_metrics_free(r);
}

// Everything at once through Debian's promtool, when it is installed
// (scripts/deps.sh --test installs the prometheus package).
static void
test_promtool(void **state)
{
	static const char *const labels[] = { "svc", NULL };
	cm_metrics              *r        = cm_metrics_new();
	cm_metric_desc           d        = { 0 };
	char                     path[]   = "/tmp/tg-metrics-XXXXXX";
	char                     cmd[256];
	char                    *text;
	FILE                    *f;
	int                      fd, rc;

	if (access("/usr/bin/promtool", X_OK) != 0) {
		print_message("promtool not installed: skipped "
		              "(scripts/deps.sh --test installs it)\n");
		skip();
	}
	d.name   = "threadgate_t_requests_total";
	d.help   = "Requests.";
	d.type   = CM_METRIC_COUNTER;
	d.labels = labels;
	cm_counter_inc(cm_counter_get(
	    cm_metrics_family(r, &d), (const char *[]) { "a\"b" }));
	memset(&d, 0, sizeof(d));
	d.name   = "threadgate_t_duration_seconds";
	d.help   = "Duration.";
	d.type   = CM_METRIC_HISTOGRAM;
	d.labels = labels;
	d.unit   = 1e-6;
	cm_histogram_observe(cm_histogram_get(cm_metrics_family(r, &d),
	                         (const char *[]) { "x" }),
	    1234);
	cm_gauge_set(cm_metrics_gauge(r, "threadgate_t_open", "Open."), 3);
	cm_metrics_add_process(r);
	cm_metrics_add_build_info(r, "t", "1");
	render(r, &text);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	fputs(text, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
	rc = system(cmd);
	unlink(path);
	if (rc != 0) {
		fail_msg(
		    "promtool check metrics failed (%d) on:\n%s", rc, text);
	}
	free(text);
	cm_metrics_free(r);
}

// A raw HTTP/1.0 request to 127.0.0.1:port; returns the response (new).
static char *
http_raw(int port, const char *req)
{
	struct sockaddr_in sa  = { 0 };
	char              *buf = cm_xcalloc(1, 1 << 20);
	size_t             len = 0;
	ssize_t            n;
	int                fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_family      = AF_INET;
	sa.sin_port        = htons((uint16_t) port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t) strlen(req));
	while ((n = read(fd, buf + len, (1 << 20) - 1 - len)) > 0) {
		len += (size_t) n;
	}
	close(fd);
	return (buf);
}

static void
test_http_listener(void **state)
{
	cm_metrics      *r = cm_metrics_new();
	cm_metrics_http *h = NULL;
	char            *resp;

	cm_counter_add(cm_metrics_counter(r, "t_http_total", "Http."), 7);
	assert_int_equal(
	    cm_metrics_http_start(r, "nonsense", NULL, &h), CM_EINVAL);
	assert_int_equal(
	    cm_metrics_http_start(r, "127.0.0.1:0", NULL, &h), CM_OK);
	assert_true(cm_metrics_http_port(h) > 0);
	resp = http_raw(cm_metrics_http_port(h),
	    "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
	assert_has(resp, " 200 OK\r\n");
	assert_has(resp, "text/plain; version=0.0.4");
	assert_has(resp, "\r\n\r\n# HELP t_http_total Http.\n");
	assert_has(resp, "t_http_total 7\n");
	free(resp);
	resp = http_raw(
	    cm_metrics_http_port(h), "GET / HTTP/1.0\r\nHost: x\r\n\r\n");
	assert_has(resp, " 404 ");
	free(resp);
	resp = http_raw(cm_metrics_http_port(h),
	    "POST /metrics HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
	assert_has(resp, " 405 ");
	free(resp);
	cm_metrics_http_stop(h);
	cm_metrics_free(r);
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((double) ts.tv_sec + (double) ts.tv_nsec / 1e9);
}

// Measures the hot path. Bounds are loose (sanitizer builds and a busy
// 2-core machine); the printed numbers are what README quotes.
static void
test_cost(void **state)
{
	cm_metrics    *r = cm_metrics_new();
	cm_metric_desc d = { 0 };
	cm_counter    *c = cm_metrics_counter(r, "t_cost_total", "Cost.");
	cm_histogram  *h;
	double         t0, inc_ns, obs_ns;

	d.name = "t_cost_seconds";
	d.help = "Cost.";
	d.type = CM_METRIC_HISTOGRAM;
	d.unit = 1e-6;
	h      = cm_histogram_get(cm_metrics_family(r, &d), NULL);
	t0     = now_s();
	for (int i = 0; i < COST_N; i++) {
		cm_counter_inc(c);
	}
	inc_ns = (now_s() - t0) * 1e9 / COST_N;
	t0     = now_s();
	for (int i = 0; i < COST_N; i++) {
		cm_histogram_observe(h, (uint64_t) (i & 0xffff));
	}
	obs_ns = (now_s() - t0) * 1e9 / COST_N;
	print_message("cost: counter increment %.1f ns, histogram observe "
	              "(14 buckets) %.1f ns, single thread\n",
	    inc_ns, obs_ns);
	assert_true(inc_ns < 1000);
	assert_true(obs_ns < 1000);
	cm_metrics_free(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counter_gauge_text),
		cmocka_unit_test(test_histogram_text),
		cmocka_unit_test(test_sparse_and_cap),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_process_and_build_info),
		cmocka_unit_test(test_promtool),
		cmocka_unit_test(test_http_listener),
		cmocka_unit_test(test_cost),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
