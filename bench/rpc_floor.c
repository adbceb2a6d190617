// SPDX-License-Identifier: MIT
//
// rpc_floor: what one request in flight costs below threadgate's own code,
// on this machine (not a test; make bench prints it next to the full
// path's one-connection latency). Round trips of a 100-byte message, one
// at a time, between two processes:
//   socket  a Unix stream socketpair, blocking read/write: the kernel's
//           floor, two wake-ups per round trip;
//   nng     bare nng REQ/REP over ipc://, a context and an aio callback on
//           each side, exactly the pattern common/rpc.c and rpc_client.c
//           use (the reply sent from the receive callback, the caller
//           waiting on a condition variable);
//   rpc     threadgate's rpc layer against a running server (URL given):
//           a Health call through cm_rpc_client and cm_rpc_server.
// Prints p50/p99 in microseconds for each.
//
// Usage: rpc_floor N [URL]
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "common/rpc.h"
#include "common/util.h"

// Bytes of each message (about a GetThread request's envelope).
#define MSG_LEN 100
// Most round trips measured.
#define N_MAX 1000000
// Round trips before measuring.
#define WARMUP 200

static void
report(const char *what, int64_t *us, int n)
{
	qsort(us, (size_t) n, sizeof(*us), cm_cmp_i64);
	printf("%-8s p50_us=%lld p99_us=%lld\n", what, (long long) us[n / 2],
	    (long long) us[(int) (n * 0.99)]);
}

// ---------------------------------------------------------------------
// socket
// ---------------------------------------------------------------------

static int
full_io(int fd, char *buf, int wr)
{
	size_t done = 0;

	while (done < MSG_LEN) {
		ssize_t k = wr ? write(fd, buf + done, MSG_LEN - done)
		               : read(fd, buf + done, MSG_LEN - done);

		if (k <= 0) {
			return (-1);
		}
		done += (size_t) k;
	}
	return (0);
}

static void
run_socket(int n, int64_t *us)
{
	int   sv[2];
	char  buf[MSG_LEN] = { 0 };
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 ||
	    (pid = fork()) < 0) {
		perror("rpc_floor: socket");
		exit(1);
	}
	if (pid == 0) {
		close(sv[0]);
		while (full_io(sv[1], buf, 0) == 0 &&
		    full_io(sv[1], buf, 1) == 0) {
		}
		_exit(0);
	}
	close(sv[1]);
	for (int i = 0; i < WARMUP + n; i++) {
		int64_t t0 = cm_mono_us();

		if (full_io(sv[0], buf, 1) != 0 ||
		    full_io(sv[0], buf, 0) != 0) {
			fprintf(stderr, "rpc_floor: socket peer gone\n");
			exit(1);
		}
		if (i >= WARMUP) {
			us[i - WARMUP] = cm_mono_us() - t0;
		}
	}
	close(sv[0]);
	waitpid(pid, NULL, 0);
}

// ---------------------------------------------------------------------
// nng
// ---------------------------------------------------------------------

typedef struct {
	nng_ctx  ctx;
	nng_aio *aio;
	int      sending;
	// client side: a reply came
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	int             done;
} side;

static void
echo_cb(void *arg)
{
	side *s = arg;

	if (nng_aio_result(s->aio) != 0) {
		if (s->sending) {
			nng_msg_free(nng_aio_get_msg(s->aio));
		}
		return;
	}
	if (s->sending) {
		s->sending = 0;
		nng_ctx_recv(s->ctx, s->aio);
		return;
	}
	s->sending = 1;
	nng_ctx_send(s->ctx, s->aio); // the request back as the reply
}

