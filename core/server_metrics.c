#include "server_metrics.h"

#include "durability.h"

#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cluster.h"
#include "core.h"
#include "host_api.h"
#include "io_threads.h"
#include "storage.h"

/* Seconds from dispatch to reply: from a table lookup to an Argon2 hash
 * on a busy pool. */
static const double command_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};

static const char *const session_states[] = {"handshake", "key_pending", "open", "logged_in",
                                             "closing"};
static const char *const handshake_results[] = {"ok", "failed", "refused", "timeout"};
static const char *const drop_reasons[] = {"queue_full", "send_timeout"};
/* The cluster's Redis connections (cluster_stats). */
static const char *const redis_links[] = {"bus", "presence"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Sessions in each state (server_metrics.h's SERVER_METRICS_SESSION_*, the
 * index into session_states), moved as states change on whichever thread
 * changes them; a scrape only reads them. */
static atomic_long session_counts[COUNT(session_states)];

static struct {
    metric_family *sessions, *connections, *handshakes, *commands, *command_seconds;
    metric_family *deliveries, *drops, *worker_queue, *plugin_info;
    metric_family *cpu, *resident, *virtual_bytes, *open_fds, *refused_calls;
    metric_family *io_threads, *io_queue, *io_queue_waits;
    /* Storage on PostgreSQL: series only when it is (storage_pg_stats_get). */
    metric_family *pg_up, *pg_wait, *pg_wait_max, *pg_wait_failures, *pg_refused, *pg_losses;
    metric_family *pg_reconnects, *pg_attempts;
    /* Group commit on PostgreSQL (durability.h). */
    metric_family *flush_barriers, *flush_failures, *flush_seconds, *flush_max, *held,
        *unconfirmed;
    /* Cluster mode (cluster.h): series only in a cluster (cluster_stats_get). */
    metric_family *cl_up, *cl_presence_state;
    metric_family *bus_published, *bus_received, *bus_dropped_own, *bus_malformed,
        *bus_id_clashes, *bus_refused, *bus_topics, *bus_users;
    metric_family *pr_online, *pr_offline, *pr_joined, *pr_left, *pr_registered, *pr_reaped,
        *pr_not_sent, *pr_lost, *pr_users, *pr_members;
    metric_family *rl_reconnects, *rl_commands, *rl_command_failures, *rl_publish_failures;
} fam;

static metric_family *family(metrics *m, metric_type type, const char *name, const char *help,
                             const char *const *labels)
{
    return metrics_family(m, type, name, help, labels, command_buckets, COUNT(command_buckets));
}

/* The series of a fixed label set, created now so that they show as 0
 * before anything happened: a rate() needs the first sample. */
static int precreate(metric_family *f, const char *const *values, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!metrics_series1(f, values[i]))
            return -1;
    return 0;
}

/* Declared whether or not the server is in a cluster, as the PostgreSQL
 * families are: a lone server shows them without series. */
