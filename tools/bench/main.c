/* safemessenger-bench: options, limits, and the JSON report on stdout.
 * docs/BENCHMARKS.md describes the scenarios and how to run them. */
#include "bench.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "crypto.h"

volatile int bench_interrupted;

typedef int (*scenario_fn)(const bench_opts *o, json_t *report);

static const struct {
    const char *name;
    scenario_fn run;
} scenarios[] = {
    {"handshakes", scenario_handshakes},
    {"logins", scenario_logins},
    {"fanout", scenario_fanout},
    {"private", scenario_private},
    {"idle", scenario_idle},
};

static void usage(FILE *out)
{
    fprintf(out,
        "Usage: safemessenger-bench SCENARIO [options]\n"
        "Scenarios: handshakes, logins, fanout, private, idle (docs/BENCHMARKS.md).\n"
        "The target must be on this machine (127.0.0.0/8 or ::1); the JSON report goes to\n"
        "stdout, a progress line to stderr once a second.\n"
        "  --url URL               server (default ws://127.0.0.1:8765/); repeat it for the\n"
        "                          nodes of a cluster (at most 16): connections go to\n"
        "                          them in turn\n"
        "  --duration S            measured seconds (default 10, at most 300)\n"
        "  --warmup S              load before measuring (default 1)\n"
        "  --setup-timeout S       connecting and logging in users (default 120)\n"
        "  --connections N         handshakes, logins: concurrency; idle: sessions\n"
        "  --rooms R --members M   fanout: R rooms of M members (default 1 x 100)\n"
        "  --senders S             sending users (fanout: one per room; private: 16)\n"
        "  --online P --offline Q  private: recipients with / without a session (16 / 16)\n"
        "  --rate X                messages/s in total (default 0 = as fast as windows allow)\n"
        "  --window W              commands in flight per sender (default 4)\n"
        "  --room-window K         fanout: undelivered messages per room (default 16)\n"
        "  --content-bytes B       message content length (default 64)\n"
        "  --verify-one-in K       open (verify + decrypt) 1 delivery in K (default 1)\n"
        "  --readers N             fanout: threads reading the members' deliveries, the main\n"
        "                          thread (senders, pacing) included (default 1, at most 16)\n"
        "  --bystander-ms T        logins: a separate user sends get_users every T ms, alone\n"
        "                          and then during the storm (default 10; 0 = no bystander)\n"
        "  --bystander-rounds K    logins: alternate K times between --duration/K s alone\n"
        "                          and --duration/K s of storm (default 1, at most 100)\n"
        "  --server-pid PID        the server, for CPU use and idle's memory (required by idle)\n"
        "  --sources K             127.0.0.x source addresses (default: auto)\n"
        "  --setup-concurrency C   users in setup at once (default 128)\n"
        "  --user-prefix P         user names P<n> (default: random per run)\n"
        "  --password PW           password of the users (default bench-password)\n"
        "  --quiet                 no progress line\n");
}

enum {
    OPT_URL = 256, OPT_DURATION, OPT_WARMUP, OPT_SETUP_TIMEOUT, OPT_CONNECTIONS, OPT_ROOMS,
    OPT_MEMBERS, OPT_SENDERS, OPT_ONLINE, OPT_OFFLINE, OPT_RATE, OPT_WINDOW, OPT_ROOM_WINDOW,
    OPT_CONTENT, OPT_VERIFY, OPT_READERS, OPT_PID, OPT_SOURCES, OPT_SETUP_CONC, OPT_PREFIX,
    OPT_PASSWORD, OPT_QUIET, OPT_BYSTANDER, OPT_ROUNDS, OPT_HELP
};

