/* web_path: request path -> file under the web root, opening beneath the
 * root without links, media types and ETags. The lws parser in front of
 * it already folds "/../" and "//"; these tests give web_path what a
 * different parser (or none) might pass, so the rules hold on their own. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safemessenger/testhost_suite.h"
#include "web_path.h"

static int resolve(const char *path, char *out, size_t len)
{
    return web_path_resolve(path, strlen(path), out, len);
}

static void paths_map_to_files_under_the_root(void)
{
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"/", "index.html"},
        {"/index.html", "index.html"},
        {"/app.js", "app.js"},
        {"/a/b/c.css", "a/b/c.css"},
        {"/sub/", "sub/index.html"},
        {"/a/b/", "a/b/index.html"},
        {"/%2e%2e", "%2e%2e"}, /* already decoded once: a literal name */
        {"/name with space.txt", "name with space.txt"},
        {"/a..b", "a..b"},
        {"/caf\xc3\xa9.html", "caf\xc3\xa9.html"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char out[WEB_PATH_MAX + 1];
        CU_ASSERT_EQUAL(resolve(ok[i].in, out, sizeof out), 0);
        CU_ASSERT_STRING_EQUAL(out, ok[i].out);
    }
}

static void escaping_paths_are_refused(void)
{
    static const char *const bad[] = {
        "", "index.html", "../x", "/..", "/../x", "/a/../x", "/a/..", "/.", "/./x", "/a/./b",
        "/...", "/.hidden", "/a/.git/config", "//etc/passwd", "/a//b", "/a\\..\\b", "/\\x",
        "/a\tb", "/a\rb", "/a\nb", "/a\x7f", "/a\x01",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char out[WEB_PATH_MAX + 1];
        int rc = resolve(bad[i], out, sizeof out);
        if (rc == 0)
            fprintf(stderr, "accepted '%s' as '%s'\n", bad[i], out);
        CU_ASSERT_EQUAL(rc, -1);
    }
}

static void a_nul_anywhere_is_refused(void)
{
    char out[WEB_PATH_MAX + 1];
    CU_ASSERT_EQUAL(web_path_resolve("/a\0b", 4, out, sizeof out), -1);
    CU_ASSERT_EQUAL(web_path_resolve("/index.html\0.png", 16, out, sizeof out), -1);
    CU_ASSERT_EQUAL(web_path_resolve("/\0", 2, out, sizeof out), -1);
    CU_ASSERT_EQUAL(web_path_resolve("/a", 2, out, sizeof out), 0);
}

static void lengths_are_bounded(void)
{
    char name[NAME_MAX + 3], out[WEB_PATH_MAX + 1];
    name[0] = '/';
    memset(name + 1, 'a', NAME_MAX);
    name[NAME_MAX + 1] = '\0';
    CU_ASSERT_EQUAL(resolve(name, out, sizeof out), 0);
    name[NAME_MAX + 1] = 'a';
    name[NAME_MAX + 2] = '\0';
    CU_ASSERT_EQUAL(resolve(name, out, sizeof out), -1);
    /* Too long for the buffer, or for WEB_PATH_MAX whatever the buffer. */
    char small[8];
    CU_ASSERT_EQUAL(resolve("/abcdefgh", small, sizeof small), -1);
    CU_ASSERT_EQUAL(resolve("/sub/", small, sizeof small), -1);
    CU_ASSERT_EQUAL(resolve("/abcdefg", small, sizeof small), 0);
    size_t n = WEB_PATH_MAX + 10;
    char *longpath = malloc(n + 1), *big = malloc(2 * n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(longpath);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    for (size_t i = 0; i < n; i++)
        longpath[i] = i % 100 == 0 ? '/' : 'x';
    longpath[n] = '\0';
    CU_ASSERT_EQUAL(resolve(longpath, big, 2 * n), -1);
    free(longpath);
    free(big);
}

/* ---- opening beneath the root ----------------------------------------- */

static char tmp[64];

static void put(const char *rel, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmp, rel);
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
}

