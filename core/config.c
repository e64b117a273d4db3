#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <libconfig.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cidr.h"
#include "cluster_presence.h"
#include "log.h"
#include "redis_link.h"

/* CMake defines this for sm_core; the fallback keeps a bare gcc build (the
 * unit test command line) working. */
#ifndef SM_DEFAULT_PLUGIN_DIR
#define SM_DEFAULT_PLUGIN_DIR "/usr/local/lib/safemessenger/plugins"
#endif

/* Where `cmake --install` puts web/; the fallback as for the plugins. */
#ifndef SM_DEFAULT_WEB_ROOT
#define SM_DEFAULT_WEB_ROOT "/usr/local/share/safemessenger/web"
#endif

#define PLUGIN_NAME_MAX 64
#define CONFIG_MAX_OWNED 16
#define CONFIG_MAX_ASKED 256

struct config {
    config_t lc;
    char *path;            /* NULL: built-in defaults, no file */
    char *dir;             /* absolute directory of path: relative paths start here */
    server_config server;
    /* Resolved paths that server_config points to. */
    char *owned[CONFIG_MAX_OWNED];
    size_t n_owned;
    /* "<section>.<key>" of every plugin lookup, found or not: the names a
     * misspelt key is compared with to suggest the intended one. */
    char *asked[CONFIG_MAX_ASKED];
    size_t n_asked;
};

/* A plugin setting some getter has looked up carries this address as its
 * libconfig hook (as do its enclosing groups), so config_warn_unused can
 * find the keys nobody read without a side table. libconfig only calls a
 * destructor on hooks when one is installed, and none is. */
static char read_mark;

static const char *const core_sections[] = {"server", "storage", "cluster", "plugins",
                                            "limits", "log", "web", "metrics"};

/* cluster.node and cluster.prefix: the bounds cluster_presence takes. */
#define CLUSTER_NODE_MAX CLUSTER_PRESENCE_NODE_MAX
#define CLUSTER_PREFIX_MAX CLUSTER_PRESENCE_PREFIX_MAX

static const char *const synchronous_values[] = {"off", "normal", "full", "extra"};
static const char *const backend_values[] = {"sqlite", "postgresql"};

/* ---- reporting --------------------------------------------------------- */

static const char *setting_file(const config *cfg, const config_setting_t *s)
{
    const char *file = config_setting_source_file(s);
    if (file)
        return file;
    return cfg->path ? cfg->path : "(defaults)";
}

static void report(const config *cfg, sm_log_level level, const config_setting_t *s,
                   const char *fmt, ...) SM_PRINTF(4, 5);

static void report(const config *cfg, sm_log_level level, const config_setting_t *s,
                   const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (n < 0)
        what[0] = '\0';
    log_msg(level, "config", "%s:%u: %s", setting_file(cfg, s),
            config_setting_source_line(s), what);
}

static int is_core_section(const char *name)
{
    for (size_t i = 0; i < sizeof core_sections / sizeof core_sections[0]; i++)
        if (strcmp(name, core_sections[i]) == 0)
            return 1;
    return 0;
}

static int is_integer(const config_setting_t *s)
{
    int type = config_setting_type(s);
    return type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64;
}

static int is_string_list(const config_setting_t *s)
{
    return config_setting_is_array(s) || config_setting_is_list(s);
}

/* ---- suggestions for misspelt names ------------------------------------ */

/* Edit distance counting a swap of neighbours as one edit (the commonest
 * typo: "bnid"), capped: names are short, and anything past the cap is too
 * far off to suggest anyway. */
static size_t edit_distance(const char *a, const char *b)
{
    enum { CAP = 64 };
    size_t la = strlen(a), lb = strlen(b);
    if (la >= CAP || lb >= CAP)
        return CAP;
    size_t before[CAP + 1], prev[CAP + 1], row[CAP + 1];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t best = prev[j - 1] + (a[i - 1] != b[j - 1]);
            if (prev[j] + 1 < best)
                best = prev[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                before[j - 2] + 1 < best)
                best = before[j - 2] + 1;
            row[j] = best;
        }
        memcpy(before, prev, sizeof prev);
        memcpy(prev, row, sizeof row);
    }
    return prev[lb];
}

/* Keeps the closest candidate in *best; a name counts as close when at most
 * a third of it (and at least one character) differs. */
static void consider(const char *name, const char *candidate, const char **best,
                     size_t *best_dist)
{
    size_t d = edit_distance(name, candidate);
    size_t allowed = strlen(name) / 3 > 1 ? strlen(name) / 3 : 1;
    if (d <= allowed && d < *best_dist) {
        *best = candidate;
        *best_dist = d;
    }
}

/* ", did you mean 'x'?" or "" into buf. */
static const char *suggestion(char *buf, size_t len, const char *prefix, const char *best)
{
    if (!best)
        return "";
    snprintf(buf, len, " (did you mean '%s%s'?)", prefix, best);
    return buf;
}

/* ---- the core's sections ----------------------------------------------- */

struct core_key;
typedef int (*core_parse_fn)(config *cfg, const config_setting_t *s, const struct core_key *k);

/* One row per key of the core's sections: where it goes in server_config
 * and how it is checked. min/max bound integers (and string length 0/1 for
 * "may be empty"/"must not be empty"). */
typedef struct core_key {
    const char *section;
    const char *name;
    core_parse_fn parse;
    int64_t min;
    int64_t max;
    size_t offset;
} core_key;

#define FIELD(type, at) ((type *)((char *)&cfg->server + (at)))

static int parse_int(config *cfg, const config_setting_t *s, const core_key *k)
{
    long long v = is_integer(s) ? config_setting_get_int64(s) : 0;
    if (!is_integer(s) || v < k->min || v > k->max) {
        report(cfg, SM_LOG_ERROR, s, "%s.%s must be an integer from %" PRId64 " to %" PRId64,
               k->section, k->name, k->min, k->max);
        return -1;
    }
    *FIELD(int, k->offset) = (int)v;
    return 0;
}

