// SPDX-License-Identifier: MIT
//
// libFuzzer target: the thread-service's metadata/values filter,
// tsvc_json_contains() (thread-service/json_filter.c: PostgreSQL jsonb
// `@>` rules; the sqlite backend evaluates every filter with it, the
// PostgreSQL backend uses `@>` itself, so the two must agree - the store
// tests run both against the same cases).
// Input: a document and a filter separated by the first NUL byte, each
// parsed with cm_json_parse as the service parses them.
// Checks besides the sanitizers, properties of jsonb containment that hold
// for every input:
//   - the answer is 0 or 1;
//   - every document contains itself;
//   - an object contains {}, an array contains [];
//   - an object filter that matches still matches with any one of its
//     keys removed (containment is monotone in the filter).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/log.h"
#include "thread-service/tsvc.h"

// Largest input looked at: the filters the gateway forwards are bodies of
// at most 1 MiB; a fuzzer input of 64 KiB covers every shape.
#define FUZZ_TEXT_MAX (64 * 1024)

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	cm_log_init("fuzz", CM_LOG_ERROR);
	return (0);
}

// The filter minus its first key still matches when the whole did.
static void
check_monotone(const json_t *doc, json_t *filter)
{
	const char *key;
	json_t     *v;
	json_t     *less;

	if (!json_is_object(filter) || json_object_size(filter) == 0) {
		return;
	}
	less = json_deep_copy(filter);
	json_object_foreach(filter, key, v)
	{
		json_object_del(less, key);
		break;
	}
	if (tsvc_json_contains(doc, less) != 1) {
		abort();
	}
	json_decref(less);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *) data;
	const char *sep;
	size_t      dl, fl;
	json_t     *doc = NULL, *filter = NULL;

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
	if (doc != NULL) {
		json_t *empty_obj = json_object();
		json_t *empty_arr = json_array();

		if (tsvc_json_contains(doc, doc) != 1) {
			abort();
		}
		if (json_is_object(doc) &&
		    tsvc_json_contains(doc, empty_obj) != 1) {
			abort();
		}
		if (json_is_array(doc) &&
		    tsvc_json_contains(doc, empty_arr) != 1) {
			abort();
		}
		json_decref(empty_obj);
		json_decref(empty_arr);
	}
	if (filter != NULL) {
		int r = tsvc_json_contains(doc, filter);

		if (r != 0 && r != 1) {
			abort();
		}
		if (r == 1) {
			check_monotone(doc, filter);
		}
	}
	json_decref(doc);
	json_decref(filter);
	return (0);
}
