// SPDX-License-Identifier: MIT
//
// The gateway's HTTP/1.1 connection layer. It replaced libmicrohttpd
// (issue 10): MHD 0.9.75 accepts bare-LF lines, obs-fold, NUL in header
// values and requests without Host, cannot refuse them because the
// application never sees the raw bytes, has only an idle timeout (a
// client trickling one byte every few seconds keeps a slot forever), and
// drops the answer of a client that half-closed while its request was
// suspended. This layer is small on purpose: HTTP/1.1 with keep-alive and
// pipelining, Content-Length and chunked request bodies, 100-continue;
// no TLS (a TLS terminator goes in front), no HTTP/2, no upgrades.
//
// Threads: cfg.threads event loops, each an epoll set owning its
// connections; all of them wait on the one listening socket
// (EPOLLEXCLUSIVE, so one loop wakes per connect). A connection is only
// ever touched by its loop, except:
//   - gw_conn_resume() (upstream chain, nng threads) puts it on the loop's
//     locked ready queue and wakes the loop with an eventfd;
//   - eviction (another loop's accept, below) calls shutdown() on its
//     socket under the address table's lock, which its loop then sees as
//     an EOF.
//
// A connection's life, one request at a time:
//   HEAD   read until the request head is complete (http1.c checks each
//          byte once); deadline: GATEWAY_HEADER_TIMEOUT_S from the connect
//          (first request) or from the request's first byte (later ones),
//          and GATEWAY_IDLE_TIMEOUT_S while no byte of a request came;
//   BODY   read Content-Length or chunked bytes into the job; deadline:
//          GATEWAY_BODY_TIMEOUT_S from the end of the head, absolute;
//   WAIT   the job is in the upstream chain; nothing is read (pipelined
//          bytes and a half-close wait in the kernel); no deadline here,
//          every upstream step has its own;
//   WRITE  the answer goes out with writev; deadline: the idle timeout
//          plus size / GW_MIN_SEND_RATE;
//   then HEAD again (buffered pipelined bytes are parsed at once), or,
//   when the connection must close (Connection: close, HTTP/1.0, a framing
//   error, a body we refused to read), LINGER: our side is shut for
//   writing and the client's remaining bytes are read and dropped for a
//   moment, so its unread data does not turn our answer into a reset.
// A header deadline that passes gets a best-effort 408; a client that
// half-closes after a complete request still gets its answer (issue 10,
// item 5): EOF only ends the connection once no complete request is left.
//
// Fair share: GATEWAY_MAX_CONNECTIONS in all and GATEWAY_PER_IP_CONNECTIONS
// per client address. When all slots are taken, a connect from an address
// holding fewer connections than the busiest one evicts one of the
// busiest address's connections that is not in a request (still sending
// a head or body, or idle between requests). So a few addresses can fill
// the server only until someone else connects, and the header deadline
// bounds how long anyone holds a slot without sending a request.
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "gateway/gw.h"

// Events taken from epoll per wait.
#define LOOP_EVENTS 256
// How often each loop checks its connections' deadlines, ms. Deadlines
// are seconds; 100 ms of slack is invisible and scanning a loop's
// connections ten times a second is cheap (1000 connections: ~10 us).
#define TICK_MS 100
// First read buffer of a connection; grown by doubling as needed.
#define IN_INITIAL 4096
// Largest read buffer: a whole head plus one read's worth of what follows
// (body bytes are handed to the job as soon as they are read).
#define IN_MAX (GW_H1_HEAD_MAX + 16 * 1024)
// Connections one loop accepts per wakeup before serving its others.
#define ACCEPT_BATCH 64
// After a closing answer: how long, and how many bytes at most, we read
// and drop the client's remaining data before closing (RFC 9112 9.6).
#define LINGER_MS  2000
#define LINGER_MAX (1024 * 1024)
// listen(2) backlog: a connect burst waits here while the loops accept
// (the kernel caps it at net.core.somaxconn, 4096 by default).
#define LISTEN_BACKLOG 4096
// Buckets of the address table (chained); distinct addresses are at most
// GATEWAY_MAX_CONNECTIONS.
#define IP_BUCKETS 1024
// Rate-limited logs: at most one line per this many ms per kind.
#define RATELOG_INTERVAL_MS 10000

// The 100-continue interim answer.
static const char CONTINUE_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

typedef enum conn_state {
	CS_HEAD = 0,
	CS_BODY,
	CS_WAIT,
	CS_WRITE,
	CS_LINGER,
} conn_state;

// One client address and its connections (in accept order).
typedef struct ip_entry {
	struct ip_entry *next; // hash chain
	unsigned char    addr[16];
	int              count;
	gw_conn         *first;
	gw_conn         *last;
} ip_entry;

struct gw_iptab {
	pthread_mutex_t mu;
	ip_entry       *b[IP_BUCKETS];
	int             live; // admitted connections not evicted or closed
};

