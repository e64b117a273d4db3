/* Captures what a call writes to stderr, so tests can assert on log lines. */
#ifndef SM_TEST_CAPTURE_H
#define SM_TEST_CAPTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct capture {
    int saved_fd;
    FILE *file;
} capture;

static inline int capture_begin(capture *c)
{
    fflush(stderr);
    c->file = tmpfile();
    if (!c->file)
        return -1;
    c->saved_fd = dup(STDERR_FILENO);
    if (c->saved_fd < 0 || dup2(fileno(c->file), STDERR_FILENO) < 0)
        return -1;
    return 0;
}

/* Restores stderr and returns what was written (malloc'd), also echoing it
 * to the real stderr so failures stay diagnosable. */
static inline char *capture_end(capture *c)
{
    fflush(stderr);
    dup2(c->saved_fd, STDERR_FILENO);
    close(c->saved_fd);
    long n = ftell(c->file);
    char *text = malloc(n > 0 ? (size_t)n + 1 : 1);
    if (!text) {
        fclose(c->file);
        return NULL;
    }
    rewind(c->file);
    size_t got = n > 0 ? fread(text, 1, (size_t)n, c->file) : 0;
    text[got] = '\0';
    fclose(c->file);
    fputs(text, stderr);
    return text;
}

#endif
