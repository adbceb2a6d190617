// SPDX-License-Identifier: MIT
//
// RPC client over a replica set (contract in rpc.h).
//
// Why one REQ socket per replica, with our own choice of replica. nng's
// REQ socket hands each request to the next pipe that finished its last
// send: round-robin by send completion, blind to the replies a pipe still
// owes. One replica slowed by 5 ms cut a shared socket's throughput 8x
// (c-stack-measurements.md section 1), and a stopped (SIGSTOP) replica is
// worse: the kernel keeps accepting bytes into its socket buffer, so its
// pipe stays "ready" and gets every other request until each one's
// deadline passes (measured with the real services: README, "Replica
// sets"). So the client keeps one REQ socket - one dialer, one pipe - per
// replica, and picks the replica of each call itself, under one mutex:
//
//   - by default the replica with the fewest calls in flight among the
//     healthy ones (ties rotate): a slow replica accumulates calls in
//     flight and so gets fewer new ones at once, with no timer;
//   - with an affinity key (the auth-service: a digest of the token),
//     rendezvous hashing over the healthy replicas - the highest
//     mix(key, replica) wins, so a token keeps hitting one replica's cache
//     and a replica leaving moves only its own keys - bounded by load: a
//     replica far above the average in flight yields to the next score;
//   - healthy = connected, not stalled, not recently answering
//     "unavailable". Others are used only when no healthy one is left.
//
// A call is still one nng_ctx_send and one nng_ctx_recv on one aio, run in
// nng's callbacks (no extra thread hop, no extra aio or timer per call;
// issue 9 wants fewer). What is not per call runs on the client's own
// threads: the watchdog (every stall/5 ms) probes a replica that has calls
// in flight but has answered nothing for stall_ms, marks it stalled when
// the probe is not answered within stall_ms either, and then cancels its
// re-sendable calls so they go elsewhere; it also closes replicas that
// left once their calls are done. The resolver re-resolves host names.
//
// Re-sending (cm_rpc_call_opts.idempotent): a call that surely did not
// reach a replica (its send never completed: no connection) is re-sent to
// another one whatever it is. After it may have reached one - the
// connection dropped (kill -9), the replica stalled, the replica answered
// CM_EUNAVAIL - only idempotent calls are re-sent; the others fail with
// CM_EUNAVAIL. Every attempt shares the call's one deadline, which is
// also in the envelope: a stopped replica that wakes up after it does not
// run the request. At most RPC_MAX_ATTEMPTS attempts, each on a replica
// not tried before when there is one, else on a connected one tried
// before (not the one that just failed): a read bounced off a slow replica
// whose next replica then dies goes back to the slow one rather than fail.
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/xalloc.h"
#include "proto/rpc.pb-c.h"

typedef Threadgate__Rpc__V1__Request  rpc_request;
typedef Threadgate__Rpc__V1__Response rpc_response;

// How long a send waits for a connection when its replica has none (down,
// not started yet): long enough to ride out a start-up or a reconnect
// (backoff starts at 100 ms), short enough that a dead set becomes a
// prompt 503. Only used when no connected replica is left.
#define RPC_UNCONNECTED_WAIT_MS 1000
// Reconnect backoff bounds of every replica's dialer.
#define RPC_RECONNECT_MIN_MS 100
#define RPC_RECONNECT_MAX_MS 2000
// Most attempts of one call (each on another replica): enough to step
// over one dead and one stalled replica; more would only multiply load
// when the whole set is in trouble.
#define RPC_MAX_ATTEMPTS 3
// A re-send needs at least this much of the deadline left, ms.
#define RPC_RETRY_MIN_MS 2
// An op keeps its packing buffers between calls up to this size; larger
// ones (a big state update) are freed after the call.
#define RPC_OP_BUF_KEEP (64u * 1024u)
// Affinity load bound: the rendezvous choice is skipped while it has more
// than twice the average calls in flight plus this many.
#define RPC_AFFINITY_SLACK 8
// The method of liveness probes. Any Response proves the replica's process
// runs its rpc loop (servers that do not know the method answer
// "unknown method" from the rpc layer itself, without a handler).
#define RPC_PROBE_METHOD "Health"
// While the set is empty (names not resolved yet), resolve this often.
#define RPC_RESOLVE_EMPTY_MS 1000
// The most addresses taken from one name.
#define RPC_ADDRS_PER_NAME CM_RPC_MAX_REPLICAS

typedef struct rpc_replica rpc_replica;
typedef struct rpc_slot    rpc_slot;
typedef struct rpc_op      rpc_op;

// The outcome of a call as the internal completion sees it.
typedef struct rpc_result {
	cm_err         st;
	const char    *detail;
	const uint8_t *payload; // valid during the completion only
	size_t         len;
	int            answered; // a Response came from the replica
} rpc_result;

typedef void (*raw_done_fn)(void *arg, const rpc_result *res);

// Why the watchdog cancelled an attempt.
enum { ABANDON_NONE = 0, ABANDON_STALL, ABANDON_PIPE };

// One call, from start to done, across its attempts. Pooled per client.
struct rpc_op {
	cm_rpc_client *c;
	uint8_t       *buf; // the packed envelope, len bytes
	size_t         len;
	size_t         cap;
	uint8_t       *pbuf; // the packed payload of typed calls
	size_t         pcap;
	int64_t        deadline;      // monotonic ms
	int64_t        deadline_unix; // the envelope's, Unix ms
	int            idempotent;
	int            batch; // may wait for a batch (cm_rpc_call_opts)
	uint64_t       affinity;
	uint64_t       pin;                     // probes: only this replica id
	uint64_t       tried[RPC_MAX_ATTEMPTS]; // replica of each attempt
	int            ntried;                  // attempts so far
	int            abandon;                 // ABANDON_*, under c->mu
	// Why flush_locked() could not place it, and the words for it.
	cm_err      qerr;
	const char *qdetail;
	// Completion: typed (desc + typed_done) or raw.
	const ProtobufCMessageDescriptor *desc;
	cm_rpc_done_fn                    typed_done;
	raw_done_fn                       raw_done;
	void                             *arg;
	char                              method[CM_RPC_METHOD_MAX + 1];
	char                              rid[CM_RID_MAX + 1];
	// The pool's link; while the call is live, the client's batch queue
	// and then the chain of calls of its slot.
	rpc_op *next;
};

// One nng context of a replica's socket and its aio: SEND -> RECV.
struct rpc_slot {
	rpc_replica *r;
	nng_ctx      ctx;
	nng_aio     *aio;
	// Under c->mu (the callback reads its own recv without it):
	rpc_op   *op;       // the call on it (the first of a batch) or NULL
	int       nops;     // calls on it: 1, or a batch chained by op->next
	int       batch;    // its calls are short ones: r->busy counts it
	int64_t   deadline; // the latest of its calls', monotonic ms
	int       recv;     // 1 once the receive is posted
	int64_t   t0;    // when the send was booked, then the receive posted
	unsigned  epoch; // r->epoch when the send was booked
	rpc_slot *next;  // free list
	uint8_t  *bbuf;  // a batch's packed BatchRequest
	size_t    bcap;
};

// One server of the set: its own socket, dialer and slots.
struct rpc_replica {
	cm_rpc_client *c;
	char           url[CM_RPC_URL_MAX];
	uint64_t       id;      // unique in the client, never reused
	uint64_t       hash;    // of url: the rendezvous identity
	uint32_t       entries; // bit i: list entry i names it
	nng_socket     sock;
	nng_dialer     dialer;
	atomic_int     npipes; // connections up (0 or 1)
	atomic_uint    epoch;  // connections lost so far
	// Under c->mu:
	int inflight; // calls at it
	// Messages of short calls (cm_rpc_call_opts.batch) at it: what the
	// batch window counts. A long call out does not make a point read
	// wait for it.
	int        busy;
	int        stalled;
	int        serving; // last Health answer was not NOT_SERVING
	int        probing;
	int64_t    probe_t0;
	int64_t    last_progress; // last answer, or start of a busy spell
	int64_t    eject_until;   // answered CM_EUNAVAIL: avoid until
	int        removed;       // left the set; closed once idle
	rpc_slot  *free;
	rpc_slot **slots;
	size_t     nslots;
	size_t     capslots;
	uint64_t   sent;
	uint64_t   answered;
	uint64_t   resent;
	uint64_t   batched;
};

// One entry of the URL list.
typedef struct rpc_entry {
	char url[CM_RPC_URL_MAX]; // as written, trimmed
	char scheme[8];           // "tcp", "tcp4", "tcp6" (names only)
	char host[CM_RPC_URL_MAX];
	char port[8];
	int  family; // AF_UNSPEC, AF_INET, AF_INET6
	int  name;   // 1: host is a name to resolve
} rpc_entry;

struct cm_rpc_client {
	cm_rpc_client_opts opts;
	int                tick_ms;
	rpc_entry         *entries;
	int                nentries;
	int                names; // entries that are names
	pthread_mutex_t    mu;
	pthread_cond_t     cv; // wakes the watchdog and resolver on close
	pthread_t          watch;
	pthread_t          resolver;
	int                watch_started;
	int                resolver_started;
	atomic_int         sending; // sends between lock and nng_ctx_send
	// Under mu:
	int          closing;
	rpc_replica *reps[CM_RPC_MAX_REPLICAS];
	int          nreps;
	uint64_t     next_id;
	unsigned     rr; // rotating start for least-loaded ties
	rpc_op      *ops;
	// Calls waiting for a replica with a free window (batching): FIFO.
	rpc_op *qhead;
	rpc_op *qtail;
};

// ---------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------

