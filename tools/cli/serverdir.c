/* Per-server directories named by fingerprint, and the move from the old
 * per-host:port layout. rename() keeps the files' modes (0600) and is
 * atomic per file, so an interrupted migration leaves every file whole in
 * one of the two places and the next run finishes it. */
#include "serverdir.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "files.h"

#define FP_PREFIX "sha256:"
#define FP_HEX 64

int serverdir_name(const char *fingerprint, char *out, size_t out_len)
{
    size_t plen = strlen(FP_PREFIX);
    if (strncmp(fingerprint, FP_PREFIX, plen) != 0 || strlen(fingerprint) != plen + FP_HEX)
        return -1;
    for (size_t i = plen; i < plen + FP_HEX; i++) {
        char c = fingerprint[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return -1;
    }
    int n = snprintf(out, out_len, "sha256_%s", fingerprint + plen);
    return n < 0 || (size_t)n >= out_len ? -1 : 0;
}

static int is_dir(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static unsigned count_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    unsigned n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* File by file into an existing directory. */
static int merge(const char *src, const char *dst, serverdir_moved *moved)
{
    DIR *d = opendir(src);
    if (!d)
        return -1;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;   /* ".", "..", and the temporary files of files_write */
        char from[4096], to[4096];
        struct stat st;
        if (files_join(from, sizeof from, src, e->d_name, NULL) != 0
            || files_join(to, sizeof to, dst, e->d_name, NULL) != 0) {
            rc = -1;
            continue;
        }
        if (lstat(to, &st) == 0) {
            moved->conflicts++;
            continue;
        }
        if (rename(from, to) != 0)
            rc = -1;
        else
            moved->files++;
    }
    closedir(d);
    (void)rmdir(src);   /* only succeeds once empty: conflicts keep it */
    return rc;
}

int serverdir_migrate(const char *config_dir, const char *from, const char *to,
                      serverdir_moved *moved)
{
    static const char *const kinds[] = {"keys", "contacts", "seen"};
    if (strcmp(from, to) == 0)
        return 0;
    int rc = 0;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        char src[4096], dst[4096];
        if (files_join(src, sizeof src, config_dir, kinds[i], from) != 0
            || files_join(dst, sizeof dst, config_dir, kinds[i], to) != 0) {
            rc = -1;
            continue;
        }
        if (!is_dir(src))
            continue;
        if (!is_dir(dst)) {
            unsigned n = count_files(src);
            if (rename(src, dst) == 0) {
                moved->files += n;
                continue;
            }
            if (errno != EEXIST && errno != ENOTEMPTY) {
                rc = -1;
                continue;
            }
        }
        if (merge(src, dst, moved) != 0)
            rc = -1;
    }
    return rc;
}
