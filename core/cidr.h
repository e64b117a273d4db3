/* IP addresses and networks in text ("10.0.0.0/8", "::1", "127.0.0.1"):
 * parsed once, matched against peers. An IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) is the IPv4 address it carries, on both sides. */
#ifndef SM_CORE_CIDR_H
#define SM_CORE_CIDR_H

#include <stddef.h>

typedef struct cidr {
    unsigned char addr[16];
    size_t len;         /* 4 or 16 bytes */
    unsigned prefix;    /* bits that must match: 0..32 or 0..128 */
} cidr;

/* addr as a binary IPv4 (4 bytes) or IPv6 (16 bytes) address in out;
 * 0, or -1 if it is not an IP literal. */
int cidr_address(const char *addr, unsigned char out[16], size_t *len);

/* An address, or an address "/" prefix length; a bare address is the
 * whole length. 0, or -1 for anything else (bits set past the prefix
 * included, so "10.0.0.1/8" is refused as a likely typo). */
int cidr_parse(const char *text, cidr *out);

/* 1 when the address in text is inside net, 0 otherwise (also when text
 * is not an address). */
int cidr_contains(const cidr *net, const char *address);

#endif
