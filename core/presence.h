/* The core's presence events (plugin.h: SM_EVENT_USER_ONLINE, _OFFLINE,
 * _TOPIC_JOINED, _TOPIC_LEFT): a user's first and last session, and a
 * user's first and last session in a topic, counting every node. With
 * one node the local counts decide, at once; in a cluster each session
 * is counted in Redis (core/cluster.c, core/cluster_presence.c), which
 * reports each change once cluster-wide, and the change is fired then.
 * Logic thread only. */
#ifndef SM_CORE_PRESENCE_H
#define SM_CORE_PRESENCE_H

#include <stddef.h>

#include "safemessenger/plugin.h"

/* A session of username logged in (after LOGGED_IN; first_here: it is
 * the user's only session on this node) or its login ended (after
 * LOGGED_OUT and its removal from the user index; last_here: the user
 * has no session left on this node). */
void presence_session_up(sm_session_id id, const char *username, int first_here);
void presence_session_down(sm_session_id id, const char *username, int last_here);

/* A logged-in session of username joined topic, or a session that was
 * logged in as user (folded) when it joined left it: username is its
 * login then, or NULL when that login ended since (the account's name is
 * looked up). first_here (last_here) as above, for the user's sessions
 * in the topic. */
void presence_topic_up(const char *topic, sm_session_id id, const char *username, int first_here);
void presence_topic_down(const char *topic, sm_session_id id, const char *username,
                         const char *user, int last_here);

/* A change the cluster reported (user: lower-cased): fired with
 * session 0 and the account's name as the users service spells it. */
void presence_reported_user(const char *user, int online);
void presence_reported_member(const char *topic, const char *user, int joined);

/* sm_host.users_online and sm_host.topic_users (plugin.h): answered from
 * this node on one node (done runs before these return), from Redis in a
 * cluster. The names are checked by the caller (host_api.c). SM_OK (done
 * ran or will run, unless self, the asking plugin, is unloaded first) or
 * SM_ENOMEM (it will not). */
int presence_users_online(const struct sm_plugin *self, const char *const *names, size_t n,
                          sm_users_online_fn done, void *arg);
int presence_topic_users(const struct sm_plugin *self, const char *topic, sm_topic_users_fn done,
                         void *arg);

#endif
