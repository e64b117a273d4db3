/* libFuzzer target: command sequences through the plugin test host with
 * the five shipped plugins (auth, heartbeat, rooms, messaging, friends).
 *
 * Every input starts from a fresh host (in-memory database, fake clock)
 * with six sessions: 0 and 2 logged in as alice, 1 as bob, 3 as carol
 * (registered through auth, weak argon2 settings so runs are fast), 4 and
 * 5 not logged in. The input is text, one line per step:
 *   <slot> <action> <payload JSON>   a command on session slot%6
 *   <slot> ~reconnect                 drop the slot's connection, open a new one
 *   t <seconds>                       advance the fake clock (at most 3600)
 * e.g. `1 private_message {"recipient":"alice","content":"hi","encrypted":false}`.
 * After each command and its worker jobs, every message any session got is
 * checked against PROTOCOL.md section 5-7:
 *   - the command got exactly one reply (a response or an error with its
 *     nonce in reply_to, on its own session), PONG none; no other session
 *     got a reply;
 *   - error codes are 1001..1011 and name the command;
 *   - a private_message event reaches only sessions logged in as its
 *     recipient, and all of them or none.
 * A violation aborts. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz_check.h"
#include "safemessenger/testhost.h"

#define SLOTS 6
#define MAX_STEPS 64
#define MAX_ADVANCE 3600.0

static const char *const plugin_paths[] = {AUTH_SO, HEARTBEAT_SO, ROOMS_SO, MESSAGING_SO,
                                           FRIENDS_SO};
static const char *const plugin_names[] = {"auth", "heartbeat", "rooms", "messaging", "friends"};

/* The fuzzer's rate limits would answer most commands with 1008; the
 * limits have suites of their own. */
static const char host_config[] =
    "log = { level = \"error\"; };\n"
    "limits = { commands_per_second = 10000; command_burst = 10000; };\n"
    "auth = { allow_weak_argon2 = true; argon2_memory_kib = 8; argon2_passes = 1; };\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* The plugins stay mapped for the whole run: libFuzzer registers a
     * module's coverage counters once, at its first load, and would read
     * unmapped memory if a host's unload let one go. */
    for (size_t i = 0; i < sizeof plugin_paths / sizeof plugin_paths[0]; i++) {
        void *dl = dlopen(plugin_paths[i], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
        if (!dl) {
            fprintf(stderr, "fuzz_commands: %s\n", dlerror());
            abort();
        }
    }
    return 0;
}

typedef struct world {
    sm_testhost *th;
    sm_session_id slot[SLOTS];
} world;

static void expect_reply(world *w, sm_session_id s, const char *action, const char *payload,
                         const char *reply_action)
{
    json_t *r = sm_testhost_call(w->th, s, action, payload);
    FUZZ_CHECK(r != NULL);
    const char *got = json_string_value(json_object_get(r, "action"));
    if (!got || strcmp(got, reply_action) != 0) {
        char *text = json_dumps(r, JSON_COMPACT);
        fprintf(stderr, "fuzz_commands setup: %s got %s\n", action, text ? text : "?");
        abort();
    }
    json_decref(r);
}

static void world_start(world *w)
{
    FUZZ_CHECK(sm_testhost_new(host_config, &w->th) == SM_OK);
    for (size_t i = 0; i < sizeof plugin_paths / sizeof plugin_paths[0]; i++)
        FUZZ_CHECK(sm_testhost_load(w->th, plugin_paths[i], plugin_names[i]) == SM_OK);
    for (int i = 0; i < SLOTS; i++) {
        w->slot[i] = sm_testhost_connect(w->th, NULL);
        FUZZ_CHECK(w->slot[i] != 0);
    }
    expect_reply(w, w->slot[0], "register", "{\"username\":\"alice\",\"password\":\"alice-password\"}",
                 "registration_success");
    expect_reply(w, w->slot[1], "register", "{\"username\":\"Bob\",\"password\":\"bob-password\"}",
                 "registration_success");
    expect_reply(w, w->slot[2], "login", "{\"username\":\"alice\",\"password\":\"alice-password\"}",
                 "login_success");
    expect_reply(w, w->slot[3], "register", "{\"username\":\"carol\",\"password\":\"carol-password\"}",
                 "registration_success");
    sm_testhost_clear(w->th);
}

static void dump_and_abort(const char *what, const json_t *m)
{
    char *text = json_dumps(m, JSON_COMPACT);
    fprintf(stderr, "fuzz_commands: %s: %s\n", what, text ? text : "?");
    abort();
}

/* A private_message event seen on one session, for the all-or-none rule. */
typedef struct seen_private {
    json_int_t id;
    char recipient[64];
    int sessions;
} seen_private;

/* Checks every message of every slot after one command (nonce 0: after
 * a clock step or a reconnect, when no reply is due). */
