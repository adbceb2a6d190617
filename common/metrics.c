// SPDX-License-Identifier: MIT
//
// The metrics registry and the text exposition format (see metrics.h).
//
// A registry is a list of families; a family is a list of series. Both
// lists only grow, under the registry mutex, and nothing is freed before
// the registry is: a series pointer handed out stays valid, so recording
// needs no lock. Rendering takes the mutex (one scrape at a time, and no
// family or series is added meanwhile) and reads every atomic relaxed.
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/xalloc.h"

const double cm_metrics_latency_buckets[CM_METRICS_LATENCY_BUCKETS_N] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
	2.5, 5, 10
};

// Most collectors one registry runs: a handful per process (process
// metrics, a cache size, the gateway's connection gauges).
#define COLLECTORS_MAX 16

struct cm_histogram {
	const uint64_t      *ubounds; // the family's bounds in observed units
	size_t               nbuckets;
	atomic_uint_fast64_t sum;      // in observed units
	atomic_uint_fast64_t counts[]; // nbuckets + 1 (the last is +Inf)
};

typedef struct series series;
struct series {
	series       *next;
	char         *values[CM_METRICS_LABELS_MAX]; // owned copies
	cm_counter    counter;
	cm_gauge      gauge;
	cm_histogram *hist; // owned; histograms only
};

struct cm_mfamily {
	cm_mfamily    *next;
	char          *name;
	char          *help;
	cm_metric_type type;
	int            nlabels;
	char          *labels[CM_METRICS_LABELS_MAX];
	size_t         nbuckets;
	double         buckets[CM_METRICS_BUCKETS_MAX];
	uint64_t       ubounds[CM_METRICS_BUCKETS_MAX];
	double         unit;
	int            sparse;
	series        *head;
	series        *tail;
	size_t         nseries;
	int            full_logged;
};

typedef struct collector {
	cm_metrics_collect_fn fn;
	void                 *arg;
} collector;

struct cm_metrics {
	pthread_mutex_t mu;
	cm_mfamily     *head;
	cm_mfamily     *tail;
	collector       cols[COLLECTORS_MAX];
	int             ncols;
};

// ---------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static cm_metrics    *default_reg;

static void
default_make(void)
{
	default_reg = cm_metrics_new();
}

cm_metrics *
cm_metrics_default(void)
{
	pthread_once(&default_once, default_make);
	return (default_reg);
}

cm_metrics *
cm_metrics_new(void)
{
	cm_metrics *r = cm_xcalloc(1, sizeof(*r));

	pthread_mutex_init(&r->mu, NULL);
	return (r);
}

static void
series_free(cm_mfamily *f, series *s)
{
	for (int i = 0; i < f->nlabels; i++) {
		free(s->values[i]);
	}
	free(s->hist);
	free(s);
}

void
cm_metrics_free(cm_metrics *r)
{
	cm_mfamily *f;

	if (r == NULL) {
		return;
	}
	f = r->head;
	while (f != NULL) {
		cm_mfamily *fn = f->next;
		series     *s  = f->head;
		while (s != NULL) {
			series *sn = s->next;
			series_free(f, s);
			s = sn;
		}
		for (int i = 0; i < f->nlabels; i++) {
			free(f->labels[i]);
		}
		free(f->name);
		free(f->help);
		free(f);
		f = fn;
	}
	pthread_mutex_destroy(&r->mu);
	free(r);
}

static int
valid_name(const char *s, int colon)
{
	if (s == NULL || s[0] == '\0' || (s[0] >= '0' && s[0] <= '9')) {
		return (0);
	}
	for (; *s != '\0'; s++) {
		char c = *s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		        (c >= '0' && c <= '9') || c == '_' ||
		        (colon && c == ':'))) {
			return (0);
		}
	}
	return (1);
}

// 1 when the family f has exactly the shape of d (besides help).
static int
same_shape(const cm_mfamily *f, const cm_metric_desc *d, int nlabels,
    const double *b, size_t nb)
{
	if (f->type != d->type || f->nlabels != nlabels) {
		return (0);
	}
	for (int i = 0; i < nlabels; i++) {
		if (strcmp(f->labels[i], d->labels[i]) != 0) {
			return (0);
		}
	}
	if (d->type == CM_METRIC_HISTOGRAM) {
		if (f->nbuckets != nb) {
			return (0);
		}
		for (size_t i = 0; i < nb; i++) {
			if (f->buckets[i] != b[i]) {
				return (0);
			}
		}
	}
	return (1);
}

