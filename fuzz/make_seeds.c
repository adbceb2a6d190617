// SPDX-License-Identifier: MIT
//
// Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/),
// so they can be regenerated and reviewed: the committed seeds are this
// program's output. Usage: make_seeds <fuzz/corpus directory>.
// The auth seeds carry a real HS256 token signed with the fuzz targets'
// shared secret (valid until 2100), so the success path is in the corpus
// from the start; the protobuf seeds are packed with the real protos.
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "proto/auth.pb-c.h"
#include "proto/rpc.pb-c.h"
#include "proto/threads.pb-c.h"

#define FUZZ_SECRET "threadgate-fuzz-secret-0123456789abcdef"

static const char *root;

static void
put(const char *target, const char *name, const void *data, size_t len)
{
	char  path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, target);
	if (mkdir(path, 0755) != 0 && errno != EEXIST) {
		perror(path);
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/%s/%s", root, target, name);
	f = fopen(path, "wb");
	if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

static void
put_str(const char *target, const char *name, const char *s)
{
	put(target, name, s, strlen(s));
}

// put_sel() writes one selector byte, then s (for targets that take one).
static void
put_sel(const char *target, const char *name, uint8_t sel, const char *s)
{
	size_t   n   = strlen(s);
	uint8_t *buf = malloc(n + 1);

	buf[0] = sel;
	memcpy(buf + 1, s, n);
	put(target, name, buf, n + 1);
	free(buf);
}

static void
b64url(const uint8_t *in, size_t n, char *out)
{
	static const char a[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789-_";
	size_t o = 0;

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t) in[i] << 16;
		if (i + 1 < n) {
			v |= (uint32_t) in[i + 1] << 8;
		}
		if (i + 2 < n) {
			v |= in[i + 2];
		}
		out[o++] = a[(v >> 18) & 63];
		out[o++] = a[(v >> 12) & 63];
		if (i + 1 < n) {
			out[o++] = a[(v >> 6) & 63];
		}
		if (i + 2 < n) {
			out[o++] = a[v & 63];
		}
	}
	out[o] = '\0';
}

// jwt() signs payload with the fuzz secret (HS256) into out.
static void
jwt(const char *payload, char *out, size_t outsz)
{
	const char *header = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	char        h[256], p[1024], sig[128];
	uint8_t     mac[EVP_MAX_MD_SIZE];
	unsigned    maclen = 0;
	char        input[2048];

	b64url((const uint8_t *) header, strlen(header), h);
	b64url((const uint8_t *) payload, strlen(payload), p);
	snprintf(input, sizeof(input), "%s.%s", h, p);
	HMAC(EVP_sha256(), FUZZ_SECRET, (int) strlen(FUZZ_SECRET),
	    (const uint8_t *) input, strlen(input), mac, &maclen);
	b64url(mac, maclen, sig);
	snprintf(out, outsz, "%s.%s", input, sig);
}

// envelope_to() packs an rpc Request around a packed payload and writes
// it as a seed of target.
static void
envelope_to(const char *target, const char *name, const char *method,
    const void *payload, size_t plen)
{
	Threadgate__Rpc__V1__Request r = THREADGATE__RPC__V1__REQUEST__INIT;
	uint8_t                     *buf;
	size_t                       n;

	r.method           = (char *) method;
	r.request_id       = "seed";
	r.deadline_unix_ms = 0;
	r.payload.data     = (uint8_t *) payload;
	r.payload.len      = plen;
	n                  = threadgate__rpc__v1__request__get_packed_size(&r);
	buf                = malloc(n + 1);
	threadgate__rpc__v1__request__pack(&r, buf);
	put(target, name, buf, n);
	free(buf);
}

// envelope() is an auth-service seed.
static void
envelope(
    const char *name, const char *method, const void *payload, size_t plen)
{
	envelope_to("fuzz_auth_rpc", name, method, payload, plen);
}

// threads_seed() packs msg as the payload of a thread-service rpc seed.
static void
threads_seed(const char *name, const char *method, const ProtobufCMessage *msg)
{
	size_t   n   = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(n + 1);

	protobuf_c_message_pack(msg, buf);
	envelope_to("fuzz_threads_rpc", name, method, buf, n);
	free(buf);
}

