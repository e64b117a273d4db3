/* The host table's metric services (sm_host.metric_register, metric_add,
 * metric_set): plugin families in the core's registry, g_core.metrics. */
#ifndef SM_CORE_HOST_METRICS_H
#define SM_CORE_HOST_METRICS_H

#include "safemessenger/plugin.h"

int host_metric_register(sm_plugin *self, sm_metric_type type, const char *name,
                         const char *help, const char *const *labels, sm_metric **out);
int host_metric_add(sm_metric *metric, const char *const *label_values, double value);
int host_metric_set(sm_metric *metric, const char *const *label_values, double value);

#endif
