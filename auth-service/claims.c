// SPDX-License-Identifier: MIT
//
// Strict single-pass reader for the top-level members of a JWT payload
// (claims.h). One recursive-descent pass validates the whole text against
// RFC 8259 and the limits below and remembers where each requested member
// is; nothing is allocated and nothing is built for skipped values.
// Strings are decoded later, from the remembered span, which is already
// known to be valid, so the decoders below need no error paths.
//
// Recursion is bounded by CM_JSON_MAX_DEPTH (one frame per nesting level).

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "auth-service/claims.h"
#include "common/json.h"

typedef struct scanner {
	const unsigned char *p;
	const unsigned char *end;
} scanner;

// Bytes that may appear unescaped in a string and need no further look:
// printable ASCII but '"' and '\'. The string scan's hot loop runs over
// these, so a table.
static const unsigned char plain_char[256] = {
	[0x20 ... 0x21] = 1, // '"' is 0x22
	[0x23 ... 0x5b] = 1, // '\\' is 0x5c
	[0x5d ... 0x7f] = 1,
};

static int
is_ws(unsigned char c)
{
	return (c == ' ' || c == '\t' || c == '\n' || c == '\r');
}

static void
skip_ws(scanner *s)
{
	while (s->p < s->end && is_ws(*s->p)) {
		s->p++;
	}
}

static int
hexval(unsigned char c)
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

// Reads 4 hex digits at p (p + 4 <= end checked by the caller). Returns
// the value or -1.
static long
hex4(const unsigned char *p)
{
	long v = 0;
	int  i;

	for (i = 0; i < 4; i++) {
		int h = hexval(p[i]);
		if (h < 0) {
			return (-1);
		}
		v = (v << 4) | h;
	}
	return (v);
}

// Length of the valid UTF-8 sequence at p (lead byte >= 0x80), or 0 when
// it is invalid (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
static size_t
utf8_len(const unsigned char *p, const unsigned char *end)
{
	unsigned char c  = p[0];
	unsigned char lo = 0x80, hi = 0xbf;
	size_t        n, i;

	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0) {
			lo = 0xa0; // overlong
		} else if (c == 0xed) {
			hi = 0x9f; // U+D800..U+DFFF
		}
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0) {
			lo = 0x90; // overlong
		} else if (c == 0xf4) {
			hi = 0x8f; // > U+10FFFF
		}
	} else {
		return (0);
	}
	if ((size_t) (end - p) < n || p[1] < lo || p[1] > hi) {
		return (0);
	}
	for (i = 2; i < n; i++) {
		if (p[i] < 0x80 || p[i] > 0xbf) {
			return (0);
		}
	}
	return (n);
}

// Scans a string; s->p is at the opening quote. Leaves s->p after the
// closing quote and sets *esc when the string has escapes. Returns 0, or
// -1 when it is not a valid RFC 8259 string (or contains \u0000).
static int
scan_string(scanner *s, int *esc)
{
	const unsigned char *p = s->p + 1, *end = s->end;
	long                 u, u2;
	size_t               n;

	*esc = 0;
	for (;;) {
		while (p < end && plain_char[*p]) {
			p++;
		}
		if (p >= end) {
			return (-1);
		}
		if (*p == '"') {
			s->p = p + 1;
			return (0);
		}
		if (*p == '\\') {
			*esc = 1;
			if (end - p < 2) {
				return (-1);
			}
			switch (p[1]) {
			case '"':
			case '\\':
			case '/':
			case 'b':
			case 'f':
			case 'n':
			case 'r':
			case 't':
				p += 2;
				continue;
			case 'u':
				break;
			default:
				return (-1);
			}
			if (end - p < 6 || (u = hex4(p + 2)) < 0 || u == 0) {
				return (
				    -1); // \u0000: refused, as jansson flags 0
			}
			p += 6;
			if (u >= 0xdc00 && u <= 0xdfff) {
				return (-1); // lone low surrogate
			}
			if (u >= 0xd800 && u <= 0xdbff) {
				if (end - p < 6 || p[0] != '\\' ||
				    p[1] != 'u') {
					return (-1);
				}
				u2 = hex4(p + 2);
				if (u2 < 0xdc00 || u2 > 0xdfff) {
					return (-1);
				}
				p += 6;
			}
			continue;
		}
		if (*p < 0x20) {
			return (-1); // raw control character
		}
		n = utf8_len(p, end);
		if (n == 0) {
			return (-1);
		}
		p += n;
	}
}

