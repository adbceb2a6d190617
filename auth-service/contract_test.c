// SPDX-License-Identifier: MIT
//
// Contract test of the auth-service: starts the real threadgate-auth
// binary alone (ipc socket in a private temp dir) and drives it with
// Authenticate/Stats protobuf messages over nng, against
//  (a) the real dev IdP binary (signup, valid token, garbage token,
//      logout -> refused);
//  (b) an unreachable IdP (a closed port) -> UNAVAILABLE;
//  (c) a slow IdP (accepts, never answers) -> failed closed within the
//      configured timeout;
//  (d) an IdP answering garbage JSON, {}, an empty id, an oversized body,
//      500, 401, 403 -> exact outcomes;
//  (e) Stats counting each class;
//  (f) unknown method and undecodable payload -> error reply, the service
//      keeps serving;
//  (g) single-flight: 50 concurrent Authenticate calls with one new token
//      -> exactly one IdP call, counted at the IdP.
// The scripted IdP is a tiny HTTP responder thread in this test.

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "common/err.h"
#include "common/rpc.h"
#include "common/util.h"
#include "proto/auth.pb-c.h"
#include "tests/harness/proc.h"

// Longest path or URL built by this test.
#define PATH_MAX_LEN 512
// Bound on every wait for a process to become ready.
#define READY_TIMEOUT_MS 15000
// Timeout of an ordinary Authenticate call from the test.
#define CALL_TIMEOUT_MS 5000
// Largest HTTP request the responder reads (headers only).
#define RESP_REQ_MAX 16384
// Connections the slow responder holds open at once.
#define RESP_HELD_MAX 128
// Concurrent callers in the single-flight test.
#define SF_CALLERS 50

static char *tmp;

// ---------------------------------------------------------------------
// Scripted IdP: a tiny HTTP responder thread
// ---------------------------------------------------------------------

typedef enum {
	RM_OK,       // 200 with a user object
	RM_GARBAGE,  // 200 with a body that is not JSON
	RM_EMPTY,    // 200 {}
	RM_EMPTY_ID, // 200 {"id": ""}
	RM_NUL_ID,   // 200 {"id": "<a real id>\u0000x"}: refused, not cut
	RM_HUGE,     // 200 with a body over AUTH_IDP_BODY_MAX
	RM_500,
	RM_401,
	RM_403,
	RM_SLOW, // accept, read, never answer
	// RFC 7662 introspection answers
	RM_INTRO_ACTIVE,   // active, sub, scope, exp
	RM_INTRO_CLIENT,   // active, client_id only (client_credentials)
	RM_INTRO_INACTIVE, // {"active":false}
	RM_INTRO_BAD,      // "active" is not a boolean
	RM_INTRO_NUL_SUB,  // active, sub "intro-user\u0000x"
	RM_INTRO_NUL_AUD,  // active, aud "https://api.test\u0000x"
} resp_mode;

typedef struct responder {
	int             fd;
	int             port;
	pthread_t       th;
	atomic_int      mode;
	atomic_int      count;
	atomic_int      stop;
	int             delay_ms;
	int             held[RESP_HELD_MAX];
	int             nheld;
	char            last[RESP_REQ_MAX]; // last request (headers)
	pthread_mutex_t mtx;
} responder;

static void
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0) {
			return;
		}
		p += w;
		n -= (size_t) w;
	}
}

static void
send_response(int fd, int status, const char *body, size_t len)
{
	char hdr[256];
	int  n = snprintf(hdr, sizeof(hdr),
	     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
	      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
	     status, len);
	write_all(fd, hdr, (size_t) n);
	write_all(fd, body, len);
}

static void
serve_conn(responder *r, int cfd)
{
	char      buf[RESP_REQ_MAX];
	size_t    n = 0;
	resp_mode mode;

	// Read the request headers (bounded in size and time).
	while (n < sizeof(buf) - 1) {
		struct pollfd pfd = { cfd, POLLIN, 0 };
		ssize_t       got;
		if (poll(&pfd, 1, 2000) <= 0) {
			break;
		}
		got = recv(cfd, buf + n, sizeof(buf) - 1 - n, 0);
		if (got <= 0) {
			break;
		}
		n += (size_t) got;
		buf[n] = '\0';
		{
			const char *end = strstr(buf, "\r\n\r\n");
			const char *cl =
			    strcasestr(buf, "\r\ncontent-length:");
			size_t want;
			if (end == NULL) {
				continue;
			}
			want = (size_t) (end - buf) + 4;
			if (cl != NULL && cl < end) {
				want += strtoul(cl + 17, NULL, 10);
			}
			if (n >= want) {
				break;
			}
		}
	}
	buf[n] = '\0';
	pthread_mutex_lock(&r->mtx);
	memcpy(r->last, buf, n + 1);
	pthread_mutex_unlock(&r->mtx);
	atomic_fetch_add(&r->count, 1);

	if (r->delay_ms > 0) {
		struct timespec ts = { r->delay_ms / 1000,
			(long) (r->delay_ms % 1000) * 1000000L };
		nanosleep(&ts, NULL); // simulates a slow IdP, not a wait
	}
	mode = (resp_mode) atomic_load(&r->mode);
	switch (mode) {
	case RM_OK: {
		static const char b[] =
		    "{\"id\":\"0b6e5f3c-1111-4222-8333-944455556666\","
		    "\"aud\":\"authenticated\",\"role\":\"authenticated\","
		    "\"email\":\"resp@example.test\"}";
		send_response(cfd, 200, b, sizeof(b) - 1);
		break;
	}
	case RM_GARBAGE:
		send_response(cfd, 200, "{\"id\": \"x\"", 10);
		break;
	case RM_EMPTY:
		send_response(cfd, 200, "{}", 2);
		break;
	case RM_EMPTY_ID:
		send_response(cfd, 200, "{\"id\":\"\"}", 9);
		break;
	case RM_NUL_ID: {
		static const char b[] =
		    "{\"id\":\"0b6e5f3c-1111-4222-8333-944455556666\\u0000x\","
		    "\"email\":\"resp@example.test\"}";
		send_response(cfd, 200, b, sizeof(b) - 1);
		break;
	}
	case RM_INTRO_NUL_SUB:
	case RM_INTRO_NUL_AUD: {
		char b[256];
		int  bl = snprintf(b, sizeof(b),
		     "{\"active\":true,\"sub\":\"intro-user%s\","
		      "\"exp\":%lld,\"aud\":\"https://api.test%s\"}",
                    mode == RM_INTRO_NUL_SUB ? "\\u0000x" : "",
		     (long long) (cm_now_ms() / 1000 + 300),
                    mode == RM_INTRO_NUL_AUD ? "\\u0000x" : "");
		send_response(cfd, 200, b, (size_t) bl);
		break;
	}
	case RM_HUGE: {
		size_t len = 300u * 1024u;
		char  *b   = malloc(len);
		memset(b, ' ', len);
		memcpy(b, "{\"id\":\"huge\"", 12);
		b[len - 1] = '}';
		send_response(cfd, 200, b, len);
		free(b);
		break;
	}
	case RM_500:
		send_response(cfd, 500, "{\"code\":500}", 12);
		break;
	case RM_401:
		send_response(cfd, 401,
		    "{\"code\":401,\"error_code\":\"no_authorization\"}", 44);
		break;
	case RM_403:
		send_response(
		    cfd, 403, "{\"code\":403,\"error_code\":\"bad_jwt\"}", 35);
		break;
	case RM_INTRO_ACTIVE: {
		char b[256];
		int  bl = snprintf(b, sizeof(b),
		     "{\"active\":true,\"sub\":\"intro-user\","
		      "\"client_id\":\"svc\",\"scope\":\"api:read api:write\","
		      "\"exp\":%lld,\"aud\":\"https://api.test\"}",
		     (long long) (cm_now_ms() / 1000 + 300));
		send_response(cfd, 200, b, (size_t) bl);
		break;
	}
	case RM_INTRO_CLIENT:
		send_response(
		    cfd, 200, "{\"active\":true,\"client_id\":\"svc\"}", 33);
		break;
	case RM_INTRO_INACTIVE:
		send_response(cfd, 200, "{\"active\":false}", 16);
		break;
	case RM_INTRO_BAD:
		send_response(
		    cfd, 200, "{\"active\":\"yes\",\"sub\":\"x\"}", 26);
		break;
	case RM_SLOW:
		if (r->nheld < RESP_HELD_MAX) {
			r->held[r->nheld++] = cfd;
			return; // never answered, closed at stop
		}
		break;
	}
	close(cfd);
}

