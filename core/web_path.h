/* The static web client's files: which file a request path names, opening
 * it without leaving the web root, and its media type. No I/O on the
 * network here, so the rules are unit-tested on their own (core/web.c
 * serves the result). */
#ifndef SM_CORE_WEB_PATH_H
#define SM_CORE_WEB_PATH_H

#include <stddef.h>
#include <sys/stat.h>

/* Longest relative path looked up under the root (bytes, without NUL). */
#define WEB_PATH_MAX 1024

/* The file a request path names, relative to the root, into out:
 * "/" -> "index.html", "/a/b.js" -> "a/b.js", "/a/" -> "a/index.html".
 * path is what libwebsockets hands over: already %XX-decoded once (and
 * never decoded again here, so "%252e" stays the name "%2e"), len its
 * length including any decoded NUL. Refused (-1): a NUL, a byte below
 * 0x20 or 0x7f, a backslash, a path not starting with '/', an empty
 * segment inside the path ("//"), any segment starting with '.' ("..",
 * ".", ".git"), a segment longer than NAME_MAX, or a result that does not
 * fit out (or WEB_PATH_MAX). Returns 0 or -1. */
int web_path_resolve(const char *path, size_t len, char *out, size_t out_len);

/* Opens rel (from web_path_resolve) beneath the directory dirfd, refusing
 * "." and ".." components and following no symbolic link on the way (a link anywhere in the path is
 * refused, so nothing outside the root is reachable through one), and
 * only if it is a regular file. *fd gets the descriptor (O_CLOEXEC) and
 * *st its attributes. Returns 0, or -1 with errno (ENOENT for anything
 * that is not a regular file reachable that way). */
int web_open_beneath(int dirfd, const char *rel, int *fd, struct stat *st);

/* The Content-Type for a file name, by its extension (case-insensitive);
 * text types carry "; charset=utf-8". Unknown: application/octet-stream. */
const char *web_mime_type(const char *name);

/* A strong validator for the file: its size, modification time and inode,
 * quoted, into out (at least 64 bytes). Returns 0 or -1. */
int web_etag(const struct stat *st, char *out, size_t out_len);

/* Whether an If-None-Match header value lists etag (or is "*"); weak
 * comparison, as RFC 9110 13.1.2 asks for this header. */
int web_etag_matches(const char *if_none_match, const char *etag);

#endif