// One request of every thread-service rpc, with the fields that reach the
// most code: filters, supersteps, updates, checkpoints, prune strategies.
static void
threads_seeds(void)
{
	static const char id[]  = "0192b0a8-1c2d-7e3f-8a4b-5c6d7e8f9a0b";
	static const char cid[] = "0192b0a8-1c2d-7e3f-8a4b-5c6d7e8f9a0c";
	char             *ids[] = { (char *) id };
	Threadgate__Threads__V1__CreateThreadRequest c =
	    THREADGATE__THREADS__V1__CREATE_THREAD_REQUEST__INIT;
	Threadgate__Threads__V1__ThreadRef ref =
	    THREADGATE__THREADS__V1__THREAD_REF__INIT;
	Threadgate__Threads__V1__UpdateThreadRequest u =
	    THREADGATE__THREADS__V1__UPDATE_THREAD_REQUEST__INIT;
	Threadgate__Threads__V1__SearchThreadsRequest s =
	    THREADGATE__THREADS__V1__SEARCH_THREADS_REQUEST__INIT;
	Threadgate__Threads__V1__CountThreadsRequest cn =
	    THREADGATE__THREADS__V1__COUNT_THREADS_REQUEST__INIT;
	Threadgate__Threads__V1__PruneThreadsRequest pr =
	    THREADGATE__THREADS__V1__PRUNE_THREADS_REQUEST__INIT;
	Threadgate__Threads__V1__GetStateRequest gs =
	    THREADGATE__THREADS__V1__GET_STATE_REQUEST__INIT;
	Threadgate__Threads__V1__UpdateStateRequest us =
	    THREADGATE__THREADS__V1__UPDATE_STATE_REQUEST__INIT;
	Threadgate__Threads__V1__PatchStateRequest ps =
	    THREADGATE__THREADS__V1__PATCH_STATE_REQUEST__INIT;
	Threadgate__Threads__V1__GetHistoryRequest h =
	    THREADGATE__THREADS__V1__GET_HISTORY_REQUEST__INIT;

	c.owner         = "fuzz-owner";
	c.thread_id     = (char *) id;
	c.metadata_json = "{\"kind\":\"x\",\"n\":1,\"tags\":[\"a\"]}";
	c.if_exists = THREADGATE__THREADS__V1__IF_EXISTS__IF_EXISTS_DO_NOTHING;
	c.ttl_minutes     = 5;
	c.supersteps_json = "[{\"updates\":[{\"values\":{\"m\":1},"
	                    "\"as_node\":\"a\"}]}]";
	threads_seed("create", "CreateThread", &c.base);
	ref.owner     = "fuzz-owner";
	ref.thread_id = (char *) id;
	threads_seed("get", "GetThread", &ref.base);
	threads_seed("delete", "DeleteThread", &ref.base);
	threads_seed("copy", "CopyThread", &ref.base);
	u.owner         = "fuzz-owner";
	u.thread_id     = (char *) id;
	u.metadata_json = "{\"kind\":\"y\"}";
	u.has_ttl       = 1;
	u.ttl_minutes   = 1;
	threads_seed("update", "UpdateThread", &u.base);
	s.owner         = "fuzz-owner";
	s.metadata_json = "{\"kind\":\"x\",\"tags\":[\"a\"]}";
	s.values_json   = "{\"m\":1}";
	s.ids           = ids;
	s.n_ids         = 1;
	s.status        = "idle";
	s.limit         = 10;
	s.offset        = 0;
	s.sort_by       = THREADGATE__THREADS__V1__SORT_BY__SORT_BY_UPDATED_AT;
	threads_seed("search", "SearchThreads", &s.base);
	cn.owner         = "fuzz-owner";
	cn.metadata_json = "{\"n\":1}";
	threads_seed("count", "CountThreads", &cn.base);
	pr.owner        = "fuzz-owner";
	pr.thread_ids   = ids;
	pr.n_thread_ids = 1;
	pr.strategy     = "keep_latest";
	threads_seed("prune", "PruneThreads", &pr.base);
	gs.owner         = "fuzz-owner";
	gs.thread_id     = (char *) id;
	gs.checkpoint_ns = "";
	threads_seed("get-state", "GetState", &gs.base);
	us.owner         = "fuzz-owner";
	us.thread_id     = (char *) id;
	us.values_json   = "[{\"a\":1},{\"b\":[1,2]}]";
	us.as_node       = "node";
	us.checkpoint_id = (char *) cid;
	threads_seed("update-state", "UpdateState", &us.base);
	ps.owner         = "fuzz-owner";
	ps.thread_id     = (char *) id;
	ps.metadata_json = "{\"p\":true}";
	threads_seed("patch-state", "PatchState", &ps.base);
	h.owner                = "fuzz-owner";
	h.thread_id            = (char *) id;
	h.limit                = 10;
	h.metadata_json        = "{\"source\":\"update\"}";
	h.before_checkpoint_id = (char *) cid;
	threads_seed("history", "GetHistory", &h.base);
}

