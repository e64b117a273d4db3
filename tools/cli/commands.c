/* Slash commands. Most of them send one action with at most one argument
 * and need nothing but the table row (cmd_send); the others have their own
 * handler here or hand over to account.c (passwords and keys) and
 * privmsg.c (end-to-end messages). */
#include "commands.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "account.h"
#include "conn.h"
#include "keyio.h"
#include "privmsg.h"
#include "render.h"

typedef enum arg_kind {
    ARGS_NONE,      /* /leave */
    ARGS_WORD,      /* /join ROOM */
    ARGS_OPT_WORD,  /* /history [N] */
    ARGS_TEXT,      /* /say TEXT */
    ARGS_WORD_TEXT  /* /msg USER TEXT */
} arg_kind;

typedef struct command command;

/* word: the first argument (NULL if none); text: the rest of the line
 * (ARGS_TEXT: the whole argument text). */
typedef int (*command_fn)(cli_app *app, const command *cmd, const char *word, const char *text);

struct command {
    const char *name;
    const char *args;
    arg_kind kind;
    command_fn run;
    const char *action;   /* cmd_send: the action sent */
    const char *field;    /* cmd_send: the payload field given the argument */
    const char *help;
};

static int cmd_send(cli_app *app, const command *cmd, const char *word, const char *text);
static int cmd_register(cli_app *app, const command *cmd, const char *word, const char *text);
static int cmd_login(cli_app *app, const command *cmd, const char *word, const char *text);
static int cmd_say(cli_app *app, const command *cmd, const char *word, const char *text);
static int cmd_msg(cli_app *app, const command *cmd, const char *word, const char *text);
static int cmd_unread(cli_app *app, const command *cmd, const char *word, const char *text);
static int cmd_read(cli_app *app, const command *cmd, const char *word, const char *text);
static int cmd_history(cli_app *app, const command *cmd, const char *word, const char *text);
static int cmd_key(cli_app *app, const command *cmd, const char *word, const char *text);
static int cmd_help(cli_app *app, const command *cmd, const char *word, const char *text);
static int cmd_quit(cli_app *app, const command *cmd, const char *word, const char *text);
static int cmd_join(cli_app *app, const command *cmd, const char *word, const char *text);
static int cmd_me(cli_app *app, const command *cmd, const char *word, const char *text);
static int cmd_call(cli_app *app, const command *cmd, const char *word, const char *text);
static int cmd_keyfile(cli_app *app, const command *cmd, const char *word, const char *text);

static const command commands[] = {
    {"register", "USER", ARGS_WORD, cmd_register, "register", NULL,
     "create an account and its end-to-end key pair (asks for the password)"},
    {"login", "USER", ARGS_WORD, cmd_login, "login", NULL, "log in (asks for the password)"},
    {"logout", "", ARGS_NONE, cmd_send, "logout", NULL, "log out"},
    {"join", "ROOM", ARGS_WORD, cmd_join, "join_room", "room_name", "enter a room (leaving the current one)"},
    {"rooms", "", ARGS_NONE, cmd_send, "list_rooms", NULL, "the rooms that exist and how many are in each"},
    {"leave", "", ARGS_NONE, cmd_send, "leave_room", NULL, "leave the current room"},
    {"users", "", ARGS_NONE, cmd_send, "get_users", NULL, "list the users in the current room"},
    {"say", "TEXT", ARGS_TEXT, cmd_say, "public_message", "content",
     "send TEXT to the room (what a line without '/' does; for text starting with '/')"},
    {"me", "TEXT", ARGS_TEXT, cmd_me, "public_message", "content",
     "an action in the room, shown as \"* you TEXT\" (sent as \"/me TEXT\")"},
    {"history", "[N]", ARGS_OPT_WORD, cmd_history, "get_history", NULL,
     "the last N (1-200, default 50) messages of the current room"},
    {"msg", "USER TEXT", ARGS_WORD_TEXT, cmd_msg, "private_message", NULL,
     "private message, end-to-end encrypted when USER has a key"},
    {"unread", "[AFTER_ID]", ARGS_OPT_WORD, cmd_unread, "get_unread_messages", NULL,
     "your unread private messages (100 at a time)"},
    {"read", "ID", ARGS_WORD, cmd_read, "mark_message_read", NULL, "mark private message ID read"},
    {"key", "USER", ARGS_WORD, cmd_key, "get_public_key", NULL,
     "USER's registered key, its fingerprint and whether it matches the pinned one"},
    {"trust", "USER", ARGS_WORD, cmd_key, "get_public_key", NULL,
     "pin USER's current key, replacing the old pin (after checking it with USER)"},
    {"friends", "", ARGS_NONE, cmd_send, "get_friends_list", NULL, "your friends and who is online"},
    {"add", "USER", ARGS_WORD, cmd_send, "send_friend_request", "friend_username", "send a friend request"},
    {"accept", "USER", ARGS_WORD, cmd_send, "accept_friend_request", "friend_username",
     "accept USER's friend request"},
    {"decline", "USER", ARGS_WORD, cmd_send, "decline_friend_request", "friend_username",
     "decline USER's friend request"},
    {"remove", "USER", ARGS_WORD, cmd_send, "remove_friend", "friend_username", "end a friendship"},
    {"requests", "", ARGS_NONE, cmd_send, "get_friend_requests", NULL, "friend requests waiting for you"},
    {"block", "USER", ARGS_WORD, cmd_send, "block_user", "username", "block USER"},
    {"unblock", "USER", ARGS_WORD, cmd_send, "unblock_user", "username", "unblock USER"},
    {"blocked", "", ARGS_NONE, cmd_send, "get_blocked_users", NULL, "the users you block"},
    {"export-key", "FILE", ARGS_WORD, cmd_keyfile, NULL, NULL,
     "write your private key to FILE, encrypted with a passphrase (for a second device)"},
    {"import-key", "FILE", ARGS_WORD, cmd_keyfile, "get_public_key", NULL,
     "install the key /export-key wrote, after checking it is the one the server holds for you"},
    {"call", "ACTION [JSON]", ARGS_TEXT, cmd_call, "", NULL,
     "send any action with a JSON object as payload (default {}) and show the reply"},
    {"help", "[COMMAND]", ARGS_OPT_WORD, cmd_help, NULL, NULL, "this list, or one command's help"},
    {"quit", "", ARGS_NONE, cmd_quit, NULL, NULL, "close the connection and exit"},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const command *find_command(const char *name, size_t len)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strlen(commands[i].name) == len && strncmp(commands[i].name, name, len) == 0)
            return &commands[i];
    return NULL;
}

