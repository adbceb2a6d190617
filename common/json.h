// SPDX-License-Identifier: MIT
//
// Bounded JSON parsing on top of jansson. Every JSON input from outside
// (HTTP bodies, IdP answers, proto JSON fields) goes through cm_json_parse,
// which enforces a size limit and a nesting limit.
#ifndef CM_JSON_H
#define CM_JSON_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"

// Deepest nesting of arrays/objects accepted anywhere. LangGraph state is
// nested, but 64 levels is far past real documents and keeps recursion in
// our own code (merges, filters, SQL building) bounded.
#define CM_JSON_MAX_DEPTH 64

/**
 * cm_json_parse() parses len bytes of buf (need not be NUL-terminated)
 * as one JSON value. Returns a new reference in *out and CM_OK; CM_ETOOBIG
 * when len > max_len; CM_EINVAL when it is not valid JSON (detail, if not
 * NULL, gets a message of at most detail_len bytes), holds a raw NUL byte
 * (jansson alone would stop reading there) or nests deeper than
 * CM_JSON_MAX_DEPTH. *out is written only on success. Duplicate keys keep
 * the last value (jansson's default).
 */
cm_err cm_json_parse(const char *buf, size_t len, size_t max_len, json_t **out,
    char *detail, size_t detail_len);

/** cm_json_depth() returns the nesting depth of v (scalar = 0). */
int cm_json_depth(const json_t *v);

/**
 * cm_json_dump() serializes v compactly (JSON_COMPACT, keys in insertion
 * order, non-ASCII kept as UTF-8). Returns a new malloc'd NUL-terminated
 * string; never NULL (aborts on OOM).
 */
char *cm_json_dump(const json_t *v);

#endif // CM_JSON_H