static int cluster_families(metrics *m)
{
    static const char *const reason[] = {"reason", NULL}, *const link[] = {"link", NULL};
    fam.cl_up = family(m, METRIC_GAUGE, "safemessenger_cluster_up",
                       "1 while this node's bus link to Redis is up and its presence is "
                       "registered, else 0.",
                       NULL);
    fam.cl_presence_state = family(m, METRIC_GAUGE, "safemessenger_cluster_presence_state",
                                   "This node's presence: 0 down, 1 up (registered), 2 refused "
                                   "(its id is taken), 3 server key mismatch.",
                                   NULL);
    fam.bus_published = family(m, METRIC_COUNTER, "safemessenger_cluster_bus_published_total",
                               "Events handed to Redis for the other nodes.", NULL);
    fam.bus_received = family(m, METRIC_COUNTER, "safemessenger_cluster_bus_received_total",
                              "Events from the other nodes passed on here.", NULL);
    fam.bus_dropped_own = family(m, METRIC_COUNTER,
                                 "safemessenger_cluster_bus_dropped_own_total",
                                 "This node's own publishes come back from Redis, dropped.",
                                 NULL);
    fam.bus_malformed = family(m, METRIC_COUNTER, "safemessenger_cluster_bus_malformed_total",
                               "Messages on the bus that did not parse, dropped.", NULL);
    fam.bus_id_clashes = family(m, METRIC_COUNTER,
                                "safemessenger_cluster_bus_id_clashes_total",
                                "Messages from another process with this node's id.", NULL);
    fam.bus_refused = family(m, METRIC_COUNTER, "safemessenger_cluster_bus_refused_total",
                             "Events that reached this node's sessions only, by reason (down: "
                             "Redis unreachable; busy: too many publishes in flight).",
                             reason);
    fam.bus_topics = family(m, METRIC_GAUGE, "safemessenger_cluster_bus_topics",
                            "Topics this node listens to on the bus.", NULL);
    fam.bus_users = family(m, METRIC_GAUGE, "safemessenger_cluster_bus_users",
                           "Users this node listens for on the bus (online here).", NULL);
    fam.pr_online = family(m, METRIC_COUNTER, "safemessenger_cluster_presence_online_total",
                           "Users this node found going online cluster-wide.", NULL);
    fam.pr_offline = family(m, METRIC_COUNTER, "safemessenger_cluster_presence_offline_total",
                            "Users this node found going offline cluster-wide.", NULL);
    fam.pr_joined = family(m, METRIC_COUNTER, "safemessenger_cluster_presence_joined_total",
                           "Users this node found joining a topic cluster-wide.", NULL);
    fam.pr_left = family(m, METRIC_COUNTER, "safemessenger_cluster_presence_left_total",
                         "Users this node found leaving a topic cluster-wide.", NULL);
    fam.pr_registered = family(m, METRIC_COUNTER,
                               "safemessenger_cluster_presence_registered_total",
                               "Times this node registered with the cluster (start, "
                               "reconnections).",
                               NULL);
    fam.pr_reaped = family(m, METRIC_COUNTER, "safemessenger_cluster_presence_reaped_nodes_total",
                           "Dead nodes this node reaped (their users taken offline).", NULL);
    fam.pr_not_sent = family(m, METRIC_COUNTER, "safemessenger_cluster_presence_not_sent_total",
                             "Presence changes not sent to Redis at once (down or busy), "
                             "written back later.",
                             NULL);
    fam.pr_lost = family(m, METRIC_COUNTER, "safemessenger_cluster_presence_lost_total",
                         "Presence scripts sent whose answer never came or was an error.", NULL);
    fam.pr_users = family(m, METRIC_GAUGE, "safemessenger_cluster_presence_users",
                          "Users with sessions on this node.", NULL);
    fam.pr_members = family(m, METRIC_GAUGE, "safemessenger_cluster_presence_members",
                            "(topic, user) pairs with sessions on this node.", NULL);
    fam.rl_reconnects = family(m, METRIC_COUNTER, "safemessenger_cluster_redis_reconnects_total",
                               "Times a Redis link came up again after being down, by link.",
                               link);
    fam.rl_commands = family(m, METRIC_COUNTER, "safemessenger_cluster_redis_commands_total",
                             "Commands and scripts Redis answered (error replies too), by link.",
                             link);
    fam.rl_command_failures = family(m, METRIC_COUNTER,
                                     "safemessenger_cluster_redis_command_failures_total",
                                     "Commands sent and never answered (the link was lost), "
                                     "by link.",
                                     link);
    fam.rl_publish_failures = family(m, METRIC_COUNTER,
                                     "safemessenger_cluster_redis_publish_failures_total",
                                     "Publishes sent and not answered, or refused by Redis, by "
                                     "link.",
                                     link);
    if (!fam.cl_up || !fam.cl_presence_state || !fam.bus_published || !fam.bus_received ||
        !fam.bus_dropped_own || !fam.bus_malformed || !fam.bus_id_clashes || !fam.bus_refused ||
        !fam.bus_topics || !fam.bus_users || !fam.pr_online || !fam.pr_offline ||
        !fam.pr_joined || !fam.pr_left || !fam.pr_registered || !fam.pr_reaped ||
        !fam.pr_not_sent || !fam.pr_lost || !fam.pr_users || !fam.pr_members ||
        !fam.rl_reconnects || !fam.rl_commands || !fam.rl_command_failures ||
        !fam.rl_publish_failures)
        return -1;
    return 0;
}

