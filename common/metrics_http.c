// SPDX-License-Identifier: MIT
//
// The metrics listener: a tiny libmicrohttpd daemon with one internal
// thread that answers GET /metrics with the registry's text exposition
// (see metrics.h). It is separate from any public listener on purpose:
// METRICS_ADDR is meant for an address only the scraper reaches (a pod
// IP scraped by Prometheus, a loopback port), and nothing else is served
// there. Limits are small and explicit: a scrape is one short request.
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xalloc.h"

// Concurrent connections to the metrics port: a scraper or two, and a
// person with curl.
#define MH_CONNECTIONS 16
// Seconds an idle metrics connection is kept.
#define MH_IDLE_TIMEOUT_S 30
// Per-connection memory (request line and headers of a scrape).
#define MH_CONN_MEMORY (16 * 1024)
// Longest METRICS_ADDR host part.
#define MH_HOST_MAX 256
// listen(2) backlog.
#define MH_BACKLOG 16

struct cm_metrics_http {
	struct MHD_Daemon *daemon;
	cm_metrics        *reg;
	int                fd;
	int                port;
};

static enum MHD_Result
send_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
	struct MHD_Response *r;
	enum MHD_Result      ret;

	r = MHD_create_response_from_buffer(
	    strlen(text), (void *) text, MHD_RESPMEM_PERSISTENT);
	if (r == NULL) {
		return (MHD_NO);
	}
	MHD_add_response_header(
	    r, "Content-Type", "text/plain; charset=utf-8");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED) {
		MHD_add_response_header(r, "Allow", "GET, HEAD");
	}
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return (ret);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	static int           first_call_marker;
	cm_metrics_http     *h = cls;
	struct MHD_Response *r;
	enum MHD_Result      ret;
	char                *text = NULL;
	size_t               len  = 0;

	(void) version;
	(void) upload_data;
	// Answer on the second call, once the headers are in: queueing on
	// the first makes MHD close the connection.
	if (*con_cls == NULL) {
		*con_cls = &first_call_marker;
		return (MHD_YES);
	}
	if (*upload_data_size != 0) {
		*upload_data_size = 0; // a body on a scrape: ignored
		return (MHD_YES);
	}
	if (strcmp(url, "/metrics") != 0) {
		return (send_text(conn, MHD_HTTP_NOT_FOUND,
		    "not found: metrics are at /metrics\n"));
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		return (send_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
		    "method not allowed\n"));
	}
	if (cm_metrics_render(h->reg, &text, &len) != CM_OK) {
		return (send_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
		    "metrics too large\n"));
	}
	r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (r == NULL) {
		free(text);
		return (MHD_NO);
	}
	MHD_add_response_header(
	    r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	MHD_add_response_header(r, "Cache-Control", "no-store");
	ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return (ret);
}

// MHD's printf-style log callback (its format strings are its own).
static void mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[512];

	(void) cls;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	buf[strcspn(buf, "\n")] = '\0';
	cm_warn(NULL, "metrics listener: %s", buf);
}

// Splits "host:port", "[v6]:port" or ":port" into host (empty = every
// interface) and port.
static cm_err
split_addr(const char *addr, char *host, size_t hostlen, int *port)
{
	const char *colon;
	int64_t     p;
	size_t      hl;

	if (addr == NULL || addr[0] == '\0') {
		return (CM_EINVAL);
	}
	if (addr[0] == '[') {
		const char *close = strchr(addr, ']');
		if (close == NULL || close[1] != ':') {
			return (CM_EINVAL);
		}
		hl    = (size_t) (close - addr - 1);
		addr  = addr + 1;
		colon = close + 1;
	} else {
		colon = strrchr(addr, ':');
		if (colon == NULL) {
			return (CM_EINVAL);
		}
		hl = (size_t) (colon - addr);
	}
	if (hl >= hostlen || cm_parse_i64(colon + 1, 0, 65535, &p) != CM_OK) {
		return (CM_EINVAL);
	}
	memcpy(host, addr, hl);
	host[hl] = '\0';
	*port    = (int) p;
	return (CM_OK);
}

