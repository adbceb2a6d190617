// SPDX-License-Identifier: MIT
//
// HTTP for the dev IdP: the listening socket (made here, so a taken port
// or a non-loopback address gets a precise message) and the
// libmicrohttpd glue. MHD runs its epoll thread pool with explicit limits
// (idle timeout, connection and per-IP caps, per-connection memory, which
// bounds headers) and we cap bodies ourselves (MHD has no cap). Following
// shared/reference/c-stack-measurements.md, a response is never queued on
// the first handler call, which would cost keep-alive; the one exception
// is a Content-Length already over the body cap, where we answer 413 at
// once and let MHD close the connection rather than read the body.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "dev-idp/idp.h"

// Pending connections the kernel queues before accept().
#define LISTEN_BACKLOG 128
// Request headers a browser may send cross-origin (supabase-js's set).
#define CORS_HEADERS                                           \
	"authorization, apikey, content-type, x-client-info, " \
	"x-supabase-api-version"
// Bytes the body buffer starts with; it doubles up to IDP_BODY_MAX.
#define BODY_INITIAL 1024

struct idp_http {
	struct MHD_Daemon *daemon;
	idp_ctx           *ctx;
};

// Per-request state, kept in MHD's con_cls.
typedef struct req_state {
	char   *body;
	size_t  len;
	size_t  cap;
	int     too_big;   // body over IDP_BODY_MAX: answer 413
	size_t  discarded; // bytes thrown away after too_big
	int64_t start_us;
	char    rid[CM_RID_MAX + 1];
} req_state;

// ---------------------------------------------------------------------
// Listening socket
// ---------------------------------------------------------------------

static int
is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
		return ((ntohl(in->sin_addr.s_addr) >> 24) == 127);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 =
		    (const struct sockaddr_in6 *) sa;
		if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) {
			return (1);
		}
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			return (in6->sin6_addr.s6_addr[12] == 127);
		}
	}
	return (0);
}

cm_err
idp_listen(
    const char *host, int port, int allow_remote, int *fd_out, int *bound_port)
{
	struct addrinfo         hints, *ai = NULL;
	struct sockaddr_storage ss;
	socklen_t               sslen = sizeof(ss);
	char                    portstr[16];
	int                     fd    = -1;
	int                     one   = 1;
	int                     saved = 0;
	cm_err                  rv;

	if (port < 0 || port > 65535) {
		rv = CM_EINVAL;
		goto out;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family   = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags    = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(portstr, sizeof(portstr), "%d", port);
	if (getaddrinfo(host, portstr, &hints, &ai) != 0 || ai == NULL) {
		rv = CM_EINVAL;
		goto out;
	}
	if (!allow_remote && !is_loopback(ai->ai_addr)) {
		rv = CM_EPERM;
		goto out;
	}
	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		saved = errno;
		rv    = CM_EUNAVAIL;
		goto out;
	}
	(void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ai->ai_family == AF_INET6) {
		(void) setsockopt(
		    fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	}
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
	    listen(fd, LISTEN_BACKLOG) != 0 ||
	    getsockname(fd, (struct sockaddr *) &ss, &sslen) != 0) {
		saved = errno;
		rv    = CM_EUNAVAIL;
		goto out;
	}
	// MHD's pool threads share this socket: accept must not block.
	(void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	*bound_port = ss.ss_family == AF_INET6
	    ? ntohs(((struct sockaddr_in6 *) &ss)->sin6_port)
	    : ntohs(((struct sockaddr_in *) &ss)->sin_port);
	*fd_out     = fd;
	fd          = -1;
	rv          = CM_OK;
out:
	if (fd >= 0) {
		close(fd);
	}
	if (ai != NULL) {
		freeaddrinfo(ai);
	}
	if (saved != 0) {
		errno = saved;
	}
	return (rv);
}

// ---------------------------------------------------------------------
// libmicrohttpd glue
// ---------------------------------------------------------------------

static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
	char buf[CM_LOG_LINE_MAX / 2];

	(void) cls;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	// MHD's messages end with a newline; our log lines add their own.
	buf[strcspn(buf, "\n")] = '\0';
	cm_warn(NULL, "libmicrohttpd: %s", buf);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	req_state *rs = *con_cls;

	(void) cls;
	(void) conn;
	(void) toe;
	if (rs != NULL) {
		free(rs->body);
		free(rs);
		*con_cls = NULL;
	}
}