static void *
responder_main(void *arg)
{
	responder *r = arg;

	while (!atomic_load(&r->stop)) {
		struct pollfd pfd = { r->fd, POLLIN, 0 };
		int           cfd;

		if (poll(&pfd, 1, 50) <= 0) {
			continue;
		}
		cfd = accept(r->fd, NULL, NULL);
		if (cfd < 0) {
			continue;
		}
		serve_conn(r, cfd);
	}
	return (NULL);
}

static int
listen_loopback(int *port)
{
	struct sockaddr_in a;
	socklen_t          al  = sizeof(a);
	int                fd  = socket(AF_INET, SOCK_STREAM, 0);
	int                one = 1;

	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family      = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port        = 0;
	assert_int_equal(bind(fd, (struct sockaddr *) &a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 256), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *) &a, &al), 0);
	*port = ntohs(a.sin_port);
	return (fd);
}

static responder *
responder_start(resp_mode mode, int delay_ms)
{
	responder *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	r->fd = listen_loopback(&r->port);
	atomic_init(&r->mode, mode);
	atomic_init(&r->count, 0);
	atomic_init(&r->stop, 0);
	r->delay_ms = delay_ms;
	pthread_mutex_init(&r->mtx, NULL);
	assert_int_equal(pthread_create(&r->th, NULL, responder_main, r), 0);
	return (r);
}

static void
responder_stop(responder *r)
{
	atomic_store(&r->stop, 1);
	pthread_join(r->th, NULL);
	for (int i = 0; i < r->nheld; i++) {
		close(r->held[i]);
	}
	close(r->fd);
	pthread_mutex_destroy(&r->mtx);
	free(r);
}

// ---------------------------------------------------------------------
// The auth-service under test
// ---------------------------------------------------------------------

typedef struct svc {
	tg_proc       *proc;
	cm_rpc_client *client;
	char           url[PATH_MAX_LEN];
	char           log[PATH_MAX_LEN];
} svc;

static void
show_log(const char *path)
{
	char *text = tg_read_file(path);
	if (text != NULL) {
		fprintf(stderr, "---- %s ----\n%s\n----\n", path, text);
		free(text);
	}
}

static cm_err
call_stats(svc *s, int timeout_ms, Threadgate__Auth__V1__StatsReply **out)
{
	Threadgate__Auth__V1__StatsRequest req =
	    THREADGATE__AUTH__V1__STATS_REQUEST__INIT;
	ProtobufCMessage *reply = NULL;
	cm_err            rv;

	rv = cm_rpc_call_sync(s->client, "Stats", "contract-stats", timeout_ms,
	    &req.base, &threadgate__auth__v1__stats_reply__descriptor, &reply,
	    NULL, 0);
	if (rv == CM_OK) {
		*out = (Threadgate__Auth__V1__StatsReply *) reply;
	}
	return (rv);
}

// Starts threadgate-auth with env (NULL-terminated "NAME=value" list),
// listening on ipc://<tmp>/<name>.sock, and waits until Stats answers.
static void
svc_start(svc *s, const char *name, const char *const *env)
{
	char        bin[PATH_MAX_LEN];
	const char *argv[4];
	int64_t     until = cm_mono_ms() + READY_TIMEOUT_MS;
	cm_err      rv    = CM_EUNAVAIL;

	memset(s, 0, sizeof(*s));
	snprintf(bin, sizeof(bin), "%s/auth-service/threadgate-auth",
	    tg_build_dir());
	snprintf(s->url, sizeof(s->url), "ipc://%s/%s.sock", tmp, name);
	snprintf(s->log, sizeof(s->log), "%s/%s.log", tmp, name);
	argv[0] = bin;
	argv[1] = "--listen";
	argv[2] = s->url;
	argv[3] = NULL;
	assert_int_equal(tg_proc_start(argv, env, s->log, &s->proc), 0);
	assert_int_equal(cm_rpc_client_open(s->url, &s->client), CM_OK);
	while (cm_mono_ms() < until) {
		Threadgate__Auth__V1__StatsReply *st = NULL;
		rv                                   = call_stats(s, 200, &st);
		if (rv == CM_OK) {
			protobuf_c_message_free_unpacked(&st->base, NULL);
			break;
		}
		if (!tg_proc_alive(s->proc)) {
			break;
		}
	}
	if (rv != CM_OK) {
		show_log(s->log);
		fail_msg("auth-service %s did not become ready", name);
	}
}

