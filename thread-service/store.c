// SPDX-License-Identifier: MIT
//
// The thread-service's store: what the threads API means, independent of
// the database.
//
// Each public function validates its request (so the rpc handlers stay
// thin and the unit tests reach every rule without a socket), then runs
// the API's semantics - metadata merge, owner stamping, checkpoint chains,
// if_exists, copy, prune, the ttl, reply budgets - through the backend
// table of its database (backend.h). Read-modify-write sequences run in a
// write transaction that first locks the thread's row (thread_get or
// thread_created with lock = 1), so they stay correct with several
// processes on one PostgreSQL database.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "thread-service/backend.h"
#include "thread-service/tsvc.h"

// Room for jansson's parse error text in a detail (its own messages are
// short; the detail itself is capped at CM_RPC_DETAIL_MAX anyway).
#define JSON_ERR_MAX 160

struct tsvc_db {
	const tsvc_backend *be;
	void               *impl;
	tsvc_db_options     opt;
};

// Thread statuses LangGraph defines (the status filter must be one).
static const char *const statuses[] = {
	"idle",
	"busy",
	"interrupted",
	"error",
};

// ---------------------------------------------------------------------
// Helpers (also offered to backends, see backend.h)
// ---------------------------------------------------------------------

cm_err
tsvc_store_fail(tsvc_store *st, cm_err err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(st->detail, sizeof(st->detail), fmt, ap);
	va_end(ap);
	return (err);
}

#define fail tsvc_store_fail

int64_t
tsvc_store_deadline_left_ms(const tsvc_store *st)
{
	if (st->deadline_ms == 0) {
		return (INT64_MAX);
	}
	return (st->deadline_ms - cm_now_ms());
}

static void
msg_free(void *m)
{
	if (m != NULL) {
		protobuf_c_message_free_unpacked((ProtobufCMessage *) m, NULL);
	}
}

static tsvc_checkpoint *
checkpoint_new(void)
{
	tsvc_checkpoint *c = cm_xmalloc(sizeof(*c));

	threadgate__threads__v1__checkpoint__init(c);
	return (c);
}

cm_err
tsvc_checkpoint_set_next(
    tsvc_store *st, tsvc_checkpoint *c, const char *text, size_t len)
{
	json_t *next = NULL;
	cm_err  rv;

	rv = cm_json_parse(text != NULL ? text : "[]", text != NULL ? len : 2,
	    TSVC_JSON_STORED_MAX, &next, NULL, 0);
	if (rv != CM_OK || !json_is_array(next)) {
		json_decref(next);
		cm_error(NULL, "checkpoint %s: bad next column",
		    c->checkpoint_id != NULL ? c->checkpoint_id : "?");
		return (fail(st, CM_EINTERNAL, "internal storage error"));
	}
	for (size_t i = 0; i < c->n_next; i++) {
		free(c->next[i]);
	}
	free(c->next);
	c->n_next = 0;
	c->next   = cm_xcalloc(json_array_size(next) + 1, sizeof(char *));
	for (size_t i = 0; i < json_array_size(next); i++) {
		const char *n = json_string_value(json_array_get(next, i));

		c->next[c->n_next++] = cm_xstrdup(n != NULL ? n : "");
	}
	json_decref(next);
	return (CM_OK);
}

// ---------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------

static cm_err
tx_begin(tsvc_store *st, tsvc_tx kind)
{
	cm_err rv;

	CM_ASSERT(!st->in_tx);
	rv = st->db->be->begin(st, kind);
	if (rv == CM_OK) {
		st->in_tx = 1;
	}
	return (rv);
}

static cm_err
tx_commit(tsvc_store *st)
{
	cm_err rv = st->db->be->commit(st);

	if (rv == CM_OK) {
		st->in_tx = 0;
	}
	return (rv);
}

// tx_end finishes a request: rolls back a transaction still open (after
// an error).
static void
tx_end(tsvc_store *st)
{
	if (st->in_tx) {
		st->db->be->rollback(st);
		st->in_tx = 0;
	}
}

// ---------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------

static cm_err
check_owner(tsvc_store *st, const char *owner)
{
	if (owner == NULL || owner[0] == '\0') {
		return (fail(st, CM_EPERM, "owner is required"));
	}
	if (strlen(owner) > TSVC_OWNER_MAX) {
		return (fail(st, CM_EINVAL, "owner is longer than %d bytes",
		    TSVC_OWNER_MAX));
	}
	return (CM_OK);
}

// check_uuid writes the canonical form of s into out.
static cm_err
check_uuid(
    tsvc_store *st, const char *s, const char *what, char out[CM_UUID_LEN + 1])
{
	if (s == NULL || cm_uuid_parse(s, strlen(s), out) != CM_OK) {
		return (
		    fail(st, CM_EINVAL, "Invalid %s: must be a UUID", what));
	}
	return (CM_OK);
}

static cm_err
check_name(tsvc_store *st, const char *s, const char *what)
{
	if (s != NULL && strlen(s) > TSVC_NAME_MAX) {
		return (fail(st, CM_EINVAL, "%s is longer than %d bytes", what,
		    TSVC_NAME_MAX));
	}
	return (CM_OK);
}

// parse_json parses a request field. type is a JSON_* type the value must
// have, or -1 for any. On CM_OK *out is a new reference.
static cm_err
parse_json(
    tsvc_store *st, const char *text, const char *what, int type, json_t **out)
{
	char    msg[JSON_ERR_MAX];
	json_t *v = NULL;
	cm_err  rv;

	rv = cm_json_parse(
	    text, strlen(text), TSVC_JSON_FIELD_MAX, &v, msg, sizeof(msg));
	if (rv == CM_ETOOBIG) {
		return (fail(st, rv, "%s is larger than %u bytes", what,
		    TSVC_JSON_FIELD_MAX));
	}
	if (rv != CM_OK) {
		return (fail(
		    st, CM_EINVAL, "%s is not valid JSON: %s", what, msg));
	}
	if (type >= 0 && (int) json_typeof(v) != type) {
		json_decref(v);
		return (fail(st, CM_EINVAL, "%s must be a JSON object", what));
	}
	*out = v;
	return (CM_OK);
}

// parse_object parses an optional JSON object field ("" gives {}).
static cm_err
parse_object(tsvc_store *st, const char *text, const char *what, json_t **out)
{
	if (text == NULL || text[0] == '\0') {
		*out = json_object();
		return (CM_OK);
	}
	return (parse_json(st, text, what, JSON_OBJECT, out));
}

// parse_filter validates an optional object filter: *text gets its
// compact JSON (new string) and *doc its parsed form (new reference), or
// both NULL for "" and {}, which match every row.
static cm_err
parse_filter(tsvc_store *st, const char *in, const char *what, char **text,
    json_t **doc)
{
	json_t *v = NULL;
	cm_err  rv;

	*text = NULL;
	*doc  = NULL;
	if (in == NULL || in[0] == '\0') {
		return (CM_OK);
	}
	rv = parse_json(st, in, what, JSON_OBJECT, &v);
	if (rv != CM_OK) {
		return (rv);
	}
	if (json_object_size(v) == 0) {
		json_decref(v);
		return (CM_OK);
	}
	*text = cm_json_dump(v);
	*doc  = v;
	return (CM_OK);
}