static int parse_size(config *cfg, const config_setting_t *s, const core_key *k)
{
    long long v = is_integer(s) ? config_setting_get_int64(s) : 0;
    if (!is_integer(s) || v < k->min || v > k->max) {
        report(cfg, SM_LOG_ERROR, s, "%s.%s must be an integer from %" PRId64 " to %" PRId64,
               k->section, k->name, k->min, k->max);
        return -1;
    }
    *FIELD(size_t, k->offset) = (size_t)v;
    return 0;
}

/* A rate: any positive number up to max; an integer setting is accepted
 * because operators write "20", not "20.0". */
static int parse_rate(config *cfg, const config_setting_t *s, const core_key *k)
{
    double v = 0;
    if (is_integer(s))
        v = (double)config_setting_get_int64(s);
    else if (config_setting_type(s) == CONFIG_TYPE_FLOAT)
        v = config_setting_get_float(s);
    if (!(isfinite(v) && v > 0 && v <= (double)k->max)) {
        report(cfg, SM_LOG_ERROR, s, "%s.%s must be a number greater than 0 and at most %" PRId64,
               k->section, k->name, k->max);
        return -1;
    }
    *FIELD(double, k->offset) = v;
    return 0;
}

static int parse_string(config *cfg, const config_setting_t *s, const core_key *k)
{
    const char *v = config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s)
                                                                 : NULL;
    if (!v || (k->min > 0 && v[0] == '\0')) {
        report(cfg, SM_LOG_ERROR, s, "%s.%s must be a %sstring", k->section, k->name,
               k->min > 0 ? "non-empty " : "");
        return -1;
    }
    *FIELD(const char *, k->offset) = v;
    return 0;
}

/* A path; relative ones are resolved against the config file's directory
 * once every key is read (resolve_paths). */
static int parse_path(config *cfg, const config_setting_t *s, const core_key *k)
{
    return parse_string(cfg, s, k);
}

static int parse_bool(config *cfg, const config_setting_t *s, const core_key *k)
{
    if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
        report(cfg, SM_LOG_ERROR, s, "%s.%s must be true or false", k->section, k->name);
        return -1;
    }
    *FIELD(int, k->offset) = config_setting_get_bool(s) ? 1 : 0;
    return 0;
}

/* web.root: a path like the others, remembered as written so that a
 * missing directory the operator named stops the start (main.c). */
static int parse_web_root(config *cfg, const config_setting_t *s, const core_key *k)
{
    if (parse_path(cfg, s, k) != 0)
        return -1;
    cfg->server.web_root_set = 1;
    return 0;
}

static int parse_synchronous(config *cfg, const config_setting_t *s, const core_key *k)
{
    const char *v = config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s)
                                                                 : NULL;
    for (size_t i = 0; v && i < sizeof synchronous_values / sizeof synchronous_values[0]; i++) {
        if (strcmp(v, synchronous_values[i]) == 0) {
            *FIELD(const char *, k->offset) = synchronous_values[i];
            return 0;
        }
    }
    report(cfg, SM_LOG_ERROR, s,
           "%s.%s must be one of \"off\", \"normal\", \"full\", \"extra\"", k->section, k->name);
    return -1;
}

static int parse_backend(config *cfg, const config_setting_t *s, const core_key *k)
{
    const char *v = config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s)
                                                                 : NULL;
    for (size_t i = 0; v && i < sizeof backend_values / sizeof backend_values[0]; i++) {
        if (strcmp(v, backend_values[i]) == 0) {
            *FIELD(const char *, k->offset) = backend_values[i];
            return 0;
        }
    }
    report(cfg, SM_LOG_ERROR, s, "%s.%s must be \"sqlite\" or \"postgresql\"", k->section,
           k->name);
    return -1;
}

/* storage.postgresql: parsed by libpq here, so a typo stops the start
 * with the line it is on rather than as a connection failure. libpq's
 * parse errors name the bad keyword or quoting, never a value. */
static int parse_conninfo(config *cfg, const config_setting_t *s, const core_key *k)
{
    if (parse_string(cfg, s, k) != 0)
        return -1;
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(config_setting_get_string(s), &err);
    if (!opts) {
        size_t n = err ? strcspn(err, "\n") : 0;
        report(cfg, SM_LOG_ERROR, s, "%s.%s is not a libpq connection string: %.*s",
               k->section, k->name, (int)n, err ? err : "out of memory");
        PQfreemem(err);
        return -1;
    }
    PQconninfoFree(opts);
    return 0;
}

/* cluster.node: "" (not in a cluster) or a node id, the names
 * cluster_presence takes. */
static int parse_cluster_node(config *cfg, const config_setting_t *s, const core_key *k)
{
    const char *v = config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s)
                                                                 : NULL;
    if (!v || (v[0] != '\0' && !sm_name_valid(v, 1, CLUSTER_NODE_MAX))) {
        report(cfg, SM_LOG_ERROR, s,
               "%s.%s must be a node id of 1 to %d characters from [A-Za-z0-9_.-] (or \"\" "
               "outside cluster mode)", k->section, k->name, CLUSTER_NODE_MAX);
        return -1;
    }
    *FIELD(const char *, k->offset) = v;
    return 0;
}

/* cluster.prefix: a node id's characters and ':', so that "sm:" and
 * "chat.prod:" work; "" is allowed (a Redis of the cluster's own). */
static int parse_cluster_prefix(config *cfg, const config_setting_t *s, const core_key *k)
{
    const char *v = config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s)
                                                                 : NULL;
    size_t n = 0;
    for (; v && v[n]; n++)
        if (n >= CLUSTER_PREFIX_MAX || !(sm_name_char(v[n]) || v[n] == ':'))
            break;
    if (!v || v[n] != '\0') {
        report(cfg, SM_LOG_ERROR, s,
               "%s.%s must be 0 to %d characters from [A-Za-z0-9_.:-]", k->section, k->name,
               CLUSTER_PREFIX_MAX);
        return -1;
    }
    *FIELD(const char *, k->offset) = v;
    return 0;
}

/* 1: url's authority ends at a '/' that an '@' follows, so the parser
 * took part of what was meant as the password for the host, port or
 * database, and its reason would quote it. */
