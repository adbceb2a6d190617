// SPDX-License-Identifier: MIT
//
// Strict HTTP/1.1 request parsing (http1.h): the request head in two
// passes - a resumable byte scan that finds the end of the head and
// refuses bad bytes as soon as they arrive, then one parse of the complete
// head in place - and a byte-at-a-time chunked body decoder. Grammar
// references are to RFC 9112 (message syntax) and RFC 9110 (fields).
#include <string.h>
#include <strings.h>

#include "gateway/http1.h"

static gw_h1_status
refuse(gw_h1_error *err, unsigned status, const char *detail)
{
	err->status = status;
	err->detail = detail;
	return (GW_H1_ERROR);
}

// tchar (RFC 9110 5.6.2): the characters of a token.
static int
is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9')) {
		return (1);
	}
	return (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

// field-vchar, SP or HTAB (RFC 9110 5.5): what a field value may hold.
static int
is_field_char(unsigned char c)
{
	return (c == ' ' || c == '\t' || (c >= 0x21 && c != 0x7f));
}

static int
is_ows(char c)
{
	return (c == ' ' || c == '\t');
}

// ---------------------------------------------------------------------
// Pass 1: find the end of the head
// ---------------------------------------------------------------------

// scan_head() checks buf[sc->pos..len) and returns GW_H1_DONE with *end
// (one past the empty line's LF) once "\r\n\r\n" is seen.
static gw_h1_status
scan_head(
    const char *buf, size_t len, gw_h1_scan *sc, size_t *end, gw_h1_error *err)
{
	size_t i;

	// Leading empty lines are skipped (RFC 9112 2.2), a few at most.
	while (sc->pos == sc->skip && sc->skip < len) {
		if (buf[sc->skip] == '\n') {
			return (refuse(err, 400, "Bare LF line ending"));
		}
		if (buf[sc->skip] != '\r') {
			break;
		}
		if (sc->skip + 1 >= len) {
			return (GW_H1_MORE);
		}
		if (buf[sc->skip + 1] != '\n') {
			return (refuse(err, 400, "Bare CR in request head"));
		}
		if (sc->skip / 2 >= GW_H1_LEADING_CRLF_MAX) {
			return (refuse(err, 400, "Too many empty lines"));
		}
		sc->skip += 2;
		sc->pos = sc->skip;
	}
	for (i = sc->pos; i < len; i++) {
		char c = buf[i];

		if (i - sc->skip >= GW_H1_HEAD_MAX) {
			break;
		}
		if (c == '\0') {
			return (refuse(err, 400, "NUL byte in request head"));
		}
		if (c == '\r') {
			if (i + 1 == len) {
				break; // decide when the next byte is here
			}
			if (buf[i + 1] != '\n') {
				return (refuse(
				    err, 400, "Bare CR in request head"));
			}
			continue;
		}
		if (c != '\n') {
			continue;
		}
		if (i == sc->skip || buf[i - 1] != '\r') {
			return (refuse(err, 400, "Bare LF line ending"));
		}
		if (i >= sc->skip + 3 && buf[i - 2] == '\n' &&
		    buf[i - 3] == '\r') {
			*end = i + 1;
			return (GW_H1_DONE);
		}
	}
	sc->pos = i;
	if (len - sc->skip >= GW_H1_HEAD_MAX ||
	    i - sc->skip >= GW_H1_HEAD_MAX) {
		if (memchr(buf + sc->skip, '\n', i - sc->skip) == NULL) {
			return (refuse(err, 414, "Request line too long"));
		}
		return (refuse(err, 431, "Request header fields too large"));
	}
	return (GW_H1_MORE);
}

// ---------------------------------------------------------------------
// Pass 2: parse the complete head in place
// ---------------------------------------------------------------------

static int
prefix_ci(const char *s, const char *prefix)
{
	return (strncasecmp(s, prefix, strlen(prefix)) == 0);
}

// parse_target() sets h->path/h->query from the NUL-terminated target t.
static gw_h1_status
parse_target(char *t, gw_h1_head *h, gw_h1_error *err)
{
	char *q;

	h->target = t;
	h->query  = NULL;
	if (strchr(t, '#') != NULL) {
		return (refuse(err, 400, "Fragment in request target"));
	}
	if (t[0] == '/') {
		h->path = t;
	} else if (strcmp(t, "*") == 0) {
		// asterisk-form is for OPTIONS only (RFC 9112 3.2.4).
		if (strcmp(h->method, "OPTIONS") != 0) {
			return (refuse(err, 400, "Invalid request target"));
		}
		h->path = t;
		return (GW_H1_DONE);
	} else if (prefix_ci(t, "http://") || prefix_ci(t, "https://")) {
		// absolute-form: servers must accept it (RFC 9112 3.2.2);
		// the authority is not used, the path is.
		char *a = strstr(t, "://") + 3;
		char *s = a + strcspn(a, "/?");
		if (s == a) {
			return (refuse(err, 400, "Invalid request target"));
		}
		if (*s == '/') {
			h->path = s;
		} else {
			h->path  = "/";
			h->query = *s == '?' ? s + 1 : NULL;
			return (GW_H1_DONE);
		}
	} else {
		return (refuse(err, 400, "Invalid request target"));
	}
	q = strchr((char *) h->path, '?');
	if (q != NULL) {
		*q       = '\0';
		h->query = q + 1;
	}
	return (GW_H1_DONE);
}

// parse_request_line() parses "METHOD SP target SP HTTP/1.x" ending at
// eol (the CR of its CRLF).
static gw_h1_status
parse_request_line(char *p, char *eol, gw_h1_head *h, gw_h1_error *err)
{
	size_t n = 0;
	char  *t;

	while (p + n < eol && is_tchar((unsigned char) p[n])) {
		n++;
	}
	if (n == 0 || p + n >= eol || p[n] != ' ') {
		return (refuse(err, 400, "Malformed request line"));
	}
	if (n >= GW_H1_METHOD_MAX) {
		return (refuse(err, 501, "Method not implemented"));
	}
	memcpy(h->method, p, n);
	h->method[n] = '\0';
	p += n + 1;
	t = p;
	while (p < eol && *p != ' ') {
		if ((unsigned char) *p < 0x21 || (unsigned char) *p > 0x7e) {
			return (refuse(
			    err, 400, "Invalid character in request target"));
		}
		p++;
	}
	if (p == t || p >= eol) {
		return (refuse(err, 400, "Malformed request line"));
	}
	*p++ = '\0';
	if (eol - p != 8 || memcmp(p, "HTTP/", 5) != 0 || p[5] < '0' ||
	    p[5] > '9' || p[6] != '.' || p[7] < '0' || p[7] > '9') {
		return (refuse(err, 400, "Malformed HTTP version"));
	}
	if (p[5] != '1' || (p[7] != '0' && p[7] != '1')) {
		return (refuse(err, 505, "HTTP version not supported"));
	}
	h->minor = p[7] - '0';
	return (parse_target(t, h, err));
}

// parse_fields() parses the field lines from p up to the empty line.
static gw_h1_status
parse_fields(char *p, gw_h1_head *h, gw_h1_error *err)
{
	while (!(p[0] == '\r' && p[1] == '\n')) {
		char  *le = strchr(p, '\r'); // pass 1 saw a CRLF for each
		char  *v, *ve;
		size_t n = 0;

		if (is_ows(*p)) {
			return (refuse(err, 400, "Obsolete line folding"));
		}
		while (is_tchar((unsigned char) p[n])) {
			n++;
		}
		if (p[n] != ':') {
			return (refuse(err, 400,
			    n > 0 && is_ows(p[n])
			        ? "Whitespace before colon in header field"
			        : "Invalid header field name"));
		}
		if (n == 0) {
			return (refuse(err, 400, "Invalid header field name"));
		}
		p[n] = '\0';
		v    = p + n + 1;
		while (v < le && is_ows(*v)) {
			v++;
		}
		ve = le;
		while (ve > v && is_ows(ve[-1])) {
			ve--;
		}
		for (const char *c = v; c < ve; c++) {
			if (!is_field_char((unsigned char) *c)) {
				return (refuse(err, 400,
				    "Invalid character in header field "
				    "value"));
			}
		}
		*ve = '\0';
		if (h->nfields >= GW_H1_FIELDS_MAX) {
			return (refuse(err, 431, "Too many header fields"));
		}
		h->fields[h->nfields].name      = p;
		h->fields[h->nfields].value     = v;
		h->fields[h->nfields].value_len = (size_t) (ve - v);
		h->nfields++;
		p = le + 2;
	}
	return (GW_H1_DONE);
}

// Host = uri-host [ ":" port ] (RFC 9110 7.2): reg-name, IPv4 or an IP
// literal in brackets. Checked by character class only.
static int
valid_host(const char *v)
{
	for (; *v != '\0'; v++) {
		unsigned char c = (unsigned char) *v;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		        (c >= '0' && c <= '9') ||
		        strchr("-._~!$&'()*+,;=:[]%", c) != NULL)) {
			return (0);
		}
	}
	return (1);
}