// Scans a number at s->p into v. Integers must fit int64_t and reals
// must not overflow a double (jansson refuses both).
static int
scan_number(scanner *s, auth_claim *v)
{
	const unsigned char *p = s->p, *end = s->end, *start = s->p;
	uint64_t             acc = 0, lim;
	int                  neg = 0, real = 0;
	double               d;
	char                *dend;

	if (p < end && *p == '-') {
		neg = 1;
		p++;
	}
	if (p >= end || *p < '0' || *p > '9') {
		return (-1);
	}
	lim = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
	if (*p == '0') {
		p++;
	} else {
		while (p < end && *p >= '0' && *p <= '9') {
			unsigned dig = (unsigned) (*p - '0');
			if (acc > (lim - dig) / 10) {
				acc = UINT64_MAX; // out of range (unless real)
			} else if (acc != UINT64_MAX) {
				acc = acc * 10 + dig;
			}
			p++;
		}
	}
	if (p < end && *p == '.') {
		real = 1;
		p++;
		if (p >= end || *p < '0' || *p > '9') {
			return (-1);
		}
		while (p < end && *p >= '0' && *p <= '9') {
			p++;
		}
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		real = 1;
		p++;
		if (p < end && (*p == '+' || *p == '-')) {
			p++;
		}
		if (p >= end || *p < '0' || *p > '9') {
			return (-1);
		}
		while (p < end && *p >= '0' && *p <= '9') {
			p++;
		}
	}
	// A top-level object never ends in a number, and strtod below needs
	// a non-number byte inside the buffer to stop at.
	if (p >= end) {
		return (-1);
	}
	if (!real) {
		if (acc == UINT64_MAX) {
			return (-1);
		}
		v->type = AUTH_CLAIM_INTEGER;
		if (!neg) {
			v->i = (int64_t) acc;
		} else if (acc == (uint64_t) INT64_MAX + 1) {
			v->i = INT64_MIN;
		} else {
			v->i = -(int64_t) acc;
		}
	} else {
		// strtod as jansson uses it, so both get the same double. It
		// stops at the byte after the number (checked above to exist).
		// With a locale whose decimal point is not '.', dend would
		// stop short and the number is refused, never misread; no
		// threadgate program calls setlocale().
		errno = 0;
		d     = strtod((const char *) start, &dend);
		if ((const unsigned char *) dend != p ||
		    ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE)) {
			return (-1);
		}
		v->type = AUTH_CLAIM_REAL;
		v->d    = d;
	}
	s->p = p;
	return (0);
}

static int
scan_literal(scanner *s, const char *lit, size_t n)
{
	if ((size_t) (s->end - s->p) < n || memcmp(s->p, lit, n) != 0) {
		return (-1);
	}
	s->p += n;
	return (0);
}

// Does the (valid) string content [b, e) decode to exactly want[0..n)?
static int span_eq(const unsigned char *b, const unsigned char *e,
    const char *want, size_t n);

static int scan_object(scanner *s, int depth, const char *const *names,
    const size_t *nlen, size_t n, auth_claim *out);

// Scans one value at s->p (whitespace already skipped) into v. depth is
// the nesting level of the container holding the value.
static int
scan_value(scanner *s, int depth, auth_claim *v)
{
	const unsigned char *start = s->p;
	int                  esc;

	if (s->p >= s->end) {
		return (-1);
	}
	switch (*s->p) {
	case '"':
		if (scan_string(s, &esc) != 0) {
			return (-1);
		}
		v->type = AUTH_CLAIM_STRING;
		break;
	case '{':
		if (depth + 1 > CM_JSON_MAX_DEPTH ||
		    scan_object(s, depth + 1, NULL, NULL, 0, NULL) != 0) {
			return (-1);
		}
		v->type = AUTH_CLAIM_OBJECT;
		break;
	case '[':
		if (depth + 1 > CM_JSON_MAX_DEPTH) {
			return (-1);
		}
		s->p++;
		skip_ws(s);
		if (s->p < s->end && *s->p == ']') {
			s->p++;
		} else {
			for (;;) {
				auth_claim e;
				if (scan_value(s, depth + 1, &e) != 0) {
					return (-1);
				}
				skip_ws(s);
				if (s->p >= s->end) {
					return (-1);
				}
				if (*s->p == ']') {
					s->p++;
					break;
				}
				if (*s->p != ',') {
					return (-1);
				}
				s->p++;
				skip_ws(s);
			}
		}
		v->type = AUTH_CLAIM_ARRAY;
		break;
	case 't':
		if (scan_literal(s, "true", 4) != 0) {
			return (-1);
		}
		v->type = AUTH_CLAIM_TRUE;
		break;
	case 'f':
		if (scan_literal(s, "false", 5) != 0) {
			return (-1);
		}
		v->type = AUTH_CLAIM_FALSE;
		break;
	case 'n':
		if (scan_literal(s, "null", 4) != 0) {
			return (-1);
		}
		v->type = AUTH_CLAIM_NULL;
		break;
	default:
		if (scan_number(s, v) != 0) {
			return (-1);
		}
		break;
	}
	v->raw = (const char *) start;
	v->len = (size_t) (s->p - start);
	return (0);
}