struct gw_conn {
	gw_loop      *loop;
	int           fd;
	atomic_int    state;   // conn_state; read by evicting loops
	int           evicted; // (ips.mu) already unlinked by an eviction
	ip_entry     *ip;      // (ips.mu)
	gw_conn      *ip_prev; // (ips.mu)
	gw_conn      *ip_next; // (ips.mu)
	gw_conn      *prev;    // the loop's list
	gw_conn      *next;
	gw_conn      *ready;     // (loop->mu) ready queue
	unsigned      events;    // current epoll interest
	int           in_epoll;  // registered with the loop's epoll
	int64_t       deadline;  // monotonic ms, 0 = none
	int64_t       t_connect; // monotonic ms of the accept
	int           requests;  // answers sent on this connection
	int           started;   // a byte of the current request arrived
	char         *in;        // read buffer: unconsumed bytes
	size_t        in_len;
	size_t        in_cap;
	size_t        lingered; // bytes dropped while lingering
	gw_h1_scan    scan;
	gw_h1_head    head;
	int64_t       body_left; // Content-Length bytes still to read
	int           chunked;
	gw_h1_chunked ck;
	gw_job       *job;
	int           head_only;   // a HEAD request: no body in the answer
	int           close_after; // close once this answer is sent
	int           peer_eof;    // the client shut its side (read 0)
	int           peer_gone;   // error/hang-up while the job was away
	char         *out;         // the answer's head
	size_t        out_len;
	const char   *body; // the answer's body (owned by the job)
	size_t        body_len;
	size_t        sent; // bytes of out + body written
};

struct gw_loop {
	gw_server      *srv;
	int             epfd;
	int             evfd;
	pthread_t       thread;
	gw_conn        *conns; // every connection of this loop
	int             nconns;
	int             accept_paused; // out of fds: retry at the next tick
	int64_t         next_tick;
	pthread_mutex_t mu;
	gw_conn        *ready_first; // (mu) resumed connections
	gw_conn        *ready_last;
	int             quit; // (mu)
};

// epoll data tags for the two non-connection descriptors of a loop.
static char listen_tag;
static char wake_tag;

static int conn_advance(gw_conn *c);

// ---------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------

void
gw_ratelog_note(gw_ratelog *rl, const char *detail)
{
	long long now  = cm_mono_ms();
	long long last = atomic_load(&rl->last_ms);

	atomic_fetch_add(&rl->count, 1);
	if (now - last < RATELOG_INTERVAL_MS ||
	    !atomic_compare_exchange_strong(&rl->last_ms, &last, now)) {
		return;
	}
	cm_warn(NULL, "%lld %s in the last %llds (latest: %s)",
	    (long long) atomic_exchange(&rl->count, 0), rl->what,
	    (long long) (last == 0 ? 0 : (now - last) / 1000), detail);
}

int
gw_mem_take(gw_server *srv, size_t n)
{
	long long used = atomic_fetch_add(&srv->mem_used, (long long) n);

	if ((size_t) used + n > srv->cfg.memory_budget) {
		atomic_fetch_sub(&srv->mem_used, (long long) n);
		return (-1);
	}
	return (0);
}

void
gw_mem_give(gw_server *srv, size_t n)
{
	atomic_fetch_sub(&srv->mem_used, (long long) n);
}

static void
set_events(gw_conn *c, unsigned events)
{
	struct epoll_event ev = { 0 };

	if (!c->in_epoll || c->events == events) {
		return;
	}
	ev.events   = events;
	ev.data.ptr = c;
	if (epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0) {
		c->events = events;
	}
}

static void
set_state(gw_conn *c, conn_state st)
{
	atomic_store(&c->state, (int) st);
}

static conn_state
state_of(gw_conn *c)
{
	return ((conn_state) atomic_load(&c->state));
}

// consume() drops the first n bytes of the read buffer.
static void
consume(gw_conn *c, size_t n)
{
	if (n >= c->in_len) {
		c->in_len = 0;
		return;
	}
	memmove(c->in, c->in + n, c->in_len - n);
	c->in_len -= n;
}

// ---------------------------------------------------------------------
// Client addresses: limits and fair share
// ---------------------------------------------------------------------

// addr_key() reduces a peer address to 16 bytes (IPv4 as v4-mapped, so
// the two spellings of one address count together).
static void
addr_key(const struct sockaddr_storage *ss, unsigned char key[16])
{
	memset(key, 0, 16);
	if (ss->ss_family == AF_INET) {
		key[10] = 0xff;
		key[11] = 0xff;
		memcpy(key + 12,
		    &((const struct sockaddr_in *) ss)->sin_addr.s_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		memcpy(
		    key, &((const struct sockaddr_in6 *) ss)->sin6_addr, 16);
	}
}

static unsigned
addr_hash(const unsigned char key[16])
{
	unsigned h = 2166136261u; // FNV-1a

	for (int i = 0; i < 16; i++) {
		h = (h ^ key[i]) * 16777619u;
	}
	return (h % IP_BUCKETS);
}

static ip_entry *
ip_find(gw_iptab *t, const unsigned char key[16], int create)
{
	unsigned  h = addr_hash(key);
	ip_entry *e;

	for (e = t->b[h]; e != NULL; e = e->next) {
		if (memcmp(e->addr, key, 16) == 0) {
			return (e);
		}
	}
	if (!create) {
		return (NULL);
	}
	e = cm_xcalloc(1, sizeof(*e));
	memcpy(e->addr, key, 16);
	e->next = t->b[h];
	t->b[h] = e;
	return (e);
}

static void
ip_drop_if_empty(gw_iptab *t, ip_entry *e)
{
	ip_entry **pp;

	if (e->count > 0) {
		return;
	}
	for (pp = &t->b[addr_hash(e->addr)]; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == e) {
			*pp = e->next;
			free(e);
			return;
		}
	}
}

