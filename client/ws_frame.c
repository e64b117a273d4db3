/* The pure parts of the WebSocket client: URLs, the accept key and frame
 * headers. No I/O here, so the unit test covers them without a peer. */
#include "ws.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

#include "crypto.h"

uint64_t ws_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int copy_bounded(char *dst, size_t dst_len, const char *src, size_t len)
{
    if (len >= dst_len)
        return -1;
    memcpy(dst, src, len);
    dst[len] = '\0';
    return 0;
}

static int parse_port(const char *s, size_t len, char out[6])
{
    if (len == 0 || len > 5)
        return -1;
    unsigned long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10u + (unsigned long)(s[i] - '0');
    }
    if (v == 0 || v > 65535u)
        return -1;
    return copy_bounded(out, 6, s, len);
}

int ws_url_parse(const char *url, ws_url *out)
{
    ws_url u;
    memset(&u, 0, sizeof u);
    if (!url)
        return -1;
    const char *p;
    if (strncasecmp(url, "ws://", 5) == 0) {
        p = url + 5;
    } else if (strncasecmp(url, "wss://", 6) == 0) {
        u.tls = 1;
        p = url + 6;
    } else {
        return -1;
    }
    size_t auth_len = strcspn(p, "/?#");
    const char *rest = p + auth_len;
    if (auth_len == 0 || memchr(p, '@', auth_len))
        return -1;   /* no host, or user info (never sent by this client) */
    if (strchr(rest, '#'))
        return -1;   /* RFC 6455 3: fragments are not allowed in ws URLs */
    for (size_t i = 0; i < auth_len; i++)
        if ((unsigned char)p[i] <= ' ' || (unsigned char)p[i] >= 0x7f)
            return -1;
    if (copy_bounded(u.authority, sizeof u.authority, p, auth_len) != 0)
        return -1;

    const char *port = NULL;
    size_t port_len = 0;
    if (p[0] == '[') {
        const char *close = memchr(p, ']', auth_len);
        if (!close || close == p + 1)
            return -1;
        if (copy_bounded(u.host, sizeof u.host, p + 1, (size_t)(close - p - 1)) != 0)
            return -1;
        const char *after = close + 1;
        if (after < p + auth_len) {
            if (*after != ':')
                return -1;
            port = after + 1;
            port_len = (size_t)(p + auth_len - port);
        }
    } else {
        const char *colon = memchr(p, ':', auth_len);
        size_t host_len = colon ? (size_t)(colon - p) : auth_len;
        if (host_len == 0 || memchr(p, '[', auth_len) || memchr(p, ']', auth_len))
            return -1;
        if (copy_bounded(u.host, sizeof u.host, p, host_len) != 0)
            return -1;
        if (colon) {
            port = colon + 1;
            port_len = (size_t)(p + auth_len - port);
        }
    }
    if (port) {
        if (parse_port(port, port_len, u.port) != 0)
            return -1;
    } else {
        memcpy(u.port, u.tls ? "443" : "80", u.tls ? 4 : 3);
    }

    size_t rest_len = strlen(rest);
    for (size_t i = 0; i < rest_len; i++)
        if ((unsigned char)rest[i] <= ' ' || (unsigned char)rest[i] >= 0x7f)
            return -1;   /* would break the request line */
    if (rest_len == 0) {
        memcpy(u.path, "/", 2);
    } else if (rest[0] == '?') {
        if (rest_len + 1 >= sizeof u.path)
            return -1;
        u.path[0] = '/';
        memcpy(u.path + 1, rest, rest_len + 1);
    } else if (copy_bounded(u.path, sizeof u.path, rest, rest_len) != 0) {
        return -1;
    }
    *out = u;
    return 0;
}