static void
authenticate(const char *name, const char *const *authz, size_t n,
    const char *const *scopes, size_t ns)
{
	Threadgate__Auth__V1__AuthenticateRequest a =
	    THREADGATE__AUTH__V1__AUTHENTICATE_REQUEST__INIT;
	uint8_t *buf;
	size_t   len;

	a.n_authorization   = n;
	a.authorization     = (char **) authz;
	a.n_required_scopes = ns;
	a.required_scopes   = (char **) scopes;
	len = threadgate__auth__v1__authenticate_request__get_packed_size(&a);
	buf = malloc(len + 1);
	threadgate__auth__v1__authenticate_request__pack(&a, buf);
	envelope(name, "Authenticate", buf, len);
	free(buf);
}

static void
http_seeds(void)
{
	// head (without Content-Length) and body; bodies get their length.
	static const struct {
		const char *head;
		const char *body; // NULL: no Content-Length
	} reqs[] = {
		{ "GET /ok HTTP/1.1\r\nHost: x\r\n", NULL },
		{ "GET /threads/01a21aea-6f0c-7600-af02-7657fcc02ab1 "
		  "HTTP/1.1\r\n"
		  "Host: x\r\nAuthorization: Bearer t\r\n",
		    NULL },
		{ "POST /threads HTTP/1.1\r\nHost: x\r\n",
		    "{\"metadata\":{\"a\":1},\"if_exists\":\"do_nothing\","
		    "\"ttl\":5}" },
		{ "POST /threads/count HTTP/1.1\r\nHost: x\r\n",
		    "{\"metadata\":{\"k\":\"v\"},\"status\":\"idle\"}" },
		{ "POST /threads/search HTTP/1.1\r\nHost: x\r\n",
		    "{\"limit\":5,\"offset\":1,\"select\":[\"thread_id\","
		    "\"values\"],\"sort_by\":\"updated_at\",\"sort_order\":"
		    "\"asc\",\"ids\":[\"01a21aea-6f0c-7600-af02-"
		    "7657fcc02ab1\"]}" },
		{ "GET /threads/01a21aea-6f0c-7600-af02-7657fcc02ab1/history?"
		  "limit=3&before=01a21aea-6f0c-7600-af02-7657fcc02ab2 "
		  "HTTP/1.1\r\nHost: x\r\n",
		    NULL },
		{ "POST /threads/01a21aea-6f0c-7600-af02-7657fcc02ab1/history "
		  "HTTP/1.1\r\nHost: x\r\n",
		    "{\"limit\":2,\"before\":{\"configurable\":{\"checkpoint_"
		    "id\":"
		    "\"01a21aea-6f0c-7600-af02-7657fcc02ab2\"}}}" },
		{ "POST /threads/01a21aea-6f0c-7600-af02-7657fcc02ab1/state "
		  "HTTP/1.1\r\nHost: x\r\n",
		    "{\"values\":{\"x\":[1,2]},\"as_node\":\"agent\"}" },
		{ "PATCH /threads/01a21aea-6f0c-7600-af02-7657fcc02ab1/state "
		  "HTTP/1.1\r\nHost: x\r\n",
		    "{\"metadata\":{\"done\":true}}" },
		{ "PATCH /threads/01a21aea-6f0c-7600-af02-7657fcc02ab1 "
		  "HTTP/1.1\r\nHost: x\r\nPrefer: return=minimal\r\n",
		    "{\"metadata\":{\"a\":2},\"ttl\":{\"ttl\":3,\"strategy\":"
		    "\"delete\"}}" },
		{ "POST /threads/prune HTTP/1.1\r\nHost: x\r\n",
		    "{\"thread_ids\":[\"01a21aea-6f0c-7600-af02-"
		    "7657fcc02ab1\"],"
		    "\"strategy\":\"keep_latest\"}" },
		{ "OPTIONS * HTTP/1.1\r\nHost: x\r\n", NULL },
		{ "GET /ok HTTP/1.0\r\n", NULL },
	};
	char name[32], buf[1024];

	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		if (reqs[i].body != NULL) {
			snprintf(buf, sizeof(buf),
			    "%sContent-Length: %zu\r\n\r\n%s", reqs[i].head,
			    strlen(reqs[i].body), reqs[i].body);
		} else {
			snprintf(buf, sizeof(buf), "%s\r\n", reqs[i].head);
		}
		snprintf(name, sizeof(name), "req-%02zu", i);
		put_sel(
		    "fuzz_http_request", name, (uint8_t) (37 * i + 11), buf);
	}
	// A chunked body in two chunks, with an extension and a trailer.
	put_sel("fuzz_http_request", "req-chunked", 200,
	    "POST /threads/search HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n"
	    "a;x=1\r\n{\"limit\":5\r\n1\r\n}\r\n0\r\nT: v\r\n\r\n");
	// Refused framings, so the mutator starts next to the checks.
	put_sel("fuzz_http_request", "req-cl-te", 90,
	    "POST /threads HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
	put_sel("fuzz_http_request", "req-bare-lf", 30,
	    "GET /ok HTTP/1.1\nHost: x\n\n");
}