static void only_regular_files_without_links_open(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/sm-webpath-XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tmp));
    char p[256];
    snprintf(p, sizeof p, "%s/root", tmp);
    CU_ASSERT_EQUAL_FATAL(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/root/dir", tmp);
    CU_ASSERT_EQUAL_FATAL(mkdir(p, 0700), 0);
    put("secret", "secret");
    put("root/file.txt", "file");
    put("root/dir/inner.txt", "inner");
    snprintf(p, sizeof p, "%s/root/link", tmp);
    CU_ASSERT_EQUAL_FATAL(symlink("../secret", p), 0);
    snprintf(p, sizeof p, "%s/root/inlink", tmp);
    CU_ASSERT_EQUAL_FATAL(symlink("file.txt", p), 0); /* even one inside the root */
    snprintf(p, sizeof p, "%s/root/dirlink", tmp);
    CU_ASSERT_EQUAL_FATAL(symlink("dir", p), 0);
    snprintf(p, sizeof p, "%s/root/fifo", tmp);
    CU_ASSERT_EQUAL_FATAL(mkfifo(p, 0600), 0);

    snprintf(p, sizeof p, "%s/root", tmp);
    int root = open(p, O_RDONLY | O_DIRECTORY);
    CU_ASSERT_TRUE_FATAL(root >= 0);
    int fd = -1;
    struct stat st;
    CU_ASSERT_EQUAL(web_open_beneath(root, "file.txt", &fd, &st), 0);
    CU_ASSERT_EQUAL(st.st_size, 4);
    close(fd);
    CU_ASSERT_EQUAL(web_open_beneath(root, "dir/inner.txt", &fd, &st), 0);
    CU_ASSERT_EQUAL(st.st_size, 5);
    close(fd);
    static const char *const refused[] = {"link", "inlink", "dirlink/inner.txt", "dir", "fifo",
                                          "nope", "file.txt/x", "dir/", "../secret", "dir/../file.txt",
                                          "./file.txt", ""};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        errno = 0;
        fd = -1;
        int rc = web_open_beneath(root, refused[i], &fd, &st);
        if (rc == 0) {
            fprintf(stderr, "opened '%s'\n", refused[i]);
            close(fd);
        }
        CU_ASSERT_EQUAL(rc, -1);
        CU_ASSERT_EQUAL(errno, ENOENT);
    }
    close(root);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -r -- '%s'", tmp);
    CU_ASSERT_EQUAL(system(cmd), 0);
}

static void media_types_and_validators(void)
{
    CU_ASSERT_STRING_EQUAL(web_mime_type("index.html"), "text/html; charset=utf-8");
    CU_ASSERT_STRING_EQUAL(web_mime_type("a/b/app.JS"), "text/javascript; charset=utf-8");
    CU_ASSERT_STRING_EQUAL(web_mime_type("x.css"), "text/css; charset=utf-8");
    CU_ASSERT_STRING_EQUAL(web_mime_type("x.wasm"), "application/wasm");
    CU_ASSERT_STRING_EQUAL(web_mime_type("noext"), "application/octet-stream");
    CU_ASSERT_STRING_EQUAL(web_mime_type("dir.js/noext"), "application/octet-stream");
    CU_ASSERT_STRING_EQUAL(web_mime_type("x.js.gz"), "application/octet-stream");

    struct stat a, b;
    memset(&a, 0, sizeof a);
    a.st_size = 10;
    a.st_mtim.tv_sec = 1000;
    a.st_ino = 7;
    b = a;
    b.st_mtim.tv_nsec = 1;
    char ea[64], eb[64];
    CU_ASSERT_EQUAL(web_etag(&a, ea, sizeof ea), 0);
    CU_ASSERT_EQUAL(web_etag(&b, eb, sizeof eb), 0);
    CU_ASSERT_STRING_NOT_EQUAL(ea, eb);
    CU_ASSERT_EQUAL(ea[0], '"');
    CU_ASSERT_EQUAL(ea[strlen(ea) - 1], '"');
    char small[4];
    CU_ASSERT_EQUAL(web_etag(&a, small, sizeof small), -1);

    char list[200];
    snprintf(list, sizeof list, "\"x\", W/%s", ea);
    CU_ASSERT_TRUE(web_etag_matches(ea, ea));
    CU_ASSERT_TRUE(web_etag_matches(list, ea));
    CU_ASSERT_TRUE(web_etag_matches("*", ea));
    CU_ASSERT_FALSE(web_etag_matches(list, eb));
    CU_ASSERT_FALSE(web_etag_matches("", ea));
    CU_ASSERT_FALSE(web_etag_matches("\"", ea));
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(paths_map_to_files_under_the_root),
        SM_TEST(escaping_paths_are_refused),
        SM_TEST(a_nul_anywhere_is_refused),
        SM_TEST(lengths_are_bounded),
        SM_TEST(only_regular_files_without_links_open),
        SM_TEST(media_types_and_validators),
        SM_TEST_END,
    };
    return sm_test_run("web_path", cases, NULL, NULL);
}
