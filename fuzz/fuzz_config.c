/* libFuzzer target: the configuration parser (core/config.c over
 * libconfig) on arbitrary text.
 *
 * The input is written to a memory file and loaded with config_load by
 * its /proc/self/fd path, exactly as the server loads -c FILE, so
 * config.c needs no second entry point. A file that loads must have
 * every core setting within its documented range (docs/OPERATIONS.md);
 * then every plugin section's keys are read back through the plugin
 * getters, which must agree with the setting's type, and
 * config_check_unused runs over the result. Inputs with @include are
 * skipped: libconfig would read other files of the machine. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "fuzz_check.h"
#include "log.h"

/* Debian 12's libconfig 1.5 loses what its scanner allocated for the
 * current token when a syntax error stops the parse (a string literal's
 * buffer from strbuf_append, a token from libconfig_yylex): a library
 * leak on a file the server refuses, once. A parsed tree that is not
 * freed still leaks settings allocated elsewhere and stays reported. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:strbuf_append\nleak:libconfig_yylex\n";
}

static int memfd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    memfd = memfd_create("sm-fuzz-config", 0);
    FUZZ_CHECK(memfd >= 0);
    FUZZ_CHECK(snprintf(path, sizeof path, "/proc/self/fd/%d", memfd) < (int)sizeof path);
    /* Errors about the input are the expected outcome; only a crash or a
     * broken invariant is news. */
    log_set_level(SM_LOG_ERROR);
    return 0;
}

static int is_plugin_name(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') || s[n] == '_'))
            return 0;
    return n > 0 && n <= 64;
}

static void check_server_config(const server_config *sc)
{
    FUZZ_CHECK(sc->port >= 0 && sc->port <= 65535);
    FUZZ_CHECK(sc->bind && sc->bind[0]);
    FUZZ_CHECK(sc->key_file && sc->key_file[0]);
    FUZZ_CHECK(sc->key_bits >= 2048 && sc->key_bits <= 8192);
    FUZZ_CHECK(sc->max_message_bytes >= 4096 && sc->max_message_bytes <= 16777216);
    FUZZ_CHECK(sc->tls_cert && sc->tls_key);
    FUZZ_CHECK((sc->tls_cert[0] == '\0') == (sc->tls_key[0] == '\0'));
    FUZZ_CHECK(sc->n_allowed_origins <= CONFIG_MAX_ORIGINS);
    for (size_t i = 0; i < sc->n_allowed_origins; i++)
        FUZZ_CHECK(sc->allowed_origins[i] && sc->allowed_origins[i][0]);
    FUZZ_CHECK(sc->handshake_timeout >= 1 && sc->handshake_timeout <= 300);
    FUZZ_CHECK(sc->workers >= 1 && sc->workers <= 64);
    FUZZ_CHECK(sc->database && sc->database[0]);
    FUZZ_CHECK(sc->synchronous
               && (strcmp(sc->synchronous, "off") == 0 || strcmp(sc->synchronous, "normal") == 0
                   || strcmp(sc->synchronous, "full") == 0
                   || strcmp(sc->synchronous, "extra") == 0));
    FUZZ_CHECK(sc->plugin_dir && sc->plugin_dir[0]);
    FUZZ_CHECK(sc->n_plugins <= CONFIG_MAX_PLUGINS);
    for (size_t i = 0; i < sc->n_plugins; i++) {
        FUZZ_CHECK(sc->plugins[i] && is_plugin_name(sc->plugins[i]));
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(sc->plugins[i], sc->plugins[j]) != 0);
    }
    FUZZ_CHECK(isfinite(sc->commands_per_second) && sc->commands_per_second > 0
               && sc->commands_per_second <= 100000);
    FUZZ_CHECK(sc->command_burst >= 1 && sc->command_burst <= 100000);
    FUZZ_CHECK(sc->send_queue_bytes >= 65536 && sc->send_queue_bytes <= 1073741824);
    FUZZ_CHECK(sc->send_queue_messages >= 16 && sc->send_queue_messages <= 1000000);
    FUZZ_CHECK(sc->max_sessions >= 1 && sc->max_sessions <= 1000000);
    FUZZ_CHECK(sc->log_level >= SM_LOG_ERROR && sc->log_level <= SM_LOG_DEBUG);
}

