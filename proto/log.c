#include "log.h"

#include <stdio.h>
#include <time.h>

static sm_log_level current_level = SM_LOG_INFO;

static const char *const level_names[] = {"error", "warning", "info", "debug"};

void log_set_level(sm_log_level level) { current_level = level; }

int log_level_from_name(const char *name, sm_log_level *out)
{
    for (int i = 0; i <= (int)SM_LOG_DEBUG; i++) {
        const char *a = name, *b = level_names[i];
        while (*a && *a == *b) { a++; b++; }
        if (*a == '\0' && *b == '\0') {
            *out = (sm_log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_vmsg(sm_log_level level, const char *who, const char *fmt, va_list ap)
{
    if (level > current_level)
        return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-7s [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000L, level_names[level], who ? who : "-");
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    /* One fputs per line so concurrent writers (worker threads) never
     * interleave within a line. */
    size_t len = 0;
    while (line[len]) len++;
    if (len + 1 < sizeof line) {
        line[len] = '\n';
        line[len + 1] = '\0';
    } else {
        line[sizeof line - 2] = '\n';
    }
    fputs(line, stderr);
}

void log_msg(sm_log_level level, const char *who, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, who, fmt, ap);
    va_end(ap);
}
