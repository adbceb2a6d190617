// SPDX-License-Identifier: MIT
//
// All SQL of the dev IdP: users, sessions, refresh tokens and the signing
// key, in one sqlite3 file (WAL mode, foreign keys on). One connection
// with prepared statements, serialized by a mutex: the dev IdP's load is
// a handful of requests per test, and a single connection keeps every
// multi-statement change (signup, refresh rotation) in one transaction
// without cross-connection busy handling. Refresh tokens are stored only
// as SHA-256 hashes; passwords only as PBKDF2 hashes (password.c).
//
// Schema changes: bump SCHEMA_VERSION, add a migration step in
// schema_init(), never edit the CREATE statements of an older version.
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <sqlite3.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "dev-idp/idp.h"

// PRAGMA user_version of the schema this file writes.
#define SCHEMA_VERSION 1
// Milliseconds a statement waits for another process's write lock (two
// dev IdPs on one file, or the sqlite3 CLI peeking) before failing.
#define BUSY_TIMEOUT_MS 5000

static const char *schema_v1 =
    "CREATE TABLE IF NOT EXISTS users("
    " id TEXT PRIMARY KEY,"
    " identity_id TEXT NOT NULL,"
    " email TEXT NOT NULL UNIQUE COLLATE NOCASE,"
    " password_hash TEXT NOT NULL,"
    " user_metadata TEXT NOT NULL DEFAULT '{}',"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " last_sign_in_at INTEGER);"
    "CREATE TABLE IF NOT EXISTS sessions("
    " id TEXT PRIMARY KEY,"
    " user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " created_at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id);"
    "CREATE TABLE IF NOT EXISTS refresh_tokens("
    " hash TEXT PRIMARY KEY,"
    " session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
    " revoked INTEGER NOT NULL DEFAULT 0,"
    " parent TEXT,"
    " created_at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS refresh_tokens_session"
    " ON refresh_tokens(session_id);"
    "CREATE TABLE IF NOT EXISTS signing_keys("
    " kid TEXT PRIMARY KEY,"
    " jwk TEXT NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "PRAGMA user_version = 1;";

enum {
	S_KEY_GET,
	S_KEY_PUT,
	S_USER_INSERT,
	S_USER_BY_EMAIL,
	S_USER_BY_ID,
	S_USER_DELETE,
	S_USER_SIGNIN,
	S_SESSION_INSERT,
	S_SESSION_GET,
	S_SESSION_DELETE,
	S_SESSION_DELETE_ALL,
	S_SESSION_DELETE_OTHERS,
	S_RT_INSERT,
	S_RT_GET,
	S_RT_REVOKE,
	S_COUNT,
};

#define USER_COLS                                                            \
	"id, identity_id, email, password_hash, user_metadata, created_at, " \
	"updated_at, last_sign_in_at"

static const char *sql_text[S_COUNT] = {
	[S_KEY_GET] = "SELECT jwk FROM signing_keys ORDER BY created_at, kid "
	              "LIMIT 1",
	[S_KEY_PUT] = "INSERT INTO signing_keys(kid, jwk, created_at) "
	              "SELECT ?1, ?2, ?3 WHERE NOT EXISTS "
	              "(SELECT 1 FROM signing_keys)",
	[S_USER_INSERT]   = "INSERT INTO users(" USER_COLS ") "
	                    "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6)",
	[S_USER_BY_EMAIL] = "SELECT " USER_COLS " FROM users WHERE email = ?1",
	[S_USER_BY_ID]    = "SELECT " USER_COLS " FROM users WHERE id = ?1",
	[S_USER_DELETE]   = "DELETE FROM users WHERE id = ?1",
	[S_USER_SIGNIN]   = "UPDATE users SET last_sign_in_at = ?2, "
	                    "updated_at = ?2 WHERE id = ?1",
	[S_SESSION_INSERT] = "INSERT INTO sessions(id, user_id, created_at) "
	                     "VALUES(?1, ?2, ?3)",
	[S_SESSION_GET]    = "SELECT user_id, created_at FROM sessions "
	                     "WHERE id = ?1",
	[S_SESSION_DELETE] = "DELETE FROM sessions WHERE id = ?1",
	[S_SESSION_DELETE_ALL]    = "DELETE FROM sessions WHERE user_id = ?1",
	[S_SESSION_DELETE_OTHERS] = "DELETE FROM sessions WHERE user_id = ?1 "
	                            "AND id <> ?2",
	[S_RT_INSERT] =
	    "INSERT INTO refresh_tokens(hash, session_id, revoked, "
	    "parent, created_at) VALUES(?1, ?2, 0, ?3, ?4)",
	[S_RT_GET] = "SELECT session_id, revoked FROM refresh_tokens "
	             "WHERE hash = ?1",
	[S_RT_REVOKE] =
	    "UPDATE refresh_tokens SET revoked = 1 WHERE hash = ?1",
};

