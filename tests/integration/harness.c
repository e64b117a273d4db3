/* See harness.h. Test support code: failures are printed to stderr with
 * enough context to debug a red CI run without rerunning it. */
#define _GNU_SOURCE   /* nftw, memmem */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "crypto.h"
#include "harness_storage.h"

#ifndef SM_SERVER_PATH
#error "SM_SERVER_PATH must name the server binary"
#endif
#ifndef SM_TEST_PLUGIN_DIR
#define SM_TEST_PLUGIN_DIR ""
#endif
#ifndef SM_PLUGIN_BUILD_DIR
#define SM_PLUGIN_BUILD_DIR ""
#endif
#ifndef SM_SOURCE_DIR
#define SM_SOURCE_DIR ""
#endif

#define START_TIMEOUT_MS 20000
#define STOP_TIMEOUT_MS 10000
#define LOG_TAIL_BYTES 12000
#define LOG_SCAN_CHUNK (64 * 1024)
#define MAX_NEEDLE 1024
#define MAX_ARGS 32

/* ---- small utilities ------------------------------------------------------ */

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int harness_path(const harness_server *s, const char *name, char *buf, size_t buf_len)
{
    int n = snprintf(buf, buf_len, "%s/%s", s->dir, name);
    return n < 0 || (size_t)n >= buf_len ? -1 : 0;
}

/* Reads a whole file (at most max bytes) into a NUL-terminated buffer. */
static char *read_file(const char *path, long max, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len + 1 >= cap) {
            if ((long)cap >= max) {
                free(buf);
                buf = NULL;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - 1 - len, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    if (!buf)
        return NULL;
    buf[len] = '\0';
    if (len_out)
        *len_out = len;
    return buf;
}

/* A growable string for building the config file. */
typedef struct sbuf {
    char *data;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* Appends text with the @NAME@ placeholders of harness.h replaced;
 * io_threads is what @IO_THREADS@ stands for. */
static void sb_expand(sbuf *b, const char *text, const char *dir, int io_threads)
{
    char io[16];
    snprintf(io, sizeof io, "%d", io_threads);
    /* in_dir: the value is a file name inside the server's directory. */
    const struct { const char *name; const char *value; int in_dir; } vars[] = {
        {"@DIR@", "", 1},
        {"@TEST_PLUGIN_DIR@", SM_TEST_PLUGIN_DIR, 0},
        {"@PLUGIN_BUILD_DIR@", SM_PLUGIN_BUILD_DIR, 0},
        {"@SOURCE_DIR@", SM_SOURCE_DIR, 0},
        {"@TLS_CERT@", "/" HARNESS_TLS_CERT, 1},
        {"@TLS_KEY@", "/" HARNESS_TLS_KEY, 1},
        {"@IO_THREADS@", io, 0},
    };
    const char *p = text;
    while (*p) {
        int matched = 0;
        if (*p == '@') {
            for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
                size_t n = strlen(vars[i].name);
                if (strncmp(p, vars[i].name, n) == 0) {
                    if (vars[i].in_dir)
                        sb_str(b, dir);
                    sb_str(b, vars[i].value);
                    p += n;
                    matched = 1;
                    break;
                }
            }
        }
        if (!matched)
            sb_add(b, p++, 1);
    }
}

int harness_config_defines(const char *text, const char *name)
{
    if (!text)
        return 0;
    size_t n = strlen(name);
    for (const char *line = text; line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        if (strncmp(line, name, n) != 0)
            continue;
        const char *p = line + n;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '=' || *p == ':')
            return 1;
    }
    return 0;
}

/* ---- the server key, generated once per process ------------------------- */

static char *cached_key_pem;

