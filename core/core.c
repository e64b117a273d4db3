#include "core.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dispatch.h"
#include "session.h"
#include "topic.h"

struct core g_core;

static double real_wall_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double real_mono_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double core_wall_now(void) { return g_core.wall_clock(); }

double core_mono_now(void) { return g_core.mono_clock(); }

int core_init(void)
{
    memset(&g_core, 0, sizeof g_core);
    g_core.wall_clock = real_wall_clock;
    g_core.mono_clock = real_mono_clock;
    g_core.next_session_id = 1;
    g_core.sessions = hashmap_new();
    g_core.users = hashmap_new();
    g_core.topics = hashmap_new();
    g_core.actions = hashmap_new();
    g_core.timers = timers_new();
    if (!g_core.sessions || !g_core.users || !g_core.topics || !g_core.actions || !g_core.timers) {
        core_cleanup();
        return -1;
    }
    return 0;
}

void core_cleanup(void)
{
    session_destroy_all();
    topic_destroy_all();
    dispatch_clear();
    hashmap_free(g_core.sessions, NULL);
    hashmap_free(g_core.users, NULL);
    hashmap_free(g_core.topics, NULL);
    hashmap_free(g_core.actions, NULL);
    timers_free(g_core.timers);
    for (int e = 0; e < SM_EVENT_COUNT; e++)
        free(g_core.subscribers[e]);
    free(g_core.policies);
    g_core.policies = NULL;
    g_core.n_policies = 0;
    g_core.sessions = g_core.users = g_core.topics = g_core.actions = NULL;
    g_core.timers = NULL;
    memset(g_core.subscribers, 0, sizeof g_core.subscribers);
    memset(g_core.n_subscribers, 0, sizeof g_core.n_subscribers);
}
