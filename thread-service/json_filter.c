// SPDX-License-Identifier: MIT
//
// JSON containment for the thread-service's search and history filters.
//
// LangGraph's `metadata` and `values` filters are containment matches
// (Postgres `@>` on jsonb): every key of the filter must be in the
// document, nested objects recurse, anything else compares equal. The
// store evaluates them in SQL through tg_json_contains(doc, filter), a
// deterministic function registered on each connection, so filters are
// always bound parameters and never pasted into SQL text. A filter key is
// only ever used as a jansson object key: quotes, dots, `$` or SQL text in
// it simply fail to match.
#include <string.h>

#include "common/json.h"
#include "thread-service/tsvc.h"

int
tsvc_json_contains(const json_t *doc, const json_t *filter)
{
	const char *key;
	json_t     *want;

	if (filter == NULL) {
		return (1);
	}
	if (json_is_object(filter) && json_object_size(filter) == 0) {
		return (1);
	}
	if (doc == NULL) {
		return (0);
	}
	if (!json_is_object(filter)) {
		return (json_equal((json_t *) doc, (json_t *) filter) ? 1 : 0);
	}
	if (!json_is_object(doc)) {
		return (0);
	}
	json_object_foreach((json_t *) filter, key, want)
	{
		json_t *have = json_object_get(doc, key);

		if (have == NULL) {
			return (0);
		}
		// An empty object in a filter asks for "an object here".
		if (json_is_object(want) && !json_is_object(have)) {
			return (0);
		}
		if (!tsvc_json_contains(have, want)) {
			return (0);
		}
	}
	return (1);
}

static void
filter_free(void *p)
{
	json_decref((json_t *) p);
}

// tg_json_contains(doc, filter): see tsvc_sql_register() in tsvc.h.
static void
sql_json_contains(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	json_t     *filter;
	json_t     *doc = NULL;
	const char *text;
	int         len;

	(void) argc;
	if (sqlite3_value_type(argv[1]) == SQLITE_NULL) {
		sqlite3_result_null(ctx);
		return;
	}
	filter = sqlite3_get_auxdata(ctx, 1);
	if (filter == NULL) {
		cm_err rv;

		text = (const char *) sqlite3_value_text(argv[1]);
		len  = sqlite3_value_bytes(argv[1]);
		rv   = cm_json_parse(text != NULL ? text : "", (size_t) len,
		    TSVC_JSON_FIELD_MAX, &filter, NULL, 0);
		if (rv != CM_OK) {
			sqlite3_result_error(
			    ctx, "tg_json_contains: bad filter", -1);
			return;
		}
		// sqlite owns filter from here on (it may free it at once, so
		// fetch it back before use).
		sqlite3_set_auxdata(ctx, 1, filter, filter_free);
		filter = sqlite3_get_auxdata(ctx, 1);
		if (filter == NULL) {
			// sqlite could not keep it (OOM): it is freed already.
			sqlite3_result_error_nomem(ctx);
			return;
		}
	}
	if (json_is_object(filter) && json_object_size(filter) == 0) {
		sqlite3_result_int(ctx, 1);
		return;
	}
	if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
		sqlite3_result_int(ctx, 0);
		return;
	}
	text = (const char *) sqlite3_value_text(argv[0]);
	len  = sqlite3_value_bytes(argv[0]);
	if (text == NULL ||
	    cm_json_parse(text, (size_t) len, TSVC_JSON_STORED_MAX, &doc, NULL,
	        0) != CM_OK) {
		// Stored documents are always valid JSON; if one is not, it
		// matches nothing rather than failing the whole query.
		sqlite3_result_int(ctx, 0);
		return;
	}
	sqlite3_result_int(ctx, tsvc_json_contains(doc, filter));
	json_decref(doc);
}

cm_err
tsvc_sql_register(sqlite3 *db)
{
	int rc;

	rc = sqlite3_create_function_v2(db, "tg_json_contains", 2,
	    SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL,
	    sql_json_contains, NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		return (CM_EINTERNAL);
	}
	return (CM_OK);
}
