// SPDX-License-Identifier: MIT
//
// Time, UUIDs, request ids, checked number parsing and environment
// configuration (see util.h).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

int64_t
cm_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
}

int64_t
cm_now_ms(void)
{
	return (cm_now_us() / 1000);
}

int64_t
cm_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

int64_t
cm_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
}

int
cm_cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *) a;
	int64_t y = *(const int64_t *) b;

	return ((x > y) - (x < y));
}

char *
cm_time_iso8601(int64_t us, char buf[CM_ISO8601_SIZE])
{
	time_t    secs = (time_t) (us / 1000000);
	long      frac = (long) (us % 1000000);
	struct tm tm;

	if (frac < 0) {
		frac += 1000000;
		secs -= 1;
	}
	char tmp[96];

	gmtime_r(&secs, &tm);
	snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%06ld+00:00",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, frac);
	memcpy(buf, tmp, CM_ISO8601_SIZE - 1);
	buf[CM_ISO8601_SIZE - 1] = '\0';
	return (buf);
}

void
cm_random_bytes(void *buf, size_t n)
{
	unsigned char *p = buf;

	while (n > 0) {
		ssize_t got = getrandom(p, n, 0);

		if (got < 0) {
			if (errno == EINTR) {
				continue;
			}
			cm_assert_fail("getrandom", __FILE__, __LINE__);
		}
		p += got;
		n -= (size_t) got;
	}
}

void
cm_hex(const unsigned char *bytes, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i]     = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 0xf];
	}
	out[2 * n] = '\0';
}

static void
uuid_format(const unsigned char b[16], char out[CM_UUID_LEN + 1])
{
	char hex[33];

	cm_hex(b, 16, hex);
	snprintf(out, CM_UUID_LEN + 1, "%.8s-%.4s-%.4s-%.4s-%.12s", hex,
	    hex + 8, hex + 12, hex + 16, hex + 20);
}

void
cm_uuid4(char out[CM_UUID_LEN + 1])
{
	unsigned char b[16];

	cm_random_bytes(b, sizeof(b));
	b[6] = (unsigned char) ((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char) ((b[8] & 0x3f) | 0x80);
	uuid_format(b, out);
}

void
cm_uuid7(char out[CM_UUID_LEN + 1])
{
	unsigned char b[16];
	uint64_t      ms = (uint64_t) cm_now_ms();

	cm_random_bytes(b, sizeof(b));
	for (int i = 0; i < 6; i++) {
		b[i] = (unsigned char) (ms >> (40 - 8 * i));
	}
	b[6] = (unsigned char) ((b[6] & 0x0f) | 0x70);
	b[8] = (unsigned char) ((b[8] & 0x3f) | 0x80);
	uuid_format(b, out);
}

int
cm_hexval(char c)
{
	if (c >= '0' && c <= '9') {
		return (c - '0');
	}
	if (c >= 'a' && c <= 'f') {
		return (c - 'a' + 10);
	}
	if (c >= 'A' && c <= 'F') {
		return (c - 'A' + 10);
	}
	return (-1);
}

cm_err
cm_unhex(const char *s, size_t slen, unsigned char *out, size_t n)
{
	if (slen != 2 * n) {
		return (CM_EINVAL);
	}
	for (size_t i = 0; i < n; i++) {
		int hi = cm_hexval(s[2 * i]);
		int lo = cm_hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			return (CM_EINVAL);
		}
		out[i] = (unsigned char) ((hi << 4) | lo);
	}
	return (CM_OK);
}

cm_err
cm_uuid_parse(const char *s, size_t len, char out[CM_UUID_LEN + 1])
{
	unsigned char b[16];
	size_t        nib = 0;

	if (s == NULL || (len != 36 && len != 32)) {
		return (CM_EINVAL);
	}
	for (size_t i = 0; i < len; i++) {
		int v;

		if (len == 36 && (i == 8 || i == 13 || i == 18 || i == 23)) {
			if (s[i] != '-') {
				return (CM_EINVAL);
			}
			continue;
		}
		v = cm_hexval(s[i]);
		if (v < 0) {
			return (CM_EINVAL);
		}
		if ((nib & 1) == 0) {
			b[nib / 2] = (unsigned char) (v << 4);
		} else {
			b[nib / 2] |= (unsigned char) v;
		}
		nib++;
	}
	uuid_format(b, out);
	return (CM_OK);
}

void
cm_request_id(char out[CM_RID_LEN + 1])
{
	// Per thread: a random 64-bit prefix and a counter from a random
	// start, drawn from getrandom(2) once; each id is the prefix and the
	// counter passed through splitmix64's finalizer (a bijection, so ids
	// of one thread never repeat, and they do not look sequential). A
	// system call per request would cost more than the rest of the id.
	static _Thread_local uint64_t prefix;
	static _Thread_local uint64_t seq;
	static _Thread_local int      seeded;
	unsigned char                 b[16];
	uint64_t                      z;

	CM_ASSERT(CM_RID_LEN == 2 * sizeof(b));
	if (!seeded) {
		cm_random_bytes(&prefix, sizeof(prefix));
		cm_random_bytes(&seq, sizeof(seq));
		seeded = 1;
	}
	z = ++seq;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	for (int i = 0; i < 8; i++) {
		b[i]     = (unsigned char) (prefix >> (8 * i));
		b[8 + i] = (unsigned char) (z >> (8 * i));
	}
	cm_hex(b, sizeof(b), out);
}

