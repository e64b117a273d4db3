/* The plugin test host (include/safemessenger/testhost.h): the real core
 * with a recording transport, an in-memory database (or a PostgreSQL
 * schema of its own: SM_TESTHOST_POSTGRES_URL_FILE) and a fake clock.
 * Commands take the server's own receive path: sealed with the session's
 * keys, handed to session I/O, opened and dispatched; replies and events
 * are sealed by session I/O and opened here as a client would. */
#include "safemessenger/testhost.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "admin.h"
#include "core.h"
#include "envelope.h"
#include "log.h"
#include "plugin_loader.h"
#include "session.h"
#include "session_io.h"

/* What the host remembers of a session, also after it closed. */
typedef struct record {
    sm_session_id id;
    json_t *messages; /* array, oldest first */
    envelope_dir c2s; /* the client's side of the session keys: seals commands */
    envelope_dir s2c; /* opens what the server sent */
    int closed;
    int close_code;
} record;

struct sm_testhost {
    hashmap *records;          /* sm_session_id -> record * */
    sm_session_id *to_destroy; /* sessions the core closed, destroyed after each step */
    size_t n_to_destroy, cap_to_destroy;
    /* On PostgreSQL: the file's connection string, the same with the
     * host's schema as the search path (what the core connects with) and
     * the schema, dropped by sm_testhost_free. NULL and "" on SQLite. */
    char *pg_base;
    char *pg_conninfo;
    char pg_schema[64];
};

static sm_testhost *current;
static double fake_now = SM_TESTHOST_EPOCH;

static double fake_clock(void) { return fake_now; }

static record *find_record(sm_testhost *th, sm_session_id id)
{
    return hashmap_get_u64(th->records, id);
}

/* ---- the recording transport ---- */

/* Records one frame the server sent: opened with the client's keys, as a
 * client would read it. */
static void record_frame(record *r, const char *text, size_t len)
{
    envelope_in in;
    json_t *payload = NULL;
    if (envelope_parse(text, len, &in) != ENVELOPE_OK) {
        log_msg(SM_LOG_ERROR, "testhost", "session %llu: unreadable frame from the core",
                (unsigned long long)r->id);
        return;
    }
    if (envelope_open(&r->s2c, &in, &payload) != ENVELOPE_OK) {
        log_msg(SM_LOG_ERROR, "testhost", "session %llu: frame '%s' does not open",
                (unsigned long long)r->id, in.action);
        envelope_in_clear(&in);
        return;
    }
    json_t *m = json_pack("{s:s, s:s, s:o}", "type", in.type, "action", in.action, "payload",
                          payload);
    if (m && in.reply_to)
        json_object_set_new(m, "reply_to", json_string(in.reply_to));
    if (!m || json_array_append_new(r->messages, m) != 0)
        log_msg(SM_LOG_ERROR, "testhost", "out of memory recording a message");
    envelope_in_clear(&in);
}

/* The client reads at once: every frame is taken as soon as it is queued. */
static void th_write(session *s)
{
    record *r = current ? find_record(current, s->id) : NULL;
    outqueue_frame *f;
    while ((f = session_io_next_frame(s))) {
        if (r)
            record_frame(r, (const char *)f->data + OUTQUEUE_HEADROOM, f->len);
        session_io_frame_sent(s, 0);
    }
}

static void th_close(session *s, int how)
{
    record *r = current ? find_record(current, s->id) : NULL;
    if (!current || !r || r->closed)
        return;
    r->closed = 1;
    /* A dropped connection has no close frame: the client sees 1006. */
    r->close_code = how == SESSION_IO_DROP ? 1006 : s->close_code;
    if (current->n_to_destroy == current->cap_to_destroy) {
        size_t cap = current->cap_to_destroy ? current->cap_to_destroy * 2 : 16;
        sm_session_id *ids = realloc(current->to_destroy, cap * sizeof *ids);
        if (!ids)
            return; /* destroyed at sm_testhost_free at the latest */
        current->to_destroy = ids;
        current->cap_to_destroy = cap;
    }
    current->to_destroy[current->n_to_destroy++] = s->id;
}