static int parse_num(const char *name, const char *s, double min, double max, double *out)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (!end || end == s || *end || !(v >= min && v <= max)) {
        fprintf(stderr, "safemessenger-bench: --%s must be a number from %g to %g\n", name, min,
                max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_uint(const char *name, const char *s, unsigned min, unsigned max, unsigned *out)
{
    double v = 0;
    if (parse_num(name, s, min, max, &v) != 0)
        return -1;
    if (v != (double)(unsigned)v) {
        fprintf(stderr, "safemessenger-bench: --%s must be a whole number\n", name);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

/* Only a server on this machine: an IPv4 address in 127.0.0.0/8 or ::1,
 * written as a literal (a name could resolve anywhere). */
static int set_one_target(bench_target *t)
{
    if (ws_url_parse(t->url, &t->ws) != 0) {
        fprintf(stderr, "safemessenger-bench: bad --url '%s'\n", t->url);
        return -1;
    }
    if (t->ws.tls) {
        fprintf(stderr, "safemessenger-bench: wss:// is not supported (loopback ws:// only)\n");
        return -1;
    }
    unsigned port = (unsigned)strtoul(t->ws.port, NULL, 10);
    memset(&t->addr, 0, sizeof t->addr);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&t->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&t->addr;
    if (inet_pton(AF_INET, t->ws.host, &v4->sin_addr) == 1) {
        if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127)
            goto refuse;
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        t->addr_len = sizeof *v4;
        return 0;
    }
    if (inet_pton(AF_INET6, t->ws.host, &v6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr))
            goto refuse;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        t->addr_len = sizeof *v6;
        return 0;
    }
refuse:
    fprintf(stderr,
            "safemessenger-bench: refusing target '%s': only 127.0.0.0/8 or ::1, written as an "
            "address, may be loaded\n",
            t->ws.host);
    return -1;
}

/* Every target checked; one address family for all (the source
 * addresses the connections bind to are of one family). */
static int set_targets(bench_opts *o)
{
    for (unsigned i = 0; i < o->n_targets; i++) {
        if (set_one_target(&o->targets[i]) != 0)
            return -1;
        if (o->targets[i].addr.ss_family != o->targets[0].addr.ss_family) {
            fprintf(stderr, "safemessenger-bench: every --url must be IPv4 or every one IPv6\n");
            return -1;
        }
    }
    return 0;
}

/* Raises the soft descriptor limit to the hard one and derives the
 * connection cap from it. */
static void set_fd_limit(bench_opts *o)
{
    struct rlimit rl;
    unsigned cap = BENCH_MAX_CONNECTIONS;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            (void)setrlimit(RLIMIT_NOFILE, &rl);
            (void)getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur != RLIM_INFINITY) {
            rlim_t usable = rl.rlim_cur > BENCH_FD_RESERVE ? rl.rlim_cur - BENCH_FD_RESERVE : 0;
            if (usable < cap)
                cap = (unsigned)usable;
        }
    }
    o->max_connections = cap;
}

static int valid_prefix(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 20)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
              || c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

/* A fresh prefix per run, so repeated runs against one server register
 * new users instead of colliding with the last run's. */
static int random_prefix(char buf[16])
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    uint8_t r[6];
    if (crypto_random(r, sizeof r) != 0)
        return -1;
    buf[0] = 'b';
    for (int i = 0; i < 6; i++)
        buf[1 + i] = digits[r[i] % 36];
    buf[7] = '_';
    buf[8] = '\0';
    return 0;
}

