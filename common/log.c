// SPDX-License-Identifier: MIT
//
// Logging to stderr in JSON lines or readable text (see log.h). Each line
// is built in a stack buffer. After cm_log_init() info and debug lines go
// into one process-wide buffer that a writer thread writes out, many
// lines per write(2), at most LOG_FLUSH_MS after the first of them: a busy
// gateway's access lines then cost a memcpy each instead of a system call
// and a wake-up of whatever reads the pipe. Warnings and errors are
// written at once (after what is buffered, so the order holds), and so is
// everything before cm_log_init() and at exit. Lines of concurrent threads
// never interleave. The per-thread request context (rid, traceparent) is
// a pair of thread-local borrowed pointers: setting and reading it costs
// nothing on the hot path.
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

static const char   *log_svc = "threadgate";
static cm_log_level  log_min = CM_LOG_INFO;
static cm_log_format log_fmt = CM_LOG_JSON;

static _Thread_local const char *ctx_rid;
static _Thread_local const char *ctx_tp;

// The buffer of lines not written yet: its size bounds the memory logs
// hold (a burst beyond it is written at once by the logging thread), and
// LOG_FLUSH_MS bounds how late a line shows up.
#define LOG_BUF_CAP  (256 * 1024)
#define LOG_FLUSH_MS 10

static struct {
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	char           *buf;
	size_t          len;
	int             on; // buffering: cm_log_init() started the writer
} pending = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0,
	0 };

static const char *const level_names[] = { "debug", "info", "warn", "error" };
// Text format: upper case, padded to one width so messages line up.
static const char *const level_text[] = { "DEBUG", "INFO ", "WARN ", "ERROR" };

static void
write_all(const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(STDERR_FILENO, p, n);

		if (w < 0) {
			if (errno == EINTR) {
				continue;
			}
			return; // stderr gone: nothing else to tell it to
		}
		p += w;
		n -= (size_t) w;
	}
}

// The writer: sleeps until a line lands in an empty buffer, lets more
// follow for LOG_FLUSH_MS, writes them all. Idle, it never wakes.
static void *
writer_main(void *arg)
{
	(void) arg;
	pthread_mutex_lock(&pending.mu);
	for (;;) {
		struct timespec ts;

		while (pending.len == 0) {
			pthread_cond_wait(&pending.cv, &pending.mu);
		}
		cm_timespec_in(&ts, CLOCK_REALTIME, LOG_FLUSH_MS);
		// Only the deadline ends this wait; appenders never signal
		// while the buffer is not empty.
		while (pthread_cond_timedwait(&pending.cv, &pending.mu, &ts) ==
		    0) {
		}
		write_all(pending.buf, pending.len);
		pending.len = 0;
	}
	return (NULL);
}

void
cm_log_flush(void)
{
	pthread_mutex_lock(&pending.mu);
	write_all(pending.buf, pending.len);
	pending.len = 0;
	pthread_mutex_unlock(&pending.mu);
}

static void
at_exit_flush(void)
{
	cm_log_flush();
}