static int usage(cli_app *app, const command *cmd)
{
    render_local("error", "usage", NULL, "usage: /%s%s%s", cmd->name, cmd->args[0] ? " " : "",
                 cmd->args);
    cli_set_status(app, CLI_EXIT_USAGE);
    return -1;
}

/* Renders a reply; an error sets the exit status. 0 for a response. */
static int finish(cli_app *app, const command *cmd, sm_message *reply, const json_t *extra)
{
    render_reply(cmd->name, reply, extra);
    int failed = conn_is_error(reply);
    if (failed)
        cli_set_status(app, CLI_EXIT_FAILED);
    return failed ? -1 : 0;
}

/* Keeps the login and room state in step with what the server said. */
static void track(cli_app *app, const sm_message *reply)
{
    if (conn_is_error(reply))
        return;
    const char *a = reply->action;
    const char *room = json_string_value(json_object_get(reply->payload, "room"));
    if (strcmp(a, "join_room") == 0 && room)
        cli_copy_name(app->room, sizeof app->room, room);
    else if (strcmp(a, "leave_room") == 0)
        app->room[0] = '\0';
    else if (strcmp(a, "logout") == 0)
        cli_clear_login(app);
}

static int call_and_finish(cli_app *app, const command *cmd, const char *action, json_t *payload,
                           int *ok)
{
    sm_message *reply = NULL;
    int rc = conn_call(app, action, payload, &reply);
    json_decref(payload);
    if (rc != 0)
        return -1;
    track(app, reply);
    rc = finish(app, cmd, reply, NULL);
    if (ok)
        *ok = rc == 0;
    sm_message_free(reply);
    return rc;
}

static int cmd_send(cli_app *app, const command *cmd, const char *word, const char *text)
{
    (void)text;
    json_t *payload = cmd->field ? json_pack("{s:s}", cmd->field, word) : json_object();
    if (!payload)
        return usage(app, cmd);   /* an argument that is not UTF-8 */
    return call_and_finish(app, cmd, cmd->action, payload, NULL);
}

static int cmd_say(cli_app *app, const command *cmd, const char *word, const char *text)
{
    (void)word;
    json_t *payload = json_pack("{s:s}", "content", text);
    if (!payload) {
        render_local("error", "not_utf8", NULL, "the text is not valid UTF-8");
        cli_set_status(app, CLI_EXIT_USAGE);
        return -1;
    }
    return call_and_finish(app, cmd, cmd->action, payload, NULL);
}

/* PROTOCOL.md 7: room names are 1-32 of [A-Za-z0-9_.-]. */
static int room_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > CLI_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'
              || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