static int check_opts(bench_opts *o, int given_conns, int given_senders)
{
    const char *s = o->scenario;
    unsigned need = 0;
    if (strcmp(s, "handshakes") == 0 || strcmp(s, "logins") == 0 || strcmp(s, "idle") == 0) {
        if (!given_conns)
            o->connections = strcmp(s, "idle") == 0 ? 1000 : 64;
        need = o->connections;
        if (strcmp(s, "logins") == 0 && o->bystander_ms > 0)
            need++;   /* the bystander */
    } else if (strcmp(s, "fanout") == 0) {
        if (!given_senders)
            o->senders = o->rooms;
        if ((unsigned long)o->rooms * o->members > BENCH_MAX_CONNECTIONS) {
            fprintf(stderr, "safemessenger-bench: --rooms x --members is at most %u\n",
                    BENCH_MAX_CONNECTIONS);
            return -1;
        }
        need = o->rooms * o->members;
        if (o->senders > need) {
            fprintf(stderr, "safemessenger-bench: --senders is at most rooms x members\n");
            return -1;
        }
    } else {
        if (!given_senders)
            o->senders = 16;
        need = o->senders + o->online + o->offline;
    }
    if (need == 0 || need > o->max_connections) {
        fprintf(stderr,
                "safemessenger-bench: %u connections needed; the limit here is %u (hard cap %u, "
                "and the descriptor limit minus %u)\n",
                need, o->max_connections, BENCH_MAX_CONNECTIONS, BENCH_FD_RESERVE);
        return -1;
    }
    if (o->readers > 1 && strcmp(s, "fanout") != 0) {
        fprintf(stderr, "safemessenger-bench: --readers is for fanout only\n");
        return -1;
    }
    if (strcmp(s, "idle") == 0 && o->server_pid <= 0) {
        fprintf(stderr, "safemessenger-bench: idle needs --server-pid (to read its VmRSS)\n");
        return -1;
    }
    if (o->sources == 0)   /* handshakes churn ports through TIME_WAIT */
        o->sources = strcmp(s, "handshakes") == 0 ? 4 : 1 + need / 20000;
    if (o->setup_concurrency > need)
        o->setup_concurrency = need;
    return 0;
}

static json_t *params_json(const bench_opts *o)
{
    json_t *p = json_pack("{s:f, s:f, s:f, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:i, s:i, s:i, s:i, "
                     "s:i, s:i, s:s, s:I}",
                     "duration_s", o->duration_s, "warmup_s", o->warmup_s, "setup_timeout_s",
                     o->setup_timeout_s, "connections", (int)o->connections, "rooms",
                     (int)o->rooms, "members", (int)o->members, "senders", (int)o->senders,
                     "online", (int)o->online, "offline", (int)o->offline, "rate", o->rate,
                     "window", (int)o->window, "room_window", (int)o->room_window,
                     "content_bytes", (int)o->content_bytes, "verify_one_in",
                     (int)o->verify_one_in, "sources", (int)o->sources, "setup_concurrency",
                     (int)o->setup_concurrency, "user_prefix", o->user_prefix, "server_pid",
                     (json_int_t)o->server_pid);
    if (p && strcmp(o->scenario, "fanout") == 0)
        json_object_set_new(p, "readers", json_integer(o->readers));
    if (p && strcmp(o->scenario, "logins") == 0)
    {
        json_object_set_new(p, "bystander_ms", json_real(o->bystander_ms));
        json_object_set_new(p, "bystander_rounds", json_integer(o->bystander_rounds));
    }
    return p;
}

static void on_stop(int sig)
{
    (void)sig;
    bench_interrupted = 1;
}

/* The last line of defence for "always stops by itself". */
static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "safemessenger-bench: hard time limit reached, exiting\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

