// SPDX-License-Identifier: MIT
//
// Small token helpers shared by the providers: reading a JWT's exp claim
// without verifying it (only ever used to bound how long a result that
// the IdP confirmed may be cached) and form-urlencoding.

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "auth-service/service.h"
#include "common/json.h"
#include "common/xalloc.h"

// Largest JWT payload segment we decode for exp, in base64url chars: the
// whole token is at most AUTH_TOKEN_MAX anyway.
#define TOKEN_PAYLOAD_MAX AUTH_TOKEN_MAX

static int
b64url_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z') {
		return (c - 'A');
	}
	if (c >= 'a' && c <= 'z') {
		return (c - 'a' + 26);
	}
	if (c >= '0' && c <= '9') {
		return (c - '0' + 52);
	}
	if (c == '-') {
		return (62);
	}
	if (c == '_') {
		return (63);
	}
	return (-1);
}

// Decodes len base64url chars (no padding) into a new buffer; NULL on a
// bad character or length.
static unsigned char *
b64url_decode(const char *s, size_t len, size_t *out_len)
{
	unsigned char *out;
	size_t         o    = 0;
	uint32_t       acc  = 0;
	int            bits = 0;

	if (len % 4 == 1) {
		return (NULL);
	}
	out = cm_xmalloc(len * 3 / 4 + 1);
	for (size_t i = 0; i < len; i++) {
		int v = b64url_val((unsigned char) s[i]);
		if (v < 0) {
			free(out);
			return (NULL);
		}
		acc = (acc << 6) | (uint32_t) v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char) ((acc >> bits) & 0xff);
		}
	}
	*out_len = o;
	return (out);
}

int64_t
auth_token_exp(const char *token)
{
	const char    *d1;
	const char    *d2;
	unsigned char *raw = NULL;
	size_t         raw_len;
	json_t        *payload = NULL;
	json_t        *exp;
	int64_t        rv = 0;

	if (token == NULL) {
		return (0);
	}
	d1 = strchr(token, '.');
	if (d1 == NULL) {
		return (0);
	}
	d2 = strchr(d1 + 1, '.');
	if (d2 == NULL || strchr(d2 + 1, '.') != NULL ||
	    (size_t) (d2 - d1 - 1) > TOKEN_PAYLOAD_MAX) {
		return (0);
	}
	raw = b64url_decode(d1 + 1, (size_t) (d2 - d1 - 1), &raw_len);
	if (raw == NULL) {
		goto out;
	}
	if (cm_json_parse((const char *) raw, raw_len, TOKEN_PAYLOAD_MAX,
	        &payload, NULL, 0) != CM_OK) {
		goto out;
	}
	exp = json_is_object(payload) ? json_object_get(payload, "exp") : NULL;
	if (json_is_integer(exp) && json_integer_value(exp) > 0) {
		rv = json_integer_value(exp);
	} else if (json_is_real(exp) && json_real_value(exp) > 0 &&
	    json_real_value(exp) < 1e15) {
		rv = (int64_t) json_real_value(exp);
	}
out:
	json_decref(payload);
	free(raw);
	return (rv);
}

cm_err
auth_form_encode(const char *s, char *out, size_t out_len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t            o     = 0;
	cm_err            rv    = CM_OK;

	if (out_len == 0) {
		return (CM_ETOOBIG);
	}
	for (const unsigned char *p = (const unsigned char *) s; *p != '\0';
	     p++) {
		unsigned char c = *p;
		int keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		    c == '_' || c == '*';
		size_t need = (keep || c == ' ') ? 1 : 3;

		if (o + need >= out_len) {
			rv = CM_ETOOBIG;
			goto out;
		}
		if (keep) {
			out[o++] = (char) c;
		} else if (c == ' ') {
			out[o++] = '+';
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 0xf];
		}
	}
out:
	out[rv == CM_OK ? o : 0] = '\0';
	return (rv);
}

const char *
auth_json_text(const json_t *v)
{
	const char *s = json_string_value(v);

	if (s == NULL || strlen(s) != json_string_length(v)) {
		return (NULL);
	}
	return (s);
}
