/* Results for people: a list of rows as an aligned table, times as UTC,
 * everything else as "key: value". --json prints the result as is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tool.h"

#define MAX_COLUMNS 16
#define CELL_MAX 128

static int is_time_key(const char *key)
{
    size_t n = strlen(key);
    return strcmp(key, "since") == 0 || (n > 3 && strcmp(key + n - 3, "_at") == 0);
}

static void cell_text(const char *key, const json_t *v, char *out, size_t len)
{
    if (json_is_string(v))
        snprintf(out, len, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(out, len, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v) && is_time_key(key)) {
        time_t t = (time_t)json_real_value(v);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(out, len, "%Y-%m-%d %H:%M:%SZ", &tm);
    } else if (json_is_real(v))
        snprintf(out, len, "%g", json_real_value(v));
    else if (json_is_true(v))
        snprintf(out, len, "yes");
    else if (json_is_false(v))
        snprintf(out, len, "no");
    else if (json_is_null(v) || !v)
        snprintf(out, len, "-");
    else {
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(out, len, "%s", text ? text : "?");
        free(text);
    }
}

/* Columns: the first row's keys, in their order. */
static void render_table(FILE *out, const json_t *rows)
{
    const json_t *first = json_array_get(rows, 0);
    if (!json_is_object(first)) {
        fprintf(out, "(none)\n");
        return;
    }
    const char *cols[MAX_COLUMNS];
    size_t width[MAX_COLUMNS], n_cols = 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)first, key, v) {
        if (n_cols == MAX_COLUMNS)
            break;
        cols[n_cols] = key;
        width[n_cols++] = strlen(key);
    }
    char cell[CELL_MAX];
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        for (size_t c = 0; c < n_cols; c++) {
            cell_text(cols[c], json_object_get(row, cols[c]), cell, sizeof cell);
            if (strlen(cell) > width[c])
                width[c] = strlen(cell);
        }
    }
    /* The last column unpadded: no trailing blanks. */
    for (size_t c = 0; c < n_cols; c++)
        fprintf(out, "%-*s%s", c + 1 < n_cols ? (int)width[c] : 0, cols[c],
                c + 1 < n_cols ? "  " : "\n");
    json_array_foreach(rows, i, row) {
        for (size_t c = 0; c < n_cols; c++) {
            cell_text(cols[c], json_object_get(row, cols[c]), cell, sizeof cell);
            fprintf(out, "%-*s%s", c + 1 < n_cols ? (int)width[c] : 0, cell,
                    c + 1 < n_cols ? "  " : "\n");
        }
    }
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void render_result(FILE *out, const json_t *result)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)result, key, v) {
        if (json_is_array(v)) {
            if (json_array_size(v) == 0)
                fprintf(out, "no %s\n", key);
            else
                render_table(out, v);
        } else if (json_is_object(v)) {
            /* {name: {fields}}: one line each, by name. */
            size_t n = json_object_size(v), k = 0;
            const char **names = calloc(n ? n : 1, sizeof *names);
            const char *name;
            json_t *fields;
            json_object_foreach(v, name, fields) {
                if (names)
                    names[k++] = name;
            }
            if (names)
                qsort(names, k, sizeof *names, compare_names);
            for (size_t i = 0; names && i < k; i++) {
                name = names[i];
                fields = json_object_get(v, name);
                char cell[CELL_MAX];
                const char *summary = json_string_value(json_object_get(fields, "summary"));
                if (summary) {
                    fprintf(out, "%-16s %s\n", name, summary);
                } else {
                    cell_text(name, fields, cell, sizeof cell);
                    fprintf(out, "%s: %s\n", name, cell);
                }
            }
            free(names);
        } else {
            char cell[CELL_MAX * 8];
            cell_text(key, v, cell, sizeof cell);
            fprintf(out, "%s: %s\n", key, cell);
        }
    }
}
