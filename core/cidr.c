#include "cidr.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

int cidr_address(const char *addr, unsigned char out[16], size_t *len)
{
    if (inet_pton(AF_INET, addr, out) == 1) {
        *len = 4;
        return 0;
    }
    if (inet_pton(AF_INET6, addr, out) != 1)
        return -1;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(out, mapped, sizeof mapped) == 0) {
        memmove(out, out + 12, 4);
        *len = 4;
    } else {
        *len = 16;
    }
    return 0;
}

/* Whether a and b agree in their first `bits` bits. */
static int prefix_equal(const unsigned char *a, const unsigned char *b, unsigned bits)
{
    size_t whole = bits / 8;
    if (memcmp(a, b, whole) != 0)
        return 0;
    unsigned rest = bits % 8;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

int cidr_parse(const char *text, cidr *out)
{
    char addr[64];
    const char *slash = strchr(text, '/');
    size_t n = slash ? (size_t)(slash - text) : strlen(text);
    if (n == 0 || n >= sizeof addr)
        return -1;
    memcpy(addr, text, n);
    addr[n] = '\0';
    cidr c;
    memset(&c, 0, sizeof c);
    if (cidr_address(addr, c.addr, &c.len) != 0)
        return -1;
    c.prefix = (unsigned)(c.len * 8);
    if (slash) {
        const char *digits = slash + 1;
        char *end;
        if (*digits < '0' || *digits > '9' || strlen(digits) > 3)
            return -1;
        unsigned long bits = strtoul(digits, &end, 10);
        /* A mapped address is written with an IPv6 prefix length. */
        if (c.len == 4 && strchr(addr, ':')) {
            if (bits < 96)
                return -1;
            bits -= 96;
        }
        if (*end || bits > c.len * 8)
            return -1;
        c.prefix = (unsigned)bits;
        unsigned char masked[16];
        memcpy(masked, c.addr, c.len);
        /* Host bits must be zero: compare with a copy cut at the prefix. */
        for (size_t i = 0; i < c.len * 8; i++)
            if (i >= c.prefix)
                masked[i / 8] &= (unsigned char)~(0x80u >> (i % 8));
        if (memcmp(masked, c.addr, c.len) != 0)
            return -1;
    }
    *out = c;
    return 0;
}

int cidr_contains(const cidr *net, const char *address)
{
    unsigned char a[16];
    size_t len;
    if (!address || cidr_address(address, a, &len) != 0 || len != net->len)
        return 0;
    return prefix_equal(a, net->addr, net->prefix);
}
