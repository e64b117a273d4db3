#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

struct metric {
    metric_family *family;
    char *values[METRICS_MAX_LABELS];
    uint64_t hash;
    /* A double's bits: C11 has no atomic add on doubles, so updates are a
     * compare-and-swap loop. The value, or a histogram's sum. */
    _Atomic uint64_t bits;
    /* Histogram: per-bucket (not cumulative) counts, the last one +Inf. */
    _Atomic uint64_t *counts;
};

struct metric_family {
    metrics *owner;
    metric_type type;
    char *name;
    char *help;
    char *labels[METRICS_MAX_LABELS];
    size_t n_labels;
    double buckets[METRICS_MAX_BUCKETS];
    size_t n_buckets;
    metric **series;
    size_t n_series, cap;
};

struct metrics {
    pthread_mutex_t lock;
    metric_family **families;
    size_t n_families, cap;
};

static uint64_t to_bits(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

static double from_bits(uint64_t b)
{
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

metrics *metrics_new(void)
{
    metrics *m = calloc(1, sizeof *m);
    if (m && pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

static void series_free(metric *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < METRICS_MAX_LABELS; i++)
        free(s->values[i]);
    free(s->counts);
    free(s);
}

static void family_free(metric_family *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_series; i++)
        series_free(f->series[i]);
    free(f->series);
    for (size_t i = 0; i < f->n_labels; i++)
        free(f->labels[i]);
    free(f->name);
    free(f->help);
    free(f);
}

void metrics_free(metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_families; i++)
        family_free(m->families[i]);
    free(m->families);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* ---- registration ------------------------------------------------------ */

static int valid_name(const char *name, int colon)
{
    if (!name || !*name || strlen(name) > 200)
        return 0;
    for (const char *c = name; *c; c++) {
        int alpha = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_' ||
                    (colon && *c == ':');
        if (!alpha && !(c > name && *c >= '0' && *c <= '9'))
            return 0;
    }
    return 1;
}

static metric_family *find_family(const metrics *m, const char *name)
{
    for (size_t i = 0; i < m->n_families; i++)
        if (strcmp(m->families[i]->name, name) == 0)
            return m->families[i];
    return NULL;
}

static int check_family(metric_type type, const char *name, const char *const *labels,
                        const double *buckets, size_t n_buckets)
{
    if (!valid_name(name, 1))
        return -1;
    size_t n = 0;
    for (; labels && labels[n]; n++) {
        if (n >= METRICS_MAX_LABELS || !valid_name(labels[n], 0) ||
            strncmp(labels[n], "__", 2) == 0 ||
            (type == METRIC_HISTOGRAM && strcmp(labels[n], "le") == 0))
            return -1;
        for (size_t j = 0; j < n; j++)
            if (strcmp(labels[j], labels[n]) == 0)
                return -1;
    }
    if (type != METRIC_HISTOGRAM)
        return 0;
    if (!buckets || n_buckets == 0 || n_buckets > METRICS_MAX_BUCKETS)
        return -1;
    for (size_t i = 0; i < n_buckets; i++)
        if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1]))
            return -1;
    return 0;
}

static metric_family *family_new(metric_type type, const char *name, const char *help,
                                 const char *const *labels, const double *buckets,
                                 size_t n_buckets)
{
    metric_family *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->type = type;
    f->name = core_strdup(name);
    f->help = core_strdup(help ? help : "");
    if (!f->name || !f->help)
        goto fail;
    for (; labels && labels[f->n_labels]; f->n_labels++)
        if (!(f->labels[f->n_labels] = core_strdup(labels[f->n_labels])))
            goto fail;
    if (type == METRIC_HISTOGRAM) {
        memcpy(f->buckets, buckets, n_buckets * sizeof *buckets);
        f->n_buckets = n_buckets;
    }
    return f;
fail:
    family_free(f);
    return NULL;
}

metric_family *metrics_family(metrics *m, metric_type type, const char *name,
                              const char *help, const char *const *labels,
                              const double *buckets, size_t n_buckets)
{
    if (!m || check_family(type, name, labels, buckets, n_buckets) != 0)
        return NULL;
    pthread_mutex_lock(&m->lock);
    metric_family *f = NULL;
    if (find_family(m, name))
        goto out;
    if (m->n_families == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        metric_family **list = realloc(m->families, cap * sizeof *list);
        if (!list)
            goto out;
        m->families = list;
        m->cap = cap;
    }
    f = family_new(type, name, help, labels, buckets, n_buckets);
    if (f) {
        f->owner = m;
        m->families[m->n_families++] = f;
    }
out:
    pthread_mutex_unlock(&m->lock);
    return f;
}

metric_family *metrics_find(metrics *m, const char *name)
{
    pthread_mutex_lock(&m->lock);
    metric_family *f = find_family(m, name);
    pthread_mutex_unlock(&m->lock);
    return f;
}