int server_metrics_init(metrics *m)
{
    static const char *const state[] = {"state", NULL}, *const result[] = {"result", NULL},
                             *const action_code[] = {"action", "code", NULL},
                             *const action[] = {"action", NULL},
                             *const reason[] = {"reason", NULL},
                             *const name_version[] = {"name", "version", NULL};
    fam.sessions = family(m, METRIC_GAUGE, "safemessenger_sessions",
                          "Sessions by state (open: keys established, not logged in).", state);
    fam.connections = family(m, METRIC_COUNTER, "safemessenger_connections_total",
                             "WebSocket connections accepted as sessions.", NULL);
    fam.handshakes = family(m, METRIC_COUNTER, "safemessenger_handshakes_total",
                            "Handshakes ended, by result.", result);
    fam.commands = family(m, METRIC_COUNTER, "safemessenger_commands_total",
                          "Commands answered, by action and code (0: success).", action_code);
    fam.command_seconds = family(m, METRIC_HISTOGRAM, "safemessenger_command_duration_seconds",
                                 "Seconds from dispatch to reply, by action.", action);
    fam.deliveries = family(m, METRIC_COUNTER, "safemessenger_deliveries_total",
                            "Events queued to sessions.", NULL);
    fam.drops = family(m, METRIC_COUNTER, "safemessenger_send_queue_drops_total",
                       "Sessions cut off for not reading their output, by reason.", reason);
    fam.worker_queue = family(m, METRIC_GAUGE, "safemessenger_worker_queue_depth",
                              "Worker jobs queued and not yet started.", NULL);
    fam.plugin_info = family(m, METRIC_GAUGE, "safemessenger_plugin_info",
                             "Loaded plugins (value 1).", name_version);
    fam.refused_calls = family(m, METRIC_COUNTER, "safemessenger_host_calls_refused_total",
                               "Host service calls refused because they came from a thread other"
                               " than the logic thread (a plugin bug).",
                               NULL);
    fam.io_threads = family(m, METRIC_GAUGE, "safemessenger_io_threads",
                            "I/O threads serving the connections (server.io_threads).", NULL);
    fam.io_queue = family(m, METRIC_GAUGE, "safemessenger_io_queue_items",
                          "Items the logic thread queued for the I/O threads and they have not "
                          "taken yet (all threads).",
                          NULL);
    fam.io_queue_waits = family(m, METRIC_COUNTER, "safemessenger_io_queue_full_waits_total",
                                "Times the logic thread waited because an I/O thread's queue "
                                "was full (back-pressure from a thread that fell behind).",
                                NULL);
    fam.pg_up = family(m, METRIC_GAUGE, "safemessenger_postgresql_up",
                       "1 while the storage's PostgreSQL connection is up, 0 while it is lost.",
                       NULL);
    fam.pg_wait = metrics_family(m, METRIC_HISTOGRAM, "safemessenger_postgresql_wait_seconds",
                                 "Round trips to PostgreSQL the logic thread waited for, by "
                                 "duration (answered or not).",
                                 NULL, storage_pg_wait_bounds, STORAGE_PG_WAIT_BUCKETS);
    fam.pg_wait_max = family(m, METRIC_GAUGE, "safemessenger_postgresql_wait_max_seconds",
                             "The longest round trip to PostgreSQL since the start.", NULL);
    fam.pg_wait_failures = family(m, METRIC_COUNTER,
                                  "safemessenger_postgresql_wait_failures_total",
                                  "Round trips to PostgreSQL without an answer, by reason "
                                  "(timeout: the deadline passed; connection: it failed); "
                                  "each cost the connection.",
                                  reason);
    fam.pg_refused = family(m, METRIC_COUNTER, "safemessenger_postgresql_calls_refused_total",
                            "Storage calls that failed at once: no PostgreSQL connection, or "
                            "their transaction was lost with one.",
                            NULL);
    fam.pg_losses = family(m, METRIC_COUNTER, "safemessenger_postgresql_connection_losses_total",
                           "Times the PostgreSQL connection was lost.", NULL);
    fam.pg_reconnects = family(m, METRIC_COUNTER, "safemessenger_postgresql_reconnects_total",
                               "Times a new PostgreSQL connection was taken into use.", NULL);
    fam.flush_barriers = family(m, METRIC_COUNTER, "safemessenger_storage_flush_barriers_total",
                                "Flushes PostgreSQL confirmed for the replies and events held "
                                "after writes (group commit).",
                                NULL);
    fam.flush_failures = family(m, METRIC_COUNTER, "safemessenger_storage_flush_failures_total",
                                "Flush confirmations that failed and were retried.", NULL);
    fam.flush_seconds = family(m, METRIC_COUNTER, "safemessenger_storage_flush_seconds_total",
                               "Time the confirmed flushes took, in all.", NULL);
    fam.flush_max = family(m, METRIC_GAUGE, "safemessenger_storage_flush_max_seconds",
                           "The longest confirmed flush.", NULL);
    fam.held = family(m, METRIC_GAUGE, "safemessenger_storage_held_items",
                      "Replies and events waiting for a flush now.", NULL);
    fam.unconfirmed = family(m, METRIC_COUNTER, "safemessenger_storage_unconfirmed_total",
                             "Replies and events released without a confirmed flush, after "
                             "10 s of failures.",
                             NULL);
    fam.pg_attempts = family(m, METRIC_COUNTER,
                             "safemessenger_postgresql_connect_attempts_total",
                             "Connection attempts to PostgreSQL in the background, after a "
                             "loss (failed or not).",
                             NULL);
    if (cluster_families(m) != 0) {
        server_metrics_reset();
        return -1;
    }
    fam.cpu = family(m, METRIC_COUNTER, "process_cpu_seconds_total",
                     "User and system CPU time spent in seconds.", NULL);
    fam.resident = family(m, METRIC_GAUGE, "process_resident_memory_bytes",
                          "Resident memory size in bytes.", NULL);
    fam.virtual_bytes = family(m, METRIC_GAUGE, "process_virtual_memory_bytes",
                               "Virtual memory size in bytes.", NULL);
    fam.open_fds = family(m, METRIC_GAUGE, "process_open_fds",
                          "Number of open file descriptors.", NULL);
    if (!fam.sessions || !fam.connections || !fam.handshakes || !fam.commands ||
        !fam.command_seconds || !fam.deliveries || !fam.drops || !fam.worker_queue ||
        !fam.plugin_info || !fam.refused_calls || !fam.io_threads || !fam.io_queue ||
        !fam.io_queue_waits || !fam.pg_up || !fam.pg_wait || !fam.pg_wait_max ||
        !fam.pg_wait_failures || !fam.pg_refused || !fam.pg_losses || !fam.pg_reconnects ||
        !fam.pg_attempts || !fam.flush_barriers || !fam.flush_failures || !fam.flush_seconds ||
        !fam.flush_max || !fam.held || !fam.unconfirmed || !fam.cpu || !fam.resident || !fam.virtual_bytes || !fam.open_fds ||
        precreate(fam.sessions, session_states, COUNT(session_states)) != 0 ||
        precreate(fam.handshakes, handshake_results, COUNT(handshake_results)) != 0 ||
        precreate(fam.drops, drop_reasons, COUNT(drop_reasons)) != 0 ||
        !metrics_series(fam.connections, NULL) || !metrics_series(fam.deliveries, NULL) ||
        !metrics_series(fam.worker_queue, NULL) || !metrics_series(fam.refused_calls, NULL) ||
        !metrics_series(fam.io_threads, NULL) || !metrics_series(fam.io_queue, NULL) ||
        !metrics_series(fam.io_queue_waits, NULL)) {
        server_metrics_reset();
        return -1;
    }
    return 0;
}