// ip_unlink() removes c from its address's list (t->mu held).
static void
ip_unlink(gw_iptab *t, gw_conn *c)
{
	ip_entry *e = c->ip;

	if (c->ip_prev != NULL) {
		c->ip_prev->ip_next = c->ip_next;
	} else {
		e->first = c->ip_next;
	}
	if (c->ip_next != NULL) {
		c->ip_next->ip_prev = c->ip_prev;
	} else {
		e->last = c->ip_prev;
	}
	c->ip_prev = c->ip_next = NULL;
	e->count--;
	t->live--;
	ip_drop_if_empty(t, e);
	c->ip = NULL;
}

// evictable() is 1 for a connection that holds a slot without a request
// being served: still sending a head or body, or idle between requests.
static int
evictable(gw_conn *c)
{
	conn_state st = state_of(c);

	return (!c->evicted && (st == CS_HEAD || st == CS_BODY));
}

// pick_victim() finds the oldest evictable connection of the busiest
// address holding at least two more connections than `mine` (so two
// equal holders never take slots from each other). t->mu held.
static gw_conn *
pick_victim(gw_iptab *t, int mine)
{
	gw_conn *best     = NULL;
	int      best_cnt = mine + 1;

	for (int b = 0; b < IP_BUCKETS; b++) {
		for (ip_entry *e = t->b[b]; e != NULL; e = e->next) {
			if (e->count <= best_cnt) {
				continue;
			}
			for (gw_conn *c = e->first; c != NULL;
			     c          = c->ip_next) {
				if (evictable(c)) {
					best     = c;
					best_cnt = e->count;
					break;
				}
			}
		}
	}
	return (best);
}

// admit() takes a slot for c from peer ss, evicting another connection
// when the server is full and fair share allows. 0, or -1 (refused).
static int
admit(gw_server *srv, gw_conn *c, const struct sockaddr_storage *ss,
    const char **why)
{
	gw_iptab     *t = srv->ips;
	unsigned char key[16];
	ip_entry     *e;
	gw_conn      *victim;
	int           rv = 0;

	*why = NULL;
	addr_key(ss, key);
	pthread_mutex_lock(&t->mu);
	e = ip_find(t, key, 1);
	if (e->count >= srv->cfg.per_ip_connections) {
		*why = "per-address connection limit";
		rv   = -1;
	} else if (t->live >= srv->cfg.max_connections) {
		victim = pick_victim(t, e->count);
		if (victim == NULL) {
			*why = "connection limit";
			rv   = -1;
		} else {
			// Its loop sees EOF and closes it; the slot is ours
			// now.
			ip_unlink(t, victim);
			victim->evicted = 1;
			shutdown(victim->fd, SHUT_RDWR);
			*why = "evicted for fair share";
		}
	}
	if (rv == 0) {
		c->ip      = e;
		c->ip_prev = e->last;
		if (e->last != NULL) {
			e->last->ip_next = c;
		} else {
			e->first = c;
		}
		e->last = c;
		e->count++;
		t->live++;
	} else {
		ip_drop_if_empty(t, e);
	}
	pthread_mutex_unlock(&t->mu);
	return (rv);
}

// ---------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------

static void
conn_close(gw_conn *c)
{
	gw_loop  *l = c->loop;
	gw_iptab *t = l->srv->ips;

	CM_ASSERT(state_of(c) != CS_WAIT || c->peer_gone);
	pthread_mutex_lock(&t->mu);
	if (!c->evicted && c->ip != NULL) {
		ip_unlink(t, c);
	}
	pthread_mutex_unlock(&t->mu);
	// The fd is closed only after it left the address table, so an
	// evicting loop never shuts down a reused descriptor.
	close(c->fd);
	if (c->prev != NULL) {
		c->prev->next = c->next;
	} else {
		l->conns = c->next;
	}
	if (c->next != NULL) {
		c->next->prev = c->prev;
	}
	l->nconns--;
	gw_ops_on_connection(l->srv, -1);
	gw_job_free(c->job, 0);
	free(c->in);
	free(c->out);
	free(c);
}

// aborted() closes a connection the client gave up on mid-request.
static int
aborted(gw_conn *c, const char *why)
{
	gw_ratelog_note(&c->loop->srv->log_aborted, why);
	conn_close(c);
	return (-1);
}

// respond() prepares the job's answer for writing.
static void
respond(gw_conn *c)
{
	gw_server *srv = c->loop->srv;
	gw_job    *job = c->job;
	size_t     total;

	if (atomic_load(&srv->stopping)) {
		c->close_after = 1;
	}
	free(c->out);
	c->out  = gw_job_head(job, c->close_after, &c->out_len);
	c->body = job->resp.body;
	c->body_len =
	    c->head_only || job->resp.status == 204 ? 0 : job->resp.body_len;
	c->sent     = 0;
	total       = c->out_len + c->body_len;
	c->deadline = cm_mono_ms() + srv->cfg.idle_timeout_s * 1000LL +
	    (int64_t) (total / GW_MIN_SEND_RATE) * 1000;
	set_state(c, CS_WRITE);
}

// fail() answers a request that could not be parsed, then closes.
static void
fail(gw_conn *c, unsigned status, const char *detail)
{
	gw_job_free(c->job, 0);
	c->job         = gw_job_new_error(c->loop->srv, c, status, detail);
	c->close_after = 1;
	c->in_len      = 0;
	respond(c);
}

