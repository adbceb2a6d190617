// SPDX-License-Identifier: MIT
//
// HTTP helpers for the C cross-service tests: one blocking request
// (tg_http()), dev-IdP sign-up (tg_signup()), and a load runner
// (tg_load_run()) that keeps N keep-alive connections busy with requests a
// callback chooses, reporting each answer's status, body and latency. All
// on libcurl; the load runner is one thread driving a curl multi handle.
#ifndef TG_HARNESS_HTTP_H
#define TG_HARNESS_HTTP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

// Largest response body kept (tests read small JSON answers).
#define TG_HTTP_BODY_MAX (1024 * 1024)
// Longest request path and body a load callback may set.
#define TG_LOAD_PATH_MAX 256
#define TG_LOAD_BODY_MAX 1024
// Most connections of one load run.
#define TG_LOAD_CONNS_MAX 256

/** tg_resp is one answer: status (-1 when no answer) and body (new). */
typedef struct tg_resp {
	long   status;
	char  *body; // NUL-terminated; NULL when empty
	size_t len;
} tg_resp;

/** tg_resp_free() frees r's body and clears it. */
void tg_resp_free(tg_resp *r);

/**
 * tg_http() performs one request: base ("http://10.0.0.2:2024") + path,
 * with "Authorization: Bearer token" when token is not NULL, body (JSON)
 * when not NULL. timeout_ms bounds it. Fills *r (free with
 * tg_resp_free()).
 */
void tg_http(const char *base, const char *method, const char *path,
    const char *token, const char *body, long timeout_ms, tg_resp *r);

/**
 * tg_signup() signs a new user up at the dev IdP at idp_base; returns 0
 * and new strings in *token and *uid, or -1.
 */
int tg_signup(
    const char *idp_base, const char *email, char **token, char **uid);

/**
 * tg_json_str() returns a new copy of the string member key of the JSON
 * object text body, or NULL.
 */
char *tg_json_str(const char *body, const char *key);

/** One request of a load run, filled by the next callback. */
typedef struct tg_load_req {
	const char *method; // static string
	char        path[TG_LOAD_PATH_MAX];
	char        body[TG_LOAD_BODY_MAX]; // "" = no body
	const char *token;                  // borrowed; NULL = none
	int         kind;                   // the caller's tag
	int64_t     seq;                    // the caller's tag
	int         slot;                   // the caller's tag
} tg_load_req;

/**
 * tg_load_next_fn fills *req with connection conn's next request; returns
 * 0, or -1 to let that connection stop.
 */
typedef int (*tg_load_next_fn)(void *arg, int conn, tg_load_req *req);

/**
 * tg_load_done_fn gets each answer: status (-1 when the connection failed
 * or timed out), the body (NUL-terminated, borrowed) and the latency.
 */
typedef void (*tg_load_done_fn)(void *arg, int conn, const tg_load_req *req,
    long status, const char *body, size_t len, int64_t us);

/**
 * tg_load_run() runs conns (1..TG_LOAD_CONNS_MAX) connections against base
 * until *stop becomes non-zero (checked between requests) or every
 * connection stopped; each request has timeout_ms. Runs on the calling
 * thread; returns the number of requests answered (any status).
 */
int64_t tg_load_run(const char *base, int conns, long timeout_ms,
    atomic_int *stop, tg_load_next_fn next, tg_load_done_fn done, void *arg);

#endif // TG_HARNESS_HTTP_H
