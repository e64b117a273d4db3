/* Output of replies, events and the CLI's own notes. */
#include "render.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int batch_mode;
static void (*before_output)(void *ctx);
static void *before_output_ctx;

void render_init(int batch) { batch_mode = batch; }

void render_on_output(void (*fn)(void *ctx), void *ctx)
{
    before_output = fn;
    before_output_ctx = ctx;
}

/* Called before anything is printed. */
static void prepare(void)
{
    if (before_output)
        before_output(before_output_ctx);
}

/* ---- batch: JSON lines ---------------------------------------------------- */

static void emit(json_t *obj)
{
    if (!obj)
        return;
    prepare();
    char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!s) {
        fputs("{\"kind\":\"local\",\"level\":\"error\",\"what\":\"out_of_memory\"}\n", stdout);
    } else {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
    fflush(stdout);   /* a script or test reads each line as it comes */
}

static json_t *message_object(const char *kind, const char *command, const sm_message *m)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "kind", json_string(kind));
    if (command)
        json_object_set_new(o, "command", json_string(command));
    json_object_set_new(o, "type", json_string(m->type));
    json_object_set_new(o, "action", json_string(m->action));
    if (m->reply_to)
        json_object_set_new(o, "reply_to", json_string(m->reply_to));
    json_object_set(o, "payload", m->payload);
    return o;
}

/* ---- interactive: readable lines ------------------------------------------ */

/* Writes remote text with control characters (C0, DEL, C1 as UTF-8)
 * replaced, so no escape sequence reaches the terminal; a newline becomes
 * an indented continuation line. */
static void put_safe_n(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') {
            fputs("\n    ", stdout);
        } else if (c < 0x20 || c == 0x7f) {
            fputc('?', stdout);
        } else if (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] >= 0x80
                   && (unsigned char)s[i + 1] <= 0x9f) {
            fputc('?', stdout);
            i++;
        } else {
            fputc((int)c, stdout);
        }
    }
}

static void put_safe(const char *s) { put_safe_n(s, s ? strlen(s) : 0); }

static const char *str(const json_t *obj, const char *name)
{
    const char *s = json_string_value(json_object_get(obj, name));
    return s ? s : "";
}

static void put_time(const json_t *obj, const char *name)
{
    const json_t *t = json_object_get(obj, name);
    if (!json_is_number(t))
        return;
    time_t secs = (time_t)json_number_value(t);
    struct tm tm;
    char buf[32];
    if (localtime_r(&secs, &tm) && strftime(buf, sizeof buf, "%H:%M", &tm) > 0)
        printf("[%s] ", buf);
}

static void put_names(const json_t *arr)
{
    size_t i;
    const json_t *v;
    if (json_array_size(arr) == 0) {
        fputs("(none)", stdout);
        return;
    }
    json_array_foreach(arr, i, v) {
        if (i)
            fputs(", ", stdout);
        put_safe(json_string_value(v));
    }
}

/* The end-to-end verdict after a private message's text. */
static void put_verdict(const json_t *e2e)
{
    const char *status = str(e2e, "status");
    int decrypted = json_is_true(json_object_get(e2e, "decrypted"));
    const char *reason = str(e2e, "reason");
    if (strcmp(status, "ok") == 0)
        fputs(decrypted ? "  [encrypted, signature verified]" : "  [NOT encrypted, signature verified]",
              stdout);
    else if (strcmp(status, "unsigned") == 0)
        printf("  [!! UNSIGNED: sender not verified%s]", decrypted ? ", encrypted" : ", NOT encrypted");
    else if (strcmp(status, "bad_signature") == 0)
        printf("  [!! UNVERIFIED: %s]", reason);
    else if (strcmp(status, "key_changed") == 0)
        fputs("  [!! SENDER'S KEY CHANGED: signed by a key that is not the pinned one]", stdout);
    else if (strcmp(status, "undecryptable") == 0)
        printf("  [!! CANNOT DECRYPT: %s]", reason);
}

/* One private message (event or unread item) with its verdict. */
static void put_private(const json_t *p, const json_t *e2e)
{
    put_time(p, "timestamp");
    printf("[pm #%lld] ", (long long)json_integer_value(json_object_get(p, "id")));
    put_safe(str(p, "sender"));
    fputs(": ", stdout);
    if (e2e && strcmp(str(e2e, "status"), "replay") == 0) {
        printf("[!! REPLAYED: a message with e2e id %s was shown before; withheld]",
               str(e2e, "id"));
    } else if (e2e && json_is_string(json_object_get(e2e, "text"))) {
        const json_t *t = json_object_get(e2e, "text");
        put_safe_n(json_string_value(t), json_string_length(t));
    } else if (json_is_true(json_object_get(p, "encrypted"))) {
        fputs("(encrypted message)", stdout);
    } else {
        put_safe(str(p, "content"));
    }
    if (e2e)
        put_verdict(e2e);
    fputc('\n', stdout);
}

