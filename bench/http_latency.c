// SPDX-License-Identifier: MIT
//
// http_latency: per-request latency through the gateway, one connection
// at a time (a benchmark tool, not a test).
//
// Sends N requests back to back on one keep-alive connection (after a
// warm-up) and prints p50 / p99 / max in milliseconds, the rate and the
// number of non-2xx answers. "{id}" in the path is replaced, per request,
// by a random line of the ids file. --conns C spreads the N requests over
// C connections (threads) sending at once. --tokens FILE gives every
// request a bearer token of its own (the lines of FILE, each used once:
// a cold token the auth-service has never seen; N is capped at the number
// of tokens). With --bg K, K more threads (each its own connection) send
// the background request in a loop for as long as the measurement runs:
// that is the head-of-line figure (how a point read fares while slow
// requests occupy the service).
//
// Usage:
//   http_latency BASE_URL TOKEN N METHOD PATH [BODY]
//       [--ids FILE] [--warmup N] [--conns C] [--tokens FILE]
//       [--bg K BG_METHOD BG_PATH BG_BODY]
// Output (one line): name=value pairs, e.g.
//   n=2000 p50_ms=0.31 p99_ms=0.92 max_ms=3.10 rps=3200 errors=0
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "common/util.h"

// Most requests measured in one run.
#define LAT_N_MAX 1000000
// Most ids read from the ids file.
#define IDS_MAX 100000
// Most background threads, and most measuring connections.
#define BG_MAX 64
// Most tokens read from a tokens file.
#define TOKENS_MAX 1000000
// Longest token line accepted.
#define TOKEN_LINE_MAX 4096
// Longest URL built.
#define URL_MAX 2048

typedef struct req_spec {
	const char *method;
	const char *path;
	const char *body;
} req_spec;

static const char *base;
static char        auth_header[9000];
static char      **ids;
static size_t      nids;
static atomic_int  stop_bg;
static char      **tokens;
static size_t      ntokens;
static atomic_long next_token;
static atomic_long bg_done;
static atomic_long bg_errors;

static size_t
discard(char *p, size_t size, size_t n, void *arg)
{
	(void) p;
	(void) arg;
	return (size * n);
}

// Fills url from spec, replacing "{id}" with a random sampled id.
static void
make_url(const req_spec *s, unsigned *seed, char *url, size_t len)
{
	const char *at = strstr(s->path, "{id}");

	if (at == NULL || nids == 0) {
		snprintf(url, len, "%s%s", base, s->path);
		return;
	}
	snprintf(url, len, "%s%.*s%s%s", base, (int) (at - s->path), s->path,
	    ids[(size_t) rand_r(seed) % nids], at + 4);
}

// One request on h; returns its HTTP status (0 on a transport error).
// With a tokens file, each call takes the next token.
static long
one(CURL *h, struct curl_slist *hdrs, const req_spec *s, unsigned *seed)
{
	char               url[URL_MAX];
	char               auth[TOKEN_LINE_MAX + 32];
	struct curl_slist *own  = NULL;
	long               code = 0;

	make_url(s, seed, url, sizeof(url));
	if (ntokens > 0) {
		long i = atomic_fetch_add(&next_token, 1);

		snprintf(auth, sizeof(auth), "Authorization: Bearer %s",
		    tokens[(size_t) i % ntokens]);
		own = curl_slist_append(own, auth);
		own = curl_slist_append(own, "Content-Type: application/json");
		hdrs = own;
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, s->method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	if (s->body != NULL) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, s->body);
	} else {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, s->method);
	}
	if (curl_easy_perform(h) == CURLE_OK) {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	}
	curl_slist_free_all(own);
	return (code);
}

static CURL *
handle(void)
{
	CURL *h = curl_easy_init();

	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	return (h);
}

static struct curl_slist *
headers(void)
{
	struct curl_slist *h = NULL;

	h = curl_slist_append(h, auth_header);
	h = curl_slist_append(h, "Content-Type: application/json");
	return (h);
}

static void *
bg_main(void *arg)
{
	const req_spec    *s    = arg;
	CURL              *h    = handle();
	struct curl_slist *hdrs = headers();
	unsigned           seed = (unsigned) (uintptr_t) &h;

	while (!atomic_load(&stop_bg)) {
		long code = one(h, hdrs, s, &seed);

		atomic_fetch_add(&bg_done, 1);
		if (code < 200 || code > 299) {
			atomic_fetch_add(&bg_errors, 1);
		}
	}
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return (NULL);
}

static void
read_tokens(const char *path)
{
	FILE *f = fopen(path, "r");
	char *line;

	if (f == NULL) {
		perror(path);
		exit(1);
	}
	line   = malloc(TOKEN_LINE_MAX);
	tokens = calloc(TOKENS_MAX, sizeof(char *));
	while (
	    ntokens < TOKENS_MAX && fgets(line, TOKEN_LINE_MAX, f) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] != '\0') {
			tokens[ntokens++] = strdup(line);
		}
	}
	free(line);
	fclose(f);
}

// One measuring connection: requests [first, first + n) of lat.
typedef struct fg_arg {
	const req_spec *s;
	int64_t        *lat;
	int64_t         first;
	int64_t         n;
	int64_t         errors;
	pthread_t       thread;
} fg_arg;