// next_element() returns the next element of a comma-separated list
// (RFC 9110 5.6.1) in [*s, *e), trimmed; *p moves past it. 0 at the end.
static int
next_element(const char **p, const char **s, const char **e)
{
	const char *c = *p;

	if (*c == '\0') {
		return (0);
	}
	while (is_ows(*c)) {
		c++;
	}
	*s = c;
	while (*c != '\0' && *c != ',') {
		c++;
	}
	*e = c;
	while (*e > *s && is_ows((*e)[-1])) {
		(*e)--;
	}
	*p = *c == ',' ? c + 1 : c;
	return (1);
}

static int
element_is(const char *s, const char *e, const char *word)
{
	size_t n = strlen(word);

	return ((size_t) (e - s) == n && strncasecmp(s, word, n) == 0);
}

// Where a Content-Length saturates: far past any body we take (the
// caller answers 413), far below INT64_MAX.
#define LENGTH_SATURATED ((int64_t) 1000000000000000000LL)

// Content-Length = 1*DIGIT; values from 10^17 on read as 10^18.
static int
parse_length(const char *v, int64_t *out)
{
	int64_t n = 0;

	if (*v == '\0') {
		return (-1);
	}
	for (; *v != '\0'; v++) {
		if (*v < '0' || *v > '9') {
			return (-1);
		}
		// n < 10^17 keeps n * 10 + 9 below 10^18: no overflow.
		n = n < LENGTH_SATURATED / 10 ? n * 10 + (*v - '0')
		                              : LENGTH_SATURATED;
	}
	*out = n;
	return (0);
}

