/* The server's CPU per thread group (see bench.h): issue 11 asks what the
 * logic thread costs per delivery against the whole server, and only the
 * per-thread accounts in /proc/<pid>/task/ say that. */
#include "bench.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const group_names[TGROUP_COUNT] = {"sm-logic", "sm-io", "sm-worker", "other"};

const char *thread_group_name(thread_group g)
{
    return g < TGROUP_COUNT ? group_names[g] : "other";
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

thread_group thread_group_of(const char *comm, int main_thread, int named_logic)
{
    if (strcmp(comm, "sm-logic") == 0)
        return TGROUP_LOGIC;
    if (starts_with(comm, "sm-io-"))
        return TGROUP_IO;
    if (starts_with(comm, "sm-worker-"))
        return TGROUP_WORKER;
    /* Before the threads had names the main thread ran everything the
     * logic thread now runs. */
    if (main_thread && !named_logic)
        return TGROUP_LOGIC;
    return TGROUP_OTHER;
}

int stat_text_ticks(const char *text, uint64_t *out)
{
    const char *p = strrchr(text, ')');
    if (!p || p[1] != ' ')
        return -1;
    unsigned long long ut = 0, st = 0;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    *out = ut + st;
    return 0;
}

/* The first line of a small file, without its newline. */
static int read_line(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return n > 0 ? 0 : -1;
}

int threads_take(long pid, thread_snapshot *out)
{
    char path[96];
    snprintf(path, sizeof path, "/proc/%ld/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    out->n = out->dropped = 0;
    int named_logic = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end = NULL;
        long tid = strtol(e->d_name, &end, 10);
        if (tid <= 0 || *end != '\0')
            continue;
        if (out->n == BENCH_MAX_THREADS) {
            out->dropped++;
            continue;
        }
        thread_sample *t = &out->t[out->n];
        char stat[1024];
        snprintf(path, sizeof path, "/proc/%ld/task/%ld/comm", pid, tid);
        if (read_line(path, t->comm, sizeof t->comm) != 0)
            continue;   /* the thread ended between readdir and here */
        snprintf(path, sizeof path, "/proc/%ld/task/%ld/stat", pid, tid);
        if (read_line(path, stat, sizeof stat) != 0 || stat_text_ticks(stat, &t->ticks) != 0)
            continue;
        t->tid = tid;
        named_logic |= strcmp(t->comm, "sm-logic") == 0;
        out->n++;
    }
    closedir(d);
    /* Grouped once every name is known: the main thread's group depends
     * on whether another thread is sm-logic. */
    for (unsigned i = 0; i < out->n; i++)
        out->t[i].group = thread_group_of(out->t[i].comm, out->t[i].tid == pid, named_logic);
    return out->n > 0 ? 0 : -1;
}

static uint64_t ticks_before(const thread_snapshot *a, long tid)
{
    for (unsigned i = 0; i < a->n; i++)
        if (a->t[i].tid == tid)
            return a->t[i].ticks;
    return 0;
}

json_t *threads_json(const thread_snapshot *a, const thread_snapshot *b)
{
    long hz = sysconf(_SC_CLK_TCK);
    double tick = 1.0 / (double)(hz > 0 ? hz : 100);
    double group[TGROUP_COUNT] = {0}, total = 0;
    json_t *o = json_object(), *names = json_object();
    if (!o || !names) {
        json_decref(o);
        json_decref(names);
        return NULL;
    }
    for (unsigned i = 0; i < b->n; i++) {
        const thread_sample *t = &b->t[i];
        uint64_t before = ticks_before(a, t->tid);
        double s = t->ticks > before ? (double)(t->ticks - before) * tick : 0.0;
        group[t->group] += s;
        total += s;
        json_t *v = json_object_get(names, t->comm);
        json_object_set_new(names, t->comm, json_real(s + (v ? json_real_value(v) : 0.0)));
    }
    for (int g = 0; g < TGROUP_COUNT; g++)
        json_object_set_new(o, group_names[g], json_real(group[g]));
    json_object_set_new(o, "total", json_real(total));
    json_object_set_new(o, "threads", names);
    if (a->dropped || b->dropped)
        json_object_set_new(o, "threads_not_counted", json_integer(a->dropped + b->dropped));
    return o;
}