static void
add_header(struct MHD_Response *r, const char *name, const char *value)
{
	if (value != NULL && value[0] != '\0') {
		(void) MHD_add_response_header(r, name, value);
	}
}

// send_response() queues res (its body is taken over).
static enum MHD_Result
send_response(struct MHD_Connection *conn, req_state *rs, idp_response *res,
    const char *method, const char *url)
{
	struct MHD_Response *r;
	enum MHD_Result      ret;
	size_t               len = res->body != NULL ? strlen(res->body) : 0;

	if (res->body != NULL) {
		r = MHD_create_response_from_buffer(
		    len, res->body, MHD_RESPMEM_MUST_FREE);
		if (r != NULL) {
			res->body = NULL; // MHD frees it now
		}
	} else {
		r = MHD_create_response_from_buffer(
		    0, NULL, MHD_RESPMEM_PERSISTENT);
	}
	if (r == NULL) {
		idp_response_fini(res);
		return (MHD_NO);
	}
	add_header(r, "Content-Type", res->content_type);
	add_header(r, "x-sb-error-code", res->error_code);
	add_header(r, "Cache-Control", res->cache_control);
	add_header(r, "Allow", res->allow);
	add_header(r, "sb-auth-user-id", res->user_id);
	add_header(r, "sb-auth-session-id", res->session_id);
	add_header(r, "X-Request-Id", rs->rid);
	// Any origin may call a dev IdP (Supabase's Kong allows it too);
	// tokens travel in headers, never cookies, so this leaks nothing.
	add_header(r, "Access-Control-Allow-Origin", "*");
	if (strcmp(method, "OPTIONS") == 0) {
		add_header(
		    r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
		add_header(r, "Access-Control-Allow-Headers", CORS_HEADERS);
		add_header(r, "Access-Control-Max-Age", "600");
	}
	if (res->echo_api_version) {
		add_header(r, "X-Supabase-Api-Version",
		    MHD_lookup_connection_value(
		        conn, MHD_HEADER_KIND, "X-Supabase-Api-Version"));
	}
	ret = MHD_queue_response(conn, (unsigned int) res->status, r);
	MHD_destroy_response(r);
	cm_info(rs->rid, "%s %s %d %lldus", method, url, res->status,
	    (long long) (cm_now_us() - rs->start_us));
	idp_response_fini(res);
	return (ret);
}

static enum MHD_Result
send_too_big(struct MHD_Connection *conn, req_state *rs, const char *method,
    const char *url)
{
	idp_response res;
	char         msg[IDP_MSG_MAX];
	const char  *v;
	int          newf;

	memset(&res, 0, sizeof(res));
	v = MHD_lookup_connection_value(
	    conn, MHD_HEADER_KIND, "X-Supabase-Api-Version");
	newf = v != NULL && strcmp(v, "2024-01-01") == 0;
	snprintf(msg, sizeof(msg), "Request body is larger than %u bytes",
	    IDP_BODY_MAX);
	idp_error(&res, newf, 413, "request_too_large", msg);
	res.echo_api_version = newf;
	return (send_response(conn, rs, &res, method, url));
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	idp_http    *srv = cls;
	req_state   *rs  = *con_cls;
	idp_request  req;
	idp_response res;
	const char  *cl;
	int64_t      clen;

	(void) version;
	if (rs == NULL) {
		rs           = cm_xcalloc(1, sizeof(*rs));
		rs->start_us = cm_now_us();
		// The caller's X-Request-Id (the auth-service sends the
		// gateway's), so its log lines join the rest of the request.
		cl = MHD_lookup_connection_value(
		    conn, MHD_HEADER_KIND, "X-Request-Id");
		if (cm_request_id_ok(cl)) {
			snprintf(rs->rid, sizeof(rs->rid), "%s", cl);
		} else {
			cm_request_id(rs->rid);
		}
		*con_cls = rs;
		cl       = MHD_lookup_connection_value(
		          conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl != NULL &&
		    cm_parse_i64(cl, 0, INT64_MAX, &clen) == CM_OK &&
		    clen > (int64_t) IDP_BODY_MAX) {
			rs->too_big = 1;
			return (send_too_big(conn, rs, method, url));
		}
		return (MHD_YES);
	}
	if (*upload_data_size != 0) {
		size_t n          = *upload_data_size;
		*upload_data_size = 0;
		if (!rs->too_big && rs->len + n <= IDP_BODY_MAX) {
			if (rs->len + n > rs->cap) {
				size_t cap =
				    rs->cap == 0 ? BODY_INITIAL : rs->cap;
				while (cap < rs->len + n) {
					cap *= 2;
				}
				if (cap > IDP_BODY_MAX) {
					cap = IDP_BODY_MAX;
				}
				rs->body = cm_xrealloc(rs->body, cap);
				rs->cap  = cap;
			}
			memcpy(rs->body + rs->len, upload_data, n);
			rs->len += n;
			return (MHD_YES);
		}
		rs->too_big = 1;
		rs->discarded += n;
		// Reading on to answer 413 is polite; reading forever is not.
		return (
		    rs->discarded > IDP_BODY_DISCARD_MAX ? MHD_NO : MHD_YES);
	}
	if (rs->too_big) {
		return (send_too_big(conn, rs, method, url));
	}
	memset(&req, 0, sizeof(req));
	req.method = method;
	req.path   = url;
	req.apikey_header =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "apikey");
	req.apikey_query =
	    MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "apikey");
	req.authorization = MHD_lookup_connection_value(
	    conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	req.api_version = MHD_lookup_connection_value(
	    conn, MHD_HEADER_KIND, "X-Supabase-Api-Version");
	req.grant_type = MHD_lookup_connection_value(
	    conn, MHD_GET_ARGUMENT_KIND, "grant_type");
	req.scope =
	    MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "scope");
	req.body     = rs->body;
	req.body_len = rs->len;
	req.rid      = rs->rid;
	idp_handle(srv->ctx, &req, &res);
	return (send_response(conn, rs, &res, method, url));
}