static void
call_cb(void *arg)
{
	side *s = arg;

	if (s->sending) {
		s->sending = 0;
		if (nng_aio_result(s->aio) == 0) {
			nng_ctx_recv(s->ctx, s->aio);
			return;
		}
		nng_msg_free(nng_aio_get_msg(s->aio));
	} else if (nng_aio_result(s->aio) == 0) {
		nng_msg_free(nng_aio_get_msg(s->aio));
	}
	pthread_mutex_lock(&s->mu);
	s->done = 1;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static void
run_nng(int n, int64_t *us, const char *url)
{
	int        ready[2];
	char       b = 0;
	pid_t      pid;
	nng_socket sock;
	side       s = { .mu = PTHREAD_MUTEX_INITIALIZER,
		      .cv    = PTHREAD_COND_INITIALIZER };

	if (pipe(ready) != 0 || (pid = fork()) < 0) {
		perror("rpc_floor: nng");
		exit(1);
	}
	if (pid == 0) {
		if (nng_rep0_open(&sock) != 0 ||
		    nng_listen(sock, url, NULL, 0) != 0 ||
		    nng_ctx_open(&s.ctx, sock) != 0 ||
		    nng_aio_alloc(&s.aio, echo_cb, &s) != 0) {
			_exit(1);
		}
		nng_ctx_recv(s.ctx, s.aio);
		if (write(ready[1], &b, 1) != 1) {
			_exit(1);
		}
		pause(); // until killed
		_exit(0);
	}
	if (read(ready[0], &b, 1) != 1 || nng_req0_open(&sock) != 0 ||
	    nng_dial(sock, url, NULL, 0) != 0 ||
	    nng_ctx_open(&s.ctx, sock) != 0 ||
	    nng_aio_alloc(&s.aio, call_cb, &s) != 0) {
		fprintf(stderr, "rpc_floor: nng set-up failed\n");
		kill(pid, SIGKILL);
		exit(1);
	}
	for (int i = 0; i < WARMUP + n; i++) {
		int64_t  t0 = cm_mono_us();
		nng_msg *m;

		if (nng_msg_alloc(&m, MSG_LEN) != 0) {
			exit(1);
		}
		s.done    = 0;
		s.sending = 1;
		nng_aio_set_msg(s.aio, m);
		nng_ctx_send(s.ctx, s.aio);
		pthread_mutex_lock(&s.mu);
		while (!s.done) {
			pthread_cond_wait(&s.cv, &s.mu);
		}
		pthread_mutex_unlock(&s.mu);
		if (i >= WARMUP) {
			us[i - WARMUP] = cm_mono_us() - t0;
		}
	}
	nng_close(sock);
	nng_aio_free(s.aio);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

// ---------------------------------------------------------------------
// rpc
// ---------------------------------------------------------------------

static void
run_rpc(int n, int64_t *us, const char *url)
{
	cm_rpc_client *c;
	char           detail[CM_RPC_DETAIL_MAX];

	if (cm_rpc_client_open(url, &c) != CM_OK) {
		fprintf(stderr, "rpc_floor: cannot open %s\n", url);
		exit(1);
	}
	for (int i = 0; i < WARMUP + n; i++) {
		int64_t t0  = cm_mono_us();
		void   *out = NULL;
		size_t  len = 0;

		if (cm_rpc_call_raw_sync(c, CM_RPC_HEALTH_METHOD, "", 0, NULL,
		        0, 2000, &out, &len, detail,
		        sizeof(detail)) != CM_OK) {
			fprintf(stderr, "rpc_floor: Health: %s\n", detail);
			exit(1);
		}
		free(out);
		if (i >= WARMUP) {
			us[i - WARMUP] = cm_mono_us() - t0;
		}
	}
	cm_rpc_client_close(c);
}

int
main(int argc, char **argv)
{
	int64_t  n = 0;
	int64_t *us;
	char     url[64];

	if (argc < 2 || argc > 3 ||
	    cm_parse_i64(argv[1], 1, N_MAX, &n) != CM_OK) {
		fprintf(stderr, "usage: rpc_floor N (1..%d) [URL]\n", N_MAX);
		return (2);
	}
	us = calloc((size_t) n, sizeof(*us));
	if (us == NULL) {
		return (1);
	}
	run_socket((int) n, us);
	report("socket", us, (int) n);
	snprintf(url, sizeof(url), "ipc:///tmp/rpc_floor.%d", (int) getpid());
	run_nng((int) n, us, url);
	unlink(url + strlen("ipc://"));
	report("nng", us, (int) n);
	if (argc == 3) {
		run_rpc((int) n, us, argv[2]);
		report("rpc", us, (int) n);
	}
	free(us);
	return (0);
}