cm_mfamily *
cm_metrics_family(cm_metrics *r, const cm_metric_desc *d)
{
	cm_mfamily   *f;
	int           nlabels = 0;
	const double *b       = NULL;
	size_t        nb      = 0;
	double        unit    = 1;

	CM_ASSERT(r != NULL && d != NULL && valid_name(d->name, 1) &&
	    d->help != NULL);
	for (; d->labels != NULL && d->labels[nlabels] != NULL; nlabels++) {
		CM_ASSERT(nlabels < CM_METRICS_LABELS_MAX);
		CM_ASSERT(valid_name(d->labels[nlabels], 0) &&
		    strcmp(d->labels[nlabels], "le") != 0 &&
		    strncmp(d->labels[nlabels], "__", 2) != 0);
	}
	if (d->type == CM_METRIC_HISTOGRAM) {
		b    = d->buckets != NULL ? d->buckets
		                          : cm_metrics_latency_buckets;
		nb   = d->buckets != NULL ? d->nbuckets
		                          : CM_METRICS_LATENCY_BUCKETS_N;
		unit = d->unit > 0 ? d->unit : 1;
		CM_ASSERT(nb >= 1 && nb <= CM_METRICS_BUCKETS_MAX);
		for (size_t i = 1; i < nb; i++) {
			CM_ASSERT(b[i] > b[i - 1]);
		}
	}

	pthread_mutex_lock(&r->mu);
	for (f = r->head; f != NULL; f = f->next) {
		if (strcmp(f->name, d->name) == 0) {
			CM_ASSERT(same_shape(f, d, nlabels, b, nb));
			pthread_mutex_unlock(&r->mu);
			return (f);
		}
	}
	f          = cm_xcalloc(1, sizeof(*f));
	f->name    = cm_xstrdup(d->name);
	f->help    = cm_xstrdup(d->help);
	f->type    = d->type;
	f->nlabels = nlabels;
	f->sparse  = d->sparse;
	f->unit    = unit;
	for (int i = 0; i < nlabels; i++) {
		f->labels[i] = cm_xstrdup(d->labels[i]);
	}
	f->nbuckets = nb;
	for (size_t i = 0; i < nb; i++) {
		f->buckets[i] = b[i];
		f->ubounds[i] = (uint64_t) llround(b[i] / unit);
	}
	if (r->tail != NULL) {
		r->tail->next = f;
	} else {
		r->head = f;
	}
	r->tail = f;
	pthread_mutex_unlock(&r->mu);
	return (f);
}

// The registry a family belongs to is not stored: families are only
// reached through their registry's lock. Series lookup and creation take
// a global lock instead, which set-up code can afford.
static pthread_mutex_t series_mu = PTHREAD_MUTEX_INITIALIZER;

