// SPDX-License-Identifier: MIT
//
// The static provider (development only, LangGraph tutorial part 1): a
// JSON file maps tokens to identities,
//   {"<token>": {"identity": "...", "email": "...", "permissions": [...]}}
// It is refused unless THREADGATE_DEV=1, and logs a warning at start. The
// file is read and validated once; lookups are a binary search over a
// sorted copy, so no shared JSON object is touched by worker threads.

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "auth-service/auth.h"
#include "auth-service/service.h"
#include "common/json.h"
#include "common/log.h"
#include "common/xalloc.h"

// Largest static file read: a development fixture, never large.
#define STATIC_FILE_MAX (1024u * 1024u)
// Most tokens in the file.
#define STATIC_TOKENS_MAX 10000

typedef struct static_entry {
	char       *token;
	auth_result result;
} static_entry;

typedef struct static_provider {
	auth_provider base;
	static_entry *entries;
	size_t        n;
	char         *scope;
} static_provider;

static int
cmp_entry(const void *a, const void *b)
{
	return (strcmp(((const static_entry *) a)->token,
	    ((const static_entry *) b)->token));
}

static cm_err
static_verify(auth_provider *p, auth_worker *w, const char *token,
    auth_result *out, char *detail, size_t detail_len)
{
	static_provider *sp = (static_provider *) p;
	static_entry     key;
	static_entry    *e;

	key.token = (char *) token;
	e = bsearch(&key, sp->entries, sp->n, sizeof(*sp->entries), cmp_entry);
	if (e == NULL) {
		snprintf(detail, detail_len, "invalid token");
		return (CM_EAUTH);
	}
	*out = e->result;
	return (CM_OK);
}

static void
static_destroy(auth_provider *p)
{
	static_provider *sp = (static_provider *) p;

	if (sp == NULL) {
		return;
	}
	for (size_t i = 0; i < sp->n; i++) {
		free(sp->entries[i].token);
	}
	free(sp->entries);
	free(sp->scope);
	free(sp);
}

static int
token_ok(const char *t)
{
	size_t n = strlen(t);

	if (n == 0 || n > AUTH_TOKEN_MAX) {
		return (0);
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char) t[i];
		if (c <= 0x20 || c >= 0x7f) {
			return (0);
		}
	}
	return (1);
}

