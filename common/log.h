// SPDX-License-Identifier: MIT
//
// Logging: one line per event on stderr, in one of two formats chosen by
// LOG_FORMAT (read by cm_log_init()):
//
//   json  one JSON object per line, for log collectors:
//         {"ts":"2026-11-27T02:40:12.123456Z","level":"info",
//          "svc":"gateway","rid":"<request id>","msg":"<text>",
//          "trace_id":"<32 hex>","span_id":"<16 hex>", <fields...>}
//   text  for people at a terminal:
//         2026-11-27T02:40:12.123Z INFO  gateway: <text> k=v ... rid=<id>
//
// The default is text when stderr is a terminal and JSON otherwise (a
// container runtime, a file, a pipe). "rid" is omitted when NULL/empty;
// trace_id/span_id appear while the calling thread has a traceparent in its
// log context (cm_log_ctx_set()). The message is formatted with printf
// rules and escaped (JSON escapes; in text, control bytes become \n, \t,
// \xNN, so every event stays on one line). Lines of concurrent threads
// never interleave. After cm_log_init(), info and debug lines are
// buffered and written in batches at most 10 ms after they were logged
// (warnings and errors at once, in order, and everything at exit): see
// log.c. Lines longer than CM_LOG_LINE_MAX are truncated. Never log
// tokens, passwords or keys.
#ifndef CM_LOG_H
#define CM_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

// Longest log line written, in bytes (longer messages are cut).
#define CM_LOG_LINE_MAX 4096
// Most extra fields one line carries (cm_logf(); more are dropped). Each
// field value is cut at 512 bytes, so fields always fit in a line.
#define CM_LOG_FIELDS_MAX 6

typedef enum cm_log_level {
	CM_LOG_DEBUG = 0,
	CM_LOG_INFO  = 1,
	CM_LOG_WARN  = 2,
	CM_LOG_ERROR = 3,
} cm_log_level;

typedef enum cm_log_format {
	CM_LOG_JSON = 0,
	CM_LOG_TEXT = 1,
} cm_log_format;

/**
 * cm_log_init() sets the service name written as "svc", the minimum level
 * and the format from LOG_FORMAT (see cm_log_format_from_env()). Call once
 * from main() before any thread starts.
 */
void cm_log_init(const char *svc, cm_log_level min_level);

/**
 * cm_log_flush() writes every buffered line now (e.g. before a process
 * hands its stderr to someone else). Thread-safe.
 */
void cm_log_flush(void);

/** cm_log_service() is the service name given to cm_log_init(). */
const char *cm_log_service(void);

/** cm_log_level_from_env() reads LOG_LEVEL; default CM_LOG_INFO. */
cm_log_level cm_log_level_from_env(void);

/**
 * cm_log_format_from_env() reads LOG_FORMAT: "json" or "text" (any case).
 * Unset, empty or anything else gives text when stderr is a terminal and
 * JSON otherwise (an unknown value is reported once by cm_log_init()).
 */
cm_log_format cm_log_format_from_env(void);

/**
 * cm_log_set_format() switches the format (tests; main() before threads
 * start).
 */
void cm_log_set_format(cm_log_format f);

/** cm_log_get_format() is the format in use. */
cm_log_format cm_log_get_format(void);

/**
 * cm_log() writes one line if lvl >= the minimum level. rid may be NULL:
 * the calling thread's context rid (cm_log_ctx_set()) is used then.
 * Thread-safe.
 */