static void
render_seeds(void)
{
	static const char *docs[] = {
		"{\"a\":{\"b\":[1,2.5,-3e2,true,false,null]},\"s\":"
		"\"x\\\"y\"}",
		"[0,0,0,0,0,0,0,0]",
		"  {\"u\":\"\\u00e9\\ud83d\\ude00 caf\xc3\xa9\", "
		"\"n\":\"\\u0000\"} ",
		"\"just a string\"",
		"{}",
		"[[[[[[[[[[[]]]]]]]]]]]",
		"123456789012345678901234567890",
	};
	char name[32];

	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		snprintf(name, sizeof(name), "doc-%02zu", i);
		put_str("fuzz_reply_render", name, docs[i]);
	}
}

static void
auth_seeds(void)
{
	char        tok[2048], bearer[2100], expired[2048], bexp[2100];
	const char *payload =
	    "{\"iss\":\"https://fuzz.test/auth/v1\",\"aud\":\"authenticated\","
	    "\"sub\":\"0b6e5f3c-1111-4222-8333-944455556666\","
	    "\"exp\":4102444800,\"iat\":1700000000,\"email\":\"f@fuzz.test\","
	    "\"scope\":\"threads:read threads:write\",\"session_id\":\"s1\"}";
	const char *old =
	    "{\"iss\":\"https://fuzz.test/auth/v1\",\"aud\":\"authenticated\","
	    "\"sub\":\"u2\",\"exp\":1000}";

	jwt(payload, tok, sizeof(tok));
	jwt(old, expired, sizeof(expired));
	snprintf(bearer, sizeof(bearer), "Bearer %s", tok);
	snprintf(bexp, sizeof(bexp), "Bearer %s", expired);
	{
		const char *a1[] = { bearer };
		const char *a2[] = { bexp };
		const char *a3[] = { "Basic dXNlcjpwYXNz" };
		const char *a4[] = { bearer, bearer };
		const char *a5[] = { "Bearer not.a.jwt" };
		const char *sc[] = { "threads:read" };
		const char *sx[] = { "threads:admin" };
		authenticate("auth-valid", a1, 1, NULL, 0);
		authenticate("auth-scope-ok", a1, 1, sc, 1);
		authenticate("auth-scope-missing", a1, 1, sx, 1);
		authenticate("auth-expired", a2, 1, NULL, 0);
		authenticate("auth-basic", a3, 1, NULL, 0);
		authenticate("auth-two-headers", a4, 2, NULL, 0);
		authenticate("auth-garbage-token", a5, 1, NULL, 0);
		authenticate("auth-none", NULL, 0, NULL, 0);
	}
	envelope("stats", "Stats", "", 0);
	envelope("unknown-method", "Nope", "\x0a\x01x", 3);

	// fuzz_jwt: 0 = JWKS, 1 = payload, 2 = token.
	{
		char k[128], doc[512];
		b64url((const uint8_t *) FUZZ_SECRET, strlen(FUZZ_SECRET), k);
		snprintf(doc, sizeof(doc),
		    "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"k1\","
		    "\"alg\":\"HS256\",\"k\":\"%s\"}]}",
		    k);
		put_sel("fuzz_jwt", "jwks-oct", 0, doc);
	}
	// The P-256 public key of RFC 7515 appendix A.3.
	put_sel("fuzz_jwt", "jwks-ec", 0,
	    "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"ec1\","
	    "\"use\":\"sig\",\"alg\":\"ES256\","
	    "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
	    "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}]}");
	put_sel("fuzz_jwt", "jwks-empty", 0, "{\"keys\":[]}");
	put_sel("fuzz_jwt", "payload-valid", 1, payload);
	put_sel("fuzz_jwt", "payload-aud-list", 1,
	    "{\"iss\":\"https://fuzz.test/auth/v1\",\"aud\":[\"x\","
	    "\"authenticated\"],\"sub\":\"s\",\"exp\":1700000100,"
	    "\"nbf\":1699999990,\"scp\":[\"a\",\"b\"]}");
	put_sel("fuzz_jwt", "payload-escapes", 1,
	    "{\"sub\":\"\\u0061\\ud83d\\ude00\",\"exp\":1.7e9,"
	    "\"iss\":\"https:\\/\\/fuzz.test\\/auth\\/v1\"}");
	put_sel("fuzz_jwt", "token-valid", 2, tok);
	put_sel("fuzz_jwt", "token-expired", 2, expired);
}