/* Reads one key with every getter: at most one kind may succeed, and
 * what it gives must be in range. */
static void read_key(config *cfg, const char *section, const char *key)
{
    int64_t i = -7;
    int irc = config_section_int(cfg, section, key, -1000, 1000, &i);
    FUZZ_CHECK(irc == SM_OK || irc == SM_EINVAL);
    FUZZ_CHECK(i == -7 || (irc == SM_OK && i >= -1000 && i <= 1000));

    double d = -7.5;
    int drc = config_section_double(cfg, section, key, -1e6, 1e6, &d);
    FUZZ_CHECK(drc == SM_OK || drc == SM_EINVAL);
    FUZZ_CHECK(d == -7.5 || (drc == SM_OK && isfinite(d) && d >= -1e6 && d <= 1e6));

    int b = 7;
    int brc = config_section_bool(cfg, section, key, &b);
    FUZZ_CHECK(brc == SM_OK || brc == SM_EINVAL);
    FUZZ_CHECK(b == 7 || (brc == SM_OK && (b == 0 || b == 1)));

    const char *s = NULL;
    int src = config_section_string(cfg, section, key, &s);
    FUZZ_CHECK(src == SM_OK || src == SM_EINVAL);
    FUZZ_CHECK(!s || src == SM_OK);

    const char *list[8] = {0};
    int lrc = config_section_string_list(cfg, section, key, list, 8);
    FUZZ_CHECK(lrc == SM_EINVAL || (lrc >= 0 && lrc <= 8));
    for (int k = 0; k < 8; k++)
        FUZZ_CHECK((k < lrc) == (list[k] != NULL));

    /* A setting has one type: a bool is no string, a string no number. */
    FUZZ_CHECK(!(b != 7 && (s || d != -7.5)));
    FUZZ_CHECK(!(s && (i != -7 || d != -7.5)));
}

/* The keys of every plugin section, one level of groups deep, as the
 * plugins' dotted keys ("tls.cert") reach them. */
static void read_plugin_sections(config *cfg, const char *text)
{
    static const char *const core[] = {"server", "storage", "plugins", "limits", "log"};
    static const char *const known[] = {"auth", "heartbeat", "rooms", "messaging", "friends"};
    /* Section and key names are what libconfig accepts: letters, digits
     * and - _ *; finding them in the text is enough for the getters. */
    const char *p = text;
    while (*p) {
        char name[64];
        size_t n = 0;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')
               || *p == '_' || *p == '-' || *p == '*' || *p == '.') {
            if (n + 1 < sizeof name)
                name[n++] = *p;
            p++;
        }
        name[n] = '\0';
        if (n == 0) {
            p++;
            continue;
        }
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            read_key(cfg, known[k], name);
        int is_core = 0;
        for (size_t k = 0; k < sizeof core / sizeof core[0]; k++)
            is_core |= strcmp(core[k], name) == 0;
        if (!is_core && !strchr(name, '.'))
            read_key(cfg, name, "enabled");
    }
    (void)config_check_unused(cfg, known, sizeof known / sizeof known[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536 || memmem(data, size, "@include", 8))
        return 0;
    FUZZ_CHECK(ftruncate(memfd, 0) == 0);
    FUZZ_CHECK(pwrite(memfd, data, size, 0) == (ssize_t)size);
    config *cfg = NULL;
    if (config_load(path, &cfg) != 0) {
        FUZZ_CHECK(cfg == NULL);
        return 0;
    }
    FUZZ_CHECK(cfg != NULL);
    check_server_config(config_server(cfg));
    /* The text as a C string, for finding names in it. */
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    read_plugin_sections(cfg, text);
    free(text);
    config_free(cfg);
    return 0;
}