static void th_pause(session *s, int pause)
{
    (void)s;
    (void)pause;
}

static const session_transport th_transport = {th_write, th_close, th_pause, NULL};

/* Finishes what a step started: zero-delay timers due now, then the
 * sessions the core closed (their close events may close others). */
static void settle(sm_testhost *th)
{
    timers_run_due(g_core.timers, fake_now);
    while (th->n_to_destroy > 0) {
        sm_session_id id = th->to_destroy[--th->n_to_destroy];
        session *s = session_find(id);
        if (s)
            session_destroy(s);
    }
}

/* ---- life cycle ---- */

/* config_text in a new temporary file for the configuration loader;
 * path receives its name. 0 or -1. */
static int write_temp_config(const char *config_text, char path[static 32])
{
    snprintf(path, 32, "/tmp/sm-testhost-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    size_t len = strlen(config_text), off = 0;
    while (off < len) {
        ssize_t n = write(fd, config_text + off, len - off);
        if (n <= 0) {
            close(fd);
            unlink(path);
            return -1;
        }
        off += (size_t)n;
    }
    close(fd);
    return 0;
}

/* ---- PostgreSQL (SM_TESTHOST_POSTGRES_URL_FILE) ---- */

/* Reads the connection string, the first line of the file the variable
 * names, into *out (malloc'd, trailing white space removed); *out NULL
 * when the variable is unset or empty (SQLite). 0, or -1 with the reason
 * logged. */
static int read_pg_url(char **out)
{
    *out = NULL;
    const char *file = getenv(SM_TESTHOST_POSTGRES_ENV);
    if (!file || !*file)
        return 0;
    FILE *f = fopen(file, "r");
    if (!f) {
        log_msg(SM_LOG_ERROR, "testhost", "%s: cannot read %s", SM_TESTHOST_POSTGRES_ENV, file);
        return -1;
    }
    char buf[2048];
    const char *why = NULL;
    if (!fgets(buf, sizeof buf, f))
        buf[0] = '\0';
    else if (!strchr(buf, '\n') && fgetc(f) != EOF)
        why = "a first line too long for a connection string";
    fclose(f);
    size_t n = strcspn(buf, "\r\n");
    while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    buf[n] = '\0';
    if (!why && n == 0)
        why = "an empty first line";
    if (why) {
        log_msg(SM_LOG_ERROR, "testhost", "%s: %s has %s", SM_TESTHOST_POSTGRES_ENV, file, why);
        return -1;
    }
    if (!(*out = strdup(buf)))
        return -1;
    return 0;
}

/* Runs one statement on a connection of its own (the schema's creation
 * and removal happen outside the core's connection, which only ever sees
 * its schema). 0, or -1 with the server's reason logged. */
static int pg_admin_exec(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    int rc = -1;
    if (PQstatus(c) != CONNECTION_OK) {
        log_msg(SM_LOG_ERROR, "testhost", "PostgreSQL: %s", PQerrorMessage(c));
    } else {
        /* Without the notice DROP SCHEMA ... CASCADE gives per table. */
        PQclear(PQexec(c, "SET client_min_messages = warning"));
        PGresult *res = PQexec(c, sql);
        if (PQresultStatus(res) == PGRES_COMMAND_OK)
            rc = 0;
        else
            log_msg(SM_LOG_ERROR, "testhost", "PostgreSQL: %s: %s", sql, PQerrorMessage(c));
        PQclear(res);
    }
    PQfinish(c);
    return rc;
}

/* Appends s to buf (size cap, length *len), as a quoted connection
 * string value when quote is set. 0, or -1 when it does not fit. */
static int append(char *buf, size_t cap, size_t *len, const char *s, int quote)
{
    for (; *s; s++) {
        int escape = quote && (*s == '\'' || *s == '\\');
        if (*len + (size_t)escape + 2 > cap)
            return -1;
        if (escape)
            buf[(*len)++] = '\\';
        buf[(*len)++] = *s;
    }
    buf[*len] = '\0';
    return 0;
}

/* The connection string `base` (keywords or a URI) rewritten as keywords
 * with `-c search_path=<schema>` added to its options, so that every
 * table the core and the plugins create lands in the schema and no other
 * schema is seen. Through libpq's parser rather than by appending text:
 * a URI cannot take a keyword after it. malloc'd; NULL on failure. */
static char *schema_conninfo(const char *base, const char *schema)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(base, &err);
    if (!opts) {
        log_msg(SM_LOG_ERROR, "testhost", "%s: not a connection string: %s",
                SM_TESTHOST_POSTGRES_ENV, err ? err : "out of memory");
        PQfreemem(err);
        return NULL;
    }
    size_t cap = strlen(base) * 2 + strlen(schema) + 256, len = 0;
    char *out = malloc(cap);
    const char *options = "";
    int ok = out != NULL;
    if (ok)
        out[0] = '\0';
    for (const PQconninfoOption *o = opts; ok && o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "options") == 0) {
            options = o->val;
            continue;
        }
        ok = append(out, cap, &len, o->keyword, 0) == 0 && append(out, cap, &len, "='", 0) == 0 &&
             append(out, cap, &len, o->val, 1) == 0 && append(out, cap, &len, "' ", 0) == 0;
    }
    ok = ok && append(out, cap, &len, "options='", 0) == 0 &&
         append(out, cap, &len, options, 1) == 0 &&
         append(out, cap, &len, *options ? " -c search_path=" : "-c search_path=", 0) == 0 &&
         append(out, cap, &len, schema, 1) == 0 && append(out, cap, &len, "'", 0) == 0;
    PQconninfoFree(opts);
    if (!ok) {
        log_msg(SM_LOG_ERROR, "testhost", "out of memory");
        free(out);
        return NULL;
    }
    return out;
}

