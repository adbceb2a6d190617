// SPDX-License-Identifier: MIT
//
// The route table: method + path pattern -> route. Patterns are written
// as "/threads/{id}/state/{cid}"; {id} is a thread id and {cid} a
// checkpoint id, both UUIDs. The raw path is split on '/' first and each
// segment percent-decoded after, so an encoded slash stays inside its
// segment. A path that matches no pattern is 404; a path that matches
// with another method is 405 with the allowed methods. Also here: the
// request-id rule and the unauthenticated meta routes (/ok, /info).
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "gateway/gw.h"

// The table: everything about a route. Order does not matter: the most
// literal match wins. Per row: id, method, pattern, action (GW_ACT_NONE:
// unauthenticated), the thread-service rpc and its reply type, whether a
// body is read, the builder and renderer, the re-send rule (gw_retry)
// with why, and whether it may be batched (point reads only).
#define META(id, m, p)                                            \
	{                                                         \
		id, m, p, GW_ACT_NONE, NULL, NULL, 0, NULL, NULL, \
		    GW_RETRY_NO, 0                                \
	}
#define TH(name) &threadgate__threads__v1__##name##__descriptor

static const gw_route routes[] = {
	META(GW_R_OK, "GET", "/ok"),
	META(GW_R_INFO, "GET", "/info"),
	{ GW_R_THREAD_CREATE, "POST", "/threads", GW_ACT_CREATE,
	    "CreateThread", TH(thread), 1, gw_build_create, gw_render_thread,
	    GW_RETRY_CREATE },
	{ GW_R_THREAD_GET, "GET", "/threads/{id}", GW_ACT_READ, "GetThread",
	    TH(thread), 0, gw_build_ref, gw_render_thread, GW_RETRY_READ, 1 },
	// A metadata merge re-applied after another request's merge would
	// undo that one (lost update).
	{ GW_R_THREAD_PATCH, "PATCH", "/threads/{id}", GW_ACT_UPDATE,
	    "UpdateThread", TH(thread), 1, gw_build_patch, gw_render_thread,
	    GW_RETRY_NO },
	// A second delete answers 404 for a thread the first deleted, or
	// deletes a thread re-created in between.
	{ GW_R_THREAD_DELETE, "DELETE", "/threads/{id}", GW_ACT_DELETE,
	    "DeleteThread", TH(empty), 0, gw_build_ref, gw_render_no_content,
	    GW_RETRY_NO },
	{ GW_R_THREAD_SEARCH, "POST", "/threads/search", GW_ACT_SEARCH,
	    "SearchThreads", TH(search_threads_reply), 1, gw_build_search,
	    gw_render_search, GW_RETRY_READ },
	{ GW_R_THREAD_COUNT, "POST", "/threads/count", GW_ACT_SEARCH,
	    "CountThreads", TH(count_reply), 1, gw_build_count,
	    gw_render_count, GW_RETRY_READ },
	// The service picks the new id, so a second attempt makes a second
	// copy.
	{ GW_R_THREAD_COPY, "POST", "/threads/{id}/copy", GW_ACT_CREATE,
	    "CopyThread", TH(thread), 0, gw_build_ref, gw_render_thread,
	    GW_RETRY_NO },
	// keep_latest re-applied trims checkpoints written in between; the
	// pruned count would be wrong.
	{ GW_R_THREAD_PRUNE, "POST", "/threads/prune", GW_ACT_DELETE,
	    "PruneThreads", TH(prune_threads_reply), 1, gw_build_prune,
	    gw_render_prune, GW_RETRY_NO },
	{ GW_R_STATE_GET, "GET", "/threads/{id}/state", GW_ACT_READ,
	    "GetState", TH(state_reply), 0, gw_build_state_get,
	    gw_render_state, GW_RETRY_READ, 1 },
	{ GW_R_STATE_GET_AT, "GET", "/threads/{id}/state/{cid}", GW_ACT_READ,
	    "GetState", TH(state_reply), 0, gw_build_state_get,
	    gw_render_state, GW_RETRY_READ, 1 },
	{ GW_R_STATE_CHECKPOINT, "POST", "/threads/{id}/state/checkpoint",
	    GW_ACT_READ, "GetState", TH(state_reply), 1,
	    gw_build_state_checkpoint, gw_render_state, GW_RETRY_READ, 1 },
	// Every update stores a new checkpoint.
	{ GW_R_STATE_UPDATE, "POST", "/threads/{id}/state", GW_ACT_UPDATE,
	    "UpdateState", TH(checkpoint), 1, gw_build_state_update,
	    gw_render_checkpoint, GW_RETRY_NO },
	// A merge, as PATCH /threads/{id}.
	{ GW_R_STATE_PATCH, "PATCH", "/threads/{id}/state", GW_ACT_UPDATE,
	    "PatchState", TH(empty), 1, gw_build_state_patch,
	    gw_render_no_content, GW_RETRY_NO },
	{ GW_R_HISTORY_POST, "POST", "/threads/{id}/history", GW_ACT_READ,
	    "GetHistory", TH(history_reply), 1, gw_build_history,
	    gw_render_history, GW_RETRY_READ },
	{ GW_R_HISTORY_GET, "GET", "/threads/{id}/history", GW_ACT_READ,
	    "GetHistory", TH(history_reply), 0, gw_build_history,
	    gw_render_history, GW_RETRY_READ },
	META(GW_R_READY, "GET", "/ready"),
	META(GW_R_METRICS, "GET", "/metrics"),
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

const gw_route *
gw_route_table(size_t *n)
{
	*n = NROUTES;
	return (routes);
}

long
gw_pct_decode(const char *in, size_t len, char *out, size_t outsz)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (c == '%') {
			int hi, lo;
			if (i + 2 >= len) {
				return (-1);
			}
			hi = cm_hexval(in[i + 1]);
			lo = cm_hexval(in[i + 2]);
			if (hi < 0 || lo < 0) {
				return (-1);
			}
			c = (char) ((hi << 4) | lo);
			if (c == '\0') {
				return (-1);
			}
			i += 2;
		} else if (c == '\0') {
			return (-1);
		}
		if (o + 1 >= outsz) {
			return (-1);
		}
		out[o++] = c;
	}
	if (outsz == 0) {
		return (-1);
	}
	out[o] = '\0';
	return ((long) o);
}

