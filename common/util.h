// SPDX-License-Identifier: MIT
//
// Small helpers shared by every service: time, UUIDs, request ids, checked
// number parsing and environment configuration.
#ifndef CM_UTIL_H
#define CM_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/err.h"

// Text length of a canonical UUID, without the NUL.
#define CM_UUID_LEN 36
// Length of a request id we generate (32 hex chars), without the NUL.
#define CM_RID_LEN 32
// Longest request id accepted from a client or the wire, in bytes.
#define CM_RID_MAX 64
// Buffer size for cm_time_iso8601() output, with the NUL.
#define CM_ISO8601_SIZE 40

/** cm_now_us() returns the wall clock in Unix microseconds. */
int64_t cm_now_us(void);
/** cm_now_ms() returns the wall clock in Unix milliseconds. */
int64_t cm_now_ms(void);
/** cm_mono_ms() returns a monotonic clock in milliseconds. */
int64_t cm_mono_ms(void);
/** cm_mono_us() returns the same monotonic clock in microseconds. */
int64_t cm_mono_us(void);
/** cm_cmp_i64() orders two int64_t for qsort(). */
int cm_cmp_i64(const void *a, const void *b);

/**
 * cm_time_iso8601() formats Unix microseconds as
 * "2024-07-18T18:35:15.540834+00:00" into buf (CM_ISO8601_SIZE bytes).
 * Returns buf.
 */
char *cm_time_iso8601(int64_t us, char buf[CM_ISO8601_SIZE]);

/**
 * cm_random_bytes() fills buf with n bytes from the kernel CSPRNG
 * (getrandom). Aborts if the kernel cannot supply them.
 */
void cm_random_bytes(void *buf, size_t n);

/** cm_uuid4() writes a random UUID (v4) as 36 lower-case chars + NUL. */
void cm_uuid4(char out[CM_UUID_LEN + 1]);
/**
 * cm_uuid7() writes a time-ordered UUID (v7: 48-bit Unix ms, then random)
 * as 36 lower-case chars + NUL. Ids made later sort after earlier ones.
 */
void cm_uuid7(char out[CM_UUID_LEN + 1]);
/**
 * cm_uuid_parse() checks that s (len bytes, not NUL-terminated needed) is a
 * UUID: 36 chars 8-4-4-4-12 hex (either case), or 32 hex chars without
 * dashes. On success writes the canonical lower-case dashed form into out
 * and returns CM_OK; else CM_EINVAL and out is untouched.
 */
cm_err cm_uuid_parse(const char *s, size_t len, char out[CM_UUID_LEN + 1]);

/**
 * cm_request_id() writes a new request id: 32 hex chars + NUL, unique per
 * process thread (a random per-thread prefix and a scrambled counter; no
 * system call after a thread's first id). Not a secret. Thread-safe.
 */
void cm_request_id(char out[CM_RID_LEN + 1]);

/**
 * cm_request_id_ok() is 1 when s is a request id we accept from a client
 * or a peer (X-Request-Id): 1..CM_RID_MAX chars of [A-Za-z0-9._-], so it is
 * safe to log and to pass on; else 0 (NULL allowed).
 */
int cm_request_id_ok(const char *s);

/**
 * cm_parse_i64() parses all of s (base 10, optional sign, no spaces) into
 * *out if min <= value <= max. Returns CM_OK, or CM_EINVAL (not a number,
 * trailing bytes, out of range); *out is written only on success.
 */
cm_err cm_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/**
 * cm_timespec_in() sets *ts to clock (CLOCK_MONOTONIC, CLOCK_REALTIME) now
 * plus ms milliseconds: the absolute deadline pthread_cond_timedwait()
 * takes (with a condvar on that clock).
 */
void cm_timespec_in(struct timespec *ts, clockid_t clock, int64_t ms);

/**
 * cm_write_port_file() writes port and a newline to path atomically (a
 * temporary file beside it, then rename), for tests and scripts that start
 * a service on port 0. Logs and returns CM_EINVAL on failure, else CM_OK.
 */
cm_err cm_write_port_file(const char *path, int port);

/**
 * cm_env_str() returns getenv(name) when set and non-empty, else def
 * (borrowed; do not free).
 */
const char *cm_env_str(const char *name, const char *def);

// Longest ipc:// URL cm_default_ipc_url() makes (a unix socket path is
// at most 107 bytes; "ipc://" comes on top).
#define CM_IPC_URL_MAX 128

/**
 * cm_default_ipc_url() writes the default nng URL of the service called
 * name ("auth", "threads") into out: "ipc://<dir>/<name>.sock" where dir
 * is private to the user running us - $XDG_RUNTIME_DIR/threadgate when
 * XDG_RUNTIME_DIR is an absolute path, else /tmp/threadgate-<uid> - so no
 * other local user can put a socket there and play the service. dir is
 * made (mode 0700) when missing; it must then be a directory (not a
 * symlink) owned by us that nobody else may enter (mode & 077 == 0).
 * Returns CM_OK; CM_EPERM (logged, naming the directory) when it is not;
 * CM_ETOOBIG when the path does not fit out (outsz bytes, at most
 * CM_IPC_URL_MAX are needed) or a socket path; CM_EUNAVAIL when it
 * cannot be made. Both ends of a connection compute the same URL when
 * they run as the same user with the same environment.
 */
cm_err cm_default_ipc_url(const char *name, char *out, size_t outsz);

/**
 * cm_env_i64() reads an integer variable: unset or empty gives def; a
 * value that is not an integer in [min, max] is CM_EINVAL (and a log line
 * naming the variable), so a typo stops the service at start-up.
 */
cm_err cm_env_i64(
    const char *name, int64_t def, int64_t min, int64_t max, int64_t *out);

/**
 * cm_env_bool() reads 1/true/yes/on or 0/false/no/off (any case); unset
 * gives def; anything else is CM_EINVAL.
 */
cm_err cm_env_bool(const char *name, int def, int *out);

/** cm_hex() writes 2n lower-case hex chars + NUL of bytes into out. */
void cm_hex(const unsigned char *bytes, size_t n, char *out);

/** cm_hexval() is the value of hex digit c (either case), or -1. */
int cm_hexval(char c);

/**
 * cm_unhex() decodes exactly 2n hex chars (slen must be 2n) of s into out
 * (n bytes). Returns CM_OK, or CM_EINVAL (wrong length, non-hex char); out
 * may be partly written on error.
 */
cm_err cm_unhex(const char *s, size_t slen, unsigned char *out, size_t n);

#endif // CM_UTIL_H