// timeout() answers 408 best-effort (one non-blocking send) and closes:
// a client that is this slow gets no more of our time.
static void
timeout(gw_conn *c, const char *detail)
{
	gw_job *job;
	char   *head;
	size_t  hlen;

	gw_ratelog_note(&c->loop->srv->log_timeouts, detail);
	gw_job_free(c->job, 0);
	c->job = NULL;
	job    = gw_job_new_error(c->loop->srv, c, 408, detail);
	head   = gw_job_head(job, 1, &hlen);
	{
		struct iovec  iov[2] = { { head, hlen },
			 { job->resp.body, job->resp.body_len } };
		struct msghdr m      = { 0 };
		m.msg_iov            = iov;
		m.msg_iovlen         = 2;
		(void) sendmsg(c->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	free(head);
	gw_job_free(job, 0);
	conn_close(c);
}

// dispatch() hands a complete request to its job.
static void
dispatch(gw_conn *c)
{
	c->deadline = 0;
	set_state(c, CS_WAIT);
	// Nothing is read while the job is away; errors and hang-ups are
	// still reported.
	set_events(c, 0);
	if (gw_job_dispatch(c->job)) {
		respond(c);
	}
	// else: gw_conn_resume() brings it back (maybe already has).
}

// start_request() takes over a parsed head of head_len bytes.
static int
start_request(gw_conn *c, size_t head_len)
{
	gw_server *srv = c->loop->srv;
	int        has_body;

	c->job         = gw_job_new(srv, c, &c->head);
	c->head_only   = strcmp(c->head.method, "HEAD") == 0;
	c->close_after = c->head.close;
	c->chunked     = c->head.chunked;
	c->body_left = c->head.content_length > 0 ? c->head.content_length : 0;
	has_body     = c->chunked || c->body_left > 0;
	consume(c, head_len);
	c->started = 0;
	memset(&c->scan, 0, sizeof(c->scan));
	if (!has_body) {
		dispatch(c);
		return (0);
	}
	// A body we will not read (declared far over the cap), or one a
	// client would only send after our 100 Continue while its answer is
	// already known: answer now and close.
	if (c->job->refuse_body ||
	    (c->head.expect_continue && c->job->early)) {
		c->close_after = 1;
		c->in_len      = 0;
		respond(c);
		return (0);
	}
	if (c->head.expect_continue &&
	    send(c->fd, CONTINUE_100, sizeof(CONTINUE_100) - 1,
	        MSG_DONTWAIT | MSG_NOSIGNAL) !=
	        (ssize_t) (sizeof(CONTINUE_100) - 1)) {
		// Our send buffer is empty between requests; a short send
		// here means the client is gone.
		return (aborted(c, "100 Continue not sent"));
	}
	memset(&c->ck, 0, sizeof(c->ck));
	c->deadline = cm_mono_ms() + srv->cfg.body_timeout_s * 1000LL;
	set_state(c, CS_BODY);
	return (0);
}

// read_body() hands buffered body bytes to the job.
static void
read_body(gw_conn *c)
{
	while (c->in_len > 0 && state_of(c) == CS_BODY) {
		const char  *data = NULL;
		size_t       n    = 0;
		size_t       used;
		gw_h1_error  err;
		gw_h1_status st = GW_H1_MORE;

		if (c->chunked) {
			st = gw_h1_chunked_step(
			    &c->ck, c->in, c->in_len, &used, &data, &n, &err);
			if (st == GW_H1_ERROR) {
				gw_job_fail(c->job, err.status, err.detail);
				c->close_after = 1;
				c->in_len      = 0;
				respond(c);
				return;
			}
		} else {
			n    = c->in_len < (uint64_t) c->body_left
			       ? c->in_len
			       : (size_t) c->body_left;
			data = c->in;
			used = n;
			c->body_left -= (int64_t) n;
			if (c->body_left == 0) {
				st = GW_H1_DONE;
			}
		}
		if (n > 0 && gw_job_body(c->job, data, n) != 0) {
			// The job's answer says why (413 / 503).
			c->close_after = 1;
			c->in_len      = 0;
			respond(c);
			return;
		}
		consume(c, used);
		if (st == GW_H1_DONE) {
			dispatch(c);
			return;
		}
	}
}

// flush() writes what is left of the answer. 1 when all of it went out
// (the connection moved on), 0 when the socket is full, -1 closed.
static int
flush(gw_conn *c)
{
	gw_server *srv = c->loop->srv;

	while (c->sent < c->out_len + c->body_len) {
		struct iovec  iov[2];
		struct msghdr m = { 0 };
		ssize_t       n;
		int           k = 0;

		if (c->sent < c->out_len) {
			iov[k].iov_base = c->out + c->sent;
			iov[k].iov_len  = c->out_len - c->sent;
			k++;
			if (c->body_len > 0) {
				iov[k].iov_base = (void *) c->body;
				iov[k].iov_len  = c->body_len;
				k++;
			}
		} else {
			size_t off      = c->sent - c->out_len;
			iov[k].iov_base = (void *) (c->body + off);
			iov[k].iov_len  = c->body_len - off;
			k++;
		}
		m.msg_iov    = iov;
		m.msg_iovlen = (size_t) k;
		n            = sendmsg(c->fd, &m, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				set_events(c, EPOLLOUT);
				return (0);
			}
			return (aborted(c, "connection lost while answering"));
		}
		c->sent += (size_t) n;
	}
	// Answer sent.
	c->requests++;
	gw_job_free(c->job, 1);
	c->job = NULL;
	free(c->out);
	c->out      = NULL;
	c->body     = NULL;
	c->body_len = 0;
	if (c->close_after || atomic_load(&srv->stopping)) {
		shutdown(c->fd, SHUT_WR);
		if (c->peer_eof) {
			conn_close(c);
			return (-1);
		}
		c->in_len   = 0;
		c->lingered = 0;
		c->deadline = cm_mono_ms() + LINGER_MS;
		set_state(c, CS_LINGER);
		set_events(c, EPOLLIN);
		return (1);
	}
	set_state(c, CS_HEAD);
	if (c->in_len == 0) {
		free(c->in);
		c->in       = NULL;
		c->in_cap   = 0;
		c->deadline = cm_mono_ms() + srv->cfg.idle_timeout_s * 1000LL;
	}
	set_events(c, EPOLLIN);
	return (1);
}

// conn_advance() moves the connection on as far as the bytes it has
// allow. 0 when it waits for something, -1 when it was closed.
static int
conn_advance(gw_conn *c)
{
	gw_server *srv = c->loop->srv;

	for (;;) {
		size_t       head_len = 0;
		gw_h1_error  err;
		gw_h1_status st;
		int          rv;

		switch (state_of(c)) {
		case CS_HEAD:
			if (c->in_len == 0) {
				return (0);
			}
			if (!c->started) {
				// The head deadline runs from the connect for
				// the first request, from the request's first
				// byte for later ones; trickling does not move
				// it.
				c->started = 1;
				c->deadline =
				    (c->requests == 0 ? c->t_connect
				                      : cm_mono_ms()) +
				    srv->cfg.header_timeout_s * 1000LL;
			}
			st = gw_h1_parse_head(c->in, c->in_len, &c->scan,
			    &c->head, &head_len, &err);
			if (st == GW_H1_MORE) {
				return (0);
			}
			if (st == GW_H1_ERROR) {
				fail(c, err.status, err.detail);
				continue;
			}
			if (start_request(c, head_len) != 0) {
				return (-1);
			}
			continue;
		case CS_BODY:
			read_body(c);
			if (state_of(c) == CS_BODY) {
				return (0);
			}
			continue;
		case CS_WRITE:
			rv = flush(c);
			if (rv != 1) {
				return (rv);
			}
			continue;
		case CS_LINGER:
			c->in_len = 0;
			return (0);
		case CS_WAIT:
		default:
			return (0);
		}
	}
}

// conn_read() reads what the socket has and acts on it.
static int
conn_read(gw_conn *c)
{
	ssize_t n;

	if (c->in_len == c->in_cap) {
		size_t cap = c->in_cap != 0 ? c->in_cap * 2 : IN_INITIAL;
		if (cap > IN_MAX) {
			cap = IN_MAX;
		}
		if (cap == c->in_len) {
			// Cannot happen: heads stop at GW_H1_HEAD_MAX and
			// body bytes are consumed as they come.
			return (aborted(c, "read buffer full"));
		}
		c->in     = cm_xrealloc(c->in, cap);
		c->in_cap = cap;
	}
	n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == EINTR) {
			return (0);
		}
		if (state_of(c) == CS_LINGER ||
		    (state_of(c) == CS_HEAD && c->in_len == 0)) {
			conn_close(c);
			return (-1);
		}
		return (aborted(c, strerror(errno)));
	}
	if (state_of(c) == CS_LINGER) {
		c->lingered += (size_t) n;
		if (n == 0 || c->lingered > LINGER_MAX) {
			conn_close(c);
			return (-1);
		}
		return (0);
	}
	if (n == 0) {
		// The client shut its side. Requests already complete in the
		// buffer are still served (half-close); only when the
		// connection needs more bytes than it will ever get is it
		// closed.
		c->peer_eof = 1;
		if (conn_advance(c) != 0) {
			return (-1);
		}
		switch (state_of(c)) {
		case CS_HEAD:
			if (c->in_len == 0) {
				conn_close(c);
				return (-1);
			}
			return (aborted(c, "request head cut short"));
		case CS_BODY:
			return (aborted(c, "request body cut short"));
		case CS_WRITE:
		case CS_WAIT:
		default:
			// Not reading now; nothing more will be read.
			if (state_of(c) == CS_WRITE && c->events != EPOLLOUT) {
				set_events(c, EPOLLOUT);
			}
			return (0);
		}
	}
	c->in_len += (size_t) n;
	return (conn_advance(c));
}

