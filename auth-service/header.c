// SPDX-License-Identifier: MIT
//
// Authorization header parsing. The gateway forwards every Authorization
// value the client sent, unparsed; this is the one place that decides
// what a bearer credential looks like. The rules follow GoTrue's
// (?i)^bearer (\S+)$: scheme case-insensitive, one space, one token
// without whitespace; plus exactly one header value and length limits.

#include <string.h>
#include <strings.h>

#include "auth-service/service.h"

static cm_err
refuse(const char *why, char *detail, size_t detail_len)
{
	if (detail != NULL && detail_len > 0) {
		snprintf(detail, detail_len, "%s", why);
	}
	return (CM_EAUTH);
}

cm_err
auth_header_parse(const char *const *values, size_t n, const char **token,
    size_t *token_len, char *detail, size_t detail_len)
{
	static const char scheme[] = "bearer";
	const size_t      slen     = sizeof(scheme) - 1;
	const char       *v;
	size_t            len;
	size_t            tlen;

	if (n == 0 || values == NULL) {
		return (refuse("missing bearer token", detail, detail_len));
	}
	if (n > 1) {
		return (refuse(
		    "more than one Authorization header", detail, detail_len));
	}
	v = values[0];
	if (v == NULL) {
		return (refuse("missing bearer token", detail, detail_len));
	}
	len = strnlen(v, AUTH_HEADER_MAX + 1);
	if (len > AUTH_HEADER_MAX) {
		return (refuse(
		    "Authorization header too long", detail, detail_len));
	}
	if (len == 0) {
		return (refuse("missing bearer token", detail, detail_len));
	}
	if (len < slen + 1 || strncasecmp(v, scheme, slen) != 0 ||
	    v[slen] != ' ') {
		return (refuse("Authorization scheme must be Bearer", detail,
		    detail_len));
	}
	tlen = len - slen - 1;
	if (tlen == 0) {
		return (refuse("empty bearer token", detail, detail_len));
	}
	if (tlen > AUTH_TOKEN_MAX) {
		return (refuse("bearer token too long", detail, detail_len));
	}
	for (size_t i = slen + 1; i < len; i++) {
		unsigned char ch = (unsigned char) v[i];
		// No whitespace (a second space means two tokens) and no
		// control bytes; bytes >= 0x80 are refused too: tokens are
		// ASCII (base64url, or opaque printable strings).
		if (ch <= 0x20 || ch >= 0x7f) {
			return (refuse(
			    "malformed bearer token", detail, detail_len));
		}
	}
	*token     = v + slen + 1;
	*token_len = tlen;
	return (CM_OK);
}
