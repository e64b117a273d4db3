#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Atomics: a reload changes them on the logic thread while I/O and
 * worker threads log. Relaxed is enough, each is read once a line and
 * nothing else is published through them. */
static atomic_int current_level = SM_LOG_INFO;
static atomic_int current_format = SM_LOG_FORMAT_TEXT;

static const char *const level_names[] = {"error", "warning", "info", "debug"};
static const char *const format_names[] = {"text", "json"};

void log_set_level(sm_log_level level)
{
    atomic_store_explicit(&current_level, (int)level, memory_order_relaxed);
}

void log_set_format(sm_log_format format)
{
    atomic_store_explicit(&current_format, (int)format, memory_order_relaxed);
}

static int name_index(const char *name, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

int log_level_from_name(const char *name, sm_log_level *out)
{
    int i = name_index(name, level_names, (int)SM_LOG_DEBUG + 1);
    if (i < 0)
        return -1;
    *out = (sm_log_level)i;
    return 0;
}

int log_format_from_name(const char *name, sm_log_format *out)
{
    int i = name_index(name, format_names, (int)SM_LOG_FORMAT_JSON + 1);
    if (i < 0)
        return -1;
    *out = (sm_log_format)i;
    return 0;
}

/* Length of the well-formed UTF-8 sequence at s (at most len bytes), 0 if
 * it is not one (overlong forms, surrogates and code points past U+10FFFF
 * are not). */
static size_t utf8_sequence(const unsigned char *s, size_t len)
{
    unsigned c = s[0];
    size_t n;
    unsigned min, cp;
    if (c >= 0xc2 && c <= 0xdf) { n = 2; min = 0x80; cp = c & 0x1f; }
    else if (c >= 0xe0 && c <= 0xef) { n = 3; min = 0x800; cp = c & 0x0f; }
    else if (c >= 0xf0 && c <= 0xf4) { n = 4; min = 0x10000; cp = c & 0x07; }
    else return 0;
    if (n > len)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

size_t log_json_escape(const char *in, char *out, size_t out_len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)in;
    size_t len = strlen(in), o = 0;
    if (out_len == 0)
        return 0;
    for (size_t i = 0; i < len;) {
        char esc[8];
        const char *piece = esc;
        size_t plen;
        unsigned c = s[i];
        if (c == '"' || c == '\\') {
            esc[0] = '\\'; esc[1] = (char)c; plen = 2; i++;
        } else if (c == '\n') {
            memcpy(esc, "\\n", 2); plen = 2; i++;
        } else if (c == '\t') {
            memcpy(esc, "\\t", 2); plen = 2; i++;
        } else if (c == '\r') {
            memcpy(esc, "\\r", 2); plen = 2; i++;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4]; esc[5] = hex[c & 0xf]; plen = 6; i++;
        } else if (c < 0x80) {
            piece = (const char *)s + i; plen = 1; i++;
        } else {
            size_t n = utf8_sequence(s + i, len - i);
            if (n > 0) {
                piece = (const char *)s + i; plen = n; i += n;
            } else {
                /* A byte that is not UTF-8 (or a sequence cut by the line
                 * limit) would make the whole line invalid JSON. */
                memcpy(esc, "\\ufffd", 6); plen = 6; i++;
            }
        }
        if (o + plen >= out_len)
            break;   /* never half an escape */
        memcpy(out + o, piece, plen);
        o += plen;
    }
    out[o] = '\0';
    return o;
}