static int write_cached_key(const char *path)
{
    if (!cached_key_pem) {
        EVP_PKEY *key = NULL;
        if (crypto_rsa_generate(2048, &key) != 0)
            return -1;
        BIO *bio = BIO_new(BIO_s_mem());
        char *data = NULL;
        long n = 0;
        if (bio && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1)
            n = BIO_get_mem_data(bio, &data);
        if (n > 0 && (cached_key_pem = malloc((size_t)n + 1)) != NULL) {
            memcpy(cached_key_pem, data, (size_t)n);
            cached_key_pem[n] = '\0';
        }
        BIO_free(bio);
        crypto_pkey_free(key);
        if (!cached_key_pem)
            return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    size_t len = strlen(cached_key_pem), done = 0;
    while (done < len) {
        ssize_t w = write(fd, cached_key_pem + done, len - done);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)w;
    }
    return close(fd);
}

/* ---- a self-signed TLS certificate ------------------------------------------ */

static int write_pem_file(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return -1;
    }
    int ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1
                 : PEM_write_X509(f, cert) == 1;
    ok = fclose(f) == 0 && ok;
    return ok ? 0 : -1;
}

int harness_write_key(const char *path)
{
    EVP_PKEY *key = NULL;
    if (crypto_rsa_generate(2048, &key) != 0)
        return -1;
    int rc = write_pem_file(path, 0600, key, NULL);
    crypto_pkey_free(key);
    return rc;
}

/* EC P-256 (fast to generate), valid for a day, for 127.0.0.1, ::1 and
 * localhost; it is its own CA so clients can use it as ca_file. */
static int write_tls_cert(const harness_server *s)
{
    char cert_path[512], key_path[512];
    if (harness_path(s, HARNESS_TLS_CERT, cert_path, sizeof cert_path) != 0
        || harness_path(s, HARNESS_TLS_KEY, key_path, sizeof key_path) != 0)
        return -1;
    int rc = -1;
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_EXTENSION *san = NULL, *bc = NULL;
    if (!key || !x)
        goto out;
    X509_NAME *name = X509_get_subject_name(x);
    X509V3_CTX v3;
    if (X509_set_version(x, 2) != 1 || ASN1_INTEGER_set(X509_get_serialNumber(x), 1) != 1
        || !X509_gmtime_adj(X509_getm_notBefore(x), -3600)
        || !X509_gmtime_adj(X509_getm_notAfter(x), 86400) || X509_set_pubkey(x, key) != 1
        || X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                      (const unsigned char *)"127.0.0.1", -1, -1, 0) != 1
        || X509_set_issuer_name(x, name) != 1)
        goto out;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    san = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
                              "IP:127.0.0.1,IP:::1,DNS:localhost");
    bc = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
    if (!san || !bc || X509_add_ext(x, san, -1) != 1 || X509_add_ext(x, bc, -1) != 1
        || X509_sign(x, key, EVP_sha256()) <= 0)
        goto out;
    if (write_pem_file(key_path, 0600, key, NULL) != 0
        || write_pem_file(cert_path, 0644, NULL, x) != 0)
        goto out;
    rc = 0;
out:
    X509_EXTENSION_free(san);
    X509_EXTENSION_free(bc);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

/* ---- config ---------------------------------------------------------------- */

int harness_io_threads(void)
{
    const char *v = getenv("SM_TEST_IO_THREADS");
    if (!v || !*v)
        return 1;
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    /* The upper bound is the server's to check (its message names the key). */
    if (errno != 0 || end == v || *end != '\0' || n < 1 || n > INT_MAX) {
        fprintf(stderr, "harness: SM_TEST_IO_THREADS=\"%s\" is not a positive integer\n", v);
        return -1;
    }
    return (int)n;
}