static void
svc_stop(svc *s)
{
	int st;

	cm_rpc_client_close(s->client);
	st = tg_proc_stop(s->proc);
	if (!(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
		show_log(s->log);
		fail_msg("auth-service did not stop cleanly (status %d)", st);
	}
}

// One Authenticate call. authz NULL = no Authorization header; scope may
// be NULL. On CM_OK *out gets the Identity (free it).
static cm_err
authn_full(svc *s, const char *const *authz, size_t nauthz,
    const char *const *scopes, size_t nscopes, int timeout_ms,
    Threadgate__Auth__V1__Identity **out, char *detail, size_t dlen)
{
	Threadgate__Auth__V1__AuthenticateRequest req =
	    THREADGATE__AUTH__V1__AUTHENTICATE_REQUEST__INIT;
	ProtobufCMessage *reply = NULL;
	cm_err            rv;

	req.authorization     = (char **) authz;
	req.n_authorization   = nauthz;
	req.required_scopes   = (char **) scopes;
	req.n_required_scopes = nscopes;
	rv = cm_rpc_call_sync(s->client, "Authenticate", "contract-authn",
	    timeout_ms, &req.base, &threadgate__auth__v1__identity__descriptor,
	    &reply, detail, dlen);
	if (rv == CM_OK) {
		Threadgate__Auth__V1__Identity *id =
		    (Threadgate__Auth__V1__Identity *) reply;
		// Fail-closed invariant, checked on every OK the test sees.
		assert_non_null(id->identity);
		assert_true(id->identity[0] != '\0');
		assert_true(id->is_authenticated);
		if (out != NULL) {
			*out = id;
		} else {
			protobuf_c_message_free_unpacked(reply, NULL);
		}
	}
	return (rv);
}

static cm_err
authn(svc *s, const char *token, Threadgate__Auth__V1__Identity **out)
{
	char        hdr[1024];
	const char *v[1] = { hdr };

	if (token == NULL) {
		return (authn_full(
		    s, NULL, 0, NULL, 0, CALL_TIMEOUT_MS, out, NULL, 0));
	}
	snprintf(hdr, sizeof(hdr), "Bearer %s", token);
	return (authn_full(s, v, 1, NULL, 0, CALL_TIMEOUT_MS, out, NULL, 0));
}

static Threadgate__Auth__V1__StatsReply *
stats(svc *s)
{
	Threadgate__Auth__V1__StatsReply *st = NULL;

	assert_int_equal(call_stats(s, CALL_TIMEOUT_MS, &st), CM_OK);
	return (st);
}

static void
env_url(char *buf, size_t len, int port)
{
	snprintf(buf, len, "SUPABASE_URL=http://127.0.0.1:%d", port);
}

typedef struct sf_arg sf_arg;
struct sf_arg {
	svc        *s;
	const char *token;
	cm_err      rv;
	char        identity[128];
};
static void *sf_caller(void *p);
static void  run_concurrent(svc *s, const char *token, sf_arg *args);

// ---------------------------------------------------------------------
// (a) against the real dev IdP
// ---------------------------------------------------------------------

typedef struct membuf {
	char  *p;
	size_t n;
} membuf;

static size_t
mem_write(char *d, size_t sz, size_t nm, void *arg)
{
	membuf *m = arg;
	size_t  n = sz * nm;
	char   *np;

	if (m->n + n > 1024 * 1024) {
		return (0);
	}
	np = realloc(m->p, m->n + n + 1);
	if (np == NULL) {
		return (0);
	}
	m->p = np;
	memcpy(m->p + m->n, d, n);
	m->n += n;
	m->p[m->n] = '\0';
	return (n);
}

// POST to the dev IdP; returns the HTTP status and the body (free it).
static long
idp_post(int port, const char *path, const char *bearer, const char *body,
    char **out)
{
	CURL              *c  = curl_easy_init();
	struct curl_slist *h  = NULL;
	membuf             mb = { 0 };
	char               url[PATH_MAX_LEN];
	char               ah[2048];
	long               status = 0;

	assert_non_null(c);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	h = curl_slist_append(h, "apikey: threadgate-dev-anon-key");
	h = curl_slist_append(h, "Content-Type: application/json");
	if (bearer != NULL) {
		snprintf(ah, sizeof(ah), "Authorization: Bearer %s", bearer);
		h = curl_slist_append(h, ah);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body != NULL ? body : "");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mem_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &mb);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
	if (curl_easy_perform(c) == CURLE_OK) {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	}
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	if (out != NULL) {
		*out = mb.p != NULL ? mb.p : strdup("");
	} else {
		free(mb.p);
	}
	return (status);
}

// GET the dev IdP's /_dev/stats user_requests counter.
static long
idp_user_requests(int port)
{
	CURL              *c  = curl_easy_init();
	struct curl_slist *h  = NULL;
	membuf             mb = { 0 };
	char               url[PATH_MAX_LEN];
	long               n = -1;
	json_t            *j;

	snprintf(
	    url, sizeof(url), "http://127.0.0.1:%d/auth/v1/_dev/stats", port);
	h = curl_slist_append(h, "apikey: threadgate-dev-service-key");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mem_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &mb);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
	if (curl_easy_perform(c) == CURLE_OK && mb.p != NULL) {
		j = json_loads(mb.p, 0, NULL);
		if (json_is_integer(json_object_get(j, "user_requests"))) {
			n = (long) json_integer_value(
			    json_object_get(j, "user_requests"));
		}
		json_decref(j);
	}
	free(mb.p);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return (n);
}

typedef struct dev_idp {
	tg_proc *proc;
	int      port;
	char     log[PATH_MAX_LEN];
} dev_idp;

// Starts the dev IdP; returns 0, or -1 when its binary is not built.
static int
dev_idp_start(dev_idp *d, const char *name)
{
	char        bin[PATH_MAX_LEN], pf[PATH_MAX_LEN], db[PATH_MAX_LEN];
	const char *argv[8];
	struct stat sb;

	snprintf(
	    bin, sizeof(bin), "%s/dev-idp/threadgate-dev-idp", tg_build_dir());
	if (stat(bin, &sb) != 0) {
		return (-1);
	}
	snprintf(pf, sizeof(pf), "%s/%s.port", tmp, name);
	snprintf(db, sizeof(db), "%s/%s.db", tmp, name);
	snprintf(d->log, sizeof(d->log), "%s/%s.log", tmp, name);
	argv[0] = bin;
	argv[1] = "--port";
	argv[2] = "0";
	argv[3] = "--port-file";
	argv[4] = pf;
	argv[5] = "--db";
	argv[6] = db;
	argv[7] = NULL;
	assert_int_equal(tg_proc_start(argv, NULL, d->log, &d->proc), 0);
	d->port = tg_wait_port_file(pf, READY_TIMEOUT_MS);
	if (d->port <= 0) {
		show_log(d->log);
		fail_msg("dev IdP did not write its port file");
	}
	return (0);
}

