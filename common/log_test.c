// SPDX-License-Identifier: MIT
//
// Unit tests for log.c: both formats (every JSON line parses, with the
// fixed keys, fields and trace ids; the text line has its shape and keeps
// one event on one line), the per-thread context, the level filter, a
// message far over CM_LOG_LINE_MAX still giving valid JSON, LOG_FORMAT
// parsing, the W3C traceparent validator, and buffered output (info lines
// batched and written within the flush interval, warnings at once and in
// order).
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "common/log.h"
#include "common/xalloc.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static char path[]       = "/tmp/tg-log-test-XXXXXX";
static int  saved_stderr = -1;

// Captures stderr into a fresh temporary file.
static void
capture(void)
{
	int fd;

	fflush(stderr);
	memcpy(path, "/tmp/tg-log-test-XXXXXX", sizeof(path));
	fd = mkstemp(path);
	assert_true(fd >= 0);
	saved_stderr = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
}

// Stops capturing; returns what was written (new string).
static char *
captured(void)
{
	FILE  *f;
	char  *buf = cm_xcalloc(1, 65536);
	size_t n;

	cm_log_flush();
	fflush(stderr);
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	f = fopen(path, "r");
	assert_non_null(f);
	n      = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	unlink(path);
	return (buf);
}

static json_t *
json_line(const char *line)
{
	json_error_t e;
	json_t      *v = json_loads(line, 0, &e);

	if (v == NULL) {
		fail_msg("not JSON (%s): %s", e.text, line);
	}
	return (v);
}

static const char *
jstr(json_t *v, const char *key)
{
	return (json_string_value(json_object_get(v, key)));
}

