/* safemessenger-cli against the real server (auth, heartbeat, rooms,
 * messaging, friends): the CLI binary runs in batch mode with its own
 * configuration directory per user, and its JSON lines are checked.
 * Every CLI run is bounded: it is killed when it outlives its deadline. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "crypto.h"
#include "harness.h"
#include "safemessenger/testhost_suite.h"

#ifndef SM_CLI_PATH
#error "SM_CLI_PATH must name the safemessenger-cli binary (tools/cli/CMakeLists.txt)"
#endif

#define PASSWORD "correct horse battery"
#define RUN_TIMEOUT_MS 30000
#define MAX_ARGS 40

static harness_server srv;
static char base_dir[256];    /* configuration directories of the CLI users */
static char server_dir[80];   /* "sha256_<hex of the server key's fingerprint>" */

static int init(void)
{
    snprintf(base_dir, sizeof base_dir, "/tmp/sm_test_cli.XXXXXX");
    if (!mkdtemp(base_dir))
        return -1;
    if (harness_start(&srv, "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\", "
                            "\"heartbeat\", \"rooms\", \"messaging\", \"friends\"]; };\n"
                            "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; "
                            "argon2_passes = 1; registrations_per_hour = 1000; };\n") != 0)
        return -1;
    sm_client *c = NULL;
    if (harness_connect(&srv, &c) != SM_CLIENT_OK)
        return -1;
    snprintf(server_dir, sizeof server_dir, "sha256_%s", sm_client_fingerprint(c) + 7);
    sm_client_close(c, 1000);
    return 0;
}

static void dump_log_tail(void);

static int fini(void)
{
    if (CU_get_number_of_failures() > 0)
        dump_log_tail();
    /* The server's exit status and sanitizer reports count: a failed
     * cleanup fails the suite. */
    int rc = harness_cleanup(&srv);
    if (!getenv("SM_KEEP_TEST_DIRS")) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", base_dir);
        if (system(cmd) != 0)
            rc = -1;
    }
    return rc;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- running the CLI -------------------------------------------------------- */

typedef struct cli_run {
    pid_t pid;
    int out_fd, err_fd;
    char *out, *err;
    size_t out_len, err_len;
    int exit_code;      /* -1 until finished (or killed at the deadline) */
} cli_run;

static void cfg_path(char *out, size_t len, const char *user)
{
    snprintf(out, len, "%s/%s", base_dir, user);
}

/* Starts the CLI: SM_CLI_PATH --config-dir <base>/<cfg> ARGS... <url>.
 * password NULL leaves SM_PASSWORD unset; stdin_text NULL gives /dev/null. */
static int cli_startv(cli_run *r, const char *cfg, const char *password, const char *stdin_text,
                      const char *url, va_list ap)
{
    memset(r, 0, sizeof *r);
    r->exit_code = -1;
    r->out_fd = r->err_fd = -1;
    char dir[512];
    cfg_path(dir, sizeof dir, cfg);
    const char *argv[MAX_ARGS + 6];
    size_t n = 0;
    argv[n++] = SM_CLI_PATH;
    argv[n++] = "--config-dir";
    argv[n++] = dir;
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < MAX_ARGS)
        argv[n++] = a;
    argv[n++] = url ? url : srv.url;
    argv[n] = NULL;
    int out[2], err[2], in[2];
    if (pipe(out) != 0 || pipe(err) != 0 || pipe(in) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        close(err[0]);
        close(err[1]);
        if (password)
            setenv("SM_PASSWORD", password, 1);
        else
            unsetenv("SM_PASSWORD");
        execv(SM_CLI_PATH, (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    if (stdin_text) {
        size_t len = strlen(stdin_text);   /* small: fits the pipe buffer */
        if (write(in[1], stdin_text, len) != (ssize_t)len)
            fprintf(stderr, "cli: short write to stdin\n");
    }
    close(in[1]);
    r->pid = pid;
    r->out_fd = out[0];
    r->err_fd = err[0];
    return 0;
}

static int cli_start(cli_run *r, const char *cfg, const char *password, ...)
{
    va_list ap;
    va_start(ap, password);
    int rc = cli_startv(r, cfg, password, NULL, NULL, ap);
    va_end(ap);
    return rc;
}

/* The same against url. */
static int cli_start_at(cli_run *r, const char *cfg, const char *password, const char *url, ...)
{
    va_list ap;
    va_start(ap, url);
    int rc = cli_startv(r, cfg, password, NULL, url, ap);
    va_end(ap);
    return rc;
}

/* The same with commands on stdin (--batch). */
static int cli_start_stdin(cli_run *r, const char *cfg, const char *password, const char *text, ...)
{
    va_list ap;
    va_start(ap, text);
    int rc = cli_startv(r, cfg, password, text, NULL, ap);
    va_end(ap);
    return rc;
}

static void append(char **buf, size_t *len, const char *data, size_t n)
{
    char *p = realloc(*buf, *len + n + 1);
    CU_ASSERT_FATAL(p != NULL);
    memcpy(p + *len, data, n);
    *len += n;
    p[*len] = '\0';
    *buf = p;
}

/* Reads what is available within wait_ms. Returns 1 while output may
 * still come, 0 once both pipes reached EOF. */
static int cli_read(cli_run *r, int wait_ms)
{
    struct pollfd fds[2] = {{.fd = r->out_fd, .events = POLLIN}, {.fd = r->err_fd, .events = POLLIN}};
    if (r->out_fd < 0 && r->err_fd < 0)
        return 0;
    int n = poll(fds, 2, wait_ms);
    if (n <= 0)
        return 1;
    for (int i = 0; i < 2; i++) {
        if (fds[i].fd < 0 || !fds[i].revents)
            continue;
        char buf[8192];
        ssize_t k = read(fds[i].fd, buf, sizeof buf);
        if (k > 0) {
            if (i == 0)
                append(&r->out, &r->out_len, buf, (size_t)k);
            else
                append(&r->err, &r->err_len, buf, (size_t)k);
        } else if (k == 0 || errno != EINTR) {
            close(fds[i].fd);
            if (i == 0)
                r->out_fd = -1;
            else
                r->err_fd = -1;
        }
    }
    return r->out_fd >= 0 || r->err_fd >= 0;
}

/* Waits until stdout holds needle: 1 found, 0 not within timeout_ms. */
static int cli_wait_for(cli_run *r, const char *needle, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    while (!(r->out && strstr(r->out, needle))) {
        long long left = end - now_ms();
        if (left <= 0 || !cli_read(r, (int)(left > 200 ? 200 : left)))
            return r->out && strstr(r->out, needle);
    }
    return 1;
}

/* Every run's output goes to <base_dir>/cli.log, whose tail fini()
 * prints when an assertion failed. */
static void log_run(const cli_run *r)
{
    char path[300];
    snprintf(path, sizeof path, "%s/cli.log", base_dir);
    FILE *f = fopen(path, "a");
    if (!f)
        return;
    fprintf(f, "=== exit %d\n--- stdout\n%s--- stderr\n%s", r->exit_code, r->out, r->err);
    fclose(f);
}

static void dump_log_tail(void)
{
    char path[300];
    snprintf(path, sizeof path, "%s/cli.log", base_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (fseek(f, -16000, SEEK_END) != 0)
        rewind(f);
    char buf[4096];
    size_t n;
    fputs("--- tail of the CLI runs' output:\n", stderr);
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, stderr);
    fclose(f);
}

/* Collects the rest of the output and the exit code; kills the CLI when
 * it is still running at the deadline (exit code -1). */
static int cli_finish(cli_run *r, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    while (now_ms() < end && cli_read(r, 200)) {
    }
    int status = 0;
    if (r->out_fd >= 0 || r->err_fd >= 0 || waitpid(r->pid, &status, WNOHANG) == 0) {
        /* Pipes closed but not exited yet: give it a moment. */
        long long grace = now_ms() + 2000;
        while (waitpid(r->pid, &status, WNOHANG) == 0 && now_ms() < grace)
            usleep(10000);
        if (waitpid(r->pid, &status, WNOHANG) == 0) {
            fprintf(stderr, "cli: still running at the deadline, killed\n");
            kill(r->pid, SIGKILL);
            waitpid(r->pid, &status, 0);
            r->exit_code = -1;
            goto out;
        }
    }
    r->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
out:
    if (r->out_fd >= 0)
        close(r->out_fd);
    if (r->err_fd >= 0)
        close(r->err_fd);
    r->out_fd = r->err_fd = -1;
    r->pid = 0;
    if (!r->out)
        append(&r->out, &r->out_len, "", 0);
    if (!r->err)
        append(&r->err, &r->err_len, "", 0);
    log_run(r);
    return r->exit_code;
}

static void cli_free(cli_run *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
    }
    if (r->out_fd >= 0)
        close(r->out_fd);
    if (r->err_fd >= 0)
        close(r->err_fd);
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

/* Runs the CLI to its end; returns its exit code. */
static int cli(cli_run *r, const char *cfg, const char *password, ...)
{
    va_list ap;
    va_start(ap, password);
    int rc = cli_startv(r, cfg, password, NULL, NULL, ap);
    va_end(ap);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    return cli_finish(r, RUN_TIMEOUT_MS);
}

/* Runs the CLI against another URL (no password). */
static int cli_url(cli_run *r, const char *cfg, const char *url, ...)
{
    va_list ap;
    va_start(ap, url);
    int rc = cli_startv(r, cfg, NULL, NULL, url, ap);
    va_end(ap);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    return cli_finish(r, RUN_TIMEOUT_MS);
}

/* Runs the CLI against url with SM_PASSWORD = password (may be NULL). */
static int cli_at(cli_run *r, const char *cfg, const char *password, const char *url, ...)
{
    va_list ap;
    va_start(ap, url);
    int rc = cli_startv(r, cfg, password, NULL, url, ap);
    va_end(ap);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    return cli_finish(r, RUN_TIMEOUT_MS);
}

/* ---- the CLI on a terminal (pty) ------------------------------------------ */

typedef struct pty_run {
    pid_t pid;
    int fd;             /* the master side */
    char *out;          /* everything the CLI wrote to the terminal */
    size_t len;
    size_t mark;        /* pty_wait_for searches from here */
} pty_run;

/* Starts the CLI interactively on a new pseudo-terminal (its controlling
 * terminal, so that password prompts use it too). */
static int pty_start(pty_run *p, const char *cfg, const char *password, const char *url)
{
    memset(p, 0, sizeof *p);
    char dir[512];
    cfg_path(dir, sizeof dir, cfg);
    struct winsize ws = {.ws_row = 40, .ws_col = 200};
    int fd = -1;
    pid_t pid = forkpty(&fd, NULL, NULL, &ws);
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (password)
            setenv("SM_PASSWORD", password, 1);
        else
            unsetenv("SM_PASSWORD");
        setenv("TERM", "xterm", 1);
        setenv("HOME", dir, 1);   /* no ~/.editrc of the user running the tests */
        execl(SM_CLI_PATH, SM_CLI_PATH, "--config-dir", dir, url ? url : srv.url, (char *)NULL);
        _exit(127);
    }
    p->pid = pid;
    p->fd = fd;
    append(&p->out, &p->len, "", 0);
    return 0;
}

static void pty_read(pty_run *p, int wait_ms)
{
    struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
    if (p->fd < 0 || poll(&pfd, 1, wait_ms) <= 0)
        return;
    char buf[4096];
    ssize_t k = read(p->fd, buf, sizeof buf);
    if (k > 0) {
        append(&p->out, &p->len, buf, (size_t)k);
    } else if (k == 0 || errno != EINTR) {   /* EIO once the CLI is gone */
        close(p->fd);
        p->fd = -1;
    }
}

/* Waits until the output after the mark holds needle; the mark then moves
 * past it. 1 found, 0 not within timeout_ms. */
static int pty_wait_for(pty_run *p, const char *needle, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    for (;;) {
        char *at = strstr(p->out + p->mark, needle);
        if (at) {
            p->mark = (size_t)(at - p->out) + strlen(needle);
            return 1;
        }
        long long left = end - now_ms();
        if (left <= 0 || p->fd < 0) {
            fprintf(stderr, "pty: no \"%s\" within %d ms in:\n%s\n", needle, timeout_ms, p->out);
            return 0;
        }
        pty_read(p, (int)(left > 200 ? 200 : left));
    }
}

/* Waits until the terminal's echo is off (libedit reading a line, or a
 * password prompt): input written before that is echoed by the terminal
 * itself, whatever the CLI does. On Linux the master reports the pair's
 * settings. 1 when off, 0 not within timeout_ms. */
static int pty_wait_no_echo(pty_run *p, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    for (;;) {
        struct termios t;
        if (tcgetattr(p->fd, &t) == 0 && !(t.c_lflag & ECHO))
            return 1;
        if (now_ms() >= end)
            return 0;
        pty_read(p, 20);
    }
}

static void pty_write(pty_run *p, const char *text)
{
    size_t len = strlen(text);
    CU_ASSERT_EQUAL(write(p->fd, text, len), (ssize_t)len);
}

/* Waits for the CLI to exit (killing it at the deadline); its exit code. */
static int pty_finish(pty_run *p, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    int status = 0, code = -1;
    while (now_ms() < end) {
        pty_read(p, 100);
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            break;
        }
    }
    if (code == -1) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
    }
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    char path[300];
    snprintf(path, sizeof path, "%s/cli.log", base_dir);
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f, "=== pty run, exit %d\n%s\n", code, p->out);
        fclose(f);
    }
    free(p->out);
    p->out = NULL;
    return code;
}