// A path split into raw segments (pointers into the path).
typedef struct segs {
	const char *p[GW_PATH_SEGMENTS_MAX];
	size_t      len[GW_PATH_SEGMENTS_MAX];
	int         n;
} segs;

// split() returns 0, or -1 when the path does not start with '/' or has
// more than GW_PATH_SEGMENTS_MAX segments.
static int
split(const char *path, segs *s)
{
	const char *p = path;

	s->n = 0;
	if (path == NULL || path[0] != '/') {
		return (-1);
	}
	while (*p == '/') {
		const char *start = p + 1;
		const char *end   = strchr(start, '/');
		if (end == NULL) {
			end = start + strlen(start);
		}
		if (s->n >= GW_PATH_SEGMENTS_MAX) {
			return (-1);
		}
		s->p[s->n]   = start;
		s->len[s->n] = (size_t) (end - start);
		s->n++;
		p = end;
	}
	return (0);
}

// match_pattern() returns the number of literal segments matched, or -1.
static int
match_pattern(const char *pattern, const segs *s, char dec[][GW_PARAM_MAX],
    const int *dec_ok)
{
	segs pat;
	int  literal = 0;

	if (split(pattern, &pat) != 0 || pat.n != s->n) {
		return (-1);
	}
	for (int i = 0; i < pat.n; i++) {
		if (pat.p[i][0] == '{') {
			if (s->len[i] == 0) {
				return (-1);
			}
			continue;
		}
		if (!dec_ok[i] || strlen(dec[i]) != pat.len[i] ||
		    memcmp(dec[i], pat.p[i], pat.len[i]) != 0) {
			return (-1);
		}
		literal++;
	}
	return (literal);
}

