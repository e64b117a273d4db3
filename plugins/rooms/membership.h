/* Room membership in memory: which session is in which room, which users a
 * room holds and how many of each user's sessions are in it, so that room
 * events go out per user while membership stays per session (PROTOCOL.md
 * section 7, "Rooms:"). Only rooms with members are held here; the rooms
 * that exist are in the database (rooms.c). */
#ifndef ROOMS_MEMBERSHIP_H
#define ROOMS_MEMBERSHIP_H

#include "safemessenger/plugin.h"

/* Room names are 1-32 characters; usernames the core accepts up to 64 bytes. */
#define ROOMS_NAME_MAX 32
#define ROOMS_USER_MAX 64

typedef struct membership {
    const sm_host *host;
    sm_plugin *self;
    /* lower-cased room -> {"name": display, "users": {lower-cased user ->
     * {"name": username as its sessions show it, "count": sessions in the room}}} */
    json_t *active;
    /* decimal session id -> {"room": lower-cased room, "user": lower-cased user} */
    json_t *sessions;
} membership;

int membership_init(membership *m, const sm_host *host, sm_plugin *self);
void membership_free(membership *m);

/* The lower-cased room the session is in, or NULL. Valid until the
 * session's membership changes. */
const char *membership_room(const membership *m, sm_session_id session);

/* Display name of an occupied room (lower-cased key), or NULL. */
const char *membership_display(const membership *m, const char *room_key);

/* Puts a session that is in no room into the room (key lower-cased,
 * display as stored): joins the topic, sets "rooms.current" and sends
 * user_joined to the room's other users if this is the user's first
 * session there. Nothing changes on failure. */
int membership_enter(membership *m, sm_session_id session, const char *username,
                     const char *room_key, const char *display);

/* Takes the session out of its room: leaves the topic, removes
 * "rooms.current" and sends user_left to the room's other users if this
 * was the user's last session there. SM_ENOTFOUND if it is in no room. */
int membership_leave(membership *m, sm_session_id session);

/* Sends action ("user_joined", "user_left") about username, in the room
 * shown as display, to the topic's sessions but username's. */
void membership_notify(membership *m, const char *topic, const char *action,
                       const char *username, const char *display);

/* {"room": display, "users": [names sorted without regard to ASCII case]}
 * for an occupied room, or NULL (no memory, unknown room). */
json_t *membership_listing(const membership *m, const char *room_key);

#endif
