/* safemessenger-admin: the pieces main.c puts together. */
#ifndef SM_ADMIN_TOOL_TOOL_H
#define SM_ADMIN_TOOL_TOOL_H

#include <jansson.h>
#include <stdio.h>

/* How a request was carried. */
typedef enum admin_route {
    ROUTE_SOCKET,   /* the running server's admin socket */
    ROUTE_LOCAL,    /* no server: the core in this process, on the database */
    ROUTE_FAILED    /* neither: *reply holds the error */
} admin_route;

/* Sends request to the server listening on socket_path. Returns 1 with
 * *reply set, 0 when no server listens there (no socket, or a stale one),
 * -1 on another failure (message in err: e.g. permission denied). */
int remote_call(const char *socket_path, const json_t *request, json_t **reply, char *err,
                size_t err_len);

/* Starts the core on config_file without a listener (database, plugins),
 * runs request through the same admin commands the server has, stops.
 * Returns 0 with *reply set, or -1 with the reason in err (e.g. the
 * database is locked by a server whose admin socket does not answer). */
int local_call(const char *config_file, const json_t *request, json_t **reply, char *err,
               size_t err_len);

/* import-sqlite: copies the SQLite database at sqlite_path into the
 * PostgreSQL database config_file names (core/storage_import.h), printing
 * each table's rows. Returns the exit status (0, or 1 with the reason on
 * stderr). */
int import_sqlite(const char *config_file, const char *sqlite_path, int as_json);

/* Prints a command's result for people: arrays of rows as tables, other
 * members as "key: value". */
void render_result(FILE *out, const json_t *result);

/* Reads a password without echo from the terminal (twice, must match), or
 * one line from stdin when from_stdin. Returns a malloc'd string (the
 * caller wipes and frees it), or NULL with a message printed. */
char *read_password(int from_stdin);

#endif