static int write_config(const harness_server *s, const char *extra)
{
    int io_threads = harness_io_threads();
    if (io_threads < 0)
        return -1;
    /* Every server a suite starts runs with the chosen count: a server
     * section of the suite's own that forgot the key would silently run
     * with the machine's default instead. */
    if (harness_config_defines(extra, "server") && !strstr(extra, "io_threads")) {
        fprintf(stderr, "harness: the suite's server section does not set io_threads (use "
                        "HARNESS_SERVER_BASE or HARNESS_IO_THREADS in it)\n");
        return -1;
    }
    sbuf b = {0};
    char line[1024];
    if (!harness_config_defines(extra, "server")) {
        sb_str(&b, "server = { ");
        sb_expand(&b, HARNESS_SERVER_BASE, s->dir, io_threads);
        sb_str(&b, " };\n");
    }
    if (!harness_config_defines(extra, "storage")) {
        char *storage = harness_storage_section(s);
        if (!storage)
            b.failed = 1;
        else
            sb_str(&b, storage);
        free(storage);
    }
    if (!harness_config_defines(extra, "plugins")) {
        snprintf(line, sizeof line, "plugins = { dir = \"%s\"; load = [\"testcmds\"]; };\n",
                 SM_TEST_PLUGIN_DIR);
        sb_str(&b, line);
    }
    if (!harness_config_defines(extra, "log"))
        sb_str(&b, "log = { level = \"info\"; };\n");
    /* A suite talks to one server from 127.0.0.1 for minutes: on a fast
     * machine its handshakes go over the default 60 a minute. Suites that
     * test the limit write their own limits section. */
    if (!harness_config_defines(extra, "limits"))
        sb_str(&b, "limits = { handshakes_per_address = 100000; };\n");
    if (extra) {
        sb_expand(&b, extra, s->dir, io_threads);
        sb_str(&b, "\n");
    }
    char path[512];
    int rc = -1;
    if (b.failed || harness_path(s, "server.conf", path, sizeof path) != 0)
        goto out;
    FILE *f = fopen(path, "w");
    if (!f)
        goto out;
    int ok = fwrite(b.data, 1, b.len, f) == b.len;
    ok = fclose(f) == 0 && ok;
    rc = ok ? 0 : -1;
out:
    free(b.data);
    return rc;
}

/* ---- process control ------------------------------------------------------ */

static pid_t spawn_server(const harness_server *s, const char *const *extra_args)
{
    char conf[512], port_file[512], log[512];
    if (harness_path(s, "server.conf", conf, sizeof conf) != 0
        || harness_path(s, "port", port_file, sizeof port_file) != 0
        || harness_path(s, "server.log", log, sizeof log) != 0)
        return -1;
    const char *argv[MAX_ARGS + 8];
    size_t argc = 0;
    argv[argc++] = SM_SERVER_PATH;
    argv[argc++] = "-c";
    argv[argc++] = conf;
    argv[argc++] = "--port-file";
    argv[argc++] = port_file;
    for (size_t i = 0; extra_args && extra_args[i]; i++) {
        if (i >= MAX_ARGS)
            return -1;
        argv[argc++] = extra_args[i];
    }
    argv[argc] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* Child: never return into the test. A server outliving a crashed test
     * would hold its port and directory. */
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
        _exit(126);
    if (fd > STDERR_FILENO)
        close(fd);
    if (chdir(s->dir) != 0)
        _exit(126);
    signal(SIGPIPE, SIG_DFL);
    execv(SM_SERVER_PATH, (char *const *)argv);
    dprintf(STDERR_FILENO, "harness: exec %s: %s\n", SM_SERVER_PATH, strerror(errno));
    _exit(127);
}