static cm_err
check_status(tsvc_store *st, const char *status)
{
	if (status == NULL || status[0] == '\0') {
		return (CM_OK);
	}
	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
		if (strcmp(status, statuses[i]) == 0) {
			return (CM_OK);
		}
	}
	return (fail(st, CM_EINVAL,
	    "status must be one of idle, busy, interrupted, error"));
}

// check_ttl validates a ttl and gives the strategy to store ("" when the
// ttl is 0, "delete" otherwise).
static cm_err
check_ttl(
    tsvc_store *st, double minutes, const char *strategy, const char **stored)
{
	if (!isfinite(minutes) || minutes < 0 ||
	    minutes > TSVC_TTL_MINUTES_MAX) {
		return (fail(st, CM_EINVAL,
		    "ttl must be a number of minutes between 0 and %.0f",
		    TSVC_TTL_MINUTES_MAX));
	}
	if (strategy != NULL && strategy[0] != '\0' &&
	    strcmp(strategy, "delete") != 0) {
		return (
		    fail(st, CM_EINVAL, "ttl strategy must be \"delete\""));
	}
	*stored = (minutes > 0) ? "delete" : "";
	return (CM_OK);
}

// stamp_owner sets metadata.owner; CM_EINVAL when owner is not UTF-8.
static cm_err
stamp_owner(tsvc_store *st, json_t *metadata, const char *owner)
{
	json_t *o = json_string(owner);

	if (o == NULL) {
		return (fail(st, CM_EINVAL, "owner must be UTF-8"));
	}
	json_object_set_new(metadata, "owner", o);
	return (CM_OK);
}

static cm_err
page_too_big(tsvc_store *st)
{
	return (fail(st, CM_ETOOBIG,
	    "result page exceeds %u bytes; ask for a smaller limit",
	    TSVC_REPLY_BUDGET));
}

static cm_err
not_found(tsvc_store *st, const char *thread_id)
{
	return (fail(st, CM_ENOENT, "Thread with ID %s not found", thread_id));
}

// thread_exists: CM_OK with the thread's created_at, or CM_ENOENT.
static cm_err
thread_exists(tsvc_store *st, const char *owner, const char *id, int lock,
    int64_t *created)
{
	int64_t c  = 0;
	cm_err  rv = st->db->be->thread_created(st, owner, id, lock, &c);

	if (rv != CM_OK) {
		return (rv);
	}
	if (c == 0) {
		return (not_found(st, id));
	}
	if (created != NULL) {
		*created = c;
	}
	return (CM_OK);
}

// quota_check runs inside a write transaction, after the writes: it
// fails (and the caller rolls everything back) when the owner is now past
// a quota. The backends count the transaction's own writes, and a
// concurrent writer of the same owner waits for this transaction, so two
// writers cannot both slip under a quota.
static cm_err
quota_check(tsvc_store *st, const char *owner)
{
	const tsvc_db_options *o       = &st->db->opt;
	int64_t                threads = 0;
	int64_t                bytes   = 0;
	cm_err                 rv;

	if (o->max_threads <= 0 && o->max_bytes <= 0) {
		return (CM_OK);
	}
	rv = st->db->be->owner_usage(st, owner, &threads, &bytes);
	if (rv != CM_OK) {
		return (rv);
	}
	if (o->max_threads > 0 && threads > o->max_threads) {
		return (fail(st, CM_EPERM,
		    "quota exceeded: at most %lld threads per user; delete "
		    "some first",
		    (long long) o->max_threads));
	}
	if (o->max_bytes > 0 && bytes > o->max_bytes) {
		return (fail(st, CM_EPERM,
		    "quota exceeded: at most %lld bytes of stored state per "
		    "user; delete or prune threads first",
		    (long long) o->max_bytes));
	}
	return (CM_OK);
}

// checkpoint_room fails when the thread holds its quota of checkpoints.
static cm_err
checkpoint_room(tsvc_store *st, const char *owner, const char *id)
{
	int64_t max = st->db->opt.max_checkpoints;
	int64_t n   = 0;
	cm_err  rv;

	if (max <= 0) {
		return (CM_OK);
	}
	rv = st->db->be->cp_count(st, owner, id, max, &n);
	if (rv == CM_OK && n >= max) {
		rv = fail(st, CM_EPERM,
		    "quota exceeded: at most %lld checkpoints per thread; "
		    "prune the thread (keep_latest) first",
		    (long long) max);
	}
	return (rv);
}

// json_nodes counts the JSON values in v, stopping past limit.
static size_t
json_nodes(const json_t *v, size_t limit)
{
	size_t      n = 1;
	size_t      i;
	const char *k;
	json_t     *e;

	if (json_is_object(v)) {
		json_object_foreach((json_t *) v, k, e)
		{
			n += json_nodes(e, limit - n);
			if (n > limit) {
				return (n);
			}
		}
	} else if (json_is_array(v)) {
		json_array_foreach((json_t *) v, i, e)
		{
			n += json_nodes(e, limit - n);
			if (n > limit) {
				return (n);
			}
		}
	}
	return (n);
}

// ---------------------------------------------------------------------
// State updates (UpdateState and CreateThread's supersteps)
// ---------------------------------------------------------------------

// check_update validates one state update value: NULL/null, an object,
// or an array of objects (at most TSVC_UPDATES_MAX).
static cm_err
check_update(tsvc_store *st, const json_t *v)
{
	size_t  i;
	json_t *e;

	if (v == NULL || json_is_null(v) || json_is_object(v)) {
		return (CM_OK);
	}
	if (json_is_array(v)) {
		if (json_array_size(v) > TSVC_UPDATES_MAX) {
			return (fail(st, CM_ETOOBIG,
			    "values holds more than %d updates",
			    TSVC_UPDATES_MAX));
		}
		json_array_foreach(v, i, e)
		{
			if (!json_is_object(e)) {
				return (fail(st, CM_EINVAL,
				    "values must be an object, an array of "
				    "objects or null"));
			}
		}
		return (CM_OK);
	}
	return (fail(st, CM_EINVAL,
	    "values must be an object, an array of objects or null"));
}

// apply_update merges a checked update into values (an object).
static void
apply_update(json_t *values, json_t *v)
{
	size_t  i;
	json_t *e;

	if (json_is_object(v)) {
		json_object_update(values, v);
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, e)
		{
			json_object_update(values, e);
		}
	}
}

// One update of a state change: the value (borrowed; NULL = null) and
// the node it is attributed to ("" = none).
typedef struct update {
	json_t     *values;
	const char *as_node;
} update;

