// SPDX-License-Identifier: MIT
//
// libFuzzer target: the auth-service's JWT pieces that read untrusted
// bytes - the JWKS parser (an IdP's key document), the one-pass claims
// reader and the claim rules (a token's payload, after its signature
// checked: reached here directly, since the fuzzer cannot sign), and the
// whole token check of the jwt provider with a shared secret (shape,
// base64url, header, signature). No network.
//
// Input: one selector byte, then the bytes for that piece:
//   0  a JWKS document           -> auth_keyset_parse
//   1  a JWT payload (JSON)      -> auth_claims_scan + auth_jwt_check_claims
//   2  a bearer token            -> the jwt provider's verify
// Checks besides the sanitizers: a parsed key set holds at most
// AUTH_JWKS_MAX_KEYS keys; a string claim decodes within its cap; an
// accepted payload yields a non-empty identity without control bytes.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth-service/claims.h"
#include "auth-service/jwt.h"
#include "auth-service/service.h"
#include "common/log.h"
#include "common/xalloc.h"

#define FUZZ_SECRET "threadgate-fuzz-secret-0123456789abcdef"
// The claim values decoded per payload (the identity cap is ours).
#define CLAIM_TEXT_MAX 512

static auth_config    cfg;
static auth_provider *provider;
static auth_worker    worker;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char *args[] = { "fuzz_jwt", NULL };
	int   exit_now;

	(void) argc;
	(void) argv;
	cm_log_init("fuzz", CM_LOG_ERROR);
	setenv("AUTH_SERVICE_URL", "inproc://fuzz-jwt", 1);
	setenv("AUTH_PROVIDER", "jwt", 1);
	setenv("AUTH_JWT_SECRET", FUZZ_SECRET, 1);
	setenv("AUTH_ISSUER", "https://fuzz.test/auth/v1", 1);
	setenv("AUTH_AUDIENCE", "authenticated", 1);
	if (auth_config_load(1, args, &cfg, &exit_now) != CM_OK ||
	    auth_provider_new(&cfg, &provider) != CM_OK) {
		fprintf(stderr, "fuzz_jwt: cannot set up\n");
		abort();
	}
	return (0);
}

static void
jwks(const char *buf, size_t len)
{
	auth_keyset *ks = NULL;
	char         detail[128];

	if (len > AUTH_IDP_BODY_MAX) {
		return;
	}
	if (auth_keyset_parse(buf, len, AUTH_ALG_ALL, &ks, detail,
	        sizeof(detail)) == CM_OK) {
		if (ks->n > AUTH_JWKS_MAX_KEYS) {
			abort();
		}
		for (int i = 0; i < ks->n; i++) {
			(void) auth_keyset_find(ks, ks->keys[i].kid);
		}
		auth_keyset_rele(ks);
	}
}

static void
claims(const char *buf, size_t len)
{
	static const char *const names[] = { "exp", "nbf", "iat", "iss", "aud",
		"sub", "email", "scope", "scp" };
	auth_claim               out[sizeof(names) / sizeof(names[0])];
	auth_result              res;
	char                     text[CLAIM_TEXT_MAX];
	char                     detail[128];

	if (auth_claims_scan(buf, len, names, sizeof(names) / sizeof(names[0]),
	        out) == CM_OK) {
		for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
			size_t          n;
			auth_claim_iter it;
			auth_claim      e;
			if (auth_claims_str(&out[k], text, sizeof(text), &n) ==
			        CM_OK &&
			    n >= sizeof(text)) {
				abort();
			}
			(void) auth_claims_str_eq(&out[k], "authenticated");
			(void) auth_claims_str_clean(&out[k]);
			auth_claims_iter_init(&out[k], &it);
			while (auth_claims_next(&it, &e)) {
				(void) auth_claims_str(
				    &e, text, sizeof(text), &n);
			}
		}
	}
	// The rules, at a fixed "now" inside the seeds' validity.
	if (auth_jwt_check_claims(&cfg, "https://fuzz.test/auth/v1", buf, len,
	        1700000000, &res, detail, sizeof(detail)) == CM_OK) {
		if (res.identity[0] == '\0') {
			abort();
		}
		for (const char *c = res.identity; *c; c++) {
			if ((unsigned char) *c < 0x20 || *c == 0x7f) {
				abort();
			}
		}
	}
}

static void
token(const char *buf, size_t len)
{
	char       *t = cm_xmalloc(len + 1);
	auth_result res;
	char        detail[128];

	// verify() takes a NUL-terminated token (the header parser has
	// already bounded it and refused whitespace and controls).
	memcpy(t, buf, len);
	t[len] = '\0';
	if (len >= 1 && len <= AUTH_TOKEN_MAX && strlen(t) == len) {
		(void) provider->verify(
		    provider, &worker, t, &res, detail, sizeof(detail));
	}
	free(t);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *) data + 1;

	if (size < 1) {
		return (0);
	}
	switch (data[0] % 3) {
	case 0:
		jwks(buf, size - 1);
		break;
	case 1:
		claims(buf, size - 1);
		break;
	default:
		token(buf, size - 1);
		break;
	}
	return (0);
}