#define ME_PREFIX "/me "

static void put_public(const json_t *p)
{
    put_time(p, "timestamp");
    fputc('[', stdout);
    put_safe(str(p, "room"));
    fputs("] ", stdout);
    const char *content = str(p, "content");
    if (strncmp(content, ME_PREFIX, strlen(ME_PREFIX)) == 0) {
        /* /me: an action (commands.c) */
        fputs("* ", stdout);
        put_safe(str(p, "sender"));
        fputc(' ', stdout);
        put_safe(content + strlen(ME_PREFIX));
    } else {
        put_safe(str(p, "sender"));
        fputs(": ", stdout);
        put_safe(content);
    }
    fputc('\n', stdout);
}

/* ---- reply formatters, by reply action ------------------------------------ */

static void show_logged_in(const json_t *p)
{
    fputs("* logged in as ", stdout);
    put_safe(str(p, "username"));
    printf(" (user id %lld)", (long long)json_integer_value(json_object_get(p, "user_id")));
    const char *room = json_string_value(json_object_get(p, "assigned_room"));
    if (room) {
        fputs(", in room ", stdout);
        put_safe(room);
    }
    const json_t *unread = json_object_get(p, "unread_count");
    if (json_is_integer(unread) && json_integer_value(unread) > 0)
        printf(", %lld unread (/unread)", (long long)json_integer_value(unread));
    fputc('\n', stdout);
}

/* "<what> <room>: <users>", for the replies that list a room's users. */
static void show_room_users(const char *what, const json_t *p)
{
    fputs(what, stdout);
    put_safe(str(p, "room"));
    fputs(": ", stdout);
    put_names(json_object_get(p, "users"));
    fputc('\n', stdout);
}

static void show_join(const json_t *p) { show_room_users("* joined ", p); }

static void show_users(const json_t *p) { show_room_users("* users in ", p); }

static void show_leave(const json_t *p)
{
    fputs("* left ", stdout);
    put_safe(str(p, "room"));
    fputc('\n', stdout);
}

static void show_logout(const json_t *p)
{
    (void)p;
    puts("* logged out");
}

/* The public message itself comes back as an event. */
static void show_nothing(const json_t *p) { (void)p; }

static void show_delivered(const json_t *p)
{
    printf("* message #%lld ", (long long)json_integer_value(json_object_get(p, "message_id")));
    fputs(json_is_true(json_object_get(p, "online")) ? "delivered to " : "stored for ", stdout);
    put_safe(str(p, "recipient"));
    fputs(json_is_true(json_object_get(p, "online")) ? "\n" : " (offline)\n", stdout);
}

static void show_unread(const json_t *p)
{
    const json_t *msgs = json_object_get(p, "messages");
    size_t i;
    const json_t *m;
    if (json_array_size(msgs) == 0)
        puts("* no unread messages");
    json_array_foreach(msgs, i, m) put_private(m, json_object_get(m, "e2e"));
    if (json_is_true(json_object_get(p, "more")))
        puts("* more unread messages: /unread AFTER_ID with the last id shown");
}

static void show_marked(const json_t *p)
{
    printf("* message #%lld marked read\n",
           (long long)json_integer_value(json_object_get(p, "message_id")));
}

static void show_history(const json_t *p)
{
    const json_t *msgs = json_object_get(p, "messages");
    size_t n = json_array_size(msgs);
    fputs("* history of ", stdout);
    put_safe(str(p, "room"));
    printf(" (%zu message%s)\n", n, n == 1 ? "" : "s");
    /* The server sends newest first; a transcript reads oldest first. */
    for (size_t i = n; i-- > 0;)
        put_public(json_array_get(msgs, i));
    if (json_is_true(json_object_get(p, "more")))
        puts("* older messages exist");
}

static void show_friend_result(const json_t *p)
{
    fputs("* ", stdout);
    const char *msg = str(p, "message");
    if (*msg) {
        put_safe(msg);
    } else {
        fputs("done: ", stdout);
        put_safe(str(p, "friend_username"));
    }
    fputc('\n', stdout);
}