static void
conn_event(gw_conn *c, unsigned events)
{
	conn_state st = state_of(c);

	if (st == CS_WAIT) {
		if (events & (EPOLLERR | EPOLLHUP)) {
			// Gone while its job is away: drop it from epoll (a
			// hang-up is reported on every wait otherwise) and
			// close when the job comes back.
			c->peer_gone = 1;
			epoll_ctl(c->loop->epfd, EPOLL_CTL_DEL, c->fd, NULL);
			c->in_epoll = 0;
		}
		return;
	}
	if (st == CS_WRITE) {
		if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
			conn_advance(c);
		}
		return;
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
		conn_read(c);
	}
}

static void
conn_new(gw_loop *l, int fd, const struct sockaddr_storage *ss)
{
	gw_server         *srv = l->srv;
	gw_conn           *c   = cm_xcalloc(1, sizeof(*c));
	struct epoll_event ev  = { 0 };
	const char        *why = NULL;
	int                one = 1;

	c->loop = l;
	c->fd   = fd;
	atomic_init(&c->state, CS_HEAD);
	if (atomic_load(&srv->stopping) || admit(srv, c, ss, &why) != 0) {
		gw_ratelog_note(
		    &srv->log_refused, why != NULL ? why : "shutting down");
		close(fd);
		free(c);
		return;
	}
	if (why != NULL) {
		gw_ratelog_note(&srv->log_refused, why);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->t_connect = cm_mono_ms();
	// The first request's head must be complete within the header
	// timeout of the connect; an idle timeout shorter than that closes
	// a connection that never sends at all sooner.
	c->deadline = cm_mono_ms() +
	    (srv->cfg.idle_timeout_s < srv->cfg.header_timeout_s
	            ? srv->cfg.idle_timeout_s
	            : srv->cfg.header_timeout_s) *
	        1000LL;
	c->next = l->conns;
	if (l->conns != NULL) {
		l->conns->prev = c;
	}
	l->conns = c;
	l->nconns++;
	gw_ops_on_connection(srv, 1);
	ev.events   = EPOLLIN;
	ev.data.ptr = c;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		conn_close(c);
		return;
	}
	c->in_epoll = 1;
	c->events   = EPOLLIN;
}