static int all_digits(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* The fields as JSON members ("k":"v", numbers bare, NULL as null) or as
 * text (" k=v", quoted ones in '', NULL as -), appended to out at *o.
 * Stops before a field that would not fit, so the line stays well-formed. */
static void append_fields(char *out, size_t out_len, size_t *o, const log_field *fields,
                          size_t n_fields, int json)
{
    for (size_t i = 0; i < n_fields; i++) {
        const log_field *f = &fields[i];
        if (!json && (f->kind & LOG_FIELD_JSON_ONLY))
            continue;
        char key[128], value[1024 * 6];
        const char *v = f->value;
        int n;
        if (json) {
            log_json_escape(f->key, key, sizeof key);
            const char *comma = out[*o - 1] != '{' ? "," : "";
            if (!v) {
                n = snprintf(out + *o, out_len - *o, "%s\"%s\":null", comma, key);
            } else {
                log_json_escape(v, value, sizeof value);
                /* Bare only when it is digits, so the line stays JSON. */
                const char *q = (f->kind & LOG_FIELD_NUMBER) && all_digits(v) ? "" : "\"";
                n = snprintf(out + *o, out_len - *o, "%s\"%s\":%s%s%s", comma, key, q, value,
                             q);
            }
        } else {
            const char *q = v && (f->kind & LOG_FIELD_QUOTED) ? "'" : "";
            n = snprintf(out + *o, out_len - *o, " %s=%s%s%s", f->key, q, v ? v : "-", q);
        }
        if (n < 0 || (size_t)n >= out_len - *o) {
            out[*o] = '\0';
            return;
        }
        *o += (size_t)n;
    }
}

/* Every buffer is on the caller's stack and the line goes out in one
 * fputs, so threads may log at once. */
static void write_line(sm_log_level level, const char *who, const log_field *fields,
                       size_t n_fields, const char *fmt, va_list ap) SM_PRINTF(5, 0);

static void write_line(sm_log_level level, const char *who, const log_field *fields,
                       size_t n_fields, const char *fmt, va_list ap)
{
    char msg[1024];
    /* Escaping may grow the message six-fold (control characters). */
    char source[256], message[sizeof msg * 6], extra[2048];
    char line[sizeof source + sizeof message + sizeof extra + 128];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[96];
    snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             ts.tv_nsec / 1000000L);
    vsnprintf(msg, sizeof msg, fmt, ap);
    int json = atomic_load_explicit(&current_format, memory_order_relaxed) == SM_LOG_FORMAT_JSON;
    size_t o = 0;
    extra[0] = '\0';
    if (json) {
        extra[o++] = '{';
        extra[o] = '\0';
    }
    append_fields(extra, json ? sizeof extra - 1 : sizeof extra, &o, fields, n_fields, json);
    if (json) {
        extra[o++] = '}';
        extra[o] = '\0';
    }
    int n;
    if (json) {
        log_json_escape(who ? who : "-", source, sizeof source);
        log_json_escape(msg, message, sizeof message);
        n = snprintf(line, sizeof line,
                     "{\"time\":\"%s\",\"level\":\"%s\",\"source\":\"%s\",\"message\":\"%s\","
                     "\"fields\":%s}\n",
                     stamp, level_names[level], source, message, extra);
    } else {
        n = snprintf(line, sizeof line, "%s %-7s [%s] %s%s\n", stamp, level_names[level],
                     who ? who : "-", msg, extra);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
        line[sizeof line - 2] = '\n';
    /* One fputs per line: stdio holds the stream's lock for the call, so
     * concurrent writers (I/O, worker threads) never interleave within a
     * line, and glibc writes an unbuffered stream's line in one write(). */
    fputs(line, stderr);
}

void log_vfields(sm_log_level level, const char *who, const log_field *fields, size_t n_fields,
                 const char *fmt, va_list ap)
{
    if ((int)level > atomic_load_explicit(&current_level, memory_order_relaxed))
        return;
    write_line(level, who, fields, n_fields, fmt, ap);
}

void log_msg_always(sm_log_level level, const char *who, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    write_line(level, who, NULL, 0, fmt, ap);
    va_end(ap);
}

void log_vmsg(sm_log_level level, const char *who, const char *fmt, va_list ap)
{
    log_vfields(level, who, NULL, 0, fmt, ap);
}

void log_fields(sm_log_level level, const char *who, const log_field *fields, size_t n_fields,
                const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vfields(level, who, fields, n_fields, fmt, ap);
    va_end(ap);
}

void log_msg(sm_log_level level, const char *who, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, who, fmt, ap);
    va_end(ap);
}
