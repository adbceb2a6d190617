// SPDX-License-Identifier: MIT
//
// The threads routes: request JSON -> proto request, and the thread-
// service's reply -> JSON response. Input rules (the LangGraph contract,
// ../shared/reference/langgraph-threads-api.md): the body is parsed as JSON
// whatever its Content-Type, an empty body is {}, unknown keys are ignored,
// null means "not given", and a wrong type or value gets 422 with a detail
// naming the field. The thread-service is trusted to have validated what it
// stores, but its JSON text is still parsed with the bounded parser.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "gateway/gw.h"

// ---------------------------------------------------------------------
// Request helpers (shared with route_state.c through gw.h)
// ---------------------------------------------------------------------

char *
gw_req_keep(gw_request *req, char *s)
{
	CM_ASSERT(req->nstrs < GW_REQ_STRS_MAX);
	req->strs[req->nstrs++] = s;
	return (s);
}

void
gw_request_fini(gw_request *req)
{
	if (req == NULL) {
		return;
	}
	for (int i = 0; i < req->nstrs; i++) {
		free(req->strs[i]);
	}
	free(req->ids);
	free(req->id_buf);
	memset(req, 0, sizeof(*req));
}

// str_is() is 1 when v is the JSON string want - all of it: jansson
// accepts "\u0000", and "idle\u0000x" must not read as "idle".
static int
str_is(const json_t *v, const char *want)
{
	return (json_is_string(v) && json_string_length(v) == strlen(want) &&
	    memcmp(json_string_value(v), want, strlen(want)) == 0);
}

static cm_err fail(char *detail, size_t detail_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static cm_err
fail(char *detail, size_t detail_len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, detail_len, fmt, ap);
	va_end(ap);
	return (CM_EINVAL);
}

cm_err
gw_body_object(const char *key, const json_t *body, const char **out_text,
    gw_request *req, char *detail, size_t detail_len)
{
	const json_t *v = json_object_get(body, key);

	if (v == NULL || json_is_null(v)) {
		*out_text = "";
		return (CM_OK);
	}
	if (!json_is_object(v)) {
		return (fail(detail, detail_len, "%s must be an object", key));
	}
	if (json_object_size(v) == 0) {
		*out_text = "";
		return (CM_OK);
	}
	*out_text = gw_req_keep(req, cm_json_dump(v));
	return (CM_OK);
}

cm_err
gw_body_string(const char *key, const json_t *body, size_t max,
    const char **out, char *detail, size_t detail_len)
{
	const json_t *v = json_object_get(body, key);

	if (v == NULL || json_is_null(v)) {
		*out = NULL;
		return (CM_OK);
	}
	if (!json_is_string(v) || json_string_length(v) > max ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		return (fail(
		    detail, detail_len, "%s must be a short string", key));
	}
	*out = json_string_value(v);
	return (CM_OK);
}

cm_err
gw_body_int(const char *key, const json_t *body, int64_t min, int64_t max,
    int64_t def, int64_t *out, char *detail, size_t detail_len)
{
	const json_t *v = json_object_get(body, key);

	if (v == NULL || json_is_null(v)) {
		*out = def;
		return (CM_OK);
	}
	if (!json_is_integer(v) || json_integer_value(v) < min ||
	    json_integer_value(v) > max) {
		return (fail(detail, detail_len,
		    "%s must be an integer between %lld and %lld", key,
		    (long long) min, (long long) max));
	}
	*out = json_integer_value(v);
	return (CM_OK);
}

// uuid_value() canonicalises a JSON string holding a UUID into a kept copy.
static cm_err
uuid_value(const json_t *v, gw_request *req, const char **out)
{
	char buf[CM_UUID_LEN + 1];

	if (!json_is_string(v) ||
	    cm_uuid_parse(json_string_value(v), json_string_length(v), buf) !=
	        CM_OK) {
		return (CM_EINVAL);
	}
	*out = gw_req_keep(req, cm_xstrdup(buf));
	return (CM_OK);
}

cm_err
gw_body_uuid(const char *key, const json_t *body, const char **out,
    gw_request *req, char *detail, size_t detail_len)
{
	const json_t *v = json_object_get(body, key);

	if (v == NULL || json_is_null(v)) {
		*out = "";
		return (CM_OK);
	}
	if (uuid_value(v, req, out) != CM_OK) {
		return (fail(detail, detail_len, "%s must be a UUID", key));
	}
	return (CM_OK);
}

