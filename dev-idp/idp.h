// SPDX-License-Identifier: MIT
//
// The dev IdP: a small Supabase Auth (GoTrue) compatible server for local
// development and for the end-to-end tests, so nobody needs a cloud
// account. It is a real HTTP server (libmicrohttpd) issuing real ES256
// JWTs (libcjose), with users, sessions and refresh tokens in sqlite3.
// FOR DEVELOPMENT ONLY: there is no e-mail confirmation, no rate limit and
// no admin API.
//
// Modules (one header for the whole program, as STYLE.md §9.10 asks):
//   password.c  PBKDF2-HMAC-SHA256 password hashes (OpenSSL)
//   jwt.c       signing key, JWT sign and verify (libcjose)
//   store.c     all SQL: users, sessions, refresh tokens, the signing key
//   routes.c    the /auth/v1 endpoints, independent of the HTTP library
//   http.c      the listening socket and libmicrohttpd glue
//   main.c      configuration (env + flags), signals, exit codes
//
// A request flows: http.c collects headers and body into an idp_request
// -> idp_handle() (routes.c) checks the apikey, dispatches, and fills an
// idp_response -> http.c sends it. Handlers run on libmicrohttpd's pool
// threads and may block briefly (sqlite, PBKDF2): this is a dev server.
#ifndef IDP_IDP_H
#define IDP_IDP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"
#include "common/util.h"

// ---------------------------------------------------------------------
// Limits (every input has one; each says why it has this value)
// ---------------------------------------------------------------------

// Largest request body accepted (413 above). Signup with 16 KiB of
// user_metadata plus email and password fits with room to spare.
#define IDP_BODY_MAX (64u * 1024u)
// Bytes of an over-limit body we read and throw away to be able to answer
// 413 on a chunked upload; past this the connection is simply closed.
#define IDP_BODY_DISCARD_MAX (1024u * 1024u)
// Longest e-mail address, in bytes (RFC 5321: 64 local + @ + 255 domain).
#define IDP_EMAIL_MAX 320
// Longest password, in bytes: GoTrue allows 72 characters (bcrypt's
// limit); 4 bytes per UTF-8 character.
#define IDP_PASSWORD_MAX (72 * 4)
// Shortest password, in bytes (GoTrue's default minimum length).
#define IDP_PASSWORD_MIN 6
// Largest user_metadata ("data" at signup), serialized, in bytes.
#define IDP_METADATA_MAX (16u * 1024u)
// Longest bearer token accepted, in bytes. user_metadata travels inside
// the token, so allow the metadata limit base64-expanded (4/3) plus room
// for the other claims, header and signature.
#define IDP_TOKEN_MAX (IDP_METADATA_MAX * 2)
// Longest refresh token accepted, in bytes (ours are 32 chars; GoTrue v2
// tokens are longer; anything far beyond is garbage).
#define IDP_REFRESH_TOKEN_MAX 256
// Length of a refresh token we issue (hex of 16 random bytes): above
// GoTrue's 12-character minimum, 128 bits of entropy.
#define IDP_REFRESH_TOKEN_LEN 32
// Longest apikey accepted, in bytes (keys are compared, never stored).
#define IDP_APIKEY_MAX 1024
// Longest issuer URL, in bytes.
#define IDP_ISSUER_MAX 512
// Longest kid, with the NUL (ours are UUIDs).
#define IDP_KID_MAX 64
// Longest error message we build, with the NUL.
#define IDP_MSG_MAX 512
// PBKDF2 iterations: OWASP 2023 asks >= 600k for SHA-256 in production;
// this is a dev server hashing on request threads, so the brief's floor
// of 100k keeps signups/logins at tens of milliseconds.
#define IDP_PBKDF2_ITER 100000
// Largest iteration count accepted when reading a stored hash (a corrupt
// row must not make one login spin for minutes).
#define IDP_PBKDF2_ITER_MAX 10000000
// Salt and derived-key lengths, in bytes.
#define IDP_PBKDF2_SALT_LEN 16
#define IDP_PBKDF2_KEY_LEN  32
// Buffer for a stored password hash string, with the NUL:
// "pbkdf2-sha256$<iter>$<32 hex>$<64 hex>".
#define IDP_PWHASH_MAX 160
// Default lifetime of an access token, in seconds (GoTrue's default).
#define IDP_JWT_EXP_DEFAULT 3600
// Longest lifetime of an access token, in seconds (one week), so a typo in
// DEV_IDP_JWT_EXP cannot mint tokens that live for years.
#define IDP_JWT_EXP_MAX (7 * 24 * 3600)