static int redis_password_cut(const char *url)
{
    static const char scheme[] = "redis://";
    if (strncmp(url, scheme, sizeof scheme - 1) != 0)
        return 0;
    const char *slash = strchr(url + sizeof scheme - 1, '/');
    return slash && strchr(slash, '@') != NULL;
}

/* cluster.redis: parsed by redis_link here, so a typo stops the start
 * with its line rather than as a link that never comes up. Its reasons
 * never repeat the password; the one case where they could quote part
 * of it (a '/' in the password, written as it is) gets its own. "" is
 * allowed: not in a cluster. */
static int parse_redis_url(config *cfg, const config_setting_t *s, const core_key *k)
{
    if (parse_string(cfg, s, k) != 0)
        return -1;
    const char *v = config_setting_get_string(s);
    if (v[0] == '\0')
        return 0;
    redis_link_url url;
    char err[256];
    int rc = redis_link_parse_url(v, &url, err, sizeof err);
    explicit_bzero(&url, sizeof url);
    if (rc == 0)
        return 0;
    if (redis_password_cut(v))
        report(cfg, SM_LOG_ERROR, s,
               "%s.%s is not a Redis URL: an '@' after the first '/' (write a '/' in the "
               "password as %%2F)", k->section, k->name);
    else {
        static const char said[] = "redis URL: "; /* the parser's own start: said once */
        const char *why = strncmp(err, said, sizeof said - 1) == 0 ? err + sizeof said - 1 : err;
        report(cfg, SM_LOG_ERROR, s, "%s.%s is not a Redis URL: %s", k->section, k->name, why);
    }
    return -1;
}

static int parse_log_level(config *cfg, const config_setting_t *s, const core_key *k)
{
    const char *v = config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s)
                                                                 : NULL;
    sm_log_level level;
    if (!v || log_level_from_name(v, &level) != 0) {
        report(cfg, SM_LOG_ERROR, s,
               "%s.%s must be one of \"error\", \"warning\", \"info\", \"debug\"",
               k->section, k->name);
        return -1;
    }
    *FIELD(sm_log_level, k->offset) = level;
    return 0;
}

static int parse_log_format(config *cfg, const config_setting_t *s, const core_key *k)
{
    const char *v = config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s)
                                                                 : NULL;
    sm_log_format format;
    if (!v || log_format_from_name(v, &format) != 0) {
        report(cfg, SM_LOG_ERROR, s, "%s.%s must be one of \"text\", \"json\"", k->section,
               k->name);
        return -1;
    }
    *FIELD(sm_log_format, k->offset) = format;
    return 0;
}

/* A list of at most max strings, each accepted by valid; every bad element
 * is reported. out[] and *n_out are written only when all are good.
 * `list` and `item` name what the list holds, for the messages. */
static int parse_list(config *cfg, const config_setting_t *s, const core_key *k, int max,
                      int (*valid)(const char *), const char *list, const char *item,
                      const char **out, size_t *n_out)
{
    int n = is_string_list(s) ? config_setting_length(s) : -1;
    if (n < 0 || n > max) {
        report(cfg, SM_LOG_ERROR, s, "%s.%s must be a list of at most %d %s", k->section,
               k->name, max, list);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *v = config_setting_type(e) == CONFIG_TYPE_STRING
                            ? config_setting_get_string(e) : NULL;
        if (!v || !valid(v)) {
            report(cfg, SM_LOG_ERROR, e, "%s.%s[%d] must be %s", k->section, k->name, i, item);
            rc = -1;
        }
    }
    if (rc != 0)
        return -1;
    for (int i = 0; i < n; i++)
        out[i] = config_setting_get_string_elem(s, i);
    *n_out = (size_t)n;
    return 0;
}

static int non_empty(const char *v) { return v[0] != '\0'; }

static int ip_literal(const char *v)
{
    unsigned char bin[16];
    return inet_pton(AF_INET, v, bin) == 1 || inet_pton(AF_INET6, v, bin) == 1;
}

static int parse_origins(config *cfg, const config_setting_t *s, const core_key *k)
{
    return parse_list(cfg, s, k, CONFIG_MAX_ORIGINS, non_empty, "non-empty strings",
                      "a non-empty string", cfg->server.allowed_origins,
                      &cfg->server.n_allowed_origins);
}

static int parse_proxies(config *cfg, const config_setting_t *s, const core_key *k)
{
    return parse_list(cfg, s, k, CONFIG_MAX_PROXIES, ip_literal, "IP addresses",
                      "an IPv4 or IPv6 address", cfg->server.trusted_proxies,
                      &cfg->server.n_trusted_proxies);
}

static int ip_or_network(const char *v)
{
    cidr c;
    return cidr_parse(v, &c) == 0;
}

static int parse_metrics_allow(config *cfg, const config_setting_t *s, const core_key *k)
{
    return parse_list(cfg, s, k, CONFIG_MAX_METRICS_ALLOW, ip_or_network,
                      "IP addresses or networks",
                      "an IPv4 or IPv6 address or network (\"10.0.0.0/8\")",
                      cfg->server.metrics_allow, &cfg->server.n_metrics_allow);
}

static int valid_plugin_name(const char *name)
{
    size_t len = 0;
    for (; name[len]; len++) {
        char c = name[len];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
        if (len >= PLUGIN_NAME_MAX)
            return 0;
    }
    return len > 0;
}

static int parse_plugin_list(config *cfg, const config_setting_t *s, const core_key *k)
{
    int n = is_string_list(s) ? config_setting_length(s) : -1;
    if (n < 0 || n > CONFIG_MAX_PLUGINS) {
        report(cfg, SM_LOG_ERROR, s, "%s.%s must be a list of at most %d plugin names",
               k->section, k->name, CONFIG_MAX_PLUGINS);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *v = config_setting_type(e) == CONFIG_TYPE_STRING
                            ? config_setting_get_string(e) : NULL;
        if (!v || !valid_plugin_name(v)) {
            report(cfg, SM_LOG_ERROR, e,
                   "%s.%s[%d] must be a plugin name of 1 to %d characters from [a-z0-9_]",
                   k->section, k->name, i, PLUGIN_NAME_MAX);
            rc = -1;
            continue;
        }
        for (int j = 0; j < i; j++) {
            const char *prev = config_setting_get_string_elem(s, j);
            if (prev && strcmp(prev, v) == 0) {
                report(cfg, SM_LOG_ERROR, e, "%s.%s lists plugin \"%s\" more than once",
                       k->section, k->name, v);
                rc = -1;
                break;
            }
        }
        cfg->server.plugins[i] = v;
    }
    if (rc == 0)
        cfg->server.n_plugins = (size_t)n;
    return rc;
}