// Scans an object; s->p is at '{'. At the top level (n > 0) the members
// named in names (nlen: their lengths) are recorded in out. Returns 0, -1
// when invalid, -2 when valid but a recorded name occurred twice.
static int
scan_object(scanner *s, int depth, const char *const *names,
    const size_t *nlen, size_t n, auth_claim *out)
{
	int dup = 0;

	s->p++;
	skip_ws(s);
	if (s->p < s->end && *s->p == '}') {
		s->p++;
		return (0);
	}
	for (;;) {
		const unsigned char *kb;
		size_t               kn, k;
		int                  esc;
		auth_claim           v;

		if (s->p >= s->end || *s->p != '"') {
			return (-1);
		}
		kb = s->p + 1;
		if (scan_string(s, &esc) != 0) {
			return (-1);
		}
		kn = (size_t) (s->p - 1 - kb);
		skip_ws(s);
		if (s->p >= s->end || *s->p != ':') {
			return (-1);
		}
		s->p++;
		skip_ws(s);
		if (scan_value(s, depth, &v) != 0) {
			return (-1);
		}
		// Keep validating after a duplicate: invalid JSON must be
		// reported as such whatever came first.
		for (k = 0; k < n && !dup; k++) {
			size_t wn = nlen[k];
			int    eq = esc
			       ? span_eq(kb, kb + kn, names[k], wn)
			       : (kn == wn &&
                                  (wn == 0 ||
                                      kb[0] == (unsigned char) names[k][0]) &&
                                  memcmp(kb, names[k], wn) == 0);
			if (!eq) {
				continue;
			}
			if (out[k].type != AUTH_CLAIM_ABSENT) {
				dup = 1;
			} else {
				out[k] = v;
			}
		}
		skip_ws(s);
		if (s->p >= s->end) {
			return (-1);
		}
		if (*s->p == '}') {
			s->p++;
			return (dup ? -2 : 0);
		}
		if (*s->p != ',') {
			return (-1);
		}
		s->p++;
		skip_ws(s);
	}
}

// ---------------------------------------------------------------------
// Decoding of already validated string content
// ---------------------------------------------------------------------

// Decodes one character of valid string content at *pp into out (1..4
// UTF-8 bytes; a raw multi-byte sequence is passed on a byte at a time)
// and advances *pp. Returns the number of bytes written.
static size_t
dec_next(const unsigned char **pp, unsigned char out[4])
{
	const unsigned char *p = *pp;
	long                 u;

	if (*p != '\\') {
		out[0] = *p;
		*pp    = p + 1;
		return (1);
	}
	switch (p[1]) {
	case 'b':
		out[0] = '\b';
		break;
	case 'f':
		out[0] = '\f';
		break;
	case 'n':
		out[0] = '\n';
		break;
	case 'r':
		out[0] = '\r';
		break;
	case 't':
		out[0] = '\t';
		break;
	case 'u':
		u = hex4(p + 2);
		p += 6;
		if (u >= 0xd800 && u <= 0xdbff) {
			u = 0x10000 + ((u - 0xd800) << 10) +
			    (hex4(p + 2) - 0xdc00);
			p += 6;
		}
		*pp = p;
		if (u < 0x80) {
			out[0] = (unsigned char) u;
			return (1);
		}
		if (u < 0x800) {
			out[0] = (unsigned char) (0xc0 | (u >> 6));
			out[1] = (unsigned char) (0x80 | (u & 0x3f));
			return (2);
		}
		if (u < 0x10000) {
			out[0] = (unsigned char) (0xe0 | (u >> 12));
			out[1] = (unsigned char) (0x80 | ((u >> 6) & 0x3f));
			out[2] = (unsigned char) (0x80 | (u & 0x3f));
			return (3);
		}
		out[0] = (unsigned char) (0xf0 | (u >> 18));
		out[1] = (unsigned char) (0x80 | ((u >> 12) & 0x3f));
		out[2] = (unsigned char) (0x80 | ((u >> 6) & 0x3f));
		out[3] = (unsigned char) (0x80 | (u & 0x3f));
		return (4);
	default: // '"', '\\', '/'
		out[0] = p[1];
		break;
	}
	*pp = p + 2;
	return (1);
}

static int
span_eq(
    const unsigned char *b, const unsigned char *e, const char *want, size_t n)
{
	size_t off = 0;

	while (b < e) {
		unsigned char c[4];
		size_t        k = dec_next(&b, c);
		if (k > n - off || memcmp(c, want + off, k) != 0) {
			return (0);
		}
		off += k;
	}
	return (off == n);
}