// ---------------------------------------------------------------------
// Loops
// ---------------------------------------------------------------------

static void
accept_some(gw_loop *l)
{
	gw_server *srv = l->srv;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t               len = sizeof(ss);
		int                     fd;

		fd = accept4(srv->lsock, (struct sockaddr *) &ss, &len,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM) {
				// Out of descriptors: stop watching the
				// listener until the next tick instead of
				// spinning on it.
				gw_ratelog_note(
				    &srv->log_refused, strerror(errno));
				epoll_ctl(
				    l->epfd, EPOLL_CTL_DEL, srv->lsock, NULL);
				l->accept_paused = 1;
			}
			return;
		}
		conn_new(l, fd, &ss);
	}
}

static void
watch_listener(gw_loop *l)
{
	struct epoll_event ev = { 0 };

	ev.events   = EPOLLIN | EPOLLEXCLUSIVE;
	ev.data.ptr = &listen_tag;
	epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->srv->lsock, &ev);
}

// on_wake() takes the resumed connections and sends their answers.
static int
on_wake(gw_loop *l)
{
	uint64_t v;
	gw_conn *c;
	int      quit;

	if (read(l->evfd, &v, sizeof(v)) < 0) {
		// EAGAIN: another wake already drained it.
	}
	pthread_mutex_lock(&l->mu);
	c              = l->ready_first;
	l->ready_first = l->ready_last = NULL;
	quit                           = l->quit;
	pthread_mutex_unlock(&l->mu);
	while (c != NULL) {
		gw_conn *next = c->ready;
		c->ready      = NULL;
		if (c->peer_gone) {
			gw_ratelog_note(&l->srv->log_aborted,
			    "client gone before its answer");
			conn_close(c);
		} else {
			respond(c);
			conn_advance(c);
		}
		c = next;
	}
	return (quit);
}

// sweep() enforces the deadlines of the loop's connections.
static void
sweep(gw_loop *l, int64_t now)
{
	gw_conn *c = l->conns;

	while (c != NULL) {
		gw_conn *next = c->next;

		if (c->deadline != 0 && now >= c->deadline) {
			switch (state_of(c)) {
			case CS_HEAD:
				if (c->in_len == 0 && !c->started) {
					conn_close(c); // idle: just close
				} else {
					timeout(c, "Request header timeout");
				}
				break;
			case CS_BODY:
				timeout(c, "Request body timeout");
				break;
			case CS_WRITE:
				gw_ratelog_note(&l->srv->log_timeouts,
				    "client too slow to read its answer");
				conn_close(c);
				break;
			case CS_LINGER:
				conn_close(c);
				break;
			case CS_WAIT:
			default:
				break;
			}
		}
		c = next;
	}
}

static void *
loop_main(void *arg)
{
	gw_loop           *l = arg;
	struct epoll_event evs[LOOP_EVENTS];

	l->next_tick = cm_mono_ms() + TICK_MS;
	for (;;) {
		int64_t now = cm_mono_ms();
		int     wait_ms;
		int     n;

		wait_ms = l->nconns > 0 || l->accept_paused
		    ? (int) (l->next_tick > now ? l->next_tick - now : 0)
		    : -1;
		n       = epoll_wait(l->epfd, evs, LOOP_EVENTS, wait_ms);
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == &listen_tag) {
				accept_some(l);
			} else if (p == &wake_tag) {
				if (on_wake(l)) {
					return (NULL);
				}
			} else {
				conn_event(p, evs[i].events);
			}
		}
		now = cm_mono_ms();
		if (now >= l->next_tick) {
			sweep(l, now);
			if (l->accept_paused &&
			    !atomic_load(&l->srv->stopping)) {
				l->accept_paused = 0;
				watch_listener(l);
			}
			l->next_tick = now + TICK_MS;
		}
	}
}

