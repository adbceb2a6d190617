// SPDX-License-Identifier: MIT
//
// The state and history routes of a thread: GET/POST .../state,
// .../state/{checkpoint_id}, .../state/checkpoint, PATCH .../state and
// GET/POST .../history. Builds their proto requests and renders the
// ThreadState JSON the LangGraph SDKs expect:
//   {"values", "next", "tasks": [], "checkpoint": {thread_id,
//    checkpoint_ns, checkpoint_id, checkpoint_map: null}, "metadata",
//    "created_at", "parent_checkpoint": {...} | null, "interrupts": []}
// A thread with no checkpoint yet has the empty state (values {}, next [],
// checkpoint null). Checkpoint ids arrive as plain ids, as {"checkpoint_id"}
// objects, or as a RunnableConfig {"configurable": {"checkpoint_id"}}
// (what the JS SDK passes as `before`); all three are accepted.
#include <stdio.h>
#include <string.h>

#include "common/json.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "gateway/gw.h"

void
gw_checkpoint_ref_json(
    gw_jw *w, const char *thread_id, const char *ns, const char *checkpoint_id)
{
	gw_jw_obj(w);
	gw_jw_key(w, "thread_id");
	gw_jw_str(w, thread_id);
	gw_jw_key(w, "checkpoint_ns");
	gw_jw_str(w, ns != NULL ? ns : "");
	gw_jw_key(w, "checkpoint_id");
	gw_jw_str(w, checkpoint_id);
	gw_jw_key(w, "checkpoint_map");
	gw_jw_null(w);
	gw_jw_obj_end(w);
}

cm_err
gw_checkpoint_state_json(
    const Threadgate__Threads__V1__Checkpoint *c, gw_jw *w)
{
	char buf[CM_ISO8601_SIZE];

	gw_jw_obj(w);
	if (gw_jw_field(w, "values", c->values_json, "{}") != CM_OK) {
		return (CM_EINTERNAL);
	}
	gw_jw_key(w, "next");
	gw_jw_arr(w);
	for (size_t i = 0; i < c->n_next; i++) {
		gw_jw_str(w, c->next[i]);
	}
	gw_jw_arr_end(w);
	gw_jw_key(w, "tasks");
	gw_jw_raw_value(w, "[]");
	gw_jw_key(w, "checkpoint");
	gw_checkpoint_ref_json(
	    w, c->thread_id, c->checkpoint_ns, c->checkpoint_id);
	if (gw_jw_field(w, "metadata", c->metadata_json, "{}") != CM_OK) {
		return (CM_EINTERNAL);
	}
	gw_jw_key(w, "created_at");
	gw_jw_str(w, cm_time_iso8601(c->created_at_us, buf));
	gw_jw_key(w, "parent_checkpoint");
	if (c->parent_checkpoint_id[0] != '\0') {
		gw_checkpoint_ref_json(w, c->thread_id, c->checkpoint_ns,
		    c->parent_checkpoint_id);
	} else {
		gw_jw_null(w);
	}
	gw_jw_key(w, "interrupts");
	gw_jw_raw_value(w, "[]");
	gw_jw_obj_end(w);
	return (w->err ? CM_EINTERNAL : CM_OK);
}

cm_err
gw_state_json(const Threadgate__Threads__V1__StateReply *s,
    const char *thread_id, gw_jw *w)
{
	char buf[CM_ISO8601_SIZE];

	(void) thread_id;
	if (s->has_checkpoint && s->checkpoint != NULL) {
		return (gw_checkpoint_state_json(s->checkpoint, w));
	}
	gw_jw_obj(w);
	gw_jw_key(w, "values");
	gw_jw_raw_value(w, "{}");
	gw_jw_key(w, "next");
	gw_jw_raw_value(w, "[]");
	gw_jw_key(w, "tasks");
	gw_jw_raw_value(w, "[]");
	gw_jw_key(w, "checkpoint");
	gw_jw_null(w);
	gw_jw_key(w, "metadata");
	gw_jw_raw_value(w, "{}");
	gw_jw_key(w, "created_at");
	gw_jw_str(w, cm_time_iso8601(s->thread_created_at_us, buf));
	gw_jw_key(w, "parent_checkpoint");
	gw_jw_null(w);
	gw_jw_key(w, "interrupts");
	gw_jw_raw_value(w, "[]");
	gw_jw_obj_end(w);
	return (w->err ? CM_EINTERNAL : CM_OK);
}

cm_err
gw_render_checkpoint(const gw_request *req, const ProtobufCMessage *reply,
    gw_jw *w, gw_response *r)
{
	const Threadgate__Threads__V1__Checkpoint *c =
	    (const Threadgate__Threads__V1__Checkpoint *) reply;

	(void) req;
	(void) r;
	gw_jw_obj(w);
	gw_jw_key(w, "checkpoint");
	gw_checkpoint_ref_json(
	    w, c->thread_id, c->checkpoint_ns, c->checkpoint_id);
	gw_jw_obj_end(w);
	return (w->err ? CM_EINTERNAL : CM_OK);
}