void server_metrics_reset(void)
{
    memset(&fam, 0, sizeof fam);
}

void server_metrics_connection(void)
{
    metric_add(metrics_series(fam.connections, NULL), 1);
}

void server_metrics_handshake(const char *result)
{
    metric_add(metrics_series1(fam.handshakes, result), 1);
}

void server_metrics_command(const char *action, int code, double seconds)
{
    char code_text[16];
    snprintf(code_text, sizeof code_text, "%d", code);
    /* Only registered names become labels: a client choosing action
     * strings must not choose how many series there are. */
    const char *values[2] = {action ? action : "unknown", code_text};
    metric_add(metrics_series(fam.commands, values), 1);
    metric_observe(metrics_series1(fam.command_seconds, values[0]), seconds);
}

void server_metrics_delivery(void)
{
    metric_add(metrics_series(fam.deliveries, NULL), 1);
}

void server_metrics_send_queue_drop(const char *reason)
{
    metric_add(metrics_series1(fam.drops, reason), 1);
}

void server_metrics_session_state(int from, int to)
{
    if (from == to)
        return;
    if (from >= 0 && (size_t)from < COUNT(session_states))
        atomic_fetch_sub_explicit(&session_counts[from], 1, memory_order_relaxed);
    if (to >= 0 && (size_t)to < COUNT(session_states))
        atomic_fetch_add_explicit(&session_counts[to], 1, memory_order_relaxed);
}