// Audience and role of every token (Supabase's defaults).
#define IDP_AUD  "authenticated"
#define IDP_ROLE "authenticated"

// ---------------------------------------------------------------------
// password.c
// ---------------------------------------------------------------------

/**
 * idp_password_hash() hashes pw (len bytes, need not be NUL-terminated)
 * with PBKDF2-HMAC-SHA256, a random 16-byte salt and iter iterations
 * (IDP_PBKDF2_ITER in production; tests may pass fewer), and writes
 * "pbkdf2-sha256$<iter>$<salt hex>$<key hex>" into out (IDP_PWHASH_MAX
 * bytes). Returns CM_OK; CM_EINVAL when len > IDP_PASSWORD_MAX or iter is
 * outside 1..IDP_PBKDF2_ITER_MAX; CM_EINTERNAL when OpenSSL fails. out is
 * written only on success. Thread-safe; takes tens of milliseconds.
 */
cm_err idp_password_hash(
    const char *pw, size_t len, int iter, char out[IDP_PWHASH_MAX]);

/**
 * idp_password_verify() checks pw (len bytes) against a string made by
 * idp_password_hash(), comparing in constant time. Returns CM_OK when it
 * matches, CM_EAUTH when it does not, CM_EINVAL when stored is malformed
 * or len > IDP_PASSWORD_MAX, CM_EINTERNAL when OpenSSL fails.
 * Thread-safe.
 */
cm_err idp_password_verify(const char *pw, size_t len, const char *stored);

// ---------------------------------------------------------------------
// jwt.c
// ---------------------------------------------------------------------

typedef struct idp_jwt_key idp_jwt_key;

/**
 * idp_jwt_key_generate() makes a new random P-256 key with a random UUID
 * kid. Returns CM_OK and a new key in *out, or CM_EINTERNAL.
 */
cm_err idp_jwt_key_generate(idp_jwt_key **out);

/**
 * idp_jwt_key_import() loads a private EC P-256 JWK (JSON text with d and
 * kid, as idp_jwt_key_private_json() writes). Returns CM_OK and a new key
 * in *out; CM_EINVAL when json is not such a key.
 */
cm_err idp_jwt_key_import(const char *json, idp_jwt_key **out);

/** idp_jwt_key_free() frees the key. NULL is allowed. */
void idp_jwt_key_free(idp_jwt_key *key);

/** idp_jwt_key_kid() returns the kid (borrowed from key). */
const char *idp_jwt_key_kid(const idp_jwt_key *key);

/**
 * idp_jwt_key_private_json() returns the private JWK as JSON text (a new
 * malloc'd string, free() it). It holds the secret d: only for storage.
 */
char *idp_jwt_key_private_json(const idp_jwt_key *key);

/**
 * idp_jwt_key_public_jwk() returns a new JSON object with the public part
 * only: {kty, crv, x, y, kid, alg:"ES256", use:"sig", key_ops:["verify"]}.
 */
json_t *idp_jwt_key_public_jwk(const idp_jwt_key *key);

/**
 * idp_jwt_sign() signs claims (borrowed) with header
 * {"alg":"ES256","kid":...,"typ":"JWT"}. Returns CM_OK and the compact
 * token (new malloc'd string) in *out, or CM_EINTERNAL. Thread-safe for
 * one key shared by many threads (the key is not modified).
 */
cm_err idp_jwt_sign(const idp_jwt_key *key, const json_t *claims, char **out);

/**
 * idp_jwt_verify() checks a compact token the way GoTrue (golang-jwt v5)
 * does: three segments, decodable header and claims, alg ES256 only, kid
 * equal to key's, a valid signature, exp (leeway 0) and nbf against now
 * (Unix seconds). Returns CM_OK and the claims (a new reference) in
 * *claims; CM_EAUTH with GoTrue's message text in msg (msg_len bytes) on
 * any failure; CM_ETOOBIG when len > IDP_TOKEN_MAX. Claims other than
 * exp/nbf (sub, session_id, aud) are the caller's to check.
 */
