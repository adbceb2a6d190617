// SPDX-License-Identifier: MIT
//
// libFuzzer target: the gateway's path from raw request bytes to the
// proto request it sends upstream - the strict HTTP/1.1 parser
// (http1.c), the chunked body decoder, the router and the route's proto
// builder (routes.c, route_threads.c, route_state.c), then packing the
// proto the way the rpc layer does. No sockets, no threads.
//
// Input: the bytes a client sends on a connection. The first byte picks
// where the head is split in two reads; the rest is the stream.
// Checks besides the sanitizers:
//   - the head parsed in two reads gives the same outcome as in one;
//   - a parsed head's fields hold no control byte (what was let through
//     is what the gateway will copy into logs and upstream);
//   - a built request packs, and unpacks to the same size.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"
#include "gateway/gw.h"
#include "gateway/http1.h"

// Largest body the builder is given (the gateway's default cap).
#define FUZZ_BODY_MAX GW_DEFAULT_MAX_BODY

typedef struct fq {
	const char *query;
	char        buf[GW_PARAM_MAX];
} fq;

static const char *
query_cb(void *arg, const char *name)
{
	fq         *q = arg;
	size_t      len;
	const char *raw = gw_h1_query_get(q->query, name, &len);

	if (raw == NULL) {
		return (NULL);
	}
	if (gw_pct_decode(raw, len, q->buf, sizeof(q->buf)) < 0) {
		return ("%");
	}
	return (q->buf);
}

// body_of() collects the request body that follows the head (Content-
// Length or chunked) from rest; returns its length, or -1 when malformed.
static long
body_of(const gw_h1_head *h, const char *rest, size_t n, char *out)
{
	if (h->chunked) {
		gw_h1_chunked d   = { 0 };
		size_t        off = 0, len = 0;
		gw_h1_status  st = GW_H1_MORE;
		while (off < n && st == GW_H1_MORE) {
			const char *data;
			size_t      dl, used;
			gw_h1_error err;
			st = gw_h1_chunked_step(
			    &d, rest + off, n - off, &used, &data, &dl, &err);
			if (st == GW_H1_ERROR) {
				return (-1);
			}
			if (dl > 0 && len + dl <= FUZZ_BODY_MAX) {
				memcpy(out + len, data, dl);
				len += dl;
			}
			off += used;
		}
		return ((long) len);
	}
	if (h->content_length <= 0) {
		return (0);
	}
	if ((uint64_t) h->content_length < n) {
		n = (size_t) h->content_length;
	}
	if (n > FUZZ_BODY_MAX) {
		n = FUZZ_BODY_MAX;
	}
	memcpy(out, rest, n);
	return ((long) n);
}

static void
build(const gw_h1_head *h, const char *body, size_t len)
{
	gw_match   m;
	gw_request req = { 0 };
	fq         q   = { h->query, { 0 } };
	char       detail[GW_DETAIL_MAX];

	if (gw_route_match(h->method, h->path, &m) != GW_MATCH_OK ||
	    m.route->action == GW_ACT_NONE) {
		return;
	}
	if (gw_request_build(&m, body, len, FUZZ_BODY_MAX, query_cb, &q, &req,
	        detail, sizeof(detail)) == CM_OK) {
		const ProtobufCMessage *msg = gw_request_message(&req);
		if (msg != NULL) {
			size_t            n;
			uint8_t          *buf;
			ProtobufCMessage *back;
			// The owner is set by the upstream step; any value.
			*req.owner_slot = "fuzz-owner";
			n   = protobuf_c_message_get_packed_size(msg);
			buf = cm_xmalloc(n + 1);
			if (protobuf_c_message_pack(msg, buf) != n) {
				abort();
			}
			back = protobuf_c_message_unpack(
			    msg->descriptor, NULL, n, buf);
			if (back == NULL ||
			    protobuf_c_message_get_packed_size(back) != n) {
				abort();
			}
			protobuf_c_message_free_unpacked(back, NULL);
			free(buf);
		}
	}
	gw_request_fini(&req);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char        *a, *b, *body;
	size_t       split, hl = 0, hl2 = 0;
	gw_h1_scan   sa = { 0 }, sb = { 0 };
	gw_h1_head  *h1, *h2;
	gw_h1_error  e1 = { 0 }, e2 = { 0 };
	gw_h1_status st1, st2;

	if (size < 1) {
		return (0);
	}
	split = size > 1 ? (data[0] * (size - 1)) / 255 : 0;
	data++;
	size--;
	a  = cm_xmalloc(size + 1);
	b  = cm_xmalloc(size + 1);
	h1 = cm_xmalloc(sizeof(*h1));
	h2 = cm_xmalloc(sizeof(*h2));
	memcpy(a, data, size);
	memcpy(b, data, size);
	// One read, and two reads split where the first byte said.
	st1 = gw_h1_parse_head(a, size, &sa, h1, &hl, &e1);
	st2 = gw_h1_parse_head(b, split, &sb, h2, &hl2, &e2);
	if (st2 == GW_H1_MORE) {
		st2 = gw_h1_parse_head(b, size, &sb, h2, &hl2, &e2);
	}
	if (st1 != st2 || (st1 == GW_H1_ERROR && e1.status != e2.status) ||
	    (st1 == GW_H1_DONE && hl != hl2)) {
		abort();
	}
	if (st1 == GW_H1_DONE) {
		for (int i = 0; i < h1->nfields; i++) {
			for (const char *c = h1->fields[i].value; *c; c++) {
				if ((unsigned char) *c < 0x20 && *c != '\t') {
					abort();
				}
			}
		}
		body   = cm_xmalloc(size + 1); // the body is at most the input
		long n = body_of(h1, a + hl, size - hl, body);
		if (n >= 0) {
			build(h1, body, (size_t) n);
		}
		free(body);
	}
	free(a);
	free(b);
	free(h1);
	free(h2);
	return (0);
}