struct idp_store {
	sqlite3        *db;
	sqlite3_stmt   *st[S_COUNT];
	pthread_mutex_t mtx;
};

void
idp_user_fini(idp_user *u)
{
	if (u == NULL) {
		return;
	}
	free(u->user_metadata);
	u->user_metadata = NULL;
}

// ---------------------------------------------------------------------
// Helpers (call with the mutex held)
// ---------------------------------------------------------------------

static cm_err
sql_fail(idp_store *st, const char *what)
{
	cm_error(NULL, "dev-idp store: %s: %s", what, sqlite3_errmsg(st->db));
	return (CM_EINTERNAL);
}

// stmt() returns the prepared statement, reset and unbound.
static sqlite3_stmt *
stmt(idp_store *st, int which)
{
	sqlite3_stmt *s = st->st[which];

	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return (s);
}

static void
bind_text(sqlite3_stmt *s, int i, const char *v)
{
	if (v == NULL) {
		sqlite3_bind_null(s, i);
	} else {
		sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
	}
}

// step_done() runs a statement that returns no rows.
static cm_err
step_done(idp_store *st, sqlite3_stmt *s, const char *what)
{
	int rc = sqlite3_step(s);

	sqlite3_reset(s);
	if (rc != SQLITE_DONE) {
		return (sql_fail(st, what));
	}
	return (CM_OK);
}

static cm_err
exec(idp_store *st, const char *sql)
{
	if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		return (sql_fail(st, sql));
	}
	return (CM_OK);
}

static void
rollback(idp_store *st)
{
	// Harmless when no transaction is open.
	(void) sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

static void
copy_col(sqlite3_stmt *s, int col, char *dst, size_t dstlen)
{
	const unsigned char *v = sqlite3_column_text(s, col);

	snprintf(dst, dstlen, "%s", v == NULL ? "" : (const char *) v);
}

// load_user() runs a user SELECT (already bound).
static cm_err
load_user(idp_store *st, sqlite3_stmt *s, idp_user *out)
{
	const unsigned char *meta;
	idp_user             u;
	int                  rc;

	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		sqlite3_reset(s);
		return (CM_ENOENT);
	}
	if (rc != SQLITE_ROW) {
		sqlite3_reset(s);
		return (sql_fail(st, "load user"));
	}
	memset(&u, 0, sizeof(u));
	copy_col(s, 0, u.id, sizeof(u.id));
	copy_col(s, 1, u.identity_id, sizeof(u.identity_id));
	copy_col(s, 2, u.email, sizeof(u.email));
	copy_col(s, 3, u.password_hash, sizeof(u.password_hash));
	meta = sqlite3_column_text(s, 4);
	u.user_metadata =
	    cm_xstrdup(meta == NULL ? "{}" : (const char *) meta);
	u.created_at      = sqlite3_column_int64(s, 5);
	u.updated_at      = sqlite3_column_int64(s, 6);
	u.last_sign_in_at = sqlite3_column_int64(s, 7);
	sqlite3_reset(s);
	*out = u;
	return (CM_OK);
}

static cm_err
insert_session(idp_store *st, const idp_session *sess, const char *hash)
{
	sqlite3_stmt *s;
	cm_err        rv;

	s = stmt(st, S_SESSION_INSERT);
	bind_text(s, 1, sess->id);
	bind_text(s, 2, sess->user_id);
	sqlite3_bind_int64(s, 3, sess->created_at);
	rv = step_done(st, s, "insert session");
	if (rv != CM_OK) {
		return (rv);
	}
	s = stmt(st, S_RT_INSERT);
	bind_text(s, 1, hash);
	bind_text(s, 2, sess->id);
	bind_text(s, 3, NULL);
	sqlite3_bind_int64(s, 4, sess->created_at);
	return (step_done(st, s, "insert refresh token"));
}

