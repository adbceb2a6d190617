// SPDX-License-Identifier: MIT
//
// The JSON writer the gateway renders replies with (gw_jw in gw.h).
//
// Why not jansson: the thread-service hands us JSON text (values,
// metadata, config) that can be megabytes of tiny numbers. Parsing it
// into a jansson tree costs ~50 bytes of heap per number (8 MiB of
// "[0,0,..." became ~400 MB per request, issue 10), only to print it
// again. Here embedded JSON text is checked and copied in one pass with
// O(1) memory besides the output (a 64-level container stack), so a
// reply costs about its own size once more. The output is exactly what
// jansson's JSON_COMPACT dump prints for the same values, except that
// numbers and string escapes inside embedded JSON are copied as the
// thread-service wrote them (it writes them with jansson).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "gateway/gw.h"

// First allocation of an output buffer; most replies are small.
#define JW_INITIAL_CAP 1024

void
gw_jw_init(gw_jw *w)
{
	memset(w, 0, sizeof(*w));
}

void
gw_jw_fini(gw_jw *w)
{
	if (w != NULL) {
		free(w->buf);
		memset(w, 0, sizeof(*w));
	}
}

char *
gw_jw_take(gw_jw *w, size_t *len)
{
	char *s;

	if (w->buf == NULL) {
		gw_jw_raw(w, "", 0);
	}
	s    = w->buf;
	*len = w->len;
	memset(w, 0, sizeof(*w));
	return (s);
}

static void
reserve(gw_jw *w, size_t n)
{
	size_t cap;

	if (w->len + n + 1 <= w->cap) {
		return;
	}
	cap = w->cap != 0 ? w->cap : JW_INITIAL_CAP;
	while (cap < w->len + n + 1) {
		cap *= 2;
	}
	w->buf = cm_xrealloc(w->buf, cap);
	w->cap = cap;
}

void
gw_jw_raw(gw_jw *w, const char *s, size_t n)
{
	reserve(w, n);
	memcpy(w->buf + w->len, s, n);
	w->len += n;
	w->buf[w->len] = '\0';
}

static void
put(gw_jw *w, char c)
{
	reserve(w, 1);
	w->buf[w->len++] = c;
	w->buf[w->len]   = '\0';
}

// sep() writes the ',' before a value or key that is not the first of its
// container (none right after a key).
static void
sep(gw_jw *w)
{
	if (w->after_key) {
		w->after_key = 0;
		return;
	}
	if (w->depth > 0 && w->depth <= GW_JW_DEPTH_MAX &&
	    w->nonempty[w->depth - 1]) {
		put(w, ',');
	}
	if (w->depth > 0 && w->depth <= GW_JW_DEPTH_MAX) {
		w->nonempty[w->depth - 1] = 1;
	}
}

static void
open_c(gw_jw *w, char c)
{
	sep(w);
	put(w, c);
	CM_ASSERT(w->depth < GW_JW_DEPTH_MAX);
	w->nonempty[w->depth++] = 0;
}

static void
close_c(gw_jw *w, char c)
{
	CM_ASSERT(w->depth > 0);
	w->depth--;
	put(w, c);
}

void
gw_jw_obj(gw_jw *w)
{
	open_c(w, '{');
}

void
gw_jw_obj_end(gw_jw *w)
{
	close_c(w, '}');
}

void
gw_jw_arr(gw_jw *w)
{
	open_c(w, '[');
}

void
gw_jw_arr_end(gw_jw *w)
{
	close_c(w, ']');
}

// utf8_len() returns the length of the valid UTF-8 sequence at s (n bytes
// available), or 0 when it is not valid (overlong, surrogate, > U+10FFFF,
// truncated).
static size_t
utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	unsigned cp;
	size_t   len;

	if (c < 0x80) {
		return (1);
	} else if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp  = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp  = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp  = c & 0x07;
	} else {
		return (0);
	}
	if (len > n) {
		return (0);
	}
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80) {
			return (0);
		}
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff))) {
		return (0);
	}
	return (len);
}

// str_out() writes s (n bytes) as a JSON string, escaped as jansson does:
// '"', '\\' and control characters; UTF-8 is copied. CM_EINVAL for
// invalid UTF-8 (w->err is set; nothing else to do).
static cm_err
str_out(gw_jw *w, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *) s;
	size_t               i = 0;

	put(w, '"');
	while (i < n) {
		size_t run = i;
		size_t k;

		while (run < n && p[run] >= 0x20 && p[run] < 0x80 &&
		    p[run] != '"' && p[run] != '\\') {
			run++;
		}
		gw_jw_raw(w, s + i, run - i);
		i = run;
		if (i >= n) {
			break;
		}
		if (p[i] >= 0x80) {
			k = utf8_len(p + i, n - i);
			if (k == 0) {
				w->err = 1;
				return (CM_EINVAL);
			}
			gw_jw_raw(w, s + i, k);
			i += k;
			continue;
		}
		switch (p[i]) {
		case '"':
			gw_jw_raw(w, "\\\"", 2);
			break;
		case '\\':
			gw_jw_raw(w, "\\\\", 2);
			break;
		case '\b':
			gw_jw_raw(w, "\\b", 2);
			break;
		case '\f':
			gw_jw_raw(w, "\\f", 2);
			break;
		case '\n':
			gw_jw_raw(w, "\\n", 2);
			break;
		case '\r':
			gw_jw_raw(w, "\\r", 2);
			break;
		case '\t':
			gw_jw_raw(w, "\\t", 2);
			break;
		default: {
			char esc[8];
			snprintf(esc, sizeof(esc), "\\u%04X", p[i]);
			gw_jw_raw(w, esc, 6);
			break;
		}
		}
		i++;
	}
	put(w, '"');
	return (CM_OK);
}