/* When SM_TESTHOST_POSTGRES_URL_FILE is set: a new schema with a name
 * no other host (of this or another process) uses, and th->pg_conninfo
 * to reach it. 0 (also when the variable is unset), or -1. */
static int pg_prepare(sm_testhost *th)
{
    if (read_pg_url(&th->pg_base) != 0)
        return -1;
    if (!th->pg_base)
        return 0;
    /* The pid keeps parallel suites apart, the counter the hosts of one
     * suite, the random part a pid the system gave again. */
    static unsigned serial;
    uint32_t r = 0;
    /* Not core_random: the core is not initialised yet. */
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        return -1;
    snprintf(th->pg_schema, sizeof th->pg_schema, "sm_testhost_%ld_%u_%08x", (long)getpid(),
             ++serial, (unsigned)r);
    if (!(th->pg_conninfo = schema_conninfo(th->pg_base, th->pg_schema))) {
        th->pg_schema[0] = '\0';
        return -1;
    }
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE SCHEMA %s", th->pg_schema);
    if (pg_admin_exec(th->pg_base, sql) != 0) {
        th->pg_schema[0] = '\0';
        return -1;
    }
    return 0;
}

/* Drops the host's schema and everything in it (after core_stop: the
 * core's connection is closed), and forgets the strings. */
static void pg_release(sm_testhost *th)
{
    if (th->pg_schema[0]) {
        char sql[128];
        snprintf(sql, sizeof sql, "DROP SCHEMA %s CASCADE", th->pg_schema);
        pg_admin_exec(th->pg_base, sql);
        th->pg_schema[0] = '\0';
    }
    free(th->pg_conninfo);
    free(th->pg_base);
    th->pg_conninfo = th->pg_base = NULL;
}

/* Starts the core on config_text (NULL: the defaults), on PostgreSQL when
 * pg_conninfo is not NULL. */