static void show_removed(const json_t *p)
{
    fputs("* removed friend ", stdout);
    put_safe(str(p, "friend_username"));
    fputc('\n', stdout);
}

static void show_friends(const json_t *p)
{
    const json_t *list = json_object_get(p, "friends");
    size_t i;
    const json_t *f;
    if (json_array_size(list) == 0)
        puts("* no friends yet (/add USER)");
    json_array_foreach(list, i, f) {
        fputs("* ", stdout);
        put_safe(str(f, "username"));
        puts(json_is_true(json_object_get(f, "online")) ? " (online)" : " (offline)");
    }
}

static void show_requests(const json_t *p)
{
    const json_t *list = json_object_get(p, "requests");
    size_t i;
    const json_t *r;
    if (json_array_size(list) == 0)
        puts("* no pending friend requests");
    json_array_foreach(list, i, r) {
        fputs("* ", stdout);
        put_time(r, "timestamp");
        fputs("friend request from ", stdout);
        put_safe(str(r, "from"));
        fputc('\n', stdout);
    }
}

static void show_blocked(const json_t *p)
{
    fputs("* blocked ", stdout);
    put_safe(str(p, "username"));
    fputc('\n', stdout);
}

static void show_unblocked(const json_t *p)
{
    fputs("* unblocked ", stdout);
    put_safe(str(p, "username"));
    fputc('\n', stdout);
}

static void show_blocked_list(const json_t *p)
{
    fputs("* blocked users: ", stdout);
    put_names(json_object_get(p, "users"));
    fputc('\n', stdout);
}

static void show_rooms(const json_t *p)
{
    const json_t *rooms = json_object_get(p, "rooms");
    fputs("* rooms: ", stdout);
    if (json_array_size(rooms) == 0)
        fputs("(none)", stdout);
    size_t i;
    const json_t *r;
    json_array_foreach(rooms, i, r) {
        if (i)
            fputs(", ", stdout);
        put_safe(str(r, "room"));
        printf(" (%lld)", (long long)json_integer_value(json_object_get(r, "users")));
    }
    if (json_is_true(json_object_get(p, "more")))
        fputs(", ...", stdout);
    fputc('\n', stdout);
}

static void show_generic(const json_t *p)
{
    char *s = json_dumps(p, JSON_COMPACT);
    fputs("* ok ", stdout);
    put_safe(s ? s : "");
    fputc('\n', stdout);
    free(s);
}

typedef struct reply_view {
    const char *action;
    void (*show)(const json_t *payload);
} reply_view;

static const reply_view reply_views[] = {
    {"registration_success", show_logged_in},
    {"login_success", show_logged_in},
    {"logout", show_logout},
    {"join_room", show_join},
    {"leave_room", show_leave},
    {"get_users", show_users},
    {"public_message", show_nothing},
    {"get_public_key", show_nothing},   /* privmsg.c prints the fingerprint */
    {"message_delivered", show_delivered},
    {"unread_messages", show_unread},
    {"mark_message_read", show_marked},
    {"get_history", show_history},
    {"friend_request_response", show_friend_result},
    {"friend_request_accept_response", show_friend_result},
    {"friend_request_decline_response", show_friend_result},
    {"remove_friend", show_removed},
    {"friends_list", show_friends},
    {"friend_requests", show_requests},
    {"block_user", show_blocked},
    {"unblock_user", show_unblocked},
    {"blocked_users", show_blocked_list},
    {"list_rooms", show_rooms},
};

void render_reply(const char *command, const sm_message *m, const json_t *extra)
{
    int is_error = strcmp(m->type, "error") == 0;
    if (batch_mode) {
        json_t *o = message_object(is_error ? "error" : "reply", command, m);
        if (o && extra)
            json_object_update(o, (json_t *)extra);
        emit(o);
        return;
    }
    prepare();
    if (is_error) {
        printf("error %lld: ", (long long)json_integer_value(json_object_get(m->payload, "code")));
        put_safe(str(m->payload, "message"));
        const json_t *retry = json_object_get(m->payload, "retry_after");
        if (json_is_number(retry))
            printf(" (retry after %.1f s)", json_number_value(retry));
        fputc('\n', stdout);
        fflush(stdout);
        return;
    }
    for (size_t i = 0; i < sizeof reply_views / sizeof reply_views[0]; i++) {
        if (strcmp(reply_views[i].action, m->action) == 0) {
            reply_views[i].show(m->payload);
            fflush(stdout);
            return;
        }
    }
    show_generic(m->payload);
    fflush(stdout);
}

