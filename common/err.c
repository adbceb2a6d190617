// SPDX-License-Identifier: MIT
//
// The project-wide error enum: names, and conversion from nng's codes.
#include <nng/nng.h>

#include "common/err.h"
#include "proto/rpc.pb-c.h"

// cm_err travels in rpc Responses as threadgate.rpc.v1.Status unchanged.
_Static_assert(
    (int) CM_OK == (int) THREADGATE__RPC__V1__STATUS__STATUS_OK, "status");
_Static_assert((int) CM_EINVAL ==
        (int) THREADGATE__RPC__V1__STATUS__STATUS_INVALID_ARGUMENT,
    "status");
_Static_assert(
    (int) CM_ENOENT == (int) THREADGATE__RPC__V1__STATUS__STATUS_NOT_FOUND,
    "status");
_Static_assert((int) CM_EEXIST ==
        (int) THREADGATE__RPC__V1__STATUS__STATUS_ALREADY_EXISTS,
    "status");
_Static_assert((int) CM_EPERM ==
        (int) THREADGATE__RPC__V1__STATUS__STATUS_PERMISSION_DENIED,
    "status");
_Static_assert((int) CM_EAUTH ==
        (int) THREADGATE__RPC__V1__STATUS__STATUS_UNAUTHENTICATED,
    "status");
_Static_assert((int) CM_ETIMEDOUT ==
        (int) THREADGATE__RPC__V1__STATUS__STATUS_DEADLINE_EXCEEDED,
    "status");
_Static_assert(
    (int) CM_EUNAVAIL == (int) THREADGATE__RPC__V1__STATUS__STATUS_UNAVAILABLE,
    "status");
_Static_assert(
    (int) CM_ETOOBIG == (int) THREADGATE__RPC__V1__STATUS__STATUS_TOO_LARGE,
    "status");
_Static_assert(
    (int) CM_EINTERNAL == (int) THREADGATE__RPC__V1__STATUS__STATUS_INTERNAL,
    "status");
_Static_assert((int) CM_ENOTSUP ==
        (int) THREADGATE__RPC__V1__STATUS__STATUS_UNIMPLEMENTED,
    "status");
_Static_assert(
    (int) CM_ECONFLICT == (int) THREADGATE__RPC__V1__STATUS__STATUS_CONFLICT,
    "status");

static const char *const names[CM_ERR_COUNT] = {
	[CM_OK]        = "ok",
	[CM_EINVAL]    = "invalid argument",
	[CM_ENOENT]    = "not found",
	[CM_EEXIST]    = "already exists",
	[CM_EPERM]     = "permission denied",
	[CM_EAUTH]     = "unauthenticated",
	[CM_ETIMEDOUT] = "deadline exceeded",
	[CM_EUNAVAIL]  = "service unavailable",
	[CM_ETOOBIG]   = "too large",
	[CM_EINTERNAL] = "internal error",
	[CM_ENOTSUP]   = "not implemented",
	[CM_ECONFLICT] = "conflict",
};

const char *
cm_strerror(cm_err err)
{
	if (!cm_err_valid((int) err)) {
		return ("unknown error");
	}
	return (names[err]);
}

// Label values for metrics: the Status names of rpc.proto, lower case,
// without the prefix.
static const char *const label_names[CM_ERR_COUNT] = {
	[CM_OK]        = "ok",
	[CM_EINVAL]    = "invalid_argument",
	[CM_ENOENT]    = "not_found",
	[CM_EEXIST]    = "already_exists",
	[CM_EPERM]     = "permission_denied",
	[CM_EAUTH]     = "unauthenticated",
	[CM_ETIMEDOUT] = "deadline_exceeded",
	[CM_EUNAVAIL]  = "unavailable",
	[CM_ETOOBIG]   = "too_large",
	[CM_EINTERNAL] = "internal",
	[CM_ENOTSUP]   = "unimplemented",
	[CM_ECONFLICT] = "conflict",
};

const char *
cm_err_label(cm_err err)
{
	if (!cm_err_valid((int) err)) {
		return ("unknown");
	}
	return (label_names[err]);
}

int
cm_err_valid(int v)
{
	return (v >= 0 && v < CM_ERR_COUNT);
}

cm_err
cm_err_from_nng(int nng_rv)
{
	switch (nng_rv) {
	case 0:
		return (CM_OK);
	case NNG_ETIMEDOUT:
		return (CM_ETIMEDOUT);
	case NNG_ENOMEM:
		return (CM_EINTERNAL);
	case NNG_EMSGSIZE:
		return (CM_ETOOBIG);
	case NNG_EINVAL:
	case NNG_EADDRINVAL:
		return (CM_EINVAL);
	default:
		return (CM_EUNAVAIL);
	}
}