static int parse_args(int argc, char **argv, bench_opts *o, int *given_conns, int *given_senders)
{
    static const struct option options[] = {
        {"url", required_argument, NULL, OPT_URL},
        {"duration", required_argument, NULL, OPT_DURATION},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"setup-timeout", required_argument, NULL, OPT_SETUP_TIMEOUT},
        {"connections", required_argument, NULL, OPT_CONNECTIONS},
        {"rooms", required_argument, NULL, OPT_ROOMS},
        {"members", required_argument, NULL, OPT_MEMBERS},
        {"senders", required_argument, NULL, OPT_SENDERS},
        {"online", required_argument, NULL, OPT_ONLINE},
        {"offline", required_argument, NULL, OPT_OFFLINE},
        {"rate", required_argument, NULL, OPT_RATE},
        {"window", required_argument, NULL, OPT_WINDOW},
        {"room-window", required_argument, NULL, OPT_ROOM_WINDOW},
        {"content-bytes", required_argument, NULL, OPT_CONTENT},
        {"verify-one-in", required_argument, NULL, OPT_VERIFY},
        {"readers", required_argument, NULL, OPT_READERS},
        {"server-pid", required_argument, NULL, OPT_PID},
        {"sources", required_argument, NULL, OPT_SOURCES},
        {"setup-concurrency", required_argument, NULL, OPT_SETUP_CONC},
        {"user-prefix", required_argument, NULL, OPT_PREFIX},
        {"password", required_argument, NULL, OPT_PASSWORD},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"bystander-ms", required_argument, NULL, OPT_BYSTANDER},
        {"bystander-rounds", required_argument, NULL, OPT_ROUNDS},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int opt, rc = 0, urls_given = 0;
    double pid = 0;
    while (rc == 0 && (opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case OPT_URL:
            /* The first replaces the default; later ones add nodes. */
            if (!urls_given)
                o->n_targets = 0;
            urls_given = 1;
            if (o->n_targets == BENCH_MAX_TARGETS) {
                fprintf(stderr, "safemessenger-bench: at most %u --url\n", BENCH_MAX_TARGETS);
                rc = -1;
                break;
            }
            o->targets[o->n_targets++].url = optarg;
            break;
        case OPT_DURATION:
            rc = parse_num("duration", optarg, 0.1, BENCH_MAX_DURATION_S, &o->duration_s);
            break;
        case OPT_WARMUP:
            rc = parse_num("warmup", optarg, 0, 60, &o->warmup_s);
            break;
        case OPT_SETUP_TIMEOUT:
            rc = parse_num("setup-timeout", optarg, 1, BENCH_MAX_SETUP_S, &o->setup_timeout_s);
            break;
        case OPT_CONNECTIONS:
            *given_conns = 1;
            rc = parse_uint("connections", optarg, 1, BENCH_MAX_CONNECTIONS, &o->connections);
            break;
        case OPT_ROOMS:
            rc = parse_uint("rooms", optarg, 1, BENCH_MAX_CONNECTIONS, &o->rooms);
            break;
        case OPT_MEMBERS:
            rc = parse_uint("members", optarg, 1, BENCH_MAX_CONNECTIONS, &o->members);
            break;
        case OPT_SENDERS:
            *given_senders = 1;
            rc = parse_uint("senders", optarg, 1, BENCH_MAX_CONNECTIONS, &o->senders);
            break;
        case OPT_ONLINE:
            rc = parse_uint("online", optarg, 1, BENCH_MAX_CONNECTIONS, &o->online);
            break;
        case OPT_OFFLINE:
            rc = parse_uint("offline", optarg, 1, BENCH_MAX_CONNECTIONS, &o->offline);
            break;
        case OPT_RATE:
            rc = parse_num("rate", optarg, 0, 10000000, &o->rate);
            break;
        case OPT_WINDOW:
            rc = parse_uint("window", optarg, 1, BENCH_MAX_WINDOW, &o->window);
            break;
        case OPT_ROOM_WINDOW:
            rc = parse_uint("room-window", optarg, 1, 100000, &o->room_window);
            break;
        case OPT_CONTENT:
            rc = parse_uint("content-bytes", optarg, 1, BENCH_MAX_CONTENT, &o->content_bytes);
            break;
        case OPT_VERIFY:
            rc = parse_uint("verify-one-in", optarg, 1, 1000000, &o->verify_one_in);
            break;
        case OPT_READERS:
            rc = parse_uint("readers", optarg, 1, 16, &o->readers);
            break;
        case OPT_PID:
            rc = parse_num("server-pid", optarg, 1, 4194304, &pid);
            o->server_pid = (long)pid;
            break;
        case OPT_SOURCES:
            rc = parse_uint("sources", optarg, 1, BENCH_MAX_SOURCES, &o->sources);
            break;
        case OPT_SETUP_CONC:
            rc = parse_uint("setup-concurrency", optarg, 1, BENCH_MAX_CONNECTIONS,
                            &o->setup_concurrency);
            break;
        case OPT_PREFIX:
            o->user_prefix = optarg;
            break;
        case OPT_PASSWORD:
            o->password = optarg;
            break;
        case OPT_QUIET:
            o->quiet = 1;
            break;
        case OPT_ROUNDS:
            rc = parse_uint("bystander-rounds", optarg, 1, 100, &o->bystander_rounds);
            break;
        case OPT_BYSTANDER:
            rc = parse_num("bystander-ms", optarg, 0, 1000, &o->bystander_ms);
            if (rc == 0 && o->bystander_ms > 0 && o->bystander_ms < 1) {
                fprintf(stderr, "safemessenger-bench: --bystander-ms is 0 or 1 to 1000\n");
                rc = -1;
            }
            break;
        case 'h':
        case OPT_HELP:
            usage(stdout);
            exit(0);
        default:
            rc = -1;
            break;
        }
    }
    if (rc != 0)
        return -1;
    if (optind + 1 != argc) {
        usage(stderr);
        return -1;
    }
    o->scenario = argv[optind];
    return 0;
}