static cm_err
session_get(idp_store *st, const char *id, idp_session *out)
{
	sqlite3_stmt *s;
	idp_session   sess;
	int           rc;

	s = stmt(st, S_SESSION_GET);
	bind_text(s, 1, id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		sqlite3_reset(s);
		return (CM_ENOENT);
	}
	if (rc != SQLITE_ROW) {
		sqlite3_reset(s);
		return (sql_fail(st, "get session"));
	}
	memset(&sess, 0, sizeof(sess));
	snprintf(sess.id, sizeof(sess.id), "%s", id);
	copy_col(s, 0, sess.user_id, sizeof(sess.user_id));
	sess.created_at = sqlite3_column_int64(s, 1);
	sqlite3_reset(s);
	*out = sess;
	return (CM_OK);
}

static cm_err
user_signin(idp_store *st, const char *user_id, int64_t now, int *changed)
{
	sqlite3_stmt *s;
	cm_err        rv;

	s = stmt(st, S_USER_SIGNIN);
	bind_text(s, 1, user_id);
	sqlite3_bind_int64(s, 2, now);
	rv = step_done(st, s, "update sign-in time");
	if (rv == CM_OK) {
		*changed = sqlite3_changes(st->db);
	}
	return (rv);
}

// ---------------------------------------------------------------------
// Open / close
// ---------------------------------------------------------------------

static cm_err
schema_init(idp_store *st)
{
	sqlite3_stmt *s = NULL;
	int           version;
	cm_err        rv;

	if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) !=
	        SQLITE_OK ||
	    sqlite3_step(s) != SQLITE_ROW) {
		rv = sql_fail(st, "read user_version");
		goto out;
	}
	version = sqlite3_column_int(s, 0);
	if (version > SCHEMA_VERSION) {
		cm_error(NULL,
		    "dev-idp store: database schema version %d is "
		    "newer than this program's (%d)",
		    version, SCHEMA_VERSION);
		rv = CM_EINVAL;
		goto out;
	}
	if (version == 0) {
		rv = exec(st, "BEGIN IMMEDIATE");
		if (rv != CM_OK) {
			goto out;
		}
		rv = exec(st, schema_v1);
		if (rv != CM_OK) {
			rollback(st);
			goto out;
		}
		rv = exec(st, "COMMIT");
		if (rv != CM_OK) {
			rollback(st);
			goto out;
		}
	}
	rv = CM_OK;
out:
	sqlite3_finalize(s);
	return (rv);
}

cm_err
idp_store_open(const char *path, idp_store **out)
{
	idp_store *st = NULL;
	cm_err     rv;
	int        i;

	st = cm_xcalloc(1, sizeof(*st));
	pthread_mutex_init(&st->mtx, NULL);
	if (sqlite3_open_v2(path, &st->db,
	        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	            SQLITE_OPEN_FULLMUTEX,
	        NULL) != SQLITE_OK) {
		cm_error(NULL, "dev-idp store: cannot open %s: %s", path,
		    st->db != NULL ? sqlite3_errmsg(st->db) : "out of memory");
		rv = CM_EUNAVAIL;
		goto out;
	}
	sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS);
	// The first statement that touches the file tells whether we can
	// really use it (a directory, a non-database file, no permission).
	if (sqlite3_exec(st->db, "PRAGMA journal_mode=WAL", NULL, NULL,
	        NULL) != SQLITE_OK) {
		cm_error(NULL, "dev-idp store: cannot use %s: %s", path,
		    sqlite3_errmsg(st->db));
		rv = CM_EUNAVAIL;
		goto out;
	}
	rv = exec(st, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON");
	if (rv != CM_OK) {
		goto out;
	}
	rv = schema_init(st);
	if (rv != CM_OK) {
		goto out;
	}
	for (i = 0; i < S_COUNT; i++) {
		if (sqlite3_prepare_v3(st->db, sql_text[i], -1,
		        SQLITE_PREPARE_PERSISTENT, &st->st[i],
		        NULL) != SQLITE_OK) {
			rv = sql_fail(st, sql_text[i]);
			goto out;
		}
	}
	*out = st;
	st   = NULL;
	rv   = CM_OK;
out:
	idp_store_close(st);
	return (rv);
}

