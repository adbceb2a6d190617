// SPDX-License-Identifier: MIT
//
// Logging: one JSON object per line on stderr,
//   {"ts":"2026-11-27T02:40:12.123456Z","level":"info","svc":"gateway",
//    "rid":"<request id>","msg":"<text>"}
// "rid" is omitted when NULL/empty. The message is formatted with printf
// rules and JSON-escaped; lines are written with one write(2) so lines of
// concurrent threads never interleave. Messages longer than CM_LOG_LINE_MAX
// are truncated. Never log tokens, passwords or keys.
#ifndef CM_LOG_H
#define CM_LOG_H

// Longest log line written, in bytes (longer messages are cut).
#define CM_LOG_LINE_MAX 4096

typedef enum cm_log_level {
	CM_LOG_DEBUG = 0,
	CM_LOG_INFO  = 1,
	CM_LOG_WARN  = 2,
	CM_LOG_ERROR = 3,
} cm_log_level;

/**
 * cm_log_init() sets the service name written as "svc" and the minimum
 * level. Call once from main() before any thread starts. The level comes
 * from LOG_LEVEL (debug|info|warn|error, default info) when level_env is
 * non-zero.
 */
void cm_log_init(const char *svc, cm_log_level min_level);

/** cm_log_level_from_env() reads LOG_LEVEL; default CM_LOG_INFO. */
cm_log_level cm_log_level_from_env(void);

/**
 * cm_log() writes one line if lvl >= the minimum level. rid may be NULL.
 * Thread-safe.
 */
void cm_log(cm_log_level lvl, const char *rid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define cm_debug(rid, ...) cm_log(CM_LOG_DEBUG, (rid), __VA_ARGS__)
#define cm_info(rid, ...)  cm_log(CM_LOG_INFO, (rid), __VA_ARGS__)
#define cm_warn(rid, ...)  cm_log(CM_LOG_WARN, (rid), __VA_ARGS__)
#define cm_error(rid, ...) cm_log(CM_LOG_ERROR, (rid), __VA_ARGS__)

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