static int decode_status(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

/* Reads the port file once the server wrote it (it is renamed into
 * place, so a complete read is a full line). */
static int read_port(const harness_server *s)
{
    char path[512];
    if (harness_path(s, "port", path, sizeof path) != 0)
        return -1;
    char *text = read_file(path, 64, NULL);
    if (!text)
        return -1;
    char *end = NULL;
    long v = strtol(text, &end, 10);
    int ok = end != text && *end == '\n' && v > 0 && v < 65536;
    free(text);
    return ok ? (int)v : -1;
}

/* harness_spawn() on the storage of other (NULL: a storage of its own). */
static int spawn_on(harness_server *s, const harness_server *other, const char *extra_config,
                    const char *const *args)
{
    memset(s, 0, sizeof *s);
    signal(SIGPIPE, SIG_IGN);
    s->failures_at_start = CU_get_number_of_failures();
    snprintf(s->dir, sizeof s->dir, "/tmp/sm-it-XXXXXX");
    if (!mkdtemp(s->dir)) {
        fprintf(stderr, "harness: mkdtemp: %s\n", strerror(errno));
        s->dir[0] = '\0';
        return -1;
    }
    if (other && harness_config_defines(extra_config, "storage")) {
        fprintf(stderr, "harness: a server on another's storage cannot have its own storage "
                        "section\n");
        return -1;
    }
    if (harness_storage_prepare(s, other) != 0)
        return -1;
    char key[512];
    if (harness_path(s, "server_key.pem", key, sizeof key) != 0 || write_cached_key(key) != 0) {
        fprintf(stderr, "harness: cannot write the server key in %s\n", s->dir);
        return -1;
    }
    if (extra_config && (strstr(extra_config, "@TLS_CERT@") || strstr(extra_config, "@TLS_KEY@"))
        && write_tls_cert(s) != 0) {
        fprintf(stderr, "harness: cannot write a TLS certificate in %s\n", s->dir);
        return -1;
    }
    if (write_config(s, extra_config) != 0) {
        fprintf(stderr, "harness: cannot write %s/server.conf\n", s->dir);
        return -1;
    }
    pid_t pid = spawn_server(s, args);
    if (pid < 0) {
        fprintf(stderr, "harness: cannot start %s: %s\n", SM_SERVER_PATH, strerror(errno));
        return -1;
    }
    s->pid = pid;
    return 0;
}

int harness_spawn(harness_server *s, const char *extra_config, const char *const *args)
{
    return spawn_on(s, NULL, extra_config, args);
}

/* The second half of harness_start_args(): waits for the port file. */
static int wait_listening(harness_server *s)
{
    pid_t pid = s->pid;
    long long deadline = now_ms() + START_TIMEOUT_MS;
    for (;;) {
        int port = read_port(s);
        if (port > 0) {
            s->port = port;
            break;
        }
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            s->pid = 0;
            fprintf(stderr, "harness: server exited with status %d before listening\n",
                    decode_status(status));
            harness_dump_log(s);
            return -1;
        }
        if (now_ms() > deadline) {
            fprintf(stderr, "harness: no port file after %d ms\n", START_TIMEOUT_MS);
            harness_dump_log(s);
            harness_stop(s, SIGKILL, NULL);
            return -1;
        }
        sleep_ms(10);
    }
    snprintf(s->url, sizeof s->url, "ws://127.0.0.1:%d/", s->port);
    snprintf(s->wss_url, sizeof s->wss_url, "wss://127.0.0.1:%d/", s->port);
    return 0;
}

int harness_spawn_on(harness_server *s, const harness_server *other, const char *extra_config,
                     const char *const *args)
{
    return spawn_on(s, other, extra_config, args);
}

int harness_wait_exit(harness_server *s, int timeout_ms, int *exit_status)
{
    if (s->pid <= 0)
        return -1;
    long long deadline = now_ms() + timeout_ms;
    int status = 0;
    pid_t r;
    while ((r = waitpid(s->pid, &status, WNOHANG)) == 0 && now_ms() < deadline)
        sleep_ms(10);
    if (r == 0)
        return -1;
    /* Not a stop: s->stopped stays as it was, so harness_cleanup() leaves
     * the status to the caller. */
    s->pid = 0;
    if (r < 0)
        return -1;
    if (exit_status)
        *exit_status = decode_status(status);
    return 0;
}

int harness_start_args(harness_server *s, const char *extra_config, const char *const *args)
{
    return spawn_on(s, NULL, extra_config, args) == 0 ? wait_listening(s) : -1;
}

int harness_start_on(harness_server *s, const harness_server *other, const char *extra_config,
                     const char *const *args)
{
    return spawn_on(s, other, extra_config, args) == 0 ? wait_listening(s) : -1;
}

int harness_start(harness_server *s, const char *extra_config)
{
    return harness_start_args(s, extra_config, NULL);
}

