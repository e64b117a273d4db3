/* hello: the SafeMessenger example plugin, built outside the server's tree
 * against the installed SDK (README.md; docs/PLUGINS.md walks through it).
 *
 * Action `hello` (needs a login, no payload fields) replies
 *   {"greeting": "<greeting>, <username>!", "count": N}
 * where <greeting> is `hello.greeting` from the server's configuration
 * (default "Hello", 1 to 64 bytes) and N is how many times this user has
 * been greeted, counted in the plugin's own table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <safemessenger/plugin.h>

#define GREETING_MAX 64 /* bytes, from the configuration */
#define USERNAME_MAX 64 /* bytes: the most session_login accepts */

typedef struct hello {
    sm_plugin *self;
    const sm_host *host;
    const char *greeting; /* points into the configuration: valid until fini */
    sm_stmt *bump;        /* prepared in start, finalized in fini */
    sm_stmt *read;
} hello;

static const sm_migration migrations[] = {
    {1, "CREATE TABLE hello_counts (username TEXT PRIMARY KEY, count INTEGER NOT NULL)"},
    {0, NULL},
};

/* Usernames are unique without regard to ASCII case (PROTOCOL.md), so
 * "Alice" and "alice" share one count. */
static int user_key(const char *username, char *key, size_t size)
{
    size_t len = strlen(username);
    if (len == 0 || len >= size)
        return SM_EINVAL;
    for (size_t i = 0; i <= len; i++) {
        char c = username[i];
        key[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    return SM_OK;
}

/* Counts one more greeting of the user and reads the new total in one
 * transaction, so the count we reply with is committed. */
static int count_greeting(hello *h, const char *key, int64_t *out)
{
    const sm_host *host = h->host;
    int64_t count = 0;
    int rc = host->db_begin(h->self);
    if (rc != SM_OK)
        return rc;
    if (host->db_bind_text(h->bump, 1, key, -1) != SM_OK || host->db_step(h->bump) != SM_DONE)
        rc = SM_ERROR;
    host->db_reset(h->bump);
    if (rc == SM_OK) {
        if (host->db_bind_text(h->read, 1, key, -1) != SM_OK || host->db_step(h->read) != SM_ROW)
            rc = SM_ERROR;
        else
            count = host->db_column_int64(h->read, 0);
        host->db_reset(h->read);
    }
    if (rc == SM_OK)
        rc = host->db_commit(h->self); /* rolls back by itself on failure */
    else
        host->db_rollback(h->self);
    if (rc == SM_OK)
        *out = count;
    return rc;
}

static void hello_cmd(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    (void)payload; /* no fields */
    hello *h = plugin_data;
    const sm_host *host = h->host;
    /* SM_ACTION_NEEDS_LOGIN: the core has answered 1002 to anyone else. */
    const char *username = host->session_username(host->ctx_session(ctx));
    char key[USERNAME_MAX + 1];
    int64_t count = 0;
    if (!username || user_key(username, key, sizeof key) != SM_OK ||
        count_greeting(h, key, &count) != SM_OK) {
        host->log(h->self, SM_LOG_ERROR, "cannot count the greeting of %s",
                  username ? username : "(nobody)");
        host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    char text[GREETING_MAX + USERNAME_MAX + 4];
    int n = snprintf(text, sizeof text, "%s, %s!", h->greeting, username);
    json_t *reply = n >= 0 && (size_t)n < sizeof text
                        ? json_pack("{s:s, s:I}", "greeting", text, "count", (json_int_t)count)
                        : NULL;
    if (!reply) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    host->reply(ctx, "hello", reply); /* borrowed: we still own reply */
    json_decref(reply);
}

static const sm_action actions[] = {
    {"hello", hello_cmd, SM_ACTION_NEEDS_LOGIN, NULL},
    {NULL, NULL, 0, NULL},
};

/* hello.greeting into h->greeting: in init, and on a reload into a copy. */
static int read_greeting(hello *h, const sm_host *host, sm_plugin *self)
{
    h->greeting = "Hello"; /* stays when the key is absent */
    int rc = host->config_string(self, "greeting", &h->greeting);
    if (rc == SM_OK && (h->greeting[0] == '\0' || strlen(h->greeting) > GREETING_MAX)) {
        host->log(self, SM_LOG_ERROR, "hello.greeting must be 1 to %d bytes", GREETING_MAX);
        rc = SM_EINVAL;
    }
    return rc;
}

/* A configuration reload (SIGHUP): check the new greeting (apply = 0),
 * then take it (apply = 1). */
static int hello_reload(void *plugin_data, int apply)
{
    hello *h = plugin_data;
    hello next = *h;
    int rc = read_greeting(&next, h->host, h->self);
    if (rc != SM_OK || !apply)
        return rc;
    h->greeting = next.greeting;
    return SM_OK;
}

static int hello_init(sm_plugin *self, const sm_host *host, void **plugin_data)
{
    hello *h = calloc(1, sizeof *h);
    if (!h)
        return SM_ENOMEM;
    h->self = self;
    h->host = host;
    int rc = read_greeting(h, host, self);
    if (rc == SM_OK)
        rc = host->register_actions(self, actions);
    if (rc == SM_OK)
        rc = host->register_migrations(self, migrations);
    /* An older server has no reload: the greeting then stays as read. */
    if (rc == SM_OK && SM_HOST_HAS(host, register_reload))
        rc = host->register_reload(self, hello_reload);
    if (rc != SM_OK)
        goto fail;
    host->log(self, SM_LOG_DEBUG, "greeting with \"%s\"", h->greeting);
    *plugin_data = h;
    return SM_OK;
fail:
    free(h);
    return rc;
}

/* The table exists now: migrations ran after every plugin's init. */
static int hello_start(void *plugin_data)
{
    hello *h = plugin_data;
    int rc = h->host->db_prepare(h->self,
                                 "INSERT INTO hello_counts (username, count) VALUES (?, 1)"
                                 " ON CONFLICT(username) DO UPDATE SET count = count + 1",
                                 &h->bump);
    if (rc == SM_OK)
        rc = h->host->db_prepare(h->self, "SELECT count FROM hello_counts WHERE username = ?",
                                 &h->read);
    return rc;
}

/* Also runs when start-up failed after our init, so start may not have
 * run: db_finalize accepts NULL. */
static void hello_fini(void *plugin_data)
{
    hello *h = plugin_data;
    h->host->db_finalize(h->bump);
    h->host->db_finalize(h->read);
    free(h);
}

SM_PLUGIN_DECLARE(.name = "hello", .version = "1.0",
                  .description = "Greets logged-in users and counts the greetings",
                  .init = hello_init, .fini = hello_fini, .start = hello_start);