// state_apply writes one checkpoint holding n updates on top of the
// parent (named, or the latest in ns), inside the caller's write
// transaction, which holds the thread's row (thread_created with lock), so
// concurrent updates of one thread line up: each derives from the one
// before. out (may be NULL) gets the new checkpoint.
static cm_err
state_apply(tsvc_store *st, const char *owner, const char *thread_id,
    const char *ns, const char *parent_id, const update *ups, size_t n,
    int64_t now, tsvc_checkpoint **out)
{
	const tsvc_backend *be      = st->db->be;
	tsvc_checkpoint    *latest  = NULL;
	tsvc_checkpoint    *parent  = NULL;
	json_t             *values  = NULL;
	json_t             *pmeta   = NULL;
	json_t             *meta    = NULL;
	json_t             *writes  = NULL;
	tsvc_checkpoint    *c       = checkpoint_new();
	int64_t             step    = 0;
	int64_t             created = now;
	char                id[CM_UUID_LEN + 1];
	cm_err              rv;

	rv = be->cp_get(st, owner, thread_id, ns, NULL, &latest);
	if (rv != CM_OK) {
		goto out;
	}
	if (parent_id != NULL) {
		rv = be->cp_get(st, owner, thread_id, ns, parent_id, &parent);
		if (rv != CM_OK) {
			goto out;
		}
		if (parent == NULL) {
			rv = fail(st, CM_ENOENT, "Checkpoint %s not found",
			    parent_id);
			goto out;
		}
	} else {
		parent = latest;
		latest = NULL;
	}
	if (parent != NULL) {
		if (cm_json_parse(parent->values_json,
		        strlen(parent->values_json), TSVC_JSON_STORED_MAX,
		        &values, NULL, 0) == CM_OK &&
		    !json_is_object(values)) {
			json_decref(values);
			values = NULL;
		}
		if (cm_json_parse(parent->metadata_json,
		        strlen(parent->metadata_json), TSVC_JSON_STORED_MAX,
		        &pmeta, NULL, 0) == CM_OK &&
		    json_is_integer(json_object_get(pmeta, "step"))) {
			step = json_integer_value(
			           json_object_get(pmeta, "step")) +
			    1;
		}
		// Keep (created_at, id) strictly increasing per thread.
		if (parent->created_at_us >= created) {
			created = parent->created_at_us + 1;
		}
	}
	if (latest != NULL && latest->created_at_us >= created) {
		created = latest->created_at_us + 1;
	}
	if (values == NULL) {
		values = json_object();
	}
	writes = json_object();
	for (size_t i = 0; i < n; i++) {
		apply_update(values, ups[i].values);
		if (ups[i].as_node[0] != '\0') {
			json_object_set(writes, ups[i].as_node,
			    ups[i].values != NULL ? ups[i].values
			                          : json_null());
		}
	}
	meta = json_pack("{s:s, s:I, s:O, s:{}}", "source", "update", "step",
	    (json_int_t) step, "writes", writes, "parents");
	CM_ASSERT(meta != NULL);
	if (n == 1 && ups[0].as_node[0] != '\0') {
		json_object_set_new(
		    meta, "as_node", json_string(ups[0].as_node));
	}
	cm_uuid7(id);
	c->thread_id     = cm_xstrdup(thread_id);
	c->checkpoint_ns = cm_xstrdup(ns);
	c->checkpoint_id = cm_xstrdup(id);
	c->parent_checkpoint_id =
	    cm_xstrdup(parent != NULL ? parent->checkpoint_id : "");
	c->values_json   = cm_json_dump(values);
	c->metadata_json = cm_json_dump(meta);
	c->created_at_us = created;
	if (strlen(c->values_json) > TSVC_JSON_STORED_MAX) {
		rv = fail(st, CM_ETOOBIG, "state values would exceed %u bytes",
		    TSVC_JSON_STORED_MAX);
		goto out;
	}
	if (json_nodes(values, TSVC_JSON_NODES_MAX) > TSVC_JSON_NODES_MAX) {
		rv = fail(st, CM_ETOOBIG,
		    "state values would hold more than %u JSON values",
		    TSVC_JSON_NODES_MAX);
		goto out;
	}
	rv = checkpoint_room(st, owner, thread_id);
	if (rv != CM_OK) {
		goto out;
	}
	rv = be->cp_insert(st, owner, c);
	if (rv == CM_OK && ns[0] == '\0') {
		rv = be->thread_set_values(
		    st, owner, thread_id, c->values_json, now);
	}
	if (rv == CM_OK && out != NULL) {
		*out = c;
		c    = NULL;
	}
out:
	msg_free(c);
	msg_free(latest);
	msg_free(parent);
	json_decref(values);
	json_decref(pmeta);
	json_decref(meta);
	json_decref(writes);
	return (rv);
}

// Parsed supersteps of a CreateThread: steps[i] holds nups[i] updates.
typedef struct supersteps {
	json_t  *doc; // owns every value the updates point into
	update **steps;
	size_t  *nups;
	size_t   n;
} supersteps;

static void
supersteps_fini(supersteps *ss)
{
	for (size_t i = 0; i < ss->n; i++) {
		free(ss->steps[i]);
	}
	free(ss->steps);
	free(ss->nups);
	json_decref(ss->doc);
}

// parse_supersteps validates `[{"updates":[{"values","as_node",
// "command"?}]}]` before any write. "command" is accepted and ignored:
// the thread-service does not run graphs.
static cm_err
parse_supersteps(tsvc_store *st, const char *text, supersteps *ss)
{
	const char *bad = "supersteps must be an array of "
	                  "{\"updates\": [{\"values\", \"as_node\"}]}";
	json_t     *step;
	size_t      i;
	cm_err      rv;

	memset(ss, 0, sizeof(*ss));
	if (text == NULL || text[0] == '\0') {
		return (CM_OK);
	}
	rv = parse_json(st, text, "supersteps", JSON_ARRAY, &ss->doc);
	if (rv != CM_OK) {
		if (rv == CM_EINVAL) {
			return (fail(st, rv, "%s", bad));
		}
		return (rv);
	}
	if (json_array_size(ss->doc) > TSVC_SUPERSTEPS_MAX) {
		return (fail(st, CM_ETOOBIG, "more than %d supersteps",
		    TSVC_SUPERSTEPS_MAX));
	}
	ss->steps = cm_xcalloc(json_array_size(ss->doc) + 1, sizeof(update *));
	ss->nups  = cm_xcalloc(json_array_size(ss->doc) + 1, sizeof(size_t));
	json_array_foreach(ss->doc, i, step)
	{
		json_t *ups = json_object_get(step, "updates");
		json_t *u;
		size_t  j;

		if (!json_is_object(step) || !json_is_array(ups)) {
			return (fail(st, CM_EINVAL, "%s", bad));
		}
		if (json_array_size(ups) > TSVC_UPDATES_MAX) {
			return (fail(st, CM_ETOOBIG,
			    "a superstep holds more than %d updates",
			    TSVC_UPDATES_MAX));
		}
		ss->steps[i] =
		    cm_xcalloc(json_array_size(ups) + 1, sizeof(update));
		ss->n++;
		json_array_foreach(ups, j, u)
		{
			json_t *node;

			if (!json_is_object(u)) {
				return (fail(st, CM_EINVAL, "%s", bad));
			}
			node = json_object_get(u, "as_node");
			if (node != NULL && !json_is_null(node) &&
			    !json_is_string(node)) {
				return (fail(st, CM_EINVAL,
				    "as_node must be a string"));
			}
			ss->steps[i][j].values  = json_object_get(u, "values");
			ss->steps[i][j].as_node = json_is_string(node)
			    ? json_string_value(node)
			    : "";
			rv =
			    check_name(st, ss->steps[i][j].as_node, "as_node");
			if (rv == CM_OK) {
				rv = check_update(st, ss->steps[i][j].values);
			}
			if (rv != CM_OK) {
				return (rv);
			}
		}
		ss->nups[i] = json_array_size(ups);
	}
	return (CM_OK);
}