static int tls_string(config *cfg, const config_setting_t *s, const char *name, const char **out)
{
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        report(cfg, SM_LOG_ERROR, s, "server.tls.%s must be a string", name);
        return -1;
    }
    *out = config_setting_get_string(s);
    return 0;
}

/* TLS is on only with both files: a certificate without its key (or the
 * reverse) is a half-done setup that must not silently fall back to ws://. */
static int parse_tls(config *cfg, const config_setting_t *s, const core_key *k)
{
    (void)k;
    if (!config_setting_is_group(s)) {
        report(cfg, SM_LOG_ERROR, s, "server.tls must be a group { cert = \"...\"; key = \"...\"; }");
        return -1;
    }
    const char *cert = "", *key = "";
    const config_setting_t *cert_s = NULL, *key_s = NULL;
    int rc = 0;
    int n = config_setting_length(s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(s, (unsigned)i);
        const char *name = config_setting_name(m);
        if (strcmp(name, "cert") == 0) {
            cert_s = m;
            if (tls_string(cfg, m, name, &cert) != 0)
                rc = -1;
        } else if (strcmp(name, "key") == 0) {
            key_s = m;
            if (tls_string(cfg, m, name, &key) != 0)
                rc = -1;
        } else {
            const char *best = NULL;
            size_t dist = SIZE_MAX;
            consider(name, "cert", &best, &dist);
            consider(name, "key", &best, &dist);
            char hint[128];
            report(cfg, SM_LOG_ERROR, m, "unknown key server.tls.%s%s", name,
                   suggestion(hint, sizeof hint, "server.tls.", best));
            rc = -1;
        }
    }
    if (rc != 0)
        return -1;
    if (cert[0] != '\0' && key[0] == '\0') {
        report(cfg, SM_LOG_ERROR, cert_s,
               "server.tls.cert is set but server.tls.key is missing (set both, or neither for no TLS)");
        return -1;
    }
    if (key[0] != '\0' && cert[0] == '\0') {
        report(cfg, SM_LOG_ERROR, key_s,
               "server.tls.key is set but server.tls.cert is missing (set both, or neither for no TLS)");
        return -1;
    }
    cfg->server.tls_cert = cert;
    cfg->server.tls_key = key;
    return 0;
}

#define AT(field) offsetof(server_config, field)

/* Every key of the core's sections. Ranges here are the documented ones
 * (docs/OPERATIONS.md); keep the two in step. */
static const core_key core_keys[] = {
    {"server", "port", parse_int, 0, 65535, AT(port)},
    {"server", "bind", parse_string, 1, 0, AT(bind)},
    {"server", "key_file", parse_path, 1, 0, AT(key_file)},
    {"server", "key_bits", parse_int, 2048, 8192, AT(key_bits)},
    {"server", "max_message_bytes", parse_size, 4096, 16777216, AT(max_message_bytes)},
    {"server", "handshake_timeout", parse_int, 1, 300, AT(handshake_timeout)},
    {"server", "workers", parse_int, 1, 64, AT(workers)},
    {"server", "io_threads", parse_int, 1, CONFIG_MAX_IO_THREADS, AT(io_threads)},
    {"server", "worker_nice", parse_int, 0, 19, AT(worker_nice)},
    {"server", "allowed_origins", parse_origins, 0, 0, 0},
    {"server", "trusted_proxies", parse_proxies, 0, 0, 0},
    {"server", "tls", parse_tls, 0, 0, 0},
    {"server", "admin_socket", parse_path, 0, 0, AT(admin_socket)},
    {"server", "coalesce_writes", parse_bool, 0, 0, AT(coalesce_writes)},
    {"storage", "backend", parse_backend, 0, 0, AT(backend)},
    {"storage", "postgresql", parse_conninfo, 1, 0, AT(postgresql)},
    {"storage", "postgresql_timeout", parse_rate, 0, 300, AT(postgresql_timeout)},
    {"storage", "database", parse_path, 1, 0, AT(database)},
    {"storage", "synchronous", parse_synchronous, 0, 0, AT(synchronous)},
    {"cluster", "node", parse_cluster_node, 0, 0, AT(cluster_node)},
    {"cluster", "redis", parse_redis_url, 0, 0, AT(cluster_redis)},
    {"cluster", "prefix", parse_cluster_prefix, 0, 0, AT(cluster_prefix)},
    {"plugins", "dir", parse_path, 1, 0, AT(plugin_dir)},
    {"plugins", "load", parse_plugin_list, 0, 0, 0},
    {"limits", "commands_per_second", parse_rate, 0, 100000, AT(commands_per_second)},
    {"limits", "command_burst", parse_int, 1, 100000, AT(command_burst)},
    {"limits", "send_queue_bytes", parse_size, 65536, 1073741824, AT(send_queue_bytes)},
    {"limits", "send_queue_messages", parse_size, 16, 1000000, AT(send_queue_messages)},
    {"limits", "send_timeout", parse_int, 1, 3600, AT(send_timeout)},
    {"limits", "max_sessions", parse_int, 1, 1000000, AT(max_sessions)},
    {"limits", "handshake_queue", parse_size, 1, 10000, AT(handshake_queue)},
    {"limits", "max_sessions_per_address", parse_int, 1, 1000000, AT(max_sessions_per_address)},
    {"limits", "handshakes_per_address", parse_int, 1, 1000000, AT(handshakes_per_address)},
    {"limits", "login_deadline", parse_int, 0, 86400, AT(login_deadline)},
    {"limits", "bytes_per_second", parse_rate, 0, 1073741824, AT(bytes_per_second)},
    {"limits", "bytes_burst", parse_size, 4096, 1073741824, AT(bytes_burst)},
    {"limits", "room_fanout_bytes_per_second", parse_rate, 0, 1073741824,
     AT(room_fanout_bytes_per_second)},
    {"limits", "room_fanout_burst", parse_size, 4096, 1073741824, AT(room_fanout_burst)},
    {"log", "level", parse_log_level, 0, 0, AT(log_level)},
    {"log", "format", parse_log_format, 0, 0, AT(log_format)},
    {"web", "enabled", parse_bool, 0, 0, AT(web_enabled)},
    {"web", "root", parse_web_root, 1, 0, AT(web_root)},
    {"metrics", "allow", parse_metrics_allow, 0, 0, 0},
};