cm_err
gw_render_history(const gw_request *req, const ProtobufCMessage *reply,
    gw_jw *w, gw_response *r)
{
	const Threadgate__Threads__V1__HistoryReply *h =
	    (const Threadgate__Threads__V1__HistoryReply *) reply;

	(void) req;
	(void) r;
	gw_jw_arr(w);
	for (size_t i = 0; i < h->n_checkpoints; i++) {
		if (gw_checkpoint_state_json(h->checkpoints[i], w) != CM_OK) {
			return (CM_EINTERNAL);
		}
	}
	gw_jw_arr_end(w);
	return (CM_OK);
}

cm_err
gw_render_state(const gw_request *req, const ProtobufCMessage *reply, gw_jw *w,
    gw_response *r)
{
	(void) r;
	return (
	    gw_state_json((const Threadgate__Threads__V1__StateReply *) reply,
	        req->thread_id, w));
}

// checkpoint_id_of() reads a checkpoint id given as a string, as
// {"checkpoint_id": ...} or as {"configurable": {"checkpoint_id": ...}}.
// *id is "" when v is absent/null or names no id; *ns gets checkpoint_ns
// when present (else unchanged).
static cm_err
checkpoint_id_of(const char *key, const json_t *v, gw_request *req,
    const char **id, const char **ns, char *d, size_t dl)
{
	const json_t *obj    = v;
	const json_t *cid    = NULL;
	const json_t *cns    = NULL;
	const char   *ns_out = NULL;
	char          buf[CM_UUID_LEN + 1];

	if (v == NULL || json_is_null(v)) {
		*id = "";
		return (CM_OK);
	}
	if (json_is_object(v) &&
	    json_is_object(json_object_get(v, "configurable"))) {
		obj = json_object_get(v, "configurable");
	}
	if (json_is_string(v)) {
		cid = v;
	} else if (json_is_object(obj)) {
		cid = json_object_get(obj, "checkpoint_id");
		cns = json_object_get(obj, "checkpoint_ns");
	} else {
		snprintf(
		    d, dl, "%s must be a checkpoint id or an object", key);
		return (CM_EINVAL);
	}
	if (cns != NULL && !json_is_null(cns)) {
		if (!json_is_string(cns) ||
		    json_string_length(cns) > GW_SHORT_STR_MAX ||
		    strlen(json_string_value(cns)) !=
		        json_string_length(cns)) {
			snprintf(d, dl,
			    "%s.checkpoint_ns must be a short string", key);
			return (CM_EINVAL);
		}
		ns_out = json_string_value(cns);
	}
	if (cid != NULL && !json_is_null(cid) &&
	    (!json_is_string(cid) ||
	        cm_uuid_parse(json_string_value(cid), json_string_length(cid),
	            buf) != CM_OK)) {
		snprintf(d, dl, "%s: checkpoint_id must be a UUID", key);
		return (CM_EINVAL);
	}
	// Valid: now write the outputs (kept copies; b is freed later).
	if (ns_out != NULL) {
		*ns = gw_req_keep(req, cm_xstrdup(ns_out));
	}
	*id = (cid != NULL && !json_is_null(cid))
	    ? gw_req_keep(req, cm_xstrdup(buf))
	    : "";
	return (CM_OK);
}