cm_err idp_jwt_verify(const idp_jwt_key *key, const char *token, size_t len,
    int64_t now, json_t **claims, char *msg, size_t msg_len);

// ---------------------------------------------------------------------
// store.c
// ---------------------------------------------------------------------

typedef struct idp_store idp_store;

/**
 * idp_user is one row of users. Strings inside are owned by the struct;
 * release them with idp_user_fini(). Times are Unix microseconds;
 * last_sign_in_at is 0 when the user never signed in.
 */
typedef struct idp_user {
	char    id[CM_UUID_LEN + 1];
	char    identity_id[CM_UUID_LEN + 1];
	char    email[IDP_EMAIL_MAX + 1]; // lower-case
	char    password_hash[IDP_PWHASH_MAX];
	char   *user_metadata; // JSON object text, new
	int64_t created_at;
	int64_t updated_at;
	int64_t last_sign_in_at;
} idp_user;

/** idp_user_fini() frees what u holds (not u itself). NULL allowed. */
void idp_user_fini(idp_user *u);

/**
 * idp_session is what a refresh or a token check needs to know about a
 * session. Times are Unix microseconds.
 */
typedef struct idp_session {
	char    id[CM_UUID_LEN + 1];
	char    user_id[CM_UUID_LEN + 1];
	int64_t created_at;
} idp_session;

/**
 * idp_store_open() opens (creating if needed) the sqlite database at path
 * (":memory:" for tests) in WAL mode with foreign keys on, and creates or
 * checks the schema (PRAGMA user_version). Returns CM_OK and *out;
 * CM_EUNAVAIL when the file cannot be opened or written; CM_EINVAL when
 * it holds a schema newer than this program. The store serializes its
 * users with an internal mutex: every function below is thread-safe.
 */
cm_err idp_store_open(const char *path, idp_store **out);

/** idp_store_close() closes the database. NULL allowed. */
void idp_store_close(idp_store *st);

/**
 * idp_store_key_get_or_put() returns the stored private signing JWK,
 * storing candidate_json under candidate_kid first when the database has
 * none yet (so two processes starting on a new file agree on one key).
 * Returns CM_OK and a new malloc'd JSON string in *out; CM_EINTERNAL on
 * a database error.
 */
cm_err idp_store_key_get_or_put(idp_store *st, const char *candidate_kid,
    const char *candidate_json, char **out);

/**
 * idp_store_signup() creates user u (id, identity_id, email lower-case,
 * password_hash, user_metadata, created_at used; updated_at and
 * last_sign_in_at set to created_at), a session sess for it and its first
 * refresh token (SHA-256 hex token_hash), in one transaction. Returns
 * CM_OK; CM_EEXIST when the e-mail is taken (any case); CM_EINTERNAL on a
 * database error.
 */
cm_err idp_store_signup(idp_store *st, const idp_user *u,
    const idp_session *sess, const char *token_hash);

/**
 * idp_store_user_by_email() / idp_store_user_by_id() load a user into *u
 * (which the caller then releases with idp_user_fini()). Returns CM_OK;
 * CM_ENOENT when there is no such user; CM_EINTERNAL on a database error.
 * *u is written only on success.
 */
cm_err idp_store_user_by_email(idp_store *st, const char *email, idp_user *u);
cm_err idp_store_user_by_id(idp_store *st, const char *id, idp_user *u);

/**
 * idp_store_user_delete() removes a user with its sessions and refresh
 * tokens (tests use it; the HTTP API has no admin routes). Returns CM_OK,
 * CM_ENOENT, or CM_EINTERNAL.
 */
cm_err idp_store_user_delete(idp_store *st, const char *id);

/**
 * idp_store_login() creates session sess (for sess->user_id) with its
 * first refresh token and sets the user's last_sign_in_at to
 * sess->created_at. Returns CM_OK; CM_ENOENT when the user vanished;
 * CM_EINTERNAL on a database error.
 */
cm_err idp_store_login(
    idp_store *st, const idp_session *sess, const char *token_hash);

/**
 * idp_store_session_get() loads session id into *out. Returns CM_OK;
 * CM_ENOENT when it does not exist (logged out); CM_EINTERNAL.
 */
cm_err idp_store_session_get(idp_store *st, const char *id, idp_session *out);