static void *
fg_main(void *arg)
{
	fg_arg            *a    = arg;
	CURL              *h    = handle();
	struct curl_slist *hdrs = headers();
	unsigned           seed = (unsigned) (a->first + 7);

	for (int64_t i = 0; i < a->n; i++) {
		int64_t t0 = cm_mono_us();
		long    code;

		code                 = one(h, hdrs, a->s, &seed);
		a->lat[a->first + i] = cm_mono_us() - t0;
		if (code < 200 || code > 299) {
			a->errors++;
		}
	}
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return (NULL);
}

static void
read_ids(const char *path)
{
	FILE *f = fopen(path, "r");
	char  line[128];

	if (f == NULL) {
		perror(path);
		exit(1);
	}
	ids = calloc(IDS_MAX, sizeof(char *));
	while (nids < IDS_MAX && fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] != '\0') {
			ids[nids++] = strdup(line);
		}
	}
	fclose(f);
}

int
main(int argc, char **argv)
{
	req_spec           fg = { 0 };
	req_spec           bg = { 0 };
	pthread_t          th[BG_MAX];
	int64_t            n;
	int64_t            warmup = 100;
	int64_t            nbg    = 0;
	int64_t            conns  = 1;
	int64_t            t_run;
	fg_arg             fa[BG_MAX];
	int64_t           *lat;
	int64_t            errors = 0;
	CURL              *h;
	struct curl_slist *hdrs;
	unsigned           seed = 12345;
	int                ai;

	if (argc < 6 || cm_parse_i64(argv[3], 1, LAT_N_MAX, &n) != CM_OK) {
		fprintf(stderr,
		    "usage: http_latency BASE_URL TOKEN N METHOD PATH [BODY] "
		    "[--ids FILE] [--warmup N] [--bg K METHOD PATH BODY]\n");
		return (2);
	}
	base = argv[1];
	snprintf(auth_header, sizeof(auth_header), "Authorization: Bearer %s",
	    argv[2]);
	fg.method = argv[4];
	fg.path   = argv[5];
	ai        = 6;
	if (ai < argc && strncmp(argv[ai], "--", 2) != 0) {
		fg.body = argv[ai++];
	}
	while (ai < argc) {
		if (strcmp(argv[ai], "--ids") == 0 && ai + 1 < argc) {
			read_ids(argv[ai + 1]);
			ai += 2;
		} else if (strcmp(argv[ai], "--warmup") == 0 &&
		    ai + 1 < argc &&
		    cm_parse_i64(argv[ai + 1], 0, LAT_N_MAX, &warmup) ==
		        CM_OK) {
			ai += 2;
		} else if (strcmp(argv[ai], "--conns") == 0 && ai + 1 < argc &&
		    cm_parse_i64(argv[ai + 1], 1, BG_MAX, &conns) == CM_OK) {
			ai += 2;
		} else if (strcmp(argv[ai], "--tokens") == 0 &&
		    ai + 1 < argc) {
			read_tokens(argv[ai + 1]);
			ai += 2;
		} else if (strcmp(argv[ai], "--bg") == 0 && ai + 4 < argc &&
		    cm_parse_i64(argv[ai + 1], 1, BG_MAX, &nbg) == CM_OK) {
			bg.method = argv[ai + 2];
			bg.path   = argv[ai + 3];
			bg.body   = argv[ai + 4];
			ai += 5;
		} else {
			fprintf(stderr, "http_latency: bad argument %s\n",
			    argv[ai]);
			return (2);
		}
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	lat  = calloc((size_t) n, sizeof(int64_t));
	h    = handle();
	hdrs = headers();
	for (int64_t i = 0; i < warmup; i++) {
		(void) one(h, hdrs, &fg, &seed);
	}
	for (int i = 0; i < nbg; i++) {
		pthread_create(&th[i], NULL, bg_main, &bg);
	}
	// Let every background connection get its first request in flight.
	while (nbg > 0 && atomic_load(&bg_done) == 0) {
		struct timespec ts = { 0, 10 * 1000000L };

		nanosleep(&ts, NULL);
	}
	if (ntokens > 0 && (size_t) n > ntokens) {
		n = (int64_t) ntokens; // every token once
	}
	t_run = cm_mono_us();
	for (int64_t c = 0; c < conns; c++) {
		fa[c].s      = &fg;
		fa[c].lat    = lat;
		fa[c].first  = n * c / conns;
		fa[c].n      = n * (c + 1) / conns - fa[c].first;
		fa[c].errors = 0;
		pthread_create(&fa[c].thread, NULL, fg_main, &fa[c]);
	}
	for (int64_t c = 0; c < conns; c++) {
		pthread_join(fa[c].thread, NULL);
		errors += fa[c].errors;
	}
	t_run = cm_mono_us() - t_run;
	atomic_store(&stop_bg, 1);
	for (int i = 0; i < nbg; i++) {
		pthread_join(th[i], NULL);
	}
	qsort(lat, (size_t) n, sizeof(int64_t), cm_cmp_i64);
	printf("n=%lld p50_ms=%.3f p99_ms=%.3f max_ms=%.2f rps=%.0f "
	       "errors=%lld",
	    (long long) n, lat[n / 2] / 1000.0, lat[(n * 99) / 100] / 1000.0,
	    lat[n - 1] / 1000.0, t_run > 0 ? n * 1e6 / (double) t_run : 0.0,
	    (long long) errors);
	if (nbg > 0) {
		printf(" bg_done=%ld bg_errors=%ld", atomic_load(&bg_done),
		    atomic_load(&bg_errors));
	}
	printf("\n");
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	curl_global_cleanup();
	return (0);
}
