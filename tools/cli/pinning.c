/* known_servers holds one "host:port sha256:<hex>" line per server; lines
 * starting with '#' and blank lines are kept as they are. */
#include "pinning.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "files.h"

#define KNOWN_SERVERS "known_servers"
#define KNOWN_SERVERS_MAX (1024 * 1024)
#define CONTACT_PEM_MAX 65536

static int lower_copy(char *out, size_t out_len, const char *in, size_t n)
{
    if (n >= out_len)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = (in[i] >= 'A' && in[i] <= 'Z') ? (char)(in[i] - 'A' + 'a') : in[i];
    out[n] = '\0';
    return 0;
}

int pinning_server_id(const char *url, char *id, size_t id_len, char *dir, size_t dir_len)
{
    const char *p;
    const char *default_port;
    if (strncasecmp(url, "ws://", 5) == 0) {
        p = url + 5;
        default_port = "80";
    } else if (strncasecmp(url, "wss://", 6) == 0) {
        p = url + 6;
        default_port = "443";
    } else {
        return -1;
    }
    size_t auth_len = strcspn(p, "/?#");
    if (auth_len == 0 || memchr(p, '@', auth_len))
        return -1;
    char host[260];
    const char *port = NULL;
    size_t port_len = 0;
    if (p[0] == '[') {
        const char *close = memchr(p, ']', auth_len);
        if (!close || close == p + 1)
            return -1;
        if (lower_copy(host, sizeof host, p, (size_t)(close - p) + 1) != 0)
            return -1;   /* brackets kept: "[::1]:8765" stays unambiguous */
        if (close + 1 < p + auth_len) {
            if (close[1] != ':')
                return -1;
            port = close + 2;
            port_len = (size_t)(p + auth_len - port);
        }
    } else {
        const char *colon = memchr(p, ':', auth_len);
        size_t host_len = colon ? (size_t)(colon - p) : auth_len;
        if (host_len == 0 || lower_copy(host, sizeof host, p, host_len) != 0)
            return -1;
        if (colon) {
            port = colon + 1;
            port_len = (size_t)(p + auth_len - port);
        }
    }
    char port_buf[8];
    if (port) {
        if (port_len == 0 || port_len > 5)
            return -1;
        unsigned long v = 0;
        for (size_t i = 0; i < port_len; i++) {
            if (port[i] < '0' || port[i] > '9')
                return -1;
            v = v * 10 + (unsigned long)(port[i] - '0');
        }
        if (v == 0 || v > 65535)
            return -1;
        snprintf(port_buf, sizeof port_buf, "%lu", v);
    } else {
        snprintf(port_buf, sizeof port_buf, "%s", default_port);
    }
    for (const char *h = host; *h; h++)
        if ((unsigned char)*h <= ' ' || (unsigned char)*h >= 0x7f)
            return -1;
    char id_buf[300], dir_buf[300];
    int n = snprintf(id_buf, sizeof id_buf, "%s:%s", host, port_buf);
    if (n < 0 || (size_t)n >= sizeof id_buf || (size_t)n >= id_len)
        return -1;
    /* The file-name form: only characters that cannot climb out of the
     * directory or confuse a shell. */
    n = snprintf(dir_buf, sizeof dir_buf, "%s_%s", host, port_buf);
    if (n < 0 || (size_t)n >= sizeof dir_buf || (size_t)n >= dir_len)
        return -1;
    for (char *d = dir_buf; *d; d++) {
        int ok = (*d >= 'a' && *d <= 'z') || (*d >= '0' && *d <= '9') || *d == '.' || *d == '-'
                 || *d == '_';
        if (!ok)
            *d = '_';
    }
    memcpy(id, id_buf, strlen(id_buf) + 1);
    memcpy(dir, dir_buf, strlen(dir_buf) + 1);
    return 0;
}

/* Finds the line of server_id: its start and length (without the newline)
 * in *line / *line_len, the fingerprint in fp. Returns 1 found, 0 not. */