void
gw_jw_key(gw_jw *w, const char *key)
{
	sep(w);
	(void) str_out(w, key, strlen(key));
	put(w, ':');
	w->after_key = 1;
}

void
gw_jw_str(gw_jw *w, const char *s)
{
	sep(w);
	(void) str_out(w, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

void
gw_jw_int(gw_jw *w, int64_t v)
{
	char num[32];
	int  n = snprintf(num, sizeof(num), "%lld", (long long) v);

	sep(w);
	gw_jw_raw(w, num, (size_t) n);
}

void
gw_jw_real(gw_jw *w, double v)
{
	char num[40];
	int  n = snprintf(num, sizeof(num), "%.17g", v);

	// jansson prints reals with 17 significant digits and always with a
	// '.' or an exponent, so a whole number stays a real ("5.0").
	if (strpbrk(num, ".eE") == NULL && n + 2 < (int) sizeof(num)) {
		num[n++] = '.';
		num[n++] = '0';
		num[n]   = '\0';
	}
	sep(w);
	gw_jw_raw(w, num, (size_t) n);
}

void
gw_jw_null(gw_jw *w)
{
	sep(w);
	gw_jw_raw(w, "null", 4);
}

// ---------------------------------------------------------------------
// Embedded JSON text: check and copy, compacted
// ---------------------------------------------------------------------

static int
is_ws(char c)
{
	return (c == ' ' || c == '\t' || c == '\n' || c == '\r');
}

static int
is_digit(char c)
{
	return (c >= '0' && c <= '9');
}

// escape_at() returns the code unit of the "\\uXXXX" escape at p[k], or
// -1 when there is none.
static long
escape_at(const unsigned char *p, size_t n, size_t k)
{
	long v = 0;

	if (k + 5 >= n || p[k] != '\\' || p[k + 1] != 'u') {
		return (-1);
	}
	for (int h = 2; h < 6; h++) {
		int d = cm_hexval((char) p[k + h]);
		if (d < 0) {
			return (-1);
		}
		v = v * 16 + d;
	}
	return (v);
}

// copy_string() checks the JSON string at t[*i] (the opening quote) and
// copies it verbatim. Returns 0, or -1 when it is not a valid string
// (control bytes, bad escapes, unpaired surrogate escapes and invalid
// UTF-8 are refused, as jansson refuses them; so is \u0000 in an object
// key, which jansson cannot hold: key is 1 for a key).
static int
copy_string(gw_jw *w, const char *t, size_t n, size_t *i, int key)
{
	const unsigned char *p     = (const unsigned char *) t;
	size_t               start = *i;
	size_t               k     = start + 1;

	while (k < n && p[k] != '"') {
		if (p[k] < 0x20) {
			return (-1);
		}
		if (p[k] == '\\') {
			if (k + 1 >= n) {
				return (-1);
			}
			if (p[k + 1] == 'u') {
				long cp = escape_at(p, n, k);
				if (cp < 0 || (cp >= 0xdc00 && cp <= 0xdfff) ||
				    (cp == 0 && key)) {
					// bad, a lone low half, or NUL in a
					// key
					return (-1);
				}
				k += 6;
				if (cp >= 0xd800 && cp <= 0xdbff) {
					// A high surrogate needs its low half.
					long lo = escape_at(p, n, k);
					if (lo < 0xdc00 || lo > 0xdfff) {
						return (-1);
					}
					k += 6;
				}
				continue;
			}
			if (strchr("\"\\/bfnrt", p[k + 1]) == NULL ||
			    p[k + 1] == '\0') {
				return (-1);
			}
			k += 2;
			continue;
		}
		if (p[k] >= 0x80) {
			size_t len = utf8_len(p + k, n - k);
			if (len == 0) {
				return (-1);
			}
			k += len;
			continue;
		}
		k++;
	}
	if (k >= n) {
		return (-1);
	}
	gw_jw_raw(w, t + start, k + 1 - start);
	*i = k + 1;
	return (0);
}

// copy_number() checks the JSON number at t[*i] and copies it.
static int
copy_number(gw_jw *w, const char *t, size_t n, size_t *i)
{
	size_t k = *i;

	if (k < n && t[k] == '-') {
		k++;
	}
	if (k < n && t[k] == '0') {
		k++;
	} else if (k < n && t[k] >= '1' && t[k] <= '9') {
		while (k < n && is_digit(t[k])) {
			k++;
		}
	} else {
		return (-1);
	}
	if (k < n && t[k] == '.') {
		k++;
		if (k >= n || !is_digit(t[k])) {
			return (-1);
		}
		while (k < n && is_digit(t[k])) {
			k++;
		}
	}
	if (k < n && (t[k] == 'e' || t[k] == 'E')) {
		k++;
		if (k < n && (t[k] == '+' || t[k] == '-')) {
			k++;
		}
		if (k >= n || !is_digit(t[k])) {
			return (-1);
		}
		while (k < n && is_digit(t[k])) {
			k++;
		}
	}
	gw_jw_raw(w, t + *i, k - *i);
	*i = k;
	return (0);
}

static int
copy_literal(gw_jw *w, const char *t, size_t n, size_t *i)
{
	static const char *lits[] = { "true", "false", "null" };

	for (size_t l = 0; l < 3; l++) {
		size_t len = strlen(lits[l]);
		if (n - *i >= len && memcmp(t + *i, lits[l], len) == 0) {
			gw_jw_raw(w, lits[l], len);
			*i += len;
			return (0);
		}
	}
	return (-1);
}

// States of the embedded-JSON copier.
enum {
	J_VALUE = 0, // a value is expected
	J_ARR_FIRST, // after '[': a value or ']'
	J_OBJ_FIRST, // after '{': a key or '}'
	J_OBJ_KEY,   // after ',' in an object: a key
	J_COLON,     // after a key
	J_NEXT,      // after a value in a container: ',' or the closer
	J_DONE,      // the top-level value is complete
};

cm_err
gw_jw_json(gw_jw *w, const char *text, size_t n)
{
	uint64_t is_obj = 0; // bit d set: container at depth d is an object
	int      depth  = 0;
	int      st     = J_VALUE;
	size_t   i      = 0;
	size_t   mark   = w->len;

	sep(w);
	mark = w->len;
	while (i < n) {
		char c = text[i];
		int  rc;

		if (is_ws(c)) {
			i++;
			continue;
		}
		if (st == J_DONE) {
			goto bad;
		}
		if (st == J_COLON) {
			if (c != ':') {
				goto bad;
			}
			put(w, ':');
			i++;
			st = J_VALUE;
			continue;
		}
		if (st == J_NEXT) {
			int obj = (is_obj >> (depth - 1)) & 1;
			if (c == ',') {
				put(w, ',');
				i++;
				st = obj ? J_OBJ_KEY : J_VALUE;
				continue;
			}
			if (c != (obj ? '}' : ']')) {
				goto bad;
			}
			put(w, c);
			i++;
			depth--;
			st = depth == 0 ? J_DONE : J_NEXT;
			continue;
		}
		if (st == J_OBJ_FIRST || st == J_OBJ_KEY) {
			if (st == J_OBJ_FIRST && c == '}') {
				put(w, '}');
				i++;
				depth--;
				st = depth == 0 ? J_DONE : J_NEXT;
				continue;
			}
			if (c != '"' || copy_string(w, text, n, &i, 1) != 0) {
				goto bad;
			}
			st = J_COLON;
			continue;
		}
		// J_VALUE or J_ARR_FIRST
		if (st == J_ARR_FIRST && c == ']') {
			put(w, ']');
			i++;
			depth--;
			st = depth == 0 ? J_DONE : J_NEXT;
			continue;
		}
		if (c == '{' || c == '[') {
			if (depth >= CM_JSON_MAX_DEPTH) {
				goto bad;
			}
			if (c == '{') {
				is_obj |= (uint64_t) 1 << depth;
			} else {
				is_obj &= ~((uint64_t) 1 << depth);
			}
			depth++;
			put(w, c);
			i++;
			st = c == '{' ? J_OBJ_FIRST : J_ARR_FIRST;
			continue;
		}
		if (c == '"') {
			rc = copy_string(w, text, n, &i, 0);
		} else if (c == '-' || is_digit(c)) {
			rc = copy_number(w, text, n, &i);
		} else {
			rc = copy_literal(w, text, n, &i);
		}
		if (rc != 0) {
			goto bad;
		}
		st = depth == 0 ? J_DONE : J_NEXT;
	}
	if (st == J_DONE) {
		return (CM_OK);
	}
bad:
	// Leave the output as it was before this value.
	w->len = mark;
	if (w->buf != NULL) {
		w->buf[w->len] = '\0';
	}
	w->err = 1;
	return (CM_EINVAL);
}

void
gw_jw_raw_value(gw_jw *w, const char *json)
{
	sep(w);
	gw_jw_raw(w, json, strlen(json));
}
