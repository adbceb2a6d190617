// SPDX-License-Identifier: MIT
//
// Prometheus metrics: a small registry of counters, gauges and histograms
// rendered in the text exposition format 0.0.4, plus the standard process
// metrics read from /proc/self.
//
// Cost model. Everything that can allocate or lock happens at set-up: a
// family (name, help, label names, buckets) is registered once, and each
// series (one combination of label values) is looked up once and kept as
// a pointer. Recording is then a relaxed atomic add on memory owned by that
// series: no lock, no allocation, no hashing (measured: see
// common/metrics_test.c, "cost"). A NULL series pointer is allowed
// everywhere and records nothing, so code runs unchanged without metrics.
//
// Cardinality is bounded by construction: label values are chosen by the
// caller at set-up from closed sets (route templates, rpc method names,
// status names), never raw paths or user ids, and a family refuses more
// than CM_METRICS_SERIES_MAX series (the lookup then returns NULL and logs
// once).
//
// Naming (Prometheus conventions): threadgate_<area>_<what>_<unit>,
// counters end in _total, durations are histograms in seconds, sizes in
// bytes. The process metrics keep the names every client library uses
// (process_cpu_seconds_total, process_resident_memory_bytes, ...), so
// stock dashboards work.
//
// Consistency: a scrape reads each atomic once; a histogram's _count is the
// sum of its buckets, so they always agree, while _sum may include an
// observation whose bucket is not counted yet. That is the usual trade of
// lock-free client libraries.
#ifndef CM_METRICS_H
#define CM_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

// Most series one family holds: far above any real closed label set here
// (18 routes x 14 statuses = 252), low enough that a bug handing raw input
// in as a label value cannot grow the registry without bound.
#define CM_METRICS_SERIES_MAX 2048
// Most label names per family.
#define CM_METRICS_LABELS_MAX 4
// Most histogram buckets (upper bounds, without +Inf).
#define CM_METRICS_BUCKETS_MAX 24
// Longest label value kept, in bytes (longer values are cut).
#define CM_METRICS_VALUE_MAX 128
// Largest rendered exposition, in bytes. A full gateway scrape is ~60 KiB.
#define CM_METRICS_TEXT_MAX (8u * 1024u * 1024u)

typedef struct cm_metrics cm_metrics;
typedef struct cm_mfamily cm_mfamily;

typedef enum cm_metric_type {
	CM_METRIC_COUNTER = 0,
	CM_METRIC_GAUGE,
	CM_METRIC_HISTOGRAM,
} cm_metric_type;

/** A counter series: only goes up. */
typedef struct cm_counter {
	atomic_uint_fast64_t v;
} cm_counter;

/** A gauge series: an integer that goes up and down. */
typedef struct cm_gauge {
	atomic_int_fast64_t v;
} cm_gauge;

/** A histogram series (opaque; see cm_histogram_observe()). */
typedef struct cm_histogram cm_histogram;

/**
 * cm_metric_desc describes a family. Fields:
 *  - name, help: required; name matches [a-zA-Z_:][a-zA-Z0-9_:]*.
 *  - labels: NULL-terminated label names (NULL: none), at most
 *    CM_METRICS_LABELS_MAX, each [a-zA-Z_][a-zA-Z0-9_]* and not "le".
 *  - buckets, nbuckets: histograms only; ascending upper bounds in the
 *    base unit (seconds, bytes); NULL gives cm_metrics_latency_buckets.
 *  - unit: histograms only; how many base units one observed integer is
 *    (1e-6 when observing microseconds into a _seconds histogram; 0 means
 *    1). Bounds must be whole multiples of it.
 *  - sparse: 1 to leave a series out of the exposition until it is
 *    non-zero (for label sets that are mostly unused, e.g. route x status).
 */
typedef struct cm_metric_desc {
	const char        *name;
	const char        *help;
	cm_metric_type     type;
	const char *const *labels;
	const double      *buckets;
	size_t             nbuckets;
	double             unit;
	int                sparse;
} cm_metric_desc;

