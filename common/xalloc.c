// SPDX-License-Identifier: MIT
//
// Allocation that aborts on out-of-memory (see xalloc.h for why).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/xalloc.h"

static void
oom(size_t n)
{
	char line[96];
	int  len;

	// No allocation and no stdio buffering here: we are out of memory.
	len = snprintf(line, sizeof(line),
	    "{\"level\":\"error\",\"msg\":\"out of memory (%zu bytes)\"}\n",
	    n);
	if (len > 0) {
		(void) !write(STDERR_FILENO, line, (size_t) len);
	}
	abort();
}

void *
cm_xmalloc(size_t n)
{
	void *p = malloc(n == 0 ? 1 : n);

	if (p == NULL) {
		oom(n);
	}
	return (p);
}

void *
cm_xcalloc(size_t count, size_t size)
{
	void *p = calloc(count == 0 ? 1 : count, size == 0 ? 1 : size);

	if (p == NULL) {
		oom(count * size);
	}
	return (p);
}

void *
cm_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n == 0 ? 1 : n);

	if (q == NULL) {
		oom(n);
	}
	return (q);
}

char *
cm_xstrdup(const char *s)
{
	if (s == NULL) {
		return (NULL);
	}
	return (cm_xstrndup(s, strlen(s)));
}

char *
cm_xstrndup(const char *s, size_t n)
{
	size_t len;
	char  *d;

	if (s == NULL) {
		return (NULL);
	}
	len = strnlen(s, n);
	d   = cm_xmalloc(len + 1);
	memcpy(d, s, len);
	d[len] = '\0';
	return (d);
}