// param_of() finds the segment of pattern holding "{name}" (-1 if none).
static int
param_of(const char *pattern, const char *name)
{
	segs pat;
	char want[16];
	int  n = snprintf(want, sizeof(want), "{%s}", name);

	if (split(pattern, &pat) != 0) {
		return (-1);
	}
	for (int i = 0; i < pat.n; i++) {
		if (pat.len[i] == (size_t) n &&
		    memcmp(pat.p[i], want, (size_t) n) == 0) {
			return (i);
		}
	}
	return (-1);
}

static int
check_uuid(const char dec[GW_PARAM_MAX], int ok, char out[CM_UUID_LEN + 1])
{
	if (!ok) {
		return (-1);
	}
	if (cm_uuid_parse(dec, strlen(dec), out) != CM_OK) {
		return (-1);
	}
	return (0);
}

gw_match_result
gw_route_match(const char *method, const char *path, gw_match *m)
{
	segs            s;
	char            dec[GW_PATH_SEGMENTS_MAX][GW_PARAM_MAX];
	int             dec_ok[GW_PATH_SEGMENTS_MAX];
	const gw_route *best      = NULL;
	int             best_lit  = -1;
	int             path_hits = 0;
	int             idx;

	memset(m, 0, sizeof(*m));
	if (split(path, &s) != 0) {
		return (GW_MATCH_NOT_FOUND);
	}
	for (int i = 0; i < s.n; i++) {
		dec_ok[i] =
		    gw_pct_decode(s.p[i], s.len[i], dec[i], GW_PARAM_MAX) >= 0;
		if (!dec_ok[i]) {
			dec[i][0] = '\0';
		}
	}
	// First pass: the most literal pattern matching the path with this
	// method; collect the methods of every pattern matching the path.
	for (size_t r = 0; r < NROUTES; r++) {
		int lit = match_pattern(routes[r].pattern, &s, dec, dec_ok);
		if (lit < 0) {
			continue;
		}
		path_hits++;
		if (strcmp(routes[r].method, method) == 0 && lit > best_lit) {
			best     = &routes[r];
			best_lit = lit;
		}
	}
	if (best == NULL) {
		if (path_hits == 0) {
			return (GW_MATCH_NOT_FOUND);
		}
		// 405: list every method of the patterns matching the path.
		for (size_t r = 0; r < NROUTES; r++) {
			if (match_pattern(routes[r].pattern, &s, dec, dec_ok) <
			        0 ||
			    strstr(m->allow, routes[r].method) != NULL) {
				continue;
			}
			size_t used = strlen(m->allow);
			snprintf(m->allow + used, sizeof(m->allow) - used,
			    "%s%s", used ? ", " : "", routes[r].method);
		}
		size_t used = strlen(m->allow);
		snprintf(
		    m->allow + used, sizeof(m->allow) - used, ", OPTIONS");
		return (GW_MATCH_BAD_METHOD);
	}
	m->route = best;
	idx      = param_of(best->pattern, "id");
	if (idx >= 0 && check_uuid(dec[idx], dec_ok[idx], m->thread_id) != 0) {
		snprintf(m->detail, sizeof(m->detail),
		    "Invalid thread ID: must be a UUID");
		return (GW_MATCH_BAD_PARAM);
	}
	idx = param_of(best->pattern, "cid");
	if (idx >= 0 &&
	    check_uuid(dec[idx], dec_ok[idx], m->checkpoint_id) != 0) {
		snprintf(m->detail, sizeof(m->detail),
		    "Invalid checkpoint ID: must be a UUID");
		return (GW_MATCH_BAD_PARAM);
	}
	return (GW_MATCH_OK);
}

void
gw_request_id_pick(const char *client, char out[CM_RID_MAX + 1])
{
	if (cm_request_id_ok(client)) {
		memcpy(out, client, strlen(client) + 1);
		return;
	}
	cm_request_id(out);
}

void
gw_meta_response(gw_route_id id, gw_response *r)
{
	json_t *v;

	if (id == GW_R_INFO) {
		v = json_pack("{s:s,s:{s:b,s:b,s:b}}", "version", TG_VERSION,
		    "flags", "assistants", 0, "crons", 0, "langsmith", 0);
	} else {
		v = json_pack("{s:b}", "ok", 1);
	}
	gw_response_json(r, 200, v);
	json_decref(v);
}