int
cm_request_id_ok(const char *s)
{
	size_t n = 0;

	if (s == NULL) {
		return (0);
	}
	for (; s[n] != '\0'; n++) {
		char c = s[n];
		if (n >= CM_RID_MAX ||
		    !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		        (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		        c == '-')) {
			return (0);
		}
	}
	return (n >= 1);
}

cm_err
cm_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char     *end = NULL;
	long long v;

	if (s == NULL || *s == '\0' || *s == ' ' || *s == '\t') {
		return (CM_EINVAL);
	}
	errno = 0;
	v     = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0') {
		return (CM_EINVAL);
	}
	if (v < min || v > max) {
		return (CM_EINVAL);
	}
	*out = (int64_t) v;
	return (CM_OK);
}

const char *
cm_env_str(const char *name, const char *def)
{
	const char *v = getenv(name);

	if (v == NULL || v[0] == '\0') {
		return (def);
	}
	return (v);
}

cm_err
cm_env_i64(
    const char *name, int64_t def, int64_t min, int64_t max, int64_t *out)
{
	const char *v = getenv(name);
	int64_t     n;

	if (v == NULL || v[0] == '\0') {
		*out = def;
		return (CM_OK);
	}
	if (cm_parse_i64(v, min, max, &n) != CM_OK) {
		cm_error(NULL,
		    "%s must be an integer in [%lld, %lld], got \"%.64s\"",
		    name, (long long) min, (long long) max, v);
		return (CM_EINVAL);
	}
	*out = n;
	return (CM_OK);
}

cm_err
cm_env_bool(const char *name, int def, int *out)
{
	static const char *const yes[] = { "1", "true", "yes", "on" };
	static const char *const no[]  = { "0", "false", "no", "off" };
	const char              *v     = getenv(name);

	if (v == NULL || v[0] == '\0') {
		*out = def;
		return (CM_OK);
	}
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = 1;
			return (CM_OK);
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = 0;
			return (CM_OK);
		}
	}
	cm_error(NULL, "%s must be a boolean (1/0, true/false), got \"%.64s\"",
	    name, v);
	return (CM_EINVAL);
}

// Longest unix socket path (sizeof(sockaddr_un.sun_path) - 1).
#define IPC_PATH_MAX 107

// private_dir() makes dir (0700) when missing and checks that it is ours
// alone.
static cm_err
private_dir(const char *dir)
{
	struct stat st;

	if (lstat(dir, &st) != 0) {
		if (errno != ENOENT ||
		    (mkdir(dir, 0700) != 0 && errno != EEXIST) ||
		    lstat(dir, &st) != 0) {
			cm_error(
			    NULL, "cannot make %s: %s", dir, strerror(errno));
			return (CM_EUNAVAIL);
		}
	}
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 077) != 0) {
		cm_error(NULL,
		    "%s is not a private directory of this user (owner %u, "
		    "mode %03o): refusing to use sockets in it; remove it or "
		    "set the service URLs explicitly",
		    dir, (unsigned) st.st_uid, (unsigned) (st.st_mode & 0777));
		return (CM_EPERM);
	}
	return (CM_OK);
}

cm_err
cm_default_ipc_url(const char *name, char *out, size_t outsz)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	char        dir[IPC_PATH_MAX + 1];
	int         n;
	cm_err      rv;

	if (xdg != NULL && xdg[0] == '/') {
		n = snprintf(dir, sizeof(dir), "%s/threadgate", xdg);
	} else {
		n = snprintf(dir, sizeof(dir), "/tmp/threadgate-%u",
		    (unsigned) geteuid());
	}
	if (n < 0 || (size_t) n >= sizeof(dir) ||
	    (size_t) n + strlen(name) + 7 > IPC_PATH_MAX) {
		return (CM_ETOOBIG);
	}
	if ((rv = private_dir(dir)) != CM_OK) {
		return (rv);
	}
	n = snprintf(out, outsz, "ipc://%s/%s.sock", dir, name);
	if (n < 0 || (size_t) n >= outsz) {
		return (CM_ETOOBIG);
	}
	return (CM_OK);
}

cm_err
cm_write_port_file(const char *path, int port)
{
	char  tmp[4096];
	FILE *f;
	int   ok;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int) getpid()) >=
	    (int) sizeof(tmp)) {
		cm_error(NULL, "port file path too long: %.64s...", path);
		return (CM_EINVAL);
	}
	f = fopen(tmp, "w");
	if (f == NULL) {
		cm_error(NULL, "cannot write %s: %s", tmp, strerror(errno));
		return (CM_EINVAL);
	}
	ok = fprintf(f, "%d\n", port) > 0;
	ok = (fclose(f) == 0) && ok;
	if (!ok || rename(tmp, path) != 0) {
		cm_error(NULL, "cannot write port file %s: %s", path,
		    strerror(errno));
		unlink(tmp);
		return (CM_EINVAL);
	}
	return (CM_OK);
}

void
cm_timespec_in(struct timespec *ts, clockid_t clock, int64_t ms)
{
	clock_gettime(clock, ts);
	ts->tv_sec += (time_t) (ms / 1000);
	ts->tv_nsec += (long) (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}
