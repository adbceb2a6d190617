// SPDX-License-Identifier: MIT
//
// The gateway's one place that turns a cm_err into an HTTP answer: the
// status (gw_http_status_for), the {"detail": ...} JSON body and the
// headers a status requires (WWW-Authenticate on 401, Retry-After on 503).
// Also the small gw_response helpers every route uses. Every other module
// reports errors as cm_err + detail text and calls gw_error_response();
// none of them picks a status code for an error itself.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "gateway/gw.h"

void
gw_response_fini(gw_response *r)
{
	if (r == NULL) {
		return;
	}
	free(r->body);
	memset(r, 0, sizeof(*r));
}

void
gw_response_json(gw_response *r, unsigned status, const json_t *v)
{
	free(r->body);
	r->status   = status;
	r->body     = cm_json_dump(v);
	r->body_len = strlen(r->body);
}

void
gw_response_header(gw_response *r, const char *name, const char *value)
{
	if (r->nheaders >= GW_RESP_HEADERS_MAX) {
		cm_error(NULL, "response header %s dropped: too many", name);
		return;
	}
	snprintf(r->hname[r->nheaders], sizeof(r->hname[0]), "%s", name);
	snprintf(r->hvalue[r->nheaders], sizeof(r->hvalue[0]), "%s", value);
	r->nheaders++;
}

unsigned
gw_http_status_for(cm_err err)
{
	switch (err) {
	case CM_EINVAL:
		return (422);
	case CM_ENOENT:
		return (404);
	case CM_EEXIST:
	case CM_ECONFLICT:
		return (409);
	case CM_EPERM:
		return (403);
	case CM_EAUTH:
		return (401);
	case CM_EUNAVAIL:
		return (503);
	case CM_ETIMEDOUT:
		// Every upstream call has a deadline; one that passed means
		// "retry later" (503 + Retry-After): never a 401 (the token
		// may be fine) and never a success.
		return (503);
	case CM_ETOOBIG:
		return (413);
	case CM_ENOTSUP:
		return (501);
	case CM_EINTERNAL:
	case CM_OK:
	default:
		// CM_OK here is a bug in the caller: an error path must never
		// turn into a success.
		return (500);
	}
}

static const char *
default_detail(unsigned status)
{
	switch (status) {
	case 401:
		return ("Authentication required");
	case 403:
		return ("Forbidden");
	case 404:
		return ("Not found");
	case 409:
		return ("Conflict");
	case 413:
		return ("Request body too large");
	case 422:
		return ("Invalid request");
	case 405:
		return ("Method not allowed");
	case 414:
		return ("URI too long");
	case 501:
		return ("Not implemented");
	case 503:
		return ("Service unavailable, retry later");
	default:
		return ("Internal server error");
	}
}

void
gw_error_response(
    gw_response *r, cm_err err, const char *detail, int token_presented)
{
	unsigned status = gw_http_status_for(err);
	json_t  *body;

	gw_response_fini(r); // an error replaces whatever was built
	if (detail == NULL || detail[0] == '\0') {
		detail = default_detail(status);
	}
	body = json_pack("{s:s}", "detail", detail);
	if (body == NULL) {
		// Only invalid UTF-8 in a detail can get here.
		body = json_pack("{s:s}", "detail", default_detail(status));
	}
	gw_response_json(r, status, body);
	json_decref(body);
	if (status == 401) {
		gw_response_header(r, "WWW-Authenticate",
		    token_presented ? "Bearer realm=\"threadgate\", "
		                      "error=\"invalid_token\""
		                    : "Bearer realm=\"threadgate\"");
	} else if (status == 503) {
		gw_response_header(r, "Retry-After", "1");
	}
}

void
gw_status_response(gw_response *r, unsigned status, const char *detail)
{
	json_t *body;

	gw_response_fini(r);
	body = json_pack("{s:s}", "detail",
	    detail != NULL && detail[0] != '\0' ? detail
	                                        : default_detail(status));
	if (body == NULL) {
		body = json_pack("{s:s}", "detail", default_detail(status));
	}
	gw_response_json(r, status, body);
	json_decref(body);
}