// framing() applies the message-framing rules (RFC 9112 6.1-6.3) and the
// connection options to the parsed fields.
static gw_h1_status
framing(gw_h1_head *h, gw_h1_error *err)
{
	int nhost = 0, te = 0, chunked = 0, unknown = 0, after_chunked = 0;

	h->content_length = -1;
	for (int i = 0; i < h->nfields; i++) {
		const char *name = h->fields[i].name;
		const char *v    = h->fields[i].value;
		const char *s, *e;

		if (strcasecmp(name, "Host") == 0) {
			if (++nhost > 1) {
				return (refuse(
				    err, 400, "More than one Host header"));
			}
			if (!valid_host(v)) {
				return (
				    refuse(err, 400, "Invalid Host header"));
			}
		} else if (strcasecmp(name, "Content-Length") == 0) {
			int64_t n;
			if (parse_length(v, &n) != 0) {
				return (refuse(
				    err, 400, "Invalid Content-Length"));
			}
			if (h->content_length >= 0 && h->content_length != n) {
				return (refuse(err, 400,
				    "Conflicting Content-Length headers"));
			}
			h->content_length = n;
		} else if (strcasecmp(name, "Transfer-Encoding") == 0) {
			te = 1;
			while (next_element(&v, &s, &e)) {
				if (s == e) {
					continue; // empty list element
				}
				if (chunked) {
					after_chunked = 1;
				}
				if (element_is(s, e, "chunked")) {
					chunked++;
				} else {
					unknown++;
				}
			}
		} else if (strcasecmp(name, "Connection") == 0) {
			while (next_element(&v, &s, &e)) {
				if (element_is(s, e, "close")) {
					h->close = 1;
				}
			}
		} else if (strcasecmp(name, "Expect") == 0) {
			if (strcasecmp(v, "100-continue") == 0) {
				h->expect_continue = h->minor == 1;
			}
		}
	}
	if (h->minor == 1 && nhost == 0) {
		return (refuse(err, 400, "Missing Host header"));
	}
	if (te) {
		if (h->content_length >= 0) {
			return (refuse(err, 400,
			    "Both Content-Length and Transfer-Encoding"));
		}
		if (h->minor == 0) {
			return (refuse(err, 400,
			    "Transfer-Encoding in an HTTP/1.0 request"));
		}
		if (chunked != 1 || after_chunked) {
			return (refuse(err, 400,
			    "Transfer-Encoding must end with chunked, once"));
		}
		if (unknown > 0) {
			return (refuse(
			    err, 501, "Transfer coding not implemented"));
		}
		h->chunked = 1;
	}
	if (h->minor == 0) {
		h->close = 1;
	}
	return (GW_H1_DONE);
}