// uuid_list() reads an array of UUIDs into req->ids (owned).
static cm_err
uuid_list(const char *key, const json_t *body, gw_request *req, size_t *n_out,
    char *detail, size_t detail_len)
{
	const json_t *v = json_object_get(body, key);
	size_t        n, i;
	const json_t *e;

	if (v == NULL || json_is_null(v)) {
		*n_out = 0;
		return (CM_OK);
	}
	if (!json_is_array(v) || json_array_size(v) > GW_IDS_MAX) {
		snprintf(detail, detail_len,
		    "%s must be a list of at most %d UUIDs", key, GW_IDS_MAX);
		return (CM_EINVAL);
	}
	n           = json_array_size(v);
	req->ids    = cm_xcalloc(n + 1, sizeof(char *));
	req->id_buf = cm_xcalloc(n + 1, CM_UUID_LEN + 1);
	json_array_foreach(v, i, e)
	{
		char *slot = req->id_buf + i * (CM_UUID_LEN + 1);
		if (!json_is_string(e) ||
		    cm_uuid_parse(json_string_value(e), json_string_length(e),
		        slot) != CM_OK) {
			snprintf(detail, detail_len, "%s[%zu] must be a UUID",
			    key, i);
			return (CM_EINVAL);
		}
		req->ids[i] = slot;
	}
	*n_out = n;
	return (CM_OK);
}

// ttl_value() reads a ttl: a number of minutes or {"ttl": n, "strategy":
// "delete"}. *given is 0 when absent or null.
static cm_err
ttl_value(const json_t *body, double *minutes, const char **strategy,
    int *given, char *detail, size_t detail_len)
{
	const json_t *v  = json_object_get(body, "ttl");
	const json_t *n  = v;
	const char   *st = "delete";

	if (v == NULL || json_is_null(v)) {
		*given = 0;
		return (CM_OK);
	}
	if (json_is_object(v)) {
		const json_t *s = json_object_get(v, "strategy");
		n               = json_object_get(v, "ttl");
		if (s != NULL && !json_is_null(s)) {
			if (!str_is(s, "delete")) {
				snprintf(detail, detail_len,
				    "ttl.strategy must be \"delete\"");
				return (CM_EINVAL);
			}
		}
	}
	if (n == NULL || !json_is_number(n) ||
	    !isfinite(json_number_value(n)) || json_number_value(n) < 0) {
		snprintf(detail, detail_len,
		    "ttl must be a number of minutes >= 0 or "
		    "{\"ttl\": minutes, \"strategy\": \"delete\"}");
		return (CM_EINVAL);
	}
	*minutes  = json_number_value(n);
	*strategy = *minutes > 0 ? st : "";
	*given    = 1;
	return (CM_OK);
}

static cm_err
status_value(
    const json_t *body, const char **out, char *detail, size_t detail_len)
{
	static const char *ok[] = { "idle", "busy", "interrupted", "error" };
	const json_t      *v    = json_object_get(body, "status");

	if (v == NULL || json_is_null(v)) {
		*out = "";
		return (CM_OK);
	}
	for (size_t i = 0; i < 4; i++) {
		if (str_is(v, ok[i])) {
			*out = ok[i];
			return (CM_OK);
		}
	}
	snprintf(detail, detail_len,
	    "status must be one of idle, busy, interrupted, error");
	return (CM_EINVAL);
}

// ---------------------------------------------------------------------
// select
// ---------------------------------------------------------------------

static const struct {
	const char *name;
	unsigned    bit;
} fields[] = {
	{ "thread_id", GW_F_THREAD_ID },
	{ "created_at", GW_F_CREATED_AT },
	{ "updated_at", GW_F_UPDATED_AT },
	{ "metadata", GW_F_METADATA },
	{ "config", GW_F_CONFIG },
	{ "context", GW_F_CONTEXT },
	{ "status", GW_F_STATUS },
	{ "values", GW_F_VALUES },
	{ "interrupts", GW_F_INTERRUPTS },
	{ "error", GW_F_ERROR },
	{ "ttl", GW_F_TTL },
};

