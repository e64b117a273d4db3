/* One "<e2e id> <message id>" line per message, appended as messages are
 * shown. The file is rewritten with the newest `limit` entries when it has
 * grown a tenth beyond them, so appends stay cheap. */
#include "seen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files.h"

#define SEEN_ID_MAX 64

typedef struct seen_entry {
    char id[SEEN_ID_MAX + 1];
    long long msg_id;
} seen_entry;

struct seen_store {
    char path[4096];
    size_t limit;
    seen_entry *ring;   /* the newest `limit` entries, oldest at `start` */
    size_t start, count;
    size_t file_lines;
};

static void ring_add(seen_store *s, const char *id, long long msg_id)
{
    size_t at;
    if (s->count < s->limit) {
        at = (s->start + s->count) % s->limit;
        s->count++;
    } else {
        at = s->start;   /* overwrite the oldest */
        s->start = (s->start + 1) % s->limit;
    }
    snprintf(s->ring[at].id, sizeof s->ring[at].id, "%s", id);
    s->ring[at].msg_id = msg_id;
}

static int id_chars_ok(const char *id, size_t len)
{
    if (len == 0 || len > SEEN_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
              || c == '+' || c == '/' || c == '='))
            return 0;
    }
    return 1;
}

int seen_open(const char *path, size_t limit, seen_store **out)
{
    if (limit == 0 || strlen(path) >= sizeof ((seen_store *)0)->path)
        return -1;
    seen_store *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->ring = calloc(limit, sizeof *s->ring);
    if (!s->ring) {
        free(s);
        return -1;
    }
    s->limit = limit;
    memcpy(s->path, path, strlen(path) + 1);
    char *data = NULL;
    size_t len = 0;
    int r = files_read(path, (limit + limit / 10 + 16) * (SEEN_ID_MAX + 24), &data, &len);
    if (r < 0) {
        free(s->ring);
        free(s);
        return -1;
    }
    if (r == 0) {
        /* Lines that do not parse are skipped: the file is ours, but a
         * torn last line after a crash must not lock the user out. */
        for (char *line = data; *line;) {
            size_t n = strcspn(line, "\n");
            char *next = line + n + (line[n] == '\n' ? 1 : 0);
            line[n] = '\0';
            char *sp = strchr(line, ' ');
            if (sp) {
                *sp = '\0';
                char *end = NULL;
                long long msg_id = strtoll(sp + 1, &end, 10);
                if (id_chars_ok(line, strlen(line)) && end && *end == '\0' && end != sp + 1)
                    ring_add(s, line, msg_id);
            }
            s->file_lines++;
            line = next;
        }
        free(data);
    }
    *out = s;
    return 0;
}

static int compact(seen_store *s)
{
    size_t cap = s->count * (SEEN_ID_MAX + 24) + 1;
    char *buf = malloc(cap);
    if (!buf)
        return -1;
    size_t used = 0;
    for (size_t i = 0; i < s->count; i++) {
        const seen_entry *e = &s->ring[(s->start + i) % s->limit];
        int n = snprintf(buf + used, cap - used, "%s %lld\n", e->id, e->msg_id);
        if (n < 0 || (size_t)n >= cap - used) {
            free(buf);
            return -1;
        }
        used += (size_t)n;
    }
    int rc = files_write(s->path, buf, used);
    free(buf);
    if (rc == 0)
        s->file_lines = s->count;
    return rc;
}

int seen_check(seen_store *s, const char *e2e_id, long long msg_id, seen_result *result)
{
    size_t id_len = strlen(e2e_id);
    if (!id_chars_ok(e2e_id, id_len))
        return -1;
    for (size_t i = 0; i < s->count; i++) {
        const seen_entry *e = &s->ring[(s->start + i) % s->limit];
        if (strcmp(e->id, e2e_id) == 0) {
            *result = e->msg_id == msg_id ? SEEN_SAME : SEEN_REPLAY;
            return 0;
        }
    }
    ring_add(s, e2e_id, msg_id);
    *result = SEEN_NEW;
    char line[SEEN_ID_MAX + 32];
    int n = snprintf(line, sizeof line, "%s %lld\n", e2e_id, msg_id);
    if (n < 0 || (size_t)n >= sizeof line)
        return -1;
    if (files_append(s->path, line, (size_t)n) != 0)
        return -1;
    s->file_lines++;
    if (s->file_lines > s->limit + s->limit / 10)
        return compact(s);
    return 0;
}

size_t seen_count(const seen_store *s) { return s->count; }

void seen_close(seen_store *s)
{
    if (!s)
        return;
    free(s->ring);
    free(s);
}