cm_err
auth_static_new_from_buffer(const char *buf, size_t len, auth_provider **out,
    char *detail, size_t detail_len)
{
	static_provider *sp  = NULL;
	json_t          *doc = NULL;
	const char      *tok;
	json_t          *val;
	cm_err           rv;
	char             jd[128];

	rv = cm_json_parse(buf, len, STATIC_FILE_MAX, &doc, jd, sizeof(jd));
	if (rv != CM_OK) {
		snprintf(detail, detail_len, "not valid JSON (%s)",
		    rv == CM_ETOOBIG ? "file too large" : jd);
		rv = CM_EINVAL;
		goto out;
	}
	if (!json_is_object(doc)) {
		snprintf(detail, detail_len, "top level must be an object");
		rv = CM_EINVAL;
		goto out;
	}
	if (json_object_size(doc) > STATIC_TOKENS_MAX) {
		snprintf(detail, detail_len, "more than %d tokens",
		    STATIC_TOKENS_MAX);
		rv = CM_EINVAL;
		goto out;
	}
	sp = cm_xcalloc(1, sizeof(*sp));
	sp->entries =
	    cm_xcalloc(json_object_size(doc) + 1, sizeof(*sp->entries));
	json_object_foreach(doc, tok, val)
	{
		static_entry *e = &sp->entries[sp->n];
		const char   *id;
		const char   *email;
		json_t       *perms;
		size_t        i;
		json_t       *pv;
		size_t        used = 0;

		if (!token_ok(tok)) {
			snprintf(detail, detail_len,
			    "a token is empty, too long or has whitespace");
			rv = CM_EINVAL;
			goto out;
		}
		if (!json_is_object(val)) {
			snprintf(detail, detail_len,
			    "each token must map to an object");
			rv = CM_EINVAL;
			goto out;
		}
		id = auth_json_text(json_object_get(val, "identity"));
		if (id == NULL || id[0] == '\0' || strlen(id) >= AUTH_ID_MAX) {
			snprintf(detail, detail_len,
			    "each entry needs a non-empty \"identity\" string "
			    "(< %d bytes)",
			    AUTH_ID_MAX);
			rv = CM_EINVAL;
			goto out;
		}
		email = NULL;
		if (json_object_get(val, "email") != NULL) {
			email = auth_json_text(json_object_get(val, "email"));
			if (email == NULL || strlen(email) >= AUTH_EMAIL_MAX) {
				snprintf(detail, detail_len,
				    "\"email\" must be a string (< %d bytes)",
				    AUTH_EMAIL_MAX);
				rv = CM_EINVAL;
				goto out;
			}
		}
		perms = json_object_get(val, "permissions");
		if (perms != NULL && !json_is_array(perms)) {
			snprintf(detail, detail_len,
			    "\"permissions\" must be an array of strings");
			rv = CM_EINVAL;
			goto out;
		}
		e->token = cm_xstrdup(tok);
		sp->n++;
		snprintf(
		    e->result.identity, sizeof(e->result.identity), "%s", id);
		snprintf(e->result.email, sizeof(e->result.email), "%s",
		    email != NULL ? email : "");
		json_array_foreach(perms, i, pv)
		{
			const char *ps = auth_json_text(pv);
			size_t      pl;

			if (ps == NULL || ps[0] == '\0' ||
			    strchr(ps, ' ') != NULL) {
				snprintf(detail, detail_len,
				    "each permission must be a non-empty "
				    "string "
				    "without spaces");
				rv = CM_EINVAL;
				goto out;
			}
			pl = strlen(ps);
			if (used + pl + 2 > sizeof(e->result.scopes)) {
				snprintf(detail, detail_len,
				    "permissions longer than %d bytes",
				    AUTH_SCOPES_MAX);
				rv = CM_EINVAL;
				goto out;
			}
			if (used > 0) {
				e->result.scopes[used++] = ' ';
			}
			memcpy(e->result.scopes + used, ps, pl + 1);
			used += pl;
		}
	}
	qsort(sp->entries, sp->n, sizeof(*sp->entries), cmp_entry);
	sp->scope            = cm_xstrdup("static");
	sp->base.name        = "static";
	sp->base.verify      = static_verify;
	sp->base.destroy     = static_destroy;
	sp->base.cache_scope = sp->scope;
	*out                 = &sp->base;
	sp                   = NULL;
	rv                   = CM_OK;
out:
	static_destroy(sp != NULL ? &sp->base : NULL);
	json_decref(doc);
	return (rv);
}

cm_err
auth_static_new(const auth_config *cfg, auth_provider **out)
{
	FILE  *f   = NULL;
	char  *buf = NULL;
	size_t len;
	cm_err rv;
	char   detail[256];

	if (!cfg->dev_mode) {
		cm_error(NULL,
		    "AUTH_PROVIDER=static is for development only: "
		    "set THREADGATE_DEV=1 to use it");
		return (CM_EINVAL);
	}
	if (cfg->static_file[0] == '\0') {
		cm_error(NULL,
		    "AUTH_STATIC_FILE is required for the static "
		    "provider");
		return (CM_EINVAL);
	}
	f = fopen(cfg->static_file, "rb");
	if (f == NULL) {
		cm_error(NULL, "AUTH_STATIC_FILE: cannot open %s",
		    cfg->static_file);
		rv = CM_EINVAL;
		goto out;
	}
	buf = cm_xmalloc(STATIC_FILE_MAX + 1);
	len = fread(buf, 1, STATIC_FILE_MAX + 1, f);
	if (ferror(f) || len > STATIC_FILE_MAX) {
		cm_error(NULL,
		    "AUTH_STATIC_FILE: cannot read %s or larger than "
		    "%u bytes",
		    cfg->static_file, STATIC_FILE_MAX);
		rv = CM_EINVAL;
		goto out;
	}
	rv =
	    auth_static_new_from_buffer(buf, len, out, detail, sizeof(detail));
	if (rv != CM_OK) {
		cm_error(
		    NULL, "AUTH_STATIC_FILE %s: %s", cfg->static_file, detail);
		goto out;
	}
	cm_warn(NULL,
	    "static token provider in use (DEVELOPMENT ONLY): "
	    "tokens from %s are accepted as-is",
	    cfg->static_file);
out:
	if (f != NULL) {
		fclose(f);
	}
	free(buf);
	return (rv);
}
