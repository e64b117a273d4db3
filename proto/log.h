/* Leveled logging to stderr, one line per call, with a timestamp and the
 * module or plugin name. Never pass secrets (passwords, keys, plaintext).
 * Every function is safe from any thread: a line is written whole in one
 * call (never interleaved with another thread's), and the level and
 * format may change (a reload, on the logic thread) while others log. */
#ifndef SM_CORE_LOG_H
#define SM_CORE_LOG_H

#include <stdarg.h>
#include "safemessenger/plugin.h"

typedef enum sm_log_format { SM_LOG_FORMAT_TEXT, SM_LOG_FORMAT_JSON } sm_log_format;

void log_set_level(sm_log_level level);
/* text: "<time> <level> [<source>] <message>[ key=value...]"; json: one
 * object a line, {"time","level","source","message","fields":{...}}, valid
 * JSON whatever the message and the fields hold. */
void log_set_format(sm_log_format format);
/* Parses "text", "json"; -1 if unknown. */
int log_format_from_name(const char *name, sm_log_format *out);
/* Writes in as the inside of a JSON string into out (NUL-terminated,
 * never cut inside an escape); bytes that are not UTF-8 become U+FFFD.
 * Returns the length written. */
size_t log_json_escape(const char *in, char *out, size_t out_len);
/* Parses "error", "warning", "info", "debug"; -1 if unknown. */
int log_level_from_name(const char *name, sm_log_level *out);

/* A structured field of a log line (log_fields). */
#define LOG_FIELD_QUOTED    1u /* text shows 'value' (names a client chose) */
#define LOG_FIELD_NUMBER    2u /* JSON writes the value bare: it must be digits */
#define LOG_FIELD_JSON_ONLY 4u /* text leaves it out (already in the message) */
typedef struct log_field {
    const char *key;
    const char *value; /* NULL: JSON null, text "-" */
    unsigned kind;     /* LOG_FIELD_* */
} log_field;

/* A line with fields: in JSON the "fields" object, in text " key=value"
 * after the message. Fields that do not fit the line are left out. */
void log_fields(sm_log_level level, const char *who, const log_field *fields, size_t n_fields,
                const char *fmt, ...) SM_PRINTF(5, 6);
void log_vfields(sm_log_level level, const char *who, const log_field *fields, size_t n_fields,
                 const char *fmt, va_list ap) SM_PRINTF(5, 0);
void log_msg(sm_log_level level, const char *who, const char *fmt, ...) SM_PRINTF(3, 4);
void log_vmsg(sm_log_level level, const char *who, const char *fmt, va_list ap) SM_PRINTF(3, 0);
/* A line written whatever log.level is (the answer to an operator's
 * request, such as a reload's outcome); changing the level around it
 * instead would let other threads' lines through meanwhile. */
void log_msg_always(sm_log_level level, const char *who, const char *fmt, ...) SM_PRINTF(3, 4);

#define LOG_ERROR(...) log_msg(SM_LOG_ERROR, "core", __VA_ARGS__)
#define LOG_WARN(...) log_msg(SM_LOG_WARNING, "core", __VA_ARGS__)
#define LOG_INFO(...) log_msg(SM_LOG_INFO, "core", __VA_ARGS__)
#define LOG_DEBUG(...) log_msg(SM_LOG_DEBUG, "core", __VA_ARGS__)

#endif