// Default latency buckets, seconds: 0.5 ms .. 10 s.
#define CM_METRICS_LATENCY_BUCKETS_N 14
extern const double cm_metrics_latency_buckets[CM_METRICS_LATENCY_BUCKETS_N];

// ---------------------------------------------------------------------
// Registry and set-up (may lock and allocate; not for hot paths)
// ---------------------------------------------------------------------

/**
 * cm_metrics_default() is the process-wide registry (made on first use,
 * never freed). Services and the rpc layer register into it. Thread-safe.
 */
cm_metrics *cm_metrics_default(void);

/** cm_metrics_new() makes a separate registry (tests). */
cm_metrics *cm_metrics_new(void);

/**
 * cm_metrics_free() frees a registry from cm_metrics_new() and every
 * family and series in it. NULL allowed. Nothing may record into it
 * afterwards.
 */
void cm_metrics_free(cm_metrics *r);

/**
 * cm_metrics_family() registers a family and returns it (borrowed; lives
 * as long as the registry). Registering the same name again with the same
 * type, labels and buckets returns the existing family (two rpc servers in
 * one process share one). A different shape under the same name, or an
 * invalid desc, is a programming error (CM_ASSERT). Thread-safe.
 */
cm_mfamily *cm_metrics_family(cm_metrics *r, const cm_metric_desc *d);

/**
 * cm_counter_get(), cm_gauge_get(), cm_histogram_get() return the series
 * of f for the label values (one per label name, in order; NULL when f
 * has no labels). The same values give the same series. Returns NULL
 * (records nothing) when f is NULL, of another type, or full
 * (CM_METRICS_SERIES_MAX). Thread-safe; call at set-up and keep the
 * pointer.
 */
cm_counter   *cm_counter_get(cm_mfamily *f, const char *const *values);
cm_gauge     *cm_gauge_get(cm_mfamily *f, const char *const *values);
cm_histogram *cm_histogram_get(cm_mfamily *f, const char *const *values);

/** Unlabelled shorthands: register the family and return its series. */
cm_counter *cm_metrics_counter(
    cm_metrics *r, const char *name, const char *help);
cm_gauge *cm_metrics_gauge(cm_metrics *r, const char *name, const char *help);

// ---------------------------------------------------------------------
// Recording (lock-free, no allocation; any thread; NULL series allowed)
// ---------------------------------------------------------------------

static inline void
cm_counter_add(cm_counter *c, uint64_t n)
{
	if (c != NULL) {
		atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
	}
}

static inline void
cm_counter_inc(cm_counter *c)
{
	cm_counter_add(c, 1);
}

static inline void
cm_gauge_set(cm_gauge *g, int64_t v)
{
	if (g != NULL) {
		atomic_store_explicit(&g->v, v, memory_order_relaxed);
	}
}

static inline void
cm_gauge_add(cm_gauge *g, int64_t d)
{
	if (g != NULL) {
		atomic_fetch_add_explicit(&g->v, d, memory_order_relaxed);
	}
}

/**
 * cm_histogram_observe() records one observation v in the family's unit
 * (e.g. microseconds for a _seconds family with unit 1e-6).
 */
void cm_histogram_observe(cm_histogram *h, uint64_t v);

/** cm_counter_value(), cm_gauge_value(): current values (tests). */
uint64_t cm_counter_value(const cm_counter *c);
int64_t  cm_gauge_value(const cm_gauge *g);

/** cm_histogram_count() is the number of observations (tests). */
uint64_t cm_histogram_count(const cm_histogram *h);

// ---------------------------------------------------------------------
// Collectors: values computed at scrape time
// ---------------------------------------------------------------------

typedef struct cm_mwriter cm_mwriter;

/**
 * cm_metrics_collect_fn writes families computed at scrape time (process
 * metrics, a cache's size) with cm_mwriter_family() and
 * cm_mwriter_sample(). Runs on the scraping thread with the registry
 * locked: it must not call cm_metrics_family() or *_get().
 */
typedef void (*cm_metrics_collect_fn)(void *arg, cm_mwriter *w);

/**
 * cm_metrics_add_collector() adds fn(arg) to every scrape of r (after the
 * registered families). Adding the same fn and arg twice is a no-op.
 */