static series *
series_get(cm_mfamily *f, cm_metric_type type, const char *const *values)
{
	series *s;

	if (f == NULL || f->type != type) {
		return (NULL);
	}
	pthread_mutex_lock(&series_mu);
	for (s = f->head; s != NULL; s = s->next) {
		int i;
		for (i = 0; i < f->nlabels; i++) {
			// Stored values are cut at CM_METRICS_VALUE_MAX.
			const char *v = values[i] != NULL ? values[i] : "";
			size_t      n = strnlen(v, CM_METRICS_VALUE_MAX);
			if (strlen(s->values[i]) != n ||
			    memcmp(s->values[i], v, n) != 0) {
				break;
			}
		}
		if (i == f->nlabels) {
			pthread_mutex_unlock(&series_mu);
			return (s);
		}
	}
	if (f->nseries >= CM_METRICS_SERIES_MAX) {
		int log        = !f->full_logged;
		f->full_logged = 1;
		pthread_mutex_unlock(&series_mu);
		if (log) {
			cm_error(NULL,
			    "metric %s: more than %d series; new label "
			    "values are not recorded (a label value that is "
			    "not from a closed set?)",
			    f->name, CM_METRICS_SERIES_MAX);
		}
		return (NULL);
	}
	s = cm_xcalloc(1, sizeof(*s));
	for (int i = 0; i < f->nlabels; i++) {
		s->values[i] = cm_xstrndup(
		    values[i] != NULL ? values[i] : "", CM_METRICS_VALUE_MAX);
	}
	atomic_init(&s->counter.v, 0);
	atomic_init(&s->gauge.v, 0);
	if (type == CM_METRIC_HISTOGRAM) {
		s->hist           = cm_xcalloc(1,
		              sizeof(cm_histogram) +
		                  (f->nbuckets + 1) * sizeof(atomic_uint_fast64_t));
		s->hist->ubounds  = f->ubounds;
		s->hist->nbuckets = f->nbuckets;
		atomic_init(&s->hist->sum, 0);
		for (size_t i = 0; i <= f->nbuckets; i++) {
			atomic_init(&s->hist->counts[i], 0);
		}
	}
	// Published last: a concurrent render (which holds the registry
	// lock, not this one) sees either no series or a complete one.
	if (f->tail != NULL) {
		f->tail->next = s;
	} else {
		f->head = s;
	}
	f->tail = s;
	f->nseries++;
	pthread_mutex_unlock(&series_mu);
	return (s);
}

cm_counter *
cm_counter_get(cm_mfamily *f, const char *const *values)
{
	series *s = series_get(f, CM_METRIC_COUNTER, values);
	return (s != NULL ? &s->counter : NULL);
}

cm_gauge *
cm_gauge_get(cm_mfamily *f, const char *const *values)
{
	series *s = series_get(f, CM_METRIC_GAUGE, values);
	return (s != NULL ? &s->gauge : NULL);
}

cm_histogram *
cm_histogram_get(cm_mfamily *f, const char *const *values)
{
	series *s = series_get(f, CM_METRIC_HISTOGRAM, values);
	return (s != NULL ? s->hist : NULL);
}

cm_counter *
cm_metrics_counter(cm_metrics *r, const char *name, const char *help)
{
	cm_metric_desc d = { .name = name, .help = help };

	d.type = CM_METRIC_COUNTER;
	return (cm_counter_get(cm_metrics_family(r, &d), NULL));
}

cm_gauge *
cm_metrics_gauge(cm_metrics *r, const char *name, const char *help)
{
	cm_metric_desc d = { .name = name, .help = help };

	d.type = CM_METRIC_GAUGE;
	return (cm_gauge_get(cm_metrics_family(r, &d), NULL));
}

void
cm_histogram_observe(cm_histogram *h, uint64_t v)
{
	size_t i = 0;

	if (h == NULL) {
		return;
	}
	while (i < h->nbuckets && v > h->ubounds[i]) {
		i++;
	}
	atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
}

uint64_t
cm_counter_value(const cm_counter *c)
{
	return (c != NULL ? atomic_load(&c->v) : 0);
}

int64_t
cm_gauge_value(const cm_gauge *g)
{
	return (g != NULL ? atomic_load(&g->v) : 0);
}

uint64_t
cm_histogram_count(const cm_histogram *h)
{
	uint64_t n = 0;

	if (h == NULL) {
		return (0);
	}
	for (size_t i = 0; i <= h->nbuckets; i++) {
		n += atomic_load(&h->counts[i]);
	}
	return (n);
}

// ---------------------------------------------------------------------
// Collectors
// ---------------------------------------------------------------------

void
cm_metrics_add_collector(cm_metrics *r, cm_metrics_collect_fn fn, void *arg)
{
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->ncols; i++) {
		if (r->cols[i].fn == fn && r->cols[i].arg == arg) {
			pthread_mutex_unlock(&r->mu);
			return;
		}
	}
	CM_ASSERT(r->ncols < COLLECTORS_MAX);
	r->cols[r->ncols].fn  = fn;
	r->cols[r->ncols].arg = arg;
	r->ncols++;
	pthread_mutex_unlock(&r->mu);
}