gw_h1_status
gw_h1_parse_head(char *buf, size_t len, gw_h1_scan *sc, gw_h1_head *h,
    size_t *head_len, gw_h1_error *err)
{
	size_t       end = 0;
	char        *line, *eol;
	gw_h1_status st;

	st = scan_head(buf, len, sc, &end, err);
	if (st != GW_H1_DONE) {
		return (st);
	}
	memset(h, 0, sizeof(*h));
	line = buf + sc->skip;
	eol  = strchr(line, '\r');
	// Pass 1 saw no NUL and a CRLF at the end of every line, so string
	// functions on the head stop at the right places.
	if ((st = parse_request_line(line, eol, h, err)) != GW_H1_DONE) {
		return (st);
	}
	if ((st = parse_fields(eol + 2, h, err)) != GW_H1_DONE) {
		return (st);
	}
	if ((st = framing(h, err)) != GW_H1_DONE) {
		return (st);
	}
	*head_len = end;
	return (GW_H1_DONE);
}

const char *
gw_h1_field_get(const gw_h1_head *h, const char *name)
{
	for (int i = 0; i < h->nfields; i++) {
		if (strcasecmp(h->fields[i].name, name) == 0) {
			return (h->fields[i].value);
		}
	}
	return (NULL);
}

const char *
gw_h1_query_get(const char *query, const char *name, size_t *value_len)
{
	size_t nlen = strlen(name);

	while (query != NULL && *query != '\0') {
		size_t      plen = strcspn(query, "&");
		const char *eq   = memchr(query, '=', plen);
		size_t      klen = eq != NULL ? (size_t) (eq - query) : plen;

		if (klen == nlen && memcmp(query, name, nlen) == 0) {
			if (eq == NULL) {
				*value_len = 0;
				return (query + plen);
			}
			*value_len = plen - klen - 1;
			return (eq + 1);
		}
		query += plen;
		if (*query == '&') {
			query++;
		}
	}
	return (NULL);
}

// ---------------------------------------------------------------------
// Chunked bodies
// ---------------------------------------------------------------------

enum {
	CK_SIZE = 0,   // chunk-size hex digits
	CK_EXT,        // chunk extensions, up to CR (ignored)
	CK_SIZE_LF,    // LF after the size line
	CK_DATA,       // chunk data
	CK_DATA_CR,    // CR after the data
	CK_DATA_LF,    // LF after the data
	CK_TRAILER,    // start of a trailer line (or the final CRLF)
	CK_TRAILER_LN, // inside a trailer line
	CK_TRAILER_LF, // LF ending a trailer line
	CK_END_LF,     // LF of the final empty line
	CK_DONE,
};