static void
filter_seeds(void)
{
	static const struct {
		const char *doc;
		const char *filter;
	} pairs[] = {
		{ "{\"a\":{\"b\":1,\"c\":[1,2]},\"d\":\"x\"}",
		    "{\"a\":{\"b\":1}}" },
		{ "{\"a\":[1,2,{\"k\":null}]}", "{\"a\":[1,2,{\"k\":null}]}" },
		{ "{\"n\":1.0}", "{\"n\":1}" },
		{ "{}", "{}" },
		{ "[1,2]", "{\"0\":1}" },
		{ "{\"k\":\"v\"}", "\"v\"" },
	};
	char name[32];

	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		size_t dl = strlen(pairs[i].doc), fl = strlen(pairs[i].filter);
		char  *buf = malloc(dl + fl + 1);
		memcpy(buf, pairs[i].doc, dl);
		buf[dl] = '\0';
		memcpy(buf + dl + 1, pairs[i].filter, fl);
		snprintf(name, sizeof(name), "pair-%02zu", i);
		put("fuzz_json_filter", name, buf, dl + fl + 1);
		free(buf);
	}
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: make_seeds <corpus directory>\n");
		return (2);
	}
	root = argv[1];
	if (mkdir(root, 0755) != 0 && errno != EEXIST) {
		perror(root);
		return (1);
	}
	http_seeds();
	render_seeds();
	auth_seeds();
	filter_seeds();
	threads_seeds();
	return (0);
}
