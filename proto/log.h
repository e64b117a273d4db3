/* Leveled logging to stderr, one line per call, with a timestamp and the
 * module or plugin name. Never pass secrets (passwords, keys, plaintext). */
#ifndef SM_CORE_LOG_H
#define SM_CORE_LOG_H

#include <stdarg.h>
#include "safemessenger/plugin.h"

void log_set_level(sm_log_level level);
/* Parses "error", "warning", "info", "debug"; -1 if unknown. */
int log_level_from_name(const char *name, sm_log_level *out);

void log_msg(sm_log_level level, const char *who, const char *fmt, ...) SM_PRINTF(3, 4);
void log_vmsg(sm_log_level level, const char *who, const char *fmt, va_list ap);

#define LOG_ERROR(...) log_msg(SM_LOG_ERROR, "core", __VA_ARGS__)
#define LOG_WARN(...) log_msg(SM_LOG_WARNING, "core", __VA_ARGS__)
#define LOG_INFO(...) log_msg(SM_LOG_INFO, "core", __VA_ARGS__)
#define LOG_DEBUG(...) log_msg(SM_LOG_DEBUG, "core", __VA_ARGS__)

#endif