int ws_accept_key(const char *key, char out[WS_ACCEPT_LEN + 1])
{
    size_t key_len = strlen(key);
    size_t guid_len = sizeof WS_GUID - 1;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    char *b64 = NULL;
    size_t b64_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -1;
    int ok = EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1
             && EVP_DigestUpdate(ctx, key, key_len) == 1
             && EVP_DigestUpdate(ctx, WS_GUID, guid_len) == 1
             && EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len == 20;
    EVP_MD_CTX_free(ctx);
    if (!ok || crypto_b64_encode(md, md_len, &b64, &b64_len) != 0)
        return -1;
    if (b64_len != WS_ACCEPT_LEN) {
        free(b64);
        return -1;
    }
    memcpy(out, b64, WS_ACCEPT_LEN + 1);
    free(b64);
    return 0;
}

size_t ws_frame_header_write(uint8_t hdr[WS_MAX_HEADER], int opcode, int fin, int rsv,
                             const uint8_t *mask, uint64_t payload_len)
{
    size_t n = 0;
    hdr[n++] = (uint8_t)((fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f));
    uint8_t mbit = mask ? 0x80 : 0;
    if (payload_len < 126) {
        hdr[n++] = (uint8_t)(mbit | payload_len);
    } else if (payload_len <= 0xffff) {
        hdr[n++] = (uint8_t)(mbit | 126);
        hdr[n++] = (uint8_t)(payload_len >> 8);
        hdr[n++] = (uint8_t)payload_len;
    } else {
        hdr[n++] = (uint8_t)(mbit | 127);
        for (int shift = 56; shift >= 0; shift -= 8)
            hdr[n++] = (uint8_t)(payload_len >> shift);
    }
    if (mask) {
        memcpy(hdr + n, mask, 4);
        n += 4;
    }
    return n;
}

void ws_mask_apply(uint8_t *data, size_t len, const uint8_t mask[4], size_t offset)
{
    for (size_t i = 0; i < len; i++)
        data[i] ^= mask[(i + offset) & 3];
}

int ws_frame_encode(int opcode, int fin, const uint8_t *mask, const void *data, size_t len,
                    uint8_t **out, size_t *out_len)
{
    uint8_t hdr[WS_MAX_HEADER];
    size_t hlen = ws_frame_header_write(hdr, opcode, fin, 0, mask, len);
    if (len > SIZE_MAX - hlen)
        return -1;
    uint8_t *buf = malloc(hlen + len + 1);
    if (!buf)
        return -1;
    memcpy(buf, hdr, hlen);
    if (len)
        memcpy(buf + hlen, data, len);
    if (mask)
        ws_mask_apply(buf + hlen, len, mask, 0);
    *out = buf;
    *out_len = hlen + len;
    return 0;
}

int ws_frame_header_parse(const uint8_t *buf, size_t len, ws_frame_header *out)
{
    if (len < 2)
        return 0;
    ws_frame_header h;
    memset(&h, 0, sizeof h);
    h.fin = (buf[0] & 0x80) != 0;
    h.rsv = (buf[0] >> 4) & 7;
    h.opcode = buf[0] & 0x0f;
    h.masked = (buf[1] & 0x80) != 0;
    uint64_t plen = buf[1] & 0x7f;
    size_t n = 2;
    if (plen == 126) {
        if (len < 4)
            return 0;
        plen = ((uint64_t)buf[2] << 8) | buf[3];
        n = 4;
        if (plen < 126)
            return -1;   /* RFC 6455 5.2: the minimal number of bytes MUST be used */
    } else if (plen == 127) {
        if (len < 10)
            return 0;
        plen = 0;
        for (int i = 0; i < 8; i++)
            plen = (plen << 8) | buf[2 + i];
        n = 10;
        if (plen >> 63)
            return -1;
        if (plen <= 0xffff)
            return -1;
    }
    if (h.masked) {
        if (len < n + 4)
            return 0;
        memcpy(h.mask, buf + n, 4);
        n += 4;
    }
    h.payload_len = plen;
    h.header_len = n;
    *out = h;
    return 1;
}