int config_default_io_threads(long online_cpus)
{
    if (online_cpus < 1)
        return 1; /* sysconf could not tell: one thread always works */
    return online_cpus > CONFIG_DEFAULT_IO_THREADS_CAP ? CONFIG_DEFAULT_IO_THREADS_CAP
                                                       : (int)online_cpus;
}

static void set_defaults(server_config *srv)
{
    memset(srv, 0, sizeof *srv);
    srv->bind = "0.0.0.0";
    srv->port = 8765;
    srv->key_file = "data/server_key.pem";
    srv->key_bits = 2048;
    srv->max_message_bytes = 65536;
    srv->tls_cert = "";
    srv->tls_key = "";
    srv->admin_socket = "";
    srv->handshake_timeout = 10;
    srv->workers = 2;
    srv->io_threads = config_default_io_threads(sysconf(_SC_NPROCESSORS_ONLN));
    srv->worker_nice = 19;
    srv->coalesce_writes = 1;
    srv->backend = "sqlite";
    srv->postgresql = "";
    srv->postgresql_timeout = 5;
    srv->database = "data/safemessenger.db";
    srv->synchronous = "normal";
    srv->cluster_node = "";
    srv->cluster_redis = "";
    srv->cluster_prefix = "sm:";
    srv->plugin_dir = SM_DEFAULT_PLUGIN_DIR;
    srv->commands_per_second = 20;
    srv->command_burst = 40;
    srv->send_queue_bytes = 1048576;
    srv->send_queue_messages = 1000;
    srv->send_timeout = 30;
    srv->max_sessions = 19000;
    srv->handshake_queue = 256;
    srv->max_sessions_per_address = 64;
    srv->handshakes_per_address = 60;
    srv->login_deadline = 60;
    srv->bytes_per_second = 65536;
    srv->bytes_burst = 0; /* resolved by check_limits */
    srv->room_fanout_bytes_per_second = 8388608;
    srv->room_fanout_burst = 33554432;
    srv->log_level = SM_LOG_INFO;
    srv->log_format = SM_LOG_FORMAT_TEXT;
    srv->web_enabled = 1;
    srv->web_root = SM_DEFAULT_WEB_ROOT;
    srv->metrics_allow[0] = "127.0.0.1";
    srv->metrics_allow[1] = "::1";
    srv->n_metrics_allow = 2;
}

static const core_key *find_core_key(const char *section, const char *name)
{
    for (size_t i = 0; i < sizeof core_keys / sizeof core_keys[0]; i++)
        if (strcmp(core_keys[i].section, section) == 0 && strcmp(core_keys[i].name, name) == 0)
            return &core_keys[i];
    return NULL;
}

/* An unknown key is an error: a typo (say `bnid`) must not silently leave
 * the default in force. The hint looks in this section first, then in the
 * others, since a key written in the wrong section is a common slip. */
static void report_unknown_core_key(config *cfg, const config_setting_t *m, const char *section)
{
    const char *name = config_setting_name(m);
    const char *best = NULL, *best_section = NULL;
    size_t dist = SIZE_MAX;
    for (size_t i = 0; i < sizeof core_keys / sizeof core_keys[0]; i++) {
        const char *before = best;
        if (strcmp(core_keys[i].section, section) == 0)
            consider(name, core_keys[i].name, &best, &dist);
        if (best != before)
            best_section = core_keys[i].section;
    }
    for (size_t i = 0; !best && i < sizeof core_keys / sizeof core_keys[0]; i++) {
        const char *before = best;
        if (strcmp(name, core_keys[i].name) == 0) {
            best = core_keys[i].name;
            dist = 0;
        }
        if (best != before)
            best_section = core_keys[i].section;
    }
    char prefix[64], hint[160];
    snprintf(prefix, sizeof prefix, "%s.", best_section ? best_section : section);
    report(cfg, SM_LOG_ERROR, m, "unknown key %s.%s%s", section, name,
           suggestion(hint, sizeof hint, prefix, best));
}

/* Checks every key of one core section, reporting all problems rather
 * than stopping at the first, so one edit fixes the file. */
static int check_core_section(config *cfg, const config_setting_t *sec)
{
    const char *section = config_setting_name(sec);
    if (!config_setting_is_group(sec)) {
        report(cfg, SM_LOG_ERROR, sec, "%s must be a group { ... }", section);
        return -1;
    }
    int rc = 0;
    int n = config_setting_length(sec);
    for (int i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(sec, (unsigned)i);
        const core_key *k = find_core_key(section, config_setting_name(m));
        if (!k) {
            report_unknown_core_key(cfg, m, section);
            rc = -1;
            continue;
        }
        if (k->parse(cfg, m, k) != 0)
            rc = -1;
    }
    return rc;
}

static int check_tree(config *cfg)
{
    const config_setting_t *root = config_root_setting(&cfg->lc);
    int rc = 0;
    int n = config_setting_length(root);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
        const char *name = config_setting_name(s);
        if (is_core_section(name)) {
            if (check_core_section(cfg, s) != 0)
                rc = -1;
        } else if (!config_setting_is_group(s)) {
            /* A plugin's getters could not see inside it; most likely a
             * core key written outside its section. */
            report(cfg, SM_LOG_ERROR, s,
                   "top-level setting '%s' must be a section { ... } (core keys belong inside "
                   "server, storage, cluster, plugins, limits, log, web or metrics)", name);
            rc = -1;
        }
    }
    return rc;
}