// ---------------------------------------------------------------------
// Open / close
// ---------------------------------------------------------------------

tsvc_db_options
tsvc_db_options_default(void)
{
	tsvc_db_options o = {
		.busy_timeout_ms      = TSVC_BUSY_TIMEOUT_MS,
		.statement_timeout_ms = TSVC_STATEMENT_TIMEOUT_DEFAULT_MS,
		.connect_timeout_ms   = TSVC_CONNECT_TIMEOUT_DEFAULT_MS,
		.max_threads          = TSVC_MAX_THREADS_DEFAULT,
		.max_checkpoints      = TSVC_MAX_CHECKPOINTS_DEFAULT,
		.max_bytes            = TSVC_MAX_BYTES_DEFAULT,
	};

	return (o);
}

static int
has_prefix(const char *s, const char *prefix)
{
	return (strncmp(s, prefix, strlen(prefix)) == 0);
}

// is_keyword_string: "host=... dbname=..." - a libpq keyword/value
// string starts with a lower-case keyword, optional blanks and '='.
static int
is_keyword_string(const char *s)
{
	size_t n = 0;

	while (*s == ' ' || *s == '\t') {
		s++;
	}
	while ((s[n] >= 'a' && s[n] <= 'z') || s[n] == '_') {
		n++;
	}
	if (n == 0) {
		return (0);
	}
	s += n;
	while (*s == ' ' || *s == '\t') {
		s++;
	}
	return (*s == '=');
}

// pick_backend chooses the backend THREADS_DB names (see tsvc_db_open)
// and the target handed to it.
static const tsvc_backend *
pick_backend(const char *target, const char **rest)
{
	if (has_prefix(target, "postgres://") ||
	    has_prefix(target, "postgresql://") || is_keyword_string(target)) {
		*rest = target;
#ifdef TSVC_HAVE_PG
		return (&tsvc_backend_pg);
#else
		return (NULL);
#endif
	}
	if (has_prefix(target, "sqlite://")) {
		*rest = target + strlen("sqlite://");
	} else if (has_prefix(target, "sqlite:")) {
		*rest = target + strlen("sqlite:");
	} else {
		*rest = target;
	}
	return (&tsvc_backend_sqlite);
}

cm_err
tsvc_db_open(const char *target, const tsvc_db_options *opt, tsvc_db **out,
    char *detail, size_t detail_len)
{
	const tsvc_backend *be;
	tsvc_db_options     defaults = tsvc_db_options_default();
	const char         *rest     = NULL;
	void               *impl     = NULL;
	char                dbuf[CM_RPC_DETAIL_MAX];
	tsvc_db            *db;
	cm_err              rv;

	if (detail == NULL || detail_len == 0) {
		detail     = dbuf;
		detail_len = sizeof(dbuf);
	}
	detail[0] = '\0';
	if (target == NULL || target[0] == '\0' ||
	    strlen(target) > TSVC_DB_TARGET_MAX) {
		snprintf(detail, detail_len,
		    "database target is empty or longer than %d bytes",
		    TSVC_DB_TARGET_MAX);
		return (CM_EINVAL);
	}
	be = pick_backend(target, &rest);
	if (be == NULL) {
		snprintf(detail, detail_len,
		    "this build has no PostgreSQL backend");
		return (CM_EINVAL);
	}
	if (rest[0] == '\0') {
		snprintf(detail, detail_len, "database path is empty");
		return (CM_EINVAL);
	}
	rv = be->db_open(
	    rest, opt != NULL ? opt : &defaults, &impl, detail, detail_len);
	if (rv != CM_OK) {
		return (rv);
	}
	db       = cm_xcalloc(1, sizeof(*db));
	db->be   = be;
	db->impl = impl;
	db->opt  = opt != NULL ? *opt : defaults;
	*out     = db;
	return (CM_OK);
}

void
tsvc_db_close(tsvc_db *db)
{
	if (db == NULL) {
		return;
	}
	db->be->db_close(db->impl);
	free(db);
}

const tsvc_backend *
tsvc_db_backend(const tsvc_db *db)
{
	return (db->be);
}

const char *
tsvc_db_backend_name(const tsvc_db *db)
{
	return (db->be->name);
}

cm_err
tsvc_store_open(tsvc_db *db, tsvc_store **out, char *detail, size_t detail_len)
{
	tsvc_store *st = cm_xcalloc(1, sizeof(*st));
	cm_err      rv;

	st->db = db;
	rv     = db->be->conn_open(db->impl, &st->conn, detail, detail_len);
	if (rv != CM_OK) {
		free(st);
		return (rv);
	}
	*out = st;
	return (CM_OK);
}

void
tsvc_store_close(tsvc_store *st)
{
	if (st == NULL) {
		return;
	}
	if (st->in_tx) {
		st->db->be->rollback(st);
	}
	st->db->be->conn_close(st->conn);
	free(st);
}

void
tsvc_store_set_deadline(tsvc_store *st, int64_t deadline_unix_ms)
{
	st->deadline_ms = deadline_unix_ms;
}

const char *
tsvc_store_detail(const tsvc_store *st)
{
	return (st->detail);
}

cm_err
tsvc_store_ping(tsvc_store *st)
{
	return (st->db->be->ping(st));
}

// ---------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------