// Signs up a new user; writes the access token and user id (new).
static void
dev_signup(dev_idp *d, const char *email, char **token, char **user_id)
{
	char    body[256];
	char   *resp = NULL;
	long    st;
	json_t *j;

	snprintf(body, sizeof(body),
	    "{\"email\":\"%s\",\"password\":\"correct-horse-battery-9\"}",
	    email);
	st = idp_post(d->port, "/auth/v1/signup", NULL, body, &resp);
	if (st != 200) {
		fail_msg("signup answered %ld: %s", st, resp);
	}
	j = json_loads(resp, 0, NULL);
	assert_non_null(j);
	assert_true(json_is_string(json_object_get(j, "access_token")));
	*token = strdup(json_string_value(json_object_get(j, "access_token")));
	*user_id = strdup(json_string_value(
	    json_object_get(json_object_get(j, "user"), "id")));
	json_decref(j);
	free(resp);
}

static void
test_dev_idp(void **state)
{
	dev_idp                         d;
	svc                             s;
	char                            url[128];
	char                           *tok = NULL, *uid = NULL;
	Threadgate__Auth__V1__Identity *id    = NULL;
	const char                     *env[] = { url,
		                    "SUPABASE_SERVICE_KEY=threadgate-dev-service-key",
		                    "AUTH_PROVIDER=supabase", "AUTH_CACHE_TTL=0", NULL };

	(void) state;
	if (dev_idp_start(&d, "devidp-a") != 0) {
		fprintf(stderr, "dev IdP binary not built: skipping (a)\n");
		skip();
	}
	env_url(url, sizeof(url), d.port);
	svc_start(&s, "auth-a", env);
	dev_signup(&d, "alice@example.test", &tok, &uid);

	// Valid token -> the IdP's user id and email.
	assert_int_equal(authn(&s, tok, &id), CM_OK);
	assert_string_equal(id->identity, uid);
	assert_string_equal(id->email, "alice@example.test");
	assert_string_equal(id->provider, "supabase");
	assert_true(id->expires_at > cm_now_ms() / 1000);
	// Nothing cached (AUTH_CACHE_TTL=0): nothing to reuse.
	assert_int_equal(id->reuse_ms, 0);
	protobuf_c_message_free_unpacked(&id->base, NULL);

	// Garbage token -> UNAUTHENTICATED (dev IdP says 403 bad_jwt).
	assert_int_equal(authn(&s, "garbage.token.value", NULL), CM_EAUTH);
	assert_int_equal(authn(&s, "not-a-jwt", NULL), CM_EAUTH);
	// No credentials.
	assert_int_equal(authn(&s, NULL, NULL), CM_EAUTH);

	// Logout, then (cache TTL 0) the same token is refused.
	assert_int_equal(
	    idp_post(d.port, "/auth/v1/logout", tok, NULL, NULL), 204);
	assert_int_equal(authn(&s, tok, NULL), CM_EAUTH);

	svc_stop(&s);
	assert_int_equal(tg_proc_stop(d.proc) != -1, 1);
	free(tok);
	free(uid);
}

// With the cache on, a logged-out token keeps working only until the
// cache TTL; and 50 concurrent new-token calls cost one /user call.
static void
test_dev_idp_cache_and_single_flight(void **state)
{
	dev_idp                           d;
	svc                               s;
	char                              url[128];
	char                             *tok = NULL, *uid = NULL;
	long                              before, after;
	const char                       *env[] = { url,
		                      "SUPABASE_SERVICE_KEY=threadgate-dev-service-key",
		                      "AUTH_CACHE_TTL=60", "AUTH_WORKERS=64", NULL };
	Threadgate__Auth__V1__StatsReply *st;

	(void) state;
	if (dev_idp_start(&d, "devidp-b") != 0) {
		fprintf(stderr, "dev IdP binary not built: skipping\n");
		skip();
	}
	env_url(url, sizeof(url), d.port);
	svc_start(&s, "auth-b", env);
	dev_signup(&d, "bob@example.test", &tok, &uid);

	before = idp_user_requests(d.port);
	assert_true(before >= 0);
	{
		Threadgate__Auth__V1__Identity *a = NULL, *b = NULL;

		assert_int_equal(authn(&s, tok, &a), CM_OK);
		assert_int_equal(authn(&s, tok, &b), CM_OK); // cached
		// Reusable for as long as the cache keeps it: at most the
		// TTL, and less on the second answer (the same entry).
		assert_true(a->reuse_ms > 0 && a->reuse_ms <= 60 * 1000);
		assert_true(b->reuse_ms > 0 && b->reuse_ms <= a->reuse_ms);
		assert_true(
		    cm_now_ms() + b->reuse_ms <= (a->expires_at + 1) * 1000);
		protobuf_c_message_free_unpacked(&a->base, NULL);
		protobuf_c_message_free_unpacked(&b->base, NULL);
	}
	after = idp_user_requests(d.port);
	assert_int_equal(after - before, 1);
	st = stats(&s);
	assert_int_equal(st->cache_hits, 1);
	assert_int_equal(st->cache_entries, 1);
	protobuf_c_message_free_unpacked(&st->base, NULL);

	// 50 concurrent calls with a token nobody has checked yet: one
	// /user call at the dev IdP.
	{
		sf_arg args[SF_CALLERS];
		char  *tok2 = NULL, *uid2 = NULL;

		dev_signup(&d, "carol@example.test", &tok2, &uid2);
		before = idp_user_requests(d.port);
		run_concurrent(&s, tok2, args);
		for (int i = 0; i < SF_CALLERS; i++) {
			assert_int_equal(args[i].rv, CM_OK);
			assert_string_equal(args[i].identity, uid2);
		}
		assert_int_equal(idp_user_requests(d.port) - before, 1);
		free(tok2);
		free(uid2);
	}

	svc_stop(&s);
	tg_proc_stop(d.proc);
	free(tok);
	free(uid);
}

