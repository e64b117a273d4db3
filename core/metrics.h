/* Metrics registry: counters, gauges and histograms with labels, and their
 * rendering in the Prometheus text exposition format (version 0.0.4).
 * Values are atomics, so any thread may update a series; registering
 * families, finding series and rendering take the registry's lock. So
 * every function is safe from any thread, rendering included while
 * others update, register families or add series (only metrics_new and
 * metrics_free must not overlap another call). A family and a series,
 * once made, live as long as the registry. The server's own families are
 * in server_metrics.c, the HTTP answer in metrics_http.c. */
#ifndef SM_CORE_METRICS_H
#define SM_CORE_METRICS_H

#include <stddef.h>

typedef struct metrics metrics;
typedef struct metric_family metric_family;
typedef struct metric metric;

typedef enum metric_type {
    METRIC_COUNTER,
    METRIC_GAUGE,
    METRIC_HISTOGRAM
} metric_type;

#define METRICS_MAX_LABELS 4
#define METRICS_MAX_BUCKETS 16
/* Series per family: label values beyond this many combinations are
 * refused, so a bug or a hostile input cannot grow the registry. */
#define METRICS_MAX_SERIES 2048
/* A rendered page larger than this is an error rather than a bigger
 * allocation. */
#define METRICS_MAX_TEXT (8u << 20)

metrics *metrics_new(void);
void metrics_free(metrics *m);

/* Registers a family. `labels` is a NULL-terminated list of label names
 * (NULL for none); `buckets` the ascending upper bounds of a histogram
 * (the +Inf bucket is implicit; ignored for other types). Names are
 * checked ([a-zA-Z_:][a-zA-Z0-9_:]*, labels without ':' and not "__..."
 * or "le" of a histogram). NULL for a bad or duplicate name or no memory. */
metric_family *metrics_family(metrics *m, metric_type type, const char *name,
                              const char *help, const char *const *labels,
                              const double *buckets, size_t n_buckets);

/* The family registered as name; NULL if there is none. */
metric_family *metrics_find(metrics *m, const char *name);
metric_type metrics_family_type(const metric_family *f);
size_t metrics_family_labels(const metric_family *f);
/* 1 when f has this type and exactly these label names (NULL-terminated
 * list, NULL for none). */
int metrics_family_is(const metric_family *f, metric_type type, const char *const *labels);

/* The series of `f` with these label values (as many as the family has
 * labels; NULL when it has none), created at 0 on first use. NULL when out
 * of memory or over METRICS_MAX_SERIES. */
metric *metrics_series(metric_family *f, const char *const *values);
/* The series of a family with exactly one label. */
metric *metrics_series1(metric_family *f, const char *value);

/* Counters: add v >= 0 (other values are ignored). Gauges: any v. */
void metric_add(metric *s, double v);
/* Gauges (a counter must never be set lower: metric_raise). */
void metric_set(metric *s, double v);
/* Counters kept elsewhere and copied in at scrape time: sets v only
 * when it is above the current value, so that two scrapes at once, each
 * with its own reading, never move the counter back. */
void metric_raise(metric *s, double v);
/* Histograms only. */
void metric_observe(metric *s, double v);
/* Histograms observed elsewhere and copied in at scrape time: `counts`
 * per bucket (not cumulative; n is the family's bucket count + 1, the
 * last +Inf) and their sum. Each count and the sum only rise, as with
 * metric_raise; a wrong n or type is ignored. */
void metric_histogram_raise(metric *s, const unsigned long long *counts, size_t n, double sum);
/* The value of a counter or gauge, or a histogram's count. */
double metric_value(const metric *s);

/* The registry rendered in the text format; *out is malloc'd and
 * NUL-terminated. 0, or -1 when out of memory or over METRICS_MAX_TEXT. */
int metrics_render(metrics *m, char **out, size_t *out_len);

#endif
