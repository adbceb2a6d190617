// SPDX-License-Identifier: MIT
//
// Unit tests of the strict HTTP/1.1 parser (http1.c): a table of request
// heads, one row per framing rule (accepted, or refused with its status),
// each parsed whole and again one byte at a time (the two must agree);
// field and query lookups; the chunked decoder, valid and malformed.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/xalloc.h"
#include "gateway/http1.h"

typedef struct row {
	const char *name;
	const char *bytes; // may hold NULs: length is len (or strlen)
	size_t      len;
	unsigned    status; // 0 = parsed
} row;

#define R(name, s, st)                     \
	{                                  \
		name, s, sizeof(s) - 1, st \
	}

static const row rows[] = {
	R("plain GET", "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n", 0),
	R("HTTP/1.0 without Host", "GET /ok HTTP/1.0\r\n\r\n", 0),
	R("leading empty line", "\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n", 0),
	R("absolute-form", "GET http://h:1/ok?a=1 HTTP/1.1\r\nHost: h\r\n\r\n",
	    0),
	R("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 0),
	R("chunked",
	    "POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
	    "chunked\r\n\r\n",
	    0),
	R("same Content-Length twice",
	    "POST /t HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 3\r\nContent-Length: "
	    "3\r\n\r\n",
	    0),
	R("tab in value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\tb\r\n\r\n", 0),
	R("empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 0),
	// RFC 9112 refusals.
	R("bare LF everywhere", "GET /ok HTTP/1.1\nHost: x\n\n", 400),
	R("bare LF in a field line", "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
	    400),
	R("bare CR", "GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400),
	R("NUL in a value",
	    "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: "
	    "Bearer t\0junk\r\n\r\n",
	    400),
	R("NUL in the target", "GET /o\0k HTTP/1.1\r\nHost: x\r\n\r\n", 400),
	R("control byte in a value",
	    "GET / HTTP/1.1\r\nHost: x\r\nX: a\x01"
	    "\r\n\r\n",
	    400),
	R("DEL in a value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\x7f\r\n\r\n",
	    400),
	R("HTTP/1.1 without Host", "GET /ok HTTP/1.1\r\n\r\n", 400),
	R("two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	    400),
	R("Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
	R("CL and TE",
	    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n",
	    400),
	R("TE and CL",
	    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
	    "chunked\r\nContent-Length: 5\r\n\r\n",
	    400),
	R("two different CL",
	    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: "
	    "0\r\nContent-Length: 5\r\n\r\n",
	    400),
	R("CL list",
	    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n"
	    "\r\n",
	    400),
	R("negative CL",
	    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n"
	    "\r\n",
	    400),
	R("CL with a sign",
	    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1"
	    "\r\n\r\n",
	    400),
	R("TE gzip (chunked not final)",
	    "POST / HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding: gzip\r\n\r\n",
	    400),
	R("TE chunked, gzip",
	    "POST / HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding: chunked, gzip\r\n\r\n",
	    400),
	R("TE chunked twice",
	    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:"
	    " chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
	    400),
	R("TE gzip, chunked (unknown coding)",
	    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, "
	    "chunked\r\n"
	    "\r\n",
	    501),
	R("TE in HTTP/1.0",
	    "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n"
	    "\r\n",
	    400),
	R("TE chunked with a parameter",
	    "POST / HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding: chunked;a=1\r\n"
	    "\r\n",
	    400),
	R("obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),
	R("whitespace before colon",
	    "GET / HTTP/1.1\r\nHost: x\r\nX : a\r\n"
	    "\r\n",
	    400),
	R("empty field name", "GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n", 400),
	R("field without colon", "GET / HTTP/1.1\r\nHost: x\r\nXa\r\n\r\n",
	    400),
	R("whitespace after request line",
	    "GET / HTTP/1.1\r\n Host: x\r\n"
	    "\r\n",
	    400),
	R("two spaces in request line", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
	    400),
	R("space in target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
	R("byte >= 0x80 in target",
	    "GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n"
	    "\r\n",
	    400),
	R("fragment in target", "GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
	R("relative target", "GET ok HTTP/1.1\r\nHost: x\r\n\r\n", 400),
	R("asterisk with GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
	R("lower-case version", "GET / http/1.1\r\nHost: x\r\n\r\n", 400),
	R("HTTP/2.0", "GET / HTTP/2.0\r\n\r\n", 505),
	R("HTTP/1.2", "GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
	R("HTTP/0.9 style", "GET /\r\n\r\n", 400),
	R("method too long",
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1\r\n"
	    "Host: x\r\n\r\n",
	    501),
	R("non-token method", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
	R("too many empty lines",
	    "\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n"
	    "Host: x\r\n\r\n",
	    400),
};

// parse_whole() parses a copy of r's bytes in one call.
static gw_h1_status
parse_whole(const row *r, gw_h1_head *h, size_t *hl, gw_h1_error *err)
{
	char        *buf = cm_xmalloc(r->len + 1);
	gw_h1_scan   sc  = { 0 };
	gw_h1_status st;

	memcpy(buf, r->bytes, r->len);
	st = gw_h1_parse_head(buf, r->len, &sc, h, hl, err);
	free(buf);
	return (st);
}

// parse_bytewise() feeds the bytes one at a time, as a trickling client.
static gw_h1_status
parse_bytewise(const row *r, gw_h1_error *err)
{
	char        *buf = cm_xmalloc(r->len + 1);
	gw_h1_scan   sc  = { 0 };
	gw_h1_head   h;
	size_t       hl = 0;
	gw_h1_status st = GW_H1_MORE;

	for (size_t n = 1; n <= r->len && st == GW_H1_MORE; n++) {
		memcpy(buf, r->bytes, n);
		st = gw_h1_parse_head(buf, n, &sc, &h, &hl, err);
	}
	free(buf);
	return (st);
}

static void
test_table(void **state)
{
	(void) state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const row   *r = &rows[i];
		gw_h1_head   h;
		gw_h1_error  err = { 0 }, err2 = { 0 };
		size_t       hl  = 0;
		gw_h1_status st  = parse_whole(r, &h, &hl, &err);
		gw_h1_status st2 = parse_bytewise(r, &err2);

		if (r->status == 0 && (st != GW_H1_DONE || hl != r->len)) {
			fail_msg("%s: want parsed, got %d (%u %s)", r->name,
			    (int) st, err.status, err.detail);
		}
		if (r->status != 0 &&
		    (st != GW_H1_ERROR || err.status != r->status)) {
			fail_msg("%s: want %u, got %d (%u %s)", r->name,
			    r->status, (int) st, err.status,
			    st == GW_H1_ERROR ? err.detail : "");
		}
		if (st2 != st || err2.status != err.status) {
			fail_msg("%s: byte-at-a-time gives %d/%u, whole %d/%u",
			    r->name, (int) st2, err2.status, (int) st,
			    err.status);
		}
	}
}

static void
test_fields(void **state)
{
	char        buf[] = "\r\nPOST /threads/x/history?limit=5&before=&x "
	                    "HTTP/1.1\r\nHost: example.com:80\r\n"
	                    "authorization:  Bearer abc  \r\nContent-Length: 12\r\n"
	                    "Connection: keep-alive, close\r\n"
	                    "Expect: 100-Continue\r\n\r\nBODY";
	gw_h1_scan  sc    = { 0 };
	gw_h1_head  h;
	gw_h1_error err;
	size_t      hl = 0, n = 0;
	size_t      len = strlen(buf);
	const char *v;

	(void) state;
	// (The parser writes NULs into buf: len is taken first.)
	assert_int_equal(
	    gw_h1_parse_head(buf, len, &sc, &h, &hl, &err), GW_H1_DONE);
	assert_int_equal(hl, len - 4);
	assert_string_equal(h.method, "POST");
	assert_string_equal(h.path, "/threads/x/history");
	assert_string_equal(h.query, "limit=5&before=&x");
	assert_int_equal(h.minor, 1);
	assert_int_equal(h.content_length, 12);
	assert_int_equal(h.chunked, 0);
	assert_int_equal(h.close, 1);
	assert_int_equal(h.expect_continue, 1);
	// Values lose their surrounding whitespace; names match in any case.
	assert_string_equal(
	    gw_h1_field_get(&h, "Authorization"), "Bearer abc");
	assert_null(gw_h1_field_get(&h, "X-Missing"));
	v = gw_h1_query_get(h.query, "limit", &n);
	assert_non_null(v);
	assert_int_equal(n, 1);
	assert_memory_equal(v, "5", 1);
	v = gw_h1_query_get(h.query, "before", &n);
	assert_non_null(v);
	assert_int_equal(n, 0);
	v = gw_h1_query_get(h.query, "x", &n);
	assert_non_null(v);
	assert_int_equal(n, 0);
	assert_null(gw_h1_query_get(h.query, "lim", &n));
	assert_null(gw_h1_query_get(NULL, "limit", &n));

	// An incomplete head asks for more; a huge one is refused.
	{
		char       part[] = "GET / HTTP/1.1\r\nHost: x\r\n";
		gw_h1_scan s2     = { 0 };
		assert_int_equal(
		    gw_h1_parse_head(part, strlen(part), &s2, &h, &hl, &err),
		    GW_H1_MORE);
	}
	{
		size_t     blen = GW_H1_HEAD_MAX + 10;
		char      *big  = cm_xmalloc(blen);
		gw_h1_scan s3   = { 0 };
		memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
		memset(big + 19, 'a', blen - 19);
		assert_int_equal(
		    gw_h1_parse_head(big, blen, &s3, &h, &hl, &err),
		    GW_H1_ERROR);
		assert_int_equal(err.status, 431);
		memcpy(big, "GET /", 5);
		memset(big + 5, 'a', blen - 5);
		memset(&s3, 0, sizeof(s3));
		assert_int_equal(
		    gw_h1_parse_head(big, blen, &s3, &h, &hl, &err),
		    GW_H1_ERROR);
		assert_int_equal(err.status, 414);
		free(big);
	}
	// HTTP/1.0 closes; a huge Content-Length saturates (found by the
	// fuzzer: 999999999999999999 and one more digit overflowed).
	{
		char       ten[] = "POST / HTTP/1.0\r\nContent-Length: "
		                   "99999999999999999999999\r\n\r\n";
		gw_h1_scan s4    = { 0 };
		assert_int_equal(
		    gw_h1_parse_head(ten, strlen(ten), &s4, &h, &hl, &err),
		    GW_H1_DONE);
		assert_int_equal(h.close, 1);
		assert_true(h.content_length >= 1000000000000000000LL);
	}
	{
		char       nines[] = "POST / HTTP/1.0\r\nContent-Length: "
		                     "9999999999999999999\r\n\r\n";
		gw_h1_scan s5      = { 0 };
		assert_int_equal(
		    gw_h1_parse_head(nines, strlen(nines), &s5, &h, &hl, &err),
		    GW_H1_DONE);
		assert_true(h.content_length >= 1000000000000000000LL);
	}
}

// decode() runs the chunked decoder over in, split into pieces of step
// bytes; returns the status, the decoded data in out, and the bytes used.
static gw_h1_status
decode(const char *in, size_t len, size_t step, char *out, size_t *out_len,
    size_t *used_total, gw_h1_error *err)
{
	gw_h1_chunked d   = { 0 };
	size_t        off = 0;
	gw_h1_status  st  = GW_H1_MORE;

	*out_len = 0;
	while (off < len && st == GW_H1_MORE) {
		size_t      avail = len - off < step ? len - off : step;
		size_t      used  = 0;
		const char *data;
		size_t      n;

		st = gw_h1_chunked_step(
		    &d, in + off, avail, &used, &data, &n, err);
		if (n > 0) {
			memcpy(out + *out_len, data, n);
			*out_len += n;
		}
		off += used;
	}
	*used_total = off;
	return (st);
}

static void
test_chunked(void **state)
{
	static const struct {
		const char *in;
		int         ok;
		const char *data;
		size_t      rest; // bytes left after the body
	} cases[] = {
		{ "5\r\nhello\r\n0\r\n\r\nNEXT", 1, "hello", 4 },
		{ "3;ext=1\r\nabc\r\n2 ; x\r\nde\r\n0\r\nT: 1\r\n\r\n", 1,
		    "abcde", 0 },
		{ "A\r\n0123456789\r\n0\r\n\r\n", 1, "0123456789", 0 },
		{ "0\r\n\r\n", 1, "", 0 },
		{ "5\nhello\r\n0\r\n\r\n", 0, NULL, 0 },        // bare LF
		{ "5\r\nhelloX\r\n0\r\n\r\n", 0, NULL, 0 },     // too long
		{ "x\r\n", 0, NULL, 0 },                        // not hex
		{ "\r\n", 0, NULL, 0 },                         // no size
		{ "fffffffffffffffff\r\n", 0, NULL, 0 },        // too large
		{ "1\r\na\r\n0\r\n T: 1\r\n\r\n", 0, NULL, 0 }, // folded
		{ "1\r\na\r\n0\r\nT: \x01\r\n\r\n", 0, NULL, 0 },
		{ "1;\x01\r\na\r\n0\r\n\r\n", 0, NULL, 0 },
	};

	(void) state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = strlen(cases[i].in);
		for (size_t step = 1; step <= len; step += len - 1) {
			char         out[64];
			size_t       n = 0, used = 0;
			gw_h1_error  err;
			gw_h1_status st = decode(
			    cases[i].in, len, step, out, &n, &used, &err);
			if (cases[i].ok) {
				if (st != GW_H1_DONE) {
					fail_msg("case %zu step %zu: %d", i,
					    step, (int) st);
				}
				assert_int_equal(n, strlen(cases[i].data));
				assert_memory_equal(out, cases[i].data, n);
				assert_int_equal(len - used, cases[i].rest);
			} else if (st != GW_H1_ERROR || err.status != 400) {
				fail_msg("case %zu step %zu: want 400, got %d",
				    i, step, (int) st);
			}
			if (len == 1) {
				break;
			}
		}
	}
	// An over-long chunk-size line and an over-large trailer section.
	{
		char       *in  = cm_xmalloc(8192);
		size_t      len = 0;
		char        out[16];
		size_t      n, used;
		gw_h1_error err;
		len += (size_t) snprintf(in, 8192, "1;");
		memset(in + len, 'e', GW_H1_CHUNK_LINE_MAX);
		len += GW_H1_CHUNK_LINE_MAX;
		memcpy(in + len, "\r\n", 2);
		len += 2;
		assert_int_equal(
		    decode(in, len, len, out, &n, &used, &err), GW_H1_ERROR);
		len = (size_t) snprintf(in, 8192, "0\r\nT: ");
		memset(in + len, 'v', GW_H1_TRAILER_MAX);
		len += GW_H1_TRAILER_MAX;
		assert_int_equal(
		    decode(in, len, len, out, &n, &used, &err), GW_H1_ERROR);
		free(in);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_fields),
		cmocka_unit_test(test_chunked),
	};
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
