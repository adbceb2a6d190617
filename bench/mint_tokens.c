// SPDX-License-Identifier: MIT
//
// mint_tokens: N fresh access tokens from a Supabase-compatible IdP (the
// dev IdP), one per line on stdout, for the cold-token benchmark (a
// benchmark tool, not a test).
//
// Walks a chain of refresh-token grants on one keep-alive connection:
// each POST /auth/v1/token?grant_type=refresh_token answers a new access
// token and the next refresh token.
//
// Usage: mint_tokens IDP_URL ANON_KEY REFRESH_TOKEN N
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "common/util.h"

// Most tokens minted in one run.
#define MINT_MAX 1000000
// Largest IdP answer read.
#define ANSWER_MAX (64 * 1024)

typedef struct buf {
	char   data[ANSWER_MAX];
	size_t len;
} buf;

static size_t
collect(char *p, size_t size, size_t n, void *arg)
{
	buf   *b = arg;
	size_t k = size * n;

	if (b->len + k >= sizeof(b->data)) {
		return (0);
	}
	memcpy(b->data + b->len, p, k);
	b->len += k;
	b->data[b->len] = '\0';
	return (k);
}

int
main(int argc, char **argv)
{
	CURL              *h;
	struct curl_slist *hdrs = NULL;
	char               url[1024];
	char               hdr[512];
	char               refresh[512];
	char               body[700];
	int64_t            n;
	buf               *b = calloc(1, sizeof(*b));

	if (argc != 5 || cm_parse_i64(argv[4], 1, MINT_MAX, &n) != CM_OK) {
		fprintf(stderr,
		    "usage: mint_tokens IDP_URL ANON_KEY REFRESH_TOKEN N\n");
		return (2);
	}
	snprintf(url, sizeof(url), "%s/auth/v1/token?grant_type=refresh_token",
	    argv[1]);
	snprintf(hdr, sizeof(hdr), "apikey: %s", argv[2]);
	snprintf(refresh, sizeof(refresh), "%s", argv[3]);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	h    = curl_easy_init();
	hdrs = curl_slist_append(hdrs, hdr);
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
	for (int64_t i = 0; i < n; i++) {
		json_t     *v;
		const char *at;
		const char *rt;
		long        code = 0;

		snprintf(
		    body, sizeof(body), "{\"refresh_token\":\"%s\"}", refresh);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		b->len = 0;
		if (curl_easy_perform(h) != CURLE_OK ||
		    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) !=
		        CURLE_OK ||
		    code != 200) {
			fprintf(stderr,
			    "mint_tokens: grant %lld failed (%ld)\n",
			    (long long) i, code);
			return (1);
		}
		v  = json_loadb(b->data, b->len, 0, NULL);
		at = json_string_value(json_object_get(v, "access_token"));
		rt = json_string_value(json_object_get(v, "refresh_token"));
		if (at == NULL || rt == NULL) {
			fprintf(
			    stderr, "mint_tokens: no token in %s\n", b->data);
			return (1);
		}
		printf("%s\n", at);
		snprintf(refresh, sizeof(refresh), "%s", rt);
		json_decref(v);
	}
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	curl_global_cleanup();
	free(b);
	return (0);
}