// Most hex digits of a chunk size: 15 keeps it below 2^60, far above any
// body we accept, with no overflow to think about.
#define CHUNK_DIGITS_MAX 15

static int
hexval(char c)
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

gw_h1_status
gw_h1_chunked_step(gw_h1_chunked *d, const char *in, size_t len, size_t *used,
    const char **data, size_t *data_len, gw_h1_error *err)
{
	size_t i;

	*data     = NULL;
	*data_len = 0;
	for (i = 0; i < len; i++) {
		char c = in[i];
		int  v;

		switch (d->state) {
		case CK_SIZE:
			if ((v = hexval(c)) >= 0) {
				if (++d->digits > CHUNK_DIGITS_MAX) {
					return (refuse(
					    err, 400, "Chunk size too large"));
				}
				d->left = d->left * 16 + (uint64_t) v;
			} else if (d->digits > 0 && (c == ';' || is_ows(c))) {
				d->state = CK_EXT;
			} else if (d->digits > 0 && c == '\r') {
				d->state = CK_SIZE_LF;
			} else {
				return (
				    refuse(err, 400, "Malformed chunk size"));
			}
			break;
		case CK_EXT:
			if (c == '\r') {
				d->state = CK_SIZE_LF;
			} else if (!is_field_char((unsigned char) c)) {
				return (refuse(
				    err, 400, "Malformed chunk extension"));
			}
			break;
		case CK_SIZE_LF:
			if (c != '\n') {
				return (refuse(err, 400, "Bare CR in chunk"));
			}
			d->state = d->left > 0 ? CK_DATA : CK_TRAILER;
			d->line  = 0;
			continue;
		case CK_DATA: {
			size_t n = len - i;
			if ((uint64_t) n > d->left) {
				n = (size_t) d->left;
			}
			d->left -= n;
			if (d->left == 0) {
				d->state = CK_DATA_CR;
			}
			*data     = in + i;
			*data_len = n;
			*used     = i + n;
			return (GW_H1_MORE);
		}
		case CK_DATA_CR:
			if (c != '\r') {
				return (refuse(err, 400,
				    "Chunk data longer than its size"));
			}
			d->state = CK_DATA_LF;
			break;
		case CK_DATA_LF:
			if (c != '\n') {
				return (refuse(err, 400, "Bare CR in chunk"));
			}
			d->state  = CK_SIZE;
			d->digits = 0;
			d->left   = 0;
			d->line   = 0;
			continue;
		case CK_TRAILER:
			if (c == '\r') {
				d->state = CK_END_LF;
				break;
			}
			if (!is_tchar((unsigned char) c)) {
				return (refuse(err, 400, "Malformed trailer"));
			}
			d->state = CK_TRAILER_LN;
			break;
		case CK_TRAILER_LN:
			if (c == '\r') {
				d->state = CK_TRAILER_LF;
			} else if (!is_field_char((unsigned char) c)) {
				return (refuse(err, 400, "Malformed trailer"));
			}
			break;
		case CK_TRAILER_LF:
			if (c != '\n') {
				return (
				    refuse(err, 400, "Bare CR in trailer"));
			}
			d->state = CK_TRAILER;
			break;
		case CK_END_LF:
			if (c != '\n') {
				return (refuse(err, 400, "Bare CR in chunk"));
			}
			d->state = CK_DONE;
			*used    = i + 1;
			return (GW_H1_DONE);
		default:
			*used = i;
			return (GW_H1_DONE);
		}
		// Size lines and the trailer section have their own caps.
		if (d->state >= CK_TRAILER) {
			if (++d->trailers > GW_H1_TRAILER_MAX) {
				return (
				    refuse(err, 400, "Trailers too large"));
			}
		} else if (++d->line > GW_H1_CHUNK_LINE_MAX) {
			return (refuse(err, 400, "Chunk size line too long"));
		}
	}
	*used = len;
	return (d->state == CK_DONE ? GW_H1_DONE : GW_H1_MORE);
}
