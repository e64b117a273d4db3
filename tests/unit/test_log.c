/* proto/log: log.format = "json" writes one valid JSON object a line with
 * exactly time, level, source, message and fields, whatever the message
 * and the fields hold; "text" keeps the historical line, fields appended
 * as key=value. */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "log.h"
#include "safemessenger/testhost_suite.h"

/* Runs emit with stderr sent to a temporary file; returns what it wrote
 * (malloc'd) or NULL. */
static char *capture(void (*emit)(void))
{
    char path[] = "/tmp/sm-unit-log-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    emit();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_END);
    char *buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (buf && pread(fd, buf, (size_t)size, 0) == (ssize_t)size) {
        buf[size] = '\0';
    } else {
        free(buf);
        buf = NULL;
    }
    close(fd);
    return buf;
}

static const char nasty[] = "say \"hi\" \\ back\\slash\n\ttab\r\x01\x1f\x7f caf\xc3\xa9 "
                            "\xe2\x82\xac \xf0\x9f\x94\x92 bad:\xff\xc3 end";

static void emit_nasty(void)
{
    log_set_format(SM_LOG_FORMAT_JSON);
    log_set_level(SM_LOG_DEBUG);
    log_msg(SM_LOG_INFO, "core", "%s", nasty);
    log_msg(SM_LOG_WARNING, "we\"ird\nsource", "plain");
    log_msg(SM_LOG_DEBUG, "core", "%s", "");
    log_set_format(SM_LOG_FORMAT_TEXT);
}

static void emit_long(void)
{
    /* Past the 1024-byte cut, with every byte needing an escape and a
     * multi-byte character straddling the cut. */
    static char big[4000];
    for (size_t i = 0; i + 1 < sizeof big; i++)
        big[i] = (i % 3 == 0) ? '\x01' : (i % 3 == 1) ? '"' : '\\';
    memcpy(big + 1021, "\xe2\x82\xac", 3);
    big[sizeof big - 1] = '\0';
    log_set_format(SM_LOG_FORMAT_JSON);
    log_msg(SM_LOG_ERROR, "core", "%s", big);
    log_set_format(SM_LOG_FORMAT_TEXT);
}

/* Parses every line; checks the keys; returns the number of lines. */
static int check_json_lines(char *text, json_t **objs, int max)
{
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t err;
        json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(o);
        CU_ASSERT_TRUE(json_is_object(o));
        CU_ASSERT_EQUAL(json_object_size(o), 5);
        static const char *const keys[] = {"time", "level", "source", "message"};
        for (size_t k = 0; k < 4; k++)
            CU_ASSERT_TRUE(json_is_string(json_object_get(o, keys[k])));
        CU_ASSERT_TRUE(json_is_object(json_object_get(o, "fields")));
        const char *t = json_string_value(json_object_get(o, "time"));
        /* 2026-12-02T08:15:42.123Z */
        CU_ASSERT_EQUAL(strlen(t), 24);
        CU_ASSERT_EQUAL(t[10], 'T');
        CU_ASSERT_EQUAL(t[19], '.');
        CU_ASSERT_EQUAL(t[23], 'Z');
        if (n < max)
            objs[n] = o;
        else
            json_decref(o);
        n++;
    }
    return n;
}

static void json_lines_parse_back_to_the_message_with_escapes(void)
{
    char *out = capture(emit_nasty);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    json_t *o[3] = {0};
    CU_ASSERT_EQUAL_FATAL(check_json_lines(out, o, 3), 3);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(o[0], "level")), "info");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(o[0], "source")), "core");
    /* Everything round-trips except the two bytes that are not UTF-8. */
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(o[0], "message")),
                           "say \"hi\" \\ back\\slash\n\ttab\r\x01\x1f\x7f caf\xc3\xa9 "
                           "\xe2\x82\xac \xf0\x9f\x94\x92 bad:\xef\xbf\xbd\xef\xbf\xbd end");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(o[1], "level")), "warning");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(o[1], "source")),
                           "we\"ird\nsource");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(o[1], "message")), "plain");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(o[2], "level")), "debug");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(o[2], "message")), "");
    for (int i = 0; i < 3; i++)
        json_decref(o[i]);
    free(out);
}