cm_err
gw_select_parse(
    const json_t *sel, unsigned *mask, char *detail, size_t detail_len)
{
	unsigned      m = 0;
	size_t        i;
	const json_t *e;

	if (!json_is_array(sel) || json_array_size(sel) > GW_SELECT_MAX) {
		snprintf(detail, detail_len,
		    "select must be a list of at most %d field names",
		    GW_SELECT_MAX);
		return (CM_EINVAL);
	}
	json_array_foreach(sel, i, e)
	{
		size_t f;
		for (f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
			// "thread_id\u0000" is not a field (str_is).
			if (str_is(e, fields[f].name)) {
				break;
			}
		}
		if (f == sizeof(fields) / sizeof(fields[0])) {
			if (json_is_string(e) &&
			    json_string_length(e) <= GW_SHORT_STR_MAX &&
			    strlen(json_string_value(e)) ==
			        json_string_length(e)) {
				snprintf(detail, detail_len,
				    "select: unknown field '%s'",
				    json_string_value(e));
			} else {
				snprintf(detail, detail_len,
				    "select[%zu] must be a field name", i);
			}
			return (CM_EINVAL);
		}
		m |= fields[f].bit;
	}
	*mask = m;
	return (CM_OK);
}

// ---------------------------------------------------------------------
// Building requests
// ---------------------------------------------------------------------