static int cmd_join(cli_app *app, const command *cmd, const char *word, const char *text)
{
    if (!room_name_ok(word)) {
        render_local("error", "bad_room_name", NULL,
                     "invalid room name: room names are 1 to 32 characters of A-Z a-z 0-9 _ . -");
        cli_set_status(app, CLI_EXIT_USAGE);
        return -1;
    }
    return cmd_send(app, cmd, word, text);
}

/* An IRC-style action: no protocol field exists for it, so it travels as
 * ordinary content "/me TEXT" that any client can show as it is, and
 * render.c shows as "* sender TEXT". */
static int cmd_me(cli_app *app, const command *cmd, const char *word, const char *text)
{
    (void)word;
    size_t n = strlen(text) + 5;
    char *content = malloc(n);
    if (!content)
        return -1;
    snprintf(content, n, "/me %s", text);
    int rc = cmd_say(app, cmd, NULL, content);
    free(content);
    return rc;
}

static int action_name_ok(const char *s, size_t n)
{
    if (n < 1 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* Any plugin's action: a third-party plugin has no other client. */
static int cmd_call(cli_app *app, const command *cmd, const char *word, const char *text)
{
    (void)word;
    size_t n = strcspn(text, " \t");
    char action[65];
    if (!action_name_ok(text, n)) {
        render_local("error", "usage", NULL, "usage: /call ACTION [JSON]: ACTION is 1-64 of A-Z a-z 0-9 _");
        cli_set_status(app, CLI_EXIT_USAGE);
        return -1;
    }
    memcpy(action, text, n);
    action[n] = '\0';
    const char *js = text + n;
    while (*js == ' ' || *js == '\t')
        js++;
    json_error_t err;
    json_t *payload = *js ? json_loads(js, JSON_REJECT_DUPLICATES, &err) : json_object();
    if (!json_is_object(payload)) {
        if (payload)
            render_local("error", "bad_json", NULL, "the payload must be a JSON object");
        else
            render_local("error", "bad_json", NULL, "the payload is not valid JSON: %s (column %d)",
                         err.text, err.column);
        json_decref(payload);
        cli_set_status(app, CLI_EXIT_USAGE);
        return -1;
    }
    sm_message *reply = NULL;
    int rc = conn_call(app, action, payload, &reply);
    json_decref(payload);
    if (rc != 0)
        return -1;
    render_json_reply(cmd->name, reply);
    rc = conn_is_error(reply) ? -1 : 0;
    if (rc)
        cli_set_status(app, CLI_EXIT_FAILED);
    sm_message_free(reply);
    return rc;
}

static int cmd_keyfile(cli_app *app, const command *cmd, const char *word, const char *text)
{
    (void)text;
    return cmd->action ? keyio_import(app, word) : keyio_export(app, word);
}

static int cmd_msg(cli_app *app, const command *cmd, const char *word, const char *text)
{
    return privmsg_send(app, cmd->name, word, text);
}

static int cmd_register(cli_app *app, const command *cmd, const char *word, const char *text)
{
    (void)text;
    return account_register(app, cmd->name, word);
}

static int cmd_login(cli_app *app, const command *cmd, const char *word, const char *text)
{
    (void)text;
    return account_login(app, cmd->name, word);
}

static int cmd_key(cli_app *app, const command *cmd, const char *word, const char *text)
{
    (void)text;
    return privmsg_key(app, cmd->name, word, strcmp(cmd->name, "trust") == 0);
}

/* A decimal number in [min, max]. */
static int parse_num(const char *s, long long min, long long max, long long *out)
{
    if (!s || !*s)
        return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max || s[0] == '+' || s[0] == '-' || s[0] == ' ')
        return -1;
    *out = v;
    return 0;
}

#define MAX_MESSAGE_ID 9007199254740991LL   /* ids are below 2^53 */

static int cmd_read(cli_app *app, const command *cmd, const char *word, const char *text)
{
    (void)text;
    long long id;
    if (parse_num(word, 1, MAX_MESSAGE_ID, &id) != 0)
        return usage(app, cmd);
    return call_and_finish(app, cmd, cmd->action, json_pack("{s:I}", "message_id", (json_int_t)id), NULL);
}

static int cmd_history(cli_app *app, const command *cmd, const char *word, const char *text)
{
    (void)text;
    long long n = 50;
    if (word && parse_num(word, 1, 200, &n) != 0)
        return usage(app, cmd);
    if (!app->room[0]) {
        render_local("error", "no_room", NULL, "you are in no room (/join ROOM)");
        cli_set_status(app, CLI_EXIT_FAILED);
        return -1;
    }
    return call_and_finish(app, cmd, cmd->action,
                           json_pack("{s:s,s:I}", "room", app->room, "limit", (json_int_t)n), NULL);
}

static int cmd_unread(cli_app *app, const command *cmd, const char *word, const char *text)
{
    (void)text;
    long long after = 0;
    if (word && parse_num(word, 0, MAX_MESSAGE_ID, &after) != 0)
        return usage(app, cmd);
    json_t *payload = word ? json_pack("{s:I}", "after_id", (json_int_t)after) : json_object();
    sm_message *reply = NULL;
    int rc = payload ? conn_call(app, cmd->action, payload, &reply) : -1;
    json_decref(payload);
    if (rc != 0)
        return -1;
    if (!conn_is_error(reply)) {
        /* Each item gets its verdict, as a private_message event would. */
        size_t i;
        json_t *item;
        json_array_foreach(json_object_get(reply->payload, "messages"), i, item) {
            json_t *e2e = privmsg_receive(app, item);
            if (e2e)
                json_object_set_new(item, "e2e", e2e);
        }
    }
    rc = finish(app, cmd, reply, NULL);
    sm_message_free(reply);
    return rc;
}

static int cmd_help(cli_app *app, const command *cmd, const char *word, const char *text)
{
    (void)text;
    char buf[8192];
    size_t used = 0;
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const command *c = &commands[i];
        if (word && strcmp(word, c->name) != 0 && !(word[0] == '/' && strcmp(word + 1, c->name) == 0))
            continue;
        char head[64];
        snprintf(head, sizeof head, "/%s %s", c->name, c->args);
        int n = snprintf(buf + used, sizeof buf - used, "  %-22s %s\n", head, c->help);
        if (n < 0 || (size_t)n >= sizeof buf - used)
            break;
        used += (size_t)n;
    }
    if (used == 0)
        return usage(app, cmd);
    if (!word) {
        int n = snprintf(buf + used, sizeof buf - used,
                         "  A line without a leading '/' is sent to the current room.\n");
        if (n > 0 && (size_t)n < sizeof buf - used)
            used += (size_t)n;
    }
    render_text("help", buf);
    return 0;
}

