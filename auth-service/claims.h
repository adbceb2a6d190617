// SPDX-License-Identifier: MIT
//
// A strict, allocation-free reader for the top-level members of one JSON
// object: the payload of a verified JWT (issue 4). Building a jansson DOM
// for a 500-byte Supabase payload costs more than the claim checks need,
// so auth_claims_scan() walks the text once, validates ALL of it as RFC
// 8259 JSON (skipped values included: strings with escapes and UTF-8,
// number grammar and range, literals, nesting depth) and records, for each
// requested name, where its value is and what type it has. Strings and
// arrays are decoded afterwards, on demand, into caller buffers with
// explicit limits (nothing is ever truncated silently).
//
// Deliberate differences from jansson (json_loadb, flags 0):
//  - a requested name that appears twice at the top level is refused
//    (CM_EEXIST) instead of "last one wins";
//  - nesting deeper than CM_JSON_MAX_DEPTH is refused (the same limit
//    cm_json_parse applies);
//  - the top level must be an object.
//  - a raw NUL byte right after a number or literal is refused (jansson
//    2.14's lexer skips it; RFC 8259 does not allow it).
// Everything jansson (flags 0) refuses is refused too; "\u0000" in any
// string or key is refused, as jansson does without JSON_ALLOW_NUL
// (jwt.c used to parse with JSON_ALLOW_NUL: a "\u0000" in a read claim
// was refused by its control-character check, one in a member it does not
// read, such as user_metadata, passed; now the whole payload is refused).
#ifndef AUTH_CLAIMS_H
#define AUTH_CLAIMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

// Most names one auth_claims_scan() call looks for. jwt.c asks for 10
// (exp nbf iat iss aud <identity> email session_id scope scp); 16 leaves
// room without making the per-key match loop long.
#define AUTH_CLAIMS_NAMES_MAX 16

typedef enum {
	AUTH_CLAIM_ABSENT = 0, // the name did not occur
	AUTH_CLAIM_NULL,
	AUTH_CLAIM_TRUE,
	AUTH_CLAIM_FALSE,
	AUTH_CLAIM_INTEGER, // no fraction, no exponent: value in .i
	AUTH_CLAIM_REAL,    // fraction or exponent: value in .d (finite)
	AUTH_CLAIM_STRING,
	AUTH_CLAIM_ARRAY,
	AUTH_CLAIM_OBJECT,
} auth_claim_type;

// One value found by auth_claims_scan() or auth_claims_next().
typedef struct auth_claim {
	auth_claim_type type;
	const char     *raw; // borrowed: first byte of the value's JSON text
	size_t          len; // length of that text (quotes/brackets included)
	int64_t         i;   // AUTH_CLAIM_INTEGER only
	double          d;   // AUTH_CLAIM_REAL only (strtod, as jansson)
} auth_claim;

// Iterator over the elements of an AUTH_CLAIM_ARRAY value.
typedef struct auth_claim_iter {
	const char *p;   // next unread byte inside the array
	const char *end; // one past the closing ']'
} auth_claim_iter;

/**
 * auth_claims_scan() validates buf (len bytes, need not be NUL-terminated)
 * as exactly one JSON object, optionally surrounded by whitespace, and for
 * each names[k] (k < n) writes into out[k] the top-level member of that
 * name (matched after unescaping the key), or AUTH_CLAIM_ABSENT. The same
 * name may be listed twice; both slots get the value.
 *
 * buf: the JSON text; not NULL. names: n NUL-terminated names, not NULL.
 * n: 0..AUTH_CLAIMS_NAMES_MAX. out: n slots.
 *
 * Returns CM_OK; CM_EINVAL when buf is not strict JSON, not an object,
 * nests deeper than CM_JSON_MAX_DEPTH, or n is out of range; CM_EEXIST
 * when a requested name occurs twice at the top level. out is written
 * only on success; its raw pointers borrow from buf (valid while buf is).
 * No allocation. Any thread; reentrant.
 */
cm_err auth_claims_scan(const char *buf, size_t len, const char *const *names,
    size_t n, auth_claim *out);

/**
 * auth_claims_str() decodes the string value v (escapes and surrogate
 * pairs resolved to UTF-8) into buf, NUL-terminated, and its length (not
 * counting the NUL) into *lenp (may be NULL).
 *
 * Returns CM_OK; CM_EINVAL when v is not AUTH_CLAIM_STRING; CM_ETOOBIG
 * when the decoded string plus its NUL does not fit in cap bytes (buf
 * then holds an unspecified prefix and must not be used). *lenp is
 * written only on success. Any thread.
 */
cm_err auth_claims_str(
    const auth_claim *v, char *buf, size_t cap, size_t *lenp);

/**
 * auth_claims_str_eq() is true when v is a string whose decoded bytes are
 * exactly the bytes of want (NUL-terminated, not NULL). No buffer, any
 * length. Any thread.
 */
bool auth_claims_str_eq(const auth_claim *v, const char *want);

/**
 * auth_claims_str_clean() is true when v is a string whose decoded bytes
 * contain no control character (< 0x20 or 0x7f). Any thread.
 */
bool auth_claims_str_clean(const auth_claim *v);

/**
 * auth_claims_iter_init() prepares *it to walk the elements of the array
 * value arr. If arr is not AUTH_CLAIM_ARRAY the walk is empty. Any thread.
 */
void auth_claims_iter_init(const auth_claim *arr, auth_claim_iter *it);

/**
 * auth_claims_next() writes the next element of the array into *elem
 * and returns true, or returns false at the end (elem untouched). The
 * array was validated by auth_claims_scan(), so this cannot fail. Any
 * thread.
 */
bool auth_claims_next(auth_claim_iter *it, auth_claim *elem);

#endif // AUTH_CLAIMS_H
