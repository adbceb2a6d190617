// SPDX-License-Identifier: MIT
//
// The project-wide error enum. Every function that can fail returns a
// cm_err; 0 (CM_OK) is success. Library errors (NNG_E*, SQLITE_*, CURLE_*,
// jansson's json_error_t) are converted once, where they enter our code.
// The values equal threadgate.rpc.v1.Status (proto/rpc.proto), so a cm_err
// travels in an rpc Response unchanged. The gateway maps cm_err to an HTTP
// status in one function (gw_http_status_for).
#ifndef CM_ERR_H
#define CM_ERR_H

typedef enum cm_err {
	CM_OK        = 0,  // success
	CM_EINVAL    = 1,  // malformed input or out-of-range field (422)
	CM_ENOENT    = 2,  // not found, or not this owner's (404)
	CM_EEXIST    = 3,  // id already taken (409)
	CM_EPERM     = 4,  // not allowed, e.g. a request without owner (403)
	CM_EAUTH     = 5,  // missing or invalid credentials (401)
	CM_ETIMEDOUT = 6,  // deadline passed (504; 503 at the auth step)
	CM_EUNAVAIL  = 7,  // dependency down or overloaded (503)
	CM_ETOOBIG   = 8,  // input over a named limit (413)
	CM_EINTERNAL = 9,  // bug or unexpected failure (500)
	CM_ENOTSUP   = 10, // unknown method (501)
	CM_ECONFLICT = 11, // conflicts with current state (409)
} cm_err;

// Number of cm_err values (for tables indexed by cm_err).
#define CM_ERR_COUNT 12

/**
 * cm_strerror() returns a static, lower-case description of err
 * ("not found"). Unknown values give "unknown error". Thread-safe.
 */
const char *cm_strerror(cm_err err);

/**
 * cm_err_label() returns a static identifier for err, the Status name of
 * rpc.proto in lower case without its prefix ("ok", "not_found",
 * "deadline_exceeded"...), for metric labels and log fields; "unknown"
 * for values outside the enum. Thread-safe.
 */
const char *cm_err_label(cm_err err);

/**
 * cm_err_from_nng() converts an NNG_E* code: 0 -> CM_OK, NNG_ETIMEDOUT ->
 * CM_ETIMEDOUT, NNG_ENOMEM -> CM_EINTERNAL, NNG_EMSGSIZE -> CM_ETOOBIG,
 * anything else (refused, closed, reset...) -> CM_EUNAVAIL.
 */
cm_err cm_err_from_nng(int nng_rv);

/**
 * cm_err_valid() is 1 when v is a defined cm_err value, else 0. Use it on
 * numbers received from the wire before trusting them.
 */
int cm_err_valid(int v);

#endif // CM_ERR_H
