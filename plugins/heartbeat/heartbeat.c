/* Heartbeat: PING every session past the handshake every heartbeat.interval
 * seconds and close, with 1001, a session that has sent no PONG for
 * heartbeat.timeout seconds (PROTOCOL.md section 7, "Server-initiated").
 *
 * Sessions live in an open-addressing table (id -> node, for PONG and
 * CLOSED in O(1)) and in one list ordered by their last sign of life, so
 * the once-a-second timeout check looks only at the oldest entries. */
#include <stdint.h>
#include <stdlib.h>

#include "safemessenger/plugin.h"

#define HB_CLOSE_CODE 1001

typedef struct hb_node {
    sm_session_id id;
    uint64_t alive_tick;          /* hb->ticks at OPENED or at the last PONG */
    struct hb_node *prev, *next;  /* age list, oldest alive_tick first */
} hb_node;

typedef struct heartbeat {
    const sm_host *host;
    sm_plugin *self;
    int64_t interval, timeout;
    sm_timer *ping_timer, *tick_timer;
    /* Seconds counted by the 1 s timer. Timers run on the monotonic clock
     * while now() is the wall clock, which can jump: a clock change must
     * not close every session at once (PLUGINS.md section 9). */
    uint64_t ticks;
    hb_node **slots;              /* linear probing, power-of-two size */
    size_t cap, count;
    hb_node *oldest, *newest;
} heartbeat;

/* Session ids are sequential: mix them so neighbours spread over the table. */
static size_t home_slot(const heartbeat *hb, sm_session_id id)
{
    uint64_t x = id;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & (hb->cap - 1);
}

/* The slot holding id, or the empty slot where it would go. The table is
 * never more than half full, so an empty slot always ends the probe. */
static size_t probe(const heartbeat *hb, sm_session_id id)
{
    size_t i = home_slot(hb, id);
    while (hb->slots[i] && hb->slots[i]->id != id)
        i = (i + 1) & (hb->cap - 1);
    return i;
}

static int grow(heartbeat *hb)
{
    size_t old_cap = hb->cap;
    hb_node **old = hb->slots;
    size_t cap = old_cap ? old_cap * 2 : 64;
    hb_node **slots = calloc(cap, sizeof *slots);
    if (!slots)
        return SM_ENOMEM;
    hb->slots = slots;
    hb->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i])
            hb->slots[probe(hb, old[i]->id)] = old[i];
    free(old);
    return SM_OK;
}

/* Backward-shift deletion: no tombstones, so lookups stay short however
 * many sessions come and go. An entry moves into the hole only if the hole
 * lies on its probe path (between its home slot and where it sits). */
static void slot_remove(heartbeat *hb, size_t hole)
{
    size_t mask = hb->cap - 1;
    hb->slots[hole] = NULL;
    for (size_t j = (hole + 1) & mask; hb->slots[j]; j = (j + 1) & mask) {
        size_t home = home_slot(hb, hb->slots[j]->id);
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            hb->slots[hole] = hb->slots[j];
            hb->slots[j] = NULL;
            hole = j;
        }
    }
    hb->count--;
}

static void list_unlink(heartbeat *hb, hb_node *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        hb->oldest = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        hb->newest = n->prev;
    n->prev = n->next = NULL;
}

/* Ticks never decrease, so appending keeps the list ordered. */
static void list_append(heartbeat *hb, hb_node *n)
{
    n->prev = hb->newest;
    n->next = NULL;
    if (hb->newest)
        hb->newest->next = n;
    else
        hb->oldest = n;
    hb->newest = n;
}

static int track(heartbeat *hb, sm_session_id id)
{
    if ((hb->count + 1) * 2 > hb->cap && grow(hb) != SM_OK)
        return SM_ENOMEM;
    size_t i = probe(hb, id);
    if (hb->slots[i])
        return SM_EEXIST;
    hb_node *n = calloc(1, sizeof *n);
    if (!n)
        return SM_ENOMEM;
    n->id = id;
    n->alive_tick = hb->ticks;
    hb->slots[i] = n;
    hb->count++;
    list_append(hb, n);
    return SM_OK;
}

