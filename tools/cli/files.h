/* The CLI's files under its configuration directory: paths, directories
 * created 0700, files written 0600 (atomically, so a crash never leaves a
 * half-written pin or key), and the name checks that make a username safe
 * to use as a file name. Functions return 0 on success and -1 on failure
 * unless they say otherwise; out-parameters are written only on success. */
#ifndef SM_CLI_FILES_H
#define SM_CLI_FILES_H

#include <stddef.h>

/* $XDG_CONFIG_HOME/safemessenger when that is an absolute path, else
 * $HOME/.config/safemessenger. */
int files_default_config_dir(char *out, size_t out_len);

/* out = a "/" b ["/" c]; c may be NULL. -1 if it does not fit. */
int files_join(char *out, size_t out_len, const char *a, const char *b, const char *c);

/* mkdir -p: every missing component is created with mode 0700. */
int files_mkdirs(const char *path);

/* mkdir -p of the directory part of path. */
int files_mkdirs_parent(const char *path);

/* Reads a whole file of at most max bytes, NUL-terminated (the NUL is not
 * counted in *len). Returns 0, 1 when the file does not exist, -1 on error
 * (including a file larger than max). */
int files_read(const char *path, size_t max, char **data, size_t *len);

/* Replaces path with data (temporary file + rename), mode 0600. */
int files_write(const char *path, const void *data, size_t len);

/* Creates path with data, mode 0600, failing (1) if it already exists
 * rather than replacing it; -1 on other errors. */
int files_write_new(const char *path, const void *data, size_t len);

/* Appends data to path (created 0600) in one write. */
int files_append(const char *path, const void *data, size_t len);

/* 1 if name is a well-formed username (3-32 of [A-Za-z0-9_.-]), else 0.
 * Only such names are ever used in paths. */
int files_name_ok(const char *name);

/* ASCII lower case copy (names are case-insensitive, PROTOCOL.md 7). */
int files_lower(const char *in, char *out, size_t out_len);

#endif