cm_err
tsvc_store_create_thread(
    tsvc_store *st, const tsvc_create_req *req, tsvc_thread **out)
{
	const tsvc_backend *be       = st->db->be;
	json_t             *meta     = NULL;
	tsvc_thread        *t        = NULL;
	supersteps          ss       = { 0 };
	const char         *strategy = NULL;
	char               *mtext    = NULL;
	tsvc_thread         row;
	tsvc_id_state       state = TSVC_ID_FREE;
	char                id[CM_UUID_LEN + 1];
	int64_t             now = cm_now_us();
	cm_err              rv;

	threadgate__threads__v1__thread__init(&row);
	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->thread_id[0] == '\0') {
		cm_uuid7(id);
	} else {
		rv = check_uuid(st, req->thread_id, "thread ID", id);
		if (rv != CM_OK) {
			goto out;
		}
	}
	if (req->if_exists !=
	        THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_RAISE &&
	    req->if_exists !=
	        THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_DO_NOTHING) {
		rv = fail(
		    st, CM_EINVAL, "if_exists must be raise or do_nothing");
		goto out;
	}
	rv = parse_object(st, req->metadata_json, "metadata", &meta);
	if (rv != CM_OK) {
		goto out;
	}
	rv = stamp_owner(st, meta, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_ttl(st, req->ttl_minutes, req->ttl_strategy, &strategy);
	if (rv != CM_OK) {
		goto out;
	}
	rv = parse_supersteps(st, req->supersteps_json, &ss);
	if (rv != CM_OK) {
		goto out;
	}
	row.owner         = req->owner;
	row.thread_id     = id;
	mtext             = cm_json_dump(meta);
	row.metadata_json = mtext;
	row.created_at_us = now;
	row.updated_at_us = now;
	row.ttl_minutes   = req->ttl_minutes;
	row.ttl_strategy  = (char *) strategy;

	rv = tx_begin(st, TSVC_TX_WRITE);
	if (rv != CM_OK) {
		goto out;
	}
	// Insert first: a concurrent create of the same id (another
	// replica) makes exactly one insert succeed; the loser then learns
	// whose the id is.
	rv = be->thread_insert(st, &row);
	if (rv == CM_EEXIST) {
		rv = be->id_owner(st, req->owner, id, &state);
		if (rv == CM_OK && state == TSVC_ID_FREE) {
			// Deleted again in between: report the conflict the
			// caller raced with rather than loop.
			state = TSVC_ID_TAKEN;
		}
	}
	if (rv != CM_OK) {
		goto out;
	}
	if (state != TSVC_ID_FREE) {
		if (state == TSVC_ID_TAKEN ||
		    req->if_exists ==
		        THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_RAISE) {
			rv = fail(st, CM_EEXIST,
			    "Thread with ID %s already exists", id);
			goto out;
		}
		rv = be->thread_get(st, req->owner, id, 0, &t);
		if (rv == CM_OK && t == NULL) {
			rv = fail(st, CM_EEXIST,
			    "Thread with ID %s already exists", id);
		}
		goto out;
	}
	for (size_t i = 0; i < ss.n; i++) {
		rv = state_apply(st, req->owner, id, "", NULL, ss.steps[i],
		    ss.nups[i], now, NULL);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = quota_check(st, req->owner);
	if (rv == CM_OK) {
		rv = be->thread_get(st, req->owner, id, 0, &t);
	}
	if (rv == CM_OK && t == NULL) {
		rv = fail(st, CM_EINTERNAL, "internal storage error");
	}
out:
	if (rv == CM_OK && st->in_tx) {
		rv = tx_commit(st);
	}
	tx_end(st);
	json_decref(meta);
	free(mtext);
	supersteps_fini(&ss);
	if (rv != CM_OK) {
		msg_free(t);
		return (rv);
	}
	*out = t;
	return (CM_OK);
}

cm_err
tsvc_store_get_thread(
    tsvc_store *st, const tsvc_thread_ref *req, tsvc_thread **out)
{
	tsvc_thread *t = NULL;
	char         id[CM_UUID_LEN + 1];
	cm_err       rv;

	rv = check_owner(st, req->owner);
	if (rv == CM_OK) {
		rv = check_uuid(st, req->thread_id, "thread ID", id);
	}
	if (rv == CM_OK) {
		rv = st->db->be->thread_get(st, req->owner, id, 0, &t);
	}
	if (rv == CM_OK && t == NULL) {
		rv = not_found(st, id);
	}
	if (rv != CM_OK) {
		return (rv);
	}
	*out = t;
	return (CM_OK);
}

cm_err
tsvc_store_update_thread(
    tsvc_store *st, const tsvc_update_req *req, tsvc_thread **out)
{
	const tsvc_backend *be       = st->db->be;
	json_t             *patch    = NULL;
	json_t             *meta     = NULL;
	char               *mtext    = NULL;
	tsvc_thread        *old      = NULL;
	tsvc_thread        *t        = NULL;
	const char         *strategy = NULL;
	char                id[CM_UUID_LEN + 1];
	cm_err              rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_uuid(st, req->thread_id, "thread ID", id);
	if (rv != CM_OK) {
		goto out;
	}
	rv = parse_object(st, req->metadata_json, "metadata", &patch);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->has_ttl) {
		rv = check_ttl(
		    st, req->ttl_minutes, req->ttl_strategy, &strategy);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = tx_begin(st, TSVC_TX_WRITE);
	if (rv != CM_OK) {
		goto out;
	}
	// Locked: a concurrent merge (another replica) waits for this one
	// and then merges into its result, so no key is lost.
	rv = be->thread_get(st, req->owner, id, 1, &old);
	if (rv != CM_OK) {
		goto out;
	}
	if (old == NULL) {
		rv = not_found(st, id);
		goto out;
	}
	rv = cm_json_parse(old->metadata_json, strlen(old->metadata_json),
	    TSVC_JSON_STORED_MAX, &meta, NULL, 0);
	if (rv != CM_OK || !json_is_object(meta)) {
		json_decref(meta);
		meta = json_object();
	}
	json_object_update(meta, patch);
	rv = stamp_owner(st, meta, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	mtext = cm_json_dump(meta);
	if (strlen(mtext) > TSVC_JSON_FIELD_MAX) {
		rv = fail(st, CM_ETOOBIG, "metadata would exceed %u bytes",
		    TSVC_JSON_FIELD_MAX);
		goto out;
	}
	rv = be->thread_update(st, req->owner, id, mtext,
	    req->has_ttl ? req->ttl_minutes : old->ttl_minutes,
	    req->has_ttl ? strategy : old->ttl_strategy, cm_now_us(), NULL);
	if (rv != CM_OK) {
		goto out;
	}
	rv = quota_check(st, req->owner);
	if (rv == CM_OK) {
		rv = be->thread_get(st, req->owner, id, 0, &t);
	}
	if (rv == CM_OK && t == NULL) {
		rv = fail(st, CM_EINTERNAL, "internal storage error");
	}
	if (rv == CM_OK) {
		rv = tx_commit(st);
	}
out:
	tx_end(st);
	json_decref(patch);
	json_decref(meta);
	free(mtext);
	msg_free(old);
	if (rv != CM_OK) {
		msg_free(t);
		return (rv);
	}
	*out = t;
	return (CM_OK);
}

cm_err
tsvc_store_delete_thread(tsvc_store *st, const tsvc_thread_ref *req)
{
	char    id[CM_UUID_LEN + 1];
	int64_t n = 0;
	cm_err  rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_uuid(st, req->thread_id, "thread ID", id);
	if (rv != CM_OK) {
		goto out;
	}
	rv = tx_begin(st, TSVC_TX_WRITE);
	if (rv != CM_OK) {
		goto out;
	}
	rv = st->db->be->thread_delete(st, req->owner, id, &n);
	if (rv != CM_OK) {
		goto out;
	}
	if (n == 0) {
		rv = not_found(st, id);
		goto out;
	}
	rv = tx_commit(st);
out:
	tx_end(st);
	return (rv);
}

// Filters shared by search and count, validated and ready for a backend.
typedef struct filters {
	tsvc_filter f;
	char       *metadata;
	json_t     *metadata_doc;
	char       *values;
	json_t     *values_doc;
	char      **ids;
	char       *id_buf;
} filters;

static void
filters_fini(filters *fs)
{
	free(fs->metadata);
	free(fs->values);
	json_decref(fs->metadata_doc);
	json_decref(fs->values_doc);
	free(fs->ids);
	free(fs->id_buf);
}

static cm_err
parse_filters(tsvc_store *st, const char *owner, const char *metadata,
    const char *values, char *const *ids, size_t n_ids, const char *status,
    filters *fs)
{
	cm_err rv;

	memset(fs, 0, sizeof(*fs));
	rv = check_owner(st, owner);
	if (rv != CM_OK) {
		return (rv);
	}
	rv = parse_filter(
	    st, metadata, "metadata", &fs->metadata, &fs->metadata_doc);
	if (rv != CM_OK) {
		return (rv);
	}
	rv = parse_filter(st, values, "values", &fs->values, &fs->values_doc);
	if (rv != CM_OK) {
		return (rv);
	}
	rv = check_status(st, status);
	if (rv != CM_OK) {
		return (rv);
	}
	if (n_ids > TSVC_IDS_MAX) {
		return (
		    fail(st, CM_ETOOBIG, "more than %d ids", TSVC_IDS_MAX));
	}
	if (n_ids > 0) {
		fs->ids    = cm_xcalloc(n_ids, sizeof(char *));
		fs->id_buf = cm_xcalloc(n_ids, CM_UUID_LEN + 1);
	}
	for (size_t i = 0; i < n_ids; i++) {
		fs->ids[i] = fs->id_buf + i * (CM_UUID_LEN + 1);
		rv         = check_uuid(st, ids[i], "thread ID", fs->ids[i]);
		if (rv != CM_OK) {
			return (rv);
		}
	}
	fs->f.metadata     = fs->metadata;
	fs->f.metadata_doc = fs->metadata_doc;
	fs->f.values       = fs->values;
	fs->f.values_doc   = fs->values_doc;
	fs->f.ids          = (const char *const *) fs->ids;
	fs->f.n_ids        = n_ids;
	fs->f.status = (status != NULL && status[0] != '\0') ? status : NULL;
	return (CM_OK);
}

// The search page being filled: at most limit rows kept, one more only
// noted (it tells that more rows follow), and the reply budget.
typedef struct search_acc {
	tsvc_store        *st;
	tsvc_search_reply *r;
	size_t             limit;
	size_t             bytes;
	int                more;
} search_acc;

static cm_err
search_sink(void *arg, tsvc_thread *t)
{
	search_acc *a = arg;

	if (a->r->n_threads == a->limit) {
		a->more = 1;
		msg_free(t);
		return (CM_OK);
	}
	a->r->threads[a->r->n_threads++] = t;
	a->bytes += strlen(t->metadata_json) + strlen(t->values_json) +
	    strlen(t->config_json) + strlen(t->interrupts_json);
	if (a->bytes > TSVC_REPLY_BUDGET) {
		return (page_too_big(a->st));
	}
	return (CM_OK);
}

cm_err
tsvc_store_search_threads(
    tsvc_store *st, const tsvc_search_req *req, tsvc_search_reply **out)
{
	tsvc_search_reply *r  = NULL;
	filters            fs = { 0 };
	tsvc_page          page;
	search_acc         acc;
	cm_err             rv;

	rv = parse_filters(st, req->owner, req->metadata_json,
	    req->values_json, req->ids, req->n_ids, req->status, &fs);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->limit < TSVC_PAGE_MIN || req->limit > TSVC_PAGE_MAX) {
		rv = fail(st, CM_EINVAL, "limit must be between %d and %d",
		    TSVC_PAGE_MIN, TSVC_PAGE_MAX);
		goto out;
	}
	if (req->offset < 0) {
		rv = fail(st, CM_EINVAL, "offset must be >= 0");
		goto out;
	}
	if ((int) req->sort_by < 0 || (int) req->sort_by > 3) {
		rv = fail(st, CM_EINVAL,
		    "sort_by must be created_at, updated_at, thread_id or "
		    "status");
		goto out;
	}
	r = cm_xmalloc(sizeof(*r));
	threadgate__threads__v1__search_threads_reply__init(r);
	r->threads = cm_xcalloc((size_t) req->limit, sizeof(tsvc_thread *));
	memset(&acc, 0, sizeof(acc));
	acc.st    = st;
	acc.r     = r;
	acc.limit = (size_t) req->limit;
	// One row past the page says whether more follow: the total the
	// reference server sends costs one row, never a count of all.
	page.sort      = (tsvc_sort) req->sort_by;
	page.ascending = req->ascending ? 1 : 0;
	page.limit     = (int64_t) req->limit + 1;
	page.offset    = req->offset;
	rv             = st->db->be->thread_search(
	                st, req->owner, &fs.f, &page, search_sink, &acc);
	if (rv == CM_OK) {
		r->total = (int64_t) req->offset + (int64_t) r->n_threads +
		    (acc.more ? 1 : 0);
	}
out:
	filters_fini(&fs);
	if (rv != CM_OK) {
		msg_free(r);
		return (rv);
	}
	*out = r;
	return (CM_OK);
}

cm_err
tsvc_store_count_threads(
    tsvc_store *st, const tsvc_count_req *req, tsvc_count_reply **out)
{
	tsvc_count_reply *r;
	filters           fs = { 0 };
	int64_t           n  = 0;
	cm_err            rv;

	rv = parse_filters(st, req->owner, req->metadata_json,
	    req->values_json, NULL, 0, req->status, &fs);
	if (rv == CM_OK) {
		rv = st->db->be->thread_count(st, req->owner, &fs.f, &n);
	}
	filters_fini(&fs);
	if (rv != CM_OK) {
		return (rv);
	}
	r = cm_xmalloc(sizeof(*r));
	threadgate__threads__v1__count_reply__init(r);
	r->count = n;
	*out     = r;
	return (CM_OK);
}

cm_err
tsvc_store_copy_thread(
    tsvc_store *st, const tsvc_thread_ref *req, tsvc_thread **out)
{
	const tsvc_backend *be = st->db->be;
	tsvc_thread        *t  = NULL;
	char                src[CM_UUID_LEN + 1];
	char                dst[CM_UUID_LEN + 1];
	int64_t             n = 0;
	cm_err              rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_uuid(st, req->thread_id, "thread ID", src);
	if (rv != CM_OK) {
		goto out;
	}
	cm_uuid7(dst);
	rv = tx_begin(st, TSVC_TX_WRITE);
	if (rv != CM_OK) {
		goto out;
	}
	rv = be->thread_copy(st, req->owner, src, dst, cm_now_us(), &n);
	if (rv != CM_OK) {
		goto out;
	}
	if (n == 0) {
		rv =
		    fail(st, CM_ECONFLICT, "Thread with ID %s not found", src);
		goto out;
	}
	rv = quota_check(st, req->owner);
	if (rv == CM_OK) {
		rv = be->thread_get(st, req->owner, dst, 0, &t);
	}
	if (rv == CM_OK && t == NULL) {
		rv = fail(st, CM_EINTERNAL, "internal storage error");
	}
	if (rv == CM_OK) {
		rv = tx_commit(st);
	}
out:
	tx_end(st);
	if (rv != CM_OK) {
		msg_free(t);
		return (rv);
	}
	*out = t;
	return (CM_OK);
}

static int
cmp_id(const void *a, const void *b)
{
	return (strcmp((const char *) a, (const char *) b));
}

cm_err
tsvc_store_prune_threads(
    tsvc_store *st, const tsvc_prune_req *req, tsvc_prune_reply **out)
{
	const tsvc_backend *be = st->db->be;
	tsvc_prune_reply   *r;
	char(*ids)[CM_UUID_LEN + 1] = NULL;
	int     keep_latest;
	int64_t pruned = 0;
	cm_err  rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->strategy[0] == '\0' || strcmp(req->strategy, "delete") == 0) {
		keep_latest = 0;
	} else if (strcmp(req->strategy, "keep_latest") == 0) {
		keep_latest = 1;
	} else {
		rv = fail(st, CM_EINVAL,
		    "strategy must be \"delete\" or \"keep_latest\"");
		goto out;
	}
	if (req->n_thread_ids > TSVC_IDS_MAX) {
		rv = fail(
		    st, CM_ETOOBIG, "more than %d thread ids", TSVC_IDS_MAX);
		goto out;
	}
	ids = cm_xcalloc(req->n_thread_ids + 1, sizeof(*ids));
	for (size_t i = 0; i < req->n_thread_ids; i++) {
		rv = check_uuid(st, req->thread_ids[i], "thread ID", ids[i]);
		if (rv != CM_OK) {
			goto out;
		}
	}
	// Sorted, so duplicates are adjacent and counted once, and rows are
	// locked in one order by every process (no deadlock between two
	// prunes).
	qsort(ids, req->n_thread_ids, sizeof(*ids), cmp_id);
	rv = tx_begin(st, TSVC_TX_WRITE);
	if (rv != CM_OK) {
		goto out;
	}
	for (size_t i = 0; i < req->n_thread_ids; i++) {
		int64_t n = 0;

		if (i > 0 && strcmp(ids[i], ids[i - 1]) == 0) {
			continue;
		}
		if (!keep_latest) {
			rv = be->thread_delete(st, req->owner, ids[i], &n);
			if (rv != CM_OK) {
				goto out;
			}
			pruned += (n > 0);
			continue;
		}
		rv = thread_exists(st, req->owner, ids[i], 1, NULL);
		if (rv == CM_ENOENT) {
			rv = CM_OK; // another owner's or missing: skipped
			continue;
		}
		if (rv != CM_OK) {
			goto out;
		}
		rv = be->cp_keep_latest(st, req->owner, ids[i]);
		if (rv != CM_OK) {
			goto out;
		}
		pruned++;
	}
	rv = tx_commit(st);
out:
	tx_end(st);
	free(ids);
	if (rv != CM_OK) {
		return (rv);
	}
	r = cm_xmalloc(sizeof(*r));
	threadgate__threads__v1__prune_threads_reply__init(r);
	r->pruned_count = pruned;
	*out            = r;
	return (CM_OK);
}