static void check_step(world *w, sm_session_id from, const char *action, uint64_t nonce)
{
    char nonce_text[24];
    snprintf(nonce_text, sizeof nonce_text, "%llu", (unsigned long long)nonce);
    int replies = 0;
    seen_private seen[16];
    size_t n_seen = 0;
    for (int i = 0; i < SLOTS; i++) {
        sm_session_id s = w->slot[i];
        const char *user = sm_testhost_username(w->th, s);
        json_t *m;
        while ((m = sm_testhost_next(w->th, s)) != NULL) {
            const char *type = json_string_value(json_object_get(m, "type"));
            const char *act = json_string_value(json_object_get(m, "action"));
            json_t *payload = json_object_get(m, "payload");
            FUZZ_CHECK(type && act && json_is_object(payload));
            if (strcmp(type, "response") == 0 || strcmp(type, "error") == 0) {
                const char *reply_to = json_string_value(json_object_get(m, "reply_to"));
                if (nonce == 0 || s != from || !reply_to || strcmp(reply_to, nonce_text) != 0)
                    dump_and_abort("a reply nobody asked for", m);
                replies++;
            }
            if (strcmp(type, "error") == 0) {
                json_t *code = json_object_get(payload, "code");
                const char *command = json_string_value(json_object_get(payload, "command"));
                if (!json_is_integer(code) || json_integer_value(code) < 1001
                    || json_integer_value(code) > 1011)
                    dump_and_abort("error code out of range", m);
                if (!command || strcmp(command, action) != 0)
                    dump_and_abort("error names another command", m);
            }
            if (strcmp(type, "event") == 0 && strcmp(act, "private_message") == 0) {
                const char *to = json_string_value(json_object_get(payload, "recipient"));
                if (!to || !user || strcasecmp(to, user) != 0)
                    dump_and_abort("private message on a session of another user", m);
                json_int_t id = json_integer_value(json_object_get(payload, "id"));
                size_t k = 0;
                while (k < n_seen && seen[k].id != id)
                    k++;
                if (k == n_seen && n_seen < sizeof seen / sizeof seen[0]) {
                    seen[k].id = id;
                    snprintf(seen[k].recipient, sizeof seen[k].recipient, "%s", to);
                    seen[k].sessions = 0;
                    n_seen++;
                }
                if (k < n_seen)
                    seen[k].sessions++;
            }
            json_decref(m);
        }
    }
    if (nonce != 0 && replies != (strcmp(action, "PONG") == 0 ? 0 : 1)) {
        fprintf(stderr, "fuzz_commands: %s (nonce %s) got %d replies\n", action, nonce_text,
                replies);
        abort();
    }
    /* Every open session of the recipient got it, or none did. */
    for (size_t k = 0; k < n_seen; k++) {
        int of_recipient = 0;
        for (int i = 0; i < SLOTS; i++) {
            const char *user = sm_testhost_username(w->th, w->slot[i]);
            of_recipient += user && strcasecmp(user, seen[k].recipient) == 0;
        }
        FUZZ_CHECK(seen[k].sessions == of_recipient);
    }
}

/* One input line; returns 0 when it was run, -1 when it is not a step. */
static int run_line(world *w, char *line)
{
    if (line[0] == 't' && line[1] == ' ') {
        double seconds = strtod(line + 2, NULL);
        if (!(seconds >= 0 && seconds <= MAX_ADVANCE))
            return -1;
        sm_testhost_advance(w->th, seconds);
        check_step(w, 0, "", 0);
        return 0;
    }
    if (line[0] < '0' || line[0] > '9' || line[1] != ' ')
        return -1;
    int i = (line[0] - '0') % SLOTS;
    char *action = line + 2;
    char *payload = strchr(action, ' ');
    if (payload)
        *payload++ = '\0';
    if (strcmp(action, "~reconnect") == 0) {
        (void)sm_testhost_disconnect(w->th, w->slot[i]);
        w->slot[i] = sm_testhost_connect(w->th, NULL);
        FUZZ_CHECK(w->slot[i] != 0);
        check_step(w, 0, "", 0);
        return 0;
    }
    /* On the wire the action is a JSON string, so valid UTF-8: the
     * envelope parser has refused anything else before dispatch. */
    json_t *as_json = json_string(action);
    if (!as_json)
        return -1;
    json_decref(as_json);
    uint64_t nonce = sm_testhost_send(w->th, w->slot[i], action, payload);
    if (nonce == 0)
        return -1;   /* closed session or a payload that is no JSON object */
    sm_testhost_run_workers(w->th);
    check_step(w, w->slot[i], action, nonce);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    world w;
    world_start(&w);
    int steps = 0;
    for (char *line = text, *next; line && steps < MAX_STEPS; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (run_line(&w, line) == 0)
            steps++;
    }
    sm_testhost_free(w.th);
    free(text);
    return 0;
}