static cm_err
bind_addr(const char *host, int port, int *fd_out, int *port_out)
{
	struct addrinfo         hints = { 0 };
	struct addrinfo        *res   = NULL;
	struct sockaddr_storage ss;
	socklen_t               sl = sizeof(ss);
	char                    portstr[16];
	int                     fd  = -1;
	int                     one = 1;
	int                     rc;
	cm_err                  rv = CM_OK;

	hints.ai_family   = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags    = AI_PASSIVE;
	snprintf(portstr, sizeof(portstr), "%d", port);
	rc = getaddrinfo(host[0] != '\0' ? host : NULL, portstr, &hints, &res);
	if (rc != 0 || res == NULL) {
		cm_error(
		    NULL, "METRICS_ADDR host %s: %s", host, gai_strerror(rc));
		rv = CM_EINVAL;
		goto out;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rv = CM_EUNAVAIL;
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
	    listen(fd, MH_BACKLOG) != 0) {
		cm_error(NULL,
		    "cannot listen for metrics on %s:%d: %s; choose another "
		    "METRICS_ADDR",
		    host[0] != '\0' ? host : "*", port, strerror(errno));
		rv = CM_EUNAVAIL;
		goto out;
	}
	if (getsockname(fd, (struct sockaddr *) &ss, &sl) == 0) {
		*port_out = ntohs(ss.ss_family == AF_INET6
		        ? ((struct sockaddr_in6 *) &ss)->sin6_port
		        : ((struct sockaddr_in *) &ss)->sin_port);
	}
	*fd_out = fd;
	fd      = -1;
out:
	if (fd >= 0) {
		close(fd);
	}
	if (res != NULL) {
		freeaddrinfo(res);
	}
	return (rv);
}

cm_err
cm_metrics_http_start(cm_metrics *r, const char *addr, const char *port_file,
    cm_metrics_http **out)
{
	cm_metrics_http *h = NULL;
	char             host[MH_HOST_MAX];
	int              port;
	cm_err           rv;

	rv = split_addr(addr, host, sizeof(host), &port);
	if (rv != CM_OK) {
		cm_error(NULL,
		    "METRICS_ADDR \"%s\" is not host:port (e.g. "
		    "127.0.0.1:9464, :9464 for every interface, "
		    "[::1]:9464)",
		    addr != NULL ? addr : "");
		return (rv);
	}
	h       = cm_xcalloc(1, sizeof(*h));
	h->reg  = r;
	h->fd   = -1;
	h->port = port;
	rv      = bind_addr(host, port, &h->fd, &h->port);
	if (rv != CM_OK) {
		goto fail;
	}
	h->daemon = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG,
	    0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
	    NULL, MHD_OPTION_LISTEN_SOCKET, (MHD_socket) h->fd,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int) MH_CONNECTIONS,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) MH_IDLE_TIMEOUT_S,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) MH_CONN_MEMORY,
	    MHD_OPTION_END);
	if (h->daemon == NULL) {
		cm_error(
		    NULL, "cannot start the metrics listener on %s", addr);
		rv = CM_EUNAVAIL;
		goto fail;
	}
	if (port_file != NULL && port_file[0] != '\0') {
		rv = cm_write_port_file(port_file, h->port);
		if (rv != CM_OK) {
			goto fail;
		}
	}
	cm_info(NULL, "metrics on http://%s%s%s:%d/metrics",
	    strchr(host, ':') != NULL ? "[" : "",
	    host[0] != '\0' ? host : "0.0.0.0",
	    strchr(host, ':') != NULL ? "]" : "", h->port);
	*out = h;
	return (CM_OK);
fail:
	cm_metrics_http_stop(h);
	return (rv);
}

int
cm_metrics_http_port(const cm_metrics_http *h)
{
	return (h != NULL ? h->port : 0);
}

void
cm_metrics_http_stop(cm_metrics_http *h)
{
	if (h == NULL) {
		return;
	}
	if (h->daemon != NULL) {
		MHD_stop_daemon(h->daemon);
	}
	// MHD closes a listen socket it was given when it stops.
	if (h->daemon == NULL && h->fd >= 0) {
		close(h->fd);
	}
	free(h);
}

// The listener started from the environment: one per process, whoever
// asks first (a service's main(), else its rpc server) starts it.
static pthread_mutex_t env_mu = PTHREAD_MUTEX_INITIALIZER;
static int             env_done;

cm_err
cm_metrics_serve_env(const char *svc, cm_metrics_http **out)
{
	cm_metrics *r    = cm_metrics_default();
	const char *addr = cm_env_str("METRICS_ADDR", NULL);
	cm_err      rv   = CM_OK;

	*out = NULL;
	pthread_mutex_lock(&env_mu);
	if (env_done) {
		pthread_mutex_unlock(&env_mu);
		return (CM_OK);
	}
	cm_metrics_add_process(r);
	cm_metrics_add_build_info(r, svc, TG_VERSION);
	if (addr != NULL) {
		rv = cm_metrics_http_start(
		    r, addr, cm_env_str("METRICS_PORT_FILE", NULL), out);
	}
	env_done = rv == CM_OK;
	pthread_mutex_unlock(&env_mu);
	return (rv);
}

void
cm_metrics_serve_env_stop(cm_metrics_http *h)
{
	pthread_mutex_lock(&env_mu);
	if (h != NULL) {
		cm_metrics_http_stop(h);
		env_done = 0;
	}
	pthread_mutex_unlock(&env_mu);
}
