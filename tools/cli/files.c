/* Files under the configuration directory. */
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "write_all.h"

int files_default_config_dir(char *out, size_t out_len)
{
    const char *xdg = getenv("XDG_CONFIG_HOME");
    int n;
    /* The XDG spec says a relative $XDG_CONFIG_HOME is invalid and ignored. */
    if (xdg && xdg[0] == '/') {
        n = snprintf(out, out_len, "%s/safemessenger", xdg);
    } else {
        const char *home = getenv("HOME");
        if (!home || home[0] != '/')
            return -1;
        n = snprintf(out, out_len, "%s/.config/safemessenger", home);
    }
    return n < 0 || (size_t)n >= out_len ? -1 : 0;
}

int files_join(char *out, size_t out_len, const char *a, const char *b, const char *c)
{
    int n = c ? snprintf(out, out_len, "%s/%s/%s", a, b, c) : snprintf(out, out_len, "%s/%s", a, b);
    return n < 0 || (size_t)n >= out_len ? -1 : 0;
}

int files_mkdirs(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return -1;
        buf[i] = saved;
    }
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

int files_mkdirs_parent(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, path, len + 1);
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf)
        return 0;
    *slash = '\0';
    return files_mkdirs(buf);
}

int files_read(const char *path, size_t max, char **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 1 : -1;
    char *buf = NULL;
    size_t used = 0, cap = 0;
    for (;;) {
        if (used == cap) {
            if (cap > max)
                goto fail;
            size_t ncap = cap ? cap * 2 : 4096;
            char *p = realloc(buf, ncap + 1);
            if (!p)
                goto fail;
            buf = p;
            cap = ncap;
        }
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto fail;
        if (n == 0)
            break;
        used += (size_t)n;
    }
    if (used > max)
        goto fail;
    if (!buf && !(buf = malloc(1)))
        goto fail;
    buf[used] = '\0';
    close(fd);
    *data = buf;
    *len = used;
    return 0;
fail:
    free(buf);
    close(fd);
    return -1;
}

/* Writes data into a fresh temporary file beside path; its name goes to tmp. */
static int write_temp(const char *path, const void *data, size_t len, char *tmp, size_t tmp_len)
{
    int n = snprintf(tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= tmp_len)
        return -1;
    (void)unlink(tmp);   /* a leftover of a crashed run with the same pid */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (tool_write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    if (close(fd) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int files_write(const char *path, const void *data, size_t len)
{
    char tmp[4200];
    if (files_mkdirs_parent(path) != 0 || write_temp(path, data, len, tmp, sizeof tmp) != 0)
        return -1;
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int files_write_new(const char *path, const void *data, size_t len)
{
    char tmp[4200];
    if (files_mkdirs_parent(path) != 0 || write_temp(path, data, len, tmp, sizeof tmp) != 0)
        return -1;
    /* link() fails with EEXIST instead of replacing: an existing private
     * key is never overwritten. */
    int rc = link(tmp, path) == 0 ? 0 : errno == EEXIST ? 1 : -1;
    unlink(tmp);
    return rc;
}

int files_append(const char *path, const void *data, size_t len)
{
    if (files_mkdirs_parent(path) != 0)
        return -1;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    int rc = tool_write_all(fd, data, len);
    if (close(fd) != 0)
        rc = -1;
    return rc;
}

int files_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 3 || n > 32)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                 || c == '_' || c == '.' || c == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

int files_lower(const char *in, char *out, size_t out_len)
{
    size_t n = strlen(in);
    if (n >= out_len)
        return -1;
    for (size_t i = 0; i <= n; i++)
        out[i] = (in[i] >= 'A' && in[i] <= 'Z') ? (char)(in[i] - 'A' + 'a') : in[i];
    return 0;
}