/**
 * idp_store_refresh() rotates a refresh token: old_hash must name an
 * unrevoked token of a live session; it is marked revoked and new_hash is
 * stored with parent old_hash, and the user's last_sign_in_at becomes now
 * (Unix microseconds). Returns CM_OK and the session in *sess; CM_ENOENT
 * when old_hash is unknown; CM_ECONFLICT when it was already used, in
 * which case the whole session is revoked (reuse means it may be stolen,
 * as GoTrue does outside its reuse interval); CM_EINTERNAL.
 */
cm_err idp_store_refresh(idp_store *st, const char *old_hash,
    const char *new_hash, int64_t now, idp_session *sess);

/** Which sessions idp_store_logout() ends. */
typedef enum idp_logout_scope {
	IDP_LOGOUT_GLOBAL = 0, // every session of the user
	IDP_LOGOUT_LOCAL,      // this session only
	IDP_LOGOUT_OTHERS,     // every session but this one
} idp_logout_scope;

/**
 * idp_store_logout() deletes sessions of user_id (with their refresh
 * tokens) according to scope, relative to session_id. Returns CM_OK (also
 * when nothing was left to delete) or CM_EINTERNAL.
 */
cm_err idp_store_logout(idp_store *st, const char *user_id,
    const char *session_id, idp_logout_scope scope);

// ---------------------------------------------------------------------
// routes.c
// ---------------------------------------------------------------------

/**
 * idp_config is the whole configuration, filled by main.c from the
 * environment and flags. Strings are borrowed (from argv/environ) and
 * must outlive the server.
 */
typedef struct idp_config {
	const char *host;         // DEV_IDP_HOST
	int         port;         // DEV_IDP_PORT (0 = any free port)
	const char *port_file;    // DEV_IDP_PORT_FILE, NULL = none
	const char *db_path;      // DEV_IDP_DB
	const char *anon_key;     // DEV_IDP_ANON_KEY
	const char *service_key;  // DEV_IDP_SERVICE_KEY
	int64_t     jwt_exp;      // DEV_IDP_JWT_EXP, seconds
	int         allow_remote; // DEV_IDP_ALLOW_REMOTE
	const char *issuer;       // DEV_IDP_ISSUER, NULL = derived
	int         pbkdf2_iter;  // IDP_PBKDF2_ITER (tests may lower it)
} idp_config;

/**
 * idp_stats are the counters behind GET /auth/v1/_dev/stats: how many
 * requests reached each endpoint (whatever their outcome), so tests can
 * count IdP calls (e.g. the auth-service single-flight test).
 */
typedef struct idp_stats {
	atomic_llong user_requests;   // GET /user
	atomic_llong token_requests;  // POST /token (any grant)
	atomic_llong signup_requests; // POST /signup
} idp_stats;

/**
 * idp_ctx is the state shared by every request: configuration, store,
 * signing key, issuer, counters. Read-only after idp_ctx_open() except
 * the atomic counters and the store (which locks itself).
 */
typedef struct idp_ctx {
	idp_config   cfg;
	idp_store   *store;
	idp_jwt_key *key;
	char         issuer[IDP_ISSUER_MAX];
	// A hash of a random password: verified on unknown e-mails so that a
	// login takes as long whether or not the address exists.
	char      dummy_hash[IDP_PWHASH_MAX];
	idp_stats stats;
} idp_ctx;

/**
 * idp_ctx_open() opens the store at cfg->db_path, loads the signing key
 * (generating and persisting it on first start) and sets the issuer to
 * cfg->issuer, or "" until idp_ctx_set_issuer(). cfg is copied; a
 * pbkdf2_iter <= 0 becomes IDP_PBKDF2_ITER and a jwt_exp outside
 * 1..IDP_JWT_EXP_MAX becomes IDP_JWT_EXP_DEFAULT. Returns CM_OK and a new
 * context in *out; CM_EUNAVAIL when the database cannot be opened;
 * CM_EINVAL for a newer schema or a corrupt stored key; CM_EINTERNAL.
 */
cm_err idp_ctx_open(const idp_config *cfg, idp_ctx **out);

/**
 * idp_ctx_set_issuer() sets the issuer derived from the bound address
 * ("http://<host>:<port>/auth/v1") unless cfg.issuer was given. Call
 * before serving. Returns CM_OK or CM_EINVAL when it would not fit.
 */
cm_err idp_ctx_set_issuer(idp_ctx *ctx, const char *host, int port);

