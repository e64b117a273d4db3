/* proto/log: log.format = "json" writes one valid JSON object a line with
 * exactly time, level, source, message and fields, whatever the message
 * and the fields hold; "text" keeps the historical line, fields appended
 * as key=value. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static const sm_test_case cases[] = {
    SM_TEST(fields_are_an_object_in_json_and_key_value_in_text),
    SM_TEST(json_lines_parse_back_to_the_message_with_escapes),
    SM_TEST(json_line_cut_at_the_limit_is_still_valid_json),
    SM_TEST(text_format_is_the_default_line),
    SM_TEST(format_names_are_text_and_json_only),
    SM_TEST(escape_never_cuts_inside_an_escape),
    SM_TEST_END
};

int main(void)
{
    return sm_test_run("log", cases, NULL, NULL);
}