/* Checks between keys, after each key passed its own. A session's byte
 * bucket must hold one largest message, or that message could never pass;
 * left unset, the burst is sized to allow that. */
#define DEFAULT_BYTES_BURST 262144

static int check_limits(config *cfg)
{
    server_config *srv = &cfg->server;
    if (srv->bytes_burst == 0) {
        srv->bytes_burst = srv->max_message_bytes > DEFAULT_BYTES_BURST ? srv->max_message_bytes
                                                                         : DEFAULT_BYTES_BURST;
        return 0;
    }
    if (srv->bytes_burst >= srv->max_message_bytes)
        return 0;
    report(cfg, SM_LOG_ERROR, config_lookup(&cfg->lc, "limits.bytes_burst"),
           "limits.bytes_burst (%zu) must be at least server.max_message_bytes (%zu)",
           srv->bytes_burst, srv->max_message_bytes);
    return -1;
}

/* 1: the connection string sets a password (keyword or URI). */
static int conninfo_has_password(const char *conninfo)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    int has = 0;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val && o->val[0] != '\0')
            has = 1;
    PQconninfoFree(opts);
    return has;
}

/* A setting that holds a password (key, "section.name") in a file others
 * can read: said, never the password. advice completes "make it 0600". */
static void warn_readable_password(config *cfg, const char *key, const char *advice)
{
    struct stat st;
    if (!cfg->path || stat(cfg->path, &st) != 0 || !(st.st_mode & (S_IRGRP | S_IROTH)))
        return;
    report(cfg, SM_LOG_WARNING, config_lookup(&cfg->lc, key),
           "%s holds a password and %s is readable by others (mode %03o): make it 0600%s", key,
           cfg->path, (unsigned)(st.st_mode & 0777), advice);
}

/* The backend and its settings agree. A connection string left beside
 * backend "sqlite" is only a warning (an operator trying both keeps
 * both), the opposite cannot start. */
static int check_storage(config *cfg)
{
    server_config *srv = &cfg->server;
    int pg = strcmp(srv->backend, "postgresql") == 0;
    if (pg && srv->postgresql[0] == '\0') {
        report(cfg, SM_LOG_ERROR, config_lookup(&cfg->lc, "storage.backend"),
               "storage.backend is \"postgresql\" but storage.postgresql (a libpq connection "
               "string) is not set");
        return -1;
    }
    if (!pg && srv->postgresql[0] != '\0')
        report(cfg, SM_LOG_WARNING, config_lookup(&cfg->lc, "storage.postgresql"),
               "storage.postgresql is set but storage.backend is \"%s\": it is not used",
               srv->backend);
    if (srv->postgresql[0] != '\0' && conninfo_has_password(srv->postgresql))
        warn_readable_password(cfg, "storage.postgresql",
                               ", or keep the password in a ~/.pgpass file");
    return 0;
}

/* 1: the Redis URL sets a password. */
static int redis_url_has_password(const char *url)
{
    redis_link_url parsed;
    int has = redis_link_parse_url(url, &parsed, NULL, 0) == 0 && parsed.password[0] != '\0';
    explicit_bzero(&parsed, sizeof parsed);
    return has;
}

/* Cluster mode is cluster.node and cluster.redis together; one without
 * the other is a half-done setup that must not start as a lone node.
 * The nodes share one database, which only PostgreSQL gives. */
static int check_cluster(config *cfg)
{
    server_config *srv = &cfg->server;
    int node = srv->cluster_node[0] != '\0', redis = srv->cluster_redis[0] != '\0';
    if (node && !redis) {
        report(cfg, SM_LOG_ERROR, config_lookup(&cfg->lc, "cluster.node"),
               "cluster.node is set but cluster.redis (a Redis URL) is not: set both for cluster "
               "mode, or neither");
        return -1;
    }
    if (redis && !node) {
        report(cfg, SM_LOG_ERROR, config_lookup(&cfg->lc, "cluster.redis"),
               "cluster.redis is set but cluster.node (this node's id) is not: set both for "
               "cluster mode, or neither");
        return -1;
    }
    if (!node)
        return 0;
    if (strcmp(srv->backend, "postgresql") != 0) {
        report(cfg, SM_LOG_ERROR, config_lookup(&cfg->lc, "cluster.node"),
               "cluster mode needs storage.backend = \"postgresql\": every node must see the "
               "same rows");
        return -1;
    }
    if (redis_url_has_password(srv->cluster_redis))
        warn_readable_password(cfg, "cluster.redis", "");
    return 0;
}

static int read_file(config *cfg)
{
    /* libconfig reports a missing file only as "file I/O error"; opening it
     * first gives the operator the real reason. */
    FILE *f = fopen(cfg->path, "r");
    if (!f) {
        log_msg(SM_LOG_ERROR, "config", "%s: cannot open: %s", cfg->path, strerror(errno));
        return -1;
    }
    fclose(f);
    if (config_read_file(&cfg->lc, cfg->path) != CONFIG_TRUE) {
        if (config_error_type(&cfg->lc) == CONFIG_ERR_FILE_IO) {
            log_msg(SM_LOG_ERROR, "config", "%s: cannot read: %s", cfg->path,
                    config_error_text(&cfg->lc));
        } else {
            const char *file = config_error_file(&cfg->lc);
            log_msg(SM_LOG_ERROR, "config", "%s:%d: %s", file ? file : cfg->path,
                    config_error_line(&cfg->lc), config_error_text(&cfg->lc));
        }
        return -1;
    }
    return 0;
}

/* ---- relative paths ---------------------------------------------------- */

/* The config file's directory as an absolute path, so that what a relative
 * path means does not depend on where the server was started from (a
 * server started from elsewhere once minted a new key and database). */
static int find_dir(config *cfg)
{
    char *copy = strdup(cfg->path);
    if (!copy)
        return -1;
    char *slash = strrchr(copy, '/');
    const char *dir = ".";
    if (slash == copy)
        dir = "/";
    else if (slash) {
        *slash = '\0';
        dir = copy;
    }
    cfg->dir = realpath(dir, NULL);
    if (!cfg->dir)
        log_msg(SM_LOG_ERROR, "config", "%s: cannot resolve its directory %s: %s", cfg->path,
                dir, strerror(errno));
    free(copy);
    return cfg->dir ? 0 : -1;
}

