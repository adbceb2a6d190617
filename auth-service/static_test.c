// SPDX-License-Identifier: MIT
//
// Unit tests of the static (development) provider: file parsing and
// validation, lookups, and the THREADGATE_DEV guard.

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth-service/service.h"

static const char good[] =
    "{\"tok-alice\": {\"identity\": \"alice\", \"email\": \"a@x.test\","
    " \"permissions\": [\"threads:read\", \"threads:write\"]},"
    " \"tok-bob\": {\"identity\": \"bob\"}}";

static void
test_parse_and_lookup(void **state)
{
	auth_provider *p = NULL;
	auth_result    r;
	char           detail[256] = "";

	(void) state;
	assert_int_equal(auth_static_new_from_buffer(
	                     good, strlen(good), &p, detail, sizeof(detail)),
	    CM_OK);
	assert_string_equal(p->name, "static");
	assert_int_equal(
	    p->verify(p, NULL, "tok-alice", &r, detail, sizeof(detail)),
	    CM_OK);
	assert_string_equal(r.identity, "alice");
	assert_string_equal(r.email, "a@x.test");
	assert_string_equal(r.scopes, "threads:read threads:write");
	assert_int_equal(
	    p->verify(p, NULL, "tok-bob", &r, detail, sizeof(detail)), CM_OK);
	assert_string_equal(r.identity, "bob");
	assert_string_equal(r.email, "");
	assert_int_equal(
	    p->verify(p, NULL, "tok-carol", &r, detail, sizeof(detail)),
	    CM_EAUTH);
	// A prefix of a known token is not that token.
	assert_int_equal(
	    p->verify(p, NULL, "tok-ali", &r, detail, sizeof(detail)),
	    CM_EAUTH);
	p->destroy(p);
}

static void
test_bad_files(void **state)
{
	static const char *bad[] = {
		"",
		"not json",
		"[]",
		"{\"t\": \"alice\"}",
		"{\"t\": {}}",
		"{\"t\": {\"identity\": \"\"}}",
		"{\"t\": {\"identity\": 5}}",
		"{\"t\": {\"identity\": \"a\", \"email\": 5}}",
		"{\"t\": {\"identity\": \"a\", \"permissions\": \"x\"}}",
		"{\"t\": {\"identity\": \"a\", \"permissions\": [1]}}",
		"{\"t\": {\"identity\": \"a\", \"permissions\": [\"a b\"]}}",
		"{\"\": {\"identity\": \"a\"}}",
		"{\"has space\": {\"identity\": \"a\"}}",
	};

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		auth_provider *p           = NULL;
		char           detail[256] = "";
		cm_err         rv          = auth_static_new_from_buffer(
		                     bad[i], strlen(bad[i]), &p, detail, sizeof(detail));
		if (rv != CM_EINVAL) {
			fail_msg("file %zu (%s) accepted", i, bad[i]);
		}
		assert_null(p);
		assert_true(detail[0] != '\0');
	}
}

static void
test_dev_guard(void **state)
{
	auth_config    cfg;
	auth_provider *p      = NULL;
	char           path[] = "/tmp/tg-static-XXXXXX";
	int            fd     = mkstemp(path);
	FILE          *f;

	(void) state;
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	fputs(good, f);
	fclose(f);
	memset(&cfg, 0, sizeof(cfg));
	cfg.static_file = path;
	cfg.dev_mode    = 0;
	assert_int_equal(auth_static_new(&cfg, &p), CM_EINVAL);
	assert_null(p);
	cfg.dev_mode = 1;
	assert_int_equal(auth_static_new(&cfg, &p), CM_OK);
	p->destroy(p);
	cfg.static_file = "/nonexistent/tg-static.json";
	assert_int_equal(auth_static_new(&cfg, &p), CM_EINVAL);
	unlink(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_and_lookup),
		cmocka_unit_test(test_bad_files),
		cmocka_unit_test(test_dev_guard),
	};
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