void cm_metrics_add_collector(
    cm_metrics *r, cm_metrics_collect_fn fn, void *arg);

/**
 * cm_metrics_remove_collector() removes fn(arg); when it returns, no
 * scrape is running fn(arg) any more, so arg may be freed.
 */
void cm_metrics_remove_collector(
    cm_metrics *r, cm_metrics_collect_fn fn, void *arg);

/**
 * cm_mwriter_family() starts a family: the # HELP and # TYPE lines.
 * type is "counter" or "gauge".
 */
void cm_mwriter_family(
    cm_mwriter *w, const char *name, const char *type, const char *help);

/**
 * cm_mwriter_sample() writes one sample `name{label="value"} v`; label
 * may be NULL (no labels). The value is escaped.
 */
void cm_mwriter_sample(cm_mwriter *w, const char *name, const char *label,
    const char *value, double v);

// ---------------------------------------------------------------------
// Exposition
// ---------------------------------------------------------------------

/**
 * cm_metrics_render() writes the text exposition format 0.0.4 of r (every
 * family in registration order, then the collectors) into a new malloc'd
 * NUL-terminated buffer *out of *len bytes (free it). Returns CM_OK, or
 * CM_ETOOBIG past CM_METRICS_TEXT_MAX (nothing written). Thread-safe;
 * scrapes run one at a time.
 */
cm_err cm_metrics_render(cm_metrics *r, char **out, size_t *len);

/**
 * cm_metrics_add_process() adds the standard process metrics of this
 * process to r (once): process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds, process_max_fds, process_start_time_seconds (Linux
 * /proc/self).
 */
void cm_metrics_add_process(cm_metrics *r);

/**
 * cm_metrics_add_build_info() sets threadgate_build_info{service, version}
 * to 1 in r (the usual way to expose what runs). svc and version are
 * copied.
 */
void cm_metrics_add_build_info(
    cm_metrics *r, const char *svc, const char *version);

// ---------------------------------------------------------------------
// HTTP listener (metrics_http.c)
// ---------------------------------------------------------------------

typedef struct cm_metrics_http cm_metrics_http;

/**
 * cm_metrics_http_start() serves GET (and HEAD) /metrics of r on addr
 * ("host:port", "[v6]:port" or ":port" for every interface; port 0 picks a
 * free one) from one libmicrohttpd thread; any other path is 404, another
 * method 405. Writes the bound port to port_file (temp file + rename)
 * when it is not NULL or "". Returns CM_OK and *out; CM_EINVAL for a
 * malformed addr or an unwritable port file; CM_EUNAVAIL when the address
 * cannot be bound (logged, naming METRICS_ADDR). Call from main().
 */
cm_err cm_metrics_http_start(cm_metrics *r, const char *addr,
    const char *port_file, cm_metrics_http **out);

/** cm_metrics_http_port() is the bound port. */
int cm_metrics_http_port(const cm_metrics_http *h);

/** cm_metrics_http_stop() stops the listener and frees h. NULL allowed. */
void cm_metrics_http_stop(cm_metrics_http *h);

/**
 * cm_metrics_serve_env() is what a service's main() calls: it adds the
 * process metrics and threadgate_build_info{service=svc} to the default
 * registry and, when METRICS_ADDR is set, starts the listener there
 * (METRICS_PORT_FILE: where to write the bound port). It acts once per
 * process: later calls (e.g. the rpc server's, see cm_rpc_server_start())
 * return CM_OK with *out NULL. *out is NULL too when METRICS_ADDR is unset
 * (metrics are then only kept in memory). Returns what
 * cm_metrics_http_start() returns. Stop the listener with
 * cm_metrics_serve_env_stop().
 */
cm_err cm_metrics_serve_env(const char *svc, cm_metrics_http **out);

/**
 * cm_metrics_serve_env_stop() stops a listener from cm_metrics_serve_env()
 * (NULL allowed: nothing to stop) so a later call may start one again.
 */
void cm_metrics_serve_env_stop(cm_metrics_http *h);

#endif // CM_METRICS_H