void
gw_conn_resume(gw_conn *c)
{
	gw_loop *l     = c->loop;
	uint64_t one   = 1;
	int      first = 0;

	pthread_mutex_lock(&l->mu);
	c->ready = NULL;
	if (l->ready_last != NULL) {
		l->ready_last->ready = c;
	} else {
		l->ready_first = c;
		first          = 1;
	}
	l->ready_last = c;
	pthread_mutex_unlock(&l->mu);
	// Only the connection that makes the queue non-empty wakes the
	// loop: it takes the whole queue (on_wake()), and until it does the
	// wake is pending. A batch of replies resumes many connections at
	// once: one write, not one each.
	if (first && write(l->evfd, &one, sizeof(one)) < 0) {
		// Only EAGAIN (counter full): the loop is awake anyway.
	}
}

static void
loop_free(gw_loop *l)
{
	if (l == NULL) {
		return;
	}
	while (l->conns != NULL) {
		// Every job came back before the loops stop (conn_close
		// asserts it).
		conn_close(l->conns);
	}
	if (l->epfd >= 0) {
		close(l->epfd);
	}
	if (l->evfd >= 0) {
		close(l->evfd);
	}
	pthread_mutex_destroy(&l->mu);
	free(l);
}

static gw_loop *
loop_new(gw_server *srv)
{
	gw_loop           *l  = cm_xcalloc(1, sizeof(*l));
	struct epoll_event ev = { 0 };

	l->srv  = srv;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pthread_mutex_init(&l->mu, NULL);
	if (l->epfd < 0 || l->evfd < 0) {
		loop_free(l);
		return (NULL);
	}
	ev.events   = EPOLLIN;
	ev.data.ptr = &wake_tag;
	epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->evfd, &ev);
	watch_listener(l);
	return (l);
}

// ---------------------------------------------------------------------
// Start / stop
// ---------------------------------------------------------------------

