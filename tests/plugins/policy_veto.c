/* A policy for the core's tests: denies private messages to "denied",
 * drops them to "blocked", and (second policy) drops every friend request
 * from "spammer". */
#include <string.h>

#include "safemessenger/plugin.h"

static int first(sm_interaction what, const char *from, const char *to, void *data)
{
    (void)from;
    (void)data;
    if (what != SM_INTERACTION_PRIVATE_MESSAGE)
        return SM_VERDICT_ALLOW;
    if (strcmp(to, "denied") == 0)
        return SM_VERDICT_DENY;
    if (strcmp(to, "blocked") == 0)
        return SM_VERDICT_DROP;
    return SM_VERDICT_ALLOW;
}

static int second(sm_interaction what, const char *from, const char *to, void *data)
{
    (void)to;
    (void)data;
    if (what == SM_INTERACTION_FRIEND_REQUEST && strcmp(from, "spammer") == 0)
        return SM_VERDICT_DROP;
    /* Would deny what `first` already dropped: the first veto must win. */
    if (strcmp(to, "blocked") == 0)
        return SM_VERDICT_DENY;
    return SM_VERDICT_ALLOW;
}

static int init(sm_plugin *self, const sm_host *host, void **data)
{
    (void)data;
    if (!SM_HOST_HAS(host, policy_check))
        return SM_ERROR;
    if (host->register_policy(self, first) != SM_OK || host->register_policy(self, second) != SM_OK)
        return SM_ERROR;
    return SM_OK;
}

SM_PLUGIN_DECLARE(.name = "policy_veto", .version = "1", .init = init);