static void
test_json(void **state)
{
	cm_log_field f[3] = {
		{ .key    = "path",
		    .type = CM_LOG_F_STR,
		    .str  = "/threads/\"x\"" },
		{ .key = "status", .type = CM_LOG_F_INT, .num = 404 },
		{ .key = "duration_ms", .type = CM_LOG_F_MS, .num = 3214 },
	};
	char   *out, *nl;
	json_t *v;

	cm_log_init("log_test", CM_LOG_INFO);
	cm_log_set_format(CM_LOG_JSON);
	capture();
	cm_debug("r1", "hidden below the level");
	cm_info("r1", "hello %s\nworld", "there");
	cm_log_ctx_set("ctx-rid", TP);
	cm_logf(CM_LOG_WARN, NULL, f, 3, "GET %s", "/x");
	cm_log_ctx_clear();
	out = captured();

	nl = strchr(out, '\n');
	assert_non_null(nl);
	*nl = '\0';
	v   = json_line(out);
	assert_string_equal(jstr(v, "level"), "info");
	assert_string_equal(jstr(v, "svc"), "log_test");
	assert_string_equal(jstr(v, "rid"), "r1");
	assert_string_equal(jstr(v, "msg"), "hello there\nworld");
	assert_non_null(jstr(v, "ts"));
	assert_null(json_object_get(v, "trace_id"));
	json_decref(v);

	v = json_line(nl + 1);
	assert_string_equal(jstr(v, "level"), "warn");
	assert_string_equal(jstr(v, "rid"), "ctx-rid");
	assert_string_equal(
	    jstr(v, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
	assert_string_equal(jstr(v, "span_id"), "00f067aa0ba902b7");
	assert_string_equal(jstr(v, "path"), "/threads/\"x\"");
	assert_int_equal(
	    json_integer_value(json_object_get(v, "status")), 404);
	assert_true(
	    json_real_value(json_object_get(v, "duration_ms")) == 3.214);
	assert_string_equal(jstr(v, "msg"), "GET /x");
	json_decref(v);
	free(out);
}

static void
test_text(void **state)
{
	cm_log_field f[3] = {
		{ .key         = "method",
		    .type      = CM_LOG_F_STR,
		    .str       = "GET",
		    .json_only = 1 },
		{ .key = "owner", .type = CM_LOG_F_STR, .str = "" },
		{ .key = "note", .type = CM_LOG_F_STR, .str = "two words" },
	};
	char *out;

	cm_log_init("log_test", CM_LOG_DEBUG);
	cm_log_set_format(CM_LOG_TEXT);
	capture();
	cm_log_ctx_set("abc", TP);
	cm_logf(CM_LOG_INFO, NULL, f, 3, "GET /threads 200 %s", "1.2ms");
	cm_log_ctx_clear();
	cm_error(NULL, "line\nbreak\tand \x01 control");
	out = captured();
	// 2026-11-27T02:40:12.123Z INFO  log_test: GET ... rid=abc trace=...
	assert_int_equal(out[4], '-');
	assert_int_equal(out[10], 'T');
	assert_int_equal(out[23], 'Z');
	assert_non_null(strstr(out,
	    " INFO  log_test: GET /threads 200 1.2ms owner=- "
	    "note=\"two words\" rid=abc "
	    "trace=4bf92f3577b34da6a3ce929d0e0e4736\n"));
	assert_null(strstr(out, "method="));
	assert_non_null(strstr(
	    out, " ERROR log_test: line\\nbreak\\tand \\x01 control\n"));
	// Exactly two lines.
	assert_non_null(strchr(out, '\n'));
	assert_int_equal(strchr(strchr(out, '\n') + 1, '\n')[1], '\0');
	free(out);
	cm_log_set_format(CM_LOG_JSON);
}

static void
test_long_message_stays_json(void **state)
{
	char   *big = cm_xmalloc(3 * CM_LOG_LINE_MAX);
	char   *out;
	json_t *v;

	// Escaped quotes double in size: the cut must not split an escape.
	memset(big, '"', 3 * CM_LOG_LINE_MAX - 1);
	big[3 * CM_LOG_LINE_MAX - 1] = '\0';
	cm_log_init("log_test", CM_LOG_INFO);
	cm_log_set_format(CM_LOG_JSON);
	capture();
	cm_log_ctx_set("rid", TP);
	cm_info(NULL, "%s", big);
	cm_log_ctx_clear();
	out = captured();
	assert_true(strlen(out) <= CM_LOG_LINE_MAX);
	out[strlen(out) - 1] = '\0';
	v                    = json_line(out);
	assert_string_equal(jstr(v, "rid"), "rid");
	assert_non_null(jstr(v, "trace_id"));
	json_decref(v);
	free(out);
	free(big);
}

static void
test_format_env(void **state)
{
	setenv("LOG_FORMAT", "text", 1);
	assert_int_equal(cm_log_format_from_env(), CM_LOG_TEXT);
	setenv("LOG_FORMAT", "JSON", 1);
	assert_int_equal(cm_log_format_from_env(), CM_LOG_JSON);
	// stderr is not a terminal under ctest: JSON.
	setenv("LOG_FORMAT", "", 1);
	if (!isatty(STDERR_FILENO)) {
		assert_int_equal(cm_log_format_from_env(), CM_LOG_JSON);
	}
	unsetenv("LOG_FORMAT");
}

static void
test_traceparent(void **state)
{
	static const struct {
		const char *in;
		const char *want; // NULL: refused
	} cases[] = {
		{ TP, TP },
		{ "  " TP " ", TP },
		// A future version with more fields: accepted as 00.
		{ "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"
		  "xyz",
		    TP },
		{ "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		    TP },
		// Version 00 must be exactly 55 chars.
		{ TP "-xyz", NULL },
		{ "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		    NULL },
		{ "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		    NULL },
		{ "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		    NULL },
		{ "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
		    NULL },
		{ "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
		    NULL },
		{ "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
		    NULL },
		{ "", NULL },
		{ "garbage", NULL },
	};
	char out[CM_TRACEPARENT_LEN + 1];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cm_err rv = cm_traceparent_parse(cases[i].in, out);
		if (cases[i].want == NULL) {
			if (rv != CM_EINVAL || out[0] != '\0') {
				fail_msg("accepted %s", cases[i].in);
			}
		} else {
			if (rv != CM_OK) {
				fail_msg("refused %s", cases[i].in);
			}
			assert_string_equal(out, cases[i].want);
		}
	}
	assert_int_equal(cm_traceparent_parse(NULL, out), CM_EINVAL);
}

// file_text returns what path holds now (new string), without ending the
// capture.
static char *
file_text(void)
{
	FILE  *f   = fopen(path, "r");
	char  *buf = cm_xcalloc(1, 65536);
	size_t n;

	assert_non_null(f);
	n      = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	return (buf);
}

static void
test_buffered(void **state)
{
	char *t;

	(void) state;
	capture();
	cm_log_init("log_test", CM_LOG_INFO);
	cm_info(NULL, "first-info");
	// A warning goes out at once, after the lines before it.
	cm_warn(NULL, "then-warn");
	t = file_text();
	assert_non_null(strstr(t, "first-info"));
	assert_non_null(strstr(t, "then-warn"));
	assert_true(strstr(t, "first-info") < strstr(t, "then-warn"));
	free(t);
	// An info line alone is written by the writer within its interval.
	cm_info(NULL, "later-info");
	for (int i = 0; i < 500; i++) {
		t = file_text();
		if (strstr(t, "later-info") != NULL) {
			break;
		}
		free(t);
		t = NULL;
		usleep(2000);
	}
	assert_non_null(t);
	free(t);
	free(captured());
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_text),
		cmocka_unit_test(test_long_message_stays_json),
		cmocka_unit_test(test_format_env),
		cmocka_unit_test(test_traceparent),
		cmocka_unit_test(test_buffered),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