// A 64-bit finalizer (the splitmix64 output function): every input bit
// affects every output bit.
static uint64_t
mix64(uint64_t z)
{
	z ^= z >> 30;
	z *= 0xbf58476d1ce4e5b9ULL;
	z ^= z >> 27;
	z *= 0x94d049bb133111ebULL;
	z ^= z >> 31;
	return (z);
}

uint64_t
cm_rpc_key(uint64_t seed, const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t             h = mix64(seed ^ 0x9e3779b97f4a7c15ULL ^ len);
	uint64_t             w;

	// Words are read little-endian so every host computes the same key.
	while (len >= 8) {
		memcpy(&w, p, 8);
		h = mix64(h ^ le64toh(w));
		p += 8;
		len -= 8;
	}
	if (len > 0) {
		w = 0;
		memcpy(&w, p, len);
		h = mix64(h ^ le64toh(w) ^ ((uint64_t) len << 56));
	}
	return (h != 0 ? h : 1);
}

// ---------------------------------------------------------------------
// The URL list
// ---------------------------------------------------------------------

static int
is_space(char ch)
{
	return (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r');
}

// Splits a tcp URL's "host:port" (host may be "[v6]"); CM_EINVAL when
// malformed. Leaves e->name 0 for a URL with nng's "local;remote" form,
// which is dialled as written.
static cm_err
parse_tcp(rpc_entry *e, const char *rest)
{
	const char *colon;
	const char *h    = rest;
	size_t      hlen = 0;
	int64_t     port;
	char        tmp[sizeof(struct in6_addr)];

	if (strchr(rest, ';') != NULL) {
		return (CM_OK);
	}
	if (rest[0] == '[') {
		const char *end = strchr(rest, ']');

		if (end == NULL || end[1] != ':') {
			return (CM_EINVAL);
		}
		h     = rest + 1;
		hlen  = (size_t) (end - h);
		colon = end + 1;
	} else {
		colon = strrchr(rest, ':');
		if (colon == NULL) {
			return (CM_EINVAL);
		}
		hlen = (size_t) (colon - rest);
	}
	if (hlen == 0 || hlen >= sizeof(e->host) ||
	    strlen(colon + 1) >= sizeof(e->port) ||
	    cm_parse_i64(colon + 1, 1, 65535, &port) != CM_OK) {
		return (CM_EINVAL);
	}
	memcpy(e->host, h, hlen);
	e->host[hlen] = '\0';
	snprintf(e->port, sizeof(e->port), "%s", colon + 1);
	e->name = !(inet_pton(AF_INET, e->host, tmp) == 1 ||
	    inet_pton(AF_INET6, e->host, tmp) == 1);
	return (CM_OK);
}

// Parses one trimmed entry of len bytes.
static cm_err
parse_entry(rpc_entry *e, const char *s, size_t len)
{
	const char *sep;
	size_t      slen;

	memset(e, 0, sizeof(*e));
	if (len == 0 || len >= sizeof(e->url)) {
		return (CM_EINVAL);
	}
	memcpy(e->url, s, len);
	e->url[len] = '\0';
	sep         = strstr(e->url, "://");
	if (sep == NULL || sep == e->url || sep[3] == '\0') {
		return (CM_EINVAL);
	}
	slen = (size_t) (sep - e->url);
	if ((slen == 3 && strncmp(e->url, "tcp", 3) == 0) ||
	    (slen == 4 && strncmp(e->url, "tcp4", 4) == 0) ||
	    (slen == 4 && strncmp(e->url, "tcp6", 4) == 0)) {
		memcpy(e->scheme, e->url, slen);
		e->scheme[slen] = '\0';
		e->family       = slen == 3  ? AF_UNSPEC
		          : e->url[3] == '4' ? AF_INET
		                             : AF_INET6;
		return (parse_tcp(e, sep + 3));
	}
	return (CM_OK);
}

// Parses the whole list into c->entries. CM_EINVAL when malformed.
static cm_err
parse_urls(cm_rpc_client *c, const char *urls)
{
	const char *p = urls;

	if (urls == NULL || strlen(urls) >= CM_RPC_URLS_MAX) {
		return (CM_EINVAL);
	}
	c->entries = cm_xcalloc(CM_RPC_MAX_ENTRIES, sizeof(rpc_entry));
	for (;;) {
		const char *end = strchr(p, ',');
		const char *b   = p;
		const char *e   = end != NULL ? end : p + strlen(p);
		rpc_entry   ent;
		int         dup = 0;

		while (b < e && is_space(*b)) {
			b++;
		}
		while (e > b && is_space(e[-1])) {
			e--;
		}
		if (parse_entry(&ent, b, (size_t) (e - b)) != CM_OK) {
			cm_error(NULL, "rpc: malformed URL \"%.*s\" in \"%s\"",
			    (int) (e - b), b, urls);
			return (CM_EINVAL);
		}
		for (int i = 0; i < c->nentries; i++) {
			dup |= strcmp(c->entries[i].url, ent.url) == 0;
		}
		if (!dup) {
			if (c->nentries == CM_RPC_MAX_ENTRIES) {
				cm_error(NULL,
				    "rpc: more than %d URLs in \"%s\"",
				    CM_RPC_MAX_ENTRIES, urls);
				return (CM_EINVAL);
			}
			c->names += ent.name;
			c->entries[c->nentries++] = ent;
		}
		if (end == NULL) {
			break;
		}
		p = end + 1;
	}
	return (CM_OK);
}

// ---------------------------------------------------------------------
// Replicas
// ---------------------------------------------------------------------

static void slot_cb(void *arg);

static void
pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	rpc_replica *r = arg;

	// Only atomics here: nng may call this with its own locks held.
	(void) p;
	if (ev == NNG_PIPE_EV_ADD_POST) {
		atomic_fetch_add(&r->npipes, 1);
	} else if (ev == NNG_PIPE_EV_REM_POST) {
		atomic_fetch_add(&r->epoch, 1);
		atomic_fetch_sub(&r->npipes, 1);
	}
}

static int
connected(const rpc_replica *r)
{
	return (atomic_load(&r->npipes) > 0);
}

// Closes a replica that has no call in flight and frees it.
static void
replica_free(rpc_replica *r)
{
	for (size_t i = 0; i < r->nslots; i++) {
		nng_aio_stop(r->slots[i]->aio);
	}
	nng_close(r->sock);
	for (size_t i = 0; i < r->nslots; i++) {
		nng_aio_free(r->slots[i]->aio);
		free(r->slots[i]->bbuf);
		free(r->slots[i]);
	}
	free(r->slots);
	free(r);
}