int harness_stop(harness_server *s, int sig, int *exit_status)
{
    if (s->pid <= 0)
        return -1;
    int status = 0, rc = 0;
    pid_t r = 0;
    s->stopped = 1;
    s->stop_signal = sig;
    s->stop_status = -1;
    if (sig != 0 && kill(s->pid, sig) != 0 && errno != ESRCH)
        fprintf(stderr, "harness: kill: %s\n", strerror(errno));
    long long deadline = now_ms() + STOP_TIMEOUT_MS;
    while ((r = waitpid(s->pid, &status, WNOHANG)) == 0 && now_ms() < deadline)
        sleep_ms(10);
    if (r == 0) {
        fprintf(stderr, "harness: server did not stop within %d ms of signal %d; killing it\n",
                STOP_TIMEOUT_MS, sig);
        kill(s->pid, SIGKILL);
        r = waitpid(s->pid, &status, 0);
        rc = -1;
    }
    s->pid = 0;
    if (r < 0)
        return -1;
    if (rc == 0)
        s->stop_status = decode_status(status);
    if (exit_status)
        *exit_status = decode_status(status);
    return rc;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int harness_cleanup(harness_server *s)
{
    int rc = 0;
    /* A server still running here must shut down cleanly: exit 0, which
     * under the sanitizers also means no leak at exit. So must one stopped
     * gracefully earlier, even when its caller did not look at the status
     * (a SIGKILL's status is the caller's business). */
    if (s->pid > 0)
        harness_stop(s, SIGTERM, NULL);
    int graceful = s->stop_signal == SIGTERM || s->stop_signal == SIGINT || s->stop_signal == 0;
    if (s->stopped && graceful && s->stop_status != 0) {
        fprintf(stderr, "harness: server in %s ended with status %d after signal %d\n", s->dir,
                s->stop_status, s->stop_signal);
        rc = -1;
    }
    s->stopped = 0;
    if (s->dir[0] == '\0') {
        harness_storage_release(s, 0);
        return rc;
    }
    /* Whatever the exit, a sanitizer report in the log fails the suite:
     * the server's overflows and leaks are test failures too. A log that
     * cannot be read fails it as well: an unchecked log is no evidence. */
    static const char *const reports[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                          "runtime error:", "WARNING: ThreadSanitizer"};
    for (size_t i = 0; i < sizeof reports / sizeof *reports; i++) {
        int found = harness_log_contains(s, reports[i]);
        if (found < 0) {
            fprintf(stderr, "harness: cannot read the server's log in %s: %s\n", s->dir,
                    strerror(errno));
            rc = -1;
            break;
        }
        if (found) {
            fprintf(stderr, "harness: the server's log in %s has \"%s\"\n", s->dir, reports[i]);
            rc = -1;
        }
    }
    int failed = rc != 0 || CU_get_number_of_failures() > s->failures_at_start;
    if (failed)
        harness_dump_log(s);
    /* After the stop above: no server of s's is connected to its schema. */
    harness_storage_release(s, failed && getenv("SM_KEEP_TEST_DIRS"));
    if (getenv("SM_KEEP_TEST_DIRS") || rc != 0)
        fprintf(stderr, "harness: keeping %s\n", s->dir);
    else if (nftw(s->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "harness: cannot remove %s: %s\n", s->dir, strerror(errno));
    s->dir[0] = '\0';
    return rc;
}

void harness_dump_log(const harness_server *s)
{
    char path[512];
    if (s->dir[0] == '\0' || harness_path(s, "server.log", path, sizeof path) != 0)
        return;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "harness: no server log at %s\n", path);
        return;
    }
    /* Only the tail is read, so a huge log costs nothing here. */
    char text[LOG_TAIL_BYTES + 1];
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    long from = size > LOG_TAIL_BYTES ? size - LOG_TAIL_BYTES : 0;
    size_t len = 0;
    if (size >= 0 && fseek(f, from, SEEK_SET) == 0)
        len = fread(text, 1, LOG_TAIL_BYTES, f);
    fclose(f);
    text[len] = '\0';
    const char *start = text;
    if (from > 0) {
        const char *nl = memchr(text, '\n', len);
        if (nl)
            start = nl + 1;
    }
    fprintf(stderr, "---- tail of %s ----\n%s---- end of server log ----\n", path, start);
}