// start_writer starts the writer thread with every signal blocked (the
// services take SIGTERM with sigwait in main; no signal may land here).
static void
start_writer(void)
{
	pthread_t th;
	sigset_t  all;
	sigset_t  old;

	if (pending.on) {
		return;
	}
	pending.buf = malloc(LOG_BUF_CAP);
	if (pending.buf == NULL) {
		return; // unbuffered, then
	}
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	if (pthread_create(&th, NULL, writer_main, NULL) == 0) {
		pthread_detach(th);
		pending.on = 1;
		atexit(at_exit_flush);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

// emit writes one finished line: buffered (info, debug) or at once.
static void
emit(cm_log_level lvl, const char *line, size_t n)
{
	if (!pending.on) {
		write_all(line, n);
		return;
	}
	pthread_mutex_lock(&pending.mu);
	if (lvl >= CM_LOG_WARN || pending.len + n > LOG_BUF_CAP) {
		write_all(pending.buf, pending.len);
		pending.len = 0;
		write_all(line, n);
	} else {
		memcpy(pending.buf + pending.len, line, n);
		if (pending.len == 0) {
			pthread_cond_signal(&pending.cv);
		}
		pending.len += n;
	}
	pthread_mutex_unlock(&pending.mu);
}

void
cm_log_init(const char *svc, cm_log_level min_level)
{
	const char *f = getenv("LOG_FORMAT");

	if (svc != NULL) {
		log_svc = svc;
	}
	log_min = min_level;
	log_fmt = cm_log_format_from_env();
	start_writer();
	if (f != NULL && f[0] != '\0' && strcasecmp(f, "json") != 0 &&
	    strcasecmp(f, "text") != 0) {
		cm_warn(NULL, "LOG_FORMAT=%s is not json or text; using %s", f,
		    log_fmt == CM_LOG_TEXT ? "text" : "json");
	}
}

const char *
cm_log_service(void)
{
	return (log_svc);
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

cm_log_format
cm_log_format_from_env(void)
{
	const char *v = getenv("LOG_FORMAT");

	if (v != NULL && strcasecmp(v, "json") == 0) {
		return (CM_LOG_JSON);
	}
	if (v != NULL && strcasecmp(v, "text") == 0) {
		return (CM_LOG_TEXT);
	}
	return (isatty(STDERR_FILENO) ? CM_LOG_TEXT : CM_LOG_JSON);
}

void
cm_log_set_format(cm_log_format f)
{
	log_fmt = f;
}

cm_log_format
cm_log_get_format(void)
{
	return (log_fmt);
}

int
cm_log_enabled(cm_log_level lvl)
{
	return (lvl >= log_min && lvl <= CM_LOG_ERROR);
}

// ---------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------

void
cm_log_ctx_set(const char *rid, const char *traceparent)
{
	ctx_rid = rid;
	ctx_tp  = traceparent;
}

void
cm_log_ctx_clear(void)
{
	ctx_rid = NULL;
	ctx_tp  = NULL;
}

const char *
cm_log_ctx_rid(void)
{
	return (ctx_rid != NULL ? ctx_rid : "");
}

const char *
cm_log_ctx_traceparent(void)
{
	return (ctx_tp != NULL ? ctx_tp : "");
}

// ---------------------------------------------------------------------
// W3C traceparent
// ---------------------------------------------------------------------

// 1 when s[0..n) are lowercase hex digits, not all '0' when nonzero is set.
static int
lower_hex(const char *s, size_t n, int nonzero)
{
	int any = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
			return (0);
		}
		any |= (c != '0');
	}
	return (!nonzero || any);
}

cm_err
cm_traceparent_parse(const char *in, char out[CM_TRACEPARENT_LEN + 1])
{
	size_t n;

	out[0] = '\0';
	if (in == NULL) {
		return (CM_EINVAL);
	}
	while (*in == ' ' || *in == '\t') {
		in++;
	}
	n = strlen(in);
	while (n > 0 && (in[n - 1] == ' ' || in[n - 1] == '\t')) {
		n--;
	}
	// version "-" trace-id "-" parent-id "-" flags
	if (n < CM_TRACEPARENT_LEN || !lower_hex(in, 2, 0) ||
	    strncmp(in, "ff", 2) == 0 || in[2] != '-' ||
	    !lower_hex(in + 3, 32, 1) || in[35] != '-' ||
	    !lower_hex(in + 36, 16, 1) || in[52] != '-' ||
	    !lower_hex(in + 53, 2, 0)) {
		return (CM_EINVAL);
	}
	if (strncmp(in, "00", 2) == 0
	        ? n != CM_TRACEPARENT_LEN
	        : (n > CM_TRACEPARENT_LEN && in[CM_TRACEPARENT_LEN] != '-')) {
		return (CM_EINVAL);
	}
	memcpy(out, "00", 2);
	memcpy(out + 2, in + 2, CM_TRACEPARENT_LEN - 2);
	out[CM_TRACEPARENT_LEN] = '\0';
	return (CM_OK);
}

// ---------------------------------------------------------------------
// Line building
// ---------------------------------------------------------------------

// Longest output of one JSON field value (rid, a field string): with at
// most CM_LOG_FIELDS_MAX fields they always fit a line, so only the message
// (written last) can be cut.
#define LOG_VALUE_MAX 512

typedef struct lbuf {
	char  *b;
	size_t cap; // usable bytes (room for the line end is reserved)
	size_t pos;
} lbuf;

static void
put_raw(lbuf *l, const char *s, size_t n)
{
	if (l->pos + n > l->cap) {
		n = l->cap - l->pos;
	}
	memcpy(l->b + l->pos, s, n);
	l->pos += n;
}

static void
put(lbuf *l, const char *s)
{
	put_raw(l, s, strlen(s));
}

// Appends s escaped for a JSON string, at most max bytes of output;
// never a partial escape.
static void
put_json(lbuf *l, const char *s, size_t max)
{
	static const char hex[] = "0123456789abcdef";
	size_t            end = l->pos + max < l->cap ? l->pos + max : l->cap;

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
		if (l->pos + n > end) {
			break;
		}
		memcpy(l->b + l->pos, esc, n);
		l->pos += n;
	}
}