/* The n-th (from 0) JSON line of stdout whose "kind" is kind and whose
 * "action" (replies, events) or "what" (local lines) is name. New
 * reference, or NULL. */
static json_t *line_of(const cli_run *r, const char *kind, const char *name, int n)
{
    const char *p = r->out;
    while (p && *p) {
        size_t len = strcspn(p, "\n");
        json_t *o = json_loadb(p, len, 0, NULL);
        CU_ASSERT_PTR_NOT_NULL(o);   /* every stdout line is JSON */
        const char *k = json_string_value(json_object_get(o, "kind"));
        const char *a = json_string_value(json_object_get(o, "action"));
        const char *w = json_string_value(json_object_get(o, "what"));
        if (k && strcmp(k, kind) == 0 && ((a && strcmp(a, name) == 0) || (w && strcmp(w, name) == 0))
            && n-- == 0)
            return o;
        json_decref(o);
        p += len;
        if (*p == '\n')
            p++;
    }
    return NULL;
}

static const char *jstr(const json_t *o, const char *path1, const char *path2)
{
    const json_t *v = json_object_get(o, path1);
    if (path2)
        v = json_object_get(v, path2);
    return json_string_value(v);
}

/* Registers user with a fresh configuration directory named after it. */
static void register_user(const char *user)
{
    cli_run r;
    char cmd[64];
    snprintf(cmd, sizeof cmd, "/register %s", user);
    CU_ASSERT_EQUAL(cli(&r, user, PASSWORD, "-e", cmd, NULL), 0);
    json_t *o = line_of(&r, "reply", "registration_success", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    CU_ASSERT_STRING_EQUAL(jstr(o, "payload", "username"), user);
    json_decref(o);
    cli_free(&r);
}

static void file_mode_is(const char *path, unsigned mode)
{
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, mode);
    if ((st.st_mode & 0777) != mode)
        fprintf(stderr, "%s: mode %o, expected %o\n", path, st.st_mode & 0777, mode);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 65537);
    size_t n = buf ? fread(buf, 1, 65536, f) : 0;
    (void)n;
    fclose(f);
    return buf;
}

static void server_fingerprint(char fp[CRYPTO_FINGERPRINT_LEN])
{
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&srv, &c), SM_CLIENT_OK);
    snprintf(fp, CRYPTO_FINGERPRINT_LEN, "%s", sm_client_fingerprint(c));
    sm_client_close(c, 1000);
}

/* A client of the library logged in as user (registered first when
 * public_key_pem is given or register is set). */
static sm_client *raw_login(const char *user, int do_register, const char *public_key_pem)
{
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&srv, &c), SM_CLIENT_OK);
    sm_message *m = do_register
        ? (public_key_pem ? harness_callf(c, "register", "{s:s,s:s,s:s}", "username", user, "password",
                                          PASSWORD, "public_key", public_key_pem)
                          : harness_callf(c, "register", "{s:s,s:s}", "username", user, "password",
                                          PASSWORD))
        : harness_callf(c, "login", "{s:s,s:s}", "username", user, "password", PASSWORD);
    CU_ASSERT_FATAL(m != NULL);
    CU_ASSERT_STRING_EQUAL(m->type, "response");
    sm_message_free(m);
    return c;
}

/* ---- server key pinning ------------------------------------------------------ */

static void known_servers_path(char *out, size_t len, const char *cfg)
{
    char dir[512];
    cfg_path(dir, sizeof dir, cfg);
    snprintf(out, len, "%s/known_servers", dir);
}

