// SPDX-License-Identifier: MIT
//
// Micro-benchmark of the Authenticate cache-hit path inside the
// auth-service (no transport): header parsing, key hashing, sharded cache
// lookup, counters. Not a test: run it by hand,
//   <build>/auth-service/threadgate-auth-bench [iterations]
// and compare with the issue-4 target of <= 5 us per hit.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth-service/service.h"
#include "common/util.h"

// Token sizes measured: a short opaque token and a typical ~1 KiB JWT.
static const size_t token_sizes[] = { 32, 1024 };

int
main(int argc, char **argv)
{
	int64_t iters = 1000000;

	if (argc > 1 &&
	    cm_parse_i64(argv[1], 1, 1000000000, &iters) != CM_OK) {
		fprintf(stderr, "usage: %s [iterations]\n", argv[0]);
		return (2);
	}
	for (size_t s = 0; s < sizeof(token_sizes) / sizeof(token_sizes[0]);
	     s++) {
		size_t         tl       = token_sizes[s];
		char          *tok      = malloc(tl + 1);
		char          *json     = malloc(tl + 128);
		char          *hdr      = malloc(tl + 16);
		const char    *authz[1] = { hdr };
		auth_config    cfg;
		auth_provider *p   = NULL;
		auth_server   *srv = NULL;
		auth_worker    w   = { 0 };
		auth_result    r;
		char           detail[128];
		int64_t        t0, t1;

		memset(tok, 'a', tl);
		tok[tl] = '\0';
		snprintf(json, tl + 128,
		    "{\"%s\":{\"identity\":\"bench-user\"}}", tok);
		snprintf(hdr, tl + 16, "Bearer %s", tok);
		memset(&cfg, 0, sizeof(cfg));
		cfg.cache_ttl_s    = 60;
		cfg.cache_max      = 1000;
		cfg.idp_timeout_ms = 2000;
		cfg.provider       = AUTH_PROVIDER_STATIC;
		if (auth_static_new_from_buffer(json, strlen(json), &p, detail,
		        sizeof(detail)) != CM_OK ||
		    auth_server_new_local(&cfg, p, &srv) != CM_OK) {
			fprintf(stderr, "setup failed: %s\n", detail);
			return (1);
		}
		// First call fills the cache.
		if (auth_authenticate(srv, &w, authz, 1, NULL, 0, 0, &r,
		        detail, sizeof(detail), NULL) != CM_OK) {
			fprintf(stderr, "first call failed: %s\n", detail);
			return (1);
		}
		t0 = cm_now_us();
		for (int64_t i = 0; i < iters; i++) {
			if (auth_authenticate(srv, &w, authz, 1, NULL, 0, 0,
			        &r, detail, sizeof(detail), NULL) != CM_OK) {
				fprintf(stderr, "call failed\n");
				return (1);
			}
		}
		t1 = cm_now_us();
		printf("cache hit, %zu-byte token: %.3f us/op (%lld ops)\n",
		    tl, (double) (t1 - t0) / (double) iters,
		    (long long) iters);
		auth_server_stop(srv);
		p->destroy(p);
		free(tok);
		free(json);
		free(hdr);
	}
	return (0);
}