cm_err
idp_http_start(idp_ctx *ctx, int fd, idp_http **out)
{
	idp_http *srv;

	srv         = cm_xcalloc(1, sizeof(*srv));
	srv->ctx    = ctx;
	srv->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD |
	        MHD_USE_EPOLL | MHD_USE_ERROR_LOG,
	    0, NULL, NULL, on_request, srv,
	    // The logger must come first to catch every message.
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, srv,
	    MHD_OPTION_LISTEN_SOCKET, (MHD_socket) fd,
	    MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) IDP_HTTP_THREADS,
	    MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned int) IDP_HTTP_IDLE_TIMEOUT_S,
	    MHD_OPTION_CONNECTION_LIMIT,
	    (unsigned int) IDP_HTTP_MAX_CONNECTIONS,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT,
	    (unsigned int) IDP_HTTP_PER_IP_CONNECTIONS,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) IDP_HTTP_CONN_MEMORY,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_END);
	if (srv->daemon == NULL) {
		// MHD does not always take the socket on failure.
		if (fcntl(fd, F_GETFD) != -1) {
			close(fd);
		}
		free(srv);
		return (CM_EINTERNAL);
	}
	*out = srv;
	return (CM_OK);
}

void
idp_http_stop(idp_http *srv)
{
	if (srv == NULL) {
		return;
	}
	// Closes the listening socket and joins the pool threads.
	MHD_stop_daemon(srv->daemon);
	free(srv);
}
