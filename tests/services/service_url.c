#include "service_url.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int service_url_read(const char *env, char *buf, size_t len)
{
    const char *path = getenv(env);
    if (!path || !*path) {
        fprintf(stderr, "%s is not set: run this suite through ctest, which starts the service\n",
                env);
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: %s (did the service fixture start?)\n", path, strerror(errno));
        return -1;
    }
    int rc = -1;
    if (!fgets(buf, (int)len, f)) {
        fprintf(stderr, "%s: empty\n", path);
        goto out;
    }
    size_t n = strcspn(buf, "\n");
    if (buf[n] != '\n') {
        int next = fgetc(f);
        if (next != EOF && next != '\n') {
            fprintf(stderr, "%s: longer than %zu bytes\n", path, len - 1);
            goto out;
        }
    }
    buf[n] = '\0';
    if (n == 0) {
        fprintf(stderr, "%s: empty\n", path);
        goto out;
    }
    rc = 0;
out:
    fclose(f);
    return rc;
}