// ---------------------------------------------------------------------
// State
// ---------------------------------------------------------------------

cm_err
tsvc_store_get_state(
    tsvc_store *st, const tsvc_get_state_req *req, tsvc_state_reply **out)
{
	tsvc_state_reply *r  = NULL;
	tsvc_checkpoint  *cp = NULL;
	char              id[CM_UUID_LEN + 1];
	char              cid[CM_UUID_LEN + 1];
	int64_t           created = 0;
	cm_err            rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_uuid(st, req->thread_id, "thread ID", id);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->checkpoint_id[0] != '\0') {
		rv = check_uuid(st, req->checkpoint_id, "checkpoint ID", cid);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = check_name(st, req->checkpoint_ns, "checkpoint_ns");
	if (rv != CM_OK) {
		goto out;
	}
	rv = tx_begin(st, TSVC_TX_READ);
	if (rv != CM_OK) {
		goto out;
	}
	rv = thread_exists(st, req->owner, id, 0, &created);
	if (rv != CM_OK) {
		goto out;
	}
	rv = st->db->be->cp_get(st, req->owner, id, req->checkpoint_ns,
	    req->checkpoint_id[0] != '\0' ? cid : NULL, &cp);
	if (rv != CM_OK) {
		goto out;
	}
	if (cp == NULL && req->checkpoint_id[0] != '\0') {
		rv = fail(st, CM_ENOENT, "Checkpoint %s not found", cid);
		goto out;
	}
	rv = tx_commit(st);
out:
	tx_end(st);
	if (rv != CM_OK) {
		msg_free(cp);
		return (rv);
	}
	r = cm_xmalloc(sizeof(*r));
	threadgate__threads__v1__state_reply__init(r);
	r->has_checkpoint       = (cp != NULL);
	r->checkpoint           = cp;
	r->thread_created_at_us = created;
	*out                    = r;
	return (CM_OK);
}

