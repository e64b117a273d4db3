#include "host_metrics.h"

#include <math.h>
#include <string.h>

#include "core.h"
#include "log.h"
#include "metrics.h"
#include "plugin_loader.h"

/* sm_metric is the plugin's name for a family of the registry. */
static metric_family *family_of(sm_metric *m) { return (metric_family *)(void *)m; }

static int lower_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

/* "safemessenger_<plugin>_<what>": a plugin's names cannot collide with
 * the core's or another plugin's, and say whose they are. */
static int valid_metric_name(const plugin *p, sm_metric_type type, const char *name)
{
    static const char prefix[] = "safemessenger_";
    size_t np = sizeof prefix - 1, nn = strlen(p->name), len = strlen(name);
    if (!lower_name(name) || len <= np + nn + 1 || strncmp(name, prefix, np) != 0 ||
        strncmp(name + np, p->name, nn) != 0 || name[np + nn] != '_')
        return 0;
    return type != SM_METRIC_COUNTER || (len > 6 && strcmp(name + len - 6, "_total") == 0);
}

static int register_family(plugin *self, sm_metric_type type, const char *name,
                           const char *help, const char *const *labels, sm_metric **out)
{
    if (!out || !name || (type != SM_METRIC_COUNTER && type != SM_METRIC_GAUGE) ||
        !valid_metric_name(self, type, name) || (help && strchr(help, '\n'))) {
        log_msg(SM_LOG_ERROR, self->name,
                "metric name '%s' refused: it must be safemessenger_%s_<what> of [a-z0-9_], "
                "a counter's ending in _total", name ? name : "(null)", self->name);
        return SM_EINVAL;
    }
    for (size_t i = 0; labels && labels[i]; i++) {
        if (i >= METRICS_MAX_LABELS || !lower_name(labels[i]) ||
            (labels[i][0] >= '0' && labels[i][0] <= '9')) {
            log_msg(SM_LOG_ERROR, self->name,
                    "metric '%s': label '%s' refused (at most %d, each [a-z_][a-z0-9_]*)", name,
                    labels[i], METRICS_MAX_LABELS);
            return SM_EINVAL;
        }
    }
    metric_type kind = type == SM_METRIC_COUNTER ? METRIC_COUNTER : METRIC_GAUGE;
    /* Only this plugin can have registered its prefix: a plugin unloaded
     * and loaded again by a reload gets its metrics back, values kept, so
     * counters never go down while the server runs. */
    metric_family *f = metrics_find(g_core.metrics, name);
    if (f && !metrics_family_is(f, kind, labels)) {
        log_msg(SM_LOG_ERROR, self->name,
                "metric '%s' is registered already with another type or labels", name);
        return SM_EEXIST;
    }
    if (!f && !(f = metrics_family(g_core.metrics, kind, name, help, labels, NULL, 0))) {
        log_msg(SM_LOG_ERROR, self->name, "metric '%s': out of memory", name);
        return SM_ENOMEM;
    }
    *out = (sm_metric *)(void *)f;
    return SM_OK;
}

int host_metric_register(sm_plugin *self, sm_metric_type type, const char *name,
                         const char *help, const char *const *labels, sm_metric **out)
{
    if (!self || g_core.initialising != self) {
        log_msg(SM_LOG_ERROR, self ? self->name : "?",
                "metric_register is allowed only during init");
        return SM_ESTATE;
    }
    int rc = register_family(self, type, name, help, labels, out);
    /* As every refused registration: start-up fails, naming the plugin. */
    if (rc != SM_OK)
        g_core.init_errors++;
    return rc;
}

static metric *series_of(metric_family *f, const char *const *label_values, int *rc)
{
    size_t n = metrics_family_labels(f);
    for (size_t i = 0; i < n; i++)
        if (!label_values || !label_values[i]) {
            *rc = SM_EINVAL;
            return NULL;
        }
    metric *s = metrics_series(f, label_values);
    *rc = s ? SM_OK : SM_EBUSY;
    return s;
}

int host_metric_add(sm_metric *m, const char *const *label_values, double value)
{
    if (!m || !isfinite(value) ||
        (metrics_family_type(family_of(m)) == METRIC_COUNTER && value < 0))
        return SM_EINVAL;
    int rc;
    metric *s = series_of(family_of(m), label_values, &rc);
    if (s)
        metric_add(s, value);
    return rc;
}

int host_metric_set(sm_metric *m, const char *const *label_values, double value)
{
    if (!m || isnan(value) || metrics_family_type(family_of(m)) != METRIC_GAUGE)
        return SM_EINVAL;
    int rc;
    metric *s = series_of(family_of(m), label_values, &rc);
    if (s)
        metric_set(s, value);
    return rc;
}