static int find_server(const char *data, const char *server_id, const char **line,
                       size_t *line_len, char fp[CRYPTO_FINGERPRINT_LEN])
{
    size_t id_len = strlen(server_id);
    for (const char *p = data; *p;) {
        size_t len = strcspn(p, "\n");
        if (len > id_len && memcmp(p, server_id, id_len) == 0 && (p[id_len] == ' ' || p[id_len] == '\t')) {
            const char *f = p + id_len;
            while (f < p + len && (*f == ' ' || *f == '\t'))
                f++;
            size_t flen = (size_t)(p + len - f);
            while (flen > 0 && (f[flen - 1] == ' ' || f[flen - 1] == '\t' || f[flen - 1] == '\r'))
                flen--;
            if (flen >= CRYPTO_FINGERPRINT_LEN)
                flen = CRYPTO_FINGERPRINT_LEN - 1;   /* a mangled line: compared, never matched */
            memcpy(fp, f, flen);
            fp[flen] = '\0';
            *line = p;
            *line_len = len;
            return 1;
        }
        p += len;
        if (*p == '\n')
            p++;
    }
    return 0;
}

int pinning_check_server(const char *config_dir, const char *server_id, const char *fingerprint,
                         int accept_new, pin_result *result, char old[CRYPTO_FINGERPRINT_LEN])
{
    char path[4200];
    if (files_join(path, sizeof path, config_dir, KNOWN_SERVERS, NULL) != 0)
        return -1;
    char *data = NULL;
    size_t len = 0;
    int r = files_read(path, KNOWN_SERVERS_MAX, &data, &len);
    if (r < 0)
        return -1;
    char newline[512];
    int n = snprintf(newline, sizeof newline, "%s %s\n", server_id, fingerprint);
    if (n < 0 || (size_t)n >= sizeof newline) {
        free(data);
        return -1;
    }
    const char *line = NULL;
    size_t line_len = 0;
    char pinned[CRYPTO_FINGERPRINT_LEN];
    if (r == 1 || !find_server(data, server_id, &line, &line_len, pinned)) {
        /* A file that does not end in a newline gets one first. */
        int rc = 0;
        if (r == 0 && len > 0 && data[len - 1] != '\n')
            rc = files_append(path, "\n", 1);
        if (rc == 0)
            rc = files_append(path, newline, (size_t)n);
        free(data);
        if (rc != 0)
            return -1;
        *result = PIN_NEW;
        return 0;
    }
    if (strcmp(pinned, fingerprint) == 0) {
        free(data);
        *result = PIN_MATCH;
        return 0;
    }
    if (!accept_new) {
        free(data);
        memcpy(old, pinned, sizeof pinned);
        *result = PIN_CHANGED;
        return 0;
    }
    /* Replace that one line, keep every other byte of the file. */
    size_t head = (size_t)(line - data);
    size_t tail_start = head + line_len + (line[line_len] == '\n' ? 1 : 0);
    size_t out_len = head + (size_t)n + (len - tail_start);
    char *out = malloc(out_len + 1);
    if (!out) {
        free(data);
        return -1;
    }
    memcpy(out, data, head);
    memcpy(out + head, newline, (size_t)n);
    memcpy(out + head + (size_t)n, data + tail_start, len - tail_start);
    int rc = files_write(path, out, out_len);
    free(out);
    free(data);
    if (rc != 0)
        return -1;
    memcpy(old, pinned, sizeof pinned);
    *result = PIN_REPLACED;
    return 0;
}

static int contact_path(char *out, size_t out_len, const char *config_dir, const char *server_dir,
                        const char *user)
{
    char lower[CLI_NAME_MAX + 1], file[CLI_NAME_MAX + 8], dir[4200];
    if (!files_name_ok(user) || files_lower(user, lower, sizeof lower) != 0)
        return -1;
    int n = snprintf(file, sizeof file, "%s.pem", lower);
    if (n < 0 || (size_t)n >= sizeof file)
        return -1;
    if (files_join(dir, sizeof dir, config_dir, "contacts", server_dir) != 0)
        return -1;
    return files_join(out, out_len, dir, file, NULL);
}

int pinning_contact_load(const char *config_dir, const char *server_dir, const char *user,
                         char **pem)
{
    char path[4200];
    if (contact_path(path, sizeof path, config_dir, server_dir, user) != 0)
        return -1;
    char *data = NULL;
    size_t len = 0;
    int r = files_read(path, CONTACT_PEM_MAX, &data, &len);
    if (r != 0)
        return r;
    *pem = data;
    return 0;
}

int pinning_contact_save(const char *config_dir, const char *server_dir, const char *user,
                         const char *pem)
{
    char path[4200];
    if (contact_path(path, sizeof path, config_dir, server_dir, user) != 0)
        return -1;
    return files_write(path, pem, strlen(pem));
}