cm_err
gw_build_create(const json_t *b, gw_query_fn query, void *query_arg,
    gw_request *req, char *d, size_t dl)
{
	(void) query;
	(void) query_arg;
	Threadgate__Threads__V1__CreateThreadRequest *c      = &req->u.create;
	const char                                   *s      = NULL;
	const char                                   *ttl_st = "";
	int                                           ttl_given = 0;
	const json_t                                 *ss;
	cm_err                                        rv;

	*c = (Threadgate__Threads__V1__CreateThreadRequest)
	    THREADGATE__THREADS__V1__CREATE_THREAD_REQUEST__INIT;
	req->owner_slot = &c->owner;
	rv              = gw_body_uuid("thread_id", b, &s, req, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	c->thread_id = (char *) s;
	rv           = gw_body_object("metadata", b, &s, req, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	c->metadata_json = (char *) s;
	rv = gw_body_string("if_exists", b, GW_SHORT_STR_MAX, &s, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	if (s == NULL || strcmp(s, "raise") == 0) {
		c->if_exists =
		    THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_RAISE;
	} else if (strcmp(s, "do_nothing") == 0) {
		c->if_exists =
		    THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_DO_NOTHING;
	} else {
		return (fail(
		    d, dl, "%s must be 'raise' or 'do_nothing'", "if_exists"));
	}
	rv = ttl_value(b, &c->ttl_minutes, &ttl_st, &ttl_given, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	c->ttl_strategy = (char *) ttl_st;
	ss              = json_object_get(b, "supersteps");
	if (ss != NULL && !json_is_null(ss)) {
		if (!json_is_array(ss)) {
			return (
			    fail(d, dl, "%s must be a list", "supersteps"));
		}
		if (json_array_size(ss) > 0) {
			c->supersteps_json =
			    gw_req_keep(req, cm_json_dump(ss));
		}
	}
	return (CM_OK);
}

cm_err
gw_build_patch(const json_t *b, gw_query_fn query, void *query_arg,
    gw_request *req, char *d, size_t dl)
{
	(void) query;
	(void) query_arg;
	Threadgate__Threads__V1__UpdateThreadRequest *u      = &req->u.update;
	const char                                   *s      = NULL;
	const char                                   *ttl_st = "";
	int                                           given  = 0;
	cm_err                                        rv;

	*u = (Threadgate__Threads__V1__UpdateThreadRequest)
	    THREADGATE__THREADS__V1__UPDATE_THREAD_REQUEST__INIT;
	req->owner_slot = &u->owner;
	u->thread_id    = req->thread_id;
	rv              = gw_body_object("metadata", b, &s, req, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	u->metadata_json = (char *) s;
	rv = ttl_value(b, &u->ttl_minutes, &ttl_st, &given, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	u->ttl_strategy = (char *) ttl_st;
	u->has_ttl      = given;
	return (CM_OK);
}

cm_err
gw_build_search(const json_t *b, gw_query_fn query, void *query_arg,
    gw_request *req, char *d, size_t dl)
{
	(void) query;
	(void) query_arg;
	Threadgate__Threads__V1__SearchThreadsRequest *s = &req->u.search;
	const char                                    *t = NULL;
	int64_t                                        n = 0;
	const json_t                                  *sel;
	cm_err                                         rv;

	*s = (Threadgate__Threads__V1__SearchThreadsRequest)
	    THREADGATE__THREADS__V1__SEARCH_THREADS_REQUEST__INIT;
	req->owner_slot = &s->owner;
	rv              = gw_body_object("metadata", b, &t, req, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	s->metadata_json = (char *) t;
	rv               = gw_body_object("values", b, &t, req, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	s->values_json = (char *) t;
	rv             = uuid_list("ids", b, req, &s->n_ids, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	s->ids = req->ids;
	rv     = status_value(b, &t, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	s->status = (char *) t;
	rv        = gw_body_int(
	           "limit", b, 1, GW_LIMIT_MAX, GW_LIMIT_DEFAULT, &n, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	s->limit = (int32_t) n;
	rv       = gw_body_int("offset", b, 0, GW_OFFSET_MAX, 0, &n, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	s->offset = (int32_t) n;
	rv        = gw_body_string("sort_by", b, GW_SHORT_STR_MAX, &t, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	if (t == NULL || strcmp(t, "created_at") == 0) {
		s->sort_by =
		    THREADGATE__THREADS__V1__SORT_BY__SORT_BY_CREATED_AT;
	} else if (strcmp(t, "updated_at") == 0) {
		s->sort_by =
		    THREADGATE__THREADS__V1__SORT_BY__SORT_BY_UPDATED_AT;
	} else if (strcmp(t, "thread_id") == 0) {
		s->sort_by =
		    THREADGATE__THREADS__V1__SORT_BY__SORT_BY_THREAD_ID;
	} else if (strcmp(t, "status") == 0) {
		s->sort_by = THREADGATE__THREADS__V1__SORT_BY__SORT_BY_STATUS;
	} else {
		return (fail(d, dl,
		    "%s must be one of thread_id, status, created_at, "
		    "updated_at",
		    "sort_by"));
	}
	rv = gw_body_string("sort_order", b, GW_SHORT_STR_MAX, &t, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	if (t == NULL || strcmp(t, "desc") == 0) {
		s->ascending = 0;
	} else if (strcmp(t, "asc") == 0) {
		s->ascending = 1;
	} else {
		return (
		    fail(d, dl, "%s must be 'asc' or 'desc'", "sort_order"));
	}
	sel = json_object_get(b, "select");
	if (sel != NULL && !json_is_null(sel)) {
		rv = gw_select_parse(sel, &req->select, d, dl);
		if (rv != CM_OK) {
			return (rv);
		}
	}
	return (CM_OK);
}

cm_err
gw_build_count(const json_t *b, gw_query_fn query, void *query_arg,
    gw_request *req, char *d, size_t dl)
{
	(void) query;
	(void) query_arg;
	Threadgate__Threads__V1__CountThreadsRequest *c = &req->u.count;
	const char                                   *t = NULL;
	cm_err                                        rv;

	*c = (Threadgate__Threads__V1__CountThreadsRequest)
	    THREADGATE__THREADS__V1__COUNT_THREADS_REQUEST__INIT;
	req->owner_slot = &c->owner;
	rv              = gw_body_object("metadata", b, &t, req, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	c->metadata_json = (char *) t;
	rv               = gw_body_object("values", b, &t, req, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	c->values_json = (char *) t;
	rv             = status_value(b, &t, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	c->status = (char *) t;
	return (CM_OK);
}

cm_err
gw_build_prune(const json_t *b, gw_query_fn query, void *query_arg,
    gw_request *req, char *d, size_t dl)
{
	(void) query;
	(void) query_arg;
	Threadgate__Threads__V1__PruneThreadsRequest *p = &req->u.prune;
	const char                                   *t = NULL;
	cm_err                                        rv;

	*p = (Threadgate__Threads__V1__PruneThreadsRequest)
	    THREADGATE__THREADS__V1__PRUNE_THREADS_REQUEST__INIT;
	req->owner_slot = &p->owner;
	rv = uuid_list("thread_ids", b, req, &p->n_thread_ids, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	p->thread_ids = req->ids;
	rv = gw_body_string("strategy", b, GW_SHORT_STR_MAX, &t, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	if (t == NULL || strcmp(t, "delete") == 0) {
		p->strategy = "delete";
	} else if (strcmp(t, "keep_latest") == 0) {
		p->strategy = "keep_latest";
	} else {
		return (fail(d, dl, "%s must be 'delete' or 'keep_latest'",
		    "strategy"));
	}
	return (CM_OK);
}

cm_err
gw_build_ref(const json_t *b, gw_query_fn query, void *query_arg,
    gw_request *req, char *d, size_t dl)
{
	(void) b;
	(void) query;
	(void) query_arg;
	(void) d;
	(void) dl;
	req->u.ref = (Threadgate__Threads__V1__ThreadRef)
	    THREADGATE__THREADS__V1__THREAD_REF__INIT;
	req->owner_slot      = &req->u.ref.owner;
	req->u.ref.thread_id = req->thread_id;
	return (CM_OK);
}

cm_err
gw_request_build(const gw_match *m, const char *body, size_t len,
    size_t max_len, gw_query_fn query, void *query_arg, gw_request *req,
    char *detail, size_t detail_len)
{
	json_t *b = NULL;
	cm_err  rv;
	size_t  i;

	req->route  = m->route;
	req->select = GW_F_ALL & ~(GW_F_CONTEXT | GW_F_ERROR);
	snprintf(req->thread_id, sizeof(req->thread_id), "%s", m->thread_id);
	snprintf(req->checkpoint_id, sizeof(req->checkpoint_id), "%s",
	    m->checkpoint_id);

	// Routes without a body ignore whatever was sent (copy sends none).
	if (!m->route->body) {
		len = 0;
	}
	// An empty (or all-whitespace) body is {}.
	for (i = 0; i < len; i++) {
		if (body[i] != ' ' && body[i] != '\t' && body[i] != '\r' &&
		    body[i] != '\n') {
			break;
		}
	}
	if (i == len) {
		b = json_object();
	} else {
		rv = cm_json_parse(body, len, max_len, &b, NULL, 0);
		if (rv == CM_ETOOBIG) {
			snprintf(detail, detail_len, "Request body too large");
			goto out;
		}
		if (rv != CM_OK) {
			snprintf(detail, detail_len,
			    "Invalid JSON in request body");
			rv = CM_EINVAL;
			goto out;
		}
	}
	if (!json_is_object(b)) {
		snprintf(
		    detail, detail_len, "Request body must be a JSON object");
		rv = CM_EINVAL;
		goto out;
	}

	// Meta routes build nothing.
	rv = m->route->build != NULL
	    ? m->route->build(b, query, query_arg, req, detail, detail_len)
	    : CM_OK;
out:
	json_decref(b);
	return (rv);
}

const ProtobufCMessage *
gw_request_message(gw_request *req)
{
	if (req->route == NULL || req->route->rpc == NULL) {
		return (NULL);
	}
	// Every member of the union starts with its ProtobufCMessage base.
	return (&req->u.ref.base);
}

// ---------------------------------------------------------------------
// Rendering replies
// ---------------------------------------------------------------------

cm_err
gw_jw_field(gw_jw *w, const char *key, const char *text, const char *def)
{
	gw_jw_key(w, key);
	if (text == NULL || text[0] == '\0') {
		text = def;
	}
	return (gw_jw_json(w, text, strlen(text)));
}

static void
set_time(gw_jw *w, const char *key, int64_t us)
{
	char buf[CM_ISO8601_SIZE];

	gw_jw_key(w, key);
	gw_jw_str(w, cm_time_iso8601(us, buf));
}

cm_err
gw_thread_json(
    const Threadgate__Threads__V1__Thread *t, unsigned mask, gw_jw *w)
{
	cm_err rv = CM_OK;

	gw_jw_obj(w);
	if (mask & GW_F_THREAD_ID) {
		gw_jw_key(w, "thread_id");
		gw_jw_str(w, t->thread_id);
	}
	if (mask & GW_F_CREATED_AT) {
		set_time(w, "created_at", t->created_at_us);
	}
	if (mask & GW_F_UPDATED_AT) {
		set_time(w, "updated_at", t->updated_at_us);
	}
	if ((mask & GW_F_METADATA) &&
	    (rv = gw_jw_field(w, "metadata", t->metadata_json, "{}")) !=
	        CM_OK) {
		return (CM_EINTERNAL);
	}
	if (mask & GW_F_STATUS) {
		gw_jw_key(w, "status");
		gw_jw_str(w, t->status[0] ? t->status : "idle");
	}
	if ((mask & GW_F_CONFIG) &&
	    (rv = gw_jw_field(w, "config", t->config_json, "{}")) != CM_OK) {
		return (CM_EINTERNAL);
	}
	if (mask & GW_F_CONTEXT) {
		gw_jw_key(w, "context");
		gw_jw_raw_value(w, "{}");
	}
	// values is omitted when the service sent none ("").
	if ((mask & GW_F_VALUES) && t->values_json[0] != '\0' &&
	    (rv = gw_jw_field(w, "values", t->values_json, "")) != CM_OK) {
		return (CM_EINTERNAL);
	}
	if ((mask & GW_F_INTERRUPTS) &&
	    (rv = gw_jw_field(w, "interrupts", t->interrupts_json, "{}")) !=
	        CM_OK) {
		return (CM_EINTERNAL);
	}
	if (mask & GW_F_ERROR) {
		gw_jw_key(w, "error");
		gw_jw_null(w);
	}
	if ((mask & GW_F_TTL) && t->ttl_minutes > 0) {
		gw_jw_key(w, "ttl");
		gw_jw_obj(w);
		gw_jw_key(w, "ttl");
		gw_jw_real(w, t->ttl_minutes);
		gw_jw_key(w, "strategy");
		gw_jw_str(w, t->ttl_strategy[0] ? t->ttl_strategy : "delete");
		gw_jw_obj_end(w);
	}
	gw_jw_obj_end(w);
	return (w->err ? CM_EINTERNAL : CM_OK);
}

cm_err
gw_render_search(const gw_request *req, const ProtobufCMessage *reply,
    gw_jw *w, gw_response *r)
{
	const Threadgate__Threads__V1__SearchThreadsReply *s =
	    (const Threadgate__Threads__V1__SearchThreadsReply *) reply;
	char num[32];

	gw_jw_arr(w);
	for (size_t i = 0; i < s->n_threads; i++) {
		if (gw_thread_json(s->threads[i], req->select, w) != CM_OK) {
			return (CM_EINTERNAL);
		}
	}
	gw_jw_arr_end(w);
	snprintf(num, sizeof(num), "%lld", (long long) s->total);
	gw_response_header(r, "X-Pagination-Total", num);
	if ((int64_t) req->u.search.offset + (int64_t) s->n_threads <
	    s->total) {
		snprintf(num, sizeof(num), "%lld",
		    (long long) req->u.search.offset +
		        (long long) req->u.search.limit);
		gw_response_header(r, "X-Pagination-Next", num);
	}
	return (CM_OK);
}

cm_err
gw_render_thread(const gw_request *req, const ProtobufCMessage *reply,
    gw_jw *w, gw_response *r)
{
	if (req->route->id == GW_R_THREAD_PATCH && req->prefer_minimal) {
		r->status = 204;
		return (CM_OK);
	}
	return (gw_thread_json((const Threadgate__Threads__V1__Thread *) reply,
	    GW_F_ALL & ~(GW_F_CONTEXT | GW_F_ERROR), w));
}

cm_err
gw_render_no_content(const gw_request *req, const ProtobufCMessage *reply,
    gw_jw *w, gw_response *r)
{
	(void) req;
	(void) reply;
	(void) w;
	r->status = 204;
	return (CM_OK);
}

cm_err
gw_render_count(const gw_request *req, const ProtobufCMessage *reply, gw_jw *w,
    gw_response *r)
{
	(void) req;
	(void) r;
	gw_jw_int(
	    w, ((const Threadgate__Threads__V1__CountReply *) reply)->count);
	return (CM_OK);
}

cm_err
gw_render_prune(const gw_request *req, const ProtobufCMessage *reply, gw_jw *w,
    gw_response *r)
{
	(void) req;
	(void) r;
	gw_jw_obj(w);
	gw_jw_key(w, "pruned_count");
	gw_jw_int(w,
	    ((const Threadgate__Threads__V1__PruneThreadsReply *) reply)
	        ->pruned_count);
	gw_jw_obj_end(w);
	return (CM_OK);
}

cm_err
gw_reply_render(
    const gw_request *req, const ProtobufCMessage *reply, gw_response *r)
{
	gw_response out = { 0 };
	gw_jw       w;
	cm_err      rv;

	if (req->route->render == NULL) {
		return (CM_EINTERNAL);
	}
	gw_jw_init(&w);
	rv = req->route->render(req, reply, &w, &out);
	if (rv != CM_OK || w.err) {
		gw_jw_fini(&w);
		gw_response_fini(&out);
		return (CM_EINTERNAL);
	}
	gw_response_fini(r);
	if (out.status == 204) {
		// No content: no body, no extra headers.
		gw_jw_fini(&w);
		gw_response_fini(&out);
		r->status = 204;
		return (CM_OK);
	}
	*r        = out;
	r->status = 200;
	r->body   = gw_jw_take(&w, &r->body_len);
	return (CM_OK);
}