void cm_log(cm_log_level lvl, const char *rid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define cm_debug(rid, ...) cm_log(CM_LOG_DEBUG, (rid), __VA_ARGS__)
#define cm_info(rid, ...)  cm_log(CM_LOG_INFO, (rid), __VA_ARGS__)
#define cm_warn(rid, ...)  cm_log(CM_LOG_WARN, (rid), __VA_ARGS__)
#define cm_error(rid, ...) cm_log(CM_LOG_ERROR, (rid), __VA_ARGS__)

/** cm_log_enabled() is 1 when a line at lvl would be written. */
int cm_log_enabled(cm_log_level lvl);

// ---------------------------------------------------------------------
// Structured fields
// ---------------------------------------------------------------------

typedef enum cm_log_ftype {
	CM_LOG_F_STR = 0, // str, quoted in JSON; "-" in text when empty
	CM_LOG_F_INT,     // num, a JSON number
	CM_LOG_F_MS,      // num microseconds, shown as milliseconds (3 dp)
} cm_log_ftype;

/**
 * cm_log_field is one key/value pair added to a line. key must be a
 * plain identifier ([a-z0-9_]) and not one of the fixed keys (ts, level,
 * svc, rid, msg, trace_id, span_id). json_only hides the field in the text
 * format (where the message already says it).
 */
typedef struct cm_log_field {
	const char  *key;
	cm_log_ftype type;
	const char  *str; // CM_LOG_F_STR; NULL is written as ""
	int64_t      num; // CM_LOG_F_INT, CM_LOG_F_MS
	int          json_only;
} cm_log_field;

/**
 * cm_logf() is cm_log() with n extra fields (fields may be NULL when n is
 * 0). Thread-safe.
 */
void cm_logf(cm_log_level lvl, const char *rid, const cm_log_field *fields,
    size_t n, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

// ---------------------------------------------------------------------
// Per-thread request context
// ---------------------------------------------------------------------

/**
 * cm_log_ctx_set() makes rid and traceparent (a validated W3C value, see
 * cm_traceparent_parse(); either may be NULL or "") the calling thread's
 * log context until cm_log_ctx_clear(): lines logged with a NULL rid get
 * this rid, and every line gets trace_id/span_id. The strings are
 * borrowed and must stay valid until cleared. The rpc server sets it
 * around each handler call, so a service's logs carry the request's ids
 * without passing them around. Also read by outbound HTTP clients to send
 * X-Request-Id and traceparent on.
 */
void cm_log_ctx_set(const char *rid, const char *traceparent);

/** cm_log_ctx_clear() empties the calling thread's log context. */
void cm_log_ctx_clear(void);

/** cm_log_ctx_rid() is the context rid of the calling thread, or "". */
const char *cm_log_ctx_rid(void);

/**
 * cm_log_ctx_traceparent() is the context traceparent of the calling
 * thread, or "".
 */
const char *cm_log_ctx_traceparent(void);

// ---------------------------------------------------------------------
// W3C Trace Context
// ---------------------------------------------------------------------

// Length of a version-00 traceparent ("00-<32 hex>-<16 hex>-<2 hex>").
#define CM_TRACEPARENT_LEN 55

/**
 * cm_traceparent_parse() validates a traceparent header value (W3C Trace
 * Context, level 1): version 2 lowercase hex other than "ff"; trace-id 32
 * lowercase hex, not all zero; parent-id 16 lowercase hex, not all zero;
 * flags 2 lowercase hex; version 00 is exactly 55 chars, a higher version
 * may carry more after a '-'. Leading and trailing blanks are ignored. On
 * success writes the 55-char version-00 form (trace-id, parent-id and
 * flags as received) into out and returns CM_OK; else CM_EINVAL and out
 * is "". Thread-safe.
 */
cm_err cm_traceparent_parse(const char *in, char out[CM_TRACEPARENT_LEN + 1]);

/**
 * CM_ASSERT(x) stays enabled in release builds: on failure it logs
 * file:line and aborts. Only for programmer bugs, never for input.
 */
#define CM_ASSERT(x)                                            \
	do {                                                    \
		if (!(x)) {                                     \
			cm_assert_fail(#x, __FILE__, __LINE__); \
		}                                               \
	} while (0)

void cm_assert_fail(const char *expr, const char *file, int line)
    __attribute__((noreturn));

#endif // CM_LOG_H
