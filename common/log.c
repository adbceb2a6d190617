// SPDX-License-Identifier: MIT
//
// JSON-lines logging to stderr (see log.h). Each line is built in a stack
// buffer and written with a single write(2), so concurrent threads never
// interleave within a line.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

static const char  *log_svc = "threadgate";
static cm_log_level log_min = CM_LOG_INFO;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void
cm_log_init(const char *svc, cm_log_level min_level)
{
	if (svc != NULL) {
		log_svc = svc;
	}
	log_min = min_level;
}

cm_log_level
cm_log_level_from_env(void)
{
	const char *v = getenv("LOG_LEVEL");

	if (v == NULL) {
		return (CM_LOG_INFO);
	}
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(v, level_names[i]) == 0) {
			return ((cm_log_level) i);
		}
	}
	return (CM_LOG_INFO);
}

// Appends s JSON-escaped to buf at *pos, never past cap-1 bytes. Returns
// without writing a partial escape sequence.
static void
append_escaped(char *buf, size_t cap, size_t *pos, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t            p     = *pos;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char) *s;
		char          esc[7];
		size_t        n;

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char) c;
			n      = 2;
		} else if (c == '\n') {
			memcpy(esc, "\\n", 2);
			n = 2;
		} else if (c == '\t') {
			memcpy(esc, "\\t", 2);
			n = 2;
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 0xf];
			n      = 6;
		} else {
			esc[0] = (char) c;
			n      = 1;
		}
		if (p + n >= cap) {
			break;
		}
		memcpy(buf + p, esc, n);
		p += n;
	}
	*pos = p;
}

static void
append_raw(char *buf, size_t cap, size_t *pos, const char *s)
{
	size_t n = strlen(s);

	if (*pos + n >= cap) {
		n = cap - *pos - 1;
	}
	memcpy(buf + *pos, s, n);
	*pos += n;
}

void
cm_log(cm_log_level lvl, const char *rid, const char *fmt, ...)
{
	char            line[CM_LOG_LINE_MAX];
	char            msg[CM_LOG_LINE_MAX];
	char            ts[64];
	struct timespec now;
	struct tm       tm;
	size_t          pos = 0;
	va_list         ap;

	if (lvl < log_min || lvl > CM_LOG_ERROR) {
		return;
	}
	va_start(ap, fmt);
	(void) vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, (long) (now.tv_nsec / 1000) % 1000000);

	// Reserve room for the closing `"}\n`.
	const size_t cap = sizeof(line) - 3;
	append_raw(line, cap, &pos, "{\"ts\":\"");
	append_raw(line, cap, &pos, ts);
	append_raw(line, cap, &pos, "\",\"level\":\"");
	append_raw(line, cap, &pos, level_names[lvl]);
	append_raw(line, cap, &pos, "\",\"svc\":\"");
	append_escaped(line, cap, &pos, log_svc);
	if (rid != NULL && rid[0] != '\0') {
		append_raw(line, cap, &pos, "\",\"rid\":\"");
		append_escaped(line, cap, &pos, rid);
	}
	append_raw(line, cap, &pos, "\",\"msg\":\"");
	append_escaped(line, cap, &pos, msg);
	memcpy(line + pos, "\"}\n", 3);
	pos += 3;
	(void) !write(STDERR_FILENO, line, pos);
}

void
cm_assert_fail(const char *expr, const char *file, int line)
{
	cm_log(CM_LOG_ERROR, NULL, "assertion failed: %s at %s:%d", expr, file,
	    line);
	abort();
}