cm_err
tsvc_store_update_state(
    tsvc_store *st, const tsvc_update_state_req *req, tsvc_checkpoint **out)
{
	tsvc_checkpoint *cp     = NULL;
	json_t          *values = NULL;
	update           up;
	char             id[CM_UUID_LEN + 1];
	char             cid[CM_UUID_LEN + 1];
	cm_err           rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_uuid(st, req->thread_id, "thread ID", id);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->checkpoint_id[0] != '\0') {
		rv = check_uuid(st, req->checkpoint_id, "checkpoint ID", cid);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = check_name(st, req->checkpoint_ns, "checkpoint_ns");
	if (rv == CM_OK) {
		rv = check_name(st, req->as_node, "as_node");
	}
	if (rv != CM_OK) {
		goto out;
	}
	if (req->values_json[0] != '\0') {
		rv = parse_json(st, req->values_json, "values", -1, &values);
		if (rv != CM_OK) {
			goto out;
		}
		rv = check_update(st, values);
		if (rv != CM_OK) {
			goto out;
		}
	}
	if (req->as_node[0] != '\0') {
		json_t *probe = json_string(req->as_node);

		if (probe == NULL) {
			rv = fail(st, CM_EINVAL, "as_node must be UTF-8");
			goto out;
		}
		json_decref(probe);
	}
	up.values  = values;
	up.as_node = req->as_node;
	rv         = tx_begin(st, TSVC_TX_WRITE);
	if (rv != CM_OK) {
		goto out;
	}
	rv = thread_exists(st, req->owner, id, 1, NULL);
	if (rv != CM_OK) {
		goto out;
	}
	rv = state_apply(st, req->owner, id, req->checkpoint_ns,
	    req->checkpoint_id[0] != '\0' ? cid : NULL, &up, 1, cm_now_us(),
	    &cp);
	if (rv == CM_OK) {
		rv = quota_check(st, req->owner);
	}
	if (rv == CM_OK) {
		rv = tx_commit(st);
	}
out:
	tx_end(st);
	json_decref(values);
	if (rv != CM_OK) {
		msg_free(cp);
		return (rv);
	}
	*out = cp;
	return (CM_OK);
}

