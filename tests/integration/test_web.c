/* The web client's static files served by the real server: the index at
 * /, media types, security and cache headers, HEAD and 304, 405, no
 * directory listing, and every way out of web.root refused (encoded "..",
 * double encoding, NUL, backslashes, absolute paths, symbolic links).
 * Requests go over raw sockets so each URI arrives exactly as written.
 * The web root is a fixture tree of this suite beside a "secret" file
 * that no request may reach. */
#define _GNU_SOURCE /* nftw's FTW_PHYS */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

#define SECRET "TOP-SECRET-OUTSIDE-THE-ROOT"
#define INDEX_HTML "<!doctype html><title>fixture index</title>\n"
#define BIG_BYTES (1024 * 1024 + 123)

static harness_server srv;
static char fixture[256]; /* holds root/ and secret.txt */

/* ---- fixtures ---------------------------------------------------------- */

static int write_file(const char *rel, const char *text, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fixture, rel);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = fwrite(text, 1, len, f);
    return fclose(f) == 0 && n == len ? 0 : -1;
}

static int write_text(const char *rel, const char *text)
{
    return write_file(rel, text, strlen(text));
}

static int make_dir(const char *rel)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fixture, rel);
    return mkdir(path, 0755);
}

static int make_link(const char *target, const char *rel)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fixture, rel);
    return symlink(target, path);
}

static char *big_content(void)
{
    char *b = malloc(BIG_BYTES);
    if (b)
        for (size_t i = 0; i < BIG_BYTES; i++)
            b[i] = (char)('a' + (i * 7 + i / 4096) % 26);
    return b;
}

static int make_fixture(void)
{
    snprintf(fixture, sizeof fixture, "/tmp/sm-web-XXXXXX");
    if (!mkdtemp(fixture))
        return -1;
    char *big = big_content();
    int rc = !big || make_dir("root") || make_dir("root/sub") || make_dir("root/empty") ||
             make_dir("root/%2e%2e") || make_dir("outside") ||
             write_text("secret.txt", SECRET "\n") || write_text("outside/secret.txt", SECRET) ||
             write_text("root/index.html", INDEX_HTML) ||
             write_text("root/app.js", "console.log('fixture');\n") ||
             write_text("root/mod.mjs", "export const x = 1;\n") ||
             write_text("root/style.css", "body { margin: 0; }\n") ||
             write_text("root/data.json", "{\"a\": 1}\n") ||
             write_text("root/image.png", "\x89PNG\r\n") ||
             write_text("root/icon.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n") ||
             write_text("root/favicon.ico", "ico") || write_text("root/code.wasm", "\0asm") ||
             write_text("root/notes.txt", "notes\n") ||
             write_text("root/app.webmanifest", "{}\n") ||
             write_text("root/blob.xyz", "unknown\n") ||
             write_text("root/UPPER.HTML", "<p>upper</p>\n") ||
             write_text("root/sub/index.html", "<p>sub index</p>\n") ||
             write_text("root/sub/page.html", "<p>sub page</p>\n") ||
             write_text("root/%2e%2e/x.txt", "literal percent directory\n") ||
             write_text("root/.hidden", "hidden\n") ||
             write_text("root/healthz", "a file must not shadow /healthz\n") ||
             write_file("root/big.bin", big, BIG_BYTES) ||
             make_link("../secret.txt", "root/link.txt") ||
             make_link("../outside", "root/linkdir") ||
             make_link("/etc/passwd", "root/passwd");
    free(big);
    return rc ? -1 : 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_fixture(void)
{
    /* FTW_PHYS: the links are removed, never followed. */
    if (fixture[0] && nftw(fixture, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "cannot remove %s: %s\n", fixture, strerror(errno));
    fixture[0] = '\0';
}

static int init(void)
{
    if (make_fixture() != 0) {
        fprintf(stderr, "cannot create the fixture web root in %s\n", fixture);
        return -1;
    }
    char config[1024];
    snprintf(config, sizeof config, "web = { enabled = true; root = \"%s/root\"; };\n", fixture);
    return harness_start(&srv, config);
}

static int fini(void)
{
    int rc = harness_cleanup(&srv);
    remove_fixture();
    return rc;
}

/* ---- a raw HTTP client ------------------------------------------------- */

typedef struct response {
    char *raw;          /* everything read, NUL-terminated */
    size_t len;
    int status;         /* 0: no status line (closed without an answer) */
    const char *body;   /* into raw, after the blank line (or raw + len) */
    size_t body_len;
} response;

static void response_free(response *r)
{
    free(r->raw);
    memset(r, 0, sizeof *r);
}

/* Sends req as it is and reads until the server closes (or 5 s of
 * silence). Returns 0 or -1 (no connection, or no memory). */
static int exchange(int port, const char *req, size_t req_len, response *out)
{
    memset(out, 0, sizeof *out);
    size_t got = 0;
    char *buf = harness_http_exchange(port, NULL, req, req_len, 5000, &got);
    if (!buf)
        return -1;
    out->raw = buf;
    out->len = got;
    int major, minor;
    if (sscanf(buf, "HTTP/%d.%d %d", &major, &minor, &out->status) != 3)
        out->status = 0;
    const char *blank = strstr(buf, "\r\n\r\n");
    out->body = blank ? blank + 4 : buf + got;
    out->body_len = (size_t)(buf + got - out->body);
    return 0;
}

/* method path, with Host and Connection: close (and extra headers). */
static int request(const char *method, const char *path, const char *extra, response *out)
{
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s\r\n", method,
                     path, srv.port, extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof req)
        return -1;
    return exchange(srv.port, req, (size_t)n, out);
}

/* The value of a header of r (case-insensitive name) into out; 0 or -1. */
static int header(const response *r, const char *name, char *out, size_t out_len)
{
    size_t nlen = strlen(name);
    const char *p = strstr(r->raw, "\r\n");
    while (p && p < r->body) {
        p += 2;
        if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t n = e ? (size_t)(e - v) : strlen(v);
            if (n >= out_len)
                return -1;
            memcpy(out, v, n);
            out[n] = '\0';
            return 0;
        }
        p = strstr(p, "\r\n");
    }
    return -1;
}

