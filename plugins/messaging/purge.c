/* The purge: deletes expired messages and, when retention is configured,
 * read private messages and room history past it (docs/OPERATIONS.md,
 * messaging). Readers already skip expired rows, so for them this only
 * frees storage; retention is enforced by this purge alone. */
#include "messaging.h"

/* Expired rows are deleted every 30 s (PROTOCOL.md: within a minute), in
 * batches, so one tick never holds the loop for long. The batches of one
 * run are shared by every kind of purge: retention adds no time to a run. */
#define PURGE_INTERVAL 30.0
#define PURGE_BATCH 1000
#define PURGE_MAX_BATCHES 20
/* With more left after a run, the next run comes this soon: a backlog
 * drains in short runs that never hold the loop for long. */
#define PURGE_FOLLOW_UP 0.2
/* messaging.private_retention and public_retention: 0 (kept for ever) or
 * from a minute to ten years. Less than a minute means nothing with a
 * purge every 30 s and is more likely a unit mistake (minutes or days
 * meant) that would wipe the history at once. */
#define RETENTION_MIN 60
#define RETENTION_MAX 315360000

int messaging_purge_configure(messaging *m)
{
    static const char *const keys[] = {"private_retention", "public_retention"};
    int64_t *values[] = {&m->private_retention, &m->public_retention};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        *values[i] = 0; /* docs/OPERATIONS.md: kept for ever when absent */
        int rc = m->host->config_int(m->self, keys[i], 0, RETENTION_MAX, values[i]);
        if (rc != SM_OK)
            return rc;
        if (*values[i] > 0 && *values[i] < RETENTION_MIN) {
            m->host->log(m->self, SM_LOG_ERROR, "messaging.%s must be 0 or from %d to %d",
                         keys[i], RETENTION_MIN, RETENTION_MAX);
            return SM_EINVAL;
        }
    }
    return SM_OK;
}

/* The cutoff of one kind at `now`; 0 when that kind is off. */
static int purge_cutoff(const messaging *m, store_purge_kind kind, double now, double *cutoff)
{
    int64_t retention = kind == STORE_PURGE_READ_PRIVATE ? m->private_retention
                        : kind == STORE_PURGE_OLD_PUBLIC ? m->public_retention
                                                         : 0;
    if (kind != STORE_PURGE_EXPIRED && retention == 0)
        return 0;
    *cutoff = now - (double)retention;
    return 1;
}

static void on_purge_more(sm_timer *timer, void *arg);

/* One run: each kind in turn, in batches until it has no more due rows or
 * the run's PURGE_MAX_BATCHES are spent; then a follow-up run is due. */
static int purge_run(messaging *m, int64_t total[STORE_PURGE_KINDS], int *more_out)
{
    static const char *const kind_name[STORE_PURGE_KINDS] = {"expired", "read private",
                                                              "old public"};
    const sm_host *h = m->host;
    double now = h->now();
    int batches = 0, more = 0;
    for (int k = 0; k < STORE_PURGE_KINDS; k++)
        total[k] = 0;
    for (int k = 0; k < STORE_PURGE_KINDS && !more; k++) {
        double cutoff = 0;
        if (!purge_cutoff(m, (store_purge_kind)k, now, &cutoff))
            continue;
        int64_t deleted = PURGE_BATCH;
        while (deleted == PURGE_BATCH) {
            if (batches == PURGE_MAX_BATCHES) {
                more = 1;
                break;
            }
            if (store_purge(&m->store, (store_purge_kind)k, cutoff, PURGE_BATCH, &deleted) !=
                SM_OK) {
                h->log(m->self, SM_LOG_ERROR, "purge of %s messages failed", kind_name[k]);
                return SM_ERROR;
            }
            total[k] += deleted;
            batches++;
        }
    }
    int64_t sum = total[STORE_PURGE_EXPIRED] + total[STORE_PURGE_READ_PRIVATE] +
                  total[STORE_PURGE_OLD_PUBLIC];
    if (more) {
        h->log(m->self, SM_LOG_INFO,
               "deleted %lld messages (%lld expired, %lld read private, %lld old public);"
               " more remain, next run in %.1f s",
               (long long)sum, (long long)total[STORE_PURGE_EXPIRED],
               (long long)total[STORE_PURGE_READ_PRIVATE],
               (long long)total[STORE_PURGE_OLD_PUBLIC], PURGE_FOLLOW_UP);
        if (!m->purge_more)
            m->purge_more = h->timer_start(m->self, PURGE_FOLLOW_UP, 0, on_purge_more, m);
    } else if (sum > 0) {
        h->log(m->self, SM_LOG_DEBUG,
               "deleted %lld messages (%lld expired, %lld read private, %lld old public)",
               (long long)sum, (long long)total[STORE_PURGE_EXPIRED],
               (long long)total[STORE_PURGE_READ_PRIVATE],
               (long long)total[STORE_PURGE_OLD_PUBLIC]);
    }
    if (more_out)
        *more_out = more;
    return SM_OK;
}

static void on_purge(sm_timer *timer, void *arg)
{
    (void)timer;
    int64_t total[STORE_PURGE_KINDS];
    purge_run(arg, total, NULL);
}

static void on_purge_more(sm_timer *timer, void *arg)
{
    (void)timer;
    messaging *m = arg;
    m->purge_more = NULL; /* one-shot: freed by the core after this call */
    int64_t total[STORE_PURGE_KINDS];
    purge_run(m, total, NULL);
}

/* safemessenger-admin purge: one run now, as the timer would do it (a
 * backlog beyond one run's batches continues in follow-up runs, so the
 * loop is never held for long; "more" says so). */
void messaging_admin_purge(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    (void)args;
    messaging *m = data;
    int64_t total[STORE_PURGE_KINDS];
    int more = 0;
    if (purge_run(m, total, &more) != SM_OK) {
        m->host->admin_error(ctx, SM_ERROR, "the purge failed (see the server's log)");
        return;
    }
    json_t *result = json_pack("{s:I, s:I, s:I, s:b}", "expired",
                               (json_int_t)total[STORE_PURGE_EXPIRED], "read_private",
                               (json_int_t)total[STORE_PURGE_READ_PRIVATE], "old_public",
                               (json_int_t)total[STORE_PURGE_OLD_PUBLIC], "more", more);
    m->host->admin_reply(ctx, result);
    json_decref(result);
}

int messaging_purge_start(messaging *m)
{
    m->purge_timer = m->host->timer_start(m->self, PURGE_INTERVAL, PURGE_INTERVAL, on_purge, m);
    return m->purge_timer ? SM_OK : SM_ENOMEM;
}

void messaging_purge_stop(messaging *m)
{
    if (m->purge_timer)
        m->host->timer_stop(m->purge_timer);
    if (m->purge_more)
        m->host->timer_stop(m->purge_more);
    m->purge_timer = NULL;
    m->purge_more = NULL;
}