static cm_err
bind_listen(const char *host, int port, int *fd_out)
{
	struct addrinfo  hints = { 0 };
	struct addrinfo *res   = NULL;
	char             portstr[16];
	int              fd  = -1;
	int              one = 1;
	int              rc;
	cm_err           rv = CM_OK;

	hints.ai_family   = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags    = AI_PASSIVE;
	snprintf(portstr, sizeof(portstr), "%d", port);
	rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0 || res == NULL) {
		cm_error(NULL, "GATEWAY_HOST %s: %s", host, gai_strerror(rc));
		rv = CM_EINVAL;
		goto out;
	}
	// Non-blocking: several loops wait on this socket and may wake for
	// one connect; the losers must not block in accept4.
	fd = socket(
	    res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		cm_error(NULL, "socket: %s", strerror(errno));
		rv = CM_EUNAVAIL;
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
		if (errno == EADDRINUSE) {
			cm_error(NULL,
			    "port %d on %s is already in use; choose another "
			    "with GATEWAY_PORT (or --port), 0 picks a free "
			    "one",
			    port, host);
		} else {
			cm_error(NULL,
			    "cannot bind %s:%d: %s; check GATEWAY_HOST (or "
			    "--host) and GATEWAY_PORT (or --port)",
			    host, port, strerror(errno));
		}
		rv = CM_EUNAVAIL;
		goto out;
	}
	if (listen(fd, LISTEN_BACKLOG) != 0) {
		cm_error(NULL, "cannot listen on %s:%d: %s", host, port,
		    strerror(errno));
		rv = CM_EUNAVAIL;
		goto out;
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

static void
server_free(gw_server *srv)
{
	for (int i = 0; i < srv->nloops; i++) {
		loop_free(srv->loops[i]);
	}
	free(srv->loops);
	if (srv->lsock >= 0) {
		close(srv->lsock);
	}
	if (srv->ips != NULL) {
		for (int b = 0; b < IP_BUCKETS; b++) {
			while (srv->ips->b[b] != NULL) {
				ip_entry *e    = srv->ips->b[b];
				srv->ips->b[b] = e->next;
				free(e);
			}
		}
		pthread_mutex_destroy(&srv->ips->mu);
		free(srv->ips);
	}
	gw_ops_stop(srv);
	cm_rpc_client_close(srv->auth);
	cm_rpc_client_close(srv->threads);
	gw_authcache_free(srv->acache);
	free(srv);
}

cm_err
gw_server_start(const gw_config *cfg, gw_server **out)
{
	gw_server         *srv     = cm_xcalloc(1, sizeof(*srv));
	cm_rpc_client_opts topts   = { 0 };
	int                started = 0;
	cm_err             rv;

	srv->cfg   = *cfg;
	srv->lsock = -1;
	atomic_init(&srv->active, 0);
	atomic_init(&srv->suspended, 0);
	atomic_init(&srv->stopping, 0);
	atomic_init(&srv->mem_used, 0);
	srv->log_aborted.what  = "connections aborted by clients";
	srv->log_timeouts.what = "connections closed at a deadline";
	srv->log_refused.what  = "connections refused or evicted";
	srv->ips               = cm_xcalloc(1, sizeof(*srv->ips));
	pthread_mutex_init(&srv->ips->mu, NULL);

	rv = cm_rpc_client_open(cfg->auth_url, &srv->auth);
	if (rv != CM_OK) {
		cm_error(NULL, "AUTH_SERVICE_URL %s: %s", cfg->auth_url,
		    cm_strerror(rv));
		rv = CM_EINVAL;
		goto out;
	}
	topts.batch_window = cfg->batch_window;
	rv = cm_rpc_client_open_opts(cfg->threads_url, &topts, &srv->threads);
	if (rv != CM_OK) {
		cm_error(NULL, "THREAD_SERVICE_URL %s: %s", cfg->threads_url,
		    cm_strerror(rv));
		rv = CM_EINVAL;
		goto out;
	}
	if (cfg->auth_cache_ttl_ms > 0) {
		rv = gw_authcache_new(
		    (size_t) cfg->auth_cache_max, &srv->acache);
		if (rv != CM_OK) {
			cm_error(NULL, "identity cache: SHA-256 unavailable");
			goto out;
		}
	}
	rv = gw_ops_start(srv);
	if (rv != CM_OK) {
		goto out;
	}
	rv = bind_listen(cfg->host, cfg->port, &srv->lsock);
	if (rv != CM_OK) {
		goto out;
	}
	{
		struct sockaddr_storage ss;
		socklen_t               len = sizeof(ss);
		if (getsockname(srv->lsock, (struct sockaddr *) &ss, &len) ==
		    0) {
			srv->port = ntohs(ss.ss_family == AF_INET6
			        ? ((struct sockaddr_in6 *) &ss)->sin6_port
			        : ((struct sockaddr_in *) &ss)->sin_port);
		}
	}
	srv->loops = cm_xcalloc((size_t) cfg->threads, sizeof(*srv->loops));
	for (int i = 0; i < cfg->threads; i++) {
		srv->loops[i] = loop_new(srv);
		if (srv->loops[i] == NULL) {
			cm_error(NULL, "cannot create an event loop: %s",
			    strerror(errno));
			rv = CM_EUNAVAIL;
			goto out;
		}
		srv->nloops++;
	}
	for (started = 0; started < srv->nloops; started++) {
		if (pthread_create(&srv->loops[started]->thread, NULL,
		        loop_main, srv->loops[started]) != 0) {
			cm_error(NULL, "cannot start an event loop thread");
			rv = CM_EUNAVAIL;
			goto out;
		}
	}
	if (cfg->port_file != NULL && cfg->port_file[0] != '\0') {
		rv = cm_write_port_file(cfg->port_file, srv->port);
		if (rv != CM_OK) {
			goto out;
		}
	}
	cm_info(NULL, "listening on http://%s:%d (auth %s, threads %s)",
	    cfg->host, srv->port, cfg->auth_url, cfg->threads_url);
	*out = srv;
	return (CM_OK);
out:
	for (int i = 0; i < started; i++) {
		gw_loop *l   = srv->loops[i];
		uint64_t one = 1;
		pthread_mutex_lock(&l->mu);
		l->quit = 1;
		pthread_mutex_unlock(&l->mu);
		if (write(l->evfd, &one, sizeof(one)) < 0) {
			// cannot happen on a fresh eventfd
		}
		pthread_join(l->thread, NULL);
	}
	server_free(srv);
	return (rv);
}

int
gw_server_port(const gw_server *s)
{
	return (s->port);
}

// wait_for() polls *counter until it is 0 or ms pass; returns its value.
static int
wait_for(atomic_int *counter, int ms)
{
	int64_t until = cm_mono_ms() + ms;

	while (atomic_load(counter) > 0 && cm_mono_ms() < until) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return (atomic_load(counter));
}

void
gw_server_stop(gw_server *s)
{
	int left;

	if (s == NULL) {
		return;
	}
	// 1. Stop accepting: the loops stop watching the listener and new
	// connects are refused (shutdown of a listening socket ends its
	// listen; the descriptor stays valid for a loop still in accept4).
	// Requests already in the chain go on; later ones on open
	// connections get 503 + Retry-After and Connection: close.
	atomic_store(&s->stopping, 1);
	for (int i = 0; i < s->nloops; i++) {
		epoll_ctl(s->loops[i]->epfd, EPOLL_CTL_DEL, s->lsock, NULL);
	}
	shutdown(s->lsock, SHUT_RDWR);
	// 2. Let requests in flight finish.
	left = wait_for(&s->active, GW_SHUTDOWN_GRACE_MS);
	if (left > 0) {
		cm_warn(NULL, "%d request(s) still running after %d ms", left,
		    GW_SHUTDOWN_GRACE_MS);
	}
	// 3. Closing the clients completes every call in flight (503), and
	// each completion hands its connection back to its loop. Auth first:
	// once its close returns no on_auth runs, so nothing starts a call
	// on the thread-service client while that one closes.
	gw_ops_stop_prober(s); // it calls Health through these clients
	cm_rpc_client_close(s->auth);
	cm_rpc_client_close(s->threads);
	s->auth    = NULL;
	s->threads = NULL;
	left       = wait_for(&s->suspended, GW_SHUTDOWN_GRACE_MS);
	CM_ASSERT(left == 0);
	// 4. Give the loops a moment to send those answers, then stop them.
	wait_for(&s->active, 1000);
	for (int i = 0; i < s->nloops; i++) {
		gw_loop *l   = s->loops[i];
		uint64_t one = 1;
		pthread_mutex_lock(&l->mu);
		l->quit = 1;
		pthread_mutex_unlock(&l->mu);
		if (write(l->evfd, &one, sizeof(one)) < 0) {
			// EAGAIN only: it is awake
		}
		pthread_join(l->thread, NULL);
	}
	server_free(s);
}