static void json_line_cut_at_the_limit_is_still_valid_json(void)
{
    char *out = capture(emit_long);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    json_t *o[1] = {0};
    CU_ASSERT_EQUAL_FATAL(check_json_lines(out, o, 1), 1);
    const char *m = json_string_value(json_object_get(o[0], "message"));
    CU_ASSERT_TRUE(strlen(m) >= 1000);
    json_decref(o[0]);
    free(out);
}

static void emit_text(void)
{
    log_set_format(SM_LOG_FORMAT_TEXT);
    log_set_level(SM_LOG_INFO);
    log_msg(SM_LOG_INFO, "core", "listening on %s", "x");
    log_msg(SM_LOG_DEBUG, "core", "not shown");
}

static void text_format_is_the_default_line(void)
{
    char *out = capture(emit_text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL_FATAL(strlen(out) > 24, 1);
    CU_ASSERT_STRING_EQUAL(out + 24, " info    [core] listening on x\n");
    free(out);
}

static void format_names_are_text_and_json_only(void)
{
    sm_log_format f = SM_LOG_FORMAT_TEXT;
    CU_ASSERT_EQUAL(log_format_from_name("json", &f), 0);
    CU_ASSERT_EQUAL(f, SM_LOG_FORMAT_JSON);
    CU_ASSERT_EQUAL(log_format_from_name("text", &f), 0);
    CU_ASSERT_EQUAL(f, SM_LOG_FORMAT_TEXT);
    CU_ASSERT_EQUAL(log_format_from_name("JSON", &f), -1);
    CU_ASSERT_EQUAL(log_format_from_name("jso", &f), -1);
    CU_ASSERT_EQUAL(log_format_from_name("", &f), -1);
}

static void escape_never_cuts_inside_an_escape(void)
{
    char out[8];
    /* "\u0001" is 6 bytes: a second one does not fit in 7 + NUL. */
    CU_ASSERT_EQUAL(log_json_escape("\x01\x01", out, sizeof out), 6);
    CU_ASSERT_STRING_EQUAL(out, "\\u0001");
    CU_ASSERT_EQUAL(log_json_escape("ab\"", out, 4), 2);
    CU_ASSERT_STRING_EQUAL(out, "ab");
}

static void emit_fields(void)
{
    log_set_level(SM_LOG_INFO);
    const log_field f[] = {
        {"event", "login", LOG_FIELD_JSON_ONLY},
        {"user", "Al\"ice\n", LOG_FIELD_QUOTED},
        {"address", NULL, 0},
        {"session", "42", LOG_FIELD_NUMBER},
        {"odd", "4x2", LOG_FIELD_NUMBER},
    };
    log_set_format(SM_LOG_FORMAT_JSON);
    log_fields(SM_LOG_INFO, "audit", f, 5, "%s", "login");
    log_msg(SM_LOG_INFO, "core", "no fields");
    log_set_format(SM_LOG_FORMAT_TEXT);
    log_fields(SM_LOG_INFO, "audit", f, 4, "%s", "login");
}

static void fields_are_an_object_in_json_and_key_value_in_text(void)
{
    char *out = capture(emit_fields);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    char *text_line = strchr(strchr(out, '\n') + 1, '\n') + 1;
    CU_ASSERT_PTR_NOT_NULL_FATAL(strstr(text_line, " info    [audit] login user='Al\"ice\n'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text_line, " address=- session=42\n"));
    CU_ASSERT_PTR_NULL(strstr(text_line, "event="));
    text_line[0] = '\0';
    json_t *o[2] = {0};
    CU_ASSERT_EQUAL_FATAL(check_json_lines(out, o, 2), 2);
    json_t *f = json_object_get(o[0], "fields");
    CU_ASSERT_EQUAL(json_object_size(f), 5);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(f, "event")), "login");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(f, "user")), "Al\"ice\n");
    CU_ASSERT_TRUE(json_is_null(json_object_get(f, "address")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(f, "session")), 42);
    /* Not digits: written as a string, so the line still parses. */
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(f, "odd")), "4x2");
    CU_ASSERT_EQUAL(json_object_size(json_object_get(o[1], "fields")), 0);
    json_decref(o[0]);
    json_decref(o[1]);
    free(out);
}