// ---------------------------------------------------------------------
// (b), (c): unreachable and slow IdPs
// ---------------------------------------------------------------------

static void
test_unreachable(void **state)
{
	svc         s;
	char        url[128];
	int         port;
	int         fd    = listen_loopback(&port);
	const char *env[] = { url, "SUPABASE_SERVICE_KEY=k",
		"AUTH_PROVIDER=supabase", NULL };
	Threadgate__Auth__V1__StatsReply *st;

	(void) state;
	close(fd); // nothing listens there any more: connection refused
	env_url(url, sizeof(url), port);
	svc_start(&s, "auth-down", env);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(authn(&s, "some-token", NULL), CM_EUNAVAIL);
	}
	st = stats(&s);
	assert_int_equal(st->unavailable, 3);
	assert_int_equal(st->valid, 0);
	assert_int_equal(st->cache_entries, 0);
	protobuf_c_message_free_unpacked(&st->base, NULL);
	svc_stop(&s);
}

static void
test_slow(void **state)
{
	svc         s;
	char        url[128];
	responder  *r     = responder_start(RM_SLOW, 0);
	const char *env[] = { url, "SUPABASE_SERVICE_KEY=k",
		"AUTH_IDP_TIMEOUT_MS=300", NULL };
	int64_t     t0;
	cm_err      rv;
	Threadgate__Auth__V1__StatsReply *st;

	(void) state;
	env_url(url, sizeof(url), r->port);
	svc_start(&s, "auth-slow", env);
	t0 = cm_mono_ms();
	rv = authn(&s, "slow-token", NULL);
	assert_true(rv == CM_ETIMEDOUT || rv == CM_EUNAVAIL);
	// Failed closed within the configured 300 ms (+ scheduling slack),
	// long before the client's own 5 s deadline.
	assert_true(cm_mono_ms() - t0 >= 250);
	assert_true(cm_mono_ms() - t0 < 2500);
	assert_int_equal(atomic_load(&r->count), 1);

	// The request's own deadline bounds the work too: a 400 ms call
	// against a 300 ms IdP timeout never comes back OK.
	rv = authn_full(&s, (const char *const[]) { "Bearer slow-2" }, 1, NULL,
	    0, 400, NULL, NULL, 0);
	assert_true(rv == CM_ETIMEDOUT || rv == CM_EUNAVAIL);
	st = stats(&s);
	assert_int_equal(st->valid, 0);
	protobuf_c_message_free_unpacked(&st->base, NULL);
	svc_stop(&s);
	responder_stop(r);
}

// ---------------------------------------------------------------------
// (d), (e): malformed IdP answers, exact outcomes and Stats
// ---------------------------------------------------------------------

static void
test_idp_answers_and_stats(void **state)
{
	svc         s;
	char        url[128];
	responder  *r     = responder_start(RM_OK, 0);
	const char *env[] = { url, "SUPABASE_SERVICE_KEY=test-service-key",
		NULL };
	static const struct {
		resp_mode mode;
		cm_err    want;
	} cases[] = {
		{ RM_GARBAGE, CM_EUNAVAIL },
		{ RM_EMPTY, CM_EUNAVAIL },
		{ RM_EMPTY_ID, CM_EUNAVAIL },
		{ RM_NUL_ID, CM_EUNAVAIL },
		{ RM_HUGE, CM_EUNAVAIL },
		{ RM_500, CM_EUNAVAIL },
		{ RM_401, CM_EAUTH },
		{ RM_403, CM_EAUTH },
	};
	Threadgate__Auth__V1__Identity   *id = NULL;
	Threadgate__Auth__V1__StatsReply *st;
	char                              last[RESP_REQ_MAX];
	const char                       *many[17];
	const char                       *two[2] = { "Bearer a", "Bearer a" };
	char                              tok[64];
	int                               idp_before;

	(void) state;
	env_url(url, sizeof(url), r->port);
	svc_start(&s, "auth-answers", env);

	// 200 with a user -> OK, and the IdP saw the contract's request.
	assert_int_equal(authn(&s, "tok-ok", &id), CM_OK);
	assert_string_equal(
	    id->identity, "0b6e5f3c-1111-4222-8333-944455556666");
	assert_string_equal(id->email, "resp@example.test");
	protobuf_c_message_free_unpacked(&id->base, NULL);
	pthread_mutex_lock(&r->mtx);
	memcpy(last, r->last, sizeof(last));
	pthread_mutex_unlock(&r->mtx);
	assert_non_null(strstr(last, "GET /auth/v1/user HTTP/1.1\r\n"));
	assert_non_null(strstr(last, "Authorization: Bearer tok-ok\r\n"));
	assert_non_null(strstr(last, "apikey: test-service-key\r\n"));
	// The same token again: from the cache, no IdP call.
	idp_before = atomic_load(&r->count);
	assert_int_equal(authn(&s, "tok-ok", NULL), CM_OK);
	assert_int_equal(atomic_load(&r->count), idp_before);

	// Each malformed or failing answer -> its exact outcome, never OK;
	// and nothing of it is cached (asked again -> the IdP again).
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(tok, sizeof(tok), "tok-case-%zu", i);
		atomic_store(&r->mode, cases[i].mode);
		for (int k = 0; k < 2; k++) {
			int    before = atomic_load(&r->count);
			cm_err rv     = authn(&s, tok, NULL);
			if (rv != cases[i].want) {
				fail_msg("mode %d: got %s want %s",
				    (int) cases[i].mode, cm_strerror(rv),
				    cm_strerror(cases[i].want));
			}
			assert_int_equal(atomic_load(&r->count), before + 1);
		}
	}

	// Header refusals never reach the IdP.
	idp_before = atomic_load(&r->count);
	assert_int_equal(authn(&s, NULL, NULL), CM_EAUTH);
	assert_int_equal(
	    authn_full(&s, two, 2, NULL, 0, CALL_TIMEOUT_MS, NULL, NULL, 0),
	    CM_EAUTH);
	assert_int_equal(authn_full(&s, (const char *const[]) { "Basic abc" },
	                     1, NULL, 0, CALL_TIMEOUT_MS, NULL, NULL, 0),
	    CM_EAUTH);
	assert_int_equal(atomic_load(&r->count), idp_before);

	// A required scope the user does not have -> refused (EPERM).
	atomic_store(&r->mode, RM_OK);
	assert_int_equal(
	    authn_full(&s, (const char *const[]) { "Bearer tok-ok" }, 1,
	        (const char *const[]) { "threads:admin" }, 1, CALL_TIMEOUT_MS,
	        NULL, NULL, 0),
	    CM_EPERM);
	// Too many required scopes -> INVALID_ARGUMENT (malformed).
	for (int i = 0; i < 17; i++) {
		many[i] = "s";
	}
	assert_int_equal(
	    authn_full(&s, (const char *const[]) { "Bearer tok-ok" }, 1, many,
	        17, CALL_TIMEOUT_MS, NULL, NULL, 0),
	    CM_EINVAL);

	st = stats(&s);
	// valid: tok-ok twice. refused: 401 x2, 403 x2, 3 header cases,
	// EPERM. unavailable: 6 modes x 2. malformed: the scope list.
	assert_int_equal(st->valid, 2);
	assert_int_equal(st->refused, 2 + 2 + 3 + 1);
	assert_int_equal(st->unavailable, 6 * 2);
	assert_int_equal(st->malformed, 1);
	assert_int_equal(st->cache_hits, 1);
	assert_int_equal(st->cache_entries, 1);
	assert_int_equal(st->idp_calls, (uint64_t) atomic_load(&r->count));
	protobuf_c_message_free_unpacked(&st->base, NULL);
	svc_stop(&s);
	responder_stop(r);
}