static int start_core(const char *config_text, const char *pg_conninfo)
{
    core_options o = {
        /* Also on PostgreSQL: a reload then sees storage.database as it
         * was and names no setting that needs a restart. */
        .database = ":memory:",
        .postgresql = pg_conninfo,
        .port = -1,
        .workers = 1,
        .transport = &th_transport,
    };
    if (!config_text)
        return core_start(&o);
    char path[32];
    if (write_temp_config(config_text, path) != 0)
        return -1;
    o.config_file = path;
    int rc = core_start(&o);
    unlink(path);
    return rc;
}

int sm_testhost_new(const char *config_text, sm_testhost **out)
{
    if (current) {
        log_msg(SM_LOG_ERROR, "testhost", "only one test host may exist at a time");
        return SM_ESTATE;
    }
    sm_testhost *th = calloc(1, sizeof *th);
    if (!th)
        return SM_ENOMEM;
    if (!(th->records = hashmap_new()))
        goto fail;
    if (pg_prepare(th) != 0)
        goto fail;
    if (start_core(config_text, th->pg_conninfo) != 0) {
        log_msg(SM_LOG_ERROR, "testhost", "%s",
                th->pg_conninfo ? "configuration refused or PostgreSQL unreachable"
                                : "configuration refused");
        goto fail;
    }
    fake_now = SM_TESTHOST_EPOCH;
    g_core.wall_clock = fake_clock;
    g_core.mono_clock = fake_clock;
    current = th;
    *out = th;
    return SM_OK;
fail:
    pg_release(th);
    hashmap_free(th->records, NULL);
    free(th);
    return SM_ERROR;
}

int sm_testhost_reload(sm_testhost *th, const char *config_text)
{
    if (!th || !config_text)
        return SM_EINVAL;
    char path[32];
    if (write_temp_config(config_text, path) != 0)
        return SM_ERROR;
    int rc = core_reload_from(path, 0);
    unlink(path);
    settle(th);
    return rc == 0 ? SM_OK : SM_ERROR;
}

int sm_testhost_load(sm_testhost *th, const char *path, const char *name)
{
    if (!th || !path || !name)
        return SM_EINVAL;
    if (plugin_load(path, name) != 0)
        return SM_ERROR;
    if (plugin_start_last() != 0)
        return SM_ERROR;
    settle(th);
    return SM_OK;
}

static void free_record(void *value)
{
    record *r = value;
    json_decref(r->messages);
    free(r);
}

void sm_testhost_free(sm_testhost *th)
{
    if (!th)
        return;
    settle(th);
    core_stop();
    pg_release(th);
    hashmap_free(th->records, free_record);
    free(th->to_destroy);
    free(th);
    current = NULL;
}

/* ---- sessions ---- */

/* What the key exchange would leave: both sides' keys from a fresh session
 * key, the server's in the session and the client's in the record. */
static int open_keys(session *s, record *r)
{
    uint8_t k[CRYPTO_KEY_LEN], client_nonce[ENVELOPE_NONCE_LEN];
    int rc = -1;
    if (core_random(k, sizeof k) == 0 && core_random(client_nonce, sizeof client_nonce) == 0 &&
        core_random(s->server_nonce, sizeof s->server_nonce) == 0 &&
        envelope_derive(k, s->server_nonce, client_nonce, ENVELOPE_CIPHER_AES256_GCM, &s->c2s,
                        &s->s2c) == 0) {
        r->c2s = s->c2s;
        r->s2c = s->s2c;
        session_set_open(s);
        rc = 0;
    }
    crypto_wipe(k, sizeof k);
    return rc;
}

