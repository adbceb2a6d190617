// SPDX-License-Identifier: MIT
//
// Unit tests for util.c: UUIDs, timestamps, number and env parsing.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/util.h"
#include "common/xalloc.h"

static void
test_uuid_parse(void **state)
{
	char out[CM_UUID_LEN + 1];

	assert_int_equal(
	    cm_uuid_parse("0B6A0E7C-1F2D-4C3B-9A8E-7D6C5B4A3F21", 36, out),
	    CM_OK);
	assert_string_equal(out, "0b6a0e7c-1f2d-4c3b-9a8e-7d6c5b4a3f21");
	assert_int_equal(
	    cm_uuid_parse("0b6a0e7c1f2d4c3b9a8e7d6c5b4a3f21", 32, out), CM_OK);
	assert_string_equal(out, "0b6a0e7c-1f2d-4c3b-9a8e-7d6c5b4a3f21");
	assert_int_equal(cm_uuid_parse("not-a-uuid", 10, out), CM_EINVAL);
	assert_int_equal(
	    cm_uuid_parse("0b6a0e7c-1f2d-4c3b-9a8e-7d6c5b4a3f2g", 36, out),
	    CM_EINVAL);
	assert_int_equal(
	    cm_uuid_parse("0b6a0e7c+1f2d-4c3b-9a8e-7d6c5b4a3f21", 36, out),
	    CM_EINVAL);
	assert_int_equal(cm_uuid_parse(NULL, 36, out), CM_EINVAL);
}

static void
test_uuid_generate(void **state)
{
	char a[CM_UUID_LEN + 1];
	char b[CM_UUID_LEN + 1];
	char c[CM_UUID_LEN + 1];

	cm_uuid4(a);
	assert_int_equal(strlen(a), 36);
	assert_int_equal(a[14], '4');
	assert_int_equal(cm_uuid_parse(a, 36, c), CM_OK);
	assert_string_equal(a, c);

	cm_uuid7(a);
	cm_uuid7(b);
	assert_int_equal(a[14], '7');
	assert_true(strchr("89ab", a[19]) != NULL);
	// Time-ordered: the 48-bit ms prefix never goes backwards.
	assert_true(strncmp(a, b, 13) <= 0);
	assert_string_not_equal(a, b);
}

static void
test_unhex(void **state)
{
	unsigned char b[3];

	assert_int_equal(cm_unhex("0aFf10", 6, b, 3), CM_OK);
	assert_int_equal(b[0], 0x0a);
	assert_int_equal(b[1], 0xff);
	assert_int_equal(b[2], 0x10);
	assert_int_equal(cm_unhex("0aFf1", 5, b, 3), CM_EINVAL);
	assert_int_equal(cm_unhex("0aFg10", 6, b, 3), CM_EINVAL);
	assert_int_equal(cm_hexval('z'), -1);
}

static void
test_iso8601(void **state)
{
	char buf[CM_ISO8601_SIZE];

	assert_string_equal(cm_time_iso8601(1721327715540834LL, buf),
	    "2024-07-18T18:35:15.540834+00:00");
	assert_string_equal(
	    cm_time_iso8601(0, buf), "1970-01-01T00:00:00.000000+00:00");
}

static void
test_parse_i64(void **state)
{
	int64_t v = 7;

	assert_int_equal(cm_parse_i64("42", 0, 100, &v), CM_OK);
	assert_int_equal(v, 42);
	assert_int_equal(cm_parse_i64("-1", 0, 100, &v), CM_EINVAL);
	assert_int_equal(cm_parse_i64("101", 0, 100, &v), CM_EINVAL);
	assert_int_equal(cm_parse_i64("4x", 0, 100, &v), CM_EINVAL);
	assert_int_equal(cm_parse_i64("", 0, 100, &v), CM_EINVAL);
	assert_int_equal(cm_parse_i64(" 4", 0, 100, &v), CM_EINVAL);
	assert_int_equal(
	    cm_parse_i64("99999999999999999999", 0, INT64_MAX, &v), CM_EINVAL);
	assert_int_equal(v, 42); // untouched on error
}