void render_json_reply(const char *command, const sm_message *m)
{
    if (batch_mode || strcmp(m->type, "error") == 0) {
        render_reply(command, m, NULL);
        return;
    }
    prepare();
    char *s = json_dumps(m->payload, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputs("* reply ", stdout);
    put_safe(m->action);
    fputs(":\n", stdout);
    /* put_safe indents continuation lines by four spaces */
    fputs("    ", stdout);
    put_safe(s ? s : "");
    fputc('\n', stdout);
    free(s);
    fflush(stdout);
}

/* ---- events --------------------------------------------------------------- */

static void show_event(const sm_message *m, const json_t *e2e)
{
    const json_t *p = m->payload;
    const char *a = m->action;
    if (strcmp(a, "public_message") == 0) {
        put_public(p);
    } else if (strcmp(a, "private_message") == 0) {
        put_private(p, e2e);
    } else if (strcmp(a, "user_joined") == 0 || strcmp(a, "user_left") == 0) {
        fputs("* ", stdout);
        put_safe(str(p, "username"));
        fputs(a[5] == 'j' ? " joined " : " left ", stdout);
        put_safe(str(p, "room"));
        fputc('\n', stdout);
    } else if (strcmp(a, "friend_online") == 0 || strcmp(a, "friend_offline") == 0) {
        fputs("* friend ", stdout);
        put_safe(str(p, "username"));
        puts(a[7] == 'o' && a[8] == 'n' ? " is online" : " is offline");
    } else if (strcmp(a, "friend_request") == 0) {
        fputs("* friend request from ", stdout);
        put_safe(str(p, "from"));
        puts(" (/accept or /decline)");
    } else if (strcmp(a, "friend_request_accepted") == 0) {
        fputs("* you and ", stdout);
        put_safe(str(p, "friend_username"));
        puts(" are now friends");
    } else if (strcmp(a, "friend_removed") == 0) {
        fputs("* ", stdout);
        put_safe(str(p, "friend_username"));
        puts(" removed you from their friends");
    } else if (strcmp(a, "message_read") == 0) {
        printf("* message #%lld read by ", (long long)json_integer_value(json_object_get(p, "message_id")));
        put_safe(str(p, "reader"));
        fputc('\n', stdout);
    } else {
        char *s = json_dumps(p, JSON_COMPACT);
        fputs("* event ", stdout);
        put_safe(a);
        fputc(' ', stdout);
        put_safe(s ? s : "");
        fputc('\n', stdout);
        free(s);
    }
}

void render_event(const sm_message *m, const json_t *e2e)
{
    if (batch_mode) {
        json_t *o = message_object("event", NULL, m);
        if (o && e2e)
            json_object_set(o, "e2e", (json_t *)e2e);
        emit(o);
        return;
    }
    prepare();
    show_event(m, e2e);
    fflush(stdout);
}

/* ---- the CLI's own notes ------------------------------------------------- */

void render_local(const char *level, const char *what, const json_t *fields, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        msg[0] = '\0';
    if (batch_mode) {
        json_t *o = json_object();
        if (!o)
            return;
        json_object_set_new(o, "kind", json_string("local"));
        json_object_set_new(o, "level", json_string(level));
        json_object_set_new(o, "what", json_string(what));
        json_object_set_new(o, "message", json_string(msg));
        if (fields)
            json_object_update(o, (json_t *)fields);
        emit(o);
        return;
    }
    prepare();
    fputs(strcmp(level, "info") == 0 ? "* " : strcmp(level, "warning") == 0 ? "! " : "!! ", stdout);
    put_safe(msg);
    fputc('\n', stdout);
    fflush(stdout);
}

void render_loud(const char *what, const json_t *fields, const char *const *lines, size_t n)
{
    static const char bar[] = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@";
    prepare();
    fflush(stdout);
    fprintf(stderr, "%s\n", bar);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, "@ %s\n", lines[i]);
    fprintf(stderr, "%s\n", bar);
    fflush(stderr);
    if (batch_mode)
        render_local("error", what, fields, "%s", n ? lines[0] : what);
}

void render_text(const char *what, const char *text)
{
    if (batch_mode) {
        json_t *o = json_object();
        if (!o)
            return;
        json_object_set_new(o, "kind", json_string("local"));
        json_object_set_new(o, "level", json_string("info"));
        json_object_set_new(o, "what", json_string(what));
        json_object_set_new(o, "message", json_string(text));
        emit(o);
        return;
    }
    prepare();
    fputs(text, stdout);
    fflush(stdout);
}