cm_err
tsvc_store_patch_state(tsvc_store *st, const tsvc_patch_state_req *req)
{
	const tsvc_backend *be    = st->db->be;
	tsvc_checkpoint    *cp    = NULL;
	json_t             *patch = NULL;
	json_t             *meta  = NULL;
	char               *mtext = NULL;
	char                id[CM_UUID_LEN + 1];
	char                cid[CM_UUID_LEN + 1];
	cm_err              rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_uuid(st, req->thread_id, "thread ID", id);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->checkpoint_id[0] != '\0') {
		rv = check_uuid(st, req->checkpoint_id, "checkpoint ID", cid);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = parse_object(st, req->metadata_json, "metadata", &patch);
	if (rv != CM_OK) {
		goto out;
	}
	rv = tx_begin(st, TSVC_TX_WRITE);
	if (rv != CM_OK) {
		goto out;
	}
	rv = thread_exists(st, req->owner, id, 1, NULL);
	if (rv != CM_OK) {
		goto out;
	}
	rv = be->cp_get(st, req->owner, id, "",
	    req->checkpoint_id[0] != '\0' ? cid : NULL, &cp);
	if (rv != CM_OK) {
		goto out;
	}
	if (cp == NULL) {
		if (req->checkpoint_id[0] != '\0') {
			rv = fail(
			    st, CM_ENOENT, "Checkpoint %s not found", cid);
		} else {
			rv = fail(st, CM_ENOENT,
			    "Thread with ID %s has no state", id);
		}
		goto out;
	}
	if (cm_json_parse(cp->metadata_json, strlen(cp->metadata_json),
	        TSVC_JSON_STORED_MAX, &meta, NULL, 0) != CM_OK ||
	    !json_is_object(meta)) {
		json_decref(meta);
		meta = json_object();
	}
	json_object_update(meta, patch);
	mtext = cm_json_dump(meta);
	if (strlen(mtext) > TSVC_JSON_FIELD_MAX) {
		rv = fail(st, CM_ETOOBIG, "metadata would exceed %u bytes",
		    TSVC_JSON_FIELD_MAX);
		goto out;
	}
	rv = be->cp_set_metadata(
	    st, req->owner, id, "", cp->checkpoint_id, mtext);
	if (rv == CM_OK) {
		rv = quota_check(st, req->owner);
	}
	if (rv == CM_OK) {
		rv = tx_commit(st);
	}
out:
	tx_end(st);
	msg_free(cp);
	json_decref(patch);
	json_decref(meta);
	free(mtext);
	return (rv);
}

// The history page being filled, with the reply budget.
typedef struct history_acc {
	tsvc_store         *st;
	tsvc_history_reply *r;
	size_t              limit;
	size_t              bytes;
} history_acc;

static cm_err
history_sink(void *arg, tsvc_checkpoint *c)
{
	history_acc *a = arg;

	if (a->r->n_checkpoints == a->limit) {
		msg_free(c); // a backend sent more than asked
		return (CM_OK);
	}
	a->r->checkpoints[a->r->n_checkpoints++] = c;
	a->bytes += strlen(c->metadata_json) + strlen(c->values_json);
	if (a->bytes > TSVC_REPLY_BUDGET) {
		return (page_too_big(a->st));
	}
	return (CM_OK);
}

cm_err
tsvc_store_get_history(
    tsvc_store *st, const tsvc_history_req *req, tsvc_history_reply **out)
{
	tsvc_history_reply *r      = NULL;
	char               *filter = NULL;
	json_t             *fdoc   = NULL;
	tsvc_history_query  q;
	history_acc         acc;
	char                id[CM_UUID_LEN + 1];
	char                before[CM_UUID_LEN + 1];
	char                start[CM_UUID_LEN + 1];
	cm_err              rv;

	rv = check_owner(st, req->owner);
	if (rv != CM_OK) {
		goto out;
	}
	rv = check_uuid(st, req->thread_id, "thread ID", id);
	if (rv != CM_OK) {
		goto out;
	}
	if (req->before_checkpoint_id[0] != '\0') {
		rv = check_uuid(
		    st, req->before_checkpoint_id, "checkpoint ID", before);
		if (rv != CM_OK) {
			goto out;
		}
	}
	if (req->checkpoint_id[0] != '\0') {
		rv =
		    check_uuid(st, req->checkpoint_id, "checkpoint ID", start);
		if (rv != CM_OK) {
			goto out;
		}
	}
	rv = check_name(st, req->checkpoint_ns, "checkpoint_ns");
	if (rv != CM_OK) {
		goto out;
	}
	if (req->limit < TSVC_PAGE_MIN || req->limit > TSVC_PAGE_MAX) {
		rv = fail(st, CM_EINVAL, "limit must be between %d and %d",
		    TSVC_PAGE_MIN, TSVC_PAGE_MAX);
		goto out;
	}
	rv = parse_filter(st, req->metadata_json, "metadata", &filter, &fdoc);
	if (rv != CM_OK) {
		goto out;
	}
	r = cm_xmalloc(sizeof(*r));
	threadgate__threads__v1__history_reply__init(r);
	r->checkpoints =
	    cm_xcalloc((size_t) req->limit, sizeof(tsvc_checkpoint *));
	memset(&q, 0, sizeof(q));
	q.owner        = req->owner;
	q.thread_id    = id;
	q.ns           = req->checkpoint_ns;
	q.before       = req->before_checkpoint_id[0] != '\0' ? before : NULL;
	q.start        = req->checkpoint_id[0] != '\0' ? start : NULL;
	q.metadata     = filter;
	q.metadata_doc = fdoc;
	q.limit        = req->limit;
	memset(&acc, 0, sizeof(acc));
	acc.st    = st;
	acc.r     = r;
	acc.limit = (size_t) req->limit;
	rv        = tx_begin(st, TSVC_TX_READ);
	if (rv != CM_OK) {
		goto out;
	}
	rv = thread_exists(st, req->owner, id, 0, NULL);
	if (rv != CM_OK) {
		goto out;
	}
	rv = st->db->be->cp_history(st, &q, history_sink, &acc);
	if (rv == CM_OK) {
		rv = tx_commit(st);
	}
out:
	tx_end(st);
	free(filter);
	json_decref(fdoc);
	if (rv != CM_OK) {
		msg_free(r);
		return (rv);
	}
	*out = r;
	return (CM_OK);
}

// ---------------------------------------------------------------------
// TTL sweep
// ---------------------------------------------------------------------

cm_err
tsvc_store_sweep(tsvc_store *st, int64_t now_us, int64_t *deleted)
{
	int64_t total = 0;
	int64_t n;
	cm_err  rv;

	// One transaction per batch, so writers get the lock between.
	do {
		n  = 0;
		rv = st->db->be->sweep(st, now_us, TSVC_SWEEP_BATCH, &n);
		total += n;
	} while (rv == CM_OK && n == TSVC_SWEEP_BATCH);
	if (deleted != NULL) {
		*deleted = total;
	}
	return (rv);
}

cm_err
tsvc_store_maintain(tsvc_store *st)
{
	return (st->db->be->maintain(st));
}
