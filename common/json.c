// SPDX-License-Identifier: MIT
//
// Bounded JSON parsing and compact dumping on top of jansson (json.h).
#include <stdio.h>
#include <string.h>

#include "common/json.h"
#include "common/xalloc.h"

int
cm_json_depth(const json_t *v)
{
	int         max = 0;
	const char *key;
	json_t     *child;
	size_t      i;

	if (json_is_object(v)) {
		json_object_foreach((json_t *) v, key, child)
		{
			int d = cm_json_depth(child);
			if (d > max) {
				max = d;
			}
		}
		return (max + 1);
	}
	if (json_is_array(v)) {
		json_array_foreach(v, i, child)
		{
			int d = cm_json_depth(child);
			if (d > max) {
				max = d;
			}
		}
		return (max + 1);
	}
	return (0);
}

// Depth check before parsing: jansson recurses per nesting level (up to
// its compiled limit of 2048), so reject deep input by scanning brackets
// outside strings first. Linear, no allocation.
static int
too_deep(const char *buf, size_t len)
{
	int depth  = 0;
	int in_str = 0;

	for (size_t i = 0; i < len; i++) {
		char c = buf[i];

		if (in_str) {
			if (c == '\\') {
				i++;
			} else if (c == '"') {
				in_str = 0;
			}
			continue;
		}
		if (c == '"') {
			in_str = 1;
		} else if (c == '{' || c == '[') {
			if (++depth > CM_JSON_MAX_DEPTH) {
				return (1);
			}
		} else if (c == '}' || c == ']') {
			depth--;
		}
	}
	return (0);
}

cm_err
cm_json_parse(const char *buf, size_t len, size_t max_len, json_t **out,
    char *detail, size_t detail_len)
{
	json_error_t jerr;
	json_t      *v;

	if (len > max_len) {
		if (detail != NULL) {
			snprintf(detail, detail_len,
			    "JSON larger than %zu bytes", max_len);
		}
		return (CM_ETOOBIG);
	}
	// jansson stops reading at a raw NUL byte, so "{}\0junk" would parse
	// as {}; JSON text never holds one (RFC 8259: escaped in strings,
	// not whitespace), so such input is refused as a whole.
	if (buf != NULL && memchr(buf, '\0', len) != NULL) {
		if (detail != NULL) {
			snprintf(detail, detail_len, "NUL byte in JSON text");
		}
		return (CM_EINVAL);
	}
	if (buf == NULL || too_deep(buf, len)) {
		if (detail != NULL) {
			snprintf(detail, detail_len,
			    "JSON nested deeper than %d levels",
			    CM_JSON_MAX_DEPTH);
		}
		return (CM_EINVAL);
	}
	v = json_loadb(buf, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (v == NULL) {
		if (detail != NULL) {
			snprintf(
			    detail, detail_len, "invalid JSON: %s", jerr.text);
		}
		return (CM_EINVAL);
	}
	*out = v;
	return (CM_OK);
}

char *
cm_json_dump(const json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

	if (s == NULL) {
		// json_dumps fails only on allocation failure (or invalid
		// UTF-8, which jansson refuses at creation time).
		return (cm_xstrdup("null"));
	}
	return (s);
}