// ---------------------------------------------------------------------
// (f): unknown method, undecodable payload
// ---------------------------------------------------------------------

static void
test_bad_requests(void **state)
{
	svc         s;
	char        url[128];
	responder  *r     = responder_start(RM_OK, 0);
	const char *env[] = { url, "SUPABASE_SERVICE_KEY=k", NULL };
	static const unsigned char junk[] = { 0xff, 0xff, 0xff, 0xff, 0x0f };
	void                      *out    = NULL;
	size_t                     outlen = 0;
	char                       detail[CM_RPC_DETAIL_MAX] = "";

	(void) state;
	env_url(url, sizeof(url), r->port);
	svc_start(&s, "auth-bad", env);
	assert_int_equal(
	    cm_rpc_call_raw_sync(s.client, "Nope", "rid-1",
	        cm_now_ms() + CALL_TIMEOUT_MS, junk, sizeof(junk),
	        CALL_TIMEOUT_MS, &out, &outlen, detail, sizeof(detail)),
	    CM_ENOTSUP);
	assert_null(out);
	assert_int_equal(
	    cm_rpc_call_raw_sync(s.client, "Authenticate", "rid-2",
	        cm_now_ms() + CALL_TIMEOUT_MS, junk, sizeof(junk),
	        CALL_TIMEOUT_MS, &out, &outlen, detail, sizeof(detail)),
	    CM_EINVAL);
	assert_null(out);
	// An expired envelope deadline is refused without doing the work.
	assert_int_equal(
	    cm_rpc_call_raw_sync(s.client, "Authenticate", "rid-3",
	        cm_now_ms() - 1000, NULL, 0, CALL_TIMEOUT_MS, &out, &outlen,
	        detail, sizeof(detail)),
	    CM_ETIMEDOUT);
	// Still serving, and the IdP was never asked.
	assert_int_equal(authn(&s, "tok-after", NULL), CM_OK);
	assert_int_equal(atomic_load(&r->count), 1);
	assert_true(tg_proc_alive(s.proc));
	// The unknown method and the undecodable payload count as malformed
	// (the expired deadline does not): refusals the rpc layer made itself
	// are counted too.
	{
		Threadgate__Auth__V1__StatsReply *st = stats(&s);

		assert_int_equal(st->malformed, 2);
		assert_int_equal(st->valid, 1);
		protobuf_c_message_free_unpacked(&st->base, NULL);
	}
	svc_stop(&s);
	responder_stop(r);
}

// ---------------------------------------------------------------------
// (g): single-flight
// ---------------------------------------------------------------------

static void *
sf_caller(void *p)
{
	sf_arg                         *a  = p;
	Threadgate__Auth__V1__Identity *id = NULL;

	a->rv = authn(a->s, a->token, &id);
	if (a->rv == CM_OK) {
		snprintf(a->identity, sizeof(a->identity), "%s", id->identity);
		protobuf_c_message_free_unpacked(&id->base, NULL);
	}
	return (NULL);
}

// Runs SF_CALLERS concurrent Authenticate calls with token.
static void
run_concurrent(svc *s, const char *token, sf_arg *args)
{
	pthread_t th[SF_CALLERS];

	for (int i = 0; i < SF_CALLERS; i++) {
		args[i].s     = s;
		args[i].token = token;
		args[i].rv    = CM_EINTERNAL;
		assert_int_equal(
		    pthread_create(&th[i], NULL, sf_caller, &args[i]), 0);
	}
	for (int i = 0; i < SF_CALLERS; i++) {
		pthread_join(th[i], NULL);
	}
}

static void
test_single_flight(void **state)
{
	svc  s;
	char url[128];
	// The IdP takes 300 ms: all 50 calls arrive while the first one is
	// in flight.
	responder  *r     = responder_start(RM_OK, 300);
	const char *env[] = { url, "SUPABASE_SERVICE_KEY=k", "AUTH_WORKERS=64",
		NULL };
	sf_arg      args[SF_CALLERS];
	Threadgate__Auth__V1__StatsReply *st;

	(void) state;
	env_url(url, sizeof(url), r->port);
	svc_start(&s, "auth-sf", env);
	run_concurrent(&s, "one-new-token", args);
	for (int i = 0; i < SF_CALLERS; i++) {
		assert_int_equal(args[i].rv, CM_OK);
		assert_string_equal(
		    args[i].identity, "0b6e5f3c-1111-4222-8333-944455556666");
	}
	assert_int_equal(atomic_load(&r->count), 1);
	st = stats(&s);
	assert_int_equal(st->valid, SF_CALLERS);
	assert_int_equal(st->idp_calls, 1);
	protobuf_c_message_free_unpacked(&st->base, NULL);
	svc_stop(&s);
	responder_stop(r);
}

// ---------------------------------------------------------------------
// Introspection (RFC 7662) against the scripted IdP
// ---------------------------------------------------------------------