void
idp_store_close(idp_store *st)
{
	int i;

	if (st == NULL) {
		return;
	}
	for (i = 0; i < S_COUNT; i++) {
		sqlite3_finalize(st->st[i]);
	}
	sqlite3_close(st->db);
	pthread_mutex_destroy(&st->mtx);
	free(st);
}

// ---------------------------------------------------------------------
// Public operations
// ---------------------------------------------------------------------

cm_err
idp_store_key_get_or_put(idp_store *st, const char *candidate_kid,
    const char *candidate_json, char **out)
{
	sqlite3_stmt *s;
	cm_err        rv;
	int           rc;

	pthread_mutex_lock(&st->mtx);
	s = stmt(st, S_KEY_PUT);
	bind_text(s, 1, candidate_kid);
	bind_text(s, 2, candidate_json);
	sqlite3_bind_int64(s, 3, cm_now_us());
	rv = step_done(st, s, "store signing key");
	if (rv != CM_OK) {
		goto out;
	}
	s  = stmt(st, S_KEY_GET);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(s);
		rv = sql_fail(st, "load signing key");
		goto out;
	}
	*out = cm_xstrdup((const char *) sqlite3_column_text(s, 0));
	sqlite3_reset(s);
	rv = CM_OK;
out:
	pthread_mutex_unlock(&st->mtx);
	return (rv);
}

cm_err
idp_store_signup(idp_store *st, const idp_user *u, const idp_session *sess,
    const char *token_hash)
{
	sqlite3_stmt *s;
	cm_err        rv;
	int           rc;

	pthread_mutex_lock(&st->mtx);
	rv = exec(st, "BEGIN IMMEDIATE");
	if (rv != CM_OK) {
		goto out;
	}
	s = stmt(st, S_USER_INSERT);
	bind_text(s, 1, u->id);
	bind_text(s, 2, u->identity_id);
	bind_text(s, 3, u->email);
	bind_text(s, 4, u->password_hash);
	bind_text(s, 5, u->user_metadata);
	sqlite3_bind_int64(s, 6, u->created_at);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc != SQLITE_DONE) {
		if (sqlite3_extended_errcode(st->db) ==
		    SQLITE_CONSTRAINT_UNIQUE) {
			rv = CM_EEXIST;
		} else {
			rv = sql_fail(st, "insert user");
		}
		rollback(st);
		goto out;
	}
	rv = insert_session(st, sess, token_hash);
	if (rv != CM_OK) {
		rollback(st);
		goto out;
	}
	rv = exec(st, "COMMIT");
	if (rv != CM_OK) {
		rollback(st);
		goto out;
	}
out:
	pthread_mutex_unlock(&st->mtx);
	return (rv);
}

cm_err
idp_store_user_by_email(idp_store *st, const char *email, idp_user *u)
{
	sqlite3_stmt *s;
	cm_err        rv;

	pthread_mutex_lock(&st->mtx);
	s = stmt(st, S_USER_BY_EMAIL);
	bind_text(s, 1, email);
	rv = load_user(st, s, u);
	pthread_mutex_unlock(&st->mtx);
	return (rv);
}

cm_err
idp_store_user_by_id(idp_store *st, const char *id, idp_user *u)
{
	sqlite3_stmt *s;
	cm_err        rv;

	pthread_mutex_lock(&st->mtx);
	s = stmt(st, S_USER_BY_ID);
	bind_text(s, 1, id);
	rv = load_user(st, s, u);
	pthread_mutex_unlock(&st->mtx);
	return (rv);
}

cm_err
idp_store_user_delete(idp_store *st, const char *id)
{
	sqlite3_stmt *s;
	cm_err        rv;

	pthread_mutex_lock(&st->mtx);
	s = stmt(st, S_USER_DELETE);
	bind_text(s, 1, id);
	rv = step_done(st, s, "delete user");
	if (rv == CM_OK && sqlite3_changes(st->db) == 0) {
		rv = CM_ENOENT;
	}
	pthread_mutex_unlock(&st->mtx);
	return (rv);
}

