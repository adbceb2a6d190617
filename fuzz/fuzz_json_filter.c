// SPDX-License-Identifier: MIT
//
// libFuzzer target: the thread-service's metadata/values filter
// (thread-service/json_filter.c, linked as it is - that directory is not
// edited from here). Two ways in, as the service uses them:
//   - tsvc_json_contains(doc, filter) on values parsed with cm_json_parse;
//   - the SQL function tg_json_contains(doc, filter) on an in-memory
//     sqlite database, with both as bound parameters (how the store runs
//     search and count).
// Input: a document and a filter separated by the first NUL byte.
// Checks besides the sanitizers: containment is reflexive (a document
// contains itself), an empty-object filter matches everything, and the
// SQL function agrees with the direct call.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/json.h"
#include "thread-service/tsvc.h"

// Largest input looked at: the filters the gateway forwards are bodies of
// at most 1 MiB; a fuzzer input of 64 KiB covers every shape.
#define FUZZ_TEXT_MAX (64 * 1024)

static sqlite3      *db;
static sqlite3_stmt *stmt;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	if (sqlite3_open(":memory:", &db) != SQLITE_OK ||
	    tsvc_sql_register(db) != CM_OK ||
	    sqlite3_prepare_v2(db, "SELECT tg_json_contains(?1, ?2)", -1,
	        &stmt, NULL) != SQLITE_OK) {
		abort();
	}
	return (0);
}

static int
sql_contains(const char *doc, size_t dl, const char *filter, size_t fl)
{
	int rv = -1;

	sqlite3_reset(stmt);
	sqlite3_bind_text(stmt, 1, doc, (int) dl, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, filter, (int) fl, SQLITE_STATIC);
	if (sqlite3_step(stmt) == SQLITE_ROW &&
	    sqlite3_column_type(stmt, 0) == SQLITE_INTEGER) {
		rv = sqlite3_column_int(stmt, 0);
	}
	sqlite3_reset(stmt);
	return (rv);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *) data;
	const char *sep;
	size_t      dl, fl;
	json_t     *doc = NULL, *filter = NULL, *empty;

	if (size > FUZZ_TEXT_MAX) {
		return (0);
	}
	sep = memchr(text, '\0', size);
	dl  = sep != NULL ? (size_t) (sep - text) : size;
	fl  = sep != NULL ? size - dl - 1 : 0;
	if (cm_json_parse(text, dl, FUZZ_TEXT_MAX, &doc, NULL, 0) != CM_OK) {
		doc = NULL;
	}
	if (sep != NULL &&
	    cm_json_parse(sep + 1, fl, FUZZ_TEXT_MAX, &filter, NULL, 0) !=
	        CM_OK) {
		filter = NULL;
	}
	empty = json_object();
	if (doc != NULL) {
		if (tsvc_json_contains(doc, doc) != 1 ||
		    tsvc_json_contains(doc, empty) != 1) {
			abort();
		}
	}
	if (filter != NULL) {
		int direct = tsvc_json_contains(doc, filter);
		// doc not JSON: the SQL function says 0 (or 1 for {}).
		int via_sql = sql_contains(text, dl, sep + 1, fl);
		if (direct != 0 && direct != 1) {
			abort();
		}
		if (via_sql != direct &&
		    !(doc == NULL && via_sql == 0 && direct == 0)) {
			abort();
		}
	}
	json_decref(empty);
	json_decref(doc);
	json_decref(filter);
	return (0);
}