static void
test_introspection(void **state)
{
	svc         s;
	char        url[128];
	responder  *r     = responder_start(RM_INTRO_ACTIVE, 0);
	const char *env[] = { url, "AUTH_PROVIDER=introspection",
		// ':' and ' ' must be form-urlencoded before base64.
		"AUTH_CLIENT_ID=rs:1", "AUTH_CLIENT_SECRET=s p&c",
		"AUTH_AUDIENCE=https://api.test", NULL };
	Threadgate__Auth__V1__Identity *id = NULL;
	char                            last[RESP_REQ_MAX];

	(void) state;
	snprintf(url, sizeof(url),
	    "AUTH_INTROSPECTION_URL=http://127.0.0.1:%d/token/introspection",
	    r->port);
	svc_start(&s, "auth-intro", env);

	assert_int_equal(authn(&s, "opaque+tok/1=", &id), CM_OK);
	assert_string_equal(id->identity, "intro-user");
	assert_string_equal(id->provider, "introspection");
	assert_int_equal(id->n_permissions, 2);
	assert_string_equal(id->permissions[0], "api:read");
	assert_string_equal(id->permissions[1], "api:write");
	assert_true(id->expires_at > cm_now_ms() / 1000);
	protobuf_c_message_free_unpacked(&id->base, NULL);
	pthread_mutex_lock(&r->mtx);
	memcpy(last, r->last, sizeof(last));
	pthread_mutex_unlock(&r->mtx);
	assert_non_null(
	    strstr(last, "POST /token/introspection HTTP/1.1\r\n"));
	// base64("rs%3A1:s+p%26c")
	assert_non_null(
	    strstr(last, "Authorization: Basic cnMlM0ExOnMrcCUyNmM=\r\n"));
	assert_non_null(strstr(
	    last, "Content-Type: application/x-www-form-urlencoded\r\n"));
	assert_non_null(strstr(last, "\r\n\r\ntoken=opaque%2Btok%2F1%3D"));

	// A required scope the token has / has not.
	assert_int_equal(authn_full(&s, (const char *const[]) { "Bearer t2" },
	                     1, (const char *const[]) { "api:write" }, 1,
	                     CALL_TIMEOUT_MS, NULL, NULL, 0),
	    CM_OK);
	assert_int_equal(authn_full(&s, (const char *const[]) { "Bearer t2" },
	                     1, (const char *const[]) { "api:admin" }, 1,
	                     CALL_TIMEOUT_MS, NULL, NULL, 0),
	    CM_EPERM);

	atomic_store(&r->mode, RM_INTRO_INACTIVE);
	assert_int_equal(authn(&s, "revoked", NULL), CM_EAUTH);
	atomic_store(&r->mode, RM_INTRO_BAD);
	assert_int_equal(authn(&s, "bad-active", NULL), CM_EUNAVAIL);
	// A NUL inside sub or aud is refused, not cut at the NUL (which
	// would read as the other user / the expected audience).
	atomic_store(&r->mode, RM_INTRO_NUL_SUB);
	assert_int_equal(authn(&s, "nul-sub", NULL), CM_EUNAVAIL);
	atomic_store(&r->mode, RM_INTRO_NUL_AUD);
	assert_int_equal(authn(&s, "nul-aud", NULL), CM_EAUTH);
	atomic_store(&r->mode, RM_500);
	assert_int_equal(authn(&s, "idp-500", NULL), CM_EUNAVAIL);
	atomic_store(&r->mode, RM_401); // our client credentials refused
	assert_int_equal(authn(&s, "creds-refused", NULL), CM_EUNAVAIL);
	// active, but no aud: refused because AUTH_AUDIENCE is set.
	atomic_store(&r->mode, RM_INTRO_CLIENT);
	assert_int_equal(authn(&s, "no-aud", NULL), CM_EAUTH);
	svc_stop(&s);

	// Without an audience requirement: identity from client_id.
	env[4] = NULL;
	svc_start(&s, "auth-intro2", env);
	assert_int_equal(authn(&s, "cc-token", &id), CM_OK);
	assert_string_equal(id->identity, "svc");
	assert_int_equal(id->n_permissions, 0);
	protobuf_c_message_free_unpacked(&id->base, NULL);
	svc_stop(&s);
	responder_stop(r);
}

// ---------------------------------------------------------------------
// Static provider (development only)
// ---------------------------------------------------------------------

static void
test_static(void **state)
{
	svc         s;
	char        fenv[PATH_MAX_LEN + 32];
	char        path[PATH_MAX_LEN];
	FILE       *f;
	const char *env[] = { "AUTH_PROVIDER=static", fenv, "THREADGATE_DEV=1",
		NULL };
	Threadgate__Auth__V1__Identity *id = NULL;

	(void) state;
	snprintf(path, sizeof(path), "%s/static.json", tmp);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("{\"dev-token-1\": {\"identity\": \"user-1\", \"email\": "
	      "\"u1@example.test\", \"permissions\": [\"threads:write\"]}}",
	    f);
	fclose(f);
	snprintf(fenv, sizeof(fenv), "AUTH_STATIC_FILE=%s", path);
	svc_start(&s, "auth-static", env);
	assert_int_equal(authn(&s, "dev-token-1", &id), CM_OK);
	assert_string_equal(id->identity, "user-1");
	assert_string_equal(id->email, "u1@example.test");
	assert_string_equal(id->display_name, "user-1");
	assert_string_equal(id->provider, "static");
	assert_int_equal(id->n_permissions, 1);
	assert_string_equal(id->permissions[0], "threads:write");
	protobuf_c_message_free_unpacked(&id->base, NULL);
	assert_int_equal(authn(&s, "dev-token-2", NULL), CM_EAUTH);
	svc_stop(&s);
}

// ---------------------------------------------------------------------
// Hybrid against the real dev IdP: local JWT check + /user confirmation
// ---------------------------------------------------------------------