cm_err
idp_store_login(idp_store *st, const idp_session *sess, const char *token_hash)
{
	cm_err rv;
	int    changed = 0;

	pthread_mutex_lock(&st->mtx);
	rv = exec(st, "BEGIN IMMEDIATE");
	if (rv != CM_OK) {
		goto out;
	}
	rv = user_signin(st, sess->user_id, sess->created_at, &changed);
	if (rv == CM_OK && changed == 0) {
		rv = CM_ENOENT;
	}
	if (rv == CM_OK) {
		rv = insert_session(st, sess, token_hash);
	}
	if (rv == CM_OK) {
		rv = exec(st, "COMMIT");
	}
	if (rv != CM_OK) {
		rollback(st);
	}
out:
	pthread_mutex_unlock(&st->mtx);
	return (rv);
}

cm_err
idp_store_session_get(idp_store *st, const char *id, idp_session *out)
{
	cm_err rv;

	pthread_mutex_lock(&st->mtx);
	rv = session_get(st, id, out);
	pthread_mutex_unlock(&st->mtx);
	return (rv);
}

cm_err
idp_store_refresh(idp_store *st, const char *old_hash, const char *new_hash,
    int64_t now, idp_session *sess)
{
	sqlite3_stmt *s;
	idp_session   found;
	char          session_id[CM_UUID_LEN + 1];
	int           rc, revoked, changed = 0;
	cm_err        rv;

	pthread_mutex_lock(&st->mtx);
	rv = exec(st, "BEGIN IMMEDIATE");
	if (rv != CM_OK) {
		goto out;
	}
	s = stmt(st, S_RT_GET);
	bind_text(s, 1, old_hash);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		sqlite3_reset(s);
		rv = CM_ENOENT;
		goto fail;
	}
	if (rc != SQLITE_ROW) {
		sqlite3_reset(s);
		rv = sql_fail(st, "get refresh token");
		goto fail;
	}
	copy_col(s, 0, session_id, sizeof(session_id));
	revoked = sqlite3_column_int(s, 1);
	sqlite3_reset(s);
	if (revoked) {
		// Reuse of a rotated token: end the session (its tokens go
		// with it), commit that, and report the conflict.
		s = stmt(st, S_SESSION_DELETE);
		bind_text(s, 1, session_id);
		rv = step_done(st, s, "revoke session");
		if (rv == CM_OK) {
			rv = exec(st, "COMMIT");
		}
		if (rv != CM_OK) {
			goto fail;
		}
		rv = CM_ECONFLICT;
		goto out;
	}
	rv = session_get(st, session_id, &found);
	if (rv != CM_OK) {
		goto fail; // CM_ENOENT: cascade makes this unlikely
	}
	s = stmt(st, S_RT_REVOKE);
	bind_text(s, 1, old_hash);
	rv = step_done(st, s, "revoke refresh token");
	if (rv != CM_OK) {
		goto fail;
	}
	s = stmt(st, S_RT_INSERT);
	bind_text(s, 1, new_hash);
	bind_text(s, 2, session_id);
	bind_text(s, 3, old_hash);
	sqlite3_bind_int64(s, 4, now);
	rv = step_done(st, s, "insert refresh token");
	if (rv != CM_OK) {
		goto fail;
	}
	rv = user_signin(st, found.user_id, now, &changed);
	if (rv != CM_OK) {
		goto fail;
	}
	rv = exec(st, "COMMIT");
	if (rv != CM_OK) {
		goto fail;
	}
	*sess = found;
	goto out;
fail:
	rollback(st);
out:
	pthread_mutex_unlock(&st->mtx);
	return (rv);
}

cm_err
idp_store_logout(idp_store *st, const char *user_id, const char *session_id,
    idp_logout_scope scope)
{
	sqlite3_stmt *s;
	cm_err        rv;

	pthread_mutex_lock(&st->mtx);
	switch (scope) {
	case IDP_LOGOUT_LOCAL:
		s = stmt(st, S_SESSION_DELETE);
		bind_text(s, 1, session_id);
		break;
	case IDP_LOGOUT_OTHERS:
		s = stmt(st, S_SESSION_DELETE_OTHERS);
		bind_text(s, 1, user_id);
		bind_text(s, 2, session_id);
		break;
	case IDP_LOGOUT_GLOBAL:
	default:
		s = stmt(st, S_SESSION_DELETE_ALL);
		bind_text(s, 1, user_id);
		break;
	}
	rv = step_done(st, s, "logout");
	pthread_mutex_unlock(&st->mtx);
	return (rv);
}