static void first_connection_pins_the_server_key(void)
{
    char fp[CRYPTO_FINGERPRINT_LEN], dir[512], path[600], expect[300];
    server_fingerprint(fp);
    cfg_path(dir, sizeof dir, "pin_first");
    cli_run r;
    CU_ASSERT_EQUAL(cli(&r, "pin_first", NULL, "-e", "/help quit", NULL), 0);
    json_t *o = line_of(&r, "local", "server_key_pinned", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_STRING_EQUAL(jstr(o, "fingerprint", NULL), fp);
    json_decref(o);
    o = line_of(&r, "local", "help", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    CU_ASSERT_PTR_NOT_NULL(o ? strstr(jstr(o, "message", NULL), "/quit") : NULL);
    json_decref(o);
    cli_free(&r);
    known_servers_path(path, sizeof path, "pin_first");
    snprintf(expect, sizeof expect, "127.0.0.1:%d %s\n", srv.port, fp);
    char *text = read_text(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_STRING_EQUAL(text, expect);
    free(text);
    file_mode_is(dir, 0700);
    file_mode_is(path, 0600);
    /* The next run finds the pin and says nothing about it. */
    CU_ASSERT_EQUAL(cli(&r, "pin_first", NULL, "-e", "/help", NULL), 0);
    o = line_of(&r, "local", "server_key_pinned", 0);
    CU_ASSERT_PTR_NULL(o);
    json_decref(o);
    cli_free(&r);
}

#define WRONG_FP "sha256:0000000000000000000000000000000000000000000000000000000000000000"

static void changed_server_key_is_refused_with_exit_3(void)
{
    char fp[CRYPTO_FINGERPRINT_LEN], dir[512], path[600], pinned[300];
    server_fingerprint(fp);
    cfg_path(dir, sizeof dir, "pin_changed");
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0700), 0);
    known_servers_path(path, sizeof path, "pin_changed");
    snprintf(pinned, sizeof pinned, "127.0.0.1:%d %s\n", srv.port, WRONG_FP);
    write_text(path, pinned);
    cli_run r;
    CU_ASSERT_EQUAL(cli(&r, "pin_changed", PASSWORD, "-e", "/register pin_changed", NULL), 3);
    json_t *o = line_of(&r, "local", "server_key_changed", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_STRING_EQUAL(jstr(o, "level", NULL), "error");
    CU_ASSERT_STRING_EQUAL(jstr(o, "fingerprint", NULL), fp);
    CU_ASSERT_STRING_EQUAL(jstr(o, "pinned_fingerprint", NULL), WRONG_FP);
    json_decref(o);
    /* Nothing was sent: no reply at all, and the user does not exist. */
    CU_ASSERT_PTR_NULL(strstr(r.out, "\"kind\":\"reply\""));
    /* The warning on stderr is loud and several lines long. */
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "HAS CHANGED"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, WRONG_FP));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "--accept-new-key"));
    size_t lines = 0;
    for (const char *p = r.err; *p; p++)
        lines += *p == '\n';
    CU_ASSERT_TRUE(lines >= 5);
    cli_free(&r);
    char *text = read_text(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_STRING_EQUAL(text, pinned);   /* the pin is left alone */
    free(text);
    register_user("pin_changed2");   /* the server is fine: others can still register */
    CU_ASSERT_EQUAL(cli(&r, "pin_changed", PASSWORD, "-e", "/login pin_changed", NULL), 3);
    cli_free(&r);
}