void server_metrics_plugin(const char *name, const char *version, int loaded)
{
    const char *values[2] = {name, version ? version : ""};
    metric_set(metrics_series(fam.plugin_info, values), loaded ? 1 : 0);
}

/* ---- scrape time ------------------------------------------------------- */

static void collect_sessions(void)
{
    for (size_t i = 0; i < COUNT(session_states); i++)
        metric_set(metrics_series1(fam.sessions, session_states[i]),
                   (double)atomic_load_explicit(&session_counts[i], memory_order_relaxed));
}

static size_t count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    size_t n = 0;
    if (!d)
        return 0;
    while (readdir(d))
        n++;
    closedir(d);
    /* ".", ".." and the descriptor of d itself. */
    return n >= 3 ? n - 3 : 0;
}

static void collect_process(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        /* Raised, never set: two scrapes at once (two I/O threads) may
         * finish out of order, and a counter must not go back. */
        metric_raise(metrics_series(fam.cpu, NULL), cpu);
    }
    /* statm: sizes in pages, total then resident. */
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages_total = 0, pages_resident = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &pages_total, &pages_resident) == 2) {
            double page = (double)sysconf(_SC_PAGESIZE);
            metric_set(metrics_series(fam.virtual_bytes, NULL), (double)pages_total * page);
            metric_set(metrics_series(fam.resident, NULL), (double)pages_resident * page);
        }
        fclose(f);
    }
    metric_set(metrics_series(fam.open_fds, NULL), (double)count_open_fds());
}

/* Copied from the storage's own counters (atomics) when it runs on
 * PostgreSQL; a SQLite server shows these families without series. */
static void collect_postgresql(void)
{
    storage_pg_stats st;
    if (storage_pg_stats_get(g_core.db, &st) != SM_OK)
        return;
    metric_set(metrics_series(fam.pg_up, NULL), st.up);
    metric_histogram_raise(metrics_series(fam.pg_wait, NULL), st.wait_buckets,
                           STORAGE_PG_WAIT_BUCKETS + 1, st.wait_seconds);
    metric_raise(metrics_series(fam.pg_wait_max, NULL), st.wait_max);
    metric_raise(metrics_series1(fam.pg_wait_failures, "timeout"), (double)st.timeouts);
    metric_raise(metrics_series1(fam.pg_wait_failures, "connection"), (double)st.failures);
    metric_raise(metrics_series(fam.pg_refused, NULL), (double)st.refused);
    metric_raise(metrics_series(fam.pg_losses, NULL), (double)st.losses);
    metric_raise(metrics_series(fam.pg_reconnects, NULL), (double)st.reconnects);
    metric_raise(metrics_series(fam.pg_attempts, NULL), (double)st.attempts);
    durability_stats ds;
    durability_stats_get(&ds);
    metric_raise(metrics_series(fam.flush_barriers, NULL), (double)ds.barriers);
    metric_raise(metrics_series(fam.flush_failures, NULL), (double)ds.failures);
    metric_raise(metrics_series(fam.flush_seconds, NULL), ds.wait_seconds);
    metric_raise(metrics_series(fam.flush_max, NULL), ds.wait_max);
    metric_set(metrics_series(fam.held, NULL), (double)ds.held);
    metric_raise(metrics_series(fam.unconfirmed, NULL), (double)ds.unconfirmed);
}