static void forget(heartbeat *hb, sm_session_id id)
{
    size_t i = probe(hb, id);
    hb_node *n = hb->slots[i];
    if (!n)
        return;
    list_unlink(hb, n);
    slot_remove(hb, i);
    free(n);
}

static void on_session_event(const sm_event_info *info, void *plugin_data)
{
    sm_core_event event = info->event;
    sm_session_id session = info->session;
    const char *username = info->username;
    (void)username;
    heartbeat *hb = plugin_data;
    if (event == SM_EVENT_SESSION_CLOSED)
        forget(hb, session);
    else if (event == SM_EVENT_SESSION_OPENED && track(hb, session) == SM_ENOMEM)
        /* Such a session works, but is never pinged nor timed out. */
        hb->host->log(hb->self, SM_LOG_ERROR, "session %llu: out of memory, no heartbeat",
                      (unsigned long long)session);
}

/* Any well-formed PONG counts as a sign of life: the echoed timestamp is
 * not matched against the PINGs sent, because a client that answers at
 * all is alive, and a late answer to an older PING proves it as well. */
static void pong(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    (void)payload;
    heartbeat *hb = plugin_data;
    hb_node *n = hb->slots[probe(hb, hb->host->ctx_session(ctx))];
    if (!n)
        return; /* closing after a timeout: too late */
    n->alive_tick = hb->ticks;
    list_unlink(hb, n);
    list_append(hb, n);
}

/* Closes at the first tick more than `timeout` whole ticks after the last
 * sign of life: between timeout and timeout + 1 s later, never earlier. */
static void on_tick(sm_timer *timer, void *arg)
{
    (void)timer;
    heartbeat *hb = arg;
    hb->ticks++;
    while (hb->oldest && hb->ticks - hb->oldest->alive_tick > (uint64_t)hb->timeout) {
        sm_session_id id = hb->oldest->id;
        /* Forget it first: CLOSED comes later (or, with some transports,
         * inside session_close), and the session must not be closed twice. */
        forget(hb, id);
        hb->host->log(hb->self, SM_LOG_INFO, "session %llu: no PONG for %lld s, closing",
                      (unsigned long long)id, (long long)hb->timeout);
        hb->host->session_close(id, HB_CLOSE_CODE, "heartbeat timeout");
    }
}

static void on_ping(sm_timer *timer, void *arg)
{
    (void)timer;
    heartbeat *hb = arg;
    if (!hb->count)
        return;
    /* Sending can close a session (queue overflow) and so change the list
     * under us: walk a copy of the ids instead. */
    size_t n = 0;
    sm_session_id *ids = malloc(hb->count * sizeof *ids);
    json_t *ping = json_pack("{s:n, s:f}", "username", "timestamp", hb->host->now());
    if (!ids || !ping) {
        hb->host->log(hb->self, SM_LOG_ERROR, "out of memory: PINGs skipped this time");
        goto done;
    }
    for (hb_node *p = hb->oldest; p; p = p->next)
        ids[n++] = p->id;
    for (size_t i = 0; i < n; i++) {
        const char *name = hb->host->session_username(ids[i]);
        json_t *who = name ? json_string(name) : json_null();
        if (!who || json_object_set_new(ping, "username", who) != 0)
            continue;
        /* A session closing meanwhile answers SM_ENOTFOUND or SM_ERROR:
         * nothing to do, CLOSED will tell us. */
        hb->host->send_event(ids[i], "PING", ping);
    }
done:
    json_decref(ping);
    free(ids);
}