void
cm_metrics_remove_collector(cm_metrics *r, cm_metrics_collect_fn fn, void *arg)
{
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->ncols; i++) {
		if (r->cols[i].fn == fn && r->cols[i].arg == arg) {
			memmove(&r->cols[i], &r->cols[i + 1],
			    (size_t) (r->ncols - i - 1) * sizeof(collector));
			r->ncols--;
			break;
		}
	}
	pthread_mutex_unlock(&r->mu);
}

// ---------------------------------------------------------------------
// Exposition
// ---------------------------------------------------------------------

struct cm_mwriter {
	char  *buf;
	size_t len;
	size_t cap;
	int    too_big;
};

static void
w_raw(cm_mwriter *w, const char *s, size_t n)
{
	if (w->too_big) {
		return;
	}
	if (w->len + n + 1 > CM_METRICS_TEXT_MAX) {
		w->too_big = 1;
		return;
	}
	if (w->len + n + 1 > w->cap) {
		size_t cap = w->cap != 0 ? w->cap : 16384;
		while (cap < w->len + n + 1) {
			cap *= 2;
		}
		w->buf = cm_xrealloc(w->buf, cap);
		w->cap = cap;
	}
	memcpy(w->buf + w->len, s, n);
	w->len += n;
	w->buf[w->len] = '\0';
}

static void
w_str(cm_mwriter *w, const char *s)
{
	w_raw(w, s, strlen(s));
}

static void w_fmt(cm_mwriter *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
w_fmt(cm_mwriter *w, const char *fmt, ...)
{
	char    buf[128];
	va_list ap;
	int     n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0) {
		w_raw(w, buf,
		    (size_t) n < sizeof(buf) ? (size_t) n : sizeof(buf) - 1);
	}
}

// Escapes for HELP text (quote 0) and label values (quote 1).
static void
w_escaped(cm_mwriter *w, const char *s, int quote)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\') {
			w_raw(w, "\\\\", 2);
		} else if (*s == '\n') {
			w_raw(w, "\\n", 2);
		} else if (quote && *s == '"') {
			w_raw(w, "\\\"", 2);
		} else {
			w_raw(w, s, 1);
		}
	}
}

// A float the way Prometheus reads it: 15 significant digits (enough for
// our values, few enough to avoid binary noise such as 0.00050000000001).
static void
w_double(cm_mwriter *w, double v)
{
	if (isinf(v)) {
		w_str(w, v > 0 ? "+Inf" : "-Inf");
	} else if (isnan(v)) {
		w_str(w, "NaN");
	} else {
		w_fmt(w, "%.15g", v);
	}
}

void
cm_mwriter_family(
    cm_mwriter *w, const char *name, const char *type, const char *help)
{
	w_str(w, "# HELP ");
	w_str(w, name);
	w_str(w, " ");
	w_escaped(w, help, 0);
	w_str(w, "\n# TYPE ");
	w_str(w, name);
	w_str(w, " ");
	w_str(w, type);
	w_str(w, "\n");
}

void
cm_mwriter_sample(cm_mwriter *w, const char *name, const char *label,
    const char *value, double v)
{
	w_str(w, name);
	if (label != NULL) {
		w_str(w, "{");
		w_str(w, label);
		w_str(w, "=\"");
		w_escaped(w, value != NULL ? value : "", 1);
		w_str(w, "\"}");
	}
	w_str(w, " ");
	w_double(w, v);
	w_str(w, "\n");
}

// Writes {a="x",b="y"[,le="<le>"]} (nothing when empty).
static void
w_labels(cm_mwriter *w, const cm_mfamily *f, const series *s, const char *le)
{
	if (f->nlabels == 0 && le == NULL) {
		return;
	}
	w_str(w, "{");
	for (int i = 0; i < f->nlabels; i++) {
		if (i > 0) {
			w_str(w, ",");
		}
		w_str(w, f->labels[i]);
		w_str(w, "=\"");
		w_escaped(w, s->values[i], 1);
		w_str(w, "\"");
	}
	if (le != NULL) {
		if (f->nlabels > 0) {
			w_str(w, ",");
		}
		w_str(w, "le=\"");
		w_str(w, le);
		w_str(w, "\"");
	}
	w_str(w, "}");
}