/** idp_ctx_close() frees the context. NULL allowed. */
void idp_ctx_close(idp_ctx *ctx);

/**
 * idp_request is one HTTP request as the routes see it. Every pointer is
 * borrowed and may be NULL when the item is absent.
 */
typedef struct idp_request {
	const char *method;        // "GET", "POST", ...
	const char *path;          // URL path without the query string
	const char *apikey_header; // header "apikey"
	const char *apikey_query;  // query parameter "apikey"
	const char *authorization; // header "Authorization"
	const char *api_version;   // header "X-Supabase-Api-Version"
	const char *grant_type;    // query parameter "grant_type"
	const char *scope;         // query parameter "scope"
	const char *body;          // request body (not NUL-terminated)
	size_t      body_len;
	const char *rid; // request id for logs
} idp_request;

/**
 * idp_response is what the routes answer. body is new (free() it) or
 * NULL for an empty body; the other strings are static or point into the
 * response itself.
 */
typedef struct idp_response {
	int         status;
	char       *body;
	const char *content_type;     // NULL = none (empty body)
	const char *error_code;       // -> x-sb-error-code, NULL = none
	const char *cache_control;    // NULL = none
	const char *allow;            // -> Allow on 405, NULL = none
	int         echo_api_version; // echo X-Supabase-Api-Version
	char        user_id[CM_UUID_LEN + 1];    // -> sb-auth-user-id
	char        session_id[CM_UUID_LEN + 1]; // -> sb-auth-session-id
} idp_response;

/** idp_response_fini() frees the body. NULL allowed. */
void idp_response_fini(idp_response *res);

/**
 * idp_handle() answers one request: the apikey gate, routing, the
 * endpoint. It always fills *res (errors become error responses in the
 * Supabase format), never fails, and is thread-safe.
 */
void idp_handle(idp_ctx *ctx, const idp_request *req, idp_response *res);

/**
 * idp_error() fills *res with an error in GoTrue's format:
 * {"code":<status>,"error_code":"...","msg":"..."}, or, when new_format
 * (the request sent X-Supabase-Api-Version: 2024-01-01),
 * {"code":"<error_code>","message":"..."}; sets error_code for the
 * x-sb-error-code header. msg is copied. Exposed for tests.
 */
void idp_error(idp_response *res, int new_format, int status,
    const char *error_code, const char *msg);

// ---------------------------------------------------------------------
// http.c
// ---------------------------------------------------------------------

// Threads in libmicrohttpd's pool. Requests block a thread for a sqlite
// statement or a PBKDF2 hash (tens of ms); four keeps a login from
// stalling token checks on a 2-core machine.
#define IDP_HTTP_THREADS 4
// Seconds a connection may sit idle before it is closed.
#define IDP_HTTP_IDLE_TIMEOUT_S 30
// Most connections at once, and per client address.
#define IDP_HTTP_MAX_CONNECTIONS    512
#define IDP_HTTP_PER_IP_CONNECTIONS 256
// Memory per connection (headers live here, so this caps header size:
// larger requests get 431). Bearer tokens are a few KiB.
#define IDP_HTTP_CONN_MEMORY (64u * 1024u)

/**
 * idp_listen() makes a listening TCP socket on host:port (numeric IPv4 or
 * IPv6 address, or "localhost"; port 0 = any free port). A non-loopback
 * address is refused unless allow_remote. Returns CM_OK with the socket
 * in *fd and the bound port in *bound_port; CM_EPERM for a non-loopback
 * address without allow_remote; CM_EINVAL for a host that does not parse;
 * CM_EUNAVAIL when bind/listen fails (errno is preserved for the caller's
 * message). Outputs are written only on success.
 */
cm_err idp_listen(
    const char *host, int port, int allow_remote, int *fd, int *bound_port);

typedef struct idp_http idp_http;

/**
 * idp_http_start() serves ctx on the listening socket fd (stolen: closed
 * by idp_http_stop(), or here on failure) with libmicrohttpd's epoll
 * thread pool and the IDP_HTTP_* limits. Returns CM_OK and *out, or
 * CM_EINTERNAL.
 */
cm_err idp_http_start(idp_ctx *ctx, int fd, idp_http **out);

/** idp_http_stop() stops serving and frees the server. NULL allowed. */
void idp_http_stop(idp_http *srv);

#endif // IDP_IDP_H