// Opens the socket of a new replica and starts dialling url. Call with
// c->mu held (nng_dial with NNG_FLAG_NONBLOCK does not wait). Returns
// NULL when nng refuses the URL.
static rpc_replica *
replica_open(cm_rpc_client *c, const char *url, uint32_t entries)
{
	rpc_replica *r = cm_xcalloc(1, sizeof(*r));
	int          rv;

	snprintf(r->url, sizeof(r->url), "%s", url);
	r->c             = c;
	r->id            = ++c->next_id;
	r->hash          = cm_rpc_key(0, r->url, strlen(r->url));
	r->entries       = entries;
	r->last_progress = cm_mono_ms();
	r->probe_t0      = r->last_progress; // first Health in an interval
	r->serving       = 1;
	atomic_init(&r->npipes, 0);
	atomic_init(&r->epoch, 0);
	if ((rv = nng_req0_open(&r->sock)) != 0) {
		cm_error(NULL, "rpc: cannot open a socket for %s: %s", url,
		    nng_strerror(rv));
		free(r);
		return (NULL);
	}
	nng_socket_set_size(r->sock, NNG_OPT_RECVMAXSZ, CM_RPC_MAX_MSG);
	nng_socket_set_ms(
	    r->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_ms(r->sock, NNG_OPT_RECONNMINT, RPC_RECONNECT_MIN_MS);
	nng_socket_set_ms(r->sock, NNG_OPT_RECONNMAXT, RPC_RECONNECT_MAX_MS);
	nng_pipe_notify(r->sock, NNG_PIPE_EV_ADD_POST, pipe_event, r);
	nng_pipe_notify(r->sock, NNG_PIPE_EV_REM_POST, pipe_event, r);
	rv = nng_dial(r->sock, url, &r->dialer, NNG_FLAG_NONBLOCK);
	if (rv != 0) {
		cm_error(
		    NULL, "rpc: cannot dial %s: %s", url, nng_strerror(rv));
		nng_close(r->sock);
		free(r);
		return (NULL);
	}
	return (r);
}

// A free slot of r (new when none is free); NULL when nng cannot make a
// context. Under c->mu.
static rpc_slot *
slot_take(rpc_replica *r)
{
	rpc_slot *s = r->free;

	if (s != NULL) {
		r->free = s->next;
		return (s);
	}
	s    = cm_xcalloc(1, sizeof(*s));
	s->r = r;
	if (nng_ctx_open(&s->ctx, r->sock) != 0) {
		free(s);
		return (NULL);
	}
	if (nng_aio_alloc(&s->aio, slot_cb, s) != 0) {
		nng_ctx_close(s->ctx);
		free(s);
		return (NULL);
	}
	if (r->nslots == r->capslots) {
		r->capslots = r->capslots ? 2 * r->capslots : 16;
		r->slots =
		    cm_xrealloc(r->slots, r->capslots * sizeof(*r->slots));
	}
	r->slots[r->nslots++] = s;
	return (s);
}

// ---------------------------------------------------------------------
// Choosing a replica
// ---------------------------------------------------------------------

// 0: healthy; 1: connected but stalled, not serving or failing; 2: not
// connected.
static int
tier(const rpc_replica *r, int64_t now)
{
	if (!connected(r)) {
		return (2);
	}
	return ((r->stalled || !r->serving || r->eject_until > now) ? 1 : 0);
}

static int
tried(const rpc_op *op, const rpc_replica *r)
{
	for (int i = 0; i < op->ntried; i++) {
		if (op->tried[i] == r->id) {
			return (1);
		}
	}
	return (0);
}

// Whether r may take op's next attempt: not tried yet, or, when revisit,
// connected and not the replica of the attempt that just failed.
static int
usable(const rpc_op *op, const rpc_replica *r, int revisit)
{
	if (r->removed) {
		return (0);
	}
	if (!revisit) {
		return (!tried(op, r));
	}
	return (connected(r) && op->ntried > 0 &&
	    op->tried[op->ntried - 1] != r->id);
}

// The replica for op's next attempt, or NULL; see usable() for revisit.
// Under c->mu.
static rpc_replica *
choose(cm_rpc_client *c, const rpc_op *op, int64_t now, int revisit)
{
	rpc_replica *best  = NULL;
	int          btier = 3;
	int          total = 0;
	int          count = 0;
	int          n     = c->nreps;
	unsigned     start;

	if (op->pin != 0) {
		for (int i = 0; i < n; i++) {
			if (c->reps[i]->id == op->pin &&
			    !c->reps[i]->removed && !tried(op, c->reps[i])) {
				return (c->reps[i]);
			}
		}
		return (NULL);
	}
	for (int i = 0; i < n; i++) {
		rpc_replica *r = c->reps[i];
		int          t;

		if (!usable(op, r, revisit)) {
			continue;
		}
		t = tier(r, now);
		if (t < btier) {
			btier = t;
		}
		if (t == 0) {
			total += r->inflight;
			count++;
		}
	}
	if (btier == 3) {
		return (NULL);
	}
	if (op->affinity != 0 && btier == 0) {
		int cap = 2 * ((total + count) / count) + RPC_AFFINITY_SLACK;
		uint64_t bscore = 0;

		for (int i = 0; i < n; i++) {
			rpc_replica *r = c->reps[i];
			uint64_t     score;

			if (!usable(op, r, revisit) || tier(r, now) != 0 ||
			    r->inflight >= cap) {
				continue;
			}
			score = mix64(op->affinity ^ r->hash);
			if (best == NULL || score > bscore) {
				best   = r;
				bscore = score;
			}
		}
		if (best != NULL) {
			return (best);
		}
	}
	// Least in flight within the best tier; equal loads rotate.
	start = c->rr++;
	for (int i = 0; i < n; i++) {
		rpc_replica *r =
		    c->reps[(start + (unsigned) i) % (unsigned) n];

		if (!usable(op, r, revisit) || tier(r, now) != btier) {
			continue;
		}
		if (best == NULL || r->inflight < best->inflight) {
			best = r;
		}
	}
	return (best);
}

// Books op's next attempt on r: a slot, the counts. NULL when nng cannot
// make a context. Under c->mu.
static rpc_slot *
book(cm_rpc_client *c, rpc_replica *r, rpc_op *op, int64_t now)
{
	rpc_slot *s = slot_take(r);

	(void) c;
	if (s == NULL) {
		return (NULL);
	}
	if (r->inflight++ == 0) {
		// An idle replica's silence says nothing: start counting now.
		r->last_progress = now;
	}
	r->busy += op->batch;
	r->sent++;
	s->op                   = op;
	s->nops                 = 1;
	s->batch                = op->batch;
	s->deadline             = op->deadline;
	s->recv                 = 0;
	s->t0                   = now;
	s->epoch                = atomic_load(&r->epoch);
	op->next                = NULL;
	op->abandon             = ABANDON_NONE;
	op->tried[op->ntried++] = r->id;
	return (s);
}

// Picks the replica and slot of op's next attempt and books it; NULL when
// there is none. Under c->mu.
static rpc_slot *
attempt_prepare(cm_rpc_client *c, rpc_op *op, int64_t now)
{
	rpc_replica *r;

	if (op->ntried >= RPC_MAX_ATTEMPTS) {
		return (NULL);
	}
	r = choose(c, op, now, 0);
	if (r == NULL && op->ntried > 0) {
		r = choose(c, op, now, 1);
	}
	return (r != NULL ? book(c, r, op, now) : NULL);
}

// Sends m (stolen) for the attempt booked on s. Outside c->mu; the
// caller has counted itself in c->sending.
static void
attempt_send(rpc_slot *s, nng_msg *m, int64_t now)
{
	int64_t wait = s->deadline - now;

	if (wait < 1) {
		wait = 1;
	}
	if (!connected(s->r) && wait > RPC_UNCONNECTED_WAIT_MS) {
		wait = RPC_UNCONNECTED_WAIT_MS;
	}
	nng_aio_set_msg(s->aio, m);
	nng_aio_set_timeout(s->aio, (nng_duration) wait);
	nng_ctx_send(s->ctx, s->aio);
}

// A new message holding op's envelope, or NULL.
static nng_msg *
op_msg(const rpc_op *op)
{
	nng_msg *m = NULL;

	if (nng_msg_alloc(&m, op->len) != 0) {
		return (NULL);
	}
	memcpy(nng_msg_body(m), op->buf, op->len);
	return (m);
}

// ---------------------------------------------------------------------
// Ops
// ---------------------------------------------------------------------

// An op from the pool (or new). Under c->mu.
static rpc_op *
op_get_locked(cm_rpc_client *c)
{
	rpc_op *op = c->ops;

	if (op != NULL) {
		c->ops = op->next;
	} else {
		op    = cm_xcalloc(1, sizeof(*op));
		op->c = c;
	}
	op->next       = NULL;
	op->ntried     = 0;
	op->abandon    = ABANDON_NONE;
	op->pin        = 0;
	op->affinity   = 0;
	op->idempotent = 0;
	op->batch      = 0;
	op->desc       = NULL;
	op->typed_done = NULL;
	op->raw_done   = NULL;
	op->arg        = NULL;
	return (op);
}

static rpc_op *
op_get(cm_rpc_client *c)
{
	rpc_op *op;

	pthread_mutex_lock(&c->mu);
	op = op_get_locked(c);
	pthread_mutex_unlock(&c->mu);
	return (op);
}

static void
op_put(cm_rpc_client *c, rpc_op *op)
{
	if (op->cap > RPC_OP_BUF_KEEP) {
		free(op->buf);
		op->buf = NULL;
		op->cap = 0;
	}
	if (op->pcap > RPC_OP_BUF_KEEP) {
		free(op->pbuf);
		op->pbuf = NULL;
		op->pcap = 0;
	}
	pthread_mutex_lock(&c->mu);
	op->next = c->ops;
	c->ops   = op;
	pthread_mutex_unlock(&c->mu);
}

static void
grow(uint8_t **buf, size_t *cap, size_t need)
{
	if (need > *cap) {
		free(*buf);
		*cap = need < 256 ? 256 : need;
		*buf = cm_xmalloc(*cap);
	}
}

// Packs op's envelope. CM_EINVAL for a bad method or request id.
static cm_err
op_pack(rpc_op *op, const char *method, const char *rid, const char *tp,
    int64_t deadline_unix, const uint8_t *payload, size_t plen)
{
	rpc_request req = THREADGATE__RPC__V1__REQUEST__INIT;

	if (method == NULL || strlen(method) > CM_RPC_METHOD_MAX ||
	    (rid != NULL && strlen(rid) > CM_RID_MAX) ||
	    (tp != NULL && strlen(tp) > CM_TRACEPARENT_LEN)) {
		return (CM_EINVAL);
	}
	req.traceparent = (char *) (tp != NULL ? tp : "");
	snprintf(op->method, sizeof(op->method), "%s", method);
	snprintf(op->rid, sizeof(op->rid), "%s", rid != NULL ? rid : "");
	req.method           = op->method;
	req.request_id       = op->rid;
	req.deadline_unix_ms = deadline_unix;
	op->deadline_unix    = deadline_unix;
	req.payload.data     = (uint8_t *) payload;
	req.payload.len      = plen;
	op->len = threadgate__rpc__v1__request__get_packed_size(&req);
	grow(&op->buf, &op->cap, op->len);
	threadgate__rpc__v1__request__pack(&req, op->buf);
	return (CM_OK);
}

// Reports op's result to its caller; op goes back to the pool first, so
// the caller may close the client from its callback's waiter.
static void
op_finish(rpc_op *op, const rpc_result *res)
{
	cm_rpc_client                    *c      = op->c;
	const ProtobufCMessageDescriptor *desc   = op->desc;
	cm_rpc_done_fn                    typed  = op->typed_done;
	raw_done_fn                       raw    = op->raw_done;
	void                             *arg    = op->arg;
	ProtobufCMessage                 *reply  = NULL;
	cm_err                            st     = res->st;
	const char                       *detail = res->detail;

	if (typed != NULL && st == CM_OK) {
		reply = protobuf_c_message_unpack(
		    desc, NULL, res->len, res->payload);
		if (reply == NULL) {
			st     = CM_EINTERNAL;
			detail = "undecodable reply payload from upstream";
		}
	}
	op_put(c, op);
	if (typed != NULL) {
		typed(
		    arg, st, detail != NULL ? detail : cm_strerror(st), reply);
	} else {
		raw(arg, res);
	}
}

// ---------------------------------------------------------------------
// Batching
// ---------------------------------------------------------------------

// Whether op may wait in the client's queue to go out in a batch: a first
// attempt of a call that asked for it, idempotent (a batch that stalls is
// re-sent whole; a write must not be) and placed by load, while the
// client batches at all.
static int
batchable(const cm_rpc_client *c, const rpc_op *op)
{
	return (c->opts.batch_window > 0 && op->batch && op->idempotent &&
	    op->affinity == 0 && op->pin == 0 && op->ntried == 0);
}

static void
queue_push(cm_rpc_client *c, rpc_op *op)
{
	op->next = NULL;
	if (c->qtail != NULL) {
		c->qtail->next = op;
	} else {
		c->qhead = op;
	}
	c->qtail = op;
}

static rpc_op *
queue_pop(cm_rpc_client *c)
{
	rpc_op *op = c->qhead;

	c->qhead = op->next;
	if (c->qhead == NULL) {
		c->qtail = NULL;
	}
	op->next = NULL;
	return (op);
}

// The healthy replica with the fewest short-call messages out, below the
// batch window; NULL when none. *healthy: some replica is healthy at all.
// Under c->mu.
static rpc_replica *
roomy(cm_rpc_client *c, int64_t now, int *healthy)
{
	rpc_replica *best = NULL;

	*healthy = 0;
	for (int i = 0; i < c->nreps; i++) {
		rpc_replica *r = c->reps[i];

		if (r->removed || tier(r, now) != 0) {
			continue;
		}
		*healthy = 1;
		if (r->busy < c->opts.batch_window &&
		    (best == NULL || r->busy < best->busy ||
		        (r->busy == best->busy &&
		            r->inflight < best->inflight))) {
			best = r;
		}
	}
	return (best);
}

// Moves queued calls out, oldest first: onto healthy replicas with a
// free window, up to CM_RPC_BATCH_MAX calls a message (slots to send
// added to *sends, chained by next); one by one wherever
// attempt_prepare() puts them when no replica is healthy (nothing would
// flush them); to *fails (chained by next, with qerr set) when expired,
// closing or unplaceable. Stops while every healthy replica is at its
// window: the next completion flushes. Under c->mu.
static void
flush_locked(cm_rpc_client *c, int64_t now, rpc_slot **sends, rpc_op **fails)
{
	while (c->qhead != NULL) {
		rpc_op      *op = c->qhead;
		rpc_op      *tail;
		rpc_replica *r;
		rpc_slot    *s;
		int          healthy;

		op->qerr    = c->closing     ? CM_EUNAVAIL
		       : op->deadline <= now ? CM_ETIMEDOUT
		                             : CM_OK;
		op->qdetail = c->closing
		    ? "rpc client closed while the call waited to be sent"
		    : "upstream deadline passed while the call waited to be "
		      "sent";
		r = op->qerr == CM_OK ? roomy(c, now, &healthy) : NULL;
		if (op->qerr == CM_OK && r == NULL && healthy) {
			return;
		}
		op = queue_pop(c);
		s  = op->qerr != CM_OK ? NULL
		     : r != NULL       ? book(c, r, op, now)
		                       : attempt_prepare(c, op, now);
		if (s == NULL) {
			if (op->qerr == CM_OK) {
				op->qerr    = CM_EUNAVAIL;
				op->qdetail = "upstream not reachable";
			}
			op->next = *fails;
			*fails   = op;
			continue;
		}
		for (tail = op; r != NULL && s->nops < CM_RPC_BATCH_MAX &&
		     c->qhead != NULL && c->qhead->deadline > now;
		     tail = tail->next) {
			rpc_op *o = queue_pop(c);

			o->abandon            = ABANDON_NONE;
			o->tried[o->ntried++] = r->id;
			tail->next            = o;
			r->inflight++;
			r->sent++;
			s->nops++;
			if (o->deadline > s->deadline) {
				s->deadline = o->deadline;
			}
		}
		if (s->nops > 1) {
			r->batched += (uint64_t) s->nops;
		}
		atomic_fetch_add(&c->sending, 1);
		s->next = *sends;
		*sends  = s;
	}
}

// A new message holding s's calls as one Batch, or NULL.
static nng_msg *
batch_msg(rpc_slot *s)
{
	Threadgate__Rpc__V1__BatchRequest br =
	    THREADGATE__RPC__V1__BATCH_REQUEST__INIT;
	rpc_request         env = THREADGATE__RPC__V1__REQUEST__INIT;
	ProtobufCBinaryData calls[CM_RPC_BATCH_MAX];
	rpc_op             *op = s->op;
	nng_msg            *m  = NULL;
	size_t              len;

	for (int i = 0; i < s->nops; i++, op = op->next) {
		calls[i].data = op->buf;
		calls[i].len  = op->len;
		if (op->deadline_unix > env.deadline_unix_ms) {
			env.deadline_unix_ms = op->deadline_unix;
		}
	}
	br.n_calls = (size_t) s->nops;
	br.calls   = calls;
	len        = threadgate__rpc__v1__batch_request__get_packed_size(&br);
	grow(&s->bbuf, &s->bcap, len);
	threadgate__rpc__v1__batch_request__pack(&br, s->bbuf);
	env.method       = (char *) CM_RPC_BATCH_METHOD;
	env.payload.data = s->bbuf;
	env.payload.len  = len;
	if (nng_msg_alloc(&m,
	        threadgate__rpc__v1__request__get_packed_size(&env)) != 0) {
		return (NULL);
	}
	threadgate__rpc__v1__request__pack(&env, nng_msg_body(m));
	return (m);
}

// Sends the slots flush_locked() booked (outside c->mu) and completes the
// calls it could not place.
static void
flush_send(rpc_slot *sends, rpc_op *fails, int64_t now)
{
	while (sends != NULL) {
		rpc_slot *s = sends;
		nng_msg  *m;

		sends = s->next;
		m     = s->nops > 1 ? batch_msg(s) : op_msg(s->op);
		if (m == NULL) {
			// Let the send fail as undelivered.
			nng_msg_alloc(&m, 0);
		}
		attempt_send(s, m, now);
		atomic_fetch_sub(&s->r->c->sending, 1);
	}
	while (fails != NULL) {
		rpc_op    *op  = fails;
		rpc_result res = { .st = op->qerr, .detail = op->qdetail };

		fails = op->next;
		op_finish(op, &res);
	}
}

// Starts op's first attempt - or queues it for a batch while every
// healthy replica has its window of messages out. CM_OK: its completion
// will run; else the op is back in the pool and nothing runs.
static cm_err
op_start(cm_rpc_client *c, rpc_op *op)
{
	int64_t   now = cm_mono_ms();
	nng_msg  *m   = NULL;
	rpc_slot *s   = NULL;
	int       healthy;

	pthread_mutex_lock(&c->mu);
	if (c->closing) {
		pthread_mutex_unlock(&c->mu);
		op_put(c, op);
		return (CM_EUNAVAIL);
	}
	if (batchable(c, op) &&
	    (c->qhead != NULL ||
	        (roomy(c, now, &healthy) == NULL && healthy))) {
		rpc_slot *sends = NULL;
		rpc_op   *fails = NULL;

		queue_push(c, op);
		flush_locked(c, now, &sends, &fails);
		pthread_mutex_unlock(&c->mu);
		flush_send(sends, fails, now);
		return (CM_OK);
	}
	s = attempt_prepare(c, op, now);
	if (s != NULL) {
		atomic_fetch_add(&c->sending, 1);
	}
	pthread_mutex_unlock(&c->mu);
	if (s == NULL) {
		op_put(c, op);
		return (CM_EUNAVAIL);
	}
	m = op_msg(op);
	if (m == NULL) {
		// Let the send fail as undelivered.
		nng_msg_alloc(&m, 0);
	}
	attempt_send(s, m, now);
	atomic_fetch_sub(&c->sending, 1);
	return (CM_OK);
}

// ---------------------------------------------------------------------
// Completion
// ---------------------------------------------------------------------

// Gives up on calls at r the watchdog has reason to stop waiting for,
// so their completions re-send them elsewhere (nng_aio_cancel only
// schedules the callback; it never runs it here). Under c->mu.
//  - A send still pending (no connection took the message: never
//    delivered) when r stalled, or when the connection it was queued
//    for dropped: nng keeps it queued until its deadline otherwise.
//  - A receive pending when r stalled: re-sendable calls only (a write
//    stays: it either runs or meets its deadline, which the envelope
//    carries too; re-sending it could apply it twice).
//  - A receive pending on a connection that dropped before nng could
//    tell the context (it resets such a context silently): any call,
//    like ECONNRESET.
static void
abandon_calls(rpc_replica *r, int why, int64_t now, int tick_ms)
{
	cm_rpc_client *c         = r->c;
	unsigned       ep        = atomic_load(&r->epoch);
	int            elsewhere = 0;

	// A stall only moves calls when another replica is healthy: with
	// none (a single replica, or all of them slow - a loaded machine
	// can miss a probe window) the calls keep waiting where they are,
	// within their deadline.
	for (int i = 0; i < c->nreps; i++) {
		elsewhere |= c->reps[i] != r && !c->reps[i]->removed &&
		    tier(c->reps[i], now) == 0;
	}
	if (why == ABANDON_STALL && !elsewhere) {
		return;
	}

	for (size_t i = 0; i < r->nslots; i++) {
		rpc_slot *s    = r->slots[i];
		rpc_op   *op   = s->op;
		int       lost = s->epoch != ep && now - s->t0 >= tick_ms;

		if (op == NULL || op->pin != 0) {
			continue;
		}
		if (!s->recv) {
			if (why == ABANDON_STALL || lost) {
				nng_aio_cancel(s->aio);
			}
			continue;
		}
		if (op->abandon != ABANDON_NONE ||
		    (why == ABANDON_STALL && !op->idempotent) ||
		    (why == ABANDON_PIPE && !lost)) {
			continue;
		}
		op->abandon = why;
		nng_aio_cancel(s->aio);
	}
}

// What became of an attempt.
typedef enum {
	OUT_DONE,        // final: res says how
	OUT_UNDELIVERED, // no replica took it: may go anywhere else
	OUT_AMBIGUOUS,   // may have run: only idempotent calls go elsewhere
	OUT_ALONE,       // ran, reply did not fit a batch: again, alone
} rpc_outcome;

// The result of one call of a message that was answered: item is its
// Response (NULL: undecodable).
static void
result_of(const rpc_response *item, rpc_result *res, rpc_outcome *out)
{
	res->answered = 1;
	if (item == NULL || !cm_err_valid((int) item->status)) {
		res->st     = CM_EINTERNAL;
		res->detail = "undecodable reply from upstream";
		return;
	}
	res->st = (cm_err) item->status;
	res->detail =
	    item->detail[0] != '\0' ? item->detail : cm_strerror(res->st);
	res->payload = item->payload.data;
	res->len     = item->payload.len;
	if (res->st == CM_EUNAVAIL) {
		// Database down, lanes full, stopping: maybe run, maybe not,
		// as far as we know.
		*out = OUT_AMBIGUOUS;
	}
}

// What each call of an answered batch got: the batch's reply taken apart
// into items (freed by the caller), or the envelope's error for all.
static void
batch_results(const rpc_response *resp, int n, rpc_result *res,
    rpc_outcome *out, rpc_response **items,
    Threadgate__Rpc__V1__BatchReply **brp)
{
	Threadgate__Rpc__V1__BatchReply *br = NULL;

	if (resp != NULL &&
	    resp->status == THREADGATE__RPC__V1__STATUS__STATUS_OK) {
		br = threadgate__rpc__v1__batch_reply__unpack(
		    NULL, resp->payload.len, resp->payload.data);
	}
	*brp = br;
	if (br == NULL || br->n_replies != (size_t) n) {
		for (int i = 0; i < n; i++) {
			result_of(br != NULL ? NULL : resp, &res[i], &out[i]);
		}
		return;
	}
	for (int i = 0; i < n; i++) {
		items[i] = threadgate__rpc__v1__response__unpack(
		    NULL, br->replies[i].len, br->replies[i].data);
		result_of(items[i], &res[i], &out[i]);
	}
	for (size_t k = 0; k < br->n_unsent; k++) {
		uint32_t i = br->unsent[k];

		if (i < (uint32_t) n) {
			// It ran, but its reply did not fit: once more,
			// alone (only idempotent calls are batched).
			res[i].st     = CM_EUNAVAIL;
			res[i].detail = "batched reply too large";
			out[i]        = OUT_ALONE;
		}
	}
}

static void
slot_cb(void *arg)
{
	rpc_slot                        *s     = arg;
	rpc_replica                     *r     = s->r;
	cm_rpc_client                   *c     = r->c;
	int                              n     = s->nops;
	int                              rv    = nng_aio_result(s->aio);
	int64_t                          now   = cm_mono_ms();
	rpc_response                    *resp  = NULL;
	rpc_slot                        *sends = NULL;
	rpc_op                          *fails = NULL;
	Threadgate__Rpc__V1__BatchReply *br    = NULL;
	rpc_op                          *ops[CM_RPC_BATCH_MAX];
	rpc_response                    *items[CM_RPC_BATCH_MAX];
	rpc_slot                        *ns[CM_RPC_BATCH_MAX];
	nng_msg                         *m[CM_RPC_BATCH_MAX];
	rpc_result                       res[CM_RPC_BATCH_MAX];
	rpc_outcome                      out[CM_RPC_BATCH_MAX];
	char                             from[CM_RPC_URL_MAX] = "";
	rpc_result                       all  = { .st = CM_OK };
	rpc_outcome                      aout = OUT_DONE;

	if (!s->recv) {
		if (rv == 0) {
			pthread_mutex_lock(&c->mu);
			if (!c->closing && s->deadline > now) {
				// Posted under the lock: the watchdog only
				// cancels receives it has seen posted.
				s->recv = 1;
				s->t0   = now;
				nng_aio_set_timeout(s->aio,
				    (nng_duration) (s->deadline - now));
				nng_ctx_recv(s->ctx, s->aio);
				pthread_mutex_unlock(&c->mu);
				return;
			}
			pthread_mutex_unlock(&c->mu);
			all.st     = c->closing ? CM_EUNAVAIL : CM_ETIMEDOUT;
			all.detail = "upstream deadline passed";
		} else {
			// A REQ send completes when a connection takes the
			// message; failing means none did: the replica is
			// down or unreachable, not slow.
			nng_msg_free(nng_aio_get_msg(s->aio));
			nng_aio_set_msg(s->aio, NULL);
			all.st     = CM_EUNAVAIL;
			all.detail = "upstream not reachable";
			aout       = OUT_UNDELIVERED;
		}
	} else if (rv == 0) {
		nng_msg *msg = nng_aio_get_msg(s->aio);

		resp = threadgate__rpc__v1__response__unpack(
		    NULL, nng_msg_len(msg), nng_msg_body(msg));
		nng_msg_free(msg);
	} else if (rv == NNG_ETIMEDOUT) {
		all.st     = CM_ETIMEDOUT;
		all.detail = "upstream did not answer in time";
	} else {
		// ECONNRESET (the connection dropped with the request out),
		// ECANCELED (the watchdog gave up on it, or the client is
		// closing), ECLOSED.
		all.st     = CM_EUNAVAIL;
		all.detail = s->op->abandon == ABANDON_STALL
		    ? "upstream replica stalled mid-call"
		    : "upstream connection lost mid-call";
		aout       = OUT_AMBIGUOUS;
	}

	ops[0] = s->op;
	for (int i = 0; i < n; i++) {
		if (i > 0) {
			ops[i] = ops[i - 1]->next;
		}
		items[i] = NULL;
		ns[i]    = NULL;
		m[i]     = NULL;
		res[i]   = all;
		out[i]   = aout;
	}
	if (s->recv && rv == 0) {
		if (n == 1) {
			result_of(resp, &res[0], &out[0]);
		} else {
			batch_results(resp, n, res, out, items, &br);
		}
	}
	for (int i = 0; i < n; i++) {
		if (out[i] == OUT_UNDELIVERED || out[i] == OUT_ALONE ||
		    (out[i] == OUT_AMBIGUOUS && ops[i]->idempotent)) {
			m[i] = op_msg(ops[i]);
		}
	}

	pthread_mutex_lock(&c->mu);
	s->op   = NULL;
	s->nops = 0;
	s->recv = 0;
	s->next = r->free;
	r->free = s;
	r->busy -= s->batch;
	r->inflight -= n;
	for (int i = 0; i < n; i++) {
		rpc_op *op = ops[i];

		if (res[i].answered) {
			r->answered++;
			r->last_progress = now;
			if (res[i].st == CM_EUNAVAIL && out[i] != OUT_ALONE) {
				r->eject_until = now + c->opts.stall_ms;
			}
		}
		if (m[i] == NULL || c->closing || op->pin != 0 ||
		    op->deadline - now < RPC_RETRY_MIN_MS) {
			continue;
		}
		// A reply too large to batch goes back to the same replica.
		ns[i] = out[i] == OUT_ALONE && op->ntried < RPC_MAX_ATTEMPTS
		    ? book(c, r, op, now)
		    : attempt_prepare(c, op, now);
		if (ns[i] != NULL) {
			r->resent++;
			atomic_fetch_add(&c->sending, 1);
			if (from[0] == '\0') {
				// For the log line: r may go once unlocked.
				snprintf(from, sizeof(from), "%s", r->url);
			}
		}
	}
	flush_locked(c, now, &sends, &fails);
	pthread_mutex_unlock(&c->mu);

	for (int i = 0; i < n; i++) {
		if (ns[i] != NULL) {
			if (out[i] != OUT_ALONE) {
				cm_warn(ops[i]->rid,
				    "rpc %s: %s (%s); re-sent to %s",
				    ops[i]->method, res[i].detail, from,
				    ns[i]->r->url);
			}
			attempt_send(ns[i], m[i], now);
			atomic_fetch_sub(&c->sending, 1);
			continue;
		}
		nng_msg_free(m[i]);
		if (out[i] == OUT_AMBIGUOUS && !ops[i]->idempotent &&
		    !res[i].answered) {
			res[i].detail =
			    "upstream connection lost mid-call; not "
			    "re-sent (the call is not idempotent)";
		}
		op_finish(ops[i], &res[i]);
	}
	flush_send(sends, fails, now);
	for (int i = 0; i < n; i++) {
		threadgate__rpc__v1__response__free_unpacked(items[i], NULL);
	}
	threadgate__rpc__v1__batch_reply__free_unpacked(br, NULL);
	threadgate__rpc__v1__response__free_unpacked(resp, NULL);
}

// ---------------------------------------------------------------------
// Watchdog: stalls, probes, lost connections, replicas that left
// ---------------------------------------------------------------------

static void
probe_done(void *arg, const rpc_result *res)
{
	rpc_replica                      *r       = arg;
	cm_rpc_client                    *c       = r->c;
	int                               serving = 1;
	Threadgate__Rpc__V1__HealthReply *hr      = NULL;

	if (res->answered && res->st == CM_OK) {
		hr = threadgate__rpc__v1__health_reply__unpack(
		    NULL, res->len, res->payload);
		// Only an explicit NOT_SERVING counts: UNKNOWN is a server
		// between start and its first check, and a server without
		// Health (CM_ENOTSUP) is alive, which is what a probe asks.
		serving = hr == NULL ||
		    hr->status !=
		        THREADGATE__RPC__V1__SERVING_STATUS__SERVING_STATUS_NOT_SERVING;
	}
	pthread_mutex_lock(&c->mu);
	r->probing = 0;
	if (res->answered) {
		if (r->stalled) {
			cm_info(NULL, "rpc: replica %s answers again", r->url);
		}
		r->stalled = 0;
		if (serving != r->serving) {
			cm_info(NULL, "rpc: replica %s %s%s%s", r->url,
			    serving ? "serving again" : "not serving",
			    hr != NULL && hr->detail[0] != '\0' ? ": " : "",
			    hr != NULL ? hr->detail : "");
		}
		r->serving = serving;
	} else if (res->st == CM_ETIMEDOUT && !c->closing) {
		if (!r->stalled) {
			cm_warn(NULL,
			    "rpc: replica %s stalled (its Health probe got no "
			    "answer in %d ms); its re-sendable calls go to "
			    "other replicas",
			    r->url, c->opts.stall_ms);
		}
		r->stalled = 1;
		abandon_calls(r, ABANDON_STALL, cm_mono_ms(), c->tick_ms);
	}
	pthread_mutex_unlock(&c->mu);
	threadgate__rpc__v1__health_reply__free_unpacked(hr, NULL);
}

// Books a probe of r; returns its slot (op in s->op) or NULL. Under c->mu.
static rpc_slot *
probe_prepare(cm_rpc_client *c, rpc_replica *r, int64_t now)
{
	rpc_op   *op = op_get_locked(c);
	rpc_slot *s;

	op->pin      = r->id;
	op->raw_done = probe_done;
	op->arg      = r;
	op->deadline = now + c->opts.stall_ms;
	if (op_pack(op, CM_RPC_HEALTH_METHOD, "", NULL,
	        cm_now_ms() + c->opts.stall_ms, NULL, 0) != CM_OK ||
	    (s = attempt_prepare(c, op, now)) == NULL) {
		op->next = c->ops;
		c->ops   = op;
		return (NULL);
	}
	r->probing  = 1;
	r->probe_t0 = now;
	return (s);
}

static void *
watch_main(void *arg)
{
	cm_rpc_client *c = arg;
	rpc_slot      *probes[CM_RPC_MAX_REPLICAS];
	rpc_replica   *dead[CM_RPC_MAX_REPLICAS];

	pthread_mutex_lock(&c->mu);
	while (!c->closing) {
		struct timespec ts;
		int64_t         now;
		int             np    = 0;
		int             nd    = 0;
		rpc_slot       *sends = NULL;
		rpc_op         *fails = NULL;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long) c->tick_ms * 1000000L;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&c->cv, &c->mu, &ts);
		if (c->closing) {
			break;
		}
		now = cm_mono_ms();
		for (int i = 0; i < c->nreps;) {
			rpc_replica *r = c->reps[i];
			rpc_slot    *s;

			// probing clears after the probe's slot is released:
			// wait for both, so probe_done never sees a freed r.
			if (r->removed && r->inflight == 0 && !r->probing) {
				dead[nd++] = r;
				c->reps[i] = c->reps[--c->nreps];
				continue;
			}
			i++;
			// A connection that dropped under a call whose
			// receive was not posted yet leaves it waiting for a
			// reply that cannot come (nng resets such a context
			// silently): give up on it like on ECONNRESET.
			abandon_calls(r, ABANDON_PIPE, now, c->tick_ms);
			if (r->removed || r->probing || !connected(r)) {
				continue;
			}
			// Probe: a replica silent with calls out (stopped?),
			// a stalled one until it answers, and every replica
			// every CM_RPC_HEALTH_INTERVAL_MS (serving or not).
			if ((r->inflight > 0 &&
			        now - r->last_progress >= c->opts.stall_ms) ||
			    (r->stalled &&
			        now - r->probe_t0 >= c->opts.stall_ms) ||
			    now - r->probe_t0 >= CM_RPC_HEALTH_INTERVAL_MS) {
				s = probe_prepare(c, r, now);
				if (s != NULL) {
					probes[np++] = s;
					atomic_fetch_add(&c->sending, 1);
				}
			}
		}
		// Completions flush the batch queue; this catches what they
		// cannot: calls expiring in it, replicas turning unhealthy.
		flush_locked(c, now, &sends, &fails);
		pthread_mutex_unlock(&c->mu);
		for (int i = 0; i < np; i++) {
			nng_msg *m = op_msg(probes[i]->op);

			if (m == NULL) {
				// Let the send fail as undelivered.
				nng_msg_alloc(&m, 0);
			}
			attempt_send(probes[i], m, now);
			atomic_fetch_sub(&c->sending, 1);
		}
		flush_send(sends, fails, now);
		for (int i = 0; i < nd; i++) {
			cm_info(NULL, "rpc: replica %s closed", dead[i]->url);
			replica_free(dead[i]);
		}
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return (NULL);
}

