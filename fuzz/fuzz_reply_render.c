// SPDX-License-Identifier: MIT
//
// libFuzzer target: the gateway's reply renderer (jsonw.c, the state and
// thread renderers), which copies the thread-service's JSON text into the
// answer without building a tree. Differential against jansson:
//   - what gw_jw_json() accepts, jansson parses (with JSON_ALLOW_NUL, as
//     cm_json_parse does) to the same value as the input - except numbers
//     beyond jansson's int64/double range, valid JSON we copy as written;
//   - what jansson accepts (within CM_JSON_MAX_DEPTH), gw_jw_json()
//     accepts too;
//   - a whole ThreadState answer built around it parses as JSON.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/json.h"
#include "common/xalloc.h"
#include "gateway/gw.h"

// number_range() is 1 when jansson refused only a number beyond its
// int64/double range (valid JSON, which we copy as written).
static int
number_range(const json_error_t *e)
{
	return (strstr(e->text, "too big") != NULL ||
	    strstr(e->text, "overflow") != NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char  *text = (const char *) data;
	gw_jw        w;
	char        *out;
	size_t       n;
	cm_err       mine;
	json_t      *theirs = NULL;
	json_error_t jerr;

	gw_jw_init(&w);
	mine = gw_jw_json(&w, text, size);
	out  = gw_jw_take(&w, &n);
	if (cm_json_parse(text, size, size + 1, &theirs, NULL, 0) != CM_OK) {
		theirs = NULL;
	}
	if (mine == CM_OK) {
		// Our copy is JSON, and the same value as the input. The one
		// thing we take that jansson does not: numbers beyond its
		// int64 / double range (valid JSON; copied as written).
		json_t *back = json_loadb(
		    out, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
		if (back == NULL) {
			if (theirs != NULL || !number_range(&jerr)) {
				abort();
			}
		} else if (theirs != NULL && !json_equal(back, theirs)) {
			abort();
		}
		json_decref(back);
	} else if (theirs != NULL) {
		// jansson parsed something we refused: only the embedded
		// copier's stricter UTF-8 may differ (jansson checks it too),
		// so this must not happen.
		abort();
	}
	json_decref(theirs);
	free(out);

	// A whole answer around it: values and metadata from the input.
	{
		char                               *t = cm_xmalloc(size + 1);
		Threadgate__Threads__V1__Checkpoint c =
		    THREADGATE__THREADS__V1__CHECKPOINT__INIT;
		char *next[] = { "agent" };

		memcpy(t, data, size);
		t[size]         = '\0';
		c.thread_id     = "01a21aea-6f0c-7600-af02-7657fcc02ab1";
		c.checkpoint_id = "01a21aea-6f0c-7600-af02-7657fcc02ab2";
		c.parent_checkpoint_id = "";
		c.values_json          = t;
		c.metadata_json        = t;
		c.n_next               = 1;
		c.next                 = next;
		gw_jw_init(&w);
		if (gw_checkpoint_state_json(&c, &w) == CM_OK) {
			json_t *v;
			out = gw_jw_take(&w, &n);
			v   = json_loadb(out, n, JSON_ALLOW_NUL, &jerr);
			if (v == NULL && !number_range(&jerr)) {
				abort();
			}
			json_decref(v);
			free(out);
		} else {
			gw_jw_fini(&w);
		}
		free(t);
	}
	return (0);
}