static void
render_histogram(cm_mwriter *w, const cm_mfamily *f, const series *s)
{
	const cm_histogram *h = s->hist;
	uint64_t            counts[CM_METRICS_BUCKETS_MAX + 1];
	uint64_t            total = 0;
	uint64_t            sum   = atomic_load_explicit(
	                 &((cm_histogram *) h)->sum, memory_order_relaxed);

	for (size_t i = 0; i <= f->nbuckets; i++) {
		counts[i] = atomic_load_explicit(
		    &((cm_histogram *) h)->counts[i], memory_order_relaxed);
		total += counts[i];
	}
	if (f->sparse && total == 0) {
		return;
	}
	total = 0;
	for (size_t i = 0; i <= f->nbuckets; i++) {
		char le[40];

		total += counts[i];
		if (i < f->nbuckets) {
			snprintf(le, sizeof(le), "%.15g", f->buckets[i]);
		} else {
			snprintf(le, sizeof(le), "+Inf");
		}
		w_str(w, f->name);
		w_str(w, "_bucket");
		w_labels(w, f, s, le);
		w_fmt(w, " %llu\n", (unsigned long long) total);
	}
	w_str(w, f->name);
	w_str(w, "_sum");
	w_labels(w, f, s, NULL);
	w_str(w, " ");
	w_double(w, (double) sum * f->unit);
	w_str(w, "\n");
	w_str(w, f->name);
	w_str(w, "_count");
	w_labels(w, f, s, NULL);
	w_fmt(w, " %llu\n", (unsigned long long) total);
}

static void
render_family(cm_mwriter *w, const cm_mfamily *f)
{
	static const char *const types[] = { "counter", "gauge", "histogram" };
	const series            *s;

	cm_mwriter_family(w, f->name, types[f->type], f->help);
	for (s = f->head; s != NULL; s = s->next) {
		if (f->type == CM_METRIC_HISTOGRAM) {
			render_histogram(w, f, s);
			continue;
		}
		if (f->type == CM_METRIC_COUNTER) {
			uint64_t v = atomic_load_explicit(
			    &((series *) s)->counter.v, memory_order_relaxed);
			if (f->sparse && v == 0) {
				continue;
			}
			w_str(w, f->name);
			w_labels(w, f, s, NULL);
			w_fmt(w, " %llu\n", (unsigned long long) v);
		} else {
			int64_t v = atomic_load_explicit(
			    &((series *) s)->gauge.v, memory_order_relaxed);
			if (f->sparse && v == 0) {
				continue;
			}
			w_str(w, f->name);
			w_labels(w, f, s, NULL);
			w_fmt(w, " %lld\n", (long long) v);
		}
	}
}

cm_err
cm_metrics_render(cm_metrics *r, char **out, size_t *len)
{
	cm_mwriter w = { 0 };

	pthread_mutex_lock(&r->mu);
	// Series are added under series_mu; holding it too keeps each list
	// still while it is walked.
	pthread_mutex_lock(&series_mu);
	for (const cm_mfamily *f = r->head; f != NULL; f = f->next) {
		render_family(&w, f);
	}
	pthread_mutex_unlock(&series_mu);
	for (int i = 0; i < r->ncols; i++) {
		r->cols[i].fn(r->cols[i].arg, &w);
	}
	pthread_mutex_unlock(&r->mu);
	if (w.too_big) {
		free(w.buf);
		return (CM_ETOOBIG);
	}
	if (w.buf == NULL) {
		w.buf = cm_xstrdup("");
	}
	*out = w.buf;
	*len = w.len;
	return (CM_OK);
}

// ---------------------------------------------------------------------
// Process metrics (Linux /proc/self)
// ---------------------------------------------------------------------

// Reads the whole small file path into buf; returns its length or -1.
static ssize_t
read_small(const char *path, char *buf, size_t len)
{
	FILE  *f = fopen(path, "re");
	size_t n;

	if (f == NULL) {
		return (-1);
	}
	n = fread(buf, 1, len - 1, f);
	fclose(f);
	buf[n] = '\0';
	return ((ssize_t) n);
}

// System boot time (Unix s) from /proc/stat's btime, or 0.
static double
boot_time(void)
{
	static double bt;
	char          buf[8192];
	const char   *p;

	if (bt > 0) {
		return (bt);
	}
	if (read_small("/proc/stat", buf, sizeof(buf)) < 0) {
		return (0);
	}
	p = strstr(buf, "\nbtime ");
	if (p != NULL) {
		bt = strtod(p + 7, NULL);
	}
	return (bt);
}