static void emit_always(void)
{
    log_set_format(SM_LOG_FORMAT_TEXT);
    log_set_level(SM_LOG_ERROR);
    log_msg(SM_LOG_INFO, "core", "filtered");
    log_msg_always(SM_LOG_INFO, "core", "reloaded %d", 1);
    log_set_level(SM_LOG_INFO);
}

/* A reload's outcome is written at log.level = error, without lowering
 * the level for other threads' lines meanwhile. */
static void always_line_passes_whatever_the_level(void)
{
    char *out = capture(emit_always);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL_FATAL(strlen(out) > 24, 1);
    CU_ASSERT_STRING_EQUAL(out + 24, " info    [core] reloaded 1\n");
    free(out);
}

/* ---- several threads: I/O threads log while a reload changes the level
 * and the format on the logic thread ---------------------------------- */

#define MT_THREADS 4
#define MT_LINES 400

static atomic_int mt_stop;
static atomic_int mt_switches;

/* The message of thread t's line n: lengths vary up to 900 bytes (under
 * the 1024-byte message cut), the filler letter depends on n, and the
 * last word closes it, so a piece of another line cannot pass. */
static void mt_message(int t, int n, char *out, size_t len)
{
    int head = snprintf(out, len, "t%d n%d ", t, n);
    size_t fill = 1 + (size_t)(n * 37) % 900;
    memset(out + head, 'a' + n % 26, fill);
    snprintf(out + (size_t)head + fill, len - (size_t)head - fill, " end");
}

/* Threads 0 and 1 write plain lines, 2 and 3 audit lines (with fields);
 * every thread writes a debug line after each info one. */
static void *mt_writer(void *arg)
{
    int t = (int)(intptr_t)arg;
    char msg[1024], user[16], addr[16];
    snprintf(user, sizeof user, "u%d", t);
    snprintf(addr, sizeof addr, "10.0.0.%d", t);
    for (int n = 0; n < MT_LINES; n++) {
        mt_message(t, n, msg, sizeof msg);
        if (t < 2)
            log_msg(SM_LOG_INFO, "core", "%s", msg);
        else
            audit_line(msg, user, addr, (uint64_t)n + 1, NULL);
        log_msg(SM_LOG_DEBUG, "core", "%s", msg);
    }
    return NULL;
}

static void *mt_reloader(void *arg)
{
    (void)arg;
    for (int i = 0; !atomic_load(&mt_stop); i++) {
        log_set_level(i % 2 ? SM_LOG_DEBUG : SM_LOG_INFO);
        log_set_format(i % 3 ? SM_LOG_FORMAT_TEXT : SM_LOG_FORMAT_JSON);
        atomic_fetch_add(&mt_switches, 1);
    }
    return NULL;
}

static void emit_from_threads(void)
{
    pthread_t writers[MT_THREADS], reloader;
    atomic_store(&mt_stop, 0);
    atomic_store(&mt_switches, 0);
    if (pthread_create(&reloader, NULL, mt_reloader, NULL) != 0)
        return;
    int started = 0;
    for (; started < MT_THREADS; started++)
        if (pthread_create(&writers[started], NULL, mt_writer, (void *)(intptr_t)started) != 0)
            break;
    for (int t = 0; t < started; t++)
        pthread_join(writers[t], NULL);
    atomic_store(&mt_stop, 1);
    pthread_join(reloader, NULL);
    log_set_level(SM_LOG_INFO);
    log_set_format(SM_LOG_FORMAT_TEXT);
}

/* Checks one line against what its writer wrote; on success sets *t, *n
 * and *debug. */