/* 1 if the file contains needle, 0 if not, -1 if it cannot be read. Reads
 * in chunks, keeping the last strlen(needle) - 1 bytes of each, so a match
 * across chunks is found and no size is too large. */
static int file_contains(const char *path, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0 || n > MAX_NEEDLE) {
        errno = EINVAL;
        return -1;
    }
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    static char buf[LOG_SCAN_CHUNK + MAX_NEEDLE];
    size_t keep = 0;
    int found = 0;
    for (;;) {
        size_t r = fread(buf + keep, 1, LOG_SCAN_CHUNK, f);
        if (r == 0)
            break;
        size_t len = keep + r;
        if (memmem(buf, len, needle, n)) {
            found = 1;
            break;
        }
        keep = n - 1 < len ? n - 1 : len;
        memmove(buf, buf + len - keep, keep);
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        errno = EIO;
        return -1;
    }
    return found;
}

int harness_log_count(const harness_server *s, const char *needle)
{
    char path[512], line[2048];
    if (harness_path(s, "server.log", path, sizeof path) != 0)
        return -1;
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

int harness_renew_tls(const harness_server *s)
{
    char cert_path[512], key_path[512];
    if (harness_path(s, HARNESS_TLS_CERT, cert_path, sizeof cert_path) != 0
        || harness_path(s, HARNESS_TLS_KEY, key_path, sizeof key_path) != 0)
        return -1;
    /* New files under the old names, as a renewal leaves them. */
    if ((unlink(cert_path) != 0 && errno != ENOENT) || (unlink(key_path) != 0 && errno != ENOENT))
        return -1;
    return write_tls_cert(s);
}

int harness_reload(harness_server *s, const char *extra_config)
{
    if (s->pid <= 0 || write_config(s, extra_config) != 0)
        return -1;
    int done = harness_log_count(s, "configuration reloaded from ");
    int refused = harness_log_count(s, "configuration reload refused");
    if (done < 0 || refused < 0 || kill(s->pid, SIGHUP) != 0)
        return -1;
    /* Bounded like harness_wait_log; a loaded machine may take a while. */
    long long deadline = now_ms() + 20000;
    while (now_ms() < deadline) {
        if (harness_log_count(s, "configuration reloaded from ") > done)
            return 1;
        if (harness_log_count(s, "configuration reload refused") > refused)
            return 0;
        sleep_ms(20);
    }
    fprintf(stderr, "harness: no reload outcome in the log within 20 s\n");
    return -1;
}

int harness_log_contains(const harness_server *s, const char *needle)
{
    char path[512];
    if (harness_path(s, "server.log", path, sizeof path) != 0)
        return -1;
    return file_contains(path, needle);
}

int harness_wait_log(const harness_server *s, const char *needle, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        if (harness_log_contains(s, needle) == 1)
            return 1;
        if (now_ms() >= deadline)
            return 0;
        sleep_ms(20);
    }
}

/* ---- clients -------------------------------------------------------------- */

static int connect_common(const harness_server *s, const sm_client_options *base, int handshake,
                          sm_client **out)
{
    sm_client_options o;
    if (base)
        o = *base;
    else
        memset(&o, 0, sizeof o);
    if (!o.url)
        o.url = s->url;
    char err[512] = "";
    int rc = handshake ? sm_client_connect(&o, out, err, sizeof err)
                       : sm_client_open(&o, out, err, sizeof err);
    if (rc != SM_CLIENT_OK)
        fprintf(stderr, "harness: %s to %s failed (%d): %s\n", handshake ? "connect" : "open",
                o.url, rc, err);
    return rc;
}

int harness_connect(const harness_server *s, sm_client **out)
{
    return connect_common(s, NULL, 1, out);
}

int harness_connect_opts(const harness_server *s, const sm_client_options *base, sm_client **out)
{
    return connect_common(s, base, 1, out);
}

int harness_open_opts(const harness_server *s, const sm_client_options *base, sm_client **out)
{
    return connect_common(s, base, 0, out);
}

