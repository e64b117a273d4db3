/* safemessenger-admin import-sqlite: a stopped SQLite deployment's rows
 * into the PostgreSQL database the configuration names. Never through the
 * admin socket: the copy needs a database no server has used, so there is
 * no server to ask. */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "core.h"
#include "storage_import.h"
#include "tool.h"

typedef struct tally {
    json_t *tables; /* --json: {"table": rows, ...} */
    int64_t rows;
    int as_json;
} tally;

static void table_done(const char *table, int64_t rows, void *arg)
{
    tally *t = arg;
    t->rows += rows;
    if (t->as_json)
        json_object_set_new(t->tables, table, json_integer((json_int_t)rows));
    else
        printf("%-32s %lld\n", table, (long long)rows);
}

int import_sqlite(const char *config_file, const char *sqlite_path, int as_json)
{
    config *cfg = NULL;
    if (config_load(config_file, &cfg) != 0) {
        fprintf(stderr, "safemessenger-admin: cannot read the configuration %s\n", config_file);
        return 1;
    }
    int pg = strcmp(config_server(cfg)->backend, "postgresql") == 0;
    config_free(cfg);
    if (!pg) {
        fprintf(stderr, "safemessenger-admin: import-sqlite copies into PostgreSQL: %s must set "
                        "storage.backend = \"postgresql\" and storage.postgresql\n",
                config_file);
        return 1;
    }
    core_options o = {
        .config_file = config_file,
        .port = -1,
        .load_plugins = 1,
        .workers = 1,
        .quiet = 1,
    };
    if (core_start(&o) != 0) {
        fprintf(stderr, "safemessenger-admin: cannot open the PostgreSQL database and the "
                        "plugins (see above)\n");
        return 1;
    }
    tally t = {.tables = json_object(), .as_json = as_json};
    char err[768];
    int rc = t.tables ? storage_import_sqlite(g_core.db, sqlite_path, table_done, &t, err,
                                              sizeof err)
                      : SM_ENOMEM;
    core_stop();
    if (rc != SM_OK) {
        fprintf(stderr, "safemessenger-admin: %s: %s\n", sqlite_path,
                rc == SM_ENOMEM && !t.tables ? "out of memory" : err);
        json_decref(t.tables);
        return 1;
    }
    if (as_json) {
        json_t *out = json_pack("{s:o, s:I}", "tables", t.tables, "rows", (json_int_t)t.rows);
        char *text = out ? json_dumps(out, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
        if (text)
            puts(text);
        free(text);
        json_decref(out);
    } else {
        printf("copied %lld rows into PostgreSQL; start the server with the same key file\n",
               (long long)t.rows);
        json_decref(t.tables);
    }
    return 0;
}