static int mt_check_line(const char *line, int *t, int *n, int *debug)
{
    char expect[1024], audit_tail[96], lv[16], src[16];
    const char *level, *source, *message;
    json_t *o = NULL, *fields = NULL;
    int ok = 0;
    if (line[0] == '{') {
        json_error_t err;
        if (!(o = json_loads(line, JSON_REJECT_DUPLICATES, &err)))
            return 0;
        level = json_string_value(json_object_get(o, "level"));
        source = json_string_value(json_object_get(o, "source"));
        message = json_string_value(json_object_get(o, "message"));
        fields = json_object_get(o, "fields");
        if (!level || !source || !message || !json_is_object(fields))
            goto out;
    } else {
        /* "<24-byte time> <level padded to 7> [<source>] <message>" */
        if (strlen(line) < 36 || sscanf(line + 25, "%15s [%15[^]]]", lv, src) != 2)
            return 0;
        level = lv;
        source = src;
        message = strstr(line, "] ");
        if (!message)
            return 0;
        message += 2;
    }
    if (sscanf(message, "t%d n%d ", t, n) != 2 || *t < 0 || *t >= MT_THREADS || *n < 0 ||
        *n >= MT_LINES)
        goto out;
    *debug = strcmp(level, "debug") == 0;
    int audit = *t >= 2 && !*debug;
    if (!*debug && strcmp(level, "info") != 0)
        goto out;
    if (strcmp(source, audit ? "audit" : "core") != 0)
        goto out;
    mt_message(*t, *n, expect, sizeof expect);
    if (o && audit) {
        char user[16], addr[16];
        snprintf(user, sizeof user, "u%d", *t);
        snprintf(addr, sizeof addr, "10.0.0.%d", *t);
        ok = strcmp(message, expect) == 0 &&
             strcmp(json_string_value(json_object_get(fields, "event")), expect) == 0 &&
             strcmp(json_string_value(json_object_get(fields, "user")), user) == 0 &&
             strcmp(json_string_value(json_object_get(fields, "address")), addr) == 0 &&
             json_integer_value(json_object_get(fields, "session")) == *n + 1;
    } else if (o) {
        ok = strcmp(message, expect) == 0 && json_object_size(fields) == 0;
    } else {
        audit_tail[0] = '\0';
        if (audit)
            snprintf(audit_tail, sizeof audit_tail, " user='u%d' address=10.0.0.%d session=%d",
                     *t, *t, *n + 1);
        size_t len = strlen(expect);
        ok = strncmp(message, expect, len) == 0 && strcmp(message + len, audit_tail) == 0;
    }
out:
    json_decref(o);
    return ok;
}

static void lines_stay_whole_while_threads_log_and_the_level_changes(void)
{
    char *out = capture(emit_from_threads);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT(atomic_load(&mt_switches) > 0);
    static unsigned char seen[MT_THREADS][MT_LINES][2];
    memset(seen, 0, sizeof seen);
    int broken = 0, repeated = 0, lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int t, n, debug;
        lines++;
        if (!mt_check_line(line, &t, &n, &debug)) {
            if (broken++ < 3)
                fprintf(stderr, "broken line: %.200s\n", line);
            continue;
        }
        if (seen[t][n][debug]++)
            repeated++;
    }
    CU_ASSERT_EQUAL(broken, 0);
    CU_ASSERT_EQUAL(repeated, 0);
    /* Info lines pass at either level: every one is there. */
    int info = 0;
    for (int t = 0; t < MT_THREADS; t++)
        for (int n = 0; n < MT_LINES; n++)
            info += seen[t][n][0];
    CU_ASSERT_EQUAL(info, MT_THREADS * MT_LINES);
    CU_ASSERT(lines >= MT_THREADS * MT_LINES);
    free(out);
}

static const sm_test_case cases[] = {
    SM_TEST(fields_are_an_object_in_json_and_key_value_in_text),
    SM_TEST(json_lines_parse_back_to_the_message_with_escapes),
    SM_TEST(json_line_cut_at_the_limit_is_still_valid_json),
    SM_TEST(text_format_is_the_default_line),
    SM_TEST(format_names_are_text_and_json_only),
    SM_TEST(escape_never_cuts_inside_an_escape),
    SM_TEST(always_line_passes_whatever_the_level),
    SM_TEST(lines_stay_whole_while_threads_log_and_the_level_changes),
    SM_TEST_END
};

int main(void)
{
    return sm_test_run("log", cases, NULL, NULL);
}