int main(int argc, char **argv)
{
    static char prefix[16];
    bench_opts o = {
        .targets = {{.url = "ws://127.0.0.1:8765/"}}, .n_targets = 1, .duration_s = 10, .warmup_s = 1, .setup_timeout_s = 120,
        .rooms = 1, .members = 100, .online = 16, .offline = 16, .window = 4,
        .room_window = 16, .content_bytes = 64, .verify_one_in = 1, .readers = 1, .setup_concurrency = 128,
        .password = "bench-password", .bystander_ms = 10, .bystander_rounds = 1,
    };
    int given_conns = 0, given_senders = 0;
    if (parse_args(argc, argv, &o, &given_conns, &given_senders) != 0)
        return 2;
    scenario_fn fn = NULL;
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        if (strcmp(scenarios[i].name, o.scenario) == 0)
            fn = scenarios[i].run;
    if (!fn) {
        fprintf(stderr, "safemessenger-bench: unknown scenario '%s'\n", o.scenario);
        return 2;
    }
    if (!o.user_prefix) {
        if (random_prefix(prefix) != 0)
            return 2;
        o.user_prefix = prefix;
    }
    if (!valid_prefix(o.user_prefix) || strlen(o.password) < 8 || strlen(o.password) > 100
        || strpbrk(o.password, "\"\\")) {
        fprintf(stderr, "safemessenger-bench: --user-prefix must be 1-20 of [A-Za-z0-9_.-]; "
                        "--password 8-100 characters without quotes or backslashes\n");
        return 2;
    }
    set_fd_limit(&o);
    if (set_targets(&o) != 0 || check_opts(&o, given_conns, given_senders) != 0)
        return 2;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* Every phase has its own deadline; this only catches a bug. (logins
     * with a bystander measures twice, alone and in the storm, and each
     * round has a warm-up and a drain of at most 5 s.) */
    alarm((unsigned)(o.setup_timeout_s + 3 * o.warmup_s + 2 * o.duration_s
                     + o.bystander_rounds * (o.warmup_s + 5) + 60));

    json_t *report = json_pack("{s:s, s:s, s:s, s:I, s:i}", "tool", "safemessenger-bench",
                               "scenario", o.scenario, "target", o.targets[0].url, "started_at",
                               (json_int_t)time(NULL), "nproc", (int)sysconf(_SC_NPROCESSORS_ONLN));
    json_t *urls = json_array();
    for (unsigned i = 0; urls && i < o.n_targets; i++)
        json_array_append_new(urls, json_string(o.targets[i].url));
    if (!report || !urls || json_object_set_new(report, "targets", urls) != 0)
        return 2;
    json_object_set_new(report, "parameters", params_json(&o));
    int rc = fn(&o, report);
    json_object_set_new(report, "interrupted", json_boolean(bench_interrupted));
    json_t *errors = json_object_get(json_object_get(report, "errors"), "total");
    int clean = rc == 0 && json_integer_value(errors) == 0 && !bench_interrupted;
    json_object_set_new(report, "ok", json_boolean(clean));
    json_dumpf(report, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    fflush(stdout);
    json_decref(report);
    return rc != 0 ? 2 : clean ? 0 : 1;
}