/* Drops "." and "name/.." from an absolute path in place, so logs show
 * /srv/sm/data/key.pem rather than /srv/sm/conf/../data/key.pem. Purely
 * lexical, which is exact here: the directory part came from realpath, so
 * no component before a ".." is a symbolic link of ours to resolve. */
static void normalise_path(char *path)
{
    char *out = path; /* path[0] == '/' */
    const char *in = path;
    while (*in) {
        while (*in == '/')
            in++;
        const char *end = strchr(in, '/');
        size_t n = end ? (size_t)(end - in) : strlen(in);
        if (n == 0 || (n == 1 && in[0] == '.')) {
            /* nothing */
        } else if (n == 2 && in[0] == '.' && in[1] == '.') {
            while (out > path && *--out != '/')
                ;
        } else {
            *out++ = '/';
            memmove(out, in, n);
            out += n;
        }
        in += n;
    }
    if (out == path)
        *out++ = '/';
    *out = '\0';
}

static int resolve_path(config *cfg, const char **field)
{
    const char *v = *field;
    if (!v || v[0] == '\0' || v[0] == '/')
        return 0;
    if (cfg->n_owned == CONFIG_MAX_OWNED)
        return -1;
    size_t len = strlen(cfg->dir) + 1 + strlen(v) + 1;
    char *full = malloc(len);
    if (!full)
        return -1;
    snprintf(full, len, "%s/%s", cfg->dir, v);
    normalise_path(full);
    cfg->owned[cfg->n_owned++] = full;
    *field = full;
    return 0;
}

/* Defaults are relative too ("data/..."): with a file they resolve the
 * same way as written values. */
static int resolve_paths(config *cfg)
{
    server_config *srv = &cfg->server;
    const char **paths[] = {&srv->key_file, &srv->database, &srv->plugin_dir, &srv->tls_cert,
                            &srv->tls_key, &srv->web_root, &srv->admin_socket};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        if (resolve_path(cfg, paths[i]) != 0) {
            log_msg(SM_LOG_ERROR, "config", "out of memory");
            return -1;
        }
    }
    return 0;
}

/* ---- public: load, free, accessors ------------------------------------- */

int config_load(const char *path, config **out)
{
    config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        log_msg(SM_LOG_ERROR, "config", "out of memory");
        return -1;
    }
    /* An empty tree, so the plugin getters work on defaults too. */
    config_init(&cfg->lc);
    set_defaults(&cfg->server);
    if (path) {
        cfg->path = strdup(path);
        if (!cfg->path) {
            log_msg(SM_LOG_ERROR, "config", "out of memory");
            goto fail;
        }
        if (read_file(cfg) != 0 || check_tree(cfg) != 0 || find_dir(cfg) != 0 ||
            resolve_paths(cfg) != 0)
            goto fail;
    }
    if (check_limits(cfg) != 0 || check_storage(cfg) != 0 || check_cluster(cfg) != 0)
        goto fail;
    *out = cfg;
    return 0;
fail:
    config_free(cfg);
    return -1;
}

void config_free(config *cfg)
{
    if (!cfg)
        return;
    config_destroy(&cfg->lc);
    for (size_t i = 0; i < cfg->n_owned; i++)
        free(cfg->owned[i]);
    for (size_t i = 0; i < cfg->n_asked; i++)
        free(cfg->asked[i]);
    free(cfg->dir);
    free(cfg->path);
    free(cfg);
}

server_config *config_server(config *cfg) { return &cfg->server; }

const char *config_path(const config *cfg) { return cfg->path ? cfg->path : "(defaults)"; }

const char *config_file(const config *cfg) { return cfg->path; }

int config_plugin_line(config *cfg, size_t index, const char **file)
{
    *file = cfg->path;
    const config_setting_t *load = config_lookup(&cfg->lc, "plugins.load");
    const config_setting_t *e = load ? config_setting_get_elem(load, (unsigned)index) : NULL;
    if (!e)
        return 0;
    *file = setting_file(cfg, e);
    return (int)config_setting_source_line(e);
}

/* ---- plugin sections --------------------------------------------------- */

static void remember_asked(config *cfg, const char *section, const char *key)
{
    char full[256];
    int n = snprintf(full, sizeof full, "%s.%s", section, key);
    if (n < 0 || (size_t)n >= sizeof full || cfg->n_asked == CONFIG_MAX_ASKED)
        return;
    for (size_t i = 0; i < cfg->n_asked; i++)
        if (strcmp(cfg->asked[i], full) == 0)
            return;
    char *copy = strdup(full);
    if (copy)
        cfg->asked[cfg->n_asked++] = copy;
}

/* Finds "<section>.<key>": SM_OK with *out NULL when absent, SM_EINVAL for
 * bad arguments. A found setting and its enclosing groups are marked read. */
static int section_lookup(config *cfg, const char *section, const char *key,
                          config_setting_t **out)
{
    if (!cfg || !section || !key || section[0] == '\0' || key[0] == '\0') {
        log_msg(SM_LOG_ERROR, "config", "config lookup without a section or key");
        return SM_EINVAL;
    }
    if (is_core_section(section)) {
        log_msg(SM_LOG_ERROR, "config", "section '%s' belongs to the core, not to a plugin",
                section);
        return SM_EINVAL;
    }
    remember_asked(cfg, section, key);
    config_setting_t *sec = config_setting_get_member(config_root_setting(&cfg->lc), section);
    config_setting_t *s = NULL;
    if (sec && config_setting_is_group(sec))
        s = config_setting_lookup(sec, key);
    for (config_setting_t *p = s; p && !config_setting_is_root(p); p = config_setting_parent(p))
        config_setting_set_hook(p, &read_mark);
    *out = s;
    return SM_OK;
}