sm_session_id sm_testhost_connect(sm_testhost *th, const char *address)
{
    if (!th)
        return 0;
    record *r = calloc(1, sizeof *r);
    session *s = session_new(NULL, address ? address : "127.0.0.1");
    if (!r || !s || !(r->messages = json_array()) || hashmap_put_u64(th->records, s->id, r) != 0) {
        if (r)
            json_decref(r->messages);
        free(r);
        if (s)
            session_destroy(s);
        return 0;
    }
    r->id = s->id;
    if (open_keys(s, r) != 0) {
        hashmap_remove_u64(th->records, s->id);
        json_decref(r->messages);
        free(r);
        session_destroy(s);
        return 0;
    }
    s->opened = 1;
    sm_session_id id = s->id;
    session_fire(SM_EVENT_SESSION_OPENED, s);
    settle(th);
    return id;
}

sm_session_id sm_testhost_connect_user(sm_testhost *th, const char *username, int64_t user_id)
{
    sm_session_id id = sm_testhost_connect(th, NULL);
    session *s = session_find(id);
    if (!s)
        return 0;
    if (session_login(s, username, user_id) != SM_OK) {
        sm_testhost_disconnect(th, id);
        return 0;
    }
    settle(th);
    return id;
}

int sm_testhost_disconnect(sm_testhost *th, sm_session_id id)
{
    session *s = th ? session_find(id) : NULL;
    if (!s)
        return SM_ENOTFOUND;
    record *r = find_record(th, id);
    if (r && !r->closed) {
        r->closed = 1;
        r->close_code = 1000;
    }
    session_io_disconnected(s);
    session_destroy(s);
    settle(th);
    return SM_OK;
}

/* ---- commands and messages ---- */

uint64_t sm_testhost_send(sm_testhost *th, sm_session_id id, const char *action,
                          const char *payload_json)
{
    record *r = th ? find_record(th, id) : NULL;
    session *s = session_find(id);
    if (!r || !s || s->state != SESSION_OPEN || !action)
        return 0;
    const char *text = payload_json ? payload_json : "{}";
    json_t *payload = envelope_json_loads(text, strlen(text));
    int is_object = json_is_object(payload);
    json_decref(payload);
    if (!is_object)
        return 0;
    /* The server runs one command per session at a time; so does the host:
     * a command sent while another waits for a worker lets it finish. */
    while (s && s->busy) {
        workers_drain(g_core.pool);
        settle(th);
        s = session_find(id);
    }
    if (!s || s->state != SESSION_OPEN)
        return 0;
    /* Sealed as the client would, and read by the server's own path
     * (session I/O, envelope check, dispatch). */
    char *frame = NULL;
    size_t frame_len = 0;
    if (envelope_seal(&r->c2s, "command", action, NULL, text, strlen(text), &frame,
                      &frame_len) != 0)
        return 0;
    uint64_t nonce = r->c2s.nonce;
    session_io_receive(s, frame, frame_len);
    free(frame);
    settle(th);
    return nonce;
}

static json_t *take(record *r, size_t i)
{
    json_t *m = json_incref(json_array_get(r->messages, i));
    json_array_remove(r->messages, i);
    return m;
}

json_t *sm_testhost_reply(sm_testhost *th, sm_session_id id, uint64_t nonce)
{
    record *r = th ? find_record(th, id) : NULL;
    if (!r || nonce == 0)
        return NULL;
    char nonce_text[24];
    snprintf(nonce_text, sizeof nonce_text, "%llu", (unsigned long long)nonce);
    for (size_t i = 0; i < json_array_size(r->messages); i++) {
        json_t *m = json_array_get(r->messages, i);
        const char *rt = json_string_value(json_object_get(m, "reply_to"));
        if (rt && strcmp(rt, nonce_text) == 0)
            return take(r, i);
    }
    return NULL;
}

json_t *sm_testhost_call(sm_testhost *th, sm_session_id id, const char *action,
                         const char *payload_json)
{
    uint64_t nonce = sm_testhost_send(th, id, action, payload_json);
    if (!nonce)
        return NULL;
    sm_testhost_run_workers(th);
    return sm_testhost_reply(th, id, nonce);
}

json_t *sm_testhost_next(sm_testhost *th, sm_session_id id)
{
    record *r = th ? find_record(th, id) : NULL;
    if (!r || json_array_size(r->messages) == 0)
        return NULL;
    return take(r, 0);
}

