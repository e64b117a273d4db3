#include "web_path.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int web_path_resolve(const char *path, size_t len, char *out, size_t out_len)
{
    if (!path || !out || out_len == 0 || len == 0 || path[0] != '/')
        return -1;
    if (out_len > WEB_PATH_MAX + 1)
        out_len = WEB_PATH_MAX + 1;
    size_t o = 0;
    const char *p = path + 1, *end = path + len;
    while (p < end) {
        const char *seg = p;
        while (p < end && *p != '/')
            p++;
        size_t n = (size_t)(p - seg);
        int last = p == end;
        if (n == 0) {
            /* Only a trailing slash may end in an empty segment: lws folds
             * "//" away, so one here did not come through its parser. */
            if (!last)
                return -1;
            break;
        }
        /* ".." and "." never, and no hidden files (.git, .htaccess) either. */
        if (seg[0] == '.' || n > NAME_MAX)
            return -1;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)seg[i];
            if (c < 0x20 || c == 0x7f || c == '\\')
                return -1;
        }
        size_t need = (o ? 1 : 0) + n;
        if (o + need + 1 > out_len)
            return -1;
        if (o)
            out[o++] = '/';
        memcpy(out + o, seg, n);
        o += n;
        if (!last)
            p++; /* the '/' */
        else
            break;
    }
    /* "/" and "/dir/" name the directory's index. */
    if (o == 0 || path[len - 1] == '/') {
        static const char index[] = "index.html";
        size_t need = (o ? 1 : 0) + sizeof index - 1;
        if (o + need + 1 > out_len)
            return -1;
        if (o)
            out[o++] = '/';
        memcpy(out + o, index, sizeof index - 1);
        o += sizeof index - 1;
    }
    out[o] = '\0';
    return 0;
}

int web_open_beneath(int dirfd, const char *rel, int *fd, struct stat *st)
{
    char name[NAME_MAX + 1];
    int dir = dirfd;
    const char *p = rel;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        /* web_path_resolve never yields "." or "..": refused here as well,
         * so that this function alone cannot climb out of dirfd. */
        if (n == 0 || n > NAME_MAX || (p[0] == '.' && (n == 1 || (n == 2 && p[1] == '.')))) {
            if (dir != dirfd)
                close(dir);
            errno = ENOENT;
            return -1;
        }
        memcpy(name, p, n);
        name[n] = '\0';
        /* O_NOFOLLOW on every component: a link is refused wherever it is.
         * O_NONBLOCK: a FIFO planted in the root must not stall the loop in
         * open(); only regular files pass the fstat below anyway. */
        int flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY |
                    (slash ? O_DIRECTORY : O_NONBLOCK);
        int next = openat(dir, name, flags);
        int saved = errno;
        if (dir != dirfd)
            close(dir);
        if (next < 0) {
            errno = saved == ELOOP || saved == ENOTDIR ? ENOENT : saved;
            return -1;
        }
        if (!slash) {
            if (fstat(next, st) != 0 || !S_ISREG(st->st_mode)) {
                close(next);
                errno = ENOENT;
                return -1;
            }
            *fd = next;
            return 0;
        }
        dir = next;
        p = slash + 1;
    }
}

typedef struct mime {
    const char *ext;
    const char *type;
} mime;

/* What the web client is made of; anything else is served as bytes, which
 * with nosniff a browser will not run or render. */
static const mime mimes[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"webmanifest", "application/manifest+json"},
    {"txt", "text/plain; charset=utf-8"},
    {"png", "image/png"},
    {"svg", "image/svg+xml"},
    {"ico", "image/vnd.microsoft.icon"},
    {"wasm", "application/wasm"},
    {"woff2", "font/woff2"},
};

const char *web_mime_type(const char *name)
{
    const char *slash = strrchr(name, '/');
    const char *base = slash ? slash + 1 : name;
    const char *dot = strrchr(base, '.');
    if (dot && dot != base)
        for (size_t i = 0; i < sizeof mimes / sizeof mimes[0]; i++)
            if (strcasecmp(dot + 1, mimes[i].ext) == 0)
                return mimes[i].type;
    return "application/octet-stream";
}

int web_etag(const struct stat *st, char *out, size_t out_len)
{
    int n = snprintf(out, out_len, "\"%llx-%llx.%lx-%llx\"", (unsigned long long)st->st_size,
                     (unsigned long long)st->st_mtim.tv_sec, (unsigned long)st->st_mtim.tv_nsec,
                     (unsigned long long)st->st_ino);
    return n > 0 && (size_t)n < out_len ? 0 : -1;
}

int web_etag_matches(const char *if_none_match, const char *etag)
{
    const char *p = if_none_match;
    size_t elen = strlen(etag);
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *stop = p;
        while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
            stop--;
        if (stop - start == 1 && *start == '*')
            return 1;
        if (stop - start > 2 && start[0] == 'W' && start[1] == '/')
            start += 2;
        if ((size_t)(stop - start) == elen && memcmp(start, etag, elen) == 0)
            return 1;
    }
    return 0;
}