metric_type metrics_family_type(const metric_family *f) { return f->type; }

int metrics_family_is(const metric_family *f, metric_type type, const char *const *labels)
{
    size_t n = 0;
    while (labels && labels[n])
        n++;
    if (f->type != type || f->n_labels != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(f->labels[i], labels[i]) != 0)
            return 0;
    return 1;
}

size_t metrics_family_labels(const metric_family *f) { return f->n_labels; }

/* ---- series ------------------------------------------------------------ */

/* FNV-1a over the values, each with its terminator, so ("ab","c") and
 * ("a","bc") differ. Only a shortcut before the string compare. */
static uint64_t values_hash(const char *const *values, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        for (const char *c = values[i];; c++) {
            h = (h ^ (unsigned char)*c) * 1099511628211ull;
            if (!*c)
                break;
        }
    }
    return h;
}

static metric *series_new(metric_family *f, const char *const *values, uint64_t hash)
{
    metric *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->family = f;
    s->hash = hash;
    atomic_init(&s->bits, to_bits(0.0));
    for (size_t i = 0; i < f->n_labels; i++)
        if (!(s->values[i] = core_strdup(values[i])))
            goto fail;
    if (f->type == METRIC_HISTOGRAM) {
        s->counts = calloc(f->n_buckets + 1, sizeof *s->counts);
        if (!s->counts)
            goto fail;
        for (size_t i = 0; i <= f->n_buckets; i++)
            atomic_init(&s->counts[i], 0);
    }
    return s;
fail:
    series_free(s);
    return NULL;
}

static metric *find_series(const metric_family *f, const char *const *values, uint64_t hash)
{
    for (size_t i = 0; i < f->n_series; i++) {
        metric *s = f->series[i];
        if (s->hash != hash)
            continue;
        size_t j = 0;
        while (j < f->n_labels && strcmp(s->values[j], values[j]) == 0)
            j++;
        if (j == f->n_labels)
            return s;
    }
    return NULL;
}

metric *metrics_series(metric_family *f, const char *const *values)
{
    if (!f)
        return NULL;
    for (size_t i = 0; i < f->n_labels; i++)
        if (!values || !values[i])
            return NULL;
    uint64_t hash = values_hash(values, f->n_labels);
    pthread_mutex_lock(&f->owner->lock);
    metric *s = find_series(f, values, hash);
    if (s || f->n_series >= METRICS_MAX_SERIES)
        goto out;
    if (f->n_series == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        metric **list = realloc(f->series, cap * sizeof *list);
        if (!list)
            goto out;
        f->series = list;
        f->cap = cap;
    }
    s = series_new(f, values, hash);
    if (s)
        f->series[f->n_series++] = s;
out:
    pthread_mutex_unlock(&f->owner->lock);
    return s;
}

metric *metrics_series1(metric_family *f, const char *value)
{
    const char *values[1] = {value};
    return f && f->n_labels == 1 ? metrics_series(f, values) : NULL;
}

/* ---- values ------------------------------------------------------------ */

