// SPDX-License-Identifier: MIT
//
// JSON containment for the thread-service's search and history filters.
//
// LangGraph's `metadata` and `values` filters are containment matches: the
// reference server on PostgreSQL evaluates them with jsonb `@>`, so that is
// the definition here too, and the two backends agree row for row: the
// PostgreSQL backend uses `@>` itself (and its GIN index), the sqlite
// backend calls tsvc_json_contains() from SQL. The rules (PostgreSQL 15,
// "jsonb Containment and Existence") are in tsvc.h. A filter key is only
// ever used as a jansson object key: quotes, dots, `$` or SQL text in it
// simply fail to match.
#include <string.h>

#include "thread-service/tsvc.h"

// Numbers compare by value, as jsonb's numeric does: 1 equals 1.0.
static int
number_equal(const json_t *a, const json_t *b)
{
	if (json_is_integer(a) && json_is_integer(b)) {
		return (json_integer_value(a) == json_integer_value(b));
	}
	return (json_number_value(a) == json_number_value(b));
}

static int
scalar_equal(const json_t *a, const json_t *b)
{
	if (json_is_number(a) && json_is_number(b)) {
		return (number_equal(a, b));
	}
	if (json_typeof(a) != json_typeof(b)) {
		return (0);
	}
	switch (json_typeof(a)) {
	case JSON_STRING:
		return (json_string_length(a) == json_string_length(b) &&
		    memcmp(json_string_value(a), json_string_value(b),
		        json_string_length(a)) == 0);
	case JSON_TRUE:
	case JSON_FALSE:
	case JSON_NULL:
		return (1);
	default:
		return (0);
	}
}

static int
is_container(const json_t *v)
{
	return (json_is_object(v) || json_is_array(v));
}

// contains is `doc @> filter` below the top level, where a scalar never
// matches an array.
static int
contains(const json_t *doc, const json_t *filter)
{
	const char *key;
	json_t     *want;
	size_t      i;

	if (json_is_object(filter)) {
		if (!json_is_object(doc)) {
			return (0);
		}
		json_object_foreach((json_t *) filter, key, want)
		{
			json_t *have = json_object_get(doc, key);

			if (have == NULL || !contains(have, want)) {
				return (0);
			}
		}
		return (1);
	}
	if (json_is_array(filter)) {
		if (!json_is_array(doc)) {
			return (0);
		}
		// Every element of the filter is contained in some element
		// of the document: scalars by equality, containers by
		// containment (a scalar never matches a container).
		json_array_foreach((json_t *) filter, i, want)
		{
			json_t *have;
			size_t  j;
			int     found = 0;

			json_array_foreach((json_t *) doc, j, have)
			{
				if (is_container(want)
				        ? contains(have, want)
				        : (!is_container(have) &&
				              scalar_equal(have, want))) {
					found = 1;
					break;
				}
			}
			if (!found) {
				return (0);
			}
		}
		return (1);
	}
	return (!is_container(doc) && scalar_equal(doc, filter));
}

int
tsvc_json_contains(const json_t *doc, const json_t *filter)
{
	size_t  i;
	json_t *have;

	if (doc == NULL || filter == NULL) {
		return (0);
	}
	// The one top-level exception: an array contains a scalar that is
	// one of its elements ('["a","b"]' @> '"a"').
	if (json_is_array(doc) && !is_container(filter)) {
		json_array_foreach((json_t *) doc, i, have)
		{
			if (!is_container(have) &&
			    scalar_equal(have, filter)) {
				return (1);
			}
		}
		return (0);
	}
	return (contains(doc, filter));
}