static int body_is(const response *r, const char *want)
{
    return r->body_len == strlen(want) && memcmp(r->body, want, r->body_len) == 0;
}

/* ---- tests ------------------------------------------------------------- */

static void index_is_served_at_root_with_the_security_headers(void)
{
    response r;
    CU_ASSERT_EQUAL_FATAL(request("GET", "/", NULL, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(body_is(&r, INDEX_HTML));
    char v[1024], want[256];
    CU_ASSERT_EQUAL(header(&r, "content-type", v, sizeof v), 0);
    CU_ASSERT_STRING_EQUAL(v, "text/html; charset=utf-8");
    CU_ASSERT_EQUAL(header(&r, "content-length", v, sizeof v), 0);
    CU_ASSERT_EQUAL(atoi(v), (int)strlen(INDEX_HTML));
    CU_ASSERT_EQUAL_FATAL(header(&r, "content-security-policy", v, sizeof v), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(v, "default-src 'self'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(v, "frame-ancestors 'none'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(v, "object-src 'none'"));
    /* connect-src: the page's own origin only, named for ws: and wss:. */
    snprintf(want, sizeof want, "connect-src 'self' ws://127.0.0.1:%d wss://127.0.0.1:%d",
             srv.port, srv.port);
    CU_ASSERT_PTR_NOT_NULL(strstr(v, want));
    CU_ASSERT_PTR_NULL(strstr(v, "unsafe"));
    CU_ASSERT_PTR_NULL(strstr(v, "*"));
    CU_ASSERT_EQUAL(header(&r, "x-content-type-options", v, sizeof v), 0);
    CU_ASSERT_STRING_EQUAL(v, "nosniff");
    CU_ASSERT_EQUAL(header(&r, "x-frame-options", v, sizeof v), 0);
    CU_ASSERT_STRING_EQUAL(v, "DENY");
    CU_ASSERT_EQUAL(header(&r, "referrer-policy", v, sizeof v), 0);
    CU_ASSERT_STRING_EQUAL(v, "no-referrer");
    CU_ASSERT_EQUAL(header(&r, "cache-control", v, sizeof v), 0);
    CU_ASSERT_STRING_EQUAL(v, "no-cache");
    CU_ASSERT_EQUAL(header(&r, "etag", v, sizeof v), 0);
    CU_ASSERT_EQUAL(v[0], '"');
    response_free(&r);

    /* The same file by name, and a directory's index through its slash. */
    CU_ASSERT_EQUAL_FATAL(request("GET", "/index.html", NULL, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(body_is(&r, INDEX_HTML));
    response_free(&r);
    CU_ASSERT_EQUAL_FATAL(request("GET", "/sub/", NULL, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(body_is(&r, "<p>sub index</p>\n"));
    response_free(&r);
    /* A query string does not change the file. */
    CU_ASSERT_EQUAL_FATAL(request("GET", "/sub/page.html?v=2&x=y", NULL, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(body_is(&r, "<p>sub page</p>\n"));
    response_free(&r);
}

static void media_types_follow_the_extension(void)
{
    static const struct {
        const char *path, *type;
    } cases[] = {
        {"/app.js", "text/javascript; charset=utf-8"},
        {"/mod.mjs", "text/javascript; charset=utf-8"},
        {"/style.css", "text/css; charset=utf-8"},
        {"/data.json", "application/json"},
        {"/image.png", "image/png"},
        {"/icon.svg", "image/svg+xml"},
        {"/favicon.ico", "image/vnd.microsoft.icon"},
        {"/code.wasm", "application/wasm"},
        {"/notes.txt", "text/plain; charset=utf-8"},
        {"/app.webmanifest", "application/manifest+json"},
        {"/UPPER.HTML", "text/html; charset=utf-8"},
        {"/blob.xyz", "application/octet-stream"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        response r;
        char v[256] = "";
        CU_ASSERT_EQUAL_FATAL(request("GET", cases[i].path, NULL, &r), 0);
        CU_ASSERT_EQUAL(r.status, 200);
        header(&r, "content-type", v, sizeof v);
        if (strcmp(v, cases[i].type) != 0)
            fprintf(stderr, "%s: content-type '%s', expected '%s'\n", cases[i].path, v,
                    cases[i].type);
        CU_ASSERT_STRING_EQUAL(v, cases[i].type);
        CU_ASSERT_EQUAL(header(&r, "x-content-type-options", v, sizeof v), 0);
        response_free(&r);
    }
}

static void missing_files_and_directories_get_404_never_a_listing(void)
{
    static const char *const paths[] = {"/nope", "/nope.html", "/sub", "/empty/", "/empty",
                                        "/sub/nope/", "/app.js/", "/app.js/x"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        response r;
        CU_ASSERT_EQUAL_FATAL(request("GET", paths[i], NULL, &r), 0);
        if (r.status != 404)
            fprintf(stderr, "%s: status %d\n", paths[i], r.status);
        CU_ASSERT_EQUAL(r.status, 404);
        CU_ASSERT_TRUE(body_is(&r, "not found\n"));
        /* A listing would name the directory's entries. */
        CU_ASSERT_PTR_NULL(strstr(r.body, "index.html"));
        CU_ASSERT_PTR_NULL(strstr(r.body, "page.html"));
        char v[1024];
        CU_ASSERT_EQUAL(header(&r, "x-content-type-options", v, sizeof v), 0);
        CU_ASSERT_EQUAL(header(&r, "content-security-policy", v, sizeof v), 0);
        response_free(&r);
    }
}

/* Nothing outside the root is reachable, whatever the spelling. Each of
 * these must answer without a 200 and without the secret: lws normalises
 * and decodes the path once, web_path refuses what is left. */
static void no_path_leaves_the_root(void)
{
    static const char *const paths[] = {
        "/../secret.txt",
        "/../../../../../../etc/passwd",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%2fsecret.txt",
        "/..%2Fsecret.txt",
        "/.%2e/secret.txt",
        "/%2e./secret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/%252e%252e/secret.txt",
        "/%252e%252e%252fsecret.txt",
        "/..%5csecret.txt",
        "/%5c..%5csecret.txt",
        "/..\\secret.txt",
        "//etc/passwd",
        "///etc/passwd",
        "/%2fetc%2fpasswd",
        "/%2f%2fetc/passwd",
        "/etc/passwd",
        "/%00../secret.txt",
        "/%00/../secret.txt",
        "/a%00b",
        "/index.html%00.png",
        "/link.txt",
        "/linkdir/secret.txt",
        "/passwd",
        "/.hidden",
        "/%2ehidden",
        "/sub/.%2e/.%2e/secret.txt",
        "http://127.0.0.1/../secret.txt",
        "/..;/secret.txt",
        "/.../secret.txt",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        response r;
        CU_ASSERT_EQUAL_FATAL(request("GET", paths[i], NULL, &r), 0);
        int leaked = strstr(r.raw, SECRET) != NULL || strstr(r.raw, "root:x:0:0") != NULL ||
                     strstr(r.raw, "hidden\n") != NULL;
        if (r.status == 200 || leaked)
            fprintf(stderr, "%s: status %d%s\n", paths[i], r.status, leaked ? ", leaked" : "");
        CU_ASSERT_FALSE(leaked);
        CU_ASSERT_NOT_EQUAL(r.status, 200);
        response_free(&r);
    }
    /* The server is still there and still serving. */
    response r;
    CU_ASSERT_EQUAL_FATAL(request("GET", "/", NULL, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    response_free(&r);
}

/* The server decodes %XX exactly once (lws does, web_path does not again):
 * "%252e%252e" names the directory literally called "%2e%2e" in the root. */
static void percent_escapes_are_decoded_once(void)
{
    response r;
    CU_ASSERT_EQUAL_FATAL(request("GET", "/%252e%252e/x.txt", NULL, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(body_is(&r, "literal percent directory\n"));
    response_free(&r);
    /* One level of escapes is decoded. */
    CU_ASSERT_EQUAL_FATAL(request("GET", "/%61pp%2ejs", NULL, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(body_is(&r, "console.log('fixture');\n"));
    response_free(&r);
}

static void head_and_if_none_match(void)
{
    response r;
    char v[256], etag[256];
    CU_ASSERT_EQUAL_FATAL(request("HEAD", "/app.js", NULL, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(r.body_len, 0);
    CU_ASSERT_EQUAL(header(&r, "content-length", v, sizeof v), 0);
    CU_ASSERT_EQUAL(atoi(v), (int)strlen("console.log('fixture');\n"));
    CU_ASSERT_EQUAL(header(&r, "content-type", v, sizeof v), 0);
    CU_ASSERT_STRING_EQUAL(v, "text/javascript; charset=utf-8");
    CU_ASSERT_EQUAL_FATAL(header(&r, "etag", etag, sizeof etag), 0);
    response_free(&r);

    char cond[512];
    snprintf(cond, sizeof cond, "If-None-Match: \"other\", %s\r\n", etag);
    CU_ASSERT_EQUAL_FATAL(request("GET", "/app.js", cond, &r), 0);
    CU_ASSERT_EQUAL(r.status, 304);
    CU_ASSERT_EQUAL(r.body_len, 0);
    CU_ASSERT_EQUAL(header(&r, "etag", v, sizeof v), 0);
    CU_ASSERT_STRING_EQUAL(v, etag);
    CU_ASSERT_EQUAL(header(&r, "cache-control", v, sizeof v), 0);
    response_free(&r);

    /* Another file's validator does not match. */
    CU_ASSERT_EQUAL_FATAL(request("GET", "/style.css", cond, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(body_is(&r, "body { margin: 0; }\n"));
    response_free(&r);
}

static void other_methods_get_405(void)
{
    static const char *const reqs[] = {
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello",
        "POST /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        "PUT /new.html HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc",
        "DELETE /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        /* The reserved paths follow the same rule. */
        "POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        "PUT /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        response r;
        CU_ASSERT_EQUAL_FATAL(exchange(srv.port, reqs[i], strlen(reqs[i]), &r), 0);
        CU_ASSERT_EQUAL(r.status, 405);
        char v[64];
        CU_ASSERT_EQUAL(header(&r, "allow", v, sizeof v), 0);
        CU_ASSERT_STRING_EQUAL(v, "GET, HEAD");
        CU_ASSERT_TRUE(body_is(&r, "method not allowed\n"));
        response_free(&r);
    }
    /* The file is untouched. */
    response r;
    CU_ASSERT_EQUAL_FATAL(request("GET", "/index.html", NULL, &r), 0);
    CU_ASSERT_TRUE(body_is(&r, INDEX_HTML));
    response_free(&r);
}

/* A Host header cannot write into the policy; without a usable Host only
 * 'self' remains. */
static void a_hostile_host_header_stays_out_of_the_policy(void)
{
    static const char *const hosts[] = {"evil.example; script-src *", "a b", "'unsafe-inline'",
                                        "x\"y", "[::1", "h:99999999", ""};
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        char req[512];
        int n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                         hosts[i]);
        response r;
        CU_ASSERT_EQUAL_FATAL(exchange(srv.port, req, (size_t)n, &r), 0);
        char v[1024] = "";
        if (r.status == 200) {
            CU_ASSERT_EQUAL(header(&r, "content-security-policy", v, sizeof v), 0);
            CU_ASSERT_PTR_NOT_NULL(strstr(v, "connect-src 'self'"));
            CU_ASSERT_PTR_NULL(strstr(v, "ws://"));
            CU_ASSERT_PTR_NULL(strstr(v, "evil"));
            CU_ASSERT_PTR_NULL(strstr(v, "unsafe"));
            CU_ASSERT_PTR_NULL(strstr(v, "*"));
        }
        response_free(&r);
    }
    /* An IPv6 literal with a port is a usable host. */
    const char *req = "GET / HTTP/1.1\r\nHost: [::1]:8765\r\nConnection: close\r\n\r\n";
    response r;
    CU_ASSERT_EQUAL_FATAL(exchange(srv.port, req, strlen(req), &r), 0);
    char v[1024] = "";
    CU_ASSERT_EQUAL(header(&r, "content-security-policy", v, sizeof v), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(v, "connect-src 'self' ws://[::1]:8765 wss://[::1]:8765"));
    response_free(&r);
}

static void healthz_is_not_shadowed_by_a_file(void)
{
    response r;
    CU_ASSERT_EQUAL_FATAL(request("GET", "/healthz", NULL, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(body_is(&r, "ok\n"));
    response_free(&r);
}

static void a_large_file_arrives_whole_and_the_connection_is_reused(void)
{
    char *want = big_content();
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    /* Two requests on one connection: the big file, then the index. */
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                     "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    response r;
    CU_ASSERT_EQUAL_FATAL(exchange(srv.port, req, (size_t)n, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    char v[64];
    CU_ASSERT_EQUAL(header(&r, "content-length", v, sizeof v), 0);
    CU_ASSERT_EQUAL(atol(v), BIG_BYTES);
    CU_ASSERT_TRUE_FATAL(r.body_len >= BIG_BYTES);
    CU_ASSERT_EQUAL(memcmp(r.body, want, BIG_BYTES), 0);
    const char *second = r.body + BIG_BYTES;
    CU_ASSERT_EQUAL(strncmp(second, "HTTP/1.1 200", 12), 0);
    const char *blank = strstr(second, "\r\n\r\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(blank);
    CU_ASSERT_STRING_EQUAL(blank + 4, INDEX_HTML);
    response_free(&r);
    free(want);
}

/* Clients connect to /: an upgrade is never answered with a file, on any
 * path. */
static void websocket_upgrades_still_work_on_any_path(void)
{
    static const char *const paths[] = {"/", "/index.html", "/nope"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        sm_client_options o;
        memset(&o, 0, sizeof o);
        char url[128];
        snprintf(url, sizeof url, "ws://127.0.0.1:%d%s", srv.port, paths[i]);
        o.url = url;
        sm_client *c = NULL;
        CU_ASSERT_EQUAL_FATAL(harness_connect_opts(&srv, &o, &c), SM_CLIENT_OK);
        sm_message *m = harness_callf(c, "echo", "{s:i}", "n", 7);
        CU_ASSERT_STRING_EQUAL(m ? m->type : "", "response");
        sm_message_free(m);
        sm_client_close(c, 1000);
    }
}

/* ---- web.enabled = false, and a missing root ---------------------------- */

static void disabled_serves_nothing_but_healthz_and_websocket_work(void)
{
    harness_server off;
    char config[1024];
    snprintf(config, sizeof config, "web = { enabled = false; root = \"%s/root\"; };\n", fixture);
    CU_ASSERT_EQUAL_FATAL(harness_start(&off, config), 0);
    int port = off.port;
    const char *get = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    response r;
    CU_ASSERT_EQUAL_FATAL(exchange(port, get, strlen(get), &r), 0);
    CU_ASSERT_EQUAL(r.status, 404);
    CU_ASSERT_PTR_NULL(strstr(r.raw, "fixture index"));
    response_free(&r);
    const char *health = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    CU_ASSERT_EQUAL_FATAL(exchange(port, health, strlen(health), &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(body_is(&r, "ok\n"));
    response_free(&r);
    sm_client *c = NULL;
    CU_ASSERT_EQUAL(harness_connect(&off, &c), SM_CLIENT_OK);
    if (c) {
        sm_message *m = harness_callf(c, "echo", NULL);
        CU_ASSERT_STRING_EQUAL(m ? m->type : "", "response");
        sm_message_free(m);
        sm_client_close(c, 1000);
    }
    CU_ASSERT_EQUAL(harness_log_contains(&off, "serving the web client"), 0);
    CU_ASSERT_EQUAL(harness_cleanup(&off), 0);
}

static int write_conf(const char *conf, const char *web_section)
{
    FILE *f = fopen(conf, "w");
    if (!f)
        return -1;
    fprintf(f,
            "server = { port = 0; bind = \"127.0.0.1\"; key_file = \"%s/key.pem\"; io_threads = %d; };\n"
            "storage = { database = \"%s/missing.db\"; };\n"
            "plugins = { dir = \"%s\"; load = [\"testcmds\"]; };\n%s\n",
            fixture, harness_io_threads(), fixture, SM_TEST_PLUGIN_DIR, web_section);
    return fclose(f);
}

/* A web.root the operator wrote must exist: the server says which path
 * and does not start (--check-config says the same). */
static void a_missing_web_root_is_refused_naming_it(void)
{
    char conf[512], args[1024], out[8192], want[700];
    snprintf(conf, sizeof conf, "%s/missing.conf", fixture);
    CU_ASSERT_EQUAL_FATAL(write_conf(conf, "web = { root = \"no-such-web\"; };"), 0);
    snprintf(want, sizeof want, "web.root %s/no-such-web: No such file or directory", fixture);
    snprintf(args, sizeof args, "-c '%s' --check-config", conf);
    CU_ASSERT_EQUAL(harness_run_server(args, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    snprintf(args, sizeof args, "-c '%s' -p 0", conf);
    CU_ASSERT_EQUAL(harness_run_server(args, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    CU_ASSERT_PTR_NULL(strstr(out, "listening on"));
    /* A file is not a directory. */
    CU_ASSERT_EQUAL_FATAL(write_conf(conf, "web = { root = \"secret.txt\"; };"), 0);
    snprintf(args, sizeof args, "-c '%s' --check-config", conf);
    CU_ASSERT_EQUAL(harness_run_server(args, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "secret.txt: not a directory"));
    /* With serving off, the missing root does not matter. */
    CU_ASSERT_EQUAL_FATAL(write_conf(conf, "web = { enabled = false; root = \"no-such-web\"; };"),
                          0);
    CU_ASSERT_EQUAL(harness_run_server(args, out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "configuration OK"));
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(index_is_served_at_root_with_the_security_headers),
        SM_TEST(media_types_follow_the_extension),
        SM_TEST(missing_files_and_directories_get_404_never_a_listing),
        SM_TEST(no_path_leaves_the_root),
        SM_TEST(percent_escapes_are_decoded_once),
        SM_TEST(head_and_if_none_match),
        SM_TEST(other_methods_get_405),
        SM_TEST(a_hostile_host_header_stays_out_of_the_policy),
        SM_TEST(healthz_is_not_shadowed_by_a_file),
        SM_TEST(a_large_file_arrives_whole_and_the_connection_is_reused),
        SM_TEST(websocket_upgrades_still_work_on_any_path),
        SM_TEST(disabled_serves_nothing_but_healthz_and_websocket_work),
        SM_TEST(a_missing_web_root_is_refused_naming_it),
        SM_TEST_END,
    };
    return sm_test_run("web", cases, init, fini);
}