cm_err
gw_build_history(const json_t *b, gw_query_fn query, void *qarg,
    gw_request *req, char *d, size_t dl)
{
	Threadgate__Threads__V1__GetHistoryRequest *h  = &req->u.history;
	const char                                 *t  = NULL;
	const char                                 *ns = "";
	int64_t                                     n  = 0;
	cm_err                                      rv;

	*h = (Threadgate__Threads__V1__GetHistoryRequest)
	    THREADGATE__THREADS__V1__GET_HISTORY_REQUEST__INIT;
	req->owner_slot = &h->owner;
	h->thread_id    = req->thread_id;
	if (req->route->id == GW_R_HISTORY_GET) {
		const char *q = query != NULL ? query(qarg, "limit") : NULL;
		n             = GW_LIMIT_DEFAULT;
		if (q != NULL &&
		    cm_parse_i64(q, 1, GW_LIMIT_MAX, &n) != CM_OK) {
			snprintf(d, dl,
			    "limit must be an integer between 1 and %d",
			    GW_LIMIT_MAX);
			return (CM_EINVAL);
		}
		h->limit = (int32_t) n;
		q        = query != NULL ? query(qarg, "before") : NULL;
		if (q != NULL && q[0] != '\0') {
			char buf[CM_UUID_LEN + 1];
			if (cm_uuid_parse(q, strlen(q), buf) != CM_OK) {
				snprintf(d, dl,
				    "before: checkpoint_id must be a UUID");
				return (CM_EINVAL);
			}
			h->before_checkpoint_id =
			    gw_req_keep(req, cm_xstrdup(buf));
		}
		return (CM_OK);
	}
	rv = gw_body_int(
	    "limit", b, 1, GW_LIMIT_MAX, GW_LIMIT_DEFAULT, &n, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	h->limit = (int32_t) n;
	rv       = checkpoint_id_of(
	          "before", json_object_get(b, "before"), req, &t, &ns, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	h->before_checkpoint_id = (char *) t;
	rv = gw_body_object("metadata", b, &t, req, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	h->metadata_json = (char *) t;
	rv = checkpoint_id_of("checkpoint", json_object_get(b, "checkpoint"),
	    req, &t, &ns, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	h->checkpoint_id = (char *) t;
	h->checkpoint_ns = (char *) ns;
	return (CM_OK);
}

// GET .../state and .../state/{cid}: the checkpoint id is the path's.
cm_err
gw_build_state_get(const json_t *b, gw_query_fn query, void *query_arg,
    gw_request *req, char *d, size_t dl)
{
	Threadgate__Threads__V1__GetStateRequest *s = &req->u.state;

	(void) b;
	(void) query;
	(void) query_arg;
	(void) d;
	(void) dl;
	*s = (Threadgate__Threads__V1__GetStateRequest)
	    THREADGATE__THREADS__V1__GET_STATE_REQUEST__INIT;
	req->owner_slot  = &s->owner;
	s->thread_id     = req->thread_id;
	s->checkpoint_id = req->checkpoint_id;
	return (CM_OK);
}

// POST .../state/checkpoint: the checkpoint is in the body.
cm_err
gw_build_state_checkpoint(const json_t *b, gw_query_fn query, void *query_arg,
    gw_request *req, char *d, size_t dl)
{
	Threadgate__Threads__V1__GetStateRequest *s  = &req->u.state;
	const char                               *t  = NULL;
	const char                               *ns = "";
	cm_err                                    rv;

	(void) gw_build_state_get(b, query, query_arg, req, d, dl);
	rv = checkpoint_id_of("checkpoint", json_object_get(b, "checkpoint"),
	    req, &t, &ns, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	s->checkpoint_id = (char *) t;
	s->checkpoint_ns = (char *) ns;
	return (CM_OK);
}

// The checkpoint a write names: "checkpoint_id" when given, else the id
// in "checkpoint" (a string or an object, see checkpoint_id_of); *ns gets
// the latter's checkpoint_ns.
static cm_err
body_checkpoint(const json_t *b, gw_request *req, const char **id,
    const char **ns, char *d, size_t dl)
{
	const char *cid;
	const char *t = NULL;
	cm_err      rv;

	rv = gw_body_uuid("checkpoint_id", b, &cid, req, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	rv = checkpoint_id_of("checkpoint", json_object_get(b, "checkpoint"),
	    req, &t, ns, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	*id = cid[0] != '\0' ? cid : t;
	return (CM_OK);
}

cm_err
gw_build_state_update(const json_t *b, gw_query_fn query, void *query_arg,
    gw_request *req, char *d, size_t dl)
{
	Threadgate__Threads__V1__UpdateStateRequest *u = &req->u.update_state;
	const json_t *v  = json_object_get(b, "values");
	const char   *t  = NULL;
	const char   *ns = "";
	const char   *cid;
	cm_err        rv;

	(void) query;
	(void) query_arg;
	*u = (Threadgate__Threads__V1__UpdateStateRequest)
	    THREADGATE__THREADS__V1__UPDATE_STATE_REQUEST__INIT;
	req->owner_slot = &u->owner;
	u->thread_id    = req->thread_id;
	if (v == NULL) {
		u->values_json = "null";
	} else if (json_is_object(v) || json_is_array(v) || json_is_null(v)) {
		u->values_json = gw_req_keep(req, cm_json_dump(v));
	} else {
		snprintf(d, dl, "values must be an object, a list or null");
		return (CM_EINVAL);
	}
	rv = gw_body_string("as_node", b, GW_SHORT_STR_MAX, &t, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	u->as_node = (char *) (t != NULL ? t : "");
	rv         = body_checkpoint(b, req, &cid, &ns, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	u->checkpoint_id = (char *) cid;
	u->checkpoint_ns = (char *) ns;
	// as_node points into b, which the caller frees: keep a copy.
	u->as_node = gw_req_keep(req, cm_xstrdup(u->as_node));
	return (CM_OK);
}

cm_err
gw_build_state_patch(const json_t *b, gw_query_fn query, void *query_arg,
    gw_request *req, char *d, size_t dl)
{
	Threadgate__Threads__V1__PatchStateRequest *p  = &req->u.patch_state;
	const char                                 *t  = NULL;
	const char                                 *ns = "";
	const char                                 *cid;
	cm_err                                      rv;

	(void) query;
	(void) query_arg;
	*p = (Threadgate__Threads__V1__PatchStateRequest)
	    THREADGATE__THREADS__V1__PATCH_STATE_REQUEST__INIT;
	req->owner_slot = &p->owner;
	p->thread_id    = req->thread_id;
	rv              = gw_body_object("metadata", b, &t, req, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	p->metadata_json = (char *) t;
	rv               = body_checkpoint(b, req, &cid, &ns, d, dl);
	if (rv != CM_OK) {
		return (rv);
	}
	p->checkpoint_id = (char *) cid;
	return (CM_OK);
}