static void accept_new_key_replaces_the_pin(void)
{
    char fp[CRYPTO_FINGERPRINT_LEN], dir[512], path[600], expect[300];
    server_fingerprint(fp);
    cfg_path(dir, sizeof dir, "pin_accept");
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0700), 0);
    known_servers_path(path, sizeof path, "pin_accept");
    snprintf(expect, sizeof expect, "# kept\nexample.org:443 %s\n127.0.0.1:%d %s\n", WRONG_FP, srv.port,
             WRONG_FP);
    write_text(path, expect);
    cli_run r;
    CU_ASSERT_EQUAL(cli(&r, "pin_accept", NULL, "--accept-new-key", "-e", "/help", NULL), 0);
    json_t *o = line_of(&r, "local", "server_key_replaced", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    CU_ASSERT_STRING_EQUAL(o ? jstr(o, "pinned_fingerprint", NULL) : "", WRONG_FP);
    json_decref(o);
    cli_free(&r);
    snprintf(expect, sizeof expect, "# kept\nexample.org:443 %s\n127.0.0.1:%d %s\n", WRONG_FP, srv.port, fp);
    char *text = read_text(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_STRING_EQUAL(text, expect);
    free(text);
    file_mode_is(path, 0600);
    /* From now on the new key is simply the pinned one. */
    CU_ASSERT_EQUAL(cli(&r, "pin_accept", NULL, "-e", "/help", NULL), 0);
    CU_ASSERT_PTR_NULL(strstr(r.out, "server_key"));
    cli_free(&r);
}

/* ---- accounts and keys --------------------------------------------------------- */

static void commands_from_stdin_in_batch_mode(void)
{
    cli_run r;
    const char *script = "# a comment line\n/register stdin_user\n\n/users\n/quit\n/users\n";
    CU_ASSERT_EQUAL_FATAL(cli_start_stdin(&r, "stdin_user", PASSWORD, script, "--batch", NULL), 0);
    CU_ASSERT_EQUAL(cli_finish(&r, RUN_TIMEOUT_MS), 0);
    json_t *o = line_of(&r, "reply", "registration_success", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    o = line_of(&r, "reply", "get_users", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_STRING_EQUAL(jstr(o, "payload", "room"), "general");
    CU_ASSERT_STRING_EQUAL(jstr(o, "command", NULL), "users");
    json_decref(o);
    o = line_of(&r, "reply", "get_users", 1);   /* after /quit: never run */
    CU_ASSERT_PTR_NULL(o);
    json_decref(o);
    cli_free(&r);
}

static void register_creates_a_key_pair_and_registers_its_public_half(void)
{
    register_user("KeyOwner");
    char dir[512], priv[700], pub[700], keydir[600];
    cfg_path(dir, sizeof dir, "KeyOwner");
    snprintf(keydir, sizeof keydir, "%s/keys/%s", dir, server_dir);
    snprintf(priv, sizeof priv, "%s/keyowner.pem", keydir);
    snprintf(pub, sizeof pub, "%s/keyowner.pub.pem", keydir);
    file_mode_is(keydir, 0700);
    file_mode_is(priv, 0600);
    file_mode_is(pub, 0600);
    char *pem = read_text(pub);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pem);
    EVP_PKEY *key = NULL;
    CU_ASSERT_EQUAL_FATAL(crypto_pubkey_from_pem(pem, strlen(pem), &key), 0);
    CU_ASSERT_EQUAL(EVP_PKEY_get_bits(key), 3072);
    char fp[CRYPTO_FINGERPRINT_LEN];
    CU_ASSERT_EQUAL(crypto_fingerprint(key, fp), 0);
    crypto_pkey_free(key);

    /* Someone else sees exactly that key registered, and pins it. */
    register_user("KeyViewer");
    cli_run r;
    CU_ASSERT_EQUAL(cli(&r, "KeyViewer", PASSWORD, "-e", "/login KeyViewer", "-e", "/key keyowner", NULL), 0);
    json_t *o = line_of(&r, "reply", "get_public_key", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_STRING_EQUAL(jstr(o, "payload", "public_key"), pem);
    CU_ASSERT_STRING_EQUAL(jstr(o, "key", "username"), "KeyOwner");
    CU_ASSERT_STRING_EQUAL(jstr(o, "key", "fingerprint"), fp);
    CU_ASSERT_STRING_EQUAL(jstr(o, "key", "pin"), "new");
    CU_ASSERT_TRUE(json_is_true(json_object_get(json_object_get(o, "key"), "usable")));
    json_decref(o);
    cli_free(&r);
    CU_ASSERT_EQUAL(cli(&r, "KeyViewer", PASSWORD, "-e", "/login KeyViewer", "-e", "/key KeyOwner", NULL), 0);
    o = line_of(&r, "reply", "get_public_key", 0);
    CU_ASSERT_STRING_EQUAL(o ? jstr(o, "key", "pin") : "", "match");
    json_decref(o);
    cli_free(&r);
    free(pem);
}

static void register_refuses_an_existing_key_below_2048_bits(void)
{
    char dir[512], keydir[600], priv[700];
    cfg_path(dir, sizeof dir, "small_key");
    snprintf(keydir, sizeof keydir, "%s/keys/%s", dir, server_dir);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "mkdir -p -m 700 '%s' '%s'", dir, keydir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    snprintf(priv, sizeof priv, "%s/small_key.pem", keydir);
    EVP_PKEY *small = EVP_RSA_gen(1024);
    CU_ASSERT_FATAL(small != NULL);
    int fd = open(priv, O_WRONLY | O_CREAT | O_EXCL, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    FILE *f = fdopen(fd, "w");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_EQUAL(PEM_write_PrivateKey(f, small, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    EVP_PKEY_free(small);
    cli_run r;
    CU_ASSERT_EQUAL(cli(&r, "small_key", PASSWORD, "-e", "/register small_key", NULL), 1);
    json_t *o = line_of(&r, "local", "key_refused", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    CU_ASSERT_PTR_NOT_NULL(o ? strstr(jstr(o, "message", NULL), "1024 bits") : NULL);
    json_decref(o);
    CU_ASSERT_PTR_NULL(strstr(r.out, "\"kind\":\"reply\""));   /* nothing was sent */
    cli_free(&r);
    register_user("small_key2");
    /* The name is still free: the refused registration never reached the server. */
    sm_client *c = raw_login("small_key", 1, NULL);
    sm_client_close(c, 1000);
}

static void batch_reads_the_password_from_env_or_file_only(void)
{
    register_user("pw_user");
    cli_run r;
    CU_ASSERT_EQUAL(cli(&r, "pw_user", NULL, "-e", "/login pw_user", NULL), 1);
    json_t *o = line_of(&r, "local", "no_password", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    CU_ASSERT_PTR_NULL(strstr(r.out, "login_success"));
    cli_free(&r);
    char path[600];
    cfg_path(path, sizeof path, "pw_user.password");
    write_text(path, PASSWORD "\n");
    CU_ASSERT_EQUAL(cli(&r, "pw_user", NULL, "--password-file", path, "-e", "/login pw_user", NULL), 0);
    o = line_of(&r, "reply", "login_success", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    cli_free(&r);
    CU_ASSERT_EQUAL(cli(&r, "pw_user", "wrong password", "-e", "/login pw_user", NULL), 1);
    o = line_of(&r, "error", "error", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(o, "payload"), "code")), 1001);
    json_decref(o);
    cli_free(&r);
}

/* ---- chat ------------------------------------------------------------------------ */

static void public_message_reaches_another_cli(void)
{
    register_user("pub_recv");
    register_user("pub_send");
    cli_run rx, tx;
    CU_ASSERT_EQUAL_FATAL(cli_start(&rx, "pub_recv", PASSWORD, "-e", "/login pub_recv", "-e",
                                    "/join cli_room", "--wait-events", "1", "--wait-action",
                                    "public_message", "--wait-ms", "15000", NULL),
                          0);
    CU_ASSERT_FATAL(cli_wait_for(&rx, "\"action\":\"join_room\"", 15000));
    CU_ASSERT_EQUAL(cli(&tx, "pub_send", PASSWORD, "-e", "/login pub_send", "-e", "/join CLI_room",
                        "-e", "hello everyone", NULL),
                    0);
    json_t *o = line_of(&tx, "reply", "public_message", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    CU_ASSERT_STRING_EQUAL(o ? jstr(o, "command", NULL) : "", "say");
    json_decref(o);
    cli_free(&tx);
    CU_ASSERT_EQUAL(cli_finish(&rx, 20000), 0);
    o = line_of(&rx, "event", "public_message", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_STRING_EQUAL(jstr(o, "payload", "sender"), "pub_send");
    CU_ASSERT_STRING_EQUAL(jstr(o, "payload", "content"), "hello everyone");
    CU_ASSERT_STRING_EQUAL(jstr(o, "payload", "room"), "cli_room");
    json_decref(o);
    o = line_of(&rx, "event", "user_joined", 0);   /* and the room event before it */
    CU_ASSERT_STRING_EQUAL(o ? jstr(o, "payload", "username") : "", "pub_send");
    json_decref(o);
    cli_free(&rx);
}

static void e2e_private_message_is_verified_and_decrypted(void)
{
    register_user("e2e_from");
    register_user("E2E_to");
    cli_run rx, tx;
    CU_ASSERT_EQUAL_FATAL(cli_start(&rx, "E2E_to", PASSWORD, "-e", "/login e2e_to", "--wait-events",
                                    "1", "--wait-action", "private_message", "--wait-ms", "15000", NULL),
                          0);
    CU_ASSERT_FATAL(cli_wait_for(&rx, "\"action\":\"login_success\"", 15000));
    CU_ASSERT_EQUAL(cli(&tx, "e2e_from", PASSWORD, "-e", "/login e2e_from", "-e",
                        "/msg e2e_to meet at noon \xc3\xa0 la gare", NULL),
                    0);
    json_t *sent = line_of(&tx, "reply", "message_delivered", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sent);
    CU_ASSERT_STRING_EQUAL(jstr(sent, "payload", "recipient"), "E2E_to");
    CU_ASSERT_TRUE(json_is_true(json_object_get(json_object_get(sent, "sent"), "encrypted")));
    CU_ASSERT_TRUE(json_is_true(json_object_get(json_object_get(sent, "sent"), "signed")));
    CU_ASSERT_EQUAL(cli_finish(&rx, 20000), 0);
    json_t *o = line_of(&rx, "event", "private_message", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    const json_t *p = json_object_get(o, "payload");
    CU_ASSERT_STRING_EQUAL(jstr(p, "sender", NULL), "e2e_from");
    CU_ASSERT_TRUE(json_is_true(json_object_get(p, "encrypted")));
    CU_ASSERT_PTR_NULL(strstr(jstr(p, "content", NULL), "noon"));   /* the server saw ciphertext */
    CU_ASSERT_EQUAL(strncmp(jstr(p, "content", NULL), "{\"v\":1,\"ek\":\"", 13), 0);
    CU_ASSERT_TRUE(strlen(jstr(p, "signature", NULL)) > 100);
    const json_t *e = json_object_get(o, "e2e");
    CU_ASSERT_TRUE(json_is_true(json_object_get(e, "verified")));
    CU_ASSERT_TRUE(json_is_true(json_object_get(e, "decrypted")));
    CU_ASSERT_STRING_EQUAL(jstr(e, "status", NULL), "ok");
    CU_ASSERT_STRING_EQUAL(jstr(e, "text", NULL), "meet at noon \xc3\xa0 la gare");
    CU_ASSERT_STRING_EQUAL(jstr(e, "id", NULL), jstr(sent, "sent", "id"));
    json_decref(o);
    json_decref(sent);
    cli_free(&rx);
    cli_free(&tx);
}

/* A private message as another client would send it, through the library. */
static void raw_private(sm_client *c, const char *to, const char *content, int encrypted,
                        const char *signature)
{
    sm_message *m = signature
        ? harness_callf(c, "private_message", "{s:s,s:s,s:b,s:s}", "recipient", to, "content", content,
                        "encrypted", encrypted, "signature", signature)
        : harness_callf(c, "private_message", "{s:s,s:s,s:b}", "recipient", to, "content", content,
                        "encrypted", encrypted);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(m->action, "message_delivered");
    sm_message_free(m);
}

/* The unread item whose e2e text (or, with by_content, content) is text. */
static json_t *unread_item(const cli_run *r, const char *text, int by_content, int nth_reply)
{
    json_t *o = line_of(r, "reply", "unread_messages", nth_reply);
    if (!o)
        return NULL;
    size_t i;
    json_t *item, *found = NULL;
    json_array_foreach(json_object_get(json_object_get(o, "payload"), "messages"), i, item) {
        const char *t = by_content ? jstr(item, "content", NULL) : jstr(item, "e2e", "text");
        if (t && strcmp(t, text) == 0 && !found)
            found = json_incref(item);
    }
    json_decref(o);
    return found;
}

static void unsigned_plain_message_is_shown_as_unsigned(void)
{
    register_user("uns_to");
    sm_client *c = raw_login("uns_from", 1, NULL);   /* no key at all */
    raw_private(c, "uns_to", "plain hi", 0, NULL);
    sm_client_close(c, 1000);
    cli_run r;
    CU_ASSERT_EQUAL(cli(&r, "uns_to", PASSWORD, "-e", "/login uns_to", "-e", "/unread", "-e",
                        "/msg uns_from plain back", NULL),
                    0);
    json_t *item = unread_item(&r, "plain hi", 0, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(item);
    const json_t *e = json_object_get(item, "e2e");
    CU_ASSERT_STRING_EQUAL(jstr(e, "status", NULL), "unsigned");
    CU_ASSERT_TRUE(json_is_false(json_object_get(e, "verified")));
    CU_ASSERT_TRUE(json_is_false(json_object_get(e, "decrypted")));
    json_decref(item);
    /* To a user without a key: plain text, but signed with our key. */
    json_t *o = line_of(&r, "reply", "message_delivered", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_TRUE(json_is_false(json_object_get(json_object_get(o, "sent"), "encrypted")));
    CU_ASSERT_TRUE(json_is_true(json_object_get(json_object_get(o, "sent"), "signed")));
    json_decref(o);
    o = line_of(&r, "local", "sent_plain", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    cli_free(&r);
}

static void wrong_signature_is_shown_as_bad_signature(void)
{
    register_user("badsig_to");
    EVP_PKEY *key = NULL;
    char *pem = NULL, *sig = NULL;
    size_t sig_len = 0;
    CU_ASSERT_EQUAL_FATAL(crypto_rsa_generate(2048, &key), 0);
    CU_ASSERT_EQUAL_FATAL(crypto_pubkey_pem(key, &pem), 0);
    uint8_t junk[256];
    CU_ASSERT_EQUAL(crypto_random(junk, sizeof junk), 0);
    CU_ASSERT_EQUAL_FATAL(crypto_b64_encode(junk, sizeof junk, &sig, &sig_len), 0);
    sm_client *c = raw_login("badsig_from", 1, pem);
    raw_private(c, "badsig_to", "trust me", 0, sig);
    sm_client_close(c, 1000);
    cli_run r;
    CU_ASSERT_EQUAL(cli(&r, "badsig_to", PASSWORD, "-e", "/login badsig_to", "-e", "/unread", NULL), 0);
    json_t *item = unread_item(&r, "trust me", 0, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(item);
    const json_t *e = json_object_get(item, "e2e");
    CU_ASSERT_STRING_EQUAL(jstr(e, "status", NULL), "bad_signature");
    CU_ASSERT_TRUE(json_is_false(json_object_get(e, "verified")));
    json_decref(item);
    cli_free(&r);
    free(sig);
    free(pem);
    crypto_pkey_free(key);
}

static void replayed_message_is_withheld(void)
{
    register_user("rp_from");
    register_user("rp_to");
    cli_run r;
    CU_ASSERT_EQUAL(cli(&r, "rp_from", PASSWORD, "-e", "/login rp_from", "-e", "/msg rp_to once only", NULL), 0);
    cli_free(&r);
    CU_ASSERT_EQUAL(cli(&r, "rp_to", PASSWORD, "-e", "/login rp_to", "-e", "/unread", NULL), 0);
    json_t *item = unread_item(&r, "once only", 0, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(item);
    CU_ASSERT_STRING_EQUAL(jstr(item, "e2e", "status"), "ok");
    char *content = strdup(jstr(item, "content", NULL));
    char *signature = strdup(jstr(item, "signature", NULL));
    json_int_t first_id = json_integer_value(json_object_get(item, "id"));
    json_decref(item);
    cli_free(&r);
    /* The same ciphertext and signature again as a new message: what a
     * server replaying it would deliver. */
    sm_client *c = raw_login("rp_from", 0, NULL);
    raw_private(c, "rp_to", content, 1, signature);
    sm_client_close(c, 1000);
    CU_ASSERT_EQUAL(cli(&r, "rp_to", PASSWORD, "-e", "/login rp_to", "-e", "/unread", NULL), 0);
    json_t *o = line_of(&r, "reply", "unread_messages", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    const json_t *msgs = json_object_get(json_object_get(o, "payload"), "messages");
    CU_ASSERT_EQUAL_FATAL(json_array_size(msgs), 2);
    const json_t *again = json_array_get(msgs, 0), *replay = json_array_get(msgs, 1);
    /* The original, listed again, is still shown... */
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(again, "id")), first_id);
    CU_ASSERT_STRING_EQUAL(jstr(again, "e2e", "status"), "ok");
    CU_ASSERT_STRING_EQUAL(jstr(again, "e2e", "text"), "once only");
    /* ...its replay is not. */
    CU_ASSERT_STRING_EQUAL(jstr(replay, "content", NULL), content);
    CU_ASSERT_STRING_EQUAL(jstr(replay, "e2e", "status"), "replay");
    CU_ASSERT_TRUE(json_is_true(json_object_get(json_object_get(replay, "e2e"), "decrypted")));
    CU_ASSERT_PTR_NULL(json_object_get(json_object_get(replay, "e2e"), "text"));
    json_decref(o);
    cli_free(&r);
    free(content);
    free(signature);
}

static void changed_contact_key_refuses_sending_and_flags_messages(void)
{
    register_user("kc_a");
    register_user("kc_b");
    cli_run r;
    CU_ASSERT_EQUAL(cli(&r, "kc_a", PASSWORD, "-e", "/login kc_a", "-e", "/msg kc_b before", NULL), 0);
    cli_free(&r);
    CU_ASSERT_EQUAL(cli(&r, "kc_b", PASSWORD, "-e", "/login kc_b", "-e", "/unread", NULL), 0);
    json_t *item = unread_item(&r, "before", 0, 0);
    CU_ASSERT_STRING_EQUAL(item ? jstr(item, "e2e", "status") : "", "ok");
    json_decref(item);
    cli_free(&r);
    /* kc_b's pin of kc_a now differs from what the server holds. */
    EVP_PKEY *other = NULL;
    char *other_pem = NULL, dir[512], pin[800];
    CU_ASSERT_EQUAL_FATAL(crypto_rsa_generate(2048, &other), 0);
    CU_ASSERT_EQUAL_FATAL(crypto_pubkey_pem(other, &other_pem), 0);
    cfg_path(dir, sizeof dir, "kc_b");
    snprintf(pin, sizeof pin, "%s/contacts/%s/kc_a.pem", dir, server_dir);
    file_mode_is(pin, 0600);
    write_text(pin, other_pem);

    CU_ASSERT_EQUAL(cli(&r, "kc_a", PASSWORD, "-e", "/login kc_a", "-e", "/msg kc_b after", NULL), 0);
    cli_free(&r);
    CU_ASSERT_EQUAL(cli(&r, "kc_b", PASSWORD, "-e", "/login kc_b", "-e", "/unread", "-e", "/msg kc_a hi",
                        NULL),
                    1);
    item = unread_item(&r, "after", 0, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(item);
    CU_ASSERT_STRING_EQUAL(jstr(item, "e2e", "status"), "key_changed");
    CU_ASSERT_TRUE(json_is_false(json_object_get(json_object_get(item, "e2e"), "verified")));
    json_decref(item);
    json_t *o = line_of(&r, "local", "contact_key_changed", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    o = line_of(&r, "local", "not_sent", 0);   /* /msg kc_a refused */
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    o = line_of(&r, "reply", "message_delivered", 0);
    CU_ASSERT_PTR_NULL(o);
    json_decref(o);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "HAS CHANGED"));
    cli_free(&r);
    /* After /trust the server's key is pinned again and sending works. */
    CU_ASSERT_EQUAL(cli(&r, "kc_b", PASSWORD, "-e", "/login kc_b", "-e", "/trust kc_a", "-e", "/msg kc_a hi",
                        NULL),
                    0);
    o = line_of(&r, "reply", "message_delivered", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    cli_free(&r);
    free(other_pem);
    crypto_pkey_free(other);
}

/* ---- exit statuses ------------------------------------------------------------- */

static void exit_status_tells_server_errors_usage_and_connection(void)
{
    register_user("exit_user");
    cli_run r;
    CU_ASSERT_EQUAL(cli(&r, "exit_user", PASSWORD, "-e", "/login exit_user", "-e", "/read 424242", NULL), 1);
    json_t *o = line_of(&r, "error", "error", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(o, "payload"), "code")), 1009);
    CU_ASSERT_STRING_EQUAL(jstr(o, "command", NULL), "read");
    json_decref(o);
    cli_free(&r);
    CU_ASSERT_EQUAL(cli(&r, "exit_user", PASSWORD, "-e", "/login exit_user", "-e", "/msg onlyname", NULL), 2);
    o = line_of(&r, "local", "usage", 0);
    CU_ASSERT_STRING_EQUAL(o ? jstr(o, "message", NULL) : "", "usage: /msg USER TEXT");
    json_decref(o);
    cli_free(&r);
    CU_ASSERT_EQUAL(cli(&r, "exit_user", NULL, "-e", "/frobnicate", NULL), 2);
    cli_free(&r);
    CU_ASSERT_EQUAL(cli(&r, "exit_user", NULL, "--no-such-option", NULL), 2);
    cli_free(&r);
    CU_ASSERT_EQUAL(cli(&r, "exit_user", NULL, "-e", "/help", "ws://127.0.0.1:1/", NULL), 2);   /* 2 URLs */
    cli_free(&r);
    /* Nothing listens on port 1. */
    CU_ASSERT_EQUAL(cli_url(&r, "exit_user", "ws://127.0.0.1:1/", "-e", "/help", NULL), 4);
    o = line_of(&r, "local", "connect_failed", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    cli_free(&r);
}

/* ---- first-use fixes (issue 13) --------------------------------------------- */

static void register_prompts_before_keygen_and_drops_typeahead(void)
{
    pty_run p;
    CU_ASSERT_EQUAL_FATAL(pty_start(&p, "ta_user", NULL, NULL), 0);
    CU_ASSERT_FATAL(pty_wait_for(&p, "/help lists the commands", 20000));
    CU_ASSERT_FATAL(pty_wait_for(&p, "> ", 20000));
    CU_ASSERT_FATAL(pty_wait_no_echo(&p, 20000));   /* libedit reads: no echo by the terminal */
    /* A password typed before the prompt (here: together with the
     * command) must neither show nor become the answer. */
    pty_write(&p, "/register ta_user\nearly-typed-secret\n");
    CU_ASSERT_FATAL(pty_wait_for(&p, "Password for ta_user: ", 20000));
    /* The prompt comes before the key pair is generated. */
    CU_ASSERT_PTR_NULL(strstr(p.out, "generating a"));
    pty_write(&p, PASSWORD "\n");
    CU_ASSERT_FATAL(pty_wait_for(&p, "Repeat it: ", 20000));
    pty_write(&p, PASSWORD "\n");
    CU_ASSERT(pty_wait_for(&p, "generating a 3072-bit key pair", 20000));
    CU_ASSERT(pty_wait_for(&p, "logged in as ta_user", 30000));
    CU_ASSERT_PTR_NULL(strstr(p.out, "early-typed-secret"));
    if (strstr(p.out, "early-typed-secret"))
        fprintf(stderr, "pty output:\n%s\n", p.out);
    CU_ASSERT_PTR_NULL(strstr(p.out, PASSWORD));   /* no echo of the answers either */
    pty_write(&p, "/quit\n");
    CU_ASSERT_EQUAL(pty_finish(&p, 20000), 0);
    cli_run r;   /* the password set is the one typed at the prompt */
    CU_ASSERT_EQUAL(cli(&r, "ta_user", PASSWORD, "-e", "/login ta_user", NULL), 0);
    cli_free(&r);
}

static void password_and_room_name_rules_are_checked_locally(void)
{
    register_user("rule_user");
    cli_run r;
    CU_ASSERT_EQUAL(cli(&r, "rule_user", "short", "-e", "/login rule_user", NULL), 1);
    json_t *o = line_of(&r, "local", "bad_password", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_PTR_NOT_NULL(strstr(jstr(o, "message", NULL), "8 to 1024 bytes"));
    json_decref(o);
    CU_ASSERT_PTR_NULL(strstr(r.out, "\"kind\":\"reply\""));   /* nothing sent */
    CU_ASSERT_PTR_NULL(strstr(r.out, "\"kind\":\"error\""));
    cli_free(&r);
    CU_ASSERT_EQUAL(cli(&r, "rule_user2", "short", "-e", "/register rule_user2", NULL), 1);
    o = line_of(&r, "local", "bad_password", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    o = line_of(&r, "local", "key_created", 0);   /* no key was made for it */
    CU_ASSERT_PTR_NULL(o);
    json_decref(o);
    cli_free(&r);
    CU_ASSERT_EQUAL(cli(&r, "rule_user", PASSWORD, "-e", "/login rule_user", "-e", "/join bad/room", "-e",
                        "/join a23456789012345678901234567890123", "-e", "/join ok.room-1", NULL),
                    2);
    o = line_of(&r, "local", "bad_room_name", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_PTR_NOT_NULL(strstr(jstr(o, "message", NULL), "1 to 32 characters of A-Z a-z 0-9 _ . -"));
    json_decref(o);
    o = line_of(&r, "local", "bad_room_name", 1);   /* 33 characters */
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    o = line_of(&r, "reply", "join_room", 0);   /* only the valid one went out */
    CU_ASSERT_STRING_EQUAL(o ? jstr(o, "payload", "room") : "", "ok.room-1");
    json_decref(o);
    o = line_of(&r, "reply", "join_room", 1);
    CU_ASSERT_PTR_NULL(o);
    json_decref(o);
    cli_free(&r);
}

static void call_sends_any_action_and_prints_the_reply(void)
{
    register_user("call_user");
    cli_run r;
    CU_ASSERT_EQUAL(cli(&r, "call_user", PASSWORD, "-e", "/login call_user", "-e",
                        "/call join_room {\"room_name\": \"Call_Room\"}", "-e", "/call get_users", "-e",
                        "/call join_room {\"room_name\": 5}", NULL),
                    1);
    json_t *o = line_of(&r, "reply", "join_room", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_STRING_EQUAL(jstr(o, "command", NULL), "call");
    CU_ASSERT_STRING_EQUAL(jstr(o, "payload", "room"), "Call_Room");
    json_decref(o);
    o = line_of(&r, "reply", "get_users", 0);
    CU_ASSERT_STRING_EQUAL(o ? jstr(o, "payload", "room") : "", "Call_Room");
    json_decref(o);
    o = line_of(&r, "error", "error", 0);   /* the server's 1004, as it came */
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(o, "payload"), "code")), 1004);
    CU_ASSERT_STRING_EQUAL(jstr(o, "command", NULL), "call");
    json_decref(o);
    cli_free(&r);
    /* Checked before sending: JSON, an object, an action name. */
    CU_ASSERT_EQUAL(cli(&r, "call_user", PASSWORD, "-e", "/login call_user", "-e", "/call join_room {oops",
                        "-e", "/call join_room [1]", "-e", "/call bad-name {}", NULL),
                    2);
    o = line_of(&r, "local", "bad_json", 0);
    CU_ASSERT_PTR_NOT_NULL(o ? strstr(jstr(o, "message", NULL), "not valid JSON") : NULL);
    json_decref(o);
    o = line_of(&r, "local", "bad_json", 1);
    CU_ASSERT_PTR_NOT_NULL(o ? strstr(jstr(o, "message", NULL), "JSON object") : NULL);
    json_decref(o);
    o = line_of(&r, "local", "usage", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    CU_ASSERT_PTR_NULL(strstr(r.out, "\"command\":\"call\""));
    cli_free(&r);
}

static void rooms_lists_rooms_and_me_sends_an_action(void)
{
    register_user("me_recv");
    register_user("me_send");
    cli_run rx, tx;
    CU_ASSERT_EQUAL_FATAL(cli_start(&rx, "me_recv", PASSWORD, "-e", "/login me_recv", "-e", "/join me_room",
                                    "--wait-events", "1", "--wait-action", "public_message", "--wait-ms",
                                    "15000", NULL),
                          0);
    CU_ASSERT_FATAL(cli_wait_for(&rx, "\"action\":\"join_room\"", 15000));
    CU_ASSERT_EQUAL(cli(&tx, "me_send", PASSWORD, "-e", "/login me_send", "-e", "/join Empty_Room", "-e",
                        "/join me_room", "-e", "/rooms", "-e", "/me waves", NULL),
                    0);
    json_t *o = line_of(&tx, "reply", "list_rooms", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_STRING_EQUAL(jstr(o, "command", NULL), "rooms");
    const json_t *rooms = json_object_get(json_object_get(o, "payload"), "rooms");
    int seen_me = 0, seen_empty = 0, seen_general = 0;
    size_t i;
    json_t *item;
    json_array_foreach(rooms, i, item) {
        const char *name = jstr(item, "room", NULL);
        json_int_t users = json_integer_value(json_object_get(item, "users"));
        if (strcmp(name, "me_room") == 0)
            seen_me = users == 2;
        else if (strcmp(name, "Empty_Room") == 0)
            seen_empty = users == 0;
        else if (strcmp(name, "general") == 0)
            seen_general = 1;
        if (i > 0)   /* sorted without regard to case */
            CU_ASSERT_TRUE(strcasecmp(jstr(json_array_get(rooms, i - 1), "room", NULL), name) < 0);
    }
    CU_ASSERT_TRUE(seen_me);
    CU_ASSERT_TRUE(seen_empty);
    CU_ASSERT_TRUE(seen_general);
    CU_ASSERT_TRUE(json_is_false(json_object_get(json_object_get(o, "payload"), "more")));
    json_decref(o);
    o = line_of(&tx, "reply", "public_message", 0);
    CU_ASSERT_STRING_EQUAL(o ? jstr(o, "command", NULL) : "", "me");
    json_decref(o);
    cli_free(&tx);
    CU_ASSERT_EQUAL(cli_finish(&rx, 20000), 0);
    o = line_of(&rx, "event", "public_message", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_STRING_EQUAL(jstr(o, "payload", "content"), "/me waves");
    CU_ASSERT_STRING_EQUAL(jstr(o, "payload", "sender"), "me_send");
    json_decref(o);
    cli_free(&rx);
}

static void live_private_message_is_marked_read(void)
{
    register_user("rd_from");
    register_user("rd_to");
    cli_run rx, tx;
    CU_ASSERT_EQUAL_FATAL(cli_start(&rx, "rd_to", PASSWORD, "-e", "/login rd_to", "--wait-events", "1",
                                    "--wait-action", "private_message", "--wait-ms", "15000", NULL),
                          0);
    CU_ASSERT_FATAL(cli_wait_for(&rx, "\"action\":\"login_success\"", 15000));
    CU_ASSERT_EQUAL(cli(&tx, "rd_from", PASSWORD, "-e", "/login rd_from", "-e", "/msg rd_to read me",
                        "--wait-events", "1", "--wait-action", "message_read", "--wait-ms", "15000", NULL),
                    0);
    json_t *sent = line_of(&tx, "reply", "message_delivered", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sent);
    json_t *o = line_of(&tx, "event", "message_read", 0);   /* the read receipt */
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_STRING_EQUAL(jstr(o, "payload", "reader"), "rd_to");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(o, "payload"), "message_id")),
                    json_integer_value(json_object_get(json_object_get(sent, "payload"), "message_id")));
    json_decref(o);
    json_decref(sent);
    cli_free(&tx);
    CU_ASSERT_EQUAL(cli_finish(&rx, 20000), 0);
    cli_free(&rx);
    /* Nothing left unread. */
    CU_ASSERT_EQUAL(cli(&rx, "rd_to", PASSWORD, "-e", "/login rd_to", "-e", "/unread", NULL), 0);
    o = line_of(&rx, "reply", "unread_messages", 0);
    CU_ASSERT_EQUAL(o ? json_array_size(json_object_get(json_object_get(o, "payload"), "messages")) : 99, 0);
    json_decref(o);
    cli_free(&rx);
}

/* A server of its own, on the storage of `before` (NULL: a new one) and
 * with the harness's key (the same in every server of the process), so
 * that a restart keeps both. */
static int start_own_server(harness_server *s, const harness_server *before, int port)
{
    char conf[1024];
    char server[256] = "";
    if (port)
        snprintf(server, sizeof server,
                 "server = { port = %d; bind = \"127.0.0.1\"; key_file = \"@DIR@/server_key.pem\"; "
                 "key_bits = 2048; " HARNESS_IO_THREADS " };\n", port);
    snprintf(conf, sizeof conf,
             "%splugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\", \"heartbeat\", \"rooms\", "
             "\"messaging\", \"friends\"]; };\n"
             "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1; "
             "registrations_per_hour = 1000; };\n",
             server);
    return before ? harness_start_on(s, before, conf, NULL) : harness_start(s, conf);
}

static void rename_dir(const char *cfg, const char *kind, const char *from, const char *to)
{
    char dir[512], a[800], b[800];
    cfg_path(dir, sizeof dir, cfg);
    snprintf(a, sizeof a, "%s/%s/%s", dir, kind, from);
    snprintf(b, sizeof b, "%s/%s/%s", dir, kind, to);
    CU_ASSERT_EQUAL(rename(a, b), 0);
}

static void keys_follow_the_server_fingerprint_across_ports(void)
{
    harness_server s1, s2;
    memset(&s2, 0, sizeof s2);
    CU_ASSERT_EQUAL_FATAL(start_own_server(&s1, NULL, 0), 0);
    cli_run r;
    CU_ASSERT_EQUAL(cli_at(&r, "fp_to", PASSWORD, s1.url, "-e", "/register fp_to", NULL), 0);
    cli_free(&r);
    CU_ASSERT_EQUAL(cli_at(&r, "fp_from", PASSWORD, s1.url, "-e", "/register fp_from", "-e",
                           "/msg fp_to written before the move", NULL),
                    0);
    cli_free(&r);
    /* fp_to's files as the earlier CLI laid them out: per host_port. */
    char legacy[64];
    snprintf(legacy, sizeof legacy, "127.0.0.1_%d", s1.port);
    rename_dir("fp_to", "keys", server_dir, legacy);
    CU_ASSERT_EQUAL(cli_at(&r, "fp_to", PASSWORD, s1.url, "-e", "/login fp_to", NULL), 0);
    json_t *o = line_of(&r, "local", "keys_migrated", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    o = line_of(&r, "local", "no_private_key", 0);
    CU_ASSERT_PTR_NULL(o);
    json_decref(o);
    cli_free(&r);
    char dir[512], path[800];
    cfg_path(dir, sizeof dir, "fp_to");
    snprintf(path, sizeof path, "%s/keys/%s/fp_to.pem", dir, server_dir);
    file_mode_is(path, 0600);
    snprintf(path, sizeof path, "%s/keys/%s", dir, legacy);
    CU_ASSERT_NOT_EQUAL(access(path, F_OK), 0);   /* moved, not copied */
    /* The same server (key and database) on another port: the message
     * written before is still readable. */
    CU_ASSERT_EQUAL(harness_stop(&s1, SIGTERM, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(start_own_server(&s2, &s1, 0), 0);
    CU_ASSERT_NOT_EQUAL(s2.port, s1.port);
    CU_ASSERT_EQUAL(cli_at(&r, "fp_to", PASSWORD, s2.url, "-e", "/login fp_to", "-e", "/unread", NULL), 0);
    json_t *item = unread_item(&r, "written before the move", 0, 0);
    CU_ASSERT_PTR_NOT_NULL(item);
    CU_ASSERT_STRING_EQUAL(item ? jstr(item, "e2e", "status") : "", "ok");
    json_decref(item);
    cli_free(&r);
    /* s2 first: it runs on s1's storage (on SQLite, a file in s1's directory). */
    CU_ASSERT_EQUAL(harness_cleanup(&s2), 0);
    CU_ASSERT_EQUAL(harness_cleanup(&s1), 0);
}

static void exported_key_lets_a_second_device_read(void)
{
    register_user("ex_user");
    register_user("ex_other");
    char file[400], other_file[400];
    snprintf(file, sizeof file, "%s/ex_user.key", base_dir);
    snprintf(other_file, sizeof other_file, "%s/ex_other.key", base_dir);
    setenv("SM_KEY_PASSPHRASE", "a long passphrase", 1);
    cli_run r;
    char cmd[450];
    snprintf(cmd, sizeof cmd, "/export-key %s", file);
    CU_ASSERT_EQUAL(cli(&r, "ex_user", PASSWORD, "-e", "/login ex_user", "-e", cmd, NULL), 0);
    json_t *o = line_of(&r, "local", "key_exported", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    cli_free(&r);
    file_mode_is(file, 0600);
    char *pem = read_text(file);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pem);
    CU_ASSERT_PTR_NOT_NULL(strstr(pem, "-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    free(pem);
    CU_ASSERT_EQUAL(cli(&r, "ex_user", PASSWORD, "-e", "/login ex_user", "-e", cmd, NULL), 1);   /* exists */
    cli_free(&r);
    snprintf(cmd, sizeof cmd, "/export-key %s", other_file);
    CU_ASSERT_EQUAL(cli(&r, "ex_other", PASSWORD, "-e", "/login ex_other", "-e", cmd, "-e",
                        "/msg ex_user for both devices", NULL),
                    0);
    cli_free(&r);
    /* The second device: no key at first. */
    snprintf(cmd, sizeof cmd, "/import-key %s", other_file);
    CU_ASSERT_EQUAL(cli(&r, "ex_user_2", PASSWORD, "-e", "/login ex_user", "-e", cmd, NULL), 1);
    o = line_of(&r, "local", "no_private_key", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    o = line_of(&r, "local", "key_mismatch", 0);   /* another user's key is refused */
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    cli_free(&r);
    snprintf(cmd, sizeof cmd, "/import-key %s", file);
    setenv("SM_KEY_PASSPHRASE", "the wrong passphrase", 1);
    CU_ASSERT_EQUAL(cli(&r, "ex_user_2", PASSWORD, "-e", "/login ex_user", "-e", cmd, NULL), 1);
    o = line_of(&r, "local", "import_failed", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    cli_free(&r);
    setenv("SM_KEY_PASSPHRASE", "a long passphrase", 1);
    CU_ASSERT_EQUAL(cli(&r, "ex_user_2", PASSWORD, "-e", "/login ex_user", "-e", cmd, "-e", "/unread", NULL), 0);
    unsetenv("SM_KEY_PASSPHRASE");
    o = line_of(&r, "local", "key_imported", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    json_t *item = unread_item(&r, "for both devices", 0, 0);
    CU_ASSERT_PTR_NOT_NULL(item);
    CU_ASSERT_STRING_EQUAL(item ? jstr(item, "e2e", "status") : "", "ok");
    json_decref(item);
    cli_free(&r);
    /* Installed: the next login there loads it. */
    CU_ASSERT_EQUAL(cli(&r, "ex_user_2", PASSWORD, "-e", "/login ex_user", NULL), 0);
    o = line_of(&r, "local", "no_private_key", 0);
    CU_ASSERT_PTR_NULL(o);
    json_decref(o);
    cli_free(&r);
}

static void interactive_client_reconnects_and_keeps_the_typed_line(void)
{
    harness_server s1, s2;
    memset(&s2, 0, sizeof s2);
    CU_ASSERT_EQUAL_FATAL(start_own_server(&s1, NULL, 0), 0);
    cli_run r;
    CU_ASSERT_EQUAL(cli_at(&r, "rc_user", PASSWORD, s1.url, "-e", "/register rc_user", NULL), 0);
    cli_free(&r);
    CU_ASSERT_EQUAL(cli_at(&r, "rc_peer", PASSWORD, s1.url, "-e", "/register rc_peer", NULL), 0);
    cli_free(&r);
    pty_run p;
    CU_ASSERT_EQUAL_FATAL(pty_start(&p, "rc_user", PASSWORD, s1.url), 0);
    CU_ASSERT_FATAL(pty_wait_for(&p, "/help lists the commands", 20000));
    CU_ASSERT_FATAL(pty_wait_for(&p, "> ", 20000));
    pty_write(&p, "/login rc_user\n");
    CU_ASSERT_FATAL(pty_wait_for(&p, "logged in as rc_user", 20000));
    pty_write(&p, "/join rc_room\n");
    CU_ASSERT_FATAL(pty_wait_for(&p, "joined rc_room", 20000));
    pty_write(&p, "/me waves\n");   /* shown as an action */
    CU_ASSERT(pty_wait_for(&p, "* rc_user waves", 20000));
    pty_write(&p, "/rooms\n");
    CU_ASSERT(pty_wait_for(&p, "* rooms: general (0), rc_room (1)", 20000));
    pty_write(&p, "/call get_users\n");   /* the reply as indented JSON */
    CU_ASSERT(pty_wait_for(&p, "* reply get_users:", 20000));
    CU_ASSERT(pty_wait_for(&p, "\"room\": \"rc_room\"", 5000));
    pty_write(&p, "half");
    CU_ASSERT(pty_wait_for(&p, "half", 5000));
    /* The server restarts on the same port with the same key. */
    int port = s1.port;
    CU_ASSERT_EQUAL(harness_stop(&s1, SIGTERM, NULL), 0);
    CU_ASSERT(pty_wait_for(&p, "reconnecting", 20000));
    CU_ASSERT_EQUAL_FATAL(start_own_server(&s2, &s1, port), 0);
    CU_ASSERT_FATAL(pty_wait_for(&p, "reconnected to", 40000));
    CU_ASSERT(pty_wait_for(&p, "in room rc_room", 1000));
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&s2, &c), SM_CLIENT_OK);
    sm_message *m = harness_callf(c, "login", "{s:s,s:s}", "username", "rc_peer", "password", PASSWORD);
    CU_ASSERT_STRING_EQUAL(m ? m->action : "", "login_success");
    sm_message_free(m);
    m = harness_callf(c, "join_room", "{s:s}", "room_name", "rc_room");
    CU_ASSERT_STRING_EQUAL(m ? m->action : "", "join_room");
    /* The CLI is back in its room, logged in again. */
    const json_t *users = m ? json_object_get(m->payload, "users") : NULL;
    CU_ASSERT_EQUAL(json_array_size(users), 2);
    sm_message_free(m);
    /* The half-typed line is still there: finishing it sends it whole. */
    pty_write(&p, " done\n");
    int got = 0;
    long long end = now_ms() + 20000;
    while (!got && now_ms() < end) {
        m = NULL;
        if (sm_client_next_event(c, 500, &m) == SM_CLIENT_OK && strcmp(m->action, "public_message") == 0) {
            CU_ASSERT_STRING_EQUAL(jstr(m->payload, "content", NULL), "half done");
            CU_ASSERT_STRING_EQUAL(jstr(m->payload, "sender", NULL), "rc_user");
            got = 1;
        }
        sm_message_free(m);
    }
    CU_ASSERT_TRUE(got);
    sm_client_close(c, 1000);
    pty_write(&p, "/quit\n");
    CU_ASSERT_EQUAL(pty_finish(&p, 20000), 0);
    CU_ASSERT_EQUAL(harness_cleanup(&s2), 0);
    CU_ASSERT_EQUAL(harness_cleanup(&s1), 0);
}

static void batch_reconnects_with_the_option(void)
{
    harness_server s1, s2;
    memset(&s2, 0, sizeof s2);
    CU_ASSERT_EQUAL_FATAL(start_own_server(&s1, NULL, 0), 0);
    cli_run r;
    CU_ASSERT_EQUAL(cli_at(&r, "brc_user", PASSWORD, s1.url, "-e", "/register brc_user", NULL), 0);
    cli_free(&r);
    CU_ASSERT_EQUAL(cli_at(&r, "brc_peer", PASSWORD, s1.url, "-e", "/register brc_peer", NULL), 0);
    cli_free(&r);
    CU_ASSERT_EQUAL_FATAL(cli_start_at(&r, "brc_user", PASSWORD, s1.url, "--reconnect", "-e",
                                       "/login brc_user", "-e", "/join brc_room", "--wait-events", "1",
                                       "--wait-action", "public_message", "--wait-ms", "40000", NULL),
                          0);
    CU_ASSERT_FATAL(cli_wait_for(&r, "\"action\":\"join_room\"", 15000));
    int port = s1.port;
    CU_ASSERT_EQUAL(harness_stop(&s1, SIGTERM, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(start_own_server(&s2, &s1, port), 0);
    CU_ASSERT_FATAL(cli_wait_for(&r, "\"what\":\"reconnected\"", 40000));
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&s2, &c), SM_CLIENT_OK);
    sm_message *m = harness_callf(c, "login", "{s:s,s:s}", "username", "brc_peer", "password", PASSWORD);
    sm_message_free(m);
    m = harness_callf(c, "join_room", "{s:s}", "room_name", "brc_room");
    sm_message_free(m);
    m = harness_callf(c, "public_message", "{s:s}", "content", "after the restart");
    CU_ASSERT_STRING_EQUAL(m ? m->action : "", "public_message");
    sm_message_free(m);
    CU_ASSERT_EQUAL(cli_finish(&r, 30000), 0);   /* lost and recovered: still 0 */
    json_t *o = line_of(&r, "event", "public_message", 0);
    CU_ASSERT_STRING_EQUAL(o ? jstr(o, "payload", "content") : "", "after the restart");
    json_decref(o);
    o = line_of(&r, "local", "connection_closed", 0);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_decref(o);
    cli_free(&r);
    sm_client_close(c, 1000);
    CU_ASSERT_EQUAL(harness_cleanup(&s2), 0);
    CU_ASSERT_EQUAL(harness_cleanup(&s1), 0);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(first_connection_pins_the_server_key),
        SM_TEST(changed_server_key_is_refused_with_exit_3),
        SM_TEST(accept_new_key_replaces_the_pin),
        SM_TEST(commands_from_stdin_in_batch_mode),
        SM_TEST(register_creates_a_key_pair_and_registers_its_public_half),
        SM_TEST(register_refuses_an_existing_key_below_2048_bits),
        SM_TEST(batch_reads_the_password_from_env_or_file_only),
        SM_TEST(public_message_reaches_another_cli),
        SM_TEST(e2e_private_message_is_verified_and_decrypted),
        SM_TEST(unsigned_plain_message_is_shown_as_unsigned),
        SM_TEST(wrong_signature_is_shown_as_bad_signature),
        SM_TEST(replayed_message_is_withheld),
        SM_TEST(changed_contact_key_refuses_sending_and_flags_messages),
        SM_TEST(exit_status_tells_server_errors_usage_and_connection),
        SM_TEST(register_prompts_before_keygen_and_drops_typeahead),
        SM_TEST(password_and_room_name_rules_are_checked_locally),
        SM_TEST(call_sends_any_action_and_prints_the_reply),
        SM_TEST(rooms_lists_rooms_and_me_sends_an_action),
        SM_TEST(live_private_message_is_marked_read),
        SM_TEST(keys_follow_the_server_fingerprint_across_ports),
        SM_TEST(exported_key_lets_a_second_device_read),
        SM_TEST(interactive_client_reconnects_and_keeps_the_typed_line),
        SM_TEST(batch_reconnects_with_the_option),
        SM_TEST_END,
    };
    return sm_test_run("cli", cases, init, fini);
}