sm_message *harness_callf(sm_client *c, const char *action, const char *fmt, ...)
{
    json_t *payload = NULL;
    if (fmt) {
        json_error_t jerr;
        va_list ap;
        va_start(ap, fmt);
        payload = json_vpack_ex(&jerr, 0, fmt, ap);
        va_end(ap);
        if (!payload) {
            fprintf(stderr, "harness: %s payload: %s\n", action, jerr.text);
            return NULL;
        }
    }
    sm_message *reply = NULL;
    int rc = sm_client_call(c, action, payload, -1, &reply);
    json_decref(payload);
    if (rc != SM_CLIENT_OK) {
        fprintf(stderr, "harness: call %s failed (%d), close code %d\n", action, rc,
                sm_client_close_code(c));
        return NULL;
    }
    return reply;
}

int harness_error_code(const sm_message *m)
{
    if (!m || strcmp(m->type, "error") != 0)
        return -1;
    json_t *code = json_object_get(m->payload, "code");
    return json_is_integer(code) ? (int)json_integer_value(code) : -1;
}

int harness_wait_closed(sm_client *c, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        long long left = deadline - now_ms();
        char *text = NULL;
        size_t len = 0;
        int rc = sm_client_recv_text(c, left > 0 ? (int)left : 0, &text, &len);
        if (rc == SM_CLIENT_OK) {
            free(text);
            continue;
        }
        if (rc == SM_CLIENT_CLOSED)
            return sm_client_close_code(c);
        return -1;
    }
}

char *harness_http_exchange(int port, const char *source, const char *req, size_t req_len,
                            int timeout_ms, size_t *len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return NULL;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    if (source && (inet_pton(AF_INET, source, &a.sin_addr) != 1 ||
                   bind(fd, (struct sockaddr *)&a, sizeof a) != 0)) {
        close(fd);
        return NULL;
    }
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        write(fd, req, req_len) != (ssize_t)req_len) {
        close(fd);
        return NULL;
    }
    size_t cap = 65536, got = 0;
    char *buf = malloc(cap);
    struct pollfd pfd = {fd, POLLIN, 0};
    while (buf && poll(&pfd, 1, timeout_ms) > 0) {
        if (got + 1 >= cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + got, cap - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (!buf)
        return NULL;
    buf[got] = '\0';
    if (len)
        *len = got;
    return buf;
}

int harness_run_server(const char *args, char *out, size_t out_len)
{
    char cmd[2048];
    int n = snprintf(cmd, sizeof cmd, "timeout 20 '%s' %s 2>&1", SM_SERVER_PATH, args);
    if (n < 0 || (size_t)n >= sizeof cmd || out_len == 0)
        return -1;
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t got = fread(out, 1, out_len - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- running a tool ------------------------------------------------------ */

static void slurp_file(const char *path, char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static double tool_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int harness_run_tool(const harness_server *s, const char *const *argv, const char *in_path,
                     char *out, size_t out_len, char *err, size_t err_len, double timeout_s)
{
    char out_path[600], err_path[600];
    if (harness_path(s, "tool.out", out_path, sizeof out_path) != 0 ||
        harness_path(s, "tool.err", err_path, sizeof err_path) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int in = open(in_path ? in_path : "/dev/null", O_RDONLY),
            o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600),
            e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || o < 0 || e < 0)
            _exit(127);
        dup2(in, 0);
        dup2(o, 1);
        dup2(e, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    double deadline = tool_now() + timeout_s;
    pid_t r;
    while ((r = waitpid(pid, &status, WNOHANG)) == 0 && tool_now() < deadline) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    if (r != pid) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return -1;
    }
    slurp_file(out_path, out, out_len);
    slurp_file(err_path, err, err_len);
    static const char *const reports[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                          "runtime error:", "WARNING: ThreadSanitizer"};
    for (size_t i = 0; i < sizeof reports / sizeof *reports; i++)
        if (strstr(err, reports[i])) {
            fprintf(stderr, "%s reported:\n%s\n", argv[0], err);
            CU_FAIL("a sanitizer report from a tool");
        }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