int config_section_int(config *cfg, const char *section, const char *key,
                       int64_t min, int64_t max, int64_t *out)
{
    config_setting_t *s;
    int rc = section_lookup(cfg, section, key, &s);
    if (rc != SM_OK || !s)
        return rc;
    long long v = is_integer(s) ? config_setting_get_int64(s) : 0;
    if (!is_integer(s) || v < min || v > max) {
        report(cfg, SM_LOG_ERROR, s, "%s.%s must be an integer from %" PRId64 " to %" PRId64,
               section, key, min, max);
        return SM_EINVAL;
    }
    *out = (int64_t)v;
    return SM_OK;
}

int config_section_double(config *cfg, const char *section, const char *key,
                          double min, double max, double *out)
{
    config_setting_t *s;
    int rc = section_lookup(cfg, section, key, &s);
    if (rc != SM_OK || !s)
        return rc;
    int ok = 1;
    double v = 0;
    if (is_integer(s))
        v = (double)config_setting_get_int64(s);
    else if (config_setting_type(s) == CONFIG_TYPE_FLOAT)
        v = config_setting_get_float(s);
    else
        ok = 0;
    if (!ok || !isfinite(v) || v < min || v > max) {
        report(cfg, SM_LOG_ERROR, s, "%s.%s must be a number from %g to %g", section, key,
               min, max);
        return SM_EINVAL;
    }
    *out = v;
    return SM_OK;
}

int config_section_bool(config *cfg, const char *section, const char *key, int *out)
{
    config_setting_t *s;
    int rc = section_lookup(cfg, section, key, &s);
    if (rc != SM_OK || !s)
        return rc;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
        report(cfg, SM_LOG_ERROR, s, "%s.%s must be true or false", section, key);
        return SM_EINVAL;
    }
    *out = config_setting_get_bool(s) ? 1 : 0;
    return SM_OK;
}

int config_section_string(config *cfg, const char *section, const char *key, const char **out)
{
    config_setting_t *s;
    int rc = section_lookup(cfg, section, key, &s);
    if (rc != SM_OK || !s)
        return rc;
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        report(cfg, SM_LOG_ERROR, s, "%s.%s must be a string", section, key);
        return SM_EINVAL;
    }
    *out = config_setting_get_string(s);
    return SM_OK;
}

int config_section_string_list(config *cfg, const char *section, const char *key,
                               const char **out, size_t max)
{
    config_setting_t *s;
    int rc = section_lookup(cfg, section, key, &s);
    if (rc != SM_OK || !s)
        return rc;
    if (!is_string_list(s)) {
        report(cfg, SM_LOG_ERROR, s, "%s.%s must be a list of strings", section, key);
        return SM_EINVAL;
    }
    int n = config_setting_length(s);
    if ((size_t)n > max || (n > 0 && !out)) {
        report(cfg, SM_LOG_ERROR, s, "%s.%s must list at most %zu strings", section, key, max);
        return SM_EINVAL;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            report(cfg, SM_LOG_ERROR, e, "%s.%s[%d] must be a string", section, key, i);
            return SM_EINVAL;
        }
    }
    /* Written only once every element is known good. */
    for (int i = 0; i < n; i++)
        out[i] = config_setting_get_string_elem(s, i);
    return n;
}

/* ---- unused settings --------------------------------------------------- */

/* The closest key a plugin asked for under `path` (e.g. "auth"). */
static const char *closest_asked(const config *cfg, const char *path, const char *name,
                                 char *buf, size_t len)
{
    size_t plen = strlen(path);
    const char *best = NULL;
    size_t dist = SIZE_MAX;
    for (size_t i = 0; i < cfg->n_asked; i++) {
        const char *a = cfg->asked[i];
        if (strncmp(a, path, plen) == 0 && a[plen] == '.' && !strchr(a + plen + 1, '.'))
            consider(name, a + plen + 1, &best, &dist);
    }
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s.", path);
    return suggestion(buf, len, prefix, best);
}

static int check_unread(const config *cfg, const config_setting_t *group, const char *path)
{
    int rc = 0;
    int n = config_setting_length(group);
    for (int i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(m);
        if (config_setting_get_hook(m) != &read_mark) {
            char hint[320];
            report(cfg, SM_LOG_ERROR, m, "unknown key %s.%s%s", path, name,
                   closest_asked(cfg, path, name, hint, sizeof hint));
            rc = -1;
        } else if (config_setting_is_group(m)) {
            /* A group some key was read from: its other keys may still be typos. */
            char child[256];
            int len = snprintf(child, sizeof child, "%s.%s", path, name);
            if (len > 0 && (size_t)len < sizeof child && check_unread(cfg, m, child) != 0)
                rc = -1;
        }
    }
    return rc;
}

static int listed(const char *const *names, size_t n, const char *name)
{
    for (size_t j = 0; names && j < n; j++)
        if (names[j] && strcmp(names[j], name) == 0)
            return 1;
    return 0;
}

int config_check_unused(config *cfg, const char *const *known, size_t n_known)
{
    return config_check_sections(cfg, known, n_known, known, n_known);
}

int config_check_sections(config *cfg, const char *const *known, size_t n_known,
                          const char *const *checked, size_t n_checked)
{
    if (!cfg || !cfg->path)
        return 0;
    int rc = 0;
    const config_setting_t *root = config_root_setting(&cfg->lc);
    int n = config_setting_length(root);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
        const char *name = config_setting_name(s);
        if (is_core_section(name) || !config_setting_is_group(s))
            continue;
        if (listed(known, n_known, name)) {
            if (listed(checked, n_checked, name) && check_unread(cfg, s, name) != 0)
                rc = -1;
            continue;
        }
        const char *best = NULL;
        size_t dist = SIZE_MAX;
        for (size_t j = 0; j < sizeof core_sections / sizeof core_sections[0]; j++)
            consider(name, core_sections[j], &best, &dist);
        for (size_t j = 0; known && j < n_known; j++)
            if (known[j])
                consider(name, known[j], &best, &dist);
        char hint[128];
        report(cfg, SM_LOG_ERROR, s,
               "section '%s' is neither a core section nor a loaded plugin's%s", name,
               suggestion(hint, sizeof hint, "", best));
        rc = -1;
    }
    return rc;
}
