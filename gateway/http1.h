// SPDX-License-Identifier: MIT
//
// A strict HTTP/1.1 request parser (RFC 9112), with no I/O: the request
// head (request line + header fields) and the chunked transfer coding of a
// request body. The gateway's connection layer (server.c) feeds it the
// bytes it reads; the fuzz target feeds it anything.
//
// Strict means: what RFC 9112 lets a server refuse, we refuse, because the
// gateway is the internet-facing end and every byte it lets through with a
// second meaning is a request-smuggling or header-injection risk:
//   - lines end in CRLF only: a bare LF or a bare CR is 400;
//   - no NUL or other control byte anywhere in the head (HTAB allowed in
//     field values): 400;
//   - no whitespace between a field name and its colon, no obs-fold: 400;
//   - HTTP/1.1 without exactly one Host field: 400;
//   - Content-Length and Transfer-Encoding together: 400;
//   - two different Content-Length values, or a non-decimal one: 400;
//   - Transfer-Encoding whose final coding is not chunked, chunked twice,
//     or any Transfer-Encoding in an HTTP/1.0 request: 400; a coding we do
//     not implement (gzip, ...) before chunked: 501 (RFC 9112 6.1);
//   - HTTP versions other than 1.0 and 1.1: 505.
// Every one of those ends the connection after the answer (the caller
// closes on every parse error: the framing can no longer be trusted).
#ifndef GW_HTTP1_H
#define GW_HTTP1_H

#include <stddef.h>
#include <stdint.h>

// Largest request head (request line + all header fields) in bytes;
// larger gets 431 (or 414 while still in the request line). The head is
// buffered per connection until it is complete, so this bounds what a
// slow client makes us hold: 32 KiB is nginx's default total
// (large_client_header_buffers 4 8k) and fits an 8 KiB bearer token with
// ordinary headers several times over.
#define GW_H1_HEAD_MAX (32 * 1024)
// Most header fields in one request; more gets 431. Browsers and SDKs
// send 10-20; h2o refuses beyond 100.
#define GW_H1_FIELDS_MAX 100
// Longest method name kept (ours are at most 7 bytes: OPTIONS, DELETE);
// longer is 501, as nginx does.
#define GW_H1_METHOD_MAX 16
// Most leading empty lines (CRLF) ignored before a request line (RFC 9112
// 2.2 says at least one); more is 400.
#define GW_H1_LEADING_CRLF_MAX 4
// Longest chunk-size line (size, extensions) of a chunked body; nobody
// needs extensions, so a long one is an attack on our buffer: 400.
#define GW_H1_CHUNK_LINE_MAX 1024
// Largest trailer section of a chunked body (read and dropped); 400
// beyond.
#define GW_H1_TRAILER_MAX 4096

/** gw_h1_status is the outcome of a parser step. */
typedef enum gw_h1_status {
	GW_H1_DONE = 0, // complete (head parsed / body finished)
	GW_H1_MORE,     // need more bytes
	GW_H1_ERROR,    // refused: err holds the HTTP status and a detail
} gw_h1_status;

/** gw_h1_error: why a request was refused. detail is a static string. */
typedef struct gw_h1_error {
	unsigned    status; // 400, 414, 431, 501 or 505
	const char *detail;
} gw_h1_error;

/** One header field; both strings are NUL-terminated inside the buffer. */
typedef struct gw_h1_field {
	const char *name;  // as sent (compare case-insensitively)
	const char *value; // without leading/trailing whitespace
	size_t      value_len;
} gw_h1_field;

/**
 * gw_h1_head is a parsed request head. Every pointer points into the
 * buffer given to gw_h1_parse_head() (which the parser modified in place:
 * NULs after each string), so it is valid while that buffer is.
 */
typedef struct gw_h1_head {
	char        method[GW_H1_METHOD_MAX];
	const char *target;  // the request-target as sent (NUL-terminated)
	const char *path;    // its path: "/..." or "*" (NUL-terminated)
	const char *query;   // after '?', NULL when none (NUL-terminated)
	int         minor;   // HTTP/1.<minor>: 0 or 1
	int         nfields; // header fields, in order
	gw_h1_field fields[GW_H1_FIELDS_MAX];
	// Framing (RFC 9112 6): -1 when no Content-Length was sent.
	int64_t content_length;
	int     chunked; // Transfer-Encoding: chunked
	// The connection must close after this request: Connection: close,
	// or HTTP/1.0 (we do not keep HTTP/1.0 connections alive).
	int close;
	int expect_continue; // Expect: 100-continue (HTTP/1.1 only)
} gw_h1_head;

/**
 * gw_h1_scan is the resumable state of gw_h1_parse_head() for one head:
 * zero it before the first call of each request.
 */
typedef struct gw_h1_scan {
	size_t pos;  // bytes already checked
	size_t skip; // leading CRLFs consumed
} gw_h1_scan;

/**
 * gw_h1_parse_head() looks for a complete request head at the start of
 * buf (len bytes, need not be NUL-terminated; NUL bytes are refused) and
 * parses it. Call it again with the same sc each time more bytes arrive:
 * it checks only the new bytes, so a client sending one byte at a time
 * costs linear time. Bytes that can already be refused (a bare LF, a NUL)
 * are refused at once, without waiting for the rest.
 *   GW_H1_DONE:  *h is filled and *head_len is the number of bytes of the
 *                head (leading empty lines included); what follows is
 *                the body or the next request. buf was modified in place.
 *   GW_H1_MORE:  no complete head yet (and len < GW_H1_HEAD_MAX).
 *   GW_H1_ERROR: *err says why; the caller answers err->status and
 *                closes the connection.
 * Thread-safe (touches only its arguments).
 */
gw_h1_status gw_h1_parse_head(char *buf, size_t len, gw_h1_scan *sc,
    gw_h1_head *h, size_t *head_len, gw_h1_error *err);

/**
 * gw_h1_field_get() returns the value of the first field named name
 * (case-insensitive), or NULL.
 */
const char *gw_h1_field_get(const gw_h1_head *h, const char *name);

/**
 * gw_h1_query_get() finds the first parameter name in a query string
 * ("a=1&b=2", NULL allowed) and returns its raw (still percent-encoded)
 * value and length, or NULL. A parameter without '=' has the value "".
 */
const char *gw_h1_query_get(
    const char *query, const char *name, size_t *value_len);

/**
 * gw_h1_chunked is the state of a chunked body decoder (RFC 9112 7.1).
 * Zero it before the body.
 */
typedef struct gw_h1_chunked {
	int      state;
	uint64_t left;     // data bytes left in the current chunk
	size_t   line;     // bytes of the current size line / trailer line
	size_t   trailers; // bytes of the trailer section so far
	int      digits;   // hex digits of the current chunk size
} gw_h1_chunked;

/**
 * gw_h1_chunked_step() decodes chunked-body bytes. It consumes bytes of
 * in (len bytes) and sets *used to how many. When it stops at body data,
 * *data and *data_len point at it (inside in; *data_len may be 0 otherwise).
 *   GW_H1_MORE:  used everything given (possibly returning data): call
 *                again with more bytes.
 *   GW_H1_DONE:  the body (last chunk and trailers) ended; bytes after
 *                *used belong to the next request. Trailer fields are
 *                checked like header fields and dropped.
 *   GW_H1_ERROR: malformed (err set: 400): close the connection.
 * Call in a loop while *used < len and the status is GW_H1_MORE with data.
 */
gw_h1_status gw_h1_chunked_step(gw_h1_chunked *d, const char *in, size_t len,
    size_t *used, const char **data, size_t *data_len, gw_h1_error *err);

#endif // GW_HTTP1_H