static const sm_field pong_schema[] = {
    {"timestamp", SM_FIELD_NUMBER, SM_FIELD_REQUIRED, 0, 0},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

/* PONG needs no login (PINGs go out before login too), takes no rate
 * token (a busy client must not be closed for answering) and, per
 * PROTOCOL.md section 5, gets no reply at all, not even an error. */
static const sm_action actions[] = {
    {"PONG", pong, SM_ACTION_NO_REPLY | SM_ACTION_NO_RATE_LIMIT, pong_schema},
    {NULL, NULL, 0, NULL},
};

static void heartbeat_free(heartbeat *hb)
{
    if (hb->ping_timer)
        hb->host->timer_stop(hb->ping_timer);
    if (hb->tick_timer)
        hb->host->timer_stop(hb->tick_timer);
    for (hb_node *n = hb->oldest, *next; n; n = next) {
        next = n->next;
        free(n);
    }
    free(hb->slots);
    free(hb);
}

/* heartbeat.interval and timeout (PROTOCOL.md defaults when absent), read
 * at init and on a reload. */
static int read_settings(const sm_host *host, sm_plugin *self, int64_t *interval,
                         int64_t *timeout)
{
    *interval = 30;
    *timeout = 90;
    int rc = host->config_int(self, "interval", 1, 3600, interval);
    if (rc == SM_OK)
        rc = host->config_int(self, "timeout", 1, 86400, timeout);
    if (rc == SM_OK && *timeout < *interval) {
        /* A session could be closed before it ever got a PING to answer. */
        host->log(self, SM_LOG_ERROR,
                  "heartbeat.timeout (%lld) must be at least heartbeat.interval (%lld)",
                  (long long)*timeout, (long long)*interval);
        rc = SM_EINVAL;
    }
    return rc;
}

/* SIGHUP: a new timeout holds from the next tick; a new interval restarts
 * the PING schedule, the first PING one new interval after the reload. */
static int reload(void *plugin_data, int apply)
{
    heartbeat *hb = plugin_data;
    int64_t interval, timeout;
    int rc = read_settings(hb->host, hb->self, &interval, &timeout);
    if (rc != SM_OK || !apply)
        return rc;
    if (interval != hb->interval) {
        double every = (double)interval;
        sm_timer *t = hb->host->timer_start(hb->self, every, every, on_ping, hb);
        if (!t)
            return SM_ENOMEM; /* the old schedule and settings stay */
        hb->host->timer_stop(hb->ping_timer);
        hb->ping_timer = t;
    }
    hb->interval = interval;
    hb->timeout = timeout;
    return SM_OK;
}

static int init(sm_plugin *self, const sm_host *host, void **plugin_data)
{
    /* Events come through subscribe_ex (sm_event_info), which came with
     * the users service. */
    if (!SM_HOST_HAS(host, user_lookup_id)) {
        host->log(self, SM_LOG_ERROR, "heartbeat needs a server with subscribe_ex");
        return SM_ESTATE;
    }
    heartbeat *hb = calloc(1, sizeof *hb);
    if (!hb)
        return SM_ENOMEM;
    hb->host = host;
    hb->self = self;
    int rc = read_settings(host, self, &hb->interval, &hb->timeout);
    /* An older server has no reload: the settings then stay as read. */
    if (rc == SM_OK && SM_HOST_HAS(host, register_reload))
        rc = host->register_reload(self, reload);
    if (rc == SM_OK)
        rc = grow(hb);
    if (rc == SM_OK)
        rc = host->register_actions(self, actions);
    if (rc == SM_OK)
        rc = host->subscribe_ex(self, SM_EVENT_SESSION_OPENED, on_session_event);
    if (rc == SM_OK)
        rc = host->subscribe_ex(self, SM_EVENT_SESSION_CLOSED, on_session_event);
    if (rc != SM_OK)
        goto fail;
    double every = (double)hb->interval;
    hb->ping_timer = host->timer_start(self, every, every, on_ping, hb);
    hb->tick_timer = host->timer_start(self, 1.0, 1.0, on_tick, hb);
    if (!hb->ping_timer || !hb->tick_timer) {
        rc = SM_ENOMEM;
        goto fail;
    }
    *plugin_data = hb;
    return SM_OK;
fail:
    heartbeat_free(hb);
    return rc;
}

static void fini(void *plugin_data) { heartbeat_free(plugin_data); }

SM_PLUGIN_DECLARE(.name = "heartbeat", .version = "1.0",
                  .description = "PING every session, close those that stop answering PONG",
                  .init = init, .fini = fini);