static int cmd_quit(cli_app *app, const command *cmd, const char *word, const char *text)
{
    (void)cmd;
    (void)word;
    (void)text;
    app->quit = 1;
    return 0;
}

/* ---- the runner ------------------------------------------------------------- */

static int is_space(char c) { return c == ' ' || c == '\t'; }

int commands_run(cli_app *app, const char *line)
{
    while (is_space(*line))
        line++;
    size_t len = strlen(line);
    while (len > 0 && (is_space(line[len - 1]) || line[len - 1] == '\r' || line[len - 1] == '\n'))
        len--;
    if (len == 0)
        return 0;
    char buf[65536 + 64];
    if (len >= sizeof buf) {
        render_local("error", "too_long", NULL, "the line is too long");
        cli_set_status(app, CLI_EXIT_USAGE);
        return -1;
    }
    memcpy(buf, line, len);
    buf[len] = '\0';
    if (buf[0] != '/')
        return cmd_say(app, find_command("say", 3), NULL, buf);

    char *name = buf + 1;
    size_t name_len = strcspn(name, " \t");
    const command *cmd = find_command(name, name_len);
    if (!cmd) {
        render_local("error", "unknown_command", NULL, "unknown command /%.*s (try /help)",
                     (int)(name_len > 64 ? 64 : name_len), name);
        cli_set_status(app, CLI_EXIT_USAGE);
        return -1;
    }
    char *rest = name + name_len;
    if (*rest)
        *rest++ = '\0';
    while (is_space(*rest))
        rest++;
    char *word = NULL, *text = NULL;
    switch (cmd->kind) {
    case ARGS_NONE:
        if (*rest)
            return usage(app, cmd);
        break;
    case ARGS_WORD:
    case ARGS_OPT_WORD: {
        if (!*rest) {
            if (cmd->kind == ARGS_WORD)
                return usage(app, cmd);
            break;
        }
        if (rest[strcspn(rest, " \t")] != '\0')
            return usage(app, cmd);
        word = rest;
        break;
    }
    case ARGS_TEXT:
        if (!*rest)
            return usage(app, cmd);
        text = rest;
        break;
    case ARGS_WORD_TEXT: {
        size_t w = strcspn(rest, " \t");
        if (w == 0 || rest[w] == '\0')
            return usage(app, cmd);
        rest[w] = '\0';
        word = rest;
        text = rest + w + 1;
        while (is_space(*text))
            text++;
        if (!*text)
            return usage(app, cmd);
        break;
    }
    }
    if (app->closed && cmd->action) {
        render_local("error", "not_connected", NULL, "not connected");
        cli_set_status(app, CLI_EXIT_CONNECTION);
        return -1;
    }
    return cmd->run(app, cmd, word, text);
}
