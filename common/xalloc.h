// SPDX-License-Identifier: MIT
//
// Allocation that never returns NULL: on out-of-memory the process logs and
// aborts (redis zmalloc, h2o h2o_mem_alloc). Small services gain nothing
// from untested OOM branches. Everything returned is freed with free().
#ifndef CM_XALLOC_H
#define CM_XALLOC_H

#include <stddef.h>

/** cm_xmalloc() is malloc() that aborts on failure (n == 0 gives 1 byte). */
void *cm_xmalloc(size_t n);
/** cm_xcalloc() is calloc() that aborts on failure or overflow. */
void *cm_xcalloc(size_t count, size_t size);
/** cm_xrealloc() is realloc() that aborts on failure. */
void *cm_xrealloc(void *p, size_t n);
/** cm_xstrdup() duplicates s (NULL gives NULL). */
char *cm_xstrdup(const char *s);
/** cm_xstrndup() duplicates at most n bytes of s and NUL-terminates. */
char *cm_xstrndup(const char *s, size_t n);

#endif // CM_XALLOC_H
