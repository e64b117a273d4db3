/* Topics: named sets of sessions with O(1) join, leave and membership
 * tests. Rooms are topics. A publish serialises the payload once and the
 * transport only seals it per member. An empty topic is freed. */
#ifndef SM_CORE_TOPIC_H
#define SM_CORE_TOPIC_H

#include <stddef.h>
#include "safemessenger/plugin.h"

struct session;

#define TOPIC_NAME_MAX 256

/* 1 for a name plugins may use: 1..TOPIC_NAME_MAX bytes, the first not
 * a control character (those are the core's: cluster.h). */
int topic_name_ok(const char *name);
int topic_join(const char *name, struct session *s);
int topic_leave(const char *name, struct session *s);
int topic_is_member(const char *name, const struct session *s);
size_t topic_members(const char *name, sm_session_id *out, size_t max);
/* To every member but the session `except` (0: none). */
int topic_publish(const char *name, const char *action, const json_t *payload,
                  sm_session_id except);
/* To every member but the sessions logged in as `except_user` (without
 * regard to ASCII case; NULL: none). */
int topic_publish_except_user(const char *name, const char *action, const json_t *payload,
                              const char *except_user);
/* To this node's members only (a publish from another node of a
 * cluster): text is the serialised payload, len bytes. */
int topic_deliver_here(const char *name, const char *action, const char *text, size_t len,
                       const char *except_user);
/* The folded names of the users with a logged-in member session of
 * topic name on this node: up to max written to out (valid until the
 * topic changes), the total returned. */
size_t topic_user_keys(const char *name, const char **out, size_t max);
/* The fan-out budget (sm_host.topic_fanout_take): SM_OK and charged, or
 * SM_EBUSY with *retry_after (may be NULL) and nothing charged. */
int topic_fanout_take(const char *name, size_t payload_bytes, double *retry_after);
/* Removes the session from every topic it is in (at close). */
void topic_leave_all(struct session *s);
void topic_destroy_all(void);

#endif