static void
test_hybrid(void **state)
{
	dev_idp     d;
	svc         s, s2;
	char        url[128];
	char       *tok = NULL, *uid = NULL, *tok2 = NULL, *uid2 = NULL;
	const char *env[]                  = { url,
		                 "SUPABASE_SERVICE_KEY=threadgate-dev-service-key",
		                 "AUTH_PROVIDER=hybrid", "AUTH_HYBRID_INTERVAL=1", NULL };
	const char *env_allow[]            = { url,
		           "SUPABASE_SERVICE_KEY=threadgate-dev-service-key",
		           "AUTH_PROVIDER=hybrid", "AUTH_HYBRID_INTERVAL=1",
		           "AUTH_HYBRID_OUTAGE=allow", NULL };
	Threadgate__Auth__V1__Identity *id = NULL;
	long                            before;
	int64_t                         t0, until;
	cm_err                          rv;

	(void) state;
	if (dev_idp_start(&d, "devidp-h") != 0) {
		fprintf(stderr, "dev IdP binary not built: skipping\n");
		skip();
	}
	env_url(url, sizeof(url), d.port);
	svc_start(&s, "auth-hybrid", env);
	svc_start(&s2, "auth-hybrid-allow", env_allow);
	dev_signup(&d, "dave@example.test", &tok, &uid);
	dev_signup(&d, "erin@example.test", &tok2, &uid2);

	// Valid: verified locally and confirmed once with /user.
	before = idp_user_requests(d.port);
	assert_int_equal(authn(&s, tok, &id), CM_OK);
	assert_string_equal(id->identity, uid);
	assert_string_equal(id->provider, "hybrid");
	protobuf_c_message_free_unpacked(&id->base, NULL);
	assert_int_equal(idp_user_requests(d.port) - before, 1);
	// Garbage never reaches the IdP (refused locally).
	before = idp_user_requests(d.port);
	assert_int_equal(authn(&s, "garbage.token.value", NULL), CM_EAUTH);
	assert_int_equal(idp_user_requests(d.port) - before, 0);

	// Logout takes effect within the interval (1 s) + slack.
	assert_int_equal(
	    idp_post(d.port, "/auth/v1/logout", tok, NULL, NULL), 204);
	t0    = cm_mono_ms();
	until = t0 + 4000;
	do {
		rv = authn(&s, tok, NULL);
	} while (rv == CM_OK && cm_mono_ms() < until);
	assert_int_equal(rv, CM_EAUTH);
	assert_true(cm_mono_ms() - t0 < 3000);

	// Outage: tok2 confirmed on both services, then the IdP goes away.
	assert_int_equal(authn(&s, tok2, NULL), CM_OK);
	assert_int_equal(authn(&s2, tok2, NULL), CM_OK);
	tg_proc_stop(d.proc);
	t0 = cm_mono_ms();
	// Default policy: once the confirmation is due, 503 (never OK,
	// never 401: the token itself is fine).
	until = t0 + 4000;
	do {
		rv = authn(&s, tok2, NULL);
	} while (rv == CM_OK && cm_mono_ms() < until);
	assert_int_equal(rv, CM_EUNAVAIL);
	// AUTH_HYBRID_OUTAGE=allow: the locally verified token is accepted
	// through the outage (past the interval).
	until = cm_mono_ms() + 1500;
	while (cm_mono_ms() < until) {
		assert_int_equal(authn(&s2, tok2, NULL), CM_OK);
	}
	assert_int_equal(authn(&s2, "garbage.token.value", NULL), CM_EAUTH);
	svc_stop(&s);
	svc_stop(&s2);
	free(tok);
	free(uid);
	free(tok2);
	free(uid2);
}

// ---------------------------------------------------------------------
// Start-up refusals (exit codes)
// ---------------------------------------------------------------------

static int
run_exit_code(const char *const *env, const char *name, const char *listen)
{
	char        bin[PATH_MAX_LEN], log[PATH_MAX_LEN], u[PATH_MAX_LEN];
	const char *argv[4];
	tg_proc    *p;
	int64_t     until = cm_mono_ms() + READY_TIMEOUT_MS;
	int         st;

	snprintf(bin, sizeof(bin), "%s/auth-service/threadgate-auth",
	    tg_build_dir());
	snprintf(log, sizeof(log), "%s/%s.log", tmp, name);
	if (listen != NULL) {
		snprintf(u, sizeof(u), "%s", listen);
	} else {
		snprintf(u, sizeof(u), "ipc://%s/%s.sock", tmp, name);
	}
	argv[0] = bin;
	argv[1] = "--listen";
	argv[2] = u;
	argv[3] = NULL;
	assert_int_equal(tg_proc_start(argv, env, log, &p), 0);
	while (tg_proc_alive(p) && cm_mono_ms() < until) {
		struct pollfd none;
		poll(&none, 0, 10); // bounded polling for the exit
	}
	st = tg_proc_stop(p);
	return (st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

static void
test_startup_refusals(void **state)
{
	const char *no_provider[] = {
		"SUPABASE_URL=", "AUTH_PROVIDER=", NULL
	};
	const char *bad_num[]      = { "SUPABASE_URL=http://127.0.0.1:1",
		     "SUPABASE_SERVICE_KEY=k", "AUTH_CACHE_TTL=sixty", NULL };
	const char *static_nodev[] = { "AUTH_PROVIDER=static",
		"AUTH_STATIC_FILE=/dev/null", "THREADGATE_DEV=0", NULL };
	const char *no_key[]       = { "SUPABASE_URL=http://127.0.0.1:1",
		      "SUPABASE_SERVICE_KEY=", "AUTH_PROVIDER=supabase", NULL };

	(void) state;
	char        nodir[PATH_MAX_LEN];
	const char *ok_env[] = { "SUPABASE_URL=http://127.0.0.1:1",
		"SUPABASE_SERVICE_KEY=k", NULL };

	assert_int_equal(run_exit_code(no_provider, "exit-noprov", NULL), 2);
	assert_int_equal(run_exit_code(bad_num, "exit-badnum", NULL), 2);
	assert_int_equal(run_exit_code(static_nodev, "exit-static", NULL), 2);
	assert_int_equal(run_exit_code(no_key, "exit-nokey", NULL), 2);
	assert_int_equal(run_exit_code(ok_env, "exit-url", "http://x"), 2);
	// Cannot listen (the socket's directory does not exist): 3.
	snprintf(nodir, sizeof(nodir), "ipc://%s/no-such-dir/a.sock", tmp);
	assert_int_equal(run_exit_code(ok_env, "exit-listen", nodir), 3);
}

static int
group_setup(void **state)
{
	(void) state;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	tmp = tg_tmpdir("auth-contract");
	return (0);
}

static int
group_teardown(void **state)
{
	(void) state;
	free(tmp);
	curl_global_cleanup();
	return (0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_startup_refusals),
		cmocka_unit_test(test_idp_answers_and_stats),
		cmocka_unit_test(test_unreachable),
		cmocka_unit_test(test_slow),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_single_flight),
		cmocka_unit_test(test_dev_idp),
		cmocka_unit_test(test_dev_idp_cache_and_single_flight),
		cmocka_unit_test(test_introspection),
		cmocka_unit_test(test_static),
		cmocka_unit_test(test_hybrid),
	};
	return (cmocka_run_group_tests(tests, group_setup, group_teardown));
}