json_t *sm_testhost_next_event(sm_testhost *th, sm_session_id id, const char *action)
{
    record *r = th ? find_record(th, id) : NULL;
    if (!r || !action)
        return NULL;
    for (size_t i = 0; i < json_array_size(r->messages); i++) {
        json_t *m = json_array_get(r->messages, i);
        if (strcmp(json_string_value(json_object_get(m, "type")), "event") == 0 &&
            strcmp(json_string_value(json_object_get(m, "action")), action) == 0)
            return take(r, i);
    }
    return NULL;
}

size_t sm_testhost_pending(sm_testhost *th, sm_session_id id)
{
    record *r = th ? find_record(th, id) : NULL;
    return r ? json_array_size(r->messages) : 0;
}

void sm_testhost_clear(sm_testhost *th)
{
    if (!th)
        return;
    hashmap_iter it;
    void *value;
    hashmap_iter_init(th->records, &it);
    while (hashmap_iter_next(&it, NULL, NULL, &value))
        json_array_clear(((record *)value)->messages);
}

/* ---- time and workers ---- */

void sm_testhost_run_workers(sm_testhost *th)
{
    if (!th)
        return;
    do {
        workers_drain(g_core.pool);
        settle(th);
    } while (workers_pending(g_core.pool) > 0);
}

void sm_testhost_advance(sm_testhost *th, double seconds)
{
    if (!th || !(seconds >= 0))
        return;
    double target = fake_now + seconds;
    for (;;) {
        double due = timers_next_due(g_core.timers, fake_now);
        if (due < 0 || fake_now + due > target)
            break;
        fake_now += due;
        timers_run_due(g_core.timers, fake_now);
        sm_testhost_run_workers(th);
    }
    fake_now = target;
    settle(th);
    sm_testhost_run_workers(th);
}

double sm_testhost_now(const sm_testhost *th)
{
    (void)th;
    return fake_now;
}

int sm_testhost_closed(sm_testhost *th, sm_session_id id, int *close_code)
{
    record *r = th ? find_record(th, id) : NULL;
    if (!r)
        return -1;
    if (r->closed && close_code)
        *close_code = r->close_code;
    return r->closed;
}

const char *sm_testhost_username(sm_testhost *th, sm_session_id id)
{
    (void)th;
    session *s = session_find(id);
    return s ? s->username : NULL;
}

/* ---- storage ---- */

int sm_testhost_query_int(sm_testhost *th, const char *sql, int64_t *out)
{
    if (!th || !sql || !out)
        return SM_EINVAL;
    sm_stmt *st = NULL;
    int rc = storage_prepare(g_core.db, "testhost", sql, &st);
    if (rc != SM_OK)
        return rc;
    rc = storage_step(st);
    if (rc == SM_ROW) {
        *out = storage_column_int64(st, 0);
        rc = SM_OK;
    } else if (rc == SM_DONE) {
        rc = SM_ENOTFOUND;
    }
    storage_finalize(st);
    return rc;
}

int sm_testhost_exec(sm_testhost *th, const char *sql)
{
    if (!th || !sql)
        return SM_EINVAL;
    return storage_exec(g_core.db, sql) == 0 ? SM_OK : SM_ERROR;
}

static void admin_answered(const json_t *reply, void *arg)
{
    json_t **out = arg;
    *out = json_deep_copy(reply);
}

json_t *sm_testhost_admin(sm_testhost *th, const char *command, const json_t *args)
{
    if (!th || !command)
        return NULL;
    json_t *request = json_pack("{s:s, s:O?}", "command", command, "args", args);
    if (!request)
        return NULL;
    json_t *answer = NULL;
    sm_admin_ctx *pending = admin_run(request, admin_answered, &answer);
    json_decref(request);
    if (pending && !answer)
        sm_testhost_run_workers(th);
    if (pending && !answer)
        admin_detach(pending);
    return answer;
}