// The content span of a string value (between the quotes).
static void
str_span(const auth_claim *v, const unsigned char **b, const unsigned char **e)
{
	*b = (const unsigned char *) v->raw + 1;
	*e = (const unsigned char *) v->raw + v->len - 1;
}

// ---------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------

cm_err
auth_claims_scan(const char *buf, size_t len, const char *const *names,
    size_t n, auth_claim *out)
{
	auth_claim found[AUTH_CLAIMS_NAMES_MAX];
	size_t     nlen[AUTH_CLAIMS_NAMES_MAX], k;
	scanner    s;
	int        rc;

	if (buf == NULL || n > AUTH_CLAIMS_NAMES_MAX ||
	    (n > 0 && (names == NULL || out == NULL))) {
		return (CM_EINVAL);
	}
	memset(found, 0, sizeof(found));
	for (k = 0; k < n; k++) {
		nlen[k] = strlen(names[k]);
	}
	s.p   = (const unsigned char *) buf;
	s.end = s.p + len;
	skip_ws(&s);
	if (s.p >= s.end || *s.p != '{') {
		return (CM_EINVAL);
	}
	rc = scan_object(&s, 1, names, nlen, n, found);
	if (rc == -1) {
		return (CM_EINVAL);
	}
	skip_ws(&s);
	if (s.p != s.end) {
		return (CM_EINVAL);
	}
	if (rc == -2) {
		return (CM_EEXIST);
	}
	if (n > 0) {
		memcpy(out, found, n * sizeof(*out));
	}
	return (CM_OK);
}

cm_err
auth_claims_str(const auth_claim *v, char *buf, size_t cap, size_t *lenp)
{
	const unsigned char *b, *e;
	size_t               off = 0;

	if (v == NULL || v->type != AUTH_CLAIM_STRING || buf == NULL) {
		return (CM_EINVAL);
	}
	str_span(v, &b, &e);
	while (b < e) {
		unsigned char c[4];
		size_t        k, i;
		if (*b != '\\') {
			// plain byte: the common case, copied inline
			if (off + 1 >= cap) {
				return (CM_ETOOBIG); // room for the NUL too
			}
			buf[off++] = (char) *b++;
			continue;
		}
		k = dec_next(&b, c);
		if (off + k >= cap) {
			return (CM_ETOOBIG);
		}
		for (i = 0; i < k; i++) {
			buf[off++] = (char) c[i];
		}
	}
	if (cap == 0) {
		return (CM_ETOOBIG);
	}
	buf[off] = '\0';
	if (lenp != NULL) {
		*lenp = off;
	}
	return (CM_OK);
}

bool
auth_claims_str_eq(const auth_claim *v, const char *want)
{
	const unsigned char *b, *e;

	if (v == NULL || v->type != AUTH_CLAIM_STRING || want == NULL) {
		return (false);
	}
	str_span(v, &b, &e);
	return (span_eq(b, e, want, strlen(want)) != 0);
}

bool
auth_claims_str_clean(const auth_claim *v)
{
	const unsigned char *b, *e;

	if (v == NULL || v->type != AUTH_CLAIM_STRING) {
		return (false);
	}
	str_span(v, &b, &e);
	while (b < e) {
		unsigned char c[4];
		if (dec_next(&b, c) == 1 && (c[0] < 0x20 || c[0] == 0x7f)) {
			return (false);
		}
	}
	return (true);
}

void
auth_claims_iter_init(const auth_claim *arr, auth_claim_iter *it)
{
	if (arr == NULL || arr->type != AUTH_CLAIM_ARRAY) {
		it->p   = NULL;
		it->end = NULL;
		return;
	}
	it->p   = arr->raw + 1;
	it->end = arr->raw + arr->len;
}

bool
auth_claims_next(auth_claim_iter *it, auth_claim *elem)
{
	scanner    s;
	auth_claim v;

	if (it->p == NULL) {
		return (false);
	}
	s.p   = (const unsigned char *) it->p;
	s.end = (const unsigned char *) it->end;
	skip_ws(&s);
	if (s.p < s.end && *s.p == ',') {
		s.p++;
		skip_ws(&s);
	}
	if (s.p >= s.end || *s.p == ']') {
		it->p = NULL;
		return (false);
	}
	memset(&v, 0, sizeof(v));
	// Already validated as a whole (with its depth): the depth given here
	// only has to let the element's own nesting through.
	if (scan_value(&s, 0, &v) != 0) {
		it->p = NULL; // cannot happen on a scanned array
		return (false);
	}
	it->p = (const char *) s.p;
	*elem = v;
	return (true);
}