static void collect_redis_link(const char *link, const redis_link_counters *c)
{
    metric_raise(metrics_series1(fam.rl_reconnects, link), (double)c->reconnects);
    metric_raise(metrics_series1(fam.rl_commands, link), (double)c->commands);
    metric_raise(metrics_series1(fam.rl_command_failures, link), (double)c->command_failed);
    metric_raise(metrics_series1(fam.rl_publish_failures, link), (double)c->publish_failed);
}

/* Copied from the bus's, presence's and their links' counters (atomics)
 * in a cluster; a lone server shows these families without series. */
static void collect_cluster(void)
{
    cluster_stats cs;
    if (cluster_stats_get(&cs) != 0)
        return;
    metric_set(metrics_series(fam.cl_up, NULL), cs.up);
    metric_set(metrics_series(fam.cl_presence_state, NULL), cs.presence_state);
    metric_raise(metrics_series(fam.bus_published, NULL), (double)cs.bus.published);
    metric_raise(metrics_series(fam.bus_received, NULL), (double)cs.bus.received);
    metric_raise(metrics_series(fam.bus_dropped_own, NULL), (double)cs.bus.dropped_own);
    metric_raise(metrics_series(fam.bus_malformed, NULL), (double)cs.bus.malformed);
    metric_raise(metrics_series(fam.bus_id_clashes, NULL), (double)cs.bus.id_clashes);
    metric_raise(metrics_series1(fam.bus_refused, "down"), (double)cs.bus.refused_down);
    metric_raise(metrics_series1(fam.bus_refused, "busy"), (double)cs.bus.refused_busy);
    metric_set(metrics_series(fam.bus_topics, NULL), (double)cs.bus.topics);
    metric_set(metrics_series(fam.bus_users, NULL), (double)cs.bus.users);
    metric_raise(metrics_series(fam.pr_online, NULL), (double)cs.presence.online);
    metric_raise(metrics_series(fam.pr_offline, NULL), (double)cs.presence.offline);
    metric_raise(metrics_series(fam.pr_joined, NULL), (double)cs.presence.joined);
    metric_raise(metrics_series(fam.pr_left, NULL), (double)cs.presence.left);
    metric_raise(metrics_series(fam.pr_registered, NULL), (double)cs.presence.registered);
    metric_raise(metrics_series(fam.pr_reaped, NULL), (double)cs.presence.reaped_nodes);
    metric_raise(metrics_series(fam.pr_not_sent, NULL), (double)cs.presence.not_sent);
    metric_raise(metrics_series(fam.pr_lost, NULL), (double)cs.presence.lost);
    metric_set(metrics_series(fam.pr_users, NULL), (double)cs.presence.users);
    metric_set(metrics_series(fam.pr_members, NULL), (double)cs.presence.members);
    collect_redis_link(redis_links[0], &cs.bus_link);
    collect_redis_link(redis_links[1], &cs.presence_link);
}

void server_metrics_collect(void)
{
    if (!fam.sessions)
        return;
    collect_sessions();
    metric_set(metrics_series(fam.worker_queue, NULL), (double)workers_waiting(g_core.pool));
    metric_raise(metrics_series(fam.refused_calls, NULL), (double)host_api_off_thread_calls());
    io_threads_stats io;
    io_threads_stats_get(&io);
    metric_set(metrics_series(fam.io_threads, NULL), (double)io_threads_count());
    metric_set(metrics_series(fam.io_queue, NULL), (double)io.queue.queued);
    metric_raise(metrics_series(fam.io_queue_waits, NULL), (double)io.full_waits);
    collect_postgresql();
    collect_cluster();
    collect_process();
}