// Appends s for the text format: control bytes escaped so the event stays
// on one line; with quote set, '"' and '\\' are escaped too.
static void
put_text(lbuf *l, const char *s, int quote)
{
	static const char hex[] = "0123456789abcdef";

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char) *s;
		char          esc[4];
		size_t        n;

		if (c == '\n') {
			memcpy(esc, "\\n", 2);
			n = 2;
		} else if (c == '\t') {
			memcpy(esc, "\\t", 2);
			n = 2;
		} else if (c < 0x20 || c == 0x7f) {
			esc[0] = '\\';
			esc[1] = 'x';
			esc[2] = hex[c >> 4];
			esc[3] = hex[c & 0xf];
			n      = 4;
		} else if (quote && (c == '"' || c == '\\')) {
			esc[0] = '\\';
			esc[1] = (char) c;
			n      = 2;
		} else {
			esc[0] = (char) c;
			n      = 1;
		}
		if (l->pos + n > l->cap) {
			break;
		}
		memcpy(l->b + l->pos, esc, n);
		l->pos += n;
	}
}

// A text value needs quotes when empty or holding blanks, '"' or '='.
static int
needs_quotes(const char *s)
{
	if (s[0] == '\0') {
		return (1);
	}
	return (strpbrk(s, " \t\"=") != NULL);
}

static void
fmt_ms(char *buf, size_t len, int64_t us)
{
	int64_t a = us < 0 ? -us : us;

	snprintf(buf, len, "%s%lld.%03lld", us < 0 ? "-" : "",
	    (long long) (a / 1000), (long long) (a % 1000));
}

static void
field_value(const cm_log_field *f, char *num, size_t numlen)
{
	if (f->type == CM_LOG_F_MS) {
		fmt_ms(num, numlen, f->num);
	} else {
		snprintf(num, numlen, "%lld", (long long) f->num);
	}
}

static void
build_json(lbuf *l, cm_log_level lvl, const struct timespec *now,
    const struct tm *tm, const char *rid, const char *tp,
    const cm_log_field *fields, size_t n, const char *msg)
{
	char ts[64];

	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
	    tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday, tm->tm_hour,
	    tm->tm_min, tm->tm_sec, (long) (now->tv_nsec / 1000) % 1000000);
	put(l, "{\"ts\":\"");
	put(l, ts);
	put(l, "\",\"level\":\"");
	put(l, level_names[lvl]);
	put(l, "\",\"svc\":\"");
	put_json(l, log_svc, LOG_VALUE_MAX);
	put(l, "\"");
	if (rid != NULL && rid[0] != '\0') {
		put(l, ",\"rid\":\"");
		put_json(l, rid, LOG_VALUE_MAX);
		put(l, "\"");
	}
	if (tp != NULL && strlen(tp) == CM_TRACEPARENT_LEN) {
		put(l, ",\"trace_id\":\"");
		put_raw(l, tp + 3, 32);
		put(l, "\",\"span_id\":\"");
		put_raw(l, tp + 36, 16);
		put(l, "\"");
	}
	for (size_t i = 0; i < n; i++) {
		char num[32];

		put(l, ",\"");
		put(l, fields[i].key);
		put(l, "\":");
		if (fields[i].type == CM_LOG_F_STR) {
			put(l, "\"");
			put_json(l, fields[i].str != NULL ? fields[i].str : "",
			    LOG_VALUE_MAX);
			put(l, "\"");
		} else {
			field_value(&fields[i], num, sizeof(num));
			put(l, num);
		}
	}
	// The message goes last: only it can be long, so a cut line is cut
	// inside it and still closes as valid JSON.
	put(l, ",\"msg\":\"");
	put_json(l, msg, l->cap);
}