static void
test_env(void **state)
{
	int64_t v;
	int     b;

	setenv("TG_TEST_N", "12", 1);
	assert_int_equal(cm_env_i64("TG_TEST_N", 5, 1, 20, &v), CM_OK);
	assert_int_equal(v, 12);
	setenv("TG_TEST_N", "abc", 1);
	assert_int_equal(cm_env_i64("TG_TEST_N", 5, 1, 20, &v), CM_EINVAL);
	unsetenv("TG_TEST_N");
	assert_int_equal(cm_env_i64("TG_TEST_N", 5, 1, 20, &v), CM_OK);
	assert_int_equal(v, 5);
	setenv("TG_TEST_B", "Yes", 1);
	assert_int_equal(cm_env_bool("TG_TEST_B", 0, &b), CM_OK);
	assert_int_equal(b, 1);
	setenv("TG_TEST_B", "maybe", 1);
	assert_int_equal(cm_env_bool("TG_TEST_B", 0, &b), CM_EINVAL);
	assert_string_equal(cm_env_str("TG_TEST_UNSET_X", "d"), "d");
}

static void
test_default_ipc_url(void **state)
{
	char *base = cm_xstrdup("/tmp/tg-ipc-XXXXXX");
	char  url[CM_IPC_URL_MAX];
	char  want[256];
	char  dir[256];
	char *old = getenv("XDG_RUNTIME_DIR") != NULL
	    ? cm_xstrdup(getenv("XDG_RUNTIME_DIR"))
	    : NULL;

	(void) state;
	assert_non_null(mkdtemp(base));
	setenv("XDG_RUNTIME_DIR", base, 1);
	// Made private on first use, the same URL for both ends.
	assert_int_equal(cm_default_ipc_url("auth", url, sizeof(url)), CM_OK);
	snprintf(want, sizeof(want), "ipc://%s/threadgate/auth.sock", base);
	assert_string_equal(url, want);
	snprintf(dir, sizeof(dir), "%s/threadgate", base);
	{
		struct stat st;
		assert_int_equal(lstat(dir, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0700);
	}
	assert_int_equal(
	    cm_default_ipc_url("threads", url, sizeof(url)), CM_OK);
	// A directory others may enter is refused, as is a symlink.
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(
	    cm_default_ipc_url("auth", url, sizeof(url)), CM_EPERM);
	assert_int_equal(rmdir(dir), 0);
	assert_int_equal(symlink("/tmp", dir), 0);
	assert_int_equal(
	    cm_default_ipc_url("auth", url, sizeof(url)), CM_EPERM);
	assert_int_equal(unlink(dir), 0);
	// Too small a buffer.
	assert_int_equal(cm_default_ipc_url("auth", url, 8), CM_ETOOBIG);
	rmdir(dir);
	rmdir(base);
	if (old != NULL) {
		setenv("XDG_RUNTIME_DIR", old, 1);
		free(old);
	} else {
		unsetenv("XDG_RUNTIME_DIR");
	}
	free(base);
}

static int
cmp_rid(const void *a, const void *b)
{
	return (strcmp((const char *) a, (const char *) b));
}

static void *
rid_other_thread(void *arg)
{
	cm_request_id(arg);
	return (NULL);
}

// Request ids: 32 lower-case hex, accepted by cm_request_id_ok, never the
// same twice in a thread, and with another prefix in another thread.
static void
test_request_ids(void **state)
{
	enum { N = 20000 };
	char(*ids)[CM_RID_LEN + 1] = calloc(N, CM_RID_LEN + 1);
	char      other[CM_RID_LEN + 1];
	pthread_t th;

	(void) state;
	for (int i = 0; i < N; i++) {
		cm_request_id(ids[i]);
		assert_int_equal(strlen(ids[i]), CM_RID_LEN);
		assert_int_equal(
		    strspn(ids[i], "0123456789abcdef"), CM_RID_LEN);
		assert_true(cm_request_id_ok(ids[i]));
	}
	qsort(ids, N, CM_RID_LEN + 1, cmp_rid);
	for (int i = 1; i < N; i++) {
		assert_string_not_equal(ids[i - 1], ids[i]);
	}
	assert_int_equal(
	    pthread_create(&th, NULL, rid_other_thread, other), 0);
	pthread_join(th, NULL);
	// Every id of this thread shares its 16-hex prefix; not the other's.
	assert_int_equal(strncmp(ids[0], ids[N - 1], 16), 0);
	assert_int_not_equal(strncmp(other, ids[0], 16), 0);
	free(ids);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uuid_parse),
		cmocka_unit_test(test_uuid_generate),
		cmocka_unit_test(test_unhex),
		cmocka_unit_test(test_iso8601),
		cmocka_unit_test(test_parse_i64),
		cmocka_unit_test(test_env),
		cmocka_unit_test(test_default_ipc_url),
		cmocka_unit_test(test_request_ids),
	};
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