static void
process_collect(void *arg, cm_mwriter *w)
{
	char          buf[2048];
	const char   *p;
	double        ticks = (double) sysconf(_SC_CLK_TCK);
	double        page  = (double) sysconf(_SC_PAGESIZE);
	double        utime = 0, stime = 0, start = 0, vsize = 0, rss = 0;
	int           fds = 0;
	struct rlimit rl;
	DIR          *d;

	(void) arg;
	// Fields after the command name (which may hold spaces and ')'):
	// 3 state ... 14 utime 15 stime ... 22 starttime 23 vsize 24 rss.
	if (read_small("/proc/self/stat", buf, sizeof(buf)) > 0 &&
	    (p = strrchr(buf, ')')) != NULL) {
		char *end;
		int   field = 3;

		p += 2;
		while (*p != '\0' && field <= 24) {
			double v = strtod(p, &end);
			if (end == p) {
				v   = 0; // the state letter
				end = (char *) p + strcspn(p, " ");
			}
			switch (field) {
			case 14:
				utime = v;
				break;
			case 15:
				stime = v;
				break;
			case 22:
				start = v;
				break;
			case 23:
				vsize = v;
				break;
			case 24:
				rss = v;
				break;
			default:
				break;
			}
			p = end;
			while (*p == ' ') {
				p++;
			}
			field++;
		}
	}
	d = opendir("/proc/self/fd");
	if (d != NULL) {
		struct dirent *e;
		while ((e = readdir(d)) != NULL) {
			if (e->d_name[0] != '.') {
				fds++;
			}
		}
		closedir(d);
		fds--; // the directory handle itself
	}
	cm_mwriter_family(w, "process_cpu_seconds_total", "counter",
	    "Total user and system CPU time spent in seconds.");
	cm_mwriter_sample(w, "process_cpu_seconds_total", NULL, NULL,
	    ticks > 0 ? (utime + stime) / ticks : 0);
	cm_mwriter_family(w, "process_resident_memory_bytes", "gauge",
	    "Resident memory size in bytes.");
	cm_mwriter_sample(
	    w, "process_resident_memory_bytes", NULL, NULL, rss * page);
	cm_mwriter_family(w, "process_virtual_memory_bytes", "gauge",
	    "Virtual memory size in bytes.");
	cm_mwriter_sample(
	    w, "process_virtual_memory_bytes", NULL, NULL, vsize);
	cm_mwriter_family(w, "process_open_fds", "gauge",
	    "Number of open file descriptors.");
	cm_mwriter_sample(w, "process_open_fds", NULL, NULL, fds);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		cm_mwriter_family(w, "process_max_fds", "gauge",
		    "Maximum number of open file descriptors.");
		cm_mwriter_sample(w, "process_max_fds", NULL, NULL,
		    rl.rlim_cur == RLIM_INFINITY ? INFINITY
		                                 : (double) rl.rlim_cur);
	}
	if (ticks > 0 && boot_time() > 0) {
		cm_mwriter_family(w, "process_start_time_seconds", "gauge",
		    "Start time of the process since unix epoch in seconds.");
		cm_mwriter_sample(w, "process_start_time_seconds", NULL, NULL,
		    boot_time() + start / ticks);
	}
}

void
cm_metrics_add_process(cm_metrics *r)
{
	(void) boot_time(); // read once, before any scrape
	cm_metrics_add_collector(r, process_collect, NULL);
}

void
cm_metrics_add_build_info(cm_metrics *r, const char *svc, const char *version)
{
	static const char *const labels[] = { "service", "version", NULL };
	cm_metric_desc           d        = { 0 };
	const char              *values[2];

	d.name    = "threadgate_build_info";
	d.help    = "Which threadgate program and version this is (always 1).";
	d.type    = CM_METRIC_GAUGE;
	d.labels  = labels;
	values[0] = svc;
	values[1] = version;
	cm_gauge_set(cm_gauge_get(cm_metrics_family(r, &d), values), 1);
}