static void
build_text(lbuf *l, cm_log_level lvl, const struct timespec *now,
    const struct tm *tm, const char *rid, const char *tp,
    const cm_log_field *fields, size_t n, const char *msg)
{
	char ts[64];

	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ",
	    tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday, tm->tm_hour,
	    tm->tm_min, tm->tm_sec, (long) (now->tv_nsec / 1000000) % 1000);
	put(l, ts);
	put(l, level_text[lvl]);
	put(l, " ");
	put_text(l, log_svc, 0);
	put(l, ": ");
	put_text(l, msg, 0);
	for (size_t i = 0; i < n; i++) {
		char num[32];

		if (fields[i].json_only) {
			continue;
		}
		put(l, " ");
		put(l, fields[i].key);
		put(l, "=");
		if (fields[i].type == CM_LOG_F_STR) {
			const char *v =
			    fields[i].str != NULL ? fields[i].str : "";
			if (v[0] == '\0') {
				put(l, "-");
			} else if (needs_quotes(v)) {
				put(l, "\"");
				put_text(l, v, 1);
				put(l, "\"");
			} else {
				put_text(l, v, 0);
			}
		} else {
			field_value(&fields[i], num, sizeof(num));
			put(l, num);
		}
	}
	if (rid != NULL && rid[0] != '\0') {
		put(l, " rid=");
		put_text(l, rid, 0);
	}
	if (tp != NULL && strlen(tp) == CM_TRACEPARENT_LEN) {
		put(l, " trace=");
		put_raw(l, tp + 3, 32);
	}
}

static void vlog(cm_log_level lvl, const char *rid, const cm_log_field *fields,
    size_t n, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

static void
vlog(cm_log_level lvl, const char *rid, const cm_log_field *fields, size_t n,
    const char *fmt, va_list ap)
{
	char            line[CM_LOG_LINE_MAX];
	char            msg[CM_LOG_LINE_MAX];
	struct timespec now;
	struct tm       tm;
	lbuf            l;

	if (lvl < log_min || lvl > CM_LOG_ERROR) {
		return;
	}
	(void) vsnprintf(msg, sizeof(msg), fmt, ap);
	if (rid == NULL || rid[0] == '\0') {
		rid = ctx_rid;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	// Reserve room for the newline.
	l.b   = line;
	l.cap = sizeof(line) - 1;
	l.pos = 0;
	if (n > CM_LOG_FIELDS_MAX) {
		n = CM_LOG_FIELDS_MAX;
	}
	if (log_fmt == CM_LOG_TEXT) {
		build_text(&l, lvl, &now, &tm, rid, ctx_tp, fields, n, msg);
	} else {
		// Room for the closing quote and brace, whatever gets cut.
		l.cap -= 2;
		build_json(&l, lvl, &now, &tm, rid, ctx_tp, fields, n, msg);
		line[l.pos++] = '"';
		line[l.pos++] = '}';
	}
	line[l.pos++] = '\n';
	emit(lvl, line, l.pos);
}

void
cm_log(cm_log_level lvl, const char *rid, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(lvl, rid, NULL, 0, fmt, ap);
	va_end(ap);
}

void
cm_logf(cm_log_level lvl, const char *rid, const cm_log_field *fields,
    size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(lvl, rid, fields, n, fmt, ap);
	va_end(ap);
}

void
cm_assert_fail(const char *expr, const char *file, int line)
{
	cm_log(CM_LOG_ERROR, NULL, "assertion failed: %s at %s:%d", expr, file,
	    line);
	abort();
}