static void add_bits(_Atomic uint64_t *bits, double v)
{
    uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(bits, &old, to_bits(from_bits(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void metric_add(metric *s, double v)
{
    if (!s || !isfinite(v) || s->family->type == METRIC_HISTOGRAM ||
        (s->family->type == METRIC_COUNTER && v < 0))
        return;
    add_bits(&s->bits, v);
}

void metric_set(metric *s, double v)
{
    if (s && s->family->type != METRIC_HISTOGRAM)
        atomic_store_explicit(&s->bits, to_bits(v), memory_order_relaxed);
}

/* Raises the atomic double in bits to v, never lowers it. */
static void raise_bits(_Atomic uint64_t *bits, double v)
{
    uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
    while (from_bits(old) < v &&
           !atomic_compare_exchange_weak_explicit(bits, &old, to_bits(v), memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

void metric_raise(metric *s, double v)
{
    if (!s || isnan(v) || s->family->type == METRIC_HISTOGRAM)
        return;
    raise_bits(&s->bits, v);
}

void metric_observe(metric *s, double v)
{
    if (!s || s->family->type != METRIC_HISTOGRAM || isnan(v))
        return;
    const metric_family *f = s->family;
    size_t i = 0;
    while (i < f->n_buckets && v > f->buckets[i])
        i++;
    atomic_fetch_add_explicit(&s->counts[i], 1, memory_order_relaxed);
    add_bits(&s->bits, v);
}

void metric_histogram_raise(metric *s, const unsigned long long *counts, size_t n, double sum)
{
    if (!s || s->family->type != METRIC_HISTOGRAM || n != s->family->n_buckets + 1 ||
        isnan(sum))
        return;
    for (size_t i = 0; i < n; i++) {
        uint64_t old = atomic_load_explicit(&s->counts[i], memory_order_relaxed);
        while (old < counts[i] &&
               !atomic_compare_exchange_weak_explicit(&s->counts[i], &old, (uint64_t)counts[i],
                                                      memory_order_relaxed,
                                                      memory_order_relaxed))
            ;
    }
    raise_bits(&s->bits, sum);
}

double metric_value(const metric *s)
{
    if (!s)
        return 0;
    if (s->family->type != METRIC_HISTOGRAM)
        return from_bits(atomic_load_explicit(&s->bits, memory_order_relaxed));
    uint64_t n = 0;
    for (size_t i = 0; i <= s->family->n_buckets; i++)
        n += atomic_load_explicit(&s->counts[i], memory_order_relaxed);
    return (double)n;
}

/* ---- rendering --------------------------------------------------------- */

typedef struct text {
    char *p;
    size_t len, cap;
    int failed;
} text;

static void put(text *t, const char *s, size_t n)
{
    if (t->failed)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *p = cap <= METRICS_MAX_TEXT ? realloc(t->p, cap) : NULL;
        if (!p) {
            t->failed = 1;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void puts_(text *t, const char *s) { put(t, s, strlen(s)); }

/* A number as the format spells it: the shortest of %.15g and %.17g that
 * reads back exactly, so counts print as integers. */
static void put_number(text *t, double v)
{
    char buf[32];
    if (isnan(v)) {
        puts_(t, "NaN");
        return;
    }
    if (isinf(v)) {
        puts_(t, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    int n = snprintf(buf, sizeof buf, "%.15g", v);
    if (n > 0 && strtod(buf, NULL) != v)
        n = snprintf(buf, sizeof buf, "%.17g", v);
    if (n <= 0 || (size_t)n >= sizeof buf) {
        t->failed = 1;
        return;
    }
    put(t, buf, (size_t)n);
}

/* Label values escape backslash, double quote and newline; HELP text
 * only backslash and newline (the format's two rules). */
static void put_escaped(text *t, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            puts_(t, "\\\\");
        else if (*s == '\n')
            puts_(t, "\\n");
        else if (quote && *s == '"')
            puts_(t, "\\\"");
        else
            put(t, s, 1);
    }
}

/* name{labels,le="x"} value */
static void put_sample(text *t, const metric *s, const char *suffix, const double *le,
                       double value)
{
    const metric_family *f = s->family;
    puts_(t, f->name);
    puts_(t, suffix);
    if (f->n_labels || le) {
        puts_(t, "{");
        for (size_t i = 0; i < f->n_labels; i++) {
            if (i)
                puts_(t, ",");
            puts_(t, f->labels[i]);
            puts_(t, "=\"");
            put_escaped(t, s->values[i], 1);
            puts_(t, "\"");
        }
        if (le) {
            puts_(t, f->n_labels ? ",le=\"" : "le=\"");
            put_number(t, *le);
            puts_(t, "\"");
        }
        puts_(t, "}");
    }
    puts_(t, " ");
    put_number(t, value);
    puts_(t, "\n");
}

static void put_histogram(text *t, const metric *s)
{
    const metric_family *f = s->family;
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= f->n_buckets; i++) {
        cumulative += atomic_load_explicit(&s->counts[i], memory_order_relaxed);
        double le = i < f->n_buckets ? f->buckets[i] : INFINITY;
        put_sample(t, s, "_bucket", &le, (double)cumulative);
    }
    put_sample(t, s, "_sum", NULL, from_bits(atomic_load_explicit(&s->bits,
                                                                  memory_order_relaxed)));
    /* _count is the +Inf bucket by definition; reading it from the same
     * loads keeps the two equal while other threads observe. */
    put_sample(t, s, "_count", NULL, (double)cumulative);
}

static void put_family(text *t, const metric_family *f)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    puts_(t, "# HELP ");
    puts_(t, f->name);
    puts_(t, " ");
    put_escaped(t, f->help, 0);
    puts_(t, "\n# TYPE ");
    puts_(t, f->name);
    puts_(t, " ");
    puts_(t, type_names[f->type]);
    puts_(t, "\n");
    for (size_t i = 0; i < f->n_series; i++) {
        const metric *s = f->series[i];
        if (f->type == METRIC_HISTOGRAM)
            put_histogram(t, s);
        else
            put_sample(t, s, "", NULL, from_bits(atomic_load_explicit(&s->bits,
                                                                      memory_order_relaxed)));
    }
}

int metrics_render(metrics *m, char **out, size_t *out_len)
{
    text t = {0};
    puts_(&t, "");
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_families; i++)
        put_family(&t, m->families[i]);
    pthread_mutex_unlock(&m->lock);
    if (t.failed) {
        free(t.p);
        return -1;
    }
    *out = t.p;
    *out_len = t.len;
    return 0;
}