// ---------------------------------------------------------------------
// Resolver: names -> replicas
// ---------------------------------------------------------------------

static int
resolve_default(void *arg, const char *host, int family,
    char out[][CM_RPC_ADDR_MAX], int max)
{
	struct addrinfo  hints = { 0 };
	struct addrinfo *res   = NULL;
	int              n     = 0;
	int              rv;

	(void) arg;
	hints.ai_family   = family;
	hints.ai_socktype = SOCK_STREAM;
	rv                = getaddrinfo(host, NULL, &hints, &res);
	if (rv != 0) {
		// NXDOMAIN included: a resolver hiccup must not empty the
		// set, so only an answer changes it.
		cm_warn(NULL, "rpc: cannot resolve %s: %s", host,
		    gai_strerror(rv));
		return (-1);
	}
	for (struct addrinfo *ai = res; ai != NULL && n < max;
	     ai                  = ai->ai_next) {
		const void *a;
		int         dup = 0;

		if (ai->ai_family == AF_INET) {
			a = &((struct sockaddr_in *) ai->ai_addr)->sin_addr;
		} else if (ai->ai_family == AF_INET6) {
			a = &((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr;
		} else {
			continue;
		}
		if (inet_ntop(ai->ai_family, a, out[n], CM_RPC_ADDR_MAX) ==
		    NULL) {
			continue;
		}
		for (int i = 0; i < n; i++) {
			dup |= strcmp(out[i], out[n]) == 0;
		}
		n += !dup;
	}
	freeaddrinfo(res);
	return (n);
}

// The replicas the list names now: url -> entry mask.
typedef struct rpc_target {
	char     url[CM_RPC_URL_MAX];
	uint32_t entries;
} rpc_target;

static void
target_add(rpc_target *t, int *n, const char *url, int entry)
{
	for (int i = 0; i < *n; i++) {
		if (strcmp(t[i].url, url) == 0) {
			t[i].entries |= 1u << entry;
			return;
		}
	}
	if (*n < CM_RPC_MAX_REPLICAS) {
		snprintf(t[*n].url, sizeof(t[*n].url), "%s", url);
		t[*n].entries = 1u << entry;
		(*n)++;
	}
}

// Resolves every name (blocking), then makes the replica set match: new
// addresses are dialled, vanished ones marked removed (the watchdog closes
// them once idle). A name that fails to resolve keeps its replicas.
static void
resolve_all(cm_rpc_client *c)
{
	rpc_target *t   = cm_xcalloc(CM_RPC_MAX_REPLICAS, sizeof(*t));
	int        *bad = cm_xcalloc((size_t) c->nentries, sizeof(int));
	char(*addrs)[CM_RPC_ADDR_MAX] =
	    cm_xcalloc(RPC_ADDRS_PER_NAME, CM_RPC_ADDR_MAX);
	int nt = 0;

	for (int i = 0; i < c->nentries; i++) {
		rpc_entry *e = &c->entries[i];
		int        n;

		if (!e->name) {
			target_add(t, &nt, e->url, i);
			continue;
		}
		n = c->opts.resolve(c->opts.resolve_arg, e->host, e->family,
		    addrs, RPC_ADDRS_PER_NAME);
		if (n < 0) {
			bad[i] = 1;
			continue;
		}
		for (int a = 0; a < n; a++) {
			char url[CM_RPC_URL_MAX];
			int  v6 = strchr(addrs[a], ':') != NULL;

			snprintf(url, sizeof(url), "%s://%s%s%s:%s", e->scheme,
			    v6 ? "[" : "", addrs[a], v6 ? "]" : "", e->port);
			target_add(t, &nt, url, i);
		}
	}

	pthread_mutex_lock(&c->mu);
	// Replicas of names that failed stay as they are: the ones the last
	// answer named (not those it dropped, which may still be closing).
	for (int i = 0; i < c->nreps; i++) {
		for (int e = 0; e < c->nentries; e++) {
			if (bad[e] && !c->reps[i]->removed &&
			    (c->reps[i]->entries & (1u << e))) {
				target_add(t, &nt, c->reps[i]->url, e);
			}
		}
	}
	for (int i = 0; i < c->nreps; i++) {
		rpc_replica *r    = c->reps[i];
		uint32_t     mask = 0;

		for (int k = 0; k < nt; k++) {
			if (strcmp(t[k].url, r->url) == 0) {
				mask = t[k].entries;
				break;
			}
		}
		if (mask == 0 && !r->removed) {
			cm_info(NULL, "rpc: replica %s left the set", r->url);
			r->removed = 1;
		} else if (mask != 0 && r->removed) {
			cm_info(NULL, "rpc: replica %s is back", r->url);
			r->removed = 0;
		}
		r->entries = mask != 0 ? mask : r->entries;
	}
	for (int k = 0; k < nt && !c->closing; k++) {
		int known = 0;

		for (int i = 0; i < c->nreps; i++) {
			known |= strcmp(c->reps[i]->url, t[k].url) == 0;
		}
		if (known) {
			continue;
		}
		if (c->nreps == CM_RPC_MAX_REPLICAS) {
			cm_warn(NULL, "rpc: more than %d replicas; %s ignored",
			    CM_RPC_MAX_REPLICAS, t[k].url);
			continue;
		}
		{
			rpc_replica *r =
			    replica_open(c, t[k].url, t[k].entries);

			if (r != NULL) {
				if (c->names > 0) {
					cm_info(NULL, "rpc: replica %s joined",
					    r->url);
				}
				c->reps[c->nreps++] = r;
			}
		}
	}
	pthread_mutex_unlock(&c->mu);
	free(addrs);
	free(bad);
	free(t);
}

static void *
resolver_main(void *arg)
{
	cm_rpc_client *c = arg;

	pthread_mutex_lock(&c->mu);
	while (!c->closing) {
		struct timespec ts;
		int             ms = c->opts.resolve_ms;

		if (c->nreps == 0 && ms > RPC_RESOLVE_EMPTY_MS) {
			ms = RPC_RESOLVE_EMPTY_MS;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += ms / 1000;
		ts.tv_nsec += (long) (ms % 1000) * 1000000L;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&c->cv, &c->mu, &ts);
		if (c->closing) {
			break;
		}
		pthread_mutex_unlock(&c->mu);
		resolve_all(c);
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return (NULL);
}

// ---------------------------------------------------------------------
// Open / close
// ---------------------------------------------------------------------

static void
client_free(cm_rpc_client *c)
{
	rpc_op *op;

	for (int i = 0; i < c->nreps; i++) {
		replica_free(c->reps[i]);
	}
	while ((op = c->ops) != NULL) {
		c->ops = op->next;
		free(op->buf);
		free(op->pbuf);
		free(op);
	}
	free(c->entries);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

cm_err
cm_rpc_client_open_opts(
    const char *urls, const cm_rpc_client_opts *opts, cm_rpc_client **out)
{
	cm_rpc_client *c = cm_xcalloc(1, sizeof(*c));

	if (opts != NULL) {
		c->opts = *opts;
	}
	if (c->opts.stall_ms <= 0) {
		c->opts.stall_ms = CM_RPC_STALL_MS;
	}
	if (c->opts.resolve_ms <= 0) {
		c->opts.resolve_ms = CM_RPC_RESOLVE_MS;
	}
	if (c->opts.resolve == NULL) {
		c->opts.resolve = resolve_default;
	}
	if (c->opts.batch_window < 0 ||
	    c->opts.batch_window > CM_RPC_BATCH_WINDOW_MAX) {
		free(c);
		return (CM_EINVAL);
	}
	// The watchdog's period: a fifth of the stall time (stalls are seen
	// within 20%), between 10 and 50 ms (lost connections are noticed
	// within 50 ms whatever the stall time).
	c->tick_ms = c->opts.stall_ms / 5;
	c->tick_ms = c->tick_ms < 10 ? 10 : c->tick_ms > 50 ? 50 : c->tick_ms;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	atomic_init(&c->sending, 0);
	if (parse_urls(c, urls) != CM_OK) {
		client_free(c);
		return (CM_EINVAL);
	}
	// URLs as written first: nng refusing one is a configuration error.
	pthread_mutex_lock(&c->mu);
	for (int i = 0; i < c->nentries; i++) {
		rpc_replica *r;

		if (c->entries[i].name) {
			continue;
		}
		r = replica_open(c, c->entries[i].url, 1u << i);
		if (r == NULL) {
			pthread_mutex_unlock(&c->mu);
			client_free(c);
			return (CM_EINVAL);
		}
		c->reps[c->nreps++] = r;
	}
	pthread_mutex_unlock(&c->mu);
	if (c->names > 0) {
		resolve_all(c);
		if (pthread_create(&c->resolver, NULL, resolver_main, c) !=
		    0) {
			client_free(c);
			return (CM_EINTERNAL);
		}
		c->resolver_started = 1;
	}
	if (pthread_create(&c->watch, NULL, watch_main, c) != 0) {
		cm_rpc_client_close(c);
		return (CM_EINTERNAL);
	}
	c->watch_started = 1;
	*out             = c;
	return (CM_OK);
}

cm_err
cm_rpc_client_open(const char *urls, cm_rpc_client **out)
{
	return (cm_rpc_client_open_opts(urls, NULL, out));
}

void
cm_rpc_client_close(cm_rpc_client *c)
{
	rpc_slot *sends = NULL;
	rpc_op   *fails = NULL;

	if (c == NULL) {
		return;
	}
	pthread_mutex_lock(&c->mu);
	c->closing = 1;
	pthread_cond_broadcast(&c->cv);
	// Calls waiting for a batch end now, with CM_EUNAVAIL.
	flush_locked(c, cm_mono_ms(), &sends, &fails);
	pthread_mutex_unlock(&c->mu);
	flush_send(sends, fails, 0);
	if (c->watch_started) {
		pthread_join(c->watch, NULL);
	}
	if (c->resolver_started) {
		pthread_join(c->resolver, NULL);
	}
	// A completion that booked a re-send before closing was set may be
	// about to call nng_ctx_send: let it, so the stops below complete
	// that send too (a send on an already stopped aio might never call
	// back).
	while (atomic_load(&c->sending) > 0) {
		sched_yield();
	}
	// Stop every aio before closing any socket (nng 1.5.2 crashes when a
	// socket closes under an operation in progress): a call in flight
	// completes with NNG_ECANCELED, reported as CM_EUNAVAIL, and is not
	// re-sent since closing is set.
	for (int i = 0; i < c->nreps; i++) {
		for (size_t k = 0; k < c->reps[i]->nslots; k++) {
			nng_aio_stop(c->reps[i]->slots[k]->aio);
		}
	}
	client_free(c);
}

size_t
cm_rpc_client_stats(cm_rpc_client *c, cm_rpc_replica_stat *out, size_t max)
{
	size_t  n   = 0;
	int64_t now = cm_mono_ms();

	pthread_mutex_lock(&c->mu);
	for (int i = 0; i < c->nreps; i++) {
		rpc_replica         *r = c->reps[i];
		cm_rpc_replica_stat *s;

		if (r->removed) {
			continue;
		}
		if (n < max) {
			s = &out[n];
			snprintf(s->url, sizeof(s->url), "%s", r->url);
			s->connected = connected(r);
			s->stalled   = r->stalled || r->eject_until > now;
			s->serving   = r->serving;
			s->in_flight = r->inflight;
			s->sent      = r->sent;
			s->answered  = r->answered;
			s->resent    = r->resent;
			s->batched   = r->batched;
		}
		n++;
	}
	pthread_mutex_unlock(&c->mu);
	return (n);
}

// ---------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------

cm_err
cm_rpc_call_start(cm_rpc_client *c, const char *method,
    const cm_rpc_call_opts *o, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *reply_desc, cm_rpc_done_fn done,
    void *arg)
{
	rpc_op *op;
	size_t  plen;
	cm_err  err;

	if (c == NULL || o == NULL || req == NULL || reply_desc == NULL ||
	    done == NULL || o->timeout_ms <= 0) {
		return (CM_EINVAL);
	}
	op   = op_get(c);
	plen = protobuf_c_message_get_packed_size(req);
	grow(&op->pbuf, &op->pcap, plen);
	protobuf_c_message_pack(req, op->pbuf);
	err = op_pack(op, method, o->request_id, o->traceparent,
	    cm_now_ms() + o->timeout_ms, op->pbuf, plen);
	if (err != CM_OK) {
		op_put(c, op);
		return (err);
	}
	op->deadline   = cm_mono_ms() + o->timeout_ms;
	op->idempotent = o->idempotent;
	op->batch      = o->batch;
	op->affinity   = o->affinity;
	op->desc       = reply_desc;
	op->typed_done = done;
	op->arg        = arg;
	return (op_start(c, op));
}

cm_err
cm_rpc_call_async(cm_rpc_client *c, const char *method, const char *request_id,
    int timeout_ms, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *reply_desc, cm_rpc_done_fn done,
    void *arg)
{
	cm_rpc_call_opts o = {
		.request_id = request_id,
		.timeout_ms = timeout_ms,
	};

	return (cm_rpc_call_start(c, method, &o, req, reply_desc, done, arg));
}

cm_err
cm_rpc_call_async_traced(cm_rpc_client *c, const char *method,
    const char *request_id, const char *traceparent, int timeout_ms,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *reply_desc,
    cm_rpc_done_fn done, void *arg)
{
	cm_rpc_call_opts o = {
		.request_id  = request_id,
		.traceparent = traceparent,
		.timeout_ms  = timeout_ms,
	};

	return (cm_rpc_call_start(c, method, &o, req, reply_desc, done, arg));
}

// Blocking waiter used by the sync forms.
typedef struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	int             finished;
	cm_err          st;
	char            detail[CM_RPC_DETAIL_MAX];
	uint8_t        *payload;
	size_t          len;
} waiter;

static void
waiter_done(void *arg, const rpc_result *res)
{
	waiter *w = arg;

	pthread_mutex_lock(&w->mu);
	w->st = res->st;
	snprintf(w->detail, sizeof(w->detail), "%s",
	    res->detail != NULL ? res->detail : cm_strerror(res->st));
	if (res->st == CM_OK) {
		w->payload = cm_xmalloc(res->len > 0 ? res->len : 1);
		if (res->len > 0) {
			memcpy(w->payload, res->payload, res->len);
		}
		w->len = res->len;
	}
	w->finished = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

// Sends one envelope and waits for the answer; pin = 0 or the only
// replica (by id) to use.
static cm_err
call_wait(cm_rpc_client *c, const char *method, const char *rid,
    int64_t deadline, const uint8_t *payload, size_t len, int timeout_ms,
    uint64_t pin, uint8_t **out, size_t *out_len, char *detail,
    size_t detail_len)
{
	waiter  w;
	rpc_op *op;
	cm_err  err;

	if (c == NULL || timeout_ms <= 0) {
		return (CM_EINVAL);
	}
	memset(&w, 0, sizeof(w));
	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	op  = op_get(c);
	err = op_pack(op, method, rid, NULL, deadline, payload, len);
	if (err != CM_OK) {
		op_put(c, op);
	} else {
		op->deadline = cm_mono_ms() + timeout_ms;
		op->pin      = pin;
		op->raw_done = waiter_done;
		op->arg      = &w;
		err          = op_start(c, op);
	}
	if (err == CM_OK) {
		pthread_mutex_lock(&w.mu);
		while (!w.finished) {
			pthread_cond_wait(&w.cv, &w.mu);
		}
		pthread_mutex_unlock(&w.mu);
		err = w.st;
	} else {
		snprintf(w.detail, sizeof(w.detail), "%s", cm_strerror(err));
	}
	pthread_mutex_destroy(&w.mu);
	pthread_cond_destroy(&w.cv);
	if (err != CM_OK) {
		if (detail != NULL && detail_len > 0) {
			snprintf(detail, detail_len, "%s", w.detail);
		}
		free(w.payload);
		return (err);
	}
	*out     = w.payload;
	*out_len = w.len;
	return (CM_OK);
}

cm_err
cm_rpc_call_sync(cm_rpc_client *c, const char *method, const char *request_id,
    int timeout_ms, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply_out,
    char *detail, size_t detail_len)
{
	ProtobufCMessage *reply;
	uint8_t          *buf;
	uint8_t          *payload = NULL;
	size_t            len;
	size_t            plen = 0;
	cm_err            err;

	if (c == NULL || req == NULL || reply_desc == NULL ||
	    reply_out == NULL) {
		return (CM_EINVAL);
	}
	len = protobuf_c_message_get_packed_size(req);
	buf = cm_xmalloc(len > 0 ? len : 1);
	protobuf_c_message_pack(req, buf);
	err = call_wait(c, method, request_id, cm_now_ms() + timeout_ms, buf,
	    len, timeout_ms, 0, &payload, &plen, detail, detail_len);
	free(buf);
	if (err != CM_OK) {
		return (err);
	}
	reply = protobuf_c_message_unpack(reply_desc, NULL, plen, payload);
	free(payload);
	if (reply == NULL) {
		if (detail != NULL && detail_len > 0) {
			snprintf(
			    detail, detail_len, "undecodable reply payload");
		}
		return (CM_EINTERNAL);
	}
	*reply_out = reply;
	return (CM_OK);
}

cm_err
cm_rpc_call_raw_sync(cm_rpc_client *c, const char *method,
    const char *request_id, int64_t deadline_unix_ms, const void *payload,
    size_t payload_len, int timeout_ms, void **payload_out,
    size_t *payload_len_out, char *detail, size_t detail_len)
{
	uint8_t *out = NULL;
	size_t   len = 0;
	cm_err   err;

	if (c == NULL || payload_out == NULL || payload_len_out == NULL) {
		return (CM_EINVAL);
	}
	err = call_wait(c, method, request_id, deadline_unix_ms, payload,
	    payload_len, timeout_ms, 0, &out, &len, detail, detail_len);
	if (err != CM_OK) {
		return (err);
	}
	*payload_out     = out;
	*payload_len_out = len;
	return (CM_OK);
}

// ---------------------------------------------------------------------
// Health (client side)
// ---------------------------------------------------------------------

// One replica's Health (pin = its id): CM_OK serving, CM_EUNAVAIL not
// serving or unreachable (why says which), CM_ETIMEDOUT no answer in time,
// CM_EINTERNAL undecodable.
static cm_err
health_one(cm_rpc_client *c, uint64_t pin, const char *rid, int timeout_ms,
    char *why, size_t why_len, int *answered)
{
	Threadgate__Rpc__V1__HealthRequest hreq =
	    THREADGATE__RPC__V1__HEALTH_REQUEST__INIT;
	Threadgate__Rpc__V1__HealthReply *hr;
	uint8_t                           buf[16];
	uint8_t                          *payload = NULL;
	size_t                            plen    = 0;
	size_t                            len;
	cm_err                            err;

	*answered = 0;
	len       = threadgate__rpc__v1__health_request__pack(&hreq, buf);
	err = call_wait(c, CM_RPC_HEALTH_METHOD, rid, cm_now_ms() + timeout_ms,
	    buf, len, timeout_ms, pin, &payload, &plen, why, why_len);
	if (err != CM_OK) {
		return (err == CM_ETIMEDOUT || err == CM_EINTERNAL
		        ? err
		        : CM_EUNAVAIL);
	}
	*answered = 1;
	hr = threadgate__rpc__v1__health_reply__unpack(NULL, plen, payload);
	free(payload);
	if (hr == NULL) {
		snprintf(why, why_len, "undecodable Health reply");
		return (CM_EINTERNAL);
	}
	if (hr->status ==
	    THREADGATE__RPC__V1__SERVING_STATUS__SERVING_STATUS_SERVING) {
		err = CM_OK;
		snprintf(why, why_len, "serving");
	} else {
		err = CM_EUNAVAIL;
		snprintf(why, why_len, "%s",
		    hr->detail[0] != '\0' ? hr->detail
		        : hr->status ==
		            THREADGATE__RPC__V1__SERVING_STATUS__SERVING_STATUS_UNKNOWN
		        ? "starting"
		        : "not serving");
	}
	threadgate__rpc__v1__health_reply__free_unpacked(hr, NULL);
	return (err);
}

cm_err
cm_rpc_health(cm_rpc_client *c, const char *request_id, int timeout_ms,
    char *detail, size_t detail_len)
{
	uint64_t ids[CM_RPC_MAX_REPLICAS];
	char     why[CM_RPC_DETAIL_MAX]  = "no replica known";
	char     best[CM_RPC_DETAIL_MAX] = "";
	int64_t  end                     = cm_mono_ms() + timeout_ms;
	int      n                       = 0;
	cm_err   err                     = CM_EUNAVAIL;

	if (c == NULL || timeout_ms <= 0) {
		return (CM_EINVAL);
	}
	// Connected replicas first: asking one that is not costs a wait
	// for a connection.
	pthread_mutex_lock(&c->mu);
	for (int pass = 1; pass >= 0; pass--) {
		for (int i = 0; i < c->nreps; i++) {
			if (!c->reps[i]->removed &&
			    connected(c->reps[i]) == pass) {
				ids[n++] = c->reps[i]->id;
			}
		}
	}
	pthread_mutex_unlock(&c->mu);
	for (int i = 0; i < n; i++) {
		int64_t left = end - cm_mono_ms();
		int     answered;

		if (left <= 0) {
			break;
		}
		err = health_one(c, ids[i], request_id, (int) left, why,
		    sizeof(why), &answered);
		if (err == CM_OK) {
			break;
		}
		// A replica's own reason beats "could not reach another".
		if (answered && best[0] == '\0') {
			snprintf(best, sizeof(best), "%s", why);
		}
	}
	if (err != CM_OK && best[0] != '\0') {
		err = CM_EUNAVAIL;
		snprintf(why, sizeof(why), "%s", best);
	}
	if (detail != NULL && detail_len > 0) {
		snprintf(detail, detail_len, "%s", why);
	}
	return (err);
}

cm_err
cm_rpc_dial_url(const char *listen_url, char *out, size_t len)
{
	static const char *const schemes[] = { "tcp://", "tcp4://",
		"tcp6://" };
	const char              *host      = NULL;
	const char              *rest      = NULL;
	size_t                   slen      = 0;
	int                      n;

	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
		slen = strlen(schemes[i]);
		if (strncmp(listen_url, schemes[i], slen) == 0) {
			host = listen_url + slen;
			break;
		}
	}
	if (host != NULL) {
		// host is "", "*", "0.0.0.0" or "[::]" before the ':port'.
		if (host[0] == ':') {
			rest = host;
		} else if (strncmp(host, "*:", 2) == 0) {
			rest = host + 1;
		} else if (strncmp(host, "0.0.0.0:", 8) == 0) {
			rest = host + 7;
		} else if (strncmp(host, "[::]:", 5) == 0) {
			n = snprintf(out, len, "%.*s[::1]%s", (int) slen,
			    listen_url, host + 4);
			return (
			    n < 0 || (size_t) n >= len ? CM_ETOOBIG : CM_OK);
		}
	}
	if (rest != NULL) {
		n = snprintf(
		    out, len, "%.*s127.0.0.1%s", (int) slen, listen_url, rest);
	} else {
		n = snprintf(out, len, "%s", listen_url);
	}
	return (n < 0 || (size_t) n >= len ? CM_ETOOBIG : CM_OK);
}

int
cm_rpc_health_check_main(const char *listen_url, int timeout_ms)
{
	cm_rpc_client *c = NULL;
	char           url[1024];
	char           detail[CM_RPC_DETAIL_MAX];
	char           rid[CM_RID_LEN + 1];
	cm_err         err;

	if (listen_url == NULL ||
	    cm_rpc_dial_url(listen_url, url, sizeof(url)) != CM_OK ||
	    cm_rpc_client_open(url, &c) != CM_OK) {
		printf("not serving: cannot dial %s\n",
		    listen_url != NULL ? listen_url : "(no URL)");
		return (2);
	}
	cm_request_id(rid);
	err = cm_rpc_health(c, rid,
	    timeout_ms > 0 ? timeout_ms : CM_RPC_HEALTH_TIMEOUT_MS, detail,
	    sizeof(detail));
	cm_rpc_client_close(c);
	if (err == CM_OK) {
		printf("serving\n");
		return (0);
	}
	printf("not serving: %s\n", detail);
	return (1);
}
